//! `[fleet]`: the NATS servers, one way to log in (secrets inline or from files), TLS files,
//! this host's name, the bucket, and the filters.
use std::time::Duration;

use toml::Spanned;

use super::super::{ConfigError, locate::ConfigText, raw::RawFleet};
use super::crowdsec::read_small;
use crate::peers::fleet::config::{
    DEFAULT_BUCKET, DEFAULT_CATCH_UP_TIMEOUT, DEFAULT_MAX_DECISIONS, FleetAuth, FleetConfig,
    FleetTls, SOURCE_KINDS, is_name, system_host_name,
};

const MAX_SERVERS: usize = 16;
const MAX_FILTER_ENTRIES: usize = 256;
const MAX_SECRET_BYTES: usize = 1024;

impl ConfigText<'_> {
    pub(super) fn fleet(&self, raw: &Spanned<RawFleet>) -> Result<FleetConfig, ConfigError> {
        let table = raw.span();
        let raw = raw.get_ref();
        let servers = self.fleet_servers(raw, table.clone())?;
        let auth = self.fleet_auth(raw)?;
        let path = |key: &str, value: Option<&Spanned<String>>| {
            value
                .map(|file| self.absolute_path(key, Some(file), ""))
                .transpose()
        };
        let tls = FleetTls {
            required: raw.tls_required.unwrap_or(false)
                || servers.iter().any(|s| s.starts_with("tls://")),
            ca_file: path("fleet.ca_file", raw.ca_file.as_ref())?,
            cert_file: path("fleet.cert_file", raw.cert_file.as_ref())?,
            key_file: path("fleet.key_file", raw.key_file.as_ref())?,
        };
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let at = raw
                .cert_file
                .as_ref()
                .or(raw.key_file.as_ref())
                .map_or(table, Spanned::span);
            return Err(self.invalid(
                "fleet.cert_file",
                at,
                "give cert_file and key_file together",
            ));
        }
        let host = match &raw.host {
            None => system_host_name(),
            Some(host) => self.fleet_name("fleet.host", host)?,
        };
        let bucket = match &raw.bucket {
            None => DEFAULT_BUCKET.to_owned(),
            Some(bucket) => self.fleet_name("fleet.bucket", bucket)?,
        };
        let sources = |key: &str, value: Option<&Spanned<Vec<Spanned<String>>>>| {
            self.fleet_list(key, value, |text| {
                let kind = text
                    .split_once(':')
                    .map_or(text, |(kind, name)| if name.is_empty() { "" } else { kind });
                SOURCE_KINDS.contains(&kind)
            })
            .map_err(|(at, text)| {
                self.invalid(
                    key,
                    at,
                    format_args!(
                        "{text:?} is not a source kind ({}) or a source (ruleset:sshd)",
                        SOURCE_KINDS.join(", ")
                    ),
                )
            })
        };
        let publish_sources = sources("fleet.publish_sources", raw.publish_sources.as_ref())?;
        let accept_sources = sources("fleet.accept_sources", raw.accept_sources.as_ref())?;
        let accept_hosts = self
            .fleet_list("fleet.accept_hosts", raw.accept_hosts.as_ref(), is_name)
            .map_err(|(at, text)| {
                self.invalid(
                    "fleet.accept_hosts",
                    at,
                    format_args!("{text:?} is not a host name (letters, digits, '-', '_')"),
                )
            })?;
        Ok(FleetConfig {
            servers,
            auth,
            tls,
            host,
            bucket,
            publish_allows: raw.publish_allows.unwrap_or(false),
            accept_allows: raw.accept_allows.unwrap_or(false),
            publish_sources,
            accept_hosts,
            accept_sources,
            min_prefix_len_v4: self.integer(
                "fleet.min_prefix_len_v4",
                raw.min_prefix_len_v4.as_ref(),
                0,
                32,
                0,
                "bits",
            )?,
            min_prefix_len_v6: self.integer(
                "fleet.min_prefix_len_v6",
                raw.min_prefix_len_v6.as_ref(),
                0,
                128,
                0,
                "bits",
            )?,
            catch_up_timeout: self.duration_within(
                "fleet.catch_up_timeout",
                raw.catch_up_timeout.as_ref(),
                Duration::from_secs(1),
                Duration::from_secs(600),
                DEFAULT_CATCH_UP_TIMEOUT,
            )?,
            max_decisions: self.integer(
                "fleet.max_decisions",
                raw.max_decisions.as_ref(),
                1,
                16_000_000,
                u32::try_from(DEFAULT_MAX_DECISIONS).unwrap_or(u32::MAX),
                "decisions",
            )? as usize,
        })
    }

    fn fleet_servers(
        &self,
        raw: &RawFleet,
        table: std::ops::Range<usize>,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(list) = &raw.servers else {
            return Err(self.invalid(
                "fleet.servers",
                table,
                "missing: the NATS servers, e.g. servers = [\"nats://10.0.0.5:4222\"]",
            ));
        };
        if list.get_ref().is_empty() || list.get_ref().len() > MAX_SERVERS {
            return Err(self.invalid(
                "fleet.servers",
                list.span(),
                format_args!("1 to {MAX_SERVERS} servers"),
            ));
        }
        let mut servers = Vec::new();
        for server in list.get_ref() {
            let text = server.get_ref().trim();
            let ok = reqwest::Url::parse(text).ok().is_some_and(|url| {
                matches!(url.scheme(), "nats" | "tls")
                    && url.host().is_some()
                    && url.username().is_empty()
                    && url.query().is_none()
                    && matches!(url.path(), "" | "/")
            }) && text.parse::<async_nats::ServerAddr>().is_ok();
            if !ok {
                return Err(self.invalid(
                    "fleet.servers",
                    server.span(),
                    format_args!(
                        "{text:?}: a nats:// or tls:// URL with a host (credentials go in user/password, token or nkey_seed_file)"
                    ),
                ));
            }
            servers.push(text.to_owned());
        }
        Ok(servers)
    }

    /// One secret, inline or from a file.
    fn fleet_secret(
        &self,
        key: &str,
        inline: Option<&Spanned<String>>,
        file_key: &str,
        file: Option<&Spanned<String>>,
    ) -> Result<Option<String>, ConfigError> {
        let (text, at, named) = match (inline, file) {
            (None, None) => return Ok(None),
            (Some(_), Some(file)) => {
                return Err(self.invalid(
                    file_key,
                    file.span(),
                    format_args!("give {key} or {file_key}, not both"),
                ));
            }
            (Some(value), None) => (value.get_ref().clone(), value.span(), key),
            (None, Some(file)) => {
                let path = self.absolute_path(file_key, Some(file), "")?;
                let text = read_small(&path).map_err(|err| {
                    self.invalid(
                        file_key,
                        file.span(),
                        format_args!("{}: {err}", path.display()),
                    )
                })?;
                (text.trim().to_owned(), file.span(), file_key)
            }
        };
        if text.is_empty() || text.len() > MAX_SECRET_BYTES || text.chars().any(char::is_control) {
            return Err(self.invalid(
                named,
                at,
                format_args!("1 to {MAX_SECRET_BYTES} characters without control characters"),
            ));
        }
        Ok(Some(text))
    }

    fn fleet_auth(&self, raw: &RawFleet) -> Result<FleetAuth, ConfigError> {
        let password = self.fleet_secret(
            "fleet.password",
            raw.password.as_ref(),
            "fleet.password_file",
            raw.password_file.as_ref(),
        )?;
        let token = self.fleet_secret(
            "fleet.token",
            raw.token.as_ref(),
            "fleet.token_file",
            raw.token_file.as_ref(),
        )?;
        let nkey = self.fleet_secret(
            "fleet.nkey_seed_file",
            None,
            "fleet.nkey_seed_file",
            raw.nkey_seed_file.as_ref(),
        )?;
        let credentials = raw
            .credentials_file
            .as_ref()
            .map(|file| self.absolute_path("fleet.credentials_file", Some(file), ""))
            .transpose()?;
        let user = raw.user.as_ref();
        let ways = [
            user.is_some() || password.is_some(),
            token.is_some(),
            nkey.is_some(),
            credentials.is_some(),
        ];
        if ways.iter().filter(|way| **way).count() > 1 {
            let at = [
                &raw.token,
                &raw.token_file,
                &raw.nkey_seed_file,
                &raw.credentials_file,
                &raw.password,
            ]
            .into_iter()
            .flatten()
            .map(Spanned::span)
            .next_back()
            .unwrap_or_default();
            return Err(self.invalid(
                "fleet",
                at,
                "one way to log in: user and password, token, nkey_seed_file or credentials_file",
            ));
        }
        if let Some(nkey) = nkey {
            if !nkey.starts_with("SU") {
                let at = raw
                    .nkey_seed_file
                    .as_ref()
                    .map(Spanned::span)
                    .unwrap_or_default();
                return Err(self.invalid(
                    "fleet.nkey_seed_file",
                    at,
                    "not a user nkey seed (SU...)",
                ));
            }
            return Ok(FleetAuth::Nkey(nkey));
        }
        if let Some(token) = token {
            return Ok(FleetAuth::Token(token));
        }
        if let Some(path) = credentials {
            return Ok(FleetAuth::CredentialsFile(path));
        }
        match (user, password) {
            (None, None) => Ok(FleetAuth::None),
            (Some(user), Some(password)) => Ok(FleetAuth::UserPassword {
                user: user.get_ref().clone(),
                password,
            }),
            (Some(user), None) => Err(self.invalid(
                "fleet.password",
                user.span(),
                "user needs password or password_file",
            )),
            (None, Some(_)) => {
                let at = raw
                    .password
                    .as_ref()
                    .or(raw.password_file.as_ref())
                    .map(Spanned::span)
                    .unwrap_or_default();
                Err(self.invalid("fleet.user", at, "password needs user"))
            }
        }
    }

    fn fleet_name(&self, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
        let text = value.get_ref();
        if !is_name(text) {
            return Err(self.invalid(
                key,
                value.span(),
                format_args!("{text:?}: 1 to 64 letters, digits, '-' or '_'"),
            ));
        }
        Ok(text.clone())
    }

    /// A list of names each `valid` accepts; the first that is not, with its place.
    #[allow(clippy::unused_self, reason = "beside its siblings, which need self")]
    fn fleet_list(
        &self,
        key: &str,
        value: Option<&Spanned<Vec<Spanned<String>>>>,
        valid: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, (std::ops::Range<usize>, String)> {
        let Some(list) = value else {
            return Ok(Vec::new());
        };
        if list.get_ref().len() > MAX_FILTER_ENTRIES {
            return Err((
                list.span(),
                format!("{key}: more than {MAX_FILTER_ENTRIES} entries"),
            ));
        }
        list.get_ref()
            .iter()
            .map(|item| {
                if valid(item.get_ref()) {
                    Ok(item.get_ref().clone())
                } else {
                    Err((item.span(), item.get_ref().clone()))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::super::testing::{assert_errors, parse, with_section};
    use crate::peers::fleet::config::FleetAuth;

    #[test]
    fn a_fleet_table_reads_into_the_fleet_config() {
        let config = parse(&with_section(
            "[fleet]\nservers = [\"nats://[2001:db8:c:1::1]:4222\", \"nats://10.0.0.5\"]\nhost = \"web-1\"\nuser = \"a\"\npassword = \"s3cret\"\naccept_sources = [\"ruleset\", \"manual\"]\ncatch_up_timeout = \"3s\"\n",
        ))
        .unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!(fleet.servers.len(), 2);
        assert_eq!(fleet.host, "web-1");
        assert_eq!(fleet.bucket, "xdpguard");
        assert_eq!(
            fleet.auth,
            FleetAuth::UserPassword {
                user: "a".into(),
                password: "s3cret".into()
            }
        );
        assert!(!format!("{:?}", fleet.auth).contains("s3cret"));
        assert_eq!(fleet.accept_sources, ["ruleset", "manual"]);
        assert_eq!(fleet.catch_up_timeout, Duration::from_secs(3));
        assert!(!fleet.host.is_empty());
        assert!(parse(&with_section("")).unwrap().fleet.is_none());
    }

    #[test]
    fn bad_fleet_settings_are_named_at_their_place() {
        let servers = "servers = [\"nats://127.0.0.1:4222\"]\n";
        assert_errors(
            &[
                ("[fleet]\nhost = \"a\"\n", "3:1: fleet.servers: missing"),
                (
                    "[fleet]\nservers = [\"http://127.0.0.1:4222\"]\n",
                    "4:12: fleet.servers: \"http://127.0.0.1:4222\": a nats:// or tls:// URL",
                ),
                (
                    "[fleet]\nservers = [\"nats://u:p@127.0.0.1\"]\n",
                    "4:12: fleet.servers: \"nats://u:p@127.0.0.1\"",
                ),
                (
                    &format!("[fleet]\n{servers}host = \"web.1\"\n"),
                    "5:8: fleet.host: \"web.1\"",
                ),
                (
                    &format!("[fleet]\n{servers}token = \"t\"\nuser = \"u\"\npassword = \"p\"\n"),
                    "7:12: fleet: one way to log in",
                ),
                (
                    &format!("[fleet]\n{servers}user = \"u\"\n"),
                    "5:8: fleet.password: user needs password",
                ),
                (
                    &format!("[fleet]\n{servers}accept_sources = [\"rulesets\"]\n"),
                    "5:19: fleet.accept_sources: \"rulesets\" is not a source kind",
                ),
                (
                    &format!("[fleet]\n{servers}accept_hosts = [\"a b\"]\n"),
                    "5:17: fleet.accept_hosts: \"a b\" is not a host name",
                ),
                (
                    &format!("[fleet]\n{servers}min_prefix_len_v4 = 33\n"),
                    "5:21: fleet.min_prefix_len_v4: 33 is out of range",
                ),
                (
                    &format!(
                        "[fleet]\n{servers}password_file = \"/nonexistent/p\"\nuser = \"u\"\n"
                    ),
                    "5:17: fleet.password_file: /nonexistent/p:",
                ),
                (
                    &format!("[fleet]\n{servers}cert_file = \"/etc/c.pem\"\n"),
                    "5:13: fleet.cert_file: give cert_file and key_file together",
                ),
                (
                    &format!("[fleet]\n{servers}bogus = 1\n"),
                    "5:1: fleet: unknown field `bogus`",
                ),
            ],
            with_section,
        );
    }
}
