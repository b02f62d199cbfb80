//! The fleet agent: one thread with a current-thread tokio runtime for the NATS client (the
//! owner and the packet path stay synchronous). Each connection starts with a full read of
//! the bucket (every other host's decisions, and what it holds under this host's name),
//! then follows it live, while this host's own decisions (from the owner's watch) are
//! written as they change. When NATS goes away everything held stays enforced; the agent
//! reconnects with backoff and reads the whole bucket again, so no unblock made meanwhile is
//! lost and nothing is applied twice; own decisions made meanwhile are written then.
use std::{
    sync::{Arc, Condvar, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::{self, kv};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::{mpsc, watch};

use super::{
    config::{FleetAuth, FleetConfig},
    metrics::FleetStats,
    outbox::{Outbox, Write, own},
    remote::{RemoteSet, Touched},
    wire::{self, Read, key_host, parse_key},
};
use crate::{
    enforce::{
        decision::{Change, DecisionKind, Source},
        owner::{Handle, ListFilter},
    },
    peers::{
        orders::{OWNER_TIMEOUT, Peer, carry_out},
        runtime::PeerThread,
    },
    prefix::Prefix,
};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A full read that gets nothing for this long is over (the bucket's last keys may have been
/// removed between asking how many there are and reading them).
const READ_IDLE: Duration = Duration::from_secs(2);
/// Entries taken from the bucket before the owner is asked: one batch of orders.
const ENTRY_BATCH: usize = 10_000;
/// Writes issued per flush, and at once.
const WRITE_BATCH: usize = 4096;
const WRITES_IN_FLIGHT: usize = 256;
/// Batches of changes the owner may queue before the watch is dropped (and renewed).
const CHANGE_BATCHES: usize = 4096;
/// How often held decisions are expired and the stats refreshed.
const TICK: Duration = Duration::from_secs(1);

/// The fleet's decisions: `fleet:HOST`, and only those are taken back.
const FLEET: Peer = Peer {
    source: Source::Fleet,
    holds: Source::is_fleet,
    name: "fleet",
};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("starting the fleet thread")]
    Thread(#[source] std::io::Error),
}

/// Whether the first full read is done (the daemon waits for it before reporting ready).
#[derive(Default)]
struct Ready {
    done: Mutex<bool>,
    changed: Condvar,
}

/// A running fleet agent; stopped on [`Fleet::stop`] or drop.
pub struct Fleet {
    thread: PeerThread,
    stats: Arc<Mutex<FleetStats>>,
    ready: Arc<Ready>,
    config: FleetConfig,
}

impl Fleet {
    /// Connect to `config.servers` and share decisions.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(config: FleetConfig, owner: Handle) -> Result<Self, FleetError> {
        let stats = Arc::new(Mutex::new(FleetStats::default()));
        let ready = Arc::new(Ready::default());
        let thread = {
            let stats = Arc::clone(&stats);
            let ready = Arc::clone(&ready);
            let config = config.clone();
            PeerThread::spawn("fleet", move |stopped| async move {
                run(&config, &owner, &stats, &ready, stopped).await;
            })
            .map_err(FleetError::Thread)?
        };
        Ok(Self {
            thread,
            stats,
            ready,
            config,
        })
    }

    /// Wait until the bucket has been read once, at most `limit`; whether it was.
    pub fn wait_caught_up(&self, limit: Duration) -> bool {
        let done = self
            .ready
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (done, _) = self
            .ready
            .changed
            .wait_timeout_while(done, limit, |done| !*done)
            .unwrap_or_else(PoisonError::into_inner);
        *done
    }

    /// What it has done so far (never waits on the agent's work).
    pub fn stats(&self) -> Arc<Mutex<FleetStats>> {
        Arc::clone(&self.stats)
    }

    pub const fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Stop sharing (what is held stays and expires on its own; the next start reads again).
    pub fn stop(mut self) {
        self.thread.stop();
    }
}

/// Why a connection ended.
enum Ended {
    Stopped,
    /// NATS came back after a disconnection, or the owner's watch was dropped: read again now.
    Resync(&'static str),
    Failed(String),
}

fn failed(what: &str, err: &dyn std::fmt::Display) -> Ended {
    Ended::Failed(format!("{what}: {err}"))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What survives a reconnection.
struct State {
    remote: RemoteSet,
    outbox: Outbox,
    /// Whether the last write failed: the next flush waits for a tick.
    write_failing: bool,
}

async fn run(
    config: &FleetConfig,
    owner: &Handle,
    stats: &Mutex<FleetStats>,
    ready: &Ready,
    mut stopped: watch::Receiver<bool>,
) {
    let mut state = State {
        remote: RemoteSet::new(config.max_decisions),
        outbox: Outbox::new(
            config.host.clone(),
            config.publish_sources.clone(),
            config.publish_allows,
        ),
        write_failing: false,
    };
    let mut backoff = FIRST_BACKOFF;
    log::info!(
        "fleet: host {} sharing bucket {} on {}",
        config.host,
        config.bucket,
        config.servers.join(", ")
    );
    loop {
        let ended = session(config, owner, stats, ready, &mut state, &mut stopped).await;
        {
            let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
            stats.connected = false;
            stats.caught_up = false;
        }
        let wait = match ended {
            Ended::Stopped => return,
            Ended::Resync(why) => {
                log::info!("fleet: {why}; reading the bucket again");
                backoff = FIRST_BACKOFF;
                continue;
            }
            Ended::Failed(text) => {
                let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
                if stats.last_error.as_deref() != Some(text.as_str()) {
                    log::warn!("fleet: {text}; enforcing what is held and retrying");
                }
                stats.last_error = Some(text);
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn connect(
    config: &FleetConfig,
    events: mpsc::UnboundedSender<async_nats::Event>,
) -> Result<async_nats::Client, Ended> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("xdpguard {}", config.host))
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .max_reconnects(None)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.send(event);
            }
        });
    options = match &config.auth {
        FleetAuth::None => options,
        FleetAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        FleetAuth::Token(token) => options.token(token.clone()),
        FleetAuth::Nkey(seed) => options.nkey(seed.clone()),
        FleetAuth::CredentialsFile(path) => options
            .credentials_file(path)
            .await
            .map_err(|err| failed(&format!("reading {}", path.display()), &err))?,
    };
    if config.tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<async_nats::ServerAddr> = config
        .servers
        .iter()
        .filter_map(|server| server.parse().ok())
        .collect();
    options.connect(servers).await.map_err(|err| {
        failed(
            &format!("connecting to {}", config.servers.join(", ")),
            &err,
        )
    })
}

async fn bucket(client: &async_nats::Client, name: &str) -> Result<kv::Store, Ended> {
    let context = jetstream::new(client.clone());
    if let Ok(store) = context.get_key_value(name).await {
        return Ok(store);
    }
    // The key-value layout made by hand: async-nats's `create_key_value` first reads the
    // account's info, whose 2.9 form it cannot parse. One value per key (history 1): the
    // bucket is the set of decisions, not their log. No max_age: a permanent block must not
    // fall out; each host deletes its own keys.
    let _: jetstream::stream::Stream = context
        .get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some("xdpguard fleet decisions".to_owned()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            discard: jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            storage: jetstream::stream::StorageType::File,
            num_replicas: 1,
            ..jetstream::stream::Config::default()
        })
        .await
        .map_err(|err| failed(&format!("creating the bucket {name}"), &err))?;
    context
        .get_key_value(name)
        .await
        .map_err(|err| failed(&format!("opening the bucket {name}"), &err))
}

/// Ask the owner on a blocking thread (the runtime keeps turning).
async fn ask<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, crate::enforce::owner::CommandError> + Send + 'static,
) -> Result<T, Ended> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(failed(what, &err)),
        Err(err) => Err(failed(what, &err)),
    }
}

/// One connection: full read, then live.
async fn session(
    config: &FleetConfig,
    owner: &Handle,
    stats: &Mutex<FleetStats>,
    ready: &Ready,
    state: &mut State,
    stopped: &mut watch::Receiver<bool>,
) -> Ended {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let client = tokio::select! {
        _ = stopped.changed() => return Ended::Stopped,
        client = connect(config, events_tx) => match client {
            Ok(client) => client,
            Err(ended) => return ended,
        },
    };
    stats
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .connects += 1;
    let result = tokio::select! {
        _ = stopped.changed() => Err(Ended::Stopped),
        result = follow(config, owner, stats, ready, state, &client, &mut events) => result,
    };
    // Written decisions are acknowledged one by one; nothing is left in the client's buffer.
    drop(client);
    match result {
        Ok(never) => match never {},
        Err(ended) => ended,
    }
}

async fn follow(
    config: &FleetConfig,
    owner: &Handle,
    stats: &Mutex<FleetStats>,
    ready: &Ready,
    state: &mut State,
    client: &async_nats::Client,
    events: &mut mpsc::UnboundedReceiver<async_nats::Event>,
) -> Result<std::convert::Infallible, Ended> {
    let store = bucket(client, &config.bucket).await?;
    // This host's decisions: the owner's watch, renewed every connection.
    let (changes_tx, mut changes) = mpsc::channel::<Vec<Change>>(CHANGE_BATCHES);
    let snapshot = {
        let owner = owner.clone();
        ask("watching the owner", move || {
            owner
                .watch(
                    own,
                    Box::new(move |batch| changes_tx.try_send(batch).is_ok()),
                )
                .wait_timeout(OWNER_TIMEOUT)
        })
        .await?
    };
    state.outbox.set_wanted(&snapshot);
    let held = {
        let owner = owner.clone();
        ask("listing the fleet's decisions", move || {
            owner
                .list(ListFilter {
                    source_kind: Some(Source::Fleet(Arc::from(""))),
                    ..ListFilter::default()
                })
                .wait_timeout(OWNER_TIMEOUT)
        })
        .await?
    };
    let held: Vec<(DecisionKind, Prefix)> = held
        .into_iter()
        .filter(|entry| entry.decision.origin.source.is_fleet())
        .map(|entry| (entry.decision.kind, entry.decision.prefix))
        .collect();

    // The full read.
    let values = store
        .status()
        .await
        .map_err(|err| failed("reading the bucket's state", &err))?
        .values();
    let mut entries = store
        .watch_with_history(">")
        .await
        .map_err(|err| failed("watching the bucket", &err))?;
    state.outbox.forget_published();
    let mut touched = Touched::default();
    state.remote.begin_full_read(&held, &mut touched);
    let mut tally = Tally::default();
    let mut read = 0u64;
    if values > 0 {
        loop {
            match tokio::time::timeout(READ_IDLE, entries.next()).await {
                Err(_) => break,
                Ok(None) => return Err(Ended::Failed("the bucket's watch ended".into())),
                Ok(Some(Err(err))) => return Err(failed("reading the bucket", &err)),
                Ok(Some(Ok(entry))) => {
                    let last = entry.delta == 0;
                    take(config, state, &entry, &mut touched, &mut tally, now_unix());
                    read += 1;
                    if last {
                        break;
                    }
                }
            }
        }
    }
    apply(owner, state, touched, tally, stats).await;
    {
        let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.connected = true;
        stats.caught_up = true;
        stats.last_error = None;
    }
    log::info!(
        "fleet: read {read} keys of bucket {}: holding {} decisions of {} other hosts, {} own",
        config.bucket,
        state.remote.len(),
        state.remote.hosts(),
        state.outbox.wanted()
    );
    *ready.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
    ready.changed.notify_all();

    // Live.
    let mut connected = true;
    let mut tick = tokio::time::interval(TICK);
    loop {
        if connected && !state.write_failing && state.outbox.pending() > 0 {
            flush(&store, state, stats).await;
        }
        tokio::select! {
            entry = entries.next() => {
                let mut touched = Touched::default();
                let mut tally = Tally::default();
                let now = now_unix();
                let mut next = entry;
                let mut taken = 0;
                loop {
                    match next {
                        None => return Err(Ended::Failed("the bucket's watch ended".into())),
                        Some(Err(err)) => return Err(failed("reading the bucket", &err)),
                        Some(Ok(entry)) => take(config, state, &entry, &mut touched, &mut tally, now),
                    }
                    taken += 1;
                    // Whatever else has arrived goes in the same batch of orders.
                    match entries.next().now_or_never() {
                        Some(more) if taken < ENTRY_BATCH => next = more,
                        _ => break,
                    }
                }
                apply(owner, state, touched, tally, stats).await;
            }
            batch = changes.recv() => {
                let Some(batch) = batch else {
                    return Err(Ended::Resync("the owner dropped the fleet's watch (it fell behind)"));
                };
                for change in &batch {
                    state.outbox.change(change);
                }
                while let Ok(batch) = changes.try_recv() {
                    for change in &batch {
                        state.outbox.change(change);
                    }
                }
            }
            event = events.recv() => match event {
                Some(async_nats::Event::Disconnected) => {
                    connected = false;
                    stats.lock().unwrap_or_else(PoisonError::into_inner).connected = false;
                    log::warn!("fleet: disconnected from NATS; enforcing what is held");
                }
                Some(async_nats::Event::Connected) if !connected => {
                    return Err(Ended::Resync("reconnected to NATS"));
                }
                Some(async_nats::Event::Closed) | None => {
                    return Err(Ended::Failed("the NATS connection closed".into()));
                }
                Some(other) => log::debug!("fleet: NATS: {other}"),
            },
            _ = tick.tick() => {
                state.write_failing = false;
                state.remote.expire(now_unix());
                let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
                stats.held = state.remote.len() as u64;
                stats.hosts = state.remote.hosts() as u64;
                stats.own = state.outbox.wanted() as u64;
                stats.pending_publish = state.outbox.pending() as u64;
            }
        }
    }
}

/// Counts of one batch of entries, merged into the stats after it (the page never waits on
/// a batch).
#[derive(Default)]
struct Tally {
    received: Vec<(String, &'static str)>,
    refused: Vec<(String, &'static str)>,
    skipped: Vec<(String, &'static str)>,
    lag_ms: Option<u64>,
}

/// Take one entry of the bucket.
fn take(
    config: &FleetConfig,
    state: &mut State,
    entry: &kv::Entry,
    touched: &mut Touched,
    tally: &mut Tally,
    now: u64,
) {
    let Some(key) = parse_key(&entry.key) else {
        let host = key_host(&entry.key).unwrap_or("-");
        tally.refused.push((host.to_owned(), "bad_key"));
        return;
    };
    let put = matches!(entry.operation, kv::Operation::Put);
    if key.host == config.host {
        state
            .outbox
            .seen(key.kind, key.prefix, put.then_some(&entry.value[..]));
        return;
    }
    if !put {
        if state
            .remote
            .delete(&key.host, key.kind, &key.prefix, touched)
        {
            tally.received.push((key.host, "delete"));
        }
        return;
    }
    let written_ms = entry.created.unix_timestamp_nanos() / 1_000_000;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    tally.lag_ms = u64::try_from(i128::try_from(now_ms).unwrap_or(0) - written_ms).ok();
    match wire::read(config, &key, &entry.value, now) {
        Read::Apply(remote) => {
            if state.remote.put(remote, touched) {
                tally.received.push((key.host, "put"));
            } else {
                tally.refused.push((key.host, "capacity"));
            }
        }
        // The key's value is what it says now: whatever it held before no longer stands.
        Read::Skip(why) => {
            let _: bool = state
                .remote
                .delete(&key.host, key.kind, &key.prefix, touched);
            tally.skipped.push((key.host, why.label()));
        }
        Read::Refuse(why) => {
            let _: bool = state
                .remote
                .delete(&key.host, key.kind, &key.prefix, touched);
            tally.refused.push((key.host, why.label()));
        }
    }
}

/// Carry out what a batch changed, then count it.
async fn apply(
    owner: &Handle,
    state: &State,
    touched: Touched,
    tally: Tally,
    stats: &Mutex<FleetStats>,
) {
    let orders = if touched.is_empty() {
        Vec::new()
    } else {
        state.remote.orders(touched)
    };
    let refused = carry_out(owner, FLEET, orders, now_unix()).await;
    let mut counts: std::collections::BTreeMap<(u8, String, &'static str), u64> =
        std::collections::BTreeMap::new();
    for (table, list) in [(0, tally.received), (1, tally.refused), (2, tally.skipped)] {
        for (host, what) in list {
            *counts.entry((table, host, what)).or_default() += 1;
        }
    }
    for ((host, reason), n) in refused {
        *counts.entry((1, host, reason)).or_default() += n;
    }
    let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
    for ((table, host, what), n) in counts {
        let host = stats.host_label(&host);
        match table {
            0 => *stats.received.entry((host, what)).or_default() += n,
            1 => *stats.refused.entry((host, what.to_owned())).or_default() += n,
            _ => *stats.skipped.entry((host, what)).or_default() += n,
        }
    }
    if let Some(lag) = tally.lag_ms {
        stats.lag_ms = lag;
    }
    stats.held = state.remote.len() as u64;
    stats.own = state.outbox.wanted() as u64;
    stats.pending_publish = state.outbox.pending() as u64;
}

/// Write up to [`WRITE_BATCH`] of this host's changes, [`WRITES_IN_FLIGHT`] at a time, each
/// acknowledged by JetStream; what failed is tried again after a tick.
async fn flush(store: &kv::Store, state: &mut State, stats: &Mutex<FleetStats>) {
    let writes = state.outbox.next_writes(WRITE_BATCH);
    let results: Vec<(Write, Result<(), String>)> = futures_util::stream::iter(writes)
        .map(|write| async move {
            let result = match &write {
                Write::Put { key, value, .. } => store
                    .put(key, value.clone().into())
                    .await
                    .map(|_| ())
                    .map_err(|err| err.to_string()),
                Write::Delete { key, .. } => store.delete(key).await.map_err(|err| err.to_string()),
            };
            (write, result)
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    let mut counts: std::collections::BTreeMap<(&'static str, &'static str), u64> =
        std::collections::BTreeMap::new();
    let mut first_error = None;
    for (write, result) in results {
        let event = match write {
            Write::Put { .. } => "put",
            Write::Delete { .. } => "delete",
        };
        match result {
            Ok(()) => {
                *counts.entry((event, "ok")).or_default() += 1;
                state.outbox.written(write);
            }
            Err(err) => {
                *counts.entry((event, "error")).or_default() += 1;
                state.outbox.failed(&write);
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error {
        if !state.write_failing {
            log::warn!("fleet: writing own decisions to the bucket: {err}; retrying");
        }
        state.write_failing = true;
    }
    let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
    for (key, n) in counts {
        *stats.published.entry(key).or_default() += n;
    }
    stats.own = state.outbox.wanted() as u64;
    stats.pending_publish = state.outbox.pending() as u64;
}
