//! The consumer's error type and its retry classification.

use flowspike_engine::EngineError;
use flowspike_history::StoreError;

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
    /// The engine failed: state store, history, checkpoint files, manifest or spike output.
    #[error(transparent)]
    Engine(#[from] EngineError),
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

impl From<StoreError> for ConsumeError {
    fn from(e: StoreError) -> ConsumeError {
        ConsumeError::Engine(EngineError::Store(e))
    }
}

impl From<flowspike_history::HistoryError> for ConsumeError {
    fn from(e: flowspike_history::HistoryError) -> ConsumeError {
        ConsumeError::Engine(EngineError::History(e))
    }
}

impl ConsumeError {
    /// True when the same operation may succeed if retried later (throttling, expired iterators,
    /// timeouts, 5xx, local I/O errors of the store); false for configuration errors and bad
    /// state. Engine errors are classified by [`EngineError::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        match self {
            ConsumeError::Kinesis { retryable, .. } => *retryable,
            ConsumeError::Engine(e) => e.is_retryable(),
            ConsumeError::Lease(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// True when the state store or the history failed: the final checkpoint of a stop is then
    /// not attempted (it would fail the same way).
    pub fn is_store_failure(&self) -> bool {
        matches!(self, ConsumeError::Engine(EngineError::Store(_) | EngineError::History(_)))
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
        let remote = ConsumeError::from(StoreError::Remote("access denied".into()));
        assert!(!remote.is_retryable());
        assert!(remote.is_store_failure());
        // An engine error keeps its own message (no extra prefix).
        assert_eq!(remote.to_string(), "state store: access denied");
        let output = EngineError::Output { message: "throttled".into(), retryable: true };
        assert!(ConsumeError::from(output).is_retryable());
    }
}
