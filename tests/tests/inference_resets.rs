//! A client resetting its own requests never changes a verdict (issue 10, the
//! reset attack).
//!
//! The canary is healthy by the judge's own definition: 8 % of its requests
//! take 20 ms longer (a slow tail inside the latency test's margin: the
//! canary's share above stable's p95 stays under the stable's own share plus
//! `latency_margin`). A second client sends requests and resets each one
//! 10 ms in, so it abandons exactly the canary's slow ones (and the stable's
//! rare stragglers): Envoy logs them `DC` and closes the upstream connection
//! each ran on, so the canary's pool churns and its next requests open new
//! connections. Before outcome classes those `DC` requests counted as canary
//! errors (about 6 % of the canary's requests against about 1 % on the
//! stable at 300 rps: critical and steered); now they count nowhere but in
//! `client_gone`, and the wait for a new upstream connection is not judged
//! latency. The same canary is run without the attack, then at two attack
//! rates: the verdict must be `ok` throughout every run (no `warn`, no
//! `critical`, nothing steered).

use std::time::Duration;

use vigil_e2e::scenario::{state_name, Fault, Report, Scenario};

/// Every sample after the canary first had a verdict is `ok` (state 1):
/// never `warn` (2) or `critical` (3), nothing steered.
fn assert_ok_throughout(r: &Report) {
    let bad: Vec<_> = r
        .samples
        .iter()
        .filter(|s| s.canary.state.is_some_and(|v| v >= 2.0))
        .map(|s| (s.at, state_name(s.canary.state)))
        .collect();
    assert!(bad.is_empty(), "[{}] canary not ok at {bad:?}", r.name);
    assert_eq!(
        r.after_fault(Duration::ZERO, Duration::from_secs(60))
            .steered,
        0,
        "[{}] steered",
        r.name
    );
    let judged = r
        .samples
        .iter()
        .filter(|s| s.canary.state == Some(1.0))
        .count();
    assert!(judged >= 10, "[{}] only {judged} ok samples", r.name);
    assert!(r.wasm_failures.is_empty(), "{:?}", r.wasm_failures);
}

fn reset_attack(name: &str, reset_rps: f64) -> Scenario {
    let mut s = Scenario::new(
        name,
        "steer",
        Fault::SlowShare(0.08, Duration::from_millis(20)),
    );
    s.healthy = Duration::from_secs(2);
    s.after_fault = Duration::from_secs(20);
    s.reset_rps = reset_rps;
    s.reset_after = Duration::from_millis(10);
    s
}

/// `vigil_failures_total{class="client_gone"}` of one cluster.
fn gone(r: &Report, cluster: &str) -> f64 {
    r.final_metrics
        .value(
            "vigil_failures_total",
            &[
                ("route", "checkout"),
                ("cluster", cluster),
                ("class", "client_gone"),
            ],
        )
        .unwrap_or(0.0)
}

fn requests(r: &Report, cluster: &str) -> f64 {
    r.final_metrics
        .value(
            "vigil_requests_total",
            &[("route", "checkout"), ("cluster", cluster)],
        )
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_its_own_requests_never_changes_a_verdict() {
    // The same canary without, then with, the attack at two rates (one run
    // after the other: the verdict must not depend on the reset client).
    let base = reset_attack("reset-baseline", 0.0).run().await.unwrap();
    let mut attacks = Vec::new();
    for rps in [100.0, 300.0] {
        let r = reset_attack(&format!("reset-attack-{rps}"), rps)
            .run()
            .await
            .unwrap();
        attacks.push((rps, r));
    }
    let max_p99 = |r: &Report| {
        r.samples
            .iter()
            .filter_map(|s| s.canary.p99_ms)
            .fold(0.0f64, f64::max)
    };
    println!(
        "[reset-attack] RESULT baseline: max canary state {}, max canary p99 {:.1} ms",
        state_name(base.max_canary_state()),
        max_p99(&base)
    );
    for (_, r) in &attacks {
        let errors = r.final_metrics.value(
            "vigil_errors_total",
            &[("route", "checkout"), ("cluster", "canary")],
        );
        let (gc, gs) = (gone(r, "canary"), gone(r, "stable"));
        let (nc, ns) = (requests(r, "canary"), requests(r, "stable"));
        let state_changes: Vec<&str> = r
            .envoy_log
            .lines()
            .filter(|l| l.contains("cluster=canary") && l.contains(" -> "))
            .filter_map(|l| l.split("vigil: series").nth(1))
            .collect();
        println!(
            "[{}] RESULT: {} abandoned requests sent; client_gone canary {gc} of {nc} logged ({:.1} %), stable {gs} of {ns} ({:.1} %) — counted as errors before outcome classes; canary errors_total {errors:?}; max canary state {}, max canary p99 {:.1} ms, steered {}; state changes {state_changes:?}",
            r.name,
            r.resets_sent,
            100.0 * gc / nc.max(1.0),
            100.0 * gs / ns.max(1.0),
            state_name(r.max_canary_state()),
            max_p99(r),
            r.after_fault(Duration::ZERO, Duration::from_secs(60)).steered,
        );
    }
    assert_ok_throughout(&base);
    for (rps, r) in &attacks {
        assert!(
            r.resets_sent as f64 >= 0.9 * rps * 22.0,
            "[{}] {} abandoned requests sent",
            r.name,
            r.resets_sent
        );
        let (gc, nc) = (gone(r, "canary"), requests(r, "canary"));
        // The attack bites: the canary's abandoned requests would have been
        // a clear error share under the old counting.
        assert!(
            gc >= 0.03 * nc,
            "[{}] the attack did not reach the canary: client_gone {gc} of {nc}",
            r.name
        );
        assert_eq!(
            r.final_metrics.value(
                "vigil_errors_total",
                &[("route", "checkout"), ("cluster", "canary")],
            ),
            Some(0.0),
            "[{}] a client's reset is never an upstream error",
            r.name
        );
        assert_ok_throughout(r);
    }
}
