//! The kernel side: load the XDP program, attach it, edit its lists, read its counters.
//!
//! This is the only module that touches aya. Everything above it speaks [`Prefix`],
//! [`BlockEntry`] and [`Stats`], and the decision owner only the [`DataPath`] trait, which
//! [`Dataplane`] implements for the kernel (and `FakeDataPath` in memory, for tests).
//!
//! - `pins`: bpffs, loading the program or adopting a pinned one, removing the pins.
//! - `attach`: interfaces, their links and counter slots.
//! - `lists`: the allow and block lists, and the `CONFIG` bits that say which are in use.
//! - `batch`: the raw `BPF_MAP_*_BATCH` syscalls aya does not wrap.
//! - `scan`: reading the lists a chunk at a time, for reconcile.
//! - `stats`: the per-interface counters.
//! - `volume`: draining the per-source volume maps.
//! - `seam`: the [`DataPath`] trait; `fake`: its in-memory implementation (tests only).
use std::{collections::BTreeMap, fmt, io, path::PathBuf, time::Duration};

use aya::{
    maps::MapError,
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, links::LinkError, xdp::XdpLinkId},
};
use xdpguard_common::{BlockEntry, DataplaneConfig, Family, capacity, config_flags, map_names};

use crate::prefix::Prefix;

mod attach;
mod batch;
#[cfg(any(test, feature = "test-fake"))]
mod fake;
mod lengths;
mod lists;
mod pins;
mod scan;
mod seam;
mod stats;
mod summary;
mod volume;

#[cfg(any(test, feature = "test-fake"))]
pub use fake::{FakeDataPath, FakeEvent, FakeOp};
pub use pins::{Opened, RemovedPins, ensure_bpffs, map_memory};
pub use scan::{SCAN_ORDER, ScanCursor, ScanRepairs, ScannedEntry};
pub use seam::DataPath;
pub use stats::Stats;
pub use volume::{DrainCount, VolumeReader};

/// Which of the six lists an entry lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    Allow,
    /// Exact addresses (`/32`, `/128`), in a hash map.
    BlockHost,
    /// Shorter prefixes, in an LPM trie.
    BlockPrefix,
}

impl ListKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::BlockHost => "block_host",
            Self::BlockPrefix => "block_prefix",
        }
    }
}

/// A list and family, e.g. `block_host/ipv4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListId {
    pub kind: ListKind,
    pub family: Family,
}

impl ListId {
    /// The block list a prefix goes in.
    pub const fn block_list_of(prefix: &Prefix) -> Self {
        Self {
            kind: if prefix.is_host() {
                ListKind::BlockHost
            } else {
                ListKind::BlockPrefix
            },
            family: family_of(prefix),
        }
    }

    pub const fn allow_list_of(prefix: &Prefix) -> Self {
        Self {
            kind: ListKind::Allow,
            family: family_of(prefix),
        }
    }

    pub const ALL: [Self; 6] = [
        Self {
            kind: ListKind::Allow,
            family: Family::Ipv4,
        },
        Self {
            kind: ListKind::Allow,
            family: Family::Ipv6,
        },
        Self {
            kind: ListKind::BlockHost,
            family: Family::Ipv4,
        },
        Self {
            kind: ListKind::BlockHost,
            family: Family::Ipv6,
        },
        Self {
            kind: ListKind::BlockPrefix,
            family: Family::Ipv4,
        },
        Self {
            kind: ListKind::BlockPrefix,
            family: Family::Ipv6,
        },
    ];

    const fn map_name(self) -> &'static str {
        match (self.kind, self.family) {
            (ListKind::Allow, Family::Ipv4) => map_names::ALLOW_V4,
            (ListKind::Allow, Family::Ipv6) => map_names::ALLOW_V6,
            (ListKind::BlockHost, Family::Ipv4) => map_names::BLOCK_HOST_V4,
            (ListKind::BlockHost, Family::Ipv6) => map_names::BLOCK_HOST_V6,
            (ListKind::BlockPrefix, Family::Ipv4) => map_names::BLOCK_PREFIX_V4,
            (ListKind::BlockPrefix, Family::Ipv6) => map_names::BLOCK_PREFIX_V6,
        }
    }
}

impl fmt::Display for ListId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.name(), self.family.name())
    }
}

const fn family_of(prefix: &Prefix) -> Family {
    if prefix.is_ipv4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

/// How many entries each list holds at most. Fixed when the program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    pub allow_v4: u32,
    pub allow_v6: u32,
    pub block_host_v4: u32,
    pub block_host_v6: u32,
    pub block_prefix_v4: u32,
    pub block_prefix_v6: u32,
    /// Distinct sources the volume accounting tracks per drain, per family.
    pub volume_v4: u32,
    pub volume_v6: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            allow_v4: capacity::ALLOW_V4,
            allow_v6: capacity::ALLOW_V6,
            block_host_v4: capacity::BLOCK_HOST_V4,
            block_host_v6: capacity::BLOCK_HOST_V6,
            block_prefix_v4: capacity::BLOCK_PREFIX_V4,
            block_prefix_v6: capacity::BLOCK_PREFIX_V6,
            volume_v4: capacity::VOLUME_V4,
            volume_v6: capacity::VOLUME_V6,
        }
    }
}

impl Capacities {
    fn set(&mut self, list: ListId, capacity: u32) {
        let field = match (list.kind, list.family) {
            (ListKind::Allow, Family::Ipv4) => &mut self.allow_v4,
            (ListKind::Allow, Family::Ipv6) => &mut self.allow_v6,
            (ListKind::BlockHost, Family::Ipv4) => &mut self.block_host_v4,
            (ListKind::BlockHost, Family::Ipv6) => &mut self.block_host_v6,
            (ListKind::BlockPrefix, Family::Ipv4) => &mut self.block_prefix_v4,
            (ListKind::BlockPrefix, Family::Ipv6) => &mut self.block_prefix_v6,
        };
        *field = capacity;
    }

    pub const fn of(&self, list: ListId) -> u32 {
        match (list.kind, list.family) {
            (ListKind::Allow, Family::Ipv4) => self.allow_v4,
            (ListKind::Allow, Family::Ipv6) => self.allow_v6,
            (ListKind::BlockHost, Family::Ipv4) => self.block_host_v4,
            (ListKind::BlockHost, Family::Ipv6) => self.block_host_v6,
            (ListKind::BlockPrefix, Family::Ipv4) => self.block_prefix_v4,
            (ListKind::BlockPrefix, Family::Ipv6) => self.block_prefix_v6,
        }
    }
}

/// How to attach to an interface; the configuration's `interfaces.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic with a warning when the driver has no
    /// XDP support.
    #[default]
    Auto,
    /// Native (driver) mode only: attaching fails when the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works with every driver, runs later and costs more per packet.
    Generic,
}

impl AttachMode {
    /// The configuration spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this xdpguard binary was built with AYA_BUILD_SKIP=1 and holds no XDP program; build it without that variable"
    )]
    NoProgramObject,
    #[error("loading the XDP program into the kernel (needs root or CAP_BPF + CAP_NET_ADMIN)")]
    Load(#[source] aya::EbpfError),
    #[error("the XDP object has no map {0}")]
    MissingMap(&'static str),
    #[error("the XDP object has no program {0}")]
    MissingProgram(&'static str),
    #[error("map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("XDP program")]
    Program(#[source] ProgramError),
    #[error("attaching to interface {interface:?} in {mode:?} mode")]
    Attach {
        interface: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error("interface {0:?} has no xdpguard attachment")]
    NotAttached(String),
    #[error("no interface {0:?} in this network namespace")]
    NoSuchInterface(String),
    #[error("pinning {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("link pinned at {path}")]
    Link {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error(
        "pinned map {map} is a {found} map where this version expects {expected}: run `xdpguard detach` (or remove the pin directory) and start again"
    )]
    PinnedLayout {
        map: &'static str,
        found: String,
        expected: String,
    },
    #[error("{path} holds a BPF object that is not xdpguard's; give xdpguard a pin_dir of its own")]
    ForeignPin { path: PathBuf },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list {list} is full (capacity {capacity} entries); {prefix} was not added")]
    ListFull {
        list: ListId,
        capacity: u32,
        prefix: Prefix,
    },
    #[error("reading map {map}")]
    Read {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("writing map {map}")]
    Write {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("draining volume map {map}")]
    Drain {
        map: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A block entry with the prefix it is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockListEntry {
    pub prefix: Prefix,
    pub entry: BlockEntry,
}

/// The XDP program and its maps.
pub struct Dataplane {
    program: pins::ProgramHandle,
    maps: pins::Maps,
    capacities: Capacities,
    /// Where program, maps and links are pinned; `None`: everything goes away with `self`.
    pin_dir: Option<PathBuf>,
    attachments: BTreeMap<String, Attachment>,
    /// Links owned by this process (unpinned data path); dropped with the program.
    owned_links: BTreeMap<String, XdpLinkId>,
    /// What `CONFIG` holds: dry-run and the list-not-empty bits.
    flags: u64,
    /// Entries per block list, to keep the list-not-empty bits right.
    block_counts: BTreeMap<ListId, u64>,
    /// The summary bitmaps as they should be in `SUMMARY`.
    summary: Box<summary::Summary>,
    /// Where the next reconcile goes on comparing `SUMMARY` with [`Self::summary`].
    summary_verified_to: u32,
}

impl Dataplane {
    /// Count matches as would-drop and pass them, or go back to dropping.
    ///
    /// # Errors
    /// When the config map cannot be written.
    pub fn set_dry_run(&mut self, dry_run: bool) -> Result<(), DataplaneError> {
        if dry_run {
            self.flags |= config_flags::DRY_RUN;
        } else {
            self.flags &= !config_flags::DRY_RUN;
        }
        self.write_flags()
    }

    /// Count packets and bytes per source in the program (for the volume detectors), or stop.
    ///
    /// # Errors
    /// When the config map cannot be written.
    pub fn set_volume_accounting(&mut self, on: bool) -> Result<(), DataplaneError> {
        if on {
            self.flags |= config_flags::VOLUME_ACCOUNTING;
        } else {
            self.flags &= !config_flags::VOLUME_ACCOUNTING;
        }
        self.write_flags()
    }

    fn write_flags(&mut self) -> Result<(), DataplaneError> {
        let config = DataplaneConfig { flags: self.flags };
        self.maps
            .config
            .set(0, config, 0)
            .map_err(|source| DataplaneError::Map {
                map: map_names::CONFIG,
                source,
            })
    }

    /// The kernel's accumulated run time and run count of the program (counted only while the
    /// kernel's run-time statistics are on: `BPF_ENABLE_STATS`, which the benchmarks hold).
    ///
    /// # Errors
    /// When the program info cannot be read.
    pub fn run_stats(&self) -> Result<(Duration, u64), DataplaneError> {
        let info = self.program().info().map_err(DataplaneError::Program)?;
        Ok((info.run_time(), info.run_count()))
    }

    /// Run the program once over `frame` with `BPF_PROG_TEST_RUN`, or `repeat` times for a
    /// timing. Returns the XDP action and the kernel's mean time per run.
    ///
    /// # Errors
    /// The kernel refuses frames shorter than an Ethernet header (14 bytes).
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), DataplaneError> {
        test_run(self.program(), frame, repeat)
    }
}

/// `BPF_PROG_TEST_RUN` over one frame; shared with the benchmark baselines.
///
/// # Errors
/// When the kernel refuses the run.
pub fn test_run(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
) -> Result<(u32, Duration), DataplaneError> {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: repeat.max(1),
            ..TestRunOptions::new()
        })
        .map_err(DataplaneError::Program)?;
    Ok((result.return_value, result.duration))
}

/// Now on the clock `bpf_ktime_get_ns` reads (`CLOCK_MONOTONIC`), in nanoseconds.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    let _: libc::c_int = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// An interface the program is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub mode: AttachedMode,
    /// Its block of counters in `STATS`.
    pub slot: u32,
}

/// The index of `interface` in the caller's network namespace.
fn if_index(interface: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    (ifindex != 0).then_some(ifindex)
}
