//! One worker VM's logic: the request path and the tick protocol.
//!
//! Request path (no shared-data access): [`Worker::steer_decision`] answers
//! from the cached verdict table whether a managed route is steered to stable;
//! [`Worker::record`] adds a finished request to the local window.
//!
//! Tick ([`Worker::on_tick`]), on every worker:
//! 1. re-read the series registry if it changed (a slot whose series was
//!    evicted registers again), register new local series;
//! 2. merge each series' pending observations into its epoch-tagged `d.<id>`
//!    with bounded CAS retries (what cannot be merged stays pending, so
//!    nothing is lost), add the request/error counts to Envoy counters, and
//!    drop local slots idle for `series_idle_s`;
//! 3. take or renew the scorer lease; the holder takes every series' merged
//!    delta, feeds the scorer, evicts series idle for `series_idle_s`, pairs
//!    canaries with their stable peers, runs the steering hysteresis,
//!    publishes the verdict table and sets the gauges;
//! 4. re-read the verdict table into the local cache.
//!
//! Every key is this configuration's ([`crate::keys::Keys`]: namespaced by
//! configuration identity and format). [`Worker::on_done`] flushes what is
//! left when Envoy removes the plugin (a configuration update).
//!
//! Files: this one holds the [`Worker`] and its request-side API;
//! `tick` the tick protocol (registration, merging pending deltas, the
//! lease, the unmatched-canary watch); `score` the lease holder's scoring
//! pass; `verdict_cache` every worker's copy of the published verdicts;
//! `control_calls` the control-service report, routing fetch and
//! weights; `flush` counters flushed to Envoy stats.

mod control_calls;
mod flush;
mod score;
mod tick;
mod verdict_cache;

use crate::config::{CanarySpec, Mode, PluginConfig};
use crate::control::{Routing, Split};
use crate::keys::Keys;
use crate::lifecycle::{idle_ticks, IdleTracker};
use crate::local::LocalTable;
use crate::metrics::{GaugeSlot, MetricCache};
use crate::registry::{
    series_name, split_name, Capacity, Registry, NAME_SEPARATOR, OVERFLOW_CLUSTER, OVERFLOW_ROUTE,
};
use crate::request::RequestRecord;
use crate::steering::{match_series, SteerController};
use crate::verdicts::{signal_code, VerdictTable};
use hashbrown::HashMap;
use vigil_scorer::sequential::CanaryMonitor;
use vigil_scorer::series::SeriesState;
use vigil_scorer::ttft::TtftWindow;
use vigil_scorer::verdict::{Signal, State};

/// Severity of an engine log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Routine.
    Info,
    /// Needs attention (a canary turned critical, steering started).
    Warn,
}

/// Counters of the shared-data protocol, cumulative, for tests and benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtocolStats {
    /// CAS conflicts retried.
    pub cas_retries: u64,
    /// Updates abandoned after the bounded retries (data kept for next tick).
    pub cas_exhausted: u64,
    /// Scoring passes run while holding the lease.
    pub scoring_passes: u64,
    /// Self-baselines resumed from a checkpoint (after a lease move).
    pub baselines_restored: u64,
    /// Self-baseline checkpoints written to shared data.
    pub checkpoints_written: u64,
    /// `level_shift` events (a self-baseline adopted a sustained new level).
    pub level_shifts: u64,
    /// Series evicted from the registry after `series_idle_s` without a request.
    pub series_evicted: u64,
    /// Pending records dropped because they belonged to an evicted series
    /// whose id was reused (the requests are still in the Envoy counters).
    pub stale_records: u64,
}

/// The lease holder checkpoints every series' self-baseline this often
/// (ticks), so a new holder resumes it instead of warming up. The writes are
/// spread and batched ([`crate::checkpoints`]): each tick writes the id
/// groups `g` with `(g + generation) % CHECKPOINT_EVERY_TICKS == 0`, a tenth
/// of them, one shared-data write per group.
pub const CHECKPOINT_EVERY_TICKS: u64 = 10;

/// Upper bound of one series' checkpoint in shared data (the encoding is
/// ~330 bytes; a larger one is not written).
pub const CHECKPOINT_MAX_BYTES: usize = 512;

/// Shared-data key holding series `id`'s self-baseline checkpoint (with
/// those of its id group, [`crate::checkpoints`]), for the configuration
/// with `identity` ([`PluginConfig::identity`]).
pub fn checkpoint_key(identity: u64, id: u32) -> String {
    Keys::new(identity).checkpoints(crate::checkpoints::group_of(id))
}

/// A canary's stable and canary series on one route.
#[derive(Debug, Clone)]
struct Pair {
    canary: usize,
    route: Vec<u8>,
    stable_id: u32,
    canary_id: u32,
}

/// Which control-service call a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// `POST` of this tick's report.
    Report,
    /// `GET` of the routing weights.
    Routing,
}

/// A call the glue must dispatch to the control service's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlCall {
    /// What it is.
    pub kind: ControlKind,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// URL path.
    pub path: String,
    /// JSON body, for a `POST`.
    pub body: Option<Vec<u8>>,
}

/// How a request on a managed route should be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The canary is critical: send to stable.
    Steer(Signal),
    /// Split by the control service's weights.
    Weighted {
        /// True for the canary version, false for stable.
        canary: bool,
    },
}

/// State of the unmatched-canary watch.
#[derive(Debug, Default)]
struct Unmatched {
    /// When this worker first saw any series.
    first_traffic_ms: Option<u64>,
    /// Per canary: a warning was logged and not yet cleared.
    warned: Vec<bool>,
    /// Per canary: its clusters have been seen (gauge set to 0 once).
    matched: Vec<bool>,
    /// The registry's change count at the last scan: an unchanged registry
    /// matches no canary that it did not match then (no rescan of every
    /// series each tick).
    scanned_at: Option<u64>,
}

/// Stable and canary series ids found so far for one (canary, route).
type PairIds = (Option<u32>, Option<u32>);

/// What the lease holder keeps between ticks.
#[derive(Debug, Default)]
struct Scoring {
    generation: u64,
    series: Vec<SeriesState>,
    last_state: Vec<State>,
    pairs: Vec<Pair>,
    pairs_for: usize,
    controllers: HashMap<(usize, Vec<u8>), SteerController>,
    /// Last self verdict of each managed canary series (whose published
    /// verdict is the canary test's), by series id: its changes are logged.
    last_self_canary: HashMap<u32, State>,
    /// Anytime-valid canary-vs-stable test per (canary, route), fed once per tick.
    monitors: HashMap<(usize, Vec<u8>), CanaryMonitor>,
    /// Each series' gauges (host id and last value), by series id, once defined.
    gauge_ids: Vec<Option<[GaugeSlot; 5]>>,
    /// Time to first byte per series (by id), over the window.
    ttft: Vec<TtftWindow>,
    /// Host ids of each series' TTFT gauges, defined once it has TTFT data.
    ttft_gauge_ids: Vec<Option<[GaugeSlot; 3]>>,
    /// Idle ticks per series and the epoch each id's state belongs to.
    idle: IdleTracker,
    /// Series ids (canary and stable of each pair) whose traffic steering
    /// moved at the last two passes: the deltas observed now were routed by
    /// those tables (workers refresh their cached table a tick late), so
    /// their request rate is not the series' own volume.
    steering_moved: [Vec<u32>; 2],
}

impl Scoring {
    /// Start series `id`'s scoring state afresh (its place now holds another
    /// series, or none).
    fn reset(&mut self, id: u32, model: &vigil_scorer::model::Model) {
        let i = id as usize;
        if let Some(s) = self.series.get_mut(i) {
            *s = SeriesState::new(model);
        }
        if let Some(s) = self.last_state.get_mut(i) {
            *s = State::InsufficientData;
        }
        if let Some(w) = self.ttft.get_mut(i) {
            *w = TtftWindow::new();
        }
        if let Some(g) = self.gauge_ids.get_mut(i) {
            *g = None;
        }
        if let Some(g) = self.ttft_gauge_ids.get_mut(i) {
            *g = None;
        }
        self.last_self_canary.remove(&id);
        for moved in &mut self.steering_moved {
            moved.retain(|&x| x != id);
        }
    }
}

/// The worker.
#[derive(Debug)]
pub struct Worker {
    cfg: PluginConfig,
    /// This configuration's shared-data keys.
    keys: Keys,
    /// `series_idle_s` in ticks.
    idle_limit: u32,
    /// Registry changes seen when overflowed slots last retried registering.
    overflow_retry_at: u64,
    capacity: Capacity,
    me: u64,
    local: LocalTable,
    registry: Registry,
    table: VerdictTable,
    table_cas: Option<u32>,
    /// CAS token of the compact steering table last decoded.
    steering_cas: Option<u32>,
    /// As the lease holder: the steering table last written (rewritten
    /// only when it changes).
    published_steering: Option<Vec<u8>>,
    steered_routes: HashMap<Vec<u8>, Signal>,
    steered_counts: HashMap<Vec<u8>, [u64; 6]>,
    /// Per canary: steered (and why), from the verdict table's steered routes.
    steered_canaries: Vec<Option<Signal>>,
    /// Per canary: fresh control-service weight and split position.
    weighted_canaries: Vec<Option<(u8, Split)>>,
    /// Unmatched-canary watch (log once + gauge).
    unmatched: Unmatched,
    scoring: Option<Scoring>,
    weighted_routes: HashMap<Vec<u8>, (u8, Split)>,
    routing: Option<(Routing, u64)>,
    control_seq: u64,
    /// Identity in reports: stable per pod (node metadata), else the VM id.
    sidecar: String,
    control_failing: [bool; 2],
    outbox: Vec<ControlCall>,
    metrics: MetricCache,
    stats: ProtocolStats,
    flushed_stats: ProtocolStats,
    /// When this worker last acquired the scorer lease (ms), while it holds it.
    holding_since: Option<u64>,
    /// The `lease_release_after_s` test hook made this worker give the lease up.
    lease_given_up: bool,
    /// Series merged into shared data whose announcement in the dirty list
    /// ([`crate::dirty`]) has not succeeded yet (retried each tick).
    unannounced: Vec<u32>,
    /// The registry's change count when the slots were last checked against
    /// it: an unchanged registry needs no name comparison per slot.
    revalidated_at: Option<u64>,
    /// PII guard counts of this worker's requests, not yet in shared data.
    pii: crate::pii_report::PiiOutbox,
    /// PII guard counts the lease holder took for this tick's report.
    pii_for_report: Vec<vigil_wire::pii::PiiRoute>,
    /// Observed edges, when the `edges` section enables them.
    edges: Option<crate::edges::EdgeState>,
    /// Edges the scorer took this tick, already cut to the report's budget,
    /// and the requests left unattributed (over `max_edges` in a worker's
    /// tick or in the shared merge, or over the report's byte budget).
    report_edges: Option<(Vec<vigil_wire::edges::Edge>, u64)>,
    /// Scratch for the request path's series name (reused, not reallocated).
    name_buf: Vec<u8>,
}

impl Worker {
    /// A worker for a validated configuration; `me` is this VM's random id.
    pub fn new(cfg: PluginConfig, me: u64) -> Self {
        let capacity = Capacity::new(cfg.max_series, reserved_places(&cfg.canaries));
        let local = LocalTable::new(capacity, series_name(OVERFLOW_ROUTE, OVERFLOW_CLUSTER));
        let keys = Keys::new(cfg.identity);
        Worker {
            idle_limit: idle_ticks(cfg.series_idle_ms, cfg.tick_ms),
            overflow_retry_at: 0,
            registry: Registry::new(keys.registry.clone()),
            keys,
            cfg,
            capacity,
            me,
            local,
            table: VerdictTable::default(),
            table_cas: None,
            steering_cas: None,
            published_steering: None,
            steered_routes: HashMap::new(),
            steered_counts: HashMap::new(),
            steered_canaries: Vec::new(),
            weighted_canaries: Vec::new(),
            unmatched: Unmatched::default(),
            scoring: None,
            weighted_routes: HashMap::new(),
            routing: None,
            control_seq: 0,
            sidecar: format!("{me:016x}"),
            control_failing: [false; 2],
            outbox: Vec::new(),
            metrics: MetricCache::default(),
            stats: ProtocolStats::default(),
            flushed_stats: ProtocolStats::default(),
            holding_since: None,
            lease_given_up: false,
            unannounced: Vec::new(),
            revalidated_at: None,
            pii: crate::pii_report::PiiOutbox::default(),
            pii_for_report: Vec::new(),
            edges: None,
            report_edges: None,
            name_buf: Vec::new(),
        }
        .with_edges(&crate::edges::NodeFacts::default())
    }

    fn with_edges(mut self, node: &crate::edges::NodeFacts) -> Self {
        self.set_node_facts(node);
        self
    }

    /// Start edge recording with what the glue read from node metadata
    /// (no-op unless the `edges` section enables it).
    pub fn set_node_facts(&mut self, node: &crate::edges::NodeFacts) {
        if self.cfg.edges.enabled {
            self.edges = Some(crate::edges::EdgeState::new(
                &self.cfg.edges,
                node,
                &self.sidecar,
            ));
        }
    }

    /// Whether the glue should read the edge properties of each request.
    pub fn edges_enabled(&self) -> bool {
        self.edges.is_some()
    }

    /// The edge state (tests, benches).
    pub fn edge_state(&self) -> Option<&crate::edges::EdgeState> {
        self.edges.as_ref()
    }

    /// Count a finished request's edge (no-op unless edges are enabled).
    pub fn record_edge(&mut self, facts: &crate::edges::EdgeFacts<'_>, rec: &RequestRecord) {
        if let Some(e) = self.edges.as_mut() {
            let latency = rec.counts_latency().then_some(rec.latency_us);
            let ttft = rec.ttft_us.filter(|_| rec.counts_ttft());
            e.record_timed(
                facts,
                rec.status,
                rec.is_error(),
                latency,
                ttft,
                rec.chunks >= 2,
            );
        }
    }

    /// Set the identity reports carry (the glue passes one derived from
    /// Envoy's node metadata, stable per pod across VM reloads; see
    /// [`crate::control::sidecar_identity`]). The VM's random id stays the
    /// report's `incarnation`, so `seq` restarts are recognised.
    pub fn set_sidecar_identity(&mut self, identity: &str) {
        if !identity.is_empty() {
            self.sidecar = identity.to_string();
        }
    }

    /// The identity reports carry.
    pub fn sidecar_identity(&self) -> &str {
        &self.sidecar
    }

    /// This configuration's shared-data keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The configuration.
    pub fn config(&self) -> &PluginConfig {
        &self.cfg
    }

    /// True when the request path needs the route name at request time
    /// (steering mode with managed canaries).
    pub fn wants_route_at_request(&self) -> bool {
        self.cfg.mode == Mode::Steer && !self.cfg.canaries.is_empty()
    }

    /// True when a request's selected cluster can change its routing (some
    /// canary is steered or weighted): only then does the glue read
    /// `xds.cluster_name` at request time.
    pub fn wants_cluster_at_request(&self) -> bool {
        self.steered_canaries.iter().any(Option::is_some)
            || self.weighted_canaries.iter().any(Option::is_some)
    }

    /// Should this request on `route` be steered to stable? Returns the reason
    /// when yes, and counts it.
    pub fn steer_decision(&mut self, route: &[u8]) -> Option<Signal> {
        if self.cfg.mode != Mode::Steer {
            return None;
        }
        let reason = *self.steered_routes.get(route)?;
        self.count_steered(route, reason);
        Some(reason)
    }

    fn count_steered(&mut self, route: &[u8], reason: Signal) {
        let code = signal_code(reason) as usize;
        if let Some(counts) = self.steered_counts.get_mut(route) {
            if let Some(c) = counts.get_mut(code) {
                *c += 1;
            }
        } else {
            let mut counts = [0u64; 6];
            if let Some(c) = counts.get_mut(code) {
                *c = 1;
            }
            self.steered_counts.insert(route.to_vec(), counts);
        }
    }

    /// How a request on `route` should be routed, if Vigil routes it at all:
    /// steering to stable while the canary is critical, else the control
    /// service's weights while they are fresh, else `None` (static routes).
    /// `cluster` is the cluster the route selected (`xds.cluster_name` at
    /// request-header time): a request belongs to a canary when that cluster
    /// is the canary's stable or canary cluster, whatever the route is named.
    pub fn route_decision(&mut self, route: &[u8], cluster: Option<&[u8]>) -> Option<Decision> {
        if let Some(reason) = self.steer_decision(route) {
            return Some(Decision::Steer(reason));
        }
        if self.cfg.mode != Mode::Steer {
            return None;
        }
        if let Some((percent, split)) = self.weighted_routes.get_mut(route) {
            return Some(Decision::Weighted {
                canary: split.to_canary(*percent),
            });
        }
        let ci = cluster.and_then(|c| {
            self.cfg
                .canaries
                .iter()
                .position(|spec| match_series(spec, route, c).is_some())
        })?;
        if let Some(reason) = self.steered_canaries.get(ci).copied().flatten() {
            self.count_steered(route, reason);
            return Some(Decision::Steer(reason));
        }
        let (percent, split) = self.weighted_canaries.get_mut(ci)?.as_mut()?;
        Some(Decision::Weighted {
            canary: split.to_canary(*percent),
        })
    }

    /// Record a finished request. Missing route or cluster (direct responses,
    /// no route) are recorded under `unknown` / `none`.
    pub fn record(&mut self, route: Option<&[u8]>, cluster: Option<&[u8]>, rec: &RequestRecord) {
        // The series name is built in a buffer kept across requests: no
        // allocation per request once it has grown to the longest name.
        let name = &mut self.name_buf;
        name.clear();
        name.extend_from_slice(route.unwrap_or(b"unknown"));
        name.push(NAME_SEPARATOR);
        name.extend_from_slice(cluster.unwrap_or(b"none"));
        let canaries = &self.cfg.canaries;
        self.local
            .record(name, rec, |name| is_managed(canaries, name));
    }

    /// Count one inspected request's PII guard findings for the control
    /// service's report (counts only; nothing when no control service is
    /// configured).
    pub fn record_pii(&mut self, counts: &vigil_wire::pii::PiiRoute) {
        if self.cfg.control.is_some() {
            self.pii.add(counts);
        }
    }

    /// Published score of a series, for the optional response header.
    pub fn score_of(&self, route: &[u8], cluster: &[u8]) -> Option<u16> {
        let id = self.registry.id(&series_name(route, cluster))?;
        self.table.series.get(id as usize).map(|v| v.score)
    }

    /// Cumulative protocol counters.
    pub fn stats(&self) -> ProtocolStats {
        self.stats
    }

    /// True while this worker holds the scorer lease.
    pub fn is_scorer(&self) -> bool {
        self.scoring.is_some()
    }

    /// The full verdict table this worker holds: its own as the lease holder,
    /// else the last one read (by a worker that sets the score header, or
    /// that held the lease before).
    pub fn verdict_table(&self) -> &VerdictTable {
        &self.table
    }

    /// Approximate heap bytes of the local window (benchmarks).
    pub fn local_heap_bytes(&self) -> usize {
        self.local.heap_bytes()
    }
}

/// Places reserved in the series table for managed canaries: a route canary
/// has exactly two series; an Istio service canary has two per route it is
/// reached on, so a few routes' worth are kept.
fn reserved_places(canaries: &[CanarySpec]) -> usize {
    canaries
        .iter()
        .map(|c| if c.route.is_some() { 2 } else { 8 })
        .sum()
}

/// True when a series belongs to a managed canary.
fn is_managed(canaries: &[CanarySpec], name: &[u8]) -> bool {
    let (route, cluster) = split_name(name);
    canaries
        .iter()
        .any(|c| match_series(c, route, cluster).is_some())
}
