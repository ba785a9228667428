//! Every `DEMO_SCENARIO` but the default one (that one runs unshortened in
//! `dashboard.rs`, watched in Chromium), shortened (3 s steps, fault at +5 s, control tick 500 ms, every
//! port kernel-chosen): the real `vigil-demo` binary with real Envoy, vigil-control and
//! upstream processes. Checks the report's fields and the decision, not the timings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use serde_json::Value;

use common::{check_fault, check_report, demo_command, root};

fn run(scenario: &str) -> Value {
    let out = root().join("target/demo-test").join(scenario);
    let _ = std::fs::remove_dir_all(&out);
    let output = demo_command(&out)
        .env("DEMO_SCENARIO", scenario)
        .env("DEMO_STEP_S", "3")
        .env("DEMO_FAULT_AT_S", "5")
        .env("DEMO_CONTROL_TICK_MS", "500")
        .output()
        .expect("run vigil-demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "vigil-demo {scenario} exited {}",
        output.status
    );
    check_report(&out, &stdout, scenario)
}

// The default scenario (`latency`) runs at its full length in `dashboard.rs`, with the
// dashboard open in Chromium, and is checked there with the same `check_fault`.

#[test]
fn errors_scenario_rolls_back() {
    check_fault(&run("errors"));
}

#[test]
fn healthy_scenario_is_promoted() {
    let r = run("healthy");
    assert_eq!(r["decision"], "promote", "{r:#}");
    assert_eq!(r["final_phase"], "promoted");
    assert_eq!(r["final_canary_weight"], 100);
    assert_eq!(r["failed_requests_vigil"], 0);
    assert!(
        r["time_to_detect_s"].is_null(),
        "a healthy canary must never be flagged"
    );
}

#[test]
fn low_traffic_scenario_holds_for_evidence() {
    let r = run("low-traffic");
    assert_eq!(r["decision"], "hold", "{r:#}");
    assert_ne!(
        r["final_phase"], "rolled_back",
        "false rollback at low traffic"
    );
    assert_ne!(
        r["final_phase"], "promoted",
        "promoted on too little evidence"
    );
    assert!(r["time_to_detect_s"].is_null(), "flagged at low traffic");
}

#[test]
fn streaming_scenario_rolls_back_on_time_to_first_token() {
    // No request fails: only the canary's time to first token triples.
    let r = run("streaming");
    assert_eq!(r["decision"], "rollback", "{r:#}");
    assert_eq!(r["final_phase"], "rolled_back");
    assert_eq!(r["final_canary_weight"], 0, "weights must go to 0");
    assert!(r["time_to_detect_s"].is_number(), "{r:#}");
}
