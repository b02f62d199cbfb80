//! The CrowdSec decisions the bouncer holds, and the orders for the decision owner that keep
//! xdpguard's lists in step with them.
//!
//! CrowdSec can hold several decisions on one address (a local scenario's and a community
//! list's, with different ends); xdpguard holds one block per prefix. The tracker keeps every
//! decision by id and blocks each prefix until the latest end of its live decisions. A deletion
//! that leaves others shortens the block to theirs (an order marked `shorten`: the owner
//! otherwise never lets a non-manual block cut a longer one short); the last one's deletion
//! unblocks. A startup answer is the whole set: prefixes held before and absent from it are
//! unblocked.
use std::collections::{BTreeMap, HashMap, hash_map::Entry};

use super::stream::{LapiDecision, StreamBatch, Target};
pub use crate::peers::orders::Order;
use crate::prefix::Prefix;

/// A block's end moves earlier only by more than this: a startup answer's remaining durations,
/// taken a moment apart, round to ends a second apart.
const SHORTEN_TOLERANCE_SECS: u64 = 5;

/// What one batch did, for the metrics (per CrowdSec origin where it has one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// New decisions taken, per origin.
    pub added: BTreeMap<String, u64>,
    /// Deletions that matched a held decision, per origin.
    pub deleted: BTreeMap<String, u64>,
    /// Decisions of a type other than `ban`, per type.
    pub skipped_type: BTreeMap<String, u64>,
    /// Decisions about something other than an address (Country, AS, ...), per scope.
    pub skipped_scope: BTreeMap<String, u64>,
    /// New decisions already run out.
    pub expired: u64,
    /// Deletions of decisions not held (never seen, or already gone).
    pub unknown_deletions: u64,
    /// Decisions that could not be read.
    pub malformed: u64,
    /// New decisions refused because the tracker is full.
    pub over_capacity: u64,
}

#[derive(Clone, Debug)]
struct Held {
    prefix: Prefix,
    origin: String,
    scenario: String,
    until_unix: u64,
}

/// The decisions held, by id and by prefix.
#[derive(Debug)]
pub struct Tracker {
    by_id: HashMap<u64, Held>,
    by_prefix: HashMap<Prefix, Vec<u64>>,
    capacity: usize,
}

impl Tracker {
    /// A tracker holding at most `capacity` decisions.
    pub fn new(capacity: usize) -> Self {
        Self {
            by_id: HashMap::new(),
            by_prefix: HashMap::new(),
            capacity,
        }
    }

    /// Decisions held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Take one answer of the stream at `now_unix`. `startup`: it is the whole set (the
    /// first answer after a (re)connection, `startup=true`), and `also_held` names prefixes
    /// blocked on CrowdSec's behalf that this tracker may not know (a restarted daemon's).
    pub fn apply(
        &mut self,
        batch: StreamBatch,
        now_unix: u64,
        startup: bool,
        also_held: &[Prefix],
    ) -> (Vec<Order>, BatchCounts) {
        let mut counts = BatchCounts {
            malformed: batch.malformed.len() as u64,
            ..BatchCounts::default()
        };
        // Prefixes whose block has to be worked out again, with the block in place before.
        let mut touched: HashMap<Prefix, Option<u64>> = HashMap::new();
        if startup {
            let before: Vec<Prefix> = self
                .by_prefix
                .keys()
                .copied()
                .chain(also_held.iter().copied())
                .collect();
            for prefix in before {
                let current = self.until(&prefix);
                let _: &mut Option<u64> = touched.entry(prefix).or_insert(current.or(Some(0)));
            }
            self.by_id.clear();
            self.by_prefix.clear();
        }
        for decision in batch.deleted {
            let Some(held) = self.by_id.get(&decision.id) else {
                counts.unknown_deletions += 1;
                continue;
            };
            let prefix = held.prefix;
            let current = self.until(&prefix);
            let _: &mut Option<u64> = touched.entry(prefix).or_insert(current);
            *counts.deleted.entry(held.origin.clone()).or_default() += 1;
            self.forget(decision.id);
        }
        for decision in batch.new {
            let Some(prefix) = usable(&decision, &mut counts) else {
                continue;
            };
            let Some(remaining) = decision.remaining else {
                counts.expired += 1;
                continue;
            };
            if self.by_id.len() >= self.capacity && !self.by_id.contains_key(&decision.id) {
                counts.over_capacity += 1;
                continue;
            }
            let current = self.until(&prefix);
            let _: &mut Option<u64> = touched.entry(prefix).or_insert(current);
            // Rounded up: a decision never ends before CrowdSec's.
            let until_unix = now_unix
                .saturating_add(remaining.as_secs())
                .saturating_add(u64::from(remaining.subsec_nanos() > 0));
            *counts.added.entry(decision.origin.clone()).or_default() += 1;
            self.forget(decision.id);
            let _: Option<Held> = self.by_id.insert(
                decision.id,
                Held {
                    prefix,
                    origin: decision.origin,
                    scenario: decision.scenario,
                    until_unix,
                },
            );
            self.by_prefix.entry(prefix).or_default().push(decision.id);
        }
        let mut orders = Vec::new();
        let mut touched: Vec<(Prefix, Option<u64>)> = touched.into_iter().collect();
        touched.sort_unstable_by_key(|(prefix, _)| *prefix);
        for (prefix, before) in touched {
            let after = self.latest(&prefix);
            match (before, after) {
                (Some(_), None) => orders.push(Order::Unblock { prefix }),
                (None, Some(held)) => orders.push(block(prefix, held, false)),
                (Some(before), Some(held)) if held.until_unix > before => {
                    orders.push(block(prefix, held, false));
                }
                (Some(before), Some(held))
                    if held.until_unix.saturating_add(SHORTEN_TOLERANCE_SECS) < before =>
                {
                    orders.push(block(prefix, held, true));
                }
                _ => {}
            }
        }
        (orders, counts)
    }

    /// Drop decisions whose end has passed (the kernel stopped enforcing them on time).
    pub fn expire(&mut self, now_unix: u64) {
        let gone: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, held)| held.until_unix <= now_unix)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: u64) {
        let Some(held) = self.by_id.remove(&id) else {
            return;
        };
        if let Entry::Occupied(mut ids) = self.by_prefix.entry(held.prefix) {
            ids.get_mut().retain(|other| *other != id);
            if ids.get().is_empty() {
                let _: Vec<u64> = ids.remove();
            }
        }
    }

    /// The live decision on `prefix` that ends last.
    fn latest(&self, prefix: &Prefix) -> Option<&Held> {
        self.by_prefix
            .get(prefix)?
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .max_by_key(|held| held.until_unix)
    }

    fn until(&self, prefix: &Prefix) -> Option<u64> {
        self.latest(prefix).map(|held| held.until_unix)
    }
}

fn block(prefix: Prefix, held: &Held, shorten: bool) -> Order {
    Order::Block {
        prefix,
        shorten,
        origin: held.origin.clone(),
        reason: if held.scenario.is_empty() {
            format!("crowdsec {}", held.origin)
        } else {
            held.scenario.clone()
        },
        until_unix: held.until_unix,
    }
}

/// The prefix of a decision xdpguard enforces; counts why not.
fn usable(decision: &LapiDecision, counts: &mut BatchCounts) -> Option<Prefix> {
    if !decision.kind.eq_ignore_ascii_case("ban") {
        *counts
            .skipped_type
            .entry(decision.kind.clone())
            .or_default() += 1;
        return None;
    }
    match &decision.target {
        Target::Prefix(prefix) => Some(*prefix),
        Target::OtherScope(scope) => {
            *counts.skipped_scope.entry(scope.clone()).or_default() += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn p(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    fn ban(id: u64, value: &str, secs: u64, origin: &str) -> LapiDecision {
        LapiDecision {
            id,
            origin: origin.to_owned(),
            kind: "ban".to_owned(),
            target: Target::Prefix(p(value)),
            remaining: Some(Duration::from_secs(secs)),
            scenario: format!("scenario {id}"),
        }
    }

    fn batch(new: Vec<LapiDecision>, deleted: Vec<LapiDecision>) -> StreamBatch {
        StreamBatch {
            new,
            deleted,
            malformed: Vec::new(),
        }
    }

    fn blocked(prefix: &str, until: u64, origin: &str, id: u64) -> Order {
        Order::Block {
            shorten: false,
            prefix: p(prefix),
            origin: origin.to_owned(),
            reason: format!("scenario {id}"),
            until_unix: until,
        }
    }

    #[test]
    fn new_decisions_block_until_their_latest_end_and_deletions_unblock() {
        let mut t = Tracker::new(100);
        let (orders, counts) = t.apply(
            batch(
                vec![
                    ban(1, "203.0.113.7", 3600, "cscli"),
                    ban(2, "198.51.100.0/24", 7200, "crowdsec"),
                    ban(3, "203.0.113.7", 60, "CAPI"),
                ],
                vec![],
            ),
            1_000,
            true,
            &[],
        );
        assert_eq!(
            orders,
            [
                blocked("198.51.100.0/24", 8_200, "crowdsec", 2),
                blocked("203.0.113.7", 4_600, "cscli", 1),
            ]
        );
        assert_eq!(counts.added["cscli"], 1);
        assert_eq!(counts.added["CAPI"], 1);
        // Deleting the longer one on 203.0.113.7 shortens the block to the other's end.
        let (orders, counts) = t.apply(
            batch(vec![], vec![ban(1, "203.0.113.7", 0, "cscli")]),
            1_010,
            false,
            &[],
        );
        let mut shortened = blocked("203.0.113.7", 1_060, "CAPI", 3);
        if let Order::Block { shorten, .. } = &mut shortened {
            *shorten = true;
        }
        assert_eq!(orders, [shortened]);
        assert_eq!(counts.deleted["cscli"], 1);
        // The last one goes: unblocked. A deletion of an unknown id changes nothing.
        let (orders, counts) = t.apply(
            batch(
                vec![],
                vec![
                    ban(3, "203.0.113.7", 0, "CAPI"),
                    ban(99, "192.0.2.1", 0, "x"),
                ],
            ),
            1_020,
            false,
            &[],
        );
        assert_eq!(
            orders,
            [Order::Unblock {
                prefix: p("203.0.113.7")
            }]
        );
        assert_eq!(counts.unknown_deletions, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_startup_answer_replaces_everything_held_before() {
        let mut t = Tracker::new(100);
        let _ = t.apply(
            batch(vec![ban(1, "203.0.113.7", 3600, "cscli")], vec![]),
            0,
            true,
            &[],
        );
        // Reconnected: the LAPI lost 203.0.113.7 meanwhile and has a new one; a prefix a
        // restarted daemon held on CrowdSec's behalf is unblocked too.
        let (orders, _) = t.apply(
            batch(vec![ban(5, "203.0.113.8", 600, "crowdsec")], vec![]),
            100,
            true,
            &[p("192.0.2.0/24")],
        );
        assert_eq!(
            orders,
            [
                Order::Unblock {
                    prefix: p("192.0.2.0/24")
                },
                Order::Unblock {
                    prefix: p("203.0.113.7")
                },
                blocked("203.0.113.8", 700, "crowdsec", 5),
            ]
        );
        // The same startup answer a little later (its remaining time a second shorter and
        // rounding the other way) changes nothing.
        let mut again = ban(5, "203.0.113.8", 598, "crowdsec");
        again.remaining = Some(Duration::from_millis(597_500));
        let (orders, _) = t.apply(batch(vec![again], vec![]), 101, true, &[]);
        assert!(orders.is_empty(), "{orders:?}");
    }

    #[test]
    fn what_is_not_an_enforceable_ban_is_counted_and_skipped() {
        let mut t = Tracker::new(2);
        let mut captcha = ban(1, "203.0.113.1", 60, "crowdsec");
        captcha.kind = "captcha".to_owned();
        let mut country = ban(2, "203.0.113.2", 60, "crowdsec");
        country.target = Target::OtherScope("Country".to_owned());
        let mut expired = ban(3, "203.0.113.3", 60, "crowdsec");
        expired.remaining = None;
        let (orders, counts) = t.apply(
            batch(
                vec![
                    captcha,
                    country,
                    expired,
                    ban(4, "203.0.113.4", 60, "lists"),
                    ban(5, "203.0.113.5", 60, "lists"),
                    ban(6, "203.0.113.6", 60, "lists"),
                ],
                vec![],
            ),
            0,
            false,
            &[],
        );
        assert_eq!(counts.skipped_type["captcha"], 1);
        assert_eq!(counts.skipped_scope["Country"], 1);
        assert_eq!(counts.expired, 1);
        assert_eq!(counts.over_capacity, 1, "capacity 2");
        assert_eq!(orders.len(), 2);
        t.expire(60);
        assert!(t.is_empty());
    }
}
