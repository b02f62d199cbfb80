//! A [`Summary`] from logs: the rulesets run over each line as `xdpguard check` runs them (the
//! same first pass, session memory, ambiguity refusal and score board), in the lines' own
//! time, and every line that scores an address for a ruleset is kept as (time, ruleset,
//! address); then per bin and ruleset the distinct sources, /24s + /64s and origins.
//!
//! - A source is what the daemon's history would record: a positive score the board took (not
//!   an excluded local address, not a negative score such as a login that worked).
//! - `decisions` counts, per `ruleset:NAME`, the addresses whose score crossed the threshold,
//!   in the bin of the line that took it over, once per address and log, as `check` reports
//!   them ("blocked at line"). The daemon would also aggregate into prefixes and re-block after
//!   a ban ends; a log alone cannot say what it would have done there.
//! - Each log is scored on its own (its own board, sessions and year guess), as `check` over
//!   each file would; the summary is their union.
//! - Time: the line's prefix (syslog, journal, RFC 3339, TAI64N) or the time an access or error
//!   log writes. A year the line does not write is guessed as `check` guesses it (this year,
//!   or the last one for a date still to come, moving on when the months wrap); a time without
//!   a zone is taken as UTC. A line without a time is counted; what it scores is placed at the
//!   time of the line before it (the first timed line, for lines before any), as `check`'s
//!   clock ages it.
//! - `top` and `anomalies` stay empty: no ranking of a log is a drop or volume count, and
//!   anomalies come from flows.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    io::{self, BufRead},
    net::IpAddr,
};

use super::{Bins, OfflineError, Range, canonical, ruleset_bin};
use crate::{
    detect::logs::{
        correlate::{SessionLimits, Sessions},
        prefix::{self, LogTime},
        replay::{LineReader, YearGuess},
        ruleset::{FirstMatch, FirstPass, Memory, Outcome, Ruleset, RulesetLimits},
        score::{ScoreBoard, Scored, ScoringPolicy},
    },
    history::model::Summary,
    origins::OriginTable,
};

/// One address a ruleset scored (or took over the threshold) on one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// Unix seconds of the line (see the module documentation for lines without a time).
    pub time: u64,
    /// Index into [`LogScan::rulesets`].
    pub ruleset: usize,
    pub address: IpAddr,
}

/// What one log gave: its scored sources and threshold crossings, and the counts a reader
/// needs to trust them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogScan {
    /// The rulesets' names, in the order they ran.
    pub rulesets: Vec<String>,
    pub lines: u64,
    /// Lines longer than `check`'s limit, cut there.
    pub truncated_lines: u64,
    /// Lines with no time that could be read.
    pub untimed_lines: u64,
    /// Of the scored sources, those from lines without a time (placed at the line before).
    pub untimed_scores: u64,
    /// Scored sources from a log without a single timed line: not placed, not counted.
    pub unplaced_scores: u64,
    /// Matches refused because the address could be at more than one place.
    pub ambiguous: u64,
    /// Matches with a score but no usable address.
    pub bad_addresses: u64,
    /// Scored addresses the policy leaves out (local ones with `exclude_local`).
    pub ignored_local: u64,
    pub scored: Vec<LogEvent>,
    /// The first threshold crossing of each address.
    pub crossed: Vec<LogEvent>,
    /// The newest line time, Unix seconds.
    pub latest: Option<u64>,
}

impl LogScan {
    /// What a reader should hear about on standard error: lines and scores whose time had to
    /// be borrowed or could not be placed. `None` when every line had a time.
    pub fn caveats(&self) -> Option<String> {
        if self.untimed_lines == 0 && self.unplaced_scores == 0 {
            return None;
        }
        let mut text = format!(
            "{} of {} lines without a readable time",
            self.untimed_lines, self.lines
        );
        if self.untimed_scores > 0 {
            text.push_str(&format!(
                "; {} scores on them binned at the time of the line before",
                self.untimed_scores
            ));
        }
        if self.unplaced_scores > 0 {
            text.push_str(&format!(
                "; {} scores left out (no line of the log has a time)",
                self.unplaced_scores
            ));
        }
        Some(text)
    }
}

/// A line's Unix milliseconds, its year guessed as `check` guesses it; `None` before 1970.
fn unix_ms(years: &mut YearGuess, time: LogTime) -> Option<u64> {
    let seconds = u64::try_from(time.unix(years.year_of(&time))).ok()?;
    Some(seconds * 1000 + u64::from(time.nanos / 1_000_000))
}

/// Run `rulesets` over `input` as `check` does with `policy`, and keep every scored source
/// and first crossing with its line's time. `now_unix` only guesses missing years.
///
/// # Errors
/// When reading fails.
pub fn scan<R: BufRead>(
    rulesets: &[Ruleset],
    mut input: R,
    policy: ScoringPolicy,
    now_unix: u64,
) -> io::Result<LogScan> {
    let mut scan = LogScan {
        rulesets: rulesets.iter().map(|r| r.name.clone()).collect(),
        ..LogScan::default()
    };
    // As `check`: every address is kept, none evicted.
    let mut board = ScoreBoard::new(ScoringPolicy {
        max_tracked: usize::MAX,
        ..policy
    });
    let mut sessions = Sessions::new(SessionLimits::default());
    let pass = FirstPass::new(rulesets, &RulesetLimits::default());
    let needs_prefix = rulesets.iter().any(|r| !r.programs().is_empty());
    let mut verdicts = Vec::with_capacity(rulesets.len());
    let mut years = YearGuess::new(now_unix);
    let mut crossed: HashSet<IpAddr> = HashSet::new();
    // The score board ages in milliseconds since the first timed line, never going back
    // (check's clock); the bins take each line's own time.
    let mut origin_ms: Option<u64> = None;
    let mut board_ms = 0u64;
    let mut line_time: Option<u64> = None;
    // Scores and crossings before the first timed line: placed at its time once it comes.
    let mut leading = (0usize, 0usize);
    let mut reader = LineReader::default();
    while let Some((bytes, truncated)) = reader.next(&mut input)? {
        scan.lines += 1;
        if truncated {
            scan.truncated_lines += 1;
        }
        let mut end = bytes.len();
        while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let line = String::from_utf8_lossy(&bytes[..end]);
        let prefixed = needs_prefix.then(|| prefix::parse(&line));
        let time = prefixed
            .as_ref()
            .map_or_else(|| prefix::leading_time(&line), |p| p.time)
            .or_else(|| LogTime::find_unprefixed(&line))
            .and_then(|time| unix_ms(&mut years, time));
        match time {
            Some(ms) => {
                let origin = *origin_ms.get_or_insert(ms);
                board_ms = board_ms.max(ms.saturating_sub(origin));
                let seconds = ms / 1000;
                if line_time.is_none() {
                    for event in scan.scored[..leading.0]
                        .iter_mut()
                        .chain(&mut scan.crossed[..leading.1])
                    {
                        event.time = seconds;
                    }
                }
                line_time = Some(seconds);
                scan.latest = Some(scan.latest.map_or(seconds, |l| l.max(seconds)));
            }
            None => scan.untimed_lines += 1,
        }
        pass.run(&line, &mut verdicts);
        for (index, (ruleset, verdict)) in rulesets.iter().zip(&verdicts).enumerate() {
            let memory = Memory {
                sessions: &mut sessions,
                now_ms: board_ms,
            };
            let outcome = match verdict {
                FirstMatch::Fails => continue,
                FirstMatch::Holds => ruleset.apply_passed(&line, prefixed.as_ref(), Some(memory)),
                FirstMatch::Unknown => ruleset.apply_with(&line, prefixed.as_ref(), Some(memory)),
            }
            .0;
            match outcome {
                Outcome::Skipped => continue,
                Outcome::Scored { address, score } => {
                    let scored = board.add(address, score, board_ms);
                    let event = LogEvent {
                        time: line_time.unwrap_or(0),
                        ruleset: index,
                        address: canonical(address),
                    };
                    if scored == Scored::Ignored {
                        scan.ignored_local += 1;
                    } else if score > 0 {
                        scan.scored.push(event);
                        if time.is_none() {
                            scan.untimed_scores += 1;
                        }
                        if line_time.is_none() {
                            leading.0 += 1;
                        }
                    }
                    if matches!(scored, Scored::Crossed(_)) && crossed.insert(event.address) {
                        scan.crossed.push(event);
                        if line_time.is_none() {
                            leading.1 += 1;
                        }
                    }
                }
                Outcome::Ambiguous { .. } => scan.ambiguous += 1,
                Outcome::BadAddress { .. } => scan.bad_addresses += 1,
                Outcome::NoScore => {}
            }
            if ruleset.last {
                break;
            }
        }
    }
    if line_time.is_none() {
        scan.unplaced_scores = u64::try_from(scan.scored.len()).unwrap_or(u64::MAX);
        scan.untimed_scores = 0;
        scan.scored.clear();
        scan.crossed.clear();
    }
    Ok(scan)
}

/// What a summary of logs covers.
#[derive(Clone, Copy)]
pub struct LogSummaryOptions<'a> {
    /// How far back from the newest line, in seconds.
    pub span_seconds: u64,
    pub bin_seconds: u64,
    /// For the bins' distinct-origin counts.
    pub origins: Option<&'a OriginTable>,
}

/// What a summary left out because it fell before `since`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub scores: u64,
    pub crossings: u64,
}

/// The summary of `scans` (one per log, named by `names` in `from`) over the span ending at
/// their newest line, and what fell before its start.
///
/// # Errors
/// No timed line in any log, a zero bin or far too many bins.
pub fn summarize(
    names: &[String],
    scans: &[LogScan],
    options: &LogSummaryOptions<'_>,
) -> Result<(Summary, LeftOut), OfflineError> {
    let from = format!("logs:{}", names.join(","));
    let latest = scans
        .iter()
        .filter_map(|scan| scan.latest)
        .max()
        .ok_or_else(|| OfflineError::NoTimes {
            what: names.join(", "),
        })?;
    let range = Range::ending_at(latest, options.span_seconds, options.bin_seconds);
    let mut bins = Bins::new(range)?;
    let mut left_out = LeftOut::default();
    let mut sources: Vec<BTreeMap<&str, HashSet<IpAddr>>> = vec![BTreeMap::new(); bins.bins.len()];
    let mut decisions: Vec<HashMap<&str, u64>> = vec![HashMap::new(); bins.bins.len()];
    for scan in scans {
        for event in &scan.scored {
            match bins
                .index(event.time)
                .filter(|_| range.contains(event.time))
            {
                Some(index) => {
                    let _: bool = sources[index]
                        .entry(&scan.rulesets[event.ruleset])
                        .or_default()
                        .insert(event.address);
                }
                None => left_out.scores += 1,
            }
        }
        for event in &scan.crossed {
            match bins
                .index(event.time)
                .filter(|_| range.contains(event.time))
            {
                Some(index) => {
                    *decisions[index]
                        .entry(&scan.rulesets[event.ruleset])
                        .or_default() += 1;
                }
                None => left_out.crossings += 1,
            }
        }
    }
    let mut all_rulesets: BTreeSet<String> = BTreeSet::new();
    for ((bin, sets), counts) in bins.bins.iter_mut().zip(sources).zip(decisions) {
        for (ruleset, addresses) in sets {
            all_rulesets.insert(ruleset.to_owned());
            bin.rulesets
                .push(ruleset_bin(ruleset.to_owned(), &addresses, options.origins));
        }
        bin.decisions = counts
            .into_iter()
            .map(|(ruleset, count)| (format!("ruleset:{ruleset}"), count))
            .collect();
        bin.decisions.sort();
    }
    Ok((
        Summary {
            from,
            since: range.since,
            until: range.until,
            bin_seconds: range.bin_seconds,
            bins: bins.bins,
            rulesets: all_rulesets.into_iter().collect(),
            top: Vec::new(),
            anomalies: Vec::new(),
        },
        left_out,
    ))
}

#[cfg(test)]
mod tests {
    use std::{io::Cursor, path::Path};

    use super::*;
    use crate::detect::logs::ruleset::parse;

    const RULESETS: &str = r#"
[[ruleset]]
name = "sshd"
programs = ["sshd"]

[[ruleset.rule]]
name = "failed"
match = '^Failed password for \S+ from (?P<address>\S+) port \d+ ssh2$'
score = 6

[[ruleset.rule]]
name = "accepted"
match = '^Accepted password for \S+ from (?P<address>\S+) port \d+ ssh2$'
score = -6

[[ruleset]]
name = "web"
match = ' "GET /wp-login[.]php '

[[ruleset.rule]]
name = "probe"
match = '^(?P<address>\S+) - - \[[^\]]+\] "GET /wp-login.php HTTP/1.1" 404 \d+$'
score = 11
"#;

    fn scan_text(text: &str) -> LogScan {
        let rulesets = parse(RULESETS, Path::new("t.toml")).unwrap();
        // 2024-06-01: the log's yearless times are 2024's.
        scan(
            &rulesets,
            Cursor::new(text.as_bytes()),
            ScoringPolicy::default(),
            1_717_200_000,
        )
        .unwrap()
    }

    fn failed(time: &str, address: &str) -> String {
        format!("Jan  5 {time} h sshd[1]: Failed password for a from {address} port 1 ssh2\n")
    }

    /// 2024-01-05T00:00:00Z.
    const JAN_5: u64 = 1_704_412_800;

    #[test]
    fn distinct_sources_and_networks_per_bin_and_ruleset_by_hand() {
        // Hour 01: three failures from two addresses of one /24, one from another /24, a
        // web probe. Hour 02: one repeat, one IPv6 pair in one /64, a local address (not
        // scored), and an accepted login (a negative score: not a source).
        let log = [
            failed("01:00:00", "45.33.1.5"),
            failed("01:00:01", "45.33.1.5"),
            failed("01:10:00", "45.33.1.6"),
            failed("01:20:00", "80.80.80.1"),
            "198.18.0.1 - - [05/Jan/2024:01:30:00 +0000] \"GET /wp-login.php HTTP/1.1\" 404 1\n"
                .to_owned(),
            "45.33.2.77 - - [05/Jan/2024:01:31:00 +0000] \"GET /wp-login.php HTTP/1.1\" 404 1\n"
                .to_owned(),
            failed("02:00:00", "45.33.1.5"),
            failed("02:05:00", "2001:4860::1"),
            failed("02:06:00", "2001:4860::2"),
            failed("02:07:00", "10.0.0.1"),
            "Jan  5 02:08:00 h sshd[2]: Accepted password for a from 80.80.80.9 port 1 ssh2\n"
                .to_owned(),
        ]
        .concat();
        let scanned = scan_text(&log);
        assert_eq!(scanned.untimed_lines, 0);
        assert_eq!(scanned.ignored_local, 2, "10.0.0.1 and 198.18.0.1");
        assert_eq!(scanned.latest, Some(JAN_5 + 2 * 3600 + 480));
        let (summary, left_out) = summarize(
            &["auth.log".into()],
            &[scanned],
            &LogSummaryOptions {
                span_seconds: 3 * 3600,
                bin_seconds: 3600,
                origins: None,
            },
        )
        .unwrap();
        assert_eq!(left_out, LeftOut::default());
        assert_eq!(summary.from, "logs:auth.log");
        assert_eq!(summary.until, JAN_5 + 2 * 3600 + 481);
        assert_eq!(summary.since, summary.until - 3 * 3600);
        let starts: Vec<u64> = summary.bins.iter().map(|b| b.start).collect();
        assert_eq!(starts, [JAN_5 - 3600, JAN_5, JAN_5 + 3600, JAN_5 + 7200]);
        assert_eq!(summary.rulesets, ["sshd", "web"]);
        let counts = |bin: usize| -> Vec<(&str, u64, u64)> {
            summary.bins[bin]
                .rulesets
                .iter()
                .map(|r| (r.ruleset.as_str(), r.sources, r.networks))
                .collect()
        };
        assert!(counts(0).is_empty() && counts(1).is_empty());
        assert_eq!(counts(2), [("sshd", 3, 2), ("web", 1, 1)]);
        assert_eq!(counts(3), [("sshd", 3, 2)]);
        // 45.33.1.5 crossed 10 at 01:00:01 (12); the probe crossed at once (11); no one
        // else went over.
        assert_eq!(
            summary.bins[2].decisions,
            [
                ("ruleset:sshd".to_owned(), 1),
                ("ruleset:web".to_owned(), 1)
            ]
        );
        assert!(summary.bins[3].decisions.is_empty());
    }

    #[test]
    fn lines_without_a_time_are_counted_and_take_the_time_before() {
        let log = [
            "sshd[1]: Failed password for a from 45.33.1.9 port 1 ssh2\n".to_owned(),
            failed("05:00:00", "45.33.1.5"),
            "sshd[1]: Failed password for a from 45.33.1.6 port 1 ssh2\n".to_owned(),
            failed("07:00:00", "45.33.1.7"),
        ]
        .concat();
        let scanned = scan_text(&log);
        assert_eq!((scanned.untimed_lines, scanned.untimed_scores), (2, 2));
        let times: Vec<(String, u64)> = scanned
            .scored
            .iter()
            .map(|e| (e.address.to_string(), e.time))
            .collect();
        assert_eq!(
            times,
            [
                ("45.33.1.9".to_owned(), JAN_5 + 5 * 3600),
                ("45.33.1.5".to_owned(), JAN_5 + 5 * 3600),
                ("45.33.1.6".to_owned(), JAN_5 + 5 * 3600),
                ("45.33.1.7".to_owned(), JAN_5 + 7 * 3600),
            ]
        );
        let caveats = scanned.caveats().unwrap();
        assert!(
            caveats.starts_with("2 of 4 lines without a readable time; 2 scores"),
            "{caveats}"
        );

        let untimed = scan_text("sshd[1]: Failed password for a from 45.33.1.9 port 1 ssh2\n");
        assert_eq!((untimed.unplaced_scores, untimed.scored.len()), (1, 0));
        assert!(matches!(
            summarize(
                &["x".into()],
                &[untimed],
                &LogSummaryOptions {
                    span_seconds: 60,
                    bin_seconds: 60,
                    origins: None
                }
            ),
            Err(OfflineError::NoTimes { .. })
        ));
    }

    #[test]
    fn what_falls_before_the_span_is_left_out_and_counted() {
        let log = [
            failed("01:00:00", "45.33.1.5"),
            failed("01:00:01", "45.33.1.5"),
            failed("03:00:00", "45.33.1.6"),
        ]
        .concat();
        let (summary, left_out) = summarize(
            &["a".into()],
            &[scan_text(&log)],
            &LogSummaryOptions {
                span_seconds: 3600,
                bin_seconds: 3600,
                origins: None,
            },
        )
        .unwrap();
        assert_eq!(
            left_out,
            LeftOut {
                scores: 2,
                crossings: 1
            }
        );
        let sources: u64 = summary
            .bins
            .iter()
            .flat_map(|b| &b.rulesets)
            .map(|r| r.sources)
            .sum();
        assert_eq!(sources, 1);
    }

    #[test]
    fn the_months_wrapping_move_the_year_on() {
        let log = [
            "Dec 31 23:59:00 h sshd[1]: Failed password for a from 45.33.1.5 port 1 ssh2\n",
            "Jan  1 00:01:00 h sshd[1]: Failed password for a from 45.33.1.6 port 1 ssh2\n",
        ]
        .concat();
        let scanned = scan_text(&log);
        // Dec 31 of "this year" (2024) would be in the future: 2023, then 2024.
        let times: Vec<u64> = scanned.scored.iter().map(|e| e.time).collect();
        assert_eq!(times, [1_704_067_140, 1_704_067_260]);
    }
}
