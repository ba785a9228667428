//! Hostcalls per request: the filter's request path
//! (`vigil_filter_core::request_path::RequestFlow`, which the glue's HTTP
//! callbacks forward to) run over a counting host, one figure per kind of
//! request. Every property, header and clock call the filter makes in Envoy
//! goes through that flow, so these are the counts in Envoy too (the PII
//! guard's body calls aside: it is off here).

use vigil_e2e::Result;
use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{Level, Worker};
use vigil_filter_core::lease;
use vigil_filter_core::metrics::MemorySink;
use vigil_filter_core::request_path::{run_request, CountingHost};
use vigil_filter_core::shared::{MemoryStore, SharedStore};
use vigil_filter_core::verdicts::{SteeredRoute, VerdictTable};
use vigil_scorer::verdict::Signal;

use crate::report::Res;

const CANARY: &str = r#""canaries":[{"name":"checkout","route":"checkout","stable_cluster":"stable","canary_cluster":"canary"}]"#;

fn worker(extra: &str) -> Result<Worker> {
    let json = format!(r#"{{{extra}{CANARY}}}"#);
    let cfg = PluginConfig::parse(json.as_bytes()).map_err(|e| format!("config: {e:?}"))?;
    Ok(Worker::new(cfg, 42))
}

/// Counts per scenario, pushed as `hostcalls.<scenario>.per_request`.
pub fn run(out: &mut Vec<Res>) -> Result<()> {
    let mut cases: Vec<(&str, CountingHost, Worker)> = Vec::new();
    cases.push((
        "steer.unary_200",
        CountingHost::unary("checkout", "stable", 200),
        worker(r#""mode":"steer","#)?,
    ));
    // Slower than `fast_request_us` (2 ms): the attempt count and pool
    // wait are read too.
    let mut slow = CountingHost::unary("checkout", "stable", 200);
    slow.clock_step_ns = 1_500_000;
    cases.push(("steer.unary_200_slow", slow, worker(r#""mode":"steer","#)?));
    cases.push((
        "shadow.unary_200",
        CountingHost::unary("checkout", "stable", 200),
        worker(r#""mode":"shadow","#)?,
    ));
    let mut grpc = CountingHost::unary("checkout", "stable", 200);
    grpc.response_headers
        .insert("content-type".into(), b"application/grpc".to_vec());
    cases.push(("steer.grpc_200", grpc, worker(r#""mode":"steer","#)?));
    let mut spoof = CountingHost::unary("checkout", "stable", 200);
    spoof
        .request_headers
        .insert("x-vigil-subset".into(), b"canary".to_vec());
    cases.push((
        "steer.client_header_removed",
        spoof,
        worker(r#""mode":"steer","#)?,
    ));
    cases.push((
        "steer.score_header",
        CountingHost::unary("checkout", "stable", 200),
        worker(r#""mode":"steer","score_header":true,"#)?,
    ));
    // A steered route: another worker holds the lease and published it.
    let store = MemoryStore::new();
    let now = 1_700_000_000_000u64;
    let mut steered = worker(r#""mode":"steer","#)?;
    lease::acquire(&store, &steered.keys().lease, 1, now, 60_000);
    let table = VerdictTable {
        generation: 1,
        steered: vec![SteeredRoute {
            route: b"checkout".to_vec(),
            reason: Signal::Errors,
        }],
        ..Default::default()
    };
    let _ = store.set(&steered.keys().steering, &table.encode(), None);
    steered.on_tick(
        now,
        &store,
        &mut MemorySink::default(),
        &mut |_: Level, _: &str| {},
    );
    cases.push((
        "steer.steered",
        CountingHost::unary("checkout", "canary", 200),
        steered,
    ));
    for (name, mut host, mut w) in cases {
        run_request(&mut w, &mut host);
        eprintln!(
            "bench: hostcalls {name}: {} ({})",
            host.calls,
            host.reads.join(", ")
        );
        out.push(
            Res::new(
                format!("hostcalls.{name}.per_request"),
                host.calls as f64,
                "calls",
            )
            .note(format!("properties read: {}", host.reads.join(", "))),
        );
    }
    Ok(())
}
