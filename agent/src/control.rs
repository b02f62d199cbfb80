//! The control socket: one JSON request per line in, one JSON response per line out.
//! Only root may connect (socket mode 0600, and the peer's uid is checked).
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

use serde::{Deserialize, Serialize};

/// Largest request line accepted (a chunk of a block-list import).
const MAX_REQUEST_BYTES: u64 = 256 << 20;
const MAX_CONNECTIONS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Block {
        prefixes: Vec<String>,
        /// Seconds; `None`: the configured default ban.
        duration_secs: Option<u64>,
        reason: Option<String>,
        /// Defaults to `manual`.
        source: Option<String>,
        /// Allow prefixes broader than the guard limit.
        force: bool,
    },
    Unblock {
        prefixes: Vec<String>,
    },
    Allow {
        prefixes: Vec<String>,
        reason: Option<String>,
    },
    Unallow {
        prefixes: Vec<String>,
    },
    List {
        source: Option<String>,
    },
    Status,
    /// The volume engine's last interval: top prefixes, hot prefixes, totals.
    Top,
}

/// Why one prefix of a request was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub prefix: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub kind: String,
    pub prefix: String,
    pub source: String,
    pub reason: String,
    pub created_unix: u64,
    /// 0 = never.
    pub expires_unix: u64,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: u32,
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListStatus {
    pub list: String,
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterStatus {
    /// An interface name, or `-` for frames not attributed to one (and expired hits).
    pub interface: String,
    pub counter: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub dry_run: bool,
    pub interfaces: Vec<InterfaceStatus>,
    pub lists: Vec<ListStatus>,
    pub counters: Vec<CounterStatus>,
    pub decisions: u64,
    /// Kernel entries no decision accounts for (seen at the last reconcile).
    pub unknown_entries: u64,
    /// Inserts refused because a list was full, since start.
    pub full_list_errors: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Applied {
        applied: u64,
        refused: Vec<Refusal>,
    },
    Removed {
        removed: u64,
        /// Prefixes that had no such decision.
        missing: Vec<String>,
        refused: Vec<Refusal>,
    },
    List {
        entries: Vec<ListEntry>,
    },
    Status(Status),
    Top(Box<crate::volume::engine::VolumeSnapshot>),
    Error {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the xdpguard daemon is not running (no control socket at {0})")]
    NotRunning(PathBuf),
    #[error("permission denied on the control socket {0}: run this as root")]
    PermissionDenied(PathBuf),
    #[error("control socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon sent an unreadable answer: {0}")]
    Protocol(String),
}

/// Send one request and wait for its answer.
///
/// # Errors
/// When the daemon is not running, the caller may not connect, or the answer is unreadable.
pub fn call(socket: &Path, request: &Request) -> Result<Response, ControlError> {
    let io_err = |source: io::Error| ControlError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(socket.to_path_buf())
        }
        io::ErrorKind::PermissionDenied => ControlError::PermissionDenied(socket.to_path_buf()),
        _ => io_err(err),
    })?;
    let mut line = serde_json::to_vec(request).map_err(|err| io_err(err.into()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut answer = String::new();
    let _: usize = BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    serde_json::from_str(&answer).map_err(|err| ControlError::Protocol(err.to_string()))
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
    pub fn spawn(
        path: &Path,
        handler: Arc<dyn Fn(Request) -> Response + Send + Sync>,
    ) -> Result<Self, ControlError> {
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

fn accept_loop(
    listener: &UnixListener,
    stop: &AtomicBool,
    handler: &Arc<dyn Fn(Request) -> Response + Send + Sync>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            respond(
                &stream,
                &Response::Error {
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

fn respond(mut stream: &UnixStream, response: &Response) {
    if let Ok(mut line) = serde_json::to_vec(response) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

fn serve(stream: &UnixStream, handler: &(dyn Fn(Request) -> Response + Send + Sync)) {
    // SAFETY: geteuid has no preconditions.
    let own_uid = unsafe { libc::geteuid() };
    if peer_uid(stream).is_none_or(|uid| uid != 0 && uid != own_uid) {
        respond(
            stream,
            &Response::Error {
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
                &Response::Error {
                    message: format!("request incomplete or over {MAX_REQUEST_BYTES} bytes"),
                },
            );
            return;
        }
        Ok(_) => {}
        Err(_) => return,
    }
    let response = match serde_json::from_slice::<Request>(&line) {
        Ok(request) => handler(request),
        Err(err) => Response::Error {
            message: format!("bad request: {err}"),
        },
    };
    respond(stream, &response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_round_trip_over_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("xdpguard-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/control.sock");
        let server = ControlServer::spawn(
            &path,
            Arc::new(|request| match request {
                Request::Block { prefixes, .. } => Response::Applied {
                    applied: prefixes.len() as u64,
                    refused: vec![],
                },
                _ => Response::Error {
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
            Response::Applied {
                applied: 2,
                refused: vec![]
            }
        );
        // A second daemon on the same socket is refused.
        assert!(
            ControlServer::spawn(&path, Arc::new(|_| Response::Status(dummy_status()))).is_err()
        );
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
            ControlServer::spawn(&path, Arc::new(|_| Response::Status(dummy_status()))).unwrap();
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(b"{\"op\":\"launch_missiles\"}\n").unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        let response: Response = serde_json::from_str(&answer).unwrap();
        assert!(matches!(response, Response::Error { message } if message.contains("bad request")));
        server.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
