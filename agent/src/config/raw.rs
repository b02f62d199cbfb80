//! The file as serde reads it: structs that refuse unknown keys. Integers are read as i64 and
//! range-checked in validation so every limit gets the same kind of message; strings that
//! become typed values are `Spanned` so errors can point at them.
use std::fmt;

use serde::{Deserialize, de};
use toml::Spanned;

use crate::{
    detect::traffic::flow::DirectionFilter,
    detect::traffic::volume::{AggregateBy, AnomalyFilter, VolumeAction, VolumeSource},
    enforce::dataplane::AttachMode,
    enforce::owner::UnknownEntries,
};

/// Top-level keys, for the hint when one is written below a `[table]` header.
pub(super) const TOP_LEVEL_KEYS: [&str; 18] = [
    "interfaces",
    "dry_run",
    "pin_dir",
    "state_dir",
    "control_socket",
    "control",
    "reconcile_interval",
    "unknown_entries",
    "default_ban",
    "metrics",
    "allowlist",
    "guard",
    "capacity",
    "rulesets_dir",
    "scoring",
    "inputs",
    "volume",
    "rulesets",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) interfaces: Option<Spanned<Vec<Spanned<RawInterface>>>>,
    #[serde(default)]
    pub(super) dry_run: bool,
    pub(super) pin_dir: Option<Spanned<String>>,
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) control_socket: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) control: RawControl,
    pub(super) reconcile_interval: Option<Spanned<RawDuration>>,
    pub(super) unknown_entries: Option<UnknownEntries>,
    pub(super) default_ban: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) allowlist: RawAllowlist,
    #[serde(default)]
    pub(super) guard: RawGuard,
    #[serde(default)]
    pub(super) capacity: RawCapacity,
    pub(super) rulesets_dir: Option<Spanned<RawDirs>>,
    #[serde(default)]
    pub(super) scoring: RawScoring,
    #[serde(default)]
    pub(super) inputs: Vec<Spanned<RawInput>>,
    #[serde(default)]
    pub(super) volume: RawVolume,
    #[serde(default)]
    pub(super) rulesets: RawRulesetLimits,
    pub(super) crowdsec: Option<Spanned<RawCrowdsec>>,
    pub(super) fleet: Option<Spanned<RawFleet>>,
    pub(super) origins: Option<Spanned<RawOrigins>>,
    #[serde(default)]
    pub(super) history: RawHistory,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [history] table")]
pub(super) struct RawHistory {
    pub(super) enabled: Option<bool>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<RawDuration>>,
    pub(super) retention: Option<Spanned<RawDuration>>,
    pub(super) max_size: Option<Spanned<Integer>>,
    pub(super) max_sources_per_ruleset: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [origins] table")]
pub(super) struct RawOrigins {
    pub(super) files: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) min_peers: Option<Spanned<Integer>>,
    pub(super) check_every: Option<Spanned<RawDuration>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [fleet] table")]
pub(super) struct RawFleet {
    pub(super) servers: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) nkey_seed_file: Option<Spanned<String>>,
    pub(super) credentials_file: Option<Spanned<String>>,
    pub(super) tls_required: Option<bool>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) cert_file: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) bucket: Option<Spanned<String>>,
    pub(super) publish_allows: Option<bool>,
    pub(super) accept_allows: Option<bool>,
    pub(super) publish_sources: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) accept_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) accept_sources: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) min_prefix_len_v4: Option<Spanned<Integer>>,
    pub(super) min_prefix_len_v6: Option<Spanned<Integer>>,
    pub(super) catch_up_timeout: Option<Spanned<RawDuration>>,
    pub(super) max_decisions: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [crowdsec] table")]
pub(super) struct RawCrowdsec {
    pub(super) lapi_url: Option<Spanned<String>>,
    pub(super) api_key: Option<Spanned<String>>,
    pub(super) api_key_file: Option<Spanned<String>>,
    pub(super) poll_interval: Option<Spanned<RawDuration>>,
    pub(super) timeout: Option<Spanned<RawDuration>>,
    pub(super) resync_interval: Option<Spanned<RawDuration>>,
    pub(super) origins: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) max_decisions: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [rulesets] table")]
pub(super) struct RawRulesetLimits {
    pub(super) max_files: Option<Spanned<Integer>>,
    pub(super) max_file_bytes: Option<Spanned<Integer>>,
    pub(super) max_rules: Option<Spanned<Integer>>,
    pub(super) max_pattern_bytes: Option<Spanned<Integer>>,
    pub(super) max_regex_bytes: Option<Spanned<Integer>>,
    pub(super) max_compiled_bytes: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [scoring] table")]
pub(super) struct RawScoring {
    pub(super) threshold: Option<Spanned<Integer>>,
    pub(super) window: Option<Spanned<RawDuration>>,
    pub(super) score_min: Option<Spanned<Integer>>,
    pub(super) max_tracked: Option<Spanned<Integer>>,
    pub(super) exclude_local: Option<bool>,
    pub(super) ban: Option<Spanned<RawDuration>>,
    pub(super) ban_multiplier: Option<Spanned<Integer>>,
    pub(super) ban_max: Option<Spanned<RawDuration>>,
    pub(super) aggregate_min: Option<Spanned<Integer>>,
    pub(super) aggregate_len_v4: Option<Spanned<Integer>>,
    pub(super) aggregate_len_v6: Option<Spanned<Integer>>,
    /// "prefix" (the fixed lengths above), "announced" (the origins table's) or "both".
    pub(super) aggregate: Option<Spanned<String>>,
    pub(super) aggregate_announced_max_v4: Option<Spanned<Integer>>,
    pub(super) aggregate_announced_max_v6: Option<Spanned<Integer>>,
    /// Sessions multi-line rules remember at most, and for how long (log time).
    pub(super) max_sessions: Option<Spanned<Integer>>,
    pub(super) session_ttl: Option<Spanned<RawDuration>>,
    /// In `[scoring.rulesets.NAME]` only: the mode that ruleset runs in.
    pub(super) mode: Option<Spanned<String>>,
    /// `[scoring.rulesets.NAME]`: the same keys, for one ruleset (like a fail2ban jail).
    #[serde(default)]
    pub(super) rulesets: std::collections::BTreeMap<Spanned<String>, Spanned<Self>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an input table such as { name = \"auth\", file = \"/var/log/auth.log\" }"
)]
pub(super) struct RawInput {
    pub(super) name: Spanned<String>,
    pub(super) file: Option<Spanned<String>>,
    pub(super) pipe: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) stdin: bool,
    #[serde(default)]
    pub(super) journal: bool,
    pub(super) journal_unit: Option<String>,
    pub(super) journal_file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rulesets: Vec<Spanned<String>>,
    pub(super) start: Option<Spanned<String>>,
    /// The mode its rulesets run in (those that have it).
    pub(super) mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an interface table such as { name = \"eth0\", mode = \"auto\" }"
)]
pub(super) struct RawInterface {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) mode: AttachMode,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [metrics] table")]
pub(super) struct RawMetrics {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) top_blocked: Option<Spanned<Integer>>,
    pub(super) request_timeout: Option<Spanned<RawDuration>>,
    pub(super) max_connections: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [control] table")]
pub(super) struct RawControl {
    pub(super) request_timeout: Option<Spanned<RawDuration>>,
    pub(super) max_connections: Option<Spanned<Integer>>,
    pub(super) max_request_bytes: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [allowlist] table")]
pub(super) struct RawAllowlist {
    #[serde(default)]
    pub(super) prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) files: Vec<Spanned<String>>,
    pub(super) loopback: Option<bool>,
    pub(super) host_addresses: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [guard] table")]
pub(super) struct RawGuard {
    pub(super) min_prefix_len_v4: Option<Spanned<Integer>>,
    pub(super) min_prefix_len_v6: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [capacity] table")]
pub(super) struct RawCapacity {
    pub(super) allow_v4: Option<Spanned<Integer>>,
    pub(super) allow_v6: Option<Spanned<Integer>>,
    pub(super) block_host_v4: Option<Spanned<Integer>>,
    pub(super) block_host_v6: Option<Spanned<Integer>>,
    pub(super) block_prefix_v4: Option<Spanned<Integer>>,
    pub(super) block_prefix_v6: Option<Spanned<Integer>>,
    pub(super) volume_v4: Option<Spanned<Integer>>,
    pub(super) volume_v6: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [volume] table")]
pub(super) struct RawVolume {
    pub(super) interval: Option<Spanned<RawDuration>>,
    pub(super) xdp_accounting: Option<bool>,
    pub(super) top: Option<Spanned<Integer>>,
    pub(super) max_sources: Option<Spanned<Integer>>,
    pub(super) local: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) flow: Option<Spanned<RawFlow>>,
    pub(super) pairing: Option<Spanned<RawPairing>>,
    #[serde(default)]
    pub(super) detectors: Vec<Spanned<RawDetector>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the [volume.pairing] table, such as { answer_window = \"1m\" }"
)]
pub(super) struct RawPairing {
    pub(super) enabled: Option<bool>,
    pub(super) answer_window: Option<Spanned<RawDuration>>,
    pub(super) max_tracked_flows: Option<Spanned<Integer>>,
    pub(super) prefix_len_v4: Option<Spanned<Integer>>,
    pub(super) prefix_len_v6: Option<Spanned<Integer>>,
    pub(super) reflection_ports: Option<Vec<Spanned<Integer>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the [volume.flow] table, such as { listen = \"0.0.0.0:2055\" }"
)]
pub(super) struct RawFlow {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) receive_buffer: Option<Spanned<Integer>>,
    pub(super) direction: Option<DirectionFilter>,
    #[serde(default)]
    pub(super) ingress_interfaces: Vec<Spanned<Integer>>,
    #[serde(default)]
    pub(super) exporters: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) sampling: Vec<Spanned<RawSampling>>,
    pub(super) template_timeout: Option<Spanned<RawDuration>>,
    pub(super) max_templates_per_exporter: Option<Spanned<Integer>>,
    pub(super) max_templates_per_domain: Option<Spanned<Integer>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a sampling table such as { exporter = \"192.0.2.1\", rate = 1000 }"
)]
pub(super) struct RawSampling {
    pub(super) exporter: Spanned<String>,
    pub(super) rate: Spanned<Integer>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a detector table such as { name = \"flood\", bytes_per_second = 125000000 }"
)]
pub(super) struct RawDetector {
    pub(super) name: Spanned<String>,
    pub(super) source: Option<Spanned<VolumeSource>>,
    pub(super) bytes_per_second: Option<Spanned<Integer>>,
    pub(super) packets_per_second: Option<Spanned<Integer>>,
    pub(super) prefix_len_v4: Option<Spanned<Vec<Spanned<Integer>>>>,
    pub(super) prefix_len_v6: Option<Spanned<Vec<Spanned<Integer>>>>,
    pub(super) action: Option<VolumeAction>,
    pub(super) ban: Option<Spanned<RawDuration>>,
    pub(super) cool_intervals: Option<Spanned<Integer>>,
    #[serde(default)]
    pub(super) overrides: Vec<Spanned<RawOverride>>,
    pub(super) anomaly: Option<Spanned<AnomalyFilter>>,
    pub(super) flows_per_interval: Option<Spanned<Integer>>,
    pub(super) aggregate: Option<Spanned<AggregateBy>>,
    pub(super) aggregate_min: Option<Spanned<Integer>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an override table such as { prefix = \"198.51.100.0/24\", bytes_per_second = 125000000 }"
)]
pub(super) struct RawOverride {
    pub(super) prefix: Spanned<String>,
    pub(super) bytes_per_second: Option<Spanned<Integer>>,
    pub(super) packets_per_second: Option<Spanned<Integer>>,
    #[serde(default)]
    pub(super) exempt: bool,
}

/// A TOML integer; the wrapper only makes the type error say "an integer".
#[derive(Clone, Copy)]
pub(super) struct Integer(pub(super) i64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Integer;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Integer, E> {
                Ok(Integer(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Integer, E> {
                // Past i64 is out of every range anyway.
                Ok(Integer(i64::try_from(value).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_i64(Visitor)
    }
}

/// A duration string, or a bare number (read so the error can say to add a unit).
pub(super) enum RawDuration {
    Text(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = RawDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\" or \"1h30m\"")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(value.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(
                    i64::try_from(value).unwrap_or(i64::MAX),
                ))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl RawDuration {
    pub(super) fn is_never(&self) -> bool {
        matches!(self, Self::Text(text) if text == "never")
    }
}

/// `rulesets_dir`: one directory, or a list where later ones override earlier ones by name.
pub(super) enum RawDirs {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawDirs {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = RawDirs;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a directory, or a list of directories")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawDirs, E> {
                Ok(RawDirs::One(value.to_owned()))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawDirs, A::Error> {
                let mut dirs = Vec::new();
                while let Some(dir) = seq.next_element::<Spanned<String>>()? {
                    dirs.push(dir);
                }
                Ok(RawDirs::Many(dirs))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
