//! The fleet's wire format: one key per (host, kind, prefix) in the bucket, its value one JSON
//! object. Everything read is checked before it is believed: size, fields, version, that the
//! key says what the value says, and the filters of this agent.
//!
//! Keys: `HOST.block.v4.203-0-113-7_32`, `HOST.block.v6.2001-db8-a--_48` (the address with
//! `.` or `:` as `-`, since a key token holds letters, digits, `-`, `_`, `=` and `/` only).
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{FleetConfig, MIN_ALLOW_LEN_V4, MIN_ALLOW_LEN_V6, is_name, source_matches};
use crate::{enforce::decision::DecisionKind, prefix::Prefix};

/// Longest value read: a decision is a few hundred bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
const MAX_SOURCE_BYTES: usize = 128;
const MAX_REASON_BYTES: usize = 1024;
pub const VERSION: u32 = 1;

/// One decision as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireDecision {
    pub v: u32,
    pub host: String,
    pub kind: DecisionKind,
    pub prefix: Prefix,
    /// Who decided on that host (`ruleset:sshd`, `manual`).
    pub source: String,
    pub reason: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; 0: never.
    pub until: u64,
}

/// Another host's decision, read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub host: Arc<str>,
    pub kind: DecisionKind,
    pub prefix: Prefix,
    pub source: String,
    pub reason: String,
    pub created: u64,
    pub until: u64,
}

/// Why a value is not applied. Refusals are counted per host; the labels are the metric's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    TooLarge,
    NotJson,
    UnknownField,
    Version,
    /// The key does not name a decision (wrong shape, host or prefix).
    BadKey,
    /// The value's host, kind or prefix is not the key's.
    KeyMismatch,
    BadText,
    /// Broader than `min_prefix_len_*`.
    TooBroad,
    /// An allowlist entry with an end (this host's never end: one is not an agent's).
    AllowExpiry,
}

impl Refused {
    pub const fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NotJson => "malformed",
            Self::UnknownField => "unknown_field",
            Self::Version => "version",
            Self::BadKey => "bad_key",
            Self::KeyMismatch => "key_mismatch",
            Self::BadText => "bad_text",
            Self::TooBroad => "too_broad",
            Self::AllowExpiry => "allow_expiry",
        }
    }
}

/// Why a good value is left alone (not an error of the sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// An allowlist entry, and `accept_allows` is off.
    Allow,
    Host,
    Source,
    Expired,
}

impl Skipped {
    pub const fn label(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Host => "host",
            Self::Source => "source",
            Self::Expired => "expired",
        }
    }
}

/// What a key names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub host: String,
    pub kind: DecisionKind,
    pub prefix: Prefix,
}

/// The key of `host`'s decision of `kind` on `prefix`.
pub fn key_for(host: &str, kind: DecisionKind, prefix: &Prefix) -> String {
    let (family, text) = match prefix.addr() {
        std::net::IpAddr::V4(addr) => ("v4", addr.to_string().replace('.', "-")),
        std::net::IpAddr::V6(addr) => ("v6", addr.to_string().replace(':', "-")),
    };
    format!(
        "{host}.{}.{family}.{text}_{}",
        kind.name(),
        prefix.prefix_len()
    )
}

/// The host a key starts with (for counting a refusal), if it is a name.
pub fn key_host(key: &str) -> Option<&str> {
    key.split('.').next().filter(|host| is_name(host))
}

/// Read a key back.
pub fn parse_key(key: &str) -> Option<Key> {
    let mut tokens = key.split('.');
    let (Some(host), Some(kind), Some(family), Some(rest), None) = (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) else {
        return None;
    };
    if !is_name(host) {
        return None;
    }
    let kind = match kind {
        "block" => DecisionKind::Block,
        "allow" => DecisionKind::Allow,
        _ => return None,
    };
    let (addr, len) = rest.split_once('_')?;
    let addr = match family {
        "v4" if !addr.contains(':') => addr.replace('-', "."),
        "v6" if !addr.contains('.') || addr.contains('-') => addr.replace('-', ":"),
        _ => return None,
    };
    let prefix: Prefix = format!("{addr}/{len}").parse().ok()?;
    let parsed = Key {
        host: host.to_owned(),
        kind,
        prefix,
    };
    // One spelling per decision: `010` or `0x` forms are not it.
    (key_for(host, kind, &prefix) == key).then_some(parsed)
}

/// What to do with a value read under `key` from another host.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Apply(Remote),
    Skip(Skipped),
    Refuse(Refused),
}

/// Check a value read under `key`, at `now_unix`, against this agent's filters.
pub fn read(config: &FleetConfig, key: &Key, value: &[u8], now_unix: u64) -> Read {
    if value.len() > MAX_MESSAGE_BYTES {
        return Read::Refuse(Refused::TooLarge);
    }
    let decision: WireDecision = match serde_json::from_slice(value) {
        Ok(decision) => decision,
        Err(err) if err.to_string().starts_with("unknown field") => {
            return Read::Refuse(Refused::UnknownField);
        }
        Err(_) => return Read::Refuse(Refused::NotJson),
    };
    if decision.v != VERSION {
        return Read::Refuse(Refused::Version);
    }
    if decision.host != key.host || decision.kind != key.kind || decision.prefix != key.prefix {
        return Read::Refuse(Refused::KeyMismatch);
    }
    let printable =
        |text: &str, max: usize| text.len() <= max && !text.chars().any(char::is_control);
    if decision.source.is_empty()
        || !printable(&decision.source, MAX_SOURCE_BYTES)
        || !printable(&decision.reason, MAX_REASON_BYTES)
    {
        return Read::Refuse(Refused::BadText);
    }
    let (min_v4, min_v6) = match decision.kind {
        DecisionKind::Block => (config.min_prefix_len_v4, config.min_prefix_len_v6),
        DecisionKind::Allow if !config.accept_allows => return Read::Skip(Skipped::Allow),
        DecisionKind::Allow if decision.until != 0 => {
            return Read::Refuse(Refused::AllowExpiry);
        }
        DecisionKind::Allow => (
            config.min_prefix_len_v4.max(MIN_ALLOW_LEN_V4),
            config.min_prefix_len_v6.max(MIN_ALLOW_LEN_V6),
        ),
    };
    let min = if decision.prefix.is_ipv4() {
        min_v4
    } else {
        min_v6
    };
    if decision.prefix.prefix_len() < min {
        return Read::Refuse(Refused::TooBroad);
    }
    if !config.accept_hosts.is_empty() && !config.accept_hosts.contains(&decision.host) {
        return Read::Skip(Skipped::Host);
    }
    if !source_matches(&config.accept_sources, &decision.source) {
        return Read::Skip(Skipped::Source);
    }
    if decision.until != 0 && decision.until <= now_unix {
        return Read::Skip(Skipped::Expired);
    }
    Read::Apply(Remote {
        host: decision.host.into(),
        kind: decision.kind,
        prefix: decision.prefix,
        source: decision.source,
        reason: decision.reason,
        created: decision.created,
        until: decision.until,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::peers::fleet::config::{FleetAuth, FleetTls};

    fn config() -> FleetConfig {
        FleetConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            auth: FleetAuth::None,
            tls: FleetTls::default(),
            host: "b".into(),
            bucket: "xdpguard".into(),
            publish_allows: false,
            accept_allows: false,
            publish_sources: Vec::new(),
            accept_hosts: Vec::new(),
            accept_sources: Vec::new(),
            min_prefix_len_v4: 16,
            min_prefix_len_v6: 32,
            catch_up_timeout: Duration::from_secs(1),
            max_decisions: 10,
        }
    }

    fn p(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    fn wire(host: &str, prefix: &str) -> WireDecision {
        WireDecision {
            v: VERSION,
            host: host.into(),
            kind: DecisionKind::Block,
            prefix: p(prefix),
            source: "ruleset:sshd".into(),
            reason: "5 failed logins".into(),
            created: 100,
            until: 1000,
        }
    }

    fn read_wire(config: &FleetConfig, decision: &WireDecision) -> Read {
        let key = parse_key(&key_for(&decision.host, decision.kind, &decision.prefix)).unwrap();
        read(config, &key, &serde_json::to_vec(decision).unwrap(), 500)
    }

    #[test]
    fn keys_round_trip_and_only_one_spelling_is_a_key() {
        for text in [
            "203.0.113.7",
            "203.0.113.0/24",
            "2001:db8:a::/48",
            "2001:db8::1",
        ] {
            let key = key_for("web-1", DecisionKind::Block, &p(text));
            let parsed = parse_key(&key).unwrap_or_else(|| panic!("{key}"));
            assert_eq!(parsed.prefix, p(text), "{key}");
            assert_eq!(parsed.host, "web-1");
        }
        assert_eq!(
            key_for("a", DecisionKind::Block, &p("203.0.113.0/24")),
            "a.block.v4.203-0-113-0_24"
        );
        for bad in [
            "a.block.v4.203-0-113-7_33",
            "a.block.v4.203-0-113-7",
            "a.block.v6.203-0-113-7_32",
            "a.block.v4.203-0-113-7_032",
            "a.block.v4.203-0-113-1_24",
            "a b.block.v4.203-0-113-7_32",
            "a.deny.v4.203-0-113-7_32",
            "a.block.v4.203-0-113-7_32.x",
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn good_values_apply_and_hostile_ones_are_refused_with_a_reason() {
        let config = config();
        let good = wire("a", "203.0.113.7");
        assert!(
            matches!(read_wire(&config, &good), Read::Apply(r) if r.until == 1000 && &*r.host == "a")
        );
        let key = parse_key(&key_for("a", DecisionKind::Block, &p("203.0.113.7"))).unwrap();
        let refused = |value: &[u8]| match read(&config, &key, value, 500) {
            Read::Refuse(why) => why,
            other => panic!("{other:?} for {}", String::from_utf8_lossy(value)),
        };
        assert_eq!(
            refused(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Refused::TooLarge
        );
        assert_eq!(refused(b"{\"v\":1,"), Refused::NotJson);
        let mut extra = serde_json::to_value(&good).unwrap();
        extra["evil"] = serde_json::json!(true);
        assert_eq!(refused(extra.to_string().as_bytes()), Refused::UnknownField);
        let mut v2 = good.clone();
        v2.v = 2;
        assert_eq!(refused(&serde_json::to_vec(&v2).unwrap()), Refused::Version);
        // A value under another key than its own: refused, whatever it says.
        let other = wire("a", "203.0.113.8");
        assert_eq!(
            refused(&serde_json::to_vec(&other).unwrap()),
            Refused::KeyMismatch
        );
        let mut posing = good.clone();
        posing.host = "c".into();
        assert_eq!(
            refused(&serde_json::to_vec(&posing).unwrap()),
            Refused::KeyMismatch
        );
        let bad_prefix = br#"{"v":1,"host":"a","kind":"block","prefix":"203.0.113.300","source":"manual","reason":"","created":1,"until":0}"#;
        assert_eq!(refused(bad_prefix), Refused::NotJson);
        let mut control = good.clone();
        control.reason = "line\nbreak".into();
        assert_eq!(
            refused(&serde_json::to_vec(&control).unwrap()),
            Refused::BadText
        );
        // Everything: 0.0.0.0/0 and a /8 are broader than the fleet takes.
        for broad in ["0.0.0.0/0", "10.0.0.0/8", "::/0"] {
            assert_eq!(
                read_wire(&config, &wire("a", broad)),
                Read::Refuse(Refused::TooBroad)
            );
        }
    }

    #[test]
    fn allowlist_entries_apply_only_when_accepted_never_broad_or_ending() {
        let mut config = config();
        let mut allow = wire("a", "203.0.113.7");
        allow.kind = DecisionKind::Allow;
        allow.until = 0;
        assert_eq!(read_wire(&config, &allow), Read::Skip(Skipped::Allow));
        config.accept_allows = true;
        assert!(
            matches!(read_wire(&config, &allow), Read::Apply(r) if r.kind == DecisionKind::Allow)
        );
        // An allow of a /8 would open a network to every host: at most a /16 here.
        config.min_prefix_len_v4 = 0;
        let mut broad = allow.clone();
        broad.prefix = p("10.0.0.0/8");
        assert_eq!(read_wire(&config, &broad), Read::Refuse(Refused::TooBroad));
        let mut ending = allow;
        ending.until = 1000;
        assert_eq!(
            read_wire(&config, &ending),
            Read::Refuse(Refused::AllowExpiry)
        );
    }

    #[test]
    fn filters_skip_hosts_sources_and_expired_decisions() {
        let mut config = config();
        config.accept_hosts = vec!["a".into()];
        config.accept_sources = vec!["ruleset".into()];
        assert!(matches!(
            read_wire(&config, &wire("a", "203.0.113.7")),
            Read::Apply(_)
        ));
        assert_eq!(
            read_wire(&config, &wire("c", "203.0.113.7")),
            Read::Skip(Skipped::Host)
        );
        let mut volume = wire("a", "203.0.113.7");
        volume.source = "volume:flood".into();
        assert_eq!(read_wire(&config, &volume), Read::Skip(Skipped::Source));
        let mut old = wire("a", "203.0.113.7");
        old.until = 400;
        assert_eq!(read_wire(&config, &old), Read::Skip(Skipped::Expired));
        old.until = 0;
        assert!(matches!(read_wire(&config, &old), Read::Apply(r) if r.until == 0));
    }
}
