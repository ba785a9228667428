//! One judge: the same canary evidence gives the same verdict in the
//! filter's code path and in the control service.
//!
//! The filter side is the real `vigil-filter-core` worker (what runs inside
//! Envoy, host-built) fed requests tick by tick; its reports carry both the
//! evidence (the managed series' deltas) and its own canary verdict. The
//! control side is the real `vigil-control` binary's `replay` command: a
//! real `Service` on real SQLite ingesting those same reports and running
//! its analysis tick. Every tick, the verdict (state and score) must be the
//! same, up to and including the tick the canary turns critical.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::Value;
use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{ControlKind, Worker};
use vigil_filter_core::metrics::MemorySink;
use vigil_filter_core::request::RequestRecord;
use vigil_filter_core::shared::MemoryStore;

/// One filter tick: its reports and its canary verdict `(state, score)`.
type Tick = (Vec<Value>, Option<(String, u64)>);

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn req(latency_us: u64, status: u16) -> RequestRecord {
    RequestRecord::new(latency_us, status, 0, 1)
}

/// Run the filter for `ticks` seconds; the canary gets `fault(t)` =
/// (extra µs, error %, TTFT fault) at tick `t`: with the TTFT fault its
/// first byte comes at 90 % of the request's duration instead of 30 %
/// (TTFT ×3 at an equal total duration). Returns each tick's reports and
/// the filter's canary verdict `(state, score)` from them.
fn filter_run(ticks: u64, fault: impl Fn(u64) -> (u64, u64, bool)) -> Vec<Tick> {
    let cfg = PluginConfig::parse(
        br#"{"mode":"shadow","canaries":[{"name":"checkout","route":"checkout","stable_cluster":"stable","canary_cluster":"canary"}],"control":{"cluster":"vigil-control"}}"#,
    )
    .unwrap();
    let mut w = Worker::new(cfg, 42);
    let store = MemoryStore::new();
    let mut sink = MemorySink::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut now = 1_700_000_000_000u64;
    let mut out = Vec::new();
    for t in 0..ticks {
        let (extra_us, error_pct, ttft_fault) = fault(t);
        // A request with its first body byte at `share` of its duration.
        let timed = |lat: u64, status: u16, share: u64| {
            req(lat, status).with_body_timing(Some(0), Some(lat * share * 10), None, 1)
        };
        for _ in 0..80 {
            let lat = 20_000 + rng.below(10_000);
            w.record(Some(b"checkout"), Some(b"stable"), &timed(lat, 200, 30));
        }
        for _ in 0..20 {
            let lat = 20_000 + rng.below(10_000) + extra_us;
            let status = if rng.below(100) < error_pct { 503 } else { 200 };
            let share = if ttft_fault { 90 } else { 30 };
            w.record(
                Some(b"checkout"),
                Some(b"canary"),
                &timed(lat, status, share),
            );
        }
        now += 1000;
        w.on_tick(now, &store, &mut sink, &mut |_, _| {});
        let reports: Vec<Value> = w
            .take_control_calls()
            .into_iter()
            .filter(|c| c.kind == ControlKind::Report)
            .map(|c| serde_json::from_slice(&c.body.unwrap()).unwrap())
            .collect();
        if reports
            .iter()
            .all(|r| r["series"].as_array().unwrap().is_empty())
        {
            continue; // nothing registered yet
        }
        let verdict = reports.iter().find_map(|r| {
            r["canaries"].as_array().unwrap().iter().find_map(|c| {
                (c["name"] == "checkout").then(|| {
                    (
                        c["state"].as_str().unwrap().to_string(),
                        c["score"].as_u64().unwrap(),
                    )
                })
            })
        });
        out.push((reports, verdict));
    }
    out
}

fn replay(run: &[Tick]) -> Vec<Value> {
    let dir = temp_dir("one-judge");
    let lines: String = run
        .iter()
        .map(|(reports, _)| format!("{}\n", Value::Array(reports.clone())))
        .collect();
    std::fs::write(dir.join("reports.jsonl"), lines).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        "canaries:\n  - name: checkout\n    route: checkout\n    stable_cluster: stable\n    canary_cluster: canary\n    steps: [10, 50, 100]\n    step_duration_s: 3600\n",
    )
    .unwrap();
    let (code, out, err) = run_bin(
        &[
            "replay",
            "--reports",
            dir.join("reports.jsonl").to_str().unwrap(),
            "--canary",
            "checkout",
            "--config",
            dir.join("config.yaml").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn compare(name: &str, fault: impl Fn(u64) -> (u64, u64, bool), expect_critical: bool) {
    let run = filter_run(90, fault);
    let control = replay(&run);
    assert_eq!(control.len(), run.len());
    let mut compared = 0;
    let mut critical_at = None;
    for (i, ((_, filter), ctl)) in run.iter().zip(&control).enumerate() {
        let Some((state, score)) = filter else {
            continue;
        };
        assert_eq!(
            (state.as_str(), *score),
            (
                ctl["state"].as_str().unwrap(),
                ctl["score"].as_u64().unwrap()
            ),
            "{name}: tick {i}: filter {state}/{score} vs control {ctl}"
        );
        compared += 1;
        if state == "critical" {
            critical_at = Some(i);
            assert_eq!(ctl["phase"], "rolled_back", "{name}: {ctl}");
            let reason = run[i].0.iter().find_map(|r| {
                r["canaries"].as_array().unwrap().first()?["reason"]
                    .as_str()
                    .map(str::to_string)
            });
            println!("{name}: filter reason {reason:?}; control {ctl}");
            break;
        }
    }
    println!("{name}: {compared} ticks compared, critical at {critical_at:?}");
    assert!(compared >= 40, "{name}: only {compared} ticks compared");
    assert_eq!(critical_at.is_some(), expect_critical, "{name}");
}

#[test]
fn the_filter_and_the_control_service_give_the_same_verdicts() {
    compare("healthy", |_| (0, 0, false), false);
    compare(
        "errors from tick 50",
        |t| (0, if t >= 50 { 20 } else { 0 }, false),
        true,
    );
    compare(
        "latency from tick 50",
        |t| (if t >= 50 { 40_000 } else { 0 }, 0, false),
        true,
    );
}

/// Time to first token: the same TTFT evidence (TTFT ×3 at an equal total
/// duration from tick 50) gives the same verdict in the filter and in the
/// control service, which re-tests it on the TTFT histograms the reports
/// carry (it no longer takes a sidecar's `ttft:` claim on its word).
#[test]
fn the_same_ttft_evidence_gives_the_same_verdict() {
    compare("ttft x3 from tick 50", |t| (0, 0, t >= 50), true);
    let run = filter_run(90, |t| (0, 0, t >= 50));
    let reason = run
        .iter()
        .flat_map(|(reports, _)| reports)
        .filter_map(|r| r["canaries"].as_array()?.first().cloned())
        .find(|c| c["state"] == "critical")
        .map(|c| c["reason"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(reason.starts_with("ttft"), "{reason}");
}

/// A reporter credential alone cannot force a rollback: reports claiming a
/// `ttft:` critical whose TTFT counts show nothing wrong are not acted on.
#[test]
fn a_ttft_claim_without_the_counts_behind_it_rolls_nothing_back() {
    let mut run = filter_run(60, |_| (0, 0, false));
    for (reports, _) in run.iter_mut().skip(30) {
        for r in reports.iter_mut() {
            if let Some(c) = r["canaries"].as_array_mut().and_then(|a| a.first_mut()) {
                c["state"] = "critical".into();
                c["score"] = 950.into();
                c["reason"] = "ttft: p95 902 ms vs stable 305 ms (+196 %), n=60".into();
            }
        }
    }
    let control = replay(&run);
    let last = control.last().unwrap();
    assert_ne!(last["phase"], "rolled_back", "{last}");
    assert!(
        control.iter().all(|c| c["state"] != "critical"),
        "{:?}",
        control.last()
    );
    println!("forged ttft claims: control ends {last}");
}
