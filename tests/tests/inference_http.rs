//! Inference-traffic outcomes over real HTTP upstreams (issue 10):
//! - a hard failure at low traffic (100 % 503 at 1 and 2 canary rps) is
//!   steered within 15 s / 10 s, while A/A pairs at 1–2 rps are never
//!   critical nor steered over 120 s (all four in parallel, one Envoy each);
//! - 30 % 429 on the canary is `warn` with a throttling reason, and steered
//!   only with `steer_on_throttle`.
//!
//! The client-reset attack is in `inference_resets.rs` (its own binary, so it
//! never shares the machine with these Envoys: its baseline is latency-sensitive).

use std::time::Duration;

use serde_json::json;
use vigil_e2e::scenario::{state_name, Fault, Report, Scenario};

fn low_traffic(name: &str, canary_rps: f64, fault: Fault, healthy: u64, after: u64) -> Scenario {
    let mut s = Scenario::new(name, "steer", fault);
    // 50/50 split: the canary and the stable each get `canary_rps`.
    s.canary_weight = Some(50);
    s.rps = 2.0 * canary_rps;
    s.healthy = Duration::from_secs(healthy);
    s.after_fault = Duration::from_secs(after);
    s
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64()))
}

fn assert_never_critical(r: &Report) {
    let critical: Vec<_> = r
        .samples
        .iter()
        .filter(|s| s.canary.state.is_some_and(|v| v >= 3.0))
        .map(|s| s.at)
        .collect();
    assert!(critical.is_empty(), "[{}] critical at {critical:?}", r.name);
    assert_eq!(r.before_fault().steered, 0, "[{}] steered", r.name);
    assert!(r.wasm_failures.is_empty(), "{:?}", r.wasm_failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_failures_at_low_traffic_are_steered_and_a_a_pairs_are_not() {
    let dead2 = low_traffic("dead-2rps", 2.0, Fault::Errors(1.0), 10, 20);
    let dead1 = low_traffic("dead-1rps", 1.0, Fault::Errors(1.0), 10, 25);
    let aa2 = low_traffic("aa-2rps", 2.0, Fault::None, 120, 0);
    let aa1 = low_traffic("aa-1rps", 1.0, Fault::None, 120, 0);
    let (d2, d1, a2, a1) = tokio::join!(dead2.run(), dead1.run(), aa2.run(), aa1.run());
    let (d2, d1, a2, a1) = (d2.unwrap(), d1.unwrap(), a2.unwrap(), a1.unwrap());
    for (r, limit) in [(&d2, 10u64), (&d1, 15)] {
        let steered = r.first_steered_after_fault();
        println!(
            "[{}] RESULT: canary CRITICAL after {}, first steered request after {} (limit {limit} s), requests {}",
            r.name,
            secs(r.canary_state_reached(3.0)),
            secs(steered),
            r.outcomes.len()
        );
        assert!(
            steered.is_some_and(|d| d <= Duration::from_secs(limit)),
            "[{}] first steered request after {}",
            r.name,
            secs(steered)
        );
        assert!(r.wasm_failures.is_empty(), "{:?}", r.wasm_failures);
    }
    for r in [&a2, &a1] {
        let states: Vec<&str> = r
            .samples
            .iter()
            .map(|s| state_name(s.canary.state))
            .collect();
        println!(
            "[{}] RESULT: {} requests over {} samples, steered {}, max canary state {}, states {}",
            r.name,
            r.outcomes.len(),
            r.samples.len(),
            r.before_fault().steered,
            state_name(r.max_canary_state()),
            states.join(",")
        );
        assert!(
            r.samples.len() >= 115,
            "too few samples: {}",
            r.samples.len()
        );
        assert_never_critical(r);
        let steered = r
            .final_metrics
            .sum("vigil_steered_total", &[])
            .unwrap_or(0.0);
        assert_eq!(steered, 0.0, "[{}] vigil_steered_total", r.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_warns_and_steers_only_when_asked() {
    let mk = |name: &str, steer: bool| {
        let mut s = Scenario::new(name, "steer", Fault::Throttle(0.3));
        s.healthy = Duration::from_secs(10);
        s.after_fault = Duration::from_secs(15);
        if steer {
            s.extra_config = json!({"steer_on_throttle": true});
        }
        s
    };
    let (warn_only, steer) = (mk("throttle-warn", false), mk("throttle-steer", true));
    let (w, st) = tokio::join!(warn_only.run(), steer.run());
    let (w, st) = (w.unwrap(), st.unwrap());

    // Default: warn with a throttling reason, never critical, never steered.
    let canary = [("route", "checkout"), ("cluster", "canary")];
    let throttled = w.final_metrics.value("vigil_throttled_total", &canary);
    let class = w.final_metrics.value(
        "vigil_failures_total",
        &[
            ("route", "checkout"),
            ("cluster", "canary"),
            ("class", "throttled"),
        ],
    );
    let sent_429 = w.outcomes.iter().filter(|o| o.status == Some(429)).count() as f64;
    let warn_line = w
        .envoy_log
        .lines()
        .find(|l| {
            l.contains("cluster=canary") && l.contains("-> warn") && l.contains("throttling:")
        })
        .map(str::to_string);
    println!(
        "[throttle-warn] RESULT: max canary state {}, 429 answered {sent_429}, vigil_throttled_total {throttled:?}, failures_total{{class=throttled}} {class:?}, errors_total {:?}; warn line: {warn_line:?}",
        state_name(w.max_canary_state()),
        w.final_metrics.value("vigil_errors_total", &canary),
    );
    assert_eq!(w.max_canary_state(), Some(2.0), "warn, not critical");
    assert!(warn_line.is_some(), "no warn with a throttling reason");
    assert_eq!(throttled, Some(sent_429), "every 429 counted once");
    assert_eq!(class, Some(sent_429));
    assert_eq!(
        w.final_metrics.value("vigil_errors_total", &canary),
        Some(0.0)
    );
    assert_eq!(
        w.after_fault(Duration::ZERO, Duration::from_secs(60))
            .steered,
        0
    );

    // steer_on_throttle: critical and steered.
    let steered = st.first_steered_after_fault();
    println!(
        "[throttle-steer] RESULT: canary CRITICAL after {}, first steered after {}",
        secs(st.canary_state_reached(3.0)),
        secs(steered)
    );
    assert!(
        steered.is_some_and(|d| d <= Duration::from_secs(10)),
        "not steered"
    );
    assert!(
        st.envoy_log.contains("throttling:"),
        "the steering reason names throttling"
    );
}
