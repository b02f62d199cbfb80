//! Part of `cargo xtask bench scoring` (root): latency from a log line being appended to its
//! source's entry being in the kernel map, p50 and p99 over 1,000 lines, idle and while another
//! writer floods the same log with 100k unrelated lines per second.
use std::{
    io::Write as _,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use xdpguard::{
    enforce::dataplane::{Capacities, Dataplane},
    prefix::Prefix,
};
use xdpguard_testkit::{
    daemon::{Daemon, Workdir},
    netns::{FW_IF, Sandbox},
    xdpguard_binary,
};

const SAMPLES: usize = 1000;
const FLOOD_LINES_PER_SECOND: usize = 100_000;

fn append(path: &std::path::Path, text: &[u8]) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text).unwrap();
}

/// Append one line per sample and time until its entry is in the kernel.
fn measure(
    log: &std::path::Path,
    dataplane: &Dataplane,
    base: u32,
    daemon: &Daemon,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let addr: IpAddr = format!("2001:db8:1:{base:x}::{:x}", i + 1).parse().unwrap();
        let prefix = Prefix::host(addr);
        let started = Instant::now();
        append(log, format!("lat {addr}\n").as_bytes());
        loop {
            if dataplane.block_entry(&prefix).unwrap().is_some() {
                samples.push(started.elapsed());
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{addr} never reached the kernel: {}",
                daemon.stderr()
            );
            std::hint::spin_loop();
        }
    }
    samples.sort();
    samples
}

fn percentile(samples: &[Duration], p: usize) -> f64 {
    samples[(samples.len() * p / 100).min(samples.len() - 1)].as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let sandbox = Sandbox::new("latency");
    let workdir = Workdir::new("latency", xdpguard_binary!());
    let rulesets = workdir.path.join("rulesets");
    std::fs::create_dir_all(&rulesets).unwrap();
    // One line, one block: the latency of the whole path, not of reaching a threshold.
    std::fs::write(
        rulesets.join("lat.toml"),
        "[[ruleset]]\nname = \"lat\"\nmatch = '^lat (?P<address>[0-9A-Fa-f:.]+)$'\nscore = 11\n",
    )
    .unwrap();
    let log = workdir.path.join("app.log");
    std::fs::write(&log, "").unwrap();
    workdir.write_config(FW_IF, 19_498, "");
    workdir.add_log_scoring(
        &rulesets,
        &format!(
            "[scoring]\nexclude_local = false\naggregate_min = 0\nmax_tracked = 1000000\n[[inputs]]\nname = \"app\"\nfile = \"{}\"\n",
            log.display()
        ),
    );
    let daemon = Daemon::start(&sandbox, &workdir);
    let (dataplane, _) = Dataplane::open_pinned(&workdir.pin_dir(), Capacities::default()).unwrap();

    let idle = measure(&log, &dataplane, 1, &daemon);

    // A second writer: 1,000 unrelated lines every 10 ms, bounded by the measurement.
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let stop = Arc::clone(&stop);
        let log = log.clone();
        std::thread::spawn(move || {
            let batch: Vec<u8> = (0..FLOOD_LINES_PER_SECOND / 100)
                .flat_map(|n| {
                    format!("Nov 22 10:00:00 host app[1]: request {n} served in 3 ms\n")
                        .into_bytes()
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut written = 0usize;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                append(&log, &batch);
                written += FLOOD_LINES_PER_SECOND / 100;
                std::thread::sleep(Duration::from_millis(10));
            }
            written as f64 / started.elapsed().as_secs_f64()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let flooded = measure(&log, &dataplane, 2, &daemon);
    stop.store(true, Ordering::Relaxed);
    let flood_rate = flooder.join().unwrap();
    drop(daemon);

    println!("\n| condition | p50 (ms) | p99 (ms) | max (ms) |\n|---|---:|---:|---:|");
    for (name, samples) in [
        ("idle", &idle),
        (
            &*format!("flood of {flood_rate:.0} other lines/s"),
            &flooded,
        ),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            percentile(samples, 50),
            percentile(samples, 99),
            samples.last().unwrap().as_secs_f64() * 1e3
        );
    }
}
