//! Log rulesets: TOML files of regular expressions that turn a log line into (address, score).
//!
//! A ruleset is a first match and an ordered list of further matches (rules). The first match
//! decides whether the ruleset applies to the line at all; then every enabled rule runs in
//! order, each on the line or on a `target` template over the variables captured so far
//! (`${name}`). Named capture groups become variables; `defaults` set variables whether or not
//! the match succeeds; `negated` inverts a match; the scores of the matches that succeed are
//! summed; `last` on a rule stops the ruleset, and `last` on a ruleset stops the rulesets after
//! it for that line. The address comes from the variable `address`.
//!
//! Regular expressions are Rust's `regex` crate: matching is linear in the line, so a hostile
//! or careless pattern cannot hang the daemon; patterns are size-limited when compiled.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

/// Compiled-pattern budget: a pattern that needs more is refused at load time.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    ruleset: Vec<RawRuleset>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(rename = "match")]
    pattern: String,
    target: Option<String>,
    #[serde(default)]
    ignore_case: bool,
    #[serde(default)]
    negated: bool,
    #[serde(default)]
    defaults: BTreeMap<String, String>,
    score: Option<i64>,
    #[serde(default = "enabled")]
    enabled: bool,
    #[serde(default)]
    last: bool,
}

const fn enabled() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleset {
    name: String,
    #[serde(flatten)]
    first: RawMatch,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(flatten)]
    matcher: RawMatch,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesetError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: ruleset {ruleset:?}, rule {rule:?}: {message}")]
    Invalid {
        path: PathBuf,
        ruleset: String,
        rule: String,
        message: String,
    },
    #[error("{path}: ruleset {ruleset:?}: {message}")]
    Useless {
        path: PathBuf,
        ruleset: String,
        message: String,
    },
}

/// One compiled match.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    regex: Regex,
    target: Option<String>,
    negated: bool,
    defaults: Vec<(String, String)>,
    pub score: Option<i64>,
    pub last: bool,
    /// `target` is exactly `${name}`: this name.
    whole_variable: Option<String>,
    /// The pattern ends in `(?P<NAME>.*)$`: the part before it, and NAME. The tail is then
    /// the rest of the haystack after the part's match, which spares a capture engine the
    /// walk over the whole line (same leftmost-first result: `.*$` takes any rest of a line).
    tail: Option<(Regex, String)>,
    ignore_case: bool,
    /// The pattern has named groups (else a plain `is_match` will do).
    has_names: bool,
}

/// What running a ruleset over a line gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The first match did not apply.
    Skipped,
    /// Matched, but no match carried a score.
    NoScore,
    /// Matched with a score, but `address` is missing or not an IP address.
    BadAddress {
        score: i64,
        text: Option<String>,
    },
    Scored {
        address: IpAddr,
        score: i64,
    },
}

#[derive(Clone, Debug)]
pub struct Ruleset {
    pub name: String,
    pub file: PathBuf,
    first: Matcher,
    rules: Vec<Matcher>,
    /// Stop the rulesets after this one when it matched.
    pub last: bool,
    /// When every rule reads the same one-variable target and sets no defaults (the usual
    /// shape), all rule patterns in one set: one pass over the target says which rules can
    /// match, and only those run their captures.
    prefilter: Option<(String, regex::RegexSet)>,
}

/// A line's variables: a handful at most, so a vector beats hashing.
#[derive(Default)]
struct Vars(Vec<(String, String)>);

impl Vars {
    fn get(&self, name: &str) -> Option<&String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn contains_key(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    fn insert(&mut self, name: String, value: String) -> Option<String> {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                self.0.push((name, value));
                None
            }
        }
    }

    fn insert_if_absent(&mut self, name: String, value: String) {
        if !self.contains_key(&name) {
            self.0.push((name, value));
        }
    }

    fn remove(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.swap_remove(at).1)
    }
}

/// Match `regex` on `haystack`, putting its named groups into `vars`. Whether it matched.
fn capture_into(regex: &Regex, haystack: &str, vars: &mut Vars) -> bool {
    let Some(captures) = regex.captures(haystack) else {
        return false;
    };
    for name in regex.capture_names().flatten() {
        if let Some(m) = captures.name(name) {
            let _: Option<String> = vars.insert(name.to_owned(), m.as_str().to_owned());
        }
    }
    true
}

/// Replace `${name}` with variables; unknown names stay as they are.
fn substitute(template: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.get(name) {
                    Some(value) => out.push_str(value),
                    None => out.push_str(&rest[start..start + 2 + end + 1]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

impl Matcher {
    fn compile(name: &str, raw: RawMatch) -> Result<Option<Self>, String> {
        if !raw.enabled {
            return Ok(None);
        }
        let regex = RegexBuilder::new(&raw.pattern)
            .case_insensitive(raw.ignore_case)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|err| format!("bad regular expression: {err}"))?;
        let whole_variable = raw.target.as_deref().and_then(|t| {
            t.strip_prefix("${")
                .and_then(|rest| rest.strip_suffix('}'))
                .filter(|name| !name.contains(['$', '{', '}']))
                .map(str::to_owned)
        });
        let has_names = regex.capture_names().flatten().next().is_some();
        let tail = ["(?P<", "(?<"].iter().find_map(|open| {
            let body = raw.pattern.strip_suffix(">.*)$")?;
            let at = body.rfind(open)?;
            let name = &body[at + open.len()..];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let head = RegexBuilder::new(&raw.pattern[..at])
                .case_insensitive(raw.ignore_case)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .ok()?;
            Some((head, name.to_owned()))
        });
        Ok(Some(Self {
            name: name.to_owned(),
            ignore_case: raw.ignore_case,
            tail,
            has_names,
            whole_variable,
            regex,
            target: raw.target,
            negated: raw.negated,
            defaults: raw.defaults.into_iter().collect(),
            score: raw.score,
            last: raw.last,
        }))
    }

    fn captures_address(&self) -> bool {
        self.regex.capture_names().any(|n| n == Some("address"))
            || self.defaults.iter().any(|(k, _)| k == "address")
    }

    /// Run against `line` (or the target template), updating `vars`. Whether it succeeded.
    fn run(&self, line: &str, vars: &mut Vars) -> bool {
        // The common target is one whole variable: move it out and back instead of building
        // a new string.
        let mut taken: Option<(String, String)> = None;
        let built;
        let haystack: &str = match (&self.target, &self.whole_variable) {
            (None, _) => line,
            (Some(_), Some(name)) if vars.contains_key(name) => {
                let value = vars.remove(name).unwrap_or_default();
                &taken.insert((name.clone(), value)).1
            }
            (Some(template), _) => {
                built = substitute(template, vars);
                &built
            }
        };
        // Defaults apply after the target is built from the variables as they were.
        for (key, value) in &self.defaults {
            let _: Option<String> = vars.insert(key.clone(), value.clone());
        }
        let matched = if let Some((head, name)) = &self.tail {
            let end = if head.capture_names().flatten().next().is_some() {
                head.captures(haystack).map(|captures| {
                    for group in head.capture_names().flatten() {
                        if let Some(m) = captures.name(group) {
                            let _: Option<String> =
                                vars.insert(group.to_owned(), m.as_str().to_owned());
                        }
                    }
                    captures.get(0).map_or(0, |m| m.end())
                })
            } else {
                head.find(haystack).map(|m| m.end())
            };
            match end {
                // `.` stops at a newline: so does the tail.
                Some(end) if !haystack[end..].contains('\n') => {
                    let _: Option<String> = vars.insert(name.clone(), haystack[end..].to_owned());
                    true
                }
                Some(_) => capture_into(&self.regex, haystack, vars),
                None => false,
            }
        } else if self.has_names {
            capture_into(&self.regex, haystack, vars)
        } else {
            self.regex.is_match(haystack)
        };
        if let Some((name, value)) = taken {
            // A capture of the same name, made just now, wins.
            vars.insert_if_absent(name, value);
        }
        matched != self.negated
    }
}

impl Ruleset {
    /// Run the ruleset over one line. Returns the outcome and the names of the matches that
    /// succeeded (for `check`'s statistics).
    pub fn apply(&self, line: &str) -> (Outcome, Vec<&str>) {
        let mut vars = Vars::default();
        if !self.first.run(line, &mut vars) {
            return (Outcome::Skipped, Vec::new());
        }
        let mut hits = vec![self.first.name.as_str()];
        let mut score = self.first.score;
        // Without the variable the targets are the literal template: no shortcut then.
        let candidates = self
            .prefilter
            .as_ref()
            .and_then(|(variable, set)| vars.get(variable).map(|target| set.matches(target)));
        for (index, rule) in self.rules.iter().enumerate() {
            let succeeded = match &candidates {
                // Not in the set: the pattern does not match, so only a negated rule succeeds.
                Some(set) if !set.matched(index) => rule.negated,
                _ => rule.run(line, &mut vars),
            };
            if succeeded {
                hits.push(rule.name.as_str());
                if let Some(add) = rule.score {
                    score = Some(score.unwrap_or(0) + add);
                }
                if rule.last {
                    break;
                }
            }
        }
        let Some(score) = score else {
            return (Outcome::NoScore, hits);
        };
        let text = vars.remove("address");
        let outcome = match text.as_deref().map(|t| t.trim().parse::<IpAddr>()) {
            // IPv4-mapped IPv6 (`::ffff:a.b.c.d`, as vsftpd writes) is the IPv4 address.
            Some(Ok(IpAddr::V6(v6))) if v6.to_ipv4_mapped().is_some() => Outcome::Scored {
                address: IpAddr::V4(
                    v6.to_ipv4_mapped()
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                ),
                score,
            },
            Some(Ok(address)) => Outcome::Scored { address, score },
            _ => Outcome::BadAddress { score, text },
        };
        (outcome, hits)
    }

    /// (rule name, pattern, runs on the raw line) of the first match and every rule.
    pub fn patterns(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        std::iter::once(&self.first)
            .chain(self.rules.iter())
            .map(|m| (m.name.as_str(), m.regex.as_str(), m.target.is_none()))
    }

    /// Rules (first match included) by name, in order.
    pub fn match_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.first.name.as_str()).chain(self.rules.iter().map(|r| r.name.as_str()))
    }
}

/// Parse a ruleset file.
///
/// # Errors
/// Syntax errors and unknown keys (with the line), bad regular expressions (with ruleset and
/// rule), and rulesets that can never score or never capture `address`.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Ruleset>, RulesetError> {
    let raw: RawFile = toml::from_str(text).map_err(|err| RulesetError::Syntax {
        path: path.to_path_buf(),
        line: err.span().map_or(1, |span| {
            text[..span.start.min(text.len())].matches('\n').count() + 1
        }),
        message: err.message().trim().to_owned(),
    })?;
    let mut out = Vec::new();
    for ruleset in raw.ruleset {
        let invalid = |rule: &str, message: String| RulesetError::Invalid {
            path: path.to_path_buf(),
            ruleset: ruleset.name.clone(),
            rule: rule.to_owned(),
            message,
        };
        let last = ruleset.first.last;
        let Some(first) = Matcher::compile(&ruleset.name, ruleset.first)
            .map_err(|message| invalid(&ruleset.name, message))?
        else {
            continue;
        };
        let mut rules = Vec::new();
        for rule in ruleset.rules {
            if let Some(matcher) = Matcher::compile(&rule.name, rule.matcher)
                .map_err(|message| invalid(&rule.name, message))?
            {
                rules.push(matcher);
            }
        }
        let useless = |message: &str| RulesetError::Useless {
            path: path.to_path_buf(),
            ruleset: ruleset.name.clone(),
            message: message.to_owned(),
        };
        let all = || std::iter::once(&first).chain(rules.iter());
        if !all().any(|m| m.score.is_some()) {
            return Err(useless("no match gives a score, so it can never count"));
        }
        if !all().any(Matcher::captures_address) {
            return Err(useless(
                "no match captures `address`, so it can never name a source",
            ));
        }
        let prefilter = prefilter(&rules);
        out.push(Ruleset {
            name: ruleset.name,
            file: path.to_path_buf(),
            first,
            rules,
            last,
            prefilter,
        });
    }
    Ok(out)
}

/// The rules' patterns as one set, when they can share a single pass (see
/// [`Ruleset::prefilter`]).
fn prefilter(rules: &[Matcher]) -> Option<(String, regex::RegexSet)> {
    let variable = rules.first()?.whole_variable.clone()?;
    if rules.len() < 2
        || !rules
            .iter()
            .all(|r| r.whole_variable.as_ref() == Some(&variable) && r.defaults.is_empty())
    {
        return None;
    }
    let patterns: Vec<String> = rules
        .iter()
        .map(|r| {
            let case = if r.ignore_case { "(?i)" } else { "" };
            format!("{case}(?:{})", r.regex.as_str())
        })
        .collect();
    regex::RegexSetBuilder::new(patterns)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .ok()
        .map(|set| (variable, set))
}

/// Load one ruleset file.
///
/// # Errors
/// As [`parse`], and when the file cannot be read.
pub fn load(path: &Path) -> Result<Vec<Ruleset>, RulesetError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Load every `*.toml` in `dir`, in name order.
///
/// # Errors
/// The first file that fails.
pub fn load_dir(dir: &Path) -> Result<Vec<Ruleset>, RulesetError> {
    let read_err = |source| RulesetError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        out.extend(load(&file)?);
    }
    Ok(out)
}

/// Run `rulesets` over a line in order: the results of every ruleset that matched, stopping
/// after a matching ruleset marked `last`.
pub fn apply_all<'r>(
    rulesets: impl IntoIterator<Item = &'r Ruleset>,
    line: &str,
) -> Vec<(&'r Ruleset, Outcome, Vec<&'r str>)> {
    let mut out = Vec::new();
    for ruleset in rulesets {
        let (outcome, hits) = ruleset.apply(line);
        if outcome == Outcome::Skipped {
            continue;
        }
        out.push((ruleset, outcome, hits));
        if ruleset.last {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rulesets(text: &str) -> Vec<Ruleset> {
        parse(text, Path::new("test.toml")).unwrap()
    }

    fn scored(rulesets: &[Ruleset], line: &str) -> Vec<(String, Outcome)> {
        apply_all(rulesets, line)
            .into_iter()
            .map(|(r, o, _)| (r.name.clone(), o))
            .collect()
    }

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn scores_of_matching_rules_add_up_and_last_stops_the_ruleset() {
        let sets = rulesets(
            r#"
[[ruleset]]
name = "svc"
match = '^svc: '
score = 1
[[ruleset.rule]]
name = "fail"
match = 'fail from (?P<address>\S+)$'
score = 4
[[ruleset.rule]]
name = "root"
match = ' root '
score = 10
last = true
[[ruleset.rule]]
name = "only-when-no-last-rule-matched"
match = '.'
score = 100
"#,
        );
        // `root` did not match, so its `last` does not stop the ruleset.
        assert_eq!(
            scored(&sets, "svc: fail from 203.0.113.5"),
            [(
                "svc".into(),
                Outcome::Scored {
                    address: addr("203.0.113.5"),
                    score: 105
                }
            )]
        );
        assert_eq!(
            scored(&sets, "svc: root fail from 203.0.113.5"),
            [(
                "svc".into(),
                Outcome::Scored {
                    address: addr("203.0.113.5"),
                    score: 15
                }
            )]
        );
        assert_eq!(scored(&sets, "other: fail from 203.0.113.5"), []);
    }

    #[test]
    fn targets_negation_and_defaults() {
        let sets = rulesets(
            r#"
[[ruleset]]
name = "web"
match = '^(?P<address>\S+) \S+ (?P<user>\S+) "(?P<request>[^"]*)" (?P<status>\d+)$'
defaults = { kind = "web" }
[[ruleset.rule]]
name = "auth-failure"
target = '${status}'
match = '^401$'
score = 3
[[ruleset.rule]]
name = "not-a-browser-user"
target = '${user}'
match = '^-$'
negated = true
score = 1
[[ruleset.rule]]
name = "kind-from-defaults"
target = '${kind}:${missing}'
match = '^web:\$\{missing\}$'
score = 100
"#,
        );
        assert_eq!(
            scored(&sets, r#"203.0.113.9 - bob "GET /admin" 401"#),
            [(
                "web".into(),
                Outcome::Scored {
                    address: addr("203.0.113.9"),
                    score: 104
                }
            )]
        );
        assert_eq!(
            scored(&sets, r#"203.0.113.9 - - "GET /" 200"#),
            [(
                "web".into(),
                Outcome::Scored {
                    address: addr("203.0.113.9"),
                    score: 100
                }
            )]
        );
    }

    #[test]
    fn a_last_ruleset_stops_the_ones_after_it_and_bad_addresses_are_reported() {
        let sets = rulesets(
            r#"
[[ruleset]]
name = "first"
match = 'from (?P<address>\S+)'
score = 1
last = true
[[ruleset]]
name = "second"
match = 'from (?P<address>\S+)'
score = 1
"#,
        );
        assert_eq!(scored(&sets, "from 2001:db8::7").len(), 1);
        assert_eq!(
            scored(&sets, "from host.example")[0].1,
            Outcome::BadAddress {
                score: 1,
                text: Some("host.example".into())
            }
        );
    }

    #[test]
    fn load_errors_name_file_ruleset_and_rule() {
        let err = parse(
            "[[ruleset]]\nname = \"x\"\nmatch = '('\nscore = 1\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a.toml: ruleset \"x\", rule \"x\": bad regular expression"),
            "{err}"
        );
        let err = parse(
            "[[ruleset]]\nname = \"x\"\nmatch = 'a'\nscroe = 1\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("a.toml:") && err.to_string().contains("scroe"),
            "{err}"
        );
        let err = parse(
            "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("never count"), "{err}");
        let err = parse(
            "[[ruleset]]\nname = \"x\"\nmatch = 'a'\nscore = 2\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`address`"), "{err}");
        // A pattern too big to compile within the budget is refused, not built.
        let huge = format!(
            "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+){}'\nscore = 1\n",
            "\\w{1000}".repeat(20)
        );
        assert!(parse(&huge, Path::new("a.toml")).is_err());
    }

    #[test]
    fn a_trailing_catch_all_capture_gives_what_the_whole_pattern_would() {
        let sets = rulesets(
            r#"
[[ruleset]]
name = "t"
match = '^(?P<host>\S+) app\[\d+\]: (?P<msg>.*)$'
[[ruleset.rule]]
name = "bad"
target = '${msg}'
match = '^bad login from (?P<address>[0-9.]+)$'
score = 3
[[ruleset.rule]]
name = "host-is-kept"
target = '${host}'
match = '^web1$'
score = 1
"#,
        );
        assert!(sets[0].first.tail.is_some(), "the shortcut applies");
        assert_eq!(
            scored(&sets, "web1 app[7]: bad login from 203.0.113.5"),
            [(
                "t".into(),
                Outcome::Scored {
                    address: addr("203.0.113.5"),
                    score: 4
                }
            )]
        );
        // The host variable captured before the tail is still there.
        assert_eq!(
            scored(&sets, "web1 app[7]: fine"),
            [(
                "t".into(),
                Outcome::BadAddress {
                    score: 1,
                    text: None
                }
            )]
        );
        assert_eq!(
            scored(&sets, "web1 other[7]: bad login from 203.0.113.5"),
            []
        );
    }

    #[test]
    fn the_rule_set_prefilter_keeps_negation_and_order() {
        let sets = rulesets(
            r#"
[[ruleset]]
name = "p"
match = '^app: (?P<msg>.*)$'
[[ruleset.rule]]
name = "from"
target = '${msg}'
match = 'from (?P<address>[0-9.]+)$'
score = 2
[[ruleset.rule]]
name = "not-internal"
target = '${msg}'
match = '^internal '
negated = true
score = 3
[[ruleset.rule]]
name = "stop"
target = '${msg}'
match = 'STOP'
ignore_case = true
last = true
[[ruleset.rule]]
name = "after-stop"
target = '${msg}'
match = '.'
score = 100
"#,
        );
        assert!(sets[0].prefilter.is_some(), "the shortcut applies");
        let score = |line: &str| match &scored(&sets, line)[0].1 {
            Outcome::Scored { score, .. } => *score,
            other => panic!("{other:?}"),
        };
        assert_eq!(score("app: external from 203.0.113.5"), 105);
        assert_eq!(score("app: internal from 203.0.113.5"), 102);
        assert_eq!(score("app: please stop from 203.0.113.5"), 5);
    }

    #[test]
    fn template_substitution_leaves_unknown_names() {
        let mut vars = Vars::default();
        let _ = vars.insert("a".to_owned(), "1".to_owned());
        assert_eq!(substitute("${a}-${b}-${", &vars), "1-${b}-${");
    }
}
