//! The process section of the metrics page, and tests of the whole page as the daemon's
//! scrape handler puts it together from every component's section.
use std::time::{SystemTime, UNIX_EPOCH};

use crate::exposition::{self, Kind, MetricFamily};

/// `process_start_time_seconds`, the standard family uptime and restart alerts use. Before
/// the epoch reads as 0.
pub fn render(start_time: SystemTime) -> String {
    let mut start = MetricFamily::new(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
    );
    let seconds = start_time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    start.add(&[], seconds);
    exposition::render(vec![start])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::exposition::type_lines as types;
    use crate::{detect::logs, enforce::dataplane::Stats, enforce::owner};

    /// The owner's, log scoring's and the process section back to back, as the daemon serves
    /// them.
    fn full_page() -> String {
        let mut data = owner::metrics::tests::data();
        data.interfaces = vec![("veth-b".to_owned(), Stats::default())];
        owner::metrics::render(&data)
            + &logs::metrics::render(&logs::metrics::tests::stats())
            + &render(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    #[test]
    fn page_has_help_and_type_once_per_family() {
        let page = full_page();
        let names: Vec<&str> = types(&page).into_iter().map(|(name, _)| name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "a family twice: {page}");
        for name in names {
            let help = format!("# HELP {name} ");
            assert_eq!(page.matches(&help).count(), 1, "{name}: {page}");
        }
    }

    #[test]
    fn page_counters_end_in_total_and_gauges_do_not() {
        let page = full_page();
        let types = types(&page);
        assert!(types.len() >= 16, "{page}");
        for (name, kind) in types {
            assert!(kind == "counter" || kind == "gauge", "{name} {kind}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
        }
    }

    #[test]
    fn render_gives_the_start_time_in_seconds() {
        assert!(full_page().contains("process_start_time_seconds 1700000000\n"));
        assert!(
            render(UNIX_EPOCH - Duration::from_secs(1))
                .ends_with("\nprocess_start_time_seconds 0\n")
        );
    }

    /// `promtool check metrics` (Debian's prometheus package) lints the whole page.
    #[test]
    #[ignore = "needs promtool: run by `cargo xtask test`, after `cargo xtask setup`"]
    fn promtool_accepts_the_page() {
        use std::{
            io::Write as _,
            process::{Command, Stdio},
        };
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian's prometheus package)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(full_page().as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
            "promtool: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
