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
    /// The connection ended before a whole answer came back.
    #[error("{}", closed_message(*.sent, *.changes_state))]
    Closed {
        /// The whole request had been handed to the socket.
        sent: bool,
        /// The request blocks, unblocks, allows or unallows.
        changes_state: bool,
    },
    #[error("the daemon sent an unreadable answer: {0}")]
    Protocol(String),
    #[error("{0}")]
    Version(String),
}

/// What may have happened to a request whose connection ended without an answer.
fn closed_message(sent: bool, changes_state: bool) -> String {
    // The daemon acts only on a complete line, and the newline goes last.
    if !sent {
        return "the daemon closed the connection before the request was sent (did it stop?); \
                none of it was applied"
            .to_owned();
    }
    if changes_state {
        "the daemon closed the connection before answering (did it stop?); part or all of this \
         request may have been applied: check `xdpguard list`"
            .to_owned()
    } else {
        "the daemon closed the connection before answering (did it stop?)".to_owned()
    }
}

/// Whether `request` changes decisions (so an unanswered one may have been applied).
const fn changes_state(request: &Request) -> bool {
    matches!(
        request,
        Request::Block { .. }
            | Request::Unblock { .. }
            | Request::Allow { .. }
            | Request::Unallow { .. }
    )
}

/// Send one request and wait for its answer.
///
/// # Errors
/// When the daemon is not running, the caller may not connect, the connection ends before the
/// answer, the daemon speaks another protocol version, or the answer is unreadable.
pub fn call(socket: &Path, request: &Request) -> Result<Answer, ControlError> {
    let io_err = |source: io::Error| ControlError::Io {
        path: socket.to_path_buf(),
        source,
    };
    // Encoded first: the daemon gives a connection a few seconds to send its whole request.
    let line = proto::encode(request).map_err(|err| io_err(err.into()))?;
    let mut stream = UnixStream::connect(socket).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(socket.to_path_buf())
        }
        io::ErrorKind::PermissionDenied => ControlError::PermissionDenied(socket.to_path_buf()),
        _ => io_err(err),
    })?;
    // A daemon that refuses (too many connections, too large) answers and closes without
    // reading the rest; its answer is still there to read after a broken pipe.
    let sent = match stream.write_all(&line) {
        Ok(()) => true,
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            false
        }
        Err(err) => return Err(io_err(err)),
    };
    let closed = ControlError::Closed {
        sent,
        changes_state: changes_state(request),
    };
    let mut answer = Vec::new();
    match BufReader::new(stream).read_until(b'\n', &mut answer) {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => return Err(closed),
        Err(err) => return Err(io_err(err)),
    }
    // Nothing, or part of a line: the connection ended before the answer did.
    if answer.last() != Some(&b'\n') {
        return Err(closed);
    }
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

#[cfg(test)]
mod tests {
    use std::{io::Read as _, os::unix::net::UnixListener, path::PathBuf, thread};

    use super::*;

    /// A scratch directory for one test's socket.
    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xdpguard-client-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A fake daemon that takes one connection, reads the request line, then does `then`.
    fn one_connection(
        path: &Path,
        then: impl FnOnce(UnixStream) + Send + 'static,
    ) -> thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = Vec::new();
            let _: usize = BufReader::new(&stream)
                .read_until(b'\n', &mut line)
                .unwrap();
            then(stream);
        })
    }

    fn block() -> Request {
        Request::Block {
            prefixes: vec!["203.0.113.1".into()],
            duration_secs: None,
            reason: None,
            source: Some("file:list.txt".into()),
            force: false,
        }
    }

    /// The daemon took the request and the connection ended (it was killed): a change may
    /// have been applied, and the CLI says so; a read-only request just says it ended.
    #[test]
    fn connection_closed_after_the_request_says_what_may_have_been_applied() {
        let dir = scratch("closed");
        let path = dir.join("control.sock");
        for (request, may_apply) in [(block(), true), (Request::Status, false)] {
            let _ = std::fs::remove_file(&path);
            let daemon = one_connection(&path, drop);
            let err = call(&path, &request).unwrap_err();
            daemon.join().unwrap();
            assert!(
                matches!(err, ControlError::Closed { sent: true, .. }),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("the daemon closed the connection before answering (did it stop?)"),
                "{text}"
            );
            assert_eq!(
                text.contains(
                    "part or all of this request may have been applied: check `xdpguard list`"
                ),
                may_apply,
                "{text}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Half an answer, then the end: still "closed before answering", not a garbage answer.
    #[test]
    fn answer_cut_short_is_a_closed_connection() {
        let dir = scratch("cut");
        let path = dir.join("control.sock");
        let daemon = one_connection(&path, |mut stream| {
            stream.write_all(b"{\"result\":\"applied\",\"appl").unwrap();
        });
        let err = call(&path, &block()).unwrap_err();
        daemon.join().unwrap();
        assert!(err.to_string().contains("may have been applied"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Distinct from the other failures: no daemon, and a whole line that is no answer.
    #[test]
    fn not_running_and_garbage_are_told_apart_from_a_closed_connection() {
        let dir = scratch("apart");
        let path = dir.join("control.sock");
        let err = call(&path, &block()).unwrap_err();
        assert!(matches!(err, ControlError::NotRunning(_)), "{err:?}");
        let daemon = one_connection(&path, |mut stream| {
            stream.write_all(b"launch the missiles\n").unwrap();
        });
        let err = call(&path, &block()).unwrap_err();
        daemon.join().unwrap();
        assert!(matches!(err, ControlError::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains("unreadable answer"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A daemon that answers and closes without reading the request (refusing it): the CLI
    /// reads that answer instead of failing on the broken pipe.
    #[test]
    fn answer_written_before_a_broken_pipe_is_read() {
        let dir = scratch("pipe");
        let path = dir.join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let daemon = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let refusal = proto::encode(&Answer::Error {
                message: "too many connections to the control socket; try again".into(),
            })
            .unwrap();
            stream.write_all(&refusal).unwrap();
            // Read a little, so the rest of the request is left unread, then close.
            let mut some = [0_u8; 16];
            let _: usize = stream.read(&mut some).unwrap();
        });
        // Far more than the socket buffers: the write must fail with the pipe broken.
        let big = Request::Unblock {
            prefixes: vec!["203.0.113.1".to_owned(); 1 << 20],
        };
        let answer = call(&path, &big).unwrap();
        daemon.join().unwrap();
        assert!(
            matches!(&answer, Answer::Error { message } if message.contains("too many connections")),
            "{answer:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
