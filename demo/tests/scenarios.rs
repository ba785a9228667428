//! Every `DEMO_SCENARIO`, shortened (3 s steps, fault at +5 s, control tick 500 ms, every
//! port kernel-chosen): the real `vigil-demo` binary with real Envoy, vigil-control and
//! upstream processes. Checks the report's fields and the decision, not the timings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// vigil-control next to the demo binary (same profile); built once per test run.
fn control_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let demo = PathBuf::from(env!("CARGO_BIN_EXE_vigil-demo"));
        let dir = demo.parent().unwrap().to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "vigil-control"])
            .current_dir(root());
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build -p vigil-control");
        assert!(st.success(), "cargo build -p vigil-control failed");
        let bin = dir.join("vigil-control");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

fn run(scenario: &str) -> Value {
    let out = root().join("target/demo-test").join(scenario);
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_vigil-demo"))
        .env("DEMO_SCENARIO", scenario)
        .env("DEMO_STEP_S", "3")
        .env("DEMO_FAULT_AT_S", "5")
        .env("DEMO_CONTROL_TICK_MS", "500")
        .env("DEMO_CHECK_TIMINGS", "0")
        .env("DEMO_OUT", &out)
        .env("VIGIL_CONTROL_BIN", control_bin())
        .envs(
            [
                "DEMO_LISTEN_PORT",
                "DEMO_ADMIN_PORT",
                "DEMO_CONTROL_PORT",
                "DEMO_STABLE_PORT",
                "DEMO_CANARY_PORT",
            ]
            .map(|k| (k, "0")),
        )
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
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    for key in [
        "scenario",
        "time_to_detect_s",
        "time_to_steer_s",
        "time_to_decision_s",
        "decision",
        "failed_requests_vigil",
        "failed_requests_baseline_1m_rule",
        "requests_total",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}: {report:#}");
    }
    assert_eq!(report["scenario"], scenario);
    assert!(report["requests_total"].as_u64().unwrap() > 0);
    assert_eq!(
        report["audit_chain_verified"], true,
        "audit chain not verified"
    );
    assert!(report["audit_rows"].as_u64().unwrap() >= 2);
    assert!(stdout.contains("Summary"), "no summary printed");
    report
}

fn fault(scenario: &str) {
    let r = run(scenario);
    assert_eq!(r["decision"], "rollback", "{r:#}");
    assert_eq!(r["final_phase"], "rolled_back");
    assert_eq!(r["final_canary_weight"], 0, "weights must go to 0");
    for k in ["time_to_detect_s", "time_to_steer_s", "time_to_decision_s"] {
        assert!(r[k].is_number(), "{k} missing: {r:#}");
    }
    assert!(
        r["failed_requests_baseline_1m_rule"].as_u64().unwrap()
            > r["failed_requests_vigil"].as_u64().unwrap()
    );
    assert_eq!(r["baseline_1m_rule"]["rule_would_fail"], true);
    assert!(
        !r["gitops_files"].as_array().unwrap().is_empty(),
        "no GitOps YAML rendered"
    );
}

#[test]
fn latency_scenario_rolls_back() {
    fault("latency");
}

#[test]
fn errors_scenario_rolls_back() {
    fault("errors");
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
