//! The command line: argument parsing (pure) and the commands.
//!
//! Why this exists: one binary is the service (`serve`), the operator's
//! client (`canary list|show|approve|reject|pause|resume`), the offline
//! tools (`audit verify`, `render`, `inspect`) and the benchmark (`bench`). Parsing is
//! a small hand-written `--flag value` scheme so the binary stays light;
//! [`parse`] is pure and tested.

use crate::client::HttpClient;
use crate::credentials::CredentialStore;
use crate::http;
use crate::log;
use crate::metrics::Metrics;
use crate::service::{self, Options, Service};
use crate::spec::ServiceConfig;
use crate::store;
use crate::webhook::{Delivery, Webhooks};
use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Environment variable naming the credentials file of `serve` (when no
/// `--credentials`).
pub const CREDENTIALS_ENV: &str = "VIGIL_CONTROL_CREDENTIALS";
/// Environment variable holding the bearer token (when no `--token-file`).
pub const TOKEN_ENV: &str = "VIGIL_CONTROL_TOKEN";
/// Environment variable holding the server URL for client commands.
pub const SERVER_ENV: &str = "VIGIL_CONTROL_SERVER";

/// Usage text.
pub const USAGE: &str = "\
vigil-control — Vigil's control service

USAGE:
  vigil-control serve --listen ADDR --data DIR --credentials FILE [--config FILE]
                      [--prometheus http://HOST:PORT [--prometheus-timeout-ms 2000]]
                      [--out DIR] [--tick-ms N] [--webhook-timeout-ms N] [--webhook-retries N]
                      [--sidecar-ttl-s 600] [--max-requests-per-tick 1000000]
                      [--max-sidecar-share 0.5] [--trust-xfcc true]
                      [--header-timeout-ms 10000] [--body-timeout-ms 30000]
                      [--idle-timeout-ms 60000] [--max-connections 4096]
                      [--shutdown-grace-ms 3000]
  vigil-control canary list [--server URL]
  vigil-control canary show NAME [--server URL]
  vigil-control canary approve|reject|pause|resume NAME [--comment TEXT]
                      [--server URL] [--token-file FILE]
  vigil-control credential new --role reporter|operator --name NAME [--sidecars PATTERNS]
  vigil-control credential hash            (token on standard input)
  vigil-control audit verify --data DIR
  vigil-control retention --data DIR --older-than-days N --export FILE
  vigil-control render --data DIR [--out DIR]
  vigil-control bench [--seconds N] [--series N] [--clients N] [--json FILE]
                      [--server URL --token-file FILE]
  vigil-control replay --reports FILE --canary NAME [--config FILE]
  vigil-control inspect --config-dump FILE|http://ADMIN/config_dump --plugin-config FILE
      what each canary of a plugin configuration (its JSON, a MeshProxyPatch or a
      WasmPlugin) resolves to in a proxy's Envoy config dump; exit 1 when one
      resolves to nothing

serve reads reporter and operator credentials (SHA-256 digests) from
--credentials FILE or $VIGIL_CONTROL_CREDENTIALS and re-reads it when it
changes or on SIGHUP. Client commands take the bearer token from
--token-file FILE or the VIGIL_CONTROL_TOKEN environment variable; operator
actions are attributed to the credential's name. Tokens are never logged. --server defaults to
$VIGIL_CONTROL_SERVER or http://127.0.0.1:8080. --out defaults to DATA/gitops.
";

/// A parsed command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print usage.
    Help,
    /// Run the service.
    Serve {
        /// Listen address.
        listen: String,
        /// Data directory.
        data: PathBuf,
        /// Config file.
        config: Option<PathBuf>,
        /// Credentials file.
        credentials: PathBuf,
        /// GitOps output directory.
        out: Option<PathBuf>,
        /// Analysis tick, ms.
        tick_ms: u64,
        /// Webhook attempt timeout, ms.
        webhook_timeout_ms: u64,
        /// Webhook retries.
        webhook_retries: u32,
        /// Prometheus base URL (`--prometheus`): also read the filters'
        /// metrics from it every tick.
        prometheus: Option<String>,
        /// Timeout of each Prometheus query, ms.
        prometheus_timeout_ms: u64,
        /// Forget a sidecar identity after this long without a report, s.
        sidecar_ttl_s: u64,
        /// Evidence plausibility limits.
        limits: crate::plausibility::Limits,
        /// Bind reports to the XFCC SPIFFE namespace.
        trust_xfcc: bool,
        /// Connection limits and timeouts.
        edge_limits: crate::edge::Limits,
    },
    /// `canary list|show|approve|reject|pause|resume`.
    Canary {
        /// Sub-action.
        action: String,
        /// Canary name (not for list).
        name: Option<String>,
        /// Server URL.
        server: String,
        /// Token file.
        token_file: Option<PathBuf>,
        /// Who (optional; must be the credential's name when given).
        by: Option<String>,
        /// Comment.
        comment: String,
    },
    /// `audit verify`.
    AuditVerify {
        /// Data directory.
        data: PathBuf,
    },
    /// `retention`: export, then prune, old decisions and audit rows.
    Retention {
        /// Data directory.
        data: PathBuf,
        /// Prune what is older than this many days.
        older_than_days: u64,
        /// Export file (JSON lines), written before anything is pruned.
        export: PathBuf,
    },
    /// `render`.
    Render {
        /// Data directory.
        data: PathBuf,
        /// Output directory.
        out: Option<PathBuf>,
    },
    /// `bench`.
    Bench(crate::bench::BenchArgs),
    /// `credential new|hash`.
    Credential {
        /// `new` or `hash`.
        action: String,
        /// Role (`new`).
        role: Option<String>,
        /// Name (`new`).
        name: Option<String>,
        /// Sidecar patterns, comma-separated (`new`, reporters).
        sidecars: Option<String>,
    },
    /// `replay`: judge recorded reports with the service's judge.
    Replay {
        /// JSON-lines file: one analysis tick per line (an array of reports).
        reports: PathBuf,
        /// Canary to judge.
        canary: String,
        /// Config file (canaries, model).
        config: Option<PathBuf>,
    },
    /// `inspect`.
    Inspect {
        /// Config dump file or admin URL.
        config_dump: String,
        /// Plugin configuration (JSON or manifest) file.
        plugin_config: PathBuf,
    },
}

struct Flags {
    positional: Vec<String>,
    named: HashMap<String, String>,
}

fn split_flags(args: &[String], known: &[&str]) -> Result<Flags, String> {
    let mut positional = Vec::new();
    let mut named = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(flag) = a.strip_prefix("--") {
            let (key, value) = match flag.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_string(), v.clone())
                }
            };
            if !known.contains(&key.as_str()) {
                return Err(format!("unknown option --{key}"));
            }
            named.insert(key, value);
        } else {
            positional.push(a.clone());
        }
    }
    Ok(Flags { positional, named })
}

fn num<T: std::str::FromStr>(flags: &Flags, key: &str, default: T) -> Result<T, String> {
    match flags.named.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("--{key}: not a valid number: {v:?}")),
    }
}

fn required(flags: &Flags, key: &str) -> Result<String, String> {
    flags
        .named
        .get(key)
        .cloned()
        .ok_or_else(|| format!("--{key} is required"))
}

fn server(flags: &Flags) -> String {
    flags
        .named
        .get("server")
        .cloned()
        .or_else(|| std::env::var(SERVER_ENV).ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Parse the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match cmd.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "serve" => {
            let f = split_flags(
                rest,
                &[
                    "listen",
                    "data",
                    "config",
                    "credentials",
                    "token-file",
                    "out",
                    "tick-ms",
                    "webhook-timeout-ms",
                    "webhook-retries",
                    "prometheus",
                    "prometheus-timeout-ms",
                    "sidecar-ttl-s",
                    "max-requests-per-tick",
                    "max-sidecar-share",
                    "trust-xfcc",
                    "header-timeout-ms",
                    "body-timeout-ms",
                    "idle-timeout-ms",
                    "max-connections",
                    "shutdown-grace-ms",
                ],
            )?;
            if let Some(p) = f.positional.first() {
                return Err(format!("serve: unexpected argument {p:?}"));
            }
            let defaults = crate::plausibility::Limits::default();
            let limits = crate::plausibility::Limits {
                max_requests_per_tick: num(
                    &f,
                    "max-requests-per-tick",
                    defaults.max_requests_per_tick,
                )?
                .max(1),
                max_sidecar_share: num(&f, "max-sidecar-share", defaults.max_sidecar_share)?,
            };
            if !(limits.max_sidecar_share > 0.0 && limits.max_sidecar_share <= 1.0) {
                return Err("--max-sidecar-share must be in (0, 1]".into());
            }
            let d = crate::edge::Limits::default();
            let ms = |key: &str, default: Duration| -> Result<Duration, String> {
                let v = num(
                    &f,
                    key,
                    u64::try_from(default.as_millis()).unwrap_or(u64::MAX),
                )?;
                if !(100..=3_600_000).contains(&v) {
                    return Err(format!("--{key} must be in 100..=3600000"));
                }
                Ok(Duration::from_millis(v))
            };
            let max_connections = num(&f, "max-connections", d.max_connections)?;
            if !(1..=1_000_000).contains(&max_connections) {
                return Err("--max-connections must be in 1..=1000000".into());
            }
            let edge_limits = crate::edge::Limits {
                header_read_timeout: ms("header-timeout-ms", d.header_read_timeout)?,
                body_timeout: ms("body-timeout-ms", d.body_timeout)?,
                idle_timeout: ms("idle-timeout-ms", d.idle_timeout)?,
                max_connections,
                max_header_bytes: d.max_header_bytes,
                shutdown_grace: ms("shutdown-grace-ms", d.shutdown_grace)?,
            };
            let tick_ms = num(&f, "tick-ms", 1000u64)?;
            if !(50..=60_000).contains(&tick_ms) {
                return Err("--tick-ms must be in 50..=60000".into());
            }
            if f.named.contains_key("token-file") {
                return Err("serve: --token-file is gone; give --credentials FILE with reporter and operator credentials (control/README.md)".into());
            }
            let credentials = f
                .named
                .get("credentials")
                .cloned()
                .or_else(|| std::env::var(CREDENTIALS_ENV).ok())
                .ok_or_else(|| {
                    format!("serve: --credentials FILE (or ${CREDENTIALS_ENV}) is required")
                })?;
            Ok(Command::Serve {
                listen: required(&f, "listen")?,
                data: PathBuf::from(required(&f, "data")?),
                config: f.named.get("config").map(PathBuf::from),
                credentials: PathBuf::from(credentials),
                out: f.named.get("out").map(PathBuf::from),
                tick_ms,
                webhook_timeout_ms: num(&f, "webhook-timeout-ms", 5000u64)?.clamp(100, 60_000),
                webhook_retries: num(&f, "webhook-retries", 3u32)?.min(10),
                prometheus: f.named.get("prometheus").cloned(),
                prometheus_timeout_ms: num(&f, "prometheus-timeout-ms", 2000u64)?
                    .clamp(100, 60_000),
                sidecar_ttl_s: num(&f, "sidecar-ttl-s", crate::service::SIDECAR_TTL_MS / 1000)?
                    .clamp(1, 30 * 86_400),
                limits,
                trust_xfcc: match f.named.get("trust-xfcc").map(String::as_str) {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => {
                        return Err(format!("--trust-xfcc must be true or false, got {other:?}"))
                    }
                },
                edge_limits,
            })
        }
        "canary" => {
            let f = split_flags(rest, &["server", "token-file", "by", "comment"])?;
            let mut pos = f.positional.iter();
            let action = pos
                .next()
                .cloned()
                .ok_or("canary: list, show, approve, reject, pause or resume")?;
            let name = pos.next().cloned();
            match action.as_str() {
                "list" => {}
                "show" | "approve" | "reject" | "pause" | "resume" => {
                    if name.is_none() {
                        return Err(format!("canary {action}: the canary NAME is required"));
                    }
                }
                other => return Err(format!("canary: unknown action {other:?}")),
            }
            // No default from $USER: the server attributes the action to
            // the credential's name.
            let by = f.named.get("by").cloned();
            Ok(Command::Canary {
                action,
                name,
                server: server(&f),
                token_file: f.named.get("token-file").map(PathBuf::from),
                by,
                comment: f.named.get("comment").cloned().unwrap_or_default(),
            })
        }
        "audit" => {
            let f = split_flags(rest, &["data"])?;
            match f.positional.first().map(String::as_str) {
                Some("verify") => Ok(Command::AuditVerify {
                    data: PathBuf::from(required(&f, "data")?),
                }),
                _ => Err("audit: only `audit verify --data DIR`".into()),
            }
        }
        "retention" => {
            let f = split_flags(rest, &["data", "older-than-days", "export"])?;
            Ok(Command::Retention {
                data: PathBuf::from(required(&f, "data")?),
                older_than_days: required(&f, "older-than-days")?
                    .parse()
                    .map_err(|_| "--older-than-days: not a number of days".to_string())?,
                export: PathBuf::from(required(&f, "export")?),
            })
        }
        "render" => {
            let f = split_flags(rest, &["data", "out"])?;
            Ok(Command::Render {
                data: PathBuf::from(required(&f, "data")?),
                out: f.named.get("out").map(PathBuf::from),
            })
        }
        "bench" => {
            let f = split_flags(
                rest,
                &[
                    "seconds",
                    "series",
                    "clients",
                    "json",
                    "server",
                    "token-file",
                ],
            )?;
            Ok(Command::Bench(crate::bench::BenchArgs {
                seconds: num(&f, "seconds", 5u64)?.clamp(1, 600),
                series: num(&f, "series", 1000usize)?.clamp(1, crate::bench::MAX_BENCH_SERIES),
                clients: num(&f, "clients", 4usize)?.clamp(1, 256),
                json: f.named.get("json").map(PathBuf::from),
                server: f.named.get("server").cloned(),
                token_file: f.named.get("token-file").map(PathBuf::from),
            }))
        }
        "credential" => {
            let f = split_flags(rest, &["role", "name", "sidecars"])?;
            match f.positional.first().map(String::as_str) {
                Some(a @ ("new" | "hash")) => Ok(Command::Credential {
                    action: a.to_string(),
                    role: f.named.get("role").cloned(),
                    name: f.named.get("name").cloned(),
                    sidecars: f.named.get("sidecars").cloned(),
                }),
                _ => Err(
                    "credential: `credential new --role R --name N` or `credential hash`".into(),
                ),
            }
        }
        "replay" => {
            let f = split_flags(rest, &["reports", "canary", "config"])?;
            Ok(Command::Replay {
                reports: PathBuf::from(required(&f, "reports")?),
                canary: required(&f, "canary")?,
                config: f.named.get("config").map(PathBuf::from),
            })
        }
        "inspect" => {
            let f = split_flags(rest, &["config-dump", "plugin-config"])?;
            Ok(Command::Inspect {
                config_dump: required(&f, "config-dump")?,
                plugin_config: PathBuf::from(required(&f, "plugin-config")?),
            })
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

/// `credential new|hash`: make a token and its file entry, or hash one.
fn credential(cmd: Command) -> i32 {
    let Command::Credential {
        action,
        role,
        name,
        sidecars,
    } = cmd
    else {
        return 2;
    };
    if action == "hash" {
        let mut token = String::new();
        if std::io::stdin().read_line(&mut token).is_err() || token.trim().is_empty() {
            eprintln!("vigil-control credential hash: give the token on standard input");
            return 2;
        }
        println!("{}", crate::credentials::digest_hex(&token));
        return 0;
    }
    let (Some(role), Some(name)) = (role, name) else {
        eprintln!(
            "vigil-control credential new: --role reporter|operator and --name NAME are required"
        );
        return 2;
    };
    let token = match crate::credentials::new_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vigil-control credential new: {e}");
            return 1;
        }
    };
    let digest = crate::credentials::digest_hex(&token);
    let entry = match role.as_str() {
        "operator" => format!("operators:\n  - name: {name}\n    sha256: {digest}\n"),
        "reporter" => {
            let patterns: Vec<String> = sidecars
                .unwrap_or_else(|| "*".to_string())
                .split(',')
                .map(|p| format!("{:?}", p.trim()))
                .collect();
            format!(
                "reporters:\n  - name: {name}\n    sha256: {digest}\n    sidecars: [{}]\n",
                patterns.join(", ")
            )
        }
        other => {
            eprintln!(
                "vigil-control credential new: --role must be reporter or operator, got {other:?}"
            );
            return 2;
        }
    };
    if let Err(e) = crate::credentials::Credentials::parse(&entry) {
        eprintln!("vigil-control credential new: {e}");
        return 2;
    }
    println!("token: {token}");
    println!("# add to the credentials file (only the digest is stored):");
    print!("{entry}");
    0
}

/// The bearer token: `--token-file` or `$VIGIL_CONTROL_TOKEN`, trimmed.
pub fn load_token(file: Option<&Path>) -> Result<String, String> {
    let token = match file {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("token file {}: {e}", p.display()))?
        }
        None => std::env::var(TOKEN_ENV)
            .map_err(|_| format!("no token: give --token-file FILE or set {TOKEN_ENV}"))?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err("the bearer token is empty".into());
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the bearer token must not contain whitespace".into());
    }
    Ok(token)
}

/// Run the command line; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let cmd = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil-control: {e}\n\n{USAGE}");
            return 2;
        }
    };
    match cmd {
        Command::Help => {
            print!("{USAGE}");
            0
        }
        Command::AuditVerify { data } => audit_verify(&data),
        c @ Command::Credential { .. } => credential(c),
        Command::Replay {
            reports,
            canary,
            config,
        } => crate::replay::main(&reports, &canary, config.as_deref()),
        Command::Retention {
            data,
            older_than_days,
            export,
        } => {
            let cutoff = log::now_ms().saturating_sub(older_than_days.saturating_mul(86_400_000));
            match crate::retention::run(&data, cutoff, &export) {
                Ok(p) => {
                    println!(
                        "exported to {} and pruned {} audit rows and {} decisions; the stored chain continues after {}",
                        export.display(),
                        p.audit_rows,
                        p.decisions,
                        p.base.map_or("the genesis".to_string(), |(seq, hash)| format!("row {seq} ({hash})"))
                    );
                    0
                }
                Err(e) => {
                    eprintln!("vigil-control retention: {e}");
                    1
                }
            }
        }
        Command::Render { data, out } => {
            let out = out.unwrap_or_else(|| data.join("gitops"));
            match service::render_all(&data, &out) {
                Ok(names) => {
                    println!(
                        "rendered {} canaries into {}: {}",
                        names.len(),
                        out.display(),
                        names.join(", ")
                    );
                    0
                }
                Err(e) => {
                    eprintln!("vigil-control render: {e}");
                    1
                }
            }
        }
        other => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("vigil-control: cannot start the runtime: {e}");
                    return 1;
                }
            };
            let code = rt.block_on(async move {
                match other {
                    Command::Serve { .. } => serve(other).await,
                    Command::Canary { .. } => canary(other).await,
                    Command::Bench(args) => crate::bench::run(args).await,
                    Command::Inspect {
                        config_dump,
                        plugin_config,
                    } => crate::inspect::run(&config_dump, &plugin_config).await,
                    _ => 2,
                }
            });
            // Bounded: a blocking task still running does not hold the exit.
            rt.shutdown_timeout(Duration::from_millis(500));
            code
        }
    }
}

fn audit_verify(data: &Path) -> i32 {
    match store::verify_audit(data) {
        Ok(Ok(n)) => {
            println!("audit chain intact: {n} rows");
            0
        }
        Ok(Err(e)) => {
            println!("audit chain BROKEN at row {}: {}", e.seq, e.message);
            1
        }
        Err(e) => {
            eprintln!("vigil-control audit verify: {e}");
            2
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    log::info("shutting down", Value::Null);
}

async fn serve(cmd: Command) -> i32 {
    let Command::Serve {
        listen,
        data,
        config,
        credentials,
        out,
        tick_ms,
        webhook_timeout_ms,
        webhook_retries,
        prometheus,
        prometheus_timeout_ms,
        sidecar_ttl_s,
        limits,
        trust_xfcc,
        edge_limits,
    } = cmd
    else {
        return 2;
    };
    let fail = |msg: String| {
        log::error("cannot start", json!({"error": msg}));
        2
    };
    let creds = match CredentialStore::open(&credentials) {
        Ok(c) => Arc::new(c.with_xfcc(trust_xfcc)),
        Err(e) => return fail(e),
    };
    {
        let (r, o) = creds.current().counts();
        log::info(
            "credentials loaded",
            json!({"file": credentials.display().to_string(), "reporters": r, "operators": o}),
        );
    }
    let config = match &config {
        None => ServiceConfig::default(),
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => return fail(format!("config {}: {e}", path.display())),
            };
            let json = path.extension().is_some_and(|e| e == "json");
            match ServiceConfig::parse(&text, json) {
                Ok(c) => c,
                Err(e) => return fail(format!("config {}: {e}", path.display())),
            }
        }
    };
    let prometheus = match prometheus.as_deref().map(|u| {
        crate::prometheus::PromSource::new(u, Duration::from_millis(prometheus_timeout_ms))
    }) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return fail(e),
    };
    if let Err(e) = crate::client::roots() {
        return fail(e);
    }
    let metrics = Arc::new(Metrics::default());
    let hooks = Webhooks::start(
        Delivery {
            timeout: Duration::from_millis(webhook_timeout_ms),
            retries: webhook_retries,
            backoff: Duration::from_millis(500),
        },
        metrics.clone(),
    );
    let opts = Options {
        out: out.unwrap_or_else(|| data.join("gitops")),
        data,
        webhooks: config.webhooks.clone(),
        webhook_allow: config.webhook_allow.clone(),
        model: config.model.clone(),
        limits,
        sidecar_ttl_ms: sidecar_ttl_s.saturating_mul(1000),
    };
    let svc = match Service::open(opts, &config.canaries, Some(hooks), metrics) {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(e.to_string()),
    };
    svc.pii.set_alert(config.pii_alert.clone());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {listen}: {e}")),
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| listen.clone(), |a| a.to_string());
    log::info("listening", json!({"addr": addr, "tick_ms": tick_ms}));
    let ticker = http::spawn_ticker(svc.clone(), Duration::from_millis(tick_ms));
    let poller = prometheus
        .map(|p| crate::prometheus::spawn_poller(svc.clone(), p, Duration::from_millis(tick_ms)));
    let reloader = http::spawn_credential_reloader(creds.clone());
    let result = http::serve(listener, svc, creds, edge_limits, shutdown_signal()).await;
    reloader.abort();
    ticker.abort();
    if let Some(p) = poller {
        p.abort();
    }
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error("server failed", json!({"error": e.to_string()}));
            1
        }
    }
}

async fn canary(cmd: Command) -> i32 {
    let Command::Canary {
        action,
        name,
        server,
        token_file,
        by,
        comment,
    } = cmd
    else {
        return 2;
    };
    let client = HttpClient::new();
    let timeout = Duration::from_secs(10);
    let name = name.unwrap_or_default();
    let result = match action.as_str() {
        "list" => {
            client
                .request(
                    Method::GET,
                    &format!("{server}/v1/canaries"),
                    &[],
                    None,
                    timeout,
                )
                .await
        }
        "show" => {
            client
                .request(
                    Method::GET,
                    &format!("{server}/v1/canaries/{name}"),
                    &[],
                    None,
                    timeout,
                )
                .await
        }
        _ => {
            let token = match load_token(token_file.as_deref()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("vigil-control canary {action}: {e}");
                    return 2;
                }
            };
            let auth = format!("Bearer {token}");
            let body = match &by {
                Some(by) => json!({"by": by, "comment": comment}),
                None => json!({"comment": comment}),
            }
            .to_string();
            client
                .request(
                    Method::POST,
                    &format!("{server}/v1/canaries/{name}/{action}"),
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    Some(Bytes::from(body)),
                    timeout,
                )
                .await
        }
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-control canary {action}: {e}");
            return 1;
        }
    };
    let body: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    if !(200..300).contains(&resp.status) {
        eprintln!(
            "vigil-control canary {action}: HTTP {}: {}",
            resp.status,
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or("(no error message)")
        );
        return 1;
    }
    match action.as_str() {
        "list" => print!("{}", list_table(&body)),
        "show" => println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        ),
        _ => println!(
            "{}",
            body.get("explanation")
                .and_then(Value::as_str)
                .unwrap_or("done")
        ),
    }
    0
}

/// The `canary list` table (pure).
pub fn list_table(body: &Value) -> String {
    let mut out = format!(
        "{:<24} {:<10} {:<17} {:>6} {:>6}  {}\n",
        "NAME", "MODE", "PHASE", "WEIGHT", "STEP", "REASON"
    );
    let empty = Vec::new();
    for c in body
        .get("canaries")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!(
            "{:<24} {:<10} {:<17} {:>5}% {:>3}/{:<2}  {}\n",
            s("name"),
            s("mode"),
            s("phase"),
            n("canary_weight"),
            n("step"),
            n("step_count"),
            s("reason")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&[]).unwrap(), Command::Help);
        match parse(&args(
            "serve --listen 127.0.0.1:0 --data /tmp/x --credentials c.yaml --tick-ms 200",
        ))
        .unwrap()
        {
            Command::Serve {
                listen, tick_ms, ..
            } => assert_eq!((listen.as_str(), tick_ms), ("127.0.0.1:0", 200)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&args("serve --data /tmp/x --credentials c"))
            .unwrap_err()
            .contains("--listen"));
        assert!(parse(&args(
            "serve --listen a --data b --credentials c --token-file t"
        ))
        .unwrap_err()
        .contains("--credentials"));
        assert!(
            parse(&args("serve --listen a --data b --credentials c --bogus 1"))
                .unwrap_err()
                .contains("bogus")
        );
        match parse(&args(
            "serve --listen a --data b --credentials c --prometheus http://127.0.0.1:9090 --prometheus-timeout-ms 10",
        ))
        .unwrap()
        {
            Command::Serve {
                prometheus,
                prometheus_timeout_ms,
                ..
            } => assert_eq!(
                (prometheus.as_deref(), prometheus_timeout_ms),
                (Some("http://127.0.0.1:9090"), 100)
            ),
            other => panic!("{other:?}"),
        }
        match parse(&args(
            "canary approve checkout --by alice --server=http://h:1/",
        ))
        .unwrap()
        {
            Command::Canary {
                action,
                name,
                by,
                server,
                ..
            } => {
                assert_eq!(
                    (
                        action.as_str(),
                        name.as_deref(),
                        by.as_deref(),
                        server.as_str()
                    ),
                    ("approve", Some("checkout"), Some("alice"), "http://h:1")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&args("canary approve")).is_err());
        assert_eq!(
            parse(&args("audit verify --data d")).unwrap(),
            Command::AuditVerify { data: "d".into() }
        );
        assert!(
            matches!(parse(&args("bench --series 500")).unwrap(), Command::Bench(b) if b.series == 500)
        );
    }

    #[test]
    fn table_lists_canaries() {
        let t = list_table(
            &json!({"canaries":[{"name":"checkout","mode":"enforce","phase":"progressing","canary_weight":10,"step":2,"step_count":5,"reason":"step 2/5"}]}),
        );
        assert!(
            t.contains("checkout") && t.contains("10%") && t.contains("2/5"),
            "{t}"
        );
    }
}
