//! A real CrowdSec local API (Debian's `crowdsec`, LAPI only: `-no-cs`) in the sandbox's
//! firewall namespace, on loopback, with its configuration, SQLite database and credentials
//! in a scratch directory; a machine account for `cscli` and one bouncer key. Killed on drop;
//! the scratch directory goes with the test's work directory.
use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::{
    daemon::{Children, spawn_in_ns},
    netns::{Sandbox, Side},
};

/// A running LAPI.
pub struct Crowdsec {
    pub port: u16,
    dir: PathBuf,
    config: PathBuf,
    key: String,
    server: Option<Children>,
}

impl Crowdsec {
    /// Set one up under `dir` (created) listening on `127.0.0.1:port` in the firewall
    /// namespace, and start it.
    ///
    /// # Panics
    /// When Debian's crowdsec is not installed (`cargo xtask setup` installs it) or does not
    /// come up within 30 s.
    pub fn start(sandbox: &Sandbox, dir: &Path, port: u16) -> Self {
        assert!(
            Path::new("/usr/bin/crowdsec").exists() && Path::new("/usr/bin/cscli").exists(),
            "Debian's crowdsec package (cargo xtask setup installs it)"
        );
        for sub in ["data", "hub", "notifications"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let profiles = dir.join("profiles.yaml");
        std::fs::write(
            &profiles,
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )
        .unwrap();
        std::fs::write(dir.join("simulation.yaml"), "simulation: false\n").unwrap();
        let credentials = dir.join("local_api_credentials.yaml");
        std::fs::write(&credentials, "").unwrap();
        let d = dir.display();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n  working_dir: .\n\
                 config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\n  hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n  notification_dir: {d}/notifications/\n  plugin_dir: /usr/lib/crowdsec/plugins/\n\
                 cscli:\n  output: json\n\
                 db_config:\n  log_level: info\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: true\n\
                 api:\n  client:\n    insecure_skip_verify: false\n    credentials_path: {d}/local_api_credentials.yaml\n  server:\n    log_level: info\n    listen_uri: 127.0.0.1:{port}\n    profiles_path: {d}/profiles.yaml\n    trusted_ips:\n      - 127.0.0.1\n\
                 prometheus:\n  enabled: false\n"
            ),
        )
        .unwrap();
        let mut crowdsec = Self {
            port,
            dir: dir.to_path_buf(),
            config,
            key: String::new(),
            server: None,
        };
        let machine = crowdsec.cscli(
            sandbox,
            &[
                "machines",
                "add",
                "xdpguard-test",
                "--auto",
                "--force",
                "-f",
                credentials.to_str().unwrap(),
            ],
        );
        assert!(machine.status.success(), "cscli machines add: {machine:?}");
        crowdsec.key = crowdsec.add_bouncer(sandbox, "xdpguard");
        crowdsec.restart(sandbox);
        crowdsec
    }

    /// A new bouncer's API key (`cscli bouncers add NAME -o raw`).
    ///
    /// # Panics
    /// When cscli fails.
    pub fn add_bouncer(&self, sandbox: &Sandbox, name: &str) -> String {
        let out = self.cscli(sandbox, &["bouncers", "add", name, "-o", "raw"]);
        assert!(out.status.success(), "cscli bouncers add: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The bouncer key made at start.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `http://127.0.0.1:PORT/`, as seen from the firewall namespace.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Run `cscli` with this instance's configuration, in the firewall namespace.
    pub fn cscli(&self, sandbox: &Sandbox, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &sandbox.fw, "cscli", "-c"])
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Freeze (SIGSTOP) or thaw (SIGCONT) the LAPI: a measurement that must not count its work.
    pub fn pause(&self, frozen: bool) {
        if let Some(children) = &self.server {
            signal_all(children, frozen);
        }
    }

    /// Stop the LAPI (its database stays).
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// Start (or start again) the LAPI and wait until it answers.
    ///
    /// # Panics
    /// When it does not answer within 30 s.
    pub fn restart(&mut self, sandbox: &Sandbox) {
        self.server = None;
        self.server = Some(spawn_in_ns(
            &sandbox.fw,
            "crowdsec",
            &["-c".as_ref(), self.config.as_os_str(), "-no-cs".as_ref()],
            &self.dir.join("crowdsec.log"),
        ));
        let started = Instant::now();
        while self
            .get(sandbox, "/v1/decisions/stream?startup=true", &self.key)
            .is_none()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "crowdsec did not answer on port {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.join("crowdsec.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path` with `X-Api-Key: key`: the status code and the body, or `None` when
    /// nothing answers.
    pub fn get(&self, sandbox: &Sandbox, path: &str, key: &str) -> Option<(u16, Vec<u8>)> {
        let port = self.port;
        sandbox.within(Side::Firewall, || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            write!(
                stream,
                "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Api-Key: {key}\r\nUser-Agent: xdpguard-test\r\n\r\n"
            )
            .ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).ok()?;
            let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&answer[..split]).into_owned();
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            Some((status, answer[split + 4..].to_vec()))
        })
    }
}

/// SIGSTOP (`frozen`) or SIGCONT every child.
pub fn signal_all(children: &Children, frozen: bool) {
    let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
    for child in &children.0 {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own child.
            let _ = unsafe { libc::kill(pid, signal) };
        }
    }
}
