//! The volume engine: every interval, take what the XDP program and the flow collector counted,
//! find each detector's heavy hitters, and report or block them through the decision owner.
//!
//! [`VolumeCore`] is the decision logic, without threads or I/O, so tests drive it with a
//! clock of their own; [`VolumeEngine`] runs it on a thread next to the flow collector.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{
    Action, AnnouncedAggregate, AnomalyFilter, AnomalyTrigger, DetectorConfig, HeavyHitter,
    HotConfig, HotSet, LocalNets, TrackConfig, TrieError, Trigger, VolumeAction, VolumeConfig,
    VolumeSource, Volumes, local::add_traffic,
};
use crate::{
    clock::Clock,
    detect::traffic::flow::{
        CollectorError, CollectorSettings, FlowCollector, FlowConfig, FlowPairing, FlowRecord,
        IntervalAnomalies, PairingCounts, PairingSettings, RecordSink, SharedExporterStats,
    },
    enforce::dataplane::VolumeReader,
    enforce::decision::{DecisionKind, Source},
    enforce::owner::{BlockOrder, Expiry, Handle, ListFilter, Refusal},
    history::{
        model::{self as history, Anomaly, AnomalyKind, Ranking, Traffic},
        tap::SharedTap,
    },
    origins::{OriginTable, Origins},
    prefix::Prefix,
};

/// Aggregation lengths shown by `xdpguard top` and the metrics: hosts and their /24 or /64.
const TOP_LENGTHS_V4: [u8; 2] = [32, 24];
const TOP_LENGTHS_V6: [u8; 2] = [128, 64];
/// The XDP program counts IPv6 per /64, so its volumes have no longer IPv6 prefixes.
const XDP_MAX_LEN_V6: u8 = 64;
/// How long the engine waits for the owner to answer a block.
const OWNER_TIMEOUT: Duration = Duration::from_secs(5);
/// The lengths of the history's top prefixes by volume: networks, not hosts.
const HISTORY_LEN_V4: u8 = 24;
const HISTORY_LEN_V6: u8 = 64;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("volume tracking")]
    Track(#[source] TrieError),
    #[error(transparent)]
    Collector(#[from] CollectorError),
    #[error("cannot start the volume thread")]
    Spawn(#[source] std::io::Error),
}

/// One row of the top table: a prefix and what it sent in the last interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopRow {
    /// `xdp` or `flow`.
    pub source: String,
    pub family: String,
    pub prefix: String,
    pub bytes: u64,
    pub packets: u64,
    pub bytes_per_sec: u64,
    pub packets_per_sec: u64,
    /// Distinct sources inside the prefix.
    pub sources: u32,
    /// Share of the source's bytes, in hundredths of a percent.
    pub share_bp: u32,
    /// The action of the detector holding a hot prefix that covers this one, if any.
    pub action: Option<String>,
    pub detector: Option<String>,
    /// Origin AS and announced prefix, filled in by whoever has the origins table (the
    /// control server), not by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<String>,
}

/// A prefix a detector holds hot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotRow {
    pub detector: String,
    pub action: String,
    pub prefix: String,
    /// Unix seconds its action lasts until, unless it stays hot.
    pub until_unix: u64,
}

/// What one source counted in the last interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTotals {
    pub source: String,
    pub bytes: u64,
    pub packets: u64,
    pub sources: u64,
    /// Traffic of sources past `volume.max_sources`, counted but not placed in the trie.
    pub overflow_bytes: u64,
    pub overflow_packets: u64,
    /// Heap held by the source's tries.
    pub heap_bytes: u64,
}

/// A flow exporter as the collector sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExporterRow {
    pub exporter: String,
    pub datagrams: u64,
    pub records: u64,
    pub filtered: u64,
    pub templates: u64,
    /// Error kind → count, every kind listed.
    pub errors: BTreeMap<String, u64>,
}

/// The engine's state after the last interval: what metrics and `xdpguard top` show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    /// The last interval's real length, in milliseconds (0: none ended yet).
    pub interval_ms: u64,
    pub ended_unix: u64,
    pub totals: Vec<SourceTotals>,
    pub top: Vec<TopRow>,
    pub hot: Vec<HotRow>,
    /// (family, action) → new hot prefixes since start.
    pub alerts: BTreeMap<String, BTreeMap<String, u64>>,
    /// New hot prefixes that were not tracked because a detector held its maximum.
    pub hot_overflow: u64,
    pub exporters: Vec<ExporterRow>,
    /// Flow datagrams refused because their sender is not in `volume.flow.exporters`.
    pub flow_rejected: u64,
    /// Drains of the XDP volume maps that failed, since start.
    pub drain_errors: u64,
    /// The XDP accounting's sampling exponents (IPv4, IPv6): a new source is counted for one
    /// frame in 2^n, weighted 2^n, while the volume maps overflow.
    #[serde(default)]
    pub xdp_sampling: [u32; 2],
    /// The last interval's bytes split by `volume.local` (see [`super::local`]): inbound from
    /// XDP accounting when it ran, else from flows; outbound from flows.
    #[serde(default)]
    pub traffic: Traffic,
    /// The last interval's unpaired flows per source prefix, from flow pairing.
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
    /// Flow pairing's counts since start; `None` while pairing is off.
    #[serde(default)]
    pub pairing: Option<PairingStatus>,
}

/// What flow pairing did since the engine started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingStatus {
    pub totals: PairingCounts,
    /// Flows tracked at the end of the last interval.
    pub tracked_flows: u64,
    /// Anomaly rows left out by the per-kind bound of an interval.
    pub truncated: u64,
}

/// What one interval brought besides the volumes: the traffic split, and flow pairing.
#[derive(Clone, Copy, Debug, Default)]
pub struct IntervalInput<'a> {
    /// What each source counted (`None`: the source is off).
    pub xdp: Option<&'a Volumes>,
    pub flow: Option<&'a Volumes>,
    /// The XDP and flow bytes split by `volume.local`.
    pub xdp_traffic: Traffic,
    pub flow_traffic: Traffic,
    /// The pairing's interval; `None` while pairing is off.
    pub pairing: Option<&'a IntervalAnomalies>,
    /// Flows the pairing tracks now.
    pub tracked_flows: usize,
}

/// A block the core wants the owner to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectorOrder {
    pub prefix: Prefix,
    pub duration_secs: u64,
    pub reason: String,
    /// `volume:<detector>`.
    pub source: Source,
    /// First time hot (an incident), or an extension of one.
    pub new: bool,
}

struct Detector {
    config: DetectorConfig,
    hot: HotSet,
    /// Why each hot prefix went hot: an extension keeps saying so.
    reasons: std::collections::HashMap<Prefix, String>,
    /// The expiry last asked of the owner per blocked prefix: a block is extended once less
    /// than half of the ban is left, not every interval.
    ordered_until: std::collections::HashMap<Prefix, u64>,
    /// Prefixes whose block was refused (guards, allowlist, own address) or removed by an
    /// operator, until when they are left out: while one of them stays hot it must not hide
    /// the narrower prefixes inside it, and must not be asked for again every interval.
    suppressed: std::collections::HashMap<Prefix, u64>,
}

/// A detector's hot candidates of one interval.
#[derive(Debug, Default)]
struct Candidates {
    hitters: Vec<HeavyHitter>,
    /// Bytes of the interval the shares are of.
    total_bytes: u64,
    /// Why a candidate is hot, for those not over a volume limit (anomalies, aggregates).
    why: std::collections::HashMap<Prefix, String>,
}

impl Detector {
    fn new(config: DetectorConfig) -> Self {
        let hot = HotSet::new(HotConfig {
            hold_secs: config.ban.as_secs().max(1),
            cool_intervals: config.cool_intervals,
            ..HotConfig::default()
        });
        Self {
            config,
            hot,
            reasons: std::collections::HashMap::new(),
            ordered_until: std::collections::HashMap::new(),
            suppressed: std::collections::HashMap::new(),
        }
    }

    /// The interval's candidates; `None` when the detector's source is off.
    fn candidates(&self, elapsed: Duration, input: &IntervalInput<'_>) -> Option<Candidates> {
        match &self.config.trigger {
            Trigger::Volume(policy) => {
                let volumes = match self.config.source {
                    VolumeSource::Xdp => input.xdp,
                    VolumeSource::Flow => input.flow,
                }?;
                let report = volumes.heavy_hitters(elapsed, policy).ok()?;
                Some(Candidates {
                    hitters: report.hitters,
                    total_bytes: report.totals.bytes,
                    why: std::collections::HashMap::new(),
                })
            }
            Trigger::Anomaly(trigger) => Some(anomaly_candidates(
                *trigger,
                &input.pairing?.anomalies,
                elapsed,
            )),
        }
    }

    /// Adds to `candidates` the announced prefixes of `table` that hold at least
    /// `aggregate.min_held` of the detector's prefixes (held hot, or candidates now), and are
    /// no broader than the shortest lengths the detector acts on.
    fn add_announced(
        &self,
        candidates: &mut Candidates,
        table: &OriginTable,
        aggregate: AnnouncedAggregate,
    ) {
        struct Group {
            origin: String,
            members: std::collections::BTreeSet<Prefix>,
            hitter: HeavyHitter,
        }
        let (shortest_v4, shortest_v6) = self.config.trigger.shortest();
        let held: std::collections::BTreeSet<Prefix> = self
            .hot
            .iter()
            .map(|(prefix, _)| prefix)
            .chain(candidates.hitters.iter().map(|hitter| hitter.prefix))
            .collect();
        let now: std::collections::HashMap<Prefix, HeavyHitter> = candidates
            .hitters
            .iter()
            .map(|hitter| (hitter.prefix, *hitter))
            .collect();
        let mut groups: BTreeMap<Prefix, Group> = BTreeMap::new();
        for prefix in held {
            let Some(announcement) = table.lookup(prefix.addr()) else {
                continue;
            };
            let announced = announcement.prefix;
            // Only an announcement that holds the whole prefix and is wider than it (the
            // table gives the most specific one covering its first address).
            let shortest = if announced.is_ipv4() {
                shortest_v4
            } else {
                shortest_v6
            };
            if announced.prefix_len() >= prefix.prefix_len() || announced.prefix_len() < shortest {
                continue;
            }
            let group = groups.entry(announced).or_insert_with(|| Group {
                origin: announcement.origin.to_string(),
                members: std::collections::BTreeSet::new(),
                hitter: HeavyHitter {
                    prefix: announced,
                    bytes: 0,
                    packets: 0,
                    bytes_per_sec: 0.0,
                    packets_per_sec: 0.0,
                    sources: 0,
                    residual_bytes: 0,
                    residual_packets: 0,
                },
            });
            let _: bool = group.members.insert(prefix);
            if let Some(hitter) = now.get(&prefix) {
                let sum = &mut group.hitter;
                sum.bytes = sum.bytes.saturating_add(hitter.bytes);
                sum.packets = sum.packets.saturating_add(hitter.packets);
                sum.bytes_per_sec += hitter.bytes_per_sec;
                sum.packets_per_sec += hitter.packets_per_sec;
                sum.sources = sum.sources.saturating_add(hitter.sources);
            }
        }
        for (announced, group) in groups {
            if group.members.len() < aggregate.min_held
                || self.suppressed.contains_key(&announced)
                || now.contains_key(&announced)
            {
                continue;
            }
            let _: Option<String> = candidates.why.insert(
                announced,
                format!(
                    "announced {announced} of {}: {} hot prefixes inside",
                    group.origin,
                    group.members.len()
                ),
            );
            candidates.hitters.push(group.hitter);
        }
    }
}

/// The source prefixes whose unpaired flows of the trigger's kind reach its threshold.
fn anomaly_candidates(
    trigger: AnomalyTrigger,
    anomalies: &[Anomaly],
    elapsed: Duration,
) -> Candidates {
    // Reflection counts every port together: an amplifier pool answers on several.
    let mut per_prefix: BTreeMap<Prefix, (u64, u64)> = BTreeMap::new();
    let mut total_bytes = 0u64;
    for anomaly in anomalies {
        let matches = matches!(
            (trigger.kind, anomaly.kind),
            (AnomalyFilter::OneWay, AnomalyKind::OneWay)
                | (AnomalyFilter::Reflection, AnomalyKind::Reflection(_))
        );
        let Ok(prefix) = anomaly.prefix.parse::<Prefix>() else {
            continue;
        };
        if !matches {
            continue;
        }
        total_bytes = total_bytes.saturating_add(anomaly.bytes);
        let (flows, bytes) = per_prefix.entry(prefix).or_default();
        *flows = flows.saturating_add(anomaly.flows);
        *bytes = bytes.saturating_add(anomaly.bytes);
    }
    let seconds = elapsed.as_secs_f64().max(0.001);
    let mut candidates = Candidates {
        total_bytes,
        ..Candidates::default()
    };
    for (prefix, (flows, bytes)) in per_prefix {
        if flows < trigger.flows_per_interval {
            continue;
        }
        #[expect(
            clippy::cast_precision_loss,
            reason = "a rate for a log line: a float's 53 bits are plenty"
        )]
        let bytes_per_sec = bytes as f64 / seconds;
        candidates.hitters.push(HeavyHitter {
            prefix,
            bytes,
            packets: 0,
            bytes_per_sec,
            packets_per_sec: 0.0,
            sources: 0,
            residual_bytes: bytes,
            residual_packets: 0,
        });
        let kind = match trigger.kind {
            AnomalyFilter::OneWay => "one-way (unanswered) flows",
            AnomalyFilter::Reflection => "unrequested flows from reflection ports",
        };
        let _: Option<String> = candidates.why.insert(
            prefix,
            format!(
                "{flows} {kind} in an interval ({bytes} bytes; threshold {})",
                trigger.flows_per_interval
            ),
        );
    }
    candidates
}

const fn family_name(prefix: &Prefix) -> &'static str {
    if prefix.is_ipv4() { "ipv4" } else { "ipv6" }
}

/// Rates and volumes as a log line reads them.
fn describe(hitter: &HeavyHitter, share_bp: u32) -> String {
    format!(
        "{:.0} B/s, {:.0} packets/s from {} sources ({}.{:02}% of the traffic)",
        hitter.bytes_per_sec,
        hitter.packets_per_sec,
        hitter.sources,
        share_bp / 100,
        share_bp % 100
    )
}

fn share_bp(part: u64, total: u64) -> u32 {
    if total == 0 {
        return 0;
    }
    let bp = u128::from(part) * 10_000 / u128::from(total);
    u32::try_from(bp.min(10_000)).unwrap_or(10_000)
}

fn per_sec(value: u64, elapsed: Duration) -> u64 {
    let ms = elapsed.as_millis().max(1);
    u64::try_from(u128::from(value) * 1000 / ms).unwrap_or(u64::MAX)
}

/// The decision logic of the volume detectors, interval by interval.
pub struct VolumeCore {
    detectors: Vec<Detector>,
    top_n: usize,
    snapshot: VolumeSnapshot,
    /// Where each interval's split, top prefixes and anomalies are added for the history.
    tap: Option<SharedTap>,
    /// Origin and announced prefix of the history's rows, and announced aggregation.
    origins: Option<Origins>,
}

impl VolumeCore {
    pub fn new(config: &VolumeConfig) -> Self {
        let detectors = config
            .detectors
            .iter()
            .cloned()
            .map(Detector::new)
            .collect();
        Self {
            detectors,
            top_n: config.top,
            snapshot: VolumeSnapshot::default(),
            tap: None,
            origins: None,
        }
    }

    /// Add each interval's traffic split, top source prefixes and anomalies to `tap`, from the
    /// next interval on; `None` stops.
    pub fn set_tap(&mut self, tap: Option<SharedTap>) {
        self.tap = tap;
    }

    /// Name origins in the history's rows and aggregate by announced prefix with `origins`;
    /// `None`: neither.
    pub fn set_origins(&mut self, origins: Option<Origins>) {
        self.origins = origins;
    }

    /// Take a new configuration. Detectors whose settings did not change keep their hot
    /// prefixes, so a reload neither forgets an incident nor re-announces it.
    pub fn reconfigure(&mut self, config: &VolumeConfig) {
        let mut fresh: BTreeMap<String, Detector> = BTreeMap::new();
        for wanted in &config.detectors {
            let unchanged = self.detectors.iter().any(|d| d.config == *wanted);
            if !unchanged {
                let _: Option<Detector> =
                    fresh.insert(wanted.name.clone(), Detector::new(wanted.clone()));
            }
        }
        let mut old: BTreeMap<String, Detector> = self
            .detectors
            .drain(..)
            .map(|detector| (detector.config.name.clone(), detector))
            .collect();
        self.detectors = config
            .detectors
            .iter()
            .filter_map(|wanted| {
                fresh
                    .remove(&wanted.name)
                    .or_else(|| old.remove(&wanted.name))
            })
            .collect();
        self.top_n = config.top;
    }

    /// The interval that just ended, `elapsed` long: `xdp` and `flow` hold what each source
    /// counted (`None`: the source is off). Returns the blocks to apply.
    pub fn end_interval(
        &mut self,
        now_unix: u64,
        elapsed: Duration,
        xdp: Option<&Volumes>,
        flow: Option<&Volumes>,
    ) -> Vec<DetectorOrder> {
        self.end_interval_with(
            now_unix,
            elapsed,
            &IntervalInput {
                xdp,
                flow,
                ..IntervalInput::default()
            },
        )
    }

    /// [`Self::end_interval`] with the traffic split and the pairing's anomalies too.
    pub fn end_interval_with(
        &mut self,
        now_unix: u64,
        elapsed: Duration,
        input: &IntervalInput<'_>,
    ) -> Vec<DetectorOrder> {
        let elapsed = elapsed.max(Duration::from_millis(1));
        let (xdp, flow) = (input.xdp, input.flow);
        let mut orders = Vec::new();
        let mut totals = Vec::new();
        for (name, volumes) in [("xdp", xdp), ("flow", flow)] {
            let Some(volumes) = volumes else { continue };
            let all = super::Totals::of(&volumes.v4).plus(super::Totals::of(&volumes.v6));
            totals.push(SourceTotals {
                source: name.to_owned(),
                bytes: all.bytes,
                packets: all.packets,
                sources: all.sources,
                overflow_bytes: all.overflow_bytes,
                overflow_packets: all.overflow_packets,
                heap_bytes: u64::try_from(volumes.heap_bytes()).unwrap_or(u64::MAX),
            });
        }
        // One table for the whole interval: a reload in the middle does not mix two.
        let table = self.origins.as_ref().map(Origins::table);
        for detector in &mut self.detectors {
            let Some(mut candidates) = detector.candidates(elapsed, input) else {
                continue;
            };
            detector.suppressed.retain(|_, until| *until > now_unix);
            candidates
                .hitters
                .retain(|hitter| !detector.suppressed.contains_key(&hitter.prefix));
            if let (Some(aggregate), Some(table)) = (detector.config.aggregate, &table) {
                detector.add_announced(&mut candidates, table, aggregate);
            }
            let ban_secs = detector.config.ban.as_secs().max(1);
            let name = &detector.config.name;
            let action = detector.config.action;
            for step in detector.hot.update(&candidates.hitters, now_unix) {
                match step {
                    Action::New {
                        prefix,
                        until,
                        hitter,
                    } => {
                        *self
                            .snapshot
                            .alerts
                            .entry(family_name(&prefix).to_owned())
                            .or_default()
                            .entry(action.name().to_owned())
                            .or_default() += 1;
                        let doing = match action {
                            VolumeAction::Report => "report".to_owned(),
                            VolumeAction::Block => {
                                format!("blocking for {} s", until.saturating_sub(now_unix))
                            }
                        };
                        // Who announces it, where the origins table knows.
                        let origin = table
                            .as_ref()
                            .and_then(|table| table.lookup(prefix.addr()))
                            .map(|found| format!("; {} ({})", found.origin, found.prefix))
                            .unwrap_or_default();
                        let reason = if let Some(why) = candidates.why.get(&prefix) {
                            log::warn!("volume detector {name}: {prefix}: {why} ({doing}){origin}");
                            why.clone()
                        } else {
                            let share = share_bp(hitter.bytes, candidates.total_bytes);
                            let described = describe(&hitter, share);
                            log::warn!(
                                "volume detector {name}: {prefix} over its limit: {described} ({doing}){origin}"
                            );
                            format!("traffic volume: {described}{origin}")
                        };
                        if action == VolumeAction::Block {
                            let _: Option<u64> = detector.ordered_until.insert(prefix, until);
                            orders.push(DetectorOrder {
                                prefix,
                                duration_secs: until.saturating_sub(now_unix).max(1),
                                reason: reason.clone(),
                                source: Source::Volume(name.as_str().into()),
                                new: true,
                            });
                        }
                        let _: Option<String> = detector.reasons.insert(prefix, reason);
                    }
                    Action::Extend { prefix, until } => {
                        log::debug!("volume detector {name}: {prefix} still hot, until {until}");
                        let ordered = detector.ordered_until.get(&prefix).copied().unwrap_or(0);
                        if action == VolumeAction::Block
                            && ordered.saturating_sub(now_unix) < ban_secs / 2
                        {
                            let _: Option<u64> = detector.ordered_until.insert(prefix, until);
                            orders.push(DetectorOrder {
                                prefix,
                                duration_secs: until.saturating_sub(now_unix).max(1),
                                reason: detector.reasons.get(&prefix).cloned().unwrap_or_else(
                                    || "traffic volume: still over the limit".to_owned(),
                                ),
                                source: Source::Volume(name.as_str().into()),
                                new: false,
                            });
                        }
                    }
                    Action::Cooled { prefix } => {
                        let _: Option<String> = detector.reasons.remove(&prefix);
                        let _: Option<u64> = detector.ordered_until.remove(&prefix);
                        log::info!("volume detector {name}: {prefix} cooled down");
                    }
                    Action::Overflow { prefix } => {
                        self.snapshot.hot_overflow += 1;
                        log::warn!(
                            "volume detector {name}: {prefix} over its limit, but the detector already tracks its maximum of hot prefixes"
                        );
                    }
                }
            }
        }
        self.snapshot.interval_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.snapshot.ended_unix = now_unix;
        self.snapshot.top = self.top_rows(elapsed, xdp, flow, &totals);
        self.snapshot.totals = totals;
        self.snapshot.hot = self
            .detectors
            .iter()
            .flat_map(|detector| {
                detector.hot.iter().map(|(prefix, until)| HotRow {
                    detector: detector.config.name.clone(),
                    action: detector.config.action.name().to_owned(),
                    prefix: prefix.to_string(),
                    until_unix: until,
                })
            })
            .collect();
        self.snapshot.traffic = Traffic {
            // Both sources may see the same inbound traffic: XDP's counts are this host's own.
            inbound_local: if xdp.is_some() {
                input.xdp_traffic.inbound_local
            } else {
                input.flow_traffic.inbound_local
            },
            inbound_external: if xdp.is_some() {
                input.xdp_traffic.inbound_external
            } else {
                input.flow_traffic.inbound_external
            },
            outbound_local: input.flow_traffic.outbound_local,
            outbound_external: input.flow_traffic.outbound_external,
        };
        match input.pairing {
            Some(pairing) => {
                self.snapshot.anomalies.clone_from(&pairing.anomalies);
                let status = self
                    .snapshot
                    .pairing
                    .get_or_insert_with(PairingStatus::default);
                status.totals.merge(&pairing.counts);
                status.tracked_flows = u64::try_from(input.tracked_flows).unwrap_or(u64::MAX);
                status.truncated = status.truncated.saturating_add(pairing.truncated);
            }
            None => self.snapshot.anomalies.clear(),
        }
        if let Some(tap) = &self.tap {
            let rows = self.history_rows(xdp.or(flow), table.as_deref());
            let traffic = self.snapshot.traffic;
            let anomalies = self.snapshot.anomalies.clone();
            tap.with(|tap| {
                add_traffic(&mut tap.traffic, &traffic);
                for row in rows {
                    tap.add_top(row);
                }
                for anomaly in anomalies {
                    tap.add_anomaly(anomaly);
                }
            });
        }
        orders
    }

    /// The history's top source prefixes by volume: the inbound source's (XDP when it ran,
    /// else flows, as for the traffic split) top /24s and /64s, with origin and announced
    /// prefix when `table` knows an announcement holding the whole prefix.
    fn history_rows(
        &self,
        volumes: Option<&Volumes>,
        table: Option<&OriginTable>,
    ) -> Vec<history::TopRow> {
        let Some(volumes) = volumes else {
            return Vec::new();
        };
        volumes
            .top(&[HISTORY_LEN_V4], &[HISTORY_LEN_V6], self.top_n)
            .into_iter()
            .map(|entry| {
                let announcement = table
                    .and_then(|table| table.lookup(entry.prefix.addr()))
                    .filter(|found| found.prefix.prefix_len() <= entry.prefix.prefix_len());
                history::TopRow {
                    ranking: Ranking::PrefixByVolume,
                    key: entry.prefix.to_string(),
                    packets: entry.packets,
                    bytes: entry.bytes,
                    origin: announcement.map(|found| found.origin.to_string()),
                    announced: announcement.map(|found| found.prefix.to_string()),
                }
            })
            .collect()
    }

    fn top_rows(
        &self,
        elapsed: Duration,
        xdp: Option<&Volumes>,
        flow: Option<&Volumes>,
        totals: &[SourceTotals],
    ) -> Vec<TopRow> {
        let mut rows = Vec::new();
        for (name, volumes) in [("xdp", xdp), ("flow", flow)] {
            let Some(volumes) = volumes else { continue };
            let total = totals
                .iter()
                .find(|t| t.source == name)
                .map_or(0, |t| t.bytes);
            let v6_lengths: &[u8] = if name == "xdp" {
                &[XDP_MAX_LEN_V6]
            } else {
                &TOP_LENGTHS_V6
            };
            for entry in volumes.top(&TOP_LENGTHS_V4, v6_lengths, self.top_n) {
                let holder = self.detectors.iter().find(|detector| {
                    let source_matches = matches!(
                        (detector.config.source, name),
                        (VolumeSource::Xdp, "xdp") | (VolumeSource::Flow, "flow")
                    );
                    source_matches
                        && detector.hot.iter().any(|(hot, _)| {
                            hot.prefix_len() <= entry.prefix.prefix_len()
                                && hot.contains(entry.prefix.addr())
                        })
                });
                rows.push(TopRow {
                    source: name.to_owned(),
                    family: family_name(&entry.prefix).to_owned(),
                    prefix: entry.prefix.to_string(),
                    bytes: entry.bytes,
                    packets: entry.packets,
                    bytes_per_sec: per_sec(entry.bytes, elapsed),
                    packets_per_sec: per_sec(entry.packets, elapsed),
                    sources: entry.sources,
                    share_bp: share_bp(entry.bytes, total),
                    action: holder.map(|d| d.config.action.name().to_owned()),
                    detector: holder.map(|d| d.config.name.clone()),
                    origin: None,
                    announced: None,
                });
            }
        }
        rows
    }

    /// The owner did not apply `order` (or an operator removed its block): stop tracking the
    /// prefix and leave it out for a ban's length, so the prefixes inside it count on their own.
    pub fn suppress(&mut self, order: &DetectorOrder, now_unix: u64) {
        let Some(detector) = self
            .detectors
            .iter_mut()
            .find(|detector| {
                matches!(&order.source, Source::Volume(name) if **name == *detector.config.name)
            })
        else {
            return;
        };
        let _: bool = detector.hot.forget(&order.prefix);
        let _: Option<String> = detector.reasons.remove(&order.prefix);
        let _: Option<u64> = detector.ordered_until.remove(&order.prefix);
        let until = now_unix.saturating_add(detector.config.ban.as_secs().max(1));
        let _: Option<u64> = detector.suppressed.insert(order.prefix, until);
    }

    pub const fn snapshot(&self) -> &VolumeSnapshot {
        &self.snapshot
    }

    pub const fn snapshot_mut(&mut self) -> &mut VolumeSnapshot {
        &mut self.snapshot
    }
}

/// The XDP volumes' tracking: IPv6 comes per /64.
const fn xdp_track(track: TrackConfig) -> TrackConfig {
    TrackConfig {
        max_len_v6: XDP_MAX_LEN_V6,
        ..track
    }
}

fn track_config(config: &VolumeConfig) -> TrackConfig {
    TrackConfig {
        max_len_v4: 32,
        max_len_v6: 128,
        max_sources: config.max_sources,
    }
}

/// What the collector thread adds to between two intervals.
#[derive(Debug)]
struct FlowTally {
    volumes: Volumes,
    traffic: Traffic,
}

/// What the collector's sink and the engine thread share.
#[derive(Debug)]
struct FlowShared {
    tally: Mutex<FlowTally>,
    /// Behind its own lock: the engine judges an interval's flows while records come in.
    pairing: Mutex<Option<FlowPairing>>,
    /// Swapped on reload without restarting the collector.
    local: Mutex<Arc<LocalNets>>,
    /// The pairing's clock: milliseconds since this.
    started: Instant,
    interval: Duration,
}

impl FlowShared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// One datagram's records: into the volumes and the traffic split, then the pairing.
    fn take_records(&self, records: &[FlowRecord]) {
        let local = Arc::clone(&self.local.lock().unwrap_or_else(PoisonError::into_inner));
        {
            let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
            let FlowTally { volumes, traffic } = &mut *tally;
            volumes.add_flows(records, self.interval);
            for record in records {
                local.add_flow(traffic, record);
            }
        }
        if let Some(pairing) = self
            .pairing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            pairing.observe(records, self.now_ms());
        }
    }
}

/// The collector's sink: every datagram's records go to the volumes, the split and the pairing.
fn flow_sink(shared: Arc<FlowShared>) -> RecordSink {
    Box::new(move |records| shared.take_records(records))
}

/// A new pairing for `settings`; `None` (logged) when they are refused.
fn new_pairing(settings: Option<PairingSettings>) -> Option<FlowPairing> {
    match FlowPairing::new(settings?) {
        Ok(pairing) => Some(pairing),
        Err(err) => {
            log::error!("flow pairing off: {}", crate::error_chain(&err));
            None
        }
    }
}

/// A running flow collector and the volumes it adds to.
struct FlowSide {
    config: FlowConfig,
    collector: FlowCollector,
    shared: Arc<FlowShared>,
    stats: SharedExporterStats,
}

impl FlowSide {
    fn start(
        config: &FlowConfig,
        track: TrackConfig,
        interval: Duration,
        local: Arc<LocalNets>,
        pairing: Option<PairingSettings>,
    ) -> Result<Self, EngineError> {
        let shared = Arc::new(FlowShared {
            tally: Mutex::new(FlowTally {
                volumes: Volumes::new(track).map_err(EngineError::Track)?,
                traffic: Traffic::default(),
            }),
            pairing: Mutex::new(new_pairing(pairing)),
            local: Mutex::new(local),
            started: Instant::now(),
            interval,
        });
        let settings = CollectorSettings {
            listen: config.listen,
            receive_buffer_bytes: config.receive_buffer,
            decoder: config.decoder_settings(),
            exporters: config.exporters.clone(),
        };
        if config.exporters.is_empty() {
            log::warn!(
                "flow collector on {}: volume.flow.exporters is empty, so anyone who can reach the port can report traffic volumes",
                config.listen
            );
        }
        let collector = FlowCollector::start(settings, flow_sink(Arc::clone(&shared)))?;
        log::info!("flow collector listening on udp {}", collector.local_addr());
        let stats = collector.stats();
        Ok(Self {
            config: config.clone(),
            collector,
            shared,
            stats,
        })
    }

    /// The interval's flow volumes and traffic split; the collector goes on with `spare`
    /// (cleared).
    fn swap(&self, spare: &mut Volumes) -> Traffic {
        spare.clear();
        let mut live = self
            .shared
            .tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut live.volumes, spare);
        std::mem::take(&mut live.traffic)
    }

    /// The pairing's interval and the flows it tracks; `None` while pairing is off.
    fn take_pairing(&self) -> Option<(IntervalAnomalies, usize)> {
        let now_ms = self.shared.now_ms();
        let mut pairing = self
            .shared
            .pairing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pairing = pairing.as_mut()?;
        Some((pairing.take_interval(now_ms), pairing.tracked()))
    }

    /// New local prefixes and pairing settings, without restarting the collector; a changed
    /// pairing starts over empty.
    fn set_local(&self, local: Arc<LocalNets>, pairing: Option<PairingSettings>) {
        *self
            .shared
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = local;
        let mut current = self
            .shared
            .pairing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().map(FlowPairing::settings) != pairing.as_ref() {
            *current = new_pairing(pairing);
        }
    }

    fn exporters(&self) -> Vec<ExporterRow> {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats
            .iter()
            .map(|(exporter, s)| ExporterRow {
                exporter: exporter.to_string(),
                datagrams: s.datagrams,
                records: s.records,
                filtered: s.filtered,
                templates: s.templates,
                errors: s
                    .errors
                    .iter()
                    .map(|(kind, n)| (kind.as_str().to_owned(), n))
                    .collect(),
            })
            .collect()
    }
}

/// The pairing's settings of `config`, when pairing is on.
fn pairing_settings(config: &VolumeConfig) -> Option<PairingSettings> {
    config.flow.as_ref()?;
    config
        .pairing
        .as_ref()
        .map(|pairing| pairing.settings(&config.local))
}

enum EngineCommand {
    Reload(Box<VolumeConfig>),
    SetTap(Option<SharedTap>),
    SetOrigins(Option<Origins>),
    Stop,
}

/// The volume thread: drains, decides and publishes every interval.
pub struct VolumeEngine {
    commands: mpsc::Sender<EngineCommand>,
    snapshot: Arc<Mutex<VolumeSnapshot>>,
    thread: Option<JoinHandle<()>>,
    flow_addr: Option<std::net::SocketAddr>,
}

impl VolumeEngine {
    /// Start the collector (when configured) and the interval thread. `xdp` drains the XDP
    /// program's per-source maps (read while `xdp_accounting` is on); blocks go to `owner`.
    /// [`Self::set_tap`] and [`Self::set_origins`] add the history tap and the origins table.
    ///
    /// # Errors
    /// When the flow collector cannot bind.
    pub fn start(
        config: &VolumeConfig,
        xdp: Option<VolumeReader>,
        owner: Handle,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, EngineError> {
        let core = VolumeCore::new(config);
        let track = track_config(config);
        let local = Arc::new(LocalNets::new(&config.local));
        let flow = config
            .flow
            .as_ref()
            .map(|flow| {
                FlowSide::start(
                    flow,
                    track,
                    config.interval,
                    Arc::clone(&local),
                    pairing_settings(config),
                )
            })
            .transpose()?;
        let flow_addr = flow.as_ref().map(|f| f.collector.local_addr());
        let snapshot = Arc::new(Mutex::new(VolumeSnapshot::default()));
        let (commands, inbox) = mpsc::channel();
        let mut worker = Worker {
            core,
            config: config.clone(),
            local,
            xdp,
            xdp_volumes: Volumes::new(xdp_track(track)).map_err(EngineError::Track)?,
            xdp_traffic: Traffic::default(),
            flow,
            flow_volumes: Volumes::new(track).map_err(EngineError::Track)?,
            owner,
            clock,
            snapshot: Arc::clone(&snapshot),
            rejected_before: 0,
            discard_xdp: true,
        };
        let thread = std::thread::Builder::new()
            .name("volume".into())
            .spawn(move || worker.run(&inbox))
            .map_err(EngineError::Spawn)?;
        Ok(Self {
            commands,
            snapshot,
            thread: Some(thread),
            flow_addr,
        })
    }

    /// The state after the last interval.
    pub fn snapshot(&self) -> Arc<Mutex<VolumeSnapshot>> {
        Arc::clone(&self.snapshot)
    }

    /// Where the flow collector listens, when it runs.
    pub const fn flow_addr(&self) -> Option<std::net::SocketAddr> {
        self.flow_addr
    }

    /// Apply a reloaded configuration from the next interval on.
    pub fn reload(&self, config: VolumeConfig) {
        let _ = self.commands.send(EngineCommand::Reload(Box::new(config)));
    }

    /// Add every interval's traffic split, top source prefixes and flow anomalies to `tap`
    /// (from the next interval on); `None` stops adding.
    pub fn set_tap(&self, tap: Option<SharedTap>) {
        let _ = self.commands.send(EngineCommand::SetTap(tap));
    }

    /// Use `origins` for the history rows' origin and announced prefix and for detectors'
    /// `aggregate = "announced"`; `None`: neither.
    pub fn set_origins(&self, origins: Option<Origins>) {
        let _ = self.commands.send(EngineCommand::SetOrigins(origins));
    }

    /// Stop the thread and the collector.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(EngineCommand::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the volume thread panicked");
        }
    }
}

impl Drop for VolumeEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    core: VolumeCore,
    config: VolumeConfig,
    /// `config.local`, looked up.
    local: Arc<LocalNets>,
    xdp: Option<VolumeReader>,
    xdp_volumes: Volumes,
    /// The split of what `xdp_volumes` holds.
    xdp_traffic: Traffic,
    flow: Option<FlowSide>,
    /// The flow volumes of the interval being evaluated (swapped with the collector's).
    flow_volumes: Volumes,
    owner: Handle,
    clock: Arc<dyn Clock>,
    snapshot: Arc<Mutex<VolumeSnapshot>>,
    /// Datagrams refused by collectors stopped on reload.
    rejected_before: u64,
    /// The next drain of the XDP maps holds stale counts: read and drop them.
    discard_xdp: bool,
}

impl Worker {
    fn run(&mut self, inbox: &mpsc::Receiver<EngineCommand>) {
        // Counts from before this start (the program counts while no daemon runs, or a
        // previous run's last interval) are not this interval's.
        self.discard_xdp = true;
        self.drain_xdp();
        let mut started = Instant::now();
        let mut next = started + self.config.interval;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(EngineCommand::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(EngineCommand::Reload(config)) => {
                    self.reload(*config);
                    continue;
                }
                Ok(EngineCommand::SetTap(tap)) => {
                    self.core.set_tap(tap);
                    continue;
                }
                Ok(EngineCommand::SetOrigins(origins)) => {
                    self.core.set_origins(origins);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now < next {
                continue;
            }
            self.interval(now.duration_since(started));
            started = now;
            next += self.config.interval;
            if next <= now {
                // Fell behind (a stopped process, a slow drain): start over from now.
                next = now + self.config.interval;
            }
        }
        if let Some(flow) = self.flow.take() {
            flow.collector.stop();
        }
    }

    fn reload(&mut self, config: VolumeConfig) {
        self.core.reconfigure(&config);
        if config.xdp_accounting && !self.config.xdp_accounting {
            // The maps hold whatever was counted before accounting went off: not this interval.
            self.discard_xdp = true;
        }
        if config.local != self.config.local {
            self.local = Arc::new(LocalNets::new(&config.local));
        }
        let flow_changed = self.flow.as_ref().map(|f| &f.config) != config.flow.as_ref()
            || config.interval != self.config.interval;
        if flow_changed || track_config(&config) != track_config(&self.config) {
            let track = track_config(&config);
            if let Some(old) = self.flow.take() {
                self.rejected_before += old.collector.rejected();
                old.collector.stop();
            }
            match (Volumes::new(xdp_track(track)), Volumes::new(track)) {
                (Ok(xdp), Ok(flow)) => {
                    self.xdp_volumes = xdp;
                    self.flow_volumes = flow;
                }
                (Err(err), _) | (_, Err(err)) => log::error!("volume tracking: {err}"),
            }
            if let Some(flow) = &config.flow {
                match FlowSide::start(
                    flow,
                    track,
                    config.interval,
                    Arc::clone(&self.local),
                    pairing_settings(&config),
                ) {
                    Ok(side) => self.flow = Some(side),
                    Err(err) => {
                        log::error!("flow collector not restarted: {}", crate::error_chain(&err));
                    }
                }
            }
        } else if let Some(flow) = &self.flow {
            flow.set_local(Arc::clone(&self.local), pairing_settings(&config));
        }
        self.config = config;
    }

    /// Read the XDP volume maps into `xdp_volumes` and `xdp_traffic` (cleared first), or into
    /// nothing when `discard_xdp` says the counts are stale. Whether they hold this interval.
    fn drain_xdp(&mut self) -> bool {
        self.xdp_volumes.clear();
        self.xdp_traffic = Traffic::default();
        let discard = std::mem::take(&mut self.discard_xdp);
        let Some(reader) = self.xdp.as_mut().filter(|_| self.config.xdp_accounting) else {
            return false;
        };
        let volumes = &mut self.xdp_volumes;
        let traffic = &mut self.xdp_traffic;
        let local = &self.local;
        let result = reader.drain(&mut |source: IpAddr, packets, bytes| {
            if !discard {
                volumes.add(source, bytes, packets);
                local.add_inbound(traffic, source, bytes);
            }
        });
        if let Err(err) = result {
            self.core.snapshot_mut().drain_errors += 1;
            log::error!("volume accounting: {}", crate::error_chain(&err));
        }
        self.core.snapshot_mut().xdp_sampling = reader.sampling();
        !discard
    }

    fn interval(&mut self, elapsed: Duration) {
        let xdp_on = self.drain_xdp();
        let flow_traffic = self
            .flow
            .as_ref()
            .map(|flow| flow.swap(&mut self.flow_volumes))
            .unwrap_or_default();
        let pairing = self.flow.as_ref().and_then(FlowSide::take_pairing);
        let now_unix = self.clock.now_unix();
        let orders = self.core.end_interval_with(
            now_unix,
            elapsed,
            &IntervalInput {
                xdp: xdp_on.then_some(&self.xdp_volumes),
                flow: self.flow.is_some().then_some(&self.flow_volumes),
                xdp_traffic: self.xdp_traffic,
                flow_traffic,
                pairing: pairing.as_ref().map(|(anomalies, _)| anomalies),
                tracked_flows: pairing.as_ref().map_or(0, |(_, tracked)| *tracked),
            },
        );
        self.apply(orders, now_unix);
        let mut snapshot = self.core.snapshot().clone();
        if let Some(flow) = &self.flow {
            snapshot.exporters = flow.exporters();
            // A restarted collector (reload) starts over: add what earlier ones refused.
            snapshot.flow_rejected = self.rejected_before + flow.collector.rejected();
        }
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    /// Hand the interval's orders to the owner. An extension whose block is gone (an
    /// operator unblocked it) is not put back: the prefix is left out for a ban's length.
    fn apply(&mut self, orders: Vec<DetectorOrder>, now_unix: u64) {
        let mut current: BTreeMap<Source, Option<std::collections::BTreeSet<Prefix>>> =
            BTreeMap::new();
        for order in orders {
            if !order.new {
                let blocked = current
                    .entry(order.source.clone())
                    .or_insert_with(|| self.blocked_by(&order.source));
                if let Some(blocked) = blocked
                    && !blocked.contains(&order.prefix)
                {
                    log::info!(
                        "volume: {} is no longer blocked by {} (an operator removed it, or a longer block by another source holds it); leaving it alone for a ban's length",
                        order.prefix,
                        order.source
                    );
                    self.core.suppress(&order, now_unix);
                    continue;
                }
            }
            if let Some(reason) = self.block(&order) {
                if order.new {
                    log::warn!("volume: not blocking {}: {reason}", order.prefix);
                } else {
                    log::info!("volume: not extending {}: {reason}", order.prefix);
                }
                self.core.suppress(&order, now_unix);
            }
        }
    }

    /// The prefixes blocked under `source` now; `None` when the owner does not answer.
    fn blocked_by(&self, source: &Source) -> Option<std::collections::BTreeSet<Prefix>> {
        let filter = ListFilter {
            kind: Some(DecisionKind::Block),
            source: Some(source.clone()),
            source_kind: None,
            covering: None,
        };
        let entries = self.owner.list(filter).wait_timeout(OWNER_TIMEOUT).ok()?;
        Some(
            entries
                .into_iter()
                .map(|entry| entry.decision.prefix)
                .collect(),
        )
    }

    /// Ask the owner to block; the reason when it refused (a longer block already in place is
    /// not a refusal).
    fn block(&self, order: &DetectorOrder) -> Option<String> {
        let pending = self.owner.block(BlockOrder {
            prefixes: vec![order.prefix],
            source: order.source.clone(),
            reason: order.reason.clone(),
            expires: Expiry::After(Duration::from_secs(order.duration_secs)),
            force: false,
            evidence: Vec::new(),
            replace_own: false,
        });
        match pending.wait_timeout(OWNER_TIMEOUT) {
            Ok(applied) => applied
                .refused
                .into_iter()
                .map(|(_, refusal)| refusal)
                .find(|refusal| !matches!(refusal, Refusal::AlreadyBlockedLonger { .. }))
                .map(|refusal| refusal.to_string()),
            Err(err) => {
                log::error!("volume: block {}: {err}", order.prefix);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::traffic::volume::{Lengths, Limit, Override, VolumeLimits};

    fn detector(name: &str, action: VolumeAction, bytes_per_second: u64) -> DetectorConfig {
        DetectorConfig {
            name: name.to_owned(),
            source: VolumeSource::Xdp,
            trigger: Trigger::Volume(
                VolumeLimits::new(
                    Limit::bytes(bytes_per_second),
                    Lengths::V4,
                    Lengths::V6,
                    &[],
                )
                .unwrap(),
            ),
            action,
            ban: Duration::from_secs(600),
            cool_intervals: 1,
            aggregate: None,
        }
    }

    fn config(detectors: Vec<DetectorConfig>) -> VolumeConfig {
        VolumeConfig {
            detectors,
            ..VolumeConfig::default()
        }
    }

    fn volumes(traffic: &[(&str, u64)]) -> Volumes {
        let mut volumes = Volumes::new(TrackConfig::default()).unwrap();
        for (source, bytes) in traffic {
            volumes.add(source.parse().unwrap(), *bytes, bytes / 100);
        }
        volumes
    }

    /// 64 hosts spread over one /24 (16 per /26), each under the limit, together over it.
    fn flood() -> Volumes {
        let hosts: Vec<(String, u64)> = (0..64)
            .map(|i| (format!("203.0.113.{}", i * 4 + 1), 200_000))
            .collect();
        let mut traffic: Vec<(&str, u64)> = hosts.iter().map(|(h, b)| (h.as_str(), *b)).collect();
        traffic.push(("198.51.100.7", 50_000));
        volumes(&traffic)
    }

    const TEN_S: Duration = Duration::from_secs(10);

    #[test]
    fn a_volume_block_names_the_origin_of_its_prefix() {
        let mut core = VolumeCore::new(&config(vec![detector(
            "flood",
            VolumeAction::Block,
            1_000_000,
        )]));
        core.set_origins(Some(origins(&[("203.0.112.0/23", 64_500)])));
        let orders = core.end_interval(1000, TEN_S, Some(&flood()), None);
        assert_eq!(orders.len(), 1, "{orders:?}");
        assert!(
            orders[0].reason.ends_with("; AS64500 (203.0.112.0/23)"),
            "{orders:?}"
        );
    }

    #[test]
    fn block_detector_orders_the_aggregate_once_then_extends_it() {
        // 1 MB/s: each host sends 20 kB/s, the /24 1.28 MB/s.
        let mut core = VolumeCore::new(&config(vec![detector(
            "flood",
            VolumeAction::Block,
            1_000_000,
        )]));
        let orders = core.end_interval(1000, TEN_S, Some(&flood()), None);
        assert_eq!(orders.len(), 1, "{orders:?}");
        assert_eq!(orders[0].prefix.to_string(), "203.0.113.0/24");
        assert!(orders[0].new);
        assert_eq!(orders[0].duration_secs, 600);
        assert_eq!(orders[0].source.to_string(), "volume:flood");
        assert_eq!(core.snapshot().alerts["ipv4"]["block"], 1);

        // Still hot with most of the ban left: nothing to ask, no new alert.
        assert!(
            core.end_interval(1010, TEN_S, Some(&flood()), None)
                .is_empty()
        );
        assert_eq!(core.snapshot().alerts["ipv4"]["block"], 1);
        assert_eq!(core.snapshot().hot.len(), 1);
        // Still hot with less than half of the ban left: one extension to a full ban.
        let orders = core.end_interval(1310, TEN_S, Some(&flood()), None);
        assert_eq!(orders.len(), 1, "{orders:?}");
        assert!(!orders[0].new);
        assert_eq!(orders[0].duration_secs, 600);
        assert!(orders[0].reason.contains("64 sources"), "{orders:?}");
        assert!(
            core.end_interval(1320, TEN_S, Some(&flood()), None)
                .is_empty()
        );

        // Cooled: no order, forgotten; hot again later is a new incident.
        let quiet = volumes(&[("198.51.100.7", 50_000)]);
        assert!(
            core.end_interval(1330, TEN_S, Some(&quiet), None)
                .is_empty()
        );
        assert!(core.snapshot().hot.is_empty());
        let orders = core.end_interval(1340, TEN_S, Some(&flood()), None);
        assert!(orders[0].new);
        assert_eq!(core.snapshot().alerts["ipv4"]["block"], 2);
    }

    /// Regression: a block the owner refused (say the /24 holds this host's address) must not
    /// keep covering the prefixes inside it, nor be asked for again every interval.
    #[test]
    fn a_refused_block_stops_covering_the_hosts_inside_it() {
        let mut core = VolumeCore::new(&config(vec![detector(
            "flood",
            VolumeAction::Block,
            1_000_000,
        )]));
        let orders = core.end_interval(1000, TEN_S, Some(&flood()), None);
        assert_eq!(orders[0].prefix.to_string(), "203.0.113.0/24");
        core.suppress(&orders[0], 1000);
        // Now one host of the /24 also goes over the limit by itself.
        let mut traffic = flood();
        traffic.add("203.0.113.9".parse().unwrap(), 20_000_000, 1);
        let orders = core.end_interval(1010, TEN_S, Some(&traffic), None);
        let prefixes: Vec<String> = orders.iter().map(|o| o.prefix.to_string()).collect();
        assert_eq!(prefixes, ["203.0.113.9/32"]);
        assert!(orders[0].new);
        // After a ban's length the /24 is judged again.
        let orders = core.end_interval(1700, TEN_S, Some(&flood()), None);
        let prefixes: Vec<String> = orders.iter().map(|o| o.prefix.to_string()).collect();
        assert_eq!(prefixes, ["203.0.113.0/24"]);
    }

    #[test]
    fn report_detector_orders_nothing_and_counts_alerts() {
        let mut core = VolumeCore::new(&config(vec![detector(
            "watch",
            VolumeAction::Report,
            1_000_000,
        )]));
        assert!(
            core.end_interval(1000, TEN_S, Some(&flood()), None)
                .is_empty()
        );
        assert_eq!(core.snapshot().alerts["ipv4"]["report"], 1);
        let hot = &core.snapshot().hot;
        assert_eq!(hot.len(), 1);
        assert_eq!(hot[0].prefix, "203.0.113.0/24");
        assert_eq!(hot[0].action, "report");
        assert_eq!(hot[0].until_unix, 1600);
    }

    #[test]
    fn detectors_only_see_their_own_source() {
        let mut flow_detector = detector("routers", VolumeAction::Block, 1_000_000);
        flow_detector.source = VolumeSource::Flow;
        let mut core = VolumeCore::new(&config(vec![flow_detector]));
        // The flood only in the XDP counts: the flow detector must not fire.
        assert!(
            core.end_interval(1000, TEN_S, Some(&flood()), Some(&volumes(&[])))
                .is_empty()
        );
        let orders = core.end_interval(1010, TEN_S, Some(&volumes(&[])), Some(&flood()));
        assert_eq!(orders.len(), 1);
    }

    #[test]
    fn top_rows_have_rates_shares_and_the_action_of_a_covering_hot_prefix() {
        let mut core = VolumeCore::new(&config(vec![detector(
            "flood",
            VolumeAction::Block,
            1_000_000,
        )]));
        let _ = core.end_interval(1000, TEN_S, Some(&flood()), None);
        let top = &core.snapshot().top;
        assert_eq!(top.len(), 20);
        let first = &top[0];
        assert_eq!(first.prefix, "203.0.113.0/24");
        assert_eq!(first.bytes, 64 * 200_000);
        assert_eq!(first.bytes_per_sec, 64 * 20_000);
        assert_eq!(first.sources, 64);
        // 12.8 MB of 12.85 MB.
        assert_eq!(first.share_bp, 9961);
        assert_eq!(first.action.as_deref(), Some("block"));
        // A host inside the blocked /24 shows the block too; the other host does not.
        assert!(top.iter().any(|row| row.prefix.ends_with("/32")
            && row.prefix.starts_with("203.0.113.")
            && row.action.as_deref() == Some("block")));
        let totals = &core.snapshot().totals[0];
        assert_eq!(totals.source, "xdp");
        assert_eq!(totals.bytes, 64 * 200_000 + 50_000);
        assert_eq!(totals.sources, 65);
    }

    #[test]
    fn exempt_override_keeps_a_prefix_out() {
        let mut exempted = detector("flood", VolumeAction::Block, 1_000_000);
        exempted.trigger = Trigger::Volume(
            VolumeLimits::new(
                Limit::bytes(1_000_000),
                Lengths::V4,
                Lengths::V6,
                &[Override::exempt("203.0.113.0/24".parse().unwrap())],
            )
            .unwrap(),
        );
        let mut core = VolumeCore::new(&config(vec![exempted]));
        assert!(
            core.end_interval(1000, TEN_S, Some(&flood()), None)
                .is_empty()
        );
    }

    #[test]
    fn reload_keeps_unchanged_detectors_hot_and_resets_changed_ones() {
        let keep = detector("keep", VolumeAction::Block, 1_000_000);
        let change = detector("change", VolumeAction::Block, 1_000_000);
        let mut core = VolumeCore::new(&config(vec![keep.clone(), change.clone()]));
        assert_eq!(
            core.end_interval(1000, TEN_S, Some(&flood()), None).len(),
            2
        );
        let mut changed = change;
        changed.ban = Duration::from_secs(60);
        core.reconfigure(&config(vec![keep, changed]));
        // Late enough that the kept detector's block is due for an extension.
        let orders = core.end_interval(1310, TEN_S, Some(&flood()), None);
        let kinds: Vec<(String, bool)> = orders
            .iter()
            .map(|o| (o.source.to_string(), o.new))
            .collect();
        assert!(
            kinds.contains(&("volume:keep".to_owned(), false)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("volume:change".to_owned(), true)),
            "{kinds:?}"
        );
    }

    fn origins(rows: &[(&str, u32)]) -> Origins {
        let mut builder = crate::origins::TableBuilder::new();
        for (prefix, asn) in rows {
            builder.add(
                prefix.parse().unwrap(),
                crate::origins::OriginAs::Single(*asn),
                50,
            );
        }
        Origins::with_table(builder.build())
    }

    fn record(source: &str, destination: &str, protocol: u8, ports: (u16, u16)) -> FlowRecord {
        FlowRecord {
            destination: destination.parse().unwrap(),
            protocol,
            source_port: ports.0,
            destination_port: ports.1,
            tcp_flags: (protocol == 6).then_some(0x02),
            ..FlowRecord::new(source.parse().unwrap(), 1_000, 2)
        }
    }

    #[test]
    fn the_composed_sink_feeds_volumes_split_and_pairing() {
        let local = Arc::new(LocalNets::new(&["198.51.100.0/24".parse().unwrap()]));
        let shared = Arc::new(FlowShared {
            tally: Mutex::new(FlowTally {
                volumes: Volumes::new(TrackConfig::default()).unwrap(),
                traffic: Traffic::default(),
            }),
            pairing: Mutex::new(new_pairing(Some(PairingSettings {
                local: vec!["198.51.100.0/24".parse().unwrap()],
                ..PairingSettings::default()
            }))),
            local: Mutex::new(local),
            started: Instant::now(),
            interval: TEN_S,
        });
        let mut sink = flow_sink(Arc::clone(&shared));
        sink(&[
            // A scan nobody answers, and a conversation in both directions.
            record("203.0.113.9", "198.51.100.5", 6, (40_000, 23)),
            record("192.0.2.1", "198.51.100.5", 6, (40_001, 443)),
            record("198.51.100.5", "192.0.2.1", 6, (443, 40_001)),
        ]);
        let tally = shared.tally.lock().unwrap();
        assert_eq!(tally.volumes.v4.leaves(), 3);
        assert_eq!(
            (
                tally.traffic.inbound_external,
                tally.traffic.outbound_external
            ),
            (2_000, 1_000)
        );
        drop(tally);
        let interval = shared
            .pairing
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .take_interval(u64::MAX);
        assert_eq!(interval.counts.matched, 1);
        assert_eq!(
            interval.anomalies,
            [Anomaly {
                prefix: "203.0.113.0/24".into(),
                kind: AnomalyKind::OneWay,
                flows: 1,
                bytes: 1_000,
            }]
        );
    }

    fn one_way(prefix: &str, flows: u64) -> Anomaly {
        Anomaly {
            prefix: prefix.into(),
            kind: AnomalyKind::OneWay,
            flows,
            bytes: flows * 60,
        }
    }

    #[test]
    fn the_tap_gets_the_split_top_prefixes_with_origins_and_anomalies() {
        let mut core = VolumeCore::new(&config(vec![]));
        let tap = SharedTap::new();
        core.set_tap(Some(tap.clone()));
        core.set_origins(Some(origins(&[("203.0.113.0/24", 64_500)])));
        let pairing = IntervalAnomalies {
            anomalies: vec![one_way("192.0.2.0/24", 4)],
            ..IntervalAnomalies::default()
        };
        let split = Traffic {
            inbound_local: 10,
            inbound_external: 20,
            ..Traffic::default()
        };
        let flows = volumes(&[]);
        let _ = core.end_interval_with(
            1000,
            TEN_S,
            &IntervalInput {
                xdp: Some(&flood()),
                flow: Some(&flows),
                xdp_traffic: split,
                flow_traffic: Traffic {
                    inbound_local: 99,
                    outbound_external: 5,
                    ..Traffic::default()
                },
                pairing: Some(&pairing),
                tracked_flows: 3,
            },
        );
        let taken = tap.take();
        // Inbound from XDP (flows would count it twice), outbound from flows.
        assert_eq!(
            taken.traffic,
            Traffic {
                inbound_local: 10,
                inbound_external: 20,
                outbound_external: 5,
                ..Traffic::default()
            }
        );
        assert_eq!(core.snapshot().traffic, taken.traffic);
        let keys: Vec<(&str, Option<&str>, Option<&str>)> = taken
            .top
            .iter()
            .map(|row| {
                (
                    row.key.as_str(),
                    row.origin.as_deref(),
                    row.announced.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("203.0.113.0/24", Some("AS64500"), Some("203.0.113.0/24")),
                ("198.51.100.0/24", None, None),
            ]
        );
        assert_eq!(taken.top[0].bytes, 64 * 200_000);
        assert_eq!(taken.top[0].ranking, Ranking::PrefixByVolume);
        assert_eq!(taken.anomalies, pairing.anomalies);
        assert_eq!(core.snapshot().anomalies, pairing.anomalies);
        assert_eq!(core.snapshot().pairing.as_ref().unwrap().tracked_flows, 3);
        // Without origins the rows name none.
        core.set_origins(None);
        let _ = core.end_interval(1010, TEN_S, Some(&flood()), None);
        assert!(tap.take().top.iter().all(|row| row.origin.is_none()));
    }

    /// Hosts of 203.0.113.0/24 at 2 MB/s each over a 1 MB/s limit: each is hot alone.
    fn hot_hosts(count: u8) -> Volumes {
        let hosts: Vec<String> = (1..=count).map(|i| format!("203.0.113.{i}")).collect();
        let traffic: Vec<(&str, u64)> = hosts.iter().map(|h| (h.as_str(), 20_000_000)).collect();
        volumes(&traffic)
    }

    fn aggregating(min_held: usize) -> DetectorConfig {
        DetectorConfig {
            trigger: Trigger::Volume(
                VolumeLimits::new(
                    Limit::bytes(1_000_000),
                    Lengths { min: 24, max: 32 },
                    Lengths::V6,
                    &[],
                )
                .unwrap(),
            ),
            aggregate: Some(AnnouncedAggregate { min_held }),
            ..detector("agg", VolumeAction::Block, 1_000_000)
        }
    }

    fn ordered(orders: &[DetectorOrder]) -> Vec<String> {
        let mut prefixes: Vec<String> = orders.iter().map(|o| o.prefix.to_string()).collect();
        prefixes.sort();
        prefixes
    }

    #[test]
    fn announced_aggregation_orders_the_announcement_of_enough_hot_prefixes() {
        let table = || origins(&[("203.0.113.0/24", 64_500), ("202.0.0.0/7", 64_501)]);
        // Three hot hosts inside the announced /24: the /24, which holds them, is ordered.
        let mut core = VolumeCore::new(&config(vec![aggregating(3)]));
        core.set_origins(Some(table()));
        let orders = core.end_interval(1000, TEN_S, Some(&hot_hosts(3)), None);
        assert_eq!(ordered(&orders), ["203.0.113.0/24"]);
        assert_eq!(
            orders[0].reason,
            "announced 203.0.113.0/24 of AS64500: 3 hot prefixes inside"
        );
        assert_eq!(orders[0].source.to_string(), "volume:agg");

        // Two: only the hosts.
        let mut core = VolumeCore::new(&config(vec![aggregating(3)]));
        core.set_origins(Some(table()));
        let orders = core.end_interval(1000, TEN_S, Some(&hot_hosts(2)), None);
        assert_eq!(ordered(&orders), ["203.0.113.1/32", "203.0.113.2/32"]);

        // Hosts held from earlier intervals count too: the third makes the /24.
        let orders = core.end_interval(1010, TEN_S, Some(&hot_hosts(3)), None);
        assert_eq!(ordered(&orders), ["203.0.113.0/24"]);

        // Announced only as a /7, broader than the detector's shortest length (/24): never.
        let mut core = VolumeCore::new(&config(vec![aggregating(3)]));
        core.set_origins(Some(origins(&[("202.0.0.0/7", 64_501)])));
        let orders = core.end_interval(1000, TEN_S, Some(&hot_hosts(3)), None);
        assert_eq!(orders.len(), 3, "{orders:?}");
        assert!(orders.iter().all(|o| o.prefix.prefix_len() == 32));

        // Without an origins table, or without aggregate: no aggregation.
        let mut core = VolumeCore::new(&config(vec![aggregating(3)]));
        assert_eq!(
            core.end_interval(1000, TEN_S, Some(&hot_hosts(3)), None)
                .len(),
            3
        );
        let mut plain = aggregating(3);
        plain.aggregate = None;
        let mut core = VolumeCore::new(&config(vec![plain]));
        core.set_origins(Some(table()));
        assert_eq!(
            core.end_interval(1000, TEN_S, Some(&hot_hosts(3)), None)
                .len(),
            3
        );
    }

    fn scans_detector(flows_per_interval: u64) -> DetectorConfig {
        DetectorConfig {
            source: VolumeSource::Flow,
            trigger: Trigger::Anomaly(AnomalyTrigger {
                kind: AnomalyFilter::OneWay,
                flows_per_interval,
            }),
            ..detector("scans", VolumeAction::Block, 1)
        }
    }

    #[test]
    fn an_anomaly_detector_acts_at_its_threshold_through_the_hot_set() {
        let mut core = VolumeCore::new(&config(vec![scans_detector(100)]));
        let interval = |anomalies: Vec<Anomaly>| IntervalAnomalies {
            anomalies,
            ..IntervalAnomalies::default()
        };
        let flows = volumes(&[]);
        let run = |core: &mut VolumeCore, now: u64, pairing: Option<&IntervalAnomalies>| {
            core.end_interval_with(
                now,
                TEN_S,
                &IntervalInput {
                    flow: Some(&flows),
                    pairing,
                    ..IntervalInput::default()
                },
            )
        };
        let under = interval(vec![
            one_way("203.0.113.0/24", 99),
            Anomaly {
                // Reflection does not count for a one-way detector.
                kind: AnomalyKind::Reflection(123),
                ..one_way("198.51.100.0/24", 500)
            },
        ]);
        assert!(run(&mut core, 1000, Some(&under)).is_empty());
        let at = interval(vec![one_way("203.0.113.0/24", 100)]);
        let orders = run(&mut core, 1010, Some(&at));
        assert_eq!(ordered(&orders), ["203.0.113.0/24"]);
        assert!(orders[0].new);
        assert!(
            orders[0]
                .reason
                .starts_with("100 one-way (unanswered) flows in an interval"),
            "{}",
            orders[0].reason
        );
        // Still hot: no new order; pairing off: nothing judged, nothing cooled.
        assert!(run(&mut core, 1020, Some(&at)).is_empty());
        assert!(run(&mut core, 1030, None).is_empty());
        assert_eq!(core.snapshot().hot.len(), 1);
        // Quiet: cooled.
        assert!(run(&mut core, 1040, Some(&interval(vec![]))).is_empty());
        assert!(core.snapshot().hot.is_empty());

        // Reflection: every port of a prefix together.
        let mut reflection = scans_detector(10);
        reflection.trigger = Trigger::Anomaly(AnomalyTrigger {
            kind: AnomalyFilter::Reflection,
            flows_per_interval: 10,
        });
        let mut core = VolumeCore::new(&config(vec![reflection]));
        let ports = interval(vec![
            Anomaly {
                kind: AnomalyKind::Reflection(123),
                ..one_way("192.0.2.0/24", 6)
            },
            Anomaly {
                kind: AnomalyKind::Reflection(53),
                ..one_way("192.0.2.0/24", 4)
            },
        ]);
        let orders = core.end_interval_with(
            1000,
            TEN_S,
            &IntervalInput {
                flow: Some(&flows),
                pairing: Some(&ports),
                ..IntervalInput::default()
            },
        );
        assert_eq!(ordered(&orders), ["192.0.2.0/24"]);
    }
}
