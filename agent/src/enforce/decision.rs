//! Decisions (block or allow a prefix, from a source, for a reason, until a time) and their
//! crash-safe store.
//!
//! The store is a snapshot plus a write-ahead log in the state directory, both JSON lines:
//! every change is appended to `decisions.log` and synced before the daemon answers; on start
//! the snapshot is read and the log replayed. A torn last line (a crash mid-write) is dropped;
//! any other damage moves both files aside and the daemon starts from the kernel's pinned
//! maps. Compaction rewrites the snapshot (temporary file, fsync, rename) and empties the log.
//!
//! Memory is the truth: when a write fails (a full disk), the store stops appending and
//! rewrites everything from memory at the next retry; when the directory disappears, it is
//! recreated the same way ([`DecisionStore::check_dir`]).
use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, BufWriter, Write},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::prefix::Prefix;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    Block,
    Allow,
}

impl DecisionKind {
    pub const ALL: [Self; 2] = [Self::Block, Self::Allow];

    const fn index(self) -> usize {
        match self {
            Self::Block => 0,
            Self::Allow => 1,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Allow => "allow",
        }
    }
}

/// Who or what decided. Written as text in the store and on the wire (`manual`,
/// `ruleset:sshd`, ...), typed everywhere inside the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Source {
    /// An operator, through the CLI.
    Manual,
    /// The configuration's allowlist.
    Config,
    /// `xdpguard block --file NAME`.
    ListFile(Arc<str>),
    /// A log ruleset.
    Ruleset(Arc<str>),
    /// A volume detector.
    Volume(Arc<str>),
    /// Found in the pinned maps with no state to explain it.
    Recovered,
    /// Another agent of the fleet.
    Fleet(Arc<str>),
    /// A CrowdSec origin (crowdsec, cscli, CAPI, lists).
    Crowdsec(Arc<str>),
    /// `xdpguard block --asn N`: a prefix AS N announces, kept in step with the origins
    /// table as it is reloaded.
    Asn(u32),
    /// Text this version does not know (a newer daemon's state, a script's own label): kept
    /// as written, so no state is lost over a downgrade.
    Other(Arc<str>),
}

impl Source {
    /// Read the text form; total, so a state file never fails on a source it does not know.
    pub fn parse(text: &str) -> Self {
        match text {
            "manual" => return Self::Manual,
            "config" => return Self::Config,
            "recovered" => return Self::Recovered,
            _ => {}
        }
        let Some((kind, name)) = text.split_once(':') else {
            return Self::Other(text.into());
        };
        if name.is_empty() {
            return Self::Other(text.into());
        }
        let name: Arc<str> = name.into();
        match kind {
            "file" => Self::ListFile(name),
            "ruleset" => Self::Ruleset(name),
            "volume" => Self::Volume(name),
            "fleet" => Self::Fleet(name),
            "crowdsec" => Self::Crowdsec(name),
            "asn" => match name.parse::<u32>() {
                Ok(asn) if name.bytes().all(|b| b.is_ascii_digit()) => Self::Asn(asn),
                _ => Self::Other(text.into()),
            },
            _ => Self::Other(text.into()),
        }
    }

    /// Whether an operator decided (a manual block may set any expiry; others never shorten
    /// a longer block).
    pub const fn is_manual(&self) -> bool {
        matches!(self, Self::Manual)
    }

    /// Whether both are of one kind (two CrowdSec origins, two rulesets), names aside.
    pub fn same_kind(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// Another agent's of the fleet.
    pub const fn is_fleet(&self) -> bool {
        matches!(self, Self::Fleet(_))
    }

    /// A CrowdSec origin's.
    pub const fn is_crowdsec(&self) -> bool {
        matches!(self, Self::Crowdsec(_))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Manual => f.write_str("manual"),
            Self::Config => f.write_str("config"),
            Self::Recovered => f.write_str("recovered"),
            Self::ListFile(name) => write!(f, "file:{name}"),
            Self::Ruleset(name) => write!(f, "ruleset:{name}"),
            Self::Volume(name) => write!(f, "volume:{name}"),
            Self::Fleet(name) => write!(f, "fleet:{name}"),
            Self::Crowdsec(name) => write!(f, "crowdsec:{name}"),
            Self::Asn(asn) => write!(f, "asn:{asn}"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

impl From<String> for Source {
    fn from(text: String) -> Self {
        Self::parse(&text)
    }
}

impl From<Source> for String {
    fn from(source: Source) -> Self {
        source.to_string()
    }
}

/// Who or what made a decision, and why. Shared by all decisions of one import.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub source: Source,
    pub reason: Arc<str>,
    pub created_unix: u64,
    /// 0 = never.
    pub expires_unix: u64,
    /// The last log lines that scored it (bounded by the owner), for `list --json` and
    /// `explain`; empty for everything but log scoring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub kind: DecisionKind,
    pub prefix: Prefix,
    pub origin: Arc<Origin>,
}

impl Decision {
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.origin.expires_unix != 0 && self.origin.expires_unix <= now_unix
    }
}

/// A change to the decisions, as the owner tells its watchers (after the batch that made it
/// is durable). Removals name prefixes only: a watcher knows what it was told was there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// These prefixes now hold this decision (new, re-blocked, or replacing another source's).
    Put {
        kind: DecisionKind,
        origin: Arc<Origin>,
        prefixes: Arc<[Prefix]>,
    },
    /// These prefixes no longer hold a decision of `kind` (unblocked, expired, rolled back).
    Remove {
        kind: DecisionKind,
        prefixes: Arc<[Prefix]>,
    },
}

/// One line of the snapshot or the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Put {
        kind: DecisionKind,
        origin: Arc<Origin>,
        prefixes: Vec<Prefix>,
    },
    Remove {
        kind: DecisionKind,
        prefixes: Vec<Prefix>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{dir}: nothing written since an earlier write failed ({reason}); every decision is rewritten at the next retry"
    )]
    Unwritten { dir: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What opening the store found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub decisions: usize,
    /// An incomplete last log line (from a crash) was dropped.
    pub torn_tail: bool,
    /// The state was unreadable and moved here; the store starts empty.
    pub moved_aside: Vec<PathBuf>,
    pub corruption: Option<String>,
}

const SNAPSHOT: &str = "decisions.jsonl";
const LOG: &str = "decisions.log";
/// Compact when the log outgrows this and the snapshot.
const COMPACT_LOG_BYTES: u64 = 64 << 20;
/// After a failed write, the next full rewrite is tried this much later.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A decision, and the reconcile pass that last saw it in the kernel.
struct Stored {
    decision: Decision,
    seen: u32,
}

/// The decisions in memory, one hash map per kind (a million-entry import is a million
/// hash inserts, not tree inserts). foldhash, randomly seeded per process: SipHash was a tenth
/// of the owner's time in a million-entry import.
type DecisionMap = HashMap<Prefix, Stored, foldhash::fast::RandomState>;

#[derive(Default)]
struct Decisions {
    blocks: DecisionMap,
    allows: DecisionMap,
}

impl Decisions {
    fn of(&self, kind: DecisionKind) -> &DecisionMap {
        match kind {
            DecisionKind::Block => &self.blocks,
            DecisionKind::Allow => &self.allows,
        }
    }

    fn of_mut(&mut self, kind: DecisionKind) -> &mut DecisionMap {
        match kind {
            DecisionKind::Block => &mut self.blocks,
            DecisionKind::Allow => &mut self.allows,
        }
    }

    fn len(&self) -> usize {
        self.blocks.len() + self.allows.len()
    }

    fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.allows.is_empty()
    }

    fn clear(&mut self) {
        self.blocks.clear();
        self.allows.clear();
    }
}

pub struct DecisionStore {
    dir: PathBuf,
    decisions: Decisions,
    /// Expiry second → the decisions that expire then. Lazy: a decision replaced or removed
    /// since is skipped when its second comes.
    expiries: BTreeMap<u64, Vec<(DecisionKind, Prefix)>>,
    log: BufWriter<File>,
    log_bytes: u64,
    snapshot_bytes: u64,
    /// Records appended since the last sync.
    unsynced: bool,
    /// Why the last write failed: nothing is appended until a full rewrite works.
    broken: Option<String>,
    retry_at: Option<Instant>,
    /// The current reconcile pass; a decision whose `seen` equals it was found in the kernel
    /// (or written to it) during the pass.
    pass: u32,
    /// Decisions of each kind seen in the current pass.
    seen: [usize; 2],
    /// Changes since the last [`Self::take_changes`], kept only while someone watches.
    journal: Option<Vec<Change>>,
    #[cfg(test)]
    fail_writes: bool,
}

impl DecisionStore {
    /// Open (creating) the store in `dir`.
    ///
    /// # Errors
    /// When the directory or its files cannot be created or read.
    pub fn open(dir: &Path) -> Result<(Self, LoadReport), StateError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut report = LoadReport::default();
        let mut decisions = Decisions::default();
        let snapshot = dir.join(SNAPSHOT);
        let log = dir.join(LOG);
        // A compaction interrupted before its rename leaves the temporary file: not state.
        let _ = fs::remove_file(dir.join(format!("{SNAPSHOT}.tmp")));
        let loaded = replay(&snapshot, &mut decisions, false)
            .and_then(|_| replay(&log, &mut decisions, true));
        match loaded {
            Ok(torn) => report.torn_tail = torn,
            Err(Replay::Io(err)) => return Err(io_err(&log)(err)),
            Err(Replay::Corrupt {
                path,
                line,
                message,
            }) => {
                report.corruption = Some(format!("{}:{line}: {message}", path.display()));
                decisions.clear();
                for path in [&snapshot, &log] {
                    if path.exists() {
                        let aside = path.with_extension(format!("corrupt-{}", std::process::id()));
                        fs::rename(path, &aside).map_err(io_err(path))?;
                        report.moved_aside.push(aside);
                    }
                }
            }
        }
        report.decisions = decisions.len();
        let mut expiries: BTreeMap<u64, Vec<(DecisionKind, Prefix)>> = BTreeMap::new();
        for stored in decisions.blocks.values().chain(decisions.allows.values()) {
            let decision = &stored.decision;
            if decision.origin.expires_unix != 0 {
                expiries
                    .entry(decision.origin.expires_unix)
                    .or_default()
                    .push((decision.kind, decision.prefix));
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(&log))?;
        let log_bytes = file.metadata().map_err(io_err(&log))?.len();
        let snapshot_bytes = fs::metadata(&snapshot).map_or(0, |m| m.len());
        let mut store = Self {
            dir: dir.to_path_buf(),
            decisions,
            expiries,
            log: BufWriter::with_capacity(1 << 16, file),
            log_bytes,
            snapshot_bytes,
            unsynced: false,
            broken: None,
            retry_at: None,
            pass: 0,
            seen: [0; 2],
            journal: None,
            #[cfg(test)]
            fail_writes: false,
        };
        if report.torn_tail {
            // Rewrite so the torn line is gone for good.
            store.compact()?;
        }
        Ok((store, report))
    }

    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }

    pub fn get(&self, kind: DecisionKind, prefix: &Prefix) -> Option<&Decision> {
        self.decisions
            .of(kind)
            .get(prefix)
            .map(|stored| &stored.decision)
    }

    /// Every decision, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Decision> {
        self.decisions
            .blocks
            .values()
            .chain(self.decisions.allows.values())
            .map(|stored| &stored.decision)
    }

    /// Decisions of `kind`, in no particular order.
    pub fn of_kind(&self, kind: DecisionKind) -> impl Iterator<Item = &Decision> {
        self.decisions
            .of(kind)
            .values()
            .map(|stored| &stored.decision)
    }

    /// How many decisions of `kind` there are.
    pub fn count(&self, kind: DecisionKind) -> usize {
        self.decisions.of(kind).len()
    }

    // --- Reconcile marks: which decisions a pass found in the kernel ---

    /// Start a reconcile pass: no decision is seen yet.
    pub fn begin_pass(&mut self) {
        self.pass = self.pass.wrapping_add(1);
        self.seen = [0; 2];
    }

    /// The kernel holds this decision's entry (a pass found it, or the owner wrote it).
    /// Whether there is such a decision.
    pub fn mark_seen(&mut self, kind: DecisionKind, prefix: &Prefix) -> bool {
        let pass = self.pass;
        match self.decisions.of_mut(kind).get_mut(prefix) {
            Some(stored) => {
                if stored.seen != pass {
                    stored.seen = pass;
                    self.seen[kind.index()] += 1;
                }
                true
            }
            None => false,
        }
    }

    /// [`Self::mark_seen`] and [`Self::get`] in one lookup.
    pub fn see(&mut self, kind: DecisionKind, prefix: &Prefix) -> Option<&Decision> {
        let pass = self.pass;
        let stored = self.decisions.of_mut(kind).get_mut(prefix)?;
        if stored.seen != pass {
            stored.seen = pass;
            self.seen[kind.index()] += 1;
        }
        Some(&stored.decision)
    }

    pub fn is_seen(&self, kind: DecisionKind, prefix: &Prefix) -> bool {
        self.decisions
            .of(kind)
            .get(prefix)
            .is_some_and(|stored| stored.seen == self.pass)
    }

    /// Decisions of `kind` the current pass has not seen in the kernel.
    pub fn unseen_count(&self, kind: DecisionKind) -> usize {
        self.count(kind).saturating_sub(self.seen[kind.index()])
    }

    /// The decisions of `kind` the current pass has not seen: one walk over all of them, so
    /// only worth it when [`Self::unseen_count`] is not 0.
    pub fn unseen(&self, kind: DecisionKind) -> Vec<Prefix> {
        self.decisions
            .of(kind)
            .iter()
            .filter(|(_, stored)| stored.seen != self.pass)
            .map(|(prefix, _)| *prefix)
            .collect()
    }

    /// Record `prefixes` under one origin (replacing earlier decisions for them). Buffered:
    /// call [`Self::sync`] before telling anyone it is done.
    ///
    /// # Errors
    /// When the log cannot be written.
    pub fn put(
        &mut self,
        kind: DecisionKind,
        origin: &Arc<Origin>,
        prefixes: Vec<Prefix>,
    ) -> Result<(), StateError> {
        if prefixes.is_empty() {
            return Ok(());
        }
        for prefix in &prefixes {
            self.insert_decision(Decision {
                kind,
                prefix: *prefix,
                origin: Arc::clone(origin),
            });
        }
        if let Some(journal) = &mut self.journal {
            journal.push(Change::Put {
                kind,
                origin: Arc::clone(origin),
                prefixes: prefixes.as_slice().into(),
            });
        }
        self.append(&Record::Put {
            kind,
            origin: Arc::clone(origin),
            prefixes,
        })
    }

    /// Forget `prefixes`; returns the decisions that were there.
    ///
    /// # Errors
    /// When the log cannot be written.
    pub fn remove(
        &mut self,
        kind: DecisionKind,
        prefixes: &[Prefix],
    ) -> Result<Vec<Decision>, StateError> {
        let removed: Vec<Decision> = prefixes
            .iter()
            .filter_map(|prefix| self.remove_decision(kind, prefix))
            .collect();
        if !removed.is_empty() {
            let prefixes: Vec<Prefix> = removed.iter().map(|d| d.prefix).collect();
            if let Some(journal) = &mut self.journal {
                journal.push(Change::Remove {
                    kind,
                    prefixes: prefixes.as_slice().into(),
                });
            }
            self.append(&Record::Remove { kind, prefixes })?;
        }
        Ok(removed)
    }

    /// Keep (or stop keeping) a journal of changes for [`Self::take_changes`].
    pub fn keep_journal(&mut self, keep: bool) {
        match (keep, &self.journal) {
            (true, None) => self.journal = Some(Vec::new()),
            (false, Some(_)) => self.journal = None,
            _ => {}
        }
    }

    /// The changes since the last call, oldest first (empty without a journal).
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Take up to `limit` decisions whose expiry is at or before `now_unix`, soonest first.
    /// The caller removes them; they are not offered again (the rest are, next call).
    pub fn take_expired(&mut self, now_unix: u64, limit: usize) -> Vec<(DecisionKind, Prefix)> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(mut due) = self.expiries.first_entry() else {
                break;
            };
            let expires_unix = *due.key();
            if expires_unix > now_unix {
                break;
            }
            while out.len() < limit {
                let Some((kind, prefix)) = due.get_mut().pop() else {
                    break;
                };
                // Still the decision that was filed under this second?
                if self
                    .decisions
                    .of(kind)
                    .get(&prefix)
                    .is_some_and(|stored| stored.decision.origin.expires_unix == expires_unix)
                {
                    out.push((kind, prefix));
                }
            }
            if due.get().is_empty() {
                let _: Vec<_> = due.remove();
            }
        }
        out
    }

    /// Whether a decision is due at or before `now_unix`.
    pub fn any_expired(&self, now_unix: u64) -> bool {
        self.expiries
            .first_key_value()
            .is_some_and(|(expires_unix, _)| *expires_unix <= now_unix)
    }

    fn insert_decision(&mut self, decision: Decision) {
        let expires_unix = decision.origin.expires_unix;
        if expires_unix != 0 {
            self.expiries
                .entry(expires_unix)
                .or_default()
                .push((decision.kind, decision.prefix));
        }
        let kind = decision.kind;
        // Whoever records a decision writes it to the kernel next: seen in this pass.
        let stored = Stored {
            decision,
            seen: self.pass,
        };
        let replaced = self
            .decisions
            .of_mut(kind)
            .insert(stored.decision.prefix, stored);
        if replaced.is_none_or(|old| old.seen != self.pass) {
            self.seen[kind.index()] += 1;
        }
    }

    fn remove_decision(&mut self, kind: DecisionKind, prefix: &Prefix) -> Option<Decision> {
        let stored = self.decisions.of_mut(kind).remove(prefix)?;
        if stored.seen == self.pass {
            self.seen[kind.index()] = self.seen[kind.index()].saturating_sub(1);
        }
        Some(stored.decision)
    }

    fn append(&mut self, record: &Record) -> Result<(), StateError> {
        // Nothing goes after a failed write (it may have left half a line): the next full
        // rewrite carries what memory holds.
        if self.broken.is_some() {
            return Ok(());
        }
        let log = self.dir.join(LOG);
        let mut line = serde_json::to_vec(record).map_err(|err| io_err(&log)(err.into()))?;
        line.push(b'\n');
        self.unsynced = true;
        let written = self
            .injected(&log)
            .and_then(|()| self.log.write_all(&line).map_err(io_err(&log)));
        if let Err(err) = written {
            self.broke(&err);
            return Err(err);
        }
        self.log_bytes += line.len() as u64;
        Ok(())
    }

    /// Remember a failed write: the log is not appended to again until a rewrite works.
    fn broke(&mut self, err: &StateError) {
        self.broken = Some(crate::error_chain(err));
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    #[cfg(test)]
    fn injected(&self, path: &Path) -> Result<(), StateError> {
        if self.fail_writes {
            return Err(io_err(path)(io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        Ok(())
    }

    #[cfg(not(test))]
    #[expect(
        clippy::unused_self,
        clippy::unnecessary_wraps,
        reason = "the test build injects failures here"
    )]
    const fn injected(&self, _path: &Path) -> Result<(), StateError> {
        Ok(())
    }

    /// Make writes fail as on a full disk (`ENOSPC`), or work again (and retry at once).
    #[cfg(test)]
    pub fn fail_writes(&mut self, fail: bool) {
        self.fail_writes = fail;
        if !fail {
            self.retry_at = None;
        }
    }

    /// Make everything recorded so far durable; compact when the log has grown large. After
    /// a failed write, rewrite everything instead (at most once per [`RETRY_AFTER`]).
    ///
    /// # Errors
    /// When writing or syncing fails, or an earlier failure is not repaired yet.
    pub fn sync(&mut self) -> Result<(), StateError> {
        if let Some(reason) = &self.broken {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(StateError::Unwritten {
                    dir: self.dir.clone(),
                    reason: reason.clone(),
                });
            }
            return self.compact();
        }
        if !self.unsynced {
            return Ok(());
        }
        let log = self.dir.join(LOG);
        let synced = self.injected(&log).and_then(|()| {
            self.log.flush().map_err(io_err(&log))?;
            self.log.get_ref().sync_data().map_err(io_err(&log))
        });
        if let Err(err) = synced {
            self.broke(&err);
            return Err(err);
        }
        self.unsynced = false;
        if self.log_bytes > COMPACT_LOG_BYTES.max(self.snapshot_bytes) {
            self.compact()?;
        }
        Ok(())
    }

    /// Whether the directory and the log this store appends to are still there. When they
    /// are not (`rm -rf` of the state directory, or the log replaced), recreate them and
    /// write every decision to a fresh snapshot. Returns whether it had to.
    ///
    /// # Errors
    /// When the directory or the snapshot cannot be written.
    pub fn check_dir(&mut self) -> Result<bool, StateError> {
        let log = self.dir.join(LOG);
        let ours = self.log.get_ref().metadata().map_err(io_err(&log))?;
        let intact = fs::metadata(&log)
            .is_ok_and(|found| found.dev() == ours.dev() && found.ino() == ours.ino());
        if intact {
            return Ok(false);
        }
        self.compact()?;
        Ok(true)
    }

    /// Rewrite the snapshot from memory and empty the log (recreating the directory if it is
    /// gone). Repairs an earlier failed write.
    ///
    /// # Errors
    /// When writing, syncing or renaming fails.
    pub fn compact(&mut self) -> Result<(), StateError> {
        let result = self.rewrite();
        match &result {
            Ok(()) => {
                self.broken = None;
                self.retry_at = None;
                self.unsynced = false;
            }
            Err(err) => self.broke(err),
        }
        result
    }

    fn rewrite(&mut self) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let snapshot = self.dir.join(SNAPSHOT);
        let tmp = self.dir.join(format!("{SNAPSHOT}.tmp"));
        // Group by origin: an import of a million prefixes is one line, not a million.
        let mut groups: HashMap<(DecisionKind, &Arc<Origin>), Vec<Prefix>> = HashMap::new();
        for decision in self.iter() {
            groups
                .entry((decision.kind, &decision.origin))
                .or_default()
                .push(decision.prefix);
        }
        self.injected(&tmp)?;
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        for ((kind, origin), prefixes) in groups {
            let record = Record::Put {
                kind,
                origin: Arc::clone(origin),
                prefixes,
            };
            serde_json::to_writer(&mut out, &record).map_err(|err| io_err(&tmp)(err.into()))?;
            out.write_all(b"\n").map_err(io_err(&tmp))?;
        }
        let file = out
            .into_inner()
            .map_err(|err| io_err(&tmp)(err.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        self.snapshot_bytes = file.metadata().map_err(io_err(&tmp))?.len();
        fs::rename(&tmp, &snapshot).map_err(io_err(&snapshot))?;
        let log = self.dir.join(LOG);
        let file = File::create(&log).map_err(io_err(&log))?;
        file.sync_all().map_err(io_err(&log))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err(&self.dir))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&log)
            .map_err(io_err(&log))?;
        // What the old log still buffered is in the snapshot: dropped unwritten, so a stale
        // buffer never lands in the emptied log.
        let old = std::mem::replace(&mut self.log, BufWriter::with_capacity(1 << 16, file));
        let _: (File, Result<Vec<u8>, _>) = old.into_parts();
        self.log_bytes = 0;
        Ok(())
    }
}

enum Replay {
    Io(io::Error),
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Apply the records in `path`. Returns whether a torn last line was dropped (only allowed
/// when `tail_may_tear`, i.e. for the log).
fn replay(path: &Path, decisions: &mut Decisions, tail_may_tear: bool) -> Result<bool, Replay> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(Replay::Io(err)),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(Replay::Io)?;
        if read == 0 {
            return Ok(false);
        }
        number += 1;
        let complete = line.last() == Some(&b'\n');
        match serde_json::from_slice::<Record>(&line) {
            Ok(Record::Put {
                kind,
                origin,
                prefixes,
            }) => {
                for prefix in prefixes {
                    let _: Option<_> = decisions.of_mut(kind).insert(
                        prefix,
                        Stored {
                            decision: Decision {
                                kind,
                                prefix,
                                origin: Arc::clone(&origin),
                            },
                            seen: 0,
                        },
                    );
                }
            }
            Ok(Record::Remove { kind, prefixes }) => {
                for prefix in prefixes {
                    let _: Option<_> = decisions.of_mut(kind).remove(&prefix);
                }
            }
            Err(_) if tail_may_tear && !complete => return Ok(true),
            Err(err) => {
                return Err(Replay::Corrupt {
                    path: path.to_path_buf(),
                    line: number,
                    message: err.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(source: &str, expires_unix: u64) -> Arc<Origin> {
        Arc::new(Origin {
            source: Source::parse(source),
            reason: "test".into(),
            created_unix: 100,
            expires_unix,
            evidence: Vec::new(),
        })
    }

    fn p(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xdpguard-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn decisions_survive_reopen_through_the_log() {
        let dir = temp_dir("reopen");
        let (mut store, report) = DecisionStore::open(&dir).unwrap();
        assert_eq!(report, LoadReport::default());
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 0),
                vec![p("203.0.113.1"), p("203.0.113.0/24")],
            )
            .unwrap();
        store
            .put(
                DecisionKind::Allow,
                &origin("config", 0),
                vec![p("198.51.100.0/24")],
            )
            .unwrap();
        assert_eq!(
            store
                .remove(DecisionKind::Block, &[p("203.0.113.1")])
                .unwrap()
                .len(),
            1
        );
        store.sync().unwrap();
        drop(store);
        let (store, report) = DecisionStore::open(&dir).unwrap();
        assert_eq!(report.decisions, 2);
        assert!(
            store
                .get(DecisionKind::Block, &p("203.0.113.0/24"))
                .is_some()
        );
        assert!(store.get(DecisionKind::Block, &p("203.0.113.1")).is_none());
        assert_eq!(
            store
                .get(DecisionKind::Allow, &p("198.51.100.0/24"))
                .unwrap()
                .origin
                .source,
            Source::Config
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_keeps_everything_and_empties_the_log() {
        let dir = temp_dir("compact");
        let (mut store, _) = DecisionStore::open(&dir).unwrap();
        let shared = origin("file:list", 500);
        store
            .put(
                DecisionKind::Block,
                &shared,
                (1..=200)
                    .map(|i| p(&format!("203.0.113.{}", i % 250)))
                    .collect(),
            )
            .unwrap();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 0),
                vec![p("2001:db8::/32")],
            )
            .unwrap();
        store.compact().unwrap();
        assert_eq!(fs::metadata(dir.join(LOG)).unwrap().len(), 0);
        let snapshot = fs::read_to_string(dir.join(SNAPSHOT)).unwrap();
        assert_eq!(snapshot.lines().count(), 2, "one line per origin");
        let sorted = |store: &DecisionStore| {
            let mut all: Vec<Decision> = store.iter().cloned().collect();
            all.sort_by_key(|d| (d.kind, d.prefix));
            all
        };
        let before = sorted(&store);
        drop(store);
        let (store, _) = DecisionStore::open(&dir).unwrap();
        assert_eq!(sorted(&store), before);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_last_log_line_is_dropped_not_fatal() {
        let dir = temp_dir("torn");
        let (mut store, _) = DecisionStore::open(&dir).unwrap();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 0),
                vec![p("203.0.113.9")],
            )
            .unwrap();
        store.sync().unwrap();
        drop(store);
        let mut log = OpenOptions::new().append(true).open(dir.join(LOG)).unwrap();
        log.write_all(br#"{"put":{"kind":"block","origin":{"sou"#)
            .unwrap();
        drop(log);
        let (store, report) = DecisionStore::open(&dir).unwrap();
        assert!(report.torn_tail);
        assert_eq!(store.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_state_is_moved_aside_and_reported() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(SNAPSHOT), "this is not json\n").unwrap();
        let (store, report) = DecisionStore::open(&dir).unwrap();
        assert!(store.is_empty());
        assert!(
            report
                .corruption
                .as_deref()
                .unwrap()
                .contains("decisions.jsonl:1"),
            "{report:?}"
        );
        assert_eq!(report.moved_aside.len(), 1);
        assert!(report.moved_aside[0].exists());
        assert!(!dir.join(SNAPSHOT).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn of_kind_returns_exactly_that_kind() {
        let dir = temp_dir("kind");
        let (mut store, _) = DecisionStore::open(&dir).unwrap();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 0),
                vec![p("0.0.0.0/0"), p("2001:db8::1")],
            )
            .unwrap();
        store
            .put(
                DecisionKind::Allow,
                &origin("config", 0),
                vec![p("0.0.0.0/0"), p("::1")],
            )
            .unwrap();
        let sorted = |kind| {
            let mut all: Vec<String> = store.of_kind(kind).map(|d| d.prefix.to_string()).collect();
            all.sort();
            all
        };
        let (blocks, allows) = (sorted(DecisionKind::Block), sorted(DecisionKind::Allow));
        assert_eq!(blocks, ["0.0.0.0/0", "2001:db8::1/128"]);
        assert_eq!(allows, ["0.0.0.0/0", "::1/128"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expired_lists_due_decisions_only() {
        let dir = temp_dir("expired");
        let (mut store, _) = DecisionStore::open(&dir).unwrap();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 150),
                vec![p("203.0.113.1")],
            )
            .unwrap();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 300),
                vec![p("203.0.113.2")],
            )
            .unwrap();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 0),
                vec![p("203.0.113.3")],
            )
            .unwrap();
        assert_eq!(store.take_expired(149, usize::MAX), vec![]);
        // Re-blocking with a later expiry replaces the old expiry: not due at 150 any more.
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 400),
                vec![p("203.0.113.1")],
            )
            .unwrap();
        assert_eq!(store.take_expired(150, usize::MAX), vec![]);
        assert_eq!(
            store.take_expired(350, usize::MAX),
            vec![(DecisionKind::Block, p("203.0.113.2"))]
        );
        // Taken once: the caller removes them, they are not offered again.
        assert_eq!(store.take_expired(350, usize::MAX), vec![]);
        assert_eq!(
            store.take_expired(400, usize::MAX),
            vec![(DecisionKind::Block, p("203.0.113.1"))]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expired_decisions_come_in_bounded_chunks_soonest_first() {
        let dir = temp_dir("expired-chunks");
        let (mut store, _) = DecisionStore::open(&dir).unwrap();
        let hosts: Vec<Prefix> = (1..=10).map(|i| p(&format!("203.0.113.{i}"))).collect();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 200),
                hosts[2..].to_vec(),
            )
            .unwrap();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 100),
                hosts[..2].to_vec(),
            )
            .unwrap();
        assert!(store.any_expired(200));
        let first = store.take_expired(200, 3);
        assert_eq!(first.len(), 3);
        // The two of second 100 come before any of second 200.
        assert!(
            first[..2]
                .iter()
                .all(|(_, prefix)| hosts[..2].contains(prefix))
        );
        let mut rest = Vec::new();
        loop {
            let chunk = store.take_expired(200, 3);
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 3);
            rest.extend(chunk);
        }
        assert_eq!(first.len() + rest.len(), 10);
        assert!(!store.any_expired(200));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn marks_count_what_a_pass_saw_through_puts_and_removes() {
        let dir = temp_dir("marks");
        let (mut store, _) = DecisionStore::open(&dir).unwrap();
        let (a, b, c) = (p("203.0.113.1"), p("203.0.113.2"), p("203.0.113.3"));
        store
            .put(DecisionKind::Block, &origin("manual", 0), vec![a, b])
            .unwrap();
        store.begin_pass();
        assert_eq!(store.unseen_count(DecisionKind::Block), 2);
        assert!(store.mark_seen(DecisionKind::Block, &a));
        assert!(
            store.mark_seen(DecisionKind::Block, &a),
            "twice counts once"
        );
        assert!(
            !store.mark_seen(DecisionKind::Block, &c),
            "no such decision"
        );
        assert_eq!(store.unseen(DecisionKind::Block), vec![b]);
        // Written during the pass: seen. Replacing a seen one changes nothing.
        store
            .put(DecisionKind::Block, &origin("manual", 0), vec![c, a])
            .unwrap();
        assert_eq!(store.unseen_count(DecisionKind::Block), 1);
        let _ = store.remove(DecisionKind::Block, &[a, b]).unwrap();
        assert_eq!(store.unseen_count(DecisionKind::Block), 0);
        assert!(store.is_seen(DecisionKind::Block, &c));
        store.begin_pass();
        assert!(!store.is_seen(DecisionKind::Block, &c));
        assert_eq!(store.unseen_count(DecisionKind::Allow), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_deleted_directory_is_recreated_with_every_decision() {
        let dir = temp_dir("deleted");
        let (mut store, _) = DecisionStore::open(&dir).unwrap();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 0),
                vec![p("203.0.113.1"), p("2001:db8::/48")],
            )
            .unwrap();
        store.sync().unwrap();
        assert!(!store.check_dir().unwrap());
        fs::remove_dir_all(&dir).unwrap();
        assert!(store.check_dir().unwrap());
        assert!(!store.check_dir().unwrap(), "repaired once");
        // Later records land in the new log.
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 0),
                vec![p("203.0.113.9")],
            )
            .unwrap();
        store.sync().unwrap();
        drop(store);
        let (store, _) = DecisionStore::open(&dir).unwrap();
        assert_eq!(store.len(), 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn after_a_failed_write_memory_is_rewritten_in_full() {
        let dir = temp_dir("full-disk");
        let (mut store, _) = DecisionStore::open(&dir).unwrap();
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 0),
                vec![p("203.0.113.1")],
            )
            .unwrap();
        store.sync().unwrap();
        store.fail_writes(true);
        store
            .put(
                DecisionKind::Block,
                &origin("manual", 0),
                vec![p("203.0.113.2")],
            )
            .unwrap_err();
        assert!(store.sync().is_err());
        // Not retried before its time, then rewritten from memory.
        assert!(matches!(store.sync(), Err(StateError::Unwritten { .. })));
        store.fail_writes(false);
        let _ = store
            .remove(DecisionKind::Block, &[p("203.0.113.1")])
            .unwrap();
        store.sync().unwrap();
        drop(store);
        let (store, report) = DecisionStore::open(&dir).unwrap();
        assert_eq!(report.corruption, None);
        let prefixes: Vec<Prefix> = store.iter().map(|d| d.prefix).collect();
        assert_eq!(prefixes, vec![p("203.0.113.2")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sources_round_trip_through_their_text_and_unknown_text_is_kept() {
        for text in [
            "manual",
            "config",
            "recovered",
            "file:bad.txt",
            "ruleset:sshd",
            "volume:flood",
            "fleet:web-1",
            "crowdsec:CAPI",
            "asn:64500",
        ] {
            let source = Source::parse(text);
            assert!(!matches!(source, Source::Other(_)), "{text}");
            assert_eq!(source.to_string(), text);
        }
        assert_eq!(Source::parse("ruleset:"), Source::Other("ruleset:".into()));
        assert_eq!(Source::parse("script"), Source::Other("script".into()));
        assert_eq!(Source::parse("asn:64500"), Source::Asn(64500));
        for kept in ["asn:AS1", "asn:+1", "asn:4294967296"] {
            assert_eq!(Source::parse(kept), Source::Other(kept.into()), "{kept}");
        }
        let json = serde_json::to_string(&Source::Ruleset("sshd".into())).unwrap();
        assert_eq!(json, "\"ruleset:sshd\"");
        let back: Source = serde_json::from_str("\"nightly-job\"").unwrap();
        assert_eq!(back.to_string(), "nightly-job");
    }
}
