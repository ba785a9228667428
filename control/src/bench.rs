//! `vigil-control bench`: ingest and routing throughput over real HTTP.
//!
//! Why this exists: the service must keep up with every sidecar of a mesh
//! reporting every second (goal: ≥ 1 000 000 managed series updates/s on a
//! 2-core machine) while answering `GET /v1/routing` quickly. The benchmark
//! starts the real service on loopback (temporary data directory, a reporter
//! credential; or targets `--server`) and posts reports shaped like the
//! filter's chunk 0 — the managed canaries' series, their verdicts and the
//! bounded totals — from several concurrent clients. Every bench series
//! belongs to a declared canary, and the figure is counted by the service
//! itself: the growth of `vigil_control_series_matched_total` (series that
//! went into a canary's evidence), not what the clients sent.
//!
//! Three phases of `--seconds` each, in one run: (1) ingest alone; (2) the
//! routing document alone, read by one paced reader (the same-run baseline);
//! (3) ingest and the same reader together: routing p50/p99 under ingest.
//! The reader starts a `GET /v1/routing` every [`ROUTING_PERIOD`] (open
//! loop, each request its own task) and times each from its scheduled
//! start (a late start counts its wait: no coordinated omission). Client and server share the machine, as they
//! would on a node.

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
use vigil_wire::report::{Canary, Report, Series, Totals};

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

/// A reader's period: one `GET /v1/routing` every 2 ms (500/s, like 500
/// sidecars polling each second).
pub const ROUTING_PERIOD: Duration = Duration::from_millis(2);

/// The bench report of `n` series (chunk 0 as the filter sends it: the
/// managed canaries' series, their verdicts and the totals), every series
/// on a bench canary's route and cluster.
pub fn template(n: usize) -> Report {
    let delta = vigil_scorer::window::TickDelta {
        counters: vigil_scorer::window::Counters {
            requests: 50,
            status_4xx: 1,
            latency_sum_us: 2_500_000,
            ..Default::default()
        },
        latency: vec![(300, 20), (310, 25), (330, 5)],
    };
    let mut r = Report::new("bench-x", 1, 1, log::now_ms(), 1000);
    r.series = (0..n)
        .map(|i| {
            let cluster = if i % 2 == 0 { "stable" } else { "canary" };
            Series::from_delta(&format!("bench-{}", i / 2), cluster, &delta, State::Ok, 10)
        })
        .collect();
    r.canaries = (0..n.div_ceil(2))
        .map(|i| Canary {
            name: format!("bench-{i}"),
            route: format!("bench-{i}"),
            state: State::Ok.as_str().to_string(),
            score: 10,
            reason: String::new(),
            steering: false,
        })
        .collect();
    r.totals = Some(Totals {
        series: n as u64,
        requests: 50 * n as u64,
        errors: 0,
    });
    r
}

/// A report as bytes, re-stamped cheaply per request: the encoded template
/// from `"tick_ms"` on (series, canaries, totals) is shared; only the head
/// (sidecar, incarnation, seq, clock) is written per report.
#[derive(Clone)]
struct Body {
    tail: Arc<String>,
}

impl Body {
    fn new(template: &Report) -> Body {
        let text = String::from_utf8_lossy(&template.encode()).into_owned();
        let tail = text
            .find(",\"tick_ms\":")
            .and_then(|at| text.get(at..))
            .unwrap_or("")
            .to_string();
        Body {
            tail: Arc::new(tail),
        }
    }

    fn bytes(&self, sidecar: &str, seq: u64) -> Bytes {
        let head = format!(
            "{{\"version\":{},\"sidecar\":{},\"incarnation\":1,\"seq\":{seq},\"sent_at_ms\":{}",
            vigil_wire::report::REPORT_VERSION,
            serde_json::Value::from(sidecar),
            log::now_ms()
        );
        let mut out = Vec::with_capacity(head.len() + self.tail.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(self.tail.as_bytes());
        Bytes::from(out)
    }
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

/// The service's own count of series that went into a canary's evidence
/// (`vigil_control_series_matched_total` from `GET /metrics`).
async fn matched_total(target: &Target) -> Option<u64> {
    let r = HttpClient::new()
        .request(
            Method::GET,
            &format!("{}/metrics", target.base),
            &[],
            None,
            Duration::from_secs(10),
        )
        .await
        .ok()?;
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix("vigil_control_series_matched_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Post reports from `clients` tasks until `deadline`; returns (reports, errors).
async fn ingest(
    base: &str,
    token: &str,
    clients: usize,
    body: &Body,
    deadline: Instant,
    tag: &str,
) -> (u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, body, ok, bad) = (HttpClient::new(), body.clone(), ok.clone(), bad.clone());
        let url = format!("{base}/v1/reports");
        let auth = format!("Bearer {token}");
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
                        Some(body.bytes(&sidecar, seq)),
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

/// Routing latencies (µs, sorted) and failures of an open-loop reader: a
/// `GET /v1/routing` is started every [`ROUTING_PERIOD`] until `deadline`,
/// each in its own task (pooled connections, as many sidecars poll at
/// once), each timed from its scheduled start — a slow answer never delays
/// the next request, and a late start counts its lateness.
async fn read_routing(base: &str, deadline: Instant) -> (Vec<u64>, u64) {
    let client = Arc::new(HttpClient::new());
    let url = Arc::new(format!("{base}/v1/routing"));
    let mut every = tokio::time::interval(ROUTING_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::new();
    loop {
        let scheduled = every.tick().await.into_std();
        if scheduled >= deadline {
            break;
        }
        let (client, url) = (client.clone(), url.clone());
        requests.push(tokio::spawn(async move {
            match client
                .request(Method::GET, &url, &[], None, Duration::from_secs(5))
                .await
            {
                Ok(r) if r.status == 200 => {
                    Some(u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX))
                }
                _ => None,
            }
        }));
    }
    let (mut lat, mut failures) = (Vec::new(), 0u64);
    for r in requests {
        match r.await {
            Ok(Some(us)) => lat.push(us),
            _ => failures += 1,
        }
    }
    lat.sort_unstable();
    (lat, failures)
}

fn latency_json(lat: &[u64], failures: u64, secs: f64) -> serde_json::Value {
    json!({"p50_us": percentile(lat, 0.5), "p99_us": percentile(lat, 0.99),
           "max_us": lat.last().copied().unwrap_or(0), "samples": lat.len(),
           "requests_per_s": (lat.len() as f64 / secs).round(), "failures": failures})
}

/// CPU time this process (server and clients) has used, seconds, from
/// `/proc/self/stat` (utime + stime; Linux). `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Managed series updates/s over a phase: the service's matched counter.
fn per_s(before: Option<u64>, after: Option<u64>, secs: f64) -> Option<f64> {
    Some((after?.saturating_sub(before?)) as f64 / secs)
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
    let body = Body::new(&template(args.series));
    let report_bytes = body.bytes("bench-x", 1).len();
    let phase = Duration::from_secs(args.seconds);

    // Phase 1: ingest alone.
    let m0 = matched_total(&target).await;
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let (reports, errors) = ingest(
        &target.base,
        &target.token,
        args.clients,
        &body,
        start + phase,
        "a",
    )
    .await;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let m1 = matched_total(&target).await;
    let reports_per_s = reports as f64 / secs;
    let sent_per_s = reports_per_s * args.series as f64;
    let managed_per_s = per_s(m0, m1, secs);
    // Per CPU-second of this process (server and clients together): what
    // a loaded, shared machine still measures fairly.
    let per_cpu_s = match (m0, m1, cpu) {
        (Some(a), Some(b), Some(c)) if c > 0.0 => Some(b.saturating_sub(a) as f64 / c),
        _ => None,
    };

    // Phase 2: the routing document alone (same-run baseline).
    let t = Instant::now();
    let (idle_lat, idle_failures) = read_routing(&target.base, t + phase).await;
    let idle_secs = t.elapsed().as_secs_f64().max(1e-9);

    // Phase 3: routing while the same clients ingest.
    let m2 = matched_total(&target).await;
    let t = Instant::now();
    let deadline = t + phase;
    let background = {
        let (base, token, body, clients) = (
            target.base.clone(),
            target.token.clone(),
            body.clone(),
            args.clients,
        );
        tokio::spawn(async move { ingest(&base, &token, clients, &body, deadline, "b").await })
    };
    let (load_lat, load_failures) = read_routing(&target.base, deadline).await;
    let (bg_reports, bg_errors) = background.await.unwrap_or((0, 0));
    let load_secs = t.elapsed().as_secs_f64().max(1e-9);
    let m3 = matched_total(&target).await;
    let managed_under_routing = per_s(m2, m3, load_secs);

    let goal = 1_000_000.0;
    let met = managed_per_s.is_some_and(|v| v >= goal);
    let mut under = latency_json(&load_lat, load_failures, load_secs);
    if let Some(o) = under.as_object_mut() {
        o.insert(
            "ingest_series_updates_per_s".into(),
            json!(managed_under_routing.map(f64::round)),
        );
        o.insert(
            "ingest_reports_per_s".into(),
            json!((bg_reports as f64 / load_secs).round()),
        );
        o.insert("ingest_errors".into(), json!(bg_errors));
    }
    let results = json!({
        "ingest": {"series_updates_per_s": managed_per_s.map(f64::round),
                   "series_sent_per_s": sent_per_s.round(),
                   "reports_per_s": reports_per_s.round(),
                   "series_per_report": args.series, "report_bytes": report_bytes, "clients": args.clients,
                   "seconds": args.seconds, "reports": reports, "errors": errors,
                   "cpu_s": cpu, "cores_busy": cpu.map(|c| c / secs),
                   "series_updates_per_cpu_s": per_cpu_s.map(f64::round),
                   "counted_on": "managed series: growth of vigil_control_series_matched_total"},
        "routing_idle": latency_json(&idle_lat, idle_failures, idle_secs),
        "routing_under_ingest": under,
        "routing_reader_period_us": ROUTING_PERIOD.as_micros() as u64,
        "goal_series_updates_per_s": goal,
        "meets_goal": met,
    });
    let fmt = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}"));
    println!(
        "vigil-control bench ({} clients, {} series/report over {} canaries, {} B/report, {} s per phase)",
        args.clients,
        args.series,
        args.series.div_ceil(2),
        report_bytes,
        args.seconds
    );
    println!("{:<46} {:>14}", "metric", "value");
    println!("{:<46} {:>14.0}", "ingest reports/s", reports_per_s);
    println!(
        "{:<46} {:>14}",
        "ingest managed series-updates/s (service count)",
        fmt(managed_per_s)
    );
    println!(
        "{:<46} {:>14.0}",
        "ingest series sent/s (client count)", sent_per_s
    );
    println!("{:<46} {:>14}", "ingest errors", errors);
    println!(
        "{:<46} {:>14}",
        "ingest managed series-updates per CPU-second",
        fmt(per_cpu_s)
    );
    println!(
        "{:<46} {:>14}",
        "ingest cores busy (server + clients)",
        cpu.map_or_else(|| "n/a".to_string(), |c| format!("{:.2}", c / secs))
    );
    let row = |name: &str, lat: &[u64]| {
        println!(
            "{:<46} {:>6} / {:>6} / {:>6}",
            name,
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat.last().copied().unwrap_or(0)
        )
    };
    row("routing alone p50 / p99 / max µs", &idle_lat);
    row("routing under ingest p50 / p99 / max µs", &load_lat);
    println!(
        "{:<46} {:>14}",
        "ingest managed series-updates/s with routing",
        fmt(managed_under_routing)
    );
    println!(
        "{:<46} {:>14}",
        "routing failures (alone / under ingest)",
        format!("{idle_failures} / {load_failures}")
    );
    println!(
        "{:<46} {:>14}",
        "goal ≥1000000 managed series-updates/s",
        if met { "met" } else { "NOT met" }
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
    if errors > 0 || bg_errors > 0 || managed_per_s.is_none() {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_report_is_a_valid_report_of_managed_series() {
        let body = Body::new(&template(1000));
        let r = crate::report::parse(&body.bytes("bench-a-0-1", 7)).unwrap();
        assert_eq!(
            (r.sidecar.as_str(), r.seq, r.incarnation),
            ("bench-a-0-1", 7, 1)
        );
        assert_eq!(r.series.len(), 1000);
        assert_eq!(r.canaries.len(), 500);
        assert_eq!(r.totals.map(|t| t.series), Some(1000));
        assert!(r.encode().len() < vigil_wire::report::CHUNK_TARGET_BYTES);
        // Every series belongs to a declared bench canary.
        let names: std::collections::HashSet<String> = bench_canaries(1000)
            .into_iter()
            .filter_map(|c| c.route)
            .collect();
        assert!(r.series.iter().all(|s| names.contains(&s.route)));
    }
}
