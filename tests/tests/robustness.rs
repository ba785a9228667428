//! Robustness: inputs that must not break the filter or Envoy — non-UTF-8 header
//! values, a route without an upstream cluster, a cluster nobody listens on, and a
//! flood of 10 000 distinct routes against a 256-series bound.
//!
//! "Not broken" means: Envoy answers as it would without the filter, no wasm VM failure
//! (no trap/panic in the log, Envoy's `wasm.*.vm_reload*` stats 0), and the filter keeps
//! counting requests afterwards.

// Helpers shared by this file's tests fail the test the way the tests themselves do.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use vigil_e2e::envoy::{prepend_flood_routes, tail, Envoy, EnvoyOptions};
use vigil_e2e::http::raw_request;
use vigil_e2e::load::fixed_requests;
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::upstream::Upstream;

/// Sum of `vigil_requests_total` over all series once it stopped moving (counters are
/// flushed once per tick, so earlier requests may still be on their way).
async fn settled_total(envoy: &Envoy) -> f64 {
    let mut last = f64::NAN;
    for _ in 0..10 {
        let now = envoy
            .metrics()
            .await
            .unwrap()
            .sum("vigil_requests_total", &[])
            .unwrap_or(0.0);
        if now == last {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    panic!("vigil_requests_total kept moving for 12 s without load");
}

/// Sends `n` plain requests to `/` and waits until the filter counted them: the VMs are
/// alive and still counting. Then checks for any sign of a wasm VM failure.
async fn assert_still_counting(envoy: &Envoy, n: usize) {
    let before = settled_total(envoy).await;
    for _ in 0..n {
        let r = envoy.get("/", &[]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    let counted = envoy
        .wait_metrics(Duration::from_secs(10), |m| {
            m.sum("vigil_requests_total", &[])
                .filter(|&v| v >= before + n as f64)
        })
        .await
        .unwrap_or_else(|e| panic!("the filter stopped counting: {e}"));
    println!(
        "still counting: vigil_requests_total went from {before} to {counted} after {n} requests"
    );
    let failures = envoy.wasm_failures().await.unwrap();
    assert!(failures.is_empty(), "wasm VM failures: {failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_header_values_are_harmless() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    for trust in [false, true] {
        let config = plugin_config("steer", &json!({ "trust_client_subset_header": trust }));
        let envoy = Envoy::start(
            EnvoyOptions::new("non-utf8", config).upstreams(stable.port(), canary.port()),
        )
        .await
        .unwrap();
        // Several requests so both workers are likely to see one.
        for i in 0..8u8 {
            let mut req = Vec::new();
            req.extend_from_slice(b"GET /weird HTTP/1.1\r\nHost: vigil.test\r\nx-odd: ");
            req.extend_from_slice(&[0x80, 0xff, 0xfe, b'a', 0xc3, 0x28, 0x80 + i]);
            req.extend_from_slice(b"\r\nx-vigil-subset: ");
            req.extend_from_slice(&[0xff, 0xc0, b's', b't', 0xa0 + i]);
            req.extend_from_slice(b"\r\nuser-agent: \xe9\xe8\r\nConnection: close\r\n\r\n");
            let (status, raw) = raw_request(envoy.listener_addr(), &req, Duration::from_secs(10))
                .await
                .unwrap();
            let head = String::from_utf8_lossy(&raw);
            assert_eq!(
                status,
                200,
                "trust={trust}: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        println!("non-utf8 (trust={trust}): 8 requests with bytes 0x80-0xff in header values answered 200");
        assert_still_counting(&envoy, 4).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_response_route_without_cluster() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let envoy = Envoy::start(
        EnvoyOptions::new("static", plugin_config("steer", &json!({})))
            .upstreams(stable.port(), canary.port()),
    )
    .await
    .unwrap();
    for _ in 0..20 {
        let r = envoy.get("/static/page", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "static\n");
    }
    println!("static: 20 direct responses (no upstream cluster) answered 200");
    assert_still_counting(&envoy, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_local_reply_is_counted() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let envoy = Envoy::start(
        EnvoyOptions::new("absent", plugin_config("steer", &json!({})))
            .upstreams(stable.port(), canary.port()),
    )
    .await
    .unwrap();
    for _ in 0..10 {
        let r = envoy.get("/absent/x", &[]).await.unwrap();
        assert_eq!(
            r.status,
            503,
            "nothing listens behind cluster absent: {}",
            r.text()
        );
    }
    let labels = [("route", "absent"), ("cluster", "absent")];
    let (requests, errors) = envoy
        .wait_metrics(Duration::from_secs(10), |m| {
            let r = m.value("vigil_requests_total", &labels)?;
            let e = m.value("vigil_errors_total", &labels)?;
            (r >= 10.0 && e >= 10.0).then_some((r, e))
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = envoy.metrics().await.unwrap();
    println!(
        "absent: 10 local 503s; vigil_requests_total{{absent}} = {requests} → {:?}, vigil_errors_total = {errors} → {:?}",
        m.value("vigil_requests_total", &labels),
        m.value("vigil_errors_total", &labels)
    );
    assert_eq!(m.value("vigil_requests_total", &labels), Some(10.0));
    assert_eq!(m.value("vigil_errors_total", &labels), Some(10.0));
    assert_still_counting(&envoy, 4).await;
}

const ROUTES: usize = 10_000;
const MAX_SERIES: f64 = 256.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_routes_stay_within_the_series_bound() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let config = plugin_config("steer", &json!({ "max_series": MAX_SERIES as u64 }));
    let opts = EnvoyOptions::new("flood", config)
        .upstreams(stable.port(), canary.port())
        .transform(|b| prepend_flood_routes(b, ROUTES, "stable"));
    let envoy = Envoy::start(opts).await.unwrap();
    let started = std::time::Instant::now();
    let outcomes = fixed_requests(
        envoy.listener_addr(),
        ROUTES,
        16,
        |i| format!("/r{i}/x"),
        Duration::from_secs(180),
    )
    .await
    .unwrap();
    let bad: Vec<_> = outcomes.iter().filter(|o| o.status != Some(200)).collect();
    println!(
        "flood: {ROUTES} requests to {ROUTES} distinct routes in {:.1}s, {} not 200",
        started.elapsed().as_secs_f64(),
        bad.len()
    );
    assert!(bad.is_empty(), "first bad: {:?}", bad.first());

    let (series, dropped) = envoy
        .wait_metrics(Duration::from_secs(15), |m| {
            let dropped = m.sum("vigil_series_dropped_total", &[])?;
            let series = m.value("vigil_series", &[])?;
            (dropped > 0.0).then_some((series, dropped))
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "series table never reported drops: {e}\n{}",
                tail(&envoy.log(), 20)
            )
        });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = envoy.metrics().await.unwrap();
    let series_now = m.value("vigil_series", &[]).unwrap_or(f64::NAN);
    let request_series = m.matching("vigil_requests_total", &[]).count();
    let vigil_samples = m.count_prefix("vigil_");
    println!(
        "flood: vigil_series = {series} (later {series_now}), vigil_series_dropped_total = {dropped}, vigil_requests_total series exported = {request_series}, vigil_* samples = {vigil_samples}"
    );
    assert!(
        series_now <= MAX_SERIES,
        "vigil_series {series_now} > max_series {MAX_SERIES}"
    );
    assert!(
        series <= MAX_SERIES,
        "vigil_series {series} > max_series {MAX_SERIES}"
    );
    let not_flood: Vec<String> = m
        .matching("vigil_requests_total", &[])
        .filter(|s| !s.labels.get("route").is_some_and(|r| r.starts_with('r')))
        .map(|s| format!("{:?} {}", s.labels, s.value))
        .collect();
    let counted = m.sum("vigil_requests_total", &[]).unwrap_or(0.0);
    println!(
        "flood: vigil_requests_total series other than r<i>: {not_flood:?}; sum over all series {counted} (sent {ROUTES})"
    );
    // The bound is on tracked series; one aggregate "overflow" series may come on top.
    let tracked = m
        .matching("vigil_requests_total", &[])
        .filter(|s| s.labels.get("route").map(String::as_str) != Some("overflow"))
        .count();
    assert!(
        tracked as f64 <= MAX_SERIES && request_series as f64 <= MAX_SERIES + 1.0,
        "{request_series} vigil_requests_total series exported ({tracked} besides an overflow series), bound is {MAX_SERIES}"
    );
    assert!(dropped > 0.0);

    // Envoy still serves, both a flood route and the managed route.
    let r = envoy
        .get(&format!("/r{}/again", ROUTES - 1), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_still_counting(&envoy, 4).await;
}
