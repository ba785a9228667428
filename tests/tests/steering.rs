//! Steering and shadow mode against a canary that turns sick at a fixed time, with real
//! Envoy, real upstreams and an open-loop load of 100 requests per second.
//!
//! Each test prints its timeline (one line per second) and a summary with the measured
//! time to detect and time to steer.

use std::time::Duration;

use vigil_e2e::scenario::{Fault, Report, Scenario};

/// Checks shared by every scenario: the run itself was clean and the healthy phase
/// looked like the configured 80/20 split with no steering.
fn check_healthy_phase(r: &Report) {
    assert!(
        r.wasm_failures.is_empty(),
        "wasm VM failures: {:#?}",
        r.wasm_failures
    );
    assert_eq!(r.transport_errors(), 0, "requests without a response");
    let before = r.before_fault();
    assert!(
        before.total >= 1000,
        "too few requests before the fault: {before:?}"
    );
    assert!(
        (0.12..=0.28).contains(&before.canary_share()),
        "canary share before the fault should follow the 80/20 split: {before:?}"
    );
    assert_eq!(before.steered, 0, "steered before any fault: {before:?}");
}

/// Steer mode: the canary must be judged critical, and from fault+5 s to fault+15 s at
/// least 99% of requests must be served by stable.
fn check_steered(r: &Report) {
    check_healthy_phase(r);
    let detected = r.canary_state_reached(3.0);
    assert!(
        detected.is_some(),
        "canary never reached vigil_state 3 (max {:?})",
        r.max_canary_state()
    );
    let first = r.first_steered_after_fault();
    assert!(first.is_some(), "no request was steered after the fault");
    let window = r.after_fault(Duration::from_secs(5), Duration::from_secs(15));
    println!(
        "[{}] RESULT: critical after {:?}, first steered request after {:?}, 99% stable after {:?}; fault+5..15s: {:.2}% stable of {}",
        r.name,
        detected,
        first,
        r.time_to_99_stable(),
        window.stable_share() * 100.0,
        window.total
    );
    assert!(
        window.total >= 900,
        "too few requests in fault+5..15s: {window:?}"
    );
    assert!(
        window.stable_share() >= 0.99,
        "only {:.2}% of requests from fault+5s to fault+15s were served by stable: {window:?}",
        window.stable_share() * 100.0
    );
    // Every steering decision is counted once: vigil_steered_total equals the number of
    // requests that reached an upstream with x-vigil-subset: stable.
    let steered = r
        .final_metrics
        .sum("vigil_steered_total", &[])
        .unwrap_or(0.0);
    let seen = vigil_e2e::load::Tally::of(&r.outcomes).steered;
    let series: Vec<String> = r
        .final_metrics
        .matching("vigil_steered_total", &[])
        .map(|s| format!("{:?} {}", s.labels, s.value))
        .collect();
    println!(
        "[{}] vigil_steered_total {steered} {series:?}; requests the upstreams saw steered {seen}",
        r.name
    );
    assert_eq!(
        steered, seen as f64,
        "vigil_steered_total must count each steered request once"
    );
    let to_stable = r
        .final_metrics
        .matching(
            "vigil_steered_total",
            &[("route", "checkout"), ("to", "stable")],
        )
        .count();
    assert!(
        to_stable > 0,
        "vigil_steered_total must carry route=checkout, to=stable: {series:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steer_latency_fault_moves_traffic_to_stable() {
    let r = Scenario::new(
        "steer-latency",
        "steer",
        Fault::Latency(Duration::from_millis(200)),
    )
    .run()
    .await
    .unwrap();
    check_steered(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steer_error_fault_moves_traffic_to_stable() {
    let r = Scenario::new("steer-errors", "steer", Fault::Errors(0.2))
        .run()
        .await
        .unwrap();
    check_steered(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_detects_but_never_steers() {
    let r = Scenario::new(
        "shadow-latency",
        "shadow",
        Fault::Latency(Duration::from_millis(200)),
    )
    .run()
    .await
    .unwrap();
    check_healthy_phase(&r);
    let detected = r.canary_state_reached(3.0);
    let after = r.after_fault(Duration::ZERO, Duration::from_secs(3600));
    println!(
        "[{}] RESULT: critical after {:?}; after the fault canary share {:.1}% of {} (weights say 20%); upstreams saw x-vigil-subset {} times",
        r.name,
        detected,
        after.canary_share() * 100.0,
        after.total,
        r.upstream_seen_subset
    );
    assert!(
        detected.is_some(),
        "shadow mode must still judge the canary critical (max state {:?})",
        r.max_canary_state()
    );
    let carried: Vec<_> = r
        .outcomes
        .iter()
        .filter(|o| o.seen_subset.is_some())
        .collect();
    assert!(
        carried.is_empty(),
        "shadow mode set x-vigil-subset on {} requests, first: {:?}",
        carried.len(),
        carried.first()
    );
    assert_eq!(r.upstream_seen_subset, 0);
    assert!(
        after.total >= 1000,
        "too few requests after the fault: {after:?}"
    );
    assert!(
        (0.15..=0.25).contains(&after.canary_share()),
        "shadow mode must leave the 80/20 split alone: {after:?}"
    );
    let steered = r
        .final_metrics
        .sum("vigil_steered_total", &[])
        .unwrap_or(0.0);
    assert_eq!(steered, 0.0, "vigil_steered_total in shadow mode");
}

/// The stable's self path is told about the steered share (issue 11): after a
/// warm-up long enough for the self path to judge, steering the sick canary's
/// 20 % to stable gives the stable +25 % requests, and its published
/// `vigil_state` stays below `warn` (before the fix it warned on rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steering_does_not_make_the_stable_warn() {
    let mut s = Scenario::new(
        "steer-stable-quiet",
        "steer",
        Fault::Latency(Duration::from_millis(200)),
    );
    s.extra_config = serde_json::json!({"model": {"warmup_s": 20}});
    s.healthy = Duration::from_secs(45);
    s.after_fault = Duration::from_secs(30);
    s.print = false;
    let r = s.run().await.unwrap();
    check_steered(&r);
    let fault = r.fault_at.unwrap_or_default();
    let judged_before = r
        .samples
        .iter()
        .filter(|x| x.at + Duration::from_secs(5) < fault)
        .filter(|x| x.stable.state.is_some_and(|v| v >= 1.0))
        .count();
    let stable_after: Vec<(f64, Option<f64>, Option<f64>)> = r
        .samples
        .iter()
        .filter(|x| x.at >= fault)
        .map(|x| (x.at.as_secs_f64(), x.stable.state, x.stable.score))
        .collect();
    let worst = stable_after
        .iter()
        .filter_map(|(_, st, _)| *st)
        .fold(0.0f64, f64::max);
    println!(
        "[{}] RESULT: stable judged (state >= ok) in {judged_before} samples before the fault; after it, worst stable state {worst}, max score {:?}",
        r.name,
        stable_after.iter().filter_map(|(_, _, sc)| *sc).reduce(f64::max)
    );
    assert!(
        judged_before >= 5,
        "the stable's self path never judged before the fault (warm-up too long?)"
    );
    assert!(
        worst < 2.0,
        "the stable warned while steering moved the canary's share to it: {stable_after:?}"
    );
}
