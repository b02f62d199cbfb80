//! A UDP listener for NetFlow v9 / IPFIX: a thread receives datagrams, decodes them with a
//! [`FlowDecoder`] and hands each datagram's records to the caller's sink.
use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::decode::{DecoderSettings, ExporterStats, FlowDecoder, FlowRecord};
use crate::prefix::Prefix;

/// The default socket receive buffer: bursts from many exporters must not overflow it.
pub const DEFAULT_RECEIVE_BUFFER_BYTES: usize = 8 << 20;
/// How often the receive loop looks at the stop flag when no datagram comes.
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// How often the shared statistics are refreshed while datagrams come.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// The largest UDP payload.
const MAX_DATAGRAM_LEN: usize = 65_535;

/// Receives the records of one datagram (only datagrams that gave records).
pub type RecordSink = Box<dyn FnMut(&[FlowRecord]) + Send>;
/// Per-exporter statistics, refreshed by the collector thread.
pub type SharedExporterStats = Arc<Mutex<BTreeMap<IpAddr, ExporterStats>>>;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("cannot bind the flow collector to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the flow collector socket on {addr}")]
    Socket {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the flow collector thread")]
    Spawn(#[source] io::Error),
}

/// Where and how to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorSettings {
    pub listen: SocketAddr,
    /// SO_RCVBUF; raised past the system maximum when the process may (SO_RCVBUFFORCE).
    pub receive_buffer_bytes: usize,
    pub decoder: DecoderSettings,
    /// Only datagrams from these networks are decoded (flows are unauthenticated UDP: anyone
    /// who can reach the port could otherwise report volumes); empty: from anywhere.
    pub exporters: Vec<Prefix>,
}

impl CollectorSettings {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            receive_buffer_bytes: DEFAULT_RECEIVE_BUFFER_BYTES,
            decoder: DecoderSettings::default(),
            exporters: Vec::new(),
        }
    }
}

/// A running collector; [`FlowCollector::stop`] (or dropping it) ends its thread.
#[derive(Debug)]
pub struct FlowCollector {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: SharedExporterStats,
    rejected: Arc<AtomicU64>,
}

impl FlowCollector {
    /// Binds the socket and starts the receive thread.
    ///
    /// # Errors
    /// When the socket cannot be bound or set up, or the thread cannot start.
    pub fn start(settings: CollectorSettings, sink: RecordSink) -> Result<Self, CollectorError> {
        let addr = settings.listen;
        let socket =
            UdpSocket::bind(addr).map_err(|source| CollectorError::Bind { addr, source })?;
        let setup_error = |source| CollectorError::Socket { addr, source };
        if let Err(error) = set_receive_buffer(&socket, settings.receive_buffer_bytes) {
            // Still usable, only more likely to drop bursts.
            log::warn!(
                "flow collector on {addr}: cannot set the receive buffer to {} bytes: {error}",
                settings.receive_buffer_bytes
            );
        }
        socket
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(setup_error)?;
        let local_addr = socket.local_addr().map_err(setup_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = SharedExporterStats::default();
        let rejected = Arc::new(AtomicU64::new(0));
        let receiver = Receiver {
            socket,
            decoder: FlowDecoder::new(settings.decoder),
            exporters: settings.exporters,
            sink,
            stop: Arc::clone(&stop),
            stats: Arc::clone(&stats),
            rejected: Arc::clone(&rejected),
        };
        let thread = std::thread::Builder::new()
            .name("flow-collector".into())
            .spawn(move || receiver.run())
            .map_err(CollectorError::Spawn)?;
        Ok(Self {
            local_addr,
            stop,
            thread: Some(thread),
            stats,
            rejected,
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Per-exporter statistics, refreshed about once a second while datagrams come and
    /// when the socket goes quiet.
    pub fn stats(&self) -> SharedExporterStats {
        Arc::clone(&self.stats)
    }

    /// Datagrams refused because their sender is not one of the configured exporters.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Stops the thread and waits for it (about the 200 ms read timeout at most, plus one
    /// datagram).
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("flow collector on {}: the thread panicked", self.local_addr);
        }
    }
}

impl Drop for FlowCollector {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// What the collector thread owns.
struct Receiver {
    socket: UdpSocket,
    decoder: FlowDecoder,
    exporters: Vec<Prefix>,
    sink: RecordSink,
    stop: Arc<AtomicBool>,
    stats: SharedExporterStats,
    rejected: Arc<AtomicU64>,
}

impl Receiver {
    fn run(mut self) {
        // The decoder's clock: seconds since start, monotonic.
        let started = Instant::now();
        let mut batch = Batch::new();
        let mut records = Vec::with_capacity(1024);
        let mut last_published = started;
        let mut unpublished = false;
        while !self.stop.load(Ordering::Relaxed) {
            match batch.receive(&self.socket) {
                Ok(count) => {
                    let now_secs = started.elapsed().as_secs();
                    records.clear();
                    for (datagram, exporter) in batch.datagrams(count) {
                        if !self.exporters.is_empty()
                            && !self
                                .exporters
                                .iter()
                                .any(|allowed| allowed.contains(exporter.ip().to_canonical()))
                        {
                            let _: u64 = self.rejected.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        self.decoder
                            .decode(exporter, datagram, now_secs, |record| records.push(record));
                    }
                    if !records.is_empty() {
                        (self.sink)(&records);
                    }
                    if count < BATCH {
                        // Let datagrams gather: one wakeup per batch, not per datagram.
                        std::thread::sleep(COALESCE);
                    }
                    unpublished = true;
                    if last_published.elapsed() >= STATS_INTERVAL {
                        self.publish_stats();
                        last_published = Instant::now();
                        unpublished = false;
                    }
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if unpublished {
                        self.publish_stats();
                        last_published = Instant::now();
                        unpublished = false;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    log::warn!("flow collector: receive failed: {error}");
                    // Not a tight loop on a persistent error.
                    std::thread::sleep(READ_TIMEOUT);
                }
            }
        }
        self.publish_stats();
    }

    fn publish_stats(&self) {
        let mut shared = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        shared.clear();
        shared.extend(
            self.decoder
                .exporter_stats()
                .map(|(address, stats)| (address, *stats)),
        );
    }
}

/// Datagrams read per `recvmmsg(2)`.
const BATCH: usize = 32;
/// After a batch that did not fill, wait this long before reading again, so that datagrams
/// gather in the socket buffer: at a steady stream the collector wakes once per batch instead
/// of once per datagram. A delay no volume interval (1 s at least) notices.
const COALESCE: Duration = Duration::from_millis(2);

/// Buffers for one `recvmmsg(2)` of up to [`BATCH`] datagrams of any UDP size.
struct Batch {
    buffers: Vec<u8>,
    addresses: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Self {
        Self {
            buffers: vec![0; BATCH * MAX_DATAGRAM_LEN],
            // SAFETY: an all-zero sockaddr_storage is valid (family 0).
            addresses: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            iovecs: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            // SAFETY: an all-zero mmsghdr is valid (null pointers, 0 lengths); `receive` fills
            // in the pointers before every use.
            headers: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        }
    }

    /// Wait (up to the socket's read timeout) for at least one datagram, take what is queued,
    /// up to [`BATCH`]. How many.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let buffers = self.buffers.as_mut_ptr();
        for index in 0..BATCH {
            self.iovecs[index] = libc::iovec {
                // SAFETY: `index * MAX_DATAGRAM_LEN` is inside `buffers` (BATCH of them).
                iov_base: unsafe { buffers.add(index * MAX_DATAGRAM_LEN) }.cast(),
                iov_len: MAX_DATAGRAM_LEN,
            };
            let header = &mut self.headers[index].msg_hdr;
            header.msg_name = (&raw mut self.addresses[index]).cast();
            header.msg_namelen = u32::try_from(size_of::<libc::sockaddr_storage>()).unwrap_or(0);
            header.msg_iov = &raw mut self.iovecs[index];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            self.headers[index].msg_len = 0;
        }
        // SAFETY: BATCH valid headers pointing into buffers we own; MSG_WAITFORONE blocks
        // (with the socket's timeout) for the first datagram only.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                u32::try_from(BATCH).unwrap_or(1),
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(received).map_err(|_| io::Error::last_os_error())
    }

    /// The first `count` datagrams of the last `receive`, with their senders.
    fn datagrams(&self, count: usize) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        (0..count.min(BATCH)).filter_map(move |index| {
            let len = (self.headers[index].msg_len as usize).min(MAX_DATAGRAM_LEN);
            let start = index * MAX_DATAGRAM_LEN;
            let datagram = self.buffers.get(start..start + len)?;
            Some((datagram, socket_address(&self.addresses[index])?))
        })
    }
}

/// The sender address `recvmmsg` filled in.
fn socket_address(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let sin = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let sin6 = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

/// Raises SO_RCVBUF to `bytes`: past `net.core.rmem_max` when privileged, else up to it.
fn set_receive_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<()> {
    // The kernel doubles the value it is given (for its bookkeeping).
    let value = libc::c_int::try_from(bytes / 2).unwrap_or(libc::c_int::MAX);
    let value_len = libc::socklen_t::try_from(size_of::<libc::c_int>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut last_error = io::Error::from(io::ErrorKind::Unsupported);
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: our own socket; the value is a c_int of the length given.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const value).cast(),
                value_len,
            )
        };
        if result == 0 {
            return Ok(());
        }
        last_error = io::Error::last_os_error();
    }
    Err(last_error)
}
