//! Repeat offenders and neighbourhoods: what a score over the threshold turns into. The n-th
//! ban of an address lasts `ban × multiplier^(n-1)`, capped; once enough addresses of one
//! neighbourhood (an IPv4 /24, an IPv6 /64 by default) are banned at the same time, the
//! neighbourhood is banned as a whole. The record survives restarts (state directory).
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{detect::logs::score::ScoringPolicy, prefix::Prefix};

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

    /// `addr` went over the threshold at `now_unix`: the bans to ask for.
    pub fn on_threshold(
        &mut self,
        addr: IpAddr,
        now_unix: u64,
        scoring: &ScoringConfig,
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
        let len = if Prefix::host(addr).is_ipv4() {
            scoring.aggregate_len_v4
        } else {
            scoring.aggregate_len_v6
        };
        let Ok(neighbourhood) = Prefix::new(addr, len) else {
            return bans;
        };
        if self
            .neighbourhoods
            .get(&neighbourhood)
            .is_some_and(|until| *until > now_unix)
        {
            return bans;
        }
        let banned = self
            .records
            .iter()
            .filter(|(a, r)| r.until_unix > now_unix && neighbourhood.contains(**a))
            .count();
        if banned >= scoring.aggregate_min as usize {
            let _ = self
                .neighbourhoods
                .insert(neighbourhood, now_unix + scoring.ban_max.as_secs());
            bans.push(Ban {
                prefix: neighbourhood,
                duration: scoring.ban_max,
                reason: format!("{banned} addresses of {neighbourhood} banned"),
            });
        }
        bans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                offenders.on_threshold(a("203.0.113.5"), i * 10_000, &scoring())[0]
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
                .on_threshold(a("203.0.113.1"), 0, &scoring())
                .len(),
            1
        );
        assert_eq!(
            offenders
                .on_threshold(a("203.0.113.2"), 1, &scoring())
                .len(),
            1
        );
        // A neighbour in another /24 does not count.
        assert_eq!(
            offenders
                .on_threshold(a("198.51.100.3"), 2, &scoring())
                .len(),
            1
        );
        let bans = offenders.on_threshold(a("203.0.113.3"), 3, &scoring());
        assert_eq!(bans.len(), 2);
        assert_eq!(bans[1].prefix.to_string(), "203.0.113.0/24");
        assert_eq!(bans[1].duration, Duration::from_secs(1000));
        // Already banned: not again.
        assert_eq!(
            offenders
                .on_threshold(a("203.0.113.4"), 4, &scoring())
                .len(),
            1
        );
        // Bans that ended do not count: IPv6 /64 after the first ones expired.
        for (i, addr) in ["2001:db8:1::1", "2001:db8:1::2"].iter().enumerate() {
            let _ = offenders.on_threshold(a(addr), i as u64, &scoring());
        }
        assert_eq!(
            offenders
                .on_threshold(a("2001:db8:1::3"), 500, &scoring())
                .len(),
            1
        );
    }

    #[test]
    fn the_record_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("xdpguard-offenders-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut offenders = Offenders::open(Some(&dir));
        let _ = offenders.on_threshold(a("203.0.113.9"), 0, &scoring());
        offenders.save();
        let mut again = Offenders::open(Some(&dir));
        assert_eq!(again.bans_of(&a("203.0.113.9")), 1);
        assert_eq!(
            again.on_threshold(a("203.0.113.9"), 10, &scoring())[0]
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
        let _ = offenders.on_threshold(a("203.0.113.9"), 0, &scoring());
        offenders.save();
        // The FIFO at the final name was replaced by the saved record.
        let again = Offenders::open(Some(&dir));
        assert_eq!(again.bans_of(&a("203.0.113.9")), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
