//! The bouncer: polls the local API's decision stream on its own thread (a current-thread
//! tokio runtime: the HTTP client is async; the owner and the packet path are not) and turns
//! what it reads into orders through the owner's front door. While the LAPI cannot be read
//! xdpguard keeps enforcing everything it has; polls are retried with backoff, and the first
//! good answer after a failure asks for the whole set again (`startup=true`), so nothing
//! deleted meanwhile stays blocked and nothing added is missed.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::watch;

use super::{
    config::CrowdsecConfig,
    metrics::BouncerStats,
    stream::{StreamBatch, parse_stream},
    tracker::{Order, Tracker},
};
use crate::{
    enforce::{
        decision::{DecisionKind, Source},
        owner::{BlockOrder, Expiry, Handle, ListFilter, Refusal},
    },
    error_chain,
    prefix::Prefix,
};

/// Longest wait between two polls that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First wait after a failed poll.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest the bouncer waits for the owner to answer one batch of orders.
const OWNER_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the bouncer did not start.
#[derive(Debug, thiserror::Error)]
pub enum BouncerError {
    #[error("reading the CA certificate {path}")]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA certificate {path} is not PEM: {message}")]
    CaPem {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("setting up the HTTP client: {0}")]
    Client(String),
    #[error("starting the crowdsec thread")]
    Thread(#[source] std::io::Error),
}

/// A running bouncer; stopped on [`Bouncer::stop`] or drop.
pub struct Bouncer {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Mutex<BouncerStats>>,
    config: CrowdsecConfig,
}

impl Bouncer {
    /// Start polling `config.lapi_url`.
    ///
    /// # Errors
    /// When the HTTP client cannot be set up (an unreadable CA file) or the thread not started.
    pub fn start(config: CrowdsecConfig, owner: Handle) -> Result<Self, BouncerError> {
        let client = client(&config)?;
        let stats = Arc::new(Mutex::new(BouncerStats::default()));
        let (stop, stopped) = watch::channel(false);
        let thread = {
            let stats = Arc::clone(&stats);
            let config = config.clone();
            std::thread::Builder::new()
                .name("crowdsec".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(err) => {
                            log::error!("crowdsec: no runtime: {err}");
                            return;
                        }
                    };
                    runtime.block_on(run(config, client, owner, stats, stopped));
                })
                .map_err(BouncerError::Thread)?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            stats,
            config,
        })
    }

    /// What it has done so far (for the metrics page; never waits on the bouncer's work).
    pub fn stats(&self) -> Arc<Mutex<BouncerStats>> {
        Arc::clone(&self.stats)
    }

    pub const fn config(&self) -> &CrowdsecConfig {
        &self.config
    }

    /// Stop polling (the blocks stay: they expire on their own, or the next start resyncs).
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("crowdsec: the bouncer thread panicked");
        }
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn client(config: &CrowdsecConfig) -> Result<reqwest::Client, BouncerError> {
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .user_agent(concat!("xdpguard/", env!("CARGO_PKG_VERSION")))
        // The LAPI's own address: no proxy from the environment.
        .no_proxy();
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|source| BouncerError::CaFile {
            path: path.clone(),
            source,
        })?;
        let certificate =
            reqwest::Certificate::from_pem(&pem).map_err(|err| BouncerError::CaPem {
                path: path.clone(),
                message: err.to_string(),
            })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|err| BouncerError::Client(error_chain(&err)))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a poll gave nothing to apply.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("{0}")]
    Http(String),
    #[error(
        "the local API refused the bouncer key (HTTP {0}): check [crowdsec] api_key against `cscli bouncers list`"
    )]
    Key(u16),
    #[error("the local API answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the answer is over {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Stream(#[from] super::stream::StreamError),
}

async fn poll(
    client: &reqwest::Client,
    config: &CrowdsecConfig,
    startup: bool,
) -> Result<StreamBatch, PollError> {
    let url = format!("{}v1/decisions/stream", config.lapi_url);
    let mut response = client
        .get(&url)
        .query(&[
            ("startup", if startup { "true" } else { "false" }),
            ("scopes", "ip,range"),
        ])
        .header("X-Api-Key", &config.api_key)
        .send()
        .await
        .map_err(|err| PollError::Http(error_chain(&err)))?;
    let status = response.status().as_u16();
    if status == 401 || status == 403 {
        return Err(PollError::Key(status));
    }
    let limit = super::stream::MAX_RESPONSE_BYTES;
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| PollError::Http(error_chain(&err)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(PollError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    if status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(PollError::Status { status, body: text });
    }
    Ok(parse_stream(&body)?)
}

async fn run(
    config: CrowdsecConfig,
    client: reqwest::Client,
    owner: Handle,
    stats: Arc<Mutex<BouncerStats>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tracker = Tracker::new(config.max_decisions);
    let mut startup = true;
    // Only the first full read needs the owner's list (a restarted daemon's CrowdSec blocks):
    // after it the tracker knows what it holds, and listing a million blocks every resync
    // would cost the owner a second each time.
    let mut first = true;
    let mut last_full = tokio::time::Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut failing_since_logged = false;
    log::info!(
        "crowdsec: polling {} every {:?}",
        config.lapi_url,
        config.poll_interval
    );
    loop {
        if last_full.elapsed() >= config.resync_interval {
            startup = true;
        }
        let result = tokio::select! {
            _ = stopped.changed() => return,
            result = poll(&client, &config, startup) => result,
        };
        let wait = match result {
            Ok(mut batch) => {
                let skipped_origin = filter_origins(&mut batch, &config.origins);
                let held_before = if first {
                    held_by_crowdsec(&owner).await
                } else {
                    Vec::new()
                };
                let now = now_unix();
                tracker.expire(now);
                let malformed = std::mem::take(&mut batch.malformed);
                for reason in malformed.iter().take(3) {
                    log::warn!("crowdsec: decision refused: {reason}");
                }
                let (orders, counts) = tracker.apply(batch, now, startup, &held_before);
                let refused = carry_out(&owner, orders, now).await;
                let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
                if failing_since_logged {
                    log::info!("crowdsec: the local API answers again");
                    failing_since_logged = false;
                }
                stats.up = true;
                stats.polls_ok += 1;
                stats.last_success_unix = now;
                stats.last_error = None;
                for (origin, n) in counts.added {
                    *stats.decisions.entry((origin, "added")).or_default() += n;
                }
                for (origin, n) in counts.deleted {
                    *stats.decisions.entry((origin, "deleted")).or_default() += n;
                }
                let mut skip = |reason: String, n: u64| {
                    if n > 0 {
                        *stats.skipped.entry(reason).or_default() += n;
                    }
                };
                for (kind, n) in counts.skipped_type {
                    skip(format!("type:{kind}"), n);
                }
                for (scope, n) in counts.skipped_scope {
                    skip(format!("scope:{scope}"), n);
                }
                skip("expired".into(), counts.expired);
                skip("malformed".into(), counts.malformed);
                skip("origin".into(), skipped_origin);
                skip("capacity".into(), counts.over_capacity);
                skip("unknown_deletion".into(), counts.unknown_deletions);
                for (reason, n) in refused {
                    *stats.refused.entry(reason.to_owned()).or_default() += n;
                }
                stats.held = tracker.len() as u64;
                if startup {
                    last_full = tokio::time::Instant::now();
                }
                startup = false;
                first = false;
                backoff = FIRST_BACKOFF;
                config.poll_interval
            }
            Err(err) => {
                let text = err.to_string();
                {
                    let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
                    if stats.last_error.as_deref() != Some(text.as_str()) {
                        log::warn!(
                            "crowdsec: polling {} failed, enforcing what is held and retrying: {text}",
                            config.lapi_url
                        );
                    }
                    stats.up = false;
                    stats.polls_failed += 1;
                    stats.last_error = Some(text);
                }
                failing_since_logged = true;
                // The whole set again once it answers: deltas may have been missed.
                startup = true;
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

/// Drop new decisions of origins not asked for; how many.
fn filter_origins(batch: &mut StreamBatch, origins: &[String]) -> u64 {
    if origins.is_empty() {
        return 0;
    }
    let before = batch.new.len();
    batch
        .new
        .retain(|d| origins.iter().any(|o| o.eq_ignore_ascii_case(&d.origin)));
    (before - batch.new.len()) as u64
}

/// The prefixes blocked on CrowdSec's behalf now (a restarted daemon's, or one whose LAPI lost
/// decisions while it could not be read).
async fn held_by_crowdsec(owner: &Handle) -> Vec<Prefix> {
    let owner = owner.clone();
    let listed = tokio::task::spawn_blocking(move || {
        owner
            .list(ListFilter {
                kind: Some(DecisionKind::Block),
                ..ListFilter::default()
            })
            .wait_timeout(OWNER_TIMEOUT)
    })
    .await;
    match listed {
        Ok(Ok(entries)) => entries
            .into_iter()
            .filter(|entry| entry.decision.origin.source.is_crowdsec())
            .map(|entry| entry.decision.prefix)
            .collect(),
        Ok(Err(err)) => {
            log::warn!("crowdsec: listing the blocks held: {err}");
            Vec::new()
        }
        Err(err) => {
            log::warn!("crowdsec: listing the blocks held: {err}");
            Vec::new()
        }
    }
}

/// Send the orders (unblocks first, then blocks grouped by origin, end and reason) and wait
/// for the owner; what it refused, by reason.
async fn carry_out(owner: &Handle, orders: Vec<Order>, now: u64) -> BTreeMap<&'static str, u64> {
    if orders.is_empty() {
        return BTreeMap::new();
    }
    let owner = owner.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut refused: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut unblocks = Vec::new();
        let mut groups: BTreeMap<(String, u64, String, bool), Vec<Prefix>> = BTreeMap::new();
        for order in orders {
            match order {
                Order::Unblock { prefix } => unblocks.push(prefix),
                Order::Block {
                    prefix,
                    origin,
                    reason,
                    until_unix,
                    shorten,
                } => groups
                    .entry((origin, until_unix, reason, shorten))
                    .or_default()
                    .push(prefix),
            }
        }
        if !unblocks.is_empty()
            && let Err(err) = owner
                .unblock_held_by(unblocks, Source::is_crowdsec)
                .wait_timeout(OWNER_TIMEOUT)
        {
            log::warn!("crowdsec: unblocking: {err}");
        }
        let pending: Vec<_> = groups
            .into_iter()
            .map(|((origin, until, reason, shorten), prefixes)| {
                owner.block(BlockOrder {
                    prefixes,
                    source: Source::Crowdsec(origin.into()),
                    reason,
                    expires: Expiry::After(Duration::from_secs(until.saturating_sub(now).max(1))),
                    force: false,
                    evidence: Vec::new(),
                    replace_own: shorten,
                })
            })
            .collect();
        for answer in pending {
            match answer.wait_timeout(OWNER_TIMEOUT) {
                Ok(applied) => {
                    for (_, refusal) in applied.refused {
                        *refused.entry(refusal_label(&refusal)).or_default() += 1;
                    }
                }
                Err(err) => log::warn!("crowdsec: blocking: {err}"),
            }
        }
        refused
    })
    .await;
    outcome.unwrap_or_default()
}

const fn refusal_label(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::TooBroad { .. } => "too_broad",
        Refusal::NotUnicast { .. } => "not_unicast",
        Refusal::OwnAddress(_) => "own_address",
        Refusal::Allowlisted { .. } => "allowlisted",
        Refusal::AlreadyBlockedLonger { .. } => "already_blocked_longer",
        Refusal::ConfiguredAllow => "configured_allow",
        Refusal::ListFull { .. } => "list_full",
        Refusal::Kernel(_) => "kernel",
    }
}
