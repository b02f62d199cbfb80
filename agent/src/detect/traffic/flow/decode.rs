//! NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) decoding into per-source volumes.
//!
//! [`FlowDecoder`] is pure: datagrams and the time come in, [`FlowRecord`]s go to a sink. It
//! keeps the templates each exporter announced, compiled once into a layout (the positions of
//! the fields we read), so records are read without allocating. Hostile input is bounded:
//! exporters, templates per observation domain and per exporter, data held back while its
//! template is missing, sampling state per domain and per exporter; nothing is queued without
//! end. Templates and sampling state are evicted least recently used first (see
//! [`super::lru`]) and counted (`evicted`): flows are spoofable UDP, and a bound that refused
//! new templates once full would let a flood of made-up ones lock out the exporter's real
//! templates until they time out.
//!
//! Keys: statistics are per exporter IP address. Templates are per (exporter IP address,
//! protocol, source id / observation domain id, template id); RFC 7011 scopes templates to the
//! transport session (which includes the port), but exporters such as softflowd change their
//! source port on every restart and announce their templates again anyway, so keying by
//! address keeps templates across a restart and lets the refresh replace them.
use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use super::lru::{GroupedLru, Insert};

const NETFLOW_V9: u16 = 9;
const IPFIX: u16 = 10;
const V9_HEADER_LEN: usize = 20;
const IPFIX_HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;
const MAX_DATAGRAM_LEN: usize = 65_535;
/// A template field length meaning "each record carries the length" (IPFIX only).
const VARIABLE_LENGTH: u16 = 65_535;
/// Set/template ids from here on are data sets / templates.
const FIRST_DATA_SET_ID: u16 = 256;
const V9_TEMPLATE_SET: u16 = 0;
const V9_OPTIONS_TEMPLATE_SET: u16 = 1;
const IPFIX_TEMPLATE_SET: u16 = 2;
const IPFIX_OPTIONS_TEMPLATE_SET: u16 = 3;
/// The IPFIX field specifier bit saying a 4-byte enterprise number follows.
const ENTERPRISE_BIT: u16 = 0x8000;
/// Sampler and selector ids remembered per observation domain, and per exporter.
const MAX_SAMPLERS_PER_DOMAIN: usize = 256;
const MAX_SAMPLERS_PER_EXPORTER: usize = 1024;
/// Parts of a template with variable-length fields (each variable field, each field we read,
/// each run of other fixed fields): bounds what such a template costs (4 bytes a part).
const MAX_VARIABLE_LAYOUT_PARTS: usize = 256;

/// IANA information element ids (the same numbers as the NetFlow v9 field types).
mod element {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const TCP_CONTROL_BITS: u16 = 6;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const INGRESS_INTERFACE: u16 = 10;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const ICMP_TYPE_CODE_IPV4: u16 = 32;
    pub const ICMP_TYPE_CODE_IPV6: u16 = 139;
    pub const SYSTEM_INIT_TIME_MILLISECONDS: u16 = 160;
    pub const SAMPLING_INTERVAL: u16 = 34;
    pub const SAMPLER_ID: u16 = 48;
    pub const SAMPLER_RANDOM_INTERVAL: u16 = 50;
    pub const FLOW_END_SYS_UP_TIME: u16 = 21;
    pub const FLOW_START_SYS_UP_TIME: u16 = 22;
    pub const FLOW_DIRECTION: u16 = 61;
    pub const FLOW_START_SECONDS: u16 = 150;
    pub const FLOW_END_SECONDS: u16 = 151;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    pub const FLOW_DURATION_MILLISECONDS: u16 = 161;
    pub const SELECTOR_ID: u16 = 302;
    pub const SAMPLING_PACKET_INTERVAL: u16 = 305;
    pub const SAMPLING_PACKET_SPACE: u16 = 306;
    pub const SAMPLING_SIZE: u16 = 309;
    pub const SAMPLING_POPULATION: u16 = 310;
}

/// One flow: its volume, scaled by its sampling rate, and what pairing its two directions
/// needs (addresses, ports, protocol, when it ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// The flow's source; IPv4-mapped IPv6 addresses are given as IPv4.
    pub source: IpAddr,
    /// The flow's destination, given like the source; `0.0.0.0` when the template has no
    /// destination address.
    pub destination: IpAddr,
    /// L4_SRC_PORT / sourceTransportPort; 0 when absent.
    pub source_port: u16,
    /// L4_DST_PORT / destinationTransportPort; 0 when absent. For ICMP the exporters' usual
    /// `type << 8 | code`, taken from icmpTypeCodeIPv4/IPv6 when the template has no port.
    pub destination_port: u16,
    /// PROTOCOL / protocolIdentifier (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6); 0 when absent.
    pub protocol: u8,
    /// TCP_FLAGS / tcpControlBits (the low 8 bits: FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10),
    /// the union over the flow's packets; `None` when the template does not carry them.
    pub tcp_flags: Option<u8>,
    pub bytes: u64,
    pub packets: u64,
    /// How long the flow lasted (end - start, when the record says), in milliseconds; 0 when
    /// unknown. A long flow exported once (an active timeout) must not count as a burst.
    pub duration_ms: u32,
    /// When the flow's last packet was seen, Unix milliseconds, when the record says:
    /// flowEndMilliseconds, flowEndSeconds, or LAST_SWITCHED against the NetFlow v9 header's
    /// uptime and clock (or IPFIX systemInitTimeMilliseconds). A header clock of 0 (an
    /// exporter that does not know the time) gives `None`.
    pub end_unix_ms: Option<u64>,
}

impl FlowRecord {
    /// A record with only a volume: no destination, ports, protocol or times.
    pub const fn new(source: IpAddr, bytes: u64, packets: u64) -> Self {
        Self {
            source,
            destination: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            source_port: 0,
            destination_port: 0,
            protocol: 0,
            tcp_flags: None,
            bytes,
            packets,
            duration_ms: 0,
            end_unix_ms: None,
        }
    }
}

impl Default for FlowRecord {
    /// An empty record from `0.0.0.0`; for `..FlowRecord::default()` in struct literals.
    fn default() -> Self {
        Self::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, 0)
    }
}

/// The longest flow duration believed; longer ones are taken as this (clock jumps).
const MAX_FLOW_DURATION_MS: u64 = 24 * 3600 * 1000;

/// Which flow directions are kept; the configuration's `volume.flow.direction`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionFilter {
    /// Records with flowDirection 0 (ingress), and records without a direction.
    #[default]
    Ingress,
    /// Every record.
    Any,
}

impl DirectionFilter {
    /// The configuration spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Any => "any",
        }
    }
}

/// [`DecoderSettings::max_templates_per_exporter`] by default.
pub const DEFAULT_MAX_TEMPLATES_PER_EXPORTER: usize = 256;
/// [`DecoderSettings::max_templates_per_domain`] by default: routers announce a few templates
/// per line card (IPv4, IPv6, MPLS, options), softflowd two or three.
pub const DEFAULT_MAX_TEMPLATES_PER_DOMAIN: usize = 64;

/// Limits and filters of a [`FlowDecoder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderSettings {
    /// A template not announced again for this long is forgotten.
    pub template_timeout_secs: u64,
    /// Exporters tracked at once; more are refused (`too_many`) unless one has been silent
    /// for `template_timeout_secs`, which is then forgotten.
    pub max_exporters: usize,
    /// Templates per exporter, over all its source ids / observation domains; a new one
    /// beyond evicts the exporter's least recently used (`evicted`). Also the bound of
    /// domains whose sampling rates are remembered.
    pub max_templates_per_exporter: usize,
    /// Templates per source id / observation domain; a new one beyond evicts the domain's
    /// least recently used (`evicted`). At most `max_templates_per_exporter` counts.
    pub max_templates_per_domain: usize,
    /// Data sets held per exporter while their template is missing.
    pub max_held_sets: usize,
    /// Bytes of held data sets per exporter.
    pub max_held_bytes: usize,
    /// Held data sets whose template has not come within this long are dropped.
    pub hold_secs: u64,
    pub direction: DirectionFilter,
    /// When set, only records whose ingressInterface (INPUT_SNMP) is in the set are kept;
    /// records without that field are then dropped too.
    pub ingress_interfaces: Option<BTreeSet<u32>>,
    /// Sampling rate ("1 in N") per exporter address; beats whatever the exporter says.
    /// 0 is taken as 1.
    pub sampling_overrides: HashMap<IpAddr, u64>,
}

impl Default for DecoderSettings {
    fn default() -> Self {
        Self {
            template_timeout_secs: 30 * 60,
            max_exporters: 64,
            max_templates_per_exporter: DEFAULT_MAX_TEMPLATES_PER_EXPORTER,
            max_templates_per_domain: DEFAULT_MAX_TEMPLATES_PER_DOMAIN,
            max_held_sets: 64,
            max_held_bytes: 128 << 10,
            hold_secs: 60,
            direction: DirectionFilter::Ingress,
            ingress_interfaces: None,
            sampling_overrides: HashMap::new(),
        }
    }
}

/// What went wrong with (part of) a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// A header, set or record shorter than declared.
    Truncated,
    /// Neither NetFlow v9 nor IPFIX.
    BadVersion,
    /// A set length under 4 or beyond the datagram, or an IPFIX message length that is not
    /// the datagram's.
    BadSet,
    /// A template that cannot describe records: zero-length field, records longer than a
    /// datagram, a reserved id, or a field we read with an impossible length.
    BadTemplate,
    /// Data dropped because its template did not come in time.
    NoTemplate,
    /// An exporter beyond the configured bounds (refused), or a template or sampling state
    /// with a bound of 0.
    TooMany,
    /// A template or sampling state forgotten, least recently used first, to make room for a
    /// new one beyond the bounds. Not an error of the datagram, but a sign of an exporter
    /// (or a spoofer) announcing more than the bounds hold.
    Evicted,
}

impl ErrorKind {
    pub const ALL: [Self; 7] = [
        Self::Truncated,
        Self::BadVersion,
        Self::BadSet,
        Self::BadTemplate,
        Self::NoTemplate,
        Self::TooMany,
        Self::Evicted,
    ];

    /// The metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadVersion => "bad_version",
            Self::BadSet => "bad_set",
            Self::BadTemplate => "bad_template",
            Self::NoTemplate => "no_template",
            Self::TooMany => "too_many",
            Self::Evicted => "evicted",
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Truncated => 0,
            Self::BadVersion => 1,
            Self::BadSet => 2,
            Self::BadTemplate => 3,
            Self::NoTemplate => 4,
            Self::TooMany => 5,
            Self::Evicted => 6,
        }
    }
}

/// Error counts by [`ErrorKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; 7]);

impl ErrorCounts {
    pub const fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.0
            .iter()
            .fold(0, |sum, &count| sum.saturating_add(count))
    }

    pub fn iter(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL
            .into_iter()
            .map(|kind| (kind, self.get(kind)))
    }

    fn add(&mut self, kind: ErrorKind) {
        self.add_many(kind, 1);
    }

    fn add_many(&mut self, kind: ErrorKind, many: usize) {
        let count = &mut self.0[kind.index()];
        *count = count.saturating_add(u64::try_from(many).unwrap_or(u64::MAX));
    }

    fn merge(&mut self, other: &Self) {
        for (count, more) in self.0.iter_mut().zip(other.0) {
            *count = count.saturating_add(more);
        }
    }
}

/// What one datagram gave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    /// Records passed to the sink.
    pub records: u64,
    /// Records not passed on, not errors: outside the direction/interface filter, without a
    /// source address, or with neither bytes nor packets.
    pub filtered: u64,
    pub errors: ErrorCounts,
}

/// Totals of one exporter since it was first seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExporterStats {
    pub datagrams: u64,
    pub records: u64,
    pub filtered: u64,
    pub errors: ErrorCounts,
    /// Templates held now.
    pub templates: u64,
    /// Data sets waiting for their template now.
    pub held_sets: u64,
}

/// A sampling rate, `numerator / denominator` (≥ 1) flows or bytes per one observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rate {
    numerator: u64,
    denominator: u64,
}

impl Rate {
    const ONE: Self = Self {
        numerator: 1,
        denominator: 1,
    };

    /// "1 in `interval`"; 0 says nothing.
    fn every(interval: u64) -> Option<Self> {
        (interval > 0).then_some(Self {
            numerator: interval,
            denominator: 1,
        })
    }

    /// `observed` packets out of every `total`; a rate under 1 makes no sense and is taken
    /// as 1.
    fn ratio(total: u64, observed: u64) -> Option<Self> {
        if observed == 0 || total == 0 {
            return None;
        }
        Some(if total < observed {
            Self::ONE
        } else {
            Self {
                numerator: total,
                denominator: observed,
            }
        })
    }

    fn scale(self, value: u64) -> u64 {
        if self == Self::ONE {
            return value;
        }
        let scaled = u128::from(value) * u128::from(self.numerator) / u128::from(self.denominator);
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }
}

/// Where templates live: NetFlow v9 source id or IPFIX observation domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct DomainKey {
    ipfix: bool,
    id: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TemplateKey {
    domain: DomainKey,
    template_id: u16,
}

/// The place of one field in a record; `len` 0 means absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    start: u16,
    len: u16,
}

impl Slot {
    fn bytes(self, record: &[u8]) -> Option<&[u8]> {
        if self.len == 0 {
            return None;
        }
        let start = usize::from(self.start);
        record.get(start..start + usize::from(self.len))
    }

    fn uint(self, record: &[u8]) -> Option<u64> {
        // Reduced-size encoding: any length 1..=8, big-endian (checked at compile time).
        self.bytes(record).map(|bytes| {
            bytes
                .iter()
                .fold(0, |value, &byte| (value << 8) | u64::from(byte))
        })
    }

    fn ipv4(self, record: &[u8]) -> Option<Ipv4Addr> {
        <[u8; 4]>::try_from(self.bytes(record)?)
            .ok()
            .map(Ipv4Addr::from)
    }

    fn ipv6(self, record: &[u8]) -> Option<Ipv6Addr> {
        <[u8; 16]>::try_from(self.bytes(record)?)
            .ok()
            .map(Ipv6Addr::from)
    }
}

/// The fields we read, where they are in a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slots {
    source_v4: Slot,
    source_v6: Slot,
    destination_v4: Slot,
    destination_v6: Slot,
    source_port: Slot,
    destination_port: Slot,
    icmp_type_code: Slot,
    protocol: Slot,
    tcp_flags: Slot,
    system_init_ms: Slot,
    octets: Slot,
    packets: Slot,
    start_uptime: Slot,
    end_uptime: Slot,
    start_secs: Slot,
    end_secs: Slot,
    start_ms: Slot,
    end_ms: Slot,
    duration_ms: Slot,
    direction: Slot,
    ingress_interface: Slot,
    sampling_interval: Slot,
    sampler_random_interval: Slot,
    sampler_id: Slot,
    selector_id: Slot,
    packet_interval: Slot,
    packet_space: Slot,
    sampling_size: Slot,
    sampling_population: Slot,
}

/// A field we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    SourceV4,
    SourceV6,
    DestinationV4,
    DestinationV6,
    SourcePort,
    DestinationPort,
    IcmpTypeCode,
    Protocol,
    TcpFlags,
    SystemInitMs,
    Octets,
    Packets,
    StartUptime,
    EndUptime,
    StartSecs,
    EndSecs,
    StartMs,
    EndMs,
    DurationMs,
    Direction,
    IngressInterface,
    SamplingInterval,
    SamplerRandomInterval,
    SamplerId,
    SelectorId,
    PacketInterval,
    PacketSpace,
    SamplingSize,
    SamplingPopulation,
}

impl Target {
    const fn of(element_id: u16) -> Option<Self> {
        Some(match element_id {
            element::SOURCE_IPV4_ADDRESS => Self::SourceV4,
            element::SOURCE_IPV6_ADDRESS => Self::SourceV6,
            element::DESTINATION_IPV4_ADDRESS => Self::DestinationV4,
            element::DESTINATION_IPV6_ADDRESS => Self::DestinationV6,
            element::SOURCE_TRANSPORT_PORT => Self::SourcePort,
            element::DESTINATION_TRANSPORT_PORT => Self::DestinationPort,
            element::ICMP_TYPE_CODE_IPV4 | element::ICMP_TYPE_CODE_IPV6 => Self::IcmpTypeCode,
            element::PROTOCOL_IDENTIFIER => Self::Protocol,
            element::TCP_CONTROL_BITS => Self::TcpFlags,
            element::SYSTEM_INIT_TIME_MILLISECONDS => Self::SystemInitMs,
            element::OCTET_DELTA_COUNT => Self::Octets,
            element::PACKET_DELTA_COUNT => Self::Packets,
            element::FLOW_START_SYS_UP_TIME => Self::StartUptime,
            element::FLOW_END_SYS_UP_TIME => Self::EndUptime,
            element::FLOW_START_SECONDS => Self::StartSecs,
            element::FLOW_END_SECONDS => Self::EndSecs,
            element::FLOW_START_MILLISECONDS => Self::StartMs,
            element::FLOW_END_MILLISECONDS => Self::EndMs,
            element::FLOW_DURATION_MILLISECONDS => Self::DurationMs,
            element::FLOW_DIRECTION => Self::Direction,
            element::INGRESS_INTERFACE => Self::IngressInterface,
            element::SAMPLING_INTERVAL => Self::SamplingInterval,
            element::SAMPLER_RANDOM_INTERVAL => Self::SamplerRandomInterval,
            element::SAMPLER_ID => Self::SamplerId,
            element::SELECTOR_ID => Self::SelectorId,
            element::SAMPLING_PACKET_INTERVAL => Self::PacketInterval,
            element::SAMPLING_PACKET_SPACE => Self::PacketSpace,
            element::SAMPLING_SIZE => Self::SamplingSize,
            element::SAMPLING_POPULATION => Self::SamplingPopulation,
            _ => return None,
        })
    }

    /// Whether a field of this kind may be `len` bytes long.
    fn fits(self, len: u16) -> bool {
        match self {
            Self::SourceV4 | Self::DestinationV4 => len == 4,
            Self::SourceV6 | Self::DestinationV6 => len == 16,
            Self::SourcePort | Self::DestinationPort | Self::IcmpTypeCode | Self::TcpFlags => {
                (1..=2).contains(&len)
            }
            Self::Protocol => len == 1,
            _ => (1..=8).contains(&len),
        }
    }

    /// Fields only flow pairing reads: one with an impossible length is skipped rather than
    /// breaking the template, so templates that gave volumes before still do.
    const fn optional(self) -> bool {
        matches!(
            self,
            Self::DestinationV4
                | Self::DestinationV6
                | Self::SourcePort
                | Self::DestinationPort
                | Self::IcmpTypeCode
                | Self::Protocol
                | Self::TcpFlags
                | Self::SystemInitMs
        )
    }

    const fn slot(self, slots: &mut Slots) -> &mut Slot {
        match self {
            Self::SourceV4 => &mut slots.source_v4,
            Self::SourceV6 => &mut slots.source_v6,
            Self::DestinationV4 => &mut slots.destination_v4,
            Self::DestinationV6 => &mut slots.destination_v6,
            Self::SourcePort => &mut slots.source_port,
            Self::DestinationPort => &mut slots.destination_port,
            Self::IcmpTypeCode => &mut slots.icmp_type_code,
            Self::Protocol => &mut slots.protocol,
            Self::TcpFlags => &mut slots.tcp_flags,
            Self::SystemInitMs => &mut slots.system_init_ms,
            Self::Octets => &mut slots.octets,
            Self::Packets => &mut slots.packets,
            Self::StartUptime => &mut slots.start_uptime,
            Self::EndUptime => &mut slots.end_uptime,
            Self::StartSecs => &mut slots.start_secs,
            Self::EndSecs => &mut slots.end_secs,
            Self::StartMs => &mut slots.start_ms,
            Self::EndMs => &mut slots.end_ms,
            Self::DurationMs => &mut slots.duration_ms,
            Self::Direction => &mut slots.direction,
            Self::IngressInterface => &mut slots.ingress_interface,
            Self::SamplingInterval => &mut slots.sampling_interval,
            Self::SamplerRandomInterval => &mut slots.sampler_random_interval,
            Self::SamplerId => &mut slots.sampler_id,
            Self::SelectorId => &mut slots.selector_id,
            Self::PacketInterval => &mut slots.packet_interval,
            Self::PacketSpace => &mut slots.packet_space,
            Self::SamplingSize => &mut slots.sampling_size,
            Self::SamplingPopulation => &mut slots.sampling_population,
        }
    }
}

/// One field of a template with variable-length fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FieldLayout {
    /// [`VARIABLE_LENGTH`] or the fixed length.
    len: u16,
    target: Option<Target>,
}

/// How to find the fields we read in a template's records.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    /// Every record is `record_len` bytes, the fields always at the same place.
    Fixed { record_len: usize, slots: Slots },
    /// Records with variable-length fields: walked part by part (a variable field, a field
    /// we read, or a run of fixed fields we skip).
    Variable {
        min_record_len: usize,
        fields: Box<[FieldLayout]>,
    },
    /// Records can be framed, but a field we read has an impossible length: their data is
    /// dropped and counted (`bad_template`).
    Broken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TemplateKind {
    Data,
    Options,
}

#[derive(Debug)]
struct Template {
    kind: TemplateKind,
    layout: Layout,
    refreshed_secs: u64,
}

/// Sampling rates an exporter announced, by observation domain; used = announced or read for
/// a record.
#[derive(Debug)]
struct Sampling {
    /// The last rate each domain announced, for records that name no sampler.
    latest: GroupedLru<(), DomainKey, Rate>,
    /// By domain, then (information element, sampler or selector id).
    by_sampler: GroupedLru<DomainKey, (u16, u64), Rate>,
}

impl Sampling {
    fn new(max_domains: usize) -> Self {
        Self {
            latest: GroupedLru::new(max_domains, max_domains),
            by_sampler: GroupedLru::new(MAX_SAMPLERS_PER_DOMAIN, MAX_SAMPLERS_PER_EXPORTER),
        }
    }
}

/// A data set that came before its template.
#[derive(Debug)]
struct HeldSet {
    key: TemplateKey,
    arrived_secs: u64,
    body: Vec<u8>,
}

/// One field specifier from a template record.
#[derive(Clone, Copy, Debug)]
struct FieldSpec {
    element_id: u16,
    /// Enterprise-specific: not the IANA element of that number, so never read.
    enterprise: bool,
    /// A NetFlow v9 scope field: its type is a scope kind, not an element, so never read.
    v9_scope: bool,
    len: u16,
}

/// The field specifiers of one template record, already checked to be complete.
#[derive(Clone, Debug)]
struct FieldSpecs<'a> {
    bytes: &'a [u8],
    ipfix: bool,
    v9_scope_fields: usize,
}

impl Iterator for FieldSpecs<'_> {
    type Item = FieldSpec;

    fn next(&mut self) -> Option<FieldSpec> {
        let id = read_u16(self.bytes, 0)?;
        let len = read_u16(self.bytes, 2)?;
        let enterprise = self.ipfix && id & ENTERPRISE_BIT != 0;
        self.bytes = self.bytes.get(if enterprise { 8 } else { 4 }..)?;
        let v9_scope = self.v9_scope_fields > 0;
        self.v9_scope_fields = self.v9_scope_fields.saturating_sub(1);
        Some(FieldSpec {
            element_id: if enterprise { id & !ENTERPRISE_BIT } else { id },
            enterprise,
            v9_scope,
            len,
        })
    }
}

/// The length in bytes of `count` field specifiers at the start of `bytes`.
fn field_specs_len(bytes: &[u8], count: usize, ipfix: bool) -> Result<usize, ErrorKind> {
    if !ipfix {
        return count
            .checked_mul(4)
            .filter(|&len| len <= bytes.len())
            .ok_or(ErrorKind::Truncated);
    }
    let mut len = 0;
    for _ in 0..count {
        let id = read_u16(bytes, len).ok_or(ErrorKind::Truncated)?;
        len += if id & ENTERPRISE_BIT != 0 { 8 } else { 4 };
        if len > bytes.len() {
            return Err(ErrorKind::Truncated);
        }
    }
    Ok(len)
}

/// Compiles field specifiers into a [`Layout`]; `Err` for templates that cannot frame records.
fn compile(specs: &FieldSpecs<'_>, max_record_len: usize) -> Result<Layout, ErrorKind> {
    let mut slots = Slots::default();
    let mut min_record_len = 0usize;
    let mut variable = false;
    let mut broken = false;
    for spec in specs.clone() {
        if spec.len == 0 {
            return Err(ErrorKind::BadTemplate);
        }
        let target = readable_target(spec);
        if specs.ipfix && spec.len == VARIABLE_LENGTH {
            variable = true;
            min_record_len += 1;
            // Fields we read have fixed sizes.
            broken |= target.is_some();
            continue;
        }
        if let Some(target) = target {
            if !target.fits(spec.len) {
                broken = true;
            }
            let slot = target.slot(&mut slots);
            // A repeated field: the first one counts. Past a variable field the offsets
            // are wrong, but then these slots are not used.
            if slot.len == 0
                && let Ok(start) = u16::try_from(min_record_len)
            {
                *slot = Slot {
                    start,
                    len: spec.len,
                };
            }
        }
        min_record_len += usize::from(spec.len);
    }
    if min_record_len == 0 || min_record_len > max_record_len {
        return Err(ErrorKind::BadTemplate);
    }
    if broken {
        return Ok(Layout::Broken);
    }
    if !variable {
        return Ok(Layout::Fixed {
            record_len: min_record_len,
            slots,
        });
    }
    // Fields we skip, one after another, are one part: what the layout holds is bounded by
    // the variable fields and the fields we read, not by everything the template lists.
    let mut fields: Vec<FieldLayout> = Vec::new();
    // As in fixed layouts, the first of a repeated field counts; the others are skipped
    // (and so merge into runs), so repeats do not cost parts.
    let mut taken = Slots::default();
    for spec in specs.clone() {
        let target = readable_target(spec).filter(|target| {
            let slot = target.slot(&mut taken);
            let first = slot.len == 0;
            slot.len = 1;
            first
        });
        let skipped = target.is_none() && spec.len != VARIABLE_LENGTH;
        if skipped
            && let Some(last) = fields.last_mut()
            && last.target.is_none()
            && last.len != VARIABLE_LENGTH
        {
            // Below min_record_len, so below a datagram and never VARIABLE_LENGTH.
            last.len = u16::try_from(usize::from(last.len) + usize::from(spec.len))
                .map_err(|_| ErrorKind::BadTemplate)?;
            continue;
        }
        if fields.len() == MAX_VARIABLE_LAYOUT_PARTS {
            return Err(ErrorKind::BadTemplate);
        }
        fields.push(FieldLayout {
            len: spec.len,
            target,
        });
    }
    Ok(Layout::Variable {
        min_record_len,
        fields: fields.into_boxed_slice(),
    })
}

fn readable_target(spec: FieldSpec) -> Option<Target> {
    if spec.enterprise || spec.v9_scope {
        None
    } else {
        Target::of(spec.element_id).filter(|target| !target.optional() || target.fits(spec.len))
    }
}

/// The fields of the variable-length record at the start of `bytes`, and its length.
fn variable_record(fields: &[FieldLayout], bytes: &[u8]) -> Option<(Slots, usize)> {
    let mut slots = Slots::default();
    let mut at = 0usize;
    for field in fields {
        let len = if field.len == VARIABLE_LENGTH {
            let short = *bytes.get(at)?;
            at += 1;
            if short < 255 {
                usize::from(short)
            } else {
                let long = read_u16(bytes, at)?;
                at += 2;
                usize::from(long)
            }
        } else {
            usize::from(field.len)
        };
        if let Some(target) = field.target {
            *target.slot(&mut slots) = Slot {
                start: u16::try_from(at).ok()?,
                len: field.len,
            };
        }
        at += len;
        if at > bytes.len() {
            return None;
        }
    }
    Some((slots, at))
}

/// Calls `each` with every record of a data set and where its fields are.
fn for_each_record(
    layout: &Layout,
    body: &[u8],
    mut each: impl FnMut(&[u8], &Slots),
) -> Result<(), ErrorKind> {
    match layout {
        Layout::Fixed { record_len, slots } => {
            let mut records = body.chunks_exact(*record_len);
            for record in &mut records {
                each(record, slots);
            }
            // Padding aligns to 4 bytes; more left over is a cut record.
            if records.remainder().len() >= 4 {
                return Err(ErrorKind::Truncated);
            }
        }
        Layout::Variable {
            min_record_len,
            fields,
        } => {
            // Padding is shorter than any record (RFC 7011 section 3.3.1).
            let mut rest = body;
            while rest.len() >= *min_record_len {
                let (slots, len) = variable_record(fields, rest).ok_or(ErrorKind::Truncated)?;
                let (record, tail) = rest.split_at_checked(len).ok_or(ErrorKind::Truncated)?;
                each(record, &slots);
                rest = tail;
            }
        }
        Layout::Broken => return Err(ErrorKind::BadTemplate),
    }
    Ok(())
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let pair = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let quad = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]))
}

/// When a message was exported, by its header.
#[derive(Clone, Copy, Debug)]
struct ExportClock {
    /// The exporter's clock (v9 unix_secs, IPFIX export time); 0 when it does not know.
    unix_secs: u32,
    /// NetFlow v9 sysUptime: what FIRST/LAST_SWITCHED count from.
    uptime_ms: Option<u32>,
}

/// Per-datagram facts the set decoders need.
struct Context<'a> {
    settings: &'a DecoderSettings,
    now_secs: u64,
    domain: DomainKey,
    clock: ExportClock,
    override_rate: Option<Rate>,
    max_record_len: usize,
}

impl Context<'_> {
    const fn expired(&self, since_secs: u64, timeout_secs: u64) -> bool {
        self.now_secs.saturating_sub(since_secs) > timeout_secs
    }
}

/// Everything known about one exporter.
#[derive(Debug)]
struct Exporter {
    stats: ExporterStats,
    last_seen_secs: u64,
    /// By domain and template id; used = announced or used to decode.
    templates: GroupedLru<DomainKey, u16, Template>,
    sampling: Sampling,
    held: VecDeque<HeldSet>,
    held_bytes: usize,
}

impl Exporter {
    fn new(settings: &DecoderSettings) -> Self {
        Self {
            stats: ExporterStats::default(),
            last_seen_secs: 0,
            templates: GroupedLru::new(
                settings.max_templates_per_domain,
                settings.max_templates_per_exporter,
            ),
            sampling: Sampling::new(settings.max_templates_per_exporter),
            held: VecDeque::new(),
            held_bytes: 0,
        }
    }

    fn decode_sets(
        &mut self,
        context: &Context<'_>,
        mut sets: &[u8],
        summary: &mut DecodeSummary,
        sink: &mut impl FnMut(FlowRecord),
    ) {
        while !sets.is_empty() {
            let (Some(set_id), Some(set_len)) = (read_u16(sets, 0), read_u16(sets, 2)) else {
                summary.errors.add(ErrorKind::Truncated);
                return;
            };
            let set_len = usize::from(set_len);
            let Some(body) = sets.get(SET_HEADER_LEN..set_len) else {
                summary.errors.add(ErrorKind::BadSet);
                return;
            };
            match (context.domain.ipfix, set_id) {
                (false, V9_TEMPLATE_SET) => self.v9_templates(context, body, summary, sink),
                (false, V9_OPTIONS_TEMPLATE_SET) => {
                    self.v9_options_templates(context, body, summary, sink);
                }
                (true, IPFIX_TEMPLATE_SET | IPFIX_OPTIONS_TEMPLATE_SET) => {
                    self.ipfix_templates(context, set_id, body, summary, sink);
                }
                (_, FIRST_DATA_SET_ID..) => self.data_set(context, set_id, body, summary, sink),
                // Reserved set ids: skipped.
                _ => {}
            }
            sets = sets.get(set_len..).unwrap_or_default();
        }
    }

    fn v9_templates(
        &mut self,
        context: &Context<'_>,
        mut body: &[u8],
        summary: &mut DecodeSummary,
        sink: &mut impl FnMut(FlowRecord),
    ) {
        while let (Some(template_id), Some(count)) = (read_u16(body, 0), read_u16(body, 2)) {
            if template_id == 0 && count == 0 {
                return; // Padding.
            }
            let rest = body.get(4..).unwrap_or_default();
            let specs_len = match field_specs_len(rest, usize::from(count), false) {
                Ok(len) => len,
                Err(kind) => {
                    summary.errors.add(kind);
                    return;
                }
            };
            let (specs, tail) = rest.split_at(specs_len);
            body = tail;
            if template_id < FIRST_DATA_SET_ID || count == 0 {
                summary.errors.add(ErrorKind::BadTemplate);
                continue;
            }
            let specs = FieldSpecs {
                bytes: specs,
                ipfix: false,
                v9_scope_fields: 0,
            };
            let layout = compile(&specs, context.max_record_len);
            self.install(
                context,
                template_id,
                TemplateKind::Data,
                layout,
                summary,
                sink,
            );
        }
    }

    fn v9_options_templates(
        &mut self,
        context: &Context<'_>,
        mut body: &[u8],
        summary: &mut DecodeSummary,
        sink: &mut impl FnMut(FlowRecord),
    ) {
        while let (Some(template_id), Some(scope_len), Some(options_len)) =
            (read_u16(body, 0), read_u16(body, 2), read_u16(body, 4))
        {
            if template_id == 0 {
                return; // Padding.
            }
            let (scope_len, options_len) = (usize::from(scope_len), usize::from(options_len));
            if !scope_len.is_multiple_of(4)
                || !options_len.is_multiple_of(4)
                || template_id < FIRST_DATA_SET_ID
            {
                // Cannot tell where the next one starts.
                summary.errors.add(ErrorKind::BadTemplate);
                return;
            }
            let Some((specs, tail)) = body
                .get(6..)
                .and_then(|rest| rest.split_at_checked(scope_len + options_len))
            else {
                summary.errors.add(ErrorKind::Truncated);
                return;
            };
            body = tail;
            let specs = FieldSpecs {
                bytes: specs,
                ipfix: false,
                v9_scope_fields: scope_len / 4,
            };
            let layout = compile(&specs, context.max_record_len);
            self.install(
                context,
                template_id,
                TemplateKind::Options,
                layout,
                summary,
                sink,
            );
        }
    }

    fn ipfix_templates(
        &mut self,
        context: &Context<'_>,
        set_id: u16,
        mut body: &[u8],
        summary: &mut DecodeSummary,
        sink: &mut impl FnMut(FlowRecord),
    ) {
        let kind = if set_id == IPFIX_OPTIONS_TEMPLATE_SET {
            TemplateKind::Options
        } else {
            TemplateKind::Data
        };
        while let (Some(template_id), Some(count)) = (read_u16(body, 0), read_u16(body, 2)) {
            if template_id == 0 && count == 0 {
                return; // Padding.
            }
            if count == 0 {
                self.withdraw(context, set_id, template_id, kind, summary);
                body = body.get(4..).unwrap_or_default();
                continue;
            }
            let (header_len, scope_count) = match kind {
                TemplateKind::Data => (4, None),
                TemplateKind::Options => (6, read_u16(body, 4)),
            };
            let Some(rest) = body.get(header_len..) else {
                summary.errors.add(ErrorKind::Truncated);
                return;
            };
            let specs_len = match field_specs_len(rest, usize::from(count), true) {
                Ok(len) => len,
                Err(kind) => {
                    summary.errors.add(kind);
                    return;
                }
            };
            let (specs, tail) = rest.split_at(specs_len);
            body = tail;
            let bad_scope = scope_count.is_some_and(|scope| scope == 0 || scope > count);
            if template_id < FIRST_DATA_SET_ID || bad_scope {
                summary.errors.add(ErrorKind::BadTemplate);
                continue;
            }
            let specs = FieldSpecs {
                bytes: specs,
                ipfix: true,
                v9_scope_fields: 0,
            };
            let layout = compile(&specs, context.max_record_len);
            self.install(context, template_id, kind, layout, summary, sink);
        }
    }

    /// IPFIX template withdrawal: one template, or all of a kind when the id is the set id.
    fn withdraw(
        &mut self,
        context: &Context<'_>,
        set_id: u16,
        template_id: u16,
        kind: TemplateKind,
        summary: &mut DecodeSummary,
    ) {
        if template_id == set_id {
            self.templates
                .retain_group(context.domain, |_, template| template.kind != kind);
        } else if template_id >= FIRST_DATA_SET_ID {
            let _: Option<Template> = self.templates.remove(context.domain, template_id);
        } else {
            summary.errors.add(ErrorKind::BadTemplate);
        }
    }

    /// Stores (or refreshes) a compiled template, then decodes the data held for it.
    fn install(
        &mut self,
        context: &Context<'_>,
        template_id: u16,
        kind: TemplateKind,
        compiled: Result<Layout, ErrorKind>,
        summary: &mut DecodeSummary,
        sink: &mut impl FnMut(FlowRecord),
    ) {
        let key = TemplateKey {
            domain: context.domain,
            template_id,
        };
        let layout = match compiled {
            Ok(layout) => layout,
            Err(error) => {
                summary.errors.add(error);
                // Whatever the id meant before is no longer true.
                let _: Option<Template> = self.templates.remove(key.domain, template_id);
                return;
            }
        };
        if layout == Layout::Broken {
            summary.errors.add(ErrorKind::BadTemplate);
        }
        // Announcing counts as a use: a refreshed template is kept over a flood's.
        if let Some(template) = self.templates.get_mut(key.domain, template_id) {
            template.refreshed_secs = context.now_secs;
            if template.kind == kind && template.layout == layout {
                return; // A plain refresh: nothing is held for a template we have.
            }
            template.kind = kind;
            template.layout = layout;
        } else {
            let template = Template {
                kind,
                layout,
                refreshed_secs: context.now_secs,
            };
            match self.templates.insert(key.domain, template_id, template) {
                Insert::Stored { evicted } => summary.errors.add_many(ErrorKind::Evicted, evicted),
                Insert::Refused => {
                    summary.errors.add(ErrorKind::TooMany);
                    return;
                }
            }
        }
        self.release_held(context, key, summary, sink);
    }

    fn release_held(
        &mut self,
        context: &Context<'_>,
        key: TemplateKey,
        summary: &mut DecodeSummary,
        sink: &mut impl FnMut(FlowRecord),
    ) {
        let mut index = 0;
        while index < self.held.len() {
            if self.held.get(index).is_none_or(|held| held.key != key) {
                index += 1;
                continue;
            }
            let Some(held) = self.held.remove(index) else {
                return;
            };
            self.held_bytes = self.held_bytes.saturating_sub(held.body.len());
            if let Some(template) = self.templates.get(key.domain, key.template_id) {
                decode_records(
                    context,
                    template,
                    key.domain,
                    &mut self.sampling,
                    &held.body,
                    summary,
                    sink,
                );
            }
        }
    }

    fn data_set(
        &mut self,
        context: &Context<'_>,
        template_id: u16,
        body: &[u8],
        summary: &mut DecodeSummary,
        sink: &mut impl FnMut(FlowRecord),
    ) {
        let key = TemplateKey {
            domain: context.domain,
            template_id,
        };
        let timeout = context.settings.template_timeout_secs;
        // Decoding with a template counts as a use; an expired one is not used but forgotten.
        if self
            .templates
            .touch(key.domain, template_id)
            .is_some_and(|template| context.expired(template.refreshed_secs, timeout))
        {
            let _: Option<Template> = self.templates.remove(key.domain, template_id);
        }
        match self.templates.get(key.domain, template_id) {
            Some(template) => decode_records(
                context,
                template,
                key.domain,
                &mut self.sampling,
                body,
                summary,
                sink,
            ),
            None => self.hold(context, key, body, summary),
        }
    }

    /// Keeps a data set until its template comes, within the bounds.
    fn hold(
        &mut self,
        context: &Context<'_>,
        key: TemplateKey,
        body: &[u8],
        summary: &mut DecodeSummary,
    ) {
        if body.is_empty() {
            return;
        }
        let settings = context.settings;
        if settings.max_held_sets == 0 || body.len() > settings.max_held_bytes {
            summary.errors.add(ErrorKind::NoTemplate);
            return;
        }
        // An exporter that never sends its template lands here for every set: reuse the
        // buffer of what is dropped.
        let mut buffer = Vec::new();
        while self.held.len() >= settings.max_held_sets
            || self.held_bytes + body.len() > settings.max_held_bytes
        {
            let Some(oldest) = self.held.pop_front() else {
                break;
            };
            self.held_bytes = self.held_bytes.saturating_sub(oldest.body.len());
            summary.errors.add(ErrorKind::NoTemplate);
            buffer = oldest.body;
        }
        buffer.clear();
        buffer.extend_from_slice(body);
        self.held_bytes += body.len();
        self.held.push_back(HeldSet {
            key,
            arrived_secs: context.now_secs,
            body: buffer,
        });
    }

    fn expire_held(&mut self, context: &Context<'_>, summary: &mut DecodeSummary) {
        let hold_secs = context.settings.hold_secs;
        while let Some(oldest) = self.held.front() {
            if !context.expired(oldest.arrived_secs, hold_secs) {
                break;
            }
            self.held_bytes = self.held_bytes.saturating_sub(oldest.body.len());
            self.held.pop_front();
            summary.errors.add(ErrorKind::NoTemplate);
        }
    }
}

/// Decodes the records of one data set with their template.
fn decode_records(
    context: &Context<'_>,
    template: &Template,
    domain: DomainKey,
    sampling: &mut Sampling,
    body: &[u8],
    summary: &mut DecodeSummary,
    sink: &mut impl FnMut(FlowRecord),
) {
    let result = match template.kind {
        TemplateKind::Data => {
            // The domain's latest rate is looked up (a use) at most once per set.
            let mut latest = None;
            for_each_record(&template.layout, body, |record, slots| {
                match flow_record(context, sampling, domain, &mut latest, record, slots) {
                    Some(flow) => {
                        summary.records += 1;
                        sink(flow);
                    }
                    None => summary.filtered += 1,
                }
            })
        }
        TemplateKind::Options => {
            for_each_record(
                &template.layout,
                body,
                |record, slots| match learn_sampling(sampling, domain, record, slots) {
                    Ok(evicted) => summary.errors.add_many(ErrorKind::Evicted, evicted),
                    Err(error) => summary.errors.add(error),
                },
            )
        }
    };
    if let Err(error) = result {
        summary.errors.add(error);
    }
}

/// The record a data record gives, or `None` when it is filtered out. `latest` caches the
/// domain's latest announced rate for the set (outer `None`: not looked up yet).
fn flow_record(
    context: &Context<'_>,
    sampling: &mut Sampling,
    domain: DomainKey,
    latest: &mut Option<Option<Rate>>,
    record: &[u8],
    slots: &Slots,
) -> Option<FlowRecord> {
    let settings = context.settings;
    if settings.direction == DirectionFilter::Ingress
        && slots
            .direction
            .uint(record)
            .is_some_and(|direction| direction != 0)
    {
        return None;
    }
    if let Some(interfaces) = &settings.ingress_interfaces {
        let interface = slots.ingress_interface.uint(record)?;
        if !u32::try_from(interface).is_ok_and(|interface| interfaces.contains(&interface)) {
            return None;
        }
    }
    let source = address(slots.source_v4.ipv4(record), slots.source_v6.ipv6(record))?;
    // Only delta counts: running totals (octetTotalCount) would count a re-exported long flow
    // again at every export.
    let bytes = slots.octets.uint(record).unwrap_or(0);
    let packets = slots.packets.uint(record).unwrap_or(0);
    if bytes == 0 && packets == 0 {
        return None;
    }
    let rate = context
        .override_rate
        .or_else(|| record_rate(sampling, domain, latest, record, slots))
        .unwrap_or(Rate::ONE);
    let destination = address(
        slots.destination_v4.ipv4(record),
        slots.destination_v6.ipv6(record),
    )
    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // Checked at compile time: ports and flags are 1 or 2 bytes, the protocol 1.
    let narrow = |slot: Slot| {
        slot.uint(record)
            .and_then(|value| u16::try_from(value).ok())
    };
    let destination_port = narrow(slots.destination_port)
        .or_else(|| narrow(slots.icmp_type_code))
        .unwrap_or(0);
    Some(FlowRecord {
        source,
        destination,
        source_port: narrow(slots.source_port).unwrap_or(0),
        destination_port,
        protocol: slots
            .protocol
            .uint(record)
            .and_then(|value| u8::try_from(value).ok())
            .unwrap_or(0),
        // IPFIX's 16-bit tcpControlBits keeps the classic flags in its low byte.
        tcp_flags: narrow(slots.tcp_flags).map(|flags| flags.to_be_bytes()[1]),
        bytes: rate.scale(bytes),
        packets: rate.scale(packets),
        duration_ms: duration_ms(record, slots),
        end_unix_ms: end_unix_ms(context.clock, record, slots),
    })
}

/// The address of a record from its IPv4 and IPv6 fields, IPv4-mapped given as IPv4.
fn address(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Option<IpAddr> {
    // Templates carrying both families fill the other one with zeros.
    Some(match (v4, v6) {
        (Some(v4), None) => IpAddr::V4(v4),
        (Some(v4), Some(_)) if !v4.is_unspecified() => IpAddr::V4(v4),
        (_, Some(v6)) => IpAddr::V6(v6).to_canonical(),
        (None, None) => return None,
    })
}

/// When the flow ended, Unix milliseconds, from whichever end timestamp its template has.
fn end_unix_ms(clock: ExportClock, record: &[u8], slots: &Slots) -> Option<u64> {
    // A timestamp of 0 is an exporter that did not fill the field in.
    let known = |value: u64| (value > 0).then_some(value);
    if let Some(end) = slots.end_ms.uint(record) {
        return known(end);
    }
    if let Some(end) = slots.end_secs.uint(record) {
        return known(end).map(|secs| secs.saturating_mul(1000));
    }
    let end = u32::try_from(slots.end_uptime.uint(record)? & 0xffff_ffff).ok()?;
    if let Some(init) = slots.system_init_ms.uint(record) {
        return known(init).map(|init| init.saturating_add(u64::from(end)));
    }
    let uptime = clock.uptime_ms?;
    if clock.unix_secs == 0 {
        return None;
    }
    // How long before the export the flow ended; the 32-bit uptime wraps after 49.7 days,
    // and an end a little after the export (exporters round) is taken as at the export.
    let age = uptime.wrapping_sub(end);
    let age = if age > u32::MAX / 2 { 0 } else { age };
    Some((u64::from(clock.unix_secs) * 1000).saturating_sub(u64::from(age)))
}

/// end - start of a record, from whichever pair of timestamps its template has.
fn duration_ms(record: &[u8], slots: &Slots) -> u32 {
    let pair = |start: Slot, end: Slot| Some((start.uint(record)?, end.uint(record)?));
    let millis = if let Some((start, end)) = pair(slots.start_uptime, slots.end_uptime) {
        // System uptime in milliseconds, 32 bits: it wraps after 49.7 days.
        let (start, end) = (start & 0xffff_ffff, end & 0xffff_ffff);
        Some(end.wrapping_sub(start) & 0xffff_ffff)
    } else if let Some((start, end)) = pair(slots.start_ms, slots.end_ms) {
        Some(end.saturating_sub(start))
    } else if let Some((start, end)) = pair(slots.start_secs, slots.end_secs) {
        Some(end.saturating_sub(start).saturating_mul(1000))
    } else {
        slots.duration_ms.uint(record)
    };
    u32::try_from(millis.unwrap_or(0).min(MAX_FLOW_DURATION_MS)).unwrap_or(u32::MAX)
}

/// The rate of a data record: its own interval, its sampler's, or the domain's latest.
fn record_rate(
    sampling: &mut Sampling,
    domain: DomainKey,
    latest: &mut Option<Option<Rate>>,
    record: &[u8],
    slots: &Slots,
) -> Option<Rate> {
    let own = slots
        .sampling_interval
        .uint(record)
        .or_else(|| slots.sampler_random_interval.uint(record))
        .and_then(Rate::every);
    if own.is_some() {
        return own;
    }
    // Most exporters announce no sampling: no lookups then.
    if sampling.latest.is_empty() {
        return None;
    }
    let by_sampler = record_sampler(record, slots)
        .and_then(|sampler| sampling.by_sampler.touch(domain, sampler).copied());
    by_sampler.or_else(|| *latest.get_or_insert_with(|| sampling.latest.touch((), domain).copied()))
}

/// The (information element, id) of the sampler or selector a record names.
fn record_sampler(record: &[u8], slots: &Slots) -> Option<(u16, u64)> {
    slots
        .sampler_id
        .uint(record)
        .map(|id| (element::SAMPLER_ID, id))
        .or_else(|| {
            let id = slots.selector_id.uint(record)?;
            Some((element::SELECTOR_ID, id))
        })
}

/// Remembers the sampling rate an options record announces; how many older rates that
/// evicted.
fn learn_sampling(
    sampling: &mut Sampling,
    domain: DomainKey,
    record: &[u8],
    slots: &Slots,
) -> Result<usize, ErrorKind> {
    let interval = slots
        .sampling_interval
        .uint(record)
        .or_else(|| slots.sampler_random_interval.uint(record))
        .and_then(Rate::every);
    let packet_interval = || {
        let selected = slots.packet_interval.uint(record)?;
        let skipped = slots.packet_space.uint(record)?;
        Rate::ratio(selected.saturating_add(skipped), selected)
    };
    let size_population = || {
        let size = slots.sampling_size.uint(record)?;
        let population = slots.sampling_population.uint(record)?;
        Rate::ratio(population, size)
    };
    let Some(rate) = interval.or_else(packet_interval).or_else(size_population) else {
        return Ok(0); // Options about something else.
    };
    let Insert::Stored { evicted } = sampling.latest.insert((), domain, rate) else {
        return Err(ErrorKind::TooMany);
    };
    let Some(sampler) = record_sampler(record, slots) else {
        return Ok(evicted);
    };
    match sampling.by_sampler.insert(domain, sampler, rate) {
        Insert::Stored { evicted: more } => Ok(evicted + more),
        Insert::Refused => Err(ErrorKind::TooMany),
    }
}

/// The parts of a message header the decoder uses.
struct Header<'a> {
    domain: DomainKey,
    header_len: usize,
    clock: ExportClock,
    sets: &'a [u8],
}

fn parse_header(datagram: &[u8]) -> Result<Header<'_>, ErrorKind> {
    let version = read_u16(datagram, 0).ok_or(ErrorKind::Truncated)?;
    let (ipfix, header_len, domain_at) = match version {
        NETFLOW_V9 => (false, V9_HEADER_LEN, 16),
        IPFIX => (true, IPFIX_HEADER_LEN, 12),
        _ => return Err(ErrorKind::BadVersion),
    };
    let sets = datagram.get(header_len..).ok_or(ErrorKind::Truncated)?;
    let domain = read_u32(datagram, domain_at).ok_or(ErrorKind::Truncated)?;
    if ipfix && read_u16(datagram, 2).map(usize::from) != Some(datagram.len()) {
        return Err(ErrorKind::BadSet);
    }
    // Present: the header lengths were checked above.
    let clock = if ipfix {
        ExportClock {
            unix_secs: read_u32(datagram, 4).unwrap_or(0),
            uptime_ms: None,
        }
    } else {
        ExportClock {
            unix_secs: read_u32(datagram, 8).unwrap_or(0),
            uptime_ms: read_u32(datagram, 4),
        }
    };
    Ok(Header {
        domain: DomainKey { ipfix, id: domain },
        header_len,
        clock,
        sets,
    })
}

/// Decodes NetFlow v9 and IPFIX datagrams, keeping templates and statistics per exporter.
#[derive(Debug, Default)]
pub struct FlowDecoder {
    settings: DecoderSettings,
    exporters: HashMap<IpAddr, Exporter>,
    /// Errors of datagrams from exporters that are not tracked (refused or never valid).
    unattributed: ErrorCounts,
}

impl FlowDecoder {
    pub fn new(mut settings: DecoderSettings) -> Self {
        // Exporters are looked up by canonical address.
        settings.sampling_overrides = settings
            .sampling_overrides
            .into_iter()
            .map(|(address, rate)| (address.to_canonical(), rate))
            .collect();
        Self {
            settings,
            exporters: HashMap::new(),
            unattributed: ErrorCounts::default(),
        }
    }

    pub const fn settings(&self) -> &DecoderSettings {
        &self.settings
    }

    /// Decodes one datagram from `exporter`, calling `sink` with each accepted record.
    /// `now_secs` is any seconds clock that does not go back (it times templates and held
    /// data).
    pub fn decode(
        &mut self,
        exporter: SocketAddr,
        datagram: &[u8],
        now_secs: u64,
        mut sink: impl FnMut(FlowRecord),
    ) -> DecodeSummary {
        let address = exporter.ip().to_canonical();
        let mut summary = DecodeSummary::default();
        let header = match parse_header(datagram) {
            Ok(header) => header,
            Err(error) => {
                summary.errors.add(error);
                match self.exporters.get_mut(&address) {
                    Some(known) => {
                        known.stats.datagrams += 1;
                        known.stats.errors.merge(&summary.errors);
                    }
                    None => self.unattributed.merge(&summary.errors),
                }
                return summary;
            }
        };
        if !self.make_room_for(address, now_secs) {
            summary.errors.add(ErrorKind::TooMany);
            self.unattributed.merge(&summary.errors);
            return summary;
        }
        let context = Context {
            settings: &self.settings,
            now_secs,
            domain: header.domain,
            clock: header.clock,
            override_rate: self
                .settings
                .sampling_overrides
                .get(&address)
                .map(|&rate| Rate::every(rate).unwrap_or(Rate::ONE)),
            max_record_len: MAX_DATAGRAM_LEN - header.header_len - SET_HEADER_LEN,
        };
        let known = self
            .exporters
            .entry(address)
            .or_insert_with(|| Exporter::new(&self.settings));
        known.last_seen_secs = now_secs;
        known.expire_held(&context, &mut summary);
        known.decode_sets(&context, header.sets, &mut summary, &mut sink);
        let stats = &mut known.stats;
        stats.datagrams += 1;
        stats.records = stats.records.saturating_add(summary.records);
        stats.filtered = stats.filtered.saturating_add(summary.filtered);
        stats.errors.merge(&summary.errors);
        stats.templates = u64::try_from(known.templates.len()).unwrap_or(u64::MAX);
        stats.held_sets = u64::try_from(known.held.len()).unwrap_or(u64::MAX);
        summary
    }

    /// Whether `address` is or can now be tracked: when full, exporters silent for the
    /// template timeout are forgotten.
    fn make_room_for(&mut self, address: IpAddr, now_secs: u64) -> bool {
        if self.exporters.contains_key(&address) {
            return true;
        }
        let limit = self.settings.max_exporters;
        if self.exporters.len() >= limit {
            let timeout = self.settings.template_timeout_secs;
            self.exporters
                .retain(|_, known| now_secs.saturating_sub(known.last_seen_secs) <= timeout);
        }
        self.exporters.len() < limit
    }

    /// Statistics per exporter address.
    pub fn exporter_stats(&self) -> impl Iterator<Item = (IpAddr, &ExporterStats)> {
        self.exporters
            .iter()
            .map(|(&address, known)| (address, &known.stats))
    }

    /// Errors of datagrams from exporters not tracked: refused (`too_many`) or never sent a
    /// valid header.
    pub const fn unattributed_errors(&self) -> &ErrorCounts {
        &self.unattributed
    }

    pub fn exporter_count(&self) -> usize {
        self.exporters.len()
    }

    /// Templates held, over all exporters.
    pub fn template_count(&self) -> usize {
        self.exporters
            .values()
            .map(|known| known.templates.len())
            .sum()
    }

    /// Data sets waiting for their template, over all exporters.
    pub fn held_set_count(&self) -> usize {
        self.exporters.values().map(|known| known.held.len()).sum()
    }
}
