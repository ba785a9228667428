//! The canary-fault scenario used by the steering/shadow/healthy tests and `vigil-demo`.
//!
//! Starts a "stable" and a "canary" upstream and Envoy with the filter, drives an
//! open-loop load, injects a fault on the canary at a fixed time, samples Vigil's gauges
//! once a second (printing a timeline line each time) and returns a [`Report`] holding
//! every request's outcome, the samples and the final metrics. Everything it starts is
//! stopped before it returns (or when its future is dropped).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::envoy::{Envoy, EnvoyOptions};
use crate::load::{scheduled_between, OpenLoop, Outcome, Tally};
use crate::prom::Metrics;
use crate::upstream::Upstream;
use crate::Result;

/// The route all managed traffic takes.
pub const ROUTE: &str = "checkout";

/// The fault injected on the canary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// No fault: both upstreams stay identical.
    None,
    /// Extra latency on every canary response.
    Latency(Duration),
    /// This fraction of canary responses are 503 (evenly spaced).
    Errors(f64),
    /// This fraction of canary responses are 429 (evenly spaced).
    Throttle(f64),
    /// This fraction of canary responses (evenly spaced) are this much slower.
    SlowShare(f64, Duration),
}

impl Fault {
    fn describe(&self) -> String {
        match self {
            Fault::None => "none".to_string(),
            Fault::Latency(d) => format!("canary +{} ms latency", d.as_millis()),
            Fault::Errors(r) => format!("canary {:.0}% 503", r * 100.0),
            Fault::Throttle(r) => format!("canary {:.0}% 429", r * 100.0),
            Fault::SlowShare(r, d) => {
                format!("canary {:.0}% of requests +{} ms", r * 100.0, d.as_millis())
            }
        }
    }
}

/// The plugin configuration for the `checkout` canary (stable/canary clusters) in `mode`,
/// with the top-level fields of `extra` added (or replaced).
pub fn plugin_config(mode: &str, extra: &Value) -> String {
    let mut cfg = json!({
        "mode": mode,
        "canaries": [{
            "name": "checkout",
            "route": ROUTE,
            "stable_cluster": "stable",
            "canary_cluster": "canary"
        }]
    });
    if let (Some(cfg), Some(extra)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            cfg.insert(k.clone(), v.clone());
        }
    }
    cfg.to_string()
}

/// Scenario settings.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (scratch directory, messages).
    pub name: String,
    /// Plugin mode: "steer" or "shadow".
    pub mode: String,
    /// Open-loop request rate.
    pub rps: f64,
    /// Healthy phase before the fault.
    pub healthy: Duration,
    /// Phase after the fault.
    pub after_fault: Duration,
    /// The fault.
    pub fault: Fault,
    /// Extra top-level fields merged into the plugin configuration.
    pub extra_config: Value,
    /// Print a timeline line per second.
    pub print: bool,
    /// The canary's route weight in percent (the bootstrap's 20 unless set).
    pub canary_weight: Option<u32>,
    /// A second client abandoning this many requests a second (reset
    /// `reset_after` in), over the whole run ([`crate::resets`]).
    pub reset_rps: f64,
    /// How long after sending an abandoned request the client resets it.
    pub reset_after: Duration,
}

impl Scenario {
    /// 100 rps, 15 s healthy, 15 s after the fault, printing the timeline.
    pub fn new(name: &str, mode: &str, fault: Fault) -> Self {
        Self {
            name: name.to_string(),
            mode: mode.to_string(),
            rps: 100.0,
            healthy: Duration::from_secs(15),
            after_fault: Duration::from_secs(15),
            fault,
            extra_config: json!({}),
            print: true,
            canary_weight: None,
            reset_rps: 0.0,
            reset_after: Duration::from_millis(3),
        }
    }

    /// The plugin configuration this scenario runs with.
    pub fn plugin_config(&self) -> String {
        plugin_config(&self.mode, &self.extra_config)
    }

    /// Runs the scenario. Bounded: load duration + 30 s at most.
    pub async fn run(&self) -> Result<Report> {
        let stable = Upstream::start("stable").await?;
        let canary = Upstream::start("canary").await?;
        let mut options = EnvoyOptions::new(&self.name, self.plugin_config())
            .upstreams(stable.port(), canary.port());
        if let Some(w) = self.canary_weight {
            options = options.transform(move |b| set_canary_weight(b, w));
        }
        let envoy = Envoy::start(options).await?;
        let addr = envoy.listener_addr();
        let duration = self.healthy + self.after_fault;
        if self.print {
            println!(
                "[{}] mode={} rps={} healthy={}s then fault ({}) for {}s; envoy listener {addr}, admin {}",
                self.name,
                self.mode,
                self.rps,
                self.healthy.as_secs(),
                self.fault.describe(),
                self.after_fault.as_secs(),
                envoy.admin_addr()
            );
        }

        let t0 = Instant::now() + Duration::from_millis(300);
        let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
        let load = OpenLoop::new(self.rps, duration);
        let load_task = AbortOnDrop(Some(tokio::spawn(async move {
            load.run(addr, t0, Some(tx)).await
        })));
        let (reset_rps, reset_after) = (self.reset_rps, self.reset_after);
        let resets = AbortOnDrop(Some(tokio::spawn(async move {
            if reset_rps > 0.0 {
                tokio::time::sleep_until(t0.into()).await;
                crate::resets::reset_requests(addr, reset_rps, duration, reset_after).await
            } else {
                0
            }
        })));

        let mut samples = Vec::new();
        let mut fault_at: Option<Duration> = None;
        let mut events = Events::default();
        let mut ticker =
            tokio::time::interval_at((t0 + Duration::from_secs(1)).into(), Duration::from_secs(1));
        let hard_deadline = t0 + duration + Duration::from_secs(30);
        while !load_task.is_finished() {
            if Instant::now() > hard_deadline {
                return Err(format!("[{}] load did not finish by its deadline", self.name).into());
            }
            ticker.tick().await;
            let now = t0.elapsed();
            if fault_at.is_none()
                && self.fault != Fault::None
                && now + Duration::from_millis(5) >= self.healthy
            {
                match self.fault {
                    Fault::Latency(d) => canary.set_extra_latency(d),
                    Fault::Errors(r) => canary.set_error_ratio(r),
                    Fault::Throttle(r) => {
                        canary.set_error_status(429);
                        canary.set_error_ratio(r);
                    }
                    Fault::SlowShare(r, d) => canary.set_slow_share(r, d),
                    Fault::None => {}
                }
                fault_at = Some(t0.elapsed());
                if self.print {
                    println!(
                        "[{}] t={:>5.1}s  >>> FAULT injected: {}",
                        self.name,
                        now.as_secs_f64(),
                        self.fault.describe()
                    );
                }
            }
            let mut done = Vec::new();
            while let Ok(o) = rx.try_recv() {
                done.push(o);
            }
            let metrics = envoy.metrics().await.unwrap_or_default();
            let sample = Sample::read(now, &metrics, &done);
            if self.print {
                println!("[{}] {}", self.name, sample.line(fault_at));
                events.print_new(&self.name, &sample, fault_at);
            }
            samples.push(sample);
        }
        let outcomes = match tokio::time::timeout(Duration::from_secs(30), load_task.join()).await {
            Ok(r) => r??,
            Err(_) => return Err("load task did not finish".into()),
        };
        let resets_sent = match tokio::time::timeout(Duration::from_secs(10), resets.join()).await {
            Ok(r) => r?,
            Err(_) => return Err("reset client did not finish".into()),
        };
        // Counters are flushed once per tick (1 s): let two ticks pass.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let final_metrics = envoy.metrics().await?;
        let wasm_failures = envoy.wasm_failures().await?;
        let report = Report {
            name: self.name.clone(),
            mode: self.mode.clone(),
            fault: self.fault,
            outcomes,
            fault_at,
            samples,
            final_metrics,
            wasm_failures,
            upstream_seen_subset: stable.seen_subset() + canary.seen_subset(),
            resets_sent,
            envoy_log: envoy.log(),
        };
        if self.print {
            report.print_summary();
        }
        Ok(report)
    }
}

/// Sets the weighted default route's split to `canary` % canary, the rest stable.
pub fn set_canary_weight(bootstrap: &mut Value, canary: u32) -> Result<()> {
    let routes = crate::envoy::routes_mut(bootstrap)?;
    let clusters = routes
        .iter_mut()
        .find_map(|r| r.pointer_mut("/route/weighted_clusters/clusters"))
        .and_then(Value::as_array_mut)
        .ok_or("the bootstrap has no weighted route")?;
    for c in clusters {
        let w = if c.get("name").and_then(Value::as_str) == Some("canary") {
            canary
        } else {
            100u32.saturating_sub(canary)
        };
        if let Some(slot) = c.get_mut("weight") {
            *slot = Value::from(w);
        }
    }
    Ok(())
}

/// Aborts a spawned task when dropped (the scenario failed or was cancelled).
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(|h| h.is_finished())
    }

    async fn join(mut self) -> Result<T> {
        let handle = self.0.take().ok_or("task already joined")?;
        Ok(handle.await?)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Vigil's view of one cluster at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClusterView {
    /// `vigil_state` (0 insufficient, 1 ok, 2 warn, 3 critical).
    pub state: Option<f64>,
    /// `vigil_anomaly_score` (0–1000).
    pub score: Option<f64>,
    /// `vigil_latency_p99_ms`.
    pub p99_ms: Option<f64>,
    /// `vigil_requests_total`.
    pub requests: Option<f64>,
}

impl ClusterView {
    fn read(m: &Metrics, cluster: &str) -> Self {
        let labels = [("route", ROUTE), ("cluster", cluster)];
        Self {
            state: m.value("vigil_state", &labels),
            score: m.value("vigil_anomaly_score", &labels),
            p99_ms: m.value("vigil_latency_p99_ms", &labels),
            requests: m.value("vigil_requests_total", &labels),
        }
    }
}

/// Human name of a `vigil_state` value.
pub fn state_name(state: Option<f64>) -> &'static str {
    match state.map(|s| s.round() as i64) {
        None => "-",
        Some(0) => "insufficient",
        Some(1) => "ok",
        Some(2) => "warn",
        Some(3) => "CRITICAL",
        Some(_) => "?",
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
}

/// One sample, taken once a second.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Time since t0.
    pub at: Duration,
    /// Canary series.
    pub canary: ClusterView,
    /// Stable series.
    pub stable: ClusterView,
    /// `vigil_steered_total` summed over all labels.
    pub steered_total: Option<f64>,
    /// Responses completed during the last second.
    pub tally: Tally,
    /// Client-side p99 latency (ms) of those served by canary / stable.
    pub client_p99_ms: (Option<f64>, Option<f64>),
}

impl Sample {
    fn read(at: Duration, m: &Metrics, done: &[Outcome]) -> Self {
        Self {
            at,
            canary: ClusterView::read(m, "canary"),
            stable: ClusterView::read(m, "stable"),
            steered_total: m.sum("vigil_steered_total", &[]),
            tally: Tally::of(done),
            client_p99_ms: (p99_ms(done, "canary"), p99_ms(done, "stable")),
        }
    }

    fn line(&self, fault_at: Option<Duration>) -> String {
        let rel = match fault_at {
            Some(f) => format!(" (fault{:+5.1}s)", self.at.as_secs_f64() - f.as_secs_f64()),
            None => String::new(),
        };
        format!(
            "t={:>5.1}s{rel} | stable {:>3} canary {:>3} steered {:>3} err {:>3} | canary {:<12} score {:>4} p99 {:>4}ms (client {:>4}) | stable {:<12} score {:>4} p99 {:>4}ms | steered_total {}",
            self.at.as_secs_f64(),
            self.tally.stable,
            self.tally.canary,
            self.tally.steered,
            self.tally.failed,
            state_name(self.canary.state),
            opt(self.canary.score),
            opt(self.canary.p99_ms),
            opt(self.client_p99_ms.0),
            state_name(self.stable.state),
            opt(self.stable.score),
            opt(self.stable.p99_ms),
            opt(self.steered_total),
        )
    }
}

/// p99 of the latencies of the outcomes served by `upstream`, in ms.
fn p99_ms(done: &[Outcome], upstream: &str) -> Option<f64> {
    let mut l: Vec<Duration> = done
        .iter()
        .filter(|o| o.served_by_is(upstream))
        .filter_map(|o| o.latency)
        .collect();
    l.sort();
    let rank = (l.len() as f64 * 0.99).ceil() as usize;
    l.get(rank.saturating_sub(1)).map(|d| crate::ms(*d))
}

#[derive(Debug, Default)]
struct Events {
    critical: bool,
    steered: bool,
}

impl Events {
    fn print_new(&mut self, name: &str, s: &Sample, fault_at: Option<Duration>) {
        let rel = |at: Duration| match fault_at {
            Some(f) => format!("fault{:+.1}s", at.as_secs_f64() - f.as_secs_f64()),
            None => format!("t={:.1}s", at.as_secs_f64()),
        };
        if !self.critical && s.canary.state.is_some_and(|v| v >= 3.0) {
            self.critical = true;
            println!(
                "[{name}] >>> DETECTED: canary state CRITICAL at {}",
                rel(s.at)
            );
        }
        if !self.steered && s.tally.steered > 0 {
            self.steered = true;
            println!("[{name}] >>> STEERING: requests carry x-vigil-subset: stable ({} in the last second) at {}", s.tally.steered, rel(s.at));
        }
    }
}

/// Everything a scenario run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Plugin mode.
    pub mode: String,
    /// The fault.
    pub fault: Fault,
    /// Every request, sorted by index.
    pub outcomes: Vec<Outcome>,
    /// When the fault was injected (since t0).
    pub fault_at: Option<Duration>,
    /// Once-a-second samples.
    pub samples: Vec<Sample>,
    /// Metrics after the load ended and counters were flushed.
    pub final_metrics: Metrics,
    /// Signs of wasm VM failure ([`Envoy::wasm_failures`]).
    pub wasm_failures: Vec<String>,
    /// Requests that reached an upstream carrying `x-vigil-subset`.
    pub upstream_seen_subset: u64,
    /// Abandoned (reset) requests sent by the second client.
    pub resets_sent: u64,
    /// Envoy's log at the end of the run.
    pub envoy_log: String,
}

impl Report {
    fn fault(&self) -> Duration {
        self.fault_at.unwrap_or(Duration::ZERO)
    }

    /// Tally of requests scheduled in `[fault+from, fault+to)`.
    pub fn after_fault(&self, from: Duration, to: Duration) -> Tally {
        let f = self.fault();
        Tally::of(scheduled_between(&self.outcomes, f + from, f + to))
    }

    /// Tally of requests scheduled before the fault (all of them without a fault).
    pub fn before_fault(&self) -> Tally {
        match self.fault_at {
            Some(f) => Tally::of(scheduled_between(&self.outcomes, Duration::ZERO, f)),
            None => Tally::of(&self.outcomes),
        }
    }

    /// First sample time (relative to the fault) at which the canary's state was ≥ `state`.
    pub fn canary_state_reached(&self, state: f64) -> Option<Duration> {
        let f = self.fault();
        self.samples
            .iter()
            .find(|s| s.at >= f && s.canary.state.is_some_and(|v| v >= state))
            .map(|s| s.at - f)
    }

    /// Highest canary state seen in any sample.
    pub fn max_canary_state(&self) -> Option<f64> {
        self.samples
            .iter()
            .filter_map(|s| s.canary.state)
            .reduce(f64::max)
    }

    /// Scheduled time (relative to the fault) of the first request after the fault that
    /// reached its upstream with `x-vigil-subset: stable`.
    pub fn first_steered_after_fault(&self) -> Option<Duration> {
        let f = self.fault();
        self.outcomes
            .iter()
            .find(|o| o.scheduled >= f && o.seen_subset_is("stable"))
            .map(|o| o.scheduled - f)
    }

    /// Start (relative to the fault) of the first 1-second window after the fault in
    /// which at least 99% of requests were served by stable, scanning in 100 ms steps.
    pub fn time_to_99_stable(&self) -> Option<Duration> {
        let end = self.outcomes.last()?.scheduled;
        let f = self.fault();
        let step = Duration::from_millis(100);
        let mut from = Duration::ZERO;
        while f + from + Duration::from_secs(1) <= end {
            let t = self.after_fault(from, from + Duration::from_secs(1));
            if t.total > 0 && t.stable_share() >= 0.99 {
                return Some(from);
            }
            from += step;
        }
        None
    }

    /// Requests that got no response at all.
    pub fn transport_errors(&self) -> usize {
        self.outcomes.iter().filter(|o| o.status.is_none()).count()
    }

    /// Prints the summary block.
    pub fn print_summary(&self) {
        let secs = |d: Option<Duration>| {
            d.map_or("never".to_string(), |d| format!("{:.1}s", d.as_secs_f64()))
        };
        let all = Tally::of(&self.outcomes);
        let before = self.before_fault();
        println!(
            "[{}] ===== summary: mode={} fault={} =====",
            self.name,
            self.mode,
            self.fault.describe()
        );
        println!(
            "[{}] requests {} (transport errors {}), non-2xx {}; before fault: stable {:.1}% canary {:.1}% steered {}",
            self.name,
            all.total,
            self.transport_errors(),
            all.failed,
            before.stable_share() * 100.0,
            before.canary_share() * 100.0,
            before.steered
        );
        if self.fault_at.is_some() {
            let w = self.after_fault(Duration::from_secs(5), Duration::from_secs(15));
            let after = self.after_fault(Duration::ZERO, Duration::from_secs(3600));
            println!(
                "[{}] after fault: stable {:.1}% canary {:.1}% steered {}; fault+5s..+15s: {} requests, {:.2}% served by stable",
                self.name,
                after.stable_share() * 100.0,
                after.canary_share() * 100.0,
                after.steered,
                w.total,
                w.stable_share() * 100.0
            );
            println!(
                "[{}] canary CRITICAL after {} | first steered request after {} | 99% served by stable after {}",
                self.name,
                secs(self.canary_state_reached(3.0)),
                secs(self.first_steered_after_fault()),
                secs(self.time_to_99_stable())
            );
        }
        println!(
            "[{}] max canary state {} | vigil_steered_total {} | wasm failures {}",
            self.name,
            state_name(self.max_canary_state()),
            opt(self.final_metrics.sum("vigil_steered_total", &[])),
            self.wasm_failures.len()
        );
    }

    /// A JSON summary (the demo writes it to `target/demo/report.json`).
    pub fn to_json(&self) -> Value {
        let d = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let w = self.after_fault(Duration::from_secs(5), Duration::from_secs(15));
        let all = Tally::of(&self.outcomes);
        json!({
            "name": self.name,
            "mode": self.mode,
            "fault": self.fault.describe(),
            "fault_at_s": d(self.fault_at),
            "requests": all.total,
            "transport_errors": self.transport_errors(),
            "non_2xx": all.failed,
            "detected_critical_after_s": d(self.canary_state_reached(3.0)),
            "first_steered_after_s": d(self.first_steered_after_fault()),
            "stable_99pct_after_s": d(self.time_to_99_stable()),
            "stable_share_fault_plus_5_to_15s": w.stable_share(),
            "steered_total": self.final_metrics.sum("vigil_steered_total", &[]),
            "max_canary_state": self.max_canary_state(),
            "wasm_failures": self.wasm_failures,
            "timeline": self.samples.iter().map(|s| json!({
                "t_s": s.at.as_secs_f64(),
                "done": s.tally.total,
                "stable": s.tally.stable,
                "canary": s.tally.canary,
                "steered": s.tally.steered,
                "failed": s.tally.failed,
                "client_p99_ms_canary": s.client_p99_ms.0,
                "client_p99_ms_stable": s.client_p99_ms.1,
                "canary_state": s.canary.state,
                "canary_score": s.canary.score,
                "canary_p99_ms": s.canary.p99_ms,
                "stable_state": s.stable.state,
                "stable_score": s.stable.score,
            })).collect::<Vec<_>>(),
        })
    }
}
