//! Where an error is: byte spans turned into file, line, column and the dotted key.
use std::{
    fmt::{self, Write as _},
    io,
    ops::Range,
    path::{Path, PathBuf},
};

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{
    layers::{Source, SourceMap},
    raw::TOP_LEVEL_KEYS,
};

/// Where in which file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type. `key` is the dotted key the
    /// error is about (for an unknown key, the table holding it), empty at the top level.
    #[error("{location}: {}{message}", key_prefix(key))]
    Toml {
        location: Location,
        key: String,
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("{location}: {key}: {message}")]
    Invalid {
        location: Location,
        key: String,
        message: String,
    },
    /// A required key is absent.
    #[error("{}: {key}: {message}", path.display())]
    Missing {
        path: PathBuf,
        key: &'static str,
        message: &'static str,
    },
}

impl ConfigError {
    /// Where the error is, when it is at a place in the file.
    pub const fn location(&self) -> Option<&Location> {
        match self {
            Self::Toml { location, .. } | Self::Invalid { location, .. } => Some(location),
            Self::Read { .. } | Self::Missing { .. } => None,
        }
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// The text being validated: turns byte spans into locations. `text` is a file's own, or
/// the merge of several (`layers`: the map from its offsets back to the files).
pub(super) struct ConfigText<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) layers: Option<(&'a SourceMap, &'a [Source])>,
}

impl ConfigText<'_> {
    pub(super) fn location(&self, offset: usize) -> Location {
        let (path, text, offset) = match self.layers {
            Some((map, files)) => {
                let (file, offset) = map.find(offset);
                let file = &files[file];
                (file.path.as_path(), file.text.as_str(), offset)
            }
            None => (self.path, self.text, offset),
        };
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
        Location {
            path: path.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    pub(super) fn invalid(
        &self,
        key: &str,
        span: Range<usize>,
        message: impl fmt::Display,
    ) -> ConfigError {
        ConfigError::Invalid {
            location: self.location(span.start),
            key: key.to_owned(),
            message: message.to_string(),
        }
    }

    /// A toml error, with the key it is about found from its span.
    pub(super) fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let offset = err.span().map_or(0, |span| span.start);
        let mut key = String::new();
        let mut message = err.message().trim().to_owned();
        // Only documents that parse have keys to name (syntax errors have none).
        if let Ok(document) = DeTable::parse(self.text)
            && let Some(Found::Key(name)) = find_key(document.get_ref(), offset, &mut key)
            && !key.is_empty()
            && TOP_LEVEL_KEYS.contains(&name.as_str())
        {
            let _: fmt::Result = write!(
                message,
                " (`{name}` is a top-level key: top-level keys go before the first [table] header)"
            );
        }
        ConfigError::Toml {
            location: self.location(offset),
            key,
            message,
        }
    }
}

/// What the offset of an error falls on.
enum Found {
    /// A key: `path` is left at the table holding it.
    Key(String),
    /// A value: `path` is its key.
    Value,
}

/// Find the key or value at `offset`, leaving its dotted path in `path`. Arrays of tables
/// (`[[interfaces]]`) and arrays of values take the array's key; indices are left out, the
/// line says which one.
fn find_key(table: &DeTable<'_>, offset: usize, path: &mut String) -> Option<Found> {
    for (key, value) in table {
        if key.span().contains(&offset) {
            return Some(Found::Key(key.get_ref().to_string()));
        }
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        if let Some(found) = find_in_value(value, offset, path) {
            return Some(found);
        }
        path.truncate(len);
    }
    None
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) -> Option<Found> {
    match value.get_ref() {
        DeValue::Table(table) => {
            if let Some(found) = find_key(table, offset, path) {
                return Some(found);
            }
        }
        DeValue::Array(items) => {
            for item in items {
                if let Some(found) = find_in_value(item, offset, path) {
                    return Some(found);
                }
            }
        }
        _ => {}
    }
    value.span().contains(&offset).then_some(Found::Value)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;

    #[test]
    fn unknown_top_level_key_is_an_error_with_its_line() {
        let message = error_at(&with_top("dry_run = true\nbogus = 1"), 2);
        assert!(message.starts_with(&format!("{PATH}:2:1: ")), "{message}");
        assert!(message.contains("unknown field `bogus`"), "{message}");
    }

    #[test]
    fn unknown_key_in_a_section_names_the_section_and_line() {
        let message = error_at(
            &with_section("[metrics]\nlisten = \"127.0.0.1:1\"\nport = 3\n"),
            5,
        );
        assert!(
            message.contains(": metrics: unknown field `port`"),
            "{message}"
        );
        let message = error_at("[[interfaces]]\nname = \"eth0\"\nnmae = \"eth1\"\n", 3);
        assert!(
            message.contains("interfaces: unknown field `nmae`"),
            "{message}"
        );
        // The daemon test appends this below [metrics].
        let message = error_at(&with_section("[metrics]\n\nbogus_key = 1\n"), 5);
        assert!(message.contains("bogus_key"), "{message}");
    }

    #[test]
    fn top_level_key_below_a_table_gets_a_hint() {
        let message = error_at(&with_section("[guard]\ndry_run = true\n"), 4);
        assert!(
            message.contains("guard: unknown field `dry_run`"),
            "{message}"
        );
        assert!(message.contains("before the first [table]"), "{message}");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let message = error_at(&with_top("dry_run = true\npin_dir = \"/x"), 2);
        assert!(message.starts_with(&format!("{PATH}:2:")), "{message}");
        let message = error_at(&with_top("dry_run = \n"), 1);
        assert!(message.starts_with(&format!("{PATH}:1:11: ")), "{message}");
        // A key given twice.
        error_at(&with_top("dry_run = true\ndry_run = false"), 2);
    }

    #[test]
    fn wrong_types_name_the_key_and_line() {
        let message = error_at(&with_top("\ndry_run = \"yes\""), 2);
        assert!(message.contains("dry_run: invalid type"), "{message}");
        let message = error_at(&with_section("[capacity]\nallow_v4 = \"many\"\n"), 4);
        assert!(
            message.contains("capacity.allow_v4: invalid type"),
            "{message}"
        );
        let message = error_at(&with_top("metrics = 3"), 1);
        assert!(message.contains("metrics: invalid type"), "{message}");
        let message = error_at("interfaces = [\"eth0\"]", 1);
        assert!(message.contains("{ name = \"eth0\""), "{message}");
    }

    #[test]
    fn columns_count_characters() {
        let message = error_at(&with_top("# é\nstate_dir = \"é\""), 2);
        assert!(message.starts_with(&format!("{PATH}:2:13: ")), "{message}");
        let message = error_at(&with_top("state_dir=\"é/x\"  "), 1);
        assert!(message.starts_with(&format!("{PATH}:1:11: ")), "{message}");
    }
}
