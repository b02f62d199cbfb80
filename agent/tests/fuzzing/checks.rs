//! What must hold for any input, shared by the mutation loop (`agent/tests/mutation.rs`) and
//! the fuzz targets (`fuzz/fuzz_targets/`): each function feeds one input to a public entry
//! point and panics when the answer breaks a promise (a bound, an error that does not say
//! where, a decoded message that does not encode back to itself). A panic of the API itself
//! is a finding too.
#![allow(dead_code, reason = "each includer uses its part")]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
};

use xdpguard::{
    api::control::{
        Answer, PROTOCOL_VERSION, Request,
        proto::{self, Decoded},
    },
    config::{Config, ConfigError},
    detect::{
        logs::ruleset::{self, RulesetError},
        traffic::flow::{DecoderSettings, ErrorKind, FlowDecoder},
    },
};

/// Splits a flow input (`seeds::flow_input` writes them) into (exporter index, minutes to
/// advance, datagram): each as `[length: u16 BE][meta: u8][datagram]`, meta's low 2 bits the
/// exporter, its upper 6 the minutes; a last chunk shorter than its length is taken as it is.
pub fn flow_datagrams(mut input: &[u8]) -> Vec<(usize, u64, &[u8])> {
    let mut out = Vec::new();
    while input.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([input[0], input[1]]));
        let meta = input[2];
        let rest = &input[3..];
        let (datagram, tail) = rest.split_at(len.min(rest.len()));
        out.push((usize::from(meta & 3), u64::from(meta >> 2), datagram));
        input = tail;
    }
    out
}

/// Small bounds, so that inputs reach them and the eviction paths run.
pub fn flow_settings() -> DecoderSettings {
    DecoderSettings {
        max_exporters: 3,
        max_templates_per_exporter: 8,
        max_templates_per_domain: 3,
        max_held_sets: 4,
        max_held_bytes: 4096,
        ..DecoderSettings::default()
    }
}

/// One decoder, fresh for each input, fed the input's datagrams (see [`flow_datagrams`])
/// from up to four exporters (one more than it may track): the bounds hold after every
/// datagram, and what the summary says matches what reached the sink. The records decoded.
pub fn flow(datagrams: &[(usize, u64, &[u8])]) -> u64 {
    let settings = flow_settings();
    let mut decoder = FlowDecoder::new(settings.clone());
    let mut now_secs = 0u64;
    let mut total = 0;
    for &(exporter, minutes, datagram) in datagrams {
        now_secs += minutes * 60;
        let last = u8::try_from(exporter + 1).unwrap_or(u8::MAX);
        let exporter = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, last)), 2055);
        let mut records = 0u64;
        let summary = decoder.decode(exporter, datagram, now_secs, |record| {
            records += 1;
            assert!(
                record.bytes > 0 || record.packets > 0,
                "an empty record reached the sink: {record:?}"
            );
        });
        assert_eq!(summary.records, records, "summary {summary:?}");
        total += records;
        assert!(decoder.exporter_count() <= settings.max_exporters);
        assert!(
            decoder.template_count()
                <= settings.max_exporters * settings.max_templates_per_exporter
        );
        assert!(decoder.held_set_count() <= settings.max_exporters * settings.max_held_sets);
        for (address, stats) in decoder.exporter_stats() {
            let templates = usize::try_from(stats.templates).unwrap_or(usize::MAX);
            let held = usize::try_from(stats.held_sets).unwrap_or(usize::MAX);
            assert!(
                templates <= settings.max_templates_per_exporter,
                "{address}: {stats:?}"
            );
            assert!(held <= settings.max_held_sets, "{address}: {stats:?}");
            // With bounds over 0, a template is never refused: the least recent is evicted.
            assert_eq!(
                stats.errors.get(ErrorKind::TooMany),
                0,
                "{address}: {stats:?}"
            );
        }
    }
    total
}

/// A few lines of every shipped ruleset's sample log, and hostile ones.
const LOG_LINES: &[&str] = &[
    "Nov 22 10:00:01 web1 sshd[1201]: Failed password for root from 203.0.113.5 port 51234 ssh2",
    "Nov 22 10:00:05 web1 sshd[1201]: Invalid user admin from 2001:db8::5 port 4 ssh2",
    "203.0.113.9 - - [22/Nov/2025:10:00:01 +0000] \"GET /wp-login.php HTTP/1.1\" 404 153 \"-\" \"x\"",
    "Nov 22 10:00:01 mail postfix/smtpd[77]: warning: unknown[203.0.113.20]: SASL LOGIN authentication failed",
    "Nov 22 10:00:01 mail dovecot: imap-login: Disconnected (auth failed, 1 attempts): user=<a>, method=PLAIN, rip=203.0.113.30, lip=192.0.2.1",
    "",
    "\u{0}\u{fffd} from 203.0.113.5 from 999.1.1.1 port",
];

/// What [`ruleset`] saw.
pub enum RulesetOutcome {
    NotText,
    Parsed(usize),
    Refused(RulesetError),
}

/// `ruleset::parse`: an error names the file (and a syntax error a line of it); what parses
/// runs over sample lines without panicking.
pub fn ruleset(text: &[u8]) -> RulesetOutcome {
    let Ok(text) = std::str::from_utf8(text) else {
        return RulesetOutcome::NotText;
    };
    let path = Path::new("/fuzz/rulesets/input.toml");
    match ruleset::parse(text, path) {
        Ok(rulesets) => {
            for line in LOG_LINES {
                let _ = ruleset::apply_all(&rulesets, line);
            }
            RulesetOutcome::Parsed(rulesets.len())
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("/fuzz/rulesets/input.toml"), "{message}");
            if let RulesetError::Syntax { line, .. } = &error {
                assert!(
                    (1..=text.lines().count() + 1).contains(line),
                    "line {line} of {} lines: {message}",
                    text.lines().count()
                );
            }
            RulesetOutcome::Refused(error)
        }
    }
}

/// What [`config`] saw.
pub enum ConfigOutcome {
    NotText,
    Parsed,
    Refused(ConfigError),
}

/// `Config::parse`: an error names the file and either a place in it (a line and column that
/// exist) or the key that is missing.
pub fn config(text: &[u8]) -> ConfigOutcome {
    let Ok(text) = std::str::from_utf8(text) else {
        return ConfigOutcome::NotText;
    };
    let path = Path::new("/fuzz/xdpguard.toml");
    match Config::parse(text, path) {
        Ok(_) => ConfigOutcome::Parsed,
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("/fuzz/xdpguard.toml"), "{message}");
            match (&error, error.location()) {
                (_, Some(location)) => {
                    let lines = text.split('\n').count();
                    assert!(
                        (1..=lines).contains(&location.line),
                        "{lines} lines: {message}"
                    );
                    let line = text.split('\n').nth(location.line - 1).unwrap_or_default();
                    assert!(
                        (1..=line.chars().count() + 1).contains(&location.column),
                        "{message}"
                    );
                }
                (ConfigError::Missing { key, .. }, None) => assert!(!key.is_empty()),
                (_, None) => panic!("an error of a text that names no place in it: {message}"),
            }
            ConfigOutcome::Refused(error)
        }
    }
}

/// What [`control`] saw: whether the line was a JSON object, and whether it was a request or
/// an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlOutcome {
    pub object: bool,
    pub request: bool,
    pub answer: bool,
}

/// `proto::decode` as request and as answer: a message that decodes encodes again, with this
/// build's protocol version, to a line that decodes to the same message.
pub fn control(line: &[u8]) -> ControlOutcome {
    let request = round_trip::<Request>(line);
    let answer = round_trip::<Answer>(line);
    assert_eq!(
        request.is_some(),
        answer.is_some(),
        "object or not is one question"
    );
    ControlOutcome {
        object: request.is_some(),
        request: request == Some(true),
        answer: answer == Some(true),
    }
}

/// `None`: not JSON; `Some(decoded)`.
fn round_trip<T>(line: &[u8]) -> Option<bool>
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let Decoded { protocol, message } = proto::decode::<T>(line).ok()?;
    let Ok(message) = message else {
        return Some(false);
    };
    let _ = protocol;
    let encoded = proto::encode(&message).expect("a decoded message encodes");
    let again = proto::decode::<T>(&encoded).expect("an encoded message is JSON");
    assert_eq!(again.protocol, u64::from(PROTOCOL_VERSION));
    let again = again.message.expect("an encoded message decodes");
    assert_eq!(again, message, "{}", String::from_utf8_lossy(&encoded));
    Some(true)
}
