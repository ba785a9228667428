//! Host tests of the series lifecycle and of configuration namespaces (issue 14):
//! workers of two configurations sharing one in-memory store (Envoy's shared data is
//! one map per `vm_id`), idle series leaving the registry, and a plugin update's
//! hand-over (old and new configuration side by side, then the old one's `on_done`).

// Test code: a panic is the failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{Level, Worker};
use vigil_filter_core::metrics::MemorySink;
use vigil_filter_core::request::RequestRecord;
use vigil_filter_core::shared::MemoryStore;

fn config(json: &str) -> PluginConfig {
    PluginConfig::parse(json.as_bytes()).unwrap()
}

fn canary(name: &str, extra: &str) -> PluginConfig {
    config(&format!(
        r#"{{"mode":"shadow","canaries":[{{"name":"{name}","route":"{name}","stable_cluster":"stable","canary_cluster":"canary"}}]{extra}}}"#
    ))
}

fn ok() -> RequestRecord {
    RequestRecord::new(1000, 200, 0, 1)
}

fn tick(ws: &mut [Worker], now: u64, store: &MemoryStore, sink: &mut MemorySink) {
    for (i, w) in ws.iter_mut().enumerate() {
        w.on_tick(now + i as u64 * 7, store, sink, &mut |_: Level, _: &str| {});
    }
}

fn requests(sink: &MemorySink, route: &str) -> u64 {
    sink.sum(&format!("route=.={route};"), "vigil_requests_total")
}

fn scorers(ws: &[Worker]) -> usize {
    ws.iter().filter(|w| w.is_scorer()).count()
}

#[test]
fn two_configurations_never_share_a_lease_or_a_registry_and_an_update_counts_exactly() {
    let store = MemoryStore::new();
    let mut sink = MemorySink::default();
    let (a, b) = (canary("alpha", ""), canary("beta", ""));
    let a2 = canary("alpha", r#","instance":"alpha-2""#);
    assert!(a.identity != b.identity && a.identity != a2.identity);
    let mut wa: Vec<Worker> = (0..2).map(|i| Worker::new(a.clone(), 10 + i)).collect();
    let mut wb: Vec<Worker> = (0..2).map(|i| Worker::new(b.clone(), 20 + i)).collect();
    let mut now = 1_700_000_000_000u64;
    let (mut sent_a, mut sent_b) = (0u64, 0u64);
    for s in 0..10u64 {
        for i in 0..50u64 {
            let cluster: &[u8] = if i % 5 == 0 { b"canary" } else { b"stable" };
            wa[(i % 2) as usize].record(Some(b"alpha"), Some(cluster), &ok());
            wb[(i % 2) as usize].record(Some(b"beta"), Some(cluster), &ok());
            sent_a += 1;
            sent_b += 1;
        }
        now += 1000;
        tick(&mut wa, now, &store, &mut sink);
        tick(&mut wb, now, &store, &mut sink);
        if s > 0 {
            assert_eq!(scorers(&wa), 1, "configuration A has its own scorer");
            assert_eq!(scorers(&wb), 1, "configuration B has its own scorer");
        }
    }
    // Each configuration's verdict table (its lease holder's; the other
    // workers read only the compact steering view) holds its own series
    // only: overflow + 2.
    for w in wa.iter().chain(&wb).filter(|w| w.is_scorer()) {
        assert_eq!(w.verdict_table().series.len(), 3);
    }
    assert_ne!(wa[0].keys().registry, wb[0].keys().registry);
    assert_eq!(
        wa[0].keys(),
        wa[1].keys(),
        "one configuration, one namespace"
    );

    // The update: A' starts beside A; both serve alpha for a while, then A ends.
    let mut wa2: Vec<Worker> = (0..2).map(|i| Worker::new(a2.clone(), 30 + i)).collect();
    for s in 0..5u64 {
        for i in 0..40u64 {
            let cluster: &[u8] = if i % 5 == 0 { b"canary" } else { b"stable" };
            let w = if i % 2 == 0 { &mut wa } else { &mut wa2 };
            w[(i / 2 % 2) as usize].record(Some(b"alpha"), Some(cluster), &ok());
            sent_a += 1;
        }
        now += 1000;
        tick(&mut wa, now, &store, &mut sink);
        tick(&mut wa2, now, &store, &mut sink);
        tick(&mut wb, now, &store, &mut sink);
        if s > 0 {
            assert_eq!(scorers(&wa), 1, "old configuration keeps its scorer");
            assert_eq!(scorers(&wa2), 1, "new configuration scores on its own");
            assert_eq!(scorers(&wb), 1);
        }
    }
    // Requests the old configuration served after its last tick are counted at on_done.
    for _ in 0..7 {
        wa[1].record(Some(b"alpha"), Some(b"stable"), &ok());
        sent_a += 1;
    }
    for w in &mut wa {
        w.on_done(&store, &mut sink);
        assert!(!w.is_scorer());
    }
    now += 1000;
    tick(&mut wa2, now, &store, &mut sink);
    assert_eq!(
        requests(&sink, "alpha"),
        sent_a,
        "alpha counted exactly once"
    );
    assert_eq!(requests(&sink, "beta"), sent_b, "beta counted exactly once");
    assert_eq!(requests(&sink, "overflow"), 0);
}

#[test]
fn identical_configurations_are_one_instance_and_on_done_hands_the_lease_over() {
    let store = MemoryStore::new();
    let mut sink = MemorySink::default();
    let mut ws: Vec<Worker> = (0..2)
        .map(|i| Worker::new(canary("alpha", ""), i))
        .collect();
    let mut now = 1_700_000_000_000u64;
    for _ in 0..3 {
        ws[0].record(Some(b"alpha"), Some(b"stable"), &ok());
        now += 1000;
        tick(&mut ws, now, &store, &mut sink);
    }
    assert_eq!(scorers(&ws), 1, "identical configurations share one scorer");
    let holder = ws.iter().position(Worker::is_scorer).unwrap();
    ws[holder].on_done(&store, &mut sink);
    let mut rest: Vec<Worker> = ws
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != holder)
        .map(|(_, w)| w)
        .collect();
    tick(&mut rest, now + 10, &store, &mut sink);
    assert_eq!(
        scorers(&rest),
        1,
        "released lease taken at the next tick, not after the TTL"
    );
}

#[test]
fn idle_series_age_out_and_a_later_canary_gets_a_series_not_overflow() {
    let store = MemoryStore::new();
    let mut sink = MemorySink::default();
    let cfg = canary("checkout", r#","max_series":16,"series_idle_s":5"#);
    let mut ws: Vec<Worker> = (0..2).map(|i| Worker::new(cfg.clone(), 40 + i)).collect();
    let mut now = 1_700_000_000_000u64;
    // A flood of 10 000 distinct routes.
    for i in 0..10_000u64 {
        let route = format!("r{i}");
        ws[(i % 2) as usize].record(Some(route.as_bytes()), Some(b"stable"), &ok());
    }
    now += 1000;
    tick(&mut ws, now, &store, &mut sink);
    assert_eq!(
        sink.value("vigil_series"),
        Some(14),
        "16 minus the canary's 2 reserved"
    );
    let dropped = sink.value("vigil_series_dropped_total").unwrap();
    assert!(dropped > 9_000);
    // Nothing for series_idle_s: the flood leaves the registry and the local tables.
    for _ in 0..7 {
        now += 1000;
        tick(&mut ws, now, &store, &mut sink);
    }
    assert_eq!(sink.value("vigil_series"), Some(0), "idle series aged out");
    let evicted: u64 = ws.iter().map(|w| w.stats().series_evicted).sum();
    assert_eq!(evicted, 14);
    // New routes take the freed places; none overflows.
    for i in 0..14u64 {
        let route = format!("n{i}");
        ws[(i % 2) as usize].record(Some(route.as_bytes()), Some(b"stable"), &ok());
    }
    for _ in 0..2 {
        // The gauge is the holder's: it sees the other worker's series a tick later.
        now += 1000;
        tick(&mut ws, now, &store, &mut sink);
    }
    assert_eq!(sink.value("vigil_series"), Some(14));
    assert_eq!(
        sink.value("vigil_series_dropped_total"),
        Some(dropped),
        "no new drop"
    );
    // A new managed canary, after the flood, keeps flooding: it gets its series and is judged.
    let mut judged = None;
    for s in 0..40u64 {
        for i in 0..100u64 {
            let route = format!("f{}", s * 100 + i);
            ws[(i % 2) as usize].record(Some(route.as_bytes()), Some(b"stable"), &ok());
            let cluster: &[u8] = if i % 4 == 0 { b"canary" } else { b"stable" };
            ws[(i % 2) as usize].record(Some(b"checkout"), Some(cluster), &ok());
        }
        now += 1000;
        tick(&mut ws, now, &store, &mut sink);
        let state = sink.value("route=.=checkout;.;cluster=.=canary;.;vigil_state");
        if judged.is_none() && state.is_some_and(|v| v >= 1) {
            judged = Some(s);
        }
    }
    assert_eq!(
        requests(&sink, "checkout"),
        40 * 100,
        "every canary-route request in its own series"
    );
    assert!(judged.is_some(), "the new canary was judged");
    let holder = ws.iter().find(|w| w.is_scorer()).expect("a lease holder");
    assert!(holder.score_of(b"checkout", b"canary").is_some());
}
