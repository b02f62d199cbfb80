//! The summary bitmaps in front of the block lists (layout in `xdpguard_common::summary`):
//! counts of entries per slot, a copy of the kernel's words, and the order of writes that
//! keeps every packet's answer right while they change (a bit goes up before its entry goes
//! in, and comes down only after the slot's last entry is gone).
use std::{collections::HashMap, net::IpAddr};

use foldhash::fast::RandomState;

use xdpguard_common::{Family, config_flags, summary};

use super::{
    ListId, ListKind,
    lengths::{LengthWrites, PrefixLengths},
};
use crate::prefix::Prefix;

/// One of the summary's bit planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Plane {
    V4Host,
    V4Prefix,
    V6Host,
    V6Prefix,
}

const PLANES: [Plane; 4] = [
    Plane::V4Host,
    Plane::V4Prefix,
    Plane::V6Host,
    Plane::V6Prefix,
];

impl Plane {
    const fn index(self) -> usize {
        self as usize
    }

    /// The word of `SUMMARY` and the bit in it that stand for `slot`.
    const fn position(self, slot: u32) -> (u32, u64) {
        let (word, shift) = match self {
            Self::V4Host => summary::v4_position(slot),
            Self::V4Prefix => {
                let (word, shift) = summary::v4_position(slot);
                (word, shift + 1)
            }
            Self::V6Host => summary::v6_position(summary::V6_HOST_BASE, slot),
            Self::V6Prefix => summary::v6_position(summary::V6_PREFIX_BASE, slot),
        };
        (word, 1 << shift)
    }
}

/// The slots of one entry, without an allocation per entry (a million-entry import counts
/// each).
enum Slots {
    One(Option<u32>),
    Range(std::ops::Range<u32>),
    /// IPv6 /32s (their first words), each hashed to its slot.
    V6Tops(std::ops::RangeInclusive<u32>),
}

impl Iterator for Slots {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        match self {
            Self::One(slot) => slot.take(),
            Self::Range(range) => range.next(),
            Self::V6Tops(tops) => tops.next().map(summary::v6_prefix_slot),
        }
    }
}

/// Where an entry shows in the summary.
enum Footprint {
    /// These slots of this plane.
    Slots(Plane, Slots),
    /// Too wide for slots: the family's `PREFIX_V*_WIDE` flag instead.
    Wide(Family),
}

/// The slots an entry of `list` keyed by `prefix` covers.
fn footprint(list: ListId, prefix: &Prefix) -> Footprint {
    let len = prefix.prefix_len();
    match (list.kind, prefix.addr()) {
        (ListKind::BlockHost, IpAddr::V4(addr)) => {
            Footprint::Slots(Plane::V4Host, Slots::One(Some(u32::from(addr) >> 8)))
        }
        (ListKind::BlockHost, IpAddr::V6(addr)) => Footprint::Slots(
            Plane::V6Host,
            Slots::One(Some(summary::v6_host_slot(words(addr)))),
        ),
        (_, IpAddr::V4(_)) if len < summary::NARROWEST_WIDE_V4 => Footprint::Wide(Family::Ipv4),
        (_, IpAddr::V6(_)) if len < summary::NARROWEST_WIDE_V6 => Footprint::Wide(Family::Ipv6),
        (_, IpAddr::V4(addr)) => {
            let net24 = u32::from(addr) >> 8;
            let slots = if len >= 24 {
                Slots::One(Some(net24))
            } else {
                let span = 1u32 << (24 - len);
                let first = net24 & !(span - 1);
                Slots::Range(first..first + span)
            };
            Footprint::Slots(Plane::V4Prefix, slots)
        }
        (_, IpAddr::V6(addr)) => {
            let top = words(addr)[0];
            let slots = if len >= 32 {
                Slots::One(Some(summary::v6_prefix_slot(top)))
            } else {
                let span = 1u32 << (32 - len);
                let first = top & !(span - 1);
                Slots::V6Tops(first..=first + (span - 1))
            };
            Footprint::Slots(Plane::V6Prefix, slots)
        }
    }
}

fn words(addr: std::net::Ipv6Addr) -> [u32; 4] {
    let o = addr.octets();
    std::array::from_fn(|i| {
        u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// The summary as userspace keeps it.
pub(super) struct Summary {
    /// What the kernel's words should be; written back by [`Self::take_dirty`]'s caller.
    words: Vec<u64>,
    /// Entries per slot, per plane (only slots with entries).
    counts: [HashMap<u32, u32, RandomState>; 4],
    /// Wide prefixes listed, per family.
    wide: [u64; 2],
    /// Words changed since the last write-back, each once.
    dirty: Vec<u32>,
    dirty_mark: Vec<bool>,
    /// The prefix lengths per region, kept with the bits (same entries, same write order).
    lengths: PrefixLengths,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            words: vec![0; summary::WORDS as usize],
            counts: Default::default(),
            wide: [0; 2],
            dirty: Vec::new(),
            dirty_mark: vec![false; summary::WORDS as usize],
            lengths: PrefixLengths::default(),
        }
    }
}

impl Summary {
    /// Count an entry going into `list`. Its words are dirty until written back, even when
    /// their bits were already up (someone may have cleared them in the kernel): write them
    /// (and the flags) before the entry goes into the kernel.
    pub(super) fn add(&mut self, list: ListId, prefix: &Prefix) {
        if list.kind == ListKind::BlockPrefix {
            self.lengths.add(prefix);
        }
        match footprint(list, prefix) {
            Footprint::Wide(family) => self.wide[family as usize] += 1,
            Footprint::Slots(plane, slots) => {
                for slot in slots {
                    *self.counts[plane.index()].entry(slot).or_default() += 1;
                    self.set(plane, slot, true);
                    self.mark(plane.position(slot).0);
                }
            }
        }
    }

    /// Count an entry gone from `list` (after it left the kernel). Bits it clears are dirty.
    pub(super) fn remove(&mut self, list: ListId, prefix: &Prefix) {
        if list.kind == ListKind::BlockPrefix {
            self.lengths.remove(prefix);
        }
        match footprint(list, prefix) {
            Footprint::Wide(family) => {
                let wide = &mut self.wide[family as usize];
                *wide = wide.saturating_sub(1);
            }
            Footprint::Slots(plane, slots) => {
                for slot in slots {
                    let counts = &mut self.counts[plane.index()];
                    let Some(count) = counts.get_mut(&slot) else {
                        continue;
                    };
                    *count -= 1;
                    if *count == 0 {
                        let _: Option<u32> = counts.remove(&slot);
                        self.set(plane, slot, false);
                    }
                }
            }
        }
    }

    /// Whether every bit an entry of `list` keyed by `prefix` needs is set (reconcile checks
    /// entries it finds in the kernel).
    pub(super) fn covers(&self, list: ListId, prefix: &Prefix) -> bool {
        if list.kind == ListKind::BlockPrefix && !self.lengths.covers(prefix) {
            return false;
        }
        match footprint(list, prefix) {
            Footprint::Wide(family) => self.wide[family as usize] > 0,
            Footprint::Slots(plane, mut slots) => slots.all(|slot| {
                let (word, bit) = plane.position(slot);
                self.words[word as usize] & bit != 0
            }),
        }
    }

    /// What word `index` should hold (`None` past the end).
    pub(super) fn word(&self, index: u32) -> Option<u64> {
        self.words.get(index as usize).copied()
    }

    /// Start again from exactly these entries; every word that changes is dirty. Touches
    /// only the words that had or get bits, not the whole 8 MiB.
    pub(super) fn rebuild<'a>(&mut self, entries: impl IntoIterator<Item = (ListId, &'a Prefix)>) {
        let mut counts: [HashMap<u32, u32, RandomState>; 4] = Default::default();
        let mut wide = [0u64; 2];
        let mut prefixes: Vec<&Prefix> = Vec::new();
        for (list, prefix) in entries {
            if list.kind == ListKind::BlockPrefix {
                prefixes.push(prefix);
            }
            match footprint(list, prefix) {
                Footprint::Wide(family) => wide[family as usize] += 1,
                Footprint::Slots(plane, slots) => {
                    for slot in slots {
                        *counts[plane.index()].entry(slot).or_default() += 1;
                    }
                }
            }
        }
        let mut words: HashMap<u32, u64, RandomState> = HashMap::default();
        for plane in PLANES {
            for slot in counts[plane.index()].keys() {
                let (word, bit) = plane.position(*slot);
                *words.entry(word).or_default() |= bit;
            }
        }
        let mut touched: Vec<u32> = words.keys().copied().collect();
        for plane in PLANES {
            touched.extend(
                self.counts[plane.index()]
                    .keys()
                    .map(|slot| plane.position(*slot).0),
            );
        }
        for word in touched {
            let new = words.get(&word).copied().unwrap_or(0);
            if self.words[word as usize] != new {
                self.words[word as usize] = new;
                self.mark(word);
            }
        }
        self.counts = counts;
        self.wide = wide;
        self.lengths.rebuild(prefixes);
    }

    /// The `PREFIX_V*_WIDE` flags the lists need.
    pub(super) const fn wide_flags(&self) -> u64 {
        let mut flags = 0;
        if self.wide[0] > 0 {
            flags |= config_flags::PREFIX_V4_WIDE;
        }
        if self.wide[1] > 0 {
            flags |= config_flags::PREFIX_V6_WIDE;
        }
        flags
    }

    /// The words to write back, with their values; forgets them.
    pub(super) fn take_dirty(&mut self) -> (Vec<u32>, Vec<u64>) {
        let indices = std::mem::take(&mut self.dirty);
        let values = indices
            .iter()
            .map(|&word| {
                self.dirty_mark[word as usize] = false;
                self.words[word as usize]
            })
            .collect();
        (indices, values)
    }

    /// Mark words to write again (a write-back that failed).
    pub(super) fn redirty(&mut self, indices: &[u32]) {
        for &word in indices {
            self.mark(word);
        }
    }

    /// Every word, to write them all (a fresh map, or one whose contents are unknown).
    pub(super) fn mark_all(&mut self) {
        for word in 0..summary::WORDS {
            self.mark(word);
        }
        self.lengths.mark_all();
    }

    /// The prefix lengths to write back; forgets them.
    pub(super) fn take_dirty_lengths(&mut self) -> LengthWrites {
        self.lengths.take_dirty()
    }

    /// Mark again what a failed write-back of lengths held.
    pub(super) fn redirty_lengths(&mut self, writes: &LengthWrites) {
        self.lengths.redirty(writes);
    }

    pub(super) const fn lengths(&self) -> &PrefixLengths {
        &self.lengths
    }

    pub(super) const fn lengths_mut(&mut self) -> &mut PrefixLengths {
        &mut self.lengths
    }

    fn set(&mut self, plane: Plane, slot: u32, on: bool) {
        let (word, bit) = plane.position(slot);
        let value = &mut self.words[word as usize];
        let new = if on { *value | bit } else { *value & !bit };
        if new != *value {
            *value = new;
            self.mark(word);
        }
    }

    fn mark(&mut self, word: u32) {
        if !self.dirty_mark[word as usize] {
            self.dirty_mark[word as usize] = true;
            self.dirty.push(word);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(kind: ListKind, family: Family) -> ListId {
        ListId { kind, family }
    }

    fn p(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    fn bits(summary: &Summary) -> usize {
        summary.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    const HOST4: ListId = ListId {
        kind: ListKind::BlockHost,
        family: Family::Ipv4,
    };
    const PREFIX4: ListId = ListId {
        kind: ListKind::BlockPrefix,
        family: Family::Ipv4,
    };

    #[test]
    fn a_bit_comes_down_only_when_the_last_entry_of_its_slot_leaves() {
        let mut s = Summary::default();
        s.add(HOST4, &p("203.0.113.7"));
        s.add(HOST4, &p("203.0.113.9"));
        assert!(s.covers(HOST4, &p("203.0.113.200")), "same /24");
        assert!(
            !s.covers(PREFIX4, &p("203.0.113.0/24")),
            "the host bit only"
        );
        s.remove(HOST4, &p("203.0.113.7"));
        assert!(s.covers(HOST4, &p("203.0.113.9")));
        s.remove(HOST4, &p("203.0.113.9"));
        assert!(!s.covers(HOST4, &p("203.0.113.9")));
        assert_eq!(bits(&s), 0);
    }

    #[test]
    fn a_prefix_spanning_many_slots_sets_each_and_a_covering_one_keeps_them() {
        let mut s = Summary::default();
        s.add(PREFIX4, &p("198.51.0.0/16"));
        assert_eq!(bits(&s), 256);
        s.add(PREFIX4, &p("198.51.100.128/25"));
        s.remove(PREFIX4, &p("198.51.0.0/16"));
        assert_eq!(bits(&s), 1, "the /25's /24 stays");
        assert!(s.covers(PREFIX4, &p("198.51.100.128/25")));
        // A /23 across a word boundary of 32 slots: 198.51.31.0 and .32.0.
        s.add(PREFIX4, &p("198.51.30.0/23"));
        s.add(PREFIX4, &p("198.51.32.0/23"));
        assert!(s.covers(PREFIX4, &p("198.51.30.0/23")) && s.covers(PREFIX4, &p("198.51.32.0/23")));
        assert!(
            !s.covers(PREFIX4, &p("198.51.31.0/24")),
            "its slot is set, but no /24 is listed in that /16"
        );
    }

    #[test]
    fn wide_prefixes_raise_their_family_flag_until_the_last_leaves() {
        let mut s = Summary::default();
        let v6 = list(ListKind::BlockPrefix, Family::Ipv6);
        s.add(PREFIX4, &p("10.0.0.0/8"));
        s.add(v6, &p("2001::/15"));
        assert_eq!(
            s.wide_flags(),
            config_flags::PREFIX_V4_WIDE | config_flags::PREFIX_V6_WIDE
        );
        assert_eq!(bits(&s), 0, "no slots for wide prefixes");
        s.remove(PREFIX4, &p("10.0.0.0/8"));
        assert_eq!(s.wide_flags(), config_flags::PREFIX_V6_WIDE);
        // A /20 takes 4,096 /32 slots (fewer bits where hashes meet).
        s.add(v6, &p("2001:db0::/20"));
        assert!(bits(&s) > 4_000 && bits(&s) <= 4_096);
        assert!(s.covers(v6, &p("2001:db0::/20")));
    }

    #[test]
    fn dirty_words_are_each_written_once_and_rebuild_clears_what_is_gone() {
        let mut s = Summary::default();
        s.add(HOST4, &p("203.0.113.7"));
        s.add(PREFIX4, &p("203.0.113.0/24"));
        let (words, values) = s.take_dirty();
        assert_eq!(words.len(), 1, "host and prefix bits of a /24 share a word");
        assert_eq!(values[0].count_ones(), 2);
        s.rebuild([(HOST4, &p("198.51.100.1"))]);
        let (words, _) = s.take_dirty();
        assert_eq!(words.len(), 2, "the old word cleared, the new one set");
        assert!(!s.covers(HOST4, &p("203.0.113.7")));
        assert!(s.covers(HOST4, &p("198.51.100.1")));
    }
}
