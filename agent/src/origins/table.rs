//! The longest-prefix table of announcements, flattened into disjoint address ranges.
//!
//! Nested announcements (a /16 and the /24s inside it) are turned, once at build time, into
//! a sorted list of range starts, each naming the most specific announcement covering it (or
//! none). A lookup is then one binary search, narrowed first by a 65,536-slot index on the
//! address's top 16 bits: no pointers to chase, and about 8 bytes per IPv4 range. The
//! announcement's network is kept beside it for `announced_by` and the reports.
use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::prefix::Prefix;

/// Who originates a prefix: one AS, or an AS_SET (aggregated routes; never RPKI-valid, and
/// which member really originates it is unknown).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OriginAs {
    Single(u32),
    /// Sorted, deduplicated members.
    Set(Box<[u32]>),
}

impl OriginAs {
    pub const fn is_set(&self) -> bool {
        matches!(self, Self::Set(_))
    }

    /// The AS a block by ASN matches: only single origins (an AS_SET names no one AS).
    pub const fn single(&self) -> Option<u32> {
        match self {
            Self::Single(asn) => Some(*asn),
            Self::Set(_) => None,
        }
    }
}

impl fmt::Display for OriginAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(asn) => write!(f, "AS{asn}"),
            Self::Set(members) => {
                f.write_str("{")?;
                for (i, asn) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "AS{asn}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// What a lookup finds: the most specific announcement covering the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement<'a> {
    pub prefix: Prefix,
    pub origin: &'a OriginAs,
    /// RIS peers that saw it (of the origin kept, when several announce the prefix).
    pub peers: u32,
    /// More than one origin announces this prefix (MOAS); `origin` is the most seen.
    pub multiple_origins: bool,
}

/// No announcement covers the range.
const NONE: u32 = u32::MAX;

/// An address family's key: the address as an unsigned integer.
trait Key: Copy + Ord + fmt::Debug {
    fn top16(self) -> usize;
    /// The last address of `self/len`.
    fn last(self, len: u8) -> Self;
    /// `self + 1`, or `None` past the last address.
    fn next(self) -> Option<Self>;
    fn zero() -> Self;
    fn from_top16(top: usize) -> Self;
}

impl Key for u32 {
    fn top16(self) -> usize {
        (self >> 16) as usize
    }
    fn last(self, len: u8) -> Self {
        self | Self::MAX.checked_shr(Self::from(len)).unwrap_or(0)
    }
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn zero() -> Self {
        0
    }
    fn from_top16(top: usize) -> Self {
        Self::try_from(top).map_or(Self::MAX, |top| top << 16)
    }
}

impl Key for u128 {
    fn top16(self) -> usize {
        usize::from(u16::try_from(self >> 112).unwrap_or(u16::MAX))
    }
    fn last(self, len: u8) -> Self {
        self | Self::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn zero() -> Self {
        0
    }
    fn from_top16(top: usize) -> Self {
        Self::try_from(top).map_or(Self::MAX, |top| top << 112)
    }
}

/// One announcement: 12 bytes for IPv4, 32 for IPv6 (`u128` is 16-byte aligned).
#[derive(Clone, Copy, Debug)]
struct Entry<K> {
    network: K,
    origin: u32,
    peers: u16,
    len: u8,
    multiple_origins: bool,
}

/// The flattened ranges of one family.
#[derive(Debug)]
struct FamilyTable<K> {
    /// Sorted; `starts[0]` is address 0.
    starts: Vec<K>,
    /// Per range: index into `entries`, or [`NONE`].
    values: Vec<u32>,
    entries: Vec<Entry<K>>,
    /// `index[h]`: the first range starting at or after `h << (BITS - 16)`; one past the end
    /// for the last slot.
    index: Box<[u32]>,
}

impl<K: Key> FamilyTable<K> {
    fn empty() -> Self {
        Self::build(Vec::new())
    }

    /// `entries` sorted by network then length, one per (network, length).
    fn build(entries: Vec<Entry<K>>) -> Self {
        let mut starts = vec![K::zero()];
        let mut values = vec![NONE];
        // Open announcements, broadest at the bottom: (last address, entry).
        let mut open: Vec<(K, u32)> = Vec::new();
        let push = |starts: &mut Vec<K>, values: &mut Vec<u32>, start: K, value: u32| {
            if starts.last() == Some(&start) {
                // A more specific one starting at the same address wins.
                if let Some(last) = values.last_mut() {
                    *last = value;
                }
                // ...and may now repeat the range before it.
                let n = values.len();
                if n >= 2 && values[n - 2] == value {
                    starts.pop();
                    values.pop();
                }
            } else if values.last() != Some(&value) {
                starts.push(start);
                values.push(value);
            }
        };
        let close_until = |starts: &mut Vec<K>,
                           values: &mut Vec<u32>,
                           open: &mut Vec<(K, u32)>,
                           before: Option<K>| {
            while let Some(&(last, _)) = open.last() {
                if before.is_some_and(|start| last >= start) {
                    break;
                }
                open.pop();
                if let Some(after) = last.next() {
                    let parent = open.last().map_or(NONE, |&(_, index)| index);
                    push(starts, values, after, parent);
                }
            }
        };
        for (index, entry) in entries.iter().enumerate() {
            close_until(&mut starts, &mut values, &mut open, Some(entry.network));
            let index = u32::try_from(index).unwrap_or(NONE - 1);
            push(&mut starts, &mut values, entry.network, index);
            open.push((entry.network.last(entry.len), index));
        }
        close_until(&mut starts, &mut values, &mut open, None);
        starts.shrink_to_fit();
        values.shrink_to_fit();
        let mut index = Vec::with_capacity(65_537);
        let mut range = 0usize;
        for top in 0..65_536 {
            let first = K::from_top16(top);
            while range < starts.len() && starts[range] < first {
                range += 1;
            }
            index.push(u32::try_from(range).unwrap_or(u32::MAX));
        }
        index.push(u32::try_from(starts.len()).unwrap_or(u32::MAX));
        Self {
            starts,
            values,
            entries,
            index: index.into_boxed_slice(),
        }
    }

    fn lookup(&self, key: K) -> Option<&Entry<K>> {
        let top = key.top16();
        // starts[0] is 0, so the range before the slot's first always starts at or below key.
        let low = (self.index[top] as usize).saturating_sub(1);
        let high = self.index[top + 1] as usize;
        let within = self.starts[low..high].partition_point(|start| *start <= key);
        let value = self.values[low + within.checked_sub(1)?];
        self.entries.get(value as usize)
    }

    fn heap_bytes(&self) -> usize {
        self.starts.capacity() * size_of::<K>()
            + self.values.capacity() * size_of::<u32>()
            + self.entries.capacity() * size_of::<Entry<K>>()
            + self.index.len() * size_of::<u32>()
    }
}

/// Announcements of both families, looked up by address.
#[derive(Debug)]
pub struct OriginTable {
    v4: FamilyTable<u32>,
    v6: FamilyTable<u128>,
    origins: Vec<OriginAs>,
    /// (AS, entry) for every single-origin entry, sorted; the entry's top bit says IPv6.
    by_asn: Vec<(u32, u32)>,
}

const V6_FLAG: u32 = 1 << 31;

impl Default for OriginTable {
    fn default() -> Self {
        Self::empty()
    }
}

impl OriginTable {
    pub fn empty() -> Self {
        Self {
            v4: FamilyTable::empty(),
            v6: FamilyTable::empty(),
            origins: Vec::new(),
            by_asn: Vec::new(),
        }
    }

    /// The most specific announcement covering `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<Announcement<'_>> {
        match Prefix::host(addr).addr() {
            IpAddr::V4(v4) => self
                .v4
                .lookup(u32::from(v4))
                .map(|entry| self.announcement(IpAddr::V4(Ipv4Addr::from(entry.network)), entry)),
            IpAddr::V6(v6) => self
                .v6
                .lookup(u128::from(v6))
                .map(|entry| self.announcement(IpAddr::V6(Ipv6Addr::from(entry.network)), entry)),
        }
    }

    fn announcement<K>(&self, network: IpAddr, entry: &Entry<K>) -> Announcement<'_> {
        Announcement {
            prefix: Prefix::new(network, entry.len).unwrap_or_else(|_| Prefix::host(network)),
            origin: &self.origins[entry.origin as usize],
            peers: u32::from(entry.peers),
            multiple_origins: entry.multiple_origins,
        }
    }

    /// Every prefix `asn` announces as the sole origin, IPv4 first, in address order.
    pub fn announced_by(&self, asn: u32) -> impl Iterator<Item = Prefix> + '_ {
        let first = self.by_asn.partition_point(|&(a, _)| a < asn);
        self.by_asn[first..]
            .iter()
            .take_while(move |&&(a, _)| a == asn)
            .filter_map(|&(_, entry)| {
                if entry & V6_FLAG == 0 {
                    let e = self.v4.entries.get(entry as usize)?;
                    Prefix::new(IpAddr::V4(Ipv4Addr::from(e.network)), e.len).ok()
                } else {
                    let e = self.v6.entries.get((entry & !V6_FLAG) as usize)?;
                    Prefix::new(IpAddr::V6(Ipv6Addr::from(e.network)), e.len).ok()
                }
            })
    }

    /// Announcements held (one per prefix), IPv4 and IPv6.
    pub fn len(&self) -> (usize, usize) {
        (self.v4.entries.len(), self.v6.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.v4.entries.is_empty() && self.v6.entries.is_empty()
    }

    /// Address ranges after flattening, IPv4 and IPv6.
    pub fn ranges(&self) -> (usize, usize) {
        (self.v4.starts.len(), self.v6.starts.len())
    }

    /// Heap memory held, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes()
            + self.v6.heap_bytes()
            + self.by_asn.capacity() * size_of::<(u32, u32)>()
            + self
                .origins
                .iter()
                .map(|origin| {
                    size_of::<OriginAs>()
                        + match origin {
                            OriginAs::Single(_) => 0,
                            OriginAs::Set(members) => members.len() * 4,
                        }
                })
                .sum::<usize>()
    }
}

/// Collects rows, then builds an [`OriginTable`].
#[derive(Debug, Default)]
pub struct TableBuilder {
    v4: Vec<(u32, u8, u32, u32)>,
    v6: Vec<(u128, u8, u32, u32)>,
    origins: Vec<OriginAs>,
    origin_ids: HashMap<OriginAs, u32>,
}

impl TableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// One row: `prefix` originated by `origin`, seen by `peers` RIS peers.
    pub fn add(&mut self, prefix: Prefix, origin: OriginAs, peers: u32) {
        let next = u32::try_from(self.origins.len()).unwrap_or(u32::MAX);
        let id = *self.origin_ids.entry(origin).or_insert_with_key(|origin| {
            self.origins.push(origin.clone());
            next
        });
        match prefix.addr() {
            IpAddr::V4(v4) => self
                .v4
                .push((u32::from(v4), prefix.prefix_len(), peers, id)),
            IpAddr::V6(v6) => self
                .v6
                .push((u128::from(v6), prefix.prefix_len(), peers, id)),
        }
    }

    /// Rows added so far.
    pub fn rows(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn build(self) -> OriginTable {
        let Self {
            v4,
            v6,
            mut origins,
            origin_ids: _,
        } = self;
        let v4 = FamilyTable::build(merge(v4));
        let v6 = FamilyTable::build(merge(v6));
        let mut by_asn = Vec::new();
        let singles = |entries: &mut dyn Iterator<Item = (usize, u32)>,
                       flag: u32,
                       by_asn: &mut Vec<(u32, u32)>| {
            for (index, origin) in entries {
                if let (Some(asn), Ok(index)) =
                    (origins[origin as usize].single(), u32::try_from(index))
                {
                    by_asn.push((asn, index | flag));
                }
            }
        };
        singles(
            &mut v4.entries.iter().map(|e| e.origin).enumerate(),
            0,
            &mut by_asn,
        );
        singles(
            &mut v6.entries.iter().map(|e| e.origin).enumerate(),
            V6_FLAG,
            &mut by_asn,
        );
        by_asn.sort_unstable();
        by_asn.shrink_to_fit();
        origins.shrink_to_fit();
        OriginTable {
            v4,
            v6,
            origins,
            by_asn,
        }
    }
}

/// Sort rows and keep one entry per (network, length): the origin most peers saw, flagged
/// when others announce it too.
fn merge<K: Key>(mut rows: Vec<(K, u8, u32, u32)>) -> Vec<Entry<K>> {
    // Most peers first within a prefix, so the first row of each group is the one kept.
    rows.sort_unstable_by(|a, b| (a.0, a.1, b.2, a.3).cmp(&(b.0, b.1, a.2, b.3)));
    let mut entries: Vec<Entry<K>> = Vec::with_capacity(rows.len());
    for (network, len, peers, origin) in rows {
        if let Some(last) = entries.last_mut()
            && last.network == network
            && last.len == len
        {
            if last.origin != origin {
                last.multiple_origins = true;
            }
            continue;
        }
        entries.push(Entry {
            network,
            origin,
            peers: u16::try_from(peers).unwrap_or(u16::MAX),
            len,
            multiple_origins: false,
        });
    }
    entries.shrink_to_fit();
    entries
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    fn p(text: &str) -> Prefix {
        Prefix::parse(text).unwrap().0
    }

    fn table(rows: &[(&str, u32, u32)]) -> OriginTable {
        let mut builder = TableBuilder::new();
        for &(prefix, asn, peers) in rows {
            builder.add(p(prefix), OriginAs::Single(asn), peers);
        }
        builder.build()
    }

    fn origin_of(table: &OriginTable, addr: &str) -> Option<(String, String)> {
        table
            .lookup(addr.parse().unwrap())
            .map(|a| (a.origin.to_string(), a.prefix.to_string()))
    }

    #[test]
    fn the_most_specific_announcement_wins_and_gaps_have_none() {
        let t = table(&[
            ("10.0.0.0/8", 1, 50),
            ("10.1.0.0/16", 2, 50),
            ("10.1.2.0/24", 3, 50),
            ("10.1.255.0/24", 4, 50),
            ("192.0.2.0/24", 5, 50),
        ]);
        let cases = [
            ("10.0.0.1", Some(("AS1", "10.0.0.0/8"))),
            ("10.1.0.0", Some(("AS2", "10.1.0.0/16"))),
            ("10.1.2.200", Some(("AS3", "10.1.2.0/24"))),
            ("10.1.3.0", Some(("AS2", "10.1.0.0/16"))),
            ("10.1.255.255", Some(("AS4", "10.1.255.0/24"))),
            ("10.2.0.0", Some(("AS1", "10.0.0.0/8"))),
            ("10.255.255.255", Some(("AS1", "10.0.0.0/8"))),
            ("11.0.0.0", None),
            ("9.255.255.255", None),
            ("0.0.0.0", None),
            ("192.0.2.255", Some(("AS5", "192.0.2.0/24"))),
            ("192.0.3.0", None),
            ("255.255.255.255", None),
        ];
        for (addr, want) in cases {
            let want = want.map(|(a, b)| (a.to_owned(), b.to_owned()));
            assert_eq!(origin_of(&t, addr), want, "{addr}");
        }
    }

    #[test]
    fn prefixes_at_the_ends_of_the_address_space_and_a_default_route() {
        let t = table(&[
            ("0.0.0.0/0", 9, 20),
            ("255.255.255.0/24", 8, 20),
            ("0.0.0.0/24", 7, 20),
            ("::/0", 6, 20),
            ("ffff::/16", 5, 20),
        ]);
        assert_eq!(origin_of(&t, "255.255.255.255").unwrap().0, "AS8");
        assert_eq!(origin_of(&t, "0.0.0.1").unwrap().0, "AS7");
        assert_eq!(origin_of(&t, "1.0.0.0").unwrap().0, "AS9");
        assert_eq!(
            origin_of(&t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
                .unwrap()
                .0,
            "AS5"
        );
        assert_eq!(origin_of(&t, "2001:db8::1").unwrap().0, "AS6");
    }

    #[test]
    fn several_origins_of_one_prefix_keep_the_most_seen_and_say_so() {
        let t = table(&[
            ("198.51.100.0/24", 64500, 12),
            ("198.51.100.0/24", 64501, 300),
            ("203.0.113.0/24", 64502, 40),
        ]);
        let found = t.lookup("198.51.100.9".parse().unwrap()).unwrap();
        assert_eq!(found.origin, &OriginAs::Single(64501));
        assert!(found.multiple_origins);
        assert_eq!(found.peers, 300);
        assert!(
            !t.lookup("203.0.113.1".parse().unwrap())
                .unwrap()
                .multiple_origins
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_looked_up_as_ipv4() {
        let t = table(&[("203.0.113.0/24", 64500, 12)]);
        assert_eq!(
            origin_of(&t, "::ffff:203.0.113.5"),
            Some(("AS64500".to_owned(), "203.0.113.0/24".to_owned()))
        );
    }

    #[test]
    fn announced_by_lists_each_prefix_of_a_sole_origin() {
        let mut builder = TableBuilder::new();
        builder.add(p("203.0.113.0/24"), OriginAs::Single(64500), 20);
        builder.add(p("198.51.100.0/24"), OriginAs::Single(64500), 20);
        builder.add(p("2001:db8::/32"), OriginAs::Single(64500), 20);
        builder.add(p("192.0.2.0/24"), OriginAs::Single(64501), 20);
        builder.add(p("100.64.0.0/10"), OriginAs::Set([64500, 64501].into()), 20);
        let t = builder.build();
        let listed: Vec<String> = t.announced_by(64500).map(|p| p.to_string()).collect();
        assert_eq!(
            listed,
            ["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]
        );
        assert_eq!(t.announced_by(64999).count(), 0);
        assert_eq!(origin_of(&t, "100.64.1.1").unwrap().0, "{AS64500,AS64501}");
    }

    /// The naive reference: every announcement checked, the longest covering one kept.
    fn naive(rows: &[(Prefix, u32)], addr: IpAddr) -> Option<&(Prefix, u32)> {
        rows.iter()
            .filter(|(prefix, _)| prefix.contains(addr))
            .max_by_key(|(prefix, _)| prefix.prefix_len())
    }

    #[test]
    fn lookups_agree_with_a_naive_reference_on_random_tables_and_addresses() {
        let mut rng = StdRng::seed_from_u64(0x0419_2026);
        for round in 0..20 {
            let mut rows: Vec<(Prefix, u32)> = Vec::new();
            let mut builder = TableBuilder::new();
            // Clustered in a few /8s (or /16s of IPv6) so prefixes nest and touch.
            for _ in 0..rng.random_range(1..400) {
                let (addr, len) = if rng.random_bool(0.7) {
                    let top: u32 = [10u32, 11, 203, 255][rng.random_range(0..4)];
                    let addr = (top << 24) | (rng.random::<u32>() >> 8);
                    (IpAddr::V4(Ipv4Addr::from(addr)), rng.random_range(8..=32))
                } else {
                    let top: u128 = [0x2001u128, 0x2a00, 0xffff][rng.random_range(0..3)];
                    let addr = (top << 112) | (rng.random::<u128>() >> 16);
                    (IpAddr::V6(Ipv6Addr::from(addr)), rng.random_range(16..=128))
                };
                let prefix = Prefix::new(addr, len).unwrap();
                if rows.iter().any(|(p, _)| *p == prefix) {
                    continue;
                }
                let asn = rng.random_range(1..1000);
                rows.push((prefix, asn));
                builder.add(prefix, OriginAs::Single(asn), 10);
            }
            let t = builder.build();
            for _ in 0..2000 {
                // Addresses near announcement edges, and anywhere.
                let addr = match rng.random_range(0..4) {
                    0 => {
                        let (prefix, _) = rows[rng.random_range(0..rows.len())];
                        prefix.addr()
                    }
                    1 => {
                        let (prefix, _) = rows[rng.random_range(0..rows.len())];
                        last_address(prefix)
                    }
                    2 => IpAddr::V4(Ipv4Addr::from(rng.random::<u32>())),
                    _ => {
                        let (prefix, _) = rows[rng.random_range(0..rows.len())];
                        step_past(last_address(prefix))
                    }
                };
                let want = naive(&rows, addr).map(|&(prefix, asn)| (prefix, asn));
                let got = t
                    .lookup(addr)
                    .map(|a| (a.prefix, a.origin.single().unwrap()));
                assert_eq!(got, want, "round {round}, {addr}");
            }
        }
    }

    fn last_address(prefix: Prefix) -> IpAddr {
        match prefix.addr() {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).last(prefix.prefix_len()))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).last(prefix.prefix_len()))),
        }
    }

    fn step_past(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(1))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(1))),
        }
    }

    #[test]
    fn an_empty_table_finds_nothing() {
        let t = OriginTable::empty();
        assert!(t.is_empty());
        assert!(t.lookup("203.0.113.1".parse().unwrap()).is_none());
        assert!(t.lookup("2001:db8::1".parse().unwrap()).is_none());
    }
}
