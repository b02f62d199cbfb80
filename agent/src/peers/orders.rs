//! What a peer asks of the decision owner, and how it is carried out: unblocks first (only
//! where the block in place is the peer's own), then blocks grouped by origin, end and reason,
//! waited for off the peer's runtime (`spawn_blocking`), refusals counted per origin.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crate::{
    enforce::{
        decision::Source,
        owner::{AllowOrder, BlockOrder, Expiry, Handle, Refusal},
    },
    prefix::Prefix,
};

/// Longest a peer waits for the owner to answer one batch of orders.
pub const OWNER_TIMEOUT: Duration = Duration::from_secs(120);

/// What the owner is asked to do on a peer's behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    /// Block `prefix` until `until_unix` (seconds; 0: never), on behalf of the peer's
    /// `origin` (a CrowdSec origin, a fleet host).
    Block {
        prefix: Prefix,
        origin: String,
        reason: String,
        until_unix: u64,
        /// The block in place is the peer's and ends later: replace its end with this one.
        shorten: bool,
    },
    /// Remove the block on `prefix` if the peer's is the one in place.
    Unblock { prefix: Prefix },
    /// Allowlist `prefix` (never expiring) on behalf of `origin` (the fleet's `accept_allows`).
    Allow {
        prefix: Prefix,
        origin: String,
        reason: String,
    },
    /// Remove the allowlist entry on `prefix` if the peer's is the one in place.
    Unallow { prefix: Prefix },
}

/// Whose a peer's decisions are: the source of an origin, and which sources it may take back.
#[derive(Clone, Copy)]
pub struct Peer {
    pub source: fn(Arc<str>) -> Source,
    pub holds: fn(&Source) -> bool,
    /// For the log lines.
    pub name: &'static str,
}

/// Refusals, per origin and reason label.
pub type Refused = BTreeMap<(String, &'static str), u64>;

/// Send the orders and wait for the owner (on a blocking thread: the peer's runtime keeps
/// turning); what it refused.
pub async fn carry_out(owner: &Handle, peer: Peer, orders: Vec<Order>, now: u64) -> Refused {
    if orders.is_empty() {
        return Refused::new();
    }
    let owner = owner.clone();
    let outcome =
        tokio::task::spawn_blocking(move || carry_out_blocking(&owner, peer, orders, now));
    outcome.await.unwrap_or_default()
}

fn carry_out_blocking(owner: &Handle, peer: Peer, orders: Vec<Order>, now: u64) -> Refused {
    let mut refused = Refused::new();
    let mut unblocks = Vec::new();
    let mut unallows = Vec::new();
    let mut allows: BTreeMap<(String, String), Vec<Prefix>> = BTreeMap::new();
    let mut groups: BTreeMap<(String, u64, String, bool), Vec<Prefix>> = BTreeMap::new();
    for order in orders {
        match order {
            Order::Unblock { prefix } => unblocks.push(prefix),
            Order::Unallow { prefix } => unallows.push(prefix),
            Order::Allow {
                prefix,
                origin,
                reason,
            } => allows.entry((origin, reason)).or_default().push(prefix),
            Order::Block {
                prefix,
                origin,
                reason,
                until_unix,
                shorten,
            } => groups
                .entry((origin, until_unix, reason, shorten))
                .or_default()
                .push(prefix),
        }
    }
    if !unblocks.is_empty()
        && let Err(err) = owner
            .unblock_held_by(unblocks, peer.holds)
            .wait_timeout(OWNER_TIMEOUT)
    {
        log::warn!("{}: unblocking: {err}", peer.name);
    }
    if !unallows.is_empty()
        && let Err(err) = owner
            .unallow_held_by(unallows, peer.holds)
            .wait_timeout(OWNER_TIMEOUT)
    {
        log::warn!("{}: removing allowlist entries: {err}", peer.name);
    }
    for ((origin, reason), prefixes) in allows {
        let order = AllowOrder {
            prefixes,
            source: (peer.source)(origin.as_str().into()),
            reason,
        };
        if let Err(err) = owner.allow(order).wait_timeout(OWNER_TIMEOUT) {
            log::warn!("{}: allowlisting: {err}", peer.name);
        }
    }
    let pending: Vec<_> = groups
        .into_iter()
        .map(|((origin, until, reason, shorten), prefixes)| {
            let expires = if until == 0 {
                Expiry::Never
            } else {
                Expiry::After(Duration::from_secs(until.saturating_sub(now).max(1)))
            };
            let answer = owner.block(BlockOrder {
                prefixes,
                source: (peer.source)(origin.as_str().into()),
                reason,
                expires,
                force: false,
                evidence: Vec::new(),
                replace_own: shorten,
            });
            (origin, answer)
        })
        .collect();
    for (origin, answer) in pending {
        match answer.wait_timeout(OWNER_TIMEOUT) {
            Ok(applied) => {
                for (_, refusal) in applied.refused {
                    *refused
                        .entry((origin.clone(), refusal_label(&refusal)))
                        .or_default() += 1;
                }
            }
            Err(err) => log::warn!("{}: blocking: {err}", peer.name),
        }
    }
    refused
}

/// The metrics label of a refusal.
pub const fn refusal_label(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::TooBroad { .. } => "too_broad",
        Refusal::NotUnicast { .. } => "not_unicast",
        Refusal::OwnAddress(_) => "own_address",
        Refusal::Allowlisted { .. } => "allowlisted",
        Refusal::AlreadyBlockedLonger { .. } => "already_blocked_longer",
        Refusal::ConfiguredAllow => "configured_allow",
        Refusal::ListFull { .. } => "list_full",
        Refusal::Kernel(_) => "kernel",
    }
}
