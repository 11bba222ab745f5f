//! One media file as a listing sees it ([`MediaFile`]), what a valid media path is, and
//! what an S3 ETag does and does not say about a file's content.
//!
//! Nothing here reads a file.

use serde::{Deserialize, Serialize};

/// A file of an environment's media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaFile {
    /// Relative to the media root, `/`-separated; never absolute, never with `.` or
    /// `..` components (see [`valid_path`]).
    pub path: String,
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// SHA-256 of the content (lowercase hex), once it has been read.
    pub sha256: Option<String>,
    /// The S3 ETag (without quotes) of a file in a bucket; see [`etag_md5`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl MediaFile {
    /// Whether `self` is `before` unchanged, as far as metadata tells: the same path
    /// and size and, in a bucket, the same ETag; in a volume, the same mtime. (A
    /// multipart ETag is compared with ETags only, never with a computed hash.)
    pub fn unchanged_since(&self, before: &MediaFile) -> bool {
        self.path == before.path
            && self.size == before.size
            && match (&self.etag, &before.etag) {
                (Some(now), Some(then)) => now == then,
                (None, None) => self.mtime == before.mtime,
                _ => false,
            }
    }
}

/// A path countable takes as a media file's: relative, `/`-separated, no empty, `.` or
/// `..` component, no NUL. Anything else could escape the media root or a store's
/// folder when written back.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The MD5 of the content that an ETag is, if it is one: 32 hex digits. A multipart
/// upload's ETag (`<hex>-<parts>`) is the MD5 of the parts' MD5s, not of the content,
/// so it is `None`, as is any other form (SSE-KMS, other S3-compatible servers).
pub fn etag_md5(etag: &str) -> Option<&str> {
    (etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())).then_some(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_paths() {
        for ok in [
            "a.jpg",
            "photos/2026/a b.jpg",
            ".hidden",
            "x/..y/z",
            "é/ü.png",
        ] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a/.",
            "a\0b",
        ] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_multipart_etag_is_not_an_md5() {
        assert_eq!(
            etag_md5("9e107d9d372bb6826bd81d3542a419d6"),
            Some("9e107d9d372bb6826bd81d3542a419d6")
        );
        assert_eq!(etag_md5("9e107d9d372bb6826bd81d3542a419d6-2"), None);
        assert_eq!(etag_md5("not-an-md5"), None);
    }

    fn file(size: u64, mtime: i64, etag: Option<&str>) -> MediaFile {
        MediaFile {
            path: "a.jpg".into(),
            size,
            mtime,
            sha256: None,
            etag: etag.map(String::from),
        }
    }

    #[test]
    fn unchanged_by_size_and_mtime_or_etag() {
        assert!(file(3, 10, None).unchanged_since(&file(3, 10, None)));
        assert!(!file(3, 11, None).unchanged_since(&file(3, 10, None)));
        assert!(!file(4, 10, None).unchanged_since(&file(3, 10, None)));
        // In a bucket the ETag decides, whatever the time says.
        assert!(file(3, 99, Some("abc-2")).unchanged_since(&file(3, 10, Some("abc-2"))));
        assert!(!file(3, 10, Some("abd-2")).unchanged_since(&file(3, 10, Some("abc-2"))));
        assert!(!file(3, 10, Some("abc")).unchanged_since(&file(3, 10, None)));
        let mut other = file(3, 10, None);
        other.path = "b.jpg".into();
        assert!(!other.unchanged_since(&file(3, 10, None)));
    }
}
