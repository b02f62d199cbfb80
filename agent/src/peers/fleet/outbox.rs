//! This host's own decisions and what the bucket holds of them: the difference is what is
//! still to publish. Kept from the owner's watch (what is wanted) and the bucket's watcher
//! (what is there), so a decision made while NATS was away, an unblock, or a key another
//! client overwrote under this host's name is put right at the next flush.
use std::collections::{HashMap, HashSet};

use super::{
    config::source_matches,
    wire::{VERSION, WireDecision, key_for},
};
use crate::{
    enforce::decision::{Change, Decision, DecisionKind, Origin, Source},
    prefix::Prefix,
};

/// Whether the owner's decisions of `source` are this host's own to publish (the fleet's are
/// other hosts', `recovered` ones nobody's, `config` is the allowlist).
pub fn own(source: &Source) -> bool {
    !matches!(
        source,
        Source::Fleet(_) | Source::Recovered | Source::Config
    )
}

/// A decision's place: its kind and prefix.
type Place = (DecisionKind, Prefix);

/// One write to the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put {
        place: Place,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        place: Place,
        key: String,
    },
}

#[derive(Debug)]
pub struct Outbox {
    host: String,
    publish_sources: Vec<String>,
    publish_allows: bool,
    /// Own decisions, as their values.
    wanted: HashMap<Place, Vec<u8>>,
    /// Values under this host's keys in the bucket.
    published: HashMap<Place, Vec<u8>>,
    dirty: HashSet<Place>,
}

impl Outbox {
    pub fn new(host: String, publish_sources: Vec<String>, publish_allows: bool) -> Self {
        Self {
            host,
            publish_sources,
            publish_allows,
            wanted: HashMap::new(),
            published: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    /// The value to publish for this decision, if it is one to publish.
    fn value(&self, kind: DecisionKind, prefix: &Prefix, origin: &Origin) -> Option<Vec<u8>> {
        let source = origin.source.to_string();
        if !own(&origin.source)
            || !source_matches(&self.publish_sources, &source)
            || (kind == DecisionKind::Allow && !self.publish_allows)
        {
            return None;
        }
        serde_json::to_vec(&WireDecision {
            v: VERSION,
            host: self.host.clone(),
            kind,
            prefix: *prefix,
            source,
            reason: origin.reason.to_string(),
            created: origin.created_unix,
            until: origin.expires_unix,
        })
        .ok()
    }

    fn want(&mut self, place: Place, value: Option<Vec<u8>>) {
        match value {
            Some(value) => {
                let _: Option<Vec<u8>> = self.wanted.insert(place, value);
            }
            None => {
                let _: Option<Vec<u8>> = self.wanted.remove(&place);
            }
        }
        let _: bool = self.dirty.insert(place);
    }

    /// The owner's decisions as they are now (a new watch).
    pub fn set_wanted(&mut self, decisions: &[Decision]) {
        self.dirty.extend(self.wanted.keys().copied());
        self.wanted.clear();
        for decision in decisions {
            let value = self.value(decision.kind, &decision.prefix, &decision.origin);
            if value.is_some() {
                self.want((decision.kind, decision.prefix), value);
            }
        }
    }

    /// A change the owner made.
    pub fn change(&mut self, change: &Change) {
        match change {
            Change::Put {
                kind,
                origin,
                prefixes,
            } => {
                for prefix in prefixes.iter() {
                    let value = self.value(*kind, prefix, origin);
                    self.want((*kind, *prefix), value);
                }
            }
            Change::Remove { kind, prefixes } => {
                for prefix in prefixes.iter() {
                    let place = (*kind, *prefix);
                    if self.wanted.contains_key(&place) || self.published.contains_key(&place) {
                        self.want(place, None);
                    }
                }
            }
        }
    }

    /// A full read of the bucket starts: what it holds under this host is read anew.
    pub fn forget_published(&mut self) {
        self.dirty.extend(self.published.keys().copied());
        self.published.clear();
    }

    /// The bucket holds `value` (or nothing) under this host's key for `kind` and `prefix`.
    pub fn seen(&mut self, kind: DecisionKind, prefix: Prefix, value: Option<&[u8]>) {
        let place = (kind, prefix);
        match value {
            Some(value) => {
                let _: Option<Vec<u8>> = self.published.insert(place, value.to_vec());
            }
            None => {
                let _: Option<Vec<u8>> = self.published.remove(&place);
            }
        }
        if self.wanted.get(&place).map(Vec::as_slice) != value {
            let _: bool = self.dirty.insert(place);
        }
    }

    /// Up to `limit` writes that make the bucket hold what is wanted.
    pub fn next_writes(&mut self, limit: usize) -> Vec<Write> {
        let mut writes = Vec::new();
        let mut taken = Vec::new();
        for place in &self.dirty {
            if writes.len() >= limit {
                break;
            }
            taken.push(*place);
            let key = key_for(&self.host, place.0, &place.1);
            match (self.wanted.get(place), self.published.get(place)) {
                (Some(want), have) if have != Some(want) => writes.push(Write::Put {
                    place: *place,
                    key,
                    value: want.clone(),
                }),
                (None, Some(_)) => writes.push(Write::Delete { place: *place, key }),
                _ => {}
            }
        }
        for place in taken {
            let _: bool = self.dirty.remove(&place);
        }
        writes
    }

    /// A write went through.
    pub fn written(&mut self, write: Write) {
        match write {
            Write::Put { place, value, .. } => {
                let _: Option<Vec<u8>> = self.published.insert(place, value);
            }
            Write::Delete { place, .. } => {
                let _: Option<Vec<u8>> = self.published.remove(&place);
            }
        }
    }

    /// A write failed: try again at the next flush.
    pub fn failed(&mut self, write: &Write) {
        let (Write::Put { place, .. } | Write::Delete { place, .. }) = write;
        let _: bool = self.dirty.insert(*place);
    }

    /// Places whose key may differ from what is wanted.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// Own decisions published or to be.
    pub fn wanted(&self) -> usize {
        self.wanted.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn origin(source: Source, until: u64) -> Arc<Origin> {
        Arc::new(Origin {
            source,
            reason: "5 failures".into(),
            created_unix: 10,
            expires_unix: until,
            evidence: Vec::new(),
        })
    }

    fn p(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    fn put(prefix: &str, source: Source) -> Change {
        Change::Put {
            kind: DecisionKind::Block,
            origin: origin(source, 100),
            prefixes: vec![p(prefix)].into(),
        }
    }

    #[test]
    fn own_decisions_are_put_unblocks_deleted_and_others_never_published() {
        let mut outbox = Outbox::new("a".into(), Vec::new(), false);
        outbox.set_wanted(&[Decision {
            kind: DecisionKind::Block,
            prefix: p("203.0.113.1"),
            origin: origin(Source::Manual, 0),
        }]);
        outbox.change(&put("203.0.113.2", Source::Ruleset("sshd".into())));
        outbox.change(&put("203.0.113.3", Source::Fleet("b".into())));
        let mut writes = outbox.next_writes(10);
        writes.sort_by_key(|w| format!("{w:?}"));
        let keys: Vec<&str> = writes
            .iter()
            .map(|w| match w {
                Write::Put { key, .. } => key.as_str(),
                Write::Delete { .. } => panic!("{w:?}"),
            })
            .collect();
        assert_eq!(
            keys,
            ["a.block.v4.203-0-113-1_32", "a.block.v4.203-0-113-2_32"]
        );
        let Write::Put { value, .. } = &writes[1] else {
            unreachable!()
        };
        let wire: WireDecision = serde_json::from_slice(value).unwrap();
        assert_eq!(
            (wire.source.as_str(), wire.until, wire.host.as_str()),
            ("ruleset:sshd", 100, "a")
        );
        for write in writes {
            outbox.written(write);
        }
        assert!(
            outbox.next_writes(10).is_empty(),
            "nothing left once written"
        );
        // Unblocked, or replaced by another host's block: deleted.
        outbox.change(&Change::Remove {
            kind: DecisionKind::Block,
            prefixes: vec![p("203.0.113.1")].into(),
        });
        outbox.change(&put("203.0.113.2", Source::Fleet("b".into())));
        let mut deletes = outbox.next_writes(10);
        deletes.sort_by_key(|w| format!("{w:?}"));
        assert!(
            matches!(&deletes[..], [Write::Delete { key: k1, .. }, Write::Delete { key: k2, .. }]
            if k1 == "a.block.v4.203-0-113-1_32" && k2 == "a.block.v4.203-0-113-2_32")
        );
    }

    #[test]
    fn allowlist_entries_are_published_only_when_asked() {
        let allow = Change::Put {
            kind: DecisionKind::Allow,
            origin: origin(Source::Manual, 0),
            prefixes: vec![p("203.0.113.5")].into(),
        };
        let config_allow = Change::Put {
            kind: DecisionKind::Allow,
            origin: origin(Source::Config, 0),
            prefixes: vec![p("203.0.113.6")].into(),
        };
        let mut quiet = Outbox::new("a".into(), Vec::new(), false);
        quiet.change(&allow);
        assert!(quiet.next_writes(10).is_empty());
        let mut sharing = Outbox::new("a".into(), Vec::new(), true);
        sharing.change(&allow);
        sharing.change(&config_allow);
        let writes = sharing.next_writes(10);
        assert!(
            matches!(&writes[..], [Write::Put { key, .. }] if key == "a.allow.v4.203-0-113-5_32"),
            "the configuration's allowlist is each host's own: {writes:?}"
        );
    }

    #[test]
    fn a_failed_write_and_a_foreign_value_under_own_key_are_written_again() {
        let mut outbox = Outbox::new("a".into(), vec!["ruleset".into()], false);
        outbox.change(&put("203.0.113.2", Source::Ruleset("sshd".into())));
        outbox.change(&put("203.0.113.4", Source::Manual));
        let writes = outbox.next_writes(10);
        assert_eq!(writes.len(), 1, "manual is not in publish_sources");
        outbox.failed(&writes[0]);
        let again = outbox.next_writes(10);
        assert_eq!(again, writes);
        outbox.written(again[0].clone());
        outbox.seen(DecisionKind::Block, p("203.0.113.2"), Some(b"forged"));
        assert_eq!(outbox.next_writes(10), writes);
        // A key of this host that the owner no longer wants (found in a full read): deleted.
        outbox.forget_published();
        outbox.seen(DecisionKind::Block, p("203.0.113.9"), Some(b"{}"));
        assert!(
            outbox
                .next_writes(10)
                .iter()
                .any(|w| matches!(w, Write::Delete { place, .. } if place.1 == p("203.0.113.9")))
        );
    }
}
