//! Shared by the demo's integration tests: the real `vigil-demo` binary on kernel-chosen
//! ports, the `vigil-control` binary next to it, and the checks every report must pass.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// vigil-control next to the demo binary (same profile); built once per test run, unless
/// `VIGIL_CONTROL_BIN` names one already built (`make test` builds every test binary and
/// vigil-control in one cargo invocation first, so no test waits for a build).
pub fn control_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("VIGIL_CONTROL_BIN").map(PathBuf::from) {
            assert!(bin.is_file(), "VIGIL_CONTROL_BIN={} missing", bin.display());
            return bin;
        }
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

/// `vigil-demo` as `make demo` runs it, but on kernel-chosen ports, writing to `out`,
/// judging the decision only (`DEMO_CHECK_TIMINGS=0`: timings are the bench's job).
pub fn demo_command(out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil-demo"));
    cmd.env("DEMO_CHECK_TIMINGS", "0")
        .env("DEMO_OUT", out)
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
        );
    cmd
}

/// The fields, audit chain and summary every run's report and output must have.
pub fn check_report(out: &Path, stdout: &str, scenario: &str) -> Value {
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

/// A fault scenario: rolled back, weights at 0, fewer failures than the 1-minute rule.
pub fn check_fault(r: &Value) {
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
