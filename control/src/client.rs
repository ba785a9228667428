//! A small HTTP/1.1 client (hyper) for outgoing calls: webhooks, the CLI's
//! calls to a running service, and the benchmark.
//!
//! Why this exists: three parts of the crate make outgoing requests and all
//! need the same things — a hard timeout, a bounded response, JSON bodies.
//! `https://` goes through rustls (no OpenSSL) with the Mozilla root
//! certificates (webpki-roots) plus, when `VIGIL_CONTROL_CA_FILE` names a
//! PEM file, the certificates in it (a private CA); `http://` stays plain.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Environment variable naming a PEM file of extra trusted CA certificates.
pub const CA_FILE_ENV: &str = "VIGIL_CONTROL_CA_FILE";

/// The trusted roots: webpki-roots plus the certificates of
/// `$VIGIL_CONTROL_CA_FILE` (an error names the file).
pub fn roots() -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os(CA_FILE_ENV) {
        let shown = std::path::Path::new(&path).display().to_string();
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| format!("{CA_FILE_ENV}={shown}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{CA_FILE_ENV}={shown}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{CA_FILE_ENV}={shown}: no certificates in it"));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{CA_FILE_ENV}={shown}: {e}"))?;
        }
    }
    Ok(roots)
}

/// Largest response body read, bytes.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A pooled HTTP/1.1 client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Bytes,
}

impl HttpClient {
    /// A new client with connection pooling. A bad `VIGIL_CONTROL_CA_FILE`
    /// leaves only the public roots (`serve` refuses to start on it first,
    /// see [`roots`]).
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        let roots = roots().unwrap_or_else(|_| {
            let mut r = rustls::RootCertStore::empty();
            r.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            r
        });
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let builder = match tls {
            Ok(config) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config),
            // ring supports the default versions; keep the platform-free
            // fallback anyway rather than panic.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
        };
        let https = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        HttpClient {
            inner: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https),
        }
    }

    /// One request with a hard timeout over the whole exchange.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Response, String> {
        // Errors show the URL without its path: webhook paths are secrets.
        let shown = crate::egress::redact(url);
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {shown}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "only http:// and https:// URLs are supported, got {shown}"
            ));
        }
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("bad request: {e}"))?;
        let exchange = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| format!("{shown}: {e}"))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{shown}: reading the response: {e}"))?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("{shown}: no answer within {} ms", timeout.as_millis()))?
    }
}
