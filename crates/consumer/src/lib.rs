//! The Kinesis consumer behind `flowspike consume`: VPC flow logs from a Kinesis Data Stream
//! (usually fed by a CloudWatch Logs subscription filter) to the hourly Parquet history and spike
//! records, in event time, with exactly-once aggregates across crashes.
//!
//! Data flow: one [`kinesis::ShardReader`] task per shard — polling (GetRecords, ≤ 5 calls/s,
//! backoff with jitter, iterator renewal) or enhanced fan-out (SubscribeToShard, resubscribing from
//! the last continuation sequence number) — decodes whole Kinesis records
//! (`flowspike_engine::decode_batch`: `flowlog::for_each_record` with framing auto →
//! `Rule::classify` → a per-batch `Counter`; one batch per GetRecords response or SubscribeToShard
//! event) and sends the batch over a bounded channel to the coordinator (`coordinator.rs`), which
//! hands it, on one thread, to its mode: the single task (`run.rs`: the `flowspike_engine::Engine`
//! and the shard table, `shards.rs`) or a lease worker (`leased.rs`: the [`Worker`]).
//!
//! Files: `kinesis/` (`list.rs` ListShards, `reader.rs` the reader task, `polling.rs` GetRecords,
//! `efo.rs` SubscribeToShard, `register.rs` the enhanced fan-out consumer), `coordinator.rs` (the
//! loop, the readers, the stop), `run.rs` and `leased.rs` (the two modes), `shards.rs` (which
//! shards may start), `worker.rs` (the lease protocol), `services.rs` (settings and services),
//! `error.rs`.
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
//! # Event time and checkpoints
//! The engine (`flowspike-engine`) owns open hours, watermarks, corrections, checkpoints and the
//! detection; each shard is one of its sources, its position the sequence number of the last
//! applied Kinesis record (`ShardCheckpoint` in the manifest). A restart reads each shard AFTER
//! its committed sequence number. A shard that is caught up (empty GetRecords at the tip) and has
//! had no record for `idle_shard_after` counts as idle for the watermark.
//!
//! # Observability
//! The engine's [`Metrics`], with one entry per shard updated by its reader once per
//! GetRecords call, are served on `--metrics-addr`.

mod coordinator;
mod error;
pub mod kinesis;
mod leased;
mod run;
mod services;
mod shards;
mod worker;

pub use error::ConsumeError;
pub use flowspike_engine::Metrics;
pub use flowspike_engine::RunSummary;
pub use leased::LeaseConfig;
pub use run::run;
pub use services::{ConsumerConfig, EfoConfig, StartPosition};
pub use worker::{LeaseChanges, Owned, Worker, WorkerConfig};
