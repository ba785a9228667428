//! Minimal HTTP/1.1 client helpers: a pooled GET client (admin API, open-loop load) and a
//! raw-bytes request over TCP (for requests no well-behaved client would send).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HeaderMap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Result;

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Reply {
    /// A response header as text (lossy for non-UTF-8 bytes), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A pooled HTTP/1.1 client (keep-alive; opens as many connections as requests in flight).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A new client with its own connection pool.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(512)
            .build(connector);
        Self { inner }
    }

    /// `GET http://<addr><path>` with extra headers; the whole exchange (connect, send,
    /// read the body) is bounded by `timeout`.
    pub async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Reply> {
        let mut builder = hyper::Request::get(format!("http://{addr}{path}"));
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder.body(Empty::<Bytes>::new())?;
        let exchange = async {
            let response = self.inner.request(request).await?;
            let status = response.status().as_u16();
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, crate::Error>(Reply {
                status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(reply) => reply,
            Err(_) => Err(format!("GET {addr}{path}: no response within {timeout:?}").into()),
        }
    }
}

/// Sends `request` as raw bytes on a new TCP connection and reads until the server
/// closes it (send `Connection: close`) or `timeout` passes. Returns the status code of
/// the first response and everything read.
pub async fn raw_request(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, crate::Error>(buf)
    };
    let buf = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("raw request to {addr}: no complete response within {timeout:?}"))??;
    let head = String::from_utf8_lossy(&buf);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("raw request to {addr}: not an HTTP response: {head:?}"))?;
    Ok((status, buf))
}

/// `(header bytes, content-length)` of the HTTP/1.1 request at the start of
/// `buf`, once its header is complete (`None` until then); a missing or bad
/// `content-length` is 0. For the tests' hand-written receivers.
pub fn request_frame(buf: &[u8]) -> Option<(usize, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(buf.get(..end)?);
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    Some((end + 4, len))
}
