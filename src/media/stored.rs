//! A backup's media as a source to read (`pull-media --from-backup`, and `up` filling
//! an empty volume): the files of a media manifest (`<stamp>.media.json`), each read
//! from the store object the manifest names for it. Which backup: the one a key names
//! (any key of its stamp), or the newest that has media.
//!
//! Nothing here writes to the store.

use std::collections::HashMap;

use super::file::MediaFile;
use super::manifest::{manifest_key, manifest_stamp, stamp_of, MediaManifest};
use super::source::{Listing, Reader};
use crate::store::{Backup, Store, StoreError};

pub struct StoredMedia {
    store: Store,
    /// `<stamp>.media.json`
    pub manifest: String,
    files: Vec<MediaFile>,
    /// path → the object holding its bytes.
    objects: HashMap<String, String>,
}

impl StoredMedia {
    /// The media of the backup `key` names (`2026-11-30T021500Z.backup`, or its stamp),
    /// or of the newest backup that has media; `None` when there is none.
    pub async fn find(store: &Store, key: Option<&str>) -> anyhow::Result<Option<Self>> {
        let stamps: Vec<String> = match key {
            Some(k) => vec![stamp_of(k.rsplit('/').next().unwrap_or(k)).to_string()],
            None => {
                let mut s: Vec<String> = store
                    .entries()
                    .await?
                    .iter()
                    .filter_map(|b| manifest_stamp(&b.key).map(String::from))
                    .collect();
                s.sort_unstable_by(|a, b| b.cmp(a));
                s
            }
        };
        for stamp in stamps {
            let key = manifest_key(&stamp);
            if let Some(m) = MediaManifest::load(store, &key).await? {
                return Ok(Some(Self::new(store.clone(), key, m)));
            }
        }
        Ok(None)
    }

    fn new(store: Store, manifest: String, m: MediaManifest) -> Self {
        let objects = m
            .files
            .iter()
            .map(|e| (e.file.path.clone(), e.object.clone()))
            .collect();
        let mut files: Vec<MediaFile> = m.files.into_iter().map(|e| e.file).collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            store,
            manifest,
            files,
            objects,
        }
    }

    /// The manifest's files, sorted by path.
    pub fn list(&self) -> Listing {
        Listing {
            files: self.files.clone(),
            skipped: Vec::new(),
        }
    }

    /// One file's content, from its object; `None` when the object is gone.
    pub async fn open_file(&self, path: &str) -> anyhow::Result<Option<Reader>> {
        let Some(object) = self.objects.get(path) else {
            return Ok(None);
        };
        let backup = Backup {
            key: object.clone(),
            size: 0,
            modified: 0,
        };
        match self.store.open(&backup).await {
            Ok(opened) => Ok(Some(opened.reader)),
            Err(StoreError::NoSuchKey { .. }) => Ok(None),
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}
