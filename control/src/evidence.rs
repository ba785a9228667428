//! Evidence: what every sidecar reported about a canary's two versions,
//! merged.
//!
//! Why this exists: one sidecar sees only its own callers; a decision needs
//! the sum over every sidecar, per version, over a span of time. A [`Tally`]
//! is that sum for one version (additive counters plus a merged latency
//! histogram, the `vigil_scorer` types, so the scorer's tests apply to it
//! unchanged); a [`PairTally`] holds both versions. The service keeps one
//! for the current analysis tick (fed to the live monitor) and one for the
//! current step (judged at the step's end, persisted so a restart does not
//! lose it). Pure data; JSON round-trips for SQLite.

use crate::spec::Side;
use serde_json::{json, Value};
use vigil_scorer::histogram::LatencyHistogram;
use vigil_scorer::window::{Counters, TickDelta};
use vigil_wire::report::Stream;

/// Merged counters and latency of one version over a span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Counters, summed.
    pub counters: Counters,
    /// Latency histogram, merged.
    pub latency: LatencyHistogram,
    /// Time-to-first-byte histogram, merged (the TTFT test's evidence).
    pub ttft: LatencyHistogram,
    /// Response body chunks, inter-chunk gap sum (µs) and gaps, summed.
    pub stream_chunks: u64,
    /// See [`Tally::stream_chunks`].
    pub gap_sum_us: u64,
    /// See [`Tally::stream_chunks`].
    pub gaps: u64,
}

impl Tally {
    /// Add one sidecar's tick delta.
    pub fn add_delta(&mut self, delta: &TickDelta) {
        self.counters.add(&delta.counters);
        self.latency.merge_sparse(&delta.latency);
    }

    /// Add one sidecar's tick TTFT histogram and stream shape.
    pub fn add_stream(&mut self, stream: &Stream) {
        self.ttft.merge_sparse(&stream.ttft);
        self.stream_chunks = self.stream_chunks.saturating_add(stream.chunks);
        self.gap_sum_us = self.gap_sum_us.saturating_add(stream.gap_sum_us);
        self.gaps = self.gaps.saturating_add(stream.gaps);
    }

    /// Add another tally.
    pub fn add(&mut self, other: &Tally) {
        self.counters.add(&other.counters);
        self.latency.merge(&other.latency);
        self.ttft.merge(&other.ttft);
        self.stream_chunks = self.stream_chunks.saturating_add(other.stream_chunks);
        self.gap_sum_us = self.gap_sum_us.saturating_add(other.gap_sum_us);
        self.gaps = self.gaps.saturating_add(other.gaps);
    }

    /// As one tick delta (what the scorer's `SeriesState` consumes).
    pub fn to_delta(&self) -> TickDelta {
        TickDelta::from_parts(self.counters, &self.latency)
    }

    /// Error ratio (0 when empty).
    pub fn error_ratio(&self) -> f64 {
        let c = &self.counters;
        if c.requests == 0 {
            0.0
        } else {
            c.errors.min(c.requests) as f64 / c.requests as f64
        }
    }

    /// Latency quantile in ms.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.latency.quantile_us(q).map(|us| us / 1000.0)
    }

    /// JSON form (counters plus sparse histogram).
    pub fn to_json(&self) -> Value {
        let c = &self.counters;
        json!({
            "requests": c.requests, "errors": c.errors, "status_4xx": c.status_4xx,
            "resets": c.resets, "overflows": c.overflows, "timeouts": c.timeouts,
            "retries": c.retries, "latency_sum_us": c.latency_sum_us,
            "server_errors": c.server_errors, "throttled": c.throttled,
            "client_gone": c.client_gone, "grpc_unknown": c.grpc_unknown,
            "latency": self.latency.to_sparse(),
            "ttft": self.ttft.to_sparse(), "stream_chunks": self.stream_chunks,
            "gap_sum_us": self.gap_sum_us, "gaps": self.gaps,
        })
    }

    /// Parse [`Tally::to_json`]'s form; anything malformed gives an empty
    /// tally (evidence is an optimisation across restarts, never trusted for
    /// more than that).
    pub fn from_json(v: &Value) -> Tally {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let counters = Counters {
            requests: n("requests"),
            errors: n("errors"),
            status_4xx: n("status_4xx"),
            resets: n("resets"),
            overflows: n("overflows"),
            timeouts: n("timeouts"),
            retries: n("retries"),
            latency_sum_us: n("latency_sum_us"),
            server_errors: n("server_errors"),
            throttled: n("throttled"),
            client_gone: n("client_gone"),
            grpc_unknown: n("grpc_unknown"),
        };
        let hist = |k: &str| {
            let sparse: Vec<(u16, u32)> = v
                .get(k)
                .cloned()
                .and_then(|l| serde_json::from_value(l).ok())
                .unwrap_or_default();
            let mut h = LatencyHistogram::new();
            h.merge_sparse(&sparse);
            h
        };
        Tally {
            counters,
            latency: hist("latency"),
            ttft: hist("ttft"),
            stream_chunks: n("stream_chunks"),
            gap_sum_us: n("gap_sum_us"),
            gaps: n("gaps"),
        }
    }
}

/// The first sidecar that reported the canary `critical` in a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarCritical {
    /// Sidecar id.
    pub sidecar: String,
    /// Its score.
    pub score: u16,
    /// Its explanation.
    pub reason: String,
}

/// Both versions of one canary over a span, plus what sidecars said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairTally {
    /// The stable version.
    pub stable: Tally,
    /// The canary version.
    pub canary: Tally,
    /// Reports that contributed.
    pub reports: u64,
    /// A sidecar verdict of `critical` for this canary, if any.
    pub critical: Option<SidecarCritical>,
    /// Some of the evidence came from Prometheus (`serve --prometheus`).
    pub prometheus: bool,
    /// The highest p99 gauge Prometheus showed for the canary, µs (it has no
    /// histogram: the gauge supports the p99 SLO check only).
    pub canary_p99_gauge_us: Option<u64>,
}

impl PairTally {
    /// Add a series delta to one side.
    pub fn add(&mut self, side: Side, delta: &TickDelta) {
        match side {
            Side::Stable => self.stable.add_delta(delta),
            Side::Canary => self.canary.add_delta(delta),
        }
    }

    /// Add another pair (the tick into the step).
    pub fn merge(&mut self, other: &PairTally) {
        self.stable.add(&other.stable);
        self.canary.add(&other.canary);
        self.reports = self.reports.saturating_add(other.reports);
        if self.critical.is_none() {
            self.critical.clone_from(&other.critical);
        }
        self.prometheus |= other.prometheus;
        self.canary_p99_gauge_us = self.canary_p99_gauge_us.max(other.canary_p99_gauge_us);
    }

    /// JSON form (the sidecar verdict is not persisted: it acts at once).
    pub fn to_json(&self) -> Value {
        json!({"stable": self.stable.to_json(), "canary": self.canary.to_json(), "reports": self.reports})
    }

    /// Parse [`PairTally::to_json`]'s form (lenient, see [`Tally::from_json`]).
    pub fn from_json(v: &Value) -> PairTally {
        PairTally {
            stable: v.get("stable").map(Tally::from_json).unwrap_or_default(),
            canary: v.get("canary").map(Tally::from_json).unwrap_or_default(),
            reports: v.get("reports").and_then(Value::as_u64).unwrap_or(0),
            critical: None,
            prometheus: false,
            canary_p99_gauge_us: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_round_trip() {
        let mut p = PairTally::default();
        let d = TickDelta {
            counters: Counters {
                requests: 10,
                errors: 2,
                ..Default::default()
            },
            latency: vec![(5, 4), (9, 6)],
        };
        p.add(Side::Canary, &d);
        p.add(Side::Canary, &d);
        p.add(Side::Stable, &d);
        p.canary.add_stream(&Stream {
            ttft: vec![(300, 3)],
            chunks: 30,
            gap_sum_us: 9_000,
            gaps: 27,
        });
        assert_eq!(p.canary.counters.requests, 20);
        assert_eq!(p.canary.latency.count(), 20);
        assert_eq!((p.canary.ttft.count(), p.canary.gaps), (3, 27));
        assert!((p.canary.error_ratio() - 0.2).abs() < 1e-9);
        let back = PairTally::from_json(&p.to_json());
        assert_eq!(back, p);
        assert_eq!(
            PairTally::from_json(&json!({"stable": 3})),
            PairTally::default()
        );
    }
}
