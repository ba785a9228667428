//! Least-privilege drafts through the canary's operator flow — one flow,
//! not a second one:
//!
//! 1. **recommend**: `GET /v1/policies` lists each destination's draft with
//!    its `digest` (SHA-256 of what would be enforced: names and specs, not
//!    the evidence counts, so it holds still while traffic repeats itself)
//!    and its diff against the policies in force ([`crate::policy_diff`],
//!    read from the GitOps directory);
//! 2. **approve / reject**: `POST /v1/policies/{service}/{approve|reject}`
//!    with `{"digest": "...", "comment": "..."}` — the operator credential
//!    role, actor attribution and `by`/`comment` rules of
//!    `POST /v1/canaries/{name}/{action}`; the digest must be the one
//!    reviewed (else 409: the draft changed). One audit row
//!    (`policy:approve` / `policy:reject`, the digest and the diff as
//!    evidence) is committed to the same hash-chained audit trail before
//!    anything is written, and announced through the global webhooks;
//! 3. **GitOps YAML**: an approval writes the draft, atomically, with the
//!    canaries' writer ([`crate::render::write`]) into
//!    `OUT/policy.<service>/` (a dot: no canary name can collide) —
//!    `istio-deny-all.yaml`, `istio-authorizationpolicy.yaml`,
//!    `kong-mesh-meshtrafficpermission.yaml`, each annotated with the digest
//!    and approver. The next diff reads them as in force.

use crate::graph::EdgeView;
use crate::policy::{self, Draft};
use crate::render::RenderedFile;
use crate::service::{check_action, OpError, Service};
use crate::store::{AuditEntry, Batch};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The drafts for `edges` (a service's namespace: that of the identity its
/// own sidecar calls out with).
pub fn drafts_of(edges: &[EdgeView], mesh: &str) -> Vec<Draft> {
    let namespace_of = |service: &str| {
        edges
            .iter()
            .filter(|e| e.source_service.as_deref() == Some(service))
            .find_map(|e| policy::spiffe_namespace(&e.source).map(str::to_string))
    };
    policy::drafts(edges, &namespace_of, mesh)
}

/// What an approval enforces, hashed: the objects' names and specs.
pub fn digest(d: &Draft) -> String {
    let part = |v: &Value| json!({"metadata": {"name": v.pointer("/metadata/name"), "namespace": v.pointer("/metadata/namespace")}, "spec": v.get("spec")});
    let canon = json!([
        part(&d.deny_all),
        part(&d.allow),
        part(&d.mesh_traffic_permission)
    ])
    .to_string();
    let h = Sha256::digest(canon.as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The GitOps directory of a destination's approved policy.
pub fn dir_name(service: &str) -> String {
    format!("policy.{}", policy::dns_name(service))
}

/// The files an approval writes.
pub fn files(d: &Draft, digest: &str, by: &str) -> Vec<RenderedFile> {
    let stamp = |mut v: Value| {
        if let Some(a) = v
            .pointer_mut("/metadata")
            .and_then(Value::as_object_mut)
            .map(|m| m.entry("annotations").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
        {
            a.insert("vigil.dev/digest".into(), json!(digest));
            a.insert("vigil.dev/approved-by".into(), json!(by));
            a.remove("vigil.dev/draft");
        }
        v
    };
    [
        ("istio-deny-all.yaml", &d.deny_all),
        ("istio-authorizationpolicy.yaml", &d.allow),
        (
            "kong-mesh-meshtrafficpermission.yaml",
            &d.mesh_traffic_permission,
        ),
    ]
    .into_iter()
    .map(|(name, v)| {
        let object = stamp(v.clone());
        RenderedFile {
            name: name.to_string(),
            yaml: serde_yaml::to_string(&object).unwrap_or_default(),
            object,
        }
    })
    .collect()
}

/// The recommendation list of `GET /v1/policies` (JSON): each draft with
/// its digest and its diff against the policies in force.
pub fn recommend(svc: &Service, now_ms: u64, mesh: &str) -> Value {
    let drafts = drafts_of(&svc.graph_edges(now_ms), mesh);
    let read = crate::policy_diff::read_dir(svc.gitops_dir());
    let mut v = policy::to_json(&drafts);
    if let Some(list) = v.get_mut("drafts").and_then(Value::as_array_mut) {
        for (item, d) in list.iter_mut().zip(&drafts) {
            if let Some(o) = item.as_object_mut() {
                o.insert("digest".into(), json!(digest(d)));
                o.insert("diff".into(), crate::policy_diff::diff(d, &read.objects));
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("in_force_skipped".into(), json!(read.skipped));
    }
    v
}

/// Approve (`approve = true`) or reject the draft for `service` whose
/// digest the operator reviewed. Returns what was done.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    svc: &Service,
    service: &str,
    approve: bool,
    by: &str,
    comment: &str,
    reviewed: &str,
    mesh: &str,
    now_ms: u64,
) -> Result<Value, OpError> {
    check_action(by, comment)?;
    let drafts = drafts_of(&svc.graph_edges(now_ms), mesh);
    let Some(d) = drafts.iter().find(|d| d.service == service) else {
        return Err(OpError::Invalid {
            field: "service".into(),
            message: format!("no draft for {service:?}: no observed identified callers"),
        });
    };
    let now = digest(d);
    if now != reviewed {
        return Err(OpError::Conflict(format!(
            "the draft for {service} changed since it was reviewed (digest now {now}); review it again"
        )));
    }
    let read = crate::policy_diff::read_dir(svc.gitops_dir());
    let diff = crate::policy_diff::diff(d, &read.objects);
    let action = if approve { "approve" } else { "reject" };
    let dir = dir_name(service);
    let detail = format!(
        "{action}d least-privilege draft for {service} ({} rules){}{}",
        d.evidence.len(),
        if approve {
            format!(" -> GitOps {dir}/")
        } else {
            String::new()
        },
        if comment.is_empty() {
            String::new()
        } else {
            format!(": {comment}")
        }
    );
    let evidence = json!({"service": service, "namespace": d.namespace, "digest": now,
        "diff": diff, "rules": d.evidence, "uncovered": d.uncovered});
    let batch = Batch {
        audit: vec![AuditEntry {
            ts_ms: now_ms,
            actor: by.to_string(),
            action: format!("policy:{action}"),
            canary: String::new(),
            detail: detail.clone(),
            evidence: evidence.to_string(),
        }],
        ..Batch::default()
    };
    svc.commit_batch(&batch)
        .map_err(|e| OpError::Storage(e.to_string()))?;
    let mut written = Vec::new();
    if approve {
        let files = files(d, &now, by);
        if let Err(e) = crate::render::write(svc.gitops_dir(), &dir, &files) {
            crate::metrics::Metrics::add(&svc.metrics.render_errors, 1);
            return Err(OpError::Storage(format!(
                "approval audited, but the GitOps files could not be written: {e}"
            )));
        }
        written = files.iter().map(|f| format!("{dir}/{}", f.name)).collect();
    }
    let out = json!({"kind": format!("policy:{action}"), "service": service, "digest": now,
        "actor": by, "explanation": detail, "files": written, "diff": diff});
    svc.announce(&out);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn edge(source: &str, path: &str, n: u64) -> EdgeView {
        EdgeView {
            source: source.into(),
            source_service: None,
            service: "orders".into(),
            version: "v1".into(),
            method: "GET".into(),
            path: path.into(),
            requests: n,
            errors: 0,
            status_4xx: 0,
            denied: 0,
            latency: vec![],
            rate_rps: 1.0,
            first_seen_ms: 1000,
            last_seen_ms: 2000 + n,
            observed_by: "inbound",
            reporters: vec![],
            ttft: vec![],
            streamed: 0,
            by_reporter: vec![],
        }
    }

    #[test]
    fn digest_ignores_counts_and_follows_rules() {
        let web = "spiffe://td/ns/shop/sa/web";
        let a = drafts_of(&[edge(web, "/v1/orders/{id}", 5)], "default");
        let b = drafts_of(&[edge(web, "/v1/orders/{id}", 500)], "default");
        let c = drafts_of(
            &[edge(web, "/v1/orders/{id}", 5), edge(web, "/v1/items", 1)],
            "default",
        );
        assert_eq!(digest(&a[0]), digest(&b[0]));
        assert_ne!(digest(&a[0]), digest(&c[0]));
        let f = files(&a[0], &digest(&a[0]), "alice");
        assert_eq!(f.len(), 3);
        assert_eq!(
            f[1].object["metadata"]["annotations"]["vigil.dev/approved-by"],
            json!("alice")
        );
        assert_eq!(dir_name("orders"), "policy.orders");
    }
}
