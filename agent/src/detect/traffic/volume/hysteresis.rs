//! Which prefixes stay hot across intervals: one [`HotSet`] per detector turns each interval's
//! heavy hitters into new, extended and cooled incidents.
//!
//! Identity is the exact prefix, with one exception: a hitter inside a prefix that is already
//! hot extends that covering prefix instead of starting an incident of its own (so blocking
//! `10.0.0.0/24` is not followed by blocking `10.0.0.5/32` as well). A hitter that *covers*
//! hot prefixes is new: it is wider than what is blocked, and the narrower incidents cool or
//! expire on their own.
use std::collections::HashMap;

use super::heavy::HeavyHitter;
use crate::prefix::Prefix;

/// How long incidents last and how many are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotConfig {
    /// A hot prefix's deadline is this long after the last interval it was hot in.
    pub hold_secs: u64,
    /// Consecutive intervals without being hot before a prefix cools (0 counts as 1).
    pub cool_intervals: u32,
    /// Most prefixes hot at once; further new ones are reported as [`Action::Overflow`].
    pub max_hot: usize,
}

impl Default for HotConfig {
    fn default() -> Self {
        Self {
            hold_secs: 600,
            cool_intervals: 1,
            max_hot: 10_000,
        }
    }
}

/// What to do about a prefix after an interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Hot for the first time (or again after cooling): act until `until` (unix seconds).
    New {
        prefix: Prefix,
        until: u64,
        hitter: HeavyHitter,
    },
    /// Still hot, itself or through a prefix inside it: its deadline moves to `until`.
    Extend { prefix: Prefix, until: u64 },
    /// Not hot for `cool_intervals` intervals, or past its deadline: forgotten. An action taken
    /// for it ends on its own deadline.
    Cooled { prefix: Prefix },
    /// Hot, but `max_hot` prefixes are already tracked: not tracked.
    Overflow { prefix: Prefix },
}

#[derive(Clone, Copy, Debug)]
struct Hot {
    until: u64,
    /// Consecutive intervals not hot.
    cool: u32,
    /// The last update it was hot in.
    seen: u64,
}

/// Hot prefixes of one detector.
#[derive(Clone, Debug)]
pub struct HotSet {
    config: HotConfig,
    hot: HashMap<Prefix, Hot>,
    /// Hot prefixes per family (0: IPv4, 1: IPv6) and length, to look covering ones up.
    per_len: [[u32; 129]; 2],
    round: u64,
    overflowed: u64,
}

impl Default for HotSet {
    fn default() -> Self {
        Self::new(HotConfig::default())
    }
}

impl HotSet {
    pub fn new(config: HotConfig) -> Self {
        Self {
            config,
            hot: HashMap::new(),
            per_len: [[0; 129]; 2],
            round: 0,
            overflowed: 0,
        }
    }

    /// Feed one interval's heavy hitters at `now_unix` (seconds); returns the actions, new and
    /// extended ones first (shorter prefixes first), then cooled ones by prefix.
    pub fn update(&mut self, hitters: &[HeavyHitter], now_unix: u64) -> Vec<Action> {
        self.round += 1;
        let round = self.round;
        let until = now_unix.saturating_add(self.config.hold_secs);
        // Covering prefixes first, so their hosts find them in the same interval.
        let mut order: Vec<&HeavyHitter> = hitters.iter().collect();
        order.sort_by_key(|hitter| (hitter.prefix.prefix_len(), hitter.prefix));
        let mut actions = Vec::new();
        for hitter in order {
            let prefix = hitter.prefix;
            let target = if self.hot.contains_key(&prefix) {
                Some(prefix)
            } else {
                self.covering(prefix)
            };
            if let Some(target) = target {
                if let Some(hot) = self.hot.get_mut(&target)
                    && hot.seen != round
                {
                    *hot = Hot {
                        until,
                        cool: 0,
                        seen: round,
                    };
                    actions.push(Action::Extend {
                        prefix: target,
                        until,
                    });
                }
                continue;
            }
            if self.hot.len() >= self.config.max_hot {
                self.overflowed = self.overflowed.saturating_add(1);
                actions.push(Action::Overflow { prefix });
                continue;
            }
            self.hot.insert(
                prefix,
                Hot {
                    until,
                    cool: 0,
                    seen: round,
                },
            );
            self.count(prefix, true);
            actions.push(Action::New {
                prefix,
                until,
                hitter: *hitter,
            });
        }
        let cool_intervals = self.config.cool_intervals.max(1);
        let mut cooled = Vec::new();
        self.hot.retain(|&prefix, hot| {
            if hot.seen == round {
                return true;
            }
            hot.cool = hot.cool.saturating_add(1);
            let keep = hot.cool < cool_intervals && hot.until > now_unix;
            if !keep {
                cooled.push(prefix);
            }
            keep
        });
        cooled.sort_unstable();
        for prefix in cooled {
            self.count(prefix, false);
            actions.push(Action::Cooled { prefix });
        }
        actions
    }

    /// Stop tracking `prefix` (its action was refused, or an operator undid it), so prefixes
    /// inside it are judged on their own again. Whether it was tracked.
    pub fn forget(&mut self, prefix: &Prefix) -> bool {
        if self.hot.remove(prefix).is_some() {
            self.count(*prefix, false);
            true
        } else {
            false
        }
    }

    /// Prefixes hot now.
    pub fn len(&self) -> usize {
        self.hot.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hot.is_empty()
    }

    pub fn contains(&self, prefix: &Prefix) -> bool {
        self.hot.contains_key(prefix)
    }

    /// `prefix`'s deadline, if it is hot.
    pub fn until(&self, prefix: &Prefix) -> Option<u64> {
        self.hot.get(prefix).map(|hot| hot.until)
    }

    /// Hot prefixes and their deadlines, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, u64)> + '_ {
        self.hot.iter().map(|(&prefix, hot)| (prefix, hot.until))
    }

    /// New prefixes not tracked because the set was full, since start.
    pub const fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// The longest hot prefix strictly containing `prefix`.
    fn covering(&self, prefix: Prefix) -> Option<Prefix> {
        let per_len = &self.per_len[usize::from(!prefix.is_ipv4())];
        (0..prefix.prefix_len())
            .rev()
            .filter(|&len| per_len[usize::from(len)] > 0)
            .filter_map(|len| Prefix::new(prefix.addr(), len).ok())
            .find(|cover| self.hot.contains_key(cover))
    }

    fn count(&mut self, prefix: Prefix, add: bool) {
        let family = usize::from(!prefix.is_ipv4());
        if let Some(count) = self.per_len[family].get_mut(usize::from(prefix.prefix_len())) {
            *count = if add {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hitter(text: &str) -> HeavyHitter {
        HeavyHitter {
            prefix: text.parse().unwrap(),
            bytes: 1_000,
            packets: 1,
            bytes_per_sec: 100.0,
            packets_per_sec: 0.1,
            sources: 1,
            residual_bytes: 1_000,
            residual_packets: 1,
        }
    }

    fn net(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    #[test]
    fn new_extend_then_cool() {
        let config = HotConfig {
            hold_secs: 100,
            cool_intervals: 2,
            max_hot: 10,
        };
        let mut set = HotSet::new(config);
        let hot = [hitter("192.0.2.1/32")];
        let actions = set.update(&hot, 1_000);
        assert_eq!(
            actions,
            [Action::New {
                prefix: net("192.0.2.1/32"),
                until: 1_100,
                hitter: hot[0]
            }]
        );
        let extend = Action::Extend {
            prefix: net("192.0.2.1/32"),
            until: 1_110,
        };
        assert_eq!(set.update(&hot, 1_010), [extend]);
        // One cool interval is not enough with cool_intervals = 2.
        assert!(set.update(&[], 1_020).is_empty());
        assert_eq!(set.until(&net("192.0.2.1/32")), Some(1_110));
        // Hot again resets the count.
        assert_eq!(set.update(&hot, 1_030).len(), 1);
        assert!(set.update(&[], 1_040).is_empty());
        let cooled = [Action::Cooled {
            prefix: net("192.0.2.1/32"),
        }];
        assert_eq!(set.update(&[], 1_050), cooled);
        assert!(set.is_empty());
        // Hot again after cooling is a new incident.
        assert!(matches!(set.update(&hot, 1_060)[..], [Action::New { .. }]));
    }

    #[test]
    fn default_cools_after_one_interval_and_deadline_cools() {
        let mut set = HotSet::default();
        set.update(&[hitter("2001:db8::/64")], 10);
        assert_eq!(
            set.update(&[], 20),
            [Action::Cooled {
                prefix: net("2001:db8::/64")
            }]
        );
        let mut set = HotSet::new(HotConfig {
            hold_secs: 30,
            cool_intervals: 100,
            max_hot: 10,
        });
        set.update(&[hitter("192.0.2.1/32")], 10);
        assert!(set.update(&[], 20).is_empty());
        assert_eq!(set.update(&[], 40).len(), 1, "deadline 40 passed");
        assert!(set.is_empty());
    }

    #[test]
    fn contained_prefix_extends_its_cover() {
        let mut set = HotSet::default();
        let actions = set.update(&[hitter("10.0.0.5/32"), hitter("10.0.0.0/24")], 100);
        // The /24 is handled first; the host inside it extends it once, not twice.
        assert_eq!(actions.len(), 1);
        assert!(matches!(actions[0], Action::New { prefix, .. } if prefix == net("10.0.0.0/24")));
        let actions = set.update(&[hitter("10.0.0.9/32"), hitter("10.0.0.5/32")], 110);
        assert_eq!(
            actions,
            [Action::Extend {
                prefix: net("10.0.0.0/24"),
                until: 710
            }]
        );
        assert_eq!(set.len(), 1);
        // A wider prefix is new; the /24 then cools on its own.
        let actions = set.update(&[hitter("10.0.0.0/16")], 120);
        assert!(matches!(actions[0], Action::New { prefix, .. } if prefix == net("10.0.0.0/16")));
        assert_eq!(
            actions[1],
            Action::Cooled {
                prefix: net("10.0.0.0/24")
            }
        );
        // Families do not mix: ::/0 is not an IPv4 cover.
        set.update(&[hitter("::/0")], 130);
        let actions = set.update(&[hitter("192.0.2.1/32"), hitter("::/0")], 140);
        assert!(matches!(actions[0], Action::Extend { prefix, .. } if prefix == net("::/0")));
        assert!(matches!(actions[1], Action::New { prefix, .. } if prefix == net("192.0.2.1/32")));
    }

    #[test]
    fn bounded() {
        let mut set = HotSet::new(HotConfig {
            max_hot: 2,
            ..HotConfig::default()
        });
        let hitters = [
            hitter("192.0.2.1/32"),
            hitter("192.0.2.2/32"),
            hitter("192.0.2.3/32"),
        ];
        let actions = set.update(&hitters, 0);
        assert_eq!(
            actions[2],
            Action::Overflow {
                prefix: net("192.0.2.3/32")
            }
        );
        assert_eq!((set.len(), set.overflowed()), (2, 1));
        // Tracked ones still extend when full.
        let actions = set.update(&hitters, 10);
        assert!(matches!(actions[0], Action::Extend { .. }));
        assert_eq!(set.overflowed(), 2);
        set.update(&[], 20);
        assert!(set.is_empty());
        assert_eq!(set.iter().count(), 0);
    }
}
