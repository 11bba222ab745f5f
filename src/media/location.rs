//! Where an environment's media lives, as countable.yml says it (`media:`,
//! `media_volume:`), validated into a [`MediaLocation`]. Plain values; nothing here
//! reaches an engine or a bucket.

use super::MediaError;

/// The compose volume used when `media_volume` is not set.
pub const DEFAULT_VOLUME: &str = "media";

/// An environment's media: a compose volume on its engine, or a bucket prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaLocation {
    /// The compose volume `volume` (a key of the compose files' `volumes:`), mounted
    /// at web's media root.
    Volume { volume: String },
    /// `s3://bucket/prefix/`, read with the environment's S3 settings; `prefix` is
    /// empty or ends in `/`.
    Bucket { bucket: String, prefix: String },
}

impl MediaLocation {
    /// From `media:` (`volume`, the default, or `s3://bucket/prefix/`) and
    /// `media_volume:` (a compose volume name, default `media`; only with a volume).
    pub fn of(media: Option<&str>, volume: Option<&str>) -> Result<Self, MediaError> {
        match media.map(str::trim) {
            None | Some("volume") => {
                let volume = volume.unwrap_or(DEFAULT_VOLUME);
                if !is_volume_name(volume) {
                    return Err(MediaError::BadVolume(volume.to_string()));
                }
                Ok(MediaLocation::Volume {
                    volume: volume.to_string(),
                })
            }
            Some(url) if url.starts_with("s3://") => {
                if volume.is_some() {
                    return Err(MediaError::VolumeWithBucket(url.to_string()));
                }
                let (bucket, prefix) = crate::store::parse_s3_url(url)
                    .ok_or_else(|| MediaError::BadLocation(url.to_string()))?;
                Ok(MediaLocation::Bucket { bucket, prefix })
            }
            Some(other) => Err(MediaError::BadLocation(other.to_string())),
        }
    }

    /// What a media manifest names as its source: `volume media`, `s3://b/p/`.
    pub fn describe(&self) -> String {
        match self {
            MediaLocation::Volume { volume } => format!("volume {volume}"),
            MediaLocation::Bucket { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// A name compose accepts for a volume: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_their_names() {
        let volume = MediaLocation::of(None, None).unwrap();
        assert_eq!(volume.describe(), "volume media");
        assert_eq!(
            MediaLocation::of(Some("volume"), Some("uploads"))
                .unwrap()
                .describe(),
            "volume uploads"
        );
        for url in ["s3://shop/files", "s3://shop/files/", "s3://shop//files/"] {
            assert_eq!(
                MediaLocation::of(Some(url), None).unwrap(),
                MediaLocation::Bucket {
                    bucket: "shop".into(),
                    prefix: "files/".into()
                },
                "{url}"
            );
        }
        assert_eq!(
            MediaLocation::of(Some("s3://shop"), None)
                .unwrap()
                .describe(),
            "s3://shop/"
        );
    }

    #[test]
    fn refusals() {
        for (media, volume) in [
            (Some("ftp://x/"), None),
            (Some("s3://"), None),
            (Some("s3:///files"), None),
            (Some("bucket"), None),
            (None, Some("")),
            (None, Some("a b")),
            (None, Some("-media")),
            (Some("s3://shop/files/"), Some("media")),
        ] {
            assert!(
                MediaLocation::of(media, volume).is_err(),
                "{media:?} {volume:?}"
            );
        }
    }
}
