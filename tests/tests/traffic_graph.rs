//! Observed-traffic intelligence in real Envoy with real mTLS (issue 15):
//! three services (`web`, `orders`, `models`), each behind an Envoy sidecar
//! whose inbound listener requires a client certificate issued by the test
//! CA with the caller's SPIFFE id, and runs the Vigil filter with `edges`
//! enabled, reporting to the real control service.
//!
//! 1. web → orders `GET /v1/orders/{123,456,…}`, `POST /v1/orders`;
//!    web → models and orders → models `POST /v1/models/llama-3/infer`:
//!    `GET /v1/graph` lists exactly those four edges, with the callers'
//!    SPIFFE ids, the methods and the templates (`/v1/orders/{id}`), and a
//!    DOT rendering.
//! 2. The least-privilege drafts (`GET /v1/policies`) validate against the
//!    Istio and Kuma CRDs in `../shared/schemas`.
//! 3. After the learning period a new caller (`batch`, its own sidecar and
//!    certificate) produces exactly one `new-edge` event, in the audit log
//!    and at the webhook, naming its identity.
//! 4. The orders draft, translated to Envoy's RBAC filter the way istiod
//!    does (`vigil_e2e::sidecars::rbac_filter`) and loaded into orders'
//!    sidecar, allows 100 % of the observed traffic and answers 403 to the
//!    unobserved caller, an unobserved path and an unobserved method.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_e2e::control::{ControlService, TOKEN};
use vigil_e2e::envoy::{Envoy, EnvoyOptions};
use vigil_e2e::http::request_frame;
use vigil_e2e::schema::validate_documents;
use vigil_e2e::sidecars::{call, free_port, rbac_filter, spiffe_id, Pki, SidecarSpec};
use vigil_e2e::upstream::Upstream;

const LEARNING_S: u64 = 6;

fn plugin_config(service: &str) -> String {
    json!({
        "tick_ms": 500,
        "control": {"cluster": "vigil-control", "token": TOKEN, "timeout_ms": 500},
        "edges": {"service": service, "version": "v1", "identity": spiffe_id(service)},
    })
    .to_string()
}

async fn sidecar(spec: SidecarSpec) -> Envoy {
    let name = spec.service.clone();
    let config = plugin_config(&name);
    Envoy::start(
        EnvoyOptions::new(&format!("mesh-{name}"), config)
            .concurrency(1)
            .transform(move |b| spec.apply(b)),
    )
    .await
    .unwrap_or_else(|e| panic!("sidecar {name}: {e}"))
}

/// A webhook receiver: every JSON body posted to it.
async fn webhook_receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let out = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some((head, len)) = request_frame(&buf) else {
                        continue;
                    };
                    if buf.len() >= head + len {
                        if let Ok(v) = serde_json::from_slice(&buf[head..head + len]) {
                            bodies.lock().unwrap().push(v);
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    (port, out)
}

/// The observed traffic: (caller's outbound port, host, method, path).
fn observed(web_out: u16, orders_out: u16) -> Vec<(u16, &'static str, &'static str, String)> {
    let mut v = Vec::new();
    for i in 0..6 {
        v.push((
            web_out,
            "orders",
            "GET",
            format!("/v1/orders/{}", 100 + i * 37),
        ));
    }
    v.push((
        web_out,
        "orders",
        "GET",
        "/v1/orders/123?user=alice".to_string(),
    ));
    for _ in 0..3 {
        v.push((web_out, "orders", "POST", "/v1/orders".to_string()));
        v.push((
            web_out,
            "models",
            "POST",
            "/v1/models/llama-3/infer".to_string(),
        ));
        v.push((
            orders_out,
            "models",
            "POST",
            "/v1/models/llama-3/infer".to_string(),
        ));
    }
    v
}

async fn wait_for(
    control: &ControlService,
    path: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let t = Instant::now();
    loop {
        let v = control.get(path).await.unwrap();
        if ok(&v) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s; last {path}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn edge_set(graph: &Value) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_string(),
                e["service"].as_str().unwrap().to_string(),
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_map_policies_and_rbac_in_real_envoy_with_mtls() {
    let t0 = Instant::now();
    let pki = Pki::new().unwrap();
    let (hook_port, hooks) = webhook_receiver().await;
    let control_yaml = format!(
        "webhooks: [\"http://127.0.0.1:{hook_port}/graph\"]\nwebhook_allow: [\"127.0.0.1\"]\n"
    );
    let learning = LEARNING_S.to_string();
    let control = ControlService::start_with_args(
        "traffic-graph",
        &control_yaml,
        500,
        &["--graph-learning-s", &learning, "--graph-horizon-s", "600"],
    )
    .await
    .unwrap();
    let apps = [
        Upstream::start("web").await.unwrap(),
        Upstream::start("orders").await.unwrap(),
        Upstream::start("models").await.unwrap(),
    ];
    let services = ["web", "orders", "models"];
    let inbound: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
    let outbound: Vec<u16> = (0..4).map(|_| free_port().unwrap()).collect();
    let peers = |names: &[&str]| -> Vec<(String, u16)> {
        names
            .iter()
            .map(|n| {
                let i = services.iter().position(|s| s == n).unwrap();
                (n.to_string(), inbound[i])
            })
            .collect()
    };
    let spec = |i: usize, peer_names: &[&str]| SidecarSpec {
        service: services[i].to_string(),
        identity: pki.issue(services[i]).unwrap(),
        ca: pki.ca.clone(),
        inbound: Some((inbound[i], apps[i].port())),
        outbound: outbound[i],
        peers: peers(peer_names),
        control_port: control.port(),
        rbac: None,
    };
    let orders_spec = spec(1, &["models"]);
    let mut envoys = vec![
        sidecar(spec(0, &["orders", "models"])).await,
        sidecar(orders_spec.clone()).await,
        sidecar(spec(2, &[])).await,
    ];
    println!("mesh up in {:.1} s", t0.elapsed().as_secs_f64());

    // 1. The exercised edges, exactly.
    let traffic = observed(outbound[0], outbound[1]);
    for (port, host, method, path) in &traffic {
        let status = call(*port, host, method, path).await.unwrap();
        assert_eq!(status, 200, "{method} {host}{path} via {port}");
    }
    let web = spiffe_id("web");
    let orders = spiffe_id("orders");
    let expected = vec![
        (
            orders.clone(),
            "models".to_string(),
            "POST".to_string(),
            "/v1/models/llama-3/infer".to_string(),
        ),
        (
            web.clone(),
            "models".to_string(),
            "POST".to_string(),
            "/v1/models/llama-3/infer".to_string(),
        ),
        (
            web.clone(),
            "orders".to_string(),
            "GET".to_string(),
            "/v1/orders/{id}".to_string(),
        ),
        (
            web.clone(),
            "orders".to_string(),
            "POST".to_string(),
            "/v1/orders".to_string(),
        ),
    ];
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    let graph = wait_for(
        &control,
        "/v1/graph",
        "the four edges with all their requests",
        |g| {
            let total: u64 = g["edges"].as_array().map_or(0, |e| {
                e.iter().map(|x| x["requests"].as_u64().unwrap_or(0)).sum()
            });
            total >= traffic.len() as u64
        },
    )
    .await;
    assert_eq!(edge_set(&graph), expected_sorted, "{graph:#}");
    let get = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == "GET")
        .unwrap();
    assert_eq!(
        get["requests"], 7,
        "six ids and one with a query string, one template"
    );
    assert_eq!(get["observed_by"], "inbound");
    assert_eq!(get["reporters"], json!(["orders-1.shop"]));
    assert!(get["latency_p99_ms"].as_f64().unwrap() > 0.0);
    assert!(
        !graph.to_string().contains("alice"),
        "no query string reaches the graph"
    );
    let dot = vigil_e2e::http::HttpClient::new()
        .get(
            control.addr(),
            "/v1/graph?format=dot",
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(dot.status, 200);
    assert!(
        dot.text().contains(&format!("\"{web}\" -> \"orders\"")),
        "{}",
        dot.text()
    );
    println!("graph: {}", serde_json::to_string(&graph["edges"]).unwrap());

    // 2. Drafts, CRD-validated (Istio AuthorizationPolicy + deny-all, Kuma MeshTrafficPermission).
    let drafts = control.get("/v1/policies").await.unwrap();
    let yaml = control.get_text("/v1/policies?format=yaml").await.unwrap();
    validate_documents(&yaml).unwrap_or_else(|e| panic!("drafts fail the CRDs: {e:#?}\n{yaml}"));
    let kinds = yaml.matches("kind: MeshTrafficPermission").count();
    assert_eq!(kinds, 2, "orders and models: {yaml}");
    assert_eq!(
        yaml.matches("kind: AuthorizationPolicy").count(),
        3,
        "deny-all + two: {yaml}"
    );
    let orders_draft = drafts["drafts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["service"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(orders_draft["namespace"], "shop");
    let ev = &orders_draft["evidence"][0];
    assert_eq!(ev["principal"], web.as_str());
    assert_eq!(ev["requests"], 10);
    println!("orders draft: {}", orders_draft["authorization_policy"]);

    // Resilience advice from the same real traffic: POST generation gets no
    // retries; the rendered documents pass the CRDs.
    let advice = control.get("/v1/advice").await.unwrap();
    let infer: Vec<&Value> = advice["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/models/llama-3/infer")
        .collect();
    assert_eq!(infer.len(), 1, "{advice:#}");
    assert_eq!(infer[0]["retries"], 0);
    assert!(infer[0]["timeout_ms"].as_u64().unwrap() >= 100);
    let advice_yaml = vigil_e2e::http::HttpClient::new()
        .get(
            control.addr(),
            "/v1/advice?format=yaml&namespace=shop",
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .text();
    validate_documents(&advice_yaml)
        .unwrap_or_else(|e| panic!("advice fails the CRDs: {e:#?}\n{advice_yaml}"));
    // The caps are exported by the sidecar as metrics.
    let m = envoys[1].metrics().await.unwrap();
    assert_eq!(m.sum("vigil_edges_cap_edges", &[]), Some(1024.0));

    // 3. A new caller after the learning period: one new-edge event with its identity.
    wait_for(
        &control,
        "/v1/graph",
        "the end of the learning period",
        |g| g["learning"] == false,
    )
    .await;
    let batch = pki.issue("batch").unwrap();
    let batch_envoy = sidecar(SidecarSpec {
        service: "batch".into(),
        identity: batch,
        ca: pki.ca.clone(),
        inbound: None,
        outbound: outbound[3],
        peers: peers(&["orders"]),
        control_port: control.port(),
        rbac: None,
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            call(outbound[3], "orders", "GET", "/v1/orders/9")
                .await
                .unwrap(),
            200
        );
    }
    let batch_id = spiffe_id("batch");
    let audit = wait_for(&control, "/v1/audit", "the new-edge audit row", |a| {
        a.to_string().contains("graph:new-edge")
    })
    .await;
    // Let another tick or two pass: still exactly one event.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let audit = control.get("/v1/audit").await.unwrap_or(audit);
    let rows: Vec<&Value> = audit["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "graph:new-edge")
        .collect();
    assert_eq!(rows.len(), 1, "{audit:#}");
    assert!(
        rows[0]["detail"].as_str().unwrap().contains(&batch_id),
        "{}",
        rows[0]
    );
    let t = Instant::now();
    while hooks.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = hooks.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["event"].clone(), got[0]["source"].clone()),
        (json!("new-edge"), json!(batch_id))
    );

    // 4. The orders draft as Envoy RBAC in orders' sidecar.
    let rbac = rbac_filter(&[
        orders_draft["deny_all"].clone(),
        orders_draft["authorization_policy"].clone(),
    ])
    .unwrap();
    let old = envoys.remove(1);
    drop(old);
    tokio::time::sleep(Duration::from_millis(300)).await;
    envoys.insert(
        1,
        sidecar(SidecarSpec {
            rbac: Some(rbac),
            ..orders_spec
        })
        .await,
    );
    let to_orders: Vec<_> = observed(outbound[0], outbound[1])
        .into_iter()
        .filter(|(_, host, _, _)| *host == "orders")
        .collect();
    let mut allowed = 0;
    for (port, host, method, path) in &to_orders {
        let s = call(*port, host, method, path).await.unwrap();
        assert_eq!(s, 200, "observed {method} {path} must be allowed");
        allowed += 1;
    }
    // Observed template, new id: allowed.
    assert_eq!(
        call(outbound[0], "orders", "GET", "/v1/orders/98765")
            .await
            .unwrap(),
        200
    );
    let denied = [
        (
            outbound[3],
            "GET",
            "/v1/orders/9",
            "unobserved caller (batch)",
        ),
        (outbound[0], "GET", "/v1/orders/1/cancel", "unobserved path"),
        (outbound[0], "DELETE", "/v1/orders/1", "unobserved method"),
        (outbound[0], "GET", "/admin", "unobserved path"),
    ];
    for (port, method, path, why) in denied {
        let s = call(port, "orders", method, path).await.unwrap();
        assert_eq!(s, 403, "{why}: {method} {path}");
    }
    println!(
        "rbac: {allowed}/{} observed requests allowed (100 %), {} unobserved denied (403); total {:.1} s",
        to_orders.len(),
        denied.len(),
        t0.elapsed().as_secs_f64()
    );
    drop(batch_envoy);
    drop(envoys);
}
