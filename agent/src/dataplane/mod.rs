//! The kernel side: load the XDP program, attach it, edit its lists, read its counters.
//!
//! This is the only module that touches aya. Everything above it speaks [`Prefix`],
//! [`BlockEntry`] and [`Stats`].
use std::{
    collections::BTreeMap,
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, IterableMap as _, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key,
    },
    programs::{
        ProgramError, TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        xdp::XdpLinkId,
    },
};
use aya_obj::programs::XdpAttachType;
use xdpguard_common::{
    AllowEntry, BlockEntry, DataplaneConfig, Family, IFINDEX_LIMIT, MAX_INTERFACES, PROGRAM_NAME,
    STAT_COUNT, SourceVolume, Stat, StatValue, capacity, config_flags, map_names,
};

use crate::prefix::Prefix;

mod volume;

pub use volume::{DrainCount, VolumeReader};

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
    #[error("draining volume map {map}")]
    Drain {
        map: &'static str,
        #[source]
        source: io::Error,
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
    iface_slot: Array<MapData, u32>,
    config: Array<MapData, DataplaneConfig>,
    volume_v4: HashMap<MapData, [u8; 4], SourceVolume>,
    volume_v6: HashMap<MapData, [u8; 16], SourceVolume>,
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

fn pinned_map<T>(
    dir: &Path,
    name: &'static str,
    wrap: fn(MapData) -> aya::maps::Map,
) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map_err = |source| DataplaneError::Map { map: name, source };
    let data = MapData::from_pin(dir.join(name)).map_err(map_err)?;
    // The typed conversion checks key and value sizes: pins of another layout are refused.
    T::try_from(wrap(data)).map_err(map_err)
}

impl Maps {
    fn from_pins(dir: &Path) -> Result<Self, DataplaneError> {
        use aya::maps::Map;
        Ok(Self {
            allow_v4: pinned_map(dir, map_names::ALLOW_V4, Map::LpmTrie)?,
            allow_v6: pinned_map(dir, map_names::ALLOW_V6, Map::LpmTrie)?,
            host_v4: pinned_map(dir, map_names::BLOCK_HOST_V4, Map::HashMap)?,
            host_v6: pinned_map(dir, map_names::BLOCK_HOST_V6, Map::HashMap)?,
            prefix_v4: pinned_map(dir, map_names::BLOCK_PREFIX_V4, Map::LpmTrie)?,
            prefix_v6: pinned_map(dir, map_names::BLOCK_PREFIX_V6, Map::LpmTrie)?,
            stats: pinned_map(dir, map_names::STATS, Map::PerCpuArray)?,
            iface_slot: pinned_map(dir, map_names::IFACE_SLOT, Map::Array)?,
            config: pinned_map(dir, map_names::CONFIG, Map::Array)?,
            volume_v4: pinned_map(dir, map_names::VOLUME_V4, Map::LruHashMap)?,
            volume_v6: pinned_map(dir, map_names::VOLUME_V6, Map::LruHashMap)?,
        })
    }

    fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            allow_v4: take_map(ebpf, map_names::ALLOW_V4)?,
            allow_v6: take_map(ebpf, map_names::ALLOW_V6)?,
            host_v4: take_map(ebpf, map_names::BLOCK_HOST_V4)?,
            host_v6: take_map(ebpf, map_names::BLOCK_HOST_V6)?,
            prefix_v4: take_map(ebpf, map_names::BLOCK_PREFIX_V4)?,
            prefix_v6: take_map(ebpf, map_names::BLOCK_PREFIX_V6)?,
            stats: take_map(ebpf, map_names::STATS)?,
            iface_slot: take_map(ebpf, map_names::IFACE_SLOT)?,
            config: take_map(ebpf, map_names::CONFIG)?,
            volume_v4: take_map(ebpf, map_names::VOLUME_V4)?,
            volume_v6: take_map(ebpf, map_names::VOLUME_V6)?,
        })
    }
}

/// `union bpf_attr`'s `batch` member, for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Run one `BPF_MAP_*_BATCH` `command`; the kernel updates `attr.count` (how far it got),
/// also on error.
///
/// # Safety
/// `attr`'s key, value and batch-token pointers must be valid for what `command` reads and
/// writes: `attr.count` keys and values of the map's sizes.
unsafe fn batch_command(command: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: a valid bpf_attr; the caller vouches for the buffers it points to.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `BPF_MAP_UPDATE_BATCH` of `keys[i] → values[i]` (create or replace). `Err((n, error))`:
/// the kernel stopped after `n` elements because of `error` (for an error about the whole
/// call, such as no batch support, `n` is 0).
fn update_batch<K, V>(map: &MapData, keys: &[K], values: &[V]) -> Result<(), (usize, io::Error)> {
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let count = keys.len().min(values.len());
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: u32::try_from(count).unwrap_or(u32::MAX),
        map_fd: u32::try_from(map.fd().as_fd().as_raw_fd()).unwrap_or(u32::MAX),
        // The kernel accepts no flags here but BPF_F_LOCK: no BPF_NOEXIST.
        elem_flags: 0,
        flags: 0,
    };
    let requested = attr.count as usize;
    // SAFETY: keys and values hold `count` elements of the map's key and value sizes, alive
    // for the call.
    let Err(error) = (unsafe { batch_command(BPF_MAP_UPDATE_BATCH, &mut attr) }) else {
        return if requested == count {
            Ok(())
        } else {
            Err((requested, io::Error::from_raw_os_error(libc::E2BIG)))
        };
    };
    // Per-element failures report how far the kernel got; anything else failed the call.
    let processed = match error.raw_os_error() {
        Some(libc::E2BIG | libc::ENOMEM | libc::ENOSPC) => (attr.count as usize).min(requested),
        _ => 0,
    };
    Err((processed, error))
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

/// An interface the program is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub mode: AttachedMode,
    /// Its block of counters in `STATS`.
    pub slot: u32,
}

/// Whether [`Dataplane::open_pinned`] found a running data path or started one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Program, maps and links were pinned by an earlier run; they kept enforcing meanwhile.
    Adopted,
    Fresh,
}

/// The index of `interface` in the caller's network namespace.
fn if_index(interface: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    (ifindex != 0).then_some(ifindex)
}

/// The XDP program: loaded by this process, or adopted from pins.
enum ProgramHandle {
    Loaded(Box<Ebpf>),
    Adopted(Box<Xdp>),
}

/// The XDP program and its maps.
pub struct Dataplane {
    program: ProgramHandle,
    maps: Maps,
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
}

/// The `CONFIG` bit saying `list` has entries (block lists only).
const fn nonempty_flag(list: ListId) -> u64 {
    match (list.kind, list.family) {
        (ListKind::BlockHost, Family::Ipv4) => config_flags::HOST_V4_NONEMPTY,
        (ListKind::BlockHost, Family::Ipv6) => config_flags::HOST_V6_NONEMPTY,
        (ListKind::BlockPrefix, Family::Ipv4) => config_flags::PREFIX_V4_NONEMPTY,
        (ListKind::BlockPrefix, Family::Ipv6) => config_flags::PREFIX_V6_NONEMPTY,
        (ListKind::Allow, _) => 0,
    }
}

const PROGRAM_PIN: &str = "program";
const LINK_PIN_PREFIX: &str = "link-";
/// `bpf_map_update_elem` flags.
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn pin_error(path: &Path) -> impl FnOnce(aya::pin::PinError) -> DataplaneError + '_ {
    move |source| DataplaneError::Pin {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataplaneError + '_ {
    move |source| DataplaneError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Make sure `dir` exists on a BPF filesystem, mounting one there when it is not (as inside
/// `ip netns exec`, which remounts /sys without /sys/fs/bpf).
///
/// # Errors
/// When the directory cannot be created or bpffs cannot be mounted.
pub fn ensure_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    let is_bpffs = |path: &Path| -> Result<bool, DataplaneError> {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io_error(path)(io::Error::other("path contains NUL")))?;
        // SAFETY: a zeroed statfs is a valid out-parameter.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and out pointer.
        if unsafe { libc::statfs(c_path.as_ptr(), &raw mut stat) } != 0 {
            return Err(io_error(path)(io::Error::last_os_error()));
        }
        Ok(stat.f_type == BPF_FS_MAGIC)
    };
    // The nearest existing ancestor tells which filesystem new directories would land on.
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if !is_bpffs(existing)? {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        if !is_bpffs(dir)? {
            log::info!("mounting a BPF filesystem on {}", dir.display());
            let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|_| io_error(dir)(io::Error::other("path contains NUL")))?;
            // SAFETY: valid C strings; "bpf" needs no mount data.
            let rc = unsafe {
                libc::mount(
                    c"bpf".as_ptr(),
                    target.as_ptr(),
                    c"bpf".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(io_error(dir)(io::Error::last_os_error()));
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))
}

impl Dataplane {
    /// Load the program and create its maps (nothing is attached yet). Everything is released
    /// when the value is dropped.
    ///
    /// # Errors
    /// Without the privileges to load BPF, or when the kernel's verifier rejects the program.
    pub fn load(capacities: Capacities) -> Result<Self, DataplaneError> {
        let (ebpf, maps) = Self::load_object(capacities, None)?;
        Ok(Self {
            program: ProgramHandle::Loaded(Box::new(ebpf)),
            maps,
            capacities,
            pin_dir: None,
            attachments: BTreeMap::new(),
            owned_links: BTreeMap::new(),
            flags: 0,
            block_counts: BTreeMap::new(),
        })
    }

    fn load_object(
        capacities: Capacities,
        pin_dir: Option<&Path>,
    ) -> Result<(Ebpf, Maps), DataplaneError> {
        if XDPGUARD_OBJECT.is_empty() {
            return Err(DataplaneError::NoProgramObject);
        }
        let mut loader = EbpfLoader::new();
        for list in ListId::ALL {
            let _: &mut EbpfLoader<'_> =
                loader.map_max_entries(list.map_name(), capacities.of(list));
        }
        let _: &mut EbpfLoader<'_> = loader
            .map_max_entries(map_names::VOLUME_V4, capacities.volume_v4)
            .map_max_entries(map_names::VOLUME_V6, capacities.volume_v6);
        let mut ebpf = loader.load(XDPGUARD_OBJECT).map_err(DataplaneError::Load)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram(PROGRAM_NAME))?
            .try_into()
            .map_err(DataplaneError::Program)?;
        program.load().map_err(DataplaneError::Program)?;
        if let Some(dir) = pin_dir {
            let path = dir.join(PROGRAM_PIN);
            program.pin(&path).map_err(pin_error(&path))?;
            for name in map_names::ALL {
                let map = ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
                let path = dir.join(name);
                map.pin(&path).map_err(pin_error(&path))?;
            }
        }
        let maps = Maps::take(&mut ebpf)?;
        Ok((ebpf, maps))
    }

    /// Adopt the program, maps and links pinned under `pin_dir` by an earlier run, or load a
    /// fresh program and pin it there. A pinned data path keeps enforcing while no daemon runs.
    /// `capacities` only apply to a fresh load; adopted maps keep theirs.
    ///
    /// # Errors
    /// When bpffs cannot be mounted, the pins are unreadable or of another layout, or loading
    /// fails.
    pub fn open_pinned(
        pin_dir: &Path,
        capacities: Capacities,
    ) -> Result<(Self, Opened), DataplaneError> {
        ensure_bpffs(pin_dir)?;
        let program_pin = pin_dir.join(PROGRAM_PIN);
        if !program_pin.exists() {
            // Half-written pins from a crash during a fresh start: start over.
            Self::remove_pins(pin_dir)?;
            ensure_bpffs(pin_dir)?;
            let (ebpf, maps) = Self::load_object(capacities, Some(pin_dir))?;
            let dataplane = Self {
                program: ProgramHandle::Loaded(Box::new(ebpf)),
                maps,
                capacities,
                pin_dir: Some(pin_dir.to_path_buf()),
                attachments: BTreeMap::new(),
                owned_links: BTreeMap::new(),
                flags: 0,
                block_counts: BTreeMap::new(),
            };
            return Ok((dataplane, Opened::Fresh));
        }
        let program = Xdp::from_pin(&program_pin, XdpAttachType::Interface)
            .map_err(DataplaneError::Program)?;
        let maps = Maps::from_pins(pin_dir)?;
        let mut capacities = Capacities::default();
        for list in ListId::ALL {
            let path = pin_dir.join(list.map_name());
            let info = MapData::from_pin(&path)
                .and_then(|map| map.info())
                .map_err(|source| DataplaneError::Map {
                    map: list.map_name(),
                    source,
                })?;
            capacities.set(list, info.max_entries());
        }
        let volume_capacity = |map: &MapData, name: &'static str| {
            map.info()
                .map(|info| info.max_entries())
                .map_err(|source| DataplaneError::Map { map: name, source })
        };
        capacities.volume_v4 = volume_capacity(maps.volume_v4.map(), map_names::VOLUME_V4)?;
        capacities.volume_v6 = volume_capacity(maps.volume_v6.map(), map_names::VOLUME_V6)?;
        let mut dataplane = Self {
            program: ProgramHandle::Adopted(Box::new(program)),
            maps,
            capacities,
            pin_dir: Some(pin_dir.to_path_buf()),
            attachments: BTreeMap::new(),
            owned_links: BTreeMap::new(),
            flags: 0,
            block_counts: BTreeMap::new(),
        };
        dataplane.flags = dataplane
            .maps
            .config
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: map_names::CONFIG,
                source,
            })?
            .flags;
        let _: Vec<BlockListEntry> = dataplane.recount()?;
        dataplane.adopt_links()?;
        Ok((dataplane, Opened::Adopted))
    }

    /// Pick up the links pinned as `link-<mode>-<interface>`.
    fn adopt_links(&mut self) -> Result<(), DataplaneError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(());
        };
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((mode, interface)) = name
                .strip_prefix(LINK_PIN_PREFIX)
                .and_then(|rest| rest.split_once('-'))
            else {
                continue;
            };
            let mode = match mode {
                "native" => AttachedMode::Native,
                "generic" => AttachedMode::Generic,
                _ => continue,
            };
            let path = entry.path();
            let link = PinnedLink::from_pin(&path).map_err(|source| DataplaneError::Link {
                path: path.clone(),
                source,
            })?;
            // Holding the pin is what keeps the link; this handle is not needed.
            drop(link);
            let ifindex = if_index(interface).unwrap_or(0);
            let slot = self.slot_of(ifindex)?;
            let _: Option<_> = self.attachments.insert(
                interface.to_owned(),
                Attachment {
                    ifindex,
                    mode,
                    slot,
                },
            );
        }
        Ok(())
    }

    /// Detach everything pinned under `pin_dir` and delete the pins: the data path is gone.
    ///
    /// # Errors
    /// When a pin cannot be removed.
    pub fn remove_pins(pin_dir: &Path) -> Result<(), DataplaneError> {
        let entries = match std::fs::read_dir(pin_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(io_error(pin_dir)(err)),
        };
        // Links first, so the program stops before its maps go.
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .collect();
        paths.sort_by_key(|path| {
            !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(LINK_PIN_PREFIX))
        });
        for path in paths {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        match std::fs::remove_dir(pin_dir) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error(pin_dir)(err)),
        }
    }

    fn program(&self) -> &Xdp {
        match &self.program {
            ProgramHandle::Adopted(program) => program,
            ProgramHandle::Loaded(ebpf) => ebpf
                .program(PROGRAM_NAME)
                .and_then(|program| <&Xdp>::try_from(program).ok())
                .expect("the loaded object holds the XDP program (checked at load)"),
        }
    }

    fn program_mut(&mut self) -> &mut Xdp {
        match &mut self.program {
            ProgramHandle::Adopted(program) => program,
            ProgramHandle::Loaded(ebpf) => ebpf
                .program_mut(PROGRAM_NAME)
                .and_then(|program| <&mut Xdp>::try_from(program).ok())
                .expect("the loaded object holds the XDP program (checked at load)"),
        }
    }

    pub const fn capacities(&self) -> Capacities {
        self.capacities
    }

    /// Entries in a block list, as this process has counted them (recounted from the kernel
    /// at adoption and at every [`Self::recount`]).
    pub fn block_count(&self, list: ListId) -> u64 {
        self.block_counts.get(&list).copied().unwrap_or(0)
    }

    /// The interface slot for `ifindex`, assigning a free one if it has none.
    fn slot_of(&mut self, ifindex: u32) -> Result<u32, DataplaneError> {
        if ifindex == 0 || ifindex >= IFINDEX_LIMIT {
            return Ok(0);
        }
        let map_err = |source| DataplaneError::Map {
            map: map_names::IFACE_SLOT,
            source,
        };
        let current = self.maps.iface_slot.get(&ifindex, 0).map_err(map_err)?;
        if current != 0 {
            return Ok(current);
        }
        let used: Vec<u32> = self.attachments.values().map(|a| a.slot).collect();
        let Some(slot) = (1..MAX_INTERFACES).find(|slot| !used.contains(slot)) else {
            log::warn!(
                "more than {} interfaces: ifindex {ifindex} counts with the unattributed frames",
                MAX_INTERFACES - 1
            );
            return Ok(0);
        };
        self.maps
            .iface_slot
            .set(ifindex, slot, 0)
            .map_err(map_err)?;
        Ok(slot)
    }

    /// Attach to `interface` (in the caller's network namespace). With a pin directory the
    /// link is pinned and outlives this process; an interface already attached is kept.
    ///
    /// # Errors
    /// When the interface does not exist or refuses the mode.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        if let Some(existing) = self.attachments.get(interface) {
            return Ok(existing.mode);
        }
        let ifindex = if_index(interface)
            .ok_or_else(|| DataplaneError::NoSuchInterface(interface.to_owned()))?;
        let slot = self.slot_of(ifindex)?;
        let attach_error = |source| DataplaneError::Attach {
            interface: interface.to_owned(),
            mode,
            source,
        };
        let program = self.program_mut();
        let (link, attached) = match mode {
            AttachMode::Native => (
                program
                    .attach_to_if_index(ifindex, XdpMode::Driver)
                    .map_err(attach_error)?,
                AttachedMode::Native,
            ),
            AttachMode::Generic => (
                program
                    .attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(attach_error)?,
                AttachedMode::Generic,
            ),
            AttachMode::Auto => match program.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(link) => (link, AttachedMode::Native),
                Err(native_error) => {
                    log::warn!(
                        "{interface}: native XDP refused ({native_error}); falling back to generic mode, which runs later in the stack and costs more per packet"
                    );
                    (
                        program
                            .attach_to_if_index(ifindex, XdpMode::Skb)
                            .map_err(attach_error)?,
                        AttachedMode::Generic,
                    )
                }
            },
        };
        if let Some(dir) = self.pin_dir.clone() {
            let path = dir.join(format!("{LINK_PIN_PREFIX}{attached}-{interface}"));
            let link = self
                .program_mut()
                .take_link(link)
                .map_err(DataplaneError::Program)?;
            let link = FdLink::try_from(link).map_err(|source| DataplaneError::Link {
                path: path.clone(),
                source,
            })?;
            let _: PinnedLink = link.pin(&path).map_err(pin_error(&path))?;
        } else {
            let _: Option<_> = self.owned_links.insert(interface.to_owned(), link);
        }
        let _: Option<_> = self.attachments.insert(
            interface.to_owned(),
            Attachment {
                ifindex,
                mode: attached,
                slot,
            },
        );
        Ok(attached)
    }

    /// Detach from `interface` (and delete its link pin).
    ///
    /// # Errors
    /// When xdpguard is not attached there.
    pub fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let attachment = self
            .attachments
            .remove(interface)
            .ok_or_else(|| DataplaneError::NotAttached(interface.to_owned()))?;
        if let Some(link) = self.owned_links.remove(interface) {
            self.program_mut()
                .detach(link)
                .map_err(DataplaneError::Program)?;
        }
        if let Some(dir) = &self.pin_dir {
            let path = dir.join(format!("{LINK_PIN_PREFIX}{}-{interface}", attachment.mode));
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// Interfaces xdpguard is attached to.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, Attachment)> {
        self.attachments
            .iter()
            .map(|(name, attachment)| (name.as_str(), *attachment))
    }

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

    /// A handle that drains the per-source volume maps from another thread.
    ///
    /// # Errors
    /// When the map descriptors cannot be duplicated, or the CPU count is unknown.
    pub fn volume_reader(&self) -> Result<VolumeReader, DataplaneError> {
        VolumeReader::new(self.maps.volume_v4.map(), self.maps.volume_v6.map())
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

    /// Count the entries of the block lists again and set the list-not-empty bits to match
    /// (after someone else edited the maps). Returns the entries it read.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn recount(&mut self) -> Result<Vec<BlockListEntry>, DataplaneError> {
        let entries = self.block_entries()?;
        let mut counts: BTreeMap<ListId, u64> = BTreeMap::new();
        for entry in &entries {
            *counts
                .entry(ListId::block_list_of(&entry.prefix))
                .or_default() += 1;
        }
        for list in ListId::ALL {
            let flag = nonempty_flag(list);
            if counts.get(&list).copied().unwrap_or(0) > 0 {
                self.flags |= flag;
            } else {
                self.flags &= !flag;
            }
        }
        self.block_counts = counts;
        self.write_flags()?;
        Ok(entries)
    }

    /// Block `prefix` until `expires_ns` on the `CLOCK_MONOTONIC` clock (0 = never). An
    /// existing entry keeps its counters and gets the new expiry.
    ///
    /// # Errors
    /// When the list is full, or the map cannot be written.
    pub fn block(&mut self, prefix: &Prefix, expires_ns: u64) -> Result<(), DataplaneError> {
        let list = ListId::block_list_of(prefix);
        // Set before the first entry goes in, so the program never skips a live entry.
        if self.flags & nonempty_flag(list) == 0 {
            self.flags |= nonempty_flag(list);
            self.write_flags()?;
        }
        let fresh = BlockEntry {
            expires_ns,
            prefix_len: u32::from(prefix.prefix_len()),
            ..BlockEntry::default()
        };
        // The common case, a new entry, costs one syscall; an existing one keeps its counters.
        match self.write_block(prefix, fresh, BPF_NOEXIST) {
            Ok(()) => {
                *self.block_counts.entry(list).or_default() += 1;
                Ok(())
            }
            Err(MapError::SyscallError(err))
                if err.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                let existing = self.block_entry(prefix)?.unwrap_or_default();
                let entry = BlockEntry {
                    packets: existing.packets,
                    bytes: existing.bytes,
                    ..fresh
                };
                let result = self.write_block(prefix, entry, BPF_ANY);
                self.inserted(result, list, prefix)
            }
            Err(err) => self.inserted(Err(err), list, prefix),
        }
    }

    /// Block many prefixes that are not in the lists yet (the caller knows: an entry that is
    /// there anyway has its counters reset), with one expiry. Host entries go in with
    /// `BPF_MAP_UPDATE_BATCH`, one syscall for the lot; shorter prefixes, and anything the
    /// batch could not take (a full list), take the one-by-one path of [`Self::block`].
    /// Results are in the order of `prefixes`.
    pub fn block_new(
        &mut self,
        prefixes: &[Prefix],
        expires_ns: u64,
    ) -> Vec<Result<(), DataplaneError>> {
        let mut done = vec![false; prefixes.len()];
        let mut results: Vec<Result<(), DataplaneError>> = Vec::with_capacity(prefixes.len());
        for family in Family::ALL {
            let list = ListId {
                kind: ListKind::BlockHost,
                family,
            };
            let picked: Vec<usize> = (0..prefixes.len())
                .filter(|&i| prefixes[i].is_host() && family_of(&prefixes[i]) == family)
                .collect();
            if picked.is_empty() {
                continue;
            }
            // Set before the first entry goes in (see `block`).
            if self.flags & nonempty_flag(list) == 0 {
                self.flags |= nonempty_flag(list);
                if self.write_flags().is_err() {
                    continue;
                }
            }
            let values = vec![
                BlockEntry {
                    expires_ns,
                    prefix_len: u32::from(prefixes[picked[0]].prefix_len()),
                    ..BlockEntry::default()
                };
                picked.len()
            ];
            let outcome = match family {
                Family::Ipv4 => {
                    let keys: Vec<[u8; 4]> = picked.iter().map(|&i| v4(&prefixes[i])).collect();
                    update_batch(self.maps.host_v4.map(), &keys, &values)
                }
                Family::Ipv6 => {
                    let keys: Vec<[u8; 16]> = picked.iter().map(|&i| v6(&prefixes[i])).collect();
                    update_batch(self.maps.host_v6.map(), &keys, &values)
                }
            };
            let added = match outcome {
                Ok(()) => picked.len(),
                Err((added, error)) => {
                    if added == 0 {
                        log::debug!("batch insert into {list}: {error}; one by one instead");
                    }
                    added
                }
            };
            for &i in &picked[..added] {
                done[i] = true;
            }
            *self.block_counts.entry(list).or_default() += added as u64;
        }
        for (i, prefix) in prefixes.iter().enumerate() {
            results.push(if done[i] {
                Ok(())
            } else {
                self.block(prefix, expires_ns)
            });
        }
        results
    }

    fn write_block(
        &mut self,
        prefix: &Prefix,
        entry: BlockEntry,
        flags: u64,
    ) -> Result<(), MapError> {
        let key_len = u32::from(prefix.prefix_len());
        match (ListId::block_list_of(prefix).kind, prefix.is_ipv4()) {
            (ListKind::BlockHost, true) => self.maps.host_v4.insert(v4(prefix), entry, flags),
            (ListKind::BlockHost, false) => self.maps.host_v6.insert(v6(prefix), entry, flags),
            (_, true) => self
                .maps
                .prefix_v4
                .insert(&Key::new(key_len, v4(prefix)), entry, flags),
            (_, false) => self
                .maps
                .prefix_v6
                .insert(&Key::new(key_len, v6(prefix)), entry, flags),
        }
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
        let was_there = removed(result, list.map_name())?;
        if was_there {
            let count = self.block_counts.entry(list).or_default();
            *count = count.saturating_sub(1);
            // Cleared after the last entry is gone.
            if *count == 0 {
                self.flags &= !nonempty_flag(list);
                self.write_flags()?;
            }
        }
        Ok(was_there)
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

    /// The counters of one interface slot (0: frames from interfaces without a slot, and
    /// every expired hit), summed over CPUs.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn slot_stats(&self, slot: u32) -> Result<Stats, DataplaneError> {
        let mut stats = Stats::default();
        for stat in Stat::ALL {
            let per_cpu = self
                .maps
                .stats
                .get(&(slot * STAT_COUNT + stat as u32), 0)
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

    /// The counters of all interfaces together.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        let mut total = Stats::default();
        for slot in 0..MAX_INTERFACES {
            let stats = self.slot_stats(slot)?;
            for (sum, value) in total.0.iter_mut().zip(stats.0.iter()) {
                sum.packets += value.packets;
                sum.bytes += value.bytes;
            }
        }
        Ok(total)
    }

    /// The counters of each attached interface.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn interface_stats(&self) -> Result<Vec<(String, Stats)>, DataplaneError> {
        self.attachments
            .iter()
            .map(|(name, attachment)| Ok((name.clone(), self.slot_stats(attachment.slot)?)))
            .collect()
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
