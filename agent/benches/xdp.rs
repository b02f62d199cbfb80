//! `cargo xtask bench xdp` (root): ns per packet of the xdpguard program next to an XDP_PASS
//! program and one stock LPM-trie lookup, at 0, 10k, 100k and 1M entries, IPv4 and IPv6, hit
//! and miss. Prints a Markdown report for docs/BENCHMARKS.md.
//!
//! - hot: one frame repeated by `BPF_PROG_TEST_RUN` (median of 5 runs of 1M repeats);
//! - varied: real frames with many distinct sources sent over the sandbox's veth pair (from an
//!   AF_PACKET socket in the attacker namespace, bounded count), cost per packet read from the
//!   kernel's run-time statistics of the attached program.
#[path = "../tests/support/frames.rs"]
mod frames;
#[path = "../tests/support/netns.rs"]
mod netns;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    time::Duration,
};

use frames::{udp4, udp6};
use netns::{ATK_IF, FW_IF, Sandbox, Side};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use xdpguard::{
    dataplane::{
        AttachMode, Capacities, Dataplane,
        baseline::{Baseline, BaselineKind, enable_run_stats},
    },
    prefix::Prefix,
};

const LEVELS: [usize; 4] = [0, 10_000, 100_000, 1_000_000];
const HOT_REPEAT: u32 = 1_000_000;
const HOT_RUNS: usize = 9;
const VARIED_FRAMES: usize = 200_000;
/// Distinct sources per varied run: IPv4 has only the two documentation /24s on the wire.
const VARIED_V6_SOURCES: usize = 65_536;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Program {
    Pass,
    Lpm,
    Xdpguard,
}

impl Program {
    const ALL: [Self; 3] = [Self::Pass, Self::Lpm, Self::Xdpguard];
    const fn name(self) -> &'static str {
        match self {
            Self::Pass => "xdp-pass",
            Self::Lpm => "lpm-reference",
            Self::Xdpguard => "xdpguard",
        }
    }
}

/// (entries, family, case, program) → (hot ns, varied ns).
type Results = BTreeMap<(usize, &'static str, &'static str, Program), (f64, Option<f64>)>;

/// The three programs with the same entries.
struct Programs {
    pass: Baseline,
    lpm: Baseline,
    ours: Dataplane,
}

impl Programs {
    fn load() -> Self {
        Self {
            pass: Baseline::load(BaselineKind::Pass).unwrap(),
            lpm: Baseline::load(BaselineKind::Lpm).unwrap(),
            ours: Dataplane::load(Capacities {
                block_prefix_v4: 524_288,
                block_prefix_v6: 524_288,
                ..Capacities::default()
            })
            .unwrap(),
        }
    }

    fn insert(&mut self, prefix: &Prefix) {
        self.lpm.insert(prefix).unwrap();
        self.ours.block(prefix, 0).unwrap();
    }

    fn hot(&self, program: Program, frame: &[u8]) -> (u32, f64) {
        let mut runs: Vec<(u32, Duration)> = (0..HOT_RUNS)
            .map(|_| match program {
                Program::Pass => self.pass.test_run(frame, HOT_REPEAT).unwrap(),
                Program::Lpm => self.lpm.test_run(frame, HOT_REPEAT).unwrap(),
                Program::Xdpguard => self.ours.test_run(frame, HOT_REPEAT).unwrap(),
            })
            .collect();
        runs.sort_by_key(|(_, duration)| *duration);
        let (action, median) = runs[HOT_RUNS / 2];
        (action, median.as_secs_f64() * 1e9)
    }
}

/// Random entries outside the ranges the probes and the sandbox use: 80% hosts, 20% prefixes
/// (/16-/24 for IPv4, /32-/64 for IPv6).
fn random_entry(rng: &mut StdRng, v6: bool) -> Prefix {
    let host = rng.random_range(0..10) < 8;
    if v6 {
        // 2400::/8-ish global space, never 2001:db8::/32.
        let addr = Ipv6Addr::from(
            0x2400_0000_0000_0000_0000_0000_0000_0000_u128 | rng.random::<u128>() >> 8,
        );
        let len = if host { 128 } else { rng.random_range(32..=64) };
        Prefix::new(addr.into(), len).unwrap()
    } else {
        // 11.0.0.0 - 100.255.255.255: clear of the documentation and private ranges used here.
        let addr = Ipv4Addr::from(rng.random_range(0x0b00_0000_u32..0x6500_0000));
        let len = if host { 32 } else { rng.random_range(16..=24) };
        Prefix::new(addr.into(), len).unwrap()
    }
}

/// Sources the varied runs send from: hit sources get host entries, miss sources none.
struct VariedSources {
    v4_hit: Vec<IpAddr>,
    v4_miss: Vec<IpAddr>,
    v6_hit: Vec<IpAddr>,
    v6_miss: Vec<IpAddr>,
}

fn varied_sources(rng: &mut StdRng) -> VariedSources {
    let v4 = |base: [u8; 3]| -> Vec<IpAddr> {
        (1..=254)
            .map(|last| IpAddr::from([base[0], base[1], base[2], last]))
            .collect()
    };
    let mut v6 = |block: u128| -> Vec<IpAddr> {
        (0..VARIED_V6_SOURCES)
            .map(|_| {
                IpAddr::V6(Ipv6Addr::from(
                    block | (rng.random::<u128>() & ((1 << 80) - 1)),
                ))
            })
            .collect()
    };
    VariedSources {
        v4_hit: v4([203, 0, 113]),
        v4_miss: v4([198, 51, 100]),
        v6_hit: v6(0x2001_0db8_000a_0000_0000_0000_0000_0000),
        v6_miss: v6(0x2001_0db8_000b_0000_0000_0000_0000_0000),
    }
}

/// Send `VARIED_FRAMES` frames round-robin over `sources` from the attacker side.
fn send_frames(sandbox: &Sandbox, frames: &[Vec<u8>]) {
    sandbox.within(Side::Attacker, || {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: we own the fd.
        let socket: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        let ifname = std::ffi::CString::new(ATK_IF).unwrap();
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
        addr.sll_ifindex = i32::try_from(ifindex).unwrap();
        addr.sll_halen = 6;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        for i in 0..VARIED_FRAMES {
            let frame = &frames[i % frames.len()];
            // SAFETY: valid buffer and address for sendto(2).
            let sent = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    u32::try_from(size_of::<libc::sockaddr_ll>()).unwrap(),
                )
            };
            if sent < 0 {
                let err = std::io::Error::last_os_error();
                // The veth queue is full: give the receiver a moment.
                assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS), "sendto: {err}");
                std::thread::sleep(Duration::from_micros(50));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sending took over a minute"
            );
        }
    });
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let probe_v4_hit = Ipv4Addr::new(11, 0, 0, 1);
    let probe_v4_miss = Ipv4Addr::new(198, 18, 0, 1);
    let probe_v6_hit: Ipv6Addr = "2400::1".parse().unwrap();
    let probe_v6_miss: Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
    let sources = varied_sources(&mut rng);

    let mut programs = Programs::load();
    // Probes and varied hit sources are hosts in every non-empty level.
    let mut fixed: Vec<Prefix> = vec![
        Prefix::host(probe_v4_hit.into()),
        Prefix::host(probe_v6_hit.into()),
    ];
    fixed.extend(
        sources
            .v4_hit
            .iter()
            .chain(&sources.v6_hit)
            .map(|a| Prefix::host(*a)),
    );

    let sandbox = Sandbox::new("bench");
    let _stats = enable_run_stats().unwrap();
    let frames_of = |sources: &[IpAddr]| -> Vec<Vec<u8>> {
        sources
            .iter()
            .map(|source| match source {
                IpAddr::V4(v4) => udp4(*v4),
                IpAddr::V6(v6) => udp6(*v6),
            })
            .collect()
    };
    let varied_frames = [
        ("ipv4", "hit", frames_of(&sources.v4_hit)),
        ("ipv4", "miss", frames_of(&sources.v4_miss)),
        ("ipv6", "hit", frames_of(&sources.v6_hit)),
        ("ipv6", "miss", frames_of(&sources.v6_miss)),
    ];

    // (level, family, case, program) → (hot ns, varied ns)
    let mut results: Results = BTreeMap::new();
    let mut inserted = 0;
    for level in LEVELS {
        if level > 0 && inserted == 0 {
            for prefix in &fixed {
                programs.insert(prefix);
            }
            inserted += fixed.len();
        }
        while inserted < level {
            let v6 = inserted % 2 == 1;
            programs.insert(&random_entry(&mut rng, v6));
            inserted += 1;
        }
        eprintln!("bench: {level} entries loaded");
        for (family, case, frame, expect_drop) in [
            ("ipv4", "hit", udp4(probe_v4_hit), true),
            ("ipv4", "miss", udp4(probe_v4_miss), false),
            ("ipv6", "hit", udp6(probe_v6_hit), true),
            ("ipv6", "miss", udp6(probe_v6_miss), false),
        ] {
            if level == 0 && case == "hit" {
                continue;
            }
            for program in Program::ALL {
                let (action, ns) = programs.hot(program, &frame);
                let expected = if expect_drop && program != Program::Pass {
                    1
                } else {
                    2
                };
                assert_eq!(
                    action,
                    expected,
                    "{} {family} {case} at {level}",
                    program.name()
                );
                let _ = results.insert((level, family, case, program), (ns, None));
            }
        }
        // Varied sources over the veth pair, one attached program at a time.
        for (family, case, frames) in &varied_frames {
            if level == 0 && *case == "hit" {
                continue;
            }
            for program in Program::ALL {
                let ns = sandbox.within(Side::Firewall, || match program {
                    Program::Pass => measure(&sandbox, frames, &mut programs.pass),
                    Program::Lpm => measure(&sandbox, frames, &mut programs.lpm),
                    Program::Xdpguard => measure_ours(&sandbox, frames, &mut programs.ours),
                });
                if let Some(entry) = results.get_mut(&(level, *family, *case, program)) {
                    entry.1 = Some(ns);
                }
            }
        }
    }
    drop(sandbox);
    print!("{}", report(&results));
}

/// Attach a baseline, send, detach.
fn measure(sandbox: &Sandbox, frames: &[Vec<u8>], baseline: &mut Baseline) -> f64 {
    let link = baseline.attach(FW_IF).unwrap();
    let (time0, count0) = baseline.run_stats().unwrap();
    send_frames(sandbox, frames);
    let (time1, count1) = baseline.run_stats().unwrap();
    baseline.detach(link).unwrap();
    per_packet(time1 - time0, count1 - count0)
}

fn measure_ours(sandbox: &Sandbox, frames: &[Vec<u8>], ours: &mut Dataplane) -> f64 {
    ours.attach(FW_IF, AttachMode::Native).unwrap();
    let (time0, count0) = ours.run_stats().unwrap();
    send_frames(sandbox, frames);
    let (time1, count1) = ours.run_stats().unwrap();
    ours.detach(FW_IF).unwrap();
    per_packet(time1 - time0, count1 - count0)
}

fn per_packet(time: Duration, count: u64) -> f64 {
    assert!(
        count >= VARIED_FRAMES as u64 / 2,
        "only {count} runs for {VARIED_FRAMES} frames"
    );
    time.as_secs_f64() * 1e9 / count as f64
}

fn report(results: &Results) -> String {
    let mut out = String::new();
    for (title, varied) in [
        (
            "Hot: one frame repeated by BPF_PROG_TEST_RUN (ns/packet, median of 9 × 1M)",
            false,
        ),
        (
            "Varied sources: real frames over veth, run_time_ns / run_cnt of the attached program (ns/packet)",
            true,
        ),
    ] {
        let _ = writeln!(out, "\n### {title}\n");
        let _ = writeln!(
            out,
            "| entries | family | case | xdp-pass | lpm-reference | xdpguard | xdpguard − xdp-pass |"
        );
        let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|");
        let mut rows: Vec<(usize, &str, &str)> =
            results.keys().map(|(l, f, c, _)| (*l, *f, *c)).collect();
        rows.dedup();
        for (level, family, case) in rows {
            let value = |p| {
                results
                    .get(&(level, family, case, p))
                    .and_then(|(hot, var)| if varied { *var } else { Some(*hot) })
            };
            let (Some(pass), Some(lpm), Some(ours)) = (
                value(Program::Pass),
                value(Program::Lpm),
                value(Program::Xdpguard),
            ) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {level} | {family} | {case} | {pass:.1} | {lpm:.1} | {ours:.1} | {:+.1} |",
                ours - pass
            );
        }
    }
    let target: Vec<f64> = results
        .iter()
        .filter(|((level, _, _, p), _)| *level == 0 && *p == Program::Xdpguard)
        .map(|((_, f, c, _), (hot, _))| hot - results[&(0, *f, *c, Program::Pass)].0)
        .collect();
    let worst = target.iter().copied().fold(f64::MIN, f64::max);
    let _ = writeln!(
        out,
        "\nTarget (hot, 0 entries, within 15 ns of XDP_PASS): worst gap {worst:.1} ns — {}",
        if worst <= 15.0 { "met" } else { "NOT met" }
    );
    out
}
