//! Small, allocation-free test statistics shared by the self and peer scorers.
//!
//! Why this exists: the scorer judges small samples (a canary may have 20
//! requests per tick) where the textbook normal-approximation z tests are
//! badly anti-conservative for rare events — two canary errors against a
//! clean stable already give a pooled two-proportion z above 5. That would
//! make an identical canary flap. The statistics here are the signed root of
//! the likelihood-ratio (deviance / G) statistic with a continuity
//! correction, which tracks the exact binomial / Fisher tail to within a few
//! tenths of a z unit down to single-digit counts, yet costs a handful of
//! `ln` calls, O(1), no tables.
//!
//! All functions are one-sided (they measure "worse than the reference"),
//! return a finite value in `[0, MAX_Z]`, and never panic on any input
//! (zero counts, counts above totals, NaN probabilities).

use crate::model::Model;
use crate::verdict::{Signal, State};

/// Upper bound of every statistic returned here (keeps scores and JSON finite).
pub const MAX_Z: f64 = 50.0;

/// `a / b`, or 0 when `b` is 0 (or the result is not finite).
#[inline]
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        finite_or_zero(a / b)
    } else {
        0.0
    }
}

/// `x` when finite, else 0.
#[inline]
pub fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// `o * ln(o / e)`, with the `0 * ln 0 = 0` convention; 0 for degenerate input.
#[inline]
fn xlogx_over(o: f64, e: f64) -> f64 {
    if o > 0.0 && e > 0.0 {
        o * (o / e).ln()
    } else {
        0.0
    }
}

#[inline]
fn root_of_deviance(deviance_half: f64) -> f64 {
    let d = finite_or_zero(deviance_half).max(0.0);
    (2.0 * d).sqrt().min(MAX_Z)
}

/// One-sided test that `k` events out of `n` trials exceed the expected
/// share `p0`: the signed root of the binomial deviance with a continuity
/// correction. 0 when `k` is not above `n * p0` (by more than half an event).
pub fn binomial_upper_z(k: u64, n: u64, p0: f64) -> f64 {
    if n == 0 || p0.is_nan() {
        return 0.0;
    }
    let n_f = n as f64;
    let k_f = (k.min(n)) as f64;
    let p = p0.clamp(1e-12, 1.0 - 1e-12);
    let expected = n_f * p;
    let kc = k_f - 0.5;
    if kc <= expected {
        return 0.0;
    }
    let rest = n_f - kc; // >= 0.5
    root_of_deviance(xlogx_over(kc, expected) + xlogx_over(rest, n_f - expected))
}

/// One-sided comparison of two proportions, "is `x1 / n1` above `x2 / n2`":
/// the signed root of the 2x2 G statistic with a (Yates-style) continuity
/// correction of half an event. 0 when the first proportion is not higher
/// (by more than half an event), or when either sample is empty.
pub fn two_proportion_upper_z(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 0.0;
    }
    let (x1, x2) = (x1.min(n1) as f64, x2.min(n2) as f64);
    let (n1, n2) = (n1 as f64, n2 as f64);
    let total = n1 + n2;
    let events = x1 + x2;
    if events <= 0.0 || events >= total {
        return 0.0;
    }
    // Expected cell counts under "same proportion".
    let e_a = n1 * events / total;
    let e_b = n1 - e_a;
    let e_c = n2 * events / total;
    let e_d = n2 - e_c;
    if x1 - 0.5 <= e_a {
        return 0.0;
    }
    // Observed cells moved half an event towards independence, margins kept.
    let a = x1 - 0.5;
    let b = n1 - x1 + 0.5;
    let c = x2 + 0.5;
    let d = n2 - x2 - 0.5;
    root_of_deviance(
        xlogx_over(a, e_a) + xlogx_over(b, e_b) + xlogx_over(c, e_c) + xlogx_over(d, e_d),
    )
}

/// Map a test statistic to the 0–1000 anomaly score: 0 at `z <= 0`, linear
/// to 400 at `z_warn`, linear to 700 at `z_critical`, then approaching 1000
/// (exponentially, with the warn→critical distance as scale). Monotone.
pub fn score_from_z(z: f64, model: &Model) -> u16 {
    score_from_thresholds(z, model.z_warn, model.z_critical)
}

/// [`score_from_z`] for any statistic with its own thresholds: 0 at `stat
/// <= 0`, 400 at `warn`, 700 at `critical`, approaching 1000 above. Used with
/// a log e-value by [`crate::sequential::CanaryMonitor`]. Monotone in `stat`.
pub fn score_from_thresholds(stat: f64, warn: f64, critical: f64) -> u16 {
    if stat.is_nan() || stat <= 0.0 {
        return 0;
    }
    let zw = if warn > 0.0 && warn.is_finite() {
        warn
    } else {
        3.0
    };
    let zc = if critical > zw && critical.is_finite() {
        critical
    } else {
        zw + 2.0
    };
    let z = stat;
    let s = if z < zw {
        400.0 * z / zw
    } else if z < zc {
        400.0 + 300.0 * (z - zw) / (zc - zw)
    } else {
        700.0 + 300.0 * (1.0 - (-(z - zc) / (zc - zw)).exp())
    };
    finite_or_zero(s).clamp(0.0, 1000.0).floor() as u16
}

/// One signal's test result, as input to [`decide`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// Which signal.
    pub signal: Signal,
    /// Its statistic (one-sided z, >= 0).
    pub z: f64,
    /// Whether the minimum-evidence rules for `critical` hold for it.
    pub evidence_ok: bool,
}

/// The outcome of [`decide`]: state, score, the deciding signal and its z.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub state: State,
    pub score: u16,
    pub signal: Signal,
    pub statistic: f64,
}

/// Turn per-signal results into a state and a score consistent with it:
/// `critical` when some signal has `z >= z_critical` and its minimum
/// evidence (score 700–1000); else `warn` when the strongest `z >= z_warn`
/// (score 400–699); else `ok` (score below 400, signal `None`).
pub(crate) fn decide(candidates: &[Candidate], model: &Model) -> Decision {
    decide_with(candidates, model.z_warn, model.z_critical)
}

/// [`decide`] with explicit warn and critical thresholds on the statistic.
pub(crate) fn decide_with(candidates: &[Candidate], z_warn: f64, z_critical: f64) -> Decision {
    let mut critical: Option<Candidate> = None;
    let mut strongest: Option<Candidate> = None;
    for c in candidates {
        let z = finite_or_zero(c.z).max(0.0);
        let c = Candidate { z, ..*c };
        if z >= z_critical && c.evidence_ok && critical.is_none_or(|b| z > b.z) {
            critical = Some(c);
        }
        if strongest.is_none_or(|b| z > b.z) {
            strongest = Some(c);
        }
    }
    if let Some(c) = critical {
        return Decision {
            state: State::Critical,
            score: score_from_thresholds(c.z, z_warn, z_critical).max(700),
            signal: c.signal,
            statistic: c.z,
        };
    }
    match strongest {
        Some(c) if c.z >= z_warn => Decision {
            state: State::Warn,
            score: score_from_thresholds(c.z, z_warn, z_critical).clamp(400, 699),
            signal: c.signal,
            statistic: c.z,
        },
        _ => {
            let z = strongest.map_or(0.0, |c| c.z);
            Decision {
                state: State::Ok,
                score: score_from_thresholds(z, z_warn, z_critical).min(399),
                signal: Signal::None,
                statistic: z,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact upper binomial tail P(X >= k), X ~ Bin(n, p), by summation.
    fn exact_binomial_tail(k: u64, n: u64, p: f64) -> f64 {
        let mut pmf = (1.0 - p).powi(n as i32);
        let mut tail = 0.0;
        for j in 0..=n {
            if j >= k {
                tail += pmf;
            }
            pmf *= (n - j) as f64 / (j + 1) as f64 * p / (1.0 - p);
        }
        tail
    }

    /// z such that the standard normal upper tail is `p` (bisection).
    fn z_of_tail(p: f64) -> f64 {
        let tail = |z: f64| 0.5 * erfc(z / std::f64::consts::SQRT_2);
        let (mut lo, mut hi) = (-10.0, 40.0);
        for _ in 0..200 {
            let mid = (lo + hi) / 2.0;
            if tail(mid) > p {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Complementary error function (Numerical Recipes erfcc, 1.2e-7 rel).
    fn erfc(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let r = t
            * (-z * z - 1.26551223
                + t * (1.00002368
                    + t * (0.37409196
                        + t * (0.09678418
                            + t * (-0.18628806
                                + t * (0.27886807
                                    + t * (-1.13520398
                                        + t * (1.48851587
                                            + t * (-0.82215223 + t * 0.17087277)))))))))
                .exp();
        if x >= 0.0 {
            r
        } else {
            2.0 - r
        }
    }

    #[test]
    fn binomial_z_tracks_exact_tail() {
        for &(n, p) in &[
            (20u64, 0.05),
            (60, 0.05),
            (240, 0.05),
            (60, 0.01),
            (1000, 0.002),
        ] {
            for k in 0..=n.min(40) {
                let exact = exact_binomial_tail(k, n, p);
                if !(1e-14..0.5).contains(&exact) {
                    continue;
                }
                let z_exact = z_of_tail(exact);
                let z = binomial_upper_z(k, n, p);
                assert!(
                    (z - z_exact).abs() < 0.45,
                    "n={n} p={p} k={k}: z={z:.3} exact={z_exact:.3}"
                );
            }
        }
    }

    #[test]
    fn two_proportion_is_not_fooled_by_rare_events() {
        // Two canary errors in 60 against a clean stable of 800: a pooled
        // z-test says > 5; the exact (Fisher) tail is ~0.005 (z ~2.6).
        let z = two_proportion_upper_z(2, 60, 0, 800);
        assert!(z > 2.0 && z < 3.0, "{z}");
        // Five of five: exact ~1.7e-6 (z ~4.6).
        let z = two_proportion_upper_z(5, 60, 0, 800);
        assert!(z > 4.2 && z < 5.0, "{z}");
        // A real 20 % error canary over two ticks is unmistakable.
        let z = two_proportion_upper_z(8, 40, 1, 800);
        assert!(z > 5.0, "{z}");
    }

    #[test]
    fn one_sided_and_degenerate_inputs() {
        assert_eq!(two_proportion_upper_z(0, 60, 10, 800), 0.0);
        assert_eq!(two_proportion_upper_z(1, 60, 40, 800), 0.0);
        assert_eq!(two_proportion_upper_z(5, 0, 0, 800), 0.0);
        assert_eq!(two_proportion_upper_z(5, 60, 0, 0), 0.0);
        assert_eq!(two_proportion_upper_z(60, 60, 800, 800), 0.0);
        assert!(two_proportion_upper_z(60, 60, 0, 800) <= MAX_Z);
        assert!(two_proportion_upper_z(999, 60, 0, 800).is_finite());
        assert_eq!(binomial_upper_z(0, 60, 0.05), 0.0);
        assert_eq!(binomial_upper_z(3, 60, 0.05), 0.0);
        assert_eq!(binomial_upper_z(3, 0, 0.05), 0.0);
        assert_eq!(binomial_upper_z(3, 60, f64::NAN), 0.0);
        assert!(binomial_upper_z(60, 60, 0.0) <= MAX_Z);
        assert!(binomial_upper_z(u64::MAX, u64::MAX, 1.0).is_finite());
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(finite_or_zero(f64::NAN), 0.0);
    }

    #[test]
    fn score_mapping_is_monotone_with_anchors() {
        let m = Model::default();
        assert_eq!(score_from_z(-1.0, &m), 0);
        assert_eq!(score_from_z(0.0, &m), 0);
        assert_eq!(score_from_z(f64::NAN, &m), 0);
        assert_eq!(score_from_z(3.0, &m), 400);
        assert_eq!(score_from_z(5.0, &m), 700);
        assert!(score_from_z(2.999, &m) < 400);
        assert!(score_from_z(4.999, &m) < 700);
        assert!(score_from_z(20.0, &m) > 990);
        assert!(score_from_z(f64::INFINITY, &m) <= 1000);
        let mut prev = 0;
        let mut z = 0.0;
        while z < 60.0 {
            let s = score_from_z(z, &m);
            assert!(s >= prev, "z={z}");
            prev = s;
            z += 0.01;
        }
    }
}
