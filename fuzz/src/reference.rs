//! The fuzzers' oracle: the plain-SQL filter as it was before it streamed, one whole
//! line at a time (`read_until` per line), plus the one rule streaming adds: a line as
//! long as the hold or longer is dropped (`ALTER … OWNER TO`) only if its held start
//! shows it, and a refused one is quoted by its start. The streaming filter must give
//! the same output and the same stats for every input.

use crate::plain::{FilterOptions, Stats, TRAILER};

#[derive(Debug, Default)]
struct Quotes {
    dollar: Option<Vec<u8>>,
    single: bool,
}

impl Quotes {
    fn inside(&self) -> bool {
        self.dollar.is_some() || self.single
    }

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

/// The old filter over a whole input in memory, for a filter holding `hold` bytes.
pub fn reference_filter(input: &[u8], opts: FilterOptions, hold: usize) -> (Vec<u8>, Stats) {
    let mut w = Vec::new();
    let mut stats = Stats::default();
    let mut in_copy = false;
    let mut statement_start = true;
    let mut quotes = Quotes::default();
    for line in input.split_inclusive(|b| *b == b'\n') {
        if in_copy {
            if line == b"\\.\n" || line == b"\\.\r\n" || line == b"\\." {
                in_copy = false;
            } else {
                stats.rows += 1;
            }
            w.extend_from_slice(line);
            continue;
        }
        let trimmed = line.trim_ascii_end();
        if trimmed == TRAILER.as_bytes() {
            stats.trailer = true;
        }
        let long = line.strip_suffix(b"\n").unwrap_or(line).len() >= hold;
        let judged = if long { &line[..hold] } else { line };
        if statement_start {
            if drop_line(judged, opts) {
                stats.dropped_lines += 1;
                continue;
            }
            if starts(line, "\\") && !starts(line, "\\restrict ") && !starts(line, "\\unrestrict ")
            {
                stats.rejected = Some(if long {
                    let shown = String::from_utf8_lossy(&line[..200.min(hold)]);
                    format!("{}…", shown.trim_end())
                } else {
                    String::from_utf8_lossy(trimmed).into_owned()
                });
                break;
            }
            if starts(line, "COPY ") && trimmed.ends_with(b"FROM stdin;") {
                in_copy = true;
            }
            if starts(line, "CREATE TABLE ") || starts(line, "CREATE UNLOGGED TABLE ") {
                stats.tables += 1;
            } else if starts(line, "INSERT INTO ") {
                stats.inserts = true;
            }
        }
        let was_inside = quotes.inside();
        quotes.scan(line);
        statement_start = !quotes.inside()
            && (trimmed.is_empty()
                || trimmed.ends_with(b";")
                || (!was_inside && (trimmed.starts_with(b"--") || trimmed.starts_with(b"\\"))));
        w.extend_from_slice(line);
    }
    (w, stats)
}
