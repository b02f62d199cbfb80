//! `cargo xtask bench apply` (root): time from `xdpguard block --file` to enforcement for 100k
//! and 1M addresses, next to `ipset restore` of the same list (Debian ipset, in a private
//! network namespace), and the daemon's resident memory per entry.
use std::{
    collections::HashSet, fmt::Write as _, io::Write as _, net::Ipv4Addr, process::Command,
    time::Instant,
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use xdpguard_testkit::{
    daemon::{Daemon, Workdir},
    netns::{FW_IF, Sandbox},
    xdpguard_binary,
};

/// 1,000 shows the fixed cost (CLI start, connection, the daemon's answer and sync).
const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
/// Rounds per size, interleaved (xdpguard, ipset, xdpguard, ...): the median is reported.
const ROUNDS: usize = 3;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn addresses(n: usize, rng: &mut StdRng) -> Vec<Ipv4Addr> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // 11.0.0.0-100.255.255.255: map entries only, never traffic.
        let addr = Ipv4Addr::from(rng.random_range(0x0b00_0000_u32..0x6500_0000));
        if seen.insert(addr) {
            out.push(addr);
        }
    }
    out
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(0xb10c);
    let mut report = format!(
        "\n| addresses | xdpguard block --file (s, median of {ROUNDS}, min-max) | ipset restore (s, median of {ROUNDS}, min-max) | ratio of medians | daemon RSS growth (bytes/entry) |\n|---:|---:|---:|---:|---:|\n",
    );
    for n in SIZES {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..ROUNDS {
            let (xdpguard, ipset, per_entry) = one_round(n, &mut rng);
            ours.push(xdpguard);
            theirs.push(ipset);
            rss.push(per_entry);
        }
        let cell = |mut values: Vec<f64>| {
            values.sort_by(f64::total_cmp);
            let median = values[values.len() / 2];
            (
                median,
                format!(
                    "{median:.3} [{:.3}-{:.3}]",
                    values[0],
                    values[values.len() - 1]
                ),
            )
        };
        let (ours_median, ours_cell) = cell(ours);
        let (theirs_median, theirs_cell) = cell(theirs);
        let (rss_median, _) = cell(rss);
        let _ = writeln!(
            report,
            "| {n} | {ours_cell} | {theirs_cell} | {:.2}× | {rss_median:.0} |",
            ours_median / theirs_median,
        );
    }
    print!("{report}");
}

/// One fresh daemon given the list, then `ipset restore` of the same: seconds each, and the
/// daemon's RSS growth per entry.
fn one_round(n: usize, rng: &mut StdRng) -> (f64, f64, f64) {
    let sandbox = Sandbox::new("apply");
    let workdir = Workdir::new("apply", xdpguard_binary!());
    workdir.write_config(FW_IF, 19_499, "");
    // The production default, not the tests' one second.
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        config.replace(
            "reconcile_interval = \"1s\"",
            "reconcile_interval = \"30s\"",
        ),
    )
    .unwrap();
    let list = workdir.path.join("list.netset");
    let restore = workdir.path.join("ipset.restore");
    {
        let addrs = addresses(n, rng);
        let mut netset = std::io::BufWriter::new(std::fs::File::create(&list).unwrap());
        let mut ipset = std::io::BufWriter::new(std::fs::File::create(&restore).unwrap());
        writeln!(netset, "# {n} addresses").unwrap();
        writeln!(
            ipset,
            "create bench hash:ip family inet hashsize 65536 maxelem {}",
            n * 2
        )
        .unwrap();
        for addr in &addrs {
            writeln!(netset, "{addr}").unwrap();
            writeln!(ipset, "add bench {addr}").unwrap();
        }
    }

    // xdpguard: fresh daemon, then the list; the CLI returns once every entry is in the
    // kernel maps and the decisions are synced to disk.
    let daemon = Daemon::start(&sandbox, &workdir);
    let rss_before = rss_kib(daemon.pid());
    let started = Instant::now();
    let output = daemon.cli(&["block", "--file", list.to_str().unwrap(), "--for", "1h"]);
    let xdpguard = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rss_after = rss_kib(daemon.pid());
    let status: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["status", "--json"]).stdout).unwrap();
    let entries = status["lists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["list"] == "block_host/ipv4")
        .unwrap()["entries"]
        .as_u64()
        .unwrap();
    assert_eq!(entries, n as u64);
    drop(daemon);

    // ipset restore of the same addresses, in the attacker namespace (ipset is per netns).
    let started = Instant::now();
    let output = Command::new("ip")
        .args(["netns", "exec", &sandbox.atk, "ipset", "restore", "-file"])
        .arg(&restore)
        .output()
        .unwrap();
    let ipset = started.elapsed();
    assert!(
        output.status.success(),
        "ipset: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = Command::new("ip")
        .args([
            "netns",
            "exec",
            &sandbox.atk,
            "ipset",
            "list",
            "bench",
            "-terse",
        ])
        .output()
        .unwrap();
    let terse = String::from_utf8_lossy(&listed.stdout);
    assert!(
        terse.contains(&format!("Number of entries: {n}")),
        "{terse}"
    );
    let _ = Command::new("ip")
        .args(["netns", "exec", &sandbox.atk, "ipset", "destroy", "bench"])
        .status();

    let per_entry = (rss_after.saturating_sub(rss_before) * 1024) as f64 / n as f64;
    eprintln!("apply: {n}: xdpguard {xdpguard:?}, ipset {ipset:?}");
    (xdpguard.as_secs_f64(), ipset.as_secs_f64(), per_entry)
}
