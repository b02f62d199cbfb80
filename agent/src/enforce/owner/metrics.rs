//! The decision owner's section of the metrics page: the XDP program's traffic counters, how
//! full each kernel list is, the decisions applied, the most-dropping block entries, what
//! reconcile found and repaired, and the build. The owner publishes a [`MetricsData`] in a
//! [`MetricsSnapshot`] after every batch and tick; a scrape renders the latest one on its own
//! thread and never waits for the owner.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use xdpguard_common::{Stat, StatValue};

use crate::{
    enforce::dataplane::{Capacities, ListId, Stats},
    exposition::{self, Kind, MetricFamily},
    prefix::Prefix,
};

/// What the owner publishes, for [`render`].
#[derive(Clone, Debug, Default)]
pub struct MetricsData {
    pub interfaces: Vec<(String, Stats)>,
    pub list_sizes: BTreeMap<ListId, u64>,
    pub capacities: Capacities,
    pub decisions_total: BTreeMap<(String, &'static str), u64>,
    /// As of the last reconcile pass, which reads every entry's counters anyway.
    pub top_blocked: Arc<Vec<(Prefix, u64, u64)>>,
    /// The origin ASes whose prefixes' blocks dropped the most (as many as `top_blocked`),
    /// as of the last pass; empty without an origins table.
    pub top_origins: Arc<Vec<(String, u64, u64)>>,
    pub full_list_errors: u64,
    pub unknown_entries: u64,
    pub repaired_total: u64,
    /// Unknown kernel entries adopted as `recovered` decisions, and removed.
    pub unknown_adopted_total: u64,
    pub unknown_removed_total: u64,
    pub reconcile_passes_total: u64,
    pub reconcile_last_pass_ms: u64,
    /// Times the state directory (or its log) was found gone and recreated.
    pub state_dir_restored_total: u64,
}

/// The latest [`MetricsData`] the owner published; cheap to clone, safe to read from any
/// thread.
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot(Arc<Mutex<Arc<MetricsData>>>);

impl MetricsSnapshot {
    pub fn publish(&self, data: MetricsData) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(data);
    }

    /// The latest data; the lock is held only to clone an `Arc`.
    pub fn latest(&self) -> Arc<MetricsData> {
        Arc::clone(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The owner's section of the page, from the latest data.
    pub fn render(&self) -> String {
        render(&self.latest())
    }
}

/// The owner's section of the page.
pub fn render(data: &MetricsData) -> String {
    let traffic = data.interfaces.iter().flat_map(|(interface, stats)| {
        stats
            .iter()
            .map(move |(stat, value)| (interface.as_str(), stat, value))
    });
    section(env!("CARGO_PKG_VERSION"), traffic, data)
}

/// The section for `data`, with `traffic` (interface, counter, value) for `data.interfaces`.
fn section<'a>(
    version: &str,
    traffic: impl IntoIterator<Item = (&'a str, Stat, StatValue)>,
    data: &MetricsData,
) -> String {
    let mut packets = MetricFamily::new(
        "xdpguard_packets_total",
        Kind::Counter,
        "Frames seen by the XDP program, by interface, address family and verdict.",
    );
    let mut bytes = MetricFamily::new(
        "xdpguard_bytes_total",
        Kind::Counter,
        "Bytes of the frames seen by the XDP program, by interface, address family and verdict.",
    );
    for (interface, stat, value) in traffic {
        let (family, verdict) = stat_labels(stat);
        let labels = [
            ("interface", interface),
            ("family", family),
            ("verdict", verdict),
        ];
        packets.add(&labels, value.packets);
        bytes.add(&labels, value.bytes);
    }
    let mut entries = MetricFamily::new(
        "xdpguard_entries",
        Kind::Gauge,
        "Entries in each kernel list.",
    );
    let mut capacity = MetricFamily::new(
        "xdpguard_map_capacity",
        Kind::Gauge,
        "Maximum entries of each kernel list.",
    );
    for (list, count) in &data.list_sizes {
        let labels = [("list", list.kind.name()), ("family", list.family.name())];
        entries.add(&labels, *count);
        capacity.add(&labels, u64::from(data.capacities.of(*list)));
    }
    let mut decisions = MetricFamily::new(
        "xdpguard_decisions_total",
        Kind::Counter,
        "Decisions applied since the daemon started, by source and action.",
    );
    for ((source, action), count) in &data.decisions_total {
        decisions.add(&[("source", source), ("action", action)], *count);
    }
    let mut top_packets = MetricFamily::new(
        "xdpguard_top_blocked_packets_total",
        Kind::Counter,
        "Packets dropped by the block entries with the most drops.",
    );
    let mut top_bytes = MetricFamily::new(
        "xdpguard_top_blocked_bytes_total",
        Kind::Counter,
        "Bytes dropped by the block entries with the most drops.",
    );
    for (prefix, packet_count, byte_count) in data.top_blocked.iter() {
        let prefix = prefix.to_string();
        top_packets.add(&[("prefix", &prefix)], *packet_count);
        top_bytes.add(&[("prefix", &prefix)], *byte_count);
    }
    let mut origin_packets = MetricFamily::new(
        "xdpguard_top_origin_blocked_packets_total",
        Kind::Counter,
        "Packets dropped by block entries, summed per origin AS of the entry's network (the ASes with the most).",
    );
    let mut origin_bytes = MetricFamily::new(
        "xdpguard_top_origin_blocked_bytes_total",
        Kind::Counter,
        "Bytes dropped by block entries, summed per origin AS of the entry's network (the ASes with the most).",
    );
    for (origin, packet_count, byte_count) in data.top_origins.iter() {
        origin_packets.add(&[("origin", origin)], *packet_count);
        origin_bytes.add(&[("origin", origin)], *byte_count);
    }
    let mut build = MetricFamily::new(
        "xdpguard_build_info",
        Kind::Gauge,
        "Always 1; labels name the build.",
    );
    build.add(&[("version", version)], 1);
    let mut full = MetricFamily::new(
        "xdpguard_list_full_errors_total",
        Kind::Counter,
        "Inserts refused because the kernel list was full.",
    );
    full.add(&[], data.full_list_errors);
    let mut unknown = MetricFamily::new(
        "xdpguard_unknown_entries",
        Kind::Gauge,
        "Kernel block entries no decision accounts for, at the last reconcile.",
    );
    unknown.add(&[], data.unknown_entries);
    let mut repaired = MetricFamily::new(
        "xdpguard_reconcile_repaired_total",
        Kind::Counter,
        "Kernel entries reconcile put back or corrected (missing, wrong expiry or prefix length), and CONFIG or interface slots it put back.",
    );
    repaired.add(&[], data.repaired_total);
    let mut handled = MetricFamily::new(
        "xdpguard_unknown_entries_handled_total",
        Kind::Counter,
        "Kernel entries no decision accounted for, adopted as source recovered or removed.",
    );
    handled.add(&[("action", "adopt")], data.unknown_adopted_total);
    handled.add(&[("action", "remove")], data.unknown_removed_total);
    let mut passes = MetricFamily::new(
        "xdpguard_reconcile_passes_total",
        Kind::Counter,
        "Complete reconcile passes over the kernel lists.",
    );
    passes.add(&[], data.reconcile_passes_total);
    let mut pass_time = MetricFamily::new(
        "xdpguard_reconcile_last_pass_seconds",
        Kind::Gauge,
        "How long the last complete reconcile pass took, commands served between its chunks included.",
    )
    .seconds_from_millis();
    pass_time.add(&[], data.reconcile_last_pass_ms);
    let mut restored = MetricFamily::new(
        "xdpguard_state_dir_restored_total",
        Kind::Counter,
        "Times the state directory or its log was found gone, recreated and rewritten from memory.",
    );
    restored.add(&[], data.state_dir_restored_total);
    exposition::render(vec![
        packets,
        bytes,
        entries,
        capacity,
        decisions,
        top_packets,
        top_bytes,
        origin_packets,
        origin_bytes,
        build,
        full,
        unknown,
        repaired,
        handled,
        passes,
        pass_time,
        restored,
    ])
}

/// The label pair of a counter: (family, verdict).
pub const fn stat_labels(stat: Stat) -> (&'static str, &'static str) {
    match stat {
        Stat::Ipv4Pass => ("ipv4", "pass"),
        Stat::Ipv4Drop => ("ipv4", "drop"),
        Stat::Ipv4Allowed => ("ipv4", "allowed"),
        Stat::Ipv4WouldDrop => ("ipv4", "would_drop"),
        Stat::Ipv6Pass => ("ipv6", "pass"),
        Stat::Ipv6Drop => ("ipv6", "drop"),
        Stat::Ipv6Allowed => ("ipv6", "allowed"),
        Stat::Ipv6WouldDrop => ("ipv6", "would_drop"),
        Stat::NonIp => ("other", "non_ip"),
        Stat::Malformed => ("other", "malformed"),
        Stat::ExpiredHit => ("other", "expired_hit"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use xdpguard_common::Family;

    use super::*;
    use crate::enforce::dataplane::ListKind;
    use crate::exposition::type_lines as types;

    /// Counters for the fixture's interfaces; [`data`] leaves them out, since only the
    /// data path fills a [`Stats`].
    fn traffic() -> Vec<(&'static str, Stat, StatValue)> {
        vec![
            (
                "veth-b",
                Stat::Ipv4Drop,
                StatValue {
                    packets: 7,
                    bytes: 700,
                },
            ),
            (
                "veth-fw",
                Stat::Ipv6Pass,
                StatValue {
                    packets: 9,
                    bytes: 900,
                },
            ),
        ]
    }

    /// What the owner might read: two lists, two decision sources, two top entries.
    pub(crate) fn data() -> MetricsData {
        MetricsData {
            interfaces: Vec::new(),
            list_sizes: BTreeMap::from([
                (
                    ListId {
                        kind: ListKind::BlockHost,
                        family: Family::Ipv4,
                    },
                    3,
                ),
                (
                    ListId {
                        kind: ListKind::Allow,
                        family: Family::Ipv6,
                    },
                    1,
                ),
            ]),
            capacities: Capacities {
                block_host_v4: 10,
                allow_v6: 4,
                ..Capacities::default()
            },
            decisions_total: BTreeMap::from([
                (("manual".to_owned(), "block"), 3),
                (("ruleset:sshd".to_owned(), "block"), 2),
            ]),
            top_origins: Arc::new(vec![("{AS64500,AS64501}".into(), 30, 2000)]),
            top_blocked: Arc::new(vec![
                ("203.0.113.7".parse().unwrap(), 5, 50),
                ("198.51.100.0/24".parse().unwrap(), 4, 40),
            ]),
            full_list_errors: 2,
            unknown_entries: 0,
            repaired_total: 1,
            unknown_adopted_total: 3,
            unknown_removed_total: 0,
            reconcile_passes_total: 7,
            reconcile_last_pass_ms: 12,
            state_dir_restored_total: 0,
        }
    }

    #[test]
    fn render_writes_help_and_type_once_per_family_even_without_samples() {
        let empty = section("", [], &MetricsData::default());
        let names: Vec<&str> = types(&empty).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names.len(), 17, "{empty}");
        for name in names {
            let help = format!("# HELP {name} ");
            assert_eq!(empty.matches(&help).count(), 1, "{name}: {empty}");
        }
        assert!(empty.contains("# TYPE xdpguard_packets_total counter\n"));
        assert!(!empty.contains("xdpguard_packets_total{"));
    }

    #[test]
    fn render_is_sorted_and_independent_of_input_order() {
        let text = section("1.2.3", traffic(), &data());
        let mut reversed = data();
        Arc::make_mut(&mut reversed.top_blocked).reverse();
        let mut reversed_traffic = traffic();
        reversed_traffic.reverse();
        assert_eq!(text, section("1.2.3", reversed_traffic, &reversed));
        let names: Vec<&str> = types(&text).into_iter().map(|(name, _)| name).collect();
        assert!(names.is_sorted(), "{names:?}");
        // Series in label order, label names alphabetical.
        let ipv6_series = text
            .find(r#"xdpguard_packets_total{family="ipv6",interface="veth-fw",verdict="pass"} 9"#)
            .unwrap();
        let ipv4_series = text
            .find(r#"xdpguard_packets_total{family="ipv4",interface="veth-b",verdict="drop"} 7"#)
            .unwrap();
        assert!(ipv4_series < ipv6_series, "{text}");
        // What the kernel tests and dashboards look for.
        assert!(text.contains(r#"xdpguard_map_capacity{family="ipv4",list="block_host"} 10"#));
        assert!(text.contains(r#"xdpguard_decisions_total{action="block",source="manual"} 3"#));
        assert!(text.contains(r#"xdpguard_build_info{version="1.2.3"} 1"#));
        assert!(text.contains("xdpguard_list_full_errors_total 2\n"));
        assert!(text.contains(r#"xdpguard_top_blocked_bytes_total{prefix="198.51.100.0/24"} 40"#));
        assert!(text.contains(
            r#"xdpguard_top_origin_blocked_packets_total{origin="{AS64500,AS64501}"} 30"#
        ));
        assert!(text.contains(r#"xdpguard_unknown_entries_handled_total{action="adopt"} 3"#));
        assert!(text.contains("xdpguard_reconcile_passes_total 7\n"));
        assert!(text.contains("xdpguard_reconcile_last_pass_seconds 0.012\n"));
    }

    #[test]
    fn a_snapshot_renders_the_latest_published_data() {
        let snapshot = MetricsSnapshot::default();
        let reader = snapshot.clone();
        assert!(
            reader
                .render()
                .contains("xdpguard_reconcile_passes_total 0\n")
        );
        snapshot.publish(data());
        assert_eq!(reader.render(), render(&data()));
    }

    #[test]
    fn render_shows_every_counter_of_every_interface_and_the_crate_version() {
        let mut data = data();
        data.interfaces = vec![("-".to_owned(), Stats::default())];
        let text = render(&data);
        for stat in Stat::ALL {
            let (family, verdict) = stat_labels(stat);
            let series = format!(
                "xdpguard_packets_total{{family=\"{family}\",interface=\"-\",verdict=\"{verdict}\"}} 0\n"
            );
            assert!(text.contains(&series), "{series}: {text}");
        }
        let build = format!(
            "xdpguard_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
    }
}
