//! What the history's unit tests share: throwaway directories and random records.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use rand::{Rng as _, rngs::StdRng};

use super::model::{
    Anomaly, AnomalyKind, IntervalRecord, PacketCounts, Ranking, ScoredSources, TopRow, Traffic,
};

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "xdpguard-history-{what}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const RANKINGS: [Ranking; 4] = [
    Ranking::PrefixByDrops,
    Ranking::PrefixByVolume,
    Ranking::OriginByDrops,
    Ranking::OriginByVolume,
];

/// A source from a small pool, so intervals share sources and networks: IPv4, IPv6, and
/// IPv4-mapped IPv6 spellings of the IPv4 ones.
pub fn pooled_address(rng: &mut StdRng) -> IpAddr {
    let host = rng.random_range(0..8_u8);
    let net = rng.random_range(0..6_u8);
    match rng.random_range(0..5) {
        0 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            u16::from(net),
            0,
            0,
            0,
            u16::from(host),
        )),
        1 => IpAddr::V6(Ipv4Addr::new(198, 51, net, host).to_ipv6_mapped()),
        _ => IpAddr::V4(Ipv4Addr::new(198, 51, net, host)),
    }
}

/// A random record at `start`: up to 3 rulesets of up to `max_sources` pooled sources (with
/// repeats), decisions, at most `max_top` top rows per ranking, anomalies.
pub fn random_record(
    rng: &mut StdRng,
    start: u64,
    max_sources: usize,
    max_top: usize,
) -> IntervalRecord {
    let rulesets = ["sshd", "nginx", "postfix"];
    let mut record = IntervalRecord {
        start,
        seconds: 60,
        packets: PacketCounts {
            dropped_v4: rng.random_range(0..1000),
            dropped_v6: rng.random_range(0..1000),
            passed_v4: rng.random_range(0..100_000),
            passed_v6: rng.random_range(0..100_000),
            dropped_bytes: rng.random_range(0..1_000_000),
            passed_bytes: rng.random_range(0..100_000_000),
        },
        traffic: Traffic {
            inbound_local: rng.random_range(0..1_000_000),
            inbound_external: rng.random_range(0..1_000_000),
            outbound_local: rng.random_range(0..1_000_000),
            outbound_external: rng.random_range(0..1_000_000),
        },
        ..IntervalRecord::default()
    };
    for kind in ["ruleset:sshd", "volume:flood", "manual", "fleet:web1"] {
        if rng.random_bool(0.6) {
            record
                .decisions
                .push((kind.to_owned(), rng.random_range(1..50)));
        }
    }
    for ruleset in rulesets {
        if rng.random_bool(0.7) {
            let count = rng.random_range(0..=max_sources);
            record.scored.push(ScoredSources {
                ruleset: ruleset.to_owned(),
                addresses: (0..count).map(|_| pooled_address(rng)).collect(),
                overflow: 0,
            });
        }
    }
    for ranking in RANKINGS {
        let rows = rng.random_range(0..=max_top);
        let mut keys: Vec<u8> = (0..30).collect();
        for _ in 0..rows {
            let key = keys.swap_remove(rng.random_range(0..keys.len()));
            let by_prefix = matches!(ranking, Ranking::PrefixByDrops | Ranking::PrefixByVolume);
            record.top.push(TopRow {
                ranking,
                key: if by_prefix {
                    format!("203.0.{key}.0/24")
                } else {
                    format!("AS{}", 64_500 + u32::from(key))
                },
                packets: rng.random_range(0..10_000),
                bytes: rng.random_range(0..10_000_000),
                origin: (by_prefix && rng.random_bool(0.5))
                    .then(|| format!("AS{}", 64_500 + rng.random_range(0..3))),
                announced: (by_prefix && rng.random_bool(0.5)).then(|| "203.0.0.0/16".to_owned()),
            });
        }
    }
    for _ in 0..rng.random_range(0..4) {
        let kind = if rng.random_bool(0.5) {
            AnomalyKind::OneWay
        } else {
            AnomalyKind::Reflection([53, 123, 1900][rng.random_range(0..3)])
        };
        let prefix = format!("192.0.2.{}/32", rng.random_range(0..5));
        if record
            .anomalies
            .iter()
            .any(|a| a.prefix == prefix && a.kind == kind)
        {
            continue;
        }
        record.anomalies.push(Anomaly {
            prefix,
            kind,
            flows: rng.random_range(1..100),
            bytes: rng.random_range(1..100_000),
        });
    }
    record
}
