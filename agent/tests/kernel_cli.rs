//! The command line as scripts and systemd use it, against a real daemon in the sandbox:
//! `--json` on every command, the documented exit statuses, `list --ip`, colours, journal
//! priorities and the watchdog. Needs root; run by `cargo xtask test`.
use std::{path::Path, process::Output, time::Duration};

use xdpguard_testkit::{
    daemon::{Daemon, Workdir},
    netns::{FW_IF, Sandbox},
    xdpguard_binary,
};

fn setup(tag: &str, metrics_port: u16) -> (Sandbox, Workdir) {
    let sandbox = Sandbox::new(tag);
    let workdir = Workdir::new(tag, xdpguard_binary!());
    workdir.write_config(FW_IF, metrics_port, "");
    (sandbox, workdir)
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The one JSON document on standard output.
fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("stdout is not one JSON document ({err}): {}", said(out)))
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn every_command_answers_json_with_the_documented_exit_status() {
    let (sandbox, workdir) = setup("clijson", 19_501);

    // 3: no daemon. The JSON error says so too.
    let out = workdir.cli(&["status"]);
    assert_eq!(code(&out), 3, "{}", said(&out));
    let out = workdir.cli(&["--json", "list"]);
    assert_eq!(code(&out), 3);
    let answer = json(&out);
    assert_eq!(answer["exit_code"], 3);
    assert!(
        answer["error"].as_str().unwrap().contains("not running"),
        "{answer}"
    );
    // 2: usage, from clap and from the commands' own checks.
    assert_eq!(code(&workdir.cli(&["frobnicate"])), 2);
    assert_eq!(code(&workdir.cli(&["block"])), 2);
    assert_eq!(
        code(&workdir.cli(&["--json", "run", "--config", "/nonexistent"])),
        2
    );
    // 1: an error (a configuration that does not exist).
    let out = workdir.cli(&["--json", "config", "--config", "/nonexistent/xdpguard.toml"]);
    assert_eq!(code(&out), 1);
    assert_eq!(json(&out)["exit_code"], 1);

    let daemon = Daemon::start(&sandbox, &workdir);
    let out = daemon.cli(&["--json", "block", "203.0.113.66", "--reason", "scan"]);
    assert_eq!(code(&out), 0, "{}", said(&out));
    let answer = json(&out);
    assert_eq!(answer["result"], "applied");
    assert_eq!(answer["applied"], 1);
    let out = daemon.cli(&["block", "--json", "203.0.113.64/28"]);
    assert_eq!(code(&out), 0, "{}", said(&out));

    // 4: refused, with what was refused in the answer.
    assert_eq!(code(&daemon.cli(&["allow", "203.0.113.77"])), 0);
    let out = daemon.cli(&["--json", "block", "203.0.113.77"]);
    assert_eq!(code(&out), 4, "{}", said(&out));
    let answer = json(&out);
    assert_eq!(
        answer["refused"][0]["prefix"], "203.0.113.77/32",
        "{answer}"
    );
    let out = daemon.cli(&["--json", "block", "0.0.0.0/1"]);
    assert_eq!(code(&out), 4, "{}", said(&out));

    // list --ip: every entry that covers the address, most specific first.
    let covering = json(&daemon.cli(&["--json", "list", "--ip", "203.0.113.66"]));
    let prefixes: Vec<&str> = covering
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["203.0.113.66/32", "203.0.113.64/28"]);
    let none = json(&daemon.cli(&["--json", "list", "--ip", "198.51.100.200"]));
    assert_eq!(none, serde_json::json!([]));
    let explained = json(&daemon.cli(&["--json", "explain", "203.0.113.66"]));
    assert_eq!(explained[0]["prefix"], "203.0.113.66/32", "{explained}");
    assert_eq!(explained[0]["reason"], "scan", "{explained}");
    assert_eq!(explained[1]["prefix"], "203.0.113.64/28", "{explained}");
    let text = said(&daemon.cli(&["list", "--ip", "203.0.113.66"]));
    assert!(
        text.lines().nth(1).unwrap().contains("203.0.113.66/32"),
        "{text}"
    );

    // The rest of the commands, each one JSON document.
    let status = json(&daemon.cli(&["status", "--json"]));
    assert!(
        status["lists"].as_array().is_some_and(|l| !l.is_empty()),
        "{status}"
    );
    let top = daemon.cli(&["--json", "top"]);
    assert_eq!(code(&top), 0, "{}", said(&top));
    let _: serde_json::Value = json(&top);
    let removed = json(&daemon.cli(&["--json", "unblock", "203.0.113.66", "198.51.100.9"]));
    assert_eq!(removed["result"], "removed");
    assert_eq!(removed["removed"], 1);
    assert_eq!(removed["missing"][0], "198.51.100.9/32", "{removed}");
    let removed = json(&daemon.cli(&["--json", "unallow", "203.0.113.77"]));
    assert_eq!(removed["removed"], 1);
    let config = workdir.config();
    let config = config.to_str().unwrap();
    let valid = json(&daemon.cli(&["--json", "config", "--config", config]));
    assert_eq!(valid["valid"], true);
    let shown = daemon.cli(&["--json", "config", "--show", "--config", config]);
    assert_eq!(code(&shown), 0, "{}", said(&shown));
    let _: serde_json::Value = json(&shown);
    // detach while the daemon runs: refused.
    let out = daemon.cli(&["--json", "detach", "--config", config]);
    assert_eq!(code(&out), 4, "{}", said(&out));
    assert_eq!(json(&out)["exit_code"], 4);

    // Offline tools.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let rulesets = workspace.join("rulesets");
    let lint = daemon.cli(&["--json", "lint", rulesets.to_str().unwrap()]);
    assert_eq!(code(&lint), 0, "{}", said(&lint));
    assert_eq!(json(&lint)["findings"], serde_json::json!([]));
    let sample = workspace.join("rulesets/samples/sshd.log");
    let check = json(&daemon.cli(&[
        "--json",
        "check",
        "--ruleset",
        rulesets.join("sshd.toml").to_str().unwrap(),
        sample.to_str().unwrap(),
    ]));
    assert!(check.is_object(), "{check}");
    let filter = Path::new("/etc/fail2ban/filter.d/sshd.conf");
    if filter.exists() {
        let converted = json(&daemon.cli(&["--json", "import-fail2ban", filter.to_str().unwrap()]));
        assert!(
            converted["rulesets"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{converted}"
        );
        assert!(!converted["toml"].as_str().unwrap().is_empty());
    }

    // Colours: asked for, or on a terminal (script(1) gives one) unless NO_COLOR.
    let coloured = said(&daemon.cli(&["--color", "always", "list"]));
    assert!(coloured.contains("\x1b[1mKIND"), "{coloured:?}");
    assert!(
        !said(&daemon.cli(&["list"])).contains('\x1b'),
        "not a terminal"
    );
    let on_terminal = |no_color: Option<&str>| -> String {
        let mut command = std::process::Command::new("script");
        let _ = command
            .args(["-qec"])
            .arg(format!(
                "{} --socket {} list",
                workdir.binary.display(),
                workdir.socket().display()
            ))
            .arg("/dev/null")
            .env_remove("NO_COLOR")
            .env("TERM", "xterm");
        if let Some(value) = no_color {
            let _ = command.env("NO_COLOR", value);
        }
        said(&command.output().expect("script (util-linux)"))
    };
    assert!(
        on_terminal(None).contains("\x1b[1mKIND"),
        "{:?}",
        on_terminal(None)
    );
    assert!(
        !on_terminal(Some("1")).contains('\x1b'),
        "{:?}",
        on_terminal(Some("1"))
    );
    drop(daemon);
}

/// Under systemd standard error is the journal: lines carry `<N>` priorities and no time of
/// their own. A `JOURNAL_STREAM` that names another stream changes nothing.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn journal_lines_carry_syslog_priorities() {
    let (sandbox, workdir) = setup("cljournal", 19_502);
    // A pipe input where a regular file is: a warning at start.
    let pipe = workdir.path.join("auth.pipe");
    std::fs::write(&pipe, "not a pipe\n").unwrap();
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    let rulesets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets");
    workdir.add_log_scoring(
        &rulesets.canonicalize().unwrap(),
        &format!(
            "\n[[inputs]]\nname = \"auth\"\npipe = \"{}\"\nrulesets = [\"sshd\"]\n",
            pipe.display()
        ),
    );
    let daemon = Daemon::start_as_journal_stream(&sandbox, &workdir);
    // A broken configuration on reload: an error.
    std::fs::write(workdir.config(), "nonsense = [\n").unwrap();
    daemon.signal(libc::SIGHUP);
    let seen = xdpguard_testkit::daemon::eventually(Duration::from_secs(20), || {
        daemon.stderr().contains("reload refused")
    });
    let lines = daemon.stderr();
    assert!(seen, "{lines}");
    let warning = lines
        .lines()
        .find(|l| l.contains("input auth:"))
        .unwrap_or_else(|| panic!("no warning in:\n{lines}"));
    assert!(warning.starts_with("<4>input auth: "), "{warning}");
    let error = lines
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap();
    assert!(error.starts_with("<3>reload refused"), "{error}");
    let info = lines
        .lines()
        .find(|l| l.contains("running; control socket"))
        .unwrap();
    assert!(info.starts_with("<6>"), "{info}");
    for line in lines.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.len() > 3 && line.starts_with('<') && line.as_bytes()[2] == b'>',
            "every line has a priority and no time: {line:?}"
        );
    }
    drop(daemon);

    // Another stream's identity: plain lines with their own time.
    std::fs::write(workdir.config(), &config).unwrap();
    let daemon =
        Daemon::start_with_env(&sandbox, &workdir, &[("JOURNAL_STREAM", Path::new("1:1"))]);
    let lines = daemon.stderr();
    let info = lines
        .lines()
        .find(|l| l.contains("decisions in"))
        .expect("a line");
    assert!(info.starts_with('['), "{info}");
    drop(daemon);
}

/// `WatchdogSec=`: WATCHDOG=1 keeps coming while the owner and the log thread turn; not for
/// a WATCHDOG_PID that is not the daemon's.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn watchdog_is_fed_while_the_threads_turn() {
    let (sandbox, workdir) = setup("clwatchdog", 19_503);
    let notify_path = workdir.path.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let next = || -> Option<String> {
        let mut buf = [0u8; 512];
        let len = notify.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    };
    let daemon = Daemon::start_with_env(
        &sandbox,
        &workdir,
        &[
            ("NOTIFY_SOCKET", &notify_path),
            ("WATCHDOG_USEC", Path::new("200000")),
        ],
    );
    assert!(next().unwrap().starts_with("READY=1"));
    let mut pings = 0;
    while pings < 5 {
        let message = next().expect("WATCHDOG=1 within 10 s");
        if message == "WATCHDOG=1" {
            pings += 1;
        }
    }
    // While a command is served too.
    assert!(daemon.cli(&["block", "203.0.113.9"]).status.success());
    assert_eq!(next().as_deref(), Some("WATCHDOG=1"));
    assert!(daemon.stop().success());
    while next().is_some_and(|m| m != "STOPPING=1") {}

    // WATCHDOG_PID names another process: no watchdog.
    notify
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let daemon = Daemon::start_with_env(
        &sandbox,
        &workdir,
        &[
            ("NOTIFY_SOCKET", &notify_path),
            ("WATCHDOG_USEC", Path::new("200000")),
            ("WATCHDOG_PID", Path::new("1")),
        ],
    );
    assert!(next().unwrap().starts_with("READY=1"));
    assert_eq!(next(), None, "no WATCHDOG=1 in 2 s");
    drop(daemon);
}
