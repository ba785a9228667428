//! Prometheus mode, with real parts: a real Envoy running the filter (shadow mode, no
//! reports to the control service), real upstreams, a real Prometheus (Debian's
//! package, installed by `scripts/setup.sh prometheus` when missing) scraping Envoy's
//! admin `/stats/prometheus` every second, and `vigil-control serve --prometheus URL`.
//!
//! - a canary failing 30 % of its requests is rolled back on evidence read from
//!   Prometheus (the decision says `data_source: prometheus`);
//! - a healthy canary under the same setup is not rolled back.
//!
//! Skips (printing why) only when the `prometheus` binary is missing and cannot be
//! installed.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_e2e::control::ControlService;
use vigil_e2e::envoy::{unused_port, Envoy, EnvoyOptions};
use vigil_e2e::http::HttpClient;
use vigil_e2e::load::OpenLoop;
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::upstream::Upstream;
use vigil_e2e::{repo_root, ScratchDir};

const TICK_MS: u64 = 1000;

fn prometheus_binary() -> Option<String> {
    let found = || {
        Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found() {
        return Some("prometheus".into());
    }
    let setup = repo_root().join("scripts").join("setup.sh");
    println!(
        "prometheus not found: running {} prometheus",
        setup.display()
    );
    let _ = Command::new("bash").arg(&setup).arg("prometheus").status();
    found().then(|| "prometheus".into())
}

/// A real Prometheus scraping one Envoy admin address every second.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: ScratchDir,
}

impl Prometheus {
    async fn start(bin: &str, name: &str, envoy_admin: SocketAddr) -> Prometheus {
        let dir = ScratchDir::new(&format!("prometheus-{name}")).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: envoy\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    metrics_path: /stats/prometheus\n    static_configs:\n      - targets: ['{envoy_admin}']\n"
        );
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let (guard, port) = unused_port().unwrap();
        drop(guard);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus { child, addr, dir };
        let client = HttpClient::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = client
                .get(addr, "/-/ready", &[], Duration::from_secs(1))
                .await
            {
                if r.status == 200 {
                    return p;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 15 s:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> String {
        vigil_e2e::envoy::tail(
            &std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default(),
            20,
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    _stable: Upstream,
    canary: Upstream,
    envoy: Envoy,
    prometheus: Prometheus,
    control: ControlService,
}

async fn setup(bin: &str, name: &str, mode: &str) -> Setup {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    // Shadow mode, no `control` block: the filter neither steers nor reports, so
    // everything the service knows comes from Prometheus.
    let envoy = Envoy::start(
        EnvoyOptions::new(name, plugin_config("shadow", &json!({})))
            .upstreams(stable.port(), canary.port()),
    )
    .await
    .unwrap();
    let prometheus = Prometheus::start(bin, name, envoy.admin_addr()).await;
    let yaml = format!(
        "canaries:\n  - name: checkout\n    route: checkout\n    stable_cluster: stable\n    canary_cluster: canary\n    steps: [20, 50]\n    step_duration_s: 60\n    slo: {{max_error_ratio: 0.05}}\n    mode: {mode}\n"
    );
    let url = prometheus.url();
    let control = ControlService::start_with_args(name, &yaml, TICK_MS, &["--prometheus", &url])
        .await
        .unwrap();
    Setup {
        _stable: stable,
        canary,
        envoy,
        prometheus,
        control,
    }
}

fn context(s: &Setup, c: &Value) -> String {
    format!(
        "canary: {c:#}\ncontrol log:\n{}\nprometheus log:\n{}",
        vigil_e2e::envoy::tail(&s.control.logs(), 30),
        s.prometheus.log()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back_on_prometheus_evidence() {
    let Some(bin) = prometheus_binary() else {
        panic!("the prometheus binary is missing and `scripts/setup.sh prometheus` could not install it");
    };
    let s = setup(&bin, "prom-fail", "observe").await;
    s.canary.set_error_ratio(0.3);
    let addr = s.envoy.listener_addr();
    let t0 = Instant::now();
    let load = tokio::spawn(async move {
        OpenLoop::new(100.0, Duration::from_secs(25))
            .run(addr, Instant::now(), None)
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(28);
    let c = loop {
        let c = s.control.canary("checkout").await.unwrap();
        if c["phase"] == "rolled_back" {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no rollback within 28 s\n{}",
            context(&s, &c)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = t0.elapsed();
    load.abort();
    let decisions = c["decisions"].as_array().cloned().unwrap_or_default();
    let rollback = decisions
        .iter()
        .find(|d| d.to_string().contains("rollback"))
        .unwrap_or_else(|| panic!("no rollback decision\n{}", context(&s, &c)));
    println!(
        "rolled back after {took:?} on Prometheus evidence: {}",
        rollback["explanation"]
    );
    let text = rollback.to_string();
    assert!(
        text.contains("\"data_source\":\"prometheus\""),
        "rollback not sourced from Prometheus: {rollback:#}"
    );
    assert!(
        text.contains("[data source: prometheus]"),
        "explanation does not name Prometheus: {rollback:#}"
    );
    assert!(
        s.control.logs().contains("prometheus polling"),
        "no poll logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_not_rolled_back_on_prometheus_evidence() {
    let Some(bin) = prometheus_binary() else {
        panic!("the prometheus binary is missing and `scripts/setup.sh prometheus` could not install it");
    };
    let s = setup(&bin, "prom-healthy", "enforce").await;
    let addr = s.envoy.listener_addr();
    let load = tokio::spawn(async move {
        OpenLoop::new(100.0, Duration::from_secs(20))
            .run(addr, Instant::now(), None)
            .await
    });
    let end = Instant::now() + Duration::from_secs(18);
    let mut c;
    loop {
        c = s.control.canary("checkout").await.unwrap();
        assert_ne!(
            c["phase"],
            "rolled_back",
            "healthy canary rolled back\n{}",
            context(&s, &c)
        );
        if Instant::now() > end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    load.abort();
    // The evidence did arrive (this is not a pass by silence).
    let requests = c["evidence"]["canary"]["requests"].as_u64().unwrap_or(0);
    let stable = c["evidence"]["stable"]["requests"].as_u64().unwrap_or(0);
    println!(
        "healthy: phase {} after 18 s, step evidence canary {requests} / stable {stable} requests, live verdict {}",
        c["phase"], c["live_verdict"]
    );
    assert!(
        requests >= 100 && stable >= 400,
        "too little evidence from Prometheus\n{}",
        context(&s, &c)
    );
    assert_eq!(c["evidence"]["canary"]["errors"], 0, "{}", context(&s, &c));
}
