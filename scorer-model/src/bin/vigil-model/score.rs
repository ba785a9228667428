//! `score`: replay any CSV time series through the scorer, one verdict per row.
//!
//! Why this exists: the scorer must be checkable on real-world series, not
//! only on our simulator. Each row is one tick of one series; its columns
//! are mapped to features with `--column NAME=FEATURE`; the row becomes a
//! [`TickDelta`] (a latency histogram is synthesised so that it reproduces
//! the given quantiles) and the series is judged against its own baseline
//! ([`SeriesState::score_self`]), exactly as the filter does every tick.

use crate::csv::{InputError, Table};
use vigil_scorer::histogram::{bucket_index, LatencyHistogram};
use vigil_scorer::model::Model;
use vigil_scorer::series::SeriesState;
use vigil_scorer::window::{Counters, TickDelta};

/// Features a column can be mapped to.
pub const FEATURES: &[&str] = &[
    "requests",
    "errors",
    "error_ratio",
    "resets",
    "timeouts",
    "retries",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
];

/// Column → feature mapping, resolved against a table.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    cols: Vec<(usize, &'static str)>,
}

impl Mapping {
    /// Resolve `NAME=FEATURE` pairs; unknown features are usage errors
    /// (`Err(String)`), unknown columns input errors.
    pub fn resolve(
        table: &Table,
        pairs: &[(String, String)],
    ) -> Result<Result<Mapping, InputError>, String> {
        let mut cols = Vec::new();
        for (name, feature) in pairs {
            let Some(f) = FEATURES.iter().find(|f| **f == feature.as_str()) else {
                return Err(format!(
                    "--column {name}={feature}: unknown feature (features: {})",
                    FEATURES.join(", ")
                ));
            };
            match table.column(name) {
                Ok(i) => cols.push((i, *f)),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(Mapping { cols }))
    }

    /// Build row `row`'s delta; `default_requests` when no column gives
    /// the request count.
    pub fn delta(
        &self,
        table: &Table,
        row: usize,
        default_requests: u64,
    ) -> Result<TickDelta, InputError> {
        let mut values: [Option<f64>; 10] = [None; 10];
        for (col, feature) in &self.cols {
            let v = table.non_negative(row, *col)?;
            if let Some(i) = FEATURES.iter().position(|f| f == feature) {
                if let Some(slot) = values.get_mut(i) {
                    *slot = Some(v);
                }
            }
        }
        let get = |name: &str| {
            FEATURES
                .iter()
                .position(|f| *f == name)
                .and_then(|i| values.get(i).copied().flatten())
        };
        let requests = get("requests").map_or(default_requests, |r| r.round() as u64);
        let errors = match (get("errors"), get("error_ratio")) {
            (Some(e), _) => e.round() as u64,
            (None, Some(r)) => (r.min(1.0) * requests as f64).round() as u64,
            (None, None) => 0,
        }
        .min(requests);
        let counters = Counters {
            requests,
            errors,
            resets: get("resets").map_or(0, |v| v.round() as u64),
            timeouts: get("timeouts").map_or(0, |v| v.round() as u64),
            retries: get("retries").map_or(0, |v| v.round() as u64),
            ..Counters::default()
        };
        let hist = synth_histogram(
            requests,
            get("latency_p50_ms"),
            get("latency_p95_ms"),
            get("latency_p99_ms"),
            get("latency_mean_ms"),
        );
        let mut delta = TickDelta::from_parts(counters, &hist);
        let mean_us = get("latency_mean_ms").map(|m| m * 1000.0);
        delta.counters.latency_sum_us = mean_us.map_or(0, |m| (m * requests as f64) as u64);
        Ok(delta)
    }
}

/// A histogram of `n` values reproducing the given quantiles: 50 % at p50,
/// 44 % between p50 and p95, 5 % at p95, 1 % at p99 (missing quantiles are
/// taken from the nearest given one; with only a mean, every value is it).
pub fn synth_histogram(
    n: u64,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    mean: Option<f64>,
) -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    let any = p50.or(p95).or(p99).or(mean);
    let Some(any) = any else { return h };
    let p50 = p50.or(mean).unwrap_or(any);
    let p95 = p95.unwrap_or(p50.max(p99.unwrap_or(p50)));
    let p99 = p99.unwrap_or(p95).max(p95);
    let n = n.min(u64::from(u32::MAX));
    let a = n / 2;
    let d = n / 100;
    let c = n * 5 / 100;
    let b = n - a - c - d;
    for (ms, k) in [(p50, a), ((p50 + p95) / 2.0, b), (p95, c), (p99, d)] {
        h.add_to_bucket(bucket_index((ms * 1000.0) as u64), k as u32);
    }
    h
}

/// One output row.
pub struct Scored {
    /// Timestamp of the row.
    pub t: f64,
    /// Score 0–1000.
    pub score: u16,
    /// State name.
    pub state: &'static str,
    /// Reason with numbers.
    pub reason: String,
}

/// Score every row of `table`.
pub fn score_table(
    table: &Table,
    ts_col: usize,
    mapping: &Mapping,
    default_requests: u64,
    model: &Model,
) -> Result<Vec<Scored>, InputError> {
    let ts = table.timestamps(ts_col)?;
    let mut state = SeriesState::new(model);
    let mut out = Vec::with_capacity(table.len());
    for (row, t) in ts.iter().enumerate() {
        let delta = mapping.delta(table, row, default_requests)?;
        state.observe(&delta, model);
        let v = state.score_self(model);
        out.push(Scored {
            t: *t,
            score: v.score,
            state: v.state.as_str(),
            reason: v.explain(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_histogram_keeps_quantiles() {
        let h = synth_histogram(1000, Some(40.0), Some(90.0), Some(130.0), None);
        assert_eq!(h.count(), 1000);
        let q = |q: f64| h.quantile_us(q).unwrap() / 1000.0;
        assert!((q(0.5) - 40.0).abs() / 40.0 < 0.02);
        assert!((q(0.95) - 90.0).abs() / 90.0 < 0.02);
        assert!((q(1.0) - 130.0).abs() / 130.0 < 0.02);
        assert!(synth_histogram(10, None, None, None, None).is_empty());
    }
}
