//! Log inputs. [`FileFollower`] follows a file like `tail -F`: it survives rename rotation
//! (finishes the old file, then reads the new one from its start), copytruncate (starts over
//! when the file shrinks), and a file that appears later; it reports its position so a
//! restart neither re-reads nor skips lines. Lines over [`MAX_LINE_BYTES`] are cut and
//! counted; bytes are passed on as they are (the caller decides about UTF-8).
use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
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

pub struct FileFollower {
    path: PathBuf,
    start: Start,
    file: Option<File>,
    inode: u64,
    offset: u64,
    lines: LineSplitter,
}

impl FileFollower {
    pub fn new(path: &Path, start: Start) -> Self {
        Self {
            path: path.to_path_buf(),
            start,
            file: None,
            inode: 0,
            offset: 0,
            lines: LineSplitter::default(),
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

    /// (inode, offset of the first byte not yet handed out as part of a complete line).
    pub fn position(&self) -> Option<(u64, u64)> {
        self.file
            .as_ref()
            .map(|_| (self.inode, self.offset - self.lines.pending() as u64))
    }

    fn open(&mut self) -> io::Result<bool> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // Whatever appears there later is new: read it whole.
                self.start = Start::Beginning;
                return Ok(false);
            }
            Err(err) => return Err(err),
        };
        let meta = file.metadata()?;
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

    /// Hand every complete new line to `line`, following rotation and truncation.
    ///
    /// # Errors
    /// When the file cannot be read (a missing file is not an error: it is waited for).
    pub fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        // Bounded: a rotation storm cannot keep us here.
        for _ in 0..4 {
            if self.file.is_none() && !self.open()? {
                return Ok(());
            }
            self.drain(line)?;
            match std::fs::metadata(&self.path) {
                // Renamed away and not yet replaced: keep the old file, new lines may come.
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(err) => return Err(err),
                Ok(meta) if meta.ino() != self.inode => {
                    // Rotated: the old file is read to its end; a last line without a newline
                    // is still a line.
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
                Ok(_) => return Ok(()),
            }
        }
        Ok(())
    }

    fn drain(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut chunk = [0u8; 64 << 10];
        loop {
            let read = file.read(&mut chunk)?;
            if read == 0 {
                return Ok(());
            }
            self.offset += read as u64;
            self.lines.feed(&chunk[..read], line);
        }
    }
}

/// A named pipe (created on demand) or standard input: whatever writers send, read without
/// blocking. A FIFO is held open for writing too, so writers coming and going never look like
/// the end of the stream.
pub struct StreamReader {
    name: String,
    file: Option<File>,
    lines: LineSplitter,
    ended: bool,
}

impl StreamReader {
    /// The FIFO at `path`, created (mode 0600) when missing.
    ///
    /// # Errors
    /// When it cannot be created or opened, or is not a FIFO.
    pub fn fifo(path: &Path) -> io::Result<Self> {
        use std::os::unix::{
            ffi::OsStrExt as _,
            fs::{FileTypeExt as _, OpenOptionsExt as _},
        };
        if !path.exists() {
            let c_path =
                std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // SAFETY: valid C string.
            if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if !std::fs::metadata(path)?.file_type().is_fifo() {
            return Err(io::Error::other(format!(
                "{} exists and is not a named pipe",
                path.display()
            )));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        Ok(Self {
            name: path.display().to_string(),
            file: Some(file),
            lines: LineSplitter::default(),
            ended: false,
        })
    }

    /// Standard input, non-blocking from now on.
    ///
    /// # Errors
    /// When its flags cannot be changed.
    pub fn stdin() -> io::Result<Self> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        let fd = io::stdin().as_raw_fd();
        // SAFETY: fcntl on our own standard input.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a duplicate we own, so closing it leaves fd 0 alone.
        let dup = unsafe { libc::dup(fd) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(dup) };
        Ok(Self {
            name: "stdin".into(),
            file: Some(file),
            lines: LineSplitter::default(),
            ended: false,
        })
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

    /// Hand every complete new line to `line`.
    ///
    /// # Errors
    /// When reading fails.
    pub fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut chunk = [0u8; 64 << 10];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => {
                    self.lines.flush(line);
                    self.ended = true;
                    self.file = None;
                    return Ok(());
                }
                Ok(read) => self.lines.feed(&chunk[..read], line),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
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
    pub fn wait(&self, fds: &[std::os::fd::RawFd], timeout_ms: i32) {
        use std::os::fd::AsRawFd as _;
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

impl StreamReader {
    /// The descriptor to wait on, while open.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

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
        follower
            .poll(&mut |line| out.push(String::from_utf8_lossy(line).into_owned()))
            .unwrap();
        out
    }

    #[test]
    fn starts_at_the_end_by_default_and_waits_for_whole_lines() {
        let dir = dir("end");
        let log = dir.join("auth.log");
        append(&log, "old\n");
        let mut follower = FileFollower::new(&log, Start::End);
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
        let mut follower = FileFollower::new(&log, Start::Beginning);
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
        let mut follower = FileFollower::new(&log, Start::End);
        follower.open_now().unwrap();
        append(&log, "new\n");
        assert_eq!(lines(&mut follower), ["new"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copytruncate_starts_over_and_a_late_file_is_picked_up() {
        let dir = dir("truncate");
        let log = dir.join("auth.log");
        let mut follower = FileFollower::new(&log, Start::End);
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
        let mut follower = FileFollower::new(&log, Start::Beginning);
        assert_eq!(lines(&mut follower), ["1", "2"]);
        append(&log, "3\npart");
        assert_eq!(lines(&mut follower), ["3"]);
        let (inode, offset) = follower.position().unwrap();
        drop(follower);
        append(&log, "ial\n4\n");
        let mut resumed = FileFollower::new(&log, Start::At { inode, offset });
        assert_eq!(lines(&mut resumed), ["partial", "4"]);
        // A position from another inode (rotated while we were down) reads the file whole.
        let mut other = FileFollower::new(
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
                std::thread::sleep(std::time::Duration::from_millis(50));
                append(&log, "x\n");
            })
        };
        let started = std::time::Instant::now();
        // A minute of timeout: only the append can end this wait in a test's lifetime.
        waker.wait(&[], 60_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        writer.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn over_long_lines_are_cut_and_counted() {
        let dir = dir("long");
        let log = dir.join("auth.log");
        append(&log, &format!("{}\nshort\n", "x".repeat(100_000)));
        let mut follower = FileFollower::new(&log, Start::Beginning);
        let got = lines(&mut follower);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE_BYTES);
        assert_eq!(got[1], "short");
        assert_eq!(follower.truncated_lines(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
