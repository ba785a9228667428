//! The demo scenario: start everything, drive load, inject the fault, watch, summarise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use vigil_e2e::envoy::{add_cluster, routes_mut, Envoy, EnvoyOptions};
use vigil_e2e::http::HttpClient;
use vigil_e2e::load::{OpenLoop, Outcome};
use vigil_e2e::scenario::plugin_config;

use crate::baseline::{self, Rule};
use crate::procs::{sibling_binary, Proc};
use crate::{check_port_free, Result};

/// Which story the demo tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Canary latency ×3 and 5 % 503 at the fault time → steer, rollback.
    Latency,
    /// Canary 10 % 503 at the fault time → steer, rollback.
    Errors,
    /// No fault → every step passes, promoted.
    Healthy,
    /// 1 rps, no fault → too little evidence: held, never promoted, never rolled back.
    LowTraffic,
    /// Every answer streamed (SSE); at the fault time the canary's time to
    /// first token triples while each stream's duration stays the same →
    /// the filter's TTFT signal is critical, steer, rollback.
    Streaming,
}

impl Kind {
    /// Parses `DEMO_SCENARIO`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "latency" => Kind::Latency,
            "errors" => Kind::Errors,
            "healthy" => Kind::Healthy,
            "low-traffic" => Kind::LowTraffic,
            "streaming" => Kind::Streaming,
            _ => return None,
        })
    }
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Latency => "latency",
            Kind::Errors => "errors",
            Kind::Healthy => "healthy",
            Kind::LowTraffic => "low-traffic",
            Kind::Streaming => "streaming",
        }
    }
    /// (latency multiplier, 503 ratio) of the canary fault, if any.
    pub fn fault(self) -> Option<(f64, f64)> {
        match self {
            Kind::Latency => Some((3.0, 0.05)),
            Kind::Errors => Some((1.0, 0.10)),
            Kind::Streaming => Some((1.0, 0.0)),
            _ => None,
        }
    }
    /// Multiplier of the canary's time to first token at the fault time
    /// (the stream's total duration is kept).
    pub fn ttft_mult(self) -> f64 {
        if self == Kind::Streaming {
            3.0
        } else {
            1.0
        }
    }
    /// Request path of the load (`/v1/stream`: every answer streamed).
    pub fn path(self) -> &'static str {
        if self == Kind::Streaming {
            "/v1/stream"
        } else {
            "/"
        }
    }
    /// The decision this scenario should end with.
    pub fn expected_decision(self) -> &'static str {
        match self {
            Kind::Latency | Kind::Errors | Kind::Streaming => "rollback",
            Kind::Healthy => "promote",
            Kind::LowTraffic => "hold",
        }
    }
}

/// Ports (0: any free port).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Envoy listener (DEMO_LISTEN_PORT).
    pub listen: u16,
    /// Envoy admin (DEMO_ADMIN_PORT).
    pub admin: u16,
    /// vigil-control (DEMO_CONTROL_PORT).
    pub control: u16,
    /// stable upstream (DEMO_STABLE_PORT).
    pub stable: u16,
    /// canary upstream (DEMO_CANARY_PORT).
    pub canary: u16,
}

/// Demo settings (from the environment, see [`Settings::from_env`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Scenario.
    pub kind: Kind,
    /// Requests per second.
    pub rps: f64,
    /// Rollout steps, percent.
    pub steps: Vec<u32>,
    /// Seconds per step.
    pub step_s: u64,
    /// Fault time after the load starts.
    pub fault_at: Duration,
    /// Control service analysis tick.
    pub control_tick_ms: u64,
    /// How long everything (load, dashboard) keeps running after the decision.
    pub linger: Duration,
    /// Ports.
    pub ports: Ports,
    /// Output directory (report.json, requests.csv, audit log, run/).
    pub out: PathBuf,
}

fn env_num<T: std::str::FromStr>(var: &str, default: T) -> Result<T> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| format!("{var}={v}: not a valid number").into()),
        _ => Ok(default),
    }
}

impl Settings {
    /// `DEMO_SCENARIO` (latency|errors|healthy|low-traffic), `DEMO_STEP_S` (8),
    /// `DEMO_FAULT_AT_S` (12), `DEMO_RPS` (100; 1 for low-traffic), `DEMO_CONTROL_TICK_MS`
    /// (500), `DEMO_LINGER_S` (4: seconds the run, and so the dashboard, stays up after
    /// the decision), `DEMO_OUT` (target/demo), ports `DEMO_LISTEN_PORT` (10000),
    /// `DEMO_ADMIN_PORT` (9901), `DEMO_CONTROL_PORT` (9090), `DEMO_STABLE_PORT` (8081),
    /// `DEMO_CANARY_PORT` (8082).
    pub fn from_env() -> Result<Self> {
        let name = std::env::var("DEMO_SCENARIO").unwrap_or_else(|_| "latency".into());
        let name = if name.is_empty() {
            "latency".to_string()
        } else {
            name
        };
        let kind = Kind::parse(&name).ok_or_else(|| {
            format!(
                "DEMO_SCENARIO={name}: expected latency, errors, healthy, low-traffic or streaming"
            )
        })?;
        let default_rps = if kind == Kind::LowTraffic { 1.0 } else { 100.0 };
        let out = match std::env::var_os("DEMO_OUT") {
            Some(p) => PathBuf::from(p),
            None => vigil_e2e::repo_root().join("target/demo"),
        };
        Ok(Self {
            kind,
            rps: env_num("DEMO_RPS", default_rps)?,
            steps: vec![10, 25, 50, 100],
            step_s: env_num("DEMO_STEP_S", 8)?,
            fault_at: Duration::from_secs_f64(env_num("DEMO_FAULT_AT_S", 12.0)?),
            control_tick_ms: env_num("DEMO_CONTROL_TICK_MS", 500)?,
            linger: Duration::from_secs_f64(env_num("DEMO_LINGER_S", 4.0)?),
            ports: Ports {
                listen: env_num("DEMO_LISTEN_PORT", 10000)?,
                admin: env_num("DEMO_ADMIN_PORT", 9901)?,
                control: env_num("DEMO_CONTROL_PORT", 9090)?,
                stable: env_num("DEMO_STABLE_PORT", 8081)?,
                canary: env_num("DEMO_CANARY_PORT", 8082)?,
            },
            out,
        })
    }
}

/// The request log: every completed request.
#[derive(Debug, Default)]
struct Log {
    outcomes: Vec<Outcome>,
}

impl Log {
    fn bad(o: &Outcome) -> bool {
        !o.is_success()
    }
    fn slow(o: &Outcome) -> bool {
        o.is_success() && o.latency.is_some_and(|l| l > Duration::from_millis(500))
    }
}

/// What the control service said at one poll.
#[derive(Debug, Clone, Default)]
struct ControlView {
    phase: String,
    weight: u64,
    step: u64,
    steps: u64,
    holding: bool,
    decisions: Vec<Value>,
}

async fn control_view(client: &HttpClient, addr: SocketAddr) -> Option<ControlView> {
    let r = client
        .get(addr, "/v1/canaries/checkout", &[], Duration::from_secs(2))
        .await
        .ok()?;
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    Some(ControlView {
        phase: v.get("phase")?.as_str()?.to_string(),
        weight: v.get("canary_weight").and_then(Value::as_u64).unwrap_or(0),
        step: v.get("step").and_then(Value::as_u64).unwrap_or(0),
        steps: v.get("step_count").and_then(Value::as_u64).unwrap_or(0),
        holding: v.get("holding").and_then(Value::as_bool).unwrap_or(false),
        decisions: v
            .get("decisions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    })
}

fn canary_state(m: &vigil_e2e::prom::Metrics) -> Option<f64> {
    m.samples
        .iter()
        .find(|s| {
            s.name == "vigil_state" && s.labels.get("cluster").map(String::as_str) == Some("canary")
        })
        .map(|s| s.value)
}

fn state_name(s: Option<f64>) -> &'static str {
    vigil_e2e::scenario::state_name(s)
}

fn secs(d: Option<Duration>) -> Value {
    d.map(|d| json!((d.as_secs_f64() * 10.0).round() / 10.0))
        .unwrap_or(Value::Null)
}

fn fmt_s(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| "—".into())
}

fn progress(
    detected: Option<Duration>,
    steered: Option<Duration>,
    decided: Option<Duration>,
) -> String {
    format!(
        "[fault ✔] → [detected {}] → [steered {}] → [decision {}]",
        mark(detected),
        mark(steered),
        mark(decided)
    )
}

fn mark(done: Option<Duration>) -> String {
    match done {
        Some(d) => format!("✔ {:.1}s", d.as_secs_f64()),
        None => "…".into(),
    }
}

/// Runs the demo; returns the report (also written to `out/report.json`).
pub async fn run(s: &Settings) -> Result<Value> {
    let p = s.ports;
    check_port_free(p.listen, "DEMO_LISTEN_PORT", "Envoy listener")?;
    check_port_free(p.admin, "DEMO_ADMIN_PORT", "Envoy admin")?;
    check_port_free(p.control, "DEMO_CONTROL_PORT", "vigil-control")?;
    check_port_free(p.stable, "DEMO_STABLE_PORT", "stable upstream")?;
    check_port_free(p.canary, "DEMO_CANARY_PORT", "canary upstream")?;
    let control_bin = sibling_binary("vigil-control", "VIGIL_CONTROL_BIN")?;
    let upstream_bin = sibling_binary("demo-upstream", "DEMO_UPSTREAM_BIN")?;

    let run_dir = s.out.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(run_dir.join("data"))?;
    let data = run_dir.join("data");
    let token = format!(
        "demo-{:x}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()) << 20
    );

    // 1. upstreams
    let start_upstream = |name: &'static str, port: u16| {
        let mut cmd = Command::new(&upstream_bin);
        cmd.args(["--name", name, "--listen", &format!("127.0.0.1:{port}")]);
        let log = run_dir.join(format!("{name}.log"));
        async move { Proc::start_listening(name, cmd, &log, Duration::from_secs(10)).await }
    };
    let (stable_proc, stable_addr) = start_upstream("stable", p.stable).await?;
    let (canary_proc, canary_addr) = start_upstream("canary", p.canary).await?;
    let upstreams = (stable_proc, canary_proc);

    // 2. control service
    let steps = s
        .steps
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "# written by vigil-demo\ncanaries:\n  - name: checkout\n    route: checkout\n    stable_cluster: stable\n    canary_cluster: canary\n    namespace: demo\n    steps: [{steps}]\n    step_duration_s: {}\n    slo: {{max_error_ratio: 0.01, max_p99_ms: 500}}\n    mode: enforce\n",
        s.step_s
    );
    let config_path = run_dir.join("vigil-control.yaml");
    std::fs::write(&config_path, config)?;
    // The filter carries a reporter credential only; the demo needs no operator.
    let creds_path = run_dir.join("credentials.yaml");
    std::fs::write(
        &creds_path,
        vigil_e2e::control::credentials_yaml_for(&token, None),
    )?;
    let mut cmd = Command::new(&control_bin);
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", p.control)])
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&config_path)
        .args(["--tick-ms", &s.control_tick_ms.to_string()])
        .arg("--credentials")
        .arg(&creds_path);
    let (mut control, control_addr) = Proc::start_listening(
        "vigil-control",
        cmd,
        &run_dir.join("vigil-control.log"),
        Duration::from_secs(20),
    )
    .await?;

    // 3. Envoy: steer mode, reporting to the control service.
    let plugin = plugin_config(
        "steer",
        &json!({"control": {"cluster": "vigil-control", "token": token, "timeout_ms": 500}}),
    );
    let (listen, admin, cport) = (p.listen, p.admin, control_addr.port());
    let first_step = s.steps.first().copied().unwrap_or(10).clamp(1, 99);
    let envoy = Envoy::start(
        EnvoyOptions::new("demo", plugin)
            .upstreams(stable_addr.port(), canary_addr.port())
            .transform(move |b| {
                add_cluster(b, "vigil-control", cport)?;
                if let Some(v) = b.pointer_mut("/admin/address/socket_address/port_value") {
                    *v = json!(admin);
                }
                if let Some(v) = b.pointer_mut("/static_resources/listeners/0/address/socket_address/port_value") {
                    *v = json!(listen);
                }
                // The static split (used until the filter has weights) = the first step.
                // The filter applies weights only to routes where it has seen both the
                // stable and the canary series, so the canary must get some traffic first.
                for r in routes_mut(b)?.iter_mut() {
                    if let Some(w) = r.pointer_mut("/route/weighted_clusters/clusters") {
                        *w = json!([{"name": "stable", "weight": 100 - first_step}, {"name": "canary", "weight": first_step}]);
                    }
                }
                Ok(())
            }),
    )
    .await?;

    println!("Vigil demo — scenario `{}`", s.kind.name());
    println!(
        "  Envoy      http://{}  (admin http://{})  filter: steer mode, reports every 1 s",
        envoy.listener_addr(),
        envoy.admin_addr()
    );
    println!(
        "  control    http://{control_addr}  canary `checkout`, enforce mode, steps {:?} % × {} s",
        s.steps, s.step_s
    );
    println!(
        "  dashboard  http://{control_addr}/dashboard/  (open it in a browser during the run)"
    );
    println!("  upstreams  stable http://{stable_addr}  canary http://{canary_addr}  (log-normal latency, median 60 ms; every 4th response streamed)");
    match s.kind.fault() {
        Some((m, e)) => println!("  load       {} rps open loop ({}); at +{:.0} s the canary degrades: latency ×{m}, {:.0}% 503, time to first token ×{}", s.rps, s.kind.path(), s.fault_at.as_secs_f64(), e * 100.0, s.kind.ttft_mult()),
        None => println!("  load       {} rps open loop; no fault", s.rps),
    }
    println!();

    // 4. load + watch
    let client = HttpClient::new();
    let max = match s.kind {
        Kind::Latency | Kind::Errors | Kind::Streaming => s.fault_at + Duration::from_secs(40),
        Kind::Healthy => Duration::from_secs(s.step_s * s.steps.len() as u64 + 25),
        Kind::LowTraffic => Duration::from_secs(s.step_s * 3 + 5),
    } + s.linger.saturating_sub(Duration::from_secs(4));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut load = OpenLoop::new(s.rps, max + Duration::from_secs(5));
    load.path = s.kind.path().to_string();
    let target = envoy.listener_addr();
    let t0 = Instant::now() + Duration::from_millis(200);
    let load_task = tokio::spawn(async move { load.run(target, t0, Some(tx)).await });

    let mut log = Log::default();
    let mut fault_done: Option<Duration> = None;
    let mut detected: Option<Duration> = None;
    let mut steered: Option<Duration> = None;
    let mut decided: Option<(Duration, String)> = None;
    let mut weight_at_fault: u64 = 0;
    let mut last_view = ControlView::default();
    let mut last_weight: Option<u64> = None;
    let mut last_canary_sched: Option<Duration> = None;
    let mut end_at: Option<Duration> = None;
    let mut next_line = Duration::from_secs(1);
    let mut second = (0usize, 0usize, 0usize, 0usize, Vec::<f64>::new()); // total, canary, failed, slow, latencies
    let mut hold_seen = false;
    println!("   time  weight  req/s  →canary  failed  slow  p99     vigil(canary)  control");
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = t0.elapsed();
        while let Ok(o) = rx.try_recv() {
            second.0 += 1;
            if o.served_by_is("canary") {
                second.1 += 1;
                if fault_done.is_some_and(|f| o.scheduled >= f) {
                    last_canary_sched =
                        Some(last_canary_sched.map_or(o.scheduled, |l| l.max(o.scheduled)));
                }
            }
            if Log::bad(&o) {
                second.2 += 1;
            }
            if Log::slow(&o) {
                second.3 += 1;
            }
            if let Some(l) = o.latency {
                second.4.push(l.as_secs_f64() * 1000.0);
            }
            log.outcomes.push(o);
        }
        // fault
        if fault_done.is_none() && now >= s.fault_at {
            if let Some((m, e)) = s.kind.fault() {
                let r = vigil_e2e::http::raw_request(
                    canary_addr,
                    format!("POST /admin/fault?latency_mult={m}&error_ratio={e}&ttft_mult={} HTTP/1.1\r\nhost: canary\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", s.kind.ttft_mult()).as_bytes(),
                    Duration::from_secs(2),
                ).await?;
                if r.0 != 200 {
                    return Err(format!("canary refused the fault switch: {}", r.0).into());
                }
                fault_done = Some(now);
                weight_at_fault = last_view.weight;
                println!("  ▶ {:5.1}s FAULT: canary latency ×{m}, {:.0}% 503, TTFT ×{} (canary at {}%)      [fault ✔] → [detected …] → [steered …] → [decision …]", now.as_secs_f64(), e * 100.0, s.kind.ttft_mult(), weight_at_fault);
            }
        }
        // filter verdict
        let state = envoy.metrics().await.ok().and_then(|m| canary_state(&m));
        if let (Some(f), None) = (fault_done, detected) {
            if state == Some(3.0) {
                detected = Some(now.saturating_sub(f));
                println!(
                    "  ▶ {:5.1}s DETECTED: the filter marks the canary CRITICAL        {}",
                    now.as_secs_f64(),
                    progress(detected, steered, decided.as_ref().map(|d| d.0))
                );
            }
        }
        if let (Some(f), Some(_), None) = (fault_done, detected, steered) {
            // Steered once no request sent in the last second went to the canary.
            let quiet_since = last_canary_sched.unwrap_or(f);
            if now.saturating_sub(quiet_since) > Duration::from_secs(1) {
                steered = Some(quiet_since.saturating_sub(f));
                println!(
                    "  ▶ {:5.1}s STEERED: no request sent to the canary since +{:.1}s    {}",
                    now.as_secs_f64(),
                    quiet_since.as_secs_f64(),
                    progress(detected, steered, decided.as_ref().map(|d| d.0))
                );
            }
        }
        // control
        if let Some(v) = control_view(&client, control_addr).await {
            if last_weight != Some(v.weight) {
                if let Some(w) = last_weight {
                    println!(
                        "  ▶ {:5.1}s CONTROL: canary weight {w}% → {}% ({})",
                        now.as_secs_f64(),
                        v.weight,
                        v.phase
                    );
                } else {
                    println!(
                        "  ▶ {:5.1}s CONTROL: rollout {} at {}% (step {}/{})",
                        now.as_secs_f64(),
                        v.phase,
                        v.weight,
                        v.step,
                        v.steps
                    );
                }
                last_weight = Some(v.weight);
            }
            if v.holding && !hold_seen {
                hold_seen = true;
                println!("  ▶ {:5.1}s CONTROL: step held for evidence (too few requests to judge; never promotes on too little)", now.as_secs_f64());
            }
            if decided.is_none() {
                let d = match v.phase.as_str() {
                    "rolled_back" => Some("rollback"),
                    "promoted" => Some("promote"),
                    _ => None,
                };
                if let Some(d) = d {
                    let at = fault_done.map_or(now, |f| now.saturating_sub(f));
                    decided = Some((at, d.to_string()));
                    let kind = if d == "rollback" {
                        "rollback"
                    } else {
                        "promote"
                    };
                    let why = v
                        .decisions
                        .iter()
                        .find(|x| x.get("kind").and_then(Value::as_str) == Some(kind))
                        .and_then(|x| x.get("explanation"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    println!("  ▶ {:5.1}s DECISION: {d} — {why}", now.as_secs_f64());
                    if fault_done.is_some() {
                        println!(
                            "                                                                  {}",
                            progress(detected, steered, Some(at))
                        );
                    }
                    end_at = Some(now + s.linger);
                }
            }
            last_view = v;
        }
        if now >= next_line {
            second.4.sort_by(f64::total_cmp);
            let p99 = second
                .4
                .get(((second.4.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
                .copied();
            println!(
                "  {:4.0}s  {:>4}%  {:>5}  {:>7}  {:>6}  {:>4}  {:>6}  {:<13}  {} {}",
                next_line.as_secs_f64(),
                last_view.weight,
                second.0,
                second.1,
                second.2,
                second.3,
                p99.map(|p| format!("{p:.0}ms"))
                    .unwrap_or_else(|| "-".into()),
                state_name(state),
                last_view.phase,
                if last_view.steps > 0 {
                    format!("step {}/{}", last_view.step, last_view.steps)
                } else {
                    String::new()
                },
            );
            second = (0, 0, 0, 0, Vec::new());
            next_line += Duration::from_secs(1);
        }
        if s.kind == Kind::LowTraffic
            && hold_seen
            && now >= Duration::from_secs(s.step_s * 2 + 2)
            && end_at.is_none()
        {
            end_at = Some(now);
        }
        if end_at.is_some_and(|e| now >= e) || now >= max {
            break;
        }
    }
    load_task.abort();
    let duration = t0.elapsed();
    while let Ok(o) = rx.try_recv() {
        log.outcomes.push(o);
    }
    log.outcomes.sort_by_key(|o| o.index);
    let gitops = data.join("gitops").join("checkout");
    let final_view = control_view(&client, control_addr)
        .await
        .unwrap_or(last_view);
    drop(envoy);
    control.stop();
    drop(upstreams);

    // 5. audit log: verify the chain, export it
    let verify = Command::new(&control_bin)
        .args(["audit", "verify", "--data"])
        .arg(&data)
        .output();
    let audit_ok = verify.as_ref().is_ok_and(|o| o.status.success());
    let audit_path = s.out.join("audit.jsonl");
    let audit_rows = export_audit(&data.join("vigil.db"), &audit_path).unwrap_or(0);

    // 6. numbers
    let decision = match &decided {
        Some((_, d)) => d.clone(),
        None if final_view.holding || hold_seen => "hold".into(),
        None => "none".into(),
    };
    let fault = fault_done;
    let after = |o: &&Outcome| fault.is_some_and(|f| o.scheduled >= f);
    let failed_vigil = log
        .outcomes
        .iter()
        .filter(after)
        .filter(|o| Log::bad(o))
        .count();
    let slow_vigil = log
        .outcomes
        .iter()
        .filter(after)
        .filter(|o| Log::slow(o))
        .count();
    let steer_end = fault.map(|f| f + steered.unwrap_or(Duration::from_secs(3600)));
    let sample: Vec<baseline::Sample> = log
        .outcomes
        .iter()
        .filter(after)
        .filter(|o| o.served_by_is("canary") && steer_end.is_some_and(|e| o.scheduled <= e))
        .map(|o| baseline::Sample {
            latency_ms: o.latency.map(|l| l.as_secs_f64() * 1000.0),
            ok: o.is_success(),
        })
        .collect();
    let rule = Rule::default();
    let est = baseline::estimate(rule, &sample, s.rps * weight_at_fault as f64 / 100.0);
    let write_csv = write_requests(&s.out.join("requests.csv"), &log.outcomes);
    let incident_s = fault
        .map(|f| duration.saturating_sub(f).as_secs_f64())
        .unwrap_or(0.0);

    let report = json!({
        "scenario": s.kind.name(),
        "expected_decision": s.kind.expected_decision(),
        "decision": decision,
        "final_phase": final_view.phase,
        "final_canary_weight": final_view.weight,
        "time_to_detect_s": secs(detected),
        "time_to_steer_s": secs(steered),
        "time_to_decision_s": if fault.is_some() { secs(decided.as_ref().map(|d| d.0)) } else { Value::Null },
        "time_to_decision_from_start_s": if fault.is_none() { secs(decided.as_ref().map(|d| d.0)) } else { Value::Null },
        "fault": s.kind.fault().map(|(m, e)| json!({"latency_mult": m, "error_ratio": e, "at_s": secs(fault), "canary_weight": weight_at_fault})),
        "failed_requests_vigil": failed_vigil,
        "slow_requests_vigil": slow_vigil,
        "incident_window_s": (incident_s * 10.0).round() / 10.0,
        "failed_requests_baseline_1m_rule": est.failed,
        "slow_requests_baseline_1m_rule": est.slow,
        "baseline_1m_rule": {
            "interval_s": rule.interval_s, "threshold": rule.threshold,
            "min_success_rate": rule.min_success, "max_p99_ms": rule.max_p99_ms,
            "exposure_s": est.exposure_s, "canary_rps": s.rps * weight_at_fault as f64 / 100.0,
            "sample_requests": sample.len(), "sample_success_rate": est.success_rate, "sample_p99_ms": est.p99_ms,
            "rule_would_fail": est.rule_fails,
        },
        "requests_total": log.outcomes.len(),
        "requests_failed_total": log.outcomes.iter().filter(|o| Log::bad(o)).count(),
        "rps": s.rps,
        "steps": s.steps,
        "step_duration_s": s.step_s,
        "duration_s": (duration.as_secs_f64() * 10.0).round() / 10.0,
        "decisions": final_view.decisions.iter().rev().map(|d| json!({"kind": d.get("kind"), "weight_after": d.get("weight_after"), "explanation": d.get("explanation")})).collect::<Vec<_>>(),
        "gitops_dir": gitops.display().to_string(),
        "gitops_files": std::fs::read_dir(&gitops).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().display().to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "audit_log": audit_path.display().to_string(),
        "audit_rows": audit_rows,
        "audit_chain_verified": audit_ok,
        "audit_db": data.join("vigil.db").display().to_string(),
        "request_log": s.out.join("requests.csv").display().to_string(),
        "request_log_written": write_csv.is_ok(),
    });
    std::fs::create_dir_all(&s.out)?;
    std::fs::write(
        s.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    print_summary(s, &report, detected, steered, decided.as_ref().map(|d| d.0));
    Ok(report)
}

fn write_requests(path: &std::path::Path, outcomes: &[Outcome]) -> Result<()> {
    let mut text = String::from("index,scheduled_s,latency_ms,status,served_by,error\n");
    for o in outcomes {
        text.push_str(&format!(
            "{},{:.3},{},{},{},{}\n",
            o.index,
            o.scheduled.as_secs_f64(),
            o.latency
                .map(|l| format!("{:.1}", l.as_secs_f64() * 1000.0))
                .unwrap_or_default(),
            o.status.map(|s| s.to_string()).unwrap_or_default(),
            o.served_by.as_deref().unwrap_or(""),
            o.error.as_deref().unwrap_or("").replace([',', '\n'], " "),
        ));
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn export_audit(db: &std::path::Path, out: &std::path::Path) -> Result<usize> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT seq, ts_ms, actor, action, canary, detail, hash FROM audit ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(json!({
            "seq": r.get::<_, i64>(0)?, "ts_ms": r.get::<_, i64>(1)?, "actor": r.get::<_, String>(2)?,
            "action": r.get::<_, String>(3)?, "canary": r.get::<_, Option<String>>(4)?,
            "detail": r.get::<_, Option<String>>(5)?, "hash": r.get::<_, String>(6)?,
        }))
    })?;
    let mut text = String::new();
    let mut n = 0;
    for row in rows {
        text.push_str(&row?.to_string());
        text.push('\n');
        n += 1;
    }
    std::fs::write(out, text)?;
    Ok(n)
}

fn print_summary(
    s: &Settings,
    r: &Value,
    detected: Option<Duration>,
    steered: Option<Duration>,
    decided: Option<Duration>,
) {
    let g = |k: &str| r.get(k).map(|v| v.to_string()).unwrap_or_default();
    println!();
    println!(
        "Summary — scenario `{}` ({} requests, {} rps)",
        s.kind.name(),
        g("requests_total"),
        s.rps
    );
    println!("  ┌────────────────────────────────────────────┬──────────────────┐");
    let row = |k: &str, v: String| println!("  │ {k:<42} │ {v:>16} │");
    if s.kind.fault().is_some() {
        row("time to detect (fault → filter critical)", fmt_s(detected));
        row("time to steer (fault → no canary traffic)", fmt_s(steered));
        row("time to decision (fault → control decides)", fmt_s(decided));
    } else {
        row("time to decision (from start)", fmt_s(decided));
    }
    row(
        "decision",
        r.get("decision")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    );
    row(
        "failed requests during the incident, Vigil",
        g("failed_requests_vigil"),
    );
    row("slow (>500 ms) requests, Vigil", g("slow_requests_vigil"));
    if s.kind.fault().is_some() {
        row(
            "failed, Flagger-style 1-min rule (same wt)",
            g("failed_requests_baseline_1m_rule"),
        );
        row(
            "slow (>500 ms), Flagger-style 1-min rule",
            g("slow_requests_baseline_1m_rule"),
        );
    }
    println!("  └────────────────────────────────────────────┴──────────────────┘");
    if s.kind.fault().is_some() {
        let b = &r.get("baseline_1m_rule").unwrap_or(&Value::Null);
        println!(
            "  1-min rule: checks every 60 s (success ≥ 99 %, p99 ≤ 500 ms), rolls back after 5 failed checks ⇒ the canary keeps {}% for ~{} s;",
            r.pointer("/fault/canary_weight").cloned().unwrap_or_default(), b.get("exposure_s").unwrap_or(&Value::Null)
        );
        println!(
            "  rates from this run's request log: degraded canary sample n={}, success {:.1}%, p99 {:.0} ms.",
            b.get("sample_requests").unwrap_or(&Value::Null), b.get("sample_success_rate").unwrap_or(&Value::Null).as_f64().unwrap_or(0.0) * 100.0, b.get("sample_p99_ms").unwrap_or(&Value::Null).as_f64().unwrap_or(0.0)
        );
    }
    println!("  GitOps YAML:  {}", g("gitops_dir").trim_matches('"'));
    println!(
        "  audit log:    {} ({} rows, hash chain {})",
        g("audit_log").trim_matches('"'),
        g("audit_rows"),
        if r.get("audit_chain_verified")
            .unwrap_or(&Value::Null)
            .as_bool()
            == Some(true)
        {
            "verified"
        } else {
            "NOT verified"
        }
    );
    println!("  request log:  {}", g("request_log").trim_matches('"'));
    println!("  report:       {}", s.out.join("report.json").display());
}
