//! `vigil-model`: host tooling around the scorer — simulate, train, eval,
//! score, bench.
//!
//! Why this exists: the scorer's quality has to be measured, not asserted.
//! This binary generates labelled traffic, fits the model's thresholds,
//! compares Vigil with faithful re-implementations of the incumbents on
//! held-out seeds, replays real CSV series and times the scorer. It is host
//! code (files, clocks, stdout); the library it drives stays free of them.
//!
//! Exit codes: 0 success; 1 `eval --check` found a must-show check failing;
//! 2 bad usage or bad input (the message names the row and column).

mod bench;
mod corpus;
mod csv;
mod detectors;
mod determinism;
mod eval;
mod score;
mod sim;
mod train;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use vigil_scorer::model::Model;

const USAGE: &str = "\
usage: vigil-model <command> [options]

commands:
  simulate --scenario NAME [--seed N] [--duration-s N] [--format csv|jsonl] [--out PATH]
           labelled per-second series of a canary and its stable (--list for scenarios)
  train    [--seed N] [--runs N] [--input FILE.csv] [--model PATH] [--out PATH]
           fit z_critical / z_warn on simulated (or simulate-CSV) data, write model JSON
  eval     [--seed N] [--runs N] [--fault-run-s N] [--quiet-run-s N] [--model PATH]
           [--scenario NAME]... [--json] [--check]
           Vigil vs Flagger, Envoy outlier detection, Kayenta MWU, 3-sigma z-score
  eval     --corpus DIR [--column NAME]... [--direction both|up|down] [--budget FA_PER_DAY]
           [--grace-rows N] [--half all|tune|held-out] [--model PATH] [--json]
           Vigil's self path on labelled real series (DIR/*.csv: timestamp,value|metrics...,label)
           beside a rolling z-score and an EWMA chart, at matched false-alarm rates
  score    --input FILE.csv --timestamp COL --column NAME=FEATURE... [--requests-per-row N]
           [--model PATH]   one verdict per row (features: requests, errors, error_ratio,
           resets, timeouts, retries, latency_{mean,p50,p95,p99}_ms)
  bench    [--ticks N] [--pairs N] [--json]   ns per series per tick, with a baseline

defaults: eval --seed 1000000 --runs 5 --fault-run-s 3600 --quiet-run-s 18000 (held-out
seeds; train uses --seed 1, disjoint). Exit codes: 0 ok, 1 eval --check failed,
2 bad usage or bad input.
";

/// A failure: message and exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

fn bad(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

impl From<csv::InputError> for Failure {
    fn from(e: csv::InputError) -> Self {
        bad(e.to_string())
    }
}

/// Parsed `--flag value` options (flags without a value get "").
struct Args {
    pairs: Vec<(String, String)>,
}

const SWITCHES: &[&str] = &["--json", "--check", "--list", "--help"];

impl Args {
    fn parse(args: &[String]) -> Result<Args, Failure> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if !a.starts_with("--") {
                return Err(bad(format!("unexpected argument {a:?}\n\n{USAGE}")));
            }
            if SWITCHES.contains(&a.as_str()) {
                pairs.push((a.clone(), String::new()));
            } else {
                let v = it
                    .next()
                    .ok_or_else(|| bad(format!("{a} needs a value\n\n{USAGE}")))?;
                pairs.push((a.clone(), v.clone()));
            }
        }
        Ok(Args { pairs })
    }
    fn check_known(&self, known: &[&str]) -> Result<(), Failure> {
        for (k, _) in &self.pairs {
            if !known.contains(&k.as_str()) && !SWITCHES.contains(&k.as_str()) {
                return Err(bad(format!("unknown option {k}\n\n{USAGE}")));
            }
        }
        Ok(())
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }
    fn num(&self, key: &str, default: u64) -> Result<u64, Failure> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(format!("{key}: expected a non-negative integer, got {v:?}"))),
        }
    }
}

fn read(path: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| bad(format!("{path}: cannot read: {e}")))
}

fn load_model(args: &Args) -> Result<Model, Failure> {
    match args.get("--model") {
        None => Ok(Model::default()),
        Some(path) => Model::from_json(&read(path)?).map_err(|e| bad(format!("{path}: {e}"))),
    }
}

fn write_out(args: &Args, text: &str) -> Result<(), Failure> {
    match args.get("--out") {
        Some(path) => std::fs::write(path, text).map_err(|e| Failure {
            code: 1,
            message: format!("{path}: cannot write: {e}"),
        }),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| Failure {
                    code: 1,
                    message: format!("stdout: {e}"),
                })
        }
    }
}

fn cmd_simulate(args: &Args) -> Result<u8, Failure> {
    args.check_known(&["--scenario", "--seed", "--duration-s", "--format", "--out"])?;
    if args.has("--list") {
        let mut text = String::new();
        for s in sim::SCENARIOS {
            let _ = writeln!(text, "{:<16} {}", s.name, s.about);
        }
        write_out(args, &text)?;
        return Ok(0);
    }
    let name = args
        .get("--scenario")
        .ok_or_else(|| bad(format!("simulate: --scenario is required\n\n{USAGE}")))?;
    let scenario = sim::scenario(name).ok_or_else(|| {
        let names: Vec<&str> = sim::SCENARIOS.iter().map(|s| s.name).collect();
        bad(format!(
            "simulate: unknown scenario {name:?} (scenarios: {})",
            names.join(", ")
        ))
    })?;
    let seed = args.num("--seed", 1)?;
    let duration = args.num("--duration-s", 3600)?;
    let jsonl = match args.get("--format").unwrap_or("csv") {
        "csv" => false,
        "jsonl" => true,
        other => {
            return Err(bad(format!(
                "--format: expected csv or jsonl, got {other:?}"
            )))
        }
    };
    let mut run = sim::Run::new(scenario, seed, duration);
    let mut tick = sim::Tick::default();
    let mut text = String::new();
    const COLS: &[&str] = &[
        "requests",
        "errors",
        "status_4xx",
        "resets",
        "timeouts",
        "overflows",
        "retries",
        "latency_mean_ms",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
    ];
    if !jsonl {
        let mut header = vec!["t".to_string(), "fault".to_string()];
        for side in ["canary", "stable"] {
            header.extend(COLS.iter().map(|c| format!("{side}_{c}")));
        }
        let _ = writeln!(text, "{}", header.join(","));
    }
    while run.next_tick(&mut tick) {
        if jsonl {
            let side = |d: &vigil_scorer::window::TickDelta| {
                let c = &d.counters;
                serde_json::json!({
                    "requests": c.requests, "errors": c.errors, "status_4xx": c.status_4xx,
                    "resets": c.resets, "timeouts": c.timeouts, "overflows": c.overflows,
                    "retries": c.retries, "latency_sum_us": c.latency_sum_us,
                    "latency_buckets": d.latency,
                })
            };
            let line = serde_json::json!({
                "t": tick.t, "scenario": scenario.name, "seed": seed, "fault": tick.fault,
                "canary": side(&tick.canary), "stable": side(&tick.stable),
            });
            let _ = writeln!(text, "{line}");
        } else {
            let _ = write!(text, "{},{}", tick.t, u8::from(tick.fault));
            for d in [&tick.canary, &tick.stable] {
                let c = &d.counters;
                let mut h = vigil_scorer::histogram::LatencyHistogram::new();
                h.merge_sparse(&d.latency);
                let q = |q: f64| h.quantile_us(q).map_or(0.0, |us| us / 1000.0);
                let mean = if c.requests > 0 {
                    c.latency_sum_us as f64 / c.requests as f64 / 1000.0
                } else {
                    0.0
                };
                let _ = write!(
                    text,
                    ",{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3}",
                    c.requests,
                    c.errors,
                    c.status_4xx,
                    c.resets,
                    c.timeouts,
                    c.overflows,
                    c.retries,
                    mean,
                    q(0.5),
                    q(0.95),
                    q(0.99)
                );
            }
            text.push('\n');
        }
    }
    write_out(args, &text)?;
    Ok(0)
}

fn cmd_eval_corpus(args: &Args, dir: &str) -> Result<u8, Failure> {
    args.check_known(&[
        "--corpus",
        "--column",
        "--direction",
        "--budget",
        "--grace-rows",
        "--half",
        "--model",
        "--out",
    ])?;
    let half = match args.get("--half").unwrap_or("all") {
        "all" => corpus::Half::All,
        "tune" => corpus::Half::Tune,
        "held-out" => corpus::Half::HeldOut,
        other => {
            return Err(bad(format!(
                "--half: expected all, tune or held-out, got {other:?}"
            )))
        }
    };
    let direction = match args.get("--direction").unwrap_or("both") {
        "both" => vigil_scorer::selfbase::Direction::Both,
        "up" => vigil_scorer::selfbase::Direction::Up,
        "down" => vigil_scorer::selfbase::Direction::Down,
        other => {
            return Err(bad(format!(
                "--direction: expected both, up or down, got {other:?}"
            )))
        }
    };
    let budget = match args.get("--budget") {
        None => 0.3,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|b| b.is_finite() && *b >= 0.0)
            .ok_or_else(|| {
                bad(format!(
                    "--budget: expected a non-negative number, got {v:?}"
                ))
            })?,
    };
    let cfg = corpus::CorpusConfig {
        dir: dir.to_string(),
        columns: args.all("--column").iter().map(|c| c.to_string()).collect(),
        direction,
        budget,
        grace_rows: args.num("--grace-rows", 0)? as usize,
        half,
        model: load_model(args)?,
    };
    let (json, table) = corpus::evaluate(&cfg).map_err(bad)?;
    let text = if args.has("--json") {
        let mut s = serde_json::to_string_pretty(&json).unwrap_or_default();
        s.push('\n');
        s
    } else {
        table
    };
    write_out(args, &text)?;
    Ok(0)
}

fn cmd_eval(args: &Args) -> Result<u8, Failure> {
    if let Some(dir) = args.get("--corpus") {
        return cmd_eval_corpus(args, dir);
    }
    args.check_known(&[
        "--seed",
        "--runs",
        "--fault-run-s",
        "--quiet-run-s",
        "--model",
        "--scenario",
        "--detector",
        "--out",
    ])?;
    let mut scenarios = Vec::new();
    for name in args.all("--scenario") {
        scenarios.push(
            sim::scenario(name).ok_or_else(|| bad(format!("eval: unknown scenario {name:?}")))?,
        );
    }
    if scenarios.is_empty() {
        scenarios = sim::SCENARIOS.iter().collect();
    }
    let mut dets: Vec<&'static str> = Vec::new();
    for name in args.all("--detector") {
        dets.push(
            detectors::DETECTORS
                .iter()
                .find(|d| **d == name)
                .copied()
                .ok_or_else(|| bad(format!("eval: unknown detector {name:?}")))?,
        );
    }
    if dets.is_empty() {
        dets = detectors::DETECTORS.to_vec();
    }
    let config = eval::EvalConfig {
        seed: args.num("--seed", 1_000_000)?,
        runs: args.num("--runs", 5)?.max(1),
        fault_run_s: args.num("--fault-run-s", 3600)?.max(60),
        quiet_run_s: args.num("--quiet-run-s", 18_000)?.max(60),
        model: load_model(args)?,
        scenarios,
        detectors: dets,
    };
    let report = eval::evaluate(&config);
    let text = if args.has("--json") {
        let mut s = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
        s.push('\n');
        s
    } else {
        report.to_table()
    };
    write_out(args, &text)?;
    if args.has("--check") && report.checks().iter().any(|(_, _, pass)| !pass) {
        return Ok(1);
    }
    Ok(0)
}

fn cmd_train(args: &Args) -> Result<u8, Failure> {
    args.check_known(&[
        "--seed",
        "--runs",
        "--input",
        "--model",
        "--out",
        "--fault-run-s",
        "--quiet-run-s",
    ])?;
    let base = load_model(args)?;
    let runs = match args.get("--input") {
        Some(path) => {
            let text = read(path)?;
            let table = csv::Table::parse(path, &text, "t")?;
            vec![train::read_training_csv(&table)?]
        }
        None => train::simulate_training(
            args.num("--seed", 1)?,
            args.num("--runs", 2)?.max(1),
            args.num("--fault-run-s", 3600)?.max(60),
            args.num("--quiet-run-s", 14_400)?.max(60),
        ),
    };
    let trained = train::train(&runs, &base);
    for line in &trained.grid {
        eprintln!("train: {line}");
    }
    let mut text = serde_json::to_string_pretty(&trained.model).unwrap_or_default();
    text.push('\n');
    write_out(args, &text)?;
    Ok(0)
}

fn cmd_score(args: &Args) -> Result<u8, Failure> {
    args.check_known(&[
        "--input",
        "--timestamp",
        "--column",
        "--requests-per-row",
        "--model",
        "--out",
    ])?;
    let path = args
        .get("--input")
        .ok_or_else(|| bad(format!("score: --input is required\n\n{USAGE}")))?;
    let ts_name = args
        .get("--timestamp")
        .ok_or_else(|| bad(format!("score: --timestamp is required\n\n{USAGE}")))?;
    let mut pairs = Vec::new();
    for spec in args.all("--column") {
        let (name, feature) = spec
            .split_once('=')
            .ok_or_else(|| bad(format!("--column {spec}: expected NAME=FEATURE")))?;
        pairs.push((name.to_string(), feature.to_string()));
    }
    if pairs.is_empty() {
        return Err(bad(format!(
            "score: at least one --column NAME=FEATURE is required\n\n{USAGE}"
        )));
    }
    let model = load_model(args)?;
    let default_requests = args.num("--requests-per-row", 100)?;
    let text = read(path)?;
    let table = csv::Table::parse(path, &text, ts_name)?;
    let ts = table.column(ts_name)?;
    let mapping = score::Mapping::resolve(&table, &pairs).map_err(bad)??;
    let rows = score::score_table(&table, ts, &mapping, default_requests, &model)?;
    let mut out = String::from("timestamp,score,state,reason\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},\"{}\"",
            r.t,
            r.score,
            r.state,
            r.reason.replace('"', "'")
        );
    }
    write_out(args, &out)?;
    Ok(0)
}

fn cmd_bench(args: &Args) -> Result<u8, Failure> {
    args.check_known(&["--ticks", "--pairs", "--model", "--out"])?;
    let ticks = args.num("--ticks", 20_000)? as usize;
    let model = load_model(args)?;
    if !args.has("--pairs") {
        // Scale sweep: 1, 100, 1000 and 10 000 series.
        let runs = bench::sweep(ticks, &model);
        let text = if args.has("--json") {
            let all: Vec<serde_json::Value> = runs
                .iter()
                .map(|(series, t, m)| {
                    let mut v = bench::to_json(m, *t, series.div_ceil(2));
                    if let Some(o) = v.as_object_mut() {
                        o.insert("series".into(), serde_json::json!(series));
                    }
                    v
                })
                .collect();
            format!("{}\n", serde_json::json!({ "scales": all }))
        } else {
            runs.iter()
                .map(|(series, t, m)| {
                    format!(
                        "--- {series} series\n{}",
                        bench::table(m, *t, series.div_ceil(2))
                    )
                })
                .collect::<String>()
        };
        write_out(args, &text)?;
        return Ok(0);
    }
    let pairs = args.num("--pairs", 50)? as usize;
    let m = bench::run(ticks, pairs, &model);
    let text = if args.has("--json") {
        format!("{}\n", bench::to_json(&m, ticks, pairs))
    } else {
        bench::table(&m, ticks, pairs)
    };
    write_out(args, &text)?;
    Ok(0)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = Args::parse(rest).and_then(|args| {
        if args.has("--help") {
            print!("{USAGE}");
            return Ok(0);
        }
        match cmd.as_str() {
            "simulate" => cmd_simulate(&args),
            "train" => cmd_train(&args),
            "eval" => cmd_eval(&args),
            "score" => cmd_score(&args),
            "bench" => cmd_bench(&args),
            "help" | "--help" | "-h" => {
                print!("{USAGE}");
                Ok(0)
            }
            other => Err(bad(format!("unknown command {other:?}\n\n{USAGE}"))),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("vigil-model: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
