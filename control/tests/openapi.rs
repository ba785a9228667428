//! control/openapi.yaml against the running service (real binary, real
//! SQLite, loopback): every documented route exists, and every documented
//! status is answered — made happen by the response's `x-probe` — with a
//! body that matches the documented schema (every error JSON
//! `{"error","field"}`). Answers marked `x-not-probed` say why; the set of
//! routes must equal `vigil_control::http::ROUTES`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn load_yaml() -> serde_yaml::Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// `(path, method, status, response)` in the order written (serde_json's
/// maps are sorted; the YAML mapping keeps the file's order).
fn operations(yaml: &serde_yaml::Value) -> Vec<(String, String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in yaml["paths"].as_mapping().unwrap() {
        for (method, op) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if method == "parameters" {
                continue;
            }
            for (status, resp) in op["responses"].as_mapping().unwrap() {
                out.push((
                    path.as_str().unwrap().to_string(),
                    method.to_string(),
                    status.as_str().unwrap().to_string(),
                    serde_json::to_value(resp).unwrap(),
                ));
            }
        }
    }
    out
}

/// Inline every `$ref` (`#/components/...`), keeping sibling keys.
fn resolve(v: &Value, root: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let ptr = r.strip_prefix('#').unwrap();
                let mut target = resolve(
                    root.pointer(ptr).unwrap_or_else(|| panic!("bad $ref {r}")),
                    root,
                );
                for (k, x) in m {
                    if k != "$ref" {
                        target[k] = resolve(x, root);
                    }
                }
                target
            } else {
                Value::Object(
                    m.iter()
                        .map(|(k, x)| (k.clone(), resolve(x, root)))
                        .collect(),
                )
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve(x, root)).collect()),
        other => other.clone(),
    }
}

struct Answer {
    status: u16,
    content_type: String,
    etag: Option<String>,
    body: Vec<u8>,
}

fn send(addr: &str, raw: &[u8], then: Option<(Duration, &[u8])>) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    if let Some((wait, more)) = then {
        std::thread::sleep(wait);
        let _ = s.write_all(more);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no head");
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    };
    Answer {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        content_type: header("content-type").unwrap_or_default(),
        etag: header("etag"),
        body: out[end + 4..].to_vec(),
    }
}

#[test]
fn the_openapi_description_matches_the_running_service() {
    let yaml = load_yaml();
    let spec = serde_json::to_value(&yaml).unwrap();
    let data = temp_dir("openapi");
    let hook = data.with_extension("quota");
    let config = data.with_extension("config.json");
    std::fs::write(&config, json!({"webhook_allow": ["127.0.0.1"]}).to_string()).unwrap();
    let hook_s = hook.to_str().unwrap().to_string();
    let srv = Server::start_env(
        &data,
        Some(&config),
        &["--body-timeout-ms", "500"],
        &[("VIGIL_CONTROL_TEST_QUOTA_FILE", hook_s.as_str())],
    );
    // A canary to roll back while the disk is full (healthz 503).
    srv.post(
        "/v1/canaries",
        &canary_spec("probe-crit", json!({"step_duration_s": 60})),
    );

    // The documented routes are the served ones.
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = vigil_control::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, served,
        "openapi.yaml paths vs the router's routes"
    );

    let mut probes = Vec::new();
    for (path, method, status, resp) in operations(&yaml) {
        let resp = resolve(&resp, &spec);
        if resp.get("x-not-probed").is_some() {
            println!(
                "{method} {path} {status}: not probed: {}",
                resp["x-not-probed"]
            );
            continue;
        }
        let probe = resp
            .get("x-probe")
            .unwrap_or_else(|| panic!("{method} {path} {status}: no x-probe (or x-not-probed)"))
            .clone();
        probes.push((path, method.to_uppercase(), status, probe, resp));
    }
    // Disk-full probes last (they leave the store failing until freed).
    probes.sort_by_key(|p| p.3.get("disk_full").is_some());
    let mut checked = 0;
    for (path, method, status, probe, resp) in probes {
        let label = format!("{method} {path} -> {status}");
        if probe.get("disk_full").is_some() {
            std::fs::write(&hook, "full").unwrap();
        }
        if let Some(w) = probe.get("wait_phase") {
            let (name, phase) = (w[0].as_str().unwrap(), w[1].as_str().unwrap());
            let t = Instant::now();
            while srv.canary(name)["phase"] != phase {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "{label}: {name} never {phase}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if probe.get("wait_unhealthy").is_some() {
            let reason = "x".repeat(3800);
            // A claim counts only with its counts (one judge): the report
            // carries both versions, the canary failing every request, so
            // the service's own test rolls back and the tick must store it.
            let r = report(
                "probe-sidecar",
                1,
                vec![
                    series("probe-crit", "stable", 2000, 0, 10),
                    series("probe-crit", "canary", 400, 400, 10),
                ],
                vec![json!({"name": "probe-crit", "route": "probe-crit",
                "state": "critical", "score": 990, "reason": reason, "steering": true})],
            );
            assert_eq!(srv.post("/v1/reports", &r).0, 202);
            std::thread::sleep(Duration::from_millis(600));
        }
        let method = probe
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or(&method)
            .to_string();
        let mut target = probe
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or(&path)
            .to_string();
        if let Some(n) = probe.get("long_uri").and_then(Value::as_u64) {
            target = format!("{target}?q={}", "a".repeat(n as usize));
        }
        let mut body: Vec<u8> = Vec::new();
        let mut ctype = probe
            .get("content_type")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(j) = probe.get("json") {
            let mut j = j.clone();
            if let Some(n) = probe.get("pad_comment").and_then(Value::as_u64) {
                j["comment"] = json!("c".repeat(n as usize));
            }
            if let Some(n) = probe.get("pad_webhooks").and_then(Value::as_u64) {
                j["webhooks"] = (0..n)
                    .map(|i| json!(format!("http://127.0.0.1:9/{i}{}", "s".repeat(2000))))
                    .collect();
            }
            body = j.to_string().into_bytes();
        }
        if let Some(seq) = probe.get("report_seq").and_then(Value::as_u64) {
            body = report(
                "openapi-sidecar",
                seq,
                vec![series("probe-crit", "canary", 1, 0, 10)],
                vec![],
            )
            .to_string()
            .into_bytes();
        }
        if let Some(r) = probe.get("raw").and_then(Value::as_str) {
            body = r.as_bytes().to_vec();
        }
        if let Some(n) = probe.get("big_body").and_then(Value::as_u64) {
            body = vec![b' '; n as usize];
        }
        if (!body.is_empty() || probe.get("partial_body").is_some()) && ctype.is_none() {
            ctype = Some("application/json".into());
        }
        let mut head =
            format!("{method} {target} HTTP/1.1\r\nhost: vigil\r\nconnection: close\r\n");
        if probe.get("auth").is_some() {
            // The reporter's credential for reports, the operator's for
            // everything else (scoped credentials).
            head.push_str(&format!("authorization: Bearer {}\r\n", token_for(&path)));
        }
        if let Some(c) = &ctype {
            head.push_str(&format!("content-type: {c}\r\n"));
        }
        if probe.get("etag").is_some() {
            let etag = send(
                &srv.addr,
                b"GET /v1/routing HTTP/1.1\r\nhost: v\r\nconnection: close\r\n\r\n",
                None,
            )
            .etag
            .unwrap();
            head.push_str(&format!("if-none-match: {etag}\r\n"));
        }
        if let Some(n) = probe.get("big_header").and_then(Value::as_u64) {
            head.push_str(&format!("x-big: {}\r\n", "a".repeat(n as usize)));
        }
        let partial = probe.get("partial_body").is_some();
        if partial {
            head.push_str("content-length: 100\r\n\r\n{\"version\"");
        } else {
            head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        }
        let mut raw = head.into_bytes();
        if !partial {
            raw.extend_from_slice(&body);
        }
        let answer = send(&srv.addr, &raw, None);
        assert_eq!(
            answer.status.to_string(),
            status,
            "{label}: got {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        if let Some(schema) = resp.pointer("/content/application~1json/schema") {
            assert!(
                answer.content_type.starts_with("application/json"),
                "{label}: content-type {:?}",
                answer.content_type
            );
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
                panic!(
                    "{label}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&answer.body)
                )
            });
            let validator = jsonschema::validator_for(schema).unwrap();
            if let Err(e) = validator.validate(&v) {
                panic!("{label}: body does not match the schema: {e}\n{v:#}");
            }
        } else if answer.status >= 400 {
            panic!("{label}: an error documented without a JSON body");
        }
        if probe.get("disk_full").is_some() {
            std::fs::remove_file(&hook).unwrap();
        }
        checked += 1;
    }
    println!("openapi.yaml: {checked} documented answers checked against the running service");
    assert!(checked >= 30, "{checked}");
}
