//! A local directory as a backup store: the embedded default, no cloud account needed.

use std::path::PathBuf;

use super::{is_side_file, unix, Backup, Opened, StoreError};

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

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    pub async fn list(&self) -> Result<Vec<Backup>, StoreError> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.path)
            .await
            .map_err(|e| self.io(e))?;
        while let Some(entry) = dir.next_entry().await.map_err(|e| self.io(e))? {
            let meta = entry.metadata().await.map_err(|e| self.io(e))?;
            let key = entry.file_name().to_string_lossy().into_owned();
            if !meta.is_file() || is_side_file(&key) || key.starts_with('.') {
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
