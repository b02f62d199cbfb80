//! The history, recorded by a real daemon in the sandbox: the drops it records equal what
//! the kernel counted, decisions are counted per source, a kill -9 leaves a readable
//! database that keeps what it had, and `report` reads it while a daemon writes. Needs root;
//! run by `cargo xtask test`.
use std::{net::IpAddr, path::Path, process::Output, time::Duration};

use xdpguard_testkit::{
    daemon::{Daemon, Workdir, eventually},
    netns::{FW_IF, FW_V4, Sandbox},
    xdpguard_binary,
};

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not one JSON document ({err}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// IPv4 drops the kernel counted, over every interface slot, as `status` reads them.
fn kernel_drops(daemon: &Daemon) -> u64 {
    json(&daemon.cli(&["--json", "status"]))["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|counter| counter["counter"] == "ipv4_drop")
        .map(|counter| counter["packets"].as_u64().unwrap())
        .sum()
}

/// The whole history, as `report --json` reads it.
fn report(workdir: &Workdir, history: &Path) -> serde_json::Value {
    let out = workdir.cli(&[
        "--json",
        "report",
        "--history",
        history.to_str().unwrap(),
        "--since",
        "2h",
        "--bin",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

fn recorded_drops(summary: &serde_json::Value) -> u64 {
    summary["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bin| bin["packets"]["dropped_v4"].as_u64().unwrap())
        .sum()
}

fn recorded_decisions(summary: &serde_json::Value, source: &str) -> u64 {
    summary["bins"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|bin| bin["decisions"].as_array().unwrap().iter())
        .filter(|pair| pair[0] == source)
        .map(|pair| pair[1].as_u64().unwrap())
        .sum()
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn recorded_drops_equal_the_kernels_and_survive_kill_9() {
    let sandbox = Sandbox::new("history");
    let workdir = Workdir::new("history", xdpguard_binary!());
    let history = workdir.path.join("history.sqlite");
    workdir.write_config(
        FW_IF,
        19_541,
        &format!(
            "\n[history]\npath = \"{}\"\ninterval = \"1s\"\n",
            history.display()
        ),
    );
    let blocked: IpAddr = "203.0.113.5".parse().unwrap();
    sandbox.add_source(blocked);

    let daemon = Daemon::start(&sandbox, &workdir);
    let at_start = kernel_drops(&daemon);
    let out = daemon.cli(&["block", "203.0.113.5", "--for", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sandbox.ping(blocked, FW_V4, 6), 0, "blocked");
    assert!(
        sandbox.ping("198.51.100.2".parse().unwrap(), FW_V4, 2) == 2,
        "the attacker's own address passes"
    );
    let counted = kernel_drops(&daemon) - at_start;
    assert!(counted >= 6, "the kernel counted {counted} drops");
    // `report` reads while the daemon writes (WAL readers).
    assert!(
        eventually(Duration::from_secs(20), || recorded_drops(&report(
            &workdir, &history
        )) == counted),
        "recorded {} drops, the kernel counted {counted}",
        recorded_drops(&report(&workdir, &history))
    );
    daemon.stop();
    let summary = report(&workdir, &history);
    assert_eq!(recorded_drops(&summary), counted, "nothing counted twice");
    assert_eq!(recorded_decisions(&summary, "manual"), 1, "{summary}");

    // kill -9 while it records every second: the file stays readable, what it had stays.
    let daemon = Daemon::start(&sandbox, &workdir);
    let before = kernel_drops(&daemon);
    assert_eq!(
        sandbox.ping(blocked, FW_V4, 4),
        0,
        "still blocked after restart"
    );
    let more = kernel_drops(&daemon) - before;
    assert!(
        eventually(Duration::from_secs(20), || recorded_drops(&report(
            &workdir, &history
        )) == counted + more),
        "the second run's drops were not recorded"
    );
    daemon.kill();
    let summary = report(&workdir, &history);
    assert_eq!(recorded_drops(&summary), counted + more);
    // And it records again after that.
    let daemon = Daemon::start(&sandbox, &workdir);
    let before = kernel_drops(&daemon);
    assert_eq!(sandbox.ping(blocked, FW_V4, 2), 0);
    let last = kernel_drops(&daemon) - before;
    daemon.stop();
    assert_eq!(
        recorded_drops(&report(&workdir, &history)),
        counted + more + last
    );
}
