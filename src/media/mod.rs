//! An environment's uploaded media (seed 001: it lives outside the code), in a compose
//! volume on its engine or in an S3 bucket prefix: where it is ([`MediaLocation`],
//! from countable.yml), how to list it and read its files as streams ([`Media`],
//! [`MediaSource`]: what `backup` uses, and `pull-media` is to use), and its part of a
//! backup: the incremental copy into the backup store with its manifest
//! ([`backup`]), its check in `verify-backup` ([`check`]) and its retention
//! ([`prune`]); and `pull-media`, which copies any of them into the local project's
//! media volume ([`pull`], planned by [`plan`], written by [`write`]).
//!
//! It never writes to the media it reads; the only media it writes is the local volume
//! (through [`write`]). File contents stream with bounded buffers;
//! only the list of files (their metadata) is held in memory.

pub mod backup;
mod bucket;
pub mod check;
mod file;
mod location;
pub mod manifest;
pub mod plan;
pub mod prune;
pub mod pull;
mod source;
mod stored;
mod volume;
mod write;

pub use backup::MediaSummary;
pub use check::MediaCheck;
pub use file::{etag_md5, valid_path, MediaFile};
pub use location::{MediaLocation, DEFAULT_VOLUME};
pub use manifest::MediaManifest;
pub use source::{Batch, Listing, Media, MediaSource, Reader, Volumes};
pub use stored::StoredMedia;

use crate::error::Hint;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media is `{0}`: it must be `volume` or an s3://bucket/prefix/ URL")]
    BadLocation(String),
    #[error("media_volume is `{0}`: not a compose volume name")]
    BadVolume(String),
    #[error("media is the bucket {0}, and media_volume is set too")]
    VolumeWithBucket(String),
    #[error("the backups ({store}) are inside the media ({media}): each backup would hold the ones before it")]
    StoreInMedia { store: String, media: String },
    #[error("listing the media in {place} failed: {message}")]
    List { place: String, message: String },
    #[error("{0} exists already; countable never writes over a backup's media")]
    Exists(String),
    #[error("the media manifest {key} is not valid: {message}")]
    BadManifest { key: String, message: String },
    #[error("the stored media file {path} does not match what was sent: {message}")]
    Mismatch { path: String, message: String },
    #[error("the media backup was interrupted; its files were deleted again")]
    Interrupted,
    #[error("pull-media was interrupted: {copied} of {total} files copied; they stay, and running the same command again resumes")]
    PullInterrupted {
        copied: u64,
        total: u64,
        retry: String,
    },
    #[error("the local compose files declare no volume `{0}` to pull media into")]
    NoLocalVolume(String),
    #[error("{0} has no backup with media")]
    NoBackupMedia(String),
}

impl Hint for MediaError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            MediaError::BadLocation(_) => "set `media: volume` (the compose volume, the default) or `media: s3://<bucket>/<prefix>/` under the environment in countable.yml".into(),
            MediaError::BadVolume(_) => "set `media_volume:` to the name of the volume under `volumes:` in the compose file (default `media`)".into(),
            MediaError::VolumeWithBucket(_) => "remove `media_volume:` (it names a compose volume, for `media: volume`) or `media:` from this environment in countable.yml".into(),
            MediaError::StoreInMedia { .. } => "keep backups outside the media prefix: set `backups:` (or `media:`) of this environment in countable.yml to another bucket or prefix".into(),
            MediaError::List { .. } => "the helper container runs the db's image with the media volume mounted read-only; check that image has `find` and `sh` (`docker run --rm --entrypoint find <db image> --version` on that engine)".into(),
            MediaError::Exists(_) => "wait a second and run the backup again (keys carry the time to the second)".into(),
            MediaError::BadManifest { .. } => "make a new backup (`countable backup <env>`); a damaged manifest cannot be trusted".into(),
            MediaError::Mismatch { .. } => "the store changed an object: run the backup again, and check the store".into(),
            MediaError::Interrupted => "run the backup again when it may finish: `countable backup <env>`".into(),
            MediaError::PullInterrupted { retry, .. } => format!("resume with `{retry}`"),
            MediaError::NoLocalVolume(v) => format!("declare `{v}:` under `volumes:` in the compose file (mounted at web's media root), or set `media_volume:` of the environment to the volume that is"),
            MediaError::NoBackupMedia(_) => "back media up with `countable backup <env>`, or pull the live media: `countable pull-media <env>` without --from-backup".into(),
        })
    }
}
crate::register_hint!(MediaError);
