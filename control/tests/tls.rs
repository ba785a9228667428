//! Webhooks over HTTPS with rustls (real binary, a real TLS receiver on
//! loopback with a private CA): delivered when the CA is trusted
//! (`VIGIL_CONTROL_CA_FILE`), refused when it is not — the certificate is
//! really verified — and the URL's secret path is never logged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TLS webhook receiver for `127.0.0.1`; returns (port, CA PEM, bodies).
fn tls_receiver() -> (u16, String, Arc<Mutex<Vec<Value>>>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "vigil test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { break };
                let acceptor = acceptor.clone();
                let sink = sink.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = tls.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let body = &buf[end + 4..end + 4 + len];
                            if let Ok(v) = serde_json::from_slice(body) {
                                sink.lock().unwrap().push(v);
                            }
                            let _ = tls
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                            let _ = tls.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
    });
    (port, ca.pem(), got)
}

fn start(data: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Server {
    let config = data.with_extension("config.json");
    std::fs::write(
        &config,
        json!({"webhooks": [format!("https://127.0.0.1:{port}/services/T0/B0/secret")],
               "webhook_allow": ["127.0.0.1"],
               "canaries": [canary_spec("tls", json!({"steps": [10, 100]}))]})
        .to_string(),
    )
    .unwrap();
    Server::start_env(
        data,
        Some(&config),
        &["--webhook-timeout-ms", "1000", "--webhook-retries", "0"],
        env,
    )
}

#[test]
fn https_webhooks_are_delivered_with_a_trusted_ca_and_refused_without() {
    let (port, ca_pem, got) = tls_receiver();
    let ca_file = temp_dir("tls-ca").join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    // Without the private CA the certificate does not verify.
    let srv = start(&temp_dir("tls-untrusted"), port, &[]);
    let t = Instant::now();
    while !srv.logs_text().contains("webhook delivery failed") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", srv.logs_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        got.lock().unwrap().is_empty(),
        "delivered to an untrusted certificate"
    );
    let logs = srv.logs_text();
    assert!(!logs.contains("secret"), "webhook secret logged: {logs}");
    drop(srv);

    // With it, the start event arrives over TLS.
    let ca = ca_file.to_str().unwrap().to_string();
    let srv = start(
        &temp_dir("tls-trusted"),
        port,
        &[("VIGIL_CONTROL_CA_FILE", ca.as_str())],
    );
    let t = Instant::now();
    loop {
        if got
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "start" && e["canary"] == "tls")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no webhook over TLS: {}",
            srv.logs_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!srv.logs_text().contains("secret"));
    // A CA file that is not PEM is refused at start.
    let bad = ca_file.with_extension("bad");
    std::fs::write(&bad, "not a certificate").unwrap();
    let (code, _, err) = run_bin(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            temp_dir("tls-bad").to_str().unwrap(),
            "--credentials",
            credentials_file("tls-bad-creds").to_str().unwrap(),
        ],
        &[
            ("VIGIL_CONTROL_CA_FILE", bad.to_str().unwrap()),
            ("VIGIL_CONTROL_TOKEN", TOKEN),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("VIGIL_CONTROL_CA_FILE"), "{err}");
}
