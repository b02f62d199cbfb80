//! A real Prometheus (Debian's package) in the sandbox's firewall namespace, on loopback,
//! scraping the daemon's metrics every second; killed on drop.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{
    daemon::{Children, http_get},
    netns::Sandbox,
};

/// A running Prometheus.
pub struct Prometheus {
    /// Its HTTP port on the firewall namespace's loopback.
    pub port: u16,
    log: PathBuf,
    _server: Children,
}

impl Prometheus {
    /// Start one with its configuration, data and log under `dir`, scraping
    /// `127.0.0.1:metrics_port` and evaluating `rule_files` every second.
    ///
    /// # Panics
    /// When Debian's prometheus is not installed (`cargo xtask setup` installs it) or cannot
    /// be started.
    pub fn start(
        sandbox: &Sandbox,
        dir: &Path,
        metrics_port: u16,
        port: u16,
        rule_files: &[&Path],
    ) -> Self {
        let binary = ["/usr/bin/prometheus", "/usr/sbin/prometheus"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("Debian's prometheus package (cargo xtask setup installs it)");
        let rules: String = rule_files
            .iter()
            .map(|path| format!("  - {}\n", path.display()))
            .collect();
        let rules = if rules.is_empty() {
            String::new()
        } else {
            format!("rule_files:\n{rules}")
        };
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rules}scrape_configs:\n  - job_name: xdpguard\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let server = Command::new("ip")
            .args(["netns", "exec", &sandbox.fw, binary])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            port,
            log,
            _server: Children(vec![server]),
        }
    }

    /// The JSON answer of the HTTP API at `path` (for example `/api/v1/query?query=...`,
    /// already URL-encoded), if there is one.
    pub fn api(&self, sandbox: &Sandbox, path: &str) -> Option<serde_json::Value> {
        let body = http_get(sandbox, self.port, path)?;
        serde_json::from_str(&body).ok()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
