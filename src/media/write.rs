//! Writing media into a volume (pull-media's destination): files read from a source
//! stream into a tar archive that is uploaded, as it is made, through the engine's
//! archive endpoint into a helper container that mounts the volume read-write (no copy
//! on the host, a few chunks in memory). Each file's entry carries the source's size
//! and mtime and the owner of the volume's root; its parent directories come first.
//! Small files share one upload ([`MAX_FILES`], [`MAX_BYTES`]).
//!
//! A file whose source yields another number of bytes than its entry says is padded or
//! cut to keep the archive whole, then removed again, so that no wrong file is left
//! with the right size and mtime. It never removes anything else.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::file::MediaFile;
use super::source::{Batch, Listing, Reader};
use super::volume::{VolumeMedia, MOUNT};

/// At most this many files go in one upload…
pub const MAX_FILES: usize = 64;
/// …and once this many bytes are in it, no more files join it.
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes read from a source at once.
const CHUNK: usize = 64 * 1024;
/// Chunks on their way to the engine at once, per upload.
const QUEUE: usize = 4;

/// Owner of the volume's root, given to what is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
}

/// Progress shared by the uploads of one pull.
#[derive(Default)]
pub struct Progress {
    /// Bytes sent (content only).
    pub bytes: AtomicU64,
    /// Files whose upload the engine confirmed.
    pub files: AtomicU64,
}

/// What the uploads of one batch did.
#[derive(Debug, Default)]
pub struct Written {
    pub files: u64,
    pub bytes: u64,
    /// Files whose source gave another number of bytes than listed: removed again.
    pub mismatched: Vec<String>,
}

/// A volume opened for writing.
pub struct VolumeWriter {
    volume: VolumeMedia,
    owner: Owner,
}

impl VolumeWriter {
    /// Write through `volume` (opened with [`VolumeMedia::open_writable`]); learn its
    /// root's owner.
    pub async fn new(volume: VolumeMedia) -> anyhow::Result<Self> {
        let out = volume
            .engine
            .exec_capture(&volume.helper, &["stat", "-c", "%u %g", MOUNT], &[])
            .await;
        let owner = match out.map(|o| (o.code, parse_owner(&o.stdout))) {
            Ok((0, Some(owner))) => owner,
            _ => Owner { uid: 0, gid: 0 },
        };
        Ok(Self { volume, owner })
    }

    /// Every file the volume holds (the same listing as a volume source's).
    pub async fn list(&self) -> anyhow::Result<Listing> {
        self.volume.list().await
    }

    /// Remove the helper.
    pub async fn close(self) {
        self.volume.close().await;
    }

    /// Write every file `batch` yields, in uploads of up to [`MAX_FILES`] files or
    /// [`MAX_BYTES`] bytes, counting into `progress`.
    pub async fn write_all(
        &self,
        batch: &mut Batch<'_>,
        progress: &Progress,
        on_progress: &(dyn Fn() + Sync),
    ) -> anyhow::Result<Written> {
        let mut written = Written::default();
        while let Some(first) = batch.next().await? {
            let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(QUEUE);
            let body = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            });
            let upload = self
                .volume
                .engine
                .upload_tar(&self.volume.helper, MOUNT, body);
            let produce = async {
                let r = self.produce(&tx, first, batch, progress, on_progress).await;
                if let Err(e) = &r {
                    // Make the upload fail rather than end as a shorter archive.
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                }
                drop(tx);
                r
            };
            let (uploaded, produced) = tokio::join!(upload, produce);
            let produced = produced?;
            uploaded?;
            self.remove(&produced.mismatched).await?;
            let good = produced.files - produced.mismatched.len() as u64;
            progress.files.fetch_add(good, Ordering::Relaxed);
            on_progress();
            written.files += good;
            written.bytes += produced.bytes;
            written.mismatched.extend(produced.mismatched);
        }
        Ok(written)
    }

    /// One upload's archive: `first`, then files of `batch` until the upload is full.
    async fn produce(
        &self,
        tx: &mpsc::Sender<std::io::Result<Bytes>>,
        first: (MediaFile, Reader),
        batch: &mut Batch<'_>,
        progress: &Progress,
        on_progress: &(dyn Fn() + Sync),
    ) -> anyhow::Result<Written> {
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(b))
                    .await
                    .map_err(|_| anyhow::anyhow!("the engine stopped reading the upload"))
            }
        };
        let mut dirs = BTreeSet::new();
        let mut out = Written::default();
        let mut next = Some(first);
        while let Some((file, mut reader)) = next.take() {
            for dir in parents(&file.path) {
                if dirs.insert(dir.to_string()) {
                    send(entry_header(dir, 0, now(), self.owner, true)?.into()).await?;
                }
            }
            send(entry_header(&file.path, file.size, file.mtime, self.owner, false)?.into())
                .await?;
            let mut left = file.size;
            let mut buf = vec![0u8; CHUNK];
            let mut exact = true;
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = reader.read(&mut buf[..want]).await?;
                if n == 0 {
                    exact = false;
                    break;
                }
                left -= n as u64;
                send(Bytes::copy_from_slice(&buf[..n])).await?;
                progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
                on_progress();
            }
            if exact && reader.read(&mut buf[..1]).await? > 0 {
                exact = false;
            }
            // The entry must hold the bytes its header announced, whatever came.
            let padding = left + pad(file.size);
            if padding > 0 {
                send(Bytes::from(vec![0u8; padding as usize])).await?;
            }
            out.files += 1;
            if exact {
                out.bytes += file.size;
            } else {
                out.mismatched.push(file.path.clone());
            }
            drop(reader);
            if out.files < MAX_FILES as u64 && out.bytes < MAX_BYTES {
                next = batch.next().await?;
            }
        }
        send(Bytes::from(vec![0u8; 1024])).await?;
        Ok(out)
    }

    /// Remove `paths` (files written with content other than listed).
    async fn remove(&self, paths: &[String]) -> anyhow::Result<()> {
        for chunk in paths.chunks(100) {
            let mut cmd = vec!["rm".to_string(), "-f".into(), "--".into()];
            cmd.extend(chunk.iter().map(|p| format!("{MOUNT}/{p}")));
            let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let out = self
                .volume
                .engine
                .exec_capture(&self.volume.helper, &cmd, &[])
                .await?;
            if out.code != 0 {
                anyhow::bail!(
                    "removing files written wrong from volume {} failed: {}",
                    self.volume.volume,
                    out.stderr.trim()
                );
            }
        }
        Ok(())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `uid gid` as `stat -c '%u %g'` prints them.
fn parse_owner(text: &str) -> Option<Owner> {
    let mut parts = text.split_whitespace();
    let uid = parts.next()?.parse().ok()?;
    let gid = parts.next()?.parse().ok()?;
    Some(Owner { uid, gid })
}

/// `a/b/c.jpg` → `a`, `a/b`.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Zero bytes after `size` bytes of content, to the next 512-byte block.
fn pad(size: u64) -> u64 {
    (512 - size % 512) % 512
}

/// The header block(s) of one entry: a file of `size` bytes, or a directory (mode
/// 0755); a GNU long-name entry first when the path does not fit the header's 100
/// bytes.
fn entry_header(
    path: &str,
    size: u64,
    mtime: i64,
    owner: Owner,
    dir: bool,
) -> std::io::Result<Vec<u8>> {
    let name = if dir {
        format!("{path}/")
    } else {
        path.to_string()
    };
    let mut out = Vec::with_capacity(1024);
    let mut h = tar::Header::new_gnu();
    if name.len() > 100 {
        let mut long = tar::Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_mode(0o644);
        long.set_size(name.len() as u64 + 1);
        long.set_mtime(0);
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len() + pad(name.len() as u64 + 1) as usize, 0);
    }
    let field = &mut h.as_old_mut().name;
    let n = name.len().min(100);
    field[..n].copy_from_slice(&name.as_bytes()[..n]);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_mtime(mtime.max(0) as u64);
    h.set_uid(owner.uid);
    h.set_gid(owner.gid);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// An archive made of headers from [`entry_header`], read back with the tar crate.
    #[test]
    fn entries_read_back_with_long_names_owners_and_times() {
        let owner = Owner {
            uid: 1000,
            gid: 1001,
        };
        let long = format!("{}/{}.jpg", "d".repeat(60), "n a m e".repeat(10));
        let mut tar_bytes = Vec::new();
        for (path, content) in [("a b.txt", &b"hello"[..]), (long.as_str(), b""), ("e", b"")] {
            for d in parents(path) {
                tar_bytes.extend(entry_header(d, 0, 5, owner, true).unwrap());
            }
            tar_bytes.extend(
                entry_header(path, content.len() as u64, 1_767_225_600, owner, false).unwrap(),
            );
            tar_bytes.extend_from_slice(content);
            tar_bytes.resize(tar_bytes.len() + pad(content.len() as u64) as usize, 0);
        }
        tar_bytes.extend([0u8; 1024]);
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut got = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let mut content = String::new();
            e.read_to_string(&mut content).unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1000, 1001));
            got.push((
                e.path().unwrap().to_string_lossy().into_owned(),
                h.entry_type().is_dir(),
                h.mtime().unwrap(),
                content,
            ));
        }
        assert_eq!(
            got,
            [
                (
                    "a b.txt".to_string(),
                    false,
                    1_767_225_600,
                    "hello".to_string()
                ),
                (format!("{}/", "d".repeat(60)), true, 5, String::new()),
                (long.clone(), false, 1_767_225_600, String::new()),
                ("e".to_string(), false, 1_767_225_600, String::new()),
            ]
        );
    }

    #[test]
    fn parents_padding_and_owner() {
        assert_eq!(parents("a/b/c.jpg").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(parents("c.jpg").count(), 0);
        assert_eq!((pad(0), pad(1), pad(512), pad(513)), (0, 511, 0, 511));
        assert_eq!(parse_owner("1000 33\n"), Some(Owner { uid: 1000, gid: 33 }));
        assert_eq!(parse_owner("x"), None);
    }
}
