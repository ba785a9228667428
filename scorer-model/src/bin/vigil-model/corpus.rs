//! `eval --corpus DIR`: Vigil's self path on labelled real series, beside a
//! rolling z-score and an EWMA chart, at the same false-alarm rates.
//!
//! Why this exists: a score on our own simulator is no evidence about the
//! world. This replays public labelled operational series (CSV files
//! `timestamp,value,label` or `timestamp,<metrics...>,label`) through the
//! self path's [`Track`] — the very code every series runs in the filter —
//! and through two plain incumbents with the same warm-up, then scores them
//! the same way.
//!
//! - **Series**: every `DIR/*.csv`. Columns judged: `--column NAME`
//!   (repeatable), else `value` if present, else every column but
//!   `timestamp` and `label` (a multi-metric service alarms when any of its
//!   metrics does, for every detector alike). `DIR/train/<same file>`, if
//!   present, is unlabelled history fed first to every detector (not
//!   scored).
//! - **Windows**: runs of `label = 1` rows, `[first, last + 1 row)`. An
//!   alarm (rising edge of the detector's score through its threshold) in
//!   a window, or within `--grace-rows` rows after it, detects it (once);
//!   any other alarm is a false alarm. precision = detected / (detected +
//!   false alarms), recall = detected / windows; false alarms per day over
//!   the scored span; time to detect = first alarm - window start.
//! - **Detectors** (per metric, same direction rule `--direction`, same
//!   warm-up `warmup_s`, same spread floor):
//!   `vigil`: [`Track`] statistic (robust baseline, challenger, drift,
//!   CUSUM), the largest over the series' metrics, calibrated on the
//!   series' own history by [`Calibration`] (target `self_alarms_per_day`,
//!   the code the filter's self judge runs on the largest of its signals),
//!   critical at `self_critical`;
//!   `zscore`: |x - mean| / sd over the previous `W = warmup_s / dt` rows;
//!   `ewma`: EWMA chart, λ = 0.2, |ewma - mean| / (sd · sqrt(λ / (2 - λ)))
//!   with mean and sd over the same previous `W` rows.
//! - **Matched false-alarm rates**: each detector's threshold is swept; the
//!   report gives each detector's best F1 among thresholds with false alarms
//!   per day ≤ a budget (`--budget`, default 0.3), and the incumbents' best
//!   F1 at ≤ Vigil's own false-alarm rate at its default threshold.

use crate::csv::Table;
use serde_json::{json, Value};
use vigil_scorer::calibrate::{Calibration, CalibrationParams};
use vigil_scorer::model::Model;
use vigil_scorer::selfbase::{Direction, Track, TrackParams};

/// How the corpus is read and judged.
pub struct CorpusConfig {
    /// Directory of CSV files.
    pub dir: String,
    /// Columns to judge (empty: `value`, else all metric columns).
    pub columns: Vec<String>,
    /// Direction rule for every metric.
    pub direction: Direction,
    /// False alarms per day budget for the matched comparison.
    pub budget: f64,
    /// Rows after a window during which an alarm still detects it.
    pub grace_rows: usize,
    /// Which series (sorted by file name) are judged: all, the tuning half
    /// (even positions) or the held-out half (odd positions).
    pub half: Half,
    /// The model (self-path parameters, in seconds).
    pub model: Model,
}

/// A split of a corpus' series for choosing parameters on one half and
/// reporting on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// Every series.
    All,
    /// Series at even positions (0, 2, ...) of the sorted file names.
    Tune,
    /// Series at odd positions.
    HeldOut,
}

/// One series: per-detector per-row scores (max over metrics), labels.
struct Series {
    name: String,
    /// Where the calibration ended (for the report).
    calibration: Value,
    /// Scored rows' timestamps.
    t: Vec<f64>,
    labels: Vec<bool>,
    /// scores[d][row]
    scores: [Vec<f64>; 3],
    /// Seconds per row (median spacing).
    dt: f64,
}

/// Outcome at one threshold.
#[derive(Debug, Clone, Default)]
struct Tally {
    windows: u64,
    detected: u64,
    false_alarms: u64,
    seconds: f64,
    ttd_s: Vec<f64>,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.windows += o.windows;
        self.detected += o.detected;
        self.false_alarms += o.false_alarms;
        self.seconds += o.seconds;
        self.ttd_s.extend_from_slice(&o.ttd_s);
    }
    fn fa_per_day(&self) -> f64 {
        if self.seconds > 0.0 {
            self.false_alarms as f64 * 86_400.0 / self.seconds
        } else {
            0.0
        }
    }
    fn precision(&self) -> f64 {
        let all = self.detected + self.false_alarms;
        if all == 0 {
            0.0
        } else {
            self.detected as f64 / all as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.windows == 0 {
            0.0
        } else {
            self.detected as f64 / self.windows as f64
        }
    }
    fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }
    fn median_ttd(&self) -> Option<f64> {
        let mut v = self.ttd_s.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            None
        } else if n % 2 == 1 {
            v.get(n / 2).copied()
        } else {
            Some((v.get(n / 2 - 1).copied()? + v.get(n / 2).copied()?) / 2.0)
        }
    }
    fn json(&self, threshold: f64) -> Value {
        json!({
            "threshold": round4(threshold),
            "windows": self.windows,
            "detected": self.detected,
            "false_alarms": self.false_alarms,
            "false_alarms_per_day": round4(self.fa_per_day()),
            "precision": round4(self.precision()),
            "recall": round4(self.recall()),
            "f1": round4(self.f1()),
            "median_ttd_s": self.median_ttd(),
        })
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Score one series' alarms at `threshold` for detector `d`.
fn tally(s: &Series, d: usize, threshold: f64, grace_rows: usize) -> Tally {
    let scores = match s.scores.get(d) {
        Some(v) => v,
        None => return Tally::default(),
    };
    // Windows: runs of label 1 (row ranges, end exclusive).
    let mut windows: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, &l) in s.labels.iter().enumerate() {
        match (l, start) {
            (true, None) => start = Some(i),
            (false, Some(a)) => {
                windows.push((a, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(a) = start {
        windows.push((a, s.labels.len()));
    }
    let mut out = Tally {
        windows: windows.len() as u64,
        seconds: s.t.len() as f64 * s.dt,
        ..Tally::default()
    };
    let mut first: Vec<Option<usize>> = vec![None; windows.len()];
    let mut above = false;
    for (i, &x) in scores.iter().enumerate() {
        let now = x >= threshold;
        if now && !above {
            match windows
                .iter()
                .position(|&(a, b)| i >= a && i < b + grace_rows)
            {
                Some(w) => {
                    if let Some(f) = first.get_mut(w) {
                        f.get_or_insert(i);
                    }
                }
                None => out.false_alarms += 1,
            }
        }
        above = now;
    }
    for (f, (a, _)) in first.iter().zip(&windows) {
        if let Some(i) = f {
            out.detected += 1;
            let ti = s.t.get(*i).copied().unwrap_or(0.0);
            let ta = s.t.get(*a).copied().unwrap_or(0.0);
            out.ttd_s.push(ti - ta);
        }
    }
    out
}

/// Rolling mean and sd over the previous `w` values (shifted sums).
struct Rolling {
    w: usize,
    buf: std::collections::VecDeque<f64>,
    shift: Option<f64>,
    sum: f64,
    sum2: f64,
}

impl Rolling {
    fn new(w: usize) -> Self {
        Rolling {
            w: w.max(2),
            buf: std::collections::VecDeque::new(),
            shift: None,
            sum: 0.0,
            sum2: 0.0,
        }
    }
    fn stats(&self) -> Option<(f64, f64)> {
        let n = self.buf.len();
        if n < self.w.clamp(2, 8) {
            return None;
        }
        let k = self.shift.unwrap_or(0.0);
        let nf = n as f64;
        let mean = self.sum / nf;
        let var = ((self.sum2 - self.sum * mean) / (nf - 1.0)).max(0.0);
        Some((mean + k, var.sqrt()))
    }
    fn push(&mut self, x: f64) {
        let k = *self.shift.get_or_insert(x);
        let y = x - k;
        self.buf.push_back(y);
        self.sum += y;
        self.sum2 += y * y;
        if self.buf.len() > self.w {
            if let Some(old) = self.buf.pop_front() {
                self.sum -= old;
                self.sum2 -= old * old;
            }
        }
    }
}

fn directed(z: f64, dir: Direction) -> f64 {
    match dir {
        Direction::Up => z.max(0.0),
        Direction::Down => (-z).max(0.0),
        Direction::Both => z.abs(),
    }
}

/// Per-metric detectors, fed one value at a time.
struct MetricDetectors {
    track: Track,
    rolling: Rolling,
    ewma: Option<f64>,
    /// EWMA of |x| (scale for the spread floor).
    scale: f64,
    seen_s: f64,
}

const LAMBDA: f64 = 0.2;

impl MetricDetectors {
    fn new(w: usize) -> Self {
        MetricDetectors {
            track: Track::new(false),
            rolling: Rolling::new(w),
            ewma: None,
            scale: 0.0,
            seen_s: 0.0,
        }
    }

    /// Feed `x` after `dt` seconds; the three scores (0 during warm-up).
    fn step(&mut self, x: f64, dt: f64, p: &TrackParams, dir: Direction) -> [f64; 3] {
        // A spread floor shared by all detectors: 1 % of the metric's scale
        // (a constant metric must not turn a rounding step into a z of 1e9).
        self.scale += weight(dt, p.half_life_s, self.seen_s) * (x.abs() - self.scale);
        let floor = (0.01 * self.scale).max(1e-9);
        let warm = self.seen_s >= p.warmup_s;
        let v = self
            .track
            .observe(x, dt, None, floor, dir, None, p)
            .statistic;
        let mut out = [0.0; 3];
        if let Some((mean, sd)) = self.rolling.stats() {
            let sd = sd.max(floor);
            let e = self.ewma.unwrap_or(x);
            let e = e + LAMBDA * (x - e);
            self.ewma = Some(e);
            if warm {
                out[1] = directed((x - mean) / sd, dir);
                out[2] = directed((e - mean) / (sd * (LAMBDA / (2.0 - LAMBDA)).sqrt()), dir);
            }
        } else {
            self.ewma = Some(x);
        }
        if warm && self.track.ready(p) {
            out[0] = v;
        }
        self.rolling.push(x);
        self.seen_s += dt;
        out
    }
}

/// Weight for a running scale: plain mean while young, then the half-life.
pub fn weight(dt: f64, half_life: f64, seen_s: f64) -> f64 {
    let w = vigil_scorer::selfbase::weight_for(dt, half_life);
    if seen_s <= 0.0 {
        1.0
    } else {
        w.max(dt / (seen_s + dt))
    }
}

fn median_dt(t: &[f64]) -> f64 {
    let mut d: Vec<f64> = t
        .windows(2)
        .filter_map(|w| match w {
            [a, b] if b > a => Some(b - a),
            _ => None,
        })
        .collect();
    d.sort_by(f64::total_cmp);
    d.get(d.len() / 2).copied().unwrap_or(60.0)
}

/// Read one file's judged columns: (timestamps, values per column, labels).
#[allow(clippy::type_complexity)]
fn read_file(
    path: &str,
    columns: &[String],
    labelled: bool,
) -> Result<(Vec<f64>, Vec<Vec<f64>>, Vec<bool>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let table = Table::parse(path, &text, "timestamp").map_err(|e| e.to_string())?;
    let tcol = table.column("timestamp").map_err(|e| e.to_string())?;
    let lcol = if labelled {
        Some(table.column("label").map_err(|e| e.to_string())?)
    } else {
        None
    };
    let names: Vec<String> = if !columns.is_empty() {
        columns.to_vec()
    } else if table.header().iter().any(|h| h == "value") {
        vec!["value".to_string()]
    } else {
        table
            .header()
            .iter()
            .filter(|h| *h != "timestamp" && *h != "label")
            .cloned()
            .collect()
    };
    let mut cols = Vec::new();
    for n in &names {
        cols.push(table.column(n).map_err(|e| e.to_string())?);
    }
    let t = table.timestamps(tcol).map_err(|e| e.to_string())?;
    let mut values = vec![Vec::with_capacity(table.len()); cols.len()];
    let mut labels = Vec::with_capacity(table.len());
    for row in 0..table.len() {
        for (v, &c) in values.iter_mut().zip(&cols) {
            v.push(table.number(row, c).map_err(|e| e.to_string())?);
        }
        if let Some(lc) = lcol {
            let l = table.number(row, lc).map_err(|e| e.to_string())?;
            if l != 0.0 && l != 1.0 {
                return Err(format!(
                    "{path}: row {}, column \"label\": must be 0 or 1, got {l}",
                    row + 2
                ));
            }
            labels.push(l == 1.0);
        }
    }
    Ok((t, values, labels))
}

fn load_series(cfg: &CorpusConfig, path: &std::path::Path) -> Result<Series, String> {
    let p = TrackParams::from_model(&cfg.model);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path_s = path.to_string_lossy().into_owned();
    let (t, values, labels) = read_file(&path_s, &cfg.columns, true)?;
    let dt = median_dt(&t);
    let w = ((p.warmup_s / dt).round() as usize).max(8);
    let mut dets: Vec<MetricDetectors> = values.iter().map(|_| MetricDetectors::new(w)).collect();
    // Warm-up history, unlabelled.
    let train = path
        .parent()
        .map(|d| d.join("train").join(&name))
        .filter(|p| p.is_file());
    // Raw Vigil statistic per row (largest over metrics) and row steps,
    // training rows first: the calibration learns from both.
    let mut raw_rows: Vec<(f64, f64)> = Vec::new();
    if let Some(tp) = train {
        let (tt, tv, _) = read_file(&tp.to_string_lossy(), &cfg.columns, false)?;
        let tdt = median_dt(&tt);
        let mut raw = vec![(0.0f64, tdt); tt.len()];
        for (m, col) in dets.iter_mut().zip(&tv) {
            let mut prev: Option<f64> = None;
            for (i, (&ti, &x)) in tt.iter().zip(col).enumerate() {
                let step = prev.map_or(tdt, |pt| (ti - pt).max(1.0));
                prev = Some(ti);
                let s = m.step(x, step, &p, cfg.direction);
                if let Some(r) = raw.get_mut(i) {
                    *r = (r.0.max(s[0]), step);
                }
            }
        }
        raw_rows.extend(raw);
    }
    let n_train = raw_rows.len();
    let mut scores: [Vec<f64>; 3] = [vec![0.0; t.len()], vec![0.0; t.len()], vec![0.0; t.len()]];
    let mut steps = vec![dt; t.len()];
    for (m, col) in dets.iter_mut().zip(&values) {
        let mut prev: Option<f64> = None;
        for (i, (&ti, &x)) in t.iter().zip(col).enumerate() {
            let step = prev.map_or(dt, |pt| (ti - pt).max(1.0));
            prev = Some(ti);
            let s = m.step(x, step, &p, cfg.direction);
            for (d, v) in s.iter().enumerate() {
                if let Some(slot) = scores.get_mut(d).and_then(|r| r.get_mut(i)) {
                    *slot = slot.max(*v);
                }
            }
            if let Some(slot) = steps.get_mut(i) {
                *slot = step;
            }
        }
    }
    raw_rows.extend(scores[0].iter().copied().zip(steps));
    // The calibration, row by row (causal: each row is judged with the
    // limit learned before it).
    let cp = CalibrationParams::from_model(&cfg.model);
    let mut calib = Calibration::default();
    for (i, (raw, step)) in raw_rows.iter().enumerate() {
        let m = calib.observe(*raw, *step, &cp);
        if let Some(slot) = i.checked_sub(n_train).and_then(|k| scores[0].get_mut(k)) {
            *slot = raw / m;
        }
    }
    let calibration = json!({
        "multiplier_at_end": round4(calib.multiplier()),
        "days_seen": round4(calib.days_seen()),
        "episodes_per_day_by_rung": calib.rates_per_day().map(round4),
    });
    Ok(Series {
        calibration,
        name,
        t,
        labels,
        scores,
        dt,
    })
}

/// Thresholds to sweep for detector `d`: quantiles of its positive scores.
fn grid(series: &[Series], d: usize) -> Vec<f64> {
    let mut all: Vec<f64> = series
        .iter()
        .filter_map(|s| s.scores.get(d))
        .flatten()
        .copied()
        .filter(|v| *v > 0.0)
        .collect();
    all.sort_by(f64::total_cmp);
    let mut out = Vec::new();
    if all.is_empty() {
        return vec![1.0];
    }
    let n = all.len();
    for k in 0..400 {
        // Denser towards the top (rare alarms).
        let q = 1.0 - (1.0 - k as f64 / 400.0).powi(3) * 0.5;
        let i = ((q * n as f64) as usize).min(n - 1);
        if let Some(v) = all.get(i) {
            out.push(*v);
        }
    }
    if let Some(top) = all.last() {
        out.push(top * 1.0001);
    }
    out.dedup();
    out
}

fn overall(series: &[Series], d: usize, threshold: f64, grace: usize) -> Tally {
    let mut t = Tally::default();
    for s in series {
        t.add(&tally(s, d, threshold, grace));
    }
    t
}

/// Best F1 among thresholds with false alarms per day <= `budget`.
fn best_at(series: &[Series], d: usize, budget: f64, grace: usize) -> Option<(f64, Tally)> {
    let mut best: Option<(f64, Tally)> = None;
    for thr in grid(series, d) {
        let t = overall(series, d, thr, grace);
        if t.fa_per_day() <= budget + 1e-12 && best.as_ref().is_none_or(|(_, b)| t.f1() > b.f1()) {
            best = Some((thr, t));
        }
    }
    best
}

/// Run the corpus evaluation; returns the report (JSON) and a table.
pub fn evaluate(cfg: &CorpusConfig) -> Result<(Value, String), String> {
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(&cfg.dir)
        .map_err(|e| format!("{}: cannot read directory: {e}", cfg.dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv") && p.is_file())
        .collect();
    paths.sort();
    let paths: Vec<_> = paths
        .into_iter()
        .enumerate()
        .filter(|(i, _)| match cfg.half {
            Half::All => true,
            Half::Tune => i % 2 == 0,
            Half::HeldOut => i % 2 == 1,
        })
        .map(|(_, p)| p)
        .collect();
    if paths.is_empty() {
        return Err(format!("{}: no *.csv files", cfg.dir));
    }
    let mut series = Vec::new();
    for p in &paths {
        series.push(load_series(cfg, p)?);
    }
    let grace = cfg.grace_rows;
    let default_thr = cfg.model.self_critical;
    let vigil_default = overall(&series, 0, default_thr, grace);
    let matched_budget = vigil_default.fa_per_day();
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "vigil-model eval --corpus {}: {} series, {} windows, {:.1} days, direction {:?}, warm-up {} s, grace {} rows",
        cfg.dir,
        series.len(),
        vigil_default.windows,
        vigil_default.seconds / 86_400.0,
        cfg.direction,
        cfg.model.warmup_s,
        grace
    );
    let _ = writeln!(
        text,
        "series judged: {:?} half; vigil's limit calibrated per series to self_alarms_per_day {} (half-life {} s); \
         every figure below is an estimate on this corpus only",
        cfg.half, cfg.model.self_alarms_per_day, cfg.model.self_calibration_half_life_s
    );
    let _ = writeln!(text, "\nper series (vigil at its default critical threshold {default_thr}; zscore/ewma at their thresholds matched overall, below)");
    let z_m = best_at(&series, 1, matched_budget, grace);
    let e_m = best_at(&series, 2, matched_budget, grace);
    let _ = writeln!(
        text,
        "{:<36} {:>4} | {:>9} {:>6} {:>6} | {:>9} {:>6} | {:>9} {:>6}",
        "series", "win", "vigil det", "FA/d", "F1", "z det", "F1", "ewma det", "F1"
    );
    let mut per_series = Vec::new();
    for s in &series {
        let v = tally(s, 0, default_thr, grace);
        let z = z_m.as_ref().map(|(thr, _)| tally(s, 1, *thr, grace));
        let e = e_m.as_ref().map(|(thr, _)| tally(s, 2, *thr, grace));
        let cell = |t: &Option<Tally>| {
            t.as_ref().map_or(("-".to_string(), "-".to_string()), |t| {
                (
                    format!("{}/{}", t.detected, t.windows),
                    format!("{:.3}", t.f1()),
                )
            })
        };
        let (zd, zf) = cell(&z);
        let (ed, ef) = cell(&e);
        let _ = writeln!(
            text,
            "{:<36} {:>4} | {:>9} {:>6.2} {:>6.3} | {:>9} {:>6} | {:>9} {:>6}",
            s.name,
            v.windows,
            format!("{}/{}", v.detected, v.windows),
            v.fa_per_day(),
            v.f1(),
            zd,
            zf,
            ed,
            ef
        );
        per_series.push(json!({
            "series": s.name,
            "vigil": v.json(default_thr),
            "vigil_calibration": s.calibration,
            "zscore": z.map(|t| t.json(z_m.as_ref().map_or(0.0, |m| m.0))),
            "ewma": e.map(|t| t.json(e_m.as_ref().map_or(0.0, |m| m.0))),
        }));
    }
    let _ = writeln!(
        text,
        "\noverall                          thr   detected   FA  FA/day   prec recall     F1  median_ttd_s"
    );
    let mut line = |label: &str, r: Option<&(f64, Tally)>| match r {
        Some((thr, t)) => {
            let _ = writeln!(
                text,
                "{:<30} {:>6.2} {:>10} {:>4} {:>7.3} {:>6.3} {:>6.3} {:>6.3}  {}",
                label,
                thr,
                format!("{}/{}", t.detected, t.windows),
                t.false_alarms,
                t.fa_per_day(),
                t.precision(),
                t.recall(),
                t.f1(),
                t.median_ttd().map_or("-".into(), |v| format!("{v:.0}"))
            );
        }
        None => {
            let _ = writeln!(
                text,
                "{label:<30} (no threshold meets the false-alarm rate)"
            );
        }
    };
    let vd = (default_thr, vigil_default.clone());
    line("vigil (default critical)", Some(&vd));
    line("zscore @ vigil's FA/day", z_m.as_ref());
    line("ewma   @ vigil's FA/day", e_m.as_ref());
    let budget = cfg.budget;
    let v_b = best_at(&series, 0, budget, grace);
    let z_b = best_at(&series, 1, budget, grace);
    let e_b = best_at(&series, 2, budget, grace);
    line(&format!("vigil  best @ <= {budget} FA/day"), v_b.as_ref());
    line(&format!("zscore best @ <= {budget} FA/day"), z_b.as_ref());
    line(&format!("ewma   best @ <= {budget} FA/day"), e_b.as_ref());
    let f1 = |r: &Option<(f64, Tally)>| r.as_ref().map_or(0.0, |(_, t)| t.f1());
    let best_inc = f1(&z_m).max(f1(&e_m));
    let best_inc_b = f1(&z_b).max(f1(&e_b));
    let meets_default =
        vigil_default.fa_per_day() <= budget && vigil_default.f1() + 1e-9 >= best_inc;
    let meets_budget = f1(&v_b) + 1e-9 >= best_inc_b && v_b.is_some();
    let _ = writeln!(
        text,
        "\nmust-show: vigil F1 >= better of zscore/ewma at the same FA rate, <= {budget} FA/day:\n  default threshold: {} (vigil {:.3} at {:.3} FA/day, best incumbent {:.3})\n  at the budget:     {} (vigil {:.3}, best incumbent {:.3})",
        if meets_default { "MET" } else { "NOT MET" },
        vigil_default.f1(),
        vigil_default.fa_per_day(),
        best_inc,
        if meets_budget { "MET" } else { "NOT MET" },
        f1(&v_b),
        best_inc_b
    );
    let j = |r: &Option<(f64, Tally)>| r.as_ref().map(|(thr, t)| t.json(*thr));
    let report = json!({
        "corpus": cfg.dir,
        "series": per_series,
        "overall": {
            "vigil_default": vigil_default.json(default_thr),
            "zscore_matched": j(&z_m),
            "ewma_matched": j(&e_m),
            "budget_fa_per_day": budget,
            "vigil_at_budget": j(&v_b),
            "zscore_at_budget": j(&z_b),
            "ewma_at_budget": j(&e_b),
            "met_default": meets_default,
            "met_at_budget": meets_budget,
        }
    });
    Ok((report, text))
}
