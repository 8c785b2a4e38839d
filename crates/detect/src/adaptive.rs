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

    /// Adds count `x` of hour `i` (after every hour added before), with `x_sq` for its square
    /// (see [`robust`]).
    fn add(&mut self, r: f64, i: i64, x: f64, x_sq: f64) {
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
        self.sum_sq += x_sq * w;
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
    fn add(&mut self, r: f64, i: i64, x: f64, x_sq: f64) {
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
        self.sum_sq += x_sq * w;
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
        let disp = if mean > 0.0 {
            ((var - mean) / (mean * mean)).clamp(0.0, MAX_DISPERSION)
        } else {
            0.0
        };
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
        // Two levels of shrinkage: the hour of day (weekdays and weekends together) towards the
        // all-hours mean, then the bucket towards its hour of day.
        let b = bucket(i);
        let other = (b + 24) % BUCKETS;
        let wb = bucket_weight(r, b, s.birth, i);
        let wo = bucket_weight(r, other, s.birth, i);
        let (sb, so) = (s.buckets[b] * f, s.buckets[other] * f);
        let mean_hod = (sb + so + BUCKET_PRIOR_HOURS * mean_all) / (wb + wo + BUCKET_PRIOR_HOURS);
        let mu = (sb + BUCKET_PRIOR_HOURS * mean_hod) / (wb + BUCKET_PRIOR_HOURS);
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
                            spikes.push(record(
                                o,
                                hour,
                                Reason::Spike,
                                p,
                                v.p_value,
                                t.max(floor),
                                data_points,
                            ));
                        }
                    }
                    let (x, x_sq) = robust(c, v.tail_threshold, p.mu);
                    s.add(r, i, x, x_sq);
                }
                None => {
                    let pred = self.fleet.predictive(r, i).map(|(mu, k, stdev)| Prediction {
                        mu,
                        k,
                        stdev,
                    });
                    let (x, x_sq) = match pred {
                        Some(p) => {
                            let v = Self::verdict(c, p, cfg.alpha);
                            if let Some(t) = v.tail_threshold {
                                if judged && c >= floor {
                                    spikes.push(record(
                                        o,
                                        hour,
                                        Reason::NewSource,
                                        p,
                                        v.p_value,
                                        t.max(floor),
                                        0,
                                    ));
                                }
                            }
                            robust(c, v.tail_threshold, p.mu)
                        }
                        None => (c as f64, (c as f64).powi(2)),
                    };
                    self.fleet.add(r, i, x, x_sq);
                    let mut s = Source::born(i);
                    s.add(r, i, x, x_sq);
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
            incidents: crate::incident::Incidents::default(),
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
                return bad(format!(
                    "source {}: {} buckets, expected {BUCKETS}",
                    s.src_ip,
                    s.buckets.len()
                ));
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

/// What an hour adds to the sums: `(x, x²)` for an ordinary count; for a count at or above the
/// tail threshold `t` (an anomaly, alerted or not), `x = t` and a square with no residual
/// (`2 t mu - mu²`, i.e. `mu² + 2 mu (t - mu)`): an incident moves the mean by at most the
/// threshold per hour (so a lasting change of level is learned, slowly) and never counts as
/// dispersion (which would widen the next hours' thresholds and hide the rest of the incident).
fn robust(c: u64, tail_threshold: Option<u64>, mu: f64) -> (f64, f64) {
    match tail_threshold {
        Some(t) if c >= t => {
            let t = t as f64;
            (t, (2.0 * t * mu - mu * mu).max(0.0))
        }
        _ => (c as f64, (c as f64).powi(2)),
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
    /// The open episodes of the incident layer (filled by [`Detector::snapshot`](crate::Detector::snapshot)).
    #[serde(default, skip_serializing_if = "crate::incident::Incidents::is_empty")]
    pub incidents: crate::incident::Incidents,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Detector, Mode};
    use flowspike_counter::AggregateRow;
    use proptest::prelude::*;

    const H: i64 = 3600;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Poisson by inversion (small means only).
        fn poisson(&mut self, mean: f64) -> u64 {
            let (mut k, mut p, u) = (0u64, (-mean).exp(), self.unit());
            let mut cdf = p;
            while u > cdf && k < 10_000 {
                k += 1;
                p *= mean / k as f64;
                cdf += p;
            }
            k
        }
    }

    fn row(hour: i64, src: &str, c: u64) -> AggregateRow {
        AggregateRow {
            hour: hour * H,
            src_ip: src.to_string(),
            blocked_count: c,
            ..AggregateRow::default()
        }
    }

    /// A fleet of `n` sources with Poisson counts of mean 2 (0 in some hours), hours `from..to`.
    fn fleet_hour(rng: &mut Rng, h: i64, n: usize) -> Vec<AggregateRow> {
        (0..n)
            .map(|s| row(h, &format!("10.9.0.{s}"), rng.poisson(2.0)))
            .filter(|r| r.blocked_count > 0)
            .collect()
    }

    fn adaptive() -> Detector {
        Detector::new(DetectConfig::for_mode(Mode::Adaptive))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The lazily kept sums (counts added only in active hours, bucket weights in closed
        /// form, rebased epochs) equal a naive update that visits every hour, adding zeros.
        #[test]
        fn lazy_zero_update_matches_a_naive_hourly_update(
            birth in -2_000i64..2_000,
            gaps in proptest::collection::vec((1i64..400, 1u64..50), 1..40),
            tail in 1i64..500,
        ) {
            let r = decay();
            let mut obs = vec![(birth, 7u64)];
            for (g, c) in gaps {
                let last = obs.last().unwrap().0;
                obs.push((last + g, c));
            }
            let now = obs.last().unwrap().0 + tail;
            let mut s = Source::born(birth);
            for &(i, c) in &obs {
                s.add(r, i, c as f64, (c as f64).powi(2));
            }
            // Naive: A(t + 1) = r (A(t) + x_t) for every hour from birth to now.
            let (mut sum, mut sq, mut w) = (0.0f64, 0.0f64, 0.0f64);
            let (mut sb, mut wb) = ([0.0f64; BUCKETS], [0.0f64; BUCKETS]);
            let mut next = obs.iter().peekable();
            for t in birth..now {
                let x = match next.peek() {
                    Some(&&(i, c)) if i == t => { next.next(); c as f64 }
                    _ => 0.0,
                };
                sum = r * (sum + x);
                sq = r * (sq + x * x);
                w = r * (w + 1.0);
                for b in 0..BUCKETS {
                    let hit = if bucket(t) == b { 1.0 } else { 0.0 };
                    sb[b] = r * (sb[b] + x * hit);
                    wb[b] = r * (wb[b] + hit);
                }
            }
            let f = rpow(r, now - s.epoch);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
            prop_assert!(close(s.sum * f, sum), "sum {} vs {}", s.sum * f, sum);
            prop_assert!(close(s.sum_sq * f, sq), "sum_sq {} vs {}", s.sum_sq * f, sq);
            prop_assert!(close(total_weight(r, birth, now), w));
            let ws = bucket_weights(r, birth, now);
            for b in 0..BUCKETS {
                prop_assert!(close(s.buckets[b] * f, sb[b]), "bucket {b}");
                prop_assert!(close(ws[b], wb[b]), "weight of bucket {b}: {} vs {}", ws[b], wb[b]);
                prop_assert!(close(bucket_weight(r, b, birth, now), wb[b]));
            }
        }
    }

    #[test]
    fn buckets_are_hour_of_day_and_weekend() {
        // 2026-01-03 was a Saturday, 2026-01-05 a Monday.
        let sat = hour_index(1_767_398_400);
        let mon = hour_index(1_767_571_200);
        assert_eq!(bucket(sat), 24);
        assert_eq!(bucket(sat + 13), 24 + 13);
        assert_eq!(bucket(mon), 0);
        assert_eq!(bucket(mon + 4 * 24 + 23), 23);
    }

    /// Feeds `hours` hours of a fleet plus `extra` rows per hour; returns the records.
    fn run(
        d: &mut Detector,
        rng: &mut Rng,
        hours: std::ops::Range<i64>,
        n: usize,
        mut extra: impl FnMut(i64) -> Vec<AggregateRow>,
    ) -> Vec<Spike> {
        let mut out = Vec::new();
        for h in hours {
            let mut rows = fleet_hour(rng, h, n);
            rows.extend(extra(h));
            out.extend(d.observe_hour(h * H, &rows));
        }
        out
    }

    #[test]
    fn hour_of_day_pattern_is_learned() {
        // A source blocked ~30 times an hour in working hours, ~1 at night.
        let mut rng = Rng(3);
        let mut d = adaptive();
        let day = |h: i64| (9..17).contains(&h.rem_euclid(24));
        let mut noise = Rng(4);
        let spikes = run(&mut d, &mut rng, 0..24 * 28, 30, |h| {
            let mean = if day(h) { 30.0 } else { 1.0 };
            vec![row(h, "10.1.1.1", noise.poisson(mean))]
        });
        assert!(spikes.iter().all(|s| s.src_ip != "10.1.1.1"), "{spikes:?}");
        let at = |d: &Detector, h: i64| d.threshold(h * H, "10.1.1.1").unwrap();
        let (night, work) = (24 * 28 + 3, 24 * 28 + 10);
        assert!(at(&d, night) < 30, "night threshold {}", at(&d, night));
        assert!(at(&d, work) > 45, "working-hours threshold {}", at(&d, work));
    }

    #[test]
    fn robust_update_an_incident_does_not_raise_the_baseline() {
        let mut rng = Rng(5);
        let mut d = adaptive();
        let mut noise = Rng(6);
        run(&mut d, &mut rng, 0..24 * 21, 30, |h| vec![row(h, "10.1.1.2", noise.poisson(3.0))]);
        let h0 = 24 * 21;
        let before = d.threshold(h0 * H, "10.1.1.2").unwrap();
        // Twelve hours of an incident: each one alerts...
        let incident = run(&mut d, &mut rng, h0..h0 + 12, 30, |h| vec![row(h, "10.1.1.2", 2000)]);
        let mine: Vec<_> = incident.iter().filter(|s| s.src_ip == "10.1.1.2").collect();
        assert_eq!(mine.len(), 12, "{incident:?}");
        assert!(mine.iter().all(|s| s.reason == Some(Reason::Spike)));
        // ... and the next day's threshold (same hour of day) is still close to the old one,
        // where an unclipped update would have added 24,000 records to a few hundred.
        let mut noise = Rng(7);
        run(&mut d, &mut rng, h0 + 12..h0 + 24, 30, |h| {
            vec![row(h, "10.1.1.2", noise.poisson(3.0))]
        });
        let after = d.threshold((h0 + 24) * H, "10.1.1.2").unwrap();
        assert!(after <= before * 2, "threshold {before} before, {after} after the incident");
        let moderate =
            run(&mut d, &mut rng, h0 + 24..h0 + 25, 30, |h| vec![row(h, "10.1.1.2", after)]);
        assert!(moderate.iter().any(|s| s.src_ip == "10.1.1.2"));
    }

    #[test]
    fn new_source_far_above_the_fleet_alerts_and_ordinary_ones_do_not() {
        let mut rng = Rng(8);
        let mut d = adaptive();
        run(&mut d, &mut rng, 0..WARMUP_HOURS + 48, 40, |_| Vec::new());
        let h = WARMUP_HOURS + 48;
        // Autoscaling: ordinary new sources, counts like the fleet's.
        let spikes = run(&mut d, &mut rng, h..h + 1, 40, |h| {
            (0..10).map(|i| row(h, &format!("10.2.0.{i}"), 1 + i % 4)).collect()
        });
        assert!(spikes.iter().all(|s| !s.src_ip.starts_with("10.2.")), "{spikes:?}");
        let t = d.threshold((h + 1) * H, "10.3.0.1").unwrap();
        let spikes = run(&mut d, &mut rng, h + 1..h + 2, 40, |h| {
            vec![row(h, "10.3.0.1", t), row(h, "10.3.0.2", t - 1)]
        });
        let new: Vec<_> = spikes.iter().filter(|s| s.src_ip.starts_with("10.3.")).collect();
        assert_eq!(new.len(), 1, "{spikes:?}");
        assert_eq!(new[0].src_ip, "10.3.0.1");
        assert_eq!(new[0].reason, Some(Reason::NewSource));
        assert_eq!(new[0].threshold, (t - 1) as f64);
        // Inside the warm-up, nothing is new.
        let mut fresh = adaptive();
        let early =
            run(&mut fresh, &mut rng, 0..10, 40, |h| vec![row(h, &format!("10.4.0.{h}"), 5000)]);
        assert!(early.is_empty(), "{early:?}");
    }

    #[test]
    fn threshold_is_monotone_and_agrees_with_observe_hour() {
        let mut rng = Rng(9);
        let mut d = adaptive();
        let mut noise = Rng(10);
        run(&mut d, &mut rng, 0..24 * 14, 30, |h| {
            vec![row(h, "10.5.0.1", noise.poisson(0.3)), row(h, "10.5.0.2", noise.poisson(12.0))]
        });
        let h = 24 * 14;
        for src in ["10.5.0.1", "10.5.0.2", "10.9.0.3", "10.6.0.1"] {
            let t = d.threshold(h * H, src).unwrap();
            assert!(t >= d.config().min_count);
            for c in t.saturating_sub(3).max(1)..t + 3 {
                let mut probe = d.clone();
                let flagged =
                    probe.observe_hour(h * H, &[row(h, src, c)]).iter().any(|s| s.src_ip == src);
                assert_eq!(flagged, c >= t, "{src}: count {c}, threshold {t}");
            }
        }
        // No threshold for an hour already fed.
        assert_eq!(d.threshold((h - 1) * H, "10.5.0.1"), None);
    }

    #[test]
    fn warming_then_observing_equals_observing_throughout() {
        let rows = |seed| {
            let mut rng = Rng(seed);
            let mut all = Vec::new();
            for h in 0..24 * 20 {
                let mut r = fleet_hour(&mut rng, h, 20);
                if h % 97 == 0 {
                    r.retain(|x| x.src_ip != format!("10.9.0.{}", h % 7));
                    r.push(row(h, &format!("10.9.0.{}", h % 7), 300));
                }
                all.push((h, r));
            }
            all
        };
        let all = rows(11);
        let mut full = adaptive();
        let mut split = adaptive();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (h, r) in &all {
            a.extend(full.observe_hour(h * H, r).into_iter().filter(|s| s.hour >= 300 * H));
            if *h < 300 {
                split.warm(h * H, r).unwrap();
            } else {
                b.extend(split.observe_hour(h * H, r));
            }
        }
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_eq!(full.snapshot(), split.snapshot());
    }

    #[test]
    fn state_errors() {
        let mut d = adaptive();
        d.warm(0, &[row(0, "10.0.0.1", 3)]).unwrap();
        let crate::DetectorState::Adaptive(mut st) = d.snapshot() else { panic!("not adaptive") };
        st.sources[0].buckets.pop();
        let cfg = DetectConfig::for_mode(Mode::Adaptive);
        assert!(Detector::restore(cfg.clone(), crate::DetectorState::Adaptive(st.clone())).is_err());
        st.sources[0].buckets.push(f64::NAN);
        assert!(Detector::restore(cfg, crate::DetectorState::Adaptive(st)).is_err());
    }
}
