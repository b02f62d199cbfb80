//! A listener's section of the metrics page: how its connections ended, and how many are open.
use super::{ListenerStats, Outcome};
use crate::exposition::{self, Kind, MetricFamily};

/// The names and help of one listener's two families.
pub struct Names {
    pub ended: &'static str,
    pub ended_help: &'static str,
    pub open: &'static str,
    pub open_help: &'static str,
}

/// Every outcome is a series, zero or not, so the page's shape does not change under attack.
pub fn render(names: &Names, stats: &ListenerStats) -> String {
    let mut ended = MetricFamily::new(names.ended, Kind::Counter, names.ended_help);
    for outcome in Outcome::ALL {
        ended.add(&[("outcome", outcome.name())], stats.ended(outcome));
    }
    let mut open = MetricFamily::new(names.open, Kind::Gauge, names.open_help);
    open.add(&[], stats.open());
    exposition::render(vec![ended, open])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: Names = Names {
        ended: "xdpguard_test_connections_total",
        ended_help: "Connections, by how they ended.",
        open: "xdpguard_test_connections_open",
        open_help: "Connections open.",
    };

    #[test]
    fn every_outcome_is_a_series() {
        let stats = ListenerStats::default();
        stats.count(Outcome::Shed);
        stats.count(Outcome::Shed);
        let page = render(&NAMES, &stats);
        assert!(
            page.contains("xdpguard_test_connections_total{outcome=\"shed\"} 2\n"),
            "{page}"
        );
        assert!(page.contains("xdpguard_test_connections_total{outcome=\"answered\"} 0\n"));
        assert!(page.contains("xdpguard_test_connections_open 0\n"));
        assert_eq!(
            exposition::type_lines(&page),
            [
                ("xdpguard_test_connections_open", "gauge"),
                ("xdpguard_test_connections_total", "counter")
            ]
        );
    }
}
