//! The flow collector thread on a loopback socket: datagrams from the testkit's v9 encoder are
//! received, decoded and handed to the sink; unlisted senders are refused.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use xdpguard::detect::traffic::flow::{CollectorSettings, FlowCollector, FlowRecord, RecordSink};
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
