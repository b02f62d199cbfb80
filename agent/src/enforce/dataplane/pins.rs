//! Loading the program, pinning it with its maps and links on bpffs, adopting what an
//! earlier run pinned, and removing the pins.
use std::{
    collections::BTreeMap,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, IterableMap as _, LpmTrie, MapData, MapError, MapInfo, PerCpuArray},
    programs::{
        ProgramInfo, Xdp,
        links::{FdLink, LinkType, PinnedLink},
        loaded_programs,
    },
};
use aya_obj::{generated::bpf_prog_type, programs::XdpAttachType};
use xdpguard_common::{
    AllowEntry, BlockEntry, DataplaneConfig, LengthMask, PROGRAM_NAME, PrefixKeyV4, PrefixKeyV6,
    SourceVolume, StatValue, map_names,
};

use super::{
    AttachedMode, Attachment, BlockListEntry, Capacities, Dataplane, DataplaneError, ListId,
    if_index,
};

/// The enforcement program, built by `build.rs`.
static XDPGUARD_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpguard"));

pub(super) struct Maps {
    pub(super) allow_v4: LpmTrie<MapData, [u8; 4], AllowEntry>,
    pub(super) allow_v6: LpmTrie<MapData, [u8; 16], AllowEntry>,
    pub(super) host_v4: HashMap<MapData, [u8; 4], BlockEntry>,
    pub(super) host_v6: HashMap<MapData, [u8; 16], BlockEntry>,
    pub(super) prefix_v4: HashMap<MapData, PrefixKeyV4, BlockEntry>,
    pub(super) prefix_v6: HashMap<MapData, PrefixKeyV6, BlockEntry>,
    pub(super) stats: PerCpuArray<MapData, StatValue>,
    pub(super) iface_slot: Array<MapData, u32>,
    pub(super) config: Array<MapData, DataplaneConfig>,
    pub(super) volume_v4: HashMap<MapData, [u8; 4], SourceVolume>,
    pub(super) volume_v6: HashMap<MapData, [u8; 16], SourceVolume>,
    pub(super) summary: Array<MapData, u64>,
    pub(super) volume_sample: Array<MapData, u32>,
    pub(super) region_v4: Array<MapData, u32>,
    pub(super) region_v6: HashMap<MapData, u32, LengthMask>,
    pub(super) wide_lengths: Array<MapData, LengthMask>,
}

pub(super) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
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
    // The wrapper is ours to choose, so check the kernel's type too (an LPM trie pinned by an
    // older version under a name that is a hash now has the same key size).
    let kind = data.info().map_err(map_err)?.map_type();
    let wrapped = wrap(data);
    if let Ok(expected) = expected_type(&wrapped)
        && !matches!(kind, Ok(found) if found == expected)
    {
        return Err(DataplaneError::PinnedLayout {
            map: name,
            found: format!("{kind:?}"),
            expected: format!("{expected:?}"),
        });
    }
    // The typed conversion checks key and value sizes: pins of another layout are refused.
    T::try_from(wrapped).map_err(map_err)
}

/// The kernel map type a wrapper stands for.
fn expected_type(map: &aya::maps::Map) -> Result<aya::maps::MapType, ()> {
    use aya::maps::{Map, MapType};
    Ok(match map {
        Map::Array(_) => MapType::Array,
        Map::HashMap(_) => MapType::Hash,
        Map::LruHashMap(_) => MapType::LruHash,
        Map::LpmTrie(_) => MapType::LpmTrie,
        Map::PerCpuArray(_) => MapType::PerCpuArray,
        _ => return Err(()),
    })
}

impl Maps {
    /// Each map by name, for [`Dataplane::kernel_memory`].
    fn each(&self) -> [(&'static str, &MapData); 16] {
        [
            (map_names::ALLOW_V4, self.allow_v4.map()),
            (map_names::ALLOW_V6, self.allow_v6.map()),
            (map_names::BLOCK_HOST_V4, self.host_v4.map()),
            (map_names::BLOCK_HOST_V6, self.host_v6.map()),
            (map_names::BLOCK_PREFIX_V4, self.prefix_v4.map()),
            (map_names::BLOCK_PREFIX_V6, self.prefix_v6.map()),
            (map_names::STATS, self.stats.map()),
            (map_names::IFACE_SLOT, self.iface_slot.map()),
            (map_names::CONFIG, self.config.map()),
            (map_names::VOLUME_V4, self.volume_v4.map()),
            (map_names::VOLUME_V6, self.volume_v6.map()),
            (map_names::SUMMARY, self.summary.map()),
            (map_names::VOLUME_SAMPLE, self.volume_sample.map()),
            (map_names::REGION_V4, self.region_v4.map()),
            (map_names::REGION_V6, self.region_v6.map()),
            (map_names::WIDE_LENGTHS, self.wide_lengths.map()),
        ]
    }

    fn from_pins(dir: &Path) -> Result<Self, DataplaneError> {
        use aya::maps::Map;
        Ok(Self {
            allow_v4: pinned_map(dir, map_names::ALLOW_V4, Map::LpmTrie)?,
            allow_v6: pinned_map(dir, map_names::ALLOW_V6, Map::LpmTrie)?,
            host_v4: pinned_map(dir, map_names::BLOCK_HOST_V4, Map::HashMap)?,
            host_v6: pinned_map(dir, map_names::BLOCK_HOST_V6, Map::HashMap)?,
            prefix_v4: pinned_map(dir, map_names::BLOCK_PREFIX_V4, Map::HashMap)?,
            prefix_v6: pinned_map(dir, map_names::BLOCK_PREFIX_V6, Map::HashMap)?,
            stats: pinned_map(dir, map_names::STATS, Map::PerCpuArray)?,
            iface_slot: pinned_map(dir, map_names::IFACE_SLOT, Map::Array)?,
            config: pinned_map(dir, map_names::CONFIG, Map::Array)?,
            volume_v4: pinned_map(dir, map_names::VOLUME_V4, Map::LruHashMap)?,
            volume_v6: pinned_map(dir, map_names::VOLUME_V6, Map::LruHashMap)?,
            summary: pinned_map(dir, map_names::SUMMARY, Map::Array)?,
            volume_sample: pinned_map(dir, map_names::VOLUME_SAMPLE, Map::Array)?,
            region_v4: pinned_map(dir, map_names::REGION_V4, Map::Array)?,
            region_v6: pinned_map(dir, map_names::REGION_V6, Map::HashMap)?,
            wide_lengths: pinned_map(dir, map_names::WIDE_LENGTHS, Map::Array)?,
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
            summary: take_map(ebpf, map_names::SUMMARY)?,
            volume_sample: take_map(ebpf, map_names::VOLUME_SAMPLE)?,
            region_v4: take_map(ebpf, map_names::REGION_V4)?,
            region_v6: take_map(ebpf, map_names::REGION_V6)?,
            wide_lengths: take_map(ebpf, map_names::WIDE_LENGTHS)?,
        })
    }
}

/// The kernel's account of the memory a map uses (`memlock` in its fdinfo, what `bpftool map
/// show` prints), in bytes.
///
/// # Errors
/// When the fdinfo cannot be read or has no such line.
pub fn map_memory(map: &MapData) -> io::Result<u64> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = map.fd().as_fd().as_raw_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no memlock in the map's fdinfo"))
}

impl Dataplane {
    /// Kernel memory per map (see [`map_memory`]), by name.
    ///
    /// # Errors
    /// When a map's fdinfo cannot be read.
    pub fn kernel_memory(&self) -> io::Result<Vec<(&'static str, u64)>> {
        self.maps
            .each()
            .into_iter()
            .map(|(name, map)| Ok((name, map_memory(map)?)))
            .collect()
    }
}

/// Whether [`Dataplane::open_pinned`] found a running data path or started one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Program, maps and links were pinned by an earlier run; they kept enforcing meanwhile.
    Adopted,
    Fresh,
    /// Pins of an older layout were there: removed, and a fresh program loaded and pinned.
    Migrated,
}

/// The XDP program: loaded by this process, or adopted from pins.
pub(super) enum ProgramHandle {
    Loaded(Box<Ebpf>),
    Adopted(Box<Xdp>),
}

const PROGRAM_PIN: &str = "program";
/// Link pins are named `link-<mode>-<interface>`.
pub(super) const LINK_PIN_PREFIX: &str = "link-";
/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What a pin of ours is, by its name in the pin directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PinKind {
    Program,
    Map(&'static str),
    Link,
}

impl PinKind {
    /// The kind a name of ours has; `None` for every other name (the kernel's `progs.debug`
    /// and `maps.debug` at a bpffs root, other programs' pins).
    fn of_name(name: &str) -> Option<Self> {
        if name == PROGRAM_PIN {
            return Some(Self::Program);
        }
        if let Some(map) = map_names::ALL.into_iter().find(|map| *map == name) {
            return Some(Self::Map(map));
        }
        let (mode, interface) = name.strip_prefix(LINK_PIN_PREFIX)?.split_once('-')?;
        (matches!(mode, "native" | "generic") && !interface.is_empty()).then_some(Self::Link)
    }

    /// Whether the object pinned at `path` is what this name promises: our program, the map of
    /// that name, a link of our program. A name of ours alone proves nothing where the pin
    /// directory is shared (a bpffs root), and what is not ours is never touched.
    fn holds_ours(self, path: &Path) -> bool {
        let is_our_program = |info: &ProgramInfo| {
            info.program_type() == bpf_prog_type::BPF_PROG_TYPE_XDP
                && info.name_as_str() == Some(PROGRAM_NAME)
        };
        match self {
            Self::Program => ProgramInfo::from_pin(path).is_ok_and(|info| is_our_program(&info)),
            Self::Map(name) => {
                MapInfo::from_pin(path).is_ok_and(|info| info.name_as_str() == Some(name))
            }
            Self::Link => {
                let Ok(info) =
                    PinnedLink::from_pin(path).and_then(|link| FdLink::from(link).info())
                else {
                    return false;
                };
                info.link_type().is_ok_and(|kind| kind == LinkType::Xdp)
                    && loaded_programs()
                        .filter_map(Result::ok)
                        .find(|program| program.id() == info.program_id())
                        .is_some_and(|program| is_our_program(&program))
            }
        }
    }
}

/// What [`Dataplane::remove_pins`] removed and what it left alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemovedPins {
    /// Pins of xdpguard's program, maps and links deleted.
    pub removed: usize,
    /// Entries left in place, by name: not xdpguard's (the kernel's `progs.debug` and
    /// `maps.debug` at a bpffs root, other programs' pins, directories).
    pub kept: Vec<String>,
    /// Whether the pin directory itself went too (not when others' entries are left in it, and
    /// never a mount root).
    pub removed_dir: bool,
}

pub(super) fn pin_error(path: &Path) -> impl FnOnce(aya::pin::PinError) -> DataplaneError + '_ {
    move |source| DataplaneError::Pin {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataplaneError + '_ {
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
        Ok(Self::assemble(
            ProgramHandle::Loaded(Box::new(ebpf)),
            maps,
            capacities,
            None,
        ))
    }

    /// A data path with nothing attached and no flags set yet.
    fn assemble(
        program: ProgramHandle,
        maps: Maps,
        capacities: Capacities,
        pin_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            program,
            maps,
            capacities,
            pin_dir,
            attachments: BTreeMap::new(),
            owned_links: BTreeMap::new(),
            flags: 0,
            block_counts: BTreeMap::new(),
            summary: Box::default(),
            summary_verified_to: 0,
        }
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
            .map_max_entries(map_names::VOLUME_V6, capacities.volume_v6)
            // A region per IPv6 prefix at most.
            .map_max_entries(map_names::REGION_V6, capacities.block_prefix_v6);
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
        // A data path pinned by an older xdpguard lacks maps this version's program needs (the
        // summary maps, for one), and its program cannot be given them. Replace it (the
        // decisions in the state directory are applied again right after; the entries'
        // counters and a moment of enforcement are what the upgrade costs).
        let missing = map_names::ALL
            .into_iter()
            .find(|name| !pin_dir.join(name).exists());
        let older = program_pin.exists() && missing.is_some();
        if let (true, Some(missing)) = (older, missing) {
            refuse_foreign_pins(pin_dir)?;
            let removed = remove_own_pins(pin_dir)?;
            log::warn!(
                "{} held the data path of an older xdpguard (no {missing} map): detached it ({} pins) to load this version's",
                pin_dir.display(),
                removed.removed
            );
        }
        if !program_pin.exists() {
            // Half-written pins from a crash during a fresh start: start over. The directory
            // itself stays: the daemon's lock is on it.
            let _: RemovedPins = remove_own_pins(pin_dir)?;
            refuse_foreign_pins(pin_dir)?;
            let (ebpf, maps) = Self::load_object(capacities, Some(pin_dir))?;
            let dataplane = Self::assemble(
                ProgramHandle::Loaded(Box::new(ebpf)),
                maps,
                capacities,
                Some(pin_dir.to_path_buf()),
            );
            let opened = if older {
                Opened::Migrated
            } else {
                Opened::Fresh
            };
            return Ok((dataplane, opened));
        }
        refuse_foreign_pins(pin_dir)?;
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
        let mut dataplane = Self::assemble(
            ProgramHandle::Adopted(Box::new(program)),
            maps,
            capacities,
            Some(pin_dir.to_path_buf()),
        );
        dataplane.flags = dataplane
            .maps
            .config
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: map_names::CONFIG,
                source,
            })?
            .flags;
        // What the pinned summary holds is not known here: the recount writes all of it.
        dataplane.summary.mark_all();
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
            if !PinKind::Link.holds_ours(&path) {
                log::warn!(
                    "{}: not a link of xdpguard's program; left alone",
                    path.display()
                );
                continue;
            }
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

    /// Detach everything xdpguard pinned under `pin_dir` and delete those pins: the data path
    /// is gone. Only xdpguard's own pins go (checked against the kernel's objects, not just
    /// their names); the directory goes too when nothing else is left in it and it is not a
    /// mount root (a bpffs root is fine as a pin directory).
    ///
    /// # Errors
    /// When a pin cannot be removed.
    pub fn remove_pins(pin_dir: &Path) -> Result<RemovedPins, DataplaneError> {
        let mut removed = remove_own_pins(pin_dir)?;
        if !removed.kept.is_empty() || !pin_dir.exists() || is_mount_root(pin_dir)? {
            return Ok(removed);
        }
        match std::fs::remove_dir(pin_dir) {
            Ok(()) => removed.removed_dir = true,
            // Something appeared meanwhile, or it is gone already: neither is ours to fix.
            Err(err)
                if err.kind() == io::ErrorKind::NotFound
                    || err.kind() == io::ErrorKind::DirectoryNotEmpty => {}
            Err(err) => return Err(io_error(pin_dir)(err)),
        }
        Ok(removed)
    }

    pub(super) fn program(&self) -> &Xdp {
        match &self.program {
            ProgramHandle::Adopted(program) => program,
            ProgramHandle::Loaded(ebpf) => ebpf
                .program(PROGRAM_NAME)
                .and_then(|program| <&Xdp>::try_from(program).ok())
                .expect("the loaded object holds the XDP program (checked at load)"),
        }
    }

    pub(super) fn program_mut(&mut self) -> &mut Xdp {
        match &mut self.program {
            ProgramHandle::Adopted(program) => program,
            ProgramHandle::Loaded(ebpf) => ebpf
                .program_mut(PROGRAM_NAME)
                .and_then(|program| <&mut Xdp>::try_from(program).ok())
                .expect("the loaded object holds the XDP program (checked at load)"),
        }
    }
}

/// Delete xdpguard's pins under `dir`, links first (so the program stops before its maps
/// go); everything else is left and named in [`RemovedPins::kept`].
fn remove_own_pins(dir: &Path) -> Result<RemovedPins, DataplaneError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(RemovedPins::default()),
        Err(err) => return Err(io_error(dir)(err)),
    };
    let mut report = RemovedPins::default();
    let mut ours = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        match PinKind::of_name(&name) {
            Some(kind) if kind.holds_ours(&path) => ours.push((kind != PinKind::Link, path)),
            _ => report.kept.push(name),
        }
    }
    ours.sort();
    for (_, path) in ours {
        match std::fs::remove_file(&path) {
            Ok(()) => report.removed += 1,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error(&path)(err)),
        }
    }
    report.kept.sort();
    Ok(report)
}

/// Fail when a name xdpguard pins under holds someone else's object: loading would fail on
/// it, and adopting it would enforce with another program's maps.
fn refuse_foreign_pins(dir: &Path) -> Result<(), DataplaneError> {
    let names = std::iter::once(PROGRAM_PIN).chain(map_names::ALL);
    for name in names {
        let path = dir.join(name);
        let kind = PinKind::of_name(name).expect("the names pinned are ours");
        if path.symlink_metadata().is_ok() && !kind.holds_ours(&path) {
            return Err(DataplaneError::ForeignPin { path });
        }
    }
    Ok(())
}

/// Whether `dir` is the root of a mounted filesystem (it cannot be removed).
fn is_mount_root(dir: &Path) -> Result<bool, DataplaneError> {
    let here = dir.metadata().map_err(io_error(dir))?;
    let parent_path = dir.join("..");
    let parent = parent_path.metadata().map_err(io_error(&parent_path))?;
    Ok(here.dev() != parent.dev() || here.ino() == parent.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_pins_of_ours() {
        assert_eq!(PinKind::of_name("program"), Some(PinKind::Program));
        assert_eq!(
            PinKind::of_name("BLOCK_HOST_V4"),
            Some(PinKind::Map(map_names::BLOCK_HOST_V4))
        );
        assert_eq!(PinKind::of_name("link-native-veth0"), Some(PinKind::Link));
        assert_eq!(PinKind::of_name("link-generic-fw-a"), Some(PinKind::Link));
        for foreign in [
            "progs.debug",
            "maps.debug",
            "link-native-",
            "link-bogus-veth0",
            "link-native",
            "programs",
            "stats",
            "cilium",
        ] {
            assert_eq!(PinKind::of_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn removing_pins_leaves_what_is_not_ours() {
        // A plain directory: nothing there can be a BPF object, so even our names are kept.
        let dir = std::env::temp_dir().join(format!("xdpguard-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("other-tool")).unwrap();
        for name in ["progs.debug", "CONFIG", "program"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let removed = Dataplane::remove_pins(&dir).unwrap();
        assert_eq!(
            removed,
            RemovedPins {
                removed: 0,
                kept: vec![
                    "CONFIG".to_owned(),
                    "other-tool".to_owned(),
                    "program".to_owned(),
                    "progs.debug".to_owned()
                ],
                removed_dir: false,
            }
        );
        assert!(dir.join("CONFIG").exists() && dir.join("other-tool").is_dir());
        assert!(matches!(
            refuse_foreign_pins(&dir),
            Err(DataplaneError::ForeignPin { path }) if path == dir.join("program")
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        // A missing directory: nothing to do.
        assert_eq!(
            Dataplane::remove_pins(&dir).unwrap(),
            RemovedPins::default()
        );
    }

    #[test]
    fn an_empty_pin_directory_goes_but_a_mount_root_stays() {
        let dir = std::env::temp_dir().join(format!("xdpguard-pins-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Dataplane::remove_pins(&dir).unwrap().removed_dir);
        assert!(!dir.exists());
        assert!(is_mount_root(Path::new("/")).unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!is_mount_root(&dir).unwrap());
        std::fs::remove_dir(&dir).unwrap();
    }
}
