//! The fleet end to end: three agents, each in its own sandbox with real pings against XDP,
//! share decisions through a real JetStream (Debian's nats-server 2.9 in a hub namespace).
//! A block on A (CLI, and one from a log line) drops on B and C; an unblock and an expiry
//! end everywhere; B's allowlist refuses A's block and counts it; with nats-server killed
//! every agent keeps enforcing, and a block made on B meanwhile reaches A and C after the
//! restart; a fourth agent started later holds every live decision when it first answers;
//! hostile values (bad prefix, 0.0.0.0/0, unknown fields, 1 MiB) are counted, never applied.
//! Needs root: run by `cargo xtask test`.
use std::{net::IpAddr, path::Path, process::Output, time::Duration};

use xdpguard_testkit::{
    daemon::{Daemon, Workdir, eventually, http_get},
    nats::NatsHub,
    netns::{FW_IF, FW_V4, Sandbox},
    xdpguard_binary,
};

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A metric's value on an agent's page (0 when absent).
fn metric(sandbox: &Sandbox, port: u16, series: &str) -> u64 {
    http_get(sandbox, port, "/metrics")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Sources every agent's attacker side pings from.
const SOURCES: [&str; 5] = [
    "203.0.113.21",
    "203.0.113.22",
    "203.0.113.23",
    "203.0.113.24",
    "203.0.113.50",
];

/// One agent: its sandbox (with the sources), work directory and daemon.
/// Fields drop in order: the daemon before its work directory (whose bpffs it holds).
struct Agent {
    daemon: Option<Daemon>,
    name: &'static str,
    metrics: u16,
    workdir: Workdir,
    sandbox: Sandbox,
}

impl Agent {
    /// `extra` goes before `[fleet]`, `fleet` into it.
    fn new(hub: &NatsHub, name: &'static str, metrics: u16, extra: &str, fleet: &str) -> Self {
        let sandbox = Sandbox::new(&format!("fleet{name}"));
        for source in SOURCES {
            sandbox.add_source(addr(source));
        }
        let workdir = Workdir::new(&format!("fleet{name}"), xdpguard_binary!());
        let url = hub.link(&sandbox);
        let wait = if fleet.contains("catch_up_timeout") {
            ""
        } else {
            "catch_up_timeout = \"20s\"\n"
        };
        workdir.write_config(
            FW_IF,
            metrics,
            &format!("{extra}\n[fleet]\nservers = [\"{url}\"]\nhost = \"{name}\"\n{wait}{fleet}"),
        );
        Self {
            name,
            metrics,
            sandbox,
            workdir,
            daemon: None,
        }
    }

    fn start(&mut self) {
        self.daemon = Some(Daemon::start(&self.sandbox, &self.workdir));
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.daemon.as_ref().unwrap().cli(args)
    }

    fn passes(&self, source: &str) -> bool {
        self.sandbox.ping(addr(source), FW_V4, 1) == 1
    }

    fn metric(&self, series: &str) -> u64 {
        metric(&self.sandbox, self.metrics, series)
    }

    fn stderr(&self) -> String {
        self.daemon.as_ref().map(Daemon::stderr).unwrap_or_default()
    }
}

const WITHIN: Duration = Duration::from_secs(20);

#[test]
#[ignore = "needs root, BPF and Debian's nats-server: run by `cargo xtask test`"]
fn three_agents_share_blocks_unblocks_and_expiries_through_jetstream() {
    let scratch = Workdir::new("fleethub", xdpguard_binary!());
    let mut hub = NatsHub::start(&scratch.path.join("nats"));
    let auth = scratch.path.join("auth.log");
    std::fs::write(&auth, "").unwrap();
    let rulesets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets");
    let mut a = Agent::new(&hub, "a", 19_541, "", "publish_allows = true\n");
    a.workdir.add_log_scoring(
        &rulesets.canonicalize().unwrap(),
        &format!(
            "\n[scoring]\nexclude_local = false\nban = \"1h\"\n\n[[inputs]]\nname = \"auth\"\nfile = \"{}\"\nrulesets = [\"sshd\"]\n",
            auth.display()
        ),
    );
    let mut b = Agent::new(
        &hub,
        "b",
        19_542,
        "[allowlist]\nprefixes = [\"203.0.113.50\"]\n",
        "",
    );
    let mut c = Agent::new(&hub, "c", 19_543, "", "accept_allows = true\n");
    for agent in [&mut a, &mut b, &mut c] {
        agent.start();
    }
    let others = [&b, &c];
    for agent in [&a, &b, &c] {
        assert!(
            agent.passes("203.0.113.21"),
            "{}: clean at start",
            agent.name
        );
    }

    // A block on A's CLI drops on B and C, as fleet:a, source and reason kept.
    let _ = ok(&a.cli(&[
        "block",
        "203.0.113.21",
        "--for",
        "1h",
        "--reason",
        "scanner",
    ]));
    for agent in others {
        assert!(
            eventually(WITHIN, || !agent.passes("203.0.113.21")),
            "{}: {}",
            agent.name,
            agent.stderr()
        );
        let listed = ok(&agent.cli(&["list", "--source", "fleet:a"]));
        assert!(
            listed.contains("203.0.113.21") && listed.contains("manual: scanner"),
            "{listed}"
        );
    }
    // A block from A's log scoring goes the same way.
    let lines: String = (0..12)
        .map(|i| format!("Dec  3 10:00:{i:02} fw sshd[7]: Failed password for root from 203.0.113.22 port 4242 ssh2\n"))
        .collect();
    std::fs::write(&auth, lines).unwrap();
    assert!(
        eventually(WITHIN, || !a.passes("203.0.113.22")),
        "{}",
        a.stderr()
    );
    for agent in others {
        assert!(
            eventually(WITHIN, || !agent.passes("203.0.113.22")),
            "{}",
            agent.name
        );
        let listed = ok(&agent.cli(&["list", "--source", "fleet:a"]));
        assert!(listed.contains("ruleset:sshd"), "{listed}");
    }

    // Unblocked on A: passes everywhere again.
    let _ = ok(&a.cli(&["unblock", "203.0.113.21"]));
    for agent in others {
        assert!(
            eventually(WITHIN, || agent.passes("203.0.113.21")),
            "{}",
            agent.name
        );
    }
    // A block that expires on A ends on B and C at the same time (each expires it itself).
    let _ = ok(&a.cli(&["block", "203.0.113.23", "--for", "8s"]));
    for agent in others {
        assert!(
            eventually(WITHIN, || !agent.passes("203.0.113.23")),
            "{}",
            agent.name
        );
    }
    for agent in [&a, &b, &c] {
        assert!(
            eventually(WITHIN, || agent.passes("203.0.113.23")),
            "{}: expired",
            agent.name
        );
    }
    // B's allowlist refuses A's block of its allowlisted address, and counts it; C applies it.
    let _ = ok(&a.cli(&["block", "203.0.113.50", "--for", "1h"]));
    assert!(eventually(WITHIN, || !c.passes("203.0.113.50")));
    assert!(eventually(WITHIN, || b.metric(
        "xdpguard_fleet_refused_total{host=\"a\",reason=\"allowlisted\"}"
    ) == 1));
    assert!(
        b.passes("203.0.113.50"),
        "B's allowlist wins over the fleet"
    );
    let status = ok(&b.cli(&["status"]));
    assert!(
        status.contains("fleet") && status.contains(" up "),
        "{status}"
    );

    // nats-server killed: every agent keeps enforcing; B blocks meanwhile.
    hub.stop();
    let _ = ok(&b.cli(&["block", "203.0.113.24", "--for", "1h"]));
    assert!(eventually(WITHIN, || b.metric("xdpguard_fleet_connected") == 0));
    for agent in others {
        assert!(
            !agent.passes("203.0.113.22"),
            "{}: enforcing with NATS down",
            agent.name
        );
    }
    assert!(!b.passes("203.0.113.24"));
    assert!(a.passes("203.0.113.24"), "not shared while NATS is down");
    let status = ok(&b.cli(&["status"]));
    assert!(status.contains("down"), "{status}");
    // Back: B's block reaches A and C; nothing applied twice, nothing lost.
    hub.restart();
    for agent in [&a, &c] {
        assert!(
            eventually(Duration::from_secs(90), || !agent.passes("203.0.113.24")),
            "{}: {}",
            agent.name,
            agent.stderr()
        );
    }
    for agent in [&a, &b, &c] {
        assert!(eventually(WITHIN, || agent
            .metric("xdpguard_fleet_connected")
            == 1));
        assert!(
            agent.metric("xdpguard_fleet_connects_total") >= 2,
            "{}",
            agent.name
        );
    }
    assert!(!b.passes("203.0.113.22") && !c.passes("203.0.113.50"));

    // A fourth agent started later holds every live decision when it first answers.
    // A's allowlist entry: applied where allows are accepted (C refuses a block of it
    // then), left alone and counted where not (B).
    let _ = ok(&a.cli(&["allow", "203.0.113.21"]));
    assert!(eventually(WITHIN, || b.metric(
        "xdpguard_fleet_skipped_total{host=\"a\",reason=\"allow\"}"
    ) == 1));
    assert!(eventually(WITHIN, || {
        ok(&c.cli(&["list", "--source", "fleet:a"]))
            .lines()
            .any(|line| line.contains("203.0.113.21") && line.contains("allow"))
    }));
    let refused = c.cli(&["block", "203.0.113.21", "--for", "1h"]);
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("allowlisted"),
        "{refused:?}"
    );
    let _ = b.cli(&["block", "203.0.113.21", "--for", "1h"]);
    assert!(!b.passes("203.0.113.21"), "B does not take allows");
    let _ = ok(&a.cli(&["unallow", "203.0.113.21"]));
    assert!(eventually(WITHIN, || !ok(
        &c.cli(&["list", "--source", "fleet:a"])
    )
    .contains("203.0.113.21")));
    let _ = ok(&b.cli(&["unblock", "203.0.113.21"]));

    let mut d = Agent::new(&hub, "d", 19_544, "", "");
    d.start();
    let listed = ok(&d.cli(&["list"]));
    for (prefix, host) in [
        ("203.0.113.22", "fleet:a"),
        ("203.0.113.50", "fleet:a"),
        ("203.0.113.24", "fleet:b"),
    ] {
        assert!(
            listed
                .lines()
                .any(|line| line.contains(prefix) && line.contains(host)),
            "{prefix} from {host} at first answer:\n{listed}"
        );
    }
    assert!(!listed.contains("203.0.113.21") && !listed.contains("203.0.113.23"));
    assert!(!d.passes("203.0.113.24"));
    drop(hub);
}

#[test]
#[ignore = "needs root, BPF and Debian's nats-server: run by `cargo xtask test`"]
fn hostile_fleet_values_are_counted_and_refused_never_applied() {
    let scratch = Workdir::new("fleetbad", xdpguard_binary!());
    let hub = NatsHub::start(&scratch.path.join("nats"));
    let mut b = Agent::new(&hub, "b", 19_545, "", "");
    b.start();
    assert!(
        eventually(WITHIN, || b.metric("xdpguard_fleet_connected") == 1),
        "{}",
        b.stderr()
    );
    // Another client of the bucket (an agent gone rogue, or anyone with write access).
    let good = |host: &str, prefix: &str| {
        format!(
            r#"{{"v":1,"host":"{host}","kind":"block","prefix":"{prefix}","source":"manual","reason":"x","created":1,"until":0}}"#
        )
    };
    let values: Vec<(String, Vec<u8>)> = vec![
        // Not a prefix.
        (
            "evil.block.v4.203-0-113-21_32".into(),
            good("evil", "203.0.113.300").into_bytes(),
        ),
        // Everything.
        (
            "evil.block.v4.0-0-0-0_0".into(),
            good("evil", "0.0.0.0/0").into_bytes(),
        ),
        // Unknown fields.
        (
            "evil.block.v4.203-0-113-22_32".into(),
            good("evil", "203.0.113.22")
                .replace("\"v\":1", "\"v\":1,\"force\":true")
                .into_bytes(),
        ),
        // 1 MiB.
        (
            "evil.block.v4.203-0-113-23_32".into(),
            [
                good("evil", "203.0.113.23").as_bytes(),
                &vec![b' '; 1_000_000],
            ]
            .concat(),
        ),
        // Posing as another host under its own key.
        (
            "evil.block.v4.203-0-113-24_32".into(),
            good("a", "203.0.113.24").into_bytes(),
        ),
        // A key that names no decision.
        (
            "evil.drop.all".into(),
            good("evil", "203.0.113.21").into_bytes(),
        ),
        // And one good value, so the test knows the others were read.
        (
            "evil.block.v4.203-0-113-50_32".into(),
            good("evil", "203.0.113.50").into_bytes(),
        ),
    ];
    let url = hub_url_from(&b);
    b.sandbox
        .within(xdpguard_testkit::netns::Side::Firewall, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = async_nats::connect(url).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let kv = js.get_key_value("xdpguard").await.unwrap();
                for (key, value) in values {
                    let _ = kv.put(key, value.into()).await.unwrap();
                }
            });
        });
    assert!(
        eventually(WITHIN, || !b.passes("203.0.113.50")),
        "{}",
        b.stderr()
    );
    for source in [
        "203.0.113.21",
        "203.0.113.22",
        "203.0.113.23",
        "203.0.113.24",
    ] {
        assert!(b.passes(source), "{source} must not be blocked");
    }
    let listed = ok(&b.cli(&["list"]));
    assert_eq!(listed.matches("fleet:").count(), 1, "{listed}");
    for (reason, n) in [
        ("malformed", 1),
        ("too_broad", 1),
        ("unknown_field", 1),
        ("too_large", 1),
        ("key_mismatch", 1),
        ("bad_key", 1),
    ] {
        assert_eq!(
            b.metric(&format!(
                "xdpguard_fleet_refused_total{{host=\"evil\",reason=\"{reason}\"}}"
            )),
            n,
            "{reason}: {}",
            http_get(&b.sandbox, b.metrics, "/metrics").unwrap_or_default()
        );
    }
}

/// The hub's URL as the agent's config names it.
fn hub_url_from(agent: &Agent) -> String {
    let config = std::fs::read_to_string(agent.workdir.config()).unwrap();
    config
        .lines()
        .find_map(|line| line.strip_prefix("servers = [\"")?.strip_suffix("\"]"))
        .unwrap()
        .to_owned()
}

#[test]
#[ignore = "needs root, BPF and Debian's nats-server: run by `cargo xtask test`"]
fn a_password_protected_server_takes_the_right_login_and_says_why_not_the_wrong_one() {
    let scratch = Workdir::new("fleetauth", xdpguard_binary!());
    let password = scratch.path.join("nats.password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let hub = NatsHub::start_with(
        &scratch.path.join("nats"),
        &["--user", "fleet", "--pass", "s3cret"],
    );
    let mut good = Agent::new(
        &hub,
        "a",
        19_546,
        "",
        &format!(
            "user = \"fleet\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    );
    let mut bad = Agent::new(
        &hub,
        "b",
        19_547,
        "",
        "user = \"fleet\"\npassword = \"wrong\"\ncatch_up_timeout = \"1s\"\n",
    );
    good.start();
    bad.start();
    assert!(
        eventually(WITHIN, || good.metric("xdpguard_fleet_connected") == 1),
        "{}",
        good.stderr()
    );
    let _ = ok(&good.cli(&["block", "203.0.113.21", "--for", "1h"]));
    let status = ok(&bad.cli(&["status"]));
    assert!(
        status.contains("fleet")
            && status.contains("down")
            && status.to_lowercase().contains("authorization"),
        "{status}"
    );
    assert_eq!(bad.metric("xdpguard_fleet_connected"), 0);
    assert!(
        bad.passes("203.0.113.21"),
        "nothing reaches an agent that cannot log in"
    );
    assert!(
        bad.stderr().contains("fleet: connecting to"),
        "{}",
        bad.stderr()
    );
}
