//! Prometheus text exposition (format 0.0.4) and a small HTTP listener for it.
//!
//! Plain data in, text out: the daemon fills a [`Snapshot`] (and a [`LogSnapshot`]) at scrape
//! time, [`render`] and [`render_logs`] turn them into the page, and [`MetricsServer`] answers
//! `GET /metrics` with whatever its handler returns. Nothing here reads kernel maps or locks
//! daemon state.
//!
//! The page: `# HELP` and `# TYPE` once per family, families in name order, series in label
//! order with label names alphabetical, label values escaped. Families without samples still
//! carry their HELP and TYPE lines.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// One interface × family × verdict counter pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficSample {
    pub interface: String,
    /// `ipv4`, `ipv6` or `other`.
    pub family: &'static str,
    /// `pass`, `drop`, `allowed`, `would_drop`, `malformed`, `non_ip`, `expired_hit`, …
    pub verdict: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// One kernel list × family: how full it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSample {
    /// `allow`, `block_host` or `block_prefix`.
    pub list: &'static str,
    pub family: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// Decisions applied since the daemon started, per source × action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionSample {
    /// `manual`, `ruleset:NAME`, `volume`, `file:NAME`, …
    pub source: String,
    /// `block`, `unblock`, `allow`, `unallow`, `expire`, `refused`, …
    pub action: &'static str,
    pub count: u64,
}

/// One of the block entries with the most drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopBlocked {
    pub prefix: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Everything one scrape shows, read by the daemon at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: &'static str,
    pub traffic: Vec<TrafficSample>,
    pub entries: Vec<ListSample>,
    pub decisions: Vec<DecisionSample>,
    /// Already cut to the configured N, most drops first.
    pub top_blocked: Vec<TopBlocked>,
    /// Inserts refused because a list was full, since start.
    pub list_full_errors: u64,
    /// Kernel entries no decision accounts for, at the last reconcile.
    pub unknown_entries: u64,
    /// Entries reconcile put back into the kernel, since start.
    pub reconcile_repaired: u64,
}

/// Log scoring counters, appended to the page when log scoring runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSnapshot {
    /// (input, lines read).
    pub lines: Vec<(String, u64)>,
    /// (input, lines cut at the length limit).
    pub truncated: Vec<(String, u64)>,
    /// (ruleset, rule, matches).
    pub matches: Vec<(String, String, u64)>,
    pub scored_addresses: u64,
}

/// The metrics page for `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut packets = Family::new(
        "xdpguard_packets_total",
        Kind::Counter,
        "Frames seen by the XDP program, by interface, address family and verdict.",
    );
    let mut bytes = Family::new(
        "xdpguard_bytes_total",
        Kind::Counter,
        "Bytes of the frames seen by the XDP program, by interface, address family and verdict.",
    );
    for sample in &snapshot.traffic {
        let labels = vec![
            ("interface", sample.interface.clone()),
            ("family", sample.family.to_owned()),
            ("verdict", sample.verdict.to_owned()),
        ];
        packets.add(labels.clone(), sample.packets);
        bytes.add(labels, sample.bytes);
    }
    let mut entries = Family::new(
        "xdpguard_entries",
        Kind::Gauge,
        "Entries in each kernel list.",
    );
    let mut capacity = Family::new(
        "xdpguard_map_capacity",
        Kind::Gauge,
        "Maximum entries of each kernel list.",
    );
    for sample in &snapshot.entries {
        let labels = vec![
            ("list", sample.list.to_owned()),
            ("family", sample.family.to_owned()),
        ];
        entries.add(labels.clone(), sample.entries);
        capacity.add(labels, sample.capacity);
    }
    let mut decisions = Family::new(
        "xdpguard_decisions_total",
        Kind::Counter,
        "Decisions applied since the daemon started, by source and action.",
    );
    for sample in &snapshot.decisions {
        decisions.add(
            vec![
                ("source", sample.source.clone()),
                ("action", sample.action.to_owned()),
            ],
            sample.count,
        );
    }
    let mut top_packets = Family::new(
        "xdpguard_top_blocked_packets_total",
        Kind::Counter,
        "Packets dropped by the block entries with the most drops.",
    );
    let mut top_bytes = Family::new(
        "xdpguard_top_blocked_bytes_total",
        Kind::Counter,
        "Bytes dropped by the block entries with the most drops.",
    );
    for sample in &snapshot.top_blocked {
        top_packets.add(vec![("prefix", sample.prefix.clone())], sample.packets);
        top_bytes.add(vec![("prefix", sample.prefix.clone())], sample.bytes);
    }
    let mut build = Family::new(
        "xdpguard_build_info",
        Kind::Gauge,
        "Always 1; labels name the build.",
    );
    build.add(vec![("version", snapshot.version.to_owned())], 1);
    let mut full = Family::new(
        "xdpguard_list_full_errors_total",
        Kind::Counter,
        "Inserts refused because the kernel list was full.",
    );
    full.add(Vec::new(), snapshot.list_full_errors);
    let mut unknown = Family::new(
        "xdpguard_unknown_entries",
        Kind::Gauge,
        "Kernel block entries no decision accounts for, at the last reconcile.",
    );
    unknown.add(Vec::new(), snapshot.unknown_entries);
    let mut repaired = Family::new(
        "xdpguard_reconcile_repaired_total",
        Kind::Counter,
        "Entries missing from the kernel that reconcile put back.",
    );
    repaired.add(Vec::new(), snapshot.reconcile_repaired);
    page(vec![
        packets,
        bytes,
        entries,
        capacity,
        decisions,
        top_packets,
        top_bytes,
        build,
        full,
        unknown,
        repaired,
    ])
}

/// The log scoring families, to append to [`render`]'s page.
pub fn render_logs(snapshot: &LogSnapshot) -> String {
    let mut lines = Family::new(
        "xdpguard_log_lines_total",
        Kind::Counter,
        "Log lines read, by input.",
    );
    for (input, count) in &snapshot.lines {
        lines.add(vec![("input", input.clone())], *count);
    }
    let mut truncated = Family::new(
        "xdpguard_log_lines_truncated_total",
        Kind::Counter,
        "Log lines cut at the length limit, by input.",
    );
    for (input, count) in &snapshot.truncated {
        truncated.add(vec![("input", input.clone())], *count);
    }
    let mut matches = Family::new(
        "xdpguard_log_matches_total",
        Kind::Counter,
        "Log lines a rule matched, by ruleset and rule.",
    );
    for (ruleset, rule, count) in &snapshot.matches {
        matches.add(
            vec![("ruleset", ruleset.clone()), ("rule", rule.clone())],
            *count,
        );
    }
    let mut scored = Family::new(
        "xdpguard_scored_addresses",
        Kind::Gauge,
        "Source addresses with a log score in the window.",
    );
    scored.add(Vec::new(), snapshot.scored_addresses);
    page(vec![lines, truncated, matches, scored])
}

/// The volume detectors' families, to append to [`render`]'s page: the last interval's top
/// prefixes (at most `volume.top` series per source, so cardinality stays bounded), hot
/// prefixes, alerts and the flow collector's per-exporter counters.
pub fn render_volume(snapshot: &crate::volume::engine::VolumeSnapshot) -> String {
    let mut bytes = Family::new(
        "xdpguard_volume_bytes",
        Kind::Gauge,
        "Bytes a top prefix sent in the last volume interval, by counting source (xdp or flow), family and prefix.",
    );
    let mut packets = Family::new(
        "xdpguard_volume_packets",
        Kind::Gauge,
        "Packets a top prefix sent in the last volume interval, by counting source, family and prefix.",
    );
    for row in &snapshot.top {
        let labels = vec![
            ("source", row.source.clone()),
            ("family", row.family.clone()),
            ("prefix", row.prefix.clone()),
        ];
        bytes.add(labels.clone(), row.bytes);
        packets.add(labels, row.packets);
    }
    let mut interval = Family::new(
        "xdpguard_volume_interval_milliseconds",
        Kind::Gauge,
        "Length of the last volume interval.",
    );
    interval.add(Vec::new(), snapshot.interval_ms);
    let mut sources = Family::new(
        "xdpguard_volume_tracked_sources",
        Kind::Gauge,
        "Distinct source addresses counted in the last volume interval, by counting source.",
    );
    let mut untracked = Family::new(
        "xdpguard_volume_untracked_bytes",
        Kind::Gauge,
        "Bytes of sources past volume.max_sources in the last interval (counted in totals, not per prefix).",
    );
    let mut heap = Family::new(
        "xdpguard_volume_trie_bytes",
        Kind::Gauge,
        "Heap held by the prefix tries of a counting source.",
    );
    for totals in &snapshot.totals {
        let labels = vec![("source", totals.source.clone())];
        sources.add(labels.clone(), totals.sources);
        untracked.add(labels.clone(), totals.overflow_bytes);
        heap.add(labels, totals.heap_bytes);
    }
    let mut hot = Family::new(
        "xdpguard_volume_hot_prefixes",
        Kind::Gauge,
        "Prefixes a volume detector holds over its limit now, by detector and action.",
    );
    for row in &snapshot.hot {
        hot.add(
            vec![
                ("detector", row.detector.clone()),
                ("action", row.action.clone()),
            ],
            1,
        );
    }
    let mut alerts = Family::new(
        "xdpguard_volume_alerts_total",
        Kind::Counter,
        "Prefixes that went over a volume detector's limit (new incidents), by family and action.",
    );
    for (family, actions) in &snapshot.alerts {
        for (action, count) in actions {
            alerts.add(
                vec![("family", family.clone()), ("action", action.clone())],
                *count,
            );
        }
    }
    let mut overflow = Family::new(
        "xdpguard_volume_hot_overflow_total",
        Kind::Counter,
        "Prefixes over a limit that a detector did not track because it held its maximum.",
    );
    overflow.add(Vec::new(), snapshot.hot_overflow);
    let mut drain_errors = Family::new(
        "xdpguard_volume_drain_errors_total",
        Kind::Counter,
        "Failed reads of the XDP program's per-source volume maps.",
    );
    drain_errors.add(Vec::new(), snapshot.drain_errors);
    let mut datagrams = Family::new(
        "xdpguard_flow_datagrams_total",
        Kind::Counter,
        "NetFlow v9 / IPFIX datagrams received, by exporter address.",
    );
    let mut records = Family::new(
        "xdpguard_flow_records_total",
        Kind::Counter,
        "Flow records counted into the volumes, by exporter address.",
    );
    let mut filtered = Family::new(
        "xdpguard_flow_filtered_total",
        Kind::Counter,
        "Flow records left out by the direction or interface filter (or without a source), by exporter.",
    );
    let mut errors = Family::new(
        "xdpguard_flow_errors_total",
        Kind::Counter,
        "Malformed, truncated or unusable flow data, by exporter and kind.",
    );
    let mut rejected = Family::new(
        "xdpguard_flow_rejected_datagrams_total",
        Kind::Counter,
        "Flow datagrams refused because their sender is not in volume.flow.exporters.",
    );
    rejected.add(Vec::new(), snapshot.flow_rejected);
    let mut templates = Family::new(
        "xdpguard_flow_templates",
        Kind::Gauge,
        "Templates held per exporter.",
    );
    for exporter in &snapshot.exporters {
        let labels = vec![("exporter", exporter.exporter.clone())];
        datagrams.add(labels.clone(), exporter.datagrams);
        records.add(labels.clone(), exporter.records);
        filtered.add(labels.clone(), exporter.filtered);
        templates.add(labels, exporter.templates);
        for (kind, count) in &exporter.errors {
            errors.add(
                vec![
                    ("exporter", exporter.exporter.clone()),
                    ("kind", kind.clone()),
                ],
                *count,
            );
        }
    }
    page(vec![
        bytes,
        packets,
        interval,
        sources,
        untracked,
        heap,
        hot,
        alerts,
        overflow,
        drain_errors,
        datagrams,
        records,
        filtered,
        errors,
        rejected,
        templates,
    ])
}

/// `process_start_time_seconds`, the standard family uptime and restart alerts use, to append
/// to [`render`]'s page. Before the epoch reads as 0.
pub fn render_process(start_time: SystemTime) -> String {
    let mut start = Family::new(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
    );
    let seconds = start_time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    start.add(Vec::new(), seconds);
    page(vec![start])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// Label (name, value) pairs, names sorted.
type Labels = Vec<(&'static str, String)>;

/// A metric family: name, type, help, and its series (labels → value), sorted.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: BTreeMap<Labels, u64>,
}

impl Family {
    const fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            samples: BTreeMap::new(),
        }
    }

    /// One series per label set, as the format requires: the same labels twice add up.
    fn add(&mut self, mut labels: Labels, value: u64) {
        labels.sort_unstable_by_key(|&(name, _)| name);
        let total = self.samples.entry(labels).or_default();
        *total = total.saturating_add(value);
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.name());
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
    }
}

/// The families in name order, so the same data is the same bytes.
fn page(mut families: Vec<Family>) -> String {
    families.sort_unstable_by_key(|family| family.name);
    let mut out = String::new();
    for family in &families {
        family.write(&mut out);
    }
    out
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text as the format wants it: backslash and newline escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("binding metrics listener {listen}")]
    Bind {
        listen: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("starting the metrics listener thread")]
    Thread(#[source] io::Error),
}

/// Renders the page, or says why it cannot (the reason goes out with a 500).
pub type Handler = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Largest request head (request line and header fields) read; longer gets a 431.
const MAX_HEAD_BYTES: usize = 8 << 10;
/// Connections served at once; more get a 503 straight away.
const MAX_CONNECTIONS: usize = 8;
/// Time a client has to send its whole request head, from accept.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the client has to take the whole answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After answering: how long, and how much, to read what the client still sends, so closing
/// does not reset the connection before the answer arrives.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 64 << 10;
/// Pause after a failed accept (out of descriptors, …) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const PAGE_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";
const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>xdpguard</title></head>\
<body><h1>xdpguard</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n";

/// Serves `GET /metrics` (and `HEAD`) from a background accept thread, one short-lived thread
/// per connection, at most 8 at once (more get a 503).
pub struct MetricsServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the accept thread, the connection threads and the server handle share.
struct Shared {
    stop: AtomicBool,
    /// The connections being served, by id: a clone of each stream, so stopping can close them.
    live: Mutex<BTreeMap<u64, TcpStream>>,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, BTreeMap<u64, TcpStream>> {
        // Nothing panics while holding the lock; a poisoned map is still a correct map.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's place in [`Shared::live`], given back on drop (also when the handler panics).
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Slot {
    /// A place for `stream`, unless [`MAX_CONNECTIONS`] are being served.
    fn claim(shared: &Arc<Shared>, id: u64, stream: &TcpStream) -> Option<Self> {
        let mut live = shared.live();
        if live.len() >= MAX_CONNECTIONS {
            return None;
        }
        let _: Option<TcpStream> = live.insert(id, stream.try_clone().ok()?);
        Some(Self {
            shared: Arc::clone(shared),
            id,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _: Option<TcpStream> = self.shared.live().remove(&self.id);
    }
}

impl MetricsServer {
    /// Bind `listen` and serve from a background thread.
    ///
    /// # Errors
    /// When the address cannot be bound, or the thread not started.
    pub fn spawn(listen: SocketAddr, handler: Handler) -> Result<Self, MetricsError> {
        let bind_error = |source| MetricsError::Bind { listen, source };
        let listener = TcpListener::bind(listen).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            live: Mutex::new(BTreeMap::new()),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("metrics".into())
                .spawn(move || accept_loop(&listener, &shared, &handler))
                .map_err(MetricsError::Thread)?
        };
        Ok(Self {
            local_addr,
            shared,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, close the connections being served, and wait for all threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept with a connection of our own.
        match TcpStream::connect_timeout(&wake_address(self.local_addr), Duration::from_secs(1)) {
            Ok(_) => {
                if thread.join().is_err() {
                    log::warn!("metrics: the listener thread panicked");
                }
            }
            // The thread ends at the next connection; waiting here could be forever.
            Err(err) => log::warn!(
                "metrics: could not wake the listener on {}, leaving it behind: {err}",
                self.local_addr
            ),
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Where to connect to reach a listener bound to `local`: loopback for a wildcard address.
fn wake_address(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, handler: &Handler) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id: u64 = 0;
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                if !matches!(
                    err.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) {
                    log::warn!("metrics: accepting a connection: {err}");
                    thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
        };
        workers.retain(|worker| !worker.is_finished());
        next_id = next_id.wrapping_add(1);
        let Some(slot) = Slot::claim(shared, next_id, &stream) else {
            refuse(stream);
            continue;
        };
        let handler = Arc::clone(handler);
        // On failure the closure is dropped: the slot is given back and the stream closed.
        let spawned = thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve(stream, &handler);
            });
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(err) => log::warn!("metrics: starting a connection thread: {err}"),
        }
    }
    // Unblock the connections still reading or writing, then wait for them.
    for stream in shared.live().values() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    for worker in workers {
        if worker.join().is_err() {
            log::warn!("metrics: a connection thread panicked");
        }
    }
}

/// A 503 from the accept thread, which must never wait on a client.
fn refuse(mut stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // Whatever already arrived, so closing sends a FIN rather than a reset.
    let _ = io::copy(&mut (&stream).take(MAX_HEAD_BYTES as u64), &mut io::sink());
    let answer = Response::text("503 Service Unavailable", "too many connections\n");
    let _ = stream.write_all(&answer.encode(false));
    let _ = stream.shutdown(Shutdown::Write);
}

/// An answer: status line, content type, optional extra header line, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    extra_header: Option<&'static str>,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: TEXT_TYPE,
            extra_header: None,
            body: body.into(),
        }
    }

    /// The bytes on the wire; `head_only` (for `HEAD`) keeps the body's length but not the body.
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if let Some(extra) = self.extra_header {
            head.push_str(extra);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// What reading a request head came to.
enum Head {
    /// The head, up to and including the blank line.
    Complete(Vec<u8>),
    /// Over [`MAX_HEAD_BYTES`] without a blank line.
    TooLarge,
    /// The client stopped (closed, failed or timed out) before the blank line.
    Incomplete { received: bool },
}

/// Read the request head within `deadline`, whatever pace the client sends it at.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Head {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 1024];
    loop {
        let incomplete = Head::Incomplete {
            received: !head.is_empty(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return incomplete;
        }
        // One byte past the limit at most: enough to know it was passed.
        let room = (MAX_HEAD_BYTES + 1 - head.len()).min(chunk.len());
        let read = match stream.read(&mut chunk[..room]) {
            Ok(0) => return incomplete,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return incomplete,
        };
        // The blank line may straddle two reads.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = head_end(&head[from..]).map(|end| from + end) {
            if end > MAX_HEAD_BYTES {
                return Head::TooLarge;
            }
            head.truncate(end);
            return Head::Complete(head);
        }
        if head.len() > MAX_HEAD_BYTES {
            return Head::TooLarge;
        }
    }
}

/// Where the head ends in `bytes`: just past the first blank line (CRLF or bare LF).
fn head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        let rest = &bytes[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Method and target of the request line `METHOD SP TARGET SP HTTP/1.x`.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = head.iter().position(|&byte| byte == b'\n')?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !method.is_empty()
        && target.starts_with('/')
        && version.starts_with("HTTP/1.");
    valid.then_some((method, target))
}

/// The answer to `method` `target`.
fn route(method: &str, target: &str, handler: &Handler) -> Response {
    if method != "GET" && method != "HEAD" {
        return Response {
            extra_header: Some("Allow: GET, HEAD"),
            ..Response::text("405 Method Not Allowed", "only GET and HEAD\n")
        };
    }
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    match path {
        "/metrics" => scrape(handler),
        "/" => Response {
            content_type: "text/html; charset=utf-8",
            ..Response::text("200 OK", INDEX)
        },
        _ => Response::text("404 Not Found", "not found; the metrics are at /metrics\n"),
    }
}

fn scrape(handler: &Handler) -> Response {
    // A panicking handler is a failed scrape, not a lost connection thread.
    match std::panic::catch_unwind(AssertUnwindSafe(|| handler())) {
        Ok(Ok(page)) => Response {
            content_type: PAGE_TYPE,
            ..Response::text("200 OK", page)
        },
        Ok(Err(reason)) => {
            log::warn!("metrics scrape failed: {reason}");
            Response::text("500 Internal Server Error", format!("{reason}\n"))
        }
        Err(_) => {
            log::warn!("metrics scrape failed: the handler panicked");
            Response::text(
                "500 Internal Server Error",
                "the metrics handler panicked\n",
            )
        }
    }
}

/// One connection: one request, one answer, close.
fn serve(mut stream: TcpStream, handler: &Handler) {
    let (response, head_only) = match read_head(&mut stream, Instant::now() + HEAD_TIMEOUT) {
        Head::Complete(head) => match request_line(&head) {
            Some((method, target)) => (route(method, target, handler), method == "HEAD"),
            None => (
                Response::text("400 Bad Request", "bad request line\n"),
                false,
            ),
        },
        Head::TooLarge => (
            Response::text(
                "431 Request Header Fields Too Large",
                "request head over 8 KiB\n",
            ),
            false,
        ),
        Head::Incomplete { received: true } => (
            Response::text("408 Request Timeout", "incomplete request head\n"),
            false,
        ),
        // Nothing asked, nothing to answer.
        Head::Incomplete { received: false } => return,
    };
    write_within(&mut stream, &response.encode(head_only), WRITE_TIMEOUT);
    // Finish sending, then read a bounded amount of whatever the client still sends: closing
    // with unread input would reset the connection and could lose the answer.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let _ = io::copy(&mut (&stream).take(LINGER_BYTES), &mut io::sink());
}

/// Write `bytes` unless the client takes longer than `limit` over all of them.
fn write_within(stream: &mut TcpStream, mut bytes: &[u8], limit: Duration) {
    let deadline = Instant::now() + limit;
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
            return;
        }
        match stream.write(bytes) {
            Ok(0) => return,
            Ok(written) => bytes = &bytes[written..],
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            version: "1.2.3",
            traffic: vec![
                TrafficSample {
                    interface: "veth-b".into(),
                    family: "ipv4",
                    verdict: "drop",
                    packets: 7,
                    bytes: 700,
                },
                TrafficSample {
                    interface: "veth-fw".into(),
                    family: "ipv6",
                    verdict: "pass",
                    packets: 9,
                    bytes: 900,
                },
            ],
            entries: vec![
                ListSample {
                    list: "block_host",
                    family: "ipv4",
                    entries: 3,
                    capacity: 10,
                },
                ListSample {
                    list: "allow",
                    family: "ipv6",
                    entries: 1,
                    capacity: 4,
                },
            ],
            decisions: vec![
                DecisionSample {
                    source: "manual".into(),
                    action: "block",
                    count: 3,
                },
                DecisionSample {
                    source: "ruleset:sshd".into(),
                    action: "block",
                    count: 2,
                },
            ],
            top_blocked: vec![
                TopBlocked {
                    prefix: "a\"b\\c\nd".into(),
                    packets: 5,
                    bytes: 50,
                },
                TopBlocked {
                    prefix: "198.51.100.0/24".into(),
                    packets: 4,
                    bytes: 40,
                },
            ],
            list_full_errors: 2,
            unknown_entries: 0,
            reconcile_repaired: 1,
        }
    }

    fn log_snapshot() -> LogSnapshot {
        LogSnapshot {
            lines: vec![("auth".into(), 7), ("nginx".into(), 3)],
            truncated: vec![("auth".into(), 1)],
            matches: vec![("sshd".into(), "failed password".into(), 4)],
            scored_addresses: 2,
        }
    }

    /// The page the daemon serves: the three renders back to back.
    fn full_page() -> String {
        render(&snapshot())
            + &render_logs(&log_snapshot())
            + &render_process(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    /// (name, type) of every `# TYPE` line.
    fn types(page: &str) -> Vec<(&str, &str)> {
        page.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|rest| rest.split_once(' ').unwrap())
            .collect()
    }

    #[test]
    fn render_escapes_backslash_quote_and_newline_in_label_values() {
        let text = render(&snapshot());
        assert!(
            text.contains(r#"xdpguard_top_blocked_packets_total{prefix="a\"b\\c\nd"} 5"#),
            "{text}"
        );
        assert!(text.contains(r#"xdpguard_top_blocked_bytes_total{prefix="a\"b\\c\nd"} 50"#));
        // The raw newline never reaches the page: every line is a comment or a sample.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("xdpguard_"),
                "{line:?}"
            );
        }
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn render_writes_help_and_type_once_per_family_even_without_samples() {
        for page in [full_page(), render(&Snapshot::default())] {
            let names: Vec<&str> = types(&page).into_iter().map(|(name, _)| name).collect();
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(names.len(), unique.len(), "a family twice: {page}");
            for name in names {
                let help = format!("# HELP {name} ");
                assert_eq!(page.matches(&help).count(), 1, "{name}: {page}");
            }
        }
        let empty = render(&Snapshot::default());
        assert!(empty.contains("# TYPE xdpguard_packets_total counter\n"));
        assert!(!empty.contains("xdpguard_packets_total{"));
    }

    #[test]
    fn render_counters_end_in_total_and_gauges_do_not() {
        let page = full_page();
        let types = types(&page);
        assert!(types.len() >= 16, "{page}");
        for (name, kind) in types {
            assert!(kind == "counter" || kind == "gauge", "{name} {kind}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
        }
    }

    #[test]
    fn render_is_sorted_and_independent_of_input_order() {
        let text = render(&snapshot());
        let mut reversed = snapshot();
        reversed.traffic.reverse();
        reversed.entries.reverse();
        reversed.decisions.reverse();
        reversed.top_blocked.reverse();
        assert_eq!(text, render(&reversed));
        let names: Vec<&str> = types(&text).into_iter().map(|(name, _)| name).collect();
        assert!(names.is_sorted(), "{names:?}");
        // Series in label order, label names alphabetical.
        let ipv6_series = text
            .find(r#"xdpguard_packets_total{family="ipv6",interface="veth-fw",verdict="pass"} 9"#)
            .unwrap();
        let ipv4_series = text
            .find(r#"xdpguard_packets_total{family="ipv4",interface="veth-b",verdict="drop"} 7"#)
            .unwrap();
        assert!(ipv4_series < ipv6_series, "{text}");
        // What the kernel tests and dashboards look for.
        assert!(text.contains(r#"xdpguard_map_capacity{family="ipv4",list="block_host"} 10"#));
        assert!(text.contains(r#"xdpguard_decisions_total{action="block",source="manual"} 3"#));
        assert!(text.contains(r#"xdpguard_build_info{version="1.2.3"} 1"#));
        assert!(text.contains("xdpguard_list_full_errors_total 2\n"));
        let logs = render_logs(&log_snapshot());
        assert!(logs.contains(r#"xdpguard_log_lines_total{input="auth"} 7"#));
        assert!(
            logs.contains(r#"xdpguard_log_matches_total{rule="failed password",ruleset="sshd"} 4"#)
        );
        assert!(full_page().contains("process_start_time_seconds 1700000000\n"));
    }

    #[test]
    fn render_adds_up_samples_with_the_same_labels() {
        let mut twice = snapshot();
        twice.decisions.push(DecisionSample {
            source: "manual".into(),
            action: "block",
            count: 4,
        });
        let text = render(&twice);
        assert!(text.contains(r#"xdpguard_decisions_total{action="block",source="manual"} 7"#));
        assert_eq!(text.matches(r#"source="manual""#).count(), 1, "{text}");
    }

    /// `promtool check metrics` (Debian's prometheus package) lints the whole page.
    #[test]
    #[ignore = "needs promtool: run by `cargo xtask test`, after `cargo xtask setup`"]
    fn promtool_accepts_the_page() {
        use std::process::{Command, Stdio};
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian's prometheus package)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(full_page().as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
            "promtool: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn serve_page() -> MetricsServer {
        let page = render(&snapshot());
        MetricsServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(move || Ok(page.clone())),
        )
        .unwrap()
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    }

    /// Send `request`, read the whole answer.
    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = connect(addr);
        stream.write_all(request).unwrap();
        let mut out = String::new();
        let _: usize = stream.read_to_string(&mut out).unwrap();
        out
    }

    /// Poll `condition` for up to 20 s.
    fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "never: {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn http_get_metrics_is_the_page_with_the_exposition_content_type() {
        let server = serve_page();
        let answer = get(
            server.local_addr(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert_eq!(body, render(&snapshot()));
        // HTTP/1.0, a query string and bare LFs are fine too.
        let answer = get(server.local_addr(), b"GET /metrics?x=1 HTTP/1.0\n\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        // HEAD: the length, no body.
        let answer = get(server.local_addr(), b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "{answer}");
        // The index links the page.
        let answer = get(server.local_addr(), b"GET / HTTP/1.1\r\n\r\n");
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.contains("href=\"/metrics\""),
            "{answer}"
        );
        server.shutdown();
    }

    #[test]
    fn http_unknown_path_is_404() {
        let server = serve_page();
        let answer = get(server.local_addr(), b"GET /nope HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        server.shutdown();
    }

    #[test]
    fn http_other_methods_are_405_with_allow() {
        let server = serve_page();
        let answer = get(
            server.local_addr(),
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert!(
            answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n")
                && answer.contains("\r\nAllow: GET, HEAD\r\n"),
            "{answer}"
        );
        server.shutdown();
    }

    #[test]
    fn http_oversized_request_head_is_431() {
        let server = serve_page();
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        let answer = get(server.local_addr(), huge.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        // Never ending, no blank line at all.
        let answer = get(server.local_addr(), "a".repeat(20_000).as_bytes());
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        server.shutdown();
    }

    #[test]
    fn http_garbage_request_line_is_400() {
        let server = serve_page();
        for request in [
            &b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
        ] {
            let answer = get(server.local_addr(), request);
            assert!(answer.starts_with("HTTP/1.1 400 "), "{request:?}: {answer}");
        }
        server.shutdown();
    }

    #[test]
    fn http_handler_error_is_500_with_the_reason() {
        let server = MetricsServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| Err("maps unreadable".into())),
        )
        .unwrap();
        let answer = get(server.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            answer.starts_with("HTTP/1.1 500 Internal Server Error\r\n")
                && answer.ends_with("\r\n\r\nmaps unreadable\n"),
            "{answer}"
        );
        server.shutdown();
    }

    #[test]
    fn http_handler_panic_is_500_and_frees_the_connection_slot() {
        let server = MetricsServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| panic!("test panic in the metrics handler")),
        )
        .unwrap();
        for _ in 0..MAX_CONNECTIONS + 2 {
            let answer = get(server.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
            assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
        }
        eventually("every slot given back", || server.shared.live().is_empty());
        server.shutdown();
    }

    #[test]
    fn http_silent_client_does_not_block_another_scrape() {
        let server = serve_page();
        let _silent = connect(server.local_addr());
        let _half = {
            let mut half = connect(server.local_addr());
            half.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            half
        };
        let answer = get(server.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        server.shutdown();
    }

    #[test]
    fn http_connections_over_the_cap_get_503_and_slots_come_back() {
        let server = serve_page();
        let addr = server.local_addr();
        let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| connect(addr)).collect();
        eventually("all slots taken", || {
            server.shared.live().len() == MAX_CONNECTIONS
        });
        // Refused at once, without sending anything.
        let mut extra = connect(addr);
        let mut answer = String::new();
        let _: usize = extra.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        drop(silent);
        eventually("slots given back", || server.shared.live().is_empty());
        let answer = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        server.shutdown();
    }

    #[test]
    fn http_client_that_stops_mid_head_gets_408_at_the_deadline() {
        let server = serve_page();
        let mut slow = connect(server.local_addr());
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
        let mut answer = String::new();
        let _: usize = slow.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        server.shutdown();
    }

    #[test]
    fn shutdown_closes_connections_joins_and_stops_listening() {
        let server = serve_page();
        let addr = server.local_addr();
        let mut silent = connect(addr);
        eventually("the silent client is served", || {
            server.shared.live().len() == 1
        });
        let shared = Arc::clone(&server.shared);
        server.shutdown();
        // Joined: every connection thread is gone, and took its slot with it.
        assert!(shared.live().is_empty());
        // The server closed the silent client rather than waiting out its timeout.
        let mut rest = Vec::new();
        let _: usize = silent.read_to_end(&mut rest).unwrap_or(0);
        assert!(rest.is_empty());
        assert!(TcpStream::connect(addr).is_err(), "still listening");
    }

    #[test]
    fn bind_error_names_the_address() {
        let server = serve_page();
        let Err(err) = MetricsServer::spawn(server.local_addr(), Arc::new(|| Ok(String::new())))
        else {
            panic!("bound the same address twice");
        };
        let text = err.to_string();
        assert_eq!(
            text,
            format!("binding metrics listener {}", server.local_addr())
        );
        assert!(matches!(
            err,
            MetricsError::Bind { ref source, .. } if source.kind() == io::ErrorKind::AddrInUse
        ));
        server.shutdown();
    }

    #[test]
    fn wake_address_is_loopback_for_wildcards() {
        assert_eq!(
            wake_address("0.0.0.0:9477".parse().unwrap()),
            "127.0.0.1:9477".parse().unwrap()
        );
        assert_eq!(
            wake_address("[::]:9477".parse().unwrap()),
            "[::1]:9477".parse().unwrap()
        );
        assert_eq!(
            wake_address("192.0.2.1:9477".parse().unwrap()),
            "192.0.2.1:9477".parse().unwrap()
        );
    }
}
