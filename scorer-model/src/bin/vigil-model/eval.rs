//! The evaluation: every detector on every scenario, held-out seeds, one
//! scoring rule for all.
//!
//! Why this exists: the "must show" numbers (F1, time to detect,
//! false alarms per day, low-traffic behaviour) come from here, and they must
//! be reproducible: the report is a pure function of the arguments (no
//! clocks, no threads, no hash-map order), so `eval --json` is byte-identical
//! for the same seed.
//!
//! Scoring (per run; a run has at most one fault window `[start, end)`):
//! - an alarm blaming the canary at second `t` with `start <= t < end +
//!   GRACE_S` detects the window; the window counts once however many alarms
//!   fall in it (**true positive**); time to detect = `t - start + 1` seconds
//!   of fault elapsed when the alarm was raised, for the first such alarm;
//! - a fault window with no such alarm is a **false negative**;
//! - every other alarm (outside any window and its grace, or blaming the
//!   healthy stable) is a **false positive**;
//! - precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = their harmonic
//!   mean; summed over runs (and over scenarios for the overall figures).

use crate::detectors::{self, Alarm, Target};
use crate::sim::{Run, Scenario, Tick};
use serde_json::{json, Value};
use vigil_scorer::model::Model;

/// Seconds after a fault window's end during which an alarm still counts as
/// a detection (lets 1-minute tools finish the minute they were measuring).
pub const GRACE_S: u64 = 60;

/// Scenarios whose false alarms are reported per 24 h (no fault, normal
/// traffic).
pub const FALSE_ALARM_SCENARIOS: &[&str] = &["aa", "diurnal", "bursty_steps", "heavy_tail_aa"];

/// Step-fault scenarios at 100 rps whose median time to detect is checked.
pub const STEP_SCENARIOS: &[&str] = &["latency_step", "error_step"];

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// First seed; run `i` of a scenario uses `seed + i`.
    pub seed: u64,
    /// Runs per scenario.
    pub runs: u64,
    /// Length of a run with a fault, seconds.
    pub fault_run_s: u64,
    /// Length of a run without a fault, seconds.
    pub quiet_run_s: u64,
    /// Vigil's model.
    pub model: Model,
    /// Scenarios to run.
    pub scenarios: Vec<&'static Scenario>,
    /// Detectors to run (names from [`detectors::DETECTORS`]).
    pub detectors: Vec<&'static str>,
}

/// Outcome of one detector on one scenario (summed over runs).
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// Runs.
    pub runs: u64,
    /// Fault windows.
    pub windows: u64,
    /// Windows detected (true positives).
    pub detected: u64,
    /// Time to detect of each detected window, seconds.
    pub ttd_s: Vec<u64>,
    /// False alarms (false positives).
    pub false_alarms: u64,
    /// Simulated seconds.
    pub seconds: u64,
    /// Ticks with a verdict other than insufficient data (Vigil only).
    pub judged_ticks: Option<u64>,
}

impl Cell {
    /// TP / (TP + FP), `None` without any alarm or detection.
    pub fn precision(&self) -> Option<f64> {
        let d = self.detected + self.false_alarms;
        (d > 0).then(|| self.detected as f64 / d as f64)
    }
    /// TP / (TP + FN), `None` without fault windows.
    pub fn recall(&self) -> Option<f64> {
        (self.windows > 0).then(|| self.detected as f64 / self.windows as f64)
    }
    /// Harmonic mean of precision and recall, `None` without fault windows.
    pub fn f1(&self) -> Option<f64> {
        let (p, r) = (self.precision().unwrap_or(0.0), self.recall()?);
        Some(if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        })
    }
    /// False alarms per simulated hour.
    pub fn false_alarms_per_hour(&self) -> f64 {
        if self.seconds == 0 {
            0.0
        } else {
            self.false_alarms as f64 * 3600.0 / self.seconds as f64
        }
    }
    /// Sum another cell into this one.
    pub fn add(&mut self, other: &Cell) {
        self.runs += other.runs;
        self.windows += other.windows;
        self.detected += other.detected;
        self.ttd_s.extend_from_slice(&other.ttd_s);
        self.false_alarms += other.false_alarms;
        self.seconds += other.seconds;
        self.judged_ticks = match (self.judged_ticks, other.judged_ticks) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

/// The whole evaluation: `cells[detector][scenario]`.
#[derive(Debug, Clone)]
pub struct Report {
    /// The configuration evaluated.
    pub config: EvalConfig,
    /// Detector names, in order.
    pub detectors: Vec<&'static str>,
    /// One row per detector, one cell per scenario (config order).
    pub cells: Vec<Vec<Cell>>,
}

/// Score one run's alarms against its fault windows (`[start, end)`,
/// seconds, non-overlapping).
/// With `any_target` (a fault of the whole service), an alarm on either
/// series detects a window; otherwise only one blaming the canary does.
pub fn score_run(alarms: &[Alarm], windows: &[(u64, u64)], seconds: u64, any_target: bool) -> Cell {
    let mut cell = Cell {
        runs: 1,
        windows: windows.len() as u64,
        seconds,
        ..Cell::default()
    };
    let mut first: Vec<Option<u64>> = vec![None; windows.len()];
    for a in alarms {
        let inside = windows
            .iter()
            .position(|(s, e)| a.t >= *s && a.t < *e + GRACE_S);
        match (inside, a.target == Target::Canary || any_target) {
            (Some(i), true) => {
                if let Some(slot) = first.get_mut(i) {
                    slot.get_or_insert(a.t);
                }
            }
            _ => cell.false_alarms += 1,
        }
    }
    for (f, (start, _)) in first.iter().zip(windows) {
        if let Some(t) = f {
            cell.detected += 1;
            cell.ttd_s.push(t - start + 1);
        }
    }
    cell
}

/// Run the evaluation.
pub fn evaluate(config: &EvalConfig) -> Report {
    let names: Vec<&'static str> = config.detectors.clone();
    let mut cells = vec![vec![Cell::default(); config.scenarios.len()]; names.len()];
    let mut tick = Tick::default();
    for (si, scenario) in config.scenarios.iter().enumerate() {
        let seconds = if scenario.fault.is_some() {
            config.fault_run_s
        } else {
            config.quiet_run_s
        };
        for i in 0..config.runs {
            let mut run = Run::new(scenario, config.seed.wrapping_add(i), seconds);
            let mut dets: Vec<Box<dyn detectors::Detector>> = names
                .iter()
                .filter_map(|n| detectors::make(n, &config.model))
                .collect();
            let mut alarms: Vec<Vec<Alarm>> = vec![Vec::new(); dets.len()];
            while run.next_tick(&mut tick) {
                for (d, a) in dets.iter_mut().zip(alarms.iter_mut()) {
                    d.step(&tick, a);
                }
            }
            for (di, (d, a)) in dets.iter().zip(&alarms).enumerate() {
                let windows = run.windows();
                let mut cell = score_run(a, &windows, seconds, run.service_fault());
                cell.judged_ticks = d.judged_ticks();
                if let Some(c) = cells.get_mut(di).and_then(|row| row.get_mut(si)) {
                    c.add(&cell);
                }
            }
        }
    }
    Report {
        config: config.clone(),
        detectors: names,
        cells,
    }
}

/// Median, `None` when empty.
pub fn median(values: &[u64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len();
    let mid = n / 2;
    if n % 2 == 1 {
        v.get(mid).map(|x| *x as f64)
    } else {
        match (v.get(mid - 1), v.get(mid)) {
            (Some(a), Some(b)) => Some((*a + *b) as f64 / 2.0),
            _ => None,
        }
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn opt(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |v| json!(round4(v)))
}

/// Headline numbers of one detector.
#[derive(Debug, Clone)]
pub struct Summary {
    /// All scenarios summed.
    pub overall: Cell,
    /// Median time to detect over [`STEP_SCENARIOS`], seconds.
    pub step_median_ttd_s: Option<f64>,
    /// False alarms per 24 simulated hours over [`FALSE_ALARM_SCENARIOS`].
    pub false_alarms_per_day: Option<f64>,
    /// Ticks judged in `low_traffic` (Vigil only).
    pub low_traffic_judged: Option<u64>,
}

impl Report {
    /// Summary of detector `di`.
    pub fn summary(&self, di: usize) -> Summary {
        let row = self.cells.get(di).map(Vec::as_slice).unwrap_or(&[]);
        let mut overall = Cell::default();
        let mut steps = Vec::new();
        let mut quiet = Cell::default();
        let mut low = None;
        for (scenario, cell) in self.config.scenarios.iter().zip(row) {
            overall.add(cell);
            if STEP_SCENARIOS.contains(&scenario.name) {
                steps.extend_from_slice(&cell.ttd_s);
            }
            if FALSE_ALARM_SCENARIOS.contains(&scenario.name) {
                quiet.add(cell);
            }
            if scenario.name == "low_traffic" {
                low = cell.judged_ticks;
            }
        }
        Summary {
            step_median_ttd_s: median(&steps),
            false_alarms_per_day: (quiet.seconds > 0)
                .then(|| quiet.false_alarms as f64 * 86_400.0 / quiet.seconds as f64),
            low_traffic_judged: low,
            overall,
        }
    }

    /// The must-show checks for Vigil, as `(name, value, passed)`.
    pub fn checks(&self) -> Vec<(&'static str, String, bool)> {
        let Some(vi) = self.detectors.iter().position(|d| *d == "vigil") else {
            return Vec::new();
        };
        let vigil = self.summary(vi);
        let vigil_f1 = vigil.overall.f1().unwrap_or(0.0);
        let best = (0..self.detectors.len())
            .filter(|i| *i != vi)
            .map(|i| (i, self.summary(i).overall.f1().unwrap_or(0.0)))
            .fold((None, 0.0f64), |acc, (i, f)| {
                if acc.0.is_none() || f > acc.1 {
                    (Some(i), f)
                } else {
                    acc
                }
            });
        let best_name = best.0.and_then(|i| self.detectors.get(i)).copied();
        let mut out = vec![
            (
                "vigil_f1_at_least_0.95",
                format!("{:.3}", vigil_f1),
                vigil_f1 >= 0.95,
            ),
            (
                "vigil_f1_margin_over_best_incumbent_at_least_0.10",
                format!(
                    "{:+.3} (best incumbent {} {:.3})",
                    vigil_f1 - best.1,
                    best_name.unwrap_or("-"),
                    best.1
                ),
                vigil_f1 - best.1 >= 0.10,
            ),
        ];
        if let Some(m) = vigil.step_median_ttd_s {
            out.push((
                "vigil_step_median_ttd_at_most_5s",
                format!("{m:.1} s"),
                m <= 5.0,
            ));
        }
        if let Some(fa) = vigil.false_alarms_per_day {
            out.push((
                "vigil_false_alarms_per_24h_at_most_1",
                format!("{fa:.3}"),
                fa <= 1.0,
            ));
        }
        if let Some(j) = vigil.low_traffic_judged {
            out.push((
                "vigil_low_traffic_only_insufficient_data",
                format!("{j} judged ticks"),
                j == 0,
            ));
        }
        out
    }

    /// The report as JSON (deterministic: sorted keys, rounded floats).
    pub fn to_json(&self) -> Value {
        let c = &self.config;
        let detectors: Vec<Value> = self
            .detectors
            .iter()
            .enumerate()
            .map(|(di, name)| {
                let row = self.cells.get(di).map(Vec::as_slice).unwrap_or(&[]);
                let scenarios: Vec<Value> = c
                    .scenarios
                    .iter()
                    .zip(row)
                    .map(|(s, cell)| cell_json(s.name, cell))
                    .collect();
                let sum = self.summary(di);
                json!({
                    "detector": name,
                    "scenarios": scenarios,
                    "overall": cell_json("overall", &sum.overall),
                    "step_median_ttd_s": opt(sum.step_median_ttd_s),
                    "false_alarms_per_24h": opt(sum.false_alarms_per_day),
                    "low_traffic_judged_ticks": sum.low_traffic_judged,
                })
            })
            .collect();
        let checks: Vec<Value> = self
            .checks()
            .into_iter()
            .map(|(name, value, pass)| json!({"check": name, "value": value, "pass": pass}))
            .collect();
        json!({
            "seed": c.seed,
            "runs_per_scenario": c.runs,
            "fault_run_s": c.fault_run_s,
            "quiet_run_s": c.quiet_run_s,
            "grace_s": GRACE_S,
            "model": serde_json::to_value(&c.model).unwrap_or(Value::Null),
            "detectors": detectors,
            "checks": checks,
        })
    }

    /// The report as a text table.
    pub fn to_table(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "vigil-model eval: seeds {}..{} ({} runs per scenario), fault runs {} s, quiet runs {} s, grace {} s\n\n",
            c.seed,
            c.seed.wrapping_add(c.runs.saturating_sub(1)),
            c.runs,
            c.fault_run_s,
            c.quiet_run_s,
            GRACE_S
        );
        out.push_str(&format!(
            "{:<16} {:<14} {:>8} {:>9} {:>7} {:>7} {:>6} {:>6} {:>6}\n",
            "scenario", "detector", "detected", "ttd_med_s", "FA", "FA/h", "prec", "recall", "F1"
        ));
        let dash =
            |x: Option<f64>, prec: usize| x.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        for (si, s) in c.scenarios.iter().enumerate() {
            for (di, d) in self.detectors.iter().enumerate() {
                let Some(cell) = self.cells.get(di).and_then(|r| r.get(si)) else {
                    continue;
                };
                out.push_str(&format!(
                    "{:<16} {:<14} {:>8} {:>9} {:>7} {:>7.3} {:>6} {:>6} {:>6}\n",
                    if di == 0 { s.name } else { "" },
                    d,
                    format!("{}/{}", cell.detected, cell.windows),
                    dash(median(&cell.ttd_s), 1),
                    cell.false_alarms,
                    cell.false_alarms_per_hour(),
                    dash(cell.precision(), 3),
                    dash(cell.recall(), 3),
                    dash(cell.f1(), 3),
                ));
            }
        }
        out.push_str(&format!(
            "\n{:<14} {:>8} {:>7} {:>6} {:>6} {:>6} {:>12} {:>9}\n",
            "overall", "detected", "FA", "prec", "recall", "F1", "step_ttd_s", "FA/24h"
        ));
        for (di, d) in self.detectors.iter().enumerate() {
            let s = self.summary(di);
            let o = &s.overall;
            out.push_str(&format!(
                "{:<14} {:>8} {:>7} {:>6} {:>6} {:>6} {:>12} {:>9}\n",
                d,
                format!("{}/{}", o.detected, o.windows),
                o.false_alarms,
                dash(o.precision(), 3),
                dash(o.recall(), 3),
                dash(o.f1(), 3),
                dash(s.step_median_ttd_s, 1),
                dash(s.false_alarms_per_day, 2),
            ));
        }
        out.push_str("\nchecks (Vigil):\n");
        for (name, value, pass) in self.checks() {
            out.push_str(&format!(
                "  [{}] {name}: {value}\n",
                if pass { "PASS" } else { "FAIL" }
            ));
        }
        out
    }
}

fn cell_json(name: &str, cell: &Cell) -> Value {
    json!({
        "scenario": name,
        "runs": cell.runs,
        "fault_windows": cell.windows,
        "detected": cell.detected,
        "time_to_detect_s": cell.ttd_s,
        "median_time_to_detect_s": opt(median(&cell.ttd_s)),
        "false_alarms": cell.false_alarms,
        "simulated_hours": round4(cell.seconds as f64 / 3600.0),
        "false_alarms_per_hour": round4(cell.false_alarms_per_hour()),
        "precision": opt(cell.precision()),
        "recall": opt(cell.recall()),
        "f1": opt(cell.f1()),
        "judged_ticks": cell.judged_ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_rules() {
        let a = |t, target| Alarm { t, target };
        // One window [100, 200): two alarms inside count once, one in the
        // grace counts as inside, one outside and one on the stable are FPs.
        let alarms = [
            a(50, Target::Canary),
            a(105, Target::Canary),
            a(150, Target::Canary),
            a(120, Target::Stable),
            a(200 + GRACE_S - 1, Target::Canary),
            a(200 + GRACE_S, Target::Canary),
        ];
        let c = score_run(&alarms, &[(100, 200)], 1000, false);
        assert_eq!((c.detected, c.windows, c.false_alarms), (1, 1, 3));
        assert_eq!(c.ttd_s, vec![6]);
        assert_eq!(c.precision(), Some(0.25));
        assert_eq!(c.recall(), Some(1.0));
        let quiet = score_run(&[], &[], 3600, false);
        assert_eq!(
            (quiet.precision(), quiet.recall(), quiet.f1()),
            (None, None, None)
        );
        let missed = score_run(&[], &[(1, 2)], 10, false);
        assert_eq!(missed.f1(), Some(0.0));
        assert_eq!(median(&[3, 1, 2]), Some(2.0));
        assert_eq!(median(&[4, 1, 2, 3]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
