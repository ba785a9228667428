//! Real Envoy: the cost of the PII guard per request for 1 KB, 16 KB and
//! 256 KB chat prompts, with the guard off (Vigil without a `pii` section),
//! `detect` and `redact`, against the no-op wasm filter. Closed loop of POSTs
//! over keep-alive connections to an upstream that reads every body; Envoy CPU
//! per request from `/proc`, p50/p99 from the client. Printed, never asserted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_http1;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use vigil_e2e::envoy::{hcm_mut, Envoy, EnvoyOptions};
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::Result;

use crate::dataplane::Setup;
use crate::load::cpu_sched_ns;
use crate::report::{quantile_sorted, Res};

/// Per variant: CPU µs/req, p50 µs, p99 µs per round.
type Samples = (Variant, Vec<f64>, Vec<f64>, Vec<f64>);

/// Prompt sizes, bytes.
pub const SIZES: [usize; 3] = [1024, 16 * 1024, 256 * 1024];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Noop,
    Off,
    Detect,
    Redact,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::Noop,
        Variant::Off,
        Variant::Detect,
        Variant::Redact,
    ];
    fn name(self) -> &'static str {
        match self {
            Variant::Noop => "noop",
            Variant::Off => "off",
            Variant::Detect => "detect",
            Variant::Redact => "redact",
        }
    }
}

/// An upstream that reads each body whole, then answers 200.
struct BodyUpstream {
    port: u16,
    task: JoinHandle<()>,
}

impl BodyUpstream {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        conns.spawn(async move {
                            let svc = service_fn(|req: Request<Incoming>| async move {
                                let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(n.to_string()))))
                            });
                            let _ = server_http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(BodyUpstream { port, task })
    }
}

impl Drop for BodyUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A chat prompt of about `size` bytes with a few entities in it.
pub fn prompt(size: usize) -> Bytes {
    let mut content = String::from(
        "Customer ann.lee@corp.example.com (+1 415 555 0100) asks about card 4111 1111 1111 1111. ",
    );
    while content.len() + 80 < size {
        content.push_str(
            "The quarterly review covers shipping delays, refunds and the new loyalty tier. ",
        );
    }
    Bytes::from(
        json!({ "model": "m", "messages": [{ "role": "user", "content": content }] }).to_string(),
    )
}

async fn post_loop(
    addr: SocketAddr,
    conns: usize,
    dur: Duration,
    body: Bytes,
) -> Result<(Vec<f64>, usize)> {
    let deadline = Instant::now() + dur;
    let mut tasks = JoinSet::new();
    for _ in 0..conns.max(1) {
        let body = body.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0usize;
            let mut sender: Option<client_http1::SendRequest<Full<Bytes>>> = None;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = async {
                    let mut s = match sender.take() {
                        Some(s) if !s.is_closed() => s,
                        _ => {
                            let stream = TcpStream::connect(addr).await?;
                            stream.set_nodelay(true)?;
                            let (s, conn) = client_http1::handshake(TokioIo::new(stream)).await?;
                            tokio::spawn(async move {
                                let _ = conn.await;
                            });
                            s
                        }
                    };
                    s.ready().await?;
                    let req = Request::post("/")
                        .header("host", "vigil.bench")
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))?;
                    let resp = tokio::time::timeout(Duration::from_secs(5), s.send_request(req))
                        .await
                        .map_err(|_| "request timed out")??;
                    let ok = resp.status().is_success();
                    resp.into_body().collect().await?;
                    sender = Some(s);
                    Ok::<bool, vigil_e2e::Error>(ok)
                }
                .await;
                match r {
                    Ok(true) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                    _ => failed += 1,
                }
            }
            (lat, failed)
        });
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, f) = done?;
        lat.extend(l);
        failed += f;
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat, failed))
}

async fn start(setup: &Setup, v: Variant, port: u16) -> Result<(Envoy, u32)> {
    let pii = match v {
        Variant::Detect => {
            json!({ "pii": { "routes": [{ "route": "checkout", "action": "detect", "max_inspect_bytes": 1 << 20 }] } })
        }
        Variant::Redact => {
            json!({ "pii": { "routes": [{ "route": "checkout", "action": "redact", "max_inspect_bytes": 1 << 20 }] } })
        }
        _ => json!({}),
    };
    let noop = setup.noop_wasm.to_string_lossy().into_owned();
    let mut opts = EnvoyOptions::new(
        &format!("bench-pii-{}", v.name()),
        plugin_config("shadow", &pii),
    )
    .upstreams(port, port)
    .concurrency(1)
    .transform(move |b: &mut Value| {
        if v == Variant::Noop {
            let filters = hcm_mut(b)?
                .get_mut("http_filters")
                .and_then(Value::as_array_mut)
                .ok_or("no http_filters")?;
            let slot = filters
                .iter_mut()
                .find(|f| f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm"))
                .and_then(|f| f.pointer_mut("/typed_config/config/vm_config/code/local/filename"))
                .ok_or("no wasm code path")?;
            *slot = Value::from(noop);
        }
        Ok(())
    });
    opts.start_timeout = Duration::from_secs(60);
    let envoy = Envoy::start(opts).await?;
    let pid: u32 = std::fs::read_to_string(envoy.dir().join("envoy.pid"))?
        .trim()
        .parse()?;
    Ok((envoy, pid))
}

/// Runs the PII scenario and appends `pii.<size>.<variant>.{envoy_cpu_per_req,p50,p99}`
/// and `pii.<size>.detect/noop.cpu_per_req` (the goal: ≤ 1.5 at 16 KB).
pub async fn run(
    setup: &Setup,
    rounds: usize,
    secs: f64,
    conns: usize,
    out: &mut Vec<Res>,
) -> Result<()> {
    let up = BodyUpstream::start().await?;
    let mut envoys = Vec::new();
    for v in Variant::ALL {
        envoys.push((v, start(setup, v, up.port).await?));
    }
    for size in SIZES {
        let body = prompt(size);
        let mut cpu: Vec<Samples> = Variant::ALL
            .iter()
            .map(|v| (*v, vec![], vec![], vec![]))
            .collect();
        for (_, (e, _)) in &envoys {
            post_loop(
                e.listener_addr(),
                conns,
                Duration::from_secs(1),
                body.clone(),
            )
            .await?;
        }
        for round in 0..rounds {
            for j in 0..envoys.len() {
                let Some((v, (e, pid))) = envoys.get((j + round) % envoys.len()) else {
                    continue;
                };
                let s0 = cpu_sched_ns(*pid)?;
                let (lat, failed) = post_loop(
                    e.listener_addr(),
                    conns,
                    Duration::from_secs_f64(secs),
                    body.clone(),
                )
                .await?;
                let s1 = cpu_sched_ns(*pid)?;
                let n = (lat.len() + failed).max(1) as f64;
                let us = s1.saturating_sub(s0) as f64 / 1e3 / n;
                let p50 = quantile_sorted(&lat, 0.5).unwrap_or(f64::NAN);
                let p99 = quantile_sorted(&lat, 0.99).unwrap_or(f64::NAN);
                eprintln!("bench:   pii {size:>6} B round {round} {:<6} cpu {us:>8.2} µs/req  p50 {p50:>7.0} µs  p99 {p99:>7.0} µs{}", v.name(), if failed > 0 { format!("  FAILED {failed}") } else { String::new() });
                if let Some(slot) = cpu.iter_mut().find(|c| c.0 == *v) {
                    slot.1.push(us);
                    slot.2.push(p50);
                    slot.3.push(p99);
                }
            }
        }
        let median = |v: Variant| {
            cpu.iter()
                .find(|c| c.0 == v)
                .and_then(|c| crate::report::median(&c.1))
        };
        for (v, c, p50, p99) in &cpu {
            let p = format!("pii.{size}.{}", v.name());
            out.extend(Res::of_samples(format!("{p}.envoy_cpu_per_req"), c, "µs/req").map(|r| r.note(format!("POST {size} B chat prompt, closed loop {conns} connections, --concurrency 1"))));
            out.extend(Res::of_samples(format!("{p}.p50"), p50, "µs"));
            out.extend(Res::of_samples(format!("{p}.p99"), p99, "µs"));
        }
        for v in [Variant::Off, Variant::Detect, Variant::Redact] {
            if let (Some(a), Some(b)) = (median(v), median(Variant::Noop)) {
                out.push(Res::new(
                    format!("pii.{size}.{}/noop.cpu_per_req", v.name()),
                    a / b,
                    "ratio",
                ));
            }
        }
    }
    for (v, (e, _)) in &envoys {
        let failures = e.wasm_failures().await?;
        if !failures.is_empty() {
            return Err(format!("pii {}: wasm failures: {failures:?}", v.name()).into());
        }
    }
    Ok(())
}
