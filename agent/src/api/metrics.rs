//! A small HTTP/1.1 listener for the metrics page.
//!
//! [`MetricsServer`] answers `GET /metrics` (and `HEAD`) with whatever its [`Handler`] returns;
//! the page itself is the components' sections, written with [`crate::exposition`]. Nothing
//! here reads kernel maps or locks daemon state. One request per connection, a bounded head,
//! deadlines on reading and writing, and a cap on connections served at once, so a slow or
//! hostile client cannot hold up a scrape.
use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

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
    let answer = HttpAnswer::text("503 Service Unavailable", "too many connections\n");
    let _ = stream.write_all(&answer.encode(false));
    let _ = stream.shutdown(Shutdown::Write);
}

/// An answer: status line, content type, optional extra header line, body.
struct HttpAnswer {
    status: &'static str,
    content_type: &'static str,
    extra_header: Option<&'static str>,
    body: String,
}

impl HttpAnswer {
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
fn route(method: &str, target: &str, handler: &Handler) -> HttpAnswer {
    if method != "GET" && method != "HEAD" {
        return HttpAnswer {
            extra_header: Some("Allow: GET, HEAD"),
            ..HttpAnswer::text("405 Method Not Allowed", "only GET and HEAD\n")
        };
    }
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    match path {
        "/metrics" => scrape(handler),
        "/" => HttpAnswer {
            content_type: "text/html; charset=utf-8",
            ..HttpAnswer::text("200 OK", INDEX)
        },
        _ => HttpAnswer::text("404 Not Found", "not found; the metrics are at /metrics\n"),
    }
}

fn scrape(handler: &Handler) -> HttpAnswer {
    // A panicking handler is a failed scrape, not a lost connection thread.
    match std::panic::catch_unwind(AssertUnwindSafe(|| handler())) {
        Ok(Ok(page)) => HttpAnswer {
            content_type: PAGE_TYPE,
            ..HttpAnswer::text("200 OK", page)
        },
        Ok(Err(reason)) => {
            log::warn!("metrics scrape failed: {reason}");
            HttpAnswer::text("500 Internal Server Error", format!("{reason}\n"))
        }
        Err(_) => {
            log::warn!("metrics scrape failed: the handler panicked");
            HttpAnswer::text(
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
                HttpAnswer::text("400 Bad Request", "bad request line\n"),
                false,
            ),
        },
        Head::TooLarge => (
            HttpAnswer::text(
                "431 Request Header Fields Too Large",
                "request head over 8 KiB\n",
            ),
            false,
        ),
        Head::Incomplete { received: true } => (
            HttpAnswer::text("408 Request Timeout", "incomplete request head\n"),
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

    /// What the test handlers serve.
    const PAGE: &str = "# HELP xdpguard_up Test page.\n# TYPE xdpguard_up gauge\nxdpguard_up 1\n";

    fn serve_page() -> MetricsServer {
        MetricsServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| Ok(PAGE.to_owned())),
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
        assert_eq!(body, PAGE);
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
