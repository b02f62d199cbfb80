//! Human output of the CLI commands (the JSON forms are the control protocol's own types).
use std::fmt::Write as _;

use xdpguard::api::control::proto::{Answer, ListEntry, OriginEntry, Status};

use super::args::ColorChoice;

/// Whether text gets ANSI colours: on a terminal unless `NO_COLOR` is set (no-color.org) or
/// `TERM=dumb`, or as `--color` says. Widths are counted on the plain text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    enabled: bool,
}

impl Style {
    #[cfg(test)]
    pub const PLAIN: Self = Self { enabled: false };

    pub fn choose(choice: ColorChoice, terminal: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Self {
            enabled: match choice {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => terminal && !no_color && !dumb,
            },
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn error(self, text: &str) -> String {
        self.paint("1;31", text)
    }

    /// An entry's kind: blocks red, allowlist entries green.
    fn kind(self, kind: &str) -> String {
        match kind {
            "block" => self.paint("31", kind),
            "allow" => self.paint("32", kind),
            _ => kind.to_owned(),
        }
    }

    fn warn(self, text: &str) -> String {
        self.paint("33", text)
    }
}

/// `1h30m`, `45s`, `2d3h`: the two largest units.
pub fn compact_duration(mut secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut out = String::new();
    let mut shown = 0;
    for (name, size) in units {
        if secs >= size && shown < 2 {
            let _ = write!(out, "{}{name}", secs / size);
            secs %= size;
            shown += 1;
        } else if shown > 0 {
            shown += 1;
        }
    }
    out
}

/// The `list` table.
pub fn format_list(entries: &[ListEntry], now_unix: u64, style: Style) -> String {
    let mut rows = vec![[
        "KIND".to_owned(),
        "PREFIX".to_owned(),
        "SOURCE".to_owned(),
        "EXPIRES IN".to_owned(),
        "PACKETS".to_owned(),
        "BYTES".to_owned(),
        "ORIGIN".to_owned(),
        "REASON".to_owned(),
    ]];
    for entry in entries {
        let remaining = if entry.expires_unix == 0 {
            "never".to_owned()
        } else {
            compact_duration(entry.expires_unix.saturating_sub(now_unix))
        };
        rows.push([
            entry.kind.clone(),
            entry.prefix.clone(),
            entry.source.clone(),
            remaining,
            entry.packets.to_string(),
            entry.bytes.to_string(),
            origin_cell(entry.origin.as_deref(), entry.announced.as_deref()),
            entry.reason.clone(),
        ]);
    }
    table(&rows, style, &|column, cell| {
        if column == 0 {
            style.kind(cell)
        } else {
            cell.to_owned()
        }
    })
}

/// `AS64500 (203.0.113.0/24)`, or `-` where the origins table does not know it.
fn origin_cell(origin: Option<&str>, announced: Option<&str>) -> String {
    match (origin, announced) {
        (Some(origin), Some(announced)) => format!("{origin} ({announced})"),
        (Some(origin), None) => origin.to_owned(),
        _ => "-".to_owned(),
    }
}

/// The length of a prefix as `list` writes it (`203.0.113.0/24`; a host has none).
pub fn prefix_len(prefix: &str) -> u8 {
    match prefix.rsplit_once('/') {
        Some((_, len)) => len.parse().unwrap_or(0),
        None if prefix.contains(':') => 128,
        None => 32,
    }
}

/// `explain ADDR`: the entries that cover it, most specific first, with their evidence.
pub fn format_explain(
    address: std::net::IpAddr,
    origin: Option<&OriginEntry>,
    entries: &[ListEntry],
    now_unix: u64,
    style: Style,
) -> String {
    let mut out = String::new();
    match origin {
        Some(OriginEntry {
            origin: Some(origin),
            announced: Some(announced),
            peers,
            as_set,
            multiple_origins,
            ..
        }) => {
            let _ = write!(
                out,
                "{address} is in {announced}, announced by {origin} (seen by {peers} RIS peers"
            );
            if *as_set {
                out.push_str("; an AS_SET: the true origin is unknown");
            }
            if *multiple_origins {
                out.push_str("; other ASes announce it too");
            }
            out.push_str(")\n");
        }
        Some(_) => {
            let _ = writeln!(
                out,
                "{address}: no announcement in the origins table covers it"
            );
        }
        None => {}
    }
    if entries.is_empty() {
        let _ = writeln!(
            out,
            "{address}: no entry covers it (not blocked, not allowlisted)"
        );
        return out;
    }
    for entry in entries {
        let expires = if entry.expires_unix == 0 {
            "never expires".to_owned()
        } else if entry.expires_unix <= now_unix {
            "expired, about to go".to_owned()
        } else {
            format!(
                "expires in {}",
                compact_duration(entry.expires_unix - now_unix)
            )
        };
        let _ = writeln!(
            out,
            "{address} is covered by {} {} ({}, {expires}, since {} s ago)\n  reason: {}\n  dropped: {} packets, {} bytes",
            style.kind(&entry.kind),
            style.bold(&entry.prefix),
            entry.source,
            now_unix.saturating_sub(entry.created_unix),
            entry.reason,
            entry.packets,
            entry.bytes
        );
        if !entry.evidence.is_empty() {
            out.push_str("  the lines that scored it:\n");
            for line in &entry.evidence {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

/// Columns padded to their widest cell; the first row is the header (bold), `paint` styles
/// a body cell (column, text) after its width is counted.
fn table<const N: usize>(
    rows: &[[String; N]],
    style: Style,
    paint: &dyn Fn(usize, &str) -> String,
) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (r, row) in rows.iter().enumerate() {
        let mut line = String::new();
        let mut pending = 0;
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if cell.is_empty() {
                pending += width + 2;
                continue;
            }
            line.extend(std::iter::repeat_n(' ', pending));
            line.push_str(&if r == 0 {
                style.bold(cell)
            } else {
                paint(i, cell)
            });
            pending = if i + 1 == N {
                0
            } else {
                width - cell.chars().count() + 2
            };
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn plain_table<const N: usize>(rows: &[[String; N]], style: Style) -> String {
    table(rows, style, &|_, cell| cell.to_owned())
}

/// The `status` report.
pub fn format_status(status: &Status, style: Style) -> String {
    let mut out = format!(
        "xdpguard {}{}\n\nInterfaces:\n",
        status.version,
        if status.dry_run {
            " (dry run: matches are counted, not dropped)"
        } else {
            ""
        }
    );
    if status.interfaces.is_empty() {
        out.push_str("  (none)\n");
    }
    for interface in &status.interfaces {
        let _ = writeln!(
            out,
            "  {} (ifindex {}): {} mode",
            interface.name, interface.ifindex, interface.mode
        );
    }
    out.push_str("\nLists:\n");
    let mut rows = vec![[
        "LIST".to_owned(),
        "ENTRIES".to_owned(),
        "CAPACITY".to_owned(),
    ]];
    for list in &status.lists {
        rows.push([
            list.list.clone(),
            list.entries.to_string(),
            list.capacity.to_string(),
        ]);
    }
    for line in plain_table(&rows, style).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out.push_str("\nCounters:\n");
    let mut rows = vec![[
        "INTERFACE".to_owned(),
        "COUNTER".to_owned(),
        "PACKETS".to_owned(),
        "BYTES".to_owned(),
    ]];
    for counter in status.counters.iter().filter(|c| c.packets > 0) {
        rows.push([
            counter.interface.clone(),
            counter.counter.clone(),
            counter.packets.to_string(),
            counter.bytes.to_string(),
        ]);
    }
    for line in plain_table(&rows, style).lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = write!(
        out,
        "\n{} decisions; {} kernel entries without a decision; {} inserts refused by full lists\n",
        status.decisions, status.unknown_entries, status.full_list_errors
    );
    if !status.rulesets.is_empty() {
        out.push_str("\nLog scoring (since start):\n");
        let mut rows = vec![[
            "RULESET".to_owned(),
            "LINES MATCHED".to_owned(),
            "ADDRESSES SCORED".to_owned(),
            "BLOCKS".to_owned(),
        ]];
        for ruleset in &status.rulesets {
            rows.push([
                ruleset.name.clone(),
                ruleset.lines.to_string(),
                ruleset.scored.to_string(),
                ruleset.blocks.to_string(),
            ]);
        }
        for line in plain_table(&rows, style).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !status.peers.is_empty() {
        out.push_str("\nPeers:\n");
        let mut rows = vec![[
            "PEER".to_owned(),
            "STATE".to_owned(),
            "HELD".to_owned(),
            "DETAIL".to_owned(),
        ]];
        for peer in &status.peers {
            let state = if peer.up { "up" } else { "down" };
            let mut detail = peer.detail.clone();
            if let Some(err) = &peer.last_error {
                detail = format!("{detail}; last error: {err}");
            }
            rows.push([
                peer.peer.clone(),
                state.to_owned(),
                peer.held.to_string(),
                detail,
            ]);
        }
        for line in plain_table(&rows, style).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let origins = &status.origins;
    if origins.configured {
        out.push_str("\nOrigins:\n");
        if origins.generation == 0 {
            out.push_str("  not loaded yet\n");
        } else {
            let _ = writeln!(
                out,
                "  {} IPv4 and {} IPv6 announced prefixes, {} MiB, loaded {} ago",
                origins.prefixes_v4,
                origins.prefixes_v6,
                origins.heap_bytes >> 20,
                compact_duration(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |now| now.as_secs())
                        .saturating_sub(origins.loaded_unix)
                )
            );
        }
        if let Some(err) = &origins.last_error {
            let _ = writeln!(out, "  {}: {err}", style.warn("last load failed"));
        }
    }
    out
}

/// `block --asn`: what was blocked, and the refusals summed by reason (an AS may announce
/// hundreds of prefixes; one line each would bury the summary).
pub fn format_asn_outcome(asn: u32, answer: &Answer, style: Style) -> String {
    let Answer::Applied { applied, refused } = answer else {
        return format_outcome(answer, style);
    };
    let mut out = format!(
        "AS{asn}: blocked {applied} of {} announced prefixes\n",
        applied + refused.len() as u64
    );
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> =
        std::collections::BTreeMap::new();
    for refusal in refused {
        by_reason
            .entry(refusal.reason.as_str())
            .or_default()
            .push(refusal.prefix.as_str());
    }
    for (reason, prefixes) in by_reason {
        let shown: Vec<&str> = prefixes.iter().take(5).copied().collect();
        let more = if prefixes.len() > shown.len() {
            format!(", and {} more", prefixes.len() - shown.len())
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {} {}: {reason}: {}{more}",
            style.warn("refused"),
            prefixes.len(),
            shown.join(", ")
        );
    }
    out
}

/// One line for an apply or remove answer; refusals follow, one per line.
pub fn format_outcome(answer: &Answer, style: Style) -> String {
    match answer {
        Answer::Applied { applied, refused } => {
            let mut out = format!("applied {applied}");
            if !refused.is_empty() {
                let _ = write!(
                    out,
                    ", {}",
                    style.warn(&format!("refused {}", refused.len()))
                );
            }
            out.push('\n');
            for refusal in refused {
                let _ = writeln!(
                    out,
                    "  {} {}: {}",
                    style.warn("refused"),
                    refusal.prefix,
                    refusal.reason
                );
            }
            out
        }
        Answer::Removed {
            removed,
            missing,
            refused,
        } => {
            let mut out = format!("removed {removed}\n");
            for prefix in missing {
                let _ = writeln!(out, "  not present: {prefix}");
            }
            for refusal in refused {
                let _ = writeln!(
                    out,
                    "  {} {}: {}",
                    style.warn("refused"),
                    refusal.prefix,
                    refusal.reason
                );
            }
            out
        }
        Answer::Error { message } => format!("error: {message}\n"),
        other => format!("{other:?}\n"),
    }
}

/// `1.28 MB/s`, `512 B/s`: SI units, three significant digits.
pub fn human_rate(value: u64, unit: &str) -> String {
    let prefixes = ["", "k", "M", "G", "T", "P"];
    let mut scaled = value as f64;
    let mut index = 0;
    while scaled >= 1000.0 && index + 1 < prefixes.len() {
        scaled /= 1000.0;
        index += 1;
    }
    if index == 0 {
        format!("{value} {unit}/s")
    } else if scaled >= 100.0 {
        format!("{scaled:.0} {}{unit}/s", prefixes[index])
    } else if scaled >= 10.0 {
        format!("{scaled:.1} {}{unit}/s", prefixes[index])
    } else {
        format!("{scaled:.2} {}{unit}/s", prefixes[index])
    }
}

/// The `top` screen: the last interval's top prefixes per counting source, then the prefixes
/// the detectors hold hot.
pub fn format_top(
    snapshot: &xdpguard::api::control::proto::Top,
    now_unix: u64,
    style: Style,
) -> String {
    let mut out = String::new();
    if snapshot.interval_ms == 0 {
        out.push_str("no volume interval has ended yet\n");
        return out;
    }
    let secs = snapshot.interval_ms as f64 / 1000.0;
    let _ = writeln!(
        out,
        "interval {secs:.1} s, ended {} ago",
        compact_duration(now_unix.saturating_sub(snapshot.ended_unix))
    );
    for totals in &snapshot.totals {
        let per_sec = |value: u64| {
            u64::try_from(u128::from(value) * 1000 / u128::from(snapshot.interval_ms.max(1)))
                .unwrap_or(u64::MAX)
        };
        let _ = write!(
            out,
            "{}: {}, {} from {} sources",
            totals.source,
            human_rate(per_sec(totals.bytes), "B"),
            human_rate(per_sec(totals.packets), "pkt"),
            totals.sources
        );
        if totals.overflow_bytes > 0 {
            let _ = write!(
                out,
                " ({} from untracked sources)",
                human_rate(per_sec(totals.overflow_bytes), "B")
            );
        }
        out.push('\n');
    }
    out.push('\n');
    let mut rows = vec![[
        "SOURCE".to_owned(),
        "PREFIX".to_owned(),
        "BYTES/S".to_owned(),
        "PACKETS/S".to_owned(),
        "ADDRS".to_owned(),
        "SHARE".to_owned(),
        "ACTION".to_owned(),
        "ORIGIN".to_owned(),
    ]];
    for row in &snapshot.top {
        rows.push([
            row.source.clone(),
            row.prefix.clone(),
            human_rate(row.bytes_per_sec, "B"),
            human_rate(row.packets_per_sec, "pkt"),
            row.sources.to_string(),
            format!("{}.{:01}%", row.share_bp / 100, (row.share_bp % 100) / 10),
            match (&row.action, &row.detector) {
                (Some(action), Some(detector)) => format!("{action} ({detector})"),
                _ => "-".to_owned(),
            },
            origin_cell(row.origin.as_deref(), row.announced.as_deref()),
        ]);
    }
    out.push_str(&plain_table(&rows, style));
    if !snapshot.hot.is_empty() {
        out.push('\n');
        let mut hot = vec![[
            "DETECTOR".to_owned(),
            "HOT PREFIX".to_owned(),
            "ACTION".to_owned(),
            "UNTIL".to_owned(),
        ]];
        for row in &snapshot.hot {
            hot.push([
                row.detector.clone(),
                row.prefix.clone(),
                row.action.clone(),
                format!(
                    "in {}",
                    compact_duration(row.until_unix.saturating_sub(now_unix))
                ),
            ]);
        }
        out.push_str(&plain_table(&hot, style));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_two_units() {
        assert_eq!(compact_duration(0), "0s");
        assert_eq!(compact_duration(59), "59s");
        assert_eq!(compact_duration(90), "1m30s");
        assert_eq!(compact_duration(5400), "1h30m");
        assert_eq!(compact_duration(86_400 + 3_600 + 7), "1d1h");
        // The second unit is the next one down, not the next non-zero one.
        assert_eq!(compact_duration(86_400 + 7), "1d");
    }

    #[test]
    fn list_table_shows_remaining_time_and_counters() {
        let entries = [ListEntry {
            kind: "block".into(),
            prefix: "203.0.113.7/32".into(),
            source: "manual".into(),
            reason: "ssh scan".into(),
            created_unix: 100,
            expires_unix: 190,
            packets: 12,
            bytes: 960,
            evidence: Vec::new(),
            origin: Some("AS64500".into()),
            announced: Some("203.0.113.0/24".into()),
        }];
        let text = format_list(&entries, 100, Style::PLAIN);
        let row = text.lines().nth(1).unwrap();
        for part in [
            "block",
            "203.0.113.7/32",
            "manual",
            "1m30s",
            "12",
            "960",
            "AS64500 (203.0.113.0/24)",
            "ssh scan",
        ] {
            assert!(row.contains(part), "{row}");
        }
    }

    #[test]
    fn explain_names_each_covering_entry_and_its_lines() {
        let entries = [ListEntry {
            kind: "block".into(),
            prefix: "203.0.113.7/32".into(),
            source: "ruleset:sshd".into(),
            reason: "log score 15 (ruleset sshd)".into(),
            created_unix: 100,
            expires_unix: 3700,
            packets: 3,
            bytes: 180,
            evidence: vec![
                "Jan  5 01:31:41 h sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2"
                    .into(),
            ],
            origin: None,
            announced: None,
        }];
        let address = "203.0.113.7".parse().unwrap();
        let text = format_explain(address, None, &entries, 100, Style::PLAIN);
        assert!(
            text.starts_with("203.0.113.7 is covered by block 203.0.113.7/32 (ruleset:sshd, expires in 1h, since 0 s ago)\n  reason: log score 15 (ruleset sshd)\n  dropped: 3 packets, 180 bytes\n  the lines that scored it:\n    Jan  5"),
            "{text}"
        );
        assert!(
            format_explain(address, None, &[], 100, Style::PLAIN).contains("no entry covers it")
        );
        let origin = OriginEntry {
            address: "203.0.113.7".into(),
            origin: Some("{AS64500,AS64501}".into()),
            announced: Some("203.0.113.0/24".into()),
            peers: 12,
            as_set: true,
            multiple_origins: false,
        };
        let text = format_explain(address, Some(&origin), &entries, 100, Style::PLAIN);
        assert!(
            text.starts_with("203.0.113.7 is in 203.0.113.0/24, announced by {AS64500,AS64501} (seen by 12 RIS peers; an AS_SET: the true origin is unknown)\n203.0.113.7 is covered by block"),
            "{text}"
        );
        let unknown = OriginEntry {
            origin: None,
            announced: None,
            ..origin
        };
        assert!(
            format_explain(address, Some(&unknown), &[], 100, Style::PLAIN)
                .starts_with("203.0.113.7: no announcement in the origins table covers it\n")
        );
        assert_eq!(prefix_len("203.0.113.0/24"), 24);
        assert_eq!(prefix_len("2001:db8::1"), 128);
    }

    #[test]
    fn colours_wrap_cells_without_moving_the_columns() {
        let entries = [ListEntry {
            kind: "block".into(),
            prefix: "203.0.113.7/32".into(),
            source: "manual".into(),
            reason: String::new(),
            created_unix: 0,
            expires_unix: 0,
            packets: 1,
            bytes: 2,
            origin: None,
            announced: None,
            evidence: Vec::new(),
        }];
        let plain = format_list(&entries, 0, Style::PLAIN);
        let coloured = format_list(&entries, 0, Style { enabled: true });
        assert!(!plain.contains('\x1b'));
        assert!(coloured.starts_with("\x1b[1mKIND\x1b[0m"), "{coloured:?}");
        assert!(coloured.contains("\x1b[31mblock\x1b[0m"), "{coloured:?}");
        // Without the escapes, the same text: widths are counted on the plain cells.
        let stripped = regex::Regex::new("\x1b\\[[0-9;]*m")
            .unwrap()
            .replace_all(&coloured, "");
        assert_eq!(stripped, plain);
        assert_eq!(
            Style::choose(ColorChoice::Always, false),
            Style { enabled: true }
        );
        assert_eq!(Style::choose(ColorChoice::Never, true), Style::PLAIN);
        assert_eq!(Style::choose(ColorChoice::Auto, false), Style::PLAIN);
    }

    #[test]
    fn rates_use_si_units_with_three_digits() {
        assert_eq!(human_rate(512, "B"), "512 B/s");
        assert_eq!(human_rate(1_280_000, "B"), "1.28 MB/s");
        assert_eq!(human_rate(12_800, "pkt"), "12.8 kpkt/s");
        assert_eq!(human_rate(640_000_000, "B"), "640 MB/s");
    }

    #[test]
    fn top_screen_shows_rates_share_action_and_hot_prefixes() {
        use xdpguard::detect::traffic::volume::engine::{
            HotRow, SourceTotals, TopRow, VolumeSnapshot,
        };
        let snapshot = VolumeSnapshot {
            interval_ms: 10_000,
            ended_unix: 1000,
            totals: vec![SourceTotals {
                source: "xdp".into(),
                bytes: 12_850_000,
                packets: 128_500,
                sources: 65,
                ..SourceTotals::default()
            }],
            top: vec![TopRow {
                source: "xdp".into(),
                family: "ipv4".into(),
                prefix: "203.0.113.0/24".into(),
                bytes: 12_800_000,
                packets: 128_000,
                bytes_per_sec: 1_280_000,
                packets_per_sec: 12_800,
                sources: 64,
                share_bp: 9961,
                action: Some("block".into()),
                detector: Some("flood".into()),
                origin: None,
                announced: None,
            }],
            hot: vec![HotRow {
                detector: "flood".into(),
                action: "block".into(),
                prefix: "203.0.113.0/24".into(),
                until_unix: 1600,
            }],
            ..VolumeSnapshot::default()
        };
        let text = format_top(&snapshot, 1003, Style::PLAIN);
        assert!(
            text.starts_with("interval 10.0 s, ended 3s ago\n"),
            "{text}"
        );
        assert!(
            text.contains("xdp: 1.28 MB/s, 12.8 kpkt/s from 65 sources"),
            "{text}"
        );
        let row = text.lines().find(|l| l.starts_with("xdp ")).unwrap();
        for part in [
            "203.0.113.0/24",
            "1.28 MB/s",
            "12.8 kpkt/s",
            "64",
            "99.6%",
            "block (flood)",
        ] {
            assert!(row.contains(part), "{row}");
        }
        assert!(text.contains("in 9m57s"), "{text}");
        assert_eq!(
            format_top(&VolumeSnapshot::default(), 0, Style::PLAIN),
            "no volume interval has ended yet\n"
        );
    }
}
