//! Real flow exporters for the tests: tcpdump captures what crosses the sandbox's veth pair on
//! the firewall side, and softflowd (Debian) turns the capture into NetFlow v9 or IPFIX.
//!
//! softflowd reads the capture file rather than the interface: live, softflowd 1.1 leaves the
//! packets of a quiet interface in libpcap's buffer (it does not use immediate mode), so a
//! handful of test datagrams would never be exported.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    daemon::eventually,
    netns::{FW_IF, Sandbox, Side},
};

/// A running tcpdump on the firewall side's interface, stopping after `count` packets.
pub struct Capture {
    child: Child,
}

impl Capture {
    /// Start capturing `count` packets matching `filter` into `path`; returns once the
    /// capture is open.
    pub fn start(sandbox: &Sandbox, path: &Path, count: usize, filter: &str) -> Self {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", sandbox.fw))
            // A 32 MiB capture buffer: with the default 2 MiB a busy machine drops frames of
            // the burst before tcpdump reads them, and `-c` is never reached.
            .args([
                "tcpdump",
                "-n",
                "-U",
                "--immediate-mode",
                "-B",
                "32768",
                "-i",
                FW_IF,
            ])
            .args(["-c", &count.to_string(), "-w"])
            .arg(path)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (Debian package tcpdump)");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let _ = err.read_line(&mut line).unwrap();
        let capture = Self { child };
        assert!(line.contains("listening on"), "tcpdump: {line}");
        capture
    }

    /// Wait (at most `limit`) for tcpdump to have all its packets and exit.
    pub fn finish(mut self, limit: Duration) -> bool {
        eventually(limit, || self.child.try_wait().unwrap().is_some())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// softflowd exports every flow of `capture` as NetFlow `version` ("9", or "10" for IPFIX) to
/// `collector` (host:port) from the firewall side, and exits at the end of the file.
pub fn softflowd_replay(sandbox: &Sandbox, capture: &Path, version: &str, collector: &str) {
    let pid = capture.with_extension("softflowd.pid");
    let out = sandbox.exec(
        Side::Firewall,
        &[
            "softflowd",
            "-d",
            "-6",
            "-v",
            version,
            "-r",
            capture.to_str().unwrap(),
            "-n",
            collector,
            "-p",
            pid.to_str().unwrap(),
            // No control socket: with a socket path of 14 characters or more, softflowd 1.1
            // blocks in accept() at the end of a capture file instead of exiting.
            "-c",
            "",
        ],
    );
    assert!(
        out.status.success(),
        "softflowd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
