//! Issue 10, the decision owner's part: the kernel and the decision store cannot disagree
//! silently, and the owner answers within milliseconds whatever the list size. Real daemons in
//! the sandbox's firewall namespace, driven through the CLI and the pinned maps. Needs root;
//! run by `cargo xtask test`.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, Map, MapData};
use xdpguard::api::control::proto::ListEntry;
use xdpguard_common::{BlockEntry, map_names};
use xdpguard_testkit::{
    daemon::{Daemon, Workdir, eventually, http_get},
    netns::{FW_IF, FW_V4, Sandbox},
    xdpguard_binary,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn failed(output: &std::process::Output) -> String {
    assert!(
        !output.status.success(),
        "command succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn list(daemon: &Daemon, source: &str) -> Vec<ListEntry> {
    serde_json::from_str(&ok(&daemon.cli(&["list", "--json", "--source", source]))).unwrap()
}

fn listed(daemon: &Daemon, source: &str, prefix: &str) -> bool {
    list(daemon, source).iter().any(|e| e.prefix == prefix)
}

fn unknown_entries(daemon: &Daemon) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&ok(&daemon.cli(&["status", "--json"]))).unwrap();
    status["unknown_entries"].as_u64().unwrap()
}

/// The value of an unlabelled series (or one with exactly these labels) on the page.
fn metric(sandbox: &Sandbox, port: u16, series: &str) -> Option<u64> {
    let page = http_get(sandbox, port, "/metrics")?;
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A pinned block list of the daemon, opened as `bpftool` would: no daemon code involved.
fn pinned_hosts<K: aya::Pod>(workdir: &Workdir, name: &str) -> HashMap<MapData, K, BlockEntry> {
    let data = MapData::from_pin(workdir.pin_dir().join(name)).unwrap();
    HashMap::try_from(Map::HashMap(data)).unwrap()
}

fn v4_key(text: &str) -> [u8; 4] {
    text.parse::<Ipv4Addr>().unwrap().octets()
}

/// Sandbox with attacker sources, and a work dir with a config for the firewall side;
/// `top_level` goes among the top-level keys.
fn setup(tag: &str, metrics_port: u16, top_level: &str) -> (Sandbox, Workdir) {
    let sandbox = Sandbox::new(tag);
    for source in ["203.0.113.66", "203.0.113.77"] {
        sandbox.add_source(ip(source));
    }
    let workdir = Workdir::new(tag, xdpguard_binary!());
    workdir.write_config(FW_IF, metrics_port, "");
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        config.replace(
            "reconcile_interval",
            &format!("{top_level}\nreconcile_interval"),
        ),
    )
    .unwrap();
    (sandbox, workdir)
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `n` IPv6 hosts in 2001:db8:aa::/48: map entries only, never traffic.
fn many_hosts(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            let text = format!("2001:db8:aa::{:x}:{:x}", i >> 16, i & 0xffff);
            text.parse().unwrap()
        })
        .collect()
}

fn write_list(workdir: &Workdir, name: &str, hosts: &[IpAddr]) -> std::path::PathBuf {
    let mut text = String::with_capacity(hosts.len() * 24);
    for host in hosts {
        writeln!(text, "{host}").unwrap();
    }
    let path = workdir.path.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// kill -9 while `block --file` imports 200k prefixes in four requests, the moment the third
/// one's first entry is in the kernel: after a restart every kernel entry is a recorded
/// decision of the list file (none unknown, none merely `recovered`), and every recorded one
/// is in the kernel.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn kill_9_mid_import_leaves_no_kernel_entry_without_its_decision() {
    let (sandbox, workdir) = setup("owner-kill-import", 19_560, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    let hosts = many_hosts(200_000);
    let path = write_list(&workdir, "import.txt", &hosts);
    let mut cli = Command::new(&workdir.binary)
        .arg("--socket")
        .arg(workdir.socket())
        .args(["block", "--file", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let map: HashMap<MapData, [u8; 16], BlockEntry> =
        pinned_hosts(&workdir, map_names::BLOCK_HOST_V6);
    let IpAddr::V6(third) = hosts[120_000] else {
        unreachable!()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while map.get(&third.octets(), 0).is_err() {
        assert!(Instant::now() < deadline, "the import never got there");
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill();
    let _ = cli.wait();

    let daemon = Daemon::start(&sandbox, &workdir);
    assert_eq!(unknown_entries(&daemon), 0);
    let in_kernel: BTreeSet<String> = map
        .keys()
        .map(|key| format!("{}/128", Ipv6Addr::from(key.unwrap())))
        .collect();
    assert!(in_kernel.len() > 100_000, "{} entries", in_kernel.len());
    let recorded: BTreeSet<String> = list(&daemon, "file:import.txt")
        .into_iter()
        .map(|e| e.prefix)
        .collect();
    let unrecorded: Vec<&String> = in_kernel.difference(&recorded).take(5).collect();
    assert!(
        unrecorded.is_empty(),
        "in the kernel, not recorded: {unrecorded:?}"
    );
    let unapplied: Vec<&String> = recorded.difference(&in_kernel).take(5).collect();
    assert!(
        unapplied.is_empty(),
        "recorded, not in the kernel: {unapplied:?}"
    );
    assert!(list(&daemon, "recovered").is_empty());
}

/// An entry written straight into a pinned map is adopted as `recovered`: listed, dropping,
/// and gone with `unblock`.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn an_entry_inserted_behind_the_daemons_back_is_adopted_and_unblockable() {
    const METRICS_PORT: u16 = 19_561;
    let (sandbox, workdir) = setup("owner-adopt", METRICS_PORT, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    // Some block list entry exists, so the program looks the list up at all.
    ok(&daemon.cli(&["block", "203.0.113.66"]));
    let mut map: HashMap<MapData, [u8; 4], BlockEntry> =
        pinned_hosts(&workdir, map_names::BLOCK_HOST_V4);
    let entry = BlockEntry {
        prefix_len: 32,
        ..BlockEntry::default()
    };
    map.insert(v4_key("203.0.113.77"), entry, 0).unwrap();
    assert!(eventually(Duration::from_secs(10), || listed(
        &daemon,
        "recovered",
        "203.0.113.77/32"
    )));
    assert_eq!(unknown_entries(&daemon), 0);
    assert_eq!(sandbox.ping(ip("203.0.113.77"), FW_V4, 2), 0);
    assert!(
        daemon.stderr().contains("adopted 1 kernel entries"),
        "{}",
        daemon.stderr()
    );
    assert!(
        metric(
            &sandbox,
            METRICS_PORT,
            r#"xdpguard_unknown_entries_handled_total{action="adopt"}"#
        ) >= Some(1)
    );
    let text = ok(&daemon.cli(&["unblock", "203.0.113.77"]));
    assert!(!text.contains("not present"), "{text}");
    assert!(map.get(&v4_key("203.0.113.77"), 0).is_err());
    assert_eq!(sandbox.ping(ip("203.0.113.77"), FW_V4, 2), 2);
    assert!(!listed(&daemon, "recovered", "203.0.113.77/32"));
}

/// With `unknown_entries = "remove"`, such an entry is deleted at the next reconcile.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn with_the_remove_policy_an_entry_inserted_behind_the_daemons_back_goes() {
    const METRICS_PORT: u16 = 19_562;
    let (sandbox, workdir) = setup("owner-remove", METRICS_PORT, "unknown_entries = \"remove\"");
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", "203.0.113.66"]));
    let mut map: HashMap<MapData, [u8; 4], BlockEntry> =
        pinned_hosts(&workdir, map_names::BLOCK_HOST_V4);
    let entry = BlockEntry {
        prefix_len: 32,
        ..BlockEntry::default()
    };
    map.insert(v4_key("203.0.113.77"), entry, 0).unwrap();
    assert!(eventually(Duration::from_secs(10), || map
        .get(&v4_key("203.0.113.77"), 0)
        .is_err()));
    assert_eq!(sandbox.ping(ip("203.0.113.77"), FW_V4, 2), 2);
    assert!(!listed(&daemon, "recovered", "203.0.113.77/32"));
    assert!(
        map.get(&v4_key("203.0.113.66"), 0).is_ok(),
        "a decision's entry stays"
    );
    assert!(
        metric(
            &sandbox,
            METRICS_PORT,
            r#"xdpguard_unknown_entries_handled_total{action="remove"}"#
        ) >= Some(1)
    );
}

/// `expires_ns = 1` on a never-expiring entry stops it dropping; reconcile puts "never" back
/// and counts it.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_tampered_expiry_on_a_permanent_block_is_repaired() {
    const METRICS_PORT: u16 = 19_563;
    let (sandbox, workdir) = setup("owner-tamper", METRICS_PORT, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", "203.0.113.66"]));
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 0);
    let repaired_before = metric(&sandbox, METRICS_PORT, "xdpguard_reconcile_repaired_total");
    let mut map: HashMap<MapData, [u8; 4], BlockEntry> =
        pinned_hosts(&workdir, map_names::BLOCK_HOST_V4);
    let key = v4_key("203.0.113.66");
    let mut entry = map.get(&key, 0).unwrap();
    assert_eq!(entry.expires_ns, 0);
    entry.expires_ns = 1;
    map.insert(key, entry, 0).unwrap();
    assert!(eventually(Duration::from_secs(10), || map
        .get(&key, 0)
        .is_ok_and(|e| e.expires_ns == 0)));
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 0);
    assert!(
        metric(&sandbox, METRICS_PORT, "xdpguard_reconcile_repaired_total")
            > repaired_before.max(Some(0))
    );
    assert!(
        daemon.stderr().contains("corrected 1"),
        "{}",
        daemon.stderr()
    );
    let entries = list(&daemon, "manual");
    assert_eq!(entries[0].expires_unix, 0);
}

/// The bound is the point: with half a million entries reconciled every second, a `block`
/// answers within 2 s and a scrape within 1 s (they take milliseconds), and SIGTERM stops
/// the daemon within 10 s.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_block_and_a_scrape_answer_promptly_during_a_reconcile_of_half_a_million_entries() {
    const METRICS_PORT: u16 = 19_564;
    let (sandbox, workdir) = setup("owner-prompt", METRICS_PORT, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    let path = write_list(&workdir, "half-million.txt", &many_hosts(500_000));
    ok(&daemon.cli(&["block", "--file", path.to_str().unwrap()]));
    let passes = || metric(&sandbox, METRICS_PORT, "xdpguard_reconcile_passes_total").unwrap();
    let first = passes();
    let started = Instant::now();
    let mut i = 0;
    // Ten seconds, and at least two passes completed meanwhile.
    while started.elapsed() < Duration::from_secs(10) || passes() < first + 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "fewer than two reconcile passes in two minutes"
        );
        let started = Instant::now();
        ok(&daemon.cli(&["block", &format!("203.0.113.{}", i % 250 + 1)]));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "block took {took:?}");
        let started = Instant::now();
        assert!(http_get(&sandbox, METRICS_PORT, "/metrics").is_some());
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "scrape took {took:?}");
        i += 1;
    }
    let last_pass = http_get(&sandbox, METRICS_PORT, "/metrics")
        .and_then(|page| {
            page.lines().find_map(|line| {
                line.strip_prefix("xdpguard_reconcile_last_pass_seconds ")?
                    .parse::<f64>()
                    .ok()
            })
        })
        .unwrap();
    eprintln!("{i} blocks and scrapes; last pass over 500k entries: {last_pass} s");
    let started = Instant::now();
    assert_eq!(daemon.stop().code(), Some(0));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
}

/// `rm -rf` of the state directory is noticed within a tick: logged, counted, and the
/// directory written anew with every decision, so a kill -9 right after loses nothing.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_removed_state_directory_is_recreated_and_survives_kill_9() {
    const METRICS_PORT: u16 = 19_565;
    let (sandbox, workdir) = setup("owner-rmrf", METRICS_PORT, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", "203.0.113.66", "--for", "1h"]));
    ok(&daemon.cli(&["block", "203.0.113.77"]));
    ok(&daemon.cli(&["block", "2001:db8:aa::/48"]));
    std::fs::remove_dir_all(workdir.state_dir()).unwrap();
    let snapshot = workdir.state_dir().join("decisions.jsonl");
    assert!(eventually(Duration::from_secs(5), || snapshot.exists()));
    assert!(
        eventually(Duration::from_secs(5), || daemon
            .stderr()
            .contains("removed behind the daemon's back")),
        "{}",
        daemon.stderr()
    );
    assert_eq!(
        metric(&sandbox, METRICS_PORT, "xdpguard_state_dir_restored_total"),
        Some(1)
    );
    // The new directory is locked again: its lock file names this daemon, and the log says so.
    let lock_file = workdir.state_dir().join("daemon.lock");
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(
            &lock_file
        )
        .is_ok_and(|pid| !pid.trim().is_empty())),
        "{}",
        daemon.stderr()
    );
    assert!(
        eventually(Duration::from_secs(5), || daemon
            .stderr()
            .contains("its lock is taken again")),
        "{}",
        daemon.stderr()
    );
    // Decided after the loss: in the new log.
    ok(&daemon.cli(&["block", "203.0.113.88"]));
    daemon.kill();
    let daemon = Daemon::start(&sandbox, &workdir);
    let mut prefixes: Vec<String> = list(&daemon, "manual")
        .into_iter()
        .map(|e| e.prefix)
        .collect();
    prefixes.sort();
    assert_eq!(
        prefixes,
        [
            "2001:db8:aa::/48",
            "203.0.113.66/32",
            "203.0.113.77/32",
            "203.0.113.88/32"
        ]
    );
    assert!(list(&daemon, "recovered").is_empty());
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 1), 0);
}

/// Multicast, broadcast, unspecified and link-local addresses are refused unless forced.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn guards_refuse_non_unicast_addresses_unless_forced() {
    let (sandbox, workdir) = setup("owner-guards", 19_566, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    let refused = [
        "224.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "::",
        "169.254.1.1",
        "fe80::1",
    ];
    for address in refused {
        let text = failed(&daemon.cli(&["block", address]));
        assert!(text.contains("not a unicast source"), "{address}: {text}");
        assert!(text.contains("force"), "{address}: {text}");
    }
    assert!(list(&daemon, "manual").is_empty());
    for address in refused {
        ok(&daemon.cli(&["block", address, "--force", "--for", "1m"]));
    }
    assert_eq!(list(&daemon, "manual").len(), refused.len());
}

/// The data path's side of reconcile against the real maps: a chunked scan reads every entry
/// of every list exactly once with every field, finishing it puts back a tampered `CONFIG`,
/// a host key planted in a prefix trie is found there and removed, and a batch delete goes
/// on past a key that is not there.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn the_kernel_scan_reads_every_list_in_chunks_and_repairs_config() {
    use xdpguard::enforce::dataplane::{
        Capacities, Dataplane, ListId, ListKind, ScanCursor, monotonic_now_ns,
    };
    use xdpguard::prefix::Prefix;
    use xdpguard_common::{DataplaneConfig, Family};
    let p = |text: &str| -> Prefix { text.parse().unwrap() };
    let workdir = Workdir::new("owner-scan", xdpguard_binary!());
    let (mut dp, _) = Dataplane::open_pinned(&workdir.pin_dir(), Capacities::default()).unwrap();
    let later = monotonic_now_ns() + 3_600_000_000_000;
    let mut blocks: Vec<Prefix> = (0..=255).map(|i| p(&format!("203.0.113.{i}"))).collect();
    blocks.extend(many_hosts(1000).into_iter().map(Prefix::host));
    blocks.extend((0..300).map(|i| p(&format!("2001:db8:bb:{i:x}::/64"))));
    blocks.extend((0..10).map(|i| p(&format!("198.51.{i}.0/24"))));
    for (i, result) in dp.block_new(&blocks, later).into_iter().enumerate() {
        result.unwrap_or_else(|err| panic!("{}: {err}", blocks[i]));
    }
    let allows = [p("203.0.113.8"), p("2001:db8:bb::/48")];
    for allow in &allows {
        dp.allow(allow).unwrap();
    }
    let mut cursor = ScanCursor::default();
    let mut seen = Vec::new();
    let mut steps = 0;
    while !cursor.is_done() {
        let chunk = dp.scan(&mut cursor, 100).unwrap();
        assert!(chunk.len() <= 256, "{} in one step", chunk.len());
        seen.extend(chunk);
        steps += 1;
    }
    assert!(steps >= blocks.len() / 256, "{steps} steps");
    let blocked: BTreeSet<Prefix> = seen
        .iter()
        .filter(|e| e.list.kind != ListKind::Allow)
        .map(|e| e.prefix)
        .collect();
    assert_eq!(blocked.len(), blocks.len(), "each entry once");
    assert_eq!(blocked, blocks.iter().copied().collect());
    let allowed: Vec<Prefix> = seen
        .iter()
        .filter(|e| e.list.kind == ListKind::Allow)
        .map(|e| e.prefix)
        .collect();
    assert_eq!(allowed.len(), 2);
    for entry in &seen {
        assert_eq!(entry.prefix_len, u32::from(entry.prefix.prefix_len()));
        if entry.list.kind != ListKind::Allow {
            assert_eq!(entry.expires_ns, later, "{}", entry.prefix);
            assert_eq!(entry.list, ListId::block_list_of(&entry.prefix));
        }
    }
    // CONFIG changed behind the daemon's back (dry-run switched on): put back, and said so.
    let config_data = MapData::from_pin(workdir.pin_dir().join(map_names::CONFIG)).unwrap();
    let mut config: aya::maps::Array<MapData, DataplaneConfig> =
        aya::maps::Array::try_from(Map::Array(config_data)).unwrap();
    let flags = config.get(&0, 0).unwrap().flags;
    config
        .set(0, DataplaneConfig { flags: flags | 1 }, 0)
        .unwrap();
    let repairs = dp.finish_scan(&cursor, true).unwrap();
    assert!(repairs.config);
    assert_eq!(config.get(&0, 0).unwrap().flags, flags);
    let host_v4 = ListId {
        kind: ListKind::BlockHost,
        family: Family::Ipv4,
    };
    assert_eq!(dp.block_count(host_v4), 256);
    assert!(!dp.finish_scan(&cursor, true).unwrap().config);
    // A host key planted in the IPv4 prefix list: scanned there, removed from there.
    let list_data = MapData::from_pin(workdir.pin_dir().join(map_names::BLOCK_PREFIX_V4)).unwrap();
    let mut list: HashMap<MapData, xdpguard_common::PrefixKeyV4, BlockEntry> =
        HashMap::try_from(Map::HashMap(list_data)).unwrap();
    let planted = xdpguard_common::PrefixKeyV4 {
        prefix_len: 32,
        addr: v4_key("203.0.113.250"),
    };
    let entry = BlockEntry {
        prefix_len: 32,
        ..BlockEntry::default()
    };
    list.insert(planted, entry, 0).unwrap();
    let mut cursor = ScanCursor::default();
    let mut misplaced = Vec::new();
    while !cursor.is_done() {
        misplaced.extend(dp.scan(&mut cursor, 4096).unwrap().into_iter().filter(|e| {
            e.list.kind != ListKind::Allow && e.list != ListId::block_list_of(&e.prefix)
        }));
    }
    assert_eq!(misplaced.len(), 1, "{misplaced:?}");
    assert_eq!(misplaced[0].prefix, p("203.0.113.250"));
    assert!(
        dp.remove_entry(misplaced[0].list, &misplaced[0].prefix)
            .unwrap()
    );
    assert!(list.get(&planted, 0).is_err());
    assert!(
        dp.block_entry(&p("203.0.113.250")).unwrap().is_some(),
        "the real one stays"
    );
    // A batch delete goes on past a key that is not there.
    let gone = [
        p("203.0.113.1"),
        p("203.0.113.1"),
        p("203.0.113.2"),
        p("2001:db8:bb:1::/64"),
        p("192.0.2.1"),
    ];
    let results: Vec<bool> = dp
        .unblock_many(&gone)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results, [true, false, true, true, false]);
    assert_eq!(dp.block_count(host_v4), 254);
    assert!(dp.block_entry(&p("203.0.113.3")).unwrap().is_some());
}

/// Before/after numbers for the report, not a check: a million entries, reconcile every
/// second, and how long a `block` and a scrape take meanwhile. Set `XDPGUARD_MEASURE=1`.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn measure_block_latency_during_reconcile_of_a_million_entries() {
    if std::env::var_os("XDPGUARD_MEASURE").is_none() {
        eprintln!("XDPGUARD_MEASURE not set: skipped");
        return;
    }
    const METRICS_PORT: u16 = 19_569;
    let sandbox = Sandbox::new("measure");
    let workdir = Workdir::new("measure", xdpguard_binary!());
    workdir.write_config(FW_IF, METRICS_PORT, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    let list = write_list(&workdir, "million.txt", &many_hosts(1_000_000));
    let started = Instant::now();
    ok(&daemon.cli(&["block", "--file", list.to_str().unwrap()]));
    eprintln!("import of 1M: {:.2?}", started.elapsed());
    let mut block_times = Vec::new();
    let mut scrape_times = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while Instant::now() < until {
        let started = Instant::now();
        ok(&daemon.cli(&[
            "block",
            &format!("203.0.113.{}", i % 250 + 1),
            "--for",
            "1h",
        ]));
        block_times.push(started.elapsed());
        let started = Instant::now();
        let page = http_get(&sandbox, METRICS_PORT, "/metrics");
        scrape_times.push(started.elapsed());
        assert!(page.is_some());
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    block_times.sort();
    scrape_times.sort();
    let median = |times: &[Duration]| times[times.len() / 2];
    eprintln!(
        "block: {} samples, median {:.2?}, max {:.2?}; scrape: median {:.2?}, max {:.2?}",
        block_times.len(),
        median(&block_times),
        block_times.last().unwrap(),
        median(&scrape_times),
        scrape_times.last().unwrap()
    );
    if let Some(page) = http_get(&sandbox, METRICS_PORT, "/metrics") {
        for line in page.lines().filter(|l| l.starts_with("xdpguard_reconcile")) {
            eprintln!("{line}");
        }
    }
    let started = Instant::now();
    let status = daemon.stop();
    eprintln!("SIGTERM to exit: {:.2?} ({status})", started.elapsed());
}
