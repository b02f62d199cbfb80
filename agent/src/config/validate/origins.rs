//! `[origins]`: the RIS whois dumps to read, the visibility threshold, how often to look for
//! a newer download.
use std::time::Duration;

use toml::Spanned;

use super::super::{ConfigError, locate::ConfigText, raw::RawOrigins};
use crate::origins::OriginsConfig;

/// More files than this is a mistake (RIS publishes two).
const MAX_FILES: usize = 16;

impl ConfigText<'_> {
    pub(super) fn origins(&self, raw: &Spanned<RawOrigins>) -> Result<OriginsConfig, ConfigError> {
        let table = raw.span();
        let raw = raw.get_ref();
        let defaults = OriginsConfig::default();
        let Some(files) = &raw.files else {
            return Err(self.invalid(
                "origins.files",
                table,
                "missing: the RIS whois dumps to read, e.g. files = [\"/var/lib/xdpguard/riswhoisdump.IPv4.gz\", \"/var/lib/xdpguard/riswhoisdump.IPv6.gz\"]",
            ));
        };
        if files.get_ref().is_empty() || files.get_ref().len() > MAX_FILES {
            return Err(self.invalid(
                "origins.files",
                files.span(),
                format_args!("name 1 to {MAX_FILES} files"),
            ));
        }
        let mut paths = Vec::with_capacity(files.get_ref().len());
        for file in files.get_ref() {
            let path = self.absolute_path("origins.files", Some(file), "")?;
            if paths.contains(&path) {
                return Err(self.invalid(
                    "origins.files",
                    file.span(),
                    format_args!("{} is named twice", path.display()),
                ));
            }
            paths.push(path);
        }
        Ok(OriginsConfig {
            files: paths,
            min_peers: self.integer(
                "origins.min_peers",
                raw.min_peers.as_ref(),
                1,
                100_000,
                defaults.min_peers,
                "peers",
            )?,
            check_every: self.duration_within(
                "origins.check_every",
                raw.check_every.as_ref(),
                Duration::from_secs(1),
                Duration::from_secs(86_400),
                defaults.check_every,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use crate::config::testing::{assert_errors, parse, with_section};

    #[test]
    fn a_valid_table_and_its_defaults() {
        let config = parse(&with_section(
            "[origins]\nfiles = [\"/var/lib/xdpguard/v4.gz\", \"/var/lib/xdpguard/v6.gz\"]\n",
        ))
        .unwrap();
        let origins = config.origins.unwrap();
        assert_eq!(
            origins.files,
            [
                PathBuf::from("/var/lib/xdpguard/v4.gz"),
                PathBuf::from("/var/lib/xdpguard/v6.gz")
            ]
        );
        assert_eq!(origins.min_peers, 10);
        assert_eq!(origins.check_every, Duration::from_secs(30));
        let config = parse(&with_section(
            "[origins]\nfiles = [\"/a\"]\nmin_peers = 3\ncheck_every = \"5m\"\n",
        ))
        .unwrap()
        .origins
        .unwrap();
        assert_eq!((config.min_peers, config.check_every.as_secs()), (3, 300));
        assert!(parse(&with_section("")).unwrap().origins.is_none());
    }

    #[test]
    fn errors_name_the_key_and_where() {
        assert_errors(
            &[
                ("[origins]\n", "3:1: origins.files: missing"),
                (
                    "[origins]\nfiles = []\n",
                    "4:9: origins.files: name 1 to 16 files",
                ),
                (
                    "[origins]\nfiles = [\"dumps/v4.gz\"]\n",
                    "4:10: origins.files: \"dumps/v4.gz\" is not an absolute path",
                ),
                (
                    "[origins]\nfiles = [\"/a\", \"/a\"]\n",
                    "4:16: origins.files: /a is named twice",
                ),
                (
                    "[origins]\nfiles = [\"/a\"]\nmin_peers = 0\n",
                    "5:13: origins.min_peers: 0 is out of range: 1 to 100000 peers",
                ),
                (
                    "[origins]\nfiles = [\"/a\"]\ncheck_every = \"2d\"\n",
                    "5:15: origins.check_every: 2d is out of range",
                ),
                (
                    "[origins]\nfiles = [\"/a\"]\nurl = \"https://example.net/\"\n",
                    "5:1: origins: unknown field `url`",
                ),
            ],
            with_section,
        );
    }
}
