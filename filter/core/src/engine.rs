//! One worker VM's logic: the request path and the tick protocol.
//!
//! Request path (no shared-data access): [`Worker::steer_decision`] answers
//! from the cached verdict table whether a managed route is steered to stable;
//! [`Worker::record`] adds a finished request to the local window.
//!
//! Tick ([`Worker::on_tick`]), on every worker:
//! 1. re-read the series registry if it changed, register new local series;
//! 2. merge each series' pending observations into `vigil.d.<id>` with
//!    bounded CAS retries (what cannot be merged stays pending, so nothing is
//!    lost), and add the request/error counts to Envoy counters;
//! 3. take or renew the scorer lease; the holder takes every series' merged
//!    delta, feeds the scorer, pairs canaries with their stable peers, runs the
//!    steering hysteresis, publishes the verdict table and sets the gauges;
//! 4. re-read the verdict table into the local cache.

use crate::codec::{decode_pending, encode_delta, encode_pending, Extras};
use crate::config::{CanarySpec, Mode, PluginConfig};
use crate::control::{parse_routing, Routing, Split};
use crate::keys::Keys;
use crate::lease;
use crate::lifecycle::{idle_ticks, IdleTracker, Seen};
use crate::local::{LocalTable, Placement, Slot, CLASSES};
use crate::metrics::{
    canary_unmatched_metric_name, failures_metric_name, global, series_metric_name,
    steered_metric_name, Kind, MetricCache, MetricSink, SeriesMetric,
};
use crate::outcome::Outcome;
use crate::registry::{
    series_name, split_name, tag, untag, Capacity, Registration, Registry, OVERFLOW_CLUSTER,
    OVERFLOW_ROUTE,
};
use crate::request::RequestRecord;
use crate::shared::{update, SetError, SharedStore, Update};
use crate::steering::{match_series, Side, SteerController, Transition};
use crate::verdicts::{
    signal_code, signal_name, PublishedVerdict, SteeredRoute, VerdictTable, WeightedRoute,
};
use hashbrown::HashMap;
use vigil_scorer::sequential::CanaryMonitor;
use vigil_scorer::series::SeriesState;
use vigil_scorer::ttft::TtftWindow;
use vigil_scorer::verdict::{Signal, State, Verdict};
use vigil_scorer::window::TickDelta;
use vigil_wire::report::{
    Canary as WireCanary, Report, Series as WireSeries, Stream as WireStream, Totals,
};

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
/// (ticks), so a new holder resumes it instead of warming up.
pub const CHECKPOINT_EVERY_TICKS: u64 = 10;

/// Upper bound of one series' checkpoint in shared data (the encoding is
/// ~330 bytes; a larger one is not written).
pub const CHECKPOINT_MAX_BYTES: usize = 512;

/// Shared-data key of series `id`'s self-baseline checkpoint, for the
/// configuration with `identity` ([`PluginConfig::identity`]).
pub fn checkpoint_key(identity: u64, id: u32) -> String {
    Keys::new(identity).checkpoint(id)
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
    /// Host ids of each series' gauges, by series id, once defined.
    gauge_ids: Vec<Option<[Option<u32>; 5]>>,
    /// Time to first byte per series (by id), over the window.
    ttft: Vec<TtftWindow>,
    /// Host ids of each series' TTFT gauges, defined once it has TTFT data.
    ttft_gauge_ids: Vec<Option<[Option<u32>; 3]>>,
    /// Idle ticks per series and the epoch each id's state belongs to.
    idle: IdleTracker,
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
    /// PII guard counts of this worker's requests, not yet in shared data.
    pii: crate::pii_report::PiiOutbox,
    /// PII guard counts the lease holder took for this tick's report.
    pii_for_report: Vec<vigil_wire::pii::PiiRoute>,
    /// Observed edges, when the `edges` section enables them.
    edges: Option<crate::edges::EdgeState>,
    /// Edges the scorer took this tick, for its report.
    report_edges: Option<vigil_traffic::aggregate::EdgeBatch>,
}

/// Encoded empty delta, written by the lease holder when it takes a series' data.
fn empty_delta() -> Vec<u8> {
    encode_delta(&TickDelta::default())
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
            pii: crate::pii_report::PiiOutbox::default(),
            pii_for_report: Vec::new(),
            edges: None,
            report_edges: None,
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

    /// Canaries with a series on `route` (the lease holder pairs canaries per
    /// route, so a steered or weighted route names the canary it belongs to).
    fn canaries_on_route(&self, route: &[u8]) -> Vec<usize> {
        self.cfg
            .canaries
            .iter()
            .enumerate()
            .filter(|(_, spec)| {
                self.registry.iter().any(|(_, name)| {
                    let (r, c) = split_name(name);
                    r == route && match_series(spec, r, c).is_some()
                }) || spec.route.as_ref().is_some_and(|r| r.as_bytes() == route)
            })
            .map(|(ci, _)| ci)
            .collect()
    }

    /// Calls to dispatch to the control service (the scorer produces a report
    /// and a routing fetch each tick when a control service is configured).
    pub fn take_control_calls(&mut self) -> Vec<ControlCall> {
        std::mem::take(&mut self.outbox)
    }

    /// A control-service call finished: `status` is the HTTP status (`None`
    /// when the call failed or timed out).
    ///
    /// New weights are republished to every worker at once (not at the next
    /// tick), so a weight change reaches all workers within two ticks of the
    /// control service making it: one to fetch, one for each worker to read.
    pub fn on_control_response<S: SharedStore + ?Sized>(
        &mut self,
        kind: ControlKind,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
        store: &S,
        log: &mut dyn FnMut(Level, &str),
    ) {
        let ok = matches!(status, Some(200..=299));
        let mut republish = false;
        let outcome = match (kind, ok) {
            (ControlKind::Report, true) => Ok(()),
            (ControlKind::Routing, true) => parse_routing(body).map(|routing| {
                let changed = self.routing.as_ref().map(|(r, _)| r) != Some(&routing);
                republish = changed;
                if changed {
                    log(
                        Level::Info,
                        &format!(
                            "vigil: routing weights version {}: {:?}",
                            routing.version, routing.weights
                        ),
                    );
                }
                self.routing = Some((routing, now_ms));
            }),
            (_, false) => Err(match status {
                Some(code) => format!(
                    "HTTP {code}: {}",
                    String::from_utf8_lossy(body.get(..body.len().min(200)).unwrap_or_default())
                ),
                None => "no answer (unreachable or timed out)".to_string(),
            }),
        };
        if republish {
            self.republish_weights(now_ms, store);
        }
        let index = usize::from(kind == ControlKind::Routing);
        let what = match kind {
            ControlKind::Report => "report to the control service",
            ControlKind::Routing => "routing fetch from the control service",
        };
        if let Some(failing) = self.control_failing.get_mut(index) {
            match outcome {
                Err(e) if !*failing => {
                    *failing = true;
                    log(Level::Warn, &format!("vigil: {what} failed: {e}; keeping the last weights for their TTL, then static routes"));
                }
                Ok(()) if *failing => {
                    *failing = false;
                    log(Level::Info, &format!("vigil: {what} works again"));
                }
                _ => {}
            }
        }
    }

    /// Record a finished request. Missing route or cluster (direct responses,
    /// no route) are recorded under `unknown` / `none`.
    pub fn record(&mut self, route: Option<&[u8]>, cluster: Option<&[u8]>, rec: &RequestRecord) {
        let name = series_name(route.unwrap_or(b"unknown"), cluster.unwrap_or(b"none"));
        let canaries = &self.cfg.canaries;
        self.local
            .record(&name, rec, |name| is_managed(canaries, name));
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

    /// The cached verdict table.
    pub fn verdict_table(&self) -> &VerdictTable {
        &self.table
    }

    /// Approximate heap bytes of the local window (benchmarks).
    pub fn local_heap_bytes(&self) -> usize {
        self.local.heap_bytes()
    }

    /// The tick. `now_ms` is wall-clock milliseconds.
    pub fn on_tick<S, M>(
        &mut self,
        now_ms: u64,
        store: &S,
        sink: &mut M,
        log: &mut dyn FnMut(Level, &str),
    ) where
        S: SharedStore + ?Sized,
        M: MetricSink + ?Sized,
    {
        self.registry.refresh(store);
        self.revalidate_slots();
        self.register_new_series(store);
        self.merge_pending(store, sink);
        self.local.end_tick(self.idle_limit);
        let retries = self.pii.flush(store, &self.keys.pii, self.cfg.cas_retries);
        self.stats.cas_retries += u64::from(retries);
        if let Some(e) = self.edges.as_mut() {
            e.flush(
                store,
                &self.keys.edges,
                self.cfg.cas_retries,
                &mut self.metrics,
                sink,
            );
        }

        let ttl = self.cfg.tick_ms.saturating_mul(self.cfg.lease_ttl_ticks);
        if !self.gives_lease_up(now_ms, store, log)
            && lease::acquire(store, &self.keys.lease, self.me, now_ms, ttl)
        {
            self.holding_since.get_or_insert(now_ms);
            self.score(now_ms, store, sink, log);
        } else {
            self.holding_since = None;
            if self.scoring.take().is_some() {
                self.metrics.forget_gauges();
                log(
                    Level::Info,
                    &format!(
                        "vigil: scorer lease moved to another worker (identity={:016x})",
                        self.cfg.identity
                    ),
                );
            }
        }

        self.refresh_verdicts(store);
        self.watch_unmatched(now_ms, sink, log);
        self.flush_counters(sink);
    }

    /// The plugin is being removed (Envoy's `on_done`: a configuration
    /// update replaced it, or the listener went away). Merge what is still
    /// pending, add the last counts to the Envoy counters, and give the
    /// lease up, so no request this configuration served goes uncounted and
    /// a successor of the same identity scores at its next tick.
    pub fn on_done<S, M>(&mut self, store: &S, sink: &mut M)
    where
        S: SharedStore + ?Sized,
        M: MetricSink + ?Sized,
    {
        self.registry.refresh(store);
        self.revalidate_slots();
        self.register_new_series(store);
        self.merge_pending(store, sink);
        self.flush_counters(sink);
        if self.scoring.take().is_some() {
            lease::release(store, &self.keys.lease, self.me);
        }
    }

    /// This configuration's shared-data keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// After a registry refresh: slots whose series was evicted (or whose id
    /// was reused) register again; slots in overflow retry once the registry
    /// changed and has room.
    fn revalidate_slots(&mut self) {
        let changes = self.registry.changes();
        let retry =
            changes != self.overflow_retry_at && self.registry.tracked() < self.capacity.total;
        if retry {
            self.overflow_retry_at = changes;
        }
        let registry = &self.registry;
        self.local.revalidate(
            |name, id, epoch| registry.name(id) == Some(name) && registry.epoch(id) == Some(epoch),
            retry,
        );
    }

    /// The `lease_release_after_s` test hook: true once this worker, as the
    /// first holder of the process to keep the lease that long, has given it
    /// up for good (it stops renewing; another worker takes over when the
    /// lease expires, as after a stalled holder).
    fn gives_lease_up<S: SharedStore + ?Sized>(
        &mut self,
        now_ms: u64,
        store: &S,
        log: &mut dyn FnMut(Level, &str),
    ) -> bool {
        if self.lease_given_up {
            return true;
        }
        let after = self.cfg.lease_release_after_ms;
        let Some(since) = self.holding_since.filter(|_| after > 0) else {
            return false;
        };
        if now_ms.saturating_sub(since) < after
            || store
                .set(
                    &self.keys.lease_released,
                    b"1",
                    Some(crate::shared::CREATE_ONLY_CAS),
                )
                .is_err()
        {
            return false;
        }
        self.lease_given_up = true;
        log(
            Level::Info,
            &format!(
                "vigil: test hook lease_release_after_s: this worker stops scoring after holding the lease {} s",
                after / 1000
            ),
        );
        true
    }

    /// Once traffic has flowed for `unmatched_after_s`, a canary none of
    /// whose clusters has been seen gets `vigil_canary_unmatched{canary} 1`
    /// and one warning from the scorer (its names match nothing the mesh
    /// generated); the gauge returns to 0 when it matches.
    fn watch_unmatched<M: MetricSink + ?Sized>(
        &mut self,
        now_ms: u64,
        sink: &mut M,
        log: &mut dyn FnMut(Level, &str),
    ) {
        if self.cfg.canaries.is_empty() || self.registry.iter().next().is_none() {
            return;
        }
        let first = *self.unmatched.first_traffic_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(first) < self.cfg.unmatched_after_ms {
            return;
        }
        let scorer = self.scoring.is_some();
        let n = self.cfg.canaries.len();
        self.unmatched.warned.resize(n, false);
        self.unmatched.matched.resize(n, false);
        for ((spec, warned), done) in self
            .cfg
            .canaries
            .iter()
            .zip(self.unmatched.warned.iter_mut())
            .zip(self.unmatched.matched.iter_mut())
        {
            // Series are never forgotten: once matched, nothing more to watch.
            if *done {
                continue;
            }
            let matched = self.registry.iter().any(|(_, name)| {
                let (r, c) = split_name(name);
                match_series(spec, r, c).is_some()
            });
            *done = matched;
            self.metrics.set(
                sink,
                &canary_unmatched_metric_name(&spec.name),
                u64::from(!matched),
            );
            if !matched && !*warned && scorer {
                *warned = true;
                log(
                    Level::Warn,
                    &format!(
                        "vigil: canary '{}' matched no cluster after {} s of traffic (expected stable {}, canary {}): its names match nothing this proxy routes to; run `vigil-control inspect --config-dump` against this proxy's admin /config_dump",
                        spec.name,
                        self.cfg.unmatched_after_ms / 1000,
                        spec.stable.describe(),
                        spec.canary.describe()
                    ),
                );
            } else if matched && *warned {
                *warned = false;
                log(
                    Level::Info,
                    &format!("vigil: canary '{}' now matches its clusters", spec.name),
                );
            }
        }
    }

    fn register_new_series<S: SharedStore + ?Sized>(&mut self, store: &S) {
        let mut wanted: Vec<usize> = Vec::new();
        for (i, slot) in self.local.slots_mut().iter_mut().enumerate() {
            if slot.placement == Placement::Unregistered {
                match self.registry.id(&slot.name) {
                    Some(id) => {
                        slot.placement = Placement::Registered(id);
                        slot.epoch = self.registry.epoch(id).unwrap_or(0);
                    }
                    // Only a series with data to merge needs a place (an idle
                    // one whose entry was evicted is about to leave the table).
                    None if slot.has_pending() => wanted.push(i),
                    None => {}
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        let results = {
            let slots = self.local.slots();
            let canaries = &self.cfg.canaries;
            let names: Vec<(&[u8], bool)> = wanted
                .iter()
                .filter_map(|&i| slots.get(i))
                .map(|s| (s.name.as_slice(), is_managed(canaries, &s.name)))
                .collect();
            self.registry
                .register(store, &names, self.capacity, self.cfg.cas_retries)
        };
        for (&i, r) in wanted.iter().zip(results) {
            match r {
                Registration::Id(id) => {
                    let epoch = self.registry.epoch(id).unwrap_or(0);
                    if let Some(slot) = self.local.slots_mut().get_mut(i) {
                        slot.placement = Placement::Registered(id);
                        slot.epoch = epoch;
                    }
                }
                Registration::Full => self.local.demote_to_overflow(i),
                Registration::Retry => {}
            }
        }
    }

    fn merge_pending<S, M>(&mut self, store: &S, sink: &mut M)
    where
        S: SharedStore + ?Sized,
        M: MetricSink + ?Sized,
    {
        let attempts = self.cfg.cas_retries;
        let mut stats = self.stats;
        let metrics = &mut self.metrics;
        let keys = &self.keys;
        let mut merge = |slot: &mut Slot| {
            if slot.unflushed_requests > 0 || slot.unflushed_errors > 0 {
                let [requests_id, errors_id] = match slot.counter_ids {
                    Some(ids) => ids,
                    None => {
                        let (route, cluster) = split_name(&slot.name);
                        let mut define = |m: SeriesMetric| {
                            metrics.define(
                                sink,
                                Kind::Counter,
                                &series_metric_name(route, cluster, m),
                            )
                        };
                        let ids = [define(SeriesMetric::Requests), define(SeriesMetric::Errors)];
                        slot.counter_ids = Some(ids);
                        ids
                    }
                };
                metrics.add_id(sink, requests_id, slot.unflushed_requests);
                metrics.add_id(sink, errors_id, slot.unflushed_errors);
                slot.unflushed_requests = 0;
                slot.unflushed_errors = 0;
                flush_classes(slot, metrics, sink);
            }
            let Placement::Registered(id) = slot.placement else {
                return;
            };
            if !slot.has_pending() {
                return;
            }
            let pending = slot.pending();
            let extras = slot.pending_extras();
            let epoch = slot.epoch;
            let mut superseded = false;
            let outcome = update(store, &keys.delta(id), attempts, |current| {
                superseded = false;
                // The key holds the records of the series with the epoch it is
                // tagged with: a newer epoch means this slot's series was evicted
                // and the id reused (leave it; the slot registers again); an
                // older one is an evicted series' leftover (replaced).
                let (mut merged, mut merged_x) = match current.and_then(untag) {
                    Some((e, rec)) if e == epoch => decode_pending(rec).unwrap_or_default(),
                    Some((e, _)) if e > epoch => {
                        superseded = true;
                        return current.map(<[u8]>::to_vec).unwrap_or_default();
                    }
                    _ => Default::default(),
                };
                merged.add(&pending);
                merged_x.add(&extras);
                tag(epoch, &encode_pending(&merged, &merged_x))
            });
            if superseded {
                slot.placement = Placement::Unregistered;
                return;
            }
            match outcome {
                Update::Written { retries } => {
                    stats.cas_retries += u64::from(retries);
                    slot.clear_pending();
                }
                Update::Exhausted => {
                    stats.cas_retries += u64::from(attempts);
                    stats.cas_exhausted += 1;
                }
                Update::Failed => stats.cas_exhausted += 1,
            }
        };
        for slot in self.local.slots_mut() {
            merge(slot);
        }
        merge(self.local.overflow_mut());
        self.stats = stats;
    }

    /// Take series `id`'s merged delta out of shared data, leaving it empty.
    /// Records of another epoch are not this series': an older one (an
    /// evicted series' leftover) is dropped and counted, a newer one (a
    /// series registered after this tick's registry read) waits for the
    /// next tick.
    fn take_delta<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        id: u32,
        empty: &[u8],
    ) -> (TickDelta, Extras) {
        let key = self.keys.delta(id);
        let live = self.registry.epoch(id);
        let last = self.registry.last_epoch(id).unwrap_or(0);
        for _ in 0..self.cfg.cas_retries.max(1) {
            let Some((bytes, cas)) = store.get(&key) else {
                return Default::default();
            };
            let (epoch, record) = untag(&bytes).unwrap_or((0, b""));
            if record == empty {
                return Default::default();
            }
            let ours = live == Some(epoch) && !record.is_empty();
            if !ours && epoch > last {
                return Default::default();
            }
            match store.set(&key, &tag(last, empty), Some(cas)) {
                Ok(()) if ours => return decode_pending(record).unwrap_or_default(),
                Ok(()) => {
                    self.stats.stale_records += 1;
                    return Default::default();
                }
                Err(SetError::CasMismatch) => self.stats.cas_retries += 1,
                Err(SetError::Host) => break,
            }
        }
        self.stats.cas_exhausted += 1;
        Default::default()
    }

    /// Evict the series idle past `series_idle_s`: free their registry
    /// places, clear their checkpoints and return their gauges to 0.
    fn evict_idle<S, M>(
        &mut self,
        scoring: &mut Scoring,
        store: &S,
        sink: &mut M,
        log: &mut dyn FnMut(Level, &str),
    ) where
        S: SharedStore + ?Sized,
        M: MetricSink + ?Sized,
    {
        let victims = scoring.idle.victims(self.idle_limit);
        if victims.is_empty() {
            return;
        }
        let freed = self.registry.evict(store, &victims, self.cfg.cas_retries);
        for &id in &freed {
            scoring.idle.forget(id);
            let _ = store.set(&self.keys.checkpoint(id), b"", None);
            let i = id as usize;
            let gauges = scoring.gauge_ids.get_mut(i).and_then(Option::take);
            let ttft = scoring.ttft_gauge_ids.get_mut(i).and_then(Option::take);
            for g in gauges
                .into_iter()
                .flatten()
                .chain(ttft.into_iter().flatten())
            {
                self.metrics.set_id(sink, g, 0);
            }
        }
        self.stats.series_evicted += freed.len() as u64;
        if !freed.is_empty() {
            log(
                Level::Info,
                &format!(
                    "vigil: {} series idle for {} s left the registry ({} tracked)",
                    freed.len(),
                    self.cfg.series_idle_ms / 1000,
                    self.registry.tracked()
                ),
            );
        }
    }

    fn score<S, M>(
        &mut self,
        now_ms: u64,
        store: &S,
        sink: &mut M,
        log: &mut dyn FnMut(Level, &str),
    ) where
        S: SharedStore + ?Sized,
        M: MetricSink + ?Sized,
    {
        let mut scoring = self.scoring.take().unwrap_or_default();
        if scoring.generation == 0 {
            log(
                Level::Info,
                &format!(
                    "vigil: this worker now scores all series (lease acquired) (identity={:016x}, keys {}*)",
                    self.cfg.identity,
                    self.keys.prefix()
                ),
            );
        }
        scoring.generation += 1;
        self.stats.scoring_passes += 1;
        let model = self.cfg.model.clone();
        let empty = empty_delta();
        let n = self.registry.len();

        // Observe every series once this tick (empty delta when it had no traffic).
        let mut tick_deltas: Vec<(u32, TickDelta, Extras)> = Vec::new();
        let restored_before = self.stats.baselines_restored;
        for id in 0..n as u32 {
            let (delta, extras) = self.take_delta(store, id, &empty);
            let seen =
                scoring
                    .idle
                    .observe(id, self.registry.epoch(id), delta.counters.requests > 0);
            if seen != Seen::Same && (id as usize) < scoring.series.len() {
                // A new series in a reused place, or a freed place: its
                // judgement starts afresh.
                scoring.reset(id, &model);
            }
            if scoring.series.len() <= id as usize {
                let mut state = SeriesState::new(&model);
                let mut last = State::InsufficientData;
                // A new lease holder resumes the self-baseline the previous
                // holder checkpointed instead of warming up from nothing, and
                // keeps the verdict it published until the resumed baseline
                // has judged a block of its own.
                if let Some((bytes, _)) = store.get(&self.keys.checkpoint(id)) {
                    if state.restore(&bytes) {
                        self.stats.baselines_restored += 1;
                        last = self.table.series.get(id as usize).map_or(last, |v| v.state);
                    }
                }
                scoring.series.push(state);
                scoring.last_state.push(last);
            }
            let tick_s = self.cfg.tick_ms as f64 / 1000.0;
            let unix_s = Some(now_ms as f64 / 1000.0);
            let checkpoint_due = scoring.generation % CHECKPOINT_EVERY_TICKS == 0
                && self.registry.name(id).is_some();
            if let Some(state) = scoring.series.get_mut(id as usize) {
                let shifts = state.level_shifts();
                state.observe_timed(&delta, &model, tick_s, unix_s);
                if state.level_shifts() > shifts {
                    let name = self.registry.name(id).unwrap_or_default();
                    let (route, cluster) = split_name(name);
                    log(
                        Level::Info,
                        &format!(
                            "vigil: level_shift route={} cluster={}: the self-baseline adopted a sustained new level",
                            String::from_utf8_lossy(route),
                            String::from_utf8_lossy(cluster)
                        ),
                    );
                    self.stats.level_shifts += 1;
                }
                if checkpoint_due {
                    let bytes = state.checkpoint();
                    if bytes.len() <= CHECKPOINT_MAX_BYTES
                        && store.set(&self.keys.checkpoint(id), &bytes, None).is_ok()
                    {
                        self.stats.checkpoints_written += 1;
                    }
                }
            }
            if scoring.ttft.len() <= id as usize {
                scoring.ttft.resize_with(id as usize + 1, TtftWindow::new);
            }
            if let Some(w) = scoring.ttft.get_mut(id as usize) {
                w.observe(&extras.ttft, model.window_ticks, model.recent_ticks);
            }
            if self.cfg.control.is_some() && delta.counters.requests > 0 {
                tick_deltas.push((id, delta, extras));
            }
        }
        let restored = self.stats.baselines_restored - restored_before;
        if restored > 0 {
            log(
                Level::Info,
                &format!("vigil: resumed {restored} self-baseline(s) from checkpoints (no fresh warm-up)"),
            );
        }
        let held = &self.table.series;
        let mut verdicts: Vec<Verdict> = scoring
            .series
            .iter()
            .enumerate()
            .map(|(id, s)| {
                let mut v = s.score_self(&model);
                // Resumed after a lease move, not judged yet: the verdict the
                // previous holder published stands.
                if let Some(p) = held.get(id).filter(|_| s.awaiting_judgement()) {
                    v.state = p.state;
                    v.score = p.score;
                }
                v
            })
            .collect();

        self.evict_idle(&mut scoring, store, sink, log);
        let changes = self.registry.changes() as usize;
        if scoring.pairs_for != changes {
            scoring.pairs = self.pairs();
            scoring.pairs_for = changes;
            let pairs = &scoring.pairs;
            scoring.monitors.retain(|(ci, route), _| {
                pairs.iter().any(|p| p.canary == *ci && &p.route == route)
            });
        }
        let mut steered = Vec::new();
        let mut canary_verdicts: Vec<(usize, Vec<u8>, Verdict, bool)> = Vec::new();
        let weighted = self.weighted_routes(now_ms);
        for pair in &scoring.pairs {
            let (Some(canary), Some(stable)) = (
                scoring.series.get(pair.canary_id as usize),
                scoring.series.get(pair.stable_id as usize),
            ) else {
                continue;
            };
            let monitor = scoring
                .monitors
                .entry((pair.canary, pair.route.clone()))
                .or_insert_with(|| {
                    CanaryMonitor::new(&model).with_steer_on_throttle(self.cfg.steer_on_throttle)
                });
            if let (Some(ct), Some(st)) = (
                scoring.ttft.get(pair.canary_id as usize),
                scoring.ttft.get(pair.stable_id as usize),
            ) {
                monitor.observe_ttft(ct, st, &model);
            }
            let verdict = monitor.update(canary, stable, &model);
            if let Some(v) = verdicts.get_mut(pair.canary_id as usize) {
                // The canary's own self judgement is not published (the canary
                // test is); its changes to and from warn/critical are logged.
                let own = v.state;
                let last = scoring
                    .last_self_canary
                    .insert(pair.canary_id, own)
                    .unwrap_or(State::InsufficientData);
                let notable = |s: State| matches!(s, State::Warn | State::Critical);
                if last != own && (notable(last) || notable(own)) {
                    let name = self.registry.name(pair.canary_id).unwrap_or_default();
                    let (route, cluster) = split_name(name);
                    log(
                        Level::Info,
                        &format!(
                            "vigil: self-judgement route={} cluster={} {} -> {} (score {}): {}",
                            String::from_utf8_lossy(route),
                            String::from_utf8_lossy(cluster),
                            last.as_str(),
                            own.as_str(),
                            v.score,
                            v.explain()
                        ),
                    );
                }
                *v = verdict;
            }
            let canary_name = self
                .cfg
                .canaries
                .get(pair.canary)
                .map(|c| c.name.as_str())
                .unwrap_or("?");
            let route = String::from_utf8_lossy(&pair.route);
            let controller = scoring
                .controllers
                .entry((pair.canary, pair.route.clone()))
                .or_insert_with(|| SteerController::new(&self.cfg.steering));
            let action = if self.cfg.mode == Mode::Steer {
                "steering"
            } else {
                "would steer (shadow mode)"
            };
            match controller.update(&verdict, now_ms, &self.cfg.steering) {
                Some(Transition::Started { hold_ms }) => log(
                    Level::Warn,
                    &format!(
                        "vigil: canary '{canary_name}' critical on route '{route}': {action} to stable for at least {} s: {}",
                        hold_ms / 1000,
                        verdict.explain()
                    ),
                ),
                Some(Transition::Released) => log(
                    Level::Info,
                    &format!("vigil: canary '{canary_name}' on route '{route}': hold expired, releasing steering to probe the canary"),
                ),
                None => {}
            }
            if self.cfg.mode == Mode::Steer && controller.is_steering() {
                steered.push(SteeredRoute {
                    route: pair.route.clone(),
                    reason: controller.reason(),
                });
            }
            canary_verdicts.push((
                pair.canary,
                pair.route.clone(),
                verdict,
                controller.is_steering(),
            ));
        }

        // Log state changes worth a human's attention.
        for (id, v) in verdicts.iter().enumerate() {
            if let Some(last) = scoring.last_state.get_mut(id) {
                let notable = |s: State| matches!(s, State::Warn | State::Critical);
                if *last != v.state && (notable(*last) || notable(v.state)) {
                    let name = self.registry.name(id as u32).unwrap_or_default();
                    let (route, cluster) = split_name(name);
                    log(
                        if v.state == State::Critical {
                            Level::Warn
                        } else {
                            Level::Info
                        },
                        &format!(
                            "vigil: series route={} cluster={} {} -> {} (score {}): {}",
                            String::from_utf8_lossy(route),
                            String::from_utf8_lossy(cluster),
                            last.as_str(),
                            v.state.as_str(),
                            v.score,
                            v.explain()
                        ),
                    );
                }
                *last = v.state;
            }
        }

        let table = VerdictTable {
            generation: scoring.generation,
            series: verdicts
                .iter()
                .map(|v| PublishedVerdict {
                    state: v.state,
                    score: v.score.min(1000),
                })
                .collect(),
            steered,
            weighted,
        };
        // Only the lease holder writes this key: an unconditional write.
        if store
            .set(&self.keys.verdicts, &table.encode(), None)
            .is_err()
        {
            self.stats.cas_exhausted += 1;
        }

        const GAUGES: [SeriesMetric; 5] = [
            SeriesMetric::Score,
            SeriesMetric::State,
            SeriesMetric::P50,
            SeriesMetric::P95,
            SeriesMetric::P99,
        ];
        scoring.gauge_ids.resize(scoring.series.len(), None);
        for (id, ((v, state), ids)) in verdicts
            .iter()
            .zip(&scoring.series)
            .zip(scoring.gauge_ids.iter_mut())
            .enumerate()
        {
            let ids = match ids {
                Some(ids) => *ids,
                None => {
                    let Some(name) = self.registry.name(id as u32) else {
                        continue;
                    };
                    let (route, cluster) = split_name(name);
                    let defined = GAUGES.map(|m| {
                        self.metrics.define(
                            sink,
                            Kind::Gauge,
                            &series_metric_name(route, cluster, m),
                        )
                    });
                    *ids = Some(defined);
                    defined
                }
            };
            let latency = state.window_latency();
            let values = [
                u64::from(v.score),
                u64::from(v.state.code()),
                ms(latency.quantile_us(0.5)),
                ms(latency.quantile_us(0.95)),
                ms(latency.quantile_us(0.99)),
            ];
            for (gauge_id, value) in ids.into_iter().zip(values) {
                self.metrics.set_id(sink, gauge_id, value);
            }
        }
        scoring.ttft_gauge_ids.resize(scoring.ttft.len(), None);
        for (id, (w, ids)) in scoring
            .ttft
            .iter()
            .zip(scoring.ttft_gauge_ids.iter_mut())
            .enumerate()
        {
            let window = w.window();
            if ids.is_none() && window.count() == 0 {
                continue;
            }
            let ids = match ids {
                Some(ids) => *ids,
                None => {
                    let Some(name) = self.registry.name(id as u32) else {
                        continue;
                    };
                    let (route, cluster) = split_name(name);
                    let defined = [
                        SeriesMetric::TtftP50,
                        SeriesMetric::TtftP95,
                        SeriesMetric::TtftP99,
                    ]
                    .map(|m| {
                        self.metrics.define(
                            sink,
                            Kind::Gauge,
                            &series_metric_name(route, cluster, m),
                        )
                    });
                    *ids = Some(defined);
                    defined
                }
            };
            for (gauge_id, q) in ids.into_iter().zip([0.5, 0.95, 0.99]) {
                self.metrics
                    .set_id(sink, gauge_id, ms(window.quantile_us(q)));
            }
        }
        self.metrics
            .set(sink, global::SERIES, self.registry.tracked() as u64);
        if self.cfg.control.is_some() {
            self.pii_for_report =
                crate::pii_report::take(store, &self.keys.pii, self.cfg.cas_retries);
        }
        if self.edges.is_some() {
            self.report_edges =
                crate::edges::take_shared(store, &self.keys.edges, self.cfg.cas_retries);
        }
        self.queue_control_calls(now_ms, &tick_deltas, &verdicts, &canary_verdicts);
        self.scoring = Some(scoring);
    }

    /// The routes each canary is reached on: a route canary's configured
    /// route (known before any traffic, so weights apply even while the
    /// static split sends nothing to the canary); an Istio service canary's
    /// routes as soon as either of its subsets has been seen on them.
    fn managed_routes(&self) -> Vec<(usize, Vec<u8>)> {
        let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
        for (ci, spec) in self.cfg.canaries.iter().enumerate() {
            match &spec.route {
                Some(route) => out.push((ci, route.as_bytes().to_vec())),
                None => {
                    for (_, name) in self.registry.iter() {
                        let (route, cluster) = split_name(name);
                        if match_series(spec, route, cluster).is_some()
                            && !out.iter().any(|(c, r)| *c == ci && r.as_slice() == route)
                        {
                            out.push((ci, route.to_vec()));
                        }
                    }
                }
            }
        }
        out
    }

    /// The routes split by fresh weights.
    fn weighted_routes(&self, now_ms: u64) -> Vec<WeightedRoute> {
        let Some((routing, fetched)) = &self.routing else {
            return Vec::new();
        };
        let ttl = self.cfg.control.as_ref().map_or(0, |c| c.weights_ttl_ms);
        if now_ms.saturating_sub(*fetched) > ttl {
            return Vec::new();
        }
        self.managed_routes()
            .into_iter()
            .filter_map(|(ci, route)| {
                let name = &self.cfg.canaries.get(ci)?.name;
                Some(WeightedRoute {
                    route,
                    canary_percent: routing.weight(name)?,
                })
            })
            .collect()
    }

    /// As the lease holder, publish new weights now in the current verdict table.
    fn republish_weights<S: SharedStore + ?Sized>(&mut self, now_ms: u64, store: &S) {
        if self.scoring.is_none() {
            return;
        }
        let mut table = self.table.clone();
        table.weighted = self.weighted_routes(now_ms);
        if store
            .set(&self.keys.verdicts, &table.encode(), None)
            .is_ok()
        {
            self.refresh_verdicts(store);
        }
    }

    /// Queue this tick's report (the managed canaries' series, canary
    /// verdicts and bounded totals; chunked when large) and routing fetch
    /// for the glue to dispatch.
    fn queue_control_calls(
        &mut self,
        now_ms: u64,
        tick_deltas: &[(u32, TickDelta, Extras)],
        verdicts: &[Verdict],
        canary_verdicts: &[(usize, Vec<u8>, Verdict, bool)],
    ) {
        let Some(control) = &self.cfg.control else {
            return;
        };
        let mut report = Report::new(
            &self.sidecar,
            self.me,
            self.control_seq.saturating_add(1),
            now_ms,
            self.cfg.tick_ms,
        );
        let mut totals = Totals::default();
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        for (id, delta, extras) in tick_deltas {
            let Some(name) = self.registry.name(*id) else {
                continue;
            };
            totals.series += 1;
            totals.requests = totals.requests.saturating_add(delta.counters.requests);
            totals.errors = totals.errors.saturating_add(delta.counters.errors);
            if !is_managed(&self.cfg.canaries, name) {
                continue;
            }
            let (route, cluster) = split_name(name);
            let v = verdicts.get(*id as usize).copied().unwrap_or_default();
            report.series.push(
                WireSeries::from_delta(&lossy(route), &lossy(cluster), delta, v.state, v.score)
                    .with_stream(&WireStream {
                        ttft: extras.ttft.clone(),
                        chunks: extras.stream_chunks,
                        gap_sum_us: extras.gap_sum_us,
                        gaps: extras.gaps,
                    }),
            );
        }
        report.totals = Some(totals);
        report.pii = std::mem::take(&mut self.pii_for_report);
        if let Some(batch) = self.report_edges.take() {
            (report.edges, report.edges_overflow) = batch.into_report_edges();
        }
        for (ci, route, verdict, steering) in canary_verdicts {
            let Some(spec) = self.cfg.canaries.get(*ci) else {
                continue;
            };
            report.canaries.push(WireCanary {
                name: spec.name.clone(),
                route: lossy(route),
                state: verdict.state.as_str().to_string(),
                score: verdict.score,
                reason: verdict.explain(),
                steering: *steering,
            });
        }
        let chunks = report.into_chunks();
        self.control_seq = self.control_seq.saturating_add(chunks.len() as u64);
        self.outbox = chunks
            .iter()
            .map(|chunk| ControlCall {
                kind: ControlKind::Report,
                method: "POST",
                path: control.reports_path.clone(),
                body: Some(chunk.encode()),
            })
            .collect();
        self.outbox.push(ControlCall {
            kind: ControlKind::Routing,
            method: "GET",
            path: control.routing_path.clone(),
            body: None,
        });
    }

    fn pairs(&self) -> Vec<Pair> {
        let mut sides: HashMap<(usize, Vec<u8>), PairIds> = HashMap::new();
        for (id, name) in self.registry.iter() {
            let (route, cluster) = split_name(name);
            for (ci, spec) in self.cfg.canaries.iter().enumerate() {
                if let Some(side) = match_series(spec, route, cluster) {
                    let entry = sides.entry((ci, route.to_vec())).or_default();
                    match side {
                        Side::Stable => entry.0 = Some(id),
                        Side::Canary => entry.1 = Some(id),
                    }
                }
            }
        }
        let mut pairs: Vec<Pair> = sides
            .into_iter()
            .filter_map(|((canary, route), ids)| match ids {
                (Some(stable_id), Some(canary_id)) => Some(Pair {
                    canary,
                    route,
                    stable_id,
                    canary_id,
                }),
                _ => None,
            })
            .collect();
        pairs.sort_by(|a, b| (a.canary, &a.route).cmp(&(b.canary, &b.route)));
        pairs
    }

    fn refresh_verdicts<S: SharedStore + ?Sized>(&mut self, store: &S) {
        let Some((bytes, cas)) = store.get(&self.keys.verdicts) else {
            return;
        };
        if Some(cas) == self.table_cas {
            return;
        }
        self.table_cas = Some(cas);
        self.table = VerdictTable::decode(&bytes).unwrap_or_default();
        self.steered_routes = self
            .table
            .steered
            .iter()
            .map(|s| (s.route.clone(), s.reason))
            .collect();
        let previous = std::mem::take(&mut self.weighted_routes);
        for w in &self.table.weighted {
            // Keep the split's position so proportions stay exact across ticks.
            let split = previous.get(&w.route).map(|(_, s)| *s).unwrap_or_default();
            self.weighted_routes
                .insert(w.route.clone(), (w.canary_percent, split));
        }
        let n = self.cfg.canaries.len();
        let mut steered_canaries = vec![None; n];
        for s in &self.table.steered {
            for ci in self.canaries_on_route(&s.route) {
                if let Some(slot) = steered_canaries.get_mut(ci) {
                    *slot = Some(s.reason);
                }
            }
        }
        self.steered_canaries = steered_canaries;
        let mut previous = std::mem::take(&mut self.weighted_canaries);
        let mut weighted_canaries = vec![None; n];
        for w in &self.table.weighted {
            for ci in self.canaries_on_route(&w.route) {
                let split = previous
                    .get_mut(ci)
                    .and_then(Option::take)
                    .map(|(_, s)| s)
                    .unwrap_or_default();
                if let Some(slot) = weighted_canaries.get_mut(ci) {
                    *slot = Some((w.canary_percent, split));
                }
            }
        }
        self.weighted_canaries = weighted_canaries;
    }

    fn flush_counters<M: MetricSink + ?Sized>(&mut self, sink: &mut M) {
        let dropped = self.local.take_dropped();
        self.metrics.add(sink, global::SERIES_DROPPED, dropped);
        for (route, counts) in self.steered_counts.iter_mut() {
            for (code, count) in counts.iter_mut().enumerate() {
                if *count > 0 {
                    let reason = signal_name(crate::verdicts::signal_from_code(code as u8));
                    self.metrics
                        .add(sink, &steered_metric_name(route, "stable", reason), *count);
                    *count = 0;
                }
            }
        }
        let s = self.stats;
        let f = self.flushed_stats;
        self.metrics
            .add(sink, global::CAS_RETRIES, s.cas_retries - f.cas_retries);
        self.metrics.add(
            sink,
            global::CAS_EXHAUSTED,
            s.cas_exhausted - f.cas_exhausted,
        );
        self.metrics.add(
            sink,
            global::SCORING_PASSES,
            s.scoring_passes - f.scoring_passes,
        );
        self.flushed_stats = s;
    }
}

/// Add a slot's per-class counts to `vigil_failures_total{class}` and its
/// throttled count to `vigil_throttled_total`; each counter is defined the
/// first time its class is seen (a healthy series defines none).
fn flush_classes<M: MetricSink + ?Sized>(slot: &mut Slot, metrics: &mut MetricCache, sink: &mut M) {
    let classes = std::mem::take(&mut slot.unflushed_classes);
    let throttled = classes
        .get(Outcome::Throttled.index())
        .copied()
        .unwrap_or(0);
    let (route, cluster) = split_name(&slot.name);
    for (i, (n, outcome)) in classes.iter().zip(Outcome::ALL).enumerate() {
        if *n == 0 || outcome == Outcome::Ok {
            continue;
        }
        if let Some(id) = slot.class_ids.get_mut(i) {
            let id = *id.get_or_insert_with(|| {
                metrics.define(
                    sink,
                    Kind::Counter,
                    &failures_metric_name(route, cluster, outcome.as_str()),
                )
            });
            metrics.add_id(sink, id, *n);
        }
    }
    let chunks = std::mem::take(&mut slot.unflushed_chunks);
    if chunks > 0 {
        if let Some(id) = slot.class_ids.get_mut(CLASSES + 1) {
            let id = *id.get_or_insert_with(|| {
                metrics.define(
                    sink,
                    Kind::Counter,
                    &series_metric_name(route, cluster, SeriesMetric::StreamChunks),
                )
            });
            metrics.add_id(sink, id, chunks);
        }
    }
    if throttled > 0 {
        if let Some(id) = slot.class_ids.get_mut(CLASSES) {
            let id = *id.get_or_insert_with(|| {
                metrics.define(
                    sink,
                    Kind::Counter,
                    &series_metric_name(route, cluster, SeriesMetric::Throttled),
                )
            });
            metrics.add_id(sink, id, throttled);
        }
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

fn ms(us: Option<f64>) -> u64 {
    us.map(|u| (u / 1000.0).round() as u64).unwrap_or(0)
}
