//! The allow and block lists: adding, removing and reading entries, and the `CONFIG` bits
//! that tell the program which block lists it can skip.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{IterableMap as _, MapError, lpm_trie::Key};
use xdpguard_common::{
    AllowEntry, BlockEntry, Family, PrefixKeyV4, PrefixKeyV6, config_flags, map_names,
};

use super::{
    BlockListEntry, Capacities, Dataplane, DataplaneError, ListId, ListKind,
    batch::{delete_batch, update_batch, update_batch_parallel},
    family_of,
};
use crate::prefix::Prefix;

/// `bpf_map_update_elem` flags.
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

/// The `CONFIG` bit saying `list` has entries (block lists only).
pub(super) const fn nonempty_flag(list: ListId) -> u64 {
    match (list.kind, list.family) {
        (ListKind::BlockHost, Family::Ipv4) => config_flags::HOST_V4_NONEMPTY,
        (ListKind::BlockHost, Family::Ipv6) => config_flags::HOST_V6_NONEMPTY,
        (ListKind::BlockPrefix, Family::Ipv4) => config_flags::PREFIX_V4_NONEMPTY,
        (ListKind::BlockPrefix, Family::Ipv6) => config_flags::PREFIX_V6_NONEMPTY,
        (ListKind::Allow, _) => 0,
    }
}

/// What a lookup by exact key found.
fn found<V>(result: Result<V, MapError>, map: &'static str) -> Result<Option<V>, DataplaneError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(DataplaneError::Map { map, source }),
    }
}

/// Whether a delete removed something.
fn removed(result: Result<(), MapError>, map: &'static str) -> Result<bool, DataplaneError> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(false),
        Err(source) => Err(DataplaneError::Map { map, source }),
    }
}

pub(super) fn v4(prefix: &Prefix) -> [u8; 4] {
    match prefix.addr() {
        IpAddr::V4(addr) => addr.octets(),
        IpAddr::V6(_) => unreachable!("IPv4 list given an IPv6 prefix"),
    }
}

pub(super) fn v6(prefix: &Prefix) -> [u8; 16] {
    match prefix.addr() {
        IpAddr::V6(addr) => addr.octets(),
        IpAddr::V4(_) => unreachable!("IPv6 list given an IPv4 prefix"),
    }
}

/// The `BLOCK_PREFIX_V4` key of `prefix` (already a network: host bits zero).
pub(super) fn prefix_key_v4(prefix: &Prefix) -> PrefixKeyV4 {
    PrefixKeyV4 {
        prefix_len: u32::from(prefix.prefix_len()),
        addr: v4(prefix),
    }
}

/// The `BLOCK_PREFIX_V6` key of `prefix`.
pub(super) fn prefix_key_v6(prefix: &Prefix) -> PrefixKeyV6 {
    PrefixKeyV6 {
        prefix_len: u32::from(prefix.prefix_len()),
        addr: v6(prefix),
    }
}

pub(super) fn prefix_of(addr: IpAddr, len: u32) -> Prefix {
    // Keys come from our own maps, so the length always fits.
    Prefix::new(addr, u8::try_from(len).unwrap_or(u8::MAX)).unwrap_or_else(|_| Prefix::host(addr))
}

impl Dataplane {
    pub const fn capacities(&self) -> Capacities {
        self.capacities
    }

    /// Entries in a block list, as this process has counted them (recounted from the kernel
    /// at adoption and at every [`Self::recount`]).
    pub fn block_count(&self, list: ListId) -> u64 {
        self.block_counts.get(&list).copied().unwrap_or(0)
    }

    /// Count the entries of the block lists again and set the list-not-empty bits to match
    /// (after someone else edited the maps). Returns the entries it read.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn recount(&mut self) -> Result<Vec<BlockListEntry>, DataplaneError> {
        let entries = self.block_entries()?;
        let mut counts: BTreeMap<ListId, u64> = BTreeMap::new();
        for entry in &entries {
            *counts
                .entry(ListId::block_list_of(&entry.prefix))
                .or_default() += 1;
        }
        for list in ListId::ALL {
            let flag = nonempty_flag(list);
            if counts.get(&list).copied().unwrap_or(0) > 0 {
                self.flags |= flag;
            } else {
                self.flags &= !flag;
            }
        }
        self.block_counts = counts;
        self.summary.rebuild(
            entries
                .iter()
                .map(|entry| (ListId::block_list_of(&entry.prefix), &entry.prefix)),
        );
        self.publish_summary()?;
        self.write_flags()?;
        Ok(entries)
    }

    /// Block `prefix` until `expires_ns` on the `CLOCK_MONOTONIC` clock (0 = never). An
    /// existing entry keeps its counters and gets the new expiry.
    ///
    /// # Errors
    /// When the list is full, or the map cannot be written.
    pub fn block(&mut self, prefix: &Prefix, expires_ns: u64) -> Result<(), DataplaneError> {
        let list = ListId::block_list_of(prefix);
        // Set before the first entry goes in, so the program never skips a live entry.
        if self.flags & nonempty_flag(list) == 0 {
            self.flags |= nonempty_flag(list);
            self.write_flags()?;
        }
        // Its summary bits go up before the entry goes in, for the same reason.
        self.summary.add(list, prefix);
        if let Err(err) = self.publish_summary() {
            self.summary.remove(list, prefix);
            return Err(err);
        }
        let fresh = BlockEntry {
            expires_ns,
            prefix_len: u32::from(prefix.prefix_len()),
            ..BlockEntry::default()
        };
        // The common case, a new entry, costs one syscall; an existing one keeps its counters.
        match self.write_block(prefix, fresh, BPF_NOEXIST) {
            Ok(()) => {
                *self.block_counts.entry(list).or_default() += 1;
                Ok(())
            }
            Err(MapError::SyscallError(err))
                if err.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                // Counted when it went in.
                self.summary.remove(list, prefix);
                let existing = self.block_entry(prefix)?.unwrap_or_default();
                let entry = BlockEntry {
                    packets: existing.packets,
                    bytes: existing.bytes,
                    ..fresh
                };
                let result = self.write_block(prefix, entry, BPF_ANY);
                self.inserted(result, list, prefix)
            }
            Err(err) => {
                self.summary.remove(list, prefix);
                self.publish_summary_or_log();
                self.inserted(Err(err), list, prefix)
            }
        }
    }

    /// Write the summary words that changed, and the wide-prefix flags, to the kernel.
    ///
    /// # Errors
    /// When `SUMMARY` or `CONFIG` cannot be written; the words stay to be written next time.
    pub(super) fn publish_summary(&mut self) -> Result<(), DataplaneError> {
        let (words, values) = self.summary.take_dirty();
        if !words.is_empty() {
            let written = if words.len() == 1 {
                self.maps
                    .summary
                    .set(words[0], values[0], 0)
                    .map_err(|source| DataplaneError::Map {
                        map: map_names::SUMMARY,
                        source,
                    })
            } else {
                update_batch(self.maps.summary.map(), &words, &values).map_err(|(_, error)| {
                    DataplaneError::Write {
                        map: map_names::SUMMARY,
                        source: error,
                    }
                })
            };
            if let Err(err) = written {
                self.summary.redirty(&words);
                return Err(err);
            }
        }
        self.publish_lengths()?;
        let wide = self.summary.wide_flags();
        let all_wide = config_flags::PREFIX_V4_WIDE | config_flags::PREFIX_V6_WIDE;
        if self.flags & all_wide != wide {
            self.flags = (self.flags & !all_wide) | wide;
            self.write_flags()?;
        }
        Ok(())
    }

    /// Write the prefix lengths that changed (`REGION_V4`, `REGION_V6`, `WIDE_LENGTHS`).
    ///
    /// # Errors
    /// When a map cannot be written; what was not written stays to be written next time.
    fn publish_lengths(&mut self) -> Result<(), DataplaneError> {
        let writes = self.summary.take_dirty_lengths();
        if writes.is_empty() {
            return Ok(());
        }
        let result = self.write_lengths(&writes);
        if result.is_err() {
            self.summary.redirty_lengths(&writes);
        }
        result
    }

    fn write_lengths(
        &mut self,
        writes: &super::lengths::LengthWrites,
    ) -> Result<(), DataplaneError> {
        let map_err = |map| move |source| DataplaneError::Map { map, source };
        let write_err =
            |map| move |(_, source): (usize, std::io::Error)| DataplaneError::Write { map, source };
        match writes.v4.as_slice() {
            [] => {}
            [(index, mask)] => self
                .maps
                .region_v4
                .set(*index, *mask, 0)
                .map_err(map_err(map_names::REGION_V4))?,
            many => {
                let (keys, values): (Vec<u32>, Vec<u32>) = many.iter().copied().unzip();
                update_batch(self.maps.region_v4.map(), &keys, &values)
                    .map_err(write_err(map_names::REGION_V4))?;
            }
        }
        if !writes.v6_set.is_empty() {
            let (keys, values): (Vec<u32>, Vec<_>) = writes.v6_set.iter().copied().unzip();
            if update_batch(self.maps.region_v6.map(), &keys, &values).is_err() {
                // One by one, so the error names what failed (a full map is not expected: it
                // has a region per prefix entry).
                for (key, mask) in &writes.v6_set {
                    self.maps
                        .region_v6
                        .insert(key, mask, BPF_ANY)
                        .map_err(map_err(map_names::REGION_V6))?;
                }
            }
        }
        for key in &writes.v6_delete {
            let _: bool = removed(self.maps.region_v6.remove(key), map_names::REGION_V6)?;
        }
        if let Some(wide) = writes.wide {
            for (index, mask) in wide.into_iter().enumerate() {
                self.maps
                    .wide_lengths
                    .set(u32::try_from(index).unwrap_or(0), mask, 0)
                    .map_err(map_err(map_names::WIDE_LENGTHS))?;
            }
        }
        Ok(())
    }

    /// [`Self::publish_summary`] after removals: a bit that fails to come down costs lookups,
    /// not verdicts, and goes with the next write.
    fn publish_summary_or_log(&mut self) {
        if let Err(err) = self.publish_summary() {
            log::warn!("summary bitmaps: {err}");
        }
    }

    /// Block many prefixes that are not in the lists yet (the caller knows: an entry that is
    /// there anyway has its counters reset), with one expiry. Host entries go in with
    /// `BPF_MAP_UPDATE_BATCH`, one syscall for the lot; shorter prefixes, and anything the
    /// batch could not take (a full list), take the one-by-one path of [`Self::block`].
    /// Results are in the order of `prefixes`.
    pub fn block_new(
        &mut self,
        prefixes: &[Prefix],
        expires_ns: u64,
    ) -> Vec<Result<(), DataplaneError>> {
        let mut done = vec![false; prefixes.len()];
        let mut results: Vec<Result<(), DataplaneError>> = Vec::with_capacity(prefixes.len());
        for family in Family::ALL {
            let list = ListId {
                kind: ListKind::BlockHost,
                family,
            };
            let picked: Vec<usize> = (0..prefixes.len())
                .filter(|&i| prefixes[i].is_host() && family_of(&prefixes[i]) == family)
                .collect();
            if picked.is_empty() {
                continue;
            }
            // Set before the first entry goes in (see `block`).
            if self.flags & nonempty_flag(list) == 0 {
                self.flags |= nonempty_flag(list);
                if self.write_flags().is_err() {
                    continue;
                }
            }
            for &i in &picked {
                self.summary.add(list, &prefixes[i]);
            }
            if self.publish_summary().is_err() {
                // One by one below, each with its own summary write.
                for &i in &picked {
                    self.summary.remove(list, &prefixes[i]);
                }
                continue;
            }
            let values = vec![
                BlockEntry {
                    expires_ns,
                    prefix_len: u32::from(prefixes[picked[0]].prefix_len()),
                    ..BlockEntry::default()
                };
                picked.len()
            ];
            let parts = match family {
                Family::Ipv4 => {
                    let keys: Vec<[u8; 4]> = picked.iter().map(|&i| v4(&prefixes[i])).collect();
                    update_batch_parallel(self.maps.host_v4.map(), &keys, &values)
                }
                Family::Ipv6 => {
                    let keys: Vec<[u8; 16]> = picked.iter().map(|&i| v6(&prefixes[i])).collect();
                    update_batch_parallel(self.maps.host_v6.map(), &keys, &values)
                }
            };
            let mut added = 0;
            for (start, went_in, error) in parts {
                if let Some(error) = error
                    && went_in == 0
                {
                    log::debug!("batch insert into {list}: {error}; one by one instead");
                }
                for &i in &picked[start..start + went_in] {
                    done[i] = true;
                }
                added += went_in;
            }
            // The rest take the one-by-one path, which counts them again.
            for &i in picked.iter().filter(|&&i| !done[i]) {
                self.summary.remove(list, &prefixes[i]);
            }
            *self.block_counts.entry(list).or_default() += added as u64;
        }
        for (i, prefix) in prefixes.iter().enumerate() {
            results.push(if done[i] {
                Ok(())
            } else {
                self.block(prefix, expires_ns)
            });
        }
        results
    }

    fn write_block(
        &mut self,
        prefix: &Prefix,
        entry: BlockEntry,
        flags: u64,
    ) -> Result<(), MapError> {
        match (ListId::block_list_of(prefix).kind, prefix.is_ipv4()) {
            (ListKind::BlockHost, true) => self.maps.host_v4.insert(v4(prefix), entry, flags),
            (ListKind::BlockHost, false) => self.maps.host_v6.insert(v6(prefix), entry, flags),
            (_, true) => self
                .maps
                .prefix_v4
                .insert(prefix_key_v4(prefix), entry, flags),
            (_, false) => self
                .maps
                .prefix_v6
                .insert(prefix_key_v6(prefix), entry, flags),
        }
    }

    /// Turn a failed insert into [`DataplaneError::ListFull`] where that is what happened.
    fn inserted(
        &self,
        result: Result<(), MapError>,
        list: ListId,
        prefix: &Prefix,
    ) -> Result<(), DataplaneError> {
        match result {
            Ok(()) => Ok(()),
            // A full hash map says E2BIG, a full LPM trie ENOSPC.
            Err(MapError::SyscallError(err))
                if matches!(
                    err.io_error.raw_os_error(),
                    Some(libc::E2BIG | libc::ENOSPC)
                ) =>
            {
                Err(DataplaneError::ListFull {
                    list,
                    capacity: self.capacities.of(list),
                    prefix: *prefix,
                })
            }
            Err(source) => Err(DataplaneError::Map {
                map: list.map_name(),
                source,
            }),
        }
    }

    /// Remove `prefix` from its block list. Returns whether it was there.
    ///
    /// # Errors
    /// When the map cannot be written.
    pub fn unblock(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError> {
        self.remove_entry(ListId::block_list_of(prefix), prefix)
    }

    /// Remove the entry keyed exactly by `prefix` from `list`, whichever list it belongs in
    /// (reconcile removes a host entry someone put in a prefix trie). Returns whether it was
    /// there.
    ///
    /// # Errors
    /// When the map cannot be written.
    pub fn remove_entry(&mut self, list: ListId, prefix: &Prefix) -> Result<bool, DataplaneError> {
        let result = match (list.kind, list.family) {
            (ListKind::BlockHost, Family::Ipv4) => self.maps.host_v4.remove(&v4(prefix)),
            (ListKind::BlockHost, Family::Ipv6) => self.maps.host_v6.remove(&v6(prefix)),
            (ListKind::BlockPrefix, Family::Ipv4) => {
                self.maps.prefix_v4.remove(&prefix_key_v4(prefix))
            }
            (ListKind::BlockPrefix, Family::Ipv6) => {
                self.maps.prefix_v6.remove(&prefix_key_v6(prefix))
            }
            (ListKind::Allow, _) => return self.unallow(prefix),
        };
        let was_there = removed(result, list.map_name())?;
        if was_there {
            self.summary.remove(list, prefix);
            self.publish_summary_or_log();
            self.removed_from(list, 1)?;
        }
        Ok(was_there)
    }

    /// `n` entries left `list`: count them, and clear its list-not-empty bit after the last.
    fn removed_from(&mut self, list: ListId, n: u64) -> Result<(), DataplaneError> {
        let count = self.block_counts.entry(list).or_default();
        *count = count.saturating_sub(n);
        if *count == 0 && self.flags & nonempty_flag(list) != 0 {
            self.flags &= !nonempty_flag(list);
            self.write_flags()?;
        }
        Ok(())
    }

    /// Remove many prefixes from their block lists; for each, whether it was there. Host
    /// entries go with `BPF_MAP_DELETE_BATCH` (one syscall for the lot), the rest one by one.
    pub fn unblock_many(&mut self, prefixes: &[Prefix]) -> Vec<Result<bool, DataplaneError>> {
        let mut results: Vec<Option<Result<bool, DataplaneError>>> =
            (0..prefixes.len()).map(|_| None).collect();
        for family in Family::ALL {
            let list = ListId {
                kind: ListKind::BlockHost,
                family,
            };
            let picked: Vec<usize> = (0..prefixes.len())
                .filter(|&i| prefixes[i].is_host() && family_of(&prefixes[i]) == family)
                .collect();
            let mut start = 0;
            let mut deleted = 0;
            // The batch stops at the first key that is not there: that one answers `false`,
            // and the batch goes on after it.
            while start < picked.len() {
                let rest = &picked[start..];
                let outcome = match family {
                    Family::Ipv4 => {
                        let keys: Vec<[u8; 4]> = rest.iter().map(|&i| v4(&prefixes[i])).collect();
                        delete_batch(self.maps.host_v4.map(), &keys)
                    }
                    Family::Ipv6 => {
                        let keys: Vec<[u8; 16]> = rest.iter().map(|&i| v6(&prefixes[i])).collect();
                        delete_batch(self.maps.host_v6.map(), &keys)
                    }
                };
                let (done, stopped) = match outcome {
                    Ok(()) => (rest.len(), None),
                    Err((done, error)) => (done, Some(error)),
                };
                for &i in &rest[..done] {
                    results[i] = Some(Ok(true));
                    self.summary.remove(list, &prefixes[i]);
                }
                deleted += done as u64;
                start += done;
                match stopped {
                    None => break,
                    Some(error) if error.raw_os_error() == Some(libc::ENOENT) => {
                        results[picked[start]] = Some(Ok(false));
                        start += 1;
                    }
                    // Anything else: the rest one by one, which reports per prefix.
                    Some(_) => break,
                }
            }
            self.publish_summary_or_log();
            if let Err(err) = self.removed_from(list, deleted) {
                log::warn!("{list}: {err}");
            }
        }
        prefixes
            .iter()
            .zip(results)
            .map(|(prefix, done)| done.unwrap_or_else(|| self.unblock(prefix)))
            .collect()
    }

    /// The block entry keyed exactly by `prefix`, with its counters.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn block_entry(&self, prefix: &Prefix) -> Result<Option<BlockEntry>, DataplaneError> {
        let list = ListId::block_list_of(prefix);
        let key_len = u32::from(prefix.prefix_len());
        let name = list.map_name();
        let entry = match (list.kind, list.family) {
            (ListKind::BlockHost, Family::Ipv4) => {
                found(self.maps.host_v4.get(&v4(prefix), 0), name)?
            }
            (ListKind::BlockHost, Family::Ipv6) => {
                found(self.maps.host_v6.get(&v6(prefix), 0), name)?
            }
            (_, Family::Ipv4) => found(self.maps.prefix_v4.get(&prefix_key_v4(prefix), 0), name)?,
            (_, Family::Ipv6) => found(self.maps.prefix_v6.get(&prefix_key_v6(prefix), 0), name)?,
        };
        // Exact keys everywhere, but an entry written behind our back may say another length.
        Ok(entry.filter(|entry| entry.prefix_len == key_len))
    }

    /// Every block entry, hosts first.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn block_entries(&self) -> Result<Vec<BlockListEntry>, DataplaneError> {
        let mut out = Vec::new();
        let map_err = |map| move |source| DataplaneError::Map { map, source };
        for item in self.maps.host_v4.iter() {
            let (addr, entry) = item.map_err(map_err(map_names::BLOCK_HOST_V4))?;
            out.push(BlockListEntry {
                prefix: Prefix::host(Ipv4Addr::from(addr).into()),
                entry,
            });
        }
        for item in self.maps.host_v6.iter() {
            let (addr, entry) = item.map_err(map_err(map_names::BLOCK_HOST_V6))?;
            out.push(BlockListEntry {
                prefix: Prefix::host(Ipv6Addr::from(addr).into()),
                entry,
            });
        }
        for item in self.maps.prefix_v4.iter() {
            let (key, entry) = item.map_err(map_err(map_names::BLOCK_PREFIX_V4))?;
            out.push(BlockListEntry {
                prefix: prefix_of(Ipv4Addr::from(key.addr).into(), key.prefix_len),
                entry,
            });
        }
        for item in self.maps.prefix_v6.iter() {
            let (key, entry) = item.map_err(map_err(map_names::BLOCK_PREFIX_V6))?;
            out.push(BlockListEntry {
                prefix: prefix_of(Ipv6Addr::from(key.addr).into(), key.prefix_len),
                entry,
            });
        }
        Ok(out)
    }

    /// Let `prefix` through even where a block entry covers it.
    ///
    /// # Errors
    /// When the list is full, or the map cannot be written.
    pub fn allow(&mut self, prefix: &Prefix) -> Result<(), DataplaneError> {
        let list = ListId::allow_list_of(prefix);
        let key_len = u32::from(prefix.prefix_len());
        let existing = self.allow_entry(prefix)?.unwrap_or_default();
        let entry = AllowEntry {
            prefix_len: key_len,
            ..existing
        };
        let result = match list.family {
            Family::Ipv4 => self
                .maps
                .allow_v4
                .insert(&Key::new(key_len, v4(prefix)), entry, 0),
            Family::Ipv6 => self
                .maps
                .allow_v6
                .insert(&Key::new(key_len, v6(prefix)), entry, 0),
        };
        self.inserted(result, list, prefix)
    }

    /// Remove `prefix` from the allowlist. Returns whether it was there.
    ///
    /// # Errors
    /// When the map cannot be written.
    pub fn unallow(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError> {
        let list = ListId::allow_list_of(prefix);
        let key_len = u32::from(prefix.prefix_len());
        let result = match list.family {
            Family::Ipv4 => self.maps.allow_v4.remove(&Key::new(key_len, v4(prefix))),
            Family::Ipv6 => self.maps.allow_v6.remove(&Key::new(key_len, v6(prefix))),
        };
        removed(result, list.map_name())
    }

    /// The allowlist entry keyed exactly by `prefix`.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn allow_entry(&self, prefix: &Prefix) -> Result<Option<AllowEntry>, DataplaneError> {
        let list = ListId::allow_list_of(prefix);
        let key_len = u32::from(prefix.prefix_len());
        let entry = match list.family {
            Family::Ipv4 => found(
                self.maps.allow_v4.get(&Key::new(key_len, v4(prefix)), 0),
                list.map_name(),
            )?,
            Family::Ipv6 => found(
                self.maps.allow_v6.get(&Key::new(key_len, v6(prefix)), 0),
                list.map_name(),
            )?,
        };
        Ok(entry.filter(|entry| entry.prefix_len == key_len))
    }
}
