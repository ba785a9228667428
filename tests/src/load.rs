//! Load generators.
//!
//! - [`OpenLoop`]: request *i* is sent at `t0 + i/rps` whether or not earlier requests
//!   have been answered (no coordinated omission), for a bounded duration; each request
//!   is bounded by a timeout, so the whole run is bounded. With a [`Schedule`] the rate
//!   follows a function of time (surges, collapses, bursts).
//! - [`fixed_requests`]: exactly N requests over exactly C keep-alive connections
//!   (closed loop per connection), for exact accounting.
//!
//! Both record one [`Outcome`] per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::http::HttpClient;
use crate::Result;

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Sequence number, from 0.
    pub index: usize,
    /// When it was scheduled, relative to the run's `t0`.
    pub scheduled: Duration,
    /// How late it was actually sent relative to its schedule.
    pub send_lag: Duration,
    /// Time from sending to the end of the response body (None: no response).
    pub latency: Option<Duration>,
    /// HTTP status (None: transport error or timeout).
    pub status: Option<u16>,
    /// Transport error or timeout, if any.
    pub error: Option<String>,
    /// `x-served-by` of the response.
    pub served_by: Option<String>,
    /// `x-seen-subset` of the response: the `x-vigil-subset` the upstream received.
    pub seen_subset: Option<String>,
    /// `x-vigil-score` of the response (set by the filter when `score_header` is on).
    pub score: Option<String>,
}

impl Outcome {
    /// Answered with a 2xx status.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// Served by the upstream named `name`.
    pub fn served_by_is(&self, name: &str) -> bool {
        self.served_by.as_deref() == Some(name)
    }

    /// The upstream received `x-vigil-subset: <value>`.
    pub fn seen_subset_is(&self, value: &str) -> bool {
        self.seen_subset.as_deref() == Some(value)
    }
}

/// A request rate as a function of the time since the run's `t0` (requests per second;
/// values below 0.1 are taken as 0.1, above 100 000 as 100 000).
#[derive(Clone)]
pub struct Schedule(pub Arc<dyn Fn(Duration) -> f64 + Send + Sync>);

impl Schedule {
    /// A schedule from a closure.
    pub fn new(f: impl Fn(Duration) -> f64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The rate at `t`, clamped to what the generator sends.
    pub fn rate_at(&self, t: Duration) -> f64 {
        let r = (self.0)(t);
        if r.is_finite() {
            r.clamp(0.1, 100_000.0)
        } else {
            0.1
        }
    }

    /// The send times of a run of `duration` (request i+1 is sent 1/rate(tᵢ) after
    /// request i).
    pub fn times(&self, duration: Duration) -> Vec<Duration> {
        let mut out = Vec::new();
        let mut t = 0.0f64;
        let end = duration.as_secs_f64();
        while t < end {
            out.push(Duration::from_secs_f64(t));
            t += 1.0 / self.rate_at(Duration::from_secs_f64(t));
        }
        out
    }
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schedule(..)")
    }
}

/// An open-loop run's settings.
#[derive(Debug, Clone)]
pub struct OpenLoop {
    /// Requests per second (ignored when `schedule` is set).
    pub rps: f64,
    /// A time-varying rate instead of `rps`.
    pub schedule: Option<Schedule>,
    /// How long to keep scheduling requests.
    pub duration: Duration,
    /// Request path.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Per-request bound (connect + response).
    pub request_timeout: Duration,
}

impl OpenLoop {
    /// `rps` requests per second to `/` for `duration`, 10 s per-request timeout.
    pub fn new(rps: f64, duration: Duration) -> Self {
        Self {
            rps,
            schedule: None,
            duration,
            path: "/".to_string(),
            headers: Vec::new(),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// A run whose rate follows `schedule` for `duration`, to `path`.
    pub fn scheduled(schedule: Schedule, duration: Duration, path: &str) -> Self {
        Self {
            schedule: Some(schedule),
            path: path.to_string(),
            ..Self::new(1.0, duration)
        }
    }

    /// Number of requests the run schedules.
    pub fn total(&self) -> usize {
        match &self.schedule {
            Some(s) => s.times(self.duration).len(),
            None => (self.rps * self.duration.as_secs_f64()).floor() as usize,
        }
    }

    /// When each request is sent, relative to `t0`.
    fn send_times(&self) -> Vec<Duration> {
        match &self.schedule {
            Some(s) => s.times(self.duration),
            None => (0..self.total())
                .map(|i| Duration::from_secs_f64(i as f64 / self.rps))
                .collect(),
        }
    }

    /// Runs against `addr` with request 0 scheduled at `t0` (which may be in the future).
    /// Each finished [`Outcome`] is also sent to `live`, if given, as it completes.
    /// Returns all outcomes sorted by index.
    pub async fn run(
        &self,
        addr: SocketAddr,
        t0: Instant,
        live: Option<UnboundedSender<Outcome>>,
    ) -> Result<Vec<Outcome>> {
        if self.schedule.is_none() && !(self.rps > 0.0 && self.rps <= 100_000.0) {
            return Err(format!("open loop: rps must be in (0, 100000], got {}", self.rps).into());
        }
        let client = HttpClient::new();
        let times = self.send_times();
        let mut tasks = JoinSet::new();
        let mut outcomes = Vec::with_capacity(times.len());
        let shared = Arc::new(self.clone());
        for (index, scheduled) in times.into_iter().enumerate() {
            tokio::time::sleep_until((t0 + scheduled).into()).await;
            let client = client.clone();
            let cfg = shared.clone();
            let live = live.clone();
            tasks.spawn(async move {
                let send_lag = t0.elapsed().saturating_sub(scheduled);
                let start = Instant::now();
                let result = client
                    .get(addr, &cfg.path, &cfg.headers, cfg.request_timeout)
                    .await;
                let outcome = match result {
                    Ok(reply) => Outcome {
                        index,
                        scheduled,
                        send_lag,
                        latency: Some(start.elapsed()),
                        status: Some(reply.status),
                        error: None,
                        served_by: reply.header("x-served-by"),
                        seen_subset: reply.header("x-seen-subset"),
                        score: reply.header("x-vigil-score"),
                    },
                    Err(e) => Outcome {
                        index,
                        scheduled,
                        send_lag,
                        latency: None,
                        status: None,
                        error: Some(e.to_string()),
                        served_by: None,
                        seen_subset: None,
                        score: None,
                    },
                };
                if let Some(live) = live {
                    let _ = live.send(outcome.clone());
                }
                outcome
            });
            // Reap finished tasks as we go so the set stays small.
            while let Some(done) = tasks.try_join_next() {
                outcomes.push(done?);
            }
        }
        while let Some(done) = tasks.join_next().await {
            outcomes.push(done?);
        }
        outcomes.sort_by_key(|o| o.index);
        Ok(outcomes)
    }
}

/// Sends exactly `total` GET requests over exactly `connections` keep-alive HTTP/1.1
/// connections (request *i* on connection *i mod C*, each connection sequential), with
/// path `path(i)`. A connection that breaks is re-opened for its next request (the
/// broken request is recorded as an error, not retried). The whole run is bounded by
/// `deadline`. Returns the outcomes sorted by index; `scheduled` is the send time.
pub async fn fixed_requests<F>(
    addr: SocketAddr,
    total: usize,
    connections: usize,
    path: F,
    deadline: Duration,
) -> Result<Vec<Outcome>>
where
    F: Fn(usize) -> String + Send + Sync + 'static,
{
    if connections == 0 {
        return Err("fixed_requests: connections must be > 0".into());
    }
    let path = Arc::new(path);
    let t0 = Instant::now();
    let mut tasks = JoinSet::new();
    for conn in 0..connections {
        let path = path.clone();
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            let mut sender: Option<http1::SendRequest<Empty<Bytes>>> = None;
            for index in (conn..total).step_by(connections) {
                let scheduled = t0.elapsed();
                let start = Instant::now();
                let result = async {
                    let s = match sender.take() {
                        Some(s) if !s.is_closed() => s,
                        _ => open(addr).await?,
                    };
                    let mut s = s;
                    s.ready().await?;
                    let req = hyper::Request::get(path(index))
                        .header("host", "vigil.test")
                        .body(Empty::<Bytes>::new())?;
                    let resp = s.send_request(req).await?;
                    let status = resp.status().as_u16();
                    let served_by = header(resp.headers(), "x-served-by");
                    let seen_subset = header(resp.headers(), "x-seen-subset");
                    let score = header(resp.headers(), "x-vigil-score");
                    resp.into_body().collect().await?;
                    sender = Some(s);
                    Ok::<_, crate::Error>((status, served_by, seen_subset, score))
                }
                .await;
                outcomes.push(match result {
                    Ok((status, served_by, seen_subset, score)) => Outcome {
                        index,
                        scheduled,
                        send_lag: Duration::ZERO,
                        latency: Some(start.elapsed()),
                        status: Some(status),
                        error: None,
                        served_by,
                        seen_subset,
                        score,
                    },
                    Err(e) => Outcome {
                        index,
                        scheduled,
                        send_lag: Duration::ZERO,
                        latency: None,
                        status: None,
                        error: Some(e.to_string()),
                        served_by: None,
                        seen_subset: None,
                        score: None,
                    },
                });
            }
            outcomes
        });
    }
    let collect = async {
        let mut all = Vec::with_capacity(total);
        while let Some(done) = tasks.join_next().await {
            all.extend(done?);
        }
        Ok::<_, crate::Error>(all)
    };
    let mut all = tokio::time::timeout(deadline, collect)
        .await
        .map_err(|_| format!("fixed_requests: {total} requests not done within {deadline:?}"))??;
    all.sort_by_key(|o| o.index);
    Ok(all)
}

async fn open(addr: SocketAddr) -> Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr} timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn header(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Counts of outcomes by upstream and subset, for summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// All outcomes counted.
    pub total: usize,
    /// Served by "stable".
    pub stable: usize,
    /// Served by "canary".
    pub canary: usize,
    /// Upstream saw `x-vigil-subset: stable` (steered by Vigil).
    pub steered: usize,
    /// Non-2xx or no response.
    pub failed: usize,
}

impl Tally {
    /// Tallies the given outcomes.
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Self {
        let mut t = Self::default();
        for o in outcomes {
            t.add(o);
        }
        t
    }

    /// Adds one outcome.
    pub fn add(&mut self, o: &Outcome) {
        self.total += 1;
        if o.served_by_is("stable") {
            self.stable += 1;
        }
        if o.served_by_is("canary") {
            self.canary += 1;
        }
        if o.seen_subset_is("stable") {
            self.steered += 1;
        }
        if !o.is_success() {
            self.failed += 1;
        }
    }

    /// Fraction served by stable (0 when empty).
    pub fn stable_share(&self) -> f64 {
        ratio(self.stable, self.total)
    }

    /// Fraction served by canary (0 when empty).
    pub fn canary_share(&self) -> f64 {
        ratio(self.canary, self.total)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Outcomes scheduled in `[from, to)` (relative to `t0`).
pub fn scheduled_between(outcomes: &[Outcome], from: Duration, to: Duration) -> Vec<&Outcome> {
    outcomes
        .iter()
        .filter(|o| o.scheduled >= from && o.scheduled < to)
        .collect()
}
