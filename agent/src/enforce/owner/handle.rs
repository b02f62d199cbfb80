//! The front door to the decision owner: typed orders in, typed outcomes out. Everything in
//! the daemon that changes or reads decisions holds a [`Handle`]; only the owner thread
//! touches the kernel lists and the store. The control socket is one adapter onto it.
use std::{
    fmt,
    net::IpAddr,
    sync::{Arc, mpsc},
    time::Duration,
};

use crate::{
    enforce::dataplane::{Attachment, ListId, Stats},
    enforce::decision::{Change, Decision, DecisionKind, Source},
    prefix::Prefix,
};

use super::OwnerConfig;

/// How long a block lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The configured `default_ban`.
    Default,
    /// From when the owner applies it (at least a second).
    After(Duration),
    /// Until unblocked (a peer's permanent decision; the CLI's `--for never`).
    Never,
}

/// Block these prefixes, on behalf of `source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOrder {
    pub prefixes: Vec<Prefix>,
    pub source: Source,
    pub reason: String,
    pub expires: Expiry,
    /// Allow prefixes broader than the guard limit.
    pub force: bool,
    /// The log lines that led to it, newest last; the owner keeps at most
    /// [`MAX_EVIDENCE_LINES`] of at most [`MAX_EVIDENCE_LINE_BYTES`] each.
    pub evidence: Vec<String>,
    /// A block of the same kind of source in place that lasts longer takes this order's
    /// expiry (a peer that knows its decision was shortened: CrowdSec deleted the longer of
    /// two); any other source's longer block still stands.
    pub replace_own: bool,
}

/// How many evidence lines a decision keeps.
pub const MAX_EVIDENCE_LINES: usize = 5;
/// How long one kept evidence line may be (longer ones are cut at a character boundary).
pub const MAX_EVIDENCE_LINE_BYTES: usize = 512;

/// The last [`MAX_EVIDENCE_LINES`] of `lines`, each cut to [`MAX_EVIDENCE_LINE_BYTES`].
pub fn bound_evidence(mut lines: Vec<String>) -> Vec<String> {
    let excess = lines.len().saturating_sub(MAX_EVIDENCE_LINES);
    let _ = lines.drain(..excess);
    for line in &mut lines {
        if line.len() > MAX_EVIDENCE_LINE_BYTES {
            let mut cut = MAX_EVIDENCE_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
    }
    lines
}

/// Allowlist these prefixes (never expiring).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowOrder {
    pub prefixes: Vec<Prefix>,
    pub source: Source,
    pub reason: String,
}

/// Why one prefix of an order was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Broader than the guard limit, and not forced.
    TooBroad { len: u8, limit: u8 },
    /// Is, is inside or covers an address range that is never the source of unicast traffic
    /// worth blocking (multicast, broadcast, unspecified, link-local), and not forced.
    NotUnicast { range: Prefix, what: &'static str },
    /// Contains this host's own address (even forced).
    OwnAddress(IpAddr),
    /// Inside an allowlist entry.
    Allowlisted { allow: Prefix },
    /// A detector's block never shortens a longer one.
    AlreadyBlockedLonger { holder: Source },
    /// An allowlist entry from the configuration: change it there.
    ConfiguredAllow,
    /// The kernel list has no room.
    ListFull {
        list: ListId,
        capacity: u32,
        prefix: Prefix,
    },
    /// Any other kernel error, as its chain of causes.
    Kernel(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooBroad { len, limit } => write!(
                f,
                "/{len} is broader than the guard limit /{limit} (force to override)"
            ),
            Self::NotUnicast { range, what } => write!(
                f,
                "overlaps the {what} range {range}, not a unicast source (force to override)"
            ),
            Self::OwnAddress(addr) => write!(f, "contains this host's own address {addr}"),
            Self::Allowlisted { allow } => write!(f, "is allowlisted (allow entry {allow})"),
            Self::AlreadyBlockedLonger { holder } => {
                write!(f, "already blocked for longer (source {holder})")
            }
            Self::ConfiguredAllow => f.write_str("allowed by the configuration; change it there"),
            Self::ListFull {
                list,
                capacity,
                prefix,
            } => write!(
                f,
                "list {list} is full (capacity {capacity} entries); {prefix} was not added"
            ),
            Self::Kernel(message) => f.write_str(message),
        }
    }
}

/// What a block or allow order did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: u64,
    pub refused: Vec<(Prefix, Refusal)>,
}

/// What an unblock or unallow did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub removed: u64,
    /// Prefixes that had no such decision.
    pub missing: Vec<Prefix>,
    pub refused: Vec<(Prefix, Refusal)>,
}

/// Which decisions `list` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub kind: Option<DecisionKind>,
    pub source: Option<Source>,
    /// Only decisions whose source is of this one's kind, names aside (every `fleet:`
    /// decision): a peer finds its own without a counter lookup for everyone else's.
    pub source_kind: Option<Source>,
    /// Only decisions whose prefix holds this address.
    pub covering: Option<IpAddr>,
}

impl ListFilter {
    pub fn matches(&self, decision: &Decision) -> bool {
        self.kind.is_none_or(|kind| kind == decision.kind)
            && self
                .source
                .as_ref()
                .is_none_or(|source| *source == decision.origin.source)
            && self
                .source_kind
                .as_ref()
                .is_none_or(|kind| kind.same_kind(&decision.origin.source))
            && self
                .covering
                .is_none_or(|address| decision.prefix.contains(address))
    }
}

/// One decision with what its kernel entry counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub decision: Decision,
    pub packets: u64,
    pub bytes: u64,
}

/// Entries in one kernel list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListUse {
    pub list: ListId,
    pub entries: u64,
    pub capacity: u64,
}

/// The owner's view of the data path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub dry_run: bool,
    pub interfaces: Vec<(String, Attachment)>,
    pub lists: Vec<ListUse>,
    /// Per attached interface, and `-` for frames not attributed to one (and expired hits).
    pub counters: Vec<(String, Stats)>,
    pub decisions: u64,
    /// Kernel entries no decision accounts for (seen at the last reconcile).
    pub unknown_entries: u64,
    /// Inserts refused because a list was full, since start.
    pub full_list_errors: u64,
}

/// Why a command as a whole failed (per-prefix refusals are in [`Applied`] / [`Removed`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the daemon is shutting down")]
    Gone,
    #[error("no answer from the decision owner within {0:?}")]
    Timeout(Duration),
    /// The state directory could not record the order, so nothing of it was applied.
    #[error("not applied: the state directory could not record it: {0}")]
    NotRecorded(String),
    #[error("applied, but the state directory could not be synced: {0}")]
    NotSynced(String),
    #[error("{0}")]
    Kernel(String),
}

pub type Reply<T> = mpsc::Sender<Result<T, CommandError>>;

/// Where the owner hands a watcher its changes, after each batch is durable. It must not
/// block (the owner thread calls it): `false` says the watcher is gone or cannot keep up,
/// and it is dropped; the watcher sees its channel close and watches again.
pub type ChangeSink = Box<dyn FnMut(Vec<Change>) -> bool + Send>;

/// What the owner thread is asked; built only by [`Handle`].
pub enum Command {
    Block {
        order: BlockOrder,
        done: Reply<Applied>,
    },
    Allow {
        order: AllowOrder,
        done: Reply<Applied>,
    },
    Remove {
        kind: DecisionKind,
        prefixes: Vec<Prefix>,
        /// Only decisions whose source this accepts go; the others count as missing.
        held_by: Option<fn(&Source) -> bool>,
        done: Reply<Removed>,
    },
    List {
        filter: ListFilter,
        done: Reply<Vec<Entry>>,
    },
    Status {
        done: Reply<Status>,
    },
    Reload {
        config: Box<OwnerConfig>,
        done: Reply<()>,
    },
    /// Tell `sink` every change from now on; answered with the decisions in place now
    /// (those whose source `wants`). See [`Handle::watch`].
    Watch {
        wants: fn(&Source) -> bool,
        sink: ChangeSink,
        done: Reply<Vec<Decision>>,
    },
    /// Answered at once: proof that the owner's loop turns (the systemd watchdog).
    Ping {
        done: Reply<()>,
    },
    Shutdown,
}

/// An answer still to come. Dropping it is fine: the command is carried out anyway.
#[must_use = "wait for the answer, or drop it to not care"]
pub struct Pending<T>(mpsc::Receiver<Result<T, CommandError>>);

impl<T> Pending<T> {
    /// # Errors
    /// When the owner is gone or the command failed as a whole.
    pub fn wait(self) -> Result<T, CommandError> {
        self.0.recv().unwrap_or(Err(CommandError::Gone))
    }

    /// # Errors
    /// As [`Self::wait`], and when no answer comes within `limit`.
    pub fn wait_timeout(self, limit: Duration) -> Result<T, CommandError> {
        match self.0.recv_timeout(limit) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(CommandError::Timeout(limit)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CommandError::Gone),
        }
    }
}

/// The only way anything inside the daemon changes or reads decisions. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    commands: Arc<mpsc::Sender<Command>>,
}

impl Handle {
    /// A handle on an owner reading `commands`.
    pub fn new(commands: mpsc::Sender<Command>) -> Self {
        Self {
            commands: Arc::new(commands),
        }
    }

    fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Pending<T> {
        let (done, answer) = mpsc::channel();
        // A failed send drops `done`, so the answer reads as `Gone`.
        let _ = self.commands.send(command(done));
        Pending(answer)
    }

    pub fn block(&self, order: BlockOrder) -> Pending<Applied> {
        self.ask(|done| Command::Block { order, done })
    }

    pub fn unblock(&self, prefixes: Vec<Prefix>) -> Pending<Removed> {
        self.ask(|done| Command::Remove {
            kind: DecisionKind::Block,
            prefixes,
            held_by: None,
            done,
        })
    }

    /// Unblock only the prefixes whose block `held_by` accepts the source of (a peer takes
    /// back its own decisions, never an operator's or a detector's on the same prefix).
    pub fn unblock_held_by(
        &self,
        prefixes: Vec<Prefix>,
        held_by: fn(&Source) -> bool,
    ) -> Pending<Removed> {
        self.ask(|done| Command::Remove {
            kind: DecisionKind::Block,
            prefixes,
            held_by: Some(held_by),
            done,
        })
    }

    pub fn allow(&self, order: AllowOrder) -> Pending<Applied> {
        self.ask(|done| Command::Allow { order, done })
    }

    pub fn unallow(&self, prefixes: Vec<Prefix>) -> Pending<Removed> {
        self.ask(|done| Command::Remove {
            kind: DecisionKind::Allow,
            prefixes,
            held_by: None,
            done,
        })
    }

    /// Unallow only where the allow in place is `held_by`'s (as [`Self::unblock_held_by`]).
    pub fn unallow_held_by(
        &self,
        prefixes: Vec<Prefix>,
        held_by: fn(&Source) -> bool,
    ) -> Pending<Removed> {
        self.ask(|done| Command::Remove {
            kind: DecisionKind::Allow,
            prefixes,
            held_by: Some(held_by),
            done,
        })
    }

    pub fn list(&self, filter: ListFilter) -> Pending<Vec<Entry>> {
        self.ask(|done| Command::List { filter, done })
    }

    pub fn status(&self) -> Pending<Status> {
        self.ask(|done| Command::Status { done })
    }

    pub fn reload(&self, config: OwnerConfig) -> Pending<()> {
        self.ask(|done| Command::Reload {
            config: Box::new(config),
            done,
        })
    }

    /// Follow the decisions: the answer is those in place now whose source `wants` accepts;
    /// every later change goes to `sink` (a decision of a source `wants` refuses replacing
    /// one it accepts arrives as a removal). A publisher of this host's decisions (the fleet)
    /// keeps its copy with this.
    pub fn watch(&self, wants: fn(&Source) -> bool, sink: ChangeSink) -> Pending<Vec<Decision>> {
        self.ask(|done| Command::Watch { wants, sink, done })
    }

    /// Answered as soon as the owner reads it.
    pub fn ping(&self) -> Pending<()> {
        self.ask(|done| Command::Ping { done })
    }

    /// Ask the owner to stop after the commands already sent.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}
