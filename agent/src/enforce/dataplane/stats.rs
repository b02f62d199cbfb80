//! The program's counters: per interface slot, summed over CPUs.
use xdpguard_common::{MAX_INTERFACES, STAT_COUNT, Stat, StatValue, map_names};

use super::{Dataplane, DataplaneError};

/// Counters summed over all CPUs, indexed by [`Stat`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats(pub(super) [StatValue; STAT_COUNT as usize]);

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

    /// `self + other`, per counter (interfaces summed).
    #[must_use]
    pub fn plus(&self, other: &Self) -> Self {
        let mut out = *self;
        for (sum, add) in out.0.iter_mut().zip(other.0.iter()) {
            sum.packets = sum.packets.wrapping_add(add.packets);
            sum.bytes = sum.bytes.wrapping_add(add.bytes);
        }
        out
    }

    /// Set one counter (tests of what reads them).
    #[cfg(test)]
    pub fn set(&mut self, stat: Stat, packets: u64, bytes: u64) {
        self.0[stat as usize] = StatValue { packets, bytes };
    }

    pub fn iter(&self) -> impl Iterator<Item = (Stat, StatValue)> + '_ {
        Stat::ALL.into_iter().map(|stat| (stat, self.get(stat)))
    }
}

impl Dataplane {
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
}
