//! Text for the HTML report: escaping, and numbers and UTC times written for people.
use std::fmt::Write as _;

/// `text` safe inside HTML or SVG text and inside a quoted attribute value: ruleset names,
/// prefixes and origin keys come from configuration and logs an attacker may write to.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `value` with an SI suffix and at most three significant digits: `950`, `1.5k`, `12.3M`,
/// `640G`.
pub fn si(value: u64) -> String {
    let (number, suffix) = si_parts(value);
    format!("{number}{suffix}")
}

/// Bytes with an SI prefix: `1.5 kB`, `980 B`.
pub fn bytes(value: u64) -> String {
    let (number, suffix) = si_parts(value);
    format!("{number} {suffix}B")
}

/// The number and the suffix [`si`] writes.
fn si_parts(value: u64) -> (String, &'static str) {
    const SUFFIXES: [&str; 6] = ["k", "M", "G", "T", "P", "E"];
    if value < 1000 {
        return (value.to_string(), "");
    }
    let mut scaled = value as f64;
    let mut suffix = "";
    for next in SUFFIXES {
        if scaled < 999.5 {
            break;
        }
        scaled /= 1000.0;
        suffix = next;
    }
    let digits = if scaled >= 99.95 {
        0
    } else if scaled >= 9.995 {
        1
    } else {
        2
    };
    let text = format!("{scaled:.digits$}");
    // `1.50k` reads as `1.5k`, `2.00M` as `2M`.
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    (text, suffix)
}

/// An integer with its digits grouped by thousands (a thin space): exact counts in tables.
pub fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() * 2);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// A UTC date and time broken into fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    pub year: u64,
    pub month: u64,
    pub day: u64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl Utc {
    /// The fields of `unix` seconds (proleptic Gregorian calendar, days counted from
    /// 1970-01-01 with the usual 400-year era arithmetic).
    pub const fn of(unix: u64) -> Self {
        let days = unix / 86_400;
        let in_day = unix % 86_400;
        // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
        let shifted = days + 719_468;
        let era = shifted / 146_097;
        let day_of_era = shifted % 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
        Self {
            year,
            month,
            day,
            hour: in_day / 3600,
            minute: in_day % 3600 / 60,
            second: in_day % 60,
        }
    }

    /// `2024-05-01`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `05-01`, for axis ticks where the year is in the header.
    pub fn month_day(&self) -> String {
        format!("{:02}-{:02}", self.month, self.day)
    }

    /// `14:30`.
    pub fn hour_minute(&self) -> String {
        format!("{:02}:{:02}", self.hour, self.minute)
    }

    /// `2024-05-01 14:30 UTC`, seconds shown only when there are some.
    pub fn full(&self) -> String {
        let mut text = format!("{} {}", self.date(), self.hour_minute());
        if self.second != 0 {
            let _ = write!(text, ":{:02}", self.second);
        }
        text.push_str(" UTC");
        text
    }
}

/// A duration in the largest unit that divides it: `5 min`, `1 h`, `1 d`, `90 s`.
pub fn duration(seconds: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(604_800, "w"), (86_400, "d"), (3600, "h"), (60, "min")];
    for (unit, name) in UNITS {
        if seconds >= unit && seconds.is_multiple_of(unit) {
            return format!("{} {name}", seconds / unit);
        }
    }
    format!("{seconds} s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        let hostile = r#"</script><svg onload="alert(1)">'&amp;"#;
        let escaped = escape(hostile);
        for forbidden in ['<', '>', '"', '\''] {
            assert!(!escaped.contains(forbidden), "{forbidden} in {escaped}");
        }
        // Every `&` left starts an entity this function wrote.
        for (at, _) in escaped.match_indices('&') {
            let rest = &escaped[at..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .any(|entity| rest.starts_with(entity)),
                "{rest}"
            );
        }
        // Undoing the entities gives the input back: nothing was lost.
        let undone = escaped
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        assert_eq!(undone, hostile);
        assert_eq!(escape("AS64500 sshd-1"), "AS64500 sshd-1");
    }

    #[test]
    fn si_suffixes() {
        assert_eq!(si(0), "0");
        assert_eq!(si(999), "999");
        assert_eq!(si(1000), "1k");
        assert_eq!(si(1500), "1.5k");
        assert_eq!(si(12_345), "12.3k");
        assert_eq!(si(999_999), "1M");
        assert_eq!(si(250_000_000), "250M");
        assert_eq!(si(3_000_000_000), "3G");
        assert!(si(u64::MAX).ends_with('E'));
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2_500_000), "2.5 MB");
        assert_eq!(grouped(1_234_567), "1\u{2009}234\u{2009}567");
        assert_eq!(grouped(12), "12");
    }

    #[test]
    fn utc_fields() {
        assert_eq!(Utc::of(0).full(), "1970-01-01 00:00 UTC");
        // 2000-02-29 (a leap day of a century year divisible by 400) 12:34:56.
        let leap = Utc::of(951_827_696);
        assert_eq!(
            (
                leap.year,
                leap.month,
                leap.day,
                leap.hour,
                leap.minute,
                leap.second
            ),
            (2000, 2, 29, 12, 34, 56)
        );
        // 2024-12-31 23:59, then the next minute is a new year.
        assert_eq!(Utc::of(1_735_689_540).full(), "2024-12-31 23:59 UTC");
        assert_eq!(Utc::of(1_735_689_600).date(), "2025-01-01");
        // Consecutive days never repeat or skip a date over four years.
        let mut previous = Utc::of(1_700_000_000).date();
        for day in 1..1461 {
            let date = Utc::of(1_700_000_000 + day * 86_400).date();
            assert!(date > previous, "{date} after {previous}");
            previous = date;
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration(300), "5 min");
        assert_eq!(duration(3600), "1 h");
        assert_eq!(duration(86_400), "1 d");
        assert_eq!(duration(90), "90 s");
        assert_eq!(duration(5400), "90 min");
    }
}
