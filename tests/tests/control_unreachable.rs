//! The control service cannot be reached: the filter must keep serving by the static
//! routes, with zero extra failures at the client, and say so once in its log.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use vigil_e2e::envoy::{add_cluster, unused_port, Envoy, EnvoyOptions};
use vigil_e2e::load::{OpenLoop, Tally};
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_control_service_never_fails_a_request() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let (_guard, port) = unused_port().unwrap();
    let config = plugin_config(
        "steer",
        &json!({"control": {"cluster": "vigil-control", "token": "t0ken", "timeout_ms": 200}}),
    );
    let envoy = Envoy::start(
        EnvoyOptions::new("control-unreachable", config)
            .upstreams(stable.port(), canary.port())
            .transform(move |b| add_cluster(b, "vigil-control", port)),
    )
    .await
    .unwrap();
    let load = OpenLoop::new(100.0, Duration::from_secs(8));
    let outcomes = load
        .run(envoy.listener_addr(), Instant::now(), None)
        .await
        .unwrap();
    let t = Tally::of(&outcomes);
    println!(
        "control unreachable: {} requests, {} failed, canary share {:.1}%, steered {}",
        t.total,
        t.failed,
        t.canary_share() * 100.0,
        t.steered
    );
    assert_eq!(
        t.failed, 0,
        "requests failed while the control service was down"
    );
    assert_eq!(t.steered, 0, "no weights and no fault: static routes only");
    assert!(
        (0.12..=0.28).contains(&t.canary_share()),
        "static 80/20 split expected"
    );
    let log = envoy.log();
    let failures = log
        .matches("routing fetch from the control service failed")
        .count();
    // Once per VM that held the lease (normally one), not once per tick.
    assert!(
        (1..=3).contains(&failures),
        "logged {failures} times:\n{}",
        vigil_e2e::envoy::tail(&log, 40)
    );
    assert!(!log.contains("t0ken"), "the token leaked into the log");
}
