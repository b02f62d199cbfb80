//! The program attached to a real veth inside a namespace sandbox, with real ICMP and UDP from
//! a blocked and a clean source. Needs root; run by `cargo xtask test` (`--ignored`).
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use xdpguard::{
    enforce::dataplane::{AttachMode, AttachedMode, Capacities, Dataplane},
    prefix::Prefix,
};
use xdpguard_common::Stat;
use xdpguard_testkit::netns::{FW_IF, FW_V4, FW_V6, Sandbox, Side};

const PINGS: usize = 5;
const DATAGRAMS: usize = 10;
const PAYLOAD: usize = 32;
const ECHO_PORT: u16 = 7;

/// Frame sizes on the wire: Ethernet + IP + ICMP/UDP header + payload.
const PING4_FRAME: u64 = 14 + 20 + 8 + 56;
const PING6_FRAME: u64 = 14 + 40 + 8 + 56;
const UDP4_FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;
const UDP6_FRAME: u64 = 14 + 40 + 8 + PAYLOAD as u64;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ping(sandbox: &Sandbox, source: IpAddr, target: &str) -> usize {
    sandbox.ping(source, target, PINGS)
}

/// Send `DATAGRAMS` UDP datagrams from `source` to the echo server; returns how many echoes came back.
fn udp_echoes(sandbox: &Sandbox, source: IpAddr, target: &str) -> usize {
    sandbox.within(Side::Attacker, || {
        let socket = UdpSocket::bind(SocketAddr::new(source, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let target = SocketAddr::new(ip(target), ECHO_PORT);
        let mut echoes = 0;
        let mut buf = [0u8; 64];
        for i in 0..DATAGRAMS {
            let payload = [u8::try_from(i).unwrap(); PAYLOAD];
            socket.send_to(&payload, target).unwrap();
            if let Ok((len, from)) = socket.recv_from(&mut buf) {
                assert_eq!((len, from), (PAYLOAD, target));
                echoes += 1;
            }
        }
        echoes
    })
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn blocked_source_gets_no_reply_and_clean_source_does() {
    let sandbox = Sandbox::new("verdict");
    let (clean4, blocked4) = (ip("203.0.113.10"), ip("203.0.113.66"));
    let (clean6, blocked6) = (ip("2001:db8:a::10"), ip("2001:db8:a::66"));
    for source in [clean4, blocked4, clean6, blocked6] {
        sandbox.add_source(source);
    }

    let mut dp = sandbox.within(Side::Firewall, || {
        let mut dp = Dataplane::load(Capacities::default()).unwrap();
        // veth has a native XDP implementation: this must not fall back to generic.
        assert_eq!(
            dp.attach(FW_IF, AttachMode::Native).unwrap(),
            AttachedMode::Native
        );
        dp
    });
    dp.block(&Prefix::host(blocked4), 0).unwrap();
    dp.block(&Prefix::host(blocked6), 0).unwrap();

    // A UDP echo server on the firewall side, stopped when the test is done (or after 60 s).
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            sandbox.within(Side::Firewall, || {
                let sockets: Vec<UdpSocket> = [FW_V4, FW_V6]
                    .iter()
                    .map(|addr| {
                        let socket = UdpSocket::bind(SocketAddr::new(ip(addr), ECHO_PORT)).unwrap();
                        socket
                            .set_read_timeout(Some(Duration::from_millis(20)))
                            .unwrap();
                        socket
                    })
                    .collect();
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for socket in &sockets {
                        if let Ok((len, from)) = socket.recv_from(&mut buf) {
                            socket.send_to(&buf[..len], from).unwrap();
                        }
                    }
                }
            });
        });

        let before = dp.stats().unwrap();
        let results = [
            ("clean ipv4 ping", ping(&sandbox, clean4, FW_V4), PINGS),
            ("blocked ipv4 ping", ping(&sandbox, blocked4, FW_V4), 0),
            ("clean ipv6 ping", ping(&sandbox, clean6, FW_V6), PINGS),
            ("blocked ipv6 ping", ping(&sandbox, blocked6, FW_V6), 0),
            (
                "clean ipv4 udp",
                udp_echoes(&sandbox, clean4, FW_V4),
                DATAGRAMS,
            ),
            ("blocked ipv4 udp", udp_echoes(&sandbox, blocked4, FW_V4), 0),
            (
                "clean ipv6 udp",
                udp_echoes(&sandbox, clean6, FW_V6),
                DATAGRAMS,
            ),
            ("blocked ipv6 udp", udp_echoes(&sandbox, blocked6, FW_V6), 0),
        ];
        let delta = dp.stats().unwrap().since(&before);
        let per_interface = dp.interface_stats().unwrap();
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();

        for (what, got, expected) in results {
            assert_eq!(got, expected, "{what}: replies");
        }
        // Every frame the blocked sources sent was dropped, and counted on their entries.
        let sent = (PINGS + DATAGRAMS) as u64;
        for (source, bytes) in [
            (
                blocked4,
                PINGS as u64 * PING4_FRAME + DATAGRAMS as u64 * UDP4_FRAME,
            ),
            (
                blocked6,
                PINGS as u64 * PING6_FRAME + DATAGRAMS as u64 * UDP6_FRAME,
            ),
        ] {
            let entry = dp.block_entry(&Prefix::host(source)).unwrap().unwrap();
            assert_eq!(
                (entry.packets, entry.bytes),
                (sent, bytes),
                "entry of {source}"
            );
        }
        assert_eq!(delta.get(Stat::Ipv4Drop).packets, sent);
        assert_eq!(delta.get(Stat::Ipv6Drop).packets, sent);
        // IPv4 has no neighbour discovery or multicast noise here: what passed is exactly
        // what the clean source sent.
        assert_eq!(delta.get(Stat::Ipv4Pass).packets, sent);
        assert!(delta.get(Stat::Ipv6Pass).packets >= sent);
        assert_eq!(delta.get(Stat::Malformed).packets, 0);
        // The frames were counted in the attached interface's own slot.
        assert_eq!(per_interface.len(), 1);
        assert_eq!(per_interface[0].0, FW_IF);
        assert!(per_interface[0].1.get(Stat::Ipv4Drop).packets >= sent);
        assert!(per_interface[0].1.get(Stat::Ipv6Drop).packets >= sent);
    });
}
