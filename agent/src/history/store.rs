//! The SQLite store of interval records: one writer (the daemon's recorder thread), any number
//! of read-only readers (`xdpguard report`) at the same time through WAL.
use std::{
    collections::{HashMap, HashSet},
    fs,
    io::ErrorKind,
    net::IpAddr,
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior, params};

use super::{
    model::{IntervalRecord, Ranking, TopRow},
    schema::{self, PackedSources, SCHEMA_VERSION},
};

/// How long a statement waits for the other side's lock (a checkpoint, the writer's commit).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The WAL file is cut back to this after a checkpoint, so one heavy burst does not leave it
/// large.
const WAL_SIZE_LIMIT: i64 = 16 << 20;
/// Free pages kept for the next intervals' rows instead of giving them back (at most; a
/// sixteenth of `max_bytes` when that is less), so a store at its bound does not shrink and
/// grow the file every interval.
const KEEP_FREE_PAGES: u64 = 1024;
/// Pages given back to the file system per write at most: a write after a large prune stays
/// short, the next ones give back the rest.
const VACUUM_PAGES_PER_WRITE: u64 = 16_384;

/// How long and how large the history may grow, and how much of an interval it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// Intervals older than this, counted back from the newest one recorded, are deleted.
    pub retention: Duration,
    /// The oldest intervals are deleted while the database's used pages exceed this.
    pub max_bytes: u64,
    /// Addresses kept per ruleset and interval; the rest only counted (`overflow`).
    pub max_sources_per_ruleset: usize,
    /// Rows kept per ranking and interval, the largest.
    pub top_rows_per_ranking: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 1 << 30,
            max_sources_per_ruleset: 10_000,
            top_rows_per_ranking: 20,
        }
    }
}

/// What one write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Intervals deleted by retention or by the size bound.
    pub intervals_pruned: u64,
    /// The database file and its WAL, after the write.
    pub bytes_on_disk: u64,
    /// The whole write: transaction, pruning, vacuum.
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database {}: {kind}, not a file", .path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("history database {}: its directory does not exist", .path.display())]
    NoDirectory { path: PathBuf },
    #[error("history database {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("history database {}: not a SQLite database", .path.display())]
    NotADatabase { path: PathBuf },
    #[error("history database {}: a SQLite database, but not an xdpguard history", .path.display())]
    NotAHistory { path: PathBuf },
    #[error(
        "history database {}: written by a newer xdpguard (schema {found}, this one knows {known})",
        .path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("history database {}: opened read-only", .path.display())]
    ReadOnly { path: PathBuf },
    #[error("history database {}: bad data: {what}", .path.display())]
    BadData { path: PathBuf, what: String },
    #[error("history database {}: bad query: {what}", .path.display())]
    BadQuery { path: PathBuf, what: String },
    #[error("history database {}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// A name's row id and the newest interval start known to use it.
#[derive(Clone, Copy, Debug)]
struct NameSlot {
    id: i64,
    last_start: u64,
}

/// The history database.
#[derive(Debug)]
pub struct HistoryStore {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    settings: StoreSettings,
    read_only: bool,
    /// The writer's copy of `name` rows it has used; cleared when a write fails, since the
    /// rolled-back rows may be in it.
    names: HashMap<String, NameSlot>,
}

impl HistoryStore {
    /// Opens the history at `path` for writing, creating the file and its tables when absent.
    ///
    /// # Errors
    /// When `path` is not a regular file (or a symlink to one), its directory is missing, it
    /// is not an xdpguard history, or a newer xdpguard wrote it.
    pub fn open(path: &Path, settings: StoreSettings) -> Result<Self, HistoryError> {
        check_path(path, true)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| open_error(path, source))?;
        let store = Self {
            conn,
            path: path.to_owned(),
            settings,
            read_only: false,
            names: HashMap::new(),
        };
        store.prepare_writer()?;
        Ok(store)
    }

    /// Opens an existing history for reading while a daemon may be writing it.
    ///
    /// # Errors
    /// As [`open`](Self::open), and when the file does not exist or holds no history yet.
    pub fn open_read_only(path: &Path) -> Result<Self, HistoryError> {
        check_path(path, false)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| open_error(path, source))?;
        let store = Self {
            conn,
            path: path.to_owned(),
            settings: StoreSettings::default(),
            read_only: true,
            names: HashMap::new(),
        };
        store
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| store.sql(e))?;
        match store.schema_version()? {
            SCHEMA_VERSION => Ok(store),
            0 => Err(HistoryError::NotAHistory {
                path: path.to_owned(),
            }),
            found => Err(store.newer(found)),
        }
    }

    fn prepare_writer(&self) -> Result<(), HistoryError> {
        let conn = &self.conn;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| self.sql(e))?;
        let version = self.schema_version()?;
        if version > SCHEMA_VERSION {
            return Err(self.newer(version));
        }
        let fresh = version == 0;
        if fresh {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
                .map_err(|e| self.sql(e))?;
            if tables > 0 {
                return Err(HistoryError::NotAHistory {
                    path: self.path.clone(),
                });
            }
            // Only takes effect before the first table exists; lets pruning give pages back.
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(|e| self.sql(e))?;
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| self.sql(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(HistoryError::BadData {
                path: self.path.clone(),
                what: format!("journal mode {mode}, not WAL"),
            });
        }
        // FULL: WAL mode keeps the file consistent through a kill -9 or a power loss either
        // way; NORMAL would only sync at checkpoints, so a power loss could take hours of
        // small intervals with it. FULL syncs the WAL at every commit, once per interval.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.sql(e))?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(|e| self.sql(e))?;
        if fresh {
            let create = format!(
                "BEGIN IMMEDIATE; {} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
                schema::CREATE
            );
            conn.execute_batch(&create).map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    fn schema_version(&self) -> Result<u32, HistoryError> {
        // The first read of the file: where a file that is not a database shows.
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|source| open_error(&self.path, source))
    }

    fn newer(&self, found: u32) -> HistoryError {
        HistoryError::NewerSchema {
            path: self.path.clone(),
            found,
            known: SCHEMA_VERSION,
        }
    }

    pub(super) fn sql(&self, source: rusqlite::Error) -> HistoryError {
        HistoryError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub(super) fn bad_data(&self, what: impl Into<String>) -> HistoryError {
        HistoryError::BadData {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    /// The database file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub const fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Records one interval in one transaction (replacing an interval of the same start),
    /// then prunes by retention and size.
    ///
    /// # Errors
    /// SQLite's (disk full, I/O), a read-only store, or a count above `i64::MAX`.
    pub fn record(&mut self, record: &IntervalRecord) -> Result<WriteStats, HistoryError> {
        self.record_all(std::slice::from_ref(record))
    }

    /// Records several intervals in one transaction and prunes once: for imports and fills,
    /// where a commit (and its sync) per interval would dominate.
    ///
    /// # Errors
    /// As [`record`](Self::record); nothing of the batch is kept then.
    pub fn record_all(&mut self, records: &[IntervalRecord]) -> Result<WriteStats, HistoryError> {
        let began = Instant::now();
        if self.read_only {
            return Err(HistoryError::ReadOnly {
                path: self.path.clone(),
            });
        }
        let intervals_pruned = match self.write(records) {
            Ok(pruned) => pruned,
            Err(source) => {
                self.names.clear();
                return Err(self.sql(source));
            }
        };
        Ok(WriteStats {
            intervals_pruned,
            bytes_on_disk: self.bytes_on_disk()?,
            duration: began.elapsed(),
        })
    }

    fn write(&mut self, records: &[IntervalRecord]) -> rusqlite::Result<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for record in records {
            insert_interval(&tx, &mut self.names, &self.settings, record)?;
        }
        let pruned = prune(&tx, &mut self.names, &self.settings)?;
        let vacuumed = vacuum(&tx, self.settings.max_bytes)?;
        tx.commit()?;
        if vacuumed > 0 {
            // The file only shrinks when the WAL is copied back; PASSIVE waits for no reader.
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
        Ok(pruned)
    }

    /// The database file and its WAL, in bytes.
    ///
    /// # Errors
    /// When the files cannot be read.
    pub fn bytes_on_disk(&self) -> Result<u64, HistoryError> {
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            match fs::metadata(&name) {
                Ok(meta) => total += meta.len(),
                Err(e) if e.kind() == ErrorKind::NotFound && !suffix.is_empty() => {}
                Err(source) => {
                    return Err(HistoryError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(total)
    }

    /// Pages in use times the page size: what `max_bytes` bounds.
    ///
    /// # Errors
    /// SQLite's.
    pub fn used_bytes(&self) -> Result<u64, HistoryError> {
        used_bytes(&self.conn).map_err(|e| self.sql(e))
    }

    /// SQLite's `PRAGMA integrity_check`: `ok`, or its findings one a line.
    ///
    /// # Errors
    /// SQLite's.
    pub fn integrity_check(&self) -> Result<String, HistoryError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.sql(e))?;
        let lines = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(|e| self.sql(e))?;
        Ok(lines.join("\n"))
    }
}

/// Refuses what SQLite would block on or misuse: directories, FIFOs, sockets, devices (also
/// behind a symlink), and a missing directory when creating.
fn check_path(path: &Path, create: bool) -> Result<(), HistoryError> {
    let not_a_file = |kind| HistoryError::NotAFile {
        path: path.to_owned(),
        kind,
    };
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) => {
            let kind = meta.file_type();
            Err(not_a_file(if kind.is_dir() {
                "a directory"
            } else if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_socket() {
                "a socket"
            } else if kind.is_block_device() || kind.is_char_device() {
                "a device"
            } else {
                "not a regular file"
            }))
        }
        Err(e) if e.kind() == ErrorKind::NotFound && create => {
            if fs::symlink_metadata(path).is_ok() {
                return Err(not_a_file("a dangling symbolic link"));
            }
            let parent = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            if fs::metadata(parent).is_ok_and(|meta| meta.is_dir()) {
                Ok(())
            } else {
                Err(HistoryError::NoDirectory {
                    path: path.to_owned(),
                })
            }
        }
        Err(source) => Err(HistoryError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn open_error(path: &Path, source: rusqlite::Error) -> HistoryError {
    if source.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
        HistoryError::NotADatabase {
            path: path.to_owned(),
        }
    } else {
        HistoryError::Sqlite {
            path: path.to_owned(),
            source,
        }
    }
}

fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name| conn.pragma_query_value(None, name, |row| row.get::<_, u64>(0));
    let pages = pragma("page_count")?.saturating_sub(pragma("freelist_count")?);
    Ok(pages.saturating_mul(pragma("page_size")?))
}

/// The row id of `text` in `name`, inserting it, and marking it used by `start`.
fn intern(
    tx: &Transaction<'_>,
    names: &mut HashMap<String, NameSlot>,
    text: &str,
    start: u64,
) -> rusqlite::Result<i64> {
    let slot = if let Some(slot) = names.get_mut(text) {
        slot
    } else {
        let found = tx
            .prepare_cached("SELECT id, last_start FROM name WHERE text = ?1")?
            .query_row([text], |row| {
                Ok(NameSlot {
                    id: row.get(0)?,
                    last_start: row.get(1)?,
                })
            });
        let slot = match found {
            Ok(slot) => slot,
            Err(rusqlite::Error::QueryReturnedNoRows) => {
                tx.prepare_cached("INSERT INTO name (text, last_start) VALUES (?1, ?2)")?
                    .execute(params![text, start])?;
                NameSlot {
                    id: tx.last_insert_rowid(),
                    last_start: start,
                }
            }
            Err(e) => return Err(e),
        };
        names.entry(text.to_owned()).or_insert(slot)
    };
    if slot.last_start < start {
        tx.prepare_cached("UPDATE name SET last_start = ?1 WHERE id = ?2")?
            .execute(params![start, slot.id])?;
        slot.last_start = start;
    }
    Ok(slot.id)
}

fn delete_intervals(tx: &Transaction<'_>, condition: &str, bound: u64) -> rusqlite::Result<u64> {
    let mut deleted = 0;
    for table in schema::INTERVAL_TABLES {
        let rows = tx
            .prepare_cached(&format!("DELETE FROM {table} WHERE start {condition} ?1"))?
            .execute([bound])?;
        if table == "interval" {
            deleted = u64::try_from(rows).unwrap_or(u64::MAX);
        }
    }
    Ok(deleted)
}

fn insert_interval(
    tx: &Transaction<'_>,
    names: &mut HashMap<String, NameSlot>,
    settings: &StoreSettings,
    record: &IntervalRecord,
) -> rusqlite::Result<()> {
    let start = record.start;
    delete_intervals(tx, "=", start)?;
    let p = &record.packets;
    let t = &record.traffic;
    tx.prepare_cached(
        "INSERT INTO interval VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        start,
        record.seconds,
        p.dropped_v4,
        p.dropped_v6,
        p.passed_v4,
        p.passed_v6,
        p.dropped_bytes,
        p.passed_bytes,
        t.inbound_local,
        t.inbound_external,
        t.outbound_local,
        t.outbound_external,
    ])?;

    let mut decisions: HashMap<i64, u64> = HashMap::new();
    for (kind, count) in &record.decisions {
        let id = intern(tx, names, kind, start)?;
        let sum = decisions.entry(id).or_default();
        *sum = sum.saturating_add(*count);
    }
    let mut insert = tx.prepare_cached("INSERT INTO decision VALUES (?1, ?2, ?3)")?;
    for (id, count) in decisions {
        insert.execute(params![start, id, count])?;
    }

    for (id, (sources, overflow)) in capped_sources(tx, names, settings, record)? {
        if sources.len() == 0 && overflow == 0 {
            continue;
        }
        tx.prepare_cached("INSERT INTO scored VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![
                start,
                id,
                overflow,
                sources.v4.len(),
                sources.to_blob()
            ])?;
    }

    let mut insert = tx.prepare_cached("INSERT INTO top VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
    for row in capped_top(&record.top, settings.top_rows_per_ranking) {
        let key = intern(tx, names, &row.key, start)?;
        let origin = row
            .origin
            .as_deref()
            .map(|text| intern(tx, names, text, start))
            .transpose()?;
        let announced = row
            .announced
            .as_deref()
            .map(|text| intern(tx, names, text, start))
            .transpose()?;
        insert.execute(params![
            start,
            schema::ranking_code(row.ranking),
            key,
            row.packets,
            row.bytes,
            origin,
            announced
        ])?;
    }

    let mut anomalies: HashMap<(i64, i64, i64), (u64, u64)> = HashMap::new();
    for anomaly in &record.anomalies {
        let prefix = intern(tx, names, &anomaly.prefix, start)?;
        let (kind, port) = schema::anomaly_code(anomaly.kind);
        let sum = anomalies.entry((prefix, kind, port)).or_default();
        sum.0 = sum.0.saturating_add(anomaly.flows);
        sum.1 = sum.1.saturating_add(anomaly.bytes);
    }
    let mut insert = tx.prepare_cached("INSERT INTO anomaly VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for ((prefix, kind, port), (flows, bytes)) in anomalies {
        insert.execute(params![start, prefix, kind, port, flows, bytes])?;
    }
    Ok(())
}

/// Per ruleset id: its distinct addresses, the first `max_sources_per_ruleset` of them in the
/// record's order (sorted for storage), and the overflow with what the cap cut.
fn capped_sources(
    tx: &Transaction<'_>,
    names: &mut HashMap<String, NameSlot>,
    settings: &StoreSettings,
    record: &IntervalRecord,
) -> rusqlite::Result<HashMap<i64, (PackedSources, u64)>> {
    let mut by_ruleset: HashMap<i64, (PackedSources, u64, HashSet<IpAddr>)> = HashMap::new();
    for scored in &record.scored {
        let id = intern(tx, names, &scored.ruleset, record.start)?;
        let (sources, overflow, seen) = by_ruleset.entry(id).or_default();
        *overflow = overflow.saturating_add(scored.overflow);
        for addr in &scored.addresses {
            let addr = addr.to_canonical();
            if !seen.insert(addr) {
                continue;
            }
            if sources.len() < settings.max_sources_per_ruleset {
                sources.push(addr);
            } else {
                *overflow = overflow.saturating_add(1);
            }
        }
    }
    Ok(by_ruleset
        .into_iter()
        .map(|(id, (mut sources, overflow, _))| {
            sources.sort();
            (id, (sources, overflow))
        })
        .collect())
}

/// The record's top rows summed per (ranking, key), the largest `per_ranking` of each
/// ranking by its measure.
pub(super) fn capped_top(rows: &[TopRow], per_ranking: usize) -> Vec<TopRow> {
    let mut merged: HashMap<(Ranking, &str), TopRow> = HashMap::new();
    for row in rows {
        merged
            .entry((row.ranking, row.key.as_str()))
            .and_modify(|sum| {
                sum.packets = sum.packets.saturating_add(row.packets);
                sum.bytes = sum.bytes.saturating_add(row.bytes);
                if sum.origin.is_none() {
                    sum.origin.clone_from(&row.origin);
                }
                if sum.announced.is_none() {
                    sum.announced.clone_from(&row.announced);
                }
            })
            .or_insert_with(|| row.clone());
    }
    let mut rows: Vec<TopRow> = merged.into_values().collect();
    sort_top(&mut rows);
    let mut kept = Vec::with_capacity(rows.len());
    let mut current = None;
    let mut in_ranking = 0;
    for row in rows {
        if current != Some(row.ranking) {
            current = Some(row.ranking);
            in_ranking = 0;
        }
        if in_ranking < per_ranking {
            in_ranking += 1;
            kept.push(row);
        }
    }
    kept
}

/// By ranking, then largest first by the ranking's measure, then by key.
pub(super) fn sort_top(rows: &mut [TopRow]) {
    rows.sort_by(|a, b| {
        let measure = |row: &TopRow| {
            if schema::ranks_by_packets(row.ranking) {
                (row.packets, row.bytes)
            } else {
                (row.bytes, row.packets)
            }
        };
        a.ranking
            .cmp(&b.ranking)
            .then_with(|| measure(b).cmp(&measure(a)))
            .then_with(|| a.key.cmp(&b.key))
    });
}

/// Deletes intervals older than the retention, then the oldest while the used pages exceed
/// `max_bytes` (never the newest one), then the names no interval uses any more.
fn prune(
    tx: &Transaction<'_>,
    names: &mut HashMap<String, NameSlot>,
    settings: &StoreSettings,
) -> rusqlite::Result<u64> {
    let newest: Option<u64> =
        tx.query_row("SELECT max(start) FROM interval", [], |row| row.get(0))?;
    let Some(newest) = newest else {
        return Ok(0);
    };
    let mut pruned =
        delete_intervals(tx, "<", newest.saturating_sub(settings.retention.as_secs()))?;
    loop {
        let used = used_bytes(tx)?;
        if used <= settings.max_bytes {
            break;
        }
        let count: u64 = tx.query_row("SELECT count(*) FROM interval", [], |row| row.get(0))?;
        if count <= 1 {
            break;
        }
        // As many of the oldest as the excess holds at the average interval size: one or
        // two rounds instead of one per interval.
        let average = (used / count).max(1);
        let chunk = (used - settings.max_bytes)
            .div_ceil(average)
            .clamp(1, count - 1);
        let last: u64 = tx.query_row(
            "SELECT start FROM interval ORDER BY start LIMIT 1 OFFSET ?1",
            [chunk - 1],
            |row| row.get(0),
        )?;
        pruned += delete_intervals(tx, "<=", last)?;
    }
    if pruned > 0 {
        let oldest: Option<u64> =
            tx.query_row("SELECT min(start) FROM interval", [], |row| row.get(0))?;
        let oldest = oldest.unwrap_or(u64::MAX);
        tx.prepare_cached("DELETE FROM name WHERE last_start < ?1")?
            .execute([oldest])?;
        names.retain(|_, slot| slot.last_start >= oldest);
    }
    Ok(pruned)
}

/// Gives free pages beyond a small reserve back to the file system, a bounded number per
/// write. Returns how many.
fn vacuum(tx: &Transaction<'_>, max_bytes: u64) -> rusqlite::Result<u64> {
    let pragma = |name| tx.pragma_query_value(None, name, |row| row.get::<_, u64>(0));
    let free = pragma("freelist_count")?;
    let page_size = pragma("page_size")?.max(1);
    let keep = KEEP_FREE_PAGES.min(max_bytes / page_size / 16);
    let pages = free.saturating_sub(keep).min(VACUUM_PAGES_PER_WRITE);
    if pages > 0 {
        // One result row per page freed: it has to be stepped to the end.
        let mut stmt = tx.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use std::{ffi::CString, net::Ipv4Addr, os::unix::ffi::OsStrExt as _};

    use rand::{SeedableRng as _, rngs::StdRng};
    use rusqlite::types::Value;

    use super::*;
    use crate::history::{
        model::{ScoredSources, Summary},
        query::SummaryQuery,
        test_support::{RANKINGS, TempDir, random_record},
    };

    fn record_at(start: u64, ruleset: &str, sources: u32) -> IntervalRecord {
        IntervalRecord {
            start,
            seconds: 60,
            scored: vec![ScoredSources {
                ruleset: ruleset.to_owned(),
                addresses: (0..sources)
                    .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
                    .collect(),
                overflow: 0,
            }],
            ..IntervalRecord::default()
        }
    }

    fn whole(store: &HistoryStore) -> Summary {
        store
            .summary(&SummaryQuery {
                since: 0,
                until: 10_000_000,
                bin_seconds: 10_000_000,
                top_limit: 100,
                origin_of: None,
            })
            .expect("summary")
    }

    #[test]
    fn a_new_file_gets_wal_full_sync_incremental_vacuum_and_the_version() {
        let dir = TempDir::new("pragmas");
        let path = dir.join("history.sqlite");
        let store = HistoryStore::open(&path, StoreSettings::default()).expect("open");
        let pragma = |name| {
            store
                .conn
                .pragma_query_value(None, name, |row| row.get::<_, Value>(0))
                .expect(name)
        };
        assert_eq!(pragma("journal_mode"), Value::Text("wal".to_owned()));
        assert_eq!(pragma("synchronous"), Value::Integer(2), "FULL");
        assert_eq!(pragma("auto_vacuum"), Value::Integer(2), "INCREMENTAL");
        assert_eq!(
            pragma("user_version"),
            Value::Integer(i64::from(SCHEMA_VERSION))
        );
        assert_eq!(store.integrity_check().expect("check"), "ok");
        drop(store);
        // Opening again keeps the tables.
        HistoryStore::open(&path, StoreSettings::default()).expect("reopen");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = TempDir::new("newer");
        let path = dir.join("history.sqlite");
        drop(HistoryStore::open(&path, StoreSettings::default()).expect("open"));
        Connection::open(&path)
            .and_then(|conn| conn.pragma_update(None, "user_version", 7))
            .expect("bump");
        let want = format!(
            "history database {}: written by a newer xdpguard (schema 7, this one knows {SCHEMA_VERSION})",
            path.display()
        );
        let err = HistoryStore::open(&path, StoreSettings::default()).expect_err("newer");
        assert_eq!(err.to_string(), want);
        let err = HistoryStore::open_read_only(&path).expect_err("newer");
        assert_eq!(err.to_string(), want);
    }

    #[test]
    fn files_that_are_not_histories_are_refused_by_name() {
        let dir = TempDir::new("not-a-db");
        let text = dir.join("notes.txt");
        fs::write(
            &text,
            "this is not a database, only some text. ".repeat(200),
        )
        .expect("write");
        for err in [
            HistoryStore::open(&text, StoreSettings::default()).expect_err("text"),
            HistoryStore::open_read_only(&text).expect_err("text"),
        ] {
            assert!(matches!(err, HistoryError::NotADatabase { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("history database {}: not a SQLite database", text.display())
            );
        }
        let other = dir.join("other.sqlite");
        Connection::open(&other)
            .and_then(|conn| conn.execute_batch("CREATE TABLE t (x)"))
            .expect("other database");
        let err = HistoryStore::open(&other, StoreSettings::default()).expect_err("other");
        assert!(matches!(err, HistoryError::NotAHistory { .. }), "{err:?}");
        let missing = dir.join("missing.sqlite");
        let err = HistoryStore::open_read_only(&missing).expect_err("missing");
        assert!(err.to_string().contains("missing.sqlite"), "{err}");
        assert!(!missing.exists(), "a reader creates nothing");
        let err = HistoryStore::open(&dir.join("no/such/dir.sqlite"), StoreSettings::default())
            .expect_err("no directory");
        assert!(matches!(err, HistoryError::NoDirectory { .. }), "{err:?}");
    }

    #[test]
    fn fifos_directories_and_symlinks_to_them_are_refused() {
        let dir = TempDir::new("fifo");
        let fifo = dir.join("history.fifo");
        let name = CString::new(fifo.as_os_str().as_bytes()).expect("path");
        // SAFETY: a NUL-terminated path; mkfifo only reads it.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
        let link = dir.join("link.sqlite");
        std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
        let dangling = dir.join("dangling.sqlite");
        std::os::unix::fs::symlink(dir.join("nothing"), &dangling).expect("symlink");
        for (path, kind) in [
            (fifo.as_path(), "a FIFO"),
            (link.as_path(), "a FIFO"),
            (dir.path(), "a directory"),
            (dangling.as_path(), "a dangling symbolic link"),
        ] {
            let err = HistoryStore::open(path, StoreSettings::default()).expect_err("not a file");
            assert_eq!(
                err.to_string(),
                format!("history database {}: {kind}, not a file", path.display())
            );
        }
        let err = HistoryStore::open_read_only(&fifo).expect_err("fifo");
        assert!(matches!(err, HistoryError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn recording_a_start_again_replaces_it() {
        let dir = TempDir::new("replace");
        let path = dir.join("history.sqlite");
        let mut store = HistoryStore::open(&path, StoreSettings::default()).expect("open");
        let mut rng = StdRng::seed_from_u64(3);
        let first = random_record(&mut rng, 600, 20, 5);
        let mut second = record_at(600, "sshd", 3);
        second.packets.dropped_v4 = 11;
        store.record(&first).expect("first");
        store.record(&second).expect("second");
        store.record(&second).expect("again");
        assert_eq!(store.interval_count().expect("count"), 1);
        assert_eq!(store.interval(600).expect("read"), Some(second));
        let summary = whole(&store);
        assert_eq!(summary.bins[0].packets.dropped_v4, 11);
        assert_eq!(summary.rulesets, ["sshd"]);
        assert!(summary.top.is_empty() && summary.anomalies.is_empty());
    }

    #[test]
    fn retention_prunes_by_the_newest_start_and_forgets_unused_names() {
        let dir = TempDir::new("retention");
        let path = dir.join("history.sqlite");
        let settings = StoreSettings {
            retention: Duration::from_secs(600),
            ..StoreSettings::default()
        };
        let mut store = HistoryStore::open(&path, settings).expect("open");
        let mut pruned = 0;
        for i in 0..30 {
            // Each interval's own ruleset name: only the kept ones' names stay.
            let stats = store
                .record(&record_at(10_000 + i * 60, &format!("rs{i}"), 2))
                .expect("record");
            pruned += stats.intervals_pruned;
            assert!(stats.bytes_on_disk > 0);
        }
        // Kept: starts from newest - 600 on, 11 of them.
        assert_eq!(
            store.range().expect("range"),
            Some((10_000 + 19 * 60, 10_000 + 29 * 60))
        );
        assert_eq!(store.interval_count().expect("count"), 11);
        assert_eq!(pruned, 19);
        let names: i64 = store
            .conn
            .query_row("SELECT count(*) FROM name", [], |row| row.get(0))
            .expect("names");
        assert_eq!(names, 11);
        // An older interval recorded late goes at the next prune, its name with it.
        store.record(&record_at(100, "late", 1)).expect("late");
        assert_eq!(store.interval_count().expect("count"), 11);
        assert_eq!(whole(&store).rulesets.len(), 11);
    }

    #[test]
    fn max_bytes_bounds_the_file() {
        let dir = TempDir::new("max-bytes");
        let path = dir.join("history.sqlite");
        let max_bytes = 256 << 10;
        let settings = StoreSettings {
            max_bytes,
            ..StoreSettings::default()
        };
        let mut store = HistoryStore::open(&path, settings).expect("open");
        let mut pruned = 0;
        let intervals = 150;
        for i in 0..intervals {
            // 2,000 IPv4 sources: about 8 KiB an interval, 1.2 MiB in all.
            let stats = store
                .record(&record_at(i * 60, &format!("rs{}", i % 7), 2_000))
                .expect("record");
            pruned += stats.intervals_pruned;
            assert!(
                store.used_bytes().expect("used") <= max_bytes,
                "interval {i}"
            );
        }
        let kept = store.interval_count().expect("count");
        assert!(kept > 10 && kept < intervals / 2, "{kept} kept");
        assert_eq!(pruned + kept, intervals);
        assert_eq!(
            store.range().expect("range").map(|(_, newest)| newest),
            Some((intervals - 1) * 60)
        );
        store
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        let file = fs::metadata(&path).expect("stat").len();
        // The bound, the reserve of free pages kept for the next interval, a few pages.
        assert!(
            file <= max_bytes + max_bytes / 16 + 4 * 4096,
            "{file} bytes on disk"
        );
        assert_eq!(store.integrity_check().expect("check"), "ok");
    }

    #[test]
    fn pruning_gives_the_pages_back() {
        let dir = TempDir::new("shrink");
        let path = dir.join("history.sqlite");
        let settings = StoreSettings {
            retention: Duration::from_secs(3600),
            // Under the 40 intervals' 800 KiB; its free-page reserve is 64 KiB.
            max_bytes: 1 << 20,
            ..StoreSettings::default()
        };
        let mut store = HistoryStore::open(&path, settings).expect("open");
        let batch: Vec<IntervalRecord> =
            (0..40).map(|i| record_at(i * 60, "sshd", 5_000)).collect();
        store.record_all(&batch).expect("batch");
        let checkpoint = |store: &HistoryStore| {
            store
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .expect("checkpoint");
            fs::metadata(&path).expect("stat").len()
        };
        let full = checkpoint(&store);
        assert!(full > 40 * 20_000, "{full} bytes");
        // A day later: retention takes all 40.
        let stats = store.record(&record_at(86_400, "sshd", 1)).expect("record");
        assert_eq!(stats.intervals_pruned, 40);
        let shrunk = checkpoint(&store);
        assert!(shrunk < full / 4, "{full} bytes, then {shrunk}");
    }

    #[test]
    fn caps_count_the_rest_as_overflow_and_mark_bins_truncated() {
        let dir = TempDir::new("caps");
        let path = dir.join("history.sqlite");
        let settings = StoreSettings {
            max_sources_per_ruleset: 10,
            top_rows_per_ranking: 3,
            ..StoreSettings::default()
        };
        let mut store = HistoryStore::open(&path, settings).expect("open");
        let mut capped = record_at(60, "sshd", 25);
        // Repeats and a mapped spelling of a kept address are not more sources.
        let repeats: Vec<IpAddr> = capped.scored[0].addresses[..5].to_vec();
        capped.scored[0].addresses.extend(repeats);
        capped.scored[0]
            .addresses
            .push(IpAddr::V6(Ipv4Addr::from(0x0a00_0000).to_ipv6_mapped()));
        capped.scored[0].overflow = 3;
        for ranking in RANKINGS {
            for i in 0..8_u64 {
                capped.top.push(TopRow {
                    ranking,
                    key: format!("key{i}"),
                    packets: i,
                    bytes: 100 - i,
                    origin: None,
                    announced: None,
                });
            }
        }
        store.record(&capped).expect("capped");
        store.record(&record_at(120, "nginx", 4)).expect("small");
        let stored = store.interval(60).expect("read").expect("there");
        assert_eq!(stored.scored[0].addresses.len(), 10);
        assert_eq!(stored.scored[0].overflow, 3 + 15);
        for ranking in RANKINGS {
            let keys: Vec<&str> = stored
                .top
                .iter()
                .filter(|row| row.ranking == ranking)
                .map(|row| row.key.as_str())
                .collect();
            let want = if schema::ranks_by_packets(ranking) {
                ["key7", "key6", "key5"]
            } else {
                ["key0", "key1", "key2"]
            };
            assert_eq!(keys, want, "{ranking:?}");
        }
        let summary = whole(&store);
        let rulesets = &summary.bins[0].rulesets;
        assert_eq!(rulesets.len(), 2);
        assert_eq!(
            (rulesets[0].ruleset.as_str(), rulesets[0].truncated),
            ("nginx", false)
        );
        assert_eq!(
            (
                rulesets[1].ruleset.as_str(),
                rulesets[1].sources,
                rulesets[1].truncated
            ),
            ("sshd", 10, true)
        );
    }

    #[test]
    fn bad_blobs_read_back_are_errors() {
        let dir = TempDir::new("bad-blob");
        let path = dir.join("history.sqlite");
        let mut store = HistoryStore::open(&path, StoreSettings::default()).expect("open");
        store.record(&record_at(60, "sshd", 3)).expect("record");
        store
            .conn
            .execute("UPDATE scored SET v4_count = 2", [])
            .expect("corrupt");
        let err = store.interval(60).expect_err("bad blob");
        assert!(matches!(err, HistoryError::BadData { .. }), "{err:?}");
        let err = store
            .summary(&SummaryQuery {
                since: 0,
                until: 120,
                bin_seconds: 60,
                top_limit: 1,
                origin_of: None,
            })
            .expect_err("bad blob");
        assert!(err.to_string().contains("12 bytes for 2 IPv4"), "{err}");
    }

    #[test]
    fn readers_see_commits_and_cannot_write() {
        let dir = TempDir::new("reader");
        let path = dir.join("history.sqlite");
        let mut writer = HistoryStore::open(&path, StoreSettings::default()).expect("open");
        writer.record(&record_at(60, "sshd", 3)).expect("record");
        let mut reader = HistoryStore::open_read_only(&path).expect("reader");
        assert_eq!(reader.interval_count().expect("count"), 1);
        writer.record(&record_at(120, "sshd", 3)).expect("record");
        assert_eq!(reader.interval_count().expect("count"), 2);
        let err = reader
            .record(&record_at(180, "sshd", 1))
            .expect_err("read-only");
        assert!(matches!(err, HistoryError::ReadOnly { .. }), "{err:?}");
    }
}
