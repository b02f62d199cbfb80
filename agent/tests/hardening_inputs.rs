//! Hostile log inputs against the real daemon (issue 10, items 1, 2 and 6): a followed file
//! swapped for a FIFO, the `journalctl` child killed, and a multi-million-line burst. In each
//! the logs thread must keep going, `/metrics` must answer, and the daemon must reload and
//! stop on time. Needs root (namespaces, BPF); run by `cargo xtask test`.
use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use xdpguard::api::control::proto::ListEntry;
use xdpguard_testkit::{
    daemon::{Daemon, Workdir, eventually},
    netns::{FW_IF, Sandbox, Side},
    xdpguard_binary,
};

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn blocked(daemon: &Daemon, prefix: &str) -> bool {
    let entries: Vec<ListEntry> = serde_json::from_str(&ok(&daemon.cli(&[
        "list",
        "--json",
        "--source",
        "ruleset:sshd",
    ])))
    .unwrap();
    entries.iter().any(|e| e.prefix == prefix)
}

fn failed_password(addr: &str) -> String {
    format!("Nov 22 10:00:01 fw sshd[7]: Failed password for root from {addr} port 4242 ssh2\n")
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A sandbox and a work directory whose daemon scores `inputs` (TOML `[[inputs]]` tables)
/// with a copy of the shipped sshd ruleset.
fn setup(tag: &str, metrics_port: u16, inputs: &str) -> (Sandbox, Workdir) {
    let sandbox = Sandbox::new(tag);
    let workdir = Workdir::new(tag, xdpguard_binary!());
    workdir.write_config(FW_IF, metrics_port, "");
    let rulesets = workdir.path.join("rulesets");
    std::fs::create_dir_all(&rulesets).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets/sshd.toml");
    std::fs::copy(shipped, rulesets.join("sshd.toml")).unwrap();
    workdir.add_log_scoring(
        &rulesets,
        &format!("[scoring]\nexclude_local = false\nban = \"1h\"\n{inputs}"),
    );
    (sandbox, workdir)
}

/// GET /metrics on the firewall side, giving up after `limit`: the body (if it came in time)
/// and how long it took.
fn scrape(sandbox: &Sandbox, port: u16, limit: Duration) -> (Option<String>, Duration) {
    sandbox.within(Side::Firewall, || {
        let started = Instant::now();
        let page = (|| {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let mut stream = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
            stream.set_read_timeout(Some(limit)).ok()?;
            write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            answer
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_owned())
        })();
        (page, started.elapsed())
    })
}

/// The value of the sample `name{labels}` (written exactly as on the page), if present.
fn sample(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// SIGTERM, and how long the daemon took to exit.
fn stop_timed(daemon: Daemon) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    let status = daemon.stop();
    (status, started.elapsed())
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
}

/// A process as /proc/PID/stat tells it.
struct Proc {
    pid: u32,
    comm: String,
    state: char,
    ppid: u32,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: split at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Fields after the name, from field 3 (state): state ppid ... utime(14) stime(15).
    Some(Proc {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        cpu_ticks: rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?,
    })
}

fn children_of(parent: u32) -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .filter(|proc| proc.ppid == parent)
        .collect()
}

fn running_journalctl(daemon: u32) -> Option<u32> {
    children_of(daemon)
        .into_iter()
        .find(|p| p.comm == "journalctl" && p.state != 'Z')
        .map(|p| p.pid)
}

/// Share of one CPU the process used over `window`.
fn cpu_share(pid: u32, window: Duration) -> f64 {
    // SAFETY: plain sysconf.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = proc_stat(pid).unwrap().cpu_ticks;
    std::thread::sleep(window);
    let after = proc_stat(pid).unwrap().cpu_ticks;
    (after - before) as f64 / ticks_per_second / window.as_secs_f64()
}

/// `rm auth.log; mkfifo auth.log`: that input is refused (counted, logged) and retried, the
/// other input keeps scoring, `/metrics` answers, SIGHUP reloads and SIGTERM stops; a regular
/// file put back is followed again.
#[test]
#[ignore = "needs root: network namespaces and BPF, run by `cargo xtask test`"]
fn a_followed_file_swapped_for_a_fifo_blinds_nothing() {
    const PORT: u16 = 19_611;
    let (sandbox, workdir) = setup("fifoswap", PORT, "");
    let auth = workdir.path.join("auth.log");
    let other = workdir.path.join("other.log");
    append(&auth, "");
    append(&other, "");
    let config = std::fs::read_to_string(workdir.config()).unwrap()
        + &format!(
            "[[inputs]]\nname = \"auth\"\nfile = \"{}\"\n[[inputs]]\nname = \"other\"\nfile = \"{}\"\n",
            auth.display(),
            other.display()
        );
    std::fs::write(workdir.config(), config).unwrap();
    let daemon = Daemon::start(&sandbox, &workdir);

    std::fs::remove_file(&auth).unwrap();
    mkfifo(&auth);
    // Let the logs thread meet the FIFO before anything else happens.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        append(&other, &failed_password("203.0.113.66"));
    }
    assert!(
        eventually(Duration::from_secs(10), || blocked(
            &daemon,
            "203.0.113.66/32"
        )),
        "the other input stopped scoring: {}",
        daemon.stderr()
    );

    let (page, took) = scrape(&sandbox, PORT, Duration::from_secs(10));
    eprintln!("scrape after the FIFO swap: {took:?}");
    let page = page.expect("/metrics answers");
    assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
    assert_eq!(
        sample(
            &page,
            r#"xdpguard_log_input_refused_total{input="auth",reason="fifo"}"#
        ),
        Some(1),
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"xdpguard_log_input_open{input="auth"}"#),
        Some(0),
        "{page}"
    );
    let stderr = daemon.stderr();
    assert_eq!(
        stderr.matches("is a FIFO").count(),
        1,
        "warned once, naming the file type: {stderr}"
    );
    assert!(
        stderr.contains("input auth") && stderr.contains(&auth.display().to_string()),
        "{stderr}"
    );

    // SIGHUP: the reload goes through (the logs thread takes its command).
    daemon.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || daemon
            .stderr()
            .contains("configuration reloaded")),
        "{}",
        daemon.stderr()
    );

    // A regular file back in its place is followed again, from its start.
    std::fs::remove_file(&auth).unwrap();
    append(&auth, &failed_password("203.0.113.77").repeat(3));
    assert!(
        eventually(Duration::from_secs(10), || blocked(
            &daemon,
            "203.0.113.77/32"
        )),
        "the regular file was not followed again: {}",
        daemon.stderr()
    );
    let (page, _) = scrape(&sandbox, PORT, Duration::from_secs(10));
    assert_eq!(
        sample(
            &page.unwrap_or_default(),
            r#"xdpguard_log_input_open{input="auth"}"#
        ),
        Some(1)
    );

    let (status, took) = stop_timed(daemon);
    eprintln!("SIGTERM to exit: {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
}

/// `kill -9` of the daemon's `journalctl`: the daemon notices, reaps it (no zombie), logs the
/// exit, starts a new one, counts the restart, and does not spin meanwhile.
#[test]
#[ignore = "needs root: network namespaces and BPF, run by `cargo xtask test`"]
fn a_killed_journalctl_is_reaped_and_restarted() {
    const PORT: u16 = 19_612;
    // No journald runs here: `journalctl --follow` over an empty system journal just waits,
    // which is all this needs.
    let (sandbox, workdir) = setup(
        "journalkill",
        PORT,
        "[[inputs]]\nname = \"journal\"\njournal = true\n",
    );
    let daemon = Daemon::start(&sandbox, &workdir);
    let mut first = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            first = running_journalctl(daemon.pid());
            first.is_some()
        }),
        "no journalctl child: {}",
        daemon.stderr()
    );
    let first = first.unwrap();
    // SAFETY: a signal to the daemon's child, which this test found above.
    assert_eq!(
        unsafe { libc::kill(i32::try_from(first).unwrap(), libc::SIGKILL) },
        0
    );

    let share = cpu_share(daemon.pid(), Duration::from_secs(5));
    eprintln!("daemon CPU over 5 s after the kill: {:.1}%", share * 100.0);
    let mut second = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            second = running_journalctl(daemon.pid()).filter(|&pid| pid != first);
            second.is_some()
        }),
        "journalctl was not restarted: {}",
        daemon.stderr()
    );
    let zombies: Vec<u32> = children_of(daemon.pid())
        .into_iter()
        .filter(|p| p.state == 'Z')
        .map(|p| p.pid)
        .collect();
    assert!(zombies.is_empty(), "zombie children {zombies:?}");
    assert!(share < 0.10, "the daemon used {:.1}% CPU", share * 100.0);

    let (page, _) = scrape(&sandbox, PORT, Duration::from_secs(5));
    let page = page.expect("/metrics answers");
    assert!(
        sample(
            &page,
            r#"xdpguard_log_input_restarts_total{input="journal"}"#
        )
        .is_some_and(|n| n >= 1),
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"xdpguard_log_input_exits_total{input="journal"}"#),
        Some(1),
        "{page}"
    );
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("journalctl") && stderr.contains("signal: 9"),
        "the exit is not logged: {stderr}"
    );
    let second = second.unwrap();
    let (status, took) = stop_timed(daemon);
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(
        eventually(Duration::from_secs(2), || proc_stat(second).is_none()),
        "journalctl outlived the daemon"
    );
}

/// Millions of scoring lines appended at once: scrapes during the scoring answer within 2 s,
/// and the daemon stops within a wide bound while lines are still waiting.
#[test]
#[ignore = "needs root: network namespaces and BPF, run by `cargo xtask test`"]
fn scrapes_answer_during_a_five_million_line_burst() {
    const PORT: u16 = 19_613;
    const LINES: usize = 5_000_000;
    let log: PathBuf;
    let (sandbox, workdir) = {
        let (sandbox, workdir) = setup("burst", PORT, "");
        log = workdir.path.join("auth.log");
        append(&log, "");
        let config = std::fs::read_to_string(workdir.config()).unwrap()
            + &format!(
                "[[inputs]]\nname = \"auth\"\nfile = \"{}\"\n",
                log.display()
            );
        std::fs::write(workdir.config(), config).unwrap();
        (sandbox, workdir)
    };
    let daemon = Daemon::start(&sandbox, &workdir);

    // One block of 10,000 lines (200 sources, so the owner sees few orders), written 500 times.
    let block: String = (0..10_000)
        .map(|i| failed_password(&format!("203.0.113.{}", 1 + i % 200)))
        .collect();
    let written = Instant::now();
    {
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for _ in 0..LINES / 10_000 {
            file.write_all(block.as_bytes()).unwrap();
        }
    }
    eprintln!(
        "{LINES} lines ({} MB) written in {:?}",
        (block.len() * (LINES / 10_000)) >> 20,
        written.elapsed()
    );

    let mut slowest = Duration::ZERO;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let (page, took) = scrape(&sandbox, PORT, Duration::from_secs(15));
        slowest = slowest.max(took);
        let lines = page
            .as_deref()
            .and_then(|page| sample(page, r#"xdpguard_log_lines_total{input="auth"}"#));
        eprintln!("scrape: {took:?}, lines scored so far {lines:?}");
        assert!(page.is_some(), "a scrape got no answer in {took:?}");
        assert!(took < Duration::from_secs(2), "a scrape took {took:?}");
        seen.push(lines.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("slowest scrape during the burst: {slowest:?}");
    assert!(
        seen[0] < LINES as u64,
        "scoring was over before the first scrape: the burst tested nothing ({seen:?})"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen[9] > seen[0],
        "the published counts do not move: {seen:?}"
    );
    // The burst was scored, not skipped.
    assert!(eventually(Duration::from_secs(30), || blocked(
        &daemon,
        "203.0.113.1/32"
    )));

    let (status, took) = stop_timed(daemon);
    eprintln!("SIGTERM to exit during the burst: {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
}
