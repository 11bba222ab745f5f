//! The media side of `backups prune`: a pruned backup's media manifest goes with it,
//! then every media object that no remaining media manifest references, in the folders
//! (`<stamp>.media/`) of stamps that have no backup left. An object of a pruned stamp
//! that a kept manifest still points at stays; a folder whose stamp still has a backup
//! (kept, or being written right now) is never touched, nor is anything whose name is
//! not countable's own (`<countable stamp>.media…`).

use std::collections::HashSet;

use super::manifest::{folder_stamp, manifest_key, manifest_stamp, stamp_of, MediaManifest};
use crate::store::{Backup, Object, Store};

/// What a prune deletes of media.
#[derive(Debug, Default)]
pub struct MediaPrune {
    /// Media manifests of the pruned backups.
    pub manifests: Vec<String>,
    /// Objects no remaining manifest references.
    pub objects: Vec<Object>,
    /// Objects of pruned stamps that a remaining manifest still references.
    pub still_referenced: u64,
}

impl MediaPrune {
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// Whether there is anything of media to speak of.
    pub fn touches_anything(&self) -> bool {
        !self.manifests.is_empty() || !self.objects.is_empty() || self.still_referenced > 0
    }
}

/// Plan the media part of a prune of `store`, whose listing is `entries`, once the
/// backups `dropped` are deleted and `remaining` (every other listed object) stay.
pub async fn plan(
    store: &Store,
    entries: &[Backup],
    remaining: &[String],
    dropped: &[String],
) -> anyhow::Result<MediaPrune> {
    let alive: HashSet<&str> = remaining.iter().map(|k| stamp_of(k)).collect();
    let listed: HashSet<&str> = entries.iter().map(|b| b.key.as_str()).collect();
    let manifests: Vec<String> = dropped
        .iter()
        .map(|k| stamp_of(k))
        .filter(|s| !alive.contains(s))
        .map(manifest_key)
        .filter(|k| listed.contains(k.as_str()))
        .collect();
    let mut referenced = HashSet::new();
    for b in entries {
        if manifest_stamp(&b.key).is_none() || manifests.contains(&b.key) {
            continue;
        }
        if let Some(m) = MediaManifest::load(store, &b.key).await? {
            referenced.extend(m.files.into_iter().map(|e| e.object));
        }
    }
    let mut out = MediaPrune {
        manifests,
        ..Default::default()
    };
    for b in entries {
        let Some(stamp) = folder_stamp(&b.key) else {
            continue;
        };
        if alive.contains(stamp) {
            continue;
        }
        let (gone, kept) = unreferenced(store.walk(&b.key).await?, &referenced);
        out.objects.extend(gone);
        out.still_referenced += kept;
    }
    Ok(out)
}

/// The objects of `objects` that `referenced` does not name, and how many it does.
pub fn unreferenced(objects: Vec<Object>, referenced: &HashSet<String>) -> (Vec<Object>, u64) {
    let (kept, gone): (Vec<Object>, Vec<Object>) = objects
        .into_iter()
        .partition(|o| referenced.contains(&o.key));
    (gone, kept.len() as u64)
}

/// Delete what `plan` found: the manifests first, so that a prune cut short leaves
/// objects no manifest references (the next prune takes them), never a manifest whose
/// objects are gone.
pub async fn apply(store: &Store, plan: &MediaPrune) -> anyhow::Result<()> {
    for k in &plan.manifests {
        store.delete(k).await?;
    }
    for o in &plan.objects {
        store.delete(&o.key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str) -> Object {
        Object {
            key: key.into(),
            size: 1,
            modified: 0,
            etag: None,
        }
    }

    #[test]
    fn referenced_objects_stay() {
        let referenced: HashSet<String> = ["S1.media/a.jpg".to_string()].into();
        let (gone, kept) = unreferenced(
            vec![object("S1.media/a.jpg"), object("S1.media/b.jpg")],
            &referenced,
        );
        assert_eq!(kept, 1);
        assert_eq!(gone, [object("S1.media/b.jpg")]);
    }
}
