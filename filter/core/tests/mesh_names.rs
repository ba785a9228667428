//! Canaries declared by service and version (Kuma legacy naming: per-rule
//! route names), steered by the cluster a request's route selected: the
//! weighted default rule and the header rules have different route names.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{Decision, Level, Worker};
use vigil_filter_core::metrics::MemorySink;
use vigil_filter_core::request::RequestRecord;
use vigil_filter_core::shared::MemoryStore;

const STABLE: &[u8] = b"default_llm-gateway-v1__zone-1_msvc_8080";
const CANARY: &[u8] = b"default_llm-gateway-v2__zone-1_msvc_8080";
/// Kuma 2.x names each rule's routes by a hash of its matches.
const DEFAULT_ROUTE: &[u8] = b"9Zuf5Tg79OuZcQITwBbQykxAk2u4fRKrwYn3//AL4Yo=";
const CANARY_HEADER_ROUTE: &[u8] = b"0W1h5oZdSI6TgZnIdpqmSBbq5QhGwFNeEFyW3TfAYWA=";

fn req(latency_us: u64, status: u16) -> RequestRecord {
    RequestRecord::new(latency_us, status, 0, 1)
}

fn run(
    seconds: u64,
    canary_status: u16,
    w: &mut Worker,
    store: &MemoryStore,
    now: &mut u64,
    logs: &mut Vec<String>,
) -> MemorySink {
    let mut sink = MemorySink::default();
    for _ in 0..seconds {
        for i in 0..100u64 {
            let (cluster, status) = if i % 5 == 0 {
                (CANARY, canary_status)
            } else {
                (STABLE, 200)
            };
            w.record(Some(DEFAULT_ROUTE), Some(cluster), &req(1000 + i, status));
        }
        *now += 1000;
        w.on_tick(*now, store, &mut sink, &mut |_: Level, m: &str| {
            logs.push(m.to_string())
        });
    }
    sink
}

#[test]
fn steers_by_selected_cluster_whatever_the_route_name() {
    let cfg = r#"{"mode":"steer","unmatched_after_s":5,"canaries":[{"name":"llm-gateway","naming":"kuma-legacy",
        "zone":"zone-1","service":"llm-gateway","stable_version":"v1","canary_version":"v2","port":8080}]}"#;
    let mut w = Worker::new(PluginConfig::parse(cfg.as_bytes()).unwrap(), 1);
    let store = MemoryStore::new();
    let (mut now, mut logs) = (1_700_000_000_000u64, Vec::new());
    run(15, 200, &mut w, &store, &mut now, &mut logs);
    assert_eq!(
        w.route_decision(DEFAULT_ROUTE, Some(CANARY)),
        None,
        "healthy: static routes"
    );
    let mut steered = false;
    for _ in 0..5 {
        run(1, 503, &mut w, &store, &mut now, &mut logs);
        if w.route_decision(DEFAULT_ROUTE, Some(CANARY)).is_some() {
            steered = true;
            break;
        }
    }
    assert!(steered, "never steered: {logs:#?}");
    assert!(w.wants_cluster_at_request());
    // A request whose route has another name (a client-sent canary header
    // selected the canary rule) still belongs to the canary by its cluster.
    assert!(matches!(
        w.route_decision(CANARY_HEADER_ROUTE, Some(CANARY)),
        Some(Decision::Steer(_))
    ));
    // Unrelated clusters are never touched.
    assert_eq!(w.route_decision(b"other", Some(b"other_cluster")), None);
    assert!(
        !logs.iter().any(|l| l.contains("matched no cluster")),
        "{logs:#?}"
    );
}

#[test]
fn a_misnamed_canary_is_reported_once_with_a_gauge() {
    let cfg = r#"{"mode":"steer","unmatched_after_s":5,"canaries":[{"name":"llm-gateway","naming":"kuma",
        "zone":"zone-1","service":"llm-gateway","stable_version":"v1","canary_version":"v2","port":8080}]}"#;
    let mut w = Worker::new(PluginConfig::parse(cfg.as_bytes()).unwrap(), 1);
    let store = MemoryStore::new();
    let (mut now, mut logs) = (1_700_000_000_000u64, Vec::new());
    let sink = run(10, 200, &mut w, &store, &mut now, &mut logs);
    let warnings: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("matched no cluster"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs:#?}");
    assert!(
        warnings[0].contains("kri_msvc_default_zone-1__llm-gateway-v1_8080"),
        "{}",
        warnings[0]
    );
    assert_eq!(
        sink.value("canary=.=llm-gateway;.;vigil_canary_unmatched"),
        Some(1)
    );
}

#[test]
fn control_weights_apply_by_cluster_too() {
    use vigil_filter_core::engine::ControlKind;
    let cfg = r#"{"mode":"steer","control":{"cluster":"vigil-control","weights_ttl_s":30},"canaries":[{"name":"llm-gateway","naming":"kuma-legacy",
        "zone":"zone-1","service":"llm-gateway","stable_version":"v1","canary_version":"v2","port":8080}]}"#;
    let mut w = Worker::new(PluginConfig::parse(cfg.as_bytes()).unwrap(), 1);
    let store = MemoryStore::new();
    let (mut now, mut logs) = (1_700_000_000_000u64, Vec::new());
    run(3, 200, &mut w, &store, &mut now, &mut logs);
    let body = br#"{"version":1,"canaries":[{"name":"llm-gateway","canary_weight":50}]}"#;
    let _ = w.take_control_calls();
    w.on_control_response(
        ControlKind::Routing,
        Some(200),
        body,
        now,
        &store,
        &mut |_, _| {},
    );
    run(1, 200, &mut w, &store, &mut now, &mut logs);
    let mut canary = 0;
    for _ in 0..100 {
        // The canary header rule's route has its own name: weighted by the cluster.
        match w.route_decision(CANARY_HEADER_ROUTE, Some(CANARY)) {
            Some(Decision::Weighted { canary: true }) => canary += 1,
            Some(Decision::Weighted { canary: false }) => {}
            other => panic!("{other:?}; {logs:#?}"),
        }
    }
    assert_eq!(canary, 50);
    assert_eq!(w.route_decision(b"other", Some(b"other_cluster")), None);
}
