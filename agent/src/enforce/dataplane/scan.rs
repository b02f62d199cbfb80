//! Reading the kernel lists a chunk at a time, for the decision owner's reconcile: the host
//! hash maps with `BPF_MAP_LOOKUP_BATCH` (thousands of entries per syscall), the LPM tries key
//! by key from where the previous chunk stopped. Between chunks the owner serves commands, so
//! a million-entry list never holds it for long.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::{IterableMap as _, MapData};
use xdpguard_common::{
    AllowEntry, BlockEntry, Family, IFINDEX_LIMIT, LengthMask, map_names, prefix_lengths, summary,
};

use super::{
    Dataplane, DataplaneError, ListId, ListKind,
    batch::{MAX_KEY_SIZE, lookup, next_key, read_batch},
    lists::{nonempty_flag, prefix_of},
};
use crate::prefix::Prefix;

/// The order a scan reads the lists in: block lists first, hosts first.
pub const SCAN_ORDER: [ListId; 6] = [
    ListId {
        kind: ListKind::BlockHost,
        family: Family::Ipv4,
    },
    ListId {
        kind: ListKind::BlockHost,
        family: Family::Ipv6,
    },
    ListId {
        kind: ListKind::BlockPrefix,
        family: Family::Ipv4,
    },
    ListId {
        kind: ListKind::BlockPrefix,
        family: Family::Ipv6,
    },
    ListId {
        kind: ListKind::Allow,
        family: Family::Ipv4,
    },
    ListId {
        kind: ListKind::Allow,
        family: Family::Ipv6,
    },
];

/// One kernel entry as a scan read it: the list it is in, its key, and every field of its
/// value (an allow entry has no expiry: 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedEntry {
    pub list: ListId,
    pub prefix: Prefix,
    pub expires_ns: u64,
    pub prefix_len: u32,
    pub packets: u64,
    pub bytes: u64,
}

impl ScannedEntry {
    pub(super) const fn block(list: ListId, prefix: Prefix, entry: &BlockEntry) -> Self {
        Self {
            list,
            prefix,
            expires_ns: entry.expires_ns,
            prefix_len: entry.prefix_len,
            packets: entry.packets,
            bytes: entry.bytes,
        }
    }

    pub(super) const fn allow(list: ListId, prefix: Prefix, entry: &AllowEntry) -> Self {
        Self {
            list,
            prefix,
            expires_ns: 0,
            prefix_len: entry.prefix_len,
            packets: entry.packets,
            bytes: entry.bytes,
        }
    }
}

/// Where a scan of the kernel lists is: which list, and where in it. Start with `default()`.
#[derive(Debug, Default)]
pub struct ScanCursor {
    /// Index into [`SCAN_ORDER`].
    pub(super) list: usize,
    /// The last key read in the current list (tries and the fake resume after it).
    pub(super) last: Option<Prefix>,
    /// The hash maps' batch token.
    pub(super) token: Option<[u64; 2]>,
    /// Keys read in the current list: a trie whose resume key was deleted starts over, so
    /// this bounds the walk.
    pub(super) visited: u64,
    /// Entries read per list, by [`SCAN_ORDER`] index.
    pub(super) counts: [u64; 6],
    /// Every block entry read, for the summary: a quiet pass rebuilds it from exactly these,
    /// another counts those whose bits are not all set (written behind the daemon's back, the
    /// program could not see them).
    pub(super) blocks: Vec<(ListId, Prefix)>,
}

impl ScanCursor {
    pub const fn is_done(&self) -> bool {
        self.list >= SCAN_ORDER.len()
    }

    pub(super) fn current(&self) -> Option<ListId> {
        SCAN_ORDER.get(self.list).copied()
    }

    /// Count `read` entries of the current list; move on to the next list when `done`.
    pub(super) fn advance(&mut self, read: usize, done: bool) {
        if let Some(count) = self.counts.get_mut(self.list) {
            *count += read as u64;
        }
        if done {
            self.list += 1;
            self.last = None;
            self.token = None;
            self.visited = 0;
        }
    }

    /// Entries of `list` this scan read.
    pub fn count(&self, list: ListId) -> u64 {
        SCAN_ORDER
            .iter()
            .position(|l| *l == list)
            .map_or(0, |i| self.counts[i])
    }
}

/// What finishing a scan corrected besides the entries themselves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanRepairs {
    /// `CONFIG` held other flags than the daemon set (dry-run, accounting, list-not-empty).
    pub config: bool,
    /// Interfaces whose `IFACE_SLOT` entry pointed at another counter slot.
    pub slots: u32,
    /// `SUMMARY` words that differed from what the daemon wrote, and entries found in the
    /// kernel that the summary did not count: put back, so the program sees every entry.
    pub summary: u64,
}

/// Reconcile passes it takes to compare the whole `SUMMARY` map with the daemon's copy.
const SUMMARY_SLICES: u32 = 16;

/// Hash entries asked for per batch at least: a hash bucket never holds this many, so a batch
/// never stops short with `ENOSPC` (it would be retried larger anyway).
const MIN_HASH_BATCH: usize = 256;

impl Dataplane {
    /// Read up to about `limit` more entries (one batch of one list; an empty result does not
    /// mean the end: see [`ScanCursor::is_done`]).
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn scan(
        &self,
        cursor: &mut ScanCursor,
        limit: usize,
    ) -> Result<Vec<ScannedEntry>, DataplaneError> {
        let Some(list) = cursor.current() else {
            return Ok(Vec::new());
        };
        let limit = limit.max(1);
        let (entries, done) = match list.kind {
            ListKind::BlockHost | ListKind::BlockPrefix => self.scan_hash(list, cursor, limit)?,
            ListKind::Allow => self.scan_trie(list, cursor, limit)?,
        };
        if list.kind != ListKind::Allow {
            cursor
                .blocks
                .extend(entries.iter().map(|entry| (entry.list, entry.prefix)));
        }
        cursor.advance(entries.len(), done);
        Ok(entries)
    }

    /// A batch of a block list (all hashes): host keys are the address, prefix keys the
    /// length (native endian) and the network.
    fn scan_hash(
        &self,
        list: ListId,
        cursor: &mut ScanCursor,
        limit: usize,
    ) -> Result<(Vec<ScannedEntry>, bool), DataplaneError> {
        let (map, key_size) = match (list.kind, list.family) {
            (ListKind::BlockHost, Family::Ipv4) => (self.maps.host_v4.map(), 4),
            (ListKind::BlockHost, Family::Ipv6) => (self.maps.host_v6.map(), 16),
            (_, Family::Ipv4) => (self.maps.prefix_v4.map(), 8),
            (_, Family::Ipv6) => (self.maps.prefix_v6.map(), 20),
        };
        let (keys, values, count, done) = hash_chunk::<BlockEntry>(
            map,
            list.map_name(),
            &mut cursor.token,
            limit.max(MIN_HASH_BATCH),
        )?;
        let entries = (0..count)
            .filter_map(|i| {
                let key = &keys[i * key_size..(i + 1) * key_size];
                let prefix = decode_block_key(list, key)?;
                Some(ScannedEntry::block(list, prefix, &values[i]))
            })
            .collect();
        Ok((entries, done))
    }

    /// A chunk of an allowlist (LPM tries), resuming after the last prefix read.
    fn scan_trie(
        &self,
        list: ListId,
        cursor: &mut ScanCursor,
        limit: usize,
    ) -> Result<(Vec<ScannedEntry>, bool), DataplaneError> {
        let map: &MapData = match list.family {
            Family::Ipv4 => self.maps.allow_v4.map(),
            Family::Ipv6 => self.maps.allow_v6.map(),
        };
        let read_error = |source| DataplaneError::Read {
            map: list.map_name(),
            source,
        };
        // An LPM key: the prefix length (native endian), then the address.
        let addr_len = match list.family {
            Family::Ipv4 => 4,
            Family::Ipv6 => 16,
        };
        let mut current = cursor.last.map(|prefix| trie_key(&prefix));
        let bound = u64::from(self.capacities.of(list)) * 2 + limit as u64;
        let mut out = Vec::new();
        while out.len() < limit {
            let mut next = vec![0u8; 4 + addr_len];
            // SAFETY: both keys are the trie's key size: 4 bytes of length and the address.
            let more =
                unsafe { next_key(map, current.as_deref(), &mut next) }.map_err(read_error)?;
            if !more {
                return Ok((out, true));
            }
            cursor.visited += 1;
            if cursor.visited > bound {
                log::warn!(
                    "{list}: scan stopped after {} keys (the list kept changing under it); the rest is checked at the next reconcile",
                    cursor.visited
                );
                return Ok((out, true));
            }
            let len = u32::from_ne_bytes([next[0], next[1], next[2], next[3]]);
            let addr = match list.family {
                Family::Ipv4 => {
                    Ipv4Addr::from(<[u8; 4]>::try_from(&next[4..]).unwrap_or_default()).into()
                }
                Family::Ipv6 => {
                    Ipv6Addr::from(<[u8; 16]>::try_from(&next[4..]).unwrap_or_default()).into()
                }
            };
            let prefix = prefix_of(addr, len);
            let mut value = AllowEntry::default();
            // SAFETY: the trie's key, and its value type.
            let entry = unsafe { lookup(map, &next, &mut value) }
                .map_err(read_error)?
                .then(|| ScannedEntry::allow(list, prefix, &value));
            // Deleted between the two calls: nothing to check.
            out.extend(entry);
            cursor.last = Some(prefix);
            current = Some(next);
        }
        Ok((out, false))
    }

    /// After a complete scan: count the block lists from what it read (exactly when nothing
    /// but the scan's own repairs edited them meanwhile, `quiet`; else never below it), set
    /// the list-not-empty bits to match, and put back `CONFIG` and the interface slots if
    /// someone changed them.
    ///
    /// # Errors
    /// When `CONFIG` or `IFACE_SLOT` cannot be read or written.
    pub fn finish_scan(
        &mut self,
        cursor: &ScanCursor,
        quiet: bool,
    ) -> Result<ScanRepairs, DataplaneError> {
        let before = self.flags;
        for list in SCAN_ORDER.iter().filter(|l| l.kind != ListKind::Allow) {
            let scanned = cursor.count(*list);
            let count = self.block_counts.entry(*list).or_default();
            // Too high only costs the program a lookup; too low could hide live entries.
            *count = if quiet {
                scanned
            } else {
                (*count).max(scanned)
            };
            if *count > 0 {
                self.flags |= nonempty_flag(*list);
            } else {
                self.flags &= !nonempty_flag(*list);
            }
        }
        let in_kernel = self
            .maps
            .config
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: map_names::CONFIG,
                source,
            })?
            .flags;
        let repairs = ScanRepairs {
            config: in_kernel != before,
            slots: self.repair_slots()?,
            summary: self.repair_summary(&cursor.blocks, quiet)? + self.repair_lengths()?,
        };
        if in_kernel != self.flags {
            self.write_flags()?;
        }
        Ok(repairs)
    }

    /// Bits set in the kernel's `SUMMARY` map (read back, not the daemon's copy).
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn summary_population(&self) -> Result<u64, DataplaneError> {
        let mut bits = 0;
        self.each_summary_word(0, summary::WORDS, |_, word| {
            bits += u64::from(word.count_ones());
        })?;
        Ok(bits)
    }

    /// Words `first..first + count` of the kernel's `SUMMARY` map with their indices, read
    /// with `BPF_MAP_LOOKUP_BATCH` (on an array the batch token is the index before).
    fn each_summary_word(
        &self,
        first: u32,
        count: u32,
        visit: impl FnMut(u32, u64),
    ) -> Result<(), DataplaneError> {
        each_array_value(
            self.maps.summary.map(),
            map_names::SUMMARY,
            summary::WORDS,
            first,
            count,
            visit,
        )
    }

    /// Put back every `REGION_V4`, `REGION_V6` and `WIDE_LENGTHS` entry that is not what the
    /// daemon wrote, all of them every pass (256 KiB of array and one entry per IPv6 /32 that
    /// holds prefixes). Returns how many differed.
    fn repair_lengths(&mut self) -> Result<u64, DataplaneError> {
        let mut differing_v4 = Vec::new();
        let lengths = self.summary.lengths();
        each_array_value(
            self.maps.region_v4.map(),
            map_names::REGION_V4,
            prefix_lengths::V4_REGIONS,
            0,
            prefix_lengths::V4_REGIONS,
            |index, mask: u32| {
                if lengths.v4_region(index) != mask {
                    differing_v4.push(index);
                }
            },
        )?;
        let mut differing_v6 = Vec::new();
        let mut seen = std::collections::HashSet::new();
        each_hash_entry(
            self.maps.region_v6.map(),
            map_names::REGION_V6,
            4,
            |key, mask: LengthMask| {
                let key = u32::from_ne_bytes(key.try_into().unwrap_or_default());
                let _: bool = seen.insert(key);
                if lengths.v6_region(key) != Some(mask) {
                    differing_v6.push(key);
                }
            },
        )?;
        differing_v6.extend(lengths.v6_keys().filter(|key| !seen.contains(key)));
        let map_err = |source| DataplaneError::Map {
            map: map_names::WIDE_LENGTHS,
            source,
        };
        let wide = lengths.wide();
        let wide_differs = self.maps.wide_lengths.get(&0, 0).map_err(map_err)? != wide[0]
            || self.maps.wide_lengths.get(&1, 0).map_err(map_err)? != wide[1];
        let repaired =
            differing_v4.len() as u64 + differing_v6.len() as u64 + u64::from(wide_differs);
        let lengths = self.summary.lengths_mut();
        for index in differing_v4 {
            lengths.mark_v4(index);
        }
        for key in differing_v6 {
            lengths.mark_v6(key);
        }
        if wide_differs {
            lengths.mark_wide();
        }
        self.publish_summary()?;
        Ok(repaired)
    }
}

/// Every (key bytes, value) of the hash map `map`, read with `BPF_MAP_LOOKUP_BATCH`.
fn each_hash_entry<V: Copy + Default>(
    map: &MapData,
    name: &'static str,
    key_size: usize,
    mut visit: impl FnMut(&[u8], V),
) -> Result<(), DataplaneError> {
    let mut token = None;
    loop {
        let (keys, values, count, done) = hash_chunk::<V>(map, name, &mut token, 4096)?;
        for (i, value) in values.iter().enumerate().take(count) {
            visit(&keys[i * key_size..(i + 1) * key_size], *value);
        }
        if done {
            return Ok(());
        }
    }
}

/// One `BPF_MAP_LOOKUP_BATCH` of the hash map `map` from `token` (none: the start), of at
/// least `batch` elements: the key bytes ([`MAX_KEY_SIZE`] apart), the values, how many were
/// read and whether the map is done; `token` moves on.
fn hash_chunk<V: Copy + Default>(
    map: &MapData,
    name: &'static str,
    token: &mut Option<[u64; 2]>,
    mut batch: usize,
) -> Result<(Vec<u8>, Vec<V>, usize, bool), DataplaneError> {
    let fd = map.fd().as_fd().as_raw_fd();
    loop {
        let mut keys = vec![0u8; batch * MAX_KEY_SIZE];
        let mut values = vec![V::default(); batch];
        let mut next = [0u64; 2];
        let position = token.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
        match read_batch(
            fd,
            false,
            position,
            next.as_mut_ptr(),
            &mut keys,
            &mut values,
        ) {
            Ok((count, done)) => {
                *token = Some(next);
                return Ok((keys, values, count, done));
            }
            // One bucket holds more than the batch: ask for more at once.
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) && batch < 1 << 16 => {
                batch *= 4;
            }
            Err(source) => return Err(DataplaneError::Read { map: name, source }),
        }
    }
}

/// Entries `first..first + count` of the array map `map` (of `len` entries) with their
/// indices, read with `BPF_MAP_LOOKUP_BATCH` (on an array the batch token is the index before).
fn each_array_value<V: Copy + Default>(
    map: &MapData,
    name: &'static str,
    len: u32,
    first: u32,
    count: u32,
    mut visit: impl FnMut(u32, V),
) -> Result<(), DataplaneError> {
    const CHUNK: u32 = 1 << 15;
    let fd = map.fd().as_fd().as_raw_fd();
    let end = first.saturating_add(count).min(len);
    let mut keys = vec![0u8; CHUNK as usize * MAX_KEY_SIZE];
    let mut values = vec![V::default(); CHUNK as usize];
    let mut at = first;
    while at < end {
        let batch = (end - at).min(CHUNK) as usize;
        let mut next = [0u64; 2];
        let token = [u64::from(at.wrapping_sub(1)), 0];
        let position = if at == 0 {
            std::ptr::null()
        } else {
            token.as_ptr()
        };
        let (read, done) = read_batch(
            fd,
            false,
            position,
            next.as_mut_ptr(),
            &mut keys[..batch * MAX_KEY_SIZE],
            &mut values[..batch],
        )
        .map_err(|source| DataplaneError::Read { map: name, source })?;
        for (i, value) in values.iter().enumerate().take(read) {
            let key = keys[i * 4..i * 4 + 4].try_into().unwrap_or_default();
            visit(u32::from_ne_bytes(key), *value);
        }
        if done || read == 0 {
            return Ok(());
        }
        at += u32::try_from(read).unwrap_or(CHUNK);
    }
    Ok(())
}

impl Dataplane {
    /// Bring the summary in line with the entries the scan read (`quiet`: nothing changed
    /// meanwhile, so they are exactly the lists: rebuild; else count those it does not cover),
    /// and put back every `SUMMARY` word that is not what the daemon wrote. Returns how many
    /// uncounted entries and differing words there were.
    fn repair_summary(
        &mut self,
        blocks: &[(ListId, Prefix)],
        quiet: bool,
    ) -> Result<u64, DataplaneError> {
        let uncovered: Vec<(ListId, Prefix)> = blocks
            .iter()
            .filter(|(list, prefix)| !self.summary.covers(*list, prefix))
            .copied()
            .collect();
        let mut repaired = uncovered.len() as u64;
        if quiet {
            self.summary
                .rebuild(blocks.iter().map(|(list, prefix)| (*list, prefix)));
        } else {
            for (list, prefix) in &uncovered {
                self.summary.add(*list, prefix);
            }
        }
        // Write what changed first: the comparison below is with what should be there.
        self.publish_summary()?;
        // A slice per pass, the whole map every SUMMARY_SLICES passes: reading all 8 MiB
        // every pass would cost a reconcile of one second a tenth of a core.
        let slice = summary::WORDS / SUMMARY_SLICES;
        let first = self.summary_verified_to % summary::WORDS;
        self.summary_verified_to = first + slice;
        let mut differing = Vec::new();
        self.each_summary_word(first, slice, |index, word| {
            if self.summary.word(index) != Some(word) {
                differing.push(index);
            }
        })?;
        repaired += differing.len() as u64;
        self.summary.redirty(&differing);
        self.publish_summary()?;
        Ok(repaired)
    }

    /// Point each attached interface's `IFACE_SLOT` entry back at its counter slot.
    fn repair_slots(&mut self) -> Result<u32, DataplaneError> {
        let map_err = |source| DataplaneError::Map {
            map: map_names::IFACE_SLOT,
            source,
        };
        let mut repaired = 0;
        let wanted: Vec<(u32, u32)> = self
            .attachments
            .values()
            .filter(|a| a.ifindex != 0 && a.ifindex < IFINDEX_LIMIT && a.slot != 0)
            .map(|a| (a.ifindex, a.slot))
            .collect();
        for (ifindex, slot) in wanted {
            if self.maps.iface_slot.get(&ifindex, 0).map_err(map_err)? != slot {
                self.maps
                    .iface_slot
                    .set(ifindex, slot, 0)
                    .map_err(map_err)?;
                repaired += 1;
            }
        }
        Ok(repaired)
    }
}

/// The prefix a block list's key stands for. A prefix key with host bits set (written behind
/// our back: the program, which masks, never finds it) is left out, with a warning.
fn decode_block_key(list: ListId, key: &[u8]) -> Option<Prefix> {
    let addr_bytes = match list.kind {
        ListKind::BlockHost => key,
        _ => &key[4..],
    };
    let addr: std::net::IpAddr = match list.family {
        Family::Ipv4 => Ipv4Addr::from(<[u8; 4]>::try_from(addr_bytes).ok()?).into(),
        Family::Ipv6 => Ipv6Addr::from(<[u8; 16]>::try_from(addr_bytes).ok()?).into(),
    };
    if list.kind == ListKind::BlockHost {
        return Some(Prefix::host(addr));
    }
    let len = u32::from_ne_bytes(key[..4].try_into().ok()?);
    let prefix = prefix_of(addr, len);
    if prefix.addr() != addr || u32::from(prefix.prefix_len()) != len {
        log::warn!("{list}: key {addr}/{len} is not a network; the program never matches it");
        return None;
    }
    Some(prefix)
}

/// The LPM trie key of `prefix`: its length (native endian), then its address.
fn trie_key(prefix: &Prefix) -> Vec<u8> {
    let mut key = u32::from(prefix.prefix_len()).to_ne_bytes().to_vec();
    match prefix.addr() {
        std::net::IpAddr::V4(addr) => key.extend_from_slice(&addr.octets()),
        std::net::IpAddr::V6(addr) => key.extend_from_slice(&addr.octets()),
    }
    key
}
