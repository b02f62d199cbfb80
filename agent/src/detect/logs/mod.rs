//! The daemon's log scoring: follow the configured inputs, run their rulesets over every new
//! line, keep scores per source, and hand a source whose score goes over the threshold to the
//! decision owner as a block from `ruleset:NAME`. Positions are saved in the state directory
//! so a restart neither re-reads nor skips lines; a reload keeps scores and positions.
//!
//! The thread never waits on an input: paths are opened non-blocking and anything but the
//! kind of file an input reads is refused (see `input`), `journalctl` is supervised (see
//! `journal`), and each round reads a bounded slice of every input, then publishes the
//! counters and looks at its commands, so a burst delays neither a scrape nor a stop.
pub mod config;
pub mod correlate;
pub mod evidence;
pub mod input;
pub mod journal;
pub mod metrics;
pub mod offenders;
pub mod prefix;
pub mod replay;
pub mod ruleset;
pub mod score;

use std::{
    collections::{BTreeMap, HashMap},
    os::fd::RawFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use self::{
    config::{InputConfig, InputSource},
    correlate::{SessionStats, Sessions},
    input::{
        FileFollower, PipeFollower, Progress, Refusals, Start, StreamReader, Waker,
        read_regular_file, replace_file,
    },
    journal::{JournalReader, JournalSpec},
    offenders::{Offenders, ScoringConfig},
    ruleset::{FirstPass, Outcome, Ruleset, RulesetLimits, apply_all_passed},
    score::{ScoreBoard, Scored},
};
use crate::{
    clock::Clock,
    enforce::{
        decision::Source,
        owner::{BlockOrder, Expiry, Handle},
    },
    history::tap::SharedTap,
    origins::Origins,
};

const POSITIONS: &str = "positions.json";
/// Saved positions are a few lines per input; anything much larger is not ours.
const POSITIONS_MAX_BYTES: u64 = 16 << 20;
/// The longest the reader sleeps without a wake-up (commands, files in missing directories,
/// refused paths, a journalctl to start again).
const WAIT_AT_MOST_MS: i32 = 100;

/// Counters for the metrics page. The logs thread keeps its own and publishes a copy after
/// every round (a swap under the lock), so a scrape never waits for scoring.
#[derive(Clone, Debug, Default)]
pub struct LogStats {
    pub lines: BTreeMap<String, u64>,
    pub truncated: BTreeMap<String, u64>,
    /// (ruleset, rule) → matches.
    pub matches: BTreeMap<(String, String), u64>,
    pub scored_addresses: u64,
    /// Ruleset → lines with a score whose address could be at more than one place.
    pub ambiguous: BTreeMap<String, u64>,
    /// Per ruleset: lines it matched, matches that scored an address, blocks it asked for.
    pub rulesets: BTreeMap<String, RulesetCounts>,
    /// The session memory of multi-line rules.
    pub sessions: SessionStats,
    pub sessions_bytes: u64,
    /// (input, what its path named) → refusals.
    pub refused: BTreeMap<(String, String), u64>,
    /// Input → child processes started again (journal).
    pub restarts: BTreeMap<String, u64>,
    /// Input → child processes that exited or could not start (journal).
    pub exits: BTreeMap<String, u64>,
    /// Input → 1 while it is open and read, 0 while missing, refused, ended or restarting.
    pub open: BTreeMap<String, u64>,
}

/// One ruleset's counts, for `status` and the metrics page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesetCounts {
    pub lines: u64,
    pub scored: u64,
    pub blocks: u64,
}

/// What the thread is told.
pub enum LogCommand {
    Reload {
        rulesets: Vec<Ruleset>,
        inputs: Vec<InputConfig>,
        /// Boxed: a reload is rare, the policy is large.
        scoring: Box<ScoringConfig>,
    },
    Stop,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    file: PathBuf,
    inode: u64,
    offset: u64,
    /// Journal inputs: the cursor of the last entry read.
    #[serde(default)]
    cursor: Option<String>,
}

/// An input's reader.
enum Reader {
    File(FileFollower),
    Pipe(PipeFollower),
    /// Standard input, relayed by a thread of its own.
    Stream(StreamReader),
    /// Boxed: it is the largest by far, and there are few.
    Journal(Box<JournalReader>),
    /// Could not be opened; retried on reload.
    Broken,
}

impl Reader {
    fn open(config: &InputConfig, start: Start, cursor: Option<&str>) -> Self {
        match &config.source {
            InputSource::Journal { unit, file } => {
                let spec = JournalSpec {
                    unit: unit.clone(),
                    file: file.clone(),
                };
                Self::Journal(Box::new(JournalReader::start(
                    &config.name,
                    &spec,
                    cursor,
                    !config.start_at_end,
                )))
            }
            InputSource::File(path) => {
                let mut follower = FileFollower::new(&config.name, path, start);
                // Fix the starting point now, before the daemon says it is ready.
                if let Err(err) = follower.open_now() {
                    log::warn!("input {}: {}: {err}", config.name, path.display());
                }
                Self::File(follower)
            }
            InputSource::Pipe(path) => {
                let mut pipe = PipeFollower::new(&config.name, path);
                if let Err(err) = pipe.open_now() {
                    log::warn!("input {}: {}: {err}", config.name, path.display());
                }
                Self::Pipe(pipe)
            }
            InputSource::Stdin => StreamReader::stdin().map_or_else(
                |err| {
                    log::error!("input {}: standard input: {err}", config.name);
                    Self::Broken
                },
                Self::Stream,
            ),
        }
    }

    fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> std::io::Result<Progress> {
        match self {
            Self::File(follower) => follower.poll(line),
            Self::Pipe(pipe) => pipe.poll(line),
            Self::Stream(stream) => stream.poll(line),
            Self::Journal(journal) => journal.poll(line),
            Self::Broken => Ok(Progress::CaughtUp),
        }
    }

    fn truncated_lines(&self) -> u64 {
        match self {
            Self::File(follower) => follower.truncated_lines(),
            Self::Pipe(pipe) => pipe.truncated_lines(),
            Self::Stream(stream) => stream.truncated_lines(),
            Self::Journal(_) | Self::Broken => 0,
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::File(follower) => follower.is_open(),
            Self::Pipe(pipe) => pipe.is_open(),
            Self::Stream(stream) => stream.raw_fd().is_some(),
            Self::Journal(journal) => journal.is_running(),
            Self::Broken => false,
        }
    }

    fn refusals(&self) -> Option<&Refusals> {
        match self {
            Self::File(follower) => Some(follower.refusals()),
            Self::Pipe(pipe) => Some(pipe.refusals()),
            Self::Stream(_) | Self::Journal(_) | Self::Broken => None,
        }
    }

    /// The descriptors worth waking up for (files are watched through their directories).
    fn wait_fds(&self, fds: &mut Vec<RawFd>) {
        match self {
            Self::Pipe(pipe) => fds.extend(pipe.raw_fd()),
            Self::Stream(stream) => fds.extend(stream.raw_fd()),
            Self::Journal(journal) => fds.extend(journal.wait_fds()),
            Self::File(_) | Self::Broken => {}
        }
    }
}

/// Where an input reads, for messages.
fn describe(source: &InputSource) -> String {
    match source {
        InputSource::File(path) | InputSource::Pipe(path) => path.display().to_string(),
        InputSource::Stdin => "standard input".to_owned(),
        InputSource::Journal { unit, file } => match (unit, file) {
            (_, Some(file)) => format!("journal file {}", file.display()),
            (Some(unit), None) => format!("journal of {unit}"),
            (None, None) => "journal".to_owned(),
        },
    }
}

struct Input {
    config: InputConfig,
    follower: Reader,
    /// Indices into the rulesets, in order.
    rulesets: Vec<usize>,
    /// Their whole-line first matches in one pass.
    first_pass: FirstPass,
    /// The last read error, logged once until it changes or reading works again.
    last_error: Option<String>,
}

pub struct LogScoring {
    rulesets: Vec<Ruleset>,
    inputs: Vec<Input>,
    board: ScoreBoard,
    /// The boards of rulesets with their own `[scoring.rulesets.NAME]` policy.
    boards: HashMap<String, ScoreBoard>,
    /// Addresses remembered by multi-line rules.
    sessions: Sessions,
    /// The last lines that scored each address, for the block's evidence.
    evidence: evidence::Evidence,
    scoring: ScoringConfig,
    positions_file: PathBuf,
    saved: BTreeMap<String, Position>,
    /// The thread's own counters...
    counters: LogStats,
    /// ...and the copy scrapes read.
    stats: Arc<Mutex<LogStats>>,
    rounds: Arc<std::sync::atomic::AtomicU64>,
    clock: Arc<dyn Clock>,
    offenders: Offenders,
    /// The announced prefixes, for `aggregate = "announced"` or `"both"`.
    origins: Option<Origins>,
    /// Where the addresses each ruleset scored go, for the history.
    tap: Option<SharedTap>,
    /// The last error saving positions, logged once until it changes.
    last_save_error: Option<String>,
}

impl LogScoring {
    pub fn new(
        state_dir: &Path,
        rulesets: Vec<Ruleset>,
        inputs: Vec<InputConfig>,
        scoring: ScoringConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let positions_file = state_dir.join(POSITIONS);
        // Read without waiting: whatever sits at that name, a FIFO cannot stall the start.
        let saved: BTreeMap<String, Position> =
            match read_regular_file(&positions_file, POSITIONS_MAX_BYTES) {
                Ok(bytes) => bytes
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .unwrap_or_default(),
                Err(err) => {
                    log::warn!("log positions: {err}; starting without them");
                    BTreeMap::new()
                }
            };
        let mut scoring_state = Self {
            rulesets: Vec::new(),
            inputs: Vec::new(),
            board: ScoreBoard::new(scoring.board),
            boards: HashMap::new(),
            sessions: Sessions::new(scoring.sessions),
            evidence: evidence::Evidence::default(),
            scoring,
            positions_file,
            saved,
            counters: LogStats::default(),
            stats: Arc::new(Mutex::new(LogStats::default())),
            rounds: Arc::default(),
            clock,
            offenders: Offenders::open(Some(state_dir)),
            origins: None,
            tap: None,
            last_save_error: None,
        };
        scoring_state.sync_boards();
        scoring_state.configure(rulesets, inputs);
        scoring_state.publish();
        scoring_state
    }

    /// One board per ruleset with its own policy; scores carry over when a policy changes.
    fn sync_boards(&mut self) {
        self.boards
            .retain(|name, _| self.scoring.per_ruleset.contains_key(name));
        for (name, own) in &self.scoring.per_ruleset {
            match self.boards.get_mut(name) {
                Some(board) => board.set_policy(own.board),
                None => {
                    let _ = self.boards.insert(name.clone(), ScoreBoard::new(own.board));
                }
            }
        }
    }

    /// The origins table announced-prefix aggregation reads (before [`Self::run`]); without
    /// one, `aggregate = "announced"` bans no neighbourhood and `"both"` only fixed ones.
    pub fn set_origins(&mut self, origins: Origins) {
        self.origins = Some(origins);
    }

    /// The history tap every scored address is added to, per ruleset (before [`Self::run`]).
    pub fn set_tap(&mut self, tap: SharedTap) {
        self.tap = Some(tap);
    }

    pub fn stats(&self) -> Arc<Mutex<LogStats>> {
        Arc::clone(&self.stats)
    }

    /// Counts the rounds of [`Self::run`]: it goes up at least every `WAIT_AT_MOST_MS` while
    /// the thread is alive and not stuck (the systemd watchdog reads it).
    pub fn rounds(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.rounds)
    }

    /// New rulesets and inputs; followers of unchanged inputs keep their place.
    fn configure(&mut self, rulesets: Vec<Ruleset>, inputs: Vec<InputConfig>) {
        let mut old: HashMap<(String, InputSource), Reader> = self
            .inputs
            .drain(..)
            .filter(|input| !matches!(input.follower, Reader::Broken))
            .map(|input| ((input.config.name, input.config.source), input.follower))
            .collect();
        self.rulesets = rulesets;
        // A ruleset's mode from its own scoring table (validated against its modes).
        for ruleset in &mut self.rulesets {
            if let Some(mode) = self
                .scoring
                .per_ruleset
                .get(&ruleset.name)
                .and_then(|own| own.mode.as_deref())
                && let Err(err) = ruleset.set_mode(mode)
            {
                log::error!("scoring.rulesets.{}: {err}", ruleset.name);
            }
        }
        let shared = self.rulesets.len();
        for config in inputs {
            let mut indices: Vec<usize> = self.rulesets[..shared]
                .iter()
                .enumerate()
                .filter(|(_, r)| config.rulesets.is_empty() || config.rulesets.contains(&r.name))
                .map(|(i, _)| i)
                .collect();
            // An input's mode: its own copy of each ruleset that has the mode.
            if let Some(mode) = &config.mode {
                for index in &mut indices {
                    if self.rulesets[*index].modes().any(|m| m == mode) {
                        let mut moded = self.rulesets[*index].clone();
                        if moded.set_mode(mode).is_ok() {
                            self.rulesets.push(moded);
                            *index = self.rulesets.len() - 1;
                        }
                    }
                }
            }
            for wanted in &config.rulesets {
                if !self.rulesets.iter().any(|r| &r.name == wanted) {
                    log::error!("input {}: no ruleset named {wanted:?}", config.name);
                }
            }
            let follower = old
                .remove(&(config.name.clone(), config.source.clone()))
                .unwrap_or_else(|| {
                    let start = match (self.saved.get(&config.name), &config.source) {
                        (Some(saved), InputSource::File(file)) if saved.file == *file => {
                            Start::At {
                                inode: saved.inode,
                                offset: saved.offset,
                            }
                        }
                        _ if config.start_at_end => Start::End,
                        _ => Start::Beginning,
                    };
                    let cursor = self
                        .saved
                        .get(&config.name)
                        .and_then(|saved| saved.cursor.clone());
                    Reader::open(&config, start, cursor.as_deref())
                });
            let first_pass = FirstPass::new(
                indices.iter().map(|&i| &self.rulesets[i]),
                &RulesetLimits::default(),
            );
            self.inputs.push(Input {
                config,
                follower,
                rulesets: indices,
                first_pass,
                last_error: None,
            });
        }
    }

    /// Read what is new in every input, one [`Budget`](input::Budget) each; blocks go to
    /// `owner`. Then publish the counters. `MoreWaiting` when some input has more to read.
    pub fn poll(&mut self, owner: &Handle) -> Progress {
        let now_unix = self.clock.now_unix();
        let now_ms = now_unix.saturating_mul(1000);
        let mut progress = Progress::CaughtUp;
        // Once per round: a reload swaps the table in between rounds, never within one.
        let table = self.origins.as_ref().map(Origins::table);
        // (ruleset, address) pairs for the tap, added under one lock at the end of the round.
        let mut tapped: Vec<(&str, std::net::IpAddr)> = Vec::new();
        let tapping = self.tap.is_some();
        for input in &mut self.inputs {
            let rulesets: Vec<&Ruleset> =
                input.rulesets.iter().map(|&i| &self.rulesets[i]).collect();
            let shared_board = &mut self.board;
            let boards = &mut self.boards;
            let sessions = &mut self.sessions;
            let evidence = &mut self.evidence;
            let offenders = &mut self.offenders;
            let scoring = &self.scoring;
            let counters = &mut self.counters;
            let first_pass = &input.first_pass;
            let mut lines = 0u64;
            let result = input.follower.poll(&mut |bytes| {
                lines += 1;
                let line = String::from_utf8_lossy(bytes);
                for (matched, outcome, hits) in
                    apply_all_passed(&rulesets, first_pass, &line, Some(sessions), now_ms)
                {
                    for hit in hits {
                        *counters
                            .matches
                            .entry((matched.name.clone(), hit.to_owned()))
                            .or_default() += 1;
                    }
                    let counts = counters.rulesets.entry(matched.name.clone()).or_default();
                    counts.lines += 1;
                    if matches!(outcome, Outcome::Scored { .. }) {
                        counts.scored += 1;
                    }
                    if matches!(outcome, Outcome::Ambiguous { .. }) {
                        *counters.ambiguous.entry(matched.name.clone()).or_default() += 1;
                    }
                    if let Outcome::Scored { address, .. } = outcome {
                        evidence.add(address, &line);
                    }
                    let board = match boards.get_mut(&matched.name) {
                        Some(own) => own,
                        None => &mut *shared_board,
                    };
                    let Outcome::Scored { address, score } = outcome else {
                        continue;
                    };
                    let scored = board.add(address, score, now_ms);
                    // What the board took with a positive score is a source the ruleset
                    // scored; excluded local addresses and negative scores (a login that
                    // worked) are not.
                    if tapping && score > 0 && scored != Scored::Ignored {
                        tapped.push((matched.name.as_str(), address));
                    }
                    if let Scored::Crossed(total) = scored {
                        let scoring = scoring.for_ruleset(&matched.name);
                        for ban in
                            offenders.on_threshold(address, now_unix, scoring, table.as_deref())
                        {
                            if let Some(counts) = counters.rulesets.get_mut(&matched.name) {
                                counts.blocks += 1;
                            }
                            let mut reason =
                                format!("log score {total} (ruleset {})", matched.name);
                            if !ban.reason.is_empty() {
                                reason = format!("{reason}; {}", ban.reason);
                            }
                            // Not waited for: scoring goes on while the owner applies it.
                            drop(owner.block(BlockOrder {
                                prefixes: vec![ban.prefix],
                                source: Source::Ruleset(matched.name.as_str().into()),
                                reason,
                                expires: Expiry::After(ban.duration),
                                force: false,
                                evidence: evidence.lines(address),
                                replace_own: false,
                            }));
                        }
                    }
                }
            });
            match result {
                Ok(more) => {
                    if more == Progress::MoreWaiting {
                        progress = Progress::MoreWaiting;
                    }
                    if input.last_error.take().is_some() {
                        log::info!("input {}: reading again", input.config.name);
                    }
                }
                Err(err) => {
                    // Once per error, not once per poll.
                    let text = err.to_string();
                    if input.last_error.as_ref() != Some(&text) {
                        log::warn!(
                            "input {} ({}): {text}",
                            input.config.name,
                            describe(&input.config.source)
                        );
                        input.last_error = Some(text);
                    }
                }
            }
            *counters.lines.entry(input.config.name.clone()).or_default() += lines;
        }
        if let Some(tap) = &self.tap
            && !tapped.is_empty()
        {
            tap.with(|tap| {
                for (ruleset, address) in tapped {
                    tap.add_scored(ruleset, address);
                }
            });
        }
        self.publish();
        progress
    }

    /// Bring the counters up to date and swap a copy in for the scrapes: the lock is held for
    /// the swap only, never while anything is read or scored.
    fn publish(&mut self) {
        let counters = &mut self.counters;
        counters.scored_addresses =
            (self.board.len() + self.boards.values().map(ScoreBoard::len).sum::<usize>()) as u64;
        counters.sessions = self.sessions.stats();
        counters.sessions_bytes = self.sessions.approximate_bytes() as u64;
        counters.open.clear();
        for input in &self.inputs {
            let name = &input.config.name;
            let _ = counters
                .truncated
                .insert(name.clone(), input.follower.truncated_lines());
            let _ = counters
                .open
                .insert(name.clone(), u64::from(input.follower.is_open()));
            if let Some(refusals) = input.follower.refusals() {
                for (found, count) in refusals.counts() {
                    let _ = counters
                        .refused
                        .insert((name.clone(), found.to_owned()), count);
                }
            }
            if let Reader::Journal(journal) = &input.follower {
                let _ = counters.restarts.insert(name.clone(), journal.restarts());
                let _ = counters.exits.insert(name.clone(), journal.exits());
            }
        }
        let snapshot = counters.clone();
        let previous = std::mem::replace(
            &mut *self
                .stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            snapshot,
        );
        // Freed after the lock is let go.
        drop(previous);
    }

    fn waker(&self) -> Waker {
        let files: Vec<PathBuf> = self
            .inputs
            .iter()
            .filter_map(|input| match &input.config.source {
                InputSource::File(file) => Some(file.clone()),
                InputSource::Pipe(_) | InputSource::Stdin | InputSource::Journal { .. } => None,
            })
            .collect();
        Waker::new(&files)
    }

    /// Write the read positions and the repeat offenders (atomically: temporary file, rename).
    pub fn save_positions(&mut self) {
        self.offenders.save();
        for input in &self.inputs {
            if let (Reader::File(follower), InputSource::File(file)) =
                (&input.follower, &input.config.source)
                && let Some((inode, offset)) = follower.position()
            {
                let _ = self.saved.insert(
                    input.config.name.clone(),
                    Position {
                        file: file.clone(),
                        inode,
                        offset,
                        cursor: None,
                    },
                );
            }
            if let Reader::Journal(journal) = &input.follower
                && let Some(cursor) = journal.cursor()
            {
                let _ = self.saved.insert(
                    input.config.name.clone(),
                    Position {
                        cursor: Some(cursor.to_owned()),
                        ..Position::default()
                    },
                );
            }
        }
        let written = serde_json::to_vec(&self.saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| replace_file(&self.positions_file, &bytes));
        match written {
            Ok(()) => self.last_save_error = None,
            Err(err) => {
                // Every second otherwise: once per error.
                let text = err.to_string();
                if self.last_save_error.as_ref() != Some(&text) {
                    log::warn!(
                        "saving log positions to {}: {text}",
                        self.positions_file.display()
                    );
                    self.last_save_error = Some(text);
                }
            }
        }
    }

    /// Poll until told to stop; positions are saved every second and at the end. While an
    /// input has more waiting, the rounds follow each other without sleeping, and each one
    /// ends with the counters published and the commands looked at.
    pub fn run(mut self, commands: &mpsc::Receiver<LogCommand>, owner: &Handle) {
        let mut last_save = Instant::now();
        let mut waker = self.waker();
        let mut progress = Progress::CaughtUp;
        let mut fds: Vec<RawFd> = Vec::new();
        loop {
            let _: u64 = self
                .rounds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            fds.clear();
            for input in &self.inputs {
                input.follower.wait_fds(&mut fds);
            }
            let timeout = match progress {
                Progress::MoreWaiting => 0,
                Progress::CaughtUp => WAIT_AT_MOST_MS,
            };
            waker.wait(&fds, timeout);
            match commands.try_recv() {
                Ok(LogCommand::Stop) | Err(mpsc::TryRecvError::Disconnected) => break,
                Ok(LogCommand::Reload {
                    rulesets,
                    inputs,
                    scoring,
                }) => {
                    let scoring = *scoring;
                    if scoring != self.scoring {
                        // Scores carry over; only their policy changes.
                        self.board.set_policy(scoring.board);
                        self.sessions.set_limits(scoring.sessions);
                        self.scoring = scoring;
                        self.sync_boards();
                    }
                    self.configure(rulesets, inputs);
                    waker = self.waker();
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            progress = self.poll(owner);
            if last_save.elapsed() >= Duration::from_secs(1) {
                self.save_positions();
                last_save = Instant::now();
            }
        }
        // One last round (bounded: a backlog does not hold up the stop), then the positions.
        let _: Progress = self.poll(owner);
        self.save_positions();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn a_burst_is_scored_in_rounds_each_published() {
        let dir = std::env::temp_dir().join(format!("xdpguard-logs-rounds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("auth.log");
        std::fs::write(&log, "").unwrap();
        let rulesets =
            ruleset::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets/sshd.toml"))
                .unwrap();
        let inputs = vec![InputConfig {
            name: "auth".into(),
            source: InputSource::File(log.clone()),
            rulesets: Vec::new(),
            start_at_end: true,
            mode: None,
        }];
        let mut scoring = LogScoring::new(
            &dir,
            rulesets,
            inputs,
            ScoringConfig::default(),
            Arc::new(SystemClock),
        );
        let stats = scoring.stats();
        let (commands, _inbox) = mpsc::channel();
        let owner = Handle::new(commands);
        // 3 MiB and more: three rounds at least.
        let line = "Nov 22 10:00:01 fw sshd[7]: Invalid user x from 192.0.2.1 port 22\n";
        let total = (3 << 20) / line.len() + 1;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(line.repeat(total).as_bytes())
            .unwrap();
        let published = || {
            stats
                .lock()
                .unwrap()
                .lines
                .get("auth")
                .copied()
                .unwrap_or(0)
        };
        assert_eq!(scoring.poll(&owner), Progress::MoreWaiting);
        let first = published();
        assert!(0 < first && first < total as u64, "{first} of {total}");
        let mut rounds = 1;
        while scoring.poll(&owner) == Progress::MoreWaiting {
            rounds += 1;
            assert!(rounds < 1000);
        }
        assert!(rounds >= 3, "{rounds}");
        assert_eq!(published(), total as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A ruleset with its own policy blocks at its own threshold, an input's mode switches the
    /// ruleset's tagged rules on, and the block carries the lines that scored it.
    #[test]
    fn per_ruleset_policy_input_modes_and_evidence_reach_the_owner() {
        let dir = std::env::temp_dir().join(format!("xdpguard-logs-policy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("app.log");
        std::fs::write(&log, "").unwrap();
        let rulesets = ruleset::parse(
            r#"
[[ruleset]]
name = "app"
programs = ["app"]
[ruleset.modes]
normal = []
loud = ["loud"]

[[ruleset.rule]]
name = "failed"
match = '^failed login from (?P<address>[0-9.]+)$'
score = 2

[[ruleset.rule]]
name = "probe"
tags = ["loud"]
match = '^probe from (?P<address>[0-9.]+)$'
score = 2
"#,
            Path::new("app.toml"),
        )
        .unwrap();
        let inputs = vec![InputConfig {
            name: "app".into(),
            source: InputSource::File(log.clone()),
            rulesets: Vec::new(),
            start_at_end: false,
            mode: Some("loud".into()),
        }];
        let global = ScoringConfig {
            board: score::ScoringPolicy {
                exclude_local: false,
                ..ScoringConfig::default().board
            },
            ..ScoringConfig::default()
        };
        // The global threshold (10) would need six lines; the ruleset's own (3) two.
        let mut own = global.clone();
        own.board.threshold = 3;
        let scoring = ScoringConfig {
            per_ruleset: BTreeMap::from([("app".to_owned(), own)]),
            ..global
        };
        let mut logs = LogScoring::new(&dir, rulesets, inputs, scoring, Arc::new(SystemClock));
        let (commands, inbox) = mpsc::channel();
        let owner = Handle::new(commands);
        std::fs::write(
            &log,
            "Nov 22 10:00:01 h app[1]: failed login from 203.0.113.5\nNov 22 10:00:02 h app[1]: probe from 203.0.113.5\n",
        )
        .unwrap();
        while logs.poll(&owner) == Progress::MoreWaiting {}
        let orders: Vec<BlockOrder> = inbox
            .try_iter()
            .filter_map(|command| match command {
                crate::enforce::owner::Command::Block { order, .. } => Some(order),
                _ => None,
            })
            .collect();
        assert_eq!(orders.len(), 1, "one block, at the ruleset's own threshold");
        assert_eq!(orders[0].prefixes, vec!["203.0.113.5".parse().unwrap()]);
        assert_eq!(
            orders[0].evidence,
            [
                "Nov 22 10:00:01 h app[1]: failed login from 203.0.113.5",
                "Nov 22 10:00:02 h app[1]: probe from 203.0.113.5"
            ]
        );
        let stats = logs.stats();
        let counts = stats.lock().unwrap().rulesets["app"];
        assert_eq!(
            counts,
            RulesetCounts {
                lines: 2,
                scored: 2,
                blocks: 1
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Scored sources reach the tap per ruleset, once per round, and nothing else does
    /// (local, negative, ambiguous); five blocked inside an announced /24 block the /24.
    #[test]
    fn scored_sources_reach_the_tap_and_announced_prefixes_aggregate() {
        let dir = std::env::temp_dir().join(format!("xdpguard-logs-tap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("app.log");
        std::fs::write(&log, "").unwrap();
        let rulesets = ruleset::parse(
            r#"
[[ruleset]]
name = "app"
programs = ["app"]

[[ruleset.rule]]
name = "failed"
match = '^failed login from (?P<address>[0-9.]+)$'
score = 2

[[ruleset.rule]]
name = "accepted"
match = '^accepted login from (?P<address>[0-9.]+)$'
score = -2

[[ruleset.rule]]
name = "user"
match = '^user (?P<user>.*) failed from (?P<address>[0-9.]+) port \d+(?: .*)?$'
score = 2

[[ruleset]]
name = "web"
programs = ["web"]

[[ruleset.rule]]
name = "failed"
match = '^failed login from (?P<address>[0-9.]+)$'
score = 2
"#,
            Path::new("app.toml"),
        )
        .unwrap();
        let inputs = vec![InputConfig {
            name: "app".into(),
            source: InputSource::File(log.clone()),
            rulesets: Vec::new(),
            start_at_end: false,
            mode: None,
        }];
        let scoring = ScoringConfig {
            board: score::ScoringPolicy {
                threshold: 1,
                ..ScoringConfig::default().board
            },
            aggregate: offenders::Aggregate::Announced,
            ..ScoringConfig::default()
        };
        let mut logs = LogScoring::new(&dir, rulesets, inputs, scoring, Arc::new(SystemClock));
        let mut builder = crate::origins::TableBuilder::new();
        builder.add(
            "12.34.56.0/24".parse().unwrap(),
            crate::origins::OriginAs::Single(64500),
            50,
        );
        logs.set_origins(Origins::with_table(builder.build()));
        let tap = SharedTap::new();
        logs.set_tap(tap.clone());
        let (commands, inbox) = mpsc::channel();
        let owner = Handle::new(commands);
        let mut text = String::new();
        for i in 1..=5 {
            text.push_str(&format!(
                "Nov 22 10:00:0{i} h app[1]: failed login from 12.34.56.{i}\n"
            ));
        }
        text.push_str(
            "Nov 22 10:00:06 h app[1]: failed login from 10.0.0.1\n\
             Nov 22 10:00:07 h app[1]: accepted login from 12.34.57.1\n\
             Nov 22 10:00:08 h app[1]: user x failed from 12.34.57.2 port 1 failed from 12.34.57.3 port 2\n\
             Nov 22 10:00:09 h web[2]: failed login from 12.34.58.1\n",
        );
        std::fs::write(&log, text).unwrap();
        while logs.poll(&owner) == Progress::MoreWaiting {}
        let taken = tap.take();
        let scored: Vec<(&str, Vec<String>)> = taken
            .scored
            .iter()
            .map(|s| {
                (
                    s.ruleset.as_str(),
                    s.addresses.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            scored,
            [
                (
                    "app",
                    (1..=5).map(|i| format!("12.34.56.{i}")).collect::<Vec<_>>()
                ),
                ("web", vec!["12.34.58.1".to_owned()]),
            ]
        );
        assert_eq!(logs.stats().lock().unwrap().ambiguous["app"], 1);
        let orders: Vec<BlockOrder> = inbox
            .try_iter()
            .filter_map(|command| match command {
                crate::enforce::owner::Command::Block { order, .. } => Some(order),
                _ => None,
            })
            .collect();
        let whole: Vec<&BlockOrder> = orders
            .iter()
            .filter(|order| order.prefixes == ["12.34.56.0/24".parse().unwrap()])
            .collect();
        assert_eq!(whole.len(), 1, "{orders:?}");
        assert!(
            whole[0]
                .reason
                .ends_with("; announced 12.34.56.0/24 of AS64500: 5 addresses banned"),
            "{}",
            whole[0].reason
        );
        // Nothing more for the next round: the lines were added once.
        let _ = logs.poll(&owner);
        assert_eq!(tap.take().scored, []);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
