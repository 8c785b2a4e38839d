//! Naive reference implementations, written for obviousness, not speed: the fast [`crate::Detector`]
//! is property-tested against them.
//!
//! - [`window`] recomputes every window from scratch with a two-pass mean and variance: O(points²).
//! - [`splunk`] replays ESCU literally, hour by hour, on a lookup table of nullable fields, with
//!   SPL's null propagation (`eval` of a null is null, `coalesce`, `if(isnull(..))`).

use std::collections::BTreeMap;

use flowspike_model::AggregateRow;

use crate::{group_hour, stats_two_pass, Baseline, DetectConfig, Mode, Spike};

/// Window mode, naively: for each active (hour, source), the prior points are collected by a scan.
pub fn window(cfg: &DetectConfig, rows: &[AggregateRow]) -> Vec<Spike> {
    let by_hour = by_hour(rows);
    // Every data point of every source: (hour, count).
    let mut points: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for (&hour, rows) in &by_hour {
        for o in group_hour(rows) {
            points.entry(o.src.to_string()).or_default().push((hour, o.count));
        }
    }
    let w = i64::from(cfg.window_hours) * 3600;
    let mut out = Vec::new();
    for (&hour, rows) in &by_hour {
        for o in group_hour(rows) {
            let prior: Vec<u64> = points[o.src]
                .iter()
                .filter(|(h, _)| hour.saturating_sub(w) <= *h && *h < hour)
                .map(|p| p.1)
                .collect();
            let (mean, stdev) = stats_two_pass(prior.iter().copied());
            let threshold = mean + cfg.deviations * stdev;
            let n = prior.len() as u64;
            if n >= cfg.min_points && o.count >= cfg.min_count && (o.count as f64) > threshold {
                out.push(o.spike(Mode::Window, hour, Baseline { mean, stdev, n }, threshold));
            }
        }
    }
    out
}

/// A row of ESCU's lookup `baseline_blocked_outbound_connections`; every field may be null.
#[derive(Debug, Clone, Default)]
struct LookupRow {
    num_data_points: Option<f64>,
    avg: Option<f64>,
    stdev: Option<f64>,
}

/// Splunk mode, replayed literally: the support search over the first `window_hours` hours, then
/// ESCU's search once per hour that has rows.
pub fn splunk(cfg: &DetectConfig, rows: &[AggregateRow]) -> Vec<Spike> {
    let by_hour = by_hour(rows);
    let Some(&first) = by_hour.keys().next() else { return Vec::new() };
    let boundary = first + i64::from(cfg.window_hours) * 3600;

    // Support search: bucket _time span=1h | stats count by _time, src_ip
    // | stats count, avg, stdev by src_ip | outputlookup.
    let mut hist: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, rows) in by_hour.range(..boundary) {
        for o in group_hour(rows) {
            hist.entry(o.src.to_string()).or_default().push(o.count);
        }
    }
    let mut lookup: BTreeMap<String, LookupRow> = hist
        .into_iter()
        .map(|(src, counts)| {
            let (avg, stdev) = stats_two_pass(counts.iter().copied());
            let row = LookupRow {
                num_data_points: Some(counts.len() as f64),
                avg: Some(avg),
                stdev: Some(stdev),
            };
            (src, row)
        })
        .collect();

    let big_n = f64::from(cfg.window_hours);
    let mut out = Vec::new();
    for (&hour, rows) in by_hour.range(boundary..) {
        // stats count as numberOfBlockedConnections by src_ip
        let counts: BTreeMap<&str, u64> =
            group_hour(rows).iter().map(|o| (o.src, o.count)).collect();
        // inputlookup append=t | fields - latestCount | stats values(*) as * by src_ip
        // | rename numberOfBlockedConnections as latestCount
        let mut keys: Vec<String> = lookup.keys().cloned().collect();
        keys.extend(counts.keys().map(|s| s.to_string()));
        keys.sort();
        keys.dedup();
        let mut verdicts: Vec<(String, Baseline, f64)> = Vec::new();
        for src in keys {
            let latest: Option<f64> = counts.get(src.as_str()).map(|&c| c as f64);
            let row = lookup.get(&src).cloned().unwrap_or_default();
            // eval newAvg = avg + (latest - avg)/720 (null if any operand is null)
            let new_avg = match (row.avg, latest) {
                (Some(a), Some(l)) => Some(a + (l - a) / big_n),
                _ => None,
            };
            // eval newStdev = sqrt((pow(stdev,2)*719 + (latest-newAvg)*(latest-avg))/720)
            let new_stdev = match (row.stdev, latest, new_avg, row.avg) {
                (Some(s), Some(l), Some(na), Some(a)) => {
                    Some(((s.powi(2) * (big_n - 1.0) + (l - na) * (l - a)) / big_n).max(0.0).sqrt())
                }
                _ => None,
            };
            // eval avg=coalesce(newAvg, avg), stdev=coalesce(newStdev, stdev),
            //      numDataPoints=if(isnull(latestCount), numDataPoints, numDataPoints+1)
            let mut next = LookupRow {
                avg: new_avg.or(row.avg),
                stdev: new_stdev.or(row.stdev),
                num_data_points: if latest.is_none() {
                    row.num_data_points
                } else {
                    row.num_data_points.map(|n| n + 1.0)
                },
            };
            // Our fix (not in ESCU): a source unknown to the lookup starts its baseline now.
            let mut is_new = false;
            if let (None, Some(l)) = (row.avg, latest) {
                next = LookupRow { num_data_points: Some(1.0), avg: Some(l), stdev: Some(0.0) };
                is_new = true;
            }
            // eval isSpike=if(latestCount > avg + 3*stdev AND numDataPoints > 5, 1, 0)
            if let (false, Some(l), Some(n), Some(a), Some(s)) =
                (is_new, latest, next.num_data_points, next.avg, next.stdev)
            {
                let threshold = a + cfg.deviations * s;
                if l > threshold && n > cfg.min_points as f64 && l >= cfg.min_count as f64 {
                    verdicts.push((
                        src.clone(),
                        Baseline { mean: a, stdev: s, n: n as u64 },
                        threshold,
                    ));
                }
            }
            lookup.insert(src, next);
        }
        let obs = group_hour(rows);
        for (src, b, threshold) in verdicts {
            if let Some(o) = obs.iter().find(|o| o.src == src) {
                out.push(o.spike(Mode::Splunk, hour, b, threshold));
            }
        }
    }
    out
}

fn by_hour(rows: &[AggregateRow]) -> BTreeMap<i64, Vec<AggregateRow>> {
    let mut m: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
    for r in rows {
        m.entry(r.hour).or_default().push(r.clone());
    }
    m
}
