//! Integration tests of the real `vigil-control` binary over real HTTP and a
//! real SQLite file: rollouts, rollbacks, approval gates, auth, restarts
//! after `kill -9`, refusal of bad input, audit tampering, webhooks.
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
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn healthy_canary_walks_its_steps_and_is_promoted() {
    let data = temp_dir("healthy");
    let srv = Server::start(&data, None, &[]);
    let (status, v) = srv.post("/v1/canaries", &canary_spec("checkout", json!({})));
    assert_eq!(status, 201, "{v}");
    let v0 = srv.routing()["version"].as_u64().unwrap();
    let mut feed = Feeder::new();
    let v = feed.until(&srv, "checkout", Duration::from_secs(30), 0, 100, |v| {
        v["phase"] == "promoted"
    });
    assert_eq!(v["canary_weight"], 100);
    let kinds = decision_kinds(&v);
    assert_eq!(kinds, ["start", "advance", "advance", "promote"], "{v:#}");
    // Every automatic decision explains itself with numbers.
    for d in v["decisions"].as_array().unwrap().iter().skip(1) {
        let e = d["explanation"].as_str().unwrap();
        assert!(
            e.contains("n=") && e.contains("p95") && e.contains("errors"),
            "{e}"
        );
    }
    let routing = srv.routing();
    assert_eq!(routing["canaries"][0]["canary_weight"], 100);
    assert_eq!(routing["canaries"][0]["phase"], "promoted");
    assert!(routing["version"].as_u64().unwrap() >= v0 + 3, "{routing}");
    // GitOps files were written for the final state.
    let vs =
        std::fs::read_to_string(data.join("gitops/checkout/istio-virtualservice.yaml")).unwrap();
    assert!(vs.contains("weight: 100"), "{vs}");
    // Metrics count the decisions.
    let (_, metrics) = http_raw(&srv.addr, "GET", "/metrics", None, &[]);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("vigil_control_decisions_total{kind=\"promote\"} 1"),
        "{metrics}"
    );
    assert!(
        !srv.logs_text().contains(TOKEN),
        "the token must never be logged"
    );
    let (code, out, _) = run_bin(&["audit", "verify", "--data", data.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn canary_errors_mid_rollout_roll_back_and_bump_routing() {
    let data = temp_dir("rollback");
    let srv = Server::start(&data, None, &[]);
    srv.post(
        "/v1/canaries",
        &canary_spec(
            "payments",
            json!({"steps": [10, 50, 100], "step_duration_s": 2}),
        ),
    );
    let mut feed = Feeder::new();
    feed.until(&srv, "payments", Duration::from_secs(30), 0, 100, |v| {
        v["canary_weight"] == 50
    });
    let before = srv.routing();
    assert_eq!(before["canaries"][0]["canary_weight"], 50);
    let fault = Instant::now();
    // Half the canary's requests fail from now on.
    let v = feed.until(&srv, "payments", Duration::from_secs(10), 5, 100, |v| {
        v["phase"] == "rolled_back"
    });
    let reaction = fault.elapsed();
    assert!(
        reaction < Duration::from_secs(3),
        "rollback took {reaction:?}"
    );
    assert_eq!(v["canary_weight"], 0);
    let last = v["decisions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "rollback");
    let e = last["explanation"].as_str().unwrap();
    assert!(
        e.contains("errors") && e.contains("vs stable") && e.contains("n="),
        "{e}"
    );
    let after = srv.routing();
    assert_eq!(after["canaries"][0]["canary_weight"], 0);
    assert_eq!(after["canaries"][0]["phase"], "rolled_back");
    assert!(after["version"].as_u64() > before["version"].as_u64());
    // Further reports change nothing for a rolled-back canary.
    feed.round(&srv, "payments", 0, 100);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(srv.canary("payments")["phase"], "rolled_back");
}

#[test]
fn a_sidecar_critical_counts_only_with_its_counts_and_is_re_tested() {
    let data = temp_dir("sidecar-critical");
    let srv = Server::start(&data, None, &[]);
    srv.post(
        "/v1/canaries",
        &canary_spec("search", json!({"step_duration_s": 30})),
    );
    let mut feed = Feeder::new();
    feed.until(&srv, "search", Duration::from_secs(10), 0, 100, |v| {
        v["phase"] == "progressing"
    });
    let claim = json!({"name": "search", "route": "search", "state": "critical", "score": 999,
        "reason": "latency: p95 412.0 ms vs reference 180.0 ms (+129%), n=64/580, stat=7.1", "steering": true});
    // A forged claim without the canary's counts (no stable series at all).
    let forged = report(
        "sidecar-z",
        1,
        vec![series("search", "canary", 3, 0, 100)],
        vec![claim.clone()],
    );
    assert_eq!(srv.post("/v1/reports", &forged).0, 202);
    // A claim with counts that do not support it: re-tested, not confirmed.
    for seq in 2..12 {
        let healthy = report(
            "sidecar-z",
            seq,
            vec![
                series("search", "stable", 45, 0, 100),
                series("search", "canary", 10, 0, 100),
            ],
            vec![claim.clone()],
        );
        assert_eq!(srv.post("/v1/reports", &healthy).0, 202);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(800));
    let v = srv.canary("search");
    assert_eq!(
        v["phase"], "progressing",
        "a claim alone rolled back: {v:#}"
    );
    let (_, metrics) = http_raw(&srv.addr, "GET", "/metrics", None, &[]);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("vigil_control_unsupported_critical_total 1\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vigil_control_unconfirmed_critical_total 0\n"),
        "{metrics}"
    );
    // Real failing counts: the control-side test rolls back.
    let v = feed.until(&srv, "search", Duration::from_secs(10), 5, 100, |v| {
        v["phase"] == "rolled_back"
    });
    let e = v["reason"].as_str().unwrap();
    assert!(e.contains("anytime-valid") && e.contains("errors"), "{e}");
    assert_eq!(srv.routing()["canaries"][0]["canary_weight"], 0);
}

#[test]
fn approval_gate_waits_and_needs_the_token() {
    let data = temp_dir("gate");
    let srv = Server::start(&data, None, &[]);
    srv.post(
        "/v1/canaries",
        &canary_spec(
            "reviews",
            json!({"steps": [10, 50], "approve_before_steps": [50]}),
        ),
    );
    let mut feed = Feeder::new();
    feed.until(&srv, "reviews", Duration::from_secs(20), 0, 100, |v| {
        v["phase"] == "waiting_approval"
    });
    // It keeps waiting, at the current weight, however long the evidence flows.
    for _ in 0..10 {
        feed.round(&srv, "reviews", 0, 100);
        std::thread::sleep(Duration::from_millis(100));
    }
    let waiting = srv.canary("reviews");
    assert_eq!(waiting["phase"], "waiting_approval");
    assert_eq!(waiting["canary_weight"], 10);
    assert_eq!(waiting["gate"], json!({"kind": "step", "index": 1}));
    let routing_before = srv.routing();
    let list_before = srv.get("/v1/canaries").1;

    // Wrong and missing tokens: 401, nothing changes.
    let body = json!({"by": "mallory"}).to_string();
    for auth in [Some("Bearer wrong-token"), Some("Basic abc"), None] {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        for path in [
            "/v1/canaries/reviews/approve",
            "/v1/canaries/reviews/reject",
            "/v1/canaries",
            "/v1/reports",
        ] {
            let (status, v) = http(&srv.addr, "POST", path, Some(body.as_bytes()), &headers);
            assert_eq!(status, 401, "{path}: {v}");
            assert!(
                v["error"].is_string() && v["field"] == "authorization",
                "{v}"
            );
        }
    }
    assert_eq!(srv.routing(), routing_before);
    let mut list_after = srv.get("/v1/canaries").1;
    // The live verdict may move with time; the rollout must not.
    list_after["canaries"][0]["live_verdict"] = list_before["canaries"][0]["live_verdict"].clone();
    assert_eq!(list_after, list_before);

    // Unknown canary: 404 JSON.
    let (status, v) = srv.post("/v1/canaries/nope/approve", &json!({"by": "alice"}));
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["field"], "name");

    // Approve through the CLI client.
    let (code, out, err) = run_bin(
        &[
            "canary",
            "approve",
            "reviews",
            "--by",
            "alice",
            "--comment",
            "metrics look fine",
            "--server",
            &srv.url(),
        ],
        &[("VIGIL_CONTROL_TOKEN", OPERATOR_TOKEN)],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("approved by alice"), "{out}");
    let v = srv.canary("reviews");
    assert_eq!(v["phase"], "progressing");
    assert_eq!(v["canary_weight"], 50);
    assert_eq!(srv.routing()["canaries"][0]["canary_weight"], 50);
    // Approving again is a conflict.
    assert_eq!(
        srv.post("/v1/canaries/reviews/approve", &json!({"by": "alice"}))
            .0,
        409
    );
    let (code, out, _) = run_bin(&["canary", "list", "--server", &srv.url()], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("reviews") && out.contains("50%"), "{out}");
    let v = feed.until(&srv, "reviews", Duration::from_secs(20), 0, 100, |v| {
        v["phase"] == "promoted"
    });
    let kinds = decision_kinds(&v);
    assert_eq!(
        kinds,
        ["start", "await_approval", "approve", "promote"],
        "{v:#}"
    );
    assert_eq!(v["decisions"][2]["actor"], "alice");
}

#[test]
fn kill_9_mid_rollout_then_restart_continues() {
    let data = temp_dir("kill9");
    let config = data.join("vigil.yaml");
    std::fs::write(
        &config,
        "canaries:\n  - name: cart\n    route: cart\n    stable_cluster: stable\n    canary_cluster: canary\n    steps: [10, 25, 50, 100]\n    step_duration_s: 2\n",
    )
    .unwrap();
    let db = data.join("db");
    let srv = Server::start(&db, Some(&config), &[]);
    let mut feed = Feeder::new();
    feed.until(&srv, "cart", Duration::from_secs(30), 0, 100, |v| {
        v["canary_weight"] == 25
    });
    let before = srv.canary("cart");
    let routing_before = srv.routing();
    srv.kill9();
    let (code, out, _) = run_bin(&["audit", "verify", "--data", db.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    let rows_before: u64 = out.split_whitespace().nth(3).unwrap().parse().unwrap();

    let srv = Server::start(&db, Some(&config), &[]);
    let after = srv.canary("cart");
    for key in [
        "phase",
        "canary_weight",
        "step",
        "step_started_ms",
        "rollout",
    ] {
        assert_eq!(after[key], before[key], "{key}");
    }
    assert_eq!(after["decisions"], before["decisions"]);
    assert_eq!(
        srv.routing(),
        routing_before,
        "same weights under the same version"
    );
    // The unchanged config file added nothing to the audit log.
    let (code, out, _) = run_bin(&["audit", "verify", "--data", db.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{rows_before} rows")), "{out}");
    // The same sidecars keep counting: their sequence numbers survived too
    // (seq 0 or 1 with a newer clock would be a restarted sidecar).
    let stale = report("sidecar-a-cart", 2, vec![], vec![]);
    assert_eq!(srv.post("/v1/reports", &stale).0, 409);
    let v = feed.until(&srv, "cart", Duration::from_secs(40), 0, 100, |v| {
        v["phase"] == "promoted"
    });
    assert_eq!(
        decision_kinds(&v),
        ["start", "advance", "advance", "advance", "promote"]
    );
    let (code, out, _) = run_bin(&["audit", "verify", "--data", db.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
}

fn rollout_snapshot(srv: &Server) -> (Value, Value, String) {
    let mut list = srv.get("/v1/canaries").1;
    for c in list["canaries"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("live_verdict");
    }
    let (_, metrics) = http_raw(&srv.addr, "GET", "/metrics", None, &[]);
    let metrics = String::from_utf8(metrics).unwrap();
    let accepted = metrics
        .lines()
        .find(|l| l.starts_with("vigil_control_reports_accepted_total"))
        .unwrap()
        .to_string();
    (list, srv.routing(), accepted)
}

#[test]
fn bad_reports_and_requests_get_4xx_and_change_nothing() {
    let data = temp_dir("bad-input");
    let srv = Server::start(&data, None, &[]);
    srv.post(
        "/v1/canaries",
        &canary_spec("inventory", json!({"step_duration_s": 3600})),
    );
    let mut feed = Feeder::new();
    feed.until(&srv, "inventory", Duration::from_secs(10), 0, 100, |v| {
        v["phase"] == "progressing"
    });
    let ok = report(
        "sidecar-q",
        5,
        vec![series("inventory", "canary", 10, 0, 100)],
        vec![],
    );
    assert_eq!(srv.post("/v1/reports", &ok).0, 202);
    std::thread::sleep(Duration::from_millis(500));
    let before = rollout_snapshot(&srv);

    let auth = format!("Bearer {TOKEN}");
    let json_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let good = || {
        report(
            "sidecar-q",
            6,
            vec![series("inventory", "canary", 10, 0, 100)],
            vec![],
        )
    };
    let mut cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"version\":1,".to_vec(), 400, "body"),
        ("not an object", b"[]".to_vec(), 400, "body"),
        (
            "wrong version",
            {
                let mut r = good();
                r["version"] = json!(2);
                r.to_string().into_bytes()
            },
            400,
            "version",
        ),
        (
            "duplicate seq",
            report(
                "sidecar-q",
                5,
                vec![series("inventory", "canary", 10, 0, 100)],
                vec![],
            )
            .to_string()
            .into_bytes(),
            409,
            "seq",
        ),
        (
            "older seq",
            report(
                "sidecar-q",
                3,
                vec![series("inventory", "canary", 10, 0, 100)],
                vec![],
            )
            .to_string()
            .into_bytes(),
            409,
            "seq",
        ),
        (
            "unsorted histogram",
            {
                let mut r = good();
                r["series"][0]["latency"] = json!([[300, 5], [200, 5]]);
                r.to_string().into_bytes()
            },
            400,
            "series[0].latency[1]",
        ),
        (
            "bucket out of range",
            {
                let mut r = good();
                r["series"][0]["latency"] = json!([[60000, 10]]);
                r.to_string().into_bytes()
            },
            400,
            "series[0].latency[0]",
        ),
        (
            "histogram exceeds requests",
            {
                let mut r = good();
                r["series"][0]["latency"] = json!([[300, 11]]);
                r.to_string().into_bytes()
            },
            400,
            "series[0].latency",
        ),
        (
            "errors exceed requests",
            {
                let mut r = good();
                r["series"][0]["errors"] = json!(11);
                r.to_string().into_bytes()
            },
            400,
            "series[0].errors",
        ),
        (
            "negative counter",
            {
                let mut r = good();
                r["series"][0]["requests"] = json!(-1);
                r.to_string().into_bytes()
            },
            400,
            "body",
        ),
        (
            "name too long",
            {
                let mut r = good();
                r["series"][0]["route"] = json!("r".repeat(300));
                r.to_string().into_bytes()
            },
            400,
            "series[0].route",
        ),
        (
            "unknown state",
            {
                let mut r = good();
                r["canaries"] = json!([{"name":"inventory","state":"dying"}]);
                r.to_string().into_bytes()
            },
            400,
            "canaries[0].state",
        ),
    ];
    // Oversized: a valid-looking report over 1 MiB.
    let mut big = good();
    big["series"][0]["route"] = json!("inventory");
    let pad: Vec<Value> = (0..12_000)
        .map(|i| series("x", &format!("c{i:06}"), 1, 0, 10))
        .collect();
    big["series"] = json!(pad);
    let big = big.to_string().into_bytes();
    assert!(big.len() > 1024 * 1024);
    cases.push(("oversized body", big, 413, "body"));
    for (what, body, status, field) in &cases {
        let (got, v) = http(&srv.addr, "POST", "/v1/reports", Some(body), &json_headers);
        assert_eq!(got, *status, "{what}: {v}");
        assert_eq!(v["field"], *field, "{what}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
    // Wrong content type.
    let (got, v) = http(
        &srv.addr,
        "POST",
        "/v1/reports",
        Some(good().to_string().as_bytes()),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "text/plain"),
        ],
    );
    assert_eq!(
        (got, v["field"].as_str()),
        (415, Some("content-type")),
        "{v}"
    );
    // Bad canary declarations and actions.
    let (got, v) = srv.post(
        "/v1/canaries",
        &canary_spec("inventory", json!({"steps": [50, 10]})),
    );
    assert_eq!((got, v["field"].as_str()), (400, Some("steps[1]")), "{v}");
    let (got, v) = srv.post("/v1/canaries", &json!({"name": "x"}));
    assert_eq!(got, 400, "{v}");
    let (got, v) = srv.post("/v1/canaries/inventory/approve", &json!({"by": "alice"}));
    assert_eq!(got, 409, "nothing to approve: {v}");
    let (got, v) = srv.post("/v1/canaries/inventory/approve", &json!({"who": "alice"}));
    assert_eq!(got, 400, "{v}");
    let (got, _) = srv.post("/v1/canaries/inventory/explode", &json!({"by": "alice"}));
    assert_eq!(got, 404);

    std::thread::sleep(Duration::from_millis(500));
    let after = rollout_snapshot(&srv);
    assert_eq!(after.0, before.0, "canaries changed");
    assert_eq!(after.1, before.1, "routing changed");
    assert_eq!(after.2, before.2, "a bad report was accepted");
    // The next in-order report is still accepted.
    assert_eq!(srv.post("/v1/reports", &good()).0, 202);
}

#[test]
fn audit_tampering_is_detected() {
    let data = temp_dir("tamper");
    let srv = Server::start(&data, None, &[]);
    srv.post(
        "/v1/canaries",
        &canary_spec("ledger", json!({"approve_before_steps": [50]})),
    );
    let mut feed = Feeder::new();
    feed.until(&srv, "ledger", Duration::from_secs(20), 0, 100, |v| {
        v["phase"] == "waiting_approval"
    });
    srv.post(
        "/v1/canaries/ledger/approve",
        &json!({"by": "alice", "comment": "ok"}),
    );
    srv.kill9();
    let db = data.join("vigil.db");
    let (code, out, _) = run_bin(&["audit", "verify", "--data", data.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    // create, start, await_approval, approve (and maybe a hold).
    assert!(out.contains("4 rows") || out.contains("5 rows"), "{out}");

    let tamper = |sql: &str| -> (i32, String) {
        let copy = temp_dir("tamper-copy");
        for f in ["vigil.db", "vigil.db-wal", "vigil.db-shm"] {
            if data.join(f).exists() {
                std::fs::copy(data.join(f), copy.join(f)).unwrap();
            }
        }
        let conn = rusqlite::Connection::open(copy.join("vigil.db")).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let (code, out, _) = run_bin(&["audit", "verify", "--data", copy.to_str().unwrap()], &[]);
        (code, out)
    };
    let _ = db;
    let (code, out) = tamper("UPDATE audit SET detail = 'approved by mallory' WHERE seq = 4");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("row 4") && out.contains("altered"), "{out}");
    let (code, out) = tamper("UPDATE audit SET evidence = '{}' WHERE seq = 2");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("row 2"), "{out}");
    let (code, out) = tamper("DELETE FROM audit WHERE seq = 3");
    assert_eq!(code, 1);
    assert!(out.contains("row 3"), "{out}");
    let (code, out) = tamper("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)");
    assert_eq!(code, 1);
    assert!(out.contains("deleted from the end"), "{out}");
    let (code, out) = tamper("UPDATE audit SET seq = -seq WHERE seq IN (2, 3); UPDATE audit SET seq = 3 WHERE seq = -2; UPDATE audit SET seq = 2 WHERE seq = -3;");
    assert_eq!(code, 1);
    assert!(out.contains("row 2"), "{out}");
    // Re-hashing a forged row does not help without rewriting every later row.
    let (code, out) = tamper("UPDATE audit SET actor = 'mallory', hash = '00' WHERE seq = 4");
    assert_eq!(code, 1);
    assert!(out.contains("row 4"), "{out}");
}

/// A local webhook receiver: the first request gets a 500 (to exercise the
/// retry), later ones 200. Bodies are collected.
fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut first = true;
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            if !first {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    sink.lock().unwrap().push(v);
                }
            }
            first = false;
            let _ = s.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (format!("http://{addr}/hooks/T000/B000/secret"), got)
}

#[test]
fn webhooks_announce_gates_and_decisions_without_blocking() {
    let (url, got) = receiver();
    // A receiver that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/never", silent.local_addr().unwrap());
    let data = temp_dir("webhooks");
    let config = data.join("vigil.json");
    std::fs::write(
        &config,
        json!({"webhooks": [silent_url, url], "webhook_allow": ["127.0.0.1"],
               "canaries": [canary_spec("profile", json!({"steps": [10, 100], "approve_before_promotion": true,
                                                          "webhooks": [format!("{url}/per-canary-secret")]}))]})
        .to_string(),
    )
    .unwrap();
    let srv = Server::start(
        &data.join("db"),
        Some(&config),
        &["--webhook-timeout-ms", "300", "--webhook-retries", "2"],
    );
    let mut feed = Feeder::new();
    // The silent receiver must not hold the rollout up.
    feed.until(&srv, "profile", Duration::from_secs(20), 0, 100, |v| {
        v["phase"] == "waiting_approval"
    });
    let start = Instant::now();
    loop {
        let events = got.lock().unwrap().clone();
        if let Some(e) = events.iter().find(|e| e["kind"] == "await_approval") {
            let text = e["text"].as_str().unwrap();
            assert!(
                text.contains("profile") && text.contains("canary approve profile"),
                "{text}"
            );
            assert_eq!(e["canary"], "profile");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no await_approval webhook: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(got.lock().unwrap().iter().any(|e| e["kind"] == "start"));
    // Webhook URLs are never served: the API shows scheme and host only.
    let (_, list) = srv.get("/v1/canaries");
    let (_, one) = srv.get("/v1/canaries/profile");
    for v in [&list, &one] {
        let text = v.to_string();
        assert!(!text.contains("secret"), "webhook secret served: {text}");
        assert!(text.contains("(redacted)"), "{text}");
    }
    // Targets outside the allowlist are refused, naming the field.
    let (status, v) = srv.post(
        "/v1/canaries",
        &canary_spec("other", json!({"webhooks": ["http://10.1.2.3:8080/admin"]})),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["field"], "webhooks[0]", "{v}");
    drop(silent);
    let logs = srv.logs_text();
    assert!(
        !logs.contains("secret"),
        "webhook paths are secrets and must not be logged"
    );
}

#[test]
fn bench_runs_against_the_real_endpoint() {
    let out_dir = temp_dir("bench");
    let json_path = out_dir.join("bench.json");
    let (code, out, err) = run_bin(
        &[
            "bench",
            "--seconds",
            "1",
            "--series",
            "200",
            "--clients",
            "2",
            "--json",
            json_path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("ingest managed series-updates/s"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    let ingest = &v["ingest"];
    assert!(ingest["reports"].as_u64().unwrap() > 0, "{v}");
    // Counted by the service on managed series: every bench series is a
    // declared canary's, so the service's count equals what was sent.
    let managed = ingest["series_updates_per_s"].as_f64().unwrap();
    let sent = ingest["series_sent_per_s"].as_f64().unwrap();
    assert!(managed > 0.0 && (managed - sent).abs() <= 1.0, "{v}");
    for phase in ["routing_idle", "routing_under_ingest"] {
        assert!(v[phase]["samples"].as_u64().unwrap() > 0, "{phase}: {v}");
        assert!(v[phase]["p99_us"].as_u64().unwrap() > 0, "{phase}: {v}");
    }
    assert!(
        v["routing_under_ingest"]["ingest_reports_per_s"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{v}"
    );
}
