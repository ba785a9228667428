//! Persist before serve, with the real binary and a real SQLite file: a
//! tick decision taken while the disk is full is neither served nor lost.
//!
//! The full disk is SQLite's own: the service's test hook
//! (`VIGIL_CONTROL_TEST_QUOTA_FILE`) pins `PRAGMA max_page_count` to the
//! database's current size while the hook file says `full`, so every write
//! that needs a new page fails with SQLITE_FULL ("database or disk is
//! full"), exactly as a full disk does.
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

fn db_rows(data: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("vigil.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn disk_full_during_a_tick_decision_serves_nothing_unstored_and_loses_nothing() {
    let data = temp_dir("disk-full");
    let hook = data.with_extension("quota");
    let hook_s = hook.to_str().unwrap().to_string();
    let env = [("VIGIL_CONTROL_TEST_QUOTA_FILE", hook_s.as_str())];
    let srv = Server::start_env(&data, None, &[], &env);
    srv.post(
        "/v1/canaries",
        &canary_spec("orders", json!({"step_duration_s": 60})),
    );
    let mut feed = Feeder::new();
    feed.until(&srv, "orders", Duration::from_secs(10), 0, 100, |v| {
        v["phase"] == "progressing"
    });
    assert_eq!(srv.get("/healthz").0, 200);

    // The disk fills up; then a sidecar's report shows the canary failing
    // and claims critical with a long reason, which the rollback's evidence
    // carries, so the decision and audit rows need new pages.
    std::fs::write(&hook, "full").unwrap();
    let reason = format!(
        "errors: 48% vs reference 0.1%, n=500/4500 {}",
        "x".repeat(3800)
    );
    let body = report(
        "sidecar-full",
        1,
        // One judge: the claim counts only with both versions' counts, and
        // the service's own test must find the canary failing.
        vec![
            series("orders", "stable", 2000, 0, 100),
            series("orders", "canary", 400, 400, 100),
        ],
        vec![
            json!({"name": "orders", "route": "orders", "state": "critical", "score": 990,
                    "reason": reason, "steering": true}),
        ],
    );
    assert_eq!(srv.post("/v1/reports", &body).0, 202);
    let start = Instant::now();
    loop {
        let (status, h) = srv.get("/healthz");
        if status == 503 {
            assert_eq!(h["field"], "storage", "{h}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "healthz never reported the storage failure: {}",
            srv.logs_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Several ticks fail; the decision is served nowhere meanwhile.
    for _ in 0..10 {
        let routing = srv.routing();
        assert_eq!(routing["canaries"][0]["canary_weight"], 10, "{routing}");
        assert_eq!(routing["canaries"][0]["phase"], "progressing");
        let v = srv.canary("orders");
        assert_eq!(v["phase"], "progressing", "{v:#}");
        assert!(!decision_kinds(&v).contains(&"rollback".to_string()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = srv.logs_text();
    assert!(logs.contains("database or disk is full"), "{logs}");
    let (_, metrics) = http_raw(&srv.addr, "GET", "/metrics", None, &[]);
    let metrics = String::from_utf8(metrics).unwrap();
    let failures: u64 = metrics
        .lines()
        .find(|l| l.starts_with("vigil_control_storage_errors_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        failures >= 3,
        "storage failures counted: {failures}\n{metrics}"
    );
    println!("disk full: {failures} failed tick commits, nothing served");

    // Space comes back: the retried tick commits the rollback, then serves it.
    std::fs::remove_file(&hook).unwrap();
    let start = Instant::now();
    loop {
        let v = srv.canary("orders");
        if v["phase"] == "rolled_back" {
            assert!(v["reason"].as_str().unwrap().contains("errors"), "{v:#}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "{v:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(srv.routing()["canaries"][0]["canary_weight"], 0);
    assert_eq!(srv.get("/healthz").0, 200);
    srv.kill9();

    // After a restart the decision is there with its audit row.
    assert_eq!(
        db_rows(
            &data,
            "SELECT COUNT(*) FROM decisions WHERE kind = 'rollback'"
        ),
        1
    );
    assert_eq!(
        db_rows(
            &data,
            "SELECT COUNT(*) FROM audit WHERE action = 'decision:rollback'"
        ),
        1
    );
    let srv = Server::start(&data, None, &[]);
    let v = srv.canary("orders");
    assert_eq!(v["phase"], "rolled_back");
    assert_eq!(v["canary_weight"], 0);
    assert_eq!(decision_kinds(&v).last().unwrap(), "rollback");
    assert_eq!(srv.routing()["canaries"][0]["canary_weight"], 0);
    drop(srv);
    let (code, out, _) = run_bin(&["audit", "verify", "--data", data.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
}
