//! The bounded edge aggregator.
//!
//! Each worker feeds [`EdgeAggregator::observe`] once per finished request
//! (no allocation for an edge already seen this tick beyond the template
//! string) and, once per tick, [`EdgeAggregator::take`]s the tick's edges
//! into an [`EdgeBatch`], which workers merge into shared data
//! ([`EdgeBatch::merge`], bounded by the same caps) and the scorer attaches
//! to its report ([`EdgeBatch::into_report_edges`], bounded in bytes).
//!
//! Cardinality is bounded by [`Caps`]; whatever exceeds a cap is folded and
//! counted ([`Overflow`]), never dropped silently:
//! - a template over `max_templates_per_service` (per destination service,
//!   remembered for the worker's life) becomes [`OVERFLOW_PATH`];
//! - a caller over `max_sources` becomes [`OVERFLOW_NAME`];
//! - a destination service over `max_services` becomes [`OVERFLOW_NAME`];
//! - a request whose edge would exceed `max_edges` this tick is not
//!   attributed and counted in `Overflow::requests`.
//!
//! Memory is therefore bounded by `max_services × max_templates_per_service`
//! templates, `max_sources` sources and `max_edges` edges, whatever the traffic
//! ([`EdgeAggregator::heap_bytes`]).

use crate::stats::Stats;
use crate::template::{template, MAX_TEMPLATE_BYTES};
use hashbrown::{HashMap, HashSet};
use vigil_wire::edges::{Edge, EDGES_TARGET_BYTES, MAX_EDGES, MAX_EDGE_NAME_BYTES};

/// Folded name of a caller or service over its cap.
pub const OVERFLOW_NAME: &str = "{overflow}";
/// Folded template over the per-service cap.
pub const OVERFLOW_PATH: &str = "/{overflow}";
/// Caller identity when none is known.
pub const UNKNOWN: &str = "unknown";

/// Cardinality caps (configuration `edges.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Edges per tick (per worker, and merged per sidecar).
    pub max_edges: usize,
    /// Distinct templates per destination service.
    pub max_templates_per_service: usize,
    /// Distinct callers.
    pub max_sources: usize,
    /// Distinct destination services.
    pub max_services: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_edges: 1024,
            max_templates_per_service: 64,
            max_sources: 256,
            max_services: 32,
        }
    }
}

/// Upper bounds of the caps (what configuration accepts).
pub const MAX_CAPS: Caps = Caps {
    max_edges: MAX_EDGES,
    max_templates_per_service: 1024,
    max_sources: 10_000,
    max_services: 1024,
};

/// Cumulative overflow counts (exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overflow {
    /// Requests whose template was folded to [`OVERFLOW_PATH`].
    pub templates: u64,
    /// Requests whose caller was folded to [`OVERFLOW_NAME`].
    pub sources: u64,
    /// Requests whose service was folded to [`OVERFLOW_NAME`].
    pub services: u64,
    /// Requests not attributed to any edge (`max_edges` or the report's byte budget).
    pub requests: u64,
}

/// One finished request, as the glue sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Caller identity (SPIFFE id); empty = unknown.
    pub source: &'a str,
    /// Destination service.
    pub service: &'a str,
    /// Destination version (may be empty).
    pub version: &'a str,
    /// `:method` bytes.
    pub method: &'a [u8],
    /// `:path` bytes (query included; it is dropped).
    pub path: &'a [u8],
    /// Seen by the destination's sidecar.
    pub inbound: bool,
    /// Response status (0: none).
    pub status: u16,
    /// Counted as an error (5xx / no response / reset).
    pub is_error: bool,
    /// Duration, µs (`None`: not counted in latency).
    pub latency_us: Option<u64>,
    /// Time to the first response byte, µs (`None`: no body or not counted).
    pub ttft_us: Option<u64>,
    /// The response came in two or more body chunks.
    pub streamed: bool,
}

/// A method name from a bounded set (others: `OTHER`).
pub fn method_name(m: &[u8]) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|k| k.as_bytes() == m)
        .unwrap_or("OTHER")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: String,
    service: String,
    version: String,
    method: &'static str,
    path: String,
    inbound: bool,
}

/// Capped interning: `name` (bounded) if it is known or there is room
/// under `cap` (then remembered), else [`OVERFLOW_NAME`] with `overflow`
/// counted.
fn intern<V: Default>(
    known: &mut HashMap<String, V>,
    cap: usize,
    overflow: &mut u64,
    name: &str,
) -> String {
    if known.contains_key(name) {
        return name.to_string();
    }
    if known.len() >= cap {
        *overflow += 1;
        return OVERFLOW_NAME.to_string();
    }
    let s = bounded(name);
    known.entry(s.clone()).or_default();
    s
}

fn bounded(s: &str) -> String {
    if s.len() <= MAX_EDGE_NAME_BYTES && !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_EDGE_NAME_BYTES)
        .collect();
    while out.len() > MAX_EDGE_NAME_BYTES {
        out.pop();
    }
    out
}

/// The per-worker aggregator.
#[derive(Debug)]
pub struct EdgeAggregator {
    caps: Caps,
    /// Templates known per service (for the worker's life).
    templates: HashMap<String, HashSet<String>>,
    /// Callers known (for the worker's life).
    sources: HashMap<String, ()>,
    /// This tick's edges.
    edges: HashMap<Key, Stats>,
    /// This tick's unattributed requests.
    tick_overflow: u64,
    overflow: Overflow,
}

impl EdgeAggregator {
    /// An empty aggregator with these caps.
    pub fn new(caps: Caps) -> Self {
        EdgeAggregator {
            caps,
            templates: HashMap::new(),
            sources: HashMap::new(),
            edges: HashMap::new(),
            tick_overflow: 0,
            overflow: Overflow::default(),
        }
    }

    /// The caps.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Cumulative overflow counts.
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// Edges held this tick.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether no edge is held this tick.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty() && self.tick_overflow == 0
    }

    /// Distinct templates remembered over all services.
    pub fn templates_known(&self) -> usize {
        self.templates.values().map(HashSet::len).sum()
    }

    /// Distinct callers remembered.
    pub fn sources_known(&self) -> usize {
        self.sources.len()
    }

    fn service_name(&mut self, service: &str) -> String {
        intern(
            &mut self.templates,
            self.caps.max_services,
            &mut self.overflow.services,
            service,
        )
    }

    fn source_name(&mut self, source: &str) -> String {
        let source = if source.is_empty() { UNKNOWN } else { source };
        intern(
            &mut self.sources,
            self.caps.max_sources,
            &mut self.overflow.sources,
            source,
        )
    }

    fn path_template(&mut self, service: &str, path: &[u8]) -> String {
        let t = template(path);
        let cap = self.caps.max_templates_per_service;
        let Some(known) = self.templates.get_mut(service) else {
            // The overflow service: its templates are not remembered.
            return OVERFLOW_PATH.to_string();
        };
        if known.contains(&t) {
            return t;
        }
        if known.len() >= cap {
            self.overflow.templates += 1;
            return OVERFLOW_PATH.to_string();
        }
        known.insert(t.clone());
        t
    }

    /// Count one finished request.
    pub fn observe(&mut self, o: &Observation<'_>) {
        let service = self.service_name(if o.service.is_empty() {
            UNKNOWN
        } else {
            o.service
        });
        let source = self.source_name(o.source);
        let path = self.path_template(&service, o.path);
        let key = Key {
            source,
            service,
            version: bounded(o.version),
            method: method_name(o.method),
            path,
            inbound: o.inbound,
        };
        let full = self.edges.len() >= self.caps.max_edges;
        let stats = match self.edges.get_mut(&key) {
            Some(s) => s,
            None if full => {
                self.tick_overflow += 1;
                self.overflow.requests += 1;
                return;
            }
            None => self.edges.entry(key).or_default(),
        };
        stats.observe(o.status, o.is_error, o.latency_us, o.ttft_us, o.streamed);
    }

    /// Take this tick's edges (the aggregator keeps its known templates and callers).
    pub fn take(&mut self) -> EdgeBatch {
        let edges = self
            .edges
            .drain()
            .map(|(k, s)| {
                let mut e = Edge {
                    source: k.source,
                    service: k.service,
                    version: k.version,
                    method: k.method.to_string(),
                    path: k.path,
                    inbound: k.inbound,
                    requests: 0,
                    errors: 0,
                    status_4xx: 0,
                    denied: 0,
                    latency_sum_us: 0,
                    latency: Vec::new(),
                    ttft: Vec::new(),
                    streamed: 0,
                };
                s.put_into(&mut e);
                e
            })
            .collect();
        EdgeBatch {
            edges,
            overflow: std::mem::take(&mut self.tick_overflow),
        }
    }

    /// Approximate heap bytes (templates, callers, this tick's edges).
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self
            .templates
            .iter()
            .map(|(s, t)| s.capacity() + 48 + t.iter().map(|x| x.capacity() + 32).sum::<usize>())
            .sum();
        let sources: usize = self.sources.keys().map(|s| s.capacity() + 32).sum();
        let edges: usize = self
            .edges
            .iter()
            .map(|(k, s)| {
                k.source.capacity()
                    + k.service.capacity()
                    + k.version.capacity()
                    + k.path.capacity()
                    + s.latency.capacity() * 8
                    + 160
            })
            .sum();
        strings + sources + edges
    }
}

/// A set of edges in transit: one worker's tick, the merged pending edges in
/// shared data, or what goes into one report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeBatch {
    /// Edges, one per key.
    pub edges: Vec<Edge>,
    /// Requests not attributed to an edge.
    pub overflow: u64,
}

fn merge_edge(into: &mut Edge, e: &Edge) {
    let mut s = Stats::take_from(into);
    s.merge_edge(e);
    s.put_into(into);
}

impl EdgeBatch {
    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty() && self.overflow == 0
    }

    /// Merge `other` in, keeping at most `max_edges` edges; the requests of
    /// edges that do not fit are counted in `overflow`.
    pub fn merge(&mut self, other: EdgeBatch, max_edges: usize) {
        self.overflow = self.overflow.saturating_add(other.overflow);
        let mut index: HashMap<(String, String, String, String, String, bool), usize> = self
            .edges
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let k = e.key();
                (
                    (
                        k.0.into(),
                        k.1.into(),
                        k.2.into(),
                        k.3.into(),
                        k.4.into(),
                        k.5,
                    ),
                    i,
                )
            })
            .collect();
        for e in other.edges {
            let k = e.key();
            let k = (
                k.0.into(),
                k.1.into(),
                k.2.into(),
                k.3.into(),
                k.4.into(),
                k.5,
            );
            let len = self.edges.len();
            match index.get(&k).and_then(|&i| self.edges.get_mut(i)) {
                Some(into) => merge_edge(into, &e),
                None if len >= max_edges => {
                    self.overflow = self.overflow.saturating_add(e.requests);
                }
                None => {
                    index.insert(k, self.edges.len());
                    self.edges.push(e);
                }
            }
        }
    }

    /// Shared-data encoding (JSON `{"e":[edges…],"o":overflow}`).
    pub fn encode(&self) -> Vec<u8> {
        let v = serde_json::json!({"e": self.edges, "o": self.overflow});
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Decode [`EdgeBatch::encode`]'s bytes; `None` if they are not one.
    pub fn decode(bytes: &[u8]) -> Option<EdgeBatch> {
        #[derive(serde::Deserialize)]
        struct Doc {
            e: Vec<Edge>,
            o: u64,
        }
        let d: Doc = serde_json::from_slice(bytes).ok()?;
        let ok =
            d.e.iter()
                .all(|e| vigil_wire::edges::validate_edge(e).is_ok());
        ok.then_some(EdgeBatch {
            edges: d.e,
            overflow: d.o,
        })
    }

    /// The report's edges and overflow: the busiest edges first, within
    /// [`EDGES_TARGET_BYTES`] and [`MAX_EDGES`]; the rest counted as overflow.
    pub fn into_report_edges(mut self) -> (Vec<Edge>, u64) {
        self.edges.sort_by_key(|e| std::cmp::Reverse(e.requests));
        let mut out = Vec::with_capacity(self.edges.len().min(MAX_EDGES));
        let mut bytes = 0usize;
        let mut overflow = self.overflow;
        for e in self.edges {
            let size = serde_json::to_vec(&e).map_or(usize::MAX / 2, |v| v.len() + 1);
            if out.len() >= MAX_EDGES || bytes + size > EDGES_TARGET_BYTES {
                overflow = overflow.saturating_add(e.requests);
                continue;
            }
            bytes += size;
            out.push(e);
        }
        (out, overflow)
    }
}

/// Longest encoded edge, bytes (five bounded names and a full histogram): a
/// sizing aid for the shared-data value.
pub const MAX_EDGE_BYTES: usize = 5 * MAX_EDGE_NAME_BYTES + MAX_TEMPLATE_BYTES + 4096;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn obs<'a>(source: &'a str, path: &'a [u8], status: u16) -> Observation<'a> {
        Observation {
            source,
            service: "orders",
            version: "v1",
            method: b"GET",
            path,
            inbound: true,
            status,
            is_error: status >= 500,
            latency_us: Some(2_000),
            ttft_us: Some(1_000),
            streamed: false,
        }
    }

    #[test]
    fn aggregates_by_template_and_classes() {
        let mut a = EdgeAggregator::new(Caps::default());
        a.observe(&obs("spiffe://td/ns/shop/sa/web", b"/v1/orders/1", 200));
        a.observe(&obs("spiffe://td/ns/shop/sa/web", b"/v1/orders/2?x=y", 503));
        a.observe(&obs("spiffe://td/ns/shop/sa/web", b"/v1/orders/3", 403));
        a.observe(&obs("", b"/v1/orders/3", 404));
        let b = a.take();
        assert_eq!(b.edges.len(), 2);
        let web = b.edges.iter().find(|e| e.source.ends_with("web")).unwrap();
        assert_eq!(web.path, "/v1/orders/{id}");
        assert_eq!(
            (web.requests, web.errors, web.status_4xx, web.denied),
            (3, 1, 1, 1)
        );
        assert_eq!(web.latency.iter().map(|x| x.1).sum::<u32>(), 3);
        let unknown = b.edges.iter().find(|e| e.source == UNKNOWN).unwrap();
        assert_eq!(
            (unknown.requests, unknown.status_4xx, unknown.denied),
            (1, 1, 0)
        );
        for e in &b.edges {
            vigil_wire::edges::validate_edge(e).unwrap();
        }
        assert!(a.take().is_empty());
    }

    #[test]
    fn caps_fold_and_count() {
        let caps = Caps {
            max_edges: 50,
            max_templates_per_service: 10,
            max_sources: 5,
            max_services: 2,
        };
        let mut a = EdgeAggregator::new(caps);
        for i in 0..1000 {
            let src = format!("spiffe://td/ns/x/sa/caller-{i}");
            let path = format!("/p{}/x", char::from(b'a' + (i % 26) as u8));
            a.observe(&obs(&src, path.as_bytes(), 200));
        }
        let o = a.overflow();
        assert_eq!(a.sources_known(), 5);
        assert_eq!(a.templates_known(), 10);
        assert_eq!(o.sources, 995);
        assert!(o.templates > 0);
        let b = a.take();
        assert!(b.edges.len() <= 50);
        let total: u64 = b.edges.iter().map(|e| e.requests).sum::<u64>() + b.overflow;
        assert_eq!(total, 1000, "every request is attributed or counted");
        // Services.
        for s in ["a", "b", "c", "d"] {
            a.observe(&Observation {
                service: s,
                ..obs("x", b"/", 200)
            });
        }
        assert_eq!(a.overflow().services, 3, "orders and a fit, b c d fold");
    }

    #[test]
    fn merge_is_bounded_and_round_trips() {
        let mut a = EdgeAggregator::new(Caps::default());
        for i in 0..20 {
            a.observe(&obs(&format!("s{i}"), b"/a", 200));
        }
        let b1 = a.take();
        for i in 10..30 {
            a.observe(&obs(&format!("s{i}"), b"/a", 500));
        }
        let b2 = a.take();
        let mut m = EdgeBatch::decode(&b1.encode()).unwrap();
        m.merge(EdgeBatch::decode(&b2.encode()).unwrap(), 25);
        assert_eq!(m.edges.len(), 25);
        assert_eq!(m.overflow, 5);
        let s15 = m.edges.iter().find(|e| e.source == "s15").unwrap();
        assert_eq!((s15.requests, s15.errors), (2, 1));
        assert!(EdgeBatch::decode(b"garbage").is_none());
        let (edges, overflow) = m.into_report_edges();
        assert_eq!((edges.len(), overflow), (25, 5));
        assert_eq!(edges[0].requests, 2);
    }
}
