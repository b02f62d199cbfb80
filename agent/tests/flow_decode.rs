//! The NetFlow v9 / IPFIX decoder through its public API: hand-built messages for each
//! protocol feature and every kind of malformed input, datagrams from the testkit's v9 encoder
//! (what the benchmarks' recorded streams are made of), and mutated datagrams that must never
//! panic.
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use xdpguard::detect::traffic::flow::decode::{
    DecodeSummary, DecoderSettings, DirectionFilter, ErrorCounts, ErrorKind, ExporterStats,
    FlowDecoder, FlowRecord,
};
use xdpguard_testkit::encode::{self, AddressFamily, V9Flow, V9Header, V9Template};

/// RFC 7011: a field specifier with this bit set is followed by a 4-byte enterprise number.
const ENTERPRISE_BIT: u16 = 0x8000;
/// RFC 7011: a field length meaning "each record carries the length".
const VARIABLE_LENGTH: u16 = 65_535;

const EXPORTER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 2055);
const PEN: u32 = 0x0000_1234;

/// A NetFlow v9 or IPFIX message under construction.
struct Message {
    ipfix: bool,
    domain: u32,
    sets: Vec<u8>,
}

impl Message {
    fn v9(source_id: u32) -> Self {
        Self {
            ipfix: false,
            domain: source_id,
            sets: Vec::new(),
        }
    }

    fn ipfix(domain: u32) -> Self {
        Self {
            ipfix: true,
            domain,
            sets: Vec::new(),
        }
    }

    /// Adds a set, padded to 4 bytes.
    fn set(mut self, id: u16, body: &[u8]) -> Self {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = u16::try_from(body.len() + 4).expect("small set");
        self.sets.extend_from_slice(&id.to_be_bytes());
        self.sets.extend_from_slice(&len.to_be_bytes());
        self.sets.extend_from_slice(&body);
        self
    }

    /// Appends bytes as they are.
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.sets.extend_from_slice(bytes);
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ipfix {
            let len = u16::try_from(16 + self.sets.len()).expect("small message");
            out.extend_from_slice(&10u16.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&1_700_000_000u32.to_be_bytes());
            out.extend_from_slice(&7u32.to_be_bytes());
        } else {
            out.extend_from_slice(&9u16.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&1000u32.to_be_bytes());
            out.extend_from_slice(&1_700_000_000u32.to_be_bytes());
            out.extend_from_slice(&7u32.to_be_bytes());
        }
        out.extend_from_slice(&self.domain.to_be_bytes());
        out.extend_from_slice(&self.sets);
        out
    }
}

/// Field specifiers; ids with the enterprise bit get an enterprise number.
fn specs(fields: &[(u16, u16)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(id, len) in fields {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        if id & ENTERPRISE_BIT != 0 {
            out.extend_from_slice(&PEN.to_be_bytes());
        }
    }
    out
}

/// A template record (v9 or IPFIX).
fn template(id: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&u16::try_from(fields.len()).expect("few").to_be_bytes());
    out.extend_from_slice(&specs(fields));
    out
}

fn v9_options_template(id: u16, scope: &[(u16, u16)], fields: &[(u16, u16)]) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&u16::try_from(scope.len() * 4).expect("few").to_be_bytes());
    out.extend_from_slice(&u16::try_from(fields.len() * 4).expect("few").to_be_bytes());
    out.extend_from_slice(&specs(scope));
    out.extend_from_slice(&specs(fields));
    out
}

fn ipfix_options_template(id: u16, scope: &[(u16, u16)], fields: &[(u16, u16)]) -> Vec<u8> {
    let count = u16::try_from(scope.len() + fields.len()).expect("few");
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&u16::try_from(scope.len()).expect("few").to_be_bytes());
    out.extend_from_slice(&specs(scope));
    out.extend_from_slice(&specs(fields));
    out
}

/// A data record under construction.
#[derive(Default)]
struct Record(Vec<u8>);

impl Record {
    /// `value` in `len` big-endian bytes.
    fn uint(mut self, value: u64, len: usize) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes()[8 - len..]);
        self
    }

    fn ip(mut self, address: &str) -> Self {
        match address.parse::<IpAddr>().expect("test address") {
            IpAddr::V4(v4) => self.0.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => self.0.extend_from_slice(&v6.octets()),
        }
        self
    }

    fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn var(mut self, bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(short) if short < 255 => self.0.push(short),
            _ => {
                self.0.push(255);
                let long = u16::try_from(bytes.len()).expect("small field");
                self.0.extend_from_slice(&long.to_be_bytes());
            }
        }
        self.0.extend_from_slice(bytes);
        self
    }
}

fn records(records: &[Record]) -> Vec<u8> {
    records.iter().flat_map(|record| record.0.clone()).collect()
}

fn decode_at(
    decoder: &mut FlowDecoder,
    datagram: &[u8],
    now_secs: u64,
) -> (Vec<FlowRecord>, DecodeSummary) {
    let mut out = Vec::new();
    let summary = decoder.decode(EXPORTER, datagram, now_secs, |record| out.push(record));
    (out, summary)
}

/// A record with a volume only (templates of source, bytes, packets).
fn flow(source: &str, bytes: u64, packets: u64) -> FlowRecord {
    FlowRecord::new(source.parse().expect("test address"), bytes, packets)
}

/// A record of [`v9_flows`] through the testkit encoder: TCP to 198.51.100.1, ports 0, and
/// no end time (its header clock is 0).
fn encoded_flow(source: &str, bytes: u64, packets: u64) -> FlowRecord {
    FlowRecord {
        destination: "198.51.100.1".parse().expect("test address"),
        protocol: 6,
        ..flow(source, bytes, packets)
    }
}

fn stats(decoder: &FlowDecoder) -> ExporterStats {
    decoder
        .exporter_stats()
        .find(|&(address, _)| address == EXPORTER.ip())
        .map(|(_, stats)| *stats)
        .expect("exporter known")
}

const V4_TEMPLATE: V9Template = V9Template {
    template_id: 256,
    family: AddressFamily::V4,
    wide_counters: false,
};

fn v9_flows(sources: &[&str]) -> Vec<V9Flow> {
    sources
        .iter()
        .zip(1u64..)
        .map(|(source, n)| V9Flow {
            source: source.parse().expect("test address"),
            destination: "198.51.100.1".parse().expect("test address"),
            bytes: 1000 * n,
            packets: n,
            input_interface: 2,
            ..V9Flow::default()
        })
        .collect()
}

fn encoded(template: V9Template, flows: &[V9Flow]) -> (Vec<u8>, Vec<u8>) {
    let (mut template_datagram, mut data_datagram) = (Vec::new(), Vec::new());
    encode::v9_template(V9Header::default(), template, &mut template_datagram);
    encode::v9_data(V9Header::default(), template, flows, &mut data_datagram);
    (template_datagram, data_datagram)
}

#[test]
fn v9_template_then_data_in_separate_packets() {
    let mut decoder = FlowDecoder::default();
    let flows = v9_flows(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let (template, data) = encoded(V4_TEMPLATE, &flows);
    let (out, summary) = decode_at(&mut decoder, &template, 0);
    assert!(out.is_empty());
    assert_eq!(summary, DecodeSummary::default());
    let (out, summary) = decode_at(&mut decoder, &data, 1);
    assert_eq!(
        out,
        [
            encoded_flow("10.0.0.1", 1000, 1),
            encoded_flow("10.0.0.2", 2000, 2),
            encoded_flow("10.0.0.3", 3000, 3)
        ]
    );
    assert_eq!(summary.records, 3);
    assert_eq!(summary.errors.total(), 0);
    let stats = stats(&decoder);
    assert_eq!((stats.datagrams, stats.records, stats.templates), (2, 3, 1));
}

#[test]
fn ipv6_and_mapped_sources() {
    let mut decoder = FlowDecoder::default();
    let template = V9Template {
        template_id: 300,
        family: AddressFamily::V6,
        wide_counters: true,
    };
    let mut flows = v9_flows(&["2001:db8::1", "10.1.2.3"]);
    flows[0].bytes = u64::from(u32::MAX) + 5;
    let (template, data) = encoded(template, &flows);
    decode_at(&mut decoder, &template, 0);
    let (out, _) = decode_at(&mut decoder, &data, 0);
    assert_eq!(
        out,
        [
            encoded_flow("2001:db8::1", u64::from(u32::MAX) + 5, 1),
            encoded_flow("10.1.2.3", 2000, 2)
        ]
    );
}

#[test]
fn data_before_template_is_held_then_decoded() {
    let mut decoder = FlowDecoder::default();
    let (template, data) = encoded(V4_TEMPLATE, &v9_flows(&["10.0.0.1", "10.0.0.2"]));
    let (out, summary) = decode_at(&mut decoder, &data, 0);
    assert!(out.is_empty());
    assert_eq!(summary, DecodeSummary::default());
    assert_eq!(decoder.held_set_count(), 1);
    let (out, summary) = decode_at(&mut decoder, &template, 30);
    assert_eq!(out.len(), 2);
    assert_eq!(summary.records, 2);
    assert_eq!(decoder.held_set_count(), 0);
}

#[test]
fn held_data_is_dropped_when_too_old_or_too_much() {
    let (template, data) = encoded(V4_TEMPLATE, &v9_flows(&["10.0.0.1"]));
    // Too old: the template comes after the hold time.
    let mut decoder = FlowDecoder::default();
    decode_at(&mut decoder, &data, 0);
    let (out, summary) = decode_at(&mut decoder, &template, 61);
    assert!(out.is_empty());
    assert_eq!(summary.errors.get(ErrorKind::NoTemplate), 1);
    assert_eq!(stats(&decoder).errors.get(ErrorKind::NoTemplate), 1);

    // Too many: the oldest go.
    let mut decoder = FlowDecoder::new(DecoderSettings {
        max_held_sets: 2,
        ..DecoderSettings::default()
    });
    decode_at(&mut decoder, &data, 0);
    decode_at(&mut decoder, &data, 0);
    let (_, summary) = decode_at(&mut decoder, &data, 0);
    assert_eq!(summary.errors.get(ErrorKind::NoTemplate), 1);
    assert_eq!(decoder.held_set_count(), 2);
    let (out, _) = decode_at(&mut decoder, &template, 1);
    assert_eq!(out.len(), 2);

    // Too many bytes.
    let mut decoder = FlowDecoder::new(DecoderSettings {
        max_held_bytes: 10,
        ..DecoderSettings::default()
    });
    let (_, summary) = decode_at(&mut decoder, &data, 0);
    assert_eq!(summary.errors.get(ErrorKind::NoTemplate), 1);
    assert_eq!(decoder.held_set_count(), 0);
}

/// A v9 data template: source, IN_BYTES, IN_PKTS.
fn v9_simple_template(id: u16) -> Vec<u8> {
    template(id, &[(8, 4), (1, 4), (2, 4)])
}

fn simple_record(source: &str, bytes: u64, packets: u64) -> Record {
    Record::default().ip(source).uint(bytes, 4).uint(packets, 4)
}

#[test]
fn v9_options_sampling_interval_scales() {
    let mut decoder = FlowDecoder::default();
    // Scope: System (type 1, which is not octetDeltaCount here); options:
    // SAMPLING_INTERVAL, SAMPLING_ALGORITHM.
    let options = Message::v9(1)
        .set(1, &v9_options_template(257, &[(1, 4)], &[(34, 4), (35, 1)]))
        .set(0, &v9_simple_template(256))
        .set(257, &Record::default().uint(1, 4).uint(100, 4).uint(2, 1).0)
        .build();
    let (_, summary) = decode_at(&mut decoder, &options, 0);
    assert_eq!(summary.errors.total(), 0);
    let data = Message::v9(1)
        .set(256, &records(&[simple_record("10.0.0.1", 1500, 3)]))
        .build();
    let (out, _) = decode_at(&mut decoder, &data, 0);
    assert_eq!(out, [flow("10.0.0.1", 150_000, 300)]);
    // Another source id has its own (no) sampling.
    let other = Message::v9(2)
        .set(0, &v9_simple_template(256))
        .set(256, &records(&[simple_record("10.0.0.1", 1500, 3)]))
        .build();
    let (out, _) = decode_at(&mut decoder, &other, 0);
    assert_eq!(out, [flow("10.0.0.1", 1500, 3)]);
}

#[test]
fn ipfix_packet_interval_and_space() {
    let mut decoder = FlowDecoder::default();
    let message = Message::ipfix(5)
        .set(
            3,
            &ipfix_options_template(300, &[(302, 4)], &[(305, 4), (306, 4)]),
        )
        .set(300, &Record::default().uint(7, 4).uint(2, 4).uint(3, 4).0)
        .set(2, &template(256, &[(8, 4), (1, 8), (2, 8)]))
        .set(
            256,
            &Record::default().ip("10.0.0.9").uint(1000, 8).uint(3, 8).0,
        )
        .build();
    let (out, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(summary.errors.total(), 0);
    // (2 + 3) / 2 = 2.5
    assert_eq!(out, [flow("10.0.0.9", 2500, 7)]);
}

#[test]
fn ipfix_samplers_by_selector_id_and_population() {
    let mut decoder = FlowDecoder::default();
    let message = Message::ipfix(5)
        .set(
            3,
            &ipfix_options_template(300, &[(302, 2)], &[(309, 4), (310, 4)]),
        )
        .set(
            300,
            &records(&[
                Record::default().uint(1, 2).uint(1, 4).uint(10, 4),
                Record::default().uint(2, 2).uint(1, 4).uint(100, 4),
            ]),
        )
        .set(2, &template(256, &[(8, 4), (1, 4), (2, 4), (302, 2)]))
        .set(
            256,
            &records(&[
                simple_record("10.0.0.1", 10, 1).uint(1, 2),
                simple_record("10.0.0.2", 10, 1).uint(2, 2),
                // An unknown selector: the latest rate announced.
                simple_record("10.0.0.3", 10, 1).uint(3, 2),
            ]),
        )
        .build();
    let (out, _) = decode_at(&mut decoder, &message, 0);
    assert_eq!(
        out,
        [
            flow("10.0.0.1", 100, 10),
            flow("10.0.0.2", 1000, 100),
            flow("10.0.0.3", 1000, 100)
        ]
    );
}

#[test]
fn v9_sampler_id_and_record_interval() {
    let mut decoder = FlowDecoder::default();
    let message = Message::v9(0)
        // FLOW_SAMPLER_ID, FLOW_SAMPLER_RANDOM_INTERVAL.
        .set(1, &v9_options_template(257, &[(1, 4)], &[(48, 1), (50, 4)]))
        .set(257, &Record::default().uint(0, 4).uint(4, 1).uint(10, 4).0)
        .set(0, &template(256, &[(8, 4), (1, 4), (2, 4), (48, 1)]))
        .set(0, &template(258, &[(8, 4), (1, 4), (2, 4), (34, 4)]))
        .set(256, &simple_record("10.0.0.1", 5, 1).uint(4, 1).0)
        // The record's own interval beats the announced one.
        .set(258, &simple_record("10.0.0.2", 5, 1).uint(50, 4).0)
        .build();
    let (out, _) = decode_at(&mut decoder, &message, 0);
    assert_eq!(out, [flow("10.0.0.1", 50, 10), flow("10.0.0.2", 250, 50)]);
}

#[test]
fn exporter_override_beats_everything() {
    let mut decoder = FlowDecoder::new(DecoderSettings {
        // Configured as IPv4-mapped: still the same exporter.
        sampling_overrides: HashMap::from([("::ffff:192.0.2.1".parse().expect("test address"), 7)]),
        ..DecoderSettings::default()
    });
    let message = Message::v9(0)
        .set(1, &v9_options_template(257, &[(1, 4)], &[(34, 4)]))
        .set(257, &Record::default().uint(0, 4).uint(100, 4).0)
        .set(0, &template(258, &[(8, 4), (1, 4), (2, 4), (34, 4)]))
        .set(258, &simple_record("10.0.0.2", 5, 1).uint(50, 4).0)
        .build();
    let (out, _) = decode_at(&mut decoder, &message, 0);
    assert_eq!(out, [flow("10.0.0.2", 35, 7)]);
}

#[test]
fn reduced_size_encodings() {
    let mut decoder = FlowDecoder::default();
    let message = Message::ipfix(0)
        .set(2, &template(256, &[(8, 4), (1, 2), (2, 1)]))
        .set(2, &template(257, &[(8, 4), (1, 3), (2, 8), (10, 2)]))
        .set(
            256,
            &Record::default()
                .ip("10.0.0.1")
                .uint(65_000, 2)
                .uint(200, 1)
                .0,
        )
        .set(
            257,
            &Record::default()
                .ip("10.0.0.2")
                .uint(0x01_0000, 3)
                .uint(u64::MAX, 8)
                .uint(3, 2)
                .0,
        )
        .build();
    let (out, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(summary.errors.total(), 0);
    assert_eq!(
        out,
        [
            flow("10.0.0.1", 65_000, 200),
            flow("10.0.0.2", 0x01_0000, u64::MAX)
        ]
    );
}

#[test]
fn unknown_and_enterprise_fields_are_skipped() {
    let mut decoder = FlowDecoder::default();
    let message = Message::ipfix(0)
        .set(
            2,
            &template(
                256,
                &[
                    (999, 6),
                    // Enterprise element 8: not sourceIPv4Address.
                    (8 | ENTERPRISE_BIT, 4),
                    (8, 4),
                    (1 | ENTERPRISE_BIT, 4),
                    (1, 4),
                    (2, 4),
                ],
            ),
        )
        .set(
            256,
            &Record::default()
                .uint(0xdead_beef, 6)
                .ip("10.9.9.9")
                .ip("10.0.0.1")
                .uint(777, 4)
                .uint(100, 4)
                .uint(1, 4)
                .0,
        )
        .build();
    let (out, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(summary.errors.total(), 0);
    assert_eq!(out, [flow("10.0.0.1", 100, 1)]);
}

#[test]
fn variable_length_fields() {
    let mut decoder = FlowDecoder::default();
    let long_name = [b'x'; 300];
    let message = Message::ipfix(0)
        .set(
            2,
            &template(
                256,
                &[
                    (82, VARIABLE_LENGTH),
                    (8, 4),
                    (1, 8),
                    (2, 4),
                    (83 | ENTERPRISE_BIT, VARIABLE_LENGTH),
                ],
            ),
        )
        .set(
            256,
            &records(&[
                Record::default()
                    .var(b"eth0")
                    .ip("10.0.0.1")
                    .uint(100, 8)
                    .uint(1, 4)
                    .var(b""),
                Record::default()
                    .var(&long_name)
                    .ip("10.0.0.2")
                    .uint(200, 8)
                    .uint(2, 4)
                    .var(b"description"),
            ]),
        )
        .build();
    let (out, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(summary.errors.total(), 0);
    assert_eq!(out, [flow("10.0.0.1", 100, 1), flow("10.0.0.2", 200, 2)]);
}

#[test]
fn direction_and_interface_filters() {
    let mut flows = v9_flows(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    flows[1].direction = 1;
    flows[2].input_interface = 3;
    let (template, data) = encoded(V4_TEMPLATE, &flows);

    let mut decoder = FlowDecoder::default();
    decode_at(&mut decoder, &template, 0);
    let (out, summary) = decode_at(&mut decoder, &data, 0);
    assert_eq!(
        out,
        [
            encoded_flow("10.0.0.1", 1000, 1),
            encoded_flow("10.0.0.3", 3000, 3)
        ]
    );
    assert_eq!((summary.filtered, summary.errors.total()), (1, 0));
    assert_eq!(stats(&decoder).filtered, 1);

    let mut decoder = FlowDecoder::new(DecoderSettings {
        direction: DirectionFilter::Any,
        ..DecoderSettings::default()
    });
    decode_at(&mut decoder, &template, 0);
    assert_eq!(decode_at(&mut decoder, &data, 0).0.len(), 3);

    let mut decoder = FlowDecoder::new(DecoderSettings {
        direction: DirectionFilter::Any,
        ingress_interfaces: Some(BTreeSet::from([2])),
        ..DecoderSettings::default()
    });
    decode_at(&mut decoder, &template, 0);
    let (out, summary) = decode_at(&mut decoder, &data, 0);
    assert_eq!(
        out,
        [
            encoded_flow("10.0.0.1", 1000, 1),
            encoded_flow("10.0.0.2", 2000, 2)
        ]
    );
    assert_eq!(summary.filtered, 1);
    // Without an interface field, nothing passes an interface filter.
    let plain = Message::v9(0)
        .set(0, &v9_simple_template(260))
        .set(260, &simple_record("10.0.0.1", 1, 1).0)
        .build();
    assert_eq!(decode_at(&mut decoder, &plain, 0).1.filtered, 1);
}

/// Regression: running totals (85/86) re-count a long flow at every export, so a record
/// with only totals counts nothing.
#[test]
fn totals_only_and_empty_records_skipped() {
    let mut decoder = FlowDecoder::default();
    let message = Message::ipfix(0)
        .set(2, &template(256, &[(8, 4), (85, 4), (86, 4)]))
        .set(
            2,
            &template(257, &[(8, 4), (85, 4), (1, 4), (2, 4), (86, 4)]),
        )
        .set(
            256,
            &records(&[
                simple_record("10.0.0.1", 100, 1),
                simple_record("10.0.0.2", 0, 0),
            ]),
        )
        .set(
            257,
            &simple_record("10.0.0.3", 999, 40).uint(2, 4).uint(99, 4).0,
        )
        .build();
    let (out, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(out, [flow("10.0.0.3", 40, 2)]);
    assert_eq!(summary.filtered, 2);
}

#[test]
fn durations_come_from_any_timestamp_pair() {
    let mut decoder = FlowDecoder::default();
    let message = Message::ipfix(0)
        // sysUpTime pair (wrapping), milliseconds pair, seconds pair, duration field.
        .set(
            2,
            &template(256, &[(8, 4), (1, 4), (2, 4), (22, 4), (21, 4)]),
        )
        .set(
            2,
            &template(257, &[(8, 4), (1, 4), (2, 4), (152, 8), (153, 8)]),
        )
        .set(
            2,
            &template(258, &[(8, 4), (1, 4), (2, 4), (150, 4), (151, 4)]),
        )
        .set(2, &template(259, &[(8, 4), (1, 4), (2, 4), (161, 4)]))
        .set(
            256,
            &simple_record("10.0.0.1", 100, 1)
                .uint(0xffff_ff00, 4)
                .uint(0x0000_ea38, 4)
                .0,
        )
        .set(
            257,
            &simple_record("10.0.0.2", 100, 1)
                .uint(1_700_000_000_000, 8)
                .uint(1_700_000_060_000, 8)
                .0,
        )
        .set(
            258,
            &simple_record("10.0.0.3", 100, 1)
                .uint(1_700_000_000, 4)
                .uint(1_700_000_030, 4)
                .0,
        )
        .set(259, &simple_record("10.0.0.4", 100, 1).uint(1500, 4).0)
        .build();
    let (out, _) = decode_at(&mut decoder, &message, 0);
    let durations: Vec<u32> = out.iter().map(|record| record.duration_ms).collect();
    assert_eq!(durations, [0x0000_ea38 + 0x100, 60_000, 30_000, 1500]);
}

/// What pairing reads of a record: (destination, source port, destination port, protocol,
/// TCP flags, end).
type Pairing = (IpAddr, u16, u16, u8, Option<u8>, Option<u64>);

fn pairing(record: &FlowRecord) -> Pairing {
    (
        record.destination,
        record.source_port,
        record.destination_port,
        record.protocol,
        record.tcp_flags,
        record.end_unix_ms,
    )
}

fn ip(address: &str) -> IpAddr {
    address.parse().expect("test address")
}

/// `Message::build`'s v9 header: sysUptime 1000 ms at Unix 1 700 000 000 s.
const V9_EXPORT_MS: u64 = 1_700_000_000_000;
const V9_UPTIME_MS: u64 = 1000;

#[test]
fn v9_ipv4_addresses_ports_protocol_flags_and_end() {
    let mut decoder = FlowDecoder::default();
    // IPV4_SRC_ADDR, IPV4_DST_ADDR, L4_SRC_PORT, L4_DST_PORT, PROTOCOL, TCP_FLAGS,
    // IN_BYTES, IN_PKTS, FIRST_SWITCHED, LAST_SWITCHED.
    let fields = [
        (8, 4),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (6, 1),
        (1, 4),
        (2, 4),
        (22, 4),
        (21, 4),
    ];
    let record = |source: &str, last_switched: u64| {
        Record::default()
            .ip(source)
            .ip("198.51.100.7")
            .uint(40_000, 2)
            .uint(443, 2)
            .uint(6, 1)
            .uint(0x02, 1)
            .uint(60, 4)
            .uint(1, 4)
            .uint(100, 4)
            .uint(last_switched, 4)
    };
    let message = Message::v9(0)
        .set(0, &template(256, &fields))
        .set(
            256,
            &records(&[
                record("203.0.113.5", 400),
                // Before the uptime wrapped; and a little after the export.
                record("203.0.113.6", 0xffff_ff00),
                record("203.0.113.7", 1200),
            ]),
        )
        .build();
    let (out, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(summary.records, 3);
    assert_eq!(out[0].source, ip("203.0.113.5"));
    assert_eq!(
        (out[0].bytes, out[0].packets, out[0].duration_ms),
        (60, 1, 300)
    );
    let answer = |end| (ip("198.51.100.7"), 40_000, 443, 6, Some(0x02), Some(end));
    assert_eq!(
        pairing(&out[0]),
        answer(V9_EXPORT_MS - (V9_UPTIME_MS - 400))
    );
    assert_eq!(
        pairing(&out[1]),
        answer(V9_EXPORT_MS - (V9_UPTIME_MS + 0x100))
    );
    assert_eq!(pairing(&out[2]), answer(V9_EXPORT_MS));
}

#[test]
fn v9_ipv6_and_ipfix_from_the_testkit_encoder() {
    let template = V9Template {
        template_id: 300,
        family: AddressFamily::V6,
        wide_counters: false,
    };
    let flows = [V9Flow {
        source: ip("2001:db8:1::5"),
        destination: ip("2001:db8:2::9"),
        bytes: 1200,
        packets: 3,
        source_port: 53,
        destination_port: 5353,
        protocol: 17,
        first_switched_ms: 5_000,
        last_switched_ms: 9_000,
        ..V9Flow::default()
    }];
    let header = V9Header {
        sys_uptime_ms: 10_000,
        unix_secs: 1_700_000_100,
        ..V9Header::default()
    };
    let (mut announce, mut data) = (Vec::new(), Vec::new());
    let mut decoder = FlowDecoder::default();
    encode::v9_template(header, template, &mut announce);
    encode::v9_data(header, template, &flows, &mut data);
    decode_at(&mut decoder, &announce, 0);
    let (out, _) = decode_at(&mut decoder, &data, 0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].source, ip("2001:db8:1::5"));
    assert_eq!(
        pairing(&out[0]),
        (
            ip("2001:db8:2::9"),
            53,
            5353,
            17,
            None,
            Some(1_700_000_100_000 - 1000)
        )
    );
    assert_eq!(out[0].duration_ms, 4000);

    // IPFIX has no uptime in its header: FIRST/LAST_SWITCHED alone give no end.
    let mut decoder = FlowDecoder::default();
    encode::ipfix_template(header, template, &mut announce);
    encode::ipfix_data(header, template, &flows, &mut data);
    decode_at(&mut decoder, &announce, 0);
    let (out, _) = decode_at(&mut decoder, &data, 0);
    assert_eq!(
        pairing(&out[0]),
        (ip("2001:db8:2::9"), 53, 5353, 17, None, None)
    );
    assert_eq!(out[0].duration_ms, 4000);
}

#[test]
fn ipfix_ipv4_and_ipv6_end_times_and_16_bit_flags() {
    let mut decoder = FlowDecoder::default();
    let message = Message::ipfix(0)
        // IPv6 addresses, ports, protocol, 16-bit tcpControlBits, flowEndMilliseconds.
        .set(
            2,
            &template(
                256,
                &[
                    (27, 16),
                    (28, 16),
                    (7, 2),
                    (11, 2),
                    (4, 1),
                    (6, 2),
                    (1, 8),
                    (153, 8),
                ],
            ),
        )
        // IPv4 with flowEndSeconds.
        .set(
            2,
            &template(257, &[(8, 4), (12, 4), (4, 1), (1, 4), (151, 4)]),
        )
        // IPv4 with systemInitTimeMilliseconds and flowEndSysUpTime.
        .set(
            2,
            &template(258, &[(8, 4), (12, 4), (1, 4), (160, 8), (21, 4)]),
        )
        .set(
            256,
            &Record::default()
                .ip("2001:db8::1")
                .ip("2001:db8::2")
                .uint(443, 2)
                .uint(51_000, 2)
                .uint(6, 1)
                // ECE (0x40 in the high byte's range: NS, 0x100) plus SYN|ACK.
                .uint(0x0112, 2)
                .uint(1500, 8)
                .uint(1_700_000_000_250, 8)
                .0,
        )
        .set(
            257,
            &Record::default()
                .ip("10.0.0.1")
                .ip("10.0.0.2")
                .uint(17, 1)
                .uint(80, 4)
                .uint(1_700_000_005, 4)
                .0,
        )
        .set(
            258,
            &Record::default()
                .ip("10.0.0.3")
                .ip("10.0.0.4")
                .uint(90, 4)
                .uint(1_699_999_000_000, 8)
                .uint(5_000, 4)
                .0,
        )
        .build();
    let (out, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(summary.records, 3);
    assert_eq!(
        pairing(&out[0]),
        (
            ip("2001:db8::2"),
            443,
            51_000,
            6,
            Some(0x12),
            Some(1_700_000_000_250)
        )
    );
    assert_eq!(
        pairing(&out[1]),
        (ip("10.0.0.2"), 0, 0, 17, None, Some(1_700_000_005_000))
    );
    assert_eq!(
        pairing(&out[2]),
        (ip("10.0.0.4"), 0, 0, 0, None, Some(1_699_999_005_000))
    );
}

#[test]
fn missing_and_odd_pairing_fields_keep_the_volume() {
    let mut decoder = FlowDecoder::default();
    let message = Message::ipfix(0)
        // Volume only: no destination, ports, protocol.
        .set(2, &template(256, &[(8, 4), (1, 4), (2, 4)]))
        // A destination of 8 bytes, ports of 4, a protocol of 2, a variable-length
        // destination: skipped, not a broken template.
        .set(
            2,
            &template(
                257,
                &[
                    (8, 4),
                    (12, 8),
                    (7, 4),
                    (11, 4),
                    (4, 2),
                    (28, VARIABLE_LENGTH),
                    (1, 4),
                ],
            ),
        )
        // ICMP: the type and code from icmpTypeCodeIPv4 when there is no port field.
        .set(
            2,
            &template(258, &[(8, 4), (12, 4), (4, 1), (32, 2), (1, 4)]),
        )
        .set(256, &simple_record("10.0.0.1", 100, 1).0)
        .set(
            257,
            &Record::default()
                .ip("10.0.0.2")
                .uint(u64::MAX, 8)
                .uint(70_000, 4)
                .uint(1, 4)
                .uint(6, 2)
                .var(&[0; 16])
                .uint(200, 4)
                .0,
        )
        .set(
            258,
            &Record::default()
                .ip("10.0.0.3")
                .ip("10.0.0.4")
                .uint(1, 1)
                .uint(0x0800, 2)
                .uint(84, 4)
                .0,
        )
        .build();
    let (out, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(summary.errors.total(), 0);
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    assert_eq!(out[0], flow("10.0.0.1", 100, 1));
    assert_eq!((out[1].source, out[1].bytes), (ip("10.0.0.2"), 200));
    assert_eq!(pairing(&out[1]), (unspecified, 0, 0, 0, None, None));
    assert_eq!(pairing(&out[2]), (ip("10.0.0.4"), 0, 0x0800, 1, None, None));
}

/// The kinds counted at all, with their counts: equal lists mean equal [`ErrorCounts`].
fn counted(errors: &ErrorCounts) -> Vec<(ErrorKind, u64)> {
    errors.iter().filter(|&(_, count)| count > 0).collect()
}

fn error_of(decoder: &mut FlowDecoder, datagram: &[u8]) -> (usize, Vec<(ErrorKind, u64)>) {
    let (out, summary) = decode_at(decoder, datagram, 0);
    (out.len(), counted(&summary.errors))
}

/// One error of `kind`, and nothing else.
fn only(kind: ErrorKind) -> Vec<(ErrorKind, u64)> {
    vec![(kind, 1)]
}

#[test]
fn malformed_input_is_counted() {
    use ErrorKind::{BadSet, BadTemplate, BadVersion, Truncated};
    let mut decoder = FlowDecoder::default();
    let good = Message::v9(0)
        .set(0, &v9_simple_template(256))
        .set(256, &simple_record("10.0.0.1", 1, 1).0);
    assert_eq!(error_of(&mut decoder, &good.build()), (1, Vec::new()));

    assert_eq!(error_of(&mut decoder, &[0]), (0, only(Truncated)));
    assert_eq!(
        error_of(&mut decoder, &good.build()[..12]),
        (0, only(Truncated))
    );
    assert_eq!(error_of(&mut decoder, &[0, 5, 0, 0]), (0, only(BadVersion)));
    let mut ipfix = Message::ipfix(0).set(2, &v9_simple_template(256)).build();
    ipfix[3] += 1;
    assert_eq!(error_of(&mut decoder, &ipfix), (0, only(BadSet)));
    // Set lengths under 4 and beyond the datagram.
    let short_set = Message::v9(0).raw(&[1, 0, 0, 2, 0, 0]).build();
    assert_eq!(error_of(&mut decoder, &short_set), (0, only(BadSet)));
    let long_set = Message::v9(0).raw(&[1, 0, 0, 40, 0, 0, 0, 0]).build();
    assert_eq!(error_of(&mut decoder, &long_set), (0, only(BadSet)));
    // A set header cut short after a good set.
    let cut_header = good.clone_sets().raw(&[1, 0]).build();
    assert_eq!(error_of(&mut decoder, &cut_header), (1, only(Truncated)));
    // A template declaring more fields than it has.
    let mut fields = template(257, &[(8, 4)]);
    fields[3] = 10;
    let cut_template = Message::v9(0).set(0, &fields).build();
    assert_eq!(error_of(&mut decoder, &cut_template), (0, only(Truncated)));
    // Zero-length field; template ids under 256; no fields.
    for bad in [
        template(257, &[(8, 4), (1, 0)]),
        template(3, &[(8, 4)]),
        template(257, &[]),
    ] {
        let message = Message::v9(0).set(0, &bad).build();
        assert_eq!(error_of(&mut decoder, &message), (0, only(BadTemplate)));
    }
    // Records longer than a datagram.
    let huge = Message::ipfix(0)
        .set(2, &template(257, &[(1, 40_000), (2, 40_000)]))
        .build();
    assert_eq!(error_of(&mut decoder, &huge), (0, only(BadTemplate)));
    // An address field of the wrong length: the template and its data are counted.
    let wrong_address = Message::v9(0)
        .set(0, &template(258, &[(8, 2), (1, 4)]))
        .build();
    assert_eq!(
        error_of(&mut decoder, &wrong_address),
        (0, only(BadTemplate))
    );
    let its_data = Message::v9(0).set(258, &[0; 6]).build();
    assert_eq!(error_of(&mut decoder, &its_data), (0, only(BadTemplate)));
    // A variable-length record running past its set.
    let overrun = Message::ipfix(0)
        .set(2, &template(259, &[(8, 4), (1, 4), (82, VARIABLE_LENGTH)]))
        .set(
            259,
            &simple_record("10.0.0.1", 1, 1).0[..8]
                .to_vec()
                .tap(|record| {
                    record.push(40);
                    record.extend_from_slice(b"abc");
                }),
        )
        .build();
    assert_eq!(error_of(&mut decoder, &overrun), (0, only(Truncated)));
    // A cut fixed-size record after a good one.
    let mut cut_record = simple_record("10.0.0.1", 1, 1).0;
    cut_record.extend_from_slice(&[10, 0, 0, 2, 0, 0, 0, 0]);
    let cut_record = Message::v9(0).set(256, &cut_record).build();
    assert_eq!(error_of(&mut decoder, &cut_record), (1, only(Truncated)));

    let totals = stats(&decoder).errors;
    assert_eq!(totals.get(BadVersion), 1);
    assert!(totals.get(Truncated) >= 5);
    assert_eq!(decoder.unattributed_errors().total(), 0);
}

trait Tap: Sized {
    fn tap(self, change: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for Vec<u8> {
    fn tap(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }
}

impl Message {
    fn clone_sets(&self) -> Self {
        Self {
            ipfix: self.ipfix,
            domain: self.domain,
            sets: self.sets.clone(),
        }
    }
}

#[test]
fn ipfix_template_withdrawal() {
    let mut decoder = FlowDecoder::default();
    let message = Message::ipfix(0)
        .set(2, &template(256, &[(8, 4), (1, 4), (2, 4)]))
        .set(2, &template(257, &[(8, 4), (1, 4), (2, 4)]))
        .set(
            3,
            &ipfix_options_template(258, &[(302, 4)], &[(305, 4), (306, 4)]),
        )
        .build();
    decode_at(&mut decoder, &message, 0);
    assert_eq!(decoder.template_count(), 3);
    let withdraw_one = Message::ipfix(0).set(2, &[1, 0, 0, 0]).build();
    decode_at(&mut decoder, &withdraw_one, 0);
    assert_eq!(decoder.template_count(), 2);
    let data = Message::ipfix(0)
        .set(256, &simple_record("10.0.0.1", 1, 1).0)
        .build();
    let (out, _) = decode_at(&mut decoder, &data, 0);
    assert!(out.is_empty());
    assert_eq!(decoder.held_set_count(), 1);
    // All data templates (id 2 = the set id); the options template stays.
    let withdraw_all = Message::ipfix(0).set(2, &[0, 2, 0, 0]).build();
    decode_at(&mut decoder, &withdraw_all, 0);
    assert_eq!(decoder.template_count(), 1);
    let withdraw_options = Message::ipfix(0).set(3, &[0, 3, 0, 0]).build();
    decode_at(&mut decoder, &withdraw_options, 0);
    assert_eq!(decoder.template_count(), 0);
}

#[test]
fn templates_expire_unless_refreshed() {
    let mut decoder = FlowDecoder::default();
    let (template_datagram, data) = encoded(V4_TEMPLATE, &v9_flows(&["10.0.0.1"]));
    decode_at(&mut decoder, &template_datagram, 0);
    assert_eq!(decode_at(&mut decoder, &data, 1000).0.len(), 1);
    decode_at(&mut decoder, &template_datagram, 1500);
    assert_eq!(decode_at(&mut decoder, &data, 3300).0.len(), 1);
    // 1801 s after the last refresh: gone, the data is held.
    let (out, _) = decode_at(&mut decoder, &data, 3301);
    assert!(out.is_empty());
    assert_eq!((decoder.template_count(), decoder.held_set_count()), (0, 1));
    // The template again: the held data is decoded.
    assert_eq!(decode_at(&mut decoder, &template_datagram, 3302).0.len(), 1);
    // A refresh with another layout replaces the template.
    let replaced = Message::v9(0)
        .set(0, &template(256, &[(8, 4), (2, 4), (1, 4)]))
        .set(256, &simple_record("10.0.0.1", 5, 6).0)
        .build();
    let (out, _) = decode_at(&mut decoder, &replaced, 3303);
    assert_eq!(out, [flow("10.0.0.1", 6, 5)]);
    assert_eq!(decoder.template_count(), 1);
}

#[test]
fn exporter_and_template_bounds() {
    let mut decoder = FlowDecoder::new(DecoderSettings {
        max_exporters: 2,
        max_templates_per_exporter: 2,
        ..DecoderSettings::default()
    });
    let message = Message::v9(0).set(0, &v9_simple_template(256)).build();
    let exporter = |last: u8| SocketAddr::from(([192, 0, 2, last], 9995));
    for last in 1..=2 {
        let summary = decoder.decode(exporter(last), &message, 0, |_| {});
        assert_eq!(summary.errors.total(), 0);
    }
    let summary = decoder.decode(exporter(3), &message, 0, |_| {});
    assert_eq!(counted(&summary.errors), only(ErrorKind::TooMany));
    assert_eq!(decoder.unattributed_errors().get(ErrorKind::TooMany), 1);
    assert_eq!(decoder.exporter_count(), 2);
    // Exporter 1 keeps talking; exporter 2 goes silent and is forgotten.
    decoder.decode(exporter(1), &message, 1000, |_| {});
    let summary = decoder.decode(exporter(3), &message, 2000, |_| {});
    assert_eq!(summary.errors.total(), 0);
    let known: BTreeSet<IpAddr> = decoder.exporter_stats().map(|(ip, _)| ip).collect();
    assert_eq!(known, BTreeSet::from([exporter(1).ip(), exporter(3).ip()]));

    // Templates: a third evicts the least recently used; refreshing is not an eviction.
    let more = Message::v9(0)
        .set(0, &v9_simple_template(257))
        .set(0, &v9_simple_template(258))
        .set(0, &v9_simple_template(256))
        .build();
    let summary = decoder.decode(exporter(1), &more, 1000, |_| {});
    assert_eq!(counted(&summary.errors), [(ErrorKind::Evicted, 2)]);
    // Two of exporter 1, one of exporter 3.
    assert_eq!(decoder.template_count(), 3);
    let summary = decoder.decode(exporter(1), &message, 1000, |_| {});
    assert_eq!(summary.errors.total(), 0);
}

/// `simple_record` data for template `id` of source id `domain`, one record from `source`.
fn v9_simple_data(domain: u32, id: u16, source: &str) -> Vec<u8> {
    Message::v9(domain)
        .set(id, &simple_record(source, 100, 1).0)
        .build()
}

/// How many records a data datagram gives now (held data counts as none).
fn decoded(decoder: &mut FlowDecoder, datagram: &[u8], now_secs: u64) -> usize {
    decode_at(decoder, datagram, now_secs).0.len()
}

/// Regression (issue 10, item 7): templates from random source ids filled the exporter's bound
/// and a new real template was refused until the template timeout. Now the flood evicts
/// itself: the new template is accepted and decodes at once; a template used to decode between
/// the flood's datagrams stays.
#[test]
fn a_template_flood_from_random_domains_evicts_itself() {
    let mut decoder = FlowDecoder::default();
    let limit = DecoderSettings::default().max_templates_per_exporter;
    let busy = Message::v9(7).set(0, &v9_simple_template(256)).build();
    decode_at(&mut decoder, &busy, 0);
    let busy_data = v9_simple_data(7, 256, "10.0.0.1");
    let mut flood_seed = 0x9e37_79b9u32;
    let flood = 20_000u32;
    for n in 0..flood {
        // xorshift: source ids all over the 32-bit space.
        flood_seed ^= flood_seed << 13;
        flood_seed ^= flood_seed >> 17;
        flood_seed ^= flood_seed << 5;
        let id = 256 + u16::try_from(n % 1000).unwrap();
        let datagram = Message::v9(flood_seed)
            .set(0, &v9_simple_template(id))
            .build();
        let (_, summary) = decode_at(&mut decoder, &datagram, 1);
        assert_eq!(summary.errors.get(ErrorKind::TooMany), 0);
        if n % 100 == 0 {
            assert_eq!(decoded(&mut decoder, &busy_data, 1), 1, "after {n}");
        }
    }
    assert_eq!(decoder.template_count(), limit);
    // Every flood template past the bound evicted one (the source ids never repeat).
    let evicted = stats(&decoder).errors.get(ErrorKind::Evicted);
    assert_eq!(
        evicted,
        u64::from(flood) + 1 - u64::try_from(limit).unwrap()
    );
    // A new domain's template, then its data: decoded at once, long before any timeout.
    let fresh = Message::v9(0xdead_beef)
        .set(0, &v9_simple_template(300))
        .set(300, &simple_record("10.0.0.2", 100, 1).0)
        .build();
    let (out, summary) = decode_at(&mut decoder, &fresh, 2);
    assert_eq!(out, [flow("10.0.0.2", 100, 1)]);
    assert_eq!(summary.errors.get(ErrorKind::TooMany), 0);
    assert_eq!(decoded(&mut decoder, &busy_data, 2), 1);
}

/// The per-domain bound: a flood of template ids in one source id evicts that domain's least
/// recently used templates, never another domain's.
#[test]
fn the_domain_bound_evicts_within_the_domain() {
    let mut decoder = FlowDecoder::new(DecoderSettings {
        max_templates_per_domain: 4,
        max_templates_per_exporter: 16,
        ..DecoderSettings::default()
    });
    for domain in [1, 2] {
        let setup = Message::v9(domain)
            .set(0, &v9_simple_template(256))
            .set(0, &v9_simple_template(257))
            .build();
        decode_at(&mut decoder, &setup, 0);
    }
    // Domain 1 uses 256 (not 257), then announces six more.
    assert_eq!(
        decoded(&mut decoder, &v9_simple_data(1, 256, "10.0.0.1"), 0),
        1
    );
    let mut evicted = 0;
    for id in 300..306 {
        let datagram = Message::v9(1).set(0, &v9_simple_template(id)).build();
        evicted += decode_at(&mut decoder, &datagram, 0)
            .1
            .errors
            .get(ErrorKind::Evicted);
    }
    // 2 + 6 into a bound of 4: 257 went first (least recently used), then 256 and 300, 301.
    assert_eq!(evicted, 4);
    assert_eq!(decoder.template_count(), 4 + 2);
    assert_eq!(
        decoded(&mut decoder, &v9_simple_data(1, 305, "10.0.0.1"), 0),
        1
    );
    assert_eq!(
        decoded(&mut decoder, &v9_simple_data(1, 257, "10.0.0.1"), 0),
        0
    );
    // Domain 2 kept both.
    for id in [256, 257] {
        assert_eq!(
            decoded(&mut decoder, &v9_simple_data(2, id, "10.0.0.3"), 0),
            1
        );
    }
}

/// The per-exporter bound: over all domains, the least recently used goes, and a template
/// that decodes data (a use) outlives ones only announced earlier or later.
#[test]
fn the_exporter_bound_evicts_the_least_recently_used_of_any_domain() {
    let mut decoder = FlowDecoder::new(DecoderSettings {
        max_templates_per_domain: 4,
        max_templates_per_exporter: 3,
        ..DecoderSettings::default()
    });
    for domain in 1..=3 {
        let datagram = Message::v9(domain).set(0, &v9_simple_template(256)).build();
        decode_at(&mut decoder, &datagram, 0);
    }
    // Domain 1's template decodes: domain 2's is now the least recently used.
    assert_eq!(
        decoded(&mut decoder, &v9_simple_data(1, 256, "10.0.0.1"), 0),
        1
    );
    let datagram = Message::v9(4).set(0, &v9_simple_template(256)).build();
    let (_, summary) = decode_at(&mut decoder, &datagram, 0);
    assert_eq!(counted(&summary.errors), [(ErrorKind::Evicted, 1)]);
    let decodes = |decoder: &mut FlowDecoder, domain| {
        decoded(decoder, &v9_simple_data(domain, 256, "10.0.0.1"), 0)
    };
    assert_eq!(decodes(&mut decoder, 2), 0, "evicted: its data is held");
    for domain in [1, 3, 4] {
        assert_eq!(decodes(&mut decoder, domain), 1, "domain {domain}");
    }
    // A refresh is a use too: the order is 1, 3, 4 (least recent first); refreshing 1 leaves
    // 3 the least recent, so a new template evicts 3.
    let refresh = Message::v9(1).set(0, &v9_simple_template(256)).build();
    decode_at(&mut decoder, &refresh, 0);
    let datagram = Message::v9(5).set(0, &v9_simple_template(256)).build();
    decode_at(&mut decoder, &datagram, 0);
    assert_eq!(decodes(&mut decoder, 3), 0);
    assert_eq!(decodes(&mut decoder, 1), 1);
    assert_eq!(stats(&decoder).errors.get(ErrorKind::Evicted), 2);
    assert_eq!(stats(&decoder).templates, 3);
}

/// IPFIX and options templates share the bounds; IPFIX domains are not v9 source ids.
#[test]
fn ipfix_and_options_templates_are_bounded_the_same_way() {
    let mut decoder = FlowDecoder::new(DecoderSettings {
        max_templates_per_domain: 2,
        max_templates_per_exporter: 8,
        ..DecoderSettings::default()
    });
    let options = |id: u16| ipfix_options_template(id, &[(302, 4)], &[(305, 4), (306, 4)]);
    let setup = Message::ipfix(9)
        .set(3, &options(300))
        .set(300, &Record::default().uint(7, 4).uint(1, 4).uint(9, 4).0)
        .set(2, &template(256, &[(8, 4), (1, 4), (2, 4)]))
        .build();
    decode_at(&mut decoder, &setup, 0);
    let data = Message::ipfix(9)
        .set(256, &simple_record("10.0.0.1", 10, 1).0)
        .build();
    assert_eq!(
        decode_at(&mut decoder, &data, 0).0,
        [flow("10.0.0.1", 100, 10)]
    );
    // v9 source id 9 is another domain: no eviction in IPFIX domain 9.
    let v9 = Message::v9(9)
        .set(0, &v9_simple_template(256))
        .set(0, &v9_simple_template(257))
        .build();
    assert_eq!(decode_at(&mut decoder, &v9, 0).1.errors.total(), 0);
    // A flood of options templates in domain 9 evicts 300 (least recent), and then the data
    // template; a fresh data template decodes at once.
    let flood = Message::ipfix(9)
        .set(3, &options(301))
        .set(3, &options(302))
        .build();
    let (_, summary) = decode_at(&mut decoder, &flood, 0);
    assert_eq!(summary.errors.get(ErrorKind::Evicted), 2);
    let fresh = Message::ipfix(9)
        .set(2, &template(400, &[(8, 4), (1, 4), (2, 4)]))
        .set(400, &simple_record("10.0.0.2", 10, 1).0)
        .build();
    let (out, summary) = decode_at(&mut decoder, &fresh, 0);
    // The sampling rate learned from 300 stays: sampling state is not template state.
    assert_eq!(out, [flow("10.0.0.2", 100, 10)]);
    assert_eq!(summary.errors.get(ErrorKind::Evicted), 1);
}

/// Sampling rates: per exporter, the domains' latest rates are bounded (by
/// max_templates_per_exporter) with the same least-recently-used eviction, so options from
/// many made-up domains cannot lock out a real domain's rate.
#[test]
fn sampling_state_is_evicted_least_recently_used() {
    let mut decoder = FlowDecoder::new(DecoderSettings {
        max_templates_per_domain: 2,
        max_templates_per_exporter: 2,
        ..DecoderSettings::default()
    });
    let announce = |domain: u32, interval: u64| {
        Message::v9(domain)
            .set(1, &v9_options_template(257, &[(1, 4)], &[(34, 4)]))
            .set(257, &Record::default().uint(1, 4).uint(interval, 4).0)
            .build()
    };
    let data = |domain: u32| {
        Message::v9(domain)
            .set(0, &v9_simple_template(256))
            .set(256, &simple_record("10.0.0.1", 10, 1).0)
            .build()
    };
    decode_at(&mut decoder, &announce(1, 10), 0);
    // Many other domains announce rates; domain 1 keeps decoding (a use) in between.
    for domain in 100..200 {
        decode_at(&mut decoder, &announce(domain, 1000), 0);
        let (out, summary) = decode_at(&mut decoder, &data(1), 0);
        assert_eq!(out, [flow("10.0.0.1", 100, 10)], "domain {domain}");
        assert_eq!(summary.errors.get(ErrorKind::TooMany), 0);
    }
    // A new domain's rate is always taken.
    decode_at(&mut decoder, &announce(7, 3), 0);
    assert_eq!(
        decode_at(&mut decoder, &data(7), 0).0,
        [flow("10.0.0.1", 30, 3)]
    );
    assert!(stats(&decoder).errors.get(ErrorKind::Evicted) > 100);
    assert_eq!(stats(&decoder).errors.get(ErrorKind::TooMany), 0);
}

/// A template with variable-length fields costs a bounded amount: fields it skips in a row
/// are one part, and one with more than 256 parts is refused.
#[test]
fn variable_length_templates_are_bounded() {
    let mut decoder = FlowDecoder::default();
    // 1000 fixed fields we skip between two variable ones, then the ones we read: 5 parts.
    let mut fields = vec![(82, VARIABLE_LENGTH)];
    fields.extend(std::iter::repeat_n((7, 2), 1000));
    fields.extend([(82, VARIABLE_LENGTH), (8, 4), (1, 4), (2, 4)]);
    let record = Record::default()
        .var(b"a")
        .bytes(&[0; 2000])
        .var(b"bc")
        .ip("10.0.0.1")
        .uint(5, 4)
        .uint(1, 4);
    let message = Message::ipfix(1)
        .set(2, &template(256, &fields))
        .set(256, &record.0)
        .build();
    let (out, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(summary.errors.total(), 0);
    assert_eq!(out, [flow("10.0.0.1", 5, 1)]);
    // 300 variable fields: 300 parts, more than a template may have.
    let fields = vec![(82, VARIABLE_LENGTH); 300];
    let message = Message::ipfix(1).set(2, &template(257, &fields)).build();
    let (_, summary) = decode_at(&mut decoder, &message, 0);
    assert_eq!(counted(&summary.errors), only(ErrorKind::BadTemplate));
    assert_eq!(decoder.template_count(), 1);
}

/// Valid datagrams of every shape the decoder knows, as mutation seeds.
fn seeds() -> Vec<Vec<u8>> {
    let (v4_template, v4_data) = encoded(V4_TEMPLATE, &v9_flows(&["10.0.0.1", "10.0.0.2"]));
    let v6 = V9Template {
        template_id: 300,
        family: AddressFamily::V6,
        wide_counters: true,
    };
    let (v6_template, v6_data) = encoded(v6, &v9_flows(&["2001:db8::1"]));
    let v9_options = Message::v9(0)
        .set(1, &v9_options_template(257, &[(1, 4)], &[(34, 4), (48, 1)]))
        .set(257, &Record::default().uint(0, 4).uint(100, 4).uint(1, 1).0)
        .set(0, &template(258, &[(8, 4), (1, 4), (2, 4), (48, 1)]))
        .set(258, &simple_record("10.0.0.1", 5, 1).uint(1, 1).0)
        .build();
    let ipfix = Message::ipfix(3)
        .set(
            3,
            &ipfix_options_template(300, &[(302, 4)], &[(305, 4), (306, 4)]),
        )
        .set(300, &Record::default().uint(7, 4).uint(2, 4).uint(3, 4).0)
        .set(
            2,
            &template(
                256,
                &[(82, VARIABLE_LENGTH), (8, 4), (1, 8), (2, 4), (302, 4)],
            ),
        )
        .set(
            256,
            &records(&[
                Record::default()
                    .var(b"eth0")
                    .ip("10.0.0.1")
                    .uint(100, 8)
                    .uint(1, 4)
                    .uint(7, 4),
                Record::default()
                    .var(&[b'y'; 260])
                    .ip("10.0.0.2")
                    .uint(100, 8)
                    .uint(1, 4)
                    .uint(7, 4),
            ]),
        )
        .build();
    let ipfix_data_first = Message::ipfix(4)
        .set(257, &simple_record("10.0.0.1", 5, 1).0)
        .set(
            2,
            &template(257, &[(8, 4), (1 | ENTERPRISE_BIT, 4), (2, 4)]),
        )
        .set(2, &[0, 2, 0, 0])
        .build();
    vec![
        v4_template,
        v4_data,
        v6_template,
        v6_data,
        v9_options,
        ipfix,
        ipfix_data_first,
    ]
}

fn mutate(rng: &mut StdRng, datagram: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=3) {
        let len = datagram.len();
        match rng.random_range(0..5) {
            0 if len > 0 => {
                let at = rng.random_range(0..len);
                datagram[at] ^= 1 << rng.random_range(0..8);
            }
            1 => datagram.truncate(rng.random_range(0..=len)),
            2 => {
                let at = rng.random_range(0..=len);
                for _ in 0..rng.random_range(1..=8) {
                    datagram.insert(at, rng.random());
                }
            }
            3 if len >= 2 => {
                // Length-like fields: a small, boundary or random value.
                let at = rng.random_range(0..len - 1);
                let value: u16 = match rng.random_range(0..4) {
                    0 => rng.random_range(0..8),
                    1 => u16::MAX,
                    2 => u16::MAX - rng.random_range(0..4),
                    _ => rng.random(),
                };
                datagram[at..at + 2].copy_from_slice(&value.to_be_bytes());
            }
            _ => {
                let at = rng.random_range(0..=len);
                datagram.splice(at..at, [0xff; 4]);
            }
        }
    }
}

#[test]
fn fuzzed_input_never_panics_and_stays_bounded() {
    let settings = DecoderSettings {
        max_exporters: 4,
        max_templates_per_exporter: 8,
        max_held_sets: 4,
        max_held_bytes: 4096,
        ..DecoderSettings::default()
    };
    let mut decoder = FlowDecoder::new(settings.clone());
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut datagram = Vec::new();
    let mut accepted = 0u64;
    for round in 0..200_000u64 {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        datagram.clear();
        datagram.extend_from_slice(seed);
        // Some unmutated ones, so templates get installed and data decoded.
        if rng.random_range(0..4) != 0 {
            mutate(&mut rng, &mut datagram);
        }
        let exporter = SocketAddr::from(([192, 0, 2, rng.random_range(1..=6)], 2055));
        let summary = decoder.decode(exporter, &datagram, round / 100, |_| {});
        accepted += summary.records;
        if round % 1000 == 0 {
            assert!(decoder.exporter_count() <= settings.max_exporters);
            assert!(
                decoder
                    .exporter_stats()
                    .all(|(_, stats)| stats.templates <= 8 && stats.held_sets <= 4)
            );
            assert!(decoder.template_count() <= 4 * 8);
        }
    }
    assert!(accepted > 0);
    let errors: u64 = decoder
        .exporter_stats()
        .map(|(_, stats)| stats.errors.total())
        .sum();
    assert!(errors > 0);
}
