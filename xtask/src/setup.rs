//! `cargo xtask setup`: everything a fresh machine needs, each step skipped when done.
use std::{
    env, fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::status;

const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages (program → package): `ip` for namespaces, `ping` for the namespace tests,
/// `prometheus` to scrape the daemon for real, `trafgen` for the varied-source XDP benchmark,
/// `ipset` and `fail2ban-regex` for the apply and scoring benchmarks, journalctl and
/// systemd-journal-remote for the journal input test, softflowd and nfcapd/nfdump as the
/// flow exporter and reference collector of the volume tests and benchmark (softflowd reads
/// the veth traffic from a tcpdump capture: live, it leaves packets in libpcap's buffer on a
/// quiet interface); dpkg-dev, binutils, lintian and man-db build and check the package.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("ping", "iputils-ping"),
    ("prometheus", "prometheus"),
    ("trafgen", "netsniff-ng"),
    ("ipset", "ipset"),
    ("fail2ban-regex", "fail2ban"),
    ("journalctl", "systemd"),
    (
        "/lib/systemd/systemd-journal-remote",
        "systemd-journal-remote",
    ),
    ("softflowd", "softflowd"),
    ("tcpdump", "tcpdump"),
    ("nfcapd", "nfdump"),
    // `cargo xtask bench xdp`: its BPF object, side by side.
    ("xdp-filter", "xdp-tools"),
    // `cargo xtask deb` and its test: shlibdeps, strip, lintian, man -l.
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("strip", "binutils"),
    ("lintian", "lintian"),
    ("man", "man-db"),
];

pub fn run(root: &Path) -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    crowdsec()?;
    // The fleet tests run their own JetStream server in the sandbox; Debian's service must not
    // start on the host.
    install_quietly(&["nats-server"])?;
    // The report test opens `report --html` in headless Chromium and reads its screenshot.
    install_quietly(&["chromium"])?;
    let _ = root;
    Ok(())
}

/// CAPI credentials that are not empty tell Debian's crowdsec postinst not to register with
/// the central API (README.Debian), which needs the internet these machines do not have and
/// would leave the package half-configured.
const CROWDSEC_CAPI: &str = "/etc/crowdsec/online_api_credentials.yaml";
/// invoke-rc.d's policy hook: `exit 101` forbids starting services from maintainer scripts.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Debian's crowdsec for the CrowdSec tests, installed offline and without starting its
/// service: the tests run their own local API on loopback in the sandbox.
fn crowdsec() -> Result<()> {
    fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
    if fs::metadata(CROWDSEC_CAPI).map_or(true, |m| m.len() == 0) {
        fs::write(
            CROWDSEC_CAPI,
            "# Left by xdpguard's test setup: no central API registration (offline machine).\n",
        )
        .with_context(|| format!("writing {CROWDSEC_CAPI}"))?;
    }
    install_quietly(&["crowdsec"])
}

/// Install `packages` that are not installed yet with `apt-get`, starting none of their
/// services (`cargo xtask bench crowdsec` runs its own bouncers in the sandbox).
pub fn install_quietly(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
                .is_ok_and(|status| status.trim() == "install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "setup: installing Debian packages {} (their services not started)",
        missing.join(" ")
    );
    // Our own policy hook only while installing, and only where there is none.
    let own_policy = !Path::new(POLICY_RC_D).exists();
    if own_policy {
        fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n")
            .with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {POLICY_RC_D} executable"))?;
    }
    let installed = status(Command::new("apt-get").args(["update", "-qq"])).and_then(|()| {
        status(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing),
        )
    });
    // A package left half-configured by an earlier attempt finishes here.
    let configured = installed.and_then(|()| {
        status(
            Command::new("dpkg")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["--configure", "--pending"]),
        )
    });
    if own_policy {
        let _ = fs::remove_file(POLICY_RC_D);
    }
    configured
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn rustup() -> Command {
    let mut command = Command::new("rustup");
    // Whatever toolchain runs xtask must not leak into the nightly commands.
    command.env_remove("RUSTUP_TOOLCHAIN");
    command
}

fn nightly_rust_src() -> Result<()> {
    let toolchains = output(rustup().args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|line| line.starts_with("nightly")) {
        eprintln!("setup: installing the nightly toolchain (the eBPF crate needs it)");
        status(rustup().args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
            .context("no nightly toolchain, and installing one failed")?;
    }
    let installed =
        output(rustup().args(["component", "list", "--installed", "--toolchain", NIGHTLY]))?;
    if !installed.lines().any(|line| line.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to nightly (to build core for the BPF target)");
        status(rustup().args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }
    Ok(())
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// bpf-linker linked against the very LLVM that nightly rustc uses, so their bitcode agrees.
fn bpf_linker() -> Result<()> {
    let cargo_home = cargo_home()?;
    let linker = cargo_home.join("bin/bpf-linker");
    if let Ok(version) = output(Command::new(&linker).arg("--version"))
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    let sysroot = output(
        Command::new("rustc")
            .env_remove("RUSTUP_TOOLCHAIN")
            .args(["+nightly", "--print", "sysroot"]),
    )?;
    let sysroot_lib = Path::new(sysroot.trim()).join("lib");
    let verbose = output(
        Command::new("rustc")
            .env_remove("RUSTUP_TOOLCHAIN")
            .args(["+nightly", "-vV"]),
    )?;
    let llvm_major = verbose
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|version| version.split('.').next())
        .context("nightly rustc -vV names no LLVM version")?
        .to_owned();
    // The real shared library, e.g. libLLVM.so.22.1-rust-1.97.0-nightly (the
    // libLLVM-22-rust-*.so next to it is a linker script).
    let llvm_lib = fs::read_dir(&sysroot_lib)
        .with_context(|| format!("reading {}", sysroot_lib.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", sysroot_lib.display()))?;
    // bpf-linker keeps this folder as its runpath, so it lives next to the binary, not in a
    // work tree. One folder per LLVM build: a nightly update gets a fresh one.
    let prefix = cargo_home.join("bpf-linker-llvm").join(&llvm_lib);
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", llvm_lib.as_str()] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        symlink(sysroot_lib.join(&llvm_lib), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {llvm_major} ({llvm_lib}); this takes a few minutes once"
    );
    status(
        Command::new("cargo")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm_major}"),
            ]),
    )
}

fn on_path(program: &str) -> bool {
    if program.starts_with('/') {
        return Path::new(program).exists();
    }
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Clippy for the eBPF crate, on its own target with nightly.
pub fn ebpf_clippy(root: &Path) -> Result<()> {
    status(
        Command::new("cargo")
            .current_dir(root)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .args([
                "+nightly",
                "clippy",
                "-p",
                "xdpguard-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]),
    )
}
