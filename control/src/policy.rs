//! Least-privilege policy drafts from the dependency map: per destination
//! service, an Istio `AuthorizationPolicy` that ALLOWs exactly the observed
//! principals × methods × path templates (with the namespace deny-all it
//! assumes) and a Kong Mesh / Kuma `MeshTrafficPermission` allowing the
//! observed SPIFFE ids. Pure: edges in, documents out. Drafts are for
//! review (YAML), never applied by Vigil.
//!
//! - One Istio rule per principal; its `to` lists one operation per
//!   (method, template) observed — no cross product of methods and paths.
//!   Templates become Istio path templates (`{id}` → `{*}`, one segment;
//!   `{rest}` → `{**}`; Istio ≥ 1.22).
//! - Every rule carries its evidence — requests, first/last seen, the
//!   templates' counts — and a confidence (`high` ≥ 100 requests seen over
//!   ≥ 10 minutes, `medium` ≥ 10 requests, else `low`; a heuristic, labelled
//!   so), in the JSON answer and in the policy's `vigil.dev/evidence`
//!   annotation (the CRDs accept no extra fields in rules).
//! - Callers without an identity (`unknown`) or folded past a cap
//!   (`{overflow}`, `/{overflow}`) cannot be allowed by name: they are listed
//!   under `uncovered`, so the reviewer sees what the draft would deny.
//! - MeshTrafficPermission is identity-only (L4): methods and paths are kept
//!   in its evidence annotation, not enforced.

use crate::graph::EdgeView;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use vigil_traffic::aggregate::{OVERFLOW_NAME, OVERFLOW_PATH, UNKNOWN};
use vigil_traffic::template::to_istio_path;

/// (method, template) → (requests, first seen, last seen).
type Operations<'a> = BTreeMap<(&'a str, &'a str), (u64, u64, u64)>;

/// One destination's drafts.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Destination service (`app` label).
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// The namespace deny-all (`AuthorizationPolicy` with an empty spec).
    pub deny_all: Value,
    /// The ALLOW policy.
    pub allow: Value,
    /// The Kuma policy.
    pub mesh_traffic_permission: Value,
    /// Per rule: principal, operations, counts, first/last seen, confidence.
    pub evidence: Vec<Value>,
    /// Observed traffic the draft cannot allow by name.
    pub uncovered: Vec<Value>,
}

/// The namespace of a SPIFFE id `spiffe://td/ns/NS/sa/SA`.
pub fn spiffe_namespace(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/');
    let _td = parts.next()?;
    (parts.next()? == "ns").then_some(())?;
    parts.next().filter(|s| !s.is_empty())
}

fn confidence(requests: u64, span_ms: u64) -> &'static str {
    if requests >= 100 && span_ms >= 600_000 {
        "high"
    } else if requests >= 10 {
        "medium"
    } else {
        "low"
    }
}

/// A DNS-name fragment of `s` (lowercase alphanumerics and `-`, ≤ 50 bytes).
pub fn dns_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// Drafts for every destination service in `edges`. `namespace_of(service)`
/// names a service's namespace (else the callers' namespace, else `default`);
/// `mesh` is the Kuma mesh.
pub fn drafts(
    edges: &[EdgeView],
    namespace_of: &dyn Fn(&str) -> Option<String>,
    mesh: &str,
) -> Vec<Draft> {
    let mut by_service: BTreeMap<&str, Vec<&EdgeView>> = BTreeMap::new();
    for e in edges {
        by_service.entry(&e.service).or_default().push(e);
    }
    let mut out = Vec::new();
    for (service, edges) in by_service {
        if service == OVERFLOW_NAME {
            continue;
        }
        let namespace = namespace_of(service)
            .or_else(|| {
                edges
                    .iter()
                    .find_map(|e| spiffe_namespace(&e.source).map(str::to_string))
            })
            .unwrap_or_else(|| "default".to_string());
        // principal → (method, template) → (requests, first, last)
        let mut rules: BTreeMap<&str, Operations<'_>> = BTreeMap::new();
        let mut uncovered = Vec::new();
        for e in &edges {
            let named = e.source.starts_with("spiffe://");
            if !named || e.source == OVERFLOW_NAME || e.source == UNKNOWN || e.path == OVERFLOW_PATH
            {
                uncovered.push(json!({"source": e.source, "method": e.method, "path": e.path,
                    "requests": e.requests,
                    "why": if e.path == OVERFLOW_PATH { "path folded past the template cap" }
                           else { "caller has no SPIFFE identity (or was folded past the caller cap)" }}));
                continue;
            }
            let ops = rules.entry(&e.source).or_default();
            let slot = ops.entry((&e.method, &e.path)).or_insert((0, u64::MAX, 0));
            slot.0 += e.requests;
            slot.1 = slot.1.min(e.first_seen_ms);
            slot.2 = slot.2.max(e.last_seen_ms);
        }
        if rules.is_empty() {
            continue;
        }
        let mut istio_rules = Vec::new();
        let mut evidence = Vec::new();
        let mut allow_ids = Vec::new();
        for (principal, ops) in &rules {
            let requests: u64 = ops.values().map(|x| x.0).sum();
            let first = ops.values().map(|x| x.1).min().unwrap_or(0);
            let last = ops.values().map(|x| x.2).max().unwrap_or(0);
            let operations: Vec<Value> = ops
                .keys()
                .map(|(m, p)| json!({"operation": {"methods": [m], "paths": [to_istio_path(p)]}}))
                .collect();
            istio_rules.push(json!({
                "from": [{"source": {"principals": [principal.trim_start_matches("spiffe://")]}}],
                "to": operations,
            }));
            evidence.push(json!({
                "rule": istio_rules.len() - 1,
                "principal": principal,
                "requests": requests,
                "first_seen_ms": first,
                "last_seen_ms": last,
                "confidence": confidence(requests, last.saturating_sub(first)),
                "confidence_rule": "heuristic: high >= 100 requests over >= 10 min, medium >= 10 requests",
                "operations": ops.iter().map(|((m, p), (n, f, l))| json!({
                    "method": m, "path": p, "requests": n, "first_seen_ms": f, "last_seen_ms": l,
                })).collect::<Vec<_>>(),
            }));
            allow_ids.push(json!({"spiffeID": {"type": "Exact", "value": principal}}));
        }
        let name = format!("vigil-allow-{}", dns_name(service));
        let evidence_text = Value::Array(evidence.clone()).to_string();
        let annotations = json!({
            "vigil.dev/draft": "least-privilege draft from observed traffic; review before applying",
            "vigil.dev/evidence": evidence_text,
        });
        let allow = json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {
                "selector": {"matchLabels": {"app": service}},
                "action": "ALLOW",
                "rules": istio_rules,
            },
        });
        let deny_all = json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny-all", "namespace": namespace,
                "annotations": {"vigil.dev/draft": "the namespace deny-all the ALLOW drafts assume (an empty spec allows nothing)"}},
            "spec": {},
        });
        let kuma = json!({
            "apiVersion": "kuma.io/v1alpha1",
            "kind": "MeshTrafficPermission",
            "metadata": {"name": name, "namespace": namespace,
                "labels": {"kuma.io/mesh": mesh}, "annotations": annotations},
            "spec": {
                "targetRef": {"kind": "Dataplane", "labels": {"app": service}},
                "rules": [{"default": {"allow": allow_ids}}],
            },
        });
        out.push(Draft {
            service: service.to_string(),
            namespace,
            deny_all,
            allow,
            mesh_traffic_permission: kuma,
            evidence,
            uncovered,
        });
    }
    out
}

/// The JSON answer of `GET /v1/policies`.
pub fn to_json(drafts: &[Draft]) -> Value {
    json!({"drafts": drafts.iter().map(|d| json!({
        "service": d.service, "namespace": d.namespace,
        "authorization_policy": d.allow, "deny_all": d.deny_all,
        "mesh_traffic_permission": d.mesh_traffic_permission,
        "evidence": d.evidence, "uncovered": d.uncovered,
    })).collect::<Vec<_>>()})
}

/// Multi-document YAML: every namespace's deny-all once, then each draft's
/// AuthorizationPolicy and MeshTrafficPermission (`kind` selects: `istio`,
/// `kuma`, or both).
pub fn to_yaml(drafts: &[Draft], istio: bool, kuma: bool) -> String {
    let mut docs: Vec<&Value> = Vec::new();
    let mut namespaces = std::collections::BTreeSet::new();
    if istio {
        for d in drafts {
            if namespaces.insert(d.namespace.as_str()) {
                docs.push(&d.deny_all);
            }
        }
    }
    for d in drafts {
        if istio {
            docs.push(&d.allow);
        }
        if kuma {
            docs.push(&d.mesh_traffic_permission);
        }
    }
    let mut out = String::from(
        "# Vigil least-privilege drafts from observed traffic: review before applying.\n",
    );
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(d).unwrap_or_default());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn e(source: &str, method: &str, path: &str, n: u64) -> EdgeView {
        EdgeView {
            source: source.into(),
            source_service: None,
            service: "orders".into(),
            version: "v1".into(),
            method: method.into(),
            path: path.into(),
            requests: n,
            errors: 0,
            status_4xx: 0,
            denied: 0,
            latency: vec![],
            rate_rps: 1.0,
            first_seen_ms: 1000,
            last_seen_ms: 2000,
            observed_by: "inbound",
            reporters: vec![],
            ttft: vec![],
            streamed: 0,
            by_reporter: vec![],
        }
    }

    #[test]
    fn rules_per_principal_with_evidence_and_uncovered() {
        let web = "spiffe://cluster.local/ns/shop/sa/web";
        let edges = vec![
            e(web, "GET", "/v1/orders/{id}", 40),
            e(web, "POST", "/v1/orders", 12),
            e(
                "spiffe://cluster.local/ns/shop/sa/batch",
                "GET",
                "/v1/orders/{id}",
                3,
            ),
            e("unknown", "GET", "/healthz", 9),
            e(web, "GET", "/{overflow}", 2),
        ];
        let d = drafts(&edges, &|_| None, "default");
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert_eq!(d.namespace, "shop");
        let rules = d.allow["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        let webrule = rules
            .iter()
            .find(|r| r["from"][0]["source"]["principals"][0] == "cluster.local/ns/shop/sa/web")
            .unwrap();
        let ops: Vec<_> = webrule["to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["operation"].clone())
            .collect();
        assert!(ops.contains(&json!({"methods": ["GET"], "paths": ["/v1/orders/{*}"]})));
        assert!(ops.contains(&json!({"methods": ["POST"], "paths": ["/v1/orders"]})));
        assert_eq!(ops.len(), 2, "no method × path cross product");
        let ev = d.evidence.iter().find(|x| x["principal"] == web).unwrap();
        assert_eq!(
            (ev["requests"].clone(), ev["confidence"].clone()),
            (json!(52), json!("medium"))
        );
        assert_eq!(d.uncovered.len(), 2);
        assert_eq!(d.deny_all["spec"], json!({}));
        let allow = d.mesh_traffic_permission["spec"]["rules"][0]["default"]["allow"]
            .as_array()
            .unwrap();
        assert_eq!(allow.len(), 2);
        let yaml = to_yaml(std::slice::from_ref(d), true, true);
        assert_eq!(yaml.matches("---\n").count(), 3, "{yaml}");
    }

    #[test]
    fn spiffe_namespaces() {
        assert_eq!(spiffe_namespace("spiffe://td/ns/shop/sa/web"), Some("shop"));
        assert_eq!(spiffe_namespace("spiffe://td/x/shop"), None);
        assert_eq!(spiffe_namespace("web"), None);
    }
}
