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
