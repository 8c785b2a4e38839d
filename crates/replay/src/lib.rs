//! Replay of flow-log archives: discover objects (local or S3), parse and count them in parallel,
//! rewrite the hourly Parquet history for the hours they cover, then evaluate the detection.
//!
//! Data flow: [`discover`] → downloader threads → rayon workers (`flowlog::for_each_record` →
//! `Rule::classify` → per-worker `Counter`) → merged rows → `History::replace_hour` per covered hour →
//! `Detector` over the history → spike records.

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
