//! The endpoint's error type. Bad requests are never errors: they are answered (4xx) and counted.

use flowspike_engine::EngineError;

/// Errors that stop (or prevent starting) the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    /// The state (engine, checkpoint, store, spike output) failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The listener cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// A bad setting.
    #[error("configuration: {0}")]
    Config(String),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}
