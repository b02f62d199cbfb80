//! `[history]`: where the daemon records, how often, for how long and how large.
use std::{path::Path, time::Duration};

use super::super::{ConfigError, locate::ConfigText, raw::RawHistory};
use crate::history::{HistoryConfig, store::StoreSettings};

/// The smallest size bound: a few hours of typical intervals.
const MIN_MAX_SIZE: i64 = 1 << 20;

impl ConfigText<'_> {
    pub(super) fn history(
        &self,
        raw: &RawHistory,
        state_dir: &Path,
    ) -> Result<Option<HistoryConfig>, ConfigError> {
        let defaults = StoreSettings::default();
        let path = match &raw.path {
            Some(_) => self.absolute_path("history.path", raw.path.as_ref(), "")?,
            None => state_dir.join(HistoryConfig::FILE_NAME),
        };
        let interval = self.duration_within(
            "history.interval",
            raw.interval.as_ref(),
            Duration::from_secs(1),
            Duration::from_secs(3600),
            HistoryConfig::DEFAULT_INTERVAL,
        )?;
        let retention = self.duration_within(
            "history.retention",
            raw.retention.as_ref(),
            Duration::from_secs(3600),
            Duration::from_secs(400 * 86_400),
            defaults.retention,
        )?;
        let max_bytes: i64 = self.integer(
            "history.max_size",
            raw.max_size.as_ref(),
            MIN_MAX_SIZE,
            i64::MAX,
            i64::try_from(defaults.max_bytes).unwrap_or(i64::MAX),
            "bytes",
        )?;
        let max_sources: i64 = self.integer(
            "history.max_sources_per_ruleset",
            raw.max_sources_per_ruleset.as_ref(),
            1,
            1_000_000,
            i64::try_from(defaults.max_sources_per_ruleset).unwrap_or(i64::MAX),
            "addresses",
        )?;
        if raw.enabled == Some(false) {
            return Ok(None);
        }
        Ok(Some(HistoryConfig {
            path,
            interval,
            store: StoreSettings {
                retention,
                max_bytes: u64::try_from(max_bytes).unwrap_or(u64::MAX),
                max_sources_per_ruleset: usize::try_from(max_sources).unwrap_or(usize::MAX),
                ..defaults
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use crate::config::testing::{assert_errors, parse, with_section};

    #[test]
    fn on_by_default_in_the_state_directory_and_off_when_asked() {
        let config = parse(&with_section("")).unwrap();
        let history = config.history.unwrap();
        assert_eq!(
            history.path,
            PathBuf::from("/var/lib/xdpguard/history.sqlite")
        );
        assert_eq!(history.interval, Duration::from_secs(60));
        assert_eq!(history.store.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(history.store.max_bytes, 1 << 30);
        let config = parse(&with_section(
            "[history]\npath = \"/srv/h.sqlite\"\ninterval = \"5m\"\nretention = \"90d\"\nmax_size = 10485760\n",
        ))
        .unwrap()
        .history
        .unwrap();
        assert_eq!(config.path, PathBuf::from("/srv/h.sqlite"));
        assert_eq!(config.interval, Duration::from_secs(300));
        assert_eq!(config.store.retention, Duration::from_secs(90 * 86_400));
        assert_eq!(config.store.max_bytes, 10 << 20);
        assert!(
            parse(&with_section("[history]\nenabled = false\n"))
                .unwrap()
                .history
                .is_none()
        );
    }

    #[test]
    fn errors_name_the_key_and_where() {
        assert_errors(
            &[
                (
                    "[history]\npath = \"history.sqlite\"\n",
                    "4:8: history.path: \"history.sqlite\" is not an absolute path",
                ),
                (
                    "[history]\ninterval = \"2h\"\n",
                    "4:12: history.interval: 2h is out of range",
                ),
                (
                    "[history]\nretention = \"1000d\"\n",
                    "4:13: history.retention: 142w6d is out of range: 1h to 57w1d",
                ),
                (
                    "[history]\nmax_size = 1000\n",
                    "4:12: history.max_size: 1000 is out of range",
                ),
                (
                    "[history]\nenabled = \"yes\"\n",
                    "4:11: history.enabled: invalid type",
                ),
                (
                    "[history]\nkeep = 1\n",
                    "4:1: history: unknown field `keep`",
                ),
            ],
            with_section,
        );
    }
}
