//! A real `xdpguard run` inside the sandbox's firewall namespace, with its own bpffs, state
//! directory and control socket under a temporary directory; killed and cleaned up on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::netns::{Sandbox, Side};

/// The `xdpguard` binary under test. Cargo names it (`CARGO_BIN_EXE_xdpguard`) only to the
/// agent's own tests and benchmarks, so this expands there; failing that, `XDPGUARD_BIN` (set
/// by `cargo xtask bench`).
#[macro_export]
macro_rules! xdpguard_binary {
    () => {
        $crate::daemon::binary(option_env!("CARGO_BIN_EXE_xdpguard"))
    };
}

/// What [`xdpguard_binary!`] expands to: `built`, the path cargo gave the caller, or else
/// `XDPGUARD_BIN`.
pub fn binary(built: Option<&str>) -> PathBuf {
    built
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDPGUARD_BIN").map(PathBuf::from))
        .expect("XDPGUARD_BIN names the xdpguard binary")
}

/// A scratch directory with a private bpffs mounted at `bpf/`, and the binary to run in it.
pub struct Workdir {
    pub path: PathBuf,
    /// From [`xdpguard_binary!`].
    pub binary: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Workdir {
    pub fn new(tag: &str, binary: PathBuf) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("xdpguard-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("bpf")).unwrap();
        // Mounted here, in the test's mount namespace, so pins outlive any daemon process.
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(path.join("bpf"))
            .status()
            .unwrap();
        assert!(status.success(), "mounting bpffs");
        Self { path, binary }
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.path.join("bpf/xdpguard")
    }

    pub fn socket(&self) -> PathBuf {
        self.path.join("run/control.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path.join("state")
    }

    pub fn config(&self) -> PathBuf {
        self.path.join("xdpguard.toml")
    }

    /// Write the daemon's configuration: the firewall side of the sandbox, reconcile every
    /// second, `extra` appended.
    pub fn write_config(&self, interface: &str, metrics_port: u16, extra: &str) {
        let text = format!(
            r#"pin_dir = "{pin}"
state_dir = "{state}"
control_socket = "{socket}"
reconcile_interval = "1s"

[[interfaces]]
name = "{interface}"
mode = "native"

[metrics]
listen = "127.0.0.1:{metrics_port}"
{extra}
"#,
            pin = self.pin_dir().display(),
            state = self.state_dir().display(),
            socket = self.socket().display(),
        );
        std::fs::write(self.config(), text).unwrap();
    }
}

impl Workdir {
    /// Turn on log scoring in the configuration written by [`Self::write_config`]:
    /// `rulesets_dir` (a top-level key, so it goes before the first table) and `tables`
    /// (`[scoring]`, `[[inputs]]`, ...) at the end.
    pub fn add_log_scoring(&self, rulesets_dir: &Path, tables: &str) {
        let config = std::fs::read_to_string(self.config()).unwrap().replace(
            "[[interfaces]]",
            &format!(
                "rulesets_dir = \"{}\"\n\n[[interfaces]]",
                rulesets_dir.display()
            ),
        ) + tables;
        std::fs::write(self.config(), config).unwrap();
    }

    /// Run the CLI against this directory's control socket, whether a daemon answers or not.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.binary, &self.socket(), args)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        // Unmounting the bpffs releases every pin: program, maps, links.
        let _ = Command::new("umount").arg(self.path.join("bpf")).status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub struct Daemon {
    child: Option<Child>,
    binary: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Start `xdpguard run` in the firewall namespace and wait until it answers.
    pub fn start(sandbox: &Sandbox, workdir: &Workdir) -> Self {
        Self::start_with_env(sandbox, workdir, &[])
    }

    /// [`Self::start`] with extra environment variables.
    pub fn start_with_env(sandbox: &Sandbox, workdir: &Workdir, env: &[(&str, &Path)]) -> Self {
        Self::start_inner(sandbox, workdir, env, false)
    }

    /// [`Self::start`] with standard error where `JOURNAL_STREAM` says the journal is, as
    /// systemd starts a service (the file [`Self::stderr`] reads stands in for the journal's
    /// stream).
    pub fn start_as_journal_stream(sandbox: &Sandbox, workdir: &Workdir) -> Self {
        Self::start_inner(sandbox, workdir, &[], true)
    }

    fn start_inner(
        sandbox: &Sandbox,
        workdir: &Workdir,
        env: &[(&str, &Path)],
        journal: bool,
    ) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        let log = workdir.path.join(format!(
            "daemon-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let stderr = std::fs::File::create(log.with_extension("err")).unwrap();
        let stream = stderr.metadata().unwrap();
        let mut command = Command::new("nsenter");
        let _: &mut Command = command
            .arg(format!("--net=/run/netns/{}", sandbox.fw))
            .arg(&workdir.binary)
            .args(["run", "--config"])
            .arg(workdir.config())
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied());
        if journal {
            let _: &mut Command = command.env(
                "JOURNAL_STREAM",
                format!("{}:{}", stream.dev(), stream.ino()),
            );
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut daemon = Self {
            child: Some(child),
            binary: workdir.binary.clone(),
            socket: workdir.socket(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if daemon.cli(&["status"]).status.success() {
                return daemon;
            }
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}: {}", daemon.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not answer: {}",
                daemon.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's pid (nsenter execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
    }

    /// Run the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.binary, &self.socket, args)
    }

    /// `kill -9`: no clean-up, no final write.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(&child, libc::SIGTERM);
        wait_bounded(&mut child)
    }

    pub fn signal(&self, signal_number: i32) {
        signal(self.child.as_ref().unwrap(), signal_number);
    }
}

fn signal(child: &Child, signal_number: i32) {
    // SAFETY: sending a signal to our own child.
    let rc = unsafe { libc::kill(i32::try_from(child.id()).unwrap(), signal_number) };
    assert_eq!(rc, 0);
}

fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daemon did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Start `program ARGS` in network namespace `ns` (`ip netns exec`, which execs it in place),
/// its output appended to `log`: a server a test runs in the sandbox.
pub fn spawn_in_ns(ns: &str, program: &str, args: &[&std::ffi::OsStr], log: &Path) -> Children {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("starting {program}: {err}"));
    Children(vec![child])
}

/// Child processes killed on drop.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cli(binary: &Path, socket: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// Poll `check` every 100 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// GET `path` from `port` on the firewall side's loopback; the body.
pub fn http_get(sandbox: &Sandbox, port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    sandbox.within(Side::Firewall, || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
    })
}
