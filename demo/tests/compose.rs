//! envoy-config/: every Envoy configuration file passes `envoy --mode validate`, and
//! docker-compose.yaml passes `docker-compose config` (no container engine needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use vigil_e2e::envoy::envoy_binary;
use vigil_e2e::repo_root;

#[test]
fn every_envoy_config_validates() {
    let dir = repo_root().join("envoy-config");
    let envoy = envoy_binary().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Everything but the compose file (checked below) and the README is an Envoy bootstrap.
        if name == "docker-compose.yaml"
            || !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        {
            continue;
        }
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "-c"])
            .arg(format!("envoy-config/{name}"))
            .current_dir(repo_root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "envoy --mode validate {name} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected vigil-local.yaml and vigil-compose.yaml"
    );
}

#[test]
fn docker_compose_file_is_valid() {
    let out = Command::new("docker-compose")
        .args(["-f", "envoy-config/docker-compose.yaml", "config"])
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("docker-compose not runnable ({e}): run `make setup` (installs Debian's docker-compose)"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker-compose config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "envoyproxy/envoy:v1.40",
        "vigil_filter.wasm",
        "demo-upstream",
        "vigil-control",
    ] {
        assert!(
            text.contains(needle),
            "compose config lacks {needle}:\n{text}"
        );
    }
}
