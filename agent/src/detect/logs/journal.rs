//! The systemd journal as a log input: `journalctl --follow --output=json` (optionally one
//! unit, or a journal file), each entry turned into the syslog line the rulesets expect
//! (`Mmm dd HH:MM:SS host ident[pid]: message`), and the cursor of the last entry kept so a
//! restart continues exactly after it.
use std::{
    io::{self, Read as _},
    os::fd::{AsRawFd as _, RawFd},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
};

use crate::detect::logs::input::LineSplitter;

/// Which journal, and where to start.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JournalSpec {
    /// Only this unit (`journalctl --unit`); `None`: every entry.
    pub unit: Option<String>,
    /// A journal file instead of the system journal (`journalctl --file`).
    pub file: Option<PathBuf>,
}

pub struct JournalReader {
    child: Child,
    stdout: ChildStdout,
    raw: LineSplitter,
    cursor: Option<String>,
    pub bad_entries: u64,
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
    /// Start following: after `cursor` when there is one, else from the end (or from the
    /// start of the journal with `from_start`).
    ///
    /// # Errors
    /// When `journalctl` cannot be started.
    pub fn spawn(spec: &JournalSpec, cursor: Option<&str>, from_start: bool) -> io::Result<Self> {
        let mut command = Command::new("journalctl");
        command.args(["--follow", "--output=json", "--no-pager", "--quiet"]);
        if let Some(unit) = &spec.unit {
            let _: &mut Command = command.arg(format!("--unit={unit}"));
        }
        if let Some(file) = &spec.file {
            let _: &mut Command = command.arg("--file").arg(file);
        }
        match cursor {
            Some(cursor) => {
                let _: &mut Command = command.arg(format!("--after-cursor={cursor}"));
            }
            None if from_start => {
                let _: &mut Command = command.arg("--lines=all");
            }
            None => {
                let _: &mut Command = command.arg("--lines=0");
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no journalctl stdout"))?;
        let fd = stdout.as_raw_fd();
        // SAFETY: fcntl on a pipe we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            child,
            stdout,
            raw: LineSplitter::default(),
            cursor: cursor.map(str::to_owned),
            bad_entries: 0,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.stdout.as_raw_fd()
    }

    /// The cursor of the last entry handed out.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Hand every new entry to `line`, as a syslog line.
    ///
    /// # Errors
    /// When reading from journalctl fails.
    pub fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let mut chunk = [0u8; 64 << 10];
        let mut entries: Vec<Vec<u8>> = Vec::new();
        loop {
            match self.stdout.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => self
                    .raw
                    .feed(&chunk[..read], &mut |json| entries.push(json.to_vec())),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
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
        Ok(())
    }
}

impl Drop for JournalReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
}
