//! AWS adapters for flowspike: an S3 implementation of the history [`Store`] and of the replay
//! [`Archive`], and the spike sinks — a Kinesis stream ([`kinesis::KinesisSink`]), Security Hub
//! ([`securityhub::SecurityHubSink`]), EventBridge ([`eventbridge::EventBridgeSink`]), chosen by
//! an `Output` in [`sinks::spike_sink`] — on the AWS SDK's standard configuration (credential
//! chain, region, `AWS_ENDPOINT_URL`).
//!
//! The rest of flowspike is synchronous (rayon); this crate owns a small tokio runtime and blocks on
//! it, so callers never see async code. Do not call these blocking methods from inside a tokio runtime.
//!
//! Every call goes through `flowspike-retry`: throttling (`SlowDown`), 5xx, timeouts and dropped
//! connections are retried under a [`Policy`] ([`Policy::Forever`] for the services' state store,
//! a bounded time for `replay`); a missing bucket or a denied access fails at once.

mod deliver;
pub mod eventbridge;
pub mod kinesis;
pub mod securityhub;
pub mod sinks;
mod threat_list;

pub use threat_list::S3ListSource;

use std::sync::Arc;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use flowspike_history::{Store, StoreError};
use flowspike_replay::{Archive, ArchiveError, ObjectInfo};
pub use flowspike_retry::Policy;
use flowspike_retry::{retry, Class};

/// How long `replay` retries a failing S3 call by default before it calls the object unreadable
/// (or, for the state, fails).
pub const DEFAULT_REPLAY_RETRY: std::time::Duration = std::time::Duration::from_secs(300);

/// The region of the standard AWS configuration (`AWS_REGION`, `AWS_DEFAULT_REGION`, the
/// profile, the instance's metadata), as every client built here sees it; `None` if none is set.
pub fn configured_region() -> Result<Option<String>, AwsError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let region = rt.block_on(async {
        aws_config::default_provider::region::DefaultRegionChain::builder().build().region().await
    });
    Ok(region.map(|r| r.to_string()))
}

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
        let conf = rt.block_on(flowspike_retry::sdk_config());
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
            .retry_config(flowspike_retry::sdk_retry_config())
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
                Err(e) => Err(AwsError::S3(format!(
                    "create bucket {bucket}: {}",
                    flowspike_retry::describe(&e)
                ))),
            }
        })
    }

    /// Uploads one object.
    pub fn put_object(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), AwsError> {
        self.put(bucket, key, bytes, Policy::For(DEFAULT_REPLAY_RETRY)).map_err(AwsError::S3)
    }

    /// Downloads one object (`None` if it does not exist).
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, AwsError> {
        self.get(bucket, key, Policy::For(DEFAULT_REPLAY_RETRY)).map_err(AwsError::S3)
    }

    /// Lists the objects under `prefix`, sorted by key.
    pub fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, AwsError> {
        self.list(bucket, prefix, Policy::For(DEFAULT_REPLAY_RETRY)).map_err(AwsError::S3)
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// True when at least one object's key starts with `prefix` (one LIST of one key).
    pub fn has_objects(
        &self,
        bucket: &str,
        prefix: &str,
        policy: Policy,
    ) -> Result<bool, AwsError> {
        self.rt
            .block_on(retry("s3:ListObjectsV2", policy, S3CallError::class, |_| async {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .max_keys(1)
                    .send()
                    .await
                    .map_err(|e| S3CallError::sdk(format!("list s3://{bucket}/{prefix}"), &e))?;
                Ok(!page.contents().is_empty())
            }))
            .map_err(|e| AwsError::S3(e.text))
    }

    /// One page of ListObjectsV2 (retried under `policy`): the keys with sizes, the common prefixes
    /// (with a delimiter), and the continuation token of the next page.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
        policy: Policy,
    ) -> Result<ListPage, S3CallError> {
        retry("s3:ListObjectsV2", policy, S3CallError::class, |_| async {
            let page = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_owned))
                .set_continuation_token(token.map(str::to_owned))
                .send()
                .await
                .map_err(|e| S3CallError::sdk(format!("list s3://{bucket}/{prefix}"), &e))?;
            let objects = page
                .contents()
                .iter()
                .filter_map(|o| {
                    let size = o.size().unwrap_or(0).max(0) as u64;
                    o.key().map(|k| ObjectInfo { key: k.to_string(), size })
                })
                .collect();
            let prefixes = page
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(String::from))
                .collect();
            let next = match page.is_truncated() {
                Some(true) => page.next_continuation_token().map(str::to_owned),
                _ => None,
            };
            Ok(ListPage { objects, prefixes, next })
        })
        .await
    }

    /// Every page of a listing, each page retried on its own (a throttled page does not restart
    /// the listing).
    fn list_all(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        policy: Policy,
    ) -> Result<(Vec<ObjectInfo>, Vec<String>), String> {
        self.rt.block_on(async {
            let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .list_page(bucket, prefix, delimiter, token.as_deref(), policy)
                    .await
                    .map_err(|e| e.text)?;
                objects.extend(page.objects);
                prefixes.extend(page.prefixes);
                match page.next {
                    Some(t) => token = Some(t),
                    None => return Ok((objects, prefixes)),
                }
            }
        })
    }

    fn list(&self, bucket: &str, prefix: &str, policy: Policy) -> Result<Vec<ObjectInfo>, String> {
        let (mut out, _) = self.list_all(bucket, prefix, None, policy)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn list_prefixes(
        &self,
        bucket: &str,
        prefix: &str,
        policy: Policy,
    ) -> Result<Vec<String>, String> {
        let (_, mut out) = self.list_all(bucket, prefix, Some("/"), policy)?;
        out.sort();
        Ok(out)
    }

    fn get(&self, bucket: &str, key: &str, policy: Policy) -> Result<Option<Vec<u8>>, String> {
        self.rt
            .block_on(retry("s3:GetObject", policy, S3CallError::class, |_| async {
                let resp = match self.client.get_object().bucket(bucket).key(key).send().await {
                    Ok(r) => r,
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                        return Ok(None);
                    }
                    Err(e) => return Err(S3CallError::sdk(format!("get s3://{bucket}/{key}"), &e)),
                };
                // A body cut short (a dropped connection) is transient: the GET is made again.
                let body = resp.body.collect().await.map_err(|e| S3CallError {
                    text: format!("read s3://{bucket}/{key}: {e}"),
                    class: Class::Transient,
                })?;
                Ok(Some(body.into_bytes().to_vec()))
            }))
            .map_err(|e| e.text)
    }

    fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>, policy: Policy) -> Result<(), String> {
        // A PUT of the same bytes is idempotent: one whose answer was lost is simply made again.
        self.rt
            .block_on(retry("s3:PutObject", policy, S3CallError::class, |_| async {
                self.client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(bytes.clone()))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| S3CallError::sdk(format!("put s3://{bucket}/{key}"), &e))
            }))
            .map_err(|e| e.text)
    }

    fn delete(&self, bucket: &str, key: &str, policy: Policy) -> Result<(), String> {
        // S3 answers a DELETE of a missing key with success, so a repeated delete is harmless.
        self.rt
            .block_on(retry("s3:DeleteObject", policy, S3CallError::class, |_| async {
                self.client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| S3CallError::sdk(format!("delete s3://{bucket}/{key}"), &e))
            }))
            .map_err(|e| e.text)
    }
}

/// One page of a listing.
struct ListPage {
    objects: Vec<ObjectInfo>,
    prefixes: Vec<String>,
    next: Option<String>,
}

/// A failed S3 call: its text (operation, bucket and key, the service's code and message) and its
/// retry class.
#[derive(Debug)]
struct S3CallError {
    text: String,
    class: Class,
}

impl S3CallError {
    fn sdk<E>(context: String, e: &SdkError<E, HttpResponse>) -> S3CallError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let class = flowspike_retry::classify(e);
        let mut text = format!("{context}: {}", flowspike_retry::describe(e));
        if class == Class::Fatal {
            if let Some(hint) = e.as_service_error().and_then(|s| s.code()).and_then(fatal_hint) {
                text.push_str(" (");
                text.push_str(hint);
                text.push(')');
            }
        }
        S3CallError { text, class }
    }

    fn class(&self) -> Class {
        self.class
    }
}

impl std::fmt::Display for S3CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What an operator should check for the S3 errors that stop flowspike at once.
fn fatal_hint(code: &str) -> Option<&'static str> {
    match code {
        "NoSuchBucket" => Some("the bucket does not exist: check the s3:// url"),
        "AccessDenied" | "AllAccessDisabled" => Some("check the role's S3 permissions"),
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" => Some("check the AWS credentials"),
        _ => None,
    }
}

/// The history [`Store`] on S3: keys live under `s3://bucket/prefix`. A put is one PutObject, which
/// S3 makes visible atomically.
///
/// Every call is retried under the store's [`Policy`] ([`Policy::Forever`] unless
/// [`S3Store::with_policy`] says otherwise): start-up, warm-up, checkpoints and finalization all
/// read and write through it, so none of them fails on a throttled or dropped request.
pub struct S3Store {
    s3: S3,
    url: S3Url,
    policy: Policy,
}

impl S3Store {
    /// A store rooted at `url` (`s3://bucket/prefix`) that retries retryable errors forever.
    pub fn new(s3: S3, url: S3Url) -> S3Store {
        S3Store { s3, url, policy: Policy::Forever }
    }

    /// The same store with another retry policy (`replay`: a bounded time).
    pub fn with_policy(self, policy: Policy) -> S3Store {
        S3Store { policy, ..self }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.url.prefix, key)
    }
}

impl Store for S3Store {
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.s3
            .put(&self.url.bucket, &self.full(key), bytes, self.policy)
            .map_err(StoreError::Remote)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        match self
            .s3
            .get(&self.url.bucket, &self.full(key), self.policy)
            .map_err(StoreError::Remote)?
        {
            Some(b) => Ok(b),
            None => Err(StoreError::NotFound {
                key: format!("s3://{}/{}", self.url.bucket, self.full(key)),
            }),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let objs = self
            .s3
            .list(&self.url.bucket, &self.full(prefix), self.policy)
            .map_err(StoreError::Remote)?;
        let n = self.url.prefix.len();
        Ok(objs.into_iter().map(|o| o.key[n..].to_string()).collect())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.s3.delete(&self.url.bucket, &self.full(key), self.policy).map_err(StoreError::Remote)
    }
}

/// A flow-log archive on S3, for `flowspike replay s3://bucket/prefix`.
///
/// A throttled or failed LIST or GET is retried for the archive's bounded time
/// ([`DEFAULT_REPLAY_RETRY`] unless [`S3Archive::with_policy`] says otherwise) before the object is
/// called unreadable.
pub struct S3Archive {
    s3: S3,
    bucket: String,
    policy: Policy,
}

impl S3Archive {
    /// An archive in `bucket`; keys passed to [`Archive`] methods are full object keys.
    pub fn new(s3: S3, bucket: impl Into<String>) -> S3Archive {
        S3Archive { s3, bucket: bucket.into(), policy: Policy::For(DEFAULT_REPLAY_RETRY) }
    }

    /// The same archive with another retry policy.
    pub fn with_policy(self, policy: Policy) -> S3Archive {
        S3Archive { policy, ..self }
    }

    /// True when at least one object's key starts with `prefix`.
    pub fn has_objects(&self, prefix: &str) -> Result<bool, AwsError> {
        self.s3.has_objects(&self.bucket, prefix, self.policy)
    }
}

impl Archive for S3Archive {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ArchiveError> {
        self.s3.list(&self.bucket, prefix, self.policy).map_err(ArchiveError::Remote)
    }

    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        self.s3.list_prefixes(&self.bucket, prefix, self.policy).map_err(ArchiveError::Remote)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        match self.s3.get(&self.bucket, key, self.policy).map_err(ArchiveError::Remote)? {
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
