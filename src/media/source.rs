//! An environment's media as something to read: [`Media`] says where it is (resolved
//! against its engine and compose files), [`MediaSource`] lists it and opens its files
//! as streams, whatever it is (a volume, a bucket, a backup's media, a volume that
//! does not exist yet),
//! and [`Batch`] reads many files the cheapest way. `backup` and `pull-media` read
//! media only through these.
//!
//! Nothing here writes to the media.

use std::collections::{BTreeMap, VecDeque};

use super::bucket::BucketMedia;
use super::file::MediaFile;
use super::location::MediaLocation;
use super::stored::StoredMedia;
use super::volume::{Entries, VolumeMedia};
use crate::engine::Engine;
use crate::project::Environment;
use crate::restore::Db;

/// A file's content, streamed.
pub type Reader = crate::archive::Reader;

/// The compose files' top-level volumes: key → the engine's name when the file gives
/// one (`name:`, or an `external` volume's own key).
pub type Volumes = BTreeMap<String, Option<String>>;

/// What a listing found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Sorted by path.
    pub files: Vec<MediaFile>,
    /// Names that are not media paths countable can take (not UTF-8, `a//b`, …).
    pub skipped: Vec<String>,
}

impl Listing {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Where an environment's media is, for reading it.
pub enum Media {
    /// There is none to read: the compose files declare no such volume.
    Undeclared { why: String },
    /// Volume `volume` of compose project `compose_project` on `engine`, read through
    /// a helper container of `image`.
    Volume {
        source: String,
        engine: Engine,
        compose_project: String,
        volume: String,
        named: Option<String>,
        image: String,
    },
    /// A bucket prefix, with the environment's S3 settings.
    Bucket {
        source: String,
        bucket: String,
        prefix: String,
        env: Box<Environment>,
    },
}

impl Media {
    /// The media of an environment whose settings are `env`, whose compose files
    /// declare `declared`, whose compose project is `compose_project`, and whose
    /// database is `db` (its engine is the environment's; its image reads volumes).
    pub async fn resolve(
        env: &Environment,
        declared: &Volumes,
        compose_project: &str,
        db: &Db,
    ) -> anyhow::Result<Self> {
        let location = env.media_location()?;
        let source = location.describe();
        match location {
            MediaLocation::Bucket { .. } => {
                Ok(Self::bucket_of(env)?.expect("a bucket location is a bucket's media"))
            }
            MediaLocation::Volume { volume } => {
                let Some(named) = declared.get(&volume) else {
                    return Ok(Media::Undeclared {
                        why: format!(
                            "the compose files declare no volume `{volume}`{}: no media to back up",
                            if volume == super::location::DEFAULT_VOLUME {
                                String::new()
                            } else {
                                " (media_volume)".into()
                            }
                        ),
                    });
                };
                let image = db.engine().image_id_of(&db.container).await?;
                Ok(Media::Volume {
                    volume,
                    named: named.clone(),
                    source,
                    engine: db.engine().clone(),
                    compose_project: compose_project.to_string(),
                    image,
                })
            }
        }
    }

    /// The media of an environment whose settings are `env` when it is in a bucket
    /// (nothing to resolve against an engine); `None` for a volume.
    pub fn bucket_of(env: &Environment) -> anyhow::Result<Option<Self>> {
        let location = env.media_location()?;
        let source = location.describe();
        Ok(match location {
            MediaLocation::Bucket { bucket, prefix } => Some(Media::Bucket {
                source,
                bucket,
                prefix,
                env: Box::new(env.clone()),
            }),
            MediaLocation::Volume { .. } => None,
        })
    }

    /// `volume media`, `s3://bucket/prefix/`; `Err`: there is no media, and why.
    pub fn describe(&self) -> Result<&str, &str> {
        match self {
            Media::Undeclared { why } => Err(why),
            Media::Volume { source, .. } | Media::Bucket { source, .. } => Ok(source),
        }
    }

    /// Get ready to read: start the helper container of a volume. Close the source
    /// when done.
    pub async fn open(&self) -> anyhow::Result<MediaSource> {
        match self {
            Media::Undeclared { .. } => Ok(MediaSource::Missing),
            Media::Bucket {
                bucket,
                prefix,
                env,
                ..
            } => Ok(MediaSource::Bucket(
                BucketMedia::open(bucket, prefix, env).await,
            )),
            Media::Volume {
                engine,
                compose_project,
                volume,
                named,
                image,
                ..
            } => {
                let Some(name) = engine
                    .compose_volume(compose_project, volume, named.as_deref())
                    .await?
                else {
                    return Ok(MediaSource::Missing);
                };
                let helper = format!("{compose_project}-countable-media-{}", std::process::id());
                Ok(MediaSource::Volume(
                    VolumeMedia::open(engine, &name, image, &helper).await?,
                ))
            }
        }
    }
}

/// Media opened for reading.
pub enum MediaSource {
    Volume(VolumeMedia),
    Bucket(BucketMedia),
    /// A backup's media, from the store.
    Backup(StoredMedia),
    /// No media: a volume the engine does not have (yet), or none declared.
    Missing,
}

impl MediaSource {
    /// Every file, sorted by path.
    pub async fn list(&self) -> anyhow::Result<Listing> {
        match self {
            MediaSource::Volume(v) => v.list().await,
            MediaSource::Bucket(b) => b.list().await,
            MediaSource::Backup(b) => Ok(b.list()),
            MediaSource::Missing => Ok(Listing::default()),
        }
    }

    /// One file's content; `None` when it is gone.
    pub async fn open(&self, path: &str) -> anyhow::Result<Option<Reader>> {
        match self {
            MediaSource::Volume(v) => v.open_file(path).await,
            MediaSource::Bucket(b) => b.open_file(path).await,
            MediaSource::Backup(b) => b.open_file(path).await,
            MediaSource::Missing => Ok(None),
        }
    }

    /// Read `wanted` (files of a listing of `listed_bytes` in all), one after the
    /// other: a volume in one tar stream when that is cheaper than a request a file.
    pub async fn read(
        &self,
        wanted: Vec<MediaFile>,
        listed_bytes: u64,
    ) -> anyhow::Result<Batch<'_>> {
        let whole = match self {
            MediaSource::Volume(v) => v.whole_if_cheaper(&wanted, listed_bytes).await?,
            _ => None,
        };
        Ok(Batch {
            source: self,
            queue: if whole.is_some() {
                VecDeque::new()
            } else {
                wanted.into()
            },
            whole,
            vanished: Vec::new(),
        })
    }

    /// Whether files are best read one stream after the other (a volume's one tar
    /// stream), rather than several at once.
    pub fn sequential(&self) -> bool {
        matches!(self, MediaSource::Volume(_))
    }

    /// Remove what was started to read (a volume's helper container).
    pub async fn close(self) {
        if let MediaSource::Volume(v) = self {
            v.close().await;
        }
    }
}

/// Files being read; see [`MediaSource::read`].
pub struct Batch<'a> {
    source: &'a MediaSource,
    whole: Option<Entries>,
    queue: VecDeque<MediaFile>,
    /// Files wanted that were gone when their turn came.
    pub vanished: Vec<String>,
}

impl Batch<'_> {
    /// The next file (its size and mtime as read, where the source says them) and its
    /// content; read it before asking for the next one. `None` when all were read.
    pub async fn next(&mut self) -> anyhow::Result<Option<(MediaFile, Reader)>> {
        if let Some(whole) = &mut self.whole {
            if let Some(next) = whole.next().await? {
                return Ok(Some(next));
            }
            // Not in the stream as a file (gone meanwhile, or a hard link to one met
            // before): asked for one by one, so that only what is gone is missed.
            let mut rest: Vec<MediaFile> = whole.wanted.drain().map(|(_, f)| f).collect();
            rest.sort_by(|a, b| a.path.cmp(&b.path));
            self.queue.extend(rest);
            self.whole = None;
        }
        while let Some(file) = self.queue.pop_front() {
            match self.source.open(&file.path).await? {
                Some(reader) => return Ok(Some((file, reader))),
                None => self.vanished.push(file.path),
            }
        }
        Ok(None)
    }
}
