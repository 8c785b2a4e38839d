//! The Amazon Data Firehose HTTP endpoint behind `flowspike serve-firehose`: flow logs pushed by
//! Firehose ("HTTP endpoint delivery", protocol 1.0) to the same hourly Parquet history, event-time
//! hour closing, detection and spike output as the Kinesis consumer (`flowspike-consumer`): both are
//! sources of the streaming engine (`flowspike-engine`), whose
//! [`Engine`](flowspike_engine::Engine), [`decode_batch`](flowspike_engine::decode_batch),
//! [`Metrics`](flowspike_engine::Metrics) and spike sinks it drives.
//!
//! # Data flow
//! axum (on hyper, plain HTTP/1.1 or rustls TLS) → handler ([`server`]): access key in constant time
//! (401), headers (400/415), body limit (413, also after gunzip), JSON and base64 (400), then
//! `decode_batch` on a blocking thread (framing auto: CloudWatch Logs envelopes, `{"message"}`
//! records, plain lines) → a [`Batch`](flowspike_engine::Batch) of the virtual shard
//! [`VIRTUAL_SHARD`] → bounded channel → the coordinator ([`commit`]), the one owner of the
//! `Engine`.
//!
//! # Durable before 200, group commit
//! The coordinator takes every request waiting in the channel (up to [`MAX_GROUP`]), applies each
//! unless its request id was applied before (the source's position, kept by the engine with
//! [`Engine::apply_positioned`](flowspike_engine::Engine::apply_positioned)), advances event time, then commits ONE checkpoint for the whole group
//! (pending Parquet + manifest, the consumer's exactly-once protocol) and only then answers every
//! request of the group: 200 after a successful commit, 503 (Firehose retries) when it failed.
//! While a checkpoint is being written, new requests queue up and form the next group, so under
//! load the number of manifest writes per second stays bounded by the store's latency, not by the
//! request rate; an idle endpoint answers after one checkpoint (a few ms on a local disk, one or
//! two S3 PUTs on S3).
//!
//! # Request-id dedup
//! The Firehose source's position is the set of ids of the requests applied in the last
//! [`FirehoseConfig::dedup_window`]: the engine keeps it as its source positions (`requests` in the
//! manifest), committed atomically with their records. A retry (same `X-Amz-Firehose-Request-Id`) of a committed request, also after a crash and restart, is
//! answered 200 without being counted again; a retry of a request that was applied but whose
//! checkpoint failed waits for the next successful checkpoint. A request applied but not committed
//! before a crash is in neither the manifest nor the history, so its retry is applied once.

pub mod commit;
mod error;
pub mod protocol;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flowspike_counter::Pipeline;
use flowspike_engine::{DetectionsConfig, Output};

pub use commit::{FirehoseCounts, RequestCounts, RequestStats, RunSummary, MAX_GROUP};
pub use error::FirehoseError;
pub use protocol::{DEFAULT_MAX_RECORDS, MAX_REQUEST_ID_BYTES};
pub use server::{run, Server, StopHandle};

/// The name of the one virtual shard whose position (the last applied request id) and event time
/// the manifest keeps.
pub const VIRTUAL_SHARD: &str = "firehose";
/// Default body limit (uncompressed, and again after gunzip): 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default cap on open connections (`--max-connections`): each costs at most about 140 KiB of
/// memory while its request head arrives (a 64 KiB read buffer and the connection's state;
/// measured in docs/limits.md), so the default bounds slow or idle clients to ~35 MiB; a load
/// balancer or Firehose needs far fewer connections than that.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default dedup window: Firehose retries an HTTP endpoint for at most 7,200 s (the largest
/// configurable retry duration); one more hour of margin.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(3 * 3600);

/// PEM files for TLS on the listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (leaf first).
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Settings of the endpoint.
#[derive(Debug, Clone)]
pub struct FirehoseConfig {
    /// Source name: the state lives under `consumer/<name>/`, final files are
    /// `consumer-<name>.parquet` (use a name no Kinesis consumer on the same state uses).
    pub name: String,
    /// Where to listen (port 0: any free port; see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Accepted `X-Amz-Firehose-Access-Key` values; empty: every request is accepted.
    pub access_keys: Vec<String>,
    /// Largest body, compressed and again after gunzip.
    pub max_body_bytes: usize,
    /// Most records in one request (413 past it).
    pub max_records_per_request: usize,
    /// Most connections open at once; further ones are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A request (reading, decoding, waiting for its checkpoint) taking longer gets 503.
    pub request_timeout: Duration,
    /// Requests whose bodies are read and decoded at once (bounds memory: each may hold up to
    /// twice `max_body_bytes`, or `max_body_bytes` and one record inflated up to
    /// `pipeline.decode.max_decompressed_bytes`); further requests wait. A request that timed out keeps
    /// its place until its decoding ends.
    pub max_concurrent_requests: usize,
    /// TLS on the listener; `None`: plain HTTP (TLS terminated by a load balancer).
    pub tls: Option<TlsFiles>,
    /// Allowed lateness of event time (seconds).
    pub allowed_lateness_secs: u64,
    /// With no records for this long the event time follows the wall clock (`now - lateness`), so
    /// a quiet endpoint still closes hours (only once records were seen).
    pub idle_after: Duration,
    /// How long applied request ids are remembered (longer than Firehose's retry duration).
    pub dedup_window: Duration,
    /// Decoding (framing, format, per-record inflate limit), rule, counter and detection
    /// settings (the rule's event times are checked against the wall clock at each request).
    pub pipeline: Pipeline,
    /// The detections beside the blocked spike: each request's taps, finalized by the engine
    /// with the hours ([`DetectionsConfig::none`] by default; the binary's default is all).
    pub detections: DetectionsConfig,
    /// Where spikes go and in what format (the stream or standard output, Security Hub,
    /// EventBridge).
    pub output: Output,
    /// Where `GET /healthz` and `GET /metrics` are served (port 0: any free port); `None`: only
    /// `GET /healthz` on the main listener.
    pub metrics_addr: Option<SocketAddr>,
}

impl FirehoseConfig {
    /// Settings with the defaults of `flowspike serve-firehose` and no access key.
    pub fn new(name: impl Into<String>, listen: SocketAddr) -> FirehoseConfig {
        FirehoseConfig {
            name: name.into(),
            listen,
            access_keys: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_records_per_request: DEFAULT_MAX_RECORDS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout: Duration::from_secs(120),
            max_concurrent_requests: 8,
            tls: None,
            allowed_lateness_secs: 900,
            idle_after: Duration::from_secs(60),
            dedup_window: DEFAULT_DEDUP_WINDOW,
            pipeline: Pipeline::default(),
            detections: DetectionsConfig::none(),
            output: Output::default(),
            metrics_addr: None,
        }
    }
}
