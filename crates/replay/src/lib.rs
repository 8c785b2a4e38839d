//! Replay of flow-log archives: discover objects (local or S3), parse and count them in parallel,
//! rewrite the hourly Parquet history for the hours they cover, then evaluate the detection.
//!
//! Data flow: [`discover`] → fetcher threads → rayon workers (`flowlog::for_each_record`, or
//! `flowlog::for_each_text_block` for large objects cut into blocks → `Rule::classify` → per-worker
//! `ShardedCounter`) → merged shard by shard → `ShardedCounter::into_hour_columns` (`Columns` per
//! hour) → `History::replace_hour` per covered hour on writer threads → `detect_hours` (window
//! mode, alongside the writes) or `Detector` (splunk mode, after them) → spike records.

mod archive;
mod run;
mod stream;

pub use stream::{initial_format, StreamSettings};

pub use archive::{discover, Archive, ArchiveError, LocalArchive, ObjectInfo};
pub use run::{
    is_flow_log_name, replay, Progress, ReplayConfig, ReplayError, ReplayOutcome, ReplaySummary,
    Source, UntouchedHour, SPLUNK_BASELINE_KEY,
};

#[cfg(test)]
mod tests;
