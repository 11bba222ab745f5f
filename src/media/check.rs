//! The media part of `verify-backup`: every file of a backup's media manifest is in the
//! store, with the size and SHA-256 the manifest records (read back, streamed, a few
//! objects at a time).
//!
//! It only reads; what it finds goes into the drill's record.

use std::collections::HashMap;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::manifest::{manifest_key, stamp_of, Entry, MediaManifest};
use crate::digest::HashingReader;
use crate::store::{Backup, Store};
use crate::ui::{self, Printer};

/// Objects read back at once.
const PARALLEL: usize = 4;
/// Damaged files named one by one in a drill's problems; the rest are counted.
const NAMED: usize = 20;

/// What the check of a backup's media found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MediaCheck {
    /// `<stamp>.media.json`
    pub manifest: String,
    pub files: u64,
    pub bytes: u64,
    /// Files missing, or with another size or SHA-256.
    pub damaged: u64,
}

impl MediaCheck {
    /// `2,000 files, 500.0 MiB, every size and SHA-256 matches`
    pub fn describe(&self) -> String {
        let verdict = match self.damaged {
            0 => "every size and SHA-256 matches".to_string(),
            n => format!("{} damaged", ui::count(n)),
        };
        format!(
            "{}, {}, {verdict}",
            ui::counted(self.files, "file"),
            ui::human_bytes(self.bytes)
        )
    }
}

/// Check the media of `backup` (the manifest of its stamp). `None` when it has no media
/// manifest; else what was found and one problem line a damaged file (the first
/// [`NAMED`] by name).
pub async fn check(
    store: &Store,
    backup: &Backup,
    printer: &Printer,
) -> anyhow::Result<Option<(MediaCheck, Vec<String>)>> {
    let key = manifest_key(stamp_of(&backup.key));
    let Some(manifest) = MediaManifest::load(store, &key).await? else {
        return Ok(None);
    };
    let stored = stored_sizes(store, &manifest).await?;
    let bar = printer.bytes_bar(
        Some(manifest.bytes.max(1)),
        &format!(
            "media: reading back {} files ({})",
            ui::count(manifest.count),
            ui::human_bytes(manifest.bytes)
        ),
    );
    let results: Vec<anyhow::Result<Option<String>>> = futures_util::stream::iter(&manifest.files)
        .map(|e| {
            let bar = bar.clone();
            let size = stored.get(&e.object).copied();
            async move {
                let r = check_one(store, e, size).await;
                bar.inc(e.file.size);
                r
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut problems = Vec::new();
    for r in results {
        if let Some(p) = r? {
            problems.push(p);
        }
    }
    problems.sort();
    let damaged = problems.len() as u64;
    if problems.len() > NAMED {
        let more = problems.len() - NAMED;
        problems.truncate(NAMED);
        problems.push(format!(
            "media: {} more damaged files",
            ui::count(more as u64)
        ));
    }
    Ok(Some((
        MediaCheck {
            manifest: key,
            files: manifest.count,
            bytes: manifest.bytes,
            damaged,
        },
        problems,
    )))
}

/// The stored size of every object in the folders `manifest` points into.
async fn stored_sizes(
    store: &Store,
    manifest: &MediaManifest,
) -> anyhow::Result<HashMap<String, u64>> {
    let mut folders: Vec<&str> = manifest
        .files
        .iter()
        .filter_map(|e| e.object.split_once('/').map(|(f, _)| f))
        .collect();
    folders.sort_unstable();
    folders.dedup();
    let mut sizes = HashMap::new();
    for f in folders {
        for o in store.walk(&format!("{f}/")).await? {
            sizes.insert(o.key, o.size);
        }
    }
    Ok(sizes)
}

/// A problem with one file (`stored`: the object's size in the store, if it is there).
async fn check_one(
    store: &Store,
    e: &Entry,
    stored: Option<u64>,
) -> anyhow::Result<Option<String>> {
    let path = &e.file.path;
    let Some(size) = stored else {
        return Ok(Some(format!(
            "media: {path}: missing ({} is not in the store)",
            e.object
        )));
    };
    if size != e.file.size {
        return Ok(Some(format!(
            "media: {path}: {size} bytes stored, {} backed up ({})",
            e.file.size, e.object
        )));
    }
    let opened = store
        .open(&Backup {
            key: e.object.clone(),
            size,
            modified: 0,
        })
        .await?;
    let (mut reader, digest) = HashingReader::new(opened.reader);
    let mut buf = vec![0u8; 64 * 1024];
    while reader.read(&mut buf).await? > 0 {}
    let (sha256, read) = digest.snapshot();
    let want = e.file.sha256.as_deref().unwrap_or_default();
    if read != e.file.size || sha256 != want {
        return Ok(Some(format!(
            "media: {path}: SHA-256 {sha256} stored ({read} bytes), {want} backed up ({})",
            e.object
        )));
    }
    Ok(None)
}
