//! The daemon's configuration file (`/etc/xdpguard/xdpguard.toml`) and the list-file reader.
//!
//! TOML is read into raw serde structs that refuse unknown keys, then validated into
//! [`Config`]. Every error names the file, the line and column, and the key:
//!
//! ```text
//! /etc/xdpguard/xdpguard.toml:12:10: allowlist.prefixes: "10.0.0.300/8" is not an IP address or CIDR prefix
//! ```
//!
//! The defaults live in the `DEFAULT_*` constants below (capacities come from
//! [`xdpguard_common::capacity`], which the data path uses too); `packaging/xdpguard.toml` shows
//! every key with its default, and a test keeps the two in step.
//!
//! [`read_prefix_list`] reads list files (`xdpguard block --file`, `allowlist.files`) in the
//! ipset / FireHOL netset shape: one address or CIDR per line, comments, blank lines.
use std::{
    fmt::{self, Write as _},
    fs::File,
    io::{self, BufRead, BufReader, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, de};
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::prefix::{Prefix, PrefixError};

// Defaults, all in one place.
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
pub const DEFAULT_VOLUME_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_VOLUME_TOP: usize = 20;
pub const DEFAULT_VOLUME_MAX_SOURCES: usize = 1 << 20;
pub const DEFAULT_FLOW_RECEIVE_BUFFER: usize = 8 << 20;
pub const DEFAULT_FLOW_TEMPLATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_DETECTOR_PREFIX_LEN_V4: (u8, u8) = (16, 32);
pub const DEFAULT_DETECTOR_PREFIX_LEN_V6: (u8, u8) = (32, 128);
pub const DEFAULT_DETECTOR_BAN: Duration = Duration::from_secs(600);
pub const DEFAULT_DETECTOR_COOL_INTERVALS: u32 = 1;

// Limits.
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
/// List-file lines longer than this (without the line break) are rejected, not buffered.
pub const MAX_LIST_LINE: usize = 4096;
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
    pub metrics: MetricsConfig,
    pub allowlist: AllowlistConfig,
    pub guard: GuardConfig,
    pub capacity: CapacityConfig,
    /// How often the kernel's lists are compared with the decisions; at least [`MIN_INTERVAL`].
    pub reconcile_interval: Duration,
    /// Expiry of a block that names none; `None`: never. At least [`MIN_INTERVAL`].
    pub default_ban: Option<Duration>,
    /// Where the log rulesets (`*.toml`) are; `None`: no log scoring.
    pub rulesets_dir: Option<PathBuf>,
    pub scoring: ScoringConfig,
    /// Logs to follow, each with the rulesets it is read with.
    pub inputs: Vec<InputConfig>,
    pub volume: VolumeConfig,
}

/// How log matches turn into blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoringConfig {
    /// Block when a source's score goes above this.
    pub threshold: i64,
    /// A source not seen for this long starts over.
    pub window: Duration,
    /// Floor for rules with negative scores.
    pub score_min: i64,
    /// Sources remembered at most (least recently seen go first).
    pub max_tracked: usize,
    /// Never score private, loopback, link-local or documentation addresses.
    pub exclude_local: bool,
    /// How long a block made by scoring lasts, the first time.
    pub ban: Duration,
    /// Each later ban of the same address lasts this many times the one before...
    pub ban_multiplier: u32,
    /// ...up to this.
    pub ban_max: Duration,
    /// Block the whole neighbourhood once this many addresses in it are blocked; 0: never.
    pub aggregate_min: u32,
    /// The neighbourhood: an IPv4 /24 and an IPv6 /64 by default.
    pub aggregate_len_v4: u8,
    pub aggregate_len_v6: u8,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            threshold: 10,
            window: Duration::from_secs(600),
            score_min: 0,
            max_tracked: 100_000,
            exclude_local: true,
            ban: Duration::from_secs(3600),
            ban_multiplier: 2,
            ban_max: Duration::from_secs(7 * 86_400),
            aggregate_min: 5,
            aggregate_len_v4: 24,
            aggregate_len_v6: 64,
        }
    }
}

/// Where an input's lines come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InputSource {
    /// A file, followed like `tail -F`.
    File(PathBuf),
    /// A named pipe, created when missing.
    Pipe(PathBuf),
    /// The daemon's standard input.
    Stdin,
    /// The systemd journal (`journalctl --follow`): one unit, or all; or a journal file.
    Journal {
        unit: Option<String>,
        file: Option<PathBuf>,
    },
}

/// A log to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputConfig {
    pub name: String,
    pub source: InputSource,
    /// Names of the rulesets its lines go through, in order; empty: all of them.
    pub rulesets: Vec<String>,
    /// Start at the end of the file (default) rather than replaying it from the start; a
    /// saved position wins over both.
    pub start_at_end: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// 1 to 15 bytes; no `/`, `:`, whitespace or control characters; not `.` or `..`.
    pub name: String,
    pub mode: XdpMode,
}

/// How the XDP program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic when the driver has no XDP support.
    #[default]
    Auto,
    /// Native (driver) mode only: attaching fails when the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works with every driver, runs later and costs more per packet.
    Generic,
}

impl XdpMode {
    /// The configuration spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Whether the Prometheus endpoint is served at all.
    pub enabled: bool,
    pub listen: SocketAddr,
    /// How many blocked entries with the most drops get their own series; 0 turns them off.
    pub top_blocked: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN,
            top_blocked: DEFAULT_TOP_BLOCKED,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowlistConfig {
    pub prefixes: Vec<Prefix>,
    /// Absolute paths of list files ([`read_prefix_list`]); read by the daemon at every load.
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

/// Maximum entries of each kernel list, each from 1 to [`MAX_CAPACITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapacityConfig {
    pub allow_v4: u32,
    pub allow_v6: u32,
    pub block_host_v4: u32,
    pub block_host_v6: u32,
    pub block_prefix_v4: u32,
    pub block_prefix_v6: u32,
    /// Per-source volume counters (`volume.xdp_accounting`), IPv4 and IPv6.
    pub volume_v4: u32,
    pub volume_v6: u32,
}

impl CapacityConfig {
    /// The data path's own defaults.
    pub const DEFAULT: Self = {
        use xdpguard_common::capacity as cap;
        Self {
            allow_v4: cap::ALLOW_V4,
            allow_v6: cap::ALLOW_V6,
            block_host_v4: cap::BLOCK_HOST_V4,
            block_host_v6: cap::BLOCK_HOST_V6,
            block_prefix_v4: cap::BLOCK_PREFIX_V4,
            block_prefix_v6: cap::BLOCK_PREFIX_V6,
            volume_v4: cap::VOLUME_V4,
            volume_v6: cap::VOLUME_V6,
        }
    };
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Per-prefix traffic volumes: sources, interval and detectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeConfig {
    /// How long each measurement interval is; from 1s to [`MAX_VOLUME_INTERVAL`].
    pub interval: Duration,
    /// The XDP program counts bytes and packets per source address.
    pub xdp_accounting: bool,
    /// Prefixes exported as metrics and kept for `xdpguard top`; 1 to [`MAX_VOLUME_TOP`].
    pub top: usize,
    /// Distinct sources tracked per address family per interval; 1 to [`MAX_VOLUME_SOURCES`].
    pub max_sources: usize,
    /// The flow collector (`[volume.flow]`); `None` when absent or `enabled = false`.
    pub flow: Option<FlowConfig>,
    /// `[[volume.detectors]]`, in file order; names are unique.
    pub detectors: Vec<DetectorConfig>,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_VOLUME_INTERVAL,
            xdp_accounting: true,
            top: DEFAULT_VOLUME_TOP,
            max_sources: DEFAULT_VOLUME_MAX_SOURCES,
            flow: None,
            detectors: Vec::new(),
        }
    }
}

/// The NetFlow v5/v9 / IPFIX collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Where exporters send to; the port is not 0.
    pub listen: SocketAddr,
    /// The socket's receive buffer in bytes, [`MIN_FLOW_RECEIVE_BUFFER`] to
    /// [`MAX_FLOW_RECEIVE_BUFFER`].
    pub receive_buffer: usize,
    pub direction: FlowDirection,
    /// Exporter SNMP ifIndexes whose flows count; empty: any. No repeats.
    pub ingress_interfaces: Vec<u32>,
    /// Addresses or networks datagrams are accepted from; empty: anywhere.
    pub exporters: Vec<Prefix>,
    /// Sampling rates that override what exporters announce; one per exporter.
    pub sampling: Vec<SamplingOverride>,
    /// Templates not refreshed for this long are forgotten; 1m to 24h.
    pub template_timeout: Duration,
}

/// Which flows count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowDirection {
    /// Flows the exporter marks as ingress, or that name no direction.
    #[default]
    Ingress,
    /// Every flow.
    Any,
}

impl FlowDirection {
    /// The configuration spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Any => "any",
        }
    }
}

/// 1 in `rate` packets is sampled by `exporter`, whatever it announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplingOverride {
    /// IPv4-mapped IPv6 is read as IPv4.
    pub exporter: IpAddr,
    /// 1 to [`MAX_SAMPLING_RATE`].
    pub rate: u32,
}

/// Blocks or reports prefixes whose traffic goes above a rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    /// 1 to [`MAX_DETECTOR_NAME`] of `A-Z a-z 0-9 _ -`, unique.
    pub name: String,
    pub source: VolumeSource,
    /// At least one of the two limits is set; each is 1 to [`MAX_VOLUME_RATE`].
    pub bytes_per_second: Option<u64>,
    pub packets_per_second: Option<u64>,
    /// Prefix lengths looked at, `(min, max)` with `min <= max <= 32`.
    pub prefix_len_v4: (u8, u8),
    /// `(min, max)` with `min <= max <= 128`.
    pub prefix_len_v6: (u8, u8),
    pub action: VolumeAction,
    /// How long a block lasts, extended while the prefix stays hot; 1s to 365d.
    pub ban: Duration,
    /// Intervals under the limit before a hot prefix counts as cooled; 1 to
    /// [`MAX_COOL_INTERVALS`].
    pub cool_intervals: u32,
    /// Other limits, or none, for some prefixes; no prefix twice.
    pub overrides: Vec<LimitOverride>,
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

/// A detector's limits for one prefix (and what it contains).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitOverride {
    /// A network: no host bits set.
    pub prefix: Prefix,
    /// When not exempt, at least one of the two is set.
    pub bytes_per_second: Option<u64>,
    pub packets_per_second: Option<u64>,
    /// Never detected; no limits are set.
    pub exempt: bool,
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
            metrics: MetricsConfig::default(),
            allowlist: AllowlistConfig::default(),
            guard: GuardConfig::default(),
            capacity: CapacityConfig::DEFAULT,
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
            default_ban: DEFAULT_BAN,
            rulesets_dir: None,
            scoring: ScoringConfig::default(),
            inputs: Vec::new(),
            volume: VolumeConfig::default(),
        }
    }

    /// Read and validate the file at `path`.
    ///
    /// # Errors
    /// When the file cannot be read, is larger than [`MAX_CONFIG_SIZE`], or is invalid; see
    /// [`Config::parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        let _: usize = File::open(path)
            .and_then(|file| file.take(MAX_CONFIG_SIZE + 1).read_to_string(&mut text))
            .map_err(read_error)?;
        if text.len() as u64 > MAX_CONFIG_SIZE {
            return Err(read_error(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_CONFIG_SIZE} bytes"),
            )));
        }
        Self::parse(&text, path)
    }

    /// Validate `text`; `path` is only used in messages.
    ///
    /// # Errors
    /// On TOML syntax errors, unknown keys, values of the wrong type and invalid values, with
    /// the line and column; when no interface is configured.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let source = Source { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|err| source.toml_error(&err))?;
        raw.validate(&source)
    }
}

/// Where in which file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type. `key` is the dotted key the
    /// error is about (for an unknown key, the table holding it), empty at the top level.
    #[error("{location}: {}{message}", key_prefix(key))]
    Toml {
        location: Location,
        key: String,
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("{location}: {key}: {message}")]
    Invalid {
        location: Location,
        key: String,
        message: String,
    },
    /// A required key is absent.
    #[error("{}: {key}: {message}", path.display())]
    Missing {
        path: PathBuf,
        key: &'static str,
        message: &'static str,
    },
}

impl ConfigError {
    /// Where the error is, when it is at a place in the file.
    pub const fn location(&self) -> Option<&Location> {
        match self {
            Self::Toml { location, .. } | Self::Invalid { location, .. } => Some(location),
            Self::Read { .. } | Self::Missing { .. } => None,
        }
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

// The raw file. Integers are read as i64 and range-checked here so every limit gets the same
// kind of message; strings that become typed values are `Spanned` so errors can point at them.

/// Top-level keys, for the hint when one is written below a `[table]` header.
const TOP_LEVEL_KEYS: [&str; 15] = [
    "interfaces",
    "dry_run",
    "pin_dir",
    "state_dir",
    "control_socket",
    "reconcile_interval",
    "default_ban",
    "metrics",
    "allowlist",
    "guard",
    "capacity",
    "rulesets_dir",
    "scoring",
    "inputs",
    "volume",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interfaces: Option<Spanned<Vec<Spanned<RawInterface>>>>,
    #[serde(default)]
    dry_run: bool,
    pin_dir: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    control_socket: Option<Spanned<String>>,
    reconcile_interval: Option<Spanned<RawDuration>>,
    default_ban: Option<Spanned<RawDuration>>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    allowlist: RawAllowlist,
    #[serde(default)]
    guard: RawGuard,
    #[serde(default)]
    capacity: RawCapacity,
    rulesets_dir: Option<Spanned<String>>,
    #[serde(default)]
    scoring: RawScoring,
    #[serde(default)]
    inputs: Vec<Spanned<RawInput>>,
    #[serde(default)]
    volume: RawVolume,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [scoring] table")]
struct RawScoring {
    threshold: Option<Spanned<Integer>>,
    window: Option<Spanned<RawDuration>>,
    score_min: Option<Spanned<Integer>>,
    max_tracked: Option<Spanned<Integer>>,
    exclude_local: Option<bool>,
    ban: Option<Spanned<RawDuration>>,
    ban_multiplier: Option<Spanned<Integer>>,
    ban_max: Option<Spanned<RawDuration>>,
    aggregate_min: Option<Spanned<Integer>>,
    aggregate_len_v4: Option<Spanned<Integer>>,
    aggregate_len_v6: Option<Spanned<Integer>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an input table such as { name = \"auth\", file = \"/var/log/auth.log\" }"
)]
struct RawInput {
    name: Spanned<String>,
    file: Option<Spanned<String>>,
    pipe: Option<Spanned<String>>,
    #[serde(default)]
    stdin: bool,
    #[serde(default)]
    journal: bool,
    journal_unit: Option<String>,
    journal_file: Option<Spanned<String>>,
    #[serde(default)]
    rulesets: Vec<String>,
    start: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an interface table such as { name = \"eth0\", mode = \"auto\" }"
)]
struct RawInterface {
    name: Spanned<String>,
    #[serde(default)]
    mode: XdpMode,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [metrics] table")]
struct RawMetrics {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    top_blocked: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [allowlist] table")]
struct RawAllowlist {
    #[serde(default)]
    prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    loopback: Option<bool>,
    host_addresses: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [guard] table")]
struct RawGuard {
    min_prefix_len_v4: Option<Spanned<Integer>>,
    min_prefix_len_v6: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [capacity] table")]
struct RawCapacity {
    allow_v4: Option<Spanned<Integer>>,
    allow_v6: Option<Spanned<Integer>>,
    block_host_v4: Option<Spanned<Integer>>,
    block_host_v6: Option<Spanned<Integer>>,
    block_prefix_v4: Option<Spanned<Integer>>,
    block_prefix_v6: Option<Spanned<Integer>>,
    volume_v4: Option<Spanned<Integer>>,
    volume_v6: Option<Spanned<Integer>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [volume] table")]
struct RawVolume {
    interval: Option<Spanned<RawDuration>>,
    xdp_accounting: Option<bool>,
    top: Option<Spanned<Integer>>,
    max_sources: Option<Spanned<Integer>>,
    flow: Option<Spanned<RawFlow>>,
    #[serde(default)]
    detectors: Vec<Spanned<RawDetector>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the [volume.flow] table, such as { listen = \"0.0.0.0:2055\" }"
)]
struct RawFlow {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    receive_buffer: Option<Spanned<Integer>>,
    direction: Option<FlowDirection>,
    #[serde(default)]
    ingress_interfaces: Vec<Spanned<Integer>>,
    #[serde(default)]
    exporters: Vec<Spanned<String>>,
    #[serde(default)]
    sampling: Vec<Spanned<RawSampling>>,
    template_timeout: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a sampling table such as { exporter = \"192.0.2.1\", rate = 1000 }"
)]
struct RawSampling {
    exporter: Spanned<String>,
    rate: Spanned<Integer>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a detector table such as { name = \"flood\", bytes_per_second = 125000000 }"
)]
struct RawDetector {
    name: Spanned<String>,
    source: Option<Spanned<VolumeSource>>,
    bytes_per_second: Option<Spanned<Integer>>,
    packets_per_second: Option<Spanned<Integer>>,
    prefix_len_v4: Option<Spanned<Vec<Spanned<Integer>>>>,
    prefix_len_v6: Option<Spanned<Vec<Spanned<Integer>>>>,
    action: Option<VolumeAction>,
    ban: Option<Spanned<RawDuration>>,
    cool_intervals: Option<Spanned<Integer>>,
    #[serde(default)]
    overrides: Vec<Spanned<RawOverride>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an override table such as { prefix = \"198.51.100.0/24\", bytes_per_second = 125000000 }"
)]
struct RawOverride {
    prefix: Spanned<String>,
    bytes_per_second: Option<Spanned<Integer>>,
    packets_per_second: Option<Spanned<Integer>>,
    #[serde(default)]
    exempt: bool,
}

/// A TOML integer; the wrapper only makes the type error say "an integer".
#[derive(Clone, Copy)]
struct Integer(i64);

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
enum RawDuration {
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
    fn is_never(&self) -> bool {
        matches!(self, Self::Text(text) if text == "never")
    }
}

impl RawConfig {
    fn validate(self, source: &Source<'_>) -> Result<Config, ConfigError> {
        let interfaces = source.interfaces(self.interfaces)?;
        let capacity = {
            let c = &self.capacity;
            let d = CapacityConfig::DEFAULT;
            let cap = |key, value, default| {
                source.integer(key, value, 1, MAX_CAPACITY, default, "entries")
            };
            CapacityConfig {
                allow_v4: cap("capacity.allow_v4", c.allow_v4.as_ref(), d.allow_v4)?,
                allow_v6: cap("capacity.allow_v6", c.allow_v6.as_ref(), d.allow_v6)?,
                block_host_v4: cap(
                    "capacity.block_host_v4",
                    c.block_host_v4.as_ref(),
                    d.block_host_v4,
                )?,
                block_host_v6: cap(
                    "capacity.block_host_v6",
                    c.block_host_v6.as_ref(),
                    d.block_host_v6,
                )?,
                block_prefix_v4: cap(
                    "capacity.block_prefix_v4",
                    c.block_prefix_v4.as_ref(),
                    d.block_prefix_v4,
                )?,
                block_prefix_v6: cap(
                    "capacity.block_prefix_v6",
                    c.block_prefix_v6.as_ref(),
                    d.block_prefix_v6,
                )?,
                volume_v4: cap("capacity.volume_v4", c.volume_v4.as_ref(), d.volume_v4)?,
                volume_v6: cap("capacity.volume_v6", c.volume_v6.as_ref(), d.volume_v6)?,
            }
        };
        let default_ban = match &self.default_ban {
            None => DEFAULT_BAN,
            Some(value) if value.get_ref().is_never() => None,
            Some(value) => Some(source.duration("default_ban", value, " or \"never\"")?),
        };
        Ok(Config {
            interfaces,
            dry_run: self.dry_run,
            pin_dir: source.absolute_path("pin_dir", self.pin_dir.as_ref(), DEFAULT_PIN_DIR)?,
            state_dir: source.absolute_path(
                "state_dir",
                self.state_dir.as_ref(),
                DEFAULT_STATE_DIR,
            )?,
            control_socket: source.control_socket(self.control_socket.as_ref())?,
            metrics: source.metrics(&self.metrics)?,
            allowlist: source.allowlist(&self.allowlist)?,
            guard: GuardConfig {
                min_prefix_len_v4: source.integer(
                    "guard.min_prefix_len_v4",
                    self.guard.min_prefix_len_v4.as_ref(),
                    0,
                    32,
                    DEFAULT_MIN_PREFIX_LEN_V4,
                    "bits",
                )?,
                min_prefix_len_v6: source.integer(
                    "guard.min_prefix_len_v6",
                    self.guard.min_prefix_len_v6.as_ref(),
                    0,
                    128,
                    DEFAULT_MIN_PREFIX_LEN_V6,
                    "bits",
                )?,
            },
            capacity,
            reconcile_interval: match &self.reconcile_interval {
                Some(value) => source.duration("reconcile_interval", value, "")?,
                None => DEFAULT_RECONCILE_INTERVAL,
            },
            default_ban,
            rulesets_dir: match &self.rulesets_dir {
                Some(_) => {
                    Some(source.absolute_path("rulesets_dir", self.rulesets_dir.as_ref(), "")?)
                }
                None => None,
            },
            scoring: source.scoring(&self.scoring)?,
            inputs: source.inputs(&self.inputs)?,
            volume: source.volume(&self.volume)?,
        })
    }
}

/// The text being validated: turns byte spans into locations.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn location(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
        Location {
            path: self.path.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    fn invalid(&self, key: &str, span: Range<usize>, message: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            location: self.location(span.start),
            key: key.to_owned(),
            message: message.to_string(),
        }
    }

    /// A toml error, with the key it is about found from its span.
    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let offset = err.span().map_or(0, |span| span.start);
        let mut key = String::new();
        let mut message = err.message().trim().to_owned();
        // Only documents that parse have keys to name (syntax errors have none).
        if let Ok(document) = DeTable::parse(self.text)
            && let Some(Found::Key(name)) = find_key(document.get_ref(), offset, &mut key)
            && !key.is_empty()
            && TOP_LEVEL_KEYS.contains(&name.as_str())
        {
            let _: fmt::Result = write!(
                message,
                " (`{name}` is a top-level key: top-level keys go before the first [table] header)"
            );
        }
        ConfigError::Toml {
            location: self.location(offset),
            key,
            message,
        }
    }

    fn interfaces(
        &self,
        raw: Option<Spanned<Vec<Spanned<RawInterface>>>>,
    ) -> Result<Vec<InterfaceConfig>, ConfigError> {
        let Some(raw) = raw else {
            return Err(ConfigError::Missing {
                path: self.path.to_path_buf(),
                key: "interfaces",
                message: "no interface configured; add one: [[interfaces]] name = \"eth0\"",
            });
        };
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.is_empty() {
            return Err(self.invalid("interfaces", span, "at least one interface is required"));
        }
        let max = usize::try_from(xdpguard_common::MAX_INTERFACES - 1).unwrap_or(usize::MAX);
        let mut interfaces: Vec<InterfaceConfig> = Vec::with_capacity(raw.len());
        for interface in raw {
            let span = interface.span();
            let interface = interface.into_inner();
            let name = interface.name.get_ref();
            if let Err(why) = check_interface_name(name) {
                return Err(self.invalid(
                    "interfaces.name",
                    interface.name.span(),
                    format_args!("{name:?} is not a valid interface name: {why}"),
                ));
            }
            if interfaces.iter().any(|seen| seen.name == *name) {
                return Err(self.invalid(
                    "interfaces.name",
                    interface.name.span(),
                    format_args!("{name:?} is listed twice"),
                ));
            }
            if interfaces.len() == max {
                return Err(self.invalid(
                    "interfaces",
                    span,
                    format_args!("more than {max} interfaces"),
                ));
            }
            interfaces.push(InterfaceConfig {
                name: interface.name.into_inner(),
                mode: interface.mode,
            });
        }
        Ok(interfaces)
    }

    fn metrics(&self, raw: &RawMetrics) -> Result<MetricsConfig, ConfigError> {
        let listen = match &raw.listen {
            None => DEFAULT_METRICS_LISTEN,
            Some(listen) => {
                let text = listen.get_ref();
                let addr = text.parse::<SocketAddr>().map_err(|_| {
                    self.invalid(
                        "metrics.listen",
                        listen.span(),
                        format_args!(
                            "{text:?} is not an IP address and port (e.g. \"127.0.0.1:9477\", \"[::1]:9477\")"
                        ),
                    )
                })?;
                if addr.port() == 0 {
                    return Err(self.invalid(
                        "metrics.listen",
                        listen.span(),
                        format_args!("{text:?}: port 0 is not a port Prometheus can scrape"),
                    ));
                }
                addr
            }
        };
        let top_blocked: u16 = self.integer(
            "metrics.top_blocked",
            raw.top_blocked.as_ref(),
            0,
            u16::try_from(MAX_TOP_BLOCKED).unwrap_or(u16::MAX),
            u16::try_from(DEFAULT_TOP_BLOCKED).unwrap_or(u16::MAX),
            "series",
        )?;
        Ok(MetricsConfig {
            enabled: raw.enabled.unwrap_or(true),
            listen,
            top_blocked: usize::from(top_blocked),
        })
    }

    fn allowlist(&self, raw: &RawAllowlist) -> Result<AllowlistConfig, ConfigError> {
        let prefixes = raw
            .prefixes
            .iter()
            .map(|text| {
                text.get_ref()
                    .parse::<Prefix>()
                    .map_err(|err| self.invalid("allowlist.prefixes", text.span(), err))
            })
            .collect::<Result<_, _>>()?;
        let files = raw
            .files
            .iter()
            .map(|file| self.absolute_path("allowlist.files", Some(file), ""))
            .collect::<Result<_, _>>()?;
        Ok(AllowlistConfig {
            prefixes,
            files,
            loopback: raw.loopback.unwrap_or(true),
            host_addresses: raw.host_addresses.unwrap_or(true),
        })
    }

    fn absolute_path(
        &self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        let Some(value) = value else {
            return Ok(PathBuf::from(default));
        };
        let text = value.get_ref();
        if !text.starts_with('/') {
            return Err(self.invalid(
                key,
                value.span(),
                format_args!("{text:?} is not an absolute path (start it with '/')"),
            ));
        }
        if text.contains('\0') {
            return Err(self.invalid(
                key,
                value.span(),
                format_args!("{text:?} contains a NUL character"),
            ));
        }
        Ok(PathBuf::from(text))
    }

    fn control_socket(&self, value: Option<&Spanned<String>>) -> Result<PathBuf, ConfigError> {
        let path = self.absolute_path("control_socket", value, DEFAULT_CONTROL_SOCKET)?;
        let Some(value) = value else {
            return Ok(path);
        };
        let len = value.get_ref().len();
        if len > MAX_SOCKET_PATH {
            return Err(self.invalid(
                "control_socket",
                value.span(),
                format_args!(
                    "{:?} is {len} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}",
                    value.get_ref()
                ),
            ));
        }
        if value.get_ref().ends_with('/') {
            return Err(self.invalid(
                "control_socket",
                value.span(),
                format_args!("{:?} names a directory, not a socket", value.get_ref()),
            ));
        }
        Ok(path)
    }

    fn scoring(&self, raw: &RawScoring) -> Result<ScoringConfig, ConfigError> {
        let d = ScoringConfig::default();
        let max_tracked: u32 = self.integer(
            "scoring.max_tracked",
            raw.max_tracked.as_ref(),
            1,
            16 << 20,
            u32::try_from(d.max_tracked).unwrap_or(u32::MAX),
            "sources",
        )?;
        Ok(ScoringConfig {
            threshold: self.integer(
                "scoring.threshold",
                raw.threshold.as_ref(),
                0,
                1 << 40,
                d.threshold,
                "points",
            )?,
            window: match &raw.window {
                Some(value) => self.duration("scoring.window", value, "")?,
                None => d.window,
            },
            score_min: self.integer(
                "scoring.score_min",
                raw.score_min.as_ref(),
                -(1 << 40),
                0,
                d.score_min,
                "points",
            )?,
            max_tracked: usize::try_from(max_tracked).unwrap_or(usize::MAX),
            exclude_local: raw.exclude_local.unwrap_or(d.exclude_local),
            ban: match &raw.ban {
                Some(value) => self.duration("scoring.ban", value, "")?,
                None => d.ban,
            },
            ban_multiplier: self.integer(
                "scoring.ban_multiplier",
                raw.ban_multiplier.as_ref(),
                1,
                100,
                d.ban_multiplier,
                "times",
            )?,
            ban_max: match &raw.ban_max {
                Some(value) => self.duration("scoring.ban_max", value, "")?,
                None => d.ban_max,
            },
            aggregate_min: self.integer(
                "scoring.aggregate_min",
                raw.aggregate_min.as_ref(),
                0,
                65_536,
                d.aggregate_min,
                "addresses",
            )?,
            aggregate_len_v4: self.integer(
                "scoring.aggregate_len_v4",
                raw.aggregate_len_v4.as_ref(),
                8,
                31,
                d.aggregate_len_v4,
                "bits",
            )?,
            aggregate_len_v6: self.integer(
                "scoring.aggregate_len_v6",
                raw.aggregate_len_v6.as_ref(),
                32,
                127,
                d.aggregate_len_v6,
                "bits",
            )?,
        })
    }

    fn inputs(&self, raw: &[Spanned<RawInput>]) -> Result<Vec<InputConfig>, ConfigError> {
        let mut out: Vec<InputConfig> = Vec::new();
        for input in raw {
            let input = input.get_ref();
            let name = input.name.get_ref();
            if name.is_empty() || out.iter().any(|i| &i.name == name) {
                return Err(self.invalid(
                    "inputs.name",
                    input.name.span(),
                    format_args!("{name:?} is empty or names another input too"),
                ));
            }
            let start_at_end = match &input.start {
                None => true,
                Some(start) if start.get_ref() == "end" => true,
                Some(start) if start.get_ref() == "beginning" => false,
                Some(start) => {
                    return Err(self.invalid(
                        "inputs.start",
                        start.span(),
                        format_args!("{:?} is neither \"end\" nor \"beginning\"", start.get_ref()),
                    ));
                }
            };
            let source = match (&input.file, &input.pipe, input.stdin, input.journal) {
                (Some(file), None, false, false) => {
                    InputSource::File(self.absolute_path("inputs.file", Some(file), "")?)
                }
                (None, Some(pipe), false, false) => {
                    InputSource::Pipe(self.absolute_path("inputs.pipe", Some(pipe), "")?)
                }
                (None, None, true, false) => InputSource::Stdin,
                (None, None, false, true) => InputSource::Journal {
                    unit: input.journal_unit.clone(),
                    file: match &input.journal_file {
                        Some(file) => {
                            Some(self.absolute_path("inputs.journal_file", Some(file), "")?)
                        }
                        None => None,
                    },
                },
                _ => {
                    return Err(self.invalid(
                        "inputs",
                        input.name.span(),
                        format_args!(
                            "input {name:?}: name exactly one of file, pipe, stdin = true or journal = true"
                        ),
                    ));
                }
            };
            out.push(InputConfig {
                name: name.clone(),
                source,
                rulesets: input.rulesets.clone(),
                start_at_end,
            });
        }
        Ok(out)
    }

    fn volume(&self, raw: &RawVolume) -> Result<VolumeConfig, ConfigError> {
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
            let detector = self.detector(&key, raw_detector, xdp_accounting, flow.is_some())?;
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
            detectors,
        })
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
            u32::try_from(DEFAULT_FLOW_RECEIVE_BUFFER).unwrap_or(u32::MAX),
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
            DEFAULT_FLOW_TEMPLATE_TIMEOUT,
        )?;
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
        }))
    }

    /// `key` is `volume.detectors[N]`.
    fn detector(
        &self,
        key: &str,
        raw: &Spanned<RawDetector>,
        xdp_accounting: bool,
        flow: bool,
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
        let source = detector
            .source
            .as_ref()
            .map_or_else(VolumeSource::default, |s| *s.get_ref());
        let needs = match source {
            VolumeSource::Xdp if !xdp_accounting => Some("volume.xdp_accounting = true"),
            VolumeSource::Flow if !flow => Some("an enabled [volume.flow] table"),
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
        let (bytes_per_second, packets_per_second) = self.limits(
            key,
            detector.bytes_per_second.as_ref(),
            detector.packets_per_second.as_ref(),
        )?;
        if bytes_per_second.is_none() && packets_per_second.is_none() {
            return Err(self.invalid(
                &format!("{key}.bytes_per_second"),
                raw.span(),
                format_args!(
                    "detector {name:?} has no limit: give bytes_per_second, packets_per_second or both"
                ),
            ));
        }
        let mut overrides: Vec<LimitOverride> = Vec::with_capacity(detector.overrides.len());
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
            let (bytes_per_second, packets_per_second) = self.limits(
                &key,
                entry.bytes_per_second.as_ref(),
                entry.packets_per_second.as_ref(),
            )?;
            let has_limit = bytes_per_second.is_some() || packets_per_second.is_some();
            if entry.exempt == has_limit {
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
            overrides.push(LimitOverride {
                prefix,
                bytes_per_second,
                packets_per_second,
                exempt: entry.exempt,
            });
        }
        Ok(DetectorConfig {
            name: name.clone(),
            source,
            bytes_per_second,
            packets_per_second,
            prefix_len_v4: self.prefix_len_range(
                &format!("{key}.prefix_len_v4"),
                detector.prefix_len_v4.as_ref(),
                32,
                DEFAULT_DETECTOR_PREFIX_LEN_V4,
            )?,
            prefix_len_v6: self.prefix_len_range(
                &format!("{key}.prefix_len_v6"),
                detector.prefix_len_v6.as_ref(),
                128,
                DEFAULT_DETECTOR_PREFIX_LEN_V6,
            )?,
            action: detector.action.unwrap_or_default(),
            ban: self.duration_within(
                &format!("{key}.ban"),
                detector.ban.as_ref(),
                MIN_INTERVAL,
                MAX_DETECTOR_BAN,
                DEFAULT_DETECTOR_BAN,
            )?,
            cool_intervals: self.integer(
                &format!("{key}.cool_intervals"),
                detector.cool_intervals.as_ref(),
                1,
                MAX_COOL_INTERVALS,
                DEFAULT_DETECTOR_COOL_INTERVALS,
                "intervals",
            )?,
            overrides,
        })
    }

    /// `KEY.bytes_per_second` and `KEY.packets_per_second`, each 1 to [`MAX_VOLUME_RATE`].
    fn limits(
        &self,
        key: &str,
        bytes: Option<&Spanned<Integer>>,
        packets: Option<&Spanned<Integer>>,
    ) -> Result<(Option<u64>, Option<u64>), ConfigError> {
        let max = i64::try_from(MAX_VOLUME_RATE).unwrap_or(i64::MAX);
        let rate = |name: &str, value: Option<&Spanned<Integer>>, unit: &str| {
            value
                .map(|value| {
                    self.integer(&format!("{key}.{name}"), Some(value), 1, max, 1, unit)
                        .map(i64::unsigned_abs)
                })
                .transpose()
        };
        Ok((
            rate("bytes_per_second", bytes, "bytes per second")?,
            rate("packets_per_second", packets, "packets per second")?,
        ))
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
        default: (u8, u8),
    ) -> Result<(u8, u8), ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let [min, max] = value.get_ref().as_slice() else {
            return Err(self.invalid(
                key,
                value.span(),
                format_args!(
                    "give [shortest, longest] prefix length, e.g. [{}, {}]",
                    default.0, default.1
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
        Ok((min, max))
    }

    /// A duration from `min` to `max`, or `default` when absent.
    fn duration_within(
        &self,
        key: &str,
        value: Option<&Spanned<RawDuration>>,
        min: Duration,
        max: Duration,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let duration = self.duration(key, value, "")?;
        if duration < min || duration > max {
            return Err(self.invalid(
                key,
                value.span(),
                format_args!(
                    "{} is out of range: {} to {}",
                    format_duration(duration),
                    format_duration(min),
                    format_duration(max)
                ),
            ));
        }
        Ok(duration)
    }

    /// An integer from `min` to `max`, or `default` when absent.
    fn integer<T>(
        &self,
        key: &str,
        value: Option<&Spanned<Integer>>,
        min: T,
        max: T,
        default: T,
        unit: &str,
    ) -> Result<T, ConfigError>
    where
        T: Copy + Into<i64> + TryFrom<i64> + fmt::Display,
    {
        let Some(value) = value else {
            return Ok(default);
        };
        let Integer(number) = *value.get_ref();
        T::try_from(number)
            .ok()
            .filter(|n| (min.into()..=max.into()).contains(&(*n).into()))
            .ok_or_else(|| {
                self.invalid(
                    key,
                    value.span(),
                    format_args!("{number} is out of range: {min} to {max} {unit}"),
                )
            })
    }

    /// A duration of at least [`MIN_INTERVAL`]; `alternative` extends the hint for bare numbers.
    fn duration(
        &self,
        key: &str,
        value: &Spanned<RawDuration>,
        alternative: &str,
    ) -> Result<Duration, ConfigError> {
        let duration = match value.get_ref() {
            RawDuration::Number(number) => {
                return Err(self.invalid(
                    key,
                    value.span(),
                    format_args!(
                        "{number} has no unit; write a duration string such as \"{number}s\"{alternative}"
                    ),
                ));
            }
            RawDuration::Text(text) => {
                parse_duration(text).map_err(|err| self.invalid(key, value.span(), err))?
            }
        };
        if duration < MIN_INTERVAL {
            return Err(self.invalid(
                key,
                value.span(),
                format_args!(
                    "{} is shorter than the minimum of {}",
                    format_duration(duration),
                    format_duration(MIN_INTERVAL)
                ),
            ));
        }
        Ok(duration)
    }
}

/// What the offset of an error falls on.
enum Found {
    /// A key: `path` is left at the table holding it.
    Key(String),
    /// A value: `path` is its key.
    Value,
}

/// Find the key or value at `offset`, leaving its dotted path in `path`. Arrays of tables
/// (`[[interfaces]]`) and arrays of values take the array's key; indices are left out, the
/// line says which one.
fn find_key(table: &DeTable<'_>, offset: usize, path: &mut String) -> Option<Found> {
    for (key, value) in table {
        if key.span().contains(&offset) {
            return Some(Found::Key(key.get_ref().to_string()));
        }
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        if let Some(found) = find_in_value(value, offset, path) {
            return Some(found);
        }
        path.truncate(len);
    }
    None
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) -> Option<Found> {
    match value.get_ref() {
        DeValue::Table(table) => {
            if let Some(found) = find_key(table, offset, path) {
                return Some(found);
            }
        }
        DeValue::Array(items) => {
            for item in items {
                if let Some(found) = find_in_value(item, offset, path) {
                    return Some(found);
                }
            }
        }
        _ => {}
    }
    value.span().contains(&offset).then_some(Found::Value)
}

/// Linux's `dev_valid_name`, and no control characters.
fn check_interface_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not interface names");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("it contains '/', ':', whitespace or a control character");
    }
    Ok(())
}

// Durations.

/// Units from largest to smallest, with their length in milliseconds.
const UNITS: [(&str, u64); 6] = [
    ("w", 604_800_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Why a duration string was refused; each message quotes the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{input:?} is not a duration (examples: 500ms, 90s, 15m, 1h30m, 2d, 1w)")]
    Malformed { input: String },
    #[error("{input:?} has a number without a unit (units: w, d, h, m, s, ms; e.g. \"90s\")")]
    MissingUnit { input: String },
    #[error("{input:?} has an unknown unit {unit:?} (units: w, d, h, m, s, ms)")]
    UnknownUnit { input: String, unit: String },
    #[error("{input:?}: give each unit once, largest first (e.g. \"1h30m\")")]
    UnitOrder { input: String },
    #[error("{input:?} is too long a duration")]
    Overflow { input: String },
}

/// Parse a duration: numbers each followed by a unit (`w`, `d`, `h`, `m`, `s`, `ms`), each unit
/// at most once, largest first: `500ms`, `90s`, `15m`, `1h30m`, `2d`, `1w`, `1w2d`. Surrounding
/// whitespace is ignored. A bare number is refused: `30` could mean seconds or minutes.
/// Fractions and signs are refused; the total must fit in `u64` milliseconds.
///
/// # Errors
/// When the text is not of that shape or overflows; the message quotes the text.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    let input = || input.to_owned();
    if text.is_empty() {
        return Err(DurationError::Malformed { input: input() });
    }
    let mut rest = text;
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::Malformed { input: input() });
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        if unit.is_empty() {
            return Err(if after.is_empty() {
                DurationError::MissingUnit { input: input() }
            } else {
                DurationError::Malformed { input: input() }
            });
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                input: input(),
                unit: unit.to_owned(),
            });
        };
        if index < next_unit {
            return Err(DurationError::UnitOrder { input: input() });
        }
        next_unit = index + 1;
        total = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[index].1))
            .and_then(|millis| total.checked_add(millis))
            .ok_or_else(|| DurationError::Overflow { input: input() })?;
        rest = after;
    }
    Ok(Duration::from_millis(total))
}

/// The compact form [`parse_duration`] reads: `1h30m`, `2d`, `1w3d`, `1s500ms`; `0s` for zero.
/// Below a millisecond is dropped, so it round-trips for whole milliseconds.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, per) in UNITS {
        let per = u128::from(per);
        let count = millis / per;
        if count > 0 {
            let _: fmt::Result = write!(out, "{count}{unit}");
            millis %= per;
        }
    }
    out
}

// List files.

/// What a list file holds: the good lines and the bad ones, by line number (1-based).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrefixList {
    /// (line number, prefix), in file order; duplicates are kept.
    pub prefixes: Vec<(usize, Prefix)>,
    pub rejected: Vec<RejectedLine>,
    /// Lines whose prefix had host bits set (`192.0.2.7/24`), read as the network.
    pub host_bits_cleared: Vec<usize>,
}

/// A line that is not an address or prefix.
#[derive(Debug, PartialEq, Eq)]
pub struct RejectedLine {
    pub line: usize,
    /// The line, trimmed, invalid UTF-8 replaced; the first 64 bytes of an overlong line.
    pub text: String,
    pub reason: RejectReason,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("line is longer than {MAX_LIST_LINE} bytes")]
    TooLong,
    #[error("line is not UTF-8 text")]
    NotUtf8,
}

/// Read a list file; see [`parse_prefix_list`].
///
/// # Errors
/// When the file cannot be opened or read.
pub fn read_prefix_list(path: &Path) -> Result<PrefixList, io::Error> {
    parse_prefix_list(BufReader::with_capacity(1 << 16, File::open(path)?))
}

/// Read list-file lines: one address or CIDR per line (`192.0.2.1`, `198.51.100.0/24`,
/// `2001:db8::/32`; IPv4-mapped IPv6 becomes IPv4), blank lines, comments from `#` or `;` to
/// the end of the line (FireHOL netsets use `#`, Spamhaus DROP `;`), LF or CRLF, surrounding
/// whitespace, a UTF-8 byte order mark. Bad lines are collected, never fatal. Lines over
/// [`MAX_LIST_LINE`] bytes are rejected and skipped without being buffered whole. Good lines
/// cost no allocation beyond the result.
///
/// # Errors
/// When reading fails.
pub fn parse_prefix_list<R: BufRead>(mut reader: R) -> Result<PrefixList, io::Error> {
    let mut list = PrefixList::default();
    let mut buf = Vec::with_capacity(256);
    let mut number = 0;
    loop {
        buf.clear();
        let read = read_line_bounded(&mut reader, &mut buf)?;
        if read == LineRead::Eof {
            break;
        }
        number += 1;
        let mut line = buf.as_slice();
        if number == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let comment = line.iter().position(|b| *b == b'#' || *b == b';');
        // An overlong line is fine when its data ends in the part that was kept.
        if read == LineRead::TooLong && comment.is_none() {
            let head = &line[..line.len().min(64)];
            list.rejected.push(RejectedLine {
                line: number,
                text: format!("{}...", String::from_utf8_lossy(head.trim_ascii())),
                reason: RejectReason::TooLong,
            });
            continue;
        }
        let content = comment.map_or(line, |at| &line[..at]).trim_ascii();
        if content.is_empty() {
            continue;
        }
        let reason = match std::str::from_utf8(content) {
            Err(_) => RejectReason::NotUtf8,
            Ok(text) => match Prefix::parse(text) {
                Ok((prefix, cleared)) => {
                    list.prefixes.push((number, prefix));
                    if cleared {
                        list.host_bits_cleared.push(number);
                    }
                    continue;
                }
                Err(err) => RejectReason::Prefix(err),
            },
        };
        list.rejected.push(RejectedLine {
            line: number,
            text: String::from_utf8_lossy(line.trim_ascii()).into_owned(),
            reason,
        });
    }
    Ok(list)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineRead {
    Eof,
    Line,
    /// Longer than [`MAX_LIST_LINE`]: `buf` holds the first bytes, the rest was skipped.
    TooLong,
}

/// Append the next line, without its `\n`, to `buf`: at most [`MAX_LIST_LINE`] + 2 bytes of
/// it (the content, a CR, and one byte to tell that it is too long); the rest is skipped.
fn read_line_bounded<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    const KEEP: usize = MAX_LIST_LINE + 2;
    let finish = |buf: &[u8]| {
        if buf.strip_suffix(b"\r").unwrap_or(buf).len() > MAX_LIST_LINE {
            LineRead::TooLong
        } else {
            LineRead::Line
        }
    };
    let mut started = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(if started { finish(buf) } else { LineRead::Eof });
        }
        started = true;
        let newline = available.iter().position(|b| *b == b'\n');
        let end = newline.unwrap_or(available.len());
        let room = KEEP.saturating_sub(buf.len());
        buf.extend_from_slice(&available[..end.min(room)]);
        reader.consume(newline.map_or(end, |at| at + 1));
        if newline.is_some() {
            return Ok(finish(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    const PATH: &str = "/etc/xdpguard/xdpguard.toml";
    const EXAMPLE: &str = include_str!("../../packaging/xdpguard.toml");
    const MINIMAL: &str = "[[interfaces]]\nname = \"eth1\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(PATH))
    }

    /// `top` goes before the interface table, so its keys stay top-level.
    fn with_top(top: &str) -> String {
        format!("{top}\n{MINIMAL}")
    }

    /// `section` goes after the interface table.
    fn with_section(section: &str) -> String {
        format!("{MINIMAL}{section}")
    }

    /// The error's text, which must start with `PATH:line:`.
    fn error_at(text: &str, line: usize) -> String {
        let err = parse(text).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{PATH}:{line}:")),
            "expected line {line}: {message}"
        );
        message
    }

    fn eth(name: &str, mode: XdpMode) -> InterfaceConfig {
        InterfaceConfig {
            name: name.to_owned(),
            mode,
        }
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config, Config::new(vec![eth("eth1", XdpMode::Auto)]));
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
            CapacityConfig {
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
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(
            config,
            Config {
                rulesets_dir: Some(PathBuf::from("/etc/xdpguard/rulesets")),
                ..Config::new(vec![eth("eth0", XdpMode::Auto)])
            }
        );
    }

    #[test]
    fn shipped_example_documents_every_key() {
        let sections: [(&str, &[&str]); 7] = [
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
            ("[metrics]", &["enabled", "listen", "top_blocked"]),
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
            assert!(EXAMPLE.lines().any(|line| line == header), "{header}");
            for key in keys {
                assert!(set(key), "{header} {key} not in the example");
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
default_ban = "2d"
interfaces = [{ name = "eth0" }, { name = "enp1s0f1", mode = "native" }, { name = "veth-x", mode = "generic" }]

[metrics]
enabled = false
listen = "[::1]:9100"
top_blocked = 1000

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
                    eth("eth0", XdpMode::Auto),
                    eth("enp1s0f1", XdpMode::Native),
                    eth("veth-x", XdpMode::Generic),
                ],
                dry_run: true,
                pin_dir: "/sys/fs/bpf/fw".into(),
                state_dir: "/srv/fw/state".into(),
                control_socket: "/run/fw.sock".into(),
                metrics: MetricsConfig {
                    enabled: false,
                    listen: "[::1]:9100".parse().unwrap(),
                    top_blocked: 1000,
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
                capacity: CapacityConfig {
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
                default_ban: Some(Duration::from_secs(2 * 86_400)),
                rulesets_dir: None,
                scoring: ScoringConfig::default(),
                inputs: Vec::new(),
                volume: VolumeConfig::default(),
            }
        );
    }

    #[test]
    fn unknown_top_level_key_is_an_error_with_its_line() {
        let message = error_at(&with_top("dry_run = true\nbogus = 1"), 2);
        assert!(message.starts_with(&format!("{PATH}:2:1: ")), "{message}");
        assert!(message.contains("unknown field `bogus`"), "{message}");
    }

    #[test]
    fn unknown_key_in_a_section_names_the_section_and_line() {
        let message = error_at(
            &with_section("[metrics]\nlisten = \"127.0.0.1:1\"\nport = 3\n"),
            5,
        );
        assert!(
            message.contains(": metrics: unknown field `port`"),
            "{message}"
        );
        let message = error_at("[[interfaces]]\nname = \"eth0\"\nnmae = \"eth1\"\n", 3);
        assert!(
            message.contains("interfaces: unknown field `nmae`"),
            "{message}"
        );
        // The daemon test appends this below [metrics].
        let message = error_at(&with_section("[metrics]\n\nbogus_key = 1\n"), 5);
        assert!(message.contains("bogus_key"), "{message}");
    }

    #[test]
    fn top_level_key_below_a_table_gets_a_hint() {
        let message = error_at(&with_section("[guard]\ndry_run = true\n"), 4);
        assert!(
            message.contains("guard: unknown field `dry_run`"),
            "{message}"
        );
        assert!(message.contains("before the first [table]"), "{message}");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let message = error_at(&with_top("dry_run = true\npin_dir = \"/x"), 2);
        assert!(message.starts_with(&format!("{PATH}:2:")), "{message}");
        let message = error_at(&with_top("dry_run = \n"), 1);
        assert!(message.starts_with(&format!("{PATH}:1:11: ")), "{message}");
        // A key given twice.
        error_at(&with_top("dry_run = true\ndry_run = false"), 2);
    }

    #[test]
    fn wrong_types_name_the_key_and_line() {
        let message = error_at(&with_top("\ndry_run = \"yes\""), 2);
        assert!(message.contains("dry_run: invalid type"), "{message}");
        let message = error_at(&with_section("[capacity]\nallow_v4 = \"many\"\n"), 4);
        assert!(
            message.contains("capacity.allow_v4: invalid type"),
            "{message}"
        );
        let message = error_at(&with_top("metrics = 3"), 1);
        assert!(message.contains("metrics: invalid type"), "{message}");
        let message = error_at("interfaces = [\"eth0\"]", 1);
        assert!(message.contains("{ name = \"eth0\""), "{message}");
    }

    #[test]
    fn bad_cidr_is_an_error_at_its_value() {
        let text = with_section("[allowlist]\nprefixes = [\"10.0.0.0/8\", \"10.0.0.300/8\"]\n");
        assert_eq!(
            parse(&text).unwrap_err().to_string(),
            format!(
                "{PATH}:4:27: allowlist.prefixes: \"10.0.0.300/8\" is not an IP address or CIDR prefix"
            )
        );
        let message = error_at(
            &with_section("[allowlist]\nprefixes = [\"2001:db8::/129\"]\n"),
            4,
        );
        assert!(message.contains("2001:db8::/129"), "{message}");
    }

    #[test]
    fn bad_durations_are_errors_at_their_value() {
        let message = error_at(&with_top("\nreconcile_interval = \"soon\""), 2);
        assert!(
            message.contains("2:22: reconcile_interval: \"soon\" is not a duration"),
            "{message}"
        );
        let message = error_at(&with_top("default_ban = 3600"), 1);
        assert!(message.contains("\"3600s\" or \"never\""), "{message}");
        let message = error_at(&with_top("reconcile_interval = \"500ms\""), 1);
        assert!(
            message.contains("shorter than the minimum of 1s"),
            "{message}"
        );
        let message = error_at(&with_top("default_ban = \"0s\""), 1);
        assert!(message.contains("default_ban"), "{message}");
        let message = error_at(&with_top("default_ban = \"forever\""), 1);
        assert!(message.contains("\"forever\""), "{message}");
        let message = error_at(&with_top("reconcile_interval = true"), 1);
        assert!(message.contains("duration string"), "{message}");
    }

    #[test]
    fn relative_and_bad_paths_are_refused() {
        for key in ["pin_dir", "state_dir", "control_socket"] {
            let message = error_at(&with_top(&format!("{key} = \"var/lib\"")), 1);
            assert!(
                message.contains(&format!("{key}: \"var/lib\" is not an absolute path")),
                "{message}"
            );
        }
        let message = error_at(&with_top("state_dir = \"\""), 1);
        assert!(message.contains("absolute"), "{message}");
        let message = error_at(
            &with_section("[allowlist]\nfiles = [\"/ok\", \"allow.txt\"]\n"),
            4,
        );
        assert!(
            message.contains("allowlist.files: \"allow.txt\""),
            "{message}"
        );
        let long = format!("/run/{}.sock", "x".repeat(100));
        let message = error_at(&with_top(&format!("control_socket = \"{long}\"")), 1);
        assert!(message.contains("at most 107"), "{message}");
        let message = error_at(&with_top("control_socket = \"/run/xdpguard/\""), 1);
        assert!(message.contains("directory"), "{message}");
    }

    #[test]
    fn missing_or_empty_interfaces_is_an_error() {
        let err = parse("dry_run = true\n").unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                key: "interfaces",
                ..
            }
        ));
        assert!(
            err.to_string()
                .starts_with(&format!("{PATH}: interfaces: ")),
            "{err}"
        );
        let message = error_at("dry_run = true\ninterfaces = []\n", 2);
        assert!(message.contains("at least one interface"), "{message}");
    }

    #[test]
    fn interface_names_and_modes_are_checked() {
        for bad in [
            "",
            "a/b",
            "eth0:1",
            "eth 0",
            "eth0\\t",
            ".",
            "..",
            "sixteen-bytes-xx",
        ] {
            let message = error_at(&format!("[[interfaces]]\nname = \"{bad}\"\n"), 2);
            assert!(message.contains("not a valid interface name"), "{message}");
        }
        parse("[[interfaces]]\nname = \"fifteen-bytes-x\"\n").unwrap();
        let message = error_at(&with_section("[[interfaces]]\nname = \"eth1\"\n"), 4);
        assert!(message.contains("\"eth1\" is listed twice"), "{message}");
        let message = error_at("[[interfaces]]\nname = \"eth0\"\nmode = \"turbo\"\n", 3);
        assert!(
            message.contains("interfaces.mode: unknown variant `turbo`"),
            "{message}"
        );
        let message = error_at("[[interfaces]]\nmode = \"native\"\n", 1);
        assert!(message.contains("missing field `name`"), "{message}");
        let too_many: String = (0..16)
            .map(|i| format!("[[interfaces]]\nname = \"eth{i}\"\n"))
            .collect();
        let message = error_at(&too_many, 31);
        assert!(message.contains("more than 15 interfaces"), "{message}");
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        for (section, line) in [
            ("[metrics]\ntop_blocked = 1001", "metrics.top_blocked: 1001"),
            ("[metrics]\ntop_blocked = -1", "metrics.top_blocked: -1"),
            (
                "[guard]\nmin_prefix_len_v4 = 33",
                "guard.min_prefix_len_v4: 33",
            ),
            (
                "[guard]\nmin_prefix_len_v6 = 129",
                "guard.min_prefix_len_v6: 129",
            ),
            ("[capacity]\nblock_host_v4 = 0", "capacity.block_host_v4: 0"),
            (
                "[capacity]\nallow_v6 = 16777217",
                "capacity.allow_v6: 16777217",
            ),
            ("[capacity]\nallow_v6 = -5", "capacity.allow_v6: -5"),
            ("[capacity]\nvolume_v4 = 0", "capacity.volume_v4: 0"),
            (
                "[capacity]\nvolume_v6 = 16777217",
                "capacity.volume_v6: 16777217",
            ),
        ] {
            let message = error_at(&with_section(section), 4);
            assert!(message.contains(line), "{message}");
            assert!(message.contains("out of range"), "{message}");
        }
    }

    #[test]
    fn metrics_listen_must_be_an_address_and_port() {
        for bad in ["localhost:9477", "127.0.0.1", "9477", "127.0.0.1:0"] {
            let message = error_at(
                &with_section(&format!("[metrics]\nlisten = \"{bad}\"\n")),
                4,
            );
            assert!(message.contains(&format!("{bad:?}")), "{message}");
        }
    }

    #[test]
    fn columns_count_characters() {
        let message = error_at(&with_top("# é\nstate_dir = \"é\""), 2);
        assert!(message.starts_with(&format!("{PATH}:2:13: ")), "{message}");
        let message = error_at(&with_top("state_dir=\"é/x\"  "), 1);
        assert!(message.starts_with(&format!("{PATH}:1:11: ")), "{message}");
    }

    #[test]
    fn load_reads_files_and_names_unreadable_ones() {
        let dir = std::env::temp_dir().join(format!("xdpguard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xdpguard.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        assert_eq!(
            Config::load(&path).unwrap().interfaces,
            vec![eth("eth1", XdpMode::Auto)]
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

    #[test]
    fn durations_parse() {
        for (text, secs, millis) in [
            ("90s", 90, 0),
            ("15m", 900, 0),
            ("1h30m", 5400, 0),
            ("2d", 172_800, 0),
            ("1w", 604_800, 0),
            ("500ms", 0, 500),
            ("1w2d3h4m5s6ms", 788_645, 6),
            (" 30s ", 30, 0),
            ("0s", 0, 0),
            ("90m", 5400, 0),
            ("007s", 7, 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs) + Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_are_refused_quoting_the_input() {
        for (bad, kind) in [
            ("", "not a duration"),
            ("   ", "not a duration"),
            ("soon", "not a duration"),
            ("s", "not a duration"),
            ("-1s", "not a duration"),
            ("+1s", "not a duration"),
            ("1.5h", "not a duration"),
            ("1h 30m", "not a duration"),
            ("90", "without a unit"),
            ("1h30", "without a unit"),
            ("1x", "unknown unit \"x\""),
            ("1H", "unknown unit \"H\""),
            ("1sec", "unknown unit \"sec\""),
            ("30m1h", "largest first"),
            ("1s1s", "largest first"),
            ("99999999999999999999s", "too long"),
            ("30500568904943w", "too long"),
            ("18446744073709551615ms1ms", "largest first"),
            ("18446744073709552s", "too long"),
            ("18446744073709551s616ms", "too long"),
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{bad:?}")), "{bad:?}: {err}");
            assert!(err.contains(kind), "{bad:?}: {err}");
        }
    }

    #[test]
    fn durations_round_trip() {
        for (millis, text) in [
            (0, "0s"),
            (1, "1ms"),
            (1500, "1s500ms"),
            (90_000, "1m30s"),
            (5_400_000, "1h30m"),
            (86_400_000, "1d"),
            (8 * 86_400_000, "1w1d"),
            (u64::MAX, "30500568904w6d14h25m51s615ms"),
        ] {
            let duration = Duration::from_millis(millis);
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
        for secs in (0..200_000).step_by(7919) {
            let duration = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_duration(Duration::from_nanos(1_999_999)), "1ms");
        assert_eq!(format_duration(Duration::from_nanos(999)), "0s");
    }

    fn read_list(text: &[u8]) -> PrefixList {
        parse_prefix_list(Cursor::new(text)).unwrap()
    }

    fn accepted(list: &PrefixList) -> Vec<(usize, String)> {
        list.prefixes
            .iter()
            .map(|(line, prefix)| (*line, prefix.to_string()))
            .collect()
    }

    #[test]
    fn prefix_list_reads_comments_crlf_ipv6_and_mapped_ipv4() {
        let list = read_list(
            b"\xEF\xBB\xBF# FireHOL netset\r\n\
              203.0.113.1\r\n\
              \r\n\
              \t 203.0.113.0/24 # a net  \n\
              # 192.0.2.1\n\
              2001:db8::/32\n\
              ::ffff:198.51.100.7\n\
              ::ffff:198.51.100.0/120\n\
              1.10.16.0/20 ; SBL256894\n\
              198.51.100.77/24\n\
              198.51.100.9",
        );
        assert_eq!(
            accepted(&list),
            vec![
                (2, "203.0.113.1/32".to_owned()),
                (4, "203.0.113.0/24".to_owned()),
                (6, "2001:db8::/32".to_owned()),
                (7, "198.51.100.7/32".to_owned()),
                (8, "198.51.100.0/24".to_owned()),
                (9, "1.10.16.0/20".to_owned()),
                (10, "198.51.100.0/24".to_owned()),
                (11, "198.51.100.9/32".to_owned()),
            ]
        );
        assert!(list.rejected.is_empty(), "{:?}", list.rejected);
        assert_eq!(list.host_bits_cleared, vec![10]);
    }

    #[test]
    fn prefix_list_collects_every_bad_line() {
        let list = read_list(
            b"not-an-ip\n\
              203.0.113.1\n\
              10.0.0.300/8  # typo\r\n\
              10.0.0.0/33\n\
              2001:db8::/129\n\
              1.2.3.4 5.6.7.8\n\
              \xFF\xFE\n\
              192.0.2.1\n",
        );
        assert_eq!(
            accepted(&list),
            vec![
                (2, "203.0.113.1/32".to_owned()),
                (8, "192.0.2.1/32".to_owned()),
            ]
        );
        let rejected: Vec<(usize, &str)> = list
            .rejected
            .iter()
            .map(|r| (r.line, r.text.as_str()))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (1, "not-an-ip"),
                (3, "10.0.0.300/8  # typo"),
                (4, "10.0.0.0/33"),
                (5, "2001:db8::/129"),
                (6, "1.2.3.4 5.6.7.8"),
                (7, "\u{FFFD}\u{FFFD}"),
            ]
        );
        assert_eq!(
            list.rejected[1].reason.to_string(),
            "\"10.0.0.300/8\" is not an IP address or CIDR prefix"
        );
        assert!(matches!(list.rejected[2].reason, RejectReason::Prefix(_)));
        assert_eq!(list.rejected[5].reason, RejectReason::NotUtf8);
    }

    #[test]
    fn prefix_list_bounds_line_length() {
        let mut text = Vec::new();
        // Exactly at the limit (padding is whitespace), with CRLF: accepted.
        let at_limit = format!("{:<width$}", "192.0.2.1", width = MAX_LIST_LINE);
        text.extend_from_slice(format!("{at_limit}\r\n").as_bytes());
        // One byte over: rejected.
        let over = format!("{:<width$}x", "192.0.2.2", width = MAX_LIST_LINE);
        text.extend_from_slice(format!("{over}\n").as_bytes());
        // A megabyte without a newline, then more lines: skipped, reading goes on.
        text.extend(std::iter::repeat_n(b'7', 1 << 20));
        text.extend_from_slice(b"\n192.0.2.3\n");
        // A long trailing comment is fine: the data ends in the part that is kept.
        text.extend_from_slice(format!("192.0.2.4 # {}\n", "c".repeat(10_000)).as_bytes());
        // A long comment line too.
        text.extend_from_slice(format!("#{}\n", "c".repeat(10_000)).as_bytes());
        // And an overlong last line with no newline at all.
        text.extend(std::iter::repeat_n(b'8', 5000));
        // Small reads, so lines span many buffer refills.
        let list = parse_prefix_list(BufReader::with_capacity(7, Cursor::new(text))).unwrap();
        assert_eq!(
            accepted(&list),
            vec![
                (1, "192.0.2.1/32".to_owned()),
                (4, "192.0.2.3/32".to_owned()),
                (5, "192.0.2.4/32".to_owned()),
            ]
        );
        let rejected: Vec<usize> = list.rejected.iter().map(|r| r.line).collect();
        assert_eq!(rejected, vec![2, 3, 7]);
        assert!(
            list.rejected
                .iter()
                .all(|r| r.reason == RejectReason::TooLong && r.text.len() <= 67)
        );
        assert_eq!(
            list.rejected[0].reason.to_string(),
            "line is longer than 4096 bytes"
        );
    }

    #[test]
    fn prefix_list_reads_empty_and_comment_only_files() {
        assert_eq!(read_list(b""), PrefixList::default());
        assert_eq!(read_list(b"\n\n# nothing\r\n  \n"), PrefixList::default());
    }

    #[test]
    fn prefix_list_reads_a_million_lines() {
        let mut text = String::with_capacity(20 << 20);
        for i in 0..1_000_000_u32 {
            let [a, b, c, d] = i.to_be_bytes();
            let _: fmt::Result = writeln!(text, "{}.{b}.{c}.{d}", a + 10);
        }
        let list = read_list(text.as_bytes());
        assert_eq!(list.prefixes.len(), 1_000_000);
        assert_eq!(list.prefixes[999_999].0, 1_000_000);
        assert!(list.rejected.is_empty());
    }

    #[test]
    fn read_prefix_list_opens_files_and_reports_missing_ones() {
        let path = std::env::temp_dir().join(format!("xdpguard-list-{}", std::process::id()));
        std::fs::write(&path, "203.0.113.1\nnope\n").unwrap();
        let list = read_prefix_list(&path).unwrap();
        assert_eq!(list.prefixes.len(), 1);
        assert_eq!(list.rejected.len(), 1);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            read_prefix_list(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn xdp_mode_spelling_round_trips() {
        for mode in [XdpMode::Auto, XdpMode::Native, XdpMode::Generic] {
            let text = format!("[[interfaces]]\nname = \"eth0\"\nmode = \"{mode}\"\n");
            assert_eq!(parse(&text).unwrap().interfaces[0].mode, mode);
        }
    }

    #[test]
    fn scoring_and_inputs_are_read_and_checked() {
        let config = parse(&with_top("rulesets_dir = \"/etc/xdpguard/rulesets\"\n")).unwrap();
        assert_eq!(
            config.rulesets_dir,
            Some(PathBuf::from("/etc/xdpguard/rulesets"))
        );
        let text = format!(
            "{}[scoring]\nthreshold = 20\nwindow = \"5m\"\nban = \"2h\"\n[[inputs]]\nname = \"auth\"\nfile = \"/var/log/auth.log\"\nrulesets = [\"sshd\"]\nstart = \"beginning\"\n",
            with_top("")
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.scoring.threshold, 20);
        assert_eq!(config.scoring.window, Duration::from_secs(300));
        assert_eq!(config.scoring.ban, Duration::from_secs(7200));
        assert_eq!(
            config.inputs,
            vec![InputConfig {
                name: "auth".into(),
                source: InputSource::File(PathBuf::from("/var/log/auth.log")),
                rulesets: vec!["sshd".into()],
                start_at_end: false,
            }]
        );
        let bad = text.replace("\"beginning\"", "\"middle\"");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("inputs.start") && err.contains("middle"),
            "{err}"
        );
        let bad = text.replace("/var/log/auth.log", "auth.log");
        assert!(parse(&bad).unwrap_err().to_string().contains("inputs.file"));
        let both = text.replace("file = ", "pipe = \"/run/p\"\nfile = ");
        assert!(
            parse(&both)
                .unwrap_err()
                .to_string()
                .contains("exactly one of")
        );
        let journal = text.replace(
            "file = \"/var/log/auth.log\"",
            "journal = true\njournal_unit = \"ssh.service\"",
        );
        assert_eq!(
            parse(&journal).unwrap().inputs[0].source,
            InputSource::Journal {
                unit: Some("ssh.service".into()),
                file: None
            }
        );
        let pipe = text.replace("file = ", "pipe = ");
        assert_eq!(
            parse(&pipe).unwrap().inputs[0].source,
            InputSource::Pipe(PathBuf::from("/var/log/auth.log"))
        );
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
        let volume = parse(&text).unwrap().volume;
        let flow = volume.flow.expect("the example [volume.flow]");
        assert_eq!(flow.listen.to_string(), "0.0.0.0:2055");
        assert_eq!(
            flow.sampling,
            vec![SamplingOverride {
                exporter: "192.0.2.1".parse().unwrap(),
                rate: 1000
            }]
        );
        assert_eq!(volume.detectors.len(), 1);
        assert_eq!(volume.detectors[0].name, "flood");
        assert_eq!(volume.detectors[0].overrides.len(), 2);
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
        let volume = parse(&text).unwrap().volume;
        assert_eq!(
            volume.flow,
            Some(FlowConfig {
                listen: "[::]:2055".parse().unwrap(),
                receive_buffer: 8 << 20,
                direction: FlowDirection::Ingress,
                ingress_interfaces: Vec::new(),
                exporters: Vec::new(),
                sampling: Vec::new(),
                template_timeout: Duration::from_secs(1800),
            })
        );
        assert_eq!(
            volume.detectors,
            vec![DetectorConfig {
                name: "d".into(),
                source: VolumeSource::Xdp,
                bytes_per_second: None,
                packets_per_second: Some(1),
                prefix_len_v4: (16, 32),
                prefix_len_v6: (32, 128),
                action: VolumeAction::Report,
                ban: Duration::from_secs(600),
                cool_intervals: 1,
                overrides: Vec::new(),
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

[volume.flow]
enabled = true
listen = "192.0.2.10:6343"
receive_buffer = 65536
direction = "any"
ingress_interfaces = [0, 7, 4294967295]
exporters = ["192.0.2.1", "2001:db8:e::/48"]
sampling = [{ exporter = "192.0.2.1", rate = 1000 }, { exporter = "::ffff:192.0.2.2", rate = 1 }, { exporter = "2001:db8::1", rate = 1000000 }]
template_timeout = "24h"

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

[[volume.detectors]]
name = "pps"
source = "flow"
packets_per_second = 1
ban = "1m"
"#,
        );
        let override_ = |prefix: &str, bytes, packets, exempt| LimitOverride {
            prefix: prefix.parse().unwrap(),
            bytes_per_second: bytes,
            packets_per_second: packets,
            exempt,
        };
        assert_eq!(
            parse(&text).unwrap().volume,
            VolumeConfig {
                interval: Duration::from_secs(60),
                xdp_accounting: false,
                top: 1000,
                max_sources: 16 << 20,
                flow: Some(FlowConfig {
                    listen: "192.0.2.10:6343".parse().unwrap(),
                    receive_buffer: 65536,
                    direction: FlowDirection::Any,
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
                }),
                detectors: vec![
                    DetectorConfig {
                        name: "transit-flood_1".into(),
                        source: VolumeSource::Flow,
                        bytes_per_second: Some(125_000_000),
                        packets_per_second: Some(MAX_VOLUME_RATE),
                        prefix_len_v4: (24, 24),
                        prefix_len_v6: (0, 128),
                        action: VolumeAction::Block,
                        ban: Duration::from_secs(365 * 86_400),
                        cool_intervals: 1000,
                        overrides: vec![
                            override_("198.51.100.0/24", Some(1_250_000_000), None, false),
                            override_("192.0.2.0/24", None, None, true),
                            override_("2001:db8::/32", Some(6), Some(5), false),
                            override_("203.0.113.0/24", None, Some(1), false),
                        ],
                    },
                    DetectorConfig {
                        name: "pps".into(),
                        source: VolumeSource::Flow,
                        bytes_per_second: None,
                        packets_per_second: Some(1),
                        prefix_len_v4: (16, 32),
                        prefix_len_v6: (32, 128),
                        action: VolumeAction::Report,
                        ban: Duration::from_secs(60),
                        cool_intervals: 1,
                        overrides: Vec::new(),
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
        for direction in [FlowDirection::Ingress, FlowDirection::Any] {
            let text = with_section(&format!(
                "[volume.flow]\nlisten = \"0.0.0.0:2055\"\ndirection = \"{}\"\n",
                direction.name()
            ));
            let flow = parse(&text).unwrap().volume.flow.unwrap();
            assert_eq!(flow.direction, direction);
        }
    }

    /// Each error starts with `PATH:` and `expected` (`line:column: key: message...`).
    fn assert_errors(cases: &[(&str, &str)], wrap: impl Fn(&str) -> String) {
        for (section, expected) in cases {
            let text = wrap(section);
            let message = parse(&text).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("{PATH}:{expected}")),
                "{section:?}\n  expected {expected}\n  got      {message}"
            );
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
}
