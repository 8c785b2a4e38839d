//! Negative binomial tail probabilities (the adaptive mode's test), from the regularized incomplete
//! beta function.
//!
//! A negative binomial with mean `mu > 0` and size `k > 0` (variance `mu + mu² / k`; a gamma-Poisson
//! mixture whose rate has shape `k`) has `P(X >= c) = I_x(c, k)` with `x = mu / (mu + k)` for
//! `c >= 1` (`I` the regularized incomplete beta function). The naive equivalent, summing the
//! probability mass function from `c` upwards, is the reference the tests compare against.

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, g = 7, n = 9; relative error about 1e-15).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(π x).
        let s = (std::f64::consts::PI * x).sin();
        return std::f64::consts::PI.ln() - s.abs().ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz), for
/// `x < (a + 1) / (a + b + 2)`.
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-14;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    // Converges in O(sqrt(max(a, b))) steps; the bound only guards against a pathological input.
    for m in 1..20_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`.
pub(crate) fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = a * x.ln() + b * (-x).ln_1p() - (ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b));
    if x < (a + 1.0) / (a + b + 2.0) {
        (ln_front.exp() * beta_cf(a, b, x) / a).clamp(0.0, 1.0)
    } else {
        (1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b).clamp(0.0, 1.0)
    }
}

/// `P(X >= c)` for a negative binomial of mean `mu` and size `k` (`k = f64::INFINITY` is not
/// allowed: callers always add parameter uncertainty, which keeps `k` finite). `1` for `c == 0`,
/// `0` for `mu <= 0` and `c >= 1`.
pub(crate) fn nb_sf(c: u64, mu: f64, k: f64) -> f64 {
    if c == 0 {
        return 1.0;
    }
    if !(mu > 0.0) || !(k > 0.0) {
        return 0.0;
    }
    beta_inc(c as f64, k, mu / (mu + k))
}

/// The negative binomial of mean `mu` and variance `var` (moment matching; `var > mu` required,
/// else the variance is raised just above the mean): `(mu, k)`.
pub(crate) fn nb_from_moments(mu: f64, var: f64) -> (f64, f64) {
    let excess = (var - mu).max(mu * 1e-9).max(1e-300);
    (mu, mu * mu / excess)
}

/// The smallest `c >= from` with `nb_sf(c, mu, k) < alpha`, or `None` if it would exceed
/// `u64::MAX / 2` (never, for finite parameters). `nb_sf` decreases in `c`, so this is a
/// doubling search then a bisection: `c` alerts iff `c >= nb_threshold(..)`.
pub(crate) fn nb_threshold(from: u64, mu: f64, k: f64, alpha: f64) -> Option<u64> {
    let from = from.max(1);
    if nb_sf(from, mu, k) < alpha {
        return Some(from);
    }
    // Invariant: sf(lo) >= alpha, sf(hi) < alpha.
    let mut lo = from;
    let mut step = (mu.max(1.0) as u64).max(1);
    let mut hi = loop {
        let h = lo.checked_add(step)?;
        if h > u64::MAX / 2 {
            return None;
        }
        if nb_sf(h, mu, k) < alpha {
            break h;
        }
        lo = h;
        step = step.saturating_mul(2);
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if nb_sf(mid, mu, k) < alpha {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive `P(X >= c)`: the mass function summed from `c` upwards by its ratio recurrence, until
    /// the terms no longer matter.
    fn naive_sf(c: u64, mu: f64, k: f64) -> f64 {
        let p = k / (k + mu);
        // pmf(x) = Γ(x + k) / (Γ(k) x!) p^k (1 - p)^x, in logs to start at x = c.
        let ln_pmf = |x: f64| {
            ln_gamma(x + k) - ln_gamma(k) - ln_gamma(x + 1.0) + k * p.ln() + x * (1.0 - p).ln()
        };
        let mut x = c as f64;
        let mut term = ln_pmf(x).exp();
        let mut sum = 0.0;
        for _ in 0..2_000_000 {
            sum += term;
            term *= (x + k) / (x + 1.0) * (1.0 - p);
            x += 1.0;
            if term < sum * 1e-17 && x > mu {
                break;
            }
        }
        sum
    }

    #[test]
    fn ln_gamma_known_values() {
        for (x, want) in [
            (1.0, 0.0),
            (2.0, 0.0),
            (0.5, std::f64::consts::PI.sqrt().ln()),
            (10.0, 362_880f64.ln()),
            (0.01, 4.599_479_878_042_022),
        ] {
            assert!((ln_gamma(x) - want).abs() < 1e-12, "ln_gamma({x}) = {}", ln_gamma(x));
        }
    }

    #[test]
    fn nb_tail_matches_naive_summation() {
        for &mu in &[0.05, 0.7, 3.0, 12.5, 80.0, 400.0] {
            for &k in &[0.2, 1.0, 4.0, 30.0, 500.0, 20_000.0] {
                for &c in &[1u64, 2, 3, 5, 10, 20, 50, 100, 300, 1000, 3000] {
                    let fast = nb_sf(c, mu, k);
                    let slow = naive_sf(c, mu, k);
                    // Relative agreement where the tail is representable; both tiny otherwise.
                    let ok = if slow > 1e-280 {
                        (fast - slow).abs() <= 1e-8 * slow + 1e-15
                    } else {
                        fast < 1e-270
                    };
                    assert!(ok, "mu {mu} k {k} c {c}: {fast} vs naive {slow}");
                }
            }
        }
    }

    #[test]
    fn threshold_is_the_smallest_alerting_count() {
        for &(mu, k, alpha) in
            &[(2.0, 3.0, 1e-5), (0.1, 0.5, 1e-6), (50.0, 1000.0, 1e-4), (7.0, 0.8, 1e-7)]
        {
            for from in [1u64, 5, 20] {
                let t = nb_threshold(from, mu, k, alpha).unwrap();
                assert!(t >= from);
                assert!(nb_sf(t, mu, k) < alpha);
                if t > from {
                    assert!(nb_sf(t - 1, mu, k) >= alpha, "mu {mu} k {k} t {t}");
                }
            }
        }
    }

    #[test]
    fn moments_round_trip() {
        let (mu, k) = nb_from_moments(4.0, 4.0 + 16.0 / 2.5);
        assert!((mu - 4.0).abs() < 1e-12 && (k - 2.5).abs() < 1e-9);
        // A variance at or below the mean is raised: k stays finite and positive.
        let (_, k) = nb_from_moments(4.0, 3.0);
        assert!(k.is_finite() && k > 0.0);
    }
}
