//! The CrowdSec local API's decision stream (`GET /v1/decisions/stream`), from its JSON into
//! typed decisions. The wire format stays here: the rest of xdpguard sees [`StreamBatch`].
//!
//! A response is `{"new": [..] | null, "deleted": [..] | null}`; each decision carries `id`,
//! `origin` (crowdsec, cscli, CAPI, lists), `type` (ban, captcha, ...), `scope` (Ip, Range,
//! Country, AS, ...), `value`, `duration` (Go's `time.Duration` text, negative once expired)
//! and `scenario`. Fields xdpguard does not use are ignored, so a newer LAPI's additions do
//! not break the stream; a decision that lacks a field it needs, or has one of the wrong
//! type, is refused alone with the reason, and the rest of the batch still applies.
use std::{net::IpAddr, str::FromStr as _, time::Duration};

use serde::Deserialize;
use serde_json::Value;

use crate::prefix::Prefix;

/// The largest response body read (the LAPI's startup answer for a large community blocklist
/// is tens of MiB; beyond this the answer is refused as a whole, nothing of it applied).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// Decisions read per batch at most (of both lists).
pub const MAX_DECISIONS: usize = 4_000_000;
/// Longest text kept of a field in an error or a reason.
const MAX_FIELD_TEXT: usize = 120;

/// One decision as xdpguard uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LapiDecision {
    pub id: u64,
    /// Who made it: `crowdsec` (a local scenario), `cscli` (an operator), `CAPI` (the
    /// community blocklist), `lists` (a subscribed list), or what a newer LAPI says.
    pub origin: String,
    /// What to do: only `ban` is enforced.
    pub kind: String,
    pub target: Target,
    /// How long it still runs; `None` when the LAPI says it has run out (zero or negative).
    pub remaining: Option<Duration>,
    pub scenario: String,
}

/// What a decision is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Scope `Ip` or `Range`, with a value that parsed.
    Prefix(Prefix),
    /// Another scope (`Country`, `AS`, `Username`, ...): not an address, skipped.
    OtherScope(String),
}

/// One answer of the stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamBatch {
    pub new: Vec<LapiDecision>,
    pub deleted: Vec<LapiDecision>,
    /// Decisions that could not be read, each with why (the rest of the batch is good).
    pub malformed: Vec<String>,
}

/// Why a whole answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("the answer is {size} bytes, more than the {MAX_RESPONSE_BYTES} read")]
    TooLarge { size: usize },
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    #[error("the answer is not an object with \"new\" and \"deleted\" lists: {0}")]
    Shape(String),
    #[error("the answer holds more than {MAX_DECISIONS} decisions")]
    TooMany,
}

/// The answer with each decision left as its text, so a million-decision answer costs the
/// body and a slice per decision, not a tree of values; each is read on its own.
#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(default, borrow)]
    new: Option<Vec<&'a serde_json::value::RawValue>>,
    #[serde(default, borrow)]
    deleted: Option<Vec<&'a serde_json::value::RawValue>>,
}

/// Read one answer of the stream.
///
/// # Errors
/// When the answer as a whole is unusable (too large, not JSON, not the stream's shape); a
/// single bad decision is put in [`StreamBatch::malformed`] instead.
pub fn parse_stream(body: &[u8]) -> Result<StreamBatch, StreamError> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(StreamError::TooLarge { size: body.len() });
    }
    let text = std::str::from_utf8(body).map_err(|err| StreamError::NotJson(err.to_string()))?;
    let raw: RawBatch = serde_json::from_str(text).map_err(|err| {
        if err.is_data() {
            StreamError::Shape(err.to_string())
        } else {
            StreamError::NotJson(err.to_string())
        }
    })?;
    let new = raw.new.unwrap_or_default();
    let deleted = raw.deleted.unwrap_or_default();
    if new.len().saturating_add(deleted.len()) > MAX_DECISIONS {
        return Err(StreamError::TooMany);
    }
    let mut batch = StreamBatch::default();
    for (list, values, out) in [
        ("new", new, &mut batch.new),
        ("deleted", deleted, &mut batch.deleted),
    ] {
        for (index, raw) in values.iter().enumerate() {
            let parsed = serde_json::from_str::<Value>(raw.get())
                .map_err(|err| err.to_string())
                .and_then(|value| decision(&value));
            match parsed {
                Ok(decision) => out.push(decision),
                Err(reason) => batch.malformed.push(format!("{list}[{index}]: {reason}")),
            }
        }
    }
    Ok(batch)
}

fn decision(value: &Value) -> Result<LapiDecision, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("not an object but {}", shorten(&value.to_string())))?;
    let text = |field: &str| -> Result<&str, String> {
        match object.get(field) {
            Some(Value::String(text)) => Ok(text),
            Some(other) => Err(format!(
                "field \"{field}\" is not text but {}",
                shorten(&other.to_string())
            )),
            None => Err(format!("field \"{field}\" is missing")),
        }
    };
    let id = match object.get("id") {
        Some(Value::Number(number)) => number
            .as_u64()
            .ok_or_else(|| format!("field \"id\" is not a positive integer: {number}"))?,
        Some(other) => {
            return Err(format!(
                "field \"id\" is not a number but {}",
                shorten(&other.to_string())
            ));
        }
        None => return Err("field \"id\" is missing".to_owned()),
    };
    let scope = text("scope")?;
    let value_text = text("value")?;
    let target =
        match scope.to_ascii_lowercase().as_str() {
            "ip" => Target::Prefix(Prefix::host(IpAddr::from_str(value_text.trim()).map_err(
                |_| {
                    format!(
                        "scope Ip with value {:?}, not an address",
                        shorten(value_text)
                    )
                },
            )?)),
            "range" => Target::Prefix(Prefix::from_str(value_text).map_err(|err| {
                format!("scope Range with value {:?}: {err}", shorten(value_text))
            })?),
            _ => Target::OtherScope(shorten(scope)),
        };
    let duration = text("duration")?;
    let remaining = parse_go_duration(duration)
        .map_err(|reason| format!("field \"duration\" {:?}: {reason}", shorten(duration)))?;
    Ok(LapiDecision {
        id,
        origin: shorten(text("origin")?),
        kind: shorten(text("type")?),
        target,
        remaining,
        scenario: object
            .get("scenario")
            .and_then(Value::as_str)
            .map(shorten)
            .unwrap_or_default(),
    })
}

fn shorten(text: &str) -> String {
    if text.len() <= MAX_FIELD_TEXT {
        return text.to_owned();
    }
    let mut cut = MAX_FIELD_TEXT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// Go's `time.Duration` text (`3h59m50.4s`, `1.5s`, `300ms`, `-2m0s`, `0s`): the time it
/// stands for, `None` when it is zero or negative.
///
/// # Errors
/// When the text is not such a duration.
pub fn parse_go_duration(text: &str) -> Result<Option<Duration>, String> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(None);
    }
    if rest.is_empty() {
        return Err("empty".to_owned());
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or("a number without a unit")?;
        if number_len == 0 {
            return Err("a unit without a number".to_owned());
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("unknown unit {unit:?}")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(format!("bad number {number:?}"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("bad number {number:?}"))?
        };
        let mut part = whole.checked_mul(unit_ns).ok_or("too long")?;
        // Digits past nanoseconds are dropped, as Go does.
        let mut scale = unit_ns;
        for digit in fraction.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_ns = total_ns.checked_add(part).ok_or("too long")?;
        rest = after;
    }
    if negative || total_ns == 0 {
        return Ok(None);
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| "too long")?;
    let nanos = u32::try_from(total_ns % 1_000_000_000).unwrap_or(0);
    Ok(Some(Duration::new(secs, nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape Debian's crowdsec 1.4.6 answers with (two `cscli decisions add`, then one
    // `cscli decisions delete`), with one field order changed and an unknown field added.
    const STARTUP: &str = r#"{"deleted":null,"new":[
        {"duration":"59m59.135160602s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'test'","scope":"Ip","type":"ban","value":"203.0.113.7"},
        {"id":2,"duration":"1h59m59.13s","origin":"cscli","scenario":"manual 'ban' from 'test'","scope":"Range","type":"ban","value":"198.51.100.0/24","simulated":false}
    ]}"#;

    #[test]
    fn a_startup_answer_reads_into_typed_decisions() {
        let batch = parse_stream(STARTUP.as_bytes()).unwrap();
        assert!(batch.deleted.is_empty() && batch.malformed.is_empty());
        assert_eq!(batch.new.len(), 2);
        let first = &batch.new[0];
        assert_eq!(first.id, 1);
        assert_eq!(first.origin, "cscli");
        assert_eq!(first.kind, "ban");
        assert_eq!(first.target, Target::Prefix("203.0.113.7".parse().unwrap()));
        assert_eq!(first.remaining, Some(Duration::new(3599, 135_160_602)));
        assert_eq!(
            batch.new[1].target,
            Target::Prefix("198.51.100.0/24".parse().unwrap())
        );
        assert_eq!(
            batch.new[1].remaining,
            Some(Duration::new(7199, 130_000_000))
        );
    }

    #[test]
    fn go_durations_read_like_go_reads_them() {
        let d = |text| parse_go_duration(text).unwrap();
        assert_eq!(d("0s"), None);
        assert_eq!(d("0"), None);
        assert_eq!(d("-1m3.5s"), None, "expired");
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(d("2h45m"), Some(Duration::from_secs(9900)));
        assert_eq!(d("1µs"), Some(Duration::from_micros(1)));
        assert_eq!(d(".5h"), Some(Duration::from_secs(1800)));
        for bad in [
            "",
            "5",
            "h",
            "1x",
            "1..2s",
            "1.2.3s",
            "99999999999999999999999h",
            "-",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_decision_is_refused_alone_and_named() {
        let body = r#"{"new":[
            {"id":1,"origin":"crowdsec","type":"ban","scope":"Ip","value":"not-an-ip","duration":"1h"},
            {"id":"2","origin":"crowdsec","type":"ban","scope":"Ip","value":"203.0.113.9","duration":"1h"},
            {"id":3,"origin":"crowdsec","type":"ban","scope":"Ip","value":"203.0.113.9"},
            {"id":4,"origin":"crowdsec","type":"ban","scope":"Range","value":"203.0.113.0/33","duration":"1h"},
            17,
            {"id":6,"origin":"crowdsec","type":"captcha","scope":"Country","value":"FR","duration":"1h"},
            {"id":7,"origin":"crowdsec","type":"ban","scope":"Ip","value":"2001:db8::5","duration":"4h"}
        ],"deleted":[]}"#;
        let batch = parse_stream(body.as_bytes()).unwrap();
        assert_eq!(batch.malformed.len(), 5, "{:?}", batch.malformed);
        assert!(
            batch.malformed[0].starts_with("new[0]: scope Ip"),
            "{:?}",
            batch.malformed
        );
        assert!(batch.malformed[1].contains("\"id\" is not a number"));
        assert!(batch.malformed[2].contains("\"duration\" is missing"));
        assert!(batch.malformed[3].starts_with("new[3]: scope Range"));
        assert!(batch.malformed[4].starts_with("new[4]: not an object"));
        let ids: Vec<u64> = batch.new.iter().map(|d| d.id).collect();
        assert_eq!(ids, [6, 7]);
        assert_eq!(batch.new[0].target, Target::OtherScope("Country".into()));
    }

    #[test]
    fn unusable_answers_are_refused_whole() {
        assert!(matches!(
            parse_stream(b"<html>"),
            Err(StreamError::NotJson(_))
        ));
        assert!(matches!(parse_stream(b"[1,2]"), Err(StreamError::Shape(_))));
        assert!(matches!(
            parse_stream(br#"{"new":{"id":1}}"#),
            Err(StreamError::Shape(_))
        ));
        assert_eq!(
            parse_stream(br#"{"new":null,"deleted":null}"#).unwrap(),
            StreamBatch::default()
        );
        // A long field is cut in what is said about it.
        let long = format!(
            r#"{{"new":[{{"id":1,"origin":"x","type":"ban","scope":"Ip","value":"{}","duration":"1h"}}]}}"#,
            "a".repeat(10_000)
        );
        let batch = parse_stream(long.as_bytes()).unwrap();
        assert!(batch.malformed[0].len() < 400, "{}", batch.malformed[0]);
    }
}
