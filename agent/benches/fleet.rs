//! `cargo xtask bench fleet`: how fast a decision made on one agent is enforced on another,
//! through a real JetStream (Debian's nats-server 2.9 in the hub namespace).
//! - Propagation: 1,000 blocks made one at a time on A (control socket); for each, the time
//!   until its entry is in B's kernel map (B's pinned `BLOCK_HOST_V6`, read as bpftool would).
//! - Bulk: 100,000 blocks in one `block --file` on A; the time until B's kernel holds all.
//!
//! Root only (namespaces, XDP); no timed assertions, the figures go into docs/BENCHMARKS.md.
use std::{
    fmt::Write as _,
    net::Ipv6Addr,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, Map, MapData};
use xdpguard::api::control::{client, proto::Request};
use xdpguard_common::{BlockEntry, map_names};
use xdpguard_testkit::{
    daemon::{Daemon, Workdir},
    nats::NatsHub,
    netns::{FW_IF, Sandbox},
    report::{load_average, machine, median, thousands},
    xdpguard_binary,
};

const SINGLES: u32 = 1_000;
const BULK: u32 = 100_000;
const LIMIT: Duration = Duration::from_secs(300);

fn agent(hub: &NatsHub, name: &str, metrics: u16) -> (Sandbox, Workdir) {
    let sandbox = Sandbox::new(&format!("bfleet{name}"));
    let workdir = Workdir::new(&format!("bfleet{name}"), xdpguard_binary!());
    let url = hub.link(&sandbox);
    workdir.write_config(
        FW_IF,
        metrics,
        &format!(
            "[capacity]\nblock_host_v6 = 400000\n\n[fleet]\nservers = [\"{url}\"]\nhost = \"{name}\"\n"
        ),
    );
    (sandbox, workdir)
}

/// Entries in a daemon's IPv6 host list, as `status` counts them.
fn host_entries(daemon: &Daemon) -> u64 {
    let out = daemon.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    status["lists"]
        .as_array()
        .and_then(|lists| lists.iter().find(|l| l["list"] == "block_host/ipv6"))
        .and_then(|list| list["entries"].as_u64())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let load_at_start = load_average();
    let scratch = Workdir::new("bfleethub", xdpguard_binary!());
    let hub = NatsHub::start(&scratch.path.join("nats"));
    let (sandbox_a, workdir_a) = agent(&hub, "a", 19_561);
    let (sandbox_b, workdir_b) = agent(&hub, "b", 19_562);
    let a = Daemon::start(&sandbox_a, &workdir_a);
    let b = Daemon::start(&sandbox_b, &workdir_b);
    let data = MapData::from_pin(workdir_b.pin_dir().join(map_names::BLOCK_HOST_V6)).unwrap();
    let b_hosts: HashMap<MapData, [u8; 16], BlockEntry> =
        HashMap::try_from(Map::HashMap(data)).unwrap();

    let mut singles = Vec::new();
    for i in 1..=SINGLES {
        let addr = Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, u16::try_from(i).unwrap());
        let started = Instant::now();
        let answer = client::call(
            &a.socket,
            &Request::Block {
                prefixes: vec![addr.to_string()],
                duration_secs: Some(3600),
                reason: Some("bench".into()),
                source: None,
                force: false,
            },
        );
        assert!(answer.is_ok(), "{answer:?}");
        while b_hosts.get(&addr.octets(), 0).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{addr} never reached B"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        singles.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    singles.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        median(singles.clone()),
        singles[singles.len() * 99 / 100],
        singles[singles.len() - 1],
    );

    let list = scratch.path.join("bulk.txt");
    let text: String = (0..BULK)
        .map(|i| {
            let addr = Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xd,
                0,
                0,
                0,
                u16::try_from(i >> 16).unwrap(),
                u16::try_from(i & 0xffff).unwrap() + 1,
            );
            format!("{addr}\n")
        })
        .collect();
    std::fs::write(&list, text).unwrap();
    let before = host_entries(&b);
    let started = Instant::now();
    let out = a.cli(&["block", "--file", list.to_str().unwrap(), "--for", "1h"]);
    assert!(out.status.success(), "{out:?}");
    let applied_on_a = started.elapsed();
    let mut on_b = None;
    while started.elapsed() < LIMIT {
        if host_entries(&b) >= before + u64::from(BULK) {
            on_b = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let enforced = host_entries(&b) - before;
    let mut report = format!(
        "\n{}; 1-minute load average {load_at_start} at the start, {} at the end\n\n",
        machine(),
        load_average()
    );
    let _ = writeln!(
        report,
        "| case | figure |\n|---|---:|\n| block on A → entry in B's kernel map, {} decisions one at a time: p50 | {p50:.1} ms |\n| p99 | {p99:.1} ms |\n| max | {max:.1} ms |\n| {} decisions in one `block --file` on A: applied on A | {:.2} s |\n| → all enforced on B | {} |\n| enforced on B at the end | {} |",
        thousands(SINGLES),
        thousands(BULK),
        applied_on_a.as_secs_f64(),
        on_b.map_or_else(
            || format!("not within {} s", LIMIT.as_secs()),
            |d| format!("{:.2} s", d.as_secs_f64())
        ),
        thousands(enforced),
    );
    println!("{report}");
    drop((a, b));
}
