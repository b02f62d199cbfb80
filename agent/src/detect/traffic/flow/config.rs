//! The flow collector's configuration: the `[volume.flow]` table, as validated by
//! `crate::config`.
use std::{net::IpAddr, net::SocketAddr, time::Duration};

use super::DirectionFilter;
use crate::prefix::Prefix;

/// `template_timeout` when the table names none.
pub const DEFAULT_TEMPLATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

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
}

/// 1 in `rate` packets is sampled by `exporter`, whatever it announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplingOverride {
    /// IPv4-mapped IPv6 is read as IPv4.
    pub exporter: IpAddr,
    /// 1 to 1,000,000.
    pub rate: u32,
}
