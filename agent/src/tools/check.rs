//! `xdpguard check`: run rulesets over a log without a daemon and report what they would do.
//! Scores age in log time: each line's own time (its prefix, or an access or error log's
//! time field) drives the sliding window, so an old log scores as it did when it was written;
//! a line without a time takes the last one seen. A year the line does not write is this
//! year, or the last one for a date still to come, and it moves on when the months wrap.
//! "When" is the line that crossed the threshold.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, BufRead},
    net::IpAddr,
};

use serde::Serialize;

use crate::{
    detect::logs::correlate::{SessionLimits, SessionStats, Sessions},
    detect::logs::prefix::{self, LogTime},
    detect::logs::ruleset::{Memory, Outcome, Ruleset},
    detect::logs::score::{ScoreBoard, Scored, ScoringPolicy},
};

/// Longer lines are cut here (and counted).
pub const MAX_LINE_BYTES: usize = 16 << 10;
/// At most this many unmatched (and, apart, ambiguous) lines are kept for the report.
const MAX_UNMATCHED: usize = 1000;

/// A line no address was taken from because the text around it occurs more than once.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AmbiguousLine {
    pub line: u64,
    pub ruleset: String,
    /// The address at its first and at its last possible place.
    pub first: String,
    pub last: String,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct RuleCount {
    pub ruleset: String,
    pub rule: String,
    pub matches: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AddressScore {
    pub address: IpAddr,
    pub score: i64,
    /// The line whose match took the score over the threshold.
    pub blocked_at_line: Option<u64>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct CheckReport {
    pub lines: u64,
    pub truncated_lines: u64,
    pub invalid_utf8_lines: u64,
    pub matched_lines: u64,
    /// Matches with a score whose `address` was missing or not an IP address.
    pub bad_addresses: u64,
    /// Scored addresses that `exclude_local` left out.
    pub ignored_local: u64,
    /// Matches with a score whose address could be at more than one place (none scored).
    pub ambiguous: u64,
    pub ambiguous_lines: Vec<AmbiguousLine>,
    /// Lines whose time was read from the line itself.
    pub timed_lines: u64,
    /// Sessions remembered, recalled, missed, evicted (multi-line rules).
    pub sessions_remembered: u64,
    pub sessions_recalled: u64,
    pub sessions_evicted: u64,
    pub rules: Vec<RuleCount>,
    pub addresses: Vec<AddressScore>,
    /// (line number, text), when asked for, up to 1000.
    pub unmatched: Vec<(u64, String)>,
}

/// Read `input` line by line and score it.
///
/// # Errors
/// When reading fails.
pub fn check<R: BufRead>(
    rulesets: &[Ruleset],
    mut input: R,
    policy: ScoringPolicy,
    keep_unmatched: bool,
) -> io::Result<CheckReport> {
    let mut report = CheckReport::default();
    // Per ruleset, per match (in `match_names` order).
    let mut counts: Vec<Vec<u64>> = rulesets
        .iter()
        .map(|r| vec![0; r.match_names().count()])
        .collect();
    let mut board = ScoreBoard::new(ScoringPolicy {
        max_tracked: usize::MAX,
        ..policy
    });
    let mut blocked_at: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut sessions = Sessions::new(SessionLimits::default());
    let mut clock = LogClock::new(crate::clock::Clock::now_unix(&crate::clock::SystemClock));
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let read =
            io::Read::take(&mut input, MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        report.lines += 1;
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            report.truncated_lines += 1;
            buf.truncate(MAX_LINE_BYTES);
            // Skip the rest of the line.
            let mut sink = Vec::new();
            let _: usize = input.read_until(b'\n', &mut sink)?;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            let _: Option<u8> = buf.pop();
        }
        let line = match std::str::from_utf8(&buf) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => {
                report.invalid_utf8_lines += 1;
                String::from_utf8_lossy(&buf)
            }
        };
        let prefixed = prefix::parse(&line);
        let time = prefixed.time.or_else(|| LogTime::find(&line));
        if time.is_some() {
            report.timed_lines += 1;
        }
        let now_ms = clock.at(time);
        // As `apply_all`, keeping each ruleset's index for the counts.
        let mut matched = false;
        for (index, ruleset) in rulesets.iter().enumerate() {
            let memory = Memory {
                sessions: &mut sessions,
                now_ms,
            };
            let (outcome, hits) = ruleset.apply_with(&line, Some(&prefixed), Some(memory));
            if outcome == Outcome::Skipped {
                continue;
            }
            matched = true;
            for hit in hits {
                counts[index][hit] += 1;
            }
            match outcome {
                Outcome::Scored { address, score } => match board.add(address, score, now_ms) {
                    Scored::Ignored => report.ignored_local += 1,
                    Scored::Crossed(_) => {
                        let _: u64 = *blocked_at.entry(address).or_insert(report.lines);
                    }
                    Scored::Below(_) | Scored::Above(_) => {}
                },
                Outcome::BadAddress { .. } => report.bad_addresses += 1,
                Outcome::Ambiguous { first, last, .. } => {
                    report.ambiguous += 1;
                    if report.ambiguous_lines.len() < MAX_UNMATCHED {
                        report.ambiguous_lines.push(AmbiguousLine {
                            line: report.lines,
                            ruleset: ruleset.name.clone(),
                            first,
                            last,
                        });
                    }
                }
                Outcome::NoScore | Outcome::Skipped => {}
            }
            if ruleset.last {
                break;
            }
        }
        if matched {
            report.matched_lines += 1;
        } else if keep_unmatched && report.unmatched.len() < MAX_UNMATCHED {
            report.unmatched.push((report.lines, line.into_owned()));
        }
    }
    let SessionStats {
        remembered,
        recalled,
        evicted,
        ..
    } = sessions.stats();
    report.sessions_remembered = remembered;
    report.sessions_recalled = recalled;
    report.sessions_evicted = evicted;
    // Every rule, in file order, with its count (zero included: a rule that never fires is
    // worth seeing).
    for (index, ruleset) in rulesets.iter().enumerate() {
        for (rule, matches) in ruleset.match_names().zip(&counts[index]) {
            report.rules.push(RuleCount {
                ruleset: ruleset.name.clone(),
                rule: rule.to_owned(),
                matches: *matches,
            });
        }
    }
    let mut addresses: Vec<AddressScore> = board
        .addresses()
        .map(|(address, score)| AddressScore {
            address,
            score,
            blocked_at_line: blocked_at.get(&address).copied(),
        })
        .collect();
    addresses.sort_by(|a, b| b.score.cmp(&a.score).then(a.address.cmp(&b.address)));
    report.addresses = addresses;
    Ok(report)
}

/// Log time as milliseconds for the score board: lines' own times, the year filled in.
struct LogClock {
    this_year: i32,
    now_unix: i64,
    /// The year of the last line without one, and its month (to see the months wrap).
    year: Option<(i32, u8)>,
    last_ms: u64,
}

impl LogClock {
    fn new(now_unix: u64) -> Self {
        let now_unix = i64::try_from(now_unix).unwrap_or(i64::MAX);
        let this_year = LogTime::from_unix_seconds(now_unix).year.unwrap_or(1970);
        Self {
            this_year,
            now_unix,
            year: None,
            last_ms: 0,
        }
    }

    /// Milliseconds since the epoch of a line's time (the last one when it has none). Never
    /// goes back: a line out of order counts at the time already reached.
    fn at(&mut self, time: Option<LogTime>) -> u64 {
        let Some(time) = time else {
            return self.last_ms;
        };
        let year = time.year.unwrap_or_else(|| match self.year {
            // December, then January: the next year.
            Some((year, month)) if time.month + 6 < month => year + 1,
            Some((year, _)) => year,
            None if time.unix(self.this_year) > self.now_unix + 86_400 => self.this_year - 1,
            None => self.this_year,
        });
        if time.year.is_none() {
            self.year = Some((year, time.month));
        }
        let seconds = u64::try_from(time.unix(year)).unwrap_or(0);
        let ms = seconds * 1000 + u64::from(time.nanos / 1_000_000);
        self.last_ms = self.last_ms.max(ms);
        self.last_ms
    }
}

/// The human form of a report.
pub fn format_report(report: &CheckReport, threshold: i64) -> String {
    let mut out = format!(
        "{} lines read ({} with a time), {} matched ({} truncated, {} not UTF-8), {} matches without a usable address, {} ambiguous (not scored), {} local addresses ignored\n\nMatches per rule:\n",
        report.lines,
        report.timed_lines,
        report.matched_lines,
        report.truncated_lines,
        report.invalid_utf8_lines,
        report.bad_addresses,
        report.ambiguous,
        report.ignored_local
    );
    for rule in &report.rules {
        let _ = writeln!(out, "  {:>8}  {}/{}", rule.matches, rule.ruleset, rule.rule);
    }
    let blocked = report
        .addresses
        .iter()
        .filter(|a| a.blocked_at_line.is_some())
        .count();
    let _ = writeln!(
        out,
        "\nAddresses ({} scored, {blocked} over the threshold of {threshold}):",
        report.addresses.len()
    );
    for address in &report.addresses {
        let when = address
            .blocked_at_line
            .map_or_else(String::new, |line| format!("  blocked at line {line}"));
        let _ = writeln!(out, "  {:>6}  {}{when}", address.score, address.address);
    }
    if !report.ambiguous_lines.is_empty() {
        out.push_str("\nAmbiguous lines (the text around the address occurs more than once; nothing scored):\n");
        for line in &report.ambiguous_lines {
            let _ = writeln!(
                out,
                "  {}: {}: {} or {}",
                line.line, line.ruleset, line.first, line.last
            );
        }
    }
    if !report.unmatched.is_empty() {
        out.push_str("\nUnmatched lines:\n");
        for (number, line) in &report.unmatched {
            let _ = writeln!(out, "  {number}: {line}");
        }
    }
    out
}
