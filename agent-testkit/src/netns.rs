//! A sandbox of two network namespaces joined by a veth pair, for tests, benchmarks and the
//! demo. Nothing here touches the root namespace's interfaces: the veth pair is created inside
//! the namespaces, and everything is deleted on drop, also when a test panics.
//!
//! Layout (documentation ranges only):
//! - `fw` (the firewall host): `veth-fw`, 198.51.100.1/24 and 2001:db8:f::1/64; routes to the
//!   attacker source ranges 203.0.113.0/24 and 2001:db8:a::/48 via the peer.
//! - `atk` (attackers and a legitimate client): `veth-atk`, 198.51.100.2/24 and
//!   2001:db8:f::2/64, plus whatever source addresses a test adds with [`Sandbox::add_source`].

use std::{
    fs::File,
    net::IpAddr,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

pub const FW_IF: &str = "veth-fw";
pub const ATK_IF: &str = "veth-atk";
pub const FW_V4: &str = "198.51.100.1";
pub const ATK_V4: &str = "198.51.100.2";
pub const FW_V6: &str = "2001:db8:f::1";
pub const ATK_V6: &str = "2001:db8:f::2";
const FW_MAC: &str = "02:00:00:00:0f:01";
const ATK_MAC: &str = "02:00:00:00:0a:01";

/// Which side of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Firewall,
    Attacker,
}

pub struct Sandbox {
    pub fw: String,
    pub atk: String,
}

pub(crate) fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|err| panic!("starting {args:?}: {err}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Sandbox {
    /// Create the two namespaces and the veth pair between them.
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{tag}-{}-{n}", std::process::id());
        let sandbox = Self {
            fw: format!("xdpg-fw-{id}"),
            atk: format!("xdpg-atk-{id}"),
        };
        // From here on Drop cleans up whatever was created.
        run(&["ip", "netns", "add", &sandbox.fw]);
        run(&["ip", "netns", "add", &sandbox.atk]);
        // Created inside `fw`, peer straight into `atk`: never visible in the root namespace.
        run(&[
            "ip",
            "-n",
            &sandbox.fw,
            "link",
            "add",
            FW_IF,
            "address",
            FW_MAC,
            "type",
            "veth",
            "peer",
            "name",
            ATK_IF,
            "address",
            ATK_MAC,
            "netns",
            &sandbox.atk,
        ]);
        for (ns, dev, v4, v6) in [
            (&sandbox.fw, FW_IF, FW_V4, FW_V6),
            (&sandbox.atk, ATK_IF, ATK_V4, ATK_V6),
        ] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // Static neighbours: no ARP or ND lands in the counters a test compares.
        for (ns, dev, addr, mac) in [
            (&sandbox.atk, ATK_IF, FW_V4, FW_MAC),
            (&sandbox.atk, ATK_IF, FW_V6, FW_MAC),
            (&sandbox.fw, FW_IF, ATK_V4, ATK_MAC),
            (&sandbox.fw, FW_IF, ATK_V6, ATK_MAC),
        ] {
            run(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        run(&[
            "ip",
            "-n",
            &sandbox.fw,
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            ATK_V4,
        ]);
        run(&[
            "ip",
            "-n",
            &sandbox.fw,
            "-6",
            "route",
            "add",
            "2001:db8:a::/48",
            "via",
            ATK_V6,
        ]);
        sandbox
    }

    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Firewall => &self.fw,
            Side::Attacker => &self.atk,
        }
    }

    /// Give the attacker side another source address (203.0.113.0/24 or 2001:db8:a::/48).
    pub fn add_source(&self, addr: IpAddr) {
        let cidr = match addr {
            IpAddr::V4(_) => format!("{addr}/32"),
            IpAddr::V6(_) => format!("{addr}/128"),
        };
        let mut args = vec!["ip", "-n", &self.atk, "addr", "add", &cidr, "dev", ATK_IF];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        run(&args);
    }

    /// Run a command inside one side's namespace.
    pub fn exec(&self, side: Side, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.ns(side)])
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("starting {args:?}: {err}"))
    }

    /// `ping` `count` times from `source` (an attacker-side address) to `target`, 0.2 s apart,
    /// waiting at most a second for each reply. Returns how many replies came back.
    pub fn ping(&self, source: IpAddr, target: &str, count: usize) -> usize {
        let family = if source.is_ipv4() { "-4" } else { "-6" };
        let out = self.exec(
            Side::Attacker,
            &[
                "ping",
                family,
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                &source.to_string(),
                target,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let received = text
            .lines()
            .find_map(|line| {
                line.split(", ")
                    .find_map(|part| part.strip_suffix(" received"))
            })
            .unwrap_or_else(|| panic!("no ping summary in {text}"));
        received.trim().parse().unwrap()
    }

    /// Send `total` raw Ethernet frames, round-robin over `frames`, from the attacker side's
    /// interface: at about `per_second` frames a second (paced on the clock, so a late wake-up
    /// is caught up rather than lost), or with `None` as fast as the veth takes them (a full
    /// queue gets a moment to drain; that frame is dropped). Bounded in count, and in time by
    /// `total / per_second` plus a few seconds (a minute unpaced). Returns how many the kernel
    /// took.
    pub fn send_frames(&self, frames: &[Vec<u8>], per_second: Option<u64>, total: usize) -> usize {
        use std::time::{Duration, Instant};
        assert!(per_second != Some(0) && !frames.is_empty());
        self.within(Side::Attacker, || {
            // SAFETY: plain socket(2); protocol 0: the socket receives nothing.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
            // SAFETY: a fresh descriptor we own.
            let socket =
                unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let name = std::ffi::CString::new(ATK_IF).unwrap();
            // SAFETY: valid C string.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(ifindex != 0, "{ATK_IF} not in the attacker namespace");
            // SAFETY: a zeroed sockaddr_ll is valid; the fields that matter are set below.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
            addr.sll_ifindex = i32::try_from(ifindex).unwrap();
            addr.sll_halen = 6;
            let addr_len = u32::try_from(size_of::<libc::sockaddr_ll>()).unwrap();
            let started = Instant::now();
            let limit = per_second.map_or(Duration::from_secs(60), |rate| {
                Duration::from_secs(total as u64 / rate + 5)
            });
            let mut sent = 0;
            for (i, frame) in frames.iter().cycle().take(total).enumerate() {
                if let Some(rate) = per_second {
                    // Frame i is due at i / rate seconds.
                    let due = Duration::from_nanos(i as u64 * 1_000_000_000 / rate);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                if per_second.is_some() || i % 4096 == 0 {
                    assert!(started.elapsed() < limit, "sending took over {limit:?}");
                }
                // SAFETY: valid buffer and address for sendto(2).
                let rc = unsafe {
                    libc::sendto(
                        socket.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const addr).cast(),
                        addr_len,
                    )
                };
                if rc >= 0 {
                    sent += 1;
                } else {
                    let err = std::io::Error::last_os_error();
                    // The veth queue is full: give the receiving side a moment.
                    assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS), "sendto: {err}");
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            sent
        })
    }

    /// Run `f` on a thread that has entered one side's namespace. Sockets and netlink handles
    /// created in `f` belong to that namespace for their whole life.
    pub fn within<T: Send>(&self, side: Side, f: impl FnOnce() -> T + Send) -> T {
        within_ns(self.ns(side), f)
    }
}

/// Run `f` on a thread that has entered the named network namespace (`/run/netns/NAME`).
pub fn within_ns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
                let here = || std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
                let outside = here();
                // SAFETY: a valid namespace fd; affects only this thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                // Never run the closure anywhere but inside the sandbox.
                let inside = here();
                assert!(inside != outside && inside == ns.metadata().unwrap().ino());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Deleting a namespace destroys its end of the veth pair, and with it the other end.
        for ns in [&self.fw, &self.atk] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
