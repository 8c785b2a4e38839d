//! `flowspike explain` and the HTML report: what a person looks at before acting on an alert.
//!
//! Both read the state's Parquet history (`flowspike-history`, on any [`Store`]: a local
//! directory, or S3 through `flowspike-aws`'s store) and replay a detector (`flowspike-detect`) of
//! the mode in force over it, asking before each hour what it expects of the source
//! ([`flowspike_detect::Detector::expectation`]). So the band and the threshold drawn are exactly
//! what each hour was judged against, not a later summary.
//!
//! - [`timeline`]: the pass over the history, [`Series`] of [`HourPoint`]s per [`Subject`].
//! - [`chart`]: a series drawn with plotters' SVG backend.
//! - [`explain`](mod@explain): one source around one hour ([`Explanation`]): text, SVG or an HTML page.
//! - [`records`]: spike records and the other detections' findings read from JSON Lines (files,
//!   or a state's `spikes/` and `findings/`).
//! - [`incidents`]: spike records grouped into [`Incident`]s.
//! - [`finding_incidents`]: the findings of port scans, port sweeps, outbound volume and threat
//!   lists grouped into [`FindingIncident`]s by the same episode rule.
//! - [`report`](mod@report): the static HTML report of the incidents ([`write_report`]): one self-contained
//!   page (inline SVG, inline CSS, no script, no network) plus an explain page per spike incident.
//!
//! What the history holds per (hour, source) — and so what can be shown — is the blocked count,
//! the distinct destinations (the addresses, capped, with an estimate past the cap), the
//! interface ids, bytes and packets. It holds no destination ports and no count per destination:
//! "top destinations" ranks the destinations by the number of alerted hours they appear in.
//!
//! [`Store`]: flowspike_history::Store

pub mod chart;
pub mod explain;
pub mod finding_incidents;
mod findings_html;
mod html;
pub mod incidents;
pub mod png;
pub mod records;
pub mod report;
pub mod timeline;

pub use chart::{render_svg, ChartOptions};
pub use explain::{explain, Explanation, OutputKind};
pub use finding_incidents::{group_findings, FindingIncident};
pub use incidents::{group_incidents, Incident};
pub use records::{
    read_finding_lines, read_spike_lines, read_state_findings, read_state_spikes, FindingFiles,
    RecordFiles, SpikeFiles, FINDINGS_PREFIX, SPIKES_PREFIX,
};
pub use report::{write_report, ReportInput, ReportSummary};
pub use timeline::{run_pass, HourPoint, Pass, Series, Subject};

/// Errors of the report and of explain.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading the history failed.
    #[error(transparent)]
    History(#[from] flowspike_history::HistoryError),
    /// Reading the state's spike records or findings failed.
    #[error("state: {0}")]
    Store(#[from] flowspike_history::StoreError),
    /// Plotting failed.
    #[error("chart: {0}")]
    Chart(String),
    /// Writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The history has no row of the source asked for.
    #[error("no hour of the history has source {0}")]
    UnknownSource(String),
    /// An output name whose extension is none of those supported.
    #[error("{0}: unsupported output (use .svg, .png or .html)")]
    OutputKind(String),
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use flowspike_history::{History, LocalStore};
    use flowspike_model::AggregateRow;

    /// A row of hour index `h` (hours since the epoch).
    pub fn row(h: i64, src: &str, count: u64, dests: &[&str]) -> AggregateRow {
        let mut dest_ips: Vec<String> = dests.iter().map(|d| d.to_string()).collect();
        dest_ips.sort();
        AggregateRow {
            hour: h * 3600,
            src_ip: src.into(),
            blocked_count: count,
            unique_dest_count: dest_ips.len() as u64,
            dest_ips,
            interface_ids: vec![format!("eni-{}", src.replace('.', ""))],
            bytes: count * 60,
            packets: count,
            ..AggregateRow::default()
        }
    }

    /// A history in a temporary directory holding `rows`, one file per hour.
    pub fn history_with(rows: &[AggregateRow]) -> (tempfile::TempDir, History) {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(Arc::new(LocalStore::new(dir.path())));
        let mut by_hour: std::collections::BTreeMap<i64, Vec<AggregateRow>> = Default::default();
        for r in rows {
            by_hour.entry(r.hour).or_default().push(r.clone());
        }
        for (hour, rows) in by_hour {
            history.replace_hour(hour, &rows[..], "test").unwrap();
        }
        (dir, history)
    }
}
