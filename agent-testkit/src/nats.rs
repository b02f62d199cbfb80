//! A real NATS server with JetStream (Debian's `nats-server` 2.9) in a namespace of its own,
//! the hub, joined to each agent's firewall namespace by a veth pair of its own on
//! 2001:db8:c:N::/64 (documentation range). Nothing touches the root namespace; the hub
//! namespace, and with it every link, goes on drop, and the server is killed.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{
    daemon::{Children, spawn_in_ns},
    netns::{Sandbox, run, within_ns},
};

pub const NATS_PORT: u16 = 4222;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct NatsHub {
    pub ns: String,
    dir: PathBuf,
    /// Extra server arguments (`--user`, `--pass`, ...).
    args: Vec<String>,
    server: Option<Children>,
    links: AtomicU32,
}

impl NatsHub {
    /// Create the hub namespace and start the server, JetStream stored under `dir`.
    ///
    /// # Panics
    /// When Debian's nats-server is missing (`cargo xtask setup` installs it) or does not
    /// answer within 30 s.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`Self::start`] with extra nats-server arguments (`--user u --pass p`).
    pub fn start_with(dir: &Path, args: &[&str]) -> Self {
        assert!(
            Path::new("/usr/sbin/nats-server").exists(),
            "Debian's nats-server package (cargo xtask setup installs it)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut hub = Self {
            ns: format!("xdpg-nats-{}-{n}", std::process::id()),
            dir: dir.to_path_buf(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            server: None,
            links: AtomicU32::new(1),
        };
        run(&["ip", "netns", "add", &hub.ns]);
        run(&["ip", "-n", &hub.ns, "link", "set", "lo", "up"]);
        hub.restart();
        hub
    }

    /// Join `sandbox`'s firewall namespace to the hub: `fleet0` there, 2001:db8:c:N::2.
    /// Returns the server's URL as seen from there.
    pub fn link(&self, sandbox: &Sandbox) -> String {
        let n = self.links.fetch_add(1, Ordering::Relaxed);
        let hub_if = format!("hub{n}");
        run(&[
            "ip",
            "-n",
            &sandbox.fw,
            "link",
            "add",
            "fleet0",
            "type",
            "veth",
            "peer",
            "name",
            &hub_if,
            "netns",
            &self.ns,
        ]);
        let net = format!("2001:db8:c:{n:x}");
        for (ns, dev, addr) in [
            (sandbox.fw.as_str(), "fleet0", format!("{net}::2/64")),
            (self.ns.as_str(), hub_if.as_str(), format!("{net}::1/64")),
        ] {
            run(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        format!("nats://[{net}::1]:{NATS_PORT}")
    }

    /// Kill the server (its JetStream store stays).
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// Start (or start again) the server and wait until it takes connections.
    pub fn restart(&mut self) {
        self.server = None;
        let store = self.dir.join("jetstream");
        let port = NATS_PORT.to_string();
        let mut args: Vec<&std::ffi::OsStr> = ["-js".as_ref(), "-sd".as_ref(), store.as_os_str()]
            .into_iter()
            .chain(["-a", "::", "-p", &port].map(std::ffi::OsStr::new))
            .collect();
        args.extend(self.args.iter().map(std::ffi::OsStr::new));
        self.server = Some(spawn_in_ns(
            &self.ns,
            "nats-server",
            &args,
            &self.dir.join("nats.log"),
        ));
        let started = Instant::now();
        while !within_ns(&self.ns, || {
            std::net::TcpStream::connect(("::1", NATS_PORT)).is_ok()
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nats-server did not answer: {}",
                std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The hub's own URL (from inside the hub namespace).
    pub fn local_url() -> String {
        format!("nats://[::1]:{NATS_PORT}")
    }
}

impl Drop for NatsHub {
    fn drop(&mut self) {
        self.server = None;
        // Deleting the namespace destroys its ends of the links, and with them the others.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
