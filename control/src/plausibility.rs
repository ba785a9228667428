//! Evidence that must add up: per-sidecar plausibility limits applied when
//! one analysis tick's reports are merged.
//!
//! Why this exists: a reporter credential is the one secret a plugin
//! configuration carries, so the evidence one sidecar sends must not be
//! able to decide a canary on its own. Each analysis tick, per canary and
//! per version, every sidecar's contribution is bounded twice before it is
//! merged:
//!
//! 1. **configured maximum** — at most [`Limits::max_requests_per_tick`]
//!    requests per sidecar per version per tick;
//! 2. **the fleet's own distribution** — when two or more sidecars report a
//!    version in the tick, no sidecar may contribute more than
//!    [`Limits::max_sidecar_share`] of that version's merged requests (its
//!    count is capped at `share / (1 - share)` times the sum of the others').
//!
//! The price: where one sidecar legitimately carries most of a version's
//! traffic (one gateway in front of small callers), its evidence is clipped
//! to the rest's total, so decisions take longer — never the other way.
//! With only trusted reporters, `--max-sidecar-share 1` turns the rule off.
//!
//! A contribution over a bound is scaled down, keeping its shape (error,
//! failure and latency proportions): a sidecar reporting 4×10⁹ healthy
//! requests per tick weighs no more than the rest of the fleet together, so
//! it cannot promote a canary the other sidecars see failing. The amount
//! removed is counted (`vigil_control_evidence_clipped_requests_total`).
//! Pure.

use crate::evidence::PairTally;
use std::collections::HashMap;
use vigil_scorer::window::{Counters, TickDelta};
use vigil_wire::report::Stream;

/// The plausibility limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most requests one sidecar may contribute per version per tick.
    pub max_requests_per_tick: u64,
    /// Largest share (0–1] of a version's merged tick one sidecar may have
    /// when others report it too; 1 disables the rule.
    pub max_sidecar_share: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_requests_per_tick: 1_000_000,
            max_sidecar_share: 0.5,
        }
    }
}

/// One sidecar's tick: `[stable, canary]`, each its counters and latency
/// and its TTFT histogram and stream shape.
pub type Contribution = [(TickDelta, Stream); 2];

/// `delta` scaled by `f` in (0, 1): every count floored, so the bounds
/// (errors ≤ requests, histogram ≤ requests) still hold.
pub fn scale(delta: &TickDelta, f: f64) -> TickDelta {
    let f = if f.is_finite() {
        f.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let s = |x: u64| (x as f64 * f).floor() as u64;
    let c = &delta.counters;
    TickDelta {
        counters: Counters {
            requests: s(c.requests),
            errors: s(c.errors),
            status_4xx: s(c.status_4xx),
            resets: s(c.resets),
            overflows: s(c.overflows),
            timeouts: s(c.timeouts),
            retries: s(c.retries),
            latency_sum_us: s(c.latency_sum_us),
            server_errors: s(c.server_errors),
            throttled: s(c.throttled),
            client_gone: s(c.client_gone),
            grpc_unknown: s(c.grpc_unknown),
        },
        latency: delta
            .latency
            .iter()
            .filter_map(|&(b, n)| {
                let m = (f64::from(n) * f).floor() as u32;
                (m > 0).then_some((b, m))
            })
            .collect(),
    }
}

/// `stream` scaled by `f` in (0, 1) like [`scale`] (the TTFT histogram
/// stays within the scaled requests).
pub fn scale_stream(stream: &Stream, f: f64) -> Stream {
    let f = if f.is_finite() {
        f.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let s = |x: u64| (x as f64 * f).floor() as u64;
    Stream {
        ttft: stream
            .ttft
            .iter()
            .filter_map(|&(b, n)| {
                let m = (f64::from(n) * f).floor() as u32;
                (m > 0).then_some((b, m))
            })
            .collect(),
        chunks: s(stream.chunks),
        gap_sum_us: s(stream.gap_sum_us),
        gaps: s(stream.gaps).min(s(stream.chunks)),
    }
}

/// Merge one tick's contributions under `limits`. Returns the merged pair
/// and the requests removed.
pub fn merge(contrib: &HashMap<String, Contribution>, limits: &Limits) -> (PairTally, u64) {
    let mut out = PairTally::default();
    let mut clipped = 0u64;
    for side in 0..2 {
        // After the configured maximum.
        let capped: Vec<(&(TickDelta, Stream), u64)> = contrib
            .values()
            .filter_map(|c| c.get(side))
            .filter(|(d, _)| d.counters.requests > 0)
            .map(|x| (x, x.0.counters.requests.min(limits.max_requests_per_tick)))
            .collect();
        let total: u64 = capped.iter().map(|(_, n)| *n).sum();
        let share = limits.max_sidecar_share;
        let share_rule = capped.len() >= 2 && share > 0.0 && share < 1.0;
        for ((delta, stream), n) in &capped {
            let mut allowed = *n;
            if share_rule {
                let others = total.saturating_sub(*n) as f64;
                let cap = (others * share / (1.0 - share)).floor();
                allowed = allowed.min(cap.min(u64::MAX as f64) as u64);
            }
            let requests = delta.counters.requests;
            let scaled;
            let scaled_stream;
            let (target, target_stream) = if allowed < requests {
                clipped = clipped.saturating_add(requests - allowed);
                let f = allowed as f64 / requests as f64;
                scaled = scale(delta, f);
                scaled_stream = scale_stream(stream, f);
                (&scaled, &scaled_stream)
            } else {
                (delta, stream)
            };
            let tally = match side {
                0 => &mut out.stable,
                _ => &mut out.canary,
            };
            tally.add_delta(target);
            tally.add_stream(target_stream);
        }
    }
    (out, clipped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(requests: u64, errors: u64) -> (TickDelta, Stream) {
        let n = u32::try_from(requests.min(u64::from(u32::MAX))).unwrap();
        let delta = TickDelta {
            counters: Counters {
                requests,
                errors,
                latency_sum_us: requests * 1000,
                ..Default::default()
            },
            latency: vec![(10, n)],
        };
        let stream = Stream {
            ttft: vec![(9, n)],
            ..Stream::default()
        };
        (delta, stream)
    }

    #[test]
    fn one_sidecar_cannot_outweigh_the_fleet() {
        let mut c = HashMap::new();
        c.insert("a".to_string(), [d(100, 0), d(10, 5)]);
        c.insert("b".to_string(), [d(100, 0), d(10, 5)]);
        c.insert("evil".to_string(), [d(0, 0), d(4_000_000_000, 0)]);
        let (p, clipped) = merge(&c, &Limits::default());
        // evil: capped at 1e6, then at the others' 20 requests.
        assert_eq!(p.canary.counters.requests, 40);
        assert_eq!(p.canary.counters.errors, 10);
        assert_eq!(
            p.canary.ttft.count(),
            40,
            "TTFT is clipped with the requests"
        );
        assert!(p.canary.error_ratio() >= 0.25);
        assert_eq!(clipped, 4_000_000_000 - 20);
        assert_eq!(p.stable.counters.requests, 200);
    }

    #[test]
    fn balanced_fleets_pass_unchanged_and_skew_costs_evidence_only() {
        let mut c = HashMap::new();
        c.insert("a".to_string(), [d(100, 1), d(10, 0)]);
        c.insert("b".to_string(), [d(100, 0), d(12, 1)]);
        c.insert("c".to_string(), [d(90, 0), d(11, 0)]);
        let (p, clipped) = merge(&c, &Limits::default());
        assert_eq!(
            (p.stable.counters.requests, p.canary.counters.requests),
            (290, 33)
        );
        assert_eq!(clipped, 0);
        // Two sidecars: neither may outweigh the other; skew costs evidence.
        let mut c = HashMap::new();
        c.insert("a".to_string(), [d(100, 1), d(10, 0)]);
        c.insert("b".to_string(), [d(90, 0), d(12, 1)]);
        let (p, clipped) = merge(&c, &Limits::default());
        assert_eq!(
            (p.stable.counters.requests, p.canary.counters.requests),
            (180, 20)
        );
        assert_eq!(clipped, 12);
        let open = Limits {
            max_sidecar_share: 1.0,
            ..Limits::default()
        };
        let (p, clipped) = merge(&c, &open);
        assert_eq!(
            (p.stable.counters.requests, p.canary.counters.requests),
            (190, 22)
        );
        assert_eq!(clipped, 0);
        // A lone sidecar is bounded by the configured maximum only.
        let mut c = HashMap::new();
        c.insert("a".to_string(), [d(5_000_000, 500), d(10, 0)]);
        let (p, clipped) = merge(&c, &Limits::default());
        assert_eq!(p.stable.counters.requests, 1_000_000);
        assert_eq!(p.stable.counters.errors, 100);
        assert_eq!(clipped, 4_000_000);
    }

    #[test]
    fn scaling_keeps_the_bounds() {
        let s = scale(&d(999, 998).0, 0.001);
        assert!(s.counters.errors <= s.counters.requests);
        let total: u64 = s.latency.iter().map(|(_, n)| u64::from(*n)).sum();
        assert!(total <= s.counters.requests);
    }
}
