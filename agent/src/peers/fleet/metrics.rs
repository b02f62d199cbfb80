//! The fleet's section of the metrics page, from its [`FleetStats`].
use std::collections::BTreeMap;

use crate::exposition::{self, Kind, MetricFamily};

/// Series per host at most: past it, hosts are counted as `other` (names come off the wire).
pub const MAX_HOST_LABELS: usize = 256;

/// What the fleet agent has done, published as it goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetStats {
    pub connected: bool,
    /// The bucket's state has been read since the last (re)connection.
    pub caught_up: bool,
    pub connects: u64,
    pub last_error: Option<String>,
    /// Decisions read from other hosts, per (host, `put` | `delete`).
    pub received: BTreeMap<(String, &'static str), u64>,
    /// Writes of own decisions, per (`put` | `delete`, `ok` | `error`).
    pub published: BTreeMap<(&'static str, &'static str), u64>,
    /// Values refused (malformed, hostile, too broad), per (host, reason); and blocks the
    /// owner refused (its guards, allowlist, own addresses).
    pub refused: BTreeMap<(String, String), u64>,
    /// Values left alone by the filters, per (host, reason).
    pub skipped: BTreeMap<(String, &'static str), u64>,
    /// Other hosts' decisions held, and how many hosts.
    pub held: u64,
    pub hosts: u64,
    /// Own decisions, and those not yet in the bucket as they are.
    pub own: u64,
    pub pending_publish: u64,
    /// Milliseconds from the last other host's write (server time) to its reading here.
    pub lag_ms: u64,
}

impl FleetStats {
    /// `host` as a label: itself while under [`MAX_HOST_LABELS`] distinct hosts.
    pub fn host_label(&self, host: &str) -> String {
        let known = self
            .received
            .keys()
            .map(|(h, _)| h.as_str())
            .chain(self.refused.keys().map(|(h, _)| h.as_str()))
            .chain(self.skipped.keys().map(|(h, _)| h.as_str()));
        let mut seen: Vec<&str> = known.collect();
        if seen.contains(&host) {
            return host.to_owned();
        }
        seen.sort_unstable();
        seen.dedup();
        if seen.len() >= MAX_HOST_LABELS {
            "other".to_owned()
        } else {
            host.to_owned()
        }
    }
}

pub fn render(stats: &FleetStats) -> String {
    let mut up = MetricFamily::new(
        "xdpguard_fleet_connected",
        Kind::Gauge,
        "Whether the fleet's NATS connection is up and its bucket read.",
    );
    up.add(&[], u64::from(stats.connected && stats.caught_up));
    let mut connects = MetricFamily::new(
        "xdpguard_fleet_connects_total",
        Kind::Counter,
        "Connections to NATS made (the first, then every reconnection, each followed by a full read).",
    );
    connects.add(&[], stats.connects);
    let mut received = MetricFamily::new(
        "xdpguard_fleet_received_total",
        Kind::Counter,
        "Other hosts' decisions read from the bucket, by origin host and event (put, delete).",
    );
    for ((host, event), n) in &stats.received {
        received.add(&[("host", host), ("event", event)], *n);
    }
    let mut published = MetricFamily::new(
        "xdpguard_fleet_published_total",
        Kind::Counter,
        "Writes of this host's decisions to the bucket, by event (put, delete) and result.",
    );
    for ((event, result), n) in &stats.published {
        published.add(&[("event", event), ("result", result)], *n);
    }
    let mut refused = MetricFamily::new(
        "xdpguard_fleet_refused_total",
        Kind::Counter,
        "Fleet decisions refused (malformed or hostile values, too broad, or refused by the owner's guards), by origin host and reason.",
    );
    for ((host, reason), n) in &stats.refused {
        refused.add(&[("host", host), ("reason", reason)], *n);
    }
    let mut skipped = MetricFamily::new(
        "xdpguard_fleet_skipped_total",
        Kind::Counter,
        "Fleet decisions left alone by the filters or already expired, by origin host and reason.",
    );
    for ((host, reason), n) in &stats.skipped {
        skipped.add(&[("host", host), ("reason", reason)], *n);
    }
    let mut held = MetricFamily::new(
        "xdpguard_fleet_decisions",
        Kind::Gauge,
        "Decisions held: other hosts' (held), this host's in the bucket (own), own not yet written (pending).",
    );
    held.add(&[("state", "held")], stats.held);
    held.add(&[("state", "own")], stats.own);
    held.add(&[("state", "pending")], stats.pending_publish);
    let mut hosts = MetricFamily::new(
        "xdpguard_fleet_hosts",
        Kind::Gauge,
        "Other hosts with a decision held here.",
    );
    hosts.add(&[], stats.hosts);
    let mut lag = MetricFamily::new(
        "xdpguard_fleet_lag_seconds",
        Kind::Gauge,
        "From the last other host's write (server time) to its reading here.",
    )
    .seconds_from_millis();
    lag.add(&[], stats.lag_ms);
    exposition::render(vec![
        up, connects, received, published, refused, skipped, held, hosts, lag,
    ])
}
