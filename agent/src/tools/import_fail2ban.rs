//! `xdpguard import-fail2ban FILTER.conf`: turn a fail2ban filter into a TOML ruleset.
//!
//! The filter is read the way fail2ban reads it: Python `configparser` syntax, `[INCLUDES]`
//! `before`/`after` (relative to the including file's directory, each file followed by its
//! `.local` when there is one), `[DEFAULT]`, `[Definition]` and `[Init]`, `%(name)s` and
//! `%(section/name)s` interpolation, then fail2ban's `<name>` tags (innermost first, so
//! `<mdre-<mode>>` works), each with a depth limit.
//!
//! What becomes what:
//! - fail2ban's syslog prefix (`__prefix_line` of `common.conf`) is our prefix layer: it is cut
//!   from the patterns and `_daemon` becomes `programs` (a simple alternation of names, with
//!   `*` for `\S*`, `\w+` and friends; `*` for anything more complex).
//! - without that prefix (web servers' logs, daemons' own files) the ruleset reads whole lines:
//!   a pattern anchored with `^` gets room for a leading date (fail2ban cuts the date out
//!   before it matches), and `\[\]` (the brackets a cut-out date leaves) takes a bracketed one.
//! - `prefregex` becomes the ruleset's `match`, its `<F-CONTENT>` the variable `f2b_content`
//!   that the rules read (`target`); when the modes change the prefregex, each rule carries
//!   its mode's prefregex instead.
//! - every `failregex` line is a rule with a score and `last = true` (fail2ban counts the first
//!   that matches); every `ignoreregex` line a rule before them with `last = true` and no
//!   score, so an ignored line scores nothing.
//! - the modes a filter selects with `<...<mode>...>` become `[ruleset.modes]`: each rule is
//!   tagged with the modes whose failregex holds it (untagged when all do).
//! - `<HOST>`, `<ADDR>`, `<IP4>`, `<IP6>`, `<SUBNET>` capture `address` (address characters
//!   only: no host names, no DNS); `<F-NAME>...</F-NAME>` becomes the group `name`.
//! - `<F-NOFAIL>` and `<F-MLFGAINED>` rules score nothing; with `<F-MLFID>` the rules with an
//!   address `remember` it by `${pid}` (and `settle` what the session left pending) and the
//!   rules without one `recall` it (or leave their score `pending`); `<F-MLFFORGET>` rules
//!   `forget` the session; rules capturing a user count it (`distinct`), and a session that
//!   tried more than one user name makes its `<F-NOFAIL>` lines count (`distinct_score`).
//! - Python-only syntax: `\Z` becomes `$`, `{,n}` `{0,n}`, a stray `{` `\{`, `\<` `<`, a `[`
//!   inside a class `\[`, a counted `\w`/`\d`/`\s` its ASCII class (Unicode ones compile
//!   big). Conditionals `(?(name)A|B)` (and `<F-NOFAIL>` in an alternative) split the rule
//!   into one rule per case; the tempered `(?:(?!X).)` becomes `.` (the engine's ambiguity
//!   check refuses lines where the fixed text repeats); a trailing `(?=Y)` becomes `(?:Y)`; a
//!   trailing `(?!Y)`, and a `(?!Y)` just before `<F-CONTENT>`, become a rule before it with
//!   no score and `last = true` that matches what they exclude. What else Rust's regex cannot
//!   do (backreferences, other lookaround, atomic groups, possessive repetitions),
//!   `<SKIPLINES>`, `\n` and `<DNS>`: the rule is left out, with a note; a mode whose
//!   prefregex cannot be converted is left out (the default mode: an error).
//!
//! The result is loaded with the engine before it is returned: what would not load is an
//! error that says why.
use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use crate::detect::logs::{prefix, ruleset};

/// How deep `%(name)s` interpolation and `<name>` tags may nest.
const MAX_DEPTH: usize = 20;
/// How many `<name>` tags one value may expand into.
const MAX_TAG_EXPANSIONS: usize = 2000;
/// How deep `[INCLUDES]` may nest.
const MAX_INCLUDE_DEPTH: usize = 16;
/// The score of one failure: fail2ban's default `maxretry` of 5 reaches xdpguard's threshold
/// of 10.
pub const FAILURE_SCORE: i64 = 2;
/// Stands for `common.conf`'s `__prefix_line` while the patterns are expanded.
const PREFIX: char = '\u{1}';
/// The variable the rules read when the filter has a `prefregex`.
const CONTENT: &str = "f2b_content";
/// The address capture.
const ADDRESS: &str = "(?P<address>[0-9A-Fa-f:.]+)";
/// An optional date at the start of a whole line (fail2ban cuts the date out before it
/// matches; with `programs` the prefix layer does).
const DATE: &str = r"(?:@[0-9a-f]{24}|\d{9,10}(?:\.\d+)?|(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.](?:\d{1,2}|[A-Za-z]{3})[-/.]\d{2,4}|(?:[A-Za-z]{3},? +)?[A-Za-z]{3} +\d{1,2}(?:,? \d{4})?)[T :]*\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?: ?(?:Z|[+-]\d{2}:?\d{2}|[A-Z]{3,4}))?(?: \d{4})?)";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// INI syntax, or an include that cannot be read.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Nothing of the filter can be converted (or a value cannot be expanded): `line` is the
    /// key's (0 when the key is missing: then no line is shown).
    #[error("{}{}: {message}", path.display(), at_line(*line))]
    Unconvertible {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The converted ruleset does not load with the engine.
    #[error("{}: the converted ruleset does not load: {message}", path.display())]
    Load { path: PathBuf, message: String },
}

fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

/// A converted filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// The ruleset file (it loads with `ruleset::parse`).
    pub toml: String,
    /// What could not be converted, and why.
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Reading the INI files.

#[derive(Clone, Debug)]
struct Value {
    text: String,
    file: PathBuf,
    line: usize,
}

type Sections = Vec<(String, Vec<(String, Value)>)>;

/// Python `configparser` as fail2ban sets it up (see [`super::ini`]): `;` after a space
/// starts an inline comment. Each value keeps its file and line for messages.
fn parse_ini(text: &str, path: &Path) -> Result<Sections, ImportError> {
    let sections = super::ini::parse(text, true).map_err(|err| ImportError::Syntax {
        path: path.to_path_buf(),
        line: err.line,
        message: err.message,
    })?;
    Ok(sections
        .into_iter()
        .map(|section| {
            let keys = section
                .keys
                .into_iter()
                .map(|key| {
                    (
                        key.name,
                        Value {
                            text: key.value,
                            file: path.to_path_buf(),
                            line: key.line,
                        },
                    )
                })
                .collect();
            (section.name, keys)
        })
        .collect())
}

/// The files a filter reads, in order: `before` includes, the file, `after` includes, each
/// file followed by its `.local`.
fn collect_files(
    path: &Path,
    seen: &[PathBuf],
    required: bool,
    out: &mut Vec<(PathBuf, Sections)>,
) -> Result<(), ImportError> {
    if seen.len() > MAX_INCLUDE_DEPTH {
        return Err(ImportError::Syntax {
            path: path.to_path_buf(),
            line: 1,
            message: format!("includes nest deeper than {MAX_INCLUDE_DEPTH}"),
        });
    }
    let mut files = vec![(path.to_path_buf(), required)];
    let local = path.with_extension("local");
    if local != path && local.is_file() {
        files.push((local, false));
    }
    for (file, required) in files {
        let text = match std::fs::read(&file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) if !required => continue,
            Err(source) => return Err(ImportError::Read { path: file, source }),
        };
        let sections = parse_ini(&text, &file)?;
        let includes = |which: &str| -> Vec<PathBuf> {
            sections
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("INCLUDES"))
                .flat_map(|(_, keys)| keys.iter())
                .filter(|(key, _)| key == which)
                .flat_map(|(_, value)| value.text.lines().map(str::trim).collect::<Vec<_>>())
                .filter(|name| !name.is_empty())
                .map(|name| {
                    let name = Path::new(name);
                    if name.is_absolute() {
                        name.to_path_buf()
                    } else {
                        file.parent().unwrap_or(Path::new(".")).join(name)
                    }
                })
                .collect()
        };
        let (before, after) = (includes("before"), includes("after"));
        let mut inner = seen.to_vec();
        inner.push(file.clone());
        for include in before {
            if !inner.contains(&include) {
                collect_files(&include, &inner, false, out)?;
            }
        }
        out.push((file.clone(), sections));
        for include in after {
            if !inner.contains(&include) {
                collect_files(&include, &inner, false, out)?;
            }
        }
    }
    Ok(())
}

/// Every definition of every key, by section, in reading order (the last one counts; the one
/// before it is `%(known/key)s`).
struct Reader {
    sections: HashMap<String, HashMap<String, Vec<Value>>>,
    /// Options set from outside (the mode being expanded), over everything else.
    overrides: HashMap<String, String>,
}

const DEFINITION: &str = "Definition";
const DEFAULT: &str = "DEFAULT";

impl Reader {
    fn new(files: Vec<(PathBuf, Sections)>) -> Self {
        let mut sections: HashMap<String, HashMap<String, Vec<Value>>> = HashMap::new();
        for (_, file) in files {
            for (name, keys) in file {
                let section = sections.entry(name).or_default();
                for (key, value) in keys {
                    section.entry(key).or_default().push(value);
                }
            }
        }
        Self {
            sections,
            overrides: HashMap::new(),
        }
    }

    fn stack(&self, section: &str, key: &str) -> Option<&Vec<Value>> {
        self.sections
            .get(section)
            .and_then(|s| s.get(key))
            .or_else(|| self.sections.get(DEFAULT).and_then(|s| s.get(key)))
    }

    /// The raw text of `key` read from `section` (`sec/key` names another section): the
    /// section of the definition (for its own interpolation) and the text.
    fn raw(&self, section: &str, key: &str) -> Option<(String, String)> {
        if let Some(value) = self.overrides.get(key) {
            return Some((section.to_owned(), value.clone()));
        }
        let (section, key, known) = match key.split_once('/') {
            Some((sec, opt)) if sec.eq_ignore_ascii_case("known") => (section, opt, true),
            Some((sec, opt)) if sec.eq_ignore_ascii_case("default") => (DEFAULT, opt, false),
            Some((sec, opt)) => (sec, opt, false),
            None => (section, key, false),
        };
        let value = if known {
            // The definition before the last one: in the section, then in DEFAULT.
            let own = self.sections.get(section).and_then(|s| s.get(key));
            let default = self.sections.get(DEFAULT).and_then(|s| s.get(key));
            match own {
                Some(own) if own.len() > 1 => own.iter().rev().nth(1)?,
                Some(_) if section != DEFAULT => default?.last()?,
                _ => default?.iter().rev().nth(1)?,
            }
        } else {
            self.stack(section, key)?.last()?
        };
        let from_common = value.file.file_name().is_some_and(|n| n == "common.conf");
        if key == "__prefix_line" && from_common {
            return Some((section.to_owned(), PREFIX.to_string()));
        }
        Some((section.to_owned(), value.text.clone()))
    }

    /// The line of `key` in `section` (or DEFAULT), for messages.
    fn line(&self, section: &str, key: &str) -> (PathBuf, usize) {
        self.stack(section, key)
            .and_then(|s| s.last())
            .map_or_else(|| (PathBuf::new(), 0), |v| (v.file.clone(), v.line))
    }

    /// `%(name)s` interpolation, recursively (`%%` is a `%`).
    fn interpolate(&self, section: &str, text: &str, depth: usize) -> Result<String, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "interpolation nests deeper than {MAX_DEPTH} (a value that refers to itself?)"
            ));
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(more) = after.strip_prefix('%') {
                out.push('%');
                rest = more;
            } else if let Some(inner) = after.strip_prefix('(')
                && let Some(end) = inner.find(")s")
            {
                let name = inner[..end].to_lowercase();
                let Some((from, raw)) = self.raw(section, &name) else {
                    return Err(format!("%({name})s: no such option"));
                };
                out.push_str(&self.interpolate(&from, &raw, depth + 1)?);
                rest = &inner[end + 2..];
            } else {
                out.push('%');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The value of a `<name>` tag: `[Init]` over `[Definition]`, interpolated.
    fn tag(&self, name: &str) -> Option<Result<String, String>> {
        if name.is_empty() || (!name.contains('/') && name.chars().any(|c| c.is_ascii_uppercase()))
        {
            // Option names are lower case: <HOST>, <F-USER> and friends are regex tags.
            return None;
        }
        let section = if !name.contains('/')
            && !self.overrides.contains_key(name)
            && self
                .sections
                .get("Init")
                .is_some_and(|s| s.contains_key(name))
        {
            "Init"
        } else {
            DEFINITION
        };
        let (from, raw) = self.raw(section, name)?;
        Some(self.interpolate(&from, &raw, 0))
    }

    /// fail2ban's `<name>` substitution, innermost tags first, until none resolves.
    fn tags(&self, text: &str) -> Result<String, String> {
        let mut text = text.to_owned();
        let mut expansions = 0;
        'outer: loop {
            let mut from = 0;
            while let Some((start, end)) = next_tag(&text, from) {
                let name = &text[start + 1..end - 1];
                if let Some(value) = self.tag(name) {
                    let value = value?;
                    expansions += 1;
                    if expansions > MAX_TAG_EXPANSIONS || text.len() > 1 << 20 {
                        return Err(format!(
                            "tags expand more than {MAX_TAG_EXPANSIONS} times (a tag that refers to itself?)"
                        ));
                    }
                    text.replace_range(start..end, &value);
                    continue 'outer;
                }
                from = start + 1;
            }
            return Ok(text);
        }
    }

    /// An option of `[Definition]`, fully expanded.
    fn expand(&self, key: &str) -> Result<Option<String>, String> {
        let Some((from, raw)) = self.raw(DEFINITION, key) else {
            return Ok(None);
        };
        let text = self.interpolate(&from, &raw, 0)?;
        self.tags(&text).map(Some)
    }
}

/// The next `<name>` (no space or angle bracket inside) at or after `from`: its byte range.
fn next_tag(text: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let mut j = i + 1;
            while j < bytes.len() && !matches!(bytes[j], b'<' | b'>' | b' ') {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'>' && j > i + 1 {
                return Some((i, j + 1));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Patterns.

/// One fail2ban pattern, translated.
#[derive(Clone, Debug, Default)]
struct Translated {
    pattern: String,
    /// It started with fail2ban's syslog prefix (now cut off).
    prefixed: bool,
    mlfid: bool,
    nofail: bool,
    gained: bool,
    forget: bool,
    address: bool,
    /// A rule to run just before it, stopping the ruleset (a trailing `(?!...)`).
    guard: Option<String>,
}

/// Replace fail2ban's regex tags. `content`: `<F-CONTENT>` is allowed (a prefregex).
fn resolve_tags(text: &str, content: bool, out: &mut Translated) -> Result<String, String> {
    let mut result = String::with_capacity(text.len());
    let mut open: Vec<String> = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut from = 0;
    while let Some((start, end)) = next_tag(text, from) {
        result.push_str(&text[from..start]);
        let tag = &text[start + 1..end - 1];
        let host = |out: &mut Translated, brackets: bool, extra: &str| {
            let capture = if out.address {
                "[0-9A-Fa-f:.]+"
            } else {
                out.address = true;
                ADDRESS
            };
            if brackets {
                format!(r"\[?{capture}{extra}\]?")
            } else {
                format!("{capture}{extra}")
            }
        };
        match tag {
            "HOST" | "ADDR" | "IP6" => result.push_str(&host(out, true, "")),
            "IP4" => result.push_str(&host(out, false, "")),
            "SUBNET" => result.push_str(&host(out, true, r"(?:/\d{1,3})?")),
            "CIDR" => result.push_str(r"\d{1,3}"),
            "DNS" => {
                return Err(
                    "<DNS> matches host names, and xdpguard takes addresses only".to_owned(),
                );
            }
            "SKIPLINES" => {
                return Err("<SKIPLINES> (multi-line matching) is not converted".to_owned());
            }
            _ if tag.starts_with("/F-") => {
                let name = &tag[3..];
                if let Some(at) = open.iter().rposition(|o| o == name) {
                    let _ = open.remove(at);
                    result.push(')');
                } else {
                    result.push_str(&text[start..end]);
                }
            }
            _ if tag.starts_with("F-")
                && tag[2..].chars().all(|c| {
                    c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-'
                }) =>
            {
                let name = &tag[2..];
                open.push(name.to_owned());
                match name {
                    "NOFAIL" => {
                        let _ = write!(result, "(?P<{NOFAIL}>");
                    }
                    "MLFGAINED" => {
                        let _ = write!(result, "(?P<{GAINED}>");
                    }
                    "MLFFORGET" => {
                        out.forget = true;
                        result.push_str("(?:");
                    }
                    "MLFID" => {
                        out.mlfid = true;
                        result.push_str("(?:");
                    }
                    "CONTENT" if content => {
                        let _ = write!(result, "(?P<{CONTENT}>");
                    }
                    "CONTENT" => return Err("<F-CONTENT> outside a prefregex".to_owned()),
                    _ => {
                        let group = match name.to_lowercase().replace('-', "_").as_str() {
                            "id" => "fid".to_owned(),
                            "port" => "fport".to_owned(),
                            other => other.to_owned(),
                        };
                        if names.insert(group.clone()) {
                            let _ = write!(result, "(?P<{group}>");
                        } else {
                            result.push_str("(?:");
                        }
                    }
                }
            }
            _ => result.push_str(&text[start..end]),
        }
        from = end;
    }
    result.push_str(&text[from..]);
    Ok(result)
}

/// Python `re` syntax → Rust `regex` syntax, or why it cannot be.
fn python_to_rust(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    let mut after_quantifier = false;
    while i < chars.len() {
        let c = chars[i];
        let quantifier_before = after_quantifier;
        after_quantifier = false;
        match c {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err("ends in a lone backslash".to_owned());
                };
                let counted = chars.get(i + 2) == Some(&'{')
                    && chars[i + 2..]
                        .iter()
                        .skip(1)
                        .take_while(|c| c.is_ascii_digit() || **c == ',')
                        .filter(|c| c.is_ascii_digit())
                        .count()
                        > 0;
                match next {
                    '1'..='9' => return Err(format!("backreference \\{next}")),
                    'n' => {
                        return Err(
                            "matches across lines (\\n): multi-line is not converted".to_owned()
                        );
                    }
                    // Counted, a Unicode class compiles big; log fields are ASCII.
                    'w' | 'd' | 's' if counted => {
                        let _ = write!(out, "(?-u:\\{next})");
                    }
                    'Z' => out.push('$'),
                    '<' | '>' => out.push(next),
                    _ => {
                        out.push('\\');
                        out.push(next);
                    }
                }
                i += 2;
            }
            '(' => {
                let rest: String = chars[i + 1..chars.len().min(i + 5)].iter().collect();
                if rest.starts_with("?P=") {
                    return Err("backreference (?P=name)".to_owned());
                }
                if rest.starts_with("?=") || rest.starts_with("?!") {
                    return Err("lookahead (?= / (?!".to_owned());
                }
                if rest.starts_with("?<=") || rest.starts_with("?<!") {
                    return Err("lookbehind (?<= / (?<!".to_owned());
                }
                if rest.starts_with("?(") {
                    return Err("conditional group (?(name)...)".to_owned());
                }
                if rest.starts_with("?>") {
                    return Err("atomic group (?>".to_owned());
                }
                if rest.starts_with("?#") {
                    let Some(end) = chars[i..].iter().position(|&c| c == ')') else {
                        return Err("unclosed (?# comment".to_owned());
                    };
                    i += end + 1;
                    continue;
                }
                out.push('(');
                i += 1;
            }
            '[' => {
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("unclosed character class".to_owned());
                    };
                    match c {
                        ']' => {
                            out.push(']');
                            i += 1;
                            break;
                        }
                        '\\' => {
                            let Some(&next) = chars.get(i + 1) else {
                                return Err("ends in a lone backslash".to_owned());
                            };
                            if matches!(next, '<' | '>') {
                                out.push(next);
                            } else {
                                out.push('\\');
                                out.push(next);
                            }
                            i += 2;
                        }
                        '[' | '&' | '~' => {
                            out.push('\\');
                            out.push(c);
                            i += 1;
                        }
                        '-' if chars.get(i + 1) == Some(&'-') => {
                            out.push_str("\\-");
                            i += 1;
                        }
                        _ => {
                            out.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '{' => {
                let end = chars[i..].iter().position(|&c| c == '}').map(|e| i + e);
                let body: Option<String> = end.map(|e| chars[i + 1..e].iter().collect());
                let counted = body.as_deref().filter(|b| {
                    !b.is_empty()
                        && *b != ","
                        && b.chars().all(|c| c.is_ascii_digit() || c == ',')
                        && b.matches(',').count() <= 1
                });
                match (counted, end) {
                    (Some(body), Some(end)) => {
                        let body = if body.starts_with(',') {
                            format!("0{body}")
                        } else {
                            body.to_owned()
                        };
                        let _ = write!(out, "{{{body}}}");
                        i = end + 1;
                        after_quantifier = true;
                        continue;
                    }
                    _ => {
                        out.push_str("\\{");
                        i += 1;
                    }
                }
            }
            '}' => {
                out.push_str("\\}");
                i += 1;
            }
            '*' | '+' | '?' => {
                if quantifier_before && c == '+' {
                    return Err("possessive repetition".to_owned());
                }
                out.push(c);
                i += 1;
                // `??` `*?` are lazy: still a quantifier before a `+`.
                after_quantifier = c != '?' || !quantifier_before;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Translate one fail2ban pattern (expanded already): one or more rules (a conditional group,
/// or a `<F-NOFAIL>` in an alternative, splits it), and notes on what was approximated.
fn translate(expanded: &str, content: bool) -> Result<(Vec<Translated>, Vec<String>), String> {
    let mut base = Translated::default();
    let mut text = expanded.trim().to_owned();
    if text.contains('\n') {
        return Err("a multi-line pattern is not converted".to_owned());
    }
    let anchored = text.starts_with('^');
    let body = text.trim_start_matches('^');
    let (mlfid, rest) = match body.strip_prefix("<F-MLFID>") {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    if let Some(rest) = rest.strip_prefix(PREFIX) {
        let rest = if mlfid {
            rest.strip_prefix("</F-MLFID>").unwrap_or(rest)
        } else {
            rest
        };
        base.prefixed = true;
        base.mlfid = mlfid;
        text = format!("{}{rest}", if anchored { "^" } else { "" });
    }
    if text.contains(PREFIX) {
        return Err("fail2ban's syslog prefix is inside the pattern, not at its start".to_owned());
    }
    let mut tagged = resolve_tags(&text, content, &mut base)?;
    base.mlfid |= mlfid;
    if content && let Some((rest, guard)) = content_lookahead(&tagged) {
        let guard = python_to_rust(&guard)?;
        if regex::Regex::new(&guard).is_err() {
            return Err(
                "a (?!...) before <F-CONTENT> that is no Rust regular expression".to_owned(),
            );
        }
        tagged = rest;
        base.guard = Some(guard);
    }
    let mut notes = Vec::new();
    // Conditionals, then whether the not-a-failure groups took part: each a variant.
    let mut variants: Vec<(String, bool, bool)> = vec![(tagged, false, false)];
    let mut split = false;
    for _ in 0..8 {
        let mut next = Vec::new();
        let mut changed = false;
        for (text, nofail, gained) in variants {
            let chars: Vec<char> = text.chars().collect();
            let mut pos = 0;
            let tree = parse_alt(&chars, &mut pos)?;
            if pos != chars.len() {
                return Err("unbalanced parenthesis".to_owned());
            }
            let group = first_condition(&tree).or_else(|| {
                [NOFAIL, GAINED]
                    .into_iter()
                    .find(|g| alt_contains(&tree, g))
                    .map(str::to_owned)
            });
            let Some(group) = group else {
                next.push((text, nofail, gained));
                continue;
            };
            changed = true;
            split |= group != NOFAIL && group != GAINED;
            for present in [true, false] {
                if let Some(variant) = specialize_alt(&tree, &group, present) {
                    let mut text = String::new();
                    write_alt(&variant, &mut text);
                    let (mut n, mut g) = (nofail, gained);
                    if group == NOFAIL && present {
                        text = text.replace(&format!("(?P<{NOFAIL}>"), "(?:");
                        n = true;
                    }
                    if group == GAINED && present {
                        text = text.replace(&format!("(?P<{GAINED}>"), "(?:");
                        g = true;
                    }
                    next.push((text, n, g));
                }
            }
        }
        variants = next;
        if !changed {
            break;
        }
        if variants.len() > 16 {
            return Err("conditional groups make more than 16 variants".to_owned());
        }
    }
    if split {
        notes.push("its conditional groups (?(name)...) became one rule per case".to_owned());
    }
    let mut out = Vec::new();
    for (text, nofail, gained) in variants {
        let chars: Vec<char> = text.chars().collect();
        let tree = parse_alt(&chars, &mut 0)?;
        if first_condition(&tree).is_some() || alt_contains(&tree, NOFAIL) {
            return Err("conditional group (?(name)...) nests too deep".to_owned());
        }
        let (text, tempered) = tempered_dots(&text);
        if tempered && !notes.iter().any(|n| n.starts_with("(?:(?!")) {
            notes.push("(?:(?!...).) became `.`: the engine refuses lines where the fixed text around the address repeats".to_owned());
        }
        let text = trailing_lookahead(&text);
        let (text, guard) = match trailing_negative_lookahead(&text) {
            Some((main, guard)) => {
                notes.push("its trailing (?!...) became a rule before it that stops the ruleset on the lines it excludes".to_owned());
                (main, Some(guard))
            }
            None => (text, None),
        };
        let rust = |text: &str| -> Result<String, String> {
            let pattern = python_to_rust(text)?;
            if let Err(err) = regex::Regex::new(&pattern) {
                let why = err.to_string();
                let why = why.lines().last().unwrap_or_default().trim().to_owned();
                return Err(format!("not a Rust regular expression: {why}"));
            }
            Ok(pattern)
        };
        let pattern = rust(&text)?;
        let guard = guard.as_deref().map(rust).transpose()?;
        out.push(Translated {
            address: pattern.contains("(?P<address>"),
            pattern,
            guard,
            nofail,
            gained,
            ..base.clone()
        });
    }
    Ok((out, notes))
}

/// The user groups of a translated pattern: `user`, then `alt_user...` (fail2ban's
/// `<F-ALT_USER>` stands in when `<F-USER>` did not match).
fn user_groups(pattern: &str) -> Vec<String> {
    let mut groups: Vec<String> = pattern
        .match_indices("(?P<")
        .filter_map(|(at, open)| {
            let rest = &pattern[at + open.len()..];
            let name = &rest[..rest.find('>')?];
            (name == "user" || name.starts_with("alt_user")).then(|| name.to_owned())
        })
        .collect();
    groups.sort_by_key(|name| (name != "user", name.clone()));
    groups.dedup();
    groups
}

/// The group `<F-NOFAIL>` becomes while the variants are made.
const NOFAIL: &str = "f2b_nofail";
const GAINED: &str = "f2b_gained";

/// A parsed pattern: just enough structure to specialise a group's taking part.
#[derive(Clone, Debug)]
enum Node {
    Text(String),
    /// `open` is `(`, `(?:`, `(?P<name>`, `(?=` and so on.
    Group {
        open: String,
        name: Option<String>,
        alt: Vec<Vec<Self>>,
    },
    Cond {
        name: String,
        alt: Vec<Vec<Self>>,
    },
    Repeat {
        node: Box<Self>,
        quantifier: String,
    },
}

fn parse_alt(chars: &[char], pos: &mut usize) -> Result<Vec<Vec<Node>>, String> {
    let mut alt = vec![parse_seq(chars, pos)?];
    while chars.get(*pos) == Some(&'|') {
        *pos += 1;
        alt.push(parse_seq(chars, pos)?);
    }
    Ok(alt)
}

fn parse_seq(chars: &[char], pos: &mut usize) -> Result<Vec<Node>, String> {
    let mut seq = Vec::new();
    while let Some(&c) = chars.get(*pos) {
        let atom = match c {
            '|' | ')' => break,
            '\\' => {
                let end = (*pos + 2).min(chars.len());
                let text: String = chars[*pos..end].iter().collect();
                *pos = end;
                Node::Text(text)
            }
            '[' => {
                let start = *pos;
                let mut i = *pos + 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    i += 1;
                }
                while i < chars.len() && chars[i] != ']' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unclosed character class".to_owned());
                }
                *pos = i + 1;
                Node::Text(chars[start..=i].iter().collect())
            }
            '(' => {
                let rest: String = chars[*pos..chars.len().min(*pos + 4)].iter().collect();
                if rest.starts_with("(?(") {
                    let close = chars[*pos + 3..]
                        .iter()
                        .position(|&c| c == ')')
                        .ok_or("unclosed conditional")?;
                    let name: String = chars[*pos + 3..*pos + 3 + close].iter().collect();
                    *pos += 3 + close + 1;
                    let alt = parse_alt(chars, pos)?;
                    if chars.get(*pos) != Some(&')') {
                        return Err("unclosed conditional".to_owned());
                    }
                    *pos += 1;
                    Node::Cond { name, alt }
                } else {
                    let (open, name) = if rest.starts_with("(?P<") {
                        let close = chars[*pos..]
                            .iter()
                            .position(|&c| c == '>')
                            .ok_or("unclosed group name")?;
                        let open: String = chars[*pos..=*pos + close].iter().collect();
                        let name = open[4..open.len() - 1].to_owned();
                        (open, Some(name))
                    } else if rest.starts_with("(?<=") || rest.starts_with("(?<!") {
                        (rest.clone(), None)
                    } else if rest.starts_with("(?") {
                        // (?:, (?=, (?!, (?>, (?#, or flags: (?i) / (?i:
                        let mut i = *pos + 2;
                        while i < chars.len() && chars[i].is_ascii_alphabetic() {
                            i += 1;
                        }
                        if i < chars.len() && matches!(chars[i], ':' | '=' | '!' | '>' | '#') {
                            i += 1;
                        }
                        (chars[*pos..i].iter().collect(), None)
                    } else {
                        ("(".to_owned(), None)
                    };
                    *pos += open.chars().count();
                    let alt = if open.ends_with(')') {
                        // A flags group such as (?i): nothing inside.
                        *pos -= 1;
                        Vec::new()
                    } else {
                        parse_alt(chars, pos)?
                    };
                    if chars.get(*pos) != Some(&')') {
                        return Err("unbalanced parenthesis".to_owned());
                    }
                    *pos += 1;
                    if alt.is_empty() {
                        Node::Text(open)
                    } else {
                        Node::Group { open, name, alt }
                    }
                }
            }
            _ => {
                *pos += 1;
                Node::Text(c.to_string())
            }
        };
        // A quantifier after it?
        let start = *pos;
        match chars.get(*pos) {
            Some('*' | '+' | '?') => *pos += 1,
            Some('{') => {
                let end = chars[*pos..].iter().position(|&c| c == '}');
                if let Some(end) = end {
                    let body: String = chars[*pos + 1..*pos + end].iter().collect();
                    if !body.is_empty()
                        && body != ","
                        && body.chars().all(|c| c.is_ascii_digit() || c == ',')
                    {
                        *pos += end + 1;
                    }
                }
            }
            _ => {}
        }
        if *pos > start && matches!(chars.get(*pos), Some('?' | '+')) {
            *pos += 1;
        }
        if *pos > start {
            seq.push(Node::Repeat {
                node: Box::new(atom),
                quantifier: chars[start..*pos].iter().collect(),
            });
        } else {
            seq.push(atom);
        }
    }
    Ok(seq)
}

fn write_alt(alt: &[Vec<Node>], out: &mut String) {
    for (index, seq) in alt.iter().enumerate() {
        if index > 0 {
            out.push('|');
        }
        for node in seq {
            write_node(node, out);
        }
    }
}

fn write_node(node: &Node, out: &mut String) {
    match node {
        Node::Text(text) => out.push_str(text),
        Node::Group { open, alt, .. } => {
            out.push_str(open);
            write_alt(alt, out);
            out.push(')');
        }
        Node::Cond { name, alt } => {
            let _ = write!(out, "(?({name})");
            write_alt(alt, out);
            out.push(')');
        }
        Node::Repeat { node, quantifier } => {
            write_node(node, out);
            out.push_str(quantifier);
        }
    }
}

fn first_condition(alt: &[Vec<Node>]) -> Option<String> {
    alt.iter().flatten().find_map(|node| match node {
        Node::Cond { name, .. } => Some(name.clone()),
        Node::Group { alt, .. } => first_condition(alt),
        Node::Repeat { node, .. } => first_condition(std::slice::from_ref(&vec![(**node).clone()])),
        Node::Text(_) => None,
    })
}

fn node_contains(node: &Node, group: &str) -> bool {
    match node {
        Node::Text(_) => false,
        Node::Group { name, alt, .. } => name.as_deref() == Some(group) || alt_contains(alt, group),
        Node::Cond { alt, .. } => alt_contains(alt, group),
        Node::Repeat { node, .. } => node_contains(node, group),
    }
}

fn alt_contains(alt: &[Vec<Node>], group: &str) -> bool {
    alt.iter().flatten().any(|n| node_contains(n, group))
}

/// The pattern for the lines where `group` takes part (`present`) or does not; `None` when
/// there are none.
fn specialize_alt(alt: &[Vec<Node>], group: &str, present: bool) -> Option<Vec<Vec<Node>>> {
    let with: Vec<&Vec<Node>> = if present && alt_contains(alt, group) {
        alt.iter()
            .filter(|seq| seq.iter().any(|n| node_contains(n, group)))
            .collect()
    } else {
        alt.iter().collect()
    };
    let out: Vec<Vec<Node>> = with
        .into_iter()
        .filter_map(|seq| {
            seq.iter()
                .map(|n| specialize(n, group, present))
                .collect::<Option<Vec<Node>>>()
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

fn specialize(node: &Node, group: &str, present: bool) -> Option<Node> {
    match node {
        Node::Text(_) => Some(node.clone()),
        Node::Group { name, .. } if name.as_deref() == Some(group) && !present => None,
        Node::Group { open, name, alt } => Some(Node::Group {
            open: open.clone(),
            name: name.clone(),
            alt: specialize_alt(alt, group, present)?,
        }),
        Node::Cond { name, alt } if name == group => {
            let branch = if present {
                alt.first().cloned().unwrap_or_default()
            } else {
                alt.get(1).cloned().unwrap_or_default()
            };
            Some(Node::Group {
                open: "(?:".to_owned(),
                name: None,
                alt: specialize_alt(&[branch], group, present)?,
            })
        }
        Node::Cond { name, alt } => Some(Node::Cond {
            name: name.clone(),
            alt: alt
                .iter()
                .map(|seq| {
                    seq.iter()
                        .map(|n| specialize(n, group, present))
                        .collect::<Option<Vec<Node>>>()
                        .unwrap_or_default()
                })
                .collect(),
        }),
        Node::Repeat { node, quantifier } => {
            let contains = node_contains(node, group);
            let optional = quantifier.starts_with(['?', '*'])
                || quantifier.starts_with("{0")
                || quantifier.starts_with("{,");
            match (contains, present) {
                (true, true) if optional => {
                    let lazy = if quantifier.ends_with("?") && quantifier.len() > 1 {
                        "?"
                    } else {
                        ""
                    };
                    let quantifier = if quantifier.starts_with('?') {
                        String::new()
                    } else if quantifier.starts_with('*') {
                        format!("+{lazy}")
                    } else {
                        let body = quantifier.trim_start_matches('{');
                        let body = body.trim_start_matches('0');
                        format!("{{1{body}")
                    };
                    let inner = specialize(node, group, present)?;
                    Some(if quantifier.is_empty() {
                        inner
                    } else {
                        Node::Repeat {
                            node: Box::new(inner),
                            quantifier,
                        }
                    })
                }
                (true, false) => match specialize(node, group, present) {
                    Some(inner) => Some(Node::Repeat {
                        node: Box::new(inner),
                        quantifier: quantifier.clone(),
                    }),
                    None if optional => Some(Node::Text(String::new())),
                    None => None,
                },
                _ => Some(Node::Repeat {
                    node: Box::new(specialize(node, group, present)?),
                    quantifier: quantifier.clone(),
                }),
            }
        }
    }
}

/// `(?:(?!X).)` → `.`; whether there was one.
fn tempered_dots(text: &str) -> (String, bool) {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' {
            out.push(chars[i]);
            if let Some(&c) = chars.get(i + 1) {
                out.push(c);
            }
            i += 2;
            continue;
        }
        let head: String = chars[i..chars.len().min(i + 6)].iter().collect();
        if head == "(?:(?!"
            && let Some(end) = group_close(&chars, i + 3)
            && chars.get(end + 1) == Some(&'.')
            && chars.get(end + 2) == Some(&')')
        {
            out.push('.');
            found = true;
            i = end + 3;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    (out, found)
}

/// `(?!Y)<F-CONTENT>` in a prefregex: the prefregex without it, and the guard `^(?:Y)` to run
/// on the content.
fn content_lookahead(text: &str) -> Option<(String, String)> {
    let chars: Vec<char> = text.chars().collect();
    let content = format!("(?P<{CONTENT}>");
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' {
            i += 2;
            continue;
        }
        if chars[i] == '('
            && chars.get(i + 1) == Some(&'?')
            && chars.get(i + 2) == Some(&'!')
            && let Some(end) = group_close(&chars, i)
        {
            let after: String = chars[end + 1..].iter().collect();
            if after.starts_with(&content) {
                let head: String = chars[..i].iter().collect();
                let body: String = chars[i + 3..end].iter().collect();
                return Some((format!("{head}{after}"), format!("^(?:{body})")));
            }
        }
        i += 1;
    }
    None
}

/// `X(?!Y)` at the very end: `X` and the guard `X(?:Y)` (the lines to leave alone).
fn trailing_negative_lookahead(text: &str) -> Option<(String, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' {
            i += 2;
            continue;
        }
        if chars[i] == '('
            && chars.get(i + 1) == Some(&'?')
            && chars.get(i + 2) == Some(&'!')
            && group_close(&chars, i) == Some(chars.len() - 1)
        {
            let head: String = chars[..i].iter().collect();
            let body: String = chars[i + 3..].iter().collect();
            return Some((head.clone(), format!("{head}(?:{body}")));
        }
        i += 1;
    }
    None
}

/// `X(?=Y)` at the very end → `X(?:Y)`: the same lines match.
fn trailing_lookahead(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' {
            i += 2;
            continue;
        }
        if chars[i] == '('
            && chars.get(i + 1) == Some(&'?')
            && chars.get(i + 2) == Some(&'=')
            && group_close(&chars, i) == Some(chars.len() - 1)
        {
            let head: String = chars[..i].iter().collect();
            let body: String = chars[i + 3..].iter().collect();
            return format!("{head}(?:{body}");
        }
        i += 1;
    }
    text.to_owned()
}

/// The index of the `)` that closes the `(` at `open`.
fn group_close(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut class = false;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' if !class => class = true,
            ']' if class => class = false,
            '(' if !class => depth += 1,
            ')' if !class => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The pattern's top-level alternatives.
fn branches(pattern: &str) -> Vec<&str> {
    let bytes = pattern.as_bytes();
    let (mut depth, mut class, mut start) = (0usize, false, 0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !class => {
                class = true;
                if bytes.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if bytes.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if class => class = false,
            b'(' if !class => depth += 1,
            b')' if !class => depth = depth.saturating_sub(1),
            b'|' if !class && depth == 0 => {
                out.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&pattern[start..]);
    out
}

/// Whether `^` occurs as an anchor (outside classes, unescaped).
fn has_caret(pattern: &str) -> bool {
    let bytes = pattern.as_bytes();
    let mut class = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !class => {
                class = true;
                if bytes.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if bytes.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if class => class = false,
            b'^' if !class => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// A failregex to run where the prefregex's content starts: `^` there, `.*?` before an
/// unanchored alternative.
fn at_content(pattern: &str) -> Result<String, String> {
    let parts: Result<Vec<String>, String> = branches(pattern)
        .into_iter()
        .map(|branch| {
            let (anchored, rest) = match branch.strip_prefix('^') {
                Some(rest) => (true, rest),
                None => (false, branch),
            };
            if has_caret(rest) {
                return Err("a `^` inside the pattern (its mode changes the prefregex, so the pattern is joined to it)".to_owned());
            }
            Ok(if anchored {
                rest.to_owned()
            } else {
                format!(".*?{rest}")
            })
        })
        .collect();
    Ok(format!("(?:{})", parts?.join("|")))
}

/// For a ruleset that reads whole lines: room for the date fail2ban would have cut out.
fn with_date(pattern: &str) -> String {
    let pattern = pattern.replace(r"\[\]", r"\[[^\]]*\]");
    match pattern.strip_prefix('^') {
        Some(rest) => format!("^(?:{DATE})?{rest}"),
        None => pattern,
    }
}

/// `_daemon` → program patterns, when it is a simple alternation of names.
fn programs_of(daemon: &str) -> Option<Vec<String>> {
    let chars: Vec<char> = daemon.chars().collect();
    let mut pos = 0;
    let set = glob_alternation(&chars, &mut pos)?;
    if pos != chars.len() {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for mut glob in set {
        while glob.contains("**") {
            glob = glob.replace("**", "*");
        }
        if glob.is_empty() || glob.contains([' ', '[', ']', ':']) {
            return None;
        }
        if !out.contains(&glob) {
            out.push(glob);
        }
    }
    // A glob another one covers adds nothing: `postfix*/*` takes `postfix*/*/smtpd`.
    let covered: Vec<bool> = out
        .iter()
        .map(|glob| {
            out.iter()
                .any(|other| other != glob && prefix::program_matches(other, glob))
        })
        .collect();
    let mut covered = covered.into_iter();
    out.retain(|_| !covered.next().unwrap_or(false));
    Some(out)
}

const MAX_GLOBS: usize = 32;

fn glob_alternation(chars: &[char], pos: &mut usize) -> Option<Vec<String>> {
    let mut out = Vec::new();
    loop {
        out.extend(glob_sequence(chars, pos)?);
        if chars.get(*pos) == Some(&'|') {
            *pos += 1;
        } else {
            break;
        }
    }
    (out.len() <= MAX_GLOBS).then_some(out)
}

fn glob_sequence(chars: &[char], pos: &mut usize) -> Option<Vec<String>> {
    let mut seq = vec![String::new()];
    while let Some(&c) = chars.get(*pos) {
        let (atom, wild): (Vec<String>, bool) = match c {
            '|' | ')' => break,
            '(' => {
                *pos += 1;
                if chars.get(*pos) == Some(&'?') {
                    if chars.get(*pos + 1) == Some(&':') {
                        *pos += 2;
                    } else if chars.get(*pos + 1) == Some(&'P') && chars.get(*pos + 2) == Some(&'<')
                    {
                        let end = chars[*pos..].iter().position(|&c| c == '>')?;
                        *pos += end + 1;
                    } else {
                        return None;
                    }
                }
                let inner = glob_alternation(chars, pos)?;
                if chars.get(*pos) != Some(&')') {
                    return None;
                }
                *pos += 1;
                (inner, false)
            }
            '\\' => {
                let next = *chars.get(*pos + 1)?;
                *pos += 2;
                match next {
                    'w' | 'S' | 'd' => (vec!["*".to_owned()], true),
                    c if c.is_ascii_punctuation() => (vec![c.to_string()], false),
                    _ => return None,
                }
            }
            '.' => {
                *pos += 1;
                (vec!["*".to_owned()], true)
            }
            '[' => {
                let end = chars[*pos..].iter().position(|&c| c == ']')? + *pos;
                let body: Vec<char> = chars[*pos + 1..end].to_vec();
                *pos = end + 1;
                if !body.is_empty()
                    && body.len() <= 8
                    && body.iter().all(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    (body.iter().map(char::to_string).collect(), false)
                } else {
                    (vec!["*".to_owned()], true)
                }
            }
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '.' | '@') => {
                *pos += 1;
                (vec![c.to_string()], false)
            }
            _ => return None,
        };
        let atom = match chars.get(*pos) {
            Some('?') => {
                *pos += 1;
                let mut atom = atom;
                atom.insert(0, String::new());
                atom
            }
            Some('*' | '+') => {
                *pos += 1;
                if !wild && atom.iter().any(|a| a != "*") {
                    // `a+`, `(?:ab)*`: a repetition of text is not a glob.
                    if atom.len() > 1 || atom[0].chars().count() != 1 {
                        return None;
                    }
                }
                vec!["*".to_owned()]
            }
            Some('{') => return None,
            _ => atom,
        };
        let mut next = Vec::new();
        for head in &seq {
            for tail in &atom {
                next.push(format!("{head}{tail}"));
            }
        }
        if next.len() > MAX_GLOBS {
            return None;
        }
        seq = next;
    }
    Some(seq)
}

// ---------------------------------------------------------------------------------------------
// Assembling the ruleset.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Ignore,
    /// Stops the ruleset on what a rule's trailing `(?!...)` excludes.
    Guard,
    Fail,
    /// A failregex that is not a failure (`<F-NOFAIL>`, `<F-MLFGAINED>`).
    NoFail,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    kind: Kind,
    pattern: String,
    target: bool,
    remember: bool,
    recall: bool,
    /// Take what earlier lines of the session left pending (not on a `<F-MLFGAINED>` line:
    /// a login drops them).
    settle: bool,
    /// `<F-MLFFORGET>`: the session ends after it.
    forget: bool,
    /// The user groups (`user`, then `alt_user...`) counted per session.
    users: Vec<String>,
}

/// One mode's (or the only) expansion.
struct ModeRules {
    /// The ruleset's first match, when the prefregex gives one.
    first: Option<String>,
    prefixed: bool,
    rules: Vec<(Rule, usize)>,
}

fn toml_string(value: &str) -> String {
    if !value.contains(['\'', '\n', '\r']) && !value.chars().any(char::is_control) {
        return format!("'{value}'");
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The mode names a filter selects with `<...<mode>...>`: for each such tag, the options its
/// name can complete to; the modes every one of them has (the default mode always).
fn modes_of(reader: &Reader, default: &str) -> Vec<String> {
    let mut candidates: Option<BTreeSet<String>> = None;
    let mut names: Vec<&String> = reader.sections.values().flat_map(HashMap::keys).collect();
    names.sort();
    names.dedup();
    for values in reader.sections.values().flat_map(HashMap::values) {
        for value in values {
            let mut from = 0;
            while let Some(at) = value.text[from..].find("<mode>") {
                let at = from + at;
                from = at + "<mode>".len();
                let before = &value.text[..at];
                let Some(open) = before.rfind('<') else {
                    continue;
                };
                let prefix = &before[open + 1..];
                let after = &value.text[from..];
                let Some(close) = after.find('>') else {
                    continue;
                };
                let suffix = &after[..close];
                if prefix.contains([' ', '>']) || suffix.contains([' ', '<']) {
                    continue;
                }
                let these: BTreeSet<String> = names
                    .iter()
                    .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix))
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                if these.is_empty() {
                    continue;
                }
                candidates = Some(match candidates {
                    None => these,
                    Some(old) => {
                        let both: BTreeSet<String> = old.intersection(&these).cloned().collect();
                        if both.is_empty() { old } else { both }
                    }
                });
            }
        }
    }
    let Some(candidates) = candidates else {
        return Vec::new();
    };
    let mut out = vec![default.to_owned()];
    out.extend(candidates.into_iter().filter(|m| m != default));
    out
}

/// Convert the fail2ban filter at `path`.
///
/// # Errors
/// The filter or an include cannot be read or is not INI; a value cannot be expanded; no
/// failregex converts; or the result does not load (the message says why).
pub fn convert_file(path: &Path) -> Result<Conversion, ImportError> {
    let mut files = Vec::new();
    collect_files(path, &[], true, &mut files)?;
    let mut reader = Reader::new(files);
    let mut notes = Vec::new();
    let unconvertible = |reader: &Reader, key: &str, message: String| {
        let (file, line) = reader.line(DEFINITION, key);
        ImportError::Unconvertible {
            path: if file.as_os_str().is_empty() {
                path.to_path_buf()
            } else {
                file
            },
            line,
            message,
        }
    };
    let default_mode = match reader.raw(DEFINITION, "mode") {
        Some((from, raw)) => reader
            .interpolate(&from, &raw, 0)
            .map_err(|m| unconvertible(&reader, "mode", m))?
            .trim()
            .to_owned(),
        None => "normal".to_owned(),
    };
    let modes = modes_of(&reader, &default_mode);
    if reader.raw(DEFINITION, "failregex").is_none() {
        return Err(unconvertible(
            &reader,
            "failregex",
            "the filter has no failregex (an include file?)".to_owned(),
        ));
    }
    // Each mode's rules (one pass without a mode when the filter has none).
    let passes: Vec<Option<String>> = if modes.is_empty() {
        vec![None]
    } else {
        modes.iter().cloned().map(Some).collect()
    };
    let mut per_mode: Vec<ModeRules> = Vec::new();
    let mut mlfid_seen = false;
    let mut first_address = false;
    let mut kept_modes: Vec<String> = Vec::new();
    for mode in &passes {
        if let Some(mode) = mode {
            let _ = reader.overrides.insert("mode".to_owned(), mode.clone());
        }
        let at = mode
            .as_ref()
            .map_or_else(String::new, |m| format!("mode {m}: "));
        let mut content_guard: Option<String> = None;
        let prefregex = reader
            .expand("prefregex")
            .map_err(|m| unconvertible(&reader, "prefregex", m))?
            .filter(|p| !p.trim().is_empty());
        let (first, prefixed_pref) = match &prefregex {
            Some(pref) => {
                let translated = translate(pref, true).and_then(|(mut variants, _)| {
                    if variants.len() == 1 {
                        Ok(variants.remove(0))
                    } else {
                        Err("a conditional group in the prefregex".to_owned())
                    }
                });
                let translated = match translated {
                    Ok(translated) => translated,
                    Err(why) if mode.as_ref().is_some_and(|m| *m != default_mode) => {
                        notes.push(format!("{at}prefregex: {why}; the mode is left out"));
                        continue;
                    }
                    Err(why) => {
                        return Err(unconvertible(
                            &reader,
                            "prefregex",
                            format!("{at}prefregex: {why}"),
                        ));
                    }
                };
                mlfid_seen |= translated.mlfid;
                first_address |= translated.address;
                if let Some(guard) = &translated.guard {
                    notes.push(format!("{at}prefregex: its (?!...) before <F-CONTENT> became a first rule that stops the ruleset on the content it excludes"));
                    content_guard = Some(guard.clone());
                }
                (Some(translated.pattern), Some(translated.prefixed))
            }
            None => (None, None),
        };
        let has_content = first.as_deref().is_some_and(|f| f.contains(CONTENT));
        let mut translated = Vec::new();
        let mut rules = Vec::new();
        if let Some(guard) = content_guard.take() {
            rules.push((
                Rule {
                    kind: Kind::Guard,
                    pattern: guard,
                    target: true,
                    remember: false,
                    recall: false,
                    settle: false,
                    forget: false,
                    users: Vec::new(),
                },
                0,
            ));
        }
        for (key, kind) in [("ignoreregex", Kind::Ignore), ("failregex", Kind::Fail)] {
            let expanded = reader
                .expand(key)
                .map_err(|m| unconvertible(&reader, key, m))?
                .unwrap_or_default();
            for (index, line) in expanded
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .enumerate()
            {
                match translate(line, false) {
                    Ok((variants, approximated)) => {
                        for note in approximated {
                            let note = format!("{key} #{}: {note}", index + 1);
                            if !notes.contains(&note) {
                                notes.push(note);
                            }
                        }
                        for t in variants {
                            translated.push((kind.clone(), index + 1, t));
                        }
                    }
                    Err(why) => notes.push(format!("{at}{key} #{}: {why}; left out", index + 1)),
                }
            }
        }
        let prefixed = prefixed_pref.unwrap_or_else(|| {
            let fails: Vec<&Translated> = translated.iter().map(|(_, _, t)| t).collect();
            fails.iter().filter(|t| t.prefixed).count() * 2 > fails.len()
        });
        let mlfid = mlfid_seen || translated.iter().any(|(_, _, t)| t.mlfid);
        mlfid_seen |= mlfid;
        for (kind, index, t) in translated {
            let key = if kind == Kind::Ignore {
                "ignoreregex"
            } else {
                "failregex"
            };
            if prefregex.is_none() && t.prefixed != prefixed {
                notes.push(format!(
                    "{at}{key} #{index}: {} fail2ban's syslog prefix where the others do not; left out",
                    if t.prefixed { "reads" } else { "does not read" }
                ));
                continue;
            }
            let kind = if kind == Kind::Fail && (t.nofail || t.gained) {
                Kind::NoFail
            } else {
                kind
            };
            let multiline = mlfid && prefixed;
            if kind == Kind::Fail && !t.address && !multiline && !first_address {
                notes.push(format!(
                    "{at}{key} #{index}: no <HOST> (fail2ban takes the address from another line of the session): left out"
                ));
                continue;
            }
            let mut pattern = t.pattern;
            if !prefixed && !has_content {
                pattern = with_date(&pattern);
            }
            if let Some(guard) = &t.guard {
                if kind == Kind::Ignore {
                    notes.push(format!(
                        "{at}{key} #{index}: a trailing (?!...) in an ignoreregex; left out"
                    ));
                    continue;
                }
                let guard = if !prefixed && !has_content {
                    with_date(guard)
                } else {
                    guard.clone()
                };
                rules.push((
                    Rule {
                        kind: Kind::Guard,
                        pattern: guard,
                        target: has_content,
                        remember: false,
                        recall: false,
                        settle: false,
                        forget: false,
                        users: Vec::new(),
                    },
                    index,
                ));
            }
            rules.push((
                Rule {
                    recall: multiline && kind == Kind::Fail && !t.address && !first_address,
                    remember: multiline && matches!(kind, Kind::Fail | Kind::NoFail) && t.address,
                    settle: multiline
                        && matches!(kind, Kind::Fail | Kind::NoFail)
                        && t.address
                        && !t.gained,
                    forget: multiline && t.forget && kind != Kind::Ignore,
                    users: if multiline && kind != Kind::Ignore {
                        user_groups(&pattern)
                    } else {
                        Vec::new()
                    },
                    kind,
                    pattern,
                    target: has_content,
                },
                index,
            ));
        }
        let first = first.map(|f| if prefixed { f } else { with_date(&f) });
        if let Some(mode) = mode {
            kept_modes.push(mode.clone());
        }
        per_mode.push(ModeRules {
            first,
            prefixed,
            rules,
        });
    }
    reader.overrides.clear();
    if mlfid_seen {
        notes.push("<F-MLFID> multi-line sessions: approximated by the process id ('${pid}' as the key of `remember`/`recall`, `pending`/`settle`, `forget` and `distinct`)".to_owned());
    }
    if let Some((_, maxlines)) = reader.raw(DEFINITION, "maxlines")
        && maxlines.trim().parse::<u32>().is_ok_and(|n| n > 1)
    {
        notes.push(format!(
            "maxlines = {}: multi-line buffering is not converted",
            maxlines.trim()
        ));
    }
    if reader.raw(DEFINITION, "journalmatch").is_some()
        || reader
            .sections
            .get("Init")
            .is_some_and(|s| s.contains_key("journalmatch"))
    {
        notes.push(
            "journalmatch is not converted (choose the journal units in the daemon's inputs)"
                .to_owned(),
        );
    }
    // All modes read the same way; when their prefregexes differ, each rule carries its own.
    let prefixed = per_mode[0].prefixed;
    if per_mode.iter().any(|m| m.prefixed != prefixed) {
        return Err(unconvertible(
            &reader,
            "prefregex",
            "the modes read the syslog prefix differently".to_owned(),
        ));
    }
    let same_first = per_mode.iter().all(|m| m.first == per_mode[0].first);
    let first = if same_first {
        per_mode[0].first.clone()
    } else {
        for (mode, rules) in kept_modes.iter().zip(per_mode.iter_mut()) {
            let Some(head) = rules.first.as_deref().and_then(|f| {
                f.strip_suffix(&format!("(?P<{CONTENT}>.+)$"))
                    .or_else(|| f.strip_suffix(&format!("(?P<{CONTENT}>.*)$")))
            }) else {
                return Err(unconvertible(
                    &reader,
                    "prefregex",
                    "the modes change the prefregex, and its content is not `.+` to the end"
                        .to_owned(),
                ));
            };
            let head = head.to_owned();
            let mut joined = Vec::new();
            for (mut rule, index) in std::mem::take(&mut rules.rules) {
                match at_content(&rule.pattern) {
                    Ok(tail) => {
                        rule.pattern = format!("{head}{tail}");
                        rule.target = false;
                        joined.push((rule, index));
                    }
                    Err(why) => notes.push(format!("mode {mode}: #{index}: {why}; left out")),
                }
            }
            rules.rules = joined;
        }
        None
    };
    // Merge the modes' rule lists, each keeping its order; a rule in every mode is untagged.
    let mut merged: Vec<(Rule, usize, BTreeSet<usize>)> = Vec::new();
    for (mode, rules) in per_mode.iter().enumerate() {
        let mut last: Option<usize> = None;
        for (rule, index) in &rules.rules {
            let start = last.map_or(0, |l| l + 1);
            if let Some(found) = merged[start..].iter().position(|(r, _, _)| r == rule) {
                let at = start + found;
                let _ = merged[at].2.insert(mode);
                last = Some(at);
            } else {
                merged.insert(start, (rule.clone(), *index, BTreeSet::from([mode])));
                last = Some(start);
            }
        }
    }
    if !merged.iter().any(|(r, _, _)| r.kind == Kind::Fail) {
        return Err(unconvertible(
            &reader,
            "failregex",
            format!(
                "no failregex converts{}",
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(": {}", notes.join("; "))
                }
            ),
        ));
    }
    let name: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "fail2ban".to_owned())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut programs_line = String::new();
    if prefixed {
        let daemon = reader
            .expand("_daemon")
            .map_err(|m| unconvertible(&reader, "_daemon", m))?
            .unwrap_or_default();
        let programs = programs_of(daemon.trim()).unwrap_or_else(|| {
            notes.push(format!(
                "_daemon {:?} is not a simple alternation of names: the ruleset reads every program",
                daemon.trim()
            ));
            vec!["*".to_owned()]
        });
        notes.push("fail2ban's prefix lets the daemon's name be missing, and its patterns may read another tag (such as `pop3-login:`) themselves: `other_programs = 'read-with-tag'` reads the other programs' lines (and those without a tag) from their tag on, as fail2ban does; remove it to read only the named programs' messages".to_owned());
        let list: Vec<String> = programs.iter().map(|p| toml_string(p)).collect();
        programs_line = format!(
            "programs = [{}]\nother_programs = 'read-with-tag'\n",
            list.join(", ")
        );
    }
    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# Converted by `xdpguard import-fail2ban` from the fail2ban filter {}.",
        path.display()
    );
    let _ = writeln!(
        toml,
        "# Each failure scores {FAILURE_SCORE}; ignoreregex lines score nothing."
    );
    for note in &notes {
        let _ = writeln!(toml, "# Note: {}", note.replace('\n', " "));
    }
    let _ = writeln!(toml, "\n[[ruleset]]\nname = {}", toml_string(&name));
    toml.push_str(&programs_line);
    match &first {
        Some(first) => {
            let first = if prefixed || first.starts_with('^') {
                first.clone()
            } else {
                format!("^.*?{first}")
            };
            let _ = writeln!(toml, "match = {}", toml_string(&first));
        }
        None if !prefixed => {
            let _ = writeln!(toml, "match = ''");
        }
        None => {}
    }
    let tagged = |set: &BTreeSet<usize>| set.len() < per_mode.len();
    let modes = kept_modes;
    if !modes.is_empty() {
        let _ = writeln!(toml, "default_mode = {}", toml_string(&default_mode));
        let _ = writeln!(toml, "[ruleset.modes]");
        for (index, mode) in modes.iter().enumerate() {
            let used = merged
                .iter()
                .any(|(_, _, set)| tagged(set) && set.contains(&index));
            let tags = if used {
                toml_string(mode)
            } else {
                String::new()
            };
            let _ = writeln!(toml, "{} = [{tags}]", toml_string(mode));
        }
    }
    let (mut fails, mut ignores, mut nofails, mut guards) = (0, 0, 0, 0);
    for (rule, index, set) in &merged {
        let (rule_name, source) = match rule.kind {
            Kind::Ignore => {
                ignores += 1;
                (format!("ignore-{ignores}"), "ignoreregex")
            }
            Kind::Fail => {
                fails += 1;
                (format!("fail-{fails}"), "failregex")
            }
            Kind::NoFail => {
                nofails += 1;
                (format!("nofail-{nofails}"), "failregex")
            }
            Kind::Guard => {
                guards += 1;
                (format!("guard-{guards}"), "failregex")
            }
        };
        let _ = writeln!(toml, "\n# {source} #{index}");
        let _ = writeln!(toml, "[[ruleset.rule]]\nname = {}", toml_string(&rule_name));
        if tagged(set) {
            let tags: Vec<String> = set.iter().map(|&m| toml_string(&modes[m])).collect();
            let _ = writeln!(toml, "tags = [{}]", tags.join(", "));
        }
        if rule.target {
            let _ = writeln!(toml, "target = '${{{CONTENT}}}'");
        }
        let _ = writeln!(toml, "match = {}", toml_string(&rule.pattern));
        if rule.kind == Kind::Fail {
            let _ = writeln!(toml, "score = {FAILURE_SCORE}");
        }
        // fail2ban keeps a failure without an address pending on its session until a line of
        // the same session names one (`pending`/`settle`), and names the address of a later
        // failure from an earlier line (`remember`/`recall`).
        if rule.remember {
            let _ = writeln!(toml, "remember = '${{pid}}'");
        }
        if rule.settle {
            let _ = writeln!(toml, "settle = '${{pid}}'");
        }
        if rule.recall {
            let _ = writeln!(toml, "recall = '${{pid}}'\npending = '${{pid}}'");
        }
        // fail2ban counts the user names of a session: once it has tried more than one,
        // its lines are failures, the <F-NOFAIL> ones too.
        if !rule.users.is_empty() {
            let users: Vec<String> = rule
                .users
                .iter()
                .map(|u| toml_string(&format!("${{{u}}}")))
                .collect();
            let _ = writeln!(toml, "distinct = [{}]", users.join(", "));
            if rule.kind == Kind::NoFail {
                let _ = writeln!(toml, "distinct_score = {FAILURE_SCORE}");
            }
        }
        if rule.forget {
            let _ = writeln!(toml, "forget = '${{pid}}'");
        }
        let _ = writeln!(toml, "last = true");
    }
    ruleset::parse(&toml, Path::new(&format!("{name}.toml"))).map_err(|err| ImportError::Load {
        path: path.to_path_buf(),
        message: err.to_string(),
    })?;
    Ok(Conversion { toml, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_syntax_is_translated_or_refused() {
        assert_eq!(python_to_rust(r"a\Z").unwrap(), "a$");
        assert_eq!(python_to_rust(r"[^[]*x{,3}").unwrap(), r"[^\[]*x{0,3}");
        assert_eq!(python_to_rust(r"a{b}").unwrap(), r"a\{b\}");
        assert_eq!(python_to_rust(r"\<x\>").unwrap(), "<x>");
        for bad in [
            r"(a)\1",
            "(?P<a>x)(?P=a)",
            "(?!x)",
            "(?<=x)",
            "(?(a)b|c)",
            "a++",
        ] {
            assert!(python_to_rust(bad).is_err(), "{bad}");
        }
        assert_eq!(python_to_rust("a+?b*").unwrap(), "a+?b*");
    }

    #[test]
    fn daemons_become_programs() {
        assert_eq!(programs_of("demo").unwrap(), ["demo"]);
        assert_eq!(
            programs_of("(?:mail(?:-in)?|in)").unwrap(),
            ["mail", "mail-in", "in"]
        );
        assert_eq!(
            programs_of(r"mta(-\w+)?/\w+(?:/x[ab])?").unwrap(),
            ["mta/*", "mta-*/*"]
        );
        assert_eq!(programs_of("q[12]d").unwrap(), ["q1d", "q2d"]);
        assert_eq!(programs_of(r"\S*").unwrap(), ["*"]);
        assert!(programs_of("a{2}").is_none());
    }

    #[test]
    fn conditionals_and_nofail_alternatives_split_into_rules() {
        let (rules, notes) = translate("^a (?P<x>b )?c(?(x)d|e)$", false).unwrap();
        let patterns: Vec<&str> = rules.iter().map(|r| r.pattern.as_str()).collect();
        assert_eq!(patterns, ["^a (?P<x>b )c(?:d)$", "^a c(?:e)$"]);
        assert!(notes[0].contains("one rule per case"), "{notes:?}");
        let (rules, _) = translate("^x (?:<F-NOFAIL>ok</F-NOFAIL>|\\S+) <HOST>$", false).unwrap();
        let kinds: Vec<(bool, bool)> = rules.iter().map(|r| (r.nofail, r.address)).collect();
        assert_eq!(kinds, [(true, true), (false, true)]);
        assert_eq!(
            rules[1].pattern,
            "^x (?:\\S+) \\[?(?P<address>[0-9A-Fa-f:.]+)\\]?$"
        );
        let (rules, notes) = translate("^u (?:(?! from ).)* from <ADDR>$", false).unwrap();
        assert_eq!(
            rules[0].pattern,
            "^u .* from \\[?(?P<address>[0-9A-Fa-f:.]+)\\]?$"
        );
        assert_eq!(notes.len(), 1);
        assert!(translate("^(?!x)y <HOST>", false).is_err());
    }

    /// A made-up filter with the shapes fail2ban's have: an include and a `.local`, modes,
    /// interpolation, an ignoreregex.
    #[test]
    fn a_filter_with_includes_modes_and_ignores_converts_and_scores() {
        let dir = std::env::temp_dir().join(format!("xdpguard-f2b-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("common.conf"),
            "[DEFAULT]\n__prefix_line = \\S+ \\S+ \\S+ \\S+\\[\\d+\\]: \n",
        )
        .unwrap();
        std::fs::write(
            dir.join("demo.conf"),
            "[INCLUDES]\nbefore = common.conf\n[Definition]\n_daemon = demo(?:-\\w+)?\nmode = normal\n\
             _x = bad login\nre-normal = ^%(__prefix_line)s%(_x)s from <HOST>$\n\
             re-strict = %(re-normal)s\n  ^%(__prefix_line)sprobe from <HOST>\\Z\nfailregex = <re-<mode>>\n\
             ignoreregex = ^%(__prefix_line)sbad login from 192\\.0\\.2\\.1$ ; inline comment\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("demo.local"),
            "[Definition]\n_x = (?:bad|failed) login\n",
        )
        .unwrap();
        let conversion = convert_file(&dir.join("demo.conf")).unwrap();
        let toml = &conversion.toml;
        assert!(
            toml.starts_with("# Converted by `xdpguard import-fail2ban`"),
            "{toml}"
        );
        assert!(toml.contains("programs = ['demo', 'demo-*']"), "{toml}");
        let mut sets = ruleset::parse(toml, Path::new("demo.toml")).unwrap();
        let score = |sets: &[ruleset::Ruleset], message: &str| {
            let line = format!("Jan  5 01:31:41 host demo[7]: {message}");
            match sets[0].apply(&line).0 {
                ruleset::Outcome::Scored { address, score } => Some((address.to_string(), score)),
                _ => None,
            }
        };
        assert_eq!(
            score(&sets, "failed login from 203.0.113.5"),
            Some(("203.0.113.5".into(), FAILURE_SCORE))
        );
        assert_eq!(score(&sets, "bad login from 192.0.2.1"), None);
        assert_eq!(score(&sets, "probe from 203.0.113.6"), None);
        sets[0].set_mode("strict").unwrap();
        assert_eq!(
            score(&sets, "probe from 203.0.113.6"),
            Some(("203.0.113.6".into(), FAILURE_SCORE))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tags_expand_innermost_first() {
        let text =
            "[Definition]\nmode = b\nx-a = A\nx-b = B<y>\ny = !\nfailregex = <x-<mode>> %(y)s\n";
        let reader = Reader::new(vec![(
            PathBuf::from("f.conf"),
            parse_ini(text, Path::new("f.conf")).unwrap(),
        )]);
        assert_eq!(reader.expand("failregex").unwrap().unwrap(), "B! !");
        let looped = "[Definition]\na = <a>x\nfailregex = <a>\n";
        let reader = Reader::new(vec![(
            PathBuf::from("f.conf"),
            parse_ini(looped, Path::new("f.conf")).unwrap(),
        )]);
        assert!(reader.expand("failregex").is_err());
    }
}
