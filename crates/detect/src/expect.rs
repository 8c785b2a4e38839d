//! What a detector expects of a source before it sees an hour: the figures `flowspike explain`
//! and the HTML report draw (the expected count, its band and the alert threshold of every hour).

use crate::{DetectConfig, Mode};

/// The baseline of one source for one hour, as [`crate::Detector::expectation`] gives it before
/// the hour is fed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    /// The mode that computed it.
    pub mode: Mode,
    /// The expected count: the window's mean (window mode), the running average (splunk mode),
    /// the model's mean for that hour of the week (adaptive mode; for a source it has not seen, the
    /// mean of what new sources of the fleet do).
    pub expected: f64,
    /// One standard deviation around it: the baseline's (window and splunk modes), the predictive
    /// distribution's (adaptive mode). The band drawn is `expected ± stdev`.
    pub stdev: f64,
    /// Data points behind it: active hours in the window (window mode), `numDataPoints` (splunk
    /// mode), active hours the model has seen (adaptive mode; 0 for a source it has not seen).
    pub data_points: u64,
    /// The smallest count that would alert in this hour; `None` when no count would (too few
    /// data points, the bootstrap or the warm-up, a source splunk mode has not seen).
    pub alert_at: Option<u64>,
}

impl Expectation {
    /// The band drawn around the expected count: `(max(0, expected - stdev), expected + stdev)`.
    pub fn band(&self) -> (f64, f64) {
        ((self.expected - self.stdev).max(0.0), self.expected + self.stdev)
    }
}

/// The smallest `c >= from` for which `alerts(c)`, for a test that is monotone in the count (false
/// below some count, true from it on); `None` if none up to `u64::MAX / 2`. A doubling search,
/// then a bisection: O(log c) calls.
pub(crate) fn smallest_alerting(from: u64, alerts: impl Fn(u64) -> bool) -> Option<u64> {
    let from = from.max(1);
    if alerts(from) {
        return Some(from);
    }
    // Invariant: !alerts(lo), alerts(hi).
    let (mut lo, mut step) = (from, 1u64);
    let mut hi = loop {
        let h = lo.checked_add(step).filter(|&h| h <= u64::MAX / 2)?;
        if alerts(h) {
            break h;
        }
        lo = h;
        step = step.saturating_mul(2);
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if alerts(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The floor every mode puts under a count: `min_count` (and at least 1: a zero is no data point).
pub(crate) fn count_floor(cfg: &DetectConfig) -> u64 {
    cfg.min_count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_alerting_finds_the_boundary() {
        for t in [1u64, 2, 3, 7, 100, 1 << 40] {
            assert_eq!(smallest_alerting(1, |c| c >= t), Some(t), "threshold {t}");
            assert_eq!(smallest_alerting(5, |c| c >= t), Some(t.max(5)), "threshold {t} from 5");
        }
        assert_eq!(smallest_alerting(1, |_| false), None);
        assert_eq!(smallest_alerting(0, |_| true), Some(1));
    }

    #[test]
    fn band_is_clamped_at_zero() {
        let e = Expectation {
            mode: Mode::Window,
            expected: 2.0,
            stdev: 3.0,
            data_points: 4,
            alert_at: Some(12),
        };
        assert_eq!(e.band(), (0.0, 5.0));
    }
}
