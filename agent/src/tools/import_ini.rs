//! `xdpguard import-ini`: turn the reference scorer's INI rulesets (`[ruleset.NAME]` for the
//! first match, `[ruleset.NAME.RULE]` for the rules after it; Python `configparser` syntax)
//! into xdpguard's TOML. The result is checked by loading it, so a ruleset that would not
//! load is reported with its name.
use std::{collections::BTreeMap, fmt::Write as _, path::Path};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
}

/// One INI section: its line and its keys (lower-cased), in order.
struct Section {
    line: usize,
    keys: Vec<(String, String)>,
}

/// Python `configparser` with its defaults (see [`super::ini`]), `%%` for a literal `%`.
fn parse_ini(text: &str, path: &Path) -> Result<Vec<(String, Section)>, ImportError> {
    let sections = super::ini::parse(text, false).map_err(|err| ImportError::Syntax {
        path: path.display().to_string(),
        line: err.line,
        message: err.message,
    })?;
    Ok(sections
        .into_iter()
        .map(|section| {
            let keys = section
                .keys
                .into_iter()
                .map(|key| (key.name, key.value.replace("%%", "%")))
                .collect();
            (
                section.name,
                Section {
                    line: section.line,
                    keys,
                },
            )
        })
        .collect())
}

fn boolean(value: &str) -> Option<bool> {
    match value.to_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// A TOML string: literal when it can be (regexes read best without escapes).
fn toml_string(value: &str) -> String {
    if !value.contains(['\'', '\n']) {
        return format!("'{value}'");
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write_match(out: &mut String, section: &Section, path: &Path) -> Result<(), ImportError> {
    for (key, value) in &section.keys {
        let err = |message: String| ImportError::Syntax {
            path: path.display().to_string(),
            line: section.line,
            message,
        };
        match key.as_str() {
            "match" | "target" => {
                let _ = writeln!(out, "{key} = {}", toml_string(value));
            }
            "ignore_case" | "negated" | "enabled" | "last" => {
                let flag = boolean(value)
                    .ok_or_else(|| err(format!("{key}: {value:?} is not a boolean")))?;
                let _ = writeln!(out, "{key} = {flag}");
            }
            "score" => {
                let score: i64 = value
                    .parse()
                    .map_err(|_| err(format!("score: {value:?} is not an integer")))?;
                let _ = writeln!(out, "score = {score}");
            }
            "defaults" => {
                let pairs: BTreeMap<&str, &str> = value
                    .lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .collect();
                let inline: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("\"{k}\" = {}", toml_string(v)))
                    .collect();
                let _ = writeln!(out, "defaults = {{ {} }}", inline.join(", "));
            }
            other => return Err(err(format!("unknown key {other:?}"))),
        }
    }
    Ok(())
}

/// Convert INI text to ruleset TOML.
///
/// # Errors
/// INI syntax, unknown sections or keys, bad values; and rulesets that would not load.
pub fn convert(text: &str, path: &Path) -> Result<String, ImportError> {
    let sections = parse_ini(text, path)?;
    let mut order: Vec<&str> = Vec::new();
    let mut firsts: BTreeMap<&str, &Section> = BTreeMap::new();
    let mut rules: BTreeMap<&str, Vec<(&str, &Section)>> = BTreeMap::new();
    for (name, section) in &sections {
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["ruleset", ruleset] if !firsts.contains_key(ruleset) => {
                order.push(ruleset);
                let _ = firsts.insert(ruleset, section);
            }
            ["ruleset", ruleset, rule] if firsts.contains_key(ruleset) => {
                rules.entry(ruleset).or_default().push((rule, section));
            }
            _ => {
                return Err(ImportError::Syntax {
                    path: path.display().to_string(),
                    line: section.line,
                    message: format!(
                        "unrecognized section [{name}] (rules follow their [ruleset.NAME])"
                    ),
                });
            }
        }
    }
    let mut out = format!(
        "# Imported from {} by `xdpguard import-ini`.\n",
        path.display()
    );
    // (first line of a table in the output, line of the INI section it came from): a load
    // error is reported at the section.
    let mut origins: Vec<(usize, usize)> = Vec::new();
    let mut mark = |out: &String, section: &Section| {
        origins.push((out.matches('\n').count() + 2, section.line));
    };
    for ruleset in order {
        mark(&out, firsts[ruleset]);
        let _ = write!(out, "\n[[ruleset]]\nname = {}\n", toml_string(ruleset));
        write_match(&mut out, firsts[ruleset], path)?;
        for (rule, section) in rules.get(ruleset).into_iter().flatten() {
            mark(&out, section);
            let _ = write!(out, "\n[[ruleset.rule]]\nname = {}\n", toml_string(rule));
            write_match(&mut out, section, path)?;
        }
    }
    crate::detect::logs::ruleset::parse(&out, Path::new("(converted)")).map_err(|err| {
        let line = err.line().map_or(0, |at| {
            origins
                .iter()
                .take_while(|(start, _)| *start <= at)
                .last()
                .map_or(0, |(_, ini)| *ini)
        });
        ImportError::Syntax {
            path: path.display().to_string(),
            line,
            message: format!("converted, but it would not load: {err}"),
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = r"
# sshd, reference style
[ruleset.sshd]
match = ^\S+ \S+ sshd\[\d+\]: (?P<msg>.*)$

[ruleset.sshd.failed]
target = ${msg}
match = ^Failed password for .* from (?P<address>[0-9.]+) port \d+ ssh2$
score = 5
last = yes

[ruleset.sshd.percent]
target = ${msg}
match = ^100%% it's (?P<what>bad)$
ignore_case = on
defaults =
    address = 203.0.113.1
    kind = test
score: 1
";

    #[test]
    fn converts_and_keeps_the_semantics() {
        let toml = convert(INI, Path::new("rules.ini")).unwrap();
        let sets = crate::detect::logs::ruleset::parse(&toml, Path::new("out.toml")).unwrap();
        let (outcome, hits) =
            sets[0].apply("h1 x sshd[1]: Failed password for root from 203.0.113.5 port 22 ssh2");
        assert_eq!(
            outcome,
            crate::detect::logs::ruleset::Outcome::Scored {
                address: "203.0.113.5".parse().unwrap(),
                score: 5
            }
        );
        assert_eq!(hits, ["sshd", "failed"]);
        // `%%` is a percent sign, `'` survives, defaults and case-insensitivity carry over.
        let (outcome, _) = sets[0].apply("h1 x sshd[1]: 100% IT'S BAD");
        assert_eq!(
            outcome,
            crate::detect::logs::ruleset::Outcome::Scored {
                address: "203.0.113.1".parse().unwrap(),
                score: 1
            }
        );
    }

    #[test]
    fn errors_name_the_line() {
        let err = convert("[ruleset.a.b]\nmatch = x\n", Path::new("r.ini")).unwrap_err();
        assert!(
            err.to_string().starts_with("r.ini:1: unrecognized section"),
            "{err}"
        );
        let err = convert(
            "[ruleset.a]\nmatch = (?P<address>x)\nscore = many\n",
            Path::new("r.ini"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("score: \"many\""), "{err}");
        let err = convert("[ruleset.a]\nmatch = (\nscore = 1\n", Path::new("r.ini")).unwrap_err();
        assert!(err.to_string().contains("would not load"), "{err}");
        // At the section the fault came from.
        let err = convert(
            "[ruleset.a]\nmatch = (?P<address>x)\nscore = 1\n\n[ruleset.a.r]\nmatch = (\n",
            Path::new("r.ini"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("r.ini:5: converted, but it would not load: (converted):"),
            "{err}"
        );
    }
}
