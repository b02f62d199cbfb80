//! The CLI's side of the control socket.
use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use super::proto::{self, Answer, PROTOCOL_VERSION, Request};

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
    #[error("{0}")]
    Version(String),
}

/// Send one request and wait for its answer.
///
/// # Errors
/// When the daemon is not running, the caller may not connect, the daemon speaks another
/// protocol version, or the answer is unreadable.
pub fn call(socket: &Path, request: &Request) -> Result<Answer, ControlError> {
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
    let line = proto::encode(request).map_err(|err| io_err(err.into()))?;
    stream.write_all(&line).map_err(io_err)?;
    let mut answer = Vec::new();
    let _: usize = BufReader::new(stream)
        .read_until(b'\n', &mut answer)
        .map_err(io_err)?;
    let decoded =
        proto::decode::<Answer>(&answer).map_err(|err| ControlError::Protocol(err.to_string()))?;
    if decoded.protocol != u64::from(PROTOCOL_VERSION) {
        return Err(ControlError::Version(proto::mismatch(
            decoded.protocol,
            u64::from(PROTOCOL_VERSION),
        )));
    }
    decoded
        .message
        .map_err(|err| ControlError::Protocol(err.to_string()))
}
