//! Multi-line correlation: a rule with `remember = '${pid}'` keeps the address its line named
//! under a key it captured (sshd's pid, a dovecot session, a postfix queue id); a later rule
//! with `recall = '${pid}'` that matched a line without an address takes it from there. So
//! "fatal: Read from socket failed [preauth]" scores the client that connected as that pid.
//!
//! Memory is bounded: at most `max_sessions` keys (least recently used go first) and each for
//! `ttl` of log time. Time is passed in: no clock here.
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
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
    /// Sessions a `forget` rule ended.
    pub forgotten: u64,
}

struct Session {
    /// Empty until a line names it (a session may start with a parked score).
    address: String,
    /// Scores of lines without an address, waiting for one that names it.
    pending: i64,
    /// The distinct values a `distinct` rule saw (user names), at most [`MAX_NAMES`].
    names: Vec<String>,
    seen_ms: u64,
    /// Its latest place in `order`: older places there are stale.
    seq: u64,
}

/// Distinct values kept per session: "more than one" is all a rule asks.
const MAX_NAMES: usize = 8;

/// Remembered addresses by (ruleset, key).
pub struct Sessions {
    limits: SessionLimits,
    /// By "ruleset NUL key" (one string: looked up from a reused buffer, no allocation).
    entries: HashMap<Arc<str>, Session>,
    /// Touches in order, least recent first: (seq, key). A session's older touches stay
    /// until they reach the front (skipped there, as their seq is not the session's); the
    /// queue is compacted when it holds more stale places than live ones.
    order: VecDeque<(u64, Arc<str>)>,
    next_seq: u64,
    scratch: String,
    stats: SessionStats,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            scratch: String::new(),
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

    /// The least recently used live session's key, its stale places in front dropped.
    fn oldest(&mut self) -> Option<(u64, Arc<str>)> {
        while let Some((seq, key)) = self.order.front() {
            if self.entries.get(key).is_some_and(|s| s.seq == *seq) {
                return Some((*seq, Arc::clone(key)));
            }
            let _: Option<(u64, Arc<str>)> = self.order.pop_front();
        }
        None
    }

    fn evict_oldest(&mut self) {
        if let Some((_, key)) = self.oldest() {
            let _: Option<(u64, Arc<str>)> = self.order.pop_front();
            let _: Option<Session> = self.entries.remove(&key);
            self.stats.evicted += 1;
        }
    }

    /// Drop sessions not seen for the TTL.
    fn expire(&mut self, now_ms: u64) {
        let ttl = self.ttl_ms();
        while let Some((_, key)) = self.oldest() {
            let stale = self
                .entries
                .get(&key)
                .is_none_or(|s| now_ms.saturating_sub(s.seen_ms) >= ttl);
            if !stale {
                break;
            }
            let _: Option<(u64, Arc<str>)> = self.order.pop_front();
            let _: Option<Session> = self.entries.remove(&key);
        }
    }

    /// `ruleset NUL key` in the reused buffer.
    fn id(&mut self, ruleset: &str, key: &str) {
        self.scratch.clear();
        self.scratch.push_str(ruleset);
        self.scratch.push('\0');
        self.scratch.push_str(key);
    }

    /// The session of `key` for `ruleset`, made the most recently used (created when new).
    fn touch(&mut self, ruleset: &str, key: &str, now_ms: u64) -> Option<&mut Session> {
        if self.limits.max_sessions == 0 {
            return None;
        }
        self.expire(now_ms);
        self.id(ruleset, key);
        let seq = self.next_seq;
        self.next_seq += 1;
        let id: Arc<str> = match self.entries.get_key_value(self.scratch.as_str()) {
            Some((id, _)) => Arc::clone(id),
            None => {
                if self.entries.len() >= self.limits.max_sessions {
                    self.evict_oldest();
                }
                let id: Arc<str> = Arc::from(self.scratch.as_str());
                let _: Option<Session> = self.entries.insert(
                    Arc::clone(&id),
                    Session {
                        address: String::new(),
                        pending: 0,
                        names: Vec::new(),
                        seen_ms: now_ms,
                        seq,
                    },
                );
                id
            }
        };
        self.order.push_back((seq, Arc::clone(&id)));
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(seq, key)| entries.get(key).is_some_and(|s| s.seq == *seq));
        }
        let session = self.entries.get_mut(&id)?;
        session.seen_ms = now_ms;
        session.seq = seq;
        Some(session)
    }

    /// The live session of `key` for `ruleset`, without touching it.
    fn find(&mut self, ruleset: &str, key: &str, now_ms: u64) -> Option<&mut Session> {
        self.expire(now_ms);
        self.id(ruleset, key);
        self.entries.get_mut(self.scratch.as_str())
    }

    /// Remember `address` under `key` for `ruleset`.
    pub fn remember(&mut self, ruleset: &str, key: &str, address: &str, now_ms: u64) {
        if let Some(session) = self.touch(ruleset, key, now_ms) {
            if session.address != address {
                address.clone_into(&mut session.address);
            }
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
        let Some(session) = self.find(ruleset, key, now_ms) else {
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
        let found = self
            .find(ruleset, key, now_ms)
            .filter(|s| !s.address.is_empty())
            .map(|s| s.address.clone());
        if found.is_some() {
            self.stats.recalled += 1;
        } else {
            self.stats.missed += 1;
        }
        found
    }

    /// Add `name` to the distinct values seen under `key` (a session is made for it); how
    /// many the session has seen (at most [`MAX_NAMES`]).
    pub fn name(&mut self, ruleset: &str, key: &str, name: &str, now_ms: u64) -> usize {
        let Some(session) = self.touch(ruleset, key, now_ms) else {
            return 0;
        };
        if session.names.len() < MAX_NAMES && !session.names.iter().any(|n| n == name) {
            session.names.push(name.to_owned());
        }
        session.names.len()
    }

    /// End the session of `key` (the connection is gone): later lines of the same key start
    /// afresh. Whether there was one.
    pub fn forget(&mut self, ruleset: &str, key: &str, now_ms: u64) -> bool {
        self.expire(now_ms);
        self.id(ruleset, key);
        let gone = self.entries.remove(self.scratch.as_str()).is_some();
        if gone {
            self.stats.forgotten += 1;
        }
        gone
    }

    /// About what one session costs: its key (shared by the map and its place in the
    /// queue), address, names and the index entries.
    pub fn approximate_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, s)| {
                k.len()
                    + 2 * size_of::<usize>()
                    + s.address.capacity()
                    + s.names
                        .iter()
                        .map(|n| n.capacity() + size_of::<String>())
                        .sum::<usize>()
                    + size_of::<(Arc<str>, Session)>()
                    + size_of::<(u64, Arc<str>)>()
            })
            .sum::<usize>()
            + (self.order.len().saturating_sub(self.entries.len())) * size_of::<(u64, Arc<str>)>()
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

    #[test]
    fn a_forgotten_session_starts_afresh_and_names_are_distinct_and_bounded() {
        let mut s = sessions(10, 600);
        s.remember("sshd", "42", "203.0.113.5", 0);
        s.park("sshd", "42", 2, 1);
        assert!(s.forget("sshd", "42", 2));
        assert!(!s.forget("sshd", "42", 2));
        assert_eq!(s.recall("sshd", "42", 3), None);
        assert_eq!(s.settle("sshd", "42", 3), 0);
        assert_eq!(s.stats().forgotten, 1);
        assert_eq!(s.name("sshd", "7", "root", 4), 1);
        assert_eq!(s.name("sshd", "7", "root", 5), 1);
        assert_eq!(s.name("sshd", "7", "admin", 6), 2);
        // Another ruleset's session of the same key is another session.
        assert_eq!(s.name("dovecot", "7", "admin", 6), 1);
        for n in 0..20 {
            let _ = s.name("sshd", "7", &format!("user{n}"), 7);
        }
        assert_eq!(s.name("sshd", "7", "last", 8), MAX_NAMES);
    }

    #[test]
    fn touching_one_session_often_keeps_the_queue_bounded_and_the_order_right() {
        let mut s = sessions(3, 600);
        s.remember("sshd", "a", "203.0.113.1", 0);
        s.remember("sshd", "b", "203.0.113.2", 0);
        for t in 0..10_000 {
            s.remember("sshd", "a", "203.0.113.1", t);
        }
        assert!(s.order.len() <= 2 * 2 + 64, "{}", s.order.len());
        s.remember("sshd", "c", "203.0.113.3", 10_000);
        s.remember("sshd", "d", "203.0.113.4", 10_000);
        // b was the least recently used.
        assert_eq!(s.recall("sshd", "b", 10_001), None);
        assert!(s.recall("sshd", "a", 10_001).is_some());
        assert_eq!(s.stats().evicted, 1);
    }
}
