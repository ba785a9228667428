//! Requests during the lease holder's tick, in real Envoy (`ticks` section).
//!
//! One Envoy worker (`--concurrency 1`): that worker is always the lease
//! holder, and its tick (merge, score every series, publish) runs on the
//! thread that serves the requests, so a long tick is a stall for every
//! request queued behind it. For N series (N distinct routes, each primed
//! twice), the no-op filter and Vigil (steer) get the same open-loop load on
//! `/` (matched ahead of the N routes) for several tick periods, interleaved; reported: p50, p99, p99.9 and
//! max client latency of each, Vigil − no-op max, and the Envoy CPU of one
//! idle tick period (Vigil − no-op: with one worker, the holder's whole tick).

use std::time::Duration;

use vigil_e2e::Result;

use crate::dataplane::{start_with, Setup, Variant};
use crate::load::{cpu_sched_ns, open_loop, FastUpstream};
use crate::report::{median, quantile_sorted, Res};

/// Runs the section for each size (`rounds` interleaved rounds of `secs`
/// seconds at `rate` requests/s per variant).
pub async fn run(
    setup: &Setup,
    sizes: &[usize],
    rounds: usize,
    secs: f64,
    rate: f64,
    idle_secs: f64,
    out: &mut Vec<Res>,
) -> Result<()> {
    let stable = FastUpstream::start("stable").await?;
    let canary = FastUpstream::start("canary").await?;
    let ports = (stable.port(), canary.port());
    for &n in sizes {
        eprintln!(
            "bench: ticks, {n} series: starting the no-op and the Vigil Envoy (--concurrency 1)"
        );
        let max_series = (n + 16) as u64;
        // The measured path `/` is matched ahead of the N routes: the route
        // scan is Envoy's cost, not a tick's.
        let noop = start_with(setup, Variant::Noop, 1, ports, n, Some(max_series), true).await?;
        let vigil = start_with(setup, Variant::Steer, 1, ports, n, Some(max_series), true).await?;
        for r in [&noop, &vigil] {
            vigil_e2e::load::fixed_requests(
                r.envoy.listener_addr(),
                2 * n,
                16,
                move |i| format!("/r{}/x", i % n),
                Duration::from_secs(300),
            )
            .await?;
        }
        // Every series registered and scored at least once.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let dur = Duration::from_secs_f64(secs);
        // Per variant: p50, p99, p99.9, max per round.
        let mut stats: [Vec<[f64; 4]>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for vi in order {
                let r = if vi == 0 { &noop } else { &vigil };
                let res = open_loop(r.envoy.listener_addr(), rate, dur).await?;
                let q = |p: f64| quantile_sorted(&res.latencies_us, p).unwrap_or(f64::NAN);
                let row = [
                    q(0.5),
                    q(0.99),
                    q(0.999),
                    res.latencies_us.last().copied().unwrap_or(f64::NAN),
                ];
                eprintln!(
                    "bench:   ticks {n} round {round} {:<5} p50 {:>7.0} p99 {:>7.0} p99.9 {:>7.0} max {:>7.0} µs ({} answered, {} failed)",
                    if vi == 0 { "noop" } else { "steer" },
                    row[0], row[1], row[2], row[3], res.latencies_us.len(), res.failed
                );
                if let Some(s) = stats.get_mut(vi) {
                    s.push(row);
                }
            }
        }
        let p = format!("ticks.{n}");
        for (vi, name) in [(0usize, "noop"), (1, "steer")] {
            let Some(rows) = stats.get(vi) else { continue };
            for (qi, qname) in ["p50", "p99", "p99_9", "max"].iter().enumerate() {
                let col: Vec<f64> = rows
                    .iter()
                    .filter_map(|r| r.get(qi).copied())
                    .filter(|v| v.is_finite())
                    .collect();
                out.extend(
                    Res::of_samples(format!("{p}.{name}.{qname}"), &col, "µs").map(|r| {
                        r.note(format!(
                            "--concurrency 1 (the only worker holds the lease), open loop {rate} req/s on / for {secs} s per round, {n} series; median over rounds"
                        ))
                    }),
                );
            }
        }
        let diffs: Vec<f64> = stats[1]
            .iter()
            .zip(&stats[0])
            .map(|(v, o)| (v[3] - o[3]) / 1000.0)
            .filter(|d| d.is_finite())
            .collect();
        out.extend(
            Res::of_samples(format!("{p}.steer-noop.max_ms"), &diffs, "ms")
                .map(|r| r.note("max request latency, Vigil minus no-op, paired per round (goal at 10 000 series: ≤ 1 ms)")),
        );
        // Idle: the holder's tick alone.
        let (a0, b0) = (cpu_sched_ns(noop.pid)?, cpu_sched_ns(vigil.pid)?);
        let t0 = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
        let wall = t0.elapsed().as_secs_f64();
        let (a1, b1) = (cpu_sched_ns(noop.pid)?, cpu_sched_ns(vigil.pid)?);
        let tick_ms = ((b1 - b0) as f64 - (a1 - a0) as f64) / 1e6 / wall;
        out.push(
            Res::new(format!("{p}.envoy.lease_tick_cpu_per_period"), tick_ms, "ms").note(format!(
                "--concurrency 1: the lease holder's whole idle tick, Vigil - no-op Envoy CPU over {idle_secs:.0} s, per 1 s tick (goal at 10 000 series: ≤ 10 ms)"
            )),
        );
        eprintln!(
            "bench: ticks {n}: max noop {:.0} µs, steer {:.0} µs; idle holder tick {tick_ms:.1} ms CPU/period",
            median(&stats[0].iter().map(|r| r[3]).collect::<Vec<_>>()).unwrap_or(f64::NAN),
            median(&stats[1].iter().map(|r| r[3]).collect::<Vec<_>>()).unwrap_or(f64::NAN),
        );
        drop(vigil);
        drop(noop);
    }
    Ok(())
}
