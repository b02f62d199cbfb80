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
//! Regular expressions are `regex-automata`'s meta engine (what the `regex` crate runs):
//! matching is linear in the line, so a hostile or careless pattern cannot hang the daemon.
//!
//! Loading is bounded by [`RulesetLimits`] in two passes. The first reads and checks the files
//! without compiling anything: how many files, how big each one is, how many rules in all, how
//! long each pattern is (and every key, type and name, each error at the line of the fault). The
//! second compiles, with each pattern's program bounded and measured, and the measured sizes
//! summed against a budget for all of them. So a directory of ten thousand files is refused
//! before a single one is read, and no file can make the daemon allocate more than the limits
//! say.
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    io::Read as _,
    net::IpAddr,
    ops::Range,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use super::{
    correlate::Sessions,
    prefix::{self, Prefixed},
};
use regex_automata::{
    Input, MatchKind, PatternID, PatternSet, Span, meta,
    util::{prefilter::Prefilter, syntax},
};
use regex_syntax::hir::{Hir, HirKind};
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

/// How many ruleset files are loaded at most.
pub const DEFAULT_MAX_FILES: u32 = 128;
/// How big one ruleset file may be.
pub const DEFAULT_MAX_FILE_BYTES: u32 = 256 << 10;
/// How many matches (first matches and rules, enabled ones) all rulesets hold together.
pub const DEFAULT_MAX_RULES: u32 = 2048;
/// How long one pattern (or target template) may be, in bytes of source.
pub const DEFAULT_MAX_PATTERN_BYTES: u32 = 4 << 10;
/// How big one compiled pattern may be: its automata, and separately its search cache.
pub const DEFAULT_MAX_REGEX_BYTES: u32 = 1 << 20;
/// How big every compiled pattern of every ruleset may be together.
pub const DEFAULT_MAX_COMPILED_BYTES: u32 = 128 << 20;

/// The bounds on what ruleset files may cost; the `[rulesets]` table of the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RulesetLimits {
    pub max_files: u32,
    pub max_file_bytes: u32,
    pub max_rules: u32,
    pub max_pattern_bytes: u32,
    pub max_regex_bytes: u32,
    pub max_compiled_bytes: u32,
}

impl Default for RulesetLimits {
    fn default() -> Self {
        Self {
            max_files: DEFAULT_MAX_FILES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_rules: DEFAULT_MAX_RULES,
            max_pattern_bytes: DEFAULT_MAX_PATTERN_BYTES,
            max_regex_bytes: DEFAULT_MAX_REGEX_BYTES,
            max_compiled_bytes: DEFAULT_MAX_COMPILED_BYTES,
        }
    }
}

/// One of [`RulesetLimits`], by the key that sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Files,
    FileBytes,
    Rules,
    PatternBytes,
    RegexBytes,
    CompiledBytes,
}

impl Limit {
    pub const ALL: [Self; 6] = [
        Self::Files,
        Self::FileBytes,
        Self::Rules,
        Self::PatternBytes,
        Self::RegexBytes,
        Self::CompiledBytes,
    ];

    /// Its key in the `[rulesets]` table.
    pub const fn key(self) -> &'static str {
        match self {
            Self::Files => "max_files",
            Self::FileBytes => "max_file_bytes",
            Self::Rules => "max_rules",
            Self::PatternBytes => "max_pattern_bytes",
            Self::RegexBytes => "max_regex_bytes",
            Self::CompiledBytes => "max_compiled_bytes",
        }
    }

    /// The most it may be raised to (the configuration refuses more).
    pub const fn ceiling(self) -> u32 {
        match self {
            Self::Files => 1 << 16,
            Self::FileBytes => 16 << 20,
            Self::Rules => 1 << 20,
            Self::PatternBytes => 1 << 20,
            Self::RegexBytes => 256 << 20,
            Self::CompiledBytes => u32::MAX,
        }
    }

    pub const fn unit(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Rules => "rules",
            Self::FileBytes | Self::PatternBytes | Self::RegexBytes | Self::CompiledBytes => {
                "bytes"
            }
        }
    }

    pub const fn of(self, limits: &RulesetLimits) -> u32 {
        match self {
            Self::Files => limits.max_files,
            Self::FileBytes => limits.max_file_bytes,
            Self::Rules => limits.max_rules,
            Self::PatternBytes => limits.max_pattern_bytes,
            Self::RegexBytes => limits.max_regex_bytes,
            Self::CompiledBytes => limits.max_compiled_bytes,
        }
    }

    const fn slot(self, limits: &mut RulesetLimits) -> &mut u32 {
        match self {
            Self::Files => &mut limits.max_files,
            Self::FileBytes => &mut limits.max_file_bytes,
            Self::Rules => &mut limits.max_rules,
            Self::PatternBytes => &mut limits.max_pattern_bytes,
            Self::RegexBytes => &mut limits.max_regex_bytes,
            Self::CompiledBytes => &mut limits.max_compiled_bytes,
        }
    }
}

impl RulesetLimits {
    /// Set one limit (range-checked by the caller).
    pub const fn set(&mut self, limit: Limit, value: u32) {
        *limit.slot(self) = value;
    }

    /// Set one limit from `KEY=N` (the `--limit` of `check` and `lint`).
    ///
    /// # Errors
    /// An unknown key, or a value that is not a number from 1 to the limit's ceiling.
    pub fn set_from_text(&mut self, text: &str) -> Result<(), String> {
        let keys = || Limit::ALL.map(Limit::key).join(", ");
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!("{text:?}: write KEY=N, KEY one of {}", keys()));
        };
        let Some(limit) = Limit::ALL.into_iter().find(|l| l.key() == key.trim()) else {
            return Err(format!("{key:?} is not a ruleset limit; one of {}", keys()));
        };
        let value = value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=limit.ceiling()).contains(v))
            .ok_or_else(|| {
                format!(
                    "{key}: {value:?} is not a number from 1 to {} {}",
                    limit.ceiling(),
                    limit.unit()
                )
            })?;
        *limit.slot(self) = value;
        Ok(())
    }

    fn bytes(value: u32) -> usize {
        usize::try_from(value).unwrap_or(usize::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesetError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a value of the wrong type, a missing key: `message` says
    /// which ruleset and rule when it is inside one.
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A value of the right type that cannot be used: a bad pattern, a name given twice, a
    /// ruleset that can never score.
    #[error("{path}:{line}: {}: {message}", context(ruleset, rule.as_deref()))]
    Invalid {
        path: PathBuf,
        line: usize,
        ruleset: String,
        rule: Option<String>,
        message: String,
    },
    /// Over one of the [`RulesetLimits`]: `what` is what was found.
    #[error(
        "{}: {what}, more than rulesets.{} = {max} allows; raise it in the [rulesets] table of the configuration (check and lint: --limit {}=N)",
        place(path, *line), limit.key(), limit.key()
    )]
    Limit {
        path: PathBuf,
        line: Option<usize>,
        limit: Limit,
        max: u32,
        what: String,
    },
}

impl RulesetError {
    /// The line of the fault, when it is at one.
    pub const fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { line, .. } | Self::Invalid { line, .. } => Some(*line),
            Self::Limit { line, .. } => *line,
            Self::Read { .. } => None,
        }
    }

    /// The file (or directory) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Syntax { path, .. }
            | Self::Invalid { path, .. }
            | Self::Limit { path, .. } => path,
        }
    }
}

fn context(ruleset: &str, rule: Option<&str>) -> String {
    match rule {
        Some(rule) => format!("ruleset {ruleset:?}, rule {rule:?}"),
        None => format!("ruleset {ruleset:?}"),
    }
}

fn place(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// First pass: the files as written, checked, nothing compiled.

/// A match table as written. `line`: of its `match` value.
#[derive(Debug)]
struct RawMatch {
    pattern: String,
    line: usize,
    target: Option<String>,
    ignore_case: bool,
    negated: bool,
    defaults: Vec<(String, String)>,
    score: Option<i64>,
    enabled: bool,
    last: bool,
    /// The modes' tags that switch the rule on (none: on in every mode).
    tags: Vec<String>,
    /// Key templates: keep the address under this key / take it from there.
    remember: Option<String>,
    recall: Option<String>,
    /// Key templates: park the score of a line without an address / add what is parked to a
    /// later line's that names one.
    pending: Option<String>,
    settle: Option<String>,
    /// Key template: end the session after this line.
    forget: Option<String>,
    /// Templates of the value counted per session (the first that resolves), and what the
    /// line adds once the session has seen more than one distinct value.
    distinct: Vec<String>,
    distinct_score: Option<i64>,
}

#[derive(Debug)]
struct RawRule {
    name: String,
    /// Of its header (`[[ruleset.rule]]`).
    line: usize,
    matcher: RawMatch,
}

#[derive(Debug)]
struct RawRuleset {
    name: String,
    /// Of its header (`[[ruleset]]`).
    line: usize,
    name_line: usize,
    first: RawMatch,
    rules: Vec<RawRule>,
    /// The programs whose messages it reads (`prefix::program_matches` patterns); empty: it
    /// reads whole lines.
    programs: Vec<String>,
    /// `other_programs = "read-with-tag"`.
    other_programs: bool,
    /// Mode name → the tags it switches on, in file order.
    modes: Vec<(String, Vec<String>)>,
    /// `default_mode`, or `normal` when there is one, or the first mode.
    default_mode: Option<(String, usize)>,
}

impl RawRuleset {
    /// The header lines of the matches that will be compiled, first match first.
    fn enabled_lines(&self) -> impl Iterator<Item = usize> {
        let on = self.first.enabled;
        std::iter::once(self.line).filter(move |_| on).chain(
            self.rules
                .iter()
                .filter(move |r| on && r.matcher.enabled)
                .map(|r| r.line),
        )
    }
}

#[derive(Debug)]
struct RawFile {
    path: PathBuf,
    rulesets: Vec<RawRuleset>,
}

const MATCH_KEYS: [&str; 15] = [
    "match",
    "remember",
    "recall",
    "pending",
    "settle",
    "forget",
    "distinct",
    "distinct_score",
    "target",
    "ignore_case",
    "negated",
    "defaults",
    "score",
    "enabled",
    "last",
];

type Entry<'t, 'i> = (
    &'t Spanned<std::borrow::Cow<'i, str>>,
    &'t Spanned<DeValue<'i>>,
);

/// A file's text being read: turns spans into lines.
struct Doc<'a> {
    path: &'a Path,
    text: &'a str,
    limits: &'a RulesetLimits,
}

impl Doc<'_> {
    fn line(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        self.text[..offset].matches('\n').count() + 1
    }

    fn syntax(&self, span: &Range<usize>, message: impl fmt::Display) -> RulesetError {
        RulesetError::Syntax {
            path: self.path.to_path_buf(),
            line: self.line(span.start),
            message: message.to_string(),
        }
    }

    /// A table's entries in the order they were written (the map sorts them by key).
    fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
        let mut entries: Vec<Entry<'t, 'i>> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        entries
    }

    fn file(&self) -> Result<Vec<RawRuleset>, RulesetError> {
        let document = DeTable::parse(self.text).map_err(|err| {
            self.syntax(&err.span().unwrap_or(0..0), err.message().trim().to_owned())
        })?;
        let mut out = Vec::new();
        for (key, value) in Self::entries(document.get_ref()) {
            if key.get_ref() != "ruleset" {
                return Err(self.syntax(
                    &key.span(),
                    format_args!(
                        "unknown key `{}`: a ruleset file holds [[ruleset]] tables only",
                        key.get_ref()
                    ),
                ));
            }
            for (span, table) in self.tables(value, "`ruleset`", "[[ruleset]]")? {
                out.push(self.ruleset(span, table)?);
            }
        }
        Ok(out)
    }

    /// An array of tables (`[[name]]`, or `[{ ... }]`): each table and where it starts.
    fn tables<'t, 'i>(
        &self,
        value: &'t Spanned<DeValue<'i>>,
        what: &str,
        header: &str,
    ) -> Result<Vec<(Range<usize>, &'t DeTable<'i>)>, RulesetError> {
        let wrong = |span: &Range<usize>, found: &str| {
            self.syntax(
                span,
                format_args!("{what} must be {header} tables, not {found}"),
            )
        };
        let DeValue::Array(items) = value.get_ref() else {
            return Err(wrong(&value.span(), value.get_ref().type_str()));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::Table(table) => Ok((item.span(), table)),
                other => Err(wrong(&item.span(), other.type_str())),
            })
            .collect()
    }

    fn string(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        at: &str,
    ) -> Result<String, RulesetError> {
        match value.get_ref() {
            DeValue::String(text) => Ok(text.to_string()),
            other => Err(self.syntax(
                &value.span(),
                format_args!("{at}`{key}` must be a string, not {}", other.type_str()),
            )),
        }
    }

    /// An array of strings.
    fn strings(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        at: &str,
    ) -> Result<Vec<String>, RulesetError> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.syntax(
                &value.span(),
                format_args!(
                    "{at}`{key}` must be an array of strings, not {}",
                    value.get_ref().type_str()
                ),
            ));
        };
        items
            .iter()
            .map(|item| self.string(item, key, at))
            .collect()
    }

    fn syntax_at(&self, line: usize, message: impl fmt::Display) -> RulesetError {
        RulesetError::Syntax {
            path: self.path.to_path_buf(),
            line,
            message: message.to_string(),
        }
    }

    fn boolean(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        at: &str,
    ) -> Result<bool, RulesetError> {
        match value.get_ref() {
            DeValue::Boolean(yes) => Ok(*yes),
            other => Err(self.syntax(
                &value.span(),
                format_args!(
                    "{at}`{key}` must be true or false, not {}",
                    other.type_str()
                ),
            )),
        }
    }

    /// The name of a ruleset or rule, and its line, when it has one.
    fn name(&self, table: &DeTable<'_>, at: &str) -> Result<Option<(String, usize)>, RulesetError> {
        let Some((_, value)) = table.iter().find(|(key, _)| key.get_ref() == "name") else {
            return Ok(None);
        };
        let name = self.string(value, "name", at)?;
        if name.is_empty() {
            return Err(self.syntax(&value.span(), format_args!("{at}`name` is empty")));
        }
        Ok(Some((name, self.line(value.span().start))))
    }

    fn ruleset(&self, span: Range<usize>, table: &DeTable<'_>) -> Result<RawRuleset, RulesetError> {
        let named = self.name(table, "ruleset: ")?;
        let at = named.as_ref().map_or_else(
            || "ruleset: ".to_owned(),
            |(name, _)| format!("ruleset {name:?}: "),
        );
        let mut first = MatchBuilder::default();
        let mut rules = Vec::new();
        let mut programs = Vec::new();
        let mut other_programs = None;
        let mut modes = Vec::new();
        let mut modes_line = 0;
        let mut default_mode = None;
        for (key, value) in Self::entries(table) {
            match key.get_ref().as_ref() {
                "name" => {}
                "programs" => {
                    programs = self.strings(value, "programs", &at)?;
                    if programs.is_empty() {
                        return Err(self.syntax(
                            &value.span(),
                            format_args!("{at}`programs` is empty: name one, or leave it out to read whole lines"),
                        ));
                    }
                    if let Some(bad) = programs
                        .iter()
                        .find(|p| p.is_empty() || p.contains([' ', '[', ']', ':']))
                    {
                        return Err(self.syntax(
                            &value.span(),
                            format_args!("{at}`programs`: {bad:?} is not a program name (no spaces, brackets or colons; `*` for any run of characters)"),
                        ));
                    }
                }
                "other_programs" => {
                    other_programs = Some((
                        match self.string(value, "other_programs", &at)?.as_str() {
                            "skip" => false,
                            "read-with-tag" => true,
                            other => {
                                return Err(self.syntax(
                                    &value.span(),
                                    format_args!("{at}`other_programs` is \"skip\" (the default) or \"read-with-tag\", not {other:?}"),
                                ));
                            }
                        },
                        value.span(),
                    ));
                }
                "modes" => {
                    modes_line = self.line(value.span().start);
                    let DeValue::Table(table) = value.get_ref() else {
                        return Err(self.syntax(
                            &value.span(),
                            format_args!("{at}`modes` must be a table of tag lists such as {{ normal = [], aggressive = [\"ddos\"] }}, not {}", value.get_ref().type_str()),
                        ));
                    };
                    for (mode, tags) in Self::entries(table) {
                        let tags = self.strings(tags, &format!("modes.{}", mode.get_ref()), &at)?;
                        modes.push((mode.get_ref().to_string(), tags));
                    }
                }
                "default_mode" => {
                    default_mode = Some((
                        self.string(value, "default_mode", &at)?,
                        self.line(value.span().start),
                    ));
                }
                "tags" => {
                    return Err(self.syntax(
                        &key.span(),
                        format_args!(
                            "{at}`tags` belong on rules ([[ruleset.rule]]), not on the ruleset"
                        ),
                    ));
                }
                "rule" => {
                    for (rule_span, rule) in
                        self.tables(value, &format!("{at}`rule`"), "[[ruleset.rule]]")?
                    {
                        rules.push(self.rule(rule_span, rule, named.as_ref().map(|n| &n.0))?);
                    }
                }
                name if MATCH_KEYS.contains(&name) => first.key(self, name, value, &at)?,
                name => {
                    return Err(self.syntax(
                        &key.span(),
                        format_args!(
                            "{at}unknown key `{name}`; a ruleset takes name, programs, other_programs, modes, default_mode, {} and [[ruleset.rule]] tables",
                            MATCH_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        let Some((name, name_line)) = named else {
            return Err(self.syntax(&span, "ruleset: missing `name`"));
        };
        // With programs, the prefix layer is the first match: a `match` then only narrows
        // it, on the message.
        if !programs.is_empty() && first.pattern.is_none() {
            first.pattern = Some((String::new(), self.line(span.start)));
        }
        let first = first.finish(self, &span, &at)?;
        if let Some(default) = &default_mode
            && !modes.iter().any(|(m, _)| *m == default.0)
        {
            return Err(self.syntax_at(
                default.1,
                format_args!("{at}`default_mode` {:?} is not one of its modes", default.0),
            ));
        }
        let default_mode = default_mode.or_else(|| {
            modes
                .iter()
                .find(|(m, _)| m == "normal")
                .or_else(|| modes.first())
                .map(|(m, _)| (m.clone(), modes_line))
        });
        for rule in &rules {
            if let Some(tag) = rule
                .matcher
                .tags
                .iter()
                .find(|tag| !modes.iter().any(|(_, tags)| tags.contains(tag)))
            {
                return Err(self.syntax_at(
                    rule.line,
                    format_args!("{at}rule {:?}: tag {tag:?} is in none of the ruleset's modes, so the rule never runs", rule.name),
                ));
            }
        }
        for (mode, tags) in &modes {
            if let Some(tag) = tags
                .iter()
                .find(|tag| !rules.iter().any(|r| r.matcher.tags.contains(tag)))
            {
                return Err(self.syntax_at(
                    modes_line,
                    format_args!("{at}mode {mode:?}: no rule has tag {tag:?}"),
                ));
            }
        }
        if let Some((_, span)) = other_programs.as_ref().filter(|_| programs.is_empty()) {
            return Err(self.syntax(
                span,
                format_args!(
                    "{at}`other_programs` needs `programs`: without them every line is read whole"
                ),
            ));
        }
        Ok(RawRuleset {
            first,
            line: self.line(span.start),
            name,
            name_line,
            rules,
            programs,
            other_programs: other_programs.is_some_and(|(read, _)| read),
            modes,
            default_mode,
        })
    }

    fn rule(
        &self,
        span: Range<usize>,
        table: &DeTable<'_>,
        ruleset: Option<&String>,
    ) -> Result<RawRule, RulesetError> {
        let ruleset =
            ruleset.map_or_else(|| "ruleset".to_owned(), |name| format!("ruleset {name:?}"));
        let named = self.name(table, &format!("{ruleset}, rule: "))?;
        let at = match &named {
            Some((name, _)) => format!("{ruleset}, rule {name:?}: "),
            None => format!("{ruleset}, rule: "),
        };
        let mut matcher = MatchBuilder::default();
        let mut tags = Vec::new();
        for (key, value) in Self::entries(table) {
            match key.get_ref().as_ref() {
                "name" => {}
                "tags" => tags = self.strings(value, "tags", &at)?,
                name if MATCH_KEYS.contains(&name) => matcher.key(self, name, value, &at)?,
                name => {
                    return Err(self.syntax(
                        &key.span(),
                        format_args!(
                            "{at}unknown key `{name}`; a rule takes name, tags, {}",
                            MATCH_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        let Some((name, _)) = named else {
            return Err(self.syntax(&span, format_args!("{at}missing `name`")));
        };
        let mut matcher = matcher.finish(self, &span, &at)?;
        matcher.tags = tags;
        Ok(RawRule {
            name,
            line: self.line(span.start),
            matcher,
        })
    }

    /// A pattern or template longer than the limit.
    fn check_length(
        &self,
        value: &Spanned<DeValue<'_>>,
        text: &str,
        at: &str,
    ) -> Result<(), RulesetError> {
        let max = self.limits.max_pattern_bytes;
        if text.len() > RulesetLimits::bytes(max) {
            return Err(RulesetError::Limit {
                path: self.path.to_path_buf(),
                line: Some(self.line(value.span().start)),
                limit: Limit::PatternBytes,
                max,
                what: format!("{at}a pattern of {} bytes", text.len()),
            });
        }
        Ok(())
    }
}

/// The keys of one match table, as they are read.
#[derive(Default)]
struct MatchBuilder {
    pattern: Option<(String, usize)>,
    target: Option<String>,
    ignore_case: bool,
    negated: bool,
    defaults: Vec<(String, String)>,
    score: Option<i64>,
    enabled: Option<bool>,
    last: bool,
    remember: Option<String>,
    recall: Option<String>,
    pending: Option<String>,
    settle: Option<String>,
    forget: Option<String>,
    distinct: Option<(Vec<String>, usize)>,
    distinct_score: Option<(i64, usize)>,
}

/// An integer key within -2^40..=2^40.
fn integer(
    doc: &Doc<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    at: &str,
) -> Result<i64, RulesetError> {
    let DeValue::Integer(number) = value.get_ref() else {
        return Err(doc.syntax(
            &value.span(),
            format_args!(
                "{at}`{key}` must be an integer, not {}",
                value.get_ref().type_str()
            ),
        ));
    };
    i64::from_str_radix(number.as_str(), number.radix())
        .ok()
        .filter(|s| s.unsigned_abs() <= 1 << 40)
        .ok_or_else(|| {
            doc.syntax(
                &value.span(),
                format_args!(
                    "{at}`{key}` {} is out of range: -2^40 to 2^40",
                    number.as_str()
                ),
            )
        })
}

impl MatchBuilder {
    fn key(
        &mut self,
        doc: &Doc<'_>,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        at: &str,
    ) -> Result<(), RulesetError> {
        match key {
            "match" => {
                let pattern = doc.string(value, key, at)?;
                doc.check_length(value, &pattern, at)?;
                self.pattern = Some((pattern, doc.line(value.span().start)));
            }
            "target" => {
                let target = doc.string(value, key, at)?;
                doc.check_length(value, &target, at)?;
                self.target = Some(target);
            }
            "remember" | "recall" | "pending" | "settle" | "forget" => {
                let template = doc.string(value, key, at)?;
                doc.check_length(value, &template, at)?;
                if !template.contains("${") {
                    return Err(doc.syntax(
                        &value.span(),
                        format_args!("{at}`{key}` {template:?} names no variable: a session key is a template such as '${{pid}}'"),
                    ));
                }
                let slot = match key {
                    "remember" => &mut self.remember,
                    "recall" => &mut self.recall,
                    "pending" => &mut self.pending,
                    "settle" => &mut self.settle,
                    _ => &mut self.forget,
                };
                *slot = Some(template);
            }
            "distinct" => {
                let templates = match value.get_ref() {
                    DeValue::String(_) => vec![doc.string(value, key, at)?],
                    _ => doc.strings(value, key, at)?,
                };
                if let Some(bad) = templates.iter().find(|t| !t.contains("${")) {
                    return Err(doc.syntax(
                        &value.span(),
                        format_args!("{at}`distinct` {bad:?} names no variable: it counts a captured value such as '${{user}}'"),
                    ));
                }
                for template in &templates {
                    doc.check_length(value, template, at)?;
                }
                self.distinct = Some((templates, doc.line(value.span().start)));
            }
            "distinct_score" => {
                self.distinct_score =
                    Some((integer(doc, key, value, at)?, doc.line(value.span().start)));
            }
            "ignore_case" => self.ignore_case = doc.boolean(value, key, at)?,
            "negated" => self.negated = doc.boolean(value, key, at)?,
            "enabled" => self.enabled = Some(doc.boolean(value, key, at)?),
            "last" => self.last = doc.boolean(value, key, at)?,
            "score" => self.score = Some(integer(doc, key, value, at)?),
            "defaults" => {
                let DeValue::Table(table) = value.get_ref() else {
                    return Err(doc.syntax(
                        &value.span(),
                        format_args!(
                            "{at}`defaults` must be a table of strings such as {{ kind = \"web\" }}, not {}",
                            value.get_ref().type_str()
                        ),
                    ));
                };
                for (name, text) in Doc::entries(table) {
                    let text = doc.string(text, &format!("defaults.{}", name.get_ref()), at)?;
                    self.defaults.push((name.get_ref().to_string(), text));
                }
            }
            _ => unreachable!("only MATCH_KEYS come here"),
        }
        Ok(())
    }

    fn finish(
        self,
        doc: &Doc<'_>,
        span: &Range<usize>,
        at: &str,
    ) -> Result<RawMatch, RulesetError> {
        let Some((pattern, line)) = self.pattern else {
            return Err(doc.syntax(span, format_args!("{at}missing `match`")));
        };
        let keyed = [
            &self.remember,
            &self.recall,
            &self.pending,
            &self.settle,
            &self.forget,
        ]
        .iter()
        .any(|k| k.is_some());
        if let Some((_, line)) = self.distinct.as_ref().filter(|_| !keyed) {
            return Err(doc.syntax_at(
                *line,
                format_args!("{at}`distinct` counts per session: give the rule a session key (remember, recall, pending, settle or forget)"),
            ));
        }
        if let Some((_, line)) = self.distinct_score.filter(|_| self.distinct.is_none()) {
            return Err(doc.syntax_at(
                line,
                format_args!(
                    "{at}`distinct_score` needs `distinct`: the value whose distinct count it reads"
                ),
            ));
        }
        Ok(RawMatch {
            pattern,
            line,
            target: self.target,
            ignore_case: self.ignore_case,
            negated: self.negated,
            defaults: self.defaults,
            score: self.score,
            enabled: self.enabled.unwrap_or(true),
            last: self.last,
            tags: Vec::new(),
            remember: self.remember,
            recall: self.recall,
            pending: self.pending,
            settle: self.settle,
            forget: self.forget,
            distinct: self.distinct.map(|(d, _)| d).unwrap_or_default(),
            distinct_score: self.distinct_score.map(|(score, _)| score),
        })
    }
}

/// Ruleset files read and checked, not compiled yet: what [`scan`] gives.
#[derive(Debug)]
pub struct Scanned {
    files: Vec<RawFile>,
    limits: RulesetLimits,
}

/// A ruleset's name and where it is defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesetName<'a> {
    pub name: &'a str,
    pub file: &'a Path,
    pub line: usize,
    /// `enabled = false` on the ruleset: it is never loaded.
    pub enabled: bool,
    /// Its modes' names.
    pub modes: Vec<&'a str>,
}

impl Scanned {
    /// Every ruleset in load order, disabled ones included.
    pub fn names(&self) -> impl Iterator<Item = RulesetName<'_>> {
        self.files.iter().flat_map(|file| {
            file.rulesets.iter().map(|ruleset| RulesetName {
                name: &ruleset.name,
                file: &file.path,
                line: ruleset.name_line,
                enabled: ruleset.first.enabled,
                modes: ruleset.modes.iter().map(|(m, _)| m.as_str()).collect(),
            })
        })
    }

    /// Compile every enabled ruleset, in order.
    ///
    /// # Errors
    /// A bad pattern, one over `max_regex_bytes` compiled, all of them together over
    /// `max_compiled_bytes`, a ruleset that can never score or never name a source; each with
    /// its file and line.
    pub fn compile(self) -> Result<Vec<Ruleset>, RulesetError> {
        let mut budget = Budget {
            limits: self.limits,
            used: 0,
        };
        let mut out = Vec::new();
        for file in self.files {
            for ruleset in file.rulesets {
                if let Some(compiled) = compile_ruleset(&file.path, ruleset, &mut budget)? {
                    out.push(compiled);
                }
            }
        }
        Ok(out)
    }
}

/// What the compiled patterns measured so far take.
struct Budget {
    limits: RulesetLimits,
    used: usize,
}

/// Where a pattern is, for its errors.
struct At<'a> {
    path: &'a Path,
    line: usize,
    ruleset: &'a str,
    rule: Option<&'a str>,
}

impl At<'_> {
    fn invalid(&self, message: String) -> RulesetError {
        RulesetError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line,
            ruleset: self.ruleset.to_owned(),
            rule: self.rule.map(str::to_owned),
            message,
        }
    }

    fn limit(&self, limit: Limit, max: u32, what: impl fmt::Display) -> RulesetError {
        RulesetError::Limit {
            path: self.path.to_path_buf(),
            line: Some(self.line),
            limit,
            max,
            what: format!("{}: {what}", context(self.ruleset, self.rule)),
        }
    }
}

impl Budget {
    fn config(&self) -> meta::Config {
        let max = RulesetLimits::bytes(self.limits.max_regex_bytes);
        meta::Config::new()
            .nfa_size_limit(Some(max))
            // The one-pass DFA is a speed-up that is skipped when it would not fit: it gets
            // half, so it cannot push a pattern that compiles over its limit on its own.
            .onepass_size_limit(Some(max / 2))
            .hybrid_cache_capacity(max)
    }

    /// Compile `pattern`, count it, refuse it over either limit.
    fn regex(
        &mut self,
        pattern: &str,
        ignore_case: bool,
        config: meta::Config,
        at: &At<'_>,
    ) -> Result<meta::Regex, RulesetError> {
        let built = meta::Builder::new()
            .configure(config)
            .syntax(syntax::Config::new().case_insensitive(ignore_case))
            .build(pattern);
        let regex = match built {
            Ok(regex) => regex,
            Err(err) if err.size_limit().is_some() => {
                return Err(at.limit(
                    Limit::RegexBytes,
                    self.limits.max_regex_bytes,
                    "compiled, the pattern needs more",
                ));
            }
            Err(err) => {
                let why = err
                    .syntax_error()
                    .map_or_else(|| err.to_string(), ToString::to_string);
                return Err(at.invalid(format!("bad regular expression: {why}")));
            }
        };
        self.count(regex.memory_usage(), at)?;
        Ok(regex)
    }

    fn count(&mut self, size: usize, at: &At<'_>) -> Result<(), RulesetError> {
        if size > RulesetLimits::bytes(self.limits.max_regex_bytes) {
            return Err(at.limit(
                Limit::RegexBytes,
                self.limits.max_regex_bytes,
                format_args!("compiled, the pattern takes {size} bytes"),
            ));
        }
        self.used = self.used.saturating_add(size);
        if self.used > RulesetLimits::bytes(self.limits.max_compiled_bytes) {
            return Err(at.limit(
                Limit::CompiledBytes,
                self.limits.max_compiled_bytes,
                format_args!(
                    "with this pattern the compiled rulesets take {} bytes",
                    self.used
                ),
            ));
        }
        Ok(())
    }

    /// The rules' patterns as one set, when they fit (it is only a shortcut).
    fn set(&mut self, patterns: &[String]) -> Option<meta::Regex> {
        // As `regex::RegexSet`: every pattern that matches is reported, none captures.
        let set = meta::Builder::new()
            .configure(
                self.config()
                    .match_kind(MatchKind::All)
                    .which_captures(regex_automata::nfa::thompson::WhichCaptures::None),
            )
            .build_many(patterns)
            .ok()?;
        let size = set.memory_usage();
        let fits = size <= RulesetLimits::bytes(self.limits.max_regex_bytes)
            && self.used.saturating_add(size)
                <= RulesetLimits::bytes(self.limits.max_compiled_bytes);
        fits.then(|| {
            self.used += size;
            set
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Second pass: compiled rulesets and running them.

/// A compiled regex's named groups: (group index, name).
fn group_names(regex: &meta::Regex) -> Vec<(usize, String)> {
    regex
        .group_info()
        .pattern_names(PatternID::ZERO)
        .enumerate()
        .filter_map(|(index, name)| name.map(|name| (index, name.to_owned())))
        .collect()
}

/// One compiled match.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pattern: String,
    regex: meta::Regex,
    groups: Vec<(usize, String)>,
    target: Option<String>,
    negated: bool,
    defaults: Vec<(String, String)>,
    pub score: Option<i64>,
    pub last: bool,
    /// `target` is exactly `${name}`: this name.
    whole_variable: Option<String>,
    /// The pattern ends in `(?P<NAME>.*)$`: the part before it, its groups, and NAME. The tail
    /// is then the rest of the haystack after the part's match, which spares a capture engine
    /// the walk over the whole line (same leftmost-first result: `.*$` takes any rest of a
    /// line).
    tail: Option<Tail>,
    ignore_case: bool,
    /// A literal every match contains (e.g. the program name of a first match): a haystack
    /// without it is passed over with a substring search, before any automaton's cache is
    /// touched. With many rulesets most of them do not apply to a line, and this is what
    /// they cost.
    required: Option<Prefilter>,
    /// The modes' tags that switch it on (none: always on).
    tags: Vec<String>,
    remember: Option<String>,
    recall: Option<String>,
    pending: Option<String>,
    settle: Option<String>,
    forget: Option<String>,
    distinct: Vec<String>,
    distinct_score: Option<i64>,
    /// For a pattern whose only capture is `address`, between a fixed character outside its
    /// class and a literal: the address found without a capture engine (see [`FastAddress`]).
    fast_address: Option<FastAddress>,
    /// For a pattern that captures `address`: the same pattern with greedy and lazy swapped,
    /// and the `address` group's index in each. Greedy repetitions put the address at its
    /// last possible place, lazy ones at its first; when the two differ, the fixed text
    /// around the address occurs more than once and the line alone cannot say which address
    /// the daemon wrote.
    swapped: Option<Swapped>,
}

#[derive(Clone, Debug)]
struct Swapped {
    regex: meta::Regex,
    group: usize,
    /// The literal the pattern requires right after the address (` port ` in sshd's lines):
    /// a second place for the address needs a second copy of it, so a haystack holding it
    /// once is not searched again.
    after: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
struct Tail {
    head: meta::Regex,
    groups: Vec<(usize, String)>,
    name: String,
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
    /// Matched with a score, but the fixed text around the address occurs more than once in
    /// the line, so any of the places could be the one the daemon wrote: nothing is scored.
    /// The address at its first and at its last possible place.
    Ambiguous {
        score: i64,
        first: String,
        last: String,
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
    /// The programs whose messages it reads; empty: whole lines.
    programs: Vec<String>,
    /// The lines of other programs (or of none) are read too, from their tag on: fail2ban's
    /// prefix lets the daemon's name be missing and its patterns read a tag such as
    /// `imap-login:` themselves (an imported filter keeps that).
    other_programs: bool,
    /// Mode name → its tags.
    modes: Vec<(String, Vec<String>)>,
    /// The mode it runs in (a name in `modes`), and the one it runs in unless told.
    mode: Option<String>,
    default_mode: Option<String>,
    /// Per rule: on in this mode.
    active: Vec<bool>,
    /// The prefix's variables (msg, program, pid, host) that some template reads.
    prefix_variables: Vec<&'static str>,
    /// When every rule reads the same one-variable target and sets no defaults (the usual
    /// shape), all rule patterns in one set: one pass over the target says which rules can
    /// match, and only those run their captures.
    prefilter: Option<SharedPass>,
    /// It has programs and no `match` of its own: its first match takes every message of its
    /// programs and does nothing else (no capture, key or score), so a line no rule can take
    /// is done before its variables are made.
    first_is_the_prefix: bool,
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

/// Match `regex` on `haystack`, putting its named `groups` into `vars`. Where the match ends.
/// Where `address` started, when it was captured, goes to `address_at`.
fn capture_into(
    regex: &meta::Regex,
    groups: &[(usize, String)],
    haystack: &str,
    vars: &mut Vars,
    address_at: &mut Option<usize>,
) -> Option<usize> {
    let mut captures = regex.create_captures();
    regex.captures(haystack, &mut captures);
    let end = captures.get_match()?.end();
    for (index, name) in groups {
        if let Some(span) = captures.get_group(*index) {
            if name == "address" {
                *address_at = Some(span.start);
            }
            let _: Option<String> = vars.insert(name.clone(), haystack[span.range()].to_owned());
        }
    }
    Some(end)
}

/// The longest literal that every match of `hir` contains, if there is one: a literal, or
/// the longest one required by a part of a sequence, through groups and repetitions of at
/// least one. (Alternations and classes require none; case-insensitive letters are classes.)
fn required_literal(hir: &Hir) -> Option<Vec<u8>> {
    match hir.kind() {
        HirKind::Literal(literal) => Some(literal.0.to_vec()),
        HirKind::Capture(capture) => required_literal(&capture.sub),
        HirKind::Repetition(repetition) if repetition.min >= 1 => required_literal(&repetition.sub),
        HirKind::Concat(parts) => parts
            .iter()
            .filter_map(required_literal)
            .max_by_key(Vec::len),
        HirKind::Empty
        | HirKind::Class(_)
        | HirKind::Look(_)
        | HirKind::Repetition(_)
        | HirKind::Alternation(_) => None,
    }
}

/// Literals one of which every match of `hir` contains (at most 64, each at least 3 bytes):
/// the best of its parts' sets, or of the literals that start a rest of a sequence (`" 40[13]`
/// expands to `" 401`, `" 403`); an alternation needs a set from every branch. A haystack
/// holding none of them cannot match, which a multi-literal search tells faster than an
/// automaton.
fn required_literals(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    const MAX: usize = 64;
    const SHORTEST: usize = 3;
    // Longer shortest literal first, then fewer.
    let better = |a: &Vec<Vec<u8>>, b: &Vec<Vec<u8>>| {
        let shortest = |set: &Vec<Vec<u8>>| set.iter().map(Vec::len).min().unwrap_or(0);
        (shortest(a), std::cmp::Reverse(a.len())) > (shortest(b), std::cmp::Reverse(b.len()))
    };
    let usable = |set: Vec<Vec<u8>>| {
        (!set.is_empty() && set.len() <= MAX && set.iter().all(|l| l.len() >= SHORTEST))
            .then_some(set)
    };
    match hir.kind() {
        HirKind::Literal(literal) => usable(vec![literal.0.to_vec()]),
        HirKind::Capture(capture) => required_literals(&capture.sub),
        HirKind::Repetition(repetition) if repetition.min >= 1 => {
            required_literals(&repetition.sub)
        }
        HirKind::Alternation(branches) => {
            let mut union: Vec<Vec<u8>> = Vec::new();
            for branch in branches {
                union.extend(required_literals(branch)?);
            }
            union.sort();
            union.dedup();
            usable(union)
        }
        HirKind::Concat(parts) => {
            let mut best: Option<Vec<Vec<u8>>> = None;
            let mut consider = |set: Option<Vec<Vec<u8>>>| {
                if let Some(set) = set
                    && best.as_ref().is_none_or(|b| better(&set, b))
                {
                    best = Some(set);
                }
            };
            for (at, part) in parts.iter().enumerate() {
                consider(required_literals(part));
                let rest = Hir::concat(parts[at..].to_vec());
                let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&rest);
                consider(
                    seq.literals()
                        .and_then(|ls| usable(ls.iter().map(|l| l.as_bytes().to_vec()).collect())),
                );
            }
            best
        }
        HirKind::Empty | HirKind::Class(_) | HirKind::Look(_) | HirKind::Repetition(_) => None,
    }
}

/// A shortcut for the common shape `... X(?P<address>CLASS...)LITERAL ...`: when the whole
/// pattern matches (a DFA says so, no captures) and LITERAL occurs once in the haystack, the
/// address must end right before it, and since X is outside CLASS it must start right after
/// the last character outside CLASS before it. So the address is that run, checked against
/// the address's own pattern; anything else falls back to the capture engine.
#[derive(Clone, Debug)]
struct FastAddress {
    /// The bytes the address may hold (ASCII only).
    class: [bool; 128],
    after: Vec<u8>,
    /// The address's own pattern, anchored both ends.
    whole: meta::Regex,
}

impl FastAddress {
    /// Where the address is, when the shortcut applies.
    fn find(&self, haystack: &str) -> Option<Range<usize>> {
        let bytes = haystack.as_bytes();
        let mut places = bytes
            .windows(self.after.len())
            .enumerate()
            .filter(|(_, window)| *window == self.after.as_slice())
            .map(|(at, _)| at);
        let end = places.next()?;
        if places.next().is_some() {
            return None;
        }
        let start = bytes[..end]
            .iter()
            .rposition(|b| !self.in_class(*b))
            .map_or(0, |at| at + 1);
        // At the very start there is no character outside the class before it: not our shape.
        (start > 0 && start < end && self.whole.is_match(&haystack[start..end]))
            .then_some(start..end)
    }

    fn in_class(&self, byte: u8) -> bool {
        self.class.get(usize::from(byte)).copied().unwrap_or(false)
    }
}

/// The ASCII bytes a class may match, when all it matches is ASCII.
fn ascii_class(class: &regex_syntax::hir::Class, into: &mut [bool; 128]) -> bool {
    match class {
        regex_syntax::hir::Class::Unicode(unicode) => unicode.ranges().iter().all(|range| {
            let (start, end) = (u32::from(range.start()), u32::from(range.end()));
            end < 128 && {
                (start..=end).for_each(|c| into[c as usize] = true);
                true
            }
        }),
        regex_syntax::hir::Class::Bytes(bytes) => bytes.ranges().iter().all(|range| {
            range.end() < 128 && {
                (range.start()..=range.end()).for_each(|c| into[usize::from(c)] = true);
                true
            }
        }),
    }
}

/// The address group's body as classes and their repetitions only: the bytes they allow.
fn address_body_class(hir: &Hir, into: &mut [bool; 128]) -> bool {
    match hir.kind() {
        HirKind::Class(class) => ascii_class(class, into),
        HirKind::Repetition(repetition) => address_body_class(&repetition.sub, into),
        HirKind::Concat(parts) => parts.iter().all(|part| address_body_class(part, into)),
        HirKind::Capture(capture) => address_body_class(&capture.sub, into),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Look(_) | HirKind::Alternation(_) => false,
    }
}

/// The `address` capture and its neighbours in the sequence holding it (through groups
/// around that sequence): the part before it and the part after it, when there are any.
fn address_in_sequence(hir: &Hir) -> Option<(Option<&Hir>, &Hir, Option<&Hir>)> {
    match hir.kind() {
        HirKind::Concat(parts) => {
            let at = parts.iter().position(|part| {
                matches!(part.kind(), HirKind::Capture(c) if c.name.as_deref() == Some("address"))
            });
            match at {
                Some(at) => Some((
                    at.checked_sub(1).map(|before| &parts[before]),
                    &parts[at],
                    parts.get(at + 1),
                )),
                None => parts.iter().find_map(address_in_sequence),
            }
        }
        HirKind::Capture(capture) => address_in_sequence(&capture.sub),
        HirKind::Repetition(_)
        | HirKind::Alternation(_)
        | HirKind::Empty
        | HirKind::Literal(_)
        | HirKind::Class(_)
        | HirKind::Look(_) => None,
    }
}

/// (class of the address, the byte before the group, the literal after it, the group's body)
/// when the address capture sits in a sequence between a literal and a literal.
fn address_shape(hir: &Hir) -> Option<([bool; 128], u8, Vec<u8>, Hir)> {
    let (before, capture, after) = address_in_sequence(hir)?;
    let (HirKind::Literal(before), HirKind::Capture(capture), HirKind::Literal(after)) =
        (before?.kind(), capture.kind(), after?.kind())
    else {
        return None;
    };
    let mut class = [false; 128];
    address_body_class(&capture.sub, &mut class).then(|| {
        (
            class,
            *before.0.last().unwrap_or(&0),
            after.0.to_vec(),
            (*capture.sub).clone(),
        )
    })
}

/// The literal that directly follows the `address` capture in the sequence holding it, if
/// there is one.
fn literal_after_address(hir: &Hir) -> Option<Vec<u8>> {
    match address_in_sequence(hir)?.2?.kind() {
        HirKind::Literal(literal) => Some(literal.0.to_vec()),
        _ => None,
    }
}

/// Whether nothing before the `address` group of `pattern` can match text of more than one
/// length (no repetition, optional part or alternation), so the address can start at one
/// place only and the greedy-lazy comparison has nothing to find. Conservative: anything
/// unclear (escapes, classes holding such characters) counts as variable.
fn address_at_a_fixed_place(pattern: &str) -> bool {
    let Some(at) = ["(?P<address>", "(?<address>"]
        .iter()
        .find_map(|open| pattern.find(open))
    else {
        return false;
    };
    let before = &pattern.as_bytes()[..at];
    let mut i = 0;
    while i < before.len() {
        match before[i] {
            b'\\' => return false,
            b'*' | b'+' | b'{' | b'|' | b'[' => return false,
            // `(?` opens a group or sets flags; any other `?` makes something optional.
            b'?' if i == 0 || before[i - 1] != b'(' => return false,
            _ => {}
        }
        i += 1;
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
    fn compile(
        name: &str,
        raw: RawMatch,
        budget: &mut Budget,
        at: &At<'_>,
    ) -> Result<Self, RulesetError> {
        let whole_variable = raw.target.as_deref().and_then(|t| {
            t.strip_prefix("${")
                .and_then(|rest| rest.strip_suffix('}'))
                .filter(|name| !name.contains(['$', '{', '}']))
                .map(str::to_owned)
        });
        let tail_at = ["(?P<", "(?<"].iter().find_map(|open| {
            let body = raw.pattern.strip_suffix(">.*)$")?;
            let at = body.rfind(open)?;
            let name = &body[at + open.len()..];
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| (at, name.to_owned()))
        });
        // With the tail shortcut the whole pattern only runs for a tail holding a newline:
        // it goes without the one-pass DFA, which is most of a long pattern's size.
        let config = if tail_at.is_some() {
            budget.config().onepass(false)
        } else {
            budget.config()
        };
        let regex = budget.regex(&raw.pattern, raw.ignore_case, config, at)?;
        let tail = match tail_at {
            Some((cut, name)) => {
                let head = budget.regex(&raw.pattern[..cut], raw.ignore_case, budget.config(), at);
                // A head that does not compile on its own (e.g. it cuts a group open) just
                // means no shortcut; the whole pattern compiled.
                match head {
                    Ok(head) => Some(Tail {
                        groups: group_names(&head),
                        head,
                        name,
                    }),
                    Err(RulesetError::Invalid { .. }) => None,
                    Err(err) => return Err(err),
                }
            }
            None => None,
        };
        let required = syntax::parse_with(
            &raw.pattern,
            &syntax::Config::new().case_insensitive(raw.ignore_case),
        )
        .ok()
        .and_then(|hir| required_literal(&hir))
        .and_then(|literal| Prefilter::new(MatchKind::LeftmostFirst, &[literal]));
        if let Some(required) = &required {
            budget.count(required.memory_usage(), at)?;
        }
        let groups = group_names(&regex);
        let swapped = match groups.iter().find(|(_, n)| n == "address") {
            // Nothing that repeats or alternates before the address: it has one place only.
            Some(_) if address_at_a_fixed_place(&raw.pattern) => None,
            Some(&(original_group, _)) => {
                let swapped = budget.regex(
                    &format!("(?U)(?:{})", raw.pattern),
                    raw.ignore_case,
                    budget.config().onepass(false),
                    at,
                )?;
                let group = group_names(&swapped)
                    .into_iter()
                    .find(|(_, n)| n == "address")
                    .map_or(original_group, |(i, _)| i);
                let after = syntax::parse_with(
                    &raw.pattern,
                    &syntax::Config::new().case_insensitive(raw.ignore_case),
                )
                .ok()
                .and_then(|hir| literal_after_address(&hir))
                .filter(|literal| !literal.is_empty());
                Some(Swapped {
                    regex: swapped,
                    group,
                    after,
                })
            }
            None => None,
        };
        // The shortcut needs the address to be the only capture, its class all ASCII and
        // without the byte before it, and a literal after it.
        let fast_address = if groups.len() == 1 && groups[0].1 == "address" && !raw.ignore_case {
            syntax::parse_with(&raw.pattern, &syntax::Config::new())
                .ok()
                .and_then(|hir| address_shape(&hir))
                .filter(|(class, before, after, _)| {
                    !after.is_empty() && before.is_ascii() && !class[usize::from(*before)]
                })
                .and_then(|(class, _, after, body)| {
                    let whole = meta::Builder::new()
                        .configure(budget.config())
                        .build_from_hir(&Hir::concat(vec![
                            Hir::look(regex_syntax::hir::Look::Start),
                            body,
                            Hir::look(regex_syntax::hir::Look::End),
                        ]))
                        .ok()?;
                    budget.count(whole.memory_usage(), at).ok()?;
                    Some(FastAddress {
                        class,
                        after,
                        whole,
                    })
                })
        } else {
            None
        };
        Ok(Self {
            fast_address,
            tags: raw.tags,
            remember: raw.remember,
            recall: raw.recall,
            pending: raw.pending,
            settle: raw.settle,
            forget: raw.forget,
            distinct: raw.distinct,
            distinct_score: raw.distinct_score,
            swapped,
            name: name.to_owned(),
            required,
            groups,
            pattern: raw.pattern,
            ignore_case: raw.ignore_case,
            tail,
            whole_variable,
            regex,
            target: raw.target,
            negated: raw.negated,
            defaults: raw.defaults,
            score: raw.score,
            last: raw.last,
        })
    }

    /// Whether a set's "it matches" is all a run of it would give: it reads the line, captures
    /// nothing, sets nothing and is not negated.
    fn decided_by_a_pass(&self) -> bool {
        self.target.is_none()
            && self.groups.is_empty()
            && self.tail.is_none()
            && self.defaults.is_empty()
            && !self.negated
    }

    /// Its session key templates, in the order a session is looked for.
    fn session_keys(&self) -> impl Iterator<Item = &String> {
        [
            &self.remember,
            &self.recall,
            &self.pending,
            &self.settle,
            &self.forget,
        ]
        .into_iter()
        .flatten()
    }

    fn captures_address(&self) -> bool {
        self.groups.iter().any(|(_, n)| n == "address")
            || self.defaults.iter().any(|(k, _)| k == "address")
            || self.recall.is_some()
            || self.settle.is_some()
    }

    /// After the match succeeded: take a remembered address, keep this one, park this
    /// line's score for a later line or add what was parked. A `recall` that finds nothing
    /// (and no `pending` to park the score) makes the rule not succeed after all.
    fn correlate(
        &self,
        ruleset: &str,
        vars: &mut Vars,
        memory: &mut Option<Memory<'_>>,
    ) -> Correlated {
        let Some(memory) = memory else {
            // No memory (a single line on its own): a recall finds nothing, a pending score
            // waits for nothing and counts nothing.
            let unnamed = !vars.contains_key("address");
            return if self.recall.is_some() && self.pending.is_none() && unnamed {
                Correlated::Fails
            } else {
                Correlated::Succeeds {
                    parked: self.pending.is_some() && unnamed,
                    settled: 0,
                }
            };
        };
        // A variable the line did not capture: no session to speak of.
        let key = |template: &str, vars: &Vars| {
            let key = substitute(template, vars);
            (!key.contains("${")).then_some(key)
        };
        if let Some(template) = &self.recall
            && !vars.contains_key("address")
            && let Some(key) = key(template, vars)
            && let Some(address) = memory.sessions.recall(ruleset, &key, memory.now_ms)
        {
            let _: Option<String> = vars.insert("address".to_owned(), address);
        }
        let has_address = vars.contains_key("address");
        if self.recall.is_some() && self.pending.is_none() && !has_address {
            return Correlated::Fails;
        }
        let mut parked = false;
        if let Some(template) = &self.pending
            && !has_address
            && let Some(key) = key(template, vars)
        {
            memory
                .sessions
                .park(ruleset, &key, self.score.unwrap_or(0), memory.now_ms);
            parked = true;
        }
        let mut settled = 0;
        if let Some(template) = &self.settle
            && has_address
            && let Some(key) = key(template, vars)
        {
            settled = memory.sessions.settle(ruleset, &key, memory.now_ms);
        }
        if let Some(template) = &self.remember
            && let Some(key) = key(template, vars)
            && let Some(address) = vars.get("address")
        {
            let address = address.clone();
            memory
                .sessions
                .remember(ruleset, &key, &address, memory.now_ms);
        }
        // One session trying several user names: each of its lines from then on counts
        // (fail2ban's sshd filter does the same with <F-USER>).
        if !self.distinct.is_empty()
            && let Some(session) = self.session_keys().find_map(|template| key(template, vars))
            && let Some(value) = self
                .distinct
                .iter()
                .find_map(|template| key(template, vars))
            && memory
                .sessions
                .name(ruleset, &session, &value, memory.now_ms)
                > 1
        {
            settled = settled.saturating_add(self.distinct_score.unwrap_or(0));
        }
        if let Some(template) = &self.forget
            && let Some(key) = key(template, vars)
        {
            let _: bool = memory.sessions.forget(ruleset, &key, memory.now_ms);
        }
        Correlated::Succeeds { parked, settled }
    }

    /// Run against `line` (or the target template), updating `vars`. Whether it succeeded;
    /// `ambiguous` gets the address at its first and last possible place when they differ.
    fn run(&self, line: &str, vars: &mut Vars, ambiguous: &mut Option<(String, String)>) -> bool {
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
        let mut address_at = None;
        let matched = if self.required.as_ref().is_some_and(|required| {
            required
                .find(haystack.as_bytes(), Span::from(0..haystack.len()))
                .is_none()
        }) {
            false
        } else if let Some(tail) = &self.tail {
            let end = if tail.groups.is_empty() {
                tail.head.find(haystack).map(|m| m.end())
            } else {
                capture_into(&tail.head, &tail.groups, haystack, vars, &mut address_at)
            };
            match end {
                // `.` stops at a newline: so does the tail.
                Some(end) if !haystack.as_bytes()[end..].contains(&b'\n') => {
                    let _: Option<String> =
                        vars.insert(tail.name.clone(), haystack[end..].to_owned());
                    true
                }
                Some(_) => capture_into(&self.regex, &self.groups, haystack, vars, &mut address_at)
                    .is_some(),
                None => false,
            }
        } else if self.groups.is_empty() {
            self.regex.is_match(haystack)
        } else if let Some(fast) = &self.fast_address
            && let Some(found) = fast.find(haystack)
        {
            // Only a match of the whole pattern makes the run an address.
            self.regex.is_match(haystack) && {
                address_at = Some(found.start);
                let _: Option<String> =
                    vars.insert("address".to_owned(), haystack[found].to_owned());
                true
            }
        } else {
            capture_into(&self.regex, &self.groups, haystack, vars, &mut address_at).is_some()
        };
        if matched
            && !self.negated
            && let Some(swapped) = &self.swapped
            && let Some(last) = address_at
            && let Some(places) = swapped.places(
                haystack,
                last,
                vars.get("address").map_or("", String::as_str),
            )
        {
            *ambiguous = Some(places);
        }
        if let Some((name, value)) = taken {
            // A capture of the same name, made just now, wins.
            vars.insert_if_absent(name, value);
        }
        matched != self.negated
    }
}

/// What a match's session keys did to it.
enum Correlated {
    /// A `recall` found no address: the match does not count.
    Fails,
    /// `parked`: its score waits under a `pending` key; `settled`: what the session adds to
    /// this line's score (scores parked before, a `distinct_score`).
    Succeeds { parked: bool, settled: i64 },
}

thread_local! {
    /// Pattern sets of the shared passes, kept between lines instead of allocated per line.
    static SETS: std::cell::RefCell<Vec<PatternSet>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A pattern set taken from this thread's [`SETS`] and given back when dropped.
struct ReusedSet(PatternSet);

impl ReusedSet {
    fn take(capacity: usize) -> Self {
        // Sets of several sizes are in use (a first pass, each ruleset's shared pass): the
        // one of this size, not just the last one given back.
        let set = SETS
            .with(|sets| {
                let mut sets = sets.borrow_mut();
                let at = sets.iter().rposition(|set| set.capacity() == capacity)?;
                Some(sets.swap_remove(at))
            })
            .map_or_else(
                || PatternSet::new(capacity),
                |mut set| {
                    if !set.is_empty() {
                        set.clear();
                    }
                    set
                },
            );
        Self(set)
    }

    fn get(&mut self) -> &mut PatternSet {
        &mut self.0
    }

    fn view(&self) -> &PatternSet {
        &self.0
    }
}

impl Drop for ReusedSet {
    fn drop(&mut self) {
        // An empty set allocates nothing.
        let set = std::mem::replace(&mut self.0, PatternSet::new(0));
        SETS.with(|sets| {
            let mut sets = sets.borrow_mut();
            // A handful per thread: one per ruleset in flight, never many.
            if sets.len() < 64 {
                sets.push(set);
            }
        });
    }
}

/// Session memory lent to one line's run, and the line's time.
pub struct Memory<'a> {
    pub sessions: &'a mut Sessions,
    pub now_ms: u64,
}

impl Swapped {
    /// The address at its first and last possible place in `haystack`, when they differ;
    /// `last` is where the pattern as written (greedy) put it, `last_text` what it took.
    fn places(&self, haystack: &str, last: usize, last_text: &str) -> Option<(String, String)> {
        // Overlapping copies count: every place the literal could start.
        if let Some(after) = &self.after
            && haystack
                .as_bytes()
                .windows(after.len())
                .filter(|window| window == after)
                .nth(1)
                .is_none()
        {
            return None;
        }
        let mut captures = self.regex.create_captures();
        self.regex.captures(haystack, &mut captures);
        let first = captures.get_group(self.group)?;
        (first.start != last).then(|| (haystack[first.range()].to_owned(), last_text.to_owned()))
    }
}

impl Ruleset {
    /// Run the ruleset over one line. Returns the outcome and the names of the matches that
    /// succeeded (for `check`'s statistics).
    pub fn apply(&self, line: &str) -> (Outcome, Vec<&str>) {
        let (outcome, hits) = self.apply_indexed(line);
        (
            outcome,
            hits.into_iter().map(|i| self.match_name(i)).collect(),
        )
    }

    /// [`Ruleset::apply`], the matches that succeeded given by their index in
    /// [`Ruleset::match_names`]: counters kept per index need no name per hit.
    pub fn apply_indexed(&self, line: &str) -> (Outcome, Vec<usize>) {
        if self.programs.is_empty() {
            self.apply_prefixed(line, None)
        } else {
            self.apply_prefixed(line, Some(&prefix::parse(line)))
        }
    }

    /// [`Ruleset::apply_indexed`] with the line's prefix parsed already (once for all
    /// rulesets); `None` is fine for a ruleset that reads whole lines.
    pub fn apply_prefixed(
        &self,
        line: &str,
        prefixed: Option<&Prefixed<'_>>,
    ) -> (Outcome, Vec<usize>) {
        self.apply_with(line, prefixed, None)
    }

    /// [`Ruleset::apply_prefixed`] with session memory for `remember` and `recall` (without
    /// it, `recall` finds nothing and `remember` keeps nothing).
    pub fn apply_with(
        &self,
        line: &str,
        prefixed: Option<&Prefixed<'_>>,
        memory: Option<Memory<'_>>,
    ) -> (Outcome, Vec<usize>) {
        let (outcome, hits, _) = self.run(line, prefixed, memory, false, false);
        (outcome, hits)
    }

    /// [`Ruleset::apply_with`] for a line on which a [`FirstPass`] found its first match to
    /// hold: a capture-free first match is not run again.
    pub fn apply_passed(
        &self,
        line: &str,
        prefixed: Option<&Prefixed<'_>>,
        memory: Option<Memory<'_>>,
    ) -> (Outcome, Vec<usize>) {
        let (outcome, hits, _) = self.run(line, prefixed, memory, false, true);
        (outcome, hits)
    }

    /// [`Ruleset::apply_with`], and the variables the line left (name, value), for `check
    /// --explain`.
    pub fn explain(
        &self,
        line: &str,
        prefixed: Option<&Prefixed<'_>>,
        memory: Option<Memory<'_>>,
    ) -> (Outcome, Vec<usize>, Vec<(String, String)>) {
        let (outcome, hits, vars) = self.run(line, prefixed, memory, true, false);
        let mut vars = vars.0;
        // The message is the line's; the rest is what the rules captured.
        vars.retain(|(name, _)| name != "msg");
        vars.sort();
        (outcome, hits, vars)
    }

    fn run(
        &self,
        line: &str,
        prefixed: Option<&Prefixed<'_>>,
        mut memory: Option<Memory<'_>>,
        all_variables: bool,
        first_passed: bool,
    ) -> (Outcome, Vec<usize>, Vars) {
        let mut vars = Vars::default();
        let mut haystack = line;
        let mut early: Option<ReusedSet> = None;
        if !self.programs.is_empty() {
            let parsed;
            let prefixed = match prefixed {
                Some(prefixed) => prefixed,
                None => {
                    parsed = prefix::parse(line);
                    &parsed
                }
            };
            let ours = prefixed.program.is_some_and(|program| {
                self.programs
                    .iter()
                    .any(|pattern| prefix::program_matches(pattern, program))
            });
            haystack = if ours {
                prefixed.message
            } else if self.other_programs {
                prefixed.tagged
            } else {
                return (Outcome::Skipped, Vec::new(), vars);
            };
            // Most of a program's lines match none of its rules: when the shared pass over the
            // message says so, the line is done before any variable is made.
            if !all_variables
                && self.first_is_the_prefix
                && let Some(prefilter) = self.prefilter.as_ref().filter(|p| p.variable == "msg")
            {
                let matched = prefilter.matches(haystack);
                let active = |index: &usize| self.active[*index];
                let found_none = matched.view().is_empty()
                    || matched
                        .view()
                        .iter()
                        .filter_map(|id| prefilter.rule_of.get(id.as_usize()))
                        .all(|index| !active(index));
                let none = found_none && !prefilter.always.iter().any(active);
                if none {
                    return (Outcome::NoScore, vec![0], vars);
                }
                early = Some(matched);
            }

            // Only what some template reads (or everything, to explain): most lines are
            // passed over, and each variable is an allocation.
            let wanted = |name: &str| all_variables || self.prefix_variables.contains(&name);
            if wanted("msg") {
                let _: Option<String> = vars.insert("msg".to_owned(), haystack.to_owned());
            }
            if let Some(program) = prefixed.program.filter(|_| wanted("program")) {
                let _: Option<String> = vars.insert("program".to_owned(), program.to_owned());
            }
            if let Some(pid) = prefixed.pid.filter(|_| wanted("pid")) {
                let _: Option<String> = vars.insert("pid".to_owned(), pid.to_owned());
            }
            if let Some(host) = prefixed.host.filter(|_| wanted("host")) {
                let _: Option<String> = vars.insert("host".to_owned(), host.to_owned());
            }
        }
        let mut ambiguous = None;
        let known = first_passed && self.first.decided_by_a_pass();
        if !known && !self.first.run(haystack, &mut vars, &mut ambiguous) {
            return (Outcome::Skipped, Vec::new(), vars);
        }
        let mut score = match self.first.correlate(&self.name, &mut vars, &mut memory) {
            Correlated::Fails => return (Outcome::Skipped, Vec::new(), vars),
            Correlated::Succeeds { parked: true, .. } => None,
            Correlated::Succeeds { settled, .. } if settled != 0 => {
                Some(self.first.score.unwrap_or(0) + settled)
            }
            Correlated::Succeeds { .. } => self.first.score,
        };
        let mut hits = vec![0];
        // Without the variable the targets are the literal template: no shortcut then.
        let candidates = self.prefilter.as_ref().and_then(|prefilter| {
            if let Some(matched) = early.take() {
                return Some((matched, &prefilter.members));
            }
            let target = if prefilter.variable == "msg" && !self.programs.is_empty() {
                vars.get("msg").map(String::as_str).or(Some(haystack))
            } else if prefilter.variable == WHOLE_LINE {
                Some(haystack)
            } else {
                vars.get(&prefilter.variable).map(String::as_str)
            };
            target.map(|target| (prefilter.matches(target), &prefilter.members))
        });
        // With the shared pass only the rules it found, and those it cannot rule out, are
        // visited, in rule order (both lists ascend: merged as they go); without it every rule.
        let (rule_of, always) = self
            .prefilter
            .as_ref()
            .map_or((&[][..], &[][..]), |p| (&p.rule_of[..], &p.always[..]));
        let mut found = candidates
            .as_ref()
            .into_iter()
            .flat_map(|(set, _)| set.view().iter())
            .filter_map(|id| rule_of.get(id.as_usize()).copied())
            .peekable();
        let mut always = always.iter().copied().peekable();
        let mut every = candidates.is_none().then_some(0..self.rules.len());
        loop {
            let index = match every.as_mut() {
                Some(all) => match all.next() {
                    Some(index) => index,
                    None => break,
                },
                None => match (found.peek().copied(), always.peek().copied()) {
                    (None, None) => break,
                    (Some(a), Some(b)) if a == b => {
                        let _ = (found.next(), always.next());
                        a
                    }
                    (Some(a), b) if b.is_none_or(|b| a < b) => {
                        let _ = found.next();
                        a
                    }
                    (_, Some(b)) => {
                        let _ = always.next();
                        b
                    }
                    (Some(a), None) => {
                        let _ = found.next();
                        a
                    }
                },
            };
            let rule = &self.rules[index];
            if !self.active[index] {
                continue;
            }
            let member = candidates.as_ref().and_then(|(set, members)| {
                members[index].map(|id| set.view().contains(PatternID::must(id)))
            });
            let succeeded = match member {
                // Read in the pass and not matched: only a negated rule succeeds.
                Some(false) => rule.negated,
                _ => rule.run(haystack, &mut vars, &mut ambiguous),
            };
            if succeeded {
                let (parked, settled) = match rule.correlate(&self.name, &mut vars, &mut memory) {
                    Correlated::Fails => continue,
                    Correlated::Succeeds { parked, settled } => (parked, settled),
                };
                hits.push(index + 1);
                if let Some(add) = rule.score.filter(|_| !parked) {
                    score = Some(score.unwrap_or(0) + add);
                }
                if settled != 0 {
                    score = Some(score.unwrap_or(0) + settled);
                }
                if rule.last {
                    break;
                }
            }
        }
        let Some(score) = score else {
            return (Outcome::NoScore, hits, vars);
        };
        if let Some((first, last)) = ambiguous {
            return (Outcome::Ambiguous { score, first, last }, hits, vars);
        }
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
        (outcome, hits, vars)
    }

    /// (rule name, pattern, runs on the raw line) of the first match and every rule.
    pub fn patterns(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        std::iter::once(&self.first)
            .chain(self.rules.iter())
            .map(|m| (m.name.as_str(), m.pattern.as_str(), m.target.is_none()))
    }

    /// The name of match `index` of [`Ruleset::match_names`] (0: the first match).
    pub fn match_name(&self, index: usize) -> &str {
        index
            .checked_sub(1)
            .and_then(|rule| self.rules.get(rule))
            .map_or(self.first.name.as_str(), |rule| rule.name.as_str())
    }

    /// Rules (first match included) by name, in order.
    pub fn match_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.first.name.as_str()).chain(self.rules.iter().map(|r| r.name.as_str()))
    }

    /// The programs it reads (empty: whole lines).
    pub fn programs(&self) -> &[String] {
        &self.programs
    }

    /// Its modes, in file order.
    pub fn modes(&self) -> impl Iterator<Item = &str> {
        self.modes.iter().map(|(m, _)| m.as_str())
    }

    /// The mode it runs in, when it has modes.
    pub fn mode(&self) -> Option<&str> {
        self.mode.as_deref()
    }

    /// The mode it runs in unless told otherwise (`default_mode`, or `normal`, or the first).
    pub fn default_mode(&self) -> Option<&str> {
        self.default_mode.as_deref()
    }

    /// Run in `mode` from now on: rules without tags, and rules with a tag of the mode.
    ///
    /// # Errors
    /// The ruleset has no such mode: the message lists the ones it has.
    pub fn set_mode(&mut self, mode: &str) -> Result<(), String> {
        let Some((_, tags)) = self.modes.iter().find(|(m, _)| m == mode) else {
            let known: Vec<&str> = self.modes().collect();
            return Err(if known.is_empty() {
                format!("ruleset {:?} has no modes (asked for {mode:?})", self.name)
            } else {
                format!(
                    "ruleset {:?} has no mode {mode:?}; it has {}",
                    self.name,
                    known.join(", ")
                )
            });
        };
        self.active = self
            .rules
            .iter()
            .map(|rule| rule.tags.is_empty() || rule.tags.iter().any(|t| tags.contains(t)))
            .collect();
        self.mode = Some(mode.to_owned());
        Ok(())
    }

    /// Whether rule `name` runs in the current mode (the first match always does).
    pub fn is_active(&self, name: &str) -> bool {
        name == self.first.name
            || self
                .rules
                .iter()
                .zip(&self.active)
                .any(|(rule, on)| *on && rule.name == name)
    }

    /// (rule name, pattern) of the matches that take `address` from their pattern.
    pub fn address_patterns(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once(&self.first)
            .chain(self.rules.iter())
            .filter(|m| m.swapped.is_some())
            .map(|m| (m.name.as_str(), m.pattern.as_str()))
    }
}

/// Compile one ruleset; `None` when it is disabled.
fn compile_ruleset(
    path: &Path,
    raw: RawRuleset,
    budget: &mut Budget,
) -> Result<Option<Ruleset>, RulesetError> {
    if !raw.first.enabled {
        return Ok(None);
    }
    let last = raw.first.last;
    let first_at = At {
        path,
        line: raw.first.line,
        ruleset: &raw.name,
        rule: None,
    };
    let first = Matcher::compile(&raw.name, raw.first, budget, &first_at)?;
    let mut rules = Vec::new();
    for rule in raw.rules {
        if !rule.matcher.enabled {
            continue;
        }
        let line = rule.matcher.line;
        let at = At {
            path,
            line,
            ruleset: &raw.name,
            rule: Some(&rule.name),
        };
        rules.push(Matcher::compile(&rule.name, rule.matcher, budget, &at)?);
    }
    let useless = |message: &str| RulesetError::Invalid {
        path: path.to_path_buf(),
        line: raw.line,
        ruleset: raw.name.clone(),
        rule: None,
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
    let prefilter = prefilter(&rules, !raw.programs.is_empty(), budget);
    let active = vec![true; rules.len()];
    let first_is_the_prefix = !raw.programs.is_empty()
        && first.pattern.is_empty()
        && first.decided_by_a_pass()
        && first.score.is_none()
        && first.session_keys().next().is_none()
        && first.distinct.is_empty();
    let mut ruleset = Ruleset {
        name: raw.name,
        file: path.to_path_buf(),
        first,
        rules,
        last,
        prefilter,
        programs: raw.programs,
        other_programs: raw.other_programs,
        modes: raw.modes,
        mode: None,
        default_mode: raw.default_mode.as_ref().map(|(m, _)| m.clone()),
        prefix_variables: Vec::new(),
        active,
        first_is_the_prefix,
    };
    // Every template that could read a prefix variable.
    let templates: Vec<&str> = std::iter::once(&ruleset.first)
        .chain(ruleset.rules.iter())
        .flat_map(|m| {
            m.target
                .iter()
                .chain(m.session_keys())
                .chain(m.distinct.iter())
                .map(String::as_str)
        })
        .collect();
    ruleset.prefix_variables = ["msg", "program", "pid", "host"]
        .into_iter()
        .filter(|name| {
            let reference = format!("${{{name}}}");
            templates.iter().any(|t| t.contains(&reference))
        })
        .collect();
    if let Some((mode, line)) = raw.default_mode {
        ruleset
            .set_mode(&mode)
            .map_err(|message| RulesetError::Invalid {
                path: path.to_path_buf(),
                line,
                ruleset: ruleset.name.clone(),
                rule: None,
                message,
            })?;
    }
    Ok(Some(ruleset))
}

/// The rules' patterns as one set, when they can share a single pass (see
/// [`Ruleset::prefilter`]).
fn prefilter(rules: &[Matcher], on_message: bool, budget: &mut Budget) -> Option<SharedPass> {
    // The variable a rule reads whole: its `${name}` target, or (with programs) the message.
    let reads = |rule: &Matcher| -> Option<String> {
        if !rule.defaults.is_empty() {
            return None;
        }
        match (&rule.target, &rule.whole_variable) {
            (Some(_), Some(name)) => Some(name.clone()),
            (None, _) if on_message => Some("msg".to_owned()),
            (None, _) => Some(WHOLE_LINE.to_owned()),
            _ => None,
        }
    };
    // The variable most rules read; those rules share one pass.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for rule in rules {
        if let Some(variable) = reads(rule) {
            *counts.entry(variable).or_default() += 1;
        }
    }
    let (variable, count) = counts.into_iter().max_by_key(|(_, n)| *n)?;
    if count < 2 {
        return None;
    }
    let mut members = Vec::with_capacity(rules.len());
    let mut patterns = Vec::new();
    for rule in rules {
        if reads(rule).as_ref() == Some(&variable) {
            members.push(Some(patterns.len()));
            let case = if rule.ignore_case { "(?i)" } else { "" };
            patterns.push(format!("{case}(?:{})", rule.pattern));
        } else {
            members.push(None);
        }
    }
    // Rules the pass cannot rule out: those outside it, and negated ones (which succeed when
    // their pattern does not match).
    let always: Vec<usize> = members
        .iter()
        .zip(rules)
        .enumerate()
        .filter(|(_, (member, rule))| member.is_none() || rule.negated)
        .map(|(index, _)| index)
        .collect();
    let rule_of: Vec<usize> = members
        .iter()
        .enumerate()
        .filter_map(|(index, member)| member.map(|_| index))
        .collect();
    let starts = first_bytes(
        rules
            .iter()
            .zip(&members)
            .filter(|(_, member)| member.is_some())
            .map(|(rule, _)| (rule.pattern.as_str(), rule.ignore_case)),
    );
    budget.set(&patterns).map(|set| SharedPass {
        variable,
        starts,
        set,
        members,
        always,
        rule_of,
    })
}

/// The bytes a haystack can start with for any of `patterns` ((pattern, ignore case)) to
/// match: each must be anchored at the start (`^`) and begin with a finite set of literals.
/// A haystack starting with another byte matches none of them, which a table lookup tells
/// faster than the automaton's start. `None` when some pattern can start anywhere or with
/// anything.
fn first_bytes<'p>(
    patterns: impl IntoIterator<Item = (&'p str, bool)>,
) -> Option<Box<[bool; 256]>> {
    use regex_syntax::hir::{
        Look,
        literal::{ExtractKind, Extractor},
    };
    let mut bytes = Box::new([false; 256]);
    for (pattern, ignore_case) in patterns {
        let hir = syntax::parse_with(
            pattern,
            &syntax::Config::new().case_insensitive(ignore_case),
        )
        .ok()?;
        // `^` then the rest: only an anchored pattern's first byte is the haystack's.
        let HirKind::Concat(parts) = hir.kind() else {
            return None;
        };
        let (first, rest) = parts.split_first()?;
        if *first.kind() != HirKind::Look(Look::Start) {
            return None;
        }
        let rest = Hir::concat(rest.to_vec());
        let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&rest);
        for literal in seq.literals()? {
            bytes[usize::from(*literal.as_bytes().first()?)] = true;
        }
    }
    Some(bytes)
}

/// What a shared pass of the rules of a ruleset without programs reads when they have no
/// target: the line itself (no variable can have this name).
const WHOLE_LINE: &str = "\0line";

/// The rules that read one variable whole, matched in one pass (see [`Ruleset::prefilter`]).
#[derive(Clone, Debug)]
struct SharedPass {
    variable: String,
    /// What its haystacks can start with (see [`first_bytes`]).
    starts: Option<Box<[bool; 256]>>,
    set: meta::Regex,
    /// Per rule: its pattern in the set, or `None` when it runs on its own.
    members: Vec<Option<usize>>,
    /// The rules that run whatever the pass says, in order.
    always: Vec<usize>,
    /// Per pattern of the set: its rule.
    rule_of: Vec<usize>,
}

impl SharedPass {
    /// The set's patterns that match `haystack` (none, without running it, when the
    /// haystack's first byte starts none of them).
    fn matches(&self, haystack: &str) -> ReusedSet {
        let mut matched = ReusedSet::take(self.set.pattern_len());
        let possible = self.starts.as_ref().is_none_or(|starts| {
            haystack
                .as_bytes()
                .first()
                .is_some_and(|&b| starts[usize::from(b)])
        });
        if possible {
            self.set
                .which_overlapping_matches(&Input::new(haystack), matched.get());
        }
        matched
    }
}

// ---------------------------------------------------------------------------------------------
// Files and directories.

/// Read one ruleset file within `limits` (its size; opening never blocks on a FIFO).
fn read_file(path: &Path, limits: &RulesetLimits) -> Result<String, RulesetError> {
    let read_error = |source| RulesetError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let max = limits.max_file_bytes;
    let too_big = |size: u64| RulesetError::Limit {
        path: path.to_path_buf(),
        line: None,
        limit: Limit::FileBytes,
        max,
        what: format!("{size} bytes"),
    };
    if metadata.len() > u64::from(max) {
        return Err(too_big(metadata.len()));
    }
    let mut text = String::new();
    let _: usize = file
        .take(u64::from(max) + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() > RulesetLimits::bytes(max) {
        // It grew since the size was looked at.
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

/// The `*.toml` files of `paths` in load order: a directory's in name order, at most
/// `max_files` in all. Counting needs no file to be opened.
fn list_files(paths: &[PathBuf], limits: &RulesetLimits) -> Result<Vec<PathBuf>, RulesetError> {
    let max = limits.max_files;
    let max_len = usize::try_from(max).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let too_many = |path: &Path, found: usize| RulesetError::Limit {
        path: path.to_path_buf(),
        line: None,
        limit: Limit::Files,
        max,
        what: format!("{found} ruleset files"),
    };
    for path in paths {
        if !path.is_dir() {
            out.push(path.clone());
            if out.len() > max_len {
                return Err(too_many(path, out.len()));
            }
            continue;
        }
        let read_err = |source| RulesetError::Read {
            path: path.clone(),
            source,
        };
        let mut files = Vec::new();
        let mut found = 0usize;
        for entry in std::fs::read_dir(path).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            if Path::new(&entry.file_name())
                .extension()
                .is_some_and(|ext| ext == "toml")
            {
                found += 1;
                // Counted on to the end for the message; kept only while under the limit.
                if out.len() + files.len() < max_len {
                    files.push(entry.path());
                }
            }
        }
        if out.len() + found > max_len {
            return Err(too_many(path, out.len() + found));
        }
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

/// Read and check ruleset files and directories of them (`*.toml`, in name order) within
/// `limits`, compiling nothing: file count, file sizes, rule count and pattern lengths are
/// checked, every key and type, and names (a ruleset name once in all files, a rule name once
/// in its ruleset).
///
/// # Errors
/// The first fault, with its file and line.
pub fn scan(paths: &[PathBuf], limits: &RulesetLimits) -> Result<Scanned, RulesetError> {
    let mut files = Vec::new();
    let mut names: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let mut rules = 0usize;
    let max_rules = usize::try_from(limits.max_rules).unwrap_or(usize::MAX);
    for path in list_files(paths, limits)? {
        let text = read_file(&path, limits)?;
        let rulesets = Doc {
            path: &path,
            text: &text,
            limits,
        }
        .file()?;
        for ruleset in &rulesets {
            check_names(&path, ruleset, &mut names)?;
            for line in ruleset.enabled_lines() {
                rules += 1;
                if rules > max_rules {
                    return Err(RulesetError::Limit {
                        path: path.clone(),
                        line: Some(line),
                        limit: Limit::Rules,
                        max: limits.max_rules,
                        what: format!("ruleset {:?}: rule {rules} of all rulesets", ruleset.name),
                    });
                }
            }
        }
        files.push(RawFile { path, rulesets });
    }
    Ok(Scanned {
        files,
        limits: *limits,
    })
}

fn check_names(
    path: &Path,
    ruleset: &RawRuleset,
    seen: &mut HashMap<String, (PathBuf, usize)>,
) -> Result<(), RulesetError> {
    let invalid = |line: usize, rule: Option<&str>, message: String| RulesetError::Invalid {
        path: path.to_path_buf(),
        line,
        ruleset: ruleset.name.clone(),
        rule: rule.map(str::to_owned),
        message,
    };
    if let Some((file, line)) = seen.get(&ruleset.name) {
        return Err(invalid(
            ruleset.name_line,
            None,
            format!(
                "the name is taken: {}:{line} defines a ruleset of that name",
                file.display()
            ),
        ));
    }
    let _: Option<(PathBuf, usize)> = seen.insert(
        ruleset.name.clone(),
        (path.to_path_buf(), ruleset.name_line),
    );
    // The first match counts under the ruleset's own name.
    let mut rules: BTreeMap<&str, usize> = BTreeMap::new();
    let _: Option<usize> = rules.insert(&ruleset.name, ruleset.line);
    for rule in &ruleset.rules {
        if let Some(line) = rules.insert(&rule.name, rule.line) {
            return Err(invalid(
                rule.line,
                Some(&rule.name),
                format!(
                    "the name is taken, at line {line} (rule names are unique within a ruleset, and the ruleset's own name counts its first match)"
                ),
            ));
        }
    }
    Ok(())
}

/// Read, check and compile ruleset files and directories of them within `limits`.
///
/// # Errors
/// As [`scan`] and [`Scanned::compile`].
pub fn load_paths(paths: &[PathBuf], limits: &RulesetLimits) -> Result<Vec<Ruleset>, RulesetError> {
    scan(paths, limits)?.compile()
}

/// Parse and compile the text of one ruleset file within the default limits; `path` is only
/// used in messages.
///
/// # Errors
/// As [`load_paths`].
pub fn parse(text: &str, path: &Path) -> Result<Vec<Ruleset>, RulesetError> {
    let limits = RulesetLimits::default();
    let rulesets = Doc {
        path,
        text,
        limits: &limits,
    }
    .file()?;
    let mut names = HashMap::new();
    for ruleset in &rulesets {
        check_names(path, ruleset, &mut names)?;
    }
    Scanned {
        files: vec![RawFile {
            path: path.to_path_buf(),
            rulesets,
        }],
        limits,
    }
    .compile()
}

/// Load one ruleset file within the default limits.
///
/// # Errors
/// As [`load_paths`].
pub fn load(path: &Path) -> Result<Vec<Ruleset>, RulesetError> {
    load_paths(&[path.to_path_buf()], &RulesetLimits::default())
}

/// Load every `*.toml` in `dir`, in name order, within the default limits.
///
/// # Errors
/// As [`load_paths`].
pub fn load_dir(dir: &Path) -> Result<Vec<Ruleset>, RulesetError> {
    load_paths(&[dir.to_path_buf()], &RulesetLimits::default())
}

/// Run `rulesets` over a line in order: the results of every ruleset that matched, stopping
/// after a matching ruleset marked `last`.
pub fn apply_all<'r>(
    rulesets: impl IntoIterator<Item = &'r Ruleset>,
    line: &str,
) -> Vec<(&'r Ruleset, Outcome, Vec<&'r str>)> {
    apply_all_with(rulesets, line, None, 0)
}

/// The first matches of the rulesets (of one input) that read whole lines, in one pass over
/// the line: a web access log's line that none of five rulesets' first matches takes costs
/// one automaton pass instead of five, and no ruleset is visited.
pub struct FirstPass {
    /// The sets, each under the per-pattern limit (rulesets split into runs of neighbours
    /// when all of them together would not fit), and for each the literals one of which a
    /// line must hold for any of its patterns to match (when every pattern requires some).
    sets: Vec<(meta::Regex, Option<Prefilter>)>,
    /// Per ruleset of the list: its set and pattern in it (none: the pass cannot tell).
    members: Vec<Option<(usize, usize)>>,
}

/// What a [`FirstPass`] says of one ruleset's first match on a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstMatch {
    /// It does not match: the ruleset is skipped.
    Fails,
    /// It matches (a capture-free one need not run again).
    Holds,
    /// Not in the pass: the ruleset runs it.
    Unknown,
}

impl FirstPass {
    /// For `rulesets`, in the order they run. Rulesets with programs (their first match is on
    /// the message), with a target or negated first match, stay out; so does a run of them
    /// shorter than two, or one that does not fit `limits` on its own.
    pub fn new<'r>(
        rulesets: impl IntoIterator<Item = &'r Ruleset>,
        limits: &RulesetLimits,
    ) -> Self {
        let mut members = Vec::new();
        let mut patterns = Vec::new();
        for ruleset in rulesets {
            let first = &ruleset.first;
            if ruleset.programs.is_empty()
                && first.target.is_none()
                && first.defaults.is_empty()
                && !first.negated
            {
                members.push(Some(patterns.len()));
                let case = if first.ignore_case { "(?i)" } else { "" };
                patterns.push(format!("{case}(?:{})", first.pattern));
            } else {
                members.push(None);
            }
        }
        let mut budget = Budget {
            limits: *limits,
            used: 0,
        };
        // Halves until each part fits (or is too small to be worth a pass).
        let mut parts: Vec<Range<usize>> = Vec::new();
        parts.push(0..patterns.len());
        let mut sets: Vec<(Range<usize>, meta::Regex)> = Vec::new();
        while let Some(part) = parts.pop() {
            if part.len() < 2 {
                continue;
            }
            budget.used = 0;
            match budget.set(&patterns[part.clone()]) {
                Some(set) => sets.push((part, set)),
                None => {
                    let middle = part.start + part.len() / 2;
                    parts.push(middle..part.end);
                    parts.push(part.start..middle);
                }
            }
        }
        sets.sort_by_key(|(part, _)| part.start);
        let gates: Vec<Option<Prefilter>> = sets
            .iter()
            .map(|(part, _)| {
                let mut union = Vec::new();
                for pattern in &patterns[part.clone()] {
                    let hir = syntax::parse_with(pattern, &syntax::Config::new()).ok()?;
                    union.extend(required_literals(&hir)?);
                }
                Prefilter::new(MatchKind::LeftmostFirst, &union)
            })
            .collect();
        let members = members
            .into_iter()
            .map(|member| {
                let at = member?;
                let group = sets.iter().position(|(part, _)| part.contains(&at))?;
                Some((group, at - sets[group].0.start))
            })
            .collect();
        Self {
            sets: sets
                .into_iter()
                .zip(gates)
                .map(|((_, set), gate)| (set, gate))
                .collect(),
            members,
        }
    }

    /// A pass that tells nothing: each of `rulesets` runs its own first match.
    pub fn unknown(rulesets: usize) -> Self {
        Self {
            sets: Vec::new(),
            members: vec![None; rulesets],
        }
    }

    /// Rulesets in the pass.
    pub fn len(&self) -> usize {
        self.members.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Per ruleset (in the order given to [`FirstPass::new`]), what its first match does on
    /// `line`, into `out`.
    pub fn run(&self, line: &str, out: &mut Vec<FirstMatch>) {
        out.clear();
        out.resize(self.members.len(), FirstMatch::Unknown);
        for (group, (set, gate)) in self.sets.iter().enumerate() {
            // Without any literal its patterns need, none of them matches: no automaton.
            let possible = gate.as_ref().is_none_or(|gate| {
                gate.find(line.as_bytes(), Span::from(0..line.len()))
                    .is_some()
            });
            let matched = possible.then(|| {
                let mut matched = ReusedSet::take(set.pattern_len());
                set.which_overlapping_matches(&Input::new(line), matched.get());
                matched
            });
            for (verdict, member) in out.iter_mut().zip(&self.members) {
                if let Some((g, id)) = *member
                    && g == group
                {
                    let holds = matched
                        .as_ref()
                        .is_some_and(|m| m.view().contains(PatternID::must(id)));
                    *verdict = if holds {
                        FirstMatch::Holds
                    } else {
                        FirstMatch::Fails
                    };
                }
            }
        }
    }
}

/// [`apply_all_with`] over rulesets whose first matches `pass` (made for them, in this
/// order) runs at once.
pub fn apply_all_passed<'r>(
    rulesets: &[&'r Ruleset],
    pass: &FirstPass,
    line: &str,
    mut sessions: Option<&mut Sessions>,
    now_ms: u64,
) -> Vec<(&'r Ruleset, Outcome, Vec<&'r str>)> {
    let mut out = Vec::new();
    let mut prefixed = None;
    let mut verdicts = Vec::with_capacity(rulesets.len());
    pass.run(line, &mut verdicts);
    for (ruleset, verdict) in rulesets.iter().zip(verdicts) {
        let memory = sessions
            .as_deref_mut()
            .map(|sessions| Memory { sessions, now_ms });
        let parsed = (!ruleset.programs.is_empty())
            .then(|| &*prefixed.get_or_insert_with(|| prefix::parse(line)));
        let (outcome, hits) = match verdict {
            FirstMatch::Fails => continue,
            FirstMatch::Holds => ruleset.apply_passed(line, parsed, memory),
            FirstMatch::Unknown => ruleset.apply_with(line, parsed, memory),
        };
        if outcome == Outcome::Skipped {
            continue;
        }
        let hits = hits.into_iter().map(|i| ruleset.match_name(i)).collect();
        out.push((*ruleset, outcome, hits));
        if ruleset.last {
            break;
        }
    }
    out
}

/// [`apply_all`] with session memory, at log time `now_ms`.
pub fn apply_all_with<'r>(
    rulesets: impl IntoIterator<Item = &'r Ruleset>,
    line: &str,
    sessions: Option<&mut Sessions>,
    now_ms: u64,
) -> Vec<(&'r Ruleset, Outcome, Vec<&'r str>)> {
    let rulesets: Vec<&Ruleset> = rulesets.into_iter().collect();
    let pass = FirstPass::unknown(rulesets.len());
    apply_all_passed(&rulesets, &pass, line, sessions, now_ms)
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
                .starts_with("a.toml:3: ruleset \"x\": bad regular expression"),
            "{err}"
        );
        let err = parse(
            "[[ruleset]]\nname = \"x\"\nmatch = 'a'\nscroe = 1\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("a.toml:4: ") && err.to_string().contains("scroe"),
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
        let err = parse(&huge, Path::new("a.toml")).unwrap_err();
        assert!(
            matches!(
                err,
                RulesetError::Limit {
                    limit: Limit::RegexBytes,
                    line: Some(3),
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("rulesets.max_regex_bytes"),
            "{err}"
        );
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

    /// Every kind of fault, each on the line marked `# <- fault`: the error names that line.
    #[test]
    fn every_error_is_at_the_line_of_its_fault() {
        let cases: &[(&str, &str)] = &[
            (
                "unknown key in a ruleset",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\nscroe = 2 # <- fault\n",
            ),
            (
                "unknown key in a rule",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset.rule]]\nname = \"r\"\nmatch = 'a'\ntraget = 'b' # <- fault\n",
            ),
            (
                "unknown key in an inline rule",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\nrule = [\n  { name = \"r\", match = 'a' },\n  { name = \"s\", match = 'a', bogus = 1 }, # <- fault\n]\n",
            ),
            (
                "unknown top-level key",
                "# rulesets\n\nthreshold = 3 # <- fault\n[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n",
            ),
            (
                "score of the wrong type",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\n\nscore = \"5\" # <- fault\n",
            ),
            (
                "flag of the wrong type",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset.rule]]\nname = \"r\"\nmatch = 'a'\nignore_case = 1 # <- fault\n",
            ),
            (
                "pattern of the wrong type",
                "[[ruleset]]\nname = \"x\"\nmatch = 3 # <- fault\nscore = 1\n",
            ),
            (
                "name of the wrong type",
                "[[ruleset]]\nmatch = 'a'\nname = [\"x\"] # <- fault\nscore = 1\n",
            ),
            (
                "a default that is not a string",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\ndefaults = { kind = \"web\",\n  level = 3 } # <- fault\n",
            ),
            (
                "bad regular expression in the first match",
                "[[ruleset]]\nname = \"x\"\nscore = 1\nmatch = '(?P<address>\\S+' # <- fault\n",
            ),
            (
                "bad regular expression in a rule",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset.rule]]\nname = \"r\"\nmatch = 'a{2,1}' # <- fault\n",
            ),
            (
                "ruleset name given twice",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset]]\nmatch = '(?P<address>\\S+)'\nname = \"x\" # <- fault\nscore = 1\n",
            ),
            (
                "rule name given twice",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset.rule]]\nname = \"r\"\nmatch = 'a'\n[[ruleset.rule]] # <- fault\nname = \"r\"\nmatch = 'b'\n",
            ),
            (
                "ruleset without a pattern",
                "\n[[ruleset]] # <- fault\nname = \"x\"\nscore = 1\n",
            ),
            (
                "ruleset without a name",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset]] # <- fault\nmatch = 'a'\n",
            ),
            (
                "rule without a name",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset.rule]] # <- fault\nmatch = 'a'\n",
            ),
            (
                "empty name",
                "[[ruleset]]\nname = \"\" # <- fault\nmatch = '(?P<address>\\S+)'\nscore = 1\n",
            ),
            (
                "ruleset as a single table",
                "[ruleset] # <- fault\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n",
            ),
            (
                "rules that are not tables",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\nrule = \"r\" # <- fault\n",
            ),
            (
                "TOML syntax",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+) # <- fault\nscore = 1\n",
            ),
            (
                "a key given twice",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\nscore = 2 # <- fault\n",
            ),
            (
                "score out of range",
                "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 9223372036854775807 # <- fault\n",
            ),
            (
                "a ruleset that never scores",
                "[[ruleset]]\nname = \"a\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset]] # <- fault\nname = \"x\"\nmatch = '(?P<address>\\S+)'\n",
            ),
            (
                "a ruleset that never names a source",
                "[[ruleset]] # <- fault\nname = \"x\"\nmatch = 'a'\nscore = 1\n",
            ),
            (
                "a pattern over the length limit",
                &format!(
                    "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset.rule]]\nname = \"r\"\nmatch = '{}' # <- fault\n",
                    "a".repeat(5000)
                ),
            ),
            (
                "a pattern over the compiled limit",
                &format!(
                    "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>\\S+)'\nscore = 1\n[[ruleset.rule]]\nname = \"r\"\nmatch = '{}' # <- fault\n",
                    "\\w{200}".repeat(10)
                ),
            ),
        ];
        for (what, text) in cases {
            let fault = text
                .lines()
                .position(|line| line.ends_with("# <- fault"))
                .unwrap()
                + 1;
            let err = parse(text, Path::new("t.toml")).unwrap_err();
            assert_eq!(err.line(), Some(fault), "{what}: {err}");
            assert!(
                err.to_string().starts_with(&format!("t.toml:{fault}: ")),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn messages_say_which_ruleset_rule_and_key() {
        let err = |text: &str| parse(text, Path::new("t.toml")).unwrap_err().to_string();
        let message = err(
            "[[ruleset]]\nname = \"x\"\nmatch = 'a'\n[[ruleset.rule]]\nname = \"r\"\nmatch = 'a'\nscore = \"5\"\n",
        );
        assert_eq!(
            message,
            "t.toml:7: ruleset \"x\", rule \"r\": `score` must be an integer, not string"
        );
        let message = err("[[ruleset]]\nname = \"x\"\nmatch = 'a'\nscroe = 1\n");
        assert!(
            message.contains(
                "ruleset \"x\": unknown key `scroe`; a ruleset takes name, programs, other_programs, modes, default_mode, match,"
            ),
            "{message}"
        );
        let message = err(
            "[[ruleset]]\nname = \"x\"\nmatch = '(?P<address>a)'\nscore = 1\n[[ruleset]]\nname = \"x\"\nmatch = 'a'\n",
        );
        assert!(
            message.contains("t.toml:2 defines a ruleset of that name"),
            "{message}"
        );
    }

    #[test]
    fn scores_may_be_negative_and_disabled_rules_are_not_compiled() {
        let sets = rulesets(
            r#"
[[ruleset]]
name = "n"
match = '^n (?P<address>[0-9.]+)$'
score = -3
[[ruleset.rule]]
name = "broken-but-off"
match = '('
enabled = false
[[ruleset]]
name = "off"
match = '('
enabled = false
"#,
        );
        assert_eq!(sets.len(), 1);
        assert_eq!(
            scored(&sets, "n 203.0.113.5"),
            [(
                "n".into(),
                Outcome::Scored {
                    address: addr("203.0.113.5"),
                    score: -3
                }
            )]
        );
    }

    #[test]
    fn integers_are_read_in_every_toml_spelling_and_odd_shapes_are_errors() {
        for (spelled, value) in [
            ("0x10", 16),
            ("+5", 5),
            ("1_000", 1000),
            ("-2", -2),
            ("0o7", 7),
        ] {
            let sets = rulesets(&format!(
                "[[ruleset]]\nname = \"x\"\nmatch = '^(?P<address>[0-9.]+)$'\nscore = {spelled}\n"
            ));
            assert_eq!(sets[0].first.score, Some(value), "{spelled}");
        }
        for (text, line) in [
            // A rule before any ruleset makes `ruleset` a plain table.
            ("\n[[ruleset.rule]]\nname = \"r\"\nmatch = 'a'\n", 2),
            ("ruleset = [1]\n", 1),
            ("ruleset.name = \"x\"\n", 1),
            ("[[ruleset]]\nname = \"x\"\nmatch = 'a'\ndefaults = 3\n", 4),
            ("[[ruleset]]\nname = \"x\"\nmatch = 'a'\nrule = [3]\n", 4),
        ] {
            let err = parse(text, Path::new("t.toml")).unwrap_err();
            assert_eq!(err.line(), Some(line), "{text:?}: {err}");
        }
    }

    #[test]
    fn limits_are_set_by_key() {
        let mut limits = RulesetLimits::default();
        limits.set_from_text("max_files=20000").unwrap();
        assert_eq!(limits.max_files, 20_000);
        assert!(
            limits
                .set_from_text("max_filez=1")
                .unwrap_err()
                .contains("max_files")
        );
        assert!(limits.set_from_text("max_files=0").is_err());
        assert!(limits.set_from_text("max_files").is_err());
        assert!(limits.set_from_text("max_rules=-1").is_err());
    }

    #[test]
    fn the_compiled_budget_is_counted_across_rulesets() {
        let text: String = (0..4)
            .map(|i| {
                format!(
                    "[[ruleset]]\nname = \"r{i}\"\nmatch = '^\\S+ (?P<address>\\d+)$'\nscore = 1\n"
                )
            })
            .collect();
        let scanned = |max| {
            let limits = RulesetLimits {
                max_compiled_bytes: max,
                ..RulesetLimits::default()
            };
            let rulesets = Doc {
                path: Path::new("b.toml"),
                text: &text,
                limits: &limits,
            }
            .file()
            .unwrap();
            Scanned {
                files: vec![RawFile {
                    path: "b.toml".into(),
                    rulesets,
                }],
                limits,
            }
        };
        assert_eq!(scanned(u32::MAX).compile().unwrap().len(), 4);
        let err = scanned(20_000).compile().unwrap_err();
        assert!(
            matches!(
                err,
                RulesetError::Limit {
                    limit: Limit::CompiledBytes,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("rulesets.max_compiled_bytes = 20000"),
            "{err}"
        );
    }

    #[test]
    fn required_literals_are_only_what_every_match_contains() {
        let required = |pattern: &str| {
            required_literal(&syntax::parse(pattern).unwrap())
                .map(|l| String::from_utf8(l).unwrap())
        };
        assert_eq!(
            required(r"^\S+ \S+ sshd(?:-session)?\[\d+\]: (?P<msg>.*)$").as_deref(),
            Some(" sshd")
        );
        assert_eq!(required(r"(?:from (\d+))+ port").as_deref(), Some(" port"));
        assert_eq!(required(r"a|b"), None);
        assert_eq!(required(r"(?:abc)?x"), Some("x".into()));
        assert_eq!(required(r"(?:abc)*"), None);
        assert_eq!(required(r"(?i)abc"), None);
        // A line without the literal still gets the match's defaults, and a negated match
        // succeeds on it.
        let sets = rulesets(
            r#"
[[ruleset]]
name = "p"
match = '^(?P<address>[0-9.]+) '
defaults = { kind = "x" }
[[ruleset.rule]]
name = "not-sshd"
match = ' sshd\['
negated = true
score = 2
[[ruleset.rule]]
name = "kind"
target = '${kind}'
match = '^x$'
score = 1
"#,
        );
        assert!(sets[0].rules[0].required.is_some());
        assert_eq!(
            scored(&sets, "203.0.113.5 cron[1]: x"),
            [(
                "p".into(),
                Outcome::Scored {
                    address: addr("203.0.113.5"),
                    score: 3
                }
            )]
        );
        assert_eq!(
            scored(&sets, "203.0.113.5 sshd[1]: x"),
            [(
                "p".into(),
                Outcome::Scored {
                    address: addr("203.0.113.5"),
                    score: 1
                }
            )]
        );
    }

    #[test]
    fn template_substitution_leaves_unknown_names() {
        let mut vars = Vars::default();
        let _ = vars.insert("a".to_owned(), "1".to_owned());
        assert_eq!(substitute("${a}-${b}-${", &vars), "1-${b}-${");
    }

    const PROGRAMS: &str = r#"
[[ruleset]]
name = "sshd"
programs = ["sshd", "sshd-session"]
[ruleset.modes]
normal = []
aggressive = ["aggressive"]

[[ruleset.rule]]
name = "failed"
match = '^Failed password for (?:invalid user )?.* from (?P<address>[0-9a-f.:]+) port \d+ ssh2(?:: .*)?$'
score = 5
last = true

[[ruleset.rule]]
name = "connection"
match = '^Connection from (?P<address>[0-9a-f.:]+) port \d+ on \S+ port \d+$'
remember = '${pid}'

[[ruleset.rule]]
name = "socket-failed"
tags = ["aggressive"]
match = '^fatal: Read from socket failed: .* \[preauth\]$'
recall = '${pid}'
score = 2
"#;

    #[test]
    fn programs_read_the_message_of_any_prefix_and_only_their_programs() {
        let sets = rulesets(PROGRAMS);
        let expected = Outcome::Scored {
            address: addr("203.0.113.5"),
            score: 5,
        };
        for line in [
            "Jan  5 01:31:41 www sshd[1643]: Failed password for root from 203.0.113.5 port 1 ssh2",
            "2024-01-02T03:04:05+01:00 www sshd-session[7]: Failed password for root from 203.0.113.5 port 1 ssh2",
            "<38>1 2024-01-02T03:04:05Z www sshd 7 - - Failed password for root from 203.0.113.5 port 1 ssh2",
            "@400000005f5e1000000003e8 sshd[5]: Failed password for root from 203.0.113.5 port 1 ssh2",
            "Mar 29 05:59:23 dusky sshd[2]: [ID 800047 auth.info] Failed password for root from 203.0.113.5 port 1 ssh2",
        ] {
            assert_eq!(
                scored(&sets, line),
                [("sshd".into(), expected.clone())],
                "{line}"
            );
        }
        // Another program, or the message inside another daemon's text: not ours.
        assert!(scored(&sets, "Jan  5 01:31:41 www sshd-auth[1]: Failed password for root from 203.0.113.5 port 1 ssh2").is_empty());
        assert!(scored(&sets, "Jan  5 01:31:41 www cron[1]: sshd[2]: Failed password for root from 203.0.113.5 port 1 ssh2").is_empty());
    }

    #[test]
    fn an_address_the_fixed_text_allows_at_two_places_is_ambiguous_and_not_scored() {
        let sets = rulesets(PROGRAMS);
        let line = "Nov 11 08:04:52 h sshd[2737]: Failed password for invalid user test from 198.51.100.66 port 58946 ssh2: from 203.0.113.2 port 55555 ssh2";
        assert_eq!(
            scored(&sets, line),
            [(
                "sshd".into(),
                Outcome::Ambiguous {
                    score: 5,
                    first: "198.51.100.66".into(),
                    last: "203.0.113.2".into(),
                }
            )]
        );
        // A user name carrying the text before the address, but not the `: ` that could end
        // the message early: only one place fits, the last, which sshd wrote.
        let line = "Nov 11 08:04:52 h sshd[2737]: Failed password for x from 198.51.100.66 port 1 ssh2 from 203.0.113.2 port 2 ssh2";
        assert_eq!(
            scored(&sets, line),
            [(
                "sshd".into(),
                Outcome::Scored {
                    address: addr("203.0.113.2"),
                    score: 5
                }
            )]
        );
    }

    #[test]
    fn required_literal_sets_hold_one_literal_of_every_match() {
        let set = |pattern: &str| {
            required_literals(&syntax::parse(pattern).unwrap()).map(|set| {
                set.into_iter()
                    .map(|l| String::from_utf8(l).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        // The status after the request, expanded from a class: a 200 line holds none.
        assert_eq!(
            set(r#"^[0-9.]+ \S+ "[^"]*" (?:40[13]|410) \d+$"#),
            Some(vec![
                r#"" 401 "#.into(),
                r#"" 403 "#.into(),
                r#"" 410 "#.into()
            ])
        );
        // An alternation needs one from every branch.
        assert_eq!(
            set(r"^(?:a\d+, client: |x+ No such file)"),
            Some(vec![" No such file".into(), ", client: ".into()])
        );
        assert_eq!(set(r"^(?:\d+, client: |x+)"), None);
        // Too short to be worth a search, or none at all.
        assert_eq!(set(r"^\d+ab\d+$"), None);
        assert_eq!(set(r"^.*$"), None);
        // Sound on what it keeps: each pattern's matches hold one of its literals.
        for (pattern, line) in [
            (
                r#"^[0-9.]+ \S+ "[^"]*" (?:40[13]|410) \d+$"#,
                r#"203.0.113.5 - "GET /" 403 12"#,
            ),
            (r"^(?:a\d+, client: |x+ No such file)", "xx No such file"),
        ] {
            assert!(meta::Regex::new(pattern).unwrap().is_match(line));
            assert!(
                set(pattern)
                    .unwrap()
                    .iter()
                    .any(|l| line.contains(l.as_str()))
            );
        }
    }

    #[test]
    fn first_bytes_are_known_only_for_anchored_literal_starts() {
        let starts = |patterns: &[(&str, bool)]| {
            first_bytes(patterns.iter().copied()).map(|table| {
                (0..=255u8)
                    .filter(|b| table[usize::from(*b)])
                    .map(char::from)
                    .collect::<String>()
            })
        };
        assert_eq!(
            starts(&[
                ("^Failed (?P<x>.*)$", false),
                ("^(?:error: )?Invalid", false)
            ])
            .as_deref(),
            Some("FIe")
        );
        assert_eq!(starts(&[("^ok", true)]).as_deref(), Some("Oo"));
        // Not anchored, an empty start, or any byte: no table.
        assert_eq!(starts(&[("^Failed", false), ("Invalid", false)]), None);
        assert_eq!(starts(&[("^(?:x)?", false)]), None);
        assert_eq!(starts(&[("^.*x", false)]), None);
    }

    #[test]
    fn forget_ends_a_session_and_distinct_counts_user_names_per_session() {
        let sets = rulesets(
            r#"
[[ruleset]]
name = "s"
programs = ["sshd"]
[[ruleset.rule]]
name = "pam"
match = '^auth failure; ruser=(?P<alt_user>\S*) rhost=(?P<address>[0-9.]+)(?: user=(?P<user>\S+))?$'
remember = '${pid}'
distinct = ['${user}', '${alt_user}']
distinct_score = 2
last = true
[[ruleset.rule]]
name = "locked"
match = '^User \S+ not allowed because account is locked$'
recall = '${pid}'
pending = '${pid}'
score = 3
last = true
[[ruleset.rule]]
name = "closed"
match = '^Connection closed by (?P<address>[0-9.]+)$'
settle = '${pid}'
forget = '${pid}'
last = true
"#,
        );
        let mut sessions = Sessions::new(super::super::correlate::SessionLimits::default());
        let mut run = |line: &str, now_ms: u64| {
            apply_all_with(&sets, line, Some(&mut sessions), now_ms)
                .into_iter()
                .map(|(_, o, _)| o)
                .collect::<Vec<_>>()
        };
        let pam = |pid: u32, user: &str| {
            format!("Mar  7 18:53:22 bar sshd[{pid}]: auth failure; ruser={user} rhost=203.0.113.4")
        };
        // One user name, however often: nothing; a second one: the line counts, and so does
        // every later line of that session (the first name again included).
        assert_eq!(run(&pam(1, "root"), 0), [Outcome::NoScore]);
        assert_eq!(run(&pam(1, "root"), 1), [Outcome::NoScore]);
        let scored = [Outcome::Scored {
            address: addr("203.0.113.4"),
            score: 2,
        }];
        assert_eq!(run(&pam(1, "sudoer"), 2), scored);
        assert_eq!(run(&pam(1, "root"), 3), scored);
        // `user=` wins over `ruser=` (the first template that resolves).
        let both =
            "Mar  7 18:53:22 bar sshd[2]: auth failure; ruser=root rhost=203.0.113.4 user=root";
        assert_eq!(run(both, 4), [Outcome::NoScore]);
        assert_eq!(run(&pam(2, "admin"), 5), scored);
        // Another session's names are its own.
        assert_eq!(run(&pam(3, "admin"), 6), [Outcome::NoScore]);
        // A failure without an address waits; the closing line settles it and ends the
        // session, so the next one of the same pid waits again.
        let locked = "Mar  7 18:53:30 bar sshd[9]: User root not allowed because account is locked";
        let closed = "Mar  7 18:53:31 bar sshd[9]: Connection closed by 203.0.113.8";
        // Parked: no score of its own yet.
        assert_eq!(run(locked, 10), [Outcome::NoScore]);
        assert_eq!(
            run(closed, 11),
            [Outcome::Scored {
                address: addr("203.0.113.8"),
                score: 3
            }]
        );
        assert_eq!(run(closed, 12), [Outcome::NoScore]);
        assert_eq!(run(locked, 13), [Outcome::NoScore]);
        assert_eq!(
            run(closed, 14),
            [Outcome::Scored {
                address: addr("203.0.113.8"),
                score: 3
            }]
        );
        assert_eq!(sessions.stats().forgotten, 2);
        assert!(
            parse(
                "[[ruleset]]\nname = \"a\"\nprograms = [\"x\"]\n[[ruleset.rule]]\nname = \"r\"\nmatch = '(?P<address>x)(?P<user>y)'\ndistinct = '${user}'\nscore = 1\n",
                Path::new("t.toml")
            )
            .unwrap_err()
            .to_string()
            .contains("t.toml:7: ruleset \"a\", rule \"r\": `distinct` counts per session")
        );
    }

    #[test]
    fn other_programs_are_read_with_their_tag_when_asked() {
        let text = |other: &str| {
            format!(
                "[[ruleset]]\nname = \"d\"\nprograms = [\"dovecot\"]\n{other}[[ruleset.rule]]\nname = \"r\"\nmatch = '^(?:(?:pop3|imap)-login: )?Info: Aborted login: rip=(?P<address>[0-9.]+)$'\nscore = 1\n"
            )
        };
        let ours = "Jan 29 09:33:58 mail dovecot: pop3-login: Info: Aborted login: rip=203.0.113.2";
        let tagged = "Jan 29 09:33:58 pop3-login: Info: Aborted login: rip=203.0.113.3";
        let bare = "Info: Aborted login: rip=203.0.113.4";
        let skip = rulesets(&text(""));
        let read = rulesets(&text("other_programs = \"read-with-tag\"\n"));
        let score = |sets: &[Ruleset], line: &str| {
            scored(sets, line)
                .into_iter()
                .map(|(_, o)| o)
                .collect::<Vec<_>>()
        };
        let at = |a: &str| {
            vec![Outcome::Scored {
                address: addr(a),
                score: 1,
            }]
        };
        assert_eq!(score(&skip, ours), at("203.0.113.2"));
        assert_eq!(score(&skip, tagged), []);
        assert_eq!(score(&skip, bare), []);
        assert_eq!(score(&read, ours), at("203.0.113.2"));
        assert_eq!(score(&read, tagged), at("203.0.113.3"));
        assert_eq!(score(&read, bare), at("203.0.113.4"));
        let err = parse(
            "[[ruleset]]\nname = \"a\"\nother_programs = \"read-with-tag\"\nmatch = 'x'\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("t.toml:3: ruleset \"a\": `other_programs` needs `programs`"),
            "{err}"
        );
        let err = parse(
            "[[ruleset]]\nname = \"a\"\nprograms = [\"x\"]\nother_programs = \"all\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("t.toml:4: ruleset \"a\": `other_programs` is \"skip\""),
            "{err}"
        );
    }

    #[test]
    fn modes_switch_tagged_rules_and_correlation_recalls_by_key() {
        let mut sets = rulesets(PROGRAMS);
        assert_eq!(sets[0].mode(), Some("normal"));
        assert_eq!(
            sets[0].modes().collect::<Vec<_>>(),
            ["normal", "aggressive"]
        );
        assert!(
            sets[0]
                .set_mode("ddos")
                .unwrap_err()
                .contains("has no mode \"ddos\"")
        );
        let mut sessions = Sessions::new(super::super::correlate::SessionLimits::default());
        let mut run = |sets: &[Ruleset], line: &str, now_ms: u64| {
            apply_all_with(sets, line, Some(&mut sessions), now_ms)
                .into_iter()
                .map(|(_, o, _)| o)
                .collect::<Vec<_>>()
        };
        let connect = "Nov 24 23:46:40 host sshd[32686]: Connection from 203.0.113.9 port 4 on 198.51.100.1 port 22";
        let fatal = "Nov 24 23:46:43 host sshd[32686]: fatal: Read from socket failed: Connection reset by peer [preauth]";
        let other = "Nov 24 23:46:43 host sshd[1]: fatal: Read from socket failed: Connection reset by peer [preauth]";
        assert_eq!(run(&sets, connect, 0), [Outcome::NoScore]);
        // Normal mode: the tagged rule does not run.
        assert_eq!(run(&sets, fatal, 1000), [Outcome::NoScore]);
        sets[0].set_mode("aggressive").unwrap();
        assert_eq!(
            run(&sets, fatal, 2000),
            [Outcome::Scored {
                address: addr("203.0.113.9"),
                score: 2
            }]
        );
        // Another pid: nothing remembered, so the rule does not count (no score, no address).
        assert_eq!(run(&sets, other, 2000), [Outcome::NoScore]);
        // Past the TTL (10 minutes of log time): forgotten.
        assert_eq!(run(&sets, fatal, 601_000), [Outcome::NoScore]);
    }

    #[test]
    fn modes_tags_and_programs_are_checked_at_their_lines() {
        let cases = [
            (
                "[[ruleset]]\nname = \"a\"\nprograms = []\n",
                "test.toml:3: ruleset \"a\": `programs` is empty",
            ),
            (
                "[[ruleset]]\nname = \"a\"\nprograms = [\"ss hd\"]\n",
                "test.toml:3: ruleset \"a\": `programs`: \"ss hd\" is not a program name",
            ),
            (
                "[[ruleset]]\nname = \"a\"\nprograms = [\"x\"]\n[ruleset.modes]\nnormal = []\n[[ruleset.rule]]\nname = \"r\"\ntags = [\"ddos\"]\nmatch = '(?P<address>x)'\nscore = 1\n",
                "test.toml:6: ruleset \"a\": rule \"r\": tag \"ddos\" is in none of the ruleset's modes",
            ),
            (
                "[[ruleset]]\nname = \"a\"\nprograms = [\"x\"]\n[ruleset.modes]\nnormal = [\"typo\"]\n[[ruleset.rule]]\nname = \"r\"\nmatch = '(?P<address>x)'\nscore = 1\n",
                "test.toml:4: ruleset \"a\": mode \"normal\": no rule has tag \"typo\"",
            ),
            (
                "[[ruleset]]\nname = \"a\"\nprograms = [\"x\"]\ndefault_mode = \"fast\"\n[[ruleset.rule]]\nname = \"r\"\nmatch = '(?P<address>x)'\nscore = 1\n",
                "test.toml:4: ruleset \"a\": `default_mode` \"fast\" is not one of its modes",
            ),
            (
                "[[ruleset]]\nname = \"a\"\nprograms = [\"x\"]\n[[ruleset.rule]]\nname = \"r\"\nmatch = 'x'\nrecall = 'pid'\nscore = 1\n",
                "test.toml:7: ruleset \"a\", rule \"r\": `recall` \"pid\" names no variable",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text, Path::new("test.toml")).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}\nexpected: {expected}");
        }
    }

    #[test]
    fn a_pending_score_waits_for_the_line_of_its_session_that_names_the_address() {
        let sets = rulesets(
            r#"
[[ruleset]]
name = "mongodb"
match = '^(?P<msg>.*)$'

[[ruleset.rule]]
name = "auth-failed"
target = '${msg}'
match = '^\[(?P<ctx>conn\d+)\] Failed to authenticate .*$'
pending = '${ctx}'
score = 5

[[ruleset.rule]]
name = "end"
target = '${msg}'
match = '^\[(?P<ctx>conn\d+)\] end connection (?P<address>[0-9.]+):\d+ \(\d+ connections? now open\)$'
settle = '${ctx}'
"#,
        );
        let mut sessions = Sessions::new(super::super::correlate::SessionLimits::default());
        let mut run = |line: &str| {
            apply_all_with(&sets, line, Some(&mut sessions), 0)
                .into_iter()
                .map(|(_, o, _)| o)
                .collect::<Vec<_>>()
        };
        // The failure names no address: its score is parked, nothing scored yet.
        assert_eq!(
            run("[conn5] Failed to authenticate admin@admin with mechanism SCRAM-SHA-1"),
            [Outcome::NoScore]
        );
        assert_eq!(
            run("[conn5] Failed to authenticate admin@admin with mechanism SCRAM-SHA-1"),
            [Outcome::NoScore]
        );
        // Another connection's end takes nothing.
        assert_eq!(
            run("[conn6] end connection 203.0.113.6:4 (1 connection now open)"),
            [Outcome::NoScore]
        );
        // Its own end: both parked scores, once.
        assert_eq!(
            run("[conn5] end connection 203.0.113.5:4 (0 connections now open)"),
            [Outcome::Scored {
                address: addr("203.0.113.5"),
                score: 10
            }]
        );
        assert_eq!(
            run("[conn5] end connection 203.0.113.5:4 (0 connections now open)"),
            [Outcome::NoScore]
        );
        assert_eq!((sessions.stats().parked, sessions.stats().settled), (2, 1));
    }

    #[test]
    fn the_literal_after_the_address_is_found_through_groups() {
        let literal = |pattern: &str| {
            literal_after_address(&syntax::parse(pattern).unwrap())
                .map(|l| String::from_utf8(l).unwrap())
        };
        assert_eq!(
            literal(r"^Failed .* from (?P<address>[0-9.]+) port \d+ ssh2$").as_deref(),
            Some(" port ")
        );
        assert_eq!(
            literal(r"^(?:x|y) (?:from (?P<address>[0-9.]+), server)$").as_deref(),
            Some(", server")
        );
        assert_eq!(literal(r"^a (?P<address>[0-9.]+)$"), None);
        assert_eq!(literal(r"^a (?P<address>[0-9.]+)\d"), None);
    }

    #[test]
    fn an_address_with_one_place_needs_no_second_pass() {
        assert!(address_at_a_fixed_place(r"^(?P<address>[0-9.]+) - "));
        assert!(address_at_a_fixed_place(r"(?i)^client (?P<address>\S+)$"));
        assert!(!address_at_a_fixed_place(
            r"^user .* from (?P<address>[0-9.]+)$"
        ));
        assert!(!address_at_a_fixed_place(r"^(?:a|b) (?P<address>[0-9.]+)$"));
        assert!(!address_at_a_fixed_place(r"^x? (?P<address>[0-9.]+)$"));
        assert!(!address_at_a_fixed_place(r"^\S (?P<address>[0-9.]+)$"));
        assert!(!address_at_a_fixed_place(r"no address here"));
    }

    /// The shortcut finds what the capture engine finds, or leaves the line to it.
    #[test]
    fn the_address_shortcut_agrees_with_the_capture_engine() {
        let patterns = [
            r"^Failed password for (?:invalid user )?.* from (?P<address>[0-9A-Fa-f:.]*[0-9A-Fa-f]) port \d+ ssh2(?:: .*)?$",
            r"^Invalid user .* from (?P<address>[0-9A-Fa-f:.]+) port \d+$",
            r"^rip=(?P<address>[0-9a-f.:]+), lip=.*$",
            r"client: (?P<address>[0-9A-Fa-f:.]+), server",
        ];
        let lines = [
            "Failed password for root from 203.0.113.5 port 22 ssh2",
            "Failed password for invalid user ab from 2001:db8::5 port 22 ssh2",
            "Failed password for x from 1.2.3.4 port 9 ssh2: from 203.0.113.2 port 5 ssh2",
            "Failed password for dead from beef port 1 ssh2",
            "Failed password for a from 203.0.113.5.6 port 1 ssh2",
            "Failed password for a from : port 1 ssh2",
            "Invalid user x from 198.51.100.7 port 4000",
            "Invalid user x port 1 from 198.51.100.7 port 4000",
            "rip=203.0.113.9, lip=198.51.100.1",
            "rip=, lip=1",
            "x client: 203.0.113.1, server y",
            "client: 203.0.113.1, server y",
            "no match at all",
        ];
        let mut budget = Budget {
            limits: RulesetLimits::default(),
            used: 0,
        };
        let at = At {
            path: Path::new("t.toml"),
            line: 1,
            ruleset: "t",
            rule: None,
        };
        let mut shortcuts = 0;
        for pattern in patterns {
            let raw = RawMatch {
                pattern: pattern.to_owned(),
                line: 1,
                target: None,
                ignore_case: false,
                negated: false,
                defaults: Vec::new(),
                score: Some(1),
                enabled: true,
                last: false,
                tags: Vec::new(),
                remember: None,
                recall: None,
                pending: None,
                settle: None,
                forget: None,
                distinct: Vec::new(),
                distinct_score: None,
            };
            let matcher = Matcher::compile("r", raw, &mut budget, &at).unwrap();
            shortcuts += usize::from(matcher.fast_address.is_some());
            for line in lines {
                let mut fast = Vars::default();
                let mut ambiguous = None;
                let matched = matcher.run(line, &mut fast, &mut ambiguous);
                let mut slow = Vars::default();
                let mut address_at = None;
                let expected = capture_into(
                    &matcher.regex,
                    &matcher.groups,
                    line,
                    &mut slow,
                    &mut address_at,
                )
                .is_some();
                assert_eq!(matched, expected, "{pattern} on {line}");
                assert_eq!(
                    fast.get("address"),
                    slow.get("address"),
                    "{pattern} on {line}"
                );
            }
        }
        assert_eq!(shortcuts, 4, "every pattern here has the shortcut's shape");
    }
}
