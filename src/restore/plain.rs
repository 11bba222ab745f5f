//! Plain SQL dumps: what to check before restoring (extensions, pg_dump version,
//! `\restrict` support) and the line filter that streams the dump into psql.
//!
//! The filter drops what a local restore must not replay (ownership, grants, the
//! plpgsql extension's comment) outside COPY data, strips lines the local psql or server
//! cannot take, counts tables and rows, and notes the `dump complete` trailer so a
//! dump cut at a line boundary is caught.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::archive::Reader;

pub const TRAILER: &str = "-- PostgreSQL database dump complete";

/// What the first part of a plain dump says.
#[derive(Debug, Default, PartialEq)]
pub struct Header {
    /// `-- Dumped by pg_dump version 17.2` → (17, 2)
    pub pg_dump: Option<(u32, u32)>,
    pub extensions: Vec<String>,
    pub restrict: bool,
}

/// Read the header facts from the first bytes of a plain dump.
pub fn inspect(head: &[u8]) -> Header {
    let text = String::from_utf8_lossy(head);
    let mut h = Header::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("-- Dumped by pg_dump version ") {
            let mut parts = v.split(|c: char| !c.is_ascii_digit());
            let major = parts.next().and_then(|m| m.parse().ok());
            let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
            h.pg_dump = major.map(|m| (m, minor));
        }
        if line.starts_with("\\restrict ") {
            h.restrict = true;
        }
        if let Some(rest) = line
            .strip_prefix("CREATE EXTENSION IF NOT EXISTS ")
            .or_else(|| line.strip_prefix("CREATE EXTENSION "))
        {
            if let Some(name) = rest.split_whitespace().next() {
                let name = name.trim_matches('"').trim_end_matches(';').to_string();
                if !h.extensions.contains(&name) {
                    h.extensions.push(name);
                }
            }
        }
    }
    h
}

/// Does psql `(major, minor)` know `\restrict` (added in the August 2025 minors)?
pub fn psql_knows_restrict((major, minor): (u32, u32)) -> bool {
    match major {
        0..=12 => false,
        13 => minor >= 22,
        14 => minor >= 19,
        15 => minor >= 14,
        16 => minor >= 10,
        17 => minor >= 6,
        _ => true,
    }
}

/// How the filter treats the stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct FilterOptions {
    pub strip_restrict: bool,
    /// Server older than 17: drop `SET transaction_timeout` (a PG 17 setting).
    pub strip_transaction_timeout: bool,
}

/// What went through the filter.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub tables: u64,
    pub rows: u64,
    pub trailer: bool,
    pub dropped_lines: u64,
    /// A psql meta-command countable refuses to run (`\connect`, `\!`, …); the
    /// stream stops there.
    pub rejected: Option<String>,
}

/// Where a line ends up, quote-wise: inside a dollar-quoted body or a string literal,
/// a line is never the start of a statement.
#[derive(Debug, Default)]
struct Quotes {
    dollar: Option<Vec<u8>>,
    single: bool,
}

impl Quotes {
    fn inside(&self) -> bool {
        self.dollar.is_some() || self.single
    }

    /// Advance over `line`, tracking `$tag$ … $tag$` and `'…'` (pg_dump writes
    /// standard-conforming strings, so `''` is the only escape and toggles twice).
    fn scan(&mut self, line: &[u8]) {
        let mut i = 0;
        while i < line.len() {
            if let Some(tag) = &self.dollar {
                if line[i..].starts_with(tag) {
                    i += tag.len();
                    self.dollar = None;
                } else {
                    i += 1;
                }
                continue;
            }
            match line[i] {
                b'\'' => self.single = !self.single,
                b'-' if !self.single && line.get(i + 1) == Some(&b'-') => return,
                b'$' if !self.single => {
                    let rest = &line[i + 1..];
                    let len = rest
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                        .count();
                    let starts_ok = rest.first().is_none_or(|c| !c.is_ascii_digit());
                    if rest.get(len) == Some(&b'$') && starts_ok {
                        let tag = line[i..i + len + 2].to_vec();
                        i += tag.len();
                        self.dollar = Some(tag);
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn starts(line: &[u8], prefix: &str) -> bool {
    line.starts_with(prefix.as_bytes())
}

/// Should this top-level line be left out of a local restore?
fn drop_line(line: &[u8], opts: FilterOptions) -> bool {
    if starts(line, "ALTER ") && line.windows(10).any(|w| w == b" OWNER TO ") {
        return true;
    }
    if starts(line, "GRANT ")
        || starts(line, "REVOKE ")
        || starts(line, "ALTER DEFAULT PRIVILEGES ")
    {
        return true;
    }
    if starts(line, "COMMENT ON EXTENSION plpgsql ")
        || starts(line, "CREATE EXTENSION IF NOT EXISTS plpgsql ")
    {
        return true;
    }
    if opts.strip_restrict && (starts(line, "\\restrict ") || starts(line, "\\unrestrict ")) {
        return true;
    }
    if opts.strip_transaction_timeout && starts(line, "SET transaction_timeout") {
        return true;
    }
    false
}

/// Copy `input` to `output` line by line, filtered; returns what went through. The
/// output is shut down at the end so the reader sees EOF.
pub async fn filter<W>(input: Reader, output: W, opts: FilterOptions) -> std::io::Result<Stats>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(256 * 1024, input);
    let mut w = BufWriter::with_capacity(256 * 1024, output);
    let mut stats = Stats::default();
    let mut line = Vec::with_capacity(4096);
    let mut in_copy = false;
    let mut statement_start = true;
    let mut quotes = Quotes::default();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        if in_copy {
            if line == b"\\.\n" || line == b"\\.\r\n" || line == b"\\." {
                in_copy = false;
            } else {
                stats.rows += 1;
            }
            w.write_all(&line).await?;
            continue;
        }
        let trimmed = line.trim_ascii_end();
        if trimmed == TRAILER.as_bytes() {
            stats.trailer = true;
        }
        if statement_start {
            if drop_line(&line, opts) {
                stats.dropped_lines += 1;
                continue;
            }
            if starts(&line, "\\")
                && !starts(&line, "\\restrict ")
                && !starts(&line, "\\unrestrict ")
            {
                stats.rejected = Some(String::from_utf8_lossy(trimmed).into_owned());
                break;
            }
            if starts(&line, "COPY ") && trimmed.ends_with(b"FROM stdin;") {
                in_copy = true;
            }
            if starts(&line, "CREATE TABLE ") || starts(&line, "CREATE UNLOGGED TABLE ") {
                stats.tables += 1;
            }
        }
        let was_inside = quotes.inside();
        quotes.scan(&line);
        statement_start = !quotes.inside()
            && (trimmed.is_empty()
                || trimmed.ends_with(b";")
                || (!was_inside && (trimmed.starts_with(b"--") || trimmed.starts_with(b"\\"))));
        w.write_all(&line).await?;
    }
    w.flush().await?;
    w.shutdown().await?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n-- Dumped from database version 15.18\n-- Dumped by pg_dump version 17.2\n\nSET transaction_timeout = 0;\nCREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;\nCOMMENT ON EXTENSION plpgsql IS 'x';\nCREATE TABLE public.t (\n    id integer,\n    note text\n);\nALTER TABLE public.t OWNER TO prod_user;\nCREATE FUNCTION public.f() RETURNS text\n    LANGUAGE sql\n    AS $$\nGRANT inside a body stays\n$$;\nCOPY public.t (id, note) FROM stdin;\n1\tGRANT all to data rows stays\n2\tALTER x OWNER TO y stays\n\\.\n\nGRANT ALL ON TABLE public.t TO app;\n\\unrestrict abc\n\n--\n-- PostgreSQL database dump complete\n--\n\n";

    #[test]
    fn header() {
        let h = inspect(DUMP.as_bytes());
        assert_eq!(h.pg_dump, Some((17, 2)));
        assert_eq!(h.extensions, vec!["pgcrypto"]);
        assert!(h.restrict);
    }

    #[tokio::test]
    async fn filter_keeps_data_and_bodies_and_drops_ownership() {
        let mut out = Vec::new();
        let opts = FilterOptions {
            strip_restrict: true,
            strip_transaction_timeout: true,
        };
        let stats = filter(
            Box::pin(Cursor::new(DUMP.as_bytes().to_vec())),
            &mut out,
            opts,
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(stats.tables, 1);
        assert_eq!(stats.rows, 2);
        assert!(stats.trailer);
        assert!(!text.contains("OWNER TO prod_user"));
        assert!(!text.contains("GRANT ALL ON TABLE"));
        assert!(!text.contains("\\restrict"));
        assert!(!text.contains("transaction_timeout"));
        assert!(!text.contains("COMMENT ON EXTENSION plpgsql"));
        assert!(text.contains("GRANT inside a body stays"));
        assert!(text.contains("1\tGRANT all to data rows stays"));
        assert!(text.contains("2\tALTER x OWNER TO y stays"));
        assert_eq!(stats.dropped_lines, 6);
    }

    #[tokio::test]
    async fn bodies_and_strings_are_not_statements() {
        let dump = "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $body$\nBEGIN\n  PERFORM 1;\nGRANT stays inside;\nCOPY x FROM stdin;\nEND\n$body$;\nCOMMENT ON TABLE t IS 'line one;\nGRANT stays in the string';\nALTER DEFAULT PRIVILEGES FOR ROLE x GRANT ALL ON TABLES TO y;\n-- PostgreSQL database dump complete\n";
        let mut out = Vec::new();
        let stats = filter(
            Box::pin(Cursor::new(dump.as_bytes().to_vec())),
            &mut out,
            FilterOptions::default(),
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("GRANT stays inside;"), "{text}");
        assert!(text.contains("GRANT stays in the string"), "{text}");
        assert!(!text.contains("ALTER DEFAULT PRIVILEGES"), "{text}");
        assert!(
            stats.trailer,
            "COPY inside a body did not switch to data mode"
        );
        assert_eq!(stats.dropped_lines, 1);
    }

    #[tokio::test]
    async fn meta_commands_stop_the_stream() {
        let dump = "--\n\\connect other\nDROP TABLE everything;\n";
        let mut out = Vec::new();
        let stats = filter(
            Box::pin(Cursor::new(dump.as_bytes().to_vec())),
            &mut out,
            FilterOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(stats.rejected.as_deref(), Some("\\connect other"));
        assert!(!String::from_utf8(out).unwrap().contains("DROP TABLE"));
    }

    #[tokio::test]
    async fn truncated_dump_has_no_trailer() {
        let cut = &DUMP[..DUMP.find("GRANT ALL ON TABLE").unwrap()];
        let stats = filter(
            Box::pin(Cursor::new(cut.as_bytes().to_vec())),
            &mut Vec::new(),
            FilterOptions::default(),
        )
        .await
        .unwrap();
        assert!(!stats.trailer);
    }

    #[test]
    fn restrict_support() {
        assert!(psql_knows_restrict((15, 18)));
        assert!(!psql_knows_restrict((15, 13)));
        assert!(psql_knows_restrict((18, 0)));
        assert!(!psql_knows_restrict((12, 30)));
    }
}
