//! Hostcalls per request: the glue's callbacks run through
//! `request_path::RequestFlow` over a counting host, so every property and
//! header call the filter makes in Envoy is counted here.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{Level, Worker};
use vigil_filter_core::lease;
use vigil_filter_core::metrics::MemorySink;
use vigil_filter_core::request_path::{run_request, CountingHost};
use vigil_filter_core::shared::{MemoryStore, SharedStore};
use vigil_filter_core::verdicts::{SteeredRoute, VerdictTable, STEERING_KEY};
use vigil_scorer::verdict::Signal;

const CANARY_CFG: &str = r#""canaries":[{"name":"checkout","route":"checkout","stable_cluster":"stable","canary_cluster":"canary"}]"#;

fn worker(extra: &str) -> Worker {
    let json = format!(r#"{{{extra}{CANARY_CFG}}}"#);
    Worker::new(PluginConfig::parse(json.as_bytes()).unwrap(), 42)
}

fn reads(h: &CountingHost, path: &str) -> usize {
    h.reads.iter().filter(|r| *r == path).count()
}

#[test]
fn steer_healthy_unary_reads_each_property_once() {
    let mut w = worker(r#""mode":"steer","#);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    run_request(&mut w, &mut h);
    // time, route, client header | content-type | first-byte time |
    // duration, code, flags, attempts, pool wait, cluster
    assert_eq!(h.calls, 11, "{:?}", h.reads);
    assert_eq!(reads(&h, "xds.route_name"), 1);
    assert_eq!(reads(&h, "xds.cluster_name"), 1);
    assert_eq!(reads(&h, "response.grpc_status"), 0, "not a gRPC response");
    assert_eq!(reads(&h, "response.code_details"), 0);
}

#[test]
fn shadow_reads_the_route_only_at_log() {
    let mut w = worker(r#""mode":"shadow","#);
    let mut h = CountingHost::unary("checkout", "stable", 503);
    run_request(&mut w, &mut h);
    assert_eq!(h.calls, 11, "{:?}", h.reads);
    assert_eq!(reads(&h, "xds.route_name"), 1);
}

#[test]
fn grpc_reads_its_status_and_failures_their_details() {
    let mut w = worker(r#""mode":"steer","#);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    h.response_headers
        .insert("content-type".into(), b"application/grpc".to_vec());
    run_request(&mut w, &mut h);
    assert_eq!(reads(&h, "response.grpc_status"), 1);
    assert_eq!(h.calls, 12, "{:?}", h.reads);

    let mut h = CountingHost::unary("checkout", "stable", 0);
    run_request(&mut w, &mut h);
    assert_eq!(
        reads(&h, "response.code_details"),
        1,
        "no response: details decide"
    );
}

#[test]
fn a_client_subset_header_is_removed_and_the_route_read_again() {
    let mut w = worker(r#""mode":"steer","#);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    h.request_headers
        .insert("x-vigil-subset".into(), b"canary".to_vec());
    run_request(&mut w, &mut h);
    assert!(!h.request_headers.contains_key("x-vigil-subset"));
    // Envoy re-selects the route after the header changed: read again at log.
    assert_eq!(reads(&h, "xds.route_name"), 2);
    assert_eq!(h.calls, 13, "{:?}", h.reads);
}

#[test]
fn a_trusted_client_header_is_read_once() {
    let mut w = worker(r#""mode":"steer","trust_client_subset_header":true,"#);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    run_request(&mut w, &mut h);
    assert_eq!(h.calls, 11, "{:?}", h.reads);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    h.request_headers
        .insert("x-vigil-subset".into(), b"canary".to_vec());
    run_request(&mut w, &mut h);
    assert_eq!(h.request_headers.get("x-vigil-subset").unwrap(), b"canary");
    // time, client header (no route read at request) | content-type | time |
    // 5 + route + cluster
    assert_eq!(h.calls, 11, "{:?}", h.reads);
}

#[test]
fn score_header_shares_route_and_cluster_with_the_log() {
    let mut w = worker(r#""mode":"steer","score_header":true,"#);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    run_request(&mut w, &mut h);
    assert_eq!(reads(&h, "xds.route_name"), 1);
    assert_eq!(reads(&h, "xds.cluster_name"), 1);
}

#[test]
fn a_steered_request_sets_the_header_without_reading_it() {
    let store = MemoryStore::new();
    let now = 1_700_000_000_000u64;
    // Another worker holds the lease and published a steered route.
    assert!(lease::acquire(&store, 1, now, 60_000));
    let table = VerdictTable {
        generation: 1,
        steered: vec![SteeredRoute {
            route: b"checkout".to_vec(),
            reason: Signal::Errors,
        }],
        ..Default::default()
    };
    store.set(STEERING_KEY, &table.encode(), None).unwrap();
    let mut w = worker(r#""mode":"steer","#);
    w.on_tick(
        now,
        &store,
        &mut MemorySink::default(),
        &mut |_: Level, _: &str| {},
    );
    assert!(!w.is_scorer());
    let mut h = CountingHost::unary("checkout", "canary", 200);
    run_request(&mut w, &mut h);
    assert_eq!(h.request_headers.get("x-vigil-subset").unwrap(), b"stable");
    // time, route, set (the route alone decides: no cluster read) |
    // content-type | time | 5 + route + cluster (re-selected)
    assert_eq!(h.calls, 12, "{:?}", h.reads);
    assert_eq!(reads(&h, "xds.cluster_name"), 1);
}
