//! Issue 10, item 5 and the listener parts of 3 and 10: the daemon's two listeners stay
//! available to real clients while others hold connections open, trickle bytes, or send far too
//! much. The real daemon in the sandbox's firewall namespace; needs root (`cargo xtask test`).
use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use xdpguard::api::control::{Answer, proto};
use xdpguard_testkit::{
    daemon::{Daemon, Workdir, eventually, http_get},
    netns::{FW_IF, Sandbox, Side},
    xdpguard_binary,
};

fn setup(tag: &str, metrics_port: u16) -> (Sandbox, Workdir) {
    let sandbox = Sandbox::new(tag);
    let workdir = Workdir::new(tag, xdpguard_binary!());
    workdir.write_config(FW_IF, metrics_port, "");
    (sandbox, workdir)
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A process's peak resident set (`VmHWM` in `/proc/PID/status`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// One connection of the attack: a request head that never ends, a byte at a time.
struct Trickle {
    stream: TcpStream,
    opened: Instant,
    sent: usize,
    /// One of the connections opened first (not a replacement).
    first: bool,
}

const TRICKLE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ";

impl Trickle {
    fn open(addr: SocketAddr, first: bool) -> Option<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(Self {
            stream,
            opened: Instant::now(),
            sent: 0,
            first,
        })
    }

    /// Whether the server has answered or closed (anything readable ends it for the attacker).
    fn closed_by_server(&mut self) -> bool {
        let mut buf = [0_u8; 512];
        !matches!(self.stream.read(&mut buf), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }

    /// The next byte; false when the server no longer takes it.
    fn drip(&mut self) -> bool {
        let byte = TRICKLE.get(self.sent).copied().unwrap_or(b'a');
        match self.stream.write(&[byte]) {
            Ok(1) => {
                self.sent += 1;
                true
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => true,
            _ => false,
        }
    }
}

/// What the attack saw.
struct AttackReport {
    /// How long each connection the server closed had lived.
    closed_lifetimes: Vec<Duration>,
    /// Of the connections opened first, those the server closed.
    first_closed: usize,
    /// Of the connections opened first, those still open when the attack ended.
    first_open: usize,
    opened: usize,
}

/// `count` connections to `addr`, each sending a byte a second; one the server closes is
/// replaced at once, as an attacker keeping the listener busy would. Runs until `stop`, and
/// at most `limit`.
fn slowloris(addr: SocketAddr, count: usize, stop: &AtomicBool, limit: Duration) -> AttackReport {
    let end = Instant::now() + limit;
    let mut live: Vec<Trickle> = (0..count)
        .filter_map(|_| Trickle::open(addr, true))
        .collect();
    let mut report = AttackReport {
        closed_lifetimes: Vec::new(),
        first_closed: 0,
        first_open: 0,
        opened: live.len(),
    };
    let mut next_drip = Instant::now();
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        let drip = Instant::now() >= next_drip;
        if drip {
            next_drip += Duration::from_secs(1);
        }
        let mut replace = 0;
        live.retain_mut(|trickle| {
            let open = !trickle.closed_by_server() && (!drip || trickle.drip());
            if !open {
                report.closed_lifetimes.push(trickle.opened.elapsed());
                report.first_closed += usize::from(trickle.first);
                replace += 1;
            }
            open
        });
        for _ in 0..replace {
            if let Some(trickle) = Trickle::open(addr, false) {
                live.push(trickle);
                report.opened += 1;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    report.first_open = live.iter().filter(|trickle| trickle.first).count();
    report
}

/// One scrape with a 2 s bound on the whole exchange: the page, or why not.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no complete answer within 2 s ({} bytes)",
                answer.len()
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("{err} after {} bytes", answer.len())),
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    if answer.starts_with("HTTP/1.1 200 ") && answer.contains("\nxdpguard_") {
        Ok(answer)
    } else {
        Err(format!(
            "answer: {}",
            answer.lines().next().unwrap_or("(empty)")
        ))
    }
}

/// `sample` of metric `name` with exactly `labels` on `page`.
fn sample(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` (Debian's prometheus package) lints a page or a section of one.
fn promtool_accepts(page: &str) {
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; `cargo xtask setup` installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Slowloris (issue 10, item 5): `count` connections trickling a byte a second, replaced as
/// soon as the server closes them; 60 real scrapes during it all succeed, and the trickling
/// connections are closed by the request deadline.
fn scrapes_survive_slowloris(tag: &str, port: u16, count: usize) {
    let (sandbox, workdir) = setup(tag, port);
    let daemon = Daemon::start(&sandbox, &workdir);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stop = AtomicBool::new(false);
    let (report, results) = sandbox.within(Side::Firewall, || {
        thread::scope(|scope| {
            // The attack is bounded in time even if the scrapes below panic.
            let attack = scope.spawn(|| slowloris(addr, count, &stop, Duration::from_secs(60)));
            // Every attacking connection open, and its first bytes in.
            thread::sleep(Duration::from_secs(2));
            let started = Instant::now();
            let results: Vec<Result<Duration, String>> = (0..60)
                .map(|_| {
                    let asked = Instant::now();
                    let result = scrape(addr).map(|_| asked.elapsed());
                    thread::sleep(Duration::from_millis(100));
                    result
                })
                .collect();
            // Long enough for every first connection to reach its deadline (5 s from accept).
            while started.elapsed() < Duration::from_secs(12) {
                thread::sleep(Duration::from_millis(100));
            }
            stop.store(true, Ordering::SeqCst);
            (attack.join().unwrap(), results)
        })
    });
    let served: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let slowest = served.iter().max().copied().unwrap_or_default();
    let longest_held = report
        .closed_lifetimes
        .iter()
        .max()
        .copied()
        .unwrap_or_default();
    println!(
        "{count} slowloris: {}/60 scrapes answered (slowest {slowest:?}); attack opened {} \
         connections, the server closed {} (longest held {longest_held:?}), {} of the first \
         {count} still open at the end; failures: {:?}",
        served.len(),
        report.opened,
        report.closed_lifetimes.len(),
        report.first_open,
        failures.iter().take(5).collect::<Vec<_>>(),
    );
    assert_eq!(served.len(), 60, "scrapes failed: {failures:?}");
    assert_eq!(
        report.first_open, 0,
        "connections trickling a byte a second outlived the request deadline"
    );
    assert!(
        report.first_closed >= count * 9 / 10,
        "the attack did not get going"
    );
    // The deadline is 5 s from accept; a wide margin over it.
    assert!(longest_held < Duration::from_secs(10), "{longest_held:?}");
    // The page counts them.
    let page = http_get(&sandbox, port, "/metrics").unwrap();
    let timed_out = sample(
        &page,
        "xdpguard_metrics_connections_total{outcome=\"timed_out\"}",
    )
    .unwrap_or_else(|| panic!("no timed_out counter: {page}"));
    assert!(timed_out >= count as u64 * 9 / 10, "timed_out {timed_out}");
    let section: String = page
        .lines()
        .filter(|line| line.contains("xdpguard_metrics_connections_"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(section.lines().count(), 2 + 2 + 8 + 1, "{section}");
    promtool_accepts(&section);
    // And the whole page, every component's section with it.
    promtool_accepts(&page);
    drop(daemon);
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn metrics_answers_60_of_60_scrapes_under_8_slowloris_connections() {
    scrapes_survive_slowloris("lslow8", 19_520, 8);
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn metrics_answers_60_of_60_scrapes_under_300_slowloris_connections() {
    scrapes_survive_slowloris("lslow300", 19_521, 300);
}

/// 64 clients connect to the control socket and send nothing: the CLI still gets its answers
/// at once, and the idle connections are closed at the request deadline.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn control_socket_serves_the_cli_past_64_idle_clients() {
    let (sandbox, workdir) = setup("lidle", 19_522);
    let daemon = Daemon::start(&sandbox, &workdir);
    let opened = Instant::now();
    let idle: Vec<UnixStream> = (0..64)
        .map(|_| UnixStream::connect(workdir.socket()).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(200));
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let asked = Instant::now();
        let output = daemon.cli(&["status"]);
        let took = asked.elapsed();
        slowest = slowest.max(took);
        println!(
            "status past 64 idle clients: {took:?}: {}",
            output_text(&output).lines().next().unwrap_or("")
        );
        assert!(output.status.success(), "{}", output_text(&output));
        // Meant to take milliseconds; wide.
        assert!(took < Duration::from_secs(3), "status took {took:?}");
    }
    // Every idle connection is closed: by the deadline, or shed for the CLI's.
    let mut closed_after = Vec::new();
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rest = Vec::new();
        let ended = stream.read_to_end(&mut rest).is_ok();
        closed_after.push(opened.elapsed());
        assert!(
            ended,
            "an idle control connection was still open after 20 s"
        );
    }
    let last = closed_after.iter().max().copied().unwrap_or_default();
    println!(
        "64 idle clients: slowest status {slowest:?}, the last idle one closed after {last:?}"
    );
    assert!(last < Duration::from_secs(12), "{last:?}");
    drop(daemon);
}

/// A 100 MB request line is refused with a clear error, without the daemon buffering it.
#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn control_request_of_100_mb_is_refused_without_buffering_it() {
    let (sandbox, workdir) = setup("lbig", 19_523);
    let daemon = Daemon::start(&sandbox, &workdir);
    assert!(daemon.cli(&["status"]).status.success());
    let before = peak_rss_kib(daemon.pid());
    let mut stream = UnixStream::connect(workdir.socket()).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // A request that would parse, if it ever ended: a status with 100 MB of padding.
    let mut sent = 0_usize;
    let mut write_error = None;
    let head = b"{\"protocol\":2,\"op\":\"status\",\"padding\":\"";
    if let Err(err) = stream.write_all(head) {
        write_error = Some(err);
    }
    let chunk = vec![b'a'; 64 << 10];
    while write_error.is_none() && sent < 100 << 20 {
        match stream.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(err) => write_error = Some(err),
        }
    }
    if write_error.is_none() {
        let _ = stream.write_all(b"\"}\n");
    }
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    let after = peak_rss_kib(daemon.pid());
    println!(
        "100 MB request: {sent} bytes taken before the daemon stopped reading ({write_error:?}); \
         peak RSS {before} KiB -> {after} KiB (+{} KiB); answer {answer:?} ({read:?})",
        after.saturating_sub(before)
    );
    let decoded = proto::decode::<Answer>(answer.as_bytes()).unwrap();
    let message = match decoded.message.unwrap() {
        Answer::Error { message } => message,
        other => panic!("not an error: {other:?}"),
    };
    assert!(message.contains("too large"), "{message}");
    assert!(
        after.saturating_sub(before) < 40 << 10,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    // Still serving.
    assert!(eventually(Duration::from_secs(5), || daemon
        .cli(&["status"])
        .status
        .success()));
    drop(daemon);
}
