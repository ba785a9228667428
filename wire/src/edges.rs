//! The edge record of a report (`Report::edges`): observed traffic between
//! workloads, aggregated per tick by the filter (see `vigil-traffic`).
//!
//! ```json
//! {"source":"spiffe://cluster.local/ns/shop/sa/frontend","service":"orders",
//!  "version":"v1","method":"GET","path":"/v1/orders/{id}","inbound":true,
//!  "requests":12,"errors":1,"status_4xx":0,"denied":0,"latency_sum_us":48000,
//!  "latency":[[40,12]]}
//! ```
//!
//! - `source`: the caller's identity — the peer certificate's SPIFFE URI SAN
//!   on an inbound sidecar, the local workload's identity on an outbound one;
//!   `unknown` without either, `{overflow}` past the sender's caller cap.
//! - `service` / `version`: the destination workload.
//! - `path`: a **template** (IDs, UUIDs, hashes, numbers folded to `{id}`,
//!   query dropped; see `vigil_traffic::template`), never a raw path.
//! - Edges are additive and bounded ([`MAX_EDGES`], names ≤
//!   [`MAX_EDGE_NAME_BYTES`]); what the sender could not attribute within
//!   its caps is counted in `Report::edges_overflow`, never silently lost.

use serde::{Deserialize, Serialize};
use vigil_scorer::histogram::BUCKETS;

/// Most edges in one report.
pub const MAX_EDGES: usize = 4_096;
/// Longest edge name field (source, service, version, method, path), bytes.
pub const MAX_EDGE_NAME_BYTES: usize = 256;
/// What a sender aims the edges of one report at, bytes (the rest is counted
/// as overflow), so chunk 0 keeps room for series under the body limit.
pub const EDGES_TARGET_BYTES: usize = 256 * 1024;

/// One edge of one tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// Caller identity (SPIFFE id, `unknown`, or `{overflow}`).
    pub source: String,
    /// Destination service.
    pub service: String,
    /// Destination version (empty if unknown).
    #[serde(default)]
    pub version: String,
    /// HTTP method.
    pub method: String,
    /// Path template.
    pub path: String,
    /// Observed by the destination's sidecar (true) or the caller's (false).
    #[serde(default)]
    pub inbound: bool,
    /// Requests this tick.
    pub requests: u64,
    /// 5xx and no-response.
    #[serde(default)]
    pub errors: u64,
    /// 4xx.
    #[serde(default)]
    pub status_4xx: u64,
    /// 401 / 403 (already in `status_4xx`): refused by policy.
    #[serde(default)]
    pub denied: u64,
    /// Sum of latencies, µs.
    #[serde(default)]
    pub latency_sum_us: u64,
    /// Sparse latency histogram `[[bucket, count], …]` (vigil-scorer buckets).
    #[serde(default)]
    pub latency: Vec<(u16, u32)>,
    /// Sparse histogram of the time to the first response byte (streaming-aware advice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ttft: Vec<(u16, u32)>,
    /// Requests whose response came in two or more body chunks (a stream).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub streamed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Edge {
    /// The identity of the edge: (source, service, version, method, path, inbound).
    pub fn key(&self) -> (&str, &str, &str, &str, &str, bool) {
        (
            &self.source,
            &self.service,
            &self.version,
            &self.method,
            &self.path,
            self.inbound,
        )
    }
}

/// Validate one edge; `Err((field, message))` names the field relative to the edge.
pub fn validate_edge(e: &Edge) -> Result<(), (String, String)> {
    for (name, value, allow_empty) in [
        ("source", &e.source, false),
        ("service", &e.service, false),
        ("version", &e.version, true),
        ("method", &e.method, false),
        ("path", &e.path, false),
    ] {
        if value.len() > MAX_EDGE_NAME_BYTES {
            return Err((
                name.into(),
                format!("longer than {MAX_EDGE_NAME_BYTES} bytes ({})", value.len()),
            ));
        }
        if !allow_empty && value.is_empty() {
            return Err((name.into(), "must not be empty".into()));
        }
        if value.chars().any(char::is_control) {
            return Err((name.into(), "must not contain control characters".into()));
        }
    }
    if e.errors.saturating_add(e.status_4xx) > e.requests {
        return Err((
            "errors".into(),
            format!(
                "errors {} + status_4xx {} exceed requests {}",
                e.errors, e.status_4xx, e.requests
            ),
        ));
    }
    if e.denied > e.status_4xx {
        return Err((
            "denied".into(),
            format!("{} exceeds status_4xx {}", e.denied, e.status_4xx),
        ));
    }
    if e.streamed > e.requests {
        return Err((
            "streamed".into(),
            format!("{} exceeds requests {}", e.streamed, e.requests),
        ));
    }
    check_histogram("latency", &e.latency, e.requests)?;
    check_histogram("ttft", &e.ttft, e.requests)
}

fn check_histogram(name: &str, h: &[(u16, u32)], requests: u64) -> Result<(), (String, String)> {
    let mut previous: Option<u16> = None;
    let mut total = 0u64;
    for (j, &(bucket, count)) in h.iter().enumerate() {
        if bucket as usize >= BUCKETS || previous.is_some_and(|p| bucket <= p) || count == 0 {
            return Err((
                format!("{name}[{j}]"),
                format!("bucket {bucket} count {count}: buckets must increase below {BUCKETS}, counts ≥ 1"),
            ));
        }
        previous = Some(bucket);
        total = total.saturating_add(u64::from(count));
    }
    if total > requests {
        return Err((
            name.into(),
            format!("histogram counts {total} exceed requests {requests}"),
        ));
    }
    Ok(())
}
