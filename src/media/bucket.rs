//! Media in an S3 bucket prefix (`media: s3://bucket/prefix/`), read with the
//! environment's S3 settings through the store's S3 client: ListObjectsV2, paginated,
//! each object's ETag kept verbatim (quotes aside); GetObject, streamed.
//!
//! Nothing here writes to the bucket.

use super::file::{valid_path, MediaFile};
use super::source::{Listing, Reader};
use crate::project::Environment;
use crate::store::{S3Store, StoreError};

pub struct BucketMedia {
    store: S3Store,
}

impl BucketMedia {
    pub async fn open(bucket: &str, prefix: &str, env: &Environment) -> Self {
        Self {
            store: S3Store::new(bucket, prefix, env).await,
        }
    }

    /// Every object under the prefix; "folder" markers (keys ending in `/`) are not
    /// files, and keys that are no valid media path (`a//b`, `../x`) are set aside.
    pub async fn list(&self) -> anyhow::Result<Listing> {
        let mut listing = Listing::default();
        for o in self.store.walk("").await? {
            if o.key.ends_with('/') {
                continue;
            }
            if !valid_path(&o.key) {
                listing.skipped.push(o.key);
                continue;
            }
            listing.files.push(MediaFile {
                path: o.key,
                size: o.size,
                mtime: o.modified,
                sha256: None,
                etag: o.etag,
            });
        }
        listing.files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(listing)
    }

    /// One object's content; `None` when it is gone.
    pub async fn open_file(&self, path: &str) -> anyhow::Result<Option<Reader>> {
        match self.store.open(path).await {
            Ok(opened) => Ok(Some(opened.reader)),
            Err(StoreError::NoSuchKey { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
