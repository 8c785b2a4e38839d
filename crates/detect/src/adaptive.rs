//! Adaptive mode: a seasonal, overdispersed count model of each source's normal hour, with a
//! calibrated tail test (see docs/detection.md for the model and its settings).
//!
//! Per source, decayed sums (half-life [`HALF_LIFE_HOURS`]) of the counts per hour-of-day ×
//! {weekday, weekend} bucket, of all counts and of their squares. Every hour since the source's
//! first active hour (its *birth*) is a data point: an hour without a row is a zero. Zeros add
//! nothing to the sums of counts, only weight, and the weight of the hours of a bucket between
//! birth and now is a closed form (geometric series over the hours of the week), so nothing is
//! done for a quiet source: per-hour cost is O(active sources).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::nb::{nb_from_moments, nb_sf, nb_threshold};
use crate::{Baseline, DetectConfig, DetectError, Mode, Obs, Reason, Spike};

/// Half-life of every decayed sum, in hours (28 days).
pub(crate) const HALF_LIFE_HOURS: f64 = 672.0;
/// Prior strength, in hours, of a source's all-hours mean in each of its hour buckets (empirical
/// Bayes shrinkage of sparse buckets).
const BUCKET_PRIOR_HOURS: f64 = 4.0;
/// Prior strength, in hours, of the fleet's new-source mean in a source's all-hours mean: a young
/// source is judged mostly by what new sources of the fleet do.
const FLEET_PRIOR_HOURS: f64 = 12.0;
/// Prior strength, in hours, of the fleet's dispersion in a source's dispersion.
const DISPERSION_PRIOR_HOURS: f64 = 24.0;
/// Largest dispersion `1/k` accepted (a guard: a few huge hours must not make every count normal).
const MAX_DISPERSION: f64 = 50.0;
/// Hours after the first hour ever fed without verdicts: every source is "new" then.
pub(crate) const WARMUP_HOURS: i64 = 168;
/// A source silent this long is forgotten: if it comes back, it is a new source.
pub(crate) const FORGET_HOURS: i64 = 90 * 24;
/// Rebase a source's scaled sums once its epoch is this far behind (keeps them far from overflow).
const REBASE_HOURS: i64 = 4 * 672;
/// Hours of a bucket's week: the buckets are hour of day × {weekday, weekend}.
pub(crate) const BUCKETS: usize = 48;
const WEEK: i64 = 168;

/// Decay factor per hour.
fn decay() -> f64 {
    (-std::f64::consts::LN_2 / HALF_LIFE_HOURS).exp()
}

/// `r^n` for an hour count `n` (any sign; clamped where it no longer matters).
fn rpow(r: f64, n: i64) -> f64 {
    r.powi(n.clamp(-(1 << 30), 1 << 30) as i32)
}

/// Hour index (hours since the epoch) of an hour in seconds.
pub(crate) fn hour_index(hour: i64) -> i64 {
    hour.div_euclid(3600)
}

/// Position of an hour index in the week, Monday 00:00 UTC = 0 (1970-01-01 was a Thursday).
fn week_pos(i: i64) -> i64 {
    (i + 72).rem_euclid(WEEK)
}

/// Bucket of a week position: hour of day, plus 24 on Saturday and Sunday.
fn bucket_of_pos(p: i64) -> usize {
    let day = p / 24;
    (p % 24) as usize + if day >= 5 { 24 } else { 0 }
}

/// Bucket of an hour index.
pub(crate) fn bucket(i: i64) -> usize {
    bucket_of_pos(week_pos(i))
}

/// `Σ r^(now - t)` over the hours `birth <= t < now` at week position `p`: a geometric series.
fn pos_weight(r: f64, p: i64, birth: i64, now: i64) -> f64 {
    if now <= birth {
        return 0.0;
    }
    let last = now - 1;
    let t = last - (week_pos(last) - p).rem_euclid(WEEK);
    if t < birth {
        return 0.0;
    }
    let n = (t - birth) / WEEK + 1;
    let big_r = rpow(r, WEEK);
    rpow(r, now - t) * (1.0 - rpow(big_r, n)) / (1.0 - big_r)
}

/// Decayed weight (hours) of bucket `b` between `birth` and `now` (exclusive).
pub(crate) fn bucket_weight(r: f64, b: usize, birth: i64, now: i64) -> f64 {
    let hod = (b % 24) as i64;
    let days: &[i64] = if b >= 24 { &[5, 6] } else { &[0, 1, 2, 3, 4] };
    days.iter().map(|d| pos_weight(r, d * 24 + hod, birth, now)).sum()
}

/// Decayed weights of all buckets between `birth` and `now` (exclusive).
pub(crate) fn bucket_weights(r: f64, birth: i64, now: i64) -> [f64; BUCKETS] {
    let mut w = [0.0; BUCKETS];
    for p in 0..WEEK {
        w[bucket_of_pos(p)] += pos_weight(r, p, birth, now);
    }
    w
}

/// Decayed weight of all hours between `birth` and `now` (exclusive).
pub(crate) fn total_weight(r: f64, birth: i64, now: i64) -> f64 {
    if now <= birth {
        return 0.0;
    }
    r * (1.0 - rpow(r, now - birth)) / (1.0 - r)
}

/// Decayed sums of one source. Sums are stored scaled by `r^-(t - epoch)`: adding a count is
/// O(1), and the value at hour `now` is the stored one times `r^(now - epoch)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Source {
    /// First active hour (hour index).
    birth: i64,
    /// Last active hour (hour index).
    last: i64,
    /// Scale reference (hour index).
    epoch: i64,
    /// Active hours seen.
    active: u64,
    /// Scaled Σ count (robust: clipped at the tail threshold).
    sum: f64,
    /// Scaled Σ count².
    sum_sq: f64,
    /// Scaled Σ count per bucket.
    buckets: [f64; BUCKETS],
}

impl Source {
    fn born(i: i64) -> Source {
        Source {
            birth: i,
            last: i,
            epoch: i,
            active: 0,
            sum: 0.0,
            sum_sq: 0.0,
            buckets: [0.0; BUCKETS],
        }
    }

    /// Adds count `x` (already clipped) of hour `i` (after every hour added before).
    fn add(&mut self, r: f64, i: i64, x: f64) {
        if i - self.epoch > REBASE_HOURS {
            let f = rpow(r, i - self.epoch);
            self.sum *= f;
            self.sum_sq *= f;
            for b in &mut self.buckets {
                *b *= f;
            }
            self.epoch = i;
        }
        let w = rpow(r, -(i - self.epoch));
        self.sum += x * w;
        self.sum_sq += x * x * w;
        self.buckets[bucket(i)] += x * w;
        self.last = i;
        self.active += 1;
    }
}

/// Decayed sums over the first active hour of every source (the fleet's new-source prior).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSums {
    /// Scale reference (hour index).
    pub epoch: i64,
    /// Scaled number of births.
    pub n: f64,
    /// Scaled Σ first-hour count (clipped).
    pub sum: f64,
    /// Scaled Σ first-hour count².
    pub sum_sq: f64,
}

impl FleetSums {
    fn add(&mut self, r: f64, i: i64, x: f64) {
        if self.n == 0.0 || i - self.epoch > REBASE_HOURS {
            let f = if self.n == 0.0 { 0.0 } else { rpow(r, i - self.epoch) };
            self.n *= f;
            self.sum *= f;
            self.sum_sq *= f;
            self.epoch = i;
        }
        let w = rpow(r, -(i - self.epoch));
        self.n += w;
        self.sum += x * w;
        self.sum_sq += x * x * w;
    }

    /// `(births, mean, dispersion)` at hour `now`, or `None` before the first birth.
    fn fit(&self, r: f64, now: i64) -> Option<(f64, f64, f64)> {
        if self.n <= 0.0 {
            return None;
        }
        let f = rpow(r, now - self.epoch);
        let (n, s, q) = (self.n * f, self.sum * f, self.sum_sq * f);
        let mean = s / n;
        let var = (q / n - mean * mean).max(0.0);
        let disp = if mean > 0.0 { ((var - mean) / (mean * mean)).clamp(0.0, MAX_DISPERSION) } else { 0.0 };
        Some((n, mean, disp))
    }

    /// The predictive negative binomial of a new source's first hour: `(mean, size, stdev)`.
    fn predictive(&self, r: f64, now: i64) -> Option<(f64, f64, f64)> {
        let (n, mean, disp) = self.fit(r, now)?;
        if mean <= 0.0 {
            return None;
        }
        let var = (mean + disp * mean * mean) * (1.0 + 1.0 / n);
        let (mu, k) = nb_from_moments(mean, var);
        Some((mu, k, var.sqrt()))
    }
}

/// The model of one source for one hour.
#[derive(Debug, Clone, Copy)]
struct Prediction {
    /// Expected count.
    mu: f64,
    /// Negative binomial size of the predictive distribution.
    k: f64,
    /// Its standard deviation.
    stdev: f64,
}

/// Streaming adaptive detector.
#[derive(Debug, Clone)]
pub(crate) struct AdaptiveDetector {
    r: f64,
    sources: HashMap<String, Source>,
    fleet: FleetSums,
    first_hour: Option<i64>,
    pub(crate) last_hour: Option<i64>,
    last_sweep: Option<i64>,
}

impl Default for AdaptiveDetector {
    fn default() -> Self {
        AdaptiveDetector {
            r: decay(),
            sources: HashMap::new(),
            fleet: FleetSums::default(),
            first_hour: None,
            last_hour: None,
            last_sweep: None,
        }
    }
}

/// The verdict of one count against one prediction.
struct Verdict {
    p_value: f64,
    /// Smallest count the tail test alone flags (`None`: none representable).
    tail_threshold: Option<u64>,
}

impl AdaptiveDetector {
    /// The source's model for hour index `i` (strictly after its last active hour).
    fn predict(&self, s: &Source, i: i64) -> Prediction {
        let r = self.r;
        let f = rpow(r, i - s.epoch);
        let (sum, sum_sq) = (s.sum * f, s.sum_sq * f);
        let w = total_weight(r, s.birth, i);
        let fleet = self.fleet.fit(r, i);
        let (fleet_mean, fleet_disp) = fleet.map_or((0.0, 0.0), |(_, m, d)| (m, d));
        let kf = if fleet.is_some() { FLEET_PRIOR_HOURS } else { 0.0 };
        let mean_all = if w + kf > 0.0 { (sum + kf * fleet_mean) / (w + kf) } else { 0.0 };
        let b = bucket(i);
        let wb = bucket_weight(r, b, s.birth, i);
        let mu = (s.buckets[b] * f + BUCKET_PRIOR_HOURS * mean_all) / (wb + BUCKET_PRIOR_HOURS);
        // Dispersion: method of moments on the residuals around each bucket's mean, with the
        // bucket's own degree of freedom taken out, shrunk towards the fleet's.
        let ws = bucket_weights(r, s.birth, i);
        let (mut ss_means, mut pois, mut den) = (0.0, 0.0, 0.0);
        for (b, &wb) in ws.iter().enumerate() {
            if wb <= 0.0 {
                continue;
            }
            let sb = s.buckets[b] * f;
            let m = sb / wb;
            ss_means += sb * m;
            if wb > 1.0 {
                pois += (wb - 1.0) * m;
                den += (wb - 1.0) * m * m;
            }
        }
        let num = (sum_sq - ss_means) - pois;
        let prior = DISPERSION_PRIOR_HOURS * mean_all * mean_all;
        let disp = if den + prior > 0.0 {
            ((num + prior * fleet_disp) / (den + prior)).clamp(0.0, MAX_DISPERSION)
        } else {
            fleet_disp
        };
        let var = (mu + disp * mu * mu) * (1.0 + 1.0 / (wb + BUCKET_PRIOR_HOURS));
        let (mu, k) = nb_from_moments(mu, var);
        Prediction { mu, k, stdev: var.sqrt() }
    }

    /// Tail test of count `c` (only when `c > mu`; otherwise `p = 1`, nothing to clip).
    fn verdict(c: u64, p: Prediction, alpha: f64) -> Verdict {
        if (c as f64) <= p.mu {
            return Verdict { p_value: 1.0, tail_threshold: None };
        }
        let p_value = nb_sf(c, p.mu, p.k);
        let tail_threshold = if p_value < alpha {
            nb_threshold(p.mu.floor() as u64 + 1, p.mu, p.k, alpha)
        } else {
            None
        };
        Verdict { p_value, tail_threshold }
    }

    /// The known, not forgotten source `src` at hour index `i`.
    fn live_source(&self, src: &str, i: i64) -> Option<&Source> {
        self.sources.get(src).filter(|s| i - s.last <= FORGET_HOURS)
    }

    /// Smallest count alerting for `src` in `hour` (see [`crate::Detector::threshold`]).
    pub(crate) fn threshold(&self, cfg: &DetectConfig, hour: i64, src: &str) -> Option<u64> {
        let i = hour_index(hour);
        let first = self.first_hour?;
        if self.last_hour.is_some_and(|l| hour <= l) || i < hour_index(first) + WARMUP_HOURS {
            return None;
        }
        let floor = cfg.min_count.max(1);
        match self.live_source(src, i) {
            Some(s) => {
                let p = self.predict(s, i);
                let t = nb_threshold(p.mu.floor() as u64 + 1, p.mu, p.k, cfg.alpha)?;
                Some(t.max(floor))
            }
            None => {
                let (mu, k, _) = self.fleet.predictive(self.r, i)?;
                let t = nb_threshold(mu.floor() as u64 + 1, mu, k, cfg.alpha)?;
                Some(t.max(floor))
            }
        }
    }

    pub(crate) fn feed(
        &mut self,
        cfg: &DetectConfig,
        hour: i64,
        obs: &[Obs<'_>],
        verdicts: bool,
    ) -> Vec<Spike> {
        let r = self.r;
        let i = hour_index(hour);
        let first = *self.first_hour.get_or_insert(hour);
        let judged = verdicts && i >= hour_index(first) + WARMUP_HOURS;
        let floor = cfg.min_count.max(1);
        let mut spikes = Vec::new();
        for o in obs {
            let c = o.count;
            let known = self.live_source(o.src, i).map(|s| self.predict(s, i));
            match known {
                Some(p) => {
                    let v = Self::verdict(c, p, cfg.alpha);
                    let s = self.sources.get_mut(o.src).expect("live source");
                    let data_points = s.active;
                    if let Some(t) = v.tail_threshold {
                        if judged && c >= floor {
                            spikes.push(record(o, hour, Reason::Spike, p, v.p_value, t.max(floor), data_points));
                        }
                    }
                    let x = v.tail_threshold.map_or(c, |t| t.min(c));
                    s.add(r, i, x as f64);
                }
                None => {
                    let pred = self.fleet.predictive(r, i).map(|(mu, k, stdev)| Prediction { mu, k, stdev });
                    let x = match pred {
                        Some(p) => {
                            let v = Self::verdict(c, p, cfg.alpha);
                            if let Some(t) = v.tail_threshold {
                                if judged && c >= floor {
                                    spikes.push(record(o, hour, Reason::NewSource, p, v.p_value, t.max(floor), 0));
                                }
                            }
                            v.tail_threshold.map_or(c, |t| t.min(c))
                        }
                        None => c,
                    };
                    self.fleet.add(r, i, x as f64);
                    let mut s = Source::born(i);
                    s.add(r, i, x as f64);
                    self.sources.insert(o.src.to_string(), s);
                }
            }
        }
        self.last_hour = Some(hour);
        // Forgotten sources are only dropped to free memory (a lookup already ignores them).
        if self.last_sweep.is_none_or(|s| i - s >= FORGET_HOURS / 4) {
            self.sources.retain(|_, s| i - s.last <= FORGET_HOURS);
            self.last_sweep = Some(i);
        }
        spikes
    }

    pub(crate) fn to_state(&self) -> AdaptiveState {
        let mut sources: Vec<AdaptiveSource> = self
            .sources
            .iter()
            .map(|(k, s)| AdaptiveSource {
                src_ip: k.clone(),
                birth: s.birth,
                last: s.last,
                epoch: s.epoch,
                active: s.active,
                sum: s.sum,
                sum_sq: s.sum_sq,
                buckets: s.buckets.to_vec(),
            })
            .collect();
        sources.sort_by(|a, b| a.src_ip.cmp(&b.src_ip));
        AdaptiveState {
            version: 1,
            first_hour: self.first_hour,
            last_hour: self.last_hour,
            last_sweep: self.last_sweep,
            fleet: self.fleet.clone(),
            sources,
        }
    }

    pub(crate) fn from_state(st: AdaptiveState) -> Result<AdaptiveDetector, DetectError> {
        let bad = |m: String| Err(DetectError::InvalidState(m));
        if st.version != 1 {
            return bad(format!("unsupported adaptive state version {}", st.version));
        }
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        if !(finite(st.fleet.n) && finite(st.fleet.sum) && finite(st.fleet.sum_sq)) {
            return bad("fleet sums must be finite and non-negative".into());
        }
        let mut sources = HashMap::with_capacity(st.sources.len());
        for s in st.sources {
            let Ok(buckets) = <[f64; BUCKETS]>::try_from(s.buckets.as_slice()) else {
                return bad(format!("source {}: {} buckets, expected {BUCKETS}", s.src_ip, s.buckets.len()));
            };
            if !(finite(s.sum) && finite(s.sum_sq) && buckets.iter().all(|&b| finite(b)))
                || s.birth > s.last
                || s.epoch > s.last
            {
                return bad(format!("source {}: sums or hours out of range", s.src_ip));
            }
            let src = Source {
                birth: s.birth,
                last: s.last,
                epoch: s.epoch,
                active: s.active,
                sum: s.sum,
                sum_sq: s.sum_sq,
                buckets,
            };
            sources.insert(s.src_ip, src);
        }
        Ok(AdaptiveDetector {
            sources,
            fleet: st.fleet,
            first_hour: st.first_hour,
            last_hour: st.last_hour,
            last_sweep: st.last_sweep,
            ..AdaptiveDetector::default()
        })
    }
}

/// The record of a flagged observation.
fn record(
    o: &Obs<'_>,
    hour: i64,
    reason: Reason,
    p: Prediction,
    p_value: f64,
    threshold: u64,
    data_points: u64,
) -> Spike {
    let b = Baseline { mean: p.mu, stdev: p.stdev, n: data_points };
    // `threshold` keeps the meaning of the other modes: a record has `blocked_count > threshold`.
    let mut s = o.spike(Mode::Adaptive, hour, b, (threshold - 1) as f64);
    s.reason = Some(reason);
    s.expected = Some(p.mu);
    s.p_value = Some(p_value);
    s
}

/// Saved state of adaptive mode (it can equally be rebuilt by [`crate::Detector::warm`] over all
/// the history, which is what every service does when it starts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveState {
    /// Format version (1).
    pub version: u32,
    /// First hour ever fed (unix seconds): the warm-up runs from it.
    pub first_hour: Option<i64>,
    /// Last hour fed (unix seconds).
    pub last_hour: Option<i64>,
    /// Hour index of the last sweep of forgotten sources.
    pub last_sweep: Option<i64>,
    /// The fleet's new-source sums.
    pub fleet: FleetSums,
    /// Sources, sorted by address.
    pub sources: Vec<AdaptiveSource>,
}

/// One source of an [`AdaptiveState`] (hours are hour indexes: unix seconds / 3600).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveSource {
    /// Source address.
    pub src_ip: String,
    /// First active hour.
    pub birth: i64,
    /// Last active hour.
    pub last: i64,
    /// Scale reference of the sums.
    pub epoch: i64,
    /// Active hours seen.
    pub active: u64,
    /// Scaled Σ count.
    pub sum: f64,
    /// Scaled Σ count².
    pub sum_sq: f64,
    /// Scaled Σ count per hour-of-day × {weekday, weekend} bucket (48).
    pub buckets: Vec<f64>,
}
