//! Plain SQL dumps: what to check before restoring (extensions, pg_dump version,
//! `\restrict` support) and the line filter that streams the dump into psql.
//!
//! The filter drops what a local restore must not replay (ownership, grants, the
//! plpgsql extension's comment) outside COPY data, strips lines the local psql or server
//! cannot take, counts tables and rows, and notes the `dump complete` trailer so a
//! dump cut at a line boundary is caught. It streams with bounded memory, whatever the
//! longest line (see `filter`).

mod filter;
mod quotes;

pub use filter::{filter, filter_bytes, Filter, FilterOptions, Stats, HOLD};

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
