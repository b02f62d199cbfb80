//! The journal input against real systemd tools: entries written into a journal file by
//! `systemd-journal-remote` are read through `journalctl --follow`, turned into syslog lines
//! the rulesets match, and a saved cursor resumes right after the last entry read. No root,
//! but the tools come from Debian packages `cargo xtask setup` installs.
use std::time::{Duration, Instant};

use xdpguard::detect::logs::journal::{JournalReader, JournalSpec};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

fn write_entry(journal: &std::path::Path, n: u64, message: &str) {
    let export = journal.with_extension(format!("{n}.export"));
    std::fs::write(
        &export,
        format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={n}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=fw\nSYSLOG_IDENTIFIER=sshd\n_PID=7\n_SYSTEMD_UNIT=ssh.service\nMESSAGE={message}\n\n",
            1_763_805_600_000_000 + n * 1_000_000
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
    let mut reader = JournalReader::spawn(&spec, None, true).unwrap();
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
    let mut resumed = JournalReader::spawn(&spec, Some(&cursor), false).unwrap();
    let lines = read_lines(&mut resumed, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].ends_with("Invalid user y from 203.0.113.7 port 3"),
        "{lines:?}"
    );
    drop(resumed);
    std::fs::remove_dir_all(&dir).unwrap();
}
