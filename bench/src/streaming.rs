//! Real Envoy: Vigil's steer-mode CPU per request on a streaming route beside
//! a unary one, against the no-op wasm filter (issue 10). Both paths take the
//! managed `checkout` route (stable/canary split); the upstream answers `/` at
//! once with one body and `/stream` with a `text/event-stream` of
//! [`EVENTS`] events written one by one ([`GAP`] apart, so Envoy delivers
//! them as separate body chunks: each is one data callback in which the
//! filter takes the time). Closed loop over keep-alive connections; Envoy CPU
//! per request from `/proc/<pid>/task/*/schedstat`. Printed, never asserted.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vigil_e2e::upstream::serve_http1;
use vigil_e2e::Result;

use crate::dataplane::{start, DpConfig, Running, Setup, Variant};
use crate::load::{closed_loop, cpu_sched_ns};
use crate::report::{median, Res};

/// Events per streamed answer.
pub const EVENTS: usize = 8;
/// Time between two events.
pub const GAP: Duration = Duration::from_millis(1);

type Body = BoxBody<Bytes, Infallible>;

struct Chunks(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

async fn handle(
    _: std::sync::Arc<()>,
    req: Request<Incoming>,
) -> std::result::Result<Response<Body>, Infallible> {
    let builder = Response::builder().status(200);
    let resp = if req.uri().path().starts_with("/stream") {
        let (tx, rx) = mpsc::channel(EVENTS + 1);
        tokio::spawn(async move {
            for i in 0..EVENTS {
                let event = format!("data: {{\"token\":{i}}}\n\n");
                if tx.send(Bytes::from(event)).await.is_err() {
                    return;
                }
                tokio::time::sleep(GAP).await;
            }
        });
        builder
            .header("content-type", "text/event-stream")
            .body(Chunks(rx).boxed())
    } else {
        builder
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"text\":\"ok\"}\n")).boxed())
    };
    Ok(resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

/// The unary + streaming upstream (stops when dropped).
struct StreamUpstream {
    port: u16,
    task: JoinHandle<()>,
}

impl StreamUpstream {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(serve_http1(listener, std::sync::Arc::new(()), handle));
        Ok(StreamUpstream { port, task })
    }
}

impl Drop for StreamUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One measured run: Envoy CPU µs per request.
async fn measure(r: &Running, path: &'static str, cfg: &DpConfig) -> Result<f64> {
    let s0 = cpu_sched_ns(r.pid)?;
    let res = closed_loop(
        r.envoy.listener_addr(),
        cfg.conns,
        Duration::from_secs_f64(cfg.secs),
        path,
    )
    .await?;
    let s1 = cpu_sched_ns(r.pid)?;
    if res.failed > 0 {
        return Err(format!("{path}: {} requests failed", res.failed).into());
    }
    Ok(s1.saturating_sub(s0) as f64 / 1e3 / res.requests().max(1) as f64)
}

/// Runs noop vs steer on `/` and `/stream` (interleaved rounds) and appends
/// `stream.c<N>.<unary|stream>.<noop|steer>.envoy_cpu_per_req` and the
/// `steer/noop` ratios.
pub async fn run(setup: &Setup, cfg: &DpConfig, out: &mut Vec<Res>) -> Result<()> {
    let stable = StreamUpstream::start().await?;
    let canary = StreamUpstream::start().await?;
    let ports = (stable.port, canary.port);
    let conc = cfg.concurrencies.last().copied().unwrap_or(2);
    eprintln!("bench: streaming route vs unary route, --concurrency {conc}: noop and steer Envoys");
    let mut envoys = Vec::new();
    for v in [Variant::Noop, Variant::Steer] {
        let r = start(setup, v, conc, ports, 0, None).await?;
        for path in ["/", "/stream"] {
            closed_loop(
                r.envoy.listener_addr(),
                cfg.conns,
                Duration::from_secs(1),
                path,
            )
            .await?;
        }
        envoys.push((v, r));
    }
    let paths = [("unary", "/"), ("stream", "/stream")];
    let mut samples: Vec<((&str, Variant), Vec<f64>)> = Vec::new();
    for round in 0..cfg.rounds {
        for (kind, path) in paths {
            for j in 0..envoys.len() {
                let Some((v, r)) = envoys.get((j + round) % envoys.len()) else {
                    continue;
                };
                let cpu = measure(r, path, cfg).await?;
                eprintln!(
                    "bench:   c{conc} round {round} {kind:<6} {:<5} cpu {cpu:>7.2} µs/req",
                    v.name()
                );
                match samples.iter_mut().find(|(k, _)| *k == (kind, *v)) {
                    Some((_, s)) => s.push(cpu),
                    None => samples.push(((kind, *v), vec![cpu])),
                }
            }
        }
    }
    // The steer Envoy really ran Vigil on both routes and saw the chunks.
    let mut chunks_per_stream = None;
    if let Some((_, r)) = envoys.iter().find(|(v, _)| *v == Variant::Steer) {
        let m = r.envoy.metrics().await?;
        let requests = m.sum("vigil_requests_total", &[]).unwrap_or(0.0);
        if requests <= 0.0 {
            return Err("steer: vigil_requests_total is 0: the filter did not run".into());
        }
        let chunks = m.sum("vigil_stream_chunks_total", &[]).unwrap_or(0.0);
        chunks_per_stream = Some(chunks / requests);
        let failures = r.envoy.wasm_failures().await?;
        if !failures.is_empty() {
            return Err(format!("steer: wasm failures: {failures:?}").into());
        }
    }
    drop(envoys);
    let load = format!(
        "closed loop, {} connections, {:.0} s x {} rounds; stream = text/event-stream, {EVENTS} events {} ms apart",
        cfg.conns,
        cfg.secs,
        cfg.rounds,
        GAP.as_millis()
    );
    for (kind, _) in paths {
        let get = |v: Variant| {
            samples
                .iter()
                .find(|(k, _)| *k == (kind, v))
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        let (noop, steer) = (get(Variant::Noop), get(Variant::Steer));
        for (v, s) in [(Variant::Noop, &noop), (Variant::Steer, &steer)] {
            out.extend(
                Res::of_samples(
                    format!("stream.c{conc}.{kind}.{}.envoy_cpu_per_req", v.name()),
                    s,
                    "µs/req",
                )
                .map(|r| r.note(load.clone())),
            );
        }
        let ratios: Vec<f64> = steer
            .iter()
            .zip(&noop)
            .filter(|(_, n)| **n > 0.0)
            .map(|(s, n)| s / n)
            .collect();
        if let Some(r) = Res::of_samples(
            format!("stream.c{conc}.{kind}.steer/noop.cpu_per_req"),
            &ratios,
            "ratio",
        ) {
            out.push(r.baseline("noop wasm filter").note(format!(
                "per-round ratio; median noop {:.2} µs/req, steer {:.2} µs/req{}",
                median(&noop).unwrap_or(f64::NAN),
                median(&steer).unwrap_or(f64::NAN),
                match (kind, chunks_per_stream) {
                    ("stream", Some(c)) =>
                        format!("; Vigil counted {c:.1} body chunks per request over both routes"),
                    _ => String::new(),
                }
            )));
        }
    }
    Ok(())
}
