//! `scripts/oci-control.sh` (what `make oci-control` runs) builds a reproducible OCI image
//! layout of vigil-control: index.json → manifest → config + one tar+gzip layer, every
//! digest and size matching its blob; the config runs as a non-root user with the data
//! directory as the only writable path; two builds are byte-identical; the static
//! binary extracted from the layer serves /healthz; and every manifest that deploys the
//! control service (istio-manifests/, kong-mesh-manifests/, deploy/) names this image by
//! its manifest digest (`make pin-control-image` rewrites them).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use vigil_e2e::{repo_root, ScratchDir};

fn blob(layout: &Path, digest: &str, size: &Value) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        hex,
        "blob {digest} digest"
    );
    assert_eq!(
        bytes.len() as u64,
        size.as_u64().unwrap(),
        "blob {digest} size"
    );
    bytes
}

fn build(out: &Path) -> String {
    let run = Command::new("scripts/oci-control.sh")
        .env("OUT", out)
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "oci-control.sh failed:\n{text}");
    text
}

/// Whether an ELF64 file has a PT_INTERP program header (i.e. is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not ELF");
    assert_eq!(elf[4], 2, "not ELF64");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

/// Every `vigil-control` image reference in the deployment manifests, as
/// (file, reference).
fn control_image_refs() -> Vec<(String, String)> {
    let mut refs = Vec::new();
    for dir in ["istio-manifests", "kong-mesh-manifests", "deploy"] {
        for f in vigil_e2e::schema::manifest_files(&repo_root().join(dir)).unwrap() {
            let text = std::fs::read_to_string(&f).unwrap();
            let shown = f.strip_prefix(repo_root()).unwrap().display().to_string();
            for line in text.lines() {
                let Some(image) = line.trim().strip_prefix("image:") else {
                    continue;
                };
                let image = image.trim().trim_matches('"');
                if image.contains("/vigil-control") {
                    refs.push((shown.clone(), image.to_string()));
                }
            }
        }
    }
    refs
}

/// The manifests pin the image `make oci-control` builds, by digest.
fn check_manifests_pin(manifest_digest: &str) {
    let refs = control_image_refs();
    println!("control image references: {refs:?}");
    for dir in ["istio-manifests/", "kong-mesh-manifests/"] {
        assert!(
            refs.iter().any(|(f, _)| f.starts_with(dir)),
            "no vigil-control Deployment image under {dir}"
        );
    }
    let stale: Vec<String> = refs
        .iter()
        .filter(|(_, r)| r.rsplit_once('@').map(|(_, d)| d) != Some(manifest_digest))
        .map(|(f, r)| format!("{f}: {r}"))
        .collect();
    assert!(
        stale.is_empty(),
        "manifests do not reference the built control image {manifest_digest} by digest \
         (run `make pin-control-image` and commit):\n{}",
        stale.join("\n")
    );
    println!(
        "{} manifests pin vigil-control@{manifest_digest}",
        refs.len()
    );
}

#[test]
fn control_image_is_reproducible_valid_and_runs() {
    let a = ScratchDir::new("oci-control-a").unwrap();
    let b = ScratchDir::new("oci-control-b").unwrap();
    println!("{}", build(a.path()));
    println!("{}", build(b.path()));
    let tar_a = std::fs::read(a.path().join("vigil-control-oci.tar")).unwrap();
    let tar_b = std::fs::read(b.path().join("vigil-control-oci.tar")).unwrap();
    assert!(tar_a == tar_b, "two builds differ");
    println!(
        "two builds byte-identical: vigil-control-oci.tar {} bytes, sha256 {:x}",
        tar_a.len(),
        Sha256::digest(&tar_a)
    );

    let layout = a.path().join("oci-control");
    let oci_layout: Value =
        serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let m = &index["manifests"][0];
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["annotations"]["org.opencontainers.image.ref.name"],
        "0.1.0"
    );
    let manifest: Value =
        serde_json::from_slice(&blob(&layout, m["digest"].as_str().unwrap(), &m["size"])).unwrap();
    check_manifests_pin(m["digest"].as_str().unwrap());
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config: Value = serde_json::from_slice(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
        &manifest["config"]["size"],
    ))
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gz = blob(
        &layout,
        layers[0]["digest"].as_str().unwrap(),
        &layers[0]["size"],
    );
    // Config: platform, non-root user, entrypoint, the data volume, the diff_id.
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"][0],
        "/usr/local/bin/vigil-control"
    );
    assert!(config["config"]["Volumes"]["/var/lib/vigil"].is_object());
    assert_eq!(config["rootfs"]["type"], "layers");

    // Extract the layer with tar (as a runtime does) and check it.
    let x = ScratchDir::new("oci-control-x").unwrap();
    std::fs::write(x.path().join("layer.tar.gz"), &gz).unwrap();
    let st = Command::new("gzip")
        .args(["-dk", "layer.tar.gz"])
        .current_dir(x.path())
        .status()
        .unwrap();
    assert!(st.success());
    let layer_tar = std::fs::read(x.path().join("layer.tar")).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str().unwrap(),
        format!("sha256:{:x}", Sha256::digest(&layer_tar)),
        "diff_id is the uncompressed layer's digest"
    );
    let listing = Command::new("tar")
        .args(["-tvf", "layer.tar", "--numeric-owner"])
        .current_dir(x.path())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    println!("{listing}");
    let line = |p: &str| {
        listing
            .lines()
            .find(|l| l.trim_end().ends_with(p))
            .unwrap_or_else(|| panic!("{p} not in the layer:\n{listing}"))
            .to_string()
    };
    assert!(line("usr/local/bin/vigil-control").starts_with("-rwxr-xr-x 0/0"));
    assert!(line("var/lib/vigil/").starts_with("drwx------ 65532/65532"));
    assert!(line("etc/passwd").starts_with("-rw-r--r-- 0/0"));
    let root = x.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let st = Command::new("tar")
        .args(["-xf", "../layer.tar", "--no-same-owner"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("vigil:x:65532:65532:"), "{passwd}");
    let bin = root.join("usr/local/bin/vigil-control");
    let elf = std::fs::read(&bin).unwrap();
    assert!(!has_interpreter(&elf), "the binary is dynamically linked");
    println!("static binary: {} bytes", elf.len());

    // Run it from the extracted layer; it writes only to its data directory.
    let data = x.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let creds = x.path().join("credentials.yaml");
    std::fs::write(
        &creds,
        vigil_e2e::control::credentials_yaml_for("oci-test-token", None),
    )
    .unwrap();
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_clear()
        .env("VIGIL_CONTROL_CREDENTIALS", &creds)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["msg"] == "listening" {
                    let _ = tx.send(v["addr"].as_str().unwrap_or("").to_string());
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20));
    let reply = addr.as_ref().ok().map(|addr| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r
    });
    let _ = child.kill();
    let _ = child.wait();
    let reply = reply.unwrap_or_else(|| panic!("the extracted binary did not start: {addr:?}"));
    println!("{}", reply.lines().next().unwrap_or(""));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"ok\""), "{reply}");
}
