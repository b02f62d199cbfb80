//! The bouncer's section of the metrics page, from its [`BouncerStats`] (like
//! cs-firewall-bouncer's: per CrowdSec origin).
use std::collections::BTreeMap;

use crate::exposition::{self, Kind, MetricFamily};

/// What the bouncer has done, published after every poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BouncerStats {
    /// Whether the last poll got an answer that was used.
    pub up: bool,
    pub polls_ok: u64,
    pub polls_failed: u64,
    /// Unix seconds of the last good poll (0: none yet).
    pub last_success_unix: u64,
    /// The last poll's error, while polls fail.
    pub last_error: Option<String>,
    /// New and deleted decisions taken, per (origin, `added` | `deleted`).
    pub decisions: BTreeMap<(String, &'static str), u64>,
    /// Decisions not enforced, per reason (`type:captcha`, `scope:Country`, `expired`,
    /// `malformed`, `origin`, `capacity`, `unknown_deletion`).
    pub skipped: BTreeMap<String, u64>,
    /// Prefixes the owner refused to block (guards, allowlist, own address), per reason.
    pub refused: BTreeMap<String, u64>,
    /// Decisions held now.
    pub held: u64,
}

pub fn render(stats: &BouncerStats) -> String {
    let mut up = MetricFamily::new(
        "xdpguard_crowdsec_up",
        Kind::Gauge,
        "Whether the last poll of the CrowdSec local API got a usable answer.",
    );
    up.add(&[], u64::from(stats.up));
    let mut polls = MetricFamily::new(
        "xdpguard_crowdsec_polls_total",
        Kind::Counter,
        "Polls of the CrowdSec decision stream, by result.",
    );
    polls.add(&[("result", "ok")], stats.polls_ok);
    polls.add(&[("result", "error")], stats.polls_failed);
    let mut last = MetricFamily::new(
        "xdpguard_crowdsec_last_success_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last good poll of the CrowdSec local API (0: none yet).",
    );
    last.add(&[], stats.last_success_unix);
    let mut decisions = MetricFamily::new(
        "xdpguard_crowdsec_decisions_total",
        Kind::Counter,
        "CrowdSec decisions taken from the stream, by CrowdSec origin and event (added, deleted).",
    );
    for ((origin, event), count) in &stats.decisions {
        decisions.add(&[("origin", origin), ("event", event)], *count);
    }
    let mut skipped = MetricFamily::new(
        "xdpguard_crowdsec_skipped_total",
        Kind::Counter,
        "CrowdSec decisions not enforced, by reason.",
    );
    for (reason, count) in &stats.skipped {
        skipped.add(&[("reason", reason)], *count);
    }
    let mut refused = MetricFamily::new(
        "xdpguard_crowdsec_refused_total",
        Kind::Counter,
        "CrowdSec blocks the decision owner refused (guards, allowlist, own addresses), by reason.",
    );
    for (reason, count) in &stats.refused {
        refused.add(&[("reason", reason)], *count);
    }
    let mut held = MetricFamily::new(
        "xdpguard_crowdsec_decisions",
        Kind::Gauge,
        "CrowdSec decisions held (live, enforceable) now.",
    );
    held.add(&[], stats.held);
    exposition::render(vec![up, polls, last, decisions, skipped, refused, held])
}
