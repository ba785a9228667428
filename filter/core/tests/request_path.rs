//! Hostcalls per request: the glue's callbacks run through
//! `request_path::RequestFlow` over a counting host, so every property and
//! header call the filter makes in Envoy is counted here.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{Level, Worker};
use vigil_filter_core::lease;
use vigil_filter_core::metrics::MemorySink;
use vigil_filter_core::outcome::Outcome;
use vigil_filter_core::request::RequestRecord;
use vigil_filter_core::request_path::{run_request, CountingHost, RequestFlow};
use vigil_filter_core::shared::{MemoryStore, SharedStore};
use vigil_filter_core::verdicts::{SteeredRoute, VerdictTable};
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
    // time, client header, route | :status, content-type | first-byte time |
    // time, cluster: duration, status and (for a complete 200) flags come
    // without a property read, and a clean request this fast (2 µs) skips
    // the attempt count and pool wait (`fast_request_us`).
    assert_eq!(h.calls, 8, "{:?}", h.reads);
    assert_eq!(h.reads.len(), 2, "property reads: {:?}", h.reads);
    assert_eq!(reads(&h, "request.duration"), 0);
    assert_eq!(reads(&h, "response.code"), 0);
    assert_eq!(reads(&h, "response.flags"), 0);
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
    assert_eq!(h.calls, 10, "{:?}", h.reads);
}

#[test]
fn a_trusted_client_header_is_read_once() {
    let mut w = worker(r#""mode":"steer","trust_client_subset_header":true,"#);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    run_request(&mut w, &mut h);
    assert_eq!(h.calls, 8, "{:?}", h.reads);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    h.request_headers
        .insert("x-vigil-subset".into(), b"canary".to_vec());
    run_request(&mut w, &mut h);
    assert_eq!(h.request_headers.get("x-vigil-subset").unwrap(), b"canary");
    // time, client header (no route read at request) | :status,
    // content-type | time | time, route, cluster
    assert_eq!(h.calls, 8, "{:?}", h.reads);
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
    let mut w = worker(r#""mode":"steer","#);
    // Another worker holds the lease and published a steered route.
    assert!(lease::acquire(&store, &w.keys().lease, 1, now, 60_000));
    let table = VerdictTable {
        generation: 1,
        steered: vec![SteeredRoute {
            route: b"checkout".to_vec(),
            reason: Signal::Errors,
        }],
        ..Default::default()
    };
    store
        .set(&w.keys().steering, &table.encode(), None)
        .unwrap();
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
    // :status, content-type | time | time, route, cluster (re-selected)
    assert_eq!(h.calls, 9, "{:?}", h.reads);
    assert_eq!(reads(&h, "xds.cluster_name"), 1);
}

/// Runs one request whose response may end early: `ended` is whether the
/// response's end of stream passed through the filter.
fn run_with_end(w: &mut Worker, h: &mut CountingHost, ended: bool) -> RequestRecord {
    let mut flow = RequestFlow::default();
    flow.begin(h);
    flow.on_request_headers(w, h);
    flow.on_response_headers(w, h, false);
    flow.on_response_body(100, ended, h);
    flow.on_log(w, h)
}

#[test]
fn flags_are_read_when_they_can_change_the_class() {
    let mut w = worker(r#""mode":"steer","#);
    // Complete 2xx/3xx: no flags read.
    for status in [200, 204, 302] {
        let mut h = CountingHost::unary("checkout", "stable", status);
        run_with_end(&mut w, &mut h, true);
        assert_eq!(reads(&h, "response.flags"), 0, "{status}: {:?}", h.reads);
    }
    // A response cut before its end (reset, timeout, client gone), a 4xx or
    // 5xx (local replies), a gRPC response: flags read.
    let mut h = CountingHost::unary("checkout", "stable", 200);
    run_with_end(&mut w, &mut h, false);
    assert_eq!(reads(&h, "response.flags"), 1, "cut stream: {:?}", h.reads);
    for status in [429, 503] {
        let mut h = CountingHost::unary("checkout", "stable", status);
        run_with_end(&mut w, &mut h, true);
        assert_eq!(reads(&h, "response.flags"), 1, "{status}: {:?}", h.reads);
    }
    let mut h = CountingHost::unary("checkout", "stable", 200);
    h.response_headers
        .insert("content-type".into(), b"application/grpc".to_vec());
    run_with_end(&mut w, &mut h, true);
    assert_eq!(reads(&h, "response.flags"), 1, "gRPC: {:?}", h.reads);
}

#[test]
fn a_cut_stream_is_classified_from_its_flags() {
    let mut w = worker(r#""mode":"steer","#);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    // Upstream remote reset after the headers: Envoy's UR flag.
    h.properties.insert(
        "response.flags".into(),
        vigil_filter_core::request::flags::UPSTREAM_REMOTE_RESET
            .to_le_bytes()
            .to_vec(),
    );
    let record = run_with_end(&mut w, &mut h, false);
    assert_eq!(record.outcome, Outcome::Reset, "{record:?}");
    // The same response complete: ok, and its duration is the filter's own
    // clock from the request headers (the host's clock advances 1 µs a read).
    let mut h = CountingHost::unary("checkout", "stable", 200);
    let record = run_with_end(&mut w, &mut h, true);
    assert_eq!(record.outcome, Outcome::Ok, "{record:?}");
    assert_eq!(record.status, 200);
    assert!(
        (1..100).contains(&record.latency_us),
        "latency from the filter's clock, not the 1 ms property: {record:?}"
    );
}

#[test]
fn without_response_headers_the_status_property_is_read() {
    let mut w = worker(r#""mode":"steer","#);
    let mut h = CountingHost::unary("checkout", "stable", 503);
    let mut flow = RequestFlow::default();
    flow.begin(&mut h);
    flow.on_request_headers(&mut w, &mut h);
    let _ = flow.on_log(&mut w, &mut h);
    assert_eq!(reads(&h, "response.code"), 1, "{:?}", h.reads);
    assert_eq!(reads(&h, "response.flags"), 1, "{:?}", h.reads);
}

#[test]
fn without_a_start_time_the_duration_property_is_read() {
    let mut w = worker(r#""mode":"steer","#);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    let mut flow = RequestFlow::default();
    flow.on_response_headers(&w, &mut h, true);
    let record = flow.on_log(&mut w, &mut h);
    assert_eq!(reads(&h, "request.duration"), 1, "{:?}", h.reads);
    assert_eq!(record.latency_us, 1000, "the 1 ms property");
}

#[test]
fn edges_read_method_and_path_from_the_pseudo_headers() {
    let mut w = worker(r#""mode":"steer","edges":{"service":"orders","version":"v1"},"#);
    let mut h = CountingHost::unary("checkout", "stable", 200);
    run_request(&mut w, &mut h);
    assert_eq!(reads(&h, "request.method"), 0, "{:?}", h.reads);
    assert_eq!(reads(&h, "request.path"), 0, "{:?}", h.reads);
    // The steer path's two, and the peer certificate's URI SAN.
    assert_eq!(h.reads.len(), 3, "property reads: {:?}", h.reads);
    assert_eq!(reads(&h, "connection.uri_san_peer_certificate"), 1);
}

/// A host whose clock advances `step_ms` per read, with 3 attempts and a
/// 400 µs pool wait on record.
fn retried(step_ms: u64, status: u64) -> CountingHost {
    let mut h = CountingHost::unary("checkout", "stable", status);
    h.clock_step_ns = step_ms * 1_000_000;
    h.properties.insert(
        "upstream.request_attempt_count".into(),
        3u64.to_le_bytes().to_vec(),
    );
    h.properties.insert(
        "upstream.cx_pool_ready_duration".into(),
        400_000u64.to_le_bytes().to_vec(),
    );
    h
}

fn log_one(w: &mut Worker, h: &mut CountingHost) -> RequestRecord {
    run_with_end(w, h, true)
}

#[test]
fn attempts_and_pool_wait_are_read_unless_the_request_is_clean_and_fast() {
    let mut w = worker(r#""mode":"steer","#);
    // 2 µs, complete 200: both skipped, one attempt and no wait assumed.
    let mut h = retried(0, 200);
    h.clock_step_ns = 1000;
    let r = log_one(&mut w, &mut h);
    assert_eq!(
        reads(&h, "upstream.request_attempt_count"),
        0,
        "{:?}",
        h.reads
    );
    assert_eq!(
        reads(&h, "upstream.cx_pool_ready_duration"),
        0,
        "{:?}",
        h.reads
    );
    assert_eq!((r.attempts, r.pool_wait_us), (1, 0), "{r:?}");
    // 2 ms (two clock steps of 1 ms): read, and the wait leaves the latency.
    let mut h = retried(1, 200);
    let r = log_one(&mut w, &mut h);
    assert_eq!(
        reads(&h, "upstream.request_attempt_count"),
        1,
        "{:?}",
        h.reads
    );
    assert_eq!(
        reads(&h, "upstream.cx_pool_ready_duration"),
        1,
        "{:?}",
        h.reads
    );
    assert_eq!(
        (r.attempts, r.pool_wait_us, r.latency_us),
        (3, 400, 1600),
        "{r:?}"
    );
    // Fast but not clean (a 503, a cut response, gRPC): read.
    let mut h = retried(0, 503);
    h.clock_step_ns = 1000;
    assert_eq!(log_one(&mut w, &mut h).attempts, 3, "{:?}", h.reads);
    let mut h = retried(0, 200);
    h.clock_step_ns = 1000;
    assert_eq!(
        run_with_end(&mut w, &mut h, false).attempts,
        3,
        "{:?}",
        h.reads
    );
    let mut h = retried(0, 200);
    h.clock_step_ns = 1000;
    h.response_headers
        .insert("content-type".into(), b"application/grpc".to_vec());
    assert_eq!(log_one(&mut w, &mut h).attempts, 3, "{:?}", h.reads);
}

#[test]
fn fast_request_us_zero_always_reads_attempts_and_pool_wait() {
    let mut w = worker(r#""mode":"steer","fast_request_us":0,"#);
    let mut h = retried(0, 200);
    h.clock_step_ns = 1000;
    let r = log_one(&mut w, &mut h);
    assert_eq!((r.attempts, r.pool_wait_us), (3, 400), "{r:?}");
    assert_eq!(h.reads.len(), 4, "{:?}", h.reads);
}
