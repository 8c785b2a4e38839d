//! The other detections in lease mode (port scans, sweeps, outbound volume, threat lists): the
//! taps snapshot of a delta read back, the tables and findings of a claimed hour, and the late
//! records of a delta counted. The commit side (one snapshot per delta) is in `Worker::commit`.

use flowspike_detections::{Finding, Taps};
use flowspike_engine::{EngineError, SpikeSink};
use flowspike_history::StoreError;
use flowspike_lease::Delta;

use super::Worker;
use crate::ConsumeError;

impl Worker {
    /// The taps a delta committed (all its hours); empty taps when it names none (detections off,
    /// or a delta of a release without them), `None` when its file is gone (drained by another
    /// worker, like its rows).
    pub(super) fn read_taps(&self, d: &Delta) -> Result<Option<Taps>, ConsumeError> {
        let cfg = &self.cfg.detections;
        let Some(key) = d.taps_file.as_ref().filter(|_| cfg.set.any_tap()) else {
            return Ok(Some(Taps::new(cfg)));
        };
        let bytes = match self.history.store().get(key) {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => {
                tracing::info!(delta = %d.id, "delta already drained by another worker");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Some(Taps::from_snapshot(cfg, &bytes).map_err(EngineError::from)?))
    }

    /// The records the taps of `d` read of `hour` (once per tap that read one: the engine's
    /// count of late records), `None` when the delta is gone.
    pub(super) fn late_taps(&self, d: &Delta, hour: i64) -> Result<Option<u64>, ConsumeError> {
        Ok(self.read_taps(d)?.map(|mut t| t.split_hours(|h| h == hour).records()))
    }

    /// Writes the tables of the claimed `hour` from `taps` (the merged taps of the claim's parts)
    /// as `<table>/…/hr=<hour>/consumer-<stream>.parquet` (a redo overwrites its own file),
    /// evaluates them and emits the findings this worker has not emitted. Nothing when the parts
    /// hold no taps of the hour: the single-task engine writes the tables of its taps' hours only.
    pub(super) fn finish_taps(
        &mut self,
        hour: i64,
        taps: Taps,
        sink: &mut dyn SpikeSink,
    ) -> Result<(), ConsumeError> {
        if !taps.hours().contains(&hour) {
            return Ok(());
        }
        let cfg = self.cfg.detections.clone();
        let out = taps.finish();
        if let Some(t) = out.hours.get(&hour).filter(|t| t.scan_flows_over_cap > 0) {
            tracing::warn!(
                hour,
                records = t.scan_flows_over_cap,
                "port-scan tap over its per-hour cap: the highest sources not judged for scans"
            );
            self.stats.records_over_scan_cap += t.scan_flows_over_cap;
        }
        let store = self.history.store().clone();
        let name = self.final_name();
        out.write_hour_with(&cfg, hour, |t, b| t.put_hour_file(store.as_ref(), hour, b, &name))
            .map_err(EngineError::from)?;
        let found = out
            .evaluate_kept(&cfg, store.as_ref(), &[hour], &mut self.volume)
            .map_err(EngineError::from)?;
        let new: Vec<Finding> =
            found.into_iter().filter(|f| !self.emitted_findings.contains(&f.id)).collect();
        if !new.is_empty() {
            if let Err(e) = sink.emit_findings(&new) {
                // The spikes of the hour went out before: the retry evaluates the hour again and
                // emits only what is new.
                self.forget_detector();
                return Err(e.into());
            }
            for f in &new {
                tracing::info!(hour, detection = %f.detection, src_ip = %f.src_ip, id = %f.id, "finding");
                self.emitted_findings.insert(f.id.clone());
            }
            self.stats.findings_emitted += new.len() as u64;
        }
        tracing::info!(hour, findings = new.len(), "detections tables written");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
