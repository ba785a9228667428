//! Real gRPC upstreams and a real gRPC client for the e2e tests: the
//! grpcio server and load client in `tests/upstreams/grpc_infer.py`, run
//! with the repository's `.venv` Python (`scripts/setup.sh` installs grpcio).
//!
//! [`GrpcUpstream`] is one server process ("stable" or "canary") whose
//! failure ratio and status can be changed at run time and which counts
//! every status it returned; [`GrpcLoad`] is one open-loop client process
//! reporting every call. [`http2_upstreams`] makes the bootstrap's stable and
//! canary clusters speak HTTP/2 (gRPC needs it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::envoy::die_with_parent;
use crate::{repo_root, Result};

/// The server and client script.
pub fn script() -> PathBuf {
    repo_root().join("tests/upstreams/grpc_infer.py")
}

/// The `.venv` Python with grpcio; an error naming the fix when missing.
pub fn python() -> Result<PathBuf> {
    let py = repo_root().join(".venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{} cannot import grpc: run `make setup` (scripts/setup.sh installs grpcio into .venv)",
            py.display()
        )
        .into())
    }
}

/// One upstream server process (gRPC, or the SSE server).
pub struct GrpcUpstream {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl GrpcUpstream {
    /// Starts `grpc_infer.py serve <name>` and waits for its port.
    pub fn start(name: &str) -> Result<Self> {
        Self::start_script(script(), name)
    }

    /// Starts the streaming (SSE) upstream `tests/upstreams/sse_infer.py serve <name>`,
    /// which takes the same kind of stdin commands ([`GrpcUpstream::command`]).
    pub fn start_sse(name: &str) -> Result<Self> {
        Self::start_script(repo_root().join("tests/upstreams/sse_infer.py"), name)
    }

    fn start_script(script: PathBuf, name: &str) -> Result<Self> {
        let mut command = Command::new(python()?);
        command
            .arg(script)
            .args(["serve", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut command);
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| format!("gRPC server {name} did not print its port"))?;
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("gRPC server {name}: unexpected first line {first:?}"))?;
        Ok(Self {
            child,
            stdin,
            lines,
            port,
        })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one stdin command and returns the server's one-line answer.
    pub fn command(&mut self, line: &str) -> Result<String> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("gRPC server did not answer {line:?}"))?)
    }

    /// Fails `ratio` of the calls from now on with status `code` (e.g. `UNAVAILABLE`).
    pub fn set_failure(&mut self, ratio: f64, code: &str) -> Result<()> {
        let answer = self.command(&format!("fail {ratio} {code}"))?;
        if answer.trim() == "OK" {
            Ok(())
        } else {
            Err(format!("gRPC server refused the failure: {answer}").into())
        }
    }

    /// Every status returned so far, by name (`OK`, `UNAVAILABLE`, ...).
    pub fn stats(&mut self) -> Result<BTreeMap<String, u64>> {
        let answer = self.command("stats")?;
        Ok(serde_json::from_str(&answer)?)
    }
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One finished call, as the client saw it.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    /// Scheduled offset from the client's start.
    pub t: Duration,
    /// gRPC status name.
    pub code: String,
    /// `x-served-by` of the answer.
    pub served_by: Option<String>,
    /// `x-seen-subset` of the answer.
    pub subset: Option<String>,
    /// Client-side latency, ms.
    pub latency_ms: f64,
}

/// A running open-loop client process.
pub struct GrpcLoad {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// When the client started its loop (its `t = 0`), approximately.
    pub started: Instant,
}

impl GrpcLoad {
    /// Starts `rps` calls a second of `method` (`Unary` or `Stream`) for
    /// `seconds` against `addr`.
    pub fn start(addr: SocketAddr, rps: f64, seconds: f64, method: &str) -> Result<Self> {
        let mut command = Command::new(python()?);
        command
            .arg(script())
            .args([
                "load",
                &addr.to_string(),
                &rps.to_string(),
                &seconds.to_string(),
                method,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut command);
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            started: Instant::now(),
        })
    }

    /// True once the client process has exited.
    pub fn is_done(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the client to exit (bounded) and returns every call.
    pub fn finish(mut self, timeout: Duration) -> Result<Vec<GrpcCall>> {
        let deadline = Instant::now() + timeout;
        while !self.is_done() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err("gRPC load client did not finish".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut calls = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            let v: Value = serde_json::from_str(&line)?;
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            calls.push(GrpcCall {
                t: Duration::from_secs_f64(v.get("t").and_then(Value::as_f64).unwrap_or(0.0)),
                code: s("code").unwrap_or_default(),
                served_by: s("served_by"),
                subset: s("subset"),
                latency_ms: v.get("latency_ms").and_then(Value::as_f64).unwrap_or(0.0),
            });
        }
        calls.sort_by_key(|c| c.t);
        Ok(calls)
    }
}

impl Drop for GrpcLoad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the bootstrap's `stable` and `canary` clusters HTTP/2 (h2c).
pub fn http2_upstreams(bootstrap: &mut Value) -> Result<()> {
    let clusters = bootstrap
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .ok_or("bootstrap has no static_resources.clusters")?;
    for c in clusters.iter_mut() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if name == "stable" || name == "canary" {
            if let Some(obj) = c.as_object_mut() {
                obj.insert(
                    "typed_extension_protocol_options".into(),
                    serde_json::json!({
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}}
                        }
                    }),
                );
            }
        }
    }
    Ok(())
}
