//! The report as plain text for a terminal: one row per bin, then the top lists and the
//! anomalies.
use std::fmt::Write as _;

use crate::{
    history::model::{Ranking, Summary},
    report::{html::anomaly_kind, markup},
};

/// The summary as aligned text tables.
pub fn render(summary: &Summary) -> String {
    let mut out = format!(
        "{} to {} in bins of {}, from {}\n\n",
        markup::Utc::of(summary.since).full(),
        markup::Utc::of(summary.until).full(),
        markup::duration(summary.bin_seconds),
        summary.from
    );
    let mut header = vec![
        "BIN".to_owned(),
        "DROPPED".to_owned(),
        "PASSED".to_owned(),
        "IN LOCAL".to_owned(),
        "IN EXTERNAL".to_owned(),
    ];
    for ruleset in &summary.rulesets {
        header.push(format!("{ruleset} SOURCES"));
        header.push(format!("{ruleset} /24+/64"));
    }
    let mut rows = vec![header];
    for bin in &summary.bins {
        let mut row = vec![
            markup::Utc::of(bin.start).full(),
            markup::grouped(bin.packets.dropped_v4 + bin.packets.dropped_v6),
            markup::grouped(bin.packets.passed_v4 + bin.packets.passed_v6),
            markup::bytes(bin.traffic.inbound_local),
            markup::bytes(bin.traffic.inbound_external),
        ];
        for ruleset in &summary.rulesets {
            let found = bin.rulesets.iter().find(|r| &r.ruleset == ruleset);
            let floor = if found.is_some_and(|r| r.truncated) {
                "≥"
            } else {
                ""
            };
            row.push(format!("{floor}{}", found.map_or(0, |r| r.sources)));
            row.push(format!("{floor}{}", found.map_or(0, |r| r.networks)));
        }
        rows.push(row);
    }
    out.push_str(&table(&rows));
    for (ranking, title) in [
        (Ranking::OriginByDrops, "Top origin ASes by drops"),
        (Ranking::PrefixByDrops, "Top blocked prefixes by drops"),
        (Ranking::OriginByVolume, "Top origin ASes by volume"),
        (Ranking::PrefixByVolume, "Top source prefixes by volume"),
    ] {
        let mut rows = vec![vec![
            "KEY".to_owned(),
            "PACKETS".to_owned(),
            "BYTES".to_owned(),
            "ORIGIN".to_owned(),
        ]];
        for row in summary.top.iter().filter(|row| row.ranking == ranking) {
            rows.push(vec![
                row.key.clone(),
                markup::grouped(row.packets),
                markup::bytes(row.bytes),
                match (&row.origin, &row.announced) {
                    (Some(origin), Some(announced)) => format!("{origin} ({announced})"),
                    (Some(origin), None) => origin.clone(),
                    _ => "-".to_owned(),
                },
            ]);
        }
        if rows.len() > 1 {
            let _ = write!(out, "\n{title}:\n{}", table(&rows));
        }
    }
    if !summary.anomalies.is_empty() {
        let mut rows = vec![vec![
            "PREFIX".to_owned(),
            "KIND".to_owned(),
            "FLOWS".to_owned(),
            "BYTES".to_owned(),
        ]];
        for anomaly in &summary.anomalies {
            rows.push(vec![
                anomaly.prefix.clone(),
                anomaly_kind(anomaly.kind),
                markup::grouped(anomaly.flows),
                markup::bytes(anomaly.bytes),
            ]);
        }
        let _ = write!(out, "\nUnusual flows:\n{}", table(&rows));
    }
    out
}

/// Columns padded to their widest cell (counted in characters).
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c + 1 == row.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::model::{Bin, RulesetBin, TopRow};

    #[test]
    fn one_row_per_bin_with_each_rulesets_counts_and_the_top_lists() {
        let summary = Summary {
            from: "history:/x".into(),
            since: 0,
            until: 7200,
            bin_seconds: 3600,
            bins: vec![
                Bin {
                    start: 0,
                    seconds: 3600,
                    rulesets: vec![RulesetBin {
                        ruleset: "sshd".into(),
                        sources: 17,
                        networks: 9,
                        origins: 0,
                        truncated: true,
                    }],
                    ..Bin::default()
                },
                Bin {
                    start: 3600,
                    seconds: 3600,
                    ..Bin::default()
                },
            ],
            rulesets: vec!["sshd".into()],
            top: vec![TopRow {
                ranking: Ranking::OriginByDrops,
                key: "AS64500".into(),
                packets: 1234,
                bytes: 99,
                origin: None,
                announced: None,
            }],
            anomalies: vec![],
        };
        let text = render(&summary);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].contains("sshd SOURCES") && lines[2].contains("sshd /24+/64"));
        let last_two = |line: &str| {
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            words[words.len() - 2..].to_vec()
        };
        assert_eq!(last_two(lines[3]), ["≥17", "≥9"], "{}", lines[3]);
        assert_eq!(last_two(lines[4]), ["0", "0"], "{}", lines[4]);
        assert!(text.contains("Top origin ASes by drops:\nKEY"), "{text}");
        assert!(text.contains("AS64500"), "{text}");
        assert!(!text.contains("Unusual flows"), "{text}");
    }
}
