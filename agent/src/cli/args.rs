//! The command line, as clap reads it.
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use xdpguard::config;

pub const DEFAULT_CONFIG: &str = "/etc/xdpguard/xdpguard.toml";
/// Where the daemon keeps its history (in its default state directory).
pub const DEFAULT_HISTORY: &str = "/var/lib/xdpguard/history.sqlite";

#[derive(Parser)]
#[command(
    name = "xdpguard",
    version,
    about = "XDP host firewall: drops offenders at the NIC",
    long_about = "XDP host firewall: drops offenders at the NIC.\n\n\
        `xdpguard run` is the daemon (the systemd unit xdpguard.service runs it): it attaches \
        an XDP program to the configured interfaces, scores the configured logs with rulesets \
        and the traffic with volume detectors, and blocks offending addresses and prefixes in \
        the program's maps, with expiry and counters. The program and maps are pinned and keep \
        enforcing while the daemon is stopped. The other commands talk to the daemon over its \
        control socket (root only), or work offline on logs and rulesets."
)]
#[command(after_help = EXIT_STATUS, disable_help_subcommand = true)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "XDPGUARD_SOCKET", default_value = config::DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
    /// Print the answer as JSON on standard output (every command; an error too, as
    /// `{"error": ..., "exit_code": ...}`).
    #[arg(long, global = true)]
    pub json: bool,
    /// Colours: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

/// The exit statuses, for `--help` and the man page.
pub const EXIT_STATUS: &str = "\
Exit status:
  0  done
  1  error (the message says what failed)
  2  usage: the arguments are wrong
  3  the daemon is not running (no control socket, or nothing listening on it)
  4  refused: the daemon refused some of what was asked (guards, allowlist, lint findings)";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// The configuration file; `conf.d/*.toml` beside it are merged over it.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Block addresses or prefixes (ADDR or ADDR/LEN), every line of a list file, or every
    /// prefix an AS announces.
    Block {
        /// Addresses or prefixes, e.g. 203.0.113.7, 198.51.100.0/24, 2001:db8::/48.
        prefixes: Vec<String>,
        /// One address or CIDR per line, `#` comments (ipset / FireHOL netset shape).
        #[arg(long, conflicts_with = "prefixes")]
        file: Option<PathBuf>,
        /// Every prefix this AS announces as sole origin in the [origins] table (guards apply
        /// to each); the blocks follow the table as it is reloaded. `64500` or `AS64500`.
        #[arg(long, value_parser = parse_asn, conflicts_with_all = ["prefixes", "file"])]
        asn: Option<u32>,
        /// How long, e.g. 90s, 15m, 1h30m, 2d; default: the configured default ban.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Why, as `list` and `explain` show it.
        #[arg(long)]
        reason: Option<String>,
        /// Allow prefixes broader than the configured guard limit.
        #[arg(long)]
        force: bool,
    },
    /// Remove blocks.
    Unblock {
        /// Blocked addresses or prefixes, as `list` shows them.
        prefixes: Vec<String>,
        /// Every block `block --asn` made for this AS.
        #[arg(long, value_parser = parse_asn, conflicts_with = "prefixes")]
        asn: Option<u32>,
    },
    /// Let addresses or prefixes through, even inside blocked prefixes.
    Allow {
        /// Addresses or prefixes.
        prefixes: Vec<String>,
        /// Why, as `list` and `explain` show it.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove allowlist entries.
    Unallow {
        /// Allowlisted addresses or prefixes, as `list` shows them.
        prefixes: Vec<String>,
    },
    /// Every entry with its source, reason, remaining time and what it dropped.
    List {
        /// Only entries from this source (manual, config, file:NAME, ...).
        #[arg(long)]
        source: Option<String>,
        /// Only entries that cover this address (an exact entry and every prefix holding it).
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
    },
    /// Why an address is blocked or allowed: every entry that covers it (most specific
    /// first), its source, reason, expiry and counters, and the log lines that scored it.
    Explain {
        /// An IPv4 or IPv6 address.
        address: std::net::IpAddr,
    },
    /// Interfaces, list sizes and capacities, counters.
    Status,
    /// Top source prefixes by traffic volume in the last interval (bytes/s, packets/s, share,
    /// action), refreshed until interrupted.
    Top {
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
        /// A RIS whois dump (gzip or plain; repeatable): show each address's origin AS and
        /// announced prefix, and the blocked addresses per origin. With --config and none of
        /// these, the configuration's [origins] files.
        #[arg(long = "origins", value_name = "FILE")]
        origins: Vec<PathBuf>,
        #[command(flatten)]
        limits: RulesetLimitArgs,
        /// The log to read, or - for standard input.
        input: PathBuf,
    },
    /// Who attacked, over time, from the daemon's history (or offline, from logs run through
    /// rulesets or from nfcapd flow files): unique sources and /24s or /64s per bin and
    /// ruleset, drops, traffic, top origin ASes and prefixes, unusual flows; as text, JSON
    /// (--json) or one self-contained HTML page with charts (--html FILE).
    ///
    /// Offline (--log, --nfcapd) the range ends at the input's newest time (its last second +
    /// 1) and --since counts back from there.
    Report(ReportArgs),
    /// Convert the reference scorer's INI rulesets to TOML (written to standard output).
    ImportIni {
        /// The INI ruleset file.
        file: PathBuf,
    },
    /// Convert a fail2ban filter (filter.d/NAME.conf: includes, failregex, ignoreregex,
    /// prefregex, modes, interpolation, <HOST>, <F-...> tags) to a TOML ruleset on standard
    /// output; what could not be converted, and what lint flags, go to standard error.
    ImportFail2ban {
        /// The filter file, e.g. /etc/fail2ban/filter.d/sshd.conf.
        filter: PathBuf,
    },
    /// Flag ruleset patterns where attacker-controlled text could choose the scored address.
    Lint {
        /// Ruleset files or directories of them.
        #[arg(default_value = "/etc/xdpguard/rulesets")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        limits: RulesetLimitArgs,
    },
    /// Validate the configuration (the file, its conf.d drop-ins and the rulesets it names),
    /// or with --show print the effective configuration and where each value came from.
    Config {
        /// The configuration file; `conf.d/*.toml` beside it are merged over it.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the effective configuration, each value with the file and line it came from.
        #[arg(long)]
        show: bool,
    },
    /// Write the man pages or the shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
        /// The directory to write into.
        dir: PathBuf,
    },
    /// Detach the XDP program and delete its pinned maps (stop the daemon first). Decisions
    /// stay in the state directory and are re-applied at the next start.
    Detach {
        /// The configuration whose pin_dir to detach.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Use this pin directory instead of the configuration's.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Generated {
    /// xdpguard.8 and xdpguard-COMMAND.8, roff.
    Man,
    /// xdpguard.bash, _xdpguard (zsh) and xdpguard.fish.
    Completions,
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

/// An address or prefix, e.g. 198.51.100.0/24.
fn parse_prefix(text: &str) -> Result<xdpguard::prefix::Prefix, String> {
    xdpguard::prefix::Prefix::parse(text)
        .map(|(prefix, _)| prefix)
        .map_err(|err| format!("{text:?}: {err}"))
}

/// `64500` or `AS64500`.
fn parse_asn(text: &str) -> Result<u32, String> {
    let digits = text
        .strip_prefix("AS")
        .or_else(|| text.strip_prefix("as"))
        .unwrap_or(text);
    digits
        .parse::<u32>()
        .ok()
        .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{text:?} is not an AS number (64500 or AS64500)"))
}

/// `report`'s arguments: the history (by default), or logs, or nfcapd files.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The history database (the daemon's `[history] path`); the default source.
    #[arg(long, default_value = DEFAULT_HISTORY, conflicts_with_all = ["logs", "nfcapd"])]
    pub history: PathBuf,
    /// Offline: a log to run the rulesets over (repeatable), in the lines' own time, as
    /// `check` runs them; each log is scored on its own. Lines without a readable time are
    /// counted on standard error.
    #[arg(long = "log", value_name = "FILE", conflicts_with = "nfcapd")]
    pub logs: Vec<PathBuf>,
    /// With --log: a ruleset file (repeatable).
    #[arg(long = "ruleset", value_name = "FILE", requires = "logs")]
    pub rulesets: Vec<PathBuf>,
    /// With --log: a directory of ruleset files (*.toml).
    #[arg(long = "rulesets", value_name = "DIR", requires = "logs")]
    pub ruleset_dir: Option<PathBuf>,
    /// With --log: take the rulesets (when neither --ruleset nor --rulesets names any), the
    /// [rulesets] limits, the [scoring] policy and the inputs' modes from this daemon
    /// configuration.
    #[arg(long, requires = "logs")]
    pub config: Option<PathBuf>,
    /// Offline: the directory of nfcapd files to read with nfdump (Debian's nfdump).
    /// Traffic is binned by flow end; no drops or passes (a flow export is no verdict).
    #[arg(long, value_name = "DIR")]
    pub nfcapd: Option<PathBuf>,
    /// With --nfcapd: this site's prefixes (repeatable), to split traffic into local and
    /// external and to pair flows (flows from outside into these are judged).
    #[arg(long = "local", value_name = "PREFIX", requires = "nfcapd", value_parser = parse_prefix)]
    pub local: Vec<xdpguard::prefix::Prefix>,
    /// How far back, e.g. 24h, 7d, 30d (offline: from the input's newest time).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub since: Duration,
    /// The bin size, e.g. 1h, 1d, 1w.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub bin: Duration,
    /// Write the report as one HTML file (no network fetches, light and dark themes).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// RIS whois dumps, to count distinct origin ASes per bin (repeatable); with --nfcapd
    /// also the top origin ASes by volume.
    #[arg(long = "origins")]
    pub origins: Vec<PathBuf>,
    /// Rows per top list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}
