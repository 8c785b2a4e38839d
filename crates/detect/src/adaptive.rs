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

use crate::expect::Expectation;
use crate::nb::{nb_from_moments, nb_sf, nb_threshold};
use crate::{Baseline, DetectConfig, DetectError, Mode, Obs, Reason, Spike};

/// Half-life of every decayed sum, in hours (28 days).
pub(crate) const HALF_LIFE_HOURS: f64 = 672.0;
/// Prior strength, in hours, of the fleet's new-source mean in a source's all-hours mean: a young
/// source is judged mostly by what new sources of the fleet do.
const FLEET_PRIOR_HOURS: f64 = 12.0;
/// Prior strength, in hours, of the fleet's dispersion in a source's dispersion. Weak: the fleet's
/// is the spread of first hours across sources, so it is wider than most sources' own (a strong
/// prior made steady hosts' tails too wide to see a burst just past their 99.99th percentile).
const DISPERSION_PRIOR_HOURS: f64 = 6.0;
/// Largest dispersion `1/k` accepted (a guard: a few huge hours must not make every count normal).
const MAX_DISPERSION: f64 = 50.0;
/// Hours summed by the ramp test (the hour and the ones before it).
pub(crate) const RAMP_HOURS: usize = 4;
/// The ramp test's alpha, relative to the single hour's. The same: the test only runs on four
/// active, strictly rising hours, rare enough in ordinary traffic that it needs no stricter bar (on
/// the harness, 1 instead of 0.1 finds 0.92 of the ramps instead of 0.84 at the same mean false
/// rate).
const RAMP_ALPHA: f64 = 1.0;
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

/// `Σ r^(now - t)` over the hours `birth <= t < now` at week position `p`: a geometric series
/// (the reference [`bucket_weights`] is tested against).
#[cfg(test)]
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
#[cfg(test)]
pub(crate) fn bucket_weight(r: f64, b: usize, birth: i64, now: i64) -> f64 {
    let hod = (b % 24) as i64;
    let days: &[i64] = if b >= 24 { &[5, 6] } else { &[0, 1, 2, 3, 4] };
    days.iter().map(|d| pos_weight(r, d * 24 + hod, birth, now)).sum()
}

/// Decayed weights of all buckets between `birth` and `now` (exclusive): the hours `now - d`,
/// `1 <= d <= now - birth`; those with `d ≡ d0 (mod 168)` share a week position and form a
/// geometric series of `q` or `q + 1` terms, so two powers serve all 168 positions.
pub(crate) fn bucket_weights(r: f64, birth: i64, now: i64) -> [f64; BUCKETS] {
    let mut w = [0.0; BUCKETS];
    if now <= birth {
        return w;
    }
    let d_max = now - birth;
    let (q, rem) = (d_max / WEEK, d_max % WEEK);
    let big_r = rpow(r, WEEK);
    let series = |n: i64| (1.0 - rpow(big_r, n)) / (1.0 - big_r);
    let (g_long, g_short) = (series(q + 1), series(q));
    let mut rd = 1.0;
    // Day and hour of the week position, stepped back one hour at a time (no division in the
    // loop: this runs for every source and hour).
    let pos = week_pos(now);
    let (mut day, mut hod) = (pos / 24, pos % 24);
    for d0 in 1..=WEEK {
        rd *= r;
        if hod == 0 {
            hod = 23;
            day = if day == 0 { 6 } else { day - 1 };
        } else {
            hod -= 1;
        }
        let b = hod as usize + if day >= 5 { 24 } else { 0 };
        w[b] += rd * if d0 <= rem { g_long } else { g_short };
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
    /// The last [`RAMP_HOURS`]` - 1` active hours and their counts (as observed), newest first.
    recent: [(i64, u64); RAMP_HOURS - 1],
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
            recent: [(i64::MIN, 0); RAMP_HOURS - 1],
        }
    }

    /// Remembers the observed count `c` of hour `i` for the ramp test.
    fn remember(&mut self, i: i64, c: u64) {
        self.recent.rotate_right(1);
        self.recent[0] = (i, c);
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

/// Decayed sums over the first active hour of sources, by power-of-two class of the count (the
/// fleet's new-source prior).
///
/// The fit is trimmed: the top [`FLEET_TRIM`] of the births by count are left out, so a few huge
/// first hours (a new source's burst, batch hosts first seen at their busy hour) do not widen
/// what "ordinary" means for the next new source — a plain moment fit on a handful of births is
/// dominated by its largest one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSums {
    /// Scale reference (hour index).
    pub epoch: i64,
    /// Per class `floor(log2(count))`: scaled `[births, Σ count, Σ count²]`.
    pub classes: Vec<[f64; 3]>,
    /// Births added (not decayed).
    pub births: u64,
}

/// Share of the births, the largest, left out of the new-source test's fit.
const FLEET_TRIM: f64 = 0.2;
/// Share of the births, the largest, left out of the fit that is the prior of young sources'
/// models (less than the test's: a wider prior keeps young sources' own thresholds conservative).
const PRIOR_TRIM: f64 = 0.1;

impl FleetSums {
    fn add(&mut self, r: f64, i: i64, x: f64) {
        if self.births == 0 || i - self.epoch > REBASE_HOURS {
            let f = rpow(r, i - self.epoch);
            for c in &mut self.classes {
                for v in c.iter_mut() {
                    *v *= f;
                }
            }
            self.epoch = i;
        }
        let w = rpow(r, -(i - self.epoch));
        let class = (x.max(1.0).log2().floor() as usize).min(63);
        if self.classes.len() <= class {
            self.classes.resize(class + 1, [0.0; 3]);
        }
        let c = &mut self.classes[class];
        c[0] += w;
        c[1] += x * w;
        c[2] += x * x * w;
        self.births += 1;
    }

    /// `(births, mean, dispersion)` of the trimmed births at hour `now`, or `None` before the
    /// first birth. The scale factor `r^(now - epoch)` cancels out of mean and dispersion.
    fn fit(&self, r: f64, now: i64, trim: f64) -> Option<(f64, f64, f64)> {
        let total: f64 = self.classes.iter().map(|c| c[0]).sum();
        if total <= 0.0 {
            return None;
        }
        let keep = total * (1.0 - trim);
        let (mut n, mut s, mut q) = (0.0, 0.0, 0.0);
        for c in &self.classes {
            if c[0] <= 0.0 {
                continue;
            }
            let share = ((keep - n) / c[0]).clamp(0.0, 1.0);
            if share <= 0.0 {
                break;
            }
            n += c[0] * share;
            s += c[1] * share;
            q += c[2] * share;
        }
        if n <= 0.0 {
            return None;
        }
        let mean = s / n;
        let var = (q / n - mean * mean).max(0.0);
        let disp = if mean > 0.0 {
            ((var - mean) / (mean * mean)).clamp(0.0, MAX_DISPERSION)
        } else {
            0.0
        };
        Some((n * rpow(r, now - self.epoch), mean, disp))
    }

    /// The predictive negative binomial of a new source's first hour: `(mean, size, stdev)`.
    fn predictive(&self, r: f64, now: i64) -> Option<(f64, f64, f64)> {
        let (n, mean, disp) = self.fit(r, now, FLEET_TRIM)?;
        if mean <= 0.0 {
            return None;
        }
        let var = (mean + disp * mean * mean) * (1.0 + 1.0 / n.max(1e-9));
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

/// The parts of a source's model shared by every hour of a prediction.
#[derive(Debug, Clone, Copy)]
struct Model {
    /// Expected count of each bucket.
    mu: [f64; BUCKETS],
    /// Variance of each bucket's expected count, relative to one hour's (the posterior
    /// predictive widens the count's variance by `1 +` this).
    rel_var: [f64; BUCKETS],
    /// Dispersion `1/k`.
    disp: f64,
}

/// Harmonics of the smooth hour-of-day profile.
const HARMONICS: usize = 2;
/// Coefficients of the profile: a level and a cosine and sine per harmonic.
const COEFS: usize = 1 + 2 * HARMONICS;
/// Ridge (in hours) pulling each harmonic's coefficient towards 0 and the level towards the
/// source's weekday mean: keeps a young source's profile flat until its hours say otherwise.
const PROFILE_RIDGE_HOURS: f64 = 24.0;
/// Prior strength, in hours, of the weekday mean in the weekend mean (the weekend factor).
const WEEKEND_PRIOR_HOURS: f64 = 24.0;
/// Smallest prior strength, in hours, of the smooth profile in an hour of day's own mean (a source
/// with a sharp profile, a batch host, is judged by its own hours, but never by a single one).
const MIN_PROFILE_HOURS: f64 = 1.0;

/// The profile's basis functions at each hour of day.
fn basis() -> &'static [[f64; COEFS]; 24] {
    static BASIS: std::sync::OnceLock<[[f64; COEFS]; 24]> = std::sync::OnceLock::new();
    BASIS.get_or_init(|| {
        let mut t = [[0.0; COEFS]; 24];
        for (h, row) in t.iter_mut().enumerate() {
            row[0] = 1.0;
            for j in 1..=HARMONICS {
                let a = std::f64::consts::TAU * (j * h) as f64 / 24.0;
                row[2 * j - 1] = a.cos();
                row[2 * j] = a.sin();
            }
        }
        t
    })
}

/// Solves the symmetric positive definite system `a x = b` (Cholesky); `None` if it is not
/// positive definite.
#[allow(clippy::needless_range_loop)] // reason: a matrix factorisation reads best with its indices
fn solve_spd(mut a: [[f64; COEFS]; COEFS], mut b: [f64; COEFS]) -> Option<[f64; COEFS]> {
    for j in 0..COEFS {
        let mut d = a[j][j];
        for k in 0..j {
            d -= a[j][k] * a[j][k];
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        a[j][j] = d;
        for i in j + 1..COEFS {
            let mut v = a[i][j];
            for k in 0..j {
                v -= a[i][k] * a[j][k];
            }
            a[i][j] = v / d;
        }
    }
    for i in 0..COEFS {
        for k in 0..i {
            b[i] -= a[i][k] * b[k];
        }
        b[i] /= a[i][i];
    }
    for i in (0..COEFS).rev() {
        for k in i + 1..COEFS {
            b[i] -= a[k][i] * b[k];
        }
        b[i] /= a[i][i];
    }
    Some(b)
}

/// Streaming adaptive detector.
#[derive(Debug, Clone)]
pub(crate) struct AdaptiveDetector {
    r: f64,
    sources: HashMap<String, Source>,
    /// Every source's first hour: what new sources of this fleet do.
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
    /// The fleet's new-source sums.
    fn prior(&self) -> &FleetSums {
        &self.fleet
    }

    /// The source's model for hour index `i` (strictly after its last active hour).
    fn predict(&self, s: &Source, i: i64) -> Prediction {
        let m = self.model(s, i);
        Self::predict_bucket(&m, bucket(i))
    }

    /// The predictive distribution of bucket `b` under model `m`.
    fn predict_bucket(m: &Model, b: usize) -> Prediction {
        let mu = m.mu[b];
        // Posterior predictive: the mean's own uncertainty widens the count's variance.
        let var = (mu + m.disp * mu * mu) * (1.0 + m.rel_var[b]);
        let (mu, k) = nb_from_moments(mu, var);
        Prediction { mu, k, stdev: var.sqrt() }
    }

    /// The model of a source at hour index `i`: the expected count of each hour-of-day ×
    /// {weekday, weekend} bucket and the source's dispersion.
    ///
    /// The expected count is a weekday profile by hour of day times a weekend factor. The profile
    /// of an hour of day is its own mean shrunk towards a smooth profile (a few harmonics fitted
    /// to all 24 hours by weighted least squares), as much as the hours' spread around the smooth
    /// profile allows (empirical Bayes: a source with a smooth daily cycle borrows from its
    /// neighbouring hours, a batch host's sharp window keeps its own hours). Every hour since the
    /// source's birth is a data point (hours without a row are zeros).
    #[allow(clippy::needless_range_loop)] // reason: hours of day index several arrays at once
    fn model(&self, s: &Source, i: i64) -> Model {
        let r = self.r;
        let f = rpow(r, i - s.epoch);
        let (sum, sum_sq) = (s.sum * f, s.sum_sq * f);
        let w = total_weight(r, s.birth, i);
        let fleet = self.prior().fit(r, i, PRIOR_TRIM);
        let (fleet_mean, fleet_disp) = fleet.map_or((0.0, 0.0), |(_, m, d)| (m, d));
        let kf = if fleet.is_some() { FLEET_PRIOR_HOURS } else { 0.0 };
        let mean_all = if w + kf > 0.0 { (sum + kf * fleet_mean) / (w + kf) } else { 0.0 };
        let ws = bucket_weights(r, s.birth, i);
        let sb: [f64; BUCKETS] = std::array::from_fn(|b| s.buckets[b] * f);
        // A first dispersion: method of moments on the residuals around each bucket's own mean,
        // with the bucket's degree of freedom taken out, shrunk towards the fleet's.
        let (mut ss_means, mut pois, mut den) = (0.0, 0.0, 0.0);
        for (b, &wb) in ws.iter().enumerate() {
            if wb <= 0.0 {
                continue;
            }
            let m = sb[b] / wb;
            ss_means += sb[b] * m;
            if wb > 1.0 {
                pois += (wb - 1.0) * m;
                den += (wb - 1.0) * m * m;
            }
        }
        let prior = DISPERSION_PRIOR_HOURS * mean_all * mean_all;
        let shrink_disp = |num: f64, den: f64| {
            if den + prior > 0.0 {
                ((num + prior * fleet_disp) / (den + prior)).clamp(0.0, MAX_DISPERSION)
            } else {
                fleet_disp
            }
        };
        let disp0 = shrink_disp((sum_sq - ss_means) - pois, den);
        // Weekday and weekend means, the weekend's shrunk towards the weekday's.
        let (mut swd, mut wwd, mut swe, mut wwe) = (0.0, 0.0, 0.0, 0.0);
        for h in 0..24 {
            (swd, wwd, swe, wwe) = (swd + sb[h], wwd + ws[h], swe + sb[h + 24], wwe + ws[h + 24]);
        }
        let m_wd = (swd + kf * mean_all) / (wwd + kf).max(1e-9);
        let m_we = (swe + WEEKEND_PRIOR_HOURS * m_wd) / (wwe + WEEKEND_PRIOR_HOURS);
        let weekend = if m_wd > 0.0 { m_we / m_wd } else { 1.0 };
        // Each hour of day in weekday units: sum and weight (a weekend hour weighs `weekend`).
        let n: [f64; 24] = std::array::from_fn(|h| ws[h] + weekend * ws[h + 24]);
        let sh: [f64; 24] = std::array::from_fn(|h| sb[h] + sb[h + 24]);
        // The smooth profile: weighted least squares with a ridge.
        let phi = basis();
        let mut a = [[0.0; COEFS]; COEFS];
        let mut rhs = [0.0; COEFS];
        for h in 0..24 {
            for j in 0..COEFS {
                rhs[j] += sh[h] * phi[h][j];
                for k in 0..=j {
                    a[j][k] += n[h] * phi[h][j] * phi[h][k];
                }
            }
        }
        for j in 0..COEFS {
            for k in 0..j {
                a[k][j] = a[j][k];
            }
        }
        for (j, row) in a.iter_mut().enumerate() {
            row[j] += PROFILE_RIDGE_HOURS;
        }
        rhs[0] += PROFILE_RIDGE_HOURS * m_wd;
        let beta = solve_spd(a, rhs).unwrap_or([m_wd, 0.0, 0.0, 0.0, 0.0]);
        let floor = 1e-3 + 0.02 * m_wd;
        let smooth: [f64; 24] = std::array::from_fn(|h| {
            phi[h].iter().zip(&beta).map(|(p, b)| p * b).sum::<f64>().max(floor)
        });
        let n_total: f64 = n.iter().sum::<f64>() + PROFILE_RIDGE_HOURS;
        // Spread of the hours' own means around the profile beyond their sampling noise.
        let (mut num, mut wsum) = (0.0, 0.0);
        let keep = 1.0 - COEFS as f64 / 24.0;
        for h in 0..24 {
            if n[h] <= 0.0 {
                continue;
            }
            let v = smooth[h] + disp0 * smooth[h] * smooth[h];
            let y = sh[h] / n[h];
            num += n[h] * ((y - smooth[h]).powi(2) - keep * v / n[h]);
            wsum += n[h];
        }
        let tau2 = if wsum > 0.0 { (num / wsum).max(0.0) } else { 0.0 };
        let mut mu = [0.0; BUCKETS];
        let mut rel_var = [0.0; BUCKETS];
        let mut leverage = 0.0;
        for h in 0..24 {
            // The hours' noise at the higher of the two levels: a batch host's busy hours are
            // far above its smooth profile, and so is their variance.
            let lvl = if n[h] > 0.0 { smooth[h].max(sh[h] / n[h]) } else { smooth[h] };
            let v = lvl + disp0 * lvl * lvl;
            let kappa = if tau2 > 0.0 { (v / tau2).max(MIN_PROFILE_HOURS) } else { f64::INFINITY };
            let (m, own) = if kappa.is_finite() {
                ((sh[h] + kappa * smooth[h]) / (n[h] + kappa), n[h] / (n[h] + kappa))
            } else {
                (smooth[h], 0.0)
            };
            leverage += own;
            let rv = if n[h] > 0.0 { own * own / n[h] } else { 0.0 }
                + (1.0 - own).powi(2) * COEFS as f64 / n_total;
            mu[h] = m;
            mu[h + 24] = m * weekend;
            rel_var[h] = rv;
            rel_var[h + 24] = rv + 1.0 / (wwe + WEEKEND_PRIOR_HOURS);
        }
        // The dispersion again, on the residuals around these expected counts.
        let (mut cross, mut pois, mut den) = (0.0, 0.0, 0.0);
        for b in 0..BUCKETS {
            cross += mu[b] * sb[b];
            pois += ws[b] * mu[b];
            den += ws[b] * mu[b] * mu[b];
        }
        let ss = (sum_sq - 2.0 * cross + den).max(0.0);
        let params = leverage + COEFS as f64 * (1.0 - leverage / 24.0) + 1.0;
        let ss = ss / (1.0 - params / w.max(1.0)).max(0.5);
        let disp = shrink_disp(ss - pois, den);
        // Its own uncertainty (posterior predictive, as for the mean): the standard error of a
        // moment estimate of the variance is about `sqrt((2 + 6/k) / n)` of it for a negative
        // binomial of size `k` (the kurtosis of small `k` is large), one standard error is added.
        // A young or very bursty source gets wider tails; a steady source with weeks of hours
        // keeps its own.
        let disp = disp * (1.0 + ((2.0 + 6.0 * disp) / w.max(1.0)).sqrt());
        Model { mu, rel_var, disp }
    }

    /// The ramp test's distribution at hour index `i`: the sum of the source's counts over the
    /// last [`RAMP_HOURS`] hours (this one included), as a negative binomial of independent
    /// hours, `(mean, size, stdev)`, and the observed sum of the hours before this one.
    fn ramp(&self, s: &Source, i: i64) -> (Prediction, u64) {
        let m = self.model(s, i);
        let (mut mu, mut var) = (0.0, 0.0);
        for j in i + 1 - RAMP_HOURS as i64..=i {
            let p = Self::predict_bucket(&m, bucket(j));
            mu += p.mu;
            var += p.stdev * p.stdev;
        }
        let before: u64 = s
            .recent
            .iter()
            .filter(|(h, _)| *h > i - RAMP_HOURS as i64 && *h < i)
            .map(|(_, c)| *c)
            .fold(0, u64::saturating_add);
        let (mu, k) = nb_from_moments(mu, var);
        (Prediction { mu, k, stdev: var.sqrt() }, before)
    }

    /// The smallest count of this hour that the ramp test flags (`None`: no count would).
    fn ramp_threshold(p: Prediction, before: u64, alpha: f64) -> Option<u64> {
        let t = nb_threshold(before.saturating_add(1), p.mu, p.k, alpha)?;
        Some(t - before)
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
                let single = nb_threshold(p.mu.floor() as u64 + 1, p.mu, p.k, cfg.alpha);
                let (rp, before) = self.ramp(s, i);
                // The ramp test also needs the hour above its own expected count.
                let ramp = Self::ramp_threshold(rp, before, cfg.alpha * RAMP_ALPHA)
                    .filter(|_| rising(&s.recent, i, u64::MAX))
                    .map(|t| t.max(p.mu.floor() as u64 + 1).max(s.recent[0].1 + 1));
                let t = match (single, ramp) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b)?,
                };
                Some(t.max(floor))
            }
            None => {
                let (mu, k, _) = self.prior().predictive(self.r, i)?;
                let t = nb_threshold(mu.floor() as u64 + 1, mu, k, cfg.alpha)?;
                Some(t.max(floor))
            }
        }
    }

    /// What `src` is compared with in `hour` (after the last hour fed): its model's mean and
    /// predictive stdev for that hour (a source it has not seen: the fleet's new-source
    /// prediction) and [`Self::threshold`]. `None` before the first hour or, for a source it has
    /// not seen, while the fleet has no prior yet.
    pub(crate) fn expectation(
        &self,
        cfg: &DetectConfig,
        hour: i64,
        src: &str,
    ) -> Option<Expectation> {
        self.first_hour?;
        let i = hour_index(hour);
        let (p, data_points) = match self.live_source(src, i) {
            Some(s) => (self.predict(s, i), s.active),
            None => {
                let (mu, _, stdev) = self.prior().predictive(self.r, i)?;
                (Prediction { mu, k: 0.0, stdev }, 0)
            }
        };
        Some(Expectation {
            mode: Mode::Adaptive,
            expected: p.mu,
            stdev: p.stdev,
            data_points,
            alert_at: self.threshold(cfg, hour, src),
        })
    }

    /// The verdict on `o` in `hour`: its candidate record (only when `judged` and the count is at
    /// least the floor) and what the hour adds to the baseline, winsorized at the threshold (`None`
    /// for a new source while the fleet has no prior yet). Changes nothing: [`Self::feed`] applies
    /// it, [`Self::candidate`] only reads the record, so the two can never disagree.
    fn judge(
        &self,
        cfg: &DetectConfig,
        hour: i64,
        o: &Obs<'_>,
        judged: bool,
    ) -> (Option<Spike>, Option<(f64, f64)>) {
        let i = hour_index(hour);
        let c = o.count;
        let floor = cfg.min_count.max(1);
        let judged = judged && c >= floor;
        match self.live_source(o.src, i) {
            Some(s) => {
                let p = self.predict(s, i);
                let v = Self::verdict(c, p, cfg.alpha);
                let spike = if !judged {
                    None
                } else if let Some(t) = v.tail_threshold.filter(|&t| c >= t) {
                    Some(record(o, hour, Reason::Spike, p, v.p_value, t.max(floor), s.active))
                } else if (c as f64) > p.mu && rising(&s.recent, i, c) {
                    let (rp, before) = self.ramp(s, i);
                    let p_sum = nb_sf(before.saturating_add(c), rp.mu, rp.k);
                    (p_sum < cfg.alpha * RAMP_ALPHA).then(|| {
                        let t = Self::ramp_threshold(rp, before, cfg.alpha * RAMP_ALPHA)
                            .unwrap_or(c)
                            .max(p.mu.floor() as u64 + 1);
                        record(o, hour, Reason::Ramp, rp, p_sum, t.max(floor), s.active)
                    })
                } else {
                    None
                };
                (spike, Some(robust(c, v.tail_threshold, p.mu)))
            }
            None => {
                let Some((mu, k, stdev)) = self.prior().predictive(self.r, i) else {
                    return (None, None);
                };
                let p = Prediction { mu, k, stdev };
                let v = Self::verdict(c, p, cfg.alpha);
                let spike = v
                    .tail_threshold
                    .filter(|_| judged)
                    .map(|t| record(o, hour, Reason::NewSource, p, v.p_value, t.max(floor), 0));
                (spike, Some(robust(c, v.tail_threshold, p.mu)))
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
        let warm_up = i < hour_index(first) + WARMUP_HOURS;
        let judged = verdicts && !warm_up;
        let mut spikes = Vec::new();
        for o in obs {
            let c = o.count;
            // In the warm-up week nothing is judged and the counts enter the baselines as they
            // are: fitting every source's model only to winsorize them would make a replay of a
            // few days (all warm-up) pay the model for nothing. Live and rebuilt detectors skip
            // the same hours, so both still agree.
            let (spike, added) =
                if warm_up { (None, None) } else { self.judge(cfg, hour, o, judged) };
            spikes.extend(spike);
            let (x, x_sq) = added.unwrap_or((c as f64, (c as f64).powi(2)));
            if self.live_source(o.src, i).is_some() {
                let s = self.sources.get_mut(o.src).expect("live source");
                s.add(r, i, x, x_sq);
                s.remember(i, c);
            } else {
                // An alerted first hour counts at the threshold (and the fit is trimmed).
                self.fleet.add(r, i, x);
                let mut s = Source::born(i);
                s.add(r, i, x, x_sq);
                s.remember(i, c);
                self.sources.insert(o.src.to_string(), s);
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

    /// What [`AdaptiveDetector::feed`] would make the candidate record of `o` in `hour` (before
    /// the incident layer), without changing anything; `None` when the hour is not after the last
    /// one fed, during the warm-up, or when it would not alert.
    pub(crate) fn candidate(&self, cfg: &DetectConfig, hour: i64, o: &Obs<'_>) -> Option<Spike> {
        let first = self.first_hour?;
        if self.last_hour.is_some_and(|l| hour <= l)
            || hour_index(hour) < hour_index(first) + WARMUP_HOURS
        {
            return None;
        }
        self.judge(cfg, hour, o, true).0
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
                recent: s.recent.iter().copied().filter(|r| r.0 != i64::MIN).collect(),
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
        for f in [&st.fleet] {
            if !f.classes.iter().flatten().all(|&v| finite(v)) {
                return bad("fleet sums must be finite and non-negative".into());
            }
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
            let mut recent = [(i64::MIN, 0); RAMP_HOURS - 1];
            for (slot, &r) in recent.iter_mut().zip(&s.recent) {
                *slot = r;
            }
            let src = Source {
                recent,
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
            let _ = mu;
            (t, t * t)
        }
        _ => (c as f64, (c as f64).powi(2)),
    }
}

/// True when the hours before `i` in the ramp window were all active and the counts rise to `c`
/// (a ramp, not the hours after a burst).
fn rising(recent: &[(i64, u64)], i: i64, c: u64) -> bool {
    let mut next = (i, c);
    for &(h, x) in recent {
        if h != next.0 - 1 || x >= next.1 {
            return false;
        }
        next = (h, x);
    }
    true
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
    /// The last active hours with their observed counts, newest first (the ramp test's memory).
    #[serde(default)]
    pub recent: Vec<(i64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Detector, Mode};
    use flowspike_model::AggregateRow;
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

    /// The expected count of `src` in hour `h` (from the record of a probe count of 10,000).
    fn expected(d: &Detector, h: i64, src: &str) -> f64 {
        let mut probe = d.clone();
        let s = probe.observe_hour(h * H, &[row(h, src, 10_000)]);
        s.iter().find(|s| s.src_ip == src).and_then(|s| s.expected).expect("a probe record")
    }

    #[test]
    fn robust_update_an_incident_does_not_raise_the_baseline() {
        let mut rng = Rng(5);
        let mut d = adaptive();
        let mut noise = Rng(6);
        run(&mut d, &mut rng, 0..24 * 21, 30, |h| vec![row(h, "10.1.1.2", noise.poisson(3.0))]);
        let h0 = 24 * 21;
        let before = expected(&d, h0 + 24, "10.1.1.2");
        // Twelve hours of an incident: each one alerts...
        let incident = run(&mut d, &mut rng, h0..h0 + 12, 30, |h| vec![row(h, "10.1.1.2", 2000)]);
        let mine: Vec<_> = incident.iter().filter(|s| s.src_ip == "10.1.1.2").collect();
        assert_eq!(mine.len(), 12, "{incident:?}");
        assert!(mine.iter().all(|s| s.reason == Some(Reason::Spike)));
        // ... and the next day's expected count (same hour of day) is still close to the old one,
        // where an unclipped update would have added 24,000 records to a few hundred.
        let mut noise = Rng(7);
        run(&mut d, &mut rng, h0 + 12..h0 + 24, 30, |h| {
            vec![row(h, "10.1.1.2", noise.poisson(3.0))]
        });
        let after = expected(&d, h0 + 24, "10.1.1.2");
        assert!(after < before * 1.5, "expected {before} before, {after} after the incident");
        let next = run(&mut d, &mut rng, h0 + 24..h0 + 25, 30, |h| vec![row(h, "10.1.1.2", 300)]);
        assert!(next.iter().any(|s| s.src_ip == "10.1.1.2"), "a burst of 300 the next day alerts");
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

    /// A detector fed two weeks of a quiet source (10.5.0.1) and a busy one (10.5.0.2), and the
    /// hour after them: where the open-hour and threshold tests start.
    fn two_weeks_fed() -> (Detector, i64) {
        let (mut rng, mut noise) = (Rng(9), Rng(10));
        let mut d = adaptive();
        run(&mut d, &mut rng, 0..24 * 14, 30, |h| {
            vec![row(h, "10.5.0.1", noise.poisson(0.3)), row(h, "10.5.0.2", noise.poisson(12.0))]
        });
        (d, 24 * 14)
    }

    /// `evaluate_open` gives the close's record (same id, count, p-value, threshold) for clear
    /// cases only (`p < alpha / 100`), marked early, changes nothing, and keeps an open
    /// episode's id as the close does.
    #[test]
    fn evaluate_open_agrees_with_the_close_for_clear_cases() {
        let (mut d, h) = two_weeks_fed();
        let bar = d.config().alpha * crate::EARLY_ALPHA_FACTOR;
        let before = d.snapshot();
        let (mut early_seen, mut waited) = (false, false);
        for src in ["10.5.0.1", "10.5.0.2", "10.6.0.1"] {
            let t = d.threshold(h * H, src).unwrap();
            for c in (t.saturating_sub(2).max(1)..t + 40).chain([t * 10, t * 100]) {
                let rows = [row(h, src, c)];
                let early = d.evaluate_open(h * H, &rows);
                let closed = d.clone().observe_hour(h * H, &rows);
                match (early.as_slice(), closed.as_slice()) {
                    ([], []) => {}
                    ([], [c]) => {
                        assert!(c.p_value.unwrap() >= bar, "{c:?}");
                        waited = true;
                    }
                    ([e], [c]) => {
                        assert!(e.early && !c.early);
                        assert!(c.p_value.unwrap() < bar);
                        let mut e = e.clone();
                        e.early = false;
                        assert_eq!(&e, c);
                        early_seen = true;
                    }
                    (e, c) => panic!("{src} count {c:?}: early {e:?}, close {c:?}"),
                }
            }
        }
        assert!(early_seen && waited, "both cases exercised");
        assert_eq!(d.snapshot(), before, "evaluate_open changed the detector");
        // An episode: the close of hour h alerts 10.5.0.1; hour h + 1's early record keeps its id.
        let first = d.observe_hour(h * H, &[row(h, "10.5.0.1", 500)]);
        assert_eq!(first.len(), 1);
        let next = d.evaluate_open((h + 1) * H, &[row(h + 1, "10.5.0.1", 500)]);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].id, first[0].id);
        assert_eq!(next[0].episode.as_ref().map(|e| e.hours), Some(2));
        let closed = d.observe_hour((h + 1) * H, &[row(h + 1, "10.5.0.1", 500)]);
        let mut e = next[0].clone();
        e.early = false;
        assert_eq!(closed, vec![e]);
        // Window mode never alerts early.
        let w = Detector::new(DetectConfig::for_mode(Mode::Window));
        assert!(w.evaluate_open(h * H, &[row(h, "10.5.0.1", 500)]).is_empty());
    }

    #[test]
    fn threshold_is_monotone_and_agrees_with_observe_hour() {
        let (d, h) = two_weeks_fed();
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
    fn solve_spd_solves_and_refuses_a_matrix_that_is_not_positive_definite() {
        let mut rng = Rng(21);
        for _ in 0..50 {
            // A = M^T M + I is symmetric positive definite.
            let m: [[f64; COEFS]; COEFS] =
                std::array::from_fn(|_| std::array::from_fn(|_| rng.unit() * 4.0 - 2.0));
            let a: [[f64; COEFS]; COEFS] = std::array::from_fn(|i| {
                std::array::from_fn(|j| {
                    (0..COEFS).map(|k| m[k][i] * m[k][j]).sum::<f64>() + f64::from(u8::from(i == j))
                })
            });
            let b: [f64; COEFS] = std::array::from_fn(|_| rng.unit() * 10.0 - 5.0);
            let x = solve_spd(a, b).expect("positive definite");
            for i in 0..COEFS {
                let ax: f64 = (0..COEFS).map(|j| a[i][j] * x[j]).sum();
                assert!((ax - b[i]).abs() < 1e-9 * (1.0 + b[i].abs()), "row {i}: {ax} vs {}", b[i]);
            }
        }
        let mut a = [[0.0; COEFS]; COEFS];
        a[0][0] = -1.0;
        assert_eq!(solve_spd(a, [1.0; COEFS]), None);
    }

    /// Two weeks of a source with a smooth daily cycle: its expected counts follow the cycle (the
    /// profile pools all its hours; a bucket alone has ten); a batch host busy two hours a day keeps
    /// its own window (not smoothed away) and its quiet hours.
    #[test]
    fn smooth_cycle_is_pooled_and_a_batch_window_is_kept() {
        let mut rng = Rng(12);
        let mut d = adaptive();
        let mut noise = Rng(13);
        let cycle = |h: i64| {
            4.0 * (1.0 + 0.8 * (std::f64::consts::TAU * ((h % 24) as f64 - 14.0) / 24.0).cos())
        };
        let days = 14;
        run(&mut d, &mut rng, 0..24 * days, 30, |h| {
            let mut rows = vec![row(h, "10.7.0.1", noise.poisson(cycle(h)))];
            if (3..5).contains(&(h % 24)) {
                rows.push(row(h, "10.7.0.2", 90 + noise.poisson(10.0)));
            }
            rows.retain(|r| r.blocked_count > 0);
            rows
        });
        // Day 14 is a Thursday (1970-01-01 was one): weekday buckets.
        let h0 = 24 * days;
        // The peak within 10%; the trough (0.8) well below the daily mean (4) though not at it:
        // the ridge still holds back an eighth of the amplitude after two weeks.
        let peak = expected(&d, h0 + 14, "10.7.0.1");
        assert!((peak - cycle(14)).abs() < 0.1 * cycle(14), "peak: expected {peak}, truth 7.2");
        let trough = expected(&d, h0 + 2, "10.7.0.1");
        assert!(trough < 1.5, "trough: expected {trough}, truth 0.8");
        // Its busy hour keeps most of its level (about 0.9 of it: the hour's own mean still
        // carries a prior of an hour or two of the smooth profile, which cannot follow a window
        // this sharp).
        let busy = expected(&d, h0 + 3, "10.7.0.2");
        assert!((busy - 100.0).abs() < 20.0, "batch window: expected {busy}, truth 100");
        let quiet = expected(&d, h0 + 12, "10.7.0.2");
        assert!(quiet < 1.0, "batch host off its window: expected {quiet}");
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
