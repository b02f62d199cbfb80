//! The volume detectors' configuration: the `[volume]` table and its `[[volume.detectors]]`,
//! as validated by `crate::config`.
use std::time::Duration;

use serde::Deserialize;

use super::{Lengths, VolumeLimits};
use crate::{
    detect::traffic::flow::{FlowConfig, PairingConfig},
    prefix::Prefix,
};

/// `volume.interval` when the table names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// `volume.top` when the table names none.
pub const DEFAULT_TOP: usize = 20;
/// `volume.max_sources` when the table names none.
pub const DEFAULT_MAX_SOURCES: usize = 1 << 20;
/// A detector's `ban` when it names none.
pub const DEFAULT_DETECTOR_BAN: Duration = Duration::from_secs(600);
/// A detector's `cool_intervals` when it names none.
pub const DEFAULT_COOL_INTERVALS: u32 = 1;
/// A detector's `aggregate_min` when it names none.
pub const DEFAULT_AGGREGATE_MIN: usize = 3;
/// `volume.local` holds at most this many prefixes.
pub const MAX_LOCAL_PREFIXES: usize = 1024;

/// Per-prefix traffic volumes: sources, interval and detectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeConfig {
    /// How long each measurement interval is; from 1s to 1h.
    pub interval: Duration,
    /// The XDP program counts bytes and packets per source address.
    pub xdp_accounting: bool,
    /// Prefixes exported as metrics and kept for `xdpguard top`; 1 to 1000.
    pub top: usize,
    /// Distinct sources tracked per address family per interval; 1 to 16 Mi.
    pub max_sources: usize,
    /// The flow collector (`[volume.flow]`); `None` when absent or `enabled = false`.
    pub flow: Option<FlowConfig>,
    /// This site's prefixes: traffic is split into local and external by them, and flow
    /// pairing judges flows from outside into them. Empty: every source is external.
    pub local: Vec<Prefix>,
    /// Flow pairing (`[volume.pairing]`); `None` when absent or `enabled = false`. Needs
    /// `flow`.
    pub pairing: Option<PairingConfig>,
    /// `[[volume.detectors]]`, in file order; names are unique.
    pub detectors: Vec<DetectorConfig>,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            xdp_accounting: true,
            top: DEFAULT_TOP,
            max_sources: DEFAULT_MAX_SOURCES,
            flow: None,
            local: Vec::new(),
            pairing: None,
            detectors: Vec::new(),
        }
    }
}

/// Blocks or reports prefixes whose traffic goes above a rate, or whose unpaired flows
/// reach a count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    /// 1 to 64 of `A-Z a-z 0-9 _ -`, unique.
    pub name: String,
    /// Always [`VolumeSource::Flow`] for an anomaly trigger.
    pub source: VolumeSource,
    /// What makes a prefix hot.
    pub trigger: Trigger,
    pub action: VolumeAction,
    /// How long a block lasts, extended while the prefix stays hot; 1s to 365d.
    pub ban: Duration,
    /// Intervals under the limit before a hot prefix counts as cooled; 1 to 1000.
    pub cool_intervals: u32,
    /// Also act on announced prefixes that hold several of the detector's prefixes.
    pub aggregate: Option<AnnouncedAggregate>,
}

/// What makes a prefix hot for a detector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Its limit (at least one rate, each 1 to 2^53 per second), the prefix lengths looked
    /// at, and other limits, or none, for some prefixes (no prefix twice).
    Volume(VolumeLimits),
    /// Unpaired flows of one kind from a source prefix (the pairing's prefix lengths) in one
    /// interval.
    Anomaly(AnomalyTrigger),
}

impl Trigger {
    /// The shortest prefix lengths (IPv4, IPv6) the detector acts on: a volume detector's
    /// `prefix_len_v4/v6` shortest, the defaults (/16, /32) for an anomaly detector. An
    /// announced aggregate broader than these is never asked for.
    pub const fn shortest(&self) -> (u8, u8) {
        match self {
            Self::Volume(policy) => {
                let (v4, v6) = policy.lengths();
                (v4.min, v6.min)
            }
            Self::Anomaly(_) => (Lengths::V4.min, Lengths::V6.min),
        }
    }
}

/// `anomaly = "one_way" | "reflection"` with `flows_per_interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnomalyTrigger {
    pub kind: AnomalyFilter,
    /// Flows of the kind from one source prefix in one interval that make it hot; 1 to 2^53.
    pub flows_per_interval: u64,
}

/// Which unpaired flows an anomaly detector counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyFilter {
    /// Requests from outside nobody answered (scans).
    OneWay,
    /// Unrequested answers from reflection ports, all ports together.
    Reflection,
}

impl AnomalyFilter {
    /// The configuration spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OneWay => "one_way",
            Self::Reflection => "reflection",
        }
    }
}

/// `aggregate = "announced"`: when at least `min_held` of the detector's prefixes (held hot,
/// or hot this interval) lie inside one announced prefix of the origins table, the detector
/// acts on the announced prefix too, if it is no shorter than the trigger's shortest lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnouncedAggregate {
    /// 2 to 1000.
    pub min_held: usize,
}

/// How a detector aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregateBy {
    /// By the announced prefixes of the origins table.
    Announced,
}

/// Where a detector's volumes come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeSource {
    /// The XDP program's per-source counters (`volume.xdp_accounting`).
    #[default]
    Xdp,
    /// The flow collector (`[volume.flow]`).
    Flow,
}

impl VolumeSource {
    /// The configuration spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Flow => "flow",
        }
    }
}

/// What a detector does with a prefix above its limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeAction {
    /// Log it and count it in the metrics.
    #[default]
    Report,
    /// Block it for the detector's `ban`.
    Block,
}

impl VolumeAction {
    /// The configuration spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Block => "block",
        }
    }
}
