//! `make demo` watched in a real browser: runs the real `vigil-demo` binary with its
//! default scenario and lengths (`latency`: 8 s steps, fault at +12 s; kernel-chosen
//! ports, `DEMO_LINGER_S=15` so the run stays up while the browser finishes), reads the
//! dashboard URL the demo prints, opens it *during* the demo in Debian's Chromium
//! (`tests/browser/demo.mjs`, playwright-core) and asserts from the DOM: the canary is
//! shown, its live plots gain points, the rollback decision appears in its timeline with
//! its reason and numbers and as a mark on the plots, the audit chain shows intact, no
//! console error. Screenshots: `target/dashboard/demo-dashboard.png`, `demo-canary.png`.
//! The demo's own report is checked as for every scenario (`common::check_fault`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_e2e::browser::{run_script, LineChild, Next};

use common::{check_fault, check_report, demo_command, root};

#[test]
fn make_demo_dashboard_in_chromium_shows_canary_plots_and_rollback() {
    let out = root().join("target/demo-dashboard");
    let shots = root().join("target/dashboard");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&shots).unwrap();
    for f in ["demo-dashboard.png", "demo-canary.png"] {
        let _ = std::fs::remove_file(shots.join(f));
    }
    let mut cmd = demo_command(&out);
    // The default scenario, at the default lengths: nothing shortened.
    for k in [
        "DEMO_SCENARIO",
        "DEMO_STEP_S",
        "DEMO_FAULT_AT_S",
        "DEMO_RPS",
        "DEMO_CONTROL_TICK_MS",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("DEMO_LINGER_S", "15");
    let mut demo = LineChild::spawn("vigil-demo", cmd).unwrap();

    let deadline = Instant::now() + Duration::from_secs(180);
    let mut stdout = String::new();
    let mut browser: Option<LineChild> = None;
    let mut url = None;
    let mut result: Option<Value> = None;
    let mut browser_lines = Vec::new();
    while !(demo.is_closed() && browser.as_ref().is_none_or(LineChild::is_closed)) {
        assert!(
            Instant::now() < deadline,
            "the demo and the browser did not finish in time"
        );
        if let Next::Line(line) = demo.next(Duration::from_millis(100)) {
            println!("demo: {line}");
            stdout.push_str(&line);
            stdout.push('\n');
            // "  dashboard  http://127.0.0.1:PORT/dashboard/  (open it in a browser …)"
            if url.is_none() {
                if let Some(rest) = line.trim_start().strip_prefix("dashboard") {
                    let u = rest.split_whitespace().next().unwrap().to_string();
                    assert!(
                        u.starts_with("http://") && u.ends_with("/dashboard/"),
                        "{line}"
                    );
                    browser = Some(
                        run_script(
                            "demo.mjs",
                            [
                                ("DASH_URL", u.as_str()),
                                ("DASH_OUT", shots.to_str().unwrap()),
                            ],
                        )
                        .unwrap_or_else(|e| panic!("{e}")),
                    );
                    url = Some(u);
                }
            }
        }
        if let Some(b) = browser.as_mut() {
            if let Next::Line(line) = b.next(Duration::from_millis(100)) {
                println!("browser: {line}");
                if let Some(r) = line.strip_prefix("RESULT ") {
                    result = Some(serde_json::from_str(r).unwrap());
                }
                browser_lines.push(line);
            }
        }
    }
    let url = url.expect("the demo never printed the dashboard URL");
    println!("dashboard URL printed by the demo: {url}");
    let demo_status = demo.wait(Duration::from_secs(30)).unwrap();
    let browser_status = browser.unwrap().wait(Duration::from_secs(30)).unwrap();
    assert!(
        browser_status.success(),
        "browser run failed: {browser_status}"
    );
    assert!(demo_status.success(), "vigil-demo exited {demo_status}");

    // The page, as the browser saw it during the demo.
    let r = result.expect("no RESULT line from the browser");
    println!("browser result: {r:#}");
    assert_eq!(r["console_errors"], serde_json::json!([]));
    assert_eq!(r["cookies"], 0);
    let (before, after) = (&r["plot_points"]["before"], &r["plot_points"]["after"]);
    assert!(after["rate"].as_u64() > before["rate"].as_u64(), "{r}");
    assert!(
        after["latency"].as_u64() > before["latency"].as_u64(),
        "{r}"
    );
    let reason = r["rollback_reason"].as_str().unwrap();
    assert!(reason.contains("n="), "{reason}");
    assert_eq!(r["final_weight"], "0%");
    assert!(r["marks"].as_str().unwrap().contains("rollback"), "{r}");
    assert!(r["chain"].as_str().unwrap().contains("intact"), "{r}");
    assert!(
        r["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "rollback"),
        "{r}"
    );

    // The demo's own account agrees: the same rollback, with the same reason.
    let report = check_report(&out, &stdout, "latency");
    check_fault(&report);
    let decided = report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "rollback")
        .expect("no rollback decision in the report");
    assert_eq!(decided["explanation"].as_str(), Some(reason));
    assert!(stdout.contains("DECISION: rollback"), "{stdout}");
    for f in ["demo-dashboard.png", "demo-canary.png"] {
        let len = std::fs::metadata(shots.join(f)).unwrap().len();
        println!("screenshot target/dashboard/{f}: {len} bytes");
        assert!(len > 10_000, "{f} is {len} bytes");
    }
}
