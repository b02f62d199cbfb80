//! Durations as the configuration and the command line write them: `90s`, `1h30m`, `2d`.
use std::{
    fmt::{self, Write as _},
    time::Duration,
};

/// Units from largest to smallest, with their length in milliseconds.
const UNITS: [(&str, u64); 6] = [
    ("w", 604_800_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Why a duration string was refused; each message quotes the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{input:?} is not a duration (examples: 500ms, 90s, 15m, 1h30m, 2d, 1w)")]
    Malformed { input: String },
    #[error("{input:?} has a number without a unit (units: w, d, h, m, s, ms; e.g. \"90s\")")]
    MissingUnit { input: String },
    #[error("{input:?} has an unknown unit {unit:?} (units: w, d, h, m, s, ms)")]
    UnknownUnit { input: String, unit: String },
    #[error("{input:?}: give each unit once, largest first (e.g. \"1h30m\")")]
    UnitOrder { input: String },
    #[error("{input:?} is too long a duration")]
    Overflow { input: String },
}

/// Parse a duration: numbers each followed by a unit (`w`, `d`, `h`, `m`, `s`, `ms`), each unit
/// at most once, largest first: `500ms`, `90s`, `15m`, `1h30m`, `2d`, `1w`, `1w2d`. Surrounding
/// whitespace is ignored. A bare number is refused: `30` could mean seconds or minutes.
/// Fractions and signs are refused; the total must fit in `u64` milliseconds.
///
/// # Errors
/// When the text is not of that shape or overflows; the message quotes the text.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    let input = || input.to_owned();
    if text.is_empty() {
        return Err(DurationError::Malformed { input: input() });
    }
    let mut rest = text;
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::Malformed { input: input() });
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        if unit.is_empty() {
            return Err(if after.is_empty() {
                DurationError::MissingUnit { input: input() }
            } else {
                DurationError::Malformed { input: input() }
            });
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                input: input(),
                unit: unit.to_owned(),
            });
        };
        if index < next_unit {
            return Err(DurationError::UnitOrder { input: input() });
        }
        next_unit = index + 1;
        total = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[index].1))
            .and_then(|millis| total.checked_add(millis))
            .ok_or_else(|| DurationError::Overflow { input: input() })?;
        rest = after;
    }
    Ok(Duration::from_millis(total))
}

/// The compact form [`parse_duration`] reads: `1h30m`, `2d`, `1w3d`, `1s500ms`; `0s` for zero.
/// Below a millisecond is dropped, so it round-trips for whole milliseconds.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, per) in UNITS {
        let per = u128::from(per);
        let count = millis / per;
        if count > 0 {
            let _: fmt::Result = write!(out, "{count}{unit}");
            millis %= per;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        for (text, secs, millis) in [
            ("90s", 90, 0),
            ("15m", 900, 0),
            ("1h30m", 5400, 0),
            ("2d", 172_800, 0),
            ("1w", 604_800, 0),
            ("500ms", 0, 500),
            ("1w2d3h4m5s6ms", 788_645, 6),
            (" 30s ", 30, 0),
            ("0s", 0, 0),
            ("90m", 5400, 0),
            ("007s", 7, 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs) + Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_are_refused_quoting_the_input() {
        for (bad, kind) in [
            ("", "not a duration"),
            ("   ", "not a duration"),
            ("soon", "not a duration"),
            ("s", "not a duration"),
            ("-1s", "not a duration"),
            ("+1s", "not a duration"),
            ("1.5h", "not a duration"),
            ("1h 30m", "not a duration"),
            ("90", "without a unit"),
            ("1h30", "without a unit"),
            ("1x", "unknown unit \"x\""),
            ("1H", "unknown unit \"H\""),
            ("1sec", "unknown unit \"sec\""),
            ("30m1h", "largest first"),
            ("1s1s", "largest first"),
            ("99999999999999999999s", "too long"),
            ("30500568904943w", "too long"),
            ("18446744073709551615ms1ms", "largest first"),
            ("18446744073709552s", "too long"),
            ("18446744073709551s616ms", "too long"),
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{bad:?}")), "{bad:?}: {err}");
            assert!(err.contains(kind), "{bad:?}: {err}");
        }
    }

    #[test]
    fn durations_round_trip() {
        for (millis, text) in [
            (0, "0s"),
            (1, "1ms"),
            (1500, "1s500ms"),
            (90_000, "1m30s"),
            (5_400_000, "1h30m"),
            (86_400_000, "1d"),
            (8 * 86_400_000, "1w1d"),
            (u64::MAX, "30500568904w6d14h25m51s615ms"),
        ] {
            let duration = Duration::from_millis(millis);
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
        for secs in (0..200_000).step_by(7919) {
            let duration = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_duration(Duration::from_nanos(1_999_999)), "1ms");
        assert_eq!(format_duration(Duration::from_nanos(999)), "0s");
    }
}
