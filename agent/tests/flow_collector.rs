//! The flow collector thread on a loopback socket: datagrams from the testkit's v9 encoder are
//! received, decoded and handed to the sink; unlisted senders are refused.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use xdpguard::detect::traffic::flow::{
    CollectorSettings, DirectionFilter, ErrorKind, FlowCollector, FlowConfig, FlowRecord,
    RecordSink, SamplingOverride,
};
use xdpguard_testkit::encode::{self, AddressFamily, V9Flow, V9Header, V9Template};

#[test]
fn receives_decodes_and_stops() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&received);
    let sink: RecordSink = Box::new(move |records: &[FlowRecord]| {
        into.lock().expect("test lock").extend_from_slice(records);
    });
    let settings = CollectorSettings::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    let collector = FlowCollector::start(settings, sink).expect("bind loopback");
    let target = collector.local_addr();
    assert_ne!(target.port(), 0);

    let template = V9Template {
        template_id: 256,
        family: AddressFamily::V4,
        wide_counters: false,
    };
    let flows: Vec<V9Flow> = (1..=3u8)
        .map(|last| V9Flow {
            source: IpAddr::from([10, 0, 0, last]),
            bytes: 100,
            packets: 1,
            ..V9Flow::default()
        })
        .collect();
    let (mut template_datagram, mut data_datagram) = (Vec::new(), Vec::new());
    encode::v9_template(V9Header::default(), template, &mut template_datagram);
    encode::v9_data(V9Header::default(), template, &flows, &mut data_datagram);
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    sender.send_to(&template_datagram, target).expect("send");
    sender.send_to(&data_datagram, target).expect("send");

    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = collector.stats();
    let counted = || {
        stats
            .lock()
            .expect("test lock")
            .get(&IpAddr::from([127, 0, 0, 1]))
            .map(|exporter| (exporter.datagrams, exporter.records))
    };
    while counted() != Some((2, 3)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(counted(), Some((2, 3)));
    let sources: Vec<IpAddr> = received
        .lock()
        .expect("test lock")
        .iter()
        .map(|record| record.source)
        .collect();
    assert_eq!(
        sources,
        [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]].map(IpAddr::from)
    );

    collector.stop();
}

/// Regression: flows are unauthenticated UDP; with `exporters` set, a datagram from
/// anyone else must not reach the volumes.
#[test]
fn datagrams_from_unlisted_senders_are_refused() {
    let received = Arc::new(Mutex::new(0usize));
    let into = Arc::clone(&received);
    let sink: RecordSink = Box::new(move |records: &[FlowRecord]| {
        *into.lock().expect("test lock") += records.len();
    });
    let mut settings = CollectorSettings::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    settings.exporters = vec!["192.0.2.0/24".parse().expect("prefix")];
    let collector = FlowCollector::start(settings, sink).expect("bind loopback");
    let template = V9Template {
        template_id: 256,
        family: AddressFamily::V4,
        wide_counters: false,
    };
    let flow = V9Flow {
        source: IpAddr::from([10, 0, 0, 1]),
        bytes: 100,
        packets: 1,
        ..V9Flow::default()
    };
    let mut datagram = Vec::new();
    encode::v9_template(V9Header::default(), template, &mut datagram);
    let mut data = Vec::new();
    encode::v9_data(V9Header::default(), template, &[flow], &mut data);
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    sender
        .send_to(&datagram, collector.local_addr())
        .expect("send");
    sender.send_to(&data, collector.local_addr()).expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    while collector.rejected() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(collector.rejected(), 2);
    assert_eq!(*received.lock().expect("test lock"), 0);
    assert!(collector.stats().lock().expect("test lock").is_empty());
    collector.stop();
}

#[test]
fn bind_failure_names_the_address() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let sink: RecordSink = Box::new(|_: &[FlowRecord]| {});
    let error =
        FlowCollector::start(CollectorSettings::new(addr), sink).expect_err("address in use");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

/// Issue 10, item 7, over a real socket: a flood of templates from random source ids, sent
/// from the one allowed exporter address, does not lock out a new template: its data is
/// decoded, and the evictions are counted in the exporter's statistics.
#[test]
fn a_template_flood_does_not_lock_out_a_new_template() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&received);
    let sink: RecordSink = Box::new(move |records: &[FlowRecord]| {
        into.lock().expect("test lock").extend_from_slice(records);
    });
    let mut settings = CollectorSettings::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    settings.exporters = vec!["127.0.0.1/32".parse().expect("prefix")];
    settings.decoder.max_templates_per_exporter = 32;
    settings.decoder.max_templates_per_domain = 4;
    let collector = FlowCollector::start(settings, sink).expect("bind loopback");
    let target = collector.local_addr();
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    let template = V9Template {
        template_id: 256,
        family: AddressFamily::V4,
        wide_counters: false,
    };
    let mut datagram = Vec::new();
    let mut state = 0x2545_f491u32;
    const FLOOD: u64 = 5_000;
    for _ in 0..FLOOD {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let header = V9Header {
            source_id: state,
            ..V9Header::default()
        };
        encode::v9_template(header, template, &mut datagram);
        sender.send_to(&datagram, target).expect("send");
    }
    // Everything sent so far must be decoded before the real template comes: a loopback
    // socket can drop a burst, so wait for the count to settle rather than for all of it.
    let stats = collector.stats();
    let datagrams = || {
        stats
            .lock()
            .expect("test lock")
            .get(&IpAddr::from([127, 0, 0, 1]))
            .map_or(0, |exporter| exporter.datagrams)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = datagrams();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = datagrams();
        if now == seen && now > 0 {
            break;
        }
        seen = now;
    }
    assert!(seen > 32, "too few flood datagrams arrived: {seen}");
    let header = V9Header {
        source_id: 1,
        ..V9Header::default()
    };
    let flow = V9Flow {
        source: IpAddr::from([10, 0, 0, 9]),
        bytes: 100,
        packets: 1,
        ..V9Flow::default()
    };
    encode::v9_template(header, template, &mut datagram);
    sender.send_to(&datagram, target).expect("send");
    encode::v9_data(header, template, &[flow], &mut datagram);
    sender.send_to(&datagram, target).expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.lock().expect("test lock").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sources: Vec<IpAddr> = received
        .lock()
        .expect("test lock")
        .iter()
        .map(|record| record.source)
        .collect();
    assert_eq!(sources, [IpAddr::from([10, 0, 0, 9])]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let exporter = loop {
        let exporter = stats.lock().expect("test lock")[&IpAddr::from([127, 0, 0, 1])];
        if exporter.records == 1 || Instant::now() > deadline {
            break exporter;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exporter.templates, 32);
    assert_eq!(exporter.errors.get(ErrorKind::TooMany), 0);
    assert!(
        exporter.errors.get(ErrorKind::Evicted) >= seen - 32,
        "{exporter:?}"
    );
    collector.stop();
}

/// The `[volume.flow]` bounds reach the decoder.
#[test]
fn flow_config_bounds_reach_the_decoder() {
    let config = FlowConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 2055)),
        receive_buffer: 1 << 20,
        direction: DirectionFilter::Any,
        ingress_interfaces: vec![3],
        exporters: Vec::new(),
        sampling: vec![SamplingOverride {
            exporter: IpAddr::from([192, 0, 2, 1]),
            rate: 100,
        }],
        template_timeout: Duration::from_secs(120),
        max_templates_per_exporter: 1000,
        max_templates_per_domain: 10,
    };
    let settings = config.decoder_settings();
    assert_eq!(settings.max_templates_per_exporter, 1000);
    assert_eq!(settings.max_templates_per_domain, 10);
    assert_eq!(settings.template_timeout_secs, 120);
    assert_eq!(settings.direction, DirectionFilter::Any);
    assert_eq!(settings.ingress_interfaces, Some([3].into()));
    assert_eq!(
        settings
            .sampling_overrides
            .get(&IpAddr::from([192, 0, 2, 1])),
        Some(&100)
    );
}
