//! The shipped Grafana dashboard and Prometheus alerting rules against the real thing: a
//! daemon in the sandbox with traffic, blocks, log scoring and flow records, scraped by
//! Debian's Prometheus. Every dashboard query must return data, every alert rule must
//! evaluate, and `promtool check rules` must accept the file. Needs root; run by
//! `cargo xtask test`.
use std::{
    net::{IpAddr, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use xdpguard_testkit::{
    daemon::{Children, Daemon, Workdir, eventually, http_get},
    encode::{self, AddressFamily, V9Flow, V9Header, V9Template},
    netns::{FW_IF, FW_V4, FW_V6, Sandbox, Side},
    prometheus::Prometheus,
    xdpguard_binary,
};

const METRICS_PORT: u16 = 19_511;
const PROMETHEUS_PORT: u16 = 19_512;
const FLOW_PORT: u16 = 19_513;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `expr` of the dashboard's panels (rows' nested panels too), with the panel's title.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's variables as a query at this moment sees them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$__interval", "5s")
        .replace("$__range", "5m")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
        .replace("${job}", ".*")
        .replace("$job", ".*")
}

fn encode_query(expr: &str) -> String {
    let mut out = String::new();
    for byte in expr.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// NetFlow v9 from the firewall's loopback to the collector: a template and two records, then
/// a datagram from an unknown template (a decode error the collector counts).
fn send_flows(sandbox: &Sandbox) {
    sandbox.within(Side::Firewall, || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let template = V9Template {
            template_id: 256,
            family: AddressFamily::V4,
            wide_counters: false,
        };
        let header = V9Header {
            source_id: 1,
            ..V9Header::default()
        };
        let flows: Vec<V9Flow> = ["203.0.113.40", "203.0.113.41"]
            .iter()
            .map(|source| V9Flow {
                source: ip(source),
                bytes: 60_000,
                packets: 50,
                ..V9Flow::default()
            })
            .collect();
        let (mut template_datagram, mut data) = (Vec::new(), Vec::new());
        encode::v9_template(header, template, &mut template_datagram);
        encode::v9_data(header, template, &flows, &mut data);
        let mut unknown = Vec::new();
        let other = V9Template {
            template_id: 999,
            ..template
        };
        encode::v9_data(header, other, &flows, &mut unknown);
        for datagram in [&template_datagram, &data, &unknown] {
            let _ = socket.send_to(datagram, ("127.0.0.1", FLOW_PORT)).unwrap();
        }
    });
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn every_dashboard_query_returns_data_and_every_alert_evaluates() {
    let rules = workspace().join("packaging/prometheus/xdpguard-rules.yml");
    let check = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian's prometheus package)");
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("packaging/grafana/xdpguard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "{queries:?}");

    let sandbox = Sandbox::new("dash");
    for source in ["203.0.113.66", "203.0.113.77", "2001:db8:f::66"] {
        sandbox.add_source(ip(source));
    }
    let workdir = Workdir::new("dash", xdpguard_binary!());
    workdir.write_config(
        FW_IF,
        METRICS_PORT,
        &format!(
            r#"
[volume]
interval = "1s"

[volume.flow]
listen = "127.0.0.1:{FLOW_PORT}"
exporters = ["127.0.0.1"]

[[volume.detectors]]
name = "watch"
packets_per_second = 1
action = "report"
"#
        ),
    );
    let log = workdir.path.join("auth.log");
    std::fs::write(&log, "").unwrap();
    workdir.add_log_scoring(
        &workspace().join("rulesets"),
        &format!(
            "[scoring]\nexclude_local = false\n[[inputs]]\nname = \"auth\"\nfile = \"{}\"\nrulesets = [\"sshd\"]\n",
            log.display()
        ),
    );
    let daemon = Daemon::start(&sandbox, &workdir);

    // Traffic both ways of the verdict, both families; a manual block and one from the log.
    assert_eq!(sandbox.ping(ip("203.0.113.77"), FW_V4, 3), 3);
    assert_eq!(sandbox.ping(ip("2001:db8:f::66"), FW_V6, 2), 2);
    assert!(daemon.cli(&["block", "203.0.113.66"]).status.success());
    assert_eq!(sandbox.ping(ip("203.0.113.66"), FW_V4, 3), 0);
    let failed =
        "Nov 22 10:00:01 fw sshd[7]: Failed password for root from 203.0.113.88 port 4242 ssh2\n";
    std::fs::write(&log, failed.repeat(6)).unwrap();
    send_flows(&sandbox);
    // Everything the panels read is on the page: flow records and errors from the exporter,
    // the log's lines, matches and its block.
    let on_page = eventually(Duration::from_secs(30), || {
        http_get(&sandbox, METRICS_PORT, "/metrics").is_some_and(|page| {
            [
                "xdpguard_flow_records_total{exporter=",
                "xdpguard_flow_errors_total{exporter=",
                "xdpguard_log_matches_total{",
                "xdpguard_ruleset_blocks_total{",
                "xdpguard_decisions_total{action=\"block\",source=\"ruleset:sshd\"}",
            ]
            .iter()
            .all(|series| page.contains(series))
        })
    });
    assert!(
        on_page,
        "{}",
        http_get(&sandbox, METRICS_PORT, "/metrics").unwrap_or_default()
    );

    let server = Prometheus::start(
        &sandbox,
        &workdir.path,
        METRICS_PORT,
        PROMETHEUS_PORT,
        &[&rules],
    );
    let api = |path: &str| server.api(&sandbox, path);
    let query = |expr: &str| api(&format!("/api/v1/query?query={}", encode_query(expr)));
    // Enough scrapes for rates over the substituted windows.
    let scraped = eventually(Duration::from_secs(60), || {
        query("count_over_time(xdpguard_build_info[1m])")
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()?
                    .parse::<f64>()
                    .ok()
            })
            .is_some_and(|n| n >= 8.0)
    });
    assert!(scraped, "Prometheus did not scrape: {}", server.log());

    // The volume panels show the last interval: keep a trickle of traffic going while the
    // queries run (bounded: 40 pings, 20 s).
    let _trickle = Children(vec![
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                sandbox.ns(Side::Attacker),
                "ping",
                "-4",
                "-n",
                "-q",
            ])
            .args([
                "-c",
                "40",
                "-i",
                "0.5",
                "-w",
                "20",
                "-I",
                "203.0.113.77",
                FW_V4,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let expr = substitute(expr);
        let answer = query(&expr).unwrap_or_default();
        assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
        let has_data = answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty());
        if !has_data {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );

    // Every rule evaluated without error.
    let healthy = eventually(Duration::from_secs(30), || {
        api("/api/v1/rules").is_some_and(|rules| {
            let groups = rules["data"]["groups"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let all: Vec<&serde_json::Value> = groups
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            !all.is_empty() && all.iter().all(|r| r["health"] == "ok")
        })
    });
    assert!(healthy, "{:?}", api("/api/v1/rules"));
    drop(daemon);
}
