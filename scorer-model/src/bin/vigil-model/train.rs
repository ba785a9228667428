//! `train`: fit the model's decision thresholds on labelled data.
//!
//! Why this exists: `z_critical` and `z_warn` trade detection speed against
//! false alarms, and the right trade depends on the traffic. Training picks
//! them from data instead of by hand, deterministically:
//!
//! 1. data: labelled runs, either simulated (training seeds `seed..`, kept
//!    disjoint from `eval`'s default held-out seeds) or one CSV written by
//!    `simulate --format csv` (columns `t`, `fault`, `canary_*`, `stable_*`);
//! 2. a grid of `z_critical` candidates; for each, Vigil is replayed on every
//!    run and scored like `eval` does (false alarms, windows detected, time
//!    to detect) into an `ndarray` matrix, one row per candidate;
//! 3. the chosen `z_critical` is the smallest candidate with no false alarm
//!    whose next-lower grid neighbour has none either (one grid step of
//!    safety margin), among those the one detecting the most windows;
//! 4. `z_warn` is the 99.9th percentile of the canary's test statistic over
//!    healthy ticks (about one warn in a thousand judged healthy ticks),
//!    kept within `[2, z_critical - 0.5]`.

use crate::csv::{InputError, Table};
use crate::detectors::{Alarm, Detector, Vigil};
use crate::eval::{score_run, Cell};
use crate::score::synth_histogram;
use crate::sim::{Run, Tick, SCENARIOS};
use ndarray::{Array1, Array2};
use vigil_scorer::model::Model;
use vigil_scorer::peer::score_canary;
use vigil_scorer::series::SeriesState;
use vigil_scorer::verdict::State;
use vigil_scorer::window::{Counters, TickDelta};

/// One labelled run held in memory.
pub struct LabelledRun {
    /// The ticks (host outcomes dropped: Vigil does not use them).
    pub ticks: Vec<Tick>,
    /// Fault windows, `[start, end)` seconds.
    pub windows: Vec<(u64, u64)>,
}

/// Simulate the training set: every scenario, `runs` seeds from `seed`.
pub fn simulate_training(
    seed: u64,
    runs: u64,
    fault_run_s: u64,
    quiet_run_s: u64,
) -> Vec<LabelledRun> {
    let mut out = Vec::new();
    for s in SCENARIOS {
        let seconds = if s.fault.is_some() {
            fault_run_s
        } else {
            quiet_run_s
        };
        for i in 0..runs {
            let mut run = Run::new(s, seed.wrapping_add(i), seconds);
            let mut ticks = Vec::with_capacity(seconds as usize);
            let mut tick = Tick::default();
            while run.next_tick(&mut tick) {
                let mut t = tick.clone();
                t.hosts = Vec::new();
                ticks.push(t);
            }
            out.push(LabelledRun {
                ticks,
                windows: run.windows(),
            });
        }
    }
    out
}

/// Read a `simulate --format csv` file as one labelled run.
pub fn read_training_csv(table: &Table) -> Result<LabelledRun, InputError> {
    let t_col = table.column("t")?;
    let fault_col = table.column("fault")?;
    let names = [
        "requests",
        "errors",
        "resets",
        "timeouts",
        "retries",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
    ];
    let mut cols = [[0usize; 8]; 2];
    for (prefix, slot) in ["canary_", "stable_"].iter().zip(cols.iter_mut()) {
        for (name, c) in names.iter().zip(slot.iter_mut()) {
            *c = table.column(&format!("{prefix}{name}"))?;
        }
    }
    let ts = table.timestamps(t_col)?;
    let mut ticks = Vec::with_capacity(ts.len());
    let mut windows: Vec<(u64, u64)> = Vec::new();
    let mut open: Option<u64> = None;
    for (row, t) in ts.iter().enumerate() {
        let t = *t as u64;
        let fault = table.non_negative(row, fault_col)? > 0.0;
        match (fault, open) {
            (true, None) => open = Some(t),
            (false, Some(s)) => {
                windows.push((s, t));
                open = None;
            }
            _ => {}
        }
        let mut deltas = [TickDelta::default(), TickDelta::default()];
        for (c, d) in cols.iter().zip(deltas.iter_mut()) {
            let mut v = [0.0f64; 8];
            for (i, col) in c.iter().enumerate() {
                if let Some(x) = v.get_mut(i) {
                    *x = table.non_negative(row, *col)?;
                }
            }
            let [requests, errors, resets, timeouts, retries, p50, p95, p99] = v;
            let n = requests.round() as u64;
            let counters = Counters {
                requests: n,
                errors: (errors.round() as u64).min(n),
                resets: resets.round() as u64,
                timeouts: timeouts.round() as u64,
                retries: retries.round() as u64,
                ..Counters::default()
            };
            let hist = if n > 0 {
                synth_histogram(n, Some(p50), Some(p95), Some(p99), None)
            } else {
                Default::default()
            };
            *d = TickDelta::from_parts(counters, &hist);
        }
        let [canary, stable] = deltas;
        ticks.push(Tick {
            t,
            canary,
            stable,
            hosts: Vec::new(),
            fault,
        });
    }
    if let (Some(s), Some(last)) = (open, ts.last()) {
        windows.push((s, *last as u64 + 1));
    }
    Ok(LabelledRun { ticks, windows })
}

/// Replay Vigil with `model` on every run; summed scoring.
fn replay(runs: &[LabelledRun], model: &Model) -> Cell {
    let mut total = Cell::default();
    for run in runs {
        let mut vigil = Vigil::new(model.clone());
        let mut alarms: Vec<Alarm> = Vec::new();
        for tick in &run.ticks {
            vigil.step(tick, &mut alarms);
        }
        total.add(&score_run(
            &alarms,
            &run.windows,
            run.ticks.len() as u64,
            false,
        ));
    }
    total
}

/// Canary test statistics over healthy judged ticks (no fault active).
fn healthy_statistics(runs: &[LabelledRun], model: &Model) -> Vec<f64> {
    let mut out = Vec::new();
    for run in runs {
        let mut canary = SeriesState::new(model);
        let mut stable = SeriesState::new(model);
        let mut since_fault = u64::MAX / 2;
        for tick in &run.ticks {
            canary.observe(&tick.canary, model);
            stable.observe(&tick.stable, model);
            since_fault = if tick.fault { 0 } else { since_fault + 1 };
            let v = score_canary(&canary, &stable, model);
            if v.state != State::InsufficientData && since_fault > u64::from(model.window_ticks) {
                out.push(v.evidence.statistic);
            }
        }
    }
    out
}

/// Result of training.
pub struct Trained {
    /// The fitted model.
    pub model: Model,
    /// One line per grid candidate, for the log.
    pub grid: Vec<String>,
}

/// Fit `z_critical` and `z_warn` on `runs`, starting from `base`.
pub fn train(runs: &[LabelledRun], base: &Model) -> Trained {
    let candidates: Vec<f64> = (0..13).map(|i| 3.5 + 0.5 * f64::from(i)).collect();
    // Columns: false alarms, windows detected, mean time to detect (s).
    let mut results = Array2::<f64>::zeros((candidates.len(), 3));
    let mut grid = Vec::new();
    for (i, zc) in candidates.iter().enumerate() {
        let model = Model {
            z_critical: *zc,
            z_warn: base.z_warn.min(*zc - 0.5),
            ..base.clone()
        };
        let cell = replay(runs, &model);
        let mean_ttd = if cell.ttd_s.is_empty() {
            f64::INFINITY
        } else {
            cell.ttd_s.iter().sum::<u64>() as f64 / cell.ttd_s.len() as f64
        };
        if let Some(mut row) = results.rows_mut().into_iter().nth(i) {
            row.assign(&Array1::from(vec![
                cell.false_alarms as f64,
                cell.detected as f64,
                mean_ttd,
            ]));
        }
        grid.push(format!(
            "z_critical {zc:.1}: false alarms {}, detected {}/{}, mean time to detect {mean_ttd:.1} s",
            cell.false_alarms, cell.detected, cell.windows
        ));
    }
    let fa = results.column(0).to_vec();
    let detected = results.column(1).to_vec();
    let mut chosen: Option<usize> = None;
    for i in 0..candidates.len() {
        let no_fa = |j: usize| fa.get(j).is_some_and(|f| *f == 0.0);
        let safe = no_fa(i) && (i == 0 || no_fa(i - 1));
        let det = |j: usize| detected.get(j).copied().unwrap_or(0.0);
        if safe && chosen.is_none_or(|c| det(i) > det(c)) {
            chosen = Some(i);
        }
    }
    let zc = chosen
        .and_then(|i| candidates.get(i).copied())
        .unwrap_or(base.z_critical);
    let stats = Array1::from(healthy_statistics(runs, base));
    let z_warn = quantile(&stats, 0.999)
        .unwrap_or(base.z_warn)
        .clamp(2.0, zc - 0.5);
    grid.push(format!(
        "chosen: z_critical {zc:.1}, z_warn {z_warn:.2} (99.9th percentile of {} healthy canary statistics)",
        stats.len()
    ));
    Trained {
        model: Model {
            z_critical: zc,
            z_warn: (z_warn * 100.0).round() / 100.0,
            ..base.clone()
        },
        grid,
    }
}

/// Empirical quantile (nearest rank), `None` when empty.
fn quantile(values: &Array1<f64>, q: f64) -> Option<f64> {
    let mut v = values.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_nearest_rank() {
        let a = Array1::from(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(quantile(&a, 0.5), Some(3.0));
        assert_eq!(quantile(&a, 1.0), Some(5.0));
        assert_eq!(quantile(&Array1::from(vec![]), 0.5), None);
    }
}
