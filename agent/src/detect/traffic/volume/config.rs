//! The volume detectors' configuration: the `[volume]` table and its `[[volume.detectors]]`,
//! as validated by `crate::config`.
use std::time::Duration;

use serde::Deserialize;

use super::VolumeLimits;
use crate::detect::traffic::flow::FlowConfig;

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
            detectors: Vec::new(),
        }
    }
}

/// Blocks or reports prefixes whose traffic goes above a rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    /// 1 to 64 of `A-Z a-z 0-9 _ -`, unique.
    pub name: String,
    pub source: VolumeSource,
    /// Its limit (at least one rate, each 1 to 2^53 per second), the prefix lengths looked
    /// at, and other limits, or none, for some prefixes (no prefix twice).
    pub policy: VolumeLimits,
    pub action: VolumeAction,
    /// How long a block lasts, extended while the prefix stays hot; 1s to 365d.
    pub ban: Duration,
    /// Intervals under the limit before a hot prefix counts as cooled; 1 to 1000.
    pub cool_intervals: u32,
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
