//! Backup stores: where an environment's backups live (S3, or a local directory), how
//! to list them (newest first) and how to stream one out.
//!
//! A store only moves bytes; it never decodes or restores them.

pub mod bucket;
pub mod dir;
pub mod parts;
mod s3;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::archive::Reader;
use crate::error::Hint;
use crate::project::Environment;

pub use dir::DirStore;
pub use s3::{Headers, S3Store};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a backup location (an s3://bucket/prefix/ URL or a directory)")]
    BadLocation(String),
    #[error("environment `{0}` has no `backups:` location in countable.yml")]
    NoLocation(String),
    #[error("no backups in {0}")]
    NoBackups(String),
    #[error("no backups in {location}, only objects without a time in their name: {}{}", keys.iter().take(5).cloned().collect::<Vec<_>>().join(", "), if keys.len() > 5 { ", …" } else { "" })]
    OnlyUndated { location: String, keys: Vec<String> },
    #[error("{key} exists already in {location}; countable never writes over an object")]
    Exists { key: String, location: String },
    #[error("no backup `{key}` in {location}")]
    NoSuchKey { key: String, location: String },
    #[error("bucket `{0}` does not exist")]
    NoSuchBucket(String),
    #[error("S3 refused the credentials for {location}: {code}")]
    Credentials { location: String, code: String },
    #[error("no AWS credentials were found for {0}")]
    NoCredentials(String),
    #[error("cannot reach S3 at {location}: {message}")]
    Unreachable { location: String, message: String },
    #[error("S3 error on {location}: {message}")]
    S3 { location: String, message: String },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Hint for StoreError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            StoreError::BadLocation(_) => "set `backups:` to e.g. s3://countable/backups/<project>/ or backups/ in countable.yml".into(),
            StoreError::NoLocation(env) => format!("add `backups: s3://<bucket>/backups/<project>/` (or a directory) under environments.{env} in countable.yml"),
            StoreError::NoBackups(_) => "make one with `countable backup <env>`, or check the `backups:` location in countable.yml".into(),
            StoreError::OnlyUndated { keys, .. } => format!(
                "name one: `--backup {}`; countable picks the newest only among keys with a time, like 2026-11-30T021500Z.backup or prod-20261130-0215.sql.gz",
                keys.iter()
                    .find(|k| crate::retention::looks_like_dump(k))
                    .unwrap_or(&keys[0])
            ),
            StoreError::Exists { .. } => "run it again in a second (keys carry the time to the second), and check who else writes to this location".into(),
            StoreError::NoSuchKey { .. } => "list what there is with `countable backups <env>`".into(),
            StoreError::NoSuchBucket(_) => "check the bucket name in `backups:` (countable.yml) and the region/endpoint".into(),
            StoreError::Credentials { .. } | StoreError::NoCredentials(_) => "check your AWS credentials: `aws sts get-caller-identity` (or set aws_profile in countable.yml, or AWS_PROFILE / AWS_ACCESS_KEY_ID)".into(),
            StoreError::Unreachable { .. } => "check your network and the endpoint_url/region in countable.yml".into(),
            StoreError::S3 { .. } => "retry; if it persists, try the same with `aws s3 ls`".into(),
            StoreError::Io { path, .. } => format!("check that {} exists and is readable", path.display()),
        })
    }
}
crate::register_hint!(StoreError);

/// One stored backup.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Backup {
    /// The key (S3) or file name (directory), relative to the store's location.
    pub key: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub modified: i64,
}

impl Backup {
    /// When this backup was taken, from its key; `None`: not a backup (see `retention`).
    pub fn taken_at(&self) -> Option<time::OffsetDateTime> {
        crate::retention::backup_time(&self.key)
    }

    pub fn modified_rfc3339(&self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.modified)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

/// One object found by [`Store::walk`]: its key relative to the location, and the
/// ETag S3 gave it (quotes taken off; none in a directory).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub modified: i64,
    pub etag: Option<String>,
}

/// Side files that live beside backups and are not backups themselves: manifests,
/// drill records, a backup's media (`<stamp>.media.json` and everything under
/// `<stamp>.media/`), and folders.
pub fn is_side_file(key: &str) -> bool {
    key.ends_with(".manifest.json")
        || key.ends_with(".verified.json")
        || key.ends_with(".ledger.json")
        || key.ends_with(".acme.json")
        || key.ends_with(".media.json")
        || key.contains(".media/")
        || key.ends_with('/')
}

/// `s3://bucket/prefix` → (bucket, prefix), the prefix empty or ending in `/` (with or
/// without the trailing slash, `s3://b/p` and `s3://b/p/` name the same place); `None`
/// when it is not an S3 URL with a bucket.
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    let prefix = match prefix.trim_start_matches('/') {
        "" => String::new(),
        p if p.ends_with('/') => p.to_string(),
        p => format!("{p}/"),
    };
    Some((bucket.to_string(), prefix))
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Newest first, as `crate::retention` defines it: backups by the time in their key
/// (then by key); after them, objects that are not backups, by their stored time.
pub fn sort_newest_first(list: &mut [Backup]) {
    list.sort_by_cached_key(|b| {
        let taken = b.taken_at().map(|t| t.unix_timestamp_nanos());
        (
            std::cmp::Reverse(taken.is_some()),
            std::cmp::Reverse(taken),
            std::cmp::Reverse(b.modified),
            std::cmp::Reverse(b.key.clone()),
        )
    });
}

/// An opened backup: its bytes and their total size, when known.
pub struct Opened {
    pub reader: Reader,
    pub size: Option<u64>,
}

/// A configured store; a clone talks to the same place (for uploads in parallel).
#[derive(Clone)]
pub enum Store {
    Dir(DirStore),
    S3(S3Store),
}

impl Store {
    /// The store of environment `name`, as countable.yml describes it; relative
    /// directories are relative to the project root.
    pub async fn for_environment(
        name: &str,
        env: &Environment,
        root: &Path,
    ) -> Result<Self, StoreError> {
        let location = env
            .backups
            .as_deref()
            .ok_or_else(|| StoreError::NoLocation(name.to_string()))?;
        if location.starts_with("s3://") {
            let (bucket, prefix) = parse_s3_url(location)
                .ok_or_else(|| StoreError::BadLocation(location.to_string()))?;
            return Ok(Store::S3(S3Store::new(&bucket, &prefix, env).await));
        }
        if location.contains("://") {
            return Err(StoreError::BadLocation(location.to_string()));
        }
        let path = Path::new(location);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            root.join(path)
        };
        Ok(Store::Dir(DirStore::new(path)))
    }

    /// Free bytes where a new backup would be written: the directory's filesystem;
    /// `None` for S3 (no limit to check) or when the directory cannot be read.
    pub fn free_space(&self) -> Option<u64> {
        match self {
            Store::Dir(d) => d.free_space(),
            Store::S3(_) => None,
        }
    }

    pub fn location(&self) -> String {
        match self {
            Store::Dir(d) => d.location(),
            Store::S3(s) => s.location(),
        }
    }

    /// Every object but side files, newest first: the backups by the time in their
    /// key, then objects that are not backups (`Backup::taken_at` is `None`).
    pub async fn list(&self) -> Result<Vec<Backup>, StoreError> {
        let mut list: Vec<Backup> = self
            .entries()
            .await?
            .into_iter()
            .filter(|b| !is_side_file(&b.key))
            .collect();
        sort_newest_first(&mut list);
        Ok(list)
    }

    /// `key` (any object, backup or not), or the newest backup. An object that is not
    /// a backup is never picked as the newest: it has no time countable trusts.
    pub async fn pick(&self, key: Option<&str>) -> Result<Backup, StoreError> {
        let list = self.list().await?;
        match key {
            None => match list.iter().position(|b| b.taken_at().is_some()) {
                Some(i) => Ok(list.into_iter().nth(i).expect("an index from position")),
                None if list.is_empty() => Err(StoreError::NoBackups(self.location())),
                None => Err(StoreError::OnlyUndated {
                    location: self.location(),
                    keys: list.into_iter().map(|b| b.key).collect(),
                }),
            },
            Some(k) => {
                let k = self.relative(k);
                list.into_iter()
                    .find(|b| b.key == k)
                    .ok_or_else(|| StoreError::NoSuchKey {
                        key: k.to_string(),
                        location: self.location(),
                    })
            }
        }
    }

    /// Accept a key given in full (`backups/shop/x.tar.lrz`) or relative to the location.
    fn relative<'a>(&self, key: &'a str) -> &'a str {
        match self {
            Store::S3(s) => key.strip_prefix(s.prefix()).unwrap_or(key),
            Store::Dir(_) => key,
        }
    }

    pub async fn open(&self, backup: &Backup) -> Result<Opened, StoreError> {
        match self {
            Store::Dir(d) => d.open(&backup.key).await,
            Store::S3(s) => s.open(&backup.key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn locations() {
        let root = Path::new("/srv/shop");
        let env = |b: &str| Environment {
            backups: Some(b.into()),
            ..Default::default()
        };
        match Store::for_environment("prod", &env("backups/"), root)
            .await
            .unwrap()
        {
            Store::Dir(d) => assert_eq!(d.location(), "/srv/shop/backups/"),
            _ => panic!("dir expected"),
        }
        for loc in [
            "s3://countable/backups/shop/",
            "s3://countable/backups/shop",
        ] {
            match Store::for_environment("prod", &env(loc), root)
                .await
                .unwrap()
            {
                Store::S3(s) => assert_eq!(s.location(), "s3://countable/backups/shop/"),
                _ => panic!("s3 expected"),
            }
        }
        assert!(matches!(
            Store::for_environment("prod", &env("ftp://x/y"), root).await,
            Err(StoreError::BadLocation(_))
        ));
        assert!(matches!(
            Store::for_environment("prod", &Environment::default(), root).await,
            Err(StoreError::NoLocation(_))
        ));
    }

    #[test]
    fn newest_first_and_side_files() {
        let b = |k: &str, m| Backup {
            key: k.into(),
            size: 1,
            modified: m,
        };
        let mut v = vec![b("a", 1), b("c", 3), b("b", 3)];
        sort_newest_first(&mut v);
        assert_eq!(
            v.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(),
            ["c", "b", "a"]
        );
        // A backup's age is the time in its key, whatever the store says; objects
        // that are not backups come after every backup, however new.
        let mut v = vec![
            b("2026-11-29T020000Z.backup", 50),
            b("README.txt", 100),
            b("prod-20261130-0200.sql.gz", 10),
            b("2026-11-28T020000Z.backup", 100),
            b("old-dump.sql.gz", 90),
        ];
        sort_newest_first(&mut v);
        assert_eq!(
            v.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(),
            [
                "prod-20261130-0200.sql.gz",
                "2026-11-29T020000Z.backup",
                "2026-11-28T020000Z.backup",
                "README.txt",
                "old-dump.sql.gz"
            ]
        );
        assert!(is_side_file("x.backup.manifest.json"));
        assert!(!is_side_file("x.tar.lrz"));
        assert!(is_side_file("2026-11-30T021500Z.media.json"));
        assert!(is_side_file("2026-11-30T021500Z.media/photos/a.sql.gz"));
        assert!(is_side_file("2026-11-30T021500Z.media/"));
    }
}

/// A backup being written: bytes go in through `AsyncWrite`; `commit` makes it appear
/// under its key (never over an existing one), `abort` leaves nothing behind.
pub enum Upload {
    Dir(dir::DirUpload),
    S3(s3::S3Upload),
}

impl tokio::io::AsyncWrite for Upload {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Upload::Dir(u) => std::pin::Pin::new(&mut u.file).poll_write(cx, buf),
            Upload::S3(u) => std::pin::Pin::new(&mut u.pipe).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upload::Dir(u) => std::pin::Pin::new(&mut u.file).poll_flush(cx),
            Upload::S3(u) => std::pin::Pin::new(&mut u.pipe).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upload::Dir(u) => std::pin::Pin::new(&mut u.file).poll_shutdown(cx),
            Upload::S3(u) => std::pin::Pin::new(&mut u.pipe).poll_shutdown(cx),
        }
    }
}

impl Upload {
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Upload::Dir(u) => u.commit().await,
            Upload::S3(u) => u.finish(true).await,
        }
    }

    pub async fn abort(self) {
        match self {
            Upload::Dir(u) => u.abort().await,
            Upload::S3(u) => {
                let _ = u.finish(false).await;
            }
        }
    }
}

/// What is known of a backup beside its bytes.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SideFiles {
    pub manifest: bool,
    pub verified: bool,
}

impl Store {
    /// Does `key` exist?
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.size_of(key).await?.is_some())
    }

    /// The stored size of `key`, if it exists.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Store::Dir(d) => d.size_of(key).await,
            Store::S3(s) => s.size_of(key).await,
        }
    }

    /// Start writing `key`.
    pub async fn upload(&self, key: &str) -> Result<Upload, StoreError> {
        match self {
            Store::Dir(d) => Ok(Upload::Dir(d.upload(key).await?)),
            Store::S3(s) => Ok(Upload::S3(s.upload(key).await?)),
        }
    }

    /// Write a small side file (manifest, verification record), replacing it.
    pub async fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Store::Dir(d) => d.put_small(key, bytes).await,
            Store::S3(s) => s.put_small(key, bytes).await,
        }
    }

    /// Read a small side file, if it exists (at most 16 MiB).
    pub async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_up_to(key, 16 * 1024 * 1024).await
    }

    /// Read an object whole, if it exists (at most `cap` bytes of it).
    pub async fn get_up_to(&self, key: &str, cap: u64) -> Result<Option<Vec<u8>>, StoreError> {
        use tokio::io::AsyncReadExt;
        if self.size_of(key).await?.is_none() {
            return Ok(None);
        }
        let opened = match self {
            Store::Dir(d) => d.open(key).await?,
            Store::S3(s) => s.open(key).await?,
        };
        let mut buf = Vec::new();
        opened
            .reader
            .take(cap)
            .read_to_end(&mut buf)
            .await
            .map_err(|source| StoreError::Io {
                path: key.into(),
                source,
            })?;
        Ok(Some(buf))
    }

    /// Delete `key` (missing is fine).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Dir(d) => d.delete(key).await,
            Store::S3(s) => s.delete(key).await,
        }
    }

    /// Store `bytes` under `key` (in one write or request), never over an existing
    /// object.
    pub async fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Store::Dir(d) => {
                use tokio::io::AsyncWriteExt;
                let mut upload = d.upload(key).await?;
                if let Err(source) = upload.file.write_all(&bytes).await {
                    upload.abort().await;
                    return Err(StoreError::Io {
                        path: key.into(),
                        source,
                    });
                }
                upload.commit().await
            }
            Store::S3(s) => s.put_new(key, bytes).await,
        }
    }

    /// Every object whose key starts with `under` (a folder such as
    /// `2026-11-30T021500Z.media/`), at any depth, with keys relative to the location.
    pub async fn walk(&self, under: &str) -> Result<Vec<Object>, StoreError> {
        match self {
            Store::Dir(d) => d.walk(under).await,
            Store::S3(s) => s.walk(under).await,
        }
    }

    /// Delete every object under the folder `under` (one that is countable's own).
    pub async fn delete_tree(&self, under: &str) -> Result<(), StoreError> {
        match self {
            Store::Dir(d) => d.delete_tree(under).await,
            Store::S3(s) => {
                for o in s.walk(under).await? {
                    s.delete(&o.key).await?;
                }
                Ok(())
            }
        }
    }

    /// Every object at the location, side files included, and each folder as one
    /// entry whose key ends with `/` (one listing).
    pub async fn entries(&self) -> Result<Vec<Backup>, StoreError> {
        match self {
            Store::Dir(d) => d.entries().await,
            Store::S3(s) => s.entries().await,
        }
    }

    /// Which side files each backup has, from one listing of the location.
    pub async fn side_files(&self, backups: &[Backup]) -> Result<Vec<SideFiles>, StoreError> {
        let keys: std::collections::HashSet<String> =
            self.entries().await?.into_iter().map(|b| b.key).collect();
        Ok(backups
            .iter()
            .map(|b| SideFiles {
                manifest: keys.contains(&format!("{}.manifest.json", b.key)),
                verified: keys.contains(&format!("{}.verified.json", b.key)),
            })
            .collect())
    }
}
