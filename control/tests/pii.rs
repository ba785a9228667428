//! The PII guard's counts in the control service (real binary, real SQLite,
//! loopback): reports carrying `pii` counts are summed per route and minute,
//! served by `GET /v1/pii/findings`, and a route crossing
//! `pii_alert.findings_per_minute` raises one audited alert through the
//! allow-listed webhooks. No PII value ever reaches the service: values
//! smuggled into a report (unknown fields, a type field) end up nowhere —
//! not in SQLite, the logs, any answer or any webhook.
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

const CARD: &str = "4111 1111 1111 1111";
const EMAIL: &str = "ann.lee@corp.example.com";

/// Webhook requests received: (path, body).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver answering 200; collects (path, body).
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let (mut len, mut path) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if path.is_empty() {
                    path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                sink.lock().unwrap().push((path, v));
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (format!("http://{addr}/hooks/pii-secret"), got)
}

/// A report whose `pii` carries `n` card findings (blocked) and one email
/// (detected) on `route`, plus PII values in fields the wire does not know.
fn pii_report(seq: u64, route: &str, n: u64) -> Value {
    let mut r = report("pii-sidecar.shop", seq, vec![], vec![]);
    r["pii"] = json!([{
        "route": route, "requests": n, "inspected_bytes": 2048 * n, "partial": 1,
        "blocked": n, "redacted": 0,
        "findings": [
            {"type": "card", "action": "block", "count": n, "value": CARD, "span": [10, 29]},
            {"type": "email", "action": "detect", "count": 1, "text": EMAIL},
        ],
        "sample": format!("my card is {CARD}"),
    }]);
    r
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn everything_on_disk(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.extend(std::fs::read(&p).unwrap_or_default());
        } else if p.is_dir() {
            out.extend(everything_on_disk(&p));
        }
    }
    out
}

#[test]
fn findings_are_stored_served_alerted_and_never_carry_a_value() {
    let (url, got) = receiver();
    let data = temp_dir("pii-findings");
    let config = data.join("vigil.json");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        &config,
        json!({"webhook_allow": ["127.0.0.1"],
               "pii_alert": {"findings_per_minute": 5, "types": ["card"], "webhooks": [url]}})
        .to_string(),
    )
    .unwrap();
    let db = data.join("db");
    let srv = Server::start(&db, Some(&config), &[]);

    // A value in a field that must be a type is refused, naming the field only.
    let mut bad = pii_report(1, "chat", 1);
    bad["pii"][0]["findings"][0]["type"] = json!(CARD);
    let (status, v) = srv.post("/v1/reports", &bad);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["field"], "pii[0].findings[0].type", "{v}");
    assert!(!v.to_string().contains("4111"), "{v}");

    // Two reports: 2 then 4 card findings on `chat` (6 ≥ 5 within a minute),
    // 1 on `notes` (below the threshold).
    for (seq, route, n) in [(2, "chat", 2), (3, "notes", 1), (4, "chat", 4)] {
        let (status, v) = srv.post("/v1/reports", &pii_report(seq, route, n));
        assert_eq!(status, 202, "{v}");
    }
    let alert = wait_for("the PII alert webhook", 10, || {
        got.lock()
            .unwrap()
            .iter()
            .find(|(_, b)| b["kind"] == "pii_alert")
            .cloned()
    });
    println!("webhook {} ← {}", alert.0, alert.1);
    assert_eq!(alert.0, "/hooks/pii-secret");
    assert_eq!(alert.1["route"], "chat");
    assert_eq!(alert.1["findings"], 6, "cards only (pii_alert.types)");
    assert_eq!(alert.1["by_type"], json!({"card": 6}));
    assert!(alert.1["text"].as_str().unwrap().contains("route chat"));

    let (status, v) = srv.get("/v1/pii/findings?since_ms=0");
    assert_eq!(status, 200, "{v}");
    println!("GET /v1/pii/findings → {v}");
    let routes = v["routes"].as_array().unwrap();
    let chat = routes.iter().find(|r| r["route"] == "chat").unwrap();
    assert_eq!(chat["totals"]["findings"], 8, "6 cards + 2 emails");
    assert_eq!(chat["totals"]["by_type"]["card"]["block"], 6);
    assert_eq!(chat["totals"]["by_type"]["email"]["detect"], 2);
    assert_eq!(chat["totals"]["requests"], 6);
    assert_eq!(chat["totals"]["inspected_bytes"], 6 * 2048);
    assert_eq!(chat["totals"]["partial"], 2);
    assert_eq!(chat["totals"]["blocked"], 6);
    assert_eq!(chat["alerting"], true);
    let notes = routes.iter().find(|r| r["route"] == "notes").unwrap();
    assert_eq!(notes["alerting"], false);
    assert_eq!(v["alert"]["alerting"], json!(["chat"]));
    let (_, one) = srv.get("/v1/pii/findings?route=notes&since_ms=0");
    assert_eq!(one["routes"].as_array().unwrap().len(), 1);
    let (status, e) = srv.get("/v1/pii/findings?since_ms=9&until_ms=1");
    assert_eq!((status, e["field"].as_str()), (400, Some("since_ms")));

    // Audited, once.
    let (_, audit) = srv.get("/v1/audit?limit=50");
    let alerts: Vec<&Value> = audit["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "pii:alert")
        .collect();
    assert_eq!(alerts.len(), 1, "{audit}");
    assert!(alerts[0]["detail"].as_str().unwrap().contains("6 findings"));
    assert_eq!(audit["chain"]["intact"], true);

    // Restart: the counts are in SQLite.
    drop(srv);
    let srv = Server::start(&db, Some(&config), &[]);
    let (_, v) = srv.get("/v1/pii/findings?route=chat&since_ms=0");
    assert_eq!(v["routes"][0]["totals"]["findings"], 8, "{v}");

    // No value anywhere: SQLite (and its WAL), logs, answers, webhooks.
    let (_, metrics_text) = {
        let (s, raw) = http_raw(&srv.addr, "GET", "/metrics", None, &[]);
        (s, String::from_utf8_lossy(&raw).to_string())
    };
    let (_, audit) = srv.get("/v1/audit?limit=50");
    let hooks = format!("{:?}", got.lock().unwrap());
    let disk = String::from_utf8_lossy(&everything_on_disk(&db)).to_string();
    let logs = srv.logs_text();
    for (what, text) in [
        ("SQLite files", disk.as_str()),
        ("logs", logs.as_str()),
        ("findings", &v.to_string()),
        ("audit", &audit.to_string()),
        ("metrics", metrics_text.as_str()),
        ("webhooks", hooks.as_str()),
    ] {
        for value in [CARD, "4111111111111111", EMAIL, "ann.lee"] {
            assert!(!text.contains(value), "{value:?} reached the {what}");
        }
    }
    assert!(disk.contains("chat"), "the scan reads the database");
}

#[test]
fn a_pii_alert_webhook_outside_the_allowlist_is_refused_at_start() {
    let data = temp_dir("pii-allow");
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("vigil.json");
    std::fs::write(
        &config,
        json!({"webhook_allow": ["hooks.slack.com"],
               "pii_alert": {"findings_per_minute": 5, "webhooks": ["http://10.0.0.1/x"]}})
        .to_string(),
    )
    .unwrap();
    let (code, _, err) = run_bin(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.join("db").to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--credentials",
            credentials_file("pii-allow").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pii_alert.webhooks[0]"), "{err}");
}
