//! `cargo xtask fuzz [TARGET] [--seconds N]`: the cargo-fuzz targets of `fuzz/`, each for a
//! bounded time on the installed nightly toolchain, from seed corpora written fresh from real
//! inputs (`agent/tests/fuzzing/seeds.rs`: the shipped rulesets, the example configuration,
//! the testkit's NetFlow encoder, control lines). Not part of `cargo xtask test`.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

#[path = "../../agent/tests/fuzzing/seeds.rs"]
mod seeds;

/// The targets, in the order they run.
pub const TARGETS: &[&str] = &[
    "flow_decode",
    "ruleset_load",
    "config_load",
    "control_proto",
];
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// libFuzzer's limit for one input: slower ones are findings.
const INPUT_TIMEOUT_SECS: u64 = 10;
const RSS_LIMIT_MB: u64 = 2048;

/// What one target's run gave.
struct Run {
    target: &'static str,
    executions: Option<u64>,
    /// Crash, timeout or leak inputs libFuzzer wrote.
    findings: Vec<String>,
    succeeded: bool,
}

pub fn run(root: &Path, target: Option<&str>, seconds: u64) -> Result<()> {
    let targets: Vec<&'static str> = match target {
        None => TARGETS.to_vec(),
        Some(name) => match TARGETS.iter().find(|known| **known == name) {
            Some(known) => vec![*known],
            None => bail!(
                "no fuzz target {name:?}; the targets: {}",
                TARGETS.join(", ")
            ),
        },
    };
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    require_nightly()?;
    install_cargo_fuzz()?;
    let fuzz_dir = root.join("fuzz");
    write_seeds(&fuzz_dir)?;
    let mut runs = Vec::new();
    for target in targets {
        runs.push(fuzz_target(root, &fuzz_dir, target, seconds)?);
    }
    eprintln!("\nxtask fuzz: {seconds} s per target");
    let mut failed = false;
    for run in &runs {
        let executions = run
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let verdict = if run.findings.is_empty() && run.succeeded {
            "no findings".to_owned()
        } else {
            failed = true;
            if run.findings.is_empty() {
                "failed (see above)".to_owned()
            } else {
                format!("findings: {}", run.findings.join(", "))
            }
        };
        eprintln!(
            "  {:<14} {executions:>12} executions, {verdict}",
            run.target
        );
    }
    if failed {
        bail!(
            "fuzzing found problems; reproduce one with `AYA_BUILD_SKIP=1 cargo +nightly fuzz run --fuzz-dir fuzz TARGET INPUT`"
        );
    }
    Ok(())
}

/// A command that runs on the installed nightly, never a toolchain rustup would fetch.
fn nightly_cargo() -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("RUSTUP_AUTO_INSTALL", "0");
    command
}

fn require_nightly() -> Result<()> {
    let out = nightly_cargo()
        .arg("--version")
        .output()
        .context("starting cargo +nightly")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain (libFuzzer and the sanitizers need one); `cargo xtask setup` installs it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `cargo install cargo-fuzz` unless `cargo fuzz` already runs.
fn install_cargo_fuzz() -> Result<()> {
    let installed = nightly_cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    crate::status(
        Command::new(env!("CARGO"))
            .args(["install", "--locked", "cargo-fuzz", "--version"])
            .arg(CARGO_FUZZ_VERSION),
    )
    .context("installing cargo-fuzz")
}

/// `fuzz/seeds/TARGET/`, replaced by this build's seeds each run (the corpus libFuzzer grows
/// is `fuzz/corpus/TARGET/`, kept between runs).
fn write_seeds(fuzz_dir: &Path) -> Result<()> {
    let named = |prefix: &str, seeds: Vec<Vec<u8>>| -> Vec<(String, Vec<u8>)> {
        seeds
            .into_iter()
            .enumerate()
            .map(|(index, seed)| (format!("{prefix}-{index}"), seed))
            .collect()
    };
    let mut flow = named("input", seeds::flow_seeds());
    // Single datagrams too, framed one by one.
    flow.extend(named(
        "datagram",
        seeds::flow_datagram_seeds()
            .into_iter()
            .map(|datagram| seeds::flow_input(&[(0, datagram)]))
            .collect(),
    ));
    let sets = [
        ("flow_decode", flow),
        ("ruleset_load", seeds::ruleset_seeds()),
        ("config_load", seeds::config_seeds()),
        ("control_proto", named("line", seeds::control_seeds())),
    ];
    for (target, seeds) in sets {
        let dir = fuzz_dir.join("seeds").join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, bytes) in seeds {
            let path = dir.join(name);
            fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

fn fuzz_target(root: &Path, fuzz_dir: &Path, target: &'static str, seconds: u64) -> Result<Run> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds: PathBuf = fuzz_dir.join("seeds").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut command = nightly_cargo();
    command
        .current_dir(root)
        // The targets do not need the XDP program, so no eBPF toolchain either.
        .env("AYA_BUILD_SKIP", "1")
        .args(["fuzz", "run", "--fuzz-dir"])
        .arg(fuzz_dir)
        // debug_assert! and overflow checks, in an optimised build.
        .args(["--debug-assertions", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-max_len=65536")
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    eprintln!("xtask: running {command:?}");
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let mut executions = None;
    let mut findings = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        let mut dictionary = false;
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo fuzz's output")?;
            // libFuzzer's progress lines and its recommended dictionary are many; its status
            // lines, the build and the findings are what matter.
            let progress = line.starts_with('#') && line.contains(" cov: ");
            if line.starts_with("###### Recommended dictionary") {
                dictionary = true;
            }
            if !dictionary && (!progress || line.contains("DONE")) {
                eprintln!("{line}");
            }
            if line.starts_with("###### End of recommended dictionary") {
                dictionary = false;
            }
            if let Some(count) = line.strip_prefix("stat::number_of_executed_units:") {
                executions = count.trim().parse().ok();
            }
            if let Some((_, path)) = line.split_once("Test unit written to ") {
                findings.push(path.trim().to_owned());
            }
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    Ok(Run {
        target,
        executions,
        findings,
        succeeded: status.success(),
    })
}
