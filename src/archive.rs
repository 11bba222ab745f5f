//! Turn a backup's bytes into a database dump stream, by content (magic bytes), never
//! by file name: gzip (every member), zstd, xz, bzip2, lrzip (through its program), and
//! tar around any of them; inside, a plain SQL dump or a custom-format archive.
//!
//! Everything streams with bounded buffers; nothing here writes to disk or knows about
//! databases beyond recognising what a dump looks like.

use std::io::Cursor;
use std::pin::Pin;

use async_compression::tokio::bufread::{BzDecoder, GzipDecoder, XzDecoder, ZstdDecoder};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};

use crate::error::Hint;
use crate::process;

pub type Reader = Pin<Box<dyn AsyncRead + Send>>;

const BUF: usize = 256 * 1024;
const PEEK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("this backup is lrzip-compressed and the `lrzip` program is not installed")]
    LrzipMissing,
    #[error("not a database dump: {0}")]
    NotADump(String),
    #[error("{0} archives are not supported")]
    Unsupported(&'static str),
    #[error("the backup is empty")]
    Empty,
    #[error("the backup is damaged or cut off: {0}")]
    Damaged(String),
    #[error("reading the backup failed")]
    Io(#[from] std::io::Error),
}

impl Hint for ArchiveError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ArchiveError::LrzipMissing => "install it: `sudo apt-get install lrzip` (Debian/Ubuntu), `brew install lrzip` (macOS)".into(),
            ArchiveError::Damaged(_) => "your database is unchanged; pick an older backup with `--backup KEY` (see `countable backups <env>`), or fetch the file again".into(),
            ArchiveError::NotADump(_) | ArchiveError::Empty => "pick another backup with `--backup KEY` (see `countable backups <env>`), or check the file you passed".into(),
            ArchiveError::Unsupported(_) => "convert it to a plain or custom-format dump, optionally compressed with gzip, zstd, xz, bzip2 or lrzip, and tarred or not".into(),
            ArchiveError::Io(_) => "check the file or your connection and try again".into(),
        })
    }
}

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

/// Read up to `n` bytes without losing them: returns them and a reader that yields
/// them again followed by the rest.
pub async fn peek(mut r: Reader, n: usize) -> std::io::Result<(Vec<u8>, Reader)> {
    let mut head = Vec::with_capacity(n);
    while head.len() < n {
        let got = (&mut r)
            .take((n - head.len()) as u64)
            .read_to_end(&mut head)
            .await?;
        if got == 0 {
            break;
        }
    }
    let again: Reader = Box::pin(Cursor::new(head.clone()).chain(r));
    Ok((head, again))
}

/// An I/O error while reading the backup's bytes: a damaged or cut-off backup.
pub fn damaged(e: std::io::Error) -> ArchiveError {
    ArchiveError::Damaged(e.to_string())
}

/// A decoded dump stream, with what it took to get there.
pub struct Decoded {
    pub reader: Reader,
    pub kind: DumpKind,
    /// Layers peeled off, outermost first (`lrzip`, `tar: db.sql`, …).
    pub layers: Vec<String>,
    /// Decoder programs to check once the stream was read to its end.
    pub finisher: Finisher,
}

/// Decoder programs that must have exited cleanly once their output was read.
pub struct Finisher {
    filters: Vec<process::Filter>,
}

impl Finisher {
    /// A decoder program that failed (a truncated lrzip file, say) turns into an error.
    pub async fn finish(self) -> anyhow::Result<()> {
        for f in self.filters {
            f.finish().await?;
        }
        Ok(())
    }
}

impl Decoded {
    pub fn describe(&self) -> String {
        let mut parts = self.layers.clone();
        parts.push(match self.kind {
            DumpKind::Plain => "plain SQL dump".into(),
            DumpKind::Custom => "custom-format dump".into(),
            DumpKind::Tar => "tar-format dump".into(),
            DumpKind::Directory => "directory-format dump (in a tar)".into(),
        });
        parts.join(" → ")
    }
}

/// Peel compression and tar layers off `source` until a dump shows.
pub async fn decode(source: Reader) -> Result<Decoded, ArchiveError> {
    let mut reader = source;
    let mut layers = Vec::new();
    let mut filters = Vec::new();
    for _ in 0..6 {
        let (head, r) = peek(reader, PEEK).await.map_err(damaged)?;
        reader = r;
        if head.is_empty() {
            // A decoder program that printed nothing has usually failed: say why.
            drop(reader);
            Finisher { filters }
                .finish()
                .await
                .map_err(|e| ArchiveError::Damaged(format!("{e:#}")))?;
            return Err(ArchiveError::Empty);
        }
        if let Some(c) = Compression::sniff(&head) {
            layers.push(c.name().to_string());
            reader = match c {
                Compression::Gzip => {
                    let mut d = GzipDecoder::new(BufReader::with_capacity(BUF, reader));
                    d.multiple_members(true);
                    Box::pin(d)
                }
                Compression::Zstd => {
                    let mut d = ZstdDecoder::new(BufReader::with_capacity(BUF, reader));
                    d.multiple_members(true);
                    Box::pin(d)
                }
                Compression::Xz => {
                    let mut d = XzDecoder::new(BufReader::with_capacity(BUF, reader));
                    d.multiple_members(true);
                    Box::pin(d)
                }
                Compression::Bzip2 => {
                    let mut d = BzDecoder::new(BufReader::with_capacity(BUF, reader));
                    d.multiple_members(true);
                    Box::pin(d)
                }
                Compression::Lrzip => {
                    if !process::exists("lrzip") {
                        return Err(ArchiveError::LrzipMissing);
                    }
                    let (out, f) =
                        process::spawn_filter("lrzip", &["-d", "-q", "-f", "-o", "-"], reader)
                            .map_err(|e| std::io::Error::other(e.to_string()))?;
                    filters.push(f);
                    Box::pin(out)
                }
            };
            continue;
        }
        if is_tar(&head) {
            let (head, r) = peek(reader, TAR_PEEK).await.map_err(damaged)?;
            reader = r;
            if let Some(kind) = pg_dump_tar_kind(&head) {
                return Ok(Decoded {
                    reader,
                    kind,
                    layers,
                    finisher: Finisher { filters },
                });
            }
            let (name, entry) = first_file(reader).await.map_err(|e| match e {
                ArchiveError::Io(io) => damaged(io),
                other => other,
            })?;
            layers.push(format!("tar: {name}"));
            reader = entry;
            continue;
        }
        if is_zip(&head) {
            return Err(ArchiveError::Unsupported("zip"));
        }
        return match sniff_dump(&head) {
            Some(kind) => Ok(Decoded {
                reader,
                kind,
                layers,
                finisher: Finisher { filters },
            }),
            None => Err(ArchiveError::NotADump(describe_bytes(&head))),
        };
    }
    Err(ArchiveError::NotADump("too many nested layers".into()))
}

fn describe_bytes(head: &[u8]) -> String {
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "it starts with bytes {} (neither a known compression, a tar archive, a SQL dump nor a pg_dump archive)",
        hex.join(" ")
    )
}

/// How far into a tar stream `pg_dump_tar_kind` looks for the first file.
const TAR_PEEK: usize = 64 * 1024;

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

/// The first regular file of a tar stream, as a reader.
async fn first_file(reader: Reader) -> Result<(String, Reader), ArchiveError> {
    let mut archive = tokio_tar::Archive::new(reader);
    let mut entries = archive.entries()?;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.display().to_string();
        if name == "toc.dat" || name.ends_with("/toc.dat") {
            return Err(ArchiveError::Unsupported(
                "directory- or tar-format pg_dump",
            ));
        }
        return Ok((name, Box::pin(entry)));
    }
    Err(ArchiveError::NotADump(
        "a tar archive without any file".into(),
    ))
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

    fn reader(bytes: Vec<u8>) -> Reader {
        Box::pin(Cursor::new(bytes))
    }

    #[tokio::test]
    async fn gzip_with_several_members_is_read_whole() {
        let mut all = Vec::new();
        for part in [
            "--\n-- PostgreSQL database dump\n",
            "SELECT 1;\n",
            "-- PostgreSQL database dump complete\n",
        ] {
            all.append(&mut gzip(part.as_bytes()).await);
        }
        let mut d = decode(reader(all)).await.unwrap();
        let mut out = String::new();
        d.reader.read_to_string(&mut out).await.unwrap();
        assert!(out.ends_with("dump complete\n"), "{out}");
        assert_eq!(d.layers, vec!["gzip"]);
        d.finisher.finish().await.unwrap();
    }

    /// One gzip member.
    async fn gzip(data: &[u8]) -> Vec<u8> {
        use async_compression::tokio::write::GzipEncoder;
        use tokio::io::AsyncWriteExt;
        let mut enc = GzipEncoder::new(Vec::new());
        enc.write_all(data).await.unwrap();
        enc.shutdown().await.unwrap();
        enc.into_inner()
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

    #[tokio::test]
    async fn garbage_is_not_a_dump() {
        let err = decode(reader(b"\x89PNG\r\n\x1a\nrest".to_vec()))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ArchiveError::NotADump(_)), "{err}");
        assert!(matches!(
            decode(reader(Vec::new())).await.err().unwrap(),
            ArchiveError::Empty
        ));
    }
}
