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
