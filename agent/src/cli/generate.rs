//! `xdpguard generate man|completions DIR`: what the Debian package ships, made from the
//! clap definitions so they cannot drift from the binary.
use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use super::args::{Cli, Generated};

impl Generated {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Man => "man pages",
            Self::Completions => "shell completions",
        }
    }
}

/// Write `what` into `dir` (created if missing).
pub fn write(what: Generated, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut command = Cli::command();
    match what {
        Generated::Man => man_pages(&mut command, dir),
        Generated::Completions => {
            for shell in [
                clap_complete::Shell::Bash,
                clap_complete::Shell::Zsh,
                clap_complete::Shell::Fish,
            ] {
                let _path = clap_complete::generate_to(shell, &mut command, "xdpguard", dir)
                    .with_context(|| format!("writing the {shell} completion"))?;
            }
            Ok(())
        }
    }
}

/// `xdpguard.8` and one `xdpguard-COMMAND.8` per visible command: section 8, the daemon and
/// its tools are for the administrator.
fn man_pages(command: &mut clap::Command, dir: &Path) -> Result<()> {
    // Global options show on every command's page only once the tree is built.
    command.build();
    let version = command.get_version().unwrap_or_default().to_owned();
    let page = |cmd: clap::Command, name: &str, extra: &str| -> Result<()> {
        let path = dir.join(format!("{name}.8"));
        let man = clap_mangen::Man::new(cmd.after_help(None::<&str>))
            .section("8")
            .source(format!("xdpguard {version}"))
            .manual("System Administration");
        let mut out = Vec::new();
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        man.render_subcommands_section(&mut out)?;
        out.extend_from_slice(extra.as_bytes());
        man.render_version_section(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
    };
    let subcommands: Vec<clap::Command> = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned()
        .collect();
    let see_also: Vec<String> = subcommands
        .iter()
        .map(|s| format!("\\fBxdpguard-{}\\fR(8)", s.get_name()))
        .collect();
    page(
        command.clone(),
        "xdpguard",
        &format!(
            "{EXIT_STATUS}{ENVIRONMENT}{FILES}.SH \"SEE ALSO\"\n{}\n",
            see_also.join(",\n")
        ),
    )?;
    for sub in subcommands {
        let name = format!("xdpguard-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("xdpguard {}", sub.get_name()))
            .version(version.clone());
        page(
            sub,
            &name,
            &format!("{EXIT_STATUS}.SH \"SEE ALSO\"\n\\fBxdpguard\\fR(8)\n"),
        )?;
    }
    Ok(())
}

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Done.
.TP
\fB1\fR
An error; the message on standard error says what failed.
.TP
\fB2\fR
Usage: the arguments are wrong.
.TP
\fB3\fR
The daemon is not running (no control socket, or nothing listening on it).
.TP
\fB4\fR
Refused: the daemon refused some of what was asked (guards, allowlist), \fBdetach\fR found the daemon running, or \fBlint\fR found problems. With \fB--json\fR the answer still says what was refused.
"#;

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
\fBXDPGUARD_SOCKET\fR
The control socket, as \fB--socket\fR.
.TP
\fBNO_COLOR\fR
When set and not empty, no colours (as \fB--color never\fR).
.TP
\fBRUST_LOG\fR
The daemon's log level (\fBinfo\fR by default; \fBdebug\fR, \fBwarn\fR ...).
.TP
\fBJOURNAL_STREAM\fR, \fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd: log lines then carry syslog priorities and no time of their own; the daemon reports readiness, reloads and stops, and pings the watchdog while its threads are alive.
"#;

const FILES: &str = r#".SH FILES
.TP
\fI/etc/xdpguard/xdpguard.toml\fR
The configuration (documented key by key), then \fI/etc/xdpguard/conf.d/*.toml\fR merged over it in name order; \fBxdpguard config --show\fR prints the result and where each value came from.
.TP
\fI/usr/share/xdpguard/rulesets/\fR
The shipped log rulesets; a file of the same name in \fI/etc/xdpguard/rulesets.d/\fR replaces one, an empty file there (or a link to /dev/null) turns it off.
.TP
\fI/var/lib/xdpguard/\fR
Decisions and log positions, kept across restarts.
.TP
\fI/run/xdpguard/control.sock\fR
The control socket the commands talk to (root only).
.TP
\fI/sys/fs/bpf/xdpguard/\fR
The pinned XDP program, link and maps: they keep enforcing while the daemon is stopped; \fBxdpguard detach\fR removes them.
.TP
\fI/usr/share/doc/xdpguard/\fR
README, ARCHITECTURE, RULESETS, an example configuration, the Grafana dashboard and Prometheus alerts.
"#;
