//! Types shared by the XDP program (`xdpguard-ebpf`) and the agent (`xdpguard`).
//!
//! Every map key and value here is `#[repr(C)]`, has no padding (asserted at compile time,
//! because the kernel compares keys byte for byte and padding bytes would be garbage), and is
//! only ever built from plain integers and byte arrays.
#![no_std]

/// Names of the maps in the XDP object. The agent finds maps by these names.
pub mod map_names {
    /// LPM trie, IPv4 allowlist: `LpmKey<[u8; 4]>` → [`AllowEntry`](crate::AllowEntry).
    pub const ALLOW_V4: &str = "ALLOW_V4";
    /// LPM trie, IPv6 allowlist: `LpmKey<[u8; 16]>` → [`AllowEntry`](crate::AllowEntry).
    pub const ALLOW_V6: &str = "ALLOW_V6";
    /// Hash, exact IPv4 hosts: `[u8; 4]` → [`BlockEntry`](crate::BlockEntry).
    pub const BLOCK_HOST_V4: &str = "BLOCK_HOST_V4";
    /// Hash, exact IPv6 hosts: `[u8; 16]` → [`BlockEntry`](crate::BlockEntry).
    pub const BLOCK_HOST_V6: &str = "BLOCK_HOST_V6";
    /// Hash, IPv4 prefixes shorter than /32 by exact network and length:
    /// [`PrefixKeyV4`](crate::PrefixKeyV4) → [`BlockEntry`](crate::BlockEntry). The program
    /// probes it only at the lengths [`prefix_lengths`](crate::prefix_lengths) says are in use.
    pub const BLOCK_PREFIX_V4: &str = "BLOCK_PREFIX_V4";
    /// Hash, IPv6 prefixes shorter than /128: [`PrefixKeyV6`](crate::PrefixKeyV6) →
    /// [`BlockEntry`](crate::BlockEntry).
    pub const BLOCK_PREFIX_V6: &str = "BLOCK_PREFIX_V6";
    /// Per-CPU array indexed by `slot * STAT_COUNT + Stat` → [`StatValue`](crate::StatValue),
    /// one block of counters per interface slot (see [`IFACE_SLOT`]).
    pub const STATS: &str = "STATS";
    /// Array indexed by ifindex → interface slot (1..[`MAX_INTERFACES`](crate::MAX_INTERFACES));
    /// 0, and any ifindex past the end, count in slot 0.
    pub const IFACE_SLOT: &str = "IFACE_SLOT";
    /// Array with one [`DataplaneConfig`](crate::DataplaneConfig) at index 0.
    pub const CONFIG: &str = "CONFIG";
    /// LRU hash, volume per IPv4 source (IPv4-mapped IPv6 included) since the agent
    /// last drained it: `[u8; 4]` → [`SourceVolume`](crate::SourceVolume).
    pub const VOLUME_V4: &str = "VOLUME_V4";
    /// LRU hash, volume per IPv6 source /64 (the key's low 8 bytes are zero: an
    /// attacker rotating through its /64 is one entry): `[u8; 16]` → [`SourceVolume`](crate::SourceVolume).
    pub const VOLUME_V6: &str = "VOLUME_V6";

    /// Array of `u64` words, the summary bitmaps in front of the block lists (layout in
    /// [`summary`](crate::summary)).
    pub const SUMMARY: &str = "SUMMARY";

    /// Array of 2 `u32` (IPv4, IPv6): while the volume maps overflow, a new source is
    /// counted with probability 2^-n and weight 2^n (see [`volume_sample`](crate::volume_sample)).
    pub const VOLUME_SAMPLE: &str = "VOLUME_SAMPLE";

    /// Array indexed by IPv4 /16 → `u32` mask of the prefix lengths (16..=31) listed inside
    /// it (see [`prefix_lengths`](crate::prefix_lengths)).
    pub const REGION_V4: &str = "REGION_V4";
    /// Hash, IPv6 /32 (first big-endian word) → [`LengthMask`](crate::LengthMask) of the
    /// prefix lengths (32..=127) listed inside it.
    pub const REGION_V6: &str = "REGION_V6";
    /// Array of 2 [`LengthMask`](crate::LengthMask) (IPv4, IPv6): the lengths of the prefixes
    /// wider than a region (IPv4 shorter than /16, IPv6 shorter than /32).
    pub const WIDE_LENGTHS: &str = "WIDE_LENGTHS";

    /// Every map of the program.
    pub const ALL: [&str; 16] = [
        ALLOW_V4,
        ALLOW_V6,
        BLOCK_HOST_V4,
        BLOCK_HOST_V6,
        BLOCK_PREFIX_V4,
        BLOCK_PREFIX_V6,
        STATS,
        IFACE_SLOT,
        CONFIG,
        VOLUME_V4,
        VOLUME_V6,
        SUMMARY,
        VOLUME_SAMPLE,
        REGION_V4,
        REGION_V6,
        WIDE_LENGTHS,
    ];
}

/// Which prefix lengths a source's longest-match lookup has to probe. The prefix lists are
/// hashes keyed by exact network and length, so a lookup is one probe per length in use where
/// the source is, longest first, stopping at the first live entry: cheaper than an LPM-trie walk
/// (a dozen dependent cache misses at a million entries) when, as in real lists, a region holds
/// entries of one or two lengths.
///
/// - IPv4: `REGION_V4[addr >> 16]` holds length L (16..=31, bit
///   [`v4_length_bit`](crate::v4_length_bit)) while a prefix of length L is listed inside
///   that /16; lengths 0..=15 are in `WIDE_LENGTHS[0].longer`.
/// - IPv6: `REGION_V6[first word]` holds length L (32..=127, a [`LengthMask`](crate::LengthMask))
///   while a prefix of length L is listed inside that /32; lengths 0..=31 are in
///   `WIDE_LENGTHS[1]`.
///
/// A bit goes up before its entry goes in and comes down after the last entry of that length
/// and region has gone, like the summary's: a stale bit costs a probe, never a verdict.
pub mod prefix_lengths {
    /// IPv4 prefixes at least this long are found through their /16's region.
    pub const V4_REGION_LEN: u8 = 16;
    /// IPv6 prefixes at least this long are found through their /32's region.
    pub const V6_REGION_LEN: u8 = 32;
    /// Entries of `REGION_V4`: one per /16.
    pub const V4_REGIONS: u32 = 1 << 16;
    pub const WIDE_V4: u32 = 0;
    pub const WIDE_V6: u32 = 1;
}

/// A set of IPv6 prefix lengths 0..=127, longest first: bit i of `longer` is length 127 - i,
/// bit i of `shorter` is length 63 - i. The lowest set bit is then the longest length, which
/// the program isolates with arithmetic alone (`x & -x`): a branchy search for the highest bit
/// would give the verifier a separate state per length and blow its budget.
///
/// IPv4 sets (the `REGION_V4` values, and `longer` of `WIDE_LENGTHS[0]`) use
/// [`v4_length_bit`]: bit i is length 31 - i.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LengthMask {
    pub longer: u64,
    pub shorter: u64,
}

impl LengthMask {
    pub const EMPTY: Self = Self {
        longer: 0,
        shorter: 0,
    };

    /// The set with IPv6 length `len` (< 128) added.
    #[inline(always)]
    pub const fn with(mut self, len: u8) -> Self {
        if len >= 64 {
            self.longer |= 1 << (127 - len);
        } else {
            self.shorter |= 1 << (63 - len);
        }
        self
    }

    #[inline(always)]
    pub const fn is_empty(self) -> bool {
        self.longer == 0 && self.shorter == 0
    }
}

/// The bit of IPv4 length `len` (< 32) in an IPv4 length set.
#[inline(always)]
pub const fn v4_length_bit(len: u8) -> u32 {
    1 << (31 - len)
}

/// Key of `BLOCK_PREFIX_V4`: the prefix length, then the network with its host bits zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixKeyV4 {
    pub prefix_len: u32,
    pub addr: [u8; 4],
}

/// Key of `BLOCK_PREFIX_V6`, as [`PrefixKeyV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixKeyV6 {
    pub prefix_len: u32,
    pub addr: [u8; 16],
}

/// Sampled volume accounting under churn. A flood of more distinct sources than the volume
/// maps hold makes every frame evict and insert (a lock, about half a microsecond); with
/// `VOLUME_SAMPLE[family] = n`, a source not in the map yet is inserted for one frame in 2^n
/// (chosen at random) with its counts multiplied by 2^n, so the expected counts stay right and
/// heavy sources still arrive within a few frames. The agent raises n while a drain finds the
/// map nearly full and lowers it when the flood is gone.
pub mod volume_sample {
    /// The largest exponent: one new source in 256.
    pub const MAX_SHIFT: u32 = 8;
    pub const V4: u32 = 0;
    pub const V6: u32 = 1;
}

/// The summary bitmaps: one bit per slot says "some block entry may cover a source of this
/// slot". A clear bit lets the program pass a source after one inlined array read instead of a
/// hash probe; a set bit only means "look". Userspace counts the entries per
/// slot and clears a bit only when the last one leaves.
///
/// - IPv4: a slot per /24, two bits side by side: host entries (the hash) and prefix entries
///   (covering it or inside it) in that /24, so one read tells which lookups a source needs.
/// - IPv6 hosts: a slot per hash of the whole address (a one-hash Bloom filter that can forget).
/// - IPv6 prefixes: a slot per hash of the address's /32.
///
/// Prefixes wider than [`summary::NARROWEST_WIDE_V4`] / [`summary::NARROWEST_WIDE_V6`] would
/// need too many slots: while one is listed, `PREFIX_V*_WIDE` makes the program probe the wide
/// lengths (`WIDE_LENGTHS`, see [`prefix_lengths`](crate::prefix_lengths))
/// for every source of the family. Hash collisions only cost a lookup, never a verdict.
pub mod summary {
    /// Slots per plane: 2^24.
    pub const SLOT_BITS: u32 = 24;
    /// Words of the IPv4 plane: 2^24 slots × 2 bits.
    pub const V4_WORDS: u32 = 1 << (SLOT_BITS + 1 - 6);
    /// Words of each IPv6 plane: 2^24 slots × 1 bit.
    pub const V6_WORDS: u32 = 1 << (SLOT_BITS - 6);
    pub const V6_HOST_BASE: u32 = V4_WORDS;
    pub const V6_PREFIX_BASE: u32 = V4_WORDS + V6_WORDS;
    /// Entries of the `SUMMARY` array (8 MiB).
    pub const WORDS: u32 = V4_WORDS + 2 * V6_WORDS;
    /// IPv4 prefixes shorter than this are "wide" (a /16 already takes 256 slots).
    pub const NARROWEST_WIDE_V4: u8 = 16;
    /// IPv6 prefixes shorter than this are "wide" (a /16 takes 65,536 /32 slots).
    pub const NARROWEST_WIDE_V6: u8 = 16;

    /// The word and bit shift of an IPv4 /24's host bit (its prefix bit is the next one).
    #[inline(always)]
    pub const fn v4_position(net24: u32) -> (u32, u32) {
        (net24 >> 5, (net24 & 31) * 2)
    }

    /// Mix a 32-bit value into a slot (murmur3's finaliser, top 24 bits).
    #[inline(always)]
    const fn slot_of(mut h: u32) -> u32 {
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        h >> (32 - SLOT_BITS)
    }

    /// The slot of an IPv6 host, from its four big-endian words.
    #[inline(always)]
    pub const fn v6_host_slot(words: [u32; 4]) -> u32 {
        slot_of(
            words[0].wrapping_mul(0x9e37_79b1)
                ^ words[1].wrapping_mul(0x85eb_ca77)
                ^ words[2].wrapping_mul(0xc2b2_ae3d)
                ^ words[3].wrapping_mul(0x27d4_eb2f),
        )
    }

    /// The slot of an IPv6 /32 (the address's first big-endian word).
    #[inline(always)]
    pub const fn v6_prefix_slot(top32: u32) -> u32 {
        slot_of(top32 ^ 0x5bd1_e995)
    }

    /// The word and bit shift of slot `slot` of the IPv6 plane at `base`.
    #[inline(always)]
    pub const fn v6_position(base: u32, slot: u32) -> (u32, u32) {
        (base + (slot >> 6), slot & 63)
    }
}

/// Name of the XDP program function in the object.
pub const PROGRAM_NAME: &str = "xdpguard";

/// Default capacities. The agent may override them at load time (`EbpfLoader::map_max_entries`).
pub mod capacity {
    pub const ALLOW_V4: u32 = 16_384;
    pub const ALLOW_V6: u32 = 16_384;
    pub const BLOCK_HOST_V4: u32 = 1_048_576;
    pub const BLOCK_HOST_V6: u32 = 1_048_576;
    pub const BLOCK_PREFIX_V4: u32 = 262_144;
    pub const BLOCK_PREFIX_V6: u32 = 262_144;
    /// Distinct sources counted per drain interval; beyond it the least recently seen source's
    /// counts are evicted (and lost to the volume detectors).
    pub const VOLUME_V4: u32 = 65_536;
    pub const VOLUME_V6: u32 = 65_536;
}

/// A block list entry: when it stops dropping, and what it dropped.
///
/// `packets` and `bytes` are shared by all CPUs and updated with atomic adds by the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    /// `CLOCK_MONOTONIC` (the clock of `bpf_ktime_get_ns`) in nanoseconds after which the entry
    /// no longer drops; 0 means never.
    pub expires_ns: u64,
    /// Packets this entry dropped (or would have dropped, in dry-run mode).
    pub packets: u64,
    /// Bytes this entry dropped (or would have dropped, in dry-run mode).
    pub bytes: u64,
    /// The entry's own prefix length. An LPM lookup returns the longest match, so userspace
    /// checks this to tell an exact hit from a covering prefix.
    pub prefix_len: u32,
    /// Zero; keeps the layout free of padding.
    pub reserved: u32,
}

/// An allowlist entry: what it let through that a block entry would have dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowEntry {
    pub packets: u64,
    pub bytes: u64,
    /// As [`BlockEntry::prefix_len`].
    pub prefix_len: u32,
    /// Zero; keeps the layout free of padding.
    pub reserved: u32,
}

/// Flags in [`DataplaneConfig::flags`].
pub mod config_flags {
    /// Count matches as would-drop and pass them.
    pub const DRY_RUN: u64 = 1 << 0;
    /// The block list has entries. An empty list is not looked up at all: a hash lookup in a
    /// large empty table still costs a cache miss on its bucket array.
    pub const HOST_V4_NONEMPTY: u64 = 1 << 1;
    pub const HOST_V6_NONEMPTY: u64 = 1 << 2;
    pub const PREFIX_V4_NONEMPTY: u64 = 1 << 3;
    pub const PREFIX_V6_NONEMPTY: u64 = 1 << 4;
    /// Any block list has entries.
    pub const ANY_BLOCK_NONEMPTY: u64 =
        HOST_V4_NONEMPTY | HOST_V6_NONEMPTY | PREFIX_V4_NONEMPTY | PREFIX_V6_NONEMPTY;
    /// Count packets and bytes per source address in `VOLUME_V4` / `VOLUME_V6`.
    pub const VOLUME_ACCOUNTING: u64 = 1 << 5;
    /// A prefix too wide for the summary is listed: probe the wide lengths for every source of the
    /// family (see [`summary`](crate::summary)).
    pub const PREFIX_V4_WIDE: u64 = 1 << 6;
    pub const PREFIX_V6_WIDE: u64 = 1 << 7;
    /// Anything that needs the source address read.
    pub const READ_SOURCE: u64 = ANY_BLOCK_NONEMPTY | VOLUME_ACCOUNTING;
}

/// Runtime switches read by the program on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    pub flags: u64,
}

/// A packet and byte counter pair, one per [`Stat`] per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatValue {
    pub packets: u64,
    pub bytes: u64,
}

/// Packets and bytes one source sent since the agent last drained the map (atomic adds by the
/// program).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceVolume {
    pub packets: u64,
    pub bytes: u64,
}

/// Address family of a frame, as the program classifies it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4 = 0,
    Ipv6 = 1,
}

/// What the program did with an IP frame.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// No list matched.
    Pass = 0,
    /// A live block entry matched.
    Drop = 1,
    /// A live block entry matched but the allowlist holds the source, so it passed.
    Allowed = 2,
    /// A live block entry matched in dry-run mode, so it passed.
    WouldDrop = 3,
}

impl Verdict {
    pub const ALL: [Self; 4] = [Self::Pass, Self::Drop, Self::Allowed, Self::WouldDrop];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::Allowed => "allowed",
            Self::WouldDrop => "would_drop",
        }
    }
}

impl Family {
    pub const ALL: [Self; 2] = [Self::Ipv4, Self::Ipv6];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// Index into the per-CPU `STATS` array. Every frame ends in exactly one of the exit counters
/// (an IP family × verdict, [`Stat::NonIp`] or [`Stat::Malformed`]);
/// [`Stat::ExpiredHit`] is counted on the side, whenever an expired block entry matched.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stat {
    Ipv4Pass = 0,
    Ipv4Drop = 1,
    Ipv4Allowed = 2,
    Ipv4WouldDrop = 3,
    Ipv6Pass = 4,
    Ipv6Drop = 5,
    Ipv6Allowed = 6,
    Ipv6WouldDrop = 7,
    /// Not IPv4 or IPv6 (ARP, LLDP, a third VLAN tag, ...): passed.
    NonIp = 8,
    /// Truncated or malformed Ethernet, VLAN or IP header: passed, never dropped.
    Malformed = 9,
    /// A block entry matched whose expiry had passed (it did not drop).
    ExpiredHit = 10,
}

/// Number of counters per interface slot.
pub const STAT_COUNT: u32 = 11;

/// Interface slots in `STATS`; slot 0 collects frames from interfaces without a slot.
pub const MAX_INTERFACES: u32 = 16;

/// Entries in `IFACE_SLOT`: interfaces with a larger ifindex count in slot 0.
pub const IFINDEX_LIMIT: u32 = 4096;

/// Number of entries in the `STATS` array.
pub const STATS_LEN: u32 = STAT_COUNT * MAX_INTERFACES;

impl Stat {
    pub const ALL: [Self; STAT_COUNT as usize] = [
        Self::Ipv4Pass,
        Self::Ipv4Drop,
        Self::Ipv4Allowed,
        Self::Ipv4WouldDrop,
        Self::Ipv6Pass,
        Self::Ipv6Drop,
        Self::Ipv6Allowed,
        Self::Ipv6WouldDrop,
        Self::NonIp,
        Self::Malformed,
        Self::ExpiredHit,
    ];

    /// The exit counter of an IP frame of `family` that ended with `verdict`.
    #[inline(always)]
    pub const fn ip(family: Family, verdict: Verdict) -> Self {
        match (family, verdict) {
            (Family::Ipv4, Verdict::Pass) => Self::Ipv4Pass,
            (Family::Ipv4, Verdict::Drop) => Self::Ipv4Drop,
            (Family::Ipv4, Verdict::Allowed) => Self::Ipv4Allowed,
            (Family::Ipv4, Verdict::WouldDrop) => Self::Ipv4WouldDrop,
            (Family::Ipv6, Verdict::Pass) => Self::Ipv6Pass,
            (Family::Ipv6, Verdict::Drop) => Self::Ipv6Drop,
            (Family::Ipv6, Verdict::Allowed) => Self::Ipv6Allowed,
            (Family::Ipv6, Verdict::WouldDrop) => Self::Ipv6WouldDrop,
        }
    }

    /// Stable snake_case name, used in metrics and CLI output.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4Pass => "ipv4_pass",
            Self::Ipv4Drop => "ipv4_drop",
            Self::Ipv4Allowed => "ipv4_allowed",
            Self::Ipv4WouldDrop => "ipv4_would_drop",
            Self::Ipv6Pass => "ipv6_pass",
            Self::Ipv6Drop => "ipv6_drop",
            Self::Ipv6Allowed => "ipv6_allowed",
            Self::Ipv6WouldDrop => "ipv6_would_drop",
            Self::NonIp => "non_ip",
            Self::Malformed => "malformed",
            Self::ExpiredHit => "expired_hit",
        }
    }
}

const _: () = {
    assert!(size_of::<BlockEntry>() == 32);
    assert!(size_of::<AllowEntry>() == 24);
    assert!(size_of::<DataplaneConfig>() == 8);
    assert!(size_of::<StatValue>() == 16);
    assert!(size_of::<SourceVolume>() == 16);
    assert!(size_of::<LengthMask>() == 16);
    assert!(size_of::<PrefixKeyV4>() == 8);
    assert!(size_of::<PrefixKeyV6>() == 20);
    assert!(Stat::ALL.len() == STAT_COUNT as usize);
    assert!(Stat::ExpiredHit as u32 + 1 == STAT_COUNT);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), only integer fields, no padding (asserted above).
    unsafe impl aya::Pod for super::BlockEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DataplaneConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StatValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceVolume {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LengthMask {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PrefixKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PrefixKeyV6 {}
}
