//! RIS whois dumps (`riswhoisdump.IPv4.gz`, `riswhoisdump.IPv6.gz`): one announcement per line,
//! `ORIGIN<TAB>PREFIX<TAB>SEEN_BY_PEERS`, `%` comment lines, ORIGIN an AS number or an AS_SET
//! `{A,B,...}`. Gzip or plain text, told apart by the gzip magic.
use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use crate::{
    origins::table::{OriginAs, TableBuilder},
    prefix::Prefix,
};

/// The longest line read; longer ones are malformed (a RIS row is under 100 bytes).
const MAX_LINE: u64 = 4096;
/// At most this many AS_SET members are kept.
const MAX_SET_MEMBERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RisError {
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// A truncated or corrupt gzip stream, or a read error, after `line` whole lines.
    #[error("{}:{line}: reading failed (truncated or corrupt?): {source}", path.display())]
    Read {
        path: PathBuf,
        line: u64,
        source: std::io::Error,
    },
    #[error(
        "{}: {count} malformed lines of {lines}, too many to trust the file; the first, line {first_line}: {first_reason}",
        path.display()
    )]
    TooManyMalformed {
        path: PathBuf,
        count: u64,
        lines: u64,
        first_line: u64,
        first_reason: String,
    },
    #[error("{}: no announcements in {lines} lines", path.display())]
    Empty { path: PathBuf, lines: u64 },
}

/// One row of a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RisRow {
    pub origin: OriginAs,
    pub prefix: Prefix,
    pub peers: u32,
}

/// What reading a file found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    pub lines: u64,
    /// Rows added to the table.
    pub rows: u64,
    /// Rows seen by fewer peers than the visibility threshold (left out).
    pub below_threshold: u64,
    /// Rows whose origin is an AS_SET (kept, flagged).
    pub as_sets: u64,
    pub malformed: u64,
    /// The first malformed line: its number and what was wrong.
    pub first_malformed: Option<(u64, String)>,
}

/// A row, a comment or blank line (`None`), or what is wrong with it.
///
/// # Errors
/// The reason the row is malformed, for the operator.
pub fn parse_row(line: &str) -> Result<Option<RisRow>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.starts_with('%') {
        return Ok(None);
    }
    let mut fields = line.split('\t');
    let (Some(origin), Some(prefix), Some(peers), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected three tab-separated fields: origin, prefix, peers".to_owned());
    };
    let origin = parse_origin(origin.trim())?;
    let (prefix, _) = Prefix::parse(prefix).map_err(|err| err.to_string())?;
    let peers = peers
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("seen-by-peers {peers:?} is not a count"))?;
    Ok(Some(RisRow {
        origin,
        prefix,
        peers,
    }))
}

fn parse_origin(text: &str) -> Result<OriginAs, String> {
    let asn = |part: &str| {
        let part = part.trim();
        let digits = part
            .strip_prefix("AS")
            .or_else(|| part.strip_prefix("as"))
            .unwrap_or(part);
        digits
            .parse::<u32>()
            .ok()
            .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("origin {part:?} is not an AS number"))
    };
    if let Some(inner) = text.strip_prefix('{') {
        let inner = inner
            .strip_suffix('}')
            .ok_or_else(|| format!("AS_SET {text:?} has no closing brace"))?;
        let mut members = inner.split(',').map(asn).collect::<Result<Vec<_>, _>>()?;
        members.sort_unstable();
        members.dedup();
        members.truncate(MAX_SET_MEMBERS);
        return match members.as_slice() {
            [] => Err("an empty AS_SET".to_owned()),
            // A set of one is that AS.
            [only] => Ok(OriginAs::Single(*only)),
            _ => Ok(OriginAs::Set(members.into_boxed_slice())),
        };
    }
    asn(text).map(OriginAs::Single)
}

/// Read the dump at `path` (gzip or plain) into `builder`, keeping rows seen by at least
/// `min_peers` peers.
///
/// Malformed rows are skipped and counted, unless they are more than one in a hundred (and
/// more than ten): then the whole file is refused, since it is not what we think it is.
///
/// # Errors
/// The file cannot be opened or is not a regular file, the stream is truncated or corrupt
/// (naming the line reached), too many rows are malformed, or it holds no announcement.
pub fn read_file(
    path: &Path,
    min_peers: u32,
    builder: &mut TableBuilder,
) -> Result<FileStats, RisError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking, so opening a FIFO returns at once (and is refused below) instead of
    // waiting for a writer; a regular file reads the same either way.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| RisError::Open {
            path: path.to_owned(),
            source,
        })?;
    // A FIFO or device would block or never end.
    let is_file = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    if !is_file {
        return Err(RisError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let gzip = reader
        .fill_buf()
        .map(|head| head.starts_with(&[0x1f, 0x8b]))
        .map_err(|source| RisError::Read {
            path: path.to_owned(),
            line: 0,
            source,
        })?;
    if gzip {
        let decoder = flate2::bufread::MultiGzDecoder::new(reader);
        read_rows(
            path,
            BufReader::with_capacity(1 << 16, decoder),
            min_peers,
            builder,
        )
    } else {
        read_rows(path, reader, min_peers, builder)
    }
}

fn read_rows(
    path: &Path,
    mut reader: impl BufRead,
    min_peers: u32,
    builder: &mut TableBuilder,
) -> Result<FileStats, RisError> {
    let mut stats = FileStats::default();
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|source| RisError::Read {
                path: path.to_owned(),
                line: stats.lines,
                source,
            })?;
        if read == 0 {
            break;
        }
        stats.lines += 1;
        let outcome = if line.last() != Some(&b'\n') && read as u64 == MAX_LINE {
            skip_rest_of_line(&mut reader).map_err(|source| RisError::Read {
                path: path.to_owned(),
                line: stats.lines,
                source,
            })?;
            Err(format!("longer than {MAX_LINE} bytes"))
        } else {
            std::str::from_utf8(&line)
                .map_err(|_| "not UTF-8 text".to_owned())
                .and_then(parse_row)
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(row)) if row.peers < min_peers => stats.below_threshold += 1,
            Ok(Some(row)) => {
                stats.rows += 1;
                if row.origin.is_set() {
                    stats.as_sets += 1;
                }
                builder.add(row.prefix, row.origin, row.peers);
            }
            Err(reason) => {
                stats.malformed += 1;
                if stats.first_malformed.is_none() {
                    stats.first_malformed = Some((stats.lines, reason));
                }
            }
        }
    }
    if stats.malformed > 10 && stats.malformed * 100 > stats.lines {
        let (first_line, first_reason) = stats.first_malformed.take().unwrap_or_default();
        return Err(RisError::TooManyMalformed {
            path: path.to_owned(),
            count: stats.malformed,
            lines: stats.lines,
            first_line,
            first_reason,
        });
    }
    if stats.rows == 0 && stats.below_threshold == 0 {
        return Err(RisError::Empty {
            path: path.to_owned(),
            lines: stats.lines,
        });
    }
    Ok(stats)
}

fn skip_rest_of_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        if let Some(end) = memchr::memchr(b'\n', buffer) {
            reader.consume(end + 1);
            return Ok(());
        }
        let len = buffer.len();
        reader.consume(len);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xdpguard-ris-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    const DUMP: &str = "% This is the RIS whois dump\n\
        % fields: origin, prefix, seen-by peers\n\
        \n\
        64500\t203.0.113.0/24\t312\n\
        64501\t198.51.100.0/24\t9\n\
        {64502,64503}\t192.0.2.0/24\t40\n\
        {64504}\t100.64.0.0/10\t40\n\
        64505\t2001:db8::/32\t200\n";

    #[test]
    fn rows_comments_sets_and_the_visibility_threshold() {
        let path = scratch("plain.txt");
        std::fs::write(&path, DUMP).unwrap();
        let mut builder = TableBuilder::new();
        let stats = read_file(&path, 10, &mut builder).unwrap();
        assert_eq!(stats.lines, 8);
        assert_eq!(stats.rows, 4);
        assert_eq!(stats.below_threshold, 1);
        assert_eq!(stats.as_sets, 1);
        assert_eq!(stats.malformed, 0);
        let table = builder.build();
        let at = |a: &str| {
            table
                .lookup(a.parse().unwrap())
                .map(|x| x.origin.to_string())
        };
        assert_eq!(at("203.0.113.9").as_deref(), Some("AS64500"));
        assert_eq!(at("198.51.100.9"), None, "seen by 9 < 10 peers");
        assert_eq!(at("192.0.2.1").as_deref(), Some("{AS64502,AS64503}"));
        assert_eq!(at("100.64.0.1").as_deref(), Some("AS64504"));
        assert_eq!(at("2001:db8:1::1").as_deref(), Some("AS64505"));
    }

    #[test]
    fn gzip_is_read_like_plain_text() {
        let path = scratch("dump.gz");
        std::fs::write(&path, gzip(DUMP.as_bytes())).unwrap();
        let mut builder = TableBuilder::new();
        let stats = read_file(&path, 1, &mut builder).unwrap();
        assert_eq!(stats.rows, 5);
        assert_eq!(builder.build().len(), (4, 1));
    }

    #[test]
    fn a_truncated_gzip_names_the_file_and_the_line_reached() {
        let mut text = String::new();
        for i in 0..20_000u32 {
            text.push_str(&format!(
                "{}\t10.{}.{}.0/24\t50\n",
                64500 + i,
                i >> 8,
                i & 255
            ));
        }
        let whole = gzip(text.as_bytes());
        let path = scratch("truncated.gz");
        std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
        let err = read_file(&path, 10, &mut TableBuilder::new()).unwrap_err();
        let RisError::Read { line, .. } = &err else {
            panic!("{err}")
        };
        assert!(*line > 0 && *line < 20_000, "{line}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{}:{line}:", path.display())),
            "{message}"
        );

        let mut corrupt = whole.clone();
        let middle = corrupt.len() / 2;
        for byte in &mut corrupt[middle..middle + 64] {
            *byte ^= 0x5a;
        }
        std::fs::write(&path, &corrupt).unwrap();
        assert!(matches!(
            read_file(&path, 10, &mut TableBuilder::new()),
            Err(RisError::Read { .. })
        ));
    }

    #[test]
    fn a_few_malformed_rows_are_skipped_and_many_refuse_the_file() {
        let mut text = String::new();
        for i in 0..500u32 {
            text.push_str(&format!(
                "{}\t10.{}.{}.0/24\t50\n",
                64500 + i,
                i >> 8,
                i & 255
            ));
        }
        let path = scratch("few.txt");
        std::fs::write(
            &path,
            format!("{text}AS12x\t10.9.9.0/24\t50\n64500\t10.9.9.0/33\t50\n"),
        )
        .unwrap();
        let stats = read_file(&path, 10, &mut TableBuilder::new()).unwrap();
        assert_eq!((stats.rows, stats.malformed), (500, 2));
        let (line, reason) = stats.first_malformed.unwrap();
        assert_eq!(line, 501);
        assert!(reason.contains("AS12x"), "{reason}");

        let mut bad = String::new();
        for i in 0..50 {
            bad.push_str(&format!("<html>{i}</html>\n"));
        }
        std::fs::write(&path, format!("{bad}64500\t10.0.0.0/8\t50\n")).unwrap();
        let err = read_file(&path, 10, &mut TableBuilder::new()).unwrap_err();
        assert!(
            matches!(
                err,
                RisError::TooManyMalformed {
                    count: 50,
                    first_line: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_empty_file_a_fifo_and_a_missing_file_are_errors() {
        let path = scratch("empty.txt");
        std::fs::write(&path, "% nothing\n").unwrap();
        assert!(matches!(
            read_file(&path, 10, &mut TableBuilder::new()),
            Err(RisError::Empty { lines: 1, .. })
        ));
        let fifo = scratch("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_file(&fifo, 10, &mut TableBuilder::new()),
            Err(RisError::NotAFile { .. })
        ));
        assert!(matches!(
            read_file(&scratch("missing"), 10, &mut TableBuilder::new()),
            Err(RisError::Open { .. })
        ));
    }

    #[test]
    fn row_errors_say_what_is_wrong() {
        for (line, wanted) in [
            ("64500 203.0.113.0/24 12", "three tab-separated"),
            ("{64500,64501\t203.0.113.0/24\t12", "closing brace"),
            ("{}\t203.0.113.0/24\t12", "not an AS number"),
            ("64500\tnot-a-prefix\t12", "not an IP address"),
            ("64500\t203.0.113.0/24\tmany", "not a count"),
            ("4294967296\t203.0.113.0/24\t1", "not an AS number"),
        ] {
            let err = parse_row(line).unwrap_err();
            assert!(err.contains(wanted), "{line}: {err}");
        }
        assert_eq!(
            parse_row("AS64500\t203.0.113.7/24\t12\r\n")
                .unwrap()
                .unwrap(),
            RisRow {
                origin: OriginAs::Single(64500),
                prefix: Prefix::parse("203.0.113.0/24").unwrap().0,
                peers: 12
            }
        );
    }
}
