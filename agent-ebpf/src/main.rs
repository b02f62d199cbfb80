//! The xdpguard XDP program: drop frames whose source is on a block list, count everything.
//!
//! Lookup order for a source address: the summary bitmap (one inlined array read: may anything
//! cover this source?), exact-host hash, then one exact-network hash probe per prefix length
//! in use in the source's region, longest first (see `xdpguard_common::prefix_lengths`),
//! then the wide lengths. Expired entries are skipped, so a live shorter prefix still drops.
//! Only when a live
//! block entry matched is the allowlist consulted, so clean traffic never pays for an allowlist
//! lookup; the verdict is the same as checking the allowlist first (an allowed source always
//! passes), and `*_allowed` counts the frames the allowlist saved from a block.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core offers no `AtomicU64::fetch_add`; the
// intrinsic lowers to the BPF atomic add instruction.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics for atomic_xadd, see above"
)]

use core::{
    cell::UnsafeCell,
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_loop},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use xdpguard_common::{
    AllowEntry, BlockEntry, DataplaneConfig, Family, IFINDEX_LIMIT, LengthMask, MAX_INTERFACES,
    PrefixKeyV4, PrefixKeyV6, STAT_COUNT, STATS_LEN, SourceVolume, Stat, StatValue, Verdict,
    capacity, config_flags, prefix_lengths, summary, volume_sample,
};
use xdpguard_ebpf::{Parsed, Source, parse_source};

/// [`BlockEntry`] as the program sees it: the counters are shared by all CPUs.
#[repr(C)]
struct LiveBlockEntry {
    expires_ns: u64,
    packets: SharedCounter,
    bytes: SharedCounter,
    prefix_len: u32,
    reserved: u32,
}

/// [`AllowEntry`] as the program sees it.
#[repr(C)]
struct LiveAllowEntry {
    packets: SharedCounter,
    bytes: SharedCounter,
    prefix_len: u32,
    reserved: u32,
}

/// [`SourceVolume`] as the program sees it.
#[repr(C)]
struct LiveSourceVolume {
    packets: SharedCounter,
    bytes: SharedCounter,
}

/// A counter in a map value that all CPUs add to at once.
#[repr(transparent)]
struct SharedCounter(UnsafeCell<u64>);

// SAFETY: the program only ever changes it with atomic adds.
unsafe impl Sync for SharedCounter {}

impl SharedCounter {
    #[inline(always)]
    fn add(&self, n: u64) {
        // SAFETY: the pointer comes from a live map value; the add is atomic.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(self.0.get(), n);
        }
    }
}

const _: () = {
    assert!(size_of::<LiveBlockEntry>() == size_of::<BlockEntry>());
    assert!(
        core::mem::offset_of!(LiveBlockEntry, packets)
            == core::mem::offset_of!(BlockEntry, packets)
    );
    assert!(
        core::mem::offset_of!(LiveBlockEntry, bytes) == core::mem::offset_of!(BlockEntry, bytes)
    );
    assert!(size_of::<LiveAllowEntry>() == size_of::<AllowEntry>());
    assert!(size_of::<LiveSourceVolume>() == size_of::<SourceVolume>());
};

// Hash maps are not preallocated: a million-entry capacity costs memory only when used, and
// entries are RCU-freed, so a concurrent delete never aliases a value we are adding to.
const NO_PREALLOC: u32 = aya_ebpf::bindings::BPF_F_NO_PREALLOC;

#[map(name = "ALLOW_V4")]
static ALLOW_V4: LpmTrie<[u8; 4], LiveAllowEntry> =
    LpmTrie::with_max_entries(capacity::ALLOW_V4, 0);
#[map(name = "ALLOW_V6")]
static ALLOW_V6: LpmTrie<[u8; 16], LiveAllowEntry> =
    LpmTrie::with_max_entries(capacity::ALLOW_V6, 0);
#[map(name = "BLOCK_HOST_V4")]
static BLOCK_HOST_V4: HashMap<[u8; 4], LiveBlockEntry> =
    HashMap::with_max_entries(capacity::BLOCK_HOST_V4, NO_PREALLOC);
#[map(name = "BLOCK_HOST_V6")]
static BLOCK_HOST_V6: HashMap<[u8; 16], LiveBlockEntry> =
    HashMap::with_max_entries(capacity::BLOCK_HOST_V6, NO_PREALLOC);
// Exact network and length: probed once per length in use where the source is, instead of an
// LPM-trie walk (see `xdpguard_common::prefix_lengths`).
#[map(name = "BLOCK_PREFIX_V4")]
static BLOCK_PREFIX_V4: HashMap<PrefixKeyV4, LiveBlockEntry> =
    HashMap::with_max_entries(capacity::BLOCK_PREFIX_V4, NO_PREALLOC);
#[map(name = "BLOCK_PREFIX_V6")]
static BLOCK_PREFIX_V6: HashMap<PrefixKeyV6, LiveBlockEntry> =
    HashMap::with_max_entries(capacity::BLOCK_PREFIX_V6, NO_PREALLOC);
// 256 KiB, preallocated and read inline.
#[map(name = "REGION_V4")]
static REGION_V4: Array<u32> = Array::with_max_entries(prefix_lengths::V4_REGIONS, 0);
// At most one region per IPv6 prefix: sized like its list by the agent.
#[map(name = "REGION_V6")]
static REGION_V6: HashMap<u32, LengthMask> =
    HashMap::with_max_entries(capacity::BLOCK_PREFIX_V6, NO_PREALLOC);
#[map(name = "WIDE_LENGTHS")]
static WIDE_LENGTHS: Array<LengthMask> = Array::with_max_entries(2, 0);
#[map(name = "STATS")]
static STATS: PerCpuArray<StatValue> = PerCpuArray::with_max_entries(STATS_LEN, 0);
#[map(name = "IFACE_SLOT")]
static IFACE_SLOT: Array<u32> = Array::with_max_entries(IFINDEX_LIMIT, 0);
#[map(name = "CONFIG")]
static CONFIG: Array<DataplaneConfig> = Array::with_max_entries(1, 0);
// LRU: a flood of new sources evicts the stalest ones instead of failing inserts. One value
// per source with atomic adds, not per-CPU values: those cost 16 bytes per entry per possible
// CPU (hundreds of MiB on large servers), and a source's packets mostly reach one CPU anyway.
#[map(name = "VOLUME_V4")]
static VOLUME_V4: LruHashMap<[u8; 4], LiveSourceVolume> =
    LruHashMap::with_max_entries(capacity::VOLUME_V4, 0);
#[map(name = "VOLUME_V6")]
static VOLUME_V6: LruHashMap<[u8; 16], LiveSourceVolume> =
    LruHashMap::with_max_entries(capacity::VOLUME_V6, 0);

// Preallocated (arrays are): the program's reads of it are inlined, no helper call.
#[map(name = "SUMMARY")]
static SUMMARY: Array<u64> = Array::with_max_entries(summary::WORDS, 0);

#[map(name = "VOLUME_SAMPLE")]
static VOLUME_SAMPLE: Array<u32> = Array::with_max_entries(2, 0);

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[xdp] hands the context over by value"
)]
pub fn xdpguard(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    // One inlined array read per frame; tells which lists are worth a lookup, and when none
    // is, the source address is not even read.
    let flags = CONFIG.get(0).map_or(0, |config| config.flags);
    let (stat, action) = match parse_source(&ctx, flags & config_flags::READ_SOURCE != 0) {
        Parsed::Ip(source) => {
            let (family, verdict) = decide(source, len, flags);
            let action = if matches!(verdict, Verdict::Drop) {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            };
            (Stat::ip(family, verdict), action)
        }
        Parsed::NonIp => (Stat::NonIp, xdp_action::XDP_PASS),
        Parsed::Malformed => (Stat::Malformed, xdp_action::XDP_PASS),
    };
    // The one exit path: every frame is counted exactly once, in its interface's slot.
    count(interface_slot(&ctx), stat, len);
    action
}

/// The counter block of the interface the frame arrived on (an array lookup the verifier
/// inlines).
#[inline(always)]
fn interface_slot(ctx: &XdpContext) -> u32 {
    let Ok(ifindex) = u32::try_from(ctx.ingress_ifindex()) else {
        return 0;
    };
    if ifindex >= IFINDEX_LIMIT {
        return 0;
    }
    IFACE_SLOT
        .get(ifindex)
        .map_or(0, |slot| (*slot).min(MAX_INTERFACES - 1))
}

#[inline(always)]
fn count(slot: u32, stat: Stat, len: u64) {
    if let Some(value) = STATS.get_ptr_mut(slot * STAT_COUNT + stat as u32) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe {
            (*value).packets += 1;
            (*value).bytes += len;
        }
    }
}

/// Add the frame to its source's volume when accounting is on. Every IP frame counts, dropped
/// ones too: a blocked flood that keeps coming is what keeps its block extended.
#[inline(always)]
fn account<K>(map: &LruHashMap<K, LiveSourceVolume>, addr: &K, len: u64, flags: u64, family: u32) {
    if flags & config_flags::VOLUME_ACCOUNTING == 0 {
        return;
    }
    // SAFETY: the value is RCU-protected while the program runs; under eviction pressure an
    // entry can be recycled meanwhile, and then this frame counts for its new source.
    if let Some(value) = unsafe { map.get(addr) } {
        value.packets.add(1);
        value.bytes.add(len);
        return;
    }
    // Under churn, one new source in 2^shift goes in, weighted 2^shift (see
    // `xdpguard_common::volume_sample`): the others cost a lookup, not an eviction.
    let shift = VOLUME_SAMPLE
        .get(family)
        .map_or(0, |shift| (*shift).min(volume_sample::MAX_SHIFT));
    // SAFETY: helper without arguments.
    if shift > 0 && unsafe { bpf_get_prandom_u32() } & ((1 << shift) - 1) != 0 {
        return;
    }
    let weight = 1u64 << shift;
    let first = LiveSourceVolume {
        packets: SharedCounter(UnsafeCell::new(weight)),
        bytes: SharedCounter(UnsafeCell::new(len * weight)),
    };
    // Fails only when another CPU inserted the key in between (BPF_NOEXIST): this frame is
    // then lost to accounting, which is cheaper than a retry on the fast path.
    let _: Result<(), i32> = map.insert(addr, &first, u64::from(aya_ebpf::bindings::BPF_NOEXIST));
}

/// Whether a matched block entry still drops; counts an expired hit.
#[inline(always)]
fn is_live(entry: &LiveBlockEntry) -> bool {
    let expires_ns = entry.expires_ns;
    // SAFETY: helper without arguments.
    if expires_ns == 0 || unsafe { bpf_ktime_get_ns() } < expires_ns {
        return true;
    }
    // Slot 0: expiry is a property of the lists, not of an interface.
    count(0, Stat::ExpiredHit, 0);
    false
}

#[inline(always)]
fn decide(source: Source, len: u64, flags: u64) -> (Family, Verdict) {
    match source {
        Source::V4(addr) => (Family::Ipv4, decide_v4(addr, len, flags)),
        Source::V6MappedV4(addr) => (Family::Ipv6, decide_v4(addr, len, flags)),
        Source::V6(addr) => (Family::Ipv6, decide_v6(addr, len, flags)),
        Source::Unread { ipv6: false } => (Family::Ipv4, Verdict::Pass),
        Source::Unread { ipv6: true } => (Family::Ipv6, Verdict::Pass),
    }
}

/// The bits at `shift` of summary word `word`; all set if the word cannot be read, so a
/// summary problem costs lookups, never a verdict.
#[inline(always)]
fn summary_bits(word: u32, shift: u32) -> u64 {
    SUMMARY.get(word).map_or(u64::MAX, |bits| *bits >> shift)
}

#[inline(always)]
fn decide_v4(addr: [u8; 4], len: u64, flags: u64) -> Verdict {
    account(&VOLUME_V4, &addr, len, flags, volume_sample::V4);
    if flags & (config_flags::HOST_V4_NONEMPTY | config_flags::PREFIX_V4_NONEMPTY) == 0 {
        return Verdict::Pass;
    }
    // One read says whether the source's /24 holds host entries, prefix entries, or neither:
    // clean traffic stops here.
    let (word, shift) = summary::v4_position(u32::from_be_bytes(addr) >> 8);
    let bits = summary_bits(word, shift);
    let key = Key::new(32, addr);
    let host = if bits & 1 != 0 && flags & config_flags::HOST_V4_NONEMPTY != 0 {
        // SAFETY: the map is not preallocated, so the value is RCU-protected while we hold it.
        unsafe { BLOCK_HOST_V4.get(addr) }.filter(|entry| is_live(entry))
    } else {
        None
    };
    let block = match host {
        Some(entry) => Some(entry),
        None if flags & config_flags::PREFIX_V4_NONEMPTY != 0 => {
            prefix_v4(u32::from_be_bytes(addr), bits & 2 != 0, flags)
        }
        None => None,
    };
    match block {
        None => Verdict::Pass,
        Some(entry) => enforce(entry, ALLOW_V4.get(&key), len, flags),
    }
}

#[inline(always)]
fn decide_v6(addr: [u8; 16], len: u64, flags: u64) -> Verdict {
    // Per /64: a source rotating through its /64 stays one entry instead of flushing the LRU.
    let network = [
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7], 0, 0, 0, 0, 0, 0,
        0, 0,
    ];
    account(&VOLUME_V6, &network, len, flags, volume_sample::V6);
    let words = [
        u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_be_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_be_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ];
    let key = Key::new(128, addr);
    let host = if flags & config_flags::HOST_V6_NONEMPTY != 0 {
        let (word, shift) =
            summary::v6_position(summary::V6_HOST_BASE, summary::v6_host_slot(words));
        if summary_bits(word, shift) & 1 != 0 {
            // SAFETY: as in `decide_v4`.
            unsafe { BLOCK_HOST_V6.get(addr) }.filter(|entry| is_live(entry))
        } else {
            None
        }
    } else {
        None
    };
    let block = match host {
        Some(entry) => Some(entry),
        None if flags & config_flags::PREFIX_V6_NONEMPTY != 0 => {
            let (word, shift) =
                summary::v6_position(summary::V6_PREFIX_BASE, summary::v6_prefix_slot(words[0]));
            prefix_v6(words, summary_bits(word, shift) & 1 != 0, flags)
        }
        None => None,
    };
    match block {
        None => Verdict::Pass,
        Some(entry) => enforce(entry, ALLOW_V6.get(&key), len, flags),
    }
}

/// The longest live IPv4 prefix entry covering `addr`: the lengths listed in its /16 when the
/// summary says its /24 holds prefixes (`regional`), then the wide ones while any is listed.
#[inline(always)]
fn prefix_v4(addr: u32, regional: bool, flags: u64) -> Option<&'static LiveBlockEntry> {
    if regional {
        // Unreadable (cannot happen: the index is in range): every regional length.
        let lengths = REGION_V4
            .get(addr >> 16)
            .map_or(0xffff, |lengths| u64::from(*lengths));
        if let Some(entry) = probe_v4(addr, lengths) {
            return Some(entry);
        }
    }
    if flags & config_flags::PREFIX_V4_WIDE == 0 {
        return None;
    }
    let wide = WIDE_LENGTHS
        .get(prefix_lengths::WIDE_V4)
        .map_or(0xffff_0000, |lengths| lengths.longer);
    probe_v4(addr, wide)
}

/// Probe `BLOCK_PREFIX_V4` at each length in `lengths` (bit i: length 31 - i), longest first.
/// The probes run under `bpf_loop`: the verifier checks one probe, not every path through
/// up to 32 of them from every state the program can reach this with.
#[inline(always)]
fn probe_v4(addr: u32, lengths: u64) -> Option<&'static LiveBlockEntry> {
    if lengths == 0 {
        return None;
    }
    // The longest length inline: in real lists a region rarely holds more than one, and a
    // hit there costs neither the loop's call nor the lookup again.
    let (len, lengths) = take_longest(lengths, 31);
    // SAFETY: the map is not preallocated, so the value is RCU-protected while we hold it.
    if let Some(entry) = unsafe { BLOCK_PREFIX_V4.get(v4_key(addr, len)) }
        && is_live(entry)
    {
        return Some(entry);
    }
    if lengths == 0 {
        return None;
    }
    let mut probe = ProbeV4 {
        addr,
        found: NOT_FOUND,
        lengths,
    };
    // SAFETY: the callback is a BPF subprogram taking this context; the context outlives the
    // call.
    let _: i64 = unsafe { bpf_loop(32, probe_v4_step as *mut c_void, (&raw mut probe).cast(), 0) };
    if probe.found == NOT_FOUND {
        return None;
    }
    // The entry again, from a bucket the probe just warmed (a pointer cannot leave the
    // callback); gone meanwhile means unblocked meanwhile.
    // SAFETY: the map is not preallocated, so the value is RCU-protected while we hold it.
    unsafe { BLOCK_PREFIX_V4.get(v4_key(addr, probe.found)) }
}

const NOT_FOUND: u32 = u32::MAX;

#[repr(C)]
struct ProbeV4 {
    addr: u32,
    /// The length of the live entry found, or [`NOT_FOUND`].
    found: u32,
    lengths: u64,
}

#[inline(always)]
fn v4_key(addr: u32, len: u32) -> PrefixKeyV4 {
    PrefixKeyV4 {
        prefix_len: len,
        // Without a branch: len is below 32 here.
        addr: (addr & !u32::MAX.wrapping_shr(len)).to_be_bytes(),
    }
}

/// One probe of [`probe_v4`]: 1 stops the loop.
extern "C" fn probe_v4_step(_index: u32, context: *mut c_void) -> i64 {
    // SAFETY: `probe_v4` passes its `ProbeV4`.
    let probe = unsafe { &mut *context.cast::<ProbeV4>() };
    if probe.lengths == 0 {
        return 1;
    }
    let (len, rest) = take_longest(probe.lengths, 31);
    probe.lengths = rest;
    // SAFETY: as in `probe_v4`.
    match unsafe { BLOCK_PREFIX_V4.get(v4_key(probe.addr, len)) } {
        Some(entry) if is_live(entry) => {
            probe.found = len;
            1
        }
        _ => 0,
    }
}

/// As [`prefix_v4`]: the lengths listed in the source's /32 when the summary says its /32
/// (hashed) holds prefixes, then the wide ones (also those of /16-/31 prefixes, which the
/// summary marks but no region holds).
#[inline(always)]
fn prefix_v6(words: [u32; 4], regional: bool, flags: u64) -> Option<&'static LiveBlockEntry> {
    let high = (u64::from(words[0]) << 32) | u64::from(words[1]);
    let low = (u64::from(words[2]) << 32) | u64::from(words[3]);
    if regional {
        // SAFETY: the map is not preallocated, so the value is RCU-protected while we hold it.
        if let Some(lengths) = unsafe { REGION_V6.get(words[0]) }
            && let Some(entry) = probe_v6(high, low, *lengths)
        {
            return Some(entry);
        }
    } else if flags & config_flags::PREFIX_V6_WIDE == 0 {
        return None;
    }
    let wide = WIDE_LENGTHS.get(prefix_lengths::WIDE_V6).map_or(
        LengthMask {
            longer: 0,
            shorter: 0xffff_ffff_0000_0000,
        },
        |lengths| *lengths,
    );
    if wide.is_empty() {
        return None;
    }
    probe_v6(high, low, wide)
}

/// Probe `BLOCK_PREFIX_V6` at each length in `lengths`, longest first, under `bpf_loop` (see
/// [`probe_v4`]); the address as its two big-endian halves.
#[inline(always)]
fn probe_v6(high: u64, low: u64, lengths: LengthMask) -> Option<&'static LiveBlockEntry> {
    // The longest length inline, as in `probe_v4`.
    let (mut longer, mut shorter) = (lengths.longer, lengths.shorter);
    let len = if longer != 0 {
        let (len, rest) = take_longest(longer, 127);
        longer = rest;
        len
    } else if shorter != 0 {
        let (len, rest) = take_longest(shorter, 63);
        shorter = rest;
        len
    } else {
        return None;
    };
    // SAFETY: as in `probe_v4`.
    if let Some(entry) = unsafe { BLOCK_PREFIX_V6.get(v6_key(high, low, len)) }
        && is_live(entry)
    {
        return Some(entry);
    }
    if longer == 0 && shorter == 0 {
        return None;
    }
    let mut probe = ProbeV6 {
        high,
        low,
        longer,
        shorter,
        found: NOT_FOUND,
        reserved: 0,
    };
    // SAFETY: as in `probe_v4`.
    let _: i64 = unsafe {
        bpf_loop(
            128,
            probe_v6_step as *mut c_void,
            (&raw mut probe).cast(),
            0,
        )
    };
    if probe.found == NOT_FOUND {
        return None;
    }
    // SAFETY: as in `probe_v4`.
    unsafe { BLOCK_PREFIX_V6.get(v6_key(high, low, probe.found)) }
}

#[repr(C)]
struct ProbeV6 {
    high: u64,
    low: u64,
    longer: u64,
    shorter: u64,
    found: u32,
    reserved: u32,
}

/// The key of the /`len` of an address given as two big-endian halves. Host bits are cleared
/// without a branch on `len`: the one comparison picks the half.
#[inline(always)]
fn v6_key(high: u64, low: u64, len: u32) -> PrefixKeyV6 {
    let (net_high, net_low) = if len >= 64 {
        (high, low & !u64::MAX.wrapping_shr(len - 64))
    } else {
        (high & !u64::MAX.wrapping_shr(len), 0)
    };
    let h = net_high.to_be_bytes();
    let l = net_low.to_be_bytes();
    PrefixKeyV6 {
        prefix_len: len,
        addr: [
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5],
            l[6], l[7],
        ],
    }
}

/// One probe of [`probe_v6`]: 1 stops the loop.
extern "C" fn probe_v6_step(_index: u32, context: *mut c_void) -> i64 {
    // SAFETY: `probe_v6` passes its `ProbeV6`.
    let probe = unsafe { &mut *context.cast::<ProbeV6>() };
    let len = if probe.longer != 0 {
        let (len, rest) = take_longest(probe.longer, 127);
        probe.longer = rest;
        len
    } else if probe.shorter != 0 {
        let (len, rest) = take_longest(probe.shorter, 63);
        probe.shorter = rest;
        len
    } else {
        return 1;
    };
    // SAFETY: as in `probe_v4`.
    match unsafe { BLOCK_PREFIX_V6.get(v6_key(probe.high, probe.low, len)) } {
        Some(entry) if is_live(entry) => {
            probe.found = len;
            1
        }
        _ => 0,
    }
}

/// The longest length in a longest-first set (`lengths` not 0; bit i is length `top - i`), and
/// the set without it. Arithmetic only, no branch: the verifier then sees one state per probe,
/// not one per length.
#[inline(always)]
fn take_longest(lengths: u64, top: u32) -> (u32, u64) {
    let lowest = lengths & lengths.wrapping_neg();
    (top - ones(lowest - 1), lengths ^ lowest)
}

/// Population count by halves (BPF has no popcount instruction).
#[inline(always)]
const fn ones(mut x: u64) -> u32 {
    x -= (x >> 1) & 0x5555_5555_5555_5555;
    x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    x = (x + (x >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    (x.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

/// A live block entry matched: the allowlist wins, then dry-run, else drop.
#[inline(always)]
fn enforce(
    block: &LiveBlockEntry,
    allow: Option<&LiveAllowEntry>,
    len: u64,
    flags: u64,
) -> Verdict {
    if let Some(allow) = allow {
        allow.packets.add(1);
        allow.bytes.add(len);
        return Verdict::Allowed;
    }
    block.packets.add(1);
    block.bytes.add(len);
    if flags & config_flags::DRY_RUN != 0 {
        Verdict::WouldDrop
    } else {
        Verdict::Drop
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
