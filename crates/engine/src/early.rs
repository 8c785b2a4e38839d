//! Early alerts of an open hour (adaptive mode), shared by the engine and the lease worker of the
//! Kinesis consumer: which sources a batch moved past their threshold, judged with
//! [`Detector::evaluate_open`].

use std::collections::HashMap;

use flowspike_counter::AggregateRow;
use flowspike_detect::{Detector, Spike};

/// The thresholds of one open hour, cached per source ([`Detector::threshold`]; `None`: no count
/// alerts). They change only when the detector is fed an hour, which also changes the hour judged
/// early, so the cache is kept until the hour changes.
#[derive(Debug, Default)]
pub struct OpenHourJudge {
    thresholds: Option<(i64, HashMap<String, Option<u64>>)>,
}

impl OpenHourJudge {
    /// The early alerts of the sources `touched` of the open `hour`: each source whose running
    /// count (`row(src)`, the hour's rows so far) reached its threshold is evaluated with
    /// [`Detector::evaluate_open`], sorted by source. The detector must have been fed every hour
    /// before `hour` that its close will have seen.
    pub fn judge(
        &mut self,
        detector: &Detector,
        hour: i64,
        touched: impl IntoIterator<Item = String>,
        row: impl Fn(&str) -> Option<AggregateRow>,
    ) -> Vec<Spike> {
        if self.thresholds.as_ref().is_none_or(|(h, _)| *h != hour) {
            self.thresholds = Some((hour, HashMap::new()));
        }
        let Some((_, cache)) = self.thresholds.as_mut() else { return Vec::new() };
        let mut rows = Vec::new();
        for src in touched {
            let t = *cache.entry(src.clone()).or_insert_with(|| detector.threshold(hour, &src));
            let Some(t) = t else { continue };
            match row(&src) {
                Some(row) if row.blocked_count >= t => rows.push(row),
                _ => {}
            }
        }
        if rows.is_empty() {
            return Vec::new();
        }
        rows.sort_by(|a, b| a.src_ip.cmp(&b.src_ip));
        detector.evaluate_open(hour, &rows)
    }
}
