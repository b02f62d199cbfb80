//! The bouncer: polls the local API's decision stream on its own thread (a current-thread
//! tokio runtime: the HTTP client is async; the owner and the packet path are not) and turns
//! what it reads into orders through the owner's front door. While the LAPI cannot be read
//! xdpguard keeps enforcing everything it has; polls are retried with backoff, and the first
//! good answer after a failure asks for the whole set again (`startup=true`), so nothing
//! deleted meanwhile stays blocked and nothing added is missed.
use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::watch;

use super::{
    config::CrowdsecConfig,
    metrics::BouncerStats,
    stream::{StreamBatch, parse_stream},
    tracker::Tracker,
};
use crate::peers::{
    orders::{OWNER_TIMEOUT, Peer, carry_out},
    runtime::PeerThread,
};
use crate::{
    enforce::{
        decision::{DecisionKind, Source},
        owner::{Handle, ListFilter},
    },
    error_chain,
    prefix::Prefix,
};

/// Longest wait between two polls that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// New decisions in one delta from which a full read follows [`SETTLE`] after the last such
/// delta.
const BULK_DELTA: usize = 1000;
const SETTLE: Duration = Duration::from_secs(5);
/// First wait after a failed poll.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// CrowdSec's decisions: `crowdsec:ORIGIN`, and only those are taken back.
const CROWDSEC: Peer = Peer {
    source: Source::Crowdsec,
    holds: Source::is_crowdsec,
    name: "crowdsec",
};

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
    thread: PeerThread,
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
        let thread = {
            let stats = Arc::clone(&stats);
            let config = config.clone();
            PeerThread::spawn("crowdsec", move |stopped| {
                run(config, client, owner, stats, stopped)
            })
            .map_err(BouncerError::Thread)?
        };
        Ok(Self {
            thread,
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
        self.thread.stop();
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
    // A full read due soon after a bulk change settled (see [`BULK_DELTA`]).
    let mut settle_at: Option<tokio::time::Instant> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut failing_since_logged = false;
    log::info!(
        "crowdsec: polling {} every {:?}",
        config.lapi_url,
        config.poll_interval
    );
    loop {
        let due = settle_at.is_some_and(|at| tokio::time::Instant::now() >= at);
        if due || last_full.elapsed() >= config.resync_interval {
            startup = true;
            settle_at = None;
        }
        let result = tokio::select! {
            _ = stopped.changed() => return,
            result = poll(&client, &config, startup) => result,
        };
        let wait = match result {
            Ok(mut batch) => {
                // A bulk change (an import, a list refresh) commits rows whose creation time
                // precedes a poll made meanwhile: no delta carries them. A full read once the
                // deltas are small again picks them up, instead of at the next resync.
                if !startup && batch.new.len() >= BULK_DELTA {
                    settle_at = Some(tokio::time::Instant::now() + SETTLE);
                }
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
                let refused = carry_out(&owner, CROWDSEC, orders, now).await;
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
                for ((_, reason), n) in refused {
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
                source_kind: Some(Source::Crowdsec(Arc::from(""))),
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
