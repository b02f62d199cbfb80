//! The decision owner: the one place that changes the kernel's lists. Every block, unblock,
//! allow and expiry goes through here, is checked against the guards, applied to the maps
//! and recorded in the store, in batches. Others reach it through [`Handle`].
pub mod handle;
pub mod metrics;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

pub use self::handle::{
    AllowOrder, Applied, BlockOrder, Command, CommandError, Entry, Expiry, Handle, ListFilter,
    ListUse, Pending, Refusal, Removed, Status,
};
use crate::{
    clock::Clock,
    enforce::dataplane::{AttachMode, DataPath, Dataplane, DataplaneError, ListId},
    enforce::decision::{
        Decision, DecisionKind, DecisionStore, LoadReport, Origin, Source, StateError,
    },
    error_chain,
    prefix::Prefix,
};

use self::metrics::MetricsData;

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
    /// Decisions missing from the kernel, put back.
    pub repaired: u64,
    /// Kernel entries no decision accounts for.
    pub unknown: u64,
}

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
    /// Entries reconcile put back, since start.
    repaired_total: u64,
}

/// Whether an expiry (unix seconds, 0 = never) is later than another.
const fn outlasts(expires_unix: u64, than: u64) -> bool {
    match (expires_unix, than) {
        (0, 0) | (_, 0) => false,
        (0, _) => true,
        (a, b) => a > b,
    }
}

/// Why blocking `prefix` is refused, if it is.
pub fn block_refusal(
    prefix: &Prefix,
    config: &OwnerConfig,
    allows: &[Prefix],
    force: bool,
) -> Option<Refusal> {
    let limit = if prefix.is_ipv4() {
        config.min_prefix_len_v4
    } else {
        config.min_prefix_len_v6
    };
    if prefix.prefix_len() < limit && !force {
        return Some(Refusal::TooBroad {
            len: prefix.prefix_len(),
            limit,
        });
    }
    if let Some(own) = config
        .own_addresses
        .iter()
        .find(|own| prefix.contains(own.addr()))
    {
        return Some(Refusal::OwnAddress(own.addr()));
    }
    if let Some(allow) = allows
        .iter()
        .find(|allow| allow.prefix_len() <= prefix.prefix_len() && allow.contains(prefix.addr()))
    {
        return Some(Refusal::Allowlisted { allow: *allow });
    }
    None
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
    /// configuration.
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
        };
        if let Some(corruption) = &load_report.corruption {
            log::error!(
                "state was unreadable ({corruption}); moved aside to {:?}; starting from the kernel's pinned maps",
                load_report.moved_aside
            );
        }
        if owner.store.is_empty() {
            owner.recover_from_kernel()?;
        }
        owner.apply_config(config)?;
        owner.sweep()?;
        owner.reconcile()?;
        owner.store.sync()?;
        Ok(owner)
    }

    /// Adopt what the pinned maps hold as decisions (the state directory had none).
    fn recover_from_kernel(&mut self) -> Result<(), OwnerError> {
        let now_unix = self.clock.now_unix();
        let now_ns = self.clock.now_monotonic_ns();
        let mut recovered = 0;
        let mut by_expiry: BTreeMap<u64, Vec<Prefix>> = BTreeMap::new();
        for entry in self.dataplane.block_entries()? {
            let expires_unix = if entry.entry.expires_ns == 0 {
                0
            } else {
                now_unix + entry.entry.expires_ns.saturating_sub(now_ns) / 1_000_000_000
            };
            by_expiry
                .entry(expires_unix)
                .or_default()
                .push(entry.prefix);
        }
        for (expires_unix, prefixes) in by_expiry {
            recovered += prefixes.len();
            let origin = Arc::new(Origin {
                source: Source::Recovered,
                reason: "found in the pinned maps with no state to explain it".into(),
                created_unix: now_unix,
                expires_unix,
            });
            self.store.put(DecisionKind::Block, &origin, prefixes)?;
        }
        if recovered > 0 {
            log::warn!("recovered {recovered} block entries from the pinned maps");
        }
        Ok(())
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
        });
        let mut added = Vec::new();
        for prefix in config.config_allow.difference(&current) {
            match self.dataplane.allow(prefix) {
                Ok(()) => added.push(*prefix),
                Err(DataplaneError::ListFull { .. }) => {
                    self.full_list_errors += 1;
                    log::error!("allowlist full: {prefix} from the configuration not added");
                }
                Err(err) => return Err(err.into()),
            }
        }
        self.store.put(DecisionKind::Allow, &origin, added)?;
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

    /// Remove what has expired, from the kernel and the store.
    ///
    /// # Errors
    /// When a map or the store cannot be written.
    pub fn sweep(&mut self) -> Result<u64, OwnerError> {
        let due = self.store.take_expired(self.clock.now_unix());
        let mut swept = 0;
        for (kind, prefix) in due {
            let removed = match kind {
                DecisionKind::Block => self.dataplane.unblock(&prefix),
                DecisionKind::Allow => self.dataplane.unallow(&prefix),
            };
            // The decision goes either way: an expired kernel entry no longer drops, and
            // reconcile reports it if it could not be removed.
            if let Err(err) = removed {
                log::error!("expiry of {} {prefix}: {}", kind.name(), error_chain(&err));
            }
            for decision in self.store.remove(kind, &[prefix])? {
                self.count(&decision.origin.source, "expire", 1);
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Make the kernel hold exactly the live decisions: put back what is missing (or has the
    /// wrong expiry), and report kernel entries no decision accounts for.
    ///
    /// # Errors
    /// When a map cannot be read or written.
    pub fn reconcile(&mut self) -> Result<ReconcileReport, OwnerError> {
        let mut report = ReconcileReport::default();
        let now = self.clock.now_unix();
        let mut in_kernel = BTreeMap::new();
        // Recounting also repairs the list-not-empty bits after edits behind our back.
        for entry in self.dataplane.recount()? {
            let _: Option<_> = in_kernel.insert(entry.prefix, entry.entry);
        }
        let live: Vec<Decision> = self
            .store
            .iter()
            .filter(|d| !d.is_expired(now))
            .cloned()
            .collect();
        for decision in &live {
            let deadline = self.clock.monotonic_deadline(decision.origin.expires_unix);
            let missing = match decision.kind {
                DecisionKind::Block => in_kernel
                    .remove(&decision.prefix)
                    // A deadline off by more than a second was written by someone else.
                    .is_none_or(|entry| entry.expires_ns.abs_diff(deadline) > 1_000_000_000),
                DecisionKind::Allow => self.dataplane.allow_entry(&decision.prefix)?.is_none(),
            };
            if missing {
                report.repaired += 1;
                log::warn!(
                    "reconcile: {} {} was missing from the kernel (or changed); restoring it",
                    decision.kind.name(),
                    decision.prefix
                );
                let result = match decision.kind {
                    DecisionKind::Block => self.dataplane.block(&decision.prefix, deadline),
                    DecisionKind::Allow => self.dataplane.allow(&decision.prefix),
                };
                if let Err(err) = result {
                    if matches!(err, DataplaneError::ListFull { .. }) {
                        self.full_list_errors += 1;
                    }
                    log::error!("reconcile: {err}");
                }
            }
        }
        report.unknown = in_kernel.len() as u64;
        for prefix in in_kernel.keys().take(10) {
            log::warn!("reconcile: kernel block entry {prefix} has no decision (left in place)");
        }
        self.last_reconcile = report;
        self.repaired_total += report.repaired;
        Ok(report)
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

    fn block(&mut self, order: BlockOrder) -> Result<Applied, CommandError> {
        let BlockOrder {
            prefixes,
            source,
            reason,
            expires,
            force,
        } = order;
        let now = self.clock.now_unix();
        let duration = match expires {
            Expiry::Default => self.config.default_ban,
            Expiry::After(duration) => Some(duration),
        };
        let expires_unix = duration.map_or(0, |d| now.saturating_add(d.as_secs().max(1)));
        let manual = source.is_manual();
        let origin = Arc::new(Origin {
            source,
            reason: reason.into(),
            created_unix: now,
            expires_unix,
        });
        let deadline = self.clock.monotonic_deadline(expires_unix);
        let allows: Vec<Prefix> = self
            .store
            .of_kind(DecisionKind::Allow)
            .map(|d| d.prefix)
            .collect();
        let mut refused = Vec::new();
        let mut candidates = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            if let Some(refusal) = block_refusal(&prefix, &self.config, &allows, force) {
                refused.push((prefix, refusal));
            } else {
                candidates.push(prefix);
            }
        }
        // A detector's block never cuts short a block that lasts longer (an operator's, or a
        // longer ban); only a manual block sets whatever expiry it names.
        if !manual {
            candidates.retain(|prefix| {
                let longer = self
                    .store
                    .get(DecisionKind::Block, prefix)
                    .filter(|d| outlasts(d.origin.expires_unix, expires_unix))
                    .map(|d| d.origin.source.clone());
                if let Some(holder) = longer {
                    refused.push((*prefix, Refusal::AlreadyBlockedLonger { holder }));
                    return false;
                }
                true
            });
        }
        // New blocks go in as one batch; re-blocks one by one, keeping their counters.
        let (known, new): (Vec<Prefix>, Vec<Prefix>) = candidates
            .into_iter()
            .partition(|prefix| self.store.get(DecisionKind::Block, prefix).is_some());
        let mut results = self.dataplane.block_new(&new, deadline);
        results.extend(
            known
                .iter()
                .map(|prefix| self.dataplane.block(prefix, deadline)),
        );
        let outcomes = new.into_iter().chain(known).zip(results);
        self.record(DecisionKind::Block, &origin, outcomes, refused)
    }

    /// Count, store and answer what a block or allow order did: the prefixes whose kernel
    /// update worked are recorded under `origin`, the others refused with the reason.
    fn record(
        &mut self,
        kind: DecisionKind,
        origin: &Arc<Origin>,
        outcomes: impl Iterator<Item = (Prefix, Result<(), DataplaneError>)>,
        mut refused: Vec<(Prefix, Refusal)>,
    ) -> Result<Applied, CommandError> {
        let mut applied = Vec::new();
        for (prefix, result) in outcomes {
            match result {
                Ok(()) => applied.push(prefix),
                Err(err) => {
                    if matches!(err, DataplaneError::ListFull { .. }) {
                        self.full_list_errors += 1;
                    }
                    refused.push((prefix, kernel_refusal(&err)));
                }
            }
        }
        let count = applied.len() as u64;
        self.count(&origin.source, kind.name(), count);
        self.count(&origin.source, "refused", refused.len() as u64);
        self.store
            .put(kind, origin, applied)
            .map_err(|err| CommandError::NotRecorded(error_chain(&err)))?;
        Ok(Applied {
            applied: count,
            refused,
        })
    }

    fn allow(&mut self, order: AllowOrder) -> Result<Applied, CommandError> {
        let origin = Arc::new(Origin {
            source: order.source,
            reason: order.reason.into(),
            created_unix: self.clock.now_unix(),
            expires_unix: 0,
        });
        let outcomes: Vec<(Prefix, Result<(), DataplaneError>)> = order
            .prefixes
            .into_iter()
            .map(|prefix| (prefix, self.dataplane.allow(&prefix)))
            .collect();
        self.record(
            DecisionKind::Allow,
            &origin,
            outcomes.into_iter(),
            Vec::new(),
        )
    }

    fn remove(
        &mut self,
        kind: DecisionKind,
        prefixes: Vec<Prefix>,
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
                Some(_) => removable.push(prefix),
            }
        }
        for prefix in &removable {
            let result = match kind {
                DecisionKind::Block => self.dataplane.unblock(prefix),
                DecisionKind::Allow => self.dataplane.unallow(prefix),
            };
            result.map_err(|err| CommandError::Kernel(error_chain(&err)))?;
        }
        let removed = self
            .store
            .remove(kind, &removable)
            .map_err(|err| CommandError::Kernel(error_chain(&err)))?;
        let action = match kind {
            DecisionKind::Block => "unblock",
            DecisionKind::Allow => "unallow",
        };
        for decision in &removed {
            self.count(&decision.origin.source, action, 1);
        }
        Ok(Removed {
            removed: removed.len() as u64,
            missing,
            refused,
        })
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
    fn interface_counters(
        &self,
    ) -> Result<Vec<(String, crate::enforce::dataplane::Stats)>, DataplaneError> {
        let mut out = self.dataplane.interface_stats()?;
        out.push(("-".to_owned(), self.dataplane.slot_stats(0)?));
        Ok(out)
    }

    /// Everything the metrics page shows.
    ///
    /// # Errors
    /// When the maps cannot be read.
    pub fn metrics(&self) -> Result<MetricsData, DataplaneError> {
        let mut top: Vec<(Prefix, u64, u64)> = self
            .dataplane
            .block_entries()?
            .into_iter()
            .filter(|e| e.entry.packets > 0)
            .map(|e| (e.prefix, e.entry.packets, e.entry.bytes))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(self.config.top_blocked);
        Ok(MetricsData {
            interfaces: self.interface_counters()?,
            list_sizes: self.list_sizes(),
            capacities: self.dataplane.capacities(),
            decisions_total: self.decisions_total.clone(),
            top_blocked: top,
            full_list_errors: self.full_list_errors,
            unknown_entries: self.last_reconcile.unknown,
            repaired_total: self.repaired_total,
        })
    }
}

/// An answer held back until the batch it belongs to is durable; told the sync error, if any.
type Deferred = Box<dyn FnOnce(Option<&str>)>;

fn defer<T: 'static>(result: Result<T, CommandError>, done: handle::Reply<T>) -> Deferred {
    Box::new(move |sync_error| {
        let answer = match sync_error {
            Some(err) => Err(CommandError::NotSynced(err.to_owned())),
            None => result,
        };
        let _ = done.send(answer);
    })
}

/// Serve commands until [`Command::Shutdown`]: every command that arrives together is one
/// batch, synced once; expiries are swept every second and the kernel reconciled every
/// `reconcile_every`.
pub fn run<D: DataPath>(
    mut owner: Owner<D>,
    commands: &mpsc::Receiver<Command>,
    reconcile_every: Duration,
) -> Owner<D> {
    let mut next_reconcile = Instant::now() + reconcile_every;
    let mut next_sweep = Instant::now() + Duration::from_secs(1);
    loop {
        let wait = next_sweep
            .min(next_reconcile)
            .saturating_duration_since(Instant::now());
        let first = match commands.recv_timeout(wait) {
            Ok(command) => Some(command),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return owner,
        };
        let mut batch: Vec<Command> = first.into_iter().collect();
        batch.extend(commands.try_iter());
        let mut replies: Vec<Deferred> = Vec::new();
        let mut shutdown = false;
        for command in batch {
            let kernel = |err: DataplaneError| CommandError::Kernel(error_chain(&err));
            match command {
                Command::Block { order, done } => replies.push(defer(owner.block(order), done)),
                Command::Allow { order, done } => replies.push(defer(owner.allow(order), done)),
                Command::Remove {
                    kind,
                    prefixes,
                    done,
                } => replies.push(defer(owner.remove(kind, prefixes), done)),
                Command::List { filter, done } => {
                    replies.push(defer(owner.list(&filter).map_err(kernel), done));
                }
                Command::Status { done } => {
                    replies.push(defer(owner.status().map_err(kernel), done));
                }
                Command::Scrape { done } => {
                    let page = owner
                        .metrics()
                        .map(|data| metrics::render(&data))
                        .map_err(kernel);
                    let _ = done.send(page);
                }
                Command::Reload { config, done } => {
                    let result = owner
                        .apply_config(*config)
                        .map_err(|err| CommandError::Kernel(error_chain(&err)));
                    let _ = done.send(result);
                }
                Command::Shutdown => shutdown = true,
            }
        }
        if Instant::now() >= next_sweep {
            if let Err(err) = owner.sweep() {
                log::error!("expiry sweep: {}", error_chain(&err));
            }
            next_sweep = Instant::now() + Duration::from_secs(1);
        }
        if Instant::now() >= next_reconcile {
            if let Err(err) = owner.reconcile() {
                log::error!("reconcile: {}", error_chain(&err));
            }
            next_reconcile = Instant::now() + reconcile_every;
        }
        // Durable before anyone hears it is done.
        let sync_error = owner.sync().err().map(|err| {
            log::error!("syncing the state directory: {}", error_chain(&err));
            error_chain(&err)
        });
        for reply in replies {
            reply(sync_error.as_deref());
        }
        if shutdown {
            return owner;
        }
    }
}

#[cfg(test)]
mod tests;
