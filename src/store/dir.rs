//! A local directory as a backup store: the embedded default, no cloud account needed.

use std::path::PathBuf;

use super::{unix, Backup, Opened, StoreError};

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
    pub fn free_space(&self) -> Option<u64> {
        let dir = self.path.ancestors().find(|p| p.exists())?;
        let st = rustix::fs::statvfs(dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Every object at the location, side files included.
    pub async fn entries(&self) -> Result<Vec<Backup>, StoreError> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.path)
            .await
            .map_err(|e| self.io(e))?;
        while let Some(entry) = dir.next_entry().await.map_err(|e| self.io(e))? {
            let meta = entry.metadata().await.map_err(|e| self.io(e))?;
            let key = entry.file_name().to_string_lossy().into_owned();
            if !meta.is_file() || key.starts_with('.') {
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

    /// Where `key` goes and the hidden temporary file beside it (`a/b` keys live in
    /// subdirectories, made on the way; the listing of backups never sees them).
    async fn place(&self, key: &str, what: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        let dest = self.path.join(key);
        let dir = dest.parent().unwrap_or(&self.path).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| self.io(e))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{what}-{}", std::process::id()));
        Ok((dest, tmp))
    }

    pub async fn upload(&self, key: &str) -> Result<DirUpload, StoreError> {
        let (dest, tmp) = self.place(key, "partial").await?;
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
        let (dest, tmp) = self.place(key, "tmp").await?;
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| self.io(e))?;
        tokio::fs::rename(&tmp, dest).await.map_err(|e| self.io(e))
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path.join(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(e)),
            _ => Ok(()),
        }
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
    async fn nested_keys_live_in_subdirectories_the_listing_skips() {
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
        assert!(store.entries().await.unwrap().is_empty());
    }
}
