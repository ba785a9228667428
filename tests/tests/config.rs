//! Configuration: the shipped bootstrap validates, the shipped plugin configuration
//! starts, and invalid plugin configurations are refused at start-up with the offending
//! field named in one log line.

// Helpers shared by this file's tests fail the test the way the tests themselves do.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use vigil_e2e::envoy::{
    envoy_binary, tail, wasm_path, Envoy, EnvoyOptions, BOOTSTRAP, DEFAULT_PLUGIN_CONFIG,
};
use vigil_e2e::repo_root;
use vigil_e2e::upstream::Upstream;

const MARKER: &str = "vigil: invalid plugin configuration: ";

/// Starts Envoy with `config`; it must exit non-zero, logging exactly one
/// `vigil: invalid plugin configuration: <field>: <problem>` line whose field path
/// starts with `field`.
async fn refused(name: &str, config: &str, field: &str) {
    let log = Envoy::start_expect_failure(EnvoyOptions::new(name, config))
        .await
        .unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(MARKER)).collect();
    println!("[{name}] config {config} → {lines:?}");
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one '{MARKER}' line; log tail:\n{}",
        tail(&log, 30)
    );
    let message = lines
        .first()
        .and_then(|l| l.split(MARKER).nth(1))
        .unwrap_or_default();
    assert!(
        message.starts_with(field),
        "the message must name the field `{field}`: {message:?}"
    );
    let problem = message.get(field.len()..).unwrap_or_default();
    assert!(
        problem.contains(": ") && problem.trim_end().len() > 3,
        "the message must say what is wrong with `{field}`: {message:?}"
    );
}

#[tokio::test]
async fn wrong_type_is_refused() {
    refused("cfg-type", r#"{"tick_ms":"fast"}"#, "tick_ms").await;
}

#[tokio::test]
async fn unknown_field_is_refused() {
    refused("cfg-unknown", r#"{"bogus":1}"#, "bogus").await;
}

#[tokio::test]
async fn negative_window_is_refused() {
    refused(
        "cfg-window",
        r#"{"model":{"window_ticks":-5}}"#,
        "model.window_ticks",
    )
    .await;
}

#[tokio::test]
async fn incomplete_canary_is_refused() {
    refused(
        "cfg-canary",
        r#"{"canaries":[{"name":"c","route":"checkout"}]}"#,
        "canaries[0]",
    )
    .await;
}

#[tokio::test]
async fn not_json_is_refused() {
    let log = Envoy::start_expect_failure(EnvoyOptions::new("cfg-garbage", "{not json"))
        .await
        .unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(MARKER)).collect();
    println!("[cfg-garbage] → {lines:?}");
    assert_eq!(lines.len(), 1, "log tail:\n{}", tail(&log, 30));
}

/// Positive control: the configuration shipped in vigil-local.yaml starts and serves,
/// and so does an empty configuration (all defaults).
#[tokio::test]
async fn shipped_and_default_configurations_start() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    for config in [DEFAULT_PLUGIN_CONFIG, "{}"] {
        let envoy = Envoy::start(
            EnvoyOptions::new("cfg-ok", config).upstreams(stable.port(), canary.port()),
        )
        .await
        .unwrap_or_else(|e| panic!("config {config:?} must start: {e}"));
        let reply = envoy.get("/", &[]).await.unwrap();
        assert_eq!(reply.status, 200, "config {config:?}");
        let failures = envoy.wasm_failures().await.unwrap();
        assert!(failures.is_empty(), "config {config:?}: {failures:#?}");
        assert!(
            !envoy.log().contains(MARKER),
            "config {config:?} was reported invalid"
        );
    }
}

/// `envoy --mode validate -c envoy-config/vigil-local.yaml`, run from the repository
/// root exactly as documented, accepts the file as shipped.
#[test]
fn shipped_bootstrap_validates() {
    let envoy = envoy_binary().unwrap();
    wasm_path().unwrap();
    let out = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "-c",
            BOOTSTRAP,
            "--disable-hot-restart",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "validate failed:\n{}",
        tail(&text, 30)
    );
    assert!(text.contains("OK"), "{}", tail(&text, 5));
}

#[tokio::test]
async fn unknown_grpc_code_name_is_refused() {
    refused(
        "cfg-grpc-code",
        r#"{"grpc_server_error_codes":["UNAVAILABLE","UNAVAILBLE"]}"#,
        "grpc_server_error_codes[1]",
    )
    .await;
}

#[tokio::test]
async fn negative_threshold_is_refused() {
    refused(
        "cfg-neg-threshold",
        r#"{"model":{"min_latency_increase_ms":-5}}"#,
        "model.min_latency_increase_ms",
    )
    .await;
}

#[tokio::test]
async fn non_boolean_steer_on_throttle_is_refused() {
    refused(
        "cfg-throttle",
        r#"{"steer_on_throttle":"yes"}"#,
        "steer_on_throttle",
    )
    .await;
}

#[tokio::test]
async fn zero_edge_cap_is_refused() {
    refused(
        "cfg-edges-cap",
        r#"{"edges":{"service":"orders","max_edges":0}}"#,
        "edges.max_edges",
    )
    .await;
}
