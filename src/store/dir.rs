//! A local directory as a backup store: the embedded default, no cloud account needed.
//!
//! Keys may have `/` in them (a backup's media, `<stamp>.media/<path>`): they are paths
//! below the directory, made as needed; temporary files live beside their final name.

use std::path::{Path, PathBuf};

use super::{unix, Backup, Object, Opened, StoreError};

/// Whether a file name is one of our temporary files (`.<name>.partial-<pid>`,
/// `.<name>.tmp-<pid>`): never listed, never an object.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".partial-") || name.contains(".tmp-"))
}

/// `dest`'s temporary sibling: `.<file name>.<kind>-<pid>` in the same directory, so
/// that it is linked or renamed into place on the same filesystem.
pub(crate) fn sibling(dest: &Path, kind: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{kind}-{}", std::process::id()))
}

/// Free bytes (for an unprivileged user) on the filesystem that holds `path`.
pub fn free_bytes_at(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[derive(Clone)]
pub struct DirStore {
    path: PathBuf,
}

impl DirStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn location(&self) -> String {
        let s = self.path.display().to_string();
        if s.ends_with('/') {
            s
        } else {
            format!("{s}/")
        }
    }

    /// Free bytes for an unprivileged writer on the directory's filesystem (its nearest
    /// existing ancestor when it does not exist yet).
    /// Does the directory exist yet (the first backup makes it)?
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    pub fn free_space(&self) -> Option<u64> {
        let dir = self.path.ancestors().find(|p| p.exists())?;
        free_bytes_at(dir).ok()
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Every object at the location, side files included, and each directory in it
    /// as one entry whose key ends with `/` (a backup's `<stamp>.media/`).
    pub async fn entries(&self) -> Result<Vec<Backup>, StoreError> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.path)
            .await
            .map_err(|e| self.io(e))?;
        while let Some(entry) = dir.next_entry().await.map_err(|e| self.io(e))? {
            let meta = entry.metadata().await.map_err(|e| self.io(e))?;
            let key = entry.file_name().to_string_lossy().into_owned();
            if key.starts_with('.') {
                continue;
            }
            if meta.is_dir() {
                out.push(Backup {
                    key: format!("{key}/"),
                    size: 0,
                    modified: 0,
                });
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            out.push(Backup {
                key,
                size: meta.len(),
                modified: meta.modified().map(unix).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Every file below the directory `under` (a key ending in `/`), at any depth,
    /// temporary files left out; keys relative to the store. A missing directory
    /// holds nothing.
    pub async fn walk(&self, under: &str) -> Result<Vec<Object>, StoreError> {
        let mut out = Vec::new();
        let mut todo = vec![under.trim_end_matches('/').to_string()];
        while let Some(rel) = todo.pop() {
            let path = self.path.join(&rel);
            let mut dir = match tokio::fs::read_dir(&path).await {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(StoreError::Io { path, source }),
            };
            while let Some(entry) = dir.next_entry().await.map_err(|e| self.io(e))? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = format!("{rel}/{name}");
                let meta = entry.metadata().await.map_err(|e| self.io(e))?;
                if meta.is_dir() {
                    todo.push(key);
                } else if meta.is_file() && !is_temporary(&name) {
                    out.push(Object {
                        key,
                        size: meta.len(),
                        modified: meta.modified().map(unix).unwrap_or(0),
                        etag: None,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Remove the directory `under` (a key ending in `/`) and everything in it.
    pub async fn delete_tree(&self, under: &str) -> Result<(), StoreError> {
        let path = self.path.join(under.trim_end_matches('/'));
        match tokio::fs::remove_dir_all(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Make the directories `dest` goes in.
    async fn parents(&self, dest: &Path) -> Result<(), StoreError> {
        let dir = dest.parent().unwrap_or(&self.path);
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })
    }

    pub async fn open(&self, key: &str) -> Result<Opened, StoreError> {
        let path = self.path.join(key);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        let size = file.metadata().await.ok().map(|m| m.len());
        Ok(Opened {
            reader: Box::pin(file),
            size,
        })
    }
}

/// A file being written beside its final name, linked into place on commit.
pub struct DirUpload {
    pub(super) file: tokio::fs::File,
    tmp: PathBuf,
    dest: PathBuf,
    key: String,
    location: String,
}

impl DirUpload {
    pub async fn commit(mut self) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::Io { path, source }
        };
        self.file.flush().await.map_err(io(&self.tmp))?;
        self.file.sync_all().await.map_err(io(&self.tmp))?;
        // A hard link fails when the name exists: a backup is never overwritten.
        let linked = match tokio::fs::hard_link(&self.tmp, &self.dest).await {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(StoreError::Exists {
                key: self.key.clone(),
                location: self.location.clone(),
            }),
            other => other.map_err(io(&self.dest)),
        };
        let _ = tokio::fs::remove_file(&self.tmp).await;
        linked
    }

    pub async fn abort(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

impl DirStore {
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match tokio::fs::metadata(self.path.join(key)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    pub async fn upload(&self, key: &str) -> Result<DirUpload, StoreError> {
        let dest = self.path.join(key);
        self.parents(&dest).await?;
        let tmp = sibling(&dest, "partial");
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| self.io(e))?;
        Ok(DirUpload {
            file,
            tmp,
            dest,
            key: key.to_string(),
            location: self.location(),
        })
    }

    pub async fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let dest = self.path.join(key);
        self.parents(&dest).await?;
        let tmp = sibling(&dest, "tmp");
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| self.io(e))?;
        tokio::fs::rename(&tmp, dest).await.map_err(|e| self.io(e))
    }

    /// Delete `key`; directories it leaves empty below the store go too.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path.join(key);
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(self.io(e)),
            _ => {}
        }
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(&self.path) && *d != self.path) {
            // Fails (and stops) at the first directory that still holds something.
            if tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_commit_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path().to_path_buf());
        let mut upload = store.upload("x.backup").await.unwrap();
        upload.file.write_all(b"ours").await.unwrap();
        std::fs::write(dir.path().join("x.backup"), b"theirs").unwrap();
        let err = upload.commit().await.unwrap_err();
        assert!(matches!(err, StoreError::Exists { .. }), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("x.backup")).unwrap(),
            b"theirs"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no partial file is left");
    }

    #[tokio::test]
    async fn nested_keys_are_written_walked_and_deleted_with_their_directories() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path().to_path_buf());
        let mut upload = store.upload("s.media/a b/c.jpg").await.unwrap();
        upload.file.write_all(b"jpeg").await.unwrap();
        upload.commit().await.unwrap();
        store
            .put_small("s.media/d.txt", b"d".to_vec())
            .await
            .unwrap();
        store.put_small("s.backup", b"x".to_vec()).await.unwrap();
        // A partial file of another writer is never an object.
        std::fs::write(dir.path().join("s.media/a b/.e.partial-1"), b"").unwrap();
        let mut walked: Vec<(String, u64)> = store
            .walk("s.media/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        walked.sort();
        assert_eq!(
            walked,
            [("s.media/a b/c.jpg".into(), 4), ("s.media/d.txt".into(), 1)]
        );
        let mut top: Vec<String> = store
            .entries()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.key)
            .collect();
        top.sort();
        assert_eq!(top, ["s.backup", "s.media/"]);
        std::fs::remove_file(dir.path().join("s.media/a b/.e.partial-1")).unwrap();
        store.delete("s.media/a b/c.jpg").await.unwrap();
        assert!(!dir.path().join("s.media/a b").exists(), "emptied: removed");
        assert!(dir.path().join("s.media/d.txt").exists());
        store.delete("s.media/d.txt").await.unwrap();
        assert!(!dir.path().join("s.media").exists());
        assert!(dir.path().exists(), "never the store itself");
    }

    #[tokio::test]
    async fn nested_keys_live_in_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path().to_path_buf());
        store
            .put_small("sync/pair/state.json", b"{}".to_vec())
            .await
            .unwrap();
        let mut upload = store.upload("sync/pair/undo/1").await.unwrap();
        upload.file.write_all(b"kept").await.unwrap();
        upload.commit().await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("sync/pair/undo/1")).unwrap(),
            b"kept"
        );
        assert_eq!(
            store.size_of("sync/pair/state.json").await.unwrap(),
            Some(2)
        );
        // The folder is one entry of the listing; `Store::list` leaves it out.
        let keys: Vec<String> = store
            .entries()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.key)
            .collect();
        assert_eq!(keys, ["sync/"]);
    }
}
