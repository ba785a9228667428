//! HTTP doors onto observed traffic (read-only, like `/v1/canaries`):
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/graph[?format=json\|dot\|svg]` | the dependency map ([`crate::graph`]) as JSON, Graphviz DOT, or SVG ([`crate::graph_svg`]) |
//! | `GET /v1/policies[?format=json\|yaml][&kind=istio\|kuma][&mesh=NAME]` | least-privilege drafts per destination ([`crate::policy`]), JSON with each draft's digest and diff against the policies in force ([`crate::policy_diff`]) |
//! | `POST /v1/policies/{service}/{approve\|reject}` | operator: approve a reviewed draft into GitOps YAML, audited ([`crate::policy_flow`]; served by [`crate::http`]) |
//! | `GET /v1/advice[?format=json\|yaml][&namespace=NS][&mesh=NAME]` | resilience advice per route ([`crate::advice`]), with warnings against the VirtualServices / DestinationRules / Kong Mesh policies in the GitOps directory ([`crate::advice_in_force`]; JSON lists them as `in_force`, bad files as `in_force_skipped`) |
//!
//! A bad query parameter is a JSON 400 naming it.

use crate::log;
use crate::policy;
use crate::service::Service;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

type Params = Query<HashMap<String, String>>;

fn bad(field: &str, message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": message, "field": field}).to_string(),
    )
        .into_response()
}

fn check_known(q: &HashMap<String, String>, known: &[&str]) -> Option<Response> {
    q.keys().find(|k| !known.contains(&k.as_str())).map(|k| {
        bad(
            k,
            format!("unknown query parameter (known: {})", known.join(", ")),
        )
    })
}

/// The query parameter `key` (else `default`) if it is a DNS label.
fn dns_label(q: &HashMap<String, String>, key: &str, default: &str) -> Option<String> {
    let v = q.get(key).map_or(default, String::as_str);
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| v.to_string())
}

async fn graph(State(svc): State<Arc<Service>>, Query(q): Params) -> Response {
    if let Some(r) = check_known(&q, &["format"]) {
        return r;
    }
    let now = log::now_ms();
    match q.get("format").map(String::as_str) {
        None | Some("json") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            svc.graph_view(now).to_string(),
        )
            .into_response(),
        Some("dot") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
            svc.graph_dot(now),
        )
            .into_response(),
        Some("svg") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "image/svg+xml")],
            crate::graph_svg::svg(&svc.graph_edges(now)),
        )
            .into_response(),
        Some(other) => bad("format", format!("must be json, dot or svg, got {other:?}")),
    }
}

async fn policies(State(svc): State<Arc<Service>>, Query(q): Params) -> Response {
    if let Some(r) = check_known(&q, &["format", "kind", "mesh"]) {
        return r;
    }
    let (istio, kuma) = match q.get("kind").map(String::as_str) {
        None => (true, true),
        Some("istio") => (true, false),
        Some("kuma") => (false, true),
        Some(other) => return bad("kind", format!("must be istio or kuma, got {other:?}")),
    };
    let mesh = q.get("mesh").map_or("default", String::as_str);
    if mesh.is_empty()
        || mesh.len() > 63
        || !mesh
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("mesh", "must be a DNS label".to_string());
    }
    let now = log::now_ms();
    match q.get("format").map(String::as_str) {
        None | Some("json") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            crate::policy_flow::recommend(&svc, now, mesh).to_string(),
        )
            .into_response(),
        Some("yaml") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/yaml")],
            policy::to_yaml(
                &crate::policy_flow::drafts_of(&svc.graph_edges(now), mesh),
                istio,
                kuma,
            ),
        )
            .into_response(),
        Some(other) => bad("format", format!("must be json or yaml, got {other:?}")),
    }
}

async fn advice(State(svc): State<Arc<Service>>, Query(q): Params) -> Response {
    if let Some(r) = check_known(&q, &["format", "namespace", "mesh"]) {
        return r;
    }
    let (Some(namespace), Some(mesh)) = (
        dns_label(&q, "namespace", "default"),
        dns_label(&q, "mesh", "default"),
    ) else {
        let field = if dns_label(&q, "namespace", "default").is_none() {
            "namespace"
        } else {
            "mesh"
        };
        return bad(field, "must be a DNS label".to_string());
    };
    let mut routes = crate::advice::advise(&svc.graph_edges(log::now_ms()));
    let read = crate::policy_diff::read_dir_kinds(svc.gitops_dir(), crate::advice_in_force::KINDS);
    crate::advice_in_force::check(&mut routes, &read.objects);
    match q.get("format").map(String::as_str) {
        None | Some("json") => {
            let mut v = crate::advice::to_json(&routes);
            if let Some(o) = v.as_object_mut() {
                let files: Vec<String> = read
                    .objects
                    .iter()
                    .map(crate::advice_in_force::name_of)
                    .collect();
                o.insert("in_force".into(), json!(files));
                o.insert("in_force_skipped".into(), json!(read.skipped));
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                v.to_string(),
            )
                .into_response()
        }
        Some("yaml") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/yaml")],
            crate::advice::to_yaml(&crate::advice::render(&routes, &namespace, &mesh)),
        )
            .into_response(),
        Some(other) => bad("format", format!("must be json or yaml, got {other:?}")),
    }
}

/// The routes.
pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/graph", get(graph))
        .route("/v1/policies", get(policies))
        .route("/v1/advice", get(advice))
        .with_state(svc)
}
