//! A backup's media part: list the environment's media, send the files that are new or
//! changed since the previous media manifest of the same source into
//! `<stamp>.media/<path>` of the backup store, point the unchanged ones at the objects
//! that hold them already, check what the store holds, then write
//! `<stamp>.media.json`.
//!
//! Streamed with bounded memory: a small file (up to [`SMALL`]) is read whole and put
//! in one request, up to [`PARALLEL`] of them (within [`IN_FLIGHT_BYTES`]) at once; a
//! larger one goes through the store's multipart upload. Interrupted or failed, it
//! leaves no object of its own behind. It never writes to the media it reads.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::file::MediaFile;
use super::manifest::{folder, manifest_key, Entry, MediaManifest};
use super::source::{Media, MediaSource, Reader};
use super::MediaError;
use crate::digest::{hex, HashingWriter};
use crate::interrupt::Interrupt;
use crate::store::{Store, StoreError};
use crate::ui::{self, Printer};

const MIB: usize = 1024 * 1024;
/// Files up to this size are put in one request; larger ones in parts.
pub const SMALL: usize = 8 * MIB;
/// At most this many small files are being put at once…
pub const PARALLEL: usize = 8;
/// …within this many bytes.
pub const IN_FLIGHT_BYTES: u64 = 32 * MIB as u64;

/// What the media part of a backup did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MediaSummary {
    /// `<stamp>.media.json`
    pub manifest: String,
    pub source: String,
    pub count: u64,
    pub bytes: u64,
    /// Files sent to the store by this backup (new or changed).
    pub new: u64,
    /// Their bytes.
    pub sent: u64,
    /// Files listed that were gone when their turn came (deleted meanwhile).
    pub vanished: u64,
}

impl MediaSummary {
    /// `2,000 files, 500.0 MiB (12 new, 3.1 MiB sent)`
    pub fn describe(&self) -> String {
        format!(
            "{}, {} ({} new, {} sent)",
            ui::counted(self.count, "file"),
            ui::human_bytes(self.bytes),
            ui::count(self.new),
            ui::human_bytes(self.sent)
        )
    }
}

/// Which files must be sent: those of `files` that `previous` does not hold unchanged
/// ([`MediaFile::unchanged_since`]). The others come back as entries pointing at the
/// objects `previous` names, with its checksums.
pub fn plan(
    files: Vec<MediaFile>,
    previous: Option<&MediaManifest>,
) -> (Vec<Entry>, Vec<MediaFile>) {
    let before: HashMap<&str, &Entry> = previous
        .map(|m| m.files.iter().map(|e| (e.file.path.as_str(), e)).collect())
        .unwrap_or_default();
    let mut kept = Vec::new();
    let mut send = Vec::new();
    for f in files {
        match before.get(f.path.as_str()) {
            Some(e) if f.unchanged_since(&e.file) && e.file.sha256.is_some() => kept.push(Entry {
                file: MediaFile {
                    sha256: e.file.sha256.clone(),
                    ..f
                },
                object: e.object.clone(),
            }),
            _ => send.push(f),
        }
    }
    (kept, send)
}

/// Back up `media` of environment `env` into `store` under `stamp` (the database
/// dump's), the manifest dated `created_at`. `None` when there is no media to back up
/// (said once). Interrupted or failed, what it stored is deleted again.
pub async fn back_up(
    media: &Media,
    env: &str,
    store: &Store,
    stamp: &str,
    created_at: &str,
    printer: &Printer,
) -> anyhow::Result<Option<MediaSummary>> {
    let name = match media.describe() {
        Ok(name) => name,
        Err(why) => {
            printer.note(&format!("   media: {why}"));
            return Ok(None);
        }
    };
    if store.location().starts_with(name) {
        return Err(MediaError::StoreInMedia {
            store: store.location(),
            media: name.to_string(),
        }
        .into());
    }
    let key = manifest_key(stamp);
    if store.exists(&key).await? || !store.walk(&folder(stamp)).await?.is_empty() {
        return Err(MediaError::Exists(key).into());
    }
    let interrupt = Interrupt::get()?;
    let spinner = printer.spinner(&format!("media: listing {name}"));
    let source = media.open().await;
    spinner.finish_and_clear();
    let source = source?;
    let work = Work {
        source: &source,
        name,
        env,
        store,
        stamp,
        created_at,
        printer,
    };
    let done = tokio::select! {
        r = work.run() => r,
        _ = interrupt.wait() => Err(MediaError::Interrupted.into()),
    };
    source.close().await;
    if done.is_err() {
        let _ = store.delete_tree(&folder(stamp)).await;
        let _ = store.delete(&key).await;
    }
    done.map(Some)
}

/// One media backup's inputs.
struct Work<'a> {
    source: &'a MediaSource,
    name: &'a str,
    env: &'a str,
    store: &'a Store,
    stamp: &'a str,
    created_at: &'a str,
    printer: &'a Printer,
}

impl Work<'_> {
    async fn run(&self) -> anyhow::Result<MediaSummary> {
        if matches!(self.source, MediaSource::Missing) {
            self.printer.note(&format!(
                "   media: the engine has no {} (yet): there are no files",
                self.name
            ));
        }
        let listing = self.source.list().await?;
        if !listing.skipped.is_empty() {
            self.printer.warn(&format!(
                "media: {} names are not paths countable can store and were left out: {}",
                listing.skipped.len(),
                listing
                    .skipped
                    .iter()
                    .take(3)
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let entries = self.store.entries().await?;
        let previous = MediaManifest::previous(self.store, &entries, self.stamp, self.name).await?;
        let (listed, listed_bytes) = (listing.files.len() as u64, listing.bytes());
        let (mut files, send) = plan(listing.files, previous.as_ref());
        let (sent, vanished) = self.send(send, listed, listed_bytes).await?;
        self.check(&sent).await?;
        let new = sent.len() as u64;
        let sent_bytes = sent.iter().map(|e| e.file.size).sum();
        files.extend(sent);
        files.sort_by(|a, b| a.file.path.cmp(&b.file.path));
        let manifest = MediaManifest {
            countable_version: env!("CARGO_PKG_VERSION").into(),
            created_at: self.created_at.into(),
            environment: self.env.into(),
            source: self.name.into(),
            count: files.len() as u64,
            bytes: files.iter().map(|e| e.file.size).sum(),
            files,
        };
        let key = manifest_key(self.stamp);
        self.store
            .put_small(&key, serde_json::to_vec_pretty(&manifest)?)
            .await?;
        Ok(MediaSummary {
            manifest: key,
            source: manifest.source,
            count: manifest.count,
            bytes: manifest.bytes,
            new,
            sent: sent_bytes,
            vanished,
        })
    }

    /// Send `wanted` (of the `listed` files, `listed_bytes` in all) into the stamp's
    /// folder: their entries, and how many had vanished.
    async fn send(
        &self,
        wanted: Vec<MediaFile>,
        listed: u64,
        listed_bytes: u64,
    ) -> anyhow::Result<(Vec<Entry>, u64)> {
        if wanted.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let files = wanted.len() as u64;
        let total: u64 = wanted.iter().map(|f| f.size).sum();
        let bar = self.printer.bytes_bar(
            Some(total.max(1)),
            &format!(
                "media: sending {} of {} files ({}) from {}",
                ui::count(files),
                ui::count(listed),
                ui::human_bytes(total),
                self.name
            ),
        );
        let mut batch = self.source.read(wanted, listed_bytes).await?;
        let mut puts = Puts::new(self.store.clone());
        let mut sent = Vec::new();
        let copied = async {
            while let Some((file, reader)) = batch.next().await? {
                let object = format!("{}{}", folder(self.stamp), file.path);
                let (sha256, size) = send_one(self.store, &mut puts, &object, reader, &bar).await?;
                sent.push(Entry {
                    file: MediaFile {
                        size,
                        sha256: Some(sha256),
                        ..file
                    },
                    object,
                });
                bar.set_message(format!(
                    "media: {} of {} files sent",
                    ui::count(sent.len() as u64),
                    ui::count(files)
                ));
            }
            anyhow::Ok(())
        }
        .await;
        let landed = puts.finish().await;
        bar.finish_and_clear();
        copied?;
        landed?;
        let vanished = batch.vanished.len() as u64;
        if vanished > 0 {
            self.printer.note(&format!(
                "   media: {vanished} files were deleted while the backup ran (left out): {}",
                batch
                    .vanished
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok((sent, vanished))
    }

    /// The store holds every object sent, with the size sent.
    async fn check(&self, sent: &[Entry]) -> anyhow::Result<()> {
        let stored: HashMap<String, u64> = self
            .store
            .walk(&folder(self.stamp))
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        for e in sent {
            match stored.get(&e.object) {
                Some(n) if *n == e.file.size => {}
                got => {
                    return Err(MediaError::Mismatch {
                        path: e.file.path.clone(),
                        message: match got {
                            Some(n) => format!("{n} bytes stored, {} sent", e.file.size),
                            None => "not in the store after it was sent".into(),
                        },
                    }
                    .into())
                }
            }
        }
        Ok(())
    }
}

/// Store one file's content under `key`: (SHA-256, bytes).
async fn send_one(
    store: &Store,
    puts: &mut Puts,
    key: &str,
    mut reader: Reader,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(String, u64)> {
    let mut head = Vec::new();
    (&mut reader)
        .take(SMALL as u64 + 1)
        .read_to_end(&mut head)
        .await?;
    bar.inc(head.len() as u64);
    if head.len() <= SMALL {
        let sha256 = hex(&Sha256::digest(&head));
        let size = head.len() as u64;
        puts.put(key.to_string(), head).await?;
        return Ok((sha256, size));
    }
    let mut upload = store.upload(key).await?;
    let streamed = async {
        let mut hashing = HashingWriter::new(&mut upload);
        hashing.write_all(&head).await?;
        drop(head);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hashing.write_all(&buf[..n]).await?;
            bar.inc(n as u64);
        }
        hashing.flush().await?;
        let (sha256, size, _) = hashing.finish();
        anyhow::Ok((sha256, size))
    }
    .await;
    match streamed {
        Ok(done) => {
            upload.commit().await?;
            Ok(done)
        }
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// Small files being put, in parallel within bounds.
struct Puts {
    store: Store,
    running: JoinSet<Result<u64, StoreError>>,
    bytes: u64,
}

impl Puts {
    fn new(store: Store) -> Self {
        Self {
            store,
            running: JoinSet::new(),
            bytes: 0,
        }
    }

    /// Start putting `bytes` under `key`, once there is room.
    async fn put(&mut self, key: String, bytes: Vec<u8>) -> anyhow::Result<()> {
        let n = bytes.len() as u64;
        while !self.running.is_empty()
            && (self.running.len() >= PARALLEL || self.bytes + n > IN_FLIGHT_BYTES)
        {
            self.join_one().await?;
        }
        self.bytes += n;
        let store = self.store.clone();
        self.running
            .spawn(async move { store.put_new(&key, bytes).await.map(|()| n) });
        Ok(())
    }

    async fn join_one(&mut self) -> anyhow::Result<()> {
        match self.running.join_next().await {
            None => Ok(()),
            Some(Ok(Ok(n))) => {
                self.bytes -= n;
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Err(e)) => Err(anyhow::anyhow!("a media upload stopped: {e}")),
        }
    }

    /// Wait for every put; the first failure, after all have landed (so that nothing
    /// arrives after a clean-up).
    async fn finish(mut self) -> anyhow::Result<()> {
        let mut first = Ok(());
        while !self.running.is_empty() {
            if let Err(e) = self.join_one().await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, mtime: i64, etag: Option<&str>) -> MediaFile {
        MediaFile {
            path: path.into(),
            size,
            mtime,
            sha256: None,
            etag: etag.map(String::from),
        }
    }

    fn manifest(entries: Vec<(MediaFile, &str)>) -> MediaManifest {
        MediaManifest {
            countable_version: "0".into(),
            created_at: String::new(),
            environment: "prod".into(),
            source: "volume media".into(),
            count: entries.len() as u64,
            bytes: 0,
            files: entries
                .into_iter()
                .map(|(f, o)| Entry {
                    file: MediaFile {
                        sha256: Some(format!("sha-of-{}", f.path)),
                        ..f
                    },
                    object: o.into(),
                })
                .collect(),
        }
    }

    #[test]
    fn unchanged_files_point_at_earlier_objects() {
        let before = manifest(vec![
            (file("a.jpg", 3, 10, None), "S1.media/a.jpg"),
            (file("b.jpg", 3, 10, None), "S2.media/b.jpg"),
            (file("gone.jpg", 3, 10, None), "S1.media/gone.jpg"),
        ]);
        let now = vec![
            file("a.jpg", 3, 10, None),
            file("b.jpg", 3, 11, None),
            file("c.jpg", 1, 10, None),
        ];
        let (kept, send) = plan(now, Some(&before));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].object, "S1.media/a.jpg", "not sent again");
        assert_eq!(kept[0].file.sha256.as_deref(), Some("sha-of-a.jpg"));
        let paths: Vec<&str> = send.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["b.jpg", "c.jpg"]);
        // The first backup sends everything.
        let (kept, send) = plan(vec![file("a.jpg", 3, 10, None)], None);
        assert!(kept.is_empty());
        assert_eq!(send.len(), 1);
    }

    #[test]
    fn in_a_bucket_the_etag_decides() {
        let before = manifest(vec![
            (file("big.bin", 9, 10, Some("e1-2")), "S1.media/big.bin"),
            (file("small.txt", 3, 10, Some("e2")), "S1.media/small.txt"),
        ]);
        let now = vec![
            // Copied over with the same bytes: a new time, the same multipart ETag.
            file("big.bin", 9, 99, Some("e1-2")),
            file("small.txt", 3, 10, Some("e3")),
        ];
        let (kept, send) = plan(now, Some(&before));
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[0].file.mtime, 99,
            "the entry says what the bucket says now"
        );
        assert_eq!(send[0].path, "small.txt");
    }
}
