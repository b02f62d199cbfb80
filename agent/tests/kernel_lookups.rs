//! The summary bitmaps in front of the block lists, in the real program through
//! `BPF_PROG_TEST_RUN`: their edges, and 100k random sources checked against a plain userspace
//! longest-prefix match after random inserts and removals. Needs root; run by
//! `cargo xtask test` (`--ignored`).
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use xdpguard::{
    enforce::dataplane::{Capacities, Dataplane},
    prefix::Prefix,
};
use xdpguard_testkit::frames::{udp4, udp6};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn p(text: &str) -> Prefix {
    text.parse().unwrap()
}

fn verdict(dp: &Dataplane, addr: IpAddr) -> u32 {
    let frame = match addr {
        IpAddr::V4(a) => udp4(a),
        IpAddr::V6(a) => udp6(a),
    };
    dp.test_run(&frame, 1).unwrap().0
}

fn assert_verdicts(dp: &Dataplane, when: &str, cases: &[(&str, u32)]) {
    for (addr, expected) in cases {
        let addr: IpAddr = addr.parse().unwrap();
        assert_eq!(verdict(dp, addr), *expected, "{when}: {addr}");
    }
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn summary_edges_keep_every_verdict() {
    let mut dp = Dataplane::load(Capacities::default()).expect("load (are you root?)");
    assert_eq!(dp.summary_population().unwrap(), 0);

    // Two hosts in one /24: its bit comes down only when the last one leaves.
    dp.block(&p("203.0.113.7"), 0).unwrap();
    dp.block(&p("203.0.113.8"), 0).unwrap();
    assert_eq!(dp.summary_population().unwrap(), 1);
    assert!(dp.unblock(&p("203.0.113.7")).unwrap());
    assert_verdicts(
        &dp,
        "one host left",
        &[("203.0.113.8", XDP_DROP), ("203.0.113.7", XDP_PASS)],
    );
    assert_eq!(dp.summary_population().unwrap(), 1);
    assert!(dp.unblock(&p("203.0.113.8")).unwrap());
    assert_verdicts(&dp, "none left", &[("203.0.113.8", XDP_PASS)]);
    assert_eq!(dp.summary_population().unwrap(), 0, "the bit came down");

    // A /18 spans 64 /24 slots, two summary words: both ends drop, the neighbours pass.
    dp.block(&p("198.51.0.0/18"), 0).unwrap();
    assert_eq!(dp.summary_population().unwrap(), 64);
    assert_verdicts(
        &dp,
        "/18 across a word boundary",
        &[
            ("198.51.0.0", XDP_DROP),
            ("198.51.31.255", XDP_DROP),
            ("198.51.32.0", XDP_DROP),
            ("198.51.63.255", XDP_DROP),
            ("198.51.64.0", XDP_PASS),
            ("198.50.255.255", XDP_PASS),
        ],
    );

    // A longer prefix inside it, then the covering one goes: the inner one stays.
    dp.block(&p("198.51.40.128/25"), 0).unwrap();
    assert!(dp.unblock(&p("198.51.0.0/18")).unwrap());
    assert_verdicts(
        &dp,
        "inner /25 after the /18 left",
        &[
            ("198.51.40.129", XDP_DROP),
            ("198.51.40.1", XDP_PASS),
            ("198.51.0.1", XDP_PASS),
        ],
    );
    assert_eq!(dp.summary_population().unwrap(), 1);
    // The covering one back, the inner one removed: the covering one still drops there.
    dp.block(&p("198.51.0.0/18"), 0).unwrap();
    assert!(dp.unblock(&p("198.51.40.128/25")).unwrap());
    assert_verdicts(&dp, "the /18 again", &[("198.51.40.129", XDP_DROP)]);
    assert_eq!(
        dp.summary_population().unwrap(),
        64,
        "the /18 still holds the /25's slot"
    );

    // Host and prefix bits of one /24 are separate: a host there does not hide the prefix.
    dp.block(&p("192.0.2.64/26"), 0).unwrap();
    dp.block(&p("192.0.2.1"), 0).unwrap();
    assert_verdicts(
        &dp,
        "host and prefix in one /24",
        &[
            ("192.0.2.1", XDP_DROP),
            ("192.0.2.65", XDP_DROP),
            ("192.0.2.2", XDP_PASS),
        ],
    );

    // An expired longest match is passed over: the live shorter one drops, and counts.
    dp.block(&p("192.0.2.64/27"), 1).unwrap();
    let before = dp
        .block_entry(&p("192.0.2.64/26"))
        .unwrap()
        .unwrap()
        .packets;
    assert_verdicts(
        &dp,
        "expired /27 inside a live /26",
        &[("192.0.2.65", XDP_DROP), ("192.0.2.97", XDP_DROP)],
    );
    assert_eq!(
        dp.block_entry(&p("192.0.2.64/26"))
            .unwrap()
            .unwrap()
            .packets,
        before + 2
    );
    assert_eq!(
        dp.block_entry(&p("192.0.2.64/27"))
            .unwrap()
            .unwrap()
            .packets,
        0,
        "the expired entry counts nothing"
    );
    // Expired with nothing under it: passes.
    dp.block(&p("192.0.2.128/27"), 1).unwrap();
    assert_verdicts(&dp, "expired alone", &[("192.0.2.129", XDP_PASS)]);
    assert!(dp.unblock(&p("192.0.2.64/27")).unwrap());
    assert!(dp.unblock(&p("192.0.2.128/27")).unwrap());
    assert_verdicts(&dp, "after the sweep", &[("192.0.2.65", XDP_DROP)]);

    // Wide prefixes take no slots: the family's flag sends every source to the trie.
    let before = dp.summary_population().unwrap();
    dp.block(&p("10.0.0.0/8"), 0).unwrap();
    dp.block(&p("2000::/15"), 0).unwrap();
    assert_eq!(dp.summary_population().unwrap(), before);
    assert_verdicts(
        &dp,
        "wide prefixes",
        &[
            ("10.200.3.4", XDP_DROP),
            ("11.0.0.1", XDP_PASS),
            ("2001:db8::1", XDP_DROP),
            ("2002::1", XDP_PASS),
            ("::ffff:10.1.1.1", XDP_DROP),
        ],
    );
    assert!(dp.unblock(&p("10.0.0.0/8")).unwrap());
    assert!(dp.unblock(&p("2000::/15")).unwrap());
    assert_verdicts(
        &dp,
        "wide prefixes gone",
        &[("10.200.3.4", XDP_PASS), ("2001:db8::1", XDP_PASS)],
    );

    // IPv6: a host, a /48, and 2001::/20 (4,096 slots of /32s, written as 2001:db0::/20); the allowlist still wins.
    dp.block(&p("2001:db8:bad::1"), 0).unwrap();
    dp.block(&p("2001:db8:dead::/48"), 0).unwrap();
    dp.block(&p("2001:db0::/20"), 0).unwrap();
    dp.allow(&p("2001:db1::/32")).unwrap();
    assert_verdicts(
        &dp,
        "IPv6",
        &[
            ("2001:db8:bad::1", XDP_DROP),
            ("2001:db8:dead:1::2", XDP_DROP),
            ("2001:dbf:ffff::1", XDP_DROP),
            ("2001:db1::1", XDP_PASS),
            ("2001:1000::1", XDP_PASS),
        ],
    );
    assert!(dp.unblock(&p("2001:db0::/20")).unwrap());
    assert_verdicts(
        &dp,
        "IPv6 /20 gone",
        &[
            ("2001:db8:dead:1::2", XDP_DROP),
            ("2001:db8:bad::1", XDP_DROP),
            ("2001:dbf::1", XDP_PASS),
        ],
    );

    // A restarted daemon's recount rebuilds the summary from the lists alone.
    let expected = dp.summary_population().unwrap();
    let _ = dp.recount().unwrap();
    assert_eq!(dp.summary_population().unwrap(), expected);
}

/// The lists as a plain userspace model.
struct Model {
    hosts: HashMap<IpAddr, bool>,
    /// The prefix entries (masked) and whether they are live.
    prefixes: HashMap<Prefix, bool>,
    allows: HashSet<Prefix>,
}

impl Model {
    /// What the program must answer: a live host entry drops; else the longest live covering
    /// prefix drops (expired ones are passed over); a drop is turned into a pass by any
    /// covering allow entry.
    fn verdict(&self, addr: IpAddr) -> u32 {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let mut blocked = self.hosts.get(&addr) == Some(&true);
        if !blocked {
            for len in (0..max).rev() {
                let prefix = Prefix::new(addr, len).unwrap();
                if self.prefixes.get(&prefix) == Some(&true) {
                    blocked = true;
                    break;
                }
            }
        }
        let allowed = (0..=max).any(|len| self.allows.contains(&Prefix::new(addr, len).unwrap()));
        if blocked && !allowed {
            XDP_DROP
        } else {
            XDP_PASS
        }
    }
}

/// An address in one of the two small universes the entries come from, so they overlap.
fn random_addr(rng: &mut StdRng) -> IpAddr {
    if rng.random_bool(0.5) {
        // 198.18.0.0/15 and a neighbour: 512 /24s.
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
        IpAddr::V4(Ipv4Addr::from(base + rng.random_range(0..1 << 17)))
    } else {
        // 2001:db8::/32, in a few thousand /48s.
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        o[4] = rng.random_range(0..16);
        o[5] = rng.random();
        for b in &mut o[14..] {
            *b = rng.random_range(0..4);
        }
        IpAddr::V6(Ipv6Addr::from(o))
    }
}

fn random_prefix(rng: &mut StdRng) -> Prefix {
    let addr = random_addr(rng);
    let len = match addr {
        IpAddr::V4(_) if rng.random_bool(0.5) => 32,
        IpAddr::V4(_) => rng.random_range(12..32),
        IpAddr::V6(_) if rng.random_bool(0.5) => 128,
        IpAddr::V6(_) => rng.random_range(12..128),
    };
    Prefix::new(addr, len).unwrap()
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn random_lists_agree_with_a_userspace_longest_prefix_match() {
    let mut dp = Dataplane::load(Capacities::default()).expect("load (are you root?)");
    let mut rng = StdRng::seed_from_u64(0x5eed_0013);
    let mut model = Model {
        hosts: HashMap::new(),
        prefixes: HashMap::new(),
        allows: HashSet::new(),
    };
    let mut listed: Vec<Prefix> = Vec::new();
    for round in 0..2 {
        // Inserts (a tenth of them already expired), removals of listed entries, a few allows.
        for _ in 0..6_000 {
            let prefix = random_prefix(&mut rng);
            let live = !rng.random_bool(0.1);
            dp.block(&prefix, u64::from(!live)).unwrap();
            if prefix.is_host() {
                let _ = model.hosts.insert(prefix.addr(), live);
            } else {
                let _ = model.prefixes.insert(prefix, live);
            }
            listed.push(prefix);
        }
        for _ in 0..3_000 {
            let prefix = listed.swap_remove(rng.random_range(0..listed.len()));
            let was = if prefix.is_host() {
                model.hosts.remove(&prefix.addr()).is_some()
            } else {
                model.prefixes.remove(&prefix).is_some()
            };
            assert_eq!(dp.unblock(&prefix).unwrap(), was, "{prefix}");
        }
        for _ in 0..20 {
            let prefix = random_prefix(&mut rng);
            dp.allow(&prefix).unwrap();
            let _ = model.allows.insert(prefix);
        }
        // 50k sources a round: half inside listed entries, half anywhere in the universes.
        let mut drops = 0;
        for i in 0..50_000 {
            let addr = if i % 2 == 0 && !listed.is_empty() {
                let prefix = listed[rng.random_range(0..listed.len())];
                inside(&prefix, &mut rng)
            } else {
                random_addr(&mut rng)
            };
            let expected = model.verdict(addr);
            assert_eq!(verdict(&dp, addr), expected, "round {round}, source {addr}");
            drops += u32::from(expected == XDP_DROP);
        }
        // The test would mean little if almost everything passed or dropped.
        assert!(
            (5_000..45_000).contains(&drops),
            "round {round}: {drops} drops of 50k"
        );
    }
    // Everything removed: no summary bit is left up.
    for prefix in listed {
        let _ = dp.unblock(&prefix).unwrap();
    }
    assert_eq!(dp.summary_population().unwrap(), 0);
}

/// A random address inside `prefix`.
fn inside(prefix: &Prefix, rng: &mut StdRng) -> IpAddr {
    let len = u32::from(prefix.prefix_len());
    match prefix.addr() {
        IpAddr::V4(a) => {
            let host_bits = 32 - len;
            let noise = if host_bits == 0 {
                0
            } else {
                rng.random::<u32>() >> (32 - host_bits)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | noise))
        }
        IpAddr::V6(a) => {
            let host_bits = 128 - len;
            let noise = if host_bits == 0 {
                0
            } else {
                rng.random::<u128>() >> (128 - host_bits)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | noise))
        }
    }
}
