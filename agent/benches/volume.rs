//! `cargo xtask bench volume` (root): flow records per second decoded and aggregated on one
//! core from a recorded NetFlow v9 stream, side by side with nfcapd (Debian nfdump) receiving
//! the same stream over UDP at zero loss; aggregation alone at 1M distinct sources; memory per
//! tracked source. Prints a Markdown report for docs/BENCHMARKS.md.
//!
//! - **Recorded stream**: [`generate`] (seeded) writes NetFlow v9 datagrams the way an exporter
//!   sends them: the IPv4 and IPv6 template datagrams first and again every
//!   [`TEMPLATE_EVERY`] data datagrams, data datagrams of at most [`DATAGRAM_LEN`] bytes, one
//!   in eight of them IPv6. Sources come from pools of 90,000 IPv4 and 10,000 IPv6 addresses
//!   (random public-looking /24s and /64s with 1-8 hosts each) drawn Zipf-like (s = 1). The
//!   file lives at `target/bench-data/netflow-v9-volume.bin` and is reused while its header
//!   matches the parameters; `cargo bench -p xdpguard --bench volume -- --generate` only
//!   writes it. Format: the 8 bytes `XDPGNF9\n`, [`HEADER_WORDS`] little-endian u64 (format,
//!   seed, then the stream's totals), then per datagram a big-endian u16 length and the bytes.
//!   Addresses inside it are only numbers: on the wire they are UDP payload between the
//!   sandbox's documentation addresses.
//! - **In process**: the datagrams from memory through [`FlowDecoder`] and into [`Volumes`]
//!   exactly as the collector thread and the engine's sink do (decode per datagram into a
//!   record buffer, lock the shared volumes, add each record at its flow rate), on one pinned
//!   thread; decode
//!   alone and aggregation alone next to it; median of [`PASSES`] interleaved passes; then the
//!   heavy-hitter pass over the result.
//! - **Over UDP**: the same datagrams from the sandbox's attacker namespace (198.51.100.2) to
//!   198.51.100.1 in the firewall namespace, paced at a fixed records/s target, received by
//!   nfcapd (its own run) and by xdpguard's `FlowCollector` adding into `Volumes` (its own
//!   run). CPU: nfcapd's whole process (utime + stime from `/proc/PID/stat`), xdpguard's
//!   collector thread (`/proc/self/task/TID/stat`; it receives, decodes and aggregates).
//!   Zero loss: every datagram was read (UDP `InDatagrams` of the namespace, socket drops 0)
//!   and the receiver counted every record, packet and byte sent (nfdump's summary of nfcapd's
//!   files; the decoder's record counter and the volumes' totals). A third run per round is a
//!   bare `recv_from` loop with the collector's socket settings that only counts datagrams:
//!   what receiving alone costs. [`UDP_ROUNDS`] rounds at the first rate of [`RATES`] where
//!   nothing is lost (a rate that loses anything is lowered and the rounds start again); then
//!   a ramp, each flow receiver alone at the rising rates of [`RAMP`] until it loses.
//! - **Aggregation alone**: 1M distinct random IPv4 and 1M IPv6 sources into `Volumes`, one add
//!   each then three more each in random order; the heavy-hitter pass; heap per source.
use std::{
    collections::HashSet,
    fmt::Write as _,
    io::{BufReader, BufWriter, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};
use xdpguard::{
    detect::traffic::flow::{
        CollectorSettings, DecoderSettings, FlowCollector, FlowDecoder, FlowRecord,
    },
    detect::traffic::volume::{Lengths, Limit, TrackConfig, VolumeLimits, Volumes},
};
use xdpguard_testkit::{
    encode::{self, AddressFamily, V9Flow, V9Header, V9Template},
    netns::{ATK_V4, FW_V4, Sandbox, Side},
    report::{load_average, machine, median, thousands},
};

const SEED: u64 = 0x0f10_5eed;
/// Flow records in the recorded stream.
const RECORDS: u64 = 5_000_000;
const POOL_V4: usize = 90_000;
const POOL_V6: usize = 10_000;
const ZIPF_S: f64 = 1.0;
/// Largest datagram, as exporters keep under a 1,500-byte MTU.
const DATAGRAM_LEN: usize = 1_400;
/// Data datagrams between template refreshes.
const TEMPLATE_EVERY: u64 = 100;
/// One data datagram in this many is IPv6.
const V6_EVERY: u32 = 8;
const V4_TEMPLATE: V9Template = V9Template {
    template_id: 256,
    family: AddressFamily::V4,
    wide_counters: false,
};
const V6_TEMPLATE: V9Template = V9Template {
    template_id: 257,
    family: AddressFamily::V6,
    wide_counters: false,
};
const MAGIC: &[u8; 8] = b"XDPGNF9\n";
const FORMAT: u64 = 1;
/// Format, seed, then the nine totals of [`StreamTotals`].
const HEADER_WORDS: usize = 11;
/// Exporter clock of the first datagram; each datagram is one millisecond later.
const START_UNIX: u32 = 1_750_000_000;
const START_UPTIME_MS: u32 = 3_600_000;

/// In-process passes per measurement (interleaved); the median is reported.
const PASSES: usize = 5;
/// Distinct sources per family for aggregation alone.
const DISTINCT: usize = 1_000_000;
/// Adds per source after the first, in random order.
const MORE_ADDS: usize = 3;
/// Heavy-hitter passes; the median is reported.
const HEAVY_PASSES: usize = 5;
/// The counting interval the heavy-hitter pass divides by.
const INTERVAL: Duration = Duration::from_secs(60);

/// Records/s targets of the UDP replay, tried from the first down until both receivers lose
/// nothing in [`UDP_ROUNDS`] rounds.
const RATES: [u64; 3] = [1_000_000, 500_000, 250_000];
/// Records/s targets of the ramp: each flow receiver alone, rising until it loses.
const RAMP: [u64; 8] = [
    1_000_000, 1_500_000, 2_000_000, 2_500_000, 3_000_000, 4_000_000, 6_000_000, 8_000_000,
];
const UDP_ROUNDS: usize = 5;
const NFCAPD_PORT: u16 = 9995;
const COLLECTOR_PORT: u16 = 9996;
const FLOOR_PORT: u16 = 9997;
/// Socket receive buffer asked of both receivers (nfcapd `-B`; the collector's setting).
const RCVBUF: usize = 8 << 20;
/// No send loop runs longer than this.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a receiver may take to read what is queued after the last datagram.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

const TARGET_RECORDS_PER_SEC: f64 = 1e6;
const TARGET_RATIO: f64 = 2.0;
const TARGET_BYTES_PER_SOURCE: f64 = 64.0;

/// What the recorded stream holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StreamTotals {
    records: u64,
    packets: u64,
    bytes: u64,
    data_datagrams: u64,
    template_datagrams: u64,
    v4_records: u64,
    v6_records: u64,
    /// Distinct sources that occur in the stream.
    distinct_v4: u64,
    distinct_v6: u64,
}

impl StreamTotals {
    const fn words(&self) -> [u64; 9] {
        [
            self.records,
            self.packets,
            self.bytes,
            self.data_datagrams,
            self.template_datagrams,
            self.v4_records,
            self.v6_records,
            self.distinct_v4,
            self.distinct_v6,
        ]
    }

    const fn from_words(w: [u64; 9]) -> Self {
        Self {
            records: w[0],
            packets: w[1],
            bytes: w[2],
            data_datagrams: w[3],
            template_datagrams: w[4],
            v4_records: w[5],
            v6_records: w[6],
            distinct_v4: w[7],
            distinct_v6: w[8],
        }
    }

    fn datagrams(&self) -> u64 {
        self.data_datagrams + self.template_datagrams
    }
}

/// The recorded stream in memory.
struct Stream {
    datagrams: Vec<Vec<u8>>,
    /// Flow records per datagram (0 for template datagrams), for pacing.
    records_in: Vec<u64>,
    totals: StreamTotals,
    file_bytes: u64,
    fnv: u64,
    /// Seconds spent generating it, `None` when the file was reused.
    generated_secs: Option<f64>,
}

/// Ranks 0..n drawn with probability proportional to 1 / (rank + 1)^s.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for value in &mut cdf {
            *value /= acc;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// `n` distinct IPv4 sources in random /24s of 1.0.0.0-223.255.255.255, 1-8 hosts per /24,
/// in random order (rank order is not address order).
fn pool_v4(rng: &mut StdRng, n: usize) -> Vec<IpAddr> {
    let mut seen = HashSet::with_capacity(n);
    let mut pool = Vec::with_capacity(n);
    while pool.len() < n {
        let net = rng.random_range(0x0001_0000_u32..0x00e0_0000) << 8;
        for _ in 0..rng.random_range(1..=8) {
            let addr = net | rng.random_range(1..255);
            if pool.len() < n && seen.insert(addr) {
                pool.push(IpAddr::V4(Ipv4Addr::from(addr)));
            }
        }
    }
    pool.shuffle(rng);
    pool
}

/// `n` distinct IPv6 sources in random /64s of 2000::/3, 1-4 hosts per /64, in random order.
fn pool_v6(rng: &mut StdRng, n: usize) -> Vec<IpAddr> {
    let mut seen = HashSet::with_capacity(n);
    let mut pool = Vec::with_capacity(n);
    while pool.len() < n {
        let upper = (1_u64 << 61) | (rng.random::<u64>() >> 3);
        for _ in 0..rng.random_range(1..=4) {
            let addr = (u128::from(upper) << 64) | u128::from(rng.random::<u64>());
            if pool.len() < n && seen.insert(addr) {
                pool.push(IpAddr::V6(Ipv6Addr::from(addr)));
            }
        }
    }
    pool.shuffle(rng);
    pool
}

/// One flow of `source`, ending shortly before `uptime_ms`: mostly TCP, some UDP and ICMP;
/// most flows a few packets, a few of them large.
fn flow(rng: &mut StdRng, source: IpAddr, uptime_ms: u32) -> V9Flow {
    let destination = match source {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 51, 100, rng.random_range(1..=254))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xf,
            0,
            0,
            0,
            0,
            rng.random_range(1..=0xff),
        )),
    };
    let packets: u64 = match rng.random_range(0..100) {
        0..60 => rng.random_range(1..=3),
        60..90 => rng.random_range(4..=50),
        90..99 => rng.random_range(51..=2_000),
        _ => rng.random_range(2_001..=100_000),
    };
    let bytes = packets * rng.random_range(40..=1_500_u64);
    let protocol = match rng.random_range(0..20) {
        0..14 => 6,
        14..19 => 17,
        _ => 1,
    };
    let (source_port, destination_port) = if protocol == 1 {
        (0, 0x0800)
    } else {
        const SERVICES: [u16; 7] = [443, 80, 53, 22, 25, 123, 8080];
        (
            rng.random_range(1024..=65_535),
            SERVICES[rng.random_range(0..SERVICES.len())],
        )
    };
    let last_switched_ms = uptime_ms.saturating_sub(rng.random_range(0..1_000));
    V9Flow {
        source,
        destination,
        bytes,
        packets,
        source_port,
        destination_port,
        protocol,
        first_switched_ms: last_switched_ms.saturating_sub(rng.random_range(0..60_000)),
        last_switched_ms,
        input_interface: rng.random_range(1..=4),
        direction: 0,
    }
}

/// Flow records in a datagram of the generated stream (0 for a template datagram).
fn records_in(datagram: &[u8]) -> u64 {
    let is_template = datagram.get(20..22) == Some(&[0, 0][..]);
    match datagram.get(2..4) {
        Some(&[high, low]) if !is_template => u64::from(u16::from_be_bytes([high, low])),
        _ => 0,
    }
}

/// The header of datagram `index`: one millisecond per datagram, sequence counting every
/// export packet.
fn header(sequence: &mut u32, index: usize) -> V9Header {
    let ms = u32::try_from(index).expect("datagram count fits u32");
    let header = V9Header {
        source_id: 0,
        sys_uptime_ms: START_UPTIME_MS + ms,
        unix_secs: START_UNIX + ms / 1_000,
        sequence: *sequence,
    };
    *sequence = sequence.wrapping_add(1);
    header
}

/// The seeded stream as datagrams, and what it holds.
fn generate_datagrams() -> (Vec<Vec<u8>>, StreamTotals) {
    let mut rng = StdRng::seed_from_u64(SEED);
    let pools = [pool_v4(&mut rng, POOL_V4), pool_v6(&mut rng, POOL_V6)];
    let zipfs = [Zipf::new(POOL_V4, ZIPF_S), Zipf::new(POOL_V6, ZIPF_S)];
    let mut used = [vec![false; POOL_V4], vec![false; POOL_V6]];
    let mut totals = StreamTotals::default();
    let mut datagrams = Vec::new();
    let mut buffer = Vec::with_capacity(DATAGRAM_LEN);
    let mut flows = Vec::with_capacity(64);
    let mut sequence = 0_u32;
    while totals.records < RECORDS {
        if totals.data_datagrams.is_multiple_of(TEMPLATE_EVERY) {
            for template in [V4_TEMPLATE, V6_TEMPLATE] {
                encode::v9_template(
                    header(&mut sequence, datagrams.len()),
                    template,
                    &mut buffer,
                );
                datagrams.push(buffer.clone());
                totals.template_datagrams += 1;
            }
        }
        let family = usize::from(rng.random_range(0..V6_EVERY) == 0);
        let template = [V4_TEMPLATE, V6_TEMPLATE][family];
        let per_datagram = template.records_per_datagram(DATAGRAM_LEN) as u64;
        let count = per_datagram.min(RECORDS - totals.records);
        let head = header(&mut sequence, datagrams.len());
        flows.clear();
        for _ in 0..count {
            let rank = zipfs[family].sample(&mut rng);
            used[family][rank] = true;
            let flow = flow(&mut rng, pools[family][rank], head.sys_uptime_ms);
            totals.packets += flow.packets;
            totals.bytes += flow.bytes;
            flows.push(flow);
        }
        let written = encode::v9_data(head, template, &flows, &mut buffer);
        assert_eq!(written as u64, count, "records per datagram");
        datagrams.push(buffer.clone());
        totals.data_datagrams += 1;
        totals.records += count;
        if family == 0 {
            totals.v4_records += count;
        } else {
            totals.v6_records += count;
        }
    }
    let distinct = |used: &[bool]| used.iter().filter(|&&u| u).count() as u64;
    totals.distinct_v4 = distinct(&used[0]);
    totals.distinct_v6 = distinct(&used[1]);
    (datagrams, totals)
}

/// Generate the stream and write it to `path`.
fn generate(path: &Path) -> StreamTotals {
    let (datagrams, totals) = generate_datagrams();
    std::fs::create_dir_all(path.parent().expect("a file under a directory")).unwrap();
    let partial = path.with_extension("partial");
    let mut out = BufWriter::new(std::fs::File::create(&partial).unwrap());
    out.write_all(MAGIC).unwrap();
    for word in [FORMAT, SEED].into_iter().chain(totals.words()) {
        out.write_all(&word.to_le_bytes()).unwrap();
    }
    for datagram in &datagrams {
        let len = u16::try_from(datagram.len()).expect("a datagram under 64 KiB");
        out.write_all(&len.to_be_bytes()).unwrap();
        out.write_all(datagram).unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
    std::fs::rename(&partial, path).unwrap();
    totals
}

/// FNV-1a over the file's bytes: the same parameters give the same digest.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Read the recorded stream; `None` when it is missing or was made with other parameters.
fn read_stream(path: &Path) -> Option<Stream> {
    let mut bytes = Vec::new();
    let _ = BufReader::new(std::fs::File::open(path).ok()?)
        .read_to_end(&mut bytes)
        .ok()?;
    let (magic, rest) = bytes.split_at_checked(MAGIC.len())?;
    if magic != MAGIC {
        return None;
    }
    let (header, mut body) = rest.split_at_checked(HEADER_WORDS * 8)?;
    let words: Vec<u64> = header
        .chunks_exact(8)
        .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8 bytes")))
        .collect();
    if words[0] != FORMAT || words[1] != SEED || words[2] != RECORDS {
        return None;
    }
    let totals = StreamTotals::from_words(words[2..].try_into().expect("nine totals"));
    let mut datagrams = Vec::with_capacity(usize::try_from(totals.datagrams()).ok()?);
    while let Some((len, rest)) = body.split_at_checked(2) {
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (datagram, rest) = rest.split_at_checked(len)?;
        datagrams.push(datagram.to_vec());
        body = rest;
    }
    if datagrams.len() as u64 != totals.datagrams() {
        return None;
    }
    let records_in: Vec<u64> = datagrams.iter().map(|d| records_in(d)).collect();
    if records_in.iter().sum::<u64>() != totals.records {
        return None;
    }
    Some(Stream {
        datagrams,
        records_in,
        totals,
        file_bytes: bytes.len() as u64,
        fnv: fnv1a(&bytes),
        generated_secs: None,
    })
}

fn stream_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            let agent = Path::new(env!("CARGO_MANIFEST_DIR"));
            agent.parent().unwrap_or(agent).join("target")
        },
        PathBuf::from,
    );
    target.join("bench-data/netflow-v9-volume.bin")
}

fn load_or_generate(path: &Path) -> Stream {
    if let Some(stream) = read_stream(path) {
        return stream;
    }
    let started = Instant::now();
    let totals = generate(path);
    let secs = started.elapsed().as_secs_f64();
    let stream = read_stream(path).expect("the stream just written reads back");
    assert_eq!(stream.totals, totals);
    Stream {
        generated_secs: Some(secs),
        ..stream
    }
}

// ---------------------------------------------------------------------------------------------
// In process.

/// The exporter address the in-process passes attribute the stream to.
fn exporter() -> SocketAddr {
    SocketAddr::new(ATK_V4.parse().unwrap(), 2055)
}

/// Pin the calling thread to the CPU it runs on; returns that CPU.
fn pin_to_current_cpu() -> usize {
    // SAFETY: plain syscalls on this thread; the set is a zeroed plain-data struct.
    unsafe {
        let cpu = usize::try_from(libc::sched_getcpu()).expect("sched_getcpu");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
        assert_eq!(rc, 0, "sched_setaffinity");
        cpu
    }
}

/// Decode every datagram, hand each datagram's records to the sink as the collector thread
/// does, and add them into shared volumes as the engine's sink does.
fn decode_aggregate(stream: &Stream) -> (Duration, FlowDecoder, Volumes) {
    let exporter = exporter();
    let mut decoder = FlowDecoder::new(DecoderSettings::default());
    let volumes = Arc::new(Mutex::new(Volumes::new(TrackConfig::default()).unwrap()));
    let sink_volumes = Arc::clone(&volumes);
    let sink = move |records: &[FlowRecord]| {
        sink_volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add_flows(records, INTERVAL);
    };
    let mut records = Vec::with_capacity(1024);
    let started = Instant::now();
    for datagram in &stream.datagrams {
        let now_secs = started.elapsed().as_secs();
        records.clear();
        let _ = decoder.decode(exporter, datagram, now_secs, |record| records.push(record));
        if !records.is_empty() {
            sink(&records);
        }
    }
    let elapsed = started.elapsed();
    drop(sink);
    let volumes = Arc::into_inner(volumes)
        .expect("the sink is gone")
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    (elapsed, decoder, volumes)
}

/// Decode only: the records go to a buffer that is dropped per datagram.
fn decode_only(stream: &Stream) -> (Duration, u64) {
    let exporter = exporter();
    let mut decoder = FlowDecoder::new(DecoderSettings::default());
    let mut records: Vec<FlowRecord> = Vec::with_capacity(1024);
    let mut count = 0_u64;
    let started = Instant::now();
    for datagram in &stream.datagrams {
        let now_secs = started.elapsed().as_secs();
        records.clear();
        let _ = decoder.decode(exporter, datagram, now_secs, |record| records.push(record));
        count += std::hint::black_box(&records).len() as u64;
    }
    (started.elapsed(), count)
}

/// Aggregation only: the already decoded records of each datagram added under the lock.
fn aggregate_only(decoded: &[Vec<FlowRecord>]) -> (Duration, Volumes) {
    let volumes = Mutex::new(Volumes::new(TrackConfig::default()).unwrap());
    let started = Instant::now();
    for records in decoded {
        volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add_flows(records, INTERVAL);
    }
    let elapsed = started.elapsed();
    (
        elapsed,
        volumes.into_inner().unwrap_or_else(PoisonError::into_inner),
    )
}

/// A policy whose limit is 0.1% of `bytes` per second of the interval.
fn policy_for(bytes: u64) -> (VolumeLimits, u64) {
    let limit = (bytes / INTERVAL.as_secs() / 1_000).max(1);
    let policy = VolumeLimits::new(Limit::bytes(limit), Lengths::V4, Lengths::V6, &[]).unwrap();
    (policy, limit)
}

/// Median time of the heavy-hitter pass over `volumes`, and the hitters it found.
fn heavy_pass(volumes: &Volumes, policy: &VolumeLimits) -> (Duration, usize) {
    let mut times = Vec::with_capacity(HEAVY_PASSES);
    let mut hitters = 0;
    for _ in 0..HEAVY_PASSES {
        let started = Instant::now();
        let report = volumes.heavy_hitters(INTERVAL, policy).unwrap();
        times.push(started.elapsed());
        hitters = std::hint::black_box(report).hitters.len();
    }
    (median(times), hitters)
}

struct InProcess {
    cpu: usize,
    decode: Duration,
    aggregate: Duration,
    both: Duration,
    all_both: Vec<Duration>,
    heavy: Duration,
    hitters: usize,
    limit_bytes_per_sec: u64,
    heap_bytes: usize,
    leaves: usize,
}

fn in_process(stream: &Stream) -> InProcess {
    let totals = stream.totals;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let cpu = pin_to_current_cpu();
                // The decoded records, for aggregation alone.
                let exporter = exporter();
                let mut decoder = FlowDecoder::new(DecoderSettings::default());
                let decoded: Vec<Vec<FlowRecord>> = stream
                    .datagrams
                    .iter()
                    .map(|datagram| {
                        let mut records = Vec::new();
                        let _ = decoder.decode(exporter, datagram, 0, |r| records.push(r));
                        records
                    })
                    .collect();
                drop(decoder);
                let (mut decode, mut aggregate, mut both) = (vec![], vec![], vec![]);
                let mut last = None;
                for _ in 0..PASSES {
                    let (elapsed, count) = decode_only(stream);
                    assert_eq!(count, totals.records, "decode only");
                    decode.push(elapsed);
                    let (elapsed, volumes) = aggregate_only(&decoded);
                    assert_eq!(volumes.v4.leaves() as u64, totals.distinct_v4);
                    aggregate.push(elapsed);
                    drop(volumes);
                    let (elapsed, decoder, volumes) = decode_aggregate(stream);
                    both.push(elapsed);
                    last = Some((decoder, volumes));
                }
                let (decoder, volumes) = last.expect("at least one pass");
                check_decoded(&decoder, &volumes, &totals);
                let (policy, limit_bytes_per_sec) = policy_for(totals.bytes);
                let (heavy, hitters) = heavy_pass(&volumes, &policy);
                let all_both = both.clone();
                InProcess {
                    cpu,
                    decode: median(decode),
                    aggregate: median(aggregate),
                    both: median(both),
                    all_both,
                    heavy,
                    hitters,
                    limit_bytes_per_sec,
                    heap_bytes: volumes.heap_bytes(),
                    leaves: volumes.v4.leaves() + volumes.v6.leaves(),
                }
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The decoder saw every record without error and the volumes hold every packet and byte.
fn check_decoded(decoder: &FlowDecoder, volumes: &Volumes, totals: &StreamTotals) {
    let (records, errors) = decoder
        .exporter_stats()
        .fold((0, 0), |(records, errors), (_, stats)| {
            (records + stats.records, errors + stats.errors.total())
        });
    assert_eq!((records, errors), (totals.records, 0), "decoder counters");
    let (packets, bytes) = volume_totals(volumes);
    assert_eq!((packets, bytes), (totals.packets, totals.bytes), "volumes");
    assert_eq!(
        (volumes.v4.leaves() as u64, volumes.v6.leaves() as u64),
        (totals.distinct_v4, totals.distinct_v6),
        "distinct sources"
    );
}

/// Packets and bytes counted by both families, tracked or over the bound.
fn volume_totals(volumes: &Volumes) -> (u64, u64) {
    let parts = [
        volumes.v4.total(),
        volumes.v4.overflow(),
        volumes.v6.total(),
        volumes.v6.overflow(),
    ];
    (
        parts.iter().map(|v| v.packets).sum(),
        parts.iter().map(|v| v.bytes).sum(),
    )
}

// ---------------------------------------------------------------------------------------------
// Aggregation alone at 1M distinct sources.

struct Distinct {
    family: &'static str,
    sources: usize,
    insert: Duration,
    more: Duration,
    heavy: Duration,
    hitters: usize,
    heap_bytes: usize,
}

impl Distinct {
    fn adds(&self) -> usize {
        self.sources * (1 + MORE_ADDS)
    }

    fn bytes_per_source(&self) -> f64 {
        self.heap_bytes as f64 / self.sources as f64
    }
}

fn distinct(rng: &mut StdRng, v6: bool) -> Distinct {
    let mut seen = HashSet::with_capacity(DISTINCT);
    let mut sources: Vec<IpAddr> = Vec::with_capacity(DISTINCT);
    while sources.len() < DISTINCT {
        let addr = if v6 {
            IpAddr::V6(Ipv6Addr::from((0b001 << 125) | (rng.random::<u128>() >> 3)))
        } else {
            IpAddr::V4(Ipv4Addr::from(
                rng.random_range(0x0100_0000_u32..0xe000_0000),
            ))
        };
        if seen.insert(addr) {
            sources.push(addr);
        }
    }
    drop(seen);
    let mut more: Vec<IpAddr> = sources
        .iter()
        .flat_map(|&addr| std::iter::repeat_n(addr, MORE_ADDS))
        .collect();
    more.shuffle(rng);
    let size = |i: usize| (64 + (i % 1_437) as u64, 1 + (i % 3) as u64);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _ = pin_to_current_cpu();
                let mut volumes = Volumes::new(TrackConfig::default()).unwrap();
                let started = Instant::now();
                for (i, &addr) in sources.iter().enumerate() {
                    let (bytes, packets) = size(i);
                    volumes.add(addr, bytes, packets);
                }
                let insert = started.elapsed();
                let started = Instant::now();
                for (i, &addr) in more.iter().enumerate() {
                    let (bytes, packets) = size(i);
                    volumes.add(addr, bytes, packets);
                }
                let more = started.elapsed();
                let trie_leaves = if v6 {
                    volumes.v6.leaves()
                } else {
                    volumes.v4.leaves()
                };
                assert_eq!(trie_leaves, DISTINCT, "every source tracked");
                let (_, bytes) = volume_totals(&volumes);
                let (policy, _) = policy_for(bytes);
                let (heavy, hitters) = heavy_pass(&volumes, &policy);
                Distinct {
                    family: if v6 { "IPv6" } else { "IPv4" },
                    sources: trie_leaves,
                    insert,
                    more,
                    heavy,
                    hitters,
                    heap_bytes: if v6 {
                        volumes.v6.heap_bytes()
                    } else {
                        volumes.v4.heap_bytes()
                    },
                }
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

// ---------------------------------------------------------------------------------------------
// Over UDP in the sandbox.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receiver {
    Nfcapd,
    Xdpguard,
    /// A bare `recv_from` loop that discards: what receiving alone costs.
    Floor,
}

impl Receiver {
    const fn name(self) -> &'static str {
        match self {
            Self::Nfcapd => "nfcapd",
            Self::Xdpguard => "xdpguard collector",
            Self::Floor => "recv only (floor)",
        }
    }
}

/// What a receiver counted: (records, packets, bytes).
type Counted = (u64, u64, u64);

struct UdpRun {
    receiver: Receiver,
    rate: u64,
    sent: u64,
    send_secs: f64,
    /// Datagrams the receiver read (UDP `InDatagrams` of the firewall namespace).
    read: u64,
    /// Socket drops plus the namespace's `RcvbufErrors`.
    drops: u64,
    /// `None` for the floor, which only counts datagrams.
    counted: Option<Counted>,
    cpu_secs: f64,
    rcvbuf: Option<u64>,
}

impl UdpRun {
    fn lossless(&self, totals: &StreamTotals) -> bool {
        self.drops == 0
            && self.read == self.sent
            && self.sent == totals.datagrams()
            && self
                .counted
                .is_none_or(|counted| counted == (totals.records, totals.packets, totals.bytes))
    }

    /// Records carried by the datagrams read, per CPU-second of the receiver.
    fn records_per_cpu_sec(&self, totals: &StreamTotals) -> f64 {
        let records = self
            .counted
            .map_or(totals.records, |(records, _, _)| records);
        records as f64 / self.cpu_secs
    }

    /// The sender kept up with the target rate (within 5%).
    fn rate_reached(&self, totals: &StreamTotals) -> bool {
        self.send_secs <= 1.05 * totals.records as f64 / self.rate as f64
    }
}

/// The namespace's UDP counters: (InDatagrams, RcvbufErrors).
fn udp_counters(sandbox: &Sandbox) -> (u64, u64) {
    let text = sandbox.within(Side::Firewall, || {
        std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap()
    });
    let mut udp = text.lines().filter(|line| line.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let value = |name: &str| -> u64 {
        let at = names
            .split_whitespace()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no {name} in {names}"));
        values.split_whitespace().nth(at).unwrap().parse().unwrap()
    };
    (value("InDatagrams"), value("RcvbufErrors"))
}

/// The receive queue (bytes) and drop count of the UDP socket bound to `port` in the
/// firewall namespace, if any.
fn udp_socket(sandbox: &Sandbox, port: u16) -> Option<(u64, u64)> {
    let text = sandbox.within(Side::Firewall, || {
        std::fs::read_to_string("/proc/thread-self/net/udp").unwrap()
    });
    let port = format!(":{port:04X}");
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.get(1)?.ends_with(&port) {
            return None;
        }
        let rx_queue = u64::from_str_radix(fields.get(4)?.split(':').nth(1)?, 16).ok()?;
        let drops = fields.last()?.parse().ok()?;
        Some((rx_queue, drops))
    })
}

/// The socket's receive buffer as the kernel set it (`ss` skmem `rb`).
fn effective_rcvbuf(sandbox: &Sandbox, port: u16) -> Option<u64> {
    let out = sandbox.exec(
        Side::Firewall,
        &["ss", "-uamnH", "sport", &format!("= :{port}")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find(",rb")? + 3;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// SO_RCVBUF as the collector sets it: past `net.core.rmem_max` with SO_RCVBUFFORCE.
fn force_rcvbuf(socket: &UdpSocket, bytes: usize) {
    // The kernel doubles the value it is given.
    let value = libc::c_int::try_from(bytes / 2).unwrap();
    // SAFETY: our own socket; the value is a c_int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const value).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap(),
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks > 0, "_SC_CLK_TCK");
    ticks as f64
}

/// utime + stime in seconds from a `/proc/.../stat` file.
fn cpu_secs(stat_path: &str) -> f64 {
    let text = std::fs::read_to_string(stat_path).unwrap_or_else(|e| panic!("{stat_path}: {e}"));
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = &text[text.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / clock_ticks_per_sec()
}

/// Send the whole stream from the attacker side to `port` on the firewall side, paced at
/// `rate` records per second. Bounded in count (one pass) and time. Returns datagrams sent
/// and the seconds it took.
fn send_paced(sandbox: &Sandbox, stream: &Stream, port: u16, rate: u64) -> (u64, f64) {
    sandbox.within(Side::Attacker, || {
        let socket = UdpSocket::bind((ATK_V4, 0)).unwrap();
        socket.connect((FW_V4, port)).unwrap();
        let started = Instant::now();
        let deadline = started + SEND_TIMEOUT;
        let mut records_before = 0_u64;
        let mut sent = 0_u64;
        for (datagram, &records) in stream.datagrams.iter().zip(&stream.records_in) {
            let due = started + Duration::from_secs_f64(records_before as f64 / rate as f64);
            let now = Instant::now();
            assert!(now < deadline, "sending took over {SEND_TIMEOUT:?}");
            if due > now {
                std::thread::sleep(due - now);
            }
            let written = socket
                .send(datagram)
                .unwrap_or_else(|e| panic!("send: {e}"));
            assert_eq!(written, datagram.len());
            sent += 1;
            records_before += records;
        }
        (sent, started.elapsed().as_secs_f64())
    })
}

/// Wait (bounded) until a socket is bound to `port` in the firewall namespace.
fn wait_bound(sandbox: &Sandbox, port: u16, alive: &mut dyn FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while udp_socket(sandbox, port).is_none() {
        assert!(alive(), "the receiver exited before binding port {port}");
        assert!(Instant::now() < deadline, "nothing bound port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One replay of the stream to a bound receiver on `port`, whose CPU time `stat` holds.
#[derive(Clone, Copy)]
struct Replay {
    sent: u64,
    send_secs: f64,
    read: u64,
    drops: u64,
    cpu_secs: f64,
    rcvbuf: Option<u64>,
}

fn replay(sandbox: &Sandbox, stream: &Stream, port: u16, rate: u64, stat: &str) -> Replay {
    let rcvbuf = effective_rcvbuf(sandbox, port);
    let (in_before, errors_before) = udp_counters(sandbox);
    let drops_before = udp_socket(sandbox, port).map_or(0, |(_, drops)| drops);
    let cpu_before = cpu_secs(stat);
    let (sent, send_secs) = send_paced(sandbox, stream, port, rate);
    // Until every datagram was read or dropped and the queue is empty (bounded).
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let (read, drops) = loop {
        let (in_datagrams, rcvbuf_errors) = udp_counters(sandbox);
        let (queue, socket_drops) = udp_socket(sandbox, port).unwrap_or((0, drops_before));
        let read = in_datagrams - in_before;
        let drops = (rcvbuf_errors - errors_before) + (socket_drops - drops_before);
        if (read + drops >= sent && queue == 0) || Instant::now() > deadline {
            break (read, drops);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The last datagram read is still being processed.
    std::thread::sleep(Duration::from_millis(100));
    Replay {
        sent,
        send_secs,
        read,
        drops,
        cpu_secs: cpu_secs(stat) - cpu_before,
        rcvbuf,
    }
}

impl UdpRun {
    fn of(receiver: Receiver, rate: u64, replay: Replay, counted: Option<Counted>) -> Self {
        Self {
            receiver,
            rate,
            sent: replay.sent,
            send_secs: replay.send_secs,
            read: replay.read,
            drops: replay.drops,
            counted,
            cpu_secs: replay.cpu_secs,
            rcvbuf: replay.rcvbuf,
        }
    }
}

/// nfcapd, killed on every path.
struct Nfcapd(Option<Child>);

impl Nfcapd {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    fn alive(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// SIGTERM (nfcapd closes its file), wait at most 20 s.
    fn stop(mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        // SAFETY: signalling our own child, not yet reaped.
        let _ = unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nfcapd did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// nfdump's summary of every file under `dir`: (flows, packets, bytes).
fn nfdump_summary(dir: &Path) -> Counted {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .arg("-I")
        .output()
        .expect("nfdump (Debian package nfdump)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nfdump -I: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in nfdump -I: {text}"))
    };
    (field("Flows:"), field("Packets:"), field("Bytes:"))
}

fn run_nfcapd(sandbox: &Sandbox, stream: &Stream, rate: u64, work: &Path) -> UdpRun {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let dir = work.join(format!("nfcapd-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    let mut nfcapd = Nfcapd(Some(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", sandbox.fw))
            .args(["nfcapd", "-b", FW_V4, "-p", &NFCAPD_PORT.to_string(), "-w"])
            .arg(&flows)
            .args(["-t", "3600", "-B", &RCVBUF.to_string(), "-P"])
            .arg(dir.join("nfcapd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("nfcapd.err")).unwrap())
            .spawn()
            .expect("nfcapd (Debian package nfdump)"),
    ));
    wait_bound(sandbox, NFCAPD_PORT, &mut || nfcapd.alive());
    // nsenter execs nfcapd in place: the child is nfcapd; its stat covers all its threads.
    let stat = format!("/proc/{}/stat", nfcapd.pid());
    let replay = replay(sandbox, stream, NFCAPD_PORT, rate, &stat);
    nfcapd.stop();
    let counted = nfdump_summary(&flows);
    let _ = std::fs::remove_dir_all(&dir);
    UdpRun::of(Receiver::Nfcapd, rate, replay, Some(counted))
}

/// The thread id of the (one) running thread called `name` in this process.
fn thread_id(name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for entry in std::fs::read_dir("/proc/self/task").unwrap() {
            let path = entry.unwrap().path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.trim_end() == name {
                return path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no {name} thread");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run_collector(sandbox: &Sandbox, stream: &Stream, rate: u64) -> UdpRun {
    let volumes = Arc::new(Mutex::new(Volumes::new(TrackConfig::default()).unwrap()));
    let sink_volumes = Arc::clone(&volumes);
    let mut settings =
        CollectorSettings::new(SocketAddr::new(FW_V4.parse().unwrap(), COLLECTOR_PORT));
    settings.receive_buffer_bytes = RCVBUF;
    // As a configuration that may block on flows must: only the sender is an exporter.
    settings.exporters = vec![format!("{ATK_V4}/32").parse().unwrap()];
    // The engine's sink (FlowSide): lock the shared volumes, add each record.
    let collector = sandbox.within(Side::Firewall, || {
        FlowCollector::start(
            settings,
            Box::new(move |records| {
                sink_volumes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .add_flows(records, INTERVAL);
            }),
        )
        .unwrap_or_else(|err| panic!("{}", xdpguard::error_chain(&err)))
    });
    let stat = format!("/proc/self/task/{}/stat", thread_id("flow-collector"));
    wait_bound(sandbox, COLLECTOR_PORT, &mut || true);
    let replay = replay(sandbox, stream, COLLECTOR_PORT, rate, &stat);
    // The statistics are published once the socket has been quiet for a read timeout.
    let stats = collector.stats();
    let counted = || {
        stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|s| s.records)
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while counted() < stream.totals.records && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    collector.stop();
    let records = counted();
    let (packets, bytes) = volume_totals(&volumes.lock().unwrap_or_else(PoisonError::into_inner));
    UdpRun::of(
        Receiver::Xdpguard,
        rate,
        replay,
        Some((records, packets, bytes)),
    )
}

/// The floor's receive thread; stopped and joined on drop.
struct FloorThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl FloorThread {
    /// Stop the thread; the datagrams it received.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |thread| thread.join().unwrap())
    }
}

impl Drop for FloorThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A bare receive loop with the collector's socket settings (buffer, 200 ms read timeout,
/// one `recv_from` per datagram into a 64 KiB buffer) that only counts datagrams.
fn run_floor(sandbox: &Sandbox, stream: &Stream, rate: u64) -> UdpRun {
    let socket = sandbox.within(Side::Firewall, || {
        UdpSocket::bind((FW_V4, FLOOR_PORT)).unwrap()
    });
    force_rcvbuf(&socket, RCVBUF);
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let floor = FloorThread {
        stop,
        thread: Some(
            std::thread::Builder::new()
                .name("recv-floor".into())
                .spawn(move || {
                    let mut buffer = vec![0; 65_535];
                    let mut datagrams = 0_u64;
                    while !thread_stop.load(Ordering::Relaxed) {
                        if socket.recv_from(&mut buffer).is_ok() {
                            datagrams += 1;
                        }
                    }
                    datagrams
                })
                .unwrap(),
        ),
    };
    let stat = format!("/proc/self/task/{}/stat", thread_id("recv-floor"));
    let replay = replay(sandbox, stream, FLOOR_PORT, rate, &stat);
    let received = floor.finish();
    let mut run = UdpRun::of(Receiver::Floor, rate, replay, None);
    run.read = run.read.min(received);
    run
}

fn run_one(
    sandbox: &Sandbox,
    stream: &Stream,
    receiver: Receiver,
    rate: u64,
    work: &Path,
) -> UdpRun {
    let run = match receiver {
        Receiver::Nfcapd => run_nfcapd(sandbox, stream, rate, work),
        Receiver::Xdpguard => run_collector(sandbox, stream, rate),
        Receiver::Floor => run_floor(sandbox, stream, rate),
    };
    eprintln!(
        "bench: {} at {rate} records/s: sent in {:.2} s, read {}/{} datagrams, {:?} counted, {:.2} CPU s{}",
        receiver.name(),
        run.send_secs,
        run.read,
        run.sent,
        run.counted,
        run.cpu_secs,
        if run.lossless(&stream.totals) {
            ""
        } else {
            " — LOSS"
        }
    );
    run
}

struct Udp {
    /// The rounds at one rate, including the rates given up.
    rounds: Vec<UdpRun>,
    /// The rate whose rounds all lost nothing, if any.
    rate: Option<u64>,
    /// Each flow receiver alone at rising rates, until it loses or the sender falls behind.
    ramp: Vec<UdpRun>,
}

fn udp_side_by_side(stream: &Stream) -> Udp {
    let sandbox = Sandbox::new("bench-volume");
    let work = std::env::temp_dir().join(format!("xdpguard-bench-volume-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let totals = &stream.totals;
    let mut rounds: Vec<UdpRun> = Vec::new();
    let mut chosen = None;
    'rates: for rate in RATES {
        for round in 0..UDP_ROUNDS {
            // Rotate who goes first, so a noisy moment does not always hit the same one.
            let mut order = [Receiver::Nfcapd, Receiver::Xdpguard, Receiver::Floor];
            order.rotate_left(round % 3);
            let mut lost = false;
            for receiver in order {
                let run = run_one(&sandbox, stream, receiver, rate, &work);
                lost |= !run.lossless(totals);
                rounds.push(run);
            }
            if lost {
                continue 'rates;
            }
        }
        chosen = Some(rate);
        break;
    }
    let mut ramp = Vec::new();
    for receiver in [Receiver::Nfcapd, Receiver::Xdpguard] {
        for rate in RAMP {
            let run = run_one(&sandbox, stream, receiver, rate, &work);
            let stop = !run.lossless(totals) || !run.rate_reached(totals);
            ramp.push(run);
            if stop {
                break;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    drop(sandbox);
    Udp {
        rounds,
        rate: chosen,
        ramp,
    }
}

/// The highest target rate `receiver` took without loss in the ramp, and whether the ramp
/// stopped there because the sender fell behind (so the receiver may do more).
fn highest_lossless(udp: &Udp, receiver: Receiver, totals: &StreamTotals) -> Option<(u64, bool)> {
    let runs: Vec<&UdpRun> = udp.ramp.iter().filter(|r| r.receiver == receiver).collect();
    let best = runs
        .iter()
        .filter(|r| r.lossless(totals) && r.rate_reached(totals))
        .map(|r| r.rate)
        .max()?;
    let last = runs.last()?;
    let sender_bound = last.lossless(totals) && !last.rate_reached(totals);
    let ramp_done = runs.len() == RAMP.len() && last.lossless(totals);
    Some((best, sender_bound || ramp_done))
}

// ---------------------------------------------------------------------------------------------
// Report.

fn thousands_f(x: f64) -> String {
    thousands(format!("{x:.0}"))
}

fn tool_version(command: &str) -> String {
    Command::new(command)
        .arg("-V")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// The UDP figures the targets use.
struct UdpSummary {
    /// Median records per CPU-second at the common rate: nfcapd, xdpguard, floor.
    theirs: Option<f64>,
    ours: Option<f64>,
    ratio: Option<f64>,
    /// Highest zero-loss rates in the ramp and their ratio.
    ramp_ratio: Option<f64>,
}

fn run_row(out: &mut String, index: usize, run: &UdpRun, totals: &StreamTotals) {
    let counted = run
        .counted
        .map_or_else(|| "—".to_owned(), |(records, _, _)| thousands(records));
    let _ = writeln!(
        out,
        "| {index} | {} | {} | {} | {} / {} | {} | {} | {} | {:.2} | {:.0}% | {:.1} | {} | {} |",
        run.receiver.name(),
        thousands(run.rate),
        thousands_f(totals.records as f64 / run.send_secs),
        thousands(run.read),
        thousands(run.sent),
        run.drops,
        counted,
        if run.lossless(totals) { "yes" } else { "NO" },
        run.cpu_secs,
        100.0 * run.cpu_secs / run.send_secs,
        run.cpu_secs * 1e6 / run.sent as f64,
        thousands_f(run.records_per_cpu_sec(totals)),
        run.rcvbuf.map_or_else(|| "?".to_owned(), thousands),
    );
}

const RUN_HEADER: &str = "| # | receiver | target records/s | sent records/s | datagrams read / sent | drops | records counted | zero loss | CPU (s) | CPU / send time | CPU µs per datagram | records per CPU-second | rcvbuf (bytes) |\n|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|";

fn udp_report(out: &mut String, udp: &Udp, totals: &StreamTotals) -> UdpSummary {
    let _ = writeln!(
        out,
        "\n### Over UDP in the sandbox: the same stream to nfcapd, to xdpguard's collector and to a bare receive loop, each in its own run\n"
    );
    let _ = writeln!(out, "{RUN_HEADER}");
    for (i, run) in udp.rounds.iter().enumerate() {
        run_row(out, i + 1, run, totals);
    }
    let per_cpu = |receiver: Receiver| -> Option<f64> {
        let rate = udp.rate?;
        let values: Vec<f64> = udp
            .rounds
            .iter()
            .filter(|run| run.receiver == receiver && run.rate == rate)
            .map(|run| run.records_per_cpu_sec(totals))
            .collect();
        (!values.is_empty()).then(|| median(values))
    };
    let (theirs, ours, floor) = (
        per_cpu(Receiver::Nfcapd),
        per_cpu(Receiver::Xdpguard),
        per_cpu(Receiver::Floor),
    );
    let ratio = theirs.zip(ours).map(|(theirs, ours)| ours / theirs);
    match (udp.rate, theirs, ours, floor, ratio) {
        (Some(rate), Some(theirs), Some(ours), Some(floor), Some(ratio)) => {
            // CPU-seconds per record above the floor's.
            let above = |per_sec: f64| 1.0 / (1.0 / per_sec - 1.0 / floor);
            let _ = writeln!(
                out,
                "\nZero loss at {} records/s in all {UDP_ROUNDS} rounds. Median records per CPU-second: nfcapd {} (whole process), xdpguard {} (collector thread): {ratio:.2}×. The bare receive loop alone: {} records per CPU-second; above it, nfcapd {} and xdpguard {} records per CPU-second.",
                thousands(rate),
                thousands_f(theirs),
                thousands_f(ours),
                thousands_f(floor),
                thousands_f(above(theirs)),
                thousands_f(above(ours)),
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "\nNo rate of {RATES:?} records/s gave {UDP_ROUNDS} rounds without loss."
            );
        }
    }
    let _ = writeln!(
        out,
        "\n#### Ramp: each flow receiver alone at rising rates until it loses (or the sender falls behind)\n"
    );
    let _ = writeln!(out, "{RUN_HEADER}");
    for (i, run) in udp.ramp.iter().enumerate() {
        run_row(out, i + 1, run, totals);
    }
    let best = |receiver: Receiver| highest_lossless(udp, receiver, totals);
    let (theirs_best, ours_best) = (best(Receiver::Nfcapd), best(Receiver::Xdpguard));
    let shown = |best: Option<(u64, bool)>| {
        best.map_or_else(
            || "none".to_owned(),
            |(rate, more)| format!("{}{}", if more { "≥ " } else { "" }, thousands(rate)),
        )
    };
    let ramp_ratio = theirs_best
        .zip(ours_best)
        .map(|((theirs, _), (ours, _))| ours as f64 / theirs as f64);
    let _ = writeln!(
        out,
        "\nHighest target rate without loss: nfcapd {}, xdpguard {} records/s{}.",
        shown(theirs_best),
        shown(ours_best),
        ramp_ratio.map_or_else(String::new, |r| format!(" ({r:.1}×)")),
    );
    UdpSummary {
        theirs,
        ours,
        ratio,
        ramp_ratio,
    }
}

fn report(
    conditions: &str,
    stream: &Stream,
    path: &Path,
    local: &InProcess,
    distinct: &[Distinct],
    udp: &Udp,
) -> String {
    let t = &stream.totals;
    let rate = |d: Duration| t.records as f64 / d.as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(out, "\nMachine: {conditions}\n");
    let _ = writeln!(out, "### Recorded stream\n");
    let _ = writeln!(
        out,
        "`{}`: {} bytes, FNV-1a {:016x}, {}. {} datagrams ({} data of at most {DATAGRAM_LEN} bytes, {} template), {} flow records ({} IPv4, {} IPv6), {} packets, {} bytes; {} distinct sources ({} IPv4, {} IPv6), Zipf s = {ZIPF_S} over pools of {} and {}.",
        path.display(),
        thousands(stream.file_bytes),
        stream.fnv,
        stream
            .generated_secs
            .map_or_else(|| "reused".to_owned(), |s| format!("generated in {s:.1} s")),
        thousands(t.datagrams()),
        thousands(t.data_datagrams),
        thousands(t.template_datagrams),
        thousands(t.records),
        thousands(t.v4_records),
        thousands(t.v6_records),
        thousands(t.packets),
        thousands(t.bytes),
        thousands(t.distinct_v4 + t.distinct_v6),
        thousands(t.distinct_v4),
        thousands(t.distinct_v6),
        thousands(POOL_V4 as u64),
        thousands(POOL_V6 as u64),
    );
    let _ = writeln!(
        out,
        "\n### In process, one thread pinned to CPU {} (median of {PASSES} interleaved passes)\n",
        local.cpu
    );
    let _ = writeln!(out, "| stage | time (s) | records/s |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (stage, time) in [
        (
            "decode only (FlowDecoder, records into a buffer)",
            local.decode,
        ),
        (
            "aggregate only (Volumes::add of the decoded records, lock per datagram)",
            local.aggregate,
        ),
        (
            "decode + aggregate (the collector thread's loop and the engine's sink)",
            local.both,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {stage} | {:.3} | {} |",
            time.as_secs_f64(),
            thousands_f(rate(time))
        );
    }
    let passes: Vec<String> = local
        .all_both
        .iter()
        .map(|d| format!("{:.2}M", rate(*d) / 1e6))
        .collect();
    let _ = writeln!(
        out,
        "\nDecode + aggregate, every pass: {} records/s. Heavy-hitter pass at the end ({} sources, limit {} bytes/s = 0.1% of the stream's bytes per second of a {} s interval, lengths /16-/32 and /32-/128): {:.2} ms (median of {HEAVY_PASSES}), {} hitters. Heap of the volumes: {} bytes, {:.1} bytes per source.",
        passes.join(", "),
        thousands(local.leaves as u64),
        thousands(local.limit_bytes_per_sec),
        INTERVAL.as_secs(),
        local.heavy.as_secs_f64() * 1e3,
        local.hitters,
        thousands(local.heap_bytes as u64),
        local.heap_bytes as f64 / local.leaves as f64,
    );

    let summary = udp_report(&mut out, udp, t);

    let _ = writeln!(
        out,
        "\n### Aggregation alone: {} distinct sources per family, one thread\n",
        thousands(DISTINCT as u64)
    );
    let _ = writeln!(
        out,
        "| family | sources | first add (new source) adds/s | {MORE_ADDS} more adds each, random order, adds/s | all adds/s | heavy-hitter pass (ms) | hitters | heap (bytes) | bytes per source | bytes per trie node |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in distinct {
        let all = row.insert + row.more;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {:.1} | {:.1} |",
            row.family,
            thousands(row.sources as u64),
            thousands_f(row.sources as f64 / row.insert.as_secs_f64()),
            thousands_f((row.sources * MORE_ADDS) as f64 / row.more.as_secs_f64()),
            thousands_f(row.adds() as f64 / all.as_secs_f64()),
            row.heavy.as_secs_f64() * 1e3,
            row.hitters,
            thousands(row.heap_bytes as u64),
            row.bytes_per_source(),
            row.heap_bytes as f64 / (2 * row.sources - 1) as f64,
        );
    }
    let _ = writeln!(
        out,
        "\nA trie of n sources has n leaves (key and counters) and n − 1 internal nodes (two child indices and a bit position); bytes per node = heap / (2n − 1). Heap counts both arenas' capacity and the fixed 256 KiB leaf cache."
    );

    let local_rate = rate(local.both);
    let worst_bytes = distinct
        .iter()
        .map(Distinct::bytes_per_source)
        .fold(0.0, f64::max);
    let _ = writeln!(out, "\nTargets:");
    let _ = writeln!(
        out,
        "- ≥ 1M records/s decoded and aggregated on one core: {:.2}M records/s in process — {}; over UDP the collector thread did {} records per CPU-second — {}",
        local_rate / 1e6,
        verdict(local_rate >= TARGET_RECORDS_PER_SEC),
        summary.ours.map_or_else(|| "n/a".to_owned(), thousands_f),
        verdict(
            summary
                .ours
                .is_some_and(|ours| ours >= TARGET_RECORDS_PER_SEC)
        ),
    );
    let _ = writeln!(
        out,
        "- ≥ 2× nfcapd, records per CPU-second at the same zero-loss rate: {} (nfcapd {}) — {}; highest zero-loss rate: {} — {}",
        summary
            .ratio
            .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}×")),
        summary.theirs.map_or_else(|| "n/a".to_owned(), thousands_f),
        verdict(summary.ratio.is_some_and(|r| r >= TARGET_RATIO)),
        summary
            .ramp_ratio
            .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.1}×")),
        verdict(summary.ramp_ratio.is_some_and(|r| r >= TARGET_RATIO)),
    );
    let _ = writeln!(
        out,
        "- ≤ 64 bytes per tracked prefix at 1M sources: {} — {}",
        distinct
            .iter()
            .map(|row| format!("{} {:.1}", row.family, row.bytes_per_source()))
            .collect::<Vec<_>>()
            .join(", "),
        verdict(worst_bytes <= TARGET_BYTES_PER_SOURCE),
    );
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--list") {
        return;
    }
    let path = stream_path();
    if args.iter().any(|arg| arg == "--generate") {
        let totals = generate(&path);
        eprintln!("bench: wrote {} ({totals:?})", path.display());
        return;
    }
    let started = Instant::now();
    let load_at_start = load_average();
    let stream = load_or_generate(&path);
    eprintln!(
        "bench: stream of {} records ready ({:.1} s)",
        stream.totals.records,
        started.elapsed().as_secs_f64()
    );
    let local = in_process(&stream);
    eprintln!(
        "bench: in process done ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let mut rng = StdRng::seed_from_u64(SEED ^ 0xd157);
    let distinct = [distinct(&mut rng, false), distinct(&mut rng, true)];
    eprintln!(
        "bench: 1M distinct done ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let udp = udp_side_by_side(&stream);
    let conditions = format!(
        "{}; {}, {}; 1-minute load average {load_at_start} at the start, {} at the end",
        machine(),
        tool_version("nfcapd"),
        tool_version("nfdump"),
        load_average()
    );
    print!(
        "{}",
        report(&conditions, &stream, &path, &local, &distinct, &udp)
    );
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
}
