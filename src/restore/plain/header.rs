//! The facts a plain dump's first bytes state: the pg_dump version, the extensions it
//! creates, whether it guards itself with `\restrict`. Pure functions over a peeked
//! head; they must not panic on any bytes (`fuzz/` fuzzes them).

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
