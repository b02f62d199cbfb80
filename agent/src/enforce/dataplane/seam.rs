//! What the decision owner needs of a data path, as a trait: [`Dataplane`] is the kernel's,
//! `FakeDataPath` an in-memory one, so the owner's rules can be tested without root.
use xdpguard_common::{AllowEntry, BlockEntry};

use super::{
    AttachMode, AttachedMode, Attachment, BlockListEntry, Capacities, Dataplane, DataplaneError,
    ListId, ScanCursor, ScanRepairs, ScannedEntry, Stats,
};
use crate::prefix::Prefix;

/// The lists, flags, attachments and counters of a data path, as the decision owner edits and
/// reads them. A full list answers [`DataplaneError::ListFull`].
pub trait DataPath {
    /// Count matches as would-drop and pass them, or go back to dropping.
    ///
    /// # Errors
    /// When the flag cannot be written.
    fn set_dry_run(&mut self, dry_run: bool) -> Result<(), DataplaneError>;

    /// Count packets and bytes per source (for the volume detectors), or stop.
    ///
    /// # Errors
    /// When the flag cannot be written.
    fn set_volume_accounting(&mut self, on: bool) -> Result<(), DataplaneError>;

    /// Interfaces the program is attached to, by name.
    fn attachments(&self) -> Vec<(String, Attachment)>;

    /// Attach to `interface`; one already attached keeps its mode.
    ///
    /// # Errors
    /// When the interface does not exist or refuses the mode.
    fn attach(&mut self, interface: &str, mode: AttachMode)
    -> Result<AttachedMode, DataplaneError>;

    /// # Errors
    /// When the program is not attached to `interface`.
    fn detach(&mut self, interface: &str) -> Result<(), DataplaneError>;

    /// Block `prefix` until `expires_ns` on `CLOCK_MONOTONIC` (0 = never). An existing entry
    /// keeps its counters and gets the new expiry.
    ///
    /// # Errors
    /// When the list is full, or it cannot be written.
    fn block(&mut self, prefix: &Prefix, expires_ns: u64) -> Result<(), DataplaneError>;

    /// Block prefixes the caller knows are not blocked yet, with one expiry (an entry that is
    /// there anyway loses its counters). Results are in the order of `prefixes`.
    fn block_new(
        &mut self,
        prefixes: &[Prefix],
        expires_ns: u64,
    ) -> Vec<Result<(), DataplaneError>>;

    /// Remove `prefix` from its block list; whether it was there.
    ///
    /// # Errors
    /// When the list cannot be written.
    fn unblock(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError>;

    /// Remove many prefixes from their block lists; for each, whether it was there.
    fn unblock_many(&mut self, prefixes: &[Prefix]) -> Vec<Result<bool, DataplaneError>> {
        prefixes.iter().map(|prefix| self.unblock(prefix)).collect()
    }

    /// Remove the entry keyed exactly by `prefix` from `list`, even when it does not belong
    /// there (a host in a prefix list); whether it was there.
    ///
    /// # Errors
    /// When the list cannot be written.
    fn remove_entry(&mut self, list: ListId, prefix: &Prefix) -> Result<bool, DataplaneError>;

    /// The block entry keyed exactly by `prefix`, with its counters.
    ///
    /// # Errors
    /// When the list cannot be read.
    fn block_entry(&self, prefix: &Prefix) -> Result<Option<BlockEntry>, DataplaneError>;

    /// The next chunk (about `limit` entries) of a scan over every list, in
    /// [`super::SCAN_ORDER`]; done when [`ScanCursor::is_done`].
    ///
    /// # Errors
    /// When a list cannot be read.
    fn scan(
        &self,
        cursor: &mut ScanCursor,
        limit: usize,
    ) -> Result<Vec<ScannedEntry>, DataplaneError>;

    /// After a complete scan: recount the block lists from it (exactly when `quiet`: nothing
    /// but the scan's repairs edited them meanwhile), set the list-not-empty bits, and repair
    /// the flags and interface slots the program reads.
    ///
    /// # Errors
    /// When the flags or slots cannot be read or written.
    fn finish_scan(
        &mut self,
        cursor: &ScanCursor,
        quiet: bool,
    ) -> Result<ScanRepairs, DataplaneError>;

    /// Every block entry, hosts first.
    ///
    /// # Errors
    /// When a list cannot be read.
    fn block_entries(&self) -> Result<Vec<BlockListEntry>, DataplaneError>;

    /// Entries in a block list, as last counted (by edits through `self` and [`Self::recount`]).
    fn block_count(&self, list: ListId) -> u64;

    /// Count the block lists again (after edits behind the owner's back); the entries read.
    ///
    /// # Errors
    /// When a list cannot be read.
    fn recount(&mut self) -> Result<Vec<BlockListEntry>, DataplaneError>;

    /// Let `prefix` through even where a block entry covers it.
    ///
    /// # Errors
    /// When the allowlist is full, or it cannot be written.
    fn allow(&mut self, prefix: &Prefix) -> Result<(), DataplaneError>;

    /// Remove `prefix` from the allowlist; whether it was there.
    ///
    /// # Errors
    /// When the allowlist cannot be written.
    fn unallow(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError>;

    /// The allowlist entry keyed exactly by `prefix`.
    ///
    /// # Errors
    /// When the allowlist cannot be read.
    fn allow_entry(&self, prefix: &Prefix) -> Result<Option<AllowEntry>, DataplaneError>;

    /// How many entries each list holds at most.
    fn capacities(&self) -> Capacities;

    /// The counters of each attached interface.
    ///
    /// # Errors
    /// When the counters cannot be read.
    fn interface_stats(&self) -> Result<Vec<(String, Stats)>, DataplaneError>;

    /// The counters of one interface slot (0: frames from interfaces without one, and every
    /// expired hit).
    ///
    /// # Errors
    /// When the counters cannot be read.
    fn slot_stats(&self, slot: u32) -> Result<Stats, DataplaneError>;
}

// Each method calls the inherent one of the same name (inherent methods win the lookup).
impl DataPath for Dataplane {
    fn set_dry_run(&mut self, dry_run: bool) -> Result<(), DataplaneError> {
        self.set_dry_run(dry_run)
    }

    fn set_volume_accounting(&mut self, on: bool) -> Result<(), DataplaneError> {
        self.set_volume_accounting(on)
    }

    fn attachments(&self) -> Vec<(String, Attachment)> {
        self.attachments()
            .map(|(name, attachment)| (name.to_owned(), attachment))
            .collect()
    }

    fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        self.attach(interface, mode)
    }

    fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        self.detach(interface)
    }

    fn block(&mut self, prefix: &Prefix, expires_ns: u64) -> Result<(), DataplaneError> {
        self.block(prefix, expires_ns)
    }

    fn block_new(
        &mut self,
        prefixes: &[Prefix],
        expires_ns: u64,
    ) -> Vec<Result<(), DataplaneError>> {
        self.block_new(prefixes, expires_ns)
    }

    fn unblock(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError> {
        self.unblock(prefix)
    }

    fn unblock_many(&mut self, prefixes: &[Prefix]) -> Vec<Result<bool, DataplaneError>> {
        self.unblock_many(prefixes)
    }

    fn remove_entry(&mut self, list: ListId, prefix: &Prefix) -> Result<bool, DataplaneError> {
        self.remove_entry(list, prefix)
    }

    fn block_entry(&self, prefix: &Prefix) -> Result<Option<BlockEntry>, DataplaneError> {
        self.block_entry(prefix)
    }

    fn scan(
        &self,
        cursor: &mut ScanCursor,
        limit: usize,
    ) -> Result<Vec<ScannedEntry>, DataplaneError> {
        self.scan(cursor, limit)
    }

    fn finish_scan(
        &mut self,
        cursor: &ScanCursor,
        quiet: bool,
    ) -> Result<ScanRepairs, DataplaneError> {
        self.finish_scan(cursor, quiet)
    }

    fn block_entries(&self) -> Result<Vec<BlockListEntry>, DataplaneError> {
        self.block_entries()
    }

    fn block_count(&self, list: ListId) -> u64 {
        self.block_count(list)
    }

    fn recount(&mut self) -> Result<Vec<BlockListEntry>, DataplaneError> {
        self.recount()
    }

    fn allow(&mut self, prefix: &Prefix) -> Result<(), DataplaneError> {
        self.allow(prefix)
    }

    fn unallow(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError> {
        self.unallow(prefix)
    }

    fn allow_entry(&self, prefix: &Prefix) -> Result<Option<AllowEntry>, DataplaneError> {
        self.allow_entry(prefix)
    }

    fn capacities(&self) -> Capacities {
        self.capacities()
    }

    fn interface_stats(&self) -> Result<Vec<(String, Stats)>, DataplaneError> {
        self.interface_stats()
    }

    fn slot_stats(&self, slot: u32) -> Result<Stats, DataplaneError> {
        self.slot_stats(slot)
    }
}

// The owner holds a `Box<dyn DataPath + Send>`: the trait stays object-safe and the data path
// can move to the owner's thread.
const _: fn(Dataplane) -> Box<dyn DataPath + Send> = |dataplane| Box::new(dataplane);
