//! Least-privilege drafts through the operator flow (issue 15): observed
//! edges reported to a running `vigil-control serve` → `GET /v1/policies`
//! recommends each draft with its digest and its diff against the policies
//! in force (a file the operator keeps in the GitOps directory) →
//! `POST /v1/policies/{service}/approve` by the operator credential, with
//! the reviewed digest (a stale digest is 409) → one `policy:approve` audit
//! row, the YAML written under `OUT/policy.<service>/`, each object valid
//! against the CRDs in ../shared/schemas → the next diff reads it as in
//! force. A reject is audited and writes nothing. `GET /v1/graph?format=svg`
//! draws exactly the observed caller → service pairs.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use common::{report, temp_dir, Server};
use serde_json::{json, Value};
use vigil_e2e::schema::Catalog;

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const OLD: &str = "cluster.local/ns/shop/sa/retired";

fn edge(source: &str, service: &str, method: &str, path: &str, n: u64) -> Value {
    json!({"source": source, "service": service, "version": "v1", "method": method,
        "path": path, "inbound": true, "requests": n, "latency": [[40, n]]})
}

fn feed(srv: &Server, seq: u64, edges: Vec<Value>) {
    let mut r = report("orders-1.shop", seq, vec![], vec![]);
    r["edges"] = json!(edges);
    let (status, body) = srv.post("/v1/reports", &r);
    assert_eq!(status, 202, "{body}");
}

fn draft<'a>(v: &'a Value, service: &str) -> &'a Value {
    v["drafts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["service"] == service)
        .unwrap_or_else(|| panic!("no draft for {service}: {v:#}"))
}

#[test]
fn drafts_are_recommended_diffed_approved_into_gitops_and_audited() {
    let dir = temp_dir("policy-flow");
    let data = dir.join("data");
    let gitops = data.join("gitops");
    // In force already: a hand-kept policy for orders allowing a caller
    // never observed, and GET only.
    std::fs::create_dir_all(gitops.join("team")).unwrap();
    std::fs::write(
        gitops.join("team/orders.yaml"),
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: orders, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: orders}}}}\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [cluster.local/ns/shop/sa/web, {OLD}]}}}}]\n    to: [{{operation: {{methods: [GET], paths: ['/v1/orders/{{*}}']}}}}]\n"),
    )
    .unwrap();
    let srv = Server::start(&data, None, &[]);
    feed(
        &srv,
        1,
        vec![
            edge(WEB, "orders", "GET", "/v1/orders/{id}", 40),
            edge(WEB, "orders", "POST", "/v1/orders", 12),
        ],
    );

    // Recommend: digest and diff per destination.
    let (status, v) = srv.get("/v1/policies");
    assert_eq!(status, 200, "{v}");
    let d = draft(&v, "orders");
    let digest = d["digest"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64);
    let diff = &d["diff"];
    println!("diff before approval: {diff:#}");
    assert_eq!(
        diff["istio"]["added"],
        json!([{"principal": "cluster.local/ns/shop/sa/web", "method": "POST", "path": "/v1/orders"}])
    );
    assert_eq!(
        diff["istio"]["removed"],
        json!([{"principal": OLD, "method": "GET", "path": "/v1/orders/{*}"}])
    );
    assert_eq!(
        diff["istio"]["unchanged"],
        json!([{"principal": "cluster.local/ns/shop/sa/web", "method": "GET", "path": "/v1/orders/{*}"}])
    );
    assert_eq!(diff["in_force_files"], json!(["team/orders.yaml"]));

    // Acting under another name is refused; a stale digest is a conflict.
    let path = "/v1/policies/orders/approve";
    let (status, _) = srv.post(path, &json!({"digest": digest, "by": "mallory"}));
    assert_eq!(status, 403);
    let (status, body) = srv.post(path, &json!({"digest": "0".repeat(64)}));
    assert_eq!(status, 409, "{body}");
    let (status, body) = srv.post("/v1/policies/nobody/approve", &json!({"digest": digest}));
    assert_eq!((status, body["field"].clone()), (400, json!("service")));
    assert!(
        !gitops.join("policy.orders").exists(),
        "nothing written before approval"
    );

    // More of the same traffic does not move the digest (counts are evidence, not policy).
    feed(
        &srv,
        2,
        vec![edge(WEB, "orders", "GET", "/v1/orders/{id}", 7)],
    );
    let (_, v2) = srv.get("/v1/policies");
    assert_eq!(draft(&v2, "orders")["digest"], json!(digest));

    // Approve: audited, written, CRD-valid.
    let (status, done) = srv.post(
        path,
        &json!({"digest": digest, "comment": "reviewed in PR 12"}),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["kind"], "policy:approve");
    assert_eq!(done["actor"], "alice");
    let catalog = Catalog::load_shared().unwrap();
    let files = done["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{done}");
    for f in files {
        let text = std::fs::read_to_string(gitops.join(f.as_str().unwrap())).unwrap();
        let obj: Value = serde_yaml::from_str(&text).unwrap();
        if let Err(errors) = catalog.validate_value(&obj) {
            panic!("{f}: {errors:#?}\n{text}");
        }
        assert_eq!(
            obj["metadata"]["annotations"]["vigil.dev/digest"],
            json!(digest)
        );
    }
    let (_, audit) = srv.get("/v1/audit?limit=20");
    let rows: Vec<&Value> = audit["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"].as_str().unwrap_or("").starts_with("policy:"))
        .collect();
    assert_eq!(rows.len(), 1, "{audit:#}");
    assert_eq!(rows[0]["action"], "policy:approve");
    assert_eq!(rows[0]["actor"], "alice");
    assert_eq!(audit["chain"]["intact"], json!(true));

    // The approved draft is now in force: nothing left to add.
    let (_, v3) = srv.get("/v1/policies");
    let diff = &draft(&v3, "orders")["diff"];
    assert_eq!(diff["istio"]["added"], json!([]), "{diff:#}");
    assert_eq!(diff["kuma"]["added"], json!([]), "{diff:#}");
    assert_eq!(diff["istio"]["unchanged"].as_array().unwrap().len(), 2);
    assert!(diff["in_force_files"]
        .as_array()
        .unwrap()
        .contains(&json!("policy.orders/istio-authorizationpolicy.yaml")));

    // Reject: audited, nothing written.
    feed(
        &srv,
        3,
        vec![edge(WEB, "payments", "POST", "/v1/charges", 5)],
    );
    let (_, v4) = srv.get("/v1/policies");
    let pd = draft(&v4, "payments")["digest"].clone();
    let (status, done) = srv.post(
        "/v1/policies/payments/reject",
        &json!({"digest": pd, "comment": "payments keeps its own policy"}),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["files"], json!([]));
    assert!(!gitops.join("policy.payments").exists());
    let (_, audit) = srv.get("/v1/audit?limit=20");
    let kinds: Vec<&str> = audit["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|a| a.starts_with("policy:"))
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(kinds.contains(&"policy:reject"));

    // The same map as SVG: one arrow per observed caller → service pair.
    let (status, raw) = common::http_raw(&srv.addr, "GET", "/v1/graph?format=svg", None, &[]);
    assert_eq!(status, 200);
    let text = String::from_utf8(raw).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let arrows: Vec<(String, String)> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("edge"))
        .map(|n| {
            (
                n.attribute("data-from").unwrap().to_string(),
                n.attribute("data-to").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        arrows,
        vec![
            (WEB.to_string(), "orders".to_string()),
            (WEB.to_string(), "payments".to_string())
        ],
        "{text}"
    );
    srv.kill9();
}
