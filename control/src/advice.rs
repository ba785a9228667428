//! Resilience advice from observed distributions (the dependency map's
//! edges), per destination route × version, each number explained. Pure.
//!
//! - **Timeout**: the total-latency p99.9 × [`MARGIN`], rounded up to 100 ms.
//!   A route where most responses are streams (two or more body chunks) gets
//!   two numbers: a first-byte timeout from the time-to-first-byte p99.9 ×
//!   margin, and a total from the total p99.9 × margin. With fewer than 1000
//!   requests the p99.9 is the slowest observation (said so).
//! - **Retries**: only for idempotent methods (GET, HEAD, OPTIONS, PUT,
//!   DELETE): 2 attempts, each try the p99.9-based timeout (a shorter try
//!   would cut requests that succeed), the route 3 × that, `retryOn`
//!   connection failures plus `5xx` when 5xx were observed. POST / PATCH
//!   (e.g. a generation call) get **no retries** — a retry can run (and bill)
//!   the call twice — and a warning.
//! - **Outlier detection**: where one destination instance (one reporting
//!   inbound sidecar) holds ≥ 80 % of the route's 5xx and its error ratio is
//!   ≥ 5× the others', eject after 5 consecutive 5xx, every 10 s, for 30 s,
//!   at most one instance of the pool (`maxEjectionPercent` = ⌈100 / n⌉).
//! - **Connection-pool limits**: the route's mean concurrency by Little's
//!   law — observed rate × mean latency (an estimate from the edges' rate and
//!   latency histogram; no in-flight gauge is reported) — summed over the
//!   service's routes; limit = ⌈[`POOL_HEADROOM`] × that⌉, at least
//!   [`POOL_MIN`], as `http2MaxRequests` / `http1MaxPendingRequests`
//!   (Istio) and `maxRequests` / `maxPendingRequests` (Kuma).
//! - **Retry budget**: the share of active requests that may be retries —
//!   2 × the observed failure ratio (5xx + no response), clamped to
//!   [5 %, 20 %] — as `maxRetries` = ⌈budget × pool limit⌉ (at least 3). The
//!   *retry* ratio itself is not observed yet (no attempt count in the
//!   edges), so the budget follows what retries would be spent on.
//! - Rendered as Istio `VirtualService` / `DestinationRule` patches and Kong
//!   Mesh `MeshTimeout` / `MeshRetry` / `MeshCircuitBreaker` ([`render`]).
//!
//! - **Evidence**: each route carries the observed numbers behind it
//!   ([`Evidence`]: requests, 5xx, streamed responses, latency p99 / p99.9,
//!   time-to-first-byte p99.9, per-instance requests and 5xx), in the JSON.
//!
//! Warnings against the configuration in force (VirtualService timeouts and
//! retries, DestinationRule outlier detection, MeshTimeout / MeshRetry) are
//! added by [`crate::advice_in_force`]. Not covered: an observed retry ratio.

use crate::graph::EdgeView;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use vigil_scorer::histogram::LatencyHistogram;
use vigil_traffic::template::to_regex;

/// Safety margin over the observed quantile.
pub const MARGIN: f64 = 1.5;
/// Connection-pool limit over the estimated mean concurrency.
pub const POOL_HEADROOM: f64 = 4.0;
/// Smallest connection-pool limit proposed.
pub const POOL_MIN: u64 = 16;
/// Requests below which p99.9 is not resolved (the maximum is used).
pub const P999_MIN_REQUESTS: u64 = 1000;

/// One route's advice.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteAdvice {
    /// Destination service.
    pub service: String,
    /// Destination version.
    pub version: String,
    /// Method.
    pub method: String,
    /// Path template.
    pub path: String,
    /// Requests observed.
    pub requests: u64,
    /// Total timeout, ms.
    pub timeout_ms: u64,
    /// First-byte timeout, ms (streaming routes).
    pub first_byte_timeout_ms: Option<u64>,
    /// Retry attempts (0: none).
    pub retries: u32,
    /// Per-try timeout, ms.
    pub per_try_timeout_ms: Option<u64>,
    /// Retry conditions (Envoy names).
    pub retry_on: Vec<&'static str>,
    /// Outlier detection, when proposed: (consecutive 5xx, interval s, ejection s, max %).
    pub outlier: Option<(u32, u64, u64, u32)>,
    /// Mean concurrency estimate (rate × mean latency, Little's law).
    pub concurrency: f64,
    /// Observed failure ratio (5xx + no response) / requests.
    pub failure_ratio: f64,
    /// The observed numbers.
    pub evidence: Evidence,
    /// The numbers behind each proposal.
    pub explanation: Vec<String>,
    /// Risks to look at.
    pub warnings: Vec<String>,
}

/// What was observed on one route (all callers merged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    /// 5xx / no response.
    pub errors: u64,
    /// Responses in two or more body chunks.
    pub streamed: u64,
    /// Total-latency p99, ms (the slowest below 100 requests).
    pub latency_p99_ms: f64,
    /// Total-latency p99.9 as taken for the timeout, ms.
    pub latency_p999_ms: f64,
    /// How the p99.9 was taken (`p99.9 of n`, or the slowest of fewer).
    pub p999_how: String,
    /// Time-to-first-byte p99.9, ms (streaming routes).
    pub ttft_p999_ms: Option<f64>,
    /// Per destination instance (inbound reporter): (name, requests, 5xx).
    pub instances: Vec<(String, u64, u64)>,
}

/// Whether a method may be retried (RFC 9110 idempotent methods).
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

fn mean_ms(h: &LatencyHistogram) -> Option<f64> {
    let n = h.count();
    (n > 0).then(|| {
        h.to_sparse()
            .iter()
            .map(|&(b, c)| vigil_scorer::histogram::bucket_value_us(b) * f64::from(c))
            .sum::<f64>()
            / n as f64
            / 1000.0
    })
}

/// Per-service connection-pool proposal: (limit, max retries, explanation).
pub fn pool(routes: &[&RouteAdvice]) -> (u64, u64, String) {
    let conc: f64 = routes.iter().map(|a| a.concurrency).sum();
    let limit = ((conc * POOL_HEADROOM).ceil() as u64).max(POOL_MIN);
    let (req, fail) = routes.iter().fold((0u64, 0f64), |(n, f), a| {
        (n + a.requests, f + a.failure_ratio * a.requests as f64)
    });
    let ratio = if req == 0 { 0.0 } else { fail / req as f64 };
    let budget = (2.0 * ratio).clamp(0.05, 0.20);
    let retries = ((budget * limit as f64).ceil() as u64).max(3);
    let why = format!(
        "connection pool: estimated mean concurrency {conc:.2} (Little's law: observed rate × mean latency, summed over {} route(s); an estimate, no in-flight gauge) × {POOL_HEADROOM} headroom = limit {limit} (at least {POOL_MIN}); retry budget {:.0} % of active requests = 2 × observed failure ratio {:.2} % clamped to 5–20 % → maxRetries {retries} (the retry ratio itself is not observed)",
        routes.len(),
        100.0 * budget,
        100.0 * ratio
    );
    (limit, retries, why)
}

/// `ms` rounded up to a multiple of 100 (at least 100).
pub fn round_up_100(ms: f64) -> u64 {
    ((ms / 100.0).ceil() as u64).max(1) * 100
}

fn hist(sparse: &[(u16, u32)]) -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    h.merge_sparse(sparse);
    h
}

/// (quantile ms, how it was taken) for p99.9.
fn p999(h: &LatencyHistogram) -> Option<(f64, String)> {
    let n = h.count();
    if n == 0 {
        return None;
    }
    if n < P999_MIN_REQUESTS {
        let max = h.quantile_us(1.0)? / 1000.0;
        Some((
            max,
            format!("the slowest of {n} (fewer than {P999_MIN_REQUESTS}: p99.9 not resolved)"),
        ))
    } else {
        Some((h.quantile_us(0.999)? / 1000.0, format!("p99.9 of {n}")))
    }
}

/// Advice for every route in the edges (all callers of a route merged).
pub fn advise(edges: &[EdgeView]) -> Vec<RouteAdvice> {
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str);
    let mut routes: BTreeMap<Key<'_>, Vec<&EdgeView>> = BTreeMap::new();
    for e in edges {
        routes
            .entry((&e.service, &e.version, &e.method, &e.path))
            .or_default()
            .push(e);
    }
    let mut out = Vec::new();
    for ((service, version, method, path), es) in routes {
        let requests: u64 = es.iter().map(|e| e.requests).sum();
        let errors: u64 = es.iter().map(|e| e.errors).sum();
        let streamed: u64 = es.iter().map(|e| e.streamed).sum();
        let mut lat = LatencyHistogram::new();
        let mut ttft = LatencyHistogram::new();
        let mut instances: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for e in &es {
            lat.merge(&hist(&e.latency));
            ttft.merge(&hist(&e.ttft));
            for (r, n, err) in &e.by_reporter {
                let x = instances.entry(r).or_default();
                x.0 += n;
                x.1 += err;
            }
        }
        let Some((total_q, how)) = p999(&lat) else {
            continue;
        };
        let mut explanation = Vec::new();
        let mut warnings = Vec::new();
        let p99 = if lat.count() < 100 {
            lat.quantile_us(1.0)
        } else {
            lat.quantile_us(0.99)
        }
        .map_or(total_q, |us| us / 1000.0);
        let mut evidence = Evidence {
            errors,
            streamed,
            latency_p99_ms: p99,
            latency_p999_ms: total_q,
            p999_how: how.clone(),
            ttft_p999_ms: None,
            instances: instances
                .iter()
                .map(|(k, (n, e))| ((*k).to_string(), *n, *e))
                .collect(),
        };
        let timeout_ms = round_up_100(total_q * MARGIN);
        let streaming = requests > 0 && streamed * 2 >= requests;
        let mut first_byte_timeout_ms = None;
        if streaming {
            explanation.push(format!(
                "streaming route ({streamed} of {requests} responses in 2+ chunks): total timeout {timeout_ms} ms = {how} total duration {total_q:.1} ms × {MARGIN}, rounded up to 100 ms"
            ));
            if let Some((fb, fb_how)) = p999(&ttft) {
                let t = round_up_100(fb * MARGIN);
                explanation.push(format!(
                    "first-byte timeout {t} ms = {fb_how} time to first byte {fb:.1} ms × {MARGIN}, rounded up"
                ));
                first_byte_timeout_ms = Some(t);
                evidence.ttft_p999_ms = Some(fb);
            }
        } else {
            explanation.push(format!(
                "timeout {timeout_ms} ms = {how} latency {total_q:.1} ms × {MARGIN}, rounded up to 100 ms"
            ));
        }
        let rate: f64 = es.iter().map(|e| e.rate_rps).sum();
        let mean = mean_ms(&lat).unwrap_or(0.0);
        let concurrency = rate * mean / 1000.0;
        explanation.push(format!(
            "mean concurrency ≈ {concurrency:.2} = {rate:.2} req/s × mean latency {mean:.1} ms (Little's law, an estimate)"
        ));
        let failure_ratio = if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        };
        let mut timeout_ms = timeout_ms;
        let (retries, per_try_timeout_ms, retry_on) = if idempotent(method) {
            // A try shorter than the p99.9 would abort requests that succeed:
            // each try gets the p99.9-based timeout, the route all its tries.
            let per_try = timeout_ms;
            timeout_ms = per_try * 3;
            let mut on = vec!["connect-failure", "refused-stream"];
            if errors > 0 {
                on.push("5xx");
            }
            explanation.push(format!(
                "{method} is idempotent: 2 retries, per-try timeout {per_try} ms (the timeout above, so no try is cut below the p99.9), route timeout {timeout_ms} ms = 3 tries × {per_try} ms; retry on {} ({errors} 5xx of {requests} observed)",
                on.join(",")
            ));
            if errors * 10 > requests {
                warnings.push(format!(
                    "{:.0} % of requests fail: retries multiply load on a failing service; keep Envoy's retry budget (20 % of active requests)",
                    100.0 * errors as f64 / requests as f64
                ));
            }
            (2, Some(per_try), on)
        } else {
            explanation.push(format!(
                "no retries: {method} is not idempotent (a generation call retried runs — and bills — twice)"
            ));
            warnings.push(format!(
                "retries configured today on {method} {path} would duplicate non-idempotent calls: set attempts 0"
            ));
            (0, None, Vec::new())
        };
        let mut outlier = None;
        if instances.len() >= 2 && errors >= 10 {
            if let Some((worst, (wn, we))) = instances.iter().max_by_key(|(_, (_, e))| *e) {
                let (rest_n, rest_e) = instances
                    .iter()
                    .filter(|(k, _)| *k != worst)
                    .fold((0u64, 0u64), |a, (_, (n, e))| (a.0 + n, a.1 + e));
                let share = *we as f64 / errors.max(1) as f64;
                let ratio_w = *we as f64 / (*wn).max(1) as f64;
                let ratio_r = rest_e as f64 / rest_n.max(1) as f64;
                if share >= 0.8 && ratio_w >= 5.0 * ratio_r.max(1e-9) {
                    let n = instances.len() as u32;
                    let max_pct = 100u32.div_ceil(n);
                    outlier = Some((5, 10, 30, max_pct));
                    explanation.push(format!(
                        "outlier detection: {worst} has {we} of {errors} 5xx ({:.0} %), error ratio {:.1} % vs {:.1} % on the other {} instance(s): eject after 5 consecutive 5xx, interval 10 s, for 30 s, at most {max_pct} % of the {n}-instance pool (one instance)",
                        100.0 * share, 100.0 * ratio_w, 100.0 * ratio_r, n - 1
                    ));
                }
            }
        }
        out.push(RouteAdvice {
            service: service.to_string(),
            version: version.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            requests,
            timeout_ms,
            first_byte_timeout_ms,
            retries,
            per_try_timeout_ms,
            retry_on,
            outlier,
            concurrency,
            failure_ratio,
            evidence,
            explanation,
            warnings,
        });
    }
    out
}

fn secs(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}ms", ms)
    }
}

fn kuma_retry_on(on: &str) -> &'static str {
    match on {
        "5xx" => "5XX",
        "connect-failure" => "ConnectFailure",
        _ => "RefusedStream",
    }
}

/// The advice as JSON (`GET /v1/advice`).
pub fn to_json(advice: &[RouteAdvice]) -> Value {
    let mut by: BTreeMap<&str, Vec<&RouteAdvice>> = BTreeMap::new();
    for a in advice {
        by.entry(&a.service).or_default().push(a);
    }
    let services: serde_json::Map<String, Value> = by
        .into_iter()
        .map(|(s, rs)| {
            let (limit, retries, why) = pool(&rs);
            (
                s.to_string(),
                json!({"pool_limit": limit, "max_retries": retries, "explanation": why}),
            )
        })
        .collect();
    json!({"margin": MARGIN, "routes": advice.iter().map(|a| json!({
        "service": a.service, "version": a.version, "method": a.method, "path": a.path,
        "requests": a.requests, "timeout_ms": a.timeout_ms,
        "first_byte_timeout_ms": a.first_byte_timeout_ms, "retries": a.retries,
        "per_try_timeout_ms": a.per_try_timeout_ms, "retry_on": a.retry_on,
        "outlier_detection": a.outlier.map(|(c, i, e, m)| json!({
            "consecutive_5xx": c, "interval_s": i, "base_ejection_s": e, "max_ejection_percent": m})),
        "concurrency_estimate": a.concurrency, "failure_ratio": a.failure_ratio,
        "evidence": {"requests": a.requests, "errors_5xx": a.evidence.errors,
            "streamed": a.evidence.streamed, "latency_p99_ms": a.evidence.latency_p99_ms,
            "latency_p999_ms": a.evidence.latency_p999_ms, "p999_taken_as": a.evidence.p999_how,
            "ttft_p999_ms": a.evidence.ttft_p999_ms,
            "instances": a.evidence.instances.iter().map(|(k, n, e)| json!({
                "instance": k, "requests": n, "errors_5xx": e})).collect::<Vec<_>>()},
        "explanation": a.explanation, "warnings": a.warnings,
    })).collect::<Vec<_>>(), "services": services})
}

/// Istio `VirtualService` + `DestinationRule` and Kong Mesh `MeshTimeout`,
/// `MeshRetry`, `MeshCircuitBreaker` documents, per service, in `namespace`.
pub fn render(advice: &[RouteAdvice], namespace: &str, mesh: &str) -> Vec<Value> {
    let mut by_service: BTreeMap<&str, Vec<&RouteAdvice>> = BTreeMap::new();
    for a in advice {
        by_service.entry(&a.service).or_default().push(a);
    }
    let mut docs = Vec::new();
    for (service, routes) in by_service {
        let name = format!("vigil-resilience-{service}");
        let why: Vec<String> = routes
            .iter()
            .flat_map(|a| {
                a.explanation
                    .iter()
                    .map(move |e| format!("{} {}: {e}", a.method, a.path))
            })
            .collect();
        let annotations = json!({"vigil.dev/draft": "resilience advice from observed traffic; review before applying",
                                 "vigil.dev/explanation": why.join("\n")});
        let http: Vec<Value> = routes
            .iter()
            .map(|a| {
                let retries = if a.retries == 0 {
                    json!({"attempts": 0})
                } else {
                    json!({"attempts": a.retries,
                           "perTryTimeout": secs(a.per_try_timeout_ms.unwrap_or(a.timeout_ms)),
                           "retryOn": a.retry_on.join(",")})
                };
                let dest = if a.version.is_empty() {
                    json!({"host": service})
                } else {
                    json!({"host": service, "subset": a.version})
                };
                json!({"name": format!("{}-{}", a.method.to_lowercase(), a.path.len()),
                       "match": [{"method": {"exact": a.method}, "uri": {"regex": to_regex(&a.path)}}],
                       "timeout": secs(a.timeout_ms), "retries": retries,
                       "route": [{"destination": dest}]})
            })
            .collect();
        docs.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"hosts": [service], "http": http}}),
        );
        let outlier = routes.iter().find_map(|a| a.outlier);
        let (limit, max_retries, pool_why) = pool(&routes);
        let mut annotations = annotations;
        if let Some(o) = annotations.as_object_mut() {
            o.insert(
                "vigil.dev/explanation".into(),
                json!(format!("{}\n{pool_why}", why.join("\n"))),
            );
        }
        let mut traffic_policy = json!({"connectionPool": {"http": {
            "http2MaxRequests": limit, "http1MaxPendingRequests": limit, "maxRetries": max_retries}}});
        if let Some((c, i, e, m)) = outlier {
            if let Some(o) = traffic_policy.as_object_mut() {
                o.insert(
                    "outlierDetection".into(),
                    json!({
                "consecutive5xxErrors": c, "interval": secs(i * 1000),
                "baseEjectionTime": secs(e * 1000), "maxEjectionPercent": m}),
                );
            }
        }
        docs.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"host": service, "trafficPolicy": traffic_policy}}),
        );
        let target = json!({"kind": "MeshService", "labels": {
            "kuma.io/display-name": service, "k8s.kuma.io/namespace": namespace}});
        let meta = json!({"name": name, "namespace": namespace,
                          "labels": {"kuma.io/mesh": mesh}, "annotations": annotations});
        // Kuma policies are per service, not per route: the largest numbers cover every route.
        let timeout = routes.iter().map(|a| a.timeout_ms).max().unwrap_or(1000);
        let http_timeout = match routes.iter().filter_map(|a| a.first_byte_timeout_ms).max() {
            Some(fb) => json!({"requestTimeout": secs(timeout), "streamIdleTimeout": secs(fb)}),
            None => json!({"requestTimeout": secs(timeout)}),
        };
        docs.push(json!({"apiVersion": "kuma.io/v1alpha1", "kind": "MeshTimeout", "metadata": meta,
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": target, "default": {"http": http_timeout}}]}}));
        // Retries only if every route of the service is idempotent.
        let all_idempotent = routes.iter().all(|a| a.retries > 0);
        let retry_http = if all_idempotent {
            let mut on: Vec<&str> = routes
                .iter()
                .flat_map(|a| a.retry_on.iter().map(|o| kuma_retry_on(o)))
                .collect();
            on.sort_unstable();
            on.dedup();
            let per_try = routes
                .iter()
                .filter_map(|a| a.per_try_timeout_ms)
                .max()
                .unwrap_or(timeout);
            json!({"numRetries": 2, "perTryTimeout": secs(per_try), "retryOn": on})
        } else {
            json!({"numRetries": 0})
        };
        docs.push(json!({"apiVersion": "kuma.io/v1alpha1", "kind": "MeshRetry", "metadata": meta,
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": target, "default": {"http": retry_http}}]}}));
        let mut cb =
            json!({"connectionLimits": {"maxRequests": limit, "maxPendingRequests": limit}});
        if let Some((c, i, e, m)) = outlier {
            if let Some(o) = cb.as_object_mut() {
                o.insert(
                    "outlierDetection".into(),
                    json!({"interval": secs(i * 1000), "baseEjectionTime": secs(e * 1000),
                "maxEjectionPercent": m, "detectors": {"totalFailures": {"consecutive": c}}}),
                );
            }
        }
        docs.push(
            json!({"apiVersion": "kuma.io/v1alpha1", "kind": "MeshCircuitBreaker", "metadata": meta,
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": target, "default": cb}]}}),
        );
    }
    docs
}

/// Multi-document YAML of [`render`].
pub fn to_yaml(docs: &[Value]) -> String {
    let mut out =
        String::from("# Vigil resilience advice from observed traffic: review before applying.\n");
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(d).unwrap_or_default());
    }
    out
}
