//! One daemon per pin directory and per state directory (issue 10, item 9), `detach` only
//! with no daemon on the pin directory, and a bpffs root as the pin directory (item 10).
//! Needs root; run by `cargo xtask test`.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use xdpguard::{
    enforce::dataplane::{Capacities, Dataplane},
    prefix::Prefix,
};
use xdpguard_testkit::{
    daemon::{Daemon, Workdir},
    netns::{FW_IF, FW_V4, Sandbox},
    xdpguard_binary,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failed(output: &std::process::Output) -> String {
    assert!(
        !output.status.success(),
        "command succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const ATTACKER: &str = "203.0.113.66";
const CLEAN: &str = "203.0.113.10";

fn setup(tag: &str, metrics_port: u16) -> (Sandbox, Workdir) {
    let sandbox = Sandbox::new(tag);
    for source in [ATTACKER, CLEAN] {
        sandbox.add_source(ip(source));
    }
    let workdir = Workdir::new(tag, xdpguard_binary!());
    workdir.write_config(FW_IF, metrics_port, "");
    (sandbox, workdir)
}

/// The workdir's configuration with its directories, socket and metrics port swapped for the
/// ones given (`None`: keep the workdir's).
fn second_config(
    workdir: &Workdir,
    pin_dir: Option<&Path>,
    state_dir: Option<&Path>,
    metrics_port: (u16, u16),
) -> PathBuf {
    let mut text = std::fs::read_to_string(workdir.config())
        .unwrap()
        .replace(
            &workdir.socket().display().to_string(),
            &workdir.path.join("run2/control.sock").display().to_string(),
        )
        .replace(
            &format!("127.0.0.1:{}", metrics_port.0),
            &format!("127.0.0.1:{}", metrics_port.1),
        );
    if let Some(dir) = pin_dir {
        text = text.replace(
            &workdir.pin_dir().display().to_string(),
            &dir.display().to_string(),
        );
    }
    if let Some(dir) = state_dir {
        text = text.replace(
            &workdir.state_dir().display().to_string(),
            &dir.display().to_string(),
        );
    }
    let path = workdir.path.join("second.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Start `xdpguard run --config config` in the firewall namespace, expecting it to give up: its
/// exit status and output. A daemon still running after 20 s is killed and fails the test.
fn refused_start(sandbox: &Sandbox, workdir: &Workdir, config: &Path) -> String {
    let out = workdir.path.join("refused.out");
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", sandbox.fw))
        .arg(&workdir.binary)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the second daemon kept running: {}",
                std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the second daemon exited with {status}");
    std::fs::read_to_string(&out).unwrap_or_default()
        + &std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
}

/// The kernel's entry for `source`, read straight from the pinned map.
fn in_kernel(pin_dir: &Path, source: &str) -> bool {
    let (dataplane, _) = Dataplane::open_pinned(pin_dir, Capacities::default()).unwrap();
    dataplane
        .block_entry(&Prefix::host(ip(source)))
        .unwrap()
        .is_some()
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_second_daemon_on_the_same_pin_dir_is_refused_and_unblock_stays() {
    let (sandbox, workdir) = setup("lock-pins", 19_610);
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", ATTACKER]));
    assert_eq!(sandbox.ping(ip(ATTACKER), FW_V4, 2), 0);

    // Its own state directory, socket and metrics port: only the pin directory is shared.
    let other_state = workdir.path.join("state2");
    let config = second_config(&workdir, None, Some(&other_state), (19_610, 19_611));
    let text = refused_start(&sandbox, &workdir, &config);
    let pin_dir = workdir.pin_dir().display().to_string();
    assert!(
        text.contains(&format!("pin directory {pin_dir}")),
        "names the directory: {text}"
    );
    assert!(
        text.contains(&format!("pid {}", daemon.pid())),
        "names the holder: {text}"
    );
    assert!(text.contains("stop that one first"), "{text}");
    // It recorded nothing: its state directory holds only the lock file it gave up on.
    assert!(!other_state.join("decisions.jsonl").exists());
    assert!(!other_state.join("decisions.log").exists());

    // The first daemon's unblock stays effective: nobody puts the entry back.
    ok(&daemon.cli(&["unblock", ATTACKER]));
    assert!(!in_kernel(&workdir.pin_dir(), ATTACKER));
    // Reconcile runs every second; three rounds at least.
    std::thread::sleep(Duration::from_secs(4));
    assert!(!in_kernel(&workdir.pin_dir(), ATTACKER));
    assert_eq!(sandbox.ping(ip(ATTACKER), FW_V4, 2), 2);
    // And the first one is still in charge.
    ok(&daemon.cli(&["status"]));
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let (sandbox, workdir) = setup("lock-state", 19_612);
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", ATTACKER]));

    let other_pins = workdir.path.join("bpf/second");
    let config = second_config(&workdir, Some(&other_pins), None, (19_612, 19_613));
    let text = refused_start(&sandbox, &workdir, &config);
    let state_dir = workdir.state_dir().display().to_string();
    assert!(
        text.contains(&format!("state directory {state_dir}")),
        "names the directory: {text}"
    );
    assert!(text.contains(&format!("pid {}", daemon.pid())), "{text}");
    // Refused before loading anything: no program was pinned on its pin directory.
    assert!(!other_pins.join("program").exists());
    // The lock file still names the first daemon.
    assert_eq!(
        std::fs::read_to_string(workdir.state_dir().join("daemon.lock")).unwrap(),
        format!("{}\n", daemon.pid())
    );
    assert_eq!(sandbox.ping(ip(ATTACKER), FW_V4, 2), 0);
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_daemon_on_the_same_control_socket_is_refused_before_it_loads() {
    let (sandbox, workdir) = setup("lock-socket", 19_614);
    let daemon = Daemon::start(&sandbox, &workdir);
    // Other directories, the same socket.
    let other_pins = workdir.path.join("bpf/second");
    let other_state = workdir.path.join("state2");
    let config = workdir.path.join("second.toml");
    std::fs::write(
        &config,
        std::fs::read_to_string(workdir.config())
            .unwrap()
            .replace(
                &workdir.pin_dir().display().to_string(),
                &other_pins.display().to_string(),
            )
            .replace(
                &workdir.state_dir().display().to_string(),
                &other_state.display().to_string(),
            )
            .replace("127.0.0.1:19614", "127.0.0.1:19615"),
    )
    .unwrap();
    let text = refused_start(&sandbox, &workdir, &config);
    assert!(
        text.contains(&format!("control socket {}", workdir.socket().display())),
        "{text}"
    );
    assert!(text.contains(&format!("pid {}", daemon.pid())), "{text}");
    // Nothing was loaded or attached for it.
    assert!(!other_pins.join("program").exists());
    ok(&daemon.cli(&["status"]));
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn detach_is_refused_while_a_daemon_runs_and_works_after_it_stopped() {
    let (sandbox, workdir) = setup("lock-detach", 19_616);
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", ATTACKER]));
    let pin_dir = workdir.pin_dir().display().to_string();
    let detach = || workdir.cli(&["detach", "--pin-dir", &pin_dir]);

    let text = failed(&detach());
    assert!(
        text.contains(&format!("(pid {}", daemon.pid()))
            && text.contains(&format!("is running on {pin_dir}; stop it first")),
        "{text}"
    );
    // A stopping daemon has closed its control socket but still writes its snapshot: the
    // lock, not the socket, is what refuses.
    let socket = workdir.socket();
    let aside = socket.with_extension("aside");
    std::fs::rename(&socket, &aside).unwrap();
    let text = failed(&detach());
    assert!(text.contains("is running on"), "{text}");
    std::fs::rename(&aside, &socket).unwrap();
    assert!(workdir.pin_dir().join("program").exists());
    assert_eq!(sandbox.ping(ip(ATTACKER), FW_V4, 2), 0);

    assert_eq!(daemon.stop().code(), Some(0));
    let text = ok(&detach());
    assert!(text.contains("detached"), "{text}");
    assert!(!workdir.pin_dir().exists());
    assert_eq!(sandbox.ping(ip(ATTACKER), FW_V4, 2), 2);
    // Nothing left to detach is not an error.
    ok(&detach());
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_new_daemon_starts_on_the_same_dirs_after_kill_9() {
    let (sandbox, workdir) = setup("lock-kill", 19_618);
    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", ATTACKER, "--for", "1h"]));
    daemon.kill();
    // The kernel released the dead daemon's locks: a new one starts and adopts.
    let daemon = Daemon::start(&sandbox, &workdir);
    assert!(daemon.stderr().contains("adopted"), "{}", daemon.stderr());
    let list = ok(&daemon.cli(&["list"]));
    assert!(list.contains(ATTACKER), "{list}");
    assert_eq!(sandbox.ping(ip(ATTACKER), FW_V4, 2), 0);
    assert_eq!(
        std::fs::read_to_string(workdir.state_dir().join("daemon.lock")).unwrap(),
        format!("{}\n", daemon.pid())
    );
    assert_eq!(daemon.stop().code(), Some(0));
}

/// `BPF_MAP_CREATE` an array map named `name` and pin it at `path`: another program's pin.
fn pin_foreign_map(path: &Path, name: &str) {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let mut map_name = [0u8; 16];
    map_name[..name.len()].copy_from_slice(name.as_bytes());
    let create = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        map_flags: 0,
        inner_map_fd: 0,
        numa_node: 0,
        map_name,
    };
    // SAFETY: a bpf_attr prefix of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &raw const create,
            size_of::<MapCreate>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let pin = ObjPin {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: u32::try_from(fd).unwrap(),
        file_flags: 0,
    };
    // SAFETY: as above; the path outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &raw const pin,
            size_of::<ObjPin>(),
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_OBJ_PIN {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: our descriptor; the pin keeps the map.
    unsafe { libc::close(i32::try_from(fd).unwrap()) };
}

/// Entries of `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "needs root and BPF: run by `cargo xtask test`"]
fn a_bpffs_root_serves_as_pin_dir_and_detach_keeps_what_is_not_ours() {
    let (sandbox, workdir) = setup("lock-root", 19_620);
    // The workdir's bpffs is mounted fresh, here, outside `ip netns exec`, and unmounted by
    // the workdir's Drop; its root (with the kernel's progs.debug and maps.debug when the
    // kernel preloads them) is the pin directory.
    let root = workdir.path.join("bpf");
    let config = std::fs::read_to_string(workdir.config()).unwrap().replace(
        &format!("pin_dir = \"{}\"", workdir.pin_dir().display()),
        &format!("pin_dir = \"{}\"", root.display()),
    );
    std::fs::write(workdir.config(), config).unwrap();
    // Other software's pins beside ours.
    std::fs::create_dir(root.join("other-tool")).unwrap();
    pin_foreign_map(&root.join("other_map"), "other_map");
    let before = names(&root);

    let daemon = Daemon::start(&sandbox, &workdir);
    ok(&daemon.cli(&["block", ATTACKER]));
    assert_eq!(sandbox.ping(ip(ATTACKER), FW_V4, 2), 0);
    assert_eq!(sandbox.ping(ip(CLEAN), FW_V4, 2), 2);
    assert!(root.join("program").exists());
    assert_eq!(daemon.stop().code(), Some(0));
    // A restart adopts from the root too.
    let daemon = Daemon::start(&sandbox, &workdir);
    assert!(daemon.stderr().contains("adopted"), "{}", daemon.stderr());
    assert_eq!(daemon.stop().code(), Some(0));

    let root_text = root.display().to_string();
    let text = ok(&workdir.cli(&["detach", "--pin-dir", &root_text]));
    assert!(text.contains("left"), "{text}");
    // Exactly what was there before xdpguard: the kernel's entries and the other tool's.
    assert_eq!(names(&root), before);
    assert_eq!(sandbox.ping(ip(ATTACKER), FW_V4, 2), 2);

    // A foreign map under one of xdpguard's names: detach leaves it, a daemon refuses to
    // adopt or overwrite it.
    pin_foreign_map(&root.join("CONFIG"), "not_xdpguard");
    let text = ok(&workdir.cli(&["detach", "--pin-dir", &root_text]));
    assert!(text.contains("CONFIG"), "{text}");
    assert!(root.join("CONFIG").exists());
    let text = refused_start(&sandbox, &workdir, &workdir.config());
    assert!(
        text.contains(&format!("{root_text}/CONFIG")) && text.contains("not xdpguard's"),
        "{text}"
    );
    assert!(!root.join("program").exists(), "{:?}", names(&root));
}
