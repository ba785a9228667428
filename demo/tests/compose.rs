//! envoy-config/docker-compose.yaml passes `docker-compose config` (no container engine
//! needed). That every Envoy file there passes `envoy --mode validate` is checked in
//! tests/tests/mesh_envoy.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use vigil_e2e::repo_root;

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
