//! Cardinality of observed edges in real Envoy with real mTLS (issue 15):
//! one destination sidecar (`orders`, inbound listener requiring a client
//! certificate from the test CA) runs the Vigil filter with `edges` and
//! small caps, reporting to the real control service through a relay that
//! measures every report body.
//!
//! - 10 000 distinct callers: 10 000 client certificates with distinct
//!   SPIFFE URI SANs, generated in-process, each making one request over its
//!   own TLS connection (full handshake, no session reuse);
//! - 100 000 distinct paths `/v1/items/<letters>` (letters only: the
//!   templater keeps them, so each is its own template) from one caller.
//!
//! Then, from Envoy's `/stats/prometheus` and the control service's
//! `GET /v1/graph`: distinct callers and templates kept = the caps; the
//! overflow counters are exactly the requests beyond the caps; every request
//! is accounted (edge requests + unattributed = sent); the biggest report
//! body stays small; Envoy's resident memory and heap barely move between
//! 1 000 and 10 000 callers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use vigil_e2e::control::{ControlService, TOKEN};
use vigil_e2e::envoy::{Envoy, EnvoyOptions};
use vigil_e2e::http::request_frame;
use vigil_e2e::sidecars::{free_port, spiffe_id, Pki, SidecarSpec};
use vigil_e2e::upstream::Upstream;

const CALLERS: usize = 10_000;
const PATHS: usize = 100_000;
const MAX_SOURCES: usize = 100;
const MAX_TEMPLATES: usize = 50;
const MAX_SERVICES: usize = 4;
const MAX_EDGES: usize = 64;
/// Concurrent callers (each its own handshake).
const CALLER_TASKS: usize = 32;
/// Keep-alive connections carrying the distinct paths (the upstream answers
/// after ~1 ms: enough of them to keep Envoy's one worker busy).
const PATH_CONNECTIONS: usize = 32;

fn plugin_config() -> String {
    json!({
        "tick_ms": 500,
        "control": {"cluster": "vigil-control", "token": TOKEN, "timeout_ms": 1000},
        "edges": {"service": "orders", "version": "v1", "identity": spiffe_id("orders"),
                  "max_edges": MAX_EDGES, "max_templates_per_service": MAX_TEMPLATES,
                  "max_sources": MAX_SOURCES, "max_services": MAX_SERVICES},
    })
    .to_string()
}

/// A TCP relay in front of the control service that forwards both ways and
/// records the body size of every request the sidecar sends (HTTP/1.1,
/// `content-length` framed, one request at a time per connection).
async fn measuring_relay(upstream: u16) -> (u16, Arc<Mutex<Vec<usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let out = sizes.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let sizes = sizes.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut pending: Vec<u8> = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let Ok(n) = cr.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        let _ = sw.shutdown().await;
                        return;
                    }
                    if sw.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some((head, len)) = request_frame(&pending) {
                        if pending.len() < head + len {
                            break;
                        }
                        sizes.lock().unwrap().push(len);
                        pending.drain(..head + len);
                    }
                }
            });
        }
    });
    (port, out)
}

/// A client TLS configuration presenting `cert`/`key`, trusting the test CA.
fn client_config(ca: &[u8], cert: Vec<u8>, key: Vec<u8>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    Arc::new(cfg)
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(port: u16, cfg: Arc<ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("orders").unwrap();
    TlsConnector::from(cfg).connect(name, tcp).await
}

/// One `GET path` on a keep-alive connection; the response status.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: orders\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((head, len)) = request_frame(buf) {
            if buf.len() >= head + len {
                let status = String::from_utf8_lossy(&buf[..head])
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return Ok(status);
            }
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A letters-only word for `i` (base 26, at least four letters): distinct
/// for distinct `i`, never folded to `{id}` by the templater.
fn word(mut i: usize) -> String {
    let mut w = Vec::new();
    for _ in 0..4 {
        w.push(b'a' + (i % 26) as u8);
        i /= 26;
    }
    while i > 0 {
        w.push(b'a' + (i % 26) as u8);
        i /= 26;
    }
    String::from_utf8(w).unwrap()
}

/// Envoy's resident set (KiB) and its allocator's `allocated` bytes (admin `/memory`).
async fn memory(envoy: &Envoy) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", envoy.pid())).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let m: Value = serde_json::from_slice(&envoy.admin_get("/memory").await.unwrap().body).unwrap();
    let allocated = m["allocated"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| m["allocated"].as_u64())
        .unwrap_or(0);
    (rss_kib, allocated)
}

/// Envoy's CPU time so far, seconds (`/proc/<pid>/stat` utime + stime).
fn cpu_s(envoy: &Envoy) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", envoy.pid())).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks = f[11] + f[12];
    // USER_HZ: /proc reports clock ticks of 1/100 s on Linux.
    ticks / 100.0
}

/// `count` distinct callers, `caller-<from..from+count>`, one request each
/// over its own mTLS connection.
/// Returns the requests answered and the seconds spent issuing certificates.
async fn run_callers(port: u16, pki: &Pki, from: usize, count: usize) -> (u64, f64) {
    let ca = Arc::new(pki.ca_der());
    let t = Instant::now();
    // Certificates first (CPU-bound, off the handshake clock).
    let configs: Vec<Arc<ClientConfig>> = (from..from + count)
        .map(|i| {
            let (cert, key) = pki.issue_der(&format!("caller-{i}")).unwrap();
            client_config(&ca, cert, key)
        })
        .collect();
    let issue_s = t.elapsed().as_secs_f64();
    let configs = Arc::new(configs);
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CALLER_TASKS {
        let (configs, next, ok) = (configs.clone(), next.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(cfg) = configs.get(i) else {
                    return;
                };
                let mut s = connect(port, cfg.clone())
                    .await
                    .unwrap_or_else(|e| panic!("caller {i}: handshake: {e}"));
                let status = get(&mut s, "/v1/ping", &mut buf).await.unwrap();
                assert_eq!(status, 200, "caller {i}");
                ok.fetch_add(1, Ordering::Relaxed);
                let _ = s.shutdown().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), issue_s)
}

async fn graph_totals(control: &ControlService) -> (Value, u64, u64) {
    let g = control.get("/v1/graph").await.unwrap();
    let kept: u64 = g["edges"].as_array().map_or(0, |e| {
        e.iter().map(|x| x["requests"].as_u64().unwrap_or(0)).sum()
    });
    let unattributed = g["overflow"]["reported_unattributed_requests"]
        .as_u64()
        .unwrap_or(0)
        + g["overflow"]["dropped_requests"].as_u64().unwrap_or(0);
    (g, kept, unattributed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_and_100k_paths_stay_within_the_caps() {
    let t0 = Instant::now();
    let pki = Pki::new().unwrap();
    let control = ControlService::start_with_args(
        "edges-cardinality",
        "",
        500,
        &["--graph-learning-s", "3600", "--graph-horizon-s", "600"],
    )
    .await
    .unwrap();
    let (relay_port, report_sizes) = measuring_relay(control.port()).await;
    let app = Upstream::start("orders").await.unwrap();
    let inbound = free_port().unwrap();
    let spec = SidecarSpec {
        service: "orders".into(),
        identity: pki.issue("orders").unwrap(),
        ca: pki.ca.clone(),
        inbound: Some((inbound, app.port())),
        outbound: free_port().unwrap(),
        peers: vec![],
        control_port: relay_port,
        rbac: None,
    };
    let config = plugin_config();
    let envoy = Envoy::start(
        EnvoyOptions::new("edges-cardinality", config)
            .concurrency(1)
            .transform(move |b| spec.apply(b)),
    )
    .await
    .unwrap();
    let mut sent: u64 = 0;

    // The path client's identity first: it is a known source before the callers come.
    let (cert, key) = pki.issue_der("client").unwrap();
    let client = client_config(&pki.ca_der(), cert, key);
    let mut buf = Vec::new();
    {
        let mut s = connect(inbound, client.clone()).await.unwrap();
        assert_eq!(get(&mut s, "/v1/ping", &mut buf).await.unwrap(), 200);
        sent += 1;
    }

    // 1. 10 000 distinct callers: memory after the first 1 000 and after all.
    let t = Instant::now();
    let cpu0 = cpu_s(&envoy);
    let (n, issue_1k) = run_callers(inbound, &pki, 0, 1_000).await;
    sent += n;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mem_1k = memory(&envoy).await;
    let (n, issue_9k) = run_callers(inbound, &pki, 1_000, CALLERS - 1_000).await;
    sent += n;
    let callers_s = t.elapsed().as_secs_f64();
    let callers_cpu = cpu_s(&envoy) - cpu0;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mem_10k = memory(&envoy).await;
    println!(
        "callers: {CALLERS} distinct mTLS callers in {callers_s:.1} s ({:.1} s of it issuing \
         the certificates; {CALLER_TASKS} tasks); Envoy CPU {callers_cpu:.1} s ({:.0} µs per handshake + request)",
        issue_1k + issue_9k,
        callers_cpu * 1e6 / CALLERS as f64
    );

    // 2. 100 000 distinct paths over keep-alive connections of the client.
    let t = Instant::now();
    let cpu0 = cpu_s(&envoy);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PATH_CONNECTIONS {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = connect(inbound, client).await.unwrap();
            let mut buf = Vec::new();
            let mut n = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= PATHS {
                    return n;
                }
                let path = format!("/v1/items/{}", word(i));
                let status = get(&mut s, &path, &mut buf).await.unwrap();
                assert_eq!(status, 200, "{path}");
                n += 1;
            }
        }));
    }
    for task in tasks {
        sent += task.await.unwrap();
    }
    let paths_s = t.elapsed().as_secs_f64();
    let paths_cpu = cpu_s(&envoy) - cpu0;
    println!(
        "paths: {PATHS} distinct paths in {paths_s:.1} s ({PATH_CONNECTIONS} keep-alive \
         connections); Envoy CPU {paths_cpu:.1} s ({:.0} µs per request)",
        paths_cpu * 1e6 / PATHS as f64
    );
    assert_eq!(sent, (1 + CALLERS + PATHS) as u64);

    // 3. Everything reported: edge requests + unattributed = sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (graph, kept, unattributed) = loop {
        let (g, kept, un) = graph_totals(&control).await;
        if kept + un >= sent || Instant::now() > deadline {
            break (g, kept, un);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Let another tick pass: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (graph2, kept2, unattributed2) = graph_totals(&control).await;
    assert_eq!(
        (kept2, unattributed2),
        (kept, unattributed),
        "no more reports after all was counted"
    );
    drop(graph2);
    assert_eq!(
        kept + unattributed,
        sent,
        "every request accounted: {kept} in edges + {unattributed} unattributed; overflow {}",
        graph["overflow"]
    );
    assert_eq!(
        graph["overflow"]["dropped_requests"], 0,
        "control's own cap not reached"
    );

    let edges = graph["edges"].as_array().unwrap();
    let named_sources: std::collections::BTreeSet<&str> = edges
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .filter(|s| *s != "{overflow}")
        .collect();
    let templates: std::collections::BTreeSet<&str> = edges
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .filter(|p| *p != "/{overflow}")
        .collect();
    let folded_source: u64 = edges
        .iter()
        .filter(|e| e["source"] == "{overflow}")
        .map(|e| e["requests"].as_u64().unwrap())
        .sum();
    let folded_path: u64 = edges
        .iter()
        .filter(|e| e["path"] == "/{overflow}")
        .map(|e| e["requests"].as_u64().unwrap())
        .sum();
    assert!(
        named_sources.len() <= MAX_SOURCES,
        "{} named callers in the graph, cap {MAX_SOURCES}",
        named_sources.len()
    );
    assert!(
        templates.len() <= MAX_TEMPLATES,
        "{} templates in the graph, cap {MAX_TEMPLATES}",
        templates.len()
    );
    // Callers × `/v1/ping` (the named ones and `{overflow}`) and the client ×
    // the templates (the named ones and `/{overflow}`), `client /v1/ping` in both.
    assert!(
        edges.len() <= MAX_SOURCES + 1 + MAX_TEMPLATES,
        "{} edges",
        edges.len()
    );
    assert!(named_sources.contains(spiffe_id("client").as_str()));

    // 4. Envoy's counters. Every caller did its own full handshake.
    let stats = envoy.stats().await.unwrap();
    let ssl = |suffix: &str| -> f64 {
        stats
            .iter()
            .filter(|(k, _)| k.starts_with("listener.127.0.0.1_") && k.ends_with(suffix))
            .map(|(_, v)| *v)
            .sum()
    };
    let handshakes = ssl(".ssl.handshake");
    assert!(
        handshakes >= (1 + CALLERS + PATH_CONNECTIONS) as f64,
        "{handshakes} TLS handshakes"
    );
    let reused = ssl(".ssl.session_reused");
    assert!(
        handshakes - reused >= (1 + CALLERS) as f64,
        "every caller a full handshake: {handshakes} handshakes, {reused} resumed (the \
         path client's connections may resume its session)"
    );
    assert_eq!(
        ssl(".ssl.no_certificate"),
        0.0,
        "every caller presented its certificate"
    );
    // Exactly the requests beyond the caps.
    let m = envoy.metrics().await.unwrap();
    let c = |n: &str| m.sum(n, &[]).unwrap_or_else(|| panic!("{n} missing"));
    let sources_known = c("vigil_edges_sources");
    let templates_known = c("vigil_edges_templates");
    let over_sources = c("vigil_edges_overflow_sources_total");
    let over_templates = c("vigil_edges_overflow_templates_total");
    let over_services = c("vigil_edges_overflow_services_total");
    let over_requests = c("vigil_edges_overflow_requests_total");
    assert_eq!(sources_known, MAX_SOURCES as f64, "callers kept = the cap");
    assert_eq!(
        templates_known, MAX_TEMPLATES as f64,
        "templates kept = the cap"
    );
    // The client and 99 callers are known; the other 9 901 callers' requests folded.
    assert_eq!(over_sources, (CALLERS - (MAX_SOURCES - 1)) as f64);
    // `/v1/ping` and 49 item paths are known; the other 99 951 paths folded.
    assert_eq!(over_templates, (PATHS - (MAX_TEMPLATES - 1)) as f64);
    assert_eq!(over_services, 0.0, "one destination service");
    assert_eq!(
        over_requests, unattributed as f64,
        "the filter's unattributed requests (max_edges per tick) are what the control service received"
    );
    // Folded requests reach the graph under the overflow names, unless their
    // edge was over max_edges in its tick.
    assert!(
        folded_source <= over_sources as u64 && folded_source + unattributed >= over_sources as u64
    );
    assert!(
        folded_path <= over_templates as u64 && folded_path + unattributed >= over_templates as u64
    );

    // 5. Report size and memory.
    let sizes = report_sizes.lock().unwrap().clone();
    let biggest = sizes.iter().copied().max().unwrap_or(0);
    assert!(!sizes.is_empty(), "the relay saw the reports");
    assert!(
        biggest <= 64 * 1024,
        "biggest report {biggest} B (edges ≤ {MAX_EDGES} a tick)"
    );
    let rss_growth_kib = mem_10k.0 as i64 - mem_1k.0 as i64;
    let heap_growth = mem_10k.1 as i64 - mem_1k.1 as i64;
    assert!(
        rss_growth_kib < 32 * 1024,
        "Envoy RSS grew {rss_growth_kib} KiB from 1 000 to 10 000 callers"
    );
    assert!(
        heap_growth < 16 * 1024 * 1024,
        "Envoy heap grew {heap_growth} B from 1 000 to 10 000 callers"
    );
    assert!(envoy.wasm_failures().await.unwrap().is_empty());

    println!(
        "sent {sent}: kept in edges {kept} ({} edges, {} named callers, {} templates; \
         folded: {folded_source} by caller, {folded_path} by path), unattributed {unattributed}",
        edges.len(),
        named_sources.len(),
        templates.len()
    );
    println!(
        "envoy: {handshakes} TLS handshakes ({reused} resumed); sources {sources_known} templates {templates_known}; overflow sources {over_sources} \
         templates {over_templates} services {over_services} requests {over_requests}"
    );
    println!(
        "reports: {} bodies, biggest {biggest} B, total {} B",
        sizes.len(),
        sizes.iter().sum::<usize>()
    );
    println!(
        "memory: RSS {} KiB after 1 000 callers, {} KiB after 10 000 ({rss_growth_kib:+} KiB); \
         heap allocated {} B → {} B ({heap_growth:+} B); total {:.1} s",
        mem_1k.0,
        mem_10k.0,
        mem_1k.1,
        mem_10k.1,
        t0.elapsed().as_secs_f64()
    );
}
