//! The dependency map: observed edges merged from every sidecar's reports
//! (`Report::edges`) over a sliding horizon, and the new-edge /
//! vanished-edge events after a learning period. Pure (no I/O, no clock):
//! the service feeds it reports and ticks with its own clock, then writes
//! the events to the audit log and the webhooks.
//!
//! - **Edges** are keyed by (source identity, destination service, version,
//!   method, path template). The same call can be reported twice — by the
//!   destination's sidecar (inbound, source = the peer certificate's SPIFFE
//!   id) and by the caller's (outbound) — so each edge keeps the two sides
//!   apart and the view counts the inbound side whenever one reported
//!   within the horizon, else the outbound side: never both.
//! - Counts live in time buckets (`horizon / 30` wide); what is older than
//!   the horizon is dropped, and an edge not seen for a horizon disappears.
//!   `rate_rps` is the requests in the horizon over the time observed in it.
//! - **Events** are per (source, service) pair: the first request of a pair
//!   after the learning period (which starts at the first report) is one
//!   `new-edge`; a pair silent for `vanish_ms` after the learning period is
//!   one `vanished-edge` (it can be new again later).
//! - **Nodes**: services (destinations) and principals (sources); a
//!   principal is mapped to its service when one sidecar reports inbound
//!   edges of that service and outbound edges from that principal.
//! - **Flags** (heuristics, labelled so): cycles in the service graph, and
//!   single points of failure — services two or more other services depend
//!   on, reported by one sidecar only.
//!
//! Bounded: at most [`GraphOptions::max_edges`] edges (the requests of the
//! rest are counted in `dropped_requests`), 30 buckets per edge side, at most
//! [`MAX_PAIRS`] pairs and [`MAX_SIDECARS`] sidecars remembered.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use vigil_scorer::histogram::LatencyHistogram;
use vigil_traffic::stats::Stats;
use vigil_wire::edges::Edge;

/// Most (source, service) pairs remembered.
pub const MAX_PAIRS: usize = 50_000;
/// Most sidecars whose identities are remembered.
pub const MAX_SIDECARS: usize = 10_000;
/// Buckets per edge side.
const BUCKETS: u64 = 30;

/// Horizon, learning period and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphOptions {
    /// Sliding horizon of the counts, ms.
    pub horizon_ms: u64,
    /// No events until this long after the first report, ms.
    pub learning_ms: u64,
    /// A pair silent this long has vanished, ms.
    pub vanish_ms: u64,
    /// Most edges held.
    pub max_edges: usize,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            horizon_ms: 15 * 60_000,
            learning_ms: 5 * 60_000,
            vanish_ms: 10 * 60_000,
            max_edges: 20_000,
        }
    }
}

/// A new or vanished (source, service) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphEvent {
    /// `new-edge` or `vanished-edge`.
    pub kind: &'static str,
    /// Caller identity.
    pub source: String,
    /// Destination service.
    pub service: String,
    /// When the pair was first seen, ms.
    pub first_seen_ms: u64,
    /// When the pair was last seen, ms.
    pub last_seen_ms: u64,
    /// The first (method, path) seen on a new pair.
    pub sample: Option<(String, String)>,
    /// Who reported it first.
    pub reporter: String,
}

impl GraphEvent {
    /// The event as JSON (webhook payload, audit evidence).
    pub fn to_json(&self) -> Value {
        json!({"event": self.kind, "source": self.source, "service": self.service,
               "first_seen_ms": self.first_seen_ms, "last_seen_ms": self.last_seen_ms,
               "method": self.sample.as_ref().map(|s| s.0.clone()),
               "path": self.sample.as_ref().map(|s| s.1.clone()),
               "reporter": self.reporter})
    }

    /// One line for a human.
    pub fn explain(&self) -> String {
        match self.kind {
            "new-edge" => format!(
                "new edge after the learning period: {} now calls {}{}",
                self.source,
                self.service,
                self.sample
                    .as_ref()
                    .map(|(m, p)| format!(" ({m} {p})"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "edge vanished: {} has not called {} since {} ms",
                self.source, self.service, self.last_seen_ms
            ),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    start_ms: u64,
    stats: Stats,
}

#[derive(Debug, Clone, Default)]
struct Side {
    buckets: VecDeque<Bucket>,
    last_ms: Option<u64>,
}

impl Side {
    fn add(&mut self, e: &Edge, now_ms: u64, width: u64) {
        let start = now_ms - now_ms % width.max(1);
        if self.buckets.back().is_none_or(|b| b.start_ms != start) {
            self.buckets.push_back(Bucket {
                start_ms: start,
                ..Default::default()
            });
            while self.buckets.len() as u64 > BUCKETS + 1 {
                self.buckets.pop_front();
            }
        }
        if let Some(b) = self.buckets.back_mut() {
            b.stats.merge_edge(e);
        }
        self.last_ms = Some(now_ms);
    }

    fn prune(&mut self, cutoff_ms: u64) {
        while self.buckets.front().is_some_and(|b| b.start_ms < cutoff_ms) {
            self.buckets.pop_front();
        }
    }

    fn requests(&self) -> u64 {
        self.buckets.iter().map(|b| b.stats.requests).sum()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    first_seen_ms: u64,
    last_seen_ms: u64,
    inbound: Side,
    outbound: Side,
    reporters: BTreeSet<String>,
    /// Per reporting sidecar (≤ 16), since first seen: (requests, errors).
    by_reporter: BTreeMap<String, (u64, u64)>,
}

#[derive(Debug, Clone)]
struct Pair {
    first_seen_ms: u64,
    last_seen_ms: u64,
}

type Key = (String, String, String, String, String);

/// Counts and timestamps of one edge over the horizon, as served.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeView {
    /// Caller identity.
    pub source: String,
    /// The caller's service, when known.
    pub source_service: Option<String>,
    /// Destination service.
    pub service: String,
    /// Destination version.
    pub version: String,
    /// Method.
    pub method: String,
    /// Path template.
    pub path: String,
    /// Requests in the horizon.
    pub requests: u64,
    /// 5xx / no response.
    pub errors: u64,
    /// 4xx.
    pub status_4xx: u64,
    /// 401/403.
    pub denied: u64,
    /// Merged latency histogram (sparse).
    pub latency: Vec<(u16, u32)>,
    /// Requests per second over the observed part of the horizon.
    pub rate_rps: f64,
    /// First seen, ms.
    pub first_seen_ms: u64,
    /// Last seen, ms.
    pub last_seen_ms: u64,
    /// `inbound` or `outbound`: which side's counts these are.
    pub observed_by: &'static str,
    /// Sidecars that reported it.
    pub reporters: Vec<String>,
    /// Time-to-first-byte histogram (sparse).
    pub ttft: Vec<(u16, u32)>,
    /// Streamed responses.
    pub streamed: u64,
    /// Per reporting sidecar since first seen: (requests, errors) — on the
    /// inbound side, one destination instance each.
    pub by_reporter: Vec<(String, u64, u64)>,
}

impl EdgeView {
    /// Latency quantile, ms (`None` without latency samples).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let mut h = LatencyHistogram::new();
        h.merge_sparse(&self.latency);
        h.quantile_us(q).map(|us| us / 1000.0)
    }

    fn to_json(&self) -> Value {
        let r = |x: Option<f64>| x.map(|v| (v * 1000.0).round() / 1000.0);
        json!({"source": self.source, "source_service": self.source_service,
               "service": self.service, "version": self.version, "method": self.method,
               "path": self.path, "requests": self.requests, "errors": self.errors,
               "status_4xx": self.status_4xx, "denied": self.denied,
               "error_ratio": if self.requests > 0 { self.errors as f64 / self.requests as f64 } else { 0.0 },
               "rate_rps": (self.rate_rps * 1000.0).round() / 1000.0,
               "latency_p50_ms": r(self.quantile_ms(0.5)), "latency_p99_ms": r(self.quantile_ms(0.99)),
               "latency_p999_ms": r(self.quantile_ms(0.999)),
               "first_seen_ms": self.first_seen_ms, "last_seen_ms": self.last_seen_ms,
               "observed_by": self.observed_by, "reporters": self.reporters})
    }
}

/// The dependency map.
#[derive(Debug, Default)]
pub struct Graph {
    opts: GraphOptions,
    started_ms: Option<u64>,
    edges: BTreeMap<Key, Entry>,
    pairs: BTreeMap<(String, String), Pair>,
    /// Per sidecar: the outbound identity and the inbound services it reported.
    sidecars: BTreeMap<String, (Option<String>, BTreeSet<String>)>,
    events: Vec<GraphEvent>,
    reported_overflow: u64,
    dropped_requests: u64,
}

impl Graph {
    /// An empty map.
    pub fn new(opts: GraphOptions) -> Self {
        Graph {
            opts,
            ..Default::default()
        }
    }

    /// The options.
    pub fn options(&self) -> GraphOptions {
        self.opts
    }

    /// Replace the options (before traffic; counts already held stay).
    pub fn set_options(&mut self, opts: GraphOptions) {
        self.opts = opts;
    }

    fn learned(&self, now_ms: u64) -> bool {
        self.started_ms
            .is_some_and(|s| now_ms >= s.saturating_add(self.opts.learning_ms))
    }

    /// Merge one report's edges at the service clock `now_ms`.
    pub fn ingest(&mut self, sidecar: &str, edges: &[Edge], overflow: u64, now_ms: u64) {
        if edges.is_empty() && overflow == 0 {
            return;
        }
        self.started_ms.get_or_insert(now_ms);
        self.reported_overflow = self.reported_overflow.saturating_add(overflow);
        let width = (self.opts.horizon_ms / BUCKETS).max(1);
        let learned = self.learned(now_ms);
        for e in edges {
            if e.requests == 0 {
                continue;
            }
            if self.sidecars.len() < MAX_SIDECARS || self.sidecars.contains_key(sidecar) {
                let s = self.sidecars.entry(sidecar.to_string()).or_default();
                if e.inbound {
                    if s.1.len() < 64 {
                        s.1.insert(e.service.clone());
                    }
                } else {
                    s.0 = Some(e.source.clone());
                }
            }
            let key: Key = (
                e.source.clone(),
                e.service.clone(),
                e.version.clone(),
                e.method.clone(),
                e.path.clone(),
            );
            if !self.edges.contains_key(&key) && self.edges.len() >= self.opts.max_edges {
                self.dropped_requests = self.dropped_requests.saturating_add(e.requests);
                continue;
            }
            let entry = self.edges.entry(key).or_insert_with(|| Entry {
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                inbound: Side::default(),
                outbound: Side::default(),
                reporters: BTreeSet::new(),
                by_reporter: BTreeMap::new(),
            });
            entry.last_seen_ms = now_ms;
            if entry.reporters.len() < 16 {
                entry.reporters.insert(sidecar.to_string());
            }
            if e.inbound
                && (entry.by_reporter.len() < 16 || entry.by_reporter.contains_key(sidecar))
            {
                let r = entry.by_reporter.entry(sidecar.to_string()).or_default();
                r.0 = r.0.saturating_add(e.requests);
                r.1 = r.1.saturating_add(e.errors);
            }
            if e.inbound {
                entry.inbound.add(e, now_ms, width);
            } else {
                entry.outbound.add(e, now_ms, width);
            }
            let pk = (e.source.clone(), e.service.clone());
            let room = self.pairs.len() < MAX_PAIRS;
            match self.pairs.get_mut(&pk) {
                Some(p) => p.last_seen_ms = now_ms,
                None if room => {
                    if learned {
                        self.events.push(GraphEvent {
                            kind: "new-edge",
                            source: pk.0.clone(),
                            service: pk.1.clone(),
                            first_seen_ms: now_ms,
                            last_seen_ms: now_ms,
                            sample: Some((e.method.clone(), e.path.clone())),
                            reporter: sidecar.to_string(),
                        });
                    }
                    self.pairs.insert(
                        pk,
                        Pair {
                            first_seen_ms: now_ms,
                            last_seen_ms: now_ms,
                        },
                    );
                }
                None => {}
            }
        }
    }

    /// Expire what left the horizon, find vanished pairs; the events since
    /// the last tick.
    pub fn tick(&mut self, now_ms: u64) -> Vec<GraphEvent> {
        let cutoff = now_ms.saturating_sub(self.opts.horizon_ms);
        self.edges.retain(|_, e| {
            e.inbound.prune(cutoff);
            e.outbound.prune(cutoff);
            e.last_seen_ms >= cutoff
        });
        let learned = self.learned(now_ms);
        let vanish = now_ms.saturating_sub(self.opts.vanish_ms);
        let mut gone = Vec::new();
        self.pairs.retain(|(source, service), p| {
            if p.last_seen_ms >= vanish {
                return true;
            }
            if learned {
                gone.push(GraphEvent {
                    kind: "vanished-edge",
                    source: source.clone(),
                    service: service.clone(),
                    first_seen_ms: p.first_seen_ms,
                    last_seen_ms: p.last_seen_ms,
                    sample: None,
                    reporter: String::new(),
                });
            }
            false
        });
        let mut out = std::mem::take(&mut self.events);
        out.extend(gone);
        out
    }

    /// principal → service, from sidecars that reported both sides.
    fn principal_services(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (identity, services) in self.sidecars.values() {
            if let (Some(id), Some(s)) = (identity, services.iter().next()) {
                out.insert(id.clone(), s.clone());
            }
        }
        out
    }

    /// Every edge in the horizon, counted once (inbound side preferred).
    pub fn edges(&self, now_ms: u64) -> Vec<EdgeView> {
        let cutoff = now_ms.saturating_sub(self.opts.horizon_ms);
        let principals = self.principal_services();
        let mut out = Vec::with_capacity(self.edges.len());
        for ((source, service, version, method, path), e) in &self.edges {
            let (side, observed_by) = if e.inbound.requests() > 0 {
                (&e.inbound, "inbound")
            } else {
                (&e.outbound, "outbound")
            };
            let mut v = EdgeView {
                source: source.clone(),
                source_service: principals.get(source).cloned(),
                service: service.clone(),
                version: version.clone(),
                method: method.clone(),
                path: path.clone(),
                requests: 0,
                errors: 0,
                status_4xx: 0,
                denied: 0,
                latency: Vec::new(),
                rate_rps: 0.0,
                first_seen_ms: e.first_seen_ms,
                last_seen_ms: e.last_seen_ms,
                observed_by,
                reporters: e.reporters.iter().cloned().collect(),
                ttft: Vec::new(),
                streamed: 0,
                by_reporter: e
                    .by_reporter
                    .iter()
                    .map(|(k, (n, err))| (k.clone(), *n, *err))
                    .collect(),
            };
            let mut total = Stats::default();
            for b in &side.buckets {
                total.merge(&b.stats);
            }
            v.requests = total.requests;
            v.errors = total.errors;
            v.status_4xx = total.status_4xx;
            v.denied = total.denied;
            v.streamed = total.streamed;
            v.ttft = total.ttft;
            if v.requests == 0 {
                continue;
            }
            v.latency = total.latency;
            let since = e.first_seen_ms.max(cutoff);
            let span_s = (now_ms.saturating_sub(since) as f64 / 1000.0).max(1.0);
            v.rate_rps = v.requests as f64 / span_s;
            out.push(v);
        }
        out
    }

    /// `GET /v1/graph`: nodes, edges, flags, overflow.
    pub fn view(&self, now_ms: u64) -> Value {
        let edges = self.edges(now_ms);
        let principals = self.principal_services();
        let mut services: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut sources: BTreeSet<String> = BTreeSet::new();
        for e in &edges {
            let vs = services.entry(e.service.clone()).or_default();
            if !e.version.is_empty() {
                vs.insert(e.version.clone());
            }
            sources.insert(e.source.clone());
        }
        let mut nodes: Vec<Value> = services
            .iter()
            .map(|(s, versions)| {
                let ids: Vec<&String> = principals
                    .iter()
                    .filter(|(_, svc)| *svc == s)
                    .map(|(p, _)| p)
                    .collect();
                json!({"id": s, "kind": "service", "versions": versions, "identities": ids})
            })
            .collect();
        for p in &sources {
            nodes.push(json!({"id": p, "kind": "principal", "service": principals.get(p)}));
        }
        let (cycles, spofs) = self.flags(&edges);
        json!({
            "horizon_s": self.opts.horizon_ms / 1000,
            "learning": !self.learned(now_ms),
            "learning_until_ms": self.started_ms.map(|s| s.saturating_add(self.opts.learning_ms)),
            "nodes": nodes,
            "edges": edges.iter().map(EdgeView::to_json).collect::<Vec<_>>(),
            "flags": {"heuristic": true, "cycles": cycles, "single_points_of_failure": spofs},
            "overflow": {"reported_unattributed_requests": self.reported_overflow,
                         "dropped_requests": self.dropped_requests},
        })
    }

    /// Cycles among services (caller service → service) and single points
    /// of failure (depended on by ≥ 2 services, reported by one sidecar).
    fn flags(&self, edges: &[EdgeView]) -> (Vec<Vec<String>>, Vec<Value>) {
        let mut adj: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut reporters: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for e in edges {
            if let Some(from) = &e.source_service {
                if from != &e.service {
                    adj.entry(from).or_default().insert(&e.service);
                }
            }
            if e.observed_by == "inbound" {
                let r = reporters.entry(&e.service).or_default();
                r.extend(e.reporters.iter().map(String::as_str));
            }
        }
        // Cycles: a DFS from every node, reporting each cycle once (rotated
        // to start at its smallest node).
        let mut cycles: BTreeSet<Vec<String>> = BTreeSet::new();
        for &start in adj.keys() {
            let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
            while let Some((node, path)) = stack.pop() {
                if cycles.len() >= 100 || path.len() > 16 {
                    continue;
                }
                for &next in adj.get(node).into_iter().flatten() {
                    if next == start {
                        let mut c: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                        if let Some(min) = c.iter().enumerate().min_by_key(|x| x.1).map(|x| x.0) {
                            c.rotate_left(min);
                        }
                        cycles.insert(c);
                    } else if !path.contains(&next) && next > start {
                        let mut p = path.clone();
                        p.push(next);
                        stack.push((next, p));
                    }
                }
            }
        }
        let mut dependents: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (from, tos) in &adj {
            for to in tos {
                dependents.entry(to).or_default().insert(from);
            }
        }
        let spofs = dependents
            .iter()
            .filter(|(s, d)| d.len() >= 2 && reporters.get(*s).is_some_and(|r| r.len() == 1))
            .map(|(s, d)| json!({"service": s, "dependents": d, "instances_reporting": 1}))
            .collect();
        (cycles.into_iter().collect(), spofs)
    }

    /// The view as Graphviz DOT (services and principals as nodes; edges
    /// labelled with method, template and counts).
    pub fn dot(&self, now_ms: u64) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::from("digraph vigil {\n  rankdir=LR;\n  node [shape=box];\n");
        let edges = self.edges(now_ms);
        let mut seen = BTreeSet::new();
        for e in &edges {
            let from = e.source_service.clone().unwrap_or_else(|| e.source.clone());
            if seen.insert(from.clone()) && e.source_service.is_none() {
                out.push_str(&format!("  {} [shape=ellipse];\n", q(&from)));
            }
            let label = format!(
                "{} {}\\n{} req, {} err{}",
                e.method,
                e.path,
                e.requests,
                e.errors,
                e.quantile_ms(0.99)
                    .map(|p| format!(", p99 {p:.1} ms"))
                    .unwrap_or_default()
            );
            out.push_str(&format!(
                "  {} -> {} [label={}];\n",
                q(&from),
                q(&e.service),
                q(&label)
            ));
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn edge(source: &str, service: &str, path: &str, inbound: bool, n: u64) -> Edge {
        Edge {
            source: source.into(),
            service: service.into(),
            version: "v1".into(),
            method: "GET".into(),
            path: path.into(),
            inbound,
            requests: n,
            errors: 0,
            status_4xx: 0,
            denied: 0,
            latency_sum_us: 1000 * n,
            latency: vec![(vigil_scorer::histogram::bucket_index(1000), n as u32)],
            ttft: vec![],
            streamed: 0,
        }
    }

    const WEB: &str = "spiffe://td/ns/shop/sa/web";
    const ORD: &str = "spiffe://td/ns/shop/sa/orders";

    fn opts() -> GraphOptions {
        GraphOptions {
            horizon_ms: 60_000,
            learning_ms: 10_000,
            vanish_ms: 20_000,
            max_edges: 100,
        }
    }

    #[test]
    fn both_sides_count_once_and_principals_map_to_services() {
        let mut g = Graph::new(opts());
        // orders' sidecar sees web inbound; web's sidecar sees itself outbound.
        g.ingest(
            "orders-1",
            &[edge(WEB, "orders", "/o/{id}", true, 10)],
            0,
            1000,
        );
        g.ingest(
            "web-1",
            &[edge(WEB, "orders", "/o/{id}", false, 10)],
            0,
            1000,
        );
        g.ingest("orders-1", &[edge(ORD, "models", "/m", false, 4)], 0, 1000);
        let edges = g.edges(2000);
        let e = edges.iter().find(|e| e.service == "orders").unwrap();
        assert_eq!((e.requests, e.observed_by), (10, "inbound"));
        let m = edges.iter().find(|e| e.service == "models").unwrap();
        assert_eq!(m.source_service.as_deref(), Some("orders"));
        let v = g.view(2000);
        assert_eq!(v["edges"].as_array().unwrap().len(), 2);
        assert!(g.dot(2000).contains("\"orders\" -> \"models\""));
        assert!(g.tick(2000).is_empty(), "learning period: no events");
    }

    #[test]
    fn new_and_vanished_edges_after_learning_only() {
        let mut g = Graph::new(opts());
        g.ingest("orders-1", &[edge(WEB, "orders", "/o", true, 1)], 0, 0);
        g.ingest("orders-1", &[edge(WEB, "orders", "/o", true, 1)], 0, 11_000);
        // Same pair, new path: not a new edge.
        g.ingest("orders-1", &[edge(WEB, "orders", "/p", true, 1)], 0, 12_000);
        assert!(g.tick(12_000).is_empty());
        let evil = "spiffe://td/ns/other/sa/evil";
        g.ingest(
            "orders-1",
            &[edge(evil, "orders", "/o", true, 1)],
            0,
            13_000,
        );
        g.ingest(
            "orders-1",
            &[edge(evil, "orders", "/o", true, 1)],
            0,
            14_000,
        );
        let ev = g.tick(14_000);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!((ev[0].kind, ev[0].source.as_str()), ("new-edge", evil));
        assert!(ev[0].explain().contains(evil));
        // web keeps calling; evil stops.
        g.ingest("orders-1", &[edge(WEB, "orders", "/o", true, 1)], 0, 30_000);
        let ev = g.tick(35_000);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!((ev[0].kind, ev[0].source.as_str()), ("vanished-edge", evil));
        assert!(g.tick(36_000).is_empty(), "once");
        // Out of the horizon, the counts go.
        let _ = g.tick(200_000);
        assert!(g.edges(200_000).is_empty());
    }

    #[test]
    fn bounded_and_flags() {
        let mut g = Graph::new(GraphOptions {
            max_edges: 3,
            ..opts()
        });
        for i in 0..5 {
            g.ingest("s", &[edge(&format!("p{i}"), "x", "/", true, 2)], 7, 0);
        }
        assert_eq!(g.edges(1).len(), 3);
        let v = g.view(1);
        assert_eq!(v["overflow"]["dropped_requests"], 4);
        assert_eq!(v["overflow"]["reported_unattributed_requests"], 35);
        // a → b → a is a cycle; c is depended on by a and b, one instance.
        let mut g = Graph::new(opts());
        let id = |s: &str| format!("spiffe://td/ns/n/sa/{s}");
        for s in ["a", "b", "c"] {
            g.ingest(
                &format!("{s}-1"),
                &[edge(&id(s), "zz", "/", false, 1)],
                0,
                0,
            );
            g.ingest(&format!("{s}-1"), &[edge("u", s, "/", true, 1)], 0, 0);
        }
        g.ingest("b-1", &[edge(&id("a"), "b", "/", true, 1)], 0, 0);
        g.ingest("a-1", &[edge(&id("b"), "a", "/", true, 1)], 0, 0);
        g.ingest("c-1", &[edge(&id("a"), "c", "/", true, 1)], 0, 0);
        g.ingest("c-1", &[edge(&id("b"), "c", "/", true, 1)], 0, 0);
        let v = g.view(1);
        assert_eq!(v["flags"]["cycles"], json!([["a", "b"]]));
        let spof = v["flags"]["single_points_of_failure"].as_array().unwrap();
        assert!(spof.iter().any(|s| s["service"] == "c"), "{spof:?}");
    }
}
