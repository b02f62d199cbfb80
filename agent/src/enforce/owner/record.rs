//! Record before apply: a block or allow order is checked against the guards and recorded
//! first; the records of every order that arrived together are synced once; only then do the
//! kernel lists change, and what the kernel refused is rolled back in the store. So a crash
//! at any moment (kill -9 mid-import) or a state directory that cannot be written (a full
//! disk) never leaves a kernel entry without a recorded decision: at worst a recorded
//! decision is missing from the kernel, and reconcile puts it there.
use std::sync::Arc;

use super::{
    AllowOrder, Applied, BlockOrder, CommandError, Expiry, Owner, Refusal, block_refusal,
    kernel_refusal, outlasts,
};
use crate::{
    enforce::dataplane::{DataPath, DataplaneError},
    enforce::decision::{Decision, DecisionKind, Origin},
    error_chain,
    prefix::Prefix,
};

/// An order whose prefixes are recorded but not applied yet.
pub(super) struct Prepared {
    kind: DecisionKind,
    origin: Arc<Origin>,
    /// Not blocked before: they go in as one batch.
    new: Vec<Prefix>,
    /// Re-blocks (one by one, keeping their counters), and allows.
    known: Vec<Prefix>,
    deadline: u64,
    /// What each recorded prefix replaced (`new` then `known`), to roll back to.
    previous: Vec<Option<Decision>>,
    refused: Vec<(Prefix, Refusal)>,
}

impl Prepared {
    fn recorded(&self) -> impl Iterator<Item = &Prefix> {
        self.new.iter().chain(&self.known)
    }
}

impl<D: DataPath> Owner<D> {
    /// Guards, then record (buffered; [`Self::apply_group`] syncs before it applies).
    pub(super) fn prepare_block(&mut self, order: BlockOrder) -> Prepared {
        let BlockOrder {
            prefixes,
            source,
            reason,
            expires,
            force,
            evidence,
            replace_own,
        } = order;
        let now = self.clock.now_unix();
        let duration = match expires {
            Expiry::Default => self.config.default_ban,
            Expiry::After(duration) => Some(duration),
            Expiry::Never => None,
        };
        let expires_unix = duration.map_or(0, |d| now.saturating_add(d.as_secs().max(1)));
        let manual = source.is_manual();
        let origin = Arc::new(Origin {
            source,
            reason: reason.into(),
            created_unix: now,
            expires_unix,
            evidence: super::handle::bound_evidence(evidence),
        });
        let deadline = self.clock.monotonic_deadline(expires_unix);
        let allows: Vec<Prefix> = self
            .store
            .of_kind(DecisionKind::Allow)
            .map(|d| d.prefix)
            .collect();
        let mut refused = Vec::new();
        let mut candidates = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            if let Some(refusal) = block_refusal(&prefix, &self.config, &allows, force) {
                refused.push((prefix, refusal));
            } else {
                candidates.push(prefix);
            }
        }
        // A detector's block never cuts short a block that lasts longer (an operator's, or a
        // longer ban); only a manual block sets whatever expiry it names.
        if !manual {
            candidates.retain(|prefix| {
                let longer = self
                    .store
                    .get(DecisionKind::Block, prefix)
                    .filter(|d| outlasts(d.origin.expires_unix, expires_unix))
                    .filter(|d| !(replace_own && d.origin.source.same_kind(&origin.source)))
                    .map(|d| d.origin.source.clone());
                if let Some(holder) = longer {
                    refused.push((*prefix, Refusal::AlreadyBlockedLonger { holder }));
                    return false;
                }
                true
            });
        }
        // A prefix twice in one order is one decision.
        let mut seen = std::collections::HashSet::with_capacity(candidates.len());
        candidates.retain(|prefix| seen.insert(*prefix));
        let (known, new): (Vec<Prefix>, Vec<Prefix>) = candidates
            .into_iter()
            .partition(|prefix| self.store.get(DecisionKind::Block, prefix).is_some());
        self.record(DecisionKind::Block, origin, new, known, deadline, refused)
    }

    pub(super) fn prepare_allow(&mut self, order: AllowOrder) -> Prepared {
        let origin = Arc::new(Origin {
            source: order.source,
            reason: order.reason.into(),
            created_unix: self.clock.now_unix(),
            expires_unix: 0,
            evidence: Vec::new(),
        });
        let mut prefixes = order.prefixes;
        let mut seen = std::collections::HashSet::with_capacity(prefixes.len());
        prefixes.retain(|prefix| seen.insert(*prefix));
        self.record(
            DecisionKind::Allow,
            origin,
            Vec::new(),
            prefixes,
            0,
            Vec::new(),
        )
    }

    fn record(
        &mut self,
        kind: DecisionKind,
        origin: Arc<Origin>,
        new: Vec<Prefix>,
        known: Vec<Prefix>,
        deadline: u64,
        refused: Vec<(Prefix, Refusal)>,
    ) -> Prepared {
        let previous: Vec<Option<Decision>> = new
            .iter()
            .chain(&known)
            .map(|prefix| self.store.get(kind, prefix).cloned())
            .collect();
        let recorded: Vec<Prefix> = new.iter().chain(&known).copied().collect();
        // A failed write marks the store broken: the sync before applying reports it.
        if let Err(err) = self.store.put(kind, &origin, recorded) {
            log::debug!("recording {}: {}", kind.name(), error_chain(&err));
        }
        Prepared {
            kind,
            origin,
            new,
            known,
            deadline,
            previous,
            refused,
        }
    }

    /// Sync the records of `group`, then apply each order to the kernel and roll back what
    /// the kernel refused. One answer per order, in order. When the sync fails nothing is
    /// applied and every order answers [`CommandError::NotRecorded`].
    pub(super) fn apply_group(
        &mut self,
        group: Vec<Prepared>,
    ) -> Vec<Result<Applied, CommandError>> {
        if group.is_empty() {
            return Vec::new();
        }
        self.edited_during_pass();
        if let Err(err) = self.store.sync() {
            let text = error_chain(&err);
            log::error!("not applied, the state directory could not record it: {text}");
            for prepared in group.iter().rev() {
                let all: Vec<usize> = (0..prepared.previous.len()).collect();
                self.roll_back(prepared, &all);
            }
            return group
                .iter()
                .map(|_| Err(CommandError::NotRecorded(text.clone())))
                .collect();
        }
        let outcomes: Vec<Vec<Result<(), DataplaneError>>> =
            group.iter().map(|prepared| self.apply(prepared)).collect();
        // Later orders first: each roll back finds the store as its own order left it.
        for (prepared, results) in group.iter().zip(&outcomes).rev() {
            let failed: Vec<usize> = results
                .iter()
                .enumerate()
                .filter(|(_, result)| result.is_err())
                .map(|(i, _)| i)
                .collect();
            self.roll_back(prepared, &failed);
        }
        group
            .into_iter()
            .zip(outcomes)
            .map(|(prepared, results)| Ok(self.answer(prepared, results)))
            .collect()
    }

    fn apply(&mut self, prepared: &Prepared) -> Vec<Result<(), DataplaneError>> {
        match prepared.kind {
            DecisionKind::Block => {
                let mut results = self.dataplane.block_new(&prepared.new, prepared.deadline);
                results.extend(
                    prepared
                        .known
                        .iter()
                        .map(|prefix| self.dataplane.block(prefix, prepared.deadline)),
                );
                results
            }
            DecisionKind::Allow => prepared
                .recorded()
                .map(|prefix| self.dataplane.allow(prefix))
                .collect(),
        }
    }

    /// Put back what the prefixes at `indices` replaced, where the store still holds this
    /// order's decision for them.
    fn roll_back(&mut self, prepared: &Prepared, indices: &[usize]) {
        let recorded: Vec<&Prefix> = prepared.recorded().collect();
        let mut forget = Vec::new();
        let mut restore: Vec<(Arc<Origin>, Vec<Prefix>)> = Vec::new();
        for &i in indices {
            let prefix = *recorded[i];
            let ours = self
                .store
                .get(prepared.kind, &prefix)
                .is_some_and(|d| Arc::ptr_eq(&d.origin, &prepared.origin));
            if !ours {
                continue;
            }
            match &prepared.previous[i] {
                None => forget.push(prefix),
                Some(before) => match restore
                    .iter_mut()
                    .find(|(origin, _)| Arc::ptr_eq(origin, &before.origin))
                {
                    Some((_, prefixes)) => prefixes.push(prefix),
                    None => restore.push((Arc::clone(&before.origin), vec![prefix])),
                },
            }
        }
        // Errors leave the store broken, and its next rewrite writes what memory holds.
        if let Err(err) = self.store.remove(prepared.kind, &forget) {
            log::debug!("rolling back: {}", error_chain(&err));
        }
        for (origin, prefixes) in restore {
            if let Err(err) = self.store.put(prepared.kind, &origin, prefixes) {
                log::debug!("rolling back: {}", error_chain(&err));
            }
        }
    }

    /// Count and answer what an order did.
    fn answer(&mut self, prepared: Prepared, results: Vec<Result<(), DataplaneError>>) -> Applied {
        let recorded: Vec<Prefix> = prepared.recorded().copied().collect();
        let mut refused = prepared.refused;
        let mut applied = 0;
        for (prefix, result) in recorded.into_iter().zip(results) {
            match result {
                Ok(()) => applied += 1,
                Err(err) => {
                    if matches!(err, DataplaneError::ListFull { .. }) {
                        self.full_list_errors += 1;
                    }
                    refused.push((prefix, kernel_refusal(&err)));
                }
            }
        }
        self.count(&prepared.origin.source, prepared.kind.name(), applied);
        self.count(&prepared.origin.source, "refused", refused.len() as u64);
        Applied { applied, refused }
    }

    /// Record and apply one block order on its own (what the run loop does for a batch).
    ///
    /// # Errors
    /// When the state directory cannot record it (nothing is applied then).
    pub fn block(&mut self, order: BlockOrder) -> Result<Applied, CommandError> {
        let prepared = self.prepare_block(order);
        self.apply_group(vec![prepared])
            .pop()
            .unwrap_or(Err(CommandError::Gone))
    }

    /// Record and apply one allow order on its own.
    ///
    /// # Errors
    /// When the state directory cannot record it (nothing is applied then).
    pub fn allow(&mut self, order: AllowOrder) -> Result<Applied, CommandError> {
        let prepared = self.prepare_allow(order);
        self.apply_group(vec![prepared])
            .pop()
            .unwrap_or(Err(CommandError::Gone))
    }
}
