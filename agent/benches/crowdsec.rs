//! `cargo xtask bench crowdsec` (root): 100,000 CrowdSec decisions imported with `cscli
//! decisions import` into a real local API (Debian's crowdsec, in the sandbox's firewall
//! namespace), and the time until a bouncer enforces all of them: xdpguard (kernel list
//! entries) and Debian's crowdsec-firewall-bouncer in nftables mode (set elements), each with
//! its own fresh LAPI and a 1 s poll, one after the other, `ROUNDS` times interleaved; the
//! enforced count is read every 0.5 s. (Its ipset mode enforced nothing in the sandbox within
//! the limit; not measured.) Prints a Markdown table for docs/BENCHMARKS.md.
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
    crowdsec::Crowdsec,
    daemon::{Children, Daemon, Workdir},
    netns::{FW_IF, Sandbox},
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
}

impl Contender {
    const ALL: [Self; 2] = [Self::Xdpguard, Self::Nftables];

    const fn name(self) -> &'static str {
        match self {
            Self::Xdpguard => "xdpguard",
            Self::Nftables => "crowdsec-firewall-bouncer (nftables)",
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
    let in_fw = |args: &[&str]| {
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
            let text = in_fw(&[
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
    }
}

/// Import seconds, seconds to 99.9%, seconds to all (if within the limit), enforced at the end.
type Round = (f64, f64, Option<f64>, usize);

/// One round: seconds of the import, from its start to 99.9% enforced, to all enforced (if
/// within the limit), and how many were enforced at the end.
fn round(contender: Contender, port: u16, rng: &mut StdRng) -> Round {
    let sandbox = Sandbox::new("csbench");
    let workdir = Workdir::new("csbench", xdpguard_binary!());
    let mut lapi = Crowdsec::start(&sandbox, &workdir.path.join("crowdsec"), port);
    let file = workdir.path.join("decisions.csv");
    decisions_file(&file, rng);
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
        Contender::Nftables => {
            let mode = "nftables";
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
    let most = most.unwrap_or_else(|| {
        panic!(
            "{} enforced {n} of {DECISIONS} after {LIMIT:?}",
            contender.name()
        )
    });
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
        let _ = writeln!(
            report,
            "| {} | {:.2} | {mid:.2} [{low:.2}-{high:.2}] | {:.1}× | {} | {} |",
            contender.name(),
            median(rounds.iter().map(|r| r.0).collect()),
            mid / ours,
            all.join(", "),
            end.join(", ")
        );
    }
    print!("{report}");
}
