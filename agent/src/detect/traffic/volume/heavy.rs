//! Heavy hitters at the end of an interval: the prefixes whose rate is over a limit, and the
//! largest prefixes at fixed lengths for display.
//!
//! # The rule
//! The candidates are the prefixes the crit-bit tree ([`Trie`]) branches at, plus its leaves:
//! each is the longest prefix common to all the sources below it, so a group is reported under
//! its own network, never under a single-child ancestor. Only candidates with a length in the
//! family's `[min, max]` are reported; a branch shorter than `min` is not a candidate but its
//! subtrees (each within one `/min`) are, and a subtree deeper than `max` is reported as its
//! `/max` prefix.
//!
//! Walking bottom-up, a candidate is *over* when its residual volume divided by the interval
//! exceeds the limit in bytes/s or in packets/s. The most specific over prefixes are reported.
//! Refinement over a plain "report an ancestor only when nothing below it was reported": an
//! ancestor's residual is its volume minus the volume of the reported prefixes below it, and it
//! is reported when that residual is still over. So a `/24` made hot by many cool hosts is found
//! even when one host inside it is also hot (both are reported), while a `/24` that is hot only
//! because of that host is not.
//!
//! Overrides: the override whose prefix is the longest one containing a candidate gives its
//! limit. Each override prefix is a zone of its own: its sources are judged by its limit (and
//! by narrower overrides inside it) and never count toward a wider prefix outside it, so a
//! customer network with a raised limit does not make the `/16` around it hot, nor does exempt
//! traffic. An override with neither limit exempts: nothing inside it is reported. An override
//! longer than the family's `max` therefore only removes its sources from the report.
use std::{
    cmp::Reverse, collections::BinaryHeap, collections::HashMap, net::IpAddr, time::Duration,
};

use super::trie::{Key, Trie, View, Volume};
use crate::prefix::Prefix;

/// A rate limit; a prefix is over it when either rate is exceeded. Neither rate: never over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    pub bytes_per_sec: Option<u64>,
    pub packets_per_sec: Option<u64>,
}

impl Limit {
    /// No limit: what an exempting override holds.
    pub const EXEMPT: Self = Self {
        bytes_per_sec: None,
        packets_per_sec: None,
    };

    pub const fn bytes(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: Some(bytes_per_sec),
            packets_per_sec: None,
        }
    }

    pub const fn packets(packets_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: None,
            packets_per_sec: Some(packets_per_sec),
        }
    }

    /// Neither rate set: never over.
    pub const fn is_exempt(&self) -> bool {
        self.bytes_per_sec.is_none() && self.packets_per_sec.is_none()
    }

    /// Whether `volume` over an interval of `nanos` nanoseconds exceeds either rate.
    fn exceeded_by(&self, volume: Volume, nanos: u128) -> bool {
        // volume / (nanos / 1e9) > limit, without division or floats.
        let over = |count: u64, limit: Option<u64>| {
            limit.is_some_and(|limit| {
                u128::from(count) * 1_000_000_000 > u128::from(limit).saturating_mul(nanos)
            })
        };
        over(volume.bytes, self.bytes_per_sec) || over(volume.packets, self.packets_per_sec)
    }
}

/// Shortest and longest prefix length reported for one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lengths {
    pub min: u8,
    pub max: u8,
}

impl Lengths {
    /// IPv4 default: `/16` to hosts.
    pub const V4: Self = Self { min: 16, max: 32 };
    /// IPv6 default: `/32` to hosts.
    pub const V6: Self = Self { min: 32, max: 128 };
}

/// A different limit for the prefixes inside `prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    pub prefix: Prefix,
    pub limit: Limit,
}

impl Override {
    /// Never report anything inside `prefix`.
    pub const fn exempt(prefix: Prefix) -> Self {
        Self {
            prefix,
            limit: Limit::EXEMPT,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("a volume limit needs bytes/s, packets/s or both")]
    NoLimit,
    #[error("IPv{family} prefix lengths /{min} to /{max}: need min <= max <= {bits}")]
    BadLengths {
        family: u8,
        min: u8,
        max: u8,
        bits: u8,
    },
    #[error("more than one volume override for {0}")]
    DuplicateOverride(Prefix),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeavyError {
    #[error("the counting interval is zero")]
    ZeroInterval,
}

/// Limits, lengths and overrides, checked and indexed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeLimits {
    limit: Limit,
    v4: Family,
    v6: Family,
    /// As given, in order.
    overrides: Vec<Override>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Family {
    lengths: Lengths,
    /// `(prefix bits widened to 128, length)` to limit.
    overrides: HashMap<(u128, u8), Limit>,
    /// The lengths present in `overrides`, longest first.
    override_lens: Vec<u8>,
}

impl Family {
    fn new(lengths: Lengths, family: u8, bits: u8) -> Result<Self, LimitsError> {
        if lengths.min > lengths.max || lengths.max > bits {
            return Err(LimitsError::BadLengths {
                family,
                min: lengths.min,
                max: lengths.max,
                bits,
            });
        }
        Ok(Self {
            lengths,
            overrides: HashMap::new(),
            override_lens: Vec::new(),
        })
    }

    fn insert(&mut self, key: u128, len: u8, over: Override) -> Result<(), LimitsError> {
        if self.overrides.insert((key, len), over.limit).is_some() {
            return Err(LimitsError::DuplicateOverride(over.prefix));
        }
        if let Err(at) = self.override_lens.binary_search_by(|probe| len.cmp(probe)) {
            self.override_lens.insert(at, len);
        }
        Ok(())
    }

    /// The longest override prefix containing `key/len`: its length and limit.
    fn lookup<K: Key>(&self, key: K, len: u8) -> Option<(u8, Limit)> {
        self.override_lens
            .iter()
            .filter(|&&at| at <= len)
            .find_map(|&at| {
                let limit = self.overrides.get(&(key.truncate(at).widen(), at))?;
                Some((at, *limit))
            })
    }
}

impl VolumeLimits {
    /// `limit` must set at least one rate.
    ///
    /// # Errors
    /// When `limit` sets neither rate, a family's lengths are out of order or too long, or two
    /// overrides name the same prefix.
    pub fn new(
        limit: Limit,
        v4: Lengths,
        v6: Lengths,
        overrides: &[Override],
    ) -> Result<Self, LimitsError> {
        if limit.is_exempt() {
            return Err(LimitsError::NoLimit);
        }
        let mut policy = Self {
            limit,
            v4: Family::new(v4, 4, 32)?,
            v6: Family::new(v6, 6, 128)?,
            overrides: overrides.to_vec(),
        };
        for over in overrides {
            let len = over.prefix.prefix_len();
            match over.prefix.addr() {
                IpAddr::V4(addr) => policy.v4.insert(u128::from(u32::from(addr)), len, *over)?,
                IpAddr::V6(addr) => policy.v6.insert(u128::from(addr), len, *over)?,
            }
        }
        Ok(policy)
    }

    /// The limit where no override applies.
    pub const fn limit(&self) -> Limit {
        self.limit
    }

    /// The reported lengths for IPv4 and IPv6.
    pub const fn lengths(&self) -> (Lengths, Lengths) {
        (self.v4.lengths, self.v6.lengths)
    }

    /// The overrides, as given.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }

    /// The limit for `prefix`: the longest containing override's, else the default.
    pub fn limit_for(&self, prefix: Prefix) -> Limit {
        let len = prefix.prefix_len();
        match prefix.addr() {
            IpAddr::V4(addr) => self.v4.lookup(u32::from(addr), len),
            IpAddr::V6(addr) => self.v6.lookup(u128::from(addr), len),
        }
        .map_or(self.limit, |(_, limit)| limit)
    }

    fn family<K: Key>(&self) -> &Family {
        if K::BITS == 32 { &self.v4 } else { &self.v6 }
    }
}

/// A prefix over its limit in one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeavyHitter {
    pub prefix: Prefix,
    /// Everything the prefix sent in the interval, reported descendants included.
    pub bytes: u64,
    pub packets: u64,
    /// `bytes` and `packets` over the interval.
    pub bytes_per_sec: f64,
    pub packets_per_sec: f64,
    /// Distinct tracked sources inside the prefix.
    pub sources: u32,
    /// The volume not in reported prefixes inside this one nor in override zones inside it: what
    /// made it over.
    pub residual_bytes: u64,
    pub residual_packets: u64,
}

/// Interval totals, so callers can give each prefix's share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// All traffic counted, overflow included.
    pub bytes: u64,
    pub packets: u64,
    /// Distinct tracked sources (after truncation to the longest tracked prefix).
    pub sources: u64,
    /// Traffic of sources that were not tracked because the bound was reached.
    pub overflow_bytes: u64,
    pub overflow_packets: u64,
}

impl Totals {
    /// The totals of one family's tree.
    pub fn of<K: Key>(trie: &Trie<K>) -> Self {
        let all = trie.total().plus(trie.overflow());
        Self {
            bytes: all.bytes,
            packets: all.packets,
            sources: u64::try_from(trie.leaves()).unwrap_or(u64::MAX),
            overflow_bytes: trie.overflow().bytes,
            overflow_packets: trie.overflow().packets,
        }
    }

    /// Both families' totals.
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            bytes: self.bytes.saturating_add(other.bytes),
            packets: self.packets.saturating_add(other.packets),
            sources: self.sources.saturating_add(other.sources),
            overflow_bytes: self.overflow_bytes.saturating_add(other.overflow_bytes),
            overflow_packets: self.overflow_packets.saturating_add(other.overflow_packets),
        }
    }
}

/// One interval's heavy hitters, bytes descending, and its totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub hitters: Vec<HeavyHitter>,
    pub totals: Totals,
}

impl Report {
    /// Both families in one report, still bytes descending.
    #[must_use]
    pub fn merge(mut self, other: Self) -> Self {
        self.hitters.extend(other.hitters);
        sort_hitters(&mut self.hitters);
        self.totals = self.totals.plus(other.totals);
        self
    }
}

/// The heavy hitters of `trie` over an interval of `interval` under `policy` (see the module
/// documentation for the rule).
///
/// # Errors
/// When `interval` is zero.
pub fn heavy_hitters<K: Key>(
    trie: &Trie<K>,
    interval: Duration,
    policy: &VolumeLimits,
) -> Result<Report, HeavyError> {
    let nanos = interval.as_nanos();
    if nanos == 0 {
        return Err(HeavyError::ZeroInterval);
    }
    let family = policy.family::<K>();
    let max = family.lengths.max.min(trie.max_len());
    let mut walk = Walk {
        trie,
        family,
        limit: policy.limit,
        min: family.lengths.min.min(max),
        max,
        nanos,
        secs: interval.as_secs_f64(),
        hitters: Vec::new(),
    };
    if let Some(root) = trie.root() {
        walk.visit(trie.view(root), None);
    }
    let mut hitters = walk.hitters;
    sort_hitters(&mut hitters);
    Ok(Report {
        hitters,
        totals: Totals::of(trie),
    })
}

fn sort_hitters(hitters: &mut [HeavyHitter]) {
    hitters.sort_by(|a, b| {
        (b.bytes, b.packets)
            .cmp(&(a.bytes, a.packets))
            .then(a.prefix.cmp(&b.prefix))
    });
}

/// `key/len` as a [`Prefix`]; `len` never exceeds the key's width here.
fn prefix_of<K: Key>(key: K, len: u8) -> Prefix {
    let addr = key.to_addr();
    Prefix::new(addr, len).unwrap_or_else(|_| Prefix::host(addr))
}

struct Walk<'a, K: Key> {
    trie: &'a Trie<K>,
    family: &'a Family,
    limit: Limit,
    min: u8,
    max: u8,
    nanos: u128,
    secs: f64,
    hitters: Vec<HeavyHitter>,
}

/// A subtree's sums.
struct Subtree<K> {
    /// Any key below, for the subtree's prefix bits.
    key: K,
    total: Volume,
    /// Volume inside reported prefixes or narrower override zones at or below this subtree: not
    /// part of the residual of the prefixes above.
    covered: Volume,
    sources: u32,
}

impl<K: Key> Walk<'_, K> {
    /// Post-order over the tree; recursion depth is bounded by the key width, as every level
    /// branches at a deeper bit.
    fn visit(&mut self, view: View<K>, parent_len: Option<u8>) -> Subtree<K> {
        let (len, below) = match view {
            View::Leaf { key, volume } => (
                self.trie.max_len(),
                Subtree {
                    key,
                    total: volume,
                    covered: Volume::ZERO,
                    sources: 1,
                },
            ),
            View::Node { bit, child } => {
                // Both children are read before either is visited: the two cache misses of a
                // large tree overlap instead of queueing.
                let right = self.trie.view(child[1]);
                let left = self.visit(self.trie.view(child[0]), Some(bit));
                let right = self.visit(right, Some(bit));
                (
                    bit,
                    Subtree {
                        key: left.key,
                        total: left.total.plus(right.total),
                        covered: left.covered.plus(right.covered),
                        sources: left.sources.saturating_add(right.sources),
                    },
                )
            }
        };
        let own = self.family.lookup(below.key, len);
        let zone = own.map(|(zone, _)| zone);
        let candidate = if len <= self.max {
            (len >= self.min).then_some(len)
        } else {
            // Deeper than `max`: the topmost such subtree stands for its `/max`, unless it is in
            // an override zone narrower than that `/max`.
            (parent_len.is_none_or(|above| above < self.max)
                && zone.is_none_or(|zone| zone <= self.max))
            .then_some(self.max)
        };
        let limit = own.map_or(self.limit, |(_, limit)| limit);
        let residual = below.total.minus(below.covered);
        let reported = match candidate {
            Some(candidate) if limit.exceeded_by(residual, self.nanos) => {
                self.report(prefix_of(below.key, candidate), &below, residual);
                true
            }
            _ => false,
        };
        // An override zone that starts below the parent is judged on its own.
        let zone_starts_here = zone.is_some_and(|zone| parent_len.is_none_or(|above| zone > above));
        let covered = if reported || zone_starts_here {
            below.total
        } else {
            below.covered
        };
        Subtree { covered, ..below }
    }

    fn report(&mut self, prefix: Prefix, below: &Subtree<K>, residual: Volume) {
        self.hitters.push(HeavyHitter {
            prefix,
            bytes: below.total.bytes,
            packets: below.total.packets,
            bytes_per_sec: below.total.bytes as f64 / self.secs,
            packets_per_sec: below.total.packets as f64 / self.secs,
            sources: below.sources,
            residual_bytes: residual.bytes,
            residual_packets: residual.packets,
        });
    }
}

/// A prefix's volume, for top lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopEntry {
    pub prefix: Prefix,
    pub bytes: u64,
    pub packets: u64,
    /// Distinct tracked sources inside the prefix.
    pub sources: u32,
}

/// The `n` prefixes of length `len` (at most the tree's longest tracked length) with the most
/// bytes, descending, whether or not they are over any limit. O(sources + groups * log n).
pub fn top<K: Key>(trie: &Trie<K>, len: u8, n: usize) -> Vec<TopEntry> {
    let mut heap = BinaryHeap::with_capacity(n.min(trie.leaves()).saturating_add(1));
    if let (Some(root), true) = (trie.root(), n > 0) {
        top_groups(trie, trie.view(root), len.min(trie.max_len()), n, &mut heap);
    }
    heap.into_sorted_vec()
        .into_iter()
        .map(|Reverse(entry)| entry.into_entry(len.min(trie.max_len())))
        .collect()
}

/// Heap order: smallest bytes on top so it can be dropped; ties keep the lower address.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Ranked<K> {
    bytes: u64,
    packets: u64,
    key: Reverse<K>,
    sources: u32,
}

impl<K: Key> Ranked<K> {
    fn into_entry(self, len: u8) -> TopEntry {
        TopEntry {
            prefix: prefix_of(self.key.0, len),
            bytes: self.bytes,
            packets: self.packets,
            sources: self.sources,
        }
    }
}

fn top_groups<K: Key>(
    trie: &Trie<K>,
    view: View<K>,
    len: u8,
    n: usize,
    heap: &mut BinaryHeap<Reverse<Ranked<K>>>,
) {
    if let View::Node { bit, child } = view
        && bit < len
    {
        let right = trie.view(child[1]);
        top_groups(trie, trie.view(child[0]), len, n, heap);
        top_groups(trie, right, len, n, heap);
        return;
    }
    // The topmost subtree at or below `len` (its parent branches above `len`) holds exactly the
    // sources of one `/len`.
    let (key, volume, sources) = subtree_sum(trie, view);
    let ranked = Ranked {
        bytes: volume.bytes,
        packets: volume.packets,
        key: Reverse(key.truncate(len)),
        sources,
    };
    if heap.len() < n {
        heap.push(Reverse(ranked));
    } else if let Some(mut smallest) = heap.peek_mut()
        && ranked > smallest.0
    {
        *smallest = Reverse(ranked);
    }
}

fn subtree_sum<K: Key>(trie: &Trie<K>, view: View<K>) -> (K, Volume, u32) {
    match view {
        View::Leaf { key, volume } => (key, volume, 1),
        View::Node { child, .. } => {
            let right = trie.view(child[1]);
            let (key, left, left_sources) = subtree_sum(trie, trie.view(child[0]));
            let (_, right, right_sources) = subtree_sum(trie, right);
            (
                key,
                left.plus(right),
                left_sources.saturating_add(right_sources),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::detect::traffic::volume::trie::{Trie4, Trie6};

    const SEC: Duration = Duration::from_secs(1);

    fn v4(text: &str) -> u32 {
        u32::from(text.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn v6(text: &str) -> u128 {
        u128::from(text.parse::<std::net::Ipv6Addr>().unwrap())
    }

    fn policy(limit: Limit) -> VolumeLimits {
        VolumeLimits::new(limit, Lengths::V4, Lengths::V6, &[]).unwrap()
    }

    fn prefixes(report: &Report) -> Vec<String> {
        report
            .hitters
            .iter()
            .map(|h| h.prefix.to_string())
            .collect()
    }

    #[test]
    fn single_hot_host() {
        let mut trie = Trie4::default();
        trie.add(v4("203.0.113.5"), 5_000, 5);
        trie.add(v4("203.0.113.6"), 100, 1);
        trie.add(v4("198.51.100.1"), 100, 1);
        let report =
            heavy_hitters(&trie, Duration::from_secs(10), &policy(Limit::bytes(400))).unwrap();
        assert_eq!(prefixes(&report), ["203.0.113.5/32"]);
        let hit = report.hitters[0];
        assert_eq!((hit.bytes, hit.packets, hit.sources), (5_000, 5, 1));
        assert_eq!((hit.residual_bytes, hit.bytes_per_sec), (5_000, 500.0));
        assert_eq!(
            report.totals,
            Totals {
                bytes: 5_200,
                packets: 7,
                sources: 3,
                overflow_bytes: 0,
                overflow_packets: 0
            }
        );
        // Exactly at the limit is not over (203.0.113.4/30 has 5,100 bytes).
        let report =
            heavy_hitters(&trie, Duration::from_secs(10), &policy(Limit::bytes(510))).unwrap();
        assert!(report.hitters.is_empty());
        assert_eq!(
            heavy_hitters(&trie, Duration::ZERO, &policy(Limit::bytes(1))),
            Err(HeavyError::ZeroInterval)
        );
    }

    #[test]
    fn hot_24_of_cool_hosts() {
        for hosts in [64_u32, 200] {
            let mut trie = Trie4::default();
            // Spread over the whole /24 so the tree branches at bit 24.
            for host in 0..hosts {
                trie.add(v4("198.51.100.0") | (host * 255 / (hosts - 1)), 100, 1);
            }
            trie.add(v4("198.51.101.1"), 100, 1);
            let limit = Limit::bytes(100 * u64::from(hosts) - 1);
            let report = heavy_hitters(&trie, SEC, &policy(limit)).unwrap();
            assert_eq!(prefixes(&report), ["198.51.100.0/24"]);
            assert_eq!(report.hitters[0].sources, hosts);
        }
    }

    #[test]
    fn hot_host_inside_hot_24_both_reported() {
        let mut trie = Trie4::default();
        for host in 1..=200 {
            trie.add(v4("198.51.100.0") | host, 60, 1);
        }
        trie.add(v4("198.51.100.7"), 50_000, 50);
        let report = heavy_hitters(&trie, SEC, &policy(Limit::bytes(10_000))).unwrap();
        assert_eq!(prefixes(&report), ["198.51.100.0/24", "198.51.100.7/32"]);
        let net = report.hitters[0];
        assert_eq!(
            (net.bytes, net.residual_bytes, net.sources),
            (62_000, 11_940, 200)
        );
        // With the /24's own traffic cool, only the host is reported.
        let mut trie = Trie4::default();
        trie.add(v4("198.51.100.1"), 100, 1);
        trie.add(v4("198.51.100.200"), 100, 1);
        trie.add(v4("198.51.100.7"), 50_000, 50);
        let report = heavy_hitters(&trie, SEC, &policy(Limit::bytes(10_000))).unwrap();
        assert_eq!(prefixes(&report), ["198.51.100.7/32"]);
    }

    #[test]
    fn ipv6_64_rotation() {
        let mut rng = StdRng::seed_from_u64(5);
        let net = v6("2001:db8:aa:bb::");
        for max_len in [128, 64] {
            let mut trie = Trie6::new(max_len, 1 << 20).unwrap();
            for _ in 0..1_000 {
                trie.add(net | u128::from(rng.random::<u64>()), 1_000, 1);
            }
            trie.add(v6("2001:db8:1::1"), 1_000, 1);
            // Each /65 half has about half the volume: only the whole /64 is over.
            let report = heavy_hitters(&trie, SEC, &policy(Limit::bytes(999_999))).unwrap();
            assert_eq!(prefixes(&report), ["2001:db8:aa:bb::/64"], "max /{max_len}");
            let expected_sources = if max_len == 64 { 1 } else { 1_000 };
            assert_eq!(report.hitters[0].sources, expected_sources);
        }
    }

    #[test]
    fn min_length_keeps_groups_apart() {
        let mut trie = Trie4::default();
        trie.add(v4("10.1.0.1"), 600, 1);
        trie.add(v4("10.2.0.1"), 600, 1);
        let report = heavy_hitters(&trie, SEC, &policy(Limit::bytes(1_000))).unwrap();
        assert!(report.hitters.is_empty(), "{:?}", prefixes(&report));
        // Allowed down to /8, the pair is reported as their common network.
        let wide = VolumeLimits::new(
            Limit::bytes(1_000),
            Lengths { min: 8, max: 32 },
            Lengths::V6,
            &[],
        )
        .unwrap();
        let report = heavy_hitters(&trie, SEC, &wide).unwrap();
        assert_eq!(prefixes(&report), ["10.0.0.0/14"]);
        // Below a short branch, each /min group is a candidate on its own.
        trie.add(v4("10.2.0.2"), 600, 1);
        let report = heavy_hitters(&trie, SEC, &policy(Limit::bytes(1_000))).unwrap();
        assert_eq!(prefixes(&report), ["10.2.0.0/30"]);
    }

    #[test]
    fn max_length_truncates() {
        let mut trie = Trie4::default();
        trie.add(v4("192.0.2.1"), 600, 1);
        trie.add(v4("192.0.2.77"), 600, 1);
        trie.add(v4("192.0.3.1"), 100, 1);
        let nets = VolumeLimits::new(
            Limit::bytes(1_000),
            Lengths { min: 16, max: 24 },
            Lengths::V6,
            &[],
        )
        .unwrap();
        let report = heavy_hitters(&trie, SEC, &nets).unwrap();
        assert_eq!(prefixes(&report), ["192.0.2.0/24"]);
        assert_eq!(report.hitters[0].sources, 2);
        // A single hot host is reported as its /24 too.
        let mut trie = Trie4::default();
        trie.add(v4("192.0.2.1"), 1_200, 1);
        trie.add(v4("198.51.100.1"), 1_200, 1);
        let report = heavy_hitters(&trie, SEC, &nets).unwrap();
        assert_eq!(prefixes(&report), ["192.0.2.0/24", "198.51.100.0/24"]);
        // Truncating in the tree gives the same answer.
        let mut trie = Trie4::new(24, 100).unwrap();
        trie.add(v4("192.0.2.1"), 600, 1);
        trie.add(v4("192.0.2.77"), 600, 1);
        let report = heavy_hitters(&trie, SEC, &policy(Limit::bytes(1_000))).unwrap();
        assert_eq!(prefixes(&report), ["192.0.2.0/24"]);
    }

    #[test]
    fn overrides_longest_match_and_exempt() {
        let over = |text: &str, limit| Override {
            prefix: text.parse().unwrap(),
            limit,
        };
        let overrides = [
            over("198.51.0.0/16", Limit::bytes(100)),
            over("198.51.100.0/24", Limit::bytes(10_000)),
            Override::exempt("203.0.113.0/24".parse().unwrap()),
        ];
        let policy =
            VolumeLimits::new(Limit::bytes(1_000), Lengths::V4, Lengths::V6, &overrides).unwrap();
        assert_eq!(
            policy.limit_for("198.51.100.9/32".parse().unwrap()),
            Limit::bytes(10_000)
        );
        assert_eq!(
            policy.limit_for("198.51.7.9/32".parse().unwrap()),
            Limit::bytes(100)
        );
        assert_eq!(
            policy.limit_for("192.0.2.1/32".parse().unwrap()),
            Limit::bytes(1_000)
        );
        let mut trie = Trie4::default();
        trie.add(v4("198.51.100.9"), 5_000, 1); // under its /24 override
        trie.add(v4("198.51.7.9"), 500, 1); // over its /16 override
        trie.add(v4("192.0.2.1"), 5_000, 1); // over the default
        trie.add(v4("203.0.113.1"), 900, 1); // exempt, and must not heat 203.0.0.0/16
        trie.add(v4("203.0.113.2"), 900, 1);
        trie.add(v4("203.0.7.1"), 500, 1);
        let report = heavy_hitters(&trie, SEC, &policy).unwrap();
        assert_eq!(prefixes(&report), ["192.0.2.1/32", "198.51.7.9/32"]);
        let duplicate = [overrides[0], overrides[0]];
        assert!(matches!(
            VolumeLimits::new(Limit::bytes(1), Lengths::V4, Lengths::V6, &duplicate),
            Err(LimitsError::DuplicateOverride(_))
        ));
        assert_eq!(
            VolumeLimits::new(Limit::EXEMPT, Lengths::V4, Lengths::V6, &[]).err(),
            Some(LimitsError::NoLimit)
        );
        assert!(
            VolumeLimits::new(
                Limit::bytes(1),
                Lengths { min: 24, max: 16 },
                Lengths::V6,
                &[]
            )
            .is_err()
        );
        assert!(
            VolumeLimits::new(
                Limit::bytes(1),
                Lengths::V4,
                Lengths { min: 0, max: 129 },
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn packets_only_limit() {
        let mut trie = Trie4::default();
        trie.add(v4("192.0.2.1"), 64 * 2_000, 2_000); // small packets flood
        trie.add(v4("192.0.2.200"), 1_500_000, 1_000); // bulk transfer
        let report = heavy_hitters(&trie, SEC, &policy(Limit::packets(1_500))).unwrap();
        assert_eq!(prefixes(&report), ["192.0.2.1/32"]);
        let both = Limit {
            bytes_per_sec: Some(1_000_000),
            packets_per_sec: Some(1_500),
        };
        let report = heavy_hitters(&trie, SEC, &policy(both)).unwrap();
        assert_eq!(prefixes(&report), ["192.0.2.200/32", "192.0.2.1/32"]);
    }

    #[test]
    fn overflow_is_in_the_totals() {
        let mut trie = Trie4::new(32, 2).unwrap();
        for host in 1..=4 {
            trie.add(host, 10, 1);
        }
        let report = heavy_hitters(&trie, SEC, &policy(Limit::bytes(1_000))).unwrap();
        assert_eq!(
            report.totals,
            Totals {
                bytes: 40,
                packets: 4,
                sources: 2,
                overflow_bytes: 20,
                overflow_packets: 2
            }
        );
    }

    #[test]
    fn top_lists() {
        let mut trie = Trie4::default();
        for host in 1..=10 {
            trie.add(v4("198.51.100.0") | host, 100, 1);
        }
        trie.add(v4("192.0.2.1"), 700, 7);
        trie.add(v4("203.0.113.9"), 300, 3);
        let hosts: Vec<_> = top(&trie, 32, 2)
            .iter()
            .map(|e| (e.prefix.to_string(), e.bytes))
            .collect();
        assert_eq!(
            hosts,
            [
                ("192.0.2.1/32".to_owned(), 700),
                ("203.0.113.9/32".to_owned(), 300)
            ]
        );
        let nets = top(&trie, 24, 10);
        let nets: Vec<_> = nets
            .iter()
            .map(|e| (e.prefix.to_string(), e.bytes, e.sources))
            .collect();
        assert_eq!(
            nets,
            [
                ("198.51.100.0/24".to_owned(), 1_000, 10),
                ("192.0.2.0/24".to_owned(), 700, 1),
                ("203.0.113.0/24".to_owned(), 300, 1)
            ]
        );
        assert!(top(&trie, 24, 0).is_empty());
        assert!(top(&Trie4::default(), 24, 5).is_empty());
        assert_eq!(top(&trie, 0, 5)[0].bytes, 2_000);
    }

    /// The rule restated over explicit prefix sets, for comparison with the tree walk: every
    /// prefix with traffic, longest first; a prefix is a node when the sources below it differ
    /// at its next bit (or it is a tracked source), a candidate when it is a node or exactly
    /// `/max` and its length is in range.
    fn naive<K: Key>(
        keys: &BTreeMap<K, Volume>,
        tracked: u8,
        policy: &VolumeLimits,
        nanos: u128,
    ) -> Vec<(Prefix, Volume, Volume, u32)> {
        let family = policy.family::<K>();
        let max = family.lengths.max.min(tracked);
        let min = family.lengths.min.min(max);
        let mut covered: BTreeSet<K> = BTreeSet::new();
        let mut out = Vec::new();
        for len in (0..=tracked).rev() {
            let level: BTreeSet<K> = keys.keys().map(|key| key.truncate(len)).collect();
            for net in level {
                let under: Vec<(K, Volume)> = keys
                    .range(net..)
                    .take_while(|(key, _)| key.truncate(len) == net)
                    .map(|(&key, &volume)| (key, volume))
                    .collect();
                let (first, last) = (under[0].0, under[under.len() - 1].0);
                let node = len == tracked || first.common_len(last) == len;
                let candidate = (min..=max).contains(&len) && (node || len == max);
                if !candidate {
                    continue;
                }
                let sum = |filter: &dyn Fn(&K) -> bool| {
                    under
                        .iter()
                        .filter(|(key, _)| filter(key))
                        .fold(Volume::ZERO, |sum, (_, volume)| sum.plus(*volume))
                };
                let volume = sum(&|_| true);
                // Sources already in a reported prefix, or in an override zone narrower than
                // this prefix, do not count.
                let residual = sum(&|key| {
                    !covered.contains(key)
                        && family
                            .lookup(*key, tracked)
                            .is_none_or(|(zone, _)| zone <= len)
                });
                let limit = family
                    .lookup(net, len)
                    .map_or(policy.limit, |(_, limit)| limit);
                if candidate && limit.exceeded_by(residual, nanos) {
                    let sources = u32::try_from(under.len()).unwrap();
                    out.push((prefix_of(net, len), volume, residual, sources));
                    covered.extend(under.iter().map(|(key, _)| *key));
                }
            }
        }
        out.sort();
        out
    }

    fn compare<K: Key>(
        keys: &[(K, u64, u64)],
        tracked: u8,
        policy: &VolumeLimits,
        interval: Duration,
        round: usize,
    ) -> usize {
        let mut trie = Trie::<K>::new(tracked, 1 << 20).unwrap();
        let mut map = BTreeMap::new();
        for &(key, bytes, packets) in keys {
            trie.add(key, bytes, packets);
            let entry = map.entry(key.truncate(tracked)).or_insert(Volume::ZERO);
            *entry = entry.plus(Volume::new(bytes, packets));
        }
        let report = heavy_hitters(&trie, interval, policy).unwrap();
        let mut got: Vec<_> = report
            .hitters
            .iter()
            .map(|h| {
                let volume = Volume::new(h.bytes, h.packets);
                let residual = Volume::new(h.residual_bytes, h.residual_packets);
                (h.prefix, volume, residual, h.sources)
            })
            .collect();
        got.sort();
        let expected = naive(&map, tracked, policy, interval.as_nanos());
        assert_eq!(got, expected, "round {round}: {policy:?}");
        // Top lists against a plain group-by.
        let len = tracked.saturating_sub(u8::try_from(round % 9).unwrap());
        let mut groups: BTreeMap<K, (Volume, u32)> = BTreeMap::new();
        for (&key, &volume) in &map {
            let entry = groups.entry(key.truncate(len)).or_insert((Volume::ZERO, 0));
            *entry = (entry.0.plus(volume), entry.1 + 1);
        }
        let mut expected: Vec<_> = groups
            .into_iter()
            .map(|(key, (volume, sources))| {
                (Reverse(volume.bytes), Reverse(volume.packets), key, sources)
            })
            .collect();
        expected.sort();
        expected.truncate(5);
        let expected: Vec<_> = expected
            .into_iter()
            .map(
                |(Reverse(bytes), Reverse(packets), key, sources)| TopEntry {
                    prefix: prefix_of(key, len),
                    bytes,
                    packets,
                    sources,
                },
            )
            .collect();
        assert_eq!(top(&trie, len, 5), expected, "round {round}: top /{len}");
        got.len()
    }

    fn random_policy<K: Key>(
        rng: &mut StdRng,
        keys: &[(K, u64, u64)],
        tracked: u8,
    ) -> VolumeLimits {
        let bits = K::BITS;
        let min = rng.random_range(0..=tracked);
        let lengths = Lengths {
            min,
            max: rng.random_range(min..=bits),
        };
        let rate =
            |rng: &mut StdRng, scale: u64| rng.random_bool(0.7).then(|| rng.random_range(0..scale));
        let limit = loop {
            let limit = Limit {
                bytes_per_sec: rate(rng, 40_000),
                packets_per_sec: rate(rng, 40),
            };
            if !limit.is_exempt() {
                break limit;
            }
        };
        let mut overrides = Vec::new();
        for _ in 0..rng.random_range(0..4) {
            let key = keys[rng.random_range(0..keys.len())].0;
            let prefix = prefix_of(key, rng.random_range(0..=bits));
            if overrides.iter().all(|o: &Override| o.prefix != prefix) {
                let limit = Limit {
                    bytes_per_sec: rate(rng, 40_000),
                    packets_per_sec: rate(rng, 40),
                };
                overrides.push(Override { prefix, limit });
            }
        }
        let (v4, v6) = if bits == 32 {
            (lengths, Lengths::V6)
        } else {
            (Lengths::V4, lengths)
        };
        VolumeLimits::new(limit, v4, v6, &overrides).unwrap()
    }

    #[test]
    fn tree_walk_matches_naive_rule() {
        let mut rng = StdRng::seed_from_u64(2024);
        let mut reported = Vec::new();
        for round in 0..300 {
            // Clustered sources: a few networks, a few subnets each, random hosts.
            let nets: Vec<u32> = (0..3).map(|_| rng.random()).collect();
            let v4: Vec<(u32, u64, u64)> = (0..rng.random_range(1..120))
                .map(|_| {
                    let net = nets[rng.random_range(0..nets.len())];
                    let cut = rng.random_range(8..32);
                    let key = net.truncate(cut) | (rng.random::<u32>() >> cut) & 0x0f0f;
                    (key, rng.random_range(0..20_000), rng.random_range(0..20))
                })
                .collect();
            let tracked = [32, 32, 28, 24][round % 4];
            let policy = random_policy(&mut rng, &v4, tracked);
            let interval = Duration::from_millis(rng.random_range(500..3_000));
            reported.push(compare(&v4, tracked, &policy, interval, round));

            let nets: Vec<u128> = (0..3).map(|_| rng.random()).collect();
            let v6: Vec<(u128, u64, u64)> = (0..rng.random_range(1..120))
                .map(|_| {
                    let net = nets[rng.random_range(0..nets.len())];
                    let cut = rng.random_range(16..128);
                    let key = net.truncate(cut)
                        | (rng.random::<u128>() >> cut) & 0x00ff_0000_0000_0000_00ff;
                    (key, rng.random_range(0..20_000), rng.random_range(0..20))
                })
                .collect();
            let tracked = [128, 128, 64, 56][round % 4];
            let policy = random_policy(&mut rng, &v6, tracked);
            reported.push(compare(&v6, tracked, &policy, interval, round));
        }
        // The random limits must give both empty and busy reports.
        let empty = reported.iter().filter(|&&count| count == 0).count();
        let busy = reported.iter().filter(|&&count| count >= 3).count();
        eprintln!(
            "{empty} empty, {busy} with 3 or more, of {}",
            reported.len()
        );
        assert!(empty >= 30 && busy >= 100, "{empty} empty, {busy} busy");
    }
}
