//! The owner's guards, expiry sweep, reconcile, batching and full lists, against the
//! in-memory data path: no root, no kernel.
use super::*;

fn config() -> OwnerConfig {
    OwnerConfig {
        dry_run: false,
        min_prefix_len_v4: 8,
        min_prefix_len_v6: 32,
        default_ban: None,
        own_addresses: vec!["198.51.100.1".parse().unwrap()],
        config_allow: BTreeSet::new(),
        interfaces: vec![],
        top_blocked: 10,
        volume_accounting: false,
        unknown_entries: UnknownEntries::Adopt,
    }
}

fn refusal(prefix: &str, allows: &[&str], force: bool) -> Option<String> {
    let allows: Vec<Prefix> = allows.iter().map(|a| a.parse().unwrap()).collect();
    block_refusal(&prefix.parse().unwrap(), &config(), &allows, force).map(|r| r.to_string())
}

#[test]
fn too_broad_prefixes_need_force() {
    assert!(
        refusal("10.0.0.0/7", &[], false)
            .unwrap()
            .contains("guard limit /8")
    );
    assert_eq!(refusal("10.0.0.0/7", &[], true), None);
    assert_eq!(refusal("10.0.0.0/8", &[], false), None);
    assert!(
        refusal("2001:db8::/31", &[], false)
            .unwrap()
            .contains("/32")
    );
}

#[test]
fn own_address_is_never_blocked_even_by_force() {
    assert!(
        refusal("198.51.100.1", &[], false)
            .unwrap()
            .contains("own address")
    );
    assert!(
        refusal("198.51.100.0/24", &[], true)
            .unwrap()
            .contains("own address")
    );
    assert_eq!(refusal("198.51.100.2", &[], false), None);
}

#[test]
fn allowlisted_targets_are_refused_but_a_block_around_an_allow_is_not() {
    assert!(
        refusal("203.0.113.5", &["203.0.113.0/24"], false)
            .unwrap()
            .contains("allowlisted")
    );
    assert!(refusal("203.0.113.0/25", &["203.0.113.0/24"], false).is_some());
    // The kernel lets the allowed /32 through inside a blocked /24.
    assert_eq!(refusal("203.0.113.0/24", &["203.0.113.5"], false), None);
}

// --- The owner's logic against the in-memory data path (no root) ---

use std::path::PathBuf;

use xdpguard_common::BlockEntry;

use crate::{
    clock::ManualClock,
    enforce::dataplane::{Capacities, FakeDataPath, FakeEvent, FakeOp},
};

const NOW: u64 = 1_700_000_000;

fn p(text: &str) -> Prefix {
    text.parse().unwrap()
}

/// A state directory removed when the test ends.
struct StateDir(PathBuf);

impl StateDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("xdpguard-owner-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_with(
    dir: &StateDir,
    fake: FakeDataPath,
    config: OwnerConfig,
) -> (Owner<FakeDataPath>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let (store, report) = DecisionStore::open(&dir.0).unwrap();
    let owner = Owner::start(fake, store, &report, clock.clone(), config).unwrap();
    (owner, clock)
}

fn start(dir: &StateDir) -> (Owner<FakeDataPath>, Arc<ManualClock>) {
    start_with(dir, FakeDataPath::default(), config())
}

fn block_order(prefixes: &[&str], source: Source, secs: Option<u64>) -> BlockOrder {
    BlockOrder {
        prefixes: prefixes.iter().map(|text| p(text)).collect(),
        source,
        reason: "test".into(),
        expires: secs.map_or(Expiry::Default, |s| Expiry::After(Duration::from_secs(s))),
        force: false,
        evidence: Vec::new(),
        replace_own: false,
    }
}

fn refused_reasons(applied: &Applied) -> Vec<String> {
    applied.refused.iter().map(|(_, r)| r.to_string()).collect()
}

#[test]
fn guards_refuse_through_the_owner_and_nothing_refused_reaches_the_kernel() {
    let dir = StateDir::new("guards");
    let mut config = config();
    let _: bool = config.config_allow.insert(p("203.0.113.0/28"));
    let (mut owner, _) = start_with(&dir, FakeDataPath::default(), config);
    let applied = owner
        .block(block_order(
            &["10.0.0.0/7", "198.51.100.0/24", "203.0.113.5", "192.0.2.9"],
            Source::Manual,
            Some(60),
        ))
        .unwrap();
    assert_eq!(applied.applied, 1);
    let reasons = refused_reasons(&applied);
    assert!(reasons[0].contains("guard limit /8"), "{reasons:?}");
    assert!(
        reasons[1].contains("own address 198.51.100.1"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("allowlisted"), "{reasons:?}");
    assert!(
        owner
            .dataplane
            .block_entry(&p("192.0.2.9"))
            .unwrap()
            .is_some()
    );
    for refused in ["10.0.0.0/7", "198.51.100.0/24", "203.0.113.5"] {
        assert!(owner.dataplane.block_entry(&p(refused)).unwrap().is_none());
        assert!(owner.store.get(DecisionKind::Block, &p(refused)).is_none());
    }
    // Forced, a broad block goes in; an own address never does.
    let mut forced = block_order(&["10.0.0.0/7", "198.51.0.0/16"], Source::Manual, None);
    forced.force = true;
    let applied = owner.block(forced).unwrap();
    assert_eq!(applied.applied, 1);
    assert!(matches!(applied.refused[0].1, Refusal::OwnAddress(_)));
}

#[test]
fn a_detector_never_shortens_a_longer_block_but_an_operator_may() {
    let dir = StateDir::new("longer");
    let (mut owner, _) = start(&dir);
    owner
        .block(block_order(&["192.0.2.1"], Source::Manual, Some(3600)))
        .unwrap();
    let detector = owner
        .block(block_order(
            &["192.0.2.1"],
            Source::Ruleset("sshd".into()),
            Some(60),
        ))
        .unwrap();
    assert_eq!(detector.applied, 0);
    assert_eq!(
        detector.refused[0].1,
        Refusal::AlreadyBlockedLonger {
            holder: Source::Manual
        }
    );
    let decision = owner
        .store
        .get(DecisionKind::Block, &p("192.0.2.1"))
        .unwrap();
    assert_eq!(decision.origin.expires_unix, NOW + 3600);
    let operator = owner
        .block(block_order(&["192.0.2.1"], Source::Manual, Some(60)))
        .unwrap();
    assert_eq!(operator.applied, 1);
    let decision = owner
        .store
        .get(DecisionKind::Block, &p("192.0.2.1"))
        .unwrap();
    assert_eq!(decision.origin.expires_unix, NOW + 60);
}

#[test]
fn the_sweep_removes_what_expired_from_the_kernel_and_the_store() {
    let dir = StateDir::new("sweep");
    let (mut owner, clock) = start(&dir);
    owner
        .block(block_order(
            &["192.0.2.1", "192.0.2.0/25"],
            Source::Manual,
            Some(10),
        ))
        .unwrap();
    owner
        .block(block_order(&["192.0.2.200"], Source::Manual, Some(100)))
        .unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(owner.sweep().unwrap(), 0);
    clock.advance(Duration::from_secs(6));
    assert_eq!(owner.sweep().unwrap(), 2);
    for gone in ["192.0.2.1", "192.0.2.0/25"] {
        assert!(
            owner.dataplane.block_entry(&p(gone)).unwrap().is_none(),
            "{gone}"
        );
        assert!(
            owner.store.get(DecisionKind::Block, &p(gone)).is_none(),
            "{gone}"
        );
    }
    assert!(
        owner
            .dataplane
            .block_entry(&p("192.0.2.200"))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        owner.decisions_total.get(&("manual".to_owned(), "expire")),
        Some(&2)
    );
    // A kernel that refuses the removal still loses the decision: an expired entry no longer
    // drops, and reconcile reports what is left.
    owner.dataplane.fail_always(FakeOp::Unblock);
    clock.advance(Duration::from_secs(100));
    assert_eq!(owner.sweep().unwrap(), 1);
    assert!(owner.store.is_empty());
}

#[test]
fn reconcile_restores_missing_and_changed_entries_and_adopts_unknown_ones() {
    let dir = StateDir::new("reconcile");
    let (mut owner, clock) = start(&dir);
    owner
        .block(block_order(
            &["192.0.2.1", "192.0.2.2", "198.18.0.0/15"],
            Source::Manual,
            Some(600),
        ))
        .unwrap();
    let deadline = clock.monotonic_deadline(NOW + 600);
    assert_eq!(
        owner.reconcile().unwrap(),
        ReconcileReport {
            entries: 3,
            ..ReconcileReport::default()
        }
    );

    // Behind the daemon's back: one entry removed, one given another expiry, one added.
    let _: Option<BlockEntry> = owner.dataplane.remove_block_behind(&p("192.0.2.1"));
    owner
        .dataplane
        .edit_block(&p("198.18.0.0/15"))
        .unwrap()
        .expires_ns = deadline + 5_000_000_000;
    owner
        .dataplane
        .insert_block_behind(&p("203.0.113.77"), deadline);
    let report = owner.reconcile().unwrap();
    assert_eq!(
        report,
        ReconcileReport {
            entries: 3,
            missing: 1,
            corrected: 1,
            adopted: 1,
            ..ReconcileReport::default()
        }
    );
    assert_eq!(
        owner
            .dataplane
            .block_entry(&p("192.0.2.1"))
            .unwrap()
            .unwrap()
            .expires_ns,
        deadline
    );
    assert_eq!(
        owner
            .dataplane
            .block_entry(&p("198.18.0.0/15"))
            .unwrap()
            .unwrap()
            .expires_ns,
        deadline
    );
    // The unknown entry is adopted, kernel expiry and all; nothing is left unknown.
    let adopted = owner
        .store
        .get(DecisionKind::Block, &p("203.0.113.77"))
        .unwrap();
    assert_eq!(adopted.origin.source, Source::Recovered);
    assert_eq!(adopted.origin.expires_unix, NOW + 600);
    assert_eq!(owner.status().unwrap().unknown_entries, 0);
    assert_eq!(owner.repaired_total, 2);
    // A second pass finds nothing new to repair.
    assert_eq!(
        owner.reconcile().unwrap(),
        ReconcileReport {
            entries: 4,
            ..ReconcileReport::default()
        }
    );

    // An allow entry removed behind the daemon's back comes back too.
    owner
        .allow(AllowOrder {
            prefixes: vec![p("192.0.2.128/25")],
            source: Source::Manual,
            reason: String::new(),
        })
        .unwrap();
    let _ = owner.dataplane.remove_allow_behind(&p("192.0.2.128/25"));
    assert_eq!(owner.reconcile().unwrap().missing, 1);
    assert!(
        owner
            .dataplane
            .allow_entry(&p("192.0.2.128/25"))
            .unwrap()
            .is_some()
    );
}

#[test]
fn new_blocks_go_in_as_one_batch_and_re_blocks_keep_their_counters() {
    let dir = StateDir::new("batch");
    let (mut owner, clock) = start(&dir);
    let _ = owner.dataplane.take_events();
    owner
        .block(block_order(
            &["192.0.2.1", "192.0.2.2", "192.0.2.3"],
            Source::ListFile("bad.txt".into()),
            Some(600),
        ))
        .unwrap();
    let deadline = clock.monotonic_deadline(NOW + 600);
    assert_eq!(
        owner.dataplane.take_events(),
        vec![FakeEvent::BlockNew {
            prefixes: vec![p("192.0.2.1"), p("192.0.2.2"), p("192.0.2.3")],
            expires_ns: deadline,
        }]
    );
    assert!(owner.dataplane.add_block_traffic(&p("192.0.2.2"), 7, 700));
    owner
        .block(block_order(
            &["192.0.2.2", "192.0.2.4"],
            Source::Manual,
            Some(900),
        ))
        .unwrap();
    let events = owner.dataplane.take_events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(&events[0], FakeEvent::BlockNew { prefixes, .. } if prefixes == &[p("192.0.2.4")])
    );
    assert!(matches!(&events[1], FakeEvent::Block { prefix, .. } if *prefix == p("192.0.2.2")));
    let entries = owner
        .list(&ListFilter {
            kind: Some(DecisionKind::Block),
            source: Some(Source::Manual),
            source_kind: None,
            covering: None,
        })
        .unwrap();
    let reblocked = entries
        .iter()
        .find(|e| e.decision.prefix == p("192.0.2.2"))
        .unwrap();
    assert_eq!((reblocked.packets, reblocked.bytes), (7, 700));
    assert_eq!(entries.len(), 2);
    // The list file's decisions are listed under their own source.
    let from_file = owner
        .list(&ListFilter {
            kind: None,
            source: Some(Source::ListFile("bad.txt".into())),
            source_kind: None,
            covering: None,
        })
        .unwrap();
    assert_eq!(from_file.len(), 2);
}

#[test]
fn a_full_list_refuses_the_rest_records_only_what_went_in_and_counts_it() {
    let dir = StateDir::new("full");
    let capacities = Capacities {
        block_host_v4: 2,
        ..Capacities::default()
    };
    let (mut owner, _) = start_with(&dir, FakeDataPath::new(capacities), config());
    let applied = owner
        .block(block_order(
            &["192.0.2.1", "192.0.2.2", "192.0.2.3"],
            Source::Manual,
            Some(60),
        ))
        .unwrap();
    assert_eq!(applied.applied, 2);
    assert_eq!(applied.refused.len(), 1);
    let (prefix, refusal) = &applied.refused[0];
    assert!(
        matches!(refusal, Refusal::ListFull { capacity: 2, .. }),
        "{refusal:?}"
    );
    assert!(
        refusal.to_string().contains("block_host/ipv4 is full"),
        "{refusal}"
    );
    assert!(owner.store.get(DecisionKind::Block, prefix).is_none());
    assert_eq!(owner.store.len(), 2);
    let status = owner.status().unwrap();
    assert_eq!(status.full_list_errors, 1);
    let hosts = status
        .lists
        .iter()
        .find(|l| l.list.to_string() == "block_host/ipv4")
        .unwrap();
    assert_eq!((hosts.entries, hosts.capacity), (2, 2));
    // A prefix still fits: the prefix list has its own room.
    assert_eq!(
        owner
            .block(block_order(&["192.0.2.128/25"], Source::Manual, Some(60)))
            .unwrap()
            .applied,
        1
    );
}

#[test]
fn a_kernel_error_refuses_that_prefix_only() {
    let dir = StateDir::new("kernel-error");
    let (mut owner, _) = start(&dir);
    owner.dataplane.fail(FakeOp::Block, 1);
    let applied = owner
        .block(block_order(
            &["192.0.2.1", "192.0.2.2"],
            Source::Manual,
            Some(60),
        ))
        .unwrap();
    assert_eq!(applied.applied, 1);
    assert!(matches!(&applied.refused[0].1, Refusal::Kernel(text) if text.contains("injected")));
    assert_eq!(owner.store.len(), 1);
}

#[test]
fn the_configured_allowlist_follows_reloads_and_is_not_removed_by_hand() {
    let dir = StateDir::new("config-allow");
    let mut first = config();
    let _: bool = first.config_allow.insert(p("192.0.2.0/24"));
    first.interfaces = vec![("veth0".into(), AttachMode::Auto)];
    let (mut owner, _) = start_with(&dir, FakeDataPath::default(), first);
    assert!(
        owner
            .dataplane
            .allow_entry(&p("192.0.2.0/24"))
            .unwrap()
            .is_some()
    );
    assert_eq!(owner.status().unwrap().interfaces[0].0, "veth0");
    let removed = owner
        .remove(DecisionKind::Allow, vec![p("192.0.2.0/24")], None)
        .unwrap();
    assert_eq!(removed.removed, 0);
    assert_eq!(removed.refused[0].1, Refusal::ConfiguredAllow);

    let mut second = config();
    let _: bool = second.config_allow.insert(p("198.18.0.0/15"));
    second.interfaces = vec![("veth1".into(), AttachMode::Generic)];
    second.dry_run = true;
    owner.apply_config(second).unwrap();
    assert!(
        owner
            .dataplane
            .allow_entry(&p("192.0.2.0/24"))
            .unwrap()
            .is_none()
    );
    assert!(
        owner
            .dataplane
            .allow_entry(&p("198.18.0.0/15"))
            .unwrap()
            .is_some()
    );
    let status = owner.status().unwrap();
    assert!(status.dry_run);
    let names: Vec<&str> = status.interfaces.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["veth1"]);
    assert!(owner.dataplane.dry_run());
}

#[test]
fn commands_that_arrive_together_are_answered_after_one_durable_batch() {
    let dir = StateDir::new("run");
    let (owner, _) = start(&dir);
    let snapshot = owner.metrics_snapshot();
    let (commands, inbox) = mpsc::channel();
    let handle = Handle::new(commands);
    let thread = std::thread::spawn(move || run(owner, &inbox, Duration::from_secs(3600)));
    // Sent before any is waited for: the owner takes them as one batch (or a few).
    let pending: Vec<_> = (1..=20)
        .map(|i| {
            handle.block(block_order(
                &[&format!("192.0.2.{i}")],
                Source::Volume("flood".into()),
                Some(600),
            ))
        })
        .collect();
    let unblock = handle.unblock(vec![p("192.0.2.1"), p("192.0.2.99")]);
    for answer in pending {
        assert_eq!(answer.wait().unwrap().applied, 1);
    }
    let removed = unblock.wait().unwrap();
    assert_eq!(removed.removed, 1);
    assert_eq!(removed.missing, vec![p("192.0.2.99")]);
    let status = handle.status().wait().unwrap();
    assert_eq!(status.decisions, 19);
    // The snapshot is published before the answers go out: no round trip to the owner.
    let page = snapshot.render();
    assert!(
        page.contains("xdpguard_decisions_total{action=\"block\",source=\"volume:flood\"} 20"),
        "{page}"
    );
    handle.shutdown();
    let owner = thread.join().unwrap();
    drop(owner);
    // Gone owner: a clear error, not a hang.
    assert_eq!(handle.status().wait(), Err(CommandError::Gone));
    // Every acknowledged decision is on disk.
    let (store, _) = DecisionStore::open(&dir.0).unwrap();
    assert_eq!(store.len(), 19);
    assert!(store.get(DecisionKind::Block, &p("192.0.2.1")).is_none());
    assert_eq!(
        store
            .get(DecisionKind::Block, &p("192.0.2.20"))
            .unwrap()
            .origin
            .source,
        Source::Volume("flood".into())
    );
}

#[test]
fn recovery_adopts_kernel_entries_when_the_state_directory_is_empty() {
    let dir = StateDir::new("recover");
    let clock = ManualClock::new(NOW);
    let mut fake = FakeDataPath::default();
    fake.insert_block_behind(&p("192.0.2.7"), clock.monotonic_deadline(NOW + 120));
    fake.insert_block_behind(&p("198.18.0.0/15"), 0);
    let (owner, _) = start_with(&dir, fake, config());
    let recovered: Vec<&Decision> = owner.store.iter().collect();
    assert_eq!(recovered.len(), 2);
    assert!(
        recovered
            .iter()
            .all(|d| d.origin.source == Source::Recovered)
    );
    let never = owner
        .store
        .get(DecisionKind::Block, &p("198.18.0.0/15"))
        .unwrap();
    assert_eq!(never.origin.expires_unix, 0);
    let timed = owner
        .store
        .get(DecisionKind::Block, &p("192.0.2.7"))
        .unwrap();
    assert_eq!(timed.origin.expires_unix, NOW + 120);
}

// --- Issue 10: the kernel and the store never disagree silently ---

fn entry(owner: &Owner<FakeDataPath>, prefix: &str) -> Option<BlockEntry> {
    owner.dataplane.block_entry(&p(prefix)).unwrap()
}

fn decision(owner: &Owner<FakeDataPath>, prefix: &str) -> Option<Decision> {
    owner.store.get(DecisionKind::Block, &p(prefix)).cloned()
}

#[test]
fn an_order_recorded_but_not_applied_when_the_daemon_died_is_applied_at_start() {
    let dir = StateDir::new("record-first");
    let (mut owner, clock) = start(&dir);
    let hosts = ["192.0.2.1", "192.0.2.2", "192.0.2.0/25"];
    let order = block_order(&hosts, Source::ListFile("big.txt".into()), Some(600));
    // kill -9 after the records are durable, before the kernel changes.
    let prepared = owner.prepare_block(order);
    owner.store.sync().unwrap();
    drop(prepared);
    let Owner { dataplane, .. } = owner;
    assert_eq!(dataplane.block_entries().unwrap(), vec![]);
    let (store, report) = DecisionStore::open(&dir.0).unwrap();
    let owner = Owner::start(dataplane, store, &report, clock.clone(), config()).unwrap();
    assert_eq!(owner.last_reconcile.missing, 3);
    for host in hosts {
        assert_eq!(
            decision(&owner, host).unwrap().origin.source,
            Source::ListFile("big.txt".into())
        );
        assert_eq!(
            entry(&owner, host).unwrap().expires_ns,
            clock.monotonic_deadline(NOW + 600),
            "{host}"
        );
    }
}

#[test]
fn a_state_directory_that_cannot_record_leaves_the_kernel_untouched() {
    let dir = StateDir::new("full-disk");
    let (mut owner, clock) = start(&dir);
    owner
        .block(block_order(&["192.0.2.1"], Source::Manual, Some(600)))
        .unwrap();
    let before = entry(&owner, "192.0.2.1").unwrap();
    owner.store.fail_writes(true);
    let err = owner
        .block(block_order(
            &["192.0.2.1", "192.0.2.2"],
            Source::Manual,
            Some(60),
        ))
        .unwrap_err();
    assert!(matches!(err, CommandError::NotRecorded(_)), "{err:?}");
    assert!(err.to_string().starts_with("not applied"), "{err}");
    // Nothing reached the kernel, and the store holds what it held before.
    assert_eq!(entry(&owner, "192.0.2.1"), Some(before));
    assert_eq!(entry(&owner, "192.0.2.2"), None);
    assert_eq!(
        decision(&owner, "192.0.2.1").unwrap().origin.expires_unix,
        NOW + 600
    );
    assert!(decision(&owner, "192.0.2.2").is_none());
    let err = owner
        .allow(AllowOrder {
            prefixes: vec![p("192.0.2.200")],
            source: Source::Manual,
            reason: String::new(),
        })
        .unwrap_err();
    assert!(matches!(err, CommandError::NotRecorded(_)));
    assert!(owner.dataplane.allowed().is_empty());
    // Space again: the next order works, and the rewrite carries the whole state.
    owner.store.fail_writes(false);
    owner
        .block(block_order(&["192.0.2.3"], Source::Manual, Some(60)))
        .unwrap();
    let Owner { dataplane, .. } = owner;
    let (store, report) = DecisionStore::open(&dir.0).unwrap();
    let owner = Owner::start(dataplane, store, &report, clock, config()).unwrap();
    let mut recorded: Vec<String> = owner.store.iter().map(|d| d.prefix.to_string()).collect();
    recorded.sort();
    assert_eq!(recorded, ["192.0.2.1/32", "192.0.2.3/32"]);
    assert_eq!(
        owner.last_reconcile,
        ReconcileReport {
            entries: 2,
            ..ReconcileReport::default()
        }
    );
}

#[test]
fn unknown_entries_are_adopted_listed_and_removable() {
    let dir = StateDir::new("adopt");
    let (mut owner, clock) = start(&dir);
    owner
        .block(block_order(&["192.0.2.1"], Source::Manual, None))
        .unwrap();
    owner
        .dataplane
        .insert_block_behind(&p("203.0.113.7"), clock.monotonic_deadline(NOW + 120));
    owner.dataplane.insert_block_behind(&p("198.18.0.0/15"), 0);
    owner.dataplane.insert_allow_behind(&p("203.0.113.128/25"));
    let report = owner.reconcile().unwrap();
    assert_eq!((report.adopted, report.unknown), (3, 0));
    let listed = owner
        .list(&ListFilter {
            kind: None,
            source: Some(Source::Recovered),
            source_kind: None,
            covering: None,
        })
        .unwrap();
    let mut prefixes: Vec<String> = listed
        .iter()
        .map(|e| format!("{} {}", e.decision.kind.name(), e.decision.prefix))
        .collect();
    prefixes.sort();
    assert_eq!(
        prefixes,
        [
            "allow 203.0.113.128/25",
            "block 198.18.0.0/15",
            "block 203.0.113.7/32"
        ]
    );
    // The kernel's expiry is kept, and the kernel entry is left as it was.
    assert_eq!(
        decision(&owner, "203.0.113.7").unwrap().origin.expires_unix,
        NOW + 120
    );
    assert_eq!(
        decision(&owner, "198.18.0.0/15")
            .unwrap()
            .origin
            .expires_unix,
        0
    );
    assert_eq!(owner.reconcile().unwrap().corrected, 0);
    let removed = owner
        .remove(DecisionKind::Block, vec![p("203.0.113.7")], None)
        .unwrap();
    assert_eq!(removed.removed, 1);
    assert_eq!(entry(&owner, "203.0.113.7"), None);
    owner.publish_metrics();
    let page = owner.metrics_snapshot().render();
    assert!(
        page.contains("xdpguard_unknown_entries_handled_total{action=\"adopt\"} 3\n"),
        "{page}"
    );
    assert!(page.contains("xdpguard_unknown_entries 0\n"), "{page}");
}

#[test]
fn with_the_remove_policy_unknown_entries_are_removed() {
    let dir = StateDir::new("remove-policy");
    let mut config = config();
    config.unknown_entries = UnknownEntries::Remove;
    let (mut owner, clock) = start_with(&dir, FakeDataPath::default(), config);
    owner
        .block(block_order(&["192.0.2.1"], Source::Manual, None))
        .unwrap();
    owner
        .dataplane
        .insert_block_behind(&p("203.0.113.7"), clock.monotonic_deadline(NOW + 120));
    owner.dataplane.insert_allow_behind(&p("203.0.113.128/25"));
    let report = owner.reconcile().unwrap();
    assert_eq!((report.removed, report.adopted), (2, 0));
    assert_eq!(entry(&owner, "203.0.113.7"), None);
    assert!(owner.dataplane.allowed().is_empty());
    assert!(decision(&owner, "203.0.113.7").is_none());
    assert!(
        entry(&owner, "192.0.2.1").is_some(),
        "a decision's entry stays"
    );
    assert_eq!(owner.unknown_removed_total, 2);
}

#[test]
fn with_no_state_at_all_the_kernel_is_adopted_whatever_the_policy() {
    let dir = StateDir::new("no-state-remove");
    let mut config = config();
    config.unknown_entries = UnknownEntries::Remove;
    let clock = ManualClock::new(NOW);
    let mut fake = FakeDataPath::default();
    fake.insert_block_behind(&p("192.0.2.7"), clock.monotonic_deadline(NOW + 120));
    let (owner, _) = start_with(&dir, fake, config);
    assert_eq!(
        decision(&owner, "192.0.2.7").unwrap().origin.source,
        Source::Recovered
    );
    assert!(entry(&owner, "192.0.2.7").is_some());
}

#[test]
fn expired_unknown_entries_are_removed_not_adopted() {
    let dir = StateDir::new("expired-unknown");
    let (mut owner, _) = start(&dir);
    owner
        .block(block_order(&["192.0.2.1"], Source::Manual, None))
        .unwrap();
    // Deadline 1 ns after boot: long past.
    owner.dataplane.insert_block_behind(&p("198.18.0.0/15"), 1);
    let report = owner.reconcile().unwrap();
    assert_eq!((report.removed, report.adopted), (1, 0));
    assert_eq!(entry(&owner, "198.18.0.0/15"), None);
}

#[test]
fn deadlines_compare_never_exactly_and_a_deadline_within_two_seconds() {
    assert!(deadline_matches(0, 0));
    assert!(!deadline_matches(0, 1), "never, tampered to 1 ns");
    assert!(
        !deadline_matches(5_000_000_000, 0),
        "a deadline, tampered to never"
    );
    assert!(deadline_matches(
        5_000_000_000,
        5_000_000_000 + DEADLINE_TOLERANCE_NS
    ));
    assert!(deadline_matches(
        5_000_000_000,
        5_000_000_000 - DEADLINE_TOLERANCE_NS
    ));
    assert!(!deadline_matches(
        5_000_000_000,
        5_000_000_001 + DEADLINE_TOLERANCE_NS
    ));
    assert!(!deadline_matches(5_000_000_000, 1));
}

#[test]
fn tampered_expiries_prefix_lengths_and_flags_are_corrected_and_counted() {
    let dir = StateDir::new("tamper");
    let (mut owner, clock) = start(&dir);
    owner
        .block(block_order(
            &["192.0.2.1", "192.0.2.0/25"],
            Source::Manual,
            None,
        ))
        .unwrap();
    owner
        .block(block_order(&["192.0.2.200"], Source::Manual, Some(600)))
        .unwrap();
    let deadline = clock.monotonic_deadline(NOW + 600);
    assert!(owner.dataplane.add_block_traffic(&p("192.0.2.1"), 5, 500));
    // A permanent block made to expire at once: it would stop dropping.
    owner
        .dataplane
        .edit_block(&p("192.0.2.1"))
        .unwrap()
        .expires_ns = 1;
    owner
        .dataplane
        .edit_block(&p("192.0.2.0/25"))
        .unwrap()
        .prefix_len = 7;
    owner
        .dataplane
        .edit_block(&p("192.0.2.200"))
        .unwrap()
        .expires_ns = 0;
    owner.dataplane.tamper_config();
    let report = owner.reconcile().unwrap();
    assert_eq!(report.corrected, 4, "{report:?}");
    let fixed = entry(&owner, "192.0.2.1").unwrap();
    assert_eq!((fixed.expires_ns, fixed.packets), (0, 5), "counters kept");
    assert_eq!(entry(&owner, "192.0.2.0/25").unwrap().prefix_len, 25);
    assert_eq!(entry(&owner, "192.0.2.200").unwrap().expires_ns, deadline);
    assert_eq!(owner.repaired_total, 4);
    // Within the tolerance a deadline is left alone.
    owner
        .dataplane
        .edit_block(&p("192.0.2.200"))
        .unwrap()
        .expires_ns = deadline + 1_500_000_000;
    assert_eq!(owner.reconcile().unwrap().corrected, 0);
    owner
        .dataplane
        .edit_block(&p("192.0.2.200"))
        .unwrap()
        .expires_ns = deadline + 3_000_000_000;
    assert_eq!(owner.reconcile().unwrap().corrected, 1);
}

/// `n` distinct IPv6 hosts in 2001:db8:aa::/48.
fn hosts(n: usize) -> Vec<Prefix> {
    (0..n)
        .map(|i| p(&format!("2001:db8:aa::{:x}:{:x}", i >> 16, i & 0xffff)))
        .collect()
}

#[test]
fn reconcile_and_sweep_go_in_bounded_chunks() {
    let dir = StateDir::new("chunks");
    let (mut owner, clock) = start(&dir);
    let total = 3 * CHUNK + 5;
    let order = BlockOrder {
        prefixes: hosts(total),
        source: Source::ListFile("big.txt".into()),
        reason: "test".into(),
        expires: Expiry::After(Duration::from_secs(10)),
        force: false,
        evidence: Vec::new(),
        replace_own: false,
    };
    assert_eq!(owner.block(order).unwrap().applied, total as u64);
    owner.begin_reconcile();
    let mut steps = 0;
    let report = loop {
        steps += 1;
        if let Some(report) = owner.reconcile_step().unwrap() {
            break report;
        }
    };
    assert_eq!(report.entries, total as u64);
    // One chunk of at most CHUNK entries per step, and one for each empty list.
    assert!(steps > total / CHUNK, "{steps} steps");
    assert!(!owner.reconciling());
    clock.advance(Duration::from_secs(11));
    let mut swept = Vec::new();
    loop {
        let (n, more) = owner.sweep_step(CHUNK).unwrap();
        assert!(n <= CHUNK as u64);
        swept.push(n);
        if !more {
            break;
        }
    }
    assert_eq!(swept.iter().sum::<u64>(), total as u64);
    assert_eq!(swept.len(), 4, "{swept:?}");
    assert!(owner.store.is_empty());
    assert!(owner.dataplane.block_entries().unwrap().is_empty());
    assert_eq!(
        owner
            .decisions_total
            .get(&("file:big.txt".to_owned(), "expire")),
        Some(&(total as u64))
    );
}

#[test]
fn commands_are_answered_between_the_chunks_of_a_pass() {
    let dir = StateDir::new("between");
    let (mut owner, _) = start(&dir);
    let order = BlockOrder {
        prefixes: hosts(20 * CHUNK),
        source: Source::ListFile("big.txt".into()),
        reason: "test".into(),
        expires: Expiry::Default,
        force: false,
        evidence: Vec::new(),
        replace_own: false,
    };
    let _ = owner.block(order).unwrap();
    let snapshot = owner.metrics_snapshot();
    let (commands, inbox) = mpsc::channel();
    let handle = Handle::new(commands);
    // Reconciling back to back: commands only ever meet a pass under way.
    let thread = std::thread::spawn(move || run(owner, &inbox, Duration::ZERO));
    let passes = || snapshot.latest().reconcile_passes_total;
    let deadline = Instant::now() + Duration::from_secs(60);
    while passes() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = passes();
    let mut answered = 0;
    for i in 0..20 {
        let applied = handle
            .block(block_order(
                &[&format!("192.0.2.{i}")],
                Source::Manual,
                None,
            ))
            .wait_timeout(Duration::from_secs(2))
            .unwrap();
        assert_eq!(applied.applied, 1);
        answered += 1;
    }
    // Wide bounds: many answers within one pass, where a pass in one piece would make each
    // wait for the rest of it.
    assert!(
        answered == 20 && passes() <= before + 10,
        "{before} → {}",
        passes()
    );
    handle.shutdown();
    let owner = thread.join().unwrap();
    assert_eq!(owner.store.len(), 20 * CHUNK + 20);
}

#[test]
fn a_removed_state_directory_is_recreated_with_every_decision() {
    let dir = StateDir::new("rm-rf");
    let (mut owner, clock) = start(&dir);
    owner
        .block(block_order(
            &["192.0.2.1", "192.0.2.0/25"],
            Source::Manual,
            None,
        ))
        .unwrap();
    owner.sync().unwrap();
    owner.check_state_dir();
    assert_eq!(owner.state_dir_restored_total, 0);
    std::fs::remove_dir_all(&dir.0).unwrap();
    owner.check_state_dir();
    assert_eq!(owner.state_dir_restored_total, 1);
    assert!(dir.0.join("decisions.jsonl").exists());
    owner
        .block(block_order(&["192.0.2.200"], Source::Manual, None))
        .unwrap();
    owner.sync().unwrap();
    let Owner { dataplane, .. } = owner;
    let (store, report) = DecisionStore::open(&dir.0).unwrap();
    assert_eq!(report.decisions, 3);
    let owner = Owner::start(dataplane, store, &report, clock, config()).unwrap();
    assert!(
        owner
            .store
            .iter()
            .all(|d| d.origin.source == Source::Manual)
    );
}

#[test]
fn blocks_of_ranges_that_are_never_unicast_sources_need_force() {
    for prefix in [
        "224.0.0.1",
        "239.255.255.250",
        "224.0.0.0/24",
        "255.255.255.255",
        "255.255.255.0/24",
        "0.0.0.0",
        "0.0.0.0/8",
        "::",
        "169.254.1.1",
        "169.254.0.0/16",
        "169.0.0.0/8",
        "fe80::1",
        "fe80::/64",
        "ff02::1",
    ] {
        let refused = refusal(prefix, &[], false).unwrap_or_default();
        assert!(
            refused.contains("not a unicast source"),
            "{prefix}: {refused:?}"
        );
        assert!(refused.contains("force to override"), "{prefix}: {refused}");
        assert_eq!(refusal(prefix, &[], true), None, "{prefix} forced");
    }
    assert!(
        refusal("224.0.0.1", &[], false)
            .unwrap()
            .contains("multicast range 224.0.0.0/4")
    );
    assert!(
        refusal("fe80::1", &[], false)
            .unwrap()
            .contains("link-local range fe80::/10")
    );
    for neighbour in [
        "223.255.255.255",
        "240.0.0.1",
        "255.255.255.254",
        "0.0.0.1",
        "1.0.0.0/8",
        "169.253.255.255",
        "fec0::1",
        "::2",
        "2001:db8::/32",
    ] {
        assert_eq!(refusal(neighbour, &[], false), None, "{neighbour}");
    }
}

#[test]
fn evidence_is_bounded_kept_across_a_restart_and_listed_by_covering_address() {
    let dir = StateDir::new("evidence");
    let (mut owner, _) = start(&dir);
    let mut order = block_order(
        &["203.0.113.0/24"],
        Source::Ruleset("sshd".into()),
        Some(600),
    );
    order.evidence = (0..8)
        .map(|i| format!("line {i} {}", "é".repeat(400)))
        .collect();
    assert_eq!(owner.block(order).unwrap().applied, 1);
    owner
        .block(block_order(&["198.51.100.7"], Source::Manual, None))
        .unwrap();
    drop(owner);
    let (mut owner, _) = start(&dir);
    let covering = |owner: &mut Owner<FakeDataPath>, address: &str| {
        owner
            .list(&ListFilter {
                kind: None,
                source: None,
                source_kind: None,
                covering: Some(address.parse().unwrap()),
            })
            .unwrap()
    };
    let entries = covering(&mut owner, "203.0.113.77");
    assert_eq!(entries.len(), 1);
    let evidence = &entries[0].decision.origin.evidence;
    // The last five, each cut to 512 bytes at a character boundary.
    assert_eq!(evidence.len(), MAX_EVIDENCE_LINES);
    assert!(evidence[0].starts_with("line 3 "), "{evidence:?}");
    assert!(evidence[4].starts_with("line 7 "), "{evidence:?}");
    assert!(
        evidence
            .iter()
            .all(|l| l.len() <= MAX_EVIDENCE_LINE_BYTES + '…'.len_utf8() && l.ends_with('…'))
    );
    assert!(covering(&mut owner, "203.0.114.1").is_empty());
    let manual = covering(&mut owner, "198.51.100.7");
    assert_eq!(manual.len(), 1);
    assert!(manual[0].decision.origin.evidence.is_empty());
}

#[test]
fn a_peer_shortens_only_its_own_block_and_takes_back_only_its_own() {
    let dir = StateDir::new("peer-own");
    let (mut owner, _clock) = start(&dir);
    let crowdsec = |origin: &str| Source::Crowdsec(origin.into());
    owner
        .block(block_order(
            &["203.0.113.7"],
            crowdsec("cscli"),
            Some(3_600),
        ))
        .unwrap();
    owner
        .block(block_order(&["203.0.113.8"], Source::Manual, Some(3_600)))
        .unwrap();
    // Shorter, not marked: refused, the longer one stands.
    let applied = owner
        .block(block_order(&["203.0.113.7"], crowdsec("CAPI"), Some(60)))
        .unwrap();
    assert_eq!(applied.refused.len(), 1, "{:?}", refused_reasons(&applied));
    assert_eq!(
        decision(&owner, "203.0.113.7").unwrap().origin.expires_unix,
        NOW + 3_600
    );
    // Marked: a CrowdSec block shortens a CrowdSec block, never the operator's.
    let mut order = block_order(&["203.0.113.7", "203.0.113.8"], crowdsec("CAPI"), Some(60));
    order.replace_own = true;
    let applied = owner.block(order).unwrap();
    assert_eq!(refused_reasons(&applied).len(), 1);
    assert_eq!(
        decision(&owner, "203.0.113.7").unwrap().origin.expires_unix,
        NOW + 60
    );
    assert_eq!(
        decision(&owner, "203.0.113.8").unwrap().origin.source,
        Source::Manual
    );
    // Taken back only where CrowdSec holds the block.
    let removed = owner
        .remove(
            DecisionKind::Block,
            vec![p("203.0.113.7"), p("203.0.113.8")],
            Some(Source::is_crowdsec),
        )
        .unwrap();
    assert_eq!(removed.removed, 1);
    assert_eq!(removed.missing, vec![p("203.0.113.8")]);
    assert!(decision(&owner, "203.0.113.7").is_none());
    assert!(decision(&owner, "203.0.113.8").is_some());
}

#[test]
fn watchers_get_the_decisions_in_place_then_every_durable_change_in_order() {
    let dir = StateDir::new("watch");
    let (mut owner, clock) = start(&dir);
    let _: Applied = owner
        .block(block_order(&["192.0.2.1"], Source::Manual, Some(600)))
        .unwrap();
    let _: Applied = owner
        .block(block_order(
            &["192.0.2.2"],
            Source::Fleet("b".into()),
            Some(600),
        ))
        .unwrap();
    let (changes, seen) = mpsc::channel::<Vec<Change>>();
    let own = |source: &Source| !matches!(source, Source::Fleet(_));
    let snapshot = owner.watch(own, Box::new(move |batch| changes.send(batch).is_ok()));
    let prefixes: Vec<Prefix> = snapshot.iter().map(|d| d.prefix).collect();
    assert_eq!(prefixes, [p("192.0.2.1")], "only the sources it wants");
    // Nothing is told before the batch is durable.
    let _: Applied = owner
        .block(block_order(
            &["192.0.2.3"],
            Source::Ruleset("sshd".into()),
            Some(60),
        ))
        .unwrap();
    assert!(seen.try_recv().is_err());
    owner.tell_watchers();
    let batch = seen.try_recv().unwrap();
    assert!(
        matches!(&batch[..], [Change::Put { prefixes, origin, .. }]
            if prefixes[..] == [p("192.0.2.3")] && origin.source == Source::Ruleset("sshd".into())),
        "{batch:?}"
    );
    // Another agent's block replacing an own one arrives as a removal; so do unblocks and
    // expiries.
    let mut longer = block_order(&["192.0.2.1"], Source::Fleet("b".into()), None);
    longer.expires = Expiry::After(Duration::from_secs(6000));
    let _: Applied = owner.block(longer).unwrap();
    let _: Removed = owner
        .remove(DecisionKind::Block, vec![p("192.0.2.2")], None)
        .unwrap();
    clock.advance(Duration::from_secs(61));
    let _: u64 = owner.sweep().unwrap();
    owner.tell_watchers();
    let removed: Vec<Prefix> = seen
        .try_recv()
        .unwrap()
        .iter()
        .map(|change| match change {
            Change::Remove { prefixes, .. } => prefixes[0],
            Change::Put { .. } => panic!("{change:?}"),
        })
        .collect();
    assert_eq!(removed, [p("192.0.2.1"), p("192.0.2.2"), p("192.0.2.3")]);
    // A watcher that is gone is dropped, and the journal with it.
    drop(seen);
    let _: Applied = owner
        .block(block_order(&["192.0.2.4"], Source::Manual, Some(60)))
        .unwrap();
    owner.tell_watchers();
    assert!(owner.watchers.is_empty());
    assert!(owner.store.take_changes().is_empty());
}

#[test]
fn a_source_kind_filter_lists_every_host_of_the_fleet_and_nothing_else() {
    let dir = StateDir::new("sourcekind");
    let (mut owner, _) = start(&dir);
    for (prefix, source) in [
        ("192.0.2.1", Source::Manual),
        ("192.0.2.2", Source::Fleet("b".into())),
        ("192.0.2.3", Source::Fleet("c".into())),
        ("192.0.2.4", Source::Crowdsec("cscli".into())),
    ] {
        let _: Applied = owner
            .block(block_order(&[prefix], source, Some(60)))
            .unwrap();
    }
    let listed: Vec<Prefix> = owner
        .list(&ListFilter {
            source_kind: Some(Source::Fleet("".into())),
            ..ListFilter::default()
        })
        .unwrap()
        .into_iter()
        .map(|entry| entry.decision.prefix)
        .collect();
    assert_eq!(listed, [p("192.0.2.2"), p("192.0.2.3")]);
}

#[test]
fn reconcile_sums_drops_per_origin_as_for_the_metrics() {
    use crate::origins::{OriginAs, TableBuilder};
    let dir = StateDir::new("origins");
    let (mut owner, _clock) = start(&dir);
    let mut table = TableBuilder::new();
    table.add(p("192.0.2.0/24"), OriginAs::Single(64500), 50);
    table.add(p("198.18.0.0/15"), OriginAs::Single(64501), 50);
    owner.set_origins(Origins::with_table(table.build()));
    owner
        .block(block_order(
            &["192.0.2.1", "192.0.2.128/25", "198.18.7.7", "203.0.113.9"],
            Source::Manual,
            None,
        ))
        .unwrap();
    for (prefix, packets) in [
        ("192.0.2.1", 5),
        ("192.0.2.128/25", 7),
        ("198.18.7.7", 20),
        ("203.0.113.9", 99),
    ] {
        assert!(
            owner
                .dataplane
                .add_block_traffic(&p(prefix), packets, packets * 100)
        );
    }
    let _ = owner.reconcile().unwrap();
    owner.publish_metrics();
    let data = owner.metrics_snapshot().latest();
    // 203.0.113.9 has no announcement: its drops are in no origin's sum.
    assert_eq!(
        *data.top_origins,
        vec![
            ("AS64501".to_owned(), 20, 2000),
            ("AS64500".to_owned(), 12, 1200)
        ]
    );
}
