//! `xdpguard check`: run rulesets over a log without a daemon and report what they would do.
//! Scores age in log time: each line's own time (its prefix, or an access or error log's
//! time field) drives the sliding window, so an old log scores as it did when it was written;
//! a line without a time takes the last one seen. A year the line does not write is this
//! year, or the last one for a date still to come, and it moves on when the months wrap.
//! "When" is the line that crossed the threshold. With an origins table, every address gets
//! its origin AS and announced prefix, and the would-be-blocked ones are counted per origin.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    io::{self, BufRead},
    net::IpAddr,
};

use serde::Serialize;

use crate::{
    detect::logs::correlate::{SessionLimits, SessionStats, Sessions},
    detect::logs::prefix::{self, LogTime},
    detect::logs::replay::{LineReader, YearGuess},
    detect::logs::ruleset::{FirstMatch, FirstPass, Memory, Outcome, Ruleset, RulesetLimits},
    detect::logs::score::{ScoreBoard, Scored, ScoringPolicy},
    origins::OriginTable,
    prefix::Prefix,
};

/// Longer lines are cut here (and counted), as the daemon's inputs cut them.
pub use crate::detect::logs::input::MAX_LINE_BYTES;
/// At most this many unmatched (and, apart, ambiguous) lines are kept for the report.
const MAX_UNMATCHED: usize = 1000;

/// Origin ASes the summary of would-be-blocked addresses lists.
const TOP_ORIGINS: usize = 10;

/// At most this many matched lines are explained.
const MAX_EXPLAINED: usize = 10_000;

/// What one ruleset made of one line, for `--explain`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ExplainedLine {
    pub line: u64,
    pub ruleset: String,
    pub mode: Option<String>,
    /// The matches that succeeded, the first match (the ruleset's own name) first.
    pub rules: Vec<String>,
    /// The variables the line left (captures, defaults, the prefix's program, pid, host).
    pub variables: BTreeMap<String, String>,
    /// What it came to: "scored ADDR +N", "no score", "ambiguous: A or B", "no address".
    pub outcome: String,
}

/// What `check` keeps beyond the counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// The lines no ruleset matched (up to 1000).
    pub keep_unmatched: bool,
    /// Every matched line's rules, variables and score (up to 10,000).
    pub explain: bool,
    pub sessions: SessionLimits,
}

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
    /// With an origins table: the AS announcing the address ("AS64500", or an AS_SET as
    /// "{AS64500,AS64501}"), and the announced prefix holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announced: Option<Prefix>,
}

/// An origin AS and how many of the addresses over the threshold it announces.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct OriginCount {
    pub origin: String,
    pub addresses: u64,
}

/// The addresses over the threshold per origin AS.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct BlockedByOrigin {
    /// The origins announcing the most of them, most first (at most 10).
    pub top: Vec<OriginCount>,
    /// Origins past the top.
    pub more_origins: u64,
    /// Addresses no announcement covers.
    pub not_announced: u64,
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
    /// With `explain`: per matched line and ruleset.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explained: Vec<ExplainedLine>,
    /// With an origins table (see [`add_origins`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by_origin: Option<BlockedByOrigin>,
}

/// Give every address of `report` its origin AS and announced prefix from `table`, and count
/// the would-be-blocked addresses per origin.
pub fn add_origins(report: &mut CheckReport, table: &OriginTable) {
    let mut per_origin: HashMap<String, u64> = HashMap::new();
    let mut not_announced = 0;
    for address in &mut report.addresses {
        let found = table.lookup(address.address);
        address.origin = found.map(|found| found.origin.to_string());
        address.announced = found.map(|found| found.prefix);
        if address.blocked_at_line.is_some() {
            match &address.origin {
                Some(origin) => *per_origin.entry(origin.clone()).or_default() += 1,
                None => not_announced += 1,
            }
        }
    }
    let mut top: Vec<OriginCount> = per_origin
        .into_iter()
        .map(|(origin, addresses)| OriginCount { origin, addresses })
        .collect();
    top.sort_by(|a, b| b.addresses.cmp(&a.addresses).then(a.origin.cmp(&b.origin)));
    let more_origins = u64::try_from(top.len().saturating_sub(TOP_ORIGINS)).unwrap_or(u64::MAX);
    top.truncate(TOP_ORIGINS);
    report.blocked_by_origin = Some(BlockedByOrigin {
        top,
        more_origins,
        not_announced,
    });
}

/// Read `input` line by line and score it.
///
/// # Errors
/// When reading fails.
pub fn check<R: BufRead>(
    rulesets: &[Ruleset],
    input: R,
    policy: ScoringPolicy,
    keep_unmatched: bool,
) -> io::Result<CheckReport> {
    check_with(
        rulesets,
        input,
        policy,
        CheckOptions {
            keep_unmatched,
            ..CheckOptions::default()
        },
    )
}

/// [`check`] with every option.
///
/// # Errors
/// When reading fails.
pub fn check_with<R: BufRead>(
    rulesets: &[Ruleset],
    mut input: R,
    policy: ScoringPolicy,
    options: CheckOptions,
) -> io::Result<CheckReport> {
    let keep_unmatched = options.keep_unmatched;
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
    let mut sessions = Sessions::new(options.sessions);
    let mut clock = LogClock::new(crate::clock::Clock::now_unix(&crate::clock::SystemClock));
    let pass = FirstPass::new(rulesets, &RulesetLimits::default());
    let needs_prefix = rulesets.iter().any(|r| !r.programs().is_empty());
    let mut verdicts = Vec::with_capacity(rulesets.len());
    let mut reader = LineReader::default();
    while let Some((bytes, truncated)) = reader.next(&mut input)? {
        report.lines += 1;
        if truncated {
            report.truncated_lines += 1;
        }
        let mut bytes = bytes;
        while let [rest @ .., b'\n' | b'\r'] = bytes {
            bytes = rest;
        }
        let line = match std::str::from_utf8(bytes) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => {
                report.invalid_utf8_lines += 1;
                String::from_utf8_lossy(bytes)
            }
        };
        // Only rulesets with programs read the tag; the others need the line's time alone.
        let prefixed = needs_prefix.then(|| prefix::parse(&line));
        let time = prefixed
            .as_ref()
            .map_or_else(|| prefix::leading_time(&line), |p| p.time)
            .or_else(|| LogTime::find_unprefixed(&line));
        if time.is_some() {
            report.timed_lines += 1;
        }
        let now_ms = clock.at(time);
        // As `apply_all_passed`, keeping each ruleset's index for the counts.
        let mut matched = false;
        pass.run(&line, &mut verdicts);
        for (index, (ruleset, verdict)) in rulesets.iter().zip(&verdicts).enumerate() {
            let memory = Memory {
                sessions: &mut sessions,
                now_ms,
            };
            let (outcome, hits, variables) = match verdict {
                FirstMatch::Fails => continue,
                _ if options.explain => ruleset.explain(&line, prefixed.as_ref(), Some(memory)),
                FirstMatch::Holds => {
                    let (outcome, hits) =
                        ruleset.apply_passed(&line, prefixed.as_ref(), Some(memory));
                    (outcome, hits, Vec::new())
                }
                FirstMatch::Unknown => {
                    let (outcome, hits) =
                        ruleset.apply_with(&line, prefixed.as_ref(), Some(memory));
                    (outcome, hits, Vec::new())
                }
            };
            if outcome == Outcome::Skipped {
                continue;
            }
            if options.explain && report.explained.len() < MAX_EXPLAINED {
                report.explained.push(ExplainedLine {
                    line: report.lines,
                    ruleset: ruleset.name.clone(),
                    mode: ruleset.mode().map(str::to_owned),
                    rules: hits.iter().map(|&i| ruleset.match_name(i).to_owned()).collect(),
                    variables: variables.into_iter().collect(),
                    outcome: match &outcome {
                        Outcome::Scored { address, score } => format!("scored {address} {score:+}"),
                        Outcome::NoScore => "no score".to_owned(),
                        Outcome::Ambiguous { score, first, last } => format!(
                            "ambiguous ({score:+} not scored): the address could be {first} or {last}"
                        ),
                        Outcome::BadAddress { score, text } => format!(
                            "no usable address ({score:+} not scored): {}",
                            text.as_deref().unwrap_or("none captured")
                        ),
                        Outcome::Skipped => String::new(),
                    },
                });
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
            origin: None,
            announced: None,
        })
        .collect();
    addresses.sort_by(|a, b| b.score.cmp(&a.score).then(a.address.cmp(&b.address)));
    report.addresses = addresses;
    Ok(report)
}

/// Log time as milliseconds for the score board: lines' own times, the year filled in.
struct LogClock {
    year: YearGuess,
    /// The first timed line's time: the clock counts from it, so lines without a time
    /// before it (at 0) are as old as it, not decades older.
    origin_ms: Option<u64>,
    last_ms: u64,
    /// The last time read (without its fraction), its year and its Unix seconds: lines of the
    /// same second need no calendar sums.
    memo: Option<(LogTime, i32, u64)>,
}

impl LogClock {
    fn new(now_unix: u64) -> Self {
        Self {
            year: YearGuess::new(now_unix),
            origin_ms: None,
            last_ms: 0,
            memo: None,
        }
    }

    /// Milliseconds since the first timed line of a line's time (the last one when it has
    /// none): only differences matter to a window. Never goes back: a line out of order
    /// counts at the time already reached.
    fn at(&mut self, time: Option<LogTime>) -> u64 {
        let Some(time) = time else {
            return self.last_ms;
        };
        let year = self.year.year_of(&time);
        let whole = LogTime { nanos: 0, ..time };
        let seconds = match self.memo {
            Some((last, last_year, seconds)) if last == whole && last_year == year => seconds,
            _ => {
                let seconds = u64::try_from(time.unix(year)).unwrap_or(0);
                self.memo = Some((whole, year, seconds));
                seconds
            }
        };
        let ms = seconds * 1000 + u64::from(time.nanos / 1_000_000);
        let origin = *self.origin_ms.get_or_insert(ms);
        self.last_ms = self.last_ms.max(ms.saturating_sub(origin));
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
        let origin = match (&address.origin, &address.announced) {
            (Some(origin), Some(announced)) => format!("  {origin} {announced}"),
            _ if report.blocked_by_origin.is_some() => "  (not announced)".to_owned(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:>6}  {}{origin}{when}",
            address.score, address.address
        );
    }
    if let Some(by_origin) = &report.blocked_by_origin {
        out.push_str("\nOver the threshold, per origin AS:\n");
        for count in &by_origin.top {
            let _ = writeln!(out, "  {:>6}  {}", count.addresses, count.origin);
        }
        if by_origin.more_origins > 0 {
            let _ = writeln!(out, "  ({} more origins)", by_origin.more_origins);
        }
        if by_origin.not_announced > 0 {
            let _ = writeln!(out, "  {:>6}  not announced", by_origin.not_announced);
        }
        if by_origin.top.is_empty() && by_origin.not_announced == 0 {
            out.push_str("  none\n");
        }
    }
    if !report.explained.is_empty() {
        out.push_str("\nMatched lines:\n");
        for line in &report.explained {
            let mode = line
                .mode
                .as_deref()
                .map_or_else(String::new, |m| format!(" ({m})"));
            let variables: Vec<String> = line
                .variables
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            let _ = writeln!(
                out,
                "  {}: {}{mode}: {}\n      rules {}\n      {}",
                line.line,
                line.ruleset,
                line.outcome,
                line.rules.join(", "),
                variables.join(" ")
            );
        }
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

#[cfg(test)]
mod tests {
    use std::{io::Cursor, path::Path};

    use super::*;
    use crate::detect::logs::ruleset::parse;

    const RULESET: &str = r#"
[[ruleset]]
name = "sshd"
programs = ["sshd"]

[[ruleset.rule]]
name = "connection"
match = '^Connection from (?P<address>[0-9.]+) port \d+$'
remember = '${pid}'

[[ruleset.rule]]
name = "failed"
match = '^Failed password for (?P<user>.*) from (?P<address>[0-9.]+) port \d+ ssh2(?:: .*)?$'
score = 6

[[ruleset.rule]]
name = "reset"
match = '^fatal: Read from socket failed \[preauth\]$'
recall = '${pid}'
score = 6
"#;

    fn run(log: &str, explain: bool) -> CheckReport {
        let rulesets = parse(RULESET, Path::new("t.toml")).unwrap();
        let policy = ScoringPolicy {
            exclude_local: false,
            ..ScoringPolicy::default()
        };
        let options = CheckOptions {
            explain,
            ..CheckOptions::default()
        };
        check_with(&rulesets, Cursor::new(log.as_bytes()), policy, options).unwrap()
    }

    #[test]
    fn lines_without_a_time_before_the_first_timed_one_keep_their_scores() {
        let log = "failed login from 203.0.113.5\nfailed login from 203.0.113.5\nJan  5 01:00:00 h sshd[1]: Failed password for a from 203.0.113.6 port 1 ssh2\n";
        let rulesets = parse(
            &format!(
                "{RULESET}\n[[ruleset]]\nname = \"bare\"\nmatch = '^failed login from (?P<address>[0-9.]+)$'\nscore = 6\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        let policy = ScoringPolicy {
            exclude_local: false,
            ..ScoringPolicy::default()
        };
        let report = check(&rulesets, Cursor::new(log.as_bytes()), policy, false).unwrap();
        let score = |address: &str| {
            report
                .addresses
                .iter()
                .find(|a| a.address.to_string() == address)
                .map(|a| a.score)
        };
        assert_eq!(
            (score("203.0.113.5"), score("203.0.113.6")),
            (Some(12), Some(6))
        );
    }

    #[test]
    fn scores_age_in_log_time() {
        // Two failures 11 minutes apart (the window is 10): each starts over, never over 10.
        let apart = "Jan  5 01:00:00 h sshd[1]: Failed password for a from 203.0.113.5 port 1 ssh2\n\
                     Jan  5 01:11:00 h sshd[2]: Failed password for a from 203.0.113.5 port 1 ssh2\n";
        let report = run(apart, false);
        assert_eq!(report.timed_lines, 2);
        assert_eq!(report.addresses[0].score, 6);
        assert_eq!(report.addresses[0].blocked_at_line, None);
        // A minute apart: 12, over the threshold at line 2.
        let close = apart.replace("01:11:00", "01:01:00");
        let report = run(&close, false);
        assert_eq!(report.addresses[0].score, 12);
        assert_eq!(report.addresses[0].blocked_at_line, Some(2));
    }

    #[test]
    fn explain_gives_rules_variables_and_outcome_per_line_and_sessions_recall() {
        let log = "Jan  5 01:00:00 h sshd[7]: Connection from 203.0.113.9 port 4\n\
                   Jan  5 01:00:01 h sshd[7]: Failed password for x from 1.2.3.4 port 9 ssh2: from 203.0.113.9 port 4 ssh2\n\
                   Jan  5 01:00:02 h sshd[7]: fatal: Read from socket failed [preauth]\n\
                   Jan  5 01:00:02 h cron[7]: unrelated\n";
        let report = run(log, true);
        let explained: Vec<(u64, &str, Vec<&str>)> = report
            .explained
            .iter()
            .map(|e| {
                (
                    e.line,
                    e.outcome.as_str(),
                    e.rules.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            explained,
            [
                (1, "no score", vec!["sshd", "connection"]),
                (
                    2,
                    "ambiguous (+6 not scored): the address could be 1.2.3.4 or 203.0.113.9",
                    vec!["sshd", "failed"]
                ),
                (3, "scored 203.0.113.9 +6", vec!["sshd", "reset"]),
            ]
        );
        let variables = &report.explained[0].variables;
        assert_eq!(variables.get("pid").map(String::as_str), Some("7"));
        assert_eq!(variables.get("program").map(String::as_str), Some("sshd"));
        assert_eq!(variables.get("host").map(String::as_str), Some("h"));
        // Greedy, as the scored pattern ran: the user name takes the first copy.
        assert_eq!(
            report.explained[1]
                .variables
                .get("user")
                .map(String::as_str),
            Some("x from 1.2.3.4 port 9 ssh2:")
        );
        assert_eq!(report.ambiguous, 1);
        assert_eq!(
            (report.sessions_remembered, report.sessions_recalled),
            (1, 1)
        );
        let text = format_report(&report, 10);
        assert!(
            text.contains("  3: sshd: scored 203.0.113.9 +6\n      rules sshd, reset"),
            "{text}"
        );
        assert!(text.contains("Ambiguous lines"), "{text}");
    }

    #[test]
    fn origins_name_each_address_and_count_the_blocked_per_as() {
        let failure = |second: u8, address: &str| {
            format!(
                "Jan  5 01:00:{second:02} h sshd[1]: Failed password for a from {address} port 1 ssh2\n"
            )
        };
        let log: String = [
            (0, "203.0.113.5"),
            (1, "203.0.113.5"),
            (2, "203.0.113.6"),
            (3, "203.0.113.6"),
            (4, "198.51.100.7"),
            (5, "198.51.100.7"),
            (6, "192.0.2.1"),
        ]
        .iter()
        .map(|(second, address)| failure(*second, address))
        .collect();
        let mut report = run(&log, false);
        let plain = serde_json::to_value(&report).unwrap();
        assert!(plain.get("blocked_by_origin").is_none());
        assert!(plain["addresses"][0].get("origin").is_none());
        let mut builder = crate::origins::TableBuilder::new();
        builder.add(
            "203.0.113.0/24".parse().unwrap(),
            crate::origins::OriginAs::Single(64500),
            50,
        );
        builder.add(
            "192.0.2.0/24".parse().unwrap(),
            crate::origins::OriginAs::Set(vec![64501, 64502].into_boxed_slice()),
            50,
        );
        add_origins(&mut report, &builder.build());
        let by_address: BTreeMap<String, (Option<&str>, Option<String>)> = report
            .addresses
            .iter()
            .map(|a| {
                (
                    a.address.to_string(),
                    (a.origin.as_deref(), a.announced.map(|p| p.to_string())),
                )
            })
            .collect();
        assert_eq!(
            by_address["203.0.113.5"],
            (Some("AS64500"), Some("203.0.113.0/24".to_owned()))
        );
        assert_eq!(
            by_address["192.0.2.1"],
            (Some("{AS64501,AS64502}"), Some("192.0.2.0/24".to_owned()))
        );
        assert_eq!(by_address["198.51.100.7"], (None, None));
        assert_eq!(
            report.blocked_by_origin,
            Some(BlockedByOrigin {
                top: vec![OriginCount {
                    origin: "AS64500".into(),
                    addresses: 2
                }],
                more_origins: 0,
                not_announced: 1,
            })
        );
        let json = serde_json::to_value(&report).unwrap();
        let unannounced = json["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["address"] == "198.51.100.7")
            .unwrap();
        assert!(unannounced.get("origin").is_none() && unannounced.get("announced").is_none());
        let text = format_report(&report, 10);
        assert!(
            text.contains("203.0.113.5  AS64500 203.0.113.0/24  blocked at line 2"),
            "{text}"
        );
        assert!(
            text.contains("198.51.100.7  (not announced)  blocked"),
            "{text}"
        );
        assert!(
            text.contains("per origin AS:\n       2  AS64500\n       1  not announced\n"),
            "{text}"
        );
    }
}
