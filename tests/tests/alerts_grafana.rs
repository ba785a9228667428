//! Prometheus alert rules and the Grafana dashboard under `deploy/`:
//!
//! - `promtool check rules` and `promtool test rules` pass (every alert has firing and
//!   non-firing cases in `deploy/alerts/vigil.rules.test.yaml`), and a broken rule is
//!   refused (the check can fail);
//! - the Grafana JSON is a dashboard (schemaVersion, panels with type/title/gridPos and
//!   Prometheus targets, decision annotations), and every metric name it or the alert
//!   rules reference exists in `/stats/prometheus` of a real Envoy running the filter
//!   (steer mode, reporting to a real `vigil-control`, a failing canary so steering
//!   happens) or in that control service's `/metrics`.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_e2e::control::{ControlService, TOKEN};
use vigil_e2e::envoy::{add_cluster, prepend_flood_routes, Envoy, EnvoyOptions};
use vigil_e2e::http::HttpClient;
use vigil_e2e::load::OpenLoop;
use vigil_e2e::repo_root;
use vigil_e2e::scenario::plugin_config;
use vigil_e2e::upstream::Upstream;

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root().join("deploy/alerts"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not runnable ({e}): `scripts/setup.sh prometheus` installs Debian's prometheus, which ships it")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn rules_text() -> String {
    std::fs::read_to_string(repo_root().join("deploy/alerts/vigil.rules.yaml")).unwrap()
}

const ALERTS: [&str; 7] = [
    "VigilCanaryCritical",
    "VigilCanaryRolledBack",
    "VigilSteeringActive",
    "VigilControlUnreachable",
    "VigilControlDown",
    "VigilSeriesOverflow",
    "VigilStorageFailures",
];

#[test]
fn promtool_checks_and_tests_every_alert() {
    let (ok, out) = promtool(&["check", "rules", "vigil.rules.yaml"]);
    println!("{out}");
    assert!(ok && out.contains("SUCCESS: 7 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "vigil.rules.test.yaml"]);
    println!("{out}");
    assert!(ok && out.contains("SUCCESS"), "{out}");
    // Every alert has a firing case (exp_alerts with labels) and a non-firing one
    // (exp_alerts: []) in the test file.
    let tests: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/alerts/vigil.rules.test.yaml")).unwrap(),
    )
    .unwrap();
    for alert in ALERTS {
        assert!(rules_text().contains(&format!("alert: {alert}")), "{alert}");
        let cases: Vec<&Value> = tests["tests"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
            .filter(|c| c["alertname"] == alert)
            .collect();
        let firing = cases
            .iter()
            .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
            .count();
        let quiet = cases
            .iter()
            .filter(|c| c["exp_alerts"].as_array().is_some_and(Vec::is_empty))
            .count();
        assert!(
            firing >= 1 && quiet >= 1,
            "{alert}: {firing} firing, {quiet} quiet cases"
        );
    }
    // The checks can fail: a broken expression and a wrong expectation are refused.
    let dir = repo_root().join("target/alerts-negative");
    std::fs::create_dir_all(&dir).unwrap();
    let broken = rules_text().replacen(
        "max by (route, cluster) (vigil_state)",
        "max by (route, cluster) (vigil_state",
        1,
    );
    std::fs::write(dir.join("broken.rules.yaml"), broken).unwrap();
    let (ok, out) = promtool(&[
        "check",
        "rules",
        dir.join("broken.rules.yaml").to_str().unwrap(),
    ]);
    assert!(!ok, "a broken rule passed: {out}");
    std::fs::write(dir.join("vigil.rules.yaml"), rules_text().replace("for: 1m\n        labels:\n          severity: critical\n        annotations:\n          summary: \"Vigil judges", "for: 5m\n        labels:\n          severity: critical\n        annotations:\n          summary: \"Vigil judges")).unwrap();
    std::fs::copy(
        repo_root().join("deploy/alerts/vigil.rules.test.yaml"),
        dir.join("vigil.rules.test.yaml"),
    )
    .unwrap();
    let (ok, out) = promtool(&[
        "test",
        "rules",
        dir.join("vigil.rules.test.yaml").to_str().unwrap(),
    ]);
    assert!(
        !ok && out.contains("VigilCanaryCritical"),
        "a slower alert passed its test: {out}"
    );
}

/// Metric names (`vigil_*`, `envoy_*`) in a PromQL expression: identifiers outside
/// quotes that are neither label matchers (`name=`, `name!=`, `name=~`) nor inside a
/// `by (...)` / `without (...)` grouping.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut in_quotes = false;
    let mut grouping = false;
    let mut last_word = String::new();
    while let Some(&ch) = chars.get(i) {
        if ch == '"' {
            in_quotes = !in_quotes;
            i += 1;
            continue;
        }
        if in_quotes {
            i += 1;
            continue;
        }
        if ch.is_ascii_alphabetic() || ch == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let matcher = matches!(next, Some('=') | Some('!'));
            if !grouping && !matcher && (word.starts_with("vigil_") || word.starts_with("envoy_")) {
                out.insert(word.clone());
            }
            last_word = word;
            continue;
        }
        if ch == '(' && (last_word == "by" || last_word == "without") {
            grouping = true;
        }
        if ch == ')' {
            grouping = false;
        }
        if !ch.is_whitespace() {
            last_word.clear();
        }
        i += 1;
    }
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "expr" || k == "definition" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                }
                exprs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// Whether `name` is a metric family of the Prometheus text `text`.
fn has_family(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_is_valid_and_references_real_metrics() {
    let path = repo_root().join("deploy/grafana/vigil-dashboard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id: {p}"
        );
        let g = &p["gridPos"];
        for k in ["x", "y", "w", "h"] {
            assert!(g[k].is_u64(), "panel {} gridPos.{k}", p["title"]);
        }
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{}",
            p["title"]
        );
        assert!(p["title"].is_string());
        match p["type"].as_str().unwrap() {
            "row" => {}
            "timeseries" | "stat" | "state-timeline" => {
                graphs += 1;
                let targets = p["targets"].as_array().unwrap();
                assert!(!targets.is_empty(), "{}", p["title"]);
                for t in targets {
                    assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
                    assert!(t["refId"].is_string());
                }
                assert_eq!(p["datasource"]["type"], "prometheus");
            }
            other => panic!("unexpected panel type {other}"),
        }
    }
    assert!(graphs >= 10, "{graphs} graph panels");
    let annotations = dash["annotations"]["list"].as_array().unwrap();
    assert!(
        annotations.iter().any(|a| a["expr"]
            .as_str()
            .is_some_and(|e| e.contains("vigil_control_decisions_total"))),
        "no decision annotations"
    );
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for t in [
        "Request rate by version",
        "Error ratio by version",
        "Latency p50 / p95 / p99 by version",
    ] {
        assert!(titles.contains(&t), "{titles:?}");
    }

    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let rules: Value = serde_yaml::from_str(&rules_text()).unwrap();
    exprs(&rules, &mut all);
    let mut names = BTreeSet::new();
    for e in &all {
        metric_names(e, &mut names);
    }
    println!("metric names referenced: {names:?}");
    assert!(names.len() >= 15, "{names:?}");

    // The real thing: Envoy with the filter reporting to vigil-control; the canary fails
    // half its requests so the filter steers and the control service rolls back.
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    canary.set_error_ratio(0.5);
    let control = ControlService::start(
        "grafana-metrics",
        "canaries:\n  - name: checkout\n    route: checkout\n    stable_cluster: stable\n    canary_cluster: canary\n    steps: [50, 100]\n    step_duration_s: 60\n    mode: enforce\n",
        500,
    )
    .await
    .unwrap();
    let port = control.port();
    let config = plugin_config(
        "steer",
        &json!({"control": {"cluster": "vigil-control", "token": TOKEN, "timeout_ms": 300},
                "max_series": 8}),
    );
    let envoy = Envoy::start(
        EnvoyOptions::new("grafana-metrics", config)
            .upstreams(stable.port(), canary.port())
            .transform(move |b| {
                add_cluster(b, "vigil-control", port)?;
                // More routes than series: some go to the overflow series.
                prepend_flood_routes(b, 16, "stable")
            }),
    )
    .await
    .unwrap();
    let addr = envoy.listener_addr();
    let load = tokio::spawn(async move {
        OpenLoop::new(100.0, Duration::from_secs(25))
            .run(addr, Instant::now(), None)
            .await
    });
    for i in 0..16 {
        let r = envoy.get(&format!("/r{i}/x"), &[]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    let client = HttpClient::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut envoy_text, mut control_text);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        envoy_text = envoy.prometheus().await.unwrap();
        control_text = client
            .get(control.addr(), "/metrics", &[], Duration::from_secs(5))
            .await
            .unwrap()
            .text();
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !has_family(&envoy_text, n) && !has_family(&control_text, n))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metric names in deploy/ that neither Envoy's /stats/prometheus nor vigil-control's /metrics has: {missing:?}\n--- envoy (vigil lines) ---\n{}\n--- control ---\n{control_text}",
            envoy_text.lines().filter(|l| l.contains("vigil")).collect::<Vec<_>>().join("\n")
        );
    }
    load.abort();
    for n in &names {
        let from = if has_family(&envoy_text, n) {
            "envoy"
        } else {
            "vigil-control"
        };
        println!("{n}: {from}");
    }
}
