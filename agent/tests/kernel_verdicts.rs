//! Packet → verdict table through `BPF_PROG_TEST_RUN`: the real program in the kernel, no
//! interface attached. Needs root; run by `cargo xtask test` (`--ignored`).
use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use xdpguard::{
    enforce::dataplane::{Capacities, Dataplane, Stats, monotonic_now_ns},
    prefix::Prefix,
};
use xdpguard_common::{BlockEntry, Stat};
use xdpguard_testkit::frames::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, ETH_P_LLDP, concat, eth, ipv4,
    ipv6, udp4, udp6,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const ROOT_ONLY: &str = "needs root and BPF: run by `cargo xtask test`";

fn p(text: &str) -> Prefix {
    text.parse().unwrap()
}

fn a4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn a6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

/// The lists every case runs against.
fn loaded() -> Dataplane {
    let mut dp = Dataplane::load(Capacities::default()).expect("load (are you root?)");
    let in_an_hour = monotonic_now_ns() + 3_600_000_000_000;
    for (prefix, expires_ns) in [
        ("203.0.113.7", 0),
        ("203.0.113.8", 0),
        ("203.0.113.128/25", 0),
        ("203.0.113.9", 1),   // expired long ago
        ("203.0.113.130", 1), // expired, but inside the live /25
        ("203.0.113.10", in_an_hour),
        ("2001:db8:bad::1", 0),
        ("2001:db8:dead::/48", 0),
        ("2001:db8:bad::9", 1),
    ] {
        dp.block(&p(prefix), expires_ns).unwrap();
    }
    for prefix in ["203.0.113.200", "203.0.113.8", "2001:db8:dead:beef::/64"] {
        dp.allow(&p(prefix)).unwrap();
    }
    dp
}

fn entries(dp: &Dataplane) -> HashMap<Prefix, BlockEntry> {
    dp.block_entries()
        .unwrap()
        .into_iter()
        .map(|e| (e.prefix, e.entry))
        .collect()
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    dry_run: bool,
    action: u32,
    stat: Stat,
    expired_hit: bool,
    /// The block entry whose counters must grow by this frame; all others stay.
    block_entry: Option<&'static str>,
    /// The allow entry whose counters must grow by this frame.
    allow_entry: Option<&'static str>,
}

fn case(name: &'static str, frame: Vec<u8>, action: u32, stat: Stat) -> Case {
    Case {
        name,
        frame,
        dry_run: false,
        action,
        stat,
        expired_hit: false,
        block_entry: None,
        allow_entry: None,
    }
}

impl Case {
    fn entry(mut self, prefix: &'static str) -> Self {
        self.block_entry = Some(prefix);
        self
    }
    fn allowed_by(mut self, prefix: &'static str) -> Self {
        self.allow_entry = Some(prefix);
        self
    }
    fn expired(mut self) -> Self {
        self.expired_hit = true;
        self
    }
    fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }
}

fn table() -> Vec<Case> {
    let dst4 = a4("198.51.100.1");
    let dst6 = a6("2001:db8::1");
    let v4 = |src: &str| udp4(a4(src));
    let v6 = |src: &str| udp6(a6(src));
    let vlan4 = |tags: &[(u16, u16)], src: &str| {
        concat(&[&eth(ETH_P_IPV4, tags), &ipv4(a4(src), dst4, 0, 0)])
    };
    let vlan6 =
        |tags: &[(u16, u16)], src: &str| concat(&[&eth(ETH_P_IPV6, tags), &ipv6(a6(src), dst6)]);
    vec![
        case(
            "ipv4 clean source passes",
            v4("198.51.100.20"),
            XDP_PASS,
            Stat::Ipv4Pass,
        ),
        case(
            "ipv4 neighbour of a blocked host passes",
            v4("203.0.113.6"),
            XDP_PASS,
            Stat::Ipv4Pass,
        ),
        case(
            "ipv4 /32 hit drops",
            v4("203.0.113.7"),
            XDP_DROP,
            Stat::Ipv4Drop,
        )
        .entry("203.0.113.7/32"),
        case(
            "ipv4 prefix hit drops",
            v4("203.0.113.129"),
            XDP_DROP,
            Stat::Ipv4Drop,
        )
        .entry("203.0.113.128/25"),
        case(
            "ipv4 with options from a blocked host drops",
            concat(&[&eth(ETH_P_IPV4, &[]), &ipv4(a4("203.0.113.7"), dst4, 10, 0)]),
            XDP_DROP,
            Stat::Ipv4Drop,
        )
        .entry("203.0.113.7/32"),
        case(
            "ipv4 non-first fragment from a blocked host drops",
            concat(&[
                &eth(ETH_P_IPV4, &[]),
                &ipv4(a4("203.0.113.7"), dst4, 0, 0x2000 | 185),
            ]),
            XDP_DROP,
            Stat::Ipv4Drop,
        )
        .entry("203.0.113.7/32"),
        case(
            "ipv4 options announced but cut off is malformed",
            {
                let mut f = concat(&[&eth(ETH_P_IPV4, &[]), &ipv4(a4("203.0.113.7"), dst4, 0, 0)]);
                f[14] = 0x4f; // IHL 15: 40 option bytes that are not there
                f.truncate(14 + 40);
                f
            },
            XDP_PASS,
            Stat::Malformed,
        ),
        case(
            "ipv4 IHL below 5 is malformed",
            {
                let mut f = v4("203.0.113.7");
                f[14] = 0x44;
                f
            },
            XDP_PASS,
            Stat::Malformed,
        ),
        case(
            "ipv4 ethertype with version 6 is malformed",
            {
                let mut f = v4("203.0.113.7");
                f[14] = 0x65;
                f
            },
            XDP_PASS,
            Stat::Malformed,
        ),
        case(
            "ipv4 allow inside a blocked prefix passes",
            v4("203.0.113.200"),
            XDP_PASS,
            Stat::Ipv4Allowed,
        )
        .allowed_by("203.0.113.200/32"),
        case(
            "ipv4 allow of an exactly blocked host passes",
            v4("203.0.113.8"),
            XDP_PASS,
            Stat::Ipv4Allowed,
        )
        .allowed_by("203.0.113.8/32"),
        case(
            "ipv4 expired host entry passes",
            v4("203.0.113.9"),
            XDP_PASS,
            Stat::Ipv4Pass,
        )
        .expired(),
        case(
            "ipv4 expired host inside a live prefix drops by the prefix",
            v4("203.0.113.130"),
            XDP_DROP,
            Stat::Ipv4Drop,
        )
        .expired()
        .entry("203.0.113.128/25"),
        case(
            "ipv4 entry expiring in an hour drops",
            v4("203.0.113.10"),
            XDP_DROP,
            Stat::Ipv4Drop,
        )
        .entry("203.0.113.10/32"),
        case(
            "ipv4 one VLAN tag, blocked host drops",
            vlan4(&[(ETH_P_8021Q, 10)], "203.0.113.7"),
            XDP_DROP,
            Stat::Ipv4Drop,
        )
        .entry("203.0.113.7/32"),
        case(
            "ipv4 QinQ, prefix hit drops",
            vlan4(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10)], "203.0.113.250"),
            XDP_DROP,
            Stat::Ipv4Drop,
        )
        .entry("203.0.113.128/25"),
        case(
            "three VLAN tags are not parsed: passes as non-IP",
            vlan4(
                &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10), (ETH_P_8021Q, 11)],
                "203.0.113.7",
            ),
            XDP_PASS,
            Stat::NonIp,
        ),
        case(
            "ipv6 clean source passes",
            v6("2001:db8:1::1"),
            XDP_PASS,
            Stat::Ipv6Pass,
        ),
        case(
            "ipv6 /128 hit drops",
            v6("2001:db8:bad::1"),
            XDP_DROP,
            Stat::Ipv6Drop,
        )
        .entry("2001:db8:bad::1/128"),
        case(
            "ipv6 prefix hit drops",
            v6("2001:db8:dead:1::5"),
            XDP_DROP,
            Stat::Ipv6Drop,
        )
        .entry("2001:db8:dead::/48"),
        case(
            "ipv6 allow inside a blocked prefix passes",
            v6("2001:db8:dead:beef::5"),
            XDP_PASS,
            Stat::Ipv6Allowed,
        )
        .allowed_by("2001:db8:dead:beef::/64"),
        case(
            "ipv6 expired host entry passes",
            v6("2001:db8:bad::9"),
            XDP_PASS,
            Stat::Ipv6Pass,
        )
        .expired(),
        case(
            "ipv6 one VLAN tag, blocked host drops",
            vlan6(&[(ETH_P_8021Q, 10)], "2001:db8:bad::1"),
            XDP_DROP,
            Stat::Ipv6Drop,
        )
        .entry("2001:db8:bad::1/128"),
        case(
            "ipv6 QinQ, prefix hit drops",
            vlan6(&[(ETH_P_8021AD, 7), (ETH_P_8021Q, 8)], "2001:db8:dead::77"),
            XDP_DROP,
            Stat::Ipv6Drop,
        )
        .entry("2001:db8:dead::/48"),
        case(
            "ipv6 source mapping a blocked ipv4 host drops",
            v6("::ffff:203.0.113.7"),
            XDP_DROP,
            Stat::Ipv6Drop,
        )
        .entry("203.0.113.7/32"),
        case(
            "ipv6 ethertype with version 4 is malformed",
            {
                let mut f = v6("2001:db8:bad::1");
                f[14] = 0x45;
                f
            },
            XDP_PASS,
            Stat::Malformed,
        ),
        case(
            "arp passes as non-IP",
            concat(&[&eth(ETH_P_ARP, &[]), &[0u8; 28]]),
            XDP_PASS,
            Stat::NonIp,
        ),
        case(
            "lldp passes as non-IP",
            concat(&[&eth(ETH_P_LLDP, &[]), &[0u8; 32]]),
            XDP_PASS,
            Stat::NonIp,
        ),
        case(
            "dry-run: ipv4 /32 hit passes as would-drop",
            v4("203.0.113.7"),
            XDP_PASS,
            Stat::Ipv4WouldDrop,
        )
        .dry_run()
        .entry("203.0.113.7/32"),
        case(
            "dry-run: ipv6 prefix hit passes as would-drop",
            v6("2001:db8:dead::1"),
            XDP_PASS,
            Stat::Ipv6WouldDrop,
        )
        .dry_run()
        .entry("2001:db8:dead::/48"),
        case(
            "dry-run: clean source passes",
            v4("198.51.100.20"),
            XDP_PASS,
            Stat::Ipv4Pass,
        )
        .dry_run(),
        case(
            "dry-run: allowlist still wins",
            v4("203.0.113.200"),
            XDP_PASS,
            Stat::Ipv4Allowed,
        )
        .dry_run()
        .allowed_by("203.0.113.200/32"),
    ]
}

/// Assert that exactly `expected` changed between two stat snapshots.
fn assert_stats(name: &str, delta: &Stats, expected: &[(Stat, u64, u64)]) {
    for (stat, value) in delta.iter() {
        let (packets, bytes) = expected
            .iter()
            .find(|(s, _, _)| *s == stat)
            .map_or((0, 0), |(_, p, b)| (*p, *b));
        assert_eq!(
            (value.packets, value.bytes),
            (packets, bytes),
            "{name}: counter {} (packets, bytes)",
            stat.name()
        );
    }
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn packet_verdict_table() {
    let _ = ROOT_ONLY;
    let mut dp = loaded();
    let cases = table();
    assert!(cases.len() >= 25);
    for case in cases {
        dp.set_dry_run(case.dry_run).unwrap();
        let len = case.frame.len() as u64;
        let stats_before = dp.stats().unwrap();
        let entries_before = entries(&dp);
        let allow_before = case
            .allow_entry
            .map(|a| dp.allow_entry(&p(a)).unwrap().unwrap());

        let (action, _) = dp.test_run(&case.frame, 1).unwrap();
        assert_eq!(action, case.action, "{}: XDP action", case.name);

        let mut expected = vec![(case.stat, 1, len)];
        if case.expired_hit {
            expected.push((Stat::ExpiredHit, 1, 0));
        }
        assert_stats(
            case.name,
            &dp.stats().unwrap().since(&stats_before),
            &expected,
        );

        let entries_after = entries(&dp);
        for (prefix, before) in &entries_before {
            let after = entries_after[prefix];
            let grew = case.block_entry.is_some_and(|e| p(e) == *prefix);
            let (dp_, db) = if grew { (1, len) } else { (0, 0) };
            assert_eq!(
                (after.packets - before.packets, after.bytes - before.bytes),
                (dp_, db),
                "{}: counters of block entry {prefix}",
                case.name
            );
            assert_eq!(
                after.expires_ns, before.expires_ns,
                "{}: expiry of {prefix}",
                case.name
            );
        }
        if let (Some(allow), Some(before)) = (case.allow_entry, allow_before) {
            let after = dp.allow_entry(&p(allow)).unwrap().unwrap();
            assert_eq!(
                (after.packets - before.packets, after.bytes - before.bytes),
                (1, len),
                "{}: counters of allow entry {allow}",
                case.name
            );
        }
    }
}

/// Every frame cut short anywhere before the end of the source address passes as malformed,
/// even from a blocked source: a parse error never drops.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn truncated_frames_pass_as_malformed() {
    let dp = loaded();
    let dst4 = a4("198.51.100.1");
    let dst6 = a6("2001:db8::1");
    let tag_sets: [&[(u16, u16)]; 3] = [
        &[],
        &[(ETH_P_8021Q, 5)],
        &[(ETH_P_8021AD, 5), (ETH_P_8021Q, 6)],
    ];
    let mut checked = 0;
    for tags in tag_sets {
        let full4 = concat(&[&eth(ETH_P_IPV4, tags), &ipv4(a4("203.0.113.7"), dst4, 3, 0)]);
        let full6 = concat(&[&eth(ETH_P_IPV6, tags), &ipv6(a6("2001:db8:bad::1"), dst6)]);
        let l2 = 14 + 4 * tags.len();
        // IPv4: the whole header including its 3 option words; IPv6: the fixed header.
        for (full, needed) in [(full4, l2 + 32), (full6, l2 + 40)] {
            for len in 14..needed {
                let before = dp.stats().unwrap();
                let (action, _) = dp.test_run(&full[..len], 1).unwrap();
                assert_eq!(
                    action,
                    XDP_PASS,
                    "length {len} of {needed} with {} tags",
                    tags.len()
                );
                assert_stats(
                    &format!("length {len} of {needed}"),
                    &dp.stats().unwrap().since(&before),
                    &[(Stat::Malformed, 1, len as u64)],
                );
                checked += 1;
            }
            // One byte more and the frame is whole: the block entry drops it.
            let (action, _) = dp.test_run(&full[..needed], 1).unwrap();
            assert_eq!(action, XDP_DROP, "whole header, {} tags", tags.len());
        }
    }
    assert!(checked > 100);
    // Shorter than an Ethernet header the kernel refuses the frame before any program runs
    // (BPF_PROG_TEST_RUN says EINVAL, and drivers never deliver such frames).
    for len in 0..14 {
        assert!(
            dp.test_run(&udp4(a4("203.0.113.7"))[..len], 1).is_err(),
            "length {len}"
        );
    }
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn full_list_is_a_clear_error_and_keeps_what_it_had() {
    let capacities = Capacities {
        block_host_v4: 4,
        block_prefix_v6: 2,
        ..Capacities::default()
    };
    let mut dp = Dataplane::load(capacities).unwrap();
    for i in 1..=4 {
        dp.block(&p(&format!("198.51.100.{i}")), 0).unwrap();
    }
    let err = dp.block(&p("198.51.100.5"), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "list block_host/ipv4 is full (capacity 4 entries); 198.51.100.5/32 was not added"
    );
    // Updating an entry that is already there still works on a full list.
    dp.block(&p("198.51.100.4"), 5).unwrap();
    assert_eq!(
        dp.block_entry(&p("198.51.100.4"))
            .unwrap()
            .unwrap()
            .expires_ns,
        5
    );
    dp.block(&p("2001:db8:1::/48"), 0).unwrap();
    dp.block(&p("2001:db8:2::/48"), 0).unwrap();
    let err = dp.block(&p("2001:db8:3::/48"), 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("block_prefix/ipv6 is full (capacity 2"),
        "{err}"
    );
    assert_eq!(dp.block_entries().unwrap().len(), 6);
    // Frames from what was there still drop.
    assert_eq!(
        dp.test_run(&udp4(a4("198.51.100.1")), 1).unwrap().0,
        XDP_DROP
    );
    assert_eq!(
        dp.test_run(&udp6(a6("2001:db8:2::1")), 1).unwrap().0,
        XDP_DROP
    );
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn entries_are_keyed_exactly_and_reblock_keeps_counters() {
    let mut dp = Dataplane::load(Capacities::default()).unwrap();
    dp.block(&p("203.0.113.0/24"), 0).unwrap();
    // A covering /24 is not an entry for the /25 inside it.
    assert_eq!(dp.block_entry(&p("203.0.113.0/25")).unwrap(), None);
    assert!(!dp.unblock(&p("203.0.113.0/25")).unwrap());
    // Host bits are cleared on the way in: this is the same /24.
    dp.block(&p("203.0.113.99/24"), 0).unwrap();
    assert_eq!(dp.block_entries().unwrap().len(), 1);
    assert_eq!(
        dp.test_run(&udp4(a4("203.0.113.5")), 1).unwrap().0,
        XDP_DROP
    );
    dp.block(&p("203.0.113.0/24"), 42).unwrap();
    let entry = dp.block_entry(&p("203.0.113.0/24")).unwrap().unwrap();
    assert_eq!(
        (entry.packets, entry.expires_ns, entry.prefix_len),
        (1, 42, 24)
    );
    assert!(dp.unblock(&p("203.0.113.0/24")).unwrap());
    assert!(!dp.unblock(&p("203.0.113.0/24")).unwrap());
    assert_eq!(
        dp.test_run(&udp4(a4("203.0.113.5")), 1).unwrap().0,
        XDP_PASS
    );
}

/// Guards the list-not-empty bits: an empty list is skipped, so the bit must be set before
/// the first entry and cleared only after the last one.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn lists_are_enforced_from_their_first_entry_to_their_last() {
    let mut dp = Dataplane::load(Capacities::default()).unwrap();
    let inside = udp6(a6("2001:db8:dead::5"));
    assert_eq!(dp.test_run(&inside, 1).unwrap().0, XDP_PASS);
    // Only the IPv6 prefix list has an entry: the (empty) host list is skipped, the prefix hit.
    dp.block(&p("2001:db8:dead::/48"), 0).unwrap();
    assert_eq!(dp.test_run(&inside, 1).unwrap().0, XDP_DROP);
    dp.block(&p("2001:db8:dead::5"), 0).unwrap();
    dp.block(&p("2001:db8:dead::6"), 0).unwrap();
    assert!(dp.unblock(&p("2001:db8:dead::/48")).unwrap());
    assert_eq!(
        dp.test_run(&inside, 1).unwrap().0,
        XDP_DROP,
        "host entry still there"
    );
    assert!(dp.unblock(&p("2001:db8:dead::5")).unwrap());
    assert_eq!(dp.test_run(&inside, 1).unwrap().0, XDP_PASS);
    assert_eq!(
        dp.test_run(&udp6(a6("2001:db8:dead::6")), 1).unwrap().0,
        XDP_DROP,
        "one host left"
    );
    // Removing something that is not there does not clear the bit.
    assert!(!dp.unblock(&p("2001:db8:dead::99")).unwrap());
    assert_eq!(
        dp.test_run(&udp6(a6("2001:db8:dead::6")), 1).unwrap().0,
        XDP_DROP
    );
    // Dry-run and the bits live in the same word: toggling one keeps the other.
    dp.set_dry_run(true).unwrap();
    dp.set_dry_run(false).unwrap();
    assert_eq!(
        dp.test_run(&udp6(a6("2001:db8:dead::6")), 1).unwrap().0,
        XDP_DROP
    );
    // An IPv4 frame is not affected by IPv6 lists.
    assert_eq!(
        dp.test_run(&udp4(a4("203.0.113.7")), 1).unwrap().0,
        XDP_PASS
    );
}

/// Guards the batched insert: both families and prefixes land in the right lists, and a
/// full list fails only the entries that did not fit.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn block_new_batches_hosts_and_reports_a_full_list_per_entry() {
    let mut dp = Dataplane::load(Capacities {
        block_host_v4: 8,
        ..Capacities::default()
    })
    .unwrap();
    dp.block(&p("203.0.113.7"), 0).unwrap();
    let batch: Vec<Prefix> = [
        "203.0.113.1",
        "203.0.113.2",
        "2001:db8:bad::1",
        "203.0.113.128/25",
        "203.0.113.3",
        "203.0.113.4",
        "203.0.113.5",
        "203.0.113.6",
        "203.0.113.8",
        "203.0.113.9",
    ]
    .iter()
    .map(|t| p(t))
    .collect();
    let results = dp.block_new(&batch, 0);
    let failed: Vec<String> = batch
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_err())
        .map(|(prefix, r)| format!("{prefix}: {}", r.as_ref().unwrap_err()))
        .collect();
    let hosts = dp
        .block_entries()
        .unwrap()
        .iter()
        .filter(|e| e.prefix.is_ipv4() && e.prefix.is_host())
        .count();
    // Eight host slots: .7 was there, seven new ones fit, the last one does not.
    assert_eq!((failed.len(), hosts), (1, 8), "{failed:?}");
    assert!(failed[0].contains("block_host/ipv4 is full"), "{failed:?}");
    for (prefix, result) in batch.iter().zip(&results) {
        if result.is_ok() {
            let frame = if prefix.is_ipv4() {
                udp4(match prefix.addr() {
                    std::net::IpAddr::V4(a) => a,
                    std::net::IpAddr::V6(_) => unreachable!(),
                })
            } else {
                udp6(a6("2001:db8:bad::1"))
            };
            assert_eq!(dp.test_run(&frame, 1).unwrap().0, XDP_DROP, "{prefix}");
        }
    }
    assert!(dp.block_entry(&p("203.0.113.128/25")).unwrap().is_some());
}

/// With every list empty the program does not read the source at all: frames must still be
/// counted by family, and cut-off headers still as malformed.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn empty_lists_still_count_families_and_malformed_frames() {
    let dp = Dataplane::load(Capacities::default()).unwrap();
    let v6 = udp6(a6("2001:db8:bad::1"));
    for (frame, stat) in [
        (udp4(a4("203.0.113.7")), Stat::Ipv4Pass),
        (v6.clone(), Stat::Ipv6Pass),
        (v6[..14 + 39].to_vec(), Stat::Malformed),
        (udp4(a4("203.0.113.7"))[..14 + 19].to_vec(), Stat::Malformed),
        (concat(&[&eth(ETH_P_ARP, &[]), &[0u8; 28]]), Stat::NonIp),
    ] {
        let before = dp.stats().unwrap();
        assert_eq!(dp.test_run(&frame, 1).unwrap().0, XDP_PASS);
        assert_stats(
            stat.name(),
            &dp.stats().unwrap().since(&before),
            &[(stat, 1, frame.len() as u64)],
        );
    }
}

/// Drain the volume maps into source → (packets, bytes).
fn drained(
    reader: &mut xdpguard::enforce::dataplane::VolumeReader,
) -> HashMap<std::net::IpAddr, (u64, u64)> {
    let mut out = HashMap::new();
    let _ = reader
        .drain(&mut |source, packets, bytes| {
            let previous = out.insert(source, (packets, bytes));
            assert!(previous.is_none(), "{source} drained twice");
        })
        .unwrap();
    out
}

/// Volume accounting counts every IP frame per source (dropped ones too, IPv4-mapped IPv6 as
/// IPv4), nothing while switched off, and a drain empties the maps.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn volume_accounting_counts_per_source_and_drains() {
    let mut dp = loaded();
    let mut reader = dp.volume_reader().unwrap();
    let v4 = udp4(a4("198.51.100.20"));
    let blocked = udp4(a4("203.0.113.7"));
    let v6 = udp6(a6("2001:db8::20"));
    let mapped = concat(&[
        &eth(ETH_P_IPV6, &[]),
        &ipv6(a6("::ffff:198.51.100.21"), a6("2001:db8::1")),
    ]);
    let arp = concat(&[&eth(ETH_P_ARP, &[]), &[0u8; 28]]);

    // Off (the default): nothing is counted.
    assert_eq!(dp.test_run(&v4, 3).unwrap().0, XDP_PASS);
    assert!(drained(&mut reader).is_empty(), "counted while off");

    dp.set_volume_accounting(true).unwrap();
    assert_eq!(dp.test_run(&v4, 5).unwrap().0, XDP_PASS);
    assert_eq!(dp.test_run(&blocked, 2).unwrap().0, XDP_DROP);
    assert_eq!(dp.test_run(&v6, 3).unwrap().0, XDP_PASS);
    assert_eq!(dp.test_run(&mapped, 4).unwrap().0, XDP_PASS);
    assert_eq!(dp.test_run(&arp, 2).unwrap().0, XDP_PASS);
    let len = |frame: &Vec<u8>| u64::try_from(frame.len()).unwrap();
    let expected: HashMap<std::net::IpAddr, (u64, u64)> = [
        ("198.51.100.20", 5, 5 * len(&v4)),
        ("203.0.113.7", 2, 2 * len(&blocked)),
        // IPv6 is counted per /64.
        ("2001:db8::", 3, 3 * len(&v6)),
        ("198.51.100.21", 4, 4 * len(&mapped)),
    ]
    .into_iter()
    .map(|(source, packets, bytes)| (source.parse().unwrap(), (packets, bytes)))
    .collect();
    assert_eq!(drained(&mut reader), expected);
    assert!(
        drained(&mut reader).is_empty(),
        "a drain must empty the maps"
    );

    dp.set_volume_accounting(false).unwrap();
    assert_eq!(dp.test_run(&v4, 3).unwrap().0, XDP_PASS);
    assert!(
        drained(&mut reader).is_empty(),
        "counted after switching off"
    );
}

/// A data path with volume accounting on, and the reader of its volume maps.
fn accounting_on(
    capacities: Capacities,
) -> (Dataplane, xdpguard::enforce::dataplane::VolumeReader) {
    let mut dp = Dataplane::load(capacities).unwrap();
    dp.set_volume_accounting(true).unwrap();
    let reader = dp.volume_reader().unwrap();
    (dp, reader)
}

/// More sources than the map holds: the LRU evicts instead of failing, and one drain reads
/// every remaining source across several batches.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn volume_accounting_is_bounded_and_drains_in_batches() {
    let (dp, mut reader) = accounting_on(Capacities {
        volume_v4: 8192,
        ..Capacities::default()
    });
    // 10,000 distinct IPv4 sources (the test run never puts them on a wire).
    for i in 0..10_000u32 {
        let source = Ipv4Addr::from(0x0a00_0000 + i);
        assert_eq!(dp.test_run(&udp4(source), 1).unwrap().0, XDP_PASS);
    }
    let counted = drained(&mut reader);
    assert!(
        counted.len() > 4096 && counted.len() <= 8192,
        "{} sources drained from an 8192-entry map",
        counted.len()
    );
    assert!(counted.values().all(|&(packets, _)| packets == 1));
    assert!(drained(&mut reader).is_empty());
}

/// A flood of more new sources per interval than the volume map holds is sampled: after drains
/// that find the map nearly full, a new source goes in for one frame in 2^n, weighted 2^n, so
/// the totals stay right while most frames cost a lookup instead of an eviction; once the
/// drains are small again the sampling comes down.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_churning_flood_is_sampled_with_weights_that_keep_the_totals() {
    let (dp, mut reader) = accounting_on(Capacities {
        volume_v4: 4096,
        ..Capacities::default()
    });
    assert_eq!(reader.sampling(), [0, 0]);
    let mut next = 0x0a00_0000u32;
    let mut flood = |dp: &Dataplane, sources: u32| {
        for _ in 0..sources {
            let frame = udp4(Ipv4Addr::from(next));
            next += 1;
            assert_eq!(dp.test_run(&frame, 1).unwrap().0, XDP_PASS);
        }
    };
    // Each drain of an overflowing map raises the exponent: 20k new sources fill the 4096
    // entries at 2^0, 2^-1 and 2^-2; at 2^-3 about 2,500 go in, and it stays there.
    let mut exponents = Vec::new();
    for _ in 0..4 {
        flood(&dp, 20_000);
        let _ = drained(&mut reader);
        exponents.push(reader.sampling()[0]);
    }
    assert_eq!(exponents, [1, 2, 3, 3]);
    assert_eq!(reader.sampling()[1], 0, "IPv6 saw no flood");

    // At 2^-3: 4,000 new sources, one frame each, are about 500 entries of 8 frames.
    let len = udp4(Ipv4Addr::new(192, 0, 2, 1)).len() as u64;
    flood(&dp, 4_000);
    let counted = drained(&mut reader);
    assert!(
        (350..650).contains(&counted.len()),
        "{} of 4000 sources sampled at 1 in 8",
        counted.len()
    );
    assert!(
        counted
            .values()
            .all(|&(packets, bytes)| packets == 8 && bytes == 8 * len),
        "each sampled source weighted 8"
    );
    let total: u64 = counted.values().map(|&(packets, _)| packets).sum();
    assert!(
        (2_800..5_200).contains(&total),
        "{total} packets estimated for 4000"
    );
    // That drain was small: the exponent comes down.
    assert_eq!(reader.sampling()[0], 2);
    // A source already in the map counts every frame exactly.
    let known = Ipv4Addr::new(192, 0, 2, 1);
    while drained(&mut reader).is_empty() || reader.sampling()[0] > 0 {
        assert_eq!(dp.test_run(&udp4(known), 1).unwrap().0, XDP_PASS);
    }
    for _ in 0..5 {
        assert_eq!(dp.test_run(&udp4(known), 1).unwrap().0, XDP_PASS);
    }
    assert_eq!(drained(&mut reader)[&std::net::IpAddr::V4(known)].0, 5);
}
