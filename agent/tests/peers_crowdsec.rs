//! The CrowdSec stream decoder and decision tracker against a real local API (Debian's
//! crowdsec 1.4.6, LAPI only, in the sandbox's firewall namespace): decisions added and
//! deleted with `cscli` come out of `/v1/decisions/stream` as the blocks and unblocks the
//! bouncer will order, a restarted LAPI's startup answer loses nothing, and a wrong key is
//! refused. Needs root (network namespaces): run by `cargo xtask test`.
use std::time::{SystemTime, UNIX_EPOCH};

use xdpguard::{
    peers::crowdsec::{
        stream::parse_stream,
        tracker::{Order, Tracker},
    },
    prefix::Prefix,
};
use xdpguard_testkit::{crowdsec::Crowdsec, daemon::Workdir, netns::Sandbox, xdpguard_binary};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn p(text: &str) -> Prefix {
    text.parse().unwrap()
}

/// One poll: the stream's answer through the tracker.
fn poll(
    lapi: &Crowdsec,
    sandbox: &Sandbox,
    tracker: &mut Tracker,
    startup: bool,
) -> (Vec<Order>, xdpguard::peers::crowdsec::tracker::BatchCounts) {
    let path = format!("/v1/decisions/stream?startup={startup}");
    let (status, body) = lapi
        .get(sandbox, &path, lapi.key())
        .expect("the LAPI answers");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let batch = parse_stream(&body).unwrap();
    assert!(batch.malformed.is_empty(), "{:?}", batch.malformed);
    tracker.apply(batch, now(), startup, &[])
}

fn blocked(orders: &[Order]) -> Vec<(Prefix, String)> {
    let mut out: Vec<(Prefix, String)> = orders
        .iter()
        .filter_map(|order| match order {
            Order::Block { prefix, origin, .. } => Some((*prefix, origin.clone())),
            Order::Unblock { .. } | Order::Allow { .. } | Order::Unallow { .. } => None,
        })
        .collect();
    out.sort();
    out
}

#[test]
#[ignore = "needs root (network namespaces) and Debian's crowdsec: run by `cargo xtask test`"]
fn cscli_decisions_come_out_of_the_stream_as_blocks_and_unblocks() {
    let sandbox = Sandbox::new("crowdsec");
    let workdir = Workdir::new("crowdsec", xdpguard_binary!());
    let mut lapi = Crowdsec::start(&sandbox, &workdir.path.join("crowdsec"), 18_123);
    let mut tracker = Tracker::new(10_000);
    let (orders, _) = poll(&lapi, &sandbox, &mut tracker, true);
    assert!(orders.is_empty(), "a fresh LAPI holds nothing: {orders:?}");

    for args in [
        &[
            "decisions",
            "add",
            "--ip",
            "203.0.113.7",
            "--duration",
            "1h",
        ][..],
        &[
            "decisions",
            "add",
            "--range",
            "198.51.100.0/24",
            "--duration",
            "2h",
        ],
        &[
            "decisions",
            "add",
            "--ip",
            "2001:db8:a::7",
            "--duration",
            "30m",
        ],
        &[
            "decisions",
            "add",
            "--ip",
            "203.0.113.8",
            "--type",
            "captcha",
        ],
    ] {
        let out = lapi.cscli(&sandbox, args);
        assert!(out.status.success(), "cscli {args:?}: {out:?}");
    }
    let started = now();
    let (orders, counts) = poll(&lapi, &sandbox, &mut tracker, false);
    assert_eq!(
        blocked(&orders),
        [
            (p("198.51.100.0/24"), "cscli".to_owned()),
            (p("203.0.113.7"), "cscli".to_owned()),
            (p("2001:db8:a::7"), "cscli".to_owned()),
        ]
    );
    assert_eq!(counts.skipped_type.get("captcha"), Some(&1));
    // Ends from the LAPI's remaining durations: the range's about two hours out.
    let range_end = orders
        .iter()
        .find_map(|order| match order {
            Order::Block {
                prefix, until_unix, ..
            } if *prefix == p("198.51.100.0/24") => Some(*until_unix),
            _ => None,
        })
        .unwrap();
    assert!(
        (started + 7_190..=started + 7_210).contains(&range_end),
        "{range_end} vs {started}"
    );

    let out = lapi.cscli(&sandbox, &["decisions", "delete", "--ip", "203.0.113.7"]);
    assert!(out.status.success(), "{out:?}");
    let (orders, counts) = poll(&lapi, &sandbox, &mut tracker, false);
    assert_eq!(
        orders,
        [Order::Unblock {
            prefix: p("203.0.113.7")
        }]
    );
    assert_eq!(counts.deleted.get("cscli"), Some(&1));

    // The LAPI stopped and started again: its startup answer is the same set, nothing to do.
    lapi.stop();
    assert!(
        lapi.get(&sandbox, "/v1/decisions/stream", lapi.key())
            .is_none()
    );
    lapi.restart(&sandbox);
    let (orders, _) = poll(&lapi, &sandbox, &mut tracker, true);
    assert!(orders.is_empty(), "{orders:?}");
    assert_eq!(tracker.len(), 2);

    // A wrong key is refused by the LAPI.
    let (status, body) = lapi
        .get(&sandbox, "/v1/decisions/stream?startup=true", "not-a-key")
        .unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
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

fn addr(text: &str) -> std::net::IpAddr {
    text.parse().unwrap()
}

/// A metric's value on the daemon's page (0 when absent).
fn metric(sandbox: &Sandbox, port: u16, series: &str) -> u64 {
    xdpguard_testkit::daemon::http_get(sandbox, port, "/metrics")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root, BPF and Debian's crowdsec: run by `cargo xtask test`"]
fn the_daemon_bounces_for_a_real_crowdsec_lapi() {
    use std::time::Duration;
    use xdpguard_testkit::{
        daemon::{Daemon, eventually},
        netns::{FW_IF, FW_V4},
    };
    const METRICS: u16 = 19_531;
    let sandbox = Sandbox::new("bouncer");
    for source in ["203.0.113.10", "203.0.113.66", "203.0.113.88"] {
        sandbox.add_source(addr(source));
    }
    let workdir = Workdir::new("bouncer", xdpguard_binary!());
    let mut lapi = Crowdsec::start(&sandbox, &workdir.path.join("crowdsec"), 18_124);
    workdir.write_config(
        FW_IF,
        METRICS,
        &format!(
            "[allowlist]\nprefixes = [\"203.0.113.10\"]\n\n[crowdsec]\nlapi_url = \"{}\"\napi_key = \"{}\"\npoll_interval = \"1s\"\n",
            lapi.url(),
            lapi.key()
        ),
    );
    let daemon = Daemon::start(&sandbox, &workdir);
    let passes = |source: &str| sandbox.ping(addr(source), FW_V4, 1) == 1;
    assert!(passes("203.0.113.66") && passes("203.0.113.88"));
    let within = Duration::from_secs(15);

    // An address and a range from cscli are dropped at the NIC; the allowlisted one is not.
    for args in [
        &[
            "decisions",
            "add",
            "--ip",
            "203.0.113.66",
            "--duration",
            "1h",
        ][..],
        &[
            "decisions",
            "add",
            "--range",
            "203.0.113.80/28",
            "--duration",
            "2h",
        ],
        &[
            "decisions",
            "add",
            "--ip",
            "203.0.113.10",
            "--duration",
            "1h",
        ],
    ] {
        ok(&lapi.cscli(&sandbox, args));
    }
    assert!(
        eventually(within, || !passes("203.0.113.66")),
        "{}",
        daemon.stderr()
    );
    assert!(eventually(within, || !passes("203.0.113.88")));
    assert!(passes("203.0.113.10"), "the allowlist wins over CrowdSec");
    let listed = ok(&daemon.cli(&["list", "--source", "crowdsec:cscli"]));
    assert!(
        listed.contains("203.0.113.66") && listed.contains("203.0.113.80/28"),
        "{listed}"
    );
    assert!(eventually(within, || metric(
        &sandbox,
        METRICS,
        "xdpguard_crowdsec_refused_total{reason=\"allowlisted\"}"
    ) == 1));
    assert_eq!(metric(&sandbox, METRICS, "xdpguard_crowdsec_up"), 1);

    // Deleted in CrowdSec: passes again. An operator's own block on the same address stays
    // when CrowdSec takes its decision back.
    ok(&daemon.cli(&["block", "203.0.113.66", "--for", "1h"]));
    ok(&lapi.cscli(&sandbox, &["decisions", "delete", "--ip", "203.0.113.66"]));
    assert!(eventually(within, || metric(
        &sandbox,
        METRICS,
        "xdpguard_crowdsec_decisions_total{event=\"deleted\",origin=\"cscli\"}"
    ) >= 1));
    assert!(
        !passes("203.0.113.66"),
        "the operator's block is not CrowdSec's to remove"
    );
    ok(&daemon.cli(&["unblock", "203.0.113.66"]));
    assert!(passes("203.0.113.66"));

    // The LAPI down: everything held is enforced, the bouncer says it is down; back up,
    // nothing was lost, and a deletion made then goes through.
    lapi.stop();
    assert!(eventually(within, || metric(
        &sandbox,
        METRICS,
        "xdpguard_crowdsec_up"
    ) == 0));
    assert!(!passes("203.0.113.88"));
    lapi.restart(&sandbox);
    assert!(eventually(within, || metric(
        &sandbox,
        METRICS,
        "xdpguard_crowdsec_up"
    ) == 1));
    assert!(
        !passes("203.0.113.88"),
        "a restarted LAPI's startup answer keeps the range"
    );
    ok(&lapi.cscli(
        &sandbox,
        &["decisions", "delete", "--range", "203.0.113.80/28"],
    ));
    assert!(
        eventually(within, || passes("203.0.113.88")),
        "{}",
        daemon.stderr()
    );

    // A wrong key (a reload with another one) is said clearly, and enforcement goes on.
    ok(&lapi.cscli(
        &sandbox,
        &[
            "decisions",
            "add",
            "--ip",
            "203.0.113.66",
            "--duration",
            "1h",
        ],
    ));
    assert!(eventually(within, || !passes("203.0.113.66")));
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        config.replace(lapi.key(), "0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(
        eventually(within, || daemon
            .stderr()
            .contains("refused the bouncer key")),
        "{}",
        daemon.stderr()
    );
    assert!(
        !passes("203.0.113.66"),
        "still enforced while the key is wrong"
    );
    drop(daemon);
}
