//! `vigil-control replay`: judge recorded reports with the service's own
//! code path, offline.
//!
//! Why this exists: "what would the control service have decided on these
//! reports?" must be answerable exactly — for an incident review, and for
//! the test that shows the filter and the service give the same canary
//! evidence the same verdict (one judge). The replay opens a real
//! [`Service`] on a temporary data directory (real SQLite), declares the
//! configured canaries, then for each line of the reports file (one
//! analysis tick: a JSON array of `vigil-wire` reports) validates and
//! ingests every report and runs one analysis tick, on a synthetic clock
//! advancing by the reports' `tick_ms`. It prints one JSON line per tick:
//! `{"tick","state","score","phase","canary_weight","explanation"}`.

use crate::metrics::Metrics;
use crate::plausibility::Limits;
use crate::service::{Options, Service, SIDECAR_TTL_MS};
use crate::spec::ServiceConfig;
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

/// Run the replay; returns the exit code.
pub fn main(reports: &Path, canary: &str, config: Option<&Path>) -> i32 {
    match run(reports, canary, config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vigil-control replay: {e}");
            1
        }
    }
}

fn run(reports: &Path, canary: &str, config: Option<&Path>) -> Result<(), String> {
    let config = match config {
        None => ServiceConfig::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let json = p.extension().is_some_and(|e| e == "json");
            ServiceConfig::parse(&text, json).map_err(|e| format!("{}: {e}", p.display()))?
        }
    };
    if !config.canaries.iter().any(|c| c.name == canary) {
        return Err(format!(
            "canary {canary:?} is not declared in the config file (--config)"
        ));
    }
    let file = std::fs::File::open(reports).map_err(|e| format!("{}: {e}", reports.display()))?;
    let dir = std::env::temp_dir().join(format!(
        "vigil-replay-{}-{}",
        std::process::id(),
        crate::log::now_ms()
    ));
    let opts = Options {
        data: dir.join("data"),
        out: dir.join("gitops"),
        webhooks: Vec::new(),
        model: config.model.clone(),
        limits: Limits::default(),
        sidecar_ttl_ms: SIDECAR_TTL_MS,
        webhook_allow: crate::egress::Allow::default(),
    };
    let result = (|| {
        let svc = Service::open(opts, &config.canaries, None, Arc::new(Metrics::default()))
            .map_err(|e| e.to_string())?;
        let mut now: Option<u64> = None;
        let mut tick_ms = 1000u64;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", reports.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let docs: Vec<Value> = serde_json::from_str(&line)
                .map_err(|e| format!("line {}: not a JSON array of reports: {e}", i + 1))?;
            let mut parsed = Vec::with_capacity(docs.len());
            for (j, d) in docs.iter().enumerate() {
                let r = crate::report::parse(d.to_string().as_bytes())
                    .map_err(|e| format!("line {} report {j}: {e}", i + 1))?;
                parsed.push(r);
            }
            let t = match now {
                None => {
                    // Start the rollouts before the first tick of evidence.
                    let start = parsed.first().map_or(1, |r| r.sent_at_ms);
                    tick_ms = parsed.first().map_or(1000, |r| r.tick_ms);
                    svc.tick(start.saturating_sub(tick_ms));
                    start
                }
                Some(t) => t.saturating_add(tick_ms),
            };
            now = Some(t);
            for r in &parsed {
                svc.ingest_at(r, t)
                    .map_err(|e| format!("line {}: report refused: {e:?}", i + 1))?;
            }
            svc.tick(t);
            let v = svc.show(canary).map_err(|e| format!("{e:?}"))?;
            let at = |path: &[&str]| {
                path.iter()
                    .try_fold(&v, |x, k| x.get(*k))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            println!(
                "{}",
                json!({"tick": i + 1, "state": at(&["live_verdict", "state"]), "score": at(&["live_verdict", "score"]),
                       "phase": at(&["phase"]), "canary_weight": at(&["canary_weight"]),
                       "explanation": at(&["live_verdict", "explanation"])})
            );
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
