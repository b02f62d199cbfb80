//! The history's tables, its schema version, and how values are encoded in them.
//!
//! - `name`: every repeated string (source kinds, ruleset names, top-row keys, origins,
//!   announced prefixes, anomaly prefixes) once, with the newest interval that uses it, so
//!   names no remaining interval uses can be deleted without scanning the other tables.
//! - `interval`: one row per interval (its start is the key), the packet and traffic counters.
//! - `decision`, `top`, `anomaly`: rows keyed by (start, ...), `WITHOUT ROWID` (small rows).
//! - `scored`: one row per (start, ruleset), its addresses packed in one blob (IPv4 as 4
//!   bytes, then IPv6 as 16, each part sorted): 4 bytes per IPv4 source against the ~20 a row
//!   per address plus its index would take. A rowid table: its blobs run to tens of KiB.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::model::{AnomalyKind, Ranking};

/// `PRAGMA user_version` of the files this code writes.
pub const SCHEMA_VERSION: u32 = 1;

pub(super) const CREATE: &str = "
CREATE TABLE name (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE,
    last_start INTEGER NOT NULL
);
CREATE INDEX name_by_last_start ON name (last_start);
CREATE TABLE interval (
    start INTEGER PRIMARY KEY,
    seconds INTEGER NOT NULL,
    dropped_v4 INTEGER NOT NULL,
    dropped_v6 INTEGER NOT NULL,
    passed_v4 INTEGER NOT NULL,
    passed_v6 INTEGER NOT NULL,
    dropped_bytes INTEGER NOT NULL,
    passed_bytes INTEGER NOT NULL,
    inbound_local INTEGER NOT NULL,
    inbound_external INTEGER NOT NULL,
    outbound_local INTEGER NOT NULL,
    outbound_external INTEGER NOT NULL
);
CREATE TABLE decision (
    start INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (start, kind)
) WITHOUT ROWID;
CREATE TABLE scored (
    start INTEGER NOT NULL,
    ruleset INTEGER NOT NULL,
    overflow INTEGER NOT NULL,
    v4_count INTEGER NOT NULL,
    addresses BLOB NOT NULL
);
CREATE UNIQUE INDEX scored_by_start ON scored (start, ruleset);
CREATE TABLE top (
    start INTEGER NOT NULL,
    ranking INTEGER NOT NULL,
    key INTEGER NOT NULL,
    packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    origin INTEGER,
    announced INTEGER,
    PRIMARY KEY (start, ranking, key)
) WITHOUT ROWID;
CREATE TABLE anomaly (
    start INTEGER NOT NULL,
    prefix INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    port INTEGER NOT NULL,
    flows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (start, prefix, kind, port)
) WITHOUT ROWID;
";

/// The tables keyed by interval start, children first: what replacing or pruning an interval
/// deletes from.
pub(super) const INTERVAL_TABLES: [&str; 5] = ["decision", "scored", "top", "anomaly", "interval"];

/// The stored number of a ranking (part of the file format: never renumber).
pub(super) const fn ranking_code(ranking: Ranking) -> i64 {
    match ranking {
        Ranking::PrefixByDrops => 0,
        Ranking::PrefixByVolume => 1,
        Ranking::OriginByDrops => 2,
        Ranking::OriginByVolume => 3,
    }
}

pub(super) const fn ranking_from_code(code: i64) -> Option<Ranking> {
    match code {
        0 => Some(Ranking::PrefixByDrops),
        1 => Some(Ranking::PrefixByVolume),
        2 => Some(Ranking::OriginByDrops),
        3 => Some(Ranking::OriginByVolume),
        _ => None,
    }
}

/// The stored (kind, port) of an anomaly kind.
pub(super) fn anomaly_code(kind: AnomalyKind) -> (i64, i64) {
    match kind {
        AnomalyKind::OneWay => (0, 0),
        AnomalyKind::Reflection(port) => (1, i64::from(port)),
    }
}

pub(super) fn anomaly_from_code(kind: i64, port: i64) -> Option<AnomalyKind> {
    match (kind, port) {
        (0, 0) => Some(AnomalyKind::OneWay),
        (1, port) => u16::try_from(port).ok().map(AnomalyKind::Reflection),
        _ => None,
    }
}

/// The ranking's measure: packets for the by-drops lists, bytes for the by-volume ones.
pub(super) const fn ranks_by_packets(ranking: Ranking) -> bool {
    matches!(ranking, Ranking::PrefixByDrops | Ranking::OriginByDrops)
}

/// Sorted, distinct addresses of one (interval, ruleset), split by family.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct PackedSources {
    pub v4: Vec<u32>,
    pub v6: Vec<u128>,
}

impl PackedSources {
    /// IPv4-mapped IPv6 addresses count as the IPv4 address.
    pub(super) fn push(&mut self, addr: IpAddr) {
        match addr.to_canonical() {
            IpAddr::V4(v4) => self.v4.push(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.push(u128::from(v6)),
        }
    }

    pub(super) fn sort(&mut self) {
        self.v4.sort_unstable();
        self.v6.sort_unstable();
    }

    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The blob: the IPv4 addresses (4 bytes each, big-endian), then the IPv6 ones (16 each).
    pub(super) fn to_blob(&self) -> Vec<u8> {
        let mut blob = Vec::with_capacity(self.v4.len() * 4 + self.v6.len() * 16);
        for addr in &self.v4 {
            blob.extend_from_slice(&addr.to_be_bytes());
        }
        for addr in &self.v6 {
            blob.extend_from_slice(&addr.to_be_bytes());
        }
        blob
    }

    pub(super) fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.v4.iter().map(|&a| IpAddr::V4(Ipv4Addr::from(a)));
        let v6 = self.v6.iter().map(|&a| IpAddr::V6(Ipv6Addr::from(a)));
        v4.chain(v6)
    }
}

/// A blob's two parts, or `None` when its length does not fit `v4_count`.
pub(super) fn split_blob(blob: &[u8], v4_count: u64) -> Option<(&[u8], &[u8])> {
    let v4_bytes = usize::try_from(v4_count).ok()?.checked_mul(4)?;
    if v4_bytes > blob.len() {
        return None;
    }
    let (v4, v6) = blob.split_at(v4_bytes);
    v6.len().is_multiple_of(16).then_some((v4, v6))
}

pub(super) fn v4_addresses(part: &[u8]) -> impl Iterator<Item = u32> + '_ {
    part.chunks_exact(4).map(|chunk| {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(chunk);
        u32::from_be_bytes(bytes)
    })
}

pub(super) fn v6_addresses(part: &[u8]) -> impl Iterator<Item = u128> + '_ {
    part.chunks_exact(16).map(|chunk| {
        let mut bytes = [0; 16];
        bytes.copy_from_slice(chunk);
        u128::from_be_bytes(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_and_mapped_addresses() {
        let mut sources = PackedSources::default();
        for text in [
            "2001:db8::1",
            "192.0.2.9",
            "::ffff:192.0.2.1",
            "198.51.100.3",
        ] {
            sources.push(text.parse().expect("address"));
        }
        sources.sort();
        assert_eq!(sources.v4.len(), 3, "the mapped address is IPv4");
        let blob = sources.to_blob();
        assert_eq!(blob.len(), 3 * 4 + 16);
        let (v4, v6) = split_blob(&blob, 3).expect("fits");
        assert_eq!(v4_addresses(v4).collect::<Vec<_>>(), sources.v4);
        assert_eq!(v6_addresses(v6).collect::<Vec<_>>(), sources.v6);
        assert!(
            split_blob(&blob, 4).is_none(),
            "16 bytes left over are not whole"
        );
        assert!(split_blob(&blob[..27], 3).is_none());
        assert!(
            split_blob(&blob, 8).is_none(),
            "more IPv4 than the blob holds"
        );
    }

    #[test]
    fn codes_round_trip() {
        for ranking in [
            Ranking::PrefixByDrops,
            Ranking::PrefixByVolume,
            Ranking::OriginByDrops,
            Ranking::OriginByVolume,
        ] {
            assert_eq!(ranking_from_code(ranking_code(ranking)), Some(ranking));
        }
        for kind in [AnomalyKind::OneWay, AnomalyKind::Reflection(1900)] {
            let (code, port) = anomaly_code(kind);
            assert_eq!(anomaly_from_code(code, port), Some(kind));
        }
        assert_eq!(anomaly_from_code(1, 70_000), None);
        assert_eq!(ranking_from_code(9), None);
    }
}
