//! The daemon's side of the control socket: accepts connections, checks the peer and the
//! protocol version, and maps each request onto the owner's [`Handle`].
use std::{
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use super::{
    client::ControlError,
    proto::{
        self, Answer, CounterStatus, InterfaceStatus, ListEntry, ListStatus, PROTOCOL_VERSION,
        RefusedPrefix, Request, Status, Top,
    },
};
use crate::{
    enforce::decision::Source,
    enforce::owner::{
        AllowOrder, Applied, BlockOrder, CommandError, Expiry, Handle, ListFilter, Refusal, Removed,
    },
    prefix::Prefix,
};

/// Largest request line accepted (a chunk of a block-list import).
const MAX_REQUEST_BYTES: u64 = 256 << 20;
const MAX_CONNECTIONS: usize = 16;

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
    }
}

/// Carry out one request through the owner's front door; `top` reads the volume engine's
/// last snapshot (no owner round trip).
pub fn answer(handle: &Handle, top: &dyn Fn() -> Top, request: Request) -> Answer {
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
        Request::List { source } => {
            let filter = ListFilter {
                kind: None,
                source: source.map(|text| Source::parse(&text)),
            };
            match handle.list(filter).wait() {
                Ok(entries) => Answer::List {
                    entries: entries
                        .into_iter()
                        .map(|entry| {
                            let decision = entry.decision;
                            ListEntry {
                                kind: decision.kind.name().to_owned(),
                                prefix: decision.prefix.to_string(),
                                source: decision.origin.source.to_string(),
                                reason: decision.origin.reason.to_string(),
                                created_unix: decision.origin.created_unix,
                                expires_unix: decision.origin.expires_unix,
                                packets: entry.packets,
                                bytes: entry.bytes,
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
            Ok(owner_status) => Answer::Status(status(&owner_status)),
            Err(err) => Answer::Error {
                message: err.to_string(),
            },
        },
        Request::Top => Answer::Top(Box::new(top())),
    }
}

/// Accepts connections and hands each request to `handler`.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Bind `path` (mode 0600, parent created 0700) and serve on a background thread.
    ///
    /// # Errors
    /// When another daemon answers on `path`, or binding fails.
    pub fn spawn(path: &Path, handler: Handler) -> Result<Self, ControlError> {
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
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || accept_loop(&listener, &stop, &handler))
                .map_err(io_err)?
        };
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// Stop accepting, wait for the accept loop, remove the socket file.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_and_join();
        }
    }
}

fn accept_loop(listener: &UnixListener, stop: &AtomicBool, handler: &Handler) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            respond(
                &stream,
                &Answer::Error {
                    message: "too many control connections; try again".into(),
                },
            );
            continue;
        }
        let _: usize = active.fetch_add(1, Ordering::SeqCst);
        let handler = Arc::clone(handler);
        let active = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                serve(&stream, &*handler);
                let _: usize = active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            log::warn!("control: could not start a connection thread");
        }
    }
}

fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = libc::socklen_t::try_from(size_of::<libc::ucred>()).ok()?;
    // SAFETY: valid fd, out pointer and length for SO_PEERCRED.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn respond(mut stream: &UnixStream, answer: &Answer) {
    if let Ok(line) = proto::encode(answer) {
        let _ = stream.write_all(&line);
    }
}

fn serve(stream: &UnixStream, handler: &(dyn Fn(Request) -> Answer + Send + Sync)) {
    // SAFETY: geteuid has no preconditions.
    let own_uid = unsafe { libc::geteuid() };
    if peer_uid(stream).is_none_or(|uid| uid != 0 && uid != own_uid) {
        respond(
            stream,
            &Answer::Error {
                message: "permission denied: only root may control xdpguard".into(),
            },
        );
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream.take(MAX_REQUEST_BYTES));
    match reader.read_until(b'\n', &mut line) {
        Ok(0) => return,
        Ok(_) if line.last() != Some(&b'\n') => {
            respond(
                stream,
                &Answer::Error {
                    message: format!("request incomplete or over {MAX_REQUEST_BYTES} bytes"),
                },
            );
            return;
        }
        Ok(_) => {}
        Err(_) => return,
    }
    let answer = match proto::decode::<Request>(&line) {
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
    };
    respond(stream, &answer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::control::call;

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
        let old_daemon = std::thread::spawn(move || {
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
