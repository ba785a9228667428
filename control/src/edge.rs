//! The HTTP edge: the accept loop, connection limits and timeouts, graceful
//! shutdown, and JSON for the errors hyper writes itself.
//!
//! Why this exists: `axum::serve` has no header-read, body or idle
//! timeouts, no connection cap and an unbounded graceful shutdown, so idle
//! and 1-byte-per-second sockets were kept forever and a half-sent request
//! held SIGTERM up. Here every connection is served by hyper's HTTP/1
//! server with:
//!
//! - a **header-read timeout** (hyper's own: the whole head must arrive in
//!   time, however slowly it trickles),
//! - a **body timeout** (a deadline on the whole request body, see
//!   [`DeadlineBody`]; the handler answers 408 JSON and closes),
//! - an **idle timeout** (no byte read or written and no request in flight),
//! - a **connection cap** (a semaphore; over the cap a connection gets one
//!   503 JSON answer and is closed, and at most [`REFUSING`] such answers
//!   are in flight),
//! - a **bounded graceful shutdown**: on the signal the listener closes,
//!   every connection is told to finish its request, and whatever is still
//!   open after `shutdown_grace` is dropped.
//!
//! hyper answers some malformed requests itself (400 bad request line or
//! header bytes, 431 head too large, 414 URI too long) with an empty body;
//! [`Tracked`] rewrites exactly those (a 4xx/5xx head without a
//! content-type — every response of ours has one) into the JSON error
//! shape. The remaining non-JSON errors axum makes (405, path rejections)
//! are rewritten by [`json_errors`].

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::log::{self, RateLimit};

/// Refusals (over the connection cap) being answered at most; beyond, a
/// connection is closed without an answer.
pub const REFUSING: usize = 64;
/// Longest request URI (path and query), bytes; longer gets 414 JSON.
pub const MAX_URI_BYTES: usize = 8 * 1024;

static EDGE_LOG: RateLimit = RateLimit::new(10);

/// Connection limits and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole request head must arrive within this.
    pub header_read_timeout: Duration,
    /// The whole request body must arrive within this.
    pub body_timeout: Duration,
    /// A connection with no traffic and no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Connections open at most.
    pub max_connections: usize,
    /// Largest request head, bytes (431 JSON beyond).
    pub max_header_bytes: usize,
    /// How long shutdown waits for open requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// Connection counters (shown at `/metrics`).
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections refused over the cap.
    pub refused: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
}

/// The process-wide counters.
pub static STATS: EdgeStats = EdgeStats {
    open: AtomicUsize::new(0),
    refused: AtomicU64::new(0),
    idle_closed: AtomicU64::new(0),
};

/// The connection counters in Prometheus text.
pub fn metrics_text() -> String {
    format!(
        "# HELP vigil_control_connections_open HTTP connections open.\n# TYPE vigil_control_connections_open gauge\nvigil_control_connections_open {}\n\
         # HELP vigil_control_connections_refused_total Connections refused over the connection cap.\n# TYPE vigil_control_connections_refused_total counter\nvigil_control_connections_refused_total {}\n\
         # HELP vigil_control_connections_idle_closed_total Connections closed by the idle timeout.\n# TYPE vigil_control_connections_idle_closed_total counter\nvigil_control_connections_idle_closed_total {}\n",
        STATS.open.load(Ordering::Relaxed),
        STATS.refused.load(Ordering::Relaxed),
        STATS.idle_closed.load(Ordering::Relaxed),
    )
}

/// Last traffic and requests in flight of one connection.
#[derive(Debug)]
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection becomes idle-expired (if nothing happens).
    fn deadline(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records its traffic and turns hyper's own bodiless error
/// answers into JSON ones.
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// A rewritten answer still to write, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> Tracked<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked {
            inner,
            activity,
            pending: None,
        }
    }
}

/// If `buf` is a response head hyper wrote for its own error (a 4xx/5xx
/// without a content-type), the JSON answer to send instead.
pub fn rewrite_error_head(buf: &[u8]) -> Option<Vec<u8>> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?;
    let status: u16 = code.parse().ok()?;
    if status < 400 {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(buf.get(..end)?).to_ascii_lowercase();
    if head.contains("\r\ncontent-type:") {
        return None;
    }
    let (message, field) = match status {
        400 => (
            "malformed HTTP request: bad request line, path bytes or header",
            "request",
        ),
        408 => ("request head not received in time", "headers"),
        414 => ("request URI too long", "uri"),
        431 => ("request headers too large", "headers"),
        _ => ("request refused", "request"),
    };
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = json!({"error": message, "field": field}).to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> Tracked<S> {
    /// Write out a pending rewritten answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            let Some(rest) = bytes.get(*done..) else {
                self.pending = None;
                break;
            };
            if rest.is_empty() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.drain(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if let Some(json) = rewrite_error_head(buf) {
            this.pending = Some((json, 0));
            this.activity.touch();
            // The original answer counts as written; the JSON one goes out
            // on flush.
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// The request body did not arrive within the body timeout.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body not received in time")
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether a body-reading error is (caused by) [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request body with a deadline on the whole of it.
pub struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(other) => Poll::Ready(other.map(|f| f.map_err(|e| Box::new(e) as _))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn json_error(status: StatusCode, message: &str, field: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": message, "field": field}).to_string(),
    )
        .into_response()
}

/// Middleware: 414 for over-long URIs, and JSON for every 4xx/5xx that is
/// not JSON yet (axum's 405 and path rejections).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return json_error(
            StatusCode::URI_TOO_LONG,
            &format!("request URI is {uri_len} bytes, at most {MAX_URI_BYTES}"),
            "uri",
        );
    }
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let field = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method",
        StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => "path",
        StatusCode::REQUEST_TIMEOUT => "body",
        StatusCode::PAYLOAD_TOO_LARGE => "body",
        _ => "request",
    };
    let body = json!({"error": text, "field": field}).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// Answer one connection over the cap with 503 JSON, then close it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body =
        json!({"error": "too many connections; retry later", "field": "connection"}).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    STATS.open.fetch_add(1, Ordering::Relaxed);
    let activity = Arc::new(Activity::new());
    activity.touch();
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let per_request = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut router = router.clone();
        let guard = InFlight::begin(&per_request);
        let req = req.map(|b| Body::new(DeadlineBody::new(b, limits.body_timeout)));
        async move {
            let mut resp = tower_service::Service::call(&mut router, req).await;
            if let Ok(r) = &mut resp {
                if r.status() == StatusCode::REQUEST_TIMEOUT {
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            drop(guard);
            resp
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .writev(false)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        if !stopping && *stop.borrow() {
            stopping = true;
            conn.as_mut().graceful_shutdown();
        }
        let deadline = activity.deadline(limits.idle_timeout);
        tokio::select! {
            _ = conn.as_mut() => break,
            () = tokio::time::sleep_until(deadline.into()) => {
                if !activity.busy() && Instant::now() >= activity.deadline(limits.idle_timeout) {
                    STATS.idle_closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if activity.busy() {
                    // A request is being handled: look again later.
                    activity.touch();
                }
            }
            r = stop.changed(), if !stopping => {
                if r.is_err() {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    STATS.open.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

/// Descriptors kept free for everything but client connections (SQLite,
/// its WAL, the webhook and Prometheus clients, the listener, logs).
pub const RESERVED_FDS: u64 = 64;

/// The connection cap in force: `configured`, but below the process's
/// descriptor limit so that accepting never runs out of descriptors (then
/// clients would time out instead of getting an answer).
pub fn effective_cap(configured: usize) -> usize {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        if let Some(n) = limit {
            let room = usize::try_from(n.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
            return configured.min(room).max(1);
        }
    }
    configured.max(1)
}

/// Serve `router` on `listener` with `limits` until `shutdown` resolves;
/// then wait at most `limits.shutdown_grace` for open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let cap = effective_cap(limits.max_connections);
    if cap < limits.max_connections {
        log::warn(
            "connection cap lowered to fit the descriptor limit",
            json!({"max_connections": limits.max_connections, "cap": cap, "reserved_fds": RESERVED_FDS}),
        );
    }
    let permits = Arc::new(Semaphore::new(cap));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of descriptors and the like: back off briefly.
                        if EDGE_LOG.allow() {
                            log::warn("accept failed", json!({"error": e.to_string()}));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        conns.spawn(connection(stream, router.clone(), limits, stop_rx.clone(), permit));
                    }
                    Err(_) => {
                        STATS.refused.fetch_add(1, Ordering::Relaxed);
                        if let Ok(p) = refusing.clone().try_acquire_owned() {
                            conns.spawn(async move {
                                refuse(stream).await;
                                drop(p);
                            });
                        }
                    }
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = conns.len();
    let grace = tokio::time::sleep(limits.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = &mut grace => {
                log::warn(
                    "shutdown grace over; closing the remaining connections",
                    json!({"open": conns.len(), "grace_ms": limits.shutdown_grace.as_millis() as u64}),
                );
                conns.abort_all();
                break;
            }
            r = conns.join_next() => if r.is_none() { break },
        }
    }
    log::info("connections closed", json!({"open_at_shutdown": open}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_hypers_bodiless_errors() {
        let hyper431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(rewrite_error_head(hyper431).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["field"], "headers");
        assert!(out.contains(&format!("content-length: {}", body.len())));
        // Ours carry a content-type; successes are left alone.
        assert!(rewrite_error_head(
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\r\n{}"
        )
        .is_none());
        assert!(rewrite_error_head(b"HTTP/1.1 304 Not Modified\r\netag: \"1\"\r\n\r\n").is_none());
        assert!(rewrite_error_head(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(rewrite_error_head(b"{\"x\":1}").is_none());
    }
}
