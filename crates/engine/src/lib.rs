//! The source-independent streaming engine of flowspike: batches of decoded flow records from any
//! source (a Kinesis shard, a Firehose request) become open-hour aggregates, closed hours, late
//! corrections, checkpoints, detections and spike records.
//!
//! A source decodes its raw records with [`decode_batch`] (`flowlog::for_each_record` with framing
//! auto → `Rule::classify` → a per-batch `Counter`) and hands each [`Batch`] to the one owner of
//! the [`Engine`], which applies it on one thread. The Kinesis consumer (`flowspike-consumer`:
//! polling, enhanced fan-out, resharding, leases) and the Firehose endpoint (`flowspike-firehose`)
//! are such sources, side by side on top of this crate.
//!
//! # Event time
//! A source's watermark is the largest `start` it has delivered minus the allowed lateness; a
//! source that is caught up and has had no record for a while counts as at least `now - lateness`
//! ([`global_watermark`]; [`live_watermark`] also never passes the wall clock minus the lateness).
//! Hour `H` closes when the minimum over the sources has passed `H + 1h`: its rows are final,
//! written as `aggregates/date=…/hr=…/consumer-<stream>.parquet` and the detection evaluates it
//! once. Records of a closed hour are late: they go to a correction file
//! `consumer-<stream>-late-<generation>.parquet` of that hour (readers merge an hour's files).
//!
//! # Checkpoints (exactly-once aggregates)
//! Batches are applied whole, so the engine's partial rows and source positions always match.
//! A checkpoint writes, in this order:
//! 1. pending Parquet files OUTSIDE `aggregates/`: `consumer/<stream>/pending/<gen>-open.parquet`
//!    (the open hours' partial rows) and `<gen>-final.parquet` (rows of hours to finalize), and,
//!    when detections beside the blocked spike run, `<gen>-taps.bin` (their taps: the open hours'
//!    and those of the hours closing; `flowspike_detections::Taps::to_snapshot`);
//! 2. `consumer/<stream>/manifest.json` ([`Manifest`]) — the commit point — naming those files, the
//!    source positions (shard sequence numbers, push request ids), the closed hours, the final
//!    files to write, the hours whose detection tables to write and the emitted spike and
//!    finding ids;
//! 3. the final files (deterministic names, so a redo after a crash overwrites and never adds),
//!    the detection of the closed hours and their spikes (ids not yet emitted), then the other
//!    detections' tables of those hours (`<table>/date=…/hr=…/consumer-<stream>.parquet`, beside
//!    the hour's other files) and their findings (ids not yet emitted, [`SpikeSink::emit_findings`]);
//! 4. a second manifest without the finished work, then deletion of unnamed pending files.
//!
//! A restart loads the manifest, restores the open rows, redoes step 3 if it was interrupted, and
//! each source resumes AFTER its committed position (the taps too: the open hours' are restored,
//! the closed and finalized ones dropped; a manifest naming no taps file opens with empty taps). A crash at any moment therefore leaves the
//! history as if the records after the last commit had not been read yet: the final aggregates
//! equal those of an uninterrupted run (per hour, summed over the hour's files). Spike output is
//! at-least-once in one narrow window (a crash after the output succeeded and before step 4
//! commits); spike ids are deterministic, so consumers can drop duplicates. The same holds for the
//! other detections' findings. Their late records (of hours already closed) are counted
//! (`Stats::detections_late_records`), not applied: a closed hour's tables and findings are final.
//!
//! # Observability
//! A [`Metrics`] struct of atomics, shared by the engine's owner and the sources and updated once
//! per batch, backs `GET /metrics` (Prometheus text) and `GET /healthz` ([`metrics`]);
//! `docs/metrics.md` lists every metric.

mod decode;
mod early;
mod engine;
mod error;
mod manifest;
pub mod metrics;
mod output;
mod signal;
mod summary;

pub use decode::{decode_batch, decode_batch_at, RawRecord};
pub use early::OpenHourJudge;
pub use engine::{
    global_watermark, live_watermark, new_spikes, now_secs, put_rows, read_rows, warm_detector,
    Batch, Engine, EngineConfig, SpikeSink, Stats,
};
pub use error::EngineError;
/// The other detections' settings, re-exported for the sources (their configs carry one).
pub use flowspike_detections::DetectionsConfig;
pub use manifest::{
    manifest_key, pending_prefix, state_prefix, Finalize, Manifest, ShardCheckpoint,
    MANIFEST_VERSION,
};
pub use metrics::Metrics;
pub use output::{FanOut, Output, WriterSink};
pub use signal::shutdown_signal;
pub use summary::RunSummary;
