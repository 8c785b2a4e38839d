//! The consumer's error type and its retry classification.

use flowspike_history::{CodecError, HistoryError, StoreError};

/// Errors of the consumer. Bad input is never an error: it is counted, logged and skipped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// A Kinesis call failed.
    #[error("kinesis {op} (stream {stream}{}): {message}", shard.as_deref().map(|s| format!(", shard {s}")).unwrap_or_default())]
    Kinesis {
        /// The API operation (`GetRecords`, `ListShards`, ...).
        op: &'static str,
        /// The stream.
        stream: String,
        /// The shard, when the call was about one.
        shard: Option<String>,
        /// The service's error code and message, or the transport error.
        message: String,
        /// Throttling, expired iterator, timeouts and 5xx: worth retrying with backoff.
        retryable: bool,
    },
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// The aggregate history failed.
    #[error("history: {0}")]
    History(#[from] HistoryError),
    /// A pending file of the checkpoint cannot be encoded or decoded.
    #[error("checkpoint file {key}: {source}")]
    Codec {
        /// The key of the file.
        key: String,
        /// The cause.
        source: CodecError,
    },
    /// The manifest exists but cannot be read, or belongs to another stream.
    #[error("manifest {key}: {reason}")]
    Manifest {
        /// The key of the manifest.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Spike records could not be delivered.
    #[error("spike output: {message}")]
    Output {
        /// What failed.
        message: String,
        /// True for throttling and transient failures.
        retryable: bool,
    },
    /// A configuration error (bad option value, unknown stream); stops the program.
    #[error("configuration: {0}")]
    Config(String),
    /// The lease table (DynamoDB) failed.
    #[error("lease table: {0}")]
    Lease(#[from] flowspike_lease::LeaseError),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl ConsumeError {
    /// True when the same operation may succeed if retried later (throttling, expired iterators,
    /// timeouts, 5xx, local I/O errors of the store); false for configuration errors and bad
    /// state.
    ///
    /// A remote store (S3) error is never retryable here: the S3 store retries every retryable
    /// failure itself (forever in the services, `flowspike-retry`), so one that reaches the
    /// consumer is an access, bucket or validation error, which retrying at every tick would only
    /// hide.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConsumeError::Kinesis { retryable, .. } | ConsumeError::Output { retryable, .. } => {
                *retryable
            }
            ConsumeError::Store(StoreError::Io { .. }) => true,
            ConsumeError::History(HistoryError::Store(StoreError::Io { .. })) => true,
            ConsumeError::Lease(e) => e.is_retryable(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let k = |retryable| ConsumeError::Kinesis {
            op: "GetRecords",
            stream: "s".into(),
            shard: Some("shardId-000000000000".into()),
            message: "x".into(),
            retryable,
        };
        assert!(k(true).is_retryable());
        assert!(!k(false).is_retryable());
        assert!(k(true).to_string().contains("shard shardId-000000000000"));
        assert!(!ConsumeError::Config("bad".into()).is_retryable());
        // The S3 store has retried a retryable error itself; what reaches here stops the consumer.
        assert!(!ConsumeError::Store(StoreError::Remote("access denied".into())).is_retryable());
        assert!(!ConsumeError::Manifest { key: "k".into(), reason: "r".into() }.is_retryable());
    }
}
