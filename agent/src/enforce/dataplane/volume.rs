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

use aya::maps::{Array, IterableMap as _, MapData};
use xdpguard_common::{SourceVolume, map_names, volume_sample};

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
        VolumeReader::new(
            self.maps.volume_v4.map(),
            self.maps.volume_v6.map(),
            self.maps.volume_sample.map(),
            [self.capacities.volume_v4, self.capacities.volume_v6],
        )
    }
}

/// Sources drained, per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainCount {
    pub v4: u64,
    pub v6: u64,
}

/// Duplicated descriptors of the volume maps, for a thread other than the map owner.
pub struct VolumeReader {
    v4: OwnedFd,
    v6: OwnedFd,
    /// `VOLUME_SAMPLE`, which only this reader writes.
    sample: Array<MapData, u32>,
    /// Capacity of each volume map, and the sampling exponent in force (IPv4, IPv6).
    capacity: [u32; 2],
    shift: [u32; 2],
    keys: Vec<u8>,
    values: Vec<SourceVolume>,
}

impl std::fmt::Debug for VolumeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeReader")
            .field("capacity", &self.capacity)
            .field("shift", &self.shift)
            .finish_non_exhaustive()
    }
}

impl VolumeReader {
    fn new(
        v4: &MapData,
        v6: &MapData,
        sample: &MapData,
        capacity: [u32; 2],
    ) -> Result<Self, DataplaneError> {
        let dup = |map: &MapData, name: &'static str| {
            map.fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| DataplaneError::Drain { map: name, source })
        };
        let sample_error = |source| DataplaneError::Map {
            map: map_names::VOLUME_SAMPLE,
            source,
        };
        let sample_fd = dup(sample, map_names::VOLUME_SAMPLE)?;
        let sample = Array::try_from(aya::maps::Map::Array(
            MapData::from_fd(sample_fd).map_err(sample_error)?,
        ))
        .map_err(sample_error)?;
        // An adopted data path keeps the exponents its last reader set.
        let shift = [volume_sample::V4, volume_sample::V6].map(|family| {
            sample
                .get(&family, 0)
                .unwrap_or(0)
                .min(volume_sample::MAX_SHIFT)
        });
        Ok(Self {
            v4: dup(v4, map_names::VOLUME_V4)?,
            v6: dup(v6, map_names::VOLUME_V6)?,
            sample,
            capacity,
            shift,
            keys: vec![0; BATCH * MAX_KEY_SIZE],
            values: vec![SourceVolume::default(); BATCH],
        })
    }

    /// The sampling exponents in force (IPv4, IPv6): a new source is counted with probability
    /// 2^-n, weighted 2^n.
    pub const fn sampling(&self) -> [u32; 2] {
        self.shift
    }

    /// After a drain of `drained` sources: sample new sources harder while the map comes back
    /// nearly full (3/4: an LRU map under eviction holds somewhat less than its capacity, and
    /// evictions are what cost), less once under a quarter.
    fn adapt(&mut self, family: Family, drained: u64) -> Result<(), DataplaneError> {
        let key = family as u32;
        let index = key as usize;
        let capacity = u64::from(self.capacity[index]);
        let current = self.shift[index];
        let next = if drained >= capacity - capacity / 4 {
            (current + 1).min(volume_sample::MAX_SHIFT)
        } else if drained < capacity / 4 {
            current.saturating_sub(1)
        } else {
            current
        };
        if next == current {
            return Ok(());
        }
        self.sample
            .set(key, next, 0)
            .map_err(|source| DataplaneError::Map {
                map: map_names::VOLUME_SAMPLE,
                source,
            })?;
        self.shift[index] = next;
        log::info!(
            "volume accounting ({}): {drained} sources in an interval, capacity {capacity}; new sources now counted 1 in {} (weighted)",
            family.name(),
            1u32 << next
        );
        Ok(())
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
        self.adapt(Family::V4, v4)?;
        self.adapt(Family::V6, v6)?;
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
    V4 = 0,
    V6 = 1,
}

impl Family {
    const fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}
