//! S3 (and S3-compatible stores: MinIO, Garage, Ceph, moto) as a backup store, through
//! aws-sdk-s3 with the standard credential chain. Path-style addressing whenever a
//! custom endpoint is set (countable.yml `endpoint_url`, `AWS_ENDPOINT_URL[_S3]`).

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;

use super::{Backup, Object, Opened, StoreError};
use crate::project::Environment;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

fn env_endpoint() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// An S3 client for `profile` (else the standard chain), with `region` and `endpoint`
/// when given (else the profile's or the environment's). Path-style addressing whenever
/// an endpoint is set anywhere (countable.yml, the profile, `AWS_ENDPOINT_URL[_S3]`):
/// S3-compatible servers rarely serve virtual-hosted buckets.
pub async fn client(profile: Option<&str>, region: Option<&str>, endpoint: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(p) = profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    let shared = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&shared);
    if shared.region().is_none() {
        conf = conf.region(aws_config::Region::new("us-east-1"));
    }
    if endpoint.is_some() || shared.endpoint_url().is_some() || env_endpoint().is_some() {
        conf = conf.force_path_style(true);
    }
    Client::from_conf(conf.build())
}

impl S3Store {
    pub async fn new(bucket: &str, prefix: &str, env: &Environment) -> Self {
        Self {
            client: client(
                env.aws_profile.as_deref(),
                env.region.as_deref(),
                env.endpoint_url.as_deref(),
            )
            .await,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn map_err<E, R>(&self, err: SdkError<E, R>, key: Option<&str>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        map_sdk_err(err, &self.bucket, self.location(), key)
    }

    /// Every object at the location, side files included, and each "folder" below it
    /// (a key prefix ending in `/`, such as a backup's `<stamp>.media/`) as one entry
    /// whose key ends with `/`: one listing with a delimiter, so objects in folders
    /// (media files, other projects' backups) are not paged through.
    pub async fn entries(&self) -> Result<Vec<Backup>, StoreError> {
        let (objects, folders) = self.list("", true).await?;
        let files = objects
            .into_iter()
            .filter(|o| !o.key.is_empty() && !o.key.contains('/'))
            .map(|o| Backup {
                key: o.key,
                size: o.size,
                modified: o.modified,
            });
        let folders = folders.into_iter().map(|key| Backup {
            key,
            size: 0,
            modified: 0,
        });
        Ok(files.chain(folders).collect())
    }

    /// Every object whose key starts with `under` (relative to the location), at any
    /// depth, with its ETag (quotes taken off, otherwise verbatim); keys relative to
    /// the location.
    pub async fn walk(&self, under: &str) -> Result<Vec<Object>, StoreError> {
        Ok(self.list(under, false).await?.0)
    }

    /// ListObjectsV2 of the keys starting with `under` (relative to the location), every
    /// page: the objects and, with `folders`, the common prefixes below (delimiter
    /// `/`), all relative to the location.
    async fn list(
        &self,
        under: &str,
        folders: bool,
    ) -> Result<(Vec<Object>, Vec<String>), StoreError> {
        let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full(under))
            .set_delimiter(folders.then(|| "/".to_string()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err(e, None))?;
            for obj in page.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                objects.push(Object {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified: obj.last_modified().map(|t| t.secs()).unwrap_or(0),
                    etag: obj.e_tag().map(unquote),
                });
            }
            prefixes.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix()?.strip_prefix(&self.prefix))
                    .filter(|p| !p.is_empty())
                    .map(String::from),
            );
        }
        Ok((objects, prefixes))
    }

    pub async fn open(&self, key: &str) -> Result<Opened, StoreError> {
        let full = format!("{}{}", self.prefix, key);
        let obj = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.map_err(e, Some(key)))?;
        let size = obj.content_length().map(|n| n.max(0) as u64);
        Ok(Opened {
            reader: Box::pin(obj.body.into_async_read()),
            size,
        })
    }
}

/// An ETag as S3 sends it (`"9b2c…"`, `"3f1a…-2"`), without its quotes.
fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// An SDK error as a `StoreError` of `bucket` at `location` (about `key`, when one).
pub(super) fn map_sdk_err<E, R>(
    err: SdkError<E, R>,
    bucket: &str,
    location: String,
    key: Option<&str>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::DispatchFailure(d) => {
            let message = if d.is_io() || d.is_timeout() {
                format!("{d:?}")
            } else {
                d.as_other()
                    .map(|o| format!("{o:?}"))
                    .unwrap_or_else(|| format!("{d:?}"))
            };
            if format!("{err:?}").contains("no credentials")
                || format!("{err:?}").contains("CredentialsNotLoaded")
            {
                return StoreError::NoCredentials(location);
            }
            StoreError::Unreachable {
                location,
                message: shorten(&message),
            }
        }
        SdkError::TimeoutError(_) => StoreError::Unreachable {
            location,
            message: "timed out".into(),
        },
        _ => {
            let code = err.code().unwrap_or("").to_string();
            match code.as_str() {
                "NoSuchBucket" => StoreError::NoSuchBucket(bucket.to_string()),
                "NoSuchKey" | "NotFound" => StoreError::NoSuchKey {
                    key: key.unwrap_or("").to_string(),
                    location,
                },
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "ExpiredToken"
                | "InvalidToken"
                | "Forbidden" => StoreError::Credentials { location, code },
                _ => StoreError::S3 {
                    location,
                    message: shorten(&format!(
                        "{} {}",
                        code,
                        err.message()
                            .map(String::from)
                            .unwrap_or_else(|| format!("{err:?}"))
                    )),
                },
            }
        }
    }
}

/// Complete multipart upload `id` of `full` in `bucket` with `parts` (only if no
/// object has the key, with `if_none_match`); the new ETag when the answer says it.
/// Some S3-compatible servers (moto, for one) answer 200 with a body the SDK cannot
/// parse: the server accepted the upload, so that is success too (what follows every
/// copy or backup checks the object).
pub(super) async fn complete(
    client: &Client,
    bucket: &str,
    full: &str,
    id: &str,
    parts: Vec<aws_sdk_s3::types::CompletedPart>,
    if_none_match: bool,
) -> Result<
    Option<String>,
    SdkError<aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError>,
> {
    let mut request = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(full)
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        );
    if if_none_match {
        // Never over an existing key, even one that appeared during the upload.
        request = request.if_none_match("*");
    }
    match request.send().await {
        Ok(out) => Ok(out.e_tag().map(|e| e.trim_matches('"').to_string())),
        Err(SdkError::ServiceError(e)) if e.raw().status().is_success() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A HEAD's error: `None` when it says the object is not there (HEAD answers carry no
/// error code, so a bare 404 counts too), else the error.
pub(super) fn absent<T>(e: StoreError) -> Result<Option<T>, StoreError> {
    match e {
        StoreError::NoSuchKey { .. } => Ok(None),
        StoreError::S3 { message, .. } if message.contains("404") || message.trim().is_empty() => {
            Ok(None)
        }
        other => Err(other),
    }
}

fn shorten(s: &str) -> String {
    let s = s.replace('\n', " ");
    if s.len() > 300 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(300).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

/// A multipart upload fed through a pipe; `finish(true)` completes it, `finish(false)`
/// (or any error) aborts it, so a failed backup leaves no object.
pub struct S3Upload {
    pub(super) pipe: tokio::io::DuplexStream,
    decide: tokio::sync::oneshot::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl S3Upload {
    pub async fn finish(self, commit: bool) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        let mut pipe = self.pipe;
        let _ = pipe.shutdown().await;
        drop(pipe);
        let _ = self.decide.send(commit);
        self.task.await.map_err(|e| StoreError::S3 {
            location: String::new(),
            message: e.to_string(),
        })?
    }
}

impl S3Store {
    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => absent(self.map_err(e, Some(key))),
        }
    }

    pub async fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| self.map_err(e, Some(key)))?;
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.map_err(e, Some(key)))?;
        Ok(())
    }

    /// Store `bytes` under `key` in one request, never over an existing object
    /// (`If-None-Match: *`).
    pub async fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .if_none_match("*")
            .body(bytes.into())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(412) => {
                Err(StoreError::Exists {
                    key: key.to_string(),
                    location: self.location(),
                })
            }
            Err(e) => Err(self.map_err(e, Some(key))),
        }
    }

    /// Start a multipart upload of `key`; parts as `super::parts` sizes and sends them.
    /// It never replaces an object (the completion is conditional).
    pub async fn upload(&self, key: &str) -> Result<S3Upload, StoreError> {
        multipart(
            &self.client,
            &self.bucket,
            self.full(key),
            key,
            self.location(),
            false,
            &Headers::default(),
        )
        .await
    }
}

/// What an object carries beside its bytes (copied from a source object to its copy).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::HashMap<String, String>>,
}

/// Start a multipart upload of `full` (the whole key) into `bucket` with `headers`:
/// bytes go in through the pipe, `finish(true)` completes it, anything else aborts it.
/// `overwrite: false` completes it only if no object has the key (else
/// `StoreError::Exists`).
pub(super) async fn multipart(
    client: &Client,
    bucket: &str,
    full: String,
    name: &str,
    location: String,
    overwrite: bool,
    headers: &Headers,
) -> Result<S3Upload, StoreError> {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(&full)
        .set_content_type(headers.content_type.clone())
        .set_cache_control(headers.cache_control.clone())
        .set_content_encoding(headers.content_encoding.clone())
        .set_content_disposition(headers.content_disposition.clone())
        .set_metadata(headers.metadata.clone())
        .send()
        .await
        .map_err(|e| map_sdk_err(e, bucket, location.clone(), Some(name)))?;
    let upload_id = created.upload_id().unwrap_or_default().to_string();
    let (pipe, mut rx) = tokio::io::duplex(256 * 1024);
    let (decide, decision) = tokio::sync::oneshot::channel::<bool>();
    let client = client.clone();
    let bucket = bucket.to_string();
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let fail = {
            let location = location.clone();
            move |message: String| StoreError::S3 {
                location: location.clone(),
                message,
            }
        };
        let sent = super::parts::send_parts(&mut rx, |n, bytes| {
            let request = client
                .upload_part()
                .bucket(&bucket)
                .key(&full)
                .upload_id(&upload_id)
                .part_number(n)
                .body(bytes.into());
            let fail = fail.clone();
            async move {
                let part = request.send().await.map_err(|e| {
                    fail(format!(
                        "uploading part {n}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    ))
                })?;
                Ok(part.e_tag().map(String::from))
            }
        })
        .await
        .map_err(|e| match e {
            StoreError::S3 { message, .. } => fail(message),
            other => other,
        });
        let (result, parts) = match sent {
            Ok(sent) => (
                Ok(()),
                sent.into_iter()
                    .map(|(n, etag)| {
                        aws_sdk_s3::types::CompletedPart::builder()
                            .part_number(n)
                            .set_e_tag(etag)
                            .build()
                    })
                    .collect(),
            ),
            Err(e) => (Err(e), Vec::new()),
        };
        let commit = result.is_ok() && decision.await.unwrap_or(false);
        let result = if commit {
            match complete(&client, &bucket, &full, &upload_id, parts, !overwrite).await {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(412) => {
                    Err(StoreError::Exists {
                        key: name,
                        location: location.clone(),
                    })
                }
                Err(e) => Err(fail(format!(
                    "completing the upload: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))),
            }
        } else {
            result.and(Err(fail("the upload was abandoned".into())))
        };
        // Not completed: abort, so that no parts stay stored (and billed).
        let _ = client
            .abort_multipart_upload()
            .bucket(&bucket)
            .key(&full)
            .upload_id(&upload_id)
            .send()
            .await;
        result
    });
    Ok(S3Upload { pipe, decide, task })
}
