//! List files (`xdpguard block --file`, `allowlist.files`) in the ipset / FireHOL netset
//! shape: one address or CIDR per line, comments, blank lines.
use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
};

use crate::prefix::{Prefix, PrefixError};

/// Lines longer than this (without the line break) are rejected, not buffered.
pub const MAX_LIST_LINE: usize = 4096;

/// What a list file holds: the good lines and the bad ones, by line number (1-based).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrefixList {
    /// (line number, prefix), in file order; duplicates are kept.
    pub prefixes: Vec<(usize, Prefix)>,
    pub rejected: Vec<RejectedLine>,
    /// Lines whose prefix had host bits set (`192.0.2.7/24`), read as the network.
    pub host_bits_cleared: Vec<usize>,
}

/// A line that is not an address or prefix.
#[derive(Debug, PartialEq, Eq)]
pub struct RejectedLine {
    pub line: usize,
    /// The line, trimmed, invalid UTF-8 replaced; the first 64 bytes of an overlong line.
    pub text: String,
    pub reason: RejectReason,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("line is longer than {MAX_LIST_LINE} bytes")]
    TooLong,
    #[error("line is not UTF-8 text")]
    NotUtf8,
}

/// Read a list file; see [`parse_prefix_list`].
///
/// # Errors
/// When the file cannot be opened or read.
pub fn read_prefix_list(path: &Path) -> Result<PrefixList, io::Error> {
    parse_prefix_list(BufReader::with_capacity(1 << 16, open_regular(path)?))
}

/// Open `path` for reading only if it is a regular file (a symlink to one is fine).
///
/// A FIFO would block `open` until a writer comes (stalling a reload, or the CLI), a device
/// may act on being opened: both are looked at before opening, and checked again on the
/// descriptor (opened non-blocking) in case the path was swapped in between.
///
/// # Errors
/// When the path is missing, unreadable, or not a regular file.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let not_regular = |kind: std::fs::FileType| {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a file"
        };
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file"),
        )
    };
    let kind = std::fs::metadata(path)?.file_type();
    if !kind.is_file() {
        return Err(not_regular(kind));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(not_regular(kind));
    }
    Ok(file)
}

/// Read list-file lines: one address or CIDR per line (`192.0.2.1`, `198.51.100.0/24`,
/// `2001:db8::/32`; IPv4-mapped IPv6 becomes IPv4), blank lines, comments from `#` or `;` to
/// the end of the line (FireHOL netsets use `#`, Spamhaus DROP `;`), LF or CRLF, surrounding
/// whitespace, a UTF-8 byte order mark. Bad lines are collected, never fatal. Lines over
/// [`MAX_LIST_LINE`] bytes are rejected and skipped without being buffered whole. Good lines
/// cost no allocation beyond the result.
///
/// # Errors
/// When reading fails.
pub fn parse_prefix_list<R: BufRead>(mut reader: R) -> Result<PrefixList, io::Error> {
    let mut list = PrefixList::default();
    let mut buf = Vec::with_capacity(256);
    let mut number = 0;
    loop {
        buf.clear();
        let read = read_line_bounded(&mut reader, &mut buf)?;
        if read == LineRead::Eof {
            break;
        }
        number += 1;
        let mut line = buf.as_slice();
        if number == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let comment = line.iter().position(|b| *b == b'#' || *b == b';');
        // An overlong line is fine when its data ends in the part that was kept.
        if read == LineRead::TooLong && comment.is_none() {
            let head = &line[..line.len().min(64)];
            list.rejected.push(RejectedLine {
                line: number,
                text: format!("{}...", String::from_utf8_lossy(head.trim_ascii())),
                reason: RejectReason::TooLong,
            });
            continue;
        }
        let content = comment.map_or(line, |at| &line[..at]).trim_ascii();
        if content.is_empty() {
            continue;
        }
        let reason = match std::str::from_utf8(content) {
            Err(_) => RejectReason::NotUtf8,
            Ok(text) => match Prefix::parse(text) {
                Ok((prefix, cleared)) => {
                    list.prefixes.push((number, prefix));
                    if cleared {
                        list.host_bits_cleared.push(number);
                    }
                    continue;
                }
                Err(err) => RejectReason::Prefix(err),
            },
        };
        list.rejected.push(RejectedLine {
            line: number,
            text: String::from_utf8_lossy(line.trim_ascii()).into_owned(),
            reason,
        });
    }
    Ok(list)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineRead {
    Eof,
    Line,
    /// Longer than [`MAX_LIST_LINE`]: `buf` holds the first bytes, the rest was skipped.
    TooLong,
}

/// Append the next line, without its `\n`, to `buf`: at most [`MAX_LIST_LINE`] + 2 bytes of
/// it (the content, a CR, and one byte to tell that it is too long); the rest is skipped.
fn read_line_bounded<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    const KEEP: usize = MAX_LIST_LINE + 2;
    let finish = |buf: &[u8]| {
        if buf.strip_suffix(b"\r").unwrap_or(buf).len() > MAX_LIST_LINE {
            LineRead::TooLong
        } else {
            LineRead::Line
        }
    };
    let mut started = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(if started { finish(buf) } else { LineRead::Eof });
        }
        started = true;
        let newline = available.iter().position(|b| *b == b'\n');
        let end = newline.unwrap_or(available.len());
        let room = KEEP.saturating_sub(buf.len());
        buf.extend_from_slice(&available[..end.min(room)]);
        reader.consume(newline.map_or(end, |at| at + 1));
        if newline.is_some() {
            return Ok(finish(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fmt::{self, Write as _},
        io::Cursor,
    };

    use super::*;

    fn read_list(text: &[u8]) -> PrefixList {
        parse_prefix_list(Cursor::new(text)).unwrap()
    }

    fn accepted(list: &PrefixList) -> Vec<(usize, String)> {
        list.prefixes
            .iter()
            .map(|(line, prefix)| (*line, prefix.to_string()))
            .collect()
    }

    #[test]
    fn prefix_list_reads_comments_crlf_ipv6_and_mapped_ipv4() {
        let list = read_list(
            b"\xEF\xBB\xBF# FireHOL netset\r\n\
              203.0.113.1\r\n\
              \r\n\
              \t 203.0.113.0/24 # a net  \n\
              # 192.0.2.1\n\
              2001:db8::/32\n\
              ::ffff:198.51.100.7\n\
              ::ffff:198.51.100.0/120\n\
              1.10.16.0/20 ; SBL256894\n\
              198.51.100.77/24\n\
              198.51.100.9",
        );
        assert_eq!(
            accepted(&list),
            vec![
                (2, "203.0.113.1/32".to_owned()),
                (4, "203.0.113.0/24".to_owned()),
                (6, "2001:db8::/32".to_owned()),
                (7, "198.51.100.7/32".to_owned()),
                (8, "198.51.100.0/24".to_owned()),
                (9, "1.10.16.0/20".to_owned()),
                (10, "198.51.100.0/24".to_owned()),
                (11, "198.51.100.9/32".to_owned()),
            ]
        );
        assert!(list.rejected.is_empty(), "{:?}", list.rejected);
        assert_eq!(list.host_bits_cleared, vec![10]);
    }

    #[test]
    fn prefix_list_collects_every_bad_line() {
        let list = read_list(
            b"not-an-ip\n\
              203.0.113.1\n\
              10.0.0.300/8  # typo\r\n\
              10.0.0.0/33\n\
              2001:db8::/129\n\
              1.2.3.4 5.6.7.8\n\
              \xFF\xFE\n\
              192.0.2.1\n",
        );
        assert_eq!(
            accepted(&list),
            vec![
                (2, "203.0.113.1/32".to_owned()),
                (8, "192.0.2.1/32".to_owned()),
            ]
        );
        let rejected: Vec<(usize, &str)> = list
            .rejected
            .iter()
            .map(|r| (r.line, r.text.as_str()))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (1, "not-an-ip"),
                (3, "10.0.0.300/8  # typo"),
                (4, "10.0.0.0/33"),
                (5, "2001:db8::/129"),
                (6, "1.2.3.4 5.6.7.8"),
                (7, "\u{FFFD}\u{FFFD}"),
            ]
        );
        assert_eq!(
            list.rejected[1].reason.to_string(),
            "\"10.0.0.300/8\" is not an IP address or CIDR prefix"
        );
        assert!(matches!(list.rejected[2].reason, RejectReason::Prefix(_)));
        assert_eq!(list.rejected[5].reason, RejectReason::NotUtf8);
    }

    #[test]
    fn prefix_list_bounds_line_length() {
        let mut text = Vec::new();
        // Exactly at the limit (padding is whitespace), with CRLF: accepted.
        let at_limit = format!("{:<width$}", "192.0.2.1", width = MAX_LIST_LINE);
        text.extend_from_slice(format!("{at_limit}\r\n").as_bytes());
        // One byte over: rejected.
        let over = format!("{:<width$}x", "192.0.2.2", width = MAX_LIST_LINE);
        text.extend_from_slice(format!("{over}\n").as_bytes());
        // A megabyte without a newline, then more lines: skipped, reading goes on.
        text.extend(std::iter::repeat_n(b'7', 1 << 20));
        text.extend_from_slice(b"\n192.0.2.3\n");
        // A long trailing comment is fine: the data ends in the part that is kept.
        text.extend_from_slice(format!("192.0.2.4 # {}\n", "c".repeat(10_000)).as_bytes());
        // A long comment line too.
        text.extend_from_slice(format!("#{}\n", "c".repeat(10_000)).as_bytes());
        // And an overlong last line with no newline at all.
        text.extend(std::iter::repeat_n(b'8', 5000));
        // Small reads, so lines span many buffer refills.
        let list = parse_prefix_list(BufReader::with_capacity(7, Cursor::new(text))).unwrap();
        assert_eq!(
            accepted(&list),
            vec![
                (1, "192.0.2.1/32".to_owned()),
                (4, "192.0.2.3/32".to_owned()),
                (5, "192.0.2.4/32".to_owned()),
            ]
        );
        let rejected: Vec<usize> = list.rejected.iter().map(|r| r.line).collect();
        assert_eq!(rejected, vec![2, 3, 7]);
        assert!(
            list.rejected
                .iter()
                .all(|r| r.reason == RejectReason::TooLong && r.text.len() <= 67)
        );
        assert_eq!(
            list.rejected[0].reason.to_string(),
            "line is longer than 4096 bytes"
        );
    }

    #[test]
    fn prefix_list_reads_empty_and_comment_only_files() {
        assert_eq!(read_list(b""), PrefixList::default());
        assert_eq!(read_list(b"\n\n# nothing\r\n  \n"), PrefixList::default());
    }

    #[test]
    fn prefix_list_reads_a_million_lines() {
        let mut text = String::with_capacity(20 << 20);
        for i in 0..1_000_000_u32 {
            let [a, b, c, d] = i.to_be_bytes();
            let _: fmt::Result = writeln!(text, "{}.{b}.{c}.{d}", a + 10);
        }
        let list = read_list(text.as_bytes());
        assert_eq!(list.prefixes.len(), 1_000_000);
        assert_eq!(list.prefixes[999_999].0, 1_000_000);
        assert!(list.rejected.is_empty());
    }

    #[test]
    fn only_regular_files_are_opened_so_a_fifo_never_blocks() {
        let dir = std::env::temp_dir().join(format!("xdpguard-list-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("list.fifo");
        let path =
            std::ffi::CString::new(fifo.clone().into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        // No writer: a plain open would wait forever.
        let err = read_prefix_list(&fifo).unwrap_err();
        assert!(
            err.to_string().contains("a FIFO, not a regular file"),
            "{err}"
        );
        let err = read_prefix_list(&dir).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_prefix_list_opens_files_and_reports_missing_ones() {
        let path = std::env::temp_dir().join(format!("xdpguard-list-{}", std::process::id()));
        std::fs::write(&path, "203.0.113.1\nnope\n").unwrap();
        let list = read_prefix_list(&path).unwrap();
        assert_eq!(list.prefixes.len(), 1);
        assert_eq!(list.rejected.len(), 1);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            read_prefix_list(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
