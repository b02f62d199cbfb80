//! Log inputs. [`FileFollower`] follows a file like `tail -F`: it survives rename rotation
//! (finishes the old file, then reads the new one from its start), copytruncate (starts over
//! when the file shrinks), and a file that appears later; it reports its position so a
//! restart neither re-reads nor skips lines. Lines over [`MAX_LINE_BYTES`] are cut and
//! counted; bytes are passed on as they are (the caller decides about UTF-8).
//!
//! Nothing here waits: paths are looked at (`stat`) before they are opened and opened
//! non-blocking, anything but the kind of file an input reads is refused (and looked at again
//! later), reads are non-blocking and bounded per round ([`Budget`]), and standard input, which
//! cannot be made non-blocking without changing it for others, is read on a thread of its own.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write as _},
    os::{
        fd::{AsRawFd, RawFd},
        unix::fs::{FileTypeExt as _, MetadataExt, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Longer lines are cut here.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// Where to start reading the first time the file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    /// Resume a saved position: used if the file is still the same inode and at least that
    /// long, else the file is read from its start (it was rotated or truncated meanwhile).
    At {
        inode: u64,
        offset: u64,
    },
}

/// Cuts a byte stream into lines, at most [`MAX_LINE_BYTES`] each.
#[derive(Default)]
pub struct LineSplitter {
    /// The unfinished last line.
    partial: Vec<u8>,
    /// Inside an over-long line: drop bytes until its end.
    skipping: bool,
    pub truncated_lines: u64,
}

impl LineSplitter {
    /// Bytes held back until their line ends.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Forget an unfinished line (the stream started over).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.skipping = false;
    }

    /// Hand out every line `bytes` completes.
    pub fn feed(&mut self, mut bytes: &[u8], line: &mut dyn FnMut(&[u8])) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            if !self.skipping {
                let room = MAX_LINE_BYTES - self.partial.len();
                self.partial.extend_from_slice(&bytes[..newline.min(room)]);
                line(&self.partial);
            }
            self.reset();
            bytes = &bytes[newline + 1..];
        }
        if !self.skipping {
            let room = MAX_LINE_BYTES - self.partial.len();
            if bytes.len() > room {
                // Over-long: hand out what fits now, drop the rest of the line.
                self.partial.extend_from_slice(&bytes[..room]);
                line(&self.partial);
                self.partial.clear();
                self.skipping = true;
                self.truncated_lines += 1;
            } else {
                self.partial.extend_from_slice(bytes);
            }
        }
    }

    /// The stream ended: an unfinished last line is still a line.
    pub fn flush(&mut self, line: &mut dyn FnMut(&[u8])) {
        if !self.partial.is_empty() && !self.skipping {
            line(&self.partial);
        }
        self.reset();
    }
}

/// How much one input may read in one round of the logs thread. A burst is taken in slices
/// so that between them the thread publishes its counters and takes its commands (reload,
/// stop): a million waiting lines never make a scrape or a SIGTERM wait for them.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    bytes: usize,
    until: Instant,
}

impl Budget {
    /// Bytes per input per round: a few thousand lines, a few milliseconds of scoring.
    pub const ROUND_BYTES: usize = 1 << 20;
    /// ...and at most this long, whatever the rulesets cost per line.
    pub const ROUND_TIME: Duration = Duration::from_millis(50);

    /// One round's worth.
    pub fn round() -> Self {
        Self {
            bytes: Self::ROUND_BYTES,
            until: Instant::now() + Self::ROUND_TIME,
        }
    }

    /// `bytes`, with no time limit (tests).
    pub fn of_bytes(bytes: usize) -> Self {
        Self {
            bytes,
            until: Instant::now() + Duration::from_secs(3600),
        }
    }

    /// `bytes` were read.
    pub fn take(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Whether the round is over for this input.
    pub fn spent(&self) -> bool {
        self.bytes == 0 || Instant::now() >= self.until
    }
}

/// What a poll left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Everything there was is read.
    CaughtUp,
    /// The budget ran out first: poll again soon, without sleeping.
    MoreWaiting,
}

/// What a path turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    Regular,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Directory,
    Other,
}

impl FileKind {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let kind = meta.file_type();
        if kind.is_file() {
            Self::Regular
        } else if kind.is_fifo() {
            Self::Fifo
        } else if kind.is_socket() {
            Self::Socket
        } else if kind.is_char_device() {
            Self::CharDevice
        } else if kind.is_block_device() {
            Self::BlockDevice
        } else if kind.is_dir() {
            Self::Directory
        } else {
            Self::Other
        }
    }

    /// The metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::CharDevice => "char_device",
            Self::BlockDevice => "block_device",
            Self::Directory => "directory",
            Self::Other => "other",
        }
    }

    /// For messages: "... is a FIFO".
    pub const fn described(self) -> &'static str {
        match self {
            Self::Regular => "a regular file",
            Self::Fifo => "a FIFO",
            Self::Socket => "a socket",
            Self::CharDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Directory => "a directory",
            Self::Other => "not a file",
        }
    }
}

/// An input's refusals of what its path named: the one in force, and how many so far by what
/// was found. Each change is news once (one warning, one count), so a FIFO left in place is not
/// reported on every poll, and one swapped for a socket is reported again.
#[derive(Debug, Default)]
pub struct Refusals {
    current: Option<FileKind>,
    counts: BTreeMap<FileKind, u64>,
}

impl Refusals {
    /// The path names `found`: whether that is news.
    pub fn refuse(&mut self, found: FileKind) -> bool {
        if self.current == Some(found) {
            return false;
        }
        self.current = Some(found);
        *self.counts.entry(found).or_default() += 1;
        true
    }

    /// The path is readable again, or gone: whether a refusal ended.
    pub fn clear(&mut self) -> bool {
        self.current.take().is_some()
    }

    /// What the path names while it is refused.
    pub const fn current(&self) -> Option<FileKind> {
        self.current
    }

    /// (what was found, times), by label.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().map(|(kind, n)| (kind.label(), *n))
    }
}

/// Open `path` for reading so that the open itself cannot wait: non-blocking (a FIFO opened
/// read-only would wait for a writer), no controlling terminal, closed on exec.
fn open_nonblocking(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
}

/// Set `O_NONBLOCK` on a descriptor we own (a pipe end).
///
/// # Errors
/// When `fcntl` fails.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The whole of a small state file (saved positions), read without ever waiting: anything but
/// a regular file in its place, or a file over `max_bytes`, is an error naming the path and
/// what it is. `None`: there is no file.
///
/// # Errors
/// As above, or when it cannot be read.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> io::Result<Option<Vec<u8>>> {
    let not_regular = |kind: FileKind| {
        io::Error::other(format!(
            "{} is {}, not a regular file",
            path.display(),
            kind.described()
        ))
    };
    // Looked at before it is opened: a device is never opened at all.
    match std::fs::metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
        Ok(meta) if FileKind::of(&meta) != FileKind::Regular => {
            return Err(not_regular(FileKind::of(&meta)));
        }
        Ok(_) => {}
    }
    let file = match open_nonblocking(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    // And again through the descriptor: the path may have changed between the two looks.
    let meta = file.metadata()?;
    if FileKind::of(&meta) != FileKind::Regular {
        return Err(not_regular(FileKind::of(&meta)));
    }
    if meta.len() > max_bytes {
        return Err(io::Error::other(format!(
            "{} is {} bytes, more than the {max_bytes} allowed",
            path.display(),
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    let _: usize = file.take(max_bytes).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Replace `path` with `bytes` atomically (a temporary file beside it, renamed over it). The
/// temporary file is created afresh, never opened through whatever was left at its name: a
/// FIFO there would make the open wait for a reader.
///
/// # Errors
/// When the temporary file cannot be created, written or renamed.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    match std::fs::remove_file(&tmp) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

pub struct FileFollower {
    /// The input's name, for messages.
    input: String,
    path: PathBuf,
    start: Start,
    file: Option<File>,
    inode: u64,
    offset: u64,
    lines: LineSplitter,
    refusals: Refusals,
}

impl FileFollower {
    pub fn new(input: &str, path: &Path, start: Start) -> Self {
        Self {
            input: input.to_owned(),
            path: path.to_path_buf(),
            start,
            file: None,
            inode: 0,
            offset: 0,
            lines: LineSplitter::default(),
            refusals: Refusals::default(),
        }
    }

    /// Open the file now (if it exists), so "start at the end" means the end as of this call,
    /// not as of the first poll.
    ///
    /// # Errors
    /// When the file exists but cannot be opened.
    pub fn open_now(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let _: bool = self.open()?;
        }
        Ok(())
    }

    /// Lines cut at [`MAX_LINE_BYTES`] so far.
    pub const fn truncated_lines(&self) -> u64 {
        self.lines.truncated_lines
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a file is open and being read.
    pub const fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// What the path was refused as, now and so far.
    pub const fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// (inode, offset of the first byte not yet handed out as part of a complete line).
    pub fn position(&self) -> Option<(u64, u64)> {
        self.file
            .as_ref()
            .map(|_| (self.inode, self.offset - self.lines.pending() as u64))
    }

    /// Nothing at the path: whatever appears there later is new, and is read whole.
    fn missing(&mut self) -> bool {
        self.start = Start::Beginning;
        let _: bool = self.refusals.clear();
        false
    }

    /// Something other than a regular file at the path: not read, warned about once per
    /// change, looked at again on every poll.
    fn refuse(&mut self, found: FileKind) -> bool {
        // Whatever regular file comes back later is new: read it whole.
        self.start = Start::Beginning;
        if self.refusals.refuse(found) {
            log::warn!(
                "input {}: {} is {}, not a regular file: not following it until a regular file is there",
                self.input,
                self.path.display(),
                found.described()
            );
        }
        false
    }

    fn open(&mut self) -> io::Result<bool> {
        // Looked at before opening: anything but a regular file is refused unopened (opening
        // a FIFO waits for a writer; opening some devices acts, a watchdog starts counting).
        match std::fs::metadata(&self.path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(self.missing()),
            Err(err) => return Err(err),
            Ok(meta) if FileKind::of(&meta) != FileKind::Regular => {
                return Ok(self.refuse(FileKind::of(&meta)));
            }
            Ok(_) => {}
        }
        let mut file = match open_nonblocking(&self.path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(self.missing()),
            other => other?,
        };
        // Again through the descriptor: the path may have been swapped in between.
        let meta = file.metadata()?;
        if FileKind::of(&meta) != FileKind::Regular {
            drop(file);
            return Ok(self.refuse(FileKind::of(&meta)));
        }
        if self.refusals.clear() {
            log::info!(
                "input {}: {} is a regular file again: following it from its start",
                self.input,
                self.path.display()
            );
        }
        self.inode = meta.ino();
        self.offset = match self.start {
            Start::Beginning => 0,
            Start::End => meta.len(),
            Start::At { inode, offset } if inode == meta.ino() && offset <= meta.len() => offset,
            Start::At { .. } => 0,
        };
        // Later opens (after a rotation) always read the new file from its start.
        self.start = Start::Beginning;
        let _: u64 = file.seek(SeekFrom::Start(self.offset))?;
        self.file = Some(file);
        self.lines.reset();
        Ok(true)
    }

    /// Hand complete new lines to `line`, one round's [`Budget`] of them, following rotation
    /// and truncation.
    ///
    /// # Errors
    /// When the file cannot be read (a missing or refused file is not an error: it is waited
    /// for).
    pub fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<Progress> {
        self.poll_within(&mut Budget::round(), line)
    }

    /// [`Self::poll`] within `budget`.
    ///
    /// # Errors
    /// As [`Self::poll`].
    pub fn poll_within(
        &mut self,
        budget: &mut Budget,
        line: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Progress> {
        // Bounded: a rotation storm cannot keep us here.
        for _ in 0..4 {
            if self.file.is_none() && !self.open()? {
                return Ok(Progress::CaughtUp);
            }
            if self.drain(budget, line)? == Progress::MoreWaiting {
                // Rotation is looked for once caught up: the old file is finished first anyway.
                return Ok(Progress::MoreWaiting);
            }
            // stat, not open: it never waits, whatever the path names now.
            match std::fs::metadata(&self.path) {
                // Renamed away and not yet replaced: keep the old file, new lines may come.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Ok(Progress::CaughtUp);
                }
                Err(err) => return Err(err),
                Ok(meta) if meta.ino() != self.inode => {
                    // Rotated (or replaced by something else, which the next open refuses): the
                    // old file is read to its end; a last line without a newline is a line.
                    self.lines.flush(line);
                    self.file = None;
                }
                Ok(meta) if meta.len() < self.offset => {
                    // copytruncate: the file was emptied in place.
                    self.lines.reset();
                    self.offset = 0;
                    if let Some(file) = self.file.as_mut() {
                        let _: u64 = file.seek(SeekFrom::Start(0))?;
                    }
                }
                Ok(_) => return Ok(Progress::CaughtUp),
            }
        }
        Ok(Progress::CaughtUp)
    }

    fn drain(&mut self, budget: &mut Budget, line: &mut dyn FnMut(&[u8])) -> io::Result<Progress> {
        let Some(file) = self.file.as_mut() else {
            return Ok(Progress::CaughtUp);
        };
        let mut chunk = [0u8; CHUNK_BYTES];
        loop {
            if budget.spent() {
                return Ok(Progress::MoreWaiting);
            }
            let read = match file.read(&mut chunk) {
                Ok(0) => return Ok(Progress::CaughtUp),
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Progress::CaughtUp);
                }
                Err(err) => return Err(err),
            };
            budget.take(read);
            self.offset += read as u64;
            self.lines.feed(&chunk[..read], line);
        }
    }
}

/// One `read(2)`'s worth.
const CHUNK_BYTES: usize = 64 << 10;

/// A descriptor read without blocking: a named pipe's, or the pipe standard input is relayed
/// through (see [`StreamReader::stdin`]).
pub struct StreamReader {
    name: String,
    file: Option<File>,
    lines: LineSplitter,
    ended: bool,
}

impl StreamReader {
    fn from_file(name: &str, file: File) -> Self {
        Self {
            name: name.to_owned(),
            file: Some(file),
            lines: LineSplitter::default(),
            ended: false,
        }
    }

    /// The FIFO at `path`, created (mode 0600) when missing.
    ///
    /// # Errors
    /// When it cannot be created or opened, or is not a FIFO.
    pub fn fifo(path: &Path) -> io::Result<Self> {
        match open_fifo(path)? {
            Ok((file, _)) => Ok(Self::from_file(&path.display().to_string(), file)),
            Err(found) => Err(io::Error::other(format!(
                "{} is {}, not a named pipe",
                path.display(),
                found.described()
            ))),
        }
    }

    /// Standard input. It is shared with whoever started us, so it is not made non-blocking
    /// (that would change it for them too): a thread of its own reads it and relays what it
    /// reads through a pipe this side reads without blocking.
    ///
    /// # Errors
    /// When it cannot be duplicated or the thread cannot start.
    pub fn stdin() -> io::Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: duplicating our own standard input; closing the copy leaves fd 0 alone.
        let dup = unsafe { libc::fcntl(libc::STDIN_FILENO, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is a fresh descriptor we own.
        let stdin = unsafe { File::from_raw_fd(dup) };
        Self::relayed("stdin", stdin)
    }

    /// Lines from `source`, read (blocking) on a thread of its own and relayed through a pipe.
    /// The thread ends at the end of `source`, or once this reader is dropped and its next
    /// write fails.
    ///
    /// # Errors
    /// When the pipe or the thread cannot be made.
    pub fn relayed(name: &str, source: File) -> io::Result<Self> {
        use std::os::fd::FromRawFd as _;
        let mut ends = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors from pipe2, each owned once.
        let (read_end, write_end) =
            unsafe { (File::from_raw_fd(ends[0]), File::from_raw_fd(ends[1])) };
        set_nonblocking(read_end.as_raw_fd())?;
        let thread_name = format!("logs-{name}");
        let _: std::thread::JoinHandle<()> =
            std::thread::Builder::new().name(thread_name).spawn({
                let name = name.to_owned();
                move || relay(&name, source, write_end)
            })?;
        Ok(Self::from_file(name, read_end))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub const fn truncated_lines(&self) -> u64 {
        self.lines.truncated_lines
    }

    /// Whether the writer side closed for good (standard input only).
    pub const fn ended(&self) -> bool {
        self.ended
    }

    /// The descriptor to wait on, while open.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.file.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Hand complete new lines to `line`, one round's [`Budget`] of them.
    ///
    /// # Errors
    /// When reading fails.
    pub fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<Progress> {
        self.poll_within(&mut Budget::round(), line)
    }

    /// [`Self::poll`] within `budget`.
    ///
    /// # Errors
    /// When reading fails.
    pub fn poll_within(
        &mut self,
        budget: &mut Budget,
        line: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Progress> {
        let Some(file) = self.file.as_mut() else {
            return Ok(Progress::CaughtUp);
        };
        let mut chunk = [0u8; CHUNK_BYTES];
        loop {
            if budget.spent() {
                return Ok(Progress::MoreWaiting);
            }
            match file.read(&mut chunk) {
                Ok(0) => {
                    self.lines.flush(line);
                    self.ended = true;
                    // Closed: never waited on again (a hung-up descriptor is always "ready").
                    self.file = None;
                    return Ok(Progress::CaughtUp);
                }
                Ok(read) => {
                    budget.take(read);
                    self.lines.feed(&chunk[..read], line);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Progress::CaughtUp);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }
}

/// The relay thread of [`StreamReader::relayed`]: blocking reads from `source`, blocking
/// writes into the pipe (a full pipe holds the source back, nothing piles up in memory).
fn relay(name: &str, mut source: File, mut pipe: File) {
    let mut chunk = [0u8; CHUNK_BYTES];
    loop {
        match source.read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => {
                if pipe.write_all(&chunk[..read]).is_err() {
                    // The reader is gone (input removed by a reload).
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                // Someone else made the source non-blocking: wait for it here instead.
                let mut polled = libc::pollfd {
                    fd: source.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let _ = unsafe { libc::poll(&raw mut polled, 1, 1000) };
            }
            Err(err) => {
                log::warn!("input {name}: reading stopped: {err}");
                return;
            }
        }
    }
}

/// Open the FIFO at `path` (created, mode 0600, when missing): the file and its inode, or
/// what the path names instead.
fn open_fifo(path: &Path) -> io::Result<Result<(File, u64), FileKind>> {
    use std::os::unix::ffi::OsStrExt as _;
    match std::fs::metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let c_path =
                std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // SAFETY: valid C string.
            if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::AlreadyExists {
                    return Err(err);
                }
            }
        }
        Err(err) => return Err(err),
        Ok(meta) if FileKind::of(&meta) != FileKind::Fifo => return Ok(Err(FileKind::of(&meta))),
        Ok(_) => {}
    }
    // Read and write: a read-only FIFO reads end of stream whenever its last writer leaves;
    // holding a write end too keeps it open for the next. Non-blocking either way.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if FileKind::of(&meta) != FileKind::Fifo {
        return Ok(Err(FileKind::of(&meta)));
    }
    Ok(Ok((file, meta.ino())))
}

/// A `pipe` input: the named pipe at a path, created when missing. Anything else found there
/// is refused like a followed file refuses a FIFO (logged once per change, counted, looked at
/// again on every poll); a pipe removed or replaced is opened (or created) again, so writers
/// that open the path reach us.
pub struct PipeFollower {
    input: String,
    path: PathBuf,
    /// The open pipe and its inode.
    reader: Option<(StreamReader, u64)>,
    refusals: Refusals,
    /// Lines cut in pipes already closed.
    truncated_before: u64,
}

impl PipeFollower {
    pub fn new(input: &str, path: &Path) -> Self {
        Self {
            input: input.to_owned(),
            path: path.to_path_buf(),
            reader: None,
            refusals: Refusals::default(),
            truncated_before: 0,
        }
    }

    /// Open (or create) the pipe now.
    ///
    /// # Errors
    /// When it cannot be created or opened.
    pub fn open_now(&mut self) -> io::Result<()> {
        if self.reader.is_none() {
            let _: bool = self.open()?;
        }
        Ok(())
    }

    fn open(&mut self) -> io::Result<bool> {
        match open_fifo(&self.path)? {
            Ok((file, inode)) => {
                if self.refusals.clear() {
                    log::info!(
                        "input {}: {} is a named pipe again: reading it",
                        self.input,
                        self.path.display()
                    );
                }
                let name = self.path.display().to_string();
                self.reader = Some((StreamReader::from_file(&name, file), inode));
                Ok(true)
            }
            Err(found) => {
                if self.refusals.refuse(found) {
                    log::warn!(
                        "input {}: {} is {}, not a named pipe: not reading it until a named pipe is there",
                        self.input,
                        self.path.display(),
                        found.described()
                    );
                }
                Ok(false)
            }
        }
    }

    fn close(&mut self) {
        if let Some((reader, _)) = self.reader.take() {
            self.truncated_before += reader.truncated_lines();
        }
    }

    pub fn truncated_lines(&self) -> u64 {
        self.truncated_before
            + self
                .reader
                .as_ref()
                .map_or(0, |(reader, _)| reader.truncated_lines())
    }

    pub const fn is_open(&self) -> bool {
        self.reader.is_some()
    }

    pub const fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    pub fn raw_fd(&self) -> Option<RawFd> {
        self.reader.as_ref().and_then(|(reader, _)| reader.raw_fd())
    }

    /// Hand complete new lines to `line`, one round's [`Budget`] of them.
    ///
    /// # Errors
    /// When the pipe cannot be created, opened or read.
    pub fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<Progress> {
        self.poll_within(&mut Budget::round(), line)
    }

    /// [`Self::poll`] within `budget`.
    ///
    /// # Errors
    /// As [`Self::poll`].
    pub fn poll_within(
        &mut self,
        budget: &mut Budget,
        line: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Progress> {
        if self.reader.is_none() && !self.open()? {
            return Ok(Progress::CaughtUp);
        }
        let Some((reader, inode)) = self.reader.as_mut() else {
            return Ok(Progress::CaughtUp);
        };
        if reader.poll_within(budget, line)? == Progress::MoreWaiting {
            return Ok(Progress::MoreWaiting);
        }
        let replaced = match std::fs::metadata(&self.path) {
            Err(err) => err.kind() == io::ErrorKind::NotFound,
            Ok(meta) => meta.ino() != *inode || FileKind::of(&meta) != FileKind::Fifo,
        };
        if replaced {
            self.close();
            let _: bool = self.open()?;
        }
        Ok(Progress::CaughtUp)
    }
}

/// Wakes the log reader when there may be new lines: inotify on the directories of the
/// followed files (appends, new files after rotation, truncation), and `poll(2)` readiness on
/// pipes. Without it the reader would have to sleep between looks at the files.
pub struct Waker {
    inotify: Option<std::os::fd::OwnedFd>,
}

impl Waker {
    /// Watch the directories of `files` (those that exist; the timeout covers the rest).
    pub fn new(files: &[PathBuf]) -> Self {
        use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
        // SAFETY: plain inotify_init1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            log::warn!(
                "inotify: {}; looking at the logs every 100 ms instead",
                io::Error::last_os_error()
            );
            return Self { inotify: None };
        }
        // SAFETY: a descriptor we own from here on.
        let inotify = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let mut dirs: Vec<&Path> = files.iter().filter_map(|f| f.parent()).collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
                continue;
            };
            let mask = libc::IN_MODIFY
                | libc::IN_CREATE
                | libc::IN_MOVED_TO
                | libc::IN_CLOSE_WRITE
                | libc::IN_ATTRIB;
            // SAFETY: valid descriptor and C string.
            if unsafe { libc::inotify_add_watch(fd, c_dir.as_ptr(), mask) } < 0 {
                log::debug!(
                    "inotify on {}: {}",
                    dir.display(),
                    io::Error::last_os_error()
                );
            }
        }
        Self {
            inotify: Some(inotify),
        }
    }

    /// Sleep until a watched directory changes, one of `fds` is readable, or `timeout_ms`.
    pub fn wait(&self, fds: &[RawFd], timeout_ms: i32) {
        let mut polled: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if let Some(inotify) = &self.inotify {
            polled.push(libc::pollfd {
                fd: inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: a valid array of pollfd of the given length.
        let _ = unsafe {
            libc::poll(
                polled.as_mut_ptr(),
                polled.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if let Some(inotify) = &self.inotify {
            // Drain the events: which file changed does not matter, every input is read.
            let mut buf = [0u8; 4096];
            // SAFETY: reading into our own buffer from a non-blocking descriptor.
            while unsafe { libc::read(inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0
            {
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xdpguard-input-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn lines(follower: &mut FileFollower) -> Vec<String> {
        let mut out = Vec::new();
        while follower
            .poll(&mut |line| out.push(String::from_utf8_lossy(line).into_owned()))
            .unwrap()
            == Progress::MoreWaiting
        {}
        out
    }

    #[test]
    fn starts_at_the_end_by_default_and_waits_for_whole_lines() {
        let dir = dir("end");
        let log = dir.join("auth.log");
        append(&log, "old\n");
        let mut follower = FileFollower::new("auth", &log, Start::End);
        assert!(lines(&mut follower).is_empty());
        append(&log, "one\ntw");
        assert_eq!(lines(&mut follower), ["one"]);
        append(&log, "o\n");
        assert_eq!(lines(&mut follower), ["two"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rename_rotation_finishes_the_old_file_then_reads_the_new_one() {
        let dir = dir("rename");
        let log = dir.join("auth.log");
        append(&log, "");
        let mut follower = FileFollower::new("auth", &log, Start::Beginning);
        append(&log, "a\n");
        assert_eq!(lines(&mut follower), ["a"]);
        // Written just before the rename, read after it: still delivered.
        append(&log, "b\nlast-without-newline");
        std::fs::rename(&log, dir.join("auth.log.1")).unwrap();
        append(&log, "c\n");
        assert_eq!(lines(&mut follower), ["b", "last-without-newline", "c"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_now_fixes_the_end_before_the_first_poll() {
        let dir = dir("opennow");
        let log = dir.join("auth.log");
        append(&log, "old\n");
        let mut follower = FileFollower::new("auth", &log, Start::End);
        follower.open_now().unwrap();
        append(&log, "new\n");
        assert_eq!(lines(&mut follower), ["new"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copytruncate_starts_over_and_a_late_file_is_picked_up() {
        let dir = dir("truncate");
        let log = dir.join("auth.log");
        let mut follower = FileFollower::new("auth", &log, Start::End);
        assert!(lines(&mut follower).is_empty(), "no file yet");
        append(&log, "x\ny\n");
        // Appeared after we started: read from its start, whatever `start` said.
        assert_eq!(lines(&mut follower), ["x", "y"]);
        std::fs::write(&log, "").unwrap();
        append(&log, "z\n");
        assert_eq!(lines(&mut follower), ["z"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn saved_position_resumes_without_rereading_or_skipping() {
        let dir = dir("resume");
        let log = dir.join("auth.log");
        append(&log, "1\n2\n");
        let mut follower = FileFollower::new("auth", &log, Start::Beginning);
        assert_eq!(lines(&mut follower), ["1", "2"]);
        append(&log, "3\npart");
        assert_eq!(lines(&mut follower), ["3"]);
        let (inode, offset) = follower.position().unwrap();
        drop(follower);
        append(&log, "ial\n4\n");
        let mut resumed = FileFollower::new("auth", &log, Start::At { inode, offset });
        assert_eq!(lines(&mut resumed), ["partial", "4"]);
        // A position from another inode (rotated while we were down) reads the file whole.
        let mut other = FileFollower::new(
            "auth",
            &log,
            Start::At {
                inode: inode + 1,
                offset,
            },
        );
        assert_eq!(lines(&mut other).len(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_named_pipe_is_created_and_survives_writers_coming_and_going() {
        let dir = dir("fifo");
        let fifo = dir.join("auth.pipe");
        let mut reader = StreamReader::fifo(&fifo).unwrap();
        let mut got = Vec::new();
        for text in ["one\ntw", "o\n"] {
            // Each writer opens, writes and closes.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            reader
                .poll(&mut |l| got.push(String::from_utf8_lossy(l).into_owned()))
                .unwrap();
        }
        assert_eq!(got, ["one", "two"]);
        assert!(!reader.ended());
        // A regular file in the way is refused, not read.
        let plain = dir.join("plain");
        std::fs::write(&plain, "x").unwrap();
        assert!(StreamReader::fifo(&plain).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_waker_wakes_on_an_append_not_only_on_its_timeout() {
        let dir = dir("waker");
        let log = dir.join("auth.log");
        append(&log, "");
        let waker = Waker::new(std::slice::from_ref(&log));
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                append(&log, "x\n");
            })
        };
        let started = Instant::now();
        // A minute of timeout: only the append can end this wait in a test's lifetime.
        waker.wait(&[], 60_000);
        assert!(started.elapsed() < Duration::from_secs(30));
        writer.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn over_long_lines_are_cut_and_counted() {
        let dir = dir("long");
        let log = dir.join("auth.log");
        append(&log, &format!("{}\nshort\n", "x".repeat(100_000)));
        let mut follower = FileFollower::new("auth", &log, Start::Beginning);
        let got = lines(&mut follower);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE_BYTES);
        assert_eq!(got[1], "short");
        assert_eq!(follower.truncated_lines(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt as _;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    }

    /// Run `f` on a thread and fail (not hang) if it takes more than 10 s: what is tested here
    /// would otherwise block forever.
    fn without_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = std::sync::mpsc::channel();
        let _ = std::thread::spawn(move || done.send(f()));
        result
            .recv_timeout(Duration::from_secs(10))
            .expect("blocked for 10 s")
    }

    fn kinds(refusals: &Refusals) -> Vec<(&'static str, u64)> {
        refusals.counts().collect()
    }

    #[test]
    fn refusals_are_news_once_per_change() {
        let mut refusals = Refusals::default();
        assert!(refusals.refuse(FileKind::Fifo));
        assert!(
            !refusals.refuse(FileKind::Fifo),
            "the same refusal again is not news"
        );
        assert!(refusals.refuse(FileKind::Socket));
        assert!(refusals.clear());
        assert!(!refusals.clear());
        assert!(
            refusals.refuse(FileKind::Fifo),
            "back after a regular file: news again"
        );
        assert_eq!(kinds(&refusals), [("fifo", 2), ("socket", 1)]);
        assert_eq!(refusals.current(), Some(FileKind::Fifo));
    }

    #[test]
    fn anything_but_a_regular_file_is_refused_unopened_and_looked_at_again() {
        let dir = dir("refuse");
        let log = dir.join("auth.log");
        append(&log, "a\n");
        let mut follower = FileFollower::new("auth", &log, Start::Beginning);
        assert_eq!(lines(&mut follower), ["a"]);
        let follower = without_blocking(move || {
            std::fs::remove_file(&log).unwrap();
            mkfifo(&log);
            // Opening this FIFO for reading would wait for a writer that never comes.
            assert!(lines(&mut follower).is_empty());
            assert!(lines(&mut follower).is_empty());
            assert_eq!(follower.refusals().current(), Some(FileKind::Fifo));
            assert_eq!(kinds(follower.refusals()), [("fifo", 1)], "counted once");
            assert!(!follower.is_open());
            std::fs::remove_file(&log).unwrap();
            let _listener = std::os::unix::net::UnixListener::bind(&log).unwrap();
            assert!(lines(&mut follower).is_empty());
            std::fs::remove_file(&log).unwrap();
            std::fs::create_dir(&log).unwrap();
            assert!(lines(&mut follower).is_empty());
            std::fs::remove_dir(&log).unwrap();
            // A device is never opened (reading /dev/zero would never end).
            std::os::unix::fs::symlink("/dev/zero", &log).unwrap();
            assert!(lines(&mut follower).is_empty());
            follower
        });
        let mut follower = follower;
        assert_eq!(
            kinds(follower.refusals()),
            [
                ("fifo", 1),
                ("socket", 1),
                ("char_device", 1),
                ("directory", 1)
            ]
        );
        // A regular file back in its place is followed again, from its start.
        let log = dir.join("auth.log");
        std::fs::remove_file(&log).unwrap();
        append(&log, "b\nc\n");
        assert_eq!(lines(&mut follower), ["b", "c"]);
        assert!(follower.is_open());
        assert_eq!(follower.refusals().current(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_burst_is_read_in_slices_of_the_budget() {
        let dir = dir("budget");
        let log = dir.join("auth.log");
        let line = format!("{}\n", "x".repeat(99));
        append(&log, &line.repeat(40_000));
        let mut follower = FileFollower::new("auth", &log, Start::Beginning);
        let mut count = 0usize;
        let progress = follower
            .poll_within(&mut Budget::of_bytes(1 << 20), &mut |_| count += 1)
            .unwrap();
        assert_eq!(progress, Progress::MoreWaiting);
        // One slice: the budget, give or take the last read.
        assert!(
            ((1 << 20) / 100..=((1 << 20) + CHUNK_BYTES) / 100).contains(&count),
            "{count}"
        );
        let mut polls = 1;
        loop {
            polls += 1;
            let progress = follower
                .poll_within(&mut Budget::of_bytes(1 << 20), &mut |_| count += 1)
                .unwrap();
            if progress == Progress::CaughtUp {
                break;
            }
        }
        assert_eq!(count, 40_000);
        // 4 MB in slices of 1 MiB.
        assert_eq!(polls, 4);
        assert_eq!(follower.position().unwrap().1, 4_000_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pipe_input_refuses_other_files_and_makes_a_removed_pipe_again() {
        let dir = dir("pipeinput");
        let fifo = dir.join("auth.pipe");
        let write = |text: &str| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        };
        let mut pipe = PipeFollower::new("pipe", &fifo);
        pipe.open_now().unwrap();
        let read = |pipe: &mut PipeFollower| {
            let mut got = Vec::new();
            pipe.poll(&mut |l| got.push(String::from_utf8_lossy(l).into_owned()))
                .unwrap();
            got
        };
        write("one\n");
        assert_eq!(read(&mut pipe), ["one"]);
        std::fs::remove_file(&fifo).unwrap();
        assert!(read(&mut pipe).is_empty());
        write("two\n");
        assert_eq!(read(&mut pipe), ["two"], "made again, and read");
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(&fifo, "not read\n").unwrap();
        assert!(read(&mut pipe).is_empty());
        assert!(read(&mut pipe).is_empty());
        assert!(!pipe.is_open());
        assert_eq!(kinds(pipe.refusals()), [("regular", 1)]);
        std::fs::remove_file(&fifo).unwrap();
        assert!(read(&mut pipe).is_empty());
        assert!(pipe.is_open());
        write("three\n");
        assert_eq!(read(&mut pipe), ["three"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn state_files_are_read_and_replaced_without_waiting_on_a_fifo() {
        let dir = dir("statefile");
        let file = dir.join("positions.json");
        assert!(read_regular_file(&file, 100).unwrap().is_none());
        replace_file(&file, b"{}").unwrap();
        assert_eq!(read_regular_file(&file, 100).unwrap().unwrap(), b"{}");
        assert!(
            read_regular_file(&file, 1)
                .unwrap_err()
                .to_string()
                .contains("more than the 1 allowed")
        );
        // A FIFO left at the temporary name is not opened: it is replaced.
        let tmp = dir.join("positions.json.tmp");
        mkfifo(&tmp);
        let (file, err) = without_blocking(move || {
            replace_file(&file, b"[]").unwrap();
            std::fs::remove_file(&file).unwrap();
            mkfifo(&file);
            let err = read_regular_file(&file, 100).unwrap_err().to_string();
            (file, err)
        });
        assert!(
            err.contains("is a FIFO") && err.contains("positions.json"),
            "{err}"
        );
        std::fs::remove_file(&file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_relayed_stream_never_blocks_the_reader_and_ends_with_its_source() {
        use std::os::fd::FromRawFd as _;
        let mut ends = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        assert_eq!(
            unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) },
            0
        );
        // SAFETY: fresh descriptors, each owned once.
        let (source, mut writer) =
            unsafe { (File::from_raw_fd(ends[0]), File::from_raw_fd(ends[1])) };
        let mut reader = StreamReader::relayed("test", source).unwrap();
        let mut got = Vec::new();
        // Nothing written yet: the poll returns at once.
        let started = Instant::now();
        assert_eq!(
            reader.poll(&mut |l| got.push(l.to_vec())).unwrap(),
            Progress::CaughtUp
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        writer.write_all(b"one\ntwo").unwrap();
        drop(writer);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reader.ended() && Instant::now() < deadline {
            reader.poll(&mut |l| got.push(l.to_vec())).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(reader.ended());
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(reader.raw_fd(), None, "an ended stream is not waited on");
    }
}
