//! `[crowdsec]`: where the local API is and how xdpguard reads it.
use std::{path::PathBuf, time::Duration};

/// The bouncer's settings, validated (see `config/validate/crowdsec.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrowdsecConfig {
    /// The LAPI's base URL (`http://127.0.0.1:8080/`), ending in `/`.
    pub lapi_url: String,
    /// The key `cscli bouncers add` printed.
    pub api_key: String,
    /// Time between two polls of the stream.
    pub poll_interval: Duration,
    /// Longest a poll may take, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// Time between two full reads of the set (`startup=true`). The LAPI's deltas are the
    /// decisions created since the bouncer's last poll, and a decision whose insert commits
    /// after a poll that its creation time precedes (a large `cscli decisions import`) is in
    /// no delta: the full read picks it up.
    pub resync_interval: Duration,
    /// Only decisions of these origins (`crowdsec`, `cscli`, `CAPI`, `lists`); empty: all.
    pub origins: Vec<String>,
    /// A CA certificate (PEM) to trust for an `https` LAPI, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Decisions held at most; beyond, new ones are counted and refused.
    pub max_decisions: usize,
}

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_DECISIONS: usize = 2_000_000;
