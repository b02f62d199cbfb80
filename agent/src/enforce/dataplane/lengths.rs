//! The prefix lengths in use per region (layout in `xdpguard_common::prefix_lengths`): counts
//! of prefix entries per region and length, a copy of what `REGION_V4`, `REGION_V6` and
//! `WIDE_LENGTHS` should hold, and the regions to write back. Same write order as the summary:
//! a length's bit goes up before its first entry goes in and comes down after its last left.
use std::{collections::HashMap, net::IpAddr};

use foldhash::fast::RandomState;
use xdpguard_common::{Family, LengthMask, prefix_lengths, v4_length_bit};

use crate::prefix::Prefix;

/// Where a prefix entry's length is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Place {
    /// `REGION_V4[index]` (its /16).
    V4(u32),
    /// `REGION_V6[key]` (its /32's first word).
    V6(u32),
    /// `WIDE_LENGTHS[family]`.
    Wide(Family),
}

/// Where `prefix` (an entry of a prefix list) shows, and its length; `None` for a full-length
/// key (a host misfiled in a prefix list: the program never probes that length there).
fn place(prefix: &Prefix) -> Option<(Place, u8)> {
    let len = prefix.prefix_len();
    let place = match prefix.addr() {
        IpAddr::V4(_) if len >= 32 => return None,
        IpAddr::V6(_) if len >= 128 => return None,
        IpAddr::V4(_) if len < prefix_lengths::V4_REGION_LEN => Place::Wide(Family::Ipv4),
        IpAddr::V6(_) if len < prefix_lengths::V6_REGION_LEN => Place::Wide(Family::Ipv6),
        IpAddr::V4(addr) => Place::V4(u32::from(addr) >> 16),
        IpAddr::V6(addr) => {
            let o = addr.octets();
            Place::V6(u32::from_be_bytes([o[0], o[1], o[2], o[3]]))
        }
    };
    Some((place, len))
}

/// The bit of length `len` in the set kept at `place` (IPv4 and IPv6 sets differ).
const fn bit(place: Place, len: u8) -> LengthMask {
    match place {
        Place::V4(_) | Place::Wide(Family::Ipv4) => LengthMask {
            longer: v4_length_bit(len) as u64,
            shorter: 0,
        },
        Place::V6(_) | Place::Wide(Family::Ipv6) => LengthMask::EMPTY.with(len),
    }
}

const fn union(a: LengthMask, b: LengthMask) -> LengthMask {
    LengthMask {
        longer: a.longer | b.longer,
        shorter: a.shorter | b.shorter,
    }
}

/// What changed since the last write-back.
#[derive(Debug, Default)]
pub(super) struct LengthWrites {
    /// `REGION_V4` indices and their masks.
    pub(super) v4: Vec<(u32, u32)>,
    /// `REGION_V6` keys to set, and their masks.
    pub(super) v6_set: Vec<(u32, LengthMask)>,
    /// `REGION_V6` keys to delete (no prefix left in that /32).
    pub(super) v6_delete: Vec<u32>,
    /// Both `WIDE_LENGTHS` entries, when either changed.
    pub(super) wide: Option<[LengthMask; 2]>,
}

impl LengthWrites {
    pub(super) fn is_empty(&self) -> bool {
        self.v4.is_empty()
            && self.v6_set.is_empty()
            && self.v6_delete.is_empty()
            && self.wide.is_none()
    }
}

pub(super) struct PrefixLengths {
    counts: HashMap<(Place, u8), u32, RandomState>,
    /// What `REGION_V4` should hold.
    v4: Vec<u32>,
    /// What `REGION_V6` should hold (no key: no entry).
    v6: HashMap<u32, LengthMask, RandomState>,
    wide: [LengthMask; 2],
    dirty_v4: Vec<u32>,
    dirty_v4_mark: Vec<bool>,
    dirty_v6: Vec<u32>,
    dirty_wide: bool,
}

impl Default for PrefixLengths {
    fn default() -> Self {
        Self {
            counts: HashMap::default(),
            v4: vec![0; prefix_lengths::V4_REGIONS as usize],
            v6: HashMap::default(),
            wide: [LengthMask::EMPTY; 2],
            dirty_v4: Vec::new(),
            dirty_v4_mark: vec![false; prefix_lengths::V4_REGIONS as usize],
            dirty_v6: Vec::new(),
            dirty_wide: false,
        }
    }
}

impl PrefixLengths {
    /// Count a prefix entry going in. Its place is dirty even when the bit was already up
    /// (someone may have cleared it in the kernel).
    pub(super) fn add(&mut self, prefix: &Prefix) {
        let Some((place, len)) = place(prefix) else {
            return;
        };
        *self.counts.entry((place, len)).or_default() += 1;
        self.set(place, len, true);
        self.mark(place);
    }

    /// Count a prefix entry gone (after it left the kernel).
    pub(super) fn remove(&mut self, prefix: &Prefix) {
        let Some((place, len)) = place(prefix) else {
            return;
        };
        let Some(count) = self.counts.get_mut(&(place, len)) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            let _: Option<u32> = self.counts.remove(&(place, len));
            self.set(place, len, false);
        }
    }

    /// Whether the bit the entry keyed by `prefix` needs is set.
    pub(super) fn covers(&self, prefix: &Prefix) -> bool {
        let Some((place, len)) = place(prefix) else {
            return true;
        };
        let wanted = bit(place, len);
        let held = self.mask(place);
        union(held, wanted) == held
    }

    /// Start again from exactly these prefix entries; what changes is dirty.
    pub(super) fn rebuild<'a>(&mut self, prefixes: impl IntoIterator<Item = &'a Prefix>) {
        let mut counts: HashMap<(Place, u8), u32, RandomState> = HashMap::default();
        for prefix in prefixes {
            if let Some(key) = place(prefix) {
                *counts.entry(key).or_default() += 1;
            }
        }
        let mut masks: HashMap<Place, LengthMask, RandomState> = HashMap::default();
        for (place, len) in counts.keys() {
            let mask = masks.entry(*place).or_default();
            *mask = union(*mask, bit(*place, *len));
        }
        let mut touched: Vec<Place> = masks.keys().copied().collect();
        touched.extend(self.counts.keys().map(|(place, _)| *place));
        for place in touched {
            let new = masks.get(&place).copied().unwrap_or_default();
            if self.mask(place) != new {
                self.store(place, new);
                self.mark(place);
            }
        }
        self.counts = counts;
    }

    /// Every region and both wide masks, to write them all (contents of the kernel's unknown).
    pub(super) fn mark_all(&mut self) {
        for index in 0..prefix_lengths::V4_REGIONS {
            self.mark(Place::V4(index));
        }
        let keys: Vec<u32> = self.v6.keys().copied().collect();
        for key in keys {
            self.mark(Place::V6(key));
        }
        self.dirty_wide = true;
    }

    /// What to write back; forgets it.
    pub(super) fn take_dirty(&mut self) -> LengthWrites {
        let mut writes = LengthWrites::default();
        for index in std::mem::take(&mut self.dirty_v4) {
            self.dirty_v4_mark[index as usize] = false;
            writes.v4.push((index, self.v4[index as usize]));
        }
        let mut v6 = std::mem::take(&mut self.dirty_v6);
        v6.sort_unstable();
        v6.dedup();
        for key in v6 {
            match self.v6.get(&key) {
                Some(mask) => writes.v6_set.push((key, *mask)),
                None => writes.v6_delete.push(key),
            }
        }
        if std::mem::take(&mut self.dirty_wide) {
            writes.wide = Some(self.wide);
        }
        writes
    }

    /// Mark again what a failed write-back held.
    pub(super) fn redirty(&mut self, writes: &LengthWrites) {
        for (index, _) in &writes.v4 {
            self.mark(Place::V4(*index));
        }
        for key in writes
            .v6_set
            .iter()
            .map(|(key, _)| key)
            .chain(&writes.v6_delete)
        {
            self.mark(Place::V6(*key));
        }
        if writes.wide.is_some() {
            self.dirty_wide = true;
        }
    }

    /// What `REGION_V4[index]` should hold.
    pub(super) fn v4_region(&self, index: u32) -> u32 {
        self.v4.get(index as usize).copied().unwrap_or(0)
    }

    /// What `REGION_V6[key]` should hold (`None`: no entry).
    pub(super) fn v6_region(&self, key: u32) -> Option<LengthMask> {
        self.v6.get(&key).copied()
    }

    /// The IPv6 regions that should exist.
    pub(super) fn v6_keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.v6.keys().copied()
    }

    pub(super) const fn wide(&self) -> [LengthMask; 2] {
        self.wide
    }

    /// Mark a place to write back (a repair found the kernel's differs).
    pub(super) fn mark_v4(&mut self, index: u32) {
        self.mark(Place::V4(index));
    }

    pub(super) fn mark_v6(&mut self, key: u32) {
        self.mark(Place::V6(key));
    }

    pub(super) const fn mark_wide(&mut self) {
        self.dirty_wide = true;
    }

    fn mask(&self, place: Place) -> LengthMask {
        match place {
            Place::V4(index) => LengthMask {
                longer: u64::from(self.v4[index as usize]),
                shorter: 0,
            },
            Place::V6(key) => self.v6.get(&key).copied().unwrap_or_default(),
            Place::Wide(family) => self.wide[family as usize],
        }
    }

    fn store(&mut self, place: Place, mask: LengthMask) {
        match place {
            // Regional IPv4 lengths are 16..=31: they fit the array's u32.
            Place::V4(index) => self.v4[index as usize] = u32::try_from(mask.longer).unwrap_or(0),
            Place::V6(key) if mask.is_empty() => {
                let _: Option<LengthMask> = self.v6.remove(&key);
            }
            Place::V6(key) => {
                let _: Option<LengthMask> = self.v6.insert(key, mask);
            }
            Place::Wide(family) => self.wide[family as usize] = mask,
        }
    }

    fn set(&mut self, place: Place, len: u8, on: bool) {
        let old = self.mask(place);
        let bit = bit(place, len);
        let new = if on {
            union(old, bit)
        } else {
            LengthMask {
                longer: old.longer & !bit.longer,
                shorter: old.shorter & !bit.shorter,
            }
        };
        if new != old {
            self.store(place, new);
            self.mark(place);
        }
    }

    fn mark(&mut self, place: Place) {
        match place {
            Place::V4(index) => {
                if !self.dirty_v4_mark[index as usize] {
                    self.dirty_v4_mark[index as usize] = true;
                    self.dirty_v4.push(index);
                }
            }
            Place::V6(key) => self.dirty_v6.push(key),
            Place::Wide(_) => self.dirty_wide = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    #[test]
    fn a_length_bit_stays_while_any_entry_of_that_length_is_in_the_region() {
        let mut l = PrefixLengths::default();
        l.add(&p("198.51.100.0/24"));
        l.add(&p("198.51.7.0/24"));
        l.add(&p("198.51.100.128/25"));
        let region = u32::from(std::net::Ipv4Addr::new(198, 51, 0, 0)) >> 16;
        let both = v4_length_bit(24) | v4_length_bit(25);
        assert_eq!(l.v4_region(region), both);
        l.remove(&p("198.51.100.0/24"));
        assert_eq!(l.v4_region(region), both, "the other /24 stays");
        l.remove(&p("198.51.7.0/24"));
        assert_eq!(l.v4_region(region), v4_length_bit(25));
        assert!(l.covers(&p("198.51.100.128/25")));
        assert!(!l.covers(&p("198.51.7.0/24")));
        let writes = l.take_dirty();
        assert_eq!(
            writes.v4,
            vec![(region, v4_length_bit(25))],
            "one region, written once"
        );
    }

    #[test]
    fn ipv6_regions_come_and_go_and_wide_lengths_are_per_family() {
        let mut l = PrefixLengths::default();
        l.add(&p("2001:db8:1::/48"));
        l.add(&p("2001:db8::/33"));
        l.add(&p("2001:db0::/28"));
        l.add(&p("10.0.0.0/8"));
        let key = 0x2001_0db8;
        assert_eq!(l.v6_region(key), Some(LengthMask::EMPTY.with(48).with(33)));
        assert_eq!(l.wide()[1], LengthMask::EMPTY.with(28));
        assert_eq!(u64::from(v4_length_bit(8)), l.wide()[0].longer);
        let writes = l.take_dirty();
        assert_eq!(writes.v6_set.len(), 1);
        assert!(writes.wide.is_some());
        l.remove(&p("2001:db8:1::/48"));
        l.remove(&p("2001:db8::/33"));
        let writes = l.take_dirty();
        assert_eq!(writes.v6_delete, vec![key]);
        assert_eq!(l.v6_region(key), None);
        // A rebuild from nothing clears the wide masks.
        l.rebuild([]);
        assert_eq!(l.wide(), [LengthMask::EMPTY; 2]);
        assert!(l.take_dirty().wide.is_some());
    }

    #[test]
    fn the_longest_length_is_the_lowest_bit() {
        let mut l = PrefixLengths::default();
        l.add(&p("2001:db8::1:0/112"));
        l.add(&p("2001:db8::/40"));
        let mask = l.v6_region(0x2001_0db8).unwrap();
        assert_eq!(mask.longer, 1 << (127 - 112));
        assert_eq!(mask.shorter, 1 << (63 - 40));
    }
}
