//! A backup's media manifest, `<stamp>.media.json` beside the database dump of the same
//! stamp (`2026-11-30T021500Z`): what the media held, with each file's size, mtime,
//! SHA-256 (and ETag, from a bucket), and the store object holding its bytes, which is
//! `<stamp>.media/<path>` or, for a file unchanged since an earlier backup, that
//! backup's object. Keys, loading, and the newest earlier manifest.
//!
//! Nothing here writes objects.

use serde::{Deserialize, Serialize};

use super::file::MediaFile;
use crate::store::{Backup, Store};

/// A media manifest is read whole; this bounds it (about 2.5 million files).
const MAX_MANIFEST: u64 = 512 * 1024 * 1024;

/// `<stamp>.media.json`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MediaManifest {
    pub countable_version: String,
    pub created_at: String,
    pub environment: String,
    /// `volume media`, `s3://bucket/prefix/`.
    pub source: String,
    pub count: u64,
    pub bytes: u64,
    pub files: Vec<Entry>,
}

/// One file of a media manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    #[serde(flatten)]
    pub file: MediaFile,
    /// The store object with its bytes, relative to the store's location.
    pub object: String,
}

/// The stamp of a backup key: its part before the first `.`
/// (`2026-11-30T021500Z.backup.zst` → `2026-11-30T021500Z`).
pub fn stamp_of(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

/// `<stamp>.media.json`
pub fn manifest_key(stamp: &str) -> String {
    format!("{stamp}.media.json")
}

/// `<stamp>.media/`: the folder of the files a backup sent.
pub fn folder(stamp: &str) -> String {
    format!("{stamp}.media/")
}

/// The stamp of a media manifest's key, when it is one of countable's.
pub fn manifest_stamp(key: &str) -> Option<&str> {
    key.strip_suffix(".media.json")
        .filter(|s| crate::backup::parse_stamp(s).is_some())
}

/// The stamp of a media folder's key (`<stamp>.media/`), when it is one of countable's.
pub fn folder_stamp(key: &str) -> Option<&str> {
    key.strip_suffix(".media/")
        .filter(|s| crate::backup::parse_stamp(s).is_some())
}

impl MediaManifest {
    /// The manifest under `key`, if there is one.
    pub async fn load(store: &Store, key: &str) -> anyhow::Result<Option<Self>> {
        let Some(bytes) = store.get_up_to(key, MAX_MANIFEST).await? else {
            return Ok(None);
        };
        let manifest =
            serde_json::from_slice(&bytes).map_err(|e| super::MediaError::BadManifest {
                key: key.to_string(),
                message: e.to_string(),
            })?;
        Ok(Some(manifest))
    }

    /// The newest manifest of `source` among `entries` (a listing of the store) that is
    /// older than `stamp`: what an incremental backup compares with.
    pub async fn previous(
        store: &Store,
        entries: &[Backup],
        stamp: &str,
        source: &str,
    ) -> anyhow::Result<Option<Self>> {
        let mut stamps: Vec<&str> = entries
            .iter()
            .filter_map(|b| manifest_stamp(&b.key))
            .filter(|s| *s < stamp)
            .collect();
        stamps.sort_unstable_by(|a, b| b.cmp(a));
        for s in stamps {
            if let Some(m) = Self::load(store, &manifest_key(s)).await? {
                if m.source == source {
                    return Ok(Some(m));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_stamp() {
        let stamp = stamp_of("2026-11-30T021500Z.backup.zst");
        assert_eq!(stamp, "2026-11-30T021500Z");
        assert_eq!(manifest_key(stamp), "2026-11-30T021500Z.media.json");
        assert_eq!(folder(stamp), "2026-11-30T021500Z.media/");
        assert_eq!(manifest_stamp("2026-11-30T021500Z.media.json"), Some(stamp));
        assert_eq!(folder_stamp("2026-11-30T021500Z.media/"), Some(stamp));
        // Not countable's: never taken for a backup's media.
        assert_eq!(manifest_stamp("photos.media.json"), None);
        assert_eq!(folder_stamp("prod-20261130.media/"), None);
    }

    #[test]
    fn an_entry_is_flat_in_json() {
        let e = Entry {
            file: MediaFile {
                path: "a b.jpg".into(),
                size: 3,
                mtime: 7,
                sha256: Some("ab".into()),
                etag: None,
            },
            object: "2026-11-30T021500Z.media/a b.jpg".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"path": "a b.jpg", "size": 3, "mtime": 7, "sha256": "ab", "object": "2026-11-30T021500Z.media/a b.jpg"})
        );
        assert_eq!(serde_json::from_value::<Entry>(v).unwrap(), e);
    }
}
