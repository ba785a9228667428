//! The operator's dashboard: a page served by `vigil-control` itself, with
//! its assets embedded in the binary (no CDN, works offline), and the small
//! JSON endpoints it reads.
//!
//! Why this exists: an SRE watching a rollout wants, in one place, the
//! canaries with their phase, weight and step, each canary's timeline of
//! weights and decisions with their reasons, live per-version plots with the
//! decision moments marked, the pending approvals, and the audit log with its
//! chain status.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /`, `GET /dashboard/` | – | the page (`assets/dashboard.html`) |
//! | `GET /dashboard/app.js`, `/dashboard/style.css` | – | its script and style |
//! | `GET /v1/dashboard/series/{canary}` | – | per-tick samples of the last minutes ([`History`]) |
//! | `GET /v1/audit?limit=N&before=SEQ` | – | a page of audit rows (newest first, ≤ 500) and the chain's status ([`crate::audit_page`]) |
//!
//! Writes (approve, reject) go through the ordinary API with
//! `Authorization: Bearer <token>` set by the page's script from a token the
//! operator typed into the login form and that is kept in `sessionStorage`:
//! no cookie carries a credential, so a cross-site form post cannot act for
//! the operator (CSRF-safe), and without a token the page is read-only (the
//! API refuses the click with 401, which the page shows).

use crate::evidence::{PairTally, Tally};
use crate::service::Service;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use vigil_scorer::verdict::Verdict;

const HTML: &str = include_str!("../assets/dashboard.html");
const JS: &str = include_str!("../assets/app.js");
const CSS: &str = include_str!("../assets/style.css");

/// Samples kept per canary (at the default 1 s tick, ten minutes).
pub const MAX_SAMPLES: usize = 600;

/// One version's numbers over one analysis tick.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VersionSample {
    /// Requests in the tick.
    pub requests: u64,
    /// Errors (5xx and no response).
    pub errors: u64,
    /// Resets, overflows and timeouts (other failure classes).
    pub resets: u64,
    /// Upstream overflows.
    pub overflows: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Quantiles, ms (None without requests).
    pub p50_ms: Option<f64>,
    /// p95, ms.
    pub p95_ms: Option<f64>,
    /// p99, ms.
    pub p99_ms: Option<f64>,
}

impl VersionSample {
    fn of(t: &Tally) -> Self {
        let c = &t.counters;
        VersionSample {
            requests: c.requests,
            errors: c.errors,
            resets: c.resets,
            overflows: c.overflows,
            timeouts: c.timeouts,
            p50_ms: t.quantile_ms(0.5),
            p95_ms: t.quantile_ms(0.95),
            p99_ms: t.quantile_ms(0.99),
        }
    }

    fn json(&self, dt_ms: u64) -> Value {
        let per_s = |n: u64| {
            if dt_ms == 0 {
                0.0
            } else {
                (n as f64 * 1000.0 / dt_ms as f64 * 100.0).round() / 100.0
            }
        };
        let r2 = |v: Option<f64>| v.map(|x| (x * 100.0).round() / 100.0);
        json!({
            "requests": self.requests, "errors": self.errors,
            "rps": per_s(self.requests), "errors_per_s": per_s(self.errors),
            "error_ratio": if self.requests > 0 { self.errors as f64 / self.requests as f64 } else { 0.0 },
            "resets": self.resets, "overflows": self.overflows, "timeouts": self.timeouts,
            "p50_ms": r2(self.p50_ms), "p95_ms": r2(self.p95_ms), "p99_ms": r2(self.p99_ms),
        })
    }
}

/// One analysis tick of one canary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Canary weight in force.
    pub weight: u8,
    /// The canary version.
    pub canary: VersionSample,
    /// The stable version.
    pub stable: VersionSample,
    /// Live verdict score (0–1000) of the previous tick.
    pub score: u16,
    /// Live verdict state of the previous tick.
    pub state: &'static str,
}

/// Recent per-tick samples of every canary, bounded ([`MAX_SAMPLES`] each),
/// fed by the analysis tick; in memory only (the plots cover the last
/// minutes, the decisions are persisted elsewhere).
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<BTreeMap<String, VecDeque<Sample>>>,
}

impl History {
    /// Record one tick of `canary`.
    pub fn record(&self, canary: &str, at_ms: u64, tick: &PairTally, weight: u8, last: &Verdict) {
        let sample = Sample {
            at_ms,
            weight,
            canary: VersionSample::of(&tick.canary),
            stable: VersionSample::of(&tick.stable),
            score: last.score,
            state: last.state.as_str(),
        };
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = map.entry(canary.to_string()).or_default();
        if q.len() >= MAX_SAMPLES {
            q.pop_front();
        }
        q.push_back(sample);
    }

    /// Forget a canary's samples.
    pub fn forget(&self, canary: &str) {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(canary);
    }

    /// The samples of `canary`, oldest first, as JSON.
    pub fn series_json(&self, canary: &str) -> Value {
        let map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut prev: Option<u64> = None;
        let samples: Vec<Value> = map
            .get(canary)
            .map(|q| {
                q.iter()
                    .map(|s| {
                        let dt = prev.map_or(0, |p| s.at_ms.saturating_sub(p));
                        prev = Some(s.at_ms);
                        json!({"at_ms": s.at_ms, "dt_ms": dt, "weight": s.weight,
                               "score": s.score, "state": s.state,
                               "canary": s.canary.json(dt), "stable": s.stable.json(dt)})
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({"canary": canary, "samples": samples})
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    let mut r = asset("text/html; charset=utf-8", HTML);
    // Everything the page needs is same-origin: no CDN, no inline script.
    if let Ok(v) = header::HeaderValue::from_str(
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn series(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    if svc.show(&name).is_err() {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "no such canary", "field": "name"}),
        );
    }
    json_response(StatusCode::OK, &svc.history.series_json(&name))
}

async fn audit(State(svc): State<Arc<Service>>, RawQuery(query): RawQuery) -> Response {
    let q = match crate::audit_page::parse_query(query.as_deref()) {
        Ok(q) => q,
        Err((field, message)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": message, "field": field}),
            )
        }
    };
    // SQLite work, off the async workers.
    let done = tokio::task::spawn_blocking(move || svc.audit_view(q))
        .await
        .unwrap_or_else(|_| Err("internal worker failed".to_string()));
    match done {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(m) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": format!("cannot read the audit log: {m}"), "field": ""}),
        ),
    }
}

/// The routes of this module (merged into [`crate::http::router`]).
pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard/", get(page))
        .route("/dashboard/app.js", get(js))
        .route("/dashboard/style.css", get(css))
        .route("/v1/dashboard/series/{name}", get(series))
        .route("/v1/audit", get(audit))
        .with_state(svc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_computes_rates() {
        let h = History::default();
        let mut tick = PairTally::default();
        tick.canary.counters.requests = 10;
        tick.canary.counters.errors = 2;
        for i in 0..(MAX_SAMPLES as u64 + 5) {
            h.record("c", 1000 + i * 500, &tick, 10, &Verdict::default());
        }
        let v = h.series_json("c");
        let s = v["samples"].as_array().cloned().unwrap_or_default();
        assert_eq!(s.len(), MAX_SAMPLES);
        assert_eq!(
            s.get(1).map(|x| x["canary"]["rps"].clone()),
            Some(json!(20.0))
        );
        assert_eq!(
            s.get(1).map(|x| x["canary"]["error_ratio"].clone()),
            Some(json!(0.2))
        );
        assert_eq!(h.series_json("none")["samples"], json!([]));
        h.forget("c");
        assert_eq!(h.series_json("c")["samples"], json!([]));
    }

    #[test]
    fn assets_are_self_contained() {
        for text in [HTML, JS, CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(HTML.contains("app.js") && HTML.contains("style.css"));
        assert!(!HTML.contains("<script>"), "no inline script (CSP)");
        assert!(!JS.contains("document.cookie"));
    }
}
