//! The two pieces of text sync hands psql, and how they are made safe.
//!
//! A fixup's SQL is the user's, from countable.yml: it is scanned as psql scans it
//! (quoted literals and identifiers, dollar quotes, comments) so that each `:name` of a
//! declared parameter becomes `:'name'`, which psql replaces with the value quoted as a
//! literal (the server's own escaping): a value is never SQL. A backslash outside quoted
//! text is refused, since psql would run it as a meta-command (`\! rm -rf /`).
//!
//! A value reaches psql on its stdin as `\set name 'value'`, in the single-quoted form
//! psql defines for meta-command arguments (see [`meta_quote`]): never on a command
//! line (visible in `ps`), never in SQL text.

use std::collections::BTreeSet;

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A parameter name countable accepts: lowercase, a psql variable of the user's
/// (psql's own variables are uppercase).
pub fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("countable_")
}

/// The index just past the quoted text that starts at `at` (the opening `quote`).
/// In `'…'` a doubled quote is a quote; `escapes` (an E'…' string) also skips the
/// character after each backslash.
fn quoted_end(s: &[char], at: usize, quote: char, escapes: bool) -> Result<usize, String> {
    let mut i = at + 1;
    while i < s.len() {
        match s[i] {
            '\\' if escapes => i += 2,
            c if c == quote => {
                if s.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Ok(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    Err(format!("unterminated {quote}…{quote} in the SQL"))
}

/// `$tag$` starting at `at`, if there is one (the tag may be empty).
fn dollar_tag(s: &[char], at: usize) -> Option<String> {
    if at > 0 && is_ident(s[at - 1]) {
        return None; // part of an identifier (`a$b`)
    }
    let mut i = at + 1;
    while i < s.len() && is_ident(s[i]) && s[i] != '$' {
        if i == at + 1 && s[i].is_ascii_digit() {
            return None; // `$1`, a positional parameter
        }
        i += 1;
    }
    (s.get(i) == Some(&'$')).then(|| s[at..=i].iter().collect())
}

/// The fixup's SQL as psql is to run it: `:name` of each declared parameter becomes
/// `:'name'` (see the module doc). Refused: a backslash outside quoted text, an
/// unterminated quote, dollar quote or comment, and `:'name'`/`:"name"` naming no
/// declared parameter.
pub fn prepare(sql: &str, params: &BTreeSet<String>) -> Result<String, String> {
    let s: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut i = 0;
    let push = |out: &mut String, from: usize, to: usize| out.extend(&s[from..to]);
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        match c {
            '\'' => {
                let escapes = i > 0
                    && matches!(s[i - 1], 'e' | 'E')
                    && (i < 2 || !is_ident(s[i - 2]));
                let end = quoted_end(&s, i, '\'', escapes)?;
                push(&mut out, i, end);
                i = end;
            }
            '"' => {
                let end = quoted_end(&s, i, '"', false)?;
                push(&mut out, i, end);
                i = end;
            }
            '$' => match dollar_tag(&s, i) {
                Some(tag) => {
                    let body: String = s[i + tag.chars().count()..].iter().collect();
                    let close = body
                        .find(&tag)
                        .ok_or_else(|| format!("unterminated {tag}…{tag} in the SQL"))?;
                    let end = i + tag.chars().count() * 2 + body[..close].chars().count();
                    push(&mut out, i, end);
                    i = end;
                }
                None => {
                    out.push('$');
                    i += 1;
                }
            },
            '-' if next == Some('-') => {
                let end = s[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map(|p| i + p)
                    .unwrap_or(s.len());
                push(&mut out, i, end);
                i = end;
            }
            '/' if next == Some('*') => {
                let (mut depth, mut j) = (0usize, i);
                loop {
                    match (s.get(j), s.get(j + 1)) {
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            j += 2;
                        }
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            j += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => j += 1,
                        (None, _) => return Err("unterminated /* comment in the SQL".into()),
                    }
                }
                push(&mut out, i, j);
                i = j;
            }
            '\\' => {
                return Err(
                    "a backslash outside quoted text (psql would run it as a meta-command); write SQL only"
                        .into(),
                )
            }
            ':' if next == Some(':') => {
                out.push_str("::");
                i += 2;
            }
            ':' if next == Some('\'') || next == Some('"') => {
                let quote = next.expect("matched");
                let end = quoted_end(&s, i + 1, quote, false)?;
                let name: String = s[i + 2..end - 1].iter().collect();
                if !params.contains(&name) {
                    return Err(format!(
                        "`:{quote}{name}{quote}` names no parameter (declare it under `params:`)"
                    ));
                }
                push(&mut out, i, end);
                i = end;
            }
            ':' if next.is_some_and(is_ident_start) => {
                let end = s[i + 1..]
                    .iter()
                    .position(|&c| !is_ident(c))
                    .map(|p| i + 1 + p)
                    .unwrap_or(s.len());
                let name: String = s[i + 1..end].iter().collect();
                if params.contains(&name) {
                    out.push_str(&format!(":'{name}'"));
                } else {
                    push(&mut out, i, end);
                }
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `value` as one single-quoted argument of a psql meta-command (`\set name '…'`):
/// a quote doubled, a backslash doubled, control characters as `\n`, `\r`, `\t` or
/// octal escapes, so the line stays one line. Inside single quotes psql substitutes
/// no variable and runs no backquoted command.
pub fn meta_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn declared_parameters_become_quoted_literals() {
        let p = params(&["client_id", "secret"]);
        assert_eq!(
            prepare(
                "UPDATE a SET client_id = :client_id, secret = :secret WHERE provider = 'google'",
                &p
            )
            .unwrap(),
            "UPDATE a SET client_id = :'client_id', secret = :'secret' WHERE provider = 'google'"
        );
        // Already quoted forms are kept; casts and other colons are not parameters.
        assert_eq!(
            prepare(
                "SELECT :'secret'::text, x::int, :\"client_id\", arr[1:2], :other",
                &p
            )
            .unwrap(),
            "SELECT :'secret'::text, x::int, :\"client_id\", arr[1:2], :other"
        );
    }

    #[test]
    fn quoted_text_and_comments_are_left_alone() {
        let p = params(&["secret"]);
        let sql = "SELECT ':secret', \":secret\", E'it\\'s :secret', $$ :secret $$, $x$ a\\b $x$ -- :secret \\n\n/* :secret /* nested */ */ :secret";
        assert_eq!(
            prepare(sql, &p).unwrap(),
            "SELECT ':secret', \":secret\", E'it\\'s :secret', $$ :secret $$, $x$ a\\b $x$ -- :secret \\n\n/* :secret /* nested */ */ :'secret'"
        );
        assert_eq!(
            prepare("SELECT 'a''b', $1", &p).unwrap(),
            "SELECT 'a''b', $1"
        );
    }

    #[test]
    fn meta_commands_and_broken_sql_are_refused() {
        let p = params(&["secret"]);
        for (sql, why) in [
            ("SELECT 1; \\! rm -rf /", "meta-command"),
            ("SELECT 1 \\g", "meta-command"),
            ("SELECT 'open", "unterminated"),
            ("SELECT $$ open", "unterminated"),
            ("SELECT 1 /* open", "unterminated"),
            ("SELECT :'nope'", "names no parameter"),
        ] {
            let e = prepare(sql, &p).unwrap_err();
            assert!(e.contains(why), "{sql}: {e}");
        }
    }

    #[test]
    fn meta_quoting_keeps_one_line_and_every_byte() {
        assert_eq!(meta_quote("plain"), "'plain'");
        assert_eq!(
            meta_quote("it's a \\ `date` :x\n\t\u{1}"),
            "'it''s a \\\\ `date` :x\\n\\t\\001'"
        );
        assert!(!meta_quote("a\nb\rc").contains(['\n', '\r']));
    }

    #[test]
    fn parameter_names() {
        assert!(is_param_name("client_id"));
        assert!(!is_param_name("Client"));
        assert!(!is_param_name("1x"));
        assert!(!is_param_name("countable_site"));
        assert!(!is_param_name(""));
    }
}
