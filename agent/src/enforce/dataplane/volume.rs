//! Draining the program's per-source volume maps (`VOLUME_V4`, `VOLUME_V6`).
//!
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` reads and removes a few thousand sources per syscall, so a
//! drain costs at most capacity / batch syscalls whatever the traffic. A frame counted between
//! the kernel copying an entry and deleting it is lost; at one drain per interval that is a
//! handful of frames, not a trend.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
};

use aya::maps::{IterableMap as _, MapData};
use xdpguard_common::{SourceVolume, map_names};

use super::{
    Dataplane, DataplaneError,
    batch::{MAX_KEY_SIZE, lookup_and_delete_batch},
};

/// Sources read per syscall. A hash bucket never holds this many, so no batch stops short
/// with `ENOSPC`.
const BATCH: usize = 4096;

impl Dataplane {
    /// A handle that drains the per-source volume maps from another thread.
    ///
    /// # Errors
    /// When the map descriptors cannot be duplicated, or the CPU count is unknown.
    pub fn volume_reader(&self) -> Result<VolumeReader, DataplaneError> {
        VolumeReader::new(self.maps.volume_v4.map(), self.maps.volume_v6.map())
    }
}

/// Sources drained, per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainCount {
    pub v4: u64,
    pub v6: u64,
}

/// Duplicated descriptors of the volume maps, for a thread other than the map owner.
#[derive(Debug)]
pub struct VolumeReader {
    v4: OwnedFd,
    v6: OwnedFd,
    keys: Vec<u8>,
    values: Vec<SourceVolume>,
}

impl VolumeReader {
    fn new(v4: &MapData, v6: &MapData) -> Result<Self, DataplaneError> {
        let dup = |map: &MapData, name: &'static str| {
            map.fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| DataplaneError::Drain { map: name, source })
        };
        Ok(Self {
            v4: dup(v4, map_names::VOLUME_V4)?,
            v6: dup(v6, map_names::VOLUME_V6)?,
            keys: vec![0; BATCH * MAX_KEY_SIZE],
            values: vec![SourceVolume::default(); BATCH],
        })
    }

    /// Read and remove every source counted since the last drain; `sink` gets each source
    /// with its packets and bytes.
    ///
    /// # Errors
    /// When the kernel refuses the batch (for example a kernel without batch support).
    pub fn drain(
        &mut self,
        sink: &mut dyn FnMut(IpAddr, u64, u64),
    ) -> Result<DrainCount, DataplaneError> {
        let v4 = self.drain_map(Family::V4, sink)?;
        let v6 = self.drain_map(Family::V6, sink)?;
        Ok(DrainCount { v4, v6 })
    }

    fn drain_map(
        &mut self,
        family: Family,
        sink: &mut dyn FnMut(IpAddr, u64, u64),
    ) -> Result<u64, DataplaneError> {
        let (fd, key_size, name) = match family {
            Family::V4 => (self.v4.as_raw_fd(), 4, map_names::VOLUME_V4),
            Family::V6 => (self.v6.as_raw_fd(), 16, map_names::VOLUME_V6),
        };
        let mut drained = 0;
        // Where the previous batch stopped; `None` starts at the first bucket.
        let mut position: Option<[u64; 2]> = None;
        loop {
            let mut next = [0u64; 2];
            let (count, done) = lookup_and_delete_batch(
                fd,
                position
                    .as_ref()
                    .map_or(std::ptr::null(), |token| token.as_ptr()),
                next.as_mut_ptr(),
                &mut self.keys,
                &mut self.values,
            )
            .map_err(|source| DataplaneError::Drain { map: name, source })?;
            position = Some(next);
            for index in 0..count {
                let key = &self.keys[index * key_size..(index + 1) * key_size];
                let source = match family {
                    Family::V4 => {
                        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(key).unwrap_or_default()))
                    }
                    Family::V6 => IpAddr::V6(Ipv6Addr::from(
                        <[u8; 16]>::try_from(key).unwrap_or_default(),
                    )),
                };
                let value = self.values.get(index).copied().unwrap_or_default();
                if value.packets != 0 || value.bytes != 0 {
                    sink(source, value.packets, value.bytes);
                }
            }
            drained += count as u64;
            if done {
                return Ok(drained);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}
