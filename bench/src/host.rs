//! Host-side scale figures from the filter's own core: two `Worker`s over a
//! `MemoryStore` (Envoy's shared-data semantics, the same record encoding the
//! filter writes), N series, every series active every tick (worst case).

use std::time::Instant;

use vigil_e2e::Result;
use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{Level, Worker};
use vigil_filter_core::metrics::MemorySink;
use vigil_filter_core::request::RequestRecord;
use vigil_filter_core::shared::MemoryStore;

use crate::report::Res;

/// Counts shared-data calls (each is one hostcall in Envoy).
struct Counted<'a> {
    inner: &'a MemoryStore,
    calls: std::cell::Cell<u64>,
}

impl vigil_filter_core::shared::SharedStore for Counted<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.calls.set(self.calls.get() + 1);
        self.inner.get(key)
    }
    fn set(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> std::result::Result<(), vigil_filter_core::shared::SetError> {
        self.calls.set(self.calls.get() + 1);
        self.inner.set(key, value, cas)
    }
}

/// Encoded size of the largest possible `vigil.d.<id>` value: every latency
/// bucket filled, with `count` requests each (an upper bound the scale runs
/// cannot reach with realistic latencies, which fill a few octaves).
pub fn worst_delta(out: &mut Vec<Res>) {
    use vigil_scorer::histogram::BUCKETS;
    use vigil_scorer::window::TickDelta;
    for count in [1u32, 1000] {
        let mut d = TickDelta::default();
        let n = u64::from(count) * BUCKETS as u64;
        d.counters.requests = n;
        d.counters.errors = n / 10;
        d.counters.latency_sum_us = n * 1_000_000;
        d.latency = (0..BUCKETS as u16).map(|i| (i, count)).collect();
        let bytes = vigil_filter_core::codec::encode_delta(&d).len();
        out.push(
            Res::new(format!("host.delta_all_buckets_x{count}_bytes"), bytes as f64, "bytes")
                .note(format!("encode_delta with all {BUCKETS} latency buckets at {count} each: the bound on one series' pending record")),
        );
    }
}

/// Runs the host scale bench for each size; `ticks` measured ticks after 3
/// warm-up ticks; every worker records `per_tick` requests per series per tick,
/// latencies log-uniform over 100 µs..2 s (many histogram buckets: the
/// largest deltas the shared-data records carry).
pub fn run(sizes: &[usize], ticks: usize, per_tick: usize, out: &mut Vec<Res>) -> Result<()> {
    for &n in sizes {
        let cfg_json = format!(
            r#"{{"mode":"steer","max_series":{},"canaries":[{{"name":"checkout","route":"checkout","stable_cluster":"stable","canary_cluster":"canary"}}]}}"#,
            n + 16
        );
        let cfg = PluginConfig::parse(cfg_json.as_bytes()).map_err(|e| format!("config: {e:?}"))?;
        let store = MemoryStore::new();
        let mut sink = MemorySink::default();
        let mut workers: Vec<Worker> = (0..2).map(|i| Worker::new(cfg.clone(), 7000 + i)).collect();
        let names: Vec<Vec<u8>> = (0..n).map(|i| format!("r{i}").into_bytes()).collect();
        let mut now = 1_700_000_000_000u64;
        let mut seq = 0u64;
        let mut lease_ms = Vec::new();
        let mut other_ms = Vec::new();
        let mut record_ns = Vec::new();
        let mut lease_calls = Vec::new();
        let mut other_calls = Vec::new();
        let mut max_bytes = 0usize;
        let mut log = |_: Level, _: &str| {};
        for t in 0..ticks + 3 {
            now += 1000;
            for (wi, w) in workers.iter_mut().enumerate() {
                let start = Instant::now();
                for route in &names {
                    for _ in 0..per_tick {
                        seq = seq
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let u = (seq >> 11) as f64 / (1u64 << 53) as f64;
                        let rec = RequestRecord::new(
                            (100.0 * 20_000f64.powf(u)) as u64,
                            if (seq >> 20) % 100 == 0 { 503 } else { 200 },
                            0,
                            1,
                        );
                        w.record(Some(route), Some(b"stable"), &rec);
                    }
                }
                let rec_ns = start.elapsed().as_nanos() as f64 / (n * per_tick).max(1) as f64;
                let counted = Counted {
                    inner: &store,
                    calls: std::cell::Cell::new(0),
                };
                let start = Instant::now();
                w.on_tick(now + wi as u64 * 137, &counted, &mut sink, &mut log);
                let ms = start.elapsed().as_secs_f64() * 1e3;
                let calls = counted.calls.get() as f64 / n as f64;
                max_bytes = max_bytes.max(store.bytes());
                if t >= 3 {
                    record_ns.push(rec_ns);
                    if w.is_scorer() {
                        lease_ms.push(ms);
                        lease_calls.push(calls);
                    } else {
                        other_ms.push(ms);
                        other_calls.push(calls);
                    }
                }
            }
        }
        let heap: usize = workers
            .iter()
            .map(Worker::local_heap_bytes)
            .max()
            .unwrap_or(0);
        // Then quiet: 15 ticks for every window to empty, then `ticks`
        // measured ticks of the holder with no traffic at all (what Envoy's
        // idle tick figures measure).
        let mut idle_ms = Vec::new();
        let mut idle_calls = Vec::new();
        let mut idle_other_ms = Vec::new();
        for t in 0..ticks + 15 {
            now += 1000;
            for (wi, w) in workers.iter_mut().enumerate() {
                let counted = Counted {
                    inner: &store,
                    calls: std::cell::Cell::new(0),
                };
                let start = Instant::now();
                w.on_tick(now + wi as u64 * 137, &counted, &mut sink, &mut log);
                let ms = start.elapsed().as_secs_f64() * 1e3;
                if t >= 15 && w.is_scorer() {
                    idle_ms.push(ms);
                    idle_calls.push(counted.calls.get() as f64 / n as f64);
                } else if t >= 15 {
                    idle_other_ms.push(ms);
                }
            }
        }
        let p = format!("host.{n}");
        out.push(
            Res::new(format!("{p}.shared_bytes_per_series"), max_bytes as f64 / n as f64, "bytes")
                .note(format!("max over ticks of MemoryStore::bytes() (keys + values: registry, vigil.d.<id>, lease, verdicts) / {n}")),
        );
        out.extend(
            Res::of_samples(format!("{p}.lease_tick"), &lease_ms, "ms")
                .map(|r| r.note(format!("Worker::on_tick of the lease holder: merge + score every series + publish verdicts; {per_tick} requests per series per worker per tick"))),
        );
        let per_series: Vec<f64> = lease_ms.iter().map(|ms| ms * 1e3 / n as f64).collect();
        out.extend(Res::of_samples(
            format!("{p}.lease_tick_per_series"),
            &per_series,
            "µs/series",
        ));
        out.extend(
            Res::of_samples(format!("{p}.idle_lease_tick"), &idle_ms, "ms")
                .map(|r| r.note("the lease holder's tick once every series has been without traffic for 15 ticks (series still registered)")),
        );
        out.extend(
            Res::of_samples(format!("{p}.idle_other_tick"), &idle_other_ms, "ms")
                .map(|r| r.note("a worker without the lease in the same quiet ticks")),
        );
        out.extend(
            Res::of_samples(
                format!("{p}.idle_lease_tick_shared_calls_per_series"),
                &idle_calls,
                "calls/series",
            )
            .map(|r| r.note("shared-data get + set calls of that idle holder tick, / N")),
        );
        out.extend(
            Res::of_samples(format!("{p}.other_tick"), &other_ms, "ms")
                .map(|r| r.note("a worker without the lease: register + merge + re-read verdicts")),
        );
        out.extend(
            Res::of_samples(format!("{p}.lease_tick_shared_calls_per_series"), &lease_calls, "calls/series")
                .map(|r| r.note("shared-data get + set calls (each a hostcall in Envoy) in the lease holder's tick, / N")),
        );
        out.extend(
            Res::of_samples(
                format!("{p}.other_tick_shared_calls_per_series"),
                &other_calls,
                "calls/series",
            )
            .map(|r| r.note("the same for a worker without the lease")),
        );
        out.extend(
            Res::of_samples(format!("{p}.record"), &record_ns, "ns/req")
                .map(|r| r.note("Worker::record (on_log's work on the host)")),
        );
        out.push(
            Res::new(
                format!("{p}.local_heap_bytes_per_series"),
                heap as f64 / n as f64,
                "bytes",
            )
            .note("Worker::local_heap_bytes (local windows) / N, the larger worker"),
        );
        eprintln!(
            "bench: host {n} series: {:.0} shared B/series, lease tick median {:.3} ms",
            max_bytes as f64 / n as f64,
            crate::dataplane::med(&lease_ms)
        );
    }
    Ok(())
}
