//! The library's module structure, read from its sources: no import cycle among sibling modules,
//! and the top-level layering of the architecture (daemon -> config -> {api, tools} -> detect ->
//! enforce -> shared leaves), so "nothing imports a module above it" holds in CI.
//!
//! The modules are found the way the compiler finds them: from `src/lib.rs`, following each
//! `mod name;` (and `#[path]`), so the binary's own modules (declared by `main.rs`) are not part
//! of the library. A reference is any path into the crate outside test code: `use crate::..`,
//! `use super::..`, `use self::..` (with nested groups), inline `crate::`/`super::`/`self::`
//! paths, and paths through a name a `use` brought in (`use crate::volume;` then
//! `volume::heavy::X`). Each resolves to the deepest module it names. Paths inside string
//! literals (such as serde's `with = "..."`) are not seen.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

/// Top-level modules of the crate from the top down. A module may use the modules of the rows
/// below its own and the shared leaves, never one of its own row or above. Items of `lib.rs`
/// itself (such as `error_chain`) belong to the crate root and anyone may use them.
const LAYERS: &[&[&str]] = &[
    &["daemon"],
    &["config"],
    &["api", "report", "tools"],
    &["detect", "peers"],
    &["enforce"],
];
/// Used by any layer; they may use each other, as long as that makes no cycle.
const SHARED_LEAVES: &[&str] = &[
    "prefix",
    "clock",
    "exposition",
    "listfile",
    "origins",
    "history",
];

/// Cycles printed per parent module; a tangle of a dozen modules has thousands.
const MAX_CYCLES: usize = 200;

/// Segments from the crate root; empty for the root itself.
type ModPath = Vec<String>;

fn label(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// For every module, the uses among its children (each child with everything below it) form no
/// cycle. A module and its own ancestors or descendants are one unit and may use each other.
#[test]
fn sibling_modules_import_each_other_without_a_cycle() {
    let krate = load_crate();
    let report = cycle_report(&krate.refs);
    assert!(
        report.is_empty(),
        "import cycles among sibling modules:\n{report}"
    );
}

/// Every top-level module is in the table, and uses only the layers below it.
#[test]
fn top_level_modules_only_use_lower_layers() {
    let krate = load_crate();
    let report = layering_report(&krate.modules, &krate.refs, LAYERS, SHARED_LEAVES);
    assert!(
        report.is_empty(),
        "layering of the crate's top-level modules:\n{report}"
    );
}

#[test]
fn layering_table_names_each_module_once() {
    let mut seen = BTreeSet::new();
    for name in LAYERS
        .iter()
        .flat_map(|row| row.iter())
        .chain(SHARED_LEAVES)
    {
        assert!(
            seen.insert(name),
            "`{name}` appears twice in the layering table"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Identifiers and keywords (`r#name` as `name`).
    Ident(String),
    /// A string literal's text as written, escapes untouched; kept for `#[path = "..."]`.
    Str(String),
    /// `::`
    PathSep,
    Punct(char),
    /// Numbers, character literals, lifetimes.
    Literal,
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Rust source as tokens, without comments (doc comments included).
fn lex(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while let Some(c) = at(i) {
        let start_line = line;
        let tok = match c {
            '\n' => {
                line += 1;
                i += 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '/' if at(i + 1) == Some('/') => {
                while at(i).is_some_and(|c| c != '\n') {
                    i += 1;
                }
                continue;
            }
            '/' if at(i + 1) == Some('*') => {
                i = skip_block_comment(&chars, i, &mut line);
                continue;
            }
            '"' => {
                let (text, end) = quoted(&chars, i + 1, &mut line);
                i = end;
                Tok::Str(text)
            }
            '\'' => {
                i = char_or_lifetime(&chars, i);
                Tok::Literal
            }
            ':' if at(i + 1) == Some(':') => {
                i += 2;
                Tok::PathSep
            }
            c if c.is_ascii_digit() => {
                i += 1;
                while at(i).is_some_and(|c| {
                    is_ident_char(c) || (c == '.' && at(i + 1).is_some_and(|d| d.is_ascii_digit()))
                }) {
                    i += 1;
                }
                Tok::Literal
            }
            c if is_ident_start(c) => {
                let start = i;
                while at(i).is_some_and(is_ident_char) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = at(i);
                match word.as_str() {
                    "r" | "br" | "cr" if next == Some('"') || raw_string_ahead(&chars, i) => {
                        let (text, end) = raw_quoted(&chars, i, &mut line);
                        i = end;
                        Tok::Str(text)
                    }
                    "b" | "c" if next == Some('"') => {
                        let (text, end) = quoted(&chars, i + 1, &mut line);
                        i = end;
                        Tok::Str(text)
                    }
                    "b" if next == Some('\'') => {
                        i = char_or_lifetime(&chars, i);
                        Tok::Literal
                    }
                    "r" if next == Some('#') && at(i + 1).is_some_and(is_ident_start) => {
                        let start = i + 1;
                        i = start;
                        while at(i).is_some_and(is_ident_char) {
                            i += 1;
                        }
                        Tok::Ident(chars[start..i].iter().collect())
                    }
                    _ => Tok::Ident(word),
                }
            }
            c => {
                i += 1;
                Tok::Punct(c)
            }
        };
        tokens.push(Token {
            tok,
            line: start_line,
        });
    }
    tokens
}

/// Index after the (possibly nested) block comment opening at `start`.
fn skip_block_comment(chars: &[char], start: usize, line: &mut usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1).copied()) {
            ('/', Some('*')) => {
                depth += 1;
                i += 2;
            }
            ('*', Some('/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            (c, _) => {
                if c == '\n' {
                    *line += 1;
                }
                i += 1;
            }
        }
    }
    i
}

/// The text of a `"`-quoted literal whose first character is at `start`, and the index after
/// its closing quote.
fn quoted(chars: &[char], start: usize, line: &mut usize) -> (String, usize) {
    let mut text = String::new();
    let mut i = start;
    while let Some(&c) = chars.get(i) {
        match c {
            '"' => return (text, i + 1),
            '\\' => {
                text.push(c);
                if let Some(&escaped) = chars.get(i + 1) {
                    if escaped == '\n' {
                        *line += 1;
                    }
                    text.push(escaped);
                }
                i += 2;
                continue;
            }
            '\n' => *line += 1,
            _ => {}
        }
        text.push(c);
        i += 1;
    }
    (text, i)
}

/// Whether `#...#"` follows at `i` (a raw string after its `r`).
fn raw_string_ahead(chars: &[char], mut i: usize) -> bool {
    while chars.get(i) == Some(&'#') {
        i += 1;
    }
    chars.get(i) == Some(&'"')
}

/// A raw string whose hashes (or opening quote) start at `start`.
fn raw_quoted(chars: &[char], start: usize, line: &mut usize) -> (String, usize) {
    let mut i = start;
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    i += 1; // the opening quote
    let text_start = i;
    while let Some(&c) = chars.get(i) {
        if c == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return (chars[text_start..i].iter().collect(), i + 1 + hashes);
        }
        if c == '\n' {
            *line += 1;
        }
        i += 1;
    }
    (chars[text_start..].iter().collect(), i)
}

/// Index after the character literal or lifetime whose quote is at `start`.
fn char_or_lifetime(chars: &[char], start: usize) -> usize {
    let at = |i: usize| chars.get(i).copied();
    if at(start + 1) == Some('\\') {
        // Skip the escaped character, which may itself be a quote, then find the closing one.
        let mut i = start + 3;
        while at(i).is_some_and(|c| c != '\'' && c != '\n') {
            i += 1;
        }
        return i + 1;
    }
    if at(start + 2) == Some('\'') {
        return start + 3;
    }
    let mut i = start + 1;
    while at(i).is_some_and(is_ident_char) {
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------------------------
// Scanning one file

/// A path into the crate as written, in the module it was written in.
#[derive(Debug, Clone)]
struct RawRef {
    scope: ModPath,
    segs: Vec<String>,
    line: usize,
}

/// `mod name;` in module `scope`.
#[derive(Debug)]
struct ModDecl {
    scope: ModPath,
    name: String,
    path_attr: Option<String>,
    line: usize,
}

/// Names a `use` brings into each module, with the path (as written) they stand for.
type Aliases = BTreeMap<ModPath, BTreeMap<String, Vec<String>>>;

#[derive(Debug, Default)]
struct FileScan {
    /// `#![cfg(test)]` at the top: the whole file is test code.
    test_only: bool,
    mod_decls: Vec<ModDecl>,
    /// `mod name { ... }` outside test code.
    inline_mods: Vec<ModPath>,
    refs: Vec<RawRef>,
    aliases: Aliases,
}

fn tok_at(toks: &[Token], i: usize) -> Option<&Tok> {
    toks.get(i).map(|t| &t.tok)
}

fn is_punct(toks: &[Token], i: usize, c: char) -> bool {
    tok_at(toks, i) == Some(&Tok::Punct(c))
}

fn ident_at(toks: &[Token], i: usize) -> Option<&str> {
    match tok_at(toks, i) {
        Some(Tok::Ident(name)) => Some(name),
        _ => None,
    }
}

/// Index of the delimiter closing the one at `open`.
fn matching_close(toks: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// Index after the item starting at `start`: its `;`, or its closing `}`. Stops before a
/// delimiter that closes something the item is inside (an attributed field or arm).
fn skip_item(toks: &[Token], start: usize) -> usize {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(start) {
        match t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') if depth == 0 => return i,
            Tok::Punct(c @ (')' | ']' | '}')) => {
                depth -= 1;
                if depth == 0 && c == '}' {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
    }
    toks.len()
}

/// Index of the delimiter closing the block `start` is inside.
fn skip_to_block_end(toks: &[Token], start: usize) -> usize {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(start) {
        match t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') if depth == 0 => return i,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            _ => {}
        }
    }
    toks.len()
}

/// One leaf of a `use` tree: the full path as written, and the name it brings in.
struct UseLeaf {
    segs: Vec<String>,
    name: Option<String>,
    line: usize,
}

/// Parses the use tree at `*i`, below `prefix`, appending its leaves.
fn use_tree(toks: &[Token], i: &mut usize, prefix: &[String], leaves: &mut Vec<UseLeaf>) {
    let mut segs = prefix.to_vec();
    if tok_at(toks, *i) == Some(&Tok::PathSep) {
        // `::name` is an external crate.
        segs.push("::".to_owned());
        *i += 1;
    }
    let mut line = toks.get(*i).map_or(0, |t| t.line);
    loop {
        match tok_at(toks, *i) {
            Some(Tok::Ident(name)) => {
                segs.push(name.clone());
                line = toks[*i].line;
                *i += 1;
                if tok_at(toks, *i) == Some(&Tok::PathSep) {
                    *i += 1;
                    continue;
                }
                break;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                while tok_at(toks, *i).is_some() && !is_punct(toks, *i, '}') {
                    use_tree(toks, i, &segs, leaves);
                    if is_punct(toks, *i, ',') {
                        *i += 1;
                    } else if !is_punct(toks, *i, '}') {
                        // Not a use tree after all; let the caller find the `;`.
                        return;
                    }
                }
                *i += 1;
                return;
            }
            Some(Tok::Punct('*')) => {
                leaves.push(UseLeaf {
                    segs,
                    name: None,
                    line: toks[*i].line,
                });
                *i += 1;
                return;
            }
            _ => break,
        }
    }
    let mut name = match segs.as_slice() {
        [.., parent, last] if last == "self" => Some(parent.clone()),
        [.., last] => Some(last.clone()),
        [] => None,
    };
    if ident_at(toks, *i) == Some("as") {
        name = ident_at(toks, *i + 1).map(str::to_owned);
        *i += 2;
    }
    leaves.push(UseLeaf { segs, name, line });
}

/// The crate paths in `src`, the source of module `module`, outside test code.
fn scan(src: &str, module: &[String]) -> FileScan {
    let toks = lex(src);
    let mut out = FileScan::default();
    // Innermost module last, with the brace depth inside its body.
    let mut scopes: Vec<(ModPath, usize)> = vec![(module.to_vec(), 0)];
    let mut depth = 0usize;
    let mut path_attr: Option<String> = None;
    let mut i = 0;
    while i < toks.len() {
        let scope = scopes.last().map(|(m, _)| m.clone()).unwrap_or_default();
        match &toks[i].tok {
            Tok::Punct('#') => {
                let inner = is_punct(&toks, i + 1, '!');
                let open = if inner { i + 2 } else { i + 1 };
                if !is_punct(&toks, open, '[') {
                    i += 1;
                    continue;
                }
                let close = matching_close(&toks, open);
                let body: Vec<&Tok> = toks[open + 1..close.min(toks.len())]
                    .iter()
                    .map(|t| &t.tok)
                    .collect();
                let cfg_test = matches!(
                    body.as_slice(),
                    [Tok::Ident(cfg), Tok::Punct('('), Tok::Ident(test), Tok::Punct(')')]
                        if cfg == "cfg" && test == "test"
                );
                if cfg_test && inner && scopes.len() == 1 {
                    out.test_only = true;
                    return out;
                }
                if cfg_test {
                    // Test code may reach anywhere: skip the item (or the rest of the block).
                    i = if inner {
                        skip_to_block_end(&toks, close + 1)
                    } else {
                        skip_item(&toks, close + 1)
                    };
                    continue;
                }
                if let [Tok::Ident(key), Tok::Punct('='), Tok::Str(value)] = body.as_slice()
                    && key == "path"
                {
                    path_attr = Some(value.clone());
                }
                // The attribute's own tokens are scanned too (`#[derive(crate::X)]`).
                i = open;
            }
            Tok::Ident(word) if word == "mod" => {
                let Some(name) = ident_at(&toks, i + 1) else {
                    i += 1;
                    continue;
                };
                if is_punct(&toks, i + 2, ';') {
                    out.mod_decls.push(ModDecl {
                        scope,
                        name: name.to_owned(),
                        path_attr: path_attr.take(),
                        line: toks[i].line,
                    });
                    i += 3;
                } else if is_punct(&toks, i + 2, '{') {
                    let mut inline = scope;
                    inline.push(name.to_owned());
                    out.inline_mods.push(inline.clone());
                    depth += 1;
                    scopes.push((inline, depth));
                    path_attr = None;
                    i += 3;
                } else {
                    i += 1;
                }
            }
            // `use<'a>` is a precise-capturing bound, not an import.
            Tok::Ident(word) if word == "use" && !is_punct(&toks, i + 1, '<') => {
                i += 1;
                let mut leaves = Vec::new();
                use_tree(&toks, &mut i, &[], &mut leaves);
                while i < toks.len() && !is_punct(&toks, i, ';') {
                    i += 1;
                }
                i += 1;
                for leaf in leaves {
                    if let Some(name) = leaf.name
                        && name != "_"
                    {
                        out.aliases
                            .entry(scope.clone())
                            .or_default()
                            .insert(name, leaf.segs.clone());
                    }
                    out.refs.push(RawRef {
                        scope: scope.clone(),
                        segs: leaf.segs,
                        line: leaf.line,
                    });
                }
            }
            Tok::Ident(first)
                if tok_at(&toks, i + 1) == Some(&Tok::PathSep)
                    && (i == 0 || tok_at(&toks, i - 1) != Some(&Tok::PathSep)) =>
            {
                // An inline path: `crate::a::B`, `super::f`, or `name::x` where `name` may be
                // something a `use` brought in (sorted out once every module is known).
                let mut segs = vec![first.clone()];
                let line = toks[i].line;
                i += 1;
                while tok_at(&toks, i) == Some(&Tok::PathSep) {
                    let Some(next) = ident_at(&toks, i + 1) else {
                        break;
                    };
                    segs.push(next.to_owned());
                    i += 2;
                }
                out.refs.push(RawRef { scope, segs, line });
            }
            Tok::Punct('(' | '[' | '{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct(c @ (')' | ']' | '}')) => {
                depth = depth.saturating_sub(1);
                if scopes.len() > 1 && scopes.last().is_some_and(|(_, open)| depth < *open) {
                    scopes.pop();
                }
                if *c == '}' {
                    path_attr = None;
                }
                i += 1;
            }
            Tok::Punct(';') => {
                path_attr = None;
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Where a path written in `scope` leads, as segments from the crate root; `None` when it
/// leaves the crate (another crate, the prelude, a local item of no interest).
fn absolute(
    scope: &[String],
    segs: &[String],
    aliases: &Aliases,
    modules: &BTreeSet<ModPath>,
) -> Option<Vec<String>> {
    absolute_within(scope, segs, aliases, modules, 0)
}

fn absolute_within(
    scope: &[String],
    segs: &[String],
    aliases: &Aliases,
    modules: &BTreeSet<ModPath>,
    hops: u8,
) -> Option<Vec<String>> {
    let (first, mut rest) = segs.split_first()?;
    let mut base = scope.to_vec();
    match first.as_str() {
        "crate" => base.clear(),
        "self" => {}
        "super" => {
            base.pop()?;
        }
        name => {
            let mut child = scope.to_vec();
            child.push(name.to_owned());
            if modules.contains(&child) {
                rest = segs;
            } else {
                let target = aliases.get(scope)?.get(name)?;
                if hops >= 8 || target.first() == Some(first) {
                    return None;
                }
                let mut joined = target.clone();
                joined.extend_from_slice(rest);
                return absolute_within(scope, &joined, aliases, modules, hops + 1);
            }
        }
    }
    while rest.first().is_some_and(|s| s == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    // `self` inside a group (`use a::{self, b}`) names the group's own path.
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// The deepest module `path` names.
fn module_of(path: &[String], modules: &BTreeSet<ModPath>) -> ModPath {
    (0..=path.len())
        .rev()
        .map(|len| path[..len].to_vec())
        .find(|prefix| modules.contains(prefix))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The crate

/// One path from module `from` into module `to`.
#[derive(Debug, Clone)]
struct Reference {
    from: ModPath,
    to: ModPath,
    file: String,
    line: usize,
    /// The path as written.
    text: String,
}

struct Crate {
    /// Every module, with the file it is written in.
    modules: BTreeMap<ModPath, String>,
    refs: Vec<Reference>,
}

fn load_crate() -> Crate {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shown_from = manifest.parent().unwrap_or(manifest);
    load_crate_from(&manifest.join("src"), shown_from)
}

/// The library rooted at `src/lib.rs`; files are named relative to `shown_from`.
fn load_crate_from(src: &Path, shown_from: &Path) -> Crate {
    let mut modules = BTreeMap::new();
    let mut scans = Vec::new();
    // (module, its file, the directory its `mod name;` files live in)
    let mut queue: Vec<(ModPath, PathBuf, PathBuf)> =
        vec![(Vec::new(), src.join("lib.rs"), src.to_path_buf())];
    while let Some((module, file, child_dir)) = queue.pop() {
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|err| panic!("reading {}: {err}", file.display()));
        let shown = file
            .strip_prefix(shown_from)
            .unwrap_or(&file)
            .display()
            .to_string();
        let scan = scan(&text, &module);
        if scan.test_only {
            continue;
        }
        for decl in &scan.mod_decls {
            let mut child = decl.scope.clone();
            child.push(decl.name.clone());
            let located = if let Some(attr) = &decl.path_attr {
                let path = file.parent().unwrap_or(src).join(attr);
                let dir = path.parent().unwrap_or(src).to_path_buf();
                (path, dir)
            } else {
                // Inline modules nest their files' directory: `mod a { mod b; }` is `a/b.rs`.
                let mut dir = child_dir.clone();
                dir.extend(&decl.scope[module.len()..]);
                let dir = dir.join(&decl.name);
                let flat = dir.with_extension("rs");
                let nested = dir.join("mod.rs");
                match (flat.exists(), nested.exists()) {
                    (true, false) => (flat, dir),
                    (false, true) => (nested, dir),
                    _ => panic!(
                        "{shown}:{}: `mod {};` wants exactly one of {} and {}",
                        decl.line,
                        decl.name,
                        flat.display(),
                        nested.display()
                    ),
                }
            };
            queue.push((child, located.0, located.1));
        }
        modules.insert(module.clone(), shown.clone());
        for inline in &scan.inline_mods {
            modules.insert(inline.clone(), shown.clone());
        }
        scans.push((shown, scan));
    }
    let known: BTreeSet<ModPath> = modules.keys().cloned().collect();
    let mut refs: Vec<Reference> = scans
        .iter()
        .flat_map(|(file, scan)| {
            let known = &known;
            scan.refs.iter().filter_map(move |raw| {
                let path = absolute(&raw.scope, &raw.segs, &scan.aliases, known)?;
                Some(Reference {
                    from: raw.scope.clone(),
                    to: module_of(&path, known),
                    file: file.clone(),
                    line: raw.line,
                    text: raw.segs.join("::").trim_end_matches("::self").to_owned(),
                })
            })
        })
        .collect();
    refs.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Crate { modules, refs }
}

// ---------------------------------------------------------------------------------------------
// Cycles among siblings

/// The first reference that makes an edge, and how many do.
#[derive(Debug, Clone)]
struct Evidence {
    file: String,
    line: usize,
    text: String,
    count: usize,
}

impl Evidence {
    fn describe(&self) -> String {
        let more = if self.count > 1 {
            format!(", {} references", self.count)
        } else {
            String::new()
        };
        format!("{}:{} ({}{more})", self.file, self.line, self.text)
    }
}

/// Edges between the children of one module: from child -> to child -> evidence.
type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

/// For every module, the references between its children, each lifted to the two children it
/// runs between. A reference between a module and its ancestor or descendant is no edge.
fn sibling_graphs(refs: &[Reference]) -> BTreeMap<ModPath, Graph> {
    let mut graphs: BTreeMap<ModPath, Graph> = BTreeMap::new();
    for r in refs {
        let common = r.from.iter().zip(&r.to).take_while(|(a, b)| a == b).count();
        if common == r.from.len() || common == r.to.len() {
            continue;
        }
        let parent = r.from[..common].to_vec();
        let evidence = graphs
            .entry(parent)
            .or_default()
            .entry(r.from[common].clone())
            .or_default()
            .entry(r.to[common].clone())
            .or_insert_with(|| Evidence {
                file: r.file.clone(),
                line: r.line,
                text: r.text.clone(),
                count: 0,
            });
        evidence.count += 1;
    }
    graphs
}

/// Every elementary cycle of `graph` (up to `cap`), each from its smallest node, shortest first.
fn cycles(graph: &Graph, cap: usize) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph
        .iter()
        .flat_map(|(from, tos)| std::iter::once(from).chain(tos.keys()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index = |name: &String| nodes.iter().position(|n| *n == name);
    let adjacent: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            graph
                .get(*n)
                .map(|tos| tos.keys().filter_map(index).collect())
                .unwrap_or_default()
        })
        .collect();
    let mut found = Vec::new();
    for start in 0..nodes.len() {
        // Only nodes after `start` that lie on a cycle through it: each cycle is found once,
        // from its smallest node, and the search never wanders into dead ends.
        let above = |from: usize, to: usize| from >= start && to >= start;
        let allowed: BTreeSet<usize> = reachable(&adjacent, start, above)
            .into_iter()
            .filter(|&n| reachable(&adjacent, n, above).contains(&start))
            .collect();
        let mut path = vec![start];
        walk(&adjacent, &allowed, &mut path, &mut found, cap);
        if found.len() >= cap {
            break;
        }
    }
    let mut named: Vec<Vec<String>> = found
        .into_iter()
        .map(|cycle| cycle.into_iter().map(|n| nodes[n].clone()).collect())
        .collect();
    named.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    named
}

/// Nodes reachable from `from` along edges `keep` accepts (including `from`).
fn reachable(
    adjacent: &[Vec<usize>],
    from: usize,
    keep: impl Fn(usize, usize) -> bool,
) -> BTreeSet<usize> {
    let mut seen = BTreeSet::from([from]);
    let mut stack = vec![from];
    while let Some(node) = stack.pop() {
        for &next in &adjacent[node] {
            if keep(node, next) && seen.insert(next) {
                stack.push(next);
            }
        }
    }
    seen
}

fn walk(
    adjacent: &[Vec<usize>],
    allowed: &BTreeSet<usize>,
    path: &mut Vec<usize>,
    found: &mut Vec<Vec<usize>>,
    cap: usize,
) {
    let Some(&node) = path.last() else {
        return;
    };
    for &next in &adjacent[node] {
        if found.len() >= cap {
            return;
        }
        if next == path[0] {
            found.push(path.clone());
        } else if allowed.contains(&next) && !path.contains(&next) {
            path.push(next);
            walk(adjacent, allowed, path, found, cap);
            path.pop();
        }
    }
}

/// Every cycle among siblings, with the file:line behind each edge; empty when there is none.
fn cycle_report(refs: &[Reference]) -> String {
    let mut report = String::new();
    for (parent, graph) in sibling_graphs(refs) {
        let found = cycles(&graph, MAX_CYCLES);
        if found.is_empty() {
            continue;
        }
        let members: BTreeSet<&String> = found.iter().flatten().collect();
        let members: Vec<&str> = members.into_iter().map(String::as_str).collect();
        let _ = writeln!(
            report,
            "children of `{}`: {} cycle(s) among {}",
            label(&parent),
            found.len(),
            members.join(", ")
        );
        for cycle in &found {
            let mut closed = cycle.clone();
            closed.push(cycle[0].clone());
            let _ = writeln!(report, "  {}", closed.join(" -> "));
            for pair in closed.windows(2) {
                let evidence = &graph[&pair[0]][&pair[1]];
                let _ = writeln!(
                    report,
                    "      {} -> {}: {}",
                    pair[0],
                    pair[1],
                    evidence.describe()
                );
            }
        }
        if found.len() >= MAX_CYCLES {
            let _ = writeln!(
                report,
                "  ... and possibly more (printing stops at {MAX_CYCLES})"
            );
        }
    }
    report
}

// ---------------------------------------------------------------------------------------------
// Layering

/// Where the layering table breaks; empty when it holds.
fn layering_report(
    modules: &BTreeMap<ModPath, String>,
    refs: &[Reference],
    layers: &[&[&str]],
    leaves: &[&str],
) -> String {
    let leaf_rank = layers.len();
    let rank = |name: &str| {
        if leaves.contains(&name) {
            return Some(leaf_rank);
        }
        layers.iter().position(|row| row.contains(&name))
    };
    let layer_name = |r: usize| {
        if r == leaf_rank {
            "the shared leaves".to_owned()
        } else {
            format!("layer {} [{}]", r + 1, layers[r].join(", "))
        }
    };
    let top_level: BTreeMap<&str, &String> = modules
        .iter()
        .filter(|(path, _)| path.len() == 1)
        .map(|(path, file)| (path[0].as_str(), file))
        .collect();
    let mut report = String::new();
    for (name, file) in &top_level {
        if rank(name).is_none() {
            let _ = writeln!(
                report,
                "`{name}` ({file}) is not in the layering table: add it to LAYERS or \
                 SHARED_LEAVES in agent/tests/module_graph.rs"
            );
        }
    }
    for name in layers.iter().flat_map(|row| row.iter()).chain(leaves) {
        if !top_level.contains_key(name) {
            let _ = writeln!(
                report,
                "the layering table names `{name}`, which is not a top-level module of the crate"
            );
        }
    }
    let mut broken: BTreeMap<(&str, &str), Evidence> = BTreeMap::new();
    for r in refs {
        let (Some(from), Some(to)) = (r.from.first(), r.to.first()) else {
            continue;
        };
        if from == to {
            continue;
        }
        let (Some(from_rank), Some(to_rank)) = (rank(from), rank(to)) else {
            continue;
        };
        if to_rank == leaf_rank || to_rank > from_rank {
            continue;
        }
        broken
            .entry((from, to))
            .or_insert_with(|| Evidence {
                file: r.file.clone(),
                line: r.line,
                text: r.text.clone(),
                count: 0,
            })
            .count += 1;
    }
    for ((from, to), evidence) in &broken {
        let (from_rank, to_rank) = (rank(from).unwrap_or(0), rank(to).unwrap_or(0));
        let place = if from_rank == to_rank {
            "its own layer"
        } else {
            "a layer above it"
        };
        let _ = writeln!(
            report,
            "`{from}` ({}) uses `{to}` ({}), {place}: {}",
            layer_name(from_rank),
            layer_name(to_rank),
            evidence.describe()
        );
    }
    report
}

// ---------------------------------------------------------------------------------------------
// The scanner's own tests

mod scanner {
    use super::*;

    fn path(text: &str) -> Vec<String> {
        if text.is_empty() {
            Vec::new()
        } else {
            text.split("::").map(str::to_owned).collect()
        }
    }

    /// The absolute paths `src` (module `module`) refers to, as `a::b` text with their line,
    /// given the crate's `modules`.
    fn refs_in(src: &str, module: &str, modules: &[&str]) -> Vec<(String, usize)> {
        let scan = scan(src, &path(module));
        let known: BTreeSet<ModPath> = modules.iter().map(|m| path(m)).collect();
        scan.refs
            .iter()
            .filter_map(|raw| {
                let abs = absolute(&raw.scope, &raw.segs, &scan.aliases, &known)?;
                Some((abs.join("::"), raw.line))
            })
            .collect()
    }

    fn pairs(expected: &[(&str, usize)]) -> Vec<(String, usize)> {
        expected
            .iter()
            .map(|(p, l)| ((*p).to_owned(), *l))
            .collect()
    }

    #[test]
    fn nested_use_groups_across_lines() {
        let src = "use std::io;\n\
                   use crate::{\n\
                       a::{b, c::D},\n\
                       e::f as g,\n\
                       h::{self, i::*},\n\
                   };\n\
                   pub use crate::j::K;\n";
        assert_eq!(
            refs_in(src, "m", &[]),
            pairs(&[
                ("a::b", 3),
                ("a::c::D", 3),
                ("e::f", 4),
                ("h", 5),
                ("h::i", 5),
                ("j::K", 7),
            ])
        );
    }

    #[test]
    fn comments_and_strings_are_not_references() {
        let src = r####"//! crate::inner_doc
/// crate::outer_doc
// crate::line
/* crate::block /* crate::nested */ crate::still_comment */
fn f<'a>(x: &'a str) -> char {
    let s = "crate::string \" crate::escaped";
    let r = r#"crate::raw " crate::raw_quote"#;
    let b = b"crate::bytes";
    let q = '"';
    let e = '\'';
    crate::real::call(s, r, b, q, e);
    'x'
}
"####;
        assert_eq!(refs_in(src, "", &[]), pairs(&[("real::call", 11)]));
    }

    #[test]
    fn super_and_self_resolve_from_the_files_module() {
        let src = "use super::{heavy::Heavy, Totals};\n\
                   use self::inner::Y;\n\
                   fn f() { super::super::prefix::parse(); super::take(); }\n";
        assert_eq!(
            refs_in(src, "volume::engine", &[]),
            pairs(&[
                ("volume::heavy::Heavy", 1),
                ("volume::Totals", 1),
                ("volume::engine::inner::Y", 2),
                ("prefix::parse", 3),
                ("volume::take", 3),
            ])
        );
    }

    #[test]
    fn super_inside_an_inline_module_is_relative_to_it() {
        let src = "mod inner {\n    use super::q;\n}\nuse super::r;\n";
        let scan = scan(src, &path("a::m"));
        assert_eq!(scan.inline_mods, vec![path("a::m::inner")]);
        assert_eq!(
            refs_in(src, "a::m", &[]),
            pairs(&[("a::m::q", 2), ("a::r", 4)])
        );
    }

    #[test]
    fn test_code_is_skipped() {
        let src = "use crate::kept;\n\
                   #[cfg(test)]\n\
                   fn helper() { crate::test_helper::x(); }\n\
                   fn later() { crate::after::y(); }\n\
                   #[cfg(test)]\n\
                   mod tests {\n\
                       use crate::anywhere;\n\
                       fn t() { crate::deep::z(); }\n\
                   }\n";
        assert_eq!(
            refs_in(src, "", &[]),
            pairs(&[("kept", 1), ("after::y", 4)])
        );
        let whole = "//! Test support.\n#![cfg(test)]\nuse crate::anything;\n";
        assert!(scan(whole, &[]).test_only);
    }

    #[test]
    fn inline_paths_stop_at_generics_and_visibility_is_no_path() {
        let src = "pub(crate) fn f() -> crate::x::Y<u8> {\n\
                   crate::x::Y::<u8>::new()\n\
                   }\n\
                   pub(super) struct S;\n\
                   macro_rules! m { () => { $crate::mac::it() } }\n";
        assert_eq!(
            refs_in(src, "a", &[]),
            pairs(&[("x::Y", 1), ("x::Y", 2), ("mac::it", 5)])
        );
    }

    #[test]
    fn names_brought_in_by_use_lead_on() {
        let src = "use crate::volume;\n\
                   use crate::dataplane as plane;\n\
                   fn f() { volume::heavy::report(); plane::open(); std::mem::drop(1); }\n";
        assert_eq!(
            refs_in(src, "owner", &["volume", "volume::heavy", "dataplane"]),
            pairs(&[
                ("volume", 1),
                ("dataplane", 2),
                ("volume::heavy::report", 3),
                ("dataplane::open", 3),
            ])
        );
    }

    #[test]
    fn bare_paths_to_child_modules_stay_inside() {
        let src = "mod volume;\npub use volume::{DrainCount, VolumeReader};\n";
        let scan = scan(src, &path("dataplane"));
        assert_eq!(scan.mod_decls.len(), 1);
        assert_eq!(scan.mod_decls[0].name, "volume");
        assert_eq!(
            refs_in(src, "dataplane", &["dataplane", "dataplane::volume"]),
            pairs(&[
                ("dataplane::volume::DrainCount", 2),
                ("dataplane::volume::VolumeReader", 2),
            ])
        );
    }

    #[test]
    fn mod_declarations_and_path_attributes() {
        let src = "pub mod a;\n\
                   #[path = \"support/b.rs\"]\n\
                   mod b;\n\
                   #[cfg(test)]\n\
                   mod tests;\n\
                   mod inline { pub mod c; }\n";
        let scan = scan(src, &[]);
        let decls: Vec<(String, String, Option<String>)> = scan
            .mod_decls
            .iter()
            .map(|d| (label(&d.scope), d.name.clone(), d.path_attr.clone()))
            .collect();
        assert_eq!(
            decls,
            vec![
                ("crate".to_owned(), "a".to_owned(), None),
                (
                    "crate".to_owned(),
                    "b".to_owned(),
                    Some("support/b.rs".to_owned())
                ),
                ("inline".to_owned(), "c".to_owned(), None),
            ]
        );
    }

    #[test]
    fn paths_resolve_to_the_deepest_existing_module() {
        let known: BTreeSet<ModPath> = [path(""), path("a"), path("a::b")].into();
        assert_eq!(module_of(&path("a::b::C::new"), &known), path("a::b"));
        assert_eq!(module_of(&path("a::Z"), &known), path("a"));
        assert_eq!(module_of(&path("error_chain"), &known), path(""));
    }

    fn reference(from: &str, to: &str, line: usize) -> Reference {
        Reference {
            from: path(from),
            to: path(to),
            file: "src/x.rs".to_owned(),
            line,
            text: format!("crate::{to}"),
        }
    }

    #[test]
    fn references_lift_to_the_children_of_their_common_ancestor() {
        let refs = [
            reference("a::x", "a::y::deep", 1),
            reference("a", "a::y", 2),
            reference("a::y", "", 3),
            reference("b::q", "a::x", 4),
        ];
        let graphs = sibling_graphs(&refs);
        let edges: Vec<(String, String, String)> = graphs
            .iter()
            .flat_map(|(parent, graph)| {
                graph.iter().flat_map(move |(from, tos)| {
                    tos.keys()
                        .map(move |to| (label(parent), from.clone(), to.clone()))
                })
            })
            .collect();
        let expected = [("crate", "b", "a"), ("a", "x", "y")];
        assert_eq!(
            edges,
            expected
                .iter()
                .map(|(p, f, t)| ((*p).to_owned(), (*f).to_owned(), (*t).to_owned()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_cycle_is_reported_once_with_its_evidence() {
        let refs = [
            reference("a", "b", 1),
            reference("b", "a", 2),
            reference("b", "c", 3),
            reference("c", "a", 4),
            reference("c", "d", 5),
        ];
        let graph = sibling_graphs(&refs).remove(&path("")).unwrap_or_default();
        let found = cycles(&graph, MAX_CYCLES);
        assert_eq!(found, vec![path("a::b"), path("a::b::c")]);
        let report = cycle_report(&refs);
        assert!(report.contains("  a -> b -> a\n"), "{report}");
        assert!(
            report.contains("      c -> a: src/x.rs:4 (crate::a)\n"),
            "{report}"
        );
        assert!(cycle_report(&refs[..1]).is_empty());
    }

    #[test]
    fn layering_flags_upward_uses_and_unknown_modules() {
        let modules: BTreeMap<ModPath, String> = ["", "top", "mid", "leaf", "stray"]
            .iter()
            .map(|m| (path(m), format!("src/{m}.rs")))
            .collect();
        let refs = [
            reference("top", "mid", 1),
            reference("mid", "leaf", 2),
            reference("leaf", "", 3),
            reference("mid", "top", 4),
        ];
        let layers: &[&[&str]] = &[&["top"], &["mid"], &["gone"]];
        let report = layering_report(&modules, &refs, layers, &["leaf"]);
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(
            lines,
            [
                "`stray` (src/stray.rs) is not in the layering table: add it to LAYERS or \
                 SHARED_LEAVES in agent/tests/module_graph.rs",
                "the layering table names `gone`, which is not a top-level module of the crate",
                "`mid` (layer 2 [mid]) uses `top` (layer 1 [top]), a layer above it: \
                 src/x.rs:4 (crate::top)",
            ]
        );
    }
}
