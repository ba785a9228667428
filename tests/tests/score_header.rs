//! The `x-vigil-score` response header appears only when `score_header` is enabled, and
//! then carries the series' anomaly score (0–1000).

use std::time::{Duration, Instant};

use serde_json::json;
use vigil_e2e::envoy::{Envoy, EnvoyOptions};
use vigil_e2e::load::OpenLoop;
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_header_only_when_enabled() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    for enabled in [false, true] {
        let envoy = Envoy::start(
            EnvoyOptions::new(
                "score-header",
                plugin_config("steer", &json!({ "score_header": enabled })),
            )
            .upstreams(stable.port(), canary.port()),
        )
        .await
        .unwrap();
        // Long enough for several ticks, so series have been scored.
        let outcomes = OpenLoop::new(100.0, Duration::from_secs(6))
            .run(envoy.listener_addr(), Instant::now(), None)
            .await
            .unwrap();
        assert!(outcomes.iter().all(|o| o.is_success()));
        let scores: Vec<&str> = outcomes.iter().filter_map(|o| o.score.as_deref()).collect();
        let late = outcomes
            .iter()
            .filter(|o| o.scheduled >= Duration::from_secs(4))
            .collect::<Vec<_>>();
        let late_scored = late.iter().filter(|o| o.score.is_some()).count();
        println!(
            "score_header={enabled}: {} of {} responses carried x-vigil-score ({late_scored} of the {} after 4 s); values seen: {:?}",
            scores.len(),
            outcomes.len(),
            late.len(),
            scores.iter().collect::<std::collections::BTreeSet<_>>()
        );
        if enabled {
            assert_eq!(
                late_scored,
                late.len(),
                "after 4 s every response should carry x-vigil-score"
            );
            for s in &scores {
                let v: u32 = s
                    .parse()
                    .unwrap_or_else(|_| panic!("x-vigil-score {s:?} is not a number"));
                assert!(v <= 1000, "x-vigil-score {v} out of 0..=1000");
            }
        } else {
            assert!(scores.is_empty(), "x-vigil-score sent although disabled");
        }
    }
}
