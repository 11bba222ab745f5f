//! S3 (and S3-compatible stores: MinIO, Garage, Ceph, moto) as a backup store, through
//! aws-sdk-s3 with the standard credential chain. Path-style addressing whenever a
//! custom endpoint is set (countable.yml `endpoint_url`, `AWS_ENDPOINT_URL[_S3]`).

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;

use super::{is_side_file, Backup, Opened, StoreError};
use crate::project::Environment;

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

impl S3Store {
    pub async fn new(bucket: &str, prefix: &str, env: &Environment) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(p) = &env.aws_profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &env.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &env.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let shared = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            conf = conf.region(aws_config::Region::new("us-east-1"));
        }
        if env.endpoint_url.is_some() || env_endpoint().is_some() {
            conf = conf.force_path_style(true);
        }
        Self {
            client: Client::from_conf(conf.build()),
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
        let location = self.location();
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
                    "NoSuchBucket" => StoreError::NoSuchBucket(self.bucket.clone()),
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

    pub async fn list(&self) -> Result<Vec<Backup>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err(e, None))?;
            for obj in page.contents() {
                let Some(full) = obj.key() else { continue };
                let key = full.strip_prefix(&self.prefix).unwrap_or(full);
                if key.is_empty() || key.contains('/') || is_side_file(key) {
                    continue;
                }
                out.push(Backup {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified: obj.last_modified().map(|t| t.secs()).unwrap_or(0),
                });
            }
        }
        Ok(out)
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
