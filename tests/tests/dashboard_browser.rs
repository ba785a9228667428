//! The dashboard in a real browser: Debian's `chromium` driven by Playwright
//! (`playwright-core`, installed by `scripts/setup.sh` into tests/browser/node_modules)
//! against the real `vigil-control` while a real Envoy with the filter serves open-loop
//! load and reports to it:
//!
//! - the page loads with no console errors and no request off its origin or cookie;
//! - the live plots gain points while the scenario runs;
//! - at the approval gate, Approve is refused without a credential (401 shown, phase
//!   unchanged) and works after signing in as an operator; the approval is in the audit
//!   log with the operator's name;
//! - a canary fault then gives a rollback decision whose reason (with its numbers) is
//!   in the canary's timeline; the audit chain shows intact;
//! - screenshots are saved under target/dashboard/.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_e2e::browser::{run_script, Next};
use vigil_e2e::control::{ControlService, OPERATOR_TOKEN, TOKEN};
use vigil_e2e::envoy::{add_cluster, Envoy, EnvoyOptions};
use vigil_e2e::load::OpenLoop;
use vigil_e2e::repo_root;
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_shows_plots_approval_and_rollback() {
    let out = repo_root().join("target/dashboard");
    std::fs::create_dir_all(&out).unwrap();
    for f in [
        "dashboard-approval.png",
        "dashboard-rollback.png",
        "dashboard-canary.png",
    ] {
        let _ = std::fs::remove_file(out.join(f));
    }

    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let control = ControlService::start(
        "dashboard",
        "canaries:\n  - name: checkout\n    route: checkout\n    stable_cluster: stable\n    canary_cluster: canary\n    steps: [10, 50, 100]\n    step_duration_s: 3\n    approve_before_steps: [50]\n    slo: {max_error_ratio: 0.02}\n    mode: enforce\n",
        500,
    )
    .await
    .unwrap();
    let port = control.port();
    let config = plugin_config(
        "steer",
        &json!({"control": {"cluster": "vigil-control", "token": TOKEN, "timeout_ms": 300, "weights_ttl_s": 60}}),
    );
    let envoy = Envoy::start(
        EnvoyOptions::new("dashboard", config)
            .upstreams(stable.port(), canary.port())
            .transform(move |b| add_cluster(b, "vigil-control", port)),
    )
    .await
    .unwrap();
    let addr = envoy.listener_addr();
    let load = tokio::spawn(async move {
        OpenLoop::new(100.0, Duration::from_secs(150))
            .run(addr, Instant::now(), None)
            .await
    });

    let url = format!("http://{}/dashboard/", control.addr());
    println!("dashboard: {url}");
    let mut browser = run_script(
        "dashboard.mjs",
        [
            ("DASH_URL", url.as_str()),
            ("DASH_TOKEN", OPERATOR_TOKEN),
            ("DASH_REPORTER_TOKEN", TOKEN),
            ("DASH_OUT", out.to_str().unwrap()),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut result: Option<Value> = None;
    let mut fault_at = None;
    loop {
        match browser.next(Duration::from_millis(200)) {
            Next::Line(line) => {
                println!("browser: {line}");
                if line == "APPROVED" {
                    canary.set_error_ratio(0.5);
                    fault_at = Some(Instant::now());
                }
                if let Some(r) = line.strip_prefix("RESULT ") {
                    result = Some(serde_json::from_str(r).unwrap());
                }
            }
            Next::Closed => break,
            Next::Idle => assert!(
                Instant::now() < deadline,
                "the browser run did not finish in time"
            ),
        }
    }
    let status = browser.wait(Duration::from_secs(20)).unwrap();
    load.abort();
    assert!(status.success(), "browser run failed: {status}");
    let result = result.expect("no RESULT line");
    assert!(fault_at.is_some(), "never approved");
    assert_eq!(result["console_errors"], json!([]));
    assert_eq!(result["cookies"], 0);
    assert!(result["refused"].as_str().unwrap().contains("401"));
    assert!(result["refused_reporter"]
        .as_str()
        .unwrap()
        .contains("refused"));
    assert!(result["rollback_reason"].as_str().unwrap().contains("n="));
    assert!(result["chain"].as_str().unwrap().contains("intact"));
    // The same facts from the API: the approval by the operator, then the rollback.
    let v = control.canary("checkout").await.unwrap();
    assert_eq!(v["phase"], "rolled_back", "{v:#}");
    let kinds: Vec<&str> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"approve") && kinds.contains(&"rollback"),
        "{kinds:?}"
    );
    assert!(v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["kind"] == "approve" && d["actor"] == "alice"));
    for f in [
        "dashboard-approval.png",
        "dashboard-rollback.png",
        "dashboard-canary.png",
    ] {
        let len = std::fs::metadata(out.join(f)).unwrap().len();
        println!("screenshot target/dashboard/{f}: {len} bytes");
        assert!(len > 10_000, "{f} is {len} bytes");
    }
}
