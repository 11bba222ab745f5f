//! The plain-SQL filter: a state machine fed the dump in pieces of any size, so memory
//! stays bounded whatever the longest line is (one 200 MB bytea row, say).
//!
//! Only the start of a line is held, up to [`HOLD`] bytes, to classify it: a line that
//! ends within it is judged whole, as it always was; a longer one is judged by its start
//! and its last bytes while the rest passes through. COPY data passes through once a
//! row cannot be the `\.` end marker. It must never hold a whole line. Plain std and
//! no I/O (`fuzz/` builds this file on its own).

use super::quotes::Quotes;

/// The last line of a complete plain dump.
pub const TRAILER: &str = "-- PostgreSQL database dump complete";

/// How much of a line's start is held to classify it. Every line the filter drops
/// (ownership, grants) is far shorter: pg_dump's longest, `ALTER FUNCTION f(<100
/// arguments>) OWNER TO …`, stays under 32 KiB.
pub const HOLD: usize = 64 * 1024;

/// The smallest hold [`Filter::with_hold`] takes: longer than every prefix a line is
/// judged by (the trailer, `CREATE EXTENSION IF NOT EXISTS plpgsql `).
pub const MIN_HOLD: usize = 64;

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
    /// Rows of COPY data: every row, when `inserts` is false.
    pub rows: u64,
    /// The dump also has `INSERT` statements (pg_dump --inserts): `rows` is not all.
    pub inserts: bool,
    pub trailer: bool,
    pub dropped_lines: u64,
    /// A psql meta-command countable refuses to run (`\connect`, `\!`, …); the
    /// stream stops there.
    pub rejected: Option<String>,
}

fn starts(line: &[u8], prefix: &str) -> bool {
    line.starts_with(prefix.as_bytes())
}

/// Should this top-level line (or the start of a long one) be left out of a local restore?
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

/// A psql meta-command countable will not run (`\restrict` is the dump's own guard).
fn refused(line: &[u8]) -> bool {
    starts(line, "\\") && !starts(line, "\\restrict ") && !starts(line, "\\unrestrict ")
}

/// The last bytes of a line that goes by in pieces: what `trim_ascii_end` would leave
/// at its end, and how long that would be.
#[derive(Debug, Default)]
struct Tail {
    raw: Vec<u8>,
    content: Vec<u8>,
    content_len: usize,
    seen: usize,
}

const TAIL: usize = 16;

/// The last `TAIL` bytes of `a` followed by `b`.
fn last_of(a: &[u8], b: &[u8]) -> Vec<u8> {
    if b.len() >= TAIL {
        return b[b.len() - TAIL..].to_vec();
    }
    let keep = (TAIL - b.len()).min(a.len());
    let mut v = a[a.len() - keep..].to_vec();
    v.extend_from_slice(b);
    v
}

impl Tail {
    fn push(&mut self, piece: &[u8]) {
        if let Some(k) = piece.iter().rposition(|b| !b.is_ascii_whitespace()) {
            self.content = last_of(&self.raw, &piece[..=k]);
            self.content_len = self.seen + k + 1;
        }
        self.raw = last_of(&self.raw, piece);
        self.seen += piece.len();
    }

    fn ends_with(&self, s: &[u8]) -> bool {
        self.content.ends_with(s)
    }
}

/// What is known about a line longer than the hold while its rest goes by.
#[derive(Debug)]
struct Long {
    copy: bool,
    was_inside: bool,
    comment_or_meta: bool,
    trailer_start: bool,
    tail: Tail,
}

#[derive(Debug)]
enum Line {
    /// Holding the start of a line outside COPY data.
    Start,
    /// The rest of a long line, passed through.
    Pass(Long),
    /// The rest of a long line that is dropped.
    Skip,
    /// Holding the start of a COPY row while it may be the `\.` end marker.
    CopyStart,
    /// The rest of a COPY row, passed through.
    CopyRow,
}

/// The filter, fed the dump in pieces: `feed` each piece, write out what it put into
/// `out`, and `finish` at the end of the input.
#[derive(Debug)]
pub struct Filter {
    opts: FilterOptions,
    stats: Stats,
    statement_start: bool,
    quotes: Quotes,
    held: Vec<u8>,
    hold: usize,
    line: Line,
    stopped: bool,
}

impl Filter {
    pub fn new(opts: FilterOptions) -> Self {
        Self::with_hold(opts, HOLD)
    }

    /// A filter that holds `hold` bytes of a line's start instead of [`HOLD`] (at least
    /// [`MIN_HOLD`]), so tests and fuzzing reach long lines with short inputs.
    pub fn with_hold(opts: FilterOptions, hold: usize) -> Self {
        Self {
            opts,
            stats: Stats::default(),
            statement_start: true,
            quotes: Quotes::default(),
            held: Vec::with_capacity(4096.min(hold)),
            hold: hold.max(MIN_HOLD),
            line: Line::Start,
            stopped: false,
        }
    }

    /// Filter the next piece of the dump into `out`. Returns false once the stream
    /// stops (a refused meta-command): feed no more, `finish`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> bool {
        while !input.is_empty() && !self.stopped {
            if matches!(self.line, Line::CopyStart) && self.held.is_empty() {
                let n = self.copy_rows(input);
                out.extend_from_slice(&input[..n]);
                input = &input[n..];
                if input.is_empty() {
                    break;
                }
            }
            let end = memchr::memchr(b'\n', input);
            match &mut self.line {
                Line::Start => {
                    let room = self.hold - self.held.len();
                    match end.filter(|at| *at < room) {
                        Some(at) => {
                            self.held.extend_from_slice(&input[..=at]);
                            input = &input[at + 1..];
                            self.whole_line(out);
                        }
                        None => {
                            let take = room.min(input.len());
                            self.held.extend_from_slice(&input[..take]);
                            input = &input[take..];
                            if self.held.len() == self.hold {
                                self.long_line(out);
                            }
                        }
                    }
                }
                Line::Pass(long) => {
                    let n = end.map_or(input.len(), |at| at + 1);
                    let piece = &input[..n];
                    out.extend_from_slice(piece);
                    self.quotes.scan(piece);
                    long.tail.push(piece);
                    input = &input[n..];
                    if end.is_some() {
                        self.end_long_line();
                    }
                }
                Line::Skip => match end {
                    Some(at) => {
                        input = &input[at + 1..];
                        self.line = Line::Start;
                    }
                    None => input = &[],
                },
                Line::CopyStart => {
                    let b = input[0];
                    input = &input[1..];
                    self.copy_byte(b, out);
                }
                Line::CopyRow => {
                    let n = end.map_or(input.len(), |at| at + 1);
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if end.is_some() {
                        self.line = Line::CopyStart;
                    }
                }
            }
        }
        !self.stopped
    }

    /// The end of the input: judge a last line without a newline; what went through.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Stats {
        if !self.stopped && !self.held.is_empty() {
            match self.line {
                Line::Start => self.whole_line(out),
                Line::CopyStart => {
                    if self.held != b"\\." {
                        self.stats.rows += 1;
                    }
                    out.append(&mut self.held);
                }
                _ => {}
            }
        }
        self.stats
    }

    /// A line outside COPY data that fits in the hold, judged whole.
    fn whole_line(&mut self, out: &mut Vec<u8>) {
        let line = std::mem::take(&mut self.held);
        let trimmed = line.trim_ascii_end();
        if trimmed == TRAILER.as_bytes() {
            self.stats.trailer = true;
        }
        let mut copy = false;
        if self.statement_start {
            if drop_line(&line, self.opts) {
                self.stats.dropped_lines += 1;
                self.reuse(line);
                return;
            }
            if refused(&line) {
                self.stats.rejected = Some(String::from_utf8_lossy(trimmed).into_owned());
                self.stopped = true;
                return;
            }
            copy = starts(&line, "COPY ") && trimmed.ends_with(b"FROM stdin;");
            self.count_table(&line);
        }
        let was_inside = self.quotes.inside();
        self.quotes.scan(&line);
        self.statement_start = !self.quotes.inside()
            && (trimmed.is_empty()
                || trimmed.ends_with(b";")
                || (!was_inside && (trimmed.starts_with(b"--") || trimmed.starts_with(b"\\"))));
        out.extend_from_slice(&line);
        self.line = if copy { Line::CopyStart } else { Line::Start };
        self.reuse(line);
    }

    /// The held start of a longer line: judge the line by it, then pass its rest.
    fn long_line(&mut self, out: &mut Vec<u8>) {
        let head = std::mem::take(&mut self.held);
        let mut copy = false;
        if self.statement_start {
            if drop_line(&head, self.opts) {
                self.stats.dropped_lines += 1;
                self.line = Line::Skip;
                self.reuse(head);
                return;
            }
            if refused(&head) {
                let shown = String::from_utf8_lossy(&head[..200.min(head.len())]);
                self.stats.rejected = Some(format!("{}…", shown.trim_end()));
                self.stopped = true;
                return;
            }
            copy = starts(&head, "COPY ");
            self.count_table(&head);
        }
        let was_inside = self.quotes.inside();
        self.quotes.scan(&head);
        let mut tail = Tail::default();
        tail.push(&head);
        self.line = Line::Pass(Long {
            copy,
            was_inside,
            comment_or_meta: starts(&head, "--") || starts(&head, "\\"),
            trailer_start: starts(&head, TRAILER),
            tail,
        });
        out.extend_from_slice(&head);
        self.reuse(head);
    }

    fn end_long_line(&mut self) {
        let Line::Pass(long) = std::mem::replace(&mut self.line, Line::Start) else {
            return;
        };
        let tail = &long.tail;
        if long.trailer_start && tail.content_len == TRAILER.len() {
            self.stats.trailer = true;
        }
        self.statement_start = !self.quotes.inside()
            && (tail.content_len == 0
                || tail.ends_with(b";")
                || (!long.was_inside && long.comment_or_meta));
        if long.copy && tail.ends_with(b"FROM stdin;") {
            self.line = Line::CopyStart;
        }
    }

    /// COPY rows that cannot be the `\.` end marker (they do not start with a
    /// backslash), counted and passed in bulk: how many bytes of `input` they take. A
    /// row the input cuts short leaves the filter in `CopyRow`; a row that starts with a
    /// backslash is left to `copy_byte`.
    fn copy_rows(&mut self, input: &[u8]) -> usize {
        let mut at = 0;
        while at < input.len() && input[at] != b'\\' {
            self.stats.rows += 1;
            match memchr::memchr(b'\n', &input[at..]) {
                Some(k) => at += k + 1,
                None => {
                    self.line = Line::CopyRow;
                    return input.len();
                }
            }
        }
        at
    }

    /// The next byte at the start of a COPY row: the end marker, or a row.
    fn copy_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        self.held.push(b);
        let held = self.held.as_slice();
        if held == b"\\.\n" || held == b"\\.\r\n" {
            self.line = Line::Start;
        } else if matches!(held, b"\\" | b"\\." | b"\\.\r") {
            return;
        } else {
            self.stats.rows += 1;
            self.line = if b == b'\n' {
                Line::CopyStart
            } else {
                Line::CopyRow
            };
        }
        out.append(&mut self.held);
    }

    fn count_table(&mut self, line: &[u8]) {
        if starts(line, "CREATE TABLE ") || starts(line, "CREATE UNLOGGED TABLE ") {
            self.stats.tables += 1;
        } else if starts(line, "INSERT INTO ") {
            self.stats.inserts = true;
        }
    }

    /// Keep the held buffer's allocation (it is at most the hold).
    fn reuse(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.held = buf;
    }
}

/// Filter a whole dump in memory (for tests and fuzzing).
pub fn filter_bytes(input: &[u8], opts: FilterOptions) -> (Vec<u8>, Stats) {
    let mut out = Vec::with_capacity(input.len());
    let mut f = Filter::new(opts);
    f.feed(input, &mut out);
    let stats = f.finish(&mut out);
    (out, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: FilterOptions = FilterOptions {
        strip_restrict: true,
        strip_transaction_timeout: true,
    };

    /// Feed `input` in pieces of `size` bytes.
    fn in_pieces(input: &[u8], size: usize) -> (Vec<u8>, Stats, usize) {
        let mut out = Vec::new();
        let mut f = Filter::new(OPTS);
        let mut most_held = 0;
        for piece in input.chunks(size) {
            let mut o = Vec::new();
            if !f.feed(piece, &mut o) {
                out.append(&mut o);
                break;
            }
            most_held = most_held.max(f.held.capacity());
            out.append(&mut o);
        }
        let stats = f.finish(&mut out);
        (out, stats, most_held)
    }

    /// `n` bytes of one line, no quotes.
    fn big(n: usize) -> String {
        "ab; cd ".repeat(n / 7 + 1)[..n].to_string()
    }

    /// `n`-odd bytes of one line for inside a string literal: escapes, `$$`, `--`.
    fn quoted(n: usize) -> String {
        "a''b$$c -- d;".repeat(n / 13 + 1)
    }

    #[test]
    fn pieces_of_any_size_filter_alike() {
        let dump = format!(
            "SET transaction_timeout = 0;\nCREATE TABLE t (x text);\nALTER TABLE t OWNER TO u;\nCOPY t (x) FROM stdin;\n\\\\\n\\.x\n\\.\r\nGRANT ALL ON t TO u;\nCREATE FUNCTION f() AS $q$\nGRANT x;\n$q$;\nCOMMENT ON t IS 'a\nGRANT b';\nINSERT INTO t VALUES ('{}');\nCOPY t (x) FROM stdin;\n{}\n\\.\n{TRAILER}\n",
            quoted(3 * HOLD),
            big(2 * HOLD + 5)
        );
        let (want, want_stats) = filter_bytes(dump.as_bytes(), OPTS);
        assert_eq!(want_stats.rows, 3);
        assert!(
            want_stats.inserts,
            "an INSERT statement: COPY rows are not all"
        );
        let copy_only =
            format!("CREATE TABLE t (x text);\nCOPY t (x) FROM stdin;\na\nb\n\\.\n{TRAILER}\n");
        let (_, stats) = filter_bytes(copy_only.as_bytes(), OPTS);
        assert_eq!((stats.rows, stats.inserts), (2, false));
        assert_eq!(want_stats.dropped_lines, 3);
        assert!(want_stats.trailer);
        for size in [1, 2, 3, 7, 4096, HOLD - 1, HOLD, HOLD + 1, 1 << 20] {
            let (out, stats, _) = in_pieces(dump.as_bytes(), size);
            assert_eq!(stats, want_stats, "pieces of {size}");
            assert!(out == want, "pieces of {size}: output differs");
        }
    }

    #[test]
    fn copy_rows_in_bulk_count_and_pass_as_byte_by_byte() {
        let mut rows = String::new();
        for i in 0..1000 {
            match i % 4 {
                0 => rows.push_str("\\N\tx\n"),
                1 => rows.push('\n'),
                2 => rows.push_str("\\.x\n"),
                _ => rows.push_str(&format!("{i}\tv\n")),
            }
        }
        let dump = format!(
            "CREATE TABLE t (a int, b text);\nCOPY t (a, b) FROM stdin;\n{rows}\\.\nGRANT ALL ON t TO u;\n{TRAILER}\n"
        );
        let (want, stats) = filter_bytes(dump.as_bytes(), OPTS);
        assert_eq!(stats.rows, 1000);
        assert_eq!(
            stats.dropped_lines, 1,
            "the GRANT after the data is a statement again"
        );
        assert!(want.ends_with(format!("{rows}\\.\n{TRAILER}\n").as_bytes()));
        for size in [1, 2, 5, 64, 4096] {
            let (out, s, _) = in_pieces(dump.as_bytes(), size);
            assert_eq!(s, stats, "pieces of {size}");
            assert!(out == want, "pieces of {size}: output differs");
        }
    }

    #[test]
    fn long_lines_are_judged_by_their_start_and_end() {
        let long = big(HOLD + 10);
        let dump = format!(
            "INSERT INTO t VALUES ('{long}\nGRANT in the string stays');\nGRANT dropped after it;\nALTER TABLE t OWNER TO u, {long};\nCOPY t (x, {long}) FROM stdin;\n{long}\n\\.\n{TRAILER}{}\n",
            " ".repeat(HOLD)
        );
        let (out, stats) = filter_bytes(dump.as_bytes(), OPTS);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("GRANT in the string stays"));
        assert!(!out.contains("GRANT dropped"));
        assert!(!out.contains("OWNER TO"));
        assert_eq!(stats.dropped_lines, 2);
        assert_eq!(stats.rows, 1, "the long COPY header started COPY data");
        assert!(stats.trailer, "the trailer with long trailing blanks");
        let kept = dump
            .replace("GRANT dropped after it;\n", "")
            .replace(&format!("ALTER TABLE t OWNER TO u, {long};\n"), "");
        assert!(out == kept, "only the two dropped lines are left out");
    }

    #[test]
    fn a_long_meta_command_is_refused() {
        let dump = format!("SELECT 1;\n\\! {}\nDROP TABLE t;\n", big(2 * HOLD));
        let (out, stats) = filter_bytes(dump.as_bytes(), OPTS);
        assert_eq!(out, b"SELECT 1;\n");
        assert!(stats.rejected.unwrap().starts_with("\\! ab;"));
    }

    #[test]
    fn a_huge_row_is_never_held() {
        for dump in [
            format!("COPY t (x) FROM stdin;\n{}\n\\.\n", "f".repeat(8 << 20)),
            format!("INSERT INTO t VALUES ('{}');\n", "f".repeat(8 << 20)),
        ] {
            let (out, stats, most_held) = in_pieces(dump.as_bytes(), 256 * 1024);
            assert!(most_held <= HOLD, "held {most_held} bytes");
            assert_eq!(out.len(), dump.len());
            assert_eq!(stats.dropped_lines, 0);
        }
    }
}
