//! The closing report of a streaming run, the same for every source.

use crate::Stats;

/// What a streaming run did: the engine's counts and where its event time and checkpoints
/// stopped, plus what only its source counts. Printed as one JSON line when a service stops.
///
/// `S` holds the source's own counts, serialized inline between `stats` and `closed_through`
/// (`#[serde(flatten)]`): `()` for the Kinesis consumer (nothing), the Firehose endpoint's
/// `requests` for it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary<S = ()> {
    /// Counts.
    pub stats: Stats,
    /// The source's own counts (fields inline).
    #[serde(flatten)]
    pub source: S,
    /// Every hour before this one is closed (unix seconds).
    pub closed_through: Option<i64>,
    /// The last committed manifest generation.
    pub generation: u64,
    /// Why the run stopped (the Kinesis consumer: `signal`, `max-runtime`, `idle`); `None`, and
    /// left out of the JSON, for a source that stops only on a signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
}
