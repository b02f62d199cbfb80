//! `[fleet]`: which NATS servers, how to log in, this host's name, the bucket, and what to
//! publish and accept.
use std::{path::PathBuf, time::Duration};

/// The fleet's settings, validated (see `config/validate/fleet.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// `nats://host:port` or `tls://host:port`, tried in turn.
    pub servers: Vec<String>,
    pub auth: FleetAuth,
    pub tls: FleetTls,
    /// This agent's name in the fleet: its decisions are `fleet:HOST` elsewhere, and its
    /// keys start with it. Letters, digits, `-` and `_`.
    pub host: String,
    /// The JetStream key-value bucket (created when missing).
    pub bucket: String,
    /// Publish this host's allowlist entries too (not the configuration's: `[allowlist]` is
    /// each host's own).
    pub publish_allows: bool,
    /// Apply other hosts' allowlist entries (as `fleet:HOST`; never broader than
    /// [`MIN_ALLOW_LEN_V4`] / [`MIN_ALLOW_LEN_V6`]). Off: another host could exempt an
    /// attacker here.
    pub accept_allows: bool,
    /// Publish only own decisions of these source kinds (`manual`, `ruleset`, `volume`,
    /// `file`, `crowdsec`) or exact sources (`ruleset:sshd`); empty: all of them.
    pub publish_sources: Vec<String>,
    /// Apply only decisions of these hosts; empty: every other host.
    pub accept_hosts: Vec<String>,
    /// Apply only decisions whose source (on the host that made it) matches, as
    /// `publish_sources`; empty: all.
    pub accept_sources: Vec<String>,
    /// Apply no prefix broader than these (the owner's guards apply besides).
    pub min_prefix_len_v4: u8,
    pub min_prefix_len_v6: u8,
    /// How long the daemon waits at start for the bucket's state before it reports ready.
    pub catch_up_timeout: Duration,
    /// Other hosts' decisions held at most; beyond, new ones are counted and refused.
    pub max_decisions: usize,
}

/// How the agent logs in to NATS.
#[derive(Clone, PartialEq, Eq)]
pub enum FleetAuth {
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// An nkey seed (`SU...`).
    Nkey(String),
    /// A `.creds` file (JWT and nkey seed).
    CredentialsFile(PathBuf),
}

// Secrets stay out of logs and `Debug` output.
impl std::fmt::Debug for FleetAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Self::Token(_) => f.write_str("Token(***)"),
            Self::Nkey(_) => f.write_str("Nkey(***)"),
            Self::CredentialsFile(path) => write!(f, "CredentialsFile({})", path.display()),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetTls {
    /// Refuse a server that does not offer TLS.
    pub required: bool,
    /// A CA certificate (PEM) to trust, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

pub const DEFAULT_BUCKET: &str = "xdpguard";
/// The broadest allowlist entry taken from the fleet.
pub const MIN_ALLOW_LEN_V4: u8 = 16;
pub const MIN_ALLOW_LEN_V6: u8 = 32;
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_DECISIONS: usize = 2_000_000;

/// The kinds of source a filter may name.
pub const SOURCE_KINDS: [&str; 6] = [
    "manual",
    "ruleset",
    "volume",
    "file",
    "crowdsec",
    "recovered",
];

/// Whether `source` (text form) passes `filter` (kinds or exact sources; empty passes all).
pub fn source_matches(filter: &[String], source: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let kind = source.split_once(':').map_or(source, |(kind, _)| kind);
    filter
        .iter()
        .any(|wanted| wanted == source || wanted == kind)
}

/// This system's host name as a fleet name: characters outside letters, digits, `-` and `_`
/// become `_` (`web1.example.com` → `web1_example_com`), at most 64.
pub fn system_host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .take(64)
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

pub const fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A host or bucket name: 1 to 64 of letters, digits, `-` and `_`.
pub fn is_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.chars().all(is_name_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_filters_take_kinds_and_exact_sources() {
        let filter = vec!["ruleset".to_owned(), "volume:flood".to_owned()];
        assert!(source_matches(&filter, "ruleset:sshd"));
        assert!(source_matches(&filter, "volume:flood"));
        assert!(!source_matches(&filter, "volume:udp"));
        assert!(!source_matches(&filter, "manual"));
        assert!(source_matches(&[], "manual"));
    }
}
