//! `vigil-demo` (`make demo`): real Envoy with the Vigil filter in steer mode in front of
//! a "stable" and a "canary" upstream on loopback; 100 requests per second; after 15 s
//! the canary turns sick (+200 ms, or 20% 503 with `--fault errors`). Prints a live
//! timeline (fault → detected → steered) and a summary, writes
//! `target/demo/report.json`, and exits 0 when Vigil detected the fault and moved at
//! least 99% of the traffic off the canary from 5 s after the fault on.
//! Everything it starts is stopped on exit, on failure and on Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use vigil_e2e::scenario::{Fault, Report, Scenario};

fn usage() -> ExitCode {
    eprintln!("usage: vigil-demo [--fault latency|errors] [--healthy SECS] [--after SECS]");
    ExitCode::from(2)
}

fn parse_args() -> Option<Scenario> {
    let mut fault = Fault::Latency(Duration::from_millis(200));
    let mut healthy = 15;
    let mut after = 15;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fault" => {
                fault = match args.next()?.as_str() {
                    "latency" => Fault::Latency(Duration::from_millis(200)),
                    "errors" => Fault::Errors(0.2),
                    _ => return None,
                }
            }
            "--healthy" => healthy = args.next()?.parse().ok()?,
            "--after" => after = args.next()?.parse().ok()?,
            _ => return None,
        }
    }
    let mut s = Scenario::new("demo", "steer", fault);
    s.healthy = Duration::from_secs(healthy);
    s.after_fault = Duration::from_secs(after);
    Some(s)
}

/// Checks the demo's success criteria; returns the failed ones.
fn verdict(r: &Report) -> Vec<String> {
    let mut failed = Vec::new();
    if r.canary_state_reached(3.0).is_none() {
        failed.push("the canary never reached state CRITICAL".to_string());
    }
    let window = r.after_fault(Duration::from_secs(5), Duration::from_secs(15));
    if window.total == 0 || window.stable_share() < 0.99 {
        failed.push(format!(
            "only {:.2}% of the {} requests from fault+5s to fault+15s were served by stable (need 99%)",
            window.stable_share() * 100.0,
            window.total
        ));
    }
    if !r.wasm_failures.is_empty() {
        failed.push(format!("wasm VM failures: {:?}", r.wasm_failures));
    }
    failed
}

fn write_report(r: &Report, failed: &[String]) {
    let dir = vigil_e2e::repo_root().join("target/demo");
    let mut json = r.to_json();
    if let Some(obj) = json.as_object_mut() {
        obj.insert("passed".into(), failed.is_empty().into());
        obj.insert("failed_checks".into(), failed.into());
    }
    let path = dir.join("report.json");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap_or_default()));
    match written {
        Ok(()) => println!("report written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let Some(scenario) = parse_args() else {
        return usage();
    };
    println!(
        "Vigil demo: Envoy + vigil filter (steer mode), stable and canary upstreams, 100 rps."
    );
    println!("Routes: 80% stable / 20% canary; Vigil sets x-vigil-subset: stable when the canary is sick.");
    println!("Columns: responses completed in the last second by upstream; Vigil's gauges per cluster.\n");
    // The scenario runs on this (main) thread: Envoy dies with it (PR_SET_PDEATHSIG), and
    // dropping the future on Ctrl-C stops Envoy, the upstreams and the load.
    let result = tokio::select! {
        r = scenario.run() => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: Envoy and the upstreams are stopped");
            return ExitCode::from(130);
        }
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo failed to run: {e}");
            return ExitCode::FAILURE;
        }
    };
    let failed = verdict(&report);
    write_report(&report, &failed);
    if failed.is_empty() {
        println!("DEMO PASSED: fault detected and traffic steered to stable.");
        ExitCode::SUCCESS
    } else {
        for f in &failed {
            println!("DEMO FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}
