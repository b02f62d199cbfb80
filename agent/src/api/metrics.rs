//! A small HTTP/1.1 listener for the metrics page.
//!
//! [`MetricsServer`] answers `GET /metrics` (and `HEAD`) with whatever its [`Handler`] returns,
//! followed by the listener's own section (how its connections ended); the page itself is the
//! components' sections, written with [`crate::exposition`]. Nothing here reads kernel maps or
//! locks daemon state. Connections are driven by the shared [`listener`](super::listener)
//! engine: one request per connection, a request head of bounded size that must be complete
//! within a deadline from accept, many more connections held than pages rendered at once, and
//! idle or slow connections shed first, so a slow or hostile client cannot hold up a scrape.
use std::{
    net::{SocketAddr, TcpListener},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::Duration,
};

use super::listener::{self, Closing, Engine, Limits, ListenerStats, Protocol};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("binding metrics listener {listen}")]
    Bind {
        listen: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the metrics listener thread")]
    Thread(#[source] std::io::Error),
}

/// Renders the page, or says why it cannot (the reason goes out with a 500).
pub type Handler = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// After answering: how long, and how much, to read what the client still sends, so closing
/// does not reset the connection before the answer arrives.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 << 10;

/// The listener's own families on the page.
const NAMES: listener::metrics::Names = listener::metrics::Names {
    ended: "xdpguard_metrics_connections_total",
    ended_help: "Connections to the metrics listener, by how they ended: answered, slow_reader \
                 (answer not taken in time), timed_out (request not complete in time), \
                 too_large, shed (closed to serve a newer one), refused (all full), denied, \
                 abandoned (the client left).",
    open: "xdpguard_metrics_connections_open",
    open_help: "Connections to the metrics listener open now.",
};

const PAGE_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";
const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>xdpguard</title></head>\
<body><h1>xdpguard</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n";

/// Serves `GET /metrics` (and `HEAD`) from a background I/O thread and two renderers.
pub struct MetricsServer {
    local_addr: SocketAddr,
    engine: Engine,
}

impl MetricsServer {
    /// Bind `listen` and serve with the default [`Limits::METRICS`].
    ///
    /// # Errors
    /// When the address cannot be bound, or the threads not started.
    pub fn spawn(listen: SocketAddr, handler: Handler) -> Result<Self, MetricsError> {
        Self::spawn_with(listen, handler, Limits::METRICS)
    }

    /// Bind `listen` and serve within `limits`.
    ///
    /// # Errors
    /// When the address cannot be bound, or the threads not started.
    pub fn spawn_with(
        listen: SocketAddr,
        handler: Handler,
        limits: Limits,
    ) -> Result<Self, MetricsError> {
        let bind_error = |source| MetricsError::Bind { listen, source };
        let listener = TcpListener::bind(listen).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let stats = Arc::new(ListenerStats::default());
        let http = Arc::new(Http {
            handler,
            stats: Arc::clone(&stats),
            max_head: limits.max_request_bytes,
        });
        let engine = Engine::spawn("metrics", listener, http, limits, stats)
            .map_err(MetricsError::Thread)?;
        Ok(Self { local_addr, engine })
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How the listener's connections ended so far.
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.engine.stats()
    }

    /// Stop accepting, close the connections being served, and wait for all threads.
    pub fn shutdown(mut self) {
        self.engine.stop();
    }
}

/// HTTP/1.1 as the engine's [`Protocol`]: one request head, one answer.
struct Http {
    handler: Handler,
    stats: Arc<ListenerStats>,
    max_head: usize,
}

impl Protocol for Http {
    fn request_end(&self, received: &[u8], scanned: usize) -> Option<usize> {
        // The blank line may straddle two reads.
        let from = scanned.saturating_sub(3);
        head_end(&received[from..]).map(|end| from + end)
    }

    fn answer(&self, request: &[u8]) -> Vec<u8> {
        let (answer, head_only) = match request_line(request) {
            Some((method, target)) => (route(method, target, self), method == "HEAD"),
            None => (
                HttpAnswer::text("400 Bad Request", "bad request line\n"),
                false,
            ),
        };
        answer.encode(head_only)
    }

    fn refusal(&self, why: Closing) -> Option<Vec<u8>> {
        let answer = match why {
            // Nothing asked, nothing to answer.
            Closing::TimedOut { received: false } | Closing::Denied => return None,
            Closing::TimedOut { received: true } | Closing::Ended => {
                HttpAnswer::text("408 Request Timeout", "incomplete request head\n")
            }
            Closing::TooLarge => HttpAnswer::text(
                "431 Request Header Fields Too Large",
                format!("request head over {} bytes\n", self.max_head),
            ),
            Closing::Shed => HttpAnswer::text(
                "503 Service Unavailable",
                "too many connections: this one had sent no complete request\n",
            ),
            Closing::Refused => {
                HttpAnswer::text("503 Service Unavailable", "too many connections\n")
            }
            Closing::Failed => {
                HttpAnswer::text("500 Internal Server Error", "the metrics handler failed\n")
            }
        };
        Some(answer.encode(false))
    }

    fn linger(&self) -> Option<(Duration, usize)> {
        Some((LINGER, LINGER_BYTES))
    }
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
fn route(method: &str, target: &str, http: &Http) -> HttpAnswer {
    if method != "GET" && method != "HEAD" {
        return HttpAnswer {
            extra_header: Some("Allow: GET, HEAD"),
            ..HttpAnswer::text("405 Method Not Allowed", "only GET and HEAD\n")
        };
    }
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    match path {
        "/metrics" => scrape(http),
        "/" => HttpAnswer {
            content_type: "text/html; charset=utf-8",
            ..HttpAnswer::text("200 OK", INDEX)
        },
        _ => HttpAnswer::text("404 Not Found", "not found; the metrics are at /metrics\n"),
    }
}

fn scrape(http: &Http) -> HttpAnswer {
    // A panicking handler is a failed scrape, not a lost worker.
    match std::panic::catch_unwind(AssertUnwindSafe(|| (http.handler)())) {
        Ok(Ok(page)) => HttpAnswer {
            content_type: PAGE_TYPE,
            ..HttpAnswer::text(
                "200 OK",
                page + &listener::metrics::render(&NAMES, &http.stats),
            )
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

#[cfg(test)]
mod tests {
    use std::{
        io::{self, Read as _, Write as _},
        net::TcpStream,
        sync::mpsc,
        thread,
        time::Instant,
    };

    use super::*;
    use crate::api::listener::Outcome;

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
        // The handler's page, then the listener's own section.
        let own = body.strip_prefix(PAGE).unwrap();
        assert!(
            own.contains("\nxdpguard_metrics_connections_total{outcome=\"timed_out\"} 0\n"),
            "{own}"
        );
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
    fn http_handler_panic_is_500_and_frees_the_connection() {
        let server = MetricsServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| panic!("test panic in the metrics handler")),
        )
        .unwrap();
        for _ in 0..10 {
            let answer = get(server.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
            assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
        }
        let stats = server.stats();
        eventually("every connection closed", || stats.open() == 0);
        assert_eq!(stats.ended(Outcome::Answered), 10);
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

    /// Limits small enough to reach in a test.
    fn small(max_connections: usize, workers: usize) -> Limits {
        Limits {
            request_timeout: Duration::from_secs(2),
            max_connections,
            workers,
            ..Limits::METRICS
        }
    }

    /// Past the cap, the oldest connection without a complete request is shed for the new
    /// one: 50 connections trickling a head never take a real scrape's place.
    #[test]
    fn http_full_of_incomplete_requests_sheds_the_oldest_for_a_scrape() {
        let server = MetricsServer::spawn_with(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| Ok(PAGE.to_owned())),
            small(8, 1),
        )
        .unwrap();
        let addr = server.local_addr();
        let mut trickling: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut stream = connect(addr);
                stream.write_all(b"GET /metrics HTTP/1.1\r\nX: ").unwrap();
                stream
            })
            .collect();
        for _ in 0..20 {
            let answer = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        }
        let stats = server.stats();
        assert!(
            stats.ended(Outcome::Shed) >= 42,
            "{}",
            stats.ended(Outcome::Shed)
        );
        assert_eq!(stats.ended(Outcome::Refused), 0);
        // The first were shed, with a word why.
        let mut answer = String::new();
        let _: usize = trickling[0].read_to_string(&mut answer).unwrap_or(0);
        assert!(
            answer.starts_with("HTTP/1.1 503 ") && answer.contains("no complete request"),
            "{answer}"
        );
        // The newest ones still trickling reach the deadline.
        let last = trickling.last_mut().unwrap();
        let mut answer = String::new();
        let _: usize = last.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        server.shutdown();
    }

    /// A handler that waits until told, and says when it was called.
    fn gated() -> (Handler, mpsc::Receiver<()>, mpsc::SyncSender<()>) {
        let (called, calls) = mpsc::sync_channel::<()>(16);
        let (release, released) = mpsc::sync_channel::<()>(16);
        let released = std::sync::Mutex::new(released);
        let handler: Handler = Arc::new(move || {
            let _ = called.send(());
            let _ = released.lock().unwrap().recv();
            Ok(PAGE.to_owned())
        });
        (handler, calls, release)
    }

    /// Only when every place holds a complete request is a newcomer refused, at once.
    #[test]
    fn http_full_of_complete_requests_refuses_with_503() {
        let (handler, calls, release) = gated();
        let server =
            MetricsServer::spawn_with("127.0.0.1:0".parse().unwrap(), handler, small(2, 1))
                .unwrap();
        let addr = server.local_addr();
        let ask = || {
            let mut stream = connect(addr);
            stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            stream
        };
        let mut first = ask();
        calls.recv().unwrap();
        let mut second = ask();
        // The second is complete and queued (one worker): wait until the loop has read it.
        thread::sleep(Duration::from_millis(200));
        let mut refused = String::new();
        let _: usize = ask().read_to_string(&mut refused).unwrap();
        assert!(
            refused.starts_with("HTTP/1.1 503 ") && refused.ends_with("too many connections\n"),
            "{refused}"
        );
        release.send(()).unwrap();
        release.send(()).unwrap();
        for stream in [&mut first, &mut second] {
            let mut answer = String::new();
            let _: usize = stream.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        }
        assert_eq!(server.stats().ended(Outcome::Refused), 1);
        server.shutdown();
    }

    /// A page that takes long to render holds one worker; the I/O loop goes on answering
    /// (the index from the other worker) and enforcing deadlines.
    #[test]
    fn http_slow_render_does_not_stall_other_connections() {
        let (handler, calls, release) = gated();
        let server =
            MetricsServer::spawn_with("127.0.0.1:0".parse().unwrap(), handler, small(64, 2))
                .unwrap();
        let addr = server.local_addr();
        let mut slow = connect(addr);
        slow.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        calls.recv().unwrap();
        let asked = Instant::now();
        let index = get(addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(index.starts_with("HTTP/1.1 200 OK"), "{index}");
        let mut half = connect(addr);
        half.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let mut answer = String::new();
        let _: usize = half.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        // The 2 s deadline, with a wide margin; the slow render still blocks.
        assert!(asked.elapsed() < Duration::from_secs(10));
        release.send(()).unwrap();
        let mut answer = String::new();
        let _: usize = slow.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        server.shutdown();
    }

    #[test]
    fn http_client_that_stops_mid_head_gets_408_at_the_deadline() {
        let server = MetricsServer::spawn_with(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| Ok(PAGE.to_owned())),
            small(8, 1),
        )
        .unwrap();
        let mut slow = connect(server.local_addr());
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
        let mut answer = String::new();
        let _: usize = slow.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        // Silent from the start: closed without a word.
        let mut silent = connect(server.local_addr());
        let mut answer = Vec::new();
        let _: usize = silent.read_to_end(&mut answer).unwrap();
        assert!(answer.is_empty());
        let stats = server.stats();
        eventually("both counted", || stats.ended(Outcome::TimedOut) == 2);
        server.shutdown();
    }

    /// A client that trickles its head a byte at a time is closed at the deadline from
    /// accept, however steadily it sends.
    #[test]
    fn http_trickled_head_is_cut_at_the_deadline_from_accept() {
        let server = MetricsServer::spawn_with(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| Ok(PAGE.to_owned())),
            small(8, 1),
        )
        .unwrap();
        let mut stream = connect(server.local_addr());
        let opened = Instant::now();
        let mut closed = false;
        for byte in b"GET /metrics HTTP/1.1\r\n".iter().cycle().take(200) {
            if stream.write_all(&[*byte]).is_err() {
                closed = true;
                break;
            }
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0_u8; 64];
            match stream.read(&mut buf) {
                Ok(_) => {
                    closed = true;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(closed, "still open after {:?}", opened.elapsed());
        assert!(opened.elapsed() < Duration::from_secs(10));
        server.shutdown();
    }

    #[test]
    fn shutdown_closes_connections_joins_and_stops_listening() {
        let server = serve_page();
        let addr = server.local_addr();
        let mut silent = connect(addr);
        let stats = server.stats();
        eventually("the silent client is held", || stats.open() == 1);
        server.shutdown();
        assert_eq!(stats.open(), 0);
        // The server closed the silent client rather than waiting out its deadline.
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
}
