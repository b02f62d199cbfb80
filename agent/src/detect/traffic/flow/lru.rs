//! A map with least-recently-used eviction under two bounds: entries per group and entries in
//! total. The flow decoder keeps an exporter's templates in one, grouped by observation domain
//! (NetFlow v9 source id), and its sampling state in others. Flows are UDP, so anyone who can
//! spoof an exporter's address can announce templates for it: a bound that refused new
//! entries once full would let such a flood lock out the exporter's real templates until they
//! time out. Evicting the least recently used instead means the flood evicts itself, and a
//! new entry always finds room.
//!
//! "Used" is whatever the owner says with [`GroupedLru::touch`] or [`GroupedLru::get_mut`]
//! (for templates: announced, or used to decode). Uses are numbered from one clock, so no two
//! entries share a place in the order and the order is exact.
use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
};

/// What [`GroupedLru::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// Stored (a new entry, or one replaced in place), after evicting this many.
    Stored { evicted: usize },
    /// A bound is 0: nothing can be stored.
    Refused,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    /// The clock at the last use; unique among the entries.
    used: u64,
}

/// Entries keyed by (group, key), at most `max_per_group` per group and `max_total` in all.
#[derive(Debug)]
pub struct GroupedLru<G, K, V> {
    entries: HashMap<(G, K), Entry<V>>,
    /// Every entry by its last use, the least recent first.
    by_use: BTreeMap<u64, (G, K)>,
    /// Each group's entries by their last use; a group without entries is removed.
    groups: HashMap<G, BTreeMap<u64, K>>,
    /// The last use handed out.
    clock: u64,
    max_per_group: usize,
    max_total: usize,
}

impl<G, K, V> GroupedLru<G, K, V>
where
    G: Copy + Eq + Hash,
    K: Copy + Eq + Hash,
{
    pub fn new(max_per_group: usize, max_total: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            groups: HashMap::new(),
            clock: 0,
            max_per_group,
            max_total,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries of `group`.
    pub fn group_len(&self, group: G) -> usize {
        self.groups.get(&group).map_or(0, BTreeMap::len)
    }

    /// Groups with at least one entry.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The entry, without counting this as a use.
    pub fn get(&self, group: G, key: K) -> Option<&V> {
        self.entries.get(&(group, key)).map(|entry| &entry.value)
    }

    /// The entry, counting this as a use.
    pub fn touch(&mut self, group: G, key: K) -> Option<&V> {
        self.get_mut(group, key).map(|value| &*value)
    }

    /// The entry to change, counting this as a use.
    pub fn get_mut(&mut self, group: G, key: K) -> Option<&mut V> {
        // One lookup: decoding calls this for every data set.
        let entry = self.entries.get_mut(&(group, key))?;
        if entry.used != self.clock {
            // Not already the most recent use (the common case of one busy template is).
            self.clock += 1;
            let before = std::mem::replace(&mut entry.used, self.clock);
            let _: Option<(G, K)> = self.by_use.remove(&before);
            let _: Option<(G, K)> = self.by_use.insert(self.clock, (group, key));
            if let Some(order) = self.groups.get_mut(&group) {
                let _: Option<K> = order.remove(&before);
                let _: Option<K> = order.insert(self.clock, key);
            }
        }
        Some(&mut entry.value)
    }

    /// Stores `value` as the most recently used entry, first evicting the least recently used
    /// of its group, then of all, while a bound is reached. An entry already there is
    /// replaced without evicting anything.
    pub fn insert(&mut self, group: G, key: K, value: V) -> Insert {
        if let Some(entry) = self.get_mut(group, key) {
            *entry = value;
            return Insert::Stored { evicted: 0 };
        }
        if self.max_per_group == 0 || self.max_total == 0 {
            return Insert::Refused;
        }
        let mut evicted = 0;
        while self.group_len(group) >= self.max_per_group && self.evict_oldest_of(group) {
            evicted += 1;
        }
        while self.entries.len() >= self.max_total && self.evict_oldest() {
            evicted += 1;
        }
        self.clock += 1;
        let used = self.clock;
        let _: Option<Entry<V>> = self.entries.insert((group, key), Entry { value, used });
        let _: Option<(G, K)> = self.by_use.insert(used, (group, key));
        let _: Option<K> = self.groups.entry(group).or_default().insert(used, key);
        Insert::Stored { evicted }
    }

    pub fn remove(&mut self, group: G, key: K) -> Option<V> {
        let entry = self.entries.remove(&(group, key))?;
        let _: Option<(G, K)> = self.by_use.remove(&entry.used);
        self.forget_in_group(group, entry.used);
        Some(entry.value)
    }

    /// Keeps the entries of `group` for which `keep` holds.
    pub fn retain_group(&mut self, group: G, mut keep: impl FnMut(&K, &V) -> bool) {
        let Some(order) = self.groups.get(&group) else {
            return;
        };
        let doomed: Vec<K> = order
            .values()
            .filter(|&&key| {
                self.entries
                    .get(&(group, key))
                    .is_some_and(|entry| !keep(&key, &entry.value))
            })
            .copied()
            .collect();
        for key in doomed {
            let _: Option<V> = self.remove(group, key);
        }
    }

    /// Whether there was an entry to evict.
    fn evict_oldest(&mut self) -> bool {
        let Some((used, (group, key))) = self.by_use.pop_first() else {
            return false;
        };
        let _: Option<Entry<V>> = self.entries.remove(&(group, key));
        self.forget_in_group(group, used);
        true
    }

    /// Whether `group` had an entry to evict.
    fn evict_oldest_of(&mut self, group: G) -> bool {
        let Some((used, key)) = self.groups.get_mut(&group).and_then(BTreeMap::pop_first) else {
            return false;
        };
        let _: Option<(G, K)> = self.by_use.remove(&used);
        let _: Option<Entry<V>> = self.entries.remove(&(group, key));
        if self.groups.get(&group).is_some_and(BTreeMap::is_empty) {
            let _: Option<BTreeMap<u64, K>> = self.groups.remove(&group);
        }
        true
    }

    fn forget_in_group(&mut self, group: G, used: u64) {
        if let Some(order) = self.groups.get_mut(&group) {
            let _: Option<K> = order.remove(&used);
            if order.is_empty() {
                let _: Option<BTreeMap<u64, K>> = self.groups.remove(&group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three indexes agree and the bounds hold.
    fn assert_consistent<V>(lru: &GroupedLru<u32, u16, V>) {
        assert_eq!(lru.by_use.len(), lru.entries.len());
        let grouped: usize = lru.groups.values().map(BTreeMap::len).sum();
        assert_eq!(grouped, lru.entries.len());
        assert!(lru.entries.len() <= lru.max_total);
        for (group, order) in &lru.groups {
            assert!(!order.is_empty());
            assert!(order.len() <= lru.max_per_group);
            for (used, key) in order {
                assert_eq!(lru.entries[&(*group, *key)].used, *used);
                assert_eq!(lru.by_use[used], (*group, *key));
            }
        }
    }

    #[test]
    fn a_full_group_evicts_its_least_recently_used() {
        let mut lru = GroupedLru::new(2, 10);
        assert_eq!(lru.insert(1, 1, "a"), Insert::Stored { evicted: 0 });
        assert_eq!(lru.insert(1, 2, "b"), Insert::Stored { evicted: 0 });
        // Using 1 makes 2 the least recent.
        assert_eq!(lru.touch(1, 1), Some(&"a"));
        assert_eq!(lru.insert(1, 3, "c"), Insert::Stored { evicted: 1 });
        assert_eq!((lru.get(1, 1), lru.get(1, 2)), (Some(&"a"), None));
        // Another group is not touched by the first one's bound.
        assert_eq!(lru.insert(2, 1, "x"), Insert::Stored { evicted: 0 });
        assert_eq!((lru.len(), lru.group_count()), (3, 2));
        assert_consistent(&lru);
    }

    #[test]
    fn the_total_bound_evicts_the_least_recent_of_any_group() {
        let mut lru = GroupedLru::new(10, 3);
        for group in 1..=3 {
            let _: Insert = lru.insert(group, 0, group);
        }
        let _: Option<&mut u32> = lru.get_mut(1, 0);
        assert_eq!(lru.insert(4, 0, 4), Insert::Stored { evicted: 1 });
        assert_eq!(lru.get(2, 0), None, "group 2 was the least recent");
        assert_eq!(lru.group_len(2), 0);
        assert_eq!(lru.group_count(), 3);
        assert_consistent(&lru);
    }

    #[test]
    fn replacing_evicts_nothing_and_counts_as_a_use() {
        let mut lru = GroupedLru::new(2, 2);
        let _: Insert = lru.insert(0, 1, 'a');
        let _: Insert = lru.insert(0, 2, 'b');
        assert_eq!(lru.insert(0, 1, 'A'), Insert::Stored { evicted: 0 });
        assert_eq!(lru.insert(0, 3, 'c'), Insert::Stored { evicted: 1 });
        assert_eq!((lru.get(0, 1), lru.get(0, 2)), (Some(&'A'), None));
        assert_consistent(&lru);
    }

    #[test]
    fn zero_bounds_refuse() {
        let mut lru = GroupedLru::new(0, 5);
        assert_eq!(lru.insert(0, 0, ()), Insert::Refused);
        let mut lru = GroupedLru::new(5, 0);
        assert_eq!(lru.insert(0, 0, ()), Insert::Refused);
        assert!(lru.is_empty());
    }

    #[test]
    fn remove_and_retain_keep_the_indexes() {
        let mut lru = GroupedLru::new(4, 8);
        for key in 0..4 {
            let _: Insert = lru.insert(1, key, key);
            let _: Insert = lru.insert(2, key, key);
        }
        assert_eq!(lru.remove(1, 0), Some(0));
        assert_eq!(lru.remove(1, 0), None);
        lru.retain_group(2, |_, value| value % 2 == 0);
        assert_eq!((lru.group_len(1), lru.group_len(2)), (3, 2));
        lru.retain_group(1, |_, _| false);
        assert_eq!(lru.group_count(), 1);
        assert_consistent(&lru);
    }

    /// A flood of new entries in ever new groups: bounded, and what is used between the
    /// flood's entries stays.
    #[test]
    fn a_flood_evicts_itself_and_spares_what_is_used() {
        let mut lru = GroupedLru::new(4, 16);
        let _: Insert = lru.insert(0, 256, "real");
        let mut evicted = 0;
        for group in 1..=100_000u32 {
            if let Insert::Stored { evicted: n } = lru.insert(group, 256, "flood") {
                evicted += n;
            }
            if group % 8 == 0 {
                assert_eq!(lru.touch(0, 256), Some(&"real"));
            }
        }
        assert_eq!(lru.len(), 16);
        assert_eq!(evicted, 100_000 + 1 - 16);
        assert_eq!(lru.get(0, 256), Some(&"real"));
        assert_consistent(&lru);
    }
}
