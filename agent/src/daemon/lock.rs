//! One daemon per pin directory and per state directory, and nobody detaching under a
//! running one.
//!
//! The locks are `flock(2)` locks, so the kernel drops them when their holder ends, however it
//! ends (kill -9 too): a crashed daemon never blocks a restart, and there is nothing stale to
//! clean up. The pin directory is locked itself, through a directory descriptor (bpffs holds
//! no regular files); the state directory through [`STATE_LOCK_FILE`], which also holds the
//! pid for operators. Who holds a lock is read from `/proc/locks`.
use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::{
            fs::{MetadataExt as _, OpenOptionsExt as _},
            net::UnixStream,
        },
    },
    path::{Path, PathBuf},
};

/// The lock file in the state directory; it holds the pid of the daemon that has it.
pub const STATE_LOCK_FILE: &str = "daemon.lock";

/// How much of a holder's command line a message shows.
const COMMAND_CHARS: usize = 160;

/// Tries before giving up on a lock whose file keeps being replaced under us.
const ATTEMPTS: usize = 5;

/// A held lock: released when dropped, or by the kernel when the process ends. The descriptor
/// is close-on-exec, so child processes (journalctl) never inherit it.
#[derive(Debug)]
pub struct Lock {
    /// Kept open: closing it releases the lock.
    file: File,
    path: PathBuf,
    /// A lock file holding our pid, emptied again on release so no stale pid stays behind.
    holds_pid: bool,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.holds_pid {
            let _ = self.file.set_len(0);
        }
    }
}

/// Who holds a lock, as far as this process can see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    /// `None` when the holder is in a pid namespace this process cannot see into, or ended
    /// meanwhile.
    pub pid: Option<u32>,
    /// Its command line, spaces between the arguments.
    pub command: Option<String>,
}

impl Holder {
    /// Process `pid`, with its command line when it can be read.
    pub fn of_pid(pid: u32) -> Self {
        let command = std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .map(|raw| {
                let command = raw
                    .split(|byte| *byte == 0)
                    .filter(|arg| !arg.is_empty())
                    .map(String::from_utf8_lossy)
                    .collect::<Vec<_>>()
                    .join(" ");
                // One line of a message: no control characters, no endless scripts.
                command
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(COMMAND_CHARS)
                    .collect::<String>()
            })
            .filter(|command| !command.is_empty());
        Self {
            pid: Some(pid),
            command,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.command) {
            (Some(pid), Some(command)) => write!(f, "pid {pid}: {command}"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, _) => f.write_str("pid unknown"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path} is locked by another process ({holder})")]
    Held { path: PathBuf, holder: Holder },
    #[error("locking {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Lock {
    /// Lock the directory `dir` itself, without waiting.
    ///
    /// # Errors
    /// [`LockError::Held`] while another process holds it; [`LockError::Io`] when `dir` cannot
    /// be opened (`NotFound` when it does not exist).
    pub fn directory(dir: &Path) -> Result<Self, LockError> {
        Self::acquire(dir, || {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(dir)
        })
    }

    /// Lock the file at `path` (created, mode 0600), without waiting, and write this process's
    /// pid in it.
    ///
    /// # Errors
    /// [`LockError::Held`] while another process holds it; [`LockError::Io`] when the file
    /// cannot be created or written.
    pub fn pid_file(path: &Path) -> Result<Self, LockError> {
        let mut lock = Self::acquire(path, || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
        })?;
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Truncated only now: the pid of a holder is never wiped by a process that fails to
        // take its place.
        lock.file.set_len(0).map_err(io_err)?;
        (&lock.file)
            .write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io_err)?;
        lock.holds_pid = true;
        Ok(lock)
    }

    fn acquire(path: &Path, open: impl Fn() -> io::Result<File>) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        for _ in 0..ATTEMPTS {
            let file = open().map_err(io_err)?;
            // SAFETY: a valid open descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock {
                    return Err(LockError::Held {
                        path: path.to_path_buf(),
                        holder: holder_of(&file, path),
                    });
                }
                return Err(io_err(err));
            }
            // A directory or file removed and made anew between our open and our lock: the
            // lock is on the old one and guards nothing. Try the new one.
            let locked = file.metadata().map_err(io_err)?;
            match path.metadata() {
                Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {
                    return Ok(Self {
                        file,
                        path: path.to_path_buf(),
                        holds_pid: false,
                    });
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_err(err)),
            }
        }
        Err(io_err(io::Error::other(format!(
            "replaced {ATTEMPTS} times while being locked"
        ))))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// After the state directory was removed and made anew: a pid-file lock held on the
    /// removed file guards nothing, so take the new file's. `Ok(true)` when it was taken
    /// again, `Ok(false)` when the held file is still the one at the path (or the directory
    /// is not back yet).
    ///
    /// # Errors
    /// [`LockError::Held`] when another daemon took the new file first.
    pub fn renew(&mut self) -> Result<bool, LockError> {
        let held = self.file.metadata().ok();
        match self.path.metadata() {
            Ok(now)
                if held
                    .as_ref()
                    .is_some_and(|held| held.dev() == now.dev() && held.ino() == now.ino()) =>
            {
                return Ok(false);
            }
            Err(_) if !self.path.parent().is_some_and(Path::exists) => return Ok(false),
            _ => {}
        }
        *self = Self::pid_file(&self.path)?;
        Ok(true)
    }
}

/// Who holds the lock on `file` (open at `path`): from `/proc/locks`, else the pid written in
/// it (a lock file of ours).
fn holder_of(file: &File, path: &Path) -> Holder {
    let from_proc = file.metadata().ok().and_then(|meta| {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        flock_holder(&locks, meta.dev(), meta.ino())
    });
    let fromfile = || {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
    };
    from_proc
        .or_else(fromfile)
        .map_or_else(Holder::default, Holder::of_pid)
}

/// The pid holding a `flock` on the inode `dev`/`ino`, from the text of `/proc/locks`:
/// `1: FLOCK  ADVISORY  WRITE 1234 00:27:1 0 EOF` (device as hex major:minor). Lines of
/// processes waiting for a lock (`1: -> FLOCK ...`) are not holders.
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{ino}");
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, inode, ..] if *inode == wanted => pid.parse().ok(),
            _ => None,
        }
    })
}

/// The daemon answering on the control socket at `path`, if one does (a socket file left by a
/// dead daemon refuses the connection). Its pid comes from the socket's peer credentials.
pub fn daemon_on_socket(path: &Path) -> Option<Holder> {
    let stream = UnixStream::connect(path).ok()?;
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: a connected socket; the out-parameter is a ucred of the length given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut credentials).cast(),
            &raw mut len,
        )
    };
    Some(match u32::try_from(credentials.pid) {
        Ok(pid) if rc == 0 && pid != 0 => Holder::of_pid(pid),
        _ => Holder::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xdpguard-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn holder_pid(err: LockError) -> Option<u32> {
        match err {
            LockError::Held { holder, .. } => holder.pid,
            LockError::Io { path, source } => panic!("{}: {source}", path.display()),
        }
    }

    #[test]
    fn a_second_directory_lock_fails_with_the_holders_pid() {
        let dir = scratch("dir");
        let first = Lock::directory(&dir).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts
        // like another process would.
        let err = Lock::directory(&dir).unwrap_err();
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        assert_eq!(holder_pid(err), Some(std::process::id()));
        drop(first);
        let again = Lock::directory(&dir).unwrap();
        assert_eq!(again.path(), dir);
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pid_file_lock_is_taken_again_when_its_directory_is_made_anew() {
        let dir = scratch("renew");
        let path = dir.join(STATE_LOCK_FILE);
        let mut lock = Lock::pid_file(&path).unwrap();
        assert!(!lock.renew().unwrap(), "nothing changed");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!lock.renew().unwrap(), "the directory is not back yet");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(lock.renew().unwrap(), "taken on the new file");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // The new file is really held: another taker is refused.
        assert_eq!(
            holder_pid(Lock::pid_file(&path).unwrap_err()),
            Some(std::process::id())
        );
        // And one that got there first wins: renewing then fails with its pid.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let other = Lock::pid_file(&path).unwrap();
        assert!(matches!(lock.renew(), Err(LockError::Held { .. })));
        drop(other);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_pid_file_lock_fails_and_leaves_the_pid_in_place() {
        let dir = scratch("file");
        let path = dir.join(STATE_LOCK_FILE);
        let first = Lock::pid_file(&path).unwrap();
        let pid = std::process::id();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{pid}\n"));
        let err = Lock::pid_file(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("pid {pid}")), "{text}");
        assert_eq!(holder_pid(err), Some(pid));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{pid}\n"));
        drop(first);
        // Released: no stale pid stays behind.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        // A lock file left by a holder that was killed takes a new holder.
        std::fs::write(&path, "999999\n").unwrap();
        let second = Lock::pid_file(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{pid}\n"));
        drop(second);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_lock_is_not_inherited_by_child_processes() {
        let dir = scratch("cloexec");
        let lock = Lock::directory(&dir).unwrap();
        // SAFETY: a valid descriptor.
        let flags = unsafe { libc::fcntl(lock.file.as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "flags {flags}");
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_not_found() {
        let dir = scratch("missing").join("nothing-here");
        match Lock::directory(&dir) {
            Err(LockError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn proc_locks_names_the_holder_not_the_waiters() {
        let locks = "\
1: POSIX  ADVISORY  WRITE 17 fe:00:1234 0 EOF
2: FLOCK  ADVISORY  WRITE 4242 00:27:1 0 EOF
2: -> FLOCK  ADVISORY  WRITE 77 00:27:1 0 EOF
3: FLOCK  ADVISORY  WRITE 99 103:02:1 0 EOF
";
        // Device 0x27 (major 0, minor 39).
        assert_eq!(flock_holder(locks, 0x27, 1), Some(4242));
        assert_eq!(flock_holder(locks, 0x27, 2), None);
        // A POSIX lock is not a flock.
        assert_eq!(flock_holder(locks, 0xfe00, 1234), None);
        // Major 0x103 (wider than two hex digits), minor 2.
        assert_eq!(flock_holder(locks, (0x103 << 8) | 2, 1), Some(99));
    }

    #[test]
    fn holders_read_as_pid_and_command() {
        let me = Holder::of_pid(std::process::id());
        let text = me.to_string();
        assert!(
            text.starts_with(&format!("pid {}: ", std::process::id())),
            "{text}"
        );
        assert_eq!(Holder::default().to_string(), "pid unknown");
    }

    #[test]
    fn nobody_answers_on_a_dead_socket() {
        let dir = scratch("socket");
        let path = dir.join("control.sock");
        assert_eq!(daemon_on_socket(&path), None);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(
            daemon_on_socket(&path).and_then(|holder| holder.pid),
            Some(std::process::id())
        );
        drop(listener);
        // The file is left, as after a kill -9: nobody answers.
        assert!(path.exists());
        assert_eq!(daemon_on_socket(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
