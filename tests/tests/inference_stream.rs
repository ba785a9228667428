//! Streamed (SSE) canary over a real chunked upstream, issue 10: when half of
//! the canary's streams are cut mid-way (the upstream closes without the
//! terminating chunk; Envoy logs `UPE`), the canary is critical and steered
//! within 5 s, every cut is counted as a `reset`, and the canary's latency
//! gauges never improve because of the cuts (a cut stream is not a latency).

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::Interval;
use vigil_e2e::envoy::{Envoy, EnvoyOptions};
use vigil_e2e::grpc::GrpcUpstream;
use vigil_e2e::load::{OpenLoop, Outcome};
use vigil_e2e::scenario::{plugin_config, state_name};

/// The canary series' labels.
const CANARY: [(&str, &str); 2] = [("route", "checkout"), ("cluster", "canary")];

/// One run: a stable and a canary SSE upstream, Envoy (steer mode) in front,
/// an open-loop load already running, and a once-a-second ticker.
struct SseRun {
    #[allow(dead_code)] // kept alive for the run
    stable: GrpcUpstream,
    canary: GrpcUpstream,
    envoy: Envoy,
    t0: Instant,
    task: JoinHandle<vigil_e2e::Result<Vec<Outcome>>>,
    tick: Interval,
}

/// Starts both upstreams with `shape` (`first_ms gap_ms events`), Envoy
/// named `name`, and `rps` requests a second for `secs` seconds.
async fn start_sse_run(name: &str, shape: &str, rps: f64, secs: u64) -> vigil_e2e::Result<SseRun> {
    let mut stable = GrpcUpstream::start_sse("stable")?;
    let mut canary = GrpcUpstream::start_sse("canary")?;
    for u in [&mut stable, &mut canary] {
        let answer = u.command(&format!("shape {shape}"))?;
        if answer != "OK" {
            return Err(format!("shape {shape}: {answer}").into());
        }
    }
    let envoy = Envoy::start(
        EnvoyOptions::new(name, plugin_config("steer", &serde_json::json!({})))
            .upstreams(stable.port(), canary.port()),
    )
    .await?;
    let load = OpenLoop::new(rps, Duration::from_secs(secs));
    let t0 = Instant::now() + Duration::from_millis(300);
    let addr = envoy.listener_addr();
    let task = tokio::spawn(async move { load.run(addr, t0, None).await });
    let tick =
        tokio::time::interval_at((t0 + Duration::from_secs(1)).into(), Duration::from_secs(1));
    Ok(SseRun {
        stable,
        canary,
        envoy,
        t0,
        task,
        tick,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_streams_are_steered_and_never_look_fast() {
    // ~50 ms to the first token, 10 tokens 10 ms apart: ~140 ms a stream.
    let SseRun {
        stable: _stable,
        mut canary,
        envoy,
        t0,
        task,
        mut tick,
    } = start_sse_run("stream-cuts", "50 10 10", 100.0, 25)
        .await
        .unwrap();
    let healthy = Duration::from_secs(10);
    let labels = CANARY;
    let mut fault_at = None;
    let mut critical_at = None;
    let mut p50_before = Vec::new();
    let mut p50_after = Vec::new();
    let mut states = Vec::new();
    while !task.is_finished() {
        tick.tick().await;
        let now = t0.elapsed();
        if fault_at.is_none() && now >= healthy {
            assert_eq!(canary.command("cut 0.5").unwrap(), "OK");
            fault_at = Some(t0.elapsed());
            println!(
                "[stream] t={:.1}s >>> FAULT: half the canary's streams cut mid-way",
                now.as_secs_f64()
            );
        }
        let m = envoy.metrics().await.unwrap_or_default();
        let state = m.value("vigil_state", &labels);
        let p50 = m.value("vigil_latency_p50_ms", &labels);
        states.push(format!("{}:{}", state_name(state), p50.unwrap_or(-1.0)));
        match fault_at {
            None if now >= Duration::from_secs(5) => p50_before.extend(p50),
            Some(f) => {
                // The canary's p50 whenever it is judged on data (an empty
                // window, once all traffic is steered away, reads 0 and
                // `insufficient_data`: no data, not a faster canary).
                if state.is_some_and(|s| s >= 1.0) {
                    p50_after.extend(p50);
                }
                if critical_at.is_none() && state.is_some_and(|s| s >= 3.0) {
                    critical_at = Some(t0.elapsed().saturating_sub(f));
                }
            }
            None => {}
        }
        assert!(now < Duration::from_secs(60), "load did not finish");
    }
    let outcomes = task.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = envoy.metrics().await.unwrap();
    let fault = fault_at.unwrap();
    let first_steered = outcomes
        .iter()
        .find(|o| o.scheduled >= fault && o.seen_subset_is("stable"))
        .map(|o| o.scheduled - fault);
    let cut: serde_json::Value = serde_json::from_str(&canary.command("stats").unwrap()).unwrap();
    let cut_n = cut
        .get("cut")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let resets = m.value(
        "vigil_failures_total",
        &[
            ("route", "checkout"),
            ("cluster", "canary"),
            ("class", "reset"),
        ],
    );
    let client_failed = outcomes
        .iter()
        .filter(|o| o.status != Some(200) || o.error.is_some())
        .count();
    let min_after = p50_after.iter().copied().fold(f64::INFINITY, f64::min);
    let median_before = {
        let mut v = p50_before.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    println!(
        "[stream] RESULT: canary streams {cut}, vigil_failures_total{{class=reset}} {resets:?}, client saw {client_failed} failed; CRITICAL after {critical_at:?}, first steered after {first_steered:?}"
    );
    println!(
        "[stream] RESULT: canary p50 before the fault (median) {median_before} ms, lowest after {min_after} ms; samples {}",
        states.join(",")
    );
    assert!(cut_n >= 5.0, "the fault barely ran: {cut}");
    assert_eq!(
        resets,
        Some(cut_n),
        "every cut stream counted once as a reset"
    );
    assert!(
        critical_at.is_some_and(|d| d <= Duration::from_secs(5)),
        "critical after {critical_at:?}"
    );
    assert!(
        first_steered.is_some_and(|d| d <= Duration::from_secs(5)),
        "steered after {first_steered:?}"
    );
    assert!(
        median_before >= 100.0,
        "streams should take ~140 ms: {median_before}"
    );
    assert!(
        min_after >= median_before * 0.9,
        "cuts made the canary's latency look better: {min_after} < {median_before}"
    );
    assert!(envoy.wasm_failures().await.unwrap().is_empty());
}

/// Time to first token triples (300 → 900 ms) while every stream's total
/// duration stays 1.2 s: critical within 10 s, and the reason names TTFT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttft_regression_with_equal_duration_is_critical() {
    let SseRun {
        stable: _stable,
        mut canary,
        envoy,
        t0,
        task,
        mut tick,
    } = start_sse_run("stream-ttft", "300 100 10", 50.0, 26)
        .await
        .unwrap();
    let healthy = Duration::from_secs(12);
    let labels = CANARY;
    let mut fault_at = None;
    let mut critical_at = None;
    let mut samples = Vec::new();
    while !task.is_finished() {
        tick.tick().await;
        let now = t0.elapsed();
        if fault_at.is_none() && now >= healthy {
            // 900 ms to the first token, then 9 gaps of 33.3 ms: 1.2 s in all.
            assert_eq!(canary.command("shape 900 33.333 10").unwrap(), "OK");
            fault_at = Some(t0.elapsed());
            println!(
                "[ttft] t={:.1}s >>> FAULT: canary TTFT 300 -> 900 ms, same duration",
                now.as_secs_f64()
            );
        }
        let m = envoy.metrics().await.unwrap_or_default();
        let state = m.value("vigil_state", &labels);
        samples.push(format!(
            "{}:ttft_p95={:?}/lat_p95={:?}",
            state_name(state),
            m.value("vigil_ttft_p95_ms", &labels),
            m.value("vigil_latency_p95_ms", &labels)
        ));
        if let (Some(f), None) = (fault_at, critical_at) {
            if state.is_some_and(|s| s >= 3.0) {
                critical_at = Some(t0.elapsed().saturating_sub(f));
            }
        }
        assert!(now < Duration::from_secs(70), "load did not finish");
    }
    let _ = task.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = envoy.metrics().await.unwrap();
    let log = envoy.log();
    let reason = log
        .lines()
        .find(|l| l.contains("cluster=canary") && l.contains("-> critical"))
        .and_then(|l| l.split("vigil: series").nth(1))
        .map(str::to_string);
    let stable_l = [("route", "checkout"), ("cluster", "stable")];
    println!(
        "[ttft] RESULT: canary CRITICAL after {critical_at:?}; reason {reason:?}; stable ttft p95 {:?} ms, chunks {:?}",
        m.value("vigil_ttft_p95_ms", &stable_l),
        m.value("vigil_stream_chunks_total", &stable_l),
    );
    println!("[ttft] RESULT: samples {}", samples.join(","));
    assert!(
        critical_at.is_some_and(|d| d <= Duration::from_secs(10)),
        "critical after {critical_at:?}"
    );
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("ttft: p95")),
        "the reason names TTFT: {reason:?}"
    );
    let stable_ttft = m.value("vigil_ttft_p95_ms", &stable_l).unwrap_or(0.0);
    assert!(
        (250.0..450.0).contains(&stable_ttft),
        "stable TTFT p95 {stable_ttft} ms (300 ms served)"
    );
    let stable_requests = m.value("vigil_requests_total", &stable_l).unwrap_or(0.0);
    let chunks = m
        .value("vigil_stream_chunks_total", &stable_l)
        .unwrap_or(0.0);
    assert!(
        chunks >= 10.0 * stable_requests * 0.9,
        "10 events a stream: {chunks} chunks for {stable_requests} streams"
    );
    assert!(envoy.wasm_failures().await.unwrap().is_empty());
}
