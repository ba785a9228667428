//! A zero-delay upstream, a duration-bounded closed-loop load generator (GETs,
//! or POSTs of a body: one loop for the data-plane and the PII benches), and
//! Envoy's CPU and memory read from `/proc`.

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
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use vigil_e2e::Result;

/// An HTTP/1.1 upstream on 127.0.0.1 that answers 200 at once (no sleep, unlike
/// the e2e harness's upstream, whose ~1 ms timer sleep would drown the proxy's
/// cost in the latency figures). Stops when dropped.
pub struct FastUpstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FastUpstream {
    /// Binds a kernel-chosen port and serves, without reading request bodies.
    pub async fn start(name: &'static str) -> Result<Self> {
        Self::serve(name, false).await
    }

    /// [`FastUpstream::start`], reading every request body whole before it
    /// answers (what a model server does with a prompt).
    pub async fn start_reading_bodies(name: &'static str) -> Result<Self> {
        Self::serve(name, true).await
    }

    async fn serve(name: &'static str, read_bodies: bool) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        conns.spawn(async move {
                            let svc = service_fn(move |req: Request<Incoming>| async move {
                                if read_bodies {
                                    let _ = req.into_body().collect().await;
                                }
                                let resp = Response::builder()
                                    .status(200)
                                    .header("x-served-by", name)
                                    .body(Full::new(Bytes::from_static(b"ok\n")))
                                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
                                Ok::<_, Infallible>(resp)
                            });
                            let _ = server_http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(FastUpstream { addr, task })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for FastUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a load run produced.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Latencies of 2xx answers, microseconds, ascending.
    pub latencies_us: Vec<f64>,
    /// Requests answered non-2xx or not at all.
    pub failed: usize,
    /// Wall time of the run.
    pub wall: Duration,
}

impl LoadResult {
    /// All requests sent (answered or not).
    pub fn requests(&self) -> usize {
        self.latencies_us.len() + self.failed
    }
}

/// The request a closed loop sends, again and again.
#[derive(Debug, Clone)]
pub struct Req {
    /// `GET` or `POST`.
    pub method: hyper::Method,
    /// Path.
    pub path: &'static str,
    /// `content-type`, when there is a body.
    pub content_type: Option<&'static str>,
    /// Body (empty: none).
    pub body: Bytes,
}

impl Req {
    /// `GET path`, no body.
    pub fn get(path: &'static str) -> Self {
        Req {
            method: hyper::Method::GET,
            path,
            content_type: None,
            body: Bytes::new(),
        }
    }

    /// `POST path` with a JSON body.
    pub fn post_json(path: &'static str, body: Bytes) -> Self {
        Req {
            method: hyper::Method::POST,
            path,
            content_type: Some("application/json"),
            body,
        }
    }

    fn build(&self) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path)
            .header("host", "vigil.bench");
        if let Some(ct) = self.content_type {
            b = b.header("content-type", ct);
        }
        // An empty `Full` is an end-of-stream body: no content-length is
        // sent, exactly like a bodiless GET.
        Ok(b.body(Full::new(self.body.clone()))?)
    }
}

async fn open_conn(addr: SocketAddr) -> Result<client_http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr} timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, conn) = client_http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Closed loop: `conns` keep-alive connections, each sending its next request
/// as soon as the previous answer is read, until `duration` has passed. The
/// throughput is the saturation point of whatever is slowest.
pub async fn closed_loop(
    addr: SocketAddr,
    conns: usize,
    duration: Duration,
    path: &'static str,
) -> Result<LoadResult> {
    closed_loop_req(addr, conns, duration, Req::get(path)).await
}

/// [`closed_loop`] with any request ([`Req`]): every connection sends `req`.
pub async fn closed_loop_req(
    addr: SocketAddr,
    conns: usize,
    duration: Duration,
    req: Req,
) -> Result<LoadResult> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..conns.max(1) {
        let req = req.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0usize;
            let mut sender: Option<client_http1::SendRequest<Full<Bytes>>> = None;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = async {
                    let mut s = match sender.take() {
                        Some(s) if !s.is_closed() => s,
                        _ => open_conn(addr).await?,
                    };
                    s.ready().await?;
                    let resp =
                        tokio::time::timeout(Duration::from_secs(5), s.send_request(req.build()?))
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
    let mut out = LoadResult::default();
    while let Some(done) = tasks.join_next().await {
        let (lat, failed) = done?;
        out.latencies_us.extend(lat);
        out.failed += failed;
    }
    out.wall = start.elapsed();
    out.latencies_us.sort_by(f64::total_cmp);
    Ok(out)
}

/// Open loop at a fixed arrival rate, through the e2e harness's generator
/// (request *i* leaves at `t0 + i/rps` whatever happened to earlier ones).
pub async fn open_loop(addr: SocketAddr, rps: f64, duration: Duration) -> Result<LoadResult> {
    let cfg = vigil_e2e::load::OpenLoop::new(rps, duration);
    let start = Instant::now();
    let outcomes = cfg.run(addr, Instant::now(), None).await?;
    let mut out = LoadResult {
        wall: start.elapsed(),
        ..LoadResult::default()
    };
    for o in &outcomes {
        match (o.is_success(), o.latency) {
            (true, Some(l)) => out.latencies_us.push(l.as_secs_f64() * 1e6),
            _ => out.failed += 1,
        }
    }
    out.latencies_us.sort_by(f64::total_cmp);
    Ok(out)
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ; 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// CPU seconds (utime + stime, all threads) of a process, from `/proc/<pid>/stat`.
pub fn cpu_stat_s(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("malformed /proc/<pid>/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).ok_or("no utime")?.parse()?;
    let stime: f64 = f.get(12).ok_or("no stime")?.parse()?;
    Ok((utime + stime) / CLK_TCK)
}

/// CPU nanoseconds run by all threads of a process, from `/proc/<pid>/task/*/schedstat`
/// (nanosecond precision, for short idle windows).
pub fn cpu_sched_ns(pid: u32) -> Result<u64> {
    let mut total = 0u64;
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let p = e?.path().join("schedstat");
        if let Ok(t) = std::fs::read_to_string(p) {
            total += t
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Resident set size in bytes, from `/proc/<pid>/status` (VmRSS).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or("no VmRSS")?
        .parse::<u64>()?;
    Ok(kb * 1024)
}
