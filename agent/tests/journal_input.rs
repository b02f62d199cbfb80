//! The journal input against real systemd tools: entries written into a journal file by
//! `systemd-journal-remote` are read through `journalctl --follow`, turned into syslog lines
//! the rulesets match, and a saved cursor resumes right after the last entry read. No root,
//! but the tools come from Debian packages `cargo xtask setup` installs.
use std::time::{Duration, Instant};

use xdpguard::detect::logs::journal::{JournalReader, JournalSpec};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

fn write_entry(journal: &std::path::Path, n: u64, message: &str) {
    write_entry_at(journal, n, message, 1_763_805_600_000_000 + n * 1_000_000);
}

/// An entry with its wall-clock time (µs since the epoch).
fn write_entry_at(journal: &std::path::Path, n: u64, message: &str, realtime_us: u64) {
    let export = journal.with_extension(format!("{n}.export"));
    std::fs::write(
        &export,
        format!(
            "__REALTIME_TIMESTAMP={realtime_us}\n__MONOTONIC_TIMESTAMP={n}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=fw\nSYSLOG_IDENTIFIER=sshd\n_PID=7\n_SYSTEMD_UNIT=ssh.service\nMESSAGE={message}\n\n"
        ),
    )
    .unwrap();
    let status = std::process::Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", journal.display()))
        .arg(&export)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Poll `reader` until `want` lines came (or 20 s pass).
fn read_lines(reader: &mut JournalReader, want: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.len() < want && Instant::now() < deadline {
        reader
            .poll(&mut |line| lines.push(String::from_utf8_lossy(line).into_owned()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    lines
}

#[test]
#[ignore = "needs Debian's systemd-journal-remote: run by `cargo xtask test`"]
fn journal_entries_arrive_as_syslog_lines_and_the_cursor_resumes() {
    let dir = std::env::temp_dir().join(format!("xdpguard-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("remote.journal");
    write_entry(
        &journal,
        1,
        "Failed password for root from 203.0.113.5 port 1 ssh2",
    );
    let spec = JournalSpec {
        unit: Some("ssh.service".into()),
        file: Some(journal.clone()),
    };
    let mut reader = JournalReader::spawn("journal", &spec, None, true).unwrap();
    assert_eq!(
        read_lines(&mut reader, 1),
        ["Nov 22 10:00:01 fw sshd[7]: Failed password for root from 203.0.113.5 port 1 ssh2"]
    );
    // Followed: a later entry arrives without a new reader.
    write_entry(&journal, 2, "Invalid user x from 203.0.113.6 port 2");
    assert_eq!(read_lines(&mut reader, 1).len(), 1);
    let cursor = reader.cursor().unwrap().to_owned();
    drop(reader);

    // While nobody reads, another entry; a reader from the saved cursor gets exactly that one.
    write_entry(&journal, 3, "Invalid user y from 203.0.113.7 port 3");
    let mut resumed = JournalReader::spawn("journal", &spec, Some(&cursor), false).unwrap();
    let lines = read_lines(&mut resumed, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].ends_with("Invalid user y from 203.0.113.7 port 3"),
        "{lines:?}"
    );
    drop(resumed);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn kill_9(pid: u32) {
    // SAFETY: a signal to the reader's own child.
    assert_eq!(
        unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) },
        0
    );
}

fn now_us() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

/// `kill -9` of journalctl: the reader notices, counts the exit, and starts a new one that
/// continues after the last entry read, or (no entry read yet) from when the first started; an
/// entry written while none ran is read once, and nothing is read twice.
#[test]
#[ignore = "needs Debian's systemd-journal-remote: run by `cargo xtask test`"]
fn a_killed_journalctl_is_restarted_where_it_left_off() {
    let dir = std::env::temp_dir().join(format!("xdpguard-journal-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("remote.journal");
    write_entry_at(
        &journal,
        1,
        "Invalid user a from 203.0.113.1 port 1",
        now_us(),
    );
    let spec = JournalSpec {
        unit: None,
        file: Some(journal.clone()),
    };

    // With a cursor: after the entry read.
    let mut reader = JournalReader::spawn("journal", &spec, None, true).unwrap();
    assert_eq!(read_lines(&mut reader, 1).len(), 1);
    let first = reader.child_pid().unwrap();
    kill_9(first);
    write_entry_at(
        &journal,
        2,
        "Invalid user b from 203.0.113.2 port 2",
        now_us(),
    );
    let mut lines = read_lines(&mut reader, 1);
    // Anything read twice would come too.
    lines.extend(read_lines_for(&mut reader, Duration::from_millis(1500)));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with("Invalid user b from 203.0.113.2 port 2"));
    assert_ne!(reader.child_pid(), Some(first));
    assert_eq!((reader.exits(), reader.restarts()), (1, 1));
    drop(reader);

    // Without one (started at the end, nothing came): what came while it was down.
    let mut reader = JournalReader::spawn("journal", &spec, None, false).unwrap();
    assert!(read_lines_for(&mut reader, Duration::from_secs(1)).is_empty());
    kill_9(reader.child_pid().unwrap());
    // Written before the next journalctl starts (the reader has not even noticed the exit
    // yet), so only "since the first start" finds it.
    write_entry_at(
        &journal,
        3,
        "Invalid user c from 203.0.113.3 port 3",
        now_us(),
    );
    let mut lines = read_lines(&mut reader, 1);
    lines.extend(read_lines_for(&mut reader, Duration::from_millis(1500)));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with("Invalid user c from 203.0.113.3 port 3"));
    assert_eq!(reader.restarts(), 1);
    drop(reader);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Poll `reader` for `time`.
fn read_lines_for(reader: &mut JournalReader, time: Duration) -> Vec<String> {
    let mut lines = Vec::new();
    let deadline = Instant::now() + time;
    while Instant::now() < deadline {
        let _ = reader
            .poll(&mut |line| lines.push(String::from_utf8_lossy(line).into_owned()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    lines
}
