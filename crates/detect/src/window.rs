//! Window mode: exact mean and sample stdev of the prior points within `window_hours`.

use std::collections::VecDeque;

use ahash::AHashMap;

use serde::{Deserialize, Serialize};

use crate::expect::{count_floor, Expectation};
use crate::{
    stats_from_sums, stats_two_pass, Baseline, DetectConfig, DetectError, Mode, Obs, Spike,
};

/// The points of one source inside the window.
#[derive(Debug, Clone, Default)]
struct SourceWindow {
    /// `(hour, count)`, hours increasing, counts > 0.
    points: VecDeque<(i64, u64)>,
    /// Σ count, exact.
    sum: u128,
    /// Σ count², exact (saturating; a saturated sum sends [`SourceWindow::baseline`] to two-pass).
    sum_sq: u128,
}

impl SourceWindow {
    fn push(&mut self, hour: i64, c: u64) {
        self.points.push_back((hour, c));
        self.sum += u128::from(c);
        self.sum_sq = self.sum_sq.saturating_add(u128::from(c) * u128::from(c));
    }

    /// Drops the points before `from` (exclusive lower bound of the window is `from - 1`).
    fn evict_before(&mut self, from: i64) {
        while let Some(&(h, c)) = self.points.front() {
            if h >= from {
                break;
            }
            self.points.pop_front();
            self.sum -= u128::from(c);
            if self.sum_sq != u128::MAX {
                self.sum_sq -= u128::from(c) * u128::from(c);
            }
        }
        if self.points.is_empty() {
            // Resets a saturated sum once nothing remains.
            self.sum = 0;
            self.sum_sq = 0;
        }
    }

    fn baseline(&self) -> Baseline {
        Self::baseline_of(&self.points, self.sum, self.sum_sq)
    }

    /// The baseline of `points` whose exact sums are `sum` and `sum_sq` (saturated: two-pass).
    fn baseline_of(points: &VecDeque<(i64, u64)>, sum: u128, sum_sq: u128) -> Baseline {
        let n = points.len() as u64;
        let exact = if sum_sq == u128::MAX { None } else { stats_from_sums(n, sum, sum_sq) };
        let (mean, stdev) = exact.unwrap_or_else(|| stats_two_pass(points.iter().map(|p| p.1)));
        Baseline { mean, stdev, n }
    }
}

/// The threshold of window mode over baseline `b`: `mean + deviations * stdev`.
fn threshold(cfg: &DetectConfig, b: Baseline) -> f64 {
    b.mean + cfg.deviations * b.stdev
}

/// Window mode's test: enough points, at least `min_count`, strictly above the threshold.
fn alerts(cfg: &DetectConfig, b: Baseline, c: u64) -> bool {
    b.n >= cfg.min_points && c >= cfg.min_count && c as f64 > threshold(cfg, b)
}

/// Streaming window detector.
#[derive(Debug, Clone, Default)]
pub(crate) struct WindowDetector {
    sources: AHashMap<String, SourceWindow>,
    pub(crate) last_hour: Option<i64>,
    last_sweep: Option<i64>,
}

impl WindowDetector {
    pub(crate) fn feed(
        &mut self,
        cfg: &DetectConfig,
        hour: i64,
        obs: &[Obs<'_>],
        verdicts: bool,
    ) -> Vec<Spike> {
        let from = hour.saturating_sub(cfg.window_secs());
        let mut spikes = Vec::new();
        for o in obs {
            let w = match self.sources.get_mut(o.src) {
                Some(w) => w,
                None => self.sources.entry(o.src.to_string()).or_default(),
            };
            w.evict_before(from);
            if verdicts {
                let b = w.baseline();
                if alerts(cfg, b, o.count) {
                    spikes.push(o.spike(Mode::Window, hour, b, threshold(cfg, b)));
                }
            }
            w.push(hour, o.count);
        }
        self.last_hour = Some(hour);
        // Drop sources silent for a whole window, at most once per window: amortised O(1).
        match self.last_sweep {
            Some(s) if hour.saturating_sub(s) < cfg.window_secs() => {}
            _ => {
                self.sources.retain(|_, w| w.points.back().is_some_and(|p| p.0 >= from));
                self.last_sweep = Some(hour);
            }
        }
        spikes
    }

    /// What `src` is compared with in `hour` (after the last hour fed): the points of its window.
    pub(crate) fn expectation(&self, cfg: &DetectConfig, hour: i64, src: &str) -> Expectation {
        let from = hour.saturating_sub(cfg.window_secs());
        let mut w = self.sources.get(src).cloned().unwrap_or_default();
        w.evict_before(from);
        let b = w.baseline();
        Expectation {
            mode: Mode::Window,
            expected: b.mean,
            stdev: b.stdev,
            data_points: b.n,
            // The test is monotone in the count: the first count that passes is the threshold.
            alert_at: crate::expect::smallest_alerting(count_floor(cfg), |c| alerts(cfg, b, c)),
        }
    }

    pub(crate) fn to_state(&self) -> WindowState {
        let mut sources: Vec<WindowSource> = self
            .sources
            .iter()
            .filter(|(_, w)| !w.points.is_empty())
            .map(|(k, w)| WindowSource {
                src_ip: k.clone(),
                points: w.points.iter().copied().collect(),
            })
            .collect();
        sources.sort_by(|a, b| a.src_ip.cmp(&b.src_ip));
        WindowState { last_hour: self.last_hour, sources }
    }

    pub(crate) fn from_state(s: WindowState) -> WindowDetector {
        let mut d = WindowDetector { last_hour: s.last_hour, ..WindowDetector::default() };
        for src in s.sources {
            let w = d.sources.entry(src.src_ip).or_default();
            for (h, c) in src.points {
                if c > 0 && w.points.back().is_none_or(|p| p.0 < h) {
                    w.push(h, c);
                }
            }
        }
        d
    }
}

/// Saved state of window mode: the last hour fed and every source's points (it can equally be
/// rebuilt by [`crate::Detector::warm`] over the last `window_hours` of history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowState {
    /// Last hour fed.
    pub last_hour: Option<i64>,
    /// Sources with their points, sorted by source.
    pub sources: Vec<WindowSource>,
}

/// One source of a [`WindowState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSource {
    /// Source address.
    pub src_ip: String,
    /// `(hour, blocked_count)` points, hours increasing.
    pub points: Vec<(i64, u64)>,
}

impl WindowState {
    /// JSON encoding.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::state_json::to_bytes(self)
    }

    /// Decodes what [`WindowState::to_json_bytes`] wrote.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<WindowState, DetectError> {
        crate::state_json::from_bytes(bytes, "window state")
    }
}
