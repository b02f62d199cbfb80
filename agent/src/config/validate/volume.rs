//! `[volume]`, `[volume.flow]` and `[[volume.detectors]]`: the volume side's tables.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use toml::Spanned;

use crate::{
    config::{
        ConfigError, MAX_COOL_INTERVALS, MAX_DETECTOR_BAN, MAX_DETECTOR_NAME,
        MAX_FLOW_RECEIVE_BUFFER, MAX_FLOW_TEMPLATE_TIMEOUT, MAX_SAMPLING_RATE, MAX_VOLUME_INTERVAL,
        MAX_VOLUME_RATE, MAX_VOLUME_SOURCES, MAX_VOLUME_TOP, MIN_FLOW_RECEIVE_BUFFER,
        MIN_FLOW_TEMPLATE_TIMEOUT, MIN_INTERVAL, format_duration,
        locate::ConfigText,
        raw::{Integer, RawDetector, RawFlow, RawPairing, RawVolume},
    },
    detect::traffic::flow::{
        DEFAULT_MAX_TEMPLATES_PER_DOMAIN, DEFAULT_MAX_TEMPLATES_PER_EXPORTER, FlowConfig,
        PairingConfig, SamplingOverride,
        collector::DEFAULT_RECEIVE_BUFFER_BYTES,
        config::{DEFAULT_TEMPLATE_TIMEOUT, MAX_TEMPLATES_PER_EXPORTER, MAX_TRACKED_FLOWS},
    },
    detect::traffic::volume::{
        AnnouncedAggregate, AnomalyTrigger, DetectorConfig, Lengths, Limit, Override, Trigger,
        VolumeAction, VolumeConfig, VolumeLimits, VolumeSource,
        config::{
            DEFAULT_AGGREGATE_MIN, DEFAULT_COOL_INTERVALS, DEFAULT_DETECTOR_BAN, MAX_LOCAL_PREFIXES,
        },
    },
    prefix::Prefix,
};

/// `volume.pairing.answer_window` at most.
const MAX_ANSWER_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);
/// A detector's `aggregate_min` at most.
const MAX_AGGREGATE_MIN: u16 = 1000;

/// The volume sources a detector may use.
#[derive(Clone, Copy)]
struct Sources {
    xdp: bool,
    flow: bool,
    pairing: bool,
}

impl ConfigText<'_> {
    pub(super) fn volume(&self, raw: &RawVolume) -> Result<VolumeConfig, ConfigError> {
        let d = VolumeConfig::default();
        let top: u16 = self.integer(
            "volume.top",
            raw.top.as_ref(),
            1,
            u16::try_from(MAX_VOLUME_TOP).unwrap_or(u16::MAX),
            u16::try_from(d.top).unwrap_or(u16::MAX),
            "prefixes",
        )?;
        let max_sources: u32 = self.integer(
            "volume.max_sources",
            raw.max_sources.as_ref(),
            1,
            u32::try_from(MAX_VOLUME_SOURCES).unwrap_or(u32::MAX),
            u32::try_from(d.max_sources).unwrap_or(u32::MAX),
            "sources",
        )?;
        let xdp_accounting = raw.xdp_accounting.unwrap_or(d.xdp_accounting);
        let flow = match &raw.flow {
            Some(flow) => self.flow(flow)?,
            None => None,
        };
        let local = self.local_prefixes(raw.local.as_ref())?;
        let pairing = match &raw.pairing {
            Some(pairing) => self.pairing(pairing, flow.is_some())?,
            None => None,
        };
        let interval = self.duration_within(
            "volume.interval",
            raw.interval.as_ref(),
            MIN_INTERVAL,
            MAX_VOLUME_INTERVAL,
            d.interval,
        )?;
        let mut detectors: Vec<DetectorConfig> = Vec::with_capacity(raw.detectors.len());
        for (index, raw_detector) in raw.detectors.iter().enumerate() {
            let key = format!("volume.detectors[{index}]");
            let sources = Sources {
                xdp: xdp_accounting,
                flow: flow.is_some(),
                pairing: pairing.is_some(),
            };
            let detector = self.detector(&key, raw_detector, sources)?;
            let name = &detector.name;
            if detector.ban < interval {
                let span = raw_detector
                    .get_ref()
                    .ban
                    .as_ref()
                    .map_or_else(|| raw_detector.span(), Spanned::span);
                return Err(self.invalid(
                    &format!("{key}.ban"),
                    span,
                    format_args!(
                        "detector {name:?}: a ban of {} is shorter than volume.interval ({}): the block would lapse before the next interval could extend it",
                        format_duration(detector.ban),
                        format_duration(interval)
                    ),
                ));
            }
            // Flows are unauthenticated UDP: blocking on them takes a list of who may send.
            if detector.action == VolumeAction::Block
                && detector.source == VolumeSource::Flow
                && flow.as_ref().is_some_and(|flow| flow.exporters.is_empty())
            {
                return Err(self.invalid(
                    &format!("{key}.action"),
                    raw_detector.span(),
                    format_args!(
                        "detector {name:?} blocks on flow data, which anyone who reaches the collector could forge: set volume.flow.exporters to the exporters' addresses"
                    ),
                ));
            }
            if detectors.iter().any(|seen| seen.name == detector.name) {
                let name = &raw.detectors[index].get_ref().name;
                return Err(self.invalid(
                    &format!("{key}.name"),
                    name.span(),
                    format_args!("{:?} names another detector too", name.get_ref()),
                ));
            }
            detectors.push(detector);
        }
        Ok(VolumeConfig {
            interval,
            xdp_accounting,
            top: usize::from(top),
            max_sources: usize::try_from(max_sources).unwrap_or(usize::MAX),
            flow,
            local,
            pairing,
            detectors,
        })
    }

    /// `volume.local`: networks (no host bits set), each once, at most [`MAX_LOCAL_PREFIXES`].
    fn local_prefixes(
        &self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Result<Vec<Prefix>, ConfigError> {
        let key = "volume.local";
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        if raw.get_ref().len() > MAX_LOCAL_PREFIXES {
            return Err(self.invalid(
                key,
                raw.span(),
                format_args!(
                    "{} prefixes; at most {MAX_LOCAL_PREFIXES} (give the covering networks)",
                    raw.get_ref().len()
                ),
            ));
        }
        let mut local: Vec<Prefix> = Vec::with_capacity(raw.get_ref().len());
        for value in raw.get_ref() {
            let prefix = self.network(key, value)?;
            if local.contains(&prefix) {
                return Err(self.invalid(
                    key,
                    value.span(),
                    format_args!("{prefix} is listed twice"),
                ));
            }
            local.push(prefix);
        }
        Ok(local)
    }

    /// `None` when `enabled = false`; the other keys are checked all the same.
    fn pairing(
        &self,
        raw: &Spanned<RawPairing>,
        flow: bool,
    ) -> Result<Option<PairingConfig>, ConfigError> {
        let table = raw.get_ref();
        let d = PairingConfig::default();
        let answer_window = self.duration_within(
            "volume.pairing.answer_window",
            table.answer_window.as_ref(),
            MIN_INTERVAL,
            MAX_ANSWER_WINDOW,
            d.answer_window,
        )?;
        let max_tracked_flows: u32 = self.integer(
            "volume.pairing.max_tracked_flows",
            table.max_tracked_flows.as_ref(),
            1,
            u32::try_from(MAX_TRACKED_FLOWS).unwrap_or(u32::MAX),
            u32::try_from(d.max_tracked_flows).unwrap_or(u32::MAX),
            "flows",
        )?;
        // Shorter prefixes would blame whole regions for one scanner.
        let prefix_len_v4: u8 = self.integer(
            "volume.pairing.prefix_len_v4",
            table.prefix_len_v4.as_ref(),
            8,
            32,
            d.prefix_len_v4,
            "bits",
        )?;
        let prefix_len_v6: u8 = self.integer(
            "volume.pairing.prefix_len_v6",
            table.prefix_len_v6.as_ref(),
            16,
            128,
            d.prefix_len_v6,
            "bits",
        )?;
        let reflection_ports = match &table.reflection_ports {
            None => d.reflection_ports,
            Some(values) => {
                let key = "volume.pairing.reflection_ports";
                let mut ports: Vec<u16> = Vec::with_capacity(values.len());
                for value in values {
                    let port: u16 = self.integer(key, Some(value), 1, u16::MAX, 1, "(UDP port)")?;
                    if ports.contains(&port) {
                        return Err(self.invalid(
                            key,
                            value.span(),
                            format_args!("port {port} is listed twice"),
                        ));
                    }
                    ports.push(port);
                }
                ports
            }
        };
        if table.enabled == Some(false) {
            return Ok(None);
        }
        if !flow {
            return Err(self.invalid(
                "volume.pairing",
                raw.span(),
                "pairing matches the flow collector's records: it needs an enabled [volume.flow] table (or enabled = false here)",
            ));
        }
        Ok(Some(PairingConfig {
            answer_window,
            max_tracked_flows: usize::try_from(max_tracked_flows).unwrap_or(usize::MAX),
            prefix_len_v4,
            prefix_len_v6,
            reflection_ports,
        }))
    }

    /// `None` when `enabled = false`; the other keys are checked all the same.
    fn flow(&self, raw: &Spanned<RawFlow>) -> Result<Option<FlowConfig>, ConfigError> {
        let table = raw.get_ref();
        let listen = match &table.listen {
            None => None,
            Some(listen) => {
                let text = listen.get_ref();
                let addr = text.parse::<SocketAddr>().map_err(|_| {
                    self.invalid(
                        "volume.flow.listen",
                        listen.span(),
                        format_args!(
                            "{text:?} is not an IP address and port (e.g. \"0.0.0.0:2055\", \"[::]:2055\")"
                        ),
                    )
                })?;
                if addr.port() == 0 {
                    return Err(self.invalid(
                        "volume.flow.listen",
                        listen.span(),
                        format_args!("{text:?}: port 0 is not a port exporters can send to"),
                    ));
                }
                Some(addr)
            }
        };
        let receive_buffer: u32 = self.integer(
            "volume.flow.receive_buffer",
            table.receive_buffer.as_ref(),
            u32::try_from(MIN_FLOW_RECEIVE_BUFFER).unwrap_or(u32::MAX),
            u32::try_from(MAX_FLOW_RECEIVE_BUFFER).unwrap_or(u32::MAX),
            u32::try_from(DEFAULT_RECEIVE_BUFFER_BYTES).unwrap_or(u32::MAX),
            "bytes",
        )?;
        let mut ingress_interfaces: Vec<u32> = Vec::with_capacity(table.ingress_interfaces.len());
        for value in &table.ingress_interfaces {
            let key = "volume.flow.ingress_interfaces";
            let ifindex: u32 = self.integer(key, Some(value), 0, u32::MAX, 0, "(ifIndex)")?;
            if ingress_interfaces.contains(&ifindex) {
                return Err(self.invalid(
                    key,
                    value.span(),
                    format_args!("ifIndex {ifindex} is listed twice"),
                ));
            }
            ingress_interfaces.push(ifindex);
        }
        let exporters = table
            .exporters
            .iter()
            .map(|text| {
                text.get_ref()
                    .parse::<Prefix>()
                    .map_err(|err| self.invalid("volume.flow.exporters", text.span(), err))
            })
            .collect::<Result<Vec<Prefix>, _>>()?;
        let mut sampling: Vec<SamplingOverride> = Vec::with_capacity(table.sampling.len());
        for (index, entry) in table.sampling.iter().enumerate() {
            let entry = entry.get_ref();
            let key = format!("volume.flow.sampling[{index}]");
            let text = entry.exporter.get_ref();
            let exporter = text
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| {
                    let why = if text.contains('/') {
                        "is a prefix; give the exporter's address"
                    } else {
                        "is not an IP address"
                    };
                    self.invalid(
                        &format!("{key}.exporter"),
                        entry.exporter.span(),
                        format_args!("{text:?} {why}"),
                    )
                })?
                .to_canonical();
            if sampling.iter().any(|seen| seen.exporter == exporter) {
                return Err(self.invalid(
                    &format!("{key}.exporter"),
                    entry.exporter.span(),
                    format_args!("exporter {exporter} is listed twice"),
                ));
            }
            let rate = self.integer(
                &format!("{key}.rate"),
                Some(&entry.rate),
                1,
                MAX_SAMPLING_RATE,
                1,
                "(1 in this many packets)",
            )?;
            sampling.push(SamplingOverride { exporter, rate });
        }
        let template_timeout = self.duration_within(
            "volume.flow.template_timeout",
            table.template_timeout.as_ref(),
            MIN_FLOW_TEMPLATE_TIMEOUT,
            MAX_FLOW_TEMPLATE_TIMEOUT,
            DEFAULT_TEMPLATE_TIMEOUT,
        )?;
        let (per_exporter, per_domain) = self.flow_template_bounds(table)?;
        if table.enabled == Some(false) {
            return Ok(None);
        }
        let Some(listen) = listen else {
            return Err(self.invalid(
                "volume.flow.listen",
                raw.span(),
                "required: the address and port exporters send to (e.g. \"0.0.0.0:2055\"); or enabled = false",
            ));
        };
        Ok(Some(FlowConfig {
            listen,
            receive_buffer: usize::try_from(receive_buffer).unwrap_or(usize::MAX),
            direction: table.direction.unwrap_or_default(),
            ingress_interfaces,
            exporters,
            sampling,
            template_timeout,
            max_templates_per_exporter: per_exporter,
            max_templates_per_domain: per_domain,
        }))
    }

    /// `volume.flow.max_templates_per_exporter` and `max_templates_per_domain`.
    fn flow_template_bounds(&self, table: &RawFlow) -> Result<(usize, usize), ConfigError> {
        let max = u32::try_from(MAX_TEMPLATES_PER_EXPORTER).unwrap_or(u32::MAX);
        let default = |value: usize| u32::try_from(value).unwrap_or(max);
        let per_exporter: u32 = self.integer(
            "volume.flow.max_templates_per_exporter",
            table.max_templates_per_exporter.as_ref(),
            1,
            max,
            default(DEFAULT_MAX_TEMPLATES_PER_EXPORTER),
            "templates",
        )?;
        let per_domain: u32 = self.integer(
            "volume.flow.max_templates_per_domain",
            table.max_templates_per_domain.as_ref(),
            1,
            per_exporter,
            default(DEFAULT_MAX_TEMPLATES_PER_DOMAIN).min(per_exporter),
            "templates (at most max_templates_per_exporter)",
        )?;
        let size = |value: u32| usize::try_from(value).unwrap_or(usize::MAX);
        Ok((size(per_exporter), size(per_domain)))
    }

    /// `key` is `volume.detectors[N]`.
    fn detector(
        &self,
        key: &str,
        raw: &Spanned<RawDetector>,
        on: Sources,
    ) -> Result<DetectorConfig, ConfigError> {
        let detector = raw.get_ref();
        let name = detector.name.get_ref();
        if name.is_empty()
            || name.len() > MAX_DETECTOR_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(self.invalid(
                &format!("{key}.name"),
                detector.name.span(),
                format_args!(
                    "{name:?} is not a detector name: 1 to {MAX_DETECTOR_NAME} letters, digits, '_' or '-'"
                ),
            ));
        }
        let source = match (&detector.anomaly, &detector.source) {
            (Some(_), Some(given)) if *given.get_ref() != VolumeSource::Flow => {
                return Err(self.invalid(
                    &format!("{key}.source"),
                    given.span(),
                    format_args!(
                        "detector {name:?} acts on anomalies, which come from flow pairing: give source = \"flow\" or leave it out"
                    ),
                ));
            }
            (Some(_), _) => VolumeSource::Flow,
            (None, given) => given
                .as_ref()
                .map_or_else(VolumeSource::default, |s| *s.get_ref()),
        };
        let needs = match source {
            VolumeSource::Xdp if !on.xdp => Some("volume.xdp_accounting = true"),
            VolumeSource::Flow if !on.flow => Some("an enabled [volume.flow] table"),
            VolumeSource::Xdp | VolumeSource::Flow => None,
        };
        if let Some(needs) = needs {
            let (span, default) = match &detector.source {
                Some(value) => (value.span(), ""),
                None => (raw.span(), " (the default)"),
            };
            return Err(self.invalid(
                &format!("{key}.source"),
                span,
                format_args!(
                    "detector {name:?}: source \"{}\"{default} needs {needs}",
                    source.name()
                ),
            ));
        }
        let trigger = match &detector.anomaly {
            Some(anomaly) => self.anomaly_trigger(key, raw, anomaly, on.pairing)?,
            None => Trigger::Volume(self.volume_limits(key, raw)?),
        };
        let aggregate = self.aggregate(key, detector)?;
        let action = detector.action.unwrap_or_default();
        let ban = self.duration_within(
            &format!("{key}.ban"),
            detector.ban.as_ref(),
            MIN_INTERVAL,
            MAX_DETECTOR_BAN,
            DEFAULT_DETECTOR_BAN,
        )?;
        let cool_intervals = self.integer(
            &format!("{key}.cool_intervals"),
            detector.cool_intervals.as_ref(),
            1,
            MAX_COOL_INTERVALS,
            DEFAULT_COOL_INTERVALS,
            "intervals",
        )?;
        Ok(DetectorConfig {
            name: name.clone(),
            source,
            trigger,
            action,
            ban,
            cool_intervals,
            aggregate,
        })
    }

    /// A volume detector's rates, overrides and prefix lengths.
    fn volume_limits(
        &self,
        key: &str,
        raw: &Spanned<RawDetector>,
    ) -> Result<VolumeLimits, ConfigError> {
        let detector = raw.get_ref();
        let name = detector.name.get_ref();
        if let Some(flows) = &detector.flows_per_interval {
            return Err(self.invalid(
                &format!("{key}.flows_per_interval"),
                flows.span(),
                format_args!(
                    "detector {name:?}: only with anomaly = \"one_way\" or \"reflection\""
                ),
            ));
        }
        let limit = self.limits(
            key,
            detector.bytes_per_second.as_ref(),
            detector.packets_per_second.as_ref(),
        )?;
        if limit.is_exempt() {
            return Err(self.invalid(
                &format!("{key}.bytes_per_second"),
                raw.span(),
                format_args!(
                    "detector {name:?} has no limit: give bytes_per_second, packets_per_second or both"
                ),
            ));
        }
        let mut overrides: Vec<Override> = Vec::with_capacity(detector.overrides.len());
        for (index, entry) in detector.overrides.iter().enumerate() {
            let key = format!("{key}.overrides[{index}]");
            let entry = entry.get_ref();
            let prefix = self.network(&format!("{key}.prefix"), &entry.prefix)?;
            if overrides.iter().any(|seen| seen.prefix == prefix) {
                return Err(self.invalid(
                    &format!("{key}.prefix"),
                    entry.prefix.span(),
                    format_args!("{prefix} has another override in this detector"),
                ));
            }
            let limit = self.limits(
                &key,
                entry.bytes_per_second.as_ref(),
                entry.packets_per_second.as_ref(),
            )?;
            if entry.exempt != limit.is_exempt() {
                let message = if entry.exempt {
                    "exempt = true takes no bytes_per_second or packets_per_second"
                } else {
                    "give bytes_per_second, packets_per_second or exempt = true"
                };
                return Err(self.invalid(
                    &key,
                    entry.prefix.span(),
                    format_args!("override for {prefix}: {message}"),
                ));
            }
            // An exempt override is one whose limit has neither rate.
            overrides.push(Override { prefix, limit });
        }
        let lengths_v4 = self.prefix_len_range(
            &format!("{key}.prefix_len_v4"),
            detector.prefix_len_v4.as_ref(),
            32,
            Lengths::V4,
        )?;
        let lengths_v6 = self.prefix_len_range(
            &format!("{key}.prefix_len_v6"),
            detector.prefix_len_v6.as_ref(),
            128,
            Lengths::V6,
        )?;
        // Everything the policy checks has been checked above, with the key and place.
        VolumeLimits::new(limit, lengths_v4, lengths_v6, &overrides)
            .map_err(|err| self.invalid(key, raw.span(), err))
    }

    /// `anomaly` and `flows_per_interval`; a volume detector's keys do not apply.
    fn anomaly_trigger(
        &self,
        key: &str,
        raw: &Spanned<RawDetector>,
        anomaly: &Spanned<crate::detect::traffic::volume::AnomalyFilter>,
        pairing: bool,
    ) -> Result<Trigger, ConfigError> {
        let detector = raw.get_ref();
        let name = detector.name.get_ref();
        let kind = *anomaly.get_ref();
        if !pairing {
            return Err(self.invalid(
                &format!("{key}.anomaly"),
                anomaly.span(),
                format_args!(
                    "detector {name:?}: anomaly = \"{}\" needs an enabled [volume.pairing] table",
                    kind.name()
                ),
            ));
        }
        let volume_keys = [
            (
                "bytes_per_second",
                detector.bytes_per_second.as_ref().map(Spanned::span),
            ),
            (
                "packets_per_second",
                detector.packets_per_second.as_ref().map(Spanned::span),
            ),
            (
                "prefix_len_v4",
                detector.prefix_len_v4.as_ref().map(Spanned::span),
            ),
            (
                "prefix_len_v6",
                detector.prefix_len_v6.as_ref().map(Spanned::span),
            ),
            ("overrides", detector.overrides.first().map(Spanned::span)),
        ];
        if let Some((volume_key, Some(span))) = volume_keys.into_iter().find(|(_, s)| s.is_some()) {
            return Err(self.invalid(
                &format!("{key}.{volume_key}"),
                span,
                format_args!(
                    "detector {name:?} acts on anomalies (prefixes of volume.pairing's lengths, no rates): {volume_key} does not apply"
                ),
            ));
        }
        let Some(flows) = &detector.flows_per_interval else {
            return Err(self.invalid(
                &format!("{key}.flows_per_interval"),
                raw.span(),
                format_args!(
                    "detector {name:?}: required with anomaly: the {} flows from one source prefix in an interval that make it hot",
                    kind.name()
                ),
            ));
        };
        let max = i64::try_from(MAX_VOLUME_RATE).unwrap_or(i64::MAX);
        let flows_per_interval = self
            .integer(
                &format!("{key}.flows_per_interval"),
                Some(flows),
                1,
                max,
                1,
                "flows",
            )?
            .unsigned_abs();
        Ok(Trigger::Anomaly(AnomalyTrigger {
            kind,
            flows_per_interval,
        }))
    }

    /// `aggregate` and `aggregate_min`.
    fn aggregate(
        &self,
        key: &str,
        detector: &RawDetector,
    ) -> Result<Option<AnnouncedAggregate>, ConfigError> {
        let min_held: u16 = self.integer(
            &format!("{key}.aggregate_min"),
            detector.aggregate_min.as_ref(),
            2,
            MAX_AGGREGATE_MIN,
            u16::try_from(DEFAULT_AGGREGATE_MIN).unwrap_or(u16::MAX),
            "prefixes",
        )?;
        match (&detector.aggregate, &detector.aggregate_min) {
            (Some(_), _) => Ok(Some(AnnouncedAggregate {
                min_held: usize::from(min_held),
            })),
            (None, Some(value)) => Err(self.invalid(
                &format!("{key}.aggregate_min"),
                value.span(),
                "only with aggregate = \"announced\"",
            )),
            (None, None) => Ok(None),
        }
    }

    /// `KEY.bytes_per_second` and `KEY.packets_per_second`, each 1 to [`MAX_VOLUME_RATE`].
    fn limits(
        &self,
        key: &str,
        bytes: Option<&Spanned<Integer>>,
        packets: Option<&Spanned<Integer>>,
    ) -> Result<Limit, ConfigError> {
        let max = i64::try_from(MAX_VOLUME_RATE).unwrap_or(i64::MAX);
        let rate = |name: &str, value: Option<&Spanned<Integer>>, unit: &str| {
            value
                .map(|value| {
                    self.integer(&format!("{key}.{name}"), Some(value), 1, max, 1, unit)
                        .map(i64::unsigned_abs)
                })
                .transpose()
        };
        Ok(Limit {
            bytes_per_sec: rate("bytes_per_second", bytes, "bytes per second")?,
            packets_per_sec: rate("packets_per_second", packets, "packets per second")?,
        })
    }

    /// A prefix that is a network: host bits set are an error naming them.
    fn network(&self, key: &str, value: &Spanned<String>) -> Result<Prefix, ConfigError> {
        let text = value.get_ref();
        let (prefix, cleared) =
            Prefix::parse(text).map_err(|err| self.invalid(key, value.span(), err))?;
        if cleared {
            // The address as written, IPv4-mapped IPv6 read as IPv4 like the prefix.
            let written = text
                .trim()
                .split('/')
                .next()
                .and_then(|addr| addr.parse::<IpAddr>().ok())
                .map(|addr| {
                    if prefix.is_ipv4() {
                        addr.to_canonical()
                    } else {
                        addr
                    }
                });
            let bits = match (written, prefix.addr()) {
                (Some(IpAddr::V4(written)), IpAddr::V4(network)) => {
                    IpAddr::V4(Ipv4Addr::from_bits(written.to_bits() ^ network.to_bits()))
                }
                (Some(IpAddr::V6(written)), IpAddr::V6(network)) => {
                    IpAddr::V6(Ipv6Addr::from_bits(written.to_bits() ^ network.to_bits()))
                }
                _ => prefix.addr(),
            };
            return Err(self.invalid(
                key,
                value.span(),
                format_args!(
                    "{text:?} has host bits set ({bits}) below /{}; the network is {prefix}",
                    prefix.prefix_len()
                ),
            ));
        }
        Ok(prefix)
    }

    /// `[min, max]` prefix lengths, `min <= max <= max_len`.
    fn prefix_len_range(
        &self,
        key: &str,
        value: Option<&Spanned<Vec<Spanned<Integer>>>>,
        max_len: u8,
        default: Lengths,
    ) -> Result<Lengths, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let [min, max] = value.get_ref().as_slice() else {
            return Err(self.invalid(
                key,
                value.span(),
                format_args!(
                    "give [shortest, longest] prefix length, e.g. [{}, {}]",
                    default.min, default.max
                ),
            ));
        };
        let min: u8 = self.integer(key, Some(min), 0, max_len, 0, "bits")?;
        let max: u8 = self.integer(key, Some(max), 0, max_len, 0, "bits")?;
        if min > max {
            return Err(self.invalid(
                key,
                value.span(),
                format_args!("[{min}, {max}]: the shortest length is longer than the longest"),
            ));
        }
        Ok(Lengths { min, max })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{
        config::{MAX_VOLUME_RATE, testing::*},
        detect::traffic::flow::{DirectionFilter, FlowConfig, PairingConfig, SamplingOverride},
        detect::traffic::volume::{
            AnnouncedAggregate, AnomalyFilter, AnomalyTrigger, DetectorConfig, Lengths, Limit,
            Override, Trigger, VolumeAction, VolumeConfig, VolumeLimits, VolumeSource,
        },
    };

    /// A detector's policy from its limits and `(min, max)` prefix lengths.
    fn policy(
        bytes_per_sec: Option<u64>,
        packets_per_sec: Option<u64>,
        (min_v4, max_v4): (u8, u8),
        (min_v6, max_v6): (u8, u8),
        overrides: &[Override],
    ) -> VolumeLimits {
        let limit = Limit {
            bytes_per_sec,
            packets_per_sec,
        };
        let v4 = Lengths {
            min: min_v4,
            max: max_v4,
        };
        let v6 = Lengths {
            min: min_v6,
            max: max_v6,
        };
        VolumeLimits::new(limit, v4, v6, overrides).unwrap()
    }

    #[test]
    fn shipped_volume_examples_parse_when_uncommented() {
        let start = EXAMPLE
            .find("\n[volume]\n")
            .expect("[volume] in the example");
        let is_example = |line: &str| {
            line.strip_prefix("# ").is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.starts_with(['[', '{', ']'])
                    || rest.split_once(" = ").is_some_and(|(key, _)| {
                        !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
            })
        };
        let mut text = EXAMPLE[..start].to_owned();
        for line in EXAMPLE[start..].lines() {
            text.push_str(if is_example(line) { &line[2..] } else { line });
            text.push('\n');
        }
        let volume = parse(&format!("{text}\n[[interfaces]]\nname = \"eth0\"\n"))
            .unwrap()
            .volume;
        let flow = volume.flow.expect("the example [volume.flow]");
        assert_eq!(flow.listen.to_string(), "0.0.0.0:2055");
        assert_eq!(
            flow.sampling,
            vec![SamplingOverride {
                exporter: "192.0.2.1".parse().unwrap(),
                rate: 1000
            }]
        );
        assert_eq!(volume.local.len(), 2);
        assert_eq!(volume.pairing, Some(PairingConfig::default()));
        assert_eq!(volume.detectors.len(), 2);
        assert_eq!(volume.detectors[0].name, "flood");
        assert_eq!(
            volume.detectors[0].aggregate,
            Some(AnnouncedAggregate { min_held: 3 })
        );
        assert_eq!(
            volume.detectors[1].trigger,
            Trigger::Anomaly(AnomalyTrigger {
                kind: AnomalyFilter::OneWay,
                flows_per_interval: 100
            })
        );
        let Trigger::Volume(policy) = &volume.detectors[0].trigger else {
            panic!("the example flood detector is a volume detector");
        };
        assert_eq!(policy.overrides().len(), 2);
    }

    #[test]
    fn volume_is_off_by_default() {
        let volume = parse(MINIMAL).unwrap().volume;
        assert_eq!(volume, VolumeConfig::default());
        assert_eq!(volume.interval, Duration::from_secs(10));
        assert!(volume.xdp_accounting);
        assert_eq!(volume.top, 20);
        assert_eq!(volume.max_sources, 1_048_576);
        assert_eq!(volume.flow, None);
        assert!(volume.detectors.is_empty());
        // An empty table, and a disabled collector without a listen address.
        assert_eq!(
            parse(&with_section("[volume]\n")).unwrap().volume,
            VolumeConfig::default()
        );
        let disabled = parse(&with_section("[volume.flow]\nenabled = false\n")).unwrap();
        assert_eq!(disabled.volume, VolumeConfig::default());
        // A collector with only its address gets the defaults; so does a minimal detector.
        let text = with_section(
            "[volume.flow]\nlisten = \"[::]:2055\"\n[[volume.detectors]]\nname = \"d\"\npackets_per_second = 1\n",
        );
        let volume = parse(&format!("{text}\n[[interfaces]]\nname = \"eth0\"\n"))
            .unwrap()
            .volume;
        assert_eq!(
            volume.flow,
            Some(FlowConfig {
                listen: "[::]:2055".parse().unwrap(),
                receive_buffer: 8 << 20,
                direction: DirectionFilter::Ingress,
                ingress_interfaces: Vec::new(),
                exporters: Vec::new(),
                sampling: Vec::new(),
                template_timeout: Duration::from_secs(1800),
                max_templates_per_exporter: 256,
                max_templates_per_domain: 64,
            })
        );
        assert_eq!(
            volume.detectors,
            vec![DetectorConfig {
                name: "d".into(),
                source: VolumeSource::Xdp,
                trigger: Trigger::Volume(policy(None, Some(1), (16, 32), (32, 128), &[])),
                action: VolumeAction::Report,
                ban: Duration::from_secs(600),
                cool_intervals: 1,
                aggregate: None,
            }]
        );
    }

    #[test]
    fn every_volume_key_is_read() {
        let text = with_section(
            r#"[volume]
interval = "1m"
xdp_accounting = false
top = 1000
max_sources = 16777216
local = ["203.0.113.0/24", "2001:db8:100::/48"]

[volume.flow]
enabled = true
listen = "192.0.2.10:6343"
receive_buffer = 65536
direction = "any"
ingress_interfaces = [0, 7, 4294967295]
exporters = ["192.0.2.1", "2001:db8:e::/48"]
sampling = [{ exporter = "192.0.2.1", rate = 1000 }, { exporter = "::ffff:192.0.2.2", rate = 1 }, { exporter = "2001:db8::1", rate = 1000000 }]
template_timeout = "24h"
max_templates_per_exporter = 4096
max_templates_per_domain = 4096

[volume.pairing]
enabled = true
answer_window = "2m"
max_tracked_flows = 4194304
prefix_len_v4 = 32
prefix_len_v6 = 48
reflection_ports = [19, 1900]

[[volume.detectors]]
name = "transit-flood_1"
source = "flow"
bytes_per_second = 125000000
packets_per_second = 9007199254740992
prefix_len_v4 = [24, 24]
prefix_len_v6 = [0, 128]
action = "block"
ban = "365d"
cool_intervals = 1000
overrides = [
  { prefix = "198.51.100.0/24", bytes_per_second = 1250000000 },
  { prefix = "192.0.2.0/24", exempt = true },
  { prefix = "2001:db8::/32", packets_per_second = 5, bytes_per_second = 6 },
  { prefix = "::ffff:203.0.113.0/120", packets_per_second = 1 },
]
aggregate = "announced"
aggregate_min = 1000

[[volume.detectors]]
name = "pps"
source = "flow"
packets_per_second = 1
ban = "1m"

[[volume.detectors]]
name = "scans"
anomaly = "one_way"
flows_per_interval = 9007199254740992
action = "block"
aggregate = "announced"

[[volume.detectors]]
name = "amplifiers"
source = "flow"
anomaly = "reflection"
flows_per_interval = 1
"#,
        );
        let override_ = |prefix: &str, bytes, packets| Override {
            prefix: prefix.parse().unwrap(),
            limit: Limit {
                bytes_per_sec: bytes,
                packets_per_sec: packets,
            },
        };
        assert_eq!(
            parse(&text).unwrap().volume,
            VolumeConfig {
                interval: Duration::from_secs(60),
                xdp_accounting: false,
                top: 1000,
                max_sources: 16 << 20,
                local: vec![
                    "203.0.113.0/24".parse().unwrap(),
                    "2001:db8:100::/48".parse().unwrap()
                ],
                pairing: Some(PairingConfig {
                    answer_window: Duration::from_secs(120),
                    max_tracked_flows: 4 << 20,
                    prefix_len_v4: 32,
                    prefix_len_v6: 48,
                    reflection_ports: vec![19, 1900],
                }),
                flow: Some(FlowConfig {
                    listen: "192.0.2.10:6343".parse().unwrap(),
                    receive_buffer: 65536,
                    direction: DirectionFilter::Any,
                    ingress_interfaces: vec![0, 7, u32::MAX],
                    exporters: vec![
                        "192.0.2.1".parse().unwrap(),
                        "2001:db8:e::/48".parse().unwrap()
                    ],
                    sampling: vec![
                        SamplingOverride {
                            exporter: "192.0.2.1".parse().unwrap(),
                            rate: 1000
                        },
                        SamplingOverride {
                            exporter: "192.0.2.2".parse().unwrap(),
                            rate: 1
                        },
                        SamplingOverride {
                            exporter: "2001:db8::1".parse().unwrap(),
                            rate: 1_000_000
                        },
                    ],
                    template_timeout: Duration::from_secs(86_400),
                    max_templates_per_exporter: 4096,
                    max_templates_per_domain: 4096,
                }),
                detectors: vec![
                    DetectorConfig {
                        name: "transit-flood_1".into(),
                        source: VolumeSource::Flow,
                        trigger: Trigger::Volume(policy(
                            Some(125_000_000),
                            Some(MAX_VOLUME_RATE),
                            (24, 24),
                            (0, 128),
                            &[
                                override_("198.51.100.0/24", Some(1_250_000_000), None),
                                Override::exempt("192.0.2.0/24".parse().unwrap()),
                                override_("2001:db8::/32", Some(6), Some(5)),
                                override_("203.0.113.0/24", None, Some(1)),
                            ],
                        )),
                        action: VolumeAction::Block,
                        ban: Duration::from_secs(365 * 86_400),
                        cool_intervals: 1000,
                        aggregate: Some(AnnouncedAggregate { min_held: 1000 }),
                    },
                    DetectorConfig {
                        name: "pps".into(),
                        source: VolumeSource::Flow,
                        trigger: Trigger::Volume(policy(None, Some(1), (16, 32), (32, 128), &[])),
                        action: VolumeAction::Report,
                        ban: Duration::from_secs(60),
                        cool_intervals: 1,
                        aggregate: None,
                    },
                    DetectorConfig {
                        name: "scans".into(),
                        source: VolumeSource::Flow,
                        trigger: Trigger::Anomaly(AnomalyTrigger {
                            kind: AnomalyFilter::OneWay,
                            flows_per_interval: MAX_VOLUME_RATE,
                        }),
                        action: VolumeAction::Block,
                        ban: Duration::from_secs(600),
                        cool_intervals: 1,
                        aggregate: Some(AnnouncedAggregate { min_held: 3 }),
                    },
                    DetectorConfig {
                        name: "amplifiers".into(),
                        source: VolumeSource::Flow,
                        trigger: Trigger::Anomaly(AnomalyTrigger {
                            kind: AnomalyFilter::Reflection,
                            flows_per_interval: 1,
                        }),
                        action: VolumeAction::Report,
                        ban: Duration::from_secs(600),
                        cool_intervals: 1,
                        aggregate: None,
                    },
                ],
            }
        );
    }

    #[test]
    fn volume_spellings_round_trip() {
        for action in [VolumeAction::Report, VolumeAction::Block] {
            let text = with_section(&format!(
                "[[volume.detectors]]\nname = \"d\"\nbytes_per_second = 1\naction = \"{}\"\n",
                action.name()
            ));
            assert_eq!(parse(&text).unwrap().volume.detectors[0].action, action);
        }
        for source in [VolumeSource::Xdp, VolumeSource::Flow] {
            let text = with_section(&format!(
                "[volume.flow]\nlisten = \"0.0.0.0:2055\"\n[[volume.detectors]]\nname = \"d\"\nbytes_per_second = 1\nsource = \"{}\"\n",
                source.name()
            ));
            assert_eq!(parse(&text).unwrap().volume.detectors[0].source, source);
        }
        for direction in [DirectionFilter::Ingress, DirectionFilter::Any] {
            let text = with_section(&format!(
                "[volume.flow]\nlisten = \"0.0.0.0:2055\"\ndirection = \"{}\"\n",
                direction.name()
            ));
            let flow = parse(&text).unwrap().volume.flow.unwrap();
            assert_eq!(flow.direction, direction);
        }
    }

    #[test]
    fn volume_and_flow_errors_name_the_key_and_place() {
        assert_errors(
            &[
                (
                    "[volume]\ninterval = \"2h\"",
                    "4:12: volume.interval: 2h is out of range: 1s to 1h",
                ),
                (
                    "[volume.flow]\nlisten = \"0.0.0.0:2055\"\n[[volume.detectors]]\nname = \"f\"\nsource = \"flow\"\npackets_per_second = 1\naction = \"block\"",
                    "5:1: volume.detectors[0].action: detector \"f\" blocks on flow data, which anyone who reaches the collector could forge: set volume.flow.exporters",
                ),
                (
                    "[volume]\ninterval = \"500ms\"",
                    "4:12: volume.interval: 500ms is shorter",
                ),
                (
                    "[volume]\ninterval = 10",
                    "4:12: volume.interval: 10 has no unit",
                ),
                (
                    "[volume]\ntop = 0",
                    "4:7: volume.top: 0 is out of range: 1 to 1000 prefixes",
                ),
                (
                    "[volume]\nmax_sources = 16777217",
                    "4:15: volume.max_sources: 16777217 is out of range",
                ),
                (
                    "[volume]\nxdp_accounting = 1",
                    "4:18: volume.xdp_accounting: invalid type",
                ),
                ("[volume]\nbogus = 1", "4:1: volume: unknown field `bogus`"),
                (
                    "[volume.flow]\nlisten = \"0.0.0.0\"",
                    "4:10: volume.flow.listen: \"0.0.0.0\" is not an IP address and port",
                ),
                (
                    "[volume.flow]\nlisten = \"collector:2055\"",
                    "4:10: volume.flow.listen: \"collector:2055\"",
                ),
                (
                    "[volume.flow]\nlisten = \"0.0.0.0:0\"",
                    "4:10: volume.flow.listen: \"0.0.0.0:0\": port 0",
                ),
                (
                    "[volume.flow]\nenabled = true\n",
                    "3:1: volume.flow.listen: required",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\nreceive_buffer = 65535",
                    "5:18: volume.flow.receive_buffer: 65535 is out of range: 65536 to 1073741824 bytes",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\ndirection = \"egress\"",
                    "5:13: volume.flow.direction: unknown variant `egress`",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\ningress_interfaces = [1, 2, 1]",
                    "5:29: volume.flow.ingress_interfaces: ifIndex 1 is listed twice",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\ningress_interfaces = [4294967296]",
                    "5:23: volume.flow.ingress_interfaces: 4294967296 is out of range",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\nsampling = [{ exporter = \"192.0.2.0/24\", rate = 10 }]",
                    "5:26: volume.flow.sampling[0].exporter: \"192.0.2.0/24\" is a prefix",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\nsampling = [{ exporter = \"gw1\", rate = 10 }]",
                    "5:26: volume.flow.sampling[0].exporter: \"gw1\" is not an IP address",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\nsampling = [{ exporter = \"192.0.2.1\", rate = 10 },\n  { exporter = \"::ffff:192.0.2.1\", rate = 20 }]",
                    "6:16: volume.flow.sampling[1].exporter: exporter 192.0.2.1 is listed twice",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\nsampling = [{ exporter = \"192.0.2.1\", rate = 0 }]",
                    "5:46: volume.flow.sampling[0].rate: 0 is out of range: 1 to 1000000",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\nsampling = [{ exporter = \"192.0.2.1\" }]",
                    "5:13: volume.flow.sampling: missing field `rate`",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\ntemplate_timeout = \"30s\"",
                    "5:20: volume.flow.template_timeout: 30s is out of range: 1m to 1d",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\nmax_templates_per_exporter = 0",
                    "5:30: volume.flow.max_templates_per_exporter: 0 is out of range: 1 to 4096",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\nmax_templates_per_exporter = 8\nmax_templates_per_domain = 9",
                    "6:28: volume.flow.max_templates_per_domain: 9 is out of range: 1 to 8",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\nport = 2055",
                    "5:1: volume.flow: unknown field `port`",
                ),
                // Values are checked even when the collector is off.
                (
                    "[volume.flow]\nenabled = false\nlisten = \"0.0.0.0\"",
                    "5:10: volume.flow.listen: \"0.0.0.0\"",
                ),
            ],
            with_section,
        );
    }

    #[test]
    fn detector_errors_name_the_key_and_place() {
        // Each case goes below a valid detector's name and limit, from line 6 on.
        assert_errors(
            &[
                (
                    "prefix_len_v4 = [24, 16]",
                    "6:17: volume.detectors[0].prefix_len_v4: [24, 16]: the shortest length is longer than the longest",
                ),
                (
                    "prefix_len_v4 = [16, 33]",
                    "6:22: volume.detectors[0].prefix_len_v4: 33 is out of range: 0 to 32 bits",
                ),
                (
                    "prefix_len_v4 = [16]",
                    "6:17: volume.detectors[0].prefix_len_v4: give [shortest, longest] prefix length, e.g. [16, 32]",
                ),
                (
                    "prefix_len_v6 = [64, 129]",
                    "6:22: volume.detectors[0].prefix_len_v6: 129 is out of range: 0 to 128 bits",
                ),
                (
                    "prefix_len_v6 = [128, 64]",
                    "6:17: volume.detectors[0].prefix_len_v6: [128, 64]: the shortest",
                ),
                (
                    "prefix_len_v6 = \"32-128\"",
                    "6:17: volume.detectors.prefix_len_v6: invalid type",
                ),
                ("bogus = 1", "6:1: volume.detectors: unknown field `bogus`"),
                (
                    "action = \"drop\"",
                    "6:10: volume.detectors.action: unknown variant `drop`",
                ),
                (
                    "source = \"sflow\"",
                    "6:10: volume.detectors.source: unknown variant `sflow`",
                ),
                (
                    "source = \"flow\"",
                    "6:10: volume.detectors[0].source: detector \"d\": source \"flow\" needs an enabled [volume.flow] table",
                ),
                (
                    "ban = \"366d\"",
                    "6:7: volume.detectors[0].ban: 52w2d is out of range: 1s to 52w1d",
                ),
                (
                    "ban = \"never\"",
                    "6:7: volume.detectors[0].ban: \"never\" is not a duration",
                ),
                (
                    "ban = \"5s\"",
                    "6:7: volume.detectors[0].ban: detector \"d\": a ban of 5s is shorter than volume.interval (10s)",
                ),
                (
                    "cool_intervals = 0",
                    "6:18: volume.detectors[0].cool_intervals: 0 is out of range: 1 to 1000 intervals",
                ),
                (
                    "packets_per_second = 0",
                    "6:22: volume.detectors[0].packets_per_second: 0 is out of range: 1 to 9007199254740992 packets per second",
                ),
                (
                    "overrides = [{ prefix = \"198.51.100.7/24\", exempt = true }]",
                    "6:25: volume.detectors[0].overrides[0].prefix: \"198.51.100.7/24\" has host bits set (0.0.0.7) below /24; the network is 198.51.100.0/24",
                ),
                (
                    "overrides = [{ prefix = \"2001:db8::1:0/96\", exempt = true }]",
                    "6:25: volume.detectors[0].overrides[0].prefix: \"2001:db8::1:0/96\" has host bits set (::1:0) below /96; the network is 2001:db8::/96",
                ),
                (
                    "overrides = [{ prefix = \"::ffff:192.0.2.1/120\", exempt = true }]",
                    "6:25: volume.detectors[0].overrides[0].prefix: \"::ffff:192.0.2.1/120\" has host bits set (0.0.0.1) below /24; the network is 192.0.2.0/24",
                ),
                (
                    "overrides = [{ prefix = \"192.0.2.0/33\", exempt = true }]",
                    "6:25: volume.detectors[0].overrides[0].prefix: prefix length in \"192.0.2.0/33\"",
                ),
                (
                    "overrides = [{ prefix = \"192.0.2.0/24\", exempt = true },\n  { prefix = \"192.0.2.0/24\", bytes_per_second = 1 }]",
                    "7:14: volume.detectors[0].overrides[1].prefix: 192.0.2.0/24 has another override in this detector",
                ),
                (
                    "overrides = [{ prefix = \"192.0.2.0/24\" }]",
                    "6:25: volume.detectors[0].overrides[0]: override for 192.0.2.0/24: give bytes_per_second, packets_per_second or exempt = true",
                ),
                (
                    "overrides = [{ prefix = \"192.0.2.0/24\", exempt = true, packets_per_second = 1 }]",
                    "6:25: volume.detectors[0].overrides[0]: override for 192.0.2.0/24: exempt = true takes no",
                ),
                (
                    "overrides = [{ prefix = \"192.0.2.0/24\", bytes_per_second = 0 }]",
                    "6:60: volume.detectors[0].overrides[0].bytes_per_second: 0 is out of range",
                ),
                (
                    "overrides = [{ prefix = \"192.0.2.0/24\", exempt = true, bogus = 1 }]",
                    "6:56: volume.detectors.overrides: unknown field `bogus`",
                ),
            ],
            |case| {
                with_section(&format!(
                    "[[volume.detectors]]\nname = \"d\"\nbytes_per_second = 1000\n{case}\n"
                ))
            },
        );
    }

    #[test]
    fn detectors_are_named_uniquely_limited_and_sourced() {
        let detector =
            |name: &str, rest: &str| format!("[[volume.detectors]]\nname = \"{name}\"\n{rest}");
        assert_errors(
            &[
                (
                    &(detector("d", "bytes_per_second = 1\n")
                        + &detector("d", "packets_per_second = 1\n")),
                    "7:8: volume.detectors[1].name: \"d\" names another detector too",
                ),
                (
                    &detector("a b", "bytes_per_second = 1\n"),
                    "4:8: volume.detectors[0].name: \"a b\" is not a detector name",
                ),
                (
                    &detector("", "bytes_per_second = 1\n"),
                    "4:8: volume.detectors[0].name: \"\" is not a detector name",
                ),
                (
                    &detector(&"x".repeat(65), "bytes_per_second = 1\n"),
                    "4:8: volume.detectors[0].name: \"xxx",
                ),
                (
                    &detector("d", "action = \"block\"\n"),
                    "3:1: volume.detectors[0].bytes_per_second: detector \"d\" has no limit",
                ),
                (
                    "[[volume.detectors]]\nbytes_per_second = 1\n",
                    "3:1: volume.detectors: missing field `name`",
                ),
                (
                    &format!(
                        "[volume]\nxdp_accounting = false\n{}",
                        detector("d", "bytes_per_second = 1\n")
                    ),
                    "5:1: volume.detectors[0].source: detector \"d\": source \"xdp\" (the default) needs volume.xdp_accounting = true",
                ),
                (
                    &format!(
                        "[volume]\nxdp_accounting = false\n{}",
                        detector("d", "source = \"xdp\"\nbytes_per_second = 1\n")
                    ),
                    "7:10: volume.detectors[0].source: detector \"d\": source \"xdp\" needs volume.xdp_accounting = true",
                ),
                (
                    &format!(
                        "[volume.flow]\nenabled = false\nlisten = \"[::]:2055\"\n{}",
                        detector("d", "source = \"flow\"\nbytes_per_second = 1\n")
                    ),
                    "8:10: volume.detectors[0].source: detector \"d\": source \"flow\" needs an enabled [volume.flow] table",
                ),
            ],
            with_section,
        );
        parse(&with_section(&detector(
            &"x".repeat(64),
            "bytes_per_second = 1\n",
        )))
        .unwrap();
    }

    #[test]
    fn local_pairing_and_anomaly_errors_name_the_key_and_place() {
        const FLOW: &str = "[volume.flow]\nlisten = \"[::]:2055\"\nexporters = [\"192.0.2.1\"]\n";
        let paired = |rest: &str| format!("{FLOW}[volume.pairing]\n{rest}");
        let detector = |rest: &str| paired(&format!("[[volume.detectors]]\nname = \"d\"\n{rest}"));
        assert_errors(
            &[
                (
                    "[volume]\nlocal = [\"203.0.113.7/24\"]",
                    "4:10: volume.local: \"203.0.113.7/24\" has host bits set (0.0.0.7) below /24",
                ),
                (
                    "[volume]\nlocal = [\"203.0.113.0/24\", \"::ffff:203.0.113.0/120\"]",
                    "4:28: volume.local: 203.0.113.0/24 is listed twice",
                ),
                ("[volume]\nlocal = [\"local\"]", "4:10: volume.local: "),
                (
                    "[volume.pairing]\nanswer_window = \"1m\"",
                    "3:1: volume.pairing: pairing matches the flow collector's records: it needs an enabled [volume.flow] table",
                ),
                (
                    &paired("answer_window = \"2h\""),
                    "7:17: volume.pairing.answer_window: 2h is out of range: 1s to 1h",
                ),
                (
                    &paired("max_tracked_flows = 0"),
                    "7:21: volume.pairing.max_tracked_flows: 0 is out of range: 1 to 4194304 flows",
                ),
                (
                    &paired("prefix_len_v4 = 7"),
                    "7:17: volume.pairing.prefix_len_v4: 7 is out of range: 8 to 32 bits",
                ),
                (
                    &paired("prefix_len_v6 = 129"),
                    "7:17: volume.pairing.prefix_len_v6: 129 is out of range: 16 to 128 bits",
                ),
                (
                    &paired("reflection_ports = [123, 0]"),
                    "7:26: volume.pairing.reflection_ports: 0 is out of range: 1 to 65535",
                ),
                (
                    &paired("reflection_ports = [123, 53, 123]"),
                    "7:30: volume.pairing.reflection_ports: port 123 is listed twice",
                ),
                (
                    &paired("bogus = 1"),
                    "7:1: volume.pairing: unknown field `bogus`",
                ),
                (
                    &detector("anomaly = \"scan\"\nflows_per_interval = 1"),
                    "9:11: volume.detectors.anomaly: unknown variant `scan`",
                ),
                (
                    &detector("anomaly = \"one_way\""),
                    "7:1: volume.detectors[0].flows_per_interval: detector \"d\": required with anomaly",
                ),
                (
                    &detector("anomaly = \"one_way\"\nflows_per_interval = 0"),
                    "10:22: volume.detectors[0].flows_per_interval: 0 is out of range: 1 to 9007199254740992 flows",
                ),
                (
                    &detector(
                        "anomaly = \"one_way\"\nflows_per_interval = 5\nbytes_per_second = 1",
                    ),
                    "11:20: volume.detectors[0].bytes_per_second: detector \"d\" acts on anomalies (prefixes of volume.pairing's lengths, no rates): bytes_per_second does not apply",
                ),
                (
                    &detector(
                        "anomaly = \"one_way\"\nflows_per_interval = 5\nprefix_len_v4 = [24, 32]",
                    ),
                    "11:17: volume.detectors[0].prefix_len_v4: detector \"d\" acts on anomalies",
                ),
                (
                    &detector("anomaly = \"reflection\"\nflows_per_interval = 5\nsource = \"xdp\""),
                    "11:10: volume.detectors[0].source: detector \"d\" acts on anomalies, which come from flow pairing",
                ),
                (
                    &detector("bytes_per_second = 1\nflows_per_interval = 5"),
                    "10:22: volume.detectors[0].flows_per_interval: detector \"d\": only with anomaly",
                ),
                (
                    &format!(
                        "{FLOW}[[volume.detectors]]\nname = \"d\"\nanomaly = \"one_way\"\nflows_per_interval = 5"
                    ),
                    "8:11: volume.detectors[0].anomaly: detector \"d\": anomaly = \"one_way\" needs an enabled [volume.pairing] table",
                ),
                (
                    "[volume.flow]\nlisten = \"[::]:2055\"\n[volume.pairing]\n[[volume.detectors]]\nname = \"d\"\nanomaly = \"one_way\"\nflows_per_interval = 5\naction = \"block\"",
                    "6:1: volume.detectors[0].action: detector \"d\" blocks on flow data",
                ),
                (
                    &detector("bytes_per_second = 1\naggregate = \"origin\""),
                    "10:13: volume.detectors.aggregate: unknown variant `origin`",
                ),
                (
                    &detector("bytes_per_second = 1\naggregate_min = 3"),
                    "10:17: volume.detectors[0].aggregate_min: only with aggregate = \"announced\"",
                ),
                (
                    &detector("bytes_per_second = 1\naggregate = \"announced\"\naggregate_min = 1"),
                    "11:17: volume.detectors[0].aggregate_min: 1 is out of range: 2 to 1000 prefixes",
                ),
            ],
            with_section,
        );
        // Off: checked, not used; and no [volume.flow] needed.
        let off = parse(&with_section(
            "[volume.pairing]\nenabled = false\nanswer_window = \"1m\"\n",
        ))
        .unwrap();
        assert_eq!(off.volume.pairing, None);
        let defaults = parse(&with_section(&paired(""))).unwrap();
        assert_eq!(defaults.volume.pairing, Some(PairingConfig::default()));
        assert_eq!(
            PairingConfig::default().max_tracked_flows,
            131_072,
            "the documented default"
        );
    }
}
