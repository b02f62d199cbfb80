//! The decision owner: the one place that changes the kernel's lists. Every block, unblock,
//! allow and expiry goes through here, is checked against the guards, applied to the maps
//! and recorded in the store, in batches.
pub mod metrics;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use crate::{
    clock::Clock,
    control::{
        CounterStatus, InterfaceStatus, ListEntry, ListStatus, Refusal, Request, Response, Status,
    },
    dataplane::{AttachMode, Dataplane, DataplaneError, ListId},
    decision::{Decision, DecisionKind, DecisionStore, LoadReport, Origin, StateError},
    error_chain,
    prefix::Prefix,
};

use self::metrics::MetricsData;

/// What the owner enforces besides the decisions themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
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

pub enum Command {
    Control(Request, mpsc::Sender<Response>),
    /// Render the metrics page.
    Scrape(mpsc::Sender<Result<String, String>>),
    Reload(Box<Policy>, mpsc::Sender<Result<(), String>>),
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("state directory")]
    State(#[from] StateError),
}

const CONFIG_SOURCE: &str = "config";
/// How a refusal starts when the prefix is blocked anyway, for longer, by another decision.
pub const ALREADY_BLOCKED_LONGER: &str = "already blocked for longer";

/// Counts of what a reconcile pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Decisions missing from the kernel, put back.
    pub repaired: u64,
    /// Kernel entries no decision accounts for.
    pub unknown: u64,
}

pub struct Owner {
    dataplane: Dataplane,
    store: DecisionStore,
    clock: Arc<dyn Clock>,
    policy: Policy,
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
    policy: &Policy,
    allows: &[Prefix],
    force: bool,
) -> Option<String> {
    let min = if prefix.is_ipv4() {
        policy.min_prefix_len_v4
    } else {
        policy.min_prefix_len_v6
    };
    if prefix.prefix_len() < min && !force {
        return Some(format!(
            "/{} is broader than the guard limit /{min} (force to override)",
            prefix.prefix_len()
        ));
    }
    if let Some(own) = policy
        .own_addresses
        .iter()
        .find(|own| prefix.contains(own.addr()))
    {
        return Some(format!("contains this host's own address {}", own.addr()));
    }
    if let Some(allow) = allows
        .iter()
        .find(|allow| allow.prefix_len() <= prefix.prefix_len() && allow.contains(prefix.addr()))
    {
        return Some(format!("is allowlisted (allow entry {allow})"));
    }
    None
}

impl Owner {
    /// Take over the data path and the store, and bring them in line with each other and the
    /// policy.
    ///
    /// # Errors
    /// When the kernel maps cannot be read or the store written.
    pub fn start(
        dataplane: Dataplane,
        store: DecisionStore,
        load_report: &LoadReport,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> Result<Self, OwnerError> {
        let mut owner = Self {
            dataplane,
            store,
            clock,
            policy: policy.clone(),
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
        owner.apply_policy(policy)?;
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
                source: "recovered".into(),
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

    /// Apply a (new) policy: dry-run flag, interfaces, the configured allowlist.
    ///
    /// # Errors
    /// When an interface cannot be attached or a map written.
    pub fn apply_policy(&mut self, policy: Policy) -> Result<(), OwnerError> {
        self.dataplane.set_dry_run(policy.dry_run)?;
        self.dataplane
            .set_volume_accounting(policy.volume_accounting)?;
        let wanted: BTreeSet<&str> = policy.interfaces.iter().map(|(n, _)| n.as_str()).collect();
        let attached: Vec<String> = self
            .dataplane
            .attachments()
            .map(|(name, _)| name.to_owned())
            .filter(|name| !wanted.contains(name.as_str()))
            .collect();
        for name in attached {
            log::info!("{name}: no longer configured, detaching");
            self.dataplane.detach(&name)?;
        }
        for (name, mode) in &policy.interfaces {
            let mode = self.dataplane.attach(name, *mode)?;
            log::info!("{name}: XDP attached in {mode} mode");
        }
        // The configured allowlist: add what is new, drop what the config no longer names.
        let now = self.clock.now_unix();
        let current: BTreeSet<Prefix> = self
            .store
            .of_kind(DecisionKind::Allow)
            .filter(|d| &*d.origin.source == CONFIG_SOURCE)
            .map(|d| d.prefix)
            .collect();
        let stale: Vec<Prefix> = current.difference(&policy.config_allow).copied().collect();
        for prefix in &stale {
            let _: bool = self.dataplane.unallow(prefix)?;
        }
        let _: Vec<Decision> = self.store.remove(DecisionKind::Allow, &stale)?;
        let origin = Arc::new(Origin {
            source: CONFIG_SOURCE.into(),
            reason: "allowlist in the configuration".into(),
            created_unix: now,
            expires_unix: 0,
        });
        let mut added = Vec::new();
        for prefix in policy.config_allow.difference(&current) {
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
        self.policy = policy;
        Ok(())
    }

    fn count(&mut self, source: &str, action: &'static str, n: u64) {
        if n > 0 {
            *self
                .decisions_total
                .entry((source.to_owned(), action))
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

    /// Answer one control request (not yet synced: the caller syncs the batch).
    pub fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Block {
                prefixes,
                duration_secs,
                reason,
                source,
                force,
            } => self.block(&prefixes, duration_secs, reason, source, force),
            Request::Unblock { prefixes } => self.remove(DecisionKind::Block, &prefixes),
            Request::Allow { prefixes, reason } => self.allow(&prefixes, reason),
            Request::Unallow { prefixes } => self.remove(DecisionKind::Allow, &prefixes),
            Request::List { source } => self.list(source.as_deref()),
            // The daemon answers this from the volume engine before it gets here.
            Request::Top => Response::Error {
                message: "the volume engine is not running".into(),
            },
            Request::Status => match self.status() {
                Ok(status) => Response::Status(status),
                Err(err) => Response::Error {
                    message: error_chain(&err),
                },
            },
        }
    }

    fn parse_all(prefixes: &[String], refused: &mut Vec<Refusal>) -> Vec<Prefix> {
        prefixes
            .iter()
            .filter_map(|text| match Prefix::parse(text) {
                Ok((prefix, _)) => Some(prefix),
                Err(err) => {
                    refused.push(Refusal {
                        prefix: text.clone(),
                        reason: err.to_string(),
                    });
                    None
                }
            })
            .collect()
    }

    fn block(
        &mut self,
        prefixes: &[String],
        duration_secs: Option<u64>,
        reason: Option<String>,
        source: Option<String>,
        force: bool,
    ) -> Response {
        let mut refused = Vec::new();
        let parsed = Self::parse_all(prefixes, &mut refused);
        let now = self.clock.now_unix();
        let duration = duration_secs
            .map(Duration::from_secs)
            .or(self.policy.default_ban);
        let expires_unix = duration.map_or(0, |d| now.saturating_add(d.as_secs().max(1)));
        let source = source.unwrap_or_else(|| "manual".to_owned());
        let origin = Arc::new(Origin {
            source: source.as_str().into(),
            reason: reason.unwrap_or_default().into(),
            created_unix: now,
            expires_unix,
        });
        let deadline = self.clock.monotonic_deadline(expires_unix);
        let allows: Vec<Prefix> = self
            .store
            .of_kind(DecisionKind::Allow)
            .map(|d| d.prefix)
            .collect();
        let mut candidates = Vec::with_capacity(parsed.len());
        for prefix in parsed {
            if let Some(reason) = block_refusal(&prefix, &self.policy, &allows, force) {
                refused.push(Refusal {
                    prefix: prefix.to_string(),
                    reason,
                });
            } else {
                candidates.push(prefix);
            }
        }
        // A detector's block never cuts short a block that lasts longer (an operator's, or a
        // longer ban); only a manual block sets whatever expiry it names.
        if source != "manual" {
            candidates.retain(|prefix| {
                let longer = self
                    .store
                    .get(DecisionKind::Block, prefix)
                    .filter(|d| outlasts(d.origin.expires_unix, expires_unix))
                    .map(|d| d.origin.source.to_string());
                if let Some(holder) = &longer {
                    refused.push(Refusal {
                        prefix: prefix.to_string(),
                        reason: format!("{ALREADY_BLOCKED_LONGER} (source {holder})"),
                    });
                }
                longer.is_none()
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

    /// Count, store and answer what a block or allow request did: the prefixes whose kernel
    /// update worked are recorded under `origin`, the others refused with the reason.
    fn record(
        &mut self,
        kind: DecisionKind,
        origin: &Arc<Origin>,
        outcomes: impl Iterator<Item = (Prefix, Result<(), DataplaneError>)>,
        mut refused: Vec<Refusal>,
    ) -> Response {
        let mut applied = Vec::new();
        for (prefix, result) in outcomes {
            match result {
                Ok(()) => applied.push(prefix),
                Err(err) => {
                    if matches!(err, DataplaneError::ListFull { .. }) {
                        self.full_list_errors += 1;
                    }
                    refused.push(Refusal {
                        prefix: prefix.to_string(),
                        reason: error_chain(&err),
                    });
                }
            }
        }
        let count = applied.len() as u64;
        self.count(&origin.source, kind.name(), count);
        self.count(&origin.source, "refused", refused.len() as u64);
        if let Err(err) = self.store.put(kind, origin, applied) {
            return Response::Error {
                message: format!(
                    "applied to the kernel but not recorded: {}",
                    error_chain(&err)
                ),
            };
        }
        Response::Applied {
            applied: count,
            refused,
        }
    }

    fn allow(&mut self, prefixes: &[String], reason: Option<String>) -> Response {
        let mut refused = Vec::new();
        let parsed = Self::parse_all(prefixes, &mut refused);
        let origin = Arc::new(Origin {
            source: "manual".into(),
            reason: reason.unwrap_or_default().into(),
            created_unix: self.clock.now_unix(),
            expires_unix: 0,
        });
        let outcomes: Vec<(Prefix, Result<(), DataplaneError>)> = parsed
            .into_iter()
            .map(|prefix| (prefix, self.dataplane.allow(&prefix)))
            .collect();
        self.record(DecisionKind::Allow, &origin, outcomes.into_iter(), refused)
    }

    fn remove(&mut self, kind: DecisionKind, prefixes: &[String]) -> Response {
        let mut refused = Vec::new();
        let parsed = Self::parse_all(prefixes, &mut refused);
        let mut missing = Vec::new();
        let mut removable = Vec::new();
        for prefix in parsed {
            match self.store.get(kind, &prefix) {
                None => missing.push(prefix.to_string()),
                Some(d) if kind == DecisionKind::Allow && &*d.origin.source == CONFIG_SOURCE => {
                    refused.push(Refusal {
                        prefix: prefix.to_string(),
                        reason: "allowed by the configuration; change it there".into(),
                    });
                }
                Some(_) => removable.push(prefix),
            }
        }
        for prefix in &removable {
            let result = match kind {
                DecisionKind::Block => self.dataplane.unblock(prefix),
                DecisionKind::Allow => self.dataplane.unallow(prefix),
            };
            if let Err(err) = result {
                return Response::Error {
                    message: error_chain(&err),
                };
            }
        }
        let removed = match self.store.remove(kind, &removable) {
            Ok(removed) => removed,
            Err(err) => {
                return Response::Error {
                    message: error_chain(&err),
                };
            }
        };
        let action = match kind {
            DecisionKind::Block => "unblock",
            DecisionKind::Allow => "unallow",
        };
        for decision in &removed {
            self.count(&decision.origin.source, action, 1);
        }
        Response::Removed {
            removed: removed.len() as u64,
            missing,
            refused,
        }
    }

    fn list(&self, source: Option<&str>) -> Response {
        let mut decisions: Vec<&Decision> = self.store.iter().collect();
        decisions.sort_by_key(|d| (d.kind, d.prefix));
        let mut entries = Vec::new();
        for decision in decisions {
            if source.is_some_and(|s| s != &*decision.origin.source) {
                continue;
            }
            let counters = match decision.kind {
                DecisionKind::Block => self
                    .dataplane
                    .block_entry(&decision.prefix)
                    .map(|e| e.map(|e| (e.packets, e.bytes))),
                DecisionKind::Allow => self
                    .dataplane
                    .allow_entry(&decision.prefix)
                    .map(|e| e.map(|e| (e.packets, e.bytes))),
            };
            let (packets, bytes) = match counters {
                Ok(counters) => counters.unwrap_or_default(),
                Err(err) => {
                    return Response::Error {
                        message: error_chain(&err),
                    };
                }
            };
            entries.push(ListEntry {
                kind: decision.kind.name().to_owned(),
                prefix: decision.prefix.to_string(),
                source: decision.origin.source.to_string(),
                reason: decision.origin.reason.to_string(),
                created_unix: decision.origin.created_unix,
                expires_unix: decision.origin.expires_unix,
                packets,
                bytes,
            });
        }
        Response::List { entries }
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
            .map(|(list, entries)| ListStatus {
                list: list.to_string(),
                entries,
                capacity: u64::from(capacities.of(list)),
            })
            .collect();
        let mut counters = Vec::new();
        for (interface, stats) in self.interface_counters()? {
            for (stat, value) in stats.iter() {
                counters.push(CounterStatus {
                    interface: interface.clone(),
                    counter: stat.name().to_owned(),
                    packets: value.packets,
                    bytes: value.bytes,
                });
            }
        }
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            dry_run: self.policy.dry_run,
            interfaces: self
                .dataplane
                .attachments()
                .map(|(name, a)| InterfaceStatus {
                    name: name.to_owned(),
                    ifindex: a.ifindex,
                    mode: a.mode.to_string(),
                })
                .collect(),
            lists,
            counters,
            decisions: self.store.len() as u64,
            unknown_entries: self.last_reconcile.unknown,
            full_list_errors: self.full_list_errors,
        })
    }

    /// Counters per attached interface, plus `-` for slot 0 (unattributed frames, expired hits).
    fn interface_counters(&self) -> Result<Vec<(String, crate::dataplane::Stats)>, DataplaneError> {
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
        top.truncate(self.policy.top_blocked);
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

/// Serve commands until [`Command::Shutdown`]: every request that arrives together is one
/// batch, synced once; expiries are swept every second and the kernel reconciled every
/// `reconcile_every`.
pub fn run(
    mut owner: Owner,
    commands: &mpsc::Receiver<Command>,
    reconcile_every: Duration,
) -> Owner {
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
        let mut replies = Vec::new();
        let mut shutdown = false;
        for command in batch {
            match command {
                Command::Control(request, reply) => replies.push((owner.handle(request), reply)),
                Command::Scrape(reply) => {
                    let page = owner
                        .metrics()
                        .map(|data| metrics::render(&data))
                        .map_err(|err| error_chain(&err));
                    let _ = reply.send(page);
                }
                Command::Reload(policy, reply) => {
                    let result = owner.apply_policy(*policy).map_err(|err| error_chain(&err));
                    let _ = reply.send(result);
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
        if let Err(err) = owner.sync() {
            log::error!("syncing the state directory: {}", error_chain(&err));
            for (_, reply) in replies.drain(..) {
                let _ = reply.send(Response::Error {
                    message: format!(
                        "applied, but the state directory could not be synced: {}",
                        error_chain(&err)
                    ),
                });
            }
        }
        for (response, reply) in replies {
            let _ = reply.send(response);
        }
        if shutdown {
            return owner;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            dry_run: false,
            min_prefix_len_v4: 8,
            min_prefix_len_v6: 32,
            default_ban: None,
            own_addresses: vec!["198.51.100.1".parse().unwrap()],
            config_allow: BTreeSet::new(),
            interfaces: vec![],
            top_blocked: 10,
            volume_accounting: false,
        }
    }

    fn refusal(prefix: &str, allows: &[&str], force: bool) -> Option<String> {
        let allows: Vec<Prefix> = allows.iter().map(|a| a.parse().unwrap()).collect();
        block_refusal(&prefix.parse().unwrap(), &policy(), &allows, force)
    }

    #[test]
    fn too_broad_prefixes_need_force() {
        assert!(
            refusal("10.0.0.0/7", &[], false)
                .unwrap()
                .contains("guard limit /8")
        );
        assert_eq!(refusal("10.0.0.0/7", &[], true), None);
        assert_eq!(refusal("10.0.0.0/8", &[], false), None);
        assert!(
            refusal("2001:db8::/31", &[], false)
                .unwrap()
                .contains("/32")
        );
    }

    #[test]
    fn own_address_is_never_blocked_even_by_force() {
        assert!(
            refusal("198.51.100.1", &[], false)
                .unwrap()
                .contains("own address")
        );
        assert!(
            refusal("198.51.100.0/24", &[], true)
                .unwrap()
                .contains("own address")
        );
        assert_eq!(refusal("198.51.100.2", &[], false), None);
    }

    #[test]
    fn allowlisted_targets_are_refused_but_a_block_around_an_allow_is_not() {
        assert!(
            refusal("203.0.113.5", &["203.0.113.0/24"], false)
                .unwrap()
                .contains("allowlisted")
        );
        assert!(refusal("203.0.113.0/25", &["203.0.113.0/24"], false).is_some());
        // The kernel lets the allowed /32 through inside a blocked /24.
        assert_eq!(refusal("203.0.113.0/24", &["203.0.113.5"], false), None);
    }
}
