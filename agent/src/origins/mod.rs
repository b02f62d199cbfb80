//! Origin AS and announced prefix per address, from RIS whois dumps the operator fetches (the
//! daemon never downloads anything itself).
//!
//! [`Origins`] is the shared, cheaply cloned handle: readers take the current table (an `Arc`)
//! and look up as many addresses as they like; the watcher thread builds a new table off to
//! the side when a file changes or on SIGHUP, and swaps it in only if every file read cleanly,
//! so a truncated download never replaces a good table.
pub mod ris;
pub mod table;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

pub use ris::{FileStats, RisError};
pub use table::{Announcement, OriginAs, OriginTable, TableBuilder};

/// The `[origins]` table of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginsConfig {
    /// RIS whois dumps, gzip or plain; IPv4 and IPv6 rows may be in any of them.
    pub files: Vec<PathBuf>,
    /// Rows seen by fewer RIS peers are left out (leaks, tests, hijacks seen by few).
    pub min_peers: u32,
    /// How often the files are checked for a change (size, modification time, inode).
    pub check_every: Duration,
}

impl Default for OriginsConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            min_peers: 10,
            check_every: Duration::from_secs(30),
        }
    }
}

/// What the last load did, for `status`, the metrics and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadStatus {
    /// Tables installed since the daemon started; 0: none yet.
    pub generation: u64,
    pub loaded_at: Option<SystemTime>,
    pub load_time: Duration,
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub heap_bytes: usize,
    pub files: Vec<(PathBuf, FileStats)>,
    /// The last load that failed (its table was not installed), and when.
    pub last_error: Option<(SystemTime, String)>,
    pub failed_loads: u64,
}

#[derive(Debug, Default)]
struct Shared {
    table: Mutex<Arc<OriginTable>>,
    status: Mutex<LoadStatus>,
    /// `[origins]` names files (a reload may add or remove the table).
    configured: std::sync::atomic::AtomicBool,
}

/// The current table, shared.
#[derive(Clone, Debug, Default)]
pub struct Origins(Arc<Shared>);

impl Origins {
    /// No table: every lookup finds nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle holding `table` (tests, offline tools).
    pub fn with_table(table: OriginTable) -> Self {
        let origins = Self::new();
        origins.install(table, Vec::new(), Duration::ZERO);
        origins
    }

    /// The table in use now. Hold it for a batch of lookups, not for ever: a reload frees the
    /// old one only when its last holder lets go.
    pub fn table(&self) -> Arc<OriginTable> {
        Arc::clone(&self.0.table.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the configuration names dumps to read.
    pub fn is_configured(&self) -> bool {
        self.0.configured.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_configured(&self, configured: bool) {
        self.0
            .configured
            .store(configured, std::sync::atomic::Ordering::Relaxed);
    }

    /// Drop the table (the configuration no longer names any dump).
    pub fn clear(&self) {
        *self.0.table.lock().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(OriginTable::empty());
        let mut status = self.0.status.lock().unwrap_or_else(PoisonError::into_inner);
        *status = LoadStatus {
            generation: status.generation,
            ..LoadStatus::default()
        };
    }

    pub fn status(&self) -> LoadStatus {
        self.0
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn install(&self, table: OriginTable, files: Vec<(PathBuf, FileStats)>, took: Duration) {
        let (v4, v6) = table.len();
        let heap_bytes = table.heap_bytes();
        *self.0.table.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        let mut status = self.0.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.generation += 1;
        status.loaded_at = Some(SystemTime::now());
        status.load_time = took;
        status.prefixes_v4 = v4;
        status.prefixes_v6 = v6;
        status.heap_bytes = heap_bytes;
        status.files = files;
    }

    fn failed(&self, error: &RisError) {
        let mut status = self.0.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.failed_loads += 1;
        status.last_error = Some((SystemTime::now(), error.to_string()));
    }

    /// Load every file of `config` and install the table; on any error, keep the table in use.
    ///
    /// # Errors
    /// The first file that failed; nothing was installed.
    pub fn reload(&self, config: &OriginsConfig) -> Result<LoadStatus, RisError> {
        let started = Instant::now();
        match load(config) {
            Ok((table, files)) => {
                self.install(table, files, started.elapsed());
                Ok(self.status())
            }
            Err(error) => {
                self.failed(&error);
                Err(error)
            }
        }
    }
}

/// Read every file of `config` into one table.
///
/// # Errors
/// The first file that could not be read whole.
pub fn load(config: &OriginsConfig) -> Result<(OriginTable, Vec<(PathBuf, FileStats)>), RisError> {
    let mut builder = TableBuilder::new();
    let mut files = Vec::with_capacity(config.files.len());
    for path in &config.files {
        let stats = ris::read_file(path, config.min_peers, &mut builder)?;
        files.push((path.clone(), stats));
    }
    Ok((builder.build(), files))
}

/// What identifies a file's version without reading it: a download replaced by rename
/// changes the inode, an in-place rewrite the size or modification time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Vec<Option<(u64, u64, SystemTime)>>);

fn fingerprint(config: &OriginsConfig) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    Fingerprint(
        config
            .files
            .iter()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.ino(), meta.len(), meta.modified().ok()?))
            })
            .collect(),
    )
}

/// A message to the watcher thread.
enum Command {
    Reload(OriginsConfig),
    Stop,
}

/// The thread that reloads the table when a file changes, or when told (SIGHUP).
pub struct OriginsWatcher {
    commands: std::sync::mpsc::Sender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OriginsWatcher {
    /// Load in the background (the daemon does not wait for a million rows to start
    /// enforcing), then watch. `on_install` runs after each table is installed (the ASN
    /// blocks follow it).
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(
        origins: Origins,
        config: OriginsConfig,
        on_install: Box<dyn Fn(&LoadStatus) + Send>,
    ) -> std::io::Result<Self> {
        let (commands, inbox) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("origins".to_owned())
            .spawn(move || watch(&origins, config, &inbox, &*on_install))?;
        Ok(Self {
            commands,
            thread: Some(thread),
        })
    }

    /// Reload now, with this configuration (SIGHUP).
    pub fn reload(&self, config: OriginsConfig) {
        let _ = self.commands.send(Command::Reload(config));
    }
}

impl Drop for OriginsWatcher {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(
    origins: &Origins,
    mut config: OriginsConfig,
    inbox: &std::sync::mpsc::Receiver<Command>,
    on_install: &dyn Fn(&LoadStatus),
) {
    let mut seen: Option<Fingerprint> = None;
    let mut load_now = true;
    loop {
        if config.files.is_empty() {
            load_now = false;
        }
        let current = fingerprint(&config);
        if load_now || seen.as_ref().is_some_and(|seen| *seen != current) {
            // A file still being written changes again within a check: wait for it to settle
            // unless told to load now.
            if !load_now {
                std::thread::sleep(Duration::from_secs(1));
            }
            let settled = fingerprint(&config);
            if load_now || settled == current {
                match origins.reload(&config) {
                    Ok(status) => {
                        log::info!(
                            "origins: {} IPv4 and {} IPv6 announced prefixes from {} files in {:.1}s ({} MiB)",
                            status.prefixes_v4,
                            status.prefixes_v6,
                            status.files.len(),
                            status.load_time.as_secs_f64(),
                            status.heap_bytes >> 20
                        );
                        for (path, stats) in &status.files {
                            if let Some((line, reason)) = &stats.first_malformed {
                                log::warn!(
                                    "origins: {}: {} malformed lines skipped; the first, line {line}: {reason}",
                                    path.display(),
                                    stats.malformed
                                );
                            }
                        }
                        on_install(&status);
                    }
                    Err(error) => {
                        log::error!("origins: {error}; the table in use stays");
                    }
                }
                seen = Some(settled);
            }
        } else if seen.is_none() {
            seen = Some(current);
        }
        load_now = false;
        match inbox.recv_timeout(config.check_every) {
            Ok(Command::Reload(new)) => {
                config = new;
                load_now = true;
            }
            Ok(Command::Stop) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_reload_keeps_the_table_in_use_and_says_why() {
        let dir = std::env::temp_dir().join(format!("xdpguard-origins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dump.txt");
        std::fs::write(&path, "64500\t203.0.113.0/24\t50\n").unwrap();
        let config = OriginsConfig {
            files: vec![path.clone()],
            ..OriginsConfig::default()
        };
        let origins = Origins::new();
        assert!(
            origins
                .table()
                .lookup("203.0.113.1".parse().unwrap())
                .is_none()
        );
        origins.reload(&config).unwrap();
        let held = origins.table();
        assert_eq!(
            held.lookup("203.0.113.1".parse().unwrap())
                .unwrap()
                .origin
                .single(),
            Some(64500)
        );

        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]).unwrap();
        let err = origins.reload(&config).unwrap_err();
        assert!(err.to_string().contains("dump.txt"), "{err}");
        let status = origins.status();
        assert_eq!(status.generation, 1);
        assert_eq!(status.failed_loads, 1);
        assert!(status.last_error.unwrap().1.contains("dump.txt"));
        assert!(
            origins
                .table()
                .lookup("203.0.113.1".parse().unwrap())
                .is_some(),
            "the previous table stays in use"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_watcher_reloads_when_a_file_is_replaced() {
        let dir =
            std::env::temp_dir().join(format!("xdpguard-origins-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dump.txt");
        std::fs::write(&path, "64500\t203.0.113.0/24\t50\n").unwrap();
        let config = OriginsConfig {
            files: vec![path.clone()],
            min_peers: 10,
            check_every: Duration::from_millis(50),
        };
        let origins = Origins::new();
        let (installed, told) = std::sync::mpsc::channel();
        let watcher = OriginsWatcher::start(
            origins.clone(),
            config,
            Box::new(move |status| {
                let _ = installed.send(status.generation);
            }),
        )
        .unwrap();
        assert_eq!(told.recv_timeout(Duration::from_secs(30)).unwrap(), 1);
        // Replaced by rename, as a fetch script does.
        let fresh = dir.join("dump.txt.new");
        std::fs::write(&fresh, "64501\t203.0.113.0/24\t50\n").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        assert_eq!(told.recv_timeout(Duration::from_secs(30)).unwrap(), 2);
        let found = origins.table();
        let found = found.lookup("203.0.113.1".parse().unwrap()).unwrap();
        assert_eq!(found.origin.single(), Some(64501));
        drop(watcher);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
