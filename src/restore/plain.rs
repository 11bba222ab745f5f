//! Plain SQL dumps: what to check before restoring (extensions, pg_dump version,
//! `\restrict` support) and the line filter that streams the dump into psql.
//!
//! The filter drops what a local restore must not replay (ownership, grants, the
//! plpgsql extension's comment) outside COPY data, strips lines the local psql or server
//! cannot take, counts tables and rows, and notes the `dump complete` trailer so a
//! dump cut at a line boundary is caught. It streams with bounded memory, whatever the
//! longest line (see `filter`).

mod filter;
mod header;
mod quotes;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::archive::Reader;

pub use filter::{filter_bytes, Filter, FilterOptions, Stats, HOLD, MIN_HOLD, TRAILER};
pub use header::{inspect, psql_knows_restrict, Header};

/// How much of the input is read at a time.
const CHUNK: usize = 256 * 1024;

/// Copy `input` to `output`, filtered, in bounded pieces; returns what went through.
/// The output is shut down at the end so the reader sees EOF.
pub async fn filter<W>(
    mut input: Reader,
    mut output: W,
    opts: FilterOptions,
) -> std::io::Result<Stats>
where
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + HOLD);
    let mut f = Filter::new(opts);
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let go_on = f.feed(&buf[..n], &mut out);
        output.write_all(&out).await?;
        out.clear();
        if !go_on {
            break;
        }
    }
    let stats = f.finish(&mut out);
    output.write_all(&out).await?;
    output.flush().await?;
    output.shutdown().await?;
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
