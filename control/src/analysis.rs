//! Canary analysis: the judgements the state machine acts on.
//!
//! Why this exists: "is the canary worse than stable" must be answered with
//! the same sound small-sample statistics the filter uses
//! ([`vigil_scorer::peer::score_canary`]), on the evidence of every sidecar
//! merged, and every answer must carry its numbers in plain English. Two
//! judgements, both pure:
//!
//! - [`Monitor`] — live, once per analysis tick: the merged tick is fed to a
//!   pair of [`SeriesState`]s (rolling windows of the model's size) and
//!   judged with `score_canary`; `critical` rolls back at once, without
//!   waiting for the step to end.
//! - [`judge_step`] — at a step's end, on the whole step's merged evidence:
//!   the step is one "tick" of a one-tick model, so `score_canary` compares
//!   the canary's step against the stable's same step. Then the SLOs, tested
//!   one-sided against their limits (a breach must be significant at the
//!   model's `z_warn`, so one unlucky error among 20 requests does not roll
//!   back a healthy canary, while a real breach does within a step).
//!   Too little evidence (fewer than `min_requests` canary or
//!   `min_requests_ref` stable requests) holds: it never promotes.

use crate::evidence::{PairTally, SidecarCritical, Tally};
use crate::spec::CanarySpec;
use serde_json::{json, Value};
use vigil_scorer::model::Model;
use vigil_scorer::peer::score_canary;
use vigil_scorer::series::SeriesState;
use vigil_scorer::stats;
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

/// Live canary-vs-stable monitor over the model's rolling windows.
#[derive(Debug, Clone)]
pub struct Monitor {
    canary: SeriesState,
    stable: SeriesState,
    /// Latest verdict.
    pub last: Verdict,
}

impl Monitor {
    /// Empty monitor sized for `model`.
    pub fn new(model: &Model) -> Self {
        Monitor {
            canary: SeriesState::new(model),
            stable: SeriesState::new(model),
            last: Verdict::default(),
        }
    }

    /// Feed one analysis tick (every sidecar's reports merged) and judge.
    pub fn observe(&mut self, tick: &PairTally, model: &Model) -> Verdict {
        self.canary.observe(&tick.canary.to_delta(), model);
        self.stable.observe(&tick.stable.to_delta(), model);
        self.last = score_canary(&self.canary, &self.stable, model);
        self.last
    }
}

/// A rollback judgement when the live verdict is critical.
pub fn judge_live(verdict: &Verdict, model: &Model) -> Option<Judgement> {
    (verdict.state == State::Critical).then(|| Judgement {
        outcome: Outcome::Rollback,
        explanation: format!(
            "live canary-vs-stable test over the last {} ticks is critical: {}",
            model.recent_ticks,
            stable_wording(&verdict.explain())
        ),
        evidence: json!({"source": "monitor", "verdict": verdict_json(verdict)}),
    })
}

/// A rollback judgement from a sidecar's own `critical` verdict.
pub fn judge_sidecar(c: &SidecarCritical) -> Judgement {
    Judgement {
        outcome: Outcome::Rollback,
        explanation: format!(
            "sidecar {} judged the canary critical (score {}): {}",
            c.sidecar, c.score, c.reason
        ),
        evidence: json!({"source": "sidecar", "sidecar": c.sidecar, "score": c.score, "reason": c.reason}),
    }
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
pub fn judge_step(spec: &CanarySpec, step: &PairTally, weight: u8, model: &Model) -> Judgement {
    let (c, s) = (&step.canary, &step.stable);
    let mut evidence = json!({
        "source": "step", "weight": weight,
        "canary": tally_json(c), "stable": tally_json(s),
        "min_requests": model.min_requests, "min_requests_ref": model.min_requests_ref,
    });
    let summary = describe(step);
    if let Some(crit) = &step.critical {
        return judge_sidecar(crit);
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
    let mut comparison = String::from("no stable reference at 100% (SLOs only)");
    if stable_enough {
        // The whole step as one tick of a one-tick model: the canary's step
        // against the stable's same step.
        let step_model = Model {
            window_ticks: 1,
            recent_ticks: 1,
            ..model.clone()
        };
        let mut cs = SeriesState::new(&step_model);
        let mut ss = SeriesState::new(&step_model);
        cs.observe(&c.to_delta(), &step_model);
        ss.observe(&s.to_delta(), &step_model);
        let verdict = score_canary(&cs, &ss, &step_model);
        if let Some(obj) = evidence.as_object_mut() {
            obj.insert("verdict".into(), verdict_json(&verdict));
        }
        if verdict.state == State::Critical {
            return Judgement {
                outcome: Outcome::Rollback,
                explanation: format!(
                    "step at {weight}% failed the canary-vs-stable test: {} ({summary})",
                    stable_wording(&verdict.explain())
                ),
                evidence,
            };
        }
        comparison = format!(
            "canary-vs-stable {} (strongest signal {}, stat {:.1} < {:.1})",
            verdict.state.as_str(),
            signal_name(verdict.evidence.signal),
            verdict.evidence.statistic,
            model.z_critical
        );
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
        let j = judge_step(&spec(), &p, 10, &Model::default());
        assert_eq!(j.outcome, Outcome::Pass, "{}", j.explanation);
        p.canary_p99_gauge_us = Some(650_000);
        let j = judge_step(&spec(), &p, 10, &Model::default());
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
        );
        assert_eq!(j.outcome, Outcome::Hold);
        // At 100 % the stable may be empty.
        let j = judge_step(
            &spec(),
            &pair(delta(100, 0, 100), delta(0, 0, 100)),
            100,
            &Model::default(),
        );
        assert_eq!(j.outcome, Outcome::Pass, "{}", j.explanation);
    }

    #[test]
    fn errors_roll_back() {
        let j = judge_step(
            &spec(),
            &pair(delta(200, 40, 100), delta(2000, 10, 100)),
            10,
            &Model::default(),
        );
        assert_eq!(j.outcome, Outcome::Rollback);
        assert!(
            j.explanation.contains("errors: 20.00% vs stable"),
            "{}",
            j.explanation
        );
    }

    #[test]
    fn latency_rolls_back() {
        let j = judge_step(
            &spec(),
            &pair(delta(200, 0, 400), delta(2000, 0, 100)),
            10,
            &Model::default(),
        );
        assert_eq!(j.outcome, Outcome::Rollback);
        assert!(j.explanation.contains("latency"), "{}", j.explanation);
    }

    #[test]
    fn slo_breach_rolls_back_at_full_weight() {
        // No stable reference at 100 %: the SLO alone decides.
        let j = judge_step(
            &spec(),
            &pair(delta(400, 60, 100), delta(0, 0, 100)),
            100,
            &Model::default(),
        );
        assert_eq!(j.outcome, Outcome::Rollback);
        assert!(j.explanation.starts_with("SLO breach"), "{}", j.explanation);
        let j = judge_step(
            &spec(),
            &pair(delta(400, 0, 900), delta(0, 0, 100)),
            100,
            &Model::default(),
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
