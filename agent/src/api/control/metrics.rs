//! The control socket's section of the metrics page: how its connections ended.
use crate::api::listener::{ListenerStats, metrics};

const NAMES: metrics::Names = metrics::Names {
    ended: "xdpguard_control_connections_total",
    ended_help: "Connections to the control socket, by how they ended: answered, slow_reader \
                 (answer not taken in time), timed_out (request not complete in time), \
                 too_large, shed (closed to serve a newer one), refused (all full), denied \
                 (not root), abandoned (the client left).",
    open: "xdpguard_control_connections_open",
    open_help: "Connections to the control socket open now.",
};

/// The section, from [`super::ControlServer::stats`].
pub fn render(stats: &ListenerStats) -> String {
    metrics::render(&NAMES, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::type_lines;

    #[test]
    fn section_names_the_control_socket() {
        let page = render(&ListenerStats::default());
        assert_eq!(
            type_lines(&page),
            [
                ("xdpguard_control_connections_open", "gauge"),
                ("xdpguard_control_connections_total", "counter")
            ]
        );
        assert!(page.contains("xdpguard_control_connections_total{outcome=\"refused\"} 0\n"));
    }
}
