//! Reading the history back: summaries over a range in bins, and single intervals.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use foldhash::{HashMap as FastMap, HashMapExt as _, HashSet as FastSet, HashSetExt as _};
use rusqlite::Row;

use super::{
    model::{
        Anomaly, AnomalyKind, Bin, IntervalRecord, PacketCounts, Ranking, RulesetBin,
        ScoredSources, Summary, TopRow, Traffic,
    },
    schema::{self, PackedSources},
    store::{HistoryError, HistoryStore, sort_top},
};

/// More bins than this is a mistake (a 1-second bin over a year), not a report.
const MAX_BINS: u64 = 1_000_000;

/// What a summary covers.
#[derive(Clone, Copy)]
pub struct SummaryQuery<'a> {
    /// Unix seconds: intervals starting in `[since, until)` are counted.
    pub since: u64,
    pub until: u64,
    /// Bins start at multiples of this (UTC), from the one holding `since`.
    pub bin_seconds: u64,
    /// Rows per ranking in the summary's top lists.
    pub top_limit: usize,
    /// The origin AS of a source, for the bins' distinct-origin counts.
    pub origin_of: Option<&'a dyn Fn(IpAddr) -> Option<String>>,
}

impl std::fmt::Debug for SummaryQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SummaryQuery")
            .field("since", &self.since)
            .field("until", &self.until)
            .field("bin_seconds", &self.bin_seconds)
            .field("top_limit", &self.top_limit)
            .field("origin_of", &self.origin_of.is_some())
            .finish()
    }
}

/// Distinct sources of one ruleset in the bin being summed.
#[derive(Default)]
struct RulesetSet {
    v4: FastSet<u32>,
    v6: FastSet<u128>,
    truncated: bool,
}

/// Sums of one (ranking, key) over the range: origin and announced from the newest interval
/// that named them.
struct TopSum {
    packets: u64,
    bytes: u64,
    origin: Option<i64>,
    announced: Option<i64>,
}

/// Names by row id, read once each per query.
struct NameCache<'s> {
    store: &'s HistoryStore,
    texts: HashMap<i64, String>,
}

impl NameCache<'_> {
    fn text(&mut self, id: i64) -> Result<String, HistoryError> {
        if let Some(text) = self.texts.get(&id) {
            return Ok(text.clone());
        }
        let store = self.store;
        let text: String = store
            .conn
            .prepare_cached("SELECT text FROM name WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)))
            .map_err(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => {
                    store.bad_data(format!("name {id} is used but missing"))
                }
                e => store.sql(e),
            })?;
        self.texts.insert(id, text.clone());
        Ok(text)
    }
}

fn packet_counts(row: &Row<'_>, first: usize) -> rusqlite::Result<PacketCounts> {
    Ok(PacketCounts {
        dropped_v4: row.get(first)?,
        dropped_v6: row.get(first + 1)?,
        passed_v4: row.get(first + 2)?,
        passed_v6: row.get(first + 3)?,
        dropped_bytes: row.get(first + 4)?,
        passed_bytes: row.get(first + 5)?,
    })
}

fn traffic(row: &Row<'_>, first: usize) -> rusqlite::Result<Traffic> {
    Ok(Traffic {
        inbound_local: row.get(first)?,
        inbound_external: row.get(first + 1)?,
        outbound_local: row.get(first + 2)?,
        outbound_external: row.get(first + 3)?,
    })
}

fn add_packets(sum: &mut PacketCounts, add: &PacketCounts) {
    sum.dropped_v4 = sum.dropped_v4.saturating_add(add.dropped_v4);
    sum.dropped_v6 = sum.dropped_v6.saturating_add(add.dropped_v6);
    sum.passed_v4 = sum.passed_v4.saturating_add(add.passed_v4);
    sum.passed_v6 = sum.passed_v6.saturating_add(add.passed_v6);
    sum.dropped_bytes = sum.dropped_bytes.saturating_add(add.dropped_bytes);
    sum.passed_bytes = sum.passed_bytes.saturating_add(add.passed_bytes);
}

fn add_traffic(sum: &mut Traffic, add: &Traffic) {
    sum.inbound_local = sum.inbound_local.saturating_add(add.inbound_local);
    sum.inbound_external = sum.inbound_external.saturating_add(add.inbound_external);
    sum.outbound_local = sum.outbound_local.saturating_add(add.outbound_local);
    sum.outbound_external = sum.outbound_external.saturating_add(add.outbound_external);
}

impl HistoryStore {
    /// Oldest and newest interval start, or `None` when the history is empty.
    ///
    /// # Errors
    /// SQLite's.
    pub fn range(&self) -> Result<Option<(u64, u64)>, HistoryError> {
        let (oldest, newest): (Option<u64>, Option<u64>) = self
            .conn
            .query_row("SELECT min(start), max(start) FROM interval", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(|e| self.sql(e))?;
        Ok(oldest.zip(newest))
    }

    /// Intervals recorded.
    ///
    /// # Errors
    /// SQLite's.
    pub fn interval_count(&self) -> Result<u64, HistoryError> {
        self.conn
            .query_row("SELECT count(*) FROM interval", [], |row| row.get(0))
            .map_err(|e| self.sql(e))
    }

    /// The interval starting at `start` as stored: addresses normalised and capped, top rows
    /// capped, equal keys summed; decisions, scored and anomalies sorted by name, top rows by
    /// ranking and largest first.
    ///
    /// # Errors
    /// SQLite's, or bad data.
    pub fn interval(&self, start: u64) -> Result<Option<IntervalRecord>, HistoryError> {
        let sql = |e| self.sql(e);
        let mut names = NameCache {
            store: self,
            texts: HashMap::new(),
        };
        let found = self
            .conn
            .prepare_cached("SELECT * FROM interval WHERE start = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([start], |row| {
                    Ok((row.get(1)?, packet_counts(row, 2)?, traffic(row, 8)?))
                })
            });
        let (seconds, packets, traffic) = match found {
            Ok(found) => found,
            Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
            Err(e) => return Err(sql(e)),
        };
        let mut record = IntervalRecord {
            start,
            seconds,
            packets,
            traffic,
            ..IntervalRecord::default()
        };

        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, count FROM decision WHERE start = ?1")
            .map_err(sql)?;
        let mut rows = stmt.query([start]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let kind = names.text(row.get(0).map_err(sql)?)?;
            record.decisions.push((kind, row.get(1).map_err(sql)?));
        }
        record.decisions.sort();

        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT ruleset, overflow, v4_count, addresses FROM scored WHERE start = ?1",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([start]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let ruleset = names.text(row.get(0).map_err(sql)?)?;
            let blob = row.get_ref(3).and_then(|v| Ok(v.as_blob()?)).map_err(sql)?;
            let (v4, v6) = self.split(blob, row.get(2).map_err(sql)?, start)?;
            let sources = PackedSources {
                v4: schema::v4_addresses(v4).collect(),
                v6: schema::v6_addresses(v6).collect(),
            };
            record.scored.push(ScoredSources {
                ruleset,
                addresses: sources.addresses().collect(),
                overflow: row.get(1).map_err(sql)?,
            });
        }
        record.scored.sort_by(|a, b| a.ruleset.cmp(&b.ruleset));

        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT ranking, key, packets, bytes, origin, announced FROM top WHERE start = ?1",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([start]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let origin: Option<i64> = row.get(4).map_err(sql)?;
            let announced: Option<i64> = row.get(5).map_err(sql)?;
            record.top.push(TopRow {
                ranking: self.ranking(row.get(0).map_err(sql)?)?,
                key: names.text(row.get(1).map_err(sql)?)?,
                packets: row.get(2).map_err(sql)?,
                bytes: row.get(3).map_err(sql)?,
                origin: origin.map(|id| names.text(id)).transpose()?,
                announced: announced.map(|id| names.text(id)).transpose()?,
            });
        }
        sort_top(&mut record.top);

        let mut stmt = self
            .conn
            .prepare_cached("SELECT prefix, kind, port, flows, bytes FROM anomaly WHERE start = ?1")
            .map_err(sql)?;
        let mut rows = stmt.query([start]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            record.anomalies.push(Anomaly {
                prefix: names.text(row.get(0).map_err(sql)?)?,
                kind: self.anomaly_kind(row.get(1).map_err(sql)?, row.get(2).map_err(sql)?)?,
                flows: row.get(3).map_err(sql)?,
                bytes: row.get(4).map_err(sql)?,
            });
        }
        record
            .anomalies
            .sort_by(|a, b| (&a.prefix, a.kind).cmp(&(&b.prefix, b.kind)));
        Ok(Some(record))
    }

    fn split<'b>(
        &self,
        blob: &'b [u8],
        v4_count: u64,
        start: u64,
    ) -> Result<(&'b [u8], &'b [u8]), HistoryError> {
        schema::split_blob(blob, v4_count).ok_or_else(|| {
            self.bad_data(format!(
                "interval {start}: an address blob of {} bytes for {v4_count} IPv4 addresses",
                blob.len()
            ))
        })
    }

    fn ranking(&self, code: i64) -> Result<Ranking, HistoryError> {
        schema::ranking_from_code(code).ok_or_else(|| self.bad_data(format!("ranking {code}")))
    }

    fn anomaly_kind(&self, kind: i64, port: i64) -> Result<AnomalyKind, HistoryError> {
        schema::anomaly_from_code(kind, port)
            .ok_or_else(|| self.bad_data(format!("anomaly kind {kind} port {port}")))
    }

    /// The intervals starting in `[since, until)`, summed per bin, with distinct sources per
    /// ruleset and bin, and the range's top lists and anomalies.
    ///
    /// # Errors
    /// A zero bin or far too many bins, SQLite's, or bad data.
    pub fn summary(&self, query: &SummaryQuery<'_>) -> Result<Summary, HistoryError> {
        let bin = query.bin_seconds;
        if bin == 0 {
            return Err(HistoryError::BadQuery {
                path: self.path.clone(),
                what: "bins of 0 seconds".to_owned(),
            });
        }
        let first = query.since - query.since % bin;
        let count = if query.until > query.since {
            (query.until - first).div_ceil(bin)
        } else {
            0
        };
        if count > MAX_BINS {
            return Err(HistoryError::BadQuery {
                path: self.path.clone(),
                what: format!("{count} bins of {bin} seconds (at most {MAX_BINS})"),
            });
        }
        let mut bins: Vec<Bin> = (0..count)
            .map(|i| Bin {
                start: first + i * bin,
                seconds: bin,
                ..Bin::default()
            })
            .collect();
        let mut names = NameCache {
            store: self,
            texts: HashMap::new(),
        };
        let len = bins.len();
        let bin_of = |start: u64| -> Result<usize, HistoryError> {
            usize::try_from(start.saturating_sub(first) / bin)
                .ok()
                .filter(|&i| i < len)
                .ok_or_else(|| self.bad_data(format!("interval {start} outside the query")))
        };
        let (since, until) = (query.since, query.until.max(query.since));

        self.sum_intervals(since, until, &mut bins, &bin_of)?;
        self.sum_decisions(since, until, &mut bins, &bin_of, &mut names)?;
        let rulesets = self.distinct_sources(query, until, &mut bins, &bin_of, &mut names)?;
        let top = self.top(since, until, query.top_limit, &mut names)?;
        let anomalies = self.anomalies(since, until, &mut names)?;
        Ok(Summary {
            from: format!("history:{}", self.path.display()),
            since: query.since,
            until: query.until,
            bin_seconds: bin,
            bins,
            rulesets,
            top,
            anomalies,
        })
    }

    fn sum_intervals(
        &self,
        since: u64,
        until: u64,
        bins: &mut [Bin],
        bin_of: &dyn Fn(u64) -> Result<usize, HistoryError>,
    ) -> Result<(), HistoryError> {
        let sql = |e| self.sql(e);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM interval WHERE start >= ?1 AND start < ?2")
            .map_err(sql)?;
        let mut rows = stmt.query([since, until]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let bin = &mut bins[bin_of(row.get(0).map_err(sql)?)?];
            add_packets(&mut bin.packets, &packet_counts(row, 2).map_err(sql)?);
            add_traffic(&mut bin.traffic, &traffic(row, 8).map_err(sql)?);
        }
        Ok(())
    }

    fn sum_decisions(
        &self,
        since: u64,
        until: u64,
        bins: &mut [Bin],
        bin_of: &dyn Fn(u64) -> Result<usize, HistoryError>,
        names: &mut NameCache<'_>,
    ) -> Result<(), HistoryError> {
        let sql = |e| self.sql(e);
        let mut per_bin: BTreeMap<(usize, i64), u64> = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT start, kind, count FROM decision WHERE start >= ?1 AND start < ?2",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([since, until]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let index = bin_of(row.get(0).map_err(sql)?)?;
            let count: u64 = row.get(2).map_err(sql)?;
            let sum = per_bin
                .entry((index, row.get(1).map_err(sql)?))
                .or_default();
            *sum = sum.saturating_add(count);
        }
        for ((index, kind), count) in per_bin {
            bins[index].decisions.push((names.text(kind)?, count));
        }
        for bin in bins {
            bin.decisions.sort();
        }
        Ok(())
    }

    /// Fills the bins' `rulesets` from the address blobs, bin by bin (the rows come in start
    /// order), and returns every ruleset seen, sorted. Distinct counts are hash sets in Rust:
    /// the blobs keep addresses out of SQL, and 43M addresses (30 days of 5 × 200 a minute)
    /// take 0.6 s this way, less than SQLite needs to group the 3.4M top rows of the same
    /// range.
    fn distinct_sources(
        &self,
        query: &SummaryQuery<'_>,
        until: u64,
        bins: &mut [Bin],
        bin_of: &dyn Fn(u64) -> Result<usize, HistoryError>,
        names: &mut NameCache<'_>,
    ) -> Result<Vec<String>, HistoryError> {
        let sql = |e| self.sql(e);
        let mut origins = Origins::new(query.origin_of);
        let mut sets: FastMap<i64, RulesetSet> = FastMap::new();
        let mut all_rulesets: BTreeMap<String, ()> = BTreeMap::new();
        let mut current: Option<usize> = None;
        let mut flush = |index: usize,
                         sets: &mut FastMap<i64, RulesetSet>,
                         names: &mut NameCache<'_>|
         -> Result<(), HistoryError> {
            let mut rulesets = Vec::with_capacity(sets.len());
            for (&id, set) in sets.iter_mut() {
                if set.v4.is_empty() && set.v6.is_empty() && !set.truncated {
                    continue;
                }
                let name = names.text(id)?;
                all_rulesets.insert(name.clone(), ());
                rulesets.push(set_counts(name, set, &mut origins));
                set.v4.clear();
                set.v6.clear();
                set.truncated = false;
            }
            rulesets.sort_by(|a, b| a.ruleset.cmp(&b.ruleset));
            bins[index].rulesets = rulesets;
            Ok(())
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT start, ruleset, overflow, v4_count, addresses FROM scored \
                 WHERE start >= ?1 AND start < ?2 ORDER BY start",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([query.since, until]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let start: u64 = row.get(0).map_err(sql)?;
            let index = bin_of(start)?;
            if let Some(previous) = current.filter(|&previous| previous != index) {
                flush(previous, &mut sets, names)?;
            }
            current = Some(index);
            let set = sets.entry(row.get(1).map_err(sql)?).or_default();
            set.truncated |= row.get::<_, u64>(2).map_err(sql)? > 0;
            let blob = row.get_ref(4).and_then(|v| Ok(v.as_blob()?)).map_err(sql)?;
            let (v4, v6) = self.split(blob, row.get(3).map_err(sql)?, start)?;
            set.v4.extend(schema::v4_addresses(v4));
            set.v6.extend(schema::v6_addresses(v6));
        }
        if let Some(index) = current {
            flush(index, &mut sets, names)?;
        }
        Ok(all_rulesets.into_keys().collect())
    }

    /// Summed in Rust: over 30 days of 1-minute intervals (3.4M rows) this takes 0.6 s where
    /// SQLite's `GROUP BY ranking, key` alone took 1.5 s (its scan alone 0.2 s).
    fn top(
        &self,
        since: u64,
        until: u64,
        limit: usize,
        names: &mut NameCache<'_>,
    ) -> Result<Vec<TopRow>, HistoryError> {
        let sql = |e| self.sql(e);
        let mut sums: FastMap<(i64, i64), TopSum> = FastMap::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT ranking, key, packets, bytes, origin, announced FROM top \
                 WHERE start >= ?1 AND start < ?2 ORDER BY start",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([since, until]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let packets: u64 = row.get(2).map_err(sql)?;
            let bytes: u64 = row.get(3).map_err(sql)?;
            let origin: Option<i64> = row.get(4).map_err(sql)?;
            let announced: Option<i64> = row.get(5).map_err(sql)?;
            let key = (row.get(0).map_err(sql)?, row.get(1).map_err(sql)?);
            let sum = sums.entry(key).or_insert(TopSum {
                packets: 0,
                bytes: 0,
                origin: None,
                announced: None,
            });
            sum.packets = sum.packets.saturating_add(packets);
            sum.bytes = sum.bytes.saturating_add(bytes);
            sum.origin = origin.or(sum.origin);
            sum.announced = announced.or(sum.announced);
        }
        // Per ranking, the `limit` largest by its measure, before any name is read.
        let mut by_ranking: BTreeMap<Ranking, Vec<(u64, u64, i64, TopSum)>> = BTreeMap::new();
        for ((code, key), sum) in sums {
            let ranking = self.ranking(code)?;
            let measure = if schema::ranks_by_packets(ranking) {
                (sum.packets, sum.bytes)
            } else {
                (sum.bytes, sum.packets)
            };
            by_ranking
                .entry(ranking)
                .or_default()
                .push((measure.0, measure.1, key, sum));
        }
        let mut top = Vec::new();
        for (ranking, mut rows) in by_ranking {
            // Names break ties: every row tied with the last one kept needs its name read.
            rows.sort_unstable_by_key(|row| std::cmp::Reverse((row.0, row.1)));
            let keep = match limit.checked_sub(1).and_then(|last| rows.get(last)) {
                Some(&(first, second, ..)) => {
                    rows.partition_point(|row| (row.0, row.1) >= (first, second))
                }
                None => rows.len().min(limit),
            };
            let mut kept = Vec::with_capacity(keep);
            for (_, _, key, sum) in rows.into_iter().take(keep) {
                kept.push(TopRow {
                    ranking,
                    key: names.text(key)?,
                    packets: sum.packets,
                    bytes: sum.bytes,
                    origin: sum.origin.map(|id| names.text(id)).transpose()?,
                    announced: sum.announced.map(|id| names.text(id)).transpose()?,
                });
            }
            sort_top(&mut kept);
            kept.truncate(limit);
            top.extend(kept);
        }
        Ok(top)
    }

    fn anomalies(
        &self,
        since: u64,
        until: u64,
        names: &mut NameCache<'_>,
    ) -> Result<Vec<Anomaly>, HistoryError> {
        let sql = |e| self.sql(e);
        let mut sums: FastMap<(i64, i64, i64), (u64, u64)> = FastMap::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT prefix, kind, port, flows, bytes FROM anomaly \
                 WHERE start >= ?1 AND start < ?2",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([since, until]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let key = (
                row.get(0).map_err(sql)?,
                row.get(1).map_err(sql)?,
                row.get(2).map_err(sql)?,
            );
            let flows: u64 = row.get(3).map_err(sql)?;
            let bytes: u64 = row.get(4).map_err(sql)?;
            let sum = sums.entry(key).or_default();
            sum.0 = sum.0.saturating_add(flows);
            sum.1 = sum.1.saturating_add(bytes);
        }
        let mut anomalies = Vec::with_capacity(sums.len());
        for ((prefix, kind, port), (flows, bytes)) in sums {
            anomalies.push(Anomaly {
                prefix: names.text(prefix)?,
                kind: self.anomaly_kind(kind, port)?,
                flows,
                bytes,
            });
        }
        anomalies.sort_by(|a, b| {
            (b.flows, b.bytes)
                .cmp(&(a.flows, a.bytes))
                .then_with(|| (&a.prefix, a.kind).cmp(&(&b.prefix, b.kind)))
        });
        Ok(anomalies)
    }
}

/// Origins of the sources, each address asked once per summary.
struct Origins<'a> {
    origin_of: Option<&'a dyn Fn(IpAddr) -> Option<String>>,
    /// Address (IPv4 as its mapped IPv6 form) to origin number, `u32::MAX` for none.
    known: FastMap<u128, u32>,
    numbers: HashMap<String, u32>,
}

impl<'a> Origins<'a> {
    fn new(origin_of: Option<&'a dyn Fn(IpAddr) -> Option<String>>) -> Self {
        Self {
            origin_of,
            known: FastMap::new(),
            numbers: HashMap::new(),
        }
    }

    fn number(&mut self, key: u128, addr: IpAddr) -> Option<u32> {
        let origin_of = self.origin_of?;
        let numbers = &mut self.numbers;
        let number = *self.known.entry(key).or_insert_with(|| {
            origin_of(addr).map_or(u32::MAX, |origin| {
                let next = u32::try_from(numbers.len()).unwrap_or(u32::MAX - 1);
                *numbers.entry(origin).or_insert(next)
            })
        });
        (number != u32::MAX).then_some(number)
    }
}

fn set_counts(ruleset: String, set: &RulesetSet, origins: &mut Origins<'_>) -> RulesetBin {
    let v4_nets: FastSet<u32> = set.v4.iter().map(|a| a >> 8).collect();
    let v6_nets: FastSet<u64> = set
        .v6
        .iter()
        .map(|a| u64::try_from(a >> 64).unwrap_or(u64::MAX))
        .collect();
    let mut distinct_origins: FastSet<u32> = FastSet::new();
    if origins.origin_of.is_some() {
        for &a in &set.v4 {
            let addr = Ipv4Addr::from(a);
            let key = u128::from(addr.to_ipv6_mapped());
            distinct_origins.extend(origins.number(key, IpAddr::V4(addr)));
        }
        for &a in &set.v6 {
            distinct_origins.extend(origins.number(a, IpAddr::V6(Ipv6Addr::from(a))));
        }
    }
    let len = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    RulesetBin {
        ruleset,
        sources: len(set.v4.len() + set.v6.len()),
        networks: len(v4_nets.len() + v6_nets.len()),
        origins: len(distinct_origins.len()),
        truncated: set.truncated,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

    use super::*;
    use crate::history::{
        store::StoreSettings,
        test_support::{TempDir, random_record},
    };

    fn origin_of(addr: IpAddr) -> Option<String> {
        match addr {
            IpAddr::V4(v4) => {
                let [_, _, net, _] = v4.octets();
                (net != 0).then(|| format!("AS{}", 64_500 + u32::from(net / 2)))
            }
            IpAddr::V6(_) => Some("AS64999".to_owned()),
        }
    }

    /// The summary computed the obvious way, from the records themselves.
    fn reference(
        records: &[IntervalRecord],
        since: u64,
        until: u64,
        bin: u64,
        top_limit: usize,
        with_origins: bool,
    ) -> Summary {
        let first = since - since % bin;
        let count = if until > since {
            (until - first).div_ceil(bin)
        } else {
            0
        };
        let mut bins: Vec<Bin> = (0..count)
            .map(|i| Bin {
                start: first + i * bin,
                seconds: bin,
                ..Bin::default()
            })
            .collect();
        let mut in_range: Vec<&IntervalRecord> = records
            .iter()
            .filter(|r| r.start >= since && r.start < until)
            .collect();
        in_range.sort_by_key(|r| r.start);
        let mut all_rulesets = BTreeSet::new();
        let mut top: HashMap<(Ranking, String), TopRow> = HashMap::new();
        let mut anomalies: HashMap<(String, AnomalyKind), (u64, u64)> = HashMap::new();
        for (index, bin_row) in bins.iter_mut().enumerate() {
            let members: Vec<&&IntervalRecord> = in_range
                .iter()
                .filter(|r| usize::try_from((r.start - first) / bin).ok() == Some(index))
                .collect();
            let mut decisions: BTreeMap<String, u64> = BTreeMap::new();
            let mut sources: BTreeMap<String, HashSet<IpAddr>> = BTreeMap::new();
            for record in &members {
                add_packets(&mut bin_row.packets, &record.packets);
                add_traffic(&mut bin_row.traffic, &record.traffic);
                for (kind, n) in &record.decisions {
                    *decisions.entry(kind.clone()).or_default() += n;
                }
                for scored in &record.scored {
                    let set = sources.entry(scored.ruleset.clone()).or_default();
                    set.extend(scored.addresses.iter().map(IpAddr::to_canonical));
                }
                for row in &record.top {
                    let sum = top
                        .entry((row.ranking, row.key.clone()))
                        .or_insert_with(|| TopRow {
                            packets: 0,
                            bytes: 0,
                            origin: None,
                            announced: None,
                            ..row.clone()
                        });
                    sum.packets += row.packets;
                    sum.bytes += row.bytes;
                    if row.origin.is_some() {
                        sum.origin.clone_from(&row.origin);
                    }
                    if row.announced.is_some() {
                        sum.announced.clone_from(&row.announced);
                    }
                }
                for a in &record.anomalies {
                    let sum = anomalies.entry((a.prefix.clone(), a.kind)).or_default();
                    sum.0 += a.flows;
                    sum.1 += a.bytes;
                }
            }
            bin_row.decisions = decisions.into_iter().collect();
            for (ruleset, set) in sources {
                if set.is_empty() {
                    continue;
                }
                all_rulesets.insert(ruleset.clone());
                let networks: HashSet<String> = set
                    .iter()
                    .map(|addr| match addr {
                        IpAddr::V4(v4) => {
                            let [a, b, c, _] = v4.octets();
                            format!("{a}.{b}.{c}.0/24")
                        }
                        IpAddr::V6(v6) => {
                            let s = v6.segments();
                            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                        }
                    })
                    .collect();
                let origins: HashSet<String> = if with_origins {
                    set.iter().filter_map(|&a| origin_of(a)).collect()
                } else {
                    HashSet::new()
                };
                bin_row.rulesets.push(RulesetBin {
                    ruleset,
                    sources: set.len() as u64,
                    networks: networks.len() as u64,
                    origins: origins.len() as u64,
                    truncated: false,
                });
            }
        }
        let mut top: Vec<TopRow> = top.into_values().collect();
        sort_top(&mut top);
        let mut limited = Vec::new();
        for ranking in crate::history::test_support::RANKINGS {
            limited.extend(
                top.iter()
                    .filter(|row| row.ranking == ranking)
                    .take(top_limit)
                    .cloned(),
            );
        }
        let mut anomalies: Vec<Anomaly> = anomalies
            .into_iter()
            .map(|((prefix, kind), (flows, bytes))| Anomaly {
                prefix,
                kind,
                flows,
                bytes,
            })
            .collect();
        anomalies.sort_by(|a, b| {
            b.flows
                .cmp(&a.flows)
                .then(b.bytes.cmp(&a.bytes))
                .then(a.prefix.cmp(&b.prefix))
                .then(a.kind.cmp(&b.kind))
        });
        Summary {
            from: String::new(),
            since,
            until,
            bin_seconds: bin,
            bins,
            rulesets: all_rulesets.into_iter().collect(),
            top: limited,
            anomalies,
        }
    }

    #[test]
    fn summaries_match_a_naive_reference() {
        let dir = TempDir::new("reference");
        let path = dir.join("history.sqlite");
        let mut store = HistoryStore::open(&path, StoreSettings::default()).expect("open");
        let mut rng = StdRng::seed_from_u64(0x5eed_0001);
        let base = 1_750_000_000 - 1_750_000_000 % 3600;
        // Gaps: about one interval in six is missing, so some bins are empty.
        let mut records = Vec::new();
        for i in 0..600_u64 {
            if rng.random_range(0..6) != 0 {
                records.push(random_record(&mut rng, base + i * 60, 40, 12));
            }
        }
        store.record_all(&records[..300]).expect("batch");
        for record in &records[300..] {
            store.record(record).expect("record");
        }
        let origin_fn: &dyn Fn(IpAddr) -> Option<String> = &origin_of;
        for (since, until, bin, limit, origins) in [
            (base, base + 36_000, 3600, 5, true),
            (base + 1234, base + 20_000, 600, 3, false),
            (base, base + 36_000, 86_400, 20, true),
            (base - 7200, base + 40_000, 60, 1, false),
            (base + 9000, base + 9000, 60, 1, false),
        ] {
            let query = SummaryQuery {
                since,
                until,
                bin_seconds: bin,
                top_limit: limit,
                origin_of: origins.then_some(origin_fn),
            };
            let got = store.summary(&query).expect("summary");
            let mut want = reference(&records, since, until, bin, limit, origins);
            want.from = format!("history:{}", path.display());
            assert_eq!(got.bins.len(), want.bins.len(), "{query:?}");
            for (got_bin, want_bin) in got.bins.iter().zip(&want.bins) {
                assert_eq!(got_bin, want_bin, "{query:?}");
            }
            assert_eq!(got, want, "{query:?}");
            if origins && bin >= 3600 {
                let counted = |r: &RulesetBin| r.origins > 1 && r.networks > 1 && r.sources > 2;
                assert!(got.bins.iter().any(|b| b.rulesets.iter().any(counted)));
                assert!(got.top.len() > 4 && !got.anomalies.is_empty());
            }
        }
        let reader = HistoryStore::open_read_only(&path).expect("read-only");
        assert_eq!(
            reader.range().expect("range"),
            Some((records[0].start, records[records.len() - 1].start))
        );
        assert_eq!(
            reader.interval_count().expect("count"),
            records.len() as u64
        );
    }

    #[test]
    fn records_read_back_as_stored() {
        let dir = TempDir::new("round-trip");
        let path = dir.join("history.sqlite");
        let mut store = HistoryStore::open(&path, StoreSettings::default()).expect("open");
        let mut rng = StdRng::seed_from_u64(0x5eed_0002);
        for i in 0..20 {
            let mut record = random_record(&mut rng, 1_000_000 + i * 60, 30, 5);
            store.record(&record).expect("record");
            // What the store keeps: canonical, distinct, sorted addresses (IPv4 first);
            // names sorted; top rows largest first.
            for scored in &mut record.scored {
                let mut seen = HashSet::new();
                scored
                    .addresses
                    .retain(|addr| seen.insert(addr.to_canonical()));
                for addr in &mut scored.addresses {
                    *addr = addr.to_canonical();
                }
                scored.addresses.sort_by_key(|addr| (addr.is_ipv6(), *addr));
            }
            record.scored.retain(|s| !s.addresses.is_empty());
            record.scored.sort_by(|a, b| a.ruleset.cmp(&b.ruleset));
            record.decisions.sort();
            sort_top(&mut record.top);
            record
                .anomalies
                .sort_by(|a, b| (&a.prefix, a.kind).cmp(&(&b.prefix, b.kind)));
            assert_eq!(
                store.interval(record.start).expect("read"),
                Some(record),
                "interval {i}"
            );
        }
        assert_eq!(store.interval(5).expect("read"), None);
    }

    #[test]
    fn empty_bins_are_present_and_zero_bins_refused() {
        let dir = TempDir::new("empty-bins");
        let path = dir.join("history.sqlite");
        let mut store = HistoryStore::open(&path, StoreSettings::default()).expect("open");
        assert_eq!(store.range().expect("range"), None);
        let record = IntervalRecord {
            start: 7200,
            seconds: 60,
            ..IntervalRecord::default()
        };
        store.record(&record).expect("record");
        let query = SummaryQuery {
            since: 0,
            until: 4 * 3600,
            bin_seconds: 3600,
            top_limit: 10,
            origin_of: None,
        };
        let summary = store.summary(&query).expect("summary");
        let starts: Vec<u64> = summary.bins.iter().map(|b| b.start).collect();
        assert_eq!(starts, [0, 3600, 7200, 10_800]);
        assert!(summary.rulesets.is_empty());
        let zero = SummaryQuery {
            bin_seconds: 0,
            ..query
        };
        let err = store.summary(&zero).expect_err("zero bins");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
