//! The daemon's side of the control socket: accepts connections, checks the peer and the
//! protocol version, and maps each request onto the owner's [`Handle`]. Connections are
//! driven by the shared [`listener`](crate::api::listener) engine: a request line of bounded
//! size that must be complete within a deadline from accept, idle connections shed before
//! anyone with a complete request is refused, and a "too many connections" answer when the
//! socket really is full.
use std::{
    io,
    os::{
        fd::RawFd,
        unix::{
            fs::PermissionsExt,
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{
    client::ControlError,
    proto::{
        self, Answer, CounterStatus, InterfaceStatus, ListEntry, ListStatus, OriginEntry,
        OriginsStatus, PROTOCOL_VERSION, RefusedPrefix, Request, Status, Top,
    },
};
use crate::{
    api::listener::{Closing, Engine, Limits, ListenerStats, Protocol},
    enforce::decision::Source,
    enforce::owner::{
        AllowOrder, Applied, BlockOrder, CommandError, Expiry, Handle, ListFilter, Refusal, Removed,
    },
    origins::{OriginTable, Origins},
    prefix::Prefix,
};

/// What answers requests: [`answer`] in the daemon, a closure in tests.
pub type Handler = Arc<dyn Fn(Request) -> Answer + Send + Sync>;

/// Parse the request's prefixes; those that do not parse are refused with the reason.
fn parse_prefixes(texts: Vec<String>, refused: &mut Vec<RefusedPrefix>) -> Vec<Prefix> {
    texts
        .into_iter()
        .filter_map(|text| match Prefix::parse(&text) {
            Ok((prefix, _)) => Some(prefix),
            Err(err) => {
                refused.push(RefusedPrefix {
                    prefix: text,
                    reason: err.to_string(),
                });
                None
            }
        })
        .collect()
}

fn refused(refusals: Vec<(Prefix, Refusal)>) -> impl Iterator<Item = RefusedPrefix> {
    refusals.into_iter().map(|(prefix, refusal)| RefusedPrefix {
        prefix: prefix.to_string(),
        reason: refusal.to_string(),
    })
}

fn applied(result: Result<Applied, CommandError>, mut refused_early: Vec<RefusedPrefix>) -> Answer {
    match result {
        Ok(done) => {
            refused_early.extend(refused(done.refused));
            Answer::Applied {
                applied: done.applied,
                refused: refused_early,
            }
        }
        Err(err) => Answer::Error {
            message: err.to_string(),
        },
    }
}

fn removed(result: Result<Removed, CommandError>, mut refused_early: Vec<RefusedPrefix>) -> Answer {
    match result {
        Ok(done) => {
            refused_early.extend(refused(done.refused));
            Answer::Removed {
                removed: done.removed,
                missing: done.missing.iter().map(ToString::to_string).collect(),
                refused: refused_early,
            }
        }
        Err(err) => Answer::Error {
            message: err.to_string(),
        },
    }
}

fn status(status: &crate::enforce::owner::Status) -> Status {
    let mut counters = Vec::new();
    for (interface, stats) in &status.counters {
        for (stat, value) in stats.iter() {
            counters.push(CounterStatus {
                interface: interface.clone(),
                counter: stat.name().to_owned(),
                packets: value.packets,
                bytes: value.bytes,
            });
        }
    }
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        dry_run: status.dry_run,
        interfaces: status
            .interfaces
            .iter()
            .map(|(name, attachment)| InterfaceStatus {
                name: name.clone(),
                ifindex: attachment.ifindex,
                mode: attachment.mode.to_string(),
            })
            .collect(),
        lists: status
            .lists
            .iter()
            .map(|list| ListStatus {
                list: list.list.to_string(),
                entries: list.entries,
                capacity: list.capacity,
            })
            .collect(),
        counters,
        decisions: status.decisions,
        unknown_entries: status.unknown_entries,
        full_list_errors: status.full_list_errors,
        rulesets: Vec::new(),
        peers: Vec::new(),
        origins: OriginsStatus::default(),
    }
}

/// Carry out one request through the owner's front door; `published` reads what the volume
/// engine and log scoring last published (no round trip to them).
pub fn answer(handle: &Handle, published: &Published, request: Request) -> Answer {
    let mut refused_early = Vec::new();
    match request {
        Request::Block {
            prefixes,
            duration_secs,
            reason,
            source,
            force,
        } => {
            let prefixes = parse_prefixes(prefixes, &mut refused_early);
            let order = BlockOrder {
                prefixes,
                source: source.map_or(Source::Manual, |text| Source::parse(&text)),
                reason: reason.unwrap_or_default(),
                expires: duration_secs.map_or(Expiry::Default, |secs| {
                    Expiry::After(Duration::from_secs(secs))
                }),
                force,
                evidence: Vec::new(),
                replace_own: false,
            };
            applied(handle.block(order).wait(), refused_early)
        }
        Request::Allow { prefixes, reason } => {
            let prefixes = parse_prefixes(prefixes, &mut refused_early);
            let order = AllowOrder {
                prefixes,
                source: Source::Manual,
                reason: reason.unwrap_or_default(),
            };
            applied(handle.allow(order).wait(), refused_early)
        }
        Request::Unblock { prefixes } => {
            let prefixes = parse_prefixes(prefixes, &mut refused_early);
            removed(handle.unblock(prefixes).wait(), refused_early)
        }
        Request::Unallow { prefixes } => {
            let prefixes = parse_prefixes(prefixes, &mut refused_early);
            removed(handle.unallow(prefixes).wait(), refused_early)
        }
        Request::List { source, covering } => {
            let covering = match covering.map(|text| text.trim().parse::<std::net::IpAddr>()) {
                None => None,
                Some(Ok(address)) => Some(address),
                Some(Err(err)) => {
                    return Answer::Error {
                        message: format!("covering: not an IP address: {err}"),
                    };
                }
            };
            let filter = ListFilter {
                kind: None,
                source: source.map(|text| Source::parse(&text)),
                source_kind: None,
                covering,
            };
            let table = published.origins.table();
            match handle.list(filter).wait() {
                Ok(entries) => Answer::List {
                    entries: entries
                        .into_iter()
                        .map(|entry| {
                            let decision = entry.decision;
                            let (origin, announced) = origin_of(&table, decision.prefix);
                            ListEntry {
                                kind: decision.kind.name().to_owned(),
                                prefix: decision.prefix.to_string(),
                                source: decision.origin.source.to_string(),
                                reason: decision.origin.reason.to_string(),
                                created_unix: decision.origin.created_unix,
                                expires_unix: decision.origin.expires_unix,
                                packets: entry.packets,
                                bytes: entry.bytes,
                                evidence: decision.origin.evidence.clone(),
                                origin,
                                announced,
                            }
                        })
                        .collect(),
                },
                Err(err) => Answer::Error {
                    message: err.to_string(),
                },
            }
        }
        Request::Status => match handle.status().wait() {
            Ok(owner_status) => Answer::Status(Status {
                rulesets: (published.rulesets)(),
                peers: (published.peers)(),
                origins: origins_status(published),
                ..status(&owner_status)
            }),
            Err(err) => Answer::Error {
                message: err.to_string(),
            },
        },
        Request::Top => {
            let mut top = (published.top)();
            let table = published.origins.table();
            for row in &mut top.top {
                if let Ok((prefix, _)) = Prefix::parse(&row.prefix) {
                    (row.origin, row.announced) = origin_of(&table, prefix);
                }
            }
            Answer::Top(Box::new(top))
        }
        Request::BlockAsn {
            asn,
            duration_secs,
            reason,
            force,
        } => {
            let table = published.origins.table();
            let prefixes: Vec<Prefix> = table.announced_by(asn).collect();
            if prefixes.is_empty() {
                return Answer::Error {
                    message: no_prefixes_of(asn, &table, published),
                };
            }
            let order = BlockOrder {
                prefixes,
                source: Source::Asn(asn),
                reason: reason.unwrap_or_else(|| format!("announced by AS{asn}")),
                expires: duration_secs.map_or(Expiry::Default, |secs| {
                    Expiry::After(Duration::from_secs(secs))
                }),
                force,
                evidence: Vec::new(),
                replace_own: false,
            };
            applied(handle.block(order).wait(), refused_early)
        }
        Request::UnblockAsn { asn } => {
            let filter = ListFilter {
                kind: Some(crate::enforce::decision::DecisionKind::Block),
                source: Some(Source::Asn(asn)),
                source_kind: None,
                covering: None,
            };
            match handle.list(filter).wait() {
                Ok(entries) if entries.is_empty() => Answer::Error {
                    message: format!(
                        "nothing is blocked for AS{asn} (block --asn {asn} makes such blocks)"
                    ),
                },
                Ok(entries) => {
                    let prefixes = entries.iter().map(|entry| entry.decision.prefix).collect();
                    removed(handle.unblock(prefixes).wait(), refused_early)
                }
                Err(err) => Answer::Error {
                    message: err.to_string(),
                },
            }
        }
        Request::Origins { addresses } => {
            let table = published.origins.table();
            let entries = addresses
                .iter()
                .map(|text| {
                    let found = text
                        .trim()
                        .parse::<std::net::IpAddr>()
                        .ok()
                        .and_then(|address| table.lookup(address));
                    OriginEntry {
                        address: text.clone(),
                        origin: found.map(|a| a.origin.to_string()),
                        announced: found.map(|a| a.prefix.to_string()),
                        peers: found.map_or(0, |a| a.peers),
                        as_set: found.is_some_and(|a| a.origin.is_set()),
                        multiple_origins: found.is_some_and(|a| a.multiple_origins),
                    }
                })
                .collect();
            Answer::Origins {
                entries,
                table: origins_status(published),
            }
        }
    }
}

/// Origin AS and announced prefix of `prefix`'s network, as text.
fn origin_of(table: &OriginTable, prefix: Prefix) -> (Option<String>, Option<String>) {
    table.lookup(prefix.addr()).map_or((None, None), |found| {
        (
            Some(found.origin.to_string()),
            Some(found.prefix.to_string()),
        )
    })
}

fn origins_status(published: &Published) -> OriginsStatus {
    let status = published.origins.status();
    OriginsStatus {
        configured: published.origins.is_configured(),
        generation: status.generation,
        loaded_unix: status
            .loaded_at
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        prefixes_v4: status.prefixes_v4 as u64,
        prefixes_v6: status.prefixes_v6 as u64,
        heap_bytes: status.heap_bytes as u64,
        last_error: status.last_error.map(|(_, message)| message),
    }
}

/// Why `block --asn` found nothing to block.
fn no_prefixes_of(asn: u32, table: &OriginTable, published: &Published) -> String {
    if !published.origins.is_configured() {
        return "no origins table: name RIS whois dumps in [origins] files of the configuration"
            .to_owned();
    }
    let (v4, v6) = table.len();
    if v4 + v6 == 0 {
        return "the origins table is not loaded yet (or failed to load: see status)".to_owned();
    }
    format!(
        "AS{asn} is the sole origin of no prefix in the loaded origins table ({v4} IPv4 and {v6} IPv6 prefixes)"
    )
}

/// What other threads publish for the control socket to read without waiting on them: the
/// volume engine's last interval, log scoring's per-ruleset counts.
pub struct Published {
    pub top: Box<dyn Fn() -> Top + Send + Sync>,
    pub rulesets: Box<dyn Fn() -> Vec<proto::RulesetStatus> + Send + Sync>,
    pub peers: Box<dyn Fn() -> Vec<proto::PeerStatus> + Send + Sync>,
    /// The origins table in use (empty without `[origins]`).
    pub origins: Origins,
}

/// Accepts connections and hands each request to `handler`.
pub struct ControlServer {
    path: PathBuf,
    engine: Option<Engine>,
}

impl ControlServer {
    /// Bind `path` (mode 0600, parent created 0700) and serve with [`Limits::CONTROL`].
    ///
    /// # Errors
    /// When another daemon answers on `path`, or binding fails.
    pub fn spawn(path: &Path, handler: Handler) -> Result<Self, ControlError> {
        Self::spawn_with(path, handler, Limits::CONTROL)
    }

    /// Bind `path` (mode 0600, parent created 0700) and serve within `limits`.
    ///
    /// # Errors
    /// When another daemon answers on `path`, or binding fails.
    pub fn spawn_with(path: &Path, handler: Handler, limits: Limits) -> Result<Self, ControlError> {
        let io_err = |source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).map_err(io_err)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err)?;
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another xdpguard daemon answers there",
            )));
        }
        // A socket file left by a daemon that died.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        let lines = Arc::new(Lines { handler, limits });
        let engine = Engine::spawn(
            "control",
            listener,
            lines,
            limits,
            Arc::new(ListenerStats::default()),
        )
        .map_err(io_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            engine: Some(engine),
        })
    }

    /// How the socket's connections ended so far (for [`super::metrics::render`]).
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.engine
            .as_ref()
            .map_or_else(Arc::default, Engine::stats)
    }

    /// Stop accepting, close the connections, wait for the threads, remove the socket file.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(mut engine) = self.engine.take() {
            engine.stop();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The control protocol as the engine's [`Protocol`]: one JSON line in, one out.
struct Lines {
    handler: Handler,
    limits: Limits,
}

fn error_line(message: String) -> Vec<u8> {
    // An error answer always serializes; an empty line would read as a closed connection.
    proto::encode(&Answer::Error { message }).unwrap_or_default()
}

impl Protocol for Lines {
    fn request_end(&self, received: &[u8], scanned: usize) -> Option<usize> {
        received[scanned..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map(|at| scanned + at + 1)
    }

    fn answer(&self, line: &[u8]) -> Vec<u8> {
        let answer = answer_line(line, &*self.handler);
        proto::encode(&answer).unwrap_or_else(|err| {
            error_line(format!("the daemon could not encode its answer: {err}"))
        })
    }

    fn refusal(&self, why: Closing) -> Option<Vec<u8>> {
        // Debug of a Duration reads as an operator writes it: 5s, 1.5s, 500ms.
        let timeout = format!("{:?}", self.limits.request_timeout);
        let message = match why {
            Closing::TimedOut { received: false } => {
                format!("no request within {timeout} of connecting; closing")
            }
            Closing::TimedOut { received: true } => {
                format!("request incomplete {timeout} after connecting (no newline); closing")
            }
            Closing::Ended => "request incomplete: the connection ended before its newline".into(),
            Closing::TooLarge => format!(
                "request too large: over {} bytes; nothing of it was applied",
                self.limits.max_request_bytes
            ),
            Closing::Shed => "too many connections: this one was closed to serve another \
                              (it had sent no complete request)"
                .into(),
            Closing::Refused => format!(
                "too many connections to the control socket ({} requests in progress); \
                 try again",
                self.limits.max_connections
            ),
            Closing::Denied => "permission denied: only root may control xdpguard".into(),
            Closing::Failed => "the daemon failed while answering this request".into(),
        };
        Some(error_line(message))
    }

    fn admit(&self, peer: RawFd) -> bool {
        // SAFETY: geteuid has no preconditions.
        let own_uid = unsafe { libc::geteuid() };
        peer_uid(peer).is_some_and(|uid| uid == 0 || uid == own_uid)
    }
}

fn peer_uid(fd: RawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = libc::socklen_t::try_from(size_of::<libc::ucred>()).ok()?;
    // SAFETY: valid fd, out pointer and length for SO_PEERCRED.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// The answer to one complete request line.
fn answer_line(line: &[u8], handler: &(dyn Fn(Request) -> Answer + Send + Sync)) -> Answer {
    match proto::decode::<Request>(line) {
        Err(err) => Answer::Error {
            message: format!("bad request: {err}"),
        },
        // A peer of another version is told so, even when its request happens to parse;
        // a line naming no version that is no request of version 1 either is just bad.
        Ok(decoded)
            if decoded.protocol != u64::from(PROTOCOL_VERSION)
                && (decoded.protocol != 1 || decoded.message.is_ok()) =>
        {
            Answer::Error {
                message: proto::mismatch(u64::from(PROTOCOL_VERSION), decoded.protocol),
            }
        }
        Ok(decoded) => match decoded.message {
            Ok(request) => handler(request),
            Err(err) => Answer::Error {
                message: format!("bad request: {err}"),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Read as _, Write as _},
        sync::{Mutex, mpsc},
        thread,
        time::Instant,
    };

    use super::*;
    use crate::api::{control::call, listener::Outcome};

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xdpguard-control-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn small(max_connections: usize, workers: usize) -> Limits {
        Limits {
            request_timeout: Duration::from_secs(2),
            max_connections,
            workers,
            ..Limits::CONTROL
        }
    }

    /// Poll `condition` for up to 20 s: connections are counted just after their answer.
    fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "never: {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn error_message(answer: Answer) -> String {
        match answer {
            Answer::Error { message } => message,
            other => panic!("not an error: {other:?}"),
        }
    }

    /// Read one answer line from `stream`.
    fn read_answer(stream: &UnixStream) -> Answer {
        let mut line = String::new();
        let _: usize = BufReader::new(stream).read_line(&mut line).unwrap();
        proto::decode(line.as_bytes()).unwrap().message.unwrap()
    }

    /// More idle clients than places: each new connection sheds the oldest idle one, which is
    /// told why; the CLI is served every time.
    #[test]
    fn idle_connections_are_shed_for_new_ones() {
        let dir = scratch("shed");
        let path = dir.join("control.sock");
        let server = ControlServer::spawn_with(
            &path,
            Arc::new(|_| Answer::Status(dummy_status())),
            small(4, 1),
        )
        .unwrap();
        let idle: Vec<UnixStream> = (0..16)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        for _ in 0..5 {
            assert!(matches!(
                call(&path, &Request::Status).unwrap(),
                Answer::Status(_)
            ));
        }
        let message = error_message(read_answer(&idle[0]));
        assert!(
            message.contains("too many connections: this one was closed"),
            "{message}"
        );
        let stats = server.stats();
        assert!(
            stats.ended(Outcome::Shed) >= 12,
            "{}",
            stats.ended(Outcome::Shed)
        );
        eventually("5 answered", || stats.ended(Outcome::Answered) == 5);
        assert_eq!(stats.ended(Outcome::Refused), 0);
        // The newest idle ones reach the deadline, and hear so.
        let message = error_message(read_answer(idle.last().unwrap()));
        assert!(message.contains("no request within 2s"), "{message}");
        server.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every place held by a request in progress: a newcomer hears "too many connections" at
    /// once (the CLI prints it), and the requests in progress are answered.
    #[test]
    fn full_of_requests_in_progress_answers_too_many_connections() {
        let dir = scratch("full");
        let path = dir.join("control.sock");
        let (called, calls) = mpsc::sync_channel::<()>(4);
        let (release, released) = mpsc::sync_channel::<()>(4);
        let released = Mutex::new(released);
        let server = ControlServer::spawn_with(
            &path,
            Arc::new(move |_| {
                let _ = called.send(());
                let _ = released.lock().unwrap().recv();
                Answer::Status(dummy_status())
            }),
            small(2, 1),
        )
        .unwrap();
        let in_progress: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                thread::spawn(move || call(&path, &Request::Status))
            })
            .collect();
        calls.recv().unwrap();
        // The second is read and queued behind the only worker.
        let stats = server.stats();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.open() < 2 {
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(100));
        let refused = call(&path, &Request::Status).unwrap();
        let message = error_message(refused);
        assert!(
            message.starts_with("too many connections to the control socket"),
            "{message}"
        );
        release.send(()).unwrap();
        release.send(()).unwrap();
        for caller in in_progress {
            assert!(matches!(caller.join().unwrap().unwrap(), Answer::Status(_)));
        }
        assert_eq!(stats.ended(Outcome::Refused), 1);
        server.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A request over the limit is refused once the limit is passed, never read to its end.
    #[test]
    fn request_over_the_limit_is_refused_unread() {
        let dir = scratch("large");
        let path = dir.join("control.sock");
        let limits = Limits {
            max_request_bytes: 64 << 10,
            ..small(4, 1)
        };
        let server = ControlServer::spawn_with(
            &path,
            Arc::new(|_| panic!("a request over the limit reached the handler")),
            limits,
        )
        .unwrap();
        let huge = Request::Unblock {
            prefixes: vec!["203.0.113.1".to_owned(); 1 << 20],
        };
        let message = error_message(call(&path, &huge).unwrap());
        assert!(
            message.contains("request too large: over 65536 bytes"),
            "{message}"
        );
        let stats = server.stats();
        eventually("counted too large", || stats.ended(Outcome::TooLarge) == 1);
        server.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The whole line must arrive within the deadline from accept.
    #[test]
    fn request_incomplete_at_the_deadline_is_told_so() {
        let dir = scratch("deadline");
        let path = dir.join("control.sock");
        let server = ControlServer::spawn_with(
            &path,
            Arc::new(|_| Answer::Status(dummy_status())),
            small(4, 1),
        )
        .unwrap();
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(b"{\"protocol\":2,\"op\":").unwrap();
        let message = error_message(read_answer(&stream));
        assert!(
            message.contains("request incomplete 2s after connecting"),
            "{message}"
        );
        let mut rest = Vec::new();
        let _: usize = stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        server.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `block --file` sends 50,000 prefixes per request (the CLI's `FILE_CHUNK`): at their
    /// longest, with a long reason, that stays well under the default limit.
    #[test]
    fn largest_import_request_fits_the_default_limit() {
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128".to_owned();
        let request = Request::Block {
            prefixes: vec![longest; 50_000],
            duration_secs: Some(u64::MAX),
            reason: Some("r".repeat(4096)),
            source: Some(format!("file:{}", "n".repeat(255))),
            force: true,
        };
        let line = proto::encode(&request).unwrap();
        assert!(
            line.len() * 2 < Limits::CONTROL.max_request_bytes,
            "{} bytes",
            line.len()
        );
    }

    #[test]
    fn request_and_response_round_trip_over_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("xdpguard-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/control.sock");
        let server = ControlServer::spawn(
            &path,
            Arc::new(|request| match request {
                Request::Block { prefixes, .. } => Answer::Applied {
                    applied: prefixes.len() as u64,
                    refused: vec![],
                },
                _ => Answer::Error {
                    message: "nope".into(),
                },
            }),
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let answer = call(
            &path,
            &Request::Block {
                prefixes: vec!["203.0.113.1".into(), "203.0.113.2".into()],
                duration_secs: Some(2),
                reason: None,
                source: None,
                force: false,
            },
        )
        .unwrap();
        assert_eq!(
            answer,
            Answer::Applied {
                applied: 2,
                refused: vec![]
            }
        );
        // A second daemon on the same socket is refused.
        assert!(ControlServer::spawn(&path, Arc::new(|_| Answer::Status(dummy_status()))).is_err());
        server.shutdown();
        assert!(!path.exists());
        let err = call(&path, &Request::Status).unwrap_err();
        assert!(err.to_string().contains("not running"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn dummy_status() -> Status {
        Status {
            version: String::new(),
            dry_run: false,
            interfaces: vec![],
            lists: vec![],
            counters: vec![],
            decisions: 0,
            unknown_entries: 0,
            full_list_errors: 0,
            rulesets: vec![],
            peers: vec![],
            origins: OriginsStatus::default(),
        }
    }

    #[test]
    fn garbage_request_gets_an_error_not_a_hangup() {
        let dir = std::env::temp_dir().join(format!("xdpguard-control-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let server =
            ControlServer::spawn(&path, Arc::new(|_| Answer::Status(dummy_status()))).unwrap();
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(b"{\"op\":\"launch_missiles\"}\n").unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        let response: Answer = proto::decode(answer.as_bytes()).unwrap().message.unwrap();
        assert!(matches!(response, Answer::Error { message } if message.contains("bad request")));
        server.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A CLI of another protocol version, in either direction, hears which versions meet.
    #[test]
    fn other_protocol_versions_are_named_both_ways() {
        let dir = std::env::temp_dir().join(format!("xdpguard-control-ver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let server =
            ControlServer::spawn(&path, Arc::new(|_| Answer::Status(dummy_status()))).unwrap();
        let ask = |line: &[u8]| {
            let mut stream = UnixStream::connect(&path).unwrap();
            stream.write_all(line).unwrap();
            let mut answer = String::new();
            BufReader::new(stream).read_line(&mut answer).unwrap();
            let decoded = proto::decode::<Answer>(answer.as_bytes()).unwrap();
            assert_eq!(decoded.protocol, u64::from(PROTOCOL_VERSION));
            decoded.message.unwrap()
        };
        // An old CLI (no version) with a request that would parse.
        let old = ask(b"{\"op\":\"status\"}\n");
        assert!(
            matches!(&old, Answer::Error { message } if message.contains("the daemon speaks protocol 2, this CLI protocol 1")),
            "{old:?}"
        );
        let newer = ask(b"{\"protocol\":3,\"op\":\"status\"}\n");
        assert!(
            matches!(&newer, Answer::Error { message } if message.contains("protocol 2, this CLI protocol 3") && message.contains("older than this CLI")),
            "{newer:?}"
        );
        assert!(matches!(
            call(&path, &Request::Status).unwrap(),
            Answer::Status(_)
        ));
        server.shutdown();

        // An old daemon: answers without a version (and refuses the unknown field).
        let listener = UnixListener::bind(&path).unwrap();
        let old_daemon = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            (&stream)
                .write_all(b"{\"result\":\"error\",\"message\":\"bad request: unknown field `protocol`\"}\n")
                .unwrap();
        });
        let err = call(&path, &Request::Status).unwrap_err();
        assert!(
            err.to_string()
                .contains("the daemon speaks protocol 1, this CLI protocol 2"),
            "{err}"
        );
        old_daemon.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
