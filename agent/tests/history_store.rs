//! A kill -9 in the middle of the history's writes leaves a database that opens, passes
//! SQLite's integrity check and holds every interval the writer saw committed.
//!
//! The test runs its own binary again as the writer: with `XDPGUARD_HISTORY_CHILD_DB` set,
//! `child_writes_until_killed` records intervals in a loop and prints `committed START` after
//! each `record` returns. The parent kills it with SIGKILL after a varying number of commits,
//! then checks. Several rounds on the same file, so later writers also start from a file a
//! kill left behind.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use xdpguard::history::{
    model::{IntervalRecord, PacketCounts, ScoredSources, Traffic},
    store::{HistoryStore, StoreSettings},
};

const CHILD_DB: &str = "XDPGUARD_HISTORY_CHILD_DB";
const FIRST_START: u64 = 1_700_000_000;
/// Commits before the kill, per round: right away, a few, more (past an auto-checkpoint).
const KILL_AFTER: [usize; 4] = [1, 7, 30, 90];
/// No round waits longer than this for its commits.
const ROUND_LIMIT: Duration = Duration::from_secs(10);

/// The interval the writer records at `start`: every number follows from the start.
fn record_for(start: u64) -> IntervalRecord {
    let n = (start - FIRST_START) / 60;
    let sources = u32::try_from(1_000 + n % 500).expect("small");
    IntervalRecord {
        start,
        seconds: 60,
        packets: PacketCounts {
            dropped_v4: n * 3 + 1,
            passed_bytes: n * 1_000 + 7,
            ..PacketCounts::default()
        },
        traffic: Traffic {
            inbound_external: n * 11,
            ..Traffic::default()
        },
        decisions: vec![("manual".to_owned(), n + 1)],
        scored: vec![ScoredSources {
            ruleset: format!("rs{}", n % 3),
            addresses: (0..sources)
                .map(|i| {
                    IpAddr::V4(Ipv4Addr::from(
                        0x0a00_0000 + i * 7 + u32::from(n.is_multiple_of(2)),
                    ))
                })
                .collect(),
            overflow: n % 4,
        }],
        ..IntervalRecord::default()
    }
}

/// The writer: only runs as the parent's child.
#[test]
fn child_writes_until_killed() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let mut store = HistoryStore::open(Path::new(&path), StoreSettings::default()).expect("open");
    let mut start = store
        .range()
        .expect("range")
        .map_or(FIRST_START, |(_, newest)| newest + 60);
    let began = Instant::now();
    let mut stdout = std::io::stdout().lock();
    // Bounded, should the parent never kill it.
    for _ in 0..100_000 {
        if began.elapsed() > Duration::from_secs(60) {
            break;
        }
        store.record(&record_for(start)).expect("record");
        writeln!(stdout, "committed {start}").expect("stdout");
        stdout.flush().expect("stdout");
        start += 60;
    }
}

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "xdpguard-history-kill-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

/// Runs one writer until it reported `kill_after` commits (or the round's time is up), kills
/// it, and returns every start it reported.
fn write_and_kill(path: &Path, kill_after: usize) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_writes_until_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The first one follows libtest's `test child_writes_until_killed ... `.
            if let Some((_, start)) = line.split_once("committed ") {
                let _ = lines.send(start.parse::<u64>().expect("a start"));
            }
        }
    });
    let deadline = Instant::now() + ROUND_LIMIT;
    let mut committed = Vec::new();
    while committed.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(start) => committed.push(start),
            Err(_) => break,
        }
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: a signal to our own child, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill");
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    // What it printed before the signal landed.
    committed.extend(received.try_iter());
    assert!(
        status.signal() == Some(libc::SIGKILL) || status.success(),
        "the writer failed: {status}"
    );
    committed
}

#[test]
fn kill_during_writes_leaves_a_readable_history() {
    let dir = temp_dir();
    let path = dir.join("history.sqlite");
    let mut all_committed = Vec::new();
    let mut count_before = 0;
    for kill_after in KILL_AFTER {
        let committed = write_and_kill(&path, kill_after);
        assert!(!committed.is_empty(), "the writer committed nothing");
        let committed_now = committed.len();
        all_committed.extend(committed);

        let reader = HistoryStore::open_read_only(&path).expect("open after the kill");
        assert_eq!(reader.integrity_check().expect("integrity check"), "ok");
        for &start in &all_committed {
            let stored = reader
                .interval(start)
                .expect("read")
                .unwrap_or_else(|| panic!("committed interval {start} is missing"));
            let mut want = record_for(start);
            want.scored[0].addresses.sort();
            assert_eq!(stored, want, "interval {start}");
        }
        // At most the one being written when the signal came is there unreported.
        let count = reader.interval_count().expect("count");
        let reported = u64::try_from(committed_now).expect("small");
        let added = count - count_before;
        assert!(
            added == reported || added == reported + 1,
            "{added} intervals added, {reported} reported"
        );
        count_before = count;
        drop(reader);
        let writer = HistoryStore::open(&path, StoreSettings::default()).expect("reopen");
        assert_eq!(writer.integrity_check().expect("integrity check"), "ok");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
