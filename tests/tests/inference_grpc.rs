//! gRPC canary over a real grpcio server (HTTP/2 upstream clusters), issue 10:
//! a canary failing 20 % of calls with `UNAVAILABLE` (HTTP 200, `grpc-status`
//! in trailers, half of them trailers-only responses) is critical and ≥ 99 %
//! of calls are served by stable within 5 s; the filter's per-class counters
//! equal what the servers returned, call for call.

use std::time::Duration;

use vigil_e2e::envoy::{Envoy, EnvoyOptions};
use vigil_e2e::grpc::{http2_upstreams, GrpcCall, GrpcLoad, GrpcUpstream};
use vigil_e2e::scenario::{plugin_config, state_name};

const RPS: f64 = 100.0;
const HEALTHY_S: f64 = 10.0;
const LOAD_S: f64 = 22.0;

fn stable_share(calls: &[&GrpcCall]) -> f64 {
    let stable = calls
        .iter()
        .filter(|c| c.served_by.as_deref() == Some("stable"))
        .count();
    stable as f64 / calls.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_canary_is_steered_and_counted_exactly() {
    let mut stable = GrpcUpstream::start("stable").unwrap();
    let mut canary = GrpcUpstream::start("canary").unwrap();
    let envoy = Envoy::start(
        EnvoyOptions::new(
            "grpc-unavailable",
            plugin_config("steer", &serde_json::json!({})),
        )
        .upstreams(stable.port(), canary.port())
        .transform(http2_upstreams),
    )
    .await
    .unwrap();
    let mut load = GrpcLoad::start(envoy.listener_addr(), RPS, LOAD_S, "Unary").unwrap();
    let t0 = load.started;
    let labels = [("route", "checkout"), ("cluster", "canary")];
    let mut fault_at = None;
    let mut critical_at = None;
    let mut states = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !load.is_done() {
        tick.tick().await;
        let now = t0.elapsed();
        if fault_at.is_none() && now >= Duration::from_secs_f64(HEALTHY_S) {
            canary.set_failure(0.2, "UNAVAILABLE").unwrap();
            fault_at = Some(t0.elapsed());
            println!(
                "[grpc] t={:.1}s >>> FAULT: canary fails 20 % with UNAVAILABLE",
                now.as_secs_f64()
            );
        }
        let m = envoy.metrics().await.unwrap_or_default();
        let state = m.value("vigil_state", &labels);
        states.push(state_name(state));
        if let (Some(f), None) = (fault_at, critical_at) {
            if state.is_some_and(|s| s >= 3.0) {
                critical_at = Some(t0.elapsed().saturating_sub(f));
            }
        }
        if now > Duration::from_secs_f64(LOAD_S + 20.0) {
            panic!("load did not finish");
        }
    }
    let calls = load.finish(Duration::from_secs(20)).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = envoy.metrics().await.unwrap();
    let (stable_stats, canary_stats) = (stable.stats().unwrap(), canary.stats().unwrap());
    let fault = fault_at.unwrap();

    // Time to >= 99 % stable: first 1 s window after the fault (100 ms steps).
    let mut to_99 = None;
    let mut from = Duration::ZERO;
    while fault + from + Duration::from_secs(1) <= Duration::from_secs_f64(LOAD_S) {
        let w: Vec<&GrpcCall> = calls
            .iter()
            .filter(|c| c.t >= fault + from && c.t < fault + from + Duration::from_secs(1))
            .collect();
        if !w.is_empty() && stable_share(&w) >= 0.99 {
            to_99 = Some(from);
            break;
        }
        from += Duration::from_millis(100);
    }
    let failed_client = calls.iter().filter(|c| c.code == "UNAVAILABLE").count() as u64;
    let canary_unavailable = canary_stats.get("UNAVAILABLE").copied().unwrap_or(0);
    let canary_total: u64 = canary_stats.values().sum();
    let stable_total: u64 = stable_stats.values().sum();
    let value = |cluster: &str, class: &str| {
        m.value(
            "vigil_failures_total",
            &[
                ("route", "checkout"),
                ("cluster", cluster),
                ("class", class),
            ],
        )
    };
    let server_errors = value("canary", "server_error");
    let errors = m.value("vigil_errors_total", &labels);
    let requests = m.value("vigil_requests_total", &labels);
    let stable_requests = m.value(
        "vigil_requests_total",
        &[("route", "checkout"), ("cluster", "stable")],
    );
    let reason = envoy
        .log()
        .lines()
        .find(|l| l.contains("critical on route"))
        .map(|l| l.split("wasm log vigil: ").last().unwrap_or(l).to_string());
    println!(
        "[grpc] RESULT: {} calls; canary returned {canary_stats:?}, stable {stable_stats:?}; client saw {failed_client} UNAVAILABLE",
        calls.len()
    );
    println!(
        "[grpc] RESULT: vigil canary requests {requests:?} errors {errors:?} failures{{server_error}} {server_errors:?}; stable requests {stable_requests:?} failures{{server_error}} {:?}",
        value("stable", "server_error")
    );
    println!(
        "[grpc] RESULT: canary CRITICAL after {:?}, >=99 % stable after {:?}; states {}; reason {reason:?}",
        critical_at,
        to_99,
        states.join(",")
    );
    assert!(
        canary_unavailable >= 5,
        "the fault barely ran: {canary_stats:?}"
    );
    assert_eq!(failed_client, canary_unavailable, "client vs server");
    assert_eq!(
        server_errors,
        Some(canary_unavailable as f64),
        "per-class count is exact"
    );
    assert_eq!(errors, Some(canary_unavailable as f64));
    assert_eq!(requests, Some(canary_total as f64));
    assert_eq!(stable_requests, Some(stable_total as f64));
    assert_eq!(value("stable", "server_error"), None, "stable never failed");
    assert!(
        critical_at.is_some_and(|d| d <= Duration::from_secs(5)),
        "critical after {critical_at:?}"
    );
    assert!(
        to_99.is_some_and(|d| d <= Duration::from_secs(5)),
        ">= 99 % stable after {to_99:?}"
    );
    assert!(envoy.wasm_failures().await.unwrap().is_empty());
}
