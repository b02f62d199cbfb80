//! From the raw file to the typed configuration: every value range-checked, every error at
//! its place. The daemon's own keys and tables are checked here, `[scoring]` and `[[inputs]]`
//! in [`logs`], `[volume]` in [`volume`].
mod crowdsec;
mod fleet;
mod history;
mod logs;
mod origins;
mod volume;

pub(super) use logs::ruleset_files;

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use toml::Spanned;

use super::{
    AllowlistConfig, Config, ConfigError, DEFAULT_BAN, DEFAULT_CONTROL_SOCKET,
    DEFAULT_METRICS_LISTEN, DEFAULT_MIN_PREFIX_LEN_V4, DEFAULT_MIN_PREFIX_LEN_V6, DEFAULT_PIN_DIR,
    DEFAULT_RECONCILE_INTERVAL, DEFAULT_STATE_DIR, DEFAULT_TOP_BLOCKED, GuardConfig,
    InterfaceConfig, MAX_CAPACITY, MAX_INTERFACE_NAME, MAX_SOCKET_PATH, MAX_TOP_BLOCKED,
    MIN_INTERVAL, MetricsConfig, format_duration,
    locate::ConfigText,
    parse_duration,
    raw::{Integer, RawAllowlist, RawConfig, RawDuration, RawInterface, RawMetrics},
};
use crate::{api::listener::Limits, enforce::dataplane::Capacities, prefix::Prefix};

impl RawConfig {
    pub(super) fn validate(self, source: &ConfigText<'_>) -> Result<Config, ConfigError> {
        let interfaces = source.interfaces(self.interfaces)?;
        let capacity = {
            let c = &self.capacity;
            let d = Capacities::default();
            let cap = |key, value, default| {
                source.integer(key, value, 1, MAX_CAPACITY, default, "entries")
            };
            Capacities {
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
        let state_dir =
            source.absolute_path("state_dir", self.state_dir.as_ref(), DEFAULT_STATE_DIR)?;
        Ok(Config {
            interfaces,
            dry_run: self.dry_run,
            pin_dir: source.absolute_path("pin_dir", self.pin_dir.as_ref(), DEFAULT_PIN_DIR)?,
            history: source.history(&self.history, &state_dir)?,
            state_dir,
            control_socket: source.control_socket(self.control_socket.as_ref())?,
            control: source.control(&self.control)?,
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
            unknown_entries: self.unknown_entries.unwrap_or_default(),
            default_ban,
            rulesets_dirs: source.rulesets_dirs(self.rulesets_dir.as_ref())?,
            scoring: source.scoring(&self.scoring)?,
            inputs: source.inputs(&self.inputs)?,
            volume: source.volume(&self.volume)?,
            ruleset_limits: source.ruleset_limits(&self.rulesets)?,
            crowdsec: self
                .crowdsec
                .as_ref()
                .map(|raw| source.crowdsec(raw))
                .transpose()?,
            fleet: self
                .fleet
                .as_ref()
                .map(|raw| source.fleet(raw))
                .transpose()?,
            origins: self
                .origins
                .as_ref()
                .map(|raw| source.origins(raw))
                .transpose()?,
        })
    }
}

impl ConfigText<'_> {
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
            limits: self.listener_limits(
                "metrics",
                raw.request_timeout.as_ref(),
                raw.max_connections.as_ref(),
                Limits::METRICS,
            )?,
        })
    }

    /// `[control]`: the control socket's connection limits.
    fn control(&self, raw: &super::raw::RawControl) -> Result<Limits, ConfigError> {
        let limits = self.listener_limits(
            "control",
            raw.request_timeout.as_ref(),
            raw.max_connections.as_ref(),
            Limits::CONTROL,
        )?;
        let default = u32::try_from(Limits::CONTROL.max_request_bytes).unwrap_or(u32::MAX);
        let max_request_bytes: u32 = self.integer(
            "control.max_request_bytes",
            raw.max_request_bytes.as_ref(),
            super::MIN_CONTROL_REQUEST_BYTES,
            super::MAX_CONTROL_REQUEST_BYTES,
            default,
            "bytes",
        )?;
        Ok(Limits {
            max_request_bytes: usize::try_from(max_request_bytes).unwrap_or(usize::MAX),
            ..limits
        })
    }

    /// A listener's `request_timeout` and `max_connections` over `defaults`.
    fn listener_limits(
        &self,
        table: &str,
        request_timeout: Option<&Spanned<RawDuration>>,
        max_connections: Option<&Spanned<Integer>>,
        defaults: Limits,
    ) -> Result<Limits, ConfigError> {
        let default_connections = u32::try_from(defaults.max_connections).unwrap_or(u32::MAX);
        let max_connections: u32 = self.integer(
            &format!("{table}.max_connections"),
            max_connections,
            1,
            super::MAX_LISTENER_CONNECTIONS,
            default_connections,
            "connections",
        )?;
        Ok(Limits {
            request_timeout: self.duration_within(
                &format!("{table}.request_timeout"),
                request_timeout,
                MIN_INTERVAL,
                super::MAX_REQUEST_TIMEOUT,
                defaults.request_timeout,
            )?,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            ..defaults
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

    /// `rulesets_dir`: absolute, at least one, at most [`super::MAX_RULESET_DIRS`].
    fn rulesets_dirs(
        &self,
        value: Option<&Spanned<super::raw::RawDirs>>,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let Some(value) = value else {
            return Ok(Vec::new());
        };
        match value.get_ref() {
            super::raw::RawDirs::One(dir) => Ok(vec![self.absolute_path(
                "rulesets_dir",
                Some(&Spanned::new(value.span(), dir.clone())),
                "",
            )?]),
            super::raw::RawDirs::Many(dirs) => {
                if dirs.is_empty() || dirs.len() > super::MAX_RULESET_DIRS {
                    return Err(self.invalid(
                        "rulesets_dir",
                        value.span(),
                        format_args!("name 1 to {} directories", super::MAX_RULESET_DIRS),
                    ));
                }
                dirs.iter()
                    .map(|dir| self.absolute_path("rulesets_dir", Some(dir), ""))
                    .collect()
            }
        }
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

#[cfg(test)]
mod tests {
    use crate::{
        config::{ConfigError, testing::*},
        enforce::dataplane::AttachMode,
    };

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
    fn an_unknown_entries_policy_other_than_adopt_or_remove_is_an_error_at_its_line() {
        let message = error_at(&with_top("\nunknown_entries = \"keep\""), 2);
        assert!(
            message.contains(
                "2:19: unknown_entries: unknown variant `keep`, expected `adopt` or `remove`"
            ),
            "{message}"
        );
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
                "[metrics]\nmax_connections = 0",
                "metrics.max_connections: 0",
            ),
            (
                "[metrics]\nrequest_timeout = \"10m\"",
                "metrics.request_timeout: 10m",
            ),
            (
                "[control]\nmax_connections = 65537",
                "control.max_connections: 65537",
            ),
            (
                "[control]\nmax_request_bytes = 65536",
                "control.max_request_bytes: 65536",
            ),
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
    fn xdp_mode_spelling_round_trips() {
        for mode in [AttachMode::Auto, AttachMode::Native, AttachMode::Generic] {
            let text = format!("[[interfaces]]\nname = \"eth0\"\nmode = \"{mode}\"\n");
            assert_eq!(parse(&text).unwrap().interfaces[0].mode, mode);
        }
    }
}
