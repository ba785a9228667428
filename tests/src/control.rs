//! The real `vigil-control` service as a child process, for end-to-end tests of the
//! whole loop: Envoy + the filter reporting to it and fetching weights from it.
//!
//! The binary is found through `VIGIL_CONTROL_BIN`, else next to the test executable's
//! target directory (`target/<profile>/vigil-control`, built by `cargo build -p
//! vigil-control`, which `make e2e` does first). It listens on a kernel-chosen port,
//! read back from its `{"msg":"listening","addr":…}` log line. Dropping the value kills
//! the process; [`ControlService::kill9`] and [`ControlService::restart`] exercise
//! crash recovery on the same data directory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{raw_request, HttpClient};
use crate::{Result, ScratchDir};

/// The reporter credential: the only secret the filter's plugin
/// configuration carries (may only post reports).
pub const TOKEN: &str = "e2e-secret-token";
/// The operator credential (named `alice`): approvals, pauses, declarations.
pub const OPERATOR_TOKEN: &str = "e2e-operator-token";

/// The credentials file the harness gives the service: one reporter for
/// any sidecar, one operator `alice` (SHA-256 digests only).
pub fn credentials_yaml() -> String {
    credentials_yaml_for(TOKEN, Some(OPERATOR_TOKEN))
}

/// A credentials file with one reporter `e2e-sidecars` (any sidecar) for
/// `reporter` and, when given, one operator `alice` for `operator`.
pub fn credentials_yaml_for(reporter: &str, operator: Option<&str>) -> String {
    let hex = |t: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut out = format!(
        "reporters:\n  - name: e2e-sidecars\n    sha256: {}\n    sidecars: [\"*\"]\n",
        hex(reporter)
    );
    if let Some(op) = operator {
        out.push_str(&format!(
            "operators:\n  - name: alice\n    sha256: {}\n",
            hex(op)
        ));
    }
    out
}

/// Path of the `vigil-control` binary.
pub fn control_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("VIGIL_CONTROL_BIN") {
        return Ok(PathBuf::from(p));
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/vigil-control
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory from the test executable")?;
    let bin = profile_dir.join("vigil-control");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: run `cargo build -p vigil-control` (make e2e does) or set VIGIL_CONTROL_BIN",
            bin.display()
        )
        .into())
    }
}

/// A running control service.
#[derive(Debug)]
pub struct ControlService {
    child: Option<Child>,
    dir: ScratchDir,
    addr: SocketAddr,
    tick_ms: u64,
    starts: u32,
    client: HttpClient,
    extra_args: Vec<String>,
}

impl ControlService {
    /// Start with `config_yaml` as its `--config` and an analysis tick of `tick_ms`.
    pub async fn start(name: &str, config_yaml: &str, tick_ms: u64) -> Result<Self> {
        Self::start_with_args(name, config_yaml, tick_ms, &[]).await
    }

    /// [`ControlService::start`] with extra `serve` arguments (e.g.
    /// `--prometheus URL`), kept across restarts.
    pub async fn start_with_args(
        name: &str,
        config_yaml: &str,
        tick_ms: u64,
        extra_args: &[&str],
    ) -> Result<Self> {
        let dir = ScratchDir::new(&format!("control-{name}"))?;
        std::fs::write(dir.path().join("config.yaml"), config_yaml)?;
        std::fs::write(dir.path().join("credentials.yaml"), credentials_yaml())?;
        let mut s = ControlService {
            child: None,
            dir,
            addr: "127.0.0.1:0".parse()?,
            tick_ms,
            starts: 0,
            client: HttpClient::new(),
            extra_args: extra_args.iter().map(|a| (*a).to_string()).collect(),
        };
        s.spawn(None).await?;
        Ok(s)
    }

    async fn spawn(&mut self, listen: Option<SocketAddr>) -> Result<()> {
        self.starts += 1;
        let log = self.dir.path().join(format!("control-{}.log", self.starts));
        let listen = listen.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        let mut command = Command::new(control_binary()?);
        crate::envoy::die_with_parent(&mut command);
        let child = command
            .arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--data")
            .arg(self.dir.path().join("data"))
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .arg("--tick-ms")
            .arg(self.tick_ms.to_string())
            .arg("--credentials")
            .arg(self.dir.path().join("credentials.yaml"))
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(f) = File::open(&log) {
                for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v.get("msg").and_then(Value::as_str) == Some("listening") {
                            if let Some(a) = v.get("addr").and_then(Value::as_str) {
                                self.addr = a.parse()?;
                                return Ok(());
                            }
                        }
                    }
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(
                    format!("vigil-control exited ({status}) before listening:\n{text}").into(),
                );
            }
            if Instant::now() > deadline {
                return Err("vigil-control did not log 'listening' within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its data directory (SQLite file and rendered YAML).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `kill -9`: no shutdown of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same data directory and the same port.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn(Some(self.addr)).await
    }

    /// `GET path` → JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(serde_json::from_str(&self.get_text(path).await?)?)
    }

    /// `GET path` (5 s timeout), the body as text (YAML, DOT, SVG renderings).
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let reply = self
            .client
            .get(self.addr, path, &[], Duration::from_secs(5))
            .await?;
        Ok(reply.text())
    }

    /// The routing document the filters read.
    pub async fn routing(&self) -> Result<Value> {
        self.get("/v1/routing").await
    }

    /// One canary's state.
    pub async fn canary(&self, name: &str) -> Result<Value> {
        self.get(&format!("/v1/canaries/{name}")).await
    }

    /// `POST path` with the token its route needs (reporter for reports,
    /// operator otherwise) and a JSON body → status.
    pub async fn post(&self, path: &str, body: &Value) -> Result<u16> {
        let token = if path == "/v1/reports" {
            TOKEN
        } else {
            OPERATOR_TOKEN
        };
        self.post_as(path, body, Some(token)).await
    }

    /// `POST path` with `token` (or no `authorization` header at all) → status.
    pub async fn post_as(&self, path: &str, body: &Value, token: Option<&str>) -> Result<u16> {
        let body = body.to_string();
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let (status, _) =
            raw_request(self.addr, request.as_bytes(), Duration::from_secs(5)).await?;
        Ok(status)
    }

    /// Everything the service logged, over all its starts.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("control-{i}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl Drop for ControlService {
    fn drop(&mut self) {
        self.kill9();
    }
}
