//! Shared harness of the integration tests: the real `vigil-control` binary
//! on loopback, a tiny blocking HTTP client, and reports shaped like the
//! filter's.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_scorer::histogram::bucket_index;
use vigil_scorer::verdict::State;
use vigil_scorer::window::{Counters, TickDelta};
use vigil_wire::report as wire;

/// The reporter credential (what a plugin configuration carries).
pub const TOKEN: &str = "test-token-0123456789abcdef";
/// The operator credential, named `alice`.
pub const OPERATOR_TOKEN: &str = "test-operator-token-fedcba9876543210";
/// A reporter credential bound to sidecars `bound-*` only.
pub const BOUND_TOKEN: &str = "test-bound-reporter-0123456789";

/// The credentials file the harness gives the service.
pub fn credentials_yaml() -> String {
    let d = vigil_control::credentials::digest_hex;
    format!(
        "reporters:\n  - name: test-sidecars\n    sha256: {}\n    sidecars: [\"*\"]\n  - name: bound-sidecars\n    sha256: {}\n    sidecars: [\"bound-*\"]\noperators:\n  - name: alice\n    sha256: {}\n",
        d(TOKEN),
        d(BOUND_TOKEN),
        d(OPERATOR_TOKEN)
    )
}

/// A credentials file (the harness's reporter and operator tokens) for a
/// `serve` started by hand; `serve` refuses to start without one.
pub fn credentials_file(name: &str) -> PathBuf {
    let path = temp_dir(name).join("credentials.yaml");
    std::fs::write(&path, credentials_yaml()).unwrap();
    path
}

/// The token the harness uses for a write to `path`: the reporter's for
/// reports, the operator's for everything else.
pub fn token_for(path: &str) -> &'static str {
    if path == "/v1/reports" {
        TOKEN
    } else {
        OPERATOR_TOKEN
    }
}
pub const BIN: &str = env!("CARGO_BIN_EXE_vigil-control");

/// A fresh, empty directory under the target dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `serve` that exited instead of listening.
#[derive(Debug)]
pub struct Refusal {
    /// Its exit code.
    pub code: Option<i32>,
    /// Its stderr, line by line.
    pub logs: String,
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Start `vigil-control serve` on an ephemeral port.
    pub fn start(data: &Path, config: Option<&Path>, extra: &[&str]) -> Server {
        Self::start_env(data, config, extra, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_env(
        data: &Path,
        config: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        match Self::spawn(data, config, extra, env) {
            Ok(s) => s,
            Err(r) => panic!("server did not start (exit {:?}): {}", r.code, r.logs),
        }
    }

    /// Start `vigil-control serve` and wait until it listens: `Err` with
    /// its exit code and stderr if it exits first (a refusal at start).
    /// Panics if it neither listens nor exits within 20 s.
    pub fn spawn(
        data: &Path,
        config: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, Refusal> {
        let creds = data.with_extension("credentials.yaml");
        if !creds.exists() {
            std::fs::write(&creds, credentials_yaml()).unwrap();
        }
        let mut cmd = Command::new(BIN);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(["--tick-ms", "200"])
            .arg("--credentials")
            .arg(&creds)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.spawn().expect("spawn vigil-control");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["msg"] == "listening" {
                        let _ = tx.send(Some(v["addr"].as_str().unwrap_or("").to_string()));
                    }
                }
                sink.lock().unwrap().push(line);
            }
            // stderr closed: the process exited.
            let _ = tx.send(None);
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(addr)) => Ok(Server {
                child,
                addr,
                data: data.to_path_buf(),
                logs,
            }),
            Ok(None) => {
                let code = child.wait().unwrap().code();
                let logs = logs.lock().unwrap().join("\n");
                Err(Refusal { code, logs })
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server neither listened nor exited in 20 s: {:?}",
                    logs.lock().unwrap()
                );
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL (no shutdown code runs).
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http(&self.addr, "GET", path, None, &[])
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(path, body, token_for(path))
    }

    /// `POST` with a given bearer token.
    pub fn post_with(&self, path: &str, body: &Value, token: &str) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        http(
            &self.addr,
            "POST",
            path,
            Some(body.to_string().as_bytes()),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
        )
    }

    pub fn canary(&self, name: &str) -> Value {
        let (status, v) = self.get(&format!("/v1/canaries/{name}"));
        assert_eq!(status, 200, "{v}");
        v
    }

    pub fn routing(&self) -> Value {
        let (status, v) = self.get("/v1/routing");
        assert_eq!(status, 200);
        v
    }

    pub fn logs_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP/1.1 request (`Connection: close`). Returns status and
/// JSON body (Null when not JSON).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let (status, raw) = http_raw(addr, method, path, body, headers);
    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}

pub fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.unwrap_or(b"");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&resp[..text_end]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut payload = resp[text_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload);
    }
    (status, payload)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + size]);
        b = &b[pos + 2 + size + 2..];
    }
    out
}

/// One series entry (a `vigil-wire` series): `requests` with `errors`,
/// all at `latency_ms`.
pub fn series(route: &str, cluster: &str, requests: u64, errors: u64, latency_ms: u64) -> Value {
    let b1 = bucket_index(latency_ms * 1000);
    let b2 = bucket_index(latency_ms * 1100);
    let (n1, n2) = (requests / 2, requests - requests / 2);
    let mut latency = Vec::new();
    if b1 == b2 {
        if requests > 0 {
            latency.push((b1, requests as u32));
        }
    } else {
        if n1 > 0 {
            latency.push((b1, n1 as u32));
        }
        if n2 > 0 {
            latency.push((b2, n2 as u32));
        }
    }
    let delta = TickDelta {
        counters: Counters {
            requests,
            errors,
            latency_sum_us: requests * latency_ms * 1000,
            ..Default::default()
        },
        latency,
    };
    serde_json::to_value(wire::Series::from_delta(
        route,
        cluster,
        &delta,
        State::Ok,
        0,
    ))
    .unwrap()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A `vigil-wire` report (incarnation 1) with these series and canaries.
pub fn report(sidecar: &str, seq: u64, series: Vec<Value>, canaries: Vec<Value>) -> Value {
    let mut r = wire::Report::new(sidecar, 1, seq, now_ms(), 1000);
    r.series = series
        .into_iter()
        .map(|s| serde_json::from_value(s).unwrap())
        .collect();
    r.canaries = canaries
        .into_iter()
        .map(|c| serde_json::from_value(c).unwrap())
        .collect();
    serde_json::to_value(&r).unwrap()
}

/// Post reports for `route` (stable/canary clusters) from two sidecars
/// every 100 ms until `done` says so or `timeout` passes. `canary_errors`
/// gives the canary error count per report from the elapsed time.
pub struct Feeder {
    pub seq: u64,
}

impl Feeder {
    pub fn new() -> Self {
        Feeder { seq: 0 }
    }

    /// One round: both sidecars report once.
    pub fn round(&mut self, srv: &Server, route: &str, canary_errors: u64, canary_ms: u64) {
        self.seq += 1;
        for sc in ["sidecar-a", "sidecar-b"] {
            let body = report(
                &format!("{sc}-{route}"),
                self.seq,
                vec![
                    series(route, "stable", 45, 0, 100),
                    series(route, "canary", 10, canary_errors, canary_ms),
                ],
                vec![],
            );
            let (status, v) = srv.post("/v1/reports", &body);
            assert_eq!(status, 202, "{v}");
        }
    }

    /// Feed healthy traffic until `pred` holds on the canary view.
    pub fn until(
        &mut self,
        srv: &Server,
        route: &str,
        timeout: Duration,
        errors: u64,
        ms: u64,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let v = srv.canary(route);
            if pred(&v) {
                return v;
            }
            if start.elapsed() > timeout {
                panic!("timed out; canary: {v:#}\nlogs:\n{}", srv.logs_text());
            }
            self.round(srv, route, errors, ms);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A canary declaration (plain Envoy style) for `name` = route.
pub fn canary_spec(name: &str, extra: Value) -> Value {
    let mut v = json!({"name": name, "route": name, "stable_cluster": "stable", "canary_cluster": "canary",
                       "steps": [10, 50, 100], "step_duration_s": 1});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Kinds of the canary's decisions, in order.
pub fn decision_kinds(v: &Value) -> Vec<String> {
    v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Run the binary with arguments; (exit code, stdout, stderr).
pub fn run_bin(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
