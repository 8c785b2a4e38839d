//! The per-worker taps: what every detection reads of each record, in the counting pass.

use std::collections::BTreeMap;

use flowlog::{Action, FlowRecord, LogStatus};
use flowspike_counter::{Hit, HitSink, Rule, TimeBounds};
use flowspike_history::Store;

use crate::volume::{detect_volume, volume_batch, VolumeRow, VolumeTap};
use crate::{Detection, DetectionsConfig, DetectionsError, Finding, VOLUME_TABLE};

/// One worker's aggregates of every detection of a [`DetectionsConfig`] but the blocked spike
/// (which the counter keeps).
#[derive(Debug)]
pub struct Taps {
    /// Whether any tap is on: the one test a record pays when none is.
    on: bool,
    volume: Option<VolumeTap>,
}

impl Taps {
    /// The taps of `cfg`'s detections.
    pub fn new(cfg: &DetectionsConfig) -> Taps {
        let volume = cfg.set.contains(Detection::OutboundVolume).then(VolumeTap::default);
        Taps { on: volume.is_some(), volume }
    }

    /// Reads one record the counting sink accepted. Values that do not parse or are absent
    /// (`-`) leave the record out of the detections that need them; the counting sink has
    /// already counted any bad value.
    #[inline]
    pub fn record(&mut self, rec: &FlowRecord<'_>, rule: &Rule, bounds: TimeBounds) {
        if !self.on {
            return;
        }
        self.tap(rec, rule, bounds);
    }

    fn tap(&mut self, rec: &FlowRecord<'_>, rule: &Rule, bounds: TimeBounds) {
        if rec.log_status() != Ok(Some(LogStatus::Ok)) {
            return;
        }
        let (Ok(Some(src)), Ok(Some(dst))) = (rec.srcaddr(), rec.dstaddr()) else { return };
        let src_in = rule.is_internal(src);
        if !src_in {
            return;
        }
        let dst_in = rule.is_internal(dst);
        let Ok(Some(start)) = rec.start() else { return };
        let Ok(hour) = bounds.hour_of(start) else { return };
        if let Some(v) = &mut self.volume {
            if !dst_in && rec.action() == Ok(Some(Action::Accept)) {
                let bytes = rec.bytes().ok().flatten().unwrap_or(0);
                let packets = rec.packets().ok().flatten().unwrap_or(0);
                v.add(hour, src, bytes, packets);
            }
        }
    }

    /// Adds another worker's aggregates (same configuration).
    pub fn merge(&mut self, other: Taps) {
        merge_opt(&mut self.volume, other.volume, VolumeTap::merge);
        self.on |= other.on;
    }

    /// The aggregates by hour.
    pub fn finish(self) -> TapsOutput {
        let mut out = TapsOutput::default();
        if let Some(v) = self.volume {
            for (hour, rows) in v.finish() {
                out.hours.entry(hour).or_default().volume = rows;
            }
        }
        out
    }
}

/// Merges `b` into `a` with `merge`; takes `b` when `a` has none.
fn merge_opt<T>(a: &mut Option<T>, b: Option<T>, merge: impl FnOnce(&mut T, T)) {
    match (a.as_mut(), b) {
        (Some(x), Some(y)) => merge(x, y),
        (None, Some(y)) => *a = Some(y),
        (_, None) => {}
    }
}

/// A counter with the taps beside it: the [`HitSink`] a counting sink feeds when other
/// detections run (hits go to the counter, every accepted record to the taps).
#[derive(Debug)]
pub struct WithTaps<'a, C> {
    /// The blocked-spike counter.
    pub counter: C,
    /// The other detections' taps.
    pub taps: &'a mut Taps,
}

impl<C: HitSink> HitSink for WithTaps<'_, C> {
    #[inline]
    fn add_hit(&mut self, hit: &Hit<'_>) {
        self.counter.add_hit(hit);
    }

    #[inline]
    fn record(&mut self, rec: &FlowRecord<'_>, rule: &Rule, bounds: TimeBounds) {
        self.taps.record(rec, rule, bounds);
    }
}

/// One hour's rows of every table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HourTables {
    /// Outbound volume per source.
    pub volume: Vec<VolumeRow>,
}

/// What the taps made: every hour with rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TapsOutput {
    /// Rows by hour.
    pub hours: BTreeMap<i64, HourTables>,
}

impl TapsOutput {
    /// Writes the tables of `hour` (empty tables when the hour has no row: it was covered) for
    /// every detection of `cfg` that has a table, each as file `name`, replacing the hour.
    pub fn write_hour(
        &self,
        cfg: &DetectionsConfig,
        store: &dyn Store,
        hour: i64,
        name: &str,
    ) -> Result<(), DetectionsError> {
        let empty = HourTables::default();
        let t = self.hours.get(&hour).unwrap_or(&empty);
        if cfg.set.contains(Detection::OutboundVolume) {
            VOLUME_TABLE
                .replace_hour(store, hour, &volume_batch(&t.volume), name)
                .map_err(|source| DetectionsError::History { table: VOLUME_TABLE.name, source })?;
        }
        Ok(())
    }

    /// The findings of `hours` (the covered hours, every one with its rows in `self`), sorted by
    /// hour, detection, source and id.
    pub fn evaluate(
        &self,
        cfg: &DetectionsConfig,
        store: &dyn Store,
        hours: &[i64],
    ) -> Result<Vec<Finding>, DetectionsError> {
        let mut out = Vec::new();
        if cfg.set.contains(Detection::OutboundVolume) {
            let written: BTreeMap<i64, Vec<VolumeRow>> = hours
                .iter()
                .map(|h| (*h, self.hours.get(h).map(|t| t.volume.clone()).unwrap_or_default()))
                .collect();
            out.extend(detect_volume(&cfg.volume, store, &written)?);
        }
        out.sort_by(|a, b| {
            (a.hour, &a.detection, &a.src_ip, &a.id).cmp(&(b.hour, &b.detection, &b.src_ip, &b.id))
        });
        Ok(out)
    }
}
