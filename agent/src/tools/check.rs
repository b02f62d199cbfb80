//! `xdpguard check`: run rulesets over a log without a daemon and report what they would do.
//! The whole input counts as one scoring window; "when" is the line that crossed the threshold.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, BufRead},
    net::IpAddr,
};

use serde::Serialize;

use crate::{
    detect::logs::ruleset::{Outcome, Ruleset},
    detect::logs::score::{ScoreBoard, Scored, ScoringPolicy},
};

/// Longer lines are cut here (and counted).
pub const MAX_LINE_BYTES: usize = 16 << 10;
/// At most this many unmatched lines are kept for the report.
const MAX_UNMATCHED: usize = 1000;

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
        // As `apply_all`, keeping each ruleset's index for the counts.
        let mut matched = false;
        for (index, ruleset) in rulesets.iter().enumerate() {
            let (outcome, hits) = ruleset.apply_indexed(&line);
            if outcome == Outcome::Skipped {
                continue;
            }
            matched = true;
            for hit in hits {
                counts[index][hit] += 1;
            }
            match outcome {
                Outcome::Scored { address, score } => match board.add(address, score, 0) {
                    Scored::Ignored => report.ignored_local += 1,
                    Scored::Crossed(_) => {
                        let _: u64 = *blocked_at.entry(address).or_insert(report.lines);
                    }
                    Scored::Below(_) | Scored::Above(_) => {}
                },
                Outcome::BadAddress { .. } => report.bad_addresses += 1,
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

/// The human form of a report.
pub fn format_report(report: &CheckReport, threshold: i64) -> String {
    let mut out = format!(
        "{} lines read, {} matched ({} truncated, {} not UTF-8), {} matches without a usable address, {} local addresses ignored\n\nMatches per rule:\n",
        report.lines,
        report.matched_lines,
        report.truncated_lines,
        report.invalid_utf8_lines,
        report.bad_addresses,
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
    if !report.unmatched.is_empty() {
        out.push_str("\nUnmatched lines:\n");
        for (number, line) in &report.unmatched {
            let _ = writeln!(out, "  {number}: {line}");
        }
    }
    out
}
