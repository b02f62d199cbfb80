//! Traffic volume per source prefix: count bytes and packets per source over an interval
//! ([`trie`]), report the prefixes over a rate limit ([`heavy`]), and follow them across
//! intervals ([`hysteresis`]). [`config`] is the `[volume]` table the detectors are set up by;
//! [`local`] splits traffic into this site's and the outside's.
pub mod config;
pub mod engine;
pub mod heavy;
pub mod hysteresis;
pub mod local;
pub mod metrics;
pub mod trie;

use std::{net::IpAddr, time::Duration};

pub use config::{
    AggregateBy, AnnouncedAggregate, AnomalyFilter, AnomalyTrigger, DetectorConfig, Trigger,
    VolumeAction, VolumeConfig, VolumeSource,
};
pub use heavy::{
    HeavyError, HeavyHitter, Lengths, Limit, LimitsError, Override, Report, TopEntry, Totals,
    VolumeLimits,
};
pub use hysteresis::{Action, HotConfig, HotSet};
pub use local::LocalNets;
pub use trie::{DEFAULT_MAX_LEAVES, Key, Trie, Trie4, Trie6, TrieError, Volume};

/// How sources are tracked: the longest prefix per family (longer addresses are truncated to
/// it) and the most distinct sources per family and interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackConfig {
    pub max_len_v4: u8,
    pub max_len_v6: u8,
    pub max_sources: usize,
}

impl Default for TrackConfig {
    fn default() -> Self {
        Self {
            max_len_v4: 32,
            max_len_v6: 128,
            max_sources: DEFAULT_MAX_LEAVES,
        }
    }
}

/// Both families' volumes for one interval.
#[derive(Clone, Debug, Default)]
pub struct Volumes {
    pub v4: Trie4,
    pub v6: Trie6,
}

impl Volumes {
    /// # Errors
    /// When a length is longer than its address or the bound is over [`trie::MAX_LEAVES_LIMIT`].
    pub fn new(config: TrackConfig) -> Result<Self, TrieError> {
        Ok(Self {
            v4: Trie::new(config.max_len_v4, config.max_sources)?,
            v6: Trie::new(config.max_len_v6, config.max_sources)?,
        })
    }

    /// Count traffic from `source`. IPv4-mapped IPv6 counts as IPv4, as block lists see it.
    pub fn add(&mut self, source: IpAddr, bytes: u64, packets: u64) {
        match source {
            IpAddr::V4(v4) => self.v4.add(u32::from(v4), bytes, packets),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.v4.add(u32::from(v4), bytes, packets),
                None => self.v6.add(u128::from(v6), bytes, packets),
            },
        }
    }

    /// Count flow records into an interval of `interval`: a record of a flow shorter than the
    /// interval counts whole, a longer one at its average rate over the interval. A router
    /// exports a long flow once per active timeout (often a minute): counted whole it would
    /// look like a burst six times the flow's real rate.
    pub fn add_flows(
        &mut self,
        records: &[crate::detect::traffic::flow::FlowRecord],
        interval: Duration,
    ) {
        let interval_ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        for record in records {
            let duration = u64::from(record.duration_ms);
            if duration <= interval_ms {
                self.add(record.source, record.bytes, record.packets);
            } else {
                let scale = |value: u64| {
                    u64::try_from(
                        u128::from(value) * u128::from(interval_ms) / u128::from(duration),
                    )
                    .unwrap_or(u64::MAX)
                };
                self.add(record.source, scale(record.bytes), scale(record.packets));
            }
        }
    }

    /// Start the next interval (see [`Trie::clear`]).
    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }

    /// Both families' heavy hitters, bytes descending, and the interval's totals.
    ///
    /// # Errors
    /// When `interval` is zero.
    pub fn heavy_hitters(
        &self,
        interval: Duration,
        policy: &VolumeLimits,
    ) -> Result<Report, HeavyError> {
        Ok(heavy::heavy_hitters(&self.v4, interval, policy)?
            .merge(heavy::heavy_hitters(&self.v6, interval, policy)?))
    }

    /// The `n` prefixes with the most bytes among IPv4 prefixes of the `v4` lengths and IPv6
    /// prefixes of the `v6` lengths (say `[32, 24]` and `[128, 64]`), bytes descending. A source
    /// shows up once per length.
    pub fn top(&self, v4: &[u8], v6: &[u8], n: usize) -> Vec<TopEntry> {
        let mut entries: Vec<TopEntry> = v4
            .iter()
            .flat_map(|&len| heavy::top(&self.v4, len, n))
            .chain(v6.iter().flat_map(|&len| heavy::top(&self.v6, len, n)))
            .collect();
        entries.sort_by(|a, b| {
            // Ties: the more specific prefix first.
            (b.bytes, b.packets, b.prefix.prefix_len())
                .cmp(&(a.bytes, a.packets, a.prefix.prefix_len()))
                .then(a.prefix.cmp(&b.prefix))
        });
        entries.truncate(n);
        entries
    }

    /// Heap held by both trees.
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_mapped_addresses() {
        let mut volumes = Volumes::new(TrackConfig {
            max_len_v6: 64,
            ..TrackConfig::default()
        })
        .unwrap();
        volumes.add("192.0.2.1".parse().unwrap(), 3_000, 3);
        volumes.add("::ffff:192.0.2.1".parse().unwrap(), 3_000, 3);
        volumes.add("2001:db8::1".parse().unwrap(), 2_000, 2);
        volumes.add("2001:db8::2".parse().unwrap(), 2_000, 2);
        assert_eq!((volumes.v4.leaves(), volumes.v6.leaves()), (1, 1));
        let policy = VolumeLimits::new(Limit::bytes(1_000), Lengths::V4, Lengths::V6, &[]).unwrap();
        let report = volumes
            .heavy_hitters(Duration::from_secs(2), &policy)
            .unwrap();
        let found: Vec<_> = report
            .hitters
            .iter()
            .map(|h| (h.prefix.to_string(), h.bytes_per_sec))
            .collect();
        assert_eq!(
            found,
            [
                ("192.0.2.1/32".to_owned(), 3_000.0),
                ("2001:db8::/64".to_owned(), 2_000.0)
            ]
        );
        assert_eq!((report.totals.bytes, report.totals.sources), (10_000, 2));
        let top = volumes.top(&[32, 24], &[64], 2);
        let top: Vec<_> = top.iter().map(|e| e.prefix.to_string()).collect();
        assert_eq!(top, ["192.0.2.1/32", "192.0.2.0/24"]);
        volumes.clear();
        assert!(volumes.v4.is_empty() && volumes.v6.is_empty());
        assert!(
            Volumes::new(TrackConfig {
                max_len_v4: 33,
                ..TrackConfig::default()
            })
            .is_err()
        );
    }

    #[test]
    fn long_flows_count_at_their_average_rate() {
        let record = |last: u8, duration_ms| crate::detect::traffic::flow::FlowRecord {
            duration_ms,
            ..crate::detect::traffic::flow::FlowRecord::new(
                IpAddr::from([203, 0, 113, last]),
                600_000,
                600,
            )
        };
        let mut volumes = Volumes::new(TrackConfig::default()).unwrap();
        volumes.add_flows(
            &[record(1, 60_000), record(2, 2_000), record(3, 0)],
            Duration::from_secs(10),
        );
        let got = |last: u8| volumes.v4.get(u32::from_be_bytes([203, 0, 113, last]));
        // A 60 s flow in a 10 s interval: a sixth of it.
        assert_eq!(got(1), Some(Volume::new(100_000, 100)));
        // Shorter than the interval, or no duration: all of it.
        assert_eq!(got(2), Some(Volume::new(600_000, 600)));
        assert_eq!(got(3), Some(Volume::new(600_000, 600)));
    }
}
