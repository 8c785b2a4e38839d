//! The detections that run beside the blocked-outbound spike, in the same pass over the records:
//! vertical port scans, horizontal port scans (port sweeps), unusual outbound volume and threat
//! lists (docs/detections.md).
//!
//! Each detection reads what it needs of every record through a [`Taps`] (one per worker: the
//! counting sink hands it every record it accepted, [`flowspike_counter::HitSink::record`]), keeps
//! hourly aggregates of its own, written as a Parquet table of its own next to the history's
//! `aggregates/` ([`TableSet`]), and turns an hour's aggregates into [`Finding`]s. Which run is a
//! [`DetectionSet`] (`--detections`).

#[cfg(feature = "fixtures")]
pub mod fixtures;
mod scans;
mod set;
mod tap;
mod threats;
mod volume;

pub use flowspike_findings::{finding_id, Finding};
pub use flowspike_scan::{HorizontalRow, VerticalRow};
pub use set::{Detection, DetectionSet, UnknownDetection};
pub use tap::{HourTables, Taps, TapsOutput, WithTaps, TAPS_SNAPSHOT_VERSION};
pub use volume::{
    detect_volume, detect_volume_kept, volume_batch, volume_rows, volume_schema, VolumeBaseline,
    VolumeConfig, VolumeRow, VolumeSnapshot, VolumeTap, DEFAULT_UNIT_BYTES, DEFAULT_VOLUME_ALPHA,
};

use std::sync::Arc;

use flowspike_history::{HistoryError, Table};
use flowspike_scan::ScanConfig;
use flowspike_threat::{Reloader, ThreatConfig, ThreatLists};

/// The table of the outbound volume aggregates.
pub const VOLUME_TABLE: Table = Table { name: "outbound_volume" };
/// The table of the vertical port scans (candidates and alerts).
pub const PORT_SCAN_TABLE: Table = Table { name: "port_scans" };
/// The table of the port sweeps (candidates and alerts).
pub const PORT_SWEEP_TABLE: Table = Table { name: "port_sweeps" };
/// The table of the threat-list matches.
pub const THREAT_TABLE: Table = Table { name: "threat_matches" };

/// The settings of the detections other than the blocked-outbound spike.
#[derive(Debug, Clone, Default)]
pub struct DetectionsConfig {
    /// Which detections run.
    pub set: DetectionSet,
    /// Port scans and sweeps: thresholds, what the tables keep, memory bounds.
    pub scan: ScanConfig,
    /// Unusual outbound volume.
    pub volume: VolumeConfig,
    /// The threat lists (`--threat-list`); the threat-list detection runs only with lists.
    pub threat_lists: Option<Arc<ThreatLists>>,
    /// Where the lists come from when they may change while a service runs: each new [`Taps`]
    /// then matches against the lists in force ([`DetectionsConfig::lists_now`]), so a reload
    /// (`Reloader::reload_if_changed`, on the services' timer) reaches the next batch.
    pub threat_reloader: Option<Arc<Reloader>>,
    /// Caps of the threat-match rows.
    pub threat: ThreatConfig,
}

/// A finding of `d` about `src_ip` in `hour`, its id made of `subject` (the destination scanned,
/// the port swept, the list), `judged` its (count, threshold); no destination, port, protocol or
/// list yet.
pub(crate) fn finding(
    d: Detection,
    hour: i64,
    src_ip: &str,
    subject: &str,
    summary: String,
    judged: (u64, f64),
    evidence: serde_json::Value,
) -> Finding {
    Finding::new(d.record_name(), hour, src_ip, subject, summary, judged, evidence)
}

impl DetectionsConfig {
    /// No detection but the blocked spike (no taps).
    pub fn none() -> DetectionsConfig {
        DetectionsConfig { set: DetectionSet::blocked_spike_only(), ..Default::default() }
    }

    /// The threat lists in force: the reloader's current ones when there is a reloader, else
    /// `threat_lists`.
    pub fn lists_now(&self) -> Option<Arc<ThreatLists>> {
        match &self.threat_reloader {
            Some(r) => Some(r.current()),
            None => self.threat_lists.clone(),
        }
    }
}

/// Errors of the detections.
#[derive(Debug, thiserror::Error)]
pub enum DetectionsError {
    /// Reading or writing a table failed.
    #[error("{table}: {source}")]
    History {
        /// The table.
        table: &'static str,
        /// The cause.
        source: HistoryError,
    },
    /// A table file does not have the expected columns.
    #[error("{table}: {message}")]
    Schema {
        /// The table.
        table: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint's taps snapshot does not decode.
    #[error("taps snapshot: {0}")]
    Snapshot(String),
    /// The volume detector failed.
    #[error("outbound volume detection: {0}")]
    Detect(#[from] flowspike_detect::DetectError),
}
