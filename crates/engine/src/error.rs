//! The engine's error type and its retry classification.

use flowspike_history::{CodecError, HistoryError, StoreError};

/// Errors of the engine (state store, history, checkpoint files, manifest, spike output). Bad
/// input is never an error: it is counted, logged and skipped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
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
    /// The other detections' tables or findings failed (a store error of their tables, a
    /// volume detector that refuses its hours, an undecodable taps snapshot).
    #[error("detections: {0}")]
    Detections(#[from] flowspike_detections::DetectionsError),
    /// Spike records could not be delivered.
    #[error("spike output: {message}")]
    Output {
        /// What failed.
        message: String,
        /// True for throttling and transient failures.
        retryable: bool,
    },
}

impl EngineError {
    /// True when the same operation may succeed if retried later (a throttled or failed spike
    /// output, local I/O errors of the store); false for bad state.
    ///
    /// A remote store (S3) error is never retryable here: the S3 store retries every retryable
    /// failure itself (forever in the services, `flowspike-retry`), so one that reaches the
    /// engine is an access, bucket or validation error, which retrying at every tick would only
    /// hide.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Output { retryable, .. } => *retryable,
            EngineError::Store(StoreError::Io { .. }) => true,
            EngineError::History(HistoryError::Store(StoreError::Io { .. })) => true,
            EngineError::Detections(flowspike_detections::DetectionsError::History {
                source: HistoryError::Store(StoreError::Io { .. }),
                ..
            }) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let out = |retryable| EngineError::Output { message: "x".into(), retryable };
        assert!(out(true).is_retryable());
        assert!(!out(false).is_retryable());
        assert!(EngineError::Store(StoreError::Io {
            path: "k".into(),
            source: std::io::Error::other("disk")
        })
        .is_retryable());
        // The S3 store has retried a retryable error itself; what reaches here stops the consumer.
        assert!(!EngineError::Store(StoreError::Remote("access denied".into())).is_retryable());
        assert!(!EngineError::Manifest { key: "k".into(), reason: "r".into() }.is_retryable());
    }
}
