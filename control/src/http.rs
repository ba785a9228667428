//! The HTTP API (axum): thin handlers over [`crate::service::Service`].
//!
//! Why this exists: it is the only place that knows about status codes,
//! headers, bearer tokens and body limits. Every error is JSON
//! `{"error": "...", "field": "..."}`; every write needs
//! `Authorization: Bearer <token>` (compared in constant time, never
//! logged) and is refused with 401 before anything is read or changed.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /healthz` | – | liveness |
//! | `GET /metrics` | – | Prometheus text |
//! | `GET /v1/routing` | – | weights for the filters (ETag / If-None-Match) |
//! | `POST /v1/reports` | token | a filter's report (≤ 1 MiB) → 202 |
//! | `GET /v1/canaries`, `GET /v1/canaries/{name}` | – | state, evidence, decisions |
//! | `POST /v1/canaries` | token | declare / update a canary |
//! | `POST /v1/canaries/{name}/{approve,reject,pause,resume}` | token | operator actions |
//! | `GET /dashboard/`, `GET /v1/dashboard/series/{name}`, `GET /v1/audit` | – | the operator's page ([`crate::dashboard`]) |
//! | `POST /v1/flagger/{hook}`, `GET /v1/argo/{name}` | – | Flagger / Argo Rollouts ([`crate::hooks`]) |

// Handlers return a ready `Response` as their error: boxing it would only
// add an allocation on the refusal path.
#![allow(clippy::result_large_err)]

use crate::log::{self, RateLimit};
use crate::metrics::Reject;
use crate::report::{self, MAX_REPORT_BYTES};
use crate::service::{IngestError, Op, OpError, Service, Upsert};
use crate::spec::CanarySpec;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Largest body of a canary declaration or an operator action.
pub const MAX_WRITE_BYTES: usize = 64 * 1024;

static REJECT_LOG: RateLimit = RateLimit::new(20);

#[derive(Clone)]
struct App {
    svc: Arc<Service>,
    token: Arc<str>,
}

/// A JSON error response.
fn error(status: StatusCode, message: impl Into<String>, field: &str) -> Response {
    let body = json!({"error": message.into(), "field": field});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check `Authorization: Bearer <token>`; a 401 response when it fails.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if !app.token.is_empty() && ct_eq(t.as_bytes(), app.token.as_bytes()) => Ok(()),
        other => {
            app.svc.rejected(Reject::Unauthorized);
            let msg = if other.is_none() {
                "missing bearer token"
            } else {
                "wrong bearer token"
            };
            Err(error(StatusCode::UNAUTHORIZED, msg, "authorization"))
        }
    }
}

fn require_json(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        app.svc.rejected(Reject::MediaType);
        Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type must be application/json, got {ct:?}"),
            "content-type",
        ))
    }
}

async fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, Response> {
    let too_large = |app: &App| {
        app.svc.rejected(Reject::TooLarge);
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds {limit} bytes"),
            "body",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(app));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(app))
}

async fn healthz() -> Response {
    ok_json(StatusCode::OK, &json!({"status": "ok"}))
}

async fn metrics(State(app): State<App>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.svc.metrics_text(),
    )
        .into_response()
}

async fn routing(State(app): State<App>, headers: HeaderMap) -> Response {
    let doc = app.svc.routing();
    let etag = format!("\"{}\"", doc.version);
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::ETAG, etag_value),
        ],
        doc.body,
    )
        .into_response()
}

async fn post_report(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    if let Err(r) = require_json(&app, &headers) {
        return r;
    }
    let bytes = match read_body(&app, &headers, body, MAX_REPORT_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed = if bytes.len() > 64 * 1024 {
        // Big reports are parsed off the async workers.
        match tokio::task::spawn_blocking(move || report::parse(&bytes)).await {
            Ok(r) => r,
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "parser failed", "body"),
        }
    } else {
        report::parse(&bytes)
    };
    let report = match parsed {
        Ok(r) => r,
        Err(e) => {
            app.svc.rejected(Reject::Invalid);
            if REJECT_LOG.allow() {
                log::warn(
                    "report rejected",
                    json!({"field": e.field, "error": e.message}),
                );
            }
            return error(StatusCode::BAD_REQUEST, e.message, &e.field);
        }
    };
    match app.svc.ingest(&report) {
        Ok(n) => ok_json(StatusCode::ACCEPTED, &json!({"accepted": n})),
        Err(IngestError::OutOfOrder { last }) => {
            app.svc.rejected(Reject::OutOfOrder);
            if REJECT_LOG.allow() {
                log::warn(
                    "report out of order",
                    json!({"sidecar": report.sidecar, "seq": report.seq, "last_seq": last}),
                );
            }
            error(
                StatusCode::CONFLICT,
                format!(
                    "seq {} is not above the last accepted seq {last} of sidecar {:?}",
                    report.seq, report.sidecar
                ),
                "seq",
            )
        }
        Err(IngestError::TooManySidecars) => {
            app.svc.rejected(Reject::TooManySidecars);
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many distinct sidecars",
                "sidecar",
            )
        }
    }
}

async fn list(State(app): State<App>) -> Response {
    ok_json(StatusCode::OK, &json!({"canaries": app.svc.list()}))
}

fn op_error(e: OpError) -> Response {
    match e {
        OpError::NotFound => error(StatusCode::NOT_FOUND, "no such canary", "name"),
        OpError::Conflict(m) => error(StatusCode::CONFLICT, m, "phase"),
        OpError::Invalid { field, message } => error(StatusCode::BAD_REQUEST, message, &field),
        OpError::Storage(m) => {
            log::error("storage failure", json!({"error": m}));
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage failure; nothing changed",
                "",
            )
        }
    }
}

async fn show(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.svc.show(&name) {
        Ok(v) => ok_json(StatusCode::OK, &v),
        Err(e) => op_error(e),
    }
}

async fn declare(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    if let Err(r) = require_json(&app, &headers) {
        return r;
    }
    let bytes = match read_body(&app, &headers, body, MAX_WRITE_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            app.svc.rejected(Reject::Invalid);
            return error(StatusCode::BAD_REQUEST, format!("not JSON: {e}"), "body");
        }
    };
    let spec = match CanarySpec::from_json_value(value) {
        Ok(s) => s,
        Err(e) => {
            app.svc.rejected(Reject::Invalid);
            return error(StatusCode::BAD_REQUEST, e.message, &e.field);
        }
    };
    let actor = headers
        .get("x-vigil-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty() && a.len() <= 128)
        .unwrap_or("api")
        .to_string();
    let name = spec.name.clone();
    match app.svc.upsert(spec, &actor, log::now_ms()) {
        Ok(outcome) => {
            let status = if outcome == Upsert::Created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let view = app.svc.show(&name).unwrap_or(Value::Null);
            ok_json(
                status,
                &json!({"outcome": format!("{outcome:?}").to_lowercase(), "canary": view}),
            )
        }
        Err(e) => op_error(e),
    }
}

async fn operate(
    State(app): State<App>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let Some(op) = Op::parse(&action) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown action {action:?}"),
            "action",
        );
    };
    if let Err(r) = require_json(&app, &headers) {
        return r;
    }
    let bytes = match read_body(&app, &headers, body, MAX_WRITE_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Action {
        by: String,
        #[serde(default)]
        comment: String,
    }
    let act: Action = match serde_json::from_slice(&bytes) {
        Ok(a) => a,
        Err(e) => {
            app.svc.rejected(Reject::Invalid);
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"by\": \"who\", \"comment\": \"...\"}}: {e}"),
                "body",
            );
        }
    };
    match app
        .svc
        .operate(&name, op, &act.by, &act.comment, log::now_ms())
    {
        Ok(d) => ok_json(
            StatusCode::OK,
            &json!({"kind": d.kind.as_str(), "phase": d.to.as_str(), "canary_weight": d.weight_after, "explanation": d.explanation}),
        ),
        Err(e) => op_error(e),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint", "path")
}

/// The router.
pub fn router(svc: Arc<Service>, token: &str) -> Router {
    let app = App {
        svc: svc.clone(),
        token: Arc::from(token),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/routing", get(routing))
        .route("/v1/reports", post(post_report))
        .route("/v1/canaries", get(list).post(declare))
        .route("/v1/canaries/{name}", get(show))
        .route("/v1/canaries/{name}/{action}", post(operate))
        .fallback(not_found)
        .with_state(app)
        .merge(crate::hooks::router(svc.clone()))
        .merge(crate::dashboard::router(svc))
}

/// Run the analysis ticker until `shutdown` resolves.
pub fn spawn_ticker(svc: Arc<Service>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let s = svc.clone();
            let _ = tokio::task::spawn_blocking(move || s.tick(log::now_ms())).await;
        }
    })
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: Arc<Service>,
    token: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(svc, token))
        .with_graceful_shutdown(shutdown)
        .await
}
