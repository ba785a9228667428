//! Series-registry lifecycle in real Envoy (issue 14): a flood of 10 000 distinct routes
//! and a canary's rollout fill the series table, the rollout ends (it leaves the configuration), a new
//! managed canary arrives after another flood — and gets series of its own (not
//! `overflow`) and is judged. Then idle series age out (`series_idle_s`) and their
//! places are reused by new routes instead of overflowing.
//!
//! The configuration change goes through a watched LDS file, as a WasmPlugin update
//! does. Before issue 14 the old configuration's registry (shared `vigil.registry`,
//! already full) was the new one's too, so the new canary landed in `overflow`.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_e2e::envoy::{prepend_flood_routes, routes_mut, Envoy, EnvoyOptions};
use vigil_e2e::lds::{free_port, listener, Lds};
use vigil_e2e::load::{fixed_requests, OpenLoop};
use vigil_e2e::prom::Metrics;
use vigil_e2e::upstream::Upstream;

const ROUTES: usize = 10_000;
const MAX_SERIES: u64 = 64;
/// `series_idle_s` of the second configuration (the first keeps its series 60 s, so
/// its table stays full).
const IDLE_S: u64 = 3;

fn config(canary: &str, idle_s: u64) -> String {
    json!({
        "mode": "shadow",
        "tick_ms": 500,
        "max_series": MAX_SERIES,
        "series_idle_s": idle_s,
        "canaries": [{"name": canary, "route": canary, "stable_cluster": "stable", "canary_cluster": "canary"}]
    })
    .to_string()
}

/// A route `name` (prefix `/<name>`) split 80/20 between stable and canary.
fn add_split_route(b: &mut Value, name: &str) -> vigil_e2e::Result<()> {
    routes_mut(b)?.insert(
        0,
        json!({
            "name": name,
            "match": { "prefix": format!("/{name}") },
            "route": { "weighted_clusters": { "clusters": [
                { "name": "stable", "weight": 80 }, { "name": "canary", "weight": 20 }
            ] } }
        }),
    );
    Ok(())
}

async fn flood(addr: SocketAddr, from: usize, n: usize) {
    let started = Instant::now();
    let outcomes = fixed_requests(
        addr,
        n,
        16,
        move |i| format!("/r{}/x", from + i),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let bad = outcomes.iter().filter(|o| o.status != Some(200)).count();
    println!(
        "lifecycle: {n} requests to routes r{from}..r{} in {:.1}s, {bad} not 200",
        from + n - 1,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(bad, 0);
}

/// The filter's own log lines about the registry, for failure messages.
fn summary(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("vigil: ") && !l.contains("vigil: series route="))
        .collect();
    lines
        .get(lines.len().saturating_sub(15)..)
        .unwrap_or_default()
        .join("\n")
}

fn series(m: &Metrics) -> f64 {
    m.value("vigil_series", &[]).unwrap_or(f64::NAN)
}

fn dropped(m: &Metrics) -> f64 {
    m.sum("vigil_series_dropped_total", &[]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_then_new_canary_gets_series_and_idle_series_age_out() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let lds = Arc::new(Lds::new("lifecycle").unwrap());
    let port = free_port().unwrap();
    let template: Arc<Mutex<Option<Value>>> = Arc::default();
    let opts = {
        let (lds, template) = (lds.clone(), template.clone());
        EnvoyOptions::new("lifecycle", config("first", 60))
            .upstreams(stable.port(), canary.port())
            .transform(move |b| {
                add_split_route(b, "first")?;
                add_split_route(b, "second")?;
                prepend_flood_routes(b, ROUTES, "stable")?;
                let t = Lds::template(b)?;
                lds.install(
                    b,
                    &[listener(
                        &t,
                        "ingress",
                        port,
                        "checkout",
                        &config("first", 60),
                    )?],
                )?;
                *template.lock().map_err(|_| "poisoned")? = Some(t);
                Ok(())
            })
    };
    let mut opts = opts;
    opts.extra_args = ["--drain-time-s", "2", "--drain-strategy", "immediate"]
        .map(String::from)
        .to_vec();
    let envoy = Envoy::start(opts).await.unwrap();
    Lds::wait_active(
        &envoy,
        &[("ingress", r#"\"name\":\"first\""#)],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t = template.lock().unwrap().clone().unwrap();

    // 1. Configuration 1: 10 000 routes flood the table, then canary "first" rolls out
    //    (in this order the table ends exactly full: the flood takes every place but
    //    the 2 reserved for the canary, the canary takes those).
    flood(addr, 0, ROUTES).await;
    let first = OpenLoop {
        path: "/first/x".to_string(),
        ..OpenLoop::new(50.0, Duration::from_secs(2))
    };
    let r = first.run(addr, Instant::now(), None).await.unwrap();
    assert!(r.iter().all(|o| o.status == Some(200)));
    let full = envoy
        .wait_metrics(Duration::from_secs(10), |m| {
            (series(m) >= MAX_SERIES as f64 && dropped(m) > 0.0).then(|| m.clone())
        })
        .await;
    let Ok(m) = full else {
        let m = envoy.metrics().await.unwrap();
        panic!(
            "config 1 table not full: vigil_series {}, dropped {}, overflow requests {:?}\n{}",
            series(&m),
            dropped(&m),
            m.sum("vigil_requests_total", &[("route", "overflow")]),
            summary(&envoy.log())
        );
    };
    println!(
        "lifecycle: config 1 full: vigil_series {} (max_series {MAX_SERIES}), dropped {}",
        series(&m),
        dropped(&m)
    );
    assert!(series(&m) <= MAX_SERIES as f64);
    assert!(m
        .value(
            "vigil_requests_total",
            &[("route", "first"), ("cluster", "canary")]
        )
        .is_some());

    // 2. The rollout ends: "first" leaves the configuration, "second" is the new canary.
    lds.write(
        &[listener(&t, "ingress", port, "checkout", &config("second", IDLE_S)).unwrap()],
        2,
    )
    .unwrap();
    Lds::wait_active(
        &envoy,
        &[("ingress", r#"\"name\":\"second\""#)],
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let dropped_before = dropped(&envoy.metrics().await.unwrap());
    // Another flood under the new configuration, then the new canary's traffic.
    flood(addr, 0, ROUTES).await;
    let before_second = Instant::now();
    let second = OpenLoop {
        path: "/second/x".to_string(),
        ..OpenLoop::new(100.0, Duration::from_secs(6))
    };
    let out = second.run(addr, Instant::now(), None).await.unwrap();
    assert!(out.iter().all(|o| o.status == Some(200)));
    let canary_labels = [("route", "second"), ("cluster", "canary")];
    let judged = envoy
        .wait_metrics(Duration::from_secs(10), |m| {
            m.value("vigil_state", &canary_labels).filter(|s| *s >= 1.0)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = envoy.metrics().await.unwrap();
    let counted = m
        .sum("vigil_requests_total", &[("route", "second")])
        .unwrap_or(0.0);
    println!(
        "lifecycle: new canary 'second': state {:?} after {:.1}s, vigil_requests_total{{route=second}} {counted} of {} sent, canary series {:?}, vigil_series {}, dropped +{} (the second flood)",
        judged.as_ref().ok(),
        before_second.elapsed().as_secs_f64(),
        out.len(),
        m.value("vigil_requests_total", &canary_labels),
        series(&m),
        dropped(&m) - dropped_before,
    );
    assert!(
        dropped(&m) > dropped_before,
        "the second flood overflowed the table too"
    );
    assert!(
        m.value("vigil_requests_total", &canary_labels)
            .unwrap_or(0.0)
            > 0.0,
        "the new canary got a series of its own"
    );
    assert_eq!(
        counted,
        out.len() as f64,
        "every request of the new canary is in its series, none in overflow"
    );
    judged.expect("the new canary is judged (vigil_state >= ok)");
    let log = envoy.log();
    assert!(
        !log.contains("canary 'second' matched no cluster"),
        "the new canary matched"
    );

    // 3. Idle age-out: without traffic the flood's series leave the table within
    //    series_idle_s (+ a few ticks), and new routes take their places.
    let aged = envoy
        .wait_metrics(Duration::from_secs(IDLE_S + 10), |m| {
            (series(m) <= 2.0).then(|| series(m))
        })
        .await
        .unwrap();
    let dropped_now = dropped(&envoy.metrics().await.unwrap());
    flood(addr, 5_000, 40).await;
    let m = envoy
        .wait_metrics(Duration::from_secs(10), |m| {
            (series(m) >= 40.0).then(|| m.clone())
        })
        .await
        .unwrap();
    println!(
        "lifecycle: after {IDLE_S}s idle vigil_series {aged}; 40 new routes → vigil_series {}, dropped +{}",
        series(&m),
        dropped(&m) - dropped_now
    );
    assert_eq!(
        dropped(&m),
        dropped_now,
        "the new routes reuse freed places, none overflow"
    );
    let failures = envoy.wasm_failures().await.unwrap();
    assert!(failures.is_empty(), "wasm VM failures: {failures:#?}");
}
