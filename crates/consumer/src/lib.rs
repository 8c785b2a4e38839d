//! The Kinesis consumer behind `flowspike consume`: VPC flow logs from a Kinesis Data Stream
//! (usually fed by a CloudWatch Logs subscription filter) to the hourly Parquet history and spike
//! records, in event time, with exactly-once aggregates across crashes.
//!
//! Data flow: one [`kinesis::ShardReader`] task per shard — polling (GetRecords, ≤ 5 calls/s,
//! backoff with jitter, iterator renewal) or enhanced fan-out (SubscribeToShard, resubscribing from
//! the last continuation sequence number) — decodes whole Kinesis records
//! ([`decode::decode_batch`]: `flowlog::for_each_record` with framing auto → `Rule::classify` → a
//! per-batch `Counter`; one batch per GetRecords response or SubscribeToShard event) and sends the
//! batch over a bounded channel to the coordinator ([`run`]), which applies it to the [`Engine`] on
//! one thread.
//!
//! # Resharding
//! Shards are listed at the start and every `relist_interval`; a closed shard's end (no next
//! iterator, `ChildShards`) is recorded in the manifest (`ShardCheckpoint::ended`) by an immediate
//! checkpoint, and only then do its children start (a merge child waits for both parents). A
//! restart never reads a finished shard again. As every batch is applied whole together with its
//! position, nothing is lost or read twice across a split or a merge.
//!
//! # Several tasks (`--lease-table`)
//! With a [`LeaseConfig`], [`run`] runs one [`Worker`] of a group sharing the stream through a
//! DynamoDB lease table (`flowspike-lease`): see `worker.rs` for the protocol (fenced commits of
//! per-worker deltas, hours claimed once and finalized in order) and docs/leases.md.
//!
//! # Observability
//! A [`Metrics`] struct of atomics, shared by the coordinator and the readers and updated once per
//! batch, backs `GET /metrics` (Prometheus text) and `GET /healthz` on a small HTTP server
//! ([`metrics`]); `docs/metrics.md` lists every metric.
//!
//! # Event time
//! A shard's watermark is the largest `start` it has delivered minus the allowed lateness; a shard
//! that is caught up (empty GetRecords at the tip) and has had no record for `idle_shard_after`
//! counts as at least `now - lateness`. Hour `H` closes when the minimum over open shards has
//! passed `H + 1h`: its rows are final, written as `aggregates/date=…/hr=…/consumer-<stream>.parquet`
//! and the detection evaluates it once. Records of a closed hour are late: they go to a correction
//! file `consumer-<stream>-late-<generation>.parquet` of that hour (readers merge an hour's files).
//!
//! # Checkpoints (exactly-once aggregates)
//! Batches are applied whole, so the engine's partial rows and shard positions always match.
//! A checkpoint (every `checkpoint_interval` while something changed, at every hour close, at
//! shutdown) writes, in this order:
//! 1. pending Parquet files OUTSIDE `aggregates/`: `consumer/<stream>/pending/<gen>-open.parquet`
//!    (the open hours' partial rows) and `<gen>-final.parquet` (rows of hours to finalize);
//! 2. `consumer/<stream>/manifest.json` ([`Manifest`]) — the commit point — naming those files, the
//!    shard sequence numbers, the closed hours, the final files to write and the emitted spike ids;
//! 3. the final files (deterministic names, so a redo after a crash overwrites and never adds),
//!    the detection of the closed hours and their spikes (ids not yet emitted);
//! 4. a second manifest without the finished work, then deletion of unnamed pending files.
//!
//! A restart loads the manifest, restores the open rows, redoes step 3 if it was interrupted, and
//! reads each shard AFTER its committed sequence number. A crash at any moment therefore leaves the
//! history as if the records after the last commit had not been read yet: the final aggregates
//! equal those of an uninterrupted run (per hour, summed over the hour's files). Spike output is
//! at-least-once in one narrow window (a crash after PutRecords succeeded and before step 4
//! commits); spike ids are deterministic, so consumers can drop duplicates.

mod decode;
mod engine;
mod error;
pub mod kinesis;
mod leased;
mod manifest;
pub mod metrics;
mod run;
mod shards;
mod worker;

pub use decode::{decode_batch, DecodeContext, RawRecord};
pub use engine::{global_watermark, live_watermark, Batch, Engine, EngineConfig, SpikeSink, Stats};
pub use error::ConsumeError;
pub use leased::LeaseConfig;
pub use manifest::{
    manifest_key, pending_prefix, state_prefix, Finalize, Manifest, ShardCheckpoint,
    MANIFEST_VERSION,
};
pub use metrics::Metrics;
pub use run::{run, shutdown_signal, ConsumerConfig, EfoConfig, Output, RunSummary, StartPosition};
pub use worker::{LeaseChanges, Owned, Worker, WorkerConfig};
