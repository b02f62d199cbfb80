//! `xdpguard lint`: find ruleset patterns where text an attacker controls could choose the
//! address that gets scored. A finding is a warning with the file, ruleset and rule; the
//! shipped rulesets have none (a test keeps it so).
//!
//! Checks, on every match that captures `address`:
//! - it runs on the raw line but is not anchored at its start (`^`): any program's output that
//!   contains the text, anywhere in the line, would match;
//! - a catch-all (`.*`, `.+`, `\S*`, `\S+`, `[^ ]*`) comes before the address capture and the
//!   pattern is not anchored at its end (`$`): attacker text in the catch-all can carry a
//!   made-up address that matches first;
//! - the address capture also matches host names (`\S+` and friends): a reverse-DNS name the
//!   attacker controls can look like anything;
//! - catch-alls both before and after the address capture: the address is then found only by
//!   its position between them, and any line whose client text repeats the fixed text around
//!   it is ambiguous (the daemon scores none of it, `check` lists it), so the rule is easy to
//!   evade; anchor the address on fixed text up to the end of the line.
use regex::Regex;

use crate::detect::logs::ruleset::Ruleset;

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub ruleset: String,
    pub rule: String,
    pub problem: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: ruleset {:?}, rule {:?}: {}",
            self.file, self.ruleset, self.rule, self.problem
        )
    }
}

/// The text of the group `(?P<name>...)` (or `(?<name>...)`), without its parentheses.
fn group_text<'p>(pattern: &'p str, name: &str) -> Option<(usize, &'p str)> {
    let start = [format!("(?P<{name}>"), format!("(?<{name}>")]
        .iter()
        .find_map(|open| pattern.find(open.as_str()).map(|at| (at, at + open.len())))?;
    let bytes = pattern.as_bytes();
    let mut depth = 1;
    let mut i = start.1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((start.0, &pattern[start.1..i]));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

const CATCH_ALLS: [&str; 6] = [".*", ".+", "\\S*", "\\S+", "[^ ]*", "[^ ]+"];
const HOST_NAMES: [&str; 3] = ["host.example.net", "localhost", "mail"];

/// Check one pattern. `on_line`: it runs on the raw line (no target).
pub fn check_pattern(pattern: &str, on_line: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((at, address)) = group_text(pattern, "address") else {
        return problems;
    };
    let flags_stripped = pattern.trim_start_matches(['(', '?', 'i', ')']);
    if on_line && !(pattern.starts_with('^') || flags_stripped.starts_with('^')) {
        problems.push(
            "matches the raw line without `^`: anchor it to where the logging program writes"
                .into(),
        );
    }
    let before = &pattern[..at];
    if CATCH_ALLS.iter().any(|c| before.contains(c)) && !pattern.ends_with('$') {
        problems.push(
            "a catch-all before the `address` capture and no `$` at the end: attacker text can carry an address that matches first".into(),
        );
    }
    let after = &pattern[at + address.len()..];
    if CATCH_ALLS.iter().any(|c| before.contains(c)) && CATCH_ALLS.iter().any(|c| after.contains(c))
    {
        problems.push(
            "catch-alls before and after the `address` capture: only its position picks the address, so client text that repeats the words around it makes the line ambiguous (never scored); anchor the address on fixed text up to `$`".into(),
        );
    }
    if let Ok(probe) = Regex::new(&format!("^(?:{address})$"))
        && let Some(name) = HOST_NAMES.iter().find(|name| probe.is_match(name))
    {
        problems.push(format!(
            "the `address` capture also matches host names such as {name:?}: capture only address characters, e.g. [0-9A-Fa-f:.]+"
        ));
    }
    problems
}

/// Every finding in `rulesets`.
pub fn lint(rulesets: &[Ruleset]) -> Vec<Finding> {
    let mut out = Vec::new();
    for ruleset in rulesets {
        for (rule, pattern, on_line) in ruleset.patterns() {
            for problem in check_pattern(pattern, on_line) {
                out.push(Finding {
                    file: ruleset.file.display().to_string(),
                    ruleset: ruleset.name.clone(),
                    rule: rule.to_owned(),
                    problem,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_catch_all_and_host_name_captures_are_flagged() {
        let problems = check_pattern(
            r"Failed password for .* from (?P<address>\S+) port \d+",
            true,
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("`^`"));
        assert!(problems[1].contains("catch-all"));
        assert!(problems[2].contains("host names"));
    }

    #[test]
    fn anchored_patterns_with_address_characters_pass() {
        assert!(
            check_pattern(
                r"^Failed password for .* from (?P<address>[0-9A-Fa-f:.]+) port \d+ ssh2$",
                true
            )
            .is_empty()
        );
        // On a target (a variable the first match anchored), `^` is not required.
        assert!(check_pattern(r"from (?P<address>[0-9A-Fa-f:.]+)$", false).is_empty());
        // Catch-alls on both sides: the address is found only by position.
        let problems = check_pattern(r"^user .* from (?P<address>[0-9a-f.:]+) port .*$", true);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("before and after"));
        // No address capture: nothing to say.
        assert!(check_pattern(r".*", true).is_empty());
    }

    #[test]
    fn group_text_handles_nesting_and_escapes() {
        assert_eq!(
            group_text(r"a (?P<address>(\d+\)\.){3}\d+) b", "address").map(|g| g.1),
            Some(r"(\d+\)\.){3}\d+")
        );
        assert_eq!(
            group_text(r"(?<address>x)", "address").map(|g| g.1),
            Some("x")
        );
    }
}
