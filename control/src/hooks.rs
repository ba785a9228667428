//! Flagger webhooks and the Argo Rollouts `web` metric provider, backed by
//! Vigil's verdicts.
//!
//! Why this exists: teams that already run Flagger or Argo Rollouts keep
//! their progressive-delivery controller and ask Vigil only "is the canary
//! good?". Both tools speak plain HTTP contracts, so Vigil answers them from
//! the same canary state and verdicts its own rollouts use (one judge): the
//! canary is declared in Vigil (usually `mode: observe`, the external tool
//! moves the traffic), the filters report as usual, and these endpoints turn
//! the canary's view into each tool's answer.
//!
//! | route | contract |
//! |---|---|
//! | `POST /v1/flagger/{confirm-rollout,confirm-traffic-increase,confirm-promotion,rollback}` | Flagger webhook: body `{name, namespace, phase, checksum, metadata}`; 2xx = go on, non-2xx = halt (for `rollback`: 2xx = roll back now) |
//! | `GET /v1/argo/{canary}` | Argo Rollouts `web` provider: `{ok, verdict, inconclusive, score, n, n_stable, reason, ...}`, always 200 for a known canary |
//!
//! The Vigil canary a Flagger payload refers to is `metadata.vigil_canary`
//! when set, else the payload's `name`.
//!
//! Both are reads of the judgement and need no credential (like
//! `GET /v1/canaries`); they change nothing. [`assess`] and
//! [`flagger_answer`] are pure; the handlers are thin.

// Handlers return a ready `Response` as their error (as in `crate::http`).
#![allow(clippy::result_large_err)]

use crate::http::{error, ok_json, op_error};
use crate::service::{OpError, Service};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest Flagger payload accepted.
pub const MAX_HOOK_BYTES: usize = 64 * 1024;

/// Vigil's answer to "is the canary good?", for external controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Enough evidence, nothing significant against the canary.
    Pass,
    /// Rolled back, or the canary-vs-stable test is critical.
    Fail,
    /// Not enough evidence yet, or anomalous but not significant.
    Inconclusive,
}

impl Verdict {
    /// `pass`, `fail`, `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// A canary's assessment, from its API view.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Canary name.
    pub name: String,
    /// The answer.
    pub verdict: Verdict,
    /// Plain English, with the numbers.
    pub reason: String,
    /// Live score (0–1000).
    pub score: u64,
    /// Canary requests in the evidence of the step in force.
    pub n: u64,
    /// Stable requests in the same evidence.
    pub n_stable: u64,
    /// Vigil's phase.
    pub phase: String,
    /// Canary weight Vigil serves.
    pub weight: u64,
    /// Step (1-based).
    pub step: u64,
    /// Live verdict state (`ok`, `warn`, `critical`, `insufficient_data`).
    pub live_state: String,
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn u64_at(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// Assess a canary from its view (`GET /v1/canaries/{name}`).
pub fn assess(view: &Value) -> Assessment {
    let phase = str_at(view, "/phase").to_string();
    let live_state = str_at(view, "/live_verdict/state").to_string();
    let live_explanation = str_at(view, "/live_verdict/explanation");
    let n = u64_at(view, "/evidence/canary/requests");
    let n_stable = u64_at(view, "/evidence/stable/requests");
    let min_n = u64_at(view, "/evidence/min_requests");
    let min_ref = u64_at(view, "/evidence/min_requests_ref");
    let weight = u64_at(view, "/canary_weight");
    let summary = str_at(view, "/evidence/summary");
    let state_reason = str_at(view, "/reason");
    let (verdict, reason) = if phase == "rolled_back" {
        (
            Verdict::Fail,
            format!("Vigil rolled the canary back: {state_reason}"),
        )
    } else if live_state == "critical" {
        (
            Verdict::Fail,
            format!("live canary-vs-stable test is critical: {live_explanation}"),
        )
    } else if phase == "promoted" {
        (
            Verdict::Pass,
            format!("Vigil promoted the canary: {state_reason}"),
        )
    } else if n < min_n {
        (
            Verdict::Inconclusive,
            format!(
                "insufficient evidence: the canary served {n} requests this step, the model needs {min_n} ({summary})"
            ),
        )
    } else if n_stable < min_ref && weight < 100 {
        (
            Verdict::Inconclusive,
            format!(
                "insufficient evidence: the stable served {n_stable} requests this step, the model needs {min_ref} as a reference ({summary})"
            ),
        )
    } else if live_state == "ok" {
        (
            Verdict::Pass,
            format!("canary-vs-stable test ok: {summary}"),
        )
    } else if live_state == "warn" {
        (
            Verdict::Inconclusive,
            format!("anomalous but not significant yet: {live_explanation} ({summary})"),
        )
    } else {
        (
            Verdict::Inconclusive,
            format!("insufficient evidence: the live test has too little data yet ({summary})"),
        )
    };
    Assessment {
        name: str_at(view, "/name").to_string(),
        verdict,
        reason,
        score: u64_at(view, "/live_verdict/score"),
        n,
        n_stable,
        phase,
        weight,
        step: u64_at(view, "/step"),
        live_state,
    }
}

/// The Flagger webhook types Vigil answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlaggerHook {
    /// Before the canary is scaled up.
    ConfirmRollout,
    /// Before each traffic increase.
    ConfirmTrafficIncrease,
    /// Before promotion.
    ConfirmPromotion,
    /// Polled during analysis: 2xx rolls back.
    Rollback,
}

impl FlaggerHook {
    /// From the path segment (Flagger's `type` values).
    pub fn parse(s: &str) -> Option<FlaggerHook> {
        Some(match s {
            "confirm-rollout" => FlaggerHook::ConfirmRollout,
            "confirm-traffic-increase" => FlaggerHook::ConfirmTrafficIncrease,
            "confirm-promotion" => FlaggerHook::ConfirmPromotion,
            "rollback" => FlaggerHook::Rollback,
            _ => return None,
        })
    }

    /// Flagger's `type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            FlaggerHook::ConfirmRollout => "confirm-rollout",
            FlaggerHook::ConfirmTrafficIncrease => "confirm-traffic-increase",
            FlaggerHook::ConfirmPromotion => "confirm-promotion",
            FlaggerHook::Rollback => "rollback",
        }
    }
}

/// Whether Flagger may go on (for `rollback`: whether it must roll back),
/// and why.
pub fn flagger_answer(hook: FlaggerHook, a: &Assessment) -> (bool, String) {
    let paused = a.phase == "paused";
    let waiting = a.phase == "waiting_approval";
    match hook {
        FlaggerHook::Rollback => match a.verdict {
            Verdict::Fail => (true, format!("roll back: {}", a.reason)),
            _ => (false, format!("no rollback: {}", a.reason)),
        },
        FlaggerHook::ConfirmRollout => {
            if a.verdict == Verdict::Fail {
                (false, format!("halt: {}", a.reason))
            } else if paused {
                (false, "halt: paused by an operator in Vigil".to_string())
            } else {
                (true, format!("go: Vigil is watching ({})", a.reason))
            }
        }
        FlaggerHook::ConfirmTrafficIncrease | FlaggerHook::ConfirmPromotion => {
            if paused {
                (false, "halt: paused by an operator in Vigil".to_string())
            } else if waiting {
                (
                    false,
                    "halt: waiting for an operator's approval in Vigil".to_string(),
                )
            } else {
                match a.verdict {
                    Verdict::Pass => (true, format!("go: {}", a.reason)),
                    Verdict::Fail | Verdict::Inconclusive => (false, format!("halt: {}", a.reason)),
                }
            }
        }
    }
}

/// Flagger's webhook payload (`CanaryWebhookPayload`). Unknown fields are
/// ignored: newer Flagger versions add some.
#[derive(Debug, Clone, Deserialize)]
pub struct FlaggerPayload {
    /// Canary name.
    pub name: String,
    /// Canary namespace.
    pub namespace: String,
    /// Flagger's phase.
    #[serde(default)]
    pub phase: String,
    /// Flagger's checksum of the canary revision.
    #[serde(default)]
    pub checksum: String,
    /// The webhook's `metadata` from the Canary spec.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl FlaggerPayload {
    /// The Vigil canary this payload refers to.
    pub fn vigil_canary(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| m.get("vigil_canary"))
            .map_or(self.name.as_str(), String::as_str)
    }
}

fn view_of(svc: &Service, name: &str) -> Result<Value, Response> {
    svc.show(name).map_err(|e| match e {
        OpError::NotFound => error(
            StatusCode::NOT_FOUND,
            format!("no Vigil canary named {name:?}"),
            "name",
        ),
        e => op_error(e),
    })
}

fn assessment_json(a: &Assessment) -> Value {
    json!({
        "canary": a.name,
        "ok": a.verdict == Verdict::Pass,
        "verdict": a.verdict.as_str(),
        "inconclusive": a.verdict == Verdict::Inconclusive,
        "score": a.score,
        "n": a.n,
        "n_stable": a.n_stable,
        "phase": a.phase,
        "canary_weight": a.weight,
        "step": a.step,
        "live_state": a.live_state,
        "reason": a.reason,
    })
}

async fn flagger(
    State(svc): State<Arc<Service>>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(hook) = FlaggerHook::parse(&hook) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown Flagger hook {hook:?}: one of confirm-rollout, confirm-traffic-increase, confirm-promotion, rollback"),
            "hook",
        );
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type must be application/json, got {ct:?}"),
            "content-type",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_HOOK_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds {MAX_HOOK_BYTES} bytes"),
            "body",
        );
    };
    let payload: FlaggerPayload = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                "not a Flagger webhook payload {{name, namespace, phase, checksum, metadata}}: {e}"
            ),
                "body",
            )
        }
    };
    let view = match view_of(&svc, payload.vigil_canary()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let a = assess(&view);
    let (go, reason) = flagger_answer(hook, &a);
    let status = if go {
        StatusCode::OK
    } else {
        // Any non-2xx halts Flagger (or, for `rollback`, does not roll back);
        // 409: the canary's state does not allow it now.
        StatusCode::CONFLICT
    };
    let mut body = assessment_json(&a);
    if let Some(o) = body.as_object_mut() {
        o.insert("hook".into(), json!(hook.as_str()));
        o.insert("go".into(), json!(go));
        o.insert("reason".into(), json!(reason));
        o.insert("name".into(), json!(payload.name));
        o.insert("namespace".into(), json!(payload.namespace));
        o.insert("flagger_phase".into(), json!(payload.phase));
        o.insert("checksum".into(), json!(payload.checksum));
    }
    ok_json(status, &body)
}

async fn argo(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    match view_of(&svc, &name) {
        Ok(view) => ok_json(StatusCode::OK, &assessment_json(&assess(&view))),
        Err(r) => r,
    }
}

/// The routes of this module (merged into [`crate::http::router`]).
pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/flagger/{hook}", post(flagger))
        .route("/v1/argo/{name}", get(argo))
        .with_state(svc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(phase: &str, live: &str, n: u64, n_stable: u64) -> Value {
        json!({"name": "c", "phase": phase, "canary_weight": 10, "step": 1, "reason": "r",
               "live_verdict": {"state": live, "score": 7, "explanation": "why"},
               "evidence": {"summary": "s", "canary": {"requests": n}, "stable": {"requests": n_stable},
                            "min_requests": 50, "min_requests_ref": 100}})
    }

    #[test]
    fn verdicts_from_views() {
        assert_eq!(
            assess(&view("progressing", "ok", 60, 200)).verdict,
            Verdict::Pass
        );
        assert_eq!(
            assess(&view("progressing", "ok", 10, 200)).verdict,
            Verdict::Inconclusive
        );
        assert_eq!(
            assess(&view("progressing", "ok", 60, 20)).verdict,
            Verdict::Inconclusive
        );
        assert_eq!(
            assess(&view("progressing", "warn", 60, 200)).verdict,
            Verdict::Inconclusive
        );
        assert_eq!(
            assess(&view("progressing", "critical", 5, 5)).verdict,
            Verdict::Fail
        );
        assert_eq!(
            assess(&view("rolled_back", "ok", 0, 0)).verdict,
            Verdict::Fail
        );
        assert_eq!(assess(&view("promoted", "ok", 0, 0)).verdict, Verdict::Pass);
        let a = assess(&view("progressing", "ok", 10, 200));
        assert!(a.reason.contains("10") && a.reason.contains("50"), "{a:?}");
    }

    #[test]
    fn flagger_answers() {
        let pass = assess(&view("progressing", "ok", 60, 200));
        let fail = assess(&view("rolled_back", "ok", 60, 200));
        let thin = assess(&view("progressing", "ok", 1, 200));
        let gated = assess(&view("waiting_approval", "ok", 60, 200));
        use FlaggerHook::*;
        assert!(flagger_answer(ConfirmTrafficIncrease, &pass).0);
        assert!(flagger_answer(ConfirmPromotion, &pass).0);
        assert!(!flagger_answer(ConfirmPromotion, &thin).0);
        assert!(!flagger_answer(ConfirmPromotion, &gated).0);
        assert!(!flagger_answer(ConfirmTrafficIncrease, &fail).0);
        assert!(flagger_answer(ConfirmRollout, &thin).0);
        assert!(!flagger_answer(ConfirmRollout, &fail).0);
        assert!(flagger_answer(Rollback, &fail).0);
        assert!(!flagger_answer(Rollback, &pass).0);
        assert!(!flagger_answer(Rollback, &thin).0);
    }

    #[test]
    fn payload_names_the_canary() {
        let p: FlaggerPayload = serde_json::from_value(json!({"name": "podinfo", "namespace": "test",
            "phase": "Progressing", "checksum": "abc", "metadata": {"vigil_canary": "checkout"}, "type": "rollback"}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.vigil_canary(), "checkout");
        let p: FlaggerPayload =
            serde_json::from_value(json!({"name": "podinfo", "namespace": "test"}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.vigil_canary(), "podinfo");
        assert!(serde_json::from_value::<FlaggerPayload>(json!({"namespace": "x"})).is_err());
    }
}
