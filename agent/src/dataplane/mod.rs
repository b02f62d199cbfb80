//! The kernel side: load the XDP program, attach it, edit its lists, read its counters.
//!
//! This is the only module that touches aya. Everything above it speaks [`Prefix`],
//! [`BlockEntry`] and [`Stats`].
use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use xdpguard_common::{
    AllowEntry, BlockEntry, DataplaneConfig, Family, PROGRAM_NAME, STAT_COUNT, Stat, StatValue,
    capacity, config_flags, map_names,
};

use crate::prefix::Prefix;

pub mod baseline;

/// The enforcement program, built by `build.rs`.
static XDPGUARD_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpguard"));

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
            Self::BlockHost => "block-host",
            Self::BlockPrefix => "block-prefix",
        }
    }
}

/// A list and family, e.g. `block-host/ipv4`.
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
        }
    }
}

impl Capacities {
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

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    Native,
    Generic,
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
    #[error("list {list} is full (capacity {capacity} entries); {prefix} was not added")]
    ListFull {
        list: ListId,
        capacity: u32,
        prefix: Prefix,
    },
}

/// Counters summed over all CPUs, indexed by [`Stat`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats([StatValue; STAT_COUNT as usize]);

impl Stats {
    pub const fn get(&self, stat: Stat) -> StatValue {
        self.0[stat as usize]
    }

    /// `self - earlier`, per counter.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = *self;
        for (now, then) in out.0.iter_mut().zip(earlier.0.iter()) {
            now.packets = now.packets.wrapping_sub(then.packets);
            now.bytes = now.bytes.wrapping_sub(then.bytes);
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (Stat, StatValue)> + '_ {
        Stat::ALL.into_iter().map(|stat| (stat, self.get(stat)))
    }
}

/// A block entry with the prefix it is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockListEntry {
    pub prefix: Prefix,
    pub entry: BlockEntry,
}

struct Maps {
    allow_v4: LpmTrie<MapData, [u8; 4], AllowEntry>,
    allow_v6: LpmTrie<MapData, [u8; 16], AllowEntry>,
    host_v4: HashMap<MapData, [u8; 4], BlockEntry>,
    host_v6: HashMap<MapData, [u8; 16], BlockEntry>,
    prefix_v4: LpmTrie<MapData, [u8; 4], BlockEntry>,
    prefix_v6: LpmTrie<MapData, [u8; 16], BlockEntry>,
    stats: PerCpuArray<MapData, StatValue>,
    config: Array<MapData, DataplaneConfig>,
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MissingMap(name))?;
    T::try_from(map).map_err(|source| DataplaneError::Map { map: name, source })
}

impl Maps {
    fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            allow_v4: take_map(ebpf, map_names::ALLOW_V4)?,
            allow_v6: take_map(ebpf, map_names::ALLOW_V6)?,
            host_v4: take_map(ebpf, map_names::BLOCK_HOST_V4)?,
            host_v6: take_map(ebpf, map_names::BLOCK_HOST_V6)?,
            prefix_v4: take_map(ebpf, map_names::BLOCK_PREFIX_V4)?,
            prefix_v6: take_map(ebpf, map_names::BLOCK_PREFIX_V6)?,
            stats: take_map(ebpf, map_names::STATS)?,
            config: take_map(ebpf, map_names::CONFIG)?,
        })
    }
}

/// What a lookup by exact key found.
fn found<V>(result: Result<V, MapError>, map: &'static str) -> Result<Option<V>, DataplaneError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(DataplaneError::Map { map, source }),
    }
}

/// Whether a delete removed something.
fn removed(result: Result<(), MapError>, map: &'static str) -> Result<bool, DataplaneError> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(false),
        Err(source) => Err(DataplaneError::Map { map, source }),
    }
}

fn v4(prefix: &Prefix) -> [u8; 4] {
    match prefix.addr() {
        IpAddr::V4(addr) => addr.octets(),
        IpAddr::V6(_) => unreachable!("IPv4 list given an IPv6 prefix"),
    }
}

fn v6(prefix: &Prefix) -> [u8; 16] {
    match prefix.addr() {
        IpAddr::V6(addr) => addr.octets(),
        IpAddr::V4(_) => unreachable!("IPv6 list given an IPv4 prefix"),
    }
}

fn prefix_of(addr: IpAddr, len: u32) -> Prefix {
    // Keys come from our own maps, so the length always fits.
    Prefix::new(addr, u8::try_from(len).unwrap_or(u8::MAX)).unwrap_or_else(|_| Prefix::host(addr))
}

/// The loaded XDP program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    maps: Maps,
    capacities: Capacities,
    attachments: BTreeMap<String, (XdpLinkId, AttachedMode)>,
}

impl Dataplane {
    /// Load the program and create its maps (nothing is attached yet).
    ///
    /// # Errors
    /// Without the privileges to load BPF, or when the kernel's verifier rejects the program.
    pub fn load(capacities: Capacities) -> Result<Self, DataplaneError> {
        if XDPGUARD_OBJECT.is_empty() {
            return Err(DataplaneError::NoProgramObject);
        }
        let mut loader = EbpfLoader::new();
        for list in ListId::ALL {
            let _: &mut EbpfLoader<'_> =
                loader.map_max_entries(list.map_name(), capacities.of(list));
        }
        let mut ebpf = loader.load(XDPGUARD_OBJECT).map_err(DataplaneError::Load)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram(PROGRAM_NAME))?
            .try_into()
            .map_err(DataplaneError::Program)?;
        program.load().map_err(DataplaneError::Program)?;
        let maps = Maps::take(&mut ebpf)?;
        Ok(Self {
            ebpf,
            maps,
            capacities,
            attachments: BTreeMap::new(),
        })
    }

    fn program(&self) -> Result<&Xdp, DataplaneError> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram(PROGRAM_NAME))?
            .try_into()
            .map_err(DataplaneError::Program)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram(PROGRAM_NAME))?
            .try_into()
            .map_err(DataplaneError::Program)
    }

    pub const fn capacities(&self) -> Capacities {
        self.capacities
    }

    /// Attach to `interface` (in the caller's network namespace).
    ///
    /// # Errors
    /// When the interface does not exist or refuses the mode.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        let attach_error = |source| DataplaneError::Attach {
            interface: interface.to_owned(),
            mode,
            source,
        };
        let program = self.program_mut()?;
        let (link, attached) = match mode {
            AttachMode::Native => (
                program
                    .attach(interface, XdpMode::Driver)
                    .map_err(attach_error)?,
                AttachedMode::Native,
            ),
            AttachMode::Generic => (
                program
                    .attach(interface, XdpMode::Skb)
                    .map_err(attach_error)?,
                AttachedMode::Generic,
            ),
            AttachMode::Auto => match program.attach(interface, XdpMode::Driver) {
                Ok(link) => (link, AttachedMode::Native),
                Err(native_error) => {
                    log::warn!(
                        "{interface}: native XDP refused ({native_error}); falling back to generic mode, which runs later in the stack and costs more per packet"
                    );
                    (
                        program
                            .attach(interface, XdpMode::Skb)
                            .map_err(attach_error)?,
                        AttachedMode::Generic,
                    )
                }
            },
        };
        let _: Option<_> = self
            .attachments
            .insert(interface.to_owned(), (link, attached));
        Ok(attached)
    }

    /// Detach from `interface`.
    ///
    /// # Errors
    /// When xdpguard is not attached there.
    pub fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let (link, _) = self
            .attachments
            .remove(interface)
            .ok_or_else(|| DataplaneError::NotAttached(interface.to_owned()))?;
        self.program_mut()?
            .detach(link)
            .map_err(DataplaneError::Program)
    }

    /// Interfaces xdpguard is attached to, with their mode.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, AttachedMode)> {
        self.attachments
            .iter()
            .map(|(name, (_, mode))| (name.as_str(), *mode))
    }

    /// Count matches as would-drop and pass them, or go back to dropping.
    ///
    /// # Errors
    /// When the config map cannot be written.
    pub fn set_dry_run(&mut self, dry_run: bool) -> Result<(), DataplaneError> {
        let config = DataplaneConfig {
            flags: if dry_run { config_flags::DRY_RUN } else { 0 },
        };
        self.maps
            .config
            .set(0, config, 0)
            .map_err(|source| DataplaneError::Map {
                map: map_names::CONFIG,
                source,
            })
    }

    /// Block `prefix` until `expires_ns` on the `CLOCK_MONOTONIC` clock (0 = never). An
    /// existing entry keeps its counters and gets the new expiry.
    ///
    /// # Errors
    /// When the list is full, or the map cannot be written.
    pub fn block(&mut self, prefix: &Prefix, expires_ns: u64) -> Result<(), DataplaneError> {
        let list = ListId::block_list_of(prefix);
        let existing = self.block_entry(prefix)?.unwrap_or_default();
        let entry = BlockEntry {
            expires_ns,
            prefix_len: u32::from(prefix.prefix_len()),
            ..existing
        };
        let key_len = u32::from(prefix.prefix_len());
        let result = match (list.kind, list.family) {
            (ListKind::BlockHost, Family::Ipv4) => self.maps.host_v4.insert(v4(prefix), entry, 0),
            (ListKind::BlockHost, Family::Ipv6) => self.maps.host_v6.insert(v6(prefix), entry, 0),
            (_, Family::Ipv4) => {
                self.maps
                    .prefix_v4
                    .insert(&Key::new(key_len, v4(prefix)), entry, 0)
            }
            (_, Family::Ipv6) => {
                self.maps
                    .prefix_v6
                    .insert(&Key::new(key_len, v6(prefix)), entry, 0)
            }
        };
        self.inserted(result, list, prefix)
    }

    /// Turn a failed insert into [`DataplaneError::ListFull`] where that is what happened.
    fn inserted(
        &self,
        result: Result<(), MapError>,
        list: ListId,
        prefix: &Prefix,
    ) -> Result<(), DataplaneError> {
        match result {
            Ok(()) => Ok(()),
            // A full hash map says E2BIG, a full LPM trie ENOSPC.
            Err(MapError::SyscallError(err))
                if matches!(
                    err.io_error.raw_os_error(),
                    Some(libc::E2BIG | libc::ENOSPC)
                ) =>
            {
                Err(DataplaneError::ListFull {
                    list,
                    capacity: self.capacities.of(list),
                    prefix: *prefix,
                })
            }
            Err(source) => Err(DataplaneError::Map {
                map: list.map_name(),
                source,
            }),
        }
    }

    /// Remove `prefix` from its block list. Returns whether it was there.
    ///
    /// # Errors
    /// When the map cannot be written.
    pub fn unblock(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError> {
        let list = ListId::block_list_of(prefix);
        let key_len = u32::from(prefix.prefix_len());
        let result = match (list.kind, list.family) {
            (ListKind::BlockHost, Family::Ipv4) => self.maps.host_v4.remove(&v4(prefix)),
            (ListKind::BlockHost, Family::Ipv6) => self.maps.host_v6.remove(&v6(prefix)),
            (_, Family::Ipv4) => self.maps.prefix_v4.remove(&Key::new(key_len, v4(prefix))),
            (_, Family::Ipv6) => self.maps.prefix_v6.remove(&Key::new(key_len, v6(prefix))),
        };
        removed(result, list.map_name())
    }

    /// The block entry keyed exactly by `prefix`, with its counters.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn block_entry(&self, prefix: &Prefix) -> Result<Option<BlockEntry>, DataplaneError> {
        let list = ListId::block_list_of(prefix);
        let key_len = u32::from(prefix.prefix_len());
        let name = list.map_name();
        let entry = match (list.kind, list.family) {
            (ListKind::BlockHost, Family::Ipv4) => {
                found(self.maps.host_v4.get(&v4(prefix), 0), name)?
            }
            (ListKind::BlockHost, Family::Ipv6) => {
                found(self.maps.host_v6.get(&v6(prefix), 0), name)?
            }
            (_, Family::Ipv4) => found(
                self.maps.prefix_v4.get(&Key::new(key_len, v4(prefix)), 0),
                name,
            )?,
            (_, Family::Ipv6) => found(
                self.maps.prefix_v6.get(&Key::new(key_len, v6(prefix)), 0),
                name,
            )?,
        };
        // An LPM lookup answers with the longest covering prefix; keep only an exact match.
        Ok(entry.filter(|entry| entry.prefix_len == key_len))
    }

    /// Every block entry, hosts first.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn block_entries(&self) -> Result<Vec<BlockListEntry>, DataplaneError> {
        let mut out = Vec::new();
        let map_err = |map| move |source| DataplaneError::Map { map, source };
        for item in self.maps.host_v4.iter() {
            let (addr, entry) = item.map_err(map_err(map_names::BLOCK_HOST_V4))?;
            out.push(BlockListEntry {
                prefix: Prefix::host(Ipv4Addr::from(addr).into()),
                entry,
            });
        }
        for item in self.maps.host_v6.iter() {
            let (addr, entry) = item.map_err(map_err(map_names::BLOCK_HOST_V6))?;
            out.push(BlockListEntry {
                prefix: Prefix::host(Ipv6Addr::from(addr).into()),
                entry,
            });
        }
        for item in self.maps.prefix_v4.iter() {
            let (key, entry) = item.map_err(map_err(map_names::BLOCK_PREFIX_V4))?;
            out.push(BlockListEntry {
                prefix: prefix_of(Ipv4Addr::from(key.data()).into(), key.prefix_len()),
                entry,
            });
        }
        for item in self.maps.prefix_v6.iter() {
            let (key, entry) = item.map_err(map_err(map_names::BLOCK_PREFIX_V6))?;
            out.push(BlockListEntry {
                prefix: prefix_of(Ipv6Addr::from(key.data()).into(), key.prefix_len()),
                entry,
            });
        }
        Ok(out)
    }

    /// Let `prefix` through even where a block entry covers it.
    ///
    /// # Errors
    /// When the list is full, or the map cannot be written.
    pub fn allow(&mut self, prefix: &Prefix) -> Result<(), DataplaneError> {
        let list = ListId::allow_list_of(prefix);
        let key_len = u32::from(prefix.prefix_len());
        let existing = self.allow_entry(prefix)?.unwrap_or_default();
        let entry = AllowEntry {
            prefix_len: key_len,
            ..existing
        };
        let result = match list.family {
            Family::Ipv4 => self
                .maps
                .allow_v4
                .insert(&Key::new(key_len, v4(prefix)), entry, 0),
            Family::Ipv6 => self
                .maps
                .allow_v6
                .insert(&Key::new(key_len, v6(prefix)), entry, 0),
        };
        self.inserted(result, list, prefix)
    }

    /// Remove `prefix` from the allowlist. Returns whether it was there.
    ///
    /// # Errors
    /// When the map cannot be written.
    pub fn unallow(&mut self, prefix: &Prefix) -> Result<bool, DataplaneError> {
        let list = ListId::allow_list_of(prefix);
        let key_len = u32::from(prefix.prefix_len());
        let result = match list.family {
            Family::Ipv4 => self.maps.allow_v4.remove(&Key::new(key_len, v4(prefix))),
            Family::Ipv6 => self.maps.allow_v6.remove(&Key::new(key_len, v6(prefix))),
        };
        removed(result, list.map_name())
    }

    /// The allowlist entry keyed exactly by `prefix`.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn allow_entry(&self, prefix: &Prefix) -> Result<Option<AllowEntry>, DataplaneError> {
        let list = ListId::allow_list_of(prefix);
        let key_len = u32::from(prefix.prefix_len());
        let entry = match list.family {
            Family::Ipv4 => found(
                self.maps.allow_v4.get(&Key::new(key_len, v4(prefix)), 0),
                list.map_name(),
            )?,
            Family::Ipv6 => found(
                self.maps.allow_v6.get(&Key::new(key_len, v6(prefix)), 0),
                list.map_name(),
            )?,
        };
        Ok(entry.filter(|entry| entry.prefix_len == key_len))
    }

    /// The global counters, summed over CPUs.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        let mut stats = Stats::default();
        for stat in Stat::ALL {
            let per_cpu =
                self.maps
                    .stats
                    .get(&(stat as u32), 0)
                    .map_err(|source| DataplaneError::Map {
                        map: map_names::STATS,
                        source,
                    })?;
            let total = &mut stats.0[stat as usize];
            for value in per_cpu.iter() {
                total.packets += value.packets;
                total.bytes += value.bytes;
            }
        }
        Ok(stats)
    }

    /// Run the program once over `frame` with `BPF_PROG_TEST_RUN`, or `repeat` times for a
    /// timing. Returns the XDP action and the kernel's mean time per run.
    ///
    /// # Errors
    /// The kernel refuses frames shorter than an Ethernet header (14 bytes).
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), DataplaneError> {
        test_run(self.program()?, frame, repeat)
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
