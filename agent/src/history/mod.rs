//! The history: what happened per interval, in an embedded SQLite database, for reports.
pub mod model;
pub mod query;
pub mod schema;
pub mod store;
pub mod tap;
#[cfg(test)]
mod test_support;

use std::{path::PathBuf, time::Duration};

/// The `[history]` table of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The SQLite database (default: `history.sqlite` in the state directory).
    pub path: PathBuf,
    /// How much one record covers.
    pub interval: Duration,
    pub store: store::StoreSettings,
}

impl HistoryConfig {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
    pub const FILE_NAME: &str = "history.sqlite";

    /// The defaults, recording into `state_dir`.
    pub fn in_state_dir(state_dir: &std::path::Path) -> Self {
        Self {
            path: state_dir.join(Self::FILE_NAME),
            interval: Self::DEFAULT_INTERVAL,
            store: store::StoreSettings::default(),
        }
    }
}
