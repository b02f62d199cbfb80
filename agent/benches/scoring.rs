//! `cargo xtask bench scoring`: lines per second on one core for the sshd ruleset over a
//! generated 1M-line auth log (about 10% attack lines), next to `fail2ban-regex` (Debian
//! fail2ban) with its sshd filter on the same file, and whether both find the same offending
//! addresses. Prints a Markdown report for docs/BENCHMARKS.md.
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
use xdpguard::{detect::logs::ruleset, detect::logs::score::ScoringPolicy, tools::check::check};

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

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("xdpguard-bench-scoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("auth.log");
    let named = generate(&log);
    let rulesets_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets");
    let sets = ruleset::load(&rulesets_dir.join("sshd.toml")).unwrap();

    // xdpguard: the library's check, one thread.
    let policy = ScoringPolicy {
        exclude_local: false,
        max_tracked: usize::MAX,
        ..ScoringPolicy::default()
    };
    let started = Instant::now();
    let report = check(
        &sets,
        BufReader::new(std::fs::File::open(&log).unwrap()),
        policy,
        false,
    )
    .unwrap();
    let ours = started.elapsed();
    let ours_found: BTreeSet<IpAddr> = report.addresses.iter().map(|a| a.address).collect();

    // fail2ban-regex with Debian's sshd filter; `-o ip` prints the address of every match.
    let started = Instant::now();
    let output = Command::new("fail2ban-regex")
        .args(["-o", "ip"])
        .arg(&log)
        .arg("/etc/fail2ban/filter.d/sshd.conf")
        .output()
        .expect("fail2ban-regex (cargo xtask setup installs fail2ban)");
    let theirs = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs_found: BTreeSet<IpAddr> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);

    let rate = |elapsed: std::time::Duration| LINES as f64 / elapsed.as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(out, "\n| tool | time (s) | lines/s | addresses found |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| xdpguard (sshd ruleset, 1 thread) | {:.2} | {:.0} | {} |",
        ours.as_secs_f64(),
        rate(ours),
        ours_found.len()
    );
    let _ = writeln!(
        out,
        "| fail2ban-regex (sshd filter) | {:.2} | {:.0} | {} |",
        theirs.as_secs_f64(),
        rate(theirs),
        theirs_found.len()
    );
    let _ = writeln!(
        out,
        "\nSpeed-up: {:.1}×. Addresses named by attack lines: {}; found by xdpguard only: {:?}; by fail2ban only: {:?}.",
        theirs.as_secs_f64() / ours.as_secs_f64(),
        named.len(),
        ours_found
            .difference(&theirs_found)
            .take(10)
            .collect::<Vec<_>>(),
        theirs_found
            .difference(&ours_found)
            .take(10)
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        ours_found, named,
        "xdpguard must find exactly the attack lines' addresses"
    );
    print!("{out}");
}
