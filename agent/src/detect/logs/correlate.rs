//! Multi-line correlation: a rule with `remember = '${pid}'` keeps the address its line named
//! under a key it captured (sshd's pid, a dovecot session, a postfix queue id); a later rule
//! with `recall = '${pid}'` that matched a line without an address takes it from there. So
//! "fatal: Read from socket failed [preauth]" scores the client that connected as that pid.
//!
//! Memory is bounded: at most `max_sessions` keys (least recently used go first) and each for
//! `ttl` of log time. Time is passed in: no clock here.
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

/// The bounds of the session memory: `[rulesets] max_sessions` and `session_ttl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    pub max_sessions: usize,
    pub ttl: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            ttl: Duration::from_secs(600),
        }
    }
}

/// Counters of the session memory, for metrics and `check`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Keys held now.
    pub tracked: u64,
    pub remembered: u64,
    /// Lines that took their address from a remembered session.
    pub recalled: u64,
    /// Recalls that found no session (never seen, expired or evicted).
    pub missed: u64,
    /// Sessions dropped for room.
    pub evicted: u64,
    /// Scores parked by lines without an address, and parked scores a later line took.
    pub parked: u64,
    pub settled: u64,
}

struct Session {
    /// Empty until a line names it (a session may start with a parked score).
    address: String,
    /// Scores of lines without an address, waiting for one that names it.
    pending: i64,
    seen_ms: u64,
    seq: u64,
}

/// Remembered addresses by (ruleset, key).
pub struct Sessions {
    limits: SessionLimits,
    entries: HashMap<(String, String), Session>,
    /// seq → key, least recently used first.
    order: BTreeMap<u64, (String, String)>,
    next_seq: u64,
    stats: SessionStats,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            stats: SessionStats::default(),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// New bounds (a reload); sessions over the new count go, oldest first.
    pub fn set_limits(&mut self, limits: SessionLimits) {
        self.limits = limits;
        while self.entries.len() > self.limits.max_sessions {
            self.evict_oldest();
        }
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            tracked: self.entries.len() as u64,
            ..self.stats
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.limits.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn evict_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_first() {
            let _: Option<Session> = self.entries.remove(&key);
            self.stats.evicted += 1;
        }
    }

    /// Drop sessions not seen for the TTL.
    fn expire(&mut self, now_ms: u64) {
        let ttl = self.ttl_ms();
        while let Some((&seq, key)) = self.order.first_key_value() {
            let stale = self
                .entries
                .get(key)
                .is_none_or(|s| now_ms.saturating_sub(s.seen_ms) >= ttl);
            if !stale {
                break;
            }
            let key = key.clone();
            let _: Option<(String, String)> = self.order.remove(&seq);
            let _: Option<Session> = self.entries.remove(&key);
        }
    }

    /// The session of `key` for `ruleset`, made the most recently used (created when new).
    fn touch(&mut self, ruleset: &str, key: &str, now_ms: u64) -> Option<&mut Session> {
        if self.limits.max_sessions == 0 {
            return None;
        }
        self.expire(now_ms);
        let id = (ruleset.to_owned(), key.to_owned());
        let seq = self.next_seq;
        self.next_seq += 1;
        let session = match self.entries.remove(&id) {
            Some(old) => {
                let _: Option<(String, String)> = self.order.remove(&old.seq);
                Session {
                    seen_ms: now_ms,
                    seq,
                    ..old
                }
            }
            None => {
                if self.entries.len() >= self.limits.max_sessions {
                    self.evict_oldest();
                }
                Session {
                    address: String::new(),
                    pending: 0,
                    seen_ms: now_ms,
                    seq,
                }
            }
        };
        let _: Option<(String, String)> = self.order.insert(seq, id.clone());
        Some(self.entries.entry(id).or_insert(session))
    }

    /// Remember `address` under `key` for `ruleset`.
    pub fn remember(&mut self, ruleset: &str, key: &str, address: &str, now_ms: u64) {
        if let Some(session) = self.touch(ruleset, key, now_ms) {
            address.clone_into(&mut session.address);
            self.stats.remembered += 1;
        }
    }

    /// Park `score` under `key` until a line of the session names its address.
    pub fn park(&mut self, ruleset: &str, key: &str, score: i64, now_ms: u64) {
        if let Some(session) = self.touch(ruleset, key, now_ms) {
            session.pending = session.pending.saturating_add(score);
            self.stats.parked += 1;
        }
    }

    /// The scores parked under `key`, taken (0 when none).
    pub fn settle(&mut self, ruleset: &str, key: &str, now_ms: u64) -> i64 {
        self.expire(now_ms);
        let Some(session) = self.entries.get_mut(&(ruleset.to_owned(), key.to_owned())) else {
            return 0;
        };
        let pending = std::mem::take(&mut session.pending);
        if pending != 0 {
            self.stats.settled += 1;
        }
        pending
    }

    /// The address remembered under `key` for `ruleset`, when it is still held.
    pub fn recall(&mut self, ruleset: &str, key: &str, now_ms: u64) -> Option<String> {
        self.expire(now_ms);
        let found = self
            .entries
            .get(&(ruleset.to_owned(), key.to_owned()))
            .filter(|s| !s.address.is_empty())
            .map(|s| s.address.clone());
        if found.is_some() {
            self.stats.recalled += 1;
        } else {
            self.stats.missed += 1;
        }
        found
    }

    /// About what one session costs: its key, address and the two index entries.
    pub fn approximate_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|((r, k), s)| {
                2 * (r.len() + k.len())
                    + s.address.len()
                    + 2 * size_of::<(String, String)>()
                    + size_of::<Session>()
                    + size_of::<u64>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(max_sessions: usize, ttl_secs: u64) -> Sessions {
        Sessions::new(SessionLimits {
            max_sessions,
            ttl: Duration::from_secs(ttl_secs),
        })
    }

    #[test]
    fn same_key_recalls_and_another_key_or_ruleset_does_not() {
        let mut s = sessions(10, 60);
        s.remember("sshd", "42", "203.0.113.5", 0);
        assert_eq!(s.recall("sshd", "42", 1000).as_deref(), Some("203.0.113.5"));
        assert_eq!(s.recall("sshd", "43", 1000), None);
        assert_eq!(s.recall("dovecot", "42", 1000), None);
        let stats = s.stats();
        assert_eq!((stats.recalled, stats.missed, stats.tracked), (1, 2, 1));
    }

    #[test]
    fn sessions_expire_after_the_ttl_of_log_time() {
        let mut s = sessions(10, 60);
        s.remember("sshd", "42", "203.0.113.5", 0);
        assert!(s.recall("sshd", "42", 59_999).is_some());
        assert_eq!(s.recall("sshd", "42", 60_000), None);
        assert_eq!(s.stats().tracked, 0);
    }

    #[test]
    fn the_bound_evicts_the_least_recently_remembered() {
        let mut s = sessions(2, 600);
        s.remember("sshd", "1", "203.0.113.1", 0);
        s.remember("sshd", "2", "203.0.113.2", 1);
        // Remembering 1 again makes 2 the oldest.
        s.remember("sshd", "1", "203.0.113.11", 2);
        s.remember("sshd", "3", "203.0.113.3", 3);
        assert_eq!(s.recall("sshd", "2", 4), None);
        assert_eq!(s.recall("sshd", "1", 4).as_deref(), Some("203.0.113.11"));
        assert_eq!(s.recall("sshd", "3", 4).as_deref(), Some("203.0.113.3"));
        assert_eq!(s.stats().evicted, 1);
        assert_eq!(s.stats().tracked, 2);
        s.set_limits(SessionLimits {
            max_sessions: 1,
            ttl: Duration::from_secs(600),
        });
        assert_eq!(s.stats().tracked, 1);
    }
}
