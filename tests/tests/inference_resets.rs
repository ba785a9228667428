//! A client resetting its own requests never changes a verdict (issue 10, the
//! reset attack): a healthy canary 2 ms slower than stable, and a second client
//! that sends requests and resets each one 2 ms in, so the stable has mostly
//! answered and the canary has not. Envoy logs those requests `DC`; before
//! outcome classes they counted as canary errors and got it steered. The same
//! canary is run without, then with, the attack.

use std::time::Duration;

use vigil_e2e::scenario::{state_name, Fault, Report, Scenario};

fn assert_never_critical(r: &Report) {
    let critical: Vec<_> = r
        .samples
        .iter()
        .filter(|s| s.canary.state.is_some_and(|v| v >= 3.0))
        .map(|s| s.at)
        .collect();
    assert!(critical.is_empty(), "[{}] critical at {critical:?}", r.name);
    assert_eq!(r.before_fault().steered, 0, "[{}] steered", r.name);
    assert!(r.wasm_failures.is_empty(), "{:?}", r.wasm_failures);
}

fn reset_attack(name: &str, reset_rps: f64) -> Scenario {
    // A healthy canary 2 ms slower than stable (below the latency test's
    // 5 ms minimum increase); the attacker sends `reset_rps` requests a
    // second and resets each 2 ms in, so the stable (~1 ms) has mostly
    // answered and the canary (~3 ms) has not.
    let mut s = Scenario::new(name, "steer", Fault::Latency(Duration::from_millis(2)));
    s.healthy = Duration::from_secs(5);
    s.after_fault = Duration::from_secs(20);
    s.reset_rps = reset_rps;
    s.reset_after = Duration::from_millis(2);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_its_own_requests_never_changes_a_verdict() {
    // The same canary without, then with, the attack (one after the other:
    // the verdict must not depend on the reset client).
    let base = reset_attack("reset-baseline", 0.0).run().await.unwrap();
    let r = reset_attack("reset-attack", 100.0).run().await.unwrap();
    let labels = |cluster| {
        [
            ("route", "checkout"),
            ("cluster", cluster),
            ("class", "client_gone"),
        ]
    };
    let gone_canary = r
        .final_metrics
        .value("vigil_failures_total", &labels("canary"));
    let gone_stable = r
        .final_metrics
        .value("vigil_failures_total", &labels("stable"));
    let errors = r.final_metrics.value(
        "vigil_errors_total",
        &[("route", "checkout"), ("cluster", "canary")],
    );
    let reasons: Vec<&str> = r
        .envoy_log
        .lines()
        .filter(|l| l.contains("cluster=canary") && l.contains(" -> "))
        .filter_map(|l| l.split("vigil: series").nth(1))
        .collect();
    println!(
        "[reset-attack] RESULT: baseline max canary state {}; attack: {} abandoned requests sent, client_gone canary {gone_canary:?} stable {gone_stable:?}, canary errors_total {errors:?}, max canary state {}, steered {}; state changes {reasons:?}",
        state_name(base.max_canary_state()),
        r.resets_sent,
        state_name(r.max_canary_state()),
        r.after_fault(Duration::ZERO, Duration::from_secs(60)).steered,
    );
    assert_never_critical(&base);
    assert!(r.resets_sent >= 2000, "{}", r.resets_sent);
    assert!(
        gone_canary.unwrap_or(0.0) >= 50.0,
        "the attack did not reach the canary: {gone_canary:?}"
    );
    assert_eq!(
        errors,
        Some(0.0),
        "a client's reset is never an upstream error"
    );
    assert_never_critical(&r);
    assert_eq!(
        r.after_fault(Duration::ZERO, Duration::from_secs(60))
            .steered,
        0
    );
}
