//! The HTML report in a real browser: headless Chromium lays the page out, and its screenshots
//! show every chart drawing its data in several series colours, on a light page in the light
//! scheme and a dark one in the dark scheme; the data embedded in the page reads back as the
//! summary it was made from.
//!
//! The report has no test hooks. To find the charts the test renders a copy of the page with a
//! probe script appended (and the page's Content-Security-Policy, which forbids scripts,
//! taken out), which writes each chart's rectangle and series colours into the DOM; the
//! screenshots are of the page itself.
use std::path::{Path, PathBuf};

use serde_json::Value;
use xdpguard::{
    history::model::{
        Anomaly, AnomalyKind, Bin, PacketCounts, Ranking, RulesetBin, Summary, TopRow, Traffic,
    },
    report::html::{HtmlOptions, render},
};
use xdpguard_testkit::chromium::{self, Rgba, Window};

const WIDTH: u32 = 1100;
const CHART_IDS: [&str; 6] = [
    "chart-sources",
    "chart-networks",
    "chart-packets",
    "chart-traffic",
    "chart-decisions",
    "chart-origins",
];
/// Distinct series colours each chart must show: the stacked charts have four or five
/// series in this summary, the ranking one.
const MIN_COLOURS: [usize; 6] = [3, 3, 3, 3, 3, 1];

/// Writes what the test needs to know about the laid-out page into `<pre id="report-probe">`.
const PROBE: &str = r"<script>
(function () {
  var charts = [];
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    var fills = [];
    svg.querySelectorAll('.series').forEach(function (element) {
      var fill = getComputedStyle(element).fill;
      if (fills.indexOf(fill) < 0) { fills.push(fill); }
    });
    charts.push({ id: svg.id, x: box.left + window.scrollX, y: box.top + window.scrollY,
      width: box.width, height: box.height, fills: fills });
  });
  var probe = document.createElement('pre');
  probe.id = 'report-probe';
  probe.textContent = JSON.stringify({
    charts: charts,
    width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
    background: getComputedStyle(document.body).backgroundColor,
    dark: matchMedia('(prefers-color-scheme: dark)').matches
  });
  document.body.appendChild(probe);
})();
</script>";

/// A two-day report of hourly bins with a daily rhythm: five rulesets, traffic both ways,
/// decisions from several kinds of source, ranked origins and prefixes, and anomalies.
fn realistic_summary() -> Summary {
    let since = 1_714_521_600; // 2024-05-01 00:00 UTC
    let hours = 48u64;
    let rulesets = ["dovecot", "nginx-auth", "postfix", "sshd", "wordpress"];
    // A daily swell peaking in the evening, 1..=10.
    let rhythm = |hour: u64| 1 + (hour + 6) % 24 * (24 - (hour + 6) % 24) / 15;
    let bins = (0..hours)
        .map(|hour| {
            let level = rhythm(hour);
            Bin {
                start: since + hour * 3600,
                seconds: 3600,
                packets: PacketCounts {
                    dropped_v4: 40_000 * level,
                    dropped_v6: 9_000 * level,
                    passed_v4: 250_000 + 5_000 * level,
                    passed_v6: 60_000,
                    dropped_bytes: 3_000_000 * level,
                    passed_bytes: 200_000_000,
                },
                traffic: Traffic {
                    inbound_local: 80_000_000,
                    inbound_external: 150_000_000 + 20_000_000 * level,
                    outbound_local: 60_000_000,
                    outbound_external: 120_000_000,
                },
                decisions: vec![
                    (String::from("fleet:web1"), 3 * level),
                    (String::from("manual"), hour % 5),
                    (String::from("ruleset:nginx-auth"), 4 * level),
                    (String::from("ruleset:sshd"), 6 * level),
                    (String::from("volume:flood"), 2 + level),
                ],
                rulesets: rulesets
                    .iter()
                    .zip(1u64..)
                    .map(|(name, weight)| RulesetBin {
                        ruleset: (*name).to_owned(),
                        sources: 20 * weight * level,
                        networks: 12 * weight * level,
                        origins: 3 * weight,
                        truncated: false,
                    })
                    .collect(),
            }
        })
        .collect();
    let mut top = Vec::new();
    for rank in 0..12u64 {
        top.push(TopRow {
            ranking: Ranking::OriginByDrops,
            key: format!("AS{}", 64_500 + rank),
            packets: 900_000 / (rank + 1),
            bytes: 60_000_000 / (rank + 1),
            origin: None,
            announced: None,
        });
        top.push(TopRow {
            ranking: Ranking::PrefixByDrops,
            key: format!("203.0.{}.0/24", 100 + rank),
            packets: 500_000 / (rank + 1),
            bytes: 30_000_000 / (rank + 1),
            origin: Some(format!("AS{}", 64_500 + rank % 4)),
            announced: Some(format!("203.0.{}.0/22", 100 + rank / 4 * 4)),
        });
    }
    top.push(TopRow {
        ranking: Ranking::OriginByVolume,
        key: String::from("{AS64500,AS64501}"),
        packets: 10_000,
        bytes: 9_000_000_000,
        origin: None,
        announced: None,
    });
    let anomalies = [
        AnomalyKind::Reflection(123),
        AnomalyKind::Reflection(1900),
        AnomalyKind::Reflection(53),
        AnomalyKind::Reflection(11211),
        AnomalyKind::Reflection(389),
        AnomalyKind::OneWay,
    ]
    .into_iter()
    .zip(1u64..)
    .map(|(kind, n)| Anomaly {
        prefix: format!("198.51.100.{}/32", n * 7),
        kind,
        flows: 1000 / n,
        bytes: 4_000_000 / n,
    })
    .collect();
    Summary {
        from: String::from("history:/var/lib/xdpguard/history.sqlite"),
        since,
        until: since + hours * 3600,
        bin_seconds: 3600,
        bins,
        rulesets: rulesets.iter().map(|name| (*name).to_owned()).collect(),
        top,
        anomalies,
    }
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("xdpguard-report-html-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The text of the element that `opening` (its start tag up to the attribute that finds it)
/// begins, up to `closing`.
fn element_text<'a>(dom: &'a str, opening: &str, closing: &str) -> Option<&'a str> {
    let at = dom.find(opening)?;
    let start = at + dom[at..].find('>')? + 1;
    let end = start + dom[start..].find(closing)?;
    Some(&dom[start..end])
}

/// HTML text back to what it says (the serialiser escapes only these in text).
fn unescape_text(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// `rgb(47, 109, 181)` as its channels.
fn rgb(text: &str) -> [u8; 3] {
    let inner = text
        .trim()
        .strip_prefix("rgb(")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not an rgb() colour: {text}"));
    let channels: Vec<u8> = inner
        .split(',')
        .map(|channel| channel.trim().parse().unwrap())
        .collect();
    [channels[0], channels[1], channels[2]]
}

fn close(pixel: [u8; 4], colour: [u8; 3], tolerance: u8) -> bool {
    pixel[..3]
        .iter()
        .zip(colour)
        .all(|(a, b)| a.abs_diff(b) <= tolerance)
}

/// Rec. 601 luma, 0..=255.
fn luma(colour: [u8; 3]) -> u32 {
    (299 * u32::from(colour[0]) + 587 * u32::from(colour[1]) + 114 * u32::from(colour[2])) / 1000
}

struct ChartBox {
    id: String,
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
    fills: Vec<[u8; 3]>,
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "checked finite, non-negative and under u32::MAX first"
)]
fn pixel_coordinate(value: &Value) -> u32 {
    let value = value.as_f64().unwrap().round();
    assert!(
        value.is_finite() && (0.0..f64::from(u32::MAX)).contains(&value),
        "{value}"
    );
    value as u32
}

fn chart_boxes(probe: &Value) -> Vec<ChartBox> {
    probe["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chart| {
            let (x, y) = (pixel_coordinate(&chart["x"]), pixel_coordinate(&chart["y"]));
            ChartBox {
                id: chart["id"].as_str().unwrap().to_owned(),
                x0: x,
                y0: y,
                x1: x + pixel_coordinate(&chart["width"]),
                y1: y + pixel_coordinate(&chart["height"]),
                fills: chart["fills"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|fill| rgb(fill.as_str().unwrap()))
                    .collect(),
            }
        })
        .collect()
}

/// Every chart of `image` drew its data: a good share of its rectangle is not background, and
/// several of its series colours cover real areas.
fn check_charts(image: &Rgba, probe: &Value, scheme: &str) {
    let background = rgb(probe["background"].as_str().unwrap());
    let corner = image.get(2, 2).unwrap();
    assert!(
        close(corner, background, 2),
        "{scheme}: the page's corner {corner:?} is not its background {background:?}"
    );
    let boxes = chart_boxes(probe);
    let ids: Vec<&str> = boxes.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, CHART_IDS, "{scheme}");
    for (chart, min_colours) in boxes.iter().zip(MIN_COLOURS) {
        assert!(
            chart.x1 <= image.width && chart.y1 <= image.height,
            "{scheme}: {} lies outside the screenshot",
            chart.id
        );
        let mut drawn = 0u64;
        let mut per_fill = vec![0u64; chart.fills.len()];
        for y in chart.y0..chart.y1 {
            for x in chart.x0..chart.x1 {
                let pixel = image.get(x, y).unwrap();
                if !close(pixel, background, 8) {
                    drawn += 1;
                }
                for (count, fill) in per_fill.iter_mut().zip(&chart.fills) {
                    if close(pixel, *fill, 3) {
                        *count += 1;
                    }
                }
            }
        }
        let area = u64::from(chart.x1 - chart.x0) * u64::from(chart.y1 - chart.y0);
        assert!(area > 0, "{scheme}: {} has no area", chart.id);
        eprintln!(
            "{scheme} {}: {drawn} of {area} pixels drawn, series colours {per_fill:?}",
            chart.id
        );
        // Axes, labels and legend alone cover a few percent; the data covers far more.
        assert!(
            drawn * 100 >= area * 8,
            "{scheme}: only {drawn} of {area} pixels of {} differ from the background",
            chart.id
        );
        // A colour counts as drawn when it covers at least 0.5% of the chart.
        let shown = per_fill
            .iter()
            .filter(|count| **count * 200 >= area)
            .count();
        assert!(
            shown >= min_colours,
            "{scheme}: {} shows {shown} series colours of {:?} (pixels {per_fill:?}), wanted {min_colours}",
            chart.id,
            chart.fills
        );
        // Between them the series colours cover a good part of the chart.
        let coloured: u64 = per_fill.iter().sum();
        assert!(
            coloured * 100 >= area * 5,
            "{scheme}: series colours cover {coloured} of {area} pixels of {}",
            chart.id
        );
    }
}

fn probe_of(dom: &str) -> Value {
    let text = element_text(dom, r#"<pre id="report-probe""#, "</pre>")
        .unwrap_or_else(|| panic!("the probe did not run:\n{dom}"));
    serde_json::from_str(&unescape_text(text)).unwrap()
}

/// `page` with the probe appended and its script-forbidding policy taken out.
fn probe_copy(page: &str) -> String {
    let policy = r#"<meta http-equiv="Content-Security-Policy""#;
    let at = page
        .find(policy)
        .expect("the page has a Content-Security-Policy");
    let end = at + page[at..].find('>').unwrap() + 1;
    let without_policy = format!("{}{}", &page[..at], &page[end..]);
    without_policy.replace("</body>", &format!("{PROBE}\n</body>"))
}

#[test]
#[ignore = "needs Debian's chromium (cargo xtask setup installs it); cargo xtask test runs it"]
fn chromium_draws_every_chart_in_both_schemes() {
    assert!(chromium::available(), "{} is missing", chromium::BINARY);
    let scratch = Scratch::new("render");
    let summary = realistic_summary();
    let page = render(
        &summary,
        &HtmlOptions {
            title: String::from("xdpguard report: web1"),
            generated_at: summary.until + 120,
        },
    );
    let report = scratch.0.join("report.html");
    std::fs::write(&report, &page).unwrap();
    let probed: &Path = &scratch.0.join("probed.html");
    std::fs::write(probed, probe_copy(&page)).unwrap();

    // The page's own policy keeps even an injected script from running.
    let guarded = scratch.0.join("guarded.html");
    std::fs::write(
        &guarded,
        page.replace("</body>", &format!("{PROBE}\n</body>")),
    )
    .unwrap();
    let dom = chromium::dump_dom(
        &guarded,
        Window {
            width: WIDTH,
            height: 900,
            dark: false,
        },
    )
    .unwrap();
    assert!(
        !dom.contains("report-probe\">"),
        "a script ran despite the policy"
    );

    let mut light_fills: Vec<Vec<[u8; 3]>> = Vec::new();
    for dark in [false, true] {
        let scheme = if dark { "dark" } else { "light" };
        let layout = Window {
            width: WIDTH,
            height: 900,
            dark,
        };
        let dom = chromium::dump_dom(probed, layout).unwrap();
        let probe = probe_of(&dom);
        assert_eq!(probe["dark"], Value::Bool(dark), "{scheme}: {probe}");

        // The data the page carries, as the browser parsed it, is the summary.
        let embedded =
            element_text(&dom, r#"id="report-data""#, "</script>").expect("the embedded data");
        let embedded: Value = serde_json::from_str(embedded).unwrap();
        assert_eq!(
            embedded,
            serde_json::to_value(&summary).unwrap(),
            "{scheme}"
        );

        // One window tall enough for the whole page, as wide as the probe's.
        let height = pixel_coordinate(&probe["height"]);
        assert!(
            pixel_coordinate(&probe["width"]) <= WIDTH,
            "{scheme}: the page is wider than the window: {probe}"
        );
        let png = scratch.0.join(format!("{scheme}.png"));
        chromium::screenshot(
            &report,
            &png,
            Window {
                width: WIDTH,
                height,
                dark,
            },
        )
        .unwrap();
        let image = chromium::read_png(&png).unwrap();
        assert_eq!((image.width, image.height), (WIDTH, height), "{scheme}");
        if let Some(keep) = std::env::var_os("XDPGUARD_KEEP_SCREENSHOTS") {
            let _ = std::fs::copy(&png, Path::new(&keep).join(format!("report-{scheme}.png")));
            let _ = std::fs::copy(&report, Path::new(&keep).join("report.html"));
        }

        let background = rgb(probe["background"].as_str().unwrap());
        if dark {
            assert!(luma(background) < 60, "dark background {background:?}");
        } else {
            assert!(luma(background) > 200, "light background {background:?}");
        }
        check_charts(&image, &probe, scheme);

        // The dark scheme recolours the charts too, not only the page.
        let fills: Vec<Vec<[u8; 3]>> = chart_boxes(&probe).into_iter().map(|b| b.fills).collect();
        if dark {
            for (chart, (light, dark)) in CHART_IDS.iter().zip(light_fills.iter().zip(&fills)) {
                assert!(
                    light.iter().zip(dark).all(|(l, d)| l != d),
                    "{chart}: series colours {light:?} light, {dark:?} dark"
                );
            }
        } else {
            light_fills = fills;
        }
    }
}

/// A recorded history of two days of hourly intervals ending now, as the daemon would write
/// it: four rulesets, both families dropped and passed, traffic both ways, three kinds of
/// decision source, ranked origins.
fn record_history(path: &Path) {
    use std::net::{IpAddr, Ipv4Addr};
    use xdpguard::history::{
        model::{IntervalRecord, ScoredSources},
        store::{HistoryStore, StoreSettings},
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut store = HistoryStore::open(path, StoreSettings::default()).unwrap();
    let first = (now / 3600 - 47) * 3600;
    for hour in 0..48u64 {
        // A daily rhythm: busier in the afternoon.
        let load = 1 + (hour % 24).abs_diff(15);
        let scored = ["nginx", "postfix", "sshd", "web"]
            .iter()
            .enumerate()
            .map(|(i, ruleset)| ScoredSources {
                ruleset: (*ruleset).to_owned(),
                addresses: (0..(load * (i as u64 + 2)))
                    .map(|n| {
                        let n = u32::try_from(n + hour * 7).unwrap();
                        IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + (n % 200) + ((n / 40) << 8)))
                    })
                    .collect(),
                overflow: 0,
            })
            .collect();
        store
            .record(&IntervalRecord {
                start: first + hour * 3600,
                seconds: 3600,
                packets: PacketCounts {
                    dropped_v4: 4000 * load,
                    dropped_v6: 1500 * load,
                    passed_v4: 9000,
                    passed_v6: 3000,
                    dropped_bytes: 330_000 * load,
                    passed_bytes: 9_000_000,
                },
                traffic: Traffic {
                    inbound_local: 2_000_000 * load,
                    inbound_external: 3_000_000 * load,
                    outbound_local: 1_500_000 * load,
                    outbound_external: 2_500_000 * load,
                },
                decisions: vec![
                    ("manual".into(), 1),
                    ("ruleset:sshd".into(), load),
                    ("volume:flood".into(), 1 + load / 3),
                ],
                scored,
                top: ["AS64500", "AS64511", "AS64496"]
                    .iter()
                    .enumerate()
                    .map(|(i, origin)| TopRow {
                        ranking: Ranking::OriginByDrops,
                        key: (*origin).to_owned(),
                        packets: 1000 * load / (i as u64 + 1),
                        bytes: 80_000 * load,
                        origin: None,
                        announced: None,
                    })
                    .collect(),
                anomalies: vec![Anomaly {
                    prefix: "198.51.100.0/24".into(),
                    kind: AnomalyKind::Reflection(123),
                    flows: load,
                    bytes: 4800 * load,
                }],
            })
            .unwrap();
    }
}

/// `xdpguard report` itself, over a recorded history: its `--html` page draws every chart
/// and carries the data its `--json` prints.
#[test]
#[ignore = "needs Debian's chromium (cargo xtask setup installs it); cargo xtask test runs it"]
fn the_report_commands_page_draws_a_recorded_history() {
    assert!(chromium::available(), "{} is missing", chromium::BINARY);
    let scratch = Scratch::new("command");
    let history = scratch.0.join("history.sqlite");
    record_history(&history);
    let page_path = scratch.0.join("command.html");
    let report = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xdpguard"))
            .args(["report", "--since", "2d", "--bin", "1h", "--history"])
            .arg(&history)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let _ = report(&["--html", page_path.to_str().unwrap()]);
    let json: Value = serde_json::from_slice(&report(&["--json"])).unwrap();
    let page = std::fs::read_to_string(&page_path).unwrap();
    let probed = scratch.0.join("command-probed.html");
    std::fs::write(&probed, probe_copy(&page)).unwrap();
    let layout = Window {
        width: WIDTH,
        height: 900,
        dark: false,
    };
    let dom = chromium::dump_dom(&probed, layout).unwrap();
    let probe = probe_of(&dom);
    let embedded: Value = serde_json::from_str(
        element_text(&dom, r#"id="report-data""#, "</script>").expect("the embedded data"),
    )
    .unwrap();
    // The two commands ran a moment apart: every bin the JSON has data in is in the page,
    // the same, and so are the rankings.
    let bins = |summary: &Value| -> Vec<Value> {
        summary["bins"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|bin| bin["packets"]["dropped_v4"].as_u64().unwrap() > 0)
            .cloned()
            .collect()
    };
    assert_eq!(bins(&json).len(), 48);
    assert_eq!(bins(&embedded), bins(&json));
    assert_eq!(embedded["top"], json["top"]);
    assert_eq!(embedded["anomalies"], json["anomalies"]);
    assert_eq!(embedded["rulesets"], json["rulesets"]);

    let png = scratch.0.join("command.png");
    chromium::screenshot(
        &page_path,
        &png,
        Window {
            width: WIDTH,
            height: pixel_coordinate(&probe["height"]),
            dark: false,
        },
    )
    .unwrap();
    check_charts(&chromium::read_png(&png).unwrap(), &probe, "light");
}
