//! `cargo xtask bench history`: what the history costs. Prints a Markdown report for
//! docs/BENCHMARKS.md.
//!
//! - **Write cost**: `record` (one transaction, synced: what the daemon does every interval)
//!   of a typical interval ([`TYPICAL`]: 5 rulesets × 200 sources, 4 rankings × 20 top rows,
//!   10 anomalies) and of a heavy one ([`HEAVY`]: 5 × 10,000 sources), median and p99 over
//!   [`WRITES`] intervals each on a fresh file, and the used bytes per interval.
//! - **Report time**: 30 days of 1-minute intervals (43,200 typical ones, written a day per
//!   transaction with `record_all`), then `summary` over the whole range at 1-hour, 1-day and
//!   1-week bins through a read-only store as `xdpguard report` opens it (median of
//!   [`SUMMARY_RUNS`]); the file's size.
//!
//! Sources come from a pool of [`POOL_V4`] IPv4 addresses in 2,000 /24s and [`POOL_V6`] IPv6
//! ones, one in ten IPv6; seeded. Files live under `target/bench-data/history/`, rewritten each
//! run.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use xdpguard::history::{
    model::{
        Anomaly, AnomalyKind, IntervalRecord, PacketCounts, Ranking, ScoredSources, TopRow, Traffic,
    },
    query::SummaryQuery,
    store::{HistoryStore, StoreSettings, WriteStats},
};
use xdpguard_testkit::report::{load_average, machine, median, thousands};

const SEED: u64 = 0x0415_7021;
const POOL_V4: u32 = 50_000;
const POOL_V6: u32 = 5_000;
const RULESETS: usize = 5;
const WRITES: usize = 300;
const HEAVY_WRITES: usize = 60;
const DAYS: u64 = 30;
const INTERVAL: u64 = 60;
const SUMMARY_RUNS: usize = 3;
/// 2025-06-01 00:00 UTC: the filled range starts on a day boundary.
const FIRST_START: u64 = 1_748_736_000;

/// Sources per ruleset in one interval.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    sources: usize,
}

const TYPICAL: Shape = Shape {
    name: "typical (5 × 200 sources, 4 × 20 top rows, 10 anomalies)",
    sources: 200,
};
const HEAVY: Shape = Shape {
    name: "heavy (5 × 10,000 sources, 4 × 20 top rows, 10 anomalies)",
    sources: 10_000,
};

fn source(rng: &mut StdRng) -> IpAddr {
    if rng.random_range(0..10) == 0 {
        let n = rng.random_range(0..POOL_V6);
        let net = u16::try_from(n / 4).unwrap_or(u16::MAX);
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x4000,
            net,
            0,
            0,
            0,
            u16::try_from(n % 4 + 1).unwrap_or(1),
        ))
    } else {
        // 2,000 /24s of 25 hosts each, spread over 100.64.0.0/10's neighbours.
        let n = rng.random_range(0..POOL_V4);
        let net = 0x5000_0000 + (n / 25) * 256;
        IpAddr::V4(Ipv4Addr::from(net + n % 25 + 1))
    }
}

fn record(rng: &mut StdRng, start: u64, shape: Shape) -> IntervalRecord {
    let rankings = [
        Ranking::PrefixByDrops,
        Ranking::PrefixByVolume,
        Ranking::OriginByDrops,
        Ranking::OriginByVolume,
    ];
    let mut top = Vec::new();
    for ranking in rankings {
        let by_prefix = matches!(ranking, Ranking::PrefixByDrops | Ranking::PrefixByVolume);
        for _ in 0..20 {
            let n = rng.random_range(0..500_u32);
            top.push(TopRow {
                ranking,
                key: if by_prefix {
                    format!("80.{}.{}.0/24", n / 250, n % 250)
                } else {
                    format!("AS{}", 64_500 + n)
                },
                packets: rng.random_range(1..100_000),
                bytes: rng.random_range(1..100_000_000),
                origin: by_prefix.then(|| format!("AS{}", 64_500 + n % 50)),
                announced: by_prefix.then(|| format!("80.{}.0.0/16", n / 250)),
            });
        }
    }
    IntervalRecord {
        start,
        seconds: 60,
        packets: PacketCounts {
            dropped_v4: rng.random_range(0..1_000_000),
            dropped_v6: rng.random_range(0..100_000),
            passed_v4: rng.random_range(0..10_000_000),
            passed_v6: rng.random_range(0..1_000_000),
            dropped_bytes: rng.random_range(0..1_000_000_000),
            passed_bytes: rng.random_range(0..10_000_000_000),
        },
        traffic: Traffic {
            inbound_local: rng.random_range(0..1_000_000_000),
            inbound_external: rng.random_range(0..10_000_000_000),
            outbound_local: rng.random_range(0..1_000_000_000),
            outbound_external: rng.random_range(0..10_000_000_000),
        },
        decisions: ["ruleset:sshd", "ruleset:nginx", "volume:flood", "manual"]
            .iter()
            .map(|kind| ((*kind).to_owned(), rng.random_range(0..100)))
            .collect(),
        scored: (0..RULESETS)
            .map(|i| ScoredSources {
                ruleset: format!("ruleset{i}"),
                addresses: (0..shape.sources).map(|_| source(rng)).collect(),
                overflow: 0,
            })
            .collect(),
        top,
        anomalies: (0..10)
            .map(|i| Anomaly {
                prefix: format!("80.0.{}.0/24", rng.random_range(0..200)),
                kind: if i % 2 == 0 {
                    AnomalyKind::OneWay
                } else {
                    AnomalyKind::Reflection([53, 123, 389, 1900, 11211][i / 2])
                },
                flows: rng.random_range(1..10_000),
                bytes: rng.random_range(1..10_000_000),
            })
            .collect(),
    }
}

fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            let agent = Path::new(env!("CARGO_MANIFEST_DIR"));
            agent.parent().unwrap_or(agent).join("target")
        },
        PathBuf::from,
    );
    target.join("bench-data/history")
}

fn fresh(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn p99(mut values: Vec<Duration>) -> Duration {
    values.sort();
    let index = (values.len() * 99).div_ceil(100).saturating_sub(1);
    values[index]
}

struct WriteCost {
    shape: Shape,
    median: Duration,
    p99: Duration,
    used_per_interval: u64,
    disk_per_interval: u64,
}

fn write_cost(dir: &Path, shape: Shape, writes: usize) -> anyhow::Result<WriteCost> {
    let path = dir.join("writes.sqlite");
    fresh(&path);
    let mut rng = StdRng::seed_from_u64(SEED ^ shape.sources as u64);
    let records: Vec<IntervalRecord> = (0..writes as u64)
        .map(|i| record(&mut rng, FIRST_START + i * INTERVAL, shape))
        .collect();
    let mut store = HistoryStore::open(&path, StoreSettings::default())?;
    let mut times = Vec::with_capacity(writes);
    let mut last = WriteStats::default();
    for record in &records {
        let began = Instant::now();
        last = store.record(record)?;
        times.push(began.elapsed());
    }
    let used = store.used_bytes()?;
    let cost = WriteCost {
        shape,
        median: median(times.clone()),
        p99: p99(times),
        used_per_interval: used / writes as u64,
        disk_per_interval: last.bytes_on_disk / writes as u64,
    };
    drop(store);
    fresh(&path);
    Ok(cost)
}

struct Filled {
    intervals: u64,
    fill: Duration,
    file_bytes: u64,
    /// (label, median time, bins)
    summaries: Vec<(String, Duration, usize)>,
}

fn fill_and_query(dir: &Path) -> anyhow::Result<Filled> {
    let path = dir.join("30-days.sqlite");
    fresh(&path);
    let mut rng = StdRng::seed_from_u64(SEED);
    let per_day = 86_400 / INTERVAL;
    let began = Instant::now();
    let mut store = HistoryStore::open(&path, StoreSettings::default())?;
    for day in 0..DAYS {
        let records: Vec<IntervalRecord> = (0..per_day)
            .map(|i| {
                let start = FIRST_START + (day * per_day + i) * INTERVAL;
                record(&mut rng, start, TYPICAL)
            })
            .collect();
        store.record_all(&records)?;
        eprintln!(
            "bench: day {} written ({:.0} s)",
            day + 1,
            began.elapsed().as_secs_f64()
        );
    }
    let fill = began.elapsed();
    let intervals = store.interval_count()?;
    drop(store);
    let reader = HistoryStore::open_read_only(&path)?;
    let file_bytes = reader.bytes_on_disk()?;
    let until = FIRST_START + DAYS * 86_400;
    // An origins table's shape: one origin per /16.
    let origin_of = |addr: IpAddr| match addr {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            Some(format!("AS{}", 64_000 + u32::from(a) * 256 + u32::from(b)))
        }
        IpAddr::V6(_) => None,
    };
    let origin_fn: &dyn Fn(IpAddr) -> Option<String> = &origin_of;
    let mut summaries = Vec::new();
    for (label, bin, origins) in [
        ("1 hour", 3_600, false),
        ("1 day", 86_400, false),
        ("1 week", 604_800, false),
        ("1 day, with origins", 86_400, true),
    ] {
        let query = SummaryQuery {
            since: FIRST_START,
            until,
            bin_seconds: bin,
            top_limit: 20,
            origin_of: origins.then_some(origin_fn),
        };
        let mut times = Vec::new();
        let mut bins = 0;
        for _ in 0..SUMMARY_RUNS {
            let began = Instant::now();
            let summary = reader.summary(&query)?;
            times.push(began.elapsed());
            bins = summary.bins.len();
            anyhow::ensure!(
                summary.bins.iter().all(|b| b.rulesets.len() == RULESETS),
                "a bin without its rulesets"
            );
        }
        eprintln!("bench: summary at {label}: {:?}", median(times.clone()));
        summaries.push((label.to_owned(), median(times), bins));
    }
    drop(reader);
    fresh(&path);
    Ok(Filled {
        intervals,
        fill,
        file_bytes,
        summaries,
    })
}

fn report(conditions: &str, writes: &[WriteCost], filled: &Filled) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nMachine: {conditions}\n");
    let _ = writeln!(out, "### Write cost per interval\n");
    let _ = writeln!(
        out,
        "`record`: one transaction with a synced WAL commit (`synchronous=FULL`), on a fresh file; {WRITES} typical and {HEAVY_WRITES} heavy intervals.\n"
    );
    let _ = writeln!(
        out,
        "| interval | median (µs) | p99 (µs) | used bytes / interval | bytes on disk / interval |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for cost in writes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cost.shape.name,
            thousands(micros(cost.median).round()),
            thousands(micros(cost.p99).round()),
            thousands(cost.used_per_interval),
            thousands(cost.disk_per_interval),
        );
    }
    let _ = writeln!(out, "\n### 30 days of 1-minute intervals\n");
    let _ = writeln!(
        out,
        "{} typical intervals written a day per `record_all` in {:.1} s; file {} bytes ({:.0} MiB, {} bytes per interval).\n",
        thousands(filled.intervals),
        filled.fill.as_secs_f64(),
        thousands(filled.file_bytes),
        filled.file_bytes as f64 / f64::from(1 << 20),
        thousands(filled.file_bytes / filled.intervals.max(1)),
    );
    let _ = writeln!(
        out,
        "| `summary` over 30 days, bins of | bins | median of {SUMMARY_RUNS} (ms) |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    for (label, time, bins) in &filled.summaries {
        let _ = writeln!(
            out,
            "| {label} | {bins} | {} |",
            thousands((time.as_secs_f64() * 1e3).round())
        );
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--list") {
        return Ok(());
    }
    let started = Instant::now();
    let load_at_start = load_average();
    let dir = data_dir();
    std::fs::create_dir_all(&dir)?;
    let writes = vec![
        write_cost(&dir, TYPICAL, WRITES)?,
        write_cost(&dir, HEAVY, HEAVY_WRITES)?,
    ];
    eprintln!(
        "bench: write cost done ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let filled = fill_and_query(&dir)?;
    let conditions = format!(
        "{}; SQLite {}, {}; 1-minute load average {load_at_start} at the start, {} at the end",
        machine(),
        rusqlite::version(),
        dir.display(),
        load_average()
    );
    print!("{}", report(&conditions, &writes, &filled));
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
