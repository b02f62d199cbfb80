//! Carrying out a command: one request to the daemon, or an offline tool.
use std::{
    io::IsTerminal as _,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use xdpguard::{
    api::control::{self, Answer, Request},
    config::Config,
    daemon,
    detect::logs::{ruleset, score::ScoringPolicy},
    enforce::dataplane::Dataplane,
    listfile,
    tools::{check, import_fail2ban, import_ini, lint},
};

use super::{
    args::{Cli, Command, RulesetLimitArgs},
    output,
};

/// `xdpguard top`: one JSON snapshot, one table, or a table redrawn every `every`.
fn top(socket: &Path, json: bool, once: bool, every: Duration) -> Result<()> {
    let every = every.max(Duration::from_millis(200));
    let redraw = !once && !json && std::io::stdout().is_terminal();
    loop {
        let Answer::Top(snapshot) = request(socket, &Request::Top)? else {
            bail!("unexpected answer to top");
        };
        if json {
            println!("{}", serde_json::to_string_pretty(&snapshot)?);
            return Ok(());
        }
        let screen = output::format_top(&snapshot, now_unix());
        if redraw {
            // Home and clear, then the table: a flicker-free enough refresh without curses.
            print!("\x1b[H\x1b[2J{screen}");
        } else {
            print!("{screen}");
        }
        if once {
            return Ok(());
        }
        if !redraw {
            println!();
        }
        std::thread::sleep(every);
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn request(socket: &Path, request: &Request) -> Result<Answer> {
    match control::call(socket, request)? {
        Answer::Error { message } => bail!("{message}"),
        response => Ok(response),
    }
}

/// Print an apply/remove outcome; fail when anything was refused.
fn report(response: &Answer) -> Result<()> {
    print!("{}", output::format_outcome(response));
    match response {
        Answer::Applied { refused, .. } | Answer::Removed { refused, .. }
            if !refused.is_empty() =>
        {
            bail!("{} refused", refused.len())
        }
        _ => Ok(()),
    }
}

/// Carry out `cli`.
///
/// # Errors
/// Whatever the command failed on, as one chain of causes.
pub fn run(cli: Cli) -> Result<()> {
    let socket = cli.socket;
    match cli.command {
        Command::Run { config } => {
            daemon::run(&|| daemon::settings_from_config(&config))?;
            Ok(())
        }
        Command::Block {
            prefixes,
            file: Some(file),
            duration,
            reason,
            force,
        } => {
            debug_assert!(prefixes.is_empty());
            block_file(&socket, &file, duration, reason.as_deref(), force)
        }
        Command::Block {
            prefixes,
            file: None,
            duration,
            reason,
            force,
        } => {
            if prefixes.is_empty() {
                bail!("name at least one address or prefix, or --file");
            }
            report(&request(
                &socket,
                &Request::Block {
                    prefixes,
                    duration_secs: duration.map(|d| d.as_secs()),
                    reason,
                    source: None,
                    force,
                },
            )?)
        }
        Command::Unblock { prefixes } => report(&request(&socket, &Request::Unblock { prefixes })?),
        Command::Allow { prefixes, reason } => {
            report(&request(&socket, &Request::Allow { prefixes, reason })?)
        }
        Command::Unallow { prefixes } => report(&request(&socket, &Request::Unallow { prefixes })?),
        Command::List { json, source } => {
            let Answer::List { entries } = request(
                &socket,
                &Request::List {
                    source,
                    covering: None,
                },
            )?
            else {
                bail!("unexpected answer to list");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print!("{}", output::format_list(&entries, now_unix()));
            }
            Ok(())
        }
        Command::Explain { address, json } => {
            let Answer::List { mut entries } = request(
                &socket,
                &Request::List {
                    source: None,
                    covering: Some(address.to_string()),
                },
            )?
            else {
                bail!("unexpected answer to explain");
            };
            entries.sort_by_key(|e| std::cmp::Reverse(output::prefix_len(&e.prefix)));
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print!("{}", output::format_explain(address, &entries, now_unix()));
            }
            Ok(())
        }
        Command::Status { json } => {
            let Answer::Status(status) = request(&socket, &Request::Status)? else {
                bail!("unexpected answer to status");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", output::format_status(&status));
            }
            Ok(())
        }
        Command::Top { json, once, every } => top(&socket, json, once, every),
        Command::Check {
            rulesets,
            ruleset_dir,
            threshold,
            include_local,
            unmatched,
            explain,
            modes,
            json,
            limits,
            input,
        } => {
            let config = limits.config.as_deref().map(Config::read).transpose()?;
            let mut paths: Vec<_> = ruleset_dir.into_iter().chain(rulesets).collect();
            if paths.is_empty()
                && let Some(dir) = config.as_ref().and_then(|c| c.rulesets_dir.clone())
            {
                paths.push(dir);
            }
            let mut loaded = ruleset::load_paths(&paths, &ruleset_limits(&limits)?)?;
            if loaded.is_empty() {
                bail!("no rulesets: name --ruleset FILE or --rulesets DIR");
            }
            // The daemon's modes first (an input's mode for the rulesets it reads), then
            // --mode over them.
            for input in config.iter().flat_map(|c| &c.inputs) {
                let Some(mode) = &input.mode else {
                    continue;
                };
                for ruleset in &mut loaded {
                    let read = input.rulesets.is_empty() || input.rulesets.contains(&ruleset.name);
                    if read && ruleset.modes().any(|m| m == mode) {
                        ruleset.set_mode(mode).map_err(|message| {
                            anyhow::anyhow!("input {}: {message}", input.name)
                        })?;
                    }
                }
            }
            select_modes(&mut loaded, &modes)?;
            let base = config
                .as_ref()
                .map_or_else(ScoringPolicy::default, |c| c.scoring.board);
            let threshold = threshold.unwrap_or(base.threshold);
            let policy = ScoringPolicy {
                threshold,
                exclude_local: base.exclude_local && !include_local,
                ..base
            };
            let options = check::CheckOptions {
                keep_unmatched: unmatched,
                explain,
                ..check::CheckOptions::default()
            };
            let report = if input.as_os_str() == "-" {
                check::check_with(&loaded, std::io::stdin().lock(), policy, options)?
            } else {
                let file = std::fs::File::open(&input)
                    .with_context(|| format!("opening {}", input.display()))?;
                check::check_with(
                    &loaded,
                    std::io::BufReader::with_capacity(READ_BUFFER, file),
                    policy,
                    options,
                )?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", check::format_report(&report, threshold));
            }
            Ok(())
        }
        Command::ImportIni { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            print!("{}", import_ini::convert(&text, &file)?);
            Ok(())
        }
        Command::ImportFail2ban { filter } => {
            let conversion = import_fail2ban::convert_file(&filter)?;
            print!("{}", conversion.toml);
            for note in &conversion.notes {
                eprintln!("import-fail2ban: {}: {note}", filter.display());
            }
            let loaded = ruleset::parse(&conversion.toml, &filter)?;
            let findings = lint::lint(&loaded);
            for finding in &findings {
                eprintln!("import-fail2ban: lint: {finding}");
            }
            eprintln!(
                "import-fail2ban: {} rulesets, {} notes, {} lint findings",
                loaded.len(),
                conversion.notes.len(),
                findings.len()
            );
            Ok(())
        }
        Command::Lint { paths, limits } => {
            let loaded = ruleset::load_paths(&paths, &ruleset_limits(&limits)?)?;
            let findings = lint::lint(&loaded);
            for finding in &findings {
                println!("{finding}");
            }
            if !findings.is_empty() {
                bail!("{} findings in {} rulesets", findings.len(), loaded.len());
            }
            println!("{} rulesets, no findings", loaded.len());
            Ok(())
        }
        Command::Detach { config, pin_dir } => detach(&socket, &config, pin_dir),
    }
}

/// `xdpguard detach`: remove xdpguard's pins, holding the pin directory's lock meanwhile so no
/// daemon starts on it halfway; refused while a daemon holds that lock (one that is still
/// stopping too: it may yet write its snapshot).
fn detach(socket: &Path, config: &Path, pin_dir: Option<std::path::PathBuf>) -> Result<()> {
    let pin_dir = match pin_dir {
        Some(dir) => dir,
        // The file alone: a broken ruleset must not stop a detach.
        None => Config::read(config)?.pin_dir,
    };
    if !pin_dir.exists() {
        println!("nothing to detach: {} does not exist", pin_dir.display());
        return Ok(());
    }
    let _lock = match daemon::lock::Lock::directory(&pin_dir) {
        Ok(lock) => lock,
        Err(daemon::lock::LockError::Held { holder, .. }) => bail!(
            "xdpguard ({holder}) is running on {}; stop it first",
            pin_dir.display()
        ),
        Err(err) => return Err(err.into()),
    };
    // A daemon too old to take the lock still answers here.
    if control::call(socket, &Request::Status).is_ok() {
        bail!(
            "the daemon is running (control socket {}); stop it first",
            socket.display()
        );
    }
    let removed = Dataplane::remove_pins(&pin_dir)?;
    println!(
        "detached; removed {} pins under {}",
        removed.removed,
        pin_dir.display()
    );
    if !removed.kept.is_empty() {
        println!(
            "left {} entries that are not xdpguard's: {}",
            removed.kept.len(),
            removed.kept.join(", ")
        );
    }
    Ok(())
}

/// Chunks per request: big enough to be fast, small enough for a progress bar.
/// What `check` reads a file in: whole runs of lines per read call.
const READ_BUFFER: usize = 256 << 10;

const FILE_CHUNK: usize = 50_000;

fn block_file(
    socket: &Path,
    file: &Path,
    duration: Option<Duration>,
    reason: Option<&str>,
    force: bool,
) -> Result<()> {
    let list =
        listfile::read_prefix_list(file).with_context(|| format!("reading {}", file.display()))?;
    for rejected in &list.rejected {
        eprintln!("{}:{}: {}", file.display(), rejected.line, rejected.reason);
    }
    let name = file
        .file_name()
        .map_or_else(|| "list".to_owned(), |n| n.to_string_lossy().into_owned());
    let source = format!("file:{name}");
    let total = list.prefixes.len();
    let progress = std::io::stderr().is_terminal() && total > FILE_CHUNK;
    let mut applied = 0;
    let mut refused = Vec::new();
    for (i, chunk) in list.prefixes.chunks(FILE_CHUNK).enumerate() {
        let response = request(
            socket,
            &Request::Block {
                prefixes: chunk.iter().map(|(_, prefix)| prefix.to_string()).collect(),
                duration_secs: duration.map(|d| d.as_secs()),
                reason: Some(
                    reason.map_or_else(|| format!("listed in {}", file.display()), str::to_owned),
                ),
                source: Some(source.clone()),
                force,
            },
        )
        .with_context(|| {
            // Which part was answered: an interrupted import has the earlier requests applied.
            let first = i * FILE_CHUNK + 1;
            format!(
                "importing {}: the request for prefixes {first}-{} of {total} failed \
                 ({applied} applied by the requests before it)",
                file.display(),
                first + chunk.len() - 1
            )
        })?;
        if let Answer::Applied {
            applied: n,
            refused: r,
        } = response
        {
            applied += n;
            refused.extend(r);
        }
        if progress {
            let done = ((i + 1) * FILE_CHUNK).min(total);
            let filled = done * 40 / total;
            eprint!(
                "\r[{}{}] {done}/{total}",
                "#".repeat(filled),
                " ".repeat(40 - filled)
            );
        }
    }
    if progress {
        eprintln!();
    }
    println!(
        "{}: {} lines read, {applied} applied, {} refused by the daemon, {} rejected lines",
        file.display(),
        total + list.rejected.len(),
        refused.len(),
        list.rejected.len()
    );
    for refusal in refused.iter().take(20) {
        println!("  refused {}: {}", refusal.prefix, refusal.reason);
    }
    if refused.len() > 20 {
        println!("  ... and {} more", refused.len() - 20);
    }
    if !list.rejected.is_empty() || !refused.is_empty() {
        bail!("not every line was applied");
    }
    Ok(())
}

/// The limits `check` and `lint` load rulesets within.
fn ruleset_limits(args: &RulesetLimitArgs) -> Result<ruleset::RulesetLimits> {
    let mut limits = match &args.config {
        // The file alone: its own rulesets directory is not what is being checked.
        Some(path) => Config::read(path)?.ruleset_limits,
        None => ruleset::RulesetLimits::default(),
    };
    for setting in &args.limit {
        limits
            .set_from_text(setting)
            .map_err(|message| anyhow::anyhow!("--limit {message}"))?;
    }
    Ok(limits)
}

/// `--mode MODE` (every ruleset that has it; at least one must) and `--mode RULESET=MODE`.
fn select_modes(rulesets: &mut [ruleset::Ruleset], modes: &[String]) -> Result<()> {
    for wanted in modes {
        match wanted.split_once('=') {
            Some((name, mode)) => {
                let ruleset = rulesets
                    .iter_mut()
                    .find(|r| r.name == name)
                    .with_context(|| format!("--mode {wanted}: no ruleset {name:?} is loaded"))?;
                ruleset
                    .set_mode(mode)
                    .map_err(|message| anyhow::anyhow!("--mode {wanted}: {message}"))?;
            }
            None => {
                let mut any = false;
                for ruleset in rulesets.iter_mut() {
                    if ruleset.modes().any(|m| m == wanted) {
                        ruleset
                            .set_mode(wanted)
                            .map_err(|message| anyhow::anyhow!("--mode {wanted}: {message}"))?;
                        any = true;
                    }
                }
                if !any {
                    bail!("--mode {wanted}: no loaded ruleset has that mode");
                }
            }
        }
    }
    Ok(())
}
