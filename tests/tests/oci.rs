//! `scripts/oci.sh` (what `make oci` runs) builds an OCI image layout Istio's image
//! fetcher accepts ("compat" variant): index.json → image manifest → one
//! application/vnd.oci.image.layer.v1.tar+gzip layer whose digest matches its content
//! and whose tar holds plugin.wasm byte-identical to dist/vigil_filter.wasm.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};
use vigil_e2e::envoy::wasm_path;
use vigil_e2e::{repo_root, ScratchDir};

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not sha256: {digest}"));
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        hex,
        "blob {digest} does not match its digest"
    );
    bytes
}

#[test]
fn oci_layout_holds_the_filter_as_plugin_wasm() {
    let wasm = wasm_path().unwrap();
    let out = ScratchDir::new("oci").unwrap();
    let run = Command::new("scripts/oci.sh")
        .env("OUT", out.path())
        .env("VIGIL_WASM", &wasm)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "oci.sh failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let layout = out.path().join("oci");
    let oci_layout: Value =
        serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = &index["manifests"][0];
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        "0.1.0"
    );
    let manifest_bytes = blob(&layout, desc["digest"].as_str().unwrap());
    assert_eq!(desc["size"].as_u64().unwrap(), manifest_bytes.len() as u64);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        1,
        "Istio's compat variant needs exactly one layer"
    );
    let layer = &layers[0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_bytes = blob(&layout, layer["digest"].as_str().unwrap());
    assert_eq!(layer["size"].as_u64().unwrap(), layer_bytes.len() as u64);
    let config: Value = serde_json::from_slice(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();

    // Unpack with the system's gzip and tar (what the fetcher's tar reader sees).
    let gz = out.path().join("layer.tar.gz");
    std::fs::write(&gz, &layer_bytes).unwrap();
    let tar = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert!(tar.status.success());
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str().unwrap(),
        format!("sha256:{:x}", Sha256::digest(&tar.stdout)),
        "diff_id must be the digest of the uncompressed layer"
    );
    let list = Command::new("tar").arg("-tzf").arg(&gz).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        "plugin.wasm",
        "the layer holds plugin.wasm only"
    );
    let plugin = Command::new("tar")
        .arg("-xzOf")
        .arg(&gz)
        .arg("plugin.wasm")
        .output()
        .unwrap();
    assert!(plugin.status.success());
    assert!(
        plugin.stdout == std::fs::read(&wasm).unwrap(),
        "plugin.wasm differs from {}",
        wasm.display()
    );

    // The tarball holds the same layout; a second build is byte-identical (reproducible).
    let first = std::fs::read(out.path().join("vigil-filter-oci.tar")).unwrap();
    let again = Command::new("scripts/oci.sh")
        .env("OUT", out.path())
        .env("VIGIL_WASM", &wasm)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(
        first == std::fs::read(out.path().join("vigil-filter-oci.tar")).unwrap(),
        "oci.sh is not reproducible"
    );
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(out.path().join("vigil-filter-oci.tar"))
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    for n in [
        "oci-layout",
        "index.json",
        &format!("blobs/sha256/{}", &layer["digest"].as_str().unwrap()[7..]),
    ] {
        assert!(
            names.lines().any(|l| l == n),
            "{n} missing from the tarball:\n{names}"
        );
    }
}
