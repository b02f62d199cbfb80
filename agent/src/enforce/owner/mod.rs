//! The decision owner: the one place that changes the kernel's lists. Every block, unblock,
//! allow and expiry goes through here, is checked against the guards, recorded in the store
//! and then applied to the maps, in batches. Others reach it through [`Handle`].
//!
//! Background work (the expiry sweep, reconcile) goes a bounded chunk at a time between
//! commands, so the owner answers within milliseconds at any list size; the metrics it
//! publishes after every batch and tick are read without asking it.
mod guards;
pub mod handle;
pub mod metrics;
mod reconcile;
mod record;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

pub use self::guards::block_refusal;
pub use self::handle::{
    AllowOrder, Applied, BlockOrder, ChangeSink, Command, CommandError, Entry, Expiry, Handle,
    ListFilter, ListUse, MAX_EVIDENCE_LINE_BYTES, MAX_EVIDENCE_LINES, Pending, Refusal, Removed,
    Status, bound_evidence,
};
pub use self::reconcile::{CHUNK, DEADLINE_TOLERANCE_NS, deadline_matches};
use crate::{
    clock::Clock,
    enforce::dataplane::{AttachMode, DataPath, Dataplane, DataplaneError, ListId, Stats},
    enforce::decision::{
        Change, Decision, DecisionKind, DecisionStore, LoadReport, Origin, Source, StateError,
    },
    error_chain,
    origins::Origins,
    prefix::Prefix,
};

use self::metrics::{MetricsData, MetricsSnapshot};

/// What reconcile does with a kernel entry no decision accounts for (written behind the
/// daemon's back, or left by a daemon that died between applying and recording).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownEntries {
    /// Make it a decision with source `recovered`, keeping the kernel's expiry: `list` shows
    /// it and `unblock` removes it.
    #[default]
    Adopt,
    /// Delete it from the kernel.
    Remove,
}

impl UnknownEntries {
    /// The configuration spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Adopt => "adopt",
            Self::Remove => "remove",
        }
    }
}

/// What the owner enforces besides the decisions themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerConfig {
    pub dry_run: bool,
    /// Blocks shorter than these need `force`.
    pub min_prefix_len_v4: u8,
    pub min_prefix_len_v6: u8,
    /// Expiry of a block that names none; `None`: never.
    pub default_ban: Option<Duration>,
    /// This host's own addresses: never blocked.
    pub own_addresses: Vec<Prefix>,
    /// The allowlist the configuration asks for (its prefixes and files, loopback, own addresses).
    pub config_allow: BTreeSet<Prefix>,
    pub interfaces: Vec<(String, AttachMode)>,
    /// How many entries `xdpguard_top_blocked_*` shows.
    pub top_blocked: usize,
    /// The XDP program counts bytes and packets per source for the volume detectors.
    pub volume_accounting: bool,
    /// Kernel entries without a decision: adopted or removed.
    pub unknown_entries: UnknownEntries,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("state directory")]
    State(#[from] StateError),
}

/// Counts of what a reconcile pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Kernel entries read.
    pub entries: u64,
    /// Decisions missing from the kernel, put back.
    pub missing: u64,
    /// Kernel entries (or `CONFIG`, interface slots) that differed from what the decisions
    /// want, corrected: a wrong expiry or prefix length, a copy in the wrong list.
    pub corrected: u64,
    /// Kernel entries no decision accounted for, adopted as `recovered` decisions.
    pub adopted: u64,
    /// Kernel entries no decision accounted for, removed (policy, expired, misplaced).
    pub removed: u64,
    /// Kernel entries no decision accounts for, left in place (adopting or removing failed).
    pub unknown: u64,
}

/// How often interface counters are read for the metrics snapshot at most.
const COUNTERS_EVERY: Duration = Duration::from_millis(100);

/// Generic over the data path so its logic runs against an in-memory fake in tests.
pub struct Owner<D: DataPath = Dataplane> {
    dataplane: D,
    store: DecisionStore,
    clock: Arc<dyn Clock>,
    config: OwnerConfig,
    /// (source, action) → count since start.
    decisions_total: BTreeMap<(String, &'static str), u64>,
    full_list_errors: u64,
    last_reconcile: ReconcileReport,
    /// Entries reconcile put back or corrected, since start.
    repaired_total: u64,
    unknown_adopted_total: u64,
    unknown_removed_total: u64,
    reconcile_passes_total: u64,
    reconcile_last_pass: Duration,
    state_dir_restored_total: u64,
    /// The entries with the most drops, as of the last pass.
    top_blocked: Arc<Vec<(Prefix, u64, u64)>>,
    top_origins: Arc<Vec<(String, u64, u64)>>,
    /// Where the reconcile pass looks up each dropping entry's origin AS.
    origins: Option<Origins>,
    pass: Option<reconcile::Pass>,
    metrics: MetricsSnapshot,
    /// Interface counters as last read, and when.
    counters: Option<(Instant, Vec<(String, Stats)>)>,
    /// Who follows the changes ([`Handle::watch`]).
    watchers: Vec<Watcher>,
}

struct Watcher {
    wants: fn(&Source) -> bool,
    sink: ChangeSink,
}

/// Whether an expiry (unix seconds, 0 = never) is later than another.
const fn outlasts(expires_unix: u64, than: u64) -> bool {
    match (expires_unix, than) {
        (0, 0) | (_, 0) => false,
        (0, _) => true,
        (a, b) => a > b,
    }
}

/// A kernel error on one prefix, as the refusal it is.
fn kernel_refusal(err: &DataplaneError) -> Refusal {
    match err {
        DataplaneError::ListFull {
            list,
            capacity,
            prefix,
        } => Refusal::ListFull {
            list: *list,
            capacity: *capacity,
            prefix: *prefix,
        },
        other => Refusal::Kernel(error_chain(other)),
    }
}

impl<D: DataPath> Owner<D> {
    /// Take over the data path and the store, and bring them in line with each other and the
    /// configuration: one complete reconcile pass before the first command.
    ///
    /// # Errors
    /// When the kernel maps cannot be read or the store written.
    pub fn start(
        dataplane: D,
        store: DecisionStore,
        load_report: &LoadReport,
        clock: Arc<dyn Clock>,
        config: OwnerConfig,
    ) -> Result<Self, OwnerError> {
        let mut owner = Self {
            dataplane,
            store,
            clock,
            config: config.clone(),
            decisions_total: BTreeMap::new(),
            full_list_errors: 0,
            last_reconcile: ReconcileReport::default(),
            repaired_total: 0,
            unknown_adopted_total: 0,
            unknown_removed_total: 0,
            reconcile_passes_total: 0,
            reconcile_last_pass: Duration::ZERO,
            state_dir_restored_total: 0,
            top_blocked: Arc::new(Vec::new()),
            top_origins: Arc::new(Vec::new()),
            origins: None,
            pass: None,
            metrics: MetricsSnapshot::default(),
            counters: None,
            watchers: Vec::new(),
        };
        if let Some(corruption) = &load_report.corruption {
            log::error!(
                "state was unreadable ({corruption}); moved aside to {:?}; starting from the kernel's pinned maps",
                load_report.moved_aside
            );
        }
        // With no state at all, the kernel's entries are all there is: take them over
        // whatever the policy says about entries that appear later.
        let policy = if owner.store.is_empty() {
            UnknownEntries::Adopt
        } else {
            config.unknown_entries
        };
        owner.apply_config(config)?;
        let _: u64 = owner.sweep()?;
        owner.begin_reconcile_with(policy);
        while owner.reconcile_step()?.is_none() {}
        owner.store.sync()?;
        owner.publish_metrics();
        Ok(owner)
    }

    /// Where the owner publishes its metrics data; a scrape renders from it.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        self.metrics.clone()
    }

    /// Apply a (new) configuration: dry-run flag, interfaces, the configured allowlist.
    ///
    /// # Errors
    /// When an interface cannot be attached or a map written.
    pub fn apply_config(&mut self, config: OwnerConfig) -> Result<(), OwnerError> {
        self.dataplane.set_dry_run(config.dry_run)?;
        self.dataplane
            .set_volume_accounting(config.volume_accounting)?;
        let wanted: BTreeSet<&str> = config.interfaces.iter().map(|(n, _)| n.as_str()).collect();
        let attached: Vec<String> = self
            .dataplane
            .attachments()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| !wanted.contains(name.as_str()))
            .collect();
        for name in attached {
            log::info!("{name}: no longer configured, detaching");
            self.dataplane.detach(&name)?;
        }
        for (name, mode) in &config.interfaces {
            let mode = self.dataplane.attach(name, *mode)?;
            log::info!("{name}: XDP attached in {mode} mode");
        }
        // The configured allowlist: add what is new, drop what the config no longer names.
        let now = self.clock.now_unix();
        let current: BTreeSet<Prefix> = self
            .store
            .of_kind(DecisionKind::Allow)
            .filter(|d| d.origin.source == Source::Config)
            .map(|d| d.prefix)
            .collect();
        let stale: Vec<Prefix> = current.difference(&config.config_allow).copied().collect();
        for prefix in &stale {
            let _: bool = self.dataplane.unallow(prefix)?;
        }
        let _: Vec<Decision> = self.store.remove(DecisionKind::Allow, &stale)?;
        let origin = Arc::new(Origin {
            source: Source::Config,
            reason: "allowlist in the configuration".into(),
            created_unix: now,
            expires_unix: 0,
            evidence: Vec::new(),
        });
        // Recorded before applied, as every decision (an allow entry is harmless anyway).
        let adding: Vec<Prefix> = config.config_allow.difference(&current).copied().collect();
        self.store
            .put(DecisionKind::Allow, &origin, adding.clone())?;
        self.store.sync()?;
        let mut refused = Vec::new();
        for prefix in adding {
            match self.dataplane.allow(&prefix) {
                Ok(()) => {}
                Err(DataplaneError::ListFull { .. }) => {
                    self.full_list_errors += 1;
                    log::error!("allowlist full: {prefix} from the configuration not added");
                    refused.push(prefix);
                }
                Err(err) => {
                    let _: Vec<Decision> = self.store.remove(DecisionKind::Allow, &[prefix])?;
                    return Err(err.into());
                }
            }
        }
        let _: Vec<Decision> = self.store.remove(DecisionKind::Allow, &refused)?;
        self.config = config;
        Ok(())
    }

    fn count(&mut self, source: &Source, action: &'static str, n: u64) {
        if n > 0 {
            *self
                .decisions_total
                .entry((source.to_string(), action))
                .or_default() += n;
        }
    }

    /// Once a second: notice a state directory that disappeared (or whose log was replaced),
    /// and recreate it with every decision.
    pub fn check_state_dir(&mut self) {
        match self.store.check_dir() {
            Ok(false) => {}
            Ok(true) => {
                self.state_dir_restored_total += 1;
                log::error!(
                    "the state directory (or its log) was removed behind the daemon's back; recreated it and wrote all {} decisions to a fresh snapshot",
                    self.store.len()
                );
            }
            Err(err) => log::error!(
                "the state directory is gone and could not be recreated: {}",
                error_chain(&err)
            ),
        }
    }

    /// Make the batch so far durable.
    ///
    /// # Errors
    /// When the store cannot be synced.
    pub fn sync(&mut self) -> Result<(), OwnerError> {
        Ok(self.store.sync()?)
    }

    /// Final compaction before exit. The data path stays attached and pinned.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn shutdown(mut self) -> Result<(), OwnerError> {
        // Nobody drains the volume maps while the daemon is away: stop paying for them.
        if let Err(err) = self.dataplane.set_volume_accounting(false) {
            log::warn!("volume accounting left on: {}", error_chain(&err));
        }
        self.store.compact()?;
        Ok(())
    }

    fn remove(
        &mut self,
        kind: DecisionKind,
        prefixes: Vec<Prefix>,
        held_by: Option<fn(&Source) -> bool>,
    ) -> Result<Removed, CommandError> {
        let mut refused = Vec::new();
        let mut missing = Vec::new();
        let mut removable = Vec::new();
        for prefix in prefixes {
            match self.store.get(kind, &prefix) {
                None => missing.push(prefix),
                Some(d) if kind == DecisionKind::Allow && d.origin.source == Source::Config => {
                    refused.push((prefix, Refusal::ConfiguredAllow));
                }
                Some(d) if held_by.is_some_and(|accept| !accept(&d.origin.source)) => {
                    missing.push(prefix);
                }
                Some(_) => removable.push(prefix),
            }
        }
        self.edited_during_pass();
        // Kernel first: a crash in between leaves the decision, and reconcile puts its entry
        // back (the unblock was never acknowledged), never an entry without a decision.
        let results = match kind {
            DecisionKind::Block => self.dataplane.unblock_many(&removable),
            DecisionKind::Allow => removable
                .iter()
                .map(|prefix| self.dataplane.unallow(prefix))
                .collect(),
        };
        let mut failed = None;
        let mut done = Vec::with_capacity(removable.len());
        for (prefix, result) in removable.into_iter().zip(results) {
            match result {
                Ok(_) => done.push(prefix),
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        let removable = done;
        let removed = self
            .store
            .remove(kind, &removable)
            .map_err(|err| CommandError::Kernel(error_chain(&err)))?;
        let action = match kind {
            DecisionKind::Block => "unblock",
            DecisionKind::Allow => "unallow",
        };
        let mut by_source: BTreeMap<Source, u64> = BTreeMap::new();
        for decision in &removed {
            *by_source.entry(decision.origin.source.clone()).or_default() += 1;
        }
        for (source, n) in by_source {
            self.count(&source, action, n);
        }
        if let Some(err) = failed {
            return Err(CommandError::Kernel(error_chain(&err)));
        }
        Ok(Removed {
            removed: removed.len() as u64,
            missing,
            refused,
        })
    }

    /// Add a watcher; the decisions it wants as they are now.
    fn watch(&mut self, wants: fn(&Source) -> bool, sink: ChangeSink) -> Vec<Decision> {
        self.store.keep_journal(true);
        self.watchers.push(Watcher { wants, sink });
        self.store
            .iter()
            .filter(|decision| wants(&decision.origin.source))
            .cloned()
            .collect()
    }

    /// Hand the changes since the last call to every watcher (once they are durable); drop
    /// those that are gone or full.
    fn tell_watchers(&mut self) {
        if self.watchers.is_empty() {
            return;
        }
        let changes = self.store.take_changes();
        if changes.is_empty() {
            return;
        }
        self.watchers.retain_mut(|watcher| {
            let theirs: Vec<Change> = changes
                .iter()
                .map(|change| match change {
                    Change::Put {
                        kind,
                        origin,
                        prefixes,
                    } if !(watcher.wants)(&origin.source) => Change::Remove {
                        kind: *kind,
                        prefixes: Arc::clone(prefixes),
                    },
                    other => other.clone(),
                })
                .collect();
            (watcher.sink)(theirs)
        });
        if self.watchers.is_empty() {
            self.store.keep_journal(false);
        }
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Entry>, DataplaneError> {
        let mut decisions: Vec<&Decision> = self
            .store
            .iter()
            .filter(|decision| filter.matches(decision))
            .collect();
        decisions.sort_by_key(|d| (d.kind, d.prefix));
        let mut entries = Vec::with_capacity(decisions.len());
        for decision in decisions {
            let counters = match decision.kind {
                DecisionKind::Block => self
                    .dataplane
                    .block_entry(&decision.prefix)?
                    .map(|e| (e.packets, e.bytes)),
                DecisionKind::Allow => self
                    .dataplane
                    .allow_entry(&decision.prefix)?
                    .map(|e| (e.packets, e.bytes)),
            };
            let (packets, bytes) = counters.unwrap_or_default();
            entries.push(Entry {
                decision: decision.clone(),
                packets,
                bytes,
            });
        }
        Ok(entries)
    }

    /// Entries per list: block lists as the data path counts its kernel entries, allowlists
    /// from the decisions (reconcile keeps the kernel equal to them).
    fn list_sizes(&self) -> BTreeMap<ListId, u64> {
        let mut sizes: BTreeMap<ListId, u64> = ListId::ALL
            .iter()
            .map(|list| (*list, self.dataplane.block_count(*list)))
            .collect();
        for decision in self.store.of_kind(DecisionKind::Allow) {
            *sizes
                .entry(ListId::allow_list_of(&decision.prefix))
                .or_default() += 1;
        }
        sizes
    }

    /// # Errors
    /// When the counters cannot be read.
    pub fn status(&self) -> Result<Status, DataplaneError> {
        let capacities = self.dataplane.capacities();
        let lists = self
            .list_sizes()
            .into_iter()
            .map(|(list, entries)| ListUse {
                list,
                entries,
                capacity: u64::from(capacities.of(list)),
            })
            .collect();
        Ok(Status {
            dry_run: self.config.dry_run,
            interfaces: self.dataplane.attachments(),
            lists,
            counters: self.interface_counters()?,
            decisions: self.store.len() as u64,
            unknown_entries: self.last_reconcile.unknown,
            full_list_errors: self.full_list_errors,
        })
    }

    /// Counters per attached interface, plus `-` for slot 0 (unattributed frames, expired hits).
    fn interface_counters(&self) -> Result<Vec<(String, Stats)>, DataplaneError> {
        let mut out = self.dataplane.interface_stats()?;
        out.push(("-".to_owned(), self.dataplane.slot_stats(0)?));
        Ok(out)
    }

    /// Sum each reconcile pass's drops per origin AS from this table (the metrics' top
    /// origins, the history).
    pub fn set_origins(&mut self, origins: Origins) {
        self.origins = Some(origins);
    }

    /// Publish what the metrics page shows: the decisions, list sizes and reconcile
    /// findings as they are now, the interface counters as read at most [`COUNTERS_EVERY`]
    /// ago, the most-dropping entries as of the last pass.
    pub fn publish_metrics(&mut self) {
        let fresh = self
            .counters
            .as_ref()
            .is_some_and(|(read, _)| read.elapsed() < COUNTERS_EVERY);
        if !fresh {
            match self.interface_counters() {
                Ok(counters) => self.counters = Some((Instant::now(), counters)),
                Err(err) => log::warn!("reading the counters: {}", error_chain(&err)),
            }
        }
        let data = MetricsData {
            interfaces: self
                .counters
                .as_ref()
                .map(|(_, counters)| counters.clone())
                .unwrap_or_default(),
            list_sizes: self.list_sizes(),
            capacities: self.dataplane.capacities(),
            decisions_total: self.decisions_total.clone(),
            top_blocked: Arc::clone(&self.top_blocked),
            top_origins: Arc::clone(&self.top_origins),
            full_list_errors: self.full_list_errors,
            unknown_entries: self.last_reconcile.unknown,
            repaired_total: self.repaired_total,
            unknown_adopted_total: self.unknown_adopted_total,
            unknown_removed_total: self.unknown_removed_total,
            reconcile_passes_total: self.reconcile_passes_total,
            reconcile_last_pass_ms: u64::try_from(self.reconcile_last_pass.as_millis())
                .unwrap_or(u64::MAX),
            state_dir_restored_total: self.state_dir_restored_total,
        };
        self.metrics.publish(data);
    }
}

/// An answer held back until the batch it belongs to is durable; told the sync error, if any.
type Deferred = Box<dyn FnOnce(Option<&str>)>;

fn defer<T: 'static>(result: Result<T, CommandError>, done: handle::Reply<T>) -> Deferred {
    Box::new(move |sync_error| {
        let answer = match (sync_error, result) {
            (Some(err), Ok(_)) => Err(CommandError::NotSynced(err.to_owned())),
            (_, result) => result,
        };
        let _ = done.send(answer);
    })
}

/// How often the owner sweeps expiries, checks the state directory and publishes counters.
const TICK: Duration = Duration::from_secs(1);

/// Serve commands until [`Command::Shutdown`]: every command that arrives together is one
/// batch, synced once (block and allow orders in a row are recorded, synced, then applied).
/// Between batches the owner does one bounded step of background work: the expiry sweep
/// (every second) first, then the reconcile pass (every `reconcile_every` from the end of
/// the last one).
pub fn run<D: DataPath>(
    mut owner: Owner<D>,
    commands: &mpsc::Receiver<Command>,
    reconcile_every: Duration,
) -> Owner<D> {
    let mut next_reconcile = Instant::now() + reconcile_every;
    let mut next_tick = Instant::now() + TICK;
    let mut sweeping = false;
    loop {
        let busy = sweeping || owner.reconciling();
        let first = if busy {
            match commands.try_recv() {
                Ok(command) => Some(command),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => return owner,
            }
        } else {
            let wait = next_tick
                .min(next_reconcile)
                .saturating_duration_since(Instant::now());
            match commands.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return owner,
            }
        };
        let mut batch: Vec<Command> = first.into_iter().collect();
        batch.extend(commands.try_iter());
        let mut replies: Vec<Deferred> = Vec::new();
        let shutdown = serve(&mut owner, batch, &mut replies);
        if shutdown {
            // Answer what came with it, then stop: background work does not hold SIGTERM up.
            finish_batch(&mut owner, replies);
            return owner;
        }
        let now = Instant::now();
        if now >= next_tick {
            owner.check_state_dir();
            sweeping = true;
            next_tick = now + TICK;
        }
        if sweeping {
            match owner.sweep_step(CHUNK) {
                Ok((_, more)) => sweeping = more,
                Err(err) => {
                    log::error!("expiry sweep: {}", error_chain(&err));
                    sweeping = false;
                }
            }
        } else if owner.reconciling() || now >= next_reconcile {
            owner.begin_reconcile();
            match owner.reconcile_step() {
                Ok(None) => {}
                Ok(Some(_)) => next_reconcile = Instant::now() + reconcile_every,
                Err(err) => {
                    log::error!("reconcile: {}", error_chain(&err));
                    next_reconcile = Instant::now() + reconcile_every;
                }
            }
        }
        finish_batch(&mut owner, replies);
    }
}

/// Carry out one batch of commands; whether it asked to shut down.
fn serve<D: DataPath>(
    owner: &mut Owner<D>,
    batch: Vec<Command>,
    replies: &mut Vec<Deferred>,
) -> bool {
    let mut shutdown = false;
    // Block and allow orders in a row: recorded one after the other, synced once, applied.
    let mut group: Vec<(record::Prepared, handle::Reply<Applied>)> = Vec::new();
    for command in batch {
        let kernel = |err: DataplaneError| CommandError::Kernel(error_chain(&err));
        match command {
            Command::Block { order, done } => group.push((owner.prepare_block(order), done)),
            Command::Allow { order, done } => group.push((owner.prepare_allow(order), done)),
            other => {
                apply_group(owner, &mut group, replies);
                match other {
                    Command::Block { .. } | Command::Allow { .. } => {}
                    Command::Remove {
                        kind,
                        prefixes,
                        held_by,
                        done,
                    } => replies.push(defer(owner.remove(kind, prefixes, held_by), done)),
                    Command::List { filter, done } => {
                        replies.push(defer(owner.list(&filter).map_err(kernel), done));
                    }
                    Command::Status { done } => {
                        replies.push(defer(owner.status().map_err(kernel), done));
                    }
                    Command::Reload { config, done } => {
                        let result = owner
                            .apply_config(*config)
                            .map_err(|err| CommandError::Kernel(error_chain(&err)));
                        let _ = done.send(result);
                    }
                    Command::Ping { done } => {
                        let _ = done.send(Ok(()));
                    }
                    Command::Watch { wants, sink, done } => {
                        let _ = done.send(Ok(owner.watch(wants, sink)));
                    }
                    Command::Shutdown => shutdown = true,
                }
            }
        }
    }
    apply_group(owner, &mut group, replies);
    shutdown
}

fn apply_group<D: DataPath>(
    owner: &mut Owner<D>,
    group: &mut Vec<(record::Prepared, handle::Reply<Applied>)>,
    replies: &mut Vec<Deferred>,
) {
    let (prepared, dones): (Vec<_>, Vec<_>) = std::mem::take(group).into_iter().unzip();
    for (result, done) in owner.apply_group(prepared).into_iter().zip(dones) {
        replies.push(defer(result, done));
    }
}

/// Sync, publish the metrics, then answer: durable before anyone hears it is done.
fn finish_batch<D: DataPath>(owner: &mut Owner<D>, replies: Vec<Deferred>) {
    let sync_error = owner.sync().err().map(|err| {
        log::error!("syncing the state directory: {}", error_chain(&err));
        error_chain(&err)
    });
    owner.tell_watchers();
    owner.publish_metrics();
    for reply in replies {
        reply(sync_error.as_deref());
    }
}

#[cfg(test)]
mod tests;
