//! Prometheus text exposition (format 0.0.4): the building blocks each component writes its
//! section of the metrics page with.
//!
//! A section is a list of [`MetricFamily`]s turned into text by [`render`]: `# HELP` and
//! `# TYPE` once per family, families in name order, series in label order with label names
//! alphabetical, label values escaped. Families without samples still carry their HELP and
//! TYPE lines. The same data is always the same bytes.
use std::{collections::BTreeMap, fmt::Write as _};

/// The metric types the page uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until a restart); by convention the name ends in `_total`.
    Counter,
    Gauge,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// Label (name, value) pairs, names sorted.
type Labels = Vec<(&'static str, String)>;

/// A metric family: name, type, help, and its series (labels → value), sorted.
#[derive(Debug)]
pub struct MetricFamily {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: BTreeMap<Labels, u64>,
    /// Values are milliseconds, written as seconds (Prometheus wants base units).
    millis_as_seconds: bool,
}

impl MetricFamily {
    pub const fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            samples: BTreeMap::new(),
            millis_as_seconds: false,
        }
    }

    /// A family whose values are added in milliseconds and written in seconds (`1.5`).
    pub const fn seconds_from_millis(mut self) -> Self {
        self.millis_as_seconds = true;
        self
    }

    /// Add `value` to the series with `labels` (in any order; none for a family of one
    /// series). One series per label set, as the format requires: the same labels twice add up.
    pub fn add(&mut self, labels: &[(&'static str, &str)], value: u64) {
        let mut labels: Labels = labels
            .iter()
            .map(|&(name, value)| (name, value.to_owned()))
            .collect();
        labels.sort_unstable_by_key(|&(name, _)| name);
        let total = self.samples.entry(labels).or_default();
        *total = total.saturating_add(value);
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.name());
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            if self.millis_as_seconds && value % 1000 != 0 {
                let fraction = format!("{:03}", value % 1000);
                let _ = writeln!(out, " {}.{}", value / 1000, fraction.trim_end_matches('0'));
            } else if self.millis_as_seconds {
                let _ = writeln!(out, " {}", value / 1000);
            } else {
                let _ = writeln!(out, " {value}");
            }
        }
    }
}

/// A section of the page: `families` in name order, so the same data is the same bytes.
pub fn render(mut families: Vec<MetricFamily>) -> String {
    families.sort_unstable_by_key(|family| family.name);
    let mut out = String::new();
    for family in &families {
        family.write(&mut out);
    }
    out
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text as the format wants it: backslash and newline escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// (name, type) of every `# TYPE` line of a page: what the sections' tests read back.
#[cfg(test)]
pub fn type_lines(page: &str) -> Vec<(&str, &str)> {
    page.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_escapes_backslash_quote_and_newline_in_label_values() {
        let mut packets = MetricFamily::new(
            "xdpguard_top_blocked_packets_total",
            Kind::Counter,
            "Packets dropped by the block entries with the most drops.",
        );
        let mut bytes = MetricFamily::new(
            "xdpguard_top_blocked_bytes_total",
            Kind::Counter,
            "Bytes dropped by the block entries with the most drops.",
        );
        for (prefix, packet_count) in [("a\"b\\c\nd", 5), ("198.51.100.0/24", 4)] {
            packets.add(&[("prefix", prefix)], packet_count);
            bytes.add(&[("prefix", prefix)], packet_count * 10);
        }
        let text = render(vec![packets, bytes]);
        assert!(
            text.contains(r#"xdpguard_top_blocked_packets_total{prefix="a\"b\\c\nd"} 5"#),
            "{text}"
        );
        assert!(text.contains(r#"xdpguard_top_blocked_bytes_total{prefix="a\"b\\c\nd"} 50"#));
        // The raw newline never reaches the page: every line is a comment or a sample.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("xdpguard_"),
                "{line:?}"
            );
        }
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn render_adds_up_samples_with_the_same_labels() {
        let mut decisions = MetricFamily::new(
            "xdpguard_decisions_total",
            Kind::Counter,
            "Decisions applied since the daemon started, by source and action.",
        );
        decisions.add(&[("source", "manual"), ("action", "block")], 3);
        decisions.add(&[("source", "ruleset:sshd"), ("action", "block")], 2);
        decisions.add(&[("action", "block"), ("source", "manual")], 4);
        let text = render(vec![decisions]);
        assert!(text.contains(r#"xdpguard_decisions_total{action="block",source="manual"} 7"#));
        assert_eq!(text.matches(r#"source="manual""#).count(), 1, "{text}");
    }

    #[test]
    fn render_writes_families_in_name_order_with_help_and_type_even_without_samples() {
        let mut full = MetricFamily::new(
            "xdpguard_list_full_errors_total",
            Kind::Counter,
            "Inserts refused because the kernel list was full.",
        );
        full.add(&[], 2);
        let empty = MetricFamily::new("xdpguard_entries", Kind::Gauge, "Entries.");
        assert_eq!(
            render(vec![full, empty]),
            "# HELP xdpguard_entries Entries.\n\
             # TYPE xdpguard_entries gauge\n\
             # HELP xdpguard_list_full_errors_total Inserts refused because the kernel list was full.\n\
             # TYPE xdpguard_list_full_errors_total counter\n\
             xdpguard_list_full_errors_total 2\n"
        );
        assert_eq!(render(Vec::new()), "");
    }

    #[test]
    fn milliseconds_are_written_as_seconds() {
        let mut family = MetricFamily::new("t_seconds", Kind::Gauge, "h").seconds_from_millis();
        family.add(&[("k", "a")], 1500);
        family.add(&[("k", "b")], 2000);
        family.add(&[("k", "c")], 5);
        family.add(&[("k", "d")], 0);
        let text = render(vec![family]);
        assert!(text.contains("t_seconds{k=\"a\"} 1.5\n"), "{text}");
        assert!(text.contains("t_seconds{k=\"b\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds{k=\"c\"} 0.005\n"), "{text}");
        assert!(text.contains("t_seconds{k=\"d\"} 0\n"), "{text}");
    }
}
