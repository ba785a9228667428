//! Harness for Vigil's end-to-end tests: real Envoy, real HTTP upstreams on loopback,
//! a real load generator, and a parser for what Envoy's admin API prints.
//!
//! - [`envoy`]: find, configure, start and stop Envoy with the Vigil filter;
//! - [`upstream`]: small HTTP servers ("stable", "canary") with switchable faults;
//! - [`browser`]: child processes read by line; the Chromium (playwright-core) driver;
//! - [`control`]: the real `vigil-control` service as a child process;
//! - [`load`]: an open-loop generator (fixed arrival rate) and a closed-loop
//!   "exactly N requests over C connections" helper;
//! - [`prom`]: a tiny Prometheus text-format parser;
//! - [`scenario`]: the canary-fault scenario shared by the steering tests and the demo;
//! - [`schema`]: manifests validated against the mesh CRDs in `../shared/schemas`;
//! - [`mesh`]: Istio / Kong Mesh manifests translated into the local Envoy bootstrap;
//! - [`kuma`]: what kumactl enforces for the fields we use, and the filter-value check it lacks;
//! - [`selfpath`]: extra self-judged routes in one Envoy, per-series state timelines and
//!   the filter's state-change and `level_shift` log lines;
//! - [`lds`]: listeners from a watched file (file-based LDS), swapped while Envoy runs;
//! - [`dump`]: mesh-generated config dumps (the real Kuma one, Kuma 2.x and Istio naming)
//!   turned into runnable bootstraps.
//!
//! Everything a harness value starts is stopped when the value is dropped, also when a
//! test panics. Every wait is bounded in time.

pub mod browser;
pub mod control;
pub mod dump;
pub mod envoy;
pub mod grpc;
pub mod http;
pub mod kuma;
pub mod lds;
pub mod load;
pub mod mesh;
pub mod prom;
pub mod resets;
pub mod scenario;
pub mod schema;
pub mod selfpath;
pub mod sidecars;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The harness's error type: a message meant for a human reading a test failure.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Root of the repository (the workspace), derived from this crate's location.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A scratch directory under `target/e2e/` for one harness object (Envoy's bootstrap,
/// log, admin address file).
///
/// It is removed on drop when the test passed; it is kept when the current thread is
/// panicking (a failing test) or when `VIGIL_KEEP_LOGS` is set, and its path is printed.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `target/e2e/<name>-<pid>-<n>`.
    pub fn new(name: &str) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = repo_root()
            .join("target")
            .join("e2e")
            .join(format!("{name}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create scratch dir {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("VIGIL_KEEP_LOGS").is_some() {
            eprintln!("harness: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Milliseconds of a duration as a float, for printing.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
