//! `cargo xtask bench xdp` (root): ns per packet of the xdpguard program next to an XDP_PASS
//! program and one stock LPM-trie lookup, at 0, 10k, 100k and 1M entries, IPv4 and IPv6, hit
//! and miss. Prints a Markdown report for docs/BENCHMARKS.md.
//!
//! - hot: one frame repeated by `BPF_PROG_TEST_RUN` (median of 9 runs of 1M repeats), with the
//!   kernel's run-time statistics off;
//! - varied: real frames from many distinct sources sent over the sandbox's veth pair (from a
//!   bounded AF_PACKET sender in the attacker namespace), cost per packet = delta `run_time_ns`
//!   / delta `run_cnt` of the program attached in native mode in the firewall namespace.
//!
//! Entries: one seeded stream, level N = its first N entries, alternately IPv4 and IPv6, 80%
//! hosts and 20% prefixes (/16-/24, /32-/64). Addresses in entries are only map keys and
//! `BPF_PROG_TEST_RUN` frames, never traffic, except for the ones chosen so that real traffic
//! can hit them: the IPv4 hosts include all of 203.0.113.0/24, and every IPv6 host is in
//! 2001:db8::/32. Varied sources: IPv4 hits from 203.0.113.0/24, misses from 198.51.100.0/24
//! (together the 512 IPv4 addresses allowed on the wire); IPv6 hits sample the level's own host
//! entries, misses are random 2001:db8::/32 addresses that no entry covers.
use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};
use xdpguard::{
    enforce::dataplane::{AttachMode, Capacities, Dataplane},
    prefix::Prefix,
};
use xdpguard_common::Stat;
use xdpguard_testkit::{
    baseline::{Baseline, BaselineKind, XDP_FILTER_OBJECT, XdpFilter, enable_run_stats},
    frames::{udp4, udp6},
    netns::{FW_IF, Sandbox, Side},
    report::{load_average, machine, median, thousands},
};

const LEVELS: [usize; 4] = [0, 10_000, 100_000, 1_000_000];
const HOT_REPEAT: u32 = 1_000_000;
const HOT_RUNS: usize = 9;
/// Frames per varied measurement.
const VARIED_FRAMES: usize = 200_000;
/// Varied measurements per program and row (interleaved); the median is reported.
const VARIED_ROUNDS: usize = 3;
/// Distinct sources per many-source row (hits: at most the level's entries of the kind), and
/// at the largest level.
const MANY_SOURCES: usize = 100_000;
const MANY_SOURCES_AT_TOP: usize = 1_000_000;
/// Sources per interleaved chunk of a many-source row: each chunk gives one sample per program.
const MANY_CHUNK: usize = 50_000;
/// Targets at the largest level, many sources: every case within XDP_PASS + this (ns).
const TARGET_TOP_V4_NS: f64 = 40.0;
const TARGET_TOP_V6_NS: f64 = 60.0;
/// Distinct IPv6 sources per varied run (hits: at most the level's IPv6 host entries).
const VARIED_V6_SOURCES: usize = 65_536;
/// xdpguard with empty lists may cost at most this much more than XDP_PASS.
const TARGET_NS: f64 = 15.0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// 2001:db8::/32, as a number.
const DOC_V6: u128 = 0x2001_0db8 << 96;
/// The IPv4 /24s allowed on the wire: hits come from the first, misses from the second.
const WIRE_HIT_V4: [u8; 3] = [203, 0, 113];
const WIRE_MISS_V4: [u8; 3] = [198, 51, 100];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Program {
    Pass,
    Lpm,
    Xdpguard,
}

impl Program {
    const ALL: [Self; 3] = [Self::Pass, Self::Lpm, Self::Xdpguard];
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    const fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Case {
    /// The source is a host entry (`/32`, `/128`).
    HitHost,
    /// The source is inside a prefix entry and no host entry.
    HitPrefix,
    Miss,
}

impl Case {
    const fn name(self) -> &'static str {
        match self {
            Self::HitHost => "hit (host)",
            Self::HitPrefix => "hit (prefix)",
            Self::Miss => "miss",
        }
    }
}

/// The three programs, holding the same entries.
struct Programs {
    pass: Baseline,
    lpm: Baseline,
    ours: Dataplane,
}

impl Programs {
    fn load() -> Self {
        let load_error = |err: xdpguard::enforce::dataplane::DataplaneError| -> ! {
            panic!("{}", xdpguard::error_chain(&err))
        };
        Self {
            pass: Baseline::load(BaselineKind::Pass).unwrap_or_else(|err| load_error(err)),
            lpm: Baseline::load(BaselineKind::Lpm).unwrap_or_else(|err| load_error(err)),
            ours: Dataplane::load(Capacities::default()).unwrap_or_else(|err| load_error(err)),
        }
    }

    /// Add entries none of the programs holds yet.
    fn fill(&mut self, entries: &[Prefix]) {
        for prefix in entries {
            self.lpm.insert(prefix).unwrap();
        }
        for result in self.ours.block_new(entries, 0) {
            result.unwrap();
        }
    }

    /// One `BPF_PROG_TEST_RUN` of `HOT_REPEAT` repeats: the action and ns per run.
    fn test_run(&self, program: Program, frame: &[u8]) -> (u32, f64) {
        let (action, duration) = match program {
            Program::Pass => self.pass.test_run(frame, HOT_REPEAT),
            Program::Lpm => self.lpm.test_run(frame, HOT_REPEAT),
            Program::Xdpguard => self.ours.test_run(frame, HOT_REPEAT),
        }
        .unwrap();
        (action, duration.as_secs_f64() * 1e9)
    }

    /// `HOT_RUNS` test runs of each program, interleaved so that a noisy moment on the
    /// machine hits all three alike. Per program: the actions seen and the median ns per run.
    fn hot(&self, frame: &[u8]) -> BTreeMap<Program, (Vec<u32>, f64)> {
        let mut samples: BTreeMap<Program, (Vec<u32>, Vec<f64>)> = BTreeMap::new();
        for _ in 0..HOT_RUNS {
            for program in Program::ALL {
                let (action, ns) = self.test_run(program, frame);
                let (actions, times) = samples.entry(program).or_default();
                actions.push(action);
                times.push(ns);
            }
        }
        samples
            .into_iter()
            .map(|(program, (actions, times))| (program, (actions, median(times))))
            .collect()
    }

    /// Attach `program` to the firewall side of the sandbox, send `frames`, detach. Returns
    /// the kernel's run time per run, in ns.
    fn varied(
        &mut self,
        sandbox: &Sandbox,
        program: Program,
        frames: &[Vec<u8>],
        expect_drop: bool,
    ) -> f64 {
        let (time, runs) = match program {
            Program::Pass | Program::Lpm => {
                let baseline = if program == Program::Pass {
                    &mut self.pass
                } else {
                    &mut self.lpm
                };
                let link = sandbox.within(Side::Firewall, || baseline.attach(FW_IF).unwrap());
                let (time0, runs0) = baseline.run_stats().unwrap();
                let _ = sandbox.send_frames(frames, None, VARIED_FRAMES);
                let (time1, runs1) = baseline.run_stats().unwrap();
                sandbox.within(Side::Firewall, || baseline.detach(link).unwrap());
                (time1 - time0, runs1 - runs0)
            }
            Program::Xdpguard => {
                let ours = &mut self.ours;
                let mode = sandbox.within(Side::Firewall, || {
                    ours.attach(FW_IF, AttachMode::Native).unwrap()
                });
                assert_eq!(mode.to_string(), "native");
                let stats0 = ours.stats().unwrap();
                let (time0, runs0) = ours.run_stats().unwrap();
                let _ = sandbox.send_frames(frames, None, VARIED_FRAMES);
                let (time1, runs1) = ours.run_stats().unwrap();
                let stats = ours.stats().unwrap().since(&stats0);
                sandbox.within(Side::Firewall, || ours.detach(FW_IF).unwrap());
                // The program did what the case says: hits dropped, misses passed.
                let dropped = stats.get(Stat::Ipv4Drop).packets + stats.get(Stat::Ipv6Drop).packets;
                let runs = runs1 - runs0;
                if expect_drop {
                    assert!(dropped * 10 >= runs * 9, "{dropped} of {runs} dropped");
                } else {
                    assert_eq!(dropped, 0, "a miss run dropped frames");
                }
                (time1 - time0, runs)
            }
        };
        assert!(
            runs >= VARIED_FRAMES as u64 / 2,
            "only {runs} runs for {VARIED_FRAMES} frames sent"
        );
        time.as_secs_f64() * 1e9 / runs as f64
    }
}

/// One row of the many-source table: per program, the median and range of its chunk means.
struct ManyRow {
    sources: usize,
    ns: BTreeMap<Program, (f64, f64, f64)>,
}

type ManyResults = BTreeMap<(usize, Fam, Case), ManyRow>;

impl Programs {
    /// Each source's frame run once by each program (`BPF_PROG_TEST_RUN`, repeat 1), in
    /// chunks interleaved across the programs; cost = delta run_time_ns / delta run_cnt (the
    /// syscall's own cost is outside it). Run-time statistics must be on. Checks every verdict.
    fn many(&self, sources: &[IpAddr], expect_drop: bool) -> ManyRow {
        let mut samples: BTreeMap<Program, Vec<f64>> = BTreeMap::new();
        for chunk in sources.chunks(MANY_CHUNK) {
            let frames: Vec<Vec<u8>> = chunk.iter().copied().map(frame_of).collect();
            for program in Program::ALL {
                let stats = || {
                    match program {
                        Program::Pass => self.pass.run_stats(),
                        Program::Lpm => self.lpm.run_stats(),
                        Program::Xdpguard => self.ours.run_stats(),
                    }
                    .unwrap()
                };
                let (time0, runs0) = stats();
                for (frame, source) in frames.iter().zip(chunk) {
                    let (action, _) = match program {
                        Program::Pass => self.pass.test_run(frame, 1),
                        Program::Lpm => self.lpm.test_run(frame, 1),
                        Program::Xdpguard => self.ours.test_run(frame, 1),
                    }
                    .unwrap();
                    let expected = if expect_drop && program != Program::Pass {
                        XDP_DROP
                    } else {
                        XDP_PASS
                    };
                    assert_eq!(action, expected, "{program:?} {source}");
                }
                let (time1, runs1) = stats();
                let runs = runs1 - runs0;
                assert_eq!(runs, frames.len() as u64, "{program:?}: runs counted");
                samples
                    .entry(program)
                    .or_default()
                    .push((time1 - time0).as_secs_f64() * 1e9 / runs as f64);
            }
        }
        ManyRow {
            sources: sources.len(),
            ns: samples
                .into_iter()
                .map(|(program, values)| {
                    let low = values.iter().copied().fold(f64::MAX, f64::min);
                    let high = values.iter().copied().fold(f64::MIN, f64::max);
                    (program, (median(values), low, high))
                })
                .collect(),
        }
    }
}

/// `count` distinct sources of a case, from the entries' own ranges: host entries of the
/// level, addresses inside its prefix entries that no host entry is, or addresses no entry of
/// the whole stream covers (IPv4 over 1.0.0.0-223.255.255.255; IPv6 half in 2001:db8::/32
/// where the hosts are, half in 2000::/3 where the prefixes are).
fn many_sources(
    rng: &mut StdRng,
    level: &[Prefix],
    all: &HashSet<Prefix>,
    fam: Fam,
    case: Case,
    count: usize,
) -> Vec<IpAddr> {
    let v4 = fam == Fam::V4;
    let mut out = match case {
        Case::HitHost => level
            .iter()
            .filter(|p| p.is_host() && p.is_ipv4() == v4)
            .map(Prefix::addr)
            .collect(),
        Case::HitPrefix => {
            let prefixes: Vec<&Prefix> = level
                .iter()
                .filter(|p| !p.is_host() && p.is_ipv4() == v4)
                .collect();
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            // Bounded: a level's prefixes hold far more addresses than asked for.
            for _ in 0..count * 4 {
                if out.len() >= count {
                    break;
                }
                let prefix = prefixes[rng.random_range(0..prefixes.len())];
                let addr = random_inside(rng, prefix);
                if !all.contains(&Prefix::host(addr)) && seen.insert(addr) {
                    out.push(addr);
                }
            }
            out
        }
        Case::Miss => {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            while out.len() < count {
                let addr: IpAddr = if v4 {
                    random_v4(rng).into()
                } else if out.len() % 2 == 0 {
                    random_doc_v6(rng).into()
                } else {
                    Ipv6Addr::from((0b001 << 125) | (rng.random::<u128>() >> 3)).into()
                };
                if !covered(all, addr) && seen.insert(addr) {
                    out.push(addr);
                }
            }
            out
        }
    };
    out.shuffle(rng);
    out.truncate(count);
    out
}

/// A random address inside `prefix`.
fn random_inside(rng: &mut StdRng, prefix: &Prefix) -> IpAddr {
    let len = u32::from(prefix.prefix_len());
    match prefix.addr() {
        IpAddr::V4(addr) => {
            let noise = rng.random::<u32>().checked_shr(len).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(addr.to_bits() | noise))
        }
        IpAddr::V6(addr) => {
            let noise = rng.random::<u128>().checked_shr(len).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(addr.to_bits() | noise))
        }
    }
}

fn many_report(many: &ManyResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Many sources: each frame once through BPF_PROG_TEST_RUN, run_time_ns / run_cnt (ns/packet; median of {}k-source chunks, min-max in brackets; run-time statistics on)\n",
        MANY_CHUNK / 1000
    );
    let _ = writeln!(
        out,
        "| entries | family | case | distinct sources | xdp-pass | lpm-reference | xdpguard | xdpguard − xdp-pass | reference / xdpguard (over xdp-pass) |"
    );
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|---:|---:|");
    let cell = |(mid, low, high): (f64, f64, f64)| format!("{mid:.1} [{low:.0}-{high:.0}]");
    let top = LEVELS[LEVELS.len() - 1];
    let mut verdicts = Vec::new();
    for ((level, fam, case), row) in many {
        let ns = &row.ns;
        let pass = ns[&Program::Pass].0;
        let ours = ns[&Program::Xdpguard].0;
        let reference = ns[&Program::Lpm].0;
        let speedup = (reference - pass) / (ours - pass).max(0.1);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:+.1} | {speedup:.1}× |",
            thousands(*level),
            fam.name(),
            case.name(),
            thousands(row.sources),
            cell(ns[&Program::Pass]),
            cell(ns[&Program::Lpm]),
            cell(ns[&Program::Xdpguard]),
            ours - pass,
        );
        if *level == top {
            let (target, factor) = match fam {
                Fam::V4 => (TARGET_TOP_V4_NS, 3.0),
                Fam::V6 => (TARGET_TOP_V6_NS, 5.0),
            };
            let met = |ok: bool| if ok { "met" } else { "NOT met" };
            verdicts.push(format!(
                "- {} {}: xdpguard − xdp-pass {:+.1} ns (target ≤ {target:.0}: {}); {speedup:.1}× the reference's cost over xdp-pass (target ≥ {factor:.0}×: {})",
                fam.name(),
                case.name(),
                ours - pass,
                met(ours - pass <= target),
                met(speedup >= factor),
            ));
        }
    }
    let _ = writeln!(out, "\nTargets at {} entries:\n", thousands(top));
    for line in verdicts {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// A uniformly random IPv4 address in 1.0.0.0-223.255.255.255.
fn random_v4(rng: &mut StdRng) -> Ipv4Addr {
    Ipv4Addr::from(rng.random_range(0x0100_0000_u32..0xe000_0000))
}

/// A random address in 2001:db8::/32, clear of the sandbox's own /48s (:0:, :a:, :f:).
fn random_doc_v6(rng: &mut StdRng) -> Ipv6Addr {
    loop {
        let addr = DOC_V6 | (rng.random::<u128>() >> 32);
        if !matches!((addr >> 80) & 0xffff, 0x0 | 0xa | 0xf) {
            return Ipv6Addr::from(addr);
        }
    }
}

/// Whether an entry of the stream could cover traffic it must not: the IPv4 miss /24, the hit
/// /24 (only its own host entries may), or 2001:db8::/32 (only host entries may be in it).
fn collides(prefix: &Prefix) -> bool {
    let hit_net = IpAddr::from([WIRE_HIT_V4[0], WIRE_HIT_V4[1], WIRE_HIT_V4[2], 0]);
    let miss_net = IpAddr::from([WIRE_MISS_V4[0], WIRE_MISS_V4[1], WIRE_MISS_V4[2], 0]);
    let doc = IpAddr::V6(Ipv6Addr::from(DOC_V6));
    let within_24 = |net: IpAddr| {
        prefix.contains(net) || Prefix::new(net, 24).is_ok_and(|p| p.contains(prefix.addr()))
    };
    if prefix.is_ipv4() {
        within_24(hit_net) || within_24(miss_net)
    } else {
        prefix.contains(doc)
    }
}

/// The seeded entry stream: alternately IPv4 and IPv6, 80% hosts, no duplicates. The first
/// IPv4 hosts are the 256 addresses of 203.0.113.0/24 (shuffled), the rest are random.
fn entry_stream(rng: &mut StdRng, total: usize) -> (Vec<Prefix>, HashSet<Prefix>) {
    let mut wire: Vec<Ipv4Addr> = (0..=255)
        .map(|last| Ipv4Addr::from([WIRE_HIT_V4[0], WIRE_HIT_V4[1], WIRE_HIT_V4[2], last]))
        .collect();
    wire.shuffle(rng);
    let mut seen = HashSet::with_capacity(total);
    let mut entries = Vec::with_capacity(total);
    while entries.len() < total {
        let v6 = entries.len() % 2 == 1;
        let host = rng.random_ratio(4, 5);
        let wire_host = if !v6 && host { wire.pop() } else { None };
        let prefix = if let Some(addr) = wire_host {
            Prefix::host(addr.into())
        } else {
            let prefix = match (v6, host) {
                (false, true) => Prefix::host(random_v4(rng).into()),
                (false, false) => {
                    Prefix::new(random_v4(rng).into(), rng.random_range(16..=24)).unwrap()
                }
                (true, true) => Prefix::host(random_doc_v6(rng).into()),
                (true, false) => {
                    // Global unicast 2000::/3 (2001:db8::/32 is refused below).
                    let addr = Ipv6Addr::from((0b001 << 125) | (rng.random::<u128>() >> 3));
                    Prefix::new(addr.into(), rng.random_range(32..=64)).unwrap()
                }
            };
            if collides(&prefix) {
                continue;
            }
            prefix
        };
        entries_push(&mut seen, &mut entries, prefix);
    }
    (entries, seen)
}

fn entries_push(seen: &mut HashSet<Prefix>, entries: &mut Vec<Prefix>, prefix: Prefix) {
    if seen.insert(prefix) {
        entries.push(prefix);
    }
}

/// Whether any entry of `all` covers `addr` (entries only have the lengths generated above).
fn covered(all: &HashSet<Prefix>, addr: IpAddr) -> bool {
    let lens = if addr.is_ipv4() {
        (16..=24).chain(32..=32)
    } else {
        (32..=64).chain(128..=128)
    };
    lens.into_iter()
        .any(|len| Prefix::new(addr, len).is_ok_and(|prefix| all.contains(&prefix)))
}

/// The hot frames' sources, good for every level from 10k on (misses for all levels).
struct Probes {
    v4_host: Ipv4Addr,
    v4_prefix: Ipv4Addr,
    v4_miss: Ipv4Addr,
    v6_host: Ipv6Addr,
    v6_prefix: Ipv6Addr,
    v6_miss: Ipv6Addr,
}

fn probes(rng: &mut StdRng, entries: &[Prefix], all: &HashSet<Prefix>) -> Probes {
    let first = LEVELS[1];
    let wire_hit =
        |addr: &IpAddr| matches!(addr, IpAddr::V4(v4) if v4.octets()[..3] == WIRE_HIT_V4);
    let host = |v4: bool| {
        entries[..first]
            .iter()
            .find(|p| p.is_host() && p.is_ipv4() == v4 && !wire_hit(&p.addr()))
            .expect("a host entry in the first level")
            .addr()
    };
    // An address inside the first prefix entry of the family that no host entry is.
    let in_prefix = |v4: bool| {
        entries[..first]
            .iter()
            .filter(|p| !p.is_host() && p.is_ipv4() == v4)
            .find_map(|p| {
                let inside = match p.addr() {
                    IpAddr::V4(addr) => IpAddr::V4(Ipv4Addr::from(addr.to_bits() | 1)),
                    IpAddr::V6(addr) => IpAddr::V6(Ipv6Addr::from(addr.to_bits() | 1)),
                };
                (!all.contains(&Prefix::host(inside))).then_some(inside)
            })
            .expect("a prefix entry in the first level")
    };
    let v4_miss = loop {
        let addr = random_v4(rng);
        if !covered(all, addr.into()) && !collides(&Prefix::host(addr.into())) {
            break addr;
        }
    };
    let v6_miss = loop {
        let addr = random_doc_v6(rng);
        if !covered(all, addr.into()) {
            break addr;
        }
    };
    let (IpAddr::V4(v4_host), IpAddr::V4(v4_prefix), IpAddr::V6(v6_host), IpAddr::V6(v6_prefix)) =
        (host(true), in_prefix(true), host(false), in_prefix(false))
    else {
        unreachable!("families picked above");
    };
    Probes {
        v4_host,
        v4_prefix,
        v4_miss,
        v6_host,
        v6_prefix,
        v6_miss,
    }
}

fn frame_of(source: IpAddr) -> Vec<u8> {
    match source {
        IpAddr::V4(v4) => udp4(v4),
        IpAddr::V6(v6) => udp6(v6),
    }
}

/// One row of the varied table.
struct VariedRow {
    sources: usize,
    ns: BTreeMap<Program, f64>,
}

type HotResults = BTreeMap<(usize, Fam, Case), BTreeMap<Program, f64>>;
type VariedResults = BTreeMap<(usize, Fam, Case), VariedRow>;

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let started = Instant::now();
    let load_at_start = load_average();
    let mut rng = StdRng::seed_from_u64(0x5eed_0bad);
    let total = LEVELS[LEVELS.len() - 1];
    let (entries, all) = entry_stream(&mut rng, total);
    let probes = probes(&mut rng, &entries, &all);
    let v4_hit_sources: Vec<IpAddr> = (0..=255)
        .map(|last| IpAddr::from([WIRE_HIT_V4[0], WIRE_HIT_V4[1], WIRE_HIT_V4[2], last]))
        .collect();
    let v4_miss_sources: Vec<IpAddr> = (0..=255)
        .map(|last| IpAddr::from([WIRE_MISS_V4[0], WIRE_MISS_V4[1], WIRE_MISS_V4[2], last]))
        .collect();
    let mut v6_miss_sources: Vec<IpAddr> = Vec::with_capacity(VARIED_V6_SOURCES);
    let mut v6_miss_seen = HashSet::new();
    while v6_miss_sources.len() < VARIED_V6_SOURCES {
        let addr = random_doc_v6(&mut rng);
        if !covered(&all, addr.into()) && v6_miss_seen.insert(addr) {
            v6_miss_sources.push(addr.into());
        }
    }
    eprintln!(
        "bench: {total} entries generated in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut programs = Programs::load();
    let sandbox = Sandbox::new("bench-xdp");
    let mut hot: HotResults = BTreeMap::new();
    let mut varied: VariedResults = BTreeMap::new();
    let mut many: ManyResults = BTreeMap::new();
    let mut stats_on_pass_ns = f64::NAN;
    let mut accounting = Vec::new();
    let mut memory = Vec::new();
    let mut loaded = 0;
    for level in LEVELS {
        let fill_started = Instant::now();
        programs.fill(&entries[loaded..level]);
        loaded = level;
        eprintln!(
            "bench: {level} entries loaded ({:.1} s)",
            fill_started.elapsed().as_secs_f64()
        );
        memory.push((
            level,
            programs.ours.kernel_memory().unwrap(),
            programs.lpm.kernel_memory().unwrap(),
        ));

        // Hot: BPF_PROG_TEST_RUN, run-time statistics off (they add two clock reads per run).
        for (fam, case, source) in [
            (Fam::V4, Case::HitHost, IpAddr::V4(probes.v4_host)),
            (Fam::V4, Case::HitPrefix, IpAddr::V4(probes.v4_prefix)),
            (Fam::V4, Case::Miss, IpAddr::V4(probes.v4_miss)),
            (Fam::V6, Case::HitHost, IpAddr::V6(probes.v6_host)),
            (Fam::V6, Case::HitPrefix, IpAddr::V6(probes.v6_prefix)),
            (Fam::V6, Case::Miss, IpAddr::V6(probes.v6_miss)),
        ] {
            if level == 0 && case != Case::Miss {
                continue;
            }
            let frame = frame_of(source);
            let row = hot.entry((level, fam, case)).or_default();
            for (program, (actions, ns)) in programs.hot(&frame) {
                let expected = if case != Case::Miss && program != Program::Pass {
                    XDP_DROP
                } else {
                    XDP_PASS
                };
                assert!(
                    actions.iter().all(|action| *action == expected),
                    "{program:?} {fam:?} {case:?} at {level} entries ({source}): {actions:?}"
                );
                let _: Option<f64> = row.insert(program, ns);
            }
        }

        // Varied: real frames over the veth pair, run-time statistics on.
        let stats_fd = enable_run_stats().unwrap();
        let mut v6_hit_sources: Vec<IpAddr> = entries[..level]
            .iter()
            .filter(|p| p.is_host() && !p.is_ipv4())
            .map(Prefix::addr)
            .collect();
        v6_hit_sources.shuffle(&mut rng);
        v6_hit_sources.truncate(VARIED_V6_SOURCES);
        for (fam, case, sources) in [
            (Fam::V4, Case::HitHost, &v4_hit_sources),
            (Fam::V4, Case::Miss, &v4_miss_sources),
            (Fam::V6, Case::HitHost, &v6_hit_sources),
            (Fam::V6, Case::Miss, &v6_miss_sources),
        ] {
            if level == 0 && case != Case::Miss {
                continue;
            }
            let frames: Vec<Vec<u8>> = sources.iter().copied().map(frame_of).collect();
            let mut samples: BTreeMap<Program, Vec<f64>> = BTreeMap::new();
            for _ in 0..VARIED_ROUNDS {
                for program in Program::ALL {
                    let ns = programs.varied(&sandbox, program, &frames, case != Case::Miss);
                    samples.entry(program).or_default().push(ns);
                }
            }
            let _: Option<VariedRow> = varied.insert(
                (level, fam, case),
                VariedRow {
                    sources: sources.len(),
                    ns: samples
                        .into_iter()
                        .map(|(program, values)| (program, median(values)))
                        .collect(),
                },
            );
        }
        // Many sources through BPF_PROG_TEST_RUN, one frame per run: the wire only carries
        // documentation ranges, this reaches every part of the entries' own ranges.
        for (fam, case) in [
            (Fam::V4, Case::HitHost),
            (Fam::V4, Case::HitPrefix),
            (Fam::V4, Case::Miss),
            (Fam::V6, Case::HitHost),
            (Fam::V6, Case::HitPrefix),
            (Fam::V6, Case::Miss),
        ] {
            if level == 0 && case != Case::Miss {
                continue;
            }
            let count = if level == total {
                MANY_SOURCES_AT_TOP
            } else {
                MANY_SOURCES
            };
            let sources = many_sources(&mut rng, &entries[..level], &all, fam, case, count);
            let row = programs.many(&sources, case != Case::Miss);
            let _: Option<ManyRow> = many.insert((level, fam, case), row);
        }
        if level == 0 {
            accounting = accounting_cost(
                &mut programs,
                &sandbox,
                &[(Fam::V4, &v4_miss_sources), (Fam::V6, &v6_miss_sources)],
            );
        }
        // The cost of the statistics themselves, once: XDP_PASS hot with them on.
        if level == 0 {
            let frame = frame_of(probes.v4_miss.into());
            stats_on_pass_ns = median(
                (0..HOT_RUNS)
                    .map(|_| programs.test_run(Program::Pass, &frame).1)
                    .collect(),
            );
        }
        drop(stats_fd);
        eprintln!(
            "bench: {level} entries measured ({:.0} s so far)",
            started.elapsed().as_secs_f64()
        );
    }
    drop(sandbox);
    // Its own xdpguard below; the million entries' maps go first.
    drop(programs);
    let filter = xdp_filter_report(&mut rng, &entries, &all);
    let conditions = format!(
        "{}; 1-minute load average {load_at_start} at the start, {} at the end",
        machine(),
        load_average()
    );
    print!("{}", report(&conditions, &hot, &varied, stats_on_pass_ns));
    print!("{}", many_report(&many));
    print!("{}", accounting_report(&accounting));
    print!("{}", memory_report(&memory));
    print!("{filter}");
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
}

/// One row of the volume accounting table: xdpguard (0 entries) with accounting off and on.
struct AccountingRow {
    kind: String,
    fam: Fam,
    sources: usize,
    off_ns: f64,
    on_ns: f64,
}

/// xdpguard at 0 entries with per-source volume accounting off and on, interleaved: hot (one
/// source) and varied (every source of the miss lists over the veth pair). The volume maps are
/// drained before every run, so each varied run pays for inserting its sources, as the first
/// frames of every interval do. Must run with run-time statistics on (for the varied rows).
fn accounting_cost(
    programs: &mut Programs,
    sandbox: &Sandbox,
    rows: &[(Fam, &Vec<IpAddr>)],
) -> Vec<AccountingRow> {
    let mut reader = programs.ours.volume_reader().unwrap();
    let mut out = Vec::new();
    for &(fam, sources) in rows {
        let hot_frame = frame_of(sources[0]);
        let frames: Vec<Vec<u8>> = sources.iter().copied().map(frame_of).collect();
        let mut hot: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut varied: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..VARIED_ROUNDS {
            for (index, on) in [false, true].into_iter().enumerate() {
                programs.ours.set_volume_accounting(on).unwrap();
                // Unsampled: every new source is inserted (drains of full maps raise it).
                unsample(&mut reader);
                // Hot includes the run-time statistics here; both columns alike.
                hot[index].push(programs.test_run(Program::Xdpguard, &hot_frame).1);
                drain_checked(&mut reader, on);
                unsample(&mut reader);
                varied[index].push(programs.varied(sandbox, Program::Xdpguard, &frames, false));
                drain_checked(&mut reader, on);
            }
        }
        // A churning flood as the engine meets it: the same sources again after every drain,
        // until the reader's sampling exponent has not moved for three drains; then the same
        // runs, sampled.
        unsample(&mut reader);
        programs.ours.set_volume_accounting(true).unwrap();
        let family = usize::from(fam == Fam::V6);
        let mut seen = Vec::new();
        for _ in 0..12 {
            let _ = programs.varied(sandbox, Program::Xdpguard, &frames, false);
            drain_checked(&mut reader, true);
            seen.push(reader.sampling()[family]);
            if seen.len() >= 3
                && seen[seen.len() - 3..]
                    .iter()
                    .all(|s| *s == seen[seen.len() - 1])
            {
                break;
            }
        }
        let mut sampled = Vec::new();
        for _ in 0..VARIED_ROUNDS {
            sampled.push(programs.varied(sandbox, Program::Xdpguard, &frames, false));
            drain_checked(&mut reader, true);
        }
        let shift = reader.sampling()[family];
        programs.ours.set_volume_accounting(false).unwrap();
        unsample(&mut reader);
        let [hot_off, hot_on] = hot;
        let [varied_off, varied_on] = varied;
        let varied_off = median(varied_off);
        out.push(AccountingRow {
            kind: "hot".to_owned(),
            fam,
            sources: 1,
            off_ns: median(hot_off),
            on_ns: median(hot_on),
        });
        out.push(AccountingRow {
            kind: "varied".to_owned(),
            fam,
            sources: sources.len(),
            off_ns: varied_off,
            on_ns: median(varied_on),
        });
        out.push(AccountingRow {
            kind: format!(
                "varied, sampled 1 in {} (settled after {} drains)",
                1u32 << shift,
                seen.len()
            ),
            fam,
            sources: sources.len(),
            off_ns: varied_off,
            on_ns: median(sampled),
        });
    }
    out
}

/// Drain the volume maps; they must (not) have held sources.
fn drain_checked(reader: &mut xdpguard::enforce::dataplane::VolumeReader, expect_sources: bool) {
    let mut sources = 0usize;
    let _ = reader.drain(&mut |_, _, _| sources += 1).unwrap();
    assert_eq!(
        sources > 0,
        expect_sources,
        "volume maps held {sources} sources"
    );
}

/// Drain empty maps until the reader has lowered its sampling to none (one step per drain).
fn unsample(reader: &mut xdpguard::enforce::dataplane::VolumeReader) {
    let _ = reader.drain(&mut |_, _, _| {}).unwrap();
    while reader.sampling() != [0, 0] {
        let _ = reader.drain(&mut |_, _, _| {}).unwrap();
    }
}

fn accounting_report(rows: &[AccountingRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Volume accounting: xdpguard at 0 entries, per-source accounting off and on (ns/packet, median of {VARIED_ROUNDS}, run-time statistics on)\n"
    );
    let _ = writeln!(
        out,
        "| measurement | family | distinct sources | accounting off | accounting on | cost |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:+.1} |",
            row.kind,
            row.fam.name(),
            thousands(row.sources),
            row.off_ns,
            row.on_ns,
            row.on_ns - row.off_ns,
        );
    }
    out
}

/// Worst xdpguard − xdp-pass at 0 entries in a table.
fn target_gap<'a>(
    rows: impl Iterator<Item = (&'a (usize, Fam, Case), &'a BTreeMap<Program, f64>)>,
) -> f64 {
    rows.filter(|((level, _, _), _)| *level == 0)
        .map(|(_, ns)| ns[&Program::Xdpguard] - ns[&Program::Pass])
        .fold(f64::MIN, f64::max)
}

fn report(
    conditions: &str,
    hot: &HotResults,
    varied: &VariedResults,
    stats_on_pass_ns: f64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nMachine: {conditions}\n");
    let _ = writeln!(
        out,
        "### Hot: one frame repeated by BPF_PROG_TEST_RUN (ns/packet, median of {HOT_RUNS} × {}k)\n",
        HOT_REPEAT / 1000
    );
    let _ = writeln!(
        out,
        "| entries | family | case | xdp-pass | lpm-reference | xdpguard | xdpguard − xdp-pass |"
    );
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|");
    for ((level, fam, case), ns) in hot {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:+.0} |",
            thousands(*level),
            fam.name(),
            case.name(),
            ns[&Program::Pass],
            ns[&Program::Lpm],
            ns[&Program::Xdpguard],
            ns[&Program::Xdpguard] - ns[&Program::Pass],
        );
    }
    let _ = writeln!(
        out,
        "\n### Varied sources: {}k real frames over veth, run_time_ns / run_cnt of the attached program (ns/packet, median of {VARIED_ROUNDS})\n",
        VARIED_FRAMES / 1000
    );
    let _ = writeln!(
        out,
        "| entries | family | case | distinct sources | xdp-pass | lpm-reference | xdpguard | xdpguard − xdp-pass |"
    );
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|---:|");
    for ((level, fam, case), row) in varied {
        let ns = &row.ns;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:+.1} |",
            thousands(*level),
            fam.name(),
            case.name(),
            thousands(row.sources),
            ns[&Program::Pass],
            ns[&Program::Lpm],
            ns[&Program::Xdpguard],
            ns[&Program::Xdpguard] - ns[&Program::Pass],
        );
    }
    let hot_gap = target_gap(hot.iter());
    let varied_gap = target_gap(varied.iter().map(|(key, row)| (key, &row.ns)));
    let verdict = |gap: f64| if gap <= TARGET_NS { "met" } else { "NOT met" };
    let _ = writeln!(
        out,
        "\nTarget (0 entries, xdpguard within {TARGET_NS:.0} ns of XDP_PASS): hot worst gap {hot_gap:+.0} ns — {}; varied worst gap {varied_gap:+.1} ns — {}",
        verdict(hot_gap),
        verdict(varied_gap),
    );
    let _ = writeln!(
        out,
        "\nxdp-pass hot with run-time statistics on: {stats_on_pass_ns:.0} ns (the varied figures are taken with them on)."
    );
    out
}

/// Entries, xdpguard's maps' memory by name, the reference's (bytes).
type MemoryRow = (usize, Vec<(&'static str, u64)>, u64);

/// Kernel memory (`memlock` of each map, what `bpftool map show` prints) per level: xdpguard's
/// maps by name, and the reference's two tries.
fn memory_report(memory: &[MemoryRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Kernel memory (memlock per map, as `bpftool map show` prints it; MiB)\n"
    );
    let Some((_, first, _)) = memory.first() else {
        return out;
    };
    let names: Vec<&str> = first.iter().map(|(name, _)| *name).collect();
    let _ = writeln!(
        out,
        "| entries | {} | xdpguard total | per entry over 0 entries (bytes) | lpm-reference | per entry (bytes) |",
        names.join(" | ")
    );
    let _ = writeln!(
        out,
        "|---:|{}---:|---:|---:|---:|",
        "---:|".repeat(names.len())
    );
    let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
    let base: u64 = first.iter().map(|(_, bytes)| bytes).sum();
    for (level, maps, reference) in memory {
        let total: u64 = maps.iter().map(|(_, bytes)| bytes).sum();
        let cells: Vec<String> = maps
            .iter()
            .map(|(_, b)| format!("{:.2}", mib(*b)))
            .collect();
        let per_entry = |bytes: u64| {
            if *level == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}", bytes as f64 / *level as f64)
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {:.1} | {} |",
            thousands(*level),
            cells.join(" | "),
            mib(total),
            per_entry(total.saturating_sub(base)),
            mib(*reference),
            per_entry(*reference),
        );
    }
    out
}

/// The three programs of the xdp-filter comparison.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum FilterSide {
    Pass,
    XdpFilter,
    Xdpguard,
}

/// Sources per interleaved chunk of the xdp-filter comparison's many-source rows.
const FILTER_CHUNK: usize = 2_500;

/// Debian's xdp-filter (default allow policy, listed exact IP addresses dropped:
/// `xdpfilt_alw_ip.o`, loaded directly) at its own capacity, next to a fresh xdpguard holding
/// the same entries: the stream's first
/// `capacity` IPv4 and IPv6 hosts (xdp-filter has no prefixes). Hot: one frame, median of
/// `HOT_RUNS` × `HOT_REPEAT`, statistics off. Many sources: every entry, then as many
/// addresses no entry covers, each frame once, statistics on, in chunks interleaved across the
/// programs (median of the chunk means, min-max). Every verdict is checked.
fn xdp_filter_report(rng: &mut StdRng, entries: &[Prefix], all: &HashSet<Prefix>) -> String {
    let load_error = |err: xdpguard::enforce::dataplane::DataplaneError| -> ! {
        panic!("{}", xdpguard::error_chain(&err))
    };
    let mut filter = XdpFilter::load(std::path::Path::new(XDP_FILTER_OBJECT))
        .unwrap_or_else(|err| load_error(err));
    let pass = Baseline::load(BaselineKind::Pass).unwrap_or_else(|err| load_error(err));
    let mut ours = Dataplane::load(Capacities::default()).unwrap_or_else(|err| load_error(err));
    let capacity = filter.capacity() as usize;
    let mut hosts: BTreeMap<Fam, Vec<Prefix>> = BTreeMap::new();
    for prefix in entries.iter().filter(|p| p.is_host()) {
        let fam = if prefix.is_ipv4() { Fam::V4 } else { Fam::V6 };
        let list = hosts.entry(fam).or_default();
        if list.len() < capacity {
            list.push(*prefix);
        }
    }
    for (fam, list) in &hosts {
        for prefix in list {
            assert!(
                filter.insert(prefix.addr()).unwrap(),
                "xdp-filter full early"
            );
        }
        for result in ours.block_new(list, 0) {
            result.unwrap();
        }
        eprintln!(
            "bench: xdp-filter and xdpguard hold {} {} hosts",
            list.len(),
            fam.name()
        );
    }
    let run = |side: FilterSide, frame: &[u8], repeat: u32| {
        match side {
            FilterSide::Pass => pass.test_run(frame, repeat),
            FilterSide::XdpFilter => filter.test_run(frame, repeat),
            FilterSide::Xdpguard => ours.test_run(frame, repeat),
        }
        .unwrap()
    };
    let stats = |side: FilterSide| {
        match side {
            FilterSide::Pass => pass.run_stats(),
            FilterSide::XdpFilter => filter.run_stats(),
            FilterSide::Xdpguard => ours.run_stats(),
        }
        .unwrap()
    };
    let sides = [
        FilterSide::Pass,
        FilterSide::XdpFilter,
        FilterSide::Xdpguard,
    ];
    let expected = |side: FilterSide, hit: bool| {
        if hit && side != FilterSide::Pass {
            XDP_DROP
        } else {
            XDP_PASS
        }
    };
    let mut rows = Vec::new();
    for fam in [Fam::V4, Fam::V6] {
        let family_hosts: Vec<IpAddr> = hosts[&fam].iter().map(Prefix::addr).collect();
        let mut misses = Vec::new();
        let mut seen = HashSet::new();
        while misses.len() < family_hosts.len() {
            let addr: IpAddr = match fam {
                Fam::V4 => random_v4(rng).into(),
                Fam::V6 => random_doc_v6(rng).into(),
            };
            if !covered(all, addr) && seen.insert(addr) {
                misses.push(addr);
            }
        }
        let mut shuffled = family_hosts.clone();
        shuffled.shuffle(rng);
        for (case, sources) in [(Case::HitHost, shuffled), (Case::Miss, misses)] {
            let hit = case == Case::HitHost;
            // Hot.
            let frame = frame_of(sources[0]);
            let mut hot: BTreeMap<FilterSide, Vec<f64>> = BTreeMap::new();
            for _ in 0..HOT_RUNS {
                for side in sides {
                    let (action, duration) = run(side, &frame, HOT_REPEAT);
                    assert_eq!(action, expected(side, hit), "{side:?} hot {}", sources[0]);
                    hot.entry(side)
                        .or_default()
                        .push(duration.as_secs_f64() * 1e9);
                }
            }
            // Many sources, statistics on.
            let stats_fd = enable_run_stats().unwrap();
            let mut many: BTreeMap<FilterSide, Vec<f64>> = BTreeMap::new();
            for chunk in sources.chunks(FILTER_CHUNK) {
                let frames: Vec<Vec<u8>> = chunk.iter().copied().map(frame_of).collect();
                for side in sides {
                    let (time0, runs0) = stats(side);
                    for (frame, source) in frames.iter().zip(chunk) {
                        let (action, _) = run(side, frame, 1);
                        assert_eq!(action, expected(side, hit), "{side:?} {source}");
                    }
                    let (time1, runs1) = stats(side);
                    let runs = runs1 - runs0;
                    assert_eq!(runs, frames.len() as u64);
                    many.entry(side)
                        .or_default()
                        .push((time1 - time0).as_secs_f64() * 1e9 / runs as f64);
                }
            }
            drop(stats_fd);
            rows.push((fam, case, sources.len(), hot, many));
        }
    }
    let filter_memory = filter.kernel_memory().unwrap();
    let ours_memory: u64 = ours
        .kernel_memory()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("BLOCK_HOST"))
        .map(|(_, bytes)| bytes)
        .sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Next to Debian's xdp-filter at its capacity ({} exact addresses per family; xdpguard holds the same)\n",
        thousands(capacity)
    );
    let _ = writeln!(
        out,
        "\nKernel memory of the address maps holding these {} entries: xdp-filter {:.2} MiB (per-CPU values: it grows with the CPUs), xdpguard's host hashes {:.2} MiB.\n",
        thousands(hosts.values().map(Vec::len).sum::<usize>()),
        filter_memory as f64 / f64::from(1u32 << 20),
        ours_memory as f64 / f64::from(1u32 << 20),
    );
    let _ = writeln!(
        out,
        "| family | case | distinct sources | xdp-pass (hot) | xdp-filter (hot) | xdpguard (hot) | xdp-pass (many) | xdp-filter (many) | xdpguard (many) | xdp-filter − xdp-pass (many) | xdpguard − xdp-pass (many) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (fam, case, sources, hot, many) in rows {
        let hot: BTreeMap<FilterSide, f64> =
            hot.into_iter().map(|(side, v)| (side, median(v))).collect();
        let many: BTreeMap<FilterSide, (f64, f64, f64)> = many
            .into_iter()
            .map(|(side, v)| {
                let low = v.iter().copied().fold(f64::MAX, f64::min);
                let high = v.iter().copied().fold(f64::MIN, f64::max);
                (side, (median(v), low, high))
            })
            .collect();
        let cell = |(mid, low, high): (f64, f64, f64)| format!("{mid:.1} [{low:.0}-{high:.0}]");
        let pass_many = many[&FilterSide::Pass].0;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {:+.1} | {:+.1} |",
            fam.name(),
            case.name(),
            thousands(sources),
            hot[&FilterSide::Pass],
            hot[&FilterSide::XdpFilter],
            hot[&FilterSide::Xdpguard],
            cell(many[&FilterSide::Pass]),
            cell(many[&FilterSide::XdpFilter]),
            cell(many[&FilterSide::Xdpguard]),
            many[&FilterSide::XdpFilter].0 - pass_many,
            many[&FilterSide::Xdpguard].0 - pass_many,
        );
    }
    out
}
