//! `cargo xtask bench scoring`: lines per second on one core, next to `fail2ban-regex` (Debian
//! fail2ban) on the same file, and whether both find the same offending addresses:
//! - the sshd ruleset over a generated 1M-line auth log (about 10% attack lines), in its
//!   default mode and with every mode's rules on (`aggressive`), against the sshd filter in
//!   the same modes;
//! - the web rulesets (`rulesets/nginx.toml`) over a generated 1M-line nginx access log (3%
//!   scanners) against the nginx-botsearch filter;
//! - and what one remembered session of the multi-line rules costs in memory.
//!
//! Prints a Markdown report for docs/BENCHMARKS.md.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::{BufReader, Write as _},
    net::IpAddr,
    path::Path,
    process::Command,
    time::Instant,
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use xdpguard::{
    detect::logs::correlate::{SessionLimits, Sessions},
    detect::logs::ruleset::{self, Ruleset},
    detect::logs::score::ScoringPolicy,
    tools::check::check,
};

const LINES: usize = 1_000_000;

/// The generated log, and the addresses its attack lines name.
fn generate(path: &Path) -> BTreeSet<IpAddr> {
    let mut rng = StdRng::seed_from_u64(0xa11);
    // Documentation ranges only: 250 IPv4 attackers and 1,750 IPv6 ones.
    let attackers: Vec<IpAddr> = (1..=250u8)
        .map(|last| IpAddr::from([203, 0, 113, last]))
        .chain((1..=1750u32).map(|i| IpAddr::V6(format!("2001:db8:bad::{i:x}").parse().unwrap())))
        .collect();
    let mut named = BTreeSet::new();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for n in 0..LINES {
        let (s, m) = ((n / 60) % 60, n % 60);
        let stamp = format!("Nov 22 10:{s:02}:{m:02} web1");
        let pid = 1000 + n % 5000;
        let port = 1024 + n % 60000;
        if rng.random_range(0..10) == 0 {
            let addr = attackers[rng.random_range(0..attackers.len())];
            let _ = named.insert(addr);
            match rng.random_range(0..3) {
                0 => writeln!(out, "{stamp} sshd[{pid}]: Failed password for root from {addr} port {port} ssh2"),
                1 => writeln!(out, "{stamp} sshd[{pid}]: Invalid user admin from {addr} port {port}"),
                _ => writeln!(out, "{stamp} sshd[{pid}]: Failed password for invalid user oracle from {addr} port {port} ssh2"),
            }
            .unwrap();
        } else {
            let client = format!("198.51.100.{}", 1 + n % 250);
            match rng.random_range(0..4) {
                0 => writeln!(out, "{stamp} sshd[{pid}]: Accepted publickey for deploy from {client} port {port} ssh2: ED25519 SHA256:Zm9vYmFy"),
                1 => writeln!(out, "{stamp} sshd[{pid}]: pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)"),
                2 => writeln!(out, "{stamp} sshd[{pid}]: Received disconnect from {client} port {port}:11: disconnected by user"),
                _ => writeln!(out, "{stamp} CRON[{pid}]: pam_unix(cron:session): session closed for user root"),
            }
            .unwrap();
        }
    }
    out.flush().unwrap();
    named
}

/// A generated 1M-line nginx access log: clean requests from 198.51.100.0/24, and 3% scanners
/// (documentation ranges) asking for paths that do not exist; the scanners' addresses.
fn generate_access(path: &Path) -> BTreeSet<IpAddr> {
    let mut rng = StdRng::seed_from_u64(0xbee);
    let scanners: Vec<IpAddr> = (1..=200u8)
        .map(|last| IpAddr::from([203, 0, 113, last]))
        .chain((1..=300u32).map(|i| IpAddr::V6(format!("2001:db8:bad::{i:x}").parse().unwrap())))
        .collect();
    let probes = [
        "/wp-login.php",
        "/phpmyadmin/index.php",
        "/webmail/",
        "/roundcube/",
        "/wp-admin/setup-config.php",
    ];
    let pages = [
        "/",
        "/index.html",
        "/blog/2026/11/notes.html",
        "/static/app.js",
        "/static/style.css",
        "/api/v1/items?page=2",
        "/favicon.ico",
    ];
    let mut named = BTreeSet::new();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for n in 0..LINES {
        let (m, s) = ((n / 60) % 60, n % 60);
        let stamp = format!("[22/Nov/2026:10:{m:02}:{s:02} +0000]");
        if rng.random_range(0..100) < 3 {
            let addr = scanners[rng.random_range(0..scanners.len())];
            let _ = named.insert(addr);
            let path = probes[rng.random_range(0..probes.len())];
            writeln!(
                out,
                "{addr} - - {stamp} \"GET {path} HTTP/1.1\" 404 153 \"-\" \"Mozilla/5.0 zgrab/0.x\""
            )
            .unwrap();
        } else {
            let client = format!("198.51.100.{}", 1 + n % 250);
            let page = pages[rng.random_range(0..pages.len())];
            let (status, bytes) = if rng.random_range(0..5) == 0 {
                (304, 0)
            } else {
                (200, 5120 + n % 900)
            };
            writeln!(out, "{client} - - {stamp} \"GET {page} HTTP/2.0\" {status} {bytes} \"https://example.org/\" \"Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0\"").unwrap();
        }
    }
    out.flush().unwrap();
    named
}

/// `check` over the file, one thread: how long, and the addresses it scored.
fn ours(sets: &[Ruleset], log: &Path) -> (std::time::Duration, BTreeSet<IpAddr>) {
    let policy = ScoringPolicy {
        exclude_local: false,
        max_tracked: usize::MAX,
        ..ScoringPolicy::default()
    };
    let started = Instant::now();
    let report = check(
        sets,
        BufReader::with_capacity(256 << 10, std::fs::File::open(log).unwrap()),
        policy,
        false,
    )
    .unwrap();
    let elapsed = started.elapsed();
    (
        elapsed,
        report.addresses.iter().map(|a| a.address).collect(),
    )
}

/// `fail2ban-regex -o ip LOG FILTER`: how long, and the addresses of its matches.
fn theirs(log: &Path, filter: &str) -> (std::time::Duration, BTreeSet<IpAddr>) {
    let started = Instant::now();
    let output = Command::new("fail2ban-regex")
        .args(["-o", "ip"])
        .arg(log)
        .arg(filter)
        .output()
        .expect("fail2ban-regex (cargo xtask setup installs fail2ban)");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    (elapsed, found)
}

/// A tool's runs: median, fastest and slowest, and what it found.
struct Timed {
    median: std::time::Duration,
    fastest: std::time::Duration,
    slowest: std::time::Duration,
    found: BTreeSet<IpAddr>,
}

/// Runs of each tool, interleaved (so a busy moment hits both): per run the time and what it
/// found.
const RUNS: usize = 3;

/// Both tools `RUNS` times, alternating: the median time of each, the spread, and what they
/// found (the same every run).
fn interleaved(
    mut ours: impl FnMut() -> (std::time::Duration, BTreeSet<IpAddr>),
    mut theirs: impl FnMut() -> (std::time::Duration, BTreeSet<IpAddr>),
) -> [Timed; 2] {
    let mut runs: [Vec<(std::time::Duration, BTreeSet<IpAddr>)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..RUNS {
        runs[0].push(ours());
        runs[1].push(theirs());
    }
    runs.map(|mut runs| {
        let found = runs[0].1.clone();
        assert!(
            runs.iter().all(|(_, f)| *f == found),
            "a run found other addresses"
        );
        runs.sort_by_key(|(time, _)| *time);
        Timed {
            median: runs[RUNS / 2].0,
            fastest: runs[0].0,
            slowest: runs[RUNS - 1].0,
            found,
        }
    })
}

/// One comparison: a table and its verdict, asserting xdpguard found exactly `named`.
fn compare(
    out: &mut String,
    title: &str,
    ours_label: &str,
    theirs_label: &str,
    [ours, theirs]: [Timed; 2],
    named: &BTreeSet<IpAddr>,
) {
    let rate = |elapsed: std::time::Duration| LINES as f64 / elapsed.as_secs_f64();
    let (ours_time, ours_found) = (ours.median, &ours.found);
    let (theirs_time, theirs_found) = (theirs.median, &theirs.found);
    let spread = |t: &Timed| {
        format!(
            "{:.2}-{:.2}",
            t.fastest.as_secs_f64(),
            t.slowest.as_secs_f64()
        )
    };
    let (ours_spread, theirs_spread) = (spread(&ours), spread(&theirs));
    let ratio = theirs_time.as_secs_f64() / ours_time.as_secs_f64();
    // fail2ban at its fastest against xdpguard at its slowest.
    let worst = theirs.fastest.as_secs_f64() / ours.slowest.as_secs_f64();
    let _ = writeln!(
        out,
        "\n### {title}\n\n| tool | median of {RUNS} (s) | spread (s) | lines/s | addresses found |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {ours_label} | {:.2} | {ours_spread} | {:.0} | {} |",
        ours_time.as_secs_f64(),
        rate(ours_time),
        ours_found.len()
    );
    let _ = writeln!(
        out,
        "| {theirs_label} | {:.2} | {theirs_spread} | {:.0} | {} |",
        theirs_time.as_secs_f64(),
        rate(theirs_time),
        theirs_found.len()
    );
    let _ = writeln!(
        out,
        "\nSpeed-up: {ratio:.1}× of the medians, {worst:.1}× at worst (fail2ban's fastest run against xdpguard's slowest) (target 50×: {}). Addresses named by attack lines: {}; found by xdpguard only: {:?}; by fail2ban only: {:?}.",
        if ratio >= 50.0 { "met" } else { "not met" },
        named.len(),
        ours_found
            .difference(theirs_found)
            .take(10)
            .collect::<Vec<_>>(),
        theirs_found
            .difference(ours_found)
            .take(10)
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        ours_found, named,
        "{title}: xdpguard must find exactly the attack lines' addresses"
    );
}

/// Resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// What 200,000 remembered sessions (sshd-like pid keys, IPv4 and IPv6 addresses) cost.
fn session_memory(out: &mut String) {
    const SESSIONS: usize = 200_000;
    let before = resident_bytes();
    let mut sessions = Sessions::new(SessionLimits {
        max_sessions: SESSIONS,
        ..SessionLimits::default()
    });
    for i in 0..SESSIONS {
        let address = if i % 2 == 0 {
            format!("203.0.{}.{}", (i / 256) % 256, i % 256)
        } else {
            format!("2001:db8:bad::{i:x}")
        };
        sessions.remember("sshd", &(100_000 + i).to_string(), &address, 0);
    }
    let after = resident_bytes();
    let measured = after.saturating_sub(before) as f64 / SESSIONS as f64;
    let estimated = sessions.approximate_bytes() as f64 / SESSIONS as f64;
    let _ = writeln!(
        out,
        "\n### Session memory (multi-line rules)\n\n{SESSIONS} sessions remembered (pid keys, half IPv4, half IPv6): {measured:.0} bytes per session resident (the daemon's own estimate, `xdpguard_log_sessions_bytes`: {estimated:.0}); the default bound of 10,000 sessions is then about {:.1} MB.",
        measured * 10_000.0 / 1e6
    );
    assert_eq!(sessions.stats().tracked, SESSIONS as u64);
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("xdpguard-bench-scoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rulesets_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets");
    let mut out = String::new();

    let log = dir.join("auth.log");
    let named = generate(&log);
    let mut sets = ruleset::load(&rulesets_dir.join("sshd.toml")).unwrap();
    compare(
        &mut out,
        "sshd, default mode",
        "xdpguard (sshd ruleset, normal, 1 thread)",
        "fail2ban-regex (sshd filter)",
        interleaved(
            || ours(&sets, &log),
            || theirs(&log, "/etc/fail2ban/filter.d/sshd.conf"),
        ),
        &named,
    );
    for ruleset in &mut sets {
        ruleset.set_mode("aggressive").unwrap();
    }
    compare(
        &mut out,
        "sshd, every mode's rules on",
        "xdpguard (sshd ruleset, aggressive, 1 thread)",
        "fail2ban-regex (sshd[mode=aggressive])",
        interleaved(
            || ours(&sets, &log),
            || theirs(&log, "sshd[mode=aggressive]"),
        ),
        &named,
    );

    let access = dir.join("access.log");
    let scanners = generate_access(&access);
    let web = ruleset::load(&rulesets_dir.join("nginx.toml")).unwrap();
    compare(
        &mut out,
        "nginx access log, the web rulesets",
        "xdpguard (rulesets/nginx.toml, 1 thread)",
        "fail2ban-regex (nginx-botsearch filter)",
        interleaved(
            || ours(&web, &access),
            || theirs(&access, "/etc/fail2ban/filter.d/nginx-botsearch.conf"),
        ),
        &scanners,
    );
    let _ = std::fs::remove_dir_all(&dir);
    session_memory(&mut out);
    print!("{out}");
}
