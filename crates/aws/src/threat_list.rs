//! Threat lists kept in S3 (`--threat-list s3://bucket/key`).

use flowspike_threat::{ListSource, ThreatError};

use crate::{Policy, S3Url, DEFAULT_REPLAY_RETRY, S3};

/// A threat list in one S3 object, named after the object's file name without its extension
/// ([`flowspike_threat::list_name`], the rule of local files).
pub struct S3ListSource {
    s3: S3,
    bucket: String,
    key: String,
    name: String,
}

impl S3ListSource {
    /// The list at `url` (`s3://bucket/key`).
    pub fn new(s3: S3, url: &str) -> Result<S3ListSource, crate::AwsError> {
        let u = S3Url::parse(url)?;
        let key = u.prefix.trim_end_matches('/').to_owned();
        if key.is_empty() {
            return Err(crate::AwsError::BadUrl(url.to_owned()));
        }
        let name = flowspike_threat::list_name(key.rsplit('/').next().unwrap_or(&key)).to_owned();
        Ok(S3ListSource { s3, bucket: u.bucket, key, name })
    }

    fn error(&self, message: String) -> ThreatError {
        ThreatError::Source { name: self.name.clone(), message }
    }
}

impl ListSource for S3ListSource {
    fn name(&self) -> &str {
        &self.name
    }

    /// A hash of the content: lists are small, and one GET also tells a list that changed
    /// without changing its size.
    fn fingerprint(&self) -> Result<String, ThreatError> {
        let bytes = self.read()?;
        Ok(format!("{:016x}-{}", flowspike_detect::fnv1a64(&bytes), bytes.len()))
    }

    fn read(&self) -> Result<Vec<u8>, ThreatError> {
        match self.s3.get(&self.bucket, &self.key, Policy::For(DEFAULT_REPLAY_RETRY)) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(self.error(format!("s3://{}/{}: not found", self.bucket, self.key))),
            Err(e) => Err(self.error(e)),
        }
    }
}
