//! A small INF reader: sections, `key = value` entries, value lists, comments, line
//! continuations and `%string%` substitution — enough to check a driver INF, not a SetupAPI clone.
//!
//! Syntax handled (as SetupAPI reads it):
//! - `;` starts a comment outside double quotes; `"..."` quotes, with `""` for a literal quote;
//! - a trailing `\` joins the next line;
//! - `[name]` starts a section; names compare case-insensitively and repeated sections merge;
//! - an entry is `key = v1, v2, ...` or a bare value list (`rgpu.sys`, `HKR, Parameters, ...`);
//! - `%name%` refers to `[Strings]`, `%<digits>%` is a DIRID, `%%` is a literal `%`.

use std::fmt;

/// One line (after joining continuations) of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number of the entry's first physical line.
    pub line: usize,
    /// The text left of the first unquoted `=`, trimmed; `None` for a bare value list.
    pub key: Option<String>,
    /// The comma-separated values, unquoted and trimmed, `%string%` references kept as written.
    pub values: Vec<String>,
}

impl Entry {
    /// The first value, or "" when there is none.
    pub fn value(&self) -> &str {
        self.values.first().map_or("", String::as_str)
    }

    /// Whether the key equals `key`, ignoring ASCII case.
    pub fn is(&self, key: &str) -> bool {
        self.key
            .as_deref()
            .is_some_and(|k| k.eq_ignore_ascii_case(key))
    }
}

/// A section and its entries, in file order (repeated sections merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// Line of the first header of this section.
    pub line: usize,
    pub entries: Vec<Entry>,
}

impl Section {
    /// The first entry whose key is `key` (ASCII case-insensitive).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.is(key))
    }

    /// Every entry whose key is `key`.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| e.is(key))
    }
}

/// A syntax error, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// A parsed INF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inf {
    pub sections: Vec<Section>,
}

/// One `%...%` reference that `[Strings]` does not define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndefinedString {
    pub line: usize,
    pub section: String,
    pub name: String,
}

impl Inf {
    /// Parses INF text (LF or CRLF line endings).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut sections: Vec<Section> = Vec::new();
        let mut current: Option<usize> = None;
        let mut pending = String::new();
        let mut pending_line = 0;

        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let stripped = strip_comment(raw, line_no)?;
            if pending.is_empty() {
                pending_line = line_no;
            }
            // A trailing backslash continues the logical line.
            if let Some(head) = stripped.trim_end().strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            pending.push_str(&stripped);
            let logical = std::mem::take(&mut pending);
            let logical = logical.trim();
            if logical.is_empty() {
                continue;
            }

            if let Some(rest) = logical.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(ParseError {
                        line: pending_line,
                        message: format!("section header without closing ']': {logical}"),
                    });
                };
                let name = name.trim();
                if name.is_empty() {
                    return Err(ParseError {
                        line: pending_line,
                        message: "empty section name".into(),
                    });
                }
                current = Some(
                    match sections
                        .iter()
                        .position(|s| s.name.eq_ignore_ascii_case(name))
                    {
                        Some(existing) => existing,
                        None => {
                            sections.push(Section {
                                name: name.to_owned(),
                                line: pending_line,
                                entries: Vec::new(),
                            });
                            sections.len() - 1
                        }
                    },
                );
                continue;
            }

            let Some(section) = current else {
                return Err(ParseError {
                    line: pending_line,
                    message: format!("entry outside any section: {logical}"),
                });
            };
            let entry = parse_entry(logical, pending_line)?;
            sections[section].entries.push(entry);
        }
        if !pending.trim().is_empty() {
            return Err(ParseError {
                line: pending_line,
                message: "file ends inside a line continuation".into(),
            });
        }
        Ok(Self { sections })
    }

    /// The section named `name` (ASCII case-insensitive).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// The value of `key` in `[Strings]`, if defined.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.section("Strings")?.get(key).map(Entry::value)
    }

    /// Replaces `%name%` with its `[Strings]` value; DIRIDs (`%13%`) and `%%` are kept.
    /// Returns the name of the first undefined string on failure.
    pub fn expand(&self, value: &str) -> Result<String, String> {
        let mut out = String::new();
        for token in tokens(value) {
            match token {
                Token::Text(t) => out.push_str(t),
                Token::Percent => out.push_str("%%"),
                Token::Ref(name) if is_dirid(name) => {
                    out.push('%');
                    out.push_str(name);
                    out.push('%');
                }
                Token::Ref(name) => match self.string(name) {
                    Some(v) => out.push_str(v),
                    None => return Err(name.to_owned()),
                },
                Token::Unterminated(rest) => return Err(rest.to_owned()),
            }
        }
        Ok(out)
    }

    /// Every `%name%` used outside `[Strings]` (keys and values) that `[Strings]` lacks,
    /// plus unterminated `%` references.
    pub fn undefined_strings(&self) -> Vec<UndefinedString> {
        let mut missing = Vec::new();
        for section in &self.sections {
            if section.name.eq_ignore_ascii_case("Strings")
                || section.name.to_ascii_lowercase().starts_with("strings.")
            {
                continue;
            }
            for entry in &section.entries {
                let texts = entry.key.iter().chain(entry.values.iter());
                for text in texts {
                    for token in tokens(text) {
                        let name = match token {
                            Token::Ref(name) if !is_dirid(name) && self.string(name).is_none() => {
                                name
                            }
                            Token::Unterminated(rest) => rest,
                            _ => continue,
                        };
                        missing.push(UndefinedString {
                            line: entry.line,
                            section: section.name.clone(),
                            name: name.to_owned(),
                        });
                    }
                }
            }
        }
        missing
    }
}

fn is_dirid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

enum Token<'a> {
    Text(&'a str),
    /// `%%`
    Percent,
    /// `%name%`
    Ref(&'a str),
    /// A `%` with no closing `%`: the rest of the text.
    Unterminated(&'a str),
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        if start > 0 {
            out.push(Token::Text(&rest[..start]));
        }
        let after = &rest[start + 1..];
        match after.find('%') {
            Some(0) => {
                out.push(Token::Percent);
                rest = &after[1..];
            }
            Some(end) => {
                out.push(Token::Ref(&after[..end]));
                rest = &after[end + 1..];
            }
            None => {
                out.push(Token::Unterminated(after));
                rest = "";
            }
        }
    }
    if !rest.is_empty() {
        out.push(Token::Text(rest));
    }
    out
}

/// Removes a `;` comment that is not inside double quotes.
fn strip_comment(line: &str, line_no: usize) -> Result<String, ParseError> {
    let mut in_quotes = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => return Ok(line[..i].to_owned()),
            _ => {}
        }
    }
    if in_quotes {
        return Err(ParseError {
            line: line_no,
            message: format!("unterminated quote: {line}"),
        });
    }
    Ok(line.to_owned())
}

/// Splits `key = a, "b, c", d` into key and unquoted values.
fn parse_entry(logical: &str, line: usize) -> Result<Entry, ParseError> {
    let (key, rest) = match find_unquoted(logical, '=') {
        Some(eq) => {
            let key = unquote(logical[..eq].trim());
            if key.is_empty() {
                return Err(ParseError {
                    line,
                    message: format!("empty key: {logical}"),
                });
            }
            (Some(key), &logical[eq + 1..])
        }
        None => (None, logical),
    };
    let values = split_unquoted(rest, ',')
        .into_iter()
        .map(|v| unquote(v.trim()))
        .collect();
    Ok(Entry { line, key, values })
}

fn find_unquoted(text: &str, needle: char) -> Option<usize> {
    let mut in_quotes = false;
    for (i, c) in text.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == needle && !in_quotes {
            return Some(i);
        }
    }
    None
}

fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == separator && !in_quotes {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Removes double quotes and turns `""` inside quotes into `"`.
fn unquote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        if c == '"' {
            if in_quotes && chars.peek() == Some(&'"') {
                out.push('"');
                chars.next();
            } else {
                in_quotes = !in_quotes;
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_values_comments_and_quotes() {
        let inf = Inf::parse(
            "; header\r\n[Version]\r\nSignature = \"$Windows NT$\" ; c\r\n\
             [Files]\r\nrgpu.sys\r\n[Strings]\r\nA = \"x; y, \"\"z\"\"\"\r\n[version]\r\nClass=Display\r\n",
        )
        .unwrap();
        let version = inf.section("VERSION").unwrap();
        assert_eq!(version.get("signature").unwrap().value(), "$Windows NT$");
        assert_eq!(
            version.get("Class").unwrap().value(),
            "Display",
            "repeated sections merge"
        );
        let files = inf.section("Files").unwrap();
        assert_eq!(files.entries[0].key, None);
        assert_eq!(files.entries[0].values, vec!["rgpu.sys"]);
        assert_eq!(inf.string("a"), Some("x; y, \"z\""));
    }

    #[test]
    fn value_lists_and_continuations() {
        let inf = Inf::parse(
            "[S]\nAddService = rgpu, 0x2, \\\n  svc\nHKR, Parameters, X, 0x00010001, 3\n",
        )
        .unwrap();
        let s = inf.section("S").unwrap();
        assert_eq!(
            s.get("AddService").unwrap().values,
            vec!["rgpu", "0x2", "svc"]
        );
        assert_eq!(s.entries[1].key, None);
        assert_eq!(s.entries[1].values.len(), 5);
        assert_eq!(s.entries[1].line, 4);
    }

    #[test]
    fn string_expansion_keeps_dirids() {
        let inf = Inf::parse("[S]\nX = %A%\\%13%\\f.sys, 100%%\n[Strings]\nA = \"dir\"\n").unwrap();
        let x = inf.section("S").unwrap().get("X").unwrap();
        assert_eq!(inf.expand(&x.values[0]).unwrap(), "dir\\%13%\\f.sys");
        assert_eq!(inf.expand(&x.values[1]).unwrap(), "100%%");
        assert!(inf.undefined_strings().is_empty());
    }

    #[test]
    fn undefined_and_unterminated_strings_are_reported() {
        let inf = Inf::parse("[S]\n%Missing% = a, %B\n[Strings]\nC = c\n").unwrap();
        let names: Vec<_> = inf
            .undefined_strings()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, vec!["Missing", "B"]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(Inf::parse("[S\n").unwrap_err().line, 1);
        assert_eq!(Inf::parse("; c\nkey = v\n").unwrap_err().line, 2);
        assert_eq!(Inf::parse("[S]\nA = \"open\n").unwrap_err().line, 2);
    }
}
