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

mod sniff;

pub use sniff::{
    first_tar_file_name, is_tar, is_zip, pg_dump_tar_kind, sniff_dump, Compression, DumpKind,
    TAR_PEEK,
};

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
crate::register_hint!(ArchiveError);

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
    /// A decoder program that failed (a truncated lrzip file, say) turns into an error;
    /// one that died of SIGPIPE because the reader had all it needed does not (see
    /// [`process::Filter::finish_read`]).
    pub async fn finish(self) -> anyhow::Result<()> {
        for f in self.filters {
            f.finish_read().await?;
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
