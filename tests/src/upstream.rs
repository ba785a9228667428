//! A real HTTP/1.1 upstream on `127.0.0.1:0`, playing "stable" or "canary".
//!
//! Every response carries `x-served-by: <name>` and, when the request had one,
//! `x-seen-subset: <value of x-vigil-subset>`. Base latency is about 1 ms with a small
//! deterministic jitter. Faults switchable at run time: extra latency, and a ratio of
//! 503 answers spaced deterministically (ratio 0.2 → exactly every 5th request), and a
//! slow tail (a ratio of requests, spaced the same way, answered later). A path
//! containing `/fail` is always answered 503 (exact error accounting).
//! A latency profile ([`LatencyProfile`]: a fixed base, optionally log-normal with rare
//! outliers, deterministic per request) and a latency scale (×1.40 for a level shift,
//! a creep of +2 % per step) replace the ~1 ms default when set.
//! The server stops when the [`Upstream`] is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::Result;

/// The request header Vigil sets to pick a subset.
pub const SUBSET_HEADER: &str = "x-vigil-subset";

#[derive(Debug)]
struct State {
    name: String,
    extra_latency_ms: AtomicU64,
    /// Error ratio in parts per million.
    error_ppm: AtomicU64,
    /// Status of the ratio's error answers (503 unless set).
    error_status: AtomicU64,
    /// Requests counted for the error ratio since it was last set.
    ratio_seq: AtomicU64,
    /// Share of requests (parts per million, evenly spaced) that get
    /// `slow_extra_ms` more latency: a slow tail.
    slow_ppm: AtomicU64,
    slow_extra_ms: AtomicU64,
    slow_seq: AtomicU64,
    served: AtomicU64,
    failed: AtomicU64,
    seen_subset: AtomicU64,
    /// The latency profile (None: the ~1 ms default).
    profile: std::sync::Mutex<Option<LatencyProfile>>,
    /// Multiplier of the profile's latency, in parts per million.
    scale_ppm: AtomicU64,
}

/// A response-latency distribution, sampled deterministically from the request's
/// sequence number (so a run is repeatable): `median · e^(sigma·N(0,1))`, except that
/// `outlier_ppm` of requests (evenly spread by the hash) take `outlier` instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyProfile {
    /// Median latency (the fixed latency when `sigma` is 0).
    pub median: Duration,
    /// Log-normal shape σ (0: fixed latency).
    pub sigma: f64,
    /// Requests per million answered after `outlier` instead.
    pub outlier_ppm: u64,
    /// The outliers' latency.
    pub outlier: Duration,
}

impl LatencyProfile {
    /// A fixed latency.
    pub fn fixed(latency: Duration) -> Self {
        Self {
            median: latency,
            sigma: 0.0,
            outlier_ppm: 0,
            outlier: Duration::ZERO,
        }
    }

    /// Log-normal latency with median `median` and shape `sigma`, plus `outlier_ppm`
    /// requests per million taking `outlier`.
    pub fn log_normal(median: Duration, sigma: f64, outlier_ppm: u64, outlier: Duration) -> Self {
        Self {
            median,
            sigma,
            outlier_ppm,
            outlier,
        }
    }

    /// The latency of request `seq`, before any scale.
    pub fn sample(&self, seq: u64) -> Duration {
        let u1 = unit(seq.wrapping_mul(2).wrapping_add(0x5151));
        let u2 = unit(seq.wrapping_mul(2).wrapping_add(0xA3A3));
        if self.outlier_ppm > 0 && (u1 * 1_000_000.0) < self.outlier_ppm as f64 {
            return self.outlier;
        }
        // Box-Muller; u1 is re-spread over (0, 1] after the outlier draw took its share.
        let spread = (1.0 - u1).max(1e-12);
        let n = (-2.0 * spread.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64((self.median.as_secs_f64() * (self.sigma * n).exp()).min(60.0))
    }
}

/// splitmix64 of `x`, as a uniform in [0, 1).
fn unit(x: u64) -> f64 {
    (splitmix(x) >> 11) as f64 / (1u64 << 53) as f64
}

fn splitmix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A running upstream server.
#[derive(Debug)]
pub struct Upstream {
    state: Arc<State>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Binds `127.0.0.1:0` and serves until dropped. Must be called inside a Tokio runtime.
    pub async fn start(name: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.to_string(),
            extra_latency_ms: AtomicU64::new(0),
            error_ppm: AtomicU64::new(0),
            error_status: AtomicU64::new(503),
            ratio_seq: AtomicU64::new(0),
            slow_ppm: AtomicU64::new(0),
            slow_extra_ms: AtomicU64::new(0),
            slow_seq: AtomicU64::new(0),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            seen_subset: AtomicU64::new(0),
            profile: std::sync::Mutex::new(None),
            scale_ppm: AtomicU64::new(1_000_000),
        });
        let task = tokio::spawn(serve_http1(listener, state.clone(), handle));
        Ok(Self { state, addr, task })
    }

    /// The name it answers with in `x-served-by`.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Adds `extra` to every response's latency from now on (zero removes it).
    pub fn set_extra_latency(&self, extra: Duration) {
        let ms = u64::try_from(extra.as_millis()).unwrap_or(u64::MAX);
        self.state.extra_latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Answers this fraction (0..=1) of requests with 503, evenly spaced, from now on.
    pub fn set_error_ratio(&self, ratio: f64) {
        let ppm = (ratio.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.state.ratio_seq.store(0, Ordering::SeqCst);
        self.state.error_ppm.store(ppm, Ordering::SeqCst);
    }

    /// Gives this fraction (0..=1) of requests, evenly spaced, `extra` more
    /// latency from now on (a slow tail; zero ratio removes it).
    pub fn set_slow_share(&self, ratio: f64, extra: Duration) {
        let ppm = (ratio.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        let ms = u64::try_from(extra.as_millis()).unwrap_or(u64::MAX);
        self.state.slow_extra_ms.store(ms, Ordering::SeqCst);
        self.state.slow_seq.store(0, Ordering::SeqCst);
        self.state.slow_ppm.store(ppm, Ordering::SeqCst);
    }

    /// The status the error ratio answers with (503 by default; 429 to throttle).
    pub fn set_error_status(&self, status: u16) {
        self.state
            .error_status
            .store(u64::from(status), Ordering::SeqCst);
    }

    /// Replaces the ~1 ms default latency by `profile` from now on.
    pub fn set_latency_profile(&self, profile: LatencyProfile) {
        if let Ok(mut p) = self.state.profile.lock() {
            *p = Some(profile);
        }
    }

    /// Multiplies the profile's latency by `scale` from now on (1.0: as profiled).
    pub fn set_latency_scale(&self, scale: f64) {
        let ppm = (scale.clamp(0.0, 1000.0) * 1_000_000.0).round() as u64;
        self.state.scale_ppm.store(ppm, Ordering::SeqCst);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        self.set_extra_latency(Duration::ZERO);
        self.set_error_ratio(0.0);
    }

    /// Requests answered so far (any status).
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Requests answered with an error status so far.
    pub fn failed(&self) -> u64 {
        self.state.failed.load(Ordering::SeqCst)
    }

    /// Requests that arrived carrying `x-vigil-subset`.
    pub fn seen_subset(&self) -> u64 {
        self.state.seen_subset.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

/// Serves HTTP/1.1 on `listener` until this future is dropped or aborted: one task
/// per connection, every request answered by `handle(state, request)`. Dropping it
/// drops the set of connection tasks, which aborts them all. Shared by the test
/// upstream here and the demo's inference-like upstream.
pub async fn serve_http1<S, F, Fut, B>(listener: TcpListener, state: Arc<S>, handle: F)
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Deterministic jitter in 0..300 µs from a sequence number (splitmix64).
fn jitter(seq: u64) -> Duration {
    Duration::from_micros(splitmix(seq) % 300)
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let seq = state.served.fetch_add(1, Ordering::SeqCst);
    let subset = req.headers().get(SUBSET_HEADER).cloned();
    if subset.is_some() {
        state.seen_subset.fetch_add(1, Ordering::SeqCst);
    }
    let mut extra = Duration::from_millis(state.extra_latency_ms.load(Ordering::SeqCst));
    let slow_ppm = state.slow_ppm.load(Ordering::SeqCst);
    if slow_ppm > 0 {
        let k = state.slow_seq.fetch_add(1, Ordering::SeqCst);
        if (k + 1) * slow_ppm / 1_000_000 > k * slow_ppm / 1_000_000 {
            extra += Duration::from_millis(state.slow_extra_ms.load(Ordering::SeqCst));
        }
    }
    let profile = state.profile.lock().ok().and_then(|p| *p);
    let base = match profile {
        Some(p) => {
            let scale = state.scale_ppm.load(Ordering::SeqCst) as f64 / 1_000_000.0;
            p.sample(seq).mul_f64(scale) + jitter(seq)
        }
        None => Duration::from_micros(800) + jitter(seq),
    };
    tokio::time::sleep(base + extra).await;

    let forced = req.uri().path().contains("/fail");
    let ppm = state.error_ppm.load(Ordering::SeqCst);
    let ratio_fail = ppm > 0 && {
        let k = state.ratio_seq.fetch_add(1, Ordering::SeqCst);
        // Request k fails when the running quota floor((k+1)·r) steps up.
        (k + 1) * ppm / 1_000_000 > k * ppm / 1_000_000
    };
    let status = if forced {
        503
    } else if ratio_fail {
        u16::try_from(state.error_status.load(Ordering::SeqCst)).unwrap_or(503)
    } else {
        200
    };
    if status != 200 {
        state.failed.fetch_add(1, Ordering::SeqCst);
    }
    let mut builder = Response::builder()
        .status(status)
        .header("x-served-by", state.name.as_str());
    if let Some(subset) = subset {
        builder = builder.header("x-seen-subset", subset);
    }
    let body = Full::new(Bytes::from(format!("{} {status}\n", state.name)));
    Ok(builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
