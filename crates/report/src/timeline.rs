//! One pass of a detector over the history: the hourly series of the subjects asked for, each hour
//! with what the detector expected before it saw the hour, and the spikes it raises on the way.

use std::collections::{BTreeMap, BTreeSet};

use flowspike_detect::{DetectConfig, Detector, Expectation, Spike};
use flowspike_history::History;
use flowspike_model::{AggregateRow, HOUR};

use crate::ReportError;

/// What to follow through the pass: one source, or the sources of a fleet incident summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The sources, sorted, at least one.
    pub sources: Vec<String>,
    /// The hours drawn, `from <= h < to` (multiples of an hour); `None`: every hour of the history.
    pub span: Option<(i64, i64)>,
    /// Hours whose rows are kept whole (destinations, interfaces, bytes) besides the hours the
    /// detector alerts one of the sources in.
    pub detail_hours: BTreeSet<i64>,
}

impl Subject {
    /// One source over `span`.
    pub fn source(src_ip: &str, span: Option<(i64, i64)>) -> Subject {
        Subject { sources: vec![src_ip.to_string()], span, detail_hours: BTreeSet::new() }
    }

    /// True when several sources are summed (a fleet incident).
    pub fn is_fleet(&self) -> bool {
        self.sources.len() > 1
    }
}

/// One hour of a [`Series`].
#[derive(Debug, Clone, PartialEq)]
pub struct HourPoint {
    /// Start of the hour, unix seconds.
    pub hour: i64,
    /// Blocked outbound records of the subject's sources in the hour (0 for a quiet hour).
    pub count: u64,
    /// What the detector expected before the hour; `None` before the history's first hour (and,
    /// in adaptive mode, for a source it has not seen while the fleet has no prior). For a fleet
    /// subject the expected counts are summed, the variances too (sources are modelled
    /// independently), and there is no single threshold (`alert_at` is `None`).
    pub expectation: Option<Expectation>,
}

/// A subject's hours through the pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The subject followed.
    pub subject: Subject,
    /// Every hour of its span within the pass, in order (quiet hours included).
    pub points: Vec<HourPoint>,
    /// The records the detector raised in the span that name one of the sources, by hour
    /// (recomputed from the history with the pass's settings).
    pub alerts: Vec<Spike>,
    /// The subject's rows of its alert hours and detail hours (one per source and hour).
    pub rows: BTreeMap<i64, Vec<AggregateRow>>,
}

impl Series {
    /// The point of `hour`, if the span holds it.
    pub fn point(&self, hour: i64) -> Option<&HourPoint> {
        let i = self.points.binary_search_by_key(&hour, |p| p.hour).ok()?;
        self.points.get(i)
    }
}

/// The outcome of [`run_pass`].
#[derive(Debug, Clone)]
pub struct Pass {
    /// One series per subject, in the order asked.
    pub series: Vec<Series>,
    /// Every record the detector raised over the hours it read (all sources).
    pub spikes: Vec<Spike>,
    /// The first and last hour of the history (`None`: the history is empty).
    pub history: Option<(i64, i64)>,
}

/// Runs a fresh detector with `cfg` over the history, every hour with verdicts, and follows
/// `subjects`.
///
/// The hours read are those the subjects' spans need, from where `cfg` must warm a detector
/// (`DetectConfig::warm_from`: the window before the first span in window mode, all history in
/// the others) to the last span's end; every hour of the history when a span is `None`. Before
/// each hour is fed, each subject covering it gets its point ([`Detector::expectation`] of its
/// sources), so the band drawn is exactly what that hour was judged against.
pub fn run_pass(
    history: &History,
    cfg: &DetectConfig,
    subjects: Vec<Subject>,
) -> Result<Pass, ReportError> {
    let all = history.hours()?;
    let (Some(&first), Some(&last)) = (all.first(), all.last()) else {
        let series = subjects.into_iter().map(empty_series).collect();
        return Ok(Pass { series, spikes: Vec::new(), history: None });
    };
    let end = last + HOUR;
    // Spans are clipped to the history: nothing is expected after its last hour.
    let spans: Vec<(i64, i64)> = subjects
        .iter()
        .map(|s| s.span.map_or((first, end), |(f, t)| (f.max(first), t.min(end))))
        .collect();
    let read_to = spans.iter().map(|s| s.1).max().unwrap_or(end);
    let read_from = spans.iter().map(|s| cfg.warm_from(s.0)).min().unwrap_or(first).max(first);
    // Every hour to visit: the history's in range and every hour of every span.
    let mut hours: BTreeSet<i64> =
        all.iter().copied().filter(|h| (read_from..read_to).contains(h)).collect();
    for &(f, t) in &spans {
        hours.extend((f..t).step_by(HOUR as usize));
    }
    let stored: BTreeSet<i64> = all.into_iter().collect();
    let mut series: Vec<Series> = subjects.into_iter().map(empty_series).collect();
    let mut detector = Detector::new(cfg.clone());
    let mut spikes = Vec::new();
    for hour in hours {
        let rows = if stored.contains(&hour) { history.read_hour(hour)? } else { Vec::new() };
        for (s, &(f, t)) in series.iter_mut().zip(&spans) {
            if (f..t).contains(&hour) {
                s.points.push(point(&detector, hour, &s.subject.sources, &rows));
            }
        }
        let found = detector.observe_hour(hour, &rows);
        for (s, &(f, t)) in series.iter_mut().zip(&spans) {
            if !(f..t).contains(&hour) {
                continue;
            }
            let named: Vec<&Spike> =
                found.iter().filter(|sp| names_any(sp, &s.subject.sources)).collect();
            if !named.is_empty() || s.subject.detail_hours.contains(&hour) {
                let kept: Vec<AggregateRow> = rows
                    .iter()
                    .filter(|r| s.subject.sources.contains(&r.src_ip))
                    .cloned()
                    .collect();
                s.rows.insert(hour, kept);
            }
            s.alerts.extend(named.into_iter().cloned());
        }
        spikes.extend(found);
    }
    Ok(Pass { series, spikes, history: Some((first, last)) })
}

fn empty_series(subject: Subject) -> Series {
    Series { subject, points: Vec::new(), alerts: Vec::new(), rows: BTreeMap::new() }
}

/// True when `spike` is about one of `sources` (its source, or a member of its fleet).
pub fn names_any(spike: &Spike, sources: &[String]) -> bool {
    sources.iter().any(|s| *s == spike.src_ip || spike.src_ips.contains(s))
}

/// The point of `sources` in `hour` (rows sorted by source, as the history reads them).
fn point(d: &Detector, hour: i64, sources: &[String], rows: &[AggregateRow]) -> HourPoint {
    let count = sources
        .iter()
        .filter_map(|s| rows.binary_search_by(|r| r.src_ip.as_str().cmp(s)).ok())
        .map(|i| rows[i].blocked_count)
        .fold(0u64, u64::saturating_add);
    let expectation = match sources {
        [one] => d.expectation(hour, one),
        many => {
            let parts: Vec<Expectation> =
                many.iter().filter_map(|s| d.expectation(hour, s)).collect();
            parts.first().map(|e| Expectation {
                mode: e.mode,
                expected: parts.iter().map(|p| p.expected).sum(),
                stdev: parts.iter().map(|p| p.stdev * p.stdev).sum::<f64>().sqrt(),
                data_points: parts.iter().map(|p| p.data_points).sum(),
                alert_at: None,
            })
        }
    };
    HourPoint { hour, count, expectation }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{history_with, row};
    use flowspike_detect::Mode;

    #[test]
    fn series_has_every_hour_with_the_band_it_was_judged_against() {
        // 10 quiet-ish hours of 2-3, a gap of 2 hours with no file at all, then a burst of 50.
        let mut rows: Vec<AggregateRow> =
            (0..10).map(|h| row(h, "10.0.0.1", 2 + (h as u64 % 2), &["198.51.100.1"])).collect();
        rows.push(row(12, "10.0.0.1", 50, &["198.51.100.9", "198.51.100.8"]));
        rows.push(row(12, "10.0.0.2", 1, &["198.51.100.1"]));
        let (_dir, history) = history_with(&rows);
        let cfg = DetectConfig::for_mode(Mode::Window);
        let pass = run_pass(&history, &cfg, vec![Subject::source("10.0.0.1", None)]).unwrap();
        assert_eq!(pass.history, Some((0, 12 * HOUR)));
        let s = &pass.series[0];
        assert_eq!(s.points.len(), 13, "hours 10 and 11 have no file but are drawn");
        assert_eq!((s.points[10].count, s.points[11].count), (0, 0));
        assert_eq!(s.points[0].expectation, None, "nothing fed before the first hour");
        let e = s.points[12].expectation.unwrap();
        assert_eq!((e.expected, e.data_points, e.alert_at), (2.5, 10, Some(5)));
        assert_eq!(s.alerts.len(), 1);
        assert_eq!(s.alerts[0].hour, 12 * HOUR);
        assert_eq!(s.rows[&(12 * HOUR)][0].dest_ips, ["198.51.100.8", "198.51.100.9"]);
        assert_eq!(pass.spikes.len(), 1);
        // A fleet subject sums counts and expectations, and has no single threshold.
        let fleet = Subject {
            sources: vec!["10.0.0.1".into(), "10.0.0.2".into()],
            span: Some((11 * HOUR, 13 * HOUR)),
            detail_hours: BTreeSet::from([11 * HOUR]),
        };
        let pass = run_pass(&history, &cfg, vec![fleet]).unwrap();
        let s = &pass.series[0];
        assert_eq!(s.points.iter().map(|p| p.count).collect::<Vec<_>>(), [0, 51]);
        assert_eq!(s.points[1].expectation.unwrap().alert_at, None);
        assert!(s.rows.contains_key(&(11 * HOUR)) && s.rows.contains_key(&(12 * HOUR)));
    }

    #[test]
    fn an_empty_history_gives_empty_series() {
        let (_dir, history) = history_with(&[]);
        let cfg = DetectConfig::default();
        let pass = run_pass(&history, &cfg, vec![Subject::source("10.0.0.1", None)]).unwrap();
        assert_eq!(pass.history, None);
        assert!(pass.series[0].points.is_empty());
    }
}
