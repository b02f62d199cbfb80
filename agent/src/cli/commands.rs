//! Carrying out a command: one request to the daemon, or an offline tool.
use std::{
    fmt,
    io::IsTerminal as _,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use xdpguard::{
    api::control::{self, Answer, ControlError, Request},
    config::Config,
    daemon,
    detect::logs::{ruleset, score::ScoringPolicy},
    enforce::dataplane::Dataplane,
    history::{query::SummaryQuery, store::HistoryStore},
    listfile,
    report::offline,
    tools::{check, import_fail2ban, import_ini, lint},
};

use super::{
    args::{Cli, Command, ReportArgs, RulesetLimitArgs},
    output::{self, Style},
};

/// How a command ended, as its exit status says (`xdpguard --help` lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Error = 1,
    Usage = 2,
    NotRunning = 3,
    Refused = 4,
}

impl Exit {
    /// The status for `err`: the first cause in its chain that says which.
    pub fn of(err: &anyhow::Error) -> Self {
        for cause in err.chain() {
            if let Some(ControlError::NotRunning(_)) = cause.downcast_ref::<ControlError>() {
                return Self::NotRunning;
            }
            if let Some(failure) = cause.downcast_ref::<Failure>() {
                return failure.exit;
            }
        }
        Self::Error
    }
}

/// An error with its own exit status: wrong arguments (2) or something refused (4).
#[derive(Debug)]
pub struct Failure {
    exit: Exit,
    message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    Failure {
        exit: Exit::Usage,
        message: message.into(),
    }
    .into()
}

fn refused(message: impl Into<String>) -> anyhow::Error {
    Failure {
        exit: Exit::Refused,
        message: message.into(),
    }
    .into()
}

/// What a command answered: its human text and its JSON, one of which is printed; `exit`
/// is [`Exit::Refused`] when the daemon refused part of it (the answer still says what).
struct Reply {
    text: String,
    json: serde_json::Value,
    exit: Exit,
}

impl Reply {
    fn new(text: String, json: serde_json::Value) -> Self {
        Self {
            text,
            json,
            exit: Exit::Done,
        }
    }

    /// A reply the command printed itself (`top`'s refreshing screen).
    const fn printed() -> Self {
        Self {
            text: String::new(),
            json: serde_json::Value::Null,
            exit: Exit::Done,
        }
    }
}

/// How output is written: JSON or text, colours or not.
struct Printer {
    json: bool,
    style: Style,
}

/// Carry out `cli` and print its answer or its error; the exit status to end with.
pub fn main(cli: Cli) -> Exit {
    let stdout_style = Style::choose(cli.color, std::io::stdout().is_terminal());
    let stderr_style = Style::choose(cli.color, std::io::stderr().is_terminal());
    let printer = Printer {
        json: cli.json,
        style: stdout_style,
    };
    let json = cli.json;
    match run(cli, &printer) {
        Ok(reply) => {
            let printed = reply.json.is_null() && reply.text.is_empty();
            if printed {
                // Written as it went.
            } else if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reply.json).unwrap_or_default()
                );
            } else {
                print!("{}", reply.text);
            }
            match reply.exit {
                Exit::Done => {}
                Exit::Refused => {
                    eprintln!("{}", stderr_style.error("xdpguard: refused (see above)"));
                }
                _ => eprintln!("{}", stderr_style.error("xdpguard: failed (see above)")),
            }
            reply.exit
        }
        Err(err) => {
            let exit = Exit::of(&err);
            if json {
                println!(
                    "{}",
                    json!({ "error": format!("{err:#}"), "exit_code": exit as u8 })
                );
            }
            eprintln!("{}", stderr_style.error(&format!("xdpguard: {err:#}")));
            exit
        }
    }
}

/// `xdpguard top`: one JSON snapshot, one table, or a table redrawn every `every`.
fn top(socket: &Path, printer: &Printer, once: bool, every: Duration) -> Result<Reply> {
    let every = every.max(Duration::from_millis(200));
    let redraw = !once && !printer.json && std::io::stdout().is_terminal();
    loop {
        let Answer::Top(snapshot) = request(socket, &Request::Top)? else {
            bail!("unexpected answer to top");
        };
        if printer.json {
            return Ok(Reply::new(String::new(), serde_json::to_value(&snapshot)?));
        }
        let screen = output::format_top(&snapshot, now_unix(), printer.style);
        if once {
            return Ok(Reply::new(screen, serde_json::Value::Null));
        }
        if redraw {
            // Home and clear, then the table: a flicker-free enough refresh without curses.
            print!("\x1b[H\x1b[2J{screen}");
        } else {
            println!("{screen}");
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

/// An apply/remove answer; refused when anything was.
fn outcome(answer: &Answer, style: Style) -> Result<Reply> {
    let mut reply = Reply::new(
        output::format_outcome(answer, style),
        serde_json::to_value(answer)?,
    );
    if let Answer::Applied { refused, .. } | Answer::Removed { refused, .. } = answer
        && !refused.is_empty()
    {
        reply.exit = Exit::Refused;
    }
    Ok(reply)
}

/// Carry out `cli`.
fn run(cli: Cli, printer: &Printer) -> Result<Reply> {
    let socket = cli.socket;
    let style = printer.style;
    match cli.command {
        Command::Run { config } => {
            if printer.json {
                return Err(usage(
                    "run writes a log, not an answer: --json does not apply",
                ));
            }
            daemon::run(&|| daemon::settings_from_config(&config))?;
            Ok(Reply::printed())
        }
        Command::Block {
            asn: Some(asn),
            duration,
            reason,
            force,
            ..
        } => {
            let answer = request(
                &socket,
                &Request::BlockAsn {
                    asn,
                    duration_secs: duration.map(|d| d.as_secs()),
                    reason,
                    force,
                },
            )?;
            let mut reply = outcome(&answer, style)?;
            reply.text = output::format_asn_outcome(asn, &answer, style);
            Ok(reply)
        }
        Command::Block {
            prefixes,
            file: Some(file),
            duration,
            reason,
            force,
            asn: None,
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
            asn: None,
        } => {
            if prefixes.is_empty() {
                return Err(usage("name at least one address or prefix, or --file"));
            }
            outcome(
                &request(
                    &socket,
                    &Request::Block {
                        prefixes,
                        duration_secs: duration.map(|d| d.as_secs()),
                        reason,
                        source: None,
                        force,
                    },
                )?,
                style,
            )
        }
        Command::Unblock { asn: Some(asn), .. } => {
            outcome(&request(&socket, &Request::UnblockAsn { asn })?, style)
        }
        Command::Unblock {
            prefixes,
            asn: None,
        } => outcome(&request(&socket, &Request::Unblock { prefixes })?, style),
        Command::Allow { prefixes, reason } => outcome(
            &request(&socket, &Request::Allow { prefixes, reason })?,
            style,
        ),
        Command::Unallow { prefixes } => {
            outcome(&request(&socket, &Request::Unallow { prefixes })?, style)
        }
        Command::List { source, ip } => {
            let Answer::List { mut entries } = request(
                &socket,
                &Request::List {
                    source,
                    covering: ip.map(|ip| ip.to_string()),
                },
            )?
            else {
                bail!("unexpected answer to list");
            };
            if ip.is_some() {
                entries.sort_by_key(|e| std::cmp::Reverse(output::prefix_len(&e.prefix)));
            }
            Ok(Reply::new(
                output::format_list(&entries, now_unix(), style),
                serde_json::to_value(&entries)?,
            ))
        }
        Command::Explain { address } => {
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
            // Only with a table loaded: an address with no announcement says so then.
            let origin = match request(
                &socket,
                &Request::Origins {
                    addresses: vec![address.to_string()],
                },
            ) {
                Ok(Answer::Origins { mut entries, table }) if table.generation > 0 => entries.pop(),
                _ => None,
            };
            Ok(Reply::new(
                output::format_explain(address, origin.as_ref(), &entries, now_unix(), style),
                // The entries, as `list --json` writes them (scripts read both alike).
                serde_json::to_value(&entries)?,
            ))
        }
        Command::Status => {
            let Answer::Status(status) = request(&socket, &Request::Status)? else {
                bail!("unexpected answer to status");
            };
            Ok(Reply::new(
                output::format_status(&status, style),
                serde_json::to_value(&status)?,
            ))
        }
        Command::Top { once, every } => top(&socket, printer, once, every),
        Command::Check {
            rulesets,
            ruleset_dir,
            threshold,
            include_local,
            unmatched,
            explain,
            modes,
            origins,
            limits,
            input,
        } => {
            let config = limits.config.as_deref().map(Config::read).transpose()?;
            // Read before the log: a bad dump is an error before any work.
            let table = check_origins(origins, config.as_ref())?;
            let mut paths: Vec<_> = ruleset_dir.into_iter().chain(rulesets).collect();
            if paths.is_empty()
                && let Some(config) = &config
            {
                paths.extend(Config::ruleset_files(config)?);
            }
            let mut loaded = ruleset::load_paths(&paths, &ruleset_limits(&limits)?)?;
            if loaded.is_empty() {
                return Err(usage("no rulesets: name --ruleset FILE or --rulesets DIR"));
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
            let mut report = if input.as_os_str() == "-" {
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
            if let Some(table) = &table {
                check::add_origins(&mut report, table);
            }
            Ok(Reply::new(
                check::format_report(&report, threshold),
                serde_json::to_value(&report)?,
            ))
        }
        Command::ImportIni { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let toml = import_ini::convert(&text, &file)?;
            Ok(Reply::new(toml.clone(), json!({ "toml": toml })))
        }
        Command::ImportFail2ban { filter } => {
            let conversion = import_fail2ban::convert_file(&filter)?;
            let loaded = ruleset::parse(&conversion.toml, &filter)?;
            let findings = lint::lint(&loaded);
            if !printer.json {
                for note in &conversion.notes {
                    eprintln!("import-fail2ban: {}: {note}", filter.display());
                }
                for finding in &findings {
                    eprintln!("import-fail2ban: lint: {finding}");
                }
                eprintln!(
                    "import-fail2ban: {} rulesets, {} notes, {} lint findings",
                    loaded.len(),
                    conversion.notes.len(),
                    findings.len()
                );
            }
            Ok(Reply::new(
                conversion.toml.clone(),
                json!({
                    "toml": conversion.toml,
                    "rulesets": loaded.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                    "notes": conversion.notes,
                    "lint": findings.iter().map(finding_json).collect::<Vec<_>>(),
                }),
            ))
        }
        Command::Report(args) => report(&args, printer.json),
        Command::Lint { paths, limits } => {
            let loaded = ruleset::load_paths(&paths, &ruleset_limits(&limits)?)?;
            let findings = lint::lint(&loaded);
            let mut text = String::new();
            for finding in &findings {
                text.push_str(&format!("{finding}\n"));
            }
            if findings.is_empty() {
                text.push_str(&format!("{} rulesets, no findings\n", loaded.len()));
            } else {
                text.push_str(&format!(
                    "{} findings in {} rulesets\n",
                    findings.len(),
                    loaded.len()
                ));
            }
            Ok(Reply {
                text,
                json: json!({
                    "rulesets": loaded.len(),
                    "findings": findings.iter().map(finding_json).collect::<Vec<_>>(),
                }),
                exit: if findings.is_empty() {
                    Exit::Done
                } else {
                    Exit::Refused
                },
            })
        }
        Command::Config { config, show } => config_command(&config, show),
        Command::Generate { what, dir } => {
            super::generate::write(what, &dir)?;
            Ok(Reply::new(
                format!("wrote {} into {}\n", what.name(), dir.display()),
                json!({ "wrote": what.name(), "dir": dir }),
            ))
        }
        Command::Detach { config, pin_dir } => detach(&socket, &config, pin_dir),
    }
}

/// `report`: a summary over the last `since`, binned: of the history, or offline of logs or
/// of nfcapd files.
fn report(request: &ReportArgs, json: bool) -> Result<Reply> {
    if json && request.html.is_some() {
        return Err(usage("give --json or --html, not both"));
    }
    if request.bin.as_secs() == 0 {
        return Err(usage("--bin must be at least a second"));
    }
    let origins = if request.origins.is_empty() {
        None
    } else {
        let config = xdpguard::origins::OriginsConfig {
            files: request.origins.clone(),
            ..xdpguard::origins::OriginsConfig::default()
        };
        Some(xdpguard::origins::load(&config)?.0)
    };
    let summary = if !request.logs.is_empty() {
        report_logs(request, origins.as_ref())?
    } else if let Some(dir) = &request.nfcapd {
        let flows = offline::nfcapd::read_dir(dir)?;
        offline::nfcapd::summarize(
            format!("nfcapd:{}", dir.display()),
            flows,
            &offline::nfcapd::FlowSummaryOptions {
                span_seconds: request.since.as_secs(),
                bin_seconds: request.bin.as_secs(),
                top_limit: request.top,
                local: &request.local,
                origins: origins.as_ref(),
            },
        )?
    } else {
        let store = HistoryStore::open_read_only(&request.history)?;
        let until = now_unix() + 1;
        let lookup = |address: std::net::IpAddr| {
            origins
                .as_ref()
                .and_then(|table| table.lookup(address))
                .map(|found| found.origin.to_string())
        };
        store.summary(&SummaryQuery {
            since: until.saturating_sub(request.since.as_secs()),
            until,
            bin_seconds: request.bin.as_secs(),
            top_limit: request.top,
            origin_of: origins.as_ref().map(|_| &lookup as &dyn Fn(_) -> _),
        })?
    };
    let json_value = serde_json::to_value(&summary)?;
    if let Some(path) = &request.html {
        let source = summary
            .from
            .split_once(':')
            .map_or(summary.from.as_str(), |(_, source)| source);
        let page = xdpguard::report::html::render(
            &summary,
            &xdpguard::report::html::HtmlOptions {
                title: format!("xdpguard report, {source}"),
                generated_at: now_unix(),
            },
        );
        // Written beside and renamed: a reader never sees half a page.
        let partial = path.with_extension("html.partial");
        std::fs::write(&partial, page)
            .and_then(|()| std::fs::rename(&partial, path))
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(Reply::new(
            format!("report written to {}\n", path.display()),
            json!({ "html": path }),
        ));
    }
    Ok(Reply::new(
        xdpguard::report::text::render(&summary),
        json_value,
    ))
}

/// `report --log`: the rulesets as `check` loads them (its flags, or the configuration's
/// rulesets, limits, scoring policy and input modes), run over each log; what could not be
/// placed in time goes to standard error.
fn report_logs(
    request: &ReportArgs,
    origins: Option<&xdpguard::origins::OriginTable>,
) -> Result<xdpguard::history::model::Summary> {
    let config = request.config.as_deref().map(Config::read).transpose()?;
    let mut paths: Vec<_> = request
        .ruleset_dir
        .iter()
        .chain(&request.rulesets)
        .cloned()
        .collect();
    if paths.is_empty()
        && let Some(config) = &config
    {
        paths.extend(Config::ruleset_files(config)?);
    }
    let limits = ruleset_limits(&RulesetLimitArgs {
        config: request.config.clone(),
        limit: Vec::new(),
    })?;
    let mut loaded = ruleset::load_paths(&paths, &limits)?;
    if loaded.is_empty() {
        return Err(usage(
            "no rulesets: name --ruleset FILE or --rulesets DIR, or --config",
        ));
    }
    // The daemon's modes: an input's mode for the rulesets it reads, as `check` takes them.
    for input in config.iter().flat_map(|c| &c.inputs) {
        let Some(mode) = &input.mode else {
            continue;
        };
        for ruleset in &mut loaded {
            let read = input.rulesets.is_empty() || input.rulesets.contains(&ruleset.name);
            if read && ruleset.modes().any(|m| m == mode) {
                ruleset
                    .set_mode(mode)
                    .map_err(|message| anyhow::anyhow!("input {}: {message}", input.name))?;
            }
        }
    }
    let policy = config
        .as_ref()
        .map_or_else(ScoringPolicy::default, |c| c.scoring.board);
    let now = now_unix();
    let mut names = Vec::with_capacity(request.logs.len());
    let mut scans = Vec::with_capacity(request.logs.len());
    for path in &request.logs {
        let scan = if path.as_os_str() == "-" {
            offline::logs::scan(&loaded, std::io::stdin().lock(), policy, now)
        } else {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            offline::logs::scan(
                &loaded,
                std::io::BufReader::with_capacity(READ_BUFFER, file),
                policy,
                now,
            )
        }
        .with_context(|| format!("reading {}", path.display()))?;
        if let Some(caveats) = scan.caveats() {
            eprintln!("report: {}: {caveats}", path.display());
        }
        names.push(path.display().to_string());
        scans.push(scan);
    }
    let (summary, left_out) = offline::logs::summarize(
        &names,
        &scans,
        &offline::logs::LogSummaryOptions {
            span_seconds: request.since.as_secs(),
            bin_seconds: request.bin.as_secs(),
            origins,
        },
    )?;
    if left_out.scores > 0 {
        eprintln!(
            "report: {} scores from before {} left out (--since counts back from the newest line)",
            left_out.scores,
            xdpguard::report::markup::Utc::of(summary.since).full()
        );
    }
    Ok(summary)
}

fn finding_json(finding: &lint::Finding) -> serde_json::Value {
    json!({
        "file": finding.file,
        "ruleset": finding.ruleset,
        "rule": finding.rule,
        "problem": finding.problem,
    })
}

/// `xdpguard detach`: remove xdpguard's pins, holding the pin directory's lock meanwhile so no
/// daemon starts on it halfway; refused while a daemon holds that lock (one that is still
/// stopping too: it may yet write its snapshot).
fn detach(socket: &Path, config: &Path, pin_dir: Option<std::path::PathBuf>) -> Result<Reply> {
    let pin_dir = match pin_dir {
        Some(dir) => dir,
        // The file alone: a broken ruleset must not stop a detach.
        None => Config::read(config)?.pin_dir,
    };
    if !pin_dir.exists() {
        return Ok(Reply::new(
            format!("nothing to detach: {} does not exist\n", pin_dir.display()),
            json!({ "pin_dir": pin_dir, "removed": 0, "kept": [] }),
        ));
    }
    let _lock = match daemon::lock::Lock::directory(&pin_dir) {
        Ok(lock) => lock,
        Err(daemon::lock::LockError::Held { holder, .. }) => {
            return Err(refused(format!(
                "xdpguard ({holder}) is running on {}; stop it first",
                pin_dir.display()
            )));
        }
        Err(err) => return Err(err.into()),
    };
    // A daemon too old to take the lock still answers here.
    if control::call(socket, &Request::Status).is_ok() {
        return Err(refused(format!(
            "the daemon is running (control socket {}); stop it first",
            socket.display()
        )));
    }
    let removed = Dataplane::remove_pins(&pin_dir)?;
    let mut text = format!(
        "detached; removed {} pins under {}\n",
        removed.removed,
        pin_dir.display()
    );
    if !removed.kept.is_empty() {
        text.push_str(&format!(
            "left {} entries that are not xdpguard's: {}\n",
            removed.kept.len(),
            removed.kept.join(", ")
        ));
    }
    Ok(Reply::new(
        text,
        json!({ "pin_dir": pin_dir, "removed": removed.removed, "kept": removed.kept }),
    ))
}

/// `xdpguard config`: validate everything the daemon would read at start, or show it.
fn config_command(path: &Path, show: bool) -> Result<Reply> {
    if show {
        let shown = Config::show(path)?;
        return Ok(Reply::new(
            shown.text.clone(),
            serde_json::to_value(&shown)?,
        ));
    }
    let (config, rulesets) = Config::load_with_rulesets(path)?;
    let files: Vec<String> = Config::files(path)?
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Ok(Reply::new(
        format!(
            "{}: valid ({} interfaces, {} inputs, {} rulesets)\n",
            files.join(" + "),
            config.interfaces.len(),
            config.inputs.len(),
            rulesets.len()
        ),
        json!({
            "valid": true,
            "files": files,
            "interfaces": config.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            "inputs": config.inputs.len(),
            "rulesets": rulesets.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        }),
    ))
}

/// What `check` reads a file in: whole runs of lines per read call.
const READ_BUFFER: usize = 256 << 10;

/// Chunks per request: big enough to be fast, small enough for a progress bar.
const FILE_CHUNK: usize = 50_000;

fn block_file(
    socket: &Path,
    file: &Path,
    duration: Option<Duration>,
    reason: Option<&str>,
    force: bool,
) -> Result<Reply> {
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
    let mut refusals = Vec::new();
    let reason = reason.map_or_else(|| format!("listed in {}", file.display()), str::to_owned);
    let send = |chunk: &[(usize, xdpguard::prefix::Prefix)]| {
        request(
            socket,
            &Request::Block {
                prefixes: chunk.iter().map(|(_, prefix)| prefix.to_string()).collect(),
                duration_secs: duration.map(|d| d.as_secs()),
                reason: Some(reason.clone()),
                source: Some(source.clone()),
                force,
            },
        )
    };
    // Eight requests at least where the list allows: the pipeline below overlaps them.
    let chunk_size = (total / 8).clamp(FILE_CHUNK / 10, FILE_CHUNK);
    let chunks: Vec<&[(usize, xdpguard::prefix::Prefix)]> =
        list.prefixes.chunks(chunk_size).collect();
    // Two requests in flight: the next one is encoded, sent and parsed by the daemon while the
    // owner applies this one (a million-line import spends a quarter of its time there).
    std::thread::scope(|scope| -> Result<()> {
        let mut in_flight = chunks.first().map(|chunk| scope.spawn(|| send(chunk)));
        for (i, chunk) in chunks.iter().enumerate() {
            let next = chunks.get(i + 1).map(|next| scope.spawn(|| send(next)));
            let response = in_flight
                .take()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the sending thread panicked")))
                })
                .unwrap_or_else(|| Err(anyhow::anyhow!("no request sent")));
            in_flight = next;
            let response = match response {
                Ok(response) => response,
                Err(err) => {
                    // The one sent after it may have been applied too: count it before saying.
                    if let Some(Ok(Ok(Answer::Applied { applied: n, .. }))) =
                        in_flight.take().map(std::thread::ScopedJoinHandle::join)
                    {
                        applied += n;
                    }
                    let first = i * chunk_size + 1;
                    return Err(err.context(format!(
                        "importing {}: the request for prefixes {first}-{} of {total} failed \
                         ({applied} applied by the other requests)",
                        file.display(),
                        first + chunk.len() - 1
                    )));
                }
            };
            if let Answer::Applied {
                applied: n,
                refused: r,
            } = response
            {
                applied += n;
                refusals.extend(r);
            }
            if progress {
                let done = ((i + 1) * chunk_size).min(total);
                let filled = done * 40 / total;
                eprint!(
                    "\r[{}{}] {done}/{total}",
                    "#".repeat(filled),
                    " ".repeat(40 - filled)
                );
            }
        }
        Ok(())
    })?;
    if progress {
        eprintln!();
    }
    let mut text = format!(
        "{}: {} lines read, {applied} applied, {} refused by the daemon, {} rejected lines\n",
        file.display(),
        total + list.rejected.len(),
        refusals.len(),
        list.rejected.len()
    );
    for refusal in refusals.iter().take(20) {
        text.push_str(&format!(
            "  refused {}: {}\n",
            refusal.prefix, refusal.reason
        ));
    }
    if refusals.len() > 20 {
        text.push_str(&format!("  ... and {} more\n", refusals.len() - 20));
    }
    let json = json!({
        "file": file,
        "lines": total + list.rejected.len(),
        "applied": applied,
        "refused": refusals,
        "rejected": list
            .rejected
            .iter()
            .map(|r| json!({ "line": r.line, "reason": r.reason.to_string() }))
            .collect::<Vec<_>>(),
    });
    Ok(Reply {
        text,
        json,
        // Lines that are not prefixes are the file's error; refusals are the daemon's.
        exit: if !list.rejected.is_empty() {
            Exit::Error
        } else if refusals.is_empty() {
            Exit::Done
        } else {
            Exit::Refused
        },
    })
}

/// The origins table `check` annotates with: the `--origins` dumps, or else those of the
/// configuration's `[origins]`; `None` when there are none.
fn check_origins(
    files: Vec<std::path::PathBuf>,
    config: Option<&Config>,
) -> Result<Option<xdpguard::origins::OriginTable>> {
    let configured = config.and_then(|c| c.origins.clone()).unwrap_or_default();
    let wanted = xdpguard::origins::OriginsConfig {
        files: if files.is_empty() {
            configured.files
        } else {
            files
        },
        ..configured
    };
    if wanted.files.is_empty() {
        return Ok(None);
    }
    // The error's text already names its cause: as one message, not a chain repeating it.
    let (table, stats) = xdpguard::origins::load(&wanted)
        .map_err(|err| anyhow::anyhow!("reading the origins: {err}"))?;
    for (path, stats) in &stats {
        if let Some((line, reason)) = &stats.first_malformed {
            eprintln!(
                "{}:{line}: {reason} (skipped; {} malformed in all)",
                path.display(),
                stats.malformed
            );
        }
    }
    Ok(Some(table))
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
                    return Err(usage(format!(
                        "--mode {wanted}: no loaded ruleset has that mode"
                    )));
                }
            }
        }
    }
    Ok(())
}
