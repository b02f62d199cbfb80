//! Prometheus text exposition (format 0.0.4) and a small HTTP listener for it.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// One interface × family × verdict counter pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficSample {
    pub interface: String,
    pub family: &'static str,
    pub verdict: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSample {
    pub list: &'static str,
    pub family: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionSample {
    pub source: String,
    pub action: &'static str,
    pub count: u64,
}

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

/// `value` escaped for a label: backslash, double quote and newline.
fn escape(value: &str) -> String {
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

/// A metric family: name, help, type, and its samples (labels → value), sorted.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: BTreeMap<Vec<(&'static str, String)>, u64>,
}

impl Family {
    const fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind,
            samples: BTreeMap::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: u64) {
        *self.samples.entry(labels).or_default() += value;
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (key, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{key}=\"{}\"", escape(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
    }
}

/// The metrics page.
pub fn render(snapshot: &Snapshot) -> String {
    let mut packets = Family::new(
        "xdpguard_packets_total",
        "counter",
        "Frames seen by the XDP program, by interface, address family and verdict.",
    );
    let mut bytes = Family::new(
        "xdpguard_bytes_total",
        "counter",
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
    let mut entries = Family::new("xdpguard_entries", "gauge", "Entries in each kernel list.");
    let mut capacity = Family::new(
        "xdpguard_map_capacity",
        "gauge",
        "Maximum entries of each kernel list.",
    );
    for sample in &snapshot.entries {
        let labels = vec![
            ("family", sample.family.to_owned()),
            ("list", sample.list.to_owned()),
        ];
        entries.add(labels.clone(), sample.entries);
        capacity.add(labels, sample.capacity);
    }
    let mut decisions = Family::new(
        "xdpguard_decisions_total",
        "counter",
        "Decisions applied since the daemon started, by source and action.",
    );
    for sample in &snapshot.decisions {
        decisions.add(
            vec![
                ("action", sample.action.to_owned()),
                ("source", sample.source.clone()),
            ],
            sample.count,
        );
    }
    let mut top_packets = Family::new(
        "xdpguard_top_blocked_packets_total",
        "counter",
        "Packets dropped by the block entries with the most drops.",
    );
    let mut top_bytes = Family::new(
        "xdpguard_top_blocked_bytes_total",
        "counter",
        "Bytes dropped by the block entries with the most drops.",
    );
    for sample in &snapshot.top_blocked {
        top_packets.add(vec![("prefix", sample.prefix.clone())], sample.packets);
        top_bytes.add(vec![("prefix", sample.prefix.clone())], sample.bytes);
    }
    let mut build = Family::new(
        "xdpguard_build_info",
        "gauge",
        "Always 1; labels name the build.",
    );
    build.add(vec![("version", snapshot.version.to_owned())], 1);
    let mut full = Family::new(
        "xdpguard_list_full_errors_total",
        "counter",
        "Inserts refused because the kernel list was full.",
    );
    full.add(vec![], snapshot.list_full_errors);
    let mut unknown = Family::new(
        "xdpguard_unknown_entries",
        "gauge",
        "Kernel block entries no decision accounts for, at the last reconcile.",
    );
    unknown.add(vec![], snapshot.unknown_entries);
    let mut repaired = Family::new(
        "xdpguard_reconcile_repaired_total",
        "counter",
        "Entries missing from the kernel that reconcile put back.",
    );
    repaired.add(vec![], snapshot.reconcile_repaired);
    let mut out = String::new();
    for family in [
        &build,
        &bytes,
        &decisions,
        &entries,
        &full,
        &capacity,
        &packets,
        &repaired,
        &top_bytes,
        &top_packets,
        &unknown,
    ] {
        family.write(&mut out);
    }
    out
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

/// The log scoring families.
pub fn render_logs(snapshot: &LogSnapshot) -> String {
    let mut lines = Family::new(
        "xdpguard_log_lines_total",
        "counter",
        "Log lines read, by input.",
    );
    for (input, count) in &snapshot.lines {
        lines.add(vec![("input", input.clone())], *count);
    }
    let mut truncated = Family::new(
        "xdpguard_log_lines_truncated_total",
        "counter",
        "Log lines cut at the length limit, by input.",
    );
    for (input, count) in &snapshot.truncated {
        truncated.add(vec![("input", input.clone())], *count);
    }
    let mut matches = Family::new(
        "xdpguard_log_matches_total",
        "counter",
        "Log lines a rule matched, by ruleset and rule.",
    );
    for (ruleset, rule, count) in &snapshot.matches {
        matches.add(
            vec![("rule", rule.clone()), ("ruleset", ruleset.clone())],
            *count,
        );
    }
    let mut scored = Family::new(
        "xdpguard_scored_addresses",
        "gauge",
        "Source addresses with a log score in the window.",
    );
    scored.add(vec![], snapshot.scored_addresses);
    let mut out = String::new();
    for family in [&lines, &truncated, &matches, &scored] {
        family.write(&mut out);
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("binding the metrics listener {listen}")]
    Bind {
        listen: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Renders the page, or says why it cannot.
pub type Handler = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

const MAX_HEAD_BYTES: u64 = 8 << 10;
const MAX_CONNECTIONS: usize = 8;

/// Serves `GET /metrics` on a background thread.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Bind `listen` and serve.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn spawn(listen: SocketAddr, handler: Handler) -> Result<Self, MetricsError> {
        let bind_error = |source| MetricsError::Bind { listen, source };
        let listener = TcpListener::bind(listen).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("metrics".into())
                .spawn(move || accept_loop(&listener, &stop, &handler))
                .map_err(bind_error)?
        };
        Ok(Self {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting and wait for the accept loop.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_and_join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, handler: &Handler) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            write_response(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                "busy\n",
            );
            continue;
        }
        let _: usize = active.fetch_add(1, Ordering::SeqCst);
        let active = Arc::clone(&active);
        let handler = Arc::clone(handler);
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                serve(stream, &handler);
                let _: usize = active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            log::warn!("metrics: could not start a connection thread");
        }
    }
}

fn write_response(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

fn serve(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader.take(MAX_HEAD_BYTES));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return;
    }
    // Read the rest of the head, within the limit.
    let mut complete = false;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => {
                complete = true;
                break;
            }
            Ok(_) => {}
        }
    }
    if !complete {
        write_response(
            &mut stream,
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large or incomplete\n",
        );
        // Closing with unread input would reset the connection and lose the answer: finish
        // sending, then drain a bounded amount.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = io::copy(&mut (&stream).take(1 << 20), &mut io::sink());
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        write_response(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        );
        return;
    }
    match path {
        "/metrics" => match handler() {
            Ok(body) => write_response(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            ),
            Err(err) => write_response(
                &mut stream,
                "500 Internal Server Error",
                "text/plain",
                &format!("{err}\n"),
            ),
        },
        "/" => write_response(
            &mut stream,
            "200 OK",
            "text/html; charset=utf-8",
            "<html><body><h1>xdpguard</h1><a href=\"/metrics\">metrics</a></body></html>\n",
        ),
        _ => write_response(&mut stream, "404 Not Found", "text/plain", "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            version: "1.2.3",
            traffic: vec![TrafficSample {
                interface: "eth1".into(),
                family: "ipv4",
                verdict: "drop",
                packets: 7,
                bytes: 700,
            }],
            entries: vec![ListSample {
                list: "block_host",
                family: "ipv4",
                entries: 3,
                capacity: 10,
            }],
            decisions: vec![DecisionSample {
                source: "manual".into(),
                action: "block",
                count: 3,
            }],
            top_blocked: vec![TopBlocked {
                prefix: "a\"b\\c\nd".into(),
                packets: 5,
                bytes: 50,
            }],
            list_full_errors: 2,
            unknown_entries: 0,
            reconcile_repaired: 1,
        }
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn render_escapes_label_values() {
        let text = render(&snapshot());
        assert!(
            text.contains(r#"xdpguard_top_blocked_packets_total{prefix="a\"b\\c\nd"} 5"#),
            "{text}"
        );
    }

    #[test]
    fn every_family_has_help_and_type_once_and_counters_end_in_total() {
        let text = render(&snapshot());
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
        assert_eq!(text.matches("# HELP").count(), count);
        for line in types {
            let name = line.split(' ').nth(2).unwrap();
            assert_eq!(
                line.ends_with("counter"),
                name.ends_with("_total"),
                "{line}"
            );
        }
        assert!(text.contains(
            r#"xdpguard_packets_total{interface="eth1",family="ipv4",verdict="drop"} 7"#
        ));
        assert!(text.contains(r#"xdpguard_map_capacity{family="ipv4",list="block_host"} 10"#));
        assert!(text.contains(r#"xdpguard_build_info{version="1.2.3"} 1"#));
        assert!(
            text.contains("xdpguard_list_full_errors_total 2\n"),
            "{text}"
        );
        // Same input, same bytes.
        assert_eq!(text, render(&snapshot()));
    }

    #[test]
    fn http_serves_metrics_and_refuses_the_rest() {
        let page = render(&snapshot());
        let server = MetricsServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(move || Ok(page.clone())),
        )
        .unwrap();
        let addr = server.local_addr();
        // A silent client must not block the scrapes behind it.
        let _idle = TcpStream::connect(addr).unwrap();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.contains("xdpguard_build_info"));
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        assert!(get(addr, &huge).starts_with("HTTP/1.1 431"));
        server.shutdown();
    }

    #[test]
    fn handler_failure_is_a_500_with_the_reason() {
        let server = MetricsServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| Err("maps unreadable".into())),
        )
        .unwrap();
        let answer = get(server.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            answer.starts_with("HTTP/1.1 500") && answer.contains("maps unreadable"),
            "{answer}"
        );
        server.shutdown();
    }
}
