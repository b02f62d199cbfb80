//! The daemon for real: `xdpguard run` in the sandbox's firewall namespace, driven through the
//! CLI, with real traffic from the attacker namespace. Needs root; run by `cargo xtask test`.
use std::{net::IpAddr, time::Duration};

use xdpguard::{
    api::control::proto::ListEntry,
    enforce::dataplane::{Capacities, Dataplane},
    prefix::Prefix,
};
use xdpguard_testkit::{
    daemon::{Daemon, Workdir, eventually, http_get},
    netns::{FW_IF, FW_V4, Sandbox},
    prometheus::Prometheus,
    xdpguard_binary,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
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

fn list(daemon: &Daemon) -> Vec<ListEntry> {
    serde_json::from_str(&ok(&daemon.cli(&["list", "--json", "--source", "manual"]))).unwrap()
}

/// Sandbox with attacker sources, and a work dir with a config for the firewall side.
fn setup(tag: &str, metrics_port: u16, extra: &str) -> (Sandbox, Workdir) {
    let sandbox = Sandbox::new(tag);
    for source in [
        "203.0.113.10",
        "203.0.113.66",
        "203.0.113.77",
        "203.0.113.88",
    ] {
        sandbox.add_source(ip(source));
    }
    let workdir = Workdir::new(tag, xdpguard_binary!());
    workdir.write_config(FW_IF, metrics_port, extra);
    (sandbox, workdir)
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn restart_keeps_enforcing_and_list_survives_kill_9() {
    let (sandbox, workdir) = setup("restart", 19_477, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&[
        "block",
        "203.0.113.66",
        "--for",
        "1h",
        "--reason",
        "ssh brute force",
    ]));
    ok(&daemon.cli(&["block", "203.0.113.77", "--for", "3s"]));
    ok(&daemon.cli(&["block", "203.0.113.88/29"]));
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 0);
    assert_eq!(sandbox.ping(ip("203.0.113.10"), FW_V4, 2), 2);
    let before = list(&daemon);
    assert_eq!(before.len(), 3, "{before:?}");
    daemon.kill();

    // Nobody is running: the pinned program keeps dropping.
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 3), 0);
    assert_eq!(
        sandbox.ping(ip("203.0.113.88"), FW_V4, 3),
        0,
        "inside the blocked /29"
    );
    assert_eq!(sandbox.ping(ip("203.0.113.10"), FW_V4, 2), 2);
    // Let the 3 s entry expire while the daemon is down.
    std::thread::sleep(Duration::from_secs(3));

    let daemon = Daemon::start(&sandbox, &workdir);
    let after = list(&daemon);
    let expected: Vec<ListEntry> = before
        .iter()
        .filter(|e| e.prefix != "203.0.113.77/32")
        .cloned()
        .map(|mut e| {
            // Exactly the frames sent while the daemon was down were added.
            if e.prefix == "203.0.113.66/32" {
                e.packets += 3;
                e.bytes += 3 * 98;
            }
            if e.prefix == "203.0.113.88/29" {
                e.packets += 3;
                e.bytes += 3 * 98;
            }
            e
        })
        .collect();
    assert_eq!(after, expected);
    assert!(daemon.stderr().contains("adopted"), "{}", daemon.stderr());
    // `detach` refuses while the daemon runs.
    assert!(
        failed(&daemon.cli(&["detach", "--pin-dir", workdir.pin_dir().to_str().unwrap()]))
            .contains("running")
    );
    assert_eq!(daemon.stop().code(), Some(0));
    // A clean stop leaves the data path enforcing too...
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 0);
    // ...until `detach` removes program, maps and pins.
    ok(&workdir.cli(&["detach", "--pin-dir", workdir.pin_dir().to_str().unwrap()]));
    assert!(!workdir.pin_dir().exists());
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 2);
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn entry_deleted_behind_the_daemons_back_comes_back() {
    let (sandbox, workdir) = setup("drift", 19_478, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", "203.0.113.66"]));
    // Someone deletes the entry straight from the pinned map.
    let (mut dataplane, _) =
        Dataplane::open_pinned(&workdir.pin_dir(), Capacities::default()).unwrap();
    let prefix = Prefix::host(ip("203.0.113.66"));
    assert!(dataplane.unblock(&prefix).unwrap());
    assert!(dataplane.block_entry(&prefix).unwrap().is_none());
    // Reconcile runs every second.
    assert!(eventually(Duration::from_secs(10), || dataplane
        .block_entry(&prefix)
        .unwrap()
        .is_some()));
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 0);

    // Someone clears the summary bit of its /24: the program would pass it without a lookup
    // until reconcile compares the words (a sixteenth of the map per pass) and puts it back.
    let summary_map: aya::maps::Array<_, u64> = aya::maps::Array::try_from(aya::maps::Map::Array(
        aya::maps::MapData::from_pin(workdir.pin_dir().join("SUMMARY")).unwrap(),
    ))
    .unwrap();
    let (word, _) =
        xdpguard_common::summary::v4_position(u32::from_be_bytes([203, 0, 113, 0]) >> 8);
    let mut summary_map = summary_map;
    summary_map.set(word, 0, 0).unwrap();
    assert!(
        eventually(Duration::from_secs(40), || summary_map
            .get(&word, 0)
            .unwrap()
            != 0),
        "reconcile never put the summary word back"
    );
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 0);

    // Someone clears the prefix lengths of 203.0.0.0/16 and plants an IPv6 region with
    // nothing in it: reconcile reads all of them every pass and puts both right.
    ok(&daemon.cli(&["block", "203.0.113.88/29"]));
    let mut regions: aya::maps::Array<_, u32> = aya::maps::Array::try_from(aya::maps::Map::Array(
        aya::maps::MapData::from_pin(workdir.pin_dir().join("REGION_V4")).unwrap(),
    ))
    .unwrap();
    let region = u32::from_be_bytes([0, 0, 203, 0]);
    assert_eq!(
        regions.get(&region, 0).unwrap(),
        xdpguard_common::v4_length_bit(29)
    );
    regions.set(region, 0, 0).unwrap();
    assert_eq!(
        sandbox.ping(ip("203.0.113.88"), FW_V4, 2),
        2,
        "no length, no probe"
    );
    let mut regions_v6: aya::maps::HashMap<_, u32, xdpguard_common::LengthMask> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(
            aya::maps::MapData::from_pin(workdir.pin_dir().join("REGION_V6")).unwrap(),
        ))
        .unwrap();
    let stale = 0x2001_0db8;
    regions_v6
        .insert(stale, xdpguard_common::LengthMask::EMPTY.with(48), 0)
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || regions.get(&region, 0).unwrap()
            != 0
            && regions_v6.get(&stale, 0).is_err()),
        "reconcile never repaired the prefix lengths"
    );
    assert_eq!(sandbox.ping(ip("203.0.113.88"), FW_V4, 2), 0);
    drop(daemon);
}

/// Pins left by an xdpguard from before the summary maps (made here by deleting that pin):
/// the new daemon replaces the data path and applies the decisions again.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn pins_of_an_older_layout_are_replaced_and_the_decisions_applied_again() {
    let (sandbox, workdir) = setup("migrate", 19_486, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", "203.0.113.66", "--for", "1h"]));
    ok(&daemon.cli(&["block", "203.0.113.88/29"]));
    daemon.kill();
    std::fs::remove_file(workdir.pin_dir().join("SUMMARY")).unwrap();
    let daemon = Daemon::start(&sandbox, &workdir);
    assert!(
        daemon.stderr().contains("older xdpguard"),
        "{}",
        daemon.stderr()
    );
    let prefixes: Vec<String> = list(&daemon).into_iter().map(|e| e.prefix).collect();
    assert_eq!(prefixes.len(), 2, "{prefixes:?}");
    assert!(workdir.pin_dir().join("SUMMARY").exists());
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 0);
    assert_eq!(sandbox.ping(ip("203.0.113.88"), FW_V4, 2), 0);
    assert_eq!(sandbox.ping(ip("203.0.113.10"), FW_V4, 2), 2);
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_two_second_block_stops_dropping_on_time() {
    let (sandbox, workdir) = setup("expiry", 19_479, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", "203.0.113.66", "--for", "2s"]));
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 1), 0);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 2);
    // And the daemon forgot it.
    assert!(eventually(Duration::from_secs(5), || list(&daemon).is_empty()));
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn cli_refuses_bad_input_with_reasons() {
    let (sandbox, workdir) = setup(
        "cli",
        19_480,
        "[allowlist]\nprefixes = [\"203.0.113.200/29\"]\n",
    );
    // No daemon yet.
    assert!(failed(&workdir.cli(&["status"])).contains("not running"));
    let daemon = Daemon::start(&sandbox, &workdir);
    for (args, needle) in [
        (vec!["block", "203.0.113.300"], "203.0.113.300"),
        (vec!["block", "203.0.113.1/33"], "203.0.113.1/33"),
        (vec!["block", "203.0.113.1", "--for", "soon"], "soon"),
        (vec!["block", "203.0.113.201"], "allowlisted"),
        (vec!["block", FW_V4], "own address"),
        (vec!["block", "198.51.0.0/16"], "own address"),
        (vec!["block", "10.0.0.0/7"], "guard limit"),
        (vec!["unallow", "203.0.113.200/29"], "configuration"),
    ] {
        let text = failed(&daemon.cli(&args));
        assert!(text.contains(needle), "{args:?}: {text}");
    }
    ok(&daemon.cli(&["block", "10.0.0.0/7", "--force", "--for", "1m"]));
    // Nothing refused was added.
    let entries = list(&daemon);
    assert_eq!(entries.len(), 1, "{entries:?}");
    // Not root: a clear message, not a hang.
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&workdir.binary)
        .arg("--socket")
        .arg(workdir.socket())
        .arg("status")
        .output()
        .unwrap();
    let text = failed(&output);
    assert!(text.contains("ermission denied"), "{text}");
    // A list file with bad lines: good lines applied, bad ones reported by line number.
    let list_file = workdir.path.join("bad.netset");
    std::fs::write(&list_file, "# attackers\n203.0.113.50\nnot-an-address\n203.0.113.48/30 # trailing comment\n\n2001:db8:bad::/48\n").unwrap();
    let text = failed(&daemon.cli(&["block", "--file", list_file.to_str().unwrap()]));
    assert!(text.contains("bad.netset:3"), "{text}");
    assert!(text.contains("3 applied"), "{text}");
    drop(daemon);
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn bad_config_and_corrupt_state_are_reported() {
    let (sandbox, workdir) = setup("config", 19_481, "");
    // An unknown key: the daemon refuses to start and names file and line.
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(workdir.config(), format!("{config}\nbogus_key = 1\n")).unwrap();
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", sandbox.fw))
        .arg(&workdir.binary)
        .args(["run", "--config"])
        .arg(workdir.config())
        .output()
        .unwrap();
    let text = failed(&output);
    assert!(
        text.contains("bogus_key") && text.contains("xdpguard.toml:"),
        "{text}"
    );
    std::fs::write(workdir.config(), config).unwrap();

    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", "203.0.113.66", "--for", "1h"]));
    daemon.kill();
    // Garbage over the state: it is moved aside, and the kernel's entries are recovered.
    std::fs::write(
        workdir.state_dir().join("decisions.jsonl"),
        "{{{ not json\n",
    )
    .unwrap();
    std::fs::write(workdir.state_dir().join("decisions.log"), "").unwrap();
    let daemon = Daemon::start(&sandbox, &workdir);
    assert!(
        daemon.stderr().contains("unreadable"),
        "{}",
        daemon.stderr()
    );
    let entries: Vec<ListEntry> =
        serde_json::from_str(&ok(&daemon.cli(&["list", "--json"]))).unwrap();
    let recovered: Vec<&ListEntry> = entries.iter().filter(|e| e.kind == "block").collect();
    assert_eq!(recovered.len(), 1, "{entries:?}");
    assert_eq!(recovered[0].prefix, "203.0.113.66/32");
    assert_eq!(recovered[0].source, "recovered");
    assert!(
        recovered[0].expires_unix > 0,
        "expiry carried over from the kernel entry"
    );
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 1), 0);
    let aside = std::fs::read_dir(workdir.state_dir())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(aside);
}

/// A real Prometheus server (Debian's) scrapes the daemon; the drop counter read back through
/// Prometheus' HTTP API equals the pings the blocked source sent.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn prometheus_scrapes_the_drop_counter() {
    const METRICS_PORT: u16 = 19_482;
    const PROMETHEUS_PORT: u16 = 19_490;
    let (sandbox, workdir) = setup("prometheus", METRICS_PORT, "");
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", "203.0.113.66"]));
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 4), 0);

    let server = Prometheus::start(&sandbox, &workdir.path, METRICS_PORT, PROMETHEUS_PORT, &[]);
    let query = |expr: &str| -> Option<f64> {
        server.api(&sandbox, &format!("/api/v1/query?query={expr}"))?["data"]["result"][0]["value"]
            [1]
        .as_str()?
        .parse()
        .ok()
    };
    let dropped = "sum(xdpguard_packets_total%7Bverdict%3D%22drop%22%2Cfamily%3D%22ipv4%22%7D)";
    let top = "xdpguard_top_blocked_packets_total%7Bprefix%3D%22203.0.113.66%2F32%22%7D";
    let seen = eventually(Duration::from_secs(60), || query(dropped) == Some(4.0));
    let log = server.log();
    assert!(
        seen,
        "Prometheus never saw 4 drops; last answer {:?}; log:\n{log}",
        query(dropped)
    );
    assert_eq!(query(top), Some(4.0));
    // The agent's own page agrees, and carries build info and capacities.
    let page = http_get(&sandbox, METRICS_PORT, "/metrics").unwrap();
    assert!(page.contains("xdpguard_build_info{version="), "{page}");
    assert!(
        page.contains(r#"xdpguard_map_capacity{family="ipv4",list="block_host"} 1048576"#),
        "{page}"
    );
    assert!(
        page.contains(r#"xdpguard_decisions_total{action="block",source="manual"} 1"#),
        "{page}"
    );
    drop(server);
    drop(daemon);
}

/// systemd's side of `Type=notify`: READY once serving, RELOADING then READY around a SIGHUP
/// reload, STOPPING on SIGTERM. A reload applies the new allowlist and dry-run; a broken
/// configuration on reload is refused and the running one stays.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn notify_reload_and_stop_like_systemd_expects() {
    let (sandbox, workdir) = setup("notify", 19_483, "");
    let notify_path = workdir.path.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let len = notify.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..len]).into_owned()
    };
    let daemon = Daemon::start_with_env(&sandbox, &workdir, &[("NOTIFY_SOCKET", &notify_path)]);
    assert!(next().starts_with("READY=1"));
    ok(&daemon.cli(&["block", "203.0.113.66"]));
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 1), 0);

    // Reload: dry-run on, and an allowlist entry.
    let good = std::fs::read_to_string(workdir.config()).unwrap();
    let reloaded = good.replace("reconcile_interval", "dry_run = true\nreconcile_interval")
        + "[allowlist]\nprefixes = [\"203.0.113.200/29\"]\n";
    std::fs::write(workdir.config(), &reloaded).unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert!(next().starts_with("READY=1"));
    let status: serde_json::Value =
        serde_json::from_str(&ok(&daemon.cli(&["status", "--json"]))).unwrap();
    assert_eq!(status["dry_run"], true);
    let entries: Vec<ListEntry> =
        serde_json::from_str(&ok(&daemon.cli(&["list", "--json", "--source", "config"]))).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.kind == "allow" && e.prefix == "203.0.113.200/29"),
        "{entries:?}"
    );
    // Dry-run: the blocked source gets through, counted as would-drop.
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 2);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&daemon.cli(&["status", "--json"]))).unwrap();
    let would_drop: u64 = status["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["counter"] == "ipv4_would_drop")
        .map(|c| c["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(would_drop, 2);

    // A broken configuration on reload changes nothing.
    std::fs::write(workdir.config(), format!("{reloaded}\nnonsense = [\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(next().starts_with("RELOADING=1"));
    assert!(next().starts_with("READY=1"));
    assert!(eventually(Duration::from_secs(5), || daemon
        .stderr()
        .contains("reload refused")));
    let status: serde_json::Value =
        serde_json::from_str(&ok(&daemon.cli(&["status", "--json"]))).unwrap();
    assert_eq!(status["dry_run"], true);

    assert_eq!(daemon.stop().code(), Some(0));
    assert!(next().starts_with("STOPPING=1"));
}

/// Log scoring end to end: the daemon follows a file, attack lines naming an attacker-side
/// source get that source dropped, the legitimate source is untouched, an address injected
/// through a user name is never blocked, and after `kill -9` lines written meanwhile are read
/// once: neither re-read nor skipped.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn log_lines_get_their_source_dropped() {
    const METRICS_PORT: u16 = 19_484;
    let (sandbox, workdir) = setup("logs", METRICS_PORT, "");
    let log = workdir.path.join("auth.log");
    std::fs::write(&log, "").unwrap();
    // A copy of the shipped sshd ruleset, so the test can add a broken one next to it.
    let rulesets = workdir.path.join("rulesets");
    std::fs::create_dir_all(&rulesets).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets/sshd.toml");
    std::fs::copy(shipped, rulesets.join("sshd.toml")).unwrap();
    workdir.add_log_scoring(
        &rulesets,
        &format!(
            "[scoring]\nexclude_local = false\nban = \"1h\"\n[[inputs]]\nname = \"auth\"\nfile = \"{}\"\nrulesets = [\"sshd\"]\n[[inputs]]\nname = \"pipe\"\npipe = \"{}\"\n",
            log.display(),
            workdir.path.join("auth.pipe").display()
        ),
    );
    let append = |text: &str| {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    };
    let failed = |addr: &str| {
        format!("Nov 22 10:00:01 fw sshd[7]: Failed password for root from {addr} port 4242 ssh2\n")
    };
    let blocked = |daemon: &Daemon, prefix: &str| {
        let entries: Vec<ListEntry> = serde_json::from_str(&ok(&daemon.cli(&[
            "list",
            "--json",
            "--source",
            "ruleset:sshd",
        ])))
        .unwrap();
        entries.iter().any(|e| e.prefix == prefix)
    };

    let daemon = Daemon::start(&sandbox, &workdir);
    assert_eq!(
        sandbox.ping(ip("203.0.113.66"), FW_V4, 1),
        1,
        "not blocked before the log says so"
    );
    append(&failed("203.0.113.66"));
    append(&failed("203.0.113.66"));
    append(
        "Nov 22 10:00:02 fw sshd[8]: Accepted publickey for deploy from 203.0.113.10 port 5000 ssh2: ED25519 SHA256:abc\n",
    );
    for _ in 0..3 {
        append(
            "Nov 22 10:00:03 fw sshd[9]: Failed password for invalid user x from 203.0.113.10 port 22 ssh2 from 203.0.113.77 port 1 ssh2\n",
        );
    }
    append(&failed("203.0.113.66"));
    assert!(eventually(Duration::from_secs(10), || blocked(
        &daemon,
        "203.0.113.66/32"
    )));
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 2), 0);
    // The evidence: `explain` names the entry, its source and the lines that scored it.
    let explained = ok(&daemon.cli(&["explain", "203.0.113.66"]));
    assert!(
        explained.contains("203.0.113.66 is covered by block 203.0.113.66/32 (ruleset:sshd")
            && explained.contains("the lines that scored it:")
            && explained
                .matches("Failed password for root from 203.0.113.66 port 4242 ssh2")
                .count()
                == 3,
        "{explained}"
    );
    let entries: Vec<ListEntry> =
        serde_json::from_str(&ok(&daemon.cli(&["explain", "203.0.113.66", "--json"]))).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].evidence.len(), 3, "{entries:?}");
    let nothing = ok(&daemon.cli(&["explain", "203.0.113.10"]));
    assert!(nothing.contains("no entry covers it"), "{nothing}");
    assert_eq!(
        sandbox.ping(ip("203.0.113.10"), FW_V4, 2),
        2,
        "the legitimate source passes"
    );
    assert!(
        blocked(&daemon, "203.0.113.77/32"),
        "the address sshd wrote is the one scored"
    );
    assert!(
        !blocked(&daemon, "203.0.113.10/32"),
        "the injected address is never blocked"
    );
    let page = http_get(&sandbox, METRICS_PORT, "/metrics").unwrap();
    assert!(
        page.contains("xdpguard_log_lines_total{input=\"auth\"} 7"),
        "{page}"
    );
    assert!(
        page.contains("xdpguard_decisions_total{action=\"block\",source=\"ruleset:sshd\"} 2"),
        "{page}"
    );
    // The named pipe input (created by the daemon) scores too, with every ruleset.
    {
        use std::io::Write as _;
        let mut pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(workdir.path.join("auth.pipe"))
            .unwrap();
        for _ in 0..3 {
            pipe.write_all(failed("203.0.113.90").as_bytes()).unwrap();
        }
    }
    assert!(eventually(Duration::from_secs(10), || blocked(
        &daemon,
        "203.0.113.90/32"
    )));

    // A broken ruleset on reload: refused, logged, and the running rulesets keep scoring.
    std::fs::write(
        rulesets.join("broken.toml"),
        "[[ruleset]]\nname = \"broken\"\nmatch = '('\nscore = 1\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(10), || daemon
        .stderr()
        .contains("reload refused")));
    assert!(
        daemon.stderr().contains("broken.toml"),
        "{}",
        daemon.stderr()
    );
    for _ in 0..3 {
        append(&failed("203.0.113.91"));
    }
    assert!(eventually(Duration::from_secs(10), || blocked(
        &daemon,
        "203.0.113.91/32"
    )));
    std::fs::remove_file(rulesets.join("broken.toml")).unwrap();

    // Positions are saved every second: let that happen, then crash.
    std::thread::sleep(Duration::from_millis(1500));
    daemon.kill();
    append(&failed("203.0.113.88"));
    append(&failed("203.0.113.88"));
    append(&failed("203.0.113.88"));
    let daemon = Daemon::start(&sandbox, &workdir);
    assert!(eventually(Duration::from_secs(10), || blocked(
        &daemon,
        "203.0.113.88/32"
    )));
    // Only the three new lines were read after the restart.
    let page = http_get(&sandbox, METRICS_PORT, "/metrics").unwrap();
    assert!(
        page.contains("xdpguard_log_lines_total{input=\"auth\"} 3"),
        "{page}"
    );
    assert_eq!(sandbox.ping(ip("203.0.113.88"), FW_V4, 1), 0);
}
