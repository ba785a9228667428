//! Resilience advice (issue 15) on observed distributions fed through the
//! dependency map exactly as reports feed it: a route whose p99.9 is 2 s, a
//! streaming POST generation route, and 5xx clustered on one of three
//! instances. Timeouts cover the distribution, POST gets no retries,
//! outlier detection is proposed only where 5xx cluster, every number is
//! explained, and the rendered Istio / Kong Mesh documents validate against
//! the CRDs in ../shared/schemas.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use vigil_control::advice::{advise, render, to_yaml};
use vigil_control::graph::{Graph, GraphOptions};
use vigil_scorer::histogram::{bucket_index, LatencyHistogram};
use vigil_wire::edges::Edge;

fn edge(method: &str, path: &str, lat_us: &[(u64, u32)], ttft_us: &[(u64, u32)]) -> Edge {
    let mut h = LatencyHistogram::new();
    for &(us, n) in lat_us {
        h.add_to_bucket(bucket_index(us), n);
    }
    let mut t = LatencyHistogram::new();
    for &(us, n) in ttft_us {
        t.add_to_bucket(bucket_index(us), n);
    }
    let requests: u64 = lat_us.iter().map(|x| u64::from(x.1)).sum();
    Edge {
        source: "spiffe://cluster.local/ns/shop/sa/web".into(),
        service: "models".into(),
        version: "v1".into(),
        method: method.into(),
        path: path.into(),
        inbound: true,
        requests,
        errors: 0,
        status_4xx: 0,
        denied: 0,
        latency_sum_us: 0,
        latency: h.to_sparse(),
        ttft: t.to_sparse(),
        streamed: if ttft_us.is_empty() { 0 } else { requests },
    }
}

#[test]
fn timeouts_retries_and_outliers_from_observed_distributions() {
    let mut g = Graph::new(GraphOptions::default());
    let now = 1_000_000;
    // GET /v1/models/{id}: 9 980 fast, 20 at 1.9-2.0 s: p99.9 ≈ 2 s. Three
    // instances; instance models-2 returns nearly all the 5xx.
    for (i, sidecar) in ["models-1.shop", "models-2.shop", "models-3.shop"]
        .iter()
        .enumerate()
    {
        let mut e = edge(
            "GET",
            "/v1/models/{id}",
            &[(20_000, 3326), (1_950_000, 7)],
            &[],
        );
        e.errors = if i == 1 { 60 } else { 2 };
        g.ingest(sidecar, &[e], 0, now);
    }
    // POST generation, streamed: first byte ~300 ms, whole stream up to ~8 s.
    let gen = edge(
        "POST",
        "/v1/models/llama-3/infer",
        &[(3_000_000, 1500), (8_000_000, 10)],
        &[(250_000, 1500), (300_000, 10)],
    );
    g.ingest("models-1.shop", &[gen], 0, now);
    let edges = g.edges(now + 1000);
    let advice = advise(&edges);
    assert_eq!(advice.len(), 2);
    let get = advice.iter().find(|a| a.method == "GET").unwrap();
    let post = advice.iter().find(|a| a.method == "POST").unwrap();
    for a in &advice {
        println!("{} {}: {:#?}", a.method, a.path, a.explanation);
        assert!(!a.explanation.is_empty());
    }
    // The timeout covers p99.9 (≈ 2 s) with the margin, and nothing observed exceeds it.
    let per_try = get.per_try_timeout_ms.unwrap();
    assert!((2_000..=3_300).contains(&per_try), "{per_try}");
    assert_eq!(get.timeout_ms, 3 * per_try, "three tries");
    assert!(
        get.explanation[0].contains("p99.9 of 9999"),
        "{}",
        get.explanation[0]
    );
    assert_eq!(get.retries, 2);
    assert!(get.retry_on.contains(&"5xx"));
    let (consecutive, _, _, max_pct) = get.outlier.expect("5xx cluster on models-2");
    assert_eq!(
        (consecutive, max_pct),
        (5, 34),
        "one of three instances at most"
    );
    assert!(get
        .explanation
        .iter()
        .any(|e| e.contains("models-2.shop has 60 of 64 5xx")));
    // Streaming generation: first byte and total separately; no retries.
    assert_eq!(post.retries, 0);
    assert!(post.retry_on.is_empty());
    assert!(post.warnings.iter().any(|w| w.contains("non-idempotent")));
    let fb = post.first_byte_timeout_ms.unwrap();
    assert!((300..=600).contains(&fb), "{fb}");
    assert!(post.timeout_ms >= 8_000, "{}", post.timeout_ms);
    assert!(post.outlier.is_none(), "no 5xx there");
    // Errors spread evenly: no outlier detection.
    let mut g2 = Graph::new(GraphOptions::default());
    for s in ["a", "b", "c"] {
        let mut e = edge("GET", "/x", &[(10_000, 1000)], &[]);
        e.errors = 20;
        g2.ingest(s, &[e], 0, now);
    }
    assert!(advise(&g2.edges(now + 1000))[0].outlier.is_none());

    let docs = render(&advice, "shop", "default");
    let yaml = to_yaml(&docs);
    for kind in [
        "VirtualService",
        "DestinationRule",
        "MeshTimeout",
        "MeshRetry",
        "MeshCircuitBreaker",
    ] {
        assert!(
            yaml.contains(&format!("kind: {kind}")),
            "{kind} missing:\n{yaml}"
        );
    }
    vigil_e2e::schema::validate_documents(&yaml)
        .unwrap_or_else(|e| panic!("advice fails the CRDs: {e:#?}\n{yaml}"));
    assert!(
        yaml.contains("attempts: 0"),
        "POST route without retries:\n{yaml}"
    );
}

#[test]
fn pool_limits_and_retry_budget_from_observed_rate_latency_and_failures() {
    // 1000 requests of ~100 ms over 10 s: 100 req/s × 0.1 s ≈ 10 in flight.
    let mut g = Graph::new(GraphOptions::default());
    let now = 1_000_000;
    let mut e = edge("GET", "/v1/items/{id}", &[(100_000, 1000)], &[]);
    e.errors = 50;
    g.ingest("items-1.shop", &[e], 0, now);
    let advice = advise(&g.edges(now + 10_000));
    let a = &advice[0];
    println!("{:#?}", a.explanation);
    assert!((8.0..=12.0).contains(&a.concurrency), "{}", a.concurrency);
    assert!((a.failure_ratio - 0.05).abs() < 1e-9);
    let j = vigil_control::advice::to_json(&advice);
    let svc = &j["services"]["models"];
    let limit = svc["pool_limit"].as_u64().unwrap();
    assert!((32..=48).contains(&limit), "4 × ~10: {svc}");
    // Budget 2 × 5 % = 10 % of the pool.
    assert_eq!(svc["max_retries"].as_u64().unwrap(), limit.div_ceil(10));
    assert!(svc["explanation"]
        .as_str()
        .unwrap()
        .contains("Little's law"));
    // A quiet service still gets the floor.
    let mut q = Graph::new(GraphOptions::default());
    q.ingest(
        "items-1.shop",
        &[edge("GET", "/", &[(1_000, 10)], &[])],
        0,
        now,
    );
    let j = vigil_control::advice::to_json(&advise(&q.edges(now + 10_000)));
    assert_eq!(j["services"]["models"]["pool_limit"], 16);
    assert_eq!(j["services"]["models"]["max_retries"], 3);
    let yaml = to_yaml(&render(&advice, "shop", "default"));
    assert!(yaml.contains("http2MaxRequests"), "{yaml}");
    assert!(yaml.contains("maxPendingRequests"), "{yaml}");
    vigil_e2e::schema::validate_documents(&yaml)
        .unwrap_or_else(|e| panic!("advice fails the CRDs: {e:#?}\n{yaml}"));
}
