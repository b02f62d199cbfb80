//! Benchmark baselines (`cargo xtask bench xdp`): an XDP program that only passes, one that
//! does a single stock LPM-trie lookup per packet, Debian's `xdp-filter`, and the kernel's
//! run-time statistics.
//! Errors are the agent's [`DataplaneError`], so a baseline fails the way the real program does.
use std::{
    net::IpAddr,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        IterableMap as _, LpmTrie, MapData, MapError, PerCpuHashMap, PerCpuValues, lpm_trie::Key,
    },
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use xdpguard::{
    enforce::dataplane::{AttachMode, DataplaneError, map_memory, test_run},
    prefix::Prefix,
};

// Left by the agent's build script (see build.rs); empty with `AYA_BUILD_SKIP=1`.
static BENCH_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("XDPGUARD_EBPF_OBJECTS"), "/bench-pass"));
static BENCH_LPM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("XDPGUARD_EBPF_OBJECTS"), "/bench-lpm"));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineKind {
    /// `return XDP_PASS`.
    Pass,
    /// Parse, one LPM lookup (every entry, hosts too, in one trie), drop on a hit.
    Lpm,
}

impl BaselineKind {
    const fn program_name(self) -> &'static str {
        match self {
            Self::Pass => "bench_pass",
            Self::Lpm => "bench_lpm",
        }
    }
}

pub struct Baseline {
    ebpf: Ebpf,
    kind: BaselineKind,
    lpm_v4: Option<LpmTrie<MapData, [u8; 4], u64>>,
    lpm_v6: Option<LpmTrie<MapData, [u8; 16], u64>>,
}

impl Baseline {
    /// # Errors
    /// When the object is missing (`AYA_BUILD_SKIP`) or the kernel refuses it.
    pub fn load(kind: BaselineKind) -> Result<Self, DataplaneError> {
        let object = match kind {
            BaselineKind::Pass => BENCH_PASS_OBJECT,
            BaselineKind::Lpm => BENCH_LPM_OBJECT,
        };
        if object.is_empty() {
            return Err(DataplaneError::NoProgramObject);
        }
        let mut ebpf = Ebpf::load(object).map_err(DataplaneError::Load)?;
        let program: &mut Xdp = ebpf
            .program_mut(kind.program_name())
            .ok_or(DataplaneError::MissingProgram(kind.program_name()))?
            .try_into()
            .map_err(DataplaneError::Program)?;
        program.load().map_err(DataplaneError::Program)?;
        let (lpm_v4, lpm_v6) = if kind == BaselineKind::Lpm {
            (
                Some(take_trie(&mut ebpf, "REF_LPM_V4")?),
                Some(take_trie(&mut ebpf, "REF_LPM_V6")?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            ebpf,
            kind,
            lpm_v4,
            lpm_v6,
        })
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, DataplaneError> {
        let name = self.kind.program_name();
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?
            .try_into()
            .map_err(DataplaneError::Program)
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(self.kind.program_name())
            .and_then(|program| <&Xdp>::try_from(program).ok())
            .expect("checked at load")
    }

    /// Add `prefix` to the reference trie (no-op for [`BaselineKind::Pass`]).
    ///
    /// # Errors
    /// When the trie is full or cannot be written.
    pub fn insert(&mut self, prefix: &Prefix) -> Result<(), DataplaneError> {
        let len = u32::from(prefix.prefix_len());
        let map_err = |source| DataplaneError::Map {
            map: "REF_LPM",
            source,
        };
        match (prefix.addr(), &mut self.lpm_v4, &mut self.lpm_v6) {
            (IpAddr::V4(addr), Some(trie), _) => trie
                .insert(&Key::new(len, addr.octets()), 1, 0)
                .map_err(map_err),
            (IpAddr::V6(addr), _, Some(trie)) => trie
                .insert(&Key::new(len, addr.octets()), 1, 0)
                .map_err(map_err),
            _ => Ok(()),
        }
    }

    /// `BPF_PROG_TEST_RUN`: the action and the mean time per run.
    ///
    /// # Errors
    /// When the kernel refuses the run.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), DataplaneError> {
        test_run(self.program(), frame, repeat)
    }

    /// The kernel memory of the reference tries (`memlock`, as `bpftool map show` prints it);
    /// 0 for [`BaselineKind::Pass`].
    ///
    /// # Errors
    /// When a map's fdinfo cannot be read.
    pub fn kernel_memory(&self) -> std::io::Result<u64> {
        let mut total = 0;
        if let Some(trie) = &self.lpm_v4 {
            total += map_memory(trie.map())?;
        }
        if let Some(trie) = &self.lpm_v6 {
            total += map_memory(trie.map())?;
        }
        Ok(total)
    }

    /// Attach in native mode to `interface` (caller's namespace) until detached or dropped.
    ///
    /// # Errors
    /// When the interface is missing or refuses native XDP.
    pub fn attach(&mut self, interface: &str) -> Result<XdpLinkId, DataplaneError> {
        let ifindex = if_index(interface)
            .ok_or_else(|| DataplaneError::NoSuchInterface(interface.to_owned()))?;
        self.program_mut()?
            .attach_to_if_index(ifindex, XdpMode::Driver)
            .map_err(|source| DataplaneError::Attach {
                interface: interface.to_owned(),
                mode: AttachMode::Native,
                source,
            })
    }

    /// Undo [`Self::attach`].
    ///
    /// # Errors
    /// When the kernel refuses.
    pub fn detach(&mut self, link: XdpLinkId) -> Result<(), DataplaneError> {
        self.program_mut()?
            .detach(link)
            .map_err(DataplaneError::Program)
    }

    /// The kernel's accumulated run time and run count (while [`enable_run_stats`] is held).
    ///
    /// # Errors
    /// When the program info cannot be read.
    pub fn run_stats(&self) -> Result<(Duration, u64), DataplaneError> {
        let info = self.program().info().map_err(DataplaneError::Program)?;
        Ok((info.run_time(), info.run_count()))
    }
}

/// Turn on the kernel's per-program run time accounting (`kernel.bpf_stats_enabled`) for as
/// long as the returned descriptor is open.
///
/// # Errors
/// Without CAP_SYS_ADMIN.
pub fn enable_run_stats() -> Result<OwnedFd, DataplaneError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|source| DataplaneError::Io {
        path: "BPF_ENABLE_STATS".into(),
        source: source.io_error,
    })
}

fn take_trie<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<LpmTrie<MapData, K, u64>, DataplaneError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MissingMap(name))?;
    LpmTrie::try_from(map).map_err(|source| DataplaneError::Map { map: name, source })
}

/// The index of `interface` in the caller's network namespace.
fn if_index(interface: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    (ifindex != 0).then_some(ifindex)
}

/// Debian's `xdp-filter` (xdp-tools) with its default allow policy and IP filtering (listed
/// sources are dropped): its own BPF object loaded directly (libxdp's dispatcher, which
/// `xdp-filter load` goes through, fails on these machines), its maps filled the way
/// `xdp-filter ip ADDR --mode src` fills them. A destination and a source lookup in per-CPU
/// hashes per frame, no prefixes, 10,000 addresses per family.
pub struct XdpFilter {
    ebpf: Ebpf,
    v4: PerCpuHashMap<MapData, u32, u64>,
    v6: PerCpuHashMap<MapData, [u8; 16], u64>,
    capacity: u32,
    pin_dir: PathBuf,
}

/// Where Debian installs the object, and its program.
pub const XDP_FILTER_OBJECT: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_ip.o";
const XDP_FILTER_PROGRAM: &str = "xdpfilt_alw_ip";
/// xdp-filter's `MAP_FLAG_SRC`: match the address as a source.
const XDP_FILTER_SRC: u64 = 1;

impl XdpFilter {
    /// Load the object from `path`. Its maps ask to be pinned by name: they go to a BPF
    /// filesystem of their own under the system's temporary directory, removed on drop.
    ///
    /// # Errors
    /// When the object is missing (install `xdp-tools`) or the kernel refuses it.
    pub fn load(path: &Path) -> Result<Self, DataplaneError> {
        let object = std::fs::read(path).map_err(|source| DataplaneError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let pin_dir =
            std::env::temp_dir().join(format!("xdpguard-bench-xdp-filter-{}", std::process::id()));
        xdpguard::enforce::dataplane::ensure_bpffs(&pin_dir)?;
        let pins: Vec<(&str, PathBuf)> = ["filter_ipv4", "filter_ipv6", "xdp_stats_map"]
            .into_iter()
            .map(|name| (name, pin_dir.join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &pins {
            let _: &mut EbpfLoader<'_> = loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(&object).map_err(DataplaneError::Load)?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_FILTER_PROGRAM)
            .ok_or(DataplaneError::MissingProgram(XDP_FILTER_PROGRAM))?
            .try_into()
            .map_err(DataplaneError::Program)?;
        program.load().map_err(DataplaneError::Program)?;
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))
        };
        let map_err = |map| move |source| DataplaneError::Map { map, source };
        let v4_map = take(&mut ebpf, "filter_ipv4")?;
        let capacity = match &v4_map {
            aya::maps::Map::PerCpuHashMap(data) => {
                data.info().map_err(map_err("filter_ipv4"))?.max_entries()
            }
            _ => 0,
        };
        let v4 = PerCpuHashMap::try_from(v4_map).map_err(map_err("filter_ipv4"))?;
        let v6 = PerCpuHashMap::try_from(take(&mut ebpf, "filter_ipv6")?)
            .map_err(map_err("filter_ipv6"))?;
        Ok(Self {
            ebpf,
            v4,
            v6,
            capacity,
            pin_dir,
        })
    }

    /// The kernel memory of its two address maps (`memlock`).
    ///
    /// # Errors
    /// When a map's fdinfo cannot be read.
    pub fn kernel_memory(&self) -> std::io::Result<u64> {
        Ok(map_memory(self.v4.map())? + map_memory(self.v6.map())?)
    }

    /// Addresses each family's map holds at most.
    pub const fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Drop frames from `addr`; `false` when its family's map is full.
    ///
    /// # Errors
    /// When the map cannot be written for another reason.
    pub fn insert(&mut self, addr: IpAddr) -> Result<bool, DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| DataplaneError::Io {
            path: "/sys/devices/system/cpu/possible".into(),
            source,
        })?;
        let values = PerCpuValues::try_from(vec![XDP_FILTER_SRC; cpus]).map_err(|source| {
            DataplaneError::Io {
                path: "per-CPU values".into(),
                source,
            }
        })?;
        let result = match addr {
            // The program compares the header's bytes as a u32 in memory order.
            IpAddr::V4(addr) => self.v4.insert(u32::from_ne_bytes(addr.octets()), values, 0),
            IpAddr::V6(addr) => self.v6.insert(addr.octets(), values, 0),
        };
        match result {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(err))
                if err.io_error.raw_os_error() == Some(libc::E2BIG) =>
            {
                Ok(false)
            }
            Err(source) => Err(DataplaneError::Map {
                map: "filter_ip",
                source,
            }),
        }
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(XDP_FILTER_PROGRAM)
            .and_then(|program| <&Xdp>::try_from(program).ok())
            .expect("checked at load")
    }

    /// `BPF_PROG_TEST_RUN`: the action and the mean time per run.
    ///
    /// # Errors
    /// When the kernel refuses the run.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), DataplaneError> {
        test_run(self.program(), frame, repeat)
    }

    /// As [`Baseline::run_stats`].
    ///
    /// # Errors
    /// When the program info cannot be read.
    pub fn run_stats(&self) -> Result<(Duration, u64), DataplaneError> {
        let info = self.program().info().map_err(DataplaneError::Program)?;
        Ok((info.run_time(), info.run_count()))
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        // The pins, then the BPF filesystem mounted for them, then the directory.
        if let Ok(entries) = std::fs::read_dir(&self.pin_dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if let Ok(target) = std::ffi::CString::new(self.pin_dir.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string.
            let _ = unsafe { libc::umount(target.as_ptr()) };
        }
        let _ = std::fs::remove_dir(&self.pin_dir);
    }
}
