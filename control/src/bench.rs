//! `vigil-control bench`: ingest and routing throughput over real HTTP.
//!
//! Why this exists: the service must keep up with every sidecar of a mesh
//! reporting every second (goal: ≥ 100 000 series updates/s on a 2-core
//! machine) while answering `GET /v1/routing` quickly. The benchmark starts
//! the real service on loopback (temporary data directory; or targets
//! `--server`), posts batched reports shaped like the filter's from several
//! concurrent clients, then measures routing latency while ingest goes on.
//! Client and server share the machine, as they would on a node.

use crate::client::HttpClient;
use crate::http;
use crate::log;
use crate::metrics::Metrics;
use crate::service::{Options, Service};
use crate::spec::CanarySpec;
use bytes::Bytes;
use hyper::Method;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_scorer::verdict::State;
use vigil_wire::report::{Report, Series};

/// Benchmark settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchArgs {
    /// Seconds per phase.
    pub seconds: u64,
    /// Series per report.
    pub series: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Where to write the results as JSON.
    pub json: Option<PathBuf>,
    /// Target server (default: an in-process one).
    pub server: Option<String>,
    /// Token file for `--server`.
    pub token_file: Option<PathBuf>,
}

/// Most series per bench report: every series belongs to a declared bench
/// canary (two series per canary), so ingest is counted on managed series
/// only, as the filter now sends them.
pub const MAX_BENCH_SERIES: usize = 2 * crate::service::MAX_CANARIES;

/// The bench canaries covering `n` series: `bench-<i>` on route `bench-<i>`,
/// clusters `stable` and `canary`.
pub fn bench_canaries(n: usize) -> Vec<CanarySpec> {
    (0..n.div_ceil(2).max(1))
        .filter_map(|i| {
            CanarySpec::from_json_value(
                json!({"name": format!("bench-{i}"), "route": format!("bench-{i}"),
                "stable_cluster": "stable", "canary_cluster": "canary", "step_duration_s": 3600}),
            )
            .ok()
        })
        .collect()
}

/// The `series` array of a bench report (JSON text, `vigil-wire` series
/// shaped like the filter's), all on the bench canaries' routes.
pub fn series_json(n: usize) -> String {
    let delta = vigil_scorer::window::TickDelta {
        counters: vigil_scorer::window::Counters {
            requests: 50,
            status_4xx: 1,
            latency_sum_us: 2_500_000,
            ..Default::default()
        },
        latency: vec![(300, 20), (310, 25), (330, 5)],
    };
    let items: Vec<Series> = (0..n)
        .map(|i| {
            let cluster = if i % 2 == 0 { "stable" } else { "canary" };
            Series::from_delta(&format!("bench-{}", i / 2), cluster, &delta, State::Ok, 10)
        })
        .collect();
    serde_json::to_string(&items).unwrap_or_default()
}

/// A report body: the `vigil-wire` header with the pre-encoded series
/// spliced in (the client shares the machine, so the series are encoded
/// once, not per request).
fn body(sidecar: &str, seq: u64, series: &str) -> Bytes {
    let head = String::from_utf8_lossy(&Report::new(sidecar, 1, seq, log::now_ms(), 1000).encode())
        .into_owned();
    Bytes::from(head.replacen("\"series\":[]", &format!("\"series\":{series}"), 1))
}

struct Target {
    base: String,
    token: String,
    _server: Option<tokio::task::JoinHandle<()>>,
    data: Option<PathBuf>,
}

async fn start_local(series: usize) -> Result<Target, String> {
    let data = std::env::temp_dir().join(format!(
        "vigil-bench-{}-{}",
        std::process::id(),
        log::now_ms()
    ));
    let metrics = Arc::new(Metrics::default());
    let opts = Options {
        out: data.join("gitops"),
        data: data.clone(),
        webhooks: Vec::new(),
        webhook_allow: crate::egress::Allow::default(),
        model: vigil_scorer::model::Model::default(),
        limits: crate::plausibility::Limits::default(),
        sidecar_ttl_ms: crate::service::SIDECAR_TTL_MS,
    };
    let svc = Arc::new(
        Service::open(opts, &bench_canaries(series), None, metrics).map_err(|e| e.to_string())?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let token = format!("bench-{}-{}", std::process::id(), log::now_ms());
    let _ticker = http::spawn_ticker(svc.clone(), Duration::from_secs(1));
    let creds = crate::credentials::Credentials::parse(&format!(
        "reporters:\n  - name: bench\n    sha256: {}\n    sidecars: [\"bench-*\"]\n",
        crate::credentials::digest_hex(&token)
    ))?;
    let creds = Arc::new(crate::credentials::CredentialStore::fixed(creds));
    let server = tokio::spawn(async move {
        let _ = http::serve(
            listener,
            svc,
            creds,
            crate::edge::Limits::default(),
            std::future::pending(),
        )
        .await;
    });
    Ok(Target {
        base: format!("http://{addr}"),
        token,
        _server: Some(server),
        data: Some(data),
    })
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(idx.min(sorted.len() - 1)).copied().unwrap_or(0)
}

/// Post reports from `clients` tasks until `deadline`; returns (reports, errors).
async fn ingest(
    target: &Target,
    clients: usize,
    series: &Arc<String>,
    deadline: Instant,
    tag: &str,
) -> (u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, series, ok, bad) =
            (HttpClient::new(), series.clone(), ok.clone(), bad.clone());
        let url = format!("{}/v1/reports", target.base);
        let auth = format!("Bearer {}", target.token);
        let sidecar = format!("bench-{tag}-{c}-{}", log::now_ms());
        tasks.push(tokio::spawn(async move {
            let mut seq = 1u64;
            while Instant::now() < deadline {
                let r = client
                    .request(
                        Method::POST,
                        &url,
                        &[
                            ("authorization", &auth),
                            ("content-type", "application/json"),
                        ],
                        Some(body(&sidecar, seq, &series)),
                        Duration::from_secs(10),
                    )
                    .await;
                seq += 1;
                match r {
                    Ok(r) if r.status == 202 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed))
}

/// Run the benchmark; prints a table, optionally writes JSON. Exit code.
pub async fn run(args: BenchArgs) -> i32 {
    let target = match &args.server {
        None => match start_local(args.series).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("bench: cannot start the service: {e}");
                return 1;
            }
        },
        Some(url) => match crate::cli::load_token(args.token_file.as_deref()) {
            Ok(token) => Target {
                base: url.trim_end_matches('/').to_string(),
                token,
                _server: None,
                data: None,
            },
            Err(e) => {
                eprintln!("bench: {e}");
                return 2;
            }
        },
    };
    let series = Arc::new(series_json(args.series));
    let report_bytes = body("bench-x", 1, &series).len();

    // Phase 1: ingest only.
    let start = Instant::now();
    let (reports, errors) = ingest(
        &target,
        args.clients,
        &series,
        start + Duration::from_secs(args.seconds),
        "a",
    )
    .await;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let reports_per_s = reports as f64 / secs;
    let series_per_s = reports_per_s * args.series as f64;

    // Phase 2: routing reads while one client keeps ingesting.
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let background = {
        let (base, token, series) = (target.base.clone(), target.token.clone(), series.clone());
        tokio::spawn(async move {
            let t = Target {
                base,
                token,
                _server: None,
                data: None,
            };
            ingest(&t, 1, &series, deadline, "b").await
        })
    };
    let lat = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut readers = Vec::new();
    let route_start = Instant::now();
    for _ in 0..args.clients {
        let (client, url, lat) = (
            HttpClient::new(),
            format!("{}/v1/routing", target.base),
            lat.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match client
                    .request(Method::GET, &url, &[], None, Duration::from_secs(5))
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        mine.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))
                    }
                    _ => failures += 1,
                }
            }
            if let Ok(mut all) = lat.lock() {
                all.extend(mine);
            }
            failures
        }));
    }
    let mut routing_failures = 0;
    for r in readers {
        routing_failures += r.await.unwrap_or(0);
    }
    let (bg_reports, _) = background.await.unwrap_or((0, 0));
    let route_secs = route_start.elapsed().as_secs_f64().max(1e-9);
    let mut lat = lat.lock().map(|v| v.clone()).unwrap_or_default();
    lat.sort_unstable();
    let routing_rps = lat.len() as f64 / route_secs;

    let results = json!({
        "ingest": {"reports_per_s": reports_per_s.round(), "series_updates_per_s": series_per_s.round(),
                   "series_per_report": args.series, "report_bytes": report_bytes, "clients": args.clients,
                   "seconds": args.seconds, "reports": reports, "errors": errors},
        "routing_under_load": {"requests_per_s": routing_rps.round(), "p50_us": percentile(&lat, 0.5),
                   "p99_us": percentile(&lat, 0.99), "max_us": lat.last().copied().unwrap_or(0),
                   "failures": routing_failures, "concurrent_ingest_reports_per_s": (bg_reports as f64 / route_secs).round()},
        "goal_series_updates_per_s": 100_000,
        "meets_goal": series_per_s >= 100_000.0,
    });
    println!(
        "vigil-control bench ({} clients, {} series/report, {} B/report, {} s per phase)",
        args.clients, args.series, report_bytes, args.seconds
    );
    println!("{:<34} {:>14}", "metric", "value");
    println!("{:<34} {:>14.0}", "ingest reports/s", reports_per_s);
    println!("{:<34} {:>14.0}", "ingest series-updates/s", series_per_s);
    println!("{:<34} {:>14}", "ingest errors", errors);
    println!(
        "{:<34} {:>14.0}",
        "routing GET/s (under ingest)", routing_rps
    );
    println!("{:<34} {:>14}", "routing p50 µs", percentile(&lat, 0.5));
    println!("{:<34} {:>14}", "routing p99 µs", percentile(&lat, 0.99));
    println!(
        "{:<34} {:>14}",
        "routing max µs",
        lat.last().copied().unwrap_or(0)
    );
    println!(
        "{:<34} {:>14}",
        "goal ≥100000 series-updates/s",
        if series_per_s >= 100_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::write(
            path,
            serde_json::to_string_pretty(&results).unwrap_or_default(),
        ) {
            eprintln!("bench: cannot write {}: {e}", path.display());
        }
    }
    if let Some(d) = &target.data {
        let _ = std::fs::remove_dir_all(d);
    }
    if errors > 0 {
        1
    } else {
        0
    }
}
