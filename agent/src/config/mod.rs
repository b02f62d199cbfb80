//! The daemon's configuration file (`/etc/xdpguard/xdpguard.toml`).
//!
//! TOML is read into raw serde structs that refuse unknown keys (`raw`), then validated
//! (`validate`) into [`Config`]. Every error names the file, the line and column, and the key
//! (`locate`):
//!
//! ```text
//! /etc/xdpguard/xdpguard.toml:12:10: allowlist.prefixes: "10.0.0.300/8" is not an IP address or CIDR prefix
//! ```
//!
//! A subsystem's typed configuration lives beside the subsystem and is imported here:
//! [`Capacities`] and [`AttachMode`] from the data path, [`ScoringConfig`] and [`InputConfig`]
//! from the log side, [`VolumeConfig`] from the volume detectors. The defaults of the daemon's
//! own keys are the `DEFAULT_*` constants below; a subsystem's table has its defaults beside
//! its type (the capacities' are the data path's, from [`xdpguard_common::capacity`]). The
//! limits every value is checked against are the `MIN_*` and `MAX_*` constants below.
//! `packaging/xdpguard.toml` shows every key with its default, and a test keeps the two in
//! step.
mod duration;
mod layers;
mod locate;
mod raw;
#[cfg(test)]
mod testing;
mod validate;

use std::{
    io::{self, Read as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Duration,
};

pub use duration::{DurationError, format_duration, parse_duration};
pub use layers::{MAX_DROP_INS, Shown, ShownValue, drop_in_dir};
use locate::ConfigText;
pub use locate::{ConfigError, Location};
use raw::RawConfig;

use crate::{
    api::listener::Limits,
    detect::logs::config::InputConfig,
    detect::logs::offenders::ScoringConfig,
    detect::logs::ruleset::{Ruleset, RulesetLimits},
    detect::traffic::volume::VolumeConfig,
    enforce::dataplane::{AttachMode, Capacities},
    enforce::owner::UnknownEntries,
    prefix::Prefix,
};

// Defaults of the daemon's own keys.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdpguard";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xdpguard";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/xdpguard/control.sock";
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9477));
pub const DEFAULT_TOP_BLOCKED: usize = 20;
pub const DEFAULT_MIN_PREFIX_LEN_V4: u8 = 8;
pub const DEFAULT_MIN_PREFIX_LEN_V6: u8 = 32;
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// `default_ban = "never"`: a block without `--for` stays until it is removed.
pub const DEFAULT_BAN: Option<Duration> = None;

// Limits.
/// `metrics.request_timeout` and `control.request_timeout` at most.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// `metrics.max_connections` and `control.max_connections` at most.
pub const MAX_LISTENER_CONNECTIONS: u32 = 65_536;
/// `control.max_request_bytes` at least (a `block --file` request is at most 2.3 MB) and at
/// most.
pub const MIN_CONTROL_REQUEST_BYTES: u32 = 4 << 20;
pub const MAX_CONTROL_REQUEST_BYTES: u32 = 1 << 30;
/// `metrics.top_blocked` at most: one series per entry, so this bounds the cardinality.
pub const MAX_TOP_BLOCKED: usize = 1000;
/// Every `capacity.*` is from 1 to this (16 Mi entries).
pub const MAX_CAPACITY: u32 = 16 << 20;
/// `reconcile_interval` and `default_ban` are at least this.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Linux's `IFNAMSIZ` less the terminating NUL.
pub const MAX_INTERFACE_NAME: usize = 15;
/// `sockaddr_un.sun_path` less the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// Configuration files larger than this are refused.
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;
/// `volume.interval` at most.
pub const MAX_VOLUME_INTERVAL: Duration = Duration::from_secs(3600);
/// `volume.top` at most: one series per entry, so this bounds the cardinality.
pub const MAX_VOLUME_TOP: usize = 1000;
/// `volume.max_sources` at most (16 Mi).
pub const MAX_VOLUME_SOURCES: usize = 16 << 20;
/// `volume.flow.receive_buffer` at least and at most.
pub const MIN_FLOW_RECEIVE_BUFFER: usize = 64 << 10;
pub const MAX_FLOW_RECEIVE_BUFFER: usize = 1 << 30;
/// `volume.flow.template_timeout` at least and at most.
pub const MIN_FLOW_TEMPLATE_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_FLOW_TEMPLATE_TIMEOUT: Duration = Duration::from_secs(86_400);
/// A `volume.flow.sampling` rate at most (1 in this many packets).
pub const MAX_SAMPLING_RATE: u32 = 1_000_000;
/// `bytes_per_second` and `packets_per_second` at most: 2^53, exact as a metric's f64.
pub const MAX_VOLUME_RATE: u64 = 1 << 53;
/// A detector's `ban` at most (365 days).
pub const MAX_DETECTOR_BAN: Duration = Duration::from_secs(365 * 86_400);
/// A detector's `cool_intervals` at most.
pub const MAX_COOL_INTERVALS: u32 = 1000;
/// `rulesets_dir` names at most this many directories.
pub const MAX_RULESET_DIRS: usize = 8;
/// A detector's name is 1 to this many of `A-Z a-z 0-9 _ -`.
pub const MAX_DETECTOR_NAME: usize = 64;

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// At least one, at most `MAX_INTERFACES - 1` (the data path's counter slots), no repeats.
    pub interfaces: Vec<InterfaceConfig>,
    /// Count would-be drops and let the packets pass.
    pub dry_run: bool,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    /// The control socket's connection limits (`[control]`).
    pub control: Limits,
    pub metrics: MetricsConfig,
    pub allowlist: AllowlistConfig,
    pub guard: GuardConfig,
    pub capacity: Capacities,
    /// How often the kernel's lists are compared with the decisions; at least [`MIN_INTERVAL`].
    pub reconcile_interval: Duration,
    /// What reconcile does with kernel entries no decision accounts for.
    pub unknown_entries: UnknownEntries,
    /// Expiry of a block that names none; `None`: never. At least [`MIN_INTERVAL`].
    pub default_ban: Option<Duration>,
    /// Where the log rulesets (`*.toml`) are; empty: no log scoring. A file in a later
    /// directory replaces the file of the same name in an earlier one, and an empty file or
    /// a symlink to `/dev/null` there removes it.
    pub rulesets_dirs: Vec<PathBuf>,
    pub scoring: ScoringConfig,
    /// Logs to follow, each with the rulesets it is read with.
    pub inputs: Vec<InputConfig>,
    pub volume: VolumeConfig,
    /// `[rulesets]`: what the files in `rulesets_dir` may cost.
    pub ruleset_limits: RulesetLimits,
    /// `[crowdsec]`: be the local API's bouncer; `None` without the table.
    pub crowdsec: Option<crate::peers::crowdsec::config::CrowdsecConfig>,
    /// `[origins]`: RIS whois dumps for origin AS and announced prefix; `None` without the table.
    pub origins: Option<crate::origins::OriginsConfig>,
    /// `[history]`: what the daemon records per interval; `None` with `enabled = false`.
    pub history: Option<crate::history::HistoryConfig>,
    /// `[fleet]`: share decisions with the other agents through NATS; `None` without it.
    pub fleet: Option<crate::peers::fleet::config::FleetConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// 1 to 15 bytes; no `/`, `:`, whitespace or control characters; not `.` or `..`.
    pub name: String,
    pub mode: AttachMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Whether the Prometheus endpoint is served at all.
    pub enabled: bool,
    pub listen: SocketAddr,
    /// How many blocked entries with the most drops get their own series; 0 turns them off.
    pub top_blocked: usize,
    /// Connection limits of the listener (`request_timeout`, `max_connections`).
    pub limits: Limits,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN,
            top_blocked: DEFAULT_TOP_BLOCKED,
            limits: Limits::METRICS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowlistConfig {
    pub prefixes: Vec<Prefix>,
    /// Absolute paths of list files ([`crate::listfile::read_prefix_list`]); read by the daemon at every load.
    pub files: Vec<PathBuf>,
    /// Allow `127.0.0.0/8` and `::1`.
    pub loopback: bool,
    /// Allow the host's own interface addresses.
    pub host_addresses: bool,
}

impl Default for AllowlistConfig {
    fn default() -> Self {
        Self {
            prefixes: Vec::new(),
            files: Vec::new(),
            loopback: true,
            host_addresses: true,
        }
    }
}

/// Blocks broader than these prefix lengths are refused unless forced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    pub min_prefix_len_v4: u8,
    pub min_prefix_len_v6: u8,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            min_prefix_len_v4: DEFAULT_MIN_PREFIX_LEN_V4,
            min_prefix_len_v6: DEFAULT_MIN_PREFIX_LEN_V6,
        }
    }
}

impl Config {
    /// The configuration a file naming only `interfaces` gets: every other key at its default.
    pub fn new(interfaces: Vec<InterfaceConfig>) -> Self {
        Self {
            interfaces,
            dry_run: false,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            control: Limits::CONTROL,
            metrics: MetricsConfig::default(),
            allowlist: AllowlistConfig::default(),
            guard: GuardConfig::default(),
            capacity: Capacities::default(),
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
            unknown_entries: UnknownEntries::default(),
            default_ban: DEFAULT_BAN,
            rulesets_dirs: Vec::new(),
            scoring: ScoringConfig::default(),
            inputs: Vec::new(),
            volume: VolumeConfig::default(),
            ruleset_limits: RulesetLimits::default(),
            crowdsec: None,
            origins: None,
            history: Some(crate::history::HistoryConfig::in_state_dir(Path::new(
                DEFAULT_STATE_DIR,
            ))),
            fleet: None,
        }
    }

    /// Read and validate the file at `path`, and what it names in `rulesets_dir`: the files
    /// there are read within the `[rulesets]` limits (not compiled), and every ruleset an
    /// input names must be there and enabled.
    ///
    /// # Errors
    /// As [`Config::read`]; a ruleset file that is unreadable, invalid or over a limit (at
    /// `rulesets_dir`), an input naming a ruleset that is not there (at the name).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let layers = layers::read(path, &Self::read_text)?;
        let source = layers.config_text();
        let config = source.validate()?;
        let _: Vec<Ruleset> = source.rulesets(&config, false)?;
        Ok(config)
    }

    /// [`Config::load`], and the rulesets compiled within the `[rulesets]` limits.
    ///
    /// # Errors
    /// As [`Config::load`], and any ruleset that fails to compile or is over a limit compiled.
    pub fn load_with_rulesets(path: &Path) -> Result<(Self, Vec<Ruleset>), ConfigError> {
        let layers = layers::read(path, &Self::read_text)?;
        let source = layers.config_text();
        let config = source.validate()?;
        let rulesets = source.rulesets(&config, true)?;
        Ok((config, rulesets))
    }

    /// Read and validate the file at `path` and its drop-ins (the rulesets directory is not
    /// looked at).
    ///
    /// # Errors
    /// When a file cannot be read, is larger than [`MAX_CONFIG_SIZE`], or is invalid; see
    /// [`Config::parse`].
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        layers::read(path, &Self::read_text)?
            .config_text()
            .validate()
    }

    /// The ruleset files (or the one directory) `rulesets_dirs` comes to, overrides and
    /// masks applied: what `xdpguard check --config` reads.
    ///
    /// # Errors
    /// A directory that cannot be read (the first must exist).
    pub fn ruleset_files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        validate::ruleset_files(&self.rulesets_dirs, &self.ruleset_limits).map_err(|message| {
            ConfigError::Read {
                path: self.rulesets_dirs.first().cloned().unwrap_or_default(),
                source: io::Error::other(message),
            }
        })
    }

    /// The files [`Config::read`] reads: `path`, then its drop-ins in merge order.
    ///
    /// # Errors
    /// As [`Config::read`], before validation.
    pub fn files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
        Ok(layers::read(path, &Self::read_text)?.paths())
    }

    /// The effective configuration of `path` and its drop-ins, each value with the file and
    /// line it came from; validated first (rulesets included), so it is what the daemon runs.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn show(path: &Path) -> Result<Shown, ConfigError> {
        let layers = layers::read(path, &Self::read_text)?;
        let source = layers.config_text();
        let config = source.validate()?;
        let _: Vec<Ruleset> = source.rulesets(&config, false)?;
        Ok(layers::show(&layers))
    }

    fn read_text(path: &Path) -> Result<String, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        // Never a FIFO: a reload waiting for a writer would stall the daemon's signals.
        let _: usize = crate::listfile::open_regular(path)
            .and_then(|file| file.take(MAX_CONFIG_SIZE + 1).read_to_string(&mut text))
            .map_err(read_error)?;
        if text.len() as u64 > MAX_CONFIG_SIZE {
            return Err(read_error(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_CONFIG_SIZE} bytes"),
            )));
        }
        Ok(text)
    }

    /// Validate `text`; `path` is only used in messages.
    ///
    /// # Errors
    /// On TOML syntax errors, unknown keys, values of the wrong type and invalid values, with
    /// the line and column; when no interface is configured.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        ConfigText {
            path,
            text,
            layers: None,
        }
        .validate()
    }
}

impl ConfigText<'_> {
    fn validate(&self) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(self.text).map_err(|err| self.toml_error(&err))?;
        raw.validate(self)
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use super::{raw::TOP_LEVEL_KEYS, testing::*, *};

    #[test]
    fn minimal_config_gets_every_default() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config, Config::new(vec![eth("eth1", AttachMode::Auto)]));
        assert!(!config.dry_run);
        assert_eq!(config.pin_dir, Path::new("/sys/fs/bpf/xdpguard"));
        assert_eq!(config.state_dir, Path::new("/var/lib/xdpguard"));
        assert_eq!(
            config.control_socket,
            Path::new("/run/xdpguard/control.sock")
        );
        assert!(config.metrics.enabled);
        assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:9477");
        assert_eq!(config.metrics.top_blocked, 20);
        assert!(config.allowlist.prefixes.is_empty() && config.allowlist.files.is_empty());
        assert!(config.allowlist.loopback && config.allowlist.host_addresses);
        assert_eq!(
            config.guard,
            GuardConfig {
                min_prefix_len_v4: 8,
                min_prefix_len_v6: 32
            }
        );
        assert_eq!(
            config.capacity,
            Capacities {
                allow_v4: 16384,
                allow_v6: 16384,
                block_host_v4: 1_048_576,
                block_host_v6: 1_048_576,
                block_prefix_v4: 262_144,
                block_prefix_v6: 262_144,
                volume_v4: 65_536,
                volume_v6: 65_536,
            }
        );
        assert_eq!(config.reconcile_interval, Duration::from_secs(30));
        assert_eq!(config.default_ban, None);
    }

    #[test]
    fn shipped_example_parses_to_the_defaults() {
        // As shipped it names no interface: nothing is attached until the operator says.
        let err = parse(EXAMPLE).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Missing {
                    key: "interfaces",
                    ..
                }
            ),
            "{err}"
        );
        let config = parse(&format!("{EXAMPLE}\n[[interfaces]]\nname = \"eth0\"\n")).unwrap();
        assert_eq!(
            config,
            Config {
                rulesets_dirs: vec![
                    PathBuf::from("/usr/share/xdpguard/rulesets"),
                    PathBuf::from("/etc/xdpguard/rulesets.d")
                ],
                ..Config::new(vec![eth("eth0", AttachMode::Auto)])
            }
        );
    }

    #[test]
    fn shipped_example_documents_every_key() {
        let sections: [(&str, &[&str]); 9] = [
            (
                "[scoring]",
                &[
                    "threshold",
                    "window",
                    "score_min",
                    "max_tracked",
                    "exclude_local",
                    "ban",
                ],
            ),
            ("[[interfaces]]", &["name", "mode"]),
            (
                "[metrics]",
                &[
                    "enabled",
                    "listen",
                    "top_blocked",
                    "request_timeout",
                    "max_connections",
                ],
            ),
            (
                "[control]",
                &["request_timeout", "max_connections", "max_request_bytes"],
            ),
            (
                "[allowlist]",
                &["prefixes", "files", "loopback", "host_addresses"],
            ),
            ("[guard]", &["min_prefix_len_v4", "min_prefix_len_v6"]),
            (
                "[capacity]",
                &[
                    "allow_v4",
                    "allow_v6",
                    "block_host_v4",
                    "block_host_v6",
                    "block_prefix_v4",
                    "block_prefix_v6",
                    "volume_v4",
                    "volume_v6",
                ],
            ),
            (
                "[volume]",
                &["interval", "xdp_accounting", "top", "max_sources"],
            ),
            (
                "[rulesets]",
                &[
                    "max_files",
                    "max_file_bytes",
                    "max_rules",
                    "max_pattern_bytes",
                    "max_regex_bytes",
                    "max_compiled_bytes",
                ],
            ),
        ];
        let set = |key: &str| {
            EXAMPLE
                .lines()
                .any(|line| line.starts_with(&format!("{key} = ")))
        };
        // Inputs, the flow collector and detectors are examples in comments: a default
        // configuration follows no logs and has neither.
        let flow = [
            "enabled",
            "listen",
            "receive_buffer",
            "direction",
            "ingress_interfaces",
            "exporters",
            "sampling",
            "template_timeout",
            "max_templates_per_exporter",
            "max_templates_per_domain",
        ];
        let detector = [
            "source",
            "bytes_per_second",
            "packets_per_second",
            "prefix_len_v4",
            "prefix_len_v6",
            "action",
            "ban",
            "cool_intervals",
            "overrides",
        ];
        let inputs = ["name", "file", "rulesets", "start"];
        for key in inputs.into_iter().chain(flow).chain(detector) {
            assert!(
                EXAMPLE
                    .lines()
                    .any(|l| l.starts_with(&format!("# {key} = "))),
                "inputs {key}"
            );
        }
        for key in TOP_LEVEL_KEYS.into_iter().filter(|k| *k != "inputs") {
            let is_section = sections
                .iter()
                .any(|(header, _)| header.trim_matches(['[', ']']) == key);
            assert!(is_section || set(key), "top-level {key} not in the example");
        }
        for (header, keys) in sections {
            // [[interfaces]] is shown commented out: the package names none.
            assert!(
                EXAMPLE
                    .lines()
                    .any(|line| line == header || line.strip_prefix("# ") == Some(header)),
                "{header}"
            );
            for key in keys {
                let shown = if header == "[[interfaces]]" {
                    EXAMPLE
                        .lines()
                        .any(|l| l.starts_with(&format!("# {key} = ")))
                } else {
                    set(key)
                };
                assert!(shown, "{header} {key} not in the example");
            }
        }
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
dry_run = true
pin_dir = "/sys/fs/bpf/fw"
state_dir = "/srv/fw/state"
control_socket = "/run/fw.sock"
reconcile_interval = "1m30s"
unknown_entries = "remove"
default_ban = "2d"
interfaces = [{ name = "eth0" }, { name = "enp1s0f1", mode = "native" }, { name = "veth-x", mode = "generic" }]

[control]
request_timeout = "30s"
max_connections = 8
max_request_bytes = 1073741824

[metrics]
enabled = false
listen = "[::1]:9100"
top_blocked = 1000
request_timeout = "2s"
max_connections = 65536

[allowlist]
prefixes = ["192.0.2.7/24", "2001:db8::/32", "::ffff:198.51.100.1", "203.0.113.9"]
files = ["/etc/xdpguard/allow.txt"]
loopback = false
host_addresses = false

[guard]
min_prefix_len_v4 = 0
min_prefix_len_v6 = 128

[capacity]
allow_v4 = 1
allow_v6 = 2
block_host_v4 = 3
block_host_v6 = 4
block_prefix_v4 = 5
block_prefix_v6 = 16777216
volume_v4 = 6
volume_v6 = 7

[history]
path = "/srv/fw/history.db"
interval = "30s"
retention = "7d"
max_size = 2097152
max_sources_per_ruleset = 50
"#;
        let config = parse(text).unwrap();
        let prefixes: Vec<String> = ["192.0.2.0/24", "2001:db8::/32", "198.51.100.1/32"]
            .into_iter()
            .chain(["203.0.113.9/32"])
            .map(str::to_owned)
            .collect();
        assert_eq!(
            config,
            Config {
                interfaces: vec![
                    eth("eth0", AttachMode::Auto),
                    eth("enp1s0f1", AttachMode::Native),
                    eth("veth-x", AttachMode::Generic),
                ],
                dry_run: true,
                pin_dir: "/sys/fs/bpf/fw".into(),
                state_dir: "/srv/fw/state".into(),
                control_socket: "/run/fw.sock".into(),
                control: Limits {
                    request_timeout: Duration::from_secs(30),
                    max_connections: 8,
                    max_request_bytes: 1 << 30,
                    ..Limits::CONTROL
                },
                metrics: MetricsConfig {
                    enabled: false,
                    listen: "[::1]:9100".parse().unwrap(),
                    top_blocked: 1000,
                    limits: Limits {
                        request_timeout: Duration::from_secs(2),
                        max_connections: 65_536,
                        ..Limits::METRICS
                    },
                },
                allowlist: AllowlistConfig {
                    prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
                    files: vec!["/etc/xdpguard/allow.txt".into()],
                    loopback: false,
                    host_addresses: false,
                },
                guard: GuardConfig {
                    min_prefix_len_v4: 0,
                    min_prefix_len_v6: 128,
                },
                capacity: Capacities {
                    allow_v4: 1,
                    allow_v6: 2,
                    block_host_v4: 3,
                    block_host_v6: 4,
                    block_prefix_v4: 5,
                    block_prefix_v6: MAX_CAPACITY,
                    volume_v4: 6,
                    volume_v6: 7,
                },
                reconcile_interval: Duration::from_secs(90),
                unknown_entries: UnknownEntries::Remove,
                default_ban: Some(Duration::from_secs(2 * 86_400)),
                rulesets_dirs: Vec::new(),
                scoring: ScoringConfig::default(),
                inputs: Vec::new(),
                volume: VolumeConfig::default(),
                ruleset_limits: RulesetLimits::default(),
                crowdsec: None,
                origins: None,
                history: Some(crate::history::HistoryConfig {
                    path: "/srv/fw/history.db".into(),
                    interval: Duration::from_secs(30),
                    store: crate::history::store::StoreSettings {
                        retention: Duration::from_secs(7 * 86_400),
                        max_bytes: 2_097_152,
                        max_sources_per_ruleset: 50,
                        top_rows_per_ranking: 20,
                    },
                }),
                fleet: None,
            }
        );
    }

    #[test]
    fn load_reads_files_and_names_unreadable_ones() {
        let dir = std::env::temp_dir().join(format!("xdpguard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xdpguard.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        assert_eq!(
            Config::load(&path).unwrap().interfaces,
            vec![eth("eth1", AttachMode::Auto)]
        );
        std::fs::write(&path, "bogus = 1\n").unwrap();
        let message = Config::load(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}:1:1: ", path.display())),
            "{message}"
        );
        let missing = dir.join("missing.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.to_string().starts_with(&missing.display().to_string()));
        std::fs::write(&path, " ".repeat(2 << 20)).unwrap();
        assert!(
            Config::load(&path)
                .unwrap_err()
                .to_string()
                .contains("larger than")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
