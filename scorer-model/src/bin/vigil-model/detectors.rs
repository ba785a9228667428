//! Vigil and the incumbents, all fed the same simulated ticks.
//!
//! Why this exists: "better than the incumbents" is only a claim if the
//! incumbents are re-implemented faithfully, at their default settings, and
//! judged on exactly the same data with the same scoring. Every detector here
//! consumes [`Tick`]s and raises [`Alarm`]s (a rollback, an ejection, an
//! alert, a critical verdict); the evaluator matches alarms to fault windows.
//!
//! What each incumbent sees is what it would see in production: Flagger,
//! Kayenta and the z-score alert read 1-minute aggregates of client-visible
//! responses (retries already absorbed); Envoy's outlier detection sees every
//! upstream attempt of every host, but has no latency signal.

use crate::sim::{Tick, STABLE_HOSTS};
use vigil_scorer::histogram::LatencyHistogram;
use vigil_scorer::model::Model;
use vigil_scorer::sequential::CanaryMonitor;
use vigil_scorer::series::SeriesState;
use vigil_scorer::verdict::State;
use vigil_scorer::window::{Counters, TickDelta};

/// Which version an alarm blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The canary (a detection, if inside a fault window).
    Canary,
    /// The stable version (always a false alarm: it is never faulty here).
    Stable,
}

/// One alarm: second of the run and what it blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alarm {
    /// Second of the run.
    pub t: u64,
    /// What it blames.
    pub target: Target,
}

/// A detector fed one tick at a time.
pub trait Detector {
    /// Consume one tick; push the alarms it raises at this tick.
    fn step(&mut self, tick: &Tick, alarms: &mut Vec<Alarm>);
    /// Ticks on which this detector gave a verdict other than "insufficient
    /// data" (only Vigil has that notion; others return `None`).
    fn judged_ticks(&self) -> Option<u64> {
        None
    }
}

/// Names of every detector, in report order.
pub const DETECTORS: &[&str] = &[
    "vigil",
    "flagger",
    "envoy_outlier",
    "kayenta_mwu",
    "zscore_3sigma",
];

/// Build a detector by name.
pub fn make(name: &str, model: &Model) -> Option<Box<dyn Detector>> {
    Some(match name {
        "vigil" => Box::new(Vigil::new(model.clone())),
        "flagger" => Box::new(Flagger::default()),
        "envoy_outlier" => Box::new(EnvoyOutlier::default()),
        "kayenta_mwu" => Box::new(Kayenta::default()),
        "zscore_3sigma" => Box::new(ZScore::default()),
        _ => return None,
    })
}

// ---------------------------------------------------------------- Vigil

/// Vigil as the filter runs it: every tick, the canary is judged against
/// its stable peer by the sequential monitor ([`CanaryMonitor`]) and the
/// stable against its own
/// baseline ([`SeriesState::score_self`]); a series turning `critical` is an
/// alarm (rising edge: a critical state that persists is one alarm).
pub struct Vigil {
    model: Model,
    canary: SeriesState,
    stable: SeriesState,
    monitor: CanaryMonitor,
    canary_critical: bool,
    stable_critical: bool,
    judged: u64,
}

impl Vigil {
    /// Vigil with `model`.
    pub fn new(model: Model) -> Self {
        Vigil {
            canary: SeriesState::new(&model),
            stable: SeriesState::new(&model),
            monitor: CanaryMonitor::new(&model),
            model,
            canary_critical: false,
            stable_critical: false,
            judged: 0,
        }
    }
}

impl Detector for Vigil {
    fn step(&mut self, tick: &Tick, alarms: &mut Vec<Alarm>) {
        self.canary.observe(&tick.canary, &self.model);
        self.stable.observe(&tick.stable, &self.model);
        let v = self.monitor.update(&self.canary, &self.stable, &self.model);
        let s = self.stable.score_self(&self.model);
        if v.state != State::InsufficientData || s.state != State::InsufficientData {
            self.judged += 1;
        }
        for (state, flag, target) in [
            (v.state, &mut self.canary_critical, Target::Canary),
            (s.state, &mut self.stable_critical, Target::Stable),
        ] {
            let critical = state == State::Critical;
            if critical && !*flag {
                if std::env::var_os("VIGIL_DEBUG").is_some() {
                    eprintln!(
                        "{} {:?} {}",
                        tick.t,
                        target,
                        if target == Target::Canary {
                            v.explain()
                        } else {
                            s.explain()
                        }
                    );
                }
                alarms.push(Alarm { t: tick.t, target });
            }
            *flag = critical;
        }
    }

    fn judged_ticks(&self) -> Option<u64> {
        Some(self.judged)
    }
}

// ---------------------------------------------------------------- 1-minute points

/// Client-visible aggregate of one series over one minute.
#[derive(Debug, Clone, Default)]
struct Minute {
    counters: Counters,
    latency: LatencyHistogram,
}

impl Minute {
    fn add(&mut self, d: &TickDelta) {
        self.counters.add(&d.counters);
        self.latency.merge_sparse(&d.latency);
    }
    fn clear(&mut self) {
        self.counters = Counters::default();
        self.latency.clear();
    }
    /// Error ratio (client-visible 5xx and no-response), 0 without traffic.
    fn error_ratio(&self) -> f64 {
        if self.counters.requests == 0 {
            0.0
        } else {
            self.counters.errors as f64 / self.counters.requests as f64
        }
    }
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.latency.quantile_us(q).map(|us| us / 1000.0)
    }
}

// ---------------------------------------------------------------- Flagger

/// Flagger's canary analysis at its documented defaults: every `interval`
/// (1 min) it checks the canary alone — `request-success-rate` >= 99 %
/// (non-5xx share over the last minute) and `request-duration` p99 <=
/// 500 ms; a minute with no data is a failed check ("no values found"). At
/// `threshold` (5) failed checks it rolls back (the alarm). Failed checks
/// accumulate over a rollout and are never reset by a passing check; we
/// model a rollout as 30 checks (e.g. stepWeight 5 up to maxWeight 50 plus
/// promotion), after which, or after a rollback, the count starts again.
#[derive(Default)]
pub struct Flagger {
    minute: Minute,
    failed: u32,
    checks: u32,
}

impl Detector for Flagger {
    fn step(&mut self, tick: &Tick, alarms: &mut Vec<Alarm>) {
        self.minute.add(&tick.canary);
        if tick.t % 60 != 59 {
            return;
        }
        let m = &self.minute;
        let failed = if m.counters.requests == 0 {
            true
        } else {
            let success = 100.0 * (1.0 - m.error_ratio());
            let p99 = m.quantile_ms(0.99).unwrap_or(0.0);
            success < 99.0 || p99 > 500.0
        };
        self.minute.clear();
        self.checks += 1;
        if failed {
            self.failed += 1;
        }
        if self.failed >= 5 {
            alarms.push(Alarm {
                t: tick.t,
                target: Target::Canary,
            });
            self.failed = 0;
            self.checks = 0;
        } else if self.checks >= 30 {
            self.failed = 0;
            self.checks = 0;
        }
    }
}

// ---------------------------------------------------------------- Envoy outlier detection

/// Envoy outlier detection at its defaults, given the most favourable
/// topology: the canary host shares one cluster with the 4 stable hosts, so
/// that success-rate ejection (which needs `success_rate_minimum_hosts` = 5)
/// can work at all.
///
/// - `consecutive_5xx` = 5: five failed upstream attempts in a row on one
///   host eject it (5xx and locally originated failures, not split);
/// - `success_rate`: every `interval` (10 s), hosts with at least
///   `success_rate_request_volume` (100) attempts get a success rate; with
///   at least 5 such hosts, a host below `mean - 1.9 * stdev`
///   (`success_rate_stdev_factor` 1900) is ejected;
/// - ejection lasts `base_ejection_time` (30 s) times the host's ejection
///   count (capped at 300 s); `max_ejection_percent` (10 %) still lets one
///   host be ejected at a time.
///
/// An ejection of the canary host is an alarm on the canary, of a stable
/// host an alarm on the stable.
pub struct EnvoyOutlier {
    consecutive: Vec<u32>,
    attempts: Vec<u64>,
    failures: Vec<u64>,
    ejected_until: Vec<Option<u64>>,
    times_ejected: Vec<u64>,
}

impl Default for EnvoyOutlier {
    fn default() -> Self {
        let n = 1 + STABLE_HOSTS;
        EnvoyOutlier {
            consecutive: vec![0; n],
            attempts: vec![0; n],
            failures: vec![0; n],
            ejected_until: vec![None; n],
            times_ejected: vec![0; n],
        }
    }
}

impl EnvoyOutlier {
    fn eject(&mut self, host: usize, t: u64, alarms: &mut Vec<Alarm>) {
        let others_ejected = self
            .ejected_until
            .iter()
            .enumerate()
            .any(|(i, e)| i != host && e.is_some());
        if others_ejected {
            return;
        }
        let Some(slot) = self.ejected_until.get_mut(host) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let times = self.times_ejected.get_mut(host).map_or(1, |n| {
            *n += 1;
            *n
        });
        *slot = Some(t + (30 * times).min(300));
        alarms.push(Alarm {
            t,
            target: if host == 0 {
                Target::Canary
            } else {
                Target::Stable
            },
        });
    }
}

impl Detector for EnvoyOutlier {
    fn step(&mut self, tick: &Tick, alarms: &mut Vec<Alarm>) {
        // Un-eject hosts whose time is up.
        for e in &mut self.ejected_until {
            if e.is_some_and(|until| tick.t >= until) {
                *e = None;
            }
        }
        for (host, h) in tick.hosts.iter().enumerate() {
            for &failed in &h.failures {
                if let (Some(a), Some(f)) =
                    (self.attempts.get_mut(host), self.failures.get_mut(host))
                {
                    *a += 1;
                    *f += u64::from(failed);
                }
                let run = match self.consecutive.get_mut(host) {
                    Some(c) => {
                        *c = if failed { *c + 1 } else { 0 };
                        *c
                    }
                    None => 0,
                };
                if run >= 5 {
                    if let Some(c) = self.consecutive.get_mut(host) {
                        *c = 0;
                    }
                    self.eject(host, tick.t, alarms);
                }
            }
        }
        if tick.t % 10 != 9 {
            return;
        }
        // Success-rate sweep.
        let rates: Vec<(usize, f64)> = self
            .attempts
            .iter()
            .zip(&self.failures)
            .enumerate()
            .filter(|(_, (a, _))| **a >= 100)
            .map(|(i, (a, f))| (i, 100.0 * (1.0 - *f as f64 / *a as f64)))
            .collect();
        if rates.len() >= 5 {
            let n = rates.len() as f64;
            let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
            let var = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
            let threshold = mean - 1.9 * var.sqrt();
            for (host, rate) in rates {
                if rate < threshold {
                    self.eject(host, tick.t, alarms);
                }
            }
        }
        self.attempts.iter_mut().for_each(|a| *a = 0);
        self.failures.iter_mut().for_each(|f| *f = 0);
    }
}

// ---------------------------------------------------------------- Kayenta

/// Kayenta-style canary judgement: 1-minute points of each metric (error
/// ratio, p95 latency) for canary and stable (baseline); every analysis
/// interval (10 minutes) each metric's 10 canary points are compared with
/// the 10 baseline points by a two-sided Mann-Whitney U test at 98 %
/// confidence (normal approximation with tie correction). A metric whose
/// canary is significantly *higher* fails; any failed metric fails the
/// interval (the alarm). This is the NetflixACAJudge's classifier without
/// its effect-size tolerances, i.e. the most sensitive version of it.
#[derive(Default)]
pub struct Kayenta {
    canary: Minute,
    stable: Minute,
    /// (canary, stable) points per metric: [error ratio, p95 ms].
    points: [Vec<(f64, f64)>; 2],
}

/// Analysis interval of [`Kayenta`], in 1-minute points.
const KAYENTA_POINTS: usize = 10;

impl Detector for Kayenta {
    fn step(&mut self, tick: &Tick, alarms: &mut Vec<Alarm>) {
        self.canary.add(&tick.canary);
        self.stable.add(&tick.stable);
        if tick.t % 60 != 59 {
            return;
        }
        let (c, s) = (&self.canary, &self.stable);
        let [errors, latency] = &mut self.points;
        errors.push((c.error_ratio(), s.error_ratio()));
        if let (Some(cq), Some(sq)) = (c.quantile_ms(0.95), s.quantile_ms(0.95)) {
            latency.push((cq, sq));
        }
        self.canary.clear();
        self.stable.clear();
        if errors.len() < KAYENTA_POINTS {
            return;
        }
        let fail = self.points.iter().any(|pts| {
            pts.len() >= KAYENTA_POINTS / 2 && {
                let a: Vec<f64> = pts.iter().map(|p| p.0).collect();
                let b: Vec<f64> = pts.iter().map(|p| p.1).collect();
                mann_whitney_z(&a, &b) > 2.326
            }
        });
        if fail {
            alarms.push(Alarm {
                t: tick.t,
                target: Target::Canary,
            });
        }
        for p in &mut self.points {
            p.clear();
        }
    }
}

/// Mann-Whitney U of `a` against `b` as a z score (positive when `a` tends
/// to be larger), normal approximation with tie correction; 0 when degenerate.
pub fn mann_whitney_z(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all.get(j + 1).map(|x| x.0) == all.get(i).map(|x| x.0) {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let ties = (j - i + 1) as f64;
        tie_term += ties * ties * ties - ties;
        rank_sum_a += rank
            * all
                .get(i..=j)
                .map_or(0, |s| s.iter().filter(|x| x.1).count()) as f64;
        i = j + 1;
    }
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let nt = n1 + n2;
    let var = n1 * n2 / 12.0 * ((nt + 1.0) - tie_term / (nt * (nt - 1.0)));
    if var <= 0.0 {
        return 0.0;
    }
    (u - mean) / var.sqrt()
}

// ---------------------------------------------------------------- static z-score

/// A static 3σ alert rule, as commonly written over Prometheus: every minute
/// the canary's error ratio and p99 latency are compared with the mean and
/// standard deviation of their previous 60 one-minute points (at least 10);
/// a value above mean + 3σ fires the alert (rising edge = alarm).
#[derive(Default)]
pub struct ZScore {
    minute: Minute,
    history: [Vec<f64>; 2],
    firing: bool,
}

impl Detector for ZScore {
    fn step(&mut self, tick: &Tick, alarms: &mut Vec<Alarm>) {
        self.minute.add(&tick.canary);
        if tick.t % 60 != 59 {
            return;
        }
        let values = [
            Some(self.minute.error_ratio()),
            self.minute.quantile_ms(0.99),
        ];
        self.minute.clear();
        let mut firing = false;
        for (value, history) in values.iter().zip(self.history.iter_mut()) {
            let Some(x) = *value else { continue };
            if history.len() >= 10 {
                let n = history.len() as f64;
                let mean = history.iter().sum::<f64>() / n;
                let var = history.iter().map(|h| (h - mean).powi(2)).sum::<f64>() / (n - 1.0);
                if x > mean + 3.0 * var.sqrt() {
                    firing = true;
                }
            }
            history.push(x);
            if history.len() > 60 {
                history.remove(0);
            }
        }
        if firing && !self.firing {
            alarms.push(Alarm {
                t: tick.t,
                target: Target::Canary,
            });
        }
        self.firing = firing;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_whitney_matches_known_values() {
        // Complete separation of 10 vs 10: U = 100, z = 50 / sqrt(175) = 3.78.
        let a: Vec<f64> = (10..20).map(f64::from).collect();
        let b: Vec<f64> = (0..10).map(f64::from).collect();
        let z = mann_whitney_z(&a, &b);
        assert!((z - 3.7796).abs() < 0.01, "{z}");
        assert!((mann_whitney_z(&b, &a) + z).abs() < 1e-9);
        // All tied: no evidence.
        assert_eq!(mann_whitney_z(&[1.0; 5], &[1.0; 5]), 0.0);
        assert_eq!(mann_whitney_z(&[], &[1.0]), 0.0);
    }
}
