//! What a Flagger-style rule would have let through, from the same request log.
//!
//! The rule: every `interval` (1 minute) check the canary's last interval — success rate
//! ≥ 99 % and p99 ≤ 500 ms — and roll back after `threshold` (5) failed checks. Until
//! then the canary keeps its weight. From the fault on, the first check comes on average
//! half an interval later, then `threshold - 1` more intervals pass: the canary is
//! exposed for `interval/2 + (threshold-1)·interval` = 270 s at its weight. The bad-request
//! rate during that time is the one measured on the degraded canary in the request log
//! (its requests between the fault and Vigil's steering), at the same weight and rps.

/// The rule's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Check interval, seconds.
    pub interval_s: f64,
    /// Failed checks before rollback.
    pub threshold: u32,
    /// Minimum success rate.
    pub min_success: f64,
    /// Maximum p99, ms.
    pub max_p99_ms: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            interval_s: 60.0,
            threshold: 5,
            min_success: 0.99,
            max_p99_ms: 500.0,
        }
    }
}

/// One canary response of the degraded sample: latency (None: no response), success.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Latency in ms (None: transport error).
    pub latency_ms: Option<f64>,
    /// 2xx.
    pub ok: bool,
}

/// The baseline's estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Would the rule's check fail on the degraded canary (so it eventually rolls back)?
    pub rule_fails: bool,
    /// Seconds the canary keeps its weight under the rule after the fault.
    pub exposure_s: f64,
    /// Canary success rate in the sample.
    pub success_rate: f64,
    /// Canary p99 in the sample, ms.
    pub p99_ms: f64,
    /// Failed (non-2xx / no response) requests let through.
    pub failed: u64,
    /// Slow (> max_p99_ms) successful requests let through.
    pub slow: u64,
}

/// Estimates the rule's failed and slow requests for a canary receiving `canary_rps`.
/// An empty sample estimates nothing (zeros).
pub fn estimate(rule: Rule, sample: &[Sample], canary_rps: f64) -> Estimate {
    let n = sample.len() as f64;
    let exposure_s =
        rule.interval_s / 2.0 + f64::from(rule.threshold.saturating_sub(1)) * rule.interval_s;
    if sample.is_empty() {
        return Estimate {
            rule_fails: false,
            exposure_s,
            success_rate: 1.0,
            p99_ms: 0.0,
            failed: 0,
            slow: 0,
        };
    }
    let failed = sample.iter().filter(|s| !s.ok).count() as f64;
    let slow = sample
        .iter()
        .filter(|s| s.ok && s.latency_ms.is_some_and(|l| l > rule.max_p99_ms))
        .count() as f64;
    let mut lat: Vec<f64> = sample
        .iter()
        .map(|s| s.latency_ms.unwrap_or(f64::INFINITY))
        .collect();
    lat.sort_by(f64::total_cmp);
    let idx = ((0.99 * n).ceil() as usize)
        .saturating_sub(1)
        .min(lat.len() - 1);
    let p99_ms = lat.get(idx).copied().unwrap_or(0.0);
    let success_rate = 1.0 - failed / n;
    let rule_fails = success_rate < rule.min_success || p99_ms > rule.max_p99_ms;
    let total = canary_rps * exposure_s;
    Estimate {
        rule_fails,
        exposure_s,
        success_rate,
        p99_ms,
        failed: (failed / n * total).round() as u64,
        slow: (slow / n * total).round() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_percent_errors_at_25_rps() {
        let sample: Vec<Sample> = (0..100)
            .map(|i| Sample {
                latency_ms: Some(100.0),
                ok: i % 20 != 0,
            })
            .collect();
        let e = estimate(Rule::default(), &sample, 25.0);
        assert!(e.rule_fails);
        assert_eq!(e.exposure_s, 270.0);
        assert_eq!(e.failed, 338); // 5 % of 25 rps × 270 s
        assert_eq!(e.slow, 0);
    }

    #[test]
    fn healthy_sample_does_not_fail_the_rule() {
        let sample: Vec<Sample> = (0..100)
            .map(|_| Sample {
                latency_ms: Some(100.0),
                ok: true,
            })
            .collect();
        let e = estimate(Rule::default(), &sample, 10.0);
        assert!(!e.rule_fails);
        assert_eq!(e.failed, 0);
        assert_eq!(estimate(Rule::default(), &[], 10.0).failed, 0);
    }
}
