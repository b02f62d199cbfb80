//! The logs the log scoring follows: the `[[inputs]]` of the configuration, as validated by
//! `crate::config`.
use std::path::PathBuf;

/// Where an input's lines come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InputSource {
    /// A file, followed like `tail -F`.
    File(PathBuf),
    /// A named pipe, created when missing.
    Pipe(PathBuf),
    /// The daemon's standard input.
    Stdin,
    /// The systemd journal (`journalctl --follow`): one unit, or all; or a journal file.
    Journal {
        unit: Option<String>,
        file: Option<PathBuf>,
    },
}

/// A log to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputConfig {
    pub name: String,
    pub source: InputSource,
    /// Names of the rulesets its lines go through, in order; empty: all of them.
    pub rulesets: Vec<String>,
    /// Start at the end of the file (default) rather than replaying it from the start; a
    /// saved position wins over both.
    pub start_at_end: bool,
    /// The mode its rulesets run in, those that have it (the others run in their default).
    pub mode: Option<String>,
}
