//! xdpguard: an XDP host firewall.
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod decision;
pub mod exposition;
pub mod flow;
pub mod import_ini;
pub mod input;
pub mod journal;
pub mod lint;
pub mod listfile;
pub mod logconfig;
pub mod logscore;
pub mod metrics;
pub mod offenders;
pub mod owner;
pub mod prefix;
pub mod ruleset;
pub mod score;
pub mod volume;

/// `err` and its causes, `: `-separated, for messages that cross a socket or a log line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
