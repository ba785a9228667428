//! Canary analysis: the judgements the state machine acts on.
//!
//! Why this exists: every decision that moves a weight must rest on the
//! same tested judgement the filter uses — the anytime-valid sequential
//! canary-vs-stable test ([`vigil_scorer::sequential::CanaryMonitor`]) — on
//! the evidence of every sidecar merged, and carry its numbers in plain
//! English. One judge, two uses, both pure:
//!
//! - [`Monitor`] — live, once per analysis tick: the merged tick is observed
//!   by a pair of [`SeriesState`]s (the model's rolling windows) and the
//!   `CanaryMonitor` is updated exactly as the filter's lease holder does
//!   (`observe` both series, then `update`). `critical` rolls back at once.
//!   Its guarantee is the filter's: under the null (the canary's requests
//!   are bad no more often than the stable's share plus the margin), the
//!   average run length to a false `critical` is at least `1/alpha` ticks,
//!   however often it is looked at.
//! - [`judge_step`] — at a step's end: the step advances only when the
//!   step's merged evidence reaches the model's minimums **and** the live
//!   sequential test is neither `critical` nor `warn` (evidence against the
//!   canary building up holds the step), and the SLOs (one-sided tests
//!   against their limits at the model's `z_warn`) hold. The fixed-window
//!   comparison of the step ([`vigil_scorer::peer::score_canary`]) is
//!   computed and stored with the decision as a reported statistic only; it
//!   decides nothing.
//!   Too little evidence holds: it never promotes.
//!
//! A sidecar's own `critical` verdict is a claim, not a decision: it counts
//! only when its report carried the canary's counts (both versions), and
//! the rollback happens only if the control-side re-test on the merged
//! evidence (which includes those counts) is critical. That holds for every
//! signal, time to first token included: the report carries the TTFT
//! histograms, and the re-test runs the filter's TTFT test on them.

use crate::evidence::{PairTally, SidecarCritical, Tally};
use crate::spec::CanarySpec;
use serde_json::{json, Value};
use vigil_scorer::model::Model;
use vigil_scorer::peer::score_canary;
use vigil_scorer::sequential::CanaryMonitor;
use vigil_scorer::series::SeriesState;
use vigil_scorer::stats;
use vigil_scorer::ttft::TtftWindow;
use vigil_scorer::verdict::{Signal, State, Verdict};

/// What a judgement says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not enough evidence: keep the current weight and keep collecting.
    Hold,
    /// The canary is worse or breaks an SLO: weight 0 now.
    Rollback,
    /// The step is healthy: go on.
    Pass,
}

/// A judgement with its explanation and numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// What to do.
    pub outcome: Outcome,
    /// Plain English, with the numbers.
    pub explanation: String,
    /// The numbers, structured (stored with the decision and in the audit).
    pub evidence: Value,
}

/// Live canary-vs-stable judge: the filter's sequential test
/// ([`CanaryMonitor`]) over the model's rolling windows, fed the merged
/// evidence of every sidecar once per analysis tick.
#[derive(Debug, Clone)]
pub struct Monitor {
    canary: SeriesState,
    stable: SeriesState,
    canary_ttft: TtftWindow,
    stable_ttft: TtftWindow,
    sequential: CanaryMonitor,
    /// Latest verdict.
    pub last: Verdict,
}

impl Monitor {
    /// Empty monitor sized for `model`.
    pub fn new(model: &Model) -> Self {
        Monitor {
            canary: SeriesState::new(model),
            stable: SeriesState::new(model),
            canary_ttft: TtftWindow::new(),
            stable_ttft: TtftWindow::new(),
            sequential: CanaryMonitor::new(model),
            last: Verdict::default(),
        }
    }

    /// Feed one analysis tick (every sidecar's reports merged) and judge,
    /// exactly as the filter's lease holder does for its own series.
    /// The merged TTFT histograms go through the same [`TtftWindow`]s and
    /// `observe_ttft` as the filter's, so a `ttft:` verdict is re-tested on
    /// the counts, never taken on a sidecar's word.
    pub fn observe(&mut self, tick: &PairTally, model: &Model) -> Verdict {
        self.canary.observe(&tick.canary.to_delta(), model);
        self.stable.observe(&tick.stable.to_delta(), model);
        let (w, r) = (model.window_ticks, model.recent_ticks);
        self.canary_ttft
            .observe(&tick.canary.ttft.to_sparse(), w, r);
        self.stable_ttft
            .observe(&tick.stable.ttft.to_sparse(), w, r);
        self.sequential
            .observe_ttft(&self.canary_ttft, &self.stable_ttft, model);
        self.last = self.sequential.update(&self.canary, &self.stable, model);
        self.last
    }

    /// The sequential test's current log e-value (nats).
    pub fn log_e_value(&self) -> f64 {
        self.sequential.log_e_value()
    }
}

/// A rollback judgement when the live verdict is critical.
pub fn judge_live(verdict: &Verdict, model: &Model) -> Option<Judgement> {
    (verdict.state == State::Critical).then(|| Judgement {
        outcome: Outcome::Rollback,
        explanation: format!(
            "anytime-valid canary-vs-stable test on every sidecar's merged evidence is critical (alpha {:e}): {}",
            model.alpha,
            stable_wording(&verdict.explain())
        ),
        evidence: json!({"source": "sequential", "verdict": verdict_json(verdict)}),
    })
}

/// Evidence JSON of a sidecar's (supported) `critical` claim.
pub fn claim_json(c: &SidecarCritical) -> Value {
    json!({"sidecar": c.sidecar, "score": c.score, "reason": c.reason})
}

/// The scorer says "reference"; here the reference is always the stable.
fn stable_wording(s: &str) -> String {
    s.replace("vs reference", "vs stable")
}

fn signal_name(s: Signal) -> &'static str {
    match s {
        Signal::None => "none",
        Signal::Errors => "errors",
        Signal::Latency => "latency",
        Signal::Resets => "resets",
        Signal::Throttled => "throttled",
        Signal::Ttft => "ttft",
        Signal::Rate => "rate",
    }
}

fn verdict_json(v: &Verdict) -> Value {
    let e = &v.evidence;
    json!({
        "state": v.state.as_str(), "score": v.score, "signal": signal_name(e.signal),
        "statistic": round(e.statistic, 2), "n": e.n, "n_ref": e.n_ref,
        "error_ratio": round(e.error_ratio, 5), "error_ratio_ref": round(e.error_ratio_ref, 5),
        "p95_ms": round(e.p95_ms, 2), "p95_ms_ref": round(e.p95_ms_ref, 2), "p99_ms": round(e.p99_ms, 2),
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    let r = (x * f).round() / f;
    if r.is_finite() {
        r
    } else {
        0.0
    }
}

/// Summary numbers of one version (for evidence JSON).
pub fn tally_json(t: &Tally) -> Value {
    let q = |p: f64| t.quantile_ms(p).map(|v| round(v, 2));
    json!({
        "requests": t.counters.requests, "errors": t.counters.errors,
        "error_ratio": round(t.error_ratio(), 5),
        "p50_ms": q(0.5), "p95_ms": q(0.95), "p99_ms": q(0.99),
    })
}

fn pct(value: f64, reference: f64) -> String {
    if reference > 0.0 {
        format!("{:+.0}%", (value / reference - 1.0) * 100.0)
    } else {
        "n/a".to_string()
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"))
}

/// One line comparing the two versions, e.g.
/// `errors 0.40% vs stable 0.35%, p95 182.0 ms vs 180.0 ms (+1%), p99 ..., n=640/5800`.
pub fn describe(p: &PairTally) -> String {
    let (c, s) = (&p.canary, &p.stable);
    let (c95, s95) = (c.quantile_ms(0.95), s.quantile_ms(0.95));
    let (c99, s99) = (c.quantile_ms(0.99), s.quantile_ms(0.99));
    format!(
        "errors {:.2}% vs stable {:.2}%, p95 {} vs stable {} ({}), p99 {} vs stable {} ({}), n={}/{}",
        c.error_ratio() * 100.0,
        s.error_ratio() * 100.0,
        ms(c95),
        ms(s95),
        pct(c95.unwrap_or(0.0), s95.unwrap_or(0.0)),
        ms(c99),
        ms(s99),
        pct(c99.unwrap_or(0.0), s99.unwrap_or(0.0)),
        c.counters.requests,
        s.counters.requests
    )
}

/// Judge a finished step on its merged evidence. `weight` is the step's
/// canary weight: at 100 % the stable may see no traffic, and the canary is
/// then judged on its SLOs and minimum evidence alone.
/// `live` is the sequential test's latest verdict and `log_e` its current
/// log e-value (nats, [`Monitor::log_e_value`]): a step also rolls back when
/// the e-value reached `1/alpha` and holds when it reached `1/sqrt(alpha)`
/// even where the verdict says `insufficient_data` (low traffic: the
/// minimum-evidence rules only remove alarms, the e-value's bound holds
/// without them), so a thin-traffic canary cannot pass a step on silence.
pub fn judge_step(
    spec: &CanarySpec,
    step: &PairTally,
    weight: u8,
    model: &Model,
    live: &Verdict,
    log_e: f64,
) -> Judgement {
    let (c, s) = (&step.canary, &step.stable);
    let mut evidence = json!({
        "source": "step", "weight": weight,
        "canary": tally_json(c), "stable": tally_json(s),
        "min_requests": model.min_requests, "min_requests_ref": model.min_requests_ref,
    });
    let summary = describe(step);
    if let Some(j) = judge_live(live, model) {
        return j;
    }
    let alpha = if model.alpha > 0.0 && model.alpha < 1.0 {
        model.alpha
    } else {
        1e-6
    };
    let critical = -alpha.ln();
    if let Some(obj) = evidence.as_object_mut() {
        obj.insert("sequential".into(), verdict_json(live));
        obj.insert("log_e_value".into(), json!(round(log_e, 3)));
    }
    if log_e >= critical {
        return Judgement {
            outcome: Outcome::Rollback,
            explanation: format!(
                "step at {weight}% failed the anytime-valid canary-vs-stable test: e-value e^{log_e:.1} >= 1/alpha (alpha {alpha:e}) ({summary})"
            ),
            evidence,
        };
    }
    if c.counters.requests < model.min_requests {
        return Judgement {
            outcome: Outcome::Hold,
            explanation: format!(
                "holding at {weight}%: insufficient evidence, the canary served {} requests this step, the model needs {} ({summary})",
                c.counters.requests, model.min_requests
            ),
            evidence,
        };
    }
    let stable_enough = s.counters.requests >= model.min_requests_ref;
    if !stable_enough && weight < 100 {
        return Judgement {
            outcome: Outcome::Hold,
            explanation: format!(
                "holding at {weight}%: insufficient evidence, the stable served {} requests this step, the model needs {} as a reference ({summary})",
                s.counters.requests, model.min_requests_ref
            ),
            evidence,
        };
    }
    if live.state == State::Warn || log_e >= critical / 2.0 {
        return Judgement {
            outcome: Outcome::Hold,
            explanation: format!(
                "holding at {weight}%: the sequential canary-vs-stable test is at warn (evidence against the canary is building, e-value e^{log_e:.1}): {} ({summary})",
                stable_wording(&live.explain())
            ),
            evidence,
        };
    }
    let comparison = if stable_enough || weight < 100 {
        format!(
            "sequential canary-vs-stable test {} (score {})",
            live.state.as_str(),
            live.score
        )
    } else {
        String::from("no stable reference at 100% (SLOs only)")
    };
    if stable_enough {
        // Reported statistic only: the step's fixed-window comparison.
        let step_model = Model {
            window_ticks: 1,
            recent_ticks: 1,
            ..model.clone()
        };
        let mut cs = SeriesState::new(&step_model);
        let mut ss = SeriesState::new(&step_model);
        cs.observe(&c.to_delta(), &step_model);
        ss.observe(&s.to_delta(), &step_model);
        let fixed = score_canary(&cs, &ss, &step_model);
        if let Some(obj) = evidence.as_object_mut() {
            obj.insert("fixed_window".into(), verdict_json(&fixed));
        }
    }
    if let Some(max) = spec.slo.max_error_ratio {
        let (k, n) = (
            c.counters.errors.min(c.counters.requests),
            c.counters.requests,
        );
        let z = stats::binomial_upper_z(k, n, max);
        if z >= model.z_warn {
            return Judgement {
                outcome: Outcome::Rollback,
                explanation: format!(
                    "SLO breach at {weight}%: canary error ratio {:.2}% > max {:.2}% (z={z:.1}, n={n}) ({summary})",
                    c.error_ratio() * 100.0,
                    max * 100.0
                ),
                evidence: with(evidence, "slo_breach", json!({"slo": "max_error_ratio", "max": max, "z": round(z, 2)})),
            };
        }
    }
    if let Some(max_ms) = spec.slo.max_p99_ms {
        let n = c.latency.count();
        let above = c.latency.count_above_us(max_ms * 1000.0);
        let z = stats::binomial_upper_z(above, n, 0.01);
        let p99 = c.quantile_ms(0.99).unwrap_or(0.0);
        if z >= model.z_warn && p99 > max_ms {
            return Judgement {
                outcome: Outcome::Rollback,
                explanation: format!(
                    "SLO breach at {weight}%: canary p99 {p99:.1} ms > max {max_ms:.1} ms ({above} of {n} requests above it, z={z:.1}) ({summary})"
                ),
                evidence: with(evidence, "slo_breach", json!({"slo": "max_p99_ms", "max": max_ms, "above": above, "z": round(z, 2)})),
            };
        }
        if n == 0 {
            // Prometheus evidence has no histogram, only the filter's p99 gauge
            // (over its rolling window): a threshold check, no significance test.
            if let Some(g) = step.canary_p99_gauge_us {
                let g_ms = g as f64 / 1000.0;
                if g_ms > max_ms {
                    return Judgement {
                        outcome: Outcome::Rollback,
                        explanation: format!(
                            "SLO breach at {weight}%: canary p99 gauge {g_ms:.1} ms > max {max_ms:.1} ms (Prometheus, no histogram) ({summary})"
                        ),
                        evidence: with(evidence, "slo_breach", json!({"slo": "max_p99_ms", "max": max_ms, "p99_gauge_ms": round(g_ms, 2)})),
                    };
                }
            }
        }
    }
    Judgement {
        outcome: Outcome::Pass,
        explanation: format!("step at {weight}% healthy: {comparison}; {summary}"),
        evidence,
    }
}

fn with(mut v: Value, key: &str, extra: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.insert(key.to_string(), extra);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Side;
    use vigil_scorer::histogram::bucket_index;
    use vigil_scorer::window::{Counters, TickDelta};

    fn spec() -> CanarySpec {
        CanarySpec::from_json_value(
            json!({"name":"c","route":"r","stable_cluster":"s","canary_cluster":"k",
            "slo":{"max_error_ratio":0.05,"max_p99_ms":500.0}}),
        )
        .unwrap()
    }

    fn delta(requests: u64, errors: u64, latency_ms: u64) -> TickDelta {
        TickDelta {
            counters: Counters {
                requests,
                errors,
                latency_sum_us: requests * latency_ms * 1000,
                ..Default::default()
            },
            latency: vec![(bucket_index(latency_ms * 1000), requests as u32)],
        }
    }

    fn pair(c: TickDelta, s: TickDelta) -> PairTally {
        let mut p = PairTally::default();
        p.add(Side::Canary, &c);
        p.add(Side::Stable, &s);
        p
    }

    #[test]
    fn prometheus_p99_gauge_supports_the_slo_check_only() {
        let counters = |requests, errors| TickDelta {
            counters: Counters {
                requests,
                errors,
                ..Default::default()
            },
            latency: Vec::new(),
        };
        let mut p = pair(counters(200, 0), counters(2000, 0));
        p.prometheus = true;
        let j = judge_step(&spec(), &p, 10, &Model::default(), &ok(), 0.0);
        assert_eq!(j.outcome, Outcome::Pass, "{}", j.explanation);
        p.canary_p99_gauge_us = Some(650_000);
        let j = judge_step(&spec(), &p, 10, &Model::default(), &ok(), 0.0);
        assert_eq!(j.outcome, Outcome::Rollback, "{}", j.explanation);
        assert!(
            j.explanation.contains("p99 gauge 650.0 ms > max 500.0 ms"),
            "{}",
            j.explanation
        );
    }

    #[test]
    fn healthy_step_passes_with_numbers() {
        let j = judge_step(
            &spec(),
            &pair(delta(200, 1, 100), delta(2000, 10, 100)),
            10,
            &Model::default(),
            &ok(),
            0.0,
        );
        assert_eq!(j.outcome, Outcome::Pass, "{}", j.explanation);
        assert!(j.explanation.contains("n=200/2000"), "{}", j.explanation);
    }

    #[test]
    fn too_little_evidence_holds() {
        let j = judge_step(
            &spec(),
            &pair(delta(5, 0, 100), delta(2000, 0, 100)),
            5,
            &Model::default(),
            &ok(),
            0.0,
        );
        assert_eq!(j.outcome, Outcome::Hold);
        assert!(
            j.explanation.contains("insufficient evidence"),
            "{}",
            j.explanation
        );
        let j = judge_step(
            &spec(),
            &pair(delta(100, 0, 100), delta(10, 0, 100)),
            5,
            &Model::default(),
            &ok(),
            0.0,
        );
        assert_eq!(j.outcome, Outcome::Hold);
        // At 100 % the stable may be empty.
        let j = judge_step(
            &spec(),
            &pair(delta(100, 0, 100), delta(0, 0, 100)),
            100,
            &Model::default(),
            &ok(),
            0.0,
        );
        assert_eq!(j.outcome, Outcome::Pass, "{}", j.explanation);
    }

    fn ok() -> Verdict {
        Verdict {
            state: State::Ok,
            ..Verdict::default()
        }
    }

    fn monitor_verdict(canary_errors: u64, canary_ms: u64) -> Verdict {
        let model = Model::default();
        let mut m = Monitor::new(&model);
        for _ in 0..15 {
            m.observe(&pair(delta(50, 0, 100), delta(500, 0, 100)), &model);
        }
        for _ in 0..5 {
            m.observe(
                &pair(delta(50, canary_errors, canary_ms), delta(500, 0, 100)),
                &model,
            );
        }
        m.last
    }

    #[test]
    fn errors_and_latency_roll_back_through_the_sequential_test() {
        let model = Model::default();
        for (errors, ms, signal) in [(20, 100, "errors"), (0, 400, "latency")] {
            let v = monitor_verdict(errors, ms);
            let j = judge_live(&v, &model).unwrap();
            assert_eq!(j.outcome, Outcome::Rollback);
            assert!(j.explanation.contains(signal), "{}", j.explanation);
            assert!(j.explanation.contains("anytime-valid"), "{}", j.explanation);
            // The step's judgement says the same.
            let j = judge_step(
                &spec(),
                &pair(delta(200, 40, ms), delta(2000, 10, 100)),
                10,
                &model,
                &v,
                0.0,
            );
            assert_eq!(j.outcome, Outcome::Rollback, "{}", j.explanation);
        }
    }

    #[test]
    fn a_thin_traffic_fault_cannot_pass_a_step_on_silence() {
        // 2 canary requests a tick, half failing: the recent window never
        // holds min_requests. The effect-scaled low-traffic rule (issue 10)
        // may already call it critical; either way the e-process
        // accumulates and the step's judgement must not pass it.
        let model = Model::default();
        let mut m = Monitor::new(&model);
        let mut step = PairTally::default();
        for _ in 0..40 {
            let tick = pair(delta(2, 1, 100), delta(500, 0, 100));
            m.observe(&tick, &model);
            step.merge(&tick);
        }
        assert!(
            matches!(m.last.state, State::InsufficientData | State::Critical),
            "{:?}",
            m.last.state
        );
        let j = judge_step(&spec(), &step, 10, &model, &m.last, m.log_e_value());
        assert_eq!(
            j.outcome,
            Outcome::Rollback,
            "{} (log_e {})",
            j.explanation,
            m.log_e_value()
        );
        // The same thin traffic, healthy: the step passes.
        let mut m = Monitor::new(&model);
        let mut step = PairTally::default();
        for _ in 0..40 {
            let tick = pair(delta(2, 0, 100), delta(500, 0, 100));
            m.observe(&tick, &model);
            step.merge(&tick);
        }
        let j = judge_step(&spec(), &step, 10, &model, &m.last, m.log_e_value());
        assert_eq!(j.outcome, Outcome::Pass, "{}", j.explanation);
    }

    #[test]
    fn the_fixed_window_test_decides_nothing_and_warn_holds() {
        // A step whose fixed-window comparison is critical passes when the
        // sequential test is ok (and the SLOs hold): it is a statistic only.
        let p = pair(delta(200, 8, 100), delta(2000, 10, 100));
        let j = judge_step(&spec(), &p, 10, &Model::default(), &ok(), 0.0);
        assert_eq!(j.outcome, Outcome::Pass, "{}", j.explanation);
        assert!(j.evidence.get("fixed_window").is_some(), "{}", j.evidence);
        let warn = Verdict {
            state: State::Warn,
            ..Verdict::default()
        };
        let j = judge_step(&spec(), &p, 10, &Model::default(), &warn, 0.0);
        assert_eq!(j.outcome, Outcome::Hold, "{}", j.explanation);
        assert!(j.explanation.contains("warn"), "{}", j.explanation);
    }

    #[test]
    fn slo_breach_rolls_back_at_full_weight() {
        // No stable reference at 100 %: the SLO alone decides.
        let j = judge_step(
            &spec(),
            &pair(delta(400, 60, 100), delta(0, 0, 100)),
            100,
            &Model::default(),
            &ok(),
            0.0,
        );
        assert_eq!(j.outcome, Outcome::Rollback);
        assert!(j.explanation.starts_with("SLO breach"), "{}", j.explanation);
        let j = judge_step(
            &spec(),
            &pair(delta(400, 0, 900), delta(0, 0, 100)),
            100,
            &Model::default(),
            &ok(),
            0.0,
        );
        assert_eq!(j.outcome, Outcome::Rollback);
        assert!(j.explanation.contains("p99"), "{}", j.explanation);
    }

    #[test]
    fn monitor_goes_critical_on_errors() {
        let model = Model::default();
        let mut m = Monitor::new(&model);
        for _ in 0..10 {
            m.observe(&pair(delta(50, 0, 100), delta(500, 0, 100)), &model);
        }
        assert_ne!(m.last.state, State::Critical);
        for _ in 0..3 {
            m.observe(&pair(delta(50, 25, 100), delta(500, 0, 100)), &model);
        }
        let j = judge_live(&m.last, &model).unwrap();
        assert_eq!(j.outcome, Outcome::Rollback);
        assert!(j.explanation.contains("vs stable"), "{}", j.explanation);
    }
}
