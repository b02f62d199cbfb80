//! A minimal NetFlow v9 (RFC 3954) encoder for recorded-stream generators, benchmarks and
//! tests: one template of the usual softflowd-like fields and data datagrams using it.
use std::net::{IpAddr, Ipv4Addr};

const VERSION: u16 = 9;
const HEADER_LEN: usize = 20;
const FLOWSET_HEADER_LEN: usize = 4;
const TEMPLATE_FLOWSET_ID: u16 = 0;
const MAX_DATAGRAM_LEN: usize = 65_535;

// NetFlow v9 field types.
const IN_BYTES: u16 = 1;
const IN_PKTS: u16 = 2;
const PROTOCOL: u16 = 4;
const L4_SRC_PORT: u16 = 7;
const IPV4_SRC_ADDR: u16 = 8;
const INPUT_SNMP: u16 = 10;
const L4_DST_PORT: u16 = 11;
const IPV4_DST_ADDR: u16 = 12;
const LAST_SWITCHED: u16 = 21;
const FIRST_SWITCHED: u16 = 22;
const IPV6_SRC_ADDR: u16 = 27;
const IPV6_DST_ADDR: u16 = 28;
const DIRECTION: u16 = 61;

/// The address family of a template's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressFamily {
    V4,
    V6,
}

/// A template: source and destination address, IN_BYTES, IN_PKTS, L4 ports, PROTOCOL,
/// FIRST/LAST_SWITCHED, INPUT_SNMP (4 bytes) and DIRECTION, in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V9Template {
    /// 256 or more.
    pub template_id: u16,
    pub family: AddressFamily,
    /// IN_BYTES and IN_PKTS in 8 bytes; else 4 (larger values saturate).
    pub wide_counters: bool,
}

/// The packet header fields that vary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V9Header {
    pub source_id: u32,
    pub sys_uptime_ms: u32,
    pub unix_secs: u32,
    pub sequence: u32,
}

/// One flow to encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V9Flow {
    /// Written as IPv4-mapped in an IPv6 template; an IPv6 address in an IPv4 template is
    /// written as 0.0.0.0 unless it is IPv4-mapped.
    pub source: IpAddr,
    pub destination: IpAddr,
    pub bytes: u64,
    pub packets: u64,
    pub source_port: u16,
    pub destination_port: u16,
    pub protocol: u8,
    pub first_switched_ms: u32,
    pub last_switched_ms: u32,
    pub input_interface: u32,
    /// 0 ingress, 1 egress.
    pub direction: u8,
}

impl Default for V9Flow {
    fn default() -> Self {
        Self {
            source: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            destination: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            bytes: 0,
            packets: 0,
            source_port: 0,
            destination_port: 0,
            protocol: 6,
            first_switched_ms: 0,
            last_switched_ms: 0,
            input_interface: 0,
            direction: 0,
        }
    }
}

impl V9Template {
    /// (field type, length) in record order.
    const fn fields(self) -> [(u16, u16); 11] {
        let (source, destination, address_len) = match self.family {
            AddressFamily::V4 => (IPV4_SRC_ADDR, IPV4_DST_ADDR, 4),
            AddressFamily::V6 => (IPV6_SRC_ADDR, IPV6_DST_ADDR, 16),
        };
        let counter_len = if self.wide_counters { 8 } else { 4 };
        [
            (source, address_len),
            (destination, address_len),
            (IN_BYTES, counter_len),
            (IN_PKTS, counter_len),
            (L4_SRC_PORT, 2),
            (L4_DST_PORT, 2),
            (PROTOCOL, 1),
            (FIRST_SWITCHED, 4),
            (LAST_SWITCHED, 4),
            (INPUT_SNMP, 4),
            (DIRECTION, 1),
        ]
    }

    /// Bytes per data record.
    pub fn record_len(self) -> usize {
        self.fields().iter().map(|&(_, len)| usize::from(len)).sum()
    }

    /// Records that fit one datagram of at most `max_datagram_len` bytes (at least 1).
    pub fn records_per_datagram(self, max_datagram_len: usize) -> usize {
        let room = max_datagram_len
            .min(MAX_DATAGRAM_LEN)
            .saturating_sub(HEADER_LEN + FLOWSET_HEADER_LEN + 3);
        (room / self.record_len()).max(1)
    }
}

fn put_header(out: &mut Vec<u8>, header: V9Header, count: u16) {
    out.clear();
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&header.sys_uptime_ms.to_be_bytes());
    out.extend_from_slice(&header.unix_secs.to_be_bytes());
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.source_id.to_be_bytes());
}

/// Writes the flowset length of the flowset starting at `start`.
fn finish_flowset(out: &mut [u8], start: usize) {
    let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
    if let Some(field) = out.get_mut(start + 2..start + 4) {
        field.copy_from_slice(&len.to_be_bytes());
    }
}

/// Replaces `out` with a datagram announcing `template`.
pub fn v9_template(header: V9Header, template: V9Template, out: &mut Vec<u8>) {
    put_header(out, header, 1);
    let start = out.len();
    out.extend_from_slice(&TEMPLATE_FLOWSET_ID.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let fields = template.fields();
    out.extend_from_slice(&template.template_id.to_be_bytes());
    let count = u16::try_from(fields.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for (field_type, len) in fields {
        out.extend_from_slice(&field_type.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    }
    finish_flowset(out, start);
}

/// Replaces `out` with a datagram of `flows` as records of `template`; returns how many
/// were written (those that fit one datagram, see [`V9Template::records_per_datagram`]).
pub fn v9_data(
    header: V9Header,
    template: V9Template,
    flows: &[V9Flow],
    out: &mut Vec<u8>,
) -> usize {
    let written = flows
        .len()
        .min(template.records_per_datagram(MAX_DATAGRAM_LEN));
    put_header(out, header, u16::try_from(written).unwrap_or(u16::MAX));
    let start = out.len();
    out.extend_from_slice(&template.template_id.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    for flow in flows.iter().take(written) {
        put_address(out, template.family, flow.source);
        put_address(out, template.family, flow.destination);
        if template.wide_counters {
            out.extend_from_slice(&flow.bytes.to_be_bytes());
            out.extend_from_slice(&flow.packets.to_be_bytes());
        } else {
            let narrow = |value: u64| u32::try_from(value).unwrap_or(u32::MAX).to_be_bytes();
            out.extend_from_slice(&narrow(flow.bytes));
            out.extend_from_slice(&narrow(flow.packets));
        }
        out.extend_from_slice(&flow.source_port.to_be_bytes());
        out.extend_from_slice(&flow.destination_port.to_be_bytes());
        out.push(flow.protocol);
        out.extend_from_slice(&flow.first_switched_ms.to_be_bytes());
        out.extend_from_slice(&flow.last_switched_ms.to_be_bytes());
        out.extend_from_slice(&flow.input_interface.to_be_bytes());
        out.push(flow.direction);
    }
    // Pad the flowset to 4 bytes.
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    finish_flowset(out, start);
    written
}

fn put_address(out: &mut Vec<u8>, family: AddressFamily, address: IpAddr) {
    match family {
        AddressFamily::V4 => {
            let v4 = match address {
                IpAddr::V4(v4) => v4,
                IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
            };
            out.extend_from_slice(&v4.octets());
        }
        AddressFamily::V6 => {
            let v6 = match address {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&v6.octets());
        }
    }
}

const IPFIX_VERSION: u16 = 10;
const IPFIX_HEADER_LEN: usize = 16;
const IPFIX_TEMPLATE_SET_ID: u16 = 2;
const OPTIONS_TEMPLATE_FLOWSET_ID: u16 = 1;
const SAMPLING_INTERVAL: u16 = 34;
const SAMPLER_ID: u16 = 48;
/// The v9 scope type "System".
const SCOPE_SYSTEM: u16 = 1;

/// Writes the IPFIX message length of the message in `out`.
fn finish_ipfix(out: &mut [u8]) {
    let len = u16::try_from(out.len()).unwrap_or(u16::MAX);
    if let Some(field) = out.get_mut(2..4) {
        field.copy_from_slice(&len.to_be_bytes());
    }
}

fn put_ipfix_header(out: &mut Vec<u8>, header: V9Header) {
    out.clear();
    out.extend_from_slice(&IPFIX_VERSION.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&header.unix_secs.to_be_bytes());
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.source_id.to_be_bytes());
    debug_assert_eq!(out.len(), IPFIX_HEADER_LEN);
}

/// Replaces `out` with an IPFIX (RFC 7011) message announcing `template` (the same fields as
/// in NetFlow v9; `header.source_id` is the observation domain, `sys_uptime_ms` is unused).
pub fn ipfix_template(header: V9Header, template: V9Template, out: &mut Vec<u8>) {
    put_ipfix_header(out, header);
    let start = out.len();
    out.extend_from_slice(&IPFIX_TEMPLATE_SET_ID.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let fields = template.fields();
    out.extend_from_slice(&template.template_id.to_be_bytes());
    let count = u16::try_from(fields.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for (field_type, len) in fields {
        out.extend_from_slice(&field_type.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    }
    finish_flowset(out, start);
    finish_ipfix(out);
}

/// Replaces `out` with an IPFIX message of `flows` as records of `template`; how many were
/// written (as [`v9_data`]).
pub fn ipfix_data(
    header: V9Header,
    template: V9Template,
    flows: &[V9Flow],
    out: &mut Vec<u8>,
) -> usize {
    // The v9 encoding, with the IPFIX header in place of the v9 one.
    let written = v9_data(header, template, flows, out);
    let sets = out.split_off(HEADER_LEN);
    put_ipfix_header(out, header);
    out.extend_from_slice(&sets);
    finish_ipfix(out);
    written
}

/// Replaces `out` with a NetFlow v9 datagram holding an options template (`template_id`; scope
/// System; SAMPLING_INTERVAL and SAMPLER_ID) and one options record saying sampler
/// `sampler_id` samples 1 in `interval` packets.
pub fn v9_sampling_options(
    header: V9Header,
    template_id: u16,
    sampler_id: u8,
    interval: u32,
    out: &mut Vec<u8>,
) {
    put_header(out, header, 2);
    let start = out.len();
    out.extend_from_slice(&OPTIONS_TEMPLATE_FLOWSET_ID.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&template_id.to_be_bytes());
    // Scope and option field lengths, in bytes of field specifiers.
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&8u16.to_be_bytes());
    for (field_type, len) in [
        (SCOPE_SYSTEM, 4u16),
        (SAMPLING_INTERVAL, 4),
        (SAMPLER_ID, 1),
    ] {
        out.extend_from_slice(&field_type.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    }
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    finish_flowset(out, start);
    let start = out.len();
    out.extend_from_slice(&template_id.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&interval.to_be_bytes());
    out.push(sampler_id);
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    finish_flowset(out, start);
}
