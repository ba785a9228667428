//! The HTTP API (axum): thin handlers over [`crate::service::Service`].
//!
//! Why this exists: it is the only place that knows about status codes,
//! headers, bearer tokens and body limits. Every error is JSON
//! `{"error": "...", "field": "..."}`; every write needs
//! `Authorization: Bearer <token>` of a credential with the right role
//! ([`crate::credentials`]; looked up by digest, never logged): no or an
//! unknown token is 401, a known token of the wrong role (or a reporter
//! reporting as a sidecar it is not bound to) is 403, both before anything
//! is changed. Operator actions are attributed to the credential's name.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /healthz` | – | liveness |
//! | `GET /metrics` | – | Prometheus text |
//! | `GET /v1/routing` | – | weights for the filters (ETag / If-None-Match) |
//! | `POST /v1/reports` | reporter | a filter's report (≤ 1 MiB) → 202 |
//! | `GET /v1/canaries`, `GET /v1/canaries/{name}` | – | state, evidence, decisions (webhook URLs redacted) |
//! | `POST /v1/canaries` | operator | declare / update a canary |
//! | `POST /v1/canaries/{name}/{approve,reject,pause,resume}` | operator | operator actions |
//! | `POST /v1/policies/{service}/{approve,reject}` | operator | a reviewed least-privilege draft into GitOps YAML ([`crate::policy_flow`]) |
//! | `GET /dashboard/`, `GET /v1/dashboard/series/{name}`, `GET /v1/audit` | – | the operator's page ([`crate::dashboard`]) |
//! | `POST /v1/flagger/{hook}`, `GET /v1/argo/{name}` | – | Flagger / Argo Rollouts ([`crate::hooks`]) |
//! | `GET /v1/pii/findings` | – | PII guard counts per route per minute, and the alert ([`crate::pii`]) |

// Handlers return a ready `Response` as their error: boxing it would only
// add an allocation on the refusal path.
#![allow(clippy::result_large_err)]

use crate::credentials::{Credential, CredentialStore, Role};
use crate::ingest_pool::IngestPool;
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
    creds: Arc<CredentialStore>,
    /// Where big reports are parsed and merged (low CPU priority).
    ingest: Arc<IngestPool>,
}

/// A JSON error response `{"error", "field"}` (the one shape of every 4xx/5xx).
pub(crate) fn error(status: StatusCode, message: impl Into<String>, field: &str) -> Response {
    ok_json(status, &json!({"error": message.into(), "field": field}))
}

/// A JSON response with `status` (the one response builder of the HTTP API).
pub(crate) fn ok_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Check `Authorization: Bearer <token>` against the credentials in
/// force: 401 when missing or unknown, 403 when of another role.
fn authorize(app: &App, headers: &HeaderMap, role: Role) -> Result<Arc<Credential>, Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = presented else {
        app.svc.rejected(Reject::Unauthorized);
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
            "authorization",
        ));
    };
    match app.creds.current().authenticate(token) {
        None => {
            app.svc.rejected(Reject::Unauthorized);
            Err(error(
                StatusCode::UNAUTHORIZED,
                "unknown bearer token",
                "authorization",
            ))
        }
        Some(c) if c.role != role => {
            app.svc.rejected(Reject::Forbidden);
            Err(error(
                StatusCode::FORBIDDEN,
                format!(
                    "credential {:?} is a {} credential; this needs an {} credential",
                    c.name,
                    c.role.as_str(),
                    role.as_str()
                )
                .replace("an reporter", "a reporter"),
                "authorization",
            ))
        }
        Some(c) => Ok(c),
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
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if crate::edge::is_body_timeout(&e) {
            error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
                "body",
            )
        } else {
            too_large(app)
        }
    })
}

async fn healthz(State(app): State<App>) -> Response {
    if app.svc.storage_healthy() {
        ok_json(StatusCode::OK, &json!({"status": "ok"}))
    } else {
        ok_json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unhealthy", "field": "storage",
                    "error": "the last write to SQLite failed; new decisions are held (not served) and retried every tick"}),
        )
    }
}

async fn metrics(State(app): State<App>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.svc.metrics_text() + &crate::edge::metrics_text(),
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
    let cred = match authorize(&app, &headers, Role::Reporter) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = require_json(&app, &headers) {
        return r;
    }
    let bytes = match read_body(&app, &headers, body, MAX_REPORT_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // `None`: no mTLS identity required; `Some(ns)`: the caller's namespace.
    let xfcc = app.creds.xfcc_required().then(|| {
        headers
            .get("x-forwarded-client-cert")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::credentials::xfcc_namespace)
    });
    if bytes.len() > 64 * 1024 {
        // Big reports are parsed and merged off the async workers, on the
        // low-priority ingest threads (routing reads go first).
        let pool = app.ingest.clone();
        pool.run(move || accept_report(&app, &cred, xfcc, &bytes))
            .await
            .unwrap_or_else(|| error(StatusCode::INTERNAL_SERVER_ERROR, "parser failed", "body"))
    } else {
        accept_report(&app, &cred, xfcc, &bytes)
    }
}

/// Parse (names borrowed from the body), check the caller may report as
/// that sidecar, ingest. Nothing is merged before the whole report is
/// validated.
fn accept_report(
    app: &App,
    cred: &crate::credentials::Credential,
    xfcc: Option<Option<String>>,
    bytes: &[u8],
) -> Response {
    let report = match report::parse_borrowed(bytes) {
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
    let sidecar = report.sidecar.as_str();
    if let Some(ns) = xfcc {
        let Some(ns) = ns else {
            app.svc.rejected(Reject::Forbidden);
            return error(
                StatusCode::FORBIDDEN,
                "no SPIFFE identity in x-forwarded-client-cert (--trust-xfcc)",
                "x-forwarded-client-cert",
            );
        };
        if !sidecar.ends_with(&format!(".{ns}")) {
            app.svc.rejected(Reject::Forbidden);
            return error(
                StatusCode::FORBIDDEN,
                format!("sidecar {sidecar:?} is not in the caller's mTLS namespace {ns:?}"),
                "sidecar",
            );
        }
    }
    if !cred.may_report_as(sidecar) {
        app.svc.rejected(Reject::Forbidden);
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "credential {:?} may not report as sidecar {sidecar:?}",
                cred.name
            ),
            "sidecar",
        );
    }
    match app.svc.ingest(&report) {
        Ok(n) => ok_json(StatusCode::ACCEPTED, &json!({"accepted": n})),
        Err(IngestError::OutOfOrder { last }) => {
            app.svc.rejected(Reject::OutOfOrder);
            if REJECT_LOG.allow() {
                log::warn(
                    "report out of order",
                    json!({"sidecar": sidecar, "seq": report.seq, "last_seq": last}),
                );
            }
            error(
                StatusCode::CONFLICT,
                format!(
                    "seq {} is not above the last accepted seq {last} of sidecar {sidecar:?}",
                    report.seq
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

/// A refused service operation as its JSON error (storage failures are logged).
pub(crate) fn op_error(e: OpError) -> Response {
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

/// Run SQLite-touching service work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal worker failed",
            "",
        )
    })
}

async fn show(State(app): State<App>, Path(name): Path<String>) -> Response {
    let svc = app.svc.clone();
    match blocking(move || svc.show(&name)).await {
        Ok(Ok(v)) => ok_json(StatusCode::OK, &v),
        Ok(Err(e)) => op_error(e),
        Err(r) => r,
    }
}

async fn declare(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let cred = match authorize(&app, &headers, Role::Operator) {
        Ok(c) => c,
        Err(r) => return r,
    };
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
    // Attributed to the credential, never to a name the caller types.
    let actor = cred.name.clone();
    let name = spec.name.clone();
    let svc = app.svc.clone();
    let done = blocking(move || {
        let r = svc.upsert(spec, &actor, log::now_ms());
        let view = svc.show(&name).unwrap_or(Value::Null);
        (r, view)
    })
    .await;
    let (result, view) = match done {
        Ok(x) => x,
        Err(r) => return r,
    };
    match result {
        Ok(outcome) => {
            let status = if outcome == Upsert::Created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            ok_json(
                status,
                &json!({"outcome": format!("{outcome:?}").to_lowercase(), "canary": view}),
            )
        }
        Err(e) => op_error(e),
    }
}

/// An operator action's request: the operator credential, a JSON body of
/// shape `T`, and `by` (when given) equal to the credential's name.
/// Returns the actor and the body.
async fn operator_request<T: serde::de::DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    shape: &str,
    by: impl Fn(&T) -> Option<&str>,
) -> Result<(String, T), Response> {
    let cred = authorize(app, headers, Role::Operator)?;
    require_json(app, headers)?;
    let bytes = read_body(app, headers, body, MAX_WRITE_BYTES).await?;
    let act: T = serde_json::from_slice(&bytes).map_err(|e| {
        app.svc.rejected(Reject::Invalid);
        error(
            StatusCode::BAD_REQUEST,
            format!("body must be {shape}: {e}"),
            "body",
        )
    })?;
    if let Some(other) = by(&act).filter(|b| *b != cred.name) {
        app.svc.rejected(Reject::Forbidden);
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "actions are attributed to the credential's name {:?}; acting as {other:?} is not allowed",
                cred.name
            ),
            "by",
        ));
    }
    Ok((cred.name.clone(), act))
}

async fn decide_policy(
    State(app): State<App>,
    Path((service, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let approve = match action.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action {action:?} (approve or reject)"),
                "action",
            )
        }
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Decide {
        #[serde(default)]
        by: Option<String>,
        #[serde(default)]
        comment: String,
        /// The digest of the draft reviewed (`GET /v1/policies`).
        digest: String,
        #[serde(default)]
        mesh: Option<String>,
    }
    let (actor, act) = match operator_request::<Decide>(
        &app,
        &headers,
        body,
        "{\"digest\": \"...\", \"comment\": \"...\"}",
        |a| a.by.as_deref(),
    )
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mesh = act.mesh.unwrap_or_else(|| "default".to_string());
    if !crate::spec::is_dns_label(&mesh) {
        return error(StatusCode::BAD_REQUEST, "must be a DNS label", "mesh");
    }
    let svc = app.svc.clone();
    let done = blocking(move || {
        crate::policy_flow::decide(
            &svc,
            &service,
            approve,
            &actor,
            &act.comment,
            &act.digest,
            &mesh,
            log::now_ms(),
        )
    })
    .await;
    match done {
        Ok(Ok(v)) => ok_json(StatusCode::OK, &v),
        Ok(Err(e)) => op_error(e),
        Err(r) => r,
    }
}

async fn operate(
    State(app): State<App>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(op) = Op::parse(&action) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown action {action:?}"),
            "action",
        );
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Action {
        /// Optional; when given it must be the credential's own name.
        #[serde(default)]
        by: Option<String>,
        #[serde(default)]
        comment: String,
    }
    let (actor, act) =
        match operator_request::<Action>(&app, &headers, body, "{\"comment\": \"...\"}", |a| {
            a.by.as_deref()
        })
        .await
        {
            Ok(x) => x,
            Err(r) => return r,
        };
    let svc = app.svc.clone();
    let done = blocking(move || svc.operate(&name, op, &actor, &act.comment, log::now_ms())).await;
    let result = match done {
        Ok(r) => r,
        Err(r) => return r,
    };
    match result {
        Ok(d) => ok_json(
            StatusCode::OK,
            &json!({"kind": d.kind.as_str(), "phase": d.to.as_str(), "canary_weight": d.weight_after, "explanation": d.explanation}),
        ),
        Err(e) => op_error(e),
    }
}

/// `GET /v1/pii/findings?route=R&since_ms=A&until_ms=B`: the PII guard's
/// counts per route and minute (default: every route, the last hour), and
/// the alert's state. Counts only — no value ever reaches the service.
async fn pii_findings(
    State(app): State<App>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    for key in q.keys() {
        if !["route", "since_ms", "until_ms"].contains(&key.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown parameter {key:?} (route, since_ms, until_ms)"),
                key,
            );
        }
    }
    let number = |key: &str| -> Result<Option<u64>, Response> {
        q.get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("{key} must be milliseconds since the epoch, got {v:?}"),
                        key,
                    )
                })
            })
            .transpose()
    };
    let now = log::now_ms();
    let until = match number("until_ms") {
        Ok(v) => v.unwrap_or(now),
        Err(r) => return r,
    };
    let since = match number("since_ms") {
        Ok(v) => v.unwrap_or(until.saturating_sub(crate::pii::DEFAULT_RANGE_MS)),
        Err(r) => return r,
    };
    if since > until {
        return error(
            StatusCode::BAD_REQUEST,
            format!("since_ms {since} is after until_ms {until}"),
            "since_ms",
        );
    }
    let route = q.get("route").cloned();
    let svc = app.svc.clone();
    match blocking(move || svc.pii_findings(route.as_deref(), since, until)).await {
        Ok(Ok(v)) => ok_json(StatusCode::OK, &v),
        Ok(Err(e)) => op_error(OpError::Storage(e.to_string())),
        Err(r) => r,
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint", "path")
}

/// Every route served, `(method, path)` in axum's (and OpenAPI's) path
/// syntax; control/openapi.yaml documents exactly these (checked by
/// control/tests/openapi.rs). Keep in step with [`router`].
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/routing"),
    ("POST", "/v1/reports"),
    ("GET", "/v1/canaries"),
    ("POST", "/v1/canaries"),
    ("GET", "/v1/canaries/{name}"),
    ("POST", "/v1/canaries/{name}/{action}"),
    ("POST", "/v1/flagger/{hook}"),
    ("GET", "/v1/argo/{name}"),
    ("GET", "/"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/"),
    ("GET", "/dashboard/app.js"),
    ("GET", "/dashboard/style.css"),
    ("GET", "/v1/dashboard/series/{name}"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/graph"),
    ("GET", "/v1/policies"),
    ("POST", "/v1/policies/{service}/{action}"),
    ("GET", "/v1/advice"),
    ("GET", "/v1/pii/findings"),
];

/// The router (and its ingest threads, which stop when it is dropped).
pub fn router(svc: Arc<Service>, creds: Arc<CredentialStore>) -> std::io::Result<Router> {
    let app = App {
        svc: svc.clone(),
        creds,
        ingest: Arc::new(IngestPool::per_core()?),
    };
    Ok(Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/routing", get(routing))
        .route("/v1/reports", post(post_report))
        .route("/v1/canaries", get(list).post(declare))
        .route("/v1/canaries/{name}", get(show))
        .route("/v1/canaries/{name}/{action}", post(operate))
        .route("/v1/policies/{service}/{action}", post(decide_policy))
        .route("/v1/pii/findings", get(pii_findings))
        .fallback(not_found)
        .with_state(app)
        .merge(crate::hooks::router(svc.clone()))
        .merge(crate::traffic_http::router(svc.clone()))
        .merge(crate::dashboard::router(svc))
        .layer(axum::middleware::from_fn(crate::edge::json_errors)))
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

/// Re-read the credentials file every second and on `SIGHUP` (rotation
/// without restart); a bad file is logged and the previous set kept.
pub fn spawn_credential_reloader(creds: Arc<CredentialStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut last_error: Option<String> = None;
        loop {
            #[cfg(unix)]
            {
                let sleep = tokio::time::sleep(Duration::from_secs(1));
                match hup.as_mut() {
                    Some(h) => {
                        tokio::select! {
                            _ = sleep => {},
                            _ = h.recv() => {},
                        }
                    }
                    None => sleep.await,
                }
            }
            #[cfg(not(unix))]
            tokio::time::sleep(Duration::from_secs(1)).await;
            let c = creds.clone();
            let result = tokio::task::spawn_blocking(move || c.reload())
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match result {
                Ok(true) => {
                    let (r, o) = creds.current().counts();
                    last_error = None;
                    log::info(
                        "credentials reloaded",
                        json!({"reporters": r, "operators": o}),
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    if last_error.as_deref() != Some(e.as_str()) {
                        log::error(
                            "credentials file refused; the previous credentials stay in force",
                            json!({"error": e}),
                        );
                    }
                    last_error = Some(e);
                }
            }
        }
    })
}

/// Serve the API on `listener` until `shutdown` resolves, with the
/// connection limits and timeouts of [`crate::edge`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: Arc<Service>,
    creds: Arc<CredentialStore>,
    limits: crate::edge::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::edge::serve(listener, router(svc, creds)?, limits, shutdown).await
}
