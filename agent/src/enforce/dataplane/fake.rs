//! An in-memory [`DataPath`] that keeps the rules of the kernel one as the decision owner sees
//! them, for tests that need no root: each list has a capacity and answers
//! [`DataplaneError::ListFull`] when full, a block goes in the host or the prefix list by its
//! length, re-blocking keeps an entry's counters, and the per-list counts only change through
//! the trait (a test's edits "behind the daemon's back" show up at the next
//! [`DataPath::recount`], as with the kernel).
//!
//! A test can also put traffic on entries and interface slots, edit the lists directly, make
//! interfaces missing or generic-only, make calls fail, and read back what was called.
use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    io,
    ops::Bound,
    path::PathBuf,
};

use aya::{programs::ProgramError, sys::SyscallError};
use xdpguard_common::{AllowEntry, BlockEntry, MAX_INTERFACES, Stat};

use super::{
    AttachMode, AttachedMode, Attachment, BlockListEntry, Capacities, DataPath, DataplaneError,
    ListId, ListKind, SCAN_ORDER, ScanCursor, ScanRepairs, ScannedEntry, Stats,
};
use crate::prefix::Prefix;

/// A [`DataPath`] call a test can make fail (see [`FakeDataPath::fail`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FakeOp {
    SetDryRun,
    SetVolumeAccounting,
    Attach,
    Detach,
    /// [`DataPath::block`], and each prefix of [`DataPath::block_new`].
    Block,
    Unblock,
    BlockEntry,
    BlockEntries,
    Recount,
    /// [`DataPath::scan`].
    Scan,
    Allow,
    Unallow,
    AllowEntry,
    /// [`DataPath::interface_stats`] and [`DataPath::slot_stats`].
    Stats,
}

/// An edit made through the [`DataPath`] trait, in call order (reads are not recorded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeEvent {
    SetDryRun(bool),
    SetVolumeAccounting(bool),
    Attached {
        interface: String,
        mode: AttachedMode,
    },
    Detached {
        interface: String,
    },
    Block {
        prefix: Prefix,
        expires_ns: u64,
    },
    /// One [`DataPath::block_new`] call with all its prefixes.
    BlockNew {
        prefixes: Vec<Prefix>,
        expires_ns: u64,
    },
    Unblock(Prefix),
    /// [`DataPath::remove_entry`].
    RemoveEntry {
        list: ListId,
        prefix: Prefix,
    },
    Allow(Prefix),
    Unallow(Prefix),
    Recount,
    /// [`DataPath::finish_scan`].
    FinishScan,
}

/// How many more calls of an operation fail.
#[derive(Clone, Copy, Debug)]
enum Failing {
    Next(u32),
    Always,
}

/// Ifindexes the fake hands out start here (1 is loopback on Linux).
const FIRST_IFINDEX: u32 = 2;

/// The in-memory data path. See the module documentation.
#[derive(Debug)]
pub struct FakeDataPath {
    capacities: Capacities,
    dry_run: bool,
    volume_accounting: bool,
    /// Block entries per list (`BlockHost`, `BlockPrefix`), keyed by their exact prefix.
    blocks: BTreeMap<ListId, BTreeMap<Prefix, BlockEntry>>,
    allows: BTreeMap<ListId, BTreeMap<Prefix, AllowEntry>>,
    /// Entries per block list as counted through the trait, like the kernel path's.
    block_counts: BTreeMap<ListId, u64>,
    attachments: BTreeMap<String, Attachment>,
    /// Ifindexes given out, by interface name.
    ifindexes: BTreeMap<String, u32>,
    /// Counter slots assigned, by ifindex (kept across a detach, as `IFACE_SLOT` is).
    slots: BTreeMap<u32, u32>,
    missing_interfaces: BTreeSet<String>,
    generic_only: BTreeSet<String>,
    stats: BTreeMap<u32, Stats>,
    /// In a cell so that `&self` reads can use up their failures too.
    failures: RefCell<BTreeMap<FakeOp, Failing>>,
    events: Vec<FakeEvent>,
    /// `CONFIG` changed behind the daemon's back, until the next [`DataPath::finish_scan`].
    config_tampered: bool,
}

// Fits where the kernel data path goes (see `seam.rs`).
const _: fn(FakeDataPath) -> Box<dyn DataPath + Send> = |fake| Box::new(fake);

impl Default for FakeDataPath {
    fn default() -> Self {
        Self::new(Capacities::default())
    }
}

impl FakeDataPath {
    /// An empty data path with these list sizes; every interface name exists and takes native
    /// mode until told otherwise.
    pub const fn new(capacities: Capacities) -> Self {
        Self {
            capacities,
            dry_run: false,
            volume_accounting: false,
            blocks: BTreeMap::new(),
            allows: BTreeMap::new(),
            block_counts: BTreeMap::new(),
            attachments: BTreeMap::new(),
            ifindexes: BTreeMap::new(),
            slots: BTreeMap::new(),
            missing_interfaces: BTreeSet::new(),
            generic_only: BTreeSet::new(),
            stats: BTreeMap::new(),
            failures: RefCell::new(BTreeMap::new()),
            events: Vec::new(),
            config_tampered: false,
        }
    }

    // --- What a test arranges ---

    /// The next `times` calls of `op` fail with an injected error (mentioning "injected").
    pub fn fail(&mut self, op: FakeOp, times: u32) {
        let _: Option<_> = self.failures.get_mut().insert(op, Failing::Next(times));
    }

    /// Every call of `op` fails until [`Self::heal`].
    pub fn fail_always(&mut self, op: FakeOp) {
        let _: Option<_> = self.failures.get_mut().insert(op, Failing::Always);
    }

    /// No more injected failures.
    pub fn heal(&mut self) {
        self.failures.get_mut().clear();
    }

    /// `interface` no longer exists: attaching to it fails.
    pub fn remove_interface(&mut self, interface: &str) {
        let _: bool = self.missing_interfaces.insert(interface.to_owned());
    }

    /// `interface` refuses native mode: `Auto` falls back to generic, `Native` fails.
    pub fn refuse_native(&mut self, interface: &str) {
        let _: bool = self.generic_only.insert(interface.to_owned());
    }

    /// Traffic the program dropped (or passed) through the block entry of `prefix`. Whether
    /// there is one.
    pub fn add_block_traffic(&mut self, prefix: &Prefix, packets: u64, bytes: u64) -> bool {
        self.edit_block(prefix).is_some_and(|entry| {
            entry.packets += packets;
            entry.bytes += bytes;
            true
        })
    }

    /// Traffic the allow entry of `prefix` let through. Whether there is one.
    pub fn add_allow_traffic(&mut self, prefix: &Prefix, packets: u64, bytes: u64) -> bool {
        self.edit_allow(prefix).is_some_and(|entry| {
            entry.packets += packets;
            entry.bytes += bytes;
            true
        })
    }

    /// Count frames under `stat` in interface slot `slot` (0: unattributed frames).
    pub fn add_stat(&mut self, slot: u32, stat: Stat, packets: u64, bytes: u64) {
        let value = &mut self.stats.entry(slot).or_default().0[stat as usize];
        value.packets += packets;
        value.bytes += bytes;
    }

    /// The block entry of `prefix`, to change its counters or expiry behind the daemon's back.
    pub fn edit_block(&mut self, prefix: &Prefix) -> Option<&mut BlockEntry> {
        self.blocks
            .get_mut(&ListId::block_list_of(prefix))?
            .get_mut(prefix)
    }

    /// The allow entry of `prefix`, to change its counters behind the daemon's back.
    pub fn edit_allow(&mut self, prefix: &Prefix) -> Option<&mut AllowEntry> {
        self.allows
            .get_mut(&ListId::allow_list_of(prefix))?
            .get_mut(prefix)
    }

    /// Put a block entry in behind the daemon's back (as `bpftool map update` would): no
    /// capacity check, and the counts stay as they were until a recount.
    pub fn insert_block_behind(&mut self, prefix: &Prefix, expires_ns: u64) {
        let entry = fresh_block(prefix, expires_ns);
        let _: Option<_> = self
            .blocks
            .entry(ListId::block_list_of(prefix))
            .or_default()
            .insert(*prefix, entry);
    }

    /// Change the program's `CONFIG` behind the daemon's back (the next scan's end puts it
    /// back and says so).
    pub fn tamper_config(&mut self) {
        self.config_tampered = true;
    }

    /// Delete a block entry behind the daemon's back; the entry it held.
    pub fn remove_block_behind(&mut self, prefix: &Prefix) -> Option<BlockEntry> {
        self.blocks
            .get_mut(&ListId::block_list_of(prefix))?
            .remove(prefix)
    }

    /// Put an allow entry in behind the daemon's back (no capacity check).
    pub fn insert_allow_behind(&mut self, prefix: &Prefix) {
        let entry = AllowEntry {
            prefix_len: u32::from(prefix.prefix_len()),
            ..AllowEntry::default()
        };
        let _: Option<_> = self
            .allows
            .entry(ListId::allow_list_of(prefix))
            .or_default()
            .insert(*prefix, entry);
    }

    /// Delete an allow entry behind the daemon's back; the entry it held.
    pub fn remove_allow_behind(&mut self, prefix: &Prefix) -> Option<AllowEntry> {
        self.allows
            .get_mut(&ListId::allow_list_of(prefix))?
            .remove(prefix)
    }

    // --- What a test reads back ---

    pub const fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub const fn volume_accounting(&self) -> bool {
        self.volume_accounting
    }

    /// The edits made through the trait so far, oldest first.
    pub fn events(&self) -> &[FakeEvent] {
        &self.events
    }

    /// The edits so far, forgetting them.
    pub fn take_events(&mut self) -> Vec<FakeEvent> {
        std::mem::take(&mut self.events)
    }

    /// Entries `list` really holds (not the count the trait reports, see
    /// [`DataPath::block_count`]).
    pub fn entries_in(&self, list: ListId) -> usize {
        match list.kind {
            ListKind::Allow => self.allows.get(&list).map_or(0, BTreeMap::len),
            ListKind::BlockHost | ListKind::BlockPrefix => {
                self.blocks.get(&list).map_or(0, BTreeMap::len)
            }
        }
    }

    /// The prefixes in the allowlists.
    pub fn allowed(&self) -> Vec<Prefix> {
        self.allows
            .values()
            .flat_map(|list| list.keys().copied())
            .collect()
    }

    // --- The rules ---

    /// Fail here if a test asked for it.
    fn check(&self, op: FakeOp) -> Result<(), DataplaneError> {
        match self.failures.borrow_mut().get_mut(&op) {
            None | Some(Failing::Next(0)) => Ok(()),
            Some(Failing::Always) => Err(injected(op)),
            Some(Failing::Next(left)) => {
                *left -= 1;
                Err(injected(op))
            }
        }
    }

    fn full(&self, list: ListId, prefix: &Prefix) -> DataplaneError {
        DataplaneError::ListFull {
            list,
            capacity: self.capacities.of(list),
            prefix: *prefix,
        }
    }

    /// Insert or replace a block entry; `keep_counters` as [`DataPath::block`] does.
    fn put_block(
        &mut self,
        prefix: &Prefix,
        expires_ns: u64,
        keep_counters: bool,
    ) -> Result<(), DataplaneError> {
        let list = ListId::block_list_of(prefix);
        let capacity = u64::from(self.capacities.of(list));
        let entries = self.blocks.entry(list).or_default();
        let fresh = fresh_block(prefix, expires_ns);
        if let Some(existing) = entries.get_mut(prefix) {
            *existing = if keep_counters {
                BlockEntry {
                    packets: existing.packets,
                    bytes: existing.bytes,
                    ..fresh
                }
            } else {
                fresh
            };
            return Ok(());
        }
        if entries.len() as u64 >= capacity {
            return Err(self.full(list, prefix));
        }
        let _: Option<_> = entries.insert(*prefix, fresh);
        *self.block_counts.entry(list).or_default() += 1;
        Ok(())
    }

    fn read_entries(&self) -> Vec<BlockListEntry> {
        // `ListId` orders host lists before prefix lists, as the kernel path lists them.
        self.blocks
            .values()
            .flat_map(|list| {
                list.iter().map(|(prefix, entry)| BlockListEntry {
                    prefix: *prefix,
                    entry: *entry,
                })
            })
            .collect()
    }

    /// The counter slot for `ifindex`, as the kernel path assigns them: the one it had, or the
    /// lowest no attachment uses; 0 when all are taken.
    fn slot_of(&mut self, ifindex: u32) -> u32 {
        if let Some(slot) = self.slots.get(&ifindex) {
            return *slot;
        }
        let used: Vec<u32> = self.attachments.values().map(|a| a.slot).collect();
        let Some(slot) = (1..MAX_INTERFACES).find(|slot| !used.contains(slot)) else {
            return 0;
        };
        let _: Option<_> = self.slots.insert(ifindex, slot);
        slot
    }

    fn ifindex_of(&mut self, interface: &str) -> u32 {
        let next = FIRST_IFINDEX + u32::try_from(self.ifindexes.len()).unwrap_or(u32::MAX);
        *self.ifindexes.entry(interface.to_owned()).or_insert(next)
    }
}

fn fresh_block(prefix: &Prefix, expires_ns: u64) -> BlockEntry {
    BlockEntry {
        expires_ns,
        prefix_len: u32::from(prefix.prefix_len()),
        ..BlockEntry::default()
    }
}

fn injected(op: FakeOp) -> DataplaneError {
    DataplaneError::Io {
        path: PathBuf::from(format!("fake-data-path/{op:?}")),
        source: io::Error::other("injected failure"),
    }
}

/// What a driver without native XDP answers.
fn native_refused(interface: &str) -> DataplaneError {
    DataplaneError::Attach {
        interface: interface.to_owned(),
        mode: AttachMode::Native,
        source: ProgramError::SyscallError(SyscallError {
            call: "bpf_link_create",
            io_error: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        }),
    }
}

impl DataPath for FakeDataPath {
    fn set_dry_run(&mut self, dry_run: bool) -> Result<(), DataplaneError> {
        self.check(FakeOp::SetDryRun)?;
        self.dry_run = dry_run;
        self.events.push(FakeEvent::SetDryRun(dry_run));
        Ok(())
    }

    fn set_volume_accounting(&mut self, on: bool) -> Result<(), DataplaneError> {
        self.check(FakeOp::SetVolumeAccounting)?;
        self.volume_accounting = on;
        self.events.push(FakeEvent::SetVolumeAccounting(on));
        Ok(())
    }

    fn attachments(&self) -> Vec<(String, Attachment)> {
        self.attachments
            .iter()
            .map(|(name, attachment)| (name.clone(), *attachment))
            .collect()
    }

    fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        if let Some(existing) = self.attachments.get(interface) {
            return Ok(existing.mode);
        }
        self.check(FakeOp::Attach)?;
        if self.missing_interfaces.contains(interface) {
            return Err(DataplaneError::NoSuchInterface(interface.to_owned()));
        }
        let native = !self.generic_only.contains(interface);
        let attached = match mode {
            AttachMode::Native if !native => return Err(native_refused(interface)),
            AttachMode::Native => AttachedMode::Native,
            AttachMode::Generic => AttachedMode::Generic,
            AttachMode::Auto if native => AttachedMode::Native,
            AttachMode::Auto => AttachedMode::Generic,
        };
        let ifindex = self.ifindex_of(interface);
        let slot = self.slot_of(ifindex);
        let _: Option<_> = self.attachments.insert(
            interface.to_owned(),
            Attachment {
                ifindex,
                mode: attached,
                slot,
            },
        );
        self.events.push(FakeEvent::Attached {
            interface: interface.to_owned(),
            mode: attached,
        });
        Ok(attached)
    }

    fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        self.check(FakeOp::Detach)?;
        if self.attachments.remove(interface).is_none() {
            return Err(DataplaneError::NotAttached(interface.to_owned()));
        }
        self.events.push(FakeEvent::Detached {
            interface: interface.to_owned(),
        });
        Ok(())
    }

    fn block(&mut self, prefix: &Prefix, expires_ns: u64) -> Result<(), DataplaneError> {
        self.check(FakeOp::Block)?;
        self.events.push(FakeEvent::Block {
            prefix: *prefix,
            expires_ns,
        });
        self.put_block(prefix, expires_ns, true)
    }

    fn block_new(
        &mut self,
        prefixes: &[Prefix],
        expires_ns: u64,
    ) -> Vec<Result<(), DataplaneError>> {
        self.events.push(FakeEvent::BlockNew {
            prefixes: prefixes.to_vec(),
            expires_ns,
        });
        prefixes
            .iter()
            .map(|prefix| {
                self.check(FakeOp::Block)?;
                if prefix.is_host() {
                    // The kernel path's batch replaces an entry that is there after all, counters
                    // reset, and counts it as new (the caller said it was).
                    let list = ListId::block_list_of(prefix);
                    let was_there = self
                        .blocks
                        .get(&list)
                        .is_some_and(|entries| entries.contains_key(prefix));
                    self.put_block(prefix, expires_ns, false)?;
                    if was_there {
                        *self.block_counts.entry(list).or_default() += 1;
                    }
                    Ok(())
                } else {
                    // Shorter prefixes take the one-by-one path, which keeps counters.
                    self.put_block(prefix, expires_ns, true)
                }
            })
            .collect()
    }

    fn unblock(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError> {
        self.check(FakeOp::Unblock)?;
        self.events.push(FakeEvent::Unblock(*prefix));
        let list = ListId::block_list_of(prefix);
        let was_there = self
            .blocks
            .get_mut(&list)
            .and_then(|entries| entries.remove(prefix))
            .is_some();
        if was_there {
            let count = self.block_counts.entry(list).or_default();
            *count = count.saturating_sub(1);
        }
        Ok(was_there)
    }

    fn remove_entry(&mut self, list: ListId, prefix: &Prefix) -> Result<bool, DataplaneError> {
        if list.kind == ListKind::Allow {
            return self.unallow(prefix);
        }
        self.check(FakeOp::Unblock)?;
        self.events.push(FakeEvent::RemoveEntry {
            list,
            prefix: *prefix,
        });
        let was_there = self
            .blocks
            .get_mut(&list)
            .and_then(|entries| entries.remove(prefix))
            .is_some();
        if was_there {
            let count = self.block_counts.entry(list).or_default();
            *count = count.saturating_sub(1);
        }
        Ok(was_there)
    }

    fn scan(
        &self,
        cursor: &mut ScanCursor,
        limit: usize,
    ) -> Result<Vec<ScannedEntry>, DataplaneError> {
        self.check(FakeOp::Scan)?;
        let Some(list) = cursor.current() else {
            return Ok(Vec::new());
        };
        let limit = limit.max(1);
        let from = cursor.last.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out: Vec<ScannedEntry> = if list.kind == ListKind::Allow {
            self.allows
                .get(&list)
                .into_iter()
                .flat_map(|entries| entries.range((from, Bound::Unbounded)))
                .take(limit + 1)
                .map(|(prefix, entry)| ScannedEntry::allow(list, *prefix, entry))
                .collect()
        } else {
            self.blocks
                .get(&list)
                .into_iter()
                .flat_map(|entries| entries.range((from, Bound::Unbounded)))
                .take(limit + 1)
                .map(|(prefix, entry)| ScannedEntry::block(list, *prefix, entry))
                .collect()
        };
        let done = out.len() <= limit;
        out.truncate(limit);
        cursor.last = out.last().map(|entry| entry.prefix);
        cursor.advance(out.len(), done);
        Ok(out)
    }

    fn finish_scan(
        &mut self,
        cursor: &ScanCursor,
        quiet: bool,
    ) -> Result<ScanRepairs, DataplaneError> {
        self.events.push(FakeEvent::FinishScan);
        for list in SCAN_ORDER.iter().filter(|l| l.kind != ListKind::Allow) {
            let scanned = cursor.count(*list);
            let count = self.block_counts.entry(*list).or_default();
            *count = if quiet {
                scanned
            } else {
                (*count).max(scanned)
            };
        }
        Ok(ScanRepairs {
            config: std::mem::take(&mut self.config_tampered),
            slots: 0,
            summary: 0,
        })
    }

    fn block_entry(&self, prefix: &Prefix) -> Result<Option<BlockEntry>, DataplaneError> {
        self.check(FakeOp::BlockEntry)?;
        Ok(self
            .blocks
            .get(&ListId::block_list_of(prefix))
            .and_then(|entries| entries.get(prefix))
            .copied())
    }

    fn block_entries(&self) -> Result<Vec<BlockListEntry>, DataplaneError> {
        self.check(FakeOp::BlockEntries)?;
        Ok(self.read_entries())
    }

    fn block_count(&self, list: ListId) -> u64 {
        self.block_counts.get(&list).copied().unwrap_or(0)
    }

    fn recount(&mut self) -> Result<Vec<BlockListEntry>, DataplaneError> {
        self.check(FakeOp::Recount)?;
        self.events.push(FakeEvent::Recount);
        self.block_counts = self
            .blocks
            .iter()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(list, entries)| (*list, entries.len() as u64))
            .collect();
        Ok(self.read_entries())
    }

    fn allow(&mut self, prefix: &Prefix) -> Result<(), DataplaneError> {
        self.check(FakeOp::Allow)?;
        self.events.push(FakeEvent::Allow(*prefix));
        let list = ListId::allow_list_of(prefix);
        let capacity = u64::from(self.capacities.of(list));
        let entries = self.allows.entry(list).or_default();
        if entries.contains_key(prefix) {
            // Counters kept; nothing else in an allow entry changes.
            return Ok(());
        }
        if entries.len() as u64 >= capacity {
            return Err(self.full(list, prefix));
        }
        let _: Option<_> = entries.insert(
            *prefix,
            AllowEntry {
                prefix_len: u32::from(prefix.prefix_len()),
                ..AllowEntry::default()
            },
        );
        Ok(())
    }

    fn unallow(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError> {
        self.check(FakeOp::Unallow)?;
        self.events.push(FakeEvent::Unallow(*prefix));
        Ok(self.remove_allow_behind(prefix).is_some())
    }

    fn allow_entry(&self, prefix: &Prefix) -> Result<Option<AllowEntry>, DataplaneError> {
        self.check(FakeOp::AllowEntry)?;
        Ok(self
            .allows
            .get(&ListId::allow_list_of(prefix))
            .and_then(|entries| entries.get(prefix))
            .copied())
    }

    fn capacities(&self) -> Capacities {
        self.capacities
    }

    fn interface_stats(&self) -> Result<Vec<(String, Stats)>, DataplaneError> {
        self.check(FakeOp::Stats)?;
        Ok(self
            .attachments
            .iter()
            .map(|(name, attachment)| {
                let stats = self.stats.get(&attachment.slot).copied();
                (name.clone(), stats.unwrap_or_default())
            })
            .collect())
    }

    fn slot_stats(&self, slot: u32) -> Result<Stats, DataplaneError> {
        self.check(FakeOp::Stats)?;
        Ok(self.stats.get(&slot).copied().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use xdpguard_common::Family;

    use super::*;

    const fn list(kind: ListKind, family: Family) -> ListId {
        ListId { kind, family }
    }

    fn p(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    fn small() -> FakeDataPath {
        FakeDataPath::new(Capacities {
            block_host_v4: 2,
            block_prefix_v6: 1,
            allow_v4: 1,
            ..Capacities::default()
        })
    }

    #[test]
    fn a_full_list_refuses_new_entries_but_takes_updates() {
        let mut fake = small();
        fake.block(&p("198.51.100.1"), 0).unwrap();
        fake.block(&p("198.51.100.2"), 0).unwrap();
        let err = fake.block(&p("198.51.100.3"), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "list block_host/ipv4 is full (capacity 2 entries); 198.51.100.3/32 was not added"
        );
        // Another list has room of its own.
        fake.block(&p("198.51.100.0/24"), 0).unwrap();
        // An entry already there gets its new expiry, full or not.
        fake.block(&p("198.51.100.2"), 7).unwrap();
        assert_eq!(
            fake.block_entry(&p("198.51.100.2"))
                .unwrap()
                .unwrap()
                .expires_ns,
            7
        );
        fake.block(&p("2001:db8::/48"), 0).unwrap();
        assert!(matches!(
            fake.block(&p("2001:db8:1::/48"), 0),
            Err(DataplaneError::ListFull { capacity: 1, .. })
        ));
        fake.allow(&p("203.0.113.0/24")).unwrap();
        assert!(matches!(
            fake.allow(&p("203.0.113.5")),
            Err(DataplaneError::ListFull { .. })
        ));
        // A batch stops at the capacity too, one result per prefix.
        let results = fake.block_new(&[p("2001:db8::5"), p("2001:db8:2::/48")], 0);
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(DataplaneError::ListFull { .. })));
    }

    /// The scenario of `kernel_verdicts::block_new_batches_hosts_and_reports_a_full_list_per_entry`,
    /// with the kernel's answers.
    #[test]
    fn a_batch_fails_only_what_does_not_fit() {
        let mut fake = FakeDataPath::new(Capacities {
            block_host_v4: 8,
            ..Capacities::default()
        });
        fake.block(&p("203.0.113.7"), 0).unwrap();
        let batch: Vec<Prefix> = [
            "203.0.113.1",
            "203.0.113.2",
            "2001:db8:bad::1",
            "203.0.113.128/25",
            "203.0.113.3",
            "203.0.113.4",
            "203.0.113.5",
            "203.0.113.6",
            "203.0.113.8",
            "203.0.113.9",
        ]
        .iter()
        .map(|t| p(t))
        .collect();
        let results = fake.block_new(&batch, 0);
        let failed: Vec<&Prefix> = batch
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|(prefix, _)| prefix)
            .collect();
        assert_eq!(failed, [&p("203.0.113.9")]);
        assert!(
            results[9]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("block_host/ipv4 is full")
        );
        assert_eq!(fake.block_count(list(ListKind::BlockHost, Family::Ipv4)), 8);
        assert!(fake.block_entry(&p("203.0.113.128/25")).unwrap().is_some());
        assert!(fake.block_entry(&p("2001:db8:bad::1")).unwrap().is_some());
    }

    #[test]
    fn hosts_and_prefixes_go_in_separate_lists_by_length() {
        let mut fake = small();
        fake.block(&p("192.0.2.1"), 0).unwrap();
        fake.block(&p("192.0.2.0/31"), 0).unwrap();
        fake.block(&p("2001:db8::1"), 0).unwrap();
        fake.block(&p("2001:db8::/64"), 0).unwrap();
        for list in ListId::ALL {
            let expected = u64::from(list.kind != ListKind::Allow);
            assert_eq!(fake.block_count(list), expected, "{list}");
        }
        // Hosts first, as the kernel path lists them.
        let order: Vec<String> = fake
            .block_entries()
            .unwrap()
            .iter()
            .map(|e| e.prefix.to_string())
            .collect();
        assert_eq!(
            order,
            [
                "192.0.2.1/32",
                "2001:db8::1/128",
                "192.0.2.0/31",
                "2001:db8::/64"
            ]
        );
        // Exact keys only: a covering prefix is no entry of a longer one.
        assert_eq!(fake.block_entry(&p("192.0.2.0/30")).unwrap(), None);
        assert!(!fake.unblock(&p("192.0.2.0/30")).unwrap());
    }

    #[test]
    fn ipv4_mapped_addresses_land_in_the_ipv4_lists() {
        let mut fake = small();
        fake.block(&p("::ffff:192.0.2.9"), 0).unwrap();
        assert_eq!(fake.block_count(list(ListKind::BlockHost, Family::Ipv4)), 1);
        assert!(fake.block_entry(&p("192.0.2.9")).unwrap().is_some());
    }

    #[test]
    fn reblocking_keeps_counters_and_a_batch_resets_them() {
        let mut fake = small();
        let host = p("198.51.100.7");
        fake.block(&host, 5).unwrap();
        assert!(fake.add_block_traffic(&host, 3, 300));
        fake.block(&host, 9).unwrap();
        let entry = fake.block_entry(&host).unwrap().unwrap();
        assert_eq!((entry.packets, entry.bytes, entry.expires_ns), (3, 300, 9));
        let _ = fake.block_new(&[host], 11);
        let entry = fake.block_entry(&host).unwrap().unwrap();
        assert_eq!((entry.packets, entry.expires_ns), (0, 11));
    }

    #[test]
    fn edits_behind_the_back_show_at_the_next_recount() {
        let mut fake = small();
        let host_v4 = list(ListKind::BlockHost, Family::Ipv4);
        fake.block(&p("198.51.100.1"), 0).unwrap();
        fake.insert_block_behind(&p("198.51.100.2"), 0);
        let _ = fake.remove_block_behind(&p("198.51.100.1"));
        assert_eq!(fake.block_count(host_v4), 1);
        let entries = fake.recount().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].prefix, p("198.51.100.2"));
        assert_eq!(fake.block_count(host_v4), 1);
        fake.edit_block(&p("198.51.100.2")).unwrap().expires_ns = 42;
        assert_eq!(fake.recount().unwrap()[0].entry.expires_ns, 42);
    }

    #[test]
    fn attachments_modes_slots_and_failures() {
        let mut fake = FakeDataPath::default();
        fake.refuse_native("veth-b");
        fake.remove_interface("gone0");
        assert_eq!(
            fake.attach("veth-a", AttachMode::Auto).unwrap(),
            AttachedMode::Native
        );
        assert_eq!(
            fake.attach("veth-b", AttachMode::Auto).unwrap(),
            AttachedMode::Generic
        );
        assert!(fake.attach("veth-b", AttachMode::Native).is_ok(), "kept");
        assert!(matches!(
            fake.attach("gone0", AttachMode::Auto),
            Err(DataplaneError::NoSuchInterface(_))
        ));
        let slots: Vec<u32> = fake.attachments().iter().map(|(_, a)| a.slot).collect();
        assert_eq!(slots, [1, 2]);
        fake.add_stat(2, Stat::Ipv4Drop, 4, 400);
        let stats = fake.interface_stats().unwrap();
        assert_eq!(stats[1].0, "veth-b");
        assert_eq!(stats[1].1.get(Stat::Ipv4Drop).packets, 4);
        fake.detach("veth-a").unwrap();
        assert!(matches!(
            fake.detach("veth-a"),
            Err(DataplaneError::NotAttached(_))
        ));
        fake.fail(FakeOp::Block, 1);
        let err = fake.block(&p("192.0.2.1"), 0).unwrap_err();
        assert!(crate::error_chain(&err).contains("injected"), "{err}");
        fake.block(&p("192.0.2.1"), 0).unwrap();
        assert_eq!(
            fake.take_events()
                .iter()
                .filter(|e| matches!(e, FakeEvent::Attached { .. } | FakeEvent::Detached { .. }))
                .count(),
            3
        );
    }
}
