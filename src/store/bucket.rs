//! S3 buckets as `sync` sees them (not as backup stores): list a prefix with sizes and
//! ETags, read an object as a stream, write one (replacing what is there), copy one
//! server-side, delete one. Keys are relative to the bucket URL's prefix.
//!
//! It moves bytes and answers questions; it never decides what to copy.

use aws_sdk_s3::Client;

use super::s3::{self, map_sdk_err, Headers};
use super::{StoreError, Upload};
use crate::archive::Reader;

/// The largest object one CopyObject call copies; larger ones are copied in parts
/// (UploadPartCopy).
pub const COPY_OBJECT_MAX: u64 = 5 << 30;
/// The part size of a server-side multipart copy (10,000 parts hold 5 TiB).
const COPY_PART: u64 = 512 << 20;
/// Copy in parts above this many bytes instead (in parts of that size, 5 MiB at least):
/// for tests, which cannot make 5 GiB objects.
pub const COPY_IN_PARTS_VAR: &str = "COUNTABLE_S3_COPY_IN_PARTS_ABOVE";

/// (copy in parts above, part size).
fn copy_limits() -> (u64, u64) {
    match std::env::var(COPY_IN_PARTS_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Some(n) => (n, n.clamp(5 << 20, COPY_PART)),
        None => (COPY_OBJECT_MAX, COPY_PART),
    }
}

/// `s3://bucket/prefix/`: a bucket and a key prefix (empty, or ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    /// `s3://bucket`, `s3://bucket/`, `s3://bucket/files` and `s3://bucket/files/`
    /// (the last two name the same place).
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{text}` is not an s3://bucket/prefix/ URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid {
            return Err(format!(
                "`{text}`: `{bucket}` is not an S3 bucket name (3-63 of a-z, 0-9, `-`, `.`)"
            ));
        }
        let prefix = match prefix.trim_start_matches('/') {
            "" => String::new(),
            p if p.ends_with('/') => p.to_string(),
            p => format!("{p}/"),
        };
        Ok(Self {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// Does one of the two places hold the other (same bucket, nested prefixes)?
    pub fn overlaps(&self, other: &S3Url) -> bool {
        self.bucket == other.bucket
            && (self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix))
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// One object: its key (relative to the prefix), size and ETag (without quotes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// An object opened for reading.
pub struct Opened {
    pub reader: Reader,
    pub size: u64,
    pub headers: Headers,
}

/// A bucket (and prefix) reached with one client.
#[derive(Clone)]
pub struct Bucket {
    client: Client,
    url: S3Url,
}

fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_string()
}

impl Bucket {
    /// `url` through the credentials of `profile` (else the standard chain); region and
    /// endpoint come from the profile or the environment.
    pub async fn open(url: &S3Url, profile: Option<&str>) -> Self {
        Self {
            client: s3::client(profile, None, None).await,
            url: url.clone(),
        }
    }

    /// The same credentials on another place (one client reads and writes both).
    pub fn sibling(&self, url: &S3Url) -> Self {
        Self {
            client: self.client.clone(),
            url: url.clone(),
        }
    }

    pub fn url(&self) -> &S3Url {
        &self.url
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.url.prefix)
    }

    fn err<E, R>(&self, e: aws_sdk_s3::error::SdkError<E, R>, key: Option<&str>) -> StoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        map_sdk_err(e, &self.url.bucket, self.url.to_string(), key)
    }

    /// Every object under the prefix, by key (S3 lists in key order). Keys ending in
    /// `/` (folder markers) are left out.
    pub async fn list(&self) -> Result<Vec<Object>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.url.bucket)
            .prefix(&self.url.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(e, None))?;
            for obj in page.contents() {
                let Some(full) = obj.key() else { continue };
                let key = full.strip_prefix(&self.url.prefix).unwrap_or(full);
                if key.is_empty() || key.ends_with('/') {
                    continue;
                }
                out.push(Object {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    etag: unquote(obj.e_tag()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// `key`'s size and ETag, if it exists.
    pub async fn head(&self, key: &str) -> Result<Option<Object>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.url.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(h) => Ok(Some(Object {
                key: key.to_string(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                etag: unquote(h.e_tag()),
            })),
            Err(e) => s3::absent(self.err(e, Some(key))),
        }
    }

    /// Read `key` as a stream.
    pub async fn get(&self, key: &str) -> Result<Opened, StoreError> {
        let obj = self
            .client
            .get_object()
            .bucket(&self.url.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.err(e, Some(key)))?;
        let headers = Headers {
            content_type: obj.content_type().map(String::from),
            cache_control: obj.cache_control().map(String::from),
            content_encoding: obj.content_encoding().map(String::from),
            content_disposition: obj.content_disposition().map(String::from),
            metadata: obj.metadata().cloned().filter(|m| !m.is_empty()),
        };
        Ok(Opened {
            size: obj.content_length().unwrap_or(0).max(0) as u64,
            reader: Box::pin(obj.body.into_async_read()),
            headers,
        })
    }

    /// Write `bytes` as `key` (replacing it) in one request; the new ETag.
    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        headers: &Headers,
    ) -> Result<String, StoreError> {
        let out = self
            .client
            .put_object()
            .bucket(&self.url.bucket)
            .key(self.full(key))
            .set_content_type(headers.content_type.clone())
            .set_cache_control(headers.cache_control.clone())
            .set_content_encoding(headers.content_encoding.clone())
            .set_content_disposition(headers.content_disposition.clone())
            .set_metadata(headers.metadata.clone())
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| self.err(e, Some(key)))?;
        Ok(unquote(out.e_tag()))
    }

    /// A multipart upload of `key` that replaces what is there when committed.
    pub async fn upload(&self, key: &str, headers: &Headers) -> Result<Upload, StoreError> {
        s3::multipart(
            &self.client,
            &self.url.bucket,
            self.full(key),
            key,
            self.url.to_string(),
            true,
            headers,
        )
        .await
        .map(Upload::S3)
    }

    /// Copy `from`'s object `src_key` (`size` bytes) to `key` here, server-side: this
    /// bucket's credentials must read the source. The new ETag (empty when the server
    /// does not say; ask `head`).
    pub async fn copy_from(
        &self,
        from: &Bucket,
        src_key: &str,
        key: &str,
        size: u64,
    ) -> Result<String, StoreError> {
        let source = copy_source(&from.url.bucket, &from.full(src_key));
        let (above, part) = copy_limits();
        if size > above {
            return self.copy_in_parts(&source, key, size, part).await;
        }
        let out = self
            .client
            .copy_object()
            .bucket(&self.url.bucket)
            .key(self.full(key))
            .copy_source(source)
            .send()
            .await
            .map_err(|e| self.err(e, Some(key)))?;
        Ok(unquote(out.copy_object_result().and_then(|r| r.e_tag())))
    }

    /// A server-side copy of an object larger than CopyObject takes: UploadPartCopy of
    /// byte ranges, one part at a time (no bytes pass through here).
    async fn copy_in_parts(
        &self,
        source: &str,
        key: &str,
        size: u64,
        part_size: u64,
    ) -> Result<String, StoreError> {
        let full = self.full(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.url.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.err(e, Some(key)))?;
        let id = created.upload_id().unwrap_or_default().to_string();
        let copied = async {
            let mut parts = Vec::new();
            for (n, start) in (0..size).step_by(part_size as usize).enumerate() {
                let end = (start + part_size).min(size) - 1;
                let part = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.url.bucket)
                    .key(&full)
                    .upload_id(&id)
                    .part_number(n as i32 + 1)
                    .copy_source(source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| self.err(e, Some(key)))?;
                parts.push(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(n as i32 + 1)
                        .set_e_tag(
                            part.copy_part_result()
                                .and_then(|r| r.e_tag())
                                .map(String::from),
                        )
                        .build(),
                );
            }
            match s3::complete(&self.client, &self.url.bucket, &full, &id, parts, false).await {
                Ok(etag) => Ok(etag.unwrap_or_default()),
                Err(e) => Err(self.err(e, Some(key))),
            }
        }
        .await;
        if copied.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.url.bucket)
                .key(&full)
                .upload_id(&id)
                .send()
                .await;
        }
        copied
    }

    /// Delete `key` (missing is fine).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.url.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.err(e, Some(key)))?;
        Ok(())
    }
}

/// `bucket/key` as CopyObject wants it: the key URL-encoded, its slashes kept.
fn copy_source(bucket: &str, key: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEY: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!("{bucket}/{}", utf8_percent_encode(key, KEY))
}

/// Is `etag` the MD5 of the object's bytes? Only for single-part uploads (and copies
/// of them) without SSE-KMS/SSE-C; a multipart upload's ETag is `<md5 of md5s>-<parts>`.
pub fn is_plain_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = S3Url::parse("s3://prod-media/files").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str()),
            ("prod-media", "files/")
        );
        assert_eq!(u.to_string(), "s3://prod-media/files/");
        assert_eq!(S3Url::parse("s3://b-1/").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://b-1").unwrap().prefix, "");
        assert!(S3Url::parse("https://x/y").is_err());
        assert!(S3Url::parse("s3://Bad_Bucket/x").is_err());
        let a = S3Url::parse("s3://media/files/").unwrap();
        assert!(a.overlaps(&S3Url::parse("s3://media/").unwrap()));
        assert!(a.overlaps(&S3Url::parse("s3://media/files/thumbs/").unwrap()));
        assert!(!a.overlaps(&S3Url::parse("s3://media/other/").unwrap()));
        assert!(!a.overlaps(&S3Url::parse("s3://media2/files/").unwrap()));
    }

    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(
            copy_source("b", "files/a b+c/ü.jpg"),
            "b/files/a%20b%2Bc/%C3%BC.jpg"
        );
    }

    #[test]
    fn plain_md5_etags() {
        assert!(is_plain_md5("9e107d9d372bb6826bd81d3542a419d6"));
        assert!(!is_plain_md5("9e107d9d372bb6826bd81d3542a419d6-2"));
        assert!(!is_plain_md5(""));
    }
}
