//! Resilience advice checked in real Envoy with real mTLS (issue 15): a
//! caller `client` (outbound sidecar only) calls four destinations, each
//! behind its own inbound sidecar running the Vigil filter with `edges`
//! enabled and reporting to a real `vigil-control serve`:
//!
//! - `api` `GET /v1/items/{id}`: 2 000 requests, 0.25 % of them (every
//!   400th) 2 s slower: a p99.9 of ~2 s. The proposed timeout covers every
//!   duration the *client* measured (≥ the observed p99.9 × margin);
//! - `chat` `GET /v1/chat/stream`: a real SSE upstream (6 chunks, the first
//!   after 40 ms, then 15 ms apart): separate first-byte and total
//!   timeouts, the total covering the longest stream the client saw;
//! - `models` `POST /v1/models/llama-3/infer` (a generation call): no
//!   retries proposed;
//! - `pool` `GET /v1/pool/{id}`: two instances (`pool-1`, `pool-2`, two
//!   sidecars behind one client cluster, round robin), `pool-2` answering
//!   40 % 503: outlier detection proposed for `pool`, at most 50 % (one of
//!   two instances), naming `pool-2`.
//!
//! The GitOps directory holds configuration in force: a VirtualService
//! retrying the POST generation call and cutting `api` at 1 s, a
//! DestinationRule for `pool` without outlier detection, a MeshRetry on
//! `models`, and a file that is not YAML. The advice warns about each
//! (naming the file) and lists the bad file as skipped. Every route's
//! advice carries its evidence and explanation; the rendered Istio and Kong
//! Mesh documents validate against the CRDs in `../shared/schemas`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vigil_e2e::control::{ControlService, TOKEN};
use vigil_e2e::envoy::{Envoy, EnvoyOptions};
use vigil_e2e::grpc::GrpcUpstream;
use vigil_e2e::schema::validate_documents;
use vigil_e2e::sidecars::{call, free_port, outbound_cluster, spiffe_id, Pki, SidecarSpec};
use vigil_e2e::upstream::Upstream;

const API_REQUESTS: usize = 2000;
const SLOW_SHARE: f64 = 0.0025;
const STREAMS: usize = 30;
const POSTS: usize = 30;
const POOL_REQUESTS: usize = 300;

async fn sidecar(spec: SidecarSpec, instance: u32, extra_endpoint: Option<(String, u16)>) -> Envoy {
    let name = spec.service.clone();
    let config = json!({
        "tick_ms": 500,
        "control": {"cluster": "vigil-control", "token": TOKEN, "timeout_ms": 500},
        "edges": {"service": name, "version": "v1", "identity": spiffe_id(&name)},
    })
    .to_string();
    Envoy::start(
        EnvoyOptions::new(&format!("resil-{name}-{instance}"), config)
            .concurrency(1)
            .transform(move |b| {
                spec.apply(b)?;
                let pod = format!("{}-{instance}", spec.service);
                b["node"]["metadata"]["NAME"] = json!(pod);
                b["node"]["id"] = json!(format!(
                    "sidecar~127.0.0.1~{pod}.shop~shop.svc.cluster.local"
                ));
                if let Some((peer, port)) = &extra_endpoint {
                    let cluster = outbound_cluster(peer);
                    let clusters = b["static_resources"]["clusters"].as_array_mut().unwrap();
                    let c = clusters.iter_mut().find(|c| c["name"] == cluster).unwrap();
                    c["load_assignment"]["endpoints"][0]["lb_endpoints"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"endpoint": {"address": {"socket_address": {
                            "address": "127.0.0.1", "port_value": port}}}}));
                }
                Ok(())
            }),
    )
    .await
    .unwrap_or_else(|e| panic!("sidecar {name}-{instance}: {e}"))
}

/// `n` calls, `parallel` at a time; (status, client-measured duration) each.
async fn calls(
    port: u16,
    host: &'static str,
    method: &'static str,
    path: impl Fn(usize) -> String,
    n: usize,
    parallel: usize,
) -> Vec<(u16, Duration)> {
    let paths: Vec<String> = (0..n).map(path).collect();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(paths.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().unwrap().next();
                let Some(p) = next else { break };
                let t = Instant::now();
                let s = call(port, host, method, &p).await.unwrap();
                out.push((s, t.elapsed()));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

const IN_FORCE_ISTIO: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: models, namespace: shop}
spec:
  hosts: [models.shop.svc.cluster.local]
  http:
  - name: generate
    match: [{method: {exact: POST}, uri: {prefix: /v1/models/}}]
    timeout: 30s
    retries: {attempts: 3, perTryTimeout: 10s, retryOn: "5xx,reset"}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api]
  http:
  - name: all
    timeout: 1s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool, namespace: shop}
spec:
  host: pool.shop.svc.cluster.local
  trafficPolicy: {connectionPool: {http: {http2MaxRequests: 100}}}
"#;

const IN_FORCE_KUMA: &str = r#"
apiVersion: kuma.io/v1alpha1
kind: MeshRetry
metadata: {name: models-retry, namespace: kong-mesh-system, labels: {kuma.io/mesh: default}}
spec:
  targetRef: {kind: Mesh}
  to:
  - targetRef: {kind: MeshService, name: models}
    default: {http: {numRetries: 2}}
"#;

fn route<'a>(advice: &'a Value, service: &str, path: &str) -> &'a Value {
    advice["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == service && r["path"] == path)
        .unwrap_or_else(|| panic!("no advice for {service} {path}: {advice:#}"))
}

fn explained(r: &Value, words: &[&str]) {
    let text = r["explanation"].to_string();
    for w in words {
        assert!(text.contains(w), "explanation lacks {w:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resilience_advice_from_real_envoy_traffic() {
    let t0 = Instant::now();
    let pki = Pki::new().unwrap();
    let control = ControlService::start_with_args(
        "resilience",
        "webhooks: []\n",
        500,
        &["--graph-learning-s", "1", "--graph-horizon-s", "600"],
    )
    .await
    .unwrap();
    let gitops = control.data_dir().join("gitops");
    std::fs::create_dir_all(gitops.join("in-force")).unwrap();
    std::fs::write(gitops.join("in-force/istio.yaml"), IN_FORCE_ISTIO).unwrap();
    std::fs::write(gitops.join("in-force/kuma.yaml"), IN_FORCE_KUMA).unwrap();
    std::fs::write(gitops.join("in-force/broken.yaml"), "kind: [unclosed\n").unwrap();

    let api = Upstream::start("api").await.unwrap();
    let models = Upstream::start("models").await.unwrap();
    let pool1 = Upstream::start("pool-1").await.unwrap();
    let pool2 = Upstream::start("pool-2").await.unwrap();
    let mut chat = GrpcUpstream::start_sse("chat").unwrap();
    assert_eq!(chat.command("shape 40 15 6").unwrap(), "OK");
    api.set_slow_share(SLOW_SHARE, Duration::from_secs(2));
    pool2.set_error_ratio(0.4);

    let names = ["api", "models", "chat", "pool"];
    let inbound: Vec<u16> = (0..5).map(|_| free_port().unwrap()).collect();
    let client_out = free_port().unwrap();
    let ids: Vec<_> = names.iter().map(|n| pki.issue(n).unwrap()).collect();
    let app_ports = [
        api.port(),
        models.port(),
        chat.port(),
        pool1.port(),
        pool2.port(),
    ];
    let mut envoys = Vec::new();
    for (i, app) in app_ports.iter().enumerate() {
        let svc = i.min(3);
        let spec = SidecarSpec {
            service: names[svc].to_string(),
            identity: ids[svc].clone(),
            ca: pki.ca.clone(),
            inbound: Some((inbound[i], *app)),
            outbound: free_port().unwrap(),
            peers: Vec::new(),
            control_port: control.port(),
            rbac: None,
        };
        let instance = if i == 4 { 2 } else { 1 };
        envoys.push(sidecar(spec, instance, None).await);
    }
    let client = pki.issue("client").unwrap();
    envoys.push(
        sidecar(
            SidecarSpec {
                service: "client".into(),
                identity: client,
                ca: pki.ca.clone(),
                inbound: None,
                outbound: client_out,
                peers: names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.to_string(), inbound[i]))
                    .collect(),
                control_port: control.port(),
                rbac: None,
            },
            1,
            Some(("pool".to_string(), inbound[4])),
        )
        .await,
    );
    println!("mesh up in {:.1} s", t0.elapsed().as_secs_f64());

    // The traffic, all four routes at once.
    let (api_r, chat_r, post_r, pool_r) = tokio::join!(
        calls(
            client_out,
            "api",
            "GET",
            |i| format!("/v1/items/{}", 1000 + i),
            API_REQUESTS,
            16
        ),
        calls(
            client_out,
            "chat",
            "GET",
            |_| "/v1/chat/stream".into(),
            STREAMS,
            4
        ),
        calls(
            client_out,
            "models",
            "POST",
            |_| "/v1/models/llama-3/infer".into(),
            POSTS,
            2
        ),
        calls(
            client_out,
            "pool",
            "GET",
            |i| format!("/v1/pool/{i}"),
            POOL_REQUESTS,
            4
        ),
    );
    println!("traffic done at {:.1} s", t0.elapsed().as_secs_f64());
    assert!(api_r.iter().all(|(s, _)| *s == 200));
    assert!(chat_r.iter().all(|(s, _)| *s == 200));
    assert!(post_r.iter().all(|(s, _)| *s == 200));
    let pool_5xx = pool_r.iter().filter(|(s, _)| *s == 503).count();
    assert!((40..=80).contains(&pool_5xx), "pool 503s: {pool_5xx}");
    assert_eq!(pool1.failed(), 0);
    assert!(pool1.served() > 100 && pool2.served() > 100, "round robin");
    let max = |r: &[(u16, Duration)]| r.iter().map(|x| x.1).max().unwrap();
    let api_slowest = max(&api_r);
    let chat_slowest = max(&chat_r);
    assert!(api_slowest >= Duration::from_secs(2), "{api_slowest:?}");

    // Wait until every request is in the control service's graph.
    let total = API_REQUESTS + STREAMS + POSTS + POOL_REQUESTS;
    let deadline = Instant::now() + Duration::from_secs(20);
    let advice = loop {
        let a = control.get("/v1/advice").await.unwrap();
        let seen: u64 = a["routes"].as_array().map_or(0, |r| {
            r.iter().map(|x| x["requests"].as_u64().unwrap_or(0)).sum()
        });
        if seen >= total as u64 {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "{seen} of {total} requests in the advice: {a:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("advice: {advice}");

    // api: a 2 s p99.9 covered, with the margin, by the timeout and each try.
    let a = route(&advice, "api", "/v1/items/{id}");
    let ev = &a["evidence"];
    assert_eq!(ev["requests"], API_REQUESTS);
    let p999 = ev["latency_p999_ms"].as_f64().unwrap();
    assert!(p999 >= 1900.0, "p99.9 {p999}");
    assert!(ev["latency_p99_ms"].as_f64().unwrap() < 500.0, "{ev}");
    assert_eq!(ev["p999_taken_as"], format!("p99.9 of {API_REQUESTS}"));
    let per_try = a["per_try_timeout_ms"].as_u64().unwrap();
    assert!(
        per_try as f64 >= p999 * 1.5,
        "per try {per_try} vs p99.9 {p999}"
    );
    assert!(
        per_try as u128 >= api_slowest.as_millis(),
        "the slowest client call {api_slowest:?}"
    );
    assert_eq!(a["timeout_ms"].as_u64().unwrap(), 3 * per_try);
    assert_eq!(a["retries"], 2);
    explained(a, &["p99.9 of 2000", "× 1.5", "idempotent"]);
    let w = a["warnings"].to_string();
    assert!(
        w.contains("VirtualService api (in-force/istio.yaml)")
            && w.contains("timeout 1000 ms is shorter than the observed p99.9"),
        "{w}"
    );

    // chat: streaming, first byte and total both covering what was seen.
    let c = route(&advice, "chat", "/v1/chat/stream");
    assert_eq!(c["evidence"]["streamed"], STREAMS, "{c}");
    let fb = c["first_byte_timeout_ms"].as_u64().unwrap();
    let ttft = c["evidence"]["ttft_p999_ms"].as_f64().unwrap();
    assert!(
        ttft >= 35.0 && (fb as f64) >= ttft * 1.5,
        "first byte {fb} vs {ttft}"
    );
    let total_p = c["evidence"]["latency_p999_ms"].as_f64().unwrap();
    assert!(
        total_p > ttft + 60.0,
        "total {total_p} after 5 gaps of 15 ms, ttft {ttft}"
    );
    let per_try = c["per_try_timeout_ms"].as_u64().unwrap();
    assert!(per_try as f64 >= total_p * 1.5 && per_try > fb);
    assert!(
        per_try as u128 >= chat_slowest.as_millis(),
        "{chat_slowest:?}"
    );
    explained(
        c,
        &[
            "streaming route",
            "first-byte timeout",
            "time to first byte",
        ],
    );

    // models: POST generation, no retries, warned against what is in force.
    let m = route(&advice, "models", "/v1/models/llama-3/infer");
    assert_eq!(m["retries"], 0);
    assert_eq!(m["per_try_timeout_ms"], Value::Null);
    explained(m, &["no retries", "not idempotent"]);
    let w = m["warnings"].to_string();
    assert!(w.contains("VirtualService models (in-force/istio.yaml) route \\\"generate\\\": retries.attempts 3 on POST"), "{w}");
    assert!(
        w.contains("MeshRetry models-retry (in-force/kuma.yaml): http.numRetries 2"),
        "{w}"
    );

    // pool: outlier detection for the pool, sized to its two instances.
    let p = route(&advice, "pool", "/v1/pool/{id}");
    assert_eq!(
        p["outlier_detection"],
        json!({"consecutive_5xx": 5, "interval_s": 10, "base_ejection_s": 30, "max_ejection_percent": 50})
    );
    let inst = p["evidence"]["instances"].as_array().unwrap();
    assert_eq!(inst.len(), 2, "{inst:?}");
    assert_eq!(inst[0]["instance"], "pool-1.shop");
    assert_eq!(inst[0]["errors_5xx"], 0);
    assert_eq!(inst[1]["instance"], "pool-2.shop");
    assert_eq!(inst[1]["errors_5xx"].as_u64().unwrap() as usize, pool_5xx);
    explained(p, &["pool-2.shop has", "2-instance pool"]);
    assert!(
        p["warnings"]
            .to_string()
            .contains("DestinationRule for pool has no outlierDetection"),
        "{}",
        p["warnings"]
    );
    // Routes with nothing risky in force carry no in-force warning.
    assert!(
        !c["warnings"].to_string().contains("in force"),
        "{}",
        c["warnings"]
    );

    // What was read, and the bad file named.
    assert_eq!(
        advice["in_force"].as_array().unwrap().len(),
        4,
        "{}",
        advice["in_force"]
    );
    let skipped = advice["in_force_skipped"].to_string();
    assert!(
        skipped.contains("in-force/broken.yaml: not YAML"),
        "{skipped}"
    );
    // Every number explained: each route says how its timeout and its pool were taken.
    for r in advice["routes"].as_array().unwrap() {
        explained(r, &["timeout", "mean concurrency"]);
        assert!(r["evidence"]["latency_p999_ms"].as_f64().unwrap() > 0.0);
    }
    for (s, v) in advice["services"].as_object().unwrap() {
        assert!(
            v["explanation"].as_str().unwrap().contains("Little's law"),
            "{s}: {v}"
        );
    }

    // The rendered documents pass the Istio and Kong Mesh CRDs.
    let yaml = control
        .get_text("/v1/advice?format=yaml&namespace=shop")
        .await
        .unwrap();
    validate_documents(&yaml).unwrap_or_else(|e| panic!("advice fails the CRDs: {e:#?}\n{yaml}"));
    for kind in [
        "VirtualService",
        "DestinationRule",
        "MeshTimeout",
        "MeshRetry",
        "MeshCircuitBreaker",
    ] {
        assert_eq!(
            yaml.matches(&format!("kind: {kind}\n")).count(),
            4,
            "{kind}: {yaml}"
        );
    }
    assert!(yaml.contains("outlierDetection"), "{yaml}");
    println!(
        "api p99.9 {p999:.0} ms → per try {} ms (client slowest {api_slowest:?}); chat ttft p99.9 {ttft:.0} ms → first byte {fb} ms, total p99.9 {total_p:.0} ms (client slowest {chat_slowest:?}); pool-2 {pool_5xx} 5xx; total {:.1} s",
        a["per_try_timeout_ms"], t0.elapsed().as_secs_f64()
    );
    drop(envoys);
}
