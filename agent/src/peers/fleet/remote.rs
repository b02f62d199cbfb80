//! The other hosts' decisions this agent holds, and the orders that keep the owner in step.
//!
//! Several hosts may block one prefix (each its own key); xdpguard holds one block per prefix,
//! until the latest end among them, on behalf of the host whose block ends last. A deletion
//! that leaves others moves the end to theirs (an order marked `shorten`); the last deletion
//! unblocks. A full read (after every (re)connection) is the whole set: prefixes held before
//! and absent from it are unblocked.
use std::collections::{HashMap, hash_map::Entry};

use super::wire::Remote;
use crate::{enforce::decision::DecisionKind, peers::orders::Order, prefix::Prefix};

/// A decision's place: its kind and prefix.
type Place = (DecisionKind, Prefix);

/// An end for comparing: "never" (0) outlasts every time.
const fn end(until: u64) -> u64 {
    if until == 0 { u64::MAX } else { until }
}

/// Prefixes whose block is to be worked out again, with the end in place before (`None`:
/// nothing held).
#[derive(Debug, Default)]
pub struct Touched(HashMap<Place, Option<u64>>);

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug)]
pub struct RemoteSet {
    by_place: HashMap<Place, Vec<Remote>>,
    len: usize,
    capacity: usize,
}

impl RemoteSet {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_place: HashMap::new(),
            len: 0,
            capacity,
        }
    }

    /// Decisions held (one per host and prefix).
    pub const fn len(&self) -> usize {
        self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hosts with a decision held.
    pub fn hosts(&self) -> usize {
        let mut hosts: Vec<&str> = self
            .by_place
            .values()
            .flatten()
            .map(|remote| &*remote.host)
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts.len()
    }

    fn note(&self, place: Place, touched: &mut Touched) {
        let before = self.latest(&place).map(|remote| end(remote.until));
        let _: &mut Option<u64> = touched.0.entry(place).or_insert(before);
    }

    /// Take (or replace) a host's decision; `false` when full.
    pub fn put(&mut self, remote: Remote, touched: &mut Touched) -> bool {
        let prefix = (remote.kind, remote.prefix);
        let held = self.by_place.get(&prefix);
        let replaces = held.is_some_and(|list| list.iter().any(|r| r.host == remote.host));
        if !replaces && self.len >= self.capacity {
            return false;
        }
        self.note(prefix, touched);
        let list = self.by_place.entry(prefix).or_default();
        list.retain(|r| r.host != remote.host);
        list.push(remote);
        if !replaces {
            self.len += 1;
        }
        true
    }

    /// Forget a host's decision; whether it was held.
    pub fn delete(
        &mut self,
        host: &str,
        kind: DecisionKind,
        prefix: &Prefix,
        touched: &mut Touched,
    ) -> bool {
        let place = (kind, *prefix);
        let Some(list) = self.by_place.get(&place) else {
            return false;
        };
        if !list.iter().any(|r| &*r.host == host) {
            return false;
        }
        self.note(place, touched);
        if let Entry::Occupied(mut list) = self.by_place.entry(place) {
            list.get_mut().retain(|r| &*r.host != host);
            if list.get().is_empty() {
                let _: Vec<Remote> = list.remove();
            }
        }
        self.len -= 1;
        true
    }

    /// A full read starts: everything held (and `also_held`, blocks of the fleet in place
    /// that this set may not know: a restarted daemon's) is forgotten, to be read again.
    pub fn begin_full_read(&mut self, also_held: &[Place], touched: &mut Touched) {
        let prefixes: Vec<Place> = self.by_place.keys().copied().collect();
        for prefix in prefixes {
            self.note(prefix, touched);
        }
        for prefix in also_held {
            let _: &mut Option<u64> = touched.0.entry(*prefix).or_insert(Some(0));
        }
        self.by_place.clear();
        self.len = 0;
    }

    /// Drop decisions whose end has passed (the owner expired them on its own).
    pub fn expire(&mut self, now_unix: u64) {
        let mut gone = 0;
        self.by_place.retain(|_, list| {
            let before = list.len();
            list.retain(|r| r.until == 0 || r.until > now_unix);
            gone += before - list.len();
            !list.is_empty()
        });
        self.len -= gone;
    }

    /// The orders that bring the owner in line with the touched prefixes, in prefix order.
    pub fn orders(&self, touched: Touched) -> Vec<Order> {
        let mut touched: Vec<(Place, Option<u64>)> = touched.0.into_iter().collect();
        touched.sort_unstable_by_key(|(place, _)| *place);
        let mut orders = Vec::new();
        for ((kind, prefix), before) in touched {
            if kind == DecisionKind::Allow {
                match (before, self.latest(&(kind, prefix))) {
                    (Some(_), None) => orders.push(Order::Unallow { prefix }),
                    (None, Some(remote)) => orders.push(Order::Allow {
                        prefix,
                        origin: remote.host.to_string(),
                        reason: format!("{}: {}", remote.source, remote.reason),
                    }),
                    _ => {}
                }
                continue;
            }
            let block = |remote: &Remote, shorten: bool| Order::Block {
                prefix,
                origin: remote.host.to_string(),
                reason: format!("{}: {}", remote.source, remote.reason),
                until_unix: remote.until,
                shorten,
            };
            match (before, self.latest(&(kind, prefix))) {
                (Some(_), None) => orders.push(Order::Unblock { prefix }),
                (None, Some(remote)) => orders.push(block(remote, false)),
                (Some(before), Some(remote)) if end(remote.until) > before => {
                    orders.push(block(remote, false));
                }
                (Some(before), Some(remote)) if end(remote.until) < before => {
                    orders.push(block(remote, true));
                }
                _ => {}
            }
        }
        orders
    }

    fn latest(&self, place: &Place) -> Option<&Remote> {
        self.by_place
            .get(place)?
            .iter()
            .max_by_key(|remote| (end(remote.until), remote.host.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(host: &str, prefix: &str, until: u64) -> Remote {
        Remote {
            host: host.into(),
            kind: DecisionKind::Block,
            prefix: prefix.parse().unwrap(),
            source: "ruleset:sshd".into(),
            reason: "r".into(),
            created: 1,
            until,
        }
    }

    fn block(prefix: &str, host: &str, until: u64, shorten: bool) -> Order {
        Order::Block {
            prefix: prefix.parse().unwrap(),
            origin: host.into(),
            reason: "ruleset:sshd: r".into(),
            until_unix: until,
            shorten,
        }
    }

    #[test]
    fn the_latest_end_among_hosts_is_blocked_and_the_last_deletion_unblocks() {
        let mut set = RemoteSet::new(10);
        let mut t = Touched::default();
        assert!(set.put(remote("a", "203.0.113.7", 100), &mut t));
        assert_eq!(set.orders(t), [block("203.0.113.7", "a", 100, false)]);
        // Another host blocks longer: extended on its behalf.
        let mut t = Touched::default();
        assert!(set.put(remote("c", "203.0.113.7", 0), &mut t));
        assert_eq!(set.orders(t), [block("203.0.113.7", "c", 0, false)]);
        // The same value again (a full read) orders nothing.
        let mut t = Touched::default();
        assert!(set.put(remote("c", "203.0.113.7", 0), &mut t));
        assert!(set.orders(t).is_empty());
        // The longer one goes: shortened to the one left.
        let mut t = Touched::default();
        assert!(set.delete(
            "c",
            DecisionKind::Block,
            &"203.0.113.7".parse().unwrap(),
            &mut t
        ));
        assert_eq!(set.orders(t), [block("203.0.113.7", "a", 100, true)]);
        let mut t = Touched::default();
        assert!(!set.delete(
            "c",
            DecisionKind::Block,
            &"203.0.113.7".parse().unwrap(),
            &mut t
        ));
        assert!(set.delete(
            "a",
            DecisionKind::Block,
            &"203.0.113.7".parse().unwrap(),
            &mut t
        ));
        assert_eq!(
            set.orders(t),
            [Order::Unblock {
                prefix: "203.0.113.7".parse().unwrap()
            }]
        );
        assert!(set.is_empty());
    }

    #[test]
    fn a_full_read_unblocks_what_it_lacks_and_capacity_refuses_new_ones() {
        let mut set = RemoteSet::new(2);
        let mut t = Touched::default();
        assert!(set.put(remote("a", "203.0.113.1", 100), &mut t));
        assert!(set.put(remote("a", "203.0.113.2", 100), &mut t));
        assert!(!set.put(remote("a", "203.0.113.3", 100), &mut t));
        assert!(
            set.put(remote("a", "203.0.113.2", 200), &mut t),
            "a replacement fits"
        );
        let _ = set.orders(t);
        let mut t = Touched::default();
        set.begin_full_read(
            &[(DecisionKind::Block, "198.51.100.9".parse().unwrap())],
            &mut t,
        );
        assert!(set.put(remote("a", "203.0.113.2", 200), &mut t));
        assert_eq!(
            set.orders(t),
            [
                Order::Unblock {
                    prefix: "198.51.100.9".parse().unwrap()
                },
                Order::Unblock {
                    prefix: "203.0.113.1".parse().unwrap()
                },
            ]
        );
        set.expire(200);
        assert!(set.is_empty());
        assert_eq!(set.hosts(), 0);
    }

    #[test]
    fn allows_are_held_while_any_host_allows_and_never_touch_a_block() {
        let mut set = RemoteSet::new(10);
        let allow = |host: &str| Remote {
            kind: DecisionKind::Allow,
            ..remote(host, "203.0.113.9", 0)
        };
        let mut t = Touched::default();
        assert!(set.put(allow("a"), &mut t));
        assert!(set.put(allow("c"), &mut t));
        assert!(set.put(remote("a", "203.0.113.9", 100), &mut t));
        let orders = set.orders(t);
        assert_eq!(orders.len(), 2, "{orders:?}");
        assert!(orders.contains(&block("203.0.113.9", "a", 100, false)));
        assert!(
            orders
                .iter()
                .any(|o| matches!(o, Order::Allow { origin, .. } if origin == "c"))
        );
        let prefix = "203.0.113.9".parse().unwrap();
        let mut t = Touched::default();
        assert!(set.delete("a", DecisionKind::Allow, &prefix, &mut t));
        assert!(set.orders(t).is_empty(), "c still allows it");
        let mut t = Touched::default();
        assert!(set.delete("c", DecisionKind::Allow, &prefix, &mut t));
        assert_eq!(set.orders(t), [Order::Unallow { prefix }]);
    }
}
