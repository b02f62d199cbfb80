//! What the configuration's tests share: a path, the shipped example, and ways to wrap a
//! snippet into a file and read its error.
use std::path::Path;

use super::{Config, ConfigError, InterfaceConfig};
use crate::enforce::dataplane::AttachMode;

pub(super) const PATH: &str = "/etc/xdpguard/xdpguard.toml";
pub(super) const EXAMPLE: &str = include_str!("../../../packaging/xdpguard.toml");
pub(super) const MINIMAL: &str = "[[interfaces]]\nname = \"eth1\"\n";

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(PATH))
}

/// `top` goes before the interface table, so its keys stay top-level.
pub(super) fn with_top(top: &str) -> String {
    format!("{top}\n{MINIMAL}")
}

/// `section` goes after the interface table.
pub(super) fn with_section(section: &str) -> String {
    format!("{MINIMAL}{section}")
}

/// The error's text, which must start with `PATH:line:`.
pub(super) fn error_at(text: &str, line: usize) -> String {
    let err = parse(text).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{PATH}:{line}:")),
        "expected line {line}: {message}"
    );
    message
}

pub(super) fn eth(name: &str, mode: AttachMode) -> InterfaceConfig {
    InterfaceConfig {
        name: name.to_owned(),
        mode,
    }
}

/// Each error starts with `PATH:` and `expected` (`line:column: key: message...`).
pub(super) fn assert_errors(cases: &[(&str, &str)], wrap: impl Fn(&str) -> String) {
    for (section, expected) in cases {
        let text = wrap(section);
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{PATH}:{expected}")),
            "{section:?}\n  expected {expected}\n  got      {message}"
        );
    }
}
