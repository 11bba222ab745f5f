//! What a backup's first bytes are, by content (magic bytes and headers), never by file
//! name: a compression layer, a tar (and whether it is itself a pg_dump archive), a zip,
//! a plain SQL dump or a custom-format archive.
//!
//! Pure functions over a peeked head: no I/O, and they must not panic on any bytes
//! (`fuzz/` fuzzes them).

/// A compression layer recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
    Lrzip,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Self::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Self::Zstd)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Self::Xz)
        } else if head.starts_with(b"BZh") {
            Some(Self::Bzip2)
        } else if head.starts_with(b"LRZI") {
            Some(Self::Lrzip)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::Bzip2 => "bzip2",
            Self::Lrzip => "lrzip",
        }
    }
}

/// What kind of dump the decoded bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpKind {
    /// `pg_dump` plain SQL, restored with psql.
    Plain,
    /// `pg_dump -Fc`, restored with pg_restore.
    Custom,
    /// `pg_dump -Ft`: a tar whose first member is `toc.dat`, streamed to pg_restore.
    Tar,
    /// `pg_dump -Fd` in a tar: extracted in the db container, then pg_restore.
    Directory,
}

pub fn is_tar(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
}

pub fn is_zip(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04")
}

/// Plain SQL or custom format, from the first bytes of the decoded stream.
pub fn sniff_dump(head: &[u8]) -> Option<DumpKind> {
    if head.starts_with(b"PGDMP") {
        return Some(DumpKind::Custom);
    }
    let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let text = String::from_utf8_lossy(&text[..text.len().min(2048)]);
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let sql_start = [
        "--",
        "SET ",
        "\\restrict",
        "\\connect",
        "CREATE ",
        "BEGIN",
        "SELECT ",
        "/*",
    ];
    (sql_start.iter().any(|s| first.starts_with(s)) && !text.contains('\0'))
        .then_some(DumpKind::Plain)
}

/// How far into a tar stream `pg_dump_tar_kind` looks for the first file.
pub const TAR_PEEK: usize = 64 * 1024;

/// The name of the first regular file in the tar headers within `head` (the `tar`
/// crate reads them: ustar prefixes, GNU long names, pax `path` records). `None` when
/// the headers go beyond `head` or are not valid tar.
pub fn first_tar_file_name(head: &[u8]) -> Option<String> {
    let mut archive = tar::Archive::new(head);
    for entry in archive.entries().ok()? {
        let entry = entry.ok()?;
        if entry.header().entry_type().is_file() {
            let path = entry.path().ok()?;
            let name = path.to_string_lossy();
            return Some(name.trim_start_matches("./").to_string());
        }
    }
    None
}

/// A tar that is itself a pg_dump archive: `-Ft` (toc.dat first, at the root) or a
/// directory-format dump tarred up (`dump/toc.dat`, `dump/3001.dat.gz`, …).
pub fn pg_dump_tar_kind(head: &[u8]) -> Option<DumpKind> {
    let name = first_tar_file_name(head)?;
    if name == "toc.dat" {
        return Some(DumpKind::Tar);
    }
    let base = name.rsplit('/').next().unwrap_or(&name);
    let numbered = base
        .split('.')
        .next()
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if base == "toc.dat" || (numbered && base.contains(".dat")) || base == "blobs.toc" {
        return Some(DumpKind::Directory);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_compressions_and_dumps() {
        assert_eq!(
            Compression::sniff(&[0x1f, 0x8b, 8]),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::sniff(b"LRZI\x00\x06"),
            Some(Compression::Lrzip)
        );
        assert_eq!(Compression::sniff(b"BZh91AY"), Some(Compression::Bzip2));
        assert_eq!(Compression::sniff(b"--\n"), None);
        assert_eq!(sniff_dump(b"PGDMP\x01\x0e\x00"), Some(DumpKind::Custom));
        assert_eq!(
            sniff_dump(b"--\n-- PostgreSQL database dump\n--\n"),
            Some(DumpKind::Plain)
        );
        assert_eq!(sniff_dump(b"\\restrict abc\n--\n"), Some(DumpKind::Plain));
        assert_eq!(sniff_dump(b"\x89PNG\r\n"), None);
        assert_eq!(sniff_dump(b"hello world"), None);
    }

    fn tar_header(name: &str, typ: u8, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let sz = format!("{size:011o}\0");
        h[124..136].copy_from_slice(sz.as_bytes());
        h[156] = typ;
        h[257..262].copy_from_slice(b"ustar");
        // The checksum: the header's byte sum, counting its own field as spaces.
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    #[test]
    fn recognises_pg_dump_tars() {
        let mut t = tar_header("toc.dat", b'0', 10);
        t.extend(vec![0u8; 512]);
        assert_eq!(pg_dump_tar_kind(&t), Some(DumpKind::Tar));
        let mut d = tar_header("dump/", b'5', 0);
        d.extend(tar_header("dump/3001.dat.gz", b'0', 700));
        assert_eq!(first_tar_file_name(&d).as_deref(), Some("dump/3001.dat.gz"));
        assert_eq!(pg_dump_tar_kind(&d), Some(DumpKind::Directory));
        let p = tar_header("db.sql", b'0', 100);
        assert_eq!(pg_dump_tar_kind(&p), None);
    }

    /// A regular file entry whose name is in the header's 100 bytes, cut if longer.
    fn cut_header(name: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        let cut = &name.as_bytes()[..name.len().min(100)];
        h.as_old_mut().name[..cut.len()].copy_from_slice(cut);
        h.set_size(size);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    #[test]
    fn long_names_in_gnu_and_pax_headers() {
        // `pg_dump -Fd` into a deep directory, tarred: names longer than 100 bytes.
        let dir = format!("backups/{}/dump", "d".repeat(120));
        // GNU tar: a `././@LongLink` entry carries the whole name.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("{dir}/toc.dat"), &b"toc"[..])
            .unwrap();
        let gnu = b.into_inner().unwrap();
        assert!(is_tar(&gnu));
        assert_eq!(first_tar_file_name(&gnu), Some(format!("{dir}/toc.dat")));
        assert_eq!(pg_dump_tar_kind(&gnu), Some(DumpKind::Directory));
        // POSIX (pax): an `x` entry's `path` record overrides the header's cut name.
        let name = format!("{dir}/3001.dat.gz");
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", name.as_bytes())])
            .unwrap();
        b.append(&cut_header(&name, 3), &b"dat"[..]).unwrap();
        let pax = b.into_inner().unwrap();
        assert!(is_tar(&pax));
        assert_eq!(first_tar_file_name(&pax), Some(name));
        assert_eq!(pg_dump_tar_kind(&pax), Some(DumpKind::Directory));
    }

    #[test]
    fn long_names_from_the_real_tar() {
        // GNU tar 1.34, `--format=gnu` and `--format=posix`, of a directory dump under a
        // 120-byte directory name (the fuzzer's seeds).
        let dir = format!("{}/dump/", "d".repeat(120));
        for head in [
            &include_bytes!("../../fuzz/seeds/sniff/gnu-long.tar")[..],
            &include_bytes!("../../fuzz/seeds/sniff/pax-long.tar")[..],
        ] {
            let name = first_tar_file_name(head).unwrap();
            assert!(name.starts_with(&dir), "{name}");
            assert_eq!(pg_dump_tar_kind(head), Some(DumpKind::Directory));
        }
    }
}
