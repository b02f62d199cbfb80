//! `xdpguard run`: wire the data path, the decision owner, the control socket and the
//! metrics listener together, and live under systemd (notify, reload, stop).
pub mod lock;
mod process_metrics;
mod recorder;
pub mod watchdog;

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use self::recorder::Recorder;
use crate::{
    api::control::{ControlError, ControlServer, Request, server},
    clock::{Clock, SystemClock},
    detect::logs::{LogCommand, LogScoring},
    detect::traffic::volume::engine::VolumeEngine,
    enforce::dataplane::{Capacities, Dataplane, DataplaneError, Opened, ensure_bpffs},
    enforce::decision::{DecisionStore, StateError},
    enforce::owner::{self, Command, Handle, Owner, OwnerConfig, OwnerError},
    error_chain,
    history::tap::SharedTap,
    origins::{Origins, OriginsConfig, OriginsWatcher},
    peers::crowdsec::{bouncer::Bouncer, metrics::BouncerStats},
    peers::fleet::{agent::Fleet, metrics::FleetStats},
    prefix::Prefix,
};

/// Everything the daemon needs from its configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub owner: OwnerConfig,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    pub control_limits: crate::api::listener::Limits,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_limits: crate::api::listener::Limits,
    pub reconcile_every: Duration,
    pub capacities: Capacities,
    pub rulesets: Vec<crate::detect::logs::ruleset::Ruleset>,
    pub inputs: Vec<crate::detect::logs::config::InputConfig>,
    pub scoring: crate::detect::logs::offenders::ScoringConfig,
    pub volume: crate::detect::traffic::volume::VolumeConfig,
    /// `[crowdsec]`: poll the local API as its bouncer.
    pub crowdsec: Option<crate::peers::crowdsec::config::CrowdsecConfig>,
    /// `[fleet]`: share decisions through NATS.
    pub fleet: Option<crate::peers::fleet::config::FleetConfig>,
    /// `[origins]`: RIS whois dumps for origin AS and announced prefix.
    pub origins: Option<OriginsConfig>,
    /// `[history]`: what is recorded per interval for `xdpguard report`.
    pub history: Option<crate::history::HistoryConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("metrics listener: {0}")]
    Metrics(String),
    #[error("signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(
        "the {what} {path} is in use by another xdpguard ({holder}): one daemon per {what}; stop that one first, or set another {key} for this one"
    )]
    AlreadyRunning {
        /// "pin directory", "state directory", "control socket".
        what: &'static str,
        /// The configuration key that names it.
        key: &'static str,
        path: PathBuf,
        holder: lock::Holder,
    },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
}

/// What makes this daemon the only one on its directories; held until its last write.
struct Claim {
    _state_dir: StateLock,
    _pin_dir: lock::Lock,
}

/// The state directory's lock, taken again on the new lock file when the directory is
/// removed and the owner makes it anew (it does within a second): otherwise a second daemon
/// could lock the new file and share the directory.
struct StateLock {
    stop: Arc<AtomicBool>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl StateLock {
    fn keep(mut held: lock::Lock) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let keeper = std::thread::Builder::new()
            .name("state-lock".into())
            .spawn(move || {
                let mut refused = false;
                while !stopping.load(Ordering::Relaxed) {
                    match held.renew() {
                        Ok(true) => {
                            log::warn!(
                                "{}: the state directory was made anew; its lock is taken again",
                                held.path().display()
                            );
                            refused = false;
                        }
                        Ok(false) => {}
                        Err(err) if !refused => {
                            log::error!("{err}: another daemon took the new state directory");
                            refused = true;
                        }
                        Err(_) => {}
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                // Dropped here, on the last round: the pid is cleared from the file.
                drop(held);
            })
            .ok();
        Self { stop, keeper }
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// Claim the state directory, the pin directory and the control socket, before anything is
/// adopted, loaded, attached or opened: a second daemon on any of them would fight this one
/// over the kernel's entries (re-adding what this one removes) or over the state files.
fn claim(settings: &Settings) -> Result<Claim, DaemonError> {
    let in_use = |what, key, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |err| match err {
            lock::LockError::Held { holder, .. } => DaemonError::AlreadyRunning {
                what,
                key,
                path,
                holder,
            },
            other @ lock::LockError::Io { .. } => DaemonError::Lock(other),
        }
    };
    std::fs::create_dir_all(&settings.state_dir).map_err(|source| lock::LockError::Io {
        path: settings.state_dir.clone(),
        source,
    })?;
    let state_dir = lock::Lock::pid_file(&settings.state_dir.join(lock::STATE_LOCK_FILE))
        .map_err(in_use("state directory", "state_dir", &settings.state_dir))?;
    // Mounting bpffs there when it is missing creates nothing of ours yet.
    ensure_bpffs(&settings.pin_dir)?;
    let pin_dir = lock::Lock::directory(&settings.pin_dir).map_err(in_use(
        "pin directory",
        "pin_dir",
        &settings.pin_dir,
    ))?;
    // A daemon with other directories may still answer on the same socket.
    if let Some(holder) = lock::daemon_on_socket(&settings.control_socket) {
        return Err(DaemonError::AlreadyRunning {
            what: "control socket",
            key: "control_socket",
            path: settings.control_socket.clone(),
            holder,
        });
    }
    Ok(Claim {
        _state_dir: StateLock::keep(state_dir),
        _pin_dir: pin_dir,
    })
}

/// Tell systemd (if it started us with `Type=notify`) how we are doing.
pub fn sd_notify(state: &str) {
    use std::os::{linux::net::SocketAddrExt as _, unix::net::UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(err) = result {
        log::warn!("sd_notify {state:?}: {err}");
    }
}

/// This host's own addresses, in the daemon's network namespace.
pub fn own_addresses() -> Vec<Prefix> {
    let mut out = BTreeSet::new();
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&raw mut addrs) } != 0 {
        log::warn!("getifaddrs: {}", std::io::Error::last_os_error());
        return Vec::new();
    }
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            let addr = match family {
                libc::AF_INET => {
                    // SAFETY: AF_INET → sockaddr_in.
                    let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                    Some(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    // SAFETY: AF_INET6 → sockaddr_in6.
                    let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            };
            if let Some(addr) = addr {
                let _: bool = out.insert(Prefix::host(addr));
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(addrs) };
    out.into_iter().collect()
}

/// Run until SIGTERM or SIGINT. `load` reads the configuration; it is called again on
/// SIGHUP, and a configuration that fails to load keeps the running one.
///
/// # Errors
/// When start-up fails: the configuration, the data path, the state directory, the sockets.
pub fn run(load: &dyn Fn() -> Result<Settings, DaemonError>) -> Result<(), DaemonError> {
    let settings = load()?;
    let claim = claim(&settings)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (dataplane, opened) = Dataplane::open_pinned(&settings.pin_dir, settings.capacities)?;
    match opened {
        Opened::Adopted => log::info!(
            "adopted the running data path pinned at {}",
            settings.pin_dir.display()
        ),
        Opened::Fresh => log::info!(
            "loaded the XDP program; pinned at {}",
            settings.pin_dir.display()
        ),
        Opened::Migrated => log::warn!(
            "loaded this version's XDP program in place of an older one; pinned at {}; the decisions are applied again from {}",
            settings.pin_dir.display(),
            settings.state_dir.display()
        ),
    }
    // Held by the volume engine whether or not accounting is on now: a reload may turn it on.
    let volume_reader = dataplane.volume_reader()?;
    let (store, report) = DecisionStore::open(&settings.state_dir)?;
    log::info!(
        "{} decisions in {}",
        report.decisions,
        settings.state_dir.display()
    );
    let mut owner = Owner::start(dataplane, store, &report, clock, settings.owner.clone())?;
    let origins = Origins::new();
    owner.set_origins(origins.clone());
    // What the detectors add between two history records.
    let tap = SharedTap::new();
    let owner_metrics = owner.metrics_snapshot();

    let (commands, inbox) = mpsc::channel::<Command>();
    let handle = Handle::new(commands);
    let reconcile_every = settings.reconcile_every;
    let owner_thread = std::thread::Builder::new()
        .name("owner".into())
        .spawn(move || owner::run(owner, &inbox, reconcile_every))
        .map_err(DaemonError::Signals)?;

    let mut logs = LogScoring::new(
        &settings.state_dir,
        settings.rulesets.clone(),
        settings.inputs.clone(),
        settings.scoring,
        Arc::new(SystemClock),
    );
    logs.set_origins(origins.clone());
    logs.set_tap(tap.clone());
    let log_stats = logs.stats();
    let log_rounds = logs.rounds();
    let (log_commands, log_inbox) = mpsc::channel::<LogCommand>();
    let logs_thread = {
        let owner = handle.clone();
        std::thread::Builder::new()
            .name("logs".into())
            .spawn(move || logs.run(&log_inbox, &owner))
            .map_err(DaemonError::Signals)?
    };
    if !settings.inputs.is_empty() {
        log::info!(
            "following {} log inputs with {} rulesets",
            settings.inputs.len(),
            settings.rulesets.len()
        );
    }
    let volume = VolumeEngine::start(
        &settings.volume,
        Some(volume_reader),
        handle.clone(),
        Arc::new(SystemClock),
    )
    .map_err(|err| DaemonError::Config(error_chain(&err)))?;
    volume.set_tap(Some(tap.clone()));
    volume.set_origins(Some(origins.clone()));
    let volume_snapshot = volume.snapshot();
    if !settings.volume.detectors.is_empty() {
        log::info!(
            "{} volume detectors, every {}",
            settings.volume.detectors.len(),
            crate::config::format_duration(settings.volume.interval)
        );
    }

    // The bouncer's stats outlive a bouncer replaced by a reload: the page reads the current one.
    let crowdsec_stats: Arc<Mutex<Option<Arc<Mutex<BouncerStats>>>>> = Arc::new(Mutex::new(None));
    let mut bouncer = start_bouncer(settings.crowdsec.clone(), &handle, &crowdsec_stats)?;
    let fleet_stats: Arc<Mutex<Option<Arc<Mutex<FleetStats>>>>> = Arc::new(Mutex::new(None));
    let mut fleet = start_fleet(settings.fleet.clone(), &handle, &fleet_stats)?;
    // The other hosts' decisions are in place before the daemon answers or reports ready.
    if let Some(fleet) = &fleet {
        let limit = fleet.config().catch_up_timeout;
        if fleet.wait_caught_up(limit) {
            log::info!("fleet: caught up with the bucket");
        } else {
            log::warn!(
                "fleet: the bucket could not be read within {}; starting without it (it is read as soon as NATS answers)",
                crate::config::format_duration(limit)
            );
        }
    }

    let mut origins_watcher = start_origins(settings.origins.clone(), &origins, &handle)?;
    let recorder_metrics = owner_metrics.clone();
    let start_recorder = |config: Option<crate::history::HistoryConfig>| {
        config
            .map(|config| {
                Recorder::start(
                    config,
                    recorder::Sources {
                        owner: recorder_metrics.clone(),
                        tap: tap.clone(),
                        origins: origins.clone(),
                    },
                )
            })
            .transpose()
            .map_err(DaemonError::Signals)
    };
    let mut history = start_recorder(settings.history.clone())?;

    let control = {
        let handle = handle.clone();
        let volume_snapshot = Arc::clone(&volume_snapshot);
        let log_stats = Arc::clone(&log_stats);
        let peer_stats = (Arc::clone(&fleet_stats), Arc::clone(&crowdsec_stats));
        let published = server::Published {
            peers: Box::new(move || peer_status(&peer_stats.0, &peer_stats.1)),
            origins: origins.clone(),
            top: Box::new(move || {
                volume_snapshot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            }),
            rulesets: Box::new(move || {
                log_stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .rulesets
                    .iter()
                    .map(|(name, counts)| crate::api::control::proto::RulesetStatus {
                        name: name.clone(),
                        lines: counts.lines,
                        scored: counts.scored,
                        blocks: counts.blocks,
                    })
                    .collect()
            }),
        };
        ControlServer::spawn_with(
            &settings.control_socket,
            Arc::new(move |request: Request| server::answer(&handle, &published, request)),
            settings.control_limits,
        )?
    };
    let started = std::time::SystemTime::now();
    let metrics = match settings.metrics_listen {
        Some(listen) => {
            let control_stats = control.stats();
            let crowdsec_stats = Arc::clone(&crowdsec_stats);
            let fleet_stats = Arc::clone(&fleet_stats);
            let server = crate::api::metrics::MetricsServer::spawn_with(
                listen,
                Arc::new(move || {
                    // What the owner last published: a scrape never waits for its thread.
                    let page = owner_metrics.render();
                    let logs = log_stats
                        .lock()
                        .map_err(|_| "log scoring failed".to_owned())?
                        .clone();
                    let volume = volume_snapshot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    let crowdsec = current(&crowdsec_stats)
                        .map(|stats| crate::peers::crowdsec::metrics::render(&stats))
                        .unwrap_or_default();
                    let fleet = current(&fleet_stats)
                        .map(|stats| crate::peers::fleet::metrics::render(&stats))
                        .unwrap_or_default();
                    Ok(page
                        + &process_metrics::render(started)
                        + &crowdsec
                        + &fleet
                        + &crate::detect::traffic::volume::metrics::render(&volume)
                        + &crate::detect::logs::metrics::render(&logs)
                        + &crate::api::control::metrics::render(&control_stats))
                }),
                settings.metrics_limits,
            )
            .map_err(|err| DaemonError::Metrics(error_chain(&err)))?;
            log::info!("metrics on http://{}/metrics", server.local_addr());
            Some(server)
        }
        None => None,
    };

    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(DaemonError::Signals)?;
    let watchdog = watchdog::period_from_env()
        .map(|period| {
            watchdog::Watchdog::start(period, watchdog::Probe::new(handle.clone(), log_rounds))
        })
        .transpose()
        .map_err(DaemonError::Signals)?;
    sd_notify("READY=1\nSTATUS=enforcing");
    log::info!(
        "running; control socket {}",
        settings.control_socket.display()
    );
    for signal in signals.forever() {
        if signal == SIGHUP {
            sd_notify(&format!(
                "RELOADING=1\nMONOTONIC_USEC={}",
                SystemClock.now_monotonic_ns() / 1000
            ));
            match load() {
                Ok(new) => {
                    volume.reload(new.volume);
                    if bouncer.as_ref().map(Bouncer::config) != new.crowdsec.as_ref() {
                        // A new bouncer resyncs from the LAPI's startup answer.
                        if let Some(old) = bouncer.take() {
                            old.stop();
                        }
                        match start_bouncer(new.crowdsec.clone(), &handle, &crowdsec_stats) {
                            Ok(started) => bouncer = started,
                            Err(err) => log::error!("crowdsec: {}", error_chain(&err)),
                        }
                    }
                    if fleet.as_ref().map(Fleet::config) != new.fleet.as_ref() {
                        // A new agent reads the whole bucket again.
                        if let Some(old) = fleet.take() {
                            old.stop();
                        }
                        match start_fleet(new.fleet.clone(), &handle, &fleet_stats) {
                            Ok(started) => fleet = started,
                            Err(err) => log::error!("fleet: {}", error_chain(&err)),
                        }
                    }
                    if history.as_ref().map(Recorder::config) != new.history.as_ref() {
                        if let Some(old) = history.take() {
                            old.stop();
                        }
                        match start_recorder(new.history.clone()) {
                            Ok(started) => history = started,
                            Err(err) => log::error!("history: {}", error_chain(&err)),
                        }
                    }
                    // Read again on every SIGHUP, whether the configuration changed or not.
                    match (&origins_watcher, new.origins) {
                        (Some(watcher), Some(config)) => watcher.reload(config),
                        (_, config) => {
                            drop(origins_watcher.take());
                            match start_origins(config, &origins, &handle) {
                                Ok(started) => origins_watcher = started,
                                Err(err) => log::error!("origins: {}", error_chain(&err)),
                            }
                        }
                    }
                    let _ = log_commands.send(LogCommand::Reload {
                        rulesets: new.rulesets,
                        inputs: new.inputs,
                        scoring: Box::new(new.scoring),
                    });
                    match handle.reload(new.owner).wait() {
                        Ok(()) => log::info!("configuration reloaded"),
                        Err(err) => log::error!("reload: {err}"),
                    }
                }
                Err(err) => log::error!(
                    "reload refused, keeping the running configuration: {}",
                    error_chain(&err)
                ),
            }
            sd_notify("READY=1\nSTATUS=enforcing");
            continue;
        }
        break;
    }
    sd_notify("STOPPING=1");
    // Its pings would only wait on a stopping owner.
    drop(watchdog);
    log::info!("stopping; the XDP program stays attached and keeps enforcing");
    control.shutdown();
    if let Some(metrics) = metrics {
        metrics.shutdown();
    }
    // Log scoring first: its last blocks still reach the owner, and it saves its positions.
    let _ = log_commands.send(LogCommand::Stop);
    if logs_thread.join().is_err() {
        log::error!("log scoring panicked");
    }
    volume.stop();
    if let Some(bouncer) = bouncer.take() {
        bouncer.stop();
    }
    if let Some(fleet) = fleet.take() {
        fleet.stop();
    }
    drop(origins_watcher);
    // After the detectors stopped: their last additions are in its last record.
    if let Some(history) = history.take() {
        history.stop();
    }
    handle.shutdown();
    match owner_thread.join() {
        Ok(owner) => owner.shutdown()?,
        Err(_) => log::error!("the decision owner panicked"),
    }
    // Only now: `detach` and a new daemon wait for the snapshot the owner wrote above.
    drop(claim);
    Ok(())
}

/// Watch the dumps `[origins]` names, if any; after each table installed, the ASN blocks
/// follow it.
fn start_origins(
    config: Option<OriginsConfig>,
    origins: &Origins,
    handle: &Handle,
) -> Result<Option<OriginsWatcher>, DaemonError> {
    origins.set_configured(config.is_some());
    let Some(config) = config else {
        origins.clear();
        return Ok(None);
    };
    let handle = handle.clone();
    let table = origins.clone();
    let watcher = OriginsWatcher::start(
        origins.clone(),
        config,
        Box::new(move |_status| {
            let now = SystemClock.now_unix();
            match crate::peers::announced::follow(&handle, &table.table(), now) {
                Ok(followed) if followed.blocked + followed.unblocked > 0 => log::info!(
                    "origins: ASN blocks of {} ASes follow the new table: {} prefixes blocked, {} unblocked, {} refused by the guards",
                    followed.ases,
                    followed.blocked,
                    followed.unblocked,
                    followed.refused
                ),
                Ok(_) => {}
                Err(err) => log::error!("origins: ASN blocks could not follow the new table: {err}"),
            }
        }),
    )
    .map_err(DaemonError::Signals)?;
    Ok(Some(watcher))
}

/// Start the CrowdSec bouncer if `[crowdsec]` asks for one, and publish its stats.
fn start_bouncer(
    config: Option<crate::peers::crowdsec::config::CrowdsecConfig>,
    handle: &Handle,
    stats: &Mutex<Option<Arc<Mutex<BouncerStats>>>>,
) -> Result<Option<Bouncer>, DaemonError> {
    let bouncer = config
        .map(|config| Bouncer::start(config, handle.clone()))
        .transpose()
        .map_err(|err| DaemonError::Config(format!("crowdsec: {}", error_chain(&err))))?;
    *stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = bouncer.as_ref().map(Bouncer::stats);
    Ok(bouncer)
}

/// Start the fleet agent if `[fleet]` asks for one, and publish its stats.
fn start_fleet(
    config: Option<crate::peers::fleet::config::FleetConfig>,
    handle: &Handle,
    stats: &Mutex<Option<Arc<Mutex<FleetStats>>>>,
) -> Result<Option<Fleet>, DaemonError> {
    let fleet = config
        .map(|config| Fleet::start(config, handle.clone()))
        .transpose()
        .map_err(|err| DaemonError::Config(format!("fleet: {}", error_chain(&err))))?;
    *stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = fleet.as_ref().map(Fleet::stats);
    Ok(fleet)
}

/// A copy of what a running peer last published, if one runs.
fn current<T: Clone>(slot: &Mutex<Option<Arc<Mutex<T>>>>) -> Option<T> {
    let slot = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()?;
    let stats = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Some(stats)
}

/// The peers' lines of `status`, from what they last published.
fn peer_status(
    fleet: &Mutex<Option<Arc<Mutex<FleetStats>>>>,
    crowdsec: &Mutex<Option<Arc<Mutex<BouncerStats>>>>,
) -> Vec<crate::api::control::proto::PeerStatus> {
    use crate::api::control::proto::PeerStatus;
    let mut peers = Vec::new();
    if let Some(stats) = current(fleet) {
        let published: u64 = stats
            .published
            .iter()
            .filter(|((_, result), _)| *result == "ok")
            .map(|(_, n)| n)
            .sum();
        let refused: u64 = stats.refused.values().sum();
        peers.push(PeerStatus {
            peer: "fleet".into(),
            up: stats.connected && stats.caught_up,
            held: stats.held,
            detail: format!(
                "{} other hosts; {} own decisions, {} to write; {published} writes, {refused} refused; {} connections",
                stats.hosts, stats.own, stats.pending_publish, stats.connects
            ),
            last_error: stats.last_error,
        });
    }
    if let Some(stats) = current(crowdsec) {
        let refused: u64 = stats.refused.values().sum();
        peers.push(PeerStatus {
            peer: "crowdsec".into(),
            up: stats.up,
            held: stats.held,
            detail: format!(
                "{} polls ok, {} failed; last good poll at unix {}; {refused} refused",
                stats.polls_ok, stats.polls_failed, stats.last_success_unix
            ),
            last_error: stats.last_error,
        });
    }
    peers
}

/// Read the configuration file into [`Settings`]: allowlist files are read here, and the
/// host's own addresses looked up, so a reload picks up changes to both.
///
/// # Errors
/// When the configuration or an allowlist file cannot be read or is invalid.
pub fn settings_from_config(path: &std::path::Path) -> Result<Settings, DaemonError> {
    use crate::config::Config;
    // One read of the rulesets, compiled within the configured [rulesets] limits.
    let (config, rulesets) =
        Config::load_with_rulesets(path).map_err(|err| DaemonError::Config(error_chain(&err)))?;
    // Which drop-ins were merged (they were just read, so this lists what was validated).
    if let Ok(files) = Config::files(path)
        && files.len() > 1
    {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        log::info!("configuration: {}", names.join(" + "));
    }
    let own_addresses = own_addresses();
    let mut config_allow: BTreeSet<Prefix> = config.allowlist.prefixes.iter().copied().collect();
    for file in &config.allowlist.files {
        let list = crate::listfile::read_prefix_list(file).map_err(|err| {
            DaemonError::Config(format!(
                "allowlist file {}: {}",
                file.display(),
                error_chain(&err)
            ))
        })?;
        if let Some(bad) = list.rejected.first() {
            return Err(DaemonError::Config(format!(
                "{}:{}: {}",
                file.display(),
                bad.line,
                bad.reason
            )));
        }
        config_allow.extend(list.prefixes.iter().map(|(_, prefix)| *prefix));
    }
    if config.allowlist.loopback {
        for loopback in ["127.0.0.0/8", "::1/128"] {
            let _: bool = config_allow.insert(loopback.parse().unwrap_or_else(|_| unreachable!()));
        }
    }
    if config.allowlist.host_addresses {
        config_allow.extend(own_addresses.iter().copied());
    }
    Ok(Settings {
        owner: OwnerConfig {
            dry_run: config.dry_run,
            min_prefix_len_v4: config.guard.min_prefix_len_v4,
            min_prefix_len_v6: config.guard.min_prefix_len_v6,
            default_ban: config.default_ban,
            own_addresses,
            config_allow,
            interfaces: config
                .interfaces
                .iter()
                .map(|interface| (interface.name.clone(), interface.mode))
                .collect(),
            top_blocked: config.metrics.top_blocked,
            volume_accounting: config.volume.xdp_accounting,
            unknown_entries: config.unknown_entries,
        },
        pin_dir: config.pin_dir,
        state_dir: config.state_dir,
        control_socket: config.control_socket,
        control_limits: config.control,
        metrics_limits: config.metrics.limits,
        metrics_listen: config.metrics.enabled.then_some(config.metrics.listen),
        reconcile_every: config.reconcile_interval,
        capacities: config.capacity,
        rulesets,
        inputs: config.inputs,
        scoring: config.scoring,
        volume: config.volume,
        crowdsec: config.crowdsec,
        fleet: config.fleet,
        origins: config.origins,
        history: config.history,
    })
}
