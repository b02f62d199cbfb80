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
//! - catch-alls both before and after the address capture with no fixed word between the
//!   address and the catch-all after it: the address is then found only by its position, and
//!   any line whose client text repeats the few characters around it is ambiguous (scored by
//!   nobody), so the rule is easy to evade; anchor the address on the daemon's fixed words.
//!   (Client text on both sides is fine when fixed words follow the address: the engine's
//!   ambiguity check then refuses only lines that repeat those words.)
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

const CATCH_ALLS: [&str; 8] = [
    ".*", ".+", "\\S*", "\\S+", "[^ ]*", "[^ ]+", "[^\\s]*", "[^\\s]+",
];

/// Whether a regex fragment holds a fixed word: two letters in a row outside a class or an
/// escape (`port`, `ssh2`, `server`), which client text must repeat to confuse the address.
fn has_fixed_word(fragment: &str) -> bool {
    let bytes = fragment.as_bytes();
    let mut run = 0;
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_class {
            if b == b'\\' {
                i += 1;
            } else if b == b']' {
                in_class = false;
            }
            run = 0;
        } else if b == b'\\' {
            // An escape (`\d`, `\S`) is no letter of the text.
            i += 1;
            run = 0;
        } else if b == b'[' {
            in_class = true;
            run = 0;
        } else if b.is_ascii_alphabetic() {
            run += 1;
            if run >= 2 {
                return true;
            }
        } else {
            run = 0;
        }
        i += 1;
    }
    false
}
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
    // After the group's closing parenthesis.
    let inner_start = pattern[at..].find('>').map_or(at, |gt| at + gt + 1);
    let after = pattern.get(inner_start + address.len() + 1..).unwrap_or("");
    let next_catch_all = CATCH_ALLS.iter().filter_map(|c| after.find(c)).min();
    if CATCH_ALLS.iter().any(|c| before.contains(c))
        && let Some(next) = next_catch_all
        && !has_fixed_word(&after[..next])
    {
        problems.push(
            "catch-alls before and after the `address` capture and no fixed word between the address and the one after it: only its position picks the address, so client text that repeats the few characters around it makes the line ambiguous (never scored); anchor the address on the daemon's fixed words".into(),
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
        // Catch-alls on both sides, nothing fixed after the address: found by position.
        let problems = check_pattern(r"^user .* from (?P<address>[0-9a-f.:]+) .*$", true);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("before and after"));
        let problems = check_pattern(r"^user .* from (?P<address>[0-9a-f.:]+):\d+ [^\s]*$", true);
        assert_eq!(problems.len(), 1, "{problems:?}");
        // Fixed words after the address: client text there is fine (sshd's `ssh2: INFO`).
        assert!(
            check_pattern(
                r"^Failed password for .* from (?P<address>[0-9a-f.:]+) port \d+ ssh2(?:: .*)?$",
                true
            )
            .is_empty()
        );
        assert!(has_fixed_word(r" port \d+ ssh2(?:: "));
        assert!(!has_fixed_word(r":\d+ \S"));
        assert!(!has_fixed_word(r"[a-z]+ "));
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
