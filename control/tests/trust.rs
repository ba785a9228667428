//! Scoped trust, on the real `vigil-control` binary over real HTTP and a
//! real SQLite file: reporter credentials cannot move canaries, operator
//! actions are attributed to the credential, credentials rotate without a
//! restart, webhook secrets are never served.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_reporter_credential_cannot_move_a_canary_or_read_webhook_secrets() {
    let data = temp_dir("trust");
    // Webhooks may only go where the config file allows.
    let config = data.with_extension("json");
    std::fs::write(&config, json!({"webhook_allow": ["127.0.0.1"]}).to_string()).unwrap();
    let srv = Server::start(&data, Some(&config), &[]);
    let secret = "http://127.0.0.1:9/services/T000/B000/XXXXSECRETXXXX";
    let spec = canary_spec(
        "reviews",
        json!({"steps": [10, 50], "step_duration_s": 1, "approve_before_steps": [50], "webhooks": [secret]}),
    );
    // A reporter cannot declare.
    let (status, v) = srv.post_with("/v1/canaries", &spec, TOKEN);
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("reporter"), "{v}");
    assert_eq!(v["field"], "authorization");
    let (status, v) = srv.post("/v1/canaries", &spec);
    assert_eq!(status, 201, "{v}");
    assert!(
        !v.to_string().contains("SECRET"),
        "declare echoed the secret: {v}"
    );
    let mut feed = Feeder::new();
    feed.until(&srv, "reviews", Duration::from_secs(20), 0, 100, |v| {
        v["phase"] == "waiting_approval"
    });
    let before = srv.canary("reviews");
    // A reporter cannot approve, reject, pause or resume: 403 JSON.
    for action in ["approve", "reject", "pause", "resume"] {
        let (status, v) = srv.post_with(
            &format!("/v1/canaries/reviews/{action}"),
            &json!({"comment": "let me"}),
            TOKEN,
        );
        assert_eq!(status, 403, "{action}: {v}");
        assert_eq!(v["field"], "authorization", "{v}");
    }
    // An operator cannot post evidence.
    let (status, v) = srv.post_with(
        "/v1/reports",
        &report("sidecar-x", 1, vec![], vec![]),
        OPERATOR_TOKEN,
    );
    assert_eq!(status, 403, "{v}");
    // A bound reporter reports only as its own sidecars.
    let (status, v) = srv.post_with(
        "/v1/reports",
        &report("sidecar-a-reviews", 1_000_000, vec![], vec![]),
        BOUND_TOKEN,
    );
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["field"], "sidecar");
    let (status, v) = srv.post_with(
        "/v1/reports",
        &report("bound-1", 1, vec![], vec![]),
        BOUND_TOKEN,
    );
    assert_eq!(status, 202, "{v}");
    let after = srv.canary("reviews");
    assert_eq!(after["phase"], "waiting_approval");
    assert_eq!(after["decisions"], before["decisions"]);
    // Without a credential (or with an unknown one): 401 JSON.
    for token in [None, Some("not-a-known-token")] {
        let mut headers = vec![("content-type", "application/json")];
        let auth = token.map(|t| format!("Bearer {t}"));
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let (status, v) = http(
            &srv.addr,
            "POST",
            "/v1/canaries/reviews/approve",
            Some(b"{}"),
            &headers,
        );
        assert_eq!(status, 401, "{token:?}: {v}");
        assert_eq!(v["field"], "authorization", "{v}");
    }
    // Webhook URLs are never served, by any unauthenticated read.
    for path in [
        "/v1/canaries",
        "/v1/canaries/reviews",
        "/v1/audit?limit=500",
        "/v1/dashboard/series/reviews",
        "/v1/argo/reviews",
        "/metrics",
    ] {
        let (status, raw) = http_raw(&srv.addr, "GET", path, None, &[]);
        assert_eq!(status, 200);
        let text = String::from_utf8(raw).unwrap();
        assert!(
            !text.contains("SECRET") && !text.contains("/services/"),
            "{path}: {text}"
        );
        if path.starts_with("/v1/canaries") {
            assert!(text.contains("http://127.0.0.1:9/(redacted)"), "{text}");
        }
    }
    // Acting under another name is refused; the action is the credential's.
    let (status, v) = srv.post(
        "/v1/canaries/reviews/approve",
        &json!({"by": "config-file", "comment": "x"}),
    );
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["field"], "by");
    let (status, v) = srv.post(
        "/v1/canaries/reviews/approve",
        &json!({"comment": "looks fine"}),
    );
    assert_eq!(status, 200, "{v}");
    let v = srv.canary("reviews");
    let last = v["decisions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["kind"].as_str(), last["actor"].as_str()),
        (Some("approve"), Some("alice")),
        "{last}"
    );
    assert!(!srv.logs_text().contains(TOKEN) && !srv.logs_text().contains(OPERATOR_TOKEN));
}

#[test]
fn credentials_rotate_without_restart_and_bad_files_are_refused() {
    let data = temp_dir("rotate");
    let creds = data.with_extension("credentials.yaml");
    let srv = Server::start(&data, None, &[]);
    let spec = canary_spec("rot", json!({}));
    assert_eq!(srv.post("/v1/canaries", &spec).0, 201);
    // Rotate: alice's old token out, a new one (bob) in.
    let bob = "rotated-operator-token-0123456789";
    let d = vigil_control::credentials::digest_hex;
    std::fs::write(
        &creds,
        format!(
            "reporters:\n  - name: test-sidecars\n    sha256: {}\n    sidecars: [\"*\"]\noperators:\n  - name: bob\n    sha256: {}\n",
            d(TOKEN),
            d(bob)
        ),
    )
    .unwrap();
    let start = Instant::now();
    loop {
        let (status, _) = srv.post_with("/v1/canaries/rot/pause", &json!({}), bob);
        if status != 401 {
            assert_eq!(status, 200);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "rotation not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, v) = srv.post_with("/v1/canaries/rot/resume", &json!({}), OPERATOR_TOKEN);
    assert_eq!(status, 401, "the old token still works: {v}");
    // A broken file keeps the set in force.
    std::fs::write(&creds, "operators: [{").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (status, _) = srv.post_with("/v1/canaries/rot/resume", &json!({}), bob);
    assert_eq!(status, 200);
    assert!(
        srv.logs_text().contains("credentials file refused"),
        "{}",
        srv.logs_text()
    );
    let v = srv.canary("rot");
    let actors: Vec<&str> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["actor"].as_str())
        .collect();
    assert!(actors.contains(&"bob"), "{actors:?}");
    drop(srv);
    // Reserved names are refused at start, with the entry named.
    let data2 = temp_dir("reserved");
    std::fs::write(
        data2.with_extension("credentials.yaml"),
        format!("operators:\n  - name: vigil\n    sha256: {}\n", d("x")),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data2)
        .arg("--credentials")
        .arg(data2.with_extension("credentials.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("operators[0].name") && err.contains("reserved"),
        "{err}"
    );
}

#[test]
fn with_trust_xfcc_reports_are_bound_to_the_mtls_namespace() {
    let data = temp_dir("xfcc");
    let srv = Server::start(&data, None, &["--trust-xfcc", "true"]);
    let auth = format!("Bearer {TOKEN}");
    let post = |sidecar: &str, xfcc: Option<&str>| {
        let body = report(sidecar, 1, vec![], vec![]).to_string();
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        if let Some(x) = xfcc {
            headers.push(("x-forwarded-client-cert", x));
        }
        http(
            &srv.addr,
            "POST",
            "/v1/reports",
            Some(body.as_bytes()),
            &headers,
        )
    };
    let shop = "By=spiffe://cluster.local/ns/vigil-system/sa/vigil-control;URI=spiffe://cluster.local/ns/shop/sa/checkout";
    let (status, v) = post("checkout-7d9f.shop", Some(shop));
    assert_eq!(status, 202, "{v}");
    let (status, v) = post("checkout-7d9f.shop", None);
    assert_eq!(
        (status, v["field"].as_str()),
        (403, Some("x-forwarded-client-cert")),
        "{v}"
    );
    let (status, v) = post("payments-1.bank", Some(shop));
    assert_eq!((status, v["field"].as_str()), (403, Some("sidecar")), "{v}");
}
