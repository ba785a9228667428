//! Evidence that must add up, on the real `vigil-control` binary over real
//! HTTP and a real SQLite file: a flooding sidecar cannot promote a failing
//! canary, no `seq` value locks a sidecar out (also across a restart),
//! stale sidecar identities expire, and a filter with 20 000 active series
//! gets its reports accepted and its canary judged.
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
use std::time::{Duration, Instant};

fn with_incarnation(mut r: Value, incarnation: u64) -> Value {
    r["incarnation"] = json!(incarnation);
    r
}

fn metric(srv: &Server, name: &str) -> u64 {
    let (_, raw) = http_raw(&srv.addr, "GET", "/metrics", None, &[]);
    let text = String::from_utf8(raw).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn a_sidecar_reporting_4e9_healthy_requests_cannot_promote_a_failing_canary() {
    let data = temp_dir("flood");
    let srv = Server::start(&data, None, &[]);
    assert_eq!(
        srv.post(
            "/v1/canaries",
            &canary_spec("promo", json!({"steps": [10, 100], "step_duration_s": 1}))
        )
        .0,
        201
    );
    let start = Instant::now();
    let mut seq = 0;
    let v = loop {
        seq += 1;
        // Two honest sidecars: the canary fails half its requests.
        for sc in ["honest-a", "honest-b"] {
            let r = report(
                sc,
                seq,
                vec![
                    series("promo", "stable", 45, 0, 100),
                    series("promo", "canary", 10, 5, 100),
                ],
                vec![],
            );
            assert_eq!(srv.post("/v1/reports", &r).0, 202);
        }
        // One sidecar floods 4×10⁹ healthy canary requests per tick.
        let mut flood = series("promo", "canary", 4_000_000_000, 0, 100);
        flood["latency"] = json!([[
            vigil_scorer::histogram::bucket_index(100_000),
            4_000_000_000u64
        ]]);
        let r = report("flooder", seq, vec![flood], vec![]);
        let (status, body) = srv.post("/v1/reports", &r);
        assert_eq!(status, 202, "{body}");
        let v = srv.canary("promo");
        assert_ne!(
            v["phase"], "promoted",
            "the flood promoted a 50%-error canary: {v:#}"
        );
        if v["phase"] == "rolled_back" {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not rolled back: {v:#}\n{}",
            srv.logs_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let e = v["reason"].as_str().unwrap();
    assert!(e.contains("errors"), "{e}");
    assert!(metric(&srv, "vigil_control_evidence_clipped_requests_total") > 3_000_000_000);
    println!("rolled back after {:?}: {e}", start.elapsed());
}

#[test]
fn no_seq_value_locks_a_sidecar_out_also_across_a_restart() {
    let data = temp_dir("seq");
    let srv = Server::start(&data, None, &[]);
    let post = |srv: &Server, incarnation: u64, seq: u64| {
        srv.post(
            "/v1/reports",
            &with_incarnation(report("victim", seq, vec![], vec![]), incarnation),
        )
        .0
    };
    // A forged report with seq 2^64 − 1 for the victim's identity.
    assert_eq!(post(&srv, 7, u64::MAX), 202);
    // The victim's own incarnation is accepted from seq 1 on.
    assert_eq!(post(&srv, 8, 1), 202);
    assert_eq!(post(&srv, 8, 2), 202);
    // Within an incarnation, order holds.
    assert_eq!(post(&srv, 8, 2), 409);
    assert_eq!(post(&srv, 8, u64::MAX), 202);
    assert_eq!(post(&srv, 8, 3), 409);
    std::thread::sleep(Duration::from_millis(600)); // persisted at the next tick
    srv.kill9();
    let srv = Server::start(&data, None, &[]);
    // The stored seq 2^64 − 1 survived exactly (no saturation) ...
    assert_eq!(post(&srv, 8, u64::MAX), 409);
    // ... and the restarted sidecar (new incarnation) is accepted at once.
    assert_eq!(post(&srv, 9, 1), 202);
    assert_eq!(post(&srv, 9, 2), 202);
}

#[test]
fn stale_sidecar_identities_expire_and_a_new_sidecar_is_accepted() {
    let data = temp_dir("expiry");
    let srv = Server::start(&data, None, &["--sidecar-ttl-s", "60"]);
    assert_eq!(
        srv.post("/v1/reports", &report("first", 1, vec![], vec![]))
            .0,
        202
    );
    std::thread::sleep(Duration::from_millis(500));
    srv.kill9();
    let fill = |seen_ms: u64| {
        let db = rusqlite::Connection::open(data.join("vigil.db")).unwrap();
        db.execute_batch("BEGIN; DELETE FROM sidecar_state;")
            .unwrap();
        {
            let mut stmt = db
                .prepare("INSERT INTO sidecar_state (sidecar, incarnation, seq, sent_at_ms, seen_ms) VALUES (?1, 1, 5, ?2, ?2)")
                .unwrap();
            for i in 0..100_000 {
                stmt.execute(rusqlite::params![
                    format!("churned-pod-{i}"),
                    seen_ms as i64
                ])
                .unwrap();
            }
        }
        db.execute_batch("COMMIT;").unwrap();
    };
    // 100 000 live identities: the cap holds, a new sidecar is refused.
    fill(now_ms());
    let srv = Server::start(&data, None, &["--sidecar-ttl-s", "60"]);
    let (status, v) = srv.post("/v1/reports", &report("new-pod", 1, vec![], vec![]));
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["field"], "sidecar");
    srv.kill9();
    // The same 100 000 identities, last heard from an hour ago: they expire.
    fill(now_ms() - 3_600_000);
    let srv = Server::start(&data, None, &["--sidecar-ttl-s", "60"]);
    let (status, v) = srv.post("/v1/reports", &report("new-pod", 1, vec![], vec![]));
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        metric(&srv, "vigil_control_sidecars_expired_total"),
        100_000
    );
    // And they are gone from the store too.
    let start = Instant::now();
    loop {
        let db = rusqlite::Connection::open(data.join("vigil.db")).unwrap();
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM sidecar_state", [], |r| r.get(0))
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{n} rows left");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_filter_with_20_000_active_series_is_accepted_and_its_canary_judged() {
    use vigil_filter_core::config::PluginConfig;
    use vigil_filter_core::engine::{ControlKind, Worker};
    use vigil_filter_core::metrics::{Kind, MetricSink};
    use vigil_filter_core::request::RequestRecord;
    use vigil_filter_core::shared::MemoryStore;

    let data = temp_dir("scale");
    let srv = Server::start(&data, None, &[]);
    assert_eq!(
        srv.post(
            "/v1/canaries",
            &canary_spec(
                "checkout",
                json!({"steps": [10, 100], "step_duration_s": 3600})
            )
        )
        .0,
        201
    );
    let cfg = PluginConfig::parse(
        br#"{"mode":"shadow","max_series":25000,"canaries":[{"name":"checkout","route":"checkout","stable_cluster":"stable","canary_cluster":"canary"}],"control":{"cluster":"vigil-control"}}"#,
    )
    .unwrap();
    let mut w = Worker::new(cfg, 77);
    w.set_sidecar_identity("scale-pod.shop");
    let store = MemoryStore::new();
    /// Envoy's stats store looks names up by hash; so does this sink (the
    /// filter-core `MemorySink` searches linearly, too slow at 20 000 series).
    #[derive(Default)]
    struct HashSink(std::collections::HashMap<String, u32>);
    impl MetricSink for HashSink {
        fn define(&mut self, _: Kind, name: &str) -> Option<u32> {
            let n = self.0.len() as u32;
            Some(*self.0.entry(name.to_string()).or_insert(n))
        }
        fn increment(&mut self, _: u32, _: u64) {}
        fn record(&mut self, _: u32, _: u64) {}
    }
    let mut sink = HashSink::default();
    let ok = |latency_us| RequestRecord::new(latency_us, 200, 0, 1);
    let mut now = now_ms();
    let mut accepted = 0;
    let mut max_bytes = 0;
    let mut totals = Value::Null;
    let mut verdicts = 0;
    for t in 0..4 {
        for i in 0..20_000 {
            let route = format!("route-{i}");
            w.record(Some(route.as_bytes()), Some(b"backend"), &ok(1_000));
        }
        for _ in 0..40 {
            w.record(Some(b"checkout"), Some(b"stable"), &ok(20_000));
        }
        for _ in 0..10 {
            w.record(Some(b"checkout"), Some(b"canary"), &ok(20_000));
        }
        now += 1000;
        w.on_tick(now, &store, &mut sink, &mut |_, _| {});
        for call in w.take_control_calls() {
            if call.kind != ControlKind::Report {
                continue;
            }
            let body = call.body.unwrap();
            max_bytes = max_bytes.max(body.len());
            let v: Value = serde_json::from_slice(&body).unwrap();
            if t > 0 {
                totals = v["totals"].clone();
                // Only the managed canary's series travel; its verdict rides
                // in chunk 0 of the same accepted report.
                assert!(v["series"].as_array().unwrap().len() <= 2, "{v}");
                if v["chunk"].as_u64().unwrap_or(0) == 0 {
                    assert!(
                        v["canaries"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|c| c["name"] == "checkout" && c["state"].is_string()),
                        "tick {t}: no checkout verdict in {v}"
                    );
                    verdicts += 1;
                }
            }
            let (status, answer) = srv.post("/v1/reports", &v);
            assert_eq!(status, 202, "tick {t}: {answer}");
            accepted += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    println!("{accepted} reports accepted, largest {max_bytes} bytes, totals {totals}, {verdicts} with the canary verdict");
    assert!(verdicts >= 2, "{verdicts}");
    assert!(totals["series"].as_u64().unwrap() >= 20_000, "{totals}");
    assert!(max_bytes < vigil_wire::report::MAX_REPORT_BYTES);
    let v = srv.canary("checkout");
    assert!(v["evidence"]["reports"].as_u64().unwrap() >= 2, "{v:#}");
    assert!(
        v["evidence"]["canary"]["requests"].as_u64().unwrap() >= 20,
        "{v:#}"
    );
    assert!(
        v["evidence"]["stable"]["requests"].as_u64().unwrap() >= 80,
        "{v:#}"
    );
    assert_ne!(v["live_verdict"]["state"], Value::Null);
}
