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
    exposition::render(vec![lines, truncated, matches, scored])
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
    }
}
