//! Unusual outbound volume (GuardDuty Behavior:EC2/TrafficVolumeUnusual): the bytes an internal
//! source sent in ACCEPTed flows to external destinations in an hour, judged by the blocked
//! spike's own detector ([`flowspike_detect::Detector`], adaptive by default) run on volume
//! instead of counts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ahash::AHashMap;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use flowspike_detect::{DetectConfig, Detector, HourInput, Spike};
use flowspike_history::Store;
use flowspike_model::AggregateRow;
use serde_json::json;

use crate::{finding, Detection, DetectionsError, Finding, VOLUME_TABLE};

mod snapshot;
pub use snapshot::VolumeSnapshot;

/// Settings of the volume detection.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeConfig {
    /// The unit the detector counts in: an hour's bytes are `ceil(bytes / unit_bytes)` units
    /// (the detector's model is one of counts; bytes in units of about a flow's size keep its
    /// overdispersion estimate meaningful).
    pub unit_bytes: u64,
    /// The detector's settings (adaptive by default).
    pub detect: DetectConfig,
}

impl Default for VolumeConfig {
    /// [`DEFAULT_UNIT_BYTES`] and adaptive mode with [`DEFAULT_VOLUME_ALPHA`].
    fn default() -> VolumeConfig {
        VolumeConfig {
            unit_bytes: DEFAULT_UNIT_BYTES,
            detect: DetectConfig { alpha: DEFAULT_VOLUME_ALPHA, ..DetectConfig::default() },
        }
    }
}

/// The default unit of volume: 256 KiB. Chosen on the labelled cases (docs/detections.md): 1 MiB
/// made a quiet host's usual hour 1 unit, so a 10x rise was 1 → 3 and went unseen; 64 KiB
/// let the noise of a few large flows through.
pub const DEFAULT_UNIT_BYTES: u64 = 256 << 10;

/// The volume detector's `alpha`: 1e-7, a thousand times stricter than the blocked spike's,
/// because byte volumes are heavier-tailed than the count model assumes (at 1e-4 it raised
/// ~3 findings per 10,000 source-hours on ordinary traffic of the labelled cases, at 1e-7 ~0.6).
pub const DEFAULT_VOLUME_ALPHA: f64 = 1e-7;

/// One (hour, source) of the volume table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeRow {
    /// Start of the hour, unix seconds.
    pub hour: i64,
    /// The internal source.
    pub src_ip: String,
    /// ACCEPTed flows to external destinations.
    pub flows: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their packets.
    pub packets: u64,
}

/// One worker's running volume aggregates: one small map of sources per hour, the hour being
/// filled found without a lookup (records come mostly in time order, as in the counter), so the
/// map a record updates is one of a few thousand keys that stays in cache rather than one of
/// every (hour, source) of the input.
#[derive(Debug, Clone, Default)]
pub struct VolumeTap {
    hours: BTreeMap<i64, HourSums>,
    /// The hour of `current`.
    current_hour: Option<i64>,
    current: HourSums,
}

/// The sums of one hour: flows, bytes, packets per source.
#[derive(Debug, Clone, Default)]
struct HourSums {
    v4: AHashMap<u32, [u64; 3]>,
    v6: AHashMap<u128, [u64; 3]>,
}

impl HourSums {
    #[inline]
    fn add(&mut self, src: IpAddr, v: [u64; 3]) {
        let e = match src {
            IpAddr::V4(a) => self.v4.entry(u32::from(a)).or_default(),
            IpAddr::V6(a) => self.v6.entry(u128::from(a)).or_default(),
        };
        e[0] += v[0];
        e[1] = e[1].saturating_add(v[1]);
        e[2] = e[2].saturating_add(v[2]);
    }

    fn merge(&mut self, other: HourSums) {
        for (k, v) in other.v4 {
            self.add(IpAddr::V4(k.into()), v);
        }
        for (k, v) in other.v6 {
            self.add(IpAddr::V6(k.into()), v);
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

impl VolumeTap {
    /// Adds one ACCEPTed flow of internal `src` to an external destination.
    #[inline]
    pub fn add(&mut self, hour: i64, src: IpAddr, bytes: u64, packets: u64) {
        if self.current_hour != Some(hour) {
            self.switch_to(hour);
        }
        self.current.add(src, [1, bytes, packets]);
    }

    /// Makes `hour` the current one (the previous current hour goes back to `hours`).
    #[cold]
    fn switch_to(&mut self, hour: i64) {
        let next = self.hours.remove(&hour).unwrap_or_default();
        let prev = std::mem::replace(&mut self.current, next);
        if let Some(h) = self.current_hour.replace(hour) {
            self.hours.insert(h, prev);
        }
    }

    /// Every hour's sums, the current one put back.
    fn into_hours(mut self) -> BTreeMap<i64, HourSums> {
        if let Some(h) = self.current_hour.take() {
            self.hours.insert(h, std::mem::take(&mut self.current));
        }
        self.hours
    }

    /// Adds another worker's aggregates.
    pub fn merge(&mut self, other: VolumeTap) {
        for (hour, sums) in other.into_hours() {
            if self.current_hour == Some(hour) {
                self.current.merge(sums);
            } else {
                match self.hours.entry(hour) {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(sums);
                    }
                    std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(sums),
                }
            }
        }
    }

    /// The rows by hour, each hour's sorted by source address (numerically, IPv4 first).
    pub fn finish(self) -> BTreeMap<i64, Vec<VolumeRow>> {
        use rayon::prelude::*;
        // Hours in parallel: a row's address text is most of the work.
        self.into_hours()
            .into_par_iter()
            .map(|(hour, sums)| {
                let mut v4: Vec<(u32, [u64; 3])> = sums.v4.into_iter().collect();
                v4.sort_unstable_by_key(|(k, _)| *k);
                let mut v6: Vec<(u128, [u64; 3])> = sums.v6.into_iter().collect();
                v6.sort_unstable_by_key(|(k, _)| *k);
                let row = |src: IpAddr, [flows, bytes, packets]: [u64; 3]| VolumeRow {
                    hour,
                    src_ip: flowspike_model::ip_string(src),
                    flows,
                    bytes,
                    packets,
                };
                let rows: Vec<VolumeRow> = v4
                    .into_iter()
                    .map(|(k, v)| row(IpAddr::V4(k.into()), v))
                    .chain(v6.into_iter().map(|(k, v)| row(IpAddr::V6(k.into()), v)))
                    .collect();
                (hour, rows)
            })
            .collect()
    }

    /// (hour, source) keys held.
    pub fn len(&self) -> usize {
        self.hours.values().map(HourSums::len).sum::<usize>() + self.current.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The volume table's schema: `hour` TIMESTAMP(µs, UTC), `src_ip` UTF8, `flows`, `bytes`,
/// `packets` INT64.
pub fn volume_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("hour", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("src_ip", DataType::Utf8, false),
        Field::new("flows", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("packets", DataType::Int64, false),
    ]))
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `rows` as a batch of [`volume_schema`].
pub fn volume_batch(rows: &[VolumeRow]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from(
                rows.iter().map(|r| r.hour.saturating_mul(1_000_000)).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.src_ip.as_str()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| i64_of(r.flows)))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| i64_of(r.bytes)))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| i64_of(r.packets)))),
    ];
    // The columns are built to the schema's types and lengths.
    RecordBatch::try_new(volume_schema(), cols).expect("volume columns match their schema")
}

fn schema_error(message: String) -> DetectionsError {
    DetectionsError::Schema { table: VOLUME_TABLE.name, message }
}

/// The rows of a batch of [`volume_schema`].
pub fn volume_rows(batch: &RecordBatch) -> Result<Vec<VolumeRow>, DetectionsError> {
    let col = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| schema_error(format!("no column {name}")))
    };
    let hour = col("hour")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| schema_error("hour: not a timestamp(µs)".into()))?;
    let src = col("src_ip")?
        .as_string_opt::<i32>()
        .ok_or_else(|| schema_error("src_ip: not utf8".into()))?;
    let ints = |name: &str| -> Result<Vec<u64>, DetectionsError> {
        let a = col(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| schema_error(format!("{name}: not int64")))?;
        Ok(a.values().iter().map(|v| u64::try_from(*v).unwrap_or(0)).collect())
    };
    let (flows, bytes, packets) = (ints("flows")?, ints("bytes")?, ints("packets")?);
    if hour.null_count() + src.null_count() > 0 {
        return Err(schema_error("null hour or src_ip".into()));
    }
    Ok((0..batch.num_rows())
        .map(|i| VolumeRow {
            hour: hour.value(i).div_euclid(1_000_000),
            src_ip: src.value(i).to_owned(),
            flows: flows[i],
            bytes: bytes[i],
            packets: packets[i],
        })
        .collect())
}

/// The detector's row of a volume row: `blocked_count` is the volume in units.
fn as_count_row(r: &VolumeRow, unit: u64) -> AggregateRow {
    AggregateRow {
        hour: r.hour,
        src_ip: r.src_ip.clone(),
        blocked_count: r.bytes.div_ceil(unit.max(1)),
        unique_dest_count: 0,
        dest_ips: Vec::new(),
        interface_ids: Vec::new(),
        bytes: r.bytes,
        packets: r.packets,
        dest_ips_truncated: false,
        dest_hll: None,
    }
}

/// The volume detector of a caller that judges hour after hour (the streaming engine closes one
/// hour at a time): kept warmed between calls of [`detect_volume_kept`], so a call reads only the
/// table's hours the detector has not fed yet. Rebuilt from the table (all of it in adaptive and
/// splunk modes) each time, an hour's close cost grew with the history's length: after a month,
/// some 700 hours of rows read and fed again every hour.
///
/// What a kept detector judges equals what one rebuilt from the table would (the model is
/// updated the same whether an hour is judged or only warmed), as long as the table's earlier
/// hours are not rewritten behind it (a replay of hours the service has already closed: the
/// blocked spike's detector has the same rule, docs/detections.md).
#[derive(Debug, Default)]
pub struct VolumeBaseline {
    detector: Option<Detector>,
}

impl VolumeBaseline {
    /// The last hour the kept detector fed, if it holds one.
    pub fn last_hour(&self) -> Option<i64> {
        self.detector.as_ref().and_then(Detector::last_hour)
    }
}

/// Judges the hours of `written` (every hour's volume rows, just made) against each source's
/// baseline, warmed with the volume table's earlier hours in `store` (all of them in adaptive and
/// splunk modes, the window in window mode). Returns the findings, by hour then source.
pub fn detect_volume(
    cfg: &VolumeConfig,
    store: &dyn Store,
    written: &BTreeMap<i64, &[VolumeRow]>,
) -> Result<Vec<Finding>, DetectionsError> {
    detect_volume_kept(cfg, store, written, &mut VolumeBaseline::default())
}

/// [`detect_volume`] with the detector `kept` from the previous call: when it stopped before the
/// first hour of `written` (and has the same settings), only the table's hours after its last one
/// are read; otherwise (the first call, a redo of hours already fed) it is rebuilt from the
/// table. `kept` holds the detector fed through the last hour of `written` after a call that
/// succeeded.
pub fn detect_volume_kept(
    cfg: &VolumeConfig,
    store: &dyn Store,
    written: &BTreeMap<i64, &[VolumeRow]>,
    kept: &mut VolumeBaseline,
) -> Result<Vec<Finding>, DetectionsError> {
    let (Some(&first), Some(&last)) = (written.keys().next(), written.keys().next_back()) else {
        return Ok(Vec::new());
    };
    let history = |source| DetectionsError::History { table: VOLUME_TABLE.name, source };
    let mut detector = match kept.detector.take() {
        Some(d) if d.config() == &cfg.detect && d.last_hour().is_some_and(|l| l < first) => d,
        _ => Detector::new(cfg.detect.clone()),
    };
    let warm_from = match detector.last_hour() {
        Some(l) => l.saturating_add(1),
        None => cfg.detect.warm_from(first),
    };
    let mut all: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
    for hour in VOLUME_TABLE.hours(store).map_err(history)? {
        if (warm_from..=last).contains(&hour) && !written.contains_key(&hour) {
            let mut rows = Vec::new();
            for b in VOLUME_TABLE.read_hour(store, hour).map_err(history)? {
                rows.extend(volume_rows(&b)?.iter().map(|r| as_count_row(r, cfg.unit_bytes)));
            }
            all.insert(hour, rows);
        }
    }
    for (hour, rows) in written {
        all.insert(*hour, rows.iter().map(|r| as_count_row(r, cfg.unit_bytes)).collect());
    }
    let inputs: Vec<HourInput<'_>> = all
        .iter()
        .map(|(&hour, rows)| HourInput {
            hour,
            rows: rows.as_slice().into(),
            verdicts: hour >= first,
        })
        .collect();
    let spikes = detector.feed_hours(&inputs)?;
    kept.detector = Some(detector);
    let mut out = Vec::new();
    for s in &spikes {
        let rows = &all[&s.hour];
        out.extend(findings_of(cfg, s, rows));
    }
    Ok(out)
}

/// The findings of one volume alert: one per source (a fleet record names several).
fn findings_of(cfg: &VolumeConfig, s: &Spike, rows: &[AggregateRow]) -> Vec<Finding> {
    let unit = cfg.unit_bytes.max(1) as f64;
    let sources: Vec<&str> = if s.src_ips.is_empty() {
        vec![s.src_ip.as_str()]
    } else {
        s.src_ips.iter().map(String::as_str).collect()
    };
    sources
        .into_iter()
        .filter_map(|src| {
            let row = rows.iter().find(|r| r.src_ip == src)?;
            let expected = s.expected.map(|e| e * unit);
            let summary = format!(
                "{src} sent {} to external destinations in ACCEPTed flows, usually {}",
                flowspike_findings::bytes_text(row.bytes as f64),
                expected.map_or_else(|| "unknown".to_owned(), flowspike_findings::bytes_text)
            );
            let evidence = json!({
                "bytes": row.bytes,
                "packets": row.packets,
                "mode": s.mode.as_str(),
                "unit_bytes": cfg.unit_bytes,
                "expected_bytes": expected,
                "baseline_mean_bytes": s.baseline_mean * unit,
                "baseline_stdev_bytes": s.baseline_stdev * unit,
                "p_value": s.p_value,
                "fleet_sources": s.src_ips.len(),
            });
            let d = Detection::OutboundVolume;
            Some(finding(d, s.hour, src, "", summary, (row.bytes, s.threshold * unit), evidence))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_a_batch() {
        let rows = vec![
            VolumeRow { hour: 7200, src_ip: "10.0.0.1".into(), flows: 3, bytes: 5000, packets: 9 },
            VolumeRow { hour: 7200, src_ip: "fd00::1".into(), flows: 1, bytes: 1, packets: 1 },
        ];
        assert_eq!(volume_rows(&volume_batch(&rows)).unwrap(), rows);
    }

    #[test]
    fn tap_sums_per_hour_and_source_and_merges() {
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.0.10".parse().unwrap();
        let mut t1 = VolumeTap::default();
        t1.add(3600, b, 100, 1);
        t1.add(3600, a, 10, 1);
        let mut t2 = VolumeTap::default();
        t2.add(3600, a, 5, 2);
        t2.add(7200, a, 1, 1);
        t1.merge(t2);
        let out = t1.finish();
        let h1: Vec<(&str, u64, u64)> =
            out[&3600].iter().map(|r| (r.src_ip.as_str(), r.flows, r.bytes)).collect();
        // Numeric order: .2 before .10.
        assert_eq!(h1, vec![("10.0.0.2", 2, 15), ("10.0.0.10", 1, 100)]);
        assert_eq!(out[&7200].len(), 1);
    }

    const BASE: i64 = 1_767_225_600;

    /// Two weeks of two steady sources; `10.0.0.1` sends 2 GiB (~45x its usual hour) in one hour.
    fn two_weeks() -> BTreeMap<i64, Vec<VolumeRow>> {
        let mut written = BTreeMap::new();
        for h in 0..24 * 14 {
            let hour = BASE + h * 3600;
            let wobble = ((h * 7919) % 13) as u64;
            let row = |src: &str, mib: u64| VolumeRow {
                hour,
                src_ip: src.into(),
                flows: 100,
                bytes: mib << 20,
                packets: 1000,
            };
            let mut rows = vec![row("10.0.0.1", 40 + wobble), row("10.0.0.2", 60 + wobble)];
            if h == 24 * 13 + 5 {
                rows[0].bytes = 2 << 30;
            }
            written.insert(hour, rows);
        }
        written
    }

    #[test]
    fn a_burst_of_volume_alerts_and_a_steady_source_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = flowspike_history::LocalStore::new(dir.path());
        let cfg = VolumeConfig::default();
        let (written, base) = (two_weeks(), BASE);
        let written =
            written.iter().map(|(h, r): (&i64, &Vec<VolumeRow>)| (*h, r.as_slice())).collect();
        let found = detect_volume(&cfg, &store, &written).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].src_ip, "10.0.0.1");
        assert_eq!(found[0].hour, base + (24 * 13 + 5) * 3600);
        assert_eq!(found[0].count, 2 << 30);
        assert!(found[0].threshold < (2u64 << 30) as f64);
    }

    /// The streaming engine's way: each hour's table file written, then the hour judged with the
    /// detector kept from the previous hour. The findings are those of one run over every hour,
    /// and no earlier hour is read again: each is emptied once judged, which a detector rebuilt
    /// from the table would see (it would then find nothing: the burst would be a new source's
    /// first hour).
    #[test]
    fn a_kept_detector_judges_hour_by_hour_as_one_run_and_reads_no_hour_twice() {
        let cfg = VolumeConfig::default();
        let all = two_weeks();
        let one_run = {
            let dir = tempfile::tempdir().unwrap();
            let store = flowspike_history::LocalStore::new(dir.path());
            let written = all.iter().map(|(h, r)| (*h, r.as_slice())).collect();
            detect_volume(&cfg, &store, &written).unwrap()
        };
        assert_eq!(one_run.len(), 1);
        let run = |keep: bool| {
            let dir = tempfile::tempdir().unwrap();
            let store = flowspike_history::LocalStore::new(dir.path());
            let mut kept = VolumeBaseline::default();
            let mut found = Vec::new();
            for (&hour, rows) in &all {
                VOLUME_TABLE.replace_hour(&store, hour, &volume_batch(rows), "t").unwrap();
                if !keep {
                    kept = VolumeBaseline::default();
                }
                let written = BTreeMap::from([(hour, rows.as_slice())]);
                found.extend(detect_volume_kept(&cfg, &store, &written, &mut kept).unwrap());
                assert_eq!(kept.last_hour(), Some(hour));
                VOLUME_TABLE.replace_hour(&store, hour, &volume_batch(&[]), "t").unwrap();
            }
            found
        };
        assert_eq!(run(true), one_run);
        // Rebuilt at every hour from the emptied table: the burst goes unseen.
        assert_eq!(run(false), Vec::new());
    }
}
