//! Custom-format archives (`pg_dump -Fc`): the header's archive version against the
//! local pg_restore, and the table of contents (`pg_restore -l`) for the extensions it
//! needs, the tables it holds, the locks one transaction restoring it would hold, and
//! the entries a local restore must skip.

/// (major, minor, rev) of the archive format, from the first bytes (`PGDMP` + 3 bytes).
pub fn archive_version(head: &[u8]) -> Option<(u8, u8, u8)> {
    if head.len() >= 8 && head.starts_with(b"PGDMP") {
        Some((head[5], head[6], head[7]))
    } else {
        None
    }
}

/// The newest archive version a pg_restore of `major` reads.
pub fn max_archive_for(major: u32) -> (u8, u8, u8) {
    match major {
        0..=11 => (1, 13, 0),
        12..=15 => (1, 14, 0),
        16 => (1, 15, 0),
        _ => (1, 16, 255),
    }
}

/// The PostgreSQL release that writes archive version `v` (for messages).
pub fn release_for(v: (u8, u8, u8)) -> &'static str {
    match (v.0, v.1) {
        (1, 0..=13) => "11 or older",
        (1, 14) => "12 to 15",
        (1, 15) => "16",
        (1, 16) => "17 or newer",
        _ => "a newer PostgreSQL than countable knows",
    }
}

/// The facts of a TOC listing.
#[derive(Debug, Default, PartialEq)]
pub struct Toc {
    pub tables: u64,
    /// The locks a restore in one transaction holds until its COMMIT, at most (see
    /// `locks_of`). They must fit the server's shared lock table (`Db::lock_slots`).
    pub locks: u64,
    pub extensions: Vec<String>,
    pub dumped_by: Option<String>,
}

/// The locks restoring one TOC entry (`kind`: its type's words, then its name's) adds to
/// its transaction, erring high: a table or materialized view with its TOAST table and
/// index, or a materialized view's refresh (a table built beside it), 3; what only
/// fills or alters a relation the transaction already holds, 0; anything else (an
/// index, a key's index, a sequence, a view, a comment, a function, a type…) 1. An
/// extension's own script may take more (PostGIS comments on hundreds of functions).
fn locks_of(kind: &[&str]) -> u64 {
    match kind {
        ["TABLE", "DATA" | "ATTACH", ..]
        | ["INDEX", "ATTACH", ..]
        | ["SEQUENCE", "SET" | "OWNED", ..]
        | ["FK", "CONSTRAINT", ..]
        | ["DEFAULT", ..]
        | ["ACL", ..]
        | ["ENCODING" | "STDSTRINGS" | "SEARCHPATH" | "DATABASE", ..] => 0,
        ["TABLE", ..] | ["MATERIALIZED", "VIEW", ..] => 3,
        _ => 1,
    }
}

/// Read a `pg_restore -l` listing.
pub fn parse_list(list: &str) -> Toc {
    let mut toc = Toc::default();
    for line in list.lines() {
        if let Some(v) = line.strip_prefix(";     Dumped by pg_dump version: ") {
            toc.dumped_by = Some(v.trim().to_string());
        }
        if line.starts_with(';') {
            continue;
        }
        // "215; 1259 16390 TABLE public t owner" / "2; 3079 16384 EXTENSION - pgcrypto"
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() < 4 {
            continue;
        }
        toc.locks += locks_of(&words[2..]);
        match (words[2], words.get(3).copied()) {
            ("TABLE", Some(next)) if next != "DATA" && next != "ATTACH" => toc.tables += 1,
            ("EXTENSION", Some("-")) => {
                if let Some(name) = words.get(4) {
                    toc.extensions.push(name.to_string());
                }
            }
            _ => {}
        }
    }
    toc
}

/// The listing with the entries a local restore must skip commented out: the plpgsql
/// extension and its comment (ownership errors for non-superusers; it exists anyway).
pub fn filter_list(list: &str) -> String {
    list.lines()
        .map(|line| {
            let skip = !line.starts_with(';')
                && (line.contains(" EXTENSION - plpgsql")
                    || line.contains(" COMMENT - EXTENSION plpgsql"));
            if skip {
                format!(";{line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = ";\n; Archive created at 2026-11-30 05:00:00 UTC\n;     Dumped from database version: 15.18\n;     Dumped by pg_dump version: 15.18\n;\n2; 3079 16384 EXTENSION - pgcrypto \n3; 0 0 COMMENT - EXTENSION pgcrypto \n4; 3079 13000 EXTENSION - plpgsql \n5; 0 0 COMMENT - EXTENSION plpgsql \n215; 1259 16390 TABLE public t owner\n216; 1259 16391 TABLE shop orders owner\n3370; 0 16390 TABLE DATA public t owner\n";

    #[test]
    fn versions() {
        assert_eq!(archive_version(b"PGDMP\x01\x0f\x00rest"), Some((1, 15, 0)));
        assert_eq!(archive_version(b"PGDM"), None);
        assert!(archive_version(b"PGDMP\x01\x10\x00").unwrap() > max_archive_for(15));
        assert!(archive_version(b"PGDMP\x01\x0e\x00").unwrap() <= max_archive_for(15));
        assert_eq!(release_for((1, 16, 0)), "17 or newer");
    }

    #[test]
    fn toc() {
        let toc = parse_list(LIST);
        assert_eq!(toc.tables, 2);
        // Two tables, and the extensions and their comments (1 each, erring high).
        assert_eq!(toc.locks, 6 + 4);
        assert_eq!(toc.extensions, vec!["pgcrypto", "plpgsql"]);
        assert_eq!(toc.dumped_by.as_deref(), Some("15.18"));
        let filtered = filter_list(LIST);
        assert!(filtered.contains(";4; 3079 13000 EXTENSION - plpgsql"));
        assert!(filtered.contains(";5; 0 0 COMMENT - EXTENSION plpgsql"));
        assert!(filtered.contains("\n2; 3079 16384 EXTENSION - pgcrypto"));
    }

    #[test]
    fn locks_count_what_a_restore_creates_not_what_it_fills() {
        let list = "\
215; 1259 16386 TABLE public t1 postgres
214; 1259 16385 SEQUENCE public t1_id_seq postgres
4001; 0 0 SEQUENCE OWNED BY public t1_id_seq postgres
3365; 0 16386 TABLE DATA public t1 postgres
4002; 0 0 SEQUENCE SET public t1_id_seq postgres
3200; 2606 16393 CONSTRAINT public t1 t1_pkey postgres
3201; 1259 16394 INDEX public t1_name postgres
3202; 2606 16395 FK CONSTRAINT public t1 t1_fk postgres
230; 1259 16400 VIEW public v postgres
231; 1259 16401 MATERIALIZED VIEW public mv postgres
3366; 0 16401 MATERIALIZED VIEW DATA public mv postgres
232; 1259 16402 TABLE public part postgres
233; 1259 16403 TABLE public part_1 postgres
3203; 0 0 TABLE ATTACH public part_1 postgres
3204; 0 0 INDEX ATTACH public part_1_pkey postgres
3205; 0 0 DEFAULT public t1 id postgres
";
        let toc = parse_list(list);
        assert_eq!(toc.tables, 3);
        // 3 tables × 3, a materialized view and its refresh 3 each; the sequence, key,
        // index and view 1 each; filling, attaching, owning, defaults and FKs nothing.
        assert_eq!(toc.locks, 9 + 6 + 4);
    }
}
