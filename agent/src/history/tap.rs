//! What the detectors add up between two history records. The volume engine and log scoring
//! each add to a shared [`Tap`] as they go (a lock held for a few additions, never for I/O);
//! the recorder takes its contents once per interval. Every part is bounded, and what did not
//! fit is counted, so a flood of sources costs memory only up to the bounds.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use crate::{
    history::model::{Anomaly, AnomalyKind, Ranking, ScoredSources, TopRow, Traffic},
    prefix::Prefix,
};

/// Distinct sources kept per ruleset per interval.
pub const MAX_SCORED_PER_RULESET: usize = 10_000;
/// Rulesets tracked per interval (more is a configuration of hundreds of rulesets).
pub const MAX_RULESETS: usize = 256;
/// Distinct keys kept per top list per interval; the largest are recorded.
pub const MAX_TOP_KEYS: usize = 4096;
/// Distinct (prefix, kind) anomalies kept per interval.
pub const MAX_ANOMALIES: usize = 4096;

/// The sums since the last take.
#[derive(Debug, Default)]
pub struct Tap {
    pub traffic: Traffic,
    /// Per ruleset: distinct scored sources (IPv4-mapped given as IPv4), and how many more
    /// there were past the bound.
    scored: BTreeMap<String, (HashSet<IpAddr>, u64)>,
    top: HashMap<(Ranking, String), TopRow>,
    anomalies: HashMap<(String, AnomalyKind), Anomaly>,
    /// Additions dropped because a bound was reached.
    pub dropped: u64,
}

impl Tap {
    /// `address` scored a match of `ruleset`.
    pub fn add_scored(&mut self, ruleset: &str, address: IpAddr) {
        let address = Prefix::host(address).addr();
        if !self.scored.contains_key(ruleset) && self.scored.len() >= MAX_RULESETS {
            self.dropped += 1;
            return;
        }
        let (sources, overflow) = self.scored.entry(ruleset.to_owned()).or_default();
        if sources.len() < MAX_SCORED_PER_RULESET || sources.contains(&address) {
            sources.insert(address);
        } else {
            *overflow += 1;
        }
    }

    /// Add `row` to its top list (summed per key).
    pub fn add_top(&mut self, row: TopRow) {
        let key = (row.ranking, row.key.clone());
        if let Some(held) = self.top.get_mut(&key) {
            held.packets += row.packets;
            held.bytes += row.bytes;
            if row.origin.is_some() {
                held.origin = row.origin;
                held.announced = row.announced;
            }
        } else if self.top.len() < MAX_TOP_KEYS {
            self.top.insert(key, row);
        } else {
            self.dropped += 1;
        }
    }

    /// Add `anomaly` (summed per prefix and kind).
    pub fn add_anomaly(&mut self, anomaly: Anomaly) {
        let key = (anomaly.prefix.clone(), anomaly.kind);
        if let Some(held) = self.anomalies.get_mut(&key) {
            held.flows += anomaly.flows;
            held.bytes += anomaly.bytes;
        } else if self.anomalies.len() < MAX_ANOMALIES {
            self.anomalies.insert(key, anomaly);
        } else {
            self.dropped += 1;
        }
    }

    /// Everything added since the last take, in the record's shapes (sorted, so a record
    /// does not depend on hash order); the tap starts again empty.
    pub fn take(&mut self) -> Taken {
        let taken = std::mem::take(self);
        let scored = taken
            .scored
            .into_iter()
            .map(|(ruleset, (sources, overflow))| {
                let mut addresses: Vec<IpAddr> = sources.into_iter().collect();
                addresses.sort_unstable();
                ScoredSources {
                    ruleset,
                    addresses,
                    overflow,
                }
            })
            .collect();
        let mut top: Vec<TopRow> = taken.top.into_values().collect();
        top.sort_by(|a, b| {
            (a.ranking, std::cmp::Reverse(a.bytes), &a.key).cmp(&(
                b.ranking,
                std::cmp::Reverse(b.bytes),
                &b.key,
            ))
        });
        let mut anomalies: Vec<Anomaly> = taken.anomalies.into_values().collect();
        anomalies.sort_by(|a, b| b.flows.cmp(&a.flows).then_with(|| a.prefix.cmp(&b.prefix)));
        Taken {
            traffic: taken.traffic,
            scored,
            top,
            anomalies,
            dropped: taken.dropped,
        }
    }
}

/// A [`Tap`]'s contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    pub traffic: Traffic,
    pub scored: Vec<ScoredSources>,
    pub top: Vec<TopRow>,
    pub anomalies: Vec<Anomaly>,
    pub dropped: u64,
}

/// A tap shared between the threads that add and the recorder.
#[derive(Clone, Debug, Default)]
pub struct SharedTap(Arc<Mutex<Tap>>);

impl SharedTap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add under the lock: keep `add` to a few additions.
    pub fn with(&self, add: impl FnOnce(&mut Tap)) {
        add(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn take(&self) -> Taken {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ranking: Ranking, key: &str, bytes: u64) -> TopRow {
        TopRow {
            ranking,
            key: key.into(),
            packets: 1,
            bytes,
            origin: None,
            announced: None,
        }
    }

    #[test]
    fn sums_per_key_distinct_sources_and_a_fresh_start_after_take() {
        let tap = SharedTap::new();
        tap.with(|t| {
            t.add_scored("sshd", "203.0.113.7".parse().unwrap());
            t.add_scored("sshd", "::ffff:203.0.113.7".parse().unwrap());
            t.add_scored("sshd", "2001:db8::1".parse().unwrap());
            t.add_top(row(Ranking::PrefixByVolume, "203.0.113.0/24", 100));
            t.add_top(row(Ranking::PrefixByVolume, "203.0.113.0/24", 50));
            t.add_top(row(Ranking::PrefixByVolume, "198.51.100.0/24", 500));
            t.traffic.inbound_external += 7;
        });
        let taken = tap.take();
        assert_eq!(taken.scored.len(), 1);
        assert_eq!(
            taken.scored[0].addresses.len(),
            2,
            "mapped is the same host"
        );
        assert_eq!(taken.top[0].key, "198.51.100.0/24", "largest first");
        assert_eq!((taken.top[1].packets, taken.top[1].bytes), (2, 150));
        assert_eq!(taken.traffic.inbound_external, 7);
        assert_eq!(tap.take(), Taken::default());
    }

    #[test]
    fn bounds_count_what_did_not_fit() {
        let mut tap = Tap::default();
        for i in 0..MAX_SCORED_PER_RULESET + 5 {
            let n = u32::try_from(i).unwrap();
            tap.add_scored("web", IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)));
        }
        // A source already held still counts as held.
        tap.add_scored("web", "10.0.0.0".parse().unwrap());
        for i in 0..MAX_TOP_KEYS + 3 {
            tap.add_top(row(Ranking::OriginByDrops, &format!("AS{i}"), 1));
        }
        let taken = tap.take();
        assert_eq!(taken.scored[0].addresses.len(), MAX_SCORED_PER_RULESET);
        assert_eq!(taken.scored[0].overflow, 5);
        assert_eq!(taken.top.len(), MAX_TOP_KEYS);
        assert_eq!(taken.dropped, 3);
    }
}
