//! xdpguard: an XDP host firewall.
// Data flows down this list: the daemon wires config, the api adapters, the detectors and
// the peers to the decision owner in `enforce`; the last six are leaves anyone may use.
pub mod daemon;

pub mod config;

pub mod api;
pub mod report;
pub mod tools;

pub mod detect;
pub mod peers;

pub mod enforce;

pub mod clock;
pub mod exposition;
pub mod history;
pub mod listfile;
pub mod origins;
pub mod prefix;

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
