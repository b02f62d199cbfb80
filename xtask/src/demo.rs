//! `cargo xtask run` without arguments: the sandbox demo.
//!
//! Two namespaces joined by a veth pair (`xdpguard_testkit::netns`, shared with the tests):
//! the daemon guards the firewall side; from the other side a legitimate client and three
//! attackers send bounded ping floods. The attackers also fail SSH logins: the demo writes the
//! lines sshd would write to a log the daemon follows, the sshd ruleset scores them, and the
//! attackers get blocked by their log score. Later a bounded UDP flood from 64 addresses of
//! one IPv6 /64 (each under the volume limit, together over it) gets the /64 blocked by the
//! volume detector. A live summary shows entries, drops and the top prefixes; the daemon
//! records its history every two seconds (origin ASes from a small RIS whois dump of the
//! documentation ranges), and the demo ends by writing `xdpguard report --html` of its own
//! run. Everything is torn down after a bounded time or on Ctrl-C.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use xdpguard_testkit::{
    frames,
    netns::{FW_IF, FW_V4, Sandbox, Side},
};

const LEGITIMATE: &str = "203.0.113.10";
const ATTACKERS: [&str; 3] = ["203.0.113.66", "203.0.113.67", "203.0.113.68"];
const DEMO_SECONDS: u64 = 30;
/// The flood: 64 sources spread evenly over 2001:db8:a:bad::/64, from second 8 to 20.
const FLOOD_SOURCES: u64 = 64;
const FLOOD_PPS: u64 = FLOOD_SOURCES * 40;
const FLOOD_FROM: Duration = Duration::from_secs(8);
const FLOOD_SECONDS: u64 = 12;

/// Temporary directory with a private bpffs; unmounted and removed on drop.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.join("bpf")).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Child processes killed on drop.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The demo's RIS whois dump: documentation ranges under private-use AS numbers.
const DEMO_ORIGINS: &str = "% origin\tprefix\tseen-by-peers (the demo's own table)\n\
    64500\t203.0.113.0/24\t310\n\
    64511\t203.0.113.64/26\t42\n\
    64496\t198.51.100.0/24\t250\n\
    64512\t2001:db8:a::/48\t120\n";

/// Where the demo's report goes: beside the build, kept after the demo.
pub fn report_path(root: &Path) -> PathBuf {
    root.join("target/xdpguard-demo-report.html")
}

pub fn run(binary: &Path, rulesets: &Path, report: &Path) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    println!("demo: creating namespaces and a veth pair (198.51.100.0/24, 203.0.113.0/24 only)");
    let sandbox = Sandbox::new("demo");
    for source in std::iter::once(LEGITIMATE).chain(ATTACKERS) {
        sandbox.add_source(source.parse::<IpAddr>()?);
    }
    let work = Workdir(std::env::temp_dir().join(format!("xdpguard-demo-{}", std::process::id())));
    std::fs::create_dir_all(work.0.join("bpf"))?;
    if !Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(work.0.join("bpf"))
        .status()?
        .success()
    {
        bail!("mounting a bpffs for the demo's pins failed");
    }
    let socket = work.0.join("control.sock");
    let config = work.0.join("xdpguard.toml");
    let auth_log = work.0.join("auth.log");
    std::fs::write(&auth_log, "")?;
    let origins = work.0.join("riswhoisdump.txt");
    std::fs::write(&origins, DEMO_ORIGINS)?;
    let history = work.0.join("history.sqlite");
    std::fs::write(
        &config,
        format!(
            r#"pin_dir = "{}"
state_dir = "{}"
control_socket = "{}"
rulesets_dir = "{}"

[[interfaces]]
name = "{FW_IF}"
mode = "auto"

[metrics]
listen = "127.0.0.1:9477"

[scoring]
# The demo's addresses are documentation ranges, which production configs never score.
exclude_local = false
ban = "10m"

[[inputs]]
name = "auth"
file = "{}"
rulesets = ["sshd"]

[volume]
interval = "2s"
top = 6

[[volume.detectors]]
name = "flood"
# Three quarters of the flood: its /64 is over, each half of it is not.
packets_per_second = {}
action = "block"
ban = "10m"

[origins]
files = ["{}"]

[history]
path = "{}"
interval = "2s"
"#,
            work.0.join("bpf/xdpguard").display(),
            work.0.join("state").display(),
            socket.display(),
            rulesets.display(),
            auth_log.display(),
            FLOOD_PPS * 3 / 4,
            origins.display(),
            history.display(),
        ),
    )?;
    let daemon_log = work.0.join("daemon.log");
    let mut children = Children(Vec::new());
    children.0.push(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", sandbox.fw))
            .arg(binary)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&daemon_log)?)
            .spawn()
            .context("starting the daemon")?,
    );
    let cli = |args: &[&str]| -> Result<String> {
        let out = Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "xdpguard {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let started = Instant::now();
    while cli(&["status"]).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "the daemon did not come up: {}",
                std::fs::read_to_string(&daemon_log)?
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("demo: daemon up, XDP attached to {FW_IF} in the firewall namespace");

    // Bounded traffic: each source pings for at most DEMO_SECONDS.
    let count = (DEMO_SECONDS * 5).to_string();
    for source in std::iter::once(LEGITIMATE).chain(ATTACKERS) {
        children.0.push(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    sandbox.ns(Side::Attacker),
                    "ping",
                    "-q",
                    "-i",
                    "0.2",
                    "-c",
                    &count,
                    "-w",
                ])
                .arg(DEMO_SECONDS.to_string())
                .args(["-I", source, FW_V4])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    std::thread::scope(|scope| -> Result<()> {
        let flood = scope.spawn(|| flood(&sandbox, started, &stop));
        let result = summary(&cli, &auth_log, started, &stop);
        let _ = flood.join();
        result
    })?;
    // The daemon's last record is at most two seconds old.
    std::thread::sleep(Duration::from_secs(3));
    let out = Command::new(binary)
        .args(["report", "--since", "1m", "--bin", "5s", "--history"])
        .arg(&history)
        .arg("--html")
        .arg(report)
        .output()?;
    println!("\ndemo: tearing down (daemon, pins, namespaces)");
    drop(children);
    drop(sandbox);
    drop(work);
    if !out.status.success() {
        bail!(
            "xdpguard report: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!(
        "demo: the report of this run (open it in a browser): {}",
        report.display()
    );
    Ok(())
}

/// The volume flood, in one-second bounded bursts until `FLOOD_SECONDS` have gone or the demo
/// stops.
fn flood(sandbox: &Sandbox, started: Instant, stop: &AtomicBool) {
    let frames: Vec<Vec<u8>> = (0..FLOOD_SOURCES)
        .map(|i| {
            let source = std::net::Ipv6Addr::from(
                (0x2001_0db8_000a_0bad_u128 << 64) | (u128::from(i) << 58 | 1),
            );
            frames::udp6(source)
        })
        .collect();
    while started.elapsed() < FLOOD_FROM {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("\ndemo: a UDP flood starts from 64 addresses of 2001:db8:a:bad::/64");
    for _ in 0..FLOOD_SECONDS {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let per_second = usize::try_from(FLOOD_PPS).unwrap_or(usize::MAX);
        let _ = sandbox.send_frames(&frames, Some(FLOOD_PPS), per_second);
    }
}

fn summary(
    cli: &dyn Fn(&[&str]) -> Result<String>,
    auth_log: &Path,
    started: Instant,
    stop: &AtomicBool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(DEMO_SECONDS);
    let mut round = 0;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        // From the 2nd second on, each attacker fails one SSH login per round (5 points
        // each); the legitimate client logs in. Over 10 points, the ruleset blocks.
        if started.elapsed() > Duration::from_secs(2) && round < 4 {
            round += 1;
            let mut lines = String::new();
            for (i, attacker) in ATTACKERS.iter().enumerate() {
                lines.push_str(&format!(
                    "Nov 22 10:00:{round:02} fw sshd[{}]: Failed password for root from {attacker} port 4{i}000 ssh2\n",
                    100 + i
                ));
            }
            lines.push_str(&format!(
                "Nov 22 10:00:{round:02} fw sshd[99]: Accepted publickey for deploy from {LEGITIMATE} port 50000 ssh2: ED25519 SHA256:demo\n"
            ));
            let mut file = std::fs::OpenOptions::new().append(true).open(auth_log)?;
            std::io::Write::write_all(&mut file, lines.as_bytes())?;
            println!(
                "\ndemo: sshd logged {} failed logins and one good one",
                ATTACKERS.len()
            );
        }
        println!("\n--- {:>2}s ---", started.elapsed().as_secs());
        print!("{}", cli(&["list", "--source", "ruleset:sshd"])?);
        let volume_blocks = cli(&["list", "--source", "volume:flood"])?;
        if volume_blocks.lines().count() > 1 {
            print!("{volume_blocks}");
        }
        let status = cli(&["status"])?;
        if let Some(counters) = status.split("Counters:").nth(1) {
            print!("{}", counters.split("\n\n").next().unwrap_or(""));
            println!();
        }
        print!("{}", cli(&["top", "--once"])?);
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}
