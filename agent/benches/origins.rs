//! `cargo xtask bench origins` (no root needed): how long the RIS origin table takes to load
//! from full-size whois dumps, how much memory it holds, and how many lookups per second one
//! thread does. Prints a Markdown report for docs/BENCHMARKS.md.
//!
//! - **The dumps**: [`generate`] (seeded) writes two gzip files in the RIS whois dump format
//!   (`ORIGIN<TAB>PREFIX<TAB>SEEN_BY_PEERS`, four `%` header lines), to
//!   `target/bench-data/riswhoisdump-synthetic.IPv{4,6}.gz`; they are reused while their
//!   `% xdpguard-bench-origins ...` header line matches the parameters, and
//!   `cargo bench -p xdpguard --bench origins -- --generate` only writes them. After writing
//!   them the bench runs itself again, so the memory figures come from a process that never
//!   held the generator's data. Shape, close to the real table of 2025:
//!   - IPv4: 1,000,000 rows, 985,000 distinct prefixes. Lengths by [`V4_LENGTHS`]: 60% /24,
//!     11% /23, 12.5% /22, 5.2% /21, 4.3% /20, the rest /19 to /8, the shorter the fewer
//!     (about 20 /8s). Networks lie in 1.0.0.0-223.255.255.255 outside 10/8 and 127/8.
//!   - IPv6: 200,000 rows, 197,000 distinct prefixes, inside the RIRs' blocks of 2000::/3
//!     (2001::/16, 2400::/12, 2600::/12, 2800::/12, 2a00::/12, 2c00::/12, 7-35% of the table
//!     each). Lengths by [`V6_LENGTHS`]: 49% /48, 16% /32, the others mostly /29-/47 (/44, /40,
//!     /36, /46 the most common of them), a few /19-/28.
//!   - Nesting: prefixes are placed shortest first. A share of each length (IPv4 /24: 65%,
//!     /20-/23: 50%, /16-/19: 30%, shorter 10%; IPv6 /48: 65%, /44-/47: 55%, /33-/43: 45%,
//!     shorter 10%) goes inside a randomly chosen shorter prefix already placed (covering
//!     aggregates with more-specifics inside), the rest at a random spot no shorter prefix
//!     covers yet (an allocation of its own). A nested prefix is announced by the covering
//!     prefix's AS [`INHERIT_SHARE`] of the time (deaggregation), else by another (a customer).
//!   - Origins: a pool of [`ASES`] AS numbers (52,000 16-bit, 23,000 32-bit from
//!     131072-401308). Each prefix not inherited gets its AS from a heavy tail, weight
//!     1 / (rank + [`AS_RANK_OFFSET`])^[`AS_RANK_EXPONENT`], once every AS of the pool has been
//!     given one (IPv6: 35,000 of them); the largest ASes end with several thousand prefixes,
//!     the median with a few. [`AS_SET_PER_MILLE`] ‰ of the prefixes have an AS_SET origin
//!     `{A,B}` or `{A,B,C}`; 1.5% of the rows are a second or third origin of a prefix (MOAS:
//!     5/6 of those prefixes have two origins, 1/6 three), seen by a different number of peers
//!     than the prefix's other rows, so which origin the table keeps is never a tie.
//!   - Seen by peers: 85% of rows 150-360, 10% 10-149, 5% 1-9 (below the default visibility
//!     threshold of 10, left out of the table).
//!   - Rows in random order (not sorted: the table's build sorts them either way).
//! - **Load**: [`ris::read_file`] of both files into one [`TableBuilder`] and `build()`, which is
//!   what `origins::load` does, [`LOAD_RUNS`] times; the median of each part. Memory of the
//!   first run: `heap_bytes()`, and VmRSS before and after from `/proc/self/status`, VmHWM
//!   reset (`/proc/self/clear_refs`) before it for the peak during the load.
//! - **Lookups**: [`LOOKUPS`] addresses per set and family, on one thread, [`LOOKUP_PASSES`]
//!   passes: uniform over the announced space, drawn from announced prefixes (a random
//!   prefix, a random address inside: weighted to the many /24s and /48s), uniform over all
//!   space (IPv6: all of 2000::/3). Before any figure is printed, a sample of
//!   [`REFERENCE_SAMPLE`] addresses (those sets, and the first and last address of announced
//!   prefixes and their neighbours) is checked against a naive longest-prefix match over a
//!   sorted Vec built from an independent reading of the files; any difference fails the bench.
//! - **announced_by**: the ten ASes with the most prefixes, time to collect their prefixes
//!   (checked against the reference), median of [`ANNOUNCED_BY_PASSES`].
use std::{
    cmp::Reverse,
    collections::{HashMap, HashSet},
    fmt::Write as _,
    hint::black_box,
    io::{BufRead as _, BufReader, BufWriter, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use rand::{
    Rng as _, SeedableRng as _,
    rngs::StdRng,
    seq::{SliceRandom as _, index},
};
use xdpguard::{
    origins::{FileStats, OriginAs, OriginTable, OriginsConfig, TableBuilder, ris},
    prefix::Prefix,
};
use xdpguard_testkit::report::{load_average, machine, median, thousands};

const SEED: u64 = 0x0419_5eed;
/// Bumped whenever the generator changes, so old files are not reused.
const FORMAT: u32 = 2;
/// Origin ASes in the pool.
const ASES: usize = 75_000;
/// Of them, 16-bit AS numbers (the rest 32-bit).
const ASES_16BIT: usize = 52_000;
/// The heavy tail's weight of rank r: 1 / (r + offset)^exponent. The offset keeps the largest
/// AS under a percent of the table; the exponent leaves a median AS of a few prefixes.
const AS_RANK_OFFSET: f64 = 60.0;
const AS_RANK_EXPONENT: f64 = 1.2;
/// A nested prefix is announced by its covering prefix's AS this often (deaggregation).
const INHERIT_SHARE: f64 = 0.6;
const AS_SET_PER_MILLE: u32 = 1;

/// (prefix length, weight) of the distinct IPv4 prefixes.
const V4_LENGTHS: &[(u8, u64)] = &[
    (8, 2),
    (9, 2),
    (10, 5),
    (11, 10),
    (12, 30),
    (13, 60),
    (14, 120),
    (15, 200),
    (16, 1_300),
    (17, 900),
    (18, 1_500),
    (19, 2_800),
    (20, 4_300),
    (21, 5_200),
    (22, 12_500),
    (23, 11_000),
    (24, 60_000),
];

/// (prefix length, weight) of the distinct IPv6 prefixes.
const V6_LENGTHS: &[(u8, u64)] = &[
    (19, 5),
    (20, 20),
    (22, 30),
    (23, 10),
    (24, 30),
    (25, 10),
    (26, 20),
    (27, 30),
    (28, 300),
    (29, 3_000),
    (30, 300),
    (31, 300),
    (32, 16_000),
    (33, 1_500),
    (34, 1_000),
    (35, 600),
    (36, 4_000),
    (37, 500),
    (38, 1_000),
    (39, 500),
    (40, 7_000),
    (41, 400),
    (42, 1_500),
    (43, 300),
    (44, 8_000),
    (45, 800),
    (46, 3_000),
    (47, 2_000),
    (48, 50_000),
];

/// The IPv6 blocks the RIRs allocate from, and how much of the table each holds (percent).
const V6_BLOCKS: [(u128, u8, u32); 6] = [
    (0x2001 << 112, 16, 7),
    (0x2400 << 112, 12, 25),
    (0x2600 << 112, 12, 20),
    (0x2800 << 112, 12, 10),
    (0x2a00 << 112, 12, 35),
    (0x2c00 << 112, 12, 3),
];

const LOAD_RUNS: usize = 3;
const LOOKUPS: usize = 1_000_000;
const LOOKUP_PASSES: usize = 7;
const REFERENCE_SAMPLE: usize = 10_000;
const ANNOUNCED_BY_PASSES: usize = 9;

const TARGET_BYTES_PER_ROW: f64 = 64.0;
const TARGET_LOOKUP_NS: f64 = 1_000.0;

/// What one family's dump looks like.
struct FamilySpec {
    name: &'static str,
    file_name: &'static str,
    bits: u8,
    rows: usize,
    /// Rows that are a further origin of a prefix already in the file.
    moas_rows: usize,
    lengths: &'static [(u8, u64)],
    /// ASes of the pool that get at least one prefix of this family.
    covered_ases: usize,
    /// The share of a length's prefixes placed inside a shorter one.
    nested_share: fn(u8) -> f64,
    /// A random address where this family's top-level prefixes go.
    top_level: fn(&mut StdRng) -> u128,
}

const V4: FamilySpec = FamilySpec {
    name: "IPv4",
    file_name: "riswhoisdump-synthetic.IPv4.gz",
    bits: 32,
    rows: 1_000_000,
    moas_rows: 15_000,
    lengths: V4_LENGTHS,
    covered_ases: ASES,
    nested_share: |len| match len {
        24 => 0.65,
        20..=23 => 0.5,
        16..=19 => 0.3,
        _ => 0.1,
    },
    top_level: |rng| loop {
        let addr = rng.random::<u32>();
        let first = addr >> 24;
        // Unicast space, without 0/8, 10/8 and 127/8.
        if (1..224).contains(&first) && first != 10 && first != 127 {
            return u128::from(addr);
        }
    },
};

const V6: FamilySpec = FamilySpec {
    name: "IPv6",
    file_name: "riswhoisdump-synthetic.IPv6.gz",
    bits: 128,
    rows: 200_000,
    moas_rows: 3_000,
    lengths: V6_LENGTHS,
    covered_ases: 35_000,
    nested_share: |len| match len {
        48 => 0.65,
        44..=47 => 0.55,
        33..=43 => 0.45,
        _ => 0.1,
    },
    top_level: |rng| {
        let mut pick = rng.random_range(0..100);
        for (block, len, share) in V6_BLOCKS {
            if pick < share {
                return block | (rng.random::<u128>() & host_mask(128, len));
            }
            pick -= share;
        }
        unreachable!("the shares add up to 100")
    },
};

const FAMILIES: [&FamilySpec; 2] = [&V4, &V6];

/// The host bits of a `/len` in a `bits`-bit family.
fn host_mask(bits: u8, len: u8) -> u128 {
    1_u128
        .checked_shl(u32::from(bits - len))
        .map_or(u128::MAX, |bit| bit - 1)
}

/// The network bits of a `/len`.
fn net_mask(bits: u8, len: u8) -> u128 {
    host_mask(bits, 0) & !host_mask(bits, len)
}

fn to_addr(bits: u8, key: u128) -> IpAddr {
    if bits == 32 {
        IpAddr::V4(Ipv4Addr::from(
            u32::try_from(key).expect("an IPv4 key fits 32 bits"),
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(key))
    }
}

fn key_of(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn prefix_of(bits: u8, network: u128, len: u8) -> Prefix {
    Prefix::new(to_addr(bits, network), len).expect("a valid length")
}

/// The `% xdpguard-bench-origins ...` line that says which parameters made a file.
fn parameters_line(spec: &FamilySpec) -> String {
    format!(
        "% xdpguard-bench-origins format={FORMAT} seed={SEED:#x} family={} rows={} moas_rows={} ases={ASES} covered={}",
        spec.name, spec.rows, spec.moas_rows, spec.covered_ases
    )
}

// ---------------------------------------------------------------------------------------------
// Generating the dumps

/// The AS numbers by rank (rank 0 draws the most prefixes), and the heavy tail's CDF.
struct AsPool {
    ranked: Vec<u32>,
    cdf: Vec<f64>,
}

impl AsPool {
    fn new(rng: &mut StdRng) -> Self {
        let asn = |base: u32, offset: usize| base + u32::try_from(offset).expect("small offset");
        let mut ranked: Vec<u32> = index::sample(rng, 64_495, ASES_16BIT)
            .iter()
            .map(|i| asn(1, i))
            .collect();
        ranked.extend(
            index::sample(rng, 401_309 - 131_072, ASES - ASES_16BIT)
                .iter()
                .map(|i| asn(131_072, i)),
        );
        ranked.shuffle(rng);
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (0..ASES)
            .map(|rank| {
                total += (rank as f64 + AS_RANK_OFFSET).powf(-AS_RANK_EXPONENT);
                total
            })
            .collect();
        for c in &mut cdf {
            *c /= total;
        }
        Self { ranked, cdf }
    }

    /// An AS drawn from the heavy tail.
    fn draw(&self, rng: &mut StdRng) -> u32 {
        let u: f64 = rng.random();
        self.ranked[self.cdf.partition_point(|&c| c < u).min(ASES - 1)]
    }
}

const NO_PARENT: usize = usize::MAX;

/// A distinct prefix of the generated file.
struct Placed {
    network: u128,
    len: u8,
    /// The shorter prefix it was placed inside, or [`NO_PARENT`].
    parent: usize,
    /// Announced by the parent's AS.
    inherits: bool,
}

/// The distinct prefixes, shortest first, each parent before its children.
fn place(spec: &FamilySpec, rng: &mut StdRng) -> Vec<Placed> {
    let distinct = spec.rows - spec.moas_rows;
    let weights: u64 = spec.lengths.iter().map(|&(_, weight)| weight).sum();
    let mut counts: Vec<(u8, usize)> = spec
        .lengths
        .iter()
        .map(|&(len, weight)| {
            let count = distinct as u64 * weight / weights;
            (len, usize::try_from(count).expect("a count fits usize"))
        })
        .collect();
    // What rounding left over goes to the most common length.
    let short = distinct - counts.iter().map(|&(_, count)| count).sum::<usize>();
    let most = spec
        .lengths
        .iter()
        .enumerate()
        .max_by_key(|(_, (_, weight))| *weight)
        .map_or(0, |(i, _)| i);
    counts[most].1 += short;
    assert!(counts.is_sorted_by_key(|&(len, _)| len), "lengths ascend");

    let bits = spec.bits;
    let mut used: HashSet<(u128, u8)> = HashSet::with_capacity(distinct);
    let mut placed: Vec<Placed> = Vec::with_capacity(distinct);
    for (len, count) in counts {
        // Only shorter prefixes can be parents.
        let parents = placed.len();
        let shorter: Vec<u8> = spec
            .lengths
            .iter()
            .map(|&(l, _)| l)
            .filter(|&l| l < len)
            .collect();
        for _ in 0..count {
            let mut spot = None;
            if parents > 0 && rng.random_bool((spec.nested_share)(len)) {
                // A short parent has few free slots: a few tries, then a top-level spot.
                for _ in 0..4 {
                    let parent = rng.random_range(0..parents);
                    let inside = rng.random::<u128>() & host_mask(bits, placed[parent].len);
                    let network = (placed[parent].network | inside) & net_mask(bits, len);
                    if used.insert((network, len)) {
                        spot = Some((network, parent));
                        break;
                    }
                }
            }
            let (network, parent) = spot.unwrap_or_else(|| {
                // A top-level prefix goes where nothing shorter is announced yet (an allocation
                // of its own), unless many tries find no such spot.
                let mut tries = 0;
                loop {
                    let network = (spec.top_level)(rng) & net_mask(bits, len);
                    tries += 1;
                    let covered = shorter
                        .iter()
                        .any(|&l| used.contains(&(network & net_mask(bits, l), l)));
                    if (!covered || tries > 64) && used.insert((network, len)) {
                        break (network, NO_PARENT);
                    }
                }
            });
            placed.push(Placed {
                network,
                len,
                parent,
                inherits: parent != NO_PARENT && rng.random_bool(INHERIT_SHARE),
            });
        }
    }
    placed
}

/// Seen by peers: mostly high, 5% below the visibility threshold.
fn draw_peers(rng: &mut StdRng) -> u32 {
    match rng.random_range(0..100) {
        0..5 => rng.random_range(1..=9),
        5..15 => rng.random_range(10..=149),
        _ => rng.random_range(150..=360),
    }
}

/// One row: a prefix (index into the placed ones), its origin (1-3 members; more than one is an
/// AS_SET), peers.
struct Row {
    prefix: usize,
    members: [u32; 3],
    count: u8,
    peers: u32,
}

/// The rows of one family, in random order.
fn rows(spec: &FamilySpec, placed: &[Placed], pool: &AsPool, rng: &mut StdRng) -> Vec<Row> {
    // Every covered AS first gets one prefix of those that do not inherit theirs, then the
    // heavy tail draws.
    let covered = index::sample(rng, ASES, spec.covered_ases);
    let mut own: Vec<usize> = (0..placed.len()).filter(|&i| !placed[i].inherits).collect();
    assert!(own.len() >= spec.covered_ases, "enough prefixes to cover");
    own.shuffle(rng);
    let mut origin = vec![0_u32; placed.len()];
    for (i, &prefix) in own.iter().enumerate() {
        origin[prefix] = if i < covered.len() {
            pool.ranked[covered.index(i)]
        } else {
            pool.draw(rng)
        };
    }
    // Parents come before their children.
    for i in 0..placed.len() {
        if placed[i].inherits {
            origin[i] = origin[placed[i].parent];
        }
    }

    let mut rows: Vec<Row> = Vec::with_capacity(spec.rows);
    for (prefix, &asn) in origin.iter().enumerate() {
        let mut members = [asn, 0, 0];
        let mut count = 1;
        if rng.random_range(0..1000) < AS_SET_PER_MILLE {
            let size = rng.random_range(2..=3);
            while count < size {
                let member = pool.draw(rng);
                if !members[..usize::from(count)].contains(&member) {
                    members[usize::from(count)] = member;
                    count += 1;
                }
            }
        }
        rows.push(Row {
            prefix,
            members,
            count,
            peers: draw_peers(rng),
        });
    }
    // Further origins: 5/6 of the MOAS prefixes get one, 1/6 two.
    let moas_prefixes = spec.moas_rows * 5 / 6;
    let twice = spec.moas_rows - moas_prefixes;
    let chosen = index::sample(rng, placed.len(), moas_prefixes);
    for (n, prefix) in chosen.iter().enumerate() {
        let extra = if n < twice { 2 } else { 1 };
        let mut taken: Vec<(u32, u32)> = vec![(origin[prefix], rows[prefix].peers)];
        for _ in 0..extra {
            let asn = loop {
                let asn = pool.draw(rng);
                if taken.iter().all(|&(a, _)| a != asn) {
                    break asn;
                }
            };
            let peers = loop {
                let peers = draw_peers(rng);
                if taken.iter().all(|&(_, p)| p != peers) {
                    break peers;
                }
            };
            taken.push((asn, peers));
            rows.push(Row {
                prefix,
                members: [asn, 0, 0],
                count: 1,
                peers,
            });
        }
    }
    assert_eq!(rows.len(), spec.rows);
    rows.shuffle(rng);
    rows
}

/// Write one family's dump, gzip-compressed, to `path`.
fn write_dump(spec: &FamilySpec, placed: &[Placed], rows: &[Row], path: &Path) -> Result<()> {
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut out = BufWriter::with_capacity(
        1 << 16,
        flate2::write::GzEncoder::new(file, flate2::Compression::default()),
    );
    writeln!(
        out,
        "% Synthetic RIS whois dump for the xdpguard origins benchmark, not RIPE NCC data."
    )?;
    writeln!(
        out,
        "% Shaped like riswhoisdump.{}: origin AS (or AS_SET), prefix, RIS peers that saw it.",
        spec.name
    )?;
    writeln!(out, "{}", parameters_line(spec))?;
    writeln!(out, "%")?;
    for row in rows {
        let prefix = &placed[row.prefix];
        match row.count {
            1 => write!(out, "{}", row.members[0])?,
            count => {
                out.write_all(b"{")?;
                for (i, member) in row.members[..usize::from(count)].iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    write!(out, "{member}")?;
                }
                out.write_all(b"}")?;
            }
        }
        writeln!(
            out,
            "\t{}/{}\t{}",
            to_addr(spec.bits, prefix.network),
            prefix.len,
            row.peers
        )?;
    }
    let encoder = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    encoder.finish()?.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// Generate both dumps (one seeded stream: always both together).
fn generate(paths: &[PathBuf; 2]) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let pool = AsPool::new(&mut rng);
    if let Some(dir) = paths[0].parent() {
        std::fs::create_dir_all(dir)?;
    }
    for (spec, path) in FAMILIES.iter().zip(paths) {
        let placed = place(spec, &mut rng);
        let rows = rows(spec, &placed, &pool, &mut rng);
        write_dump(spec, &placed, &rows, path)?;
    }
    Ok(())
}

/// The file is there and was made with these parameters.
fn is_current(spec: &FamilySpec, path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let wanted = parameters_line(spec);
    BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .take(8)
        .map_while(Result::ok)
        .any(|line| line == wanted)
}

fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            let agent = Path::new(env!("CARGO_MANIFEST_DIR"));
            agent.parent().unwrap_or(agent).join("target")
        },
        PathBuf::from,
    );
    target.join("bench-data")
}

// ---------------------------------------------------------------------------------------------
// The reference: the files read independently of `ris`, and a naive longest-prefix match

/// A row as the reference reads it.
struct Parsed {
    network: u128,
    len: u8,
    peers: u32,
    origin: OriginAs,
}

fn parse_origin(text: &str) -> Result<OriginAs> {
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let mut members = inner
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()?;
        members.sort_unstable();
        members.dedup();
        return Ok(match members.as_slice() {
            [only] => OriginAs::Single(*only),
            _ => OriginAs::Set(members.into_boxed_slice()),
        });
    }
    Ok(OriginAs::Single(text.parse()?))
}

/// Every row of a dump, and its uncompressed size.
fn read_dump(path: &Path, bits: u8) -> Result<(Vec<Parsed>, u64)> {
    let file = std::fs::File::open(path)?;
    let mut reader = BufReader::new(flate2::read::MultiGzDecoder::new(file));
    let mut rows = Vec::new();
    let mut bytes = 0_u64;
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line)?;
        if read == 0 {
            break;
        }
        bytes += read as u64;
        let text = line.trim_end();
        if text.starts_with('%') || text.is_empty() {
            continue;
        }
        let parts: Vec<&str> = text.split('\t').collect();
        let [origin, prefix, peers] = parts[..] else {
            bail!("{}: not three fields: {text:?}", path.display());
        };
        let (addr, len) = prefix
            .split_once('/')
            .with_context(|| format!("no length in {prefix:?}"))?;
        let addr: IpAddr = addr.parse()?;
        let len: u8 = len.parse()?;
        ensure!(
            matches!((addr, bits), (IpAddr::V4(_), 32) | (IpAddr::V6(_), 128)),
            "{prefix} in the wrong file"
        );
        rows.push(Parsed {
            network: key_of(addr),
            len,
            peers: peers.parse()?,
            origin: parse_origin(origin)?,
        });
    }
    Ok((rows, bytes))
}

/// What the table should hold for one prefix.
struct Kept {
    network: u128,
    len: u8,
    origin: OriginAs,
    peers: u32,
    multiple_origins: bool,
}

/// One family's visible announcements, sorted by network then length.
struct Reference {
    bits: u8,
    kept: Vec<Kept>,
}

impl Reference {
    fn new(bits: u8, rows: &[Parsed], min_peers: u32) -> Result<Self> {
        let mut visible: Vec<&Parsed> = rows.iter().filter(|r| r.peers >= min_peers).collect();
        visible.sort_by_key(|r| (r.network, r.len, Reverse(r.peers)));
        let mut kept: Vec<Kept> = Vec::new();
        for group in visible.chunk_by(|a, b| (a.network, a.len) == (b.network, b.len)) {
            let best = group[0];
            ensure!(
                group.get(1).is_none_or(|second| second.peers < best.peers),
                "two origins of {} seen by as many peers: the generator should never tie",
                prefix_of(bits, best.network, best.len)
            );
            kept.push(Kept {
                network: best.network,
                len: best.len,
                origin: best.origin.clone(),
                peers: best.peers,
                multiple_origins: group.iter().any(|r| r.origin != best.origin),
            });
        }
        Ok(Self { bits, kept })
    }

    /// The longest announced prefix covering `key`: each length tried, longest first.
    fn lookup(&self, key: u128) -> Option<&Kept> {
        (0..=self.bits).rev().find_map(|len| {
            let network = key & net_mask(self.bits, len);
            self.kept
                .binary_search_by(|k| (k.network, k.len).cmp(&(network, len)))
                .ok()
                .map(|i| &self.kept[i])
        })
    }

    /// The announced space as disjoint ranges (first, last), ascending.
    fn covered_ranges(&self) -> Vec<(u128, u128)> {
        let mut ranges: Vec<(u128, u128)> = Vec::new();
        for k in &self.kept {
            let last = k.network | host_mask(self.bits, k.len);
            match ranges.last_mut() {
                Some((_, end)) if k.network <= *end => *end = (*end).max(last),
                _ => ranges.push((k.network, last)),
            }
        }
        ranges
    }
}

// ---------------------------------------------------------------------------------------------
// The dumps' shape, measured from the files

struct Shape {
    rows: usize,
    distinct: usize,
    /// Share of distinct prefixes at the family's most common length (/24, /48).
    main_length: f64,
    /// Share at /20-/23 (IPv4) or /32-/44 (IPv6).
    middle_lengths: f64,
    /// Share of distinct prefixes inside another prefix of the file.
    nested: f64,
    moas_prefixes: usize,
    as_set_rows: usize,
    below_ten_peers: f64,
    /// Announced share of the space (IPv4: all of it; IPv6: 2000::/3), rows >= threshold.
    space_share: f64,
}

fn shape(bits: u8, rows: &[Parsed], reference: &Reference) -> Shape {
    let mut prefixes: Vec<(u128, u8, &OriginAs)> =
        rows.iter().map(|r| (r.network, r.len, &r.origin)).collect();
    prefixes.sort_unstable();
    let mut distinct: Vec<(u128, u8)> = Vec::with_capacity(prefixes.len());
    let mut moas_prefixes = 0;
    for group in prefixes.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        distinct.push((group[0].0, group[0].1));
        if group.iter().any(|p| p.2 != group[0].2) {
            moas_prefixes += 1;
        }
    }
    // Open prefixes' last addresses, broadest at the bottom.
    let mut open: Vec<u128> = Vec::new();
    let mut nested = 0;
    for &(network, len) in &distinct {
        while open.last().is_some_and(|&last| last < network) {
            open.pop();
        }
        if !open.is_empty() {
            nested += 1;
        }
        open.push(network | host_mask(bits, len));
    }
    let (main, middle) = if bits == 32 {
        (24..=24, 20..=23)
    } else {
        (48..=48, 32..=44)
    };
    let share = |n: usize, of: usize| n as f64 / of as f64;
    let at = |lengths: std::ops::RangeInclusive<u8>| {
        distinct
            .iter()
            .filter(|(_, len)| lengths.contains(len))
            .count()
    };
    let covered: u128 = reference
        .covered_ranges()
        .iter()
        .map(|&(first, last)| last - first + 1)
        .sum();
    let space = if bits == 32 { 1_u128 << 32 } else { 1 << 125 };
    Shape {
        rows: rows.len(),
        distinct: distinct.len(),
        main_length: share(at(main), distinct.len()),
        middle_lengths: share(at(middle), distinct.len()),
        nested: share(nested, distinct.len()),
        moas_prefixes,
        as_set_rows: rows.iter().filter(|r| r.origin.is_set()).count(),
        below_ten_peers: share(rows.iter().filter(|r| r.peers < 10).count(), rows.len()),
        space_share: covered as f64 / space as f64,
    }
}

/// Prefixes per origin AS over both files (single origins; an AS_SET counts for no one).
struct AsDistribution {
    distinct: usize,
    largest: usize,
    median: usize,
    one_prefix: f64,
    top_hundredth: f64,
}

fn as_distribution(files: &[&[Parsed]]) -> AsDistribution {
    let mut per_as: HashMap<u32, usize> = HashMap::new();
    let mut members: HashSet<u32> = HashSet::new();
    for rows in files {
        for row in *rows {
            match &row.origin {
                OriginAs::Single(asn) => *per_as.entry(*asn).or_default() += 1,
                OriginAs::Set(set) => members.extend(set.iter().copied()),
            }
        }
    }
    members.extend(per_as.keys().copied());
    let mut counts: Vec<usize> = per_as.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let total: usize = counts.iter().sum();
    let top = counts.len().div_ceil(100);
    AsDistribution {
        distinct: members.len(),
        largest: counts.first().copied().unwrap_or(0),
        median: counts.get(counts.len() / 2).copied().unwrap_or(0),
        one_prefix: counts.iter().filter(|&&c| c == 1).count() as f64 / counts.len() as f64,
        top_hundredth: counts[..top].iter().sum::<usize>() as f64 / total as f64,
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// One of `/proc/self/status`'s `kB` fields.
fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Memory {
    rss_before: u64,
    rss_after: u64,
    /// VmHWM after the load, when it could be reset before it.
    hwm_after: Option<u64>,
}

struct LoadRun {
    read: [Duration; 2],
    build: Duration,
    stats: [FileStats; 2],
    table: OriginTable,
}

/// What `origins::load` does, timed in its two parts.
fn load_once(paths: &[PathBuf; 2], min_peers: u32) -> Result<LoadRun> {
    let mut builder = TableBuilder::new();
    let mut read = [Duration::ZERO; 2];
    let mut stats = [FileStats::default(), FileStats::default()];
    for (i, path) in paths.iter().enumerate() {
        let started = Instant::now();
        stats[i] = ris::read_file(path, min_peers, &mut builder)?;
        read[i] = started.elapsed();
    }
    let started = Instant::now();
    let table = builder.build();
    let build = started.elapsed();
    Ok(LoadRun {
        read,
        build,
        stats,
        table,
    })
}

struct Loads {
    read: [Duration; 2],
    build: Duration,
    total: Duration,
    memory: Memory,
    stats: [FileStats; 2],
    table: OriginTable,
}

fn measure_loads(paths: &[PathBuf; 2], min_peers: u32) -> Result<Loads> {
    let rss_before = status_kib("VmRSS").unwrap_or(0);
    // "5" resets the peak RSS (Linux 4.0+), so VmHWM says what the load itself peaked at.
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut timings: Vec<([Duration; 2], Duration)> = Vec::with_capacity(LOAD_RUNS);
    let mut memory = None;
    let mut last: Option<(OriginTable, [FileStats; 2])> = None;
    for _ in 0..LOAD_RUNS {
        // Freed first, so every run starts from the same heap. (A reload in the daemon keeps
        // the old table until the new one is installed: its peak is both.)
        drop(last.take());
        let run = load_once(paths, min_peers)?;
        if memory.is_none() {
            memory = Some(Memory {
                rss_before,
                rss_after: status_kib("VmRSS").unwrap_or(0),
                hwm_after: status_kib("VmHWM").filter(|_| hwm_reset),
            });
        }
        timings.push((run.read, run.build));
        last = Some((run.table, run.stats));
    }
    let read = [0, 1].map(|i| median(timings.iter().map(|t| t.0[i]).collect()));
    let build = median(timings.iter().map(|t| t.1).collect());
    let total = median(timings.iter().map(|t| t.0[0] + t.0[1] + t.1).collect());
    let (table, stats) = last.expect("at least one run");
    Ok(Loads {
        read,
        build,
        total,
        memory: memory.expect("at least one run"),
        stats,
        table,
    })
}

/// The address sets one family's lookups use.
struct AddressSets {
    family: &'static str,
    sets: [(&'static str, Vec<IpAddr>); 3],
}

fn address_sets(spec: &FamilySpec, reference: &Reference, rng: &mut StdRng) -> AddressSets {
    let bits = spec.bits;
    let inside = |rng: &mut StdRng, network: u128, len: u8| {
        to_addr(
            bits,
            network | (rng.random::<u128>() & host_mask(bits, len)),
        )
    };
    // Uniform over the announced space: a random offset into the covered ranges laid end to
    // end.
    let ranges = reference.covered_ranges();
    let mut ends: Vec<u128> = Vec::with_capacity(ranges.len());
    let mut total = 0_u128;
    for &(first, last) in &ranges {
        total += last - first + 1;
        ends.push(total);
    }
    let announced_space = (0..LOOKUPS)
        .map(|_| {
            let offset = rng.random_range(0..total);
            let range = ends.partition_point(|&end| end <= offset);
            let before = range.checked_sub(1).map_or(0, |i| ends[i]);
            to_addr(bits, ranges[range].0 + (offset - before))
        })
        .collect();
    let from_prefixes = (0..LOOKUPS)
        .map(|_| {
            let k = &reference.kept[rng.random_range(0..reference.kept.len())];
            inside(rng, k.network, k.len)
        })
        .collect();
    let all_space = (0..LOOKUPS)
        .map(|_| {
            if bits == 32 {
                inside(rng, 0, 0)
            } else {
                inside(rng, 0x2000 << 112, 3)
            }
        })
        .collect();
    AddressSets {
        family: spec.name,
        sets: [
            ("uniform over the announced space", announced_space),
            (
                "in announced prefixes (random prefix, random address)",
                from_prefixes,
            ),
            (
                if bits == 32 {
                    "uniform over all space"
                } else {
                    "uniform over 2000::/3"
                },
                all_space,
            ),
        ],
    }
}

/// The table agrees with the reference on `addresses`, or the bench fails.
fn check_against_reference(
    table: &OriginTable,
    reference: &Reference,
    addresses: &[IpAddr],
) -> Result<()> {
    let bits = reference.bits;
    let mut mismatches = Vec::new();
    for &addr in addresses {
        let want = reference.lookup(key_of(addr)).map(|k| {
            (
                prefix_of(bits, k.network, k.len),
                k.origin.clone(),
                k.peers.min(u32::from(u16::MAX)),
                k.multiple_origins,
            )
        });
        let got = table
            .lookup(addr)
            .map(|a| (a.prefix, a.origin.clone(), a.peers, a.multiple_origins));
        if got != want {
            mismatches.push(format!("{addr}: table {got:?}, reference {want:?}"));
        }
    }
    if !mismatches.is_empty() {
        bail!(
            "the table disagrees with the naive reference on {} of {} addresses, e.g.:\n{}",
            mismatches.len(),
            addresses.len(),
            mismatches[..mismatches.len().min(5)].join("\n")
        );
    }
    Ok(())
}

/// The sample checked: the first of each lookup set, and the edges of announced prefixes
/// (first and last address, one before, one past), where a flattened table goes wrong.
fn reference_sample(sets: &AddressSets, reference: &Reference, rng: &mut StdRng) -> Vec<IpAddr> {
    let per_family = REFERENCE_SAMPLE / 2;
    let per_set = per_family / 5;
    let mut sample: Vec<IpAddr> = sets
        .sets
        .iter()
        .flat_map(|(_, addresses)| addresses[..per_set].iter().copied())
        .collect();
    let bits = reference.bits;
    let all = host_mask(bits, 0);
    while sample.len() < per_family {
        let k = &reference.kept[rng.random_range(0..reference.kept.len())];
        let last = k.network | host_mask(bits, k.len);
        let key = match rng.random_range(0..4) {
            0 => k.network,
            1 => last,
            2 => k.network.wrapping_sub(1) & all,
            _ => last.wrapping_add(1) & all,
        };
        sample.push(to_addr(bits, key));
    }
    sample
}

/// One pass of lookups: how long, and how many found an announcement.
fn lookup_pass(table: &OriginTable, addresses: &[IpAddr]) -> (Duration, usize) {
    let started = Instant::now();
    let mut found = 0_usize;
    for &addr in addresses {
        if black_box(table.lookup(black_box(addr))).is_some() {
            found += 1;
        }
    }
    (started.elapsed(), found)
}

struct LookupRow {
    family: &'static str,
    set: &'static str,
    found: f64,
    ns: f64,
}

fn measure_lookups(table: &OriginTable, families: &[AddressSets]) -> Vec<LookupRow> {
    let sets: Vec<(&'static str, &'static str, &[IpAddr])> = families
        .iter()
        .flat_map(|f| {
            f.sets
                .iter()
                .map(|(name, addresses)| (f.family, *name, addresses.as_slice()))
        })
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); sets.len()];
    let mut found = vec![0; sets.len()];
    // Interleaved, so a burst of other work on the machine spreads over every set.
    for _ in 0..LOOKUP_PASSES {
        for (i, (_, _, addresses)) in sets.iter().enumerate() {
            let (took, hits) = lookup_pass(table, addresses);
            times[i].push(took);
            found[i] = hits;
        }
    }
    sets.iter()
        .zip(times)
        .zip(found)
        .map(|(((family, set, addresses), times), found)| LookupRow {
            family,
            set,
            found: found as f64 / addresses.len() as f64,
            ns: median(times).as_secs_f64() * 1e9 / addresses.len() as f64,
        })
        .collect()
}

struct AnnouncedBy {
    asn: u32,
    v4: usize,
    v6: usize,
    took: Duration,
}

/// `announced_by` for the ten ASes with the most prefixes in the table, checked against the
/// reference.
fn measure_announced_by(table: &OriginTable, references: &[Reference]) -> Result<Vec<AnnouncedBy>> {
    let mut per_as: HashMap<u32, Vec<Prefix>> = HashMap::new();
    // IPv4 first, each in address order: the order `announced_by` promises.
    for reference in references {
        for k in &reference.kept {
            if let OriginAs::Single(asn) = k.origin {
                per_as
                    .entry(asn)
                    .or_default()
                    .push(prefix_of(reference.bits, k.network, k.len));
            }
        }
    }
    let mut largest: Vec<(u32, Vec<Prefix>)> = per_as.into_iter().collect();
    largest.sort_by_key(|(asn, prefixes)| (Reverse(prefixes.len()), *asn));
    largest.truncate(10);
    let mut out = Vec::new();
    for (asn, want) in largest {
        let mut times = Vec::with_capacity(ANNOUNCED_BY_PASSES);
        for pass in 0..ANNOUNCED_BY_PASSES {
            let started = Instant::now();
            let got: Vec<Prefix> = table.announced_by(black_box(asn)).collect();
            times.push(started.elapsed());
            if pass == 0 {
                ensure!(
                    got == want,
                    "announced_by({asn}): {} prefixes, the reference {}",
                    got.len(),
                    want.len()
                );
            }
            black_box(got);
        }
        out.push(AnnouncedBy {
            asn,
            v4: want.iter().filter(|p| p.is_ipv4()).count(),
            v6: want.iter().filter(|p| !p.is_ipv4()).count(),
            took: median(times),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The report

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

fn mib_of_kib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

struct Report<'a> {
    conditions: String,
    paths: &'a [PathBuf; 2],
    file_bytes: [(u64, u64); 2],
    shapes: [Shape; 2],
    ases: AsDistribution,
    min_peers: u32,
    loads: &'a Loads,
    lookups: Vec<LookupRow>,
    sample: usize,
    announced_by: Vec<AnnouncedBy>,
}

fn report(r: &Report<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Origin AS table (`cargo xtask bench origins`)\n");
    let _ = writeln!(
        out,
        "Command: `cargo xtask bench origins` (`cargo bench -p xdpguard --bench origins`; no root needed).\n"
    );
    let _ = writeln!(out, "Machine: {}\n", r.conditions);

    let _ = writeln!(
        out,
        "### Generated dumps (seeded, in the RIS whois dump format; shape in `agent/benches/origins.rs`)\n"
    );
    let _ = writeln!(out, "| | IPv4 | IPv6 |\n|---|---:|---:|");
    let shape_row = |out: &mut String, name: &str, cells: [String; 2]| {
        let _ = writeln!(out, "| {name} | {} | {} |", cells[0], cells[1]);
    };
    let [s4, s6] = &r.shapes;
    shape_row(
        &mut out,
        "file",
        r.paths
            .each_ref()
            .map(|p| format!("`{}`", p.file_name().unwrap_or_default().to_string_lossy())),
    );
    shape_row(
        &mut out,
        "size gzip / plain (MB)",
        r.file_bytes
            .map(|(gz, plain)| format!("{:.1} / {:.1}", gz as f64 / 1e6, plain as f64 / 1e6)),
    );
    shape_row(&mut out, "rows", [thousands(s4.rows), thousands(s6.rows)]);
    shape_row(
        &mut out,
        "distinct prefixes",
        [thousands(s4.distinct), thousands(s6.distinct)],
    );
    shape_row(
        &mut out,
        "/24 (IPv4), /48 (IPv6)",
        [percent(s4.main_length), percent(s6.main_length)],
    );
    shape_row(
        &mut out,
        "/20-/23 (IPv4), /32-/44 (IPv6)",
        [percent(s4.middle_lengths), percent(s6.middle_lengths)],
    );
    shape_row(
        &mut out,
        "inside another announced prefix",
        [percent(s4.nested), percent(s6.nested)],
    );
    shape_row(
        &mut out,
        "prefixes with several origins (MOAS)",
        [thousands(s4.moas_prefixes), thousands(s6.moas_prefixes)],
    );
    shape_row(
        &mut out,
        "AS_SET rows",
        [thousands(s4.as_set_rows), thousands(s6.as_set_rows)],
    );
    shape_row(
        &mut out,
        "rows seen by < 10 peers",
        [percent(s4.below_ten_peers), percent(s6.below_ten_peers)],
    );
    shape_row(
        &mut out,
        "announced share of the space (IPv6: of 2000::/3)",
        [
            percent(s4.space_share),
            format!("{:.4}%", s6.space_share * 100.0),
        ],
    );
    let a = &r.ases;
    let _ = writeln!(
        out,
        "\nOrigin ASes, both files: {} distinct; prefixes per AS: largest {}, median {}, {} of the ASes have one, the top 1% of ASes originate {} of the rows.\n",
        thousands(a.distinct),
        thousands(a.largest),
        a.median,
        percent(a.one_prefix),
        percent(a.top_hundredth)
    );

    let l = r.loads;
    let rows_kept = l.stats[0].rows + l.stats[1].rows;
    let below: u64 = l.stats.iter().map(|s| s.below_threshold).sum();
    let (v4, v6) = l.table.len();
    let (ranges4, ranges6) = l.table.ranges();
    let heap = l.table.heap_bytes();
    let bytes_per_row = heap as f64 / rows_kept as f64;
    let _ = writeln!(
        out,
        "### Load: `ris::read_file` of both files and `TableBuilder::build` (what `origins::load` does), visibility threshold {} peers, median of {LOAD_RUNS}\n",
        r.min_peers
    );
    let _ = writeln!(out, "| Figure | Value |\n|---|---:|");
    let fig = |out: &mut String, name: &str, value: String| {
        let _ = writeln!(out, "| {name} | {value} |");
    };
    fig(&mut out, "read + parse IPv4 file (ms)", ms(l.read[0]));
    fig(&mut out, "read + parse IPv6 file (ms)", ms(l.read[1]));
    fig(&mut out, "build (ms)", ms(l.build));
    fig(&mut out, "total (ms)", ms(l.total));
    fig(
        &mut out,
        "rows kept / below the threshold",
        format!("{} / {}", thousands(rows_kept), thousands(below)),
    );
    fig(
        &mut out,
        "announcements IPv4 / IPv6",
        format!("{} / {}", thousands(v4), thousands(v6)),
    );
    fig(
        &mut out,
        "ranges after flattening IPv4 / IPv6",
        format!("{} / {}", thousands(ranges4), thousands(ranges6)),
    );
    fig(
        &mut out,
        "heap (`heap_bytes()`, MiB)",
        format!("{:.1}", heap as f64 / f64::from(1 << 20)),
    );
    fig(
        &mut out,
        "heap per row kept / per announcement (bytes)",
        format!("{bytes_per_row:.1} / {:.1}", heap as f64 / (v4 + v6) as f64),
    );
    let m = &l.memory;
    fig(
        &mut out,
        "VmRSS before / after the first load, table held (MiB)",
        format!("{} / {}", mib_of_kib(m.rss_before), mib_of_kib(m.rss_after)),
    );
    fig(
        &mut out,
        "VmRSS increase with the table held (MiB)",
        mib_of_kib(m.rss_after.saturating_sub(m.rss_before)),
    );
    fig(
        &mut out,
        "peak RSS increase during the load (VmHWM − VmRSS before, MiB)",
        m.hwm_after.map_or_else(
            || "n/a (VmHWM could not be reset)".to_owned(),
            |hwm| mib_of_kib(hwm.saturating_sub(m.rss_before)),
        ),
    );

    let _ = writeln!(
        out,
        "\n### Lookups, one thread: `OriginTable::lookup` of {} addresses per set, median of {LOOKUP_PASSES} interleaved passes\n",
        thousands(LOOKUPS)
    );
    let _ = writeln!(
        out,
        "| Family | Addresses | found | ns/lookup | lookups/s |\n|---|---|---:|---:|---:|"
    );
    for row in &r.lookups {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} |",
            row.family,
            row.set,
            percent(row.found),
            row.ns,
            thousands(format!("{:.0}", 1e9 / row.ns))
        );
    }
    let _ = writeln!(
        out,
        "\nChecked first: {} addresses (part of each set, and the first and last address of announced prefixes and one either side) give the same prefix, origin, peers and MOAS flag as a naive longest-prefix match over a sorted Vec of the files' rows, read independently of `ris`.",
        thousands(r.sample)
    );

    let _ = writeln!(
        out,
        "\n### `announced_by` for the ten ASes with the most prefixes (collected into a Vec, median of {ANNOUNCED_BY_PASSES})\n"
    );
    let _ = writeln!(
        out,
        "| AS | IPv4 prefixes | IPv6 prefixes | µs | ns/prefix |\n|---:|---:|---:|---:|---:|"
    );
    for a in &r.announced_by {
        let secs = a.took.as_secs_f64();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} |",
            a.asn,
            thousands(a.v4),
            thousands(a.v6),
            secs * 1e6,
            secs * 1e9 / (a.v4 + a.v6).max(1) as f64
        );
    }

    let slowest = r
        .lookups
        .iter()
        .max_by(|a, b| a.ns.total_cmp(&b.ns))
        .expect("some lookups");
    let _ = writeln!(out, "\n### Targets\n");
    let _ = writeln!(out, "| Target | Figure | |\n|---|---:|---|");
    let _ = writeln!(
        out,
        "| memory ≤ {TARGET_BYTES_PER_ROW:.0} bytes per row | {bytes_per_row:.1} bytes per row kept | {} |",
        verdict(bytes_per_row <= TARGET_BYTES_PER_ROW)
    );
    let _ = writeln!(
        out,
        "| a lookup ≤ 1 µs | {:.1} ns, the slowest set ({}, {}) | {} |",
        slowest.ns,
        slowest.family,
        slowest.set,
        verdict(slowest.ns <= TARGET_LOOKUP_NS)
    );
    out
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--list") {
        return Ok(());
    }
    let started = Instant::now();
    let dir = data_dir();
    let paths = FAMILIES.map(|spec| dir.join(spec.file_name));
    let current = FAMILIES
        .iter()
        .zip(&paths)
        .all(|(spec, path)| is_current(spec, path));
    let generate_only = args.iter().any(|arg| arg == "--generate");
    if !current || generate_only {
        generate(&paths)?;
        eprintln!(
            "bench: wrote {} and {} ({:.1} s)",
            paths[0].display(),
            paths[1].display(),
            started.elapsed().as_secs_f64()
        );
        if generate_only {
            return Ok(());
        }
        // Measure in a process that never held the generator's memory.
        let status = Command::new(std::env::current_exe()?)
            .args(&args[1..])
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let load_at_start = load_average();
    let min_peers = OriginsConfig::default().min_peers;

    let loads = measure_loads(&paths, min_peers)?;
    for (path, stats) in paths.iter().zip(&loads.stats) {
        ensure!(
            stats.malformed == 0,
            "{}: {} malformed rows",
            path.display(),
            stats.malformed
        );
    }
    eprintln!(
        "bench: {LOAD_RUNS} loads done ({:.0} s)",
        started.elapsed().as_secs_f64()
    );

    let mut references = Vec::new();
    let mut parsed = Vec::new();
    let mut file_bytes = [(0, 0); 2];
    for (i, (spec, path)) in FAMILIES.iter().zip(&paths).enumerate() {
        let (rows, plain) = read_dump(path, spec.bits)?;
        file_bytes[i] = (std::fs::metadata(path)?.len(), plain);
        references.push(Reference::new(spec.bits, &rows, min_peers)?);
        parsed.push(rows);
    }
    let shapes = [0, 1].map(|i| shape(FAMILIES[i].bits, &parsed[i], &references[i]));
    let ases = as_distribution(&[&parsed[0], &parsed[1]]);
    drop(parsed);

    let mut rng = StdRng::seed_from_u64(SEED ^ 0x0100_c0b5);
    let families: Vec<AddressSets> = FAMILIES
        .iter()
        .zip(&references)
        .map(|(spec, reference)| address_sets(spec, reference, &mut rng))
        .collect();
    let mut sample = 0;
    for (sets, reference) in families.iter().zip(&references) {
        let addresses = reference_sample(sets, reference, &mut rng);
        check_against_reference(&loads.table, reference, &addresses)?;
        sample += addresses.len();
    }
    eprintln!(
        "bench: {sample} addresses agree with the reference ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let lookups = measure_lookups(&loads.table, &families);
    let announced_by = measure_announced_by(&loads.table, &references)?;

    let conditions = format!(
        "{}; 1-minute load average {load_at_start} at the start, {} at the end",
        machine(),
        load_average()
    );
    print!(
        "{}",
        report(&Report {
            conditions,
            paths: &paths,
            file_bytes,
            shapes,
            ases,
            min_peers,
            loads: &loads,
            lookups,
            sample,
            announced_by,
        })
    );
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
