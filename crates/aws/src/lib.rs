//! AWS adapters for flowspike: an S3 implementation of the history [`Store`] and of the replay
//! [`Archive`], on the AWS SDK's standard configuration (credential chain, region, `AWS_ENDPOINT_URL`).
//!
//! The rest of flowspike is synchronous (rayon); this crate owns a small tokio runtime and blocks on
//! it, so callers never see async code. Do not call these blocking methods from inside a tokio runtime.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use flowspike_history::{Store, StoreError};
use flowspike_replay::{Archive, ArchiveError, ObjectInfo};

/// Errors while setting up AWS clients.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The tokio runtime could not start.
    #[error("cannot start the AWS runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A URL that is not `s3://bucket[/prefix]`.
    #[error("not an s3 url (expected s3://bucket/prefix): {0}")]
    BadUrl(String),
    /// An S3 request failed (bucket and key in the message).
    #[error("{0}")]
    S3(String),
}

/// A parsed `s3://bucket/prefix` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without a leading `/`; empty or ending in `/`.
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket` or `s3://bucket/some/prefix`.
    ///
    /// ```
    /// let u = flowspike_aws::S3Url::parse("s3://logs/AWSLogs").unwrap();
    /// assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("logs", "AWSLogs/"));
    /// ```
    pub fn parse(url: &str) -> Result<S3Url, AwsError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| AwsError::BadUrl(url.to_string()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(AwsError::BadUrl(url.to_string()));
        }
        let mut prefix = prefix.trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(S3Url { bucket: bucket.to_string(), prefix })
    }
}

/// An S3 client with its own runtime, shared by [`S3Store`] and [`S3Archive`].
#[derive(Clone)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    rt: Arc<tokio::runtime::Runtime>,
}

impl S3 {
    /// Loads the standard AWS configuration (environment, profile, IMDS/ECS credentials).
    ///
    /// When an endpoint override is set (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3`), path-style
    /// addressing is used, as local S3 endpoints need.
    pub fn from_env() -> Result<S3, AwsError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flowspike-s3")
            .enable_all()
            .build()?;
        let conf = rt.block_on(aws_config::load_defaults(aws_config::BehaviorVersion::latest()));
        let local = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        let s3conf = aws_sdk_s3::config::Builder::from(&conf).force_path_style(local).build();
        Ok(S3 { client: aws_sdk_s3::Client::from_conf(s3conf), rt: Arc::new(rt) })
    }

    /// A client for a given endpoint with static credentials: for tests against a local emulator
    /// (path-style addressing, region `us-east-1` unless given).
    pub fn for_endpoint(
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<S3, AwsError> {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let creds =
            aws_sdk_s3::config::Credentials::new(access_key, secret_key, None, None, "static");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        Ok(S3 { client: aws_sdk_s3::Client::from_conf(conf), rt: Arc::new(rt) })
    }

    /// Creates `bucket` (an existing bucket owned by us is not an error).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), AwsError> {
        self.rt.block_on(async {
            match self.client.create_bucket().bucket(bucket).send().await {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
                {
                    Ok(())
                }
                Err(e) => Err(AwsError::S3(format!("create bucket {bucket}: {}", err_text(&e)))),
            }
        })
    }

    /// Uploads one object.
    pub fn put_object(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), AwsError> {
        self.put(bucket, key, bytes).map_err(AwsError::S3)
    }

    /// Downloads one object (`None` if it does not exist).
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, AwsError> {
        self.get(bucket, key).map_err(AwsError::S3)
    }

    /// Lists the objects under `prefix`, sorted by key.
    pub fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, AwsError> {
        self.list(bucket, prefix).map_err(AwsError::S3)
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, String> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut pages =
                self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| format!("list s3://{bucket}/{prefix}: {}", err_text(&e)))?;
                for o in page.contents() {
                    if let Some(k) = o.key() {
                        let size = o.size().unwrap_or(0).max(0) as u64;
                        out.push(ObjectInfo { key: k.to_string(), size });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn list_prefixes(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .delimiter("/")
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| format!("list s3://{bucket}/{prefix}: {}", err_text(&e)))?;
                out.extend(
                    page.common_prefixes().iter().filter_map(|p| p.prefix().map(String::from)),
                );
            }
            out.sort();
            Ok(out)
        })
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.rt.block_on(async {
            let resp = match self.client.get_object().bucket(bucket).key(key).send().await {
                Ok(r) => r,
                Err(e) => {
                    if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                        return Ok(None);
                    }
                    return Err(format!("get s3://{bucket}/{key}: {}", err_text(&e)));
                }
            };
            let body =
                resp.body.collect().await.map_err(|e| format!("read s3://{bucket}/{key}: {e}"))?;
            Ok(Some(body.into_bytes().to_vec()))
        })
    }

    fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.rt.block_on(async {
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("put s3://{bucket}/{key}: {}", err_text(&e)))
        })
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<(), String> {
        self.rt.block_on(async {
            self.client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("delete s3://{bucket}/{key}: {}", err_text(&e)))
        })
    }
}

/// The error text of an SDK error, including the service's code and message when there is one.
fn err_text<E: std::error::Error + 'static>(e: &E) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

/// The history [`Store`] on S3: keys live under `s3://bucket/prefix`. A put is one PutObject, which
/// S3 makes visible atomically.
pub struct S3Store {
    s3: S3,
    url: S3Url,
}

impl S3Store {
    /// A store rooted at `url` (`s3://bucket/prefix`).
    pub fn new(s3: S3, url: S3Url) -> S3Store {
        S3Store { s3, url }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.url.prefix, key)
    }
}

impl Store for S3Store {
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.s3.put(&self.url.bucket, &self.full(key), bytes).map_err(StoreError::Remote)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        match self.s3.get(&self.url.bucket, &self.full(key)).map_err(StoreError::Remote)? {
            Some(b) => Ok(b),
            None => Err(StoreError::NotFound {
                key: format!("s3://{}/{}", self.url.bucket, self.full(key)),
            }),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let objs =
            self.s3.list(&self.url.bucket, &self.full(prefix)).map_err(StoreError::Remote)?;
        let n = self.url.prefix.len();
        Ok(objs.into_iter().map(|o| o.key[n..].to_string()).collect())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.s3.delete(&self.url.bucket, &self.full(key)).map_err(StoreError::Remote)
    }
}

/// A flow-log archive on S3, for `flowspike replay s3://bucket/prefix`.
pub struct S3Archive {
    s3: S3,
    bucket: String,
}

impl S3Archive {
    /// An archive in `bucket`; keys passed to [`Archive`] methods are full object keys.
    pub fn new(s3: S3, bucket: impl Into<String>) -> S3Archive {
        S3Archive { s3, bucket: bucket.into() }
    }
}

impl Archive for S3Archive {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ArchiveError> {
        self.s3.list(&self.bucket, prefix).map_err(ArchiveError::Remote)
    }

    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        self.s3.list_prefixes(&self.bucket, prefix).map_err(ArchiveError::Remote)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        match self.s3.get(&self.bucket, key).map_err(ArchiveError::Remote)? {
            Some(b) => Ok(b),
            None => Err(ArchiveError::Remote(format!("s3://{}/{key}: not found", self.bucket))),
        }
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls() {
        let check = |url: &str, want: Option<(&str, &str)>| {
            let got = S3Url::parse(url).ok();
            let got = got.as_ref().map(|u| (u.bucket.as_str(), u.prefix.as_str()));
            assert_eq!(got, want, "{url}");
        };
        check("s3://b", Some(("b", "")));
        check("s3://b/", Some(("b", "")));
        check("s3://b/p", Some(("b", "p/")));
        check("s3://b/p/q/", Some(("b", "p/q/")));
        check("s3:///p", None);
        check("/tmp/x", None);
    }
}
