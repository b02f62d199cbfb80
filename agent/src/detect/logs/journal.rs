//! The systemd journal as a log input: `journalctl --follow --output=json` (optionally one
//! unit, or a journal file), each entry turned into the syslog line the rulesets expect
//! (`Mmm dd HH:MM:SS host ident[pid]: message`), and the cursor of the last entry kept so a
//! restart continues exactly after it. `journalctl` is supervised: see [`JournalReader`].
use std::{
    ffi::OsString,
    io::{self, Read as _},
    os::fd::{AsRawFd, RawFd},
    path::PathBuf,
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::detect::logs::input::{Budget, LineSplitter, Progress, set_nonblocking};

/// Which journal, and where to start.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JournalSpec {
    /// Only this unit (`journalctl --unit`); `None`: every entry.
    pub unit: Option<String>,
    /// A journal file instead of the system journal (`journalctl --file`).
    pub file: Option<PathBuf>,
}

/// The wait before a child is started again: `first` after an exit, doubling with each exit
/// after that up to `max`, and back to `first` once a child has run `stable` (it was working:
/// its exit is news, not a crash loop).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    stable: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 60 s; a minute's run resets it.
    fn default() -> Self {
        Self::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
    }
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration, stable: Duration) -> Self {
        Self {
            first,
            max,
            stable,
            next: first,
        }
    }

    /// A child that ran for `ran` exited (or could not start: `ran` zero): how long to wait
    /// before the next start.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= self.stable {
            self.next = self.first;
        }
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }
}

/// At most `burst` messages per `period`; how many were held back is told with the next one
/// let through. A child that writes a line of stderr per entry cannot flood the daemon's log.
#[derive(Clone, Debug)]
pub struct RateLimit {
    period: Duration,
    burst: u32,
    window_start: Option<Instant>,
    used: u32,
    held_back: u64,
}

impl RateLimit {
    pub const fn new(burst: u32, period: Duration) -> Self {
        Self {
            period,
            burst,
            window_start: None,
            used: 0,
            held_back: 0,
        }
    }

    /// Whether a message may go out at `now`: `Some(messages held back before it)`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.window_start {
            Some(start) if now.duration_since(start) < self.period => {}
            _ => {
                self.window_start = Some(now);
                self.used = 0;
            }
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.held_back))
        } else {
            self.held_back += 1;
            None
        }
    }
}

/// A running `journalctl`.
struct Running {
    child: Child,
    stdout: ChildStdout,
    /// `None` once it ended.
    stderr: Option<ChildStderr>,
    stderr_lines: LineSplitter,
    started: Instant,
    /// It exited while output was still waiting in its pipe: read that first.
    exited: Option<ExitStatus>,
}

enum State {
    Running(Running),
    /// Its output ended while it still ran: SIGKILL sent, its exit status collected by a later
    /// poll (never waited for).
    Exiting {
        child: Child,
        ran: Duration,
    },
    /// Waiting out the backoff before the next start.
    Waiting {
        until: Instant,
    },
}

/// The journal input: a supervised `journalctl --follow`. Its output is read without blocking;
/// its stderr is logged (rate-limited); its exit is noticed (end of output, or `try_wait`), the
/// child reaped, and a new one started after a [`Backoff`] from the cursor of the last entry
/// handed out. Exits and restarts are counted.
pub struct JournalReader {
    /// The input's name, for messages.
    input: String,
    spec: JournalSpec,
    from_start: bool,
    /// The program and leading arguments: `journalctl` (the tests put a script there).
    program: Vec<OsString>,
    state: State,
    backoff: Backoff,
    /// Unix seconds the first child started: a later start without a cursor (no entry came)
    /// asks for the entries since then, so none written while it was down are lost.
    first_start_unix: Option<u64>,
    raw: LineSplitter,
    cursor: Option<String>,
    stderr_limit: RateLimit,
    pub bad_entries: u64,
    restarts: u64,
    exits: u64,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mmm dd HH:MM:SS` (UTC) of a Unix time in microseconds.
fn syslog_time(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let name = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!(
        "{name} {day:>2} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A journal JSON entry as a syslog line, and its cursor. `None` for entries without a
/// readable message.
pub fn entry_to_line(json: &[u8]) -> Option<(String, Option<String>)> {
    let entry: serde_json::Value = serde_json::from_slice(json).ok()?;
    let field = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
    // Binary messages come as an array of bytes.
    let message = match entry.get("MESSAGE")? {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => return None,
    };
    // One entry is one line: an embedded newline must not start a line of its own.
    let message = message.replace(['\n', '\r'], " ");
    let micros = field("__REALTIME_TIMESTAMP")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let host = field("_HOSTNAME").unwrap_or("localhost");
    let ident = field("SYSLOG_IDENTIFIER")
        .or_else(|| field("_COMM"))
        .unwrap_or("unknown");
    let line = match field("_PID").or_else(|| field("SYSLOG_PID")) {
        Some(pid) => format!("{} {host} {ident}[{pid}]: {message}", syslog_time(micros)),
        None => format!("{} {host} {ident}: {message}", syslog_time(micros)),
    };
    Some((line, field("__CURSOR").map(str::to_owned)))
}

impl JournalReader {
    fn new(input: &str, spec: &JournalSpec, cursor: Option<&str>, from_start: bool) -> Self {
        Self {
            input: input.to_owned(),
            spec: spec.clone(),
            from_start,
            program: vec!["journalctl".into()],
            state: State::Waiting {
                until: Instant::now(),
            },
            backoff: Backoff::default(),
            first_start_unix: None,
            raw: LineSplitter::default(),
            cursor: cursor.map(str::to_owned),
            // Five lines a minute: enough to say what is wrong, never a flood.
            stderr_limit: RateLimit::new(5, Duration::from_secs(60)),
            bad_entries: 0,
            restarts: 0,
            exits: 0,
        }
    }

    /// Start following: after `cursor` when there is one, else from the end (or from the
    /// start of the journal with `from_start`). A `journalctl` that cannot start is logged and
    /// tried again after the backoff, like one that exits.
    pub fn start(input: &str, spec: &JournalSpec, cursor: Option<&str>, from_start: bool) -> Self {
        let mut reader = Self::new(input, spec, cursor, from_start);
        reader.start_child();
        reader
    }

    /// [`Self::start`], but the first start must succeed.
    ///
    /// # Errors
    /// When `journalctl` cannot be started.
    pub fn spawn(
        input: &str,
        spec: &JournalSpec,
        cursor: Option<&str>,
        from_start: bool,
    ) -> io::Result<Self> {
        let mut reader = Self::new(input, spec, cursor, from_start);
        reader.state = State::Running(reader.launch()?);
        Ok(reader)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program[0]);
        let _: &mut Command = command.args(&self.program[1..]).args([
            "--follow",
            "--output=json",
            "--no-pager",
            "--quiet",
        ]);
        if let Some(unit) = &self.spec.unit {
            let _: &mut Command = command.arg(format!("--unit={unit}"));
        }
        if let Some(file) = &self.spec.file {
            let _: &mut Command = command.arg("--file").arg(file);
        }
        match (&self.cursor, self.first_start_unix) {
            (Some(cursor), _) => {
                let _: &mut Command = command.arg(format!("--after-cursor={cursor}"));
            }
            (None, _) if self.from_start => {
                let _: &mut Command = command.arg("--lines=all");
            }
            // Started before, no entry since: whatever came while it was down.
            (None, Some(since)) => {
                let _: &mut Command =
                    command.args([format!("--since=@{since}"), "--lines=all".into()]);
            }
            (None, None) => {
                let _: &mut Command = command.arg("--lines=0");
            }
        }
        command
    }

    fn launch(&mut self) -> io::Result<Running> {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pipes = child
            .stdout
            .take()
            .zip(child.stderr.take())
            .ok_or_else(|| io::Error::other("no journalctl stdout or stderr"))
            .and_then(|(stdout, stderr)| {
                set_nonblocking(stdout.as_raw_fd())?;
                set_nonblocking(stderr.as_raw_fd())?;
                Ok((stdout, stderr))
            });
        let (stdout, stderr) = match pipes {
            Ok(pipes) => pipes,
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err);
            }
        };
        let _ = self.first_start_unix.get_or_insert(now_unix);
        self.raw.reset();
        Ok(Running {
            child,
            stdout,
            stderr: Some(stderr),
            stderr_lines: LineSplitter::default(),
            started: Instant::now(),
            exited: None,
        })
    }

    /// Start a child now (the first, or one after the backoff); a failure waits the backoff.
    fn start_child(&mut self) {
        let first = self.first_start_unix.is_none();
        match self.launch() {
            Ok(running) => {
                if !first {
                    self.restarts += 1;
                    log::info!(
                        "input {}: journalctl started again (pid {}), {}",
                        self.input,
                        running.child.id(),
                        self.cursor.as_deref().map_or_else(
                            || "no entry read yet".to_owned(),
                            |cursor| format!("after cursor {cursor}")
                        )
                    );
                }
                self.state = State::Running(running);
            }
            Err(err) => {
                // Counted with the exits: either way no journalctl runs.
                self.exits += 1;
                let wait = self.backoff.after_exit(Duration::ZERO);
                log::error!(
                    "input {}: starting journalctl: {err}; trying again in {}",
                    self.input,
                    seconds(wait)
                );
                self.state = State::Waiting {
                    until: Instant::now() + wait,
                };
            }
        }
    }

    /// A child is gone (reaped with `status`): count it, log it, wait the backoff.
    fn exited(&mut self, pid: u32, status: Option<ExitStatus>, ran: Duration) {
        self.exits += 1;
        let wait = self.backoff.after_exit(ran);
        let status = status.map_or_else(|| "exit status unknown".to_owned(), |s| s.to_string());
        log::warn!(
            "input {}: journalctl (pid {pid}) exited after {}: {status}; starting it again in {}",
            self.input,
            seconds(ran),
            seconds(wait)
        );
        self.state = State::Waiting {
            until: Instant::now() + wait,
        };
    }

    /// Move on from exits and waits: collect an exiting child's status, start the next child
    /// when its time came. Never waits.
    fn supervise(&mut self) {
        match &mut self.state {
            State::Running(_) => {}
            State::Exiting { child, ran } => {
                let (pid, ran) = (child.id(), *ran);
                match child.try_wait() {
                    Ok(None) => {}
                    Ok(Some(status)) => self.exited(pid, Some(status), ran),
                    // Nothing left to wait for.
                    Err(_) => self.exited(pid, None, ran),
                }
            }
            State::Waiting { until } => {
                if Instant::now() >= *until {
                    self.start_child();
                }
            }
        }
    }

    /// The descriptors to wait on: only while a child runs (a closed pipe would always be
    /// "ready" and make the waiter spin).
    pub fn wait_fds(&self) -> Vec<RawFd> {
        match &self.state {
            State::Running(running) => std::iter::once(running.stdout.as_raw_fd())
                .chain(running.stderr.as_ref().map(AsRawFd::as_raw_fd))
                .collect(),
            State::Exiting { .. } | State::Waiting { .. } => Vec::new(),
        }
    }

    /// The cursor of the last entry handed out.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Whether a `journalctl` runs now.
    pub const fn is_running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// The running child's pid.
    pub fn child_pid(&self) -> Option<u32> {
        match &self.state {
            State::Running(running) => Some(running.child.id()),
            State::Exiting { .. } | State::Waiting { .. } => None,
        }
    }

    /// Children started after the first.
    pub const fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Children that exited, or could not be started.
    pub const fn exits(&self) -> u64 {
        self.exits
    }

    /// Hand new entries to `line` as syslog lines, one round's [`Budget`] of them; notice an
    /// exited child and start the next one when due.
    ///
    /// # Errors
    /// None so far: a failing read ends the child, which is restarted.
    pub fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<Progress> {
        self.poll_within(&mut Budget::round(), line)
    }

    /// [`Self::poll`] within `budget`.
    ///
    /// # Errors
    /// As [`Self::poll`].
    pub fn poll_within(
        &mut self,
        budget: &mut Budget,
        line: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Progress> {
        self.supervise();
        let State::Running(running) = &mut self.state else {
            return Ok(Progress::CaughtUp);
        };
        let mut chunk = [0u8; 64 << 10];
        let mut entries: Vec<Vec<u8>> = Vec::new();
        let mut progress = Progress::CaughtUp;
        let mut ended = false;
        loop {
            if budget.spent() {
                progress = Progress::MoreWaiting;
                break;
            }
            match running.stdout.read(&mut chunk) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(read) => {
                    budget.take(read);
                    self.raw
                        .feed(&chunk[..read], &mut |json| entries.push(json.to_vec()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("input {}: reading journalctl: {err}", self.input);
                    ended = true;
                    break;
                }
            }
        }
        log_stderr(&self.input, running, &mut self.stderr_limit);
        for json in entries {
            match entry_to_line(&json) {
                Some((text, cursor)) => {
                    line(text.as_bytes());
                    if cursor.is_some() {
                        self.cursor = cursor;
                    }
                }
                None => self.bad_entries += 1,
            }
        }
        if running.exited.is_none() {
            running.exited = running.child.try_wait().ok().flatten();
        }
        // Exited with nothing left to read (what it wrote before it died is read first).
        if ended || (running.exited.is_some() && progress == Progress::CaughtUp) {
            self.child_ended();
        }
        Ok(progress)
    }

    /// The running child's output ended or it exited: reap it, or make it go and reap it on a
    /// later poll.
    fn child_ended(&mut self) {
        let state = std::mem::replace(
            &mut self.state,
            State::Waiting {
                until: Instant::now(),
            },
        );
        let State::Running(mut running) = state else {
            self.state = state;
            return;
        };
        // Its last words.
        log_stderr(&self.input, &mut running, &mut self.stderr_limit);
        let input = &self.input;
        running.stderr_lines.flush(&mut |text| {
            log::warn!(
                "input {input}: journalctl: {}",
                String::from_utf8_lossy(text)
            );
        });
        // A half entry from a stream that ended is not an entry.
        self.raw.reset();
        let ran = running.started.elapsed();
        let pid = running.child.id();
        match running
            .exited
            .or_else(|| running.child.try_wait().ok().flatten())
        {
            Some(status) => self.exited(pid, Some(status), ran),
            None => {
                // Output closed, process still there: it is on its way out; see that it goes.
                let _ = running.child.kill();
                self.state = State::Exiting {
                    child: running.child,
                    ran,
                };
            }
        }
    }
}

/// Log what journalctl wrote on stderr (a bounded read, rate-limited lines); its end closes it.
fn log_stderr(input: &str, running: &mut Running, limit: &mut RateLimit) {
    let Some(stderr) = running.stderr.as_mut() else {
        return;
    };
    let mut chunk = [0u8; 16 << 10];
    // Bounded: a chatty child cannot keep the logs thread here.
    for _ in 0..4 {
        match stderr.read(&mut chunk) {
            Ok(0) => {
                running.stderr = None;
                break;
            }
            Ok(read) => running.stderr_lines.feed(&chunk[..read], &mut |text| {
                if let Some(held_back) = limit.allow(Instant::now()) {
                    let text = String::from_utf8_lossy(&text[..text.len().min(512)]);
                    if held_back > 0 {
                        log::warn!(
                            "input {input}: journalctl: {text} ({held_back} earlier lines not logged)"
                        );
                    } else {
                        log::warn!("input {input}: journalctl: {text}");
                    }
                }
            }),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                running.stderr = None;
                break;
            }
        }
    }
}

/// `1.5s`, for messages.
fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

impl Drop for JournalReader {
    fn drop(&mut self) {
        // SIGKILL, then the wait: a killed child is reaped at once, and none is left behind.
        match &mut self.state {
            State::Running(Running { child, .. }) | State::Exiting { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            State::Waiting { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_syslog_lines() {
        let json = br#"{"MESSAGE":"Failed password for root from 203.0.113.5 port 1 ssh2","__CURSOR":"s=1;i=2","_PID":"77","_HOSTNAME":"fw","__REALTIME_TIMESTAMP":"1763805601000000","SYSLOG_IDENTIFIER":"sshd"}"#;
        let (line, cursor) = entry_to_line(json).unwrap();
        assert_eq!(
            line,
            "Nov 22 10:00:01 fw sshd[77]: Failed password for root from 203.0.113.5 port 1 ssh2"
        );
        assert_eq!(cursor.as_deref(), Some("s=1;i=2"));
    }

    #[test]
    fn binary_and_multi_line_messages_stay_one_line() {
        let json = br#"{"MESSAGE":[70,97,105,108,10,120],"__REALTIME_TIMESTAMP":"0","_COMM":"x"}"#;
        assert_eq!(
            entry_to_line(json).unwrap().0,
            "Jan  1 00:00:00 localhost x: Fail x"
        );
        assert!(entry_to_line(b"not json").is_none());
        assert!(entry_to_line(br#"{"__CURSOR":"c"}"#).is_none());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_a_stable_run_resets_it() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..9)
            .map(|_| backoff.after_exit(Duration::from_secs(2)).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff.after_exit(Duration::from_secs(60)).as_secs(), 1);
        assert_eq!(backoff.after_exit(Duration::ZERO).as_secs(), 2);
    }

    #[test]
    fn the_rate_limit_lets_a_burst_through_and_tells_what_it_held_back() {
        let mut limit = RateLimit::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(limit.allow(start), Some(0));
        assert_eq!(limit.allow(start), Some(0));
        assert_eq!(limit.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limit.allow(start + Duration::from_secs(2)), None);
        assert_eq!(limit.allow(start + Duration::from_secs(61)), Some(2));
        assert_eq!(limit.allow(start + Duration::from_secs(61)), Some(0));
    }

    /// A reader whose "journalctl" is the shell script `script` (its arguments are the ones
    /// journalctl would get), restarting after 50 ms.
    fn scripted(script: &str) -> JournalReader {
        let spec = JournalSpec {
            unit: None,
            file: None,
        };
        let mut reader = JournalReader::new("test", &spec, None, false);
        reader.program = ["sh", "-c", script, "sh"].map(OsString::from).to_vec();
        reader.backoff = Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(200),
            Duration::from_secs(60),
        );
        reader.start_child();
        reader
    }

    /// Poll until `want` lines came (10 s at most), checking that a reader with no child
    /// running waits on nothing.
    fn lines_of(reader: &mut JournalReader, want: usize) -> Vec<String> {
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while lines.len() < want && Instant::now() < deadline {
            let _: Progress = reader
                .poll(&mut |l| lines.push(String::from_utf8_lossy(l).into_owned()))
                .unwrap();
            if !reader.is_running() {
                assert!(reader.wait_fds().is_empty());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        lines
    }

    #[test]
    fn an_exited_journalctl_is_reaped_and_restarted_after_its_cursor() {
        let mut reader = scripted(
            r#"printf '{"MESSAGE":"%s","__CURSOR":"c%s","__REALTIME_TIMESTAMP":"0","_COMM":"t"}\n' "$*" "$$"; echo oops >&2; exit 3"#,
        );
        let lines = lines_of(&mut reader, 2);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("--follow") && lines[0].contains("--lines=0"),
            "{lines:?}"
        );
        let cursor = lines[1].split("--after-cursor=").nth(1);
        assert!(cursor.is_some_and(|c| c.starts_with('c')), "{lines:?}");
        assert!(reader.exits() >= 1 && reader.restarts() >= 1);
    }

    #[test]
    fn a_journalctl_that_closes_its_output_is_killed_reaped_and_asked_for_what_it_missed() {
        // No cursor in its entries, and it lives on after closing its output.
        let mut reader = scripted(
            r#"printf '{"MESSAGE":"%s","__REALTIME_TIMESTAMP":"0","_COMM":"t"}\n' "$*"; exec >&-; sleep 30"#,
        );
        let first = reader.child_pid().unwrap();
        let lines = lines_of(&mut reader, 2);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("--lines=0"), "{lines:?}");
        // Restarted without a cursor: everything since the first start.
        assert!(
            lines[1].contains("--since=@") && lines[1].contains("--lines=all"),
            "{lines:?}"
        );
        assert!(reader.exits() >= 1);
        // Reaped: no zombie is left of the first child.
        assert!(!std::path::Path::new(&format!("/proc/{first}")).exists());
    }
}
