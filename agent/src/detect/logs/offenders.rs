//! Repeat offenders and neighbourhoods: what a score over the threshold turns into. The n-th
//! ban of an address lasts `ban × multiplier^(n-1)`, capped; once enough addresses of one
//! neighbourhood are banned at the same time, the neighbourhood is banned as a whole. A
//! neighbourhood is a fixed-length prefix (an IPv4 /24, an IPv6 /64 by default), the prefix
//! announced in BGP that holds the address (from the origins table, no broader than a guard
//! length), or both. The record survives restarts (state directory).
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{detect::logs::score::ScoringPolicy, origins::OriginTable, prefix::Prefix};

/// What a neighbourhood is, for aggregation (`aggregate` in `[scoring]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Aggregate {
    /// The fixed `aggregate_len_v4` / `aggregate_len_v6` prefix around the address.
    #[default]
    Prefix,
    /// The announced prefix holding the address, from the origins table.
    Announced,
    /// Each of them, counted apart.
    Both,
}

impl Aggregate {
    /// The configuration's word for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Announced => "announced",
            Self::Both => "both",
        }
    }

    /// The configuration's word, read back.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Prefix, Self::Announced, Self::Both]
            .into_iter()
            .find(|aggregate| aggregate.as_str() == name)
    }

    const fn fixed(self) -> bool {
        matches!(self, Self::Prefix | Self::Both)
    }

    const fn announced(self) -> bool {
        matches!(self, Self::Announced | Self::Both)
    }
}

/// How log matches turn into blocks: the `[scoring]` table of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoringConfig {
    /// When a source's score crosses the threshold, and how scores are kept.
    pub board: ScoringPolicy,
    /// How long a block made by scoring lasts, the first time.
    pub ban: Duration,
    /// Each later ban of the same address lasts this many times the one before...
    pub ban_multiplier: u32,
    /// ...up to this.
    pub ban_max: Duration,
    /// Block the whole neighbourhood once this many addresses in it are blocked; 0: never.
    pub aggregate_min: u32,
    /// The neighbourhood: an IPv4 /24 and an IPv6 /64 by default.
    pub aggregate_len_v4: u8,
    pub aggregate_len_v6: u8,
    /// Which neighbourhoods count: the fixed prefix, the announced one, or both.
    pub aggregate: Aggregate,
    /// An announced prefix broader than this (shorter) is never banned as a whole: an
    /// IPv4 /16 and an IPv6 /32 by default.
    pub aggregate_announced_max_v4: u8,
    pub aggregate_announced_max_v6: u8,
    /// The session memory of multi-line rules.
    pub sessions: crate::detect::logs::correlate::SessionLimits,
    /// In a ruleset's own policy only: the mode it runs in (an input's mode wins).
    pub mode: Option<String>,
    /// `[scoring.rulesets.NAME]`: a ruleset's own policy (its keys over the global ones).
    pub per_ruleset: BTreeMap<String, Self>,
}

impl ScoringConfig {
    /// The policy `ruleset` scores under.
    pub fn for_ruleset(&self, ruleset: &str) -> &Self {
        self.per_ruleset.get(ruleset).unwrap_or(self)
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            board: ScoringPolicy::default(),
            ban: Duration::from_secs(3600),
            ban_multiplier: 2,
            ban_max: Duration::from_secs(7 * 86_400),
            aggregate_min: 5,
            aggregate_len_v4: 24,
            aggregate_len_v6: 64,
            aggregate: Aggregate::Prefix,
            aggregate_announced_max_v4: 16,
            aggregate_announced_max_v6: 32,
            sessions: crate::detect::logs::correlate::SessionLimits::default(),
            mode: None,
            per_ruleset: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    bans: u32,
    /// Unix time the last ban ends.
    until_unix: u64,
}

/// A block to ask the decision owner for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub prefix: Prefix,
    pub duration: Duration,
    pub reason: String,
}

pub struct Offenders {
    file: Option<PathBuf>,
    records: HashMap<IpAddr, Record>,
    /// Neighbourhoods already banned, until when.
    neighbourhoods: BTreeMap<Prefix, u64>,
    /// Announced aggregation was asked for without a table, and the log said so.
    said_no_table: bool,
}

/// A record bigger than this is not read back (it would be hostile or corrupt).
const MAX_SAVED_BYTES: u64 = 256 << 20;

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    records: Vec<(IpAddr, Record)>,
    neighbourhoods: Vec<(Prefix, u64)>,
}

impl Offenders {
    /// Load the record from `state_dir` (or start empty; `None`: keep nothing on disk).
    pub fn open(state_dir: Option<&Path>) -> Self {
        let file = state_dir.map(|dir| dir.join("offenders.json"));
        let saved: Saved = file
            .as_ref()
            .and_then(|f| {
                // Never opens a FIFO left at its name: that would stall the logs thread.
                super::input::read_regular_file(f, MAX_SAVED_BYTES)
                    .inspect_err(|err| log::warn!("repeat offenders not loaded: {err}"))
                    .ok()
                    .flatten()
            })
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            file,
            records: saved.records.into_iter().collect(),
            neighbourhoods: saved.neighbourhoods.into_iter().collect(),
            said_no_table: false,
        }
    }

    /// Write the record (temporary file, rename).
    pub fn save(&self) {
        let Some(file) = &self.file else { return };
        let saved = Saved {
            records: self.records.iter().map(|(a, r)| (*a, *r)).collect(),
            neighbourhoods: self.neighbourhoods.iter().map(|(p, u)| (*p, *u)).collect(),
        };
        let written = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| super::input::replace_file(file, &bytes));
        if let Err(err) = written {
            log::warn!("saving repeat offenders to {}: {err}", file.display());
        }
    }

    pub fn bans_of(&self, addr: &IpAddr) -> u32 {
        self.records.get(addr).map_or(0, |r| r.bans)
    }

    /// `addr` went over the threshold at `now_unix`: the bans to ask for. `origins` gives
    /// the announced prefixes, when `scoring.aggregate` wants them (`None` or an empty table:
    /// there are none).
    pub fn on_threshold(
        &mut self,
        addr: IpAddr,
        now_unix: u64,
        scoring: &ScoringConfig,
        origins: Option<&OriginTable>,
    ) -> Vec<Ban> {
        let record = self.records.entry(addr).or_default();
        let factor = u64::from(scoring.ban_multiplier).saturating_pow(record.bans.min(64));
        let duration = Duration::from_secs(
            scoring
                .ban
                .as_secs()
                .saturating_mul(factor)
                .min(scoring.ban_max.as_secs())
                .max(1),
        );
        record.bans += 1;
        record.until_unix = now_unix + duration.as_secs();
        let nth = record.bans;
        let mut bans = vec![Ban {
            prefix: Prefix::host(addr),
            duration,
            reason: if nth > 1 {
                format!("ban number {nth}")
            } else {
                String::new()
            },
        }];
        if scoring.aggregate_min == 0 {
            return bans;
        }
        let fixed = scoring
            .aggregate
            .fixed()
            .then(|| {
                let len = if Prefix::host(addr).is_ipv4() {
                    scoring.aggregate_len_v4
                } else {
                    scoring.aggregate_len_v6
                };
                Prefix::new(addr, len).ok()
            })
            .flatten();
        let announced = if scoring.aggregate.announced() {
            self.announcement_of(addr, scoring, origins)
        } else {
            None
        };
        // The same prefix both ways: once, named by its announcement.
        let fixed = fixed.filter(|fixed| announced.as_ref().is_none_or(|(a, _)| a != fixed));
        let candidates = fixed
            .map(|fixed| (fixed, None))
            .into_iter()
            .chain(announced.map(|(prefix, origin)| (prefix, Some(origin))));
        for (neighbourhood, origin) in candidates {
            // Inside a neighbourhood banned already (itself or a broader one): nothing more.
            if self.neighbourhoods.iter().any(|(banned, until)| {
                *until > now_unix
                    && banned.is_ipv4() == neighbourhood.is_ipv4()
                    && banned.prefix_len() <= neighbourhood.prefix_len()
                    && banned.contains(neighbourhood.addr())
            }) {
                continue;
            }
            let banned = self
                .records
                .iter()
                .filter(|(a, r)| r.until_unix > now_unix && neighbourhood.contains(**a))
                .count();
            if banned < scoring.aggregate_min as usize {
                continue;
            }
            // Ended bans of neighbourhoods are of no more use.
            self.neighbourhoods.retain(|_, until| *until > now_unix);
            let _ = self
                .neighbourhoods
                .insert(neighbourhood, now_unix + scoring.ban_max.as_secs());
            bans.push(Ban {
                prefix: neighbourhood,
                duration: scoring.ban_max,
                reason: match origin {
                    Some(origin) => {
                        format!("announced {neighbourhood} of {origin}: {banned} addresses banned")
                    }
                    None => format!("{banned} addresses of {neighbourhood} banned"),
                },
            });
        }
        bans
    }

    /// The announced prefix holding `addr` and its origin, when it may be banned whole: no
    /// broader than the `aggregate_announced_max` of its family, and more than the host.
    fn announcement_of(
        &mut self,
        addr: IpAddr,
        scoring: &ScoringConfig,
        origins: Option<&OriginTable>,
    ) -> Option<(Prefix, String)> {
        let Some(table) = origins.filter(|table| !table.is_empty()) else {
            if !self.said_no_table {
                self.said_no_table = true;
                log::warn!(
                    "scoring: aggregate = \"{}\" but no origins table is loaded: no announced prefix is banned as a whole until one is",
                    scoring.aggregate.as_str()
                );
            }
            return None;
        };
        let found = table.lookup(addr)?;
        let broadest = if found.prefix.is_ipv4() {
            scoring.aggregate_announced_max_v4
        } else {
            scoring.aggregate_announced_max_v6
        };
        (found.prefix.prefix_len() >= broadest && !found.prefix.is_host())
            .then(|| (found.prefix, found.origin.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origins::OriginAs;

    fn scoring() -> ScoringConfig {
        ScoringConfig {
            ban: Duration::from_secs(100),
            ban_multiplier: 3,
            ban_max: Duration::from_secs(1000),
            aggregate_min: 3,
            ..ScoringConfig::default()
        }
    }

    fn a(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn repeat_offenders_get_longer_bans_up_to_the_cap() {
        let mut offenders = Offenders::open(None);
        let durations: Vec<u64> = (0..4)
            .map(|i| {
                offenders.on_threshold(a("203.0.113.5"), i * 10_000, &scoring(), None)[0]
                    .duration
                    .as_secs()
            })
            .collect();
        assert_eq!(durations, [100, 300, 900, 1000]);
    }

    #[test]
    fn enough_banned_neighbours_ban_the_neighbourhood_once() {
        let mut offenders = Offenders::open(None);
        assert_eq!(
            offenders
                .on_threshold(a("203.0.113.1"), 0, &scoring(), None)
                .len(),
            1
        );
        assert_eq!(
            offenders
                .on_threshold(a("203.0.113.2"), 1, &scoring(), None)
                .len(),
            1
        );
        // A neighbour in another /24 does not count.
        assert_eq!(
            offenders
                .on_threshold(a("198.51.100.3"), 2, &scoring(), None)
                .len(),
            1
        );
        let bans = offenders.on_threshold(a("203.0.113.3"), 3, &scoring(), None);
        assert_eq!(bans.len(), 2);
        assert_eq!(bans[1].prefix.to_string(), "203.0.113.0/24");
        assert_eq!(bans[1].duration, Duration::from_secs(1000));
        // Already banned: not again.
        assert_eq!(
            offenders
                .on_threshold(a("203.0.113.4"), 4, &scoring(), None)
                .len(),
            1
        );
        // Bans that ended do not count: IPv6 /64 after the first ones expired.
        for (i, addr) in ["2001:db8:1::1", "2001:db8:1::2"].iter().enumerate() {
            let _ = offenders.on_threshold(a(addr), i as u64, &scoring(), None);
        }
        assert_eq!(
            offenders
                .on_threshold(a("2001:db8:1::3"), 500, &scoring(), None)
                .len(),
            1
        );
    }

    /// A table announcing `rows` (prefix, origin), each seen by 50 peers.
    fn announcing(rows: &[(&str, OriginAs)]) -> OriginTable {
        let mut builder = crate::origins::TableBuilder::new();
        for (prefix, origin) in rows {
            builder.add(prefix.parse().unwrap(), origin.clone(), 50);
        }
        builder.build()
    }

    fn announced(aggregate: Aggregate) -> ScoringConfig {
        ScoringConfig {
            aggregate_min: 5,
            aggregate,
            ..scoring()
        }
    }

    /// The neighbourhood bans (past each host's own) when `count` addresses from `base` on
    /// go over the threshold in turn, at times 0, 1, ...
    fn ban_many(
        offenders: &mut Offenders,
        base: &str,
        count: u8,
        scoring: &ScoringConfig,
        origins: Option<&OriginTable>,
    ) -> Vec<Ban> {
        let IpAddr::V4(base) = a(base) else {
            unreachable!()
        };
        (0..count)
            .flat_map(|i| {
                let addr = IpAddr::V4(std::net::Ipv4Addr::from(u32::from(base) + u32::from(i)));
                offenders
                    .on_threshold(addr, u64::from(i), scoring, origins)
                    .into_iter()
                    .skip(1)
            })
            .collect()
    }

    #[test]
    fn five_banned_in_an_announced_prefix_ban_it_four_do_not() {
        let table = announcing(&[("198.51.100.0/24", OriginAs::Single(64500))]);
        let mut offenders = Offenders::open(None);
        let scoring = announced(Aggregate::Announced);
        assert_eq!(
            ban_many(&mut offenders, "198.51.100.1", 4, &scoring, Some(&table)),
            []
        );
        let bans = offenders.on_threshold(a("198.51.100.200"), 5, &scoring, Some(&table));
        assert_eq!(bans.len(), 2);
        assert_eq!(bans[1].prefix.to_string(), "198.51.100.0/24");
        assert_eq!(
            bans[1].reason,
            "announced 198.51.100.0/24 of AS64500: 5 addresses banned"
        );
        assert_eq!(bans[1].duration, scoring.ban_max);
        // Not again while it lasts.
        assert_eq!(
            offenders
                .on_threshold(a("198.51.100.201"), 6, &scoring, Some(&table))
                .len(),
            1
        );
    }

    #[test]
    fn an_announcement_broader_than_the_maximum_is_never_banned_whole() {
        let table = announcing(&[
            ("12.0.0.0/8", OriginAs::Single(64501)),
            ("2001:db8::/29", OriginAs::Single(64502)),
        ]);
        let mut offenders = Offenders::open(None);
        let scoring = announced(Aggregate::Announced);
        assert_eq!(
            ban_many(&mut offenders, "12.1.0.1", 6, &scoring, Some(&table)),
            []
        );
        for (i, addr) in [
            "2001:db8:1::1",
            "2001:db8:2::1",
            "2001:db8:3::1",
            "2001:db8:4::1",
            "2001:db8:5::1",
        ]
        .iter()
        .enumerate()
        {
            let bans = offenders.on_threshold(a(addr), 10 + i as u64, &scoring, Some(&table));
            assert_eq!(bans.len(), 1, "{addr}");
        }
        // With the maximum at /8 the IPv4 one is banned.
        let wide = ScoringConfig {
            aggregate_announced_max_v4: 8,
            ..scoring
        };
        let bans = offenders.on_threshold(a("12.9.0.1"), 20, &wide, Some(&table));
        assert_eq!(bans.len(), 2);
        assert_eq!(bans[1].prefix.to_string(), "12.0.0.0/8");
    }

    #[test]
    fn both_bans_the_fixed_prefix_and_the_announced_one() {
        let table = announcing(&[("203.0.112.0/22", OriginAs::Single(64500))]);
        let mut offenders = Offenders::open(None);
        let scoring = announced(Aggregate::Both);
        // Four in one /24, then the fifth: both the /24 and the /22 hold five.
        let _ = ban_many(&mut offenders, "203.0.113.1", 4, &scoring, Some(&table));
        let bans = offenders.on_threshold(a("203.0.113.9"), 5, &scoring, Some(&table));
        let prefixes: Vec<String> = bans.iter().map(|b| b.prefix.to_string()).collect();
        assert_eq!(
            prefixes,
            ["203.0.113.9/32", "203.0.113.0/24", "203.0.112.0/22"]
        );
        assert_eq!(bans[1].reason, "5 addresses of 203.0.113.0/24 banned");
        assert_eq!(
            bans[2].reason,
            "announced 203.0.112.0/22 of AS64500: 5 addresses banned"
        );
        // A /24 inside the banned /22 is not banned again.
        assert_eq!(
            ban_many(&mut offenders, "203.0.114.1", 5, &scoring, Some(&table)),
            []
        );
        // An announcement that is the fixed prefix itself: one ban, named by the announcement.
        let table = announcing(&[("198.51.100.0/24", OriginAs::Single(64501))]);
        let bans = ban_many(&mut offenders, "198.51.100.1", 5, &scoring, Some(&table));
        assert_eq!(bans.len(), 1);
        assert_eq!(
            bans[0].reason,
            "announced 198.51.100.0/24 of AS64501: 5 addresses banned"
        );
    }

    #[test]
    fn an_as_set_origin_is_named_as_its_members() {
        let table = announcing(&[(
            "198.51.100.0/24",
            OriginAs::Set(vec![64500, 64501].into_boxed_slice()),
        )]);
        let mut offenders = Offenders::open(None);
        let bans = ban_many(
            &mut offenders,
            "198.51.100.1",
            5,
            &announced(Aggregate::Announced),
            Some(&table),
        );
        assert_eq!(
            bans[0].reason,
            "announced 198.51.100.0/24 of {AS64500,AS64501}: 5 addresses banned"
        );
    }

    #[test]
    fn without_a_table_both_is_the_fixed_prefix_and_announced_is_nothing() {
        let empty = OriginTable::empty();
        for origins in [None, Some(&empty)] {
            let mut offenders = Offenders::open(None);
            let bans = ban_many(
                &mut offenders,
                "198.51.100.1",
                5,
                &announced(Aggregate::Both),
                origins,
            );
            assert_eq!(bans.len(), 1);
            assert_eq!(bans[0].prefix.to_string(), "198.51.100.0/24");
            let mut offenders = Offenders::open(None);
            let bans = ban_many(
                &mut offenders,
                "198.51.100.1",
                5,
                &announced(Aggregate::Announced),
                origins,
            );
            assert_eq!(bans, []);
            assert!(offenders.said_no_table);
        }
    }

    #[test]
    fn the_record_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("xdpguard-offenders-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut offenders = Offenders::open(Some(&dir));
        let _ = offenders.on_threshold(a("203.0.113.9"), 0, &scoring(), None);
        offenders.save();
        let mut again = Offenders::open(Some(&dir));
        assert_eq!(again.bans_of(&a("203.0.113.9")), 1);
        assert_eq!(
            again.on_threshold(a("203.0.113.9"), 10, &scoring(), None)[0]
                .duration
                .as_secs(),
            300
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fifos_at_the_record_names_never_stall_loading_or_saving() {
        let dir =
            std::env::temp_dir().join(format!("xdpguard-offenders-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mkfifo = |name: &str| {
            let path = std::ffi::CString::new(dir.join(name).into_os_string().into_encoded_bytes())
                .unwrap();
            // SAFETY: a valid C string.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        };
        // With no writer, opening either FIFO for reading or writing would block forever.
        mkfifo("offenders.json");
        mkfifo("offenders.json.tmp");
        let mut offenders = Offenders::open(Some(&dir));
        assert_eq!(offenders.bans_of(&a("203.0.113.9")), 0);
        let _ = offenders.on_threshold(a("203.0.113.9"), 0, &scoring(), None);
        offenders.save();
        // The FIFO at the final name was replaced by the saved record.
        let again = Offenders::open(Some(&dir));
        assert_eq!(again.bans_of(&a("203.0.113.9")), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
