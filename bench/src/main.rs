//! `vigil-bench`: what Vigil costs, measured against the floor. Run through
//! `make bench` (scripts/bench.sh builds the modules, pins the processes and
//! passes the scorer and control-service figures in). See bench/README.md.
//!
//! Sections (all by default; `--only a,b` to pick): `dataplane` (real Envoy,
//! five variants interleaved: none, no-op, shadow, steer, steer with edges), `scale` (real Envoy, memory and idle tick CPU at
//! N series), `pii` (real Envoy, the PII guard off / detect / redact against the
//! no-op filter for 1 KB, 16 KB and 256 KB prompts), `streaming` (real Envoy,
//! steer CPU per request on a streaming route beside a unary one against the
//! no-op filter), `host` (shared-data bytes and tick duration from the filter's
//! core), `hostcalls` (hostcalls per request, counted), `profile` (real Envoy at saturation: no-op, no-op making Vigil's hostcalls, steer: hostcalls vs own code), `ticks` (real Envoy, one worker: request latency during the lease holder's ticks at 1 000 and 10 000 series against the no-op filter, and the holder's idle tick CPU), `scorer`, `wasm`, `control` (folded in from files).

mod dataplane;
mod host;
mod hostcalls;
mod load;
mod pii;
mod profile;
mod report;
mod streaming;
mod ticks;

use std::path::PathBuf;

use serde_json::Value;
use vigil_e2e::{repo_root, Result};

use dataplane::{DpConfig, Setup};
use report::Res;

struct Args {
    only: Vec<String>,
    out: PathBuf,
    noop_wasm: PathBuf,
    vigil_wasm: PathBuf,
    scorer_json: Option<PathBuf>,
    control_json: Option<PathBuf>,
    control_note: String,
    envoy_cpus: String,
    dp: DpConfig,
    sizes: Vec<usize>,
    host_ticks: usize,
    idle_secs: f64,
    machine: String,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn parse_args() -> Result<Args> {
    let root = repo_root();
    let mut a = Args {
        only: Vec::new(),
        out: root.join("target/bench/results.json"),
        noop_wasm: root.join("target/bench/noop_filter.wasm"),
        vigil_wasm: root.join("dist/vigil_filter.wasm"),
        scorer_json: None,
        control_json: None,
        control_note: "not available yet: no `vigil-control bench` command".into(),
        envoy_cpus: std::env::var("VIGIL_BENCH_ENVOY_CPUS").unwrap_or_else(|_| "0".into()),
        dp: DpConfig {
            rounds: env_or("VIGIL_BENCH_ROUNDS", 5),
            secs: env_or("VIGIL_BENCH_SECS", 3.0),
            rate: env_or("VIGIL_BENCH_RATE", 1000.0),
            conns: env_or("VIGIL_BENCH_CONNS", 16),
            concurrencies: vec![1, 2],
        },
        sizes: vec![1, 100, 1000, 10_000],
        host_ticks: env_or("VIGIL_BENCH_HOST_TICKS", 10),
        idle_secs: env_or("VIGIL_BENCH_IDLE_SECS", 5.0),
        machine: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--only" => a.only = val()?.split(',').map(str::to_string).collect(),
            "--out" => a.out = val()?.into(),
            "--noop-wasm" => a.noop_wasm = val()?.into(),
            "--vigil-wasm" => a.vigil_wasm = val()?.into(),
            "--scorer-json" => a.scorer_json = Some(val()?.into()),
            "--control-json" => a.control_json = Some(val()?.into()),
            "--control-note" => a.control_note = val()?,
            "--sizes" => {
                a.sizes = val()?
                    .split(',')
                    .map(|s| s.parse::<usize>())
                    .collect::<std::result::Result<_, _>>()?
            }
            "--concurrency" => {
                a.dp.concurrencies = val()?
                    .split(',')
                    .map(|s| s.parse::<u32>())
                    .collect::<std::result::Result<_, _>>()?
            }
            "--machine" => a.machine = val()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn wanted(a: &Args, section: &str) -> bool {
    a.only.is_empty() || a.only.iter().any(|s| s == section)
}

fn fold_scorer(path: &PathBuf, out: &mut Vec<Res>) -> Result<()> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    // Either one run ({ticks, pairs, results}) or several ({scales: [{series, ...}]}).
    let scales: Vec<&Value> = match v.get("scales").and_then(Value::as_array) {
        Some(s) => s.iter().collect(),
        None => vec![&v],
    };
    let mut largest: Option<(u64, f64, f64)> = None;
    for sc in scales {
        let results = sc
            .get("results")
            .and_then(Value::as_array)
            .ok_or("scorer json: no results")?;
        let series = sc
            .get("series")
            .and_then(Value::as_u64)
            .or_else(|| sc.get("pairs").and_then(Value::as_u64).map(|p| 2 * p))
            .unwrap_or(0);
        let mut baseline = None;
        let mut full = None;
        for r in results {
            let (Some(name), Some(ns)) = (
                r.get("name").and_then(Value::as_str),
                r.get("ns_per_series_tick").and_then(Value::as_f64),
            ) else {
                continue;
            };
            let slug = if name.starts_with("baseline") {
                baseline = Some(ns);
                "baseline_histogram_merge"
            } else if name.starts_with("observe + score") {
                full = Some(ns);
                "observe_and_score"
            } else if name.starts_with("observe") {
                "observe"
            } else {
                continue;
            };
            out.push(
                Res::new(format!("scorer.{series}.{slug}"), ns, "ns/series")
                    .note(format!("{name}, {series} series")),
            );
        }
        if let Some(b) = sc.get("bytes_per_series").and_then(Value::as_f64) {
            out.push(Res::new(
                format!("scorer.{series}.state_bytes_per_series"),
                b,
                "bytes",
            ));
        }
        if let (Some(b), Some(f)) = (baseline, full) {
            out.push(
                Res::new(
                    format!("scorer.{series}.observe_and_score/baseline"),
                    f / b,
                    "ratio",
                )
                .baseline(format!("scorer.{series}.baseline_histogram_merge")),
            );
            if largest.is_none_or(|(s, _, _)| series >= s) {
                largest = Some((series, f, b));
            }
        }
    }
    if let Some((series, f, _)) = largest {
        out.push(
            Res::new("scorer.observe_and_score", f, "ns/series")
                .note(format!("at the largest scale measured, {series} series")),
        );
    }
    Ok(())
}

fn fold_control(a: &Args, out: &mut Vec<Res>) {
    let parsed = a
        .control_json
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let mut found = false;
    if let Some(v) = parsed {
        // Accept either our own shape (an array of {name, value, unit}) or any
        // object whose numeric leaves become `control.<path>`.
        let mut leaves = Vec::new();
        flatten("control", &v, &mut leaves);
        for (name, value, unit) in leaves {
            out.push(Res::new(name, value, &unit).note("from `vigil-control bench --json`"));
            found = true;
        }
    }
    if !found {
        for (name, unit) in [
            ("control.ingest.series_updates_per_s", "series-updates/s"),
            ("control.routing_idle.p99_us", "µs"),
            ("control.routing_under_ingest.p50_us", "µs"),
            ("control.routing_under_ingest.p99_us", "µs"),
        ] {
            out.push(Res::unavailable(name, unit, &a.control_note));
        }
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, f64, String)>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let (Some(n), Some(x)) = (
                    item.get("name").and_then(Value::as_str),
                    item.get("value").and_then(Value::as_f64),
                ) {
                    let unit = item
                        .get("unit")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    out.push((format!("{prefix}.{n}"), x, unit));
                } else {
                    flatten(&format!("{prefix}.{i}"), item, out);
                }
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                flatten(&format!("{prefix}.{k}"), x, out);
            }
        }
        Value::Number(n) => {
            let unit = if prefix.ends_with("_per_s") {
                "/s"
            } else if prefix.ends_with("_us") {
                "µs"
            } else if prefix.ends_with("bytes") {
                "bytes"
            } else {
                ""
            };
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x, unit.to_string()));
            }
        }
        _ => {}
    }
}

fn find<'a>(results: &'a [Res], name: &str) -> Option<&'a Res> {
    results.iter().find(|r| r.name == name)
}

fn goals(a: &Args, results: &[Res]) -> Vec<Res> {
    let mut g = Vec::new();
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    // PII guard (issue 16): detect CPU per 16 KB request <= 1.5x the no-op filter.
    if let Some(v) = find(results, "pii.16384.detect/noop.cpu_per_req").and_then(|r| r.value) {
        g.push(
            Res::new("goal.pii_detect_16k_cpu_vs_noop", v, "ratio")
                .note(format!("{}: goal <= 1.5", verdict(v <= 1.5))),
        );
    }
    // 1. steer CPU per request <= 1.10x the no-op filter, in every condition measured.
    let mut worst: Option<(f64, String)> = None;
    let mut parts = Vec::new();
    for c in &a.dp.concurrencies {
        for m in ["open", "sat"] {
            let name = format!("dataplane.c{c}.{m}.steer/noop.cpu_per_req");
            if let Some(r) = find(results, &name) {
                let Some(v) = r.value else { continue };
                match r.spread {
                    Some((lo, hi)) => parts.push(format!("c{c} {m} {v:.3} [{lo:.2}..{hi:.2}]")),
                    None => parts.push(format!("c{c} {m} {v:.3}")),
                }
                if worst.as_ref().is_none_or(|(w, _)| v > *w) {
                    worst = Some((v, name));
                }
            }
        }
    }
    g.push(match worst {
        Some((v, n)) => Res::new("goal.steer_cpu_per_req_vs_noop", v, "ratio")
            .baseline("noop wasm filter")
            .note({
                let straddles = find(results, &n)
                    .and_then(|r| r.spread)
                    .is_some_and(|(lo, hi)| lo <= 1.10 && hi > 1.10);
                format!(
                    "{}: goal <= 1.10 on the median of every condition (worst {n}{}; all, median [min..max]: {})",
                    verdict(v <= 1.10),
                    if straddles { ", whose spread straddles 1.10: noisy run" } else { "" },
                    parts.join(", ")
                )
            }),
        None => Res::unavailable(
            "goal.steer_cpu_per_req_vs_noop",
            "ratio",
            "data plane not measured",
        ),
    });
    // 2. shared data per series <= 2 KiB (at the largest size).
    let big = a.sizes.iter().max().copied().unwrap_or(0);
    g.push(
        match find(results, &format!("host.{big}.shared_bytes_per_series")).and_then(|r| r.value) {
            Some(v) => Res::new("goal.shared_bytes_per_series", v, "bytes").note(format!(
                "{}: goal <= 2048 at {big} series",
                verdict(v <= 2048.0)
            )),
            None => Res::unavailable(
                "goal.shared_bytes_per_series",
                "bytes",
                "host scale not measured",
            ),
        },
    );
    // 3. lease-holder tick <= 10 ms at 10 000 series.
    g.push(match find(results, "host.10000.lease_tick") {
        Some(r) => {
            let v = r.value.unwrap_or(f64::NAN);
            let max = r.spread.map(|s| s.1).unwrap_or(v);
            Res::new("goal.lease_tick_at_10000_series", v, "ms")
                .note(format!("{}: goal <= 10 ms (median; max {max:.2} ms; host, 16 requests per series per worker per tick)", verdict(v <= 10.0)))
        }
        None => Res::unavailable("goal.lease_tick_at_10000_series", "ms", "host scale at 10000 not measured"),
    });
    // 4. scorer <= 1 µs per series.
    g.push(
        match find(results, "scorer.observe_and_score").and_then(|r| r.value) {
            Some(v) => Res::new("goal.scorer_ns_per_series", v, "ns")
                .note(format!("{}: goal <= 1000 ns", verdict(v <= 1000.0))),
            None => Res::unavailable("goal.scorer_ns_per_series", "ns", "scorer bench not run"),
        },
    );
    // 5. ingest >= 1 000 000 managed series-updates/s.
    let ingest = find(results, "control.ingest.series_updates_per_s")
        .filter(|r| r.value.is_some())
        .or_else(|| {
            results.iter().find(|r| {
                r.name.starts_with("control.")
                    && !r.name.contains("goal")
                    && r.name.contains("series_updates")
                    && r.value.is_some()
            })
        });
    g.push(match ingest.and_then(|r| r.value) {
        Some(v) => Res::new(
            "goal.control_ingest_series_updates_per_s",
            v,
            "series-updates/s",
        )
        .note(format!(
            "{}: goal >= 1000000 (managed series, the service's own count)",
            verdict(v >= 1_000_000.0)
        )),
        None => Res::unavailable(
            "goal.control_ingest_series_updates_per_s",
            "series-updates/s",
            &format!("NOT MEASURED: {}", a.control_note),
        ),
    });
    g
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("vigil-bench: error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let a = parse_args()?;
    let dir = a
        .out
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/bench"));
    std::fs::create_dir_all(&dir)?;
    let started = std::time::Instant::now();
    let mut results: Vec<Res> = Vec::new();
    let mut errors: Vec<String> = Vec::new();

    if wanted(&a, "hostcalls") {
        if let Err(e) = hostcalls::run(&mut results) {
            errors.push(format!("hostcalls: {e}"));
        }
    }
    if wanted(&a, "host") {
        if let Err(e) = host::run(
            &a.sizes,
            a.host_ticks,
            env_or("VIGIL_BENCH_HOST_REQS", 16),
            &mut results,
        ) {
            errors.push(format!("host: {e}"));
        }
        host::worst_delta(&mut results);
    }
    if wanted(&a, "dataplane")
        || wanted(&a, "profile")
        || wanted(&a, "scale")
        || wanted(&a, "pii")
        || wanted(&a, "streaming")
        || wanted(&a, "ticks")
    {
        let wrapper = dataplane::pin_wrapper(&dir, &a.envoy_cpus)?;
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("ENVOY_BIN", &wrapper);
        std::env::set_var("VIGIL_WASM", &a.vigil_wasm);
        if !a.noop_wasm.is_file() {
            return Err(format!(
                "{} missing: build bench/noop-filter (scripts/bench.sh does)",
                a.noop_wasm.display()
            )
            .into());
        }
        let setup = Setup {
            noop_wasm: a.noop_wasm.clone(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            if wanted(&a, "dataplane") {
                if let Err(e) = dataplane::run(&setup, &a.dp, &mut results).await {
                    errors.push(format!("dataplane: {e}"));
                }
            }
            if wanted(&a, "profile") {
                if let Err(e) = profile::run(&setup, &a.dp, &mut results).await {
                    errors.push(format!("profile: {e}"));
                }
            }
            if wanted(&a, "streaming") {
                if let Err(e) = streaming::run(&setup, &a.dp, &mut results).await {
                    errors.push(format!("streaming: {e}"));
                }
            }
            if wanted(&a, "pii") {
                let rounds = env_or("VIGIL_BENCH_PII_ROUNDS", 3);
                if let Err(e) = pii::run(&setup, rounds, a.dp.secs, a.dp.conns, &mut results).await
                {
                    errors.push(format!("pii: {e}"));
                }
            }
            if wanted(&a, "ticks") {
                let sizes: Vec<usize> = a.sizes.iter().copied().filter(|&n| n >= 1000).collect();
                if let Err(e) = ticks::run(
                    &setup,
                    &sizes,
                    env_or("VIGIL_BENCH_TICK_ROUNDS", 3),
                    env_or("VIGIL_BENCH_TICK_SECS", 6.0),
                    a.dp.rate,
                    a.idle_secs,
                    &mut results,
                )
                .await
                {
                    errors.push(format!("ticks: {e}"));
                }
            }
            if wanted(&a, "scale") {
                if let Err(e) =
                    dataplane::scale(&setup, &a.sizes, a.idle_secs, 2, &mut results).await
                {
                    errors.push(format!("scale: {e}"));
                }
            }
        });
    }
    if wanted(&a, "scorer") {
        match &a.scorer_json {
            Some(p) => {
                if let Err(e) = fold_scorer(p, &mut results) {
                    errors.push(format!("scorer: {e}"));
                }
            }
            None => results.push(Res::unavailable(
                "scorer.observe_and_score",
                "ns/series",
                "no --scorer-json given",
            )),
        }
    }
    if wanted(&a, "wasm") {
        let v = std::fs::metadata(&a.vigil_wasm)
            .map(|m| m.len() as f64)
            .ok();
        let n = std::fs::metadata(&a.noop_wasm).map(|m| m.len() as f64).ok();
        if let Some(v) = v {
            results.push(
                Res::new("wasm.vigil_filter_size", v, "bytes").note("dist/vigil_filter.wasm"),
            );
        }
        if let Some(n) = n {
            results.push(
                Res::new("wasm.noop_filter_size", n, "bytes").note("same SDK, profile and target"),
            );
        }
        if let (Some(v), Some(n)) = (v, n) {
            results.push(
                Res::new("wasm.vigil/noop.size", v / n, "ratio").baseline("wasm.noop_filter_size"),
            );
        }
    }
    if wanted(&a, "control") {
        fold_control(&a, &mut results);
    }
    let g = goals(&a, &results);
    results.extend(g);
    for e in &errors {
        results.push(Res::unavailable("error", "", e));
    }

    let json = Value::Array(results.iter().map(Res::to_json).collect());
    std::fs::write(&a.out, serde_json::to_string_pretty(&json)? + "\n")?;
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "vigil-bench {date} — {} — Envoy pinned to CPU {}, load generator and upstreams to the other core; {} rounds x {} s, open loop {} req/s, closed loop {} connections",
        a.machine, a.envoy_cpus, a.dp.rounds, a.dp.secs, a.dp.rate, a.dp.conns
    );
    print!("{}", report::table(&results));
    println!(
        "wrote {} ({} results) in {:.0} s",
        a.out.display(),
        results.len(),
        started.elapsed().as_secs_f64()
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{} section(s) failed: {}", errors.len(), errors.join("; ")).into())
    }
}
