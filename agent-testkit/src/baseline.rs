//! Benchmark baselines (`cargo xtask bench xdp`): an XDP program that only passes, and one
//! that does a single stock LPM-trie lookup per packet, plus the kernel's run-time statistics.
//! Errors are the agent's [`DataplaneError`], so a baseline fails the way the real program does.
use std::{net::IpAddr, os::fd::OwnedFd, time::Duration};

use aya::{
    Ebpf,
    maps::{LpmTrie, MapData, lpm_trie::Key},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use xdpguard::{
    enforce::dataplane::{AttachMode, DataplaneError, test_run},
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
