//! What a pair keeps in the target's backup store, under `sync/<pair>/` (a
//! subdirectory or key prefix the backup listing never shows):
//!
//! - `state.json`, per bucket pair, what the last sync copied: source key → size,
//!   source ETag, destination ETag. The next sync skips an object whose source and
//!   destination still carry those ETags, multipart ones included (whose ETags are no
//!   MD5s), and notices a destination object someone else changed.
//!   It also keeps where both databases stood when the last sync was done
//!   ([`DatabaseMark`]).
//! - `undo.json`, the last sync's way back: the target's backup taken first, and per
//!   bucket pair the objects it created, replaced and deleted, with where the replaced
//!   and deleted ones were kept: `undo/<time>/<n>` beside it, copied there before the
//!   sync touched them.
//!
//! These records only record; `buckets`, `run` and `undo` decide.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::Store;

/// One object a sync copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copied {
    pub size: u64,
    pub source_etag: String,
    pub dest_etag: String,
}

/// Where both databases stood when the last sync's database part was done: the next
/// sync leaves the database alone when neither was written since and the fixups are
/// the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseMark {
    /// The source before its dump; none with `--from-backup`, which has `backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::restore::Position>,
    /// With `--from-backup`: the key of the backup restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The target once the sync was done.
    pub target: crate::restore::Position,
    /// `fixups::Plan::fingerprint` of the fixups that ran.
    pub fixups: String,
    /// When that sync finished.
    pub at: String,
}

/// `state.json`: bucket pair id (`Buckets::id`) → key → what was copied; and where the
/// databases stood after the last sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub buckets: BTreeMap<String, BTreeMap<String, Copied>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseMark>,
}

/// An object the sync created (undo deletes it, if it is still what the sync wrote).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub key: String,
    pub etag: String,
}

/// An object the sync replaced or deleted, and where its earlier bytes are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    pub key: String,
    /// The key of the kept copy in the target's store.
    pub kept: String,
    pub size: u64,
    pub etag_before: String,
    /// What the sync wrote over it (none for a deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag_after: Option<String>,
    /// Its content type and the like, to put back with the bytes.
    #[serde(default)]
    pub headers: crate::store::Headers,
}

/// One bucket pair's way back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketUndo {
    pub description: String,
    /// The destination, `s3://bucket/prefix/`.
    pub to: String,
    /// The profile that writes it (none: the standard chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default)]
    pub created: Vec<Created>,
    #[serde(default)]
    pub replaced: Vec<Kept>,
    #[serde(default)]
    pub deleted: Vec<Kept>,
}

/// `undo.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Undo {
    pub pair: String,
    pub from: String,
    pub to: String,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The target's backup taken before the sync wrote anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_key: Option<String>,
    /// Did the sync swap the target's database?
    #[serde(default)]
    pub database_replaced: bool,
    #[serde(default)]
    pub buckets: Vec<BucketUndo>,
    /// Set once `undo-sync` has put it all back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_at: Option<String>,
}

impl Undo {
    /// Every kept copy's key.
    pub fn kept_keys(&self) -> Vec<String> {
        self.buckets
            .iter()
            .flat_map(|b| b.replaced.iter().chain(&b.deleted))
            .map(|k| k.kept.clone())
            .collect()
    }
}

pub fn state_key(pair: &str) -> String {
    format!("{}state.json", super::store_dir(pair))
}

pub fn undo_key(pair: &str) -> String {
    format!("{}undo.json", super::store_dir(pair))
}

/// Where the `n`th object a sync started at `stamp` keeps is stored.
pub fn kept_key(pair: &str, stamp: &str, n: usize) -> String {
    format!("{}undo/{stamp}/{n}", super::store_dir(pair))
}

/// Read a record (the default when there is none).
pub async fn load<T: for<'de> Deserialize<'de> + Default>(
    store: &Store,
    key: &str,
) -> anyhow::Result<T> {
    match store.get_small(key).await? {
        None => Ok(T::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}{key} is not a sync record countable can read: {e}",
                store.location()
            )
        }),
    }
}

/// Write a record (replacing it).
pub async fn save<T: Serialize>(store: &Store, key: &str, value: &T) -> anyhow::Result<()> {
    store
        .put_small(key, serde_json::to_vec_pretty(value)?)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_round_trips() {
        assert_eq!(
            state_key("prod-to-staging"),
            "sync/prod-to-staging/state.json"
        );
        assert_eq!(
            kept_key("p", "2026-12-01T020000Z", 3),
            "sync/p/undo/2026-12-01T020000Z/3"
        );
        let mut u = Undo {
            pair: "p".into(),
            ..Default::default()
        };
        u.buckets.push(BucketUndo {
            replaced: vec![Kept {
                key: "a.jpg".into(),
                kept: "sync/p/undo/x/0".into(),
                size: 3,
                etag_before: "e1".into(),
                etag_after: Some("e2".into()),
                headers: Default::default(),
            }],
            ..Default::default()
        });
        assert_eq!(u.kept_keys(), ["sync/p/undo/x/0"]);
        let text = serde_json::to_string(&u).unwrap();
        assert_eq!(serde_json::from_str::<Undo>(&text).unwrap(), u);
        assert_eq!(
            serde_json::from_str::<State>("{\"buckets\":{}}").unwrap(),
            State::default()
        );
    }
}
