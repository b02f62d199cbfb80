//! The daemon's log scoring: follow the configured inputs, run their rulesets over every new
//! line, keep scores per source, and hand a source whose score goes over the threshold to the
//! decision owner as a block from `ruleset:NAME`. Positions are saved in the state directory
//! so a restart neither re-reads nor skips lines; a reload keeps scores and positions.
pub mod config;
pub mod input;
pub mod journal;
pub mod metrics;
pub mod offenders;
pub mod ruleset;
pub mod score;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use self::{
    config::{InputConfig, InputSource},
    input::{FileFollower, Start, StreamReader, Waker},
    journal::{JournalReader, JournalSpec},
    offenders::{Offenders, ScoringConfig},
    ruleset::{Outcome, Ruleset, apply_all},
    score::{ScoreBoard, Scored},
};
use crate::{
    clock::Clock,
    enforce::{
        decision::Source,
        owner::{BlockOrder, Expiry, Handle},
    },
};

const POSITIONS: &str = "positions.json";
/// The longest the reader sleeps without a wake-up (commands, files in missing directories).
const WAIT_AT_MOST_MS: i32 = 100;

/// Counters for the metrics page.
#[derive(Clone, Debug, Default)]
pub struct LogStats {
    pub lines: BTreeMap<String, u64>,
    pub truncated: BTreeMap<String, u64>,
    /// (ruleset, rule) → matches.
    pub matches: BTreeMap<(String, String), u64>,
    pub scored_addresses: u64,
}

/// What the thread is told.
pub enum LogCommand {
    Reload {
        rulesets: Vec<Ruleset>,
        inputs: Vec<InputConfig>,
        scoring: ScoringConfig,
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
    Stream(StreamReader),
    Journal(JournalReader),
    /// Could not be opened; retried on reload.
    Broken,
}

impl Reader {
    fn open(config: &InputConfig, start: Start, cursor: Option<&str>) -> Self {
        let opened = match &config.source {
            InputSource::Journal { unit, file } => {
                let spec = JournalSpec {
                    unit: unit.clone(),
                    file: file.clone(),
                };
                return JournalReader::spawn(&spec, cursor, !config.start_at_end).map_or_else(
                    |err| {
                        log::error!("input {}: starting journalctl: {err}", config.name);
                        Self::Broken
                    },
                    Self::Journal,
                );
            }
            InputSource::File(path) => {
                let mut follower = FileFollower::new(path, start);
                // Fix the starting point now, before the daemon says it is ready.
                if let Err(err) = follower.open_now() {
                    log::warn!("input {}: {err}", config.name);
                }
                return Self::File(follower);
            }
            InputSource::Pipe(path) => StreamReader::fifo(path),
            InputSource::Stdin => StreamReader::stdin(),
        };
        opened.map_or_else(
            |err| {
                log::error!("input {}: {err}", config.name);
                Self::Broken
            },
            Self::Stream,
        )
    }

    fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
        match self {
            Self::File(follower) => follower.poll(line),
            Self::Stream(stream) => stream.poll(line),
            Self::Journal(journal) => journal.poll(line),
            Self::Broken => Ok(()),
        }
    }

    const fn truncated_lines(&self) -> u64 {
        match self {
            Self::File(follower) => follower.truncated_lines(),
            Self::Stream(stream) => stream.truncated_lines(),
            Self::Journal(_) | Self::Broken => 0,
        }
    }
}

struct Input {
    config: InputConfig,
    follower: Reader,
    /// Indices into the rulesets, in order.
    rulesets: Vec<usize>,
}

pub struct LogScoring {
    rulesets: Vec<Ruleset>,
    inputs: Vec<Input>,
    board: ScoreBoard,
    scoring: ScoringConfig,
    positions_file: PathBuf,
    saved: BTreeMap<String, Position>,
    stats: Arc<Mutex<LogStats>>,
    clock: Arc<dyn Clock>,
    offenders: Offenders,
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
        let saved: BTreeMap<String, Position> = std::fs::read(&positions_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let mut scoring_state = Self {
            rulesets: Vec::new(),
            inputs: Vec::new(),
            board: ScoreBoard::new(scoring.board),
            scoring,
            positions_file,
            saved,
            stats: Arc::new(Mutex::new(LogStats::default())),
            clock,
            offenders: Offenders::open(Some(state_dir)),
        };
        scoring_state.configure(rulesets, inputs);
        scoring_state
    }

    pub fn stats(&self) -> Arc<Mutex<LogStats>> {
        Arc::clone(&self.stats)
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
        for config in inputs {
            let indices: Vec<usize> = self
                .rulesets
                .iter()
                .enumerate()
                .filter(|(_, r)| config.rulesets.is_empty() || config.rulesets.contains(&r.name))
                .map(|(i, _)| i)
                .collect();
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
            self.inputs.push(Input {
                config,
                follower,
                rulesets: indices,
            });
        }
    }

    /// Read what is new in every input; blocks go to `owner`.
    pub fn poll(&mut self, owner: &Handle) {
        let now_unix = self.clock.now_unix();
        let now_ms = now_unix.saturating_mul(1000);
        let mut stats = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for input in &mut self.inputs {
            let rulesets: Vec<&Ruleset> =
                input.rulesets.iter().map(|&i| &self.rulesets[i]).collect();
            let board = &mut self.board;
            let offenders = &mut self.offenders;
            let scoring = &self.scoring;
            let mut lines = 0u64;
            let result = input.follower.poll(&mut |bytes| {
                lines += 1;
                let line = String::from_utf8_lossy(bytes);
                for (matched, outcome, hits) in apply_all(rulesets.iter().copied(), &line) {
                    for hit in hits {
                        *stats
                            .matches
                            .entry((matched.name.clone(), hit.to_owned()))
                            .or_default() += 1;
                    }
                    if let Outcome::Scored { address, score } = outcome
                        && let Scored::Crossed(total) = board.add(address, score, now_ms)
                    {
                        for ban in offenders.on_threshold(address, now_unix, scoring) {
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
                            }));
                        }
                    }
                }
            });
            if let Err(err) = result {
                log::warn!("input {}: {err}", input.config.name);
            }
            *stats.lines.entry(input.config.name.clone()).or_default() += lines;
            let _ = stats
                .truncated
                .insert(input.config.name.clone(), input.follower.truncated_lines());
        }
        stats.scored_addresses = self.board.len() as u64;
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
        let tmp = self.positions_file.with_extension("json.tmp");
        let written = serde_json::to_vec(&self.saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.positions_file));
        if let Err(err) = written {
            log::warn!(
                "saving log positions to {}: {err}",
                self.positions_file.display()
            );
        }
    }

    /// Poll until told to stop; positions are saved every second and at the end.
    pub fn run(mut self, commands: &mpsc::Receiver<LogCommand>, owner: &Handle) {
        let mut last_save = Instant::now();
        let mut waker = self.waker();
        loop {
            let fds: Vec<std::os::fd::RawFd> = self
                .inputs
                .iter()
                .filter_map(|input| match &input.follower {
                    Reader::Stream(stream) => stream.raw_fd(),
                    Reader::Journal(journal) => Some(journal.raw_fd()),
                    Reader::File(_) | Reader::Broken => None,
                })
                .collect();
            waker.wait(&fds, WAIT_AT_MOST_MS);
            match commands.try_recv() {
                Ok(LogCommand::Stop) | Err(mpsc::TryRecvError::Disconnected) => break,
                Ok(LogCommand::Reload {
                    rulesets,
                    inputs,
                    scoring,
                }) => {
                    if scoring != self.scoring {
                        // Scores carry over; only their policy changes.
                        self.board.set_policy(scoring.board);
                        self.scoring = scoring;
                    }
                    self.configure(rulesets, inputs);
                    waker = self.waker();
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            self.poll(owner);
            if last_save.elapsed() >= Duration::from_secs(1) {
                self.save_positions();
                last_save = Instant::now();
            }
        }
        self.poll(owner);
        self.save_positions();
    }
}
