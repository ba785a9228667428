//! Contract tests of the Flagger webhooks and the Argo Rollouts `web`
//! metric provider against the real `vigil-control` binary over real HTTP:
//! a healthy, a failing and an insufficient-evidence canary, with the exact
//! payloads Flagger sends (`{name, namespace, phase, checksum, metadata}`)
//! and the JSON an Argo `AnalysisTemplate` reads (`ok`, `verdict`,
//! `inconclusive`, `score`, `n`, `reason`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const HOOKS: [&str; 4] = [
    "confirm-rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "rollback",
];

/// A payload exactly as Flagger's `CallWebhook` posts it.
fn flagger_payload(name: &str, metadata: Value) -> Value {
    json!({"name": name, "namespace": "apps", "phase": "Progressing",
           "checksum": "6d8c9b7f5-1a2b3c", "metadata": metadata})
}

/// POST without any credential: Flagger sends none.
fn flagger(srv: &Server, hook: &str, payload: &Value) -> (u16, Value) {
    http(
        &srv.addr,
        "POST",
        &format!("/v1/flagger/{hook}"),
        Some(payload.to_string().as_bytes()),
        &[("content-type", "application/json")],
    )
}

fn answers(srv: &Server, canary: &str) -> Vec<(String, u16, Value)> {
    HOOKS
        .iter()
        .map(|h| {
            let (s, v) = flagger(
                srv,
                h,
                &flagger_payload("podinfo", json!({"vigil_canary": canary})),
            );
            println!("{canary} {h}: {s} {v}");
            (h.to_string(), s, v)
        })
        .collect()
}

fn status_of(a: &[(String, u16, Value)], hook: &str) -> u16 {
    a.iter().find(|(h, _, _)| h == hook).unwrap().1
}

#[test]
fn flagger_and_argo_answer_from_vigil_verdicts() {
    let data = temp_dir("hooks");
    let srv = Server::start(&data, None, &[]);
    // Long steps: the rollouts stay in their first step while evidence builds up.
    for name in ["healthy", "failing", "thin"] {
        let (s, v) = srv.post(
            "/v1/canaries",
            &canary_spec(
                name,
                json!({"mode": "observe", "steps": [10, 100], "step_duration_s": 600}),
            ),
        );
        assert_eq!(s, 201, "{v}");
    }

    // Insufficient evidence first: nobody has reported anything.
    let (s, thin) = srv.get("/v1/argo/thin");
    assert_eq!(s, 200, "{thin}");
    assert_eq!(thin["verdict"], "inconclusive", "{thin}");
    assert_eq!(thin["ok"], false);
    assert_eq!(thin["inconclusive"], true);
    assert_eq!(thin["n"], 0);
    assert!(
        thin["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient evidence"),
        "{thin}"
    );
    let a = answers(&srv, "thin");
    assert_eq!(status_of(&a, "confirm-rollout"), 200);
    assert_eq!(status_of(&a, "confirm-traffic-increase"), 409);
    assert_eq!(status_of(&a, "confirm-promotion"), 409);
    assert_eq!(status_of(&a, "rollback"), 409);
    for (_, _, v) in &a {
        assert!(
            v["reason"].as_str().unwrap().contains("insufficient"),
            "{v}"
        );
        assert_eq!(v["checksum"], "6d8c9b7f5-1a2b3c");
        assert_eq!(v["namespace"], "apps");
        assert_eq!(v["verdict"], "inconclusive");
    }

    // Healthy traffic for the healthy canary until Vigil's evidence suffices.
    let mut feed = Feeder::new();
    let v = feed.until(&srv, "healthy", Duration::from_secs(30), 0, 100, |v| {
        v["live_verdict"]["state"] == "ok"
            && v["evidence"]["canary"]["requests"].as_u64().unwrap_or(0)
                >= v["evidence"]["min_requests"].as_u64().unwrap_or(u64::MAX)
    });
    assert_eq!(v["phase"], "progressing", "{v:#}");
    let (s, ok) = srv.get("/v1/argo/healthy");
    assert_eq!(s, 200);
    assert_eq!(ok["verdict"], "pass", "{ok}");
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["inconclusive"], false);
    assert!(ok["n"].as_u64().unwrap() >= 20, "{ok}");
    assert!(ok["score"].is_u64(), "{ok}");
    let a = answers(&srv, "healthy");
    assert_eq!(status_of(&a, "confirm-rollout"), 200);
    assert_eq!(status_of(&a, "confirm-traffic-increase"), 200);
    assert_eq!(status_of(&a, "confirm-promotion"), 200);
    assert_eq!(status_of(&a, "rollback"), 409);
    assert!(a
        .iter()
        .all(|(_, _, v)| v["reason"].as_str().unwrap().contains("n=")));

    // Half the failing canary's requests fail: Vigil rolls it back.
    let v = feed.until(&srv, "failing", Duration::from_secs(30), 5, 100, |v| {
        v["phase"] == "rolled_back"
    });
    assert_eq!(v["canary_weight"], 0);
    let (s, bad) = srv.get("/v1/argo/failing");
    assert_eq!(s, 200);
    assert_eq!(bad["verdict"], "fail", "{bad}");
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["inconclusive"], false);
    assert!(bad["reason"].as_str().unwrap().contains("rolled"), "{bad}");
    let a = answers(&srv, "failing");
    assert_eq!(status_of(&a, "confirm-rollout"), 409);
    assert_eq!(status_of(&a, "confirm-traffic-increase"), 409);
    assert_eq!(status_of(&a, "confirm-promotion"), 409);
    assert_eq!(status_of(&a, "rollback"), 200);
    assert!(a
        .iter()
        .all(|(_, _, v)| v["reason"].as_str().unwrap().contains("errors")));

    // Without `metadata.vigil_canary` the payload's name is the canary.
    let (s, v) = flagger(&srv, "rollback", &flagger_payload("failing", Value::Null));
    assert_eq!(s, 200, "{v}");

    // Bad input: JSON 4xx with the field, state kept.
    let (s, v) = flagger(&srv, "confirm-promotion", &json!({"namespace": "apps"}));
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "body");
    let (s, v) = flagger(&srv, "pre-rollout", &flagger_payload("healthy", json!({})));
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["field"], "hook");
    let (s, v) = flagger(
        &srv,
        "confirm-promotion",
        &flagger_payload("nosuch", json!({})),
    );
    assert_eq!(s, 404, "{v}");
    let (s, v) = srv.get("/v1/argo/nosuch");
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["field"], "name");
    let (s, _) = http(
        &srv.addr,
        "POST",
        "/v1/flagger/rollback",
        Some(b"name=x"),
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(s, 415);
    assert_eq!(srv.canary("healthy")["phase"], "progressing");
}
