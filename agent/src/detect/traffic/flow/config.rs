//! The flow collector's configuration: the `[volume.flow]` table, as validated by
//! `crate::config`.
use std::{net::IpAddr, net::SocketAddr, time::Duration};

use super::{DecoderSettings, DirectionFilter};
use crate::prefix::Prefix;

/// `template_timeout` when the table names none.
pub const DEFAULT_TEMPLATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// `max_templates_per_exporter` at most: with the largest templates (about 1.4 KiB each with
/// their indexes; a usual one about 330 bytes) and the decoder's 64 exporters, about 350 MiB.
pub const MAX_TEMPLATES_PER_EXPORTER: usize = 4096;

/// The NetFlow v5/v9 / IPFIX collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Where exporters send to; the port is not 0.
    pub listen: SocketAddr,
    /// The socket's receive buffer in bytes, 64 KiB to 1 GiB.
    pub receive_buffer: usize,
    pub direction: DirectionFilter,
    /// Exporter SNMP ifIndexes whose flows count; empty: any. No repeats.
    pub ingress_interfaces: Vec<u32>,
    /// Addresses or networks datagrams are accepted from; empty: anywhere.
    pub exporters: Vec<Prefix>,
    /// Sampling rates that override what exporters announce; one per exporter.
    pub sampling: Vec<SamplingOverride>,
    /// Templates not refreshed for this long are forgotten; 1m to 24h.
    pub template_timeout: Duration,
    /// Templates held per exporter, 1 to [`MAX_TEMPLATES_PER_EXPORTER`]; beyond, the least
    /// recently used is evicted.
    pub max_templates_per_exporter: usize,
    /// Templates held per source id / observation domain, 1 to `max_templates_per_exporter`;
    /// beyond, the domain's least recently used is evicted.
    pub max_templates_per_domain: usize,
}

impl FlowConfig {
    /// The decoder's settings; bounds the table has no key for keep their defaults.
    pub fn decoder_settings(&self) -> DecoderSettings {
        DecoderSettings {
            template_timeout_secs: self.template_timeout.as_secs().max(1),
            max_templates_per_exporter: self.max_templates_per_exporter,
            max_templates_per_domain: self.max_templates_per_domain,
            direction: self.direction,
            ingress_interfaces: (!self.ingress_interfaces.is_empty())
                .then(|| self.ingress_interfaces.iter().copied().collect()),
            sampling_overrides: self
                .sampling
                .iter()
                .map(|s| (s.exporter, u64::from(s.rate)))
                .collect(),
            ..DecoderSettings::default()
        }
    }
}

/// 1 in `rate` packets is sampled by `exporter`, whatever it announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplingOverride {
    /// IPv4-mapped IPv6 is read as IPv4.
    pub exporter: IpAddr,
    /// 1 to 1,000,000.
    pub rate: u32,
}

/// `[volume.pairing]`'s `max_tracked_flows` when the table names none: about 35 MiB when full
/// (the pairing measured about 70 MiB at 262,144).
pub const DEFAULT_MAX_TRACKED_FLOWS: usize = 131_072;
/// `max_tracked_flows` at most: about 1 GiB when full.
pub const MAX_TRACKED_FLOWS: usize = 4 << 20;
/// `answer_window` when the table names none: a usual exporter active timeout.
pub const DEFAULT_ANSWER_WINDOW: Duration = Duration::from_secs(60);

/// Flow pairing (`[volume.pairing]`): the collector's records also go to a
/// [`super::FlowPairing`], whose one-way and reflection flows per source prefix the volume
/// engine publishes and its anomaly detectors act on. The site's own prefixes are
/// `volume.local`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingConfig {
    /// How long a flow's reverse direction may take to come; 1s to 1h.
    pub answer_window: Duration,
    /// Flows tracked at once, 1 to [`MAX_TRACKED_FLOWS`]; beyond, the oldest is evicted.
    pub max_tracked_flows: usize,
    /// Unpaired flows are counted per source prefix of this length: 8 to 32.
    pub prefix_len_v4: u8,
    /// And for IPv6: 16 to 128.
    pub prefix_len_v6: u8,
    /// UDP source ports whose unrequested flows to us are reflection; no repeats.
    pub reflection_ports: Vec<u16>,
}

impl Default for PairingConfig {
    fn default() -> Self {
        Self {
            answer_window: DEFAULT_ANSWER_WINDOW,
            max_tracked_flows: DEFAULT_MAX_TRACKED_FLOWS,
            prefix_len_v4: 24,
            prefix_len_v6: 64,
            reflection_ports: super::DEFAULT_REFLECTION_PORTS.to_vec(),
        }
    }
}

impl PairingConfig {
    /// The pairing's settings, with `local` as the site's prefixes.
    pub fn settings(&self, local: &[Prefix]) -> super::PairingSettings {
        super::PairingSettings {
            answer_window_ms: u64::try_from(self.answer_window.as_millis()).unwrap_or(u64::MAX),
            max_tracked_flows: self.max_tracked_flows,
            prefix_len_v4: self.prefix_len_v4,
            prefix_len_v6: self.prefix_len_v6,
            local: local.to_vec(),
            reflection_ports: self.reflection_ports.clone(),
            ..super::PairingSettings::default()
        }
    }
}
