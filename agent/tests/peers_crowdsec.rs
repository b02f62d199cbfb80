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
            Order::Unblock { .. } => None,
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
