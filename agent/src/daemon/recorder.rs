//! The history recorder: a thread of its own that, once per `[history] interval` (aligned to
//! the wall clock), turns what the owner last published and what the detectors added to the
//! tap into an [`IntervalRecord`] and writes it. It only reads snapshots, so neither the
//! packet path nor the owner ever waits on SQLite; a database that cannot be opened or
//! written is logged (once per distinct error) and tried again next interval.
use std::{
    collections::{BTreeMap, HashMap},
    sync::mpsc,
    time::Duration,
};

use xdpguard_common::Stat;

use crate::{
    clock::{Clock, SystemClock},
    enforce::{
        dataplane::Stats,
        owner::metrics::{MetricsData, MetricsSnapshot},
    },
    error_chain,
    history::{
        HistoryConfig,
        model::{IntervalRecord, PacketCounts, Ranking, TopRow},
        store::HistoryStore,
        tap::{SharedTap, Taken},
    },
    origins::Origins,
    prefix::Prefix,
};

/// What the recorder reads.
pub struct Sources {
    pub owner: MetricsSnapshot,
    pub tap: SharedTap,
    pub origins: Origins,
}

/// The running recorder.
pub struct Recorder {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    config: HistoryConfig,
}

impl Recorder {
    /// # Errors
    /// The thread could not be started.
    pub fn start(config: HistoryConfig, sources: Sources) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let thread = {
            let config = config.clone();
            std::thread::Builder::new()
                .name("history".into())
                .spawn(move || run(&config, &sources, &stopped))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            config,
        })
    }

    pub const fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Record the interval begun so far, then stop.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("history: the recorder panicked");
        }
    }
}

/// Cumulative counters as last seen, to turn the next reading into the interval's deltas.
#[derive(Default)]
struct Seen {
    stats: Stats,
    decisions: BTreeMap<String, u64>,
    blocked: HashMap<Prefix, (u64, u64)>,
    origins: HashMap<String, (u64, u64)>,
}

fn run(config: &HistoryConfig, sources: &Sources, stopped: &mpsc::Receiver<()>) {
    let interval = config.interval.as_secs().max(1);
    let mut store: Option<HistoryStore> = None;
    let mut last_error = String::new();
    let mut seen = Seen::default();
    // The first reading is the baseline: what happened before this daemon is not ours.
    let _ = deltas(&sources.owner.latest(), &mut seen);
    let mut start = SystemClock.now_unix();
    loop {
        let end = (start / interval + 1) * interval;
        let wait = end.saturating_sub(SystemClock.now_unix());
        let stopping = !matches!(
            stopped.recv_timeout(Duration::from_secs(wait)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        let end = if stopping {
            SystemClock.now_unix().max(start + 1)
        } else {
            end
        };
        let record = build(
            start,
            end,
            &sources.owner.latest(),
            &mut seen,
            sources.tap.take(),
            &sources.origins,
        );
        write(config, &mut store, &mut last_error, &record);
        start = end;
        if stopping {
            return;
        }
    }
}

fn write(
    config: &HistoryConfig,
    store: &mut Option<HistoryStore>,
    last_error: &mut String,
    record: &IntervalRecord,
) {
    let result = match store {
        Some(store) => store.record(record).map(|_| ()),
        None => HistoryStore::open(&config.path, config.store.clone()).and_then(|mut opened| {
            log::info!("history: recording into {}", config.path.display());
            let written = opened.record(record).map(|_| ());
            *store = Some(opened);
            written
        }),
    };
    match result {
        Ok(()) => last_error.clear(),
        Err(err) => {
            let message = error_chain(&err);
            if *last_error != message {
                log::error!(
                    "history: interval at {} not recorded: {message}",
                    record.start
                );
                *last_error = message;
            }
        }
    }
}

/// The interval `[start, end)`.
fn build(
    start: u64,
    end: u64,
    owner: &MetricsData,
    seen: &mut Seen,
    taken: Taken,
    origins: &Origins,
) -> IntervalRecord {
    let (packets, decisions, mut top) = deltas(owner, seen);
    top.extend(taken.top.iter().cloned());
    // Origins by volume: the prefixes by volume, summed per origin AS of their network.
    let table = origins.table();
    let mut by_origin: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for row in taken
        .top
        .iter()
        .filter(|row| row.ranking == Ranking::PrefixByVolume)
    {
        let origin = row.origin.clone().or_else(|| {
            let prefix = Prefix::parse(&row.key).ok()?.0;
            Some(table.lookup(prefix.addr())?.origin.to_string())
        });
        if let Some(origin) = origin {
            let sums = by_origin.entry(origin).or_default();
            sums.0 += row.packets;
            sums.1 += row.bytes;
        }
    }
    top.extend(by_origin.into_iter().map(|(key, (packets, bytes))| TopRow {
        ranking: Ranking::OriginByVolume,
        key,
        packets,
        bytes,
        origin: None,
        announced: None,
    }));
    for row in &mut top {
        if row.ranking == Ranking::PrefixByDrops
            && row.origin.is_none()
            && let Ok((prefix, _)) = Prefix::parse(&row.key)
            && let Some(found) = table.lookup(prefix.addr())
        {
            row.origin = Some(found.origin.to_string());
            row.announced = Some(found.prefix.to_string());
        }
    }
    IntervalRecord {
        start,
        seconds: u32::try_from(end.saturating_sub(start)).unwrap_or(u32::MAX),
        packets,
        traffic: taken.traffic,
        decisions,
        scored: taken.scored,
        top,
        anomalies: taken.anomalies,
    }
}

/// What changed since `seen`, which becomes the new reading.
fn deltas(owner: &MetricsData, seen: &mut Seen) -> (PacketCounts, Vec<(String, u64)>, Vec<TopRow>) {
    let mut stats = Stats::default();
    for (_, interface) in &owner.interfaces {
        stats = stats.plus(interface);
    }
    let since = |stat: Stat| {
        let (now, then) = (stats.get(stat), seen.stats.get(stat));
        grown((now.packets, now.bytes), (then.packets, then.bytes))
    };
    let (dropped_v4, dropped_v4_bytes) = since(Stat::Ipv4Drop);
    let (dropped_v6, dropped_v6_bytes) = since(Stat::Ipv6Drop);
    let passed: Vec<(u64, u64)> = [
        Stat::Ipv4Pass,
        Stat::Ipv4Allowed,
        Stat::Ipv6Pass,
        Stat::Ipv6Allowed,
    ]
    .into_iter()
    .map(since)
    .collect();
    let packets = PacketCounts {
        dropped_v4,
        dropped_v6,
        passed_v4: passed[0].0 + passed[1].0,
        passed_v6: passed[2].0 + passed[3].0,
        dropped_bytes: dropped_v4_bytes + dropped_v6_bytes,
        passed_bytes: passed.iter().map(|(_, bytes)| bytes).sum(),
    };
    seen.stats = stats;

    let mut decisions = Vec::new();
    let mut now_decisions = BTreeMap::new();
    for ((source, action), count) in &owner.decisions_total {
        if *action != "block" {
            continue;
        }
        let before = seen.decisions.get(source).copied().unwrap_or(0);
        let (new, _) = grown((*count, 0), (before, 0));
        if new > 0 {
            decisions.push((source.clone(), new));
        }
        now_decisions.insert(source.clone(), *count);
    }
    seen.decisions = now_decisions;

    let mut top = Vec::new();
    let mut blocked = HashMap::new();
    for &(prefix, packets, bytes) in owner.top_blocked.iter() {
        let then = seen.blocked.get(&prefix).copied().unwrap_or_default();
        let (new_packets, new_bytes) = grown((packets, bytes), then);
        if new_packets > 0 {
            top.push(TopRow {
                ranking: Ranking::PrefixByDrops,
                key: prefix.to_string(),
                packets: new_packets,
                bytes: new_bytes,
                origin: None,
                announced: None,
            });
        }
        blocked.insert(prefix, (packets, bytes));
    }
    seen.blocked = blocked;
    let mut origins = HashMap::new();
    for (origin, packets, bytes) in owner.top_origins.iter() {
        let then = seen.origins.get(origin).copied().unwrap_or_default();
        let (new_packets, new_bytes) = grown((*packets, *bytes), then);
        if new_packets > 0 {
            top.push(TopRow {
                ranking: Ranking::OriginByDrops,
                key: origin.clone(),
                packets: new_packets,
                bytes: new_bytes,
                origin: None,
                announced: None,
            });
        }
        origins.insert(origin.clone(), (*packets, *bytes));
    }
    seen.origins = origins;
    (packets, decisions, top)
}

/// Packets and bytes counted since `then`; a counter lower than before was reset (a new
/// program, an entry made anew), so all of it is new.
fn grown(now: (u64, u64), then: (u64, u64)) -> (u64, u64) {
    if now.0 >= then.0 && now.1 >= then.1 {
        (now.0 - then.0, now.1 - then.1)
    } else {
        now
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::origins::{OriginAs, TableBuilder};

    fn p(text: &str) -> Prefix {
        Prefix::parse(text).unwrap().0
    }

    fn data(drops: u64, blocked: u64, decisions: u64) -> MetricsData {
        let mut stats = Stats::default();
        stats.set(Stat::Ipv4Drop, drops, drops * 60);
        stats.set(Stat::Ipv4Pass, 1000, 64_000);
        MetricsData {
            interfaces: vec![("veth0".into(), stats)],
            decisions_total: BTreeMap::from([
                (("ruleset:sshd".into(), "block"), decisions),
                (("ruleset:sshd".into(), "refused"), 99),
            ]),
            top_blocked: Arc::new(vec![(p("203.0.113.7"), blocked, blocked * 60)]),
            top_origins: Arc::new(vec![("AS64500".into(), blocked, blocked * 60)]),
            ..MetricsData::default()
        }
    }

    #[test]
    fn each_interval_records_what_changed_since_the_last() {
        let mut builder = TableBuilder::new();
        builder.add(p("203.0.113.0/24"), OriginAs::Single(64500), 30);
        builder.add(p("198.51.100.0/24"), OriginAs::Single(64501), 30);
        let origins = Origins::with_table(builder.build());
        let mut seen = Seen::default();
        // The baseline: counts from before the daemon started are not the interval's.
        let _ = deltas(&data(10, 4, 2), &mut seen);
        let tap = SharedTap::new();
        tap.with(|t| {
            t.add_top(TopRow {
                ranking: Ranking::PrefixByVolume,
                key: "198.51.100.0/24".into(),
                packets: 5,
                bytes: 500,
                origin: None,
                announced: None,
            });
            t.add_scored("sshd", "203.0.113.7".parse().unwrap());
        });
        let record = build(60, 120, &data(25, 9, 5), &mut seen, tap.take(), &origins);
        assert_eq!((record.start, record.seconds), (60, 60));
        assert_eq!(record.packets.dropped_v4, 15);
        assert_eq!(record.packets.dropped_bytes, 15 * 60);
        assert_eq!(record.packets.passed_v4, 0, "passes did not change");
        assert_eq!(record.decisions, [("ruleset:sshd".to_owned(), 3)]);
        let row = |ranking| record.top.iter().find(|r| r.ranking == ranking).unwrap();
        assert_eq!(row(Ranking::PrefixByDrops).packets, 5);
        assert_eq!(
            row(Ranking::PrefixByDrops).origin.as_deref(),
            Some("AS64500")
        );
        assert_eq!(row(Ranking::OriginByDrops).packets, 5);
        assert_eq!(row(Ranking::OriginByVolume).key, "AS64501");
        assert_eq!(row(Ranking::OriginByVolume).bytes, 500);
        assert_eq!(record.scored[0].addresses.len(), 1);

        // Nothing new: an empty interval. A counter that went down was reset: all new.
        let record = build(120, 180, &data(25, 9, 5), &mut seen, tap.take(), &origins);
        assert_eq!(record.packets, PacketCounts::default());
        assert!(record.decisions.is_empty() && record.top.is_empty());
        let record = build(180, 240, &data(3, 9, 5), &mut seen, tap.take(), &origins);
        assert_eq!(record.packets.dropped_v4, 3);
        assert_eq!(record.packets.passed_v4, 0);
    }
}
