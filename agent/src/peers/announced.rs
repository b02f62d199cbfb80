//! `block --asn N` keeps up with the routing table: after each origins reload, every AS whose
//! prefixes are blocked (`asn:N` decisions) has the prefixes it now announces blocked too, with
//! the same end and reason, and those it no longer announces unblocked.
//!
//! The held `asn:N` decisions are the whole record of an ASN block: an AS that withdraws every
//! prefix leaves nothing behind, so announcing again later is not followed (block it again).
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use crate::{
    enforce::{
        decision::{DecisionKind, Source},
        owner::{BlockOrder, CommandError, Expiry, Handle, ListFilter},
    },
    origins::OriginTable,
    prefix::Prefix,
};

/// What one pass changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Followed {
    /// ASes with blocks held.
    pub ases: usize,
    pub blocked: u64,
    /// Newly announced prefixes the guards refused.
    pub refused: usize,
    pub unblocked: u64,
}

/// One AS's blocks as held: prefixes, the latest end, a reason.
#[derive(Default)]
struct Group {
    prefixes: BTreeSet<Prefix>,
    /// Some block never ends.
    never: bool,
    latest_end_unix: u64,
    reason: String,
}

/// Bring every held ASN block in step with `table`.
///
/// # Errors
/// The owner did not answer a list, block or unblock.
pub fn follow(
    handle: &Handle,
    table: &OriginTable,
    now_unix: u64,
) -> Result<Followed, CommandError> {
    let held = handle
        .list(ListFilter {
            kind: Some(DecisionKind::Block),
            source: None,
            source_kind: Some(Source::Asn(0)),
            covering: None,
        })
        .wait()?;
    let mut groups: BTreeMap<u32, Group> = BTreeMap::new();
    for entry in held {
        let Source::Asn(asn) = entry.decision.origin.source else {
            continue;
        };
        let group = groups.entry(asn).or_default();
        group.prefixes.insert(entry.decision.prefix);
        match entry.decision.origin.expires_unix {
            0 => group.never = true,
            end => group.latest_end_unix = group.latest_end_unix.max(end),
        }
        if group.reason.is_empty() {
            group.reason = entry.decision.origin.reason.to_string();
        }
    }
    let mut followed = Followed {
        ases: groups.len(),
        ..Followed::default()
    };
    for (asn, group) in groups {
        let announced: BTreeSet<Prefix> = table.announced_by(asn).collect();
        let added: Vec<Prefix> = announced.difference(&group.prefixes).copied().collect();
        let withdrawn: Vec<Prefix> = group.prefixes.difference(&announced).copied().collect();
        let expires = if group.never {
            Some(Expiry::Never)
        } else if group.latest_end_unix > now_unix {
            Some(Expiry::After(Duration::from_secs(
                group.latest_end_unix - now_unix,
            )))
        } else {
            // Ending now: the sweep takes the rest; nothing new is added.
            None
        };
        if let (false, Some(expires)) = (added.is_empty(), expires) {
            let applied = handle
                .block(BlockOrder {
                    prefixes: added,
                    source: Source::Asn(asn),
                    reason: group.reason.clone(),
                    expires,
                    force: false,
                    evidence: Vec::new(),
                    replace_own: false,
                })
                .wait()?;
            followed.blocked += applied.applied;
            followed.refused += applied.refused.len();
        }
        if !withdrawn.is_empty() {
            followed.unblocked += handle.unblock(withdrawn).wait()?.removed;
        }
    }
    Ok(followed)
}
