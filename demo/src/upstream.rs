//! An upstream that behaves like a model-serving backend, for the demo.
//!
//! - latency: log-normal, median `base_ms` (default 60 ms), σ 0.5 (p99 ≈ 3.2 × median),
//!   deterministic per request (splitmix64 of the sequence number);
//! - streaming: every 4th response, and every request whose path contains `stream`, is
//!   sent chunked — 8 "token" chunks spread over the latency;
//! - faults switchable at run time through `POST /admin/fault?latency_mult=3&error_ratio=0.05`
//!   (`POST /admin/fault` with no query clears them); 503s are evenly spaced;
//! - every response carries `x-served-by: <name>`, and `x-seen-subset` when the request
//!   carried `x-vigil-subset`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vigil_e2e::upstream::serve_http1;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Shared state of one upstream.
#[derive(Debug)]
pub struct State {
    name: String,
    base_ms: f64,
    /// Latency multiplier × 1000.
    latency_milli: AtomicU64,
    /// Time-to-first-token multiplier ×1000 (streamed answers keep their duration).
    ttft_milli: AtomicU64,
    /// 503 ratio in parts per million.
    error_ppm: AtomicU64,
    ratio_seq: AtomicU64,
    served: AtomicU64,
}

/// A running inference-like upstream.
#[derive(Debug)]
pub struct InferenceUpstream {
    state: Arc<State>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

fn splitmix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// The base (fault-free) latency of request `seq` of a server named `name`, in ms:
/// log-normal with median `base_ms` and σ 0.5, capped at 10 × median.
pub fn base_latency_ms(name: &str, seq: u64, base_ms: f64) -> f64 {
    let salt = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let a = unit(splitmix(seq ^ salt.rotate_left(17)));
    let b = unit(splitmix(seq.wrapping_mul(2).wrapping_add(1) ^ salt));
    let z = (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos();
    (base_ms * (0.5 * z).exp()).min(base_ms * 10.0)
}

impl InferenceUpstream {
    /// Binds `addr` (port 0: kernel-chosen) and serves until dropped.
    pub async fn start(name: &str, addr: SocketAddr, base_ms: f64) -> crate::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| crate::bind_error(addr, &format!("upstream {name}"), e))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.to_string(),
            base_ms,
            latency_milli: AtomicU64::new(1000),
            ttft_milli: AtomicU64::new(1000),
            error_ppm: AtomicU64::new(0),
            ratio_seq: AtomicU64::new(0),
            served: AtomicU64::new(0),
        });
        let task = tokio::spawn(serve_http1(listener, state.clone(), handle));
        Ok(Self { state, addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the faults: latency multiplier and 503 ratio.
    pub fn set_fault(&self, latency_mult: f64, error_ratio: f64) {
        self.state.set_fault(latency_mult, error_ratio);
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Waits until the server task ends (never, unless it is aborted).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for InferenceUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl State {
    fn set_fault(&self, latency_mult: f64, error_ratio: f64) {
        let m = (latency_mult.clamp(0.01, 1000.0) * 1000.0).round() as u64;
        let ppm = (error_ratio.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.latency_milli.store(m, Ordering::SeqCst);
        self.ratio_seq.store(0, Ordering::SeqCst);
        self.error_ppm.store(ppm, Ordering::SeqCst);
    }
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).boxed()
}

fn query_f64(query: &str, key: &str) -> Option<f64> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

struct Chunks(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/admin/fault" && req.method() == Method::POST {
        let mult = query_f64(&query, "latency_mult").unwrap_or(1.0);
        let ratio = query_f64(&query, "error_ratio").unwrap_or(0.0);
        let ttft = query_f64(&query, "ttft_mult").unwrap_or(1.0);
        state.set_fault(mult, ratio);
        let t = (ttft.clamp(0.1, 3.3) * 1000.0).round() as u64;
        state.ttft_milli.store(t, Ordering::SeqCst);
        let text = format!(
            "{{\"name\":\"{}\",\"latency_mult\":{mult},\"error_ratio\":{ratio}}}\n",
            state.name
        );
        return Ok(Response::new(full(text)));
    }
    if path == "/healthz" {
        return Ok(Response::new(full("ok\n".into())));
    }
    let seq = state.served.fetch_add(1, Ordering::SeqCst);
    let subset = req.headers().get("x-vigil-subset").cloned();
    let mult = state.latency_milli.load(Ordering::SeqCst) as f64 / 1000.0;
    let latency =
        Duration::from_secs_f64(base_latency_ms(&state.name, seq, state.base_ms) * mult / 1000.0);
    let ppm = state.error_ppm.load(Ordering::SeqCst);
    let fail = ppm > 0 && {
        let k = state.ratio_seq.fetch_add(1, Ordering::SeqCst);
        (k + 1) * ppm / 1_000_000 > k * ppm / 1_000_000
    };
    let stream = path.contains("stream") || seq % 4 == 0;
    let mut builder = Response::builder().header("x-served-by", state.name.as_str());
    if let Some(s) = subset {
        builder = builder.header("x-seen-subset", s);
    }
    let name = state.name.clone();
    let body = if fail {
        tokio::time::sleep(latency).await;
        builder = builder.status(503);
        full(format!(
            "{{\"error\":\"model overloaded\",\"served_by\":\"{name}\"}}\n"
        ))
    } else if stream {
        // Time to first token ≈ 30 % of the latency (× the TTFT fault, at
        // most the whole latency), then 8 tokens over the rest.
        let ttft_share =
            (0.3 * state.ttft_milli.load(Ordering::SeqCst) as f64 / 1000.0).clamp(0.0, 1.0);
        tokio::time::sleep(latency.mul_f64(ttft_share)).await;
        let (tx, rx) = mpsc::channel(16);
        let per_token = latency.mul_f64((1.0 - ttft_share) / 8.0);
        tokio::spawn(async move {
            for i in 0..8 {
                let chunk = format!("data: {{\"token\":{i},\"served_by\":\"{name}\"}}\n\n");
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
                tokio::time::sleep(per_token).await;
            }
            let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        });
        builder = builder
            .status(200)
            .header("content-type", "text/event-stream");
        Chunks(rx).boxed()
    } else {
        tokio::time::sleep(latency).await;
        builder = builder
            .status(200)
            .header("content-type", "application/json");
        full(format!(
            "{{\"model\":\"{name}\",\"choices\":[{{\"text\":\"ok\"}}]}}\n"
        ))
    };
    Ok(builder
        .body(body)
        .unwrap_or_else(|_| Response::new(full(String::new()))))
}
