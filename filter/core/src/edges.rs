//! Observed edges in the filter: the `edges` configuration section, who the
//! caller and the destination of a request are, and the per-tick protocol
//! that brings every worker's edges to the scorer's report.
//!
//! ```json
//! "edges": { "enabled": true, "service": "orders", "version": "v1",
//!            "identity": "spiffe://cluster.local/ns/shop/sa/orders",
//!            "trust_domain": "cluster.local", "direction": "auto",
//!            "max_edges": 1024, "max_templates_per_service": 64,
//!            "max_sources": 256, "max_services": 32 }
//! ```
//!
//! Direction `auto`: a request whose downstream connection has a peer
//! certificate with a URI SAN (`connection.uri_san_peer_certificate`) is
//! **inbound** — its source is that SPIFFE id, its destination this
//! workload (`service`/`version`, else Istio node metadata labels `app` /
//! `version`); any other is **outbound** — its source is this workload's
//! identity (`identity`, else `spiffe://<trust_domain>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>`
//! from node metadata, else the sidecar identity), its destination the
//! upstream cluster's service (Istio `outbound|port|subset|host` → host's
//! first label and subset, else the cluster name).
//!
//! Tick: every worker merges its tick's [`EdgeBatch`] into shared data
//! the configuration's edges key ([`crate::keys::Keys::edges`]) (bounded CAS retries; what cannot be merged stays pending
//! locally, bounded by the same caps); the scorer takes the key and puts the
//! edges into chunk 0 of its report, within the wire's byte budget, the
//! rest counted in `edges_overflow`.

use crate::config::{err, ConfigError, Fields};
use crate::metrics::{Kind, MetricCache, MetricSink};
use crate::naming::istio_subset_host;
use crate::shared::{update, SetError, SharedStore, Update};
use serde_json::Value;
use vigil_traffic::aggregate::{Caps, EdgeAggregator, EdgeBatch, Observation, MAX_CAPS};

/// Which side of the call this sidecar sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Inbound if the peer presented a URI SAN, else outbound.
    Auto,
    /// Always inbound (source: the peer's SAN, or `unknown`).
    Inbound,
    /// Always outbound.
    Outbound,
}

/// The `edges` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgesConfig {
    /// Whether edges are recorded.
    pub enabled: bool,
    /// This workload's service name (inbound destination).
    pub service: Option<String>,
    /// This workload's version.
    pub version: Option<String>,
    /// This workload's identity (outbound source).
    pub identity: Option<String>,
    /// Trust domain for an identity built from node metadata.
    pub trust_domain: String,
    /// Direction rule.
    pub direction: Direction,
    /// Cardinality caps.
    pub caps: Caps,
}

impl Default for EdgesConfig {
    fn default() -> Self {
        EdgesConfig {
            enabled: false,
            service: None,
            version: None,
            identity: None,
            trust_domain: "cluster.local".to_string(),
            direction: Direction::Auto,
            caps: Caps::default(),
        }
    }
}

const FIELDS: &[&str] = &[
    "enabled",
    "service",
    "version",
    "identity",
    "trust_domain",
    "direction",
    "max_edges",
    "max_templates_per_service",
    "max_sources",
    "max_services",
];

impl EdgesConfig {
    /// Parse the `edges` section (present = enabled unless `enabled: false`).
    pub fn parse(v: &Value) -> Result<EdgesConfig, ConfigError> {
        let f = Fields::new("edges", v, FIELDS)?;
        let d = EdgesConfig::default();
        let enabled = match f.get("enabled") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(err(f.path("enabled"), "must be true or false")),
        };
        let name = |key: &str| -> Result<Option<String>, ConfigError> {
            let s = f.string(key)?;
            if let Some(s) = s {
                if s.len() > 256 || s.chars().any(char::is_control) {
                    return Err(err(
                        f.path(key),
                        "must be at most 256 bytes without control characters",
                    ));
                }
            }
            Ok(s.map(str::to_string))
        };
        let identity = name("identity")?;
        if let Some(id) = &identity {
            if !id.starts_with("spiffe://") {
                return Err(err(
                    f.path("identity"),
                    format!("must be a SPIFFE id (spiffe://…), got {id:?}"),
                ));
            }
        }
        let direction = match f.string("direction")? {
            None | Some("auto") => Direction::Auto,
            Some("inbound") => Direction::Inbound,
            Some("outbound") => Direction::Outbound,
            Some(other) => {
                return Err(err(
                    f.path("direction"),
                    format!("must be auto, inbound or outbound, got {other:?}"),
                ))
            }
        };
        let cap = |key: &str, default: usize, max: usize| -> Result<usize, ConfigError> {
            Ok(f.uint(key, default as u64, 1, max as u64)? as usize)
        };
        Ok(EdgesConfig {
            enabled,
            service: name("service")?,
            version: name("version")?,
            identity,
            trust_domain: name("trust_domain")?.unwrap_or(d.trust_domain),
            direction,
            caps: Caps {
                max_edges: cap("max_edges", d.caps.max_edges, MAX_CAPS.max_edges)?,
                max_templates_per_service: cap(
                    "max_templates_per_service",
                    d.caps.max_templates_per_service,
                    MAX_CAPS.max_templates_per_service,
                )?,
                max_sources: cap("max_sources", d.caps.max_sources, MAX_CAPS.max_sources)?,
                max_services: cap("max_services", d.caps.max_services, MAX_CAPS.max_services)?,
            },
        })
    }
}

/// What the glue read from Envoy's node metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// `LABELS.app` (or `app.kubernetes.io/name`).
    pub app: Option<String>,
    /// `LABELS.version`.
    pub version: Option<String>,
    /// `NAMESPACE`.
    pub namespace: Option<String>,
    /// `SERVICE_ACCOUNT`.
    pub service_account: Option<String>,
}

/// A finished request's edge facts, as raw property bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct EdgeFacts<'a> {
    /// `connection.uri_san_peer_certificate`.
    pub peer_san: Option<&'a [u8]>,
    /// `request.method`.
    pub method: Option<&'a [u8]>,
    /// `request.path`.
    pub path: Option<&'a [u8]>,
    /// `xds.cluster_name`.
    pub cluster: Option<&'a [u8]>,
}

/// Requests not attributed to an edge, counted by the lease holder as it
/// takes the workers' edges for its report (so it equals the report's
/// `edges_overflow` sum, whatever stage folded them).
pub const UNATTRIBUTED_METRIC: &str = "vigil_edges_overflow_requests_total";

/// The worker's edge state.
#[derive(Debug)]
pub struct EdgeState {
    cfg: EdgesConfig,
    service: String,
    version: String,
    identity: String,
    agg: EdgeAggregator,
    /// Edges not yet merged into shared data (CAS exhausted).
    pending: EdgeBatch,
    exported: [u64; 3],
    metric_ids: Option<[Option<u32>; 4]>,
}

fn clean(s: &[u8]) -> String {
    String::from_utf8_lossy(s)
        .chars()
        .filter(|c| !c.is_control())
        .take(256)
        .collect()
}

/// Destination (service, version) of an outbound cluster name.
pub fn cluster_destination(cluster: &[u8]) -> (String, String) {
    if let Some((subset, host)) = istio_subset_host(cluster) {
        let name = host.split(|&b| b == b'.').next().unwrap_or(host);
        return (clean(name), clean(subset));
    }
    (clean(cluster), String::new())
}

impl EdgeState {
    /// Edge state of an enabled configuration; `sidecar` is the fallback identity.
    pub fn new(cfg: &EdgesConfig, node: &NodeFacts, sidecar: &str) -> Self {
        let identity = cfg.identity.clone().unwrap_or_else(|| {
            match (&node.namespace, &node.service_account) {
                (Some(ns), Some(sa)) => format!("spiffe://{}/ns/{ns}/sa/{sa}", cfg.trust_domain),
                _ => sidecar.to_string(),
            }
        });
        EdgeState {
            service: cfg
                .service
                .clone()
                .or_else(|| node.app.clone())
                .unwrap_or_else(|| "unknown".to_string()),
            version: cfg
                .version
                .clone()
                .or_else(|| node.version.clone())
                .unwrap_or_default(),
            identity,
            agg: EdgeAggregator::new(cfg.caps),
            pending: EdgeBatch::default(),
            exported: [0; 3],
            metric_ids: None,
            cfg: cfg.clone(),
        }
    }

    /// This workload's identity (outbound source).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The aggregator (tests, benches).
    pub fn aggregator(&self) -> &EdgeAggregator {
        &self.agg
    }

    /// Count one finished request.
    pub fn record(
        &mut self,
        facts: &EdgeFacts<'_>,
        status: u16,
        is_error: bool,
        latency_us: Option<u64>,
    ) {
        self.record_timed(facts, status, is_error, latency_us, None, false);
    }

    /// [`EdgeState::record`] with the time to first byte and whether the
    /// response was streamed (two or more body chunks).
    pub fn record_timed(
        &mut self,
        facts: &EdgeFacts<'_>,
        status: u16,
        is_error: bool,
        latency_us: Option<u64>,
        ttft_us: Option<u64>,
        streamed: bool,
    ) {
        let peer = facts.peer_san.filter(|s| !s.is_empty()).map(clean);
        let inbound = match self.cfg.direction {
            Direction::Auto => peer.is_some(),
            Direction::Inbound => true,
            Direction::Outbound => false,
        };
        let (source, service, version) = if inbound {
            (
                peer.unwrap_or_default(),
                self.service.clone(),
                self.version.clone(),
            )
        } else {
            let (s, v) = cluster_destination(facts.cluster.unwrap_or(b"none"));
            (self.identity.clone(), s, v)
        };
        self.agg.observe(&Observation {
            source: &source,
            service: &service,
            version: &version,
            method: facts.method.unwrap_or(b"OTHER"),
            path: facts.path.unwrap_or(b"/"),
            inbound,
            status,
            is_error,
            latency_us,
            ttft_us,
            streamed,
        });
    }

    /// Tick: merge this tick's edges (and what is still pending) into
    /// shared data; export the overflow counters and cardinality gauges.
    pub fn flush<S, M>(
        &mut self,
        store: &S,
        key: &str,
        attempts: u32,
        metrics: &mut MetricCache,
        sink: &mut M,
    ) where
        S: SharedStore + ?Sized,
        M: MetricSink + ?Sized,
    {
        let max = self.cfg.caps.max_edges;
        let tick = self.agg.take();
        self.pending.merge(tick, max);
        if !self.pending.is_empty() {
            let pending = &self.pending;
            let outcome = update(store, key, attempts, |current| {
                let mut merged = current.and_then(EdgeBatch::decode).unwrap_or_default();
                merged.merge(pending.clone(), max);
                merged.encode()
            });
            if let Update::Written { .. } = outcome {
                self.pending = EdgeBatch::default();
            }
        }
        let o = self.agg.overflow();
        // The unattributed-requests counter is defined here (so it reads 0
        // before any fold) but counted by the holder: see [`UNATTRIBUTED_METRIC`].
        let ids = *self.metric_ids.get_or_insert_with(|| {
            [
                "vigil_edges_overflow_templates_total",
                "vigil_edges_overflow_sources_total",
                "vigil_edges_overflow_services_total",
                UNATTRIBUTED_METRIC,
            ]
            .map(|n| metrics.define(sink, Kind::Counter, n))
        });
        for ((id, now), done) in ids
            .into_iter()
            .take(3)
            .zip([o.templates, o.sources, o.services])
            .zip(self.exported.iter_mut())
        {
            if now > *done {
                metrics.add_id(sink, id, now - *done);
                *done = now;
            }
        }
        metrics.raise_gauge(
            sink,
            "vigil_edges_templates",
            self.agg.templates_known() as u64,
        );
        metrics.raise_gauge(sink, "vigil_edges_sources", self.agg.sources_known() as u64);
        let caps = self.cfg.caps;
        for (name, v) in [
            ("vigil_edges_cap_edges", caps.max_edges),
            (
                "vigil_edges_cap_templates_per_service",
                caps.max_templates_per_service,
            ),
            ("vigil_edges_cap_sources", caps.max_sources),
            ("vigil_edges_cap_services", caps.max_services),
        ] {
            metrics.set(sink, name, v as u64);
        }
    }
}

/// Scorer: take every worker's merged edges out of shared data (leaving it
/// empty). `None` when there is nothing or the take lost every race (the
/// edges stay for the next tick).
pub fn take_shared<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    attempts: u32,
) -> Option<EdgeBatch> {
    let empty = EdgeBatch::default().encode();
    for _ in 0..attempts.max(1) {
        let (bytes, cas) = store.get(key)?;
        if bytes == empty {
            return None;
        }
        match store.set(key, &empty, Some(cas)) {
            Ok(()) => return EdgeBatch::decode(&bytes),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return None,
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::metrics::MemorySink;
    use crate::shared::MemoryStore;
    use serde_json::json;

    #[test]
    fn config_defaults_caps_and_refusals_name_the_field() {
        let c = EdgesConfig::parse(&json!({})).unwrap();
        assert!(c.enabled);
        assert_eq!(c.caps, Caps::default());
        let c = EdgesConfig::parse(&json!({"enabled": false, "max_sources": 10})).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.caps.max_sources, 10);
        for (v, field) in [
            (json!({"max_edges": 0}), "edges.max_edges"),
            (json!({"max_edges": 1_000_000}), "edges.max_edges"),
            (json!({"max_sources": "x"}), "edges.max_sources"),
            (json!({"direction": "sideways"}), "edges.direction"),
            (json!({"identity": "orders"}), "edges.identity"),
            (json!({"service": ""}), "edges.service"),
            (json!({"enabled": 1}), "edges.enabled"),
            (json!({"bogus": 1}), "edges.bogus"),
            (json!([1]), "edges"),
        ] {
            assert_eq!(EdgesConfig::parse(&v).unwrap_err().field, field, "{v}");
        }
    }

    fn facts<'a>(peer: Option<&'a [u8]>, path: &'a [u8], cluster: &'a [u8]) -> EdgeFacts<'a> {
        EdgeFacts {
            peer_san: peer,
            method: Some(b"GET"),
            path: Some(path),
            cluster: Some(cluster),
        }
    }

    #[test]
    fn inbound_uses_the_peer_san_outbound_the_local_identity() {
        let cfg = EdgesConfig {
            enabled: true,
            ..Default::default()
        };
        let node = NodeFacts {
            app: Some("orders".into()),
            version: Some("v1".into()),
            namespace: Some("shop".into()),
            service_account: Some("orders-sa".into()),
        };
        let mut s = EdgeState::new(&cfg, &node, "pod.shop");
        assert_eq!(s.identity(), "spiffe://cluster.local/ns/shop/sa/orders-sa");
        s.record(
            &facts(
                Some(b"spiffe://cluster.local/ns/shop/sa/web"),
                b"/v1/orders/7",
                b"inbound|8080||",
            ),
            200,
            false,
            Some(1000),
        );
        s.record(
            &facts(
                None,
                b"/v1/models/llama-3/infer",
                b"outbound|80|v2|models.shop.svc.cluster.local",
            ),
            503,
            true,
            Some(1000),
        );
        let store = MemoryStore::new();
        let mut metrics = MetricCache::default();
        let mut sink = MemorySink::default();
        s.flush(&store, "k", 4, &mut metrics, &mut sink);
        let b = take_shared(&store, "k", 4).unwrap();
        assert!(take_shared(&store, "k", 4).is_none(), "taken once");
        let inb = b.edges.iter().find(|e| e.inbound).unwrap();
        assert_eq!(
            (
                inb.source.as_str(),
                inb.service.as_str(),
                inb.version.as_str(),
                inb.path.as_str()
            ),
            (
                "spiffe://cluster.local/ns/shop/sa/web",
                "orders",
                "v1",
                "/v1/orders/{id}"
            )
        );
        let out = b.edges.iter().find(|e| !e.inbound).unwrap();
        assert_eq!(
            (
                out.source.as_str(),
                out.service.as_str(),
                out.version.as_str(),
                out.errors
            ),
            (
                "spiffe://cluster.local/ns/shop/sa/orders-sa",
                "models",
                "v2",
                1
            )
        );
        assert_eq!(sink.value("vigil_edges_cap_edges"), Some(1024));
    }

    #[test]
    fn two_workers_merge_into_one_batch() {
        let cfg = EdgesConfig {
            enabled: true,
            service: Some("orders".into()),
            ..Default::default()
        };
        let store = MemoryStore::new();
        let mut metrics = MetricCache::default();
        let mut sink = MemorySink::default();
        let mut a = EdgeState::new(&cfg, &NodeFacts::default(), "a");
        let mut b = EdgeState::new(&cfg, &NodeFacts::default(), "b");
        for _ in 0..3 {
            a.record(
                &facts(Some(b"spiffe://x/ns/n/sa/web"), b"/o/1", b"c"),
                200,
                false,
                None,
            );
            b.record(
                &facts(Some(b"spiffe://x/ns/n/sa/web"), b"/o/2", b"c"),
                200,
                false,
                None,
            );
        }
        a.flush(&store, "k", 4, &mut metrics, &mut sink);
        b.flush(&store, "k", 4, &mut metrics, &mut sink);
        let batch = take_shared(&store, "k", 4).unwrap();
        assert_eq!(batch.edges.len(), 1);
        assert_eq!(batch.edges[0].requests, 6);
    }
}
