//! Per-address scores in a sliding window: each match adds to the source's score, a source
//! not seen for `window` starts over, scores never go below `score_min`, and at most
//! `max_tracked` sources are remembered (least recently seen go first), so a flood of
//! distinct sources cannot grow memory without bound. Time is passed in: no clock here.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Duration,
};

/// How scores are kept and when one crosses; the board's part of the `[scoring]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoringPolicy {
    /// A source not seen for this long starts over.
    pub window: Duration,
    /// Floor for rules with negative scores.
    pub score_min: i64,
    /// Block when a score goes above this.
    pub threshold: i64,
    /// Sources remembered at most (least recently seen go first).
    pub max_tracked: usize,
    /// Never score addresses that are not globally routable (private, loopback, link-local,
    /// documentation, ...).
    pub exclude_local: bool,
}

impl Default for ScoringPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            score_min: 0,
            threshold: 10,
            max_tracked: 100_000,
            exclude_local: true,
        }
    }
}

/// What one scoring step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scored {
    /// The address is not scored (local, or `exclude_local`).
    Ignored,
    /// New score, still at or under the threshold.
    Below(i64),
    /// New score; this step took it above the threshold.
    Crossed(i64),
    /// New score, above the threshold already before.
    Above(i64),
}

struct Entry {
    score: i64,
    last_seen_ms: u64,
    /// Position in `order`.
    seq: u64,
}

pub struct ScoreBoard {
    policy: ScoringPolicy,
    entries: HashMap<IpAddr, Entry>,
    /// seq → address, oldest first: expiry and eviction take from the front.
    order: BTreeMap<u64, IpAddr>,
    next_seq: u64,
    evicted: u64,
}

/// Whether `addr` is globally routable (IANA special-purpose registries, roughly as Python's
/// `ipaddress.is_global`).
pub fn is_global(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                || first == 0x0100
                || first == 0x0064)
        }
    }
}

impl ScoreBoard {
    pub fn new(policy: ScoringPolicy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            evicted: 0,
        }
    }

    pub const fn policy(&self) -> &ScoringPolicy {
        &self.policy
    }

    /// Change the policy; the scores kept so far stay.
    pub fn set_policy(&mut self, policy: ScoringPolicy) {
        self.policy = policy;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Addresses dropped to stay within `max_tracked`, so far.
    pub const fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Every tracked address with its score, in no particular order.
    pub fn addresses(&self) -> impl Iterator<Item = (IpAddr, i64)> + '_ {
        self.entries
            .iter()
            .map(|(addr, entry)| (*addr, entry.score))
    }

    pub fn score(&self, addr: &IpAddr) -> Option<i64> {
        self.entries.get(addr).map(|e| e.score)
    }

    /// Forget what was last seen more than a window before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let window = u64::try_from(self.policy.window.as_millis()).unwrap_or(u64::MAX);
        while let Some((&seq, &addr)) = self.order.first_key_value() {
            let stale = self
                .entries
                .get(&addr)
                .is_none_or(|e| e.last_seen_ms.saturating_add(window) < now_ms);
            if !stale {
                break;
            }
            let _: Option<IpAddr> = self.order.remove(&seq);
            let _: Option<Entry> = self.entries.remove(&addr);
        }
    }

    /// Add `delta` to `addr`'s score at `now_ms`.
    pub fn add(&mut self, addr: IpAddr, delta: i64, now_ms: u64) -> Scored {
        if addr.is_unspecified() || (self.policy.exclude_local && !is_global(addr)) {
            return Scored::Ignored;
        }
        self.expire(now_ms);
        let seq = self.next_seq;
        self.next_seq += 1;
        let (before, after) = match self.entries.get_mut(&addr) {
            Some(entry) => {
                let _: Option<IpAddr> = self.order.remove(&entry.seq);
                let before = entry.score;
                entry.score = (entry.score + delta).max(self.policy.score_min);
                entry.last_seen_ms = now_ms;
                entry.seq = seq;
                (before, entry.score)
            }
            None => {
                let score = delta.max(self.policy.score_min);
                let _: Option<Entry> = self.entries.insert(
                    addr,
                    Entry {
                        score,
                        last_seen_ms: now_ms,
                        seq,
                    },
                );
                (self.policy.score_min.min(0), score)
            }
        };
        let _: Option<IpAddr> = self.order.insert(seq, addr);
        while self.entries.len() > self.policy.max_tracked {
            if let Some((_, oldest)) = self.order.pop_first() {
                let _: Option<Entry> = self.entries.remove(&oldest);
                self.evicted += 1;
            }
        }
        let threshold = self.policy.threshold;
        match (before > threshold, after > threshold) {
            (false, true) => Scored::Crossed(after),
            (true, true) => Scored::Above(after),
            _ => Scored::Below(after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(window_s: u64, max_tracked: usize) -> ScoreBoard {
        ScoreBoard::new(ScoringPolicy {
            window: Duration::from_secs(window_s),
            score_min: 0,
            threshold: 10,
            max_tracked,
            exclude_local: false,
        })
    }

    fn a(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn crossing_the_threshold_is_reported_once() {
        let mut b = board(60, 10);
        assert_eq!(b.add(a("198.51.100.1"), 6, 0), Scored::Below(6));
        assert_eq!(
            b.add(a("198.51.100.1"), 4, 1),
            Scored::Below(10),
            "at the threshold is not over it"
        );
        assert_eq!(b.add(a("198.51.100.1"), 1, 2), Scored::Crossed(11));
        assert_eq!(b.add(a("198.51.100.1"), 1, 3), Scored::Above(12));
    }

    #[test]
    fn the_window_slides_from_the_last_sighting() {
        let mut b = board(60, 10);
        let _ = b.add(a("198.51.100.1"), 6, 0);
        let _ = b.add(a("198.51.100.1"), 1, 50_000);
        // 50 s after the last sighting: still counting.
        assert_eq!(b.add(a("198.51.100.1"), 1, 100_000), Scored::Below(8));
        // More than a window of silence: starts over.
        assert_eq!(b.add(a("198.51.100.1"), 1, 160_001), Scored::Below(1));
    }

    #[test]
    fn score_floor_holds_for_negative_rules() {
        let mut b = board(60, 10);
        assert_eq!(b.add(a("198.51.100.1"), -5, 0), Scored::Below(0));
        let _ = b.add(a("198.51.100.1"), 3, 1);
        assert_eq!(b.add(a("198.51.100.1"), -10, 2), Scored::Below(0));
    }

    #[test]
    fn least_recently_seen_is_evicted_at_the_limit() {
        let mut b = board(600, 3);
        for (i, addr) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
            .iter()
            .enumerate()
        {
            let _ = b.add(a(addr), 1, i as u64);
        }
        let _ = b.add(a("198.51.100.1"), 1, 10); // .1 is now the most recent
        let _ = b.add(a("198.51.100.4"), 1, 11);
        assert_eq!(b.len(), 3);
        assert_eq!(b.evicted(), 1);
        assert_eq!(
            b.score(&a("198.51.100.2")),
            None,
            "the least recently seen went"
        );
        assert_eq!(b.score(&a("198.51.100.1")), Some(2));
    }

    #[test]
    fn local_addresses_are_not_scored_when_excluded() {
        let mut b = ScoreBoard::new(ScoringPolicy::default());
        for local in [
            "10.1.2.3",
            "127.0.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fe80::1",
            "fd00::1",
            "::1",
            "203.0.113.5",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(b.add(a(local), 5, 0), Scored::Ignored, "{local}");
        }
        assert_eq!(b.add(a("8.8.8.8"), 5, 0), Scored::Below(5));
        assert_eq!(b.add(a("2a00:1450::1"), 5, 0), Scored::Below(5));
        assert_eq!(b.add(a("0.0.0.0"), 5, 0), Scored::Ignored);
    }
}
