//! `xdpguard report` over a history file: the numbers in `--json` are those recorded, bin by
//! bin; `--html` writes one page whose embedded data is that same JSON; errors name the file.
//! Root-free.
use std::{net::IpAddr, path::PathBuf, process::Command};

use xdpguard::history::{
    model::{IntervalRecord, PacketCounts, Ranking, ScoredSources, TopRow, Traffic},
    store::{HistoryStore, StoreSettings},
};

fn scratch(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("xdpguard-report-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn report(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xdpguard"))
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

fn address(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn json_numbers_are_the_recorded_ones_and_html_embeds_them() {
    let dir = scratch("json");
    let path = dir.join("history.sqlite");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Two whole hours back, one-minute intervals in three of them, so bins split them.
    let hour = (now / 3600 - 2) * 3600;
    let mut store = HistoryStore::open(&path, StoreSettings::default()).unwrap();
    let mut expected_dropped = [0u64; 3];
    let mut expected_sshd: [Vec<IpAddr>; 3] = Default::default();
    for (i, offset) in [60u64, 120, 3600 + 60, 3600 + 600, 7200].iter().enumerate() {
        let start = hour + offset;
        let bin = usize::try_from(offset / 3600).unwrap();
        let sources = vec![
            address(&format!("203.0.113.{}", i + 1)),
            address("198.51.100.7"),
        ];
        expected_dropped[bin] += 10 * (i as u64 + 1);
        expected_sshd[bin].extend(sources.iter().copied());
        store
            .record(&IntervalRecord {
                start,
                seconds: 60,
                packets: PacketCounts {
                    dropped_v4: 10 * (i as u64 + 1),
                    passed_v4: 1000,
                    ..PacketCounts::default()
                },
                traffic: Traffic {
                    inbound_external: 5000,
                    ..Traffic::default()
                },
                decisions: vec![("ruleset:sshd".into(), 1)],
                scored: vec![ScoredSources {
                    ruleset: "sshd".into(),
                    addresses: sources,
                    overflow: 0,
                }],
                top: vec![TopRow {
                    ranking: Ranking::OriginByDrops,
                    key: "AS64500".into(),
                    packets: 3,
                    bytes: 300,
                    origin: None,
                    announced: None,
                }],
                anomalies: vec![],
            })
            .unwrap();
    }
    drop(store);

    let history = path.to_str().unwrap();
    let out = report(&[
        "--history",
        history,
        "--since",
        "3h",
        "--bin",
        "1h",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bins = summary["bins"].as_array().unwrap();
    for (bin, expected) in expected_dropped.iter().enumerate() {
        let found = bins
            .iter()
            .find(|b| b["start"] == hour + 3600 * bin as u64)
            .unwrap_or_else(|| panic!("no bin {bin}: {summary}"));
        assert_eq!(found["packets"]["dropped_v4"], *expected, "{found}");
        let mut distinct = expected_sshd[bin].clone();
        distinct.sort();
        distinct.dedup();
        let sshd = &found["rulesets"][0];
        assert_eq!(sshd["ruleset"], "sshd");
        assert_eq!(sshd["sources"], distinct.len() as u64, "{found}");
        // 198.51.100.0/24 and 203.0.113.0/24.
        assert_eq!(sshd["networks"], 2, "{found}");
    }
    let origin = summary["top"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["key"] == "AS64500")
        .unwrap();
    assert_eq!(origin["packets"], 15, "five intervals of 3");

    let page = dir.join("report.html");
    let out = report(&[
        "--history",
        history,
        "--since",
        "3h",
        "--bin",
        "1h",
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    let start = html
        .find(r#"<script type="application/json" id="report-data">"#)
        .unwrap();
    let data = &html[start..];
    let data = &data[data.find('>').unwrap() + 1..data.find("</script>").unwrap()];
    let embedded: serde_json::Value = serde_json::from_str(data).unwrap();
    // Generated a moment apart, the same range: only `until` may move on by a second.
    assert_eq!(embedded["bins"], summary["bins"]);
    assert_eq!(embedded["top"], summary["top"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_or_foreign_history_is_an_error_naming_it() {
    let dir = scratch("errors");
    let missing = dir.join("none.sqlite");
    let out = report(&["--history", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(missing.to_str().unwrap()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let foreign = dir.join("notes.txt");
    std::fs::write(&foreign, "not a database at all, just some text").unwrap();
    let out = report(&["--history", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.txt"));
    let out = report(&[
        "--history",
        foreign.to_str().unwrap(),
        "--json",
        "--html",
        "/tmp/x.html",
    ]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
