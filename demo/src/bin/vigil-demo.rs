//! `vigil-demo` (`make demo`): the whole Vigil loop on one machine — real Envoy with the
//! filter in steer mode, the real `vigil-control` in enforce mode running a canary
//! rollout, inference-like stable and canary upstreams, open-loop load, a canary fault;
//! a live timeline, a summary table and `target/demo/report.json`.
//! Settings from the environment: see `vigil_demo::run::Settings::from_env`.
//! Exit 0 when the scenario ended with its expected decision (and, for the fault
//! scenarios, time to steer ≤ 5 s and ≥ 10× fewer failed requests than the baseline).
//! (`DEMO_CHECK_TIMINGS=0`: the decision only.)
//! Everything it starts is stopped on exit, on failure, on Ctrl-C and on SIGTERM.

use std::process::ExitCode;

use vigil_demo::run::{run, Kind, Settings};

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vigil-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vigil-demo: cannot install SIGTERM handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The scenario runs on this (main) thread: its children die with it, and dropping the
    // future on a signal stops Envoy, vigil-control and the upstreams.
    let result = tokio::select! {
        r = run(&settings) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: Envoy, vigil-control and the upstreams are stopped");
            return ExitCode::from(130);
        }
        _ = term.recv() => {
            eprintln!("\nterminated: Envoy, vigil-control and the upstreams are stopped");
            return ExitCode::from(143);
        }
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut problems = Vec::new();
    let decision = report
        .get("decision")
        .unwrap_or(&serde_json::Value::Null)
        .as_str()
        .unwrap_or("");
    if decision != settings.kind.expected_decision() {
        problems.push(format!(
            "decision `{decision}`, expected `{}`",
            settings.kind.expected_decision()
        ));
    }
    // DEMO_CHECK_TIMINGS=0 (the e2e tests): judge the decision only, not the timings.
    let timings = std::env::var("DEMO_CHECK_TIMINGS").map_or(true, |v| v != "0");
    if timings && matches!(settings.kind, Kind::Latency | Kind::Errors) {
        match report
            .get("time_to_steer_s")
            .unwrap_or(&serde_json::Value::Null)
            .as_f64()
        {
            Some(t) if t <= 5.0 => {}
            other => problems.push(format!("time to steer {other:?} s, expected ≤ 5 s")),
        }
        let vigil = report
            .get("failed_requests_vigil")
            .unwrap_or(&serde_json::Value::Null)
            .as_u64()
            .unwrap_or(u64::MAX);
        let base = report
            .get("failed_requests_baseline_1m_rule")
            .unwrap_or(&serde_json::Value::Null)
            .as_u64()
            .unwrap_or(0);
        if vigil.saturating_mul(10) > base {
            problems.push(format!(
                "failed requests {vigil} vs baseline {base}: less than 10× fewer"
            ));
        }
    }
    if problems.is_empty() {
        println!("\nDEMO PASSED: decision `{decision}` as expected.");
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            println!("DEMO FAILED: {p}");
        }
        ExitCode::FAILURE
    }
}
