//! Issue 10, item 7: a flood of NetFlow v9 templates from random source ids, sent from the
//! configured exporter's address (UDP: anyone on the path can spoof it), must not lock out a
//! new legitimate template. The daemon runs in the sandbox's firewall namespace with its flow
//! collector accepting only the attacker-side address; the flood and then a real template with
//! data come from that address over the veth pair. Needs root; run by `cargo xtask test`.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use xdpguard_testkit::{
    daemon::{Daemon, Workdir, eventually, http_get},
    encode::{self, AddressFamily, V9Flow, V9Header, V9Template},
    netns::{ATK_V4, FW_IF, FW_V4, Sandbox, Side},
    xdpguard_binary,
};

const METRICS_PORT: u16 = 19_571;
const FLOW_PORT: u16 = 2055;
/// Templates in the flood, each from a new source id.
const FLOOD_TEMPLATES: u32 = 200_000;
/// The flood stops here even if not all of it went out.
const FLOOD_TIME_LIMIT: Duration = Duration::from_secs(60);
/// The decoder's default bound of templates per exporter.
const TEMPLATES_PER_EXPORTER: u64 = 256;
/// The legitimate exporter's flows after the flood.
const REAL_FLOWS: u8 = 20;

/// The daemon's resident memory in KiB.
fn rss_kib(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The value of the series `name{labels}` on a /metrics page.
fn metric(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn flow_series(name: &str, kind: Option<&str>) -> String {
    match kind {
        Some(kind) => format!("{name}{{exporter=\"{ATK_V4}\",kind=\"{kind}\"}}"),
        None => format!("{name}{{exporter=\"{ATK_V4}\"}}"),
    }
}

#[test]
#[ignore = "needs root: network namespaces, XDP and the daemon; run by `cargo xtask test`"]
fn a_template_flood_does_not_lock_out_a_new_template() {
    let sandbox = Sandbox::new("hflow");
    let workdir = Workdir::new("hflow", xdpguard_binary!());
    workdir.write_config(
        FW_IF,
        METRICS_PORT,
        &format!(
            r#"
[volume]
interval = "1s"
xdp_accounting = false

[volume.flow]
listen = "{FW_V4}:{FLOW_PORT}"
exporters = ["{ATK_V4}"]
direction = "any"
"#
        ),
    );
    let daemon = Daemon::start(&sandbox, &workdir);
    let scrape = || http_get(&sandbox, METRICS_PORT, "/metrics").unwrap_or_default();
    let target = SocketAddr::from((FW_V4.parse::<IpAddr>().unwrap(), FLOW_PORT));
    let template = V9Template {
        template_id: 256,
        family: AddressFamily::V4,
        wide_counters: false,
    };

    let rss_before = rss_kib(&daemon);
    // The flood: bounded in count and time, paced so that most of it is received (a burst
    // larger than the socket buffer would only be dropped by the kernel).
    let (sent, flood_time) = sandbox.within(Side::Attacker, || {
        let socket = UdpSocket::bind((ATK_V4, 0)).unwrap();
        let started = Instant::now();
        let mut datagram = Vec::new();
        let mut state = 0x9e37_79b9u32;
        let mut sent = 0u32;
        while sent < FLOOD_TEMPLATES && started.elapsed() < FLOOD_TIME_LIMIT {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let header = V9Header {
                source_id: state,
                sequence: sent,
                ..V9Header::default()
            };
            let flood_template = V9Template {
                template_id: 256 + u16::try_from(sent % 60_000).unwrap(),
                ..template
            };
            encode::v9_template(header, flood_template, &mut datagram);
            if socket.send_to(&datagram, target).is_ok() {
                sent += 1;
            }
            if sent.is_multiple_of(500) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        (sent, started.elapsed())
    });
    eprintln!("flood: {sent} templates in {flood_time:?}");
    assert!(
        sent >= FLOOD_TEMPLATES / 2,
        "only {sent} flood datagrams sent"
    );

    // The daemon has taken in the flood once its datagram count stops moving.
    let datagrams = flow_series("xdpguard_flow_datagrams_total", None);
    let mut received = 0;
    let settled = eventually(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(1000));
        let now = metric(&scrape(), &datagrams).unwrap_or(0);
        let still = now == received && now > 0;
        received = now;
        still
    });
    assert!(settled, "the flood's datagrams never settled: {received}");
    eprintln!("flood: {received} datagrams received by the daemon");
    assert!(
        received > 10 * TEMPLATES_PER_EXPORTER,
        "too little of the flood arrived to fill the bound: {received}"
    );
    // The template state is bounded (256 templates of a few hundred bytes here): the flood
    // leaves the daemon's memory where it was, give or take allocator slack.
    let rss_after = rss_kib(&daemon);
    eprintln!("daemon RSS: {rss_before} KiB before the flood, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );

    // The legitimate exporter, from the same address: a new template, then its data.
    let flows: Vec<V9Flow> = (1..=REAL_FLOWS)
        .map(|last| V9Flow {
            source: IpAddr::from([203, 0, 113, last]),
            destination: FW_V4.parse().unwrap(),
            bytes: 1500,
            packets: 1,
            ..V9Flow::default()
        })
        .collect();
    let real = V9Header {
        source_id: 7,
        ..V9Header::default()
    };
    let real_template = V9Template {
        template_id: 300,
        ..template
    };
    let asked = Instant::now();
    sandbox.within(Side::Attacker, || {
        let socket = UdpSocket::bind((ATK_V4, 0)).unwrap();
        let mut datagram = Vec::new();
        encode::v9_template(real, real_template, &mut datagram);
        socket.send_to(&datagram, target).unwrap();
        encode::v9_data(real, real_template, &flows, &mut datagram);
        socket.send_to(&datagram, target).unwrap();
    });
    let records = flow_series("xdpguard_flow_records_total", None);
    let mut page = String::new();
    // Before the fix, the template was refused until the 30-minute template timeout.
    let decoded = eventually(Duration::from_secs(10), || {
        page = scrape();
        metric(&page, &records) == Some(u64::from(REAL_FLOWS))
    });
    eprintln!("real flows counted after {:?}", asked.elapsed());
    assert!(
        decoded,
        "the new template's flows were not counted within 10 s: {page}\n{}",
        daemon.stderr()
    );
    let evicted = metric(
        &page,
        &flow_series("xdpguard_flow_errors_total", Some("evicted")),
    );
    let too_many = metric(
        &page,
        &flow_series("xdpguard_flow_errors_total", Some("too_many")),
    );
    eprintln!("evicted {evicted:?}, too_many {too_many:?}");
    assert_eq!(too_many, Some(0), "{page}");
    // Every flood template past the bound evicted an older one (each source id is new).
    assert!(
        evicted.is_some_and(|evicted| evicted + TEMPLATES_PER_EXPORTER >= received),
        "{page}"
    );
    let templates = metric(&page, &flow_series("xdpguard_flow_templates", None));
    assert_eq!(templates, Some(TEMPLATES_PER_EXPORTER), "{page}");
    assert!(daemon.stop().success());
}
