//! Reconcile and the expiry sweep, a bounded chunk per step so the owner serves commands in
//! between whatever the list sizes.
//!
//! A reconcile pass reads every kernel entry (hash maps in batches, tries key by key), and for
//! each: a decision accounts for it → compare every field the program reads (the expiry: "never"
//! exactly, a deadline within [`DEADLINE_TOLERANCE_NS`]; the prefix length userspace checks)
//! and correct it; no decision → adopt it as source `recovered` or remove it, by policy
//! (expired and misplaced ones are always removed). The store marks each decision the pass
//! saw; at the end, only the decisions it did not see are looked up one by one, and put back
//! when missing. `CONFIG` and the interface slots are put back too.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Owner, OwnerError, ReconcileReport, UnknownEntries};
use crate::{
    enforce::dataplane::{DataPath, DataplaneError, ListId, ListKind, ScanCursor, ScannedEntry},
    enforce::decision::{DecisionKind, Origin, Source},
    error_chain,
    origins::{OriginAs, OriginTable, Origins},
    prefix::Prefix,
};

/// Entries one step reads, or decisions one step checks or expires: a few milliseconds.
pub const CHUNK: usize = 4096;

/// How far a kernel deadline may be from the one its decision gives. Decisions keep whole
/// wall-clock seconds, so the deadline computed from one moves by up to a second with the
/// sub-second phase of "now"; the program drops until the deadline, so two seconds either way
/// is a block that ends on time, not a tampered one. "Never" (0) has no tolerance.
pub const DEADLINE_TOLERANCE_NS: u64 = 2_000_000_000;

/// Examples of each finding logged per pass.
const EXAMPLES: usize = 5;

/// Whether a kernel entry's deadline is the one wanted (0 = never).
pub const fn deadline_matches(wanted: u64, found: u64) -> bool {
    match (wanted, found) {
        (0, found) => found == 0,
        (_, 0) => false,
        (wanted, found) => wanted.abs_diff(found) <= DEADLINE_TOLERANCE_NS,
    }
}

/// A reconcile pass in progress.
pub(super) struct Pass {
    cursor: ScanCursor,
    policy: UnknownEntries,
    /// Decisions the scan did not see, to look up one by one (after the scan).
    unseen: Option<Vec<(DecisionKind, Prefix)>>,
    next_unseen: usize,
    /// Someone other than the pass edited the block lists since it began.
    pub(super) edited: bool,
    report: ReconcileReport,
    started: Instant,
    top: Vec<(Prefix, u64, u64)>,
    /// The origins table as the pass began, and drops summed per origin AS.
    origins: Option<Arc<OriginTable>>,
    per_origin: HashMap<OriginAs, (u64, u64)>,
    examples: BTreeMap<&'static str, Vec<Prefix>>,
}

/// "Now" on both clocks, read once per step.
#[derive(Clone, Copy)]
struct Now {
    unix: u64,
    ns: u64,
}

impl Now {
    /// As [`crate::clock::Clock::monotonic_deadline`], from this reading.
    const fn deadline(self, expires_unix: u64) -> u64 {
        if expires_unix == 0 {
            return 0;
        }
        let remaining = expires_unix.saturating_sub(self.unix);
        let deadline = self
            .ns
            .saturating_add(remaining.saturating_mul(1_000_000_000));
        if deadline == 0 { 1 } else { deadline }
    }

    /// The wall-clock expiry of a kernel deadline (rounded up: the decision does not end
    /// before the entry).
    const fn expires_unix(self, expires_ns: u64) -> u64 {
        if expires_ns == 0 {
            return 0;
        }
        self.unix + expires_ns.saturating_sub(self.ns).div_ceil(1_000_000_000)
    }
}

impl Pass {
    fn example(&mut self, what: &'static str, prefix: Prefix) {
        let list = self.examples.entry(what).or_default();
        if list.len() < EXAMPLES {
            list.push(prefix);
        }
    }
}

/// What to do with one unknown kernel entry.
enum Unknown {
    /// As a decision expiring then (unix seconds, 0 = never).
    Adopt(u64),
    Remove(&'static str),
}

/// What the policy does with an entry no decision accounts for.
const fn unknown(policy: UnknownEntries, entry: &ScannedEntry, now: Now) -> Unknown {
    if entry.expires_ns != 0 && entry.expires_ns <= now.ns {
        // It no longer drops, but an expired longest match hides a shorter live one.
        return Unknown::Remove("expired, with no decision");
    }
    match policy {
        UnknownEntries::Remove => Unknown::Remove("no decision (policy remove)"),
        UnknownEntries::Adopt => Unknown::Adopt(now.expires_unix(entry.expires_ns)),
    }
}

impl<D: DataPath> Owner<D> {
    fn now(&self) -> Now {
        Now {
            unix: self.clock.now_unix(),
            ns: self.clock.now_monotonic_ns(),
        }
    }

    /// Whether a reconcile pass is under way.
    pub fn reconciling(&self) -> bool {
        self.pass.is_some()
    }

    /// Start a pass (a pass already under way goes on) with the configured policy for
    /// unknown entries.
    pub fn begin_reconcile(&mut self) {
        self.begin_reconcile_with(self.config.unknown_entries);
    }

    pub(super) fn begin_reconcile_with(&mut self, policy: UnknownEntries) {
        if self.pass.is_some() {
            return;
        }
        self.store.begin_pass();
        self.pass = Some(Pass {
            cursor: ScanCursor::default(),
            policy,
            unseen: None,
            next_unseen: 0,
            edited: false,
            report: ReconcileReport::default(),
            started: Instant::now(),
            top: Vec::new(),
            origins: self.origins.as_ref().map(Origins::table),
            per_origin: HashMap::new(),
            examples: BTreeMap::new(),
        });
    }

    /// Note that the block lists changed outside the pass (the pass then never counts a list
    /// lower than the owner does).
    pub(super) fn edited_during_pass(&mut self) {
        if let Some(pass) = &mut self.pass {
            pass.edited = true;
        }
    }

    /// One bounded step of the pass; `Some(report)` when it is complete. A failed step ends the
    /// pass (the next interval starts a new one).
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn reconcile_step(&mut self) -> Result<Option<ReconcileReport>, OwnerError> {
        let Some(mut pass) = self.pass.take() else {
            return Ok(None);
        };
        let step = if pass.unseen.is_none() {
            self.scan_step(&mut pass)
        } else {
            self.unseen_step(&mut pass)
        };
        step?;
        let done = pass
            .unseen
            .as_ref()
            .is_some_and(|unseen| pass.next_unseen >= unseen.len());
        if done {
            Ok(Some(self.finish(pass)))
        } else {
            self.pass = Some(pass);
            Ok(None)
        }
    }

    /// A whole pass at once (start-up, tests).
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn reconcile(&mut self) -> Result<ReconcileReport, OwnerError> {
        self.begin_reconcile();
        loop {
            if let Some(report) = self.reconcile_step()? {
                return Ok(report);
            }
        }
    }

    fn scan_step(&mut self, pass: &mut Pass) -> Result<(), OwnerError> {
        let entries = self.dataplane.scan(&mut pass.cursor, CHUNK)?;
        let now = self.now();
        let mut adopt: BTreeMap<(DecisionKind, u64), Vec<Prefix>> = BTreeMap::new();
        let mut remove: Vec<(ListId, Prefix, &'static str)> = Vec::new();
        let mut rewrite: Vec<(DecisionKind, Prefix, u64)> = Vec::new();
        for entry in &entries {
            pass.report.entries += 1;
            let kind = if entry.list.kind == ListKind::Allow {
                DecisionKind::Allow
            } else {
                DecisionKind::Block
            };
            if kind == DecisionKind::Block && entry.packets > 0 && self.config.top_blocked > 0 {
                pass.top.push((entry.prefix, entry.packets, entry.bytes));
                if pass.top.len() >= self.config.top_blocked.max(CHUNK) * 2 {
                    keep_top(&mut pass.top, self.config.top_blocked);
                }
                if let Some(found) = pass
                    .origins
                    .as_ref()
                    .and_then(|table| table.lookup(entry.prefix.addr()))
                {
                    let sums = pass.per_origin.entry(found.origin.clone()).or_default();
                    sums.0 += entry.packets;
                    sums.1 += entry.bytes;
                }
            }
            // In a list the program would not look it up in as this prefix (a host in a
            // prefix trie, an IPv4-mapped key in an IPv6 list).
            let belongs = match kind {
                DecisionKind::Block => ListId::block_list_of(&entry.prefix),
                DecisionKind::Allow => ListId::allow_list_of(&entry.prefix),
            };
            let misplaced = belongs != entry.list;
            if misplaced {
                if self.store.get(kind, &entry.prefix).is_some() {
                    remove.push((entry.list, entry.prefix, "in the wrong list"));
                    continue;
                }
            } else if let Some(decision) = self.store.see(kind, &entry.prefix) {
                // An expired one is the sweep's (within a second).
                if !decision.is_expired(now.unix) {
                    let wanted = now.deadline(decision.origin.expires_unix);
                    self.check_entry(pass, kind, entry, wanted);
                }
                continue;
            }
            match unknown(pass.policy, entry, now) {
                Unknown::Adopt(expires_unix) => {
                    adopt
                        .entry((kind, expires_unix))
                        .or_default()
                        .push(entry.prefix);
                    if misplaced {
                        // Written where it belongs once adopted; the copy goes.
                        rewrite.push((kind, entry.prefix, now.deadline(expires_unix)));
                        remove.push((entry.list, entry.prefix, "in the wrong list"));
                    }
                }
                Unknown::Remove(why) => remove.push((entry.list, entry.prefix, why)),
            }
        }
        self.adopt(pass, adopt, now);
        for (kind, prefix, deadline) in rewrite {
            if let Err(err) = self.put_back(kind, &prefix, deadline) {
                log::error!(
                    "reconcile: writing {} {prefix}: {}",
                    kind.name(),
                    error_chain(&err)
                );
            }
        }
        for (list, prefix, why) in remove {
            match self.dataplane.remove_entry(list, &prefix) {
                Ok(_) => {
                    // A misplaced copy of a decision's entry is a correction.
                    if self.store.get(kind_of(list), &prefix).is_some() {
                        pass.report.corrected += 1;
                    } else {
                        pass.report.removed += 1;
                    }
                    pass.example(why, prefix);
                }
                Err(err) => {
                    pass.report.unknown += 1;
                    log::error!(
                        "reconcile: removing {prefix} from {list}: {}",
                        error_chain(&err)
                    );
                }
            }
        }
        if pass.cursor.is_done() {
            let repairs = self.dataplane.finish_scan(&pass.cursor, !pass.edited)?;
            if repairs.config {
                pass.report.corrected += 1;
                log::warn!(
                    "reconcile: CONFIG (dry-run, accounting and list flags) was changed behind the daemon's back; put back"
                );
            }
            if repairs.slots > 0 {
                pass.report.corrected += u64::from(repairs.slots);
                log::warn!(
                    "reconcile: {} interface counter slots were changed behind the daemon's back; put back",
                    repairs.slots
                );
            }
            if repairs.summary > 0 {
                pass.report.corrected += repairs.summary;
                log::warn!(
                    "reconcile: {} summary bitmap words or uncounted entries (changed behind the daemon's back); put back",
                    repairs.summary
                );
            }
            let mut unseen = Vec::new();
            for kind in DecisionKind::ALL {
                // Only when something is missing does the pass walk the decisions.
                if self.store.unseen_count(kind) > 0 {
                    unseen.extend(self.store.unseen(kind).into_iter().map(|p| (kind, p)));
                }
            }
            pass.unseen = Some(unseen);
        }
        Ok(())
    }

    /// Record unknown entries as `recovered` decisions, keeping the kernel's expiry.
    fn adopt(
        &mut self,
        pass: &mut Pass,
        adopt: BTreeMap<(DecisionKind, u64), Vec<Prefix>>,
        now: Now,
    ) {
        for ((kind, expires_unix), prefixes) in adopt {
            let origin = Arc::new(Origin {
                source: Source::Recovered,
                reason: "found in the kernel with no decision to explain it".into(),
                created_unix: now.unix,
                expires_unix,
                evidence: Vec::new(),
            });
            let n = prefixes.len() as u64;
            let first = prefixes[0];
            if let Err(err) = self.store.put(kind, &origin, prefixes) {
                pass.report.unknown += n;
                log::error!("reconcile: adopting {n} entries: {}", error_chain(&err));
                continue;
            }
            pass.report.adopted += n;
            pass.example("adopted", first);
        }
    }

    /// Compare a kernel entry with what its decision wants; correct it when it differs.
    fn check_entry(
        &mut self,
        pass: &mut Pass,
        kind: DecisionKind,
        entry: &ScannedEntry,
        wanted: u64,
    ) {
        let length_right = entry.prefix_len == u32::from(entry.prefix.prefix_len());
        let right = match kind {
            DecisionKind::Block => length_right && deadline_matches(wanted, entry.expires_ns),
            DecisionKind::Allow => length_right,
        };
        if right {
            return;
        }
        let what = if length_right {
            "expiry"
        } else {
            "prefix length"
        };
        match self.put_back(kind, &entry.prefix, wanted) {
            Ok(()) => {
                pass.report.corrected += 1;
                pass.example(what, entry.prefix);
            }
            Err(err) => log::error!(
                "reconcile: correcting {} {}: {}",
                kind.name(),
                entry.prefix,
                error_chain(&err)
            ),
        }
    }

    /// Write a decision's entry (counters kept when it is there).
    fn put_back(
        &mut self,
        kind: DecisionKind,
        prefix: &Prefix,
        deadline: u64,
    ) -> Result<(), DataplaneError> {
        let result = match kind {
            DecisionKind::Block => self.dataplane.block(prefix, deadline),
            DecisionKind::Allow => self.dataplane.allow(prefix),
        };
        if matches!(result, Err(DataplaneError::ListFull { .. })) {
            self.full_list_errors += 1;
        }
        result
    }

    /// Look up, one by one, the decisions the scan did not see; put back the missing ones.
    fn unseen_step(&mut self, pass: &mut Pass) -> Result<(), OwnerError> {
        let now = self.now();
        let unseen = pass.unseen.take().unwrap_or_default();
        let end = (pass.next_unseen + CHUNK).min(unseen.len());
        for &(kind, prefix) in &unseen[pass.next_unseen..end] {
            let Some(decision) = self.store.get(kind, &prefix) else {
                continue;
            };
            if decision.is_expired(now.unix) || self.store.is_seen(kind, &prefix) {
                continue;
            }
            let wanted = now.deadline(decision.origin.expires_unix);
            let found = match kind {
                DecisionKind::Block => self.dataplane.block_entry(&prefix)?.map(|e| ScannedEntry {
                    list: ListId::block_list_of(&prefix),
                    prefix,
                    expires_ns: e.expires_ns,
                    prefix_len: e.prefix_len,
                    packets: e.packets,
                    bytes: e.bytes,
                }),
                DecisionKind::Allow => self.dataplane.allow_entry(&prefix)?.map(|e| ScannedEntry {
                    list: ListId::allow_list_of(&prefix),
                    prefix,
                    expires_ns: 0,
                    prefix_len: e.prefix_len,
                    packets: e.packets,
                    bytes: e.bytes,
                }),
            };
            let _: bool = self.store.mark_seen(kind, &prefix);
            if let Some(entry) = found {
                self.check_entry(pass, kind, &entry, wanted);
                continue;
            }
            match self.put_back(kind, &prefix, wanted) {
                Ok(()) => {
                    pass.report.missing += 1;
                    pass.example("missing", prefix);
                }
                Err(err) => log::error!(
                    "reconcile: restoring {} {prefix}: {}",
                    kind.name(),
                    error_chain(&err)
                ),
            }
        }
        pass.next_unseen = end;
        pass.unseen = Some(unseen);
        Ok(())
    }

    fn finish(&mut self, mut pass: Pass) -> ReconcileReport {
        let report = pass.report;
        keep_top(&mut pass.top, self.config.top_blocked);
        self.top_blocked = Arc::new(pass.top);
        let mut origins: Vec<(OriginAs, u64, u64)> = pass
            .per_origin
            .drain()
            .map(|(origin, (packets, bytes))| (origin, packets, bytes))
            .collect();
        origins.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        origins.truncate(self.config.top_blocked);
        self.top_origins = Arc::new(
            origins
                .into_iter()
                .map(|(origin, packets, bytes)| (origin.to_string(), packets, bytes))
                .collect(),
        );
        self.last_reconcile = report;
        self.repaired_total += report.missing + report.corrected;
        self.unknown_adopted_total += report.adopted;
        self.unknown_removed_total += report.removed;
        self.reconcile_passes_total += 1;
        self.reconcile_last_pass = pass.started.elapsed();
        let examples = |what: &[&str]| {
            let list: Vec<String> = what
                .iter()
                .flat_map(|w| pass.examples.get(w).into_iter().flatten())
                .take(EXAMPLES)
                .map(ToString::to_string)
                .collect();
            list.join(", ")
        };
        if report.adopted > 0 {
            log::warn!(
                "reconcile: adopted {} kernel entries no decision accounted for, as source recovered (e.g. {}); `xdpguard unblock` removes them",
                report.adopted,
                examples(&["adopted"])
            );
        }
        if report.removed > 0 {
            log::warn!(
                "reconcile: removed {} kernel entries no decision accounted for (expired, misplaced, or policy remove; e.g. {})",
                report.removed,
                examples(&[
                    "no decision (policy remove)",
                    "expired, with no decision",
                    "in the wrong list"
                ])
            );
        }
        if report.missing > 0 {
            log::warn!(
                "reconcile: {} decisions were missing from the kernel; put back (e.g. {})",
                report.missing,
                examples(&["missing"])
            );
        }
        if report.corrected > 0 {
            log::warn!(
                "reconcile: corrected {} kernel entries or settings that differed from the decisions (expiry, prefix length, CONFIG, interface slots; e.g. {})",
                report.corrected,
                examples(&["expiry", "prefix length", "in the wrong list"])
            );
        }
        if report.unknown > 0 {
            log::error!(
                "reconcile: {} kernel entries no decision accounts for are left in place (see the errors above)",
                report.unknown
            );
        }
        log::debug!(
            "reconcile: {} entries in {:?}",
            report.entries,
            self.reconcile_last_pass
        );
        report
    }

    /// Remove up to `limit` expired decisions, from the kernel and the store. Returns how many,
    /// and whether more are due.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn sweep_step(&mut self, limit: usize) -> Result<(u64, bool), OwnerError> {
        let now = self.clock.now_unix();
        let due = self.store.take_expired(now, limit);
        if due.is_empty() {
            return Ok((0, self.store.any_expired(now)));
        }
        self.edited_during_pass();
        let (blocks, allows): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|(kind, _)| *kind == DecisionKind::Block);
        let blocks: Vec<Prefix> = blocks.into_iter().map(|(_, prefix)| prefix).collect();
        let allows: Vec<Prefix> = allows.into_iter().map(|(_, prefix)| prefix).collect();
        let mut failures = 0;
        // The decision goes either way: an expired kernel entry no longer drops, and the next
        // reconcile removes what is left of it.
        for (prefix, result) in blocks.iter().zip(self.dataplane.unblock_many(&blocks)) {
            if let Err(err) = result {
                failures += 1;
                if failures <= EXAMPLES {
                    log::error!("expiry of block {prefix}: {}", error_chain(&err));
                }
            }
        }
        for prefix in &allows {
            if let Err(err) = self.dataplane.unallow(prefix) {
                log::error!("expiry of allow {prefix}: {}", error_chain(&err));
            }
        }
        let mut by_source: BTreeMap<Source, u64> = BTreeMap::new();
        let mut swept = 0;
        for (kind, prefixes) in [(DecisionKind::Block, blocks), (DecisionKind::Allow, allows)] {
            for decision in self.store.remove(kind, &prefixes)? {
                *by_source.entry(decision.origin.source.clone()).or_default() += 1;
                swept += 1;
            }
        }
        for (source, n) in by_source {
            self.count(&source, "expire", n);
        }
        Ok((swept, self.store.any_expired(now)))
    }

    /// Remove everything that has expired, in chunks (start-up, tests).
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn sweep(&mut self) -> Result<u64, OwnerError> {
        let mut total = 0;
        loop {
            let (swept, more) = self.sweep_step(CHUNK)?;
            total += swept;
            if !more {
                return Ok(total);
            }
        }
    }

    /// How long the last complete pass took.
    pub const fn last_pass_duration(&self) -> Duration {
        self.reconcile_last_pass
    }
}

const fn kind_of(list: ListId) -> DecisionKind {
    match list.kind {
        ListKind::Allow => DecisionKind::Allow,
        ListKind::BlockHost | ListKind::BlockPrefix => DecisionKind::Block,
    }
}

/// Keep the `n` entries with the most packets, most first.
fn keep_top(top: &mut Vec<(Prefix, u64, u64)>, n: usize) {
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(n);
}
