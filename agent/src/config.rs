//! The daemon's configuration: TOML read into raw serde structs (unknown keys are errors),
//! then validated into [`Config`]. Every error names the file, line and column, and the key.
//!
//! Also the list-file reader (`block --file`, allowlist files): one address or CIDR per line,
//! `#` comments, the ipset / FireHOL netset shape.
use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read as _},
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::prefix::Prefix;

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdpguard";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xdpguard";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/xdpguard/control.sock";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9477";
const DEFAULT_TOP_BLOCKED: usize = 20;
const MAX_TOP_BLOCKED: usize = 1000;
const DEFAULT_RECONCILE: Duration = Duration::from_secs(30);
const MAX_CAPACITY: u32 = 16 << 20;

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native, falling back to generic with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub mode: XdpMode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub top_blocked: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowlistConfig {
    pub prefixes: Vec<Prefix>,
    pub files: Vec<PathBuf>,
    pub loopback: bool,
    pub host_addresses: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    pub min_prefix_len_v4: u8,
    pub min_prefix_len_v6: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapacityConfig {
    pub allow_v4: u32,
    pub allow_v6: u32,
    pub block_host_v4: u32,
    pub block_host_v6: u32,
    pub block_prefix_v4: u32,
    pub block_prefix_v6: u32,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub interfaces: Vec<InterfaceConfig>,
    pub dry_run: bool,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    pub metrics: MetricsConfig,
    pub allowlist: AllowlistConfig,
    pub guard: GuardConfig,
    pub capacity: CapacityConfig,
    pub reconcile_interval: Duration,
    /// Expiry of a block that names none; `None`: never.
    pub default_ban: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    interfaces: Vec<Spanned<RawInterface>>,
    #[serde(default)]
    dry_run: bool,
    pin_dir: Option<Spanned<PathBuf>>,
    state_dir: Option<Spanned<PathBuf>>,
    control_socket: Option<Spanned<PathBuf>>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    allowlist: RawAllowlist,
    #[serde(default)]
    guard: RawGuard,
    #[serde(default)]
    capacity: RawCapacity,
    reconcile_interval: Option<Spanned<String>>,
    default_ban: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    #[serde(default)]
    mode: XdpMode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    top_blocked: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowlist {
    #[serde(default)]
    prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<PathBuf>>,
    loopback: Option<bool>,
    host_addresses: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    min_prefix_len_v4: Option<Spanned<u8>>,
    min_prefix_len_v6: Option<Spanned<u8>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacity {
    allow_v4: Option<Spanned<u32>>,
    allow_v6: Option<Spanned<u32>>,
    block_host_v4: Option<Spanned<u32>>,
    block_host_v6: Option<Spanned<u32>>,
    block_prefix_v4: Option<Spanned<u32>>,
    block_prefix_v6: Option<Spanned<u32>>,
}

/// Turns byte spans into `file:line:column` errors.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let offset = span.map_or(0, |span| span.start).min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn absolute(
        &self,
        key: &str,
        value: Option<Spanned<PathBuf>>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        let Some(value) = value else {
            return Ok(PathBuf::from(default));
        };
        if !value.get_ref().is_absolute() {
            return Err(self.error(
                Some(value.span()),
                format!("{key}: {:?} is not an absolute path", value.get_ref()),
            ));
        }
        Ok(value.into_inner())
    }

    fn duration(&self, key: &str, value: &Spanned<String>) -> Result<Duration, ConfigError> {
        parse_duration(value.get_ref())
            .map_err(|err| self.error(Some(value.span()), format!("{key}: {err}")))
    }

    fn capacity(
        &self,
        key: &str,
        value: Option<Spanned<u32>>,
        default: u32,
    ) -> Result<u32, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        if !(1..=MAX_CAPACITY).contains(value.get_ref()) {
            return Err(self.error(
                Some(value.span()),
                format!(
                    "capacity.{key}: {} is not between 1 and {MAX_CAPACITY}",
                    value.get_ref()
                ),
            ));
        }
        Ok(value.into_inner())
    }
}

impl Config {
    /// Read and validate `path`.
    ///
    /// # Errors
    /// When the file cannot be read or is invalid; the error names file, line and key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validate `text`; `path` is only used in messages.
    ///
    /// # Errors
    /// When the text is not valid configuration.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let source = Source { path, text };
        let raw: RawConfig = toml::from_str(text)
            .map_err(|err| source.error(err.span(), err.message().trim().to_owned()))?;
        let mut interfaces = Vec::new();
        for interface in raw.interfaces {
            let span = interface.span();
            let interface = interface.into_inner();
            let name = interface.name.get_ref();
            if name.is_empty()
                || name.len() > 15
                || name.contains(['/', ' ', '\t', '\n'])
                || name == "."
                || name == ".."
            {
                return Err(source.error(
                    Some(interface.name.span()),
                    format!("interfaces.name: {name:?} is not a valid interface name (1 to 15 characters, no '/' or spaces)"),
                ));
            }
            if interfaces.iter().any(|i: &InterfaceConfig| &i.name == name) {
                return Err(
                    source.error(Some(span), format!("interfaces: {name:?} is listed twice"))
                );
            }
            interfaces.push(InterfaceConfig {
                name: interface.name.into_inner(),
                mode: interface.mode,
            });
        }
        if interfaces.is_empty() {
            return Err(source.error(
                None,
                "interfaces: name at least one interface ([[interfaces]] name = \"eth0\")",
            ));
        }
        let metrics = {
            let listen = match raw.metrics.listen {
                Some(listen) => listen.get_ref().parse::<SocketAddr>().map_err(|_| {
                    source.error(
                        Some(listen.span()),
                        format!(
                            "metrics.listen: {:?} is not an address:port",
                            listen.get_ref()
                        ),
                    )
                })?,
                None => DEFAULT_METRICS_LISTEN
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            };
            let top_blocked = match raw.metrics.top_blocked {
                Some(n) if *n.get_ref() > MAX_TOP_BLOCKED => {
                    return Err(source.error(
                        Some(n.span()),
                        format!(
                            "metrics.top_blocked: {} is over the limit of {MAX_TOP_BLOCKED}",
                            n.get_ref()
                        ),
                    ));
                }
                Some(n) => n.into_inner(),
                None => DEFAULT_TOP_BLOCKED,
            };
            MetricsConfig {
                enabled: raw.metrics.enabled.unwrap_or(true),
                listen,
                top_blocked,
            }
        };
        let mut prefixes = Vec::new();
        for text in &raw.allowlist.prefixes {
            let prefix = text.get_ref().parse::<Prefix>().map_err(|err| {
                source.error(Some(text.span()), format!("allowlist.prefixes: {err}"))
            })?;
            prefixes.push(prefix);
        }
        let mut files = Vec::new();
        for file in raw.allowlist.files {
            if !file.get_ref().is_absolute() {
                return Err(source.error(
                    Some(file.span()),
                    format!(
                        "allowlist.files: {:?} is not an absolute path",
                        file.get_ref()
                    ),
                ));
            }
            files.push(file.into_inner());
        }
        let guard_len = |value: Option<Spanned<u8>>, key: &str, default: u8, max: u8| match value {
            Some(v) if *v.get_ref() > max => Err(source.error(
                Some(v.span()),
                format!("guard.{key}: {} is longer than /{max}", v.get_ref()),
            )),
            Some(v) => Ok(v.into_inner()),
            None => Ok(default),
        };
        let guard = GuardConfig {
            min_prefix_len_v4: guard_len(raw.guard.min_prefix_len_v4, "min_prefix_len_v4", 8, 32)?,
            min_prefix_len_v6: guard_len(
                raw.guard.min_prefix_len_v6,
                "min_prefix_len_v6",
                32,
                128,
            )?,
        };
        use xdpguard_common::capacity as cap;
        let capacity = CapacityConfig {
            allow_v4: source.capacity("allow_v4", raw.capacity.allow_v4, cap::ALLOW_V4)?,
            allow_v6: source.capacity("allow_v6", raw.capacity.allow_v6, cap::ALLOW_V6)?,
            block_host_v4: source.capacity(
                "block_host_v4",
                raw.capacity.block_host_v4,
                cap::BLOCK_HOST_V4,
            )?,
            block_host_v6: source.capacity(
                "block_host_v6",
                raw.capacity.block_host_v6,
                cap::BLOCK_HOST_V6,
            )?,
            block_prefix_v4: source.capacity(
                "block_prefix_v4",
                raw.capacity.block_prefix_v4,
                cap::BLOCK_PREFIX_V4,
            )?,
            block_prefix_v6: source.capacity(
                "block_prefix_v6",
                raw.capacity.block_prefix_v6,
                cap::BLOCK_PREFIX_V6,
            )?,
        };
        let reconcile_interval = match &raw.reconcile_interval {
            Some(value) => {
                let interval = source.duration("reconcile_interval", value)?;
                if interval < Duration::from_secs(1) {
                    return Err(source.error(
                        Some(value.span()),
                        "reconcile_interval: must be at least 1s",
                    ));
                }
                interval
            }
            None => DEFAULT_RECONCILE,
        };
        let default_ban = match &raw.default_ban {
            Some(value) if value.get_ref() == "never" => None,
            Some(value) => Some(source.duration("default_ban", value)?),
            None => None,
        };
        Ok(Self {
            interfaces,
            dry_run: raw.dry_run,
            pin_dir: source.absolute("pin_dir", raw.pin_dir, DEFAULT_PIN_DIR)?,
            state_dir: source.absolute("state_dir", raw.state_dir, DEFAULT_STATE_DIR)?,
            control_socket: source.absolute(
                "control_socket",
                raw.control_socket,
                DEFAULT_CONTROL_SOCKET,
            )?,
            metrics,
            allowlist: AllowlistConfig {
                prefixes,
                files,
                loopback: raw.allowlist.loopback.unwrap_or(true),
                host_addresses: raw.allowlist.host_addresses.unwrap_or(true),
            },
            guard,
            capacity,
            reconcile_interval,
            default_ban,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a duration (use units: 500ms, 90s, 15m, 1h30m, 2d, 1w)")]
pub struct DurationError {
    input: String,
}

/// Parse `500ms`, `90s`, `15m`, `1h30m`, `2d`, `1w`: numbers each followed by a unit, largest
/// first or in any order, summed. A bare number is refused (seconds or minutes?).
///
/// # Errors
/// When the text has no unit, an unknown unit, or overflows.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = || DurationError {
        input: input.to_owned(),
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(error());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
        if digits == 0 {
            return Err(error());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| error())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(error()),
        };
        rest = &rest[unit_len..];
        let millis = number.checked_mul(millis_per_unit).ok_or_else(error)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(error)?;
    }
    Ok(total)
}

/// A line of a list file that was not an address or prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedLine {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

/// What a list file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixList {
    /// (line number, prefix).
    pub prefixes: Vec<(usize, Prefix)>,
    pub rejected: Vec<RejectedLine>,
}

/// Lines longer than this are rejected without being kept.
const MAX_LIST_LINE: usize = 4096;

/// Read a list file: one address or CIDR per line, `#` comments (whole line or trailing),
/// blank lines, CRLF. Bad lines are collected, never fatal.
///
/// # Errors
/// When the file cannot be read.
pub fn read_prefix_list(path: &Path) -> Result<PrefixList, io::Error> {
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path)?);
    let mut list = PrefixList::default();
    let mut buf = Vec::with_capacity(128);
    let mut number = 0;
    loop {
        buf.clear();
        // Bounded read: a hostile file with no newlines cannot make us buffer it whole.
        let read = (&mut reader)
            .take(MAX_LIST_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        number += 1;
        if buf.len() > MAX_LIST_LINE && buf.last() != Some(&b'\n') {
            // Skip the rest of the overlong line.
            let mut sink = Vec::new();
            let _: usize = reader.read_until(b'\n', &mut sink)?;
            list.rejected.push(RejectedLine {
                line: number,
                text: String::from_utf8_lossy(&buf[..64]).into_owned(),
                reason: format!("line longer than {MAX_LIST_LINE} bytes"),
            });
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match content.parse::<Prefix>() {
            Ok(prefix) => list.prefixes.push((number, prefix)),
            Err(err) => list.rejected.push(RejectedLine {
                line: number,
                text: content.to_owned(),
                reason: err.to_string(),
            }),
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[interfaces]]\nname = \"eth1\"\n";

    /// Top-level keys must come before the first table.
    fn with_top(top: &str) -> String {
        format!("{top}{MINIMAL}")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/xdpguard/xdpguard.toml"))
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(
            config.interfaces,
            vec![InterfaceConfig {
                name: "eth1".into(),
                mode: XdpMode::Auto
            }]
        );
        assert_eq!(config.pin_dir, Path::new(DEFAULT_PIN_DIR));
        assert_eq!(config.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(config.control_socket, Path::new(DEFAULT_CONTROL_SOCKET));
        assert_eq!(config.metrics.listen.to_string(), DEFAULT_METRICS_LISTEN);
        assert!(
            config.metrics.enabled && config.allowlist.loopback && config.allowlist.host_addresses
        );
        assert_eq!(
            (
                config.guard.min_prefix_len_v4,
                config.guard.min_prefix_len_v6
            ),
            (8, 32)
        );
        assert_eq!(config.reconcile_interval, Duration::from_secs(30));
        assert_eq!(config.default_ban, None);
        assert!(!config.dry_run);
    }

    #[test]
    fn shipped_example_parses() {
        let config = parse(include_str!("../../packaging/xdpguard.toml")).unwrap();
        assert!(!config.interfaces.is_empty());
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let err = parse(&with_top("dry_run = true\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/xdpguard/xdpguard.toml:2:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}[metrics]\nlisten = \"127.0.0.1:1\"\nport = 3\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(":5:") && err.contains("port"), "{err}");
    }

    #[test]
    fn bad_values_name_line_key_and_value() {
        let err = parse(&format!(
            "{MINIMAL}[allowlist]\nprefixes = [\"10.0.0.0/8\", \"10.0.0.300/8\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(":4:")
                && err.contains("allowlist.prefixes")
                && err.contains("10.0.0.300/8"),
            "{err}"
        );
        let err = parse(&with_top("\nreconcile_interval = \"soon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2:") && err.contains("\"soon\""), "{err}");
        let err = parse(&with_top("state_dir = \"var/lib\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state_dir") && err.contains("absolute"),
            "{err}"
        );
        let err = parse("[[interfaces]]\nname = \"a/b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2:") && err.contains("a/b"), "{err}");
        let err = parse(&format!("{MINIMAL}[capacity]\nblock_host_v4 = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("capacity.block_host_v4"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}[[interfaces]]\nname = \"eth1\"\nmode = \"turbo\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("turbo"), "{err}");
    }

    #[test]
    fn no_interfaces_is_an_error() {
        let err = parse("dry_run = true\n").unwrap_err().to_string();
        assert!(err.contains("interfaces"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in [
            "",
            "90",
            "s",
            "1x",
            "-1s",
            "1.5h",
            "99999999999999999999s",
            "18446744073709551615w",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn list_files_keep_good_lines_and_report_bad_ones_by_number() {
        let path = std::env::temp_dir().join(format!("xdpguard-list-{}", std::process::id()));
        let long = "1".repeat(5000);
        std::fs::write(
            &path,
            format!("# FireHOL style\r\n203.0.113.1\r\n\n203.0.113.0/24 # net\nnot-an-ip\n2001:db8::/32\n::ffff:198.51.100.7\n{long}\n198.51.100.9"),
        )
        .unwrap();
        let list = read_prefix_list(&path).unwrap();
        let good: Vec<(usize, String)> = list
            .prefixes
            .iter()
            .map(|(n, p)| (*n, p.to_string()))
            .collect();
        assert_eq!(
            good,
            vec![
                (2, "203.0.113.1/32".into()),
                (4, "203.0.113.0/24".into()),
                (6, "2001:db8::/32".into()),
                (7, "198.51.100.7/32".into()),
                (9, "198.51.100.9/32".into()),
            ]
        );
        let bad: Vec<usize> = list.rejected.iter().map(|r| r.line).collect();
        assert_eq!(bad, vec![5, 8]);
        std::fs::remove_file(&path).unwrap();
    }
}
