//! `xdpguard report` offline, run as the binary: over a log with rulesets (`--log`), and over
//! nfcapd files (`--nfcapd`). Root-free.
//!
//! The log test reads fail2ban's annotated sshd test log in place from Debian's package
//! (nothing of it is in this repository). Its reference is `xdpguard check --explain`: a
//! separate code path (check's own loop) that names, line by line, the address each scored
//! line scored. The test places each of those lines in its day itself (the line's time, the
//! year guessed by the rule `check` documents) and counts distinct addresses and /24s + /64s
//! per day with plain sets, and the report's bins must hold exactly those numbers. Summing
//! check's distinct addresses over bins would not be a check: an address seen on two days
//! counts once there and twice in the bins.
//!
//! The nfcapd test sends NetFlow v9 (the testkit's encoder) to a real `nfcapd` on 127.0.0.1,
//! stops it once its socket has been read empty, and compares the report's bytes per bin and
//! direction with what was sent. Without nfcapd/nfdump it says so and passes.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use xdpguard::detect::logs::{
    prefix::{self, LogTime},
    score::is_global,
};
use xdpguard_testkit::encode::{AddressFamily, V9Flow, V9Header, V9Template, v9_data, v9_template};

const SSHD_LOG: &str = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/sshd";
const DAY: u64 = 86_400;

fn xdpguard(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_xdpguard"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xdpguard {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sshd_ruleset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets/sshd.toml")
}

/// Unix seconds of each line (1-based), as check's documented rule reads them: the line's
/// own time; a year it does not write is this year (last year for a date more than a day
/// ahead), going up by one when the months go back by more than six; a line without a time
/// takes the one before it (the first one, before any).
fn line_times(lines: &[&str], now: i64) -> Vec<Option<u64>> {
    let this_year = LogTime::from_unix_seconds(now).year.unwrap();
    let mut last_yearless: Option<(i32, u8)> = None;
    let mut times: Vec<Option<u64>> = Vec::with_capacity(lines.len());
    for line in lines {
        let Some(time) = prefix::parse(line).time.or_else(|| LogTime::find(line)) else {
            times.push(times.last().copied().flatten());
            continue;
        };
        let year = match (time.year, last_yearless) {
            (Some(year), _) => year,
            (None, Some((year, month))) if time.month + 6 < month => year + 1,
            (None, Some((year, _))) => year,
            (None, None) if time.unix(this_year) > now + 86_400 => this_year - 1,
            (None, None) => this_year,
        };
        if time.year.is_none() {
            last_yearless = Some((year, time.month));
        }
        times.push(u64::try_from(time.unix(year)).ok());
    }
    let first = times.iter().flatten().next().copied();
    times.into_iter().map(|time| time.or(first)).collect()
}

fn network(address: IpAddr) -> (IpAddr, u8) {
    match address {
        IpAddr::V4(v4) => (IpAddr::V4((u32::from(v4) & !0xff).into()), 24),
        IpAddr::V6(v6) => (IpAddr::V6((u128::from(v6) >> 64 << 64).into()), 64),
    }
}

#[test]
fn log_report_counts_per_day_what_check_scored_that_day() {
    if !Path::new(SSHD_LOG).is_file() {
        assert!(
            std::env::var_os("XDPGUARD_REQUIRE_FAIL2BAN").is_none(),
            "{SSHD_LOG} is missing: install Debian's fail2ban (cargo xtask setup does)"
        );
        eprintln!("skipped: {SSHD_LOG} is missing (install fail2ban)");
        return;
    }
    let ruleset = sshd_ruleset();
    let ruleset = ruleset.to_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let check = xdpguard(&[
        "--json",
        "check",
        "--explain",
        "--ruleset",
        ruleset,
        SSHD_LOG,
    ]);
    let report = xdpguard(&[
        "--json",
        "report",
        "--log",
        SSHD_LOG,
        "--ruleset",
        ruleset,
        "--bin",
        "1d",
        "--since",
        "3650d",
    ]);

    let text = std::fs::read_to_string(SSHD_LOG).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    let times = line_times(&lines, i64::try_from(now).unwrap());
    // Day → distinct addresses scored that day: positive scores of addresses the default
    // policy scores (globally routable), as the history records sources.
    let mut expected: BTreeMap<u64, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut scored_lines = 0;
    for line in check["explained"].as_array().unwrap() {
        let outcome = line["outcome"].as_str().unwrap();
        let Some(rest) = outcome.strip_prefix("scored ") else {
            continue;
        };
        let (address, score) = rest.split_once(' ').unwrap();
        let address: IpAddr = address.parse::<IpAddr>().unwrap().to_canonical();
        if score.starts_with('-') || score == "+0" || !is_global(address) {
            continue;
        }
        let number = usize::try_from(line["line"].as_u64().unwrap()).unwrap();
        let time = times[number - 1].expect("a scored line has a time");
        expected
            .entry(time - time % DAY)
            .or_default()
            .insert(address);
        scored_lines += 1;
    }
    assert!(scored_lines > 20, "check scored only {scored_lines} lines");

    let mut found: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for bin in report["bins"].as_array().unwrap() {
        assert_eq!(bin["seconds"], DAY);
        let start = bin["start"].as_u64().unwrap();
        assert_eq!(start % DAY, 0, "bins start at midnight UTC");
        for ruleset in bin["rulesets"].as_array().unwrap() {
            assert_eq!(ruleset["ruleset"], "sshd");
            found.insert(
                start,
                (
                    ruleset["sources"].as_u64().unwrap(),
                    ruleset["networks"].as_u64().unwrap(),
                ),
            );
        }
    }
    let expected: BTreeMap<u64, (u64, u64)> = expected
        .into_iter()
        .map(|(day, addresses)| {
            let networks: BTreeSet<(IpAddr, u8)> = addresses.iter().map(|&a| network(a)).collect();
            (
                day,
                (
                    u64::try_from(addresses.len()).unwrap(),
                    u64::try_from(networks.len()).unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(found, expected);
    assert!(
        found.values().any(|&(sources, _)| sources > 1),
        "some day holds more than one source: {found:?}"
    );
    // The range: the last line's second + 1, back 3650 days; every day of it a bin.
    let newest = times.iter().flatten().max().copied().unwrap();
    assert_eq!(report["until"], newest + 1);
    assert_eq!(report["since"], newest + 1 - 3650 * DAY);
    let bins = report["bins"].as_array().unwrap().len();
    assert!((3650..=3651).contains(&bins), "{bins} bins");
    assert_eq!(report["from"], format!("logs:{SSHD_LOG}"));
    assert_eq!(report["rulesets"], serde_json::json!(["sshd"]));
}

/// nfcapd on 127.0.0.1, killed on every path.
struct Nfcapd(Child);

impl Drop for Nfcapd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The receive queue of the UDP socket bound to 127.0.0.1:`port`, `None` while none is.
fn udp_queue(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str())).then(|| {
            let queues = fields[4].split_once(':').unwrap().1;
            u64::from_str_radix(queues, 16).unwrap()
        })
    })
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A flow sent: source, destination, bytes, and how many seconds before its datagram it ended.
type SentFlow = (IpAddr, IpAddr, u64, u32);

#[test]
fn nfcapd_report_has_the_bytes_sent_per_bin_and_direction() {
    if !have("nfcapd") || !have("nfdump") {
        eprintln!("skipped: nfcapd or nfdump is missing (install Debian's nfdump)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("xdpguard-report-nfcapd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A free port, given back for nfcapd to take.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nfcapd = Nfcapd(
        Command::new("nfcapd")
            .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("nfcapd listening", || udp_queue(port).is_some());

    // Three hours from a whole one: flows in the first and the third, none in the second.
    // A datagram's header says its send time; each flow ended `ago` seconds before it.
    let hour0: u64 = 1_700_000_000 / 3600 * 3600;
    let uptime_ms: u32 = 50_000_000;
    let local: IpAddr = "198.51.100.10".parse().unwrap();
    let outside = |i: u64| -> IpAddr {
        format!("45.33.{}.{}", i / 200, 1 + i % 200)
            .parse()
            .unwrap()
    };
    let template = V9Template {
        template_id: 300,
        family: AddressFamily::V4,
        wide_counters: true,
    };
    // (header time, [(source, destination, bytes, seconds ago)]).
    let mut datagrams: Vec<(u64, Vec<SentFlow>)> = Vec::new();
    datagrams.push((
        hour0 + 1800,
        (0..5)
            .map(|i| {
                (
                    outside(i),
                    local,
                    1000 + i * 7,
                    u32::try_from(i).unwrap() * 60,
                )
            })
            .collect(),
    ));
    datagrams.push((
        hour0 + 2 * 3600 + 1800,
        (5..8)
            .map(|i| (outside(i), local, 500 + i, 10))
            .chain((0..2).map(|i| (local, outside(i), 3000 + i, 20)))
            .collect(),
    ));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut expected: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for (sequence, (sent_at, flows)) in datagrams.iter().enumerate() {
        let header = V9Header {
            source_id: 1,
            sys_uptime_ms: uptime_ms,
            unix_secs: u32::try_from(*sent_at).unwrap(),
            sequence: u32::try_from(sequence).unwrap(),
        };
        v9_template(header, template, &mut out);
        socket.send_to(&out, ("127.0.0.1", port)).unwrap();
        let records: Vec<V9Flow> = flows
            .iter()
            .map(|&(source, destination, bytes, ago)| {
                let end = sent_at - u64::from(ago);
                let sums = expected.entry(end - end % 3600).or_default();
                if source == local {
                    sums.1 += bytes;
                } else {
                    sums.0 += bytes;
                }
                V9Flow {
                    source,
                    destination,
                    bytes,
                    packets: 2,
                    source_port: 40_000,
                    destination_port: 22,
                    protocol: 6,
                    first_switched_ms: uptime_ms - ago * 1000 - 2000,
                    last_switched_ms: uptime_ms - ago * 1000,
                    ..V9Flow::default()
                }
            })
            .collect();
        assert_eq!(v9_data(header, template, &records, &mut out), records.len());
        socket.send_to(&out, ("127.0.0.1", port)).unwrap();
    }
    // Everything read, then SIGTERM: nfcapd writes its file and exits.
    wait_for("nfcapd reading its socket", || udp_queue(port) == Some(0));
    // SAFETY: signalling our own child, not yet reaped.
    let _ = unsafe { libc::kill(i32::try_from(nfcapd.0.id()).unwrap(), libc::SIGTERM) };
    wait_for("nfcapd stopping", || nfcapd.0.try_wait().unwrap().is_some());

    let dir_text = dir.to_str().unwrap();
    let report = xdpguard(&[
        "--json",
        "report",
        "--nfcapd",
        dir_text,
        "--local",
        "198.51.100.0/24",
        "--bin",
        "1h",
        "--since",
        "4h",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(report["from"], format!("nfcapd:{dir_text}"));
    let newest = hour0 + 2 * 3600 + 1800 - 10;
    assert_eq!(report["until"], newest + 1);
    let mut found: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for bin in report["bins"].as_array().unwrap() {
        let traffic = &bin["traffic"];
        assert_eq!(traffic["inbound_local"], 0);
        assert_eq!(traffic["outbound_local"], 0);
        assert_eq!(
            bin["packets"]["passed_v4"], 0,
            "a flow export is no verdict"
        );
        found.insert(
            bin["start"].as_u64().unwrap(),
            (
                traffic["inbound_external"].as_u64().unwrap(),
                traffic["outbound_external"].as_u64().unwrap(),
            ),
        );
    }
    // Every hour of the range present, the empty one too.
    for hour in [hour0 - 7200, hour0 - 3600, hour0 + 3600] {
        expected.entry(hour).or_default();
    }
    assert_eq!(found, expected);
    // The top source /24s by bytes: the outside one, then ours (the outbound flows).
    let top: Vec<(&str, u64)> = report["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["key"].as_str().unwrap(), row["bytes"].as_u64().unwrap()))
        .collect();
    let outside_bytes: u64 = (0..5)
        .map(|i| 1000 + i * 7)
        .chain((5..8).map(|i| 500 + i))
        .sum();
    assert_eq!(outside_bytes, 6588);
    assert_eq!(
        top,
        [("45.33.0.0/24", outside_bytes), ("198.51.100.0/24", 6001)]
    );
}

#[test]
fn offline_sources_exclude_each_other_and_nfdump_failures_say_why() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xdpguard"))
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["report", "--log", "a.log", "--nfcapd", "/tmp"][..],
        &["report", "--history", "h.sqlite", "--log", "a.log"],
        &["report", "--ruleset", "x.toml"],
        &["report", "--local", "198.51.100.0/24"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: a usage error");
    }
    if !have("nfdump") {
        eprintln!("skipped the nfdump failure: nfdump is missing");
        return;
    }
    let missing = std::env::temp_dir().join(format!("xdpguard-no-such-dir-{}", std::process::id()));
    let out = run(&["report", "--nfcapd", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Ours (which command failed) and nfdump's own words (why).
    assert!(
        stderr.contains("nfdump -R") && stderr.contains("No such file or directory"),
        "{stderr}"
    );
}
