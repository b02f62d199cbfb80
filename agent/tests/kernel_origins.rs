//! Origins end to end in the sandbox: a RIS whois dump named in `[origins]`, `block --asn`
//! with the guards applied to each announced prefix, traffic from them dropped at the XDP
//! hook, the blocks following a new dump, `explain`, `list` and the per-AS metrics carrying
//! the origin, `unblock --asn`. Needs root; run by `cargo xtask test`.
use std::{net::IpAddr, process::Output, time::Duration};

use xdpguard_testkit::{
    daemon::{Daemon, Workdir, eventually, http_get},
    netns::{FW_IF, FW_V4, Sandbox},
    xdpguard_binary,
};

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("stdout is not one JSON document ({err}): {}", said(out)))
}

/// The prefixes listed for `source`, sorted.
fn listed(daemon: &Daemon, source: &str) -> Vec<String> {
    let out = daemon.cli(&["--json", "list", "--source", source]);
    let mut prefixes: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["prefix"].as_str().unwrap().to_owned())
        .collect();
    prefixes.sort();
    prefixes
}

/// AS64500 announces two IPv4 prefixes and an IPv6 one it may have, one holding the
/// firewall's own address (198.51.100.1) and one broader than the /8 guard; one seen by too
/// few peers; AS64501 a neighbour.
const FIRST_DUMP: &str = "% RIS whois dump, test table\n\
    64500\t203.0.113.0/25\t120\n\
    64500\t203.0.113.128/26\t80\n\
    64500\t2001:db8:a::/48\t40\n\
    64500\t198.51.100.0/24\t60\n\
    64500\t10.0.0.0/7\t60\n\
    64500\t192.0.2.0/24\t3\n\
    64501\t203.0.113.192/26\t90\n";

/// AS64500 has withdrawn 203.0.113.128/26 and taken 203.0.113.192/26 over.
const SECOND_DUMP: &str = "64500\t203.0.113.0/25\t120\n\
    64500\t203.0.113.192/26\t90\n\
    64500\t2001:db8:a::/48\t40\n\
    64500\t198.51.100.0/24\t60\n\
    64501\t203.0.113.128/26\t90\n";

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn block_asn_applies_the_guards_drops_at_the_nic_and_follows_new_dumps() {
    let sandbox = Sandbox::new("origins");
    let workdir = Workdir::new("origins", xdpguard_binary!());
    let dump = workdir.path.join("riswhoisdump.IPv4");
    std::fs::write(&dump, FIRST_DUMP).unwrap();
    workdir.write_config(
        FW_IF,
        19_531,
        &format!(
            "\n[origins]\nfiles = [\"{}\"]\ncheck_every = \"1s\"\n",
            dump.display()
        ),
    );
    let in_first: IpAddr = "203.0.113.5".parse().unwrap();
    let in_second: IpAddr = "203.0.113.130".parse().unwrap();
    let in_neighbour: IpAddr = "203.0.113.200".parse().unwrap();
    for source in [in_first, in_second, in_neighbour] {
        sandbox.add_source(source);
    }
    let daemon = Daemon::start(&sandbox, &workdir);
    assert!(
        eventually(Duration::from_secs(30), || {
            json(&daemon.cli(&["--json", "status"]))["origins"]["generation"] == 1
        }),
        "the table never loaded: {}",
        daemon.stderr()
    );
    assert_eq!(sandbox.ping(in_first, FW_V4, 2), 2, "nothing blocked yet");

    // The guards apply to each announced prefix; the answer sums up what they refused.
    let out = daemon.cli(&["block", "--asn", "AS64500", "--for", "1h"]);
    assert_eq!(out.status.code(), Some(4), "some refused: {}", said(&out));
    let text = said(&out);
    assert!(
        text.starts_with("AS64500: blocked 3 of 5 announced prefixes"),
        "{text}"
    );
    assert!(text.contains("198.51.100.0/24"), "own address: {text}");
    assert!(text.contains("10.0.0.0/7"), "too broad: {text}");
    assert_eq!(
        listed(&daemon, "asn:64500"),
        ["2001:db8:a::/48", "203.0.113.0/25", "203.0.113.128/26"]
    );
    let entries = json(&daemon.cli(&["--json", "list", "--source", "asn:64500"]));
    for entry in entries.as_array().unwrap() {
        assert_eq!(entry["origin"], "AS64500", "{entry}");
        assert_eq!(entry["announced"], entry["prefix"], "{entry}");
    }
    assert_eq!(
        sandbox.ping(in_first, FW_V4, 3),
        0,
        "AS64500's /25 is dropped"
    );
    assert_eq!(sandbox.ping(in_second, FW_V4, 3), 0, "and its /26");
    assert_eq!(sandbox.ping(in_neighbour, FW_V4, 3), 3, "AS64501 is not");

    let explained = said(&daemon.cli(&["explain", "203.0.113.5"]));
    assert!(
        explained.starts_with(
            "203.0.113.5 is in 203.0.113.0/25, announced by AS64500 (seen by 120 RIS peers)"
        ),
        "{explained}"
    );
    // The drops, summed per origin AS at the next reconcile pass (every second here).
    assert!(
        eventually(Duration::from_secs(20), || {
            http_get(&sandbox, 19_531, "/metrics").is_some_and(|page| {
                page.lines().any(|line| {
                    line.starts_with(
                        "xdpguard_top_origin_blocked_packets_total{origin=\"AS64500\"} ",
                    ) && !line.ends_with(" 0")
                })
            })
        }),
        "no per-AS drops on the metrics page"
    );

    // A new dump, replaced by rename as a fetch script does: the blocks follow it.
    let fresh = workdir.path.join("riswhoisdump.IPv4.new");
    std::fs::write(&fresh, SECOND_DUMP).unwrap();
    std::fs::rename(&fresh, &dump).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || listed(&daemon, "asn:64500")
            == ["2001:db8:a::/48", "203.0.113.0/25", "203.0.113.192/26"]),
        "the blocks did not follow the new dump: {:?}\n{}",
        listed(&daemon, "asn:64500"),
        daemon.stderr()
    );
    assert_eq!(sandbox.ping(in_neighbour, FW_V4, 3), 0, "now AS64500's");
    assert_eq!(sandbox.ping(in_second, FW_V4, 3), 3, "withdrawn, unblocked");

    // A corrupt download is refused and the table in use stays.
    std::fs::write(&dump, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad]).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            json(&daemon.cli(&["--json", "status"]))["origins"]["last_error"]
                .as_str()
                .is_some_and(|err| err.contains("riswhoisdump.IPv4"))
        }),
        "no load error reported"
    );
    assert_eq!(
        listed(&daemon, "asn:64500").len(),
        3,
        "a failed load changes nothing"
    );

    let out = daemon.cli(&["--json", "unblock", "--asn", "64500"]);
    assert_eq!(json(&out)["removed"], 3, "{}", said(&out));
    assert!(listed(&daemon, "asn:64500").is_empty());
    assert_eq!(sandbox.ping(in_first, FW_V4, 2), 2, "unblocked");
    let out = daemon.cli(&["unblock", "--asn", "64500"]);
    assert!(
        said(&out).contains("nothing is blocked for AS64500"),
        "{}",
        said(&out)
    );
    daemon.stop();
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn log_scoring_blocks_the_announced_prefix_once_enough_of_it_is_banned() {
    let sandbox = Sandbox::new("announced");
    let workdir = Workdir::new("announced", xdpguard_binary!());
    let dump = workdir.path.join("riswhoisdump.IPv4");
    // 203.0.113.64/26 is its own announcement inside AS64500's /24.
    std::fs::write(
        &dump,
        "64500\t203.0.113.0/24\t200\n64511\t203.0.113.64/26\t40\n",
    )
    .unwrap();
    workdir.write_config(
        FW_IF,
        19_532,
        &format!("\n[origins]\nfiles = [\"{}\"]\n", dump.display()),
    );
    let rulesets = workdir.path.join("rulesets");
    std::fs::create_dir_all(&rulesets).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets/sshd.toml");
    std::fs::copy(shipped, rulesets.join("sshd.toml")).unwrap();
    let log = workdir.path.join("auth.log");
    std::fs::write(&log, "").unwrap();
    workdir.add_log_scoring(
        &rulesets,
        &format!(
            "[scoring]\nexclude_local = false\nban = \"1h\"\naggregate = \"announced\"\naggregate_min = 3\n[[inputs]]\nname = \"auth\"\nfile = \"{}\"\nrulesets = [\"sshd\"]\n",
            log.display()
        ),
    );
    let never_logged: IpAddr = "203.0.113.100".parse().unwrap();
    let outside: IpAddr = "203.0.113.200".parse().unwrap();
    for source in [never_logged, outside] {
        sandbox.add_source(source);
    }
    let daemon = Daemon::start(&sandbox, &workdir);
    assert!(
        eventually(Duration::from_secs(30), || {
            json(&daemon.cli(&["--json", "status"]))["origins"]["generation"] == 1
        }),
        "the table never loaded"
    );
    let append = |addr: &str| {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for _ in 0..6 {
            writeln!(
                file,
                "Nov 22 10:00:01 fw sshd[7]: Failed password for root from {addr} port 4242 ssh2"
            )
            .unwrap();
        }
    };
    append("203.0.113.65");
    append("203.0.113.70");
    assert!(
        eventually(Duration::from_secs(20), || listed(&daemon, "ruleset:sshd")
            .len()
            == 2),
        "two addresses banned: {:?}",
        listed(&daemon, "ruleset:sshd")
    );
    assert!(
        !listed(&daemon, "ruleset:sshd").contains(&"203.0.113.64/26".to_owned()),
        "two are not enough"
    );
    append("203.0.113.80");
    assert!(
        eventually(Duration::from_secs(20), || listed(&daemon, "ruleset:sshd")
            .contains(&"203.0.113.64/26".to_owned())),
        "the announced /26 was not blocked: {:?}\n{}",
        listed(&daemon, "ruleset:sshd"),
        daemon.stderr()
    );
    let entries = json(&daemon.cli(&["--json", "list", "--source", "ruleset:sshd"]));
    let aggregate = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["prefix"] == "203.0.113.64/26")
        .unwrap();
    assert!(
        aggregate["reason"]
            .as_str()
            .unwrap()
            .contains("announced 203.0.113.64/26 of AS64511"),
        "{aggregate}"
    );
    assert_eq!(
        sandbox.ping(never_logged, FW_V4, 3),
        0,
        "a neighbour inside the announcement, never in the log, is dropped"
    );
    assert_eq!(
        sandbox.ping(outside, FW_V4, 3),
        3,
        "the rest of AS64500's /24 is not"
    );
    daemon.stop();
}
