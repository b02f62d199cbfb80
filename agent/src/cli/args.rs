//! The command line, as clap reads it.
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use xdpguard::config;

pub const DEFAULT_CONFIG: &str = "/etc/xdpguard/xdpguard.toml";

#[derive(Parser)]
#[command(
    name = "xdpguard",
    version,
    about = "XDP host firewall: drops offenders at the NIC"
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "XDPGUARD_SOCKET", default_value = config::DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Block addresses or prefixes (ADDR or ADDR/LEN), or every line of a list file.
    Block {
        prefixes: Vec<String>,
        /// One address or CIDR per line, `#` comments (ipset / FireHOL netset shape).
        #[arg(long, conflicts_with = "prefixes")]
        file: Option<PathBuf>,
        /// How long, e.g. 90s, 15m, 1h30m, 2d; default: the configured default ban.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
        #[arg(long)]
        reason: Option<String>,
        /// Allow prefixes broader than the configured guard limit.
        #[arg(long)]
        force: bool,
    },
    /// Remove blocks.
    Unblock { prefixes: Vec<String> },
    /// Let addresses or prefixes through, even inside blocked prefixes.
    Allow {
        prefixes: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove allowlist entries.
    Unallow { prefixes: Vec<String> },
    /// Every entry with its source, reason, remaining time and what it dropped.
    List {
        #[arg(long)]
        json: bool,
        /// Only entries from this source (manual, config, file:NAME, ...).
        #[arg(long)]
        source: Option<String>,
    },
    /// Why an address is blocked or allowed: every entry that covers it (most specific
    /// first), its source, reason, expiry and counters, and the log lines that scored it.
    Explain {
        address: std::net::IpAddr,
        #[arg(long)]
        json: bool,
    },
    /// Interfaces, list sizes and capacities, counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Top source prefixes by traffic volume in the last interval (bytes/s, packets/s, share,
    /// action), refreshed until interrupted.
    Top {
        /// Print the last interval once, as JSON, and exit.
        #[arg(long)]
        json: bool,
        /// Print the table once and exit.
        #[arg(long)]
        once: bool,
        /// How often to refresh.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        every: Duration,
    },
    /// Run rulesets over a log (FILE, or - for stdin) and report matches per rule, scores per
    /// address and which would be blocked. Needs no daemon and no root.
    Check {
        /// A ruleset file (repeatable).
        #[arg(long = "ruleset")]
        rulesets: Vec<PathBuf>,
        /// A directory of ruleset files (*.toml). With --config and neither of these, the
        /// configuration's rulesets_dir.
        #[arg(long = "rulesets")]
        ruleset_dir: Option<PathBuf>,
        /// Block when a score goes above this (default 10, or the --config's [scoring]).
        #[arg(long)]
        threshold: Option<i64>,
        /// Also score private, loopback and documentation addresses.
        #[arg(long)]
        include_local: bool,
        /// List the lines no ruleset matched (up to 1000).
        #[arg(long)]
        unmatched: bool,
        /// Print, per matched line, the rules that matched, the variables captured and the score.
        #[arg(long)]
        explain: bool,
        /// Run in this mode every ruleset that has it (MODE), or one ruleset (RULESET=MODE);
        /// repeatable. Without it each ruleset runs in its default mode.
        #[arg(long = "mode", value_name = "[RULESET=]MODE")]
        modes: Vec<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: RulesetLimitArgs,
        input: PathBuf,
    },
    /// Convert the reference scorer's INI rulesets to TOML (written to standard output).
    ImportIni { file: PathBuf },
    /// Convert a fail2ban filter (filter.d/NAME.conf: includes, failregex, ignoreregex,
    /// prefregex, modes, interpolation, <HOST>, <F-...> tags) to a TOML ruleset on standard
    /// output; what could not be converted, and what lint flags, go to standard error.
    ImportFail2ban { filter: PathBuf },
    /// Flag ruleset patterns where attacker-controlled text could choose the scored address.
    Lint {
        /// Ruleset files or directories of them.
        #[arg(default_value = "/etc/xdpguard/rulesets")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        limits: RulesetLimitArgs,
    },
    /// Detach the XDP program and delete its pinned maps (stop the daemon first). Decisions
    /// stay in the state directory and are re-applied at the next start.
    Detach {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Use this pin directory instead of the configuration's.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    config::parse_duration(text).map_err(|err| err.to_string())
}

/// The limits `check` and `lint` load rulesets within: the daemon's defaults, or its
/// configuration's `[rulesets]` table, then each `--limit`.
#[derive(clap::Args)]
pub struct RulesetLimitArgs {
    /// Take the `[rulesets]` limits from this daemon configuration (and for check, its
    /// [scoring] policy and its inputs' modes).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Set one limit, e.g. max_files=500 (repeatable; keys as in [rulesets]).
    #[arg(long = "limit", value_name = "KEY=N")]
    pub limit: Vec<String>,
}
