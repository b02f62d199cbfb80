//! `[crowdsec]`: the local API's URL, the bouncer key (inline or from a file), poll timing and
//! the origins to take.
use std::time::Duration;

use toml::Spanned;

use super::super::{ConfigError, locate::ConfigText, raw::RawCrowdsec};
use crate::peers::crowdsec::config::{
    CrowdsecConfig, DEFAULT_MAX_DECISIONS, DEFAULT_POLL_INTERVAL, DEFAULT_RESYNC_INTERVAL,
    DEFAULT_TIMEOUT,
};

/// Longest key accepted (CrowdSec's are 32 hex digits).
const MAX_KEY_BYTES: usize = 512;
const MAX_ORIGINS: usize = 64;

impl ConfigText<'_> {
    pub(super) fn crowdsec(
        &self,
        raw: &Spanned<RawCrowdsec>,
    ) -> Result<CrowdsecConfig, ConfigError> {
        let table = raw.span();
        let raw = raw.get_ref();
        let lapi_url = match &raw.lapi_url {
            None => {
                return Err(self.invalid(
                    "crowdsec.lapi_url",
                    table,
                    "missing: the local API's URL, e.g. lapi_url = \"http://127.0.0.1:8080/\"",
                ));
            }
            Some(url) => self.lapi_url(url)?,
        };
        let api_key = match (&raw.api_key, &raw.api_key_file) {
            (Some(_), Some(file)) => {
                return Err(self.invalid(
                    "crowdsec.api_key_file",
                    file.span(),
                    "give api_key or api_key_file, not both",
                ));
            }
            (None, None) => {
                return Err(self.invalid(
                    "crowdsec.api_key",
                    table,
                    "missing: the key `cscli bouncers add NAME` printed (api_key = \"...\"), or api_key_file = \"/path\"",
                ));
            }
            (Some(key), None) => self.api_key("crowdsec.api_key", key, key.get_ref())?,
            (None, Some(file)) => {
                let path = self.absolute_path("crowdsec.api_key_file", Some(file), "")?;
                let text = read_small(&path).map_err(|err| {
                    self.invalid(
                        "crowdsec.api_key_file",
                        file.span(),
                        format_args!("{}: {err}", path.display()),
                    )
                })?;
                self.api_key("crowdsec.api_key_file", file, text.trim())?
            }
        };
        let poll_interval = self.duration_within(
            "crowdsec.poll_interval",
            raw.poll_interval.as_ref(),
            Duration::from_secs(1),
            Duration::from_secs(3600),
            DEFAULT_POLL_INTERVAL,
        )?;
        let timeout = self.duration_within(
            "crowdsec.timeout",
            raw.timeout.as_ref(),
            Duration::from_secs(1),
            Duration::from_secs(600),
            DEFAULT_TIMEOUT,
        )?;
        let resync_interval = self.duration_within(
            "crowdsec.resync_interval",
            raw.resync_interval.as_ref(),
            Duration::from_secs(10),
            Duration::from_secs(86_400),
            DEFAULT_RESYNC_INTERVAL,
        )?;
        let origins = match &raw.origins {
            None => Vec::new(),
            Some(list) => {
                if list.get_ref().len() > MAX_ORIGINS {
                    return Err(self.invalid(
                        "crowdsec.origins",
                        list.span(),
                        format_args!("at most {MAX_ORIGINS} origins"),
                    ));
                }
                let mut origins = Vec::new();
                for origin in list.get_ref() {
                    let text = origin.get_ref();
                    if text.is_empty()
                        || text.len() > 64
                        || !text
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                    {
                        return Err(self.invalid(
                            "crowdsec.origins",
                            origin.span(),
                            format_args!(
                                "{text:?} is not an origin name (crowdsec, cscli, CAPI, lists, ...)"
                            ),
                        ));
                    }
                    origins.push(text.clone());
                }
                origins
            }
        };
        let ca_file = match &raw.ca_file {
            None => None,
            Some(file) => Some(self.absolute_path("crowdsec.ca_file", Some(file), "")?),
        };
        let max_decisions: u32 = self.integer(
            "crowdsec.max_decisions",
            raw.max_decisions.as_ref(),
            1,
            16_000_000,
            u32::try_from(DEFAULT_MAX_DECISIONS).unwrap_or(u32::MAX),
            "decisions",
        )?;
        Ok(CrowdsecConfig {
            lapi_url,
            api_key,
            poll_interval,
            timeout,
            resync_interval,
            origins,
            ca_file,
            max_decisions: max_decisions as usize,
        })
    }

    fn lapi_url(&self, url: &Spanned<String>) -> Result<String, ConfigError> {
        let text = url.get_ref().trim();
        let parsed = reqwest::Url::parse(text).map_err(|err| {
            self.invalid(
                "crowdsec.lapi_url",
                url.span(),
                format_args!("{text:?} is not a URL: {err}"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
        {
            return Err(self.invalid(
                "crowdsec.lapi_url",
                url.span(),
                format_args!(
                    "{text:?}: an http:// or https:// URL with a host and no query, fragment or credentials"
                ),
            ));
        }
        let mut base = parsed.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(base)
    }

    fn api_key(&self, key: &str, at: &Spanned<String>, text: &str) -> Result<String, ConfigError> {
        if text.is_empty()
            || text.len() > MAX_KEY_BYTES
            || !text.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(self.invalid(
                key,
                at.span(),
                format_args!(
                    "the bouncer key must be 1 to {MAX_KEY_BYTES} printable ASCII characters without spaces"
                ),
            ));
        }
        Ok(text.to_owned())
    }
}

/// A key file: at most 4 KiB, a regular file (a FIFO would block the load).
pub(super) fn read_small(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    let _: usize = file.take(4096 + 1).read_to_string(&mut text)?;
    if text.len() > 4096 {
        return Err(std::io::Error::other("longer than 4 KiB"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::super::testing::{assert_errors, parse, with_section};

    #[test]
    fn a_crowdsec_table_reads_into_the_bouncer_config() {
        let config = parse(&with_section(
            "[crowdsec]\nlapi_url = \"http://127.0.0.1:8080\"\napi_key = \"2dbe42eaa1a0f58a\"\npoll_interval = \"5s\"\norigins = [\"crowdsec\", \"cscli\"]\n",
        ))
        .unwrap();
        let crowdsec = config.crowdsec.unwrap();
        assert_eq!(crowdsec.lapi_url, "http://127.0.0.1:8080/");
        assert_eq!(crowdsec.api_key, "2dbe42eaa1a0f58a");
        assert_eq!(crowdsec.poll_interval, Duration::from_secs(5));
        assert_eq!(crowdsec.origins, ["crowdsec", "cscli"]);
        assert!(parse(&with_section("")).unwrap().crowdsec.is_none());
    }

    #[test]
    fn bad_crowdsec_settings_are_named_at_their_place() {
        let key = "api_key = \"k\"\n";
        assert_errors(
            &[
                (
                    "[crowdsec]\napi_key = \"k\"\n",
                    "3:1: crowdsec.lapi_url: missing",
                ),
                (
                    "[crowdsec]\nlapi_url = \"http://127.0.0.1:8080/\"\n",
                    "3:1: crowdsec.api_key: missing",
                ),
                (
                    &format!("[crowdsec]\nlapi_url = \"ftp://127.0.0.1/\"\n{key}"),
                    "4:12: crowdsec.lapi_url: \"ftp://127.0.0.1/\": an http:// or https:// URL",
                ),
                (
                    &format!("[crowdsec]\nlapi_url = \"http://u:p@127.0.0.1/\"\n{key}"),
                    "4:12: crowdsec.lapi_url:",
                ),
                (
                    "[crowdsec]\nlapi_url = \"http://127.0.0.1/\"\napi_key = \"a b\"\n",
                    "5:11: crowdsec.api_key: the bouncer key must be",
                ),
                (
                    "[crowdsec]\nlapi_url = \"http://127.0.0.1/\"\napi_key = \"k\"\napi_key_file = \"/k\"\n",
                    "6:16: crowdsec.api_key_file: give api_key or api_key_file, not both",
                ),
                (
                    "[crowdsec]\nlapi_url = \"http://127.0.0.1/\"\napi_key_file = \"/nonexistent/key\"\n",
                    "5:16: crowdsec.api_key_file: /nonexistent/key:",
                ),
                (
                    &format!(
                        "[crowdsec]\nlapi_url = \"http://127.0.0.1/\"\n{key}poll_interval = \"2h\"\n"
                    ),
                    "6:17: crowdsec.poll_interval: 2h is out of range",
                ),
                (
                    &format!(
                        "[crowdsec]\nlapi_url = \"http://127.0.0.1/\"\n{key}origins = [\"c s\"]\n"
                    ),
                    "6:12: crowdsec.origins: \"c s\" is not an origin name",
                ),
                (
                    &format!(
                        "[crowdsec]\nlapi_url = \"http://127.0.0.1/\"\n{key}colour = \"red\"\n"
                    ),
                    "6:1: crowdsec: unknown field `colour`",
                ),
            ],
            with_section,
        );
    }
}
