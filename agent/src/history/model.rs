//! What the history records per interval, and what a query over it gives back.
//!
//! The daemon's recorder fills an [`IntervalRecord`] every interval (off the packet and owner
//! paths) and hands it to the store; `xdpguard report` asks the store (or an offline reader of
//! logs or flow files) for a [`Summary`] and prints it as text, JSON or HTML. `Summary` is the
//! JSON `report --json` prints: its field names are a public format.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Packets the XDP program dropped and passed in one interval, per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketCounts {
    pub dropped_v4: u64,
    pub dropped_v6: u64,
    pub passed_v4: u64,
    pub passed_v6: u64,
    pub dropped_bytes: u64,
    pub passed_bytes: u64,
}

/// Bytes by direction, split into local (prefixes the configuration names as this site's) and
/// external. Inbound comes from XDP accounting or flows; outbound only from flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub inbound_local: u64,
    pub inbound_external: u64,
    pub outbound_local: u64,
    pub outbound_external: u64,
}

/// The sources one ruleset scored in an interval. At most the store's per-ruleset cap of
/// addresses is kept; the rest are counted in `overflow` so a report can say it is a floor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScoredSources {
    pub ruleset: String,
    pub addresses: Vec<IpAddr>,
    pub overflow: u64,
}

/// Which top list a [`TopRow`] belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// Blocked prefixes by packets dropped.
    PrefixByDrops,
    /// Source prefixes by bytes seen (XDP volume counters, flows).
    PrefixByVolume,
    /// Origin ASes by packets dropped.
    OriginByDrops,
    /// Origin ASes by bytes seen.
    OriginByVolume,
}

/// One row of a top list: `key` is a prefix (`203.0.113.0/24`) or an origin (`AS64500`,
/// `{AS64500,AS64501}` for an AS_SET); `origin` and `announced` name the origin AS and the
/// announced prefix of a prefix row, where known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopRow {
    pub ranking: Ranking,
    pub key: String,
    pub packets: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<String>,
}

/// What kind of unusual flow an [`Anomaly`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "port")]
pub enum AnomalyKind {
    /// A flow whose reverse direction never appeared (a request never answered: scans).
    OneWay,
    /// Traffic from a classic reflection/amplification source port (SSDP 1900, NTP 123,
    /// DNS 53, memcached 11211, CLDAP 389).
    Reflection(u16),
}

/// Unusual flows from one source prefix in an interval (or a report's whole range).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub prefix: String,
    #[serde(flatten)]
    pub kind: AnomalyKind,
    pub flows: u64,
    pub bytes: u64,
}

/// Everything recorded for one interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalRecord {
    /// Start of the interval, Unix seconds.
    pub start: u64,
    /// Its length in seconds (the configured interval; the first one after start may be
    /// shorter).
    pub seconds: u32,
    pub packets: PacketCounts,
    pub traffic: Traffic,
    /// Decisions that took effect in the interval, per source kind (`ruleset:sshd`,
    /// `volume:flood`, `manual`, `fleet:web1`, ...).
    pub decisions: Vec<(String, u64)>,
    pub scored: Vec<ScoredSources>,
    pub top: Vec<TopRow>,
    pub anomalies: Vec<Anomaly>,
}

/// The unique sources one ruleset scored in one bin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesetBin {
    pub ruleset: String,
    /// Distinct addresses.
    pub sources: u64,
    /// Distinct /24s (IPv4) plus distinct /64s (IPv6).
    pub networks: u64,
    /// Distinct origin ASes of those sources, where the origins table knew them (0 without
    /// a table).
    #[serde(default)]
    pub origins: u64,
    /// True when some interval in the bin hit the per-ruleset cap: the counts are a floor.
    #[serde(default)]
    pub truncated: bool,
}

/// One bin of a report: sums of the intervals that start inside `[start, start + seconds)`,
/// and distinct counts over the union of their sources.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bin {
    pub start: u64,
    pub seconds: u64,
    pub packets: PacketCounts,
    pub traffic: Traffic,
    /// Per source kind, sorted by kind.
    pub decisions: Vec<(String, u64)>,
    /// Per ruleset, sorted by ruleset name; a ruleset with no sources in the bin is absent.
    pub rulesets: Vec<RulesetBin>,
}

/// A report over a range of the history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Where the numbers come from: `history:/var/lib/xdpguard/history.sqlite`,
    /// `logs:FILE,...`, `nfcapd:DIR`.
    pub from: String,
    /// Unix seconds; `until` is exclusive.
    pub since: u64,
    pub until: u64,
    pub bin_seconds: u64,
    /// Every bin of the range, empty ones included, oldest first.
    pub bins: Vec<Bin>,
    /// Every ruleset that appears in any bin, sorted.
    pub rulesets: Vec<String>,
    /// Sums over the whole range, per ranking, largest first (at most the query's limit per
    /// ranking).
    pub top: Vec<TopRow>,
    /// Sums per (prefix, kind) over the whole range, most flows first.
    pub anomalies: Vec<Anomaly>,
}
