//! `cargo xtask bench crowdsec` (root): 100,000 CrowdSec decisions imported with `cscli
//! decisions import` into a real local API (Debian's crowdsec, in the sandbox's firewall
//! namespace), and the time until a bouncer enforces all of them: xdpguard (kernel list
//! entries) and Debian's crowdsec-firewall-bouncer in nftables mode (set elements) and in
//! iptables mode (ipset elements behind one iptables rule), each with
//! its own fresh LAPI and a 1 s poll, one after the other, `ROUNDS` times interleaved; the
//! enforced count is read every 0.5 s. (Its `ipset` mode only fills a set the operator made and
//! matches in a rule of their own; `iptables` mode is that, made by the bouncer.) Then, with the 100k in place plus one more decision for a source
//! of the sandbox, the cost per packet of real frames over the veth pair: a listed source and
//! an unlisted one, against the same frames before the bouncer started (busy CPU time of the
//! whole machine per frame, /proc/stat; for xdpguard also the XDP program's own run time).
//! Prints Markdown tables for docs/BENCHMARKS.md.
use std::{
    collections::HashSet,
    fmt::Write as _,
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use xdpguard_testkit::{
    baseline::{Baseline, BaselineKind, enable_run_stats},
    crowdsec::{Crowdsec, signal_all},
    daemon::{Children, Daemon, Workdir},
    frames::udp4,
    netns::{FW_IF, FW_V4, Sandbox, Side},
    report::{load_average, machine, median},
    xdpguard_binary,
};

const DECISIONS: usize = 100_000;
/// Rounds (each takes minutes: the nftables bouncer alone about three).
const ROUNDS: usize = 1;
/// Longest wait for a bouncer to enforce everything it will.
const LIMIT: Duration = Duration::from_secs(300);
/// Enforced counts as "all" from this share on: the LAPI's deltas can miss a few decisions of
/// a large import (their inserts commit after a poll that their creation time precedes);
/// xdpguard picks those up at its next full read, the firewall bouncer never.
const ENOUGH: usize = DECISIONS - DECISIONS / 1000;
/// xdpguard's full read here (the default is 5 minutes).
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Xdpguard,
    Nftables,
    /// Its `iptables` mode: an ipset `hash:net` set and one iptables rule.
    Ipset,
}

impl Contender {
    const ALL: [Self; 3] = [Self::Xdpguard, Self::Nftables, Self::Ipset];

    const fn name(self) -> &'static str {
        match self {
            Self::Xdpguard => "xdpguard",
            Self::Nftables => "crowdsec-firewall-bouncer (nftables)",
            Self::Ipset => "crowdsec-firewall-bouncer (iptables + ipset)",
        }
    }
}

fn decisions_file(path: &std::path::Path, rng: &mut StdRng) {
    let mut seen = HashSet::with_capacity(DECISIONS);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "duration,scope,type,value").unwrap();
    while seen.len() < DECISIONS {
        // 11.0.0.0-100.255.255.255: map and set entries only, never traffic.
        let addr = Ipv4Addr::from(rng.random_range(0x0b00_0000_u32..0x6500_0000));
        if seen.insert(addr) {
            writeln!(out, "4h,ip,ban,{addr}").unwrap();
        }
    }
}

/// How many of the decisions the contender enforces now.
fn enforced(contender: Contender, sandbox: &Sandbox, daemon: Option<&Daemon>) -> usize {
    let output = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &sandbox.fw])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    match contender {
        Contender::Xdpguard => {
            let out = daemon.unwrap().cli(&["status", "--json"]);
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let entries = status["lists"]
                .as_array()
                .and_then(|lists| lists.iter().find(|l| l["list"] == "block_host/ipv4"))
                .and_then(|list| list["entries"].as_u64())
                .unwrap_or(0);
            usize::try_from(entries).unwrap_or(usize::MAX)
        }
        Contender::Nftables => {
            let text = output(&[
                "nft",
                "list",
                "set",
                "ip",
                "crowdsec",
                "crowdsec-blacklists",
            ]);
            let Some(start) = text.find("elements = {") else {
                return 0;
            };
            text[start..].matches(',').count() + 1
        }
        Contender::Ipset => output(&["ipset", "list", "crowdsec-blacklists", "-t"])
            .lines()
            .find_map(|line| line.strip_prefix("Number of entries: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0),
    }
}

/// Import seconds, seconds to 99.9%, seconds to all (if within the limit), enforced at the
/// end; the cost per packet.
type Round = (f64, f64, Option<f64>, usize, PacketCost);

/// Frames per measurement, and measurements per case (listed and unlisted interleaved).
const FRAMES: usize = 2_000_000;
const PACKET_RUNS: usize = 5;
/// A source the bouncer is told to ban (besides the 100k), and one it is not.
const LISTED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const UNLISTED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 8);

/// ns of busy CPU (the whole machine) per frame: before the bouncer, from the listed source,
/// from the unlisted one; xdpguard's program run time per frame (listed, unlisted).
#[derive(Clone, Copy, Debug)]
struct PacketCost {
    before: f64,
    /// With a bare `XDP_PASS` program on the interface: veth's XDP mode costs a copy of each
    /// frame into an XDP buffer, which NIC drivers do not (the fair start for xdpguard).
    before_xdp_pass: f64,
    /// nftables: the unlisted source with the ruleset flushed, between the runs with it.
    without: Option<f64>,
    /// Whether the bouncer blocked the listed source at all (a full ipset takes no more).
    listed_blocked: bool,
    listed: f64,
    unlisted: f64,
    program: Option<(f64, f64)>,
}

/// A UDP frame from `src` to the firewall with a valid IPv4 header checksum (the stack drops a
/// bad one before any netfilter hook).
fn frame(src: Ipv4Addr) -> Vec<u8> {
    let mut frame = udp4(src);
    let header = &mut frame[14..34];
    header[10] = 0;
    header[11] = 0;
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = !u16::try_from(sum).unwrap_or(0);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    frame
}

/// `PROGRAM ARGS` in the firewall namespace; its standard output.
fn in_fw(sandbox: &Sandbox, program: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &sandbox.fw, program])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Busy CPU time of the machine since boot (user, nice, system, irq, softirq, steal), ns.
fn busy_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    // USER_HZ is 100 on Linux: one tick is 10 ms.
    [0, 1, 2, 5, 6, 7].iter().map(|&i| fields[i]).sum::<u64>() * 10_000_000
}

/// Send `FRAMES` copies of `frame` unpaced; busy ns per frame the kernel took.
fn ns_per_frame(sandbox: &Sandbox, frame: &[u8]) -> f64 {
    let before = busy_ns();
    let sent = sandbox.send_frames(&[frame.to_vec()], None, FRAMES);
    (busy_ns() - before) as f64 / sent.max(1) as f64
}

/// The XDP program's run time per frame over one unpaced run of `frame` (run statistics on).
fn program_ns(sandbox: &Sandbox, workdir: &Workdir, frame: &[u8]) -> f64 {
    let pin = workdir.pin_dir().join("program");
    let read = || {
        let info = aya::programs::ProgramInfo::from_pin(&pin).unwrap();
        (info.run_time(), info.run_count())
    };
    let (time0, runs0) = read();
    let _ = sandbox.send_frames(&[frame.to_vec()], None, FRAMES);
    let (time1, runs1) = read();
    (time1 - time0).as_nanos() as f64 / (runs1 - runs0).max(1) as f64
}

/// One round: seconds of the import, from its start to 99.9% enforced, to all enforced (if
/// within the limit), and how many were enforced at the end.
fn round(contender: Contender, port: u16, rng: &mut StdRng) -> Round {
    let sandbox = Sandbox::new("csbench");
    let workdir = Workdir::new("csbench", xdpguard_binary!());
    let mut lapi = Crowdsec::start(&sandbox, &workdir.path.join("crowdsec"), port);
    let file = workdir.path.join("decisions.csv");
    decisions_file(&file, rng);
    for source in [LISTED, UNLISTED] {
        sandbox.add_source(source.into());
    }
    let (listed_frame, unlisted_frame) = (frame(LISTED), frame(UNLISTED));
    lapi.pause(true);
    let runs = |frame: &[u8]| {
        median(
            (0..PACKET_RUNS)
                .map(|_| ns_per_frame(&sandbox, frame))
                .collect(),
        )
    };
    let before = runs(&unlisted_frame);
    let before_xdp_pass = {
        let mut pass = Baseline::load(BaselineKind::Pass).unwrap();
        let link = sandbox.within(Side::Firewall, || pass.attach(FW_IF).unwrap());
        let cost = runs(&unlisted_frame);
        pass.detach(link).unwrap();
        cost
    };
    lapi.pause(false);
    let mut daemon = None;
    let mut bouncer = None;
    match contender {
        Contender::Xdpguard => {
            workdir.write_config(
                FW_IF,
                19_541,
                &format!(
                    "[crowdsec]\nlapi_url = \"{}\"\napi_key = \"{}\"\npoll_interval = \"1s\"\nresync_interval = \"{}s\"\n",
                    lapi.url(),
                    lapi.key(),
                    RESYNC.as_secs()
                ),
            );
            daemon = Some(Daemon::start(&sandbox, &workdir));
        }
        Contender::Nftables | Contender::Ipset => {
            let mode = if contender == Contender::Ipset {
                "iptables"
            } else {
                "nftables"
            };
            let key = lapi.add_bouncer(&sandbox, "firewall-bouncer");
            let config = workdir.path.join("firewall-bouncer.yaml");
            std::fs::write(
                &config,
                format!(
                    "mode: {mode}\npid_dir: {dir}/\nupdate_frequency: 1s\ndaemonize: false\nlog_mode: file\nlog_dir: {dir}/\nlog_level: info\napi_url: {url}\napi_key: {key}\ninsecure_skip_verify: false\ndisable_ipv6: false\ndeny_action: DROP\ndeny_log: false\nsupported_decisions_types:\n  - ban\nblacklists_ipv4: crowdsec-blacklists\nblacklists_ipv6: crowdsec6-blacklists\nipset_type: nethash\niptables_chains:\n  - INPUT\nnftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: crowdsec\n    chain: crowdsec-chain\n  ipv6:\n    enabled: true\n    set-only: false\n    table: crowdsec6\n    chain: crowdsec6-chain\nprometheus:\n  enabled: false\n",
                    dir = workdir.path.display(),
                    url = lapi.url(),
                ),
            )
            .unwrap();
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &sandbox.fw,
                    "crowdsec-firewall-bouncer",
                    "-c",
                ])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            bouncer = Some(Children(vec![child]));
            // Ready when it has set up its set (nftables) and pulled once.
            std::thread::sleep(Duration::from_secs(3));
        }
    }
    let started = Instant::now();
    let out = lapi.cscli(
        &sandbox,
        &["decisions", "import", "-i", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "cscli decisions import: {out:?}");
    let imported = started.elapsed();
    let mut most = None;
    let mut all = None;
    let mut n = 0;
    while started.elapsed() < LIMIT {
        n = enforced(contender, &sandbox, daemon.as_ref());
        if n >= ENOUGH && most.is_none() {
            most = Some(started.elapsed());
        }
        if n >= DECISIONS {
            all = Some(started.elapsed());
            break;
        }
        // Every half second for everyone: listing a large nftables set is itself work for
        // the kernel, and must not slow the bouncer it measures.
        std::thread::sleep(Duration::from_millis(500));
    }
    // Not reached within the limit: the limit is a lower bound (the report says so).
    let most = most.unwrap_or_else(|| {
        eprintln!(
            "bench: {} enforced {n} of {DECISIONS} after {LIMIT:?}",
            contender.name()
        );
        LIMIT
    });
    // One more decision, for a source of the sandbox: frames from it are the listed case.
    let out = lapi.cscli(
        &sandbox,
        &[
            "decisions",
            "add",
            "--ip",
            &LISTED.to_string(),
            "--duration",
            "4h",
        ],
    );
    assert!(out.status.success(), "cscli decisions add: {out:?}");
    // A full set takes no more (the ipset's 65,536 elements): then the listed source passes.
    let waited = Instant::now();
    let mut listed_blocked = true;
    while sandbox.ping(LISTED.into(), FW_V4, 1) == 1 {
        if waited.elapsed() > Duration::from_secs(60) {
            eprintln!(
                "bench: {} did not block {LISTED} within 60 s",
                contender.name()
            );
            listed_blocked = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Frozen while frames are counted: the LAPI, the bouncer and the daemon keep their own
    // work (a full read, a reconcile) out of the CPU time. The kernel's lists stay as they are.
    lapi.pause(true);
    if let Some(bouncer) = &bouncer {
        signal_all(bouncer, true);
    }
    if let Some(daemon) = &daemon {
        daemon.signal(libc::SIGSTOP);
    }
    let mut listed = Vec::new();
    let mut unlisted = Vec::new();
    // nftables: the same frames with the bouncer's ruleset flushed and restored between runs,
    // so "without" is measured at the same moment as "with".
    let mut without = Vec::new();
    // ipset: the same with its iptables rule taken out and put back.
    let saved = workdir.path.join("ruleset.nft");
    if contender == Contender::Nftables {
        let ruleset = in_fw(&sandbox, "nft", &["list", "ruleset"]);
        std::fs::write(&saved, ruleset).unwrap();
    }
    let rule = [
        "INPUT",
        "-m",
        "set",
        "--match-set",
        "crowdsec-blacklists",
        "src",
        "-j",
        "DROP",
    ];
    for _ in 0..PACKET_RUNS {
        listed.push(ns_per_frame(&sandbox, &listed_frame));
        unlisted.push(ns_per_frame(&sandbox, &unlisted_frame));
        match contender {
            Contender::Xdpguard => {}
            Contender::Nftables => {
                let _ = in_fw(&sandbox, "nft", &["flush", "ruleset"]);
                without.push(ns_per_frame(&sandbox, &unlisted_frame));
                let _ = in_fw(&sandbox, "nft", &["-f", saved.to_str().unwrap()]);
            }
            Contender::Ipset => {
                let _ = in_fw(&sandbox, "iptables", &[&["-D"][..], &rule].concat());
                without.push(ns_per_frame(&sandbox, &unlisted_frame));
                let _ = in_fw(&sandbox, "iptables", &[&["-I"][..], &rule].concat());
            }
        }
    }
    let program = daemon.as_ref().map(|_| {
        let _stats = enable_run_stats().unwrap();
        (
            program_ns(&sandbox, &workdir, &listed_frame),
            program_ns(&sandbox, &workdir, &unlisted_frame),
        )
    });
    lapi.pause(false);
    if let Some(bouncer) = &bouncer {
        signal_all(bouncer, false);
    }
    if let Some(daemon) = &daemon {
        daemon.signal(libc::SIGCONT);
    }
    let packets = PacketCost {
        before,
        before_xdp_pass,
        without: (!without.is_empty()).then(|| median(without)),
        listed_blocked,
        listed: median(listed),
        unlisted: median(unlisted),
        program,
    };
    eprintln!("bench: {}: per packet {packets:?}", contender.name());
    drop(bouncer);
    drop(daemon);
    lapi.stop();
    eprintln!(
        "bench: {}: import {:.2} s, 99.9% enforced after {:.2} s, all after {all:?}, {n} at the end",
        contender.name(),
        imported.as_secs_f64(),
        most.as_secs_f64()
    );
    (
        imported.as_secs_f64(),
        most.as_secs_f64(),
        all.map(|d| d.as_secs_f64()),
        n,
        packets,
    )
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let load_at_start = load_average();
    let mut rng = StdRng::seed_from_u64(0xc5_0100);
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); Contender::ALL.len()];
    // XDPGUARD_BENCH_ONLY=nftables (part of a contender's name) runs that one alone.
    let only = std::env::var("XDPGUARD_BENCH_ONLY").ok();
    for _ in 0..ROUNDS {
        for (i, contender) in Contender::ALL.iter().enumerate() {
            if only
                .as_deref()
                .is_some_and(|only| !contender.name().contains(only))
            {
                continue;
            }
            let port = 18_130 + u16::try_from(i).unwrap_or(0);
            results[i].push(round(*contender, port, &mut rng));
        }
    }
    let mut report = format!(
        "\n{}; 1-minute load average {load_at_start} at the start, {} at the end\n\n| bouncer | cscli import of {DECISIONS} (s, median) | import start → 99.9% enforced (s, median of {ROUNDS}, min-max) | × xdpguard's time | → all enforced (s, per round; – : not within {} s) | enforced at the end (per round) |\n|---|---:|---:|---:|---|---|\n",
        machine(),
        load_average(),
        LIMIT.as_secs()
    );
    let ours = if results[0].is_empty() {
        f64::NAN
    } else {
        median(results[0].iter().map(|r| r.1).collect())
    };
    let results_for_packets = results.clone();
    for (contender, rounds) in Contender::ALL.iter().zip(results) {
        if rounds.is_empty() {
            continue;
        }
        let most: Vec<f64> = rounds.iter().map(|r| r.1).collect();
        let low = most.iter().copied().fold(f64::MAX, f64::min);
        let high = most.iter().copied().fold(f64::MIN, f64::max);
        let mid = median(most);
        let all: Vec<String> = rounds
            .iter()
            .map(|r| r.2.map_or_else(|| "–".to_owned(), |s| format!("{s:.1}")))
            .collect();
        let end: Vec<String> = rounds.iter().map(|r| r.3.to_string()).collect();
        // A round that never reached 99.9% counts the limit: a lower bound.
        let bound = if rounds.iter().any(|r| r.3 < ENOUGH) {
            "≥ "
        } else {
            ""
        };
        let _ = writeln!(
            report,
            "| {} | {:.2} | {bound}{mid:.2} [{low:.2}-{high:.2}] | {bound}{:.1}× | {} | {} |",
            contender.name(),
            median(rounds.iter().map(|r| r.0).collect()),
            mid / ours,
            all.join(", "),
            end.join(", ")
        );
    }
    let _ = write!(
        report,
        "\n### Cost per packet with the 100k decisions in place: {FRAMES} UDP frames per run over the veth pair, busy CPU of the whole machine per frame (ns, median of {PACKET_RUNS} runs; sender, veth and receiver together; LAPI, bouncer and daemon frozen meanwhile)\n\n| bouncer | no filter (before) | XDP_PASS attached (before) | rule(set) taken out (interleaved) | listed source | Δ | unlisted source | Δ | XDP program run time (listed / unlisted) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for (contender, rounds) in Contender::ALL.iter().zip(&results_for_packets) {
        for round in rounds {
            let cost = round.4;
            // xdpguard's frames go through veth's XDP mode; nftables' do not.
            let start = if cost.program.is_some() {
                cost.before_xdp_pass
            } else {
                cost.without.unwrap_or(cost.before)
            };
            let _ = writeln!(
                report,
                "| {} | {:.0} | {:.0} | {} | {:.0}{} | {:+.0} | {:.0} | {:+.0} | {} |",
                contender.name(),
                cost.before,
                cost.before_xdp_pass,
                cost.without
                    .map_or_else(|| "–".to_owned(), |ns| format!("{ns:.0}")),
                cost.listed,
                if cost.listed_blocked {
                    ""
                } else {
                    " (not blocked: set full)"
                },
                cost.listed - start,
                cost.unlisted,
                cost.unlisted - start,
                cost.program
                    .map_or_else(|| "–".to_owned(), |(l, u)| format!("{l:.0} / {u:.0}")),
            );
        }
    }
    print!("{report}");
}
