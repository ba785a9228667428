//! Exact accounting: every request through Envoy is counted exactly once in
//! `vigil_requests_total`, and every 5xx exactly once in `vigil_errors_total`, although
//! the requests are spread over both Envoy workers (two wasm VMs merging their counts).

use std::time::{Duration, Instant};

use serde_json::json;
use vigil_e2e::envoy::{Envoy, EnvoyOptions};
use vigil_e2e::load::fixed_requests;
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::upstream::Upstream;

const N: usize = 20_000;
const CONNECTIONS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_and_error_counted_exactly_once_across_workers() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let envoy = Envoy::start(
        EnvoyOptions::new("accounting", plugin_config("steer", &json!({})))
            .upstreams(stable.port(), canary.port()),
    )
    .await
    .unwrap();
    let addr = envoy.listener_addr();

    // Every 10th request goes to a /fail path: the upstream answers it 503.
    let is_fail = |i: usize| i % 10 == 9;
    let started = Instant::now();
    let outcomes = fixed_requests(
        addr,
        N,
        CONNECTIONS,
        move |i| {
            if is_fail(i) {
                format!("/fail/{i}")
            } else {
                format!("/ok/{i}")
            }
        },
        Duration::from_secs(240),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    let injected = (0..N).filter(|&i| is_fail(i)).count();
    println!(
        "accounting: {N} requests over {CONNECTIONS} connections in {:.1}s ({:.0} req/s)",
        elapsed.as_secs_f64(),
        N as f64 / elapsed.as_secs_f64()
    );

    let transport: Vec<_> = outcomes.iter().filter(|o| o.status.is_none()).collect();
    assert!(
        transport.is_empty(),
        "{} requests got no response, first: {:?}",
        transport.len(),
        transport.first()
    );
    let wrong: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status != Some(if is_fail(o.index) { 503 } else { 200 }))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} responses with an unexpected status, first: {:?}",
        wrong.len(),
        wrong.first()
    );
    assert_eq!(stable.served() + canary.served(), N as u64);

    // Both workers (so both wasm VMs) took connections.
    let per_worker = envoy.connections_per_worker().await.unwrap();
    println!("accounting: connections per worker {per_worker:?}");
    assert!(
        per_worker.len() == 2 && per_worker.iter().all(|&c| c > 0.0),
        "both Envoy workers must get connections: {per_worker:?}"
    );

    // Counters are flushed once per tick: wait until all arrived, then one more flush
    // period, and require exact equality (an over-count would show here).
    let checkout = [("route", "checkout")];
    envoy
        .wait_metrics(Duration::from_secs(20), |m| {
            m.sum("vigil_requests_total", &checkout)
                .filter(|&v| v >= N as f64)
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = envoy.metrics().await.unwrap();
    let requests = m.sum("vigil_requests_total", &checkout);
    let errors = m.sum("vigil_errors_total", &checkout);
    let per_cluster = |name: &str, cluster: &str| {
        m.value(name, &[("route", "checkout"), ("cluster", cluster)])
            .unwrap_or(0.0)
    };
    println!(
        "accounting: vigil_requests_total{{route=checkout}} = {requests:?} (sent {N}); vigil_errors_total = {errors:?} (injected {injected})"
    );
    println!(
        "accounting: per cluster: stable {} / {} errors (upstream served {}, failed {}); canary {} / {} errors (upstream served {}, failed {})",
        per_cluster("vigil_requests_total", "stable"),
        per_cluster("vigil_errors_total", "stable"),
        stable.served(),
        stable.failed(),
        per_cluster("vigil_requests_total", "canary"),
        per_cluster("vigil_errors_total", "canary"),
        canary.served(),
        canary.failed(),
    );
    assert_eq!(
        requests,
        Some(N as f64),
        "vigil_requests_total{{route=checkout}}"
    );
    assert_eq!(
        errors,
        Some(injected as f64),
        "vigil_errors_total{{route=checkout}}"
    );
    assert_eq!(
        per_cluster("vigil_requests_total", "stable"),
        stable.served() as f64
    );
    assert_eq!(
        per_cluster("vigil_requests_total", "canary"),
        canary.served() as f64
    );
    assert_eq!(
        per_cluster("vigil_errors_total", "stable"),
        stable.failed() as f64
    );
    assert_eq!(
        per_cluster("vigil_errors_total", "canary"),
        canary.failed() as f64
    );

    let failures = envoy.wasm_failures().await.unwrap();
    assert!(failures.is_empty(), "wasm VM failures: {failures:#?}");
}
