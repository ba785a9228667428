//! The whole loop: real Envoy with the filter in steer mode, reporting to and taking
//! weights from the real `vigil-control` service, real upstreams, open-loop load.
//!
//! - a healthy canary walks its steps and is promoted, the client sees the weights;
//! - a canary fault mid-rollout gives a rollback decision and the canary's traffic
//!   stays at 0 after the filter's own steering hold has expired (the weights did it);
//! - an approval gate holds the weight until approved, refusing bad tokens;
//! - an operator's reject reaches every worker within two ticks;
//! - the service killed (-9) for 30 s: zero failed requests, the last weights kept,
//!   and after the restart on the same data the rollout carries on to promotion.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_e2e::control::{ControlService, TOKEN};
use vigil_e2e::envoy::{add_cluster, Envoy, EnvoyOptions};
use vigil_e2e::load::{scheduled_between, OpenLoop, Outcome, Tally};
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::upstream::Upstream;

const TICK_MS: u64 = 500;

fn control_yaml(steps: &[u32], step_duration_s: u64, gates: &str) -> String {
    format!(
        "canaries:\n  - name: checkout\n    route: checkout\n    stable_cluster: stable\n    canary_cluster: canary\n    steps: {steps:?}\n    step_duration_s: {step_duration_s}\n    slo: {{max_error_ratio: 0.01, max_p99_ms: 800}}\n    mode: enforce\n{gates}"
    )
}

struct Loop {
    stable: Upstream,
    canary: Upstream,
    control: ControlService,
    envoy: Envoy,
    t0: Instant,
}

impl Loop {
    async fn start(name: &str, steps: &[u32], step_duration_s: u64, hold_s: u64) -> Loop {
        Self::start_gated(name, steps, step_duration_s, hold_s, "").await
    }

    async fn start_gated(
        name: &str,
        steps: &[u32],
        step_duration_s: u64,
        hold_s: u64,
        gates: &str,
    ) -> Loop {
        let stable = Upstream::start("stable").await.unwrap();
        let canary = Upstream::start("canary").await.unwrap();
        let control =
            ControlService::start(name, &control_yaml(steps, step_duration_s, gates), TICK_MS)
                .await
                .unwrap();
        let port = control.port();
        let config = plugin_config(
            "steer",
            &json!({
                "steering": {"hold_s": hold_s},
                "control": {"cluster": "vigil-control", "token": TOKEN, "timeout_ms": 300, "weights_ttl_s": 60}
            }),
        );
        let envoy = Envoy::start(
            EnvoyOptions::new(name, config)
                .upstreams(stable.port(), canary.port())
                .transform(move |b| {
                    // Node metadata as Istio sets it: the filter reports as POD.NAMESPACE.
                    b["node"] = json!({"id": "sidecar~10.0.0.7~checkout-7d9f.shop~shop.svc.cluster.local",
                                       "cluster": "e2e", "metadata": {"NAME": "checkout-7d9f", "NAMESPACE": "shop"}});
                    add_cluster(b, "vigil-control", port)
                }),
        )
        .await
        .unwrap();
        Loop {
            stable,
            canary,
            control,
            envoy,
            t0: Instant::now(),
        }
    }

    /// Starts `secs` of open-loop load at 100 rps, scheduled from `self.t0`.
    fn load(&self, secs: u64) -> tokio::task::JoinHandle<Vec<Outcome>> {
        let addr = self.envoy.listener_addr();
        let t0 = self.t0;
        tokio::spawn(async move {
            OpenLoop::new(100.0, Duration::from_secs(secs))
                .run(addr, t0, None)
                .await
                .unwrap()
        })
    }

    fn since(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Polls the canary until `pred` holds; returns when it did.
    async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Duration {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(c) = self.control.canary("checkout").await {
                if pred(&c) {
                    return self.since();
                }
                if Instant::now() > deadline {
                    panic!(
                        "timed out waiting for {what}; canary now: {c:#}\ncontrol log:\n{}",
                        tail(&self.control.logs())
                    );
                }
            } else if Instant::now() > deadline {
                panic!("timed out waiting for {what}; control unreachable");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn tail(s: &str) -> String {
    vigil_e2e::envoy::tail(s, 30)
}

fn phase(c: &Value) -> &str {
    c["phase"].as_str().unwrap_or("")
}

fn weight(c: &Value) -> f64 {
    c["weight"]
        .as_f64()
        .or_else(|| c["canary_weight"].as_f64())
        .unwrap_or(-1.0)
}

fn share(outcomes: &[Outcome], from: Duration, to: Duration) -> Tally {
    Tally::of(scheduled_between(outcomes, from, to))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_walks_its_steps_and_is_promoted() {
    let l = Loop::start("loop-healthy", &[20, 50, 100], 4, 30).await;
    let load = l.load(26);
    let at50 = l
        .wait_for("the 50% step", Duration::from_secs(20), |c| {
            weight(c) == 50.0
        })
        .await;
    let promoted = l
        .wait_for("promotion", Duration::from_secs(20), |c| {
            phase(c) == "promoted"
        })
        .await;
    let outcomes = load.await.unwrap();
    let all = Tally::of(&outcomes);
    // While at 50% (from two ticks after the change until the step can end).
    let mid = share(
        &outcomes,
        at50 + Duration::from_millis(1500),
        at50 + Duration::from_millis(3500),
    );
    let after = share(
        &outcomes,
        promoted + Duration::from_millis(1500),
        Duration::from_secs(26),
    );
    let canary = l.control.canary("checkout").await.unwrap();
    println!(
        "healthy: 50% step at {at50:?}, promoted at {promoted:?}; canary share during 50%: {:.1}% of {}, after promotion {:.1}% of {}; failed {}; decisions: {}",
        mid.canary_share() * 100.0,
        mid.total,
        after.canary_share() * 100.0,
        after.total,
        all.failed,
        canary["decisions"].as_array().map_or(0, Vec::len)
    );
    assert_eq!(all.failed, 0, "failed requests");
    assert!(
        mid.total >= 150 && (0.40..=0.60).contains(&mid.canary_share()),
        "50% step: {mid:?}"
    );
    assert!(
        after.total >= 300 && after.canary_share() >= 0.99,
        "after promotion: {after:?}"
    );
    let decisions = canary["decisions"].to_string();
    assert!(
        decisions.contains("promot"),
        "no promotion decision: {decisions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_fault_mid_rollout_rolls_back_and_weights_stay_at_zero() {
    let l = Loop::start("loop-fault", &[20, 50], 60, 2).await;
    let load = l.load(24);
    l.wait_for("the 20% step", Duration::from_secs(10), |c| {
        weight(c) == 20.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fault = l.since();
    l.canary.set_error_ratio(0.2);
    let rolled_back = l
        .wait_for("rollback", Duration::from_secs(12), |c| {
            phase(c) == "rolled_back"
        })
        .await;
    let routing = l.control.routing().await.unwrap();
    let canary = l.control.canary("checkout").await.unwrap();
    let outcomes = load.await.unwrap();
    // The filter's own steering holds for 2 s; what keeps the canary at 0 after that
    // is the weight of 0 the control service serves.
    let later = share(
        &outcomes,
        rolled_back + Duration::from_secs(4),
        Duration::from_secs(24),
    );
    let reason = canary["reason"].as_str().unwrap_or_default().to_string();
    println!(
        "fault at {fault:?}, rollback decided at {rolled_back:?} ({:.1} s after the fault): {reason}; routing {routing}; from rollback+4s: canary {} of {}",
        (rolled_back - fault).as_secs_f64(),
        later.canary,
        later.total
    );
    assert!(!reason.is_empty(), "the decision carries an explanation");
    assert_eq!(weight(&canary), 0.0, "weight after rollback");
    let served = routing["canaries"][0]["canary_weight"].as_f64();
    assert_eq!(served, Some(0.0), "routing serves weight 0: {routing}");
    assert!(later.total >= 1000, "{later:?}");
    assert_eq!(
        later.canary, 0,
        "canary still served after rollback: {later:?}"
    );
    assert_eq!(later.failed, 0, "{later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rollout_reaches_every_worker_within_two_ticks() {
    let l = Loop::start("loop-reject", &[50], 60, 30).await;
    let load = l.load(16);
    let at50 = l
        .wait_for("the 50% step", Duration::from_secs(10), |c| {
            weight(c) == 50.0
        })
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = l
        .control
        .post(
            "/v1/canaries/checkout/reject",
            &json!({"comment": "manual stop"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "reject");
    let rejected = l.since();
    let outcomes = load.await.unwrap();
    let before = share(&outcomes, at50 + Duration::from_millis(1500), rejected);
    // The last request sent to the canary after the reject, in filter ticks (1 s).
    let last_canary = outcomes
        .iter()
        .filter(|o| o.scheduled >= rejected && o.served_by_is("canary"))
        .map(|o| o.scheduled - rejected)
        .max()
        .unwrap_or_default();
    let after = share(
        &outcomes,
        rejected + Duration::from_secs(2),
        Duration::from_secs(16),
    );
    println!(
        "reject: canary share before {:.1}% of {}; last canary request {:.2} s after the reject; after +2 s canary {} of {}",
        before.canary_share() * 100.0,
        before.total,
        last_canary.as_secs_f64(),
        after.canary,
        after.total
    );
    assert!((0.40..=0.60).contains(&before.canary_share()), "{before:?}");
    assert!(
        last_canary <= Duration::from_secs(2),
        "weights applied after {last_canary:?}"
    );
    assert_eq!(after.canary, 0, "{after:?}");
    assert_eq!(Tally::of(&outcomes).failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_service_down_30s_no_failures_then_rollout_continues() {
    let mut l = Loop::start("loop-down", &[50, 100], 8, 30).await;
    let load = l.load(60);
    l.wait_for("the 50% step", Duration::from_secs(10), |c| {
        weight(c) == 50.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    l.control.kill9();
    let down = l.since();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let up = l.since();
    l.control.restart().await.unwrap();
    let promoted = l
        .wait_for(
            "promotion after the restart",
            Duration::from_secs(25),
            |c| phase(c) == "promoted",
        )
        .await;
    let outcomes = load.await.unwrap();
    let during = share(&outcomes, down, up);
    let all = Tally::of(&outcomes);
    let failed_codes: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.is_success())
        .take(3)
        .collect();
    println!(
        "down {down:?}..{up:?}: {} requests, {} failed, canary share {:.1}% (weights kept); promoted at {promoted:?}; total {} requests, {} failed {failed_codes:?}",
        during.total,
        during.failed,
        during.canary_share() * 100.0,
        all.total,
        all.failed
    );
    assert_eq!(all.failed, 0, "failed requests: {failed_codes:?}");
    assert!(during.total >= 2900, "{during:?}");
    assert!(
        (0.40..=0.60).contains(&during.canary_share()),
        "last weights kept: {during:?}"
    );
    let audit = std::process::Command::new(vigil_e2e::control::control_binary().unwrap())
        .arg("audit")
        .arg("verify")
        .arg("--data")
        .arg(l.control.data_dir())
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "audit chain broken after kill -9: {}",
        String::from_utf8_lossy(&audit.stdout)
    );
    let _ = (&l.stable, &l.canary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_gate_holds_the_weight_until_approved() {
    let l = Loop::start_gated(
        "loop-gate",
        &[20, 50],
        4,
        30,
        "    approve_before_steps: [50]\n",
    )
    .await;
    let load = l.load(20);
    let waiting = l
        .wait_for("the approval gate", Duration::from_secs(15), |c| {
            phase(c) == "waiting_approval"
        })
        .await;
    let before = l.control.canary("checkout").await.unwrap();
    let body = json!({"by": "mallory", "comment": "let me in"});
    for token in [None, Some("wrong-token")] {
        let status = l
            .control
            .post_as("/v1/canaries/checkout/approve", &body, token)
            .await
            .unwrap();
        assert_eq!(status, 401, "approve with token {token:?}");
    }
    // The reporter credential the plugin configuration carries (visible in
    // Envoy's /config_dump) cannot approve.
    let status = l
        .control
        .post_as("/v1/canaries/checkout/approve", &body, Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(status, 403, "approve with the reporter credential");
    // Every worker VM reports under the pod's identity from the node metadata.
    assert!(
        l.envoy
            .log()
            .contains("reporting to the control service as sidecar 'checkout-7d9f.shop'"),
        "{}",
        tail(&l.envoy.log())
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = l.control.canary("checkout").await.unwrap();
    assert_eq!(phase(&still), "waiting_approval", "{still:#}");
    assert_eq!(
        weight(&still),
        weight(&before),
        "the refused approvals changed the weight"
    );
    assert_eq!(
        still["decisions"].as_array().map(Vec::len),
        before["decisions"].as_array().map(Vec::len),
        "the refused approvals added decisions"
    );
    let approved_status = l
        .control
        .post(
            "/v1/canaries/checkout/approve",
            &json!({"by": "alice", "comment": "looks good"}),
        )
        .await
        .unwrap();
    assert_eq!(approved_status, 200);
    let approved = l.since();
    let at50 = l
        .wait_for("the 50% step", Duration::from_secs(5), |c| {
            weight(c) == 50.0
        })
        .await;
    let outcomes = load.await.unwrap();
    let held = share(&outcomes, waiting + Duration::from_millis(1500), approved);
    // The 50% step lasts 4 s, then the rollout is promoted.
    let after = share(
        &outcomes,
        at50 + Duration::from_millis(1500),
        at50 + Duration::from_millis(3500),
    );
    println!(
        "gate: waiting at {waiting:?}, approved at {approved:?}; canary share while held {:.1}% of {}, after approval {:.1}% of {}",
        held.canary_share() * 100.0,
        held.total,
        after.canary_share() * 100.0,
        after.total
    );
    assert!(
        (0.12..=0.28).contains(&held.canary_share()),
        "held at 20%: {held:?}"
    );
    assert!(
        (0.40..=0.60).contains(&after.canary_share()),
        "50% after approval: {after:?}"
    );
    assert_eq!(Tally::of(&outcomes).failed, 0);
}
