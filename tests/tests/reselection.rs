//! Route re-selection through `x-vigil-subset`.
//!
//! By default a client-sent `x-vigil-subset` is removed by the filter, so Envoy
//! re-selects the route without it: the upstream never sees the header and traffic
//! follows the 80/20 weights (this proves the route cache is cleared after the header
//! changes). With `trust_client_subset_header: true` the header is kept and routes.

// Helpers shared by this file's tests fail the test the way the tests themselves do.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use vigil_e2e::envoy::{Envoy, EnvoyOptions};
use vigil_e2e::load::{OpenLoop, Tally};
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::upstream::Upstream;

async fn run(envoy: &Envoy, subset: &str, n: usize) -> Vec<vigil_e2e::load::Outcome> {
    let mut load = OpenLoop::new(200.0, Duration::from_secs_f64(n as f64 / 200.0));
    load.headers = vec![("x-vigil-subset".to_string(), subset.to_string())];
    let outcomes = load
        .run(envoy.listener_addr(), Instant::now(), None)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), n);
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.is_success()).collect();
    assert!(
        failed.is_empty(),
        "failed requests, first: {:?}",
        failed.first()
    );
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subset_header_is_removed_by_default() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let envoy = Envoy::start(
        EnvoyOptions::new("untrusted", plugin_config("steer", &json!({})))
            .upstreams(stable.port(), canary.port()),
    )
    .await
    .unwrap();
    let outcomes = run(&envoy, "canary", 400).await;
    let t = Tally::of(&outcomes);
    let forwarded = outcomes
        .iter()
        .filter(|o| o.seen_subset_is("canary"))
        .count();
    println!(
        "untrusted: 400 requests sent with x-vigil-subset: canary → canary {:.1}%, stable {:.1}%, upstream saw the client's value {forwarded} times (x-vigil-subset seen at all: {})",
        t.canary_share() * 100.0,
        t.stable_share() * 100.0,
        stable.seen_subset() + canary.seen_subset()
    );
    assert_eq!(
        forwarded, 0,
        "the client's x-vigil-subset reached the upstream"
    );
    assert!(
        (0.10..=0.30).contains(&t.canary_share()),
        "traffic must follow the 80/20 weights, not the client's header: {t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_client_subset_header_routes() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let envoy = Envoy::start(
        EnvoyOptions::new(
            "trusted",
            plugin_config("steer", &json!({ "trust_client_subset_header": true })),
        )
        .upstreams(stable.port(), canary.port()),
    )
    .await
    .unwrap();
    for subset in ["canary", "stable"] {
        let outcomes = run(&envoy, subset, 100).await;
        let t = Tally::of(&outcomes);
        let seen = outcomes.iter().filter(|o| o.seen_subset_is(subset)).count();
        println!(
            "trusted: 100 requests with x-vigil-subset: {subset} → stable {} canary {}, upstream saw the header {seen} times",
            t.stable, t.canary
        );
        let served = outcomes.iter().filter(|o| o.served_by_is(subset)).count();
        assert_eq!(served, 100, "all requests must go to {subset}: {t:?}");
        assert_eq!(seen, 100, "the trusted header must reach the upstream");
    }
}
