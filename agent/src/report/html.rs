//! The report as one self-contained HTML page with SVG charts.
//!
//! Nothing is fetched: the stylesheet is inline, the charts are inline SVG drawn here, and a
//! Content-Security-Policy forbids scripts and every load, so a page carrying names from
//! untrusted logs can do nothing but be read. The summary itself is embedded as JSON
//! (`<script type="application/json" id="report-data">`), the same JSON `report --json`
//! prints, for whoever wants the numbers back out of the page.
use std::{collections::BTreeSet, fmt::Write as _};

use super::{
    markup::{Utc, bytes, duration, escape, grouped},
    svg::{BarChart, OTHER_CLASS, Series, Shape, TimeChart, Unit, fold_series},
};
use crate::history::model::{AnomalyKind, Bin, Ranking, Summary, TopRow};

/// What the page says besides the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtmlOptions {
    /// The page's title and heading.
    pub title: String,
    /// When the report was made, Unix seconds (shown in the header).
    pub generated_at: u64,
}

/// Origin ASes drawn in the ranking chart; the tables list every row of the summary.
const ORIGINS_CHARTED: usize = 15;

const STYLE: &str = r#"
:root {
  color-scheme: light dark;
  --bg: #ffffff; --fg: #1d2430; --muted: #5b6574; --grid: #e3e7ec; --frame: #c3cad3;
  --stripe: #f4f6f8; --accent: #2b5fab;
  --s0: #2f6db5; --s1: #e8871e; --s2: #3a9a48; --s3: #cf3a3a;
  --s4: #7d55b8; --s5: #8c5a3c; --s6: #d454a4; --s7: #a3a31c; --other: #8d949e;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14171c; --fg: #dde2e8; --muted: #97a1ad; --grid: #2a3039; --frame: #465060;
    --stripe: #1b1f26; --accent: #7fb0f0;
    --s0: #5b9be6; --s1: #f3a24b; --s2: #62c06f; --s3: #ef6a6a;
    --s4: #a786e0; --s5: #c28e6a; --s6: #ee82c4; --s7: #cfcf4f; --other: #6f7781;
  }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 24px; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { max-width: 1000px; margin: 0 auto; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
header dt { color: var(--muted); }
header dd { margin: 0; overflow-wrap: anywhere; }
figure { margin: 20px 0; }
svg.chart { display: block; max-width: 100%; height: auto; font: 12px system-ui, sans-serif; }
svg.chart text { fill: var(--fg); }
svg.chart .chart-title { font-size: 15px; font-weight: 600; }
svg.chart .axis text, svg.chart .note, svg.chart .date { fill: var(--muted); }
svg.chart .empty { fill: var(--muted); font-size: 15px; }
svg.chart .grid { stroke: var(--grid); stroke-width: 1; }
svg.chart .baseline, svg.chart .tick { stroke: var(--muted); stroke-width: 1; }
svg.chart .frame { fill: none; stroke: var(--frame); stroke-dasharray: 4 3; }
.s0 { fill: var(--s0); } .s1 { fill: var(--s1); } .s2 { fill: var(--s2); }
.s3 { fill: var(--s3); } .s4 { fill: var(--s4); } .s5 { fill: var(--s5); }
.s6 { fill: var(--s6); } .s7 { fill: var(--s7); } .other { fill: var(--other); }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; text-align: right; border-bottom: 1px solid var(--grid);
  white-space: nowrap; }
th { color: var(--muted); font-weight: 600; position: sticky; top: 0; background: var(--bg); }
th.text, td.text { text-align: left; }
th { white-space: normal; }
tbody tr:nth-child(even) { background: var(--stripe); }
td.none { text-align: center; color: var(--muted); }
.scroll { max-height: 480px; overflow: auto; }
p.note { color: var(--muted); margin: 4px 0; }
"#;

/// The whole page.
pub fn render(summary: &Summary, options: &HtmlOptions) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let title = escape(&options.title);
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="color-scheme" content="light dark">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
"#
    );
    header(&mut page, summary, options);
    charts(&mut page, summary);
    tables(&mut page, summary);
    let _ = write!(
        page,
        "</main>\n<script type=\"application/json\" id=\"report-data\">{}</script>\n</body>\n</html>\n",
        embedded_json(summary)
    );
    page
}

/// The summary's JSON, safe as the text of a `<script>` element: `<` only ever appears in
/// JSON strings, where `\u003c` means the same, so neither `</script>` nor `<!--` can occur.
pub fn embedded_json(summary: &Summary) -> String {
    // Serialising plain structs with string keys cannot fail; `null` keeps the page valid
    // should that ever change.
    serde_json::to_string(summary)
        .unwrap_or_else(|_| String::from("null"))
        .replace('<', "\\u003c")
}

fn header(page: &mut String, summary: &Summary, options: &HtmlOptions) {
    let range = if summary.until > summary.since {
        format!(
            "{} \u{2013} {} ({})",
            Utc::of(summary.since).full(),
            Utc::of(summary.until).full(),
            duration(summary.until - summary.since)
        )
    } else {
        String::from("empty")
    };
    let _ = write!(
        page,
        "<header>\n<h1>{}</h1>\n<dl>\n<dt>Range</dt><dd>{}</dd>\n<dt>Bin size</dt><dd>{}</dd>\n<dt>From</dt><dd>{}</dd>\n<dt>Generated</dt><dd>{}</dd>\n</dl>\n</header>\n",
        escape(&options.title),
        escape(&range),
        escape(&duration(summary.bin_seconds)),
        escape(&summary.from),
        escape(&Utc::of(options.generated_at).full())
    );
}

/// Every ruleset of the summary: its own list, then any a bin names that the list missed.
fn ruleset_names(summary: &Summary) -> Vec<String> {
    let mut names = summary.rulesets.clone();
    let listed: BTreeSet<&str> = summary.rulesets.iter().map(String::as_str).collect();
    let extra: BTreeSet<&str> = summary
        .bins
        .iter()
        .flat_map(|bin| bin.rulesets.iter().map(|r| r.ruleset.as_str()))
        .filter(|name| !listed.contains(name))
        .collect();
    names.extend(extra.into_iter().map(str::to_owned));
    names
}

/// One series per ruleset of what `measure` reads from its entry in each bin (0 when absent),
/// folded to the palette.
fn per_ruleset(
    summary: &Summary,
    names: &[String],
    measure: impl Fn(&crate::history::model::RulesetBin) -> u64,
) -> Vec<Series> {
    let named = names
        .iter()
        .map(|name| {
            let values = summary
                .bins
                .iter()
                .map(|bin| {
                    bin.rulesets
                        .iter()
                        .find(|r| &r.ruleset == name)
                        .map_or(0, &measure)
                })
                .collect();
            (name.clone(), values)
        })
        .collect();
    fold_series(named, "rulesets")
}

/// A series of a fixed chart: its name, palette class, and what it reads from a bin.
type FixedSeries = (&'static str, &'static str, fn(&Bin) -> u64);

fn fixed_series(summary: &Summary, parts: &[FixedSeries]) -> Vec<Series> {
    parts
        .iter()
        .map(|(name, class, read)| Series {
            name: (*name).to_owned(),
            class: (*class).to_owned(),
            values: summary.bins.iter().map(read).collect(),
        })
        .collect()
}

fn packet_series(summary: &Summary) -> Vec<Series> {
    fixed_series(
        summary,
        &[
            ("dropped IPv4", "s3", |bin| bin.packets.dropped_v4),
            ("dropped IPv6", "s1", |bin| bin.packets.dropped_v6),
            ("passed IPv4", "s0", |bin| bin.packets.passed_v4),
            ("passed IPv6", "s2", |bin| bin.packets.passed_v6),
        ],
    )
}

fn traffic_series(summary: &Summary) -> Vec<Series> {
    fixed_series(
        summary,
        &[
            ("inbound, local", "s0", |bin| bin.traffic.inbound_local),
            ("inbound, external", "s1", |bin| {
                bin.traffic.inbound_external
            }),
            ("outbound, local", "s2", |bin| bin.traffic.outbound_local),
            ("outbound, external", "s4", |bin| {
                bin.traffic.outbound_external
            }),
        ],
    )
}

fn decision_series(summary: &Summary) -> Vec<Series> {
    let kinds: BTreeSet<&str> = summary
        .bins
        .iter()
        .flat_map(|bin| bin.decisions.iter().map(|(kind, _)| kind.as_str()))
        .collect();
    let named = kinds
        .into_iter()
        .map(|kind| {
            let values = summary
                .bins
                .iter()
                .map(|bin| {
                    bin.decisions
                        .iter()
                        .filter(|(k, _)| k == kind)
                        .fold(0u64, |sum, (_, count)| sum.saturating_add(*count))
                })
                .collect();
            (kind.to_owned(), values)
        })
        .collect();
    fold_series(named, "source kinds")
}

/// A ranking's rows, largest first by `measure`.
fn ranked(summary: &Summary, ranking: Ranking) -> Vec<&TopRow> {
    let mut rows: Vec<&TopRow> = summary
        .top
        .iter()
        .filter(|row| row.ranking == ranking)
        .collect();
    let by_bytes = matches!(ranking, Ranking::PrefixByVolume | Ranking::OriginByVolume);
    rows.sort_by(|a, b| {
        let (a_key, b_key) = if by_bytes {
            (a.bytes, b.bytes)
        } else {
            (a.packets, b.packets)
        };
        b_key.cmp(&a_key).then_with(|| a.key.cmp(&b.key))
    });
    rows
}

fn charts(page: &mut String, summary: &Summary) {
    let bins: Vec<(u64, u64)> = summary
        .bins
        .iter()
        .map(|bin| (bin.start, bin.seconds))
        .collect();
    let names = ruleset_names(summary);
    let truncated = summary
        .bins
        .iter()
        .any(|bin| bin.rulesets.iter().any(|r| r.truncated));
    let floor_note = truncated.then_some(
        "Some intervals hit the per-ruleset cap of addresses: those bins' counts are a floor.",
    );
    let chart = |id, title, unit, shape, series: &[Series], note| {
        TimeChart {
            id,
            title,
            unit,
            shape,
            since: summary.since,
            until: summary.until,
            bin_seconds: summary.bin_seconds,
            bins: &bins,
            series,
            note,
        }
        .render()
    };
    let sources = per_ruleset(summary, &names, |r| r.sources);
    let networks = per_ruleset(summary, &names, |r| r.networks);
    let figures = [
        chart(
            "chart-sources",
            "Unique sources per bin, by ruleset",
            Unit::Count,
            Shape::Area,
            &sources,
            floor_note,
        ),
        chart(
            "chart-networks",
            "Unique /24 (IPv4) and /64 (IPv6) networks per bin, by ruleset",
            Unit::Count,
            Shape::Area,
            &networks,
            floor_note,
        ),
        chart(
            "chart-packets",
            "Packets dropped and passed per bin",
            Unit::Count,
            Shape::Bars,
            &packet_series(summary),
            None,
        ),
        chart(
            "chart-traffic",
            "Traffic per bin, local and external",
            Unit::Bytes,
            Shape::Bars,
            &traffic_series(summary),
            None,
        ),
        chart(
            "chart-decisions",
            "Decisions per bin, by source kind",
            Unit::Count,
            Shape::Bars,
            &decision_series(summary),
            None,
        ),
    ];
    for figure in figures {
        let _ = writeln!(page, "<figure>{figure}</figure>");
    }
    let origins: Vec<(String, u64)> = ranked(summary, Ranking::OriginByDrops)
        .into_iter()
        .take(ORIGINS_CHARTED)
        .map(|row| (row.key.clone(), row.packets))
        .collect();
    let origins = BarChart {
        id: "chart-origins",
        title: "Top origin ASes by packets dropped",
        unit: Unit::Count,
        measure: "packets dropped",
        class: "s3",
        rows: &origins,
    }
    .render();
    let _ = writeln!(page, "<figure>{origins}</figure>");
}

/// A table cell: `class` is `text` for left-aligned text, empty for numbers.
fn cell(row: &mut String, class: &str, text: &str) {
    if class.is_empty() {
        let _ = write!(row, "<td>{}</td>", escape(text));
    } else {
        let _ = write!(row, "<td class=\"{class}\">{}</td>", escape(text));
    }
}

/// A table under a heading; `columns` are (heading, class), `rows` already `<tr>` markup.
fn table(page: &mut String, id: &str, heading: &str, columns: &[(&str, &str)], rows: &[String]) {
    let _ = write!(
        page,
        "<section id=\"{id}\">\n<h2>{}</h2>\n<div class=\"scroll\"><table>\n<thead><tr>",
        escape(heading)
    );
    for (name, class) in columns {
        if class.is_empty() {
            let _ = write!(page, "<th>{}</th>", escape(name));
        } else {
            let _ = write!(page, "<th class=\"{class}\">{}</th>", escape(name));
        }
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    if rows.is_empty() {
        let _ = writeln!(
            page,
            "<tr><td class=\"none\" colspan=\"{}\">no data in this range</td></tr>",
            columns.len()
        );
    }
    for row in rows {
        let _ = writeln!(page, "<tr>{row}</tr>");
    }
    page.push_str("</tbody>\n</table></div>\n</section>\n");
}

fn tables(page: &mut String, summary: &Summary) {
    bin_table(page, summary);
    for (ranking, id, heading) in [
        (
            Ranking::OriginByDrops,
            "top-origins-drops",
            "Top origin ASes by packets dropped",
        ),
        (
            Ranking::OriginByVolume,
            "top-origins-volume",
            "Top origin ASes by bytes seen",
        ),
    ] {
        let rows: Vec<String> = ranked(summary, ranking)
            .iter()
            .enumerate()
            .map(|(index, row)| {
                let mut tr = String::new();
                cell(&mut tr, "", &(index + 1).to_string());
                cell(&mut tr, "text", &row.key);
                cell(&mut tr, "", &grouped(row.packets));
                cell(&mut tr, "", &bytes(row.bytes));
                tr
            })
            .collect();
        table(
            page,
            id,
            heading,
            &[
                ("#", ""),
                ("Origin", "text"),
                ("Packets", ""),
                ("Bytes", ""),
            ],
            &rows,
        );
    }
    for (ranking, id, heading) in [
        (
            Ranking::PrefixByDrops,
            "top-prefixes-drops",
            "Top blocked prefixes by packets dropped",
        ),
        (
            Ranking::PrefixByVolume,
            "top-prefixes-volume",
            "Top source prefixes by bytes seen",
        ),
    ] {
        let rows: Vec<String> = ranked(summary, ranking)
            .iter()
            .enumerate()
            .map(|(index, row)| {
                let mut tr = String::new();
                cell(&mut tr, "", &(index + 1).to_string());
                cell(&mut tr, "text", &row.key);
                cell(&mut tr, "text", row.origin.as_deref().unwrap_or("\u{2014}"));
                cell(
                    &mut tr,
                    "text",
                    row.announced.as_deref().unwrap_or("\u{2014}"),
                );
                cell(&mut tr, "", &grouped(row.packets));
                cell(&mut tr, "", &bytes(row.bytes));
                tr
            })
            .collect();
        table(
            page,
            id,
            heading,
            &[
                ("#", ""),
                ("Prefix", "text"),
                ("Origin", "text"),
                ("Announced", "text"),
                ("Packets", ""),
                ("Bytes", ""),
            ],
            &rows,
        );
    }
    let rows: Vec<String> = summary
        .anomalies
        .iter()
        .map(|anomaly| {
            let mut tr = String::new();
            cell(&mut tr, "text", &anomaly.prefix);
            cell(&mut tr, "text", &anomaly_kind(anomaly.kind));
            cell(&mut tr, "", &grouped(anomaly.flows));
            cell(&mut tr, "", &bytes(anomaly.bytes));
            tr
        })
        .collect();
    table(
        page,
        "anomalies",
        "Unusual flows",
        &[
            ("Prefix", "text"),
            ("Kind", "text"),
            ("Flows", ""),
            ("Bytes", ""),
        ],
        &rows,
    );
}

/// `one-way`, or `reflection from NTP (port 123)`.
pub fn anomaly_kind(kind: AnomalyKind) -> String {
    match kind {
        AnomalyKind::OneWay => String::from("one-way (never answered)"),
        AnomalyKind::Reflection(port) => match reflection_service(port) {
            Some(service) => format!("reflection from {service} (port {port})"),
            None => format!("reflection (port {port})"),
        },
    }
}

/// The amplification service behind a reflection source port.
pub const fn reflection_service(port: u16) -> Option<&'static str> {
    match port {
        1900 => Some("SSDP"),
        123 => Some("NTP"),
        53 => Some("DNS"),
        11211 => Some("memcached"),
        389 => Some("CLDAP"),
        _ => None,
    }
}

/// Every bin: its start, the sources of each charted ruleset column, then the sums.
fn bin_table(page: &mut String, summary: &Summary) {
    let names = ruleset_names(summary);
    let columns = per_ruleset(summary, &names, |r| r.sources);
    let kept: BTreeSet<&str> = columns
        .iter()
        .filter(|s| s.class != OTHER_CLASS)
        .map(|s| s.name.as_str())
        .collect();
    let mut headings: Vec<(String, &str)> = vec![(String::from("Bin start (UTC)"), "text")];
    headings.extend(columns.iter().map(|s| (format!("{} sources", s.name), "")));
    for name in ["Networks", "Dropped", "Passed", "Inbound", "Outbound"] {
        headings.push((name.to_owned(), ""));
    }
    let rows: Vec<String> = summary
        .bins
        .iter()
        .enumerate()
        .map(|(index, bin)| {
            let mut tr = String::new();
            cell(&mut tr, "text", &Utc::of(bin.start).full());
            for series in &columns {
                // `≥` where a ruleset in the column hit its cap: the count is a floor.
                let floor = bin.rulesets.iter().any(|r| {
                    r.truncated
                        && if series.class == OTHER_CLASS {
                            !kept.contains(r.ruleset.as_str())
                        } else {
                            r.ruleset == series.name
                        }
                });
                let value = grouped(series.values.get(index).copied().unwrap_or(0));
                let text = if floor {
                    format!("\u{2265}{value}")
                } else {
                    value
                };
                cell(&mut tr, "", &text);
            }
            let networks = bin
                .rulesets
                .iter()
                .fold(0u64, |sum, r| sum.saturating_add(r.networks));
            let p = &bin.packets;
            let t = &bin.traffic;
            cell(&mut tr, "", &grouped(networks));
            cell(
                &mut tr,
                "",
                &grouped(p.dropped_v4.saturating_add(p.dropped_v6)),
            );
            cell(
                &mut tr,
                "",
                &grouped(p.passed_v4.saturating_add(p.passed_v6)),
            );
            cell(
                &mut tr,
                "",
                &bytes(t.inbound_local.saturating_add(t.inbound_external)),
            );
            cell(
                &mut tr,
                "",
                &bytes(t.outbound_local.saturating_add(t.outbound_external)),
            );
            tr
        })
        .collect();
    let headings: Vec<(&str, &str)> = headings
        .iter()
        .map(|(name, class)| (name.as_str(), *class))
        .collect();
    table(page, "bins", "Per bin", &headings, &rows);
    page.push_str(
        "<p class=\"note\">Networks: distinct /24s and /64s per ruleset, summed over the rulesets.</p>\n",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::model::{Anomaly, PacketCounts, RulesetBin, Traffic};

    const HOSTILE: &str = r#"</script><svg onload="alert(1)">'&"#;

    fn options() -> HtmlOptions {
        HtmlOptions {
            title: String::from("xdpguard report"),
            generated_at: 1_714_608_000,
        }
    }

    fn sample() -> Summary {
        let start = 1_714_521_600;
        let rulesets = vec![
            String::from("nginx"),
            String::from("sshd"),
            HOSTILE.to_owned(),
        ];
        let bins = (0..6u64)
            .map(|i| Bin {
                start: start + i * 3600,
                seconds: 3600,
                packets: PacketCounts {
                    dropped_v4: 100 * i,
                    dropped_v6: 10 * i,
                    passed_v4: 1000,
                    passed_v6: 50,
                    dropped_bytes: 6000 * i,
                    passed_bytes: 70_000,
                },
                traffic: Traffic {
                    inbound_local: 1000 + i,
                    inbound_external: 50_000,
                    outbound_local: 300,
                    outbound_external: 9000,
                },
                decisions: vec![(String::from("ruleset:sshd"), i), (HOSTILE.to_owned(), 1)],
                rulesets: rulesets
                    .iter()
                    .map(|name| RulesetBin {
                        ruleset: name.clone(),
                        sources: 3 + i,
                        networks: 2 + i,
                        origins: 1,
                        truncated: i == 2,
                    })
                    .collect(),
            })
            .collect();
        Summary {
            from: format!("logs:{HOSTILE}"),
            since: start,
            until: start + 6 * 3600,
            bin_seconds: 3600,
            bins,
            rulesets,
            top: vec![
                TopRow {
                    ranking: Ranking::OriginByDrops,
                    key: HOSTILE.to_owned(),
                    packets: 500,
                    bytes: 30_000,
                    origin: None,
                    announced: None,
                },
                TopRow {
                    ranking: Ranking::PrefixByDrops,
                    key: String::from("203.0.113.0/24"),
                    packets: 400,
                    bytes: 24_000,
                    origin: Some(String::from("AS64500")),
                    announced: Some(String::from("203.0.112.0/22")),
                },
            ],
            anomalies: vec![
                Anomaly {
                    prefix: String::from("198.51.100.0/24"),
                    kind: AnomalyKind::Reflection(123),
                    flows: 12,
                    bytes: 4800,
                },
                Anomaly {
                    prefix: HOSTILE.to_owned(),
                    kind: AnomalyKind::OneWay,
                    flows: 3,
                    bytes: 180,
                },
            ],
        }
    }

    /// The text of the `report-data` script element.
    fn embedded(page: &str) -> &str {
        let open = r#"<script type="application/json" id="report-data">"#;
        let start = page.find(open).expect("the data script") + open.len();
        let end = start + page[start..].find("</script>").expect("its end");
        &page[start..end]
    }

    #[test]
    fn the_embedded_json_parses_back_to_the_summary() {
        let summary = sample();
        let page = render(&summary, &options());
        let text = embedded(&page);
        assert!(!text.contains('<'), "{text}");
        let back: Summary = serde_json::from_str(text).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn hostile_names_never_become_markup() {
        let page = render(&sample(), &options());
        // The only script element is the data, the only `</script>` its end; no element
        // from the names.
        assert_eq!(page.matches("<script").count(), 1);
        assert_eq!(page.matches("</script>").count(), 1);
        assert!(!page.contains("<svg onload"));
        assert!(page.contains("&lt;/script&gt;&lt;svg onload=&quot;alert(1)&quot;&gt;&#39;&amp;"));
        // The hostile ruleset is charted and tabled, escaped.
        assert!(page.matches("&lt;svg onload").count() >= 4);
    }

    #[test]
    fn every_chart_is_there_with_its_id_and_size() {
        let page = render(&sample(), &options());
        for id in [
            "chart-sources",
            "chart-networks",
            "chart-packets",
            "chart-traffic",
            "chart-decisions",
            "chart-origins",
        ] {
            let at = page
                .find(&format!(r#"<svg class="chart" id="{id}""#))
                .unwrap_or_else(|| panic!("{id}"));
            let tag = &page[at..at + page[at..].find('>').unwrap()];
            for attribute in ["width=\"960\"", "height=\"", "viewBox=\"0 0 960 "] {
                assert!(tag.contains(attribute), "{id}: {tag}");
            }
            let end = at + page[at..].find("</svg>").unwrap();
            let chart = &page[at..end];
            assert!(chart.contains("class=\"series"), "{id} draws no data");
            assert!(chart.contains("class=\"legend\""), "{id}");
            assert!(!chart.contains("no data in this range"), "{id}");
        }
        assert!(!page.contains("NaN"));
        // The floor note and its mark in the table.
        assert!(page.contains("are a floor"));
        assert!(page.contains("\u{2265}5"));
        assert!(page.contains("reflection from NTP (port 123)"));
        assert!(page.contains("203.0.112.0/22") && page.contains("AS64500"));
        // Nothing is loaded from anywhere.
        for fetch in ["http://", "https://", "src=", "@import", "url("] {
            let outside_svg_namespace = page.replace("http://www.w3.org/2000/svg", "");
            assert!(!outside_svg_namespace.contains(fetch), "{fetch}");
        }
    }

    #[test]
    fn an_empty_summary_renders() {
        let summary = Summary::default();
        let page = render(&summary, &options());
        assert!(page.matches("no data in this range").count() >= 6 + 5);
        assert!(!page.contains("NaN") && !page.contains("inf"));
        assert!(!page.contains("class=\"series"));
        let back: Summary = serde_json::from_str(embedded(&page)).unwrap();
        assert_eq!(back, summary);
        // Bins with nothing in them are empty too, not a chart of zeros.
        let mut zeros = sample();
        for bin in &mut zeros.bins {
            *bin = Bin {
                start: bin.start,
                seconds: bin.seconds,
                ..Bin::default()
            };
        }
        zeros.top.clear();
        let page = render(&zeros, &options());
        assert!(!page.contains("class=\"series"));
        assert!(page.matches("no data in this range").count() >= 6);
    }

    #[test]
    fn many_rulesets_fold_into_other() {
        let mut summary = sample();
        let names: Vec<String> = (0..12).map(|i| format!("set{i:02}")).collect();
        for bin in &mut summary.bins {
            bin.rulesets = names
                .iter()
                .enumerate()
                .map(|(i, name)| RulesetBin {
                    ruleset: name.clone(),
                    sources: 1 + u64::try_from(i).unwrap(),
                    ..RulesetBin::default()
                })
                .collect();
        }
        summary.rulesets = names;
        let page = render(&summary, &options());
        let at = page.find(r#"id="chart-sources""#).unwrap();
        let chart = &page[at..at + page[at..].find("</svg>").unwrap()];
        assert!(chart.contains("other (5 more rulesets)"), "{chart}");
        assert!(chart.contains(r#"class="series other""#));
        // The smallest rulesets are the folded ones.
        assert!(!chart.contains(">set00<") && chart.contains(">set11<"));
        assert_eq!(chart.matches("<path class=\"series").count(), 8);
    }
}
