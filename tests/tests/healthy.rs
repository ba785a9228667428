//! No false alarm: in steer mode, 60 s at 100 requests per second with a canary
//! identical to stable must never be judged critical nor steered.

use std::time::Duration;

use vigil_e2e::scenario::{state_name, Fault, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_never_steered() {
    let mut s = Scenario::new("healthy", "steer", Fault::None);
    s.healthy = Duration::from_secs(60);
    s.after_fault = Duration::ZERO;
    let r = s.run().await.unwrap();

    assert!(
        r.wasm_failures.is_empty(),
        "wasm VM failures: {:#?}",
        r.wasm_failures
    );
    assert_eq!(r.transport_errors(), 0, "requests without a response");
    let all = r.before_fault();
    let states: Vec<String> = r
        .samples
        .iter()
        .map(|s| state_name(s.canary.state).to_string())
        .collect();
    println!(
        "[healthy] RESULT: {} requests, canary share {:.1}%, steered {}, canary states per second: {}",
        all.total,
        all.canary_share() * 100.0,
        all.steered,
        states.join(",")
    );
    assert!(all.total >= 5900, "too few requests: {all:?}");
    assert!(
        r.samples.len() >= 55,
        "too few samples: {}",
        r.samples.len()
    );
    let critical: Vec<_> = r
        .samples
        .iter()
        .filter(|s| s.canary.state.is_some_and(|v| v >= 3.0))
        .map(|s| s.at)
        .collect();
    assert!(
        critical.is_empty(),
        "healthy canary judged critical at {critical:?}"
    );
    assert_eq!(
        all.steered, 0,
        "requests steered away from a healthy canary"
    );
    let steered = r
        .final_metrics
        .sum("vigil_steered_total", &[])
        .unwrap_or(0.0);
    assert_eq!(steered, 0.0, "vigil_steered_total for a healthy canary");
    assert!(
        (0.15..=0.25).contains(&all.canary_share()),
        "traffic must follow the 80/20 split: {all:?}"
    );
    // The filter really judged the canary (not merely silent): it reached "ok".
    assert!(
        r.samples
            .iter()
            .any(|s| s.canary.state.is_some_and(|v| v >= 1.0)),
        "the canary's vigil_state never left 'insufficient' in 60 s"
    );
}
