//! Host tests of observed edges through the whole worker protocol: two
//! workers record edges, merge them through shared data, and the scorer's
//! report carries them; the cardinality must-show (100 000 distinct paths,
//! 10 000 distinct callers) stays within the configured caps, counted as
//! overflow, with bounded memory, shared data and report size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::edges::{EdgeFacts, NodeFacts};
use vigil_filter_core::engine::{ControlKind, Level, Worker};
use vigil_filter_core::keys::Keys;
use vigil_filter_core::metrics::MemorySink;
use vigil_filter_core::request::RequestRecord;
use vigil_filter_core::shared::{MemoryStore, SharedStore};
use vigil_wire::report::{parse, Report, MAX_REPORT_BYTES};

const CONFIG: &str = r#"{"control":{"cluster":"vigil-control"},
  "edges":{"service":"orders","version":"v1","max_edges":256,"max_templates_per_service":32,
           "max_sources":64,"max_services":8}}"#;

fn workers(cfg: &str, n: usize) -> Vec<Worker> {
    let cfg = PluginConfig::parse(cfg.as_bytes()).unwrap();
    (0..n)
        .map(|i| {
            let mut w = Worker::new(cfg.clone(), 7 + i as u64);
            w.set_sidecar_identity("orders-1.shop");
            w.set_node_facts(&NodeFacts::default());
            w
        })
        .collect()
}

fn record(w: &mut Worker, peer: &str, method: &str, path: &str, status: u16) {
    let rec = RequestRecord::new(3_000, status, 0, 1);
    w.record(Some(b"inbound"), Some(b"inbound|8080||"), &rec);
    w.record_edge(
        &EdgeFacts {
            peer_san: Some(peer.as_bytes()),
            method: Some(method.as_bytes()),
            path: Some(path.as_bytes()),
            cluster: Some(b"inbound|8080||"),
        },
        &rec,
    );
}

/// Tick every worker; the reports the scorer queued.
fn tick(ws: &mut [Worker], store: &MemoryStore, sink: &mut MemorySink, now: u64) -> Vec<Report> {
    let mut out = Vec::new();
    for w in ws.iter_mut() {
        w.on_tick(now, store, sink, &mut |_: Level, _: &str| {});
        for c in w.take_control_calls() {
            if c.kind == ControlKind::Report {
                let body = c.body.unwrap();
                assert!(body.len() <= MAX_REPORT_BYTES, "{} bytes", body.len());
                out.push(parse(&body).unwrap());
            }
        }
    }
    out
}

#[test]
fn edges_of_every_worker_reach_the_scorers_report() {
    let mut ws = workers(CONFIG, 2);
    let store = MemoryStore::new();
    let mut sink = MemorySink::default();
    let mut now = 1_700_000_000_000;
    tick(&mut ws, &store, &mut sink, now); // lease taken
    let web = "spiffe://cluster.local/ns/shop/sa/web";
    for i in 0..10 {
        record(
            &mut ws[i % 2],
            web,
            "GET",
            &format!("/v1/orders/{i}?u=alice"),
            200,
        );
    }
    record(&mut ws[1], web, "POST", "/v1/orders", 503);
    // Worker 1 merges after the scorer (0) took the key: its edges come one tick later.
    let mut reports = Vec::new();
    for _ in 0..2 {
        now += 1000;
        reports.extend(tick(&mut ws, &store, &mut sink, now));
    }
    let edges: Vec<_> = reports.iter().flat_map(|r| r.edges.clone()).collect();
    let get: u64 = edges
        .iter()
        .filter(|e| e.method == "GET" && e.path == "/v1/orders/{id}")
        .map(|e| e.requests)
        .sum();
    assert_eq!(get, 10, "{edges:?}");
    let post: Vec<_> = edges.iter().filter(|e| e.method == "POST").collect();
    assert_eq!(post.len(), 1);
    assert_eq!((post[0].errors, post[0].path.as_str()), (1, "/v1/orders"));
    assert!(edges
        .iter()
        .all(|e| e.source == web && e.service == "orders" && e.inbound));
    assert!(
        !edges.iter().any(|e| e.path.contains("alice")),
        "no query string in a template"
    );
}

#[test]
fn disabled_edges_record_nothing() {
    let mut ws = workers(
        r#"{"control":{"cluster":"c"},"edges":{"enabled":false}}"#,
        1,
    );
    assert!(!ws[0].edges_enabled());
    let store = MemoryStore::new();
    let mut sink = MemorySink::default();
    record(&mut ws[0], "spiffe://x/ns/a/sa/b", "GET", "/a", 200);
    let reports = tick(&mut ws, &store, &mut sink, 1_700_000_000_000);
    assert!(reports.iter().all(|r| r.edges.is_empty()));
    assert!(store
        .get(&Keys::new(ws[0].config().identity).edges)
        .is_none());
}

/// Must-show: 100 000 distinct paths and 10 000 distinct callers stay within
/// the caps, counted as overflow; memory, shared data and report bounded.
#[test]
fn cardinality_stays_within_caps() {
    let mut ws = workers(CONFIG, 2);
    let store = MemoryStore::new();
    let mut sink = MemorySink::default();
    let mut now = 1_700_000_000_000;
    tick(&mut ws, &store, &mut sink, now);
    let mut total = 0u64;
    let mut reports = Vec::new();
    let mut max_heap = 0usize;
    let mut max_store = 0usize;
    for round in 0..10u64 {
        for i in 0..10_000u64 {
            let n = round * 10_000 + i; // 100 000 distinct paths
            let caller = format!("spiffe://cluster.local/ns/shop/sa/caller-{}", n % 10_000);
            // Distinct non-ID segments: each is its own template.
            let path = format!("/api/{}/item", to_letters(n));
            record(&mut ws[(n % 2) as usize], &caller, "GET", &path, 200);
            total += 1;
        }
        // Before the tick: the tick's edges are held too.
        for w in &ws {
            max_heap = max_heap.max(w.edge_state().unwrap().aggregator().heap_bytes());
        }
        now += 1000;
        reports.extend(tick(&mut ws, &store, &mut sink, now));
        let key = Keys::new(ws[0].config().identity).edges;
        max_store = max_store.max(store.get(&key).map_or(0, |(v, _)| v.len()));
    }
    for _ in 0..2 {
        now += 1000;
        reports.extend(tick(&mut ws, &store, &mut sink, now));
    }
    let attributed: u64 = reports
        .iter()
        .flat_map(|r| &r.edges)
        .map(|e| e.requests)
        .sum();
    let overflow: u64 = reports.iter().map(|r| r.edges_overflow).sum();
    assert_eq!(
        attributed + overflow,
        total,
        "every request attributed or counted"
    );
    for r in &reports {
        assert!(r.edges.len() <= 256, "max_edges cap: {}", r.edges.len());
    }
    let templates: std::collections::HashSet<_> = reports
        .iter()
        .flat_map(|r| &r.edges)
        .map(|e| e.path.clone())
        .collect();
    let sources: std::collections::HashSet<_> = reports
        .iter()
        .flat_map(|r| &r.edges)
        .map(|e| e.source.clone())
        .collect();
    // Per worker ≤ 32 templates + the overflow template; two workers.
    assert!(templates.len() <= 2 * 32 + 1, "{}", templates.len());
    assert!(sources.len() <= 2 * 64 + 1, "{}", sources.len());
    assert!(templates.contains("/{overflow}") && sources.contains("{overflow}"));
    let biggest = reports.iter().map(|r| r.encode().len()).max().unwrap();
    let (of_t, of_s) = (
        sink.value("vigil_edges_overflow_templates_total").unwrap(),
        sink.value("vigil_edges_overflow_sources_total").unwrap(),
    );
    // Every path is new: all but the 2 × 32 remembered ones fold. Each
    // caller repeats 10 times: all but the 2 × 64 remembered callers' fold.
    assert_eq!(of_t, total - 2 * 32, "{of_t}");
    assert_eq!(of_s, total - 2 * 64 * 10, "{of_s}");
    assert_eq!(
        sink.value("vigil_edges_overflow_requests_total"),
        Some(overflow),
        "unattributed counted = what the reports carried"
    );
    println!(
        "cardinality: {total} requests, 100000 paths, 10000 callers -> {} templates, {} sources \
         in reports; overflow templates {of_t}, sources {of_s}, unattributed {overflow}; \
         largest report {biggest} B; edge heap per worker <= {max_heap} B; shared value <= {max_store} B",
        templates.len(),
        sources.len()
    );
    assert!(max_heap < 256 * 1024, "edge heap {max_heap}");
    assert!(biggest < 300 * 1024, "report {biggest}");
}

fn to_letters(mut n: u64) -> String {
    let mut s = String::new();
    loop {
        s.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return s;
        }
    }
}

/// Regression (CI of 2026-12-03, `edges_cardinality`): requests folded in
/// the shared merge (two workers' edges over `max_edges`) were sent to the
/// control service as unattributed but missing from
/// `vigil_edges_overflow_requests_total`, which only counted each worker's
/// own folds. The holder now counts what its reports carry.
#[test]
fn unattributed_metric_equals_what_the_reports_carry_when_the_shared_merge_folds() {
    let cfg = r#"{"control":{"cluster":"vigil-control"},
      "edges":{"service":"orders","max_edges":4}}"#;
    let mut ws = workers(cfg, 2);
    let store = MemoryStore::new();
    let mut sink = MemorySink::default();
    let mut now = 1_700_000_000_000;
    tick(&mut ws, &store, &mut sink, now); // worker 0 holds the lease
    let edge = |w: &mut Worker, who: &str| {
        for m in ["GET", "PUT", "DELETE", "PATCH"] {
            record(
                w,
                &format!("spiffe://cluster.local/ns/shop/sa/{who}"),
                m,
                "/a",
                200,
            );
        }
    };
    let mut reports = Vec::new();
    // Worker 1's four edges wait in shared data after the holder's take;
    // next tick the holder's four new ones meet them: four fold.
    edge(&mut ws[1], "one");
    now += 1000;
    reports.extend(tick(&mut ws, &store, &mut sink, now));
    edge(&mut ws[0], "zero");
    for _ in 0..3 {
        now += 1000;
        reports.extend(tick(&mut ws, &store, &mut sink, now));
    }
    let attributed: u64 = reports
        .iter()
        .flat_map(|r| &r.edges)
        .map(|e| e.requests)
        .sum();
    let carried: u64 = reports.iter().map(|r| r.edges_overflow).sum();
    assert_eq!(
        (attributed, carried),
        (4, 4),
        "the shared merge folded four"
    );
    assert_eq!(
        sink.value("vigil_edges_overflow_requests_total"),
        Some(carried),
        "the metric is what the reports carried"
    );
}
