//! Real Envoy: the data-plane cost of (a) no wasm filter, (b) the no-op wasm
//! filter, (c) Vigil shadow, (d) Vigil steer with a managed canary, (e) the
//! same with observed edges enabled (issue 15: one more property and two
//! pseudo-headers read, and one aggregator update per request), measured
//! side by side, and the scale figures (memory, idle tick CPU) at N series.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use vigil_e2e::envoy::{hcm_mut, prepend_flood_routes, Envoy, EnvoyOptions};
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::Result;

use crate::load::{
    closed_loop, cpu_sched_ns, cpu_stat_s, open_loop, rss_bytes, FastUpstream, LoadResult,
};
use crate::report::{median, quantile_sorted, Res};

/// The five configurations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// (a) no wasm filter at all.
    None,
    /// (b) the no-op Proxy-Wasm filter.
    Noop,
    /// (c) Vigil in shadow mode.
    Shadow,
    /// (d) Vigil in steer mode with a managed canary.
    Steer,
    /// (e) (d) with the `edges` section enabled.
    SteerEdges,
    /// The no-op module in priced mode: Vigil steer's per-request hostcalls
    /// and nothing else (section `profile` only).
    NoopPriced,
}

impl Variant {
    /// The `dataplane` section's five variants, in report order.
    pub const ALL: [Variant; 5] = [
        Variant::None,
        Variant::Noop,
        Variant::Shadow,
        Variant::Steer,
        Variant::SteerEdges,
    ];

    /// Short name used in result names.
    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Noop => "noop",
            Variant::Shadow => "shadow",
            Variant::Steer => "steer",
            Variant::SteerEdges => "steer_edges",
            Variant::NoopPriced => "noop_priced",
        }
    }
}

/// Where the no-op module is and how Envoy is pinned.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The no-op filter's `.wasm`.
    pub noop_wasm: PathBuf,
}

/// An Envoy under test and its process id (read from the pinning wrapper).
pub struct Running {
    /// The harness's Envoy (killed on drop).
    pub envoy: Envoy,
    /// Envoy's pid.
    pub pid: u32,
}

/// Starts one Envoy of `variant` with `routes` extra distinct routes (r0..) to
/// the stable cluster and, for Vigil, `max_series`. The extra routes are
/// matched before the measured `checkout` routes (which match every path).
pub async fn start(
    setup: &Setup,
    variant: Variant,
    concurrency: u32,
    ports: (u16, u16),
    routes: usize,
    max_series: Option<u64>,
) -> Result<Running> {
    start_with(
        setup,
        variant,
        concurrency,
        ports,
        routes,
        max_series,
        false,
    )
    .await
}

/// [`start`], and with `measured_first` the `checkout` routes also match the
/// exact path `/` ahead of the extra routes, so a request to `/` is routed
/// without scanning them (the `ticks` section: with 10 000 routes the scan
/// alone stalls the no-op Envoy).
pub async fn start_with(
    setup: &Setup,
    variant: Variant,
    concurrency: u32,
    ports: (u16, u16),
    routes: usize,
    max_series: Option<u64>,
    measured_first: bool,
) -> Result<Running> {
    let mode = if variant == Variant::Shadow {
        "shadow"
    } else {
        "steer"
    };
    let mut extra = match max_series {
        Some(m) => json!({ "max_series": m }),
        None => json!({}),
    };
    if variant == Variant::SteerEdges {
        if let Some(o) = extra.as_object_mut() {
            o.insert("edges".into(), json!({"service": "bench", "version": "v1"}));
        }
    }
    if variant == Variant::NoopPriced {
        if let Some(o) = extra.as_object_mut() {
            // VIGIL_BENCH_MIMIC: which hostcall groups (time, headers,
            // properties; default steer = all), to price them one by one.
            let groups = std::env::var("VIGIL_BENCH_MIMIC").unwrap_or_else(|_| "steer".into());
            o.insert("bench_mimic".into(), json!(groups));
        }
    }
    let noop = setup.noop_wasm.to_string_lossy().into_owned();
    let opts = EnvoyOptions::new(
        &format!("bench-{}-c{concurrency}", variant.name()),
        plugin_config(mode, &extra),
    )
    .upstreams(ports.0, ports.1)
    .concurrency(concurrency)
    .transform(move |b| {
        transform(b, variant, &noop)?;
        if routes > 0 {
            prepend_flood_routes(b, routes, "stable")?;
            if measured_first {
                measured_routes_first(b)?;
            }
        }
        Ok(())
    });
    let mut opts = opts;
    opts.start_timeout = Duration::from_secs(60);
    let envoy = Envoy::start(opts).await?;
    let pid_file = envoy.dir().join("envoy.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .map_err(|e| {
            format!(
                "{}: {e} (the pinning wrapper writes it)",
                pid_file.display()
            )
        })?
        .trim()
        .parse()?;
    Ok(Running { envoy, pid })
}

/// Copies the `checkout` routes, matching the exact path `/` instead of the
/// prefix, to the front of the route table.
fn measured_routes_first(b: &mut Value) -> Result<()> {
    let routes = vigil_e2e::envoy::routes_mut(b)?;
    let mut first: Vec<Value> = routes
        .iter()
        .filter(|r| r.get("name").and_then(Value::as_str) == Some("checkout"))
        .cloned()
        .collect();
    if first.is_empty() {
        return Err("bootstrap has no checkout route".into());
    }
    for r in &mut first {
        let m = r
            .get_mut("match")
            .and_then(Value::as_object_mut)
            .ok_or("checkout route without a match")?;
        m.remove("prefix");
        m.insert("path".into(), Value::from("/"));
    }
    first.append(routes);
    *routes = first;
    Ok(())
}

/// Bootstrap transform per variant: (a) removes the wasm filter, (b) swaps the
/// code path for the no-op module, (c)/(d) keep Vigil (mode is in the plugin config).
fn transform(b: &mut Value, variant: Variant, noop: &str) -> Result<()> {
    let filters = hcm_mut(b)?
        .get_mut("http_filters")
        .and_then(Value::as_array_mut)
        .ok_or("bootstrap has no http_filters")?;
    match variant {
        Variant::None => {
            filters.retain(|f| {
                f.get("name").and_then(Value::as_str) != Some("envoy.filters.http.wasm")
            });
        }
        Variant::Noop | Variant::NoopPriced => {
            let slot = filters
                .iter_mut()
                .find(|f| f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm"))
                .and_then(|f| f.pointer_mut("/typed_config/config/vm_config/code/local/filename"))
                .ok_or("bootstrap has no wasm code path")?;
            *slot = Value::from(noop);
        }
        Variant::Shadow | Variant::Steer | Variant::SteerEdges => {}
    }
    Ok(())
}

/// Load shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Fixed open-loop arrival rate.
    Open,
    /// Closed loop over many connections: as fast as it goes.
    Sat,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Open => "open",
            Mode::Sat => "sat",
        }
    }
}

/// Data-plane settings.
#[derive(Debug, Clone)]
pub struct DpConfig {
    /// Interleaved rounds (each runs every variant once per mode).
    pub rounds: usize,
    /// Seconds per run.
    pub secs: f64,
    /// Open-loop rate, requests/s.
    pub rate: f64,
    /// Connections of the closed loop.
    pub conns: usize,
    /// Envoy worker counts to test.
    pub concurrencies: Vec<u32>,
}

/// One variant's run under one load shape.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Envoy CPU per request (schedstat), µs.
    pub cpu_us_per_req: f64,
    stat_us_per_req: f64,
    p50_us: f64,
    p99_us: f64,
    rps: f64,
    cpu_util: f64,
    failed: usize,
}

async fn measure(r: &Running, mode: Mode, cfg: &DpConfig) -> Result<Sample> {
    let addr = r.envoy.listener_addr();
    let dur = Duration::from_secs_f64(cfg.secs);
    let c0 = cpu_stat_s(r.pid)?;
    let s0 = cpu_sched_ns(r.pid)?;
    let res: LoadResult = match mode {
        Mode::Open => open_loop(addr, cfg.rate, dur).await?,
        Mode::Sat => closed_loop(addr, cfg.conns, dur, "/").await?,
    };
    let c1 = cpu_stat_s(r.pid)?;
    let s1 = cpu_sched_ns(r.pid)?;
    let n = res.requests().max(1) as f64;
    let wall = res.wall.as_secs_f64().max(1e-9);
    let cpu_s = s1.saturating_sub(s0) as f64 / 1e9;
    Ok(Sample {
        cpu_us_per_req: cpu_s * 1e6 / n,
        stat_us_per_req: (c1 - c0) * 1e6 / n,
        p50_us: quantile_sorted(&res.latencies_us, 0.50).unwrap_or(f64::NAN),
        p99_us: quantile_sorted(&res.latencies_us, 0.99).unwrap_or(f64::NAN),
        rps: res.latencies_us.len() as f64 / wall,
        cpu_util: cpu_s / wall,
        failed: res.failed,
    })
}

/// Runs the interleaved comparison of every [`Variant::ALL`] under both load
/// shapes and appends its results as `dataplane.*`.
pub async fn run(setup: &Setup, cfg: &DpConfig, out: &mut Vec<Res>) -> Result<()> {
    let samples = run_variants(setup, cfg, &Variant::ALL, &[Mode::Open, Mode::Sat]).await?;
    for (conc, samples) in &samples {
        summarize("dataplane", *conc, cfg, samples, out);
    }
    Ok(())
}

/// Per-round samples of each (load shape, variant), per concurrency.
pub type Samples = BTreeMap<(Mode, Variant), Vec<Sample>>;

/// Starts one Envoy per variant for each concurrency of `cfg`, then runs
/// interleaved rounds of every load shape in `modes` over them.
pub async fn run_variants(
    setup: &Setup,
    cfg: &DpConfig,
    variants: &[Variant],
    modes: &[Mode],
) -> Result<Vec<(u32, Samples)>> {
    let mut all = Vec::new();
    let stable = FastUpstream::start("stable").await?;
    let canary = FastUpstream::start("canary").await?;
    let ports = (stable.port(), canary.port());
    for &conc in &cfg.concurrencies {
        eprintln!(
            "bench: data plane, --concurrency {conc}: starting {} Envoys",
            variants.len()
        );
        let mut envoys = Vec::new();
        for &v in variants {
            let r = start(setup, v, conc, ports, 0, None).await?;
            // Warm-up: connections, V8 tier-up of the hot wasm functions, first ticks.
            closed_loop(
                r.envoy.listener_addr(),
                cfg.conns,
                Duration::from_secs_f64(cfg.secs.min(2.0)),
                "/",
            )
            .await?;
            envoys.push((v, r));
        }
        let mut samples: Samples = BTreeMap::new();
        for round in 0..cfg.rounds {
            for &mode in modes {
                // Rotate the order every round so no variant always runs first.
                let k = envoys.len();
                for j in 0..k {
                    let Some((v, r)) = envoys.get((j + round) % k) else {
                        continue;
                    };
                    let s = measure(r, mode, cfg).await?;
                    eprintln!(
                        "bench:   c{conc} round {round} {:<4} {:<6} cpu {:>7.2} µs/req  p50 {:>7.0} µs  p99 {:>7.0} µs  {:>7.0} req/s  envoy cpu {:>4.2}{}",
                        mode.name(), v.name(), s.cpu_us_per_req, s.p50_us, s.p99_us, s.rps, s.cpu_util,
                        if s.failed > 0 { format!("  FAILED {}", s.failed) } else { String::new() }
                    );
                    samples.entry((mode, *v)).or_default().push(s);
                }
            }
        }
        // Sanity: the Vigil Envoys really ran Vigil (their counters moved).
        for (v, r) in &envoys {
            if matches!(v, Variant::Shadow | Variant::Steer | Variant::SteerEdges) {
                let m = r.envoy.metrics().await?;
                let total = m.sum("vigil_requests_total", &[]).unwrap_or(0.0);
                if total <= 0.0 {
                    return Err(format!(
                        "c{conc} {}: vigil_requests_total is 0: the filter did not run",
                        v.name()
                    )
                    .into());
                }
                let failures = r.envoy.wasm_failures().await?;
                if !failures.is_empty() {
                    return Err(format!("c{conc} {}: wasm failures: {failures:?}", v.name()).into());
                }
            }
        }
        drop(envoys);
        all.push((conc, samples));
    }
    Ok(all)
}

/// Appends the per-variant figures and the paired ratios as `<prefix>.c<conc>.*`.
pub fn summarize(prefix: &str, conc: u32, cfg: &DpConfig, samples: &Samples, out: &mut Vec<Res>) {
    for mode in [Mode::Open, Mode::Sat] {
        let load = match mode {
            Mode::Open => format!("open loop {:.0} req/s", cfg.rate),
            Mode::Sat => format!("closed loop, {} connections", cfg.conns),
        };
        for v in Variant::ALL.into_iter().chain([Variant::NoopPriced]) {
            let Some(s) = samples.get(&(mode, v)) else {
                continue;
            };
            let p = format!("{prefix}.c{conc}.{}.{}", mode.name(), v.name());
            let col = |f: fn(&Sample) -> f64| s.iter().map(f).collect::<Vec<f64>>();
            let failed: usize = s.iter().map(|x| x.failed).sum();
            let mut cpu = Res::of_samples(
                format!("{p}.envoy_cpu_per_req"),
                &col(|x| x.cpu_us_per_req),
                "µs/req",
            );
            if let Some(c) = cpu.as_mut() {
                let how = "Envoy CPU of all threads (/proc/<pid>/task/*/schedstat, ns) / requests";
                c.note = Some(if failed > 0 {
                    format!("{load}; {how}; {failed} requests FAILED")
                } else {
                    format!("{load}; {how}")
                });
            }
            out.extend(cpu);
            out.extend(
                Res::of_samples(
                    format!("{p}.envoy_cpu_per_req_stat"),
                    &col(|x| x.stat_us_per_req),
                    "µs/req",
                )
                .map(|r| r.note("cross-check: /proc/<pid>/stat utime+stime (10 ms clock ticks)")),
            );
            out.extend(Res::of_samples(
                format!("{p}.p50"),
                &col(|x| x.p50_us),
                "µs",
            ));
            out.extend(Res::of_samples(
                format!("{p}.p99"),
                &col(|x| x.p99_us),
                "µs",
            ));
            if mode == Mode::Sat {
                out.extend(Res::of_samples(
                    format!("{p}.throughput"),
                    &col(|x| x.rps),
                    "req/s",
                ));
                out.extend(Res::of_samples(
                    format!("{p}.envoy_cpu_util"),
                    &col(|x| x.cpu_util),
                    "cores",
                ));
            }
        }
        // Ratios paired within each round (same moment, same machine state).
        let pairs = [
            (Variant::Shadow, Variant::Noop),
            (Variant::Steer, Variant::Noop),
            (Variant::Shadow, Variant::None),
            (Variant::Steer, Variant::None),
            (Variant::Noop, Variant::None),
            (Variant::SteerEdges, Variant::Steer),
            (Variant::SteerEdges, Variant::Noop),
            (Variant::NoopPriced, Variant::Noop),
            (Variant::Steer, Variant::NoopPriced),
        ];
        for (num, den) in pairs {
            let (Some(a), Some(b)) = (samples.get(&(mode, num)), samples.get(&(mode, den))) else {
                continue;
            };
            let p = format!("{prefix}.c{conc}.{}", mode.name());
            let ratio = |f: fn(&Sample) -> f64| -> Vec<f64> {
                a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect()
            };
            let bname = |metric: &str| format!("{p}.{}.{metric}", den.name());
            out.extend(
                Res::of_samples(
                    format!("{p}.{}/{}.cpu_per_req", num.name(), den.name()),
                    &ratio(|x| x.cpu_us_per_req),
                    "ratio",
                )
                .map(|r| r.baseline(bname("envoy_cpu_per_req"))),
            );
            out.extend(
                Res::of_samples(
                    format!("{p}.{}/{}.p50", num.name(), den.name()),
                    &ratio(|x| x.p50_us),
                    "ratio",
                )
                .map(|r| r.baseline(bname("p50"))),
            );
            out.extend(
                Res::of_samples(
                    format!("{p}.{}/{}.p99", num.name(), den.name()),
                    &ratio(|x| x.p99_us),
                    "ratio",
                )
                .map(|r| r.baseline(bname("p99"))),
            );
            if mode == Mode::Sat {
                out.extend(
                    Res::of_samples(
                        format!("{p}.{}/{}.throughput", num.name(), den.name()),
                        &ratio(|x| x.rps),
                        "ratio",
                    )
                    .map(|r| r.baseline(bname("throughput"))),
                );
            }
        }
    }
}

/// Memory and idle tick CPU of Vigil (steer) against the no-op filter at
/// `n` distinct routes, both Envoys with the same routes and the same traffic.
pub async fn scale(
    setup: &Setup,
    sizes: &[usize],
    idle_secs: f64,
    conc: u32,
    out: &mut Vec<Res>,
) -> Result<()> {
    let stable = FastUpstream::start("stable").await?;
    let canary = FastUpstream::start("canary").await?;
    let ports = (stable.port(), canary.port());
    let mut first: Option<(usize, f64, f64)> = None;
    for &n in sizes {
        eprintln!(
            "bench: scale, {n} series: starting the no-op and the Vigil Envoy with {n} routes"
        );
        let max_series = (n + 16) as u64;
        let noop = start(setup, Variant::Noop, conc, ports, n, Some(max_series)).await?;
        let vigil = start(setup, Variant::Steer, conc, ports, n, Some(max_series)).await?;
        for r in [&noop, &vigil] {
            // Two passes over every route so each series is likely seen on every worker.
            vigil_e2e::load::fixed_requests(
                r.envoy.listener_addr(),
                2 * n,
                16,
                move |i| format!("/r{}/x", i % n),
                Duration::from_secs(300),
            )
            .await?;
        }
        // Let every worker tick: register, merge, score, publish.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let m = vigil.envoy.metrics().await?;
        let series = m.sum("vigil_series", &[]).unwrap_or(f64::NAN);
        let rss_noop = rss_bytes(noop.pid)? as f64;
        let rss_vigil = rss_bytes(vigil.pid)? as f64;
        let heap_noop = tcmalloc_allocated(&noop.envoy).await.unwrap_or(f64::NAN);
        let heap_vigil = tcmalloc_allocated(&vigil.envoy).await.unwrap_or(f64::NAN);
        // Idle: no traffic; what remains is the ticks (every worker merges, the lease holder scores).
        let (a0, b0) = (cpu_sched_ns(noop.pid)?, cpu_sched_ns(vigil.pid)?);
        let t0 = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
        let wall = t0.elapsed().as_secs_f64();
        let (a1, b1) = (cpu_sched_ns(noop.pid)?, cpu_sched_ns(vigil.pid)?);
        let tick_ms = ((b1 - b0) as f64 - (a1 - a0) as f64) / 1e6 / wall; // ms per 1 s tick period
        let p = format!("scale.{n}");
        let per_worker = (rss_vigil - rss_noop) / f64::from(conc);
        // The wasm VMs' share: the RSS delta less Envoy's own heap delta
        // (its stats for the series' counters and gauges, shared data).
        let wasm_per_worker = (rss_vigil - rss_noop - (heap_vigil - heap_noop)) / f64::from(conc);
        match first {
            None => first = Some((n, per_worker, wasm_per_worker)),
            Some((n0, w0, v0)) if n > n0 => {
                out.push(
                    Res::new(
                        format!("{p}.envoy.rss_per_series_per_worker"),
                        (per_worker - w0) / (n - n0) as f64,
                        "bytes",
                    )
                    .note(format!(
                        "marginal: (RSS delta per worker at {n} - at {n0}) / {} series; includes Envoy's own heap (stats, shared data)",
                        n - n0
                    )),
                );
                out.push(
                    Res::new(
                        format!("{p}.envoy.wasm_rss_per_series_per_worker"),
                        (wasm_per_worker - v0) / (n - n0) as f64,
                        "bytes",
                    )
                    .note(format!(
                        "marginal, wasm VMs only: ((RSS delta - Envoy heap delta) per worker at {n} - at {n0}) / {} series",
                        n - n0
                    )),
                );
            }
            Some(_) => {}
        }
        out.push(
            Res::new(format!("{p}.envoy.rss_delta_per_worker"), (rss_vigil - rss_noop) / f64::from(conc), "bytes")
                .baseline(format!("{p}.envoy.noop_rss"))
                .note(format!("RSS(Vigil) - RSS(no-op), same {n} routes and traffic, / {conc} workers; Envoy 1.40 has no per-VM wasm memory stat; series registered: {series}")),
        );
        out.push(Res::new(format!("{p}.envoy.noop_rss"), rss_noop, "bytes"));
        out.push(
            Res::new(format!("{p}.envoy.heap_delta"), heap_vigil - heap_noop, "bytes")
                .note("Envoy's own heap (tcmalloc allocated: stats, shared data), Vigil - no-op; the rest of the RSS delta is the V8 wasm VMs"),
        );
        out.push(
            Res::new(format!("{p}.envoy.idle_tick_cpu_per_period"), tick_ms, "ms")
                .note(format!("all {conc} workers' ticks incl. the lease holder's scoring pass, Vigil - no-op Envoy CPU over {idle_secs:.0} s idle, per 1 s tick")),
        );
        drop(vigil);
        drop(noop);
    }
    Ok(())
}

async fn tcmalloc_allocated(envoy: &Envoy) -> Result<f64> {
    let r = envoy.admin_get("/memory").await?;
    let v: Value = serde_json::from_slice(&r.body)?;
    Ok(v.get("allocated")
        .and_then(Value::as_str)
        .ok_or("no allocated")?
        .parse()?)
}

/// Writes the wrapper that pins Envoy to `cpus` and records its pid, and
/// points the harness at it (ENVOY_BIN). Returns the wrapper's path.
pub fn pin_wrapper(dir: &Path, cpus: &str) -> Result<PathBuf> {
    let real = vigil_e2e::envoy::envoy_binary()?;
    let path = dir.join("envoy-pinned.sh");
    let pin = if cpus.is_empty() {
        String::new()
    } else {
        format!("taskset -c {cpus} ")
    };
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# Written by vigil-bench: pins Envoy, records its pid (exec keeps it).\necho $$ > envoy.pid\nexec {pin}'{}' \"$@\"\n",
            real.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Median of a column, for goals.
pub fn med(v: &[f64]) -> f64 {
    median(v).unwrap_or(f64::NAN)
}
