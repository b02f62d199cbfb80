//! The volume detectors' section of the metrics page, from the engine's [`VolumeSnapshot`]:
//! the last interval's top prefixes (at most `volume.top` series per source, so cardinality
//! stays bounded), hot prefixes, alerts, and the flow collector's per-exporter counters.
use super::engine::VolumeSnapshot;
use crate::exposition::{self, Kind, MetricFamily};

/// The volume section of the page.
pub fn render(snapshot: &VolumeSnapshot) -> String {
    let mut bytes = MetricFamily::new(
        "xdpguard_volume_bytes",
        Kind::Gauge,
        "Bytes a top prefix sent in the last volume interval, by counting source (xdp or flow), family and prefix.",
    );
    let mut packets = MetricFamily::new(
        "xdpguard_volume_packets",
        Kind::Gauge,
        "Packets a top prefix sent in the last volume interval, by counting source, family and prefix.",
    );
    for row in &snapshot.top {
        let labels = [
            ("source", row.source.as_str()),
            ("family", &row.family),
            ("prefix", &row.prefix),
        ];
        bytes.add(&labels, row.bytes);
        packets.add(&labels, row.packets);
    }
    let mut interval = MetricFamily::new(
        "xdpguard_volume_interval_seconds",
        Kind::Gauge,
        "Length of the last volume interval.",
    )
    .seconds_from_millis();
    interval.add(&[], snapshot.interval_ms);
    let mut sources = MetricFamily::new(
        "xdpguard_volume_tracked_sources",
        Kind::Gauge,
        "Distinct source addresses counted in the last volume interval, by counting source.",
    );
    let mut untracked = MetricFamily::new(
        "xdpguard_volume_untracked_bytes",
        Kind::Gauge,
        "Bytes of sources past volume.max_sources in the last interval (counted in totals, not per prefix).",
    );
    let mut heap = MetricFamily::new(
        "xdpguard_volume_trie_bytes",
        Kind::Gauge,
        "Heap held by the prefix tries of a counting source.",
    );
    for totals in &snapshot.totals {
        let labels = [("source", totals.source.as_str())];
        sources.add(&labels, totals.sources);
        untracked.add(&labels, totals.overflow_bytes);
        heap.add(&labels, totals.heap_bytes);
    }
    let mut hot = MetricFamily::new(
        "xdpguard_volume_hot_prefixes",
        Kind::Gauge,
        "Prefixes a volume detector holds over its limit now, by detector and action.",
    );
    for row in &snapshot.hot {
        hot.add(&[("detector", &row.detector), ("action", &row.action)], 1);
    }
    let mut alerts = MetricFamily::new(
        "xdpguard_volume_alerts_total",
        Kind::Counter,
        "Prefixes that went over a volume detector's limit (new incidents), by family and action.",
    );
    for (family, actions) in &snapshot.alerts {
        for (action, count) in actions {
            alerts.add(&[("family", family), ("action", action)], *count);
        }
    }
    let mut overflow = MetricFamily::new(
        "xdpguard_volume_hot_overflow_total",
        Kind::Counter,
        "Prefixes over a limit that a detector did not track because it held its maximum.",
    );
    overflow.add(&[], snapshot.hot_overflow);
    let mut drain_errors = MetricFamily::new(
        "xdpguard_volume_drain_errors_total",
        Kind::Counter,
        "Failed reads of the XDP program's per-source volume maps.",
    );
    drain_errors.add(&[], snapshot.drain_errors);
    let mut sampling = MetricFamily::new(
        "xdpguard_volume_xdp_sampling_exponent",
        Kind::Gauge,
        "While the XDP volume maps overflow, a new source is counted for one frame in 2^n, weighted 2^n (0: every source), by family.",
    );
    for (family, exponent) in ["ipv4", "ipv6"].into_iter().zip(snapshot.xdp_sampling) {
        sampling.add(&[("family", family)], u64::from(exponent));
    }
    let mut datagrams = MetricFamily::new(
        "xdpguard_flow_datagrams_total",
        Kind::Counter,
        "NetFlow v9 / IPFIX datagrams received, by exporter address.",
    );
    let mut records = MetricFamily::new(
        "xdpguard_flow_records_total",
        Kind::Counter,
        "Flow records counted into the volumes, by exporter address.",
    );
    let mut filtered = MetricFamily::new(
        "xdpguard_flow_filtered_total",
        Kind::Counter,
        "Flow records left out by the direction or interface filter (or without a source), by exporter.",
    );
    let mut errors = MetricFamily::new(
        "xdpguard_flow_errors_total",
        Kind::Counter,
        "Malformed, truncated or unusable flow data, by exporter and kind.",
    );
    let mut rejected = MetricFamily::new(
        "xdpguard_flow_rejected_datagrams_total",
        Kind::Counter,
        "Flow datagrams refused because their sender is not in volume.flow.exporters.",
    );
    rejected.add(&[], snapshot.flow_rejected);
    let mut templates = MetricFamily::new(
        "xdpguard_flow_templates",
        Kind::Gauge,
        "Templates held per exporter.",
    );
    for exporter in &snapshot.exporters {
        let labels = [("exporter", exporter.exporter.as_str())];
        datagrams.add(&labels, exporter.datagrams);
        records.add(&labels, exporter.records);
        filtered.add(&labels, exporter.filtered);
        templates.add(&labels, exporter.templates);
        for (kind, count) in &exporter.errors {
            errors.add(&[("exporter", &exporter.exporter), ("kind", kind)], *count);
        }
    }
    let mut traffic = MetricFamily::new(
        "xdpguard_volume_traffic_bytes",
        Kind::Gauge,
        "Bytes of the last volume interval by direction and side of volume.local (inbound from XDP accounting when on, else flows; outbound from flows).",
    );
    let split = &snapshot.traffic;
    for (direction, side, value) in [
        ("inbound", "local", split.inbound_local),
        ("inbound", "external", split.inbound_external),
        ("outbound", "local", split.outbound_local),
        ("outbound", "external", split.outbound_external),
    ] {
        traffic.add(&[("direction", direction), ("side", side)], value);
    }
    let mut families = vec![traffic];
    if let Some(pairing) = &snapshot.pairing {
        let mut pairs = MetricFamily::new(
            "xdpguard_flow_pairs_total",
            Kind::Counter,
            "Flows judged by flow pairing, by outcome: matched (both directions), one_way and reflection (anomalies), reflection_requested, outbound_unanswered, ignored_unanswered, evicted (table full), overflow (anomaly keys full).",
        );
        let totals = &pairing.totals;
        for (outcome, value) in [
            ("matched", totals.matched),
            ("one_way", totals.one_way),
            ("reflection", totals.reflection),
            ("reflection_requested", totals.reflection_requested),
            ("outbound_unanswered", totals.outbound_unanswered),
            ("ignored_unanswered", totals.ignored_unanswered),
            ("evicted", totals.evicted),
            ("overflow", totals.overflow),
        ] {
            pairs.add(&[("outcome", outcome)], value);
        }
        let mut tracked = MetricFamily::new(
            "xdpguard_flow_pairing_tracked_flows",
            Kind::Gauge,
            "Flows (5-tuples) flow pairing waits on for their reverse direction.",
        );
        tracked.add(&[], pairing.tracked_flows);
        let mut untracked = MetricFamily::new(
            "xdpguard_flow_pairing_untracked_records_total",
            Kind::Counter,
            "Flow records flow pairing does not pair (other protocols, no destination).",
        );
        untracked.add(&[], totals.untracked);
        families.extend([pairs, tracked, untracked]);
    }
    families.extend([
        bytes,
        packets,
        interval,
        sources,
        untracked,
        heap,
        hot,
        alerts,
        overflow,
        drain_errors,
        sampling,
        datagrams,
        records,
        filtered,
        errors,
        rejected,
        templates,
    ]);
    exposition::render(families)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::detect::traffic::volume::engine::{
        ExporterRow, PairingStatus, SourceTotals, TopRow,
    };

    #[test]
    fn render_labels_top_prefixes_totals_and_exporters() {
        let snapshot = VolumeSnapshot {
            interval_ms: 1000,
            totals: vec![SourceTotals {
                source: "xdp".into(),
                sources: 3,
                ..SourceTotals::default()
            }],
            top: vec![TopRow {
                source: "xdp".into(),
                family: "ipv4".into(),
                prefix: "192.0.2.0/24".into(),
                bytes: 900,
                packets: 9,
                bytes_per_sec: 900,
                packets_per_sec: 9,
                sources: 3,
                share_bp: 10_000,
                action: None,
                detector: None,
                origin: None,
                announced: None,
            }],
            exporters: vec![ExporterRow {
                exporter: "198.51.100.1".into(),
                datagrams: 2,
                errors: BTreeMap::from([("truncated".into(), 1)]),
                ..ExporterRow::default()
            }],
            ..VolumeSnapshot::default()
        };
        let text = render(&snapshot);
        assert!(
            text.contains(
                "xdpguard_volume_bytes{family=\"ipv4\",prefix=\"192.0.2.0/24\",source=\"xdp\"} 900\n"
            ),
            "{text}"
        );
        assert!(text.contains("xdpguard_volume_tracked_sources{source=\"xdp\"} 3\n"));
        assert!(text.contains("xdpguard_volume_interval_seconds 1\n"));
        assert!(text.contains("xdpguard_flow_datagrams_total{exporter=\"198.51.100.1\"} 2\n"));
        assert!(text.contains(
            "xdpguard_flow_errors_total{exporter=\"198.51.100.1\",kind=\"truncated\"} 1\n"
        ));
        let names: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|rest| rest.split_once(' ').unwrap().0)
            .collect();
        assert!(text.contains("xdpguard_volume_xdp_sampling_exponent{family=\"ipv6\"} 0\n"));
        assert!(text.contains(
            "xdpguard_volume_traffic_bytes{direction=\"inbound\",side=\"external\"} 0\n"
        ));
        // Pairing's series only while it runs.
        assert!(!text.contains("xdpguard_flow_pairs_total"));
        assert_eq!(names.len(), 18, "{text}");
        assert!(names.is_sorted(), "{names:?}");
    }

    #[test]
    fn render_pairing_counters_and_the_traffic_split() {
        let snapshot = VolumeSnapshot {
            traffic: crate::history::model::Traffic {
                inbound_local: 5,
                outbound_external: 7,
                ..Default::default()
            },
            pairing: Some(PairingStatus {
                totals: crate::detect::traffic::flow::PairingCounts {
                    matched: 3,
                    one_way: 2,
                    ..Default::default()
                },
                tracked_flows: 9,
                truncated: 0,
            }),
            ..VolumeSnapshot::default()
        };
        let text = render(&snapshot);
        for line in [
            "xdpguard_flow_pairs_total{outcome=\"matched\"} 3\n",
            "xdpguard_flow_pairs_total{outcome=\"one_way\"} 2\n",
            "xdpguard_flow_pairs_total{outcome=\"evicted\"} 0\n",
            "xdpguard_flow_pairing_tracked_flows 9\n",
            "xdpguard_volume_traffic_bytes{direction=\"inbound\",side=\"local\"} 5\n",
            "xdpguard_volume_traffic_bytes{direction=\"outbound\",side=\"external\"} 7\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
    }
}
