//! Pairs the two directions of flows and counts, per source prefix, the flows that stay
//! unpaired: one-way requests (scans: nobody answered) and reflection (answers from classic
//! amplification ports that nobody here asked for).
//!
//! A router exporting flows exports each direction of a conversation as its own record.
//! [`FlowPairing`] keeps the records of the last [`PairingSettings::answer_window_ms`] in a
//! table keyed by the 5-tuple, normalised so that A→B and B→A land on the same entry. An entry
//! whose reverse direction came within the window is a pair, and is forgotten at the end of
//! the window; one whose reverse never came is judged then:
//!
//! - **reflection**: UDP from one of [`PairingSettings::reflection_ports`] (SSDP 1900, NTP
//!   123, DNS 53, memcached 11211, CLDAP 389), from outside to us, and no request of ours in
//!   the other direction. Answers to requests we did send are counted
//!   ([`PairingCounts::reflection_requested`]) but are not anomalies: querying a resolver is
//!   not being attacked. Reflection is judged before one-way, so a reflector is never blamed
//!   for a scan.
//! - **one-way**: a flow that can be a request (TCP with SYN, or whose flags are unknown; any
//!   UDP; ICMP / ICMPv6 echo request) from outside to us. The requester, the flow's source, is
//!   blamed. TCP without SYN (the middle of a connection exported after an active timeout, lone
//!   RSTs and ACKs: backscatter) and echo replies can only answer, and are never blamed. Other
//!   protocols and other ICMP types are not tracked.
//! - from us to outside: counted ([`PairingCounts::outbound_unanswered`]), not an anomaly of
//!   ours; between two outside hosts (transit) or two of ours: counted as ignored.
//!
//! "Us" is [`PairingSettings::local`]; without it every source may be outside, and every
//! unanswered request counts. Entries are judged by arrival time (`now_ms` of
//! [`FlowPairing::observe`]), not by the exporter's timestamps: the exporter's clock may be
//! wrong, and both directions of a conversation reach the collector within its export
//! timeouts anyway. An entry still inside its window at the end of an interval carries over.
//!
//! Flows are counted once per 5-tuple: a long flow exported again at every active timeout,
//! or a scanner retrying from the same source port, is one flow (with all its bytes).
//!
//! Sampled flows pair badly: at 1 in N, most reverse directions are not exported, and almost
//! everything looks one-way. Pair only unsampled (or lightly sampled) exports.
//!
//! Bounds: at most [`PairingSettings::max_tracked_flows`] entries; a new one beyond evicts the
//! oldest (first in, first out, which is also the one whose window ends first). An evicted
//! entry that was still unanswered is not reported, since its answer might still have come;
//! evictions are counted. An entry costs 88 bytes in the map and 42 in the queue; with the
//! map's buckets rounded up to a power of two and the queue's capacity doubling, a full table
//! of the default bound takes up to about 70 MiB (about 260 bytes a flow): lower the bound on
//! small hosts. The anomalies gathered in an interval are bounded by the same number of
//! (prefix, kind) keys (about 50 bytes each; beyond, counted as overflow), and each interval reports at most
//! [`PairingSettings::max_anomalies_per_kind`] per kind.
use std::{
    cmp::Reverse,
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use super::decode::FlowRecord;
use crate::{
    history::model::{Anomaly, AnomalyKind},
    prefix::{Prefix, PrefixError},
};

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const TCP_SYN: u8 = 0x02;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// [`PairingSettings::reflection_ports`] by default: SSDP, NTP, DNS, memcached, CLDAP.
pub const DEFAULT_REFLECTION_PORTS: [u16; 5] = [1900, 123, 53, 11211, 389];

/// How [`FlowPairing`] pairs and what it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingSettings {
    /// How long after a flow arrives its reverse direction may still come, in milliseconds.
    /// Exporters send a flow when it ends or at their active timeout (often a minute), so the
    /// window should cover their timeouts.
    pub answer_window_ms: u64,
    /// Flows (5-tuples) tracked at once; a new one beyond evicts the oldest.
    pub max_tracked_flows: usize,
    /// Sources are counted per prefix of this length: IPv4.
    pub prefix_len_v4: u8,
    /// And IPv6.
    pub prefix_len_v6: u8,
    /// Our prefixes: flows from outside into these are judged, flows from these out are not
    /// blamed on anyone. Empty: every source may be outside.
    pub local: Vec<Prefix>,
    /// UDP source ports whose unrequested flows to us are reflection.
    pub reflection_ports: Vec<u16>,
    /// Anomalies reported per interval and kind (each reflection port is a kind), most flows
    /// first.
    pub max_anomalies_per_kind: usize,
}

impl Default for PairingSettings {
    fn default() -> Self {
        Self {
            answer_window_ms: 60_000,
            max_tracked_flows: 262_144,
            prefix_len_v4: 24,
            prefix_len_v6: 64,
            local: Vec::new(),
            reflection_ports: DEFAULT_REFLECTION_PORTS.to_vec(),
            max_anomalies_per_kind: 100,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PairingError {
    #[error("invalid source prefix length for flow pairing")]
    PrefixLength(#[source] PrefixError),
}

/// What happened to the records and flows, per interval (or in total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PairingCounts {
    /// Records taken into the table (new flows and more records of tracked ones).
    pub tracked: u64,
    /// Records not paired: protocols other than TCP, UDP, ICMP echo; no destination address;
    /// a flow to itself.
    pub untracked: u64,
    /// Flows whose two directions met.
    pub matched: u64,
    /// Unanswered requests from outside: the one-way anomalies' flows.
    pub one_way: u64,
    /// Unrequested answers from reflection ports: the reflection anomalies' flows.
    pub reflection: u64,
    /// Answers from reflection ports to requests of ours: not anomalies.
    pub reflection_requested: u64,
    /// Unanswered flows from us to outside.
    pub outbound_unanswered: u64,
    /// Unanswered flows that blame nobody: answers without their request (TCP without SYN,
    /// echo replies), transit between outside hosts, flows between two of ours.
    pub ignored_unanswered: u64,
    /// Flows evicted to make room (or not tracked at all with a bound of 0); unanswered ones
    /// among them are not reported.
    pub evicted: u64,
    /// Anomalous flows not reported because the interval already held the bound of distinct
    /// (prefix, kind) keys.
    pub overflow: u64,
}

impl PairingCounts {
    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Self) {
        let Self {
            tracked,
            untracked,
            matched,
            one_way,
            reflection,
            reflection_requested,
            outbound_unanswered,
            ignored_unanswered,
            evicted,
            overflow,
        } = other;
        for (total, more) in [
            (&mut self.tracked, tracked),
            (&mut self.untracked, untracked),
            (&mut self.matched, matched),
            (&mut self.one_way, one_way),
            (&mut self.reflection, reflection),
            (&mut self.reflection_requested, reflection_requested),
            (&mut self.outbound_unanswered, outbound_unanswered),
            (&mut self.ignored_unanswered, ignored_unanswered),
            (&mut self.evicted, evicted),
            (&mut self.overflow, overflow),
        ] {
            *total = total.saturating_add(*more);
        }
    }
}

/// What [`FlowPairing::take_interval`] gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalAnomalies {
    /// Per source prefix and kind, most flows first (then most bytes).
    pub anomalies: Vec<Anomaly>,
    /// (prefix, kind) rows left out by [`PairingSettings::max_anomalies_per_kind`].
    pub truncated: u64,
    /// The interval's counts.
    pub counts: PairingCounts,
}

/// One end of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Endpoint {
    address: IpAddr,
    port: u16,
}

/// A 5-tuple with its ends in order, so both directions have the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    protocol: u8,
    low: Endpoint,
    high: Endpoint,
}

impl FlowKey {
    /// The end a direction comes from (0: from `low`).
    const fn source(&self, direction: usize) -> Endpoint {
        if direction == 0 { self.low } else { self.high }
    }

    const fn destination(&self, direction: usize) -> Endpoint {
        if direction == 0 { self.high } else { self.low }
    }
}

/// One direction of a tracked flow.
#[derive(Clone, Copy, Debug, Default)]
struct Side {
    seen: bool,
    /// Some record of this direction can be a request.
    asks: bool,
    bytes: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    deadline_ms: u64,
    sides: [Side; 2],
}

impl Entry {
    fn matched(&self) -> bool {
        self.sides.iter().all(|side| side.seen)
    }
}

/// The table key of a record, the direction it goes, and whether it can be a request;
/// `None` for records not paired.
fn classify(record: &FlowRecord) -> Option<(FlowKey, usize, bool)> {
    if record.source.is_unspecified() || record.destination.is_unspecified() {
        return None;
    }
    let (ports, asks) = match record.protocol {
        TCP => (
            (record.source_port, record.destination_port),
            record.tcp_flags.is_none_or(|flags| flags & TCP_SYN != 0),
        ),
        UDP => ((record.source_port, record.destination_port), true),
        // Exporters give an ICMP record's type and code as its destination port; a request
        // and its reply have different types, so the key leaves the ports out.
        ICMP | ICMPV6 => {
            let [icmp_type, _code] = record.destination_port.to_be_bytes();
            let asks = match (record.protocol, icmp_type) {
                (ICMP, ICMP_ECHO_REQUEST) | (ICMPV6, ICMPV6_ECHO_REQUEST) => true,
                (ICMP, ICMP_ECHO_REPLY) | (ICMPV6, ICMPV6_ECHO_REPLY) => false,
                _ => return None,
            };
            ((0, 0), asks)
        }
        _ => return None,
    };
    let source = Endpoint {
        address: record.source,
        port: ports.0,
    };
    let destination = Endpoint {
        address: record.destination,
        port: ports.1,
    };
    let (low, high, direction) = match source.cmp(&destination) {
        std::cmp::Ordering::Less => (source, destination, 0),
        std::cmp::Ordering::Greater => (destination, source, 1),
        // Both directions would be the same one.
        std::cmp::Ordering::Equal => return None,
    };
    Some((
        FlowKey {
            protocol: record.protocol,
            low,
            high,
        },
        direction,
        asks,
    ))
}

/// Flow records of both directions in, unpaired flows per source prefix out. See the module
/// documentation for what counts.
#[derive(Debug)]
pub struct FlowPairing {
    settings: PairingSettings,
    entries: HashMap<FlowKey, Entry>,
    /// Every key of `entries`, oldest first: entries leave only from the front, by expiry or
    /// eviction, so the two always hold the same keys.
    order: VecDeque<FlowKey>,
    /// Anomalous flows judged since the last interval: (flows, bytes).
    pending: HashMap<(Prefix, AnomalyKind), (u64, u64)>,
    interval: PairingCounts,
    totals: PairingCounts,
}

impl FlowPairing {
    /// # Errors
    /// When a prefix length is longer than its family's addresses.
    pub fn new(settings: PairingSettings) -> Result<Self, PairingError> {
        for (unspecified, len) in [
            (IpAddr::from([0u8; 4]), settings.prefix_len_v4),
            (IpAddr::from([0u8; 16]), settings.prefix_len_v6),
        ] {
            let _: Prefix = Prefix::new(unspecified, len).map_err(PairingError::PrefixLength)?;
        }
        Ok(Self {
            settings,
            entries: HashMap::new(),
            order: VecDeque::new(),
            pending: HashMap::new(),
            interval: PairingCounts::default(),
            totals: PairingCounts::default(),
        })
    }

    pub const fn settings(&self) -> &PairingSettings {
        &self.settings
    }

    /// Flows tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    /// The counts of every interval taken so far.
    pub const fn totals(&self) -> &PairingCounts {
        &self.totals
    }

    /// Takes in a batch of records (a datagram's, as the collector's sink gets them) that
    /// arrived at `now_ms` (any milliseconds clock that does not go back). Flows whose window
    /// has ended are judged first.
    pub fn observe(&mut self, records: &[FlowRecord], now_ms: u64) {
        self.expire(now_ms);
        for record in records {
            let Some((key, direction, asks)) = classify(record) else {
                self.interval.untracked += 1;
                continue;
            };
            if !self.entries.contains_key(&key) {
                if !self.make_room() {
                    self.interval.evicted += 1;
                    continue;
                }
                self.order.push_back(key);
            }
            self.interval.tracked += 1;
            let deadline_ms = now_ms.saturating_add(self.settings.answer_window_ms);
            let entry = self.entries.entry(key).or_insert(Entry {
                deadline_ms,
                sides: [Side::default(); 2],
            });
            let was_matched = entry.matched();
            let side = &mut entry.sides[direction];
            side.seen = true;
            side.asks |= asks;
            side.bytes = side.bytes.saturating_add(record.bytes);
            if !was_matched && entry.matched() {
                self.interval.matched += 1;
            }
        }
    }

    /// Whether a new entry fits, after evicting the oldest while the table is full.
    fn make_room(&mut self) -> bool {
        let limit = self.settings.max_tracked_flows;
        while self.entries.len() >= limit {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            let _: Option<Entry> = self.entries.remove(&oldest);
            self.interval.evicted += 1;
        }
        self.entries.len() < limit
    }

    /// Judges the flows whose window has ended by `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        while let Some(&key) = self.order.front() {
            let Some(&entry) = self.entries.get(&key) else {
                // Not possible (see `order`); drop the stray key all the same.
                self.order.pop_front();
                continue;
            };
            if entry.deadline_ms > now_ms {
                break;
            }
            self.order.pop_front();
            let _: Option<Entry> = self.entries.remove(&key);
            self.judge(&key, &entry);
        }
    }

    fn is_local(&self, address: IpAddr) -> bool {
        self.settings
            .local
            .iter()
            .any(|prefix| prefix.contains(address))
    }

    /// From outside to us (with no local prefixes: from anyone).
    fn inbound(&self, source: IpAddr, destination: IpAddr) -> bool {
        self.settings.local.is_empty() || (!self.is_local(source) && self.is_local(destination))
    }

    /// The reflection port a direction comes from, if it is UDP from one, from outside to us.
    fn reflection_port(&self, key: &FlowKey, direction: usize) -> Option<u16> {
        let (source, destination) = (key.source(direction), key.destination(direction));
        (key.protocol == UDP
            && self.settings.reflection_ports.contains(&source.port)
            && self.inbound(source.address, destination.address))
        .then_some(source.port)
    }

    fn judge(&mut self, key: &FlowKey, entry: &Entry) {
        if entry.matched() {
            if (0..2).any(|direction| self.reflection_port(key, direction).is_some()) {
                self.interval.reflection_requested += 1;
            }
            return;
        }
        let Some(direction) = entry.sides.iter().position(|side| side.seen) else {
            return;
        };
        let side = entry.sides[direction];
        let (source, destination) = (key.source(direction), key.destination(direction));
        let kind = if let Some(port) = self.reflection_port(key, direction) {
            self.interval.reflection += 1;
            AnomalyKind::Reflection(port)
        } else if !side.asks {
            self.interval.ignored_unanswered += 1;
            return;
        } else if self.inbound(source.address, destination.address) {
            self.interval.one_way += 1;
            AnomalyKind::OneWay
        } else if self.is_local(source.address) && !self.is_local(destination.address) {
            self.interval.outbound_unanswered += 1;
            return;
        } else {
            self.interval.ignored_unanswered += 1;
            return;
        };
        let Some(prefix) = self.source_prefix(source.address) else {
            return;
        };
        let limit = self.settings.max_tracked_flows;
        let pending_len = self.pending.len();
        match self.pending.get_mut(&(prefix, kind)) {
            Some((flows, bytes)) => {
                *flows += 1;
                *bytes = bytes.saturating_add(side.bytes);
            }
            None if pending_len < limit => {
                let _: Option<(u64, u64)> = self.pending.insert((prefix, kind), (1, side.bytes));
            }
            None => self.interval.overflow += 1,
        }
    }

    fn source_prefix(&self, address: IpAddr) -> Option<Prefix> {
        let len = match address {
            IpAddr::V4(_) => self.settings.prefix_len_v4,
            IpAddr::V6(_) => self.settings.prefix_len_v6,
        };
        // Checked in `new`.
        Prefix::new(address, len).ok()
    }

    /// Ends an interval at `now_ms`: judges the flows whose window has ended and gives the
    /// anomalies and counts since the last call. Flows still inside their window carry over.
    pub fn take_interval(&mut self, now_ms: u64) -> IntervalAnomalies {
        self.expire(now_ms);
        let mut rows: Vec<((Prefix, AnomalyKind), (u64, u64))> = self.pending.drain().collect();
        rows.sort_unstable_by_key(|&((prefix, kind), (flows, bytes))| {
            (Reverse(flows), Reverse(bytes), kind, prefix)
        });
        let mut per_kind: HashMap<AnomalyKind, usize> = HashMap::new();
        let mut truncated = 0u64;
        let mut anomalies = Vec::new();
        for ((prefix, kind), (flows, bytes)) in rows {
            let reported = per_kind.entry(kind).or_insert(0);
            if *reported >= self.settings.max_anomalies_per_kind {
                truncated += 1;
                continue;
            }
            *reported += 1;
            anomalies.push(Anomaly {
                prefix: prefix.to_string(),
                kind,
                flows,
                bytes,
            });
        }
        let counts = std::mem::take(&mut self.interval);
        self.totals.merge(&counts);
        IntervalAnomalies {
            anomalies,
            truncated,
            counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    /// A whole conversation's flags: SYN, ACK, PSH, FIN.
    const CONVERSATION: u8 = 0x1b;
    const WINDOW: u64 = 60_000;

    fn ip(address: &str) -> IpAddr {
        address.parse().expect("test address")
    }

    fn flow(
        source: &str,
        source_port: u16,
        destination: &str,
        destination_port: u16,
    ) -> FlowRecord {
        FlowRecord {
            destination: ip(destination),
            source_port,
            destination_port,
            ..FlowRecord::new(ip(source), 0, 1)
        }
    }

    fn tcp(
        source: &str,
        source_port: u16,
        destination: &str,
        destination_port: u16,
        flags: u8,
        bytes: u64,
    ) -> FlowRecord {
        FlowRecord {
            protocol: TCP,
            tcp_flags: Some(flags),
            bytes,
            ..flow(source, source_port, destination, destination_port)
        }
    }

    fn udp(
        source: &str,
        source_port: u16,
        destination: &str,
        destination_port: u16,
        bytes: u64,
    ) -> FlowRecord {
        FlowRecord {
            protocol: UDP,
            bytes,
            ..flow(source, source_port, destination, destination_port)
        }
    }

    /// ICMP (or ICMPv6 for IPv6 addresses) of a type, code 0, as exporters give it.
    fn icmp(source: &str, destination: &str, icmp_type: u8, bytes: u64) -> FlowRecord {
        let protocol = if ip(source).is_ipv4() { ICMP } else { ICMPV6 };
        FlowRecord {
            protocol,
            bytes,
            ..flow(source, 0, destination, u16::from(icmp_type) << 8)
        }
    }

    fn row(prefix: &str, kind: AnomalyKind, flows: u64, bytes: u64) -> Anomaly {
        Anomaly {
            prefix: prefix.to_owned(),
            kind,
            flows,
            bytes,
        }
    }

    /// Ours: 198.51.100.0/24 and 2001:db8:ff::/48.
    fn settings() -> PairingSettings {
        PairingSettings {
            local: ["198.51.100.0/24", "2001:db8:ff::/48"]
                .iter()
                .map(|text| Prefix::parse(text).expect("test prefix").0)
                .collect(),
            ..PairingSettings::default()
        }
    }

    fn pairing(settings: PairingSettings) -> FlowPairing {
        FlowPairing::new(settings).expect("valid settings")
    }

    struct Case {
        name: &'static str,
        /// (arrival, records)
        batches: Vec<(u64, Vec<FlowRecord>)>,
        want: Vec<Anomaly>,
        counts: PairingCounts,
    }

    fn cases() -> Vec<Case> {
        use AnomalyKind::{OneWay, Reflection};
        let ssh_request = tcp("203.0.113.9", 40_000, "198.51.100.5", 22, CONVERSATION, 500);
        let ssh_answer = tcp(
            "198.51.100.5",
            22,
            "203.0.113.9",
            40_000,
            CONVERSATION,
            3000,
        );
        let ntp_request = udp("198.51.100.5", 40_000, "192.0.2.10", 123, 48);
        let ntp_answer = udp("192.0.2.10", 123, "198.51.100.5", 40_000, 48);
        vec![
            Case {
                name: "a request and its answer are a pair",
                batches: vec![(0, vec![ssh_request, ssh_answer])],
                want: vec![],
                counts: PairingCounts {
                    tracked: 2,
                    matched: 1,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "the answer in a later batch, within the window",
                batches: vec![(0, vec![ssh_answer]), (WINDOW - 1, vec![ssh_request])],
                want: vec![],
                counts: PairingCounts {
                    tracked: 2,
                    matched: 1,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "an unanswered SYN is one-way, blamed on its source",
                batches: vec![(
                    0,
                    vec![tcp("203.0.113.9", 40_000, "198.51.100.5", 23, SYN, 60)],
                )],
                want: vec![row("203.0.113.0/24", OneWay, 1, 60)],
                counts: PairingCounts {
                    tracked: 1,
                    one_way: 1,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "an answer after the window does not save the request",
                batches: vec![
                    (
                        0,
                        vec![tcp("203.0.113.9", 40_000, "198.51.100.5", 23, SYN, 60)],
                    ),
                    (
                        WINDOW + 1,
                        vec![tcp("198.51.100.5", 23, "203.0.113.9", 40_000, SYN_ACK, 60)],
                    ),
                ],
                want: vec![row("203.0.113.0/24", OneWay, 1, 60)],
                counts: PairingCounts {
                    tracked: 2,
                    one_way: 1,
                    // The late answer starts a flow of its own, from us.
                    outbound_unanswered: 1,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "re-exports and retries of one 5-tuple are one flow",
                batches: vec![
                    (
                        0,
                        vec![tcp("203.0.113.9", 40_000, "198.51.100.5", 23, SYN, 60)],
                    ),
                    (
                        1000,
                        vec![tcp("203.0.113.9", 40_000, "198.51.100.5", 23, SYN, 60)],
                    ),
                ],
                want: vec![row("203.0.113.0/24", OneWay, 1, 120)],
                counts: PairingCounts {
                    tracked: 2,
                    one_way: 1,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "hosts of one /24 add up; most flows first",
                batches: vec![(
                    0,
                    vec![
                        tcp("192.0.2.1", 1, "198.51.100.5", 80, SYN, 9000),
                        tcp("203.0.113.1", 40_000, "198.51.100.5", 23, SYN, 60),
                        tcp("203.0.113.2", 40_000, "198.51.100.5", 23, SYN, 60),
                        tcp("203.0.113.3", 40_000, "198.51.100.6", 23, SYN, 60),
                    ],
                )],
                want: vec![
                    row("203.0.113.0/24", OneWay, 3, 180),
                    row("192.0.2.0/24", OneWay, 1, 9000),
                ],
                counts: PairingCounts {
                    tracked: 4,
                    one_way: 4,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "IPv6 sources aggregate per /64",
                batches: vec![(
                    0,
                    vec![
                        udp("2001:db8:1:2::5", 5000, "2001:db8:ff::1", 161, 80),
                        udp("2001:db8:1:2::6", 5000, "2001:db8:ff::1", 161, 80),
                        udp("2001:db8:1:3::1", 5000, "2001:db8:ff::1", 161, 80),
                    ],
                )],
                want: vec![
                    row("2001:db8:1:2::/64", OneWay, 2, 160),
                    row("2001:db8:1:3::/64", OneWay, 1, 80),
                ],
                counts: PairingCounts {
                    tracked: 3,
                    one_way: 3,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "unrequested NTP answers are reflection, not one-way",
                batches: vec![(
                    0,
                    vec![
                        udp("192.0.2.10", 123, "198.51.100.5", 40_000, 4680),
                        udp("192.0.2.11", 123, "198.51.100.6", 40_001, 4680),
                        udp("2001:db8:1:2::5", 1900, "2001:db8:ff::1", 5000, 300),
                    ],
                )],
                want: vec![
                    row("192.0.2.0/24", Reflection(123), 2, 9360),
                    row("2001:db8:1:2::/64", Reflection(1900), 1, 300),
                ],
                counts: PairingCounts {
                    tracked: 3,
                    reflection: 3,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "answers to our own NTP query are not reflection",
                batches: vec![(0, vec![ntp_request]), (500, vec![ntp_answer])],
                want: vec![],
                counts: PairingCounts {
                    tracked: 2,
                    matched: 1,
                    reflection_requested: 1,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "our query exported after its answer still counts",
                batches: vec![(0, vec![ntp_answer]), (500, vec![ntp_request])],
                want: vec![],
                counts: PairingCounts {
                    tracked: 2,
                    matched: 1,
                    reflection_requested: 1,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "a reflection port over TCP is a plain request",
                batches: vec![(0, vec![tcp("192.0.2.10", 53, "198.51.100.5", 53, SYN, 60)])],
                want: vec![row("192.0.2.0/24", OneWay, 1, 60)],
                counts: PairingCounts {
                    tracked: 1,
                    one_way: 1,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "unanswered flows of ours are not blamed on their destination",
                batches: vec![(
                    0,
                    vec![
                        tcp("198.51.100.5", 50_000, "203.0.113.9", 443, SYN, 60),
                        udp("198.51.100.5", 50_000, "192.0.2.10", 123, 48),
                    ],
                )],
                want: vec![],
                counts: PairingCounts {
                    tracked: 2,
                    outbound_unanswered: 2,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "answers without requests and transit blame nobody",
                batches: vec![(
                    0,
                    vec![
                        // Mid-connection, and backscatter.
                        tcp("203.0.113.9", 443, "198.51.100.5", 50_000, ACK, 60),
                        tcp("203.0.113.9", 443, "198.51.100.5", 50_001, 0x04, 40),
                        icmp("203.0.113.9", "198.51.100.5", ICMP_ECHO_REPLY, 84),
                        // Between two outside hosts; and two of ours.
                        tcp("203.0.113.9", 40_000, "192.0.2.7", 22, SYN, 60),
                        udp("192.0.2.10", 123, "203.0.113.5", 40_000, 4680),
                        tcp("198.51.100.5", 40_000, "198.51.100.6", 22, SYN, 60),
                    ],
                )],
                want: vec![],
                counts: PairingCounts {
                    tracked: 6,
                    ignored_unanswered: 6,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "TCP without flags may be a request",
                batches: vec![(
                    0,
                    vec![FlowRecord {
                        tcp_flags: None,
                        ..tcp("203.0.113.9", 40_000, "198.51.100.5", 23, 0, 60)
                    }],
                )],
                want: vec![row("203.0.113.0/24", OneWay, 1, 60)],
                counts: PairingCounts {
                    tracked: 1,
                    one_way: 1,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "ICMP echo: requests pair with replies, unanswered ones are one-way; \
                       equal flows, most bytes first",
                batches: vec![(
                    0,
                    vec![
                        icmp("203.0.113.9", "198.51.100.5", ICMP_ECHO_REQUEST, 84),
                        icmp("198.51.100.5", "203.0.113.9", ICMP_ECHO_REPLY, 84),
                        icmp("192.0.2.1", "198.51.100.5", ICMP_ECHO_REQUEST, 84),
                        icmp(
                            "2001:db8:1:2::5",
                            "2001:db8:ff::1",
                            ICMPV6_ECHO_REQUEST,
                            104,
                        ),
                        // Destination unreachable: not paired at all.
                        icmp("203.0.113.9", "198.51.100.5", 3, 70),
                    ],
                )],
                want: vec![
                    row("2001:db8:1:2::/64", OneWay, 1, 104),
                    row("192.0.2.0/24", OneWay, 1, 84),
                ],
                counts: PairingCounts {
                    tracked: 4,
                    untracked: 1,
                    matched: 1,
                    one_way: 2,
                    ..PairingCounts::default()
                },
            },
            Case {
                name: "records that cannot be paired are counted, not tracked",
                batches: vec![(
                    0,
                    vec![
                        // GRE; no destination; to itself.
                        FlowRecord {
                            protocol: 47,
                            ..flow("203.0.113.9", 0, "198.51.100.5", 0)
                        },
                        FlowRecord {
                            protocol: TCP,
                            ..FlowRecord::new(ip("203.0.113.9"), 60, 1)
                        },
                        udp("198.51.100.5", 7, "198.51.100.5", 7, 60),
                    ],
                )],
                want: vec![],
                counts: PairingCounts {
                    untracked: 3,
                    ..PairingCounts::default()
                },
            },
        ]
    }

    #[test]
    fn table_of_cases() {
        for case in cases() {
            let mut pairing = pairing(settings());
            for (now_ms, records) in &case.batches {
                pairing.observe(records, *now_ms);
            }
            let last = case.batches.last().map_or(0, |(now_ms, _)| *now_ms);
            let interval = pairing.take_interval(last + WINDOW);
            assert_eq!(interval.anomalies, case.want, "{}", case.name);
            assert_eq!(interval.counts, case.counts, "{}", case.name);
            assert_eq!(interval.truncated, 0, "{}", case.name);
            assert_eq!(pairing.tracked(), 0, "{}", case.name);
        }
    }

    #[test]
    fn flows_inside_their_window_carry_over_to_the_next_interval() {
        let mut pairing = pairing(settings());
        let request = tcp("203.0.113.9", 40_000, "198.51.100.5", 22, SYN, 60);
        let answer = tcp("198.51.100.5", 22, "203.0.113.9", 40_000, SYN_ACK, 60);
        pairing.observe(&[request], 0);
        let first = pairing.take_interval(10_000);
        assert!(first.anomalies.is_empty());
        assert_eq!(first.counts.tracked, 1);
        assert_eq!(pairing.tracked(), 1);
        // The answer comes in the next interval, within the window.
        pairing.observe(&[answer], 30_000);
        let second = pairing.take_interval(70_000);
        assert!(second.anomalies.is_empty());
        assert_eq!(second.counts.matched, 1);
        assert_eq!(second.counts.one_way, 0);
        assert_eq!(pairing.tracked(), 0);
        assert_eq!(
            *pairing.totals(),
            PairingCounts {
                tracked: 2,
                matched: 1,
                ..PairingCounts::default()
            }
        );

        // Unanswered, it is reported in the interval its window ends in, not before.
        pairing.observe(&[request], 100_000);
        assert!(pairing.take_interval(159_999).anomalies.is_empty());
        let late = pairing.take_interval(160_000);
        assert_eq!(
            late.anomalies,
            [row("203.0.113.0/24", AnomalyKind::OneWay, 1, 60)]
        );
        assert_eq!(late.counts.one_way, 1);
        // Each interval's counts start from zero; the totals keep adding up.
        assert_eq!(
            pairing.take_interval(200_000).counts,
            PairingCounts::default()
        );
        assert_eq!(pairing.totals().one_way, 1);
        assert_eq!(pairing.totals().tracked, 3);
    }

    #[test]
    fn without_local_prefixes_every_source_may_be_outside() {
        let mut pairing = pairing(PairingSettings::default());
        pairing.observe(
            &[
                tcp("198.51.100.5", 50_000, "203.0.113.9", 443, SYN, 60),
                udp("192.0.2.10", 123, "203.0.113.5", 40_000, 4680),
                udp("203.0.113.5", 40_001, "192.0.2.11", 123, 48),
                udp("192.0.2.11", 123, "203.0.113.5", 40_001, 480),
            ],
            0,
        );
        let interval = pairing.take_interval(WINDOW);
        assert_eq!(
            interval.anomalies,
            [
                row("192.0.2.0/24", AnomalyKind::Reflection(123), 1, 4680),
                row("198.51.100.0/24", AnomalyKind::OneWay, 1, 60),
            ]
        );
        assert_eq!(interval.counts.outbound_unanswered, 0);
        assert_eq!(interval.counts.reflection_requested, 1);
        assert_eq!(interval.counts.matched, 1);
    }

    /// Distinct scanners: one SYN each from 203.0.113.`n`.
    fn scans(hosts: std::ops::Range<u8>) -> Vec<FlowRecord> {
        hosts
            .map(|host| FlowRecord {
                source: IpAddr::from([203, 0, 113, host]),
                ..tcp("0.0.0.1", 40_000, "198.51.100.5", 23, SYN, 60)
            })
            .collect()
    }

    #[test]
    fn a_full_table_evicts_the_oldest_and_does_not_report_it() {
        let mut pairing = pairing(PairingSettings {
            max_tracked_flows: 2,
            prefix_len_v4: 32,
            ..settings()
        });
        for (now_ms, record) in (0..).zip(scans(1..4)) {
            pairing.observe(&[record], now_ms);
            assert!(pairing.tracked() <= 2);
        }
        // The first scanner was evicted: its SYN might still have been answered.
        let interval = pairing.take_interval(WINDOW + 10);
        assert_eq!(
            interval.anomalies,
            [
                row("203.0.113.2/32", AnomalyKind::OneWay, 1, 60),
                row("203.0.113.3/32", AnomalyKind::OneWay, 1, 60),
            ]
        );
        assert_eq!(interval.counts.evicted, 1);
        assert_eq!(interval.counts.one_way, 2);

        // The answer to an evicted flow finds no request: it starts a flow of its own.
        let mut pairing = pairing_with_bound(1);
        pairing.observe(&scans(1..3), 0);
        pairing.observe(
            &[tcp("198.51.100.5", 23, "203.0.113.1", 40_000, SYN_ACK, 60)],
            1,
        );
        let interval = pairing.take_interval(WINDOW + 10);
        assert_eq!(interval.counts.evicted, 2);
        assert_eq!(interval.counts.outbound_unanswered, 1);
        assert!(interval.anomalies.is_empty());

        // A bound of 0 tracks nothing.
        let mut pairing = pairing_with_bound(0);
        pairing.observe(&scans(1..4), 0);
        assert_eq!(pairing.tracked(), 0);
        let interval = pairing.take_interval(WINDOW);
        assert_eq!(interval.counts.evicted, 3);
        assert_eq!(interval.counts.tracked, 0);
        assert!(interval.anomalies.is_empty());
    }

    fn pairing_with_bound(max_tracked_flows: usize) -> FlowPairing {
        pairing(PairingSettings {
            max_tracked_flows,
            ..settings()
        })
    }

    #[test]
    fn the_anomalies_of_an_interval_are_bounded() {
        // Judged flows wait for the interval's end under the same bound as the table.
        let mut pairing = pairing(PairingSettings {
            max_tracked_flows: 2,
            prefix_len_v4: 32,
            ..settings()
        });
        for (step, record) in (0..).zip(scans(1..4)) {
            pairing.observe(&[record], step * (WINDOW + 1));
        }
        let interval = pairing.take_interval(10 * WINDOW);
        assert_eq!(interval.anomalies.len(), 2);
        assert_eq!(interval.counts.one_way, 3);
        assert_eq!(interval.counts.overflow, 1);
        assert_eq!(interval.counts.evicted, 0);
    }

    #[test]
    fn at_most_n_rows_per_kind() {
        let mut pairing = pairing(PairingSettings {
            max_anomalies_per_kind: 1,
            ..settings()
        });
        let mut records = scans(1..3);
        records.extend([
            tcp("192.0.2.1", 40_000, "198.51.100.5", 23, SYN, 60),
            udp("192.0.2.10", 123, "198.51.100.5", 40_000, 400),
            udp("203.0.113.10", 123, "198.51.100.5", 40_000, 4000),
            udp("203.0.113.10", 53, "198.51.100.5", 40_000, 3000),
        ]);
        pairing.observe(&records, 0);
        let interval = pairing.take_interval(WINDOW);
        assert_eq!(
            interval.anomalies,
            [
                row("203.0.113.0/24", AnomalyKind::OneWay, 2, 120),
                row("203.0.113.0/24", AnomalyKind::Reflection(123), 1, 4000),
                row("203.0.113.0/24", AnomalyKind::Reflection(53), 1, 3000),
            ]
        );
        assert_eq!(interval.truncated, 2);
    }

    #[test]
    fn prefix_lengths_are_settings() {
        let mut pairing = pairing(PairingSettings {
            prefix_len_v4: 16,
            prefix_len_v6: 48,
            ..settings()
        });
        pairing.observe(
            &[
                tcp("203.0.113.9", 40_000, "198.51.100.5", 23, SYN, 60),
                tcp("203.0.7.9", 40_000, "198.51.100.5", 23, SYN, 60),
                udp("2001:db8:1:2::5", 5000, "2001:db8:ff::1", 161, 80),
                udp("2001:db8:1:3::5", 5000, "2001:db8:ff::1", 161, 80),
            ],
            0,
        );
        assert_eq!(
            pairing.take_interval(WINDOW).anomalies,
            [
                row("2001:db8:1::/48", AnomalyKind::OneWay, 2, 160),
                row("203.0.0.0/16", AnomalyKind::OneWay, 2, 120),
            ]
        );
        for (prefix_len_v4, prefix_len_v6) in [(33, 64), (24, 129)] {
            let settings = PairingSettings {
                prefix_len_v4,
                prefix_len_v6,
                ..PairingSettings::default()
            };
            assert!(matches!(
                FlowPairing::new(settings),
                Err(PairingError::PrefixLength(_))
            ));
        }
    }

    #[test]
    fn reflection_ports_are_a_setting() {
        let mut pairing = pairing(PairingSettings {
            reflection_ports: vec![19],
            ..settings()
        });
        pairing.observe(
            &[
                udp("192.0.2.10", 19, "198.51.100.5", 40_000, 1000),
                udp("192.0.2.10", 123, "198.51.100.5", 40_000, 4680),
            ],
            0,
        );
        // NTP is no longer a reflection port: its unanswered flow is a plain request.
        assert_eq!(
            pairing.take_interval(WINDOW).anomalies,
            [
                row("192.0.2.0/24", AnomalyKind::OneWay, 1, 4680),
                row("192.0.2.0/24", AnomalyKind::Reflection(19), 1, 1000),
            ]
        );
    }
}
