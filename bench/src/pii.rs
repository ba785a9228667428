//! Real Envoy: the cost of the PII guard per request for 1 KB, 16 KB and
//! 256 KB chat prompts, with the guard off (Vigil without a `pii` section),
//! `detect` and `redact`, against the no-op wasm filter. Closed loop of POSTs
//! over keep-alive connections (the data-plane bench's loop, [`crate::load`])
//! to an upstream that reads every body; Envoy CPU per request from `/proc`,
//! p50/p99 from the client. Printed, never asserted.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use vigil_e2e::envoy::{hcm_mut, Envoy, EnvoyOptions};
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::Result;

use crate::dataplane::Setup;
use crate::load::{closed_loop_req, cpu_sched_ns, FastUpstream, Req};
use crate::report::{quantile_sorted, Res};

/// Per variant: CPU µs/req, p50 µs, p99 µs per round.
type Samples = (Variant, Vec<f64>, Vec<f64>, Vec<f64>);

/// Prompt sizes, bytes.
pub const SIZES: [usize; 3] = [1024, 16 * 1024, 256 * 1024];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Noop,
    Off,
    Detect,
    Redact,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::Noop,
        Variant::Off,
        Variant::Detect,
        Variant::Redact,
    ];
    fn name(self) -> &'static str {
        match self {
            Variant::Noop => "noop",
            Variant::Off => "off",
            Variant::Detect => "detect",
            Variant::Redact => "redact",
        }
    }
}

/// A chat prompt of about `size` bytes with a few entities in it.
pub fn prompt(size: usize) -> Bytes {
    let mut content = String::from(
        "Customer ann.lee@corp.example.com (+1 415 555 0100) asks about card 4111 1111 1111 1111. ",
    );
    while content.len() + 80 < size {
        content.push_str(
            "The quarterly review covers shipping delays, refunds and the new loyalty tier. ",
        );
    }
    Bytes::from(
        json!({ "model": "m", "messages": [{ "role": "user", "content": content }] }).to_string(),
    )
}

async fn start(setup: &Setup, v: Variant, port: u16) -> Result<(Envoy, u32)> {
    let pii = match v {
        Variant::Detect => {
            json!({ "pii": { "routes": [{ "route": "checkout", "action": "detect", "max_inspect_bytes": 1 << 20 }] } })
        }
        Variant::Redact => {
            json!({ "pii": { "routes": [{ "route": "checkout", "action": "redact", "max_inspect_bytes": 1 << 20 }] } })
        }
        _ => json!({}),
    };
    let noop = setup.noop_wasm.to_string_lossy().into_owned();
    let mut opts = EnvoyOptions::new(
        &format!("bench-pii-{}", v.name()),
        plugin_config("shadow", &pii),
    )
    .upstreams(port, port)
    .concurrency(1)
    .transform(move |b: &mut Value| {
        if v == Variant::Noop {
            let filters = hcm_mut(b)?
                .get_mut("http_filters")
                .and_then(Value::as_array_mut)
                .ok_or("no http_filters")?;
            let slot = filters
                .iter_mut()
                .find(|f| f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm"))
                .and_then(|f| f.pointer_mut("/typed_config/config/vm_config/code/local/filename"))
                .ok_or("no wasm code path")?;
            *slot = Value::from(noop);
        }
        Ok(())
    });
    opts.start_timeout = Duration::from_secs(60);
    let envoy = Envoy::start(opts).await?;
    let pid: u32 = std::fs::read_to_string(envoy.dir().join("envoy.pid"))?
        .trim()
        .parse()?;
    Ok((envoy, pid))
}

/// Runs the PII scenario and appends `pii.<size>.<variant>.{envoy_cpu_per_req,p50,p99}`
/// and `pii.<size>.detect/noop.cpu_per_req` (the goal: ≤ 1.5 at 16 KB).
pub async fn run(
    setup: &Setup,
    rounds: usize,
    secs: f64,
    conns: usize,
    out: &mut Vec<Res>,
) -> Result<()> {
    let up = FastUpstream::start_reading_bodies("pii").await?;
    let mut envoys = Vec::new();
    for v in Variant::ALL {
        envoys.push((v, start(setup, v, up.port()).await?));
    }
    for size in SIZES {
        let body = prompt(size);
        let mut cpu: Vec<Samples> = Variant::ALL
            .iter()
            .map(|v| (*v, vec![], vec![], vec![]))
            .collect();
        let req = Req::post_json("/", body.clone());
        for (_, (e, _)) in &envoys {
            closed_loop_req(
                e.listener_addr(),
                conns,
                Duration::from_secs(1),
                req.clone(),
            )
            .await?;
        }
        for round in 0..rounds {
            for j in 0..envoys.len() {
                let Some((v, (e, pid))) = envoys.get((j + round) % envoys.len()) else {
                    continue;
                };
                let s0 = cpu_sched_ns(*pid)?;
                let run = closed_loop_req(
                    e.listener_addr(),
                    conns,
                    Duration::from_secs_f64(secs),
                    req.clone(),
                )
                .await?;
                let (lat, failed) = (run.latencies_us, run.failed);
                let s1 = cpu_sched_ns(*pid)?;
                let n = (lat.len() + failed).max(1) as f64;
                let us = s1.saturating_sub(s0) as f64 / 1e3 / n;
                let p50 = quantile_sorted(&lat, 0.5).unwrap_or(f64::NAN);
                let p99 = quantile_sorted(&lat, 0.99).unwrap_or(f64::NAN);
                eprintln!("bench:   pii {size:>6} B round {round} {:<6} cpu {us:>8.2} µs/req  p50 {p50:>7.0} µs  p99 {p99:>7.0} µs{}", v.name(), if failed > 0 { format!("  FAILED {failed}") } else { String::new() });
                if let Some(slot) = cpu.iter_mut().find(|c| c.0 == *v) {
                    slot.1.push(us);
                    slot.2.push(p50);
                    slot.3.push(p99);
                }
            }
        }
        let median = |v: Variant| {
            cpu.iter()
                .find(|c| c.0 == v)
                .and_then(|c| crate::report::median(&c.1))
        };
        for (v, c, p50, p99) in &cpu {
            let p = format!("pii.{size}.{}", v.name());
            out.extend(Res::of_samples(format!("{p}.envoy_cpu_per_req"), c, "µs/req").map(|r| r.note(format!("POST {size} B chat prompt, closed loop {conns} connections, --concurrency 1"))));
            out.extend(Res::of_samples(format!("{p}.p50"), p50, "µs"));
            out.extend(Res::of_samples(format!("{p}.p99"), p99, "µs"));
        }
        for v in [Variant::Off, Variant::Detect, Variant::Redact] {
            if let (Some(a), Some(b)) = (median(v), median(Variant::Noop)) {
                out.push(Res::new(
                    format!("pii.{size}.{}/noop.cpu_per_req", v.name()),
                    a / b,
                    "ratio",
                ));
            }
        }
    }
    for (v, (e, _)) in &envoys {
        let failures = e.wasm_failures().await?;
        if !failures.is_empty() {
            return Err(format!("pii {}: wasm failures: {failures:?}", v.name()).into());
        }
    }
    Ok(())
}
