//! End-to-end tests of the `vigil-model` binary: the real executable, run
//! the way an operator or CI runs it.
//!
//! Why this exists: the contracts are about the tool's behaviour
//! from outside — `eval --json` is byte-identical for a seed, bad input to
//! `score` / `train` names the row and column and exits with code 2 — so
//! they are tested on the built binary, with small simulated durations to
//! keep the suite fast in debug builds.

// Test helpers outside `#[test]` functions: failing loudly is the point.
#![allow(clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil-model"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run vigil-model")
}

fn tmp(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-model-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SMALL_EVAL: &[&str] = &[
    "eval",
    "--json",
    "--seed",
    "42",
    "--runs",
    "1",
    "--fault-run-s",
    "240",
    "--quiet-run-s",
    "300",
];

#[test]
fn eval_json_is_deterministic_for_a_seed() {
    let a = run(SMALL_EVAL);
    let b = run(SMALL_EVAL);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout, "eval --json differs between two runs");
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).expect("json");
    let detectors = v["detectors"].as_array().expect("detectors");
    let names: Vec<&str> = detectors
        .iter()
        .map(|d| d["detector"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "vigil",
            "flagger",
            "envoy_outlier",
            "kayenta_mwu",
            "zscore_3sigma"
        ]
    );
    // Every detector × scenario carries the reported fields.
    for d in detectors {
        for s in d["scenarios"].as_array().expect("scenarios") {
            for key in [
                "detected",
                "median_time_to_detect_s",
                "false_alarms_per_hour",
                "precision",
                "recall",
                "f1",
            ] {
                assert!(s.get(key).is_some(), "{key} missing in {s}");
            }
        }
    }
    // Another seed gives other data (the seed is really used).
    let mut other: Vec<&str> = SMALL_EVAL.to_vec();
    other[3] = "43";
    let c = run(&other);
    assert_ne!(a.stdout, c.stdout);
}

#[test]
fn eval_table_lists_every_scenario_and_the_checks() {
    let o = run(&[
        "eval",
        "--runs",
        "1",
        "--fault-run-s",
        "240",
        "--quiet-run-s",
        "120",
        "--detector",
        "vigil",
        "--detector",
        "flagger",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for name in [
        "latency_step",
        "masked_retries",
        "weight_1pct",
        "aa",
        "low_traffic",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(text.contains("checks (Vigil):"), "{text}");
}

#[test]
fn simulate_then_score_and_train_round_trip() {
    let o = run(&[
        "simulate",
        "--scenario",
        "latency_step",
        "--seed",
        "3",
        "--duration-s",
        "400",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(csv.lines().count(), 401);
    assert!(csv.starts_with("t,fault,canary_requests,"));
    let path = tmp("sim.csv", &csv);
    let p = path.to_str().expect("utf-8 path");

    let o = run(&[
        "score",
        "--input",
        p,
        "--timestamp",
        "t",
        "--column",
        "canary_requests=requests",
        "--column",
        "canary_errors=errors",
        "--column",
        "canary_latency_p95_ms=latency_p95_ms",
        "--column",
        "canary_latency_p50_ms=latency_p50_ms",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 401, "one verdict per row plus header");
    assert!(out.starts_with("timestamp,score,state,reason\n"));
    // The +200 ms step is in this run: the canary's own baseline sees it.
    assert!(out.contains(",critical,"), "{out}");

    let o = run(&["train", "--input", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = String::from_utf8_lossy(&o.stdout);
    vigil_scorer::model::Model::from_json(&model).expect("train writes a valid model");

    let o = run(&[
        "simulate",
        "--scenario",
        "aa",
        "--duration-s",
        "3",
        "--format",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 3);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(v["canary"]["latency_buckets"].is_array());
    }
}

#[test]
fn simulated_training_is_deterministic() {
    let args = [
        "train",
        "--seed",
        "5",
        "--runs",
        "1",
        "--fault-run-s",
        "200",
        "--quiet-run-s",
        "200",
    ];
    let a = run(&args);
    let b = run(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout);
    vigil_scorer::model::Model::from_json(&String::from_utf8_lossy(&a.stdout)).expect("model");
}

/// Runs `score` and `train` on `contents`; both must exit 2 naming the row
/// and column.
fn assert_bad_input(name: &str, contents: &str, row: usize, column: &str) {
    let path = tmp(name, contents);
    let p = path.to_str().expect("utf-8 path");
    let score = run(&[
        "score",
        "--input",
        p,
        "--timestamp",
        "t",
        "--column",
        "canary_latency_p95_ms=latency_p95_ms",
    ]);
    let train = run(&["train", "--input", p]);
    for (what, o) in [("score", score), ("train", train)] {
        assert_eq!(o.status.code(), Some(2), "{what} {name}: {}", stderr(&o));
        let err = stderr(&o);
        let expected = format!("row {row}, column \"{column}\"");
        assert!(
            err.contains(&expected),
            "{what} {name}: {err:?} lacks {expected:?}"
        );
        assert!(o.stdout.is_empty(), "{what} {name}: wrote output");
    }
}

const HEADER: &str = "t,fault,canary_requests,canary_errors,canary_resets,canary_timeouts,canary_retries,canary_latency_p50_ms,canary_latency_p95_ms,canary_latency_p99_ms,stable_requests,stable_errors,stable_resets,stable_timeouts,stable_retries,stable_latency_p50_ms,stable_latency_p95_ms,stable_latency_p99_ms";

fn row(t: &str, p95: &str) -> String {
    format!("{t},0,20,0,0,0,0,40,{p95},130,80,0,0,0,0,40,90,130")
}

#[test]
fn empty_file_is_rejected_with_row_and_column() {
    assert_bad_input("empty.csv", "", 1, "t");
}

#[test]
fn header_without_rows_is_rejected() {
    assert_bad_input("header.csv", &format!("{HEADER}\n"), 2, "t");
}

#[test]
fn nan_is_rejected_with_row_and_column() {
    let text = format!(
        "{HEADER}\n{}\n{}\n{}\n",
        row("1", "90"),
        row("2", "NaN"),
        row("3", "90")
    );
    assert_bad_input("nan.csv", &text, 3, "canary_latency_p95_ms");
}

#[test]
fn timestamps_going_backwards_are_rejected() {
    let text = format!(
        "{HEADER}\n{}\n{}\n{}\n",
        row("1", "90"),
        row("5", "90"),
        row("4", "90")
    );
    assert_bad_input("backwards.csv", &text, 4, "t");
}

#[test]
fn missing_column_is_rejected() {
    // No canary_latency_p95_ms column at all.
    let header = HEADER.replace("canary_latency_p95_ms", "canary_p95");
    let text = format!("{header}\n{}\n", row("1", "90"));
    assert_bad_input("missing.csv", &text, 1, "canary_latency_p95_ms");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["frobnicate"],
        vec!["eval", "--bogus", "1"],
        vec!["simulate", "--scenario", "nope"],
        vec![
            "score",
            "--input",
            "/nonexistent/file.csv",
            "--timestamp",
            "t",
            "--column",
            "a=latency_p95_ms",
        ],
        vec!["eval", "--runs"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("vigil-model: error: "), "{args:?}");
    }
    assert_eq!(run(&[]).status.code(), Some(2));
}

#[test]
fn bench_prints_ns_per_series_tick_with_a_baseline() {
    let o = run(&["bench", "--ticks", "50", "--pairs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("baseline"), "{text}");
    assert!(
        text.contains("observe + score (per series per tick)"),
        "{text}"
    );
    let o = run(&["bench", "--ticks", "50", "--pairs", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["results"].as_array().map(Vec::len), Some(3));
}

/// `eval --corpus`: a generated series with one clear lasting step and one
/// labelled window is detected by Vigil's self path, with no false alarm,
/// and every detector appears in the JSON report.
#[test]
fn eval_corpus_detects_a_generated_step() {
    let dir = std::env::temp_dir().join(format!("vigil-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut csv = String::from("timestamp,value,label\n");
    let mut x: u64 = 12345;
    for i in 0..3000u64 {
        // Deterministic noise in [-1, 1).
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let noise = ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
        let step = if (2000..2100).contains(&i) { 20.0 } else { 0.0 };
        let label = u8::from((2000..2100).contains(&i));
        csv.push_str(&format!("{},{},{}\n", i * 60, 100.0 + noise + step, label));
    }
    std::fs::write(dir.join("step.csv"), csv).expect("write");
    let o = run(&["eval", "--corpus", dir.to_str().expect("utf8"), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let vd = &v["overall"]["vigil_default"];
    assert_eq!(vd["windows"], 1, "{v}");
    assert_eq!(vd["detected"], 1, "{v}");
    assert_eq!(vd["false_alarms"], 0, "{v}");
    assert!(v["overall"]["zscore_at_budget"].is_object(), "{v}");
    assert!(v["overall"]["ewma_at_budget"].is_object(), "{v}");
    // The committed real fixture (first 1500 rows of a public MIT KPI) runs.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");
    let o = run(&["eval", "--corpus", fixture]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("cpu4-head1500.csv"), "{text}");
    assert!(text.contains("must-show"), "{text}");
}

#[test]
fn eval_corpus_bad_label_names_row_and_column() {
    let dir = std::env::temp_dir().join(format!("vigil-corpus-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("a.csv"), "timestamp,value,label\n0,1,0\n60,2,2\n").expect("write");
    let o = run(&["eval", "--corpus", dir.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("row 3") && e.contains("\"label\""), "{e}");
    assert!(o.stdout.is_empty());
    let o = run(&[
        "eval",
        "--corpus",
        dir.to_str().expect("utf8"),
        "--column",
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
}
