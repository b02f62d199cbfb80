//! The flow collector against real peers: real traffic crosses the sandbox's veth pair,
//! tcpdump captures it on the firewall side, softflowd (Debian) turns the capture into NetFlow
//! v9 or IPFIX (see `xdpguard_testkit::flows`) and exports it to nfcapd (Debian nfdump), which repeats
//! every datagram to xdpguard's collector. Per-source byte and packet totals from xdpguard must
//! equal nfdump's, and the packets the test sent. Needs root; run by `cargo xtask test`.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use xdpguard::detect::traffic::flow::{CollectorSettings, DirectionFilter, FlowCollector};
use xdpguard_testkit::{
    daemon::{Children, eventually},
    flows::{Capture, softflowd_replay},
    netns::{FW_V4, Sandbox, Side},
};

/// Per source: (bytes, packets).
type Totals = BTreeMap<IpAddr, (u64, u64)>;

/// The attacker-side sources and how many datagrams of which payload size each sends.
fn plan() -> Vec<(IpAddr, usize, usize)> {
    let mut plan = Vec::new();
    for i in 1..=6u8 {
        plan.push((
            IpAddr::from([203, 0, 113, i]),
            5 + usize::from(i) * 3,
            100 * usize::from(i),
        ));
        plan.push((
            format!("2001:db8:a::{i}").parse().unwrap(),
            4 + usize::from(i) * 2,
            64 * usize::from(i),
        ));
    }
    plan
}

/// IP length of a UDP datagram with `payload` bytes (what NetFlow counts as its bytes).
const fn ip_len(source: IpAddr, payload: usize) -> u64 {
    let header = if source.is_ipv4() { 20 + 8 } else { 40 + 8 };
    (header + payload) as u64
}

/// nfdump's per-source totals of every file under `dir`.
fn nfdump_totals(dir: &Path) -> Totals {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .args(["-q", "-N", "-A", "srcip", "-o", "fmt:%sa %pkt %byt"])
        .output()
        .expect("nfdump");
    assert!(
        out.status.success(),
        "nfdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut totals = Totals::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [source, packets, bytes] = fields[..] else {
            continue;
        };
        let Ok(source) = source.parse::<IpAddr>() else {
            continue;
        };
        let entry = totals.entry(source).or_default();
        entry.0 += bytes.parse::<u64>().unwrap();
        entry.1 += packets.parse::<u64>().unwrap();
    }
    totals
}

fn run_case(version: &str) {
    let sandbox = Sandbox::new(&format!("flow{version}"));
    let plan = plan();
    for (source, _, _) in &plan {
        sandbox.add_source(*source);
    }
    let dir = tempdir(&format!("flow-peers-{version}"));
    let flows_dir = dir.path.join("nfcapd");
    std::fs::create_dir_all(&flows_dir).unwrap();

    // xdpguard's collector, bound in the firewall namespace.
    let totals: Arc<Mutex<Totals>> = Arc::default();
    let sink_totals = Arc::clone(&totals);
    let listen: SocketAddr = format!("{FW_V4}:0").parse().unwrap();
    // softflowd's flowDirection says which end of its two-way flow a record is (the lower
    // address is "0"), not ingress or egress: with softflowd the direction filter is off, and
    // the capture filter picks the inbound traffic.
    let mut settings = CollectorSettings::new(listen);
    settings.decoder.direction = DirectionFilter::Any;
    let collector = sandbox.within(Side::Firewall, || {
        FlowCollector::start(
            settings,
            Box::new(move |records| {
                let mut totals = sink_totals.lock().unwrap();
                for record in records {
                    let entry = totals.entry(record.source).or_default();
                    entry.0 += record.bytes;
                    entry.1 += record.packets;
                }
            }),
        )
        .unwrap()
    });
    let collector_port = collector.local_addr().port();
    let nfcapd_port = collector_port.wrapping_add(1).max(1024);

    let ns = format!("--net=/run/netns/{}", sandbox.fw);
    let mut peers = Children(Vec::new());
    peers.0.push(
        Command::new("nsenter")
            .arg(&ns)
            .args(["nfcapd", "-b", FW_V4, "-p", &nfcapd_port.to_string(), "-w"])
            .arg(&flows_dir)
            .args(["-t", "3600", "-R", &format!("{FW_V4}/{collector_port}")])
            .arg("-P")
            .arg(dir.path.join("nfcapd.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path.join("nfcapd.err")).unwrap())
            .spawn()
            .expect("nfcapd (Debian package nfdump)"),
    );
    let capture_path = dir.path.join("veth.pcap");
    let expected_packets: usize = plan.iter().map(|(_, count, _)| count).sum();
    // Only the attacker's UDP: no neighbour discovery or ICMP replies in the totals.
    let capture = Capture::start(
        &sandbox,
        &capture_path,
        expected_packets,
        "udp and (src net 203.0.113.0/24 or src net 2001:db8:a::/48)",
    );

    // Real traffic, bounded: a few datagrams from each source to the discard port.
    let mut sent = Totals::new();
    sandbox.within(Side::Attacker, || {
        for (source, count, payload) in &plan {
            let socket = UdpSocket::bind(SocketAddr::new(*source, 0)).unwrap();
            let target: SocketAddr = if source.is_ipv4() {
                format!("{FW_V4}:9").parse().unwrap()
            } else {
                "[2001:db8:f::1]:9".parse().unwrap()
            };
            for _ in 0..*count {
                let _ = socket.send_to(&vec![0x5a; *payload], target).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            let entry = sent.entry(*source).or_default();
            entry.0 += ip_len(*source, *payload) * *count as u64;
            entry.1 += *count as u64;
        }
    });
    assert!(
        capture.finish(Duration::from_secs(10)),
        "tcpdump did not see all {expected_packets} datagrams"
    );
    softflowd_replay(
        &sandbox,
        &capture_path,
        version,
        &format!("{FW_V4}:{nfcapd_port}"),
    );
    let complete = eventually(Duration::from_secs(20), || *totals.lock().unwrap() == sent);
    let ours = totals.lock().unwrap().clone();
    let stats = collector.stats();
    collector.stop();
    // nfcapd writes its file on SIGTERM.
    for child in &peers.0 {
        // SAFETY: signalling our own child.
        let _ = unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    }
    for child in &mut peers.0 {
        let _ = child.wait();
    }
    let reference = nfdump_totals(&flows_dir);
    let stats = stats.lock().unwrap().clone();
    assert!(
        complete,
        "NetFlow v{version}: xdpguard's totals {ours:?} never matched what was sent {sent:?}; exporter stats {stats:?}; nfdump {reference:?}; nfcapd: {}",
        std::fs::read_to_string(dir.path.join("nfcapd.err")).unwrap_or_default()
    );
    assert_eq!(
        ours, reference,
        "NetFlow v{version}: xdpguard and nfdump disagree"
    );
    let exporter: IpAddr = FW_V4.parse().unwrap();
    let errors = stats[&exporter].errors.total();
    assert_eq!(errors, 0, "decode errors: {stats:?}");
}

struct TempDir {
    path: std::path::PathBuf,
}

fn tempdir(tag: &str) -> TempDir {
    let path = std::env::temp_dir().join(format!("xdpguard-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    TempDir { path }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[test]
#[ignore = "needs root, softflowd and nfdump: run by `cargo xtask test`"]
fn softflowd_netflow_v9_totals_match_nfdump_and_the_traffic() {
    run_case("9");
}

#[test]
#[ignore = "needs root, softflowd and nfdump: run by `cargo xtask test`"]
fn softflowd_ipfix_totals_match_nfdump_and_the_traffic() {
    run_case("10");
}
