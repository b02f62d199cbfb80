//! The INI dialect both importers read: Python `configparser` as its users set it up.
//! `key = value` or `key: value` (keys lower-cased), indented continuation lines, `#` and `;`
//! comment lines; optionally `;` after a space starting an inline comment (fail2ban's
//! setting).

/// One key and its value, and the line the key is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// One section: its name, its line and its keys, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub line: usize,
    pub keys: Vec<Key>,
}

/// What the text cannot be: the line and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IniError {
    pub line: usize,
    pub message: String,
}

/// Every section of `text`, in order.
///
/// # Errors
/// A line that is no section, key, continuation or comment; a key before any section; an
/// indented line before any key.
pub fn parse(text: &str, inline_comments: bool) -> Result<Vec<Section>, IniError> {
    let err = |line: usize, message: &str| IniError {
        line,
        message: message.to_owned(),
    };
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let trimmed = if inline_comments {
            strip_inline_comment(trimmed)
        } else {
            trimmed
        };
        if trimmed.is_empty() {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            // A continuation of the last value (blank and comment lines in between are not
            // part of it).
            let Some(key) = sections.last_mut().and_then(|s| s.keys.last_mut()) else {
                return Err(err(number, "indented line before any key"));
            };
            key.value.push('\n');
            key.value.push_str(trimmed);
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            sections.push(Section {
                name: name.trim().to_owned(),
                line: number,
                keys: Vec::new(),
            });
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            return Err(IniError {
                line: number,
                message: format!("{trimmed:?} is neither a section, a key nor a comment"),
            });
        };
        let Some(section) = sections.last_mut() else {
            return Err(err(number, "key before any section"));
        };
        section.keys.push(Key {
            name: trimmed[..split].trim().to_lowercase(),
            value: trimmed[split + 1..].trim().to_owned(),
            line: number,
        });
    }
    Ok(sections)
}

/// `text` up to a `;` that follows whitespace.
fn strip_inline_comment(text: &str) -> &str {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b';' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return text[..i].trim_end();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_continuations_and_comments() {
        let text = "# c\n[A]\nx = 1 ; note\n  more\n\ny: 2\n[B]\n";
        let sections = parse(text, true).unwrap();
        assert_eq!(sections.len(), 2);
        assert_eq!((sections[0].name.as_str(), sections[0].line), ("A", 2));
        assert_eq!(sections[0].keys[0].value, "1\nmore");
        assert_eq!(
            (sections[0].keys[1].name.as_str(), sections[0].keys[1].line),
            ("y", 6)
        );
        assert_eq!(
            parse(text, false).unwrap()[0].keys[0].value,
            "1 ; note\nmore"
        );
        assert_eq!(
            parse("x = 1\n", false).unwrap_err(),
            IniError {
                line: 1,
                message: "key before any section".into()
            }
        );
        assert_eq!(parse("[A]\n  y\n", false).unwrap_err().line, 2);
        assert!(
            parse("[A]\nnonsense\n", false)
                .unwrap_err()
                .message
                .contains("neither")
        );
    }
}
