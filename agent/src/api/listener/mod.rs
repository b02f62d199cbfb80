//! The connection engine both listeners share (the metrics page over TCP, the control socket
//! over a Unix socket): what keeps them available to real clients while others abuse them.
//!
//! One I/O thread owns the listening socket and every connection, all non-blocking, and
//! waits on them with `poll(2)`; a few worker threads compute answers, so a slow answer never
//! stalls the other connections. Each connection carries one request and one answer:
//! - the whole request must arrive within [`Limits::request_timeout`] of accept, and is never
//!   buffered past [`Limits::max_request_bytes`];
//! - the answer must be taken within [`Limits::answer_timeout`];
//! - many more connections are held than there are workers ([`Limits::max_connections`]);
//!   when a new one arrives with every place taken, the oldest connection that has not sent
//!   a complete request is shed, then one whose answer is already sent; only when every
//!   connection holds a complete request is the newcomer refused.
//!
//! What differs between the two listeners (framing, answers, refusals) is a [`Protocol`].
pub mod metrics;

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::{UnixListener, UnixStream},
    },
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// What one listener allows each connection, and all of them together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time from accept to the end of the request.
    pub request_timeout: Duration,
    /// Time the client has to take the whole answer.
    pub answer_timeout: Duration,
    /// Largest request; one byte more and it is refused, unread.
    pub max_request_bytes: usize,
    /// Connections held open at once.
    pub max_connections: usize,
    /// Answers computed at once.
    pub workers: usize,
}

impl Limits {
    /// The metrics page: a request head of 8 KiB at most, 512 connections, 2 renderers.
    pub const METRICS: Self = Self {
        request_timeout: Duration::from_secs(5),
        answer_timeout: Duration::from_secs(10),
        max_request_bytes: 8 << 10,
        max_connections: 512,
        workers: 2,
    };
    /// The control socket. A `block --file` import sends 50,000 prefixes per request, at
    /// most 2.3 MB; 8 MiB leaves room for long reasons and other clients.
    pub const CONTROL: Self = Self {
        request_timeout: Duration::from_secs(5),
        answer_timeout: Duration::from_secs(60),
        max_request_bytes: 8 << 20,
        max_connections: 64,
        workers: 4,
    };
}

/// Why a connection is being closed without the answer to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// The request was not complete within [`Limits::request_timeout`].
    TimedOut { received: bool },
    /// The client ended its side with part of a request sent.
    Ended,
    /// Over [`Limits::max_request_bytes`].
    TooLarge,
    /// Closed to make room for a newer connection: it had sent no complete request.
    Shed,
    /// Every place is held by a connection with a complete request.
    Refused,
    /// The peer may not use this listener.
    Denied,
    /// Answering failed (the answer code panicked).
    Failed,
}

/// How connections ended, counted once each (the labels of the listener's metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The whole answer was taken.
    Answered,
    /// The answer was not taken within [`Limits::answer_timeout`].
    SlowReader,
    TimedOut,
    TooLarge,
    Shed,
    Refused,
    Denied,
    /// The client went away before its request was complete or its answer taken.
    Abandoned,
}

impl Outcome {
    pub const ALL: [Self; 8] = [
        Self::Answered,
        Self::SlowReader,
        Self::TimedOut,
        Self::TooLarge,
        Self::Shed,
        Self::Refused,
        Self::Denied,
        Self::Abandoned,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::SlowReader => "slow_reader",
            Self::TimedOut => "timed_out",
            Self::TooLarge => "too_large",
            Self::Shed => "shed",
            Self::Refused => "refused",
            Self::Denied => "denied",
            Self::Abandoned => "abandoned",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// A listener's counters, updated by its I/O thread, read by the metrics page.
#[derive(Debug, Default)]
pub struct ListenerStats {
    ended: [AtomicU64; Outcome::ALL.len()],
    open: AtomicU64,
}

impl ListenerStats {
    /// Connections that ended with `outcome`, since start.
    pub fn ended(&self, outcome: Outcome) -> u64 {
        self.ended[outcome.index()].load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    fn count(&self, outcome: Outcome) {
        let _: u64 = self.ended[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// What one listener says and how it frames requests; the engine does the rest.
pub trait Protocol: Send + Sync + 'static {
    /// Where the request ends in `received` (its length), once it is complete. Bytes before
    /// `scanned` were looked at by an earlier call.
    fn request_end(&self, received: &[u8], scanned: usize) -> Option<usize>;
    /// The answer to a complete request; on a worker thread, so it may take its time.
    fn answer(&self, request: &[u8]) -> Vec<u8>;
    /// What to tell a connection closed for `why` (`None`: close without a word).
    fn refusal(&self, why: Closing) -> Option<Vec<u8>>;
    /// Whether the peer of a new connection may use the listener at all.
    fn admit(&self, _peer: RawFd) -> bool {
        true
    }
    /// After the answer: how long, and how much, to read what the client still sends, so
    /// closing does not reset the connection before the answer arrives (TCP). `None`: close.
    fn linger(&self) -> Option<(Duration, usize)> {
        None
    }
}

/// A connected stream the engine can drive.
pub trait Conn: Read + Write + AsRawFd + Send + 'static {
    fn nonblocking(&self) -> io::Result<()>;
    fn shutdown_write(&self);
}

impl Conn for TcpStream {
    fn nonblocking(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Conn for UnixStream {
    fn nonblocking(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// A listening socket the engine accepts from.
pub trait Listen: AsRawFd + Send + 'static {
    type Conn: Conn;
    fn nonblocking(&self) -> io::Result<()>;
    fn accept_conn(&self) -> io::Result<Self::Conn>;
}

impl Listen for TcpListener {
    type Conn = TcpStream;
    fn nonblocking(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
    fn accept_conn(&self) -> io::Result<TcpStream> {
        self.accept().map(|(stream, _)| stream)
    }
}

impl Listen for UnixListener {
    type Conn = UnixStream;
    fn nonblocking(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
    fn accept_conn(&self) -> io::Result<UnixStream> {
        self.accept().map(|(stream, _)| stream)
    }
}

/// An eventfd the workers and the server handle write to, to wake the I/O thread's poll.
struct Waker(OwnedFd);

impl Waker {
    fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64; a full counter (EAGAIN) is awake anyway.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    fn clear(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN when nothing was written.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut value).cast(), 8) };
    }
}

/// What the server handle and the I/O thread share.
struct Shared {
    stop: AtomicBool,
    waker: Waker,
}

/// A running listener: the I/O thread and its workers.
pub struct Engine {
    shared: Arc<Shared>,
    stats: Arc<ListenerStats>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Serve `listener` with `protocol` from a thread named `name` (workers `name-worker`).
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking, or a thread or the eventfd not created.
    pub fn spawn<L: Listen, P: Protocol>(
        name: &str,
        listener: L,
        protocol: Arc<P>,
        limits: Limits,
        stats: Arc<ListenerStats>,
    ) -> io::Result<Self> {
        listener.nonblocking()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            waker: Waker::new()?,
        });
        let (jobs, job_queue) = mpsc::channel::<Job>();
        let (answers, answered) = mpsc::channel::<Done>();
        let job_queue = Arc::new(Mutex::new(job_queue));
        let mut workers = Vec::new();
        for _ in 0..limits.workers.max(1) {
            let job_queue = Arc::clone(&job_queue);
            let answers = answers.clone();
            let protocol = Arc::clone(&protocol);
            let shared = Arc::clone(&shared);
            workers.push(
                thread::Builder::new()
                    .name(format!("{name}-worker"))
                    .spawn(move || work(&job_queue, &answers, &*protocol, &shared))?,
            );
        }
        let thread = {
            let shared = Arc::clone(&shared);
            let stats = Arc::clone(&stats);
            thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    let mut io = IoLoop {
                        listener,
                        protocol,
                        limits,
                        stats,
                        shared,
                        jobs,
                        answered,
                        connections: BTreeMap::new(),
                        next_id: 0,
                        accept_paused_until: None,
                    };
                    io.run();
                    let IoLoop { jobs, .. } = io;
                    // Workers end once the queue is closed and their current answer is done.
                    drop(jobs);
                    for worker in workers {
                        if worker.join().is_err() {
                            log::warn!("listener: a worker thread panicked");
                        }
                    }
                })?
        };
        Ok(Self {
            shared,
            stats,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> Arc<ListenerStats> {
        Arc::clone(&self.stats)
    }

    /// Stop accepting, close every connection, wait for the threads.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.waker.wake();
        if thread.join().is_err() {
            log::warn!("listener: the I/O thread panicked");
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A complete request, for a worker.
struct Job {
    id: u64,
    request: Vec<u8>,
}

/// A worker's answer, for the I/O thread.
struct Done {
    id: u64,
    answer: Vec<u8>,
}

fn work(
    job_queue: &Mutex<mpsc::Receiver<Job>>,
    answers: &mpsc::Sender<Done>,
    protocol: &dyn Protocol,
    shared: &Shared,
) {
    loop {
        let job = job_queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(Job { id, request }) = job else {
            return;
        };
        // A panicking answer is a failed request, not a lost worker.
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| protocol.answer(&request)))
            .unwrap_or_else(|_| protocol.refusal(Closing::Failed).unwrap_or_default());
        if answers.send(Done { id, answer }).is_err() {
            return;
        }
        shared.waker.wake();
    }
}

/// Where a connection is.
enum State {
    /// Receiving its request.
    Reading {
        received: Vec<u8>,
        /// Bytes of `received` already searched for the end of the request.
        scanned: usize,
    },
    /// A worker has the request.
    Answering,
    /// Sending `bytes` from `written` on, until `deadline`.
    Writing {
        bytes: Vec<u8>,
        written: usize,
        deadline: Instant,
    },
    /// Answer sent and our side shut; reading what still comes, until `until` or `left` more.
    Draining { until: Instant, left: usize },
}

struct Connection<S> {
    stream: S,
    accepted: Instant,
    state: State,
    /// How it ended, once that is decided (a refusal being written already is one).
    outcome: Option<Outcome>,
}

/// What reading from a connection came to.
enum Received {
    /// Not complete yet.
    More,
    /// The client went away with nothing sent, or failed.
    Gone,
    Refuse(Closing, Outcome),
    Complete(Vec<u8>),
}

/// What handling one event came to.
#[derive(Clone, Copy)]
enum Next {
    Keep,
    Close(Outcome),
}

/// Pause after a failed accept (out of descriptors, ...) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections accepted per wake-up, so a connection flood does not starve the others.
const ACCEPTS_PER_WAKE: usize = 64;
/// Read size, and reads per connection per wake-up (fairness among connections).
const READ_CHUNK: usize = 16 << 10;
const READS_PER_WAKE: usize = 4;
/// The longest poll sleeps with nothing due.
const IDLE_POLL: Duration = Duration::from_secs(1);

struct IoLoop<L: Listen, P> {
    listener: L,
    protocol: Arc<P>,
    limits: Limits,
    stats: Arc<ListenerStats>,
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    answered: mpsc::Receiver<Done>,
    /// By id; ids grow with accept order, so iteration is oldest first.
    connections: BTreeMap<u64, Connection<L::Conn>>,
    next_id: u64,
    accept_paused_until: Option<Instant>,
}

impl<L: Listen, P: Protocol> IoLoop<L, P> {
    fn run(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        let mut chunk = vec![0_u8; READ_CHUNK];
        while !self.shared.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            self.expire(now);
            if self.accept_paused_until.is_some_and(|until| now >= until) {
                self.accept_paused_until = None;
            }
            let timeout = self.poll_set(now, &mut fds, &mut ids);
            let timeout_ms = i32::try_from(timeout.as_millis().saturating_add(1)).unwrap_or(1000);
            let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
            // SAFETY: `fds` is a valid array of `nfds` pollfd structs for the call's duration.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    log::warn!("listener: poll: {err}");
                    thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
            if fds[0].revents != 0 {
                self.shared.waker.clear();
            }
            while let Ok(done) = self.answered.try_recv() {
                self.start_answer(done);
            }
            for (pollfd, &id) in fds[2..].iter().zip(&ids) {
                if pollfd.revents != 0 {
                    self.on_ready(id, &mut chunk);
                }
            }
            if fds[1].revents != 0 {
                self.accept_some();
            }
            let open = u64::try_from(self.connections.len()).unwrap_or(u64::MAX);
            self.stats.open.store(open, Ordering::Relaxed);
        }
        // Stopping: every connection closes here, unanswered ones counted as abandoned.
        for (_, connection) in std::mem::take(&mut self.connections) {
            self.stats
                .count(connection.outcome.unwrap_or(Outcome::Abandoned));
        }
        self.stats.open.store(0, Ordering::Relaxed);
    }

    /// Fill `fds` (waker, listener, then one per polled connection, named in `ids`) and say
    /// how long poll may sleep: until the next deadline.
    fn poll_set(&self, now: Instant, fds: &mut Vec<libc::pollfd>, ids: &mut Vec<u64>) -> Duration {
        fds.clear();
        ids.clear();
        let pollfd = |fd: RawFd, events: i16| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        fds.push(pollfd(self.shared.waker.0.as_raw_fd(), libc::POLLIN));
        // A negative descriptor is ignored by poll: accepting is paused.
        let listen_fd = if self.accept_paused_until.is_some() {
            -1
        } else {
            self.listener.as_raw_fd()
        };
        fds.push(pollfd(listen_fd, libc::POLLIN));
        let mut next_due = self.accept_paused_until.unwrap_or(now + IDLE_POLL);
        for (&id, connection) in &self.connections {
            let (events, due) = match &connection.state {
                State::Reading { .. } => (
                    libc::POLLIN,
                    connection.accepted + self.limits.request_timeout,
                ),
                State::Answering => continue,
                State::Writing { deadline, .. } => (libc::POLLOUT, *deadline),
                State::Draining { until, .. } => (libc::POLLIN, *until),
            };
            next_due = next_due.min(due);
            fds.push(pollfd(connection.stream.as_raw_fd(), events));
            ids.push(id);
        }
        next_due.saturating_duration_since(now).min(IDLE_POLL)
    }

    /// Act on the deadlines that have passed.
    fn expire(&mut self, now: Instant) {
        let request_timeout = self.limits.request_timeout;
        let due: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, connection)| match &connection.state {
                State::Reading { .. } => now >= connection.accepted + request_timeout,
                State::Answering => false,
                State::Writing { deadline, .. } => now >= *deadline,
                State::Draining { until, .. } => now >= *until,
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(connection) = self.connections.get(&id) else {
                continue;
            };
            let next = match &connection.state {
                State::Reading { received, .. } => {
                    let received = !received.is_empty();
                    self.refuse(id, Closing::TimedOut { received }, Outcome::TimedOut)
                }
                State::Writing { .. } => Next::Close(Outcome::SlowReader),
                State::Draining { .. } | State::Answering => Next::Close(Outcome::Answered),
            };
            self.settle(id, next);
        }
    }

    /// Close `id` if `next` says so, counting how it ended.
    fn settle(&mut self, id: u64, next: Next) {
        if let Next::Close(fallback) = next
            && let Some(connection) = self.connections.remove(&id)
        {
            self.stats.count(connection.outcome.unwrap_or(fallback));
        }
    }

    /// Tell `id` why it is being closed (when the protocol has something to say), then close.
    fn refuse(&mut self, id: u64, why: Closing, outcome: Outcome) -> Next {
        let Some(connection) = self.connections.get_mut(&id) else {
            return Next::Keep;
        };
        connection.outcome = Some(outcome);
        match self.protocol.refusal(why) {
            Some(bytes) => {
                connection.state = State::Writing {
                    bytes,
                    written: 0,
                    deadline: Instant::now() + self.limits.answer_timeout,
                };
                self.write_some(id)
            }
            None => Next::Close(outcome),
        }
    }

    /// A worker's answer arrived: send it.
    fn start_answer(&mut self, done: Done) {
        // The connection may be gone (stopped while answering).
        let Some(connection) = self.connections.get_mut(&done.id) else {
            return;
        };
        connection.state = State::Writing {
            bytes: done.answer,
            written: 0,
            deadline: Instant::now() + self.limits.answer_timeout,
        };
        let next = self.write_some(done.id);
        self.settle(done.id, next);
    }

    fn on_ready(&mut self, id: u64, chunk: &mut [u8]) {
        let Some(connection) = self.connections.get(&id) else {
            return;
        };
        let next = match connection.state {
            State::Reading { .. } => self.read_some(id, chunk),
            State::Writing { .. } => self.write_some(id),
            State::Draining { .. } => self.drain_some(id, chunk),
            State::Answering => Next::Keep,
        };
        self.settle(id, next);
    }

    fn read_some(&mut self, id: u64, chunk: &mut [u8]) -> Next {
        match self.receive(id, chunk) {
            Received::More => Next::Keep,
            Received::Gone => Next::Close(Outcome::Abandoned),
            Received::Refuse(why, outcome) => self.refuse(id, why, outcome),
            Received::Complete(request) => {
                // The workers outlive this loop; a failed send means they are all gone.
                match self.jobs.send(Job { id, request }) {
                    Ok(()) => Next::Keep,
                    Err(_) => self.refuse(id, Closing::Failed, Outcome::Abandoned),
                }
            }
        }
    }

    /// Read what `id` sent, up to the limit and a few reads.
    fn receive(&mut self, id: u64, chunk: &mut [u8]) -> Received {
        let limit = self.limits.max_request_bytes;
        let Some(connection) = self.connections.get_mut(&id) else {
            return Received::More;
        };
        let State::Reading { received, scanned } = &mut connection.state else {
            return Received::More;
        };
        for _ in 0..READS_PER_WAKE {
            // One byte past the limit at most: enough to know it was passed.
            let room = (limit + 1 - received.len()).min(chunk.len());
            let read = match connection.stream.read(&mut chunk[..room]) {
                Ok(0) if received.is_empty() => return Received::Gone,
                Ok(0) => return Received::Refuse(Closing::Ended, Outcome::Abandoned),
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Received::More,
                Err(_) => return Received::Gone,
            };
            reserve_within(received, read, limit + 1);
            received.extend_from_slice(&chunk[..read]);
            if let Some(end) = self.protocol.request_end(received, *scanned) {
                if end > limit {
                    return Received::Refuse(Closing::TooLarge, Outcome::TooLarge);
                }
                let mut request = std::mem::take(received);
                request.truncate(end);
                connection.state = State::Answering;
                return Received::Complete(request);
            }
            *scanned = received.len();
            if received.len() > limit {
                return Received::Refuse(Closing::TooLarge, Outcome::TooLarge);
            }
            if read < room {
                // The socket had no more for now.
                return Received::More;
            }
        }
        Received::More
    }

    fn write_some(&mut self, id: u64) -> Next {
        let linger = self.protocol.linger();
        let Some(connection) = self.connections.get_mut(&id) else {
            return Next::Keep;
        };
        let State::Writing { bytes, written, .. } = &mut connection.state else {
            return Next::Keep;
        };
        while *written < bytes.len() {
            match connection.stream.write(&bytes[*written..]) {
                Ok(0) => return Next::Close(Outcome::Abandoned),
                Ok(sent) => *written += sent,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(_) => return Next::Close(Outcome::Abandoned),
            }
        }
        let outcome = *connection.outcome.get_or_insert(Outcome::Answered);
        match linger {
            Some((time, bytes)) => {
                connection.stream.shutdown_write();
                connection.state = State::Draining {
                    until: Instant::now() + time,
                    left: bytes,
                };
                Next::Keep
            }
            None => Next::Close(outcome),
        }
    }

    fn drain_some(&mut self, id: u64, chunk: &mut [u8]) -> Next {
        let Some(connection) = self.connections.get_mut(&id) else {
            return Next::Keep;
        };
        let State::Draining { left, .. } = &mut connection.state else {
            return Next::Keep;
        };
        let outcome = connection.outcome.unwrap_or(Outcome::Answered);
        for _ in 0..READS_PER_WAKE {
            let room = (*left).min(chunk.len());
            if room == 0 {
                return Next::Close(outcome);
            }
            match connection.stream.read(&mut chunk[..room]) {
                Ok(0) => return Next::Close(outcome),
                Ok(read) => *left -= read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(_) => return Next::Close(outcome),
            }
        }
        Next::Keep
    }

    fn accept_some(&mut self) {
        for _ in 0..ACCEPTS_PER_WAKE {
            let stream = match self.listener.accept_conn() {
                Ok(stream) => stream,
                Err(err) => {
                    match err.kind() {
                        io::ErrorKind::WouldBlock => {}
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                        _ => {
                            // Out of descriptors, most likely: the queue stays readable, so
                            // pause rather than spin, and make room for when it resumes.
                            log::warn!("listener: accepting a connection: {err}");
                            self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                            if let Some(victim) = self.shed_candidate() {
                                self.shed(victim);
                            }
                        }
                    }
                    return;
                }
            };
            if stream.nonblocking().is_err() {
                self.stats.count(Outcome::Abandoned);
                continue;
            }
            if !self.protocol.admit(stream.as_raw_fd()) {
                self.stats.count(Outcome::Denied);
                say_and_close(stream, self.protocol.refusal(Closing::Denied));
                continue;
            }
            if self.connections.len() >= self.limits.max_connections.max(1) {
                match self.shed_candidate() {
                    Some(victim) => self.shed(victim),
                    None => {
                        self.stats.count(Outcome::Refused);
                        say_and_close(stream, self.protocol.refusal(Closing::Refused));
                        continue;
                    }
                }
            }
            self.next_id += 1;
            let _: Option<_> = self.connections.insert(
                self.next_id,
                Connection {
                    stream,
                    accepted: Instant::now(),
                    state: State::Reading {
                        received: Vec::new(),
                        scanned: 0,
                    },
                    outcome: None,
                },
            );
        }
    }

    /// Who goes to make room: the oldest connection still short of a complete request, else
    /// the oldest whose answer is sent and is only being drained.
    fn shed_candidate(&self) -> Option<u64> {
        let oldest = |wanted: fn(&State) -> bool| {
            self.connections
                .iter()
                .find(|(_, connection)| wanted(&connection.state))
                .map(|(&id, _)| id)
        };
        oldest(|state| matches!(state, State::Reading { .. }))
            .or_else(|| oldest(|state| matches!(state, State::Draining { .. })))
    }

    fn shed(&mut self, id: u64) {
        let Some(connection) = self.connections.remove(&id) else {
            return;
        };
        match connection.state {
            // Its answer was sent: it ends as answered.
            State::Draining { .. } => self
                .stats
                .count(connection.outcome.unwrap_or(Outcome::Answered)),
            _ => {
                self.stats.count(Outcome::Shed);
                say_and_close(connection.stream, self.protocol.refusal(Closing::Shed));
            }
        }
    }
}

/// Grow `buffer` for `more` bytes without its capacity passing `cap`: doubling as usual, but
/// a request at the limit never reserves twice the limit.
fn reserve_within(buffer: &mut Vec<u8>, more: usize, cap: usize) {
    let needed = buffer.len() + more;
    if needed <= buffer.capacity() {
        return;
    }
    let target = (buffer.capacity() * 2)
        .max(needed)
        .max(1024)
        .min(cap.max(needed));
    buffer.reserve_exact(target - buffer.len());
}

/// Best effort, never waiting: take what already arrived (so closing a TCP connection sends a
/// FIN rather than a reset), write `message` if the socket takes it at once, close.
fn say_and_close<S: Conn>(mut stream: S, message: Option<Vec<u8>>) {
    let mut sink = [0_u8; 4096];
    for _ in 0..4 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Some(message) = message {
        let _ = stream.write(&message);
    }
    stream.shutdown_write();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_within_never_passes_the_cap() {
        let mut buffer = Vec::new();
        let cap = 100_001;
        while buffer.len() < cap {
            let more = 4096.min(cap - buffer.len());
            reserve_within(&mut buffer, more, cap);
            buffer.extend(std::iter::repeat_n(0, more));
            assert!(buffer.capacity() <= cap, "{}", buffer.capacity());
        }
    }

    #[test]
    fn outcome_indexes_match_all() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome.index(), i);
        }
    }
}
