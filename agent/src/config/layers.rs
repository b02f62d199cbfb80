//! The main file and its drop-ins (`conf.d/*.toml` beside it, in name order) merged into one
//! TOML text, with a map back from every byte of that text to the file and offset it came
//! from, so every error still names the right file, line and column.
//!
//! Merging: tables merge key by key; an array of tables (`[[inputs]]`, or an array whose items
//! are all inline tables) is appended to; anything else is a value, and a later one replaces
//! an earlier one (so `inputs = []` clears the inputs). A table in one file and a value under
//! the same key in another is an error naming both places.
//!
//! The merged text is emitted with `[table]` and `[[array]]` headers, each value copied
//! verbatim from its file, so it parses to exactly what the files say; offsets inside a
//! copied value map one to one, keys and headers map to where they were written.
use std::{
    fmt::Write as _,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Serialize;
use toml::de::{DeTable, DeValue};

use super::{ConfigError, ConfigText, Location};

/// At most this many drop-ins are read.
pub const MAX_DROP_INS: usize = 256;
/// The main file and its drop-ins together at most.
pub const MAX_TOTAL_SIZE: u64 = 8 << 20;

/// One file read: its path and text.
pub(super) struct Source {
    pub(super) path: PathBuf,
    pub(super) text: String,
}

/// Where the bytes `start..end` of the merged text came from: `file`'s offset `origin`, and
/// for a copied value (`exact`) every byte after it one to one.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start: usize,
    end: usize,
    file: usize,
    origin: usize,
    exact: bool,
}

#[derive(Debug, Default)]
pub(super) struct SourceMap {
    segments: Vec<Segment>,
}

impl SourceMap {
    /// The file and offset `offset` of the merged text came from.
    pub(super) fn find(&self, offset: usize) -> (usize, usize) {
        let index = self.segments.partition_point(|s| s.start <= offset);
        let Some(segment) = index.checked_sub(1).map(|i| self.segments[i]) else {
            return self.segments.first().map_or((0, 0), |s| (s.file, s.origin));
        };
        if segment.exact && offset < segment.end {
            (segment.file, segment.origin + (offset - segment.start))
        } else {
            (segment.file, segment.origin)
        }
    }
}

/// The files of a configuration and the one text validated from them.
pub(super) struct Layers {
    /// The main file first, then the drop-ins in the order they were merged.
    pub(super) files: Vec<Source>,
    /// The merged text, or the main file's own text when there are no drop-ins.
    pub(super) text: String,
    /// `None` when `text` is the main file's own.
    pub(super) map: Option<SourceMap>,
    tree: Option<Table>,
}

impl Layers {
    /// What [`ConfigText`] validates.
    pub(super) fn config_text(&self) -> ConfigText<'_> {
        ConfigText {
            path: &self.files[0].path,
            text: &self.text,
            layers: self.map.as_ref().map(|map| (map, self.files.as_slice())),
        }
    }

    pub(super) fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

/// The drop-in directory of `main`: `conf.d` beside it.
pub fn drop_in_dir(main: &Path) -> PathBuf {
    main.parent()
        .unwrap_or_else(|| Path::new("/"))
        .join("conf.d")
}

/// Read `main` and its drop-ins, and merge them.
///
/// # Errors
/// A file that cannot be read (or is not a regular file, or too large), too many drop-ins,
/// TOML syntax in any file (at its place), a table/value conflict between two files.
pub(super) fn read(
    main: &Path,
    read_text: &dyn Fn(&Path) -> Result<String, ConfigError>,
) -> Result<Layers, ConfigError> {
    let mut files = vec![Source {
        path: main.to_path_buf(),
        text: read_text(main)?,
    }];
    for path in drop_ins(main)? {
        let text = read_text(&path)?;
        files.push(Source { path, text });
    }
    let total: usize = files.iter().map(|f| f.text.len()).sum();
    if total as u64 > MAX_TOTAL_SIZE {
        return Err(ConfigError::Read {
            path: drop_in_dir(main),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the configuration and its drop-ins are larger than {MAX_TOTAL_SIZE} bytes"
                ),
            ),
        });
    }
    if files.len() == 1 {
        let text = files[0].text.clone();
        return Ok(Layers {
            files,
            text,
            map: None,
            tree: None,
        });
    }
    let mut merged: Option<Table> = None;
    for (index, file) in files.iter().enumerate() {
        let document = DeTable::parse(&file.text).map_err(|err| {
            ConfigText {
                path: &file.path,
                text: &file.text,
                layers: None,
            }
            .toml_error(&err)
        })?;
        let table = Table::from_de(document.get_ref(), index, 0);
        match &mut merged {
            None => merged = Some(table),
            Some(into) => into.merge(table, &files, &mut Vec::new())?,
        }
    }
    let tree = merged.unwrap_or_default();
    let mut emitter = Emitter::new(&files, false);
    emitter.table(&tree, &mut Vec::new(), &mut Vec::new());
    Ok(Layers {
        text: emitter.out,
        map: Some(SourceMap {
            segments: emitter.segments,
        }),
        files,
        tree: Some(tree),
    })
}

/// The drop-ins of `main`, in name order: regular `*.toml` files not starting with `.`.
fn drop_ins(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = drop_in_dir(main);
    let read_error = |source| ConfigError::Read {
        path: dir.clone(),
        source,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(read_error(err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(read_error)?.file_name();
        let bytes = name.as_encoded_bytes();
        if bytes.ends_with(b".toml") && !bytes.starts_with(b".") {
            names.push(name);
            if names.len() > MAX_DROP_INS {
                return Err(read_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("more than {MAX_DROP_INS} drop-ins"),
                )));
            }
        }
    }
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names.into_iter().map(|name| dir.join(name)).collect())
}

/// A place in one of the files.
#[derive(Clone, Copy, Debug, Default)]
struct Origin {
    file: usize,
    offset: usize,
}

#[derive(Debug)]
enum Node {
    Table(Table),
    Tables(Vec<Table>),
    /// A value: its text is `span` of the file.
    Value {
        file: usize,
        span: Range<usize>,
    },
}

#[derive(Debug, Default)]
struct Table {
    /// Where it was opened (a header, a dotted key, an inline table).
    origin: Origin,
    /// In the order first written.
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    key: String,
    /// Where the key was written (the latest file that set it).
    origin: Origin,
    node: Node,
}

impl Table {
    fn from_de(table: &DeTable<'_>, file: usize, offset: usize) -> Self {
        let mut entries: Vec<(usize, Entry)> = table
            .iter()
            .map(|(key, value)| {
                let node = match value.get_ref() {
                    DeValue::Table(inner) => {
                        Node::Table(Self::from_de(inner, file, value.span().start))
                    }
                    DeValue::Array(items)
                        if !items.is_empty()
                            && items
                                .iter()
                                .all(|item| matches!(item.get_ref(), DeValue::Table(_))) =>
                    {
                        Node::Tables(
                            items
                                .iter()
                                .filter_map(|item| match item.get_ref() {
                                    DeValue::Table(inner) => {
                                        Some(Self::from_de(inner, file, item.span().start))
                                    }
                                    _ => None,
                                })
                                .collect(),
                        )
                    }
                    _ => Node::Value {
                        file,
                        span: value.span(),
                    },
                };
                let at = key.span().start;
                (
                    at,
                    Entry {
                        key: key.get_ref().to_string(),
                        origin: Origin { file, offset: at },
                        node,
                    },
                )
            })
            .collect();
        entries.sort_by_key(|(at, _)| *at);
        Self {
            origin: Origin { file, offset },
            entries: entries.into_iter().map(|(_, entry)| entry).collect(),
        }
    }

    /// `other` (a later file) over `self`.
    fn merge(
        &mut self,
        other: Self,
        files: &[Source],
        path: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        for entry in other.entries {
            let Some(existing) = self.entries.iter_mut().find(|e| e.key == entry.key) else {
                self.entries.push(entry);
                continue;
            };
            path.push(entry.key.clone());
            match (&mut existing.node, entry.node) {
                (Node::Table(into), Node::Table(from)) => into.merge(from, files, path)?,
                (Node::Tables(into), Node::Tables(from)) => into.extend(from),
                (Node::Table(_), _) | (_, Node::Table(_)) => {
                    let earlier = location(files, existing.origin);
                    return Err(ConfigError::Invalid {
                        location: location(files, entry.origin),
                        key: path.join("."),
                        message: format!(
                            "a table in one file and a value in the other: {earlier} has it too"
                        ),
                    });
                }
                (_, node) => {
                    existing.node = node;
                    existing.origin = entry.origin;
                }
            }
            let _: Option<String> = path.pop();
        }
        Ok(())
    }
}

fn location(files: &[Source], origin: Origin) -> Location {
    let file = &files[origin.file];
    ConfigText {
        path: &file.path,
        text: &file.text,
        layers: None,
    }
    .location(origin.offset)
}

/// A key as TOML writes it: bare when it can be.
fn key_text(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return key.to_owned();
    }
    let mut out = String::from("\"");
    for c in key.chars() {
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

/// Writes the merged tree; with `annotate`, every key and header says where it came from.
struct Emitter<'a> {
    files: &'a [Source],
    annotate: bool,
    out: String,
    segments: Vec<Segment>,
    values: Vec<ShownValue>,
}

impl<'a> Emitter<'a> {
    const fn new(files: &'a [Source], annotate: bool) -> Self {
        Self {
            files,
            annotate,
            out: String::new(),
            segments: Vec::new(),
            values: Vec::new(),
        }
    }

    fn mapped(&mut self, text: &str, origin: Origin, exact: bool) {
        let start = self.out.len();
        self.out.push_str(text);
        self.segments.push(Segment {
            start,
            end: self.out.len(),
            file: origin.file,
            origin: origin.offset,
            exact,
        });
    }

    fn place(&self, origin: Origin) -> String {
        let at = location(self.files, origin);
        format!("{}:{}", at.path.display(), at.line)
    }

    fn header(&mut self, text: &str, origin: Origin) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        self.mapped(text, origin, false);
        if self.annotate {
            let place = self.place(origin);
            let _ = write!(self.out, "  # {place}");
        }
        self.out.push('\n');
    }

    /// `table` at `path` (its TOML name, for headers) known as `shown` (with array indices,
    /// for `config --show --json`).
    fn table(&mut self, table: &Table, path: &mut Vec<String>, shown: &mut Vec<String>) {
        for entry in &table.entries {
            let Node::Value { file, span } = &entry.node else {
                continue;
            };
            let value = &self.files[*file].text[span.clone()];
            if self.annotate {
                let place = self.place(entry.origin);
                let at = location(self.files, entry.origin);
                shown.push(entry.key.clone());
                self.values.push(ShownValue {
                    key: shown.join("."),
                    value: json_value(value),
                    file: at.path,
                    line: at.line,
                });
                let _: Option<String> = shown.pop();
                if value.contains('\n') {
                    let _ = writeln!(self.out, "# {place}");
                }
            }
            self.mapped(&key_text(&entry.key), entry.origin, false);
            self.out.push_str(" = ");
            self.mapped(
                value,
                Origin {
                    file: *file,
                    offset: span.start,
                },
                true,
            );
            if self.annotate && !value.contains('\n') {
                let place = self.place(entry.origin);
                let _ = write!(self.out, "  # {place}");
            }
            self.out.push('\n');
        }
        for entry in &table.entries {
            path.push(key_text(&entry.key));
            match &entry.node {
                Node::Table(inner) => {
                    shown.push(entry.key.clone());
                    let header = format!("[{}]", path.join("."));
                    self.header(&header, inner.origin);
                    self.table(inner, path, shown);
                    let _: Option<String> = shown.pop();
                }
                Node::Tables(items) => {
                    for (index, item) in items.iter().enumerate() {
                        shown.push(format!("{}[{index}]", entry.key));
                        let header = format!("[[{}]]", path.join("."));
                        self.header(&header, item.origin);
                        self.table(item, path, shown);
                        let _: Option<String> = shown.pop();
                    }
                }
                Node::Value { .. } => {}
            }
            let _: Option<String> = path.pop();
        }
    }
}

/// A value's TOML text as JSON (its text when it does not convert).
fn json_value(text: &str) -> serde_json::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .and_then(|value| serde_json::to_value(value).ok())
        .unwrap_or_else(|| serde_json::Value::String(text.to_owned()))
}

/// `xdpguard config --show`: the effective configuration.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The files read, in the order they were merged.
    pub files: Vec<PathBuf>,
    /// The merged configuration as TOML, every key and header followed by `# FILE:LINE`.
    pub text: String,
    /// Every value set, with its dotted key (`inputs[0].name`) and where it was set.
    pub values: Vec<ShownValue>,
}

#[derive(Debug, Serialize)]
pub struct ShownValue {
    pub key: String,
    pub value: serde_json::Value,
    pub file: PathBuf,
    pub line: usize,
}

/// Annotate what `layers` read.
pub(super) fn show(layers: &Layers) -> Shown {
    let single;
    let tree = match &layers.tree {
        Some(tree) => tree,
        None => {
            // One file: its own tree (it parsed already, so this parse succeeds too).
            single = DeTable::parse(&layers.text)
                .map(|doc| Table::from_de(doc.get_ref(), 0, 0))
                .unwrap_or_default();
            &single
        }
    };
    let mut emitter = Emitter::new(&layers.files, true);
    emitter.table(tree, &mut Vec::new(), &mut Vec::new());
    Shown {
        files: layers.paths(),
        text: emitter.out,
        values: emitter.values,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::Config;

    /// A scratch `xdpguard.toml` with a `conf.d`; removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str, main: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xdpguard-layers-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("conf.d")).unwrap();
            std::fs::write(dir.join("xdpguard.toml"), main).unwrap();
            Self(dir)
        }

        fn main(&self) -> PathBuf {
            self.0.join("xdpguard.toml")
        }

        fn drop_in(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join("conf.d").join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        fn error(&self) -> String {
            Config::read(&self.main()).unwrap_err().to_string()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MAIN: &str = "dry_run = false\n\n[[interfaces]]\nname = \"eth0\"\n\n[metrics]\nlisten = \"127.0.0.1:9477\"\ntop_blocked = 7\n";

    #[test]
    fn drop_ins_merge_in_name_order() {
        let dir = Dir::new("order", MAIN);
        dir.drop_in(
            "20-later.toml",
            "dry_run = false\n[metrics]\nlisten = \"127.0.0.1:9600\"\n",
        );
        dir.drop_in(
            "10-first.toml",
            "dry_run = true\n[[interfaces]]\nname = \"eth1\"\nmode = \"generic\"\n[metrics]\nlisten = \"127.0.0.1:9500\"\n",
        );
        // Ignored: not *.toml, or hidden.
        dir.drop_in("README", "not toml at all [");
        dir.drop_in(".editing.toml", "not toml at all [");
        let config = Config::read(&dir.main()).unwrap();
        // The later drop-in wins each scalar it sets; what it leaves stays.
        assert!(!config.dry_run);
        assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:9600");
        assert_eq!(config.metrics.top_blocked, 7);
        let names: Vec<&str> = config.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert_eq!(
            Config::files(&dir.main()).unwrap(),
            [
                dir.main(),
                dir.0.join("conf.d/10-first.toml"),
                dir.0.join("conf.d/20-later.toml")
            ]
        );
        // A plain array replaces; `inputs = []` style clearing of an array of tables.
        let clear = dir.drop_in("30-clear.toml", "interfaces = []\n");
        let err = dir.error();
        assert!(
            err.starts_with(&format!("{}:1:14: interfaces: ", clear.display())),
            "{err}"
        );
    }

    #[test]
    fn an_error_in_a_drop_in_names_its_file_line_column_and_key() {
        let dir = Dir::new("errors", MAIN);
        let bad = dir.drop_in("10-bad.toml", "\n[metrics]\nlisten = \"nonsense\"\n");
        let err = dir.error();
        assert!(
            err.starts_with(&format!("{}:3:10: metrics.listen: ", bad.display())),
            "{err}"
        );
        // Inside a multi-line array, the column of the bad item.
        std::fs::write(
            &bad,
            "[allowlist]\nprefixes = [\n  \"192.0.2.0/24\",\n  \"10.0.0.300/8\",\n]\n",
        )
        .unwrap();
        let err = dir.error();
        assert!(
            err.starts_with(&format!("{}:4:3: allowlist.prefixes: ", bad.display())),
            "{err}"
        );
        // An unknown key, with the table holding it.
        std::fs::write(&bad, "[guard]\nbogus = 1\n").unwrap();
        let err = dir.error();
        assert!(
            err.starts_with(&format!("{}:2:1: ", bad.display())),
            "{err}"
        );
        assert!(err.contains("guard: unknown field `bogus`"), "{err}");
        // Syntax.
        std::fs::write(&bad, "[guard\n").unwrap();
        let err = dir.error();
        assert!(err.starts_with(&format!("{}:1:", bad.display())), "{err}");
        // The main file's own errors keep their place.
        std::fs::write(&bad, "dry_run = true\n").unwrap();
        std::fs::write(
            dir.main(),
            MAIN.replace("top_blocked = 7", "top_blocked = -1"),
        )
        .unwrap();
        let err = dir.error();
        assert!(
            err.starts_with(&format!(
                "{}:8:15: metrics.top_blocked: ",
                dir.main().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_table_in_one_file_and_a_value_in_another_is_an_error_naming_both() {
        let dir = Dir::new("conflict", MAIN);
        let bad = dir.drop_in("10-value.toml", "metrics = 3\n");
        let err = dir.error();
        assert!(
            err.starts_with(&format!("{}:1:1: metrics: ", bad.display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("{}:6", dir.main().display())),
            "{err}"
        );
    }

    #[test]
    fn a_fifo_among_the_drop_ins_is_refused_by_name() {
        let dir = Dir::new("fifo", MAIN);
        let fifo = dir.0.join("conf.d/50-pipe.toml");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let err = dir.error();
        assert!(err.contains(&fifo.display().to_string()), "{err}");
    }

    #[test]
    fn show_names_where_each_value_came_from_and_parses_back() {
        let dir = Dir::new("show", MAIN);
        let later = dir.drop_in(
            "10-local.toml",
            "[metrics]\nlisten = \"127.0.0.1:9600\"\n\n[[interfaces]]\nname = \"eth1\"\n",
        );
        let shown = Config::show(&dir.main()).unwrap();
        assert_eq!(shown.files, [dir.main(), later.clone()]);
        assert!(
            shown.text.contains(&format!(
                "listen = \"127.0.0.1:9600\"  # {}:2",
                later.display()
            )),
            "{}",
            shown.text
        );
        assert!(
            shown
                .text
                .contains(&format!("top_blocked = 7  # {}:8", dir.main().display())),
            "{}",
            shown.text
        );
        assert_eq!(
            Config::parse(&shown.text, &dir.main()).unwrap(),
            Config::read(&dir.main()).unwrap()
        );
        let value = |key: &str| {
            shown
                .values
                .iter()
                .find(|v| v.key == key)
                .unwrap_or_else(|| panic!("{key} in {:?}", shown.values))
        };
        assert_eq!(value("metrics.listen").value, "127.0.0.1:9600");
        assert_eq!(value("metrics.listen").file, later);
        assert_eq!(value("metrics.listen").line, 2);
        assert_eq!(value("interfaces[1].name").value, "eth1");
        assert_eq!(value("interfaces[0].name").file, dir.main());
        assert_eq!(value("metrics.top_blocked").value, 7);
        // One file alone is shown too.
        std::fs::remove_file(&later).unwrap();
        let shown = Config::show(&dir.main()).unwrap();
        assert_eq!(shown.files, [dir.main()]);
        assert!(shown.text.contains("[[interfaces]]  # "), "{}", shown.text);
        // An invalid configuration is not shown.
        dir.drop_in("10-bad.toml", "dry_run = 3\n");
        assert!(Config::show(&dir.main()).is_err());
    }

    #[test]
    fn later_ruleset_directories_override_and_mask_by_name() {
        let root = Dir::new("rulesets", MAIN);
        let shipped = root.0.join("shipped");
        let local = root.0.join("local");
        std::fs::create_dir_all(&shipped).unwrap();
        std::fs::create_dir_all(&local).unwrap();
        for name in ["sshd.toml", "nginx.toml", "postfix.toml", "notes.txt"] {
            std::fs::write(shipped.join(name), "# shipped\n").unwrap();
        }
        std::fs::write(local.join("sshd.toml"), "# mine\n").unwrap();
        std::fs::write(local.join("nginx.toml"), "").unwrap();
        std::os::unix::fs::symlink("/dev/null", local.join("postfix.toml")).unwrap();
        std::fs::write(local.join("extra.toml"), "# mine\n").unwrap();
        let limits = crate::detect::logs::ruleset::RulesetLimits::default();
        let files =
            super::super::validate::ruleset_files(&[shipped.clone(), local.clone()], &limits)
                .unwrap();
        assert_eq!(files, [local.join("extra.toml"), local.join("sshd.toml")]);
        // One directory is passed on as it is; a missing later one is no error, a missing
        // first one is.
        let one = super::super::validate::ruleset_files(std::slice::from_ref(&shipped), &limits);
        assert_eq!(one.unwrap(), std::slice::from_ref(&shipped));
        let missing = super::super::validate::ruleset_files(
            &[shipped.clone(), root.0.join("nowhere")],
            &limits,
        )
        .unwrap();
        assert_eq!(missing.len(), 3);
        assert!(
            super::super::validate::ruleset_files(&[root.0.join("nowhere"), local], &limits)
                .is_err()
        );
    }
}
