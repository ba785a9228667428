//! `bench`: the scorer's cost per series per tick, with a baseline measured
//! in the same run.
//!
//! Why this exists: the lease holder scores every series every tick inside
//! Envoy; the budget is 1 µs per series per tick on the host. The baseline
//! (merging the same tick deltas into a histogram, the least any scorer must
//! do) tells a slow machine apart from a slow scorer.

use crate::sim::{scenario, Run, Tick};
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;
use vigil_scorer::histogram::LatencyHistogram;
use vigil_scorer::model::Model;
use vigil_scorer::sequential::CanaryMonitor;
use vigil_scorer::series::SeriesState;
use vigil_scorer::window::TickDelta;

/// One measurement.
pub struct Measure {
    /// What was measured.
    pub name: &'static str,
    /// Nanoseconds per series per tick.
    pub ns: f64,
}

/// Run the benchmark: `ticks` ticks of `pairs` canary/stable pairs.
pub fn run(ticks: usize, pairs: usize, model: &Model) -> Vec<Measure> {
    // Realistic deltas: the A/A scenario at 100 rps (20 canary, 80 stable).
    let mut deltas: Vec<(TickDelta, TickDelta)> = Vec::new();
    if let Some(s) = scenario("aa") {
        let mut r = Run::new(s, 42, 256);
        let mut tick = Tick::default();
        while r.next_tick(&mut tick) {
            deltas.push((tick.canary.clone(), tick.stable.clone()));
        }
    }
    if deltas.is_empty() {
        return Vec::new();
    }
    let pairs = pairs.max(1);
    let ticks = ticks.max(1);
    let series = (2 * pairs * ticks) as f64;
    let delta = |t: usize, p: usize| deltas.get((t + 7 * p) % deltas.len());

    // Baseline: merge each delta into a histogram and read a quantile.
    let mut hists = vec![LatencyHistogram::new(); 2 * pairs];
    let start = Instant::now();
    for t in 0..ticks {
        for p in 0..pairs {
            if let (Some((c, s)), Some([hc, hs])) = (delta(t, p), hists.get_mut(2 * p..2 * p + 2)) {
                hc.merge_sparse(&c.latency);
                hs.merge_sparse(&s.latency);
                black_box(hc.quantile_us(0.95));
                black_box(hs.quantile_us(0.95));
            }
        }
    }
    let baseline = start.elapsed().as_nanos() as f64 / series;

    let mut states: Vec<SeriesState> = (0..2 * pairs).map(|_| SeriesState::new(model)).collect();
    let mut monitors: Vec<CanaryMonitor> = (0..pairs).map(|_| CanaryMonitor::new(model)).collect();
    // Observe only.
    let start = Instant::now();
    for t in 0..ticks {
        for p in 0..pairs {
            if let (Some((c, s)), Some([sc, ss])) = (delta(t, p), states.get_mut(2 * p..2 * p + 2))
            {
                sc.observe(c, model);
                ss.observe(s, model);
            }
        }
    }
    let observe = start.elapsed().as_nanos() as f64 / series;

    // What the lease holder does: observe both, score the stable against
    // its baseline and the canary against the stable.
    let start = Instant::now();
    let mut sum = 0u64;
    for t in 0..ticks {
        for p in 0..pairs {
            if let (Some((c, s)), Some([sc, ss])) = (delta(t, p), states.get_mut(2 * p..2 * p + 2))
            {
                sc.observe(c, model);
                ss.observe(s, model);
                sum += u64::from(ss.score_self(model).score);
                if let Some(m) = monitors.get_mut(p) {
                    sum += u64::from(m.update(sc, ss, model).score);
                }
            }
        }
    }
    black_box(sum);
    let full = start.elapsed().as_nanos() as f64 / series;
    let bytes = (states.iter().map(SeriesState::state_bytes).sum::<usize>()
        + monitors.len() * std::mem::size_of::<CanaryMonitor>()) as f64
        / states.len().max(1) as f64;
    vec![
        Measure {
            name: "baseline (histogram merge + p95)",
            ns: baseline,
        },
        Measure {
            name: "observe",
            ns: observe,
        },
        Measure {
            name: "observe + score (per series per tick)",
            ns: full,
        },
        Measure {
            name: "bytes of state per series",
            ns: bytes,
        },
    ]
}

/// Series counts of the scale sweep (`bench` without `--pairs`).
pub const SCALES: [usize; 4] = [1, 100, 1_000, 10_000];

/// The sweep: every scale of [`SCALES`] with about the same total work
/// (`ticks` ticks at 100 series), so each run takes about as long.
pub fn sweep(ticks: usize, model: &Model) -> Vec<(usize, usize, Vec<Measure>)> {
    SCALES
        .iter()
        .map(|&series| {
            let pairs = series.div_ceil(2);
            let t = (ticks * 100 / series.max(1)).clamp(20, 1_000_000);
            (series, t, run(t, pairs, model))
        })
        .collect()
}

/// Text table.
pub fn table(measures: &[Measure], ticks: usize, pairs: usize) -> String {
    let mut out = format!(
        "vigil-model bench: {ticks} ticks x {pairs} canary/stable pairs (A/A deltas, 20 + 80 rps)\n"
    );
    for m in measures {
        let unit = if m.name.starts_with("bytes") {
            "B"
        } else {
            "ns"
        };
        out.push_str(&format!("{:<40} {:>9.1} {unit}\n", m.name, m.ns));
    }
    if let (Some(b), Some(f)) = (measures.first(), measures.get(2)) {
        out.push_str(&format!(
            "scoring costs {:.1}x the baseline; budget 1000 ns per series per tick: {}\n",
            f.ns / b.ns.max(1e-9),
            if f.ns <= 1000.0 { "PASS" } else { "FAIL" }
        ));
    }
    out
}

/// JSON form (timings vary by machine; this output is not deterministic).
pub fn to_json(measures: &[Measure], ticks: usize, pairs: usize) -> Value {
    json!({
        "ticks": ticks,
        "pairs": pairs,
        "results": measures.iter().take(3).map(|m| json!({"name": m.name, "ns_per_series_tick": m.ns})).collect::<Vec<_>>(),
        "bytes_per_series": measures.get(3).map(|m| m.ns),
        "budget_ns": 1000,
    })
}
