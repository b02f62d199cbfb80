//! Log scoring's section of the metrics page, from its [`LogStats`].
use super::LogStats;
use crate::exposition::{self, Kind, MetricFamily};

/// The log scoring section of the page.
pub fn render(stats: &LogStats) -> String {
    let mut lines = MetricFamily::new(
        "xdpguard_log_lines_total",
        Kind::Counter,
        "Log lines read, by input.",
    );
    for (input, count) in &stats.lines {
        lines.add(&[("input", input)], *count);
    }
    let mut truncated = MetricFamily::new(
        "xdpguard_log_lines_truncated_total",
        Kind::Counter,
        "Log lines cut at the length limit, by input.",
    );
    for (input, count) in &stats.truncated {
        truncated.add(&[("input", input)], *count);
    }
    let mut matches = MetricFamily::new(
        "xdpguard_log_matches_total",
        Kind::Counter,
        "Log lines a rule matched, by ruleset and rule.",
    );
    for ((ruleset, rule), count) in &stats.matches {
        matches.add(&[("ruleset", ruleset), ("rule", rule)], *count);
    }
    let mut scored = MetricFamily::new(
        "xdpguard_scored_addresses",
        Kind::Gauge,
        "Source addresses with a log score in the window.",
    );
    scored.add(&[], stats.scored_addresses);
    let mut ambiguous = MetricFamily::new(
        "xdpguard_log_ambiguous_lines_total",
        Kind::Counter,
        "Matched lines not scored because the text around the address occurs more than once (an attacker may have written one of them), by ruleset.",
    );
    for (ruleset, count) in &stats.ambiguous {
        ambiguous.add(&[("ruleset", ruleset)], *count);
    }
    let mut ruleset_lines = MetricFamily::new(
        "xdpguard_ruleset_lines_total",
        Kind::Counter,
        "Log lines a ruleset matched, by ruleset.",
    );
    let mut ruleset_scored = MetricFamily::new(
        "xdpguard_ruleset_scored_total",
        Kind::Counter,
        "Matches that scored an address, by ruleset.",
    );
    let mut ruleset_blocks = MetricFamily::new(
        "xdpguard_ruleset_blocks_total",
        Kind::Counter,
        "Blocks a ruleset's scores asked the owner for (an address, or its neighbourhood), by ruleset.",
    );
    for (ruleset, counts) in &stats.rulesets {
        ruleset_lines.add(&[("ruleset", ruleset)], counts.lines);
        ruleset_scored.add(&[("ruleset", ruleset)], counts.scored);
        ruleset_blocks.add(&[("ruleset", ruleset)], counts.blocks);
    }
    let mut sessions = MetricFamily::new(
        "xdpguard_log_sessions",
        Kind::Gauge,
        "Sessions (sshd pids, dovecot sessions, ...) whose address multi-line rules remember.",
    );
    sessions.add(&[], stats.sessions.tracked);
    let mut sessions_bytes = MetricFamily::new(
        "xdpguard_log_sessions_bytes",
        Kind::Gauge,
        "About how much memory the remembered sessions take.",
    );
    sessions_bytes.add(&[], stats.sessions_bytes);
    let mut session_events = MetricFamily::new(
        "xdpguard_log_session_events_total",
        Kind::Counter,
        "Multi-line rules' session memory: addresses remembered, recalled for a line without one, recalls that found none, sessions evicted for room, scores parked by a line without an address, parked scores a later line took, sessions a `forget` rule ended.",
    );
    for (event, count) in [
        ("remembered", stats.sessions.remembered),
        ("recalled", stats.sessions.recalled),
        ("missed", stats.sessions.missed),
        ("evicted", stats.sessions.evicted),
        ("parked", stats.sessions.parked),
        ("settled", stats.sessions.settled),
        ("forgotten", stats.sessions.forgotten),
    ] {
        session_events.add(&[("event", event)], count);
    }
    let mut refused = MetricFamily::new(
        "xdpguard_log_input_refused_total",
        Kind::Counter,
        "Times an input's path was found to name something it does not read (a FIFO where a file is followed, ...), by input and what was found; each change counts once.",
    );
    for ((input, found), count) in &stats.refused {
        refused.add(&[("input", input), ("reason", found)], *count);
    }
    let mut restarts = MetricFamily::new(
        "xdpguard_log_input_restarts_total",
        Kind::Counter,
        "Child processes of an input (journalctl) started again after an exit, by input.",
    );
    for (input, count) in &stats.restarts {
        restarts.add(&[("input", input)], *count);
    }
    let mut exits = MetricFamily::new(
        "xdpguard_log_input_exits_total",
        Kind::Counter,
        "Child processes of an input (journalctl) that exited or could not be started, by input.",
    );
    for (input, count) in &stats.exits {
        exits.add(&[("input", input)], *count);
    }
    let mut open = MetricFamily::new(
        "xdpguard_log_input_open",
        Kind::Gauge,
        "1 while an input is open and read; 0 while its file is missing or refused, its stream ended, or its child is being restarted.",
    );
    for (input, value) in &stats.open {
        open.add(&[("input", input)], *value);
    }
    exposition::render(vec![
        lines,
        truncated,
        matches,
        scored,
        ambiguous,
        ruleset_lines,
        ruleset_scored,
        ruleset_blocks,
        sessions,
        sessions_bytes,
        session_events,
        refused,
        restarts,
        exits,
        open,
    ])
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Two inputs, one rule that matched.
    pub(crate) fn stats() -> LogStats {
        LogStats {
            lines: BTreeMap::from([("auth".into(), 7), ("nginx".into(), 3)]),
            truncated: BTreeMap::from([("auth".into(), 1)]),
            matches: BTreeMap::from([(("sshd".into(), "failed password".into()), 4)]),
            scored_addresses: 2,
            ambiguous: BTreeMap::from([("nginx".into(), 5)]),
            rulesets: BTreeMap::from([(
                "sshd".into(),
                crate::detect::logs::RulesetCounts {
                    lines: 6,
                    scored: 4,
                    blocks: 1,
                },
            )]),
            sessions: crate::detect::logs::correlate::SessionStats {
                tracked: 3,
                remembered: 9,
                recalled: 4,
                missed: 1,
                evicted: 2,
                parked: 0,
                settled: 0,
                forgotten: 1,
            },
            sessions_bytes: 600,
            refused: BTreeMap::from([(("auth".into(), "fifo".into()), 1)]),
            restarts: BTreeMap::from([("journal".into(), 3)]),
            exits: BTreeMap::from([("journal".into(), 4)]),
            open: BTreeMap::from([("auth".into(), 0), ("journal".into(), 1)]),
        }
    }

    #[test]
    fn render_names_inputs_and_rules() {
        let logs = render(&stats());
        assert!(logs.contains(r#"xdpguard_log_lines_total{input="auth"} 7"#));
        assert!(
            logs.contains(r#"xdpguard_log_matches_total{rule="failed password",ruleset="sshd"} 4"#)
        );
        assert!(logs.contains("xdpguard_log_lines_truncated_total{input=\"auth\"} 1\n"));
        assert!(logs.contains("xdpguard_scored_addresses 2\n"));
        assert!(
            logs.contains("xdpguard_log_input_refused_total{input=\"auth\",reason=\"fifo\"} 1\n")
        );
        assert!(logs.contains("xdpguard_log_input_restarts_total{input=\"journal\"} 3\n"));
        assert!(logs.contains("xdpguard_log_input_exits_total{input=\"journal\"} 4\n"));
        assert!(logs.contains("xdpguard_log_input_open{input=\"auth\"} 0\n"));
        assert!(logs.contains("xdpguard_log_ambiguous_lines_total{ruleset=\"nginx\"} 5\n"));
        assert!(logs.contains("xdpguard_log_sessions 3\n"));
        assert!(logs.contains("xdpguard_ruleset_blocks_total{ruleset=\"sshd\"} 1\n"));
        assert!(logs.contains("xdpguard_ruleset_scored_total{ruleset=\"sshd\"} 4\n"));
        assert!(logs.contains("xdpguard_log_session_events_total{event=\"recalled\"} 4\n"));
        assert!(logs.contains("xdpguard_log_session_events_total{event=\"evicted\"} 2\n"));
    }
}
