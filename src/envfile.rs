//! The project's `.env`: written so that docker compose's env-file parser reads every
//! value back verbatim (`=`, `$`, `#`, quotes, backslashes, newlines), and read back the
//! same way. Secrets live here; the file is created with mode 0600.
//!
//! Compose's rules (compose-go dotenv): a single-quoted value is literal up to the next
//! `'` not preceded by `\`; a double-quoted value expands `${VAR}` and the escapes
//! `\\ \" \$ \n`; an unquoted value ends at ` #`. So: single quotes when the value
//! has no `'`, no newline and does not end in `\`; double quotes with escapes otherwise.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// One `KEY=value` line, quoted for compose.
pub fn encode_line(key: &str, value: &str) -> String {
    format!("{key}={}", quote(value))
}

/// `value` quoted so compose reads it back verbatim.
pub fn quote(value: &str) -> String {
    if !value.contains('\'')
        && !value.contains('\n')
        && !value.contains('\r')
        && !value.ends_with('\\')
    {
        return format!("'{value}'");
    }
    let mut out = String::with_capacity(value.len() + 8);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parse an env file the way compose does, for the forms `quote` writes and plain
/// unquoted values. `${VAR}` inside double quotes is left as written.
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (line, tail) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = tail;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((key, raw)) = trimmed.split_once('=') else {
            continue;
        };
        let key = key.trim().to_string();
        let value = match raw.chars().next() {
            Some('\'') => match raw[1..].find('\'') {
                Some(end) => raw[1..1 + end].to_string(),
                None => raw[1..].to_string(),
            },
            Some('"') => {
                // A double-quoted value may span lines only through `\n` escapes (we never
                // write raw newlines), so the closing quote is on this line.
                let mut v = String::new();
                let mut chars = raw[1..].chars();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => v.push('\n'),
                            Some('r') => v.push('\r'),
                            Some('t') => v.push('\t'),
                            Some(other) => v.push(other),
                            None => v.push('\\'),
                        },
                        c => v.push(c),
                    }
                }
                v
            }
            _ => {
                let v = match raw.find(" #") {
                    Some(i) => &raw[..i],
                    None => raw,
                };
                v.trim().to_string()
            }
        };
        out.push((key, value));
    }
    out
}

/// One line of an env file as a person writes it: kept in order so that an edited
/// file keeps its comments and blank lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Blank,
    /// The whole line, `#` included.
    Comment(String),
    Entry(String, String),
}

/// Why an env file was refused by [`parse_strict`]. Never carries a value: only line
/// numbers and key names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("line {0}: expected KEY=value")]
    NoEquals(usize),
    #[error("line {0}: the name before `=` is not a variable name (letters, digits and `_`, not starting with a digit)")]
    BadKey(usize),
    #[error("line {0}: the quote opened here is never closed")]
    Unterminated(usize),
    #[error("line {0}: text after the closing quote (only a `# comment` may follow)")]
    Trailing(usize),
    #[error("line {line}: `{key}` is set again (first on line {first})")]
    Duplicate {
        line: usize,
        first: usize,
        key: String,
    },
}

/// Is `key` a variable name (`[A-Za-z_][A-Za-z0-9_]*`)?
pub fn valid_key(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parse an env file strictly, as compose reads it, for files people edit: quoted
/// values may span lines (single quotes literal, double quotes with `\n \r \t \\ \"
/// \$` escapes), an unquoted value ends at ` #`, and `$` is never expanded. Refuses
/// a line without `=`, a bad name, an unclosed quote, text after a closing quote and
/// a key set twice. Trailing blank lines are dropped.
pub fn parse_strict(text: &str) -> Result<Vec<Line>, SyntaxError> {
    let mut out = Vec::new();
    let mut first_seen = std::collections::HashMap::new();
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut number = 0;
    while let Some(line) = lines.next() {
        number += 1;
        let start = number;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            out.push(Line::Blank);
            continue;
        }
        if trimmed.starts_with('#') {
            out.push(Line::Comment(trimmed.to_string()));
            continue;
        }
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let (key, raw) = body.split_once('=').ok_or(SyntaxError::NoEquals(start))?;
        let key = key.trim();
        if !valid_key(key) {
            return Err(SyntaxError::BadKey(start));
        }
        let raw = raw.trim_start();
        let value = match raw.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let mut quoted = String::new();
                let mut rest = &raw[1..];
                let after = loop {
                    if let Some(end) = closing_quote(rest, q) {
                        quoted.push_str(&rest[..end]);
                        break &rest[end + 1..];
                    }
                    quoted.push_str(rest);
                    quoted.push('\n');
                    rest = lines.next().ok_or(SyntaxError::Unterminated(start))?;
                    number += 1;
                };
                let after = after.trim();
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(SyntaxError::Trailing(number));
                }
                if q == '"' {
                    unescape(&quoted)
                } else {
                    quoted
                }
            }
            _ => match raw.find(" #") {
                Some(i) => raw[..i].trim_end().to_string(),
                None => raw.trim_end().to_string(),
            },
        };
        if let Some(first) = first_seen.insert(key.to_string(), start) {
            return Err(SyntaxError::Duplicate {
                line: start,
                first,
                key: key.to_string(),
            });
        }
        out.push(Line::Entry(key.to_string(), value));
    }
    while out.last() == Some(&Line::Blank) {
        out.pop();
    }
    Ok(out)
}

/// The byte offset of the first `q` in `s` not escaped by a backslash.
fn closing_quote(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == q => return Some(i),
            _ => {}
        }
    }
    None
}

/// The escapes of a double-quoted value (the inverse of [`quote`]).
fn unescape(s: &str) -> String {
    let mut v = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            v.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => v.push('\n'),
            Some('r') => v.push('\r'),
            Some('t') => v.push('\t'),
            Some(other) => v.push(other),
            None => v.push('\\'),
        }
    }
    v
}

/// `lines` as an env file, every value quoted by [`quote`].
pub fn render_lines(lines: &[Line]) -> String {
    let mut out = String::new();
    for line in lines {
        match line {
            Line::Blank => {}
            Line::Comment(c) => out.push_str(c),
            Line::Entry(k, v) => out.push_str(&encode_line(k, v)),
        }
        out.push('\n');
    }
    out
}

/// The value of `key` in the env file at `path`, if the file and the key exist.
pub fn read_value(path: &Path, key: &str) -> anyhow::Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse(&text)
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v))
}

/// Render `entries` (with `# comment` lines for keys starting with `#`).
pub fn render(entries: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (key, value) in entries {
        if key.starts_with('#') {
            out.push_str(key);
        } else {
            out.push_str(&encode_line(key, value));
        }
        out.push('\n');
    }
    out
}

/// Write a secrets file with mode 0600 from the first byte (never world-readable).
pub fn write_secret_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A random secret of `len` characters drawn from a wide alphabet (including `=`, `$`,
/// `#` and friends, which the quoting above carries verbatim).
pub fn random_secret(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A random password for URLs and shells alike: letters and digits only.
pub fn random_password(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const HOSTILE: &[&str] = &[
        "plain",
        "a=b=c",
        "$HOME and ${HOME} and $$",
        "# not a comment",
        "x #y",
        "it's",
        "say \"hi\"",
        "both ' and \" and $x",
        "ends with backslash\\",
        "back\\slash\\n not a newline",
        "multi\nline",
        "",
        " spaces around ",
        "ünïcødé ✓",
        "`cmd` and $(cmd)",
    ];

    #[test]
    fn round_trips_hostile_values() {
        for v in HOSTILE {
            let line = encode_line("K", v);
            let parsed = parse(&line);
            assert_eq!(
                parsed,
                vec![("K".to_string(), v.to_string())],
                "line: {line}"
            );
        }
        for _ in 0..200 {
            let v = random_secret(50);
            assert_eq!(parse(&encode_line("S", &v))[0].1, v);
        }
    }

    #[test]
    fn strict_parse_round_trips_hostile_values_and_keeps_comments() {
        let mut lines = vec![Line::Comment("# rotated by alice".into()), Line::Blank];
        for (i, v) in HOSTILE.iter().enumerate() {
            lines.push(Line::Entry(format!("K{i}"), v.to_string()));
        }
        let text = render_lines(&lines);
        assert_eq!(parse_strict(&text).unwrap(), lines, "{text}");
        let entries: Vec<_> = lines
            .iter()
            .filter_map(|l| match l {
                Line::Entry(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(parse(&text), entries, "the compose-side reader agrees");
    }

    #[test]
    fn strict_parse_reads_values_written_across_lines() {
        let text = "A=\"line 1\nline \\\"2\\\" $X\"\nB='-----BEGIN KEY-----\nab=c#d\n-----END KEY-----' # pem\nC=3\n\n\n";
        assert_eq!(
            parse_strict(text).unwrap(),
            vec![
                Line::Entry("A".into(), "line 1\nline \"2\" $X".into()),
                Line::Entry(
                    "B".into(),
                    "-----BEGIN KEY-----\nab=c#d\n-----END KEY-----".into()
                ),
                Line::Entry("C".into(), "3".into()),
            ]
        );
        // What it reads, `quote` writes so that compose reads the same.
        let again = render_lines(&parse_strict(text).unwrap());
        assert_eq!(parse_strict(&again).unwrap(), parse_strict(text).unwrap());
        assert!(
            !again.contains("BEGIN KEY-----\n"),
            "newlines escaped: {again}"
        );
    }

    #[test]
    fn strict_parse_refuses_with_line_numbers_and_no_value() {
        let cases: &[(&str, SyntaxError)] = &[
            ("A=1\njust-a-s3cret\n", SyntaxError::NoEquals(2)),
            ("9A=s3cret\n", SyntaxError::BadKey(1)),
            ("A-B=s3cret\n", SyntaxError::BadKey(1)),
            ("A=1\nB=\"s3cret\n\nC=2\n", SyntaxError::Unterminated(2)),
            ("A='s3cret' tail\n", SyntaxError::Trailing(1)),
            ("A=\"x\ns3cret\" tail\n", SyntaxError::Trailing(2)),
            (
                "A=1\n#c\nA=s3cret\n",
                SyntaxError::Duplicate {
                    line: 3,
                    first: 1,
                    key: "A".into(),
                },
            ),
        ];
        for (text, want) in cases {
            let got = parse_strict(text).unwrap_err();
            assert_eq!(&got, want, "{text:?}");
            assert!(!got.to_string().contains("s3cret"), "{got}");
        }
        assert_eq!(
            parse_strict("export A = 'x' # c\r\nB=plain value # note\r\n").unwrap(),
            vec![
                Line::Entry("A".into(), "x".into()),
                Line::Entry("B".into(), "plain value".into())
            ]
        );
    }

    #[test]
    fn reads_unquoted_and_comments() {
        let got = parse("# c\nA=1\nexport B=two # note\n\nC=x#y\n");
        assert_eq!(
            got,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two".into()),
                ("C".into(), "x#y".into())
            ]
        );
    }

    #[test]
    fn secret_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        write_secret_file(&p, "A='1'\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(write_secret_file(&p, "again").is_err(), "never overwrites");
        assert_eq!(read_value(&p, "A").unwrap().as_deref(), Some("1"));
    }
}
