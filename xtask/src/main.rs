//! Developer tasks. `cargo xtask setup|build|deb|test|bench|run|fuzz`; see README.md.
mod deb;
mod demo;
mod fuzz;
mod setup;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "xdpguard developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent): nightly rust-src, bpf-linker
    /// against nightly's LLVM, and the Debian packages the tests and benchmarks use.
    Setup,
    /// Build the agent (with the XDP program embedded) in release mode.
    Build,
    /// Build the Debian package `target/deb/xdpguard_VERSION_ARCH.deb` (release build).
    Deb,
    /// Set up, check formatting and lints, run unit tests, build the Debian package, then the
    /// root kernel and packaging tests serially.
    Test,
    /// Run a benchmark as root and print a Markdown report.
    Bench {
        #[arg(value_enum)]
        which: Bench,
    },
    /// Without arguments: the sandbox demo in its own network namespaces.
    /// With arguments after `--`: run `xdpguard ARGS` (release build) as root.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the flow decoder, the ruleset and config loaders and the control protocol with
    /// cargo-fuzz (installed if missing) on the installed nightly, each target for a bounded
    /// time. Not part of `test`.
    Fuzz {
        /// One of flow_decode, ruleset_load, config_load, control_proto; all when omitted.
        target: Option<String>,
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Bench {
    /// ns per packet: xdpguard vs XDP_PASS vs one stock LPM lookup, by list size.
    Xdp,
    /// `xdpguard block --file` to enforcement vs `ipset restore`, 100k and 1M addresses.
    Apply,
    /// Log lines per second, sshd ruleset vs `fail2ban-regex`, on a 1M-line auth log.
    Scoring,
    /// NetFlow v9 records per second decoded and aggregated vs nfcapd; 1M-source aggregation.
    Volume,
    /// 100k CrowdSec decisions imported → enforced: xdpguard vs crowdsec-firewall-bouncer.
    Crowdsec,
    /// Fleet propagation through JetStream: block on A → B's kernel map, p50/p99; 100k at once.
    Fleet,
    /// Origins: a full-size RIS table's load time and memory; lookups per second.
    Origins,
    /// History: write cost per interval; report time over 30 days of 1-minute intervals.
    History,
}

fn main() -> ExitCode {
    // Errors print as one chain of causes, without a backtrace of xtask itself.
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let root = workspace_root()?;
    match cli.task {
        Task::Setup => setup::run(&root),
        Task::Build => {
            setup::run(&root)?;
            cargo(&root, ["build", "--release", "-p", "xdpguard"])
        }
        Task::Deb => {
            setup::run(&root)?;
            cargo(&root, ["build", "--release", "-p", "xdpguard"])?;
            deb::build(&root, &root.join("target/release/xdpguard")).map(drop)
        }
        Task::Test => test(&root),
        Task::Bench { which } => bench(&root, which),
        Task::Run { args } => run(&root, &args),
        Task::Fuzz { target, seconds } => fuzz::run(&root, target.as_deref(), seconds),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest_dir
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// Run `cargo ARGS` (the stable toolchain) in the workspace, failing on a non-zero exit.
fn cargo<I, S>(root: &Path, args: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(root).args(args);
    status(&mut command)
}

fn status(command: &mut Command) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (BPF, XDP and network namespaces); run it as root");
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    setup::run(root)?;
    cargo(root, ["fmt", "--all", "--check"])?;
    cargo(
        root,
        [
            "clippy",
            "--workspace",
            "--exclude",
            "xdpguard-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    setup::ebpf_clippy(root)?;
    // Root-free unit and doc tests; the kernel tests are #[ignore]d here. setup installed
    // fail2ban, so its annotated test logs must be there for the recall test.
    let mut root_free = Command::new(env!("CARGO"));
    root_free
        .current_dir(root)
        .args(["test", "--workspace", "--exclude", "xdpguard-ebpf"])
        .env("XDPGUARD_REQUIRE_FAIL2BAN", "1");
    status(&mut root_free)?;
    require_root("the kernel tests")?;
    // The package the packaging test installs into a scratch root.
    cargo(root, ["build", "--release", "-p", "xdpguard"])?;
    let deb = deb::build(root, &root.join("target/release/xdpguard"))?;
    // Kernel tests: real programs, maps and namespaces, one at a time.
    let mut kernel = Command::new(env!("CARGO"));
    kernel.current_dir(root).env("XDPGUARD_DEB", &deb).args([
        "test",
        "-p",
        "xdpguard",
        "--tests",
        "--",
        "--ignored",
        "--test-threads=1",
    ]);
    status(&mut kernel)
}

fn bench(root: &Path, which: Bench) -> Result<()> {
    setup::run(root)?;
    require_root("benchmarks")?;
    let name = match which {
        Bench::Xdp => "xdp",
        Bench::Apply => "apply",
        Bench::Scoring => "scoring",
        Bench::Volume => "volume",
        Bench::Crowdsec => "crowdsec",
        Bench::Fleet => "fleet",
        Bench::Origins => "origins",
        Bench::History => "history",
    };
    if matches!(which, Bench::Crowdsec) {
        setup::install_quietly(&["crowdsec-firewall-bouncer", "nftables", "iptables", "ipset"])?;
    }
    // Benchmarks that drive the daemon run the release binary.
    cargo(root, ["build", "--release", "-p", "xdpguard"])?;
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(root)
        .env("XDPGUARD_BIN", root.join("target/release/xdpguard"))
        .args(["bench", "-p", "xdpguard", "--bench", name]);
    if matches!(which, Bench::Scoring) {
        // Throughput against fail2ban, then line-to-kernel latency.
        let _: &mut Command = command.args(["--bench", "latency"]);
    }
    status(&mut command)
}

fn run(root: &Path, args: &[String]) -> Result<()> {
    setup::run(root)?;
    cargo(root, ["build", "--release", "-p", "xdpguard"])?;
    let binary = root.join("target/release/xdpguard");
    require_root("xdpguard")?;
    if args.is_empty() {
        return demo::run(&binary, &root.join("rulesets"), &demo::report_path(root));
    }
    status(Command::new(&binary).args(args))
}
