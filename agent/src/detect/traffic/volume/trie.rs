//! Per-source volume counters for one interval: a crit-bit (PATRICIA) tree per address family.
//!
//! Leaves hold a source key (truncated to the family's longest tracked prefix) and its counters;
//! internal nodes hold only the first bit where their two subtrees differ and two child indices.
//! Both live in `Vec` arenas indexed by `u32`, so a tree of `n` sources has exactly `n` leaves
//! and `n - 1` internal nodes and no per-node allocation. Aggregates for shorter prefixes are
//! computed by the report pass ([`super::heavy`]), not stored.
use std::{
    collections::TryReserveError,
    fmt::Debug,
    hash::Hash,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Default bound on distinct sources per family and interval.
pub const DEFAULT_MAX_LEAVES: usize = 1 << 20;
/// Largest bound [`Trie::new`] accepts: child references spend one bit on "is a leaf".
pub const MAX_LEAVES_LIMIT: usize = (LEAF as usize) - 1;

/// Set in a child reference when it points into the leaf arena.
const LEAF: u32 = 1 << 31;
/// Direct-mapped cache of recently used leaves: fixed size, not per source.
const CACHE_BITS: u32 = 16;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;
/// Smallest growth step and the capacity `clear` never shrinks below.
const MIN_GROW: usize = 64;
const MIN_KEEP: usize = 1024;

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u128 {}
}

/// An address family's key: the address as an unsigned integer, most significant bit first.
/// Implemented for `u32` (IPv4) and `u128` (IPv6) only.
pub trait Key: sealed::Sealed + Copy + Eq + Ord + Hash + Debug + Send + Sync + 'static {
    /// Address width in bits.
    const BITS: u8;
    /// Bit `pos` counted from the most significant (0), as 0 or 1.
    fn bit(self, pos: u8) -> usize;
    /// The key with every bit from position `len` on cleared.
    #[must_use]
    fn truncate(self, len: u8) -> Self;
    /// How many leading bits `self` and `other` share (`BITS` when equal).
    fn common_len(self, other: Self) -> u8;
    /// The key as an IPv6-width integer, for tables shared by both families.
    fn widen(self) -> u128;
    /// The key as an address.
    fn to_addr(self) -> IpAddr;
    /// Slot in the leaf cache.
    fn cache_slot(self) -> usize;
}

impl Key for u32 {
    const BITS: u8 = 32;

    fn bit(self, pos: u8) -> usize {
        // Rotating brings bit `pos` to the bottom and cannot overflow for any `pos`.
        usize::from(self.rotate_left(Self::from(pos) + 1) & 1 == 1)
    }

    fn truncate(self, len: u8) -> Self {
        self & Self::MAX
            .checked_shl(32_u32.saturating_sub(Self::from(len)))
            .unwrap_or(0)
    }

    fn common_len(self, other: Self) -> u8 {
        u8::try_from((self ^ other).leading_zeros()).unwrap_or(<Self as Key>::BITS)
    }

    fn widen(self) -> u128 {
        u128::from(self)
    }

    fn to_addr(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }

    fn cache_slot(self) -> usize {
        let hash = self.wrapping_mul(0x9E37_79B9) >> (32 - CACHE_BITS);
        usize::try_from(hash).unwrap_or(0)
    }
}

impl Key for u128 {
    const BITS: u8 = 128;

    fn bit(self, pos: u8) -> usize {
        usize::from(self.rotate_left(u32::from(pos) + 1) & 1 == 1)
    }

    fn truncate(self, len: u8) -> Self {
        self & Self::MAX
            .checked_shl(128_u32.saturating_sub(u32::from(len)))
            .unwrap_or(0)
    }

    fn common_len(self, other: Self) -> u8 {
        u8::try_from((self ^ other).leading_zeros()).unwrap_or(<Self as Key>::BITS)
    }

    fn widen(self) -> u128 {
        self
    }

    fn to_addr(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }

    #[expect(
        clippy::cast_possible_truncation,
        reason = "folds the two halves into one word on purpose"
    )]
    fn cache_slot(self) -> usize {
        let folded = (self as u64) ^ ((self >> 64) as u64);
        let hash = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_BITS);
        usize::try_from(hash).unwrap_or(0)
    }
}

/// Bytes and packets, added with saturation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Volume {
    pub bytes: u64,
    pub packets: u64,
}

impl Volume {
    pub const ZERO: Self = Self {
        bytes: 0,
        packets: 0,
    };

    pub const fn new(bytes: u64, packets: u64) -> Self {
        Self { bytes, packets }
    }

    /// `self + other`, each counter saturating.
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            bytes: self.bytes.saturating_add(other.bytes),
            packets: self.packets.saturating_add(other.packets),
        }
    }

    /// `self - other`, each counter stopping at zero.
    #[must_use]
    pub const fn minus(self, other: Self) -> Self {
        Self {
            bytes: self.bytes.saturating_sub(other.bytes),
            packets: self.packets.saturating_sub(other.packets),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Leaf<K> {
    key: K,
    volume: Volume,
}

/// An internal node: the keys below share their first `bit` bits and differ at bit `bit`.
#[derive(Clone, Copy, Debug)]
struct Node {
    child: [u32; 2],
    bit: u8,
}

/// What a child reference points at, for the report pass.
#[derive(Clone, Copy, Debug)]
pub(super) enum View<K> {
    Leaf { key: K, volume: Volume },
    Node { bit: u8, child: [u32; 2] },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrieError {
    #[error("longest tracked prefix /{len} is longer than the address ({bits} bits)")]
    MaxLen { len: u8, bits: u8 },
    #[error("bound of {requested} distinct sources is over the limit of {MAX_LEAVES_LIMIT}")]
    MaxLeaves { requested: usize },
}

/// One address family's per-source volumes for one interval.
#[derive(Clone, Debug)]
pub struct Trie<K: Key> {
    leaves: Vec<Leaf<K>>,
    nodes: Vec<Node>,
    root: Option<u32>,
    /// Leaf index per hash slot; checked against the leaf's key, so stale entries are harmless.
    cache: Box<[u32]>,
    max_len: u8,
    max_leaves: usize,
    total: Volume,
    overflow: Volume,
}

/// IPv4 volumes.
pub type Trie4 = Trie<u32>;
/// IPv6 volumes.
pub type Trie6 = Trie<u128>;

impl<K: Key> Default for Trie<K> {
    fn default() -> Self {
        Self::build(K::BITS, DEFAULT_MAX_LEAVES)
    }
}

impl<K: Key> Trie<K> {
    /// An empty tree that tracks sources at most `max_len` bits long (longer keys are truncated,
    /// so every address of a `/max_len` shares one counter) and at most `max_leaves` of them.
    ///
    /// # Errors
    /// When `max_len` is longer than the address or `max_leaves` is over [`MAX_LEAVES_LIMIT`].
    pub fn new(max_len: u8, max_leaves: usize) -> Result<Self, TrieError> {
        if max_len > K::BITS {
            return Err(TrieError::MaxLen {
                len: max_len,
                bits: K::BITS,
            });
        }
        if max_leaves > MAX_LEAVES_LIMIT {
            return Err(TrieError::MaxLeaves {
                requested: max_leaves,
            });
        }
        Ok(Self::build(max_len, max_leaves))
    }

    fn build(max_len: u8, max_leaves: usize) -> Self {
        Self {
            leaves: Vec::new(),
            nodes: Vec::new(),
            root: None,
            cache: vec![u32::MAX; CACHE_SLOTS].into_boxed_slice(),
            max_len,
            max_leaves,
            total: Volume::ZERO,
            overflow: Volume::ZERO,
        }
    }

    /// Add `bytes` and `packets` to the source `key` (truncated to [`Self::max_len`]). A new
    /// source beyond the bound goes to [`Self::overflow`] instead.
    pub fn add(&mut self, key: K, bytes: u64, packets: u64) {
        let key = key.truncate(self.max_len);
        let volume = Volume::new(bytes, packets);
        let slot = key.cache_slot();
        // Repeated sources (flow records, several counters per host) skip the walk.
        if let Some(leaf) = self
            .cache
            .get(slot)
            .and_then(|&index| self.leaves.get_mut(index as usize))
            && leaf.key == key
        {
            leaf.volume = leaf.volume.plus(volume);
            self.total = self.total.plus(volume);
            return;
        }
        let Some(root) = self.root else {
            match self.push_leaf(key, volume) {
                Some(index) => {
                    self.root = Some(index | LEAF);
                    self.remember(slot, index);
                    self.total = self.total.plus(volume);
                }
                None => self.overflow = self.overflow.plus(volume),
            }
            return;
        };
        let nearest = self.nearest_leaf(root, key);
        let nearest_key = self.leaves[nearest as usize].key;
        if nearest_key == key {
            let leaf = &mut self.leaves[nearest as usize];
            leaf.volume = leaf.volume.plus(volume);
            self.remember(slot, nearest);
            self.total = self.total.plus(volume);
            return;
        }
        // Both arenas grow before either changes, so a failure leaves the tree intact.
        let Some(node) = self.reserve_node() else {
            self.overflow = self.overflow.plus(volume);
            return;
        };
        let Some(leaf) = self.push_leaf(key, volume) else {
            self.overflow = self.overflow.plus(volume);
            return;
        };
        let crit = key.common_len(nearest_key);
        // Split the edge above the first node that branches deeper than `crit`. No node on the
        // path branches exactly at `crit`: the walk followed `key`'s bits to `nearest`.
        let mut parent = None;
        let mut at = root;
        while at & LEAF == 0 {
            let current = self.nodes[at as usize];
            if current.bit > crit {
                break;
            }
            let side = key.bit(current.bit);
            parent = Some((at, side));
            at = current.child[side];
        }
        let mut child = [at; 2];
        child[key.bit(crit)] = leaf | LEAF;
        self.nodes.push(Node { child, bit: crit });
        match parent {
            None => self.root = Some(node),
            Some((above, side)) => self.nodes[above as usize].child[side] = node,
        }
        self.remember(slot, leaf);
        self.total = self.total.plus(volume);
    }

    /// The counters of `key` (truncated to [`Self::max_len`]), if it was seen.
    pub fn get(&self, key: K) -> Option<Volume> {
        let key = key.truncate(self.max_len);
        let leaf = &self.leaves[self.nearest_leaf(self.root?, key) as usize];
        (leaf.key == key).then_some(leaf.volume)
    }

    /// Every tracked source and its counters, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (K, Volume)> + '_ {
        self.leaves.iter().map(|leaf| (leaf.key, leaf.volume))
    }

    /// Forget this interval's sources. Capacity is kept for the next interval unless it is far
    /// more than this interval needed, so one burst does not pin its memory for good.
    pub fn clear(&mut self) {
        let used = self.leaves.len();
        shrink_if_oversized(&mut self.leaves, used);
        shrink_if_oversized(&mut self.nodes, used.saturating_sub(1));
        self.leaves.clear();
        self.nodes.clear();
        self.root = None;
        self.total = Volume::ZERO;
        self.overflow = Volume::ZERO;
    }

    /// Longest tracked prefix length: keys are truncated to it.
    pub const fn max_len(&self) -> u8 {
        self.max_len
    }

    /// Bound on distinct sources.
    pub const fn max_leaves(&self) -> usize {
        self.max_leaves
    }

    /// Distinct sources tracked (after truncation).
    pub fn leaves(&self) -> usize {
        self.leaves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Volume of the tracked sources.
    pub const fn total(&self) -> Volume {
        self.total
    }

    /// Volume of new sources that arrived after the bound was reached (or memory ran out).
    pub const fn overflow(&self) -> Volume {
        self.overflow
    }

    /// Heap held: both arenas' capacity and the fixed leaf cache.
    pub fn heap_bytes(&self) -> usize {
        self.leaves.capacity() * size_of::<Leaf<K>>()
            + self.nodes.capacity() * size_of::<Node>()
            + self.cache.len() * size_of::<u32>()
    }

    /// The root reference, if any source was added.
    pub(super) const fn root(&self) -> Option<u32> {
        self.root
    }

    /// What reference `at` (from [`Self::root`] or a node's children) points at.
    pub(super) fn view(&self, at: u32) -> View<K> {
        if at & LEAF == 0 {
            let node = self.nodes[at as usize];
            View::Node {
                bit: node.bit,
                child: node.child,
            }
        } else {
            let leaf = self.leaves[(at & !LEAF) as usize];
            View::Leaf {
                key: leaf.key,
                volume: leaf.volume,
            }
        }
    }

    /// Index of the leaf reached by following `key`'s bits from `at`.
    fn nearest_leaf(&self, mut at: u32, key: K) -> u32 {
        while at & LEAF == 0 {
            let node = self.nodes[at as usize];
            at = node.child[key.bit(node.bit)];
        }
        at & !LEAF
    }

    fn remember(&mut self, slot: usize, leaf: u32) {
        if let Some(entry) = self.cache.get_mut(slot) {
            *entry = leaf;
        }
    }

    /// Append a leaf; `None` at the bound or when memory runs out.
    fn push_leaf(&mut self, key: K, volume: Volume) -> Option<u32> {
        if self.leaves.len() >= self.max_leaves {
            return None;
        }
        let index = u32::try_from(self.leaves.len()).ok()?;
        grow_for_one(&mut self.leaves).ok()?;
        self.leaves.push(Leaf { key, volume });
        Some(index)
    }

    /// Room for one more internal node; its index, or `None` at the bound or out of memory.
    fn reserve_node(&mut self) -> Option<u32> {
        if self.leaves.len() >= self.max_leaves {
            return None;
        }
        let index = u32::try_from(self.nodes.len()).ok()?;
        grow_for_one(&mut self.nodes).ok()?;
        Some(index)
    }
}

/// Make room for one push, growing by a quarter rather than doubling: spare capacity then stays
/// under a fifth of the arena, which is what keeps a source under 64 bytes.
fn grow_for_one<T>(arena: &mut Vec<T>) -> Result<(), TryReserveError> {
    if arena.len() < arena.capacity() {
        return Ok(());
    }
    arena.try_reserve_exact((arena.len() / 4).max(MIN_GROW))
}

fn shrink_if_oversized<T>(arena: &mut Vec<T>, used: usize) {
    if arena.capacity() > used.max(MIN_KEEP).saturating_mul(4) {
        arena.shrink_to((used + used / 4).max(MIN_KEEP));
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// Every path's crit bits grow, each node's keys share its prefix and differ at its bit,
    /// and there is one internal node fewer than leaves.
    fn check<K: Key>(trie: &Trie<K>) {
        fn walk<K: Key>(trie: &Trie<K>, at: u32, above: Option<u8>) -> (K, usize) {
            match trie.view(at) {
                View::Leaf { key, .. } => {
                    assert_eq!(key, key.truncate(trie.max_len()));
                    (key, 1)
                }
                View::Node { bit, child } => {
                    assert!(bit < trie.max_len());
                    assert!(above.is_none_or(|above| above < bit));
                    let (left, left_count) = walk(trie, child[0], Some(bit));
                    let (right, right_count) = walk(trie, child[1], Some(bit));
                    assert_eq!(left.common_len(right), bit);
                    assert_eq!((left.bit(bit), right.bit(bit)), (0, 1));
                    (left, left_count + right_count)
                }
            }
        }
        match trie.root() {
            None => assert_eq!(trie.leaves(), 0),
            Some(root) => assert_eq!(walk(trie, root, None).1, trie.leaves()),
        }
        assert_eq!(trie.nodes.len() + 1, trie.leaves().max(1));
    }

    #[test]
    fn key_bits() {
        let key = 0x8000_0001_u32;
        assert_eq!((key.bit(0), key.bit(1), key.bit(31)), (1, 0, 1));
        assert_eq!(key.truncate(0), 0);
        assert_eq!(key.truncate(1), 0x8000_0000);
        assert_eq!(key.truncate(32), key);
        assert_eq!(key.common_len(key), 32);
        assert_eq!(key.common_len(0x8000_0000), 31);
        let wide = 1_u128 << 127 | 1;
        assert_eq!((wide.bit(0), wide.bit(64), wide.bit(127)), (1, 0, 1));
        assert_eq!(wide.truncate(64), 1 << 127);
        assert_eq!(wide.common_len(1), 0);
        assert!(0xffff_ffff_u32.cache_slot() < CACHE_SLOTS);
        assert!(u128::MAX.cache_slot() < CACHE_SLOTS);
    }

    #[test]
    fn adds_sum_per_source_and_saturate() {
        let mut trie = Trie4::default();
        assert_eq!(trie.get(1), None);
        trie.add(0x0a00_0001, 100, 1);
        trie.add(0x0a00_0002, 50, 1);
        trie.add(0x0a00_0001, 100, 1);
        trie.add(0xc000_0201, u64::MAX, 1);
        trie.add(0xc000_0201, 1, 1);
        assert_eq!(trie.get(0x0a00_0001), Some(Volume::new(200, 2)));
        assert_eq!(trie.get(0x0a00_0002), Some(Volume::new(50, 1)));
        assert_eq!(trie.get(0xc000_0201), Some(Volume::new(u64::MAX, 2)));
        assert_eq!(trie.get(0x0a00_0003), None);
        assert_eq!(trie.leaves(), 3);
        assert_eq!(trie.total(), Volume::new(u64::MAX, 5));
        check(&trie);
    }

    #[test]
    fn keys_are_truncated_to_max_len() {
        let mut trie = Trie6::new(64, 16).unwrap();
        let net = 0x2001_0db8_0000_0001_u128 << 64;
        trie.add(net | 1, 10, 1);
        trie.add(net | 0xdead_beef, 10, 1);
        assert_eq!(trie.leaves(), 1);
        assert_eq!(trie.get(net | 77), Some(Volume::new(20, 2)));
        assert!(Trie4::new(33, 1).is_err());
        assert!(Trie4::new(0, MAX_LEAVES_LIMIT + 1).is_err());
        // Length 0: every address is one source.
        let mut all = Trie4::new(0, 4).unwrap();
        all.add(1, 1, 1);
        all.add(u32::MAX, 1, 1);
        assert_eq!((all.leaves(), all.get(7)), (1, Some(Volume::new(2, 2))));
    }

    #[test]
    fn sources_beyond_the_bound_go_to_overflow() {
        let mut trie = Trie4::new(32, 3).unwrap();
        for key in 1..=5 {
            trie.add(key, 10, 1);
        }
        // Known sources still count after the bound is reached.
        trie.add(2, 5, 1);
        assert_eq!(trie.leaves(), 3);
        assert_eq!(trie.overflow(), Volume::new(20, 2));
        assert_eq!(trie.total(), Volume::new(35, 4));
        assert_eq!(trie.get(4), None);
        check(&trie);
        let mut none = Trie4::new(32, 0).unwrap();
        none.add(1, 1, 1);
        assert_eq!((none.leaves(), none.overflow()), (0, Volume::new(1, 1)));
    }

    #[test]
    fn clear_keeps_capacity_but_releases_a_burst() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut trie = Trie4::default();
        for _ in 0..10_000 {
            trie.add(rng.random(), 1, 1);
        }
        let held = trie.heap_bytes();
        trie.clear();
        assert_eq!(
            (trie.leaves(), trie.total(), trie.root()),
            (0, Volume::ZERO, None)
        );
        assert_eq!(
            trie.heap_bytes(),
            held,
            "a similar interval keeps its memory"
        );
        // Stale cache entries must not match new sources.
        for key in 0..9_000 {
            trie.add(key, 2, 1);
        }
        assert_eq!(trie.get(5), Some(Volume::new(2, 1)));
        check(&trie);
        assert_eq!(
            trie.heap_bytes(),
            held,
            "no reallocation for a smaller interval"
        );
        trie.clear();
        trie.add(1, 1, 1);
        trie.clear();
        // The leaf cache is fixed; the arenas are what a burst grows.
        let cache = CACHE_SLOTS * size_of::<u32>();
        assert!(
            trie.heap_bytes() - cache < (held - cache) / 4,
            "a burst is released"
        );
    }

    #[test]
    fn random_inserts_match_a_map() {
        let mut rng = StdRng::seed_from_u64(1);
        for max_len in [0, 8, 24, 32] {
            let mut trie = Trie4::new(max_len, 100_000).unwrap();
            let mut map = std::collections::HashMap::new();
            for _ in 0..5_000 {
                // Clustered keys exercise shared prefixes and the cache.
                let key = rng.random_range(0..64_u32) << 26 | rng.random_range(0..300_u32);
                let bytes = rng.random_range(0..2_000);
                trie.add(key, bytes, 1);
                let entry = map.entry(key.truncate(max_len)).or_insert(Volume::ZERO);
                *entry = entry.plus(Volume::new(bytes, 1));
            }
            check(&trie);
            assert_eq!(trie.leaves(), map.len());
            for (key, volume) in trie.iter() {
                assert_eq!(map.get(&key), Some(&volume));
            }
        }
    }

    fn bytes_per_leaf<K: Key>(keys: impl Iterator<Item = K>) -> f64 {
        let mut trie = Trie::<K>::default();
        for key in keys {
            trie.add(key, 1500, 1);
        }
        check(&trie);
        trie.heap_bytes() as f64 / trie.leaves() as f64
    }

    #[test]
    fn under_64_bytes_per_source() {
        let mut rng = StdRng::seed_from_u64(3);
        let v4 = bytes_per_leaf((0..100_000).map(|_| rng.random::<u32>()));
        let v6 = bytes_per_leaf((0..100_000).map(|_| rng.random::<u128>()));
        assert!(v4 <= 64.0, "IPv4: {v4} bytes per source");
        assert!(v6 <= 64.0, "IPv6: {v6} bytes per source");
    }
}
