//! The service core: live canaries, ingest, the analysis tick, operator
//! actions, and the routing document — glue between the pure modules and
//! the store, with no HTTP in it.
//!
//! Why this exists: the HTTP layer, the CLI, the tests and the benchmark all
//! drive the same core. Concurrency is three locks: `writer` serialises
//! state changes (tick, upsert, operate); each computes its change on
//! copies under `inner` (live state; ingest holds it only to add deltas),
//! releases it, commits to `store` (SQLite), and only then re-takes `inner`
//! to install the change — persist before serve, without blocking ingest
//! or reads during the commit. The routing document is pre-serialised
//! behind its own `RwLock` so `GET /v1/routing` never touches either.
//!
//! Time: every analysis tick (`tick_ms`, default 1 s) each canary's reports
//! since the last tick are merged into one tick of evidence, fed to the live
//! monitor and added to the step's evidence; a step is judged when its
//! duration has passed. Decisions are persisted (with the audit rows and the
//! routing version) before the new routing document is served; GitOps files
//! and webhooks follow, outside the locks.

use crate::analysis::{self, Monitor};
use crate::evidence::{PairTally, SidecarCritical};
use crate::log;
use crate::machine::{CanaryState, Conflict, Decision, Phase};
use crate::metrics::{Metrics, Reject};
use crate::plausibility::{self, Contribution, Limits};
use crate::prometheus::PromSeries;
use crate::render;
use crate::report::{Report, WireText};
use crate::spec::{istio_subset_host, CanarySpec, Mode, Selector, Side};
use crate::store::{AuditEntry, Batch, CanaryRecord, DecisionRow, SidecarRow, Store, StoreError};
use crate::webhook::{self, Webhooks};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use vigil_scorer::model::Model;
use vigil_scorer::verdict::State;
use vigil_wire::routing;

/// Most canaries the service manages.
pub const MAX_CANARIES: usize = 1_000;
/// Most distinct sidecars remembered.
pub const MAX_SIDECARS: usize = 100_000;
/// Decisions returned by `GET /v1/canaries/{name}`.
pub const SHOWN_DECISIONS: usize = 100;

/// Service settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data directory (SQLite file).
    pub data: PathBuf,
    /// GitOps output directory.
    pub out: PathBuf,
    /// Global webhook URLs.
    pub webhooks: Vec<String>,
    /// Where webhooks may go (the config file's `webhook_allow`).
    pub webhook_allow: crate::egress::Allow,
    /// Scorer model.
    pub model: Model,
    /// Per-sidecar plausibility limits on evidence.
    pub limits: Limits,
    /// A sidecar identity not heard from for this long is forgotten, ms.
    pub sidecar_ttl_ms: u64,
}

/// Default sidecar expiry: 10 minutes without a report.
pub const SIDECAR_TTL_MS: u64 = 600_000;

struct Live {
    spec: CanarySpec,
    state: CanaryState,
    /// Evidence of the step in force.
    step: PairTally,
    /// Evidence since the last analysis tick that did not come from
    /// sidecar reports (Prometheus), plus report counts and claims.
    tick: PairTally,
    /// Each sidecar's reported evidence since the last analysis tick,
    /// merged under the plausibility limits at the tick.
    contrib: HashMap<String, Contribution>,
    monitor: Monitor,
}

impl Live {
    fn record(&self) -> CanaryRecord {
        CanaryRecord {
            spec: self.spec.clone(),
            state: self.state.clone(),
            evidence: self.step.clone(),
        }
    }
}

/// Series → canaries lookup, rebuilt whenever a canary is added (under the
/// state lock, so it always matches `Inner::canaries`). A canary is named by
/// its slot: its position in `Inner::canaries` (name order), so the ingest
/// path reaches it without a name lookup per series. Keys hashed with
/// foldhash (they are the declared canaries' routes and clusters).
#[derive(Default)]
struct Index {
    /// route → cluster → (canary slot, side).
    route: FastMap<String, FastMap<String, Vec<(usize, Side)>>>,
    /// service host → subset → (canary slot, side).
    service: FastMap<String, FastMap<String, Vec<(usize, Side)>>>,
}

type FastMap<K, V> = hashbrown::HashMap<K, V>;

impl Index {
    /// From the canaries' specs in `Inner::canaries` order.
    fn build<'a>(specs: impl Iterator<Item = &'a CanarySpec>) -> Index {
        let mut idx = Index::default();
        for (slot, spec) in specs.enumerate() {
            let (map, key, stable, canary) = match spec.selector() {
                Selector::Route {
                    route,
                    stable,
                    canary,
                } => (&mut idx.route, route, stable, canary),
                Selector::Service {
                    service,
                    stable,
                    canary,
                } => (&mut idx.service, service, stable, canary),
            };
            let inner = map.entry(key.to_string()).or_default();
            inner
                .entry(stable.to_string())
                .or_default()
                .push((slot, Side::Stable));
            inner
                .entry(canary.to_string())
                .or_default()
                .push((slot, Side::Canary));
        }
        idx
    }

    fn lookup<'a>(
        &'a self,
        route: &str,
        cluster: &str,
    ) -> impl Iterator<Item = &'a (usize, Side)> + 'a {
        let by_route = self.route.get(route).and_then(|m| m.get(cluster));
        let by_service = if self.service.is_empty() {
            None
        } else {
            istio_subset_host(cluster)
                .and_then(|(subset, host)| self.service.get(host).and_then(|m| m.get(subset)))
        };
        by_route
            .into_iter()
            .flatten()
            .chain(by_service.into_iter().flatten())
    }
}

#[derive(Clone, Copy)]
struct SidecarSeq {
    incarnation: u64,
    seq: u64,
    sent_at_ms: u64,
    /// Service clock at the last accepted report (expiry).
    seen_ms: u64,
}

struct Inner {
    canaries: BTreeMap<String, Live>,
    index: Index,
    sidecars: HashMap<String, SidecarSeq>,
    dirty_sidecars: HashSet<String>,
    /// Expired sidecars to delete from the store at the next tick.
    forgotten_sidecars: Vec<String>,
    /// Last expiry scan, service clock ms.
    last_expiry_ms: u64,
    routing_version: u64,
    /// The routing document's canaries (without the version).
    routing_canaries: Vec<routing::Entry>,
}

/// The routing document served to the filters.
#[derive(Debug, Clone)]
pub struct RoutingDoc {
    /// Version.
    pub version: u64,
    /// Serialised JSON.
    pub body: Bytes,
}

/// Why an ingest was refused (after validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestError {
    /// `seq` not above the sidecar's last one.
    OutOfOrder {
        /// The last accepted seq.
        last: u64,
    },
    /// Too many distinct sidecars.
    TooManySidecars,
}

/// Why an operator action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// No such canary.
    NotFound,
    /// Not allowed in the current phase.
    Conflict(String),
    /// Invalid input.
    Invalid {
        /// Field.
        field: String,
        /// Why.
        message: String,
    },
    /// Storage failed; nothing changed.
    Storage(String),
}

/// An operator action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Approve the gate.
    Approve,
    /// Reject (abort) the rollout.
    Reject,
    /// Pause.
    Pause,
    /// Resume.
    Resume,
}

impl Op {
    /// Parse a URL action.
    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "approve" => Some(Op::Approve),
            "reject" => Some(Op::Reject),
            "pause" => Some(Op::Pause),
            "resume" => Some(Op::Resume),
            _ => None,
        }
    }
}

/// The rules of every operator action (canaries and policy drafts): `by`
/// names who acts (1–128 bytes, no control characters), a comment is at
/// most 4096 bytes.
pub fn check_action(by: &str, comment: &str) -> Result<(), OpError> {
    if by.is_empty() || by.len() > 128 || by.chars().any(char::is_control) {
        return Err(OpError::Invalid {
            field: "by".into(),
            message: "must be 1 to 128 bytes naming who acts".into(),
        });
    }
    if comment.len() > 4096 {
        return Err(OpError::Invalid {
            field: "comment".into(),
            message: "at most 4096 bytes".into(),
        });
    }
    Ok(())
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// New canary.
    Created,
    /// Spec changed.
    Updated,
    /// Finished rollout restarted with the (new) spec.
    Restarted,
    /// Identical spec: nothing changed.
    Unchanged,
}

/// A canary's tick computed on copies, installed once committed.
struct Staged {
    name: String,
    /// The tick evidence taken from the live canary (given back on failure).
    taken: PairTally,
    state: CanaryState,
    step: PairTally,
    monitor: Monitor,
    decisions: Vec<Decision>,
}

/// Work to do outside the locks after a state change.
struct Followup {
    spec: CanarySpec,
    state: CanaryState,
    decisions: Vec<Decision>,
}

/// The service.
pub struct Service {
    /// Serialises state changes (tick, upsert, operate) so a staged change
    /// can be committed without holding `inner`.
    writer: Mutex<()>,
    inner: Mutex<Inner>,
    store: Mutex<Store>,
    routing: RwLock<RoutingDoc>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    webhooks: Option<Webhooks>,
    opts: Options,
    /// Recent per-tick samples for the dashboard's plots.
    pub history: crate::dashboard::History,
    /// False after a failed commit, until one succeeds.
    storage_ok: AtomicBool,
    /// How far `GET /v1/audit` has verified the chain (from the head
    /// verified at start, [`crate::audit_page`]).
    audit_verified: crate::audit_page::Verified,
    /// PII guard counts per route and the findings alert ([`crate::pii`]).
    pub pii: crate::pii::PiiState,
    /// The dependency map from the reports' edges (`crate::graph`).
    pub(crate) graph: Mutex<crate::graph::Graph>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("data", &self.opts.data)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A staged tick's new routing document: its version and canaries.
type StagedRouting = (u64, Vec<routing::Entry>);

fn routing_canaries(canaries: &BTreeMap<String, Live>) -> Vec<routing::Entry> {
    routing_canaries_with(canaries, &HashMap::new())
}

/// The routing canaries with some states replaced (a staged tick).
fn routing_canaries_with(
    canaries: &BTreeMap<String, Live>,
    states: &HashMap<&str, &CanaryState>,
) -> Vec<routing::Entry> {
    canaries
        .values()
        .filter(|l| l.spec.mode == Mode::Enforce)
        .map(|l| {
            let s = states
                .get(l.spec.name.as_str())
                .copied()
                .unwrap_or(&l.state);
            routing::Entry {
                name: l.spec.name.clone(),
                canary_weight: s.weight,
                phase: s.phase.as_str().to_string(),
            }
        })
        .collect()
}

fn routing_doc(version: u64, canaries: &[routing::Entry]) -> RoutingDoc {
    RoutingDoc {
        version,
        body: Bytes::from(routing::encode(version, canaries)),
    }
}

impl Service {
    /// Open the data directory, restore every canary, apply the declared
    /// ones (`config`: from the config file, attributed to `config-file`).
    /// `webhooks` is `None` outside a tokio runtime (offline commands).
    pub fn open(
        opts: Options,
        config: &[CanarySpec],
        webhooks: Option<Webhooks>,
        metrics: Arc<Metrics>,
    ) -> Result<Service, StoreError> {
        let store = Store::open(&opts.data)?;
        let unreadable = |e: StoreError| {
            StoreError(format!(
                "the data directory failed verification at start: {}. {}",
                e.0,
                crate::verify::RECOVER
            ))
        };
        let routing_version = store.routing_version().map_err(unreadable)?;
        let records = store.load_canaries().map_err(|e| {
            StoreError(format!(
                "the data directory failed verification at start: stored canaries unreadable: {e}. {}",
                crate::verify::RECOVER
            ))
        })?;
        crate::verify::startup(&store, &records).map_err(StoreError)?;
        let audit_verified =
            crate::audit_page::Verified::new(store.audit_head().map_err(unreadable)?);
        let mut canaries = BTreeMap::new();
        for rec in records {
            canaries.insert(
                rec.spec.name.clone(),
                Live {
                    monitor: Monitor::new(&opts.model),
                    spec: rec.spec,
                    state: rec.state,
                    step: rec.evidence,
                    tick: PairTally::default(),
                    contrib: HashMap::new(),
                },
            );
        }
        let sidecars = store
            .sidecars()
            .map_err(unreadable)?
            .into_iter()
            .map(|r| {
                (
                    r.sidecar,
                    SidecarSeq {
                        incarnation: r.incarnation,
                        seq: r.seq,
                        sent_at_ms: r.sent_at_ms,
                        seen_ms: r.seen_ms,
                    },
                )
            })
            .collect();
        let routing_canaries = routing_canaries(&canaries);
        let index = Index::build(canaries.values().map(|l| &l.spec));
        let service = Service {
            routing: RwLock::new(routing_doc(routing_version, &routing_canaries)),
            inner: Mutex::new(Inner {
                canaries,
                index,
                sidecars,
                dirty_sidecars: HashSet::new(),
                forgotten_sidecars: Vec::new(),
                last_expiry_ms: 0,
                routing_version,
                routing_canaries,
            }),
            store: Mutex::new(store),
            metrics,
            webhooks,
            opts,
            history: crate::dashboard::History::default(),
            writer: Mutex::new(()),
            storage_ok: AtomicBool::new(true),
            audit_verified,
            pii: crate::pii::PiiState::default(),
            graph: Mutex::new(crate::graph::Graph::default()),
        };
        let now = log::now_ms();
        for spec in config {
            match service.upsert(spec.clone(), "config-file", now) {
                Ok(outcome) => log::info(
                    "declared canary applied",
                    json!({"canary": spec.name, "outcome": format!("{outcome:?}").to_lowercase()}),
                ),
                Err(OpError::Storage(e)) => return Err(StoreError(e)),
                Err(e) => return Err(StoreError(format!("config canary {}: {e:?}", spec.name))),
            }
        }
        Ok(service)
    }

    /// The scorer model in use.
    pub fn model(&self) -> &Model {
        &self.opts.model
    }

    /// The routing document (cheap: a clone of pre-serialised bytes).
    pub fn routing(&self) -> RoutingDoc {
        Metrics::add(&self.metrics.routing_requests, 1);
        self.routing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn publish_routing(&self, inner: &Inner) {
        let doc = routing_doc(inner.routing_version, &inner.routing_canaries);
        *self
            .routing
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = doc;
    }

    /// Forget sidecars not heard from for `sidecar_ttl_ms` (at most one
    /// scan a second).
    fn expire_sidecars(&self, inner: &mut Inner, now_ms: u64) {
        if now_ms.saturating_sub(inner.last_expiry_ms) < 1000 {
            return;
        }
        inner.last_expiry_ms = now_ms;
        let ttl = self.opts.sidecar_ttl_ms;
        let before = inner.sidecars.len();
        let forgotten = &mut inner.forgotten_sidecars;
        inner.sidecars.retain(|id, s| {
            let keep = now_ms.saturating_sub(s.seen_ms) < ttl;
            if !keep {
                forgotten.push(id.clone());
            }
            keep
        });
        let expired = before - inner.sidecars.len();
        if expired > 0 {
            for id in &inner.forgotten_sidecars {
                inner.dirty_sidecars.remove(id);
            }
            Metrics::add(&self.metrics.sidecars_expired, expired as u64);
            log::info(
                "sidecar identities expired",
                json!({"expired": expired, "remembered": inner.sidecars.len(), "ttl_ms": ttl}),
            );
        }
    }

    /// Ingest a validated report at the service clock `now_ms` (the
    /// sender's clock is not trusted for expiry). Returns the number of
    /// series accepted.
    ///
    /// Order: `(incarnation, seq)` per sidecar. A report of a new
    /// incarnation is accepted whatever its `seq` (the sender restarted or
    /// the lease moved to another worker), so no `seq` value — 2^64 − 1
    /// included — can lock a sidecar out; within an incarnation `seq` must
    /// increase.
    pub fn ingest_at<S: WireText>(
        &self,
        report: &Report<S>,
        now_ms: u64,
    ) -> Result<usize, IngestError> {
        let sidecar = report.sidecar.as_str();
        let mut inner = lock(&self.inner);
        let inner = &mut *inner;
        match inner.sidecars.get(sidecar) {
            Some(last) if last.incarnation == report.incarnation => {
                // Senders without incarnations (0) restart from 0 or 1 with a newer clock.
                let legacy_restart = report.incarnation == 0
                    && report.seq <= 1
                    && report.sent_at_ms > last.sent_at_ms;
                if report.seq <= last.seq && !legacy_restart {
                    return Err(IngestError::OutOfOrder { last: last.seq });
                }
            }
            Some(_) => {}
            None if inner.sidecars.len() >= MAX_SIDECARS => {
                self.expire_sidecars(inner, now_ms);
                if inner.sidecars.len() >= MAX_SIDECARS {
                    return Err(IngestError::TooManySidecars);
                }
            }
            None => {}
        }
        let seq = SidecarSeq {
            incarnation: report.incarnation,
            seq: report.seq,
            sent_at_ms: report.sent_at_ms,
            seen_ms: now_ms,
        };
        match inner.sidecars.get_mut(sidecar) {
            Some(last) => *last = seq,
            None => {
                inner.sidecars.insert(sidecar.to_string(), seq);
            }
        }
        if !inner.dirty_sidecars.contains(sidecar) {
            inner.dirty_sidecars.insert(sidecar.to_string());
        }
        let mut matched = 0u64;
        // The canaries by slot (the index's numbering), and per slot the
        // [stable, canary] requests this report carries: one pass over the
        // canaries instead of a name lookup per series.
        let mut lives: Vec<&mut Live> = inner.canaries.values_mut().collect();
        let mut touched: Vec<Option<[u64; 2]>> = Vec::new();
        if !report.series.is_empty() {
            touched.resize(lives.len(), None);
        }
        for s in &report.series {
            for &(slot, side) in inner.index.lookup(s.route.as_str(), s.cluster.as_str()) {
                let (Some(live), Some(seen)) = (lives.get_mut(slot), touched.get_mut(slot)) else {
                    continue;
                };
                let i = usize::from(side == Side::Canary);
                let contribution = match live.contrib.get_mut(sidecar) {
                    Some(c) => c,
                    None => live.contrib.entry(sidecar.to_string()).or_default(),
                };
                if let Some((d, stream)) = contribution.get_mut(i) {
                    d.add_parts(&s.counters(), &s.latency);
                    stream.add_series(s);
                }
                matched += 1;
                let seen = seen.get_or_insert([0, 0]);
                if let Some(x) = seen.get_mut(i) {
                    *x = x.saturating_add(s.requests);
                }
            }
        }
        for (live, seen) in lives.iter_mut().zip(&touched) {
            if seen.is_some() {
                live.tick.reports += 1;
            }
        }
        for c in &report.canaries {
            if c.state() != State::Critical {
                continue;
            }
            // `lives` is in name order (the map's keys are the spec names).
            let name = c.name.as_str();
            let Ok(slot) = lives.binary_search_by(|l| l.spec.name.as_str().cmp(name)) else {
                continue;
            };
            // A claim counts only with the counts behind it: this report
            // must carry traffic of both versions of that canary.
            let supported = touched
                .get(slot)
                .and_then(|seen| seen.as_ref())
                .is_some_and(|seen| seen.iter().all(|x| *x > 0));
            let Some(live) = lives.get_mut(slot) else {
                continue;
            };
            if !supported {
                Metrics::add(&self.metrics.unsupported_critical, 1);
                continue;
            }
            if live.tick.critical.is_none() {
                live.tick.critical = Some(SidecarCritical {
                    sidecar: sidecar.to_string(),
                    score: c.score,
                    reason: c.reason.as_str().to_string(),
                });
            }
        }
        drop(lives);
        self.pii.ingest(&report.pii);
        if !report.edges.is_empty() || report.edges_overflow > 0 {
            lock(&self.graph).ingest(sidecar, &report.edges, report.edges_overflow, now_ms);
        }
        Metrics::add(&self.metrics.reports_accepted, 1);
        Metrics::add(&self.metrics.series_updates, report.series.len() as u64);
        Metrics::add(&self.metrics.series_matched, matched);
        Ok(report.series.len())
    }

    /// [`Service::ingest_at`] now.
    pub fn ingest<S: WireText>(&self, report: &Report<S>) -> Result<usize, IngestError> {
        self.ingest_at(report, log::now_ms())
    }

    /// Ingest one Prometheus poll (see [`crate::prometheus`]): each series'
    /// counters go into the canaries' tick evidence like a report's, marked
    /// as from Prometheus. Returns the series matched.
    pub fn ingest_prometheus(&self, series: &[PromSeries]) -> usize {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let mut matched = 0usize;
        let mut lives: Vec<&mut Live> = inner.canaries.values_mut().collect();
        let mut touched: Vec<usize> = Vec::new();
        for s in series {
            for &(slot, side) in inner.index.lookup(&s.route, &s.cluster) {
                if let Some(live) = lives.get_mut(slot) {
                    live.tick.add(side, &s.delta);
                    live.tick.prometheus = true;
                    if side == Side::Canary {
                        if let Some(p99) = s.p99_ms.filter(|v| v.is_finite() && *v >= 0.0) {
                            let us = (p99 * 1000.0).min(u64::MAX as f64) as u64;
                            live.tick.canary_p99_gauge_us =
                                live.tick.canary_p99_gauge_us.max(Some(us));
                        }
                    }
                    matched += 1;
                    if !touched.contains(&slot) {
                        touched.push(slot);
                    }
                }
            }
        }
        for slot in touched {
            if let Some(live) = lives.get_mut(slot) {
                live.tick.reports += 1;
            }
        }
        Metrics::add(&self.metrics.series_updates, series.len() as u64);
        Metrics::add(&self.metrics.series_matched, matched as u64);
        matched
    }

    /// One analysis tick at `now_ms`: stage, commit, then serve.
    ///
    /// Persist before serve: the tick's new states are computed on copies
    /// under the state lock (ingest keeps adding to the next tick while the
    /// commit runs, reads keep seeing the stored state), committed to SQLite
    /// without the state lock, and only then installed and published. When
    /// the commit fails nothing is installed: the tick's evidence (including
    /// a pending sidecar critical) goes back into the next tick, which
    /// retries; `/healthz` reports unhealthy until a commit succeeds.
    pub fn tick(&self, now_ms: u64) {
        Metrics::add(&self.metrics.ticks, 1);
        self.pii_tick(now_ms);
        self.graph_tick(now_ms);
        let _writer = lock(&self.writer);
        let (staged, batch, routing) = {
            let mut guard = lock(&self.inner);
            self.expire_sidecars(&mut guard, now_ms);
            self.stage_tick(&mut guard, now_ms)
        };
        let result = self.commit(&batch);
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        if let Err(e) = result {
            // Nothing was stored: give the evidence back to the next tick.
            for s in staged {
                if let Some(live) = inner.canaries.get_mut(&s.name) {
                    let mut t = s.taken;
                    t.merge(&live.tick);
                    live.tick = t;
                }
            }
            for row in batch.sidecars {
                inner.dirty_sidecars.insert(row.sidecar);
            }
            inner.forgotten_sidecars.extend(batch.forget_sidecars);
            log::error(
                "could not persist the analysis tick; nothing of it is served, it is retried next tick",
                json!({"error": e.to_string()}),
            );
            return;
        }
        let mut followups = Vec::new();
        for s in staged {
            let Some(live) = inner.canaries.get_mut(&s.name) else {
                continue;
            };
            live.state = s.state;
            live.step = s.step;
            live.monitor = s.monitor;
            for d in &s.decisions {
                self.metrics.decision(d.kind);
                log::info(
                    "decision",
                    json!({"canary": live.spec.name, "kind": d.kind.as_str(), "from": d.from.as_str(),
                           "to": d.to.as_str(), "weight": d.weight_after, "explanation": d.explanation}),
                );
            }
            if !s.decisions.is_empty() {
                followups.push(Followup {
                    spec: live.spec.clone(),
                    state: live.state.clone(),
                    decisions: s.decisions,
                });
            }
        }
        if let Some((version, canaries)) = routing {
            inner.routing_version = version;
            inner.routing_canaries = canaries;
        }
        self.publish_routing(inner);
        drop(guard);
        self.follow_up(followups);
    }

    /// The dependency map's tick: expire, and audit + webhook its new-edge /
    /// vanished-edge events (service-wide: no canary; global webhooks only).
    fn graph_tick(&self, now_ms: u64) {
        let events = lock(&self.graph).tick(now_ms);
        if events.is_empty() {
            return;
        }
        let batch = Batch {
            audit: events
                .iter()
                .map(|e| AuditEntry {
                    ts_ms: now_ms,
                    actor: "vigil-control".to_string(),
                    action: format!("graph:{}", e.kind),
                    canary: String::new(),
                    detail: e.explain(),
                    evidence: e.to_json().to_string(),
                })
                .collect(),
            ..Batch::default()
        };
        if let Err(e) = self.commit(&batch) {
            log::error(
                "could not audit dependency-map events",
                json!({"error": e.to_string(), "events": events.len()}),
            );
        }
        for e in &events {
            log::info("dependency map", e.to_json());
            self.announce(&e.to_json());
        }
    }

    /// Send a service-wide event (no canary) to the global webhooks.
    pub(crate) fn announce(&self, payload: &Value) {
        if let Some(hooks) = &self.webhooks {
            let mut urls = self.opts.webhooks.clone();
            urls.retain(|u| self.opts.webhook_allow.allows(u));
            hooks.send(urls, payload);
        }
    }

    /// The GitOps output directory.
    pub fn gitops_dir(&self) -> &std::path::Path {
        &self.opts.out
    }

    /// Commit service-wide rows (audit) in one transaction.
    pub(crate) fn commit_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        self.commit(batch)
    }

    /// `GET /v1/graph` (JSON) at the service clock.
    pub fn graph_view(&self, now_ms: u64) -> Value {
        lock(&self.graph).view(now_ms)
    }

    /// `GET /v1/graph?format=dot`.
    pub fn graph_dot(&self, now_ms: u64) -> String {
        lock(&self.graph).dot(now_ms)
    }

    /// The graph's edges (policy drafts, advice).
    pub fn graph_edges(&self, now_ms: u64) -> Vec<crate::graph::EdgeView> {
        lock(&self.graph).edges(now_ms)
    }

    /// Set the dependency map's horizon and learning period (`serve` flags).
    pub fn set_graph_options(&self, opts: crate::graph::GraphOptions) {
        lock(&self.graph).set_options(opts);
    }

    /// The PII part of a tick: store the counts since the last tick per
    /// minute with any alert raised or cleared (audited, one transaction),
    /// then announce the alerts through the webhooks. A failed commit gives
    /// the counts back to the next tick.
    fn pii_tick(&self, now_ms: u64) {
        let staged = self.pii.stage(now_ms);
        if staged.is_empty() {
            return;
        }
        let batch = Batch {
            pii: staged.rows.clone(),
            audit: staged.events.iter().map(|e| e.audit()).collect(),
            ..Batch::default()
        };
        if let Err(e) = self.commit(&batch) {
            log::error(
                "could not persist PII counts; retried next tick",
                json!({"error": e.to_string()}),
            );
            self.pii.restore(staged);
            return;
        }
        self.pii.install(&staged);
        if staged.events.is_empty() {
            return;
        }
        let mut urls = self.opts.webhooks.clone();
        urls.extend(self.pii.alert().map(|a| a.webhooks).unwrap_or_default());
        urls.retain(|u| self.opts.webhook_allow.allows(u));
        for e in &staged.events {
            log::warn(
                if e.raised {
                    "pii alert"
                } else {
                    "pii alert cleared"
                },
                json!({"route": e.route, "findings": e.findings, "threshold_per_minute": e.threshold}),
            );
            if let Some(hooks) = &self.webhooks {
                hooks.send(urls.clone(), &e.payload());
            }
        }
    }

    /// `GET /v1/pii/findings`: stored PII counts per route and minute in
    /// `[since_ms, until_ms]` (one route or all).
    pub fn pii_findings(
        &self,
        route: Option<&str>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Value, StoreError> {
        let (rows, truncated) =
            lock(&self.store).pii_rows(route, since_ms, until_ms, crate::pii::MAX_ROWS)?;
        let alert = self.pii.alert();
        Ok(crate::pii::view(
            &rows,
            since_ms,
            until_ms,
            truncated,
            alert.as_ref(),
            &self.pii.alerting(),
        ))
    }

    /// Commit a batch (SQLite, off the state lock); keeps the health flag
    /// and the failure counter.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let result = lock(&self.store).apply(batch);
        match &result {
            Ok(()) => self.storage_ok.store(true, Ordering::Relaxed),
            Err(_) => {
                self.storage_ok.store(false, Ordering::Relaxed);
                Metrics::add(&self.metrics.storage_errors, 1);
            }
        }
        result
    }

    /// Whether the last write to the store succeeded (`/healthz`).
    pub fn storage_healthy(&self) -> bool {
        self.storage_ok.load(Ordering::Relaxed)
    }

    /// Compute a tick on copies: the staged canaries, the batch to write
    /// and the new routing (version, canaries) if it changes.
    fn stage_tick(
        &self,
        inner: &mut Inner,
        now_ms: u64,
    ) -> (Vec<Staged>, Batch, Option<StagedRouting>) {
        let model = &self.opts.model;
        let mut batch = Batch::default();
        let mut staged = Vec::new();
        for live in inner.canaries.values_mut() {
            if !(live.state.phase == Phase::Pending || live.state.phase.is_active()) {
                continue;
            }
            let mut taken = std::mem::take(&mut live.tick);
            let contrib = std::mem::take(&mut live.contrib);
            let (reported, clipped) = plausibility::merge(&contrib, &self.opts.limits);
            if clipped > 0 {
                Metrics::add(&self.metrics.evidence_clipped, clipped);
            }
            taken.stable.add(&reported.stable);
            taken.canary.add(&reported.canary);
            self.history.record(
                &live.spec.name,
                now_ms,
                &taken,
                live.state.weight,
                &live.monitor.last,
            );
            let mut state = live.state.clone();
            let mut step = live.step.clone();
            let mut monitor = live.monitor.clone();
            let mut decisions: Vec<Decision> = Vec::new();
            let mut from_prometheus = false;
            if state.phase == Phase::Pending {
                decisions.extend(state.start(&live.spec, now_ms));
            } else {
                from_prometheus = taken.prometheus || step.prometheus;
                let verdict = monitor.observe(&taken, model);
                step.merge(&taken);
                // One judge: only the control-side sequential test on the
                // merged evidence rolls back; a sidecar's claim is noted.
                let rollback = analysis::judge_live(&verdict, model).map(|mut j| {
                    if let (Some(c), Some(o)) = (&taken.critical, j.evidence.as_object_mut()) {
                        o.insert("sidecar_claim".into(), analysis::claim_json(c));
                    }
                    j
                });
                if rollback.is_none() && taken.critical.is_some() {
                    Metrics::add(&self.metrics.unconfirmed_critical, 1);
                }
                if let Some(j) = rollback {
                    decisions.extend(state.rollback(&j, now_ms));
                } else if state.step_due(&live.spec, now_ms) {
                    let j = analysis::judge_step(
                        &live.spec,
                        &step,
                        state.weight,
                        model,
                        &verdict,
                        monitor.log_e_value(),
                    );
                    decisions.extend(state.on_step_judgement(&live.spec, &j, now_ms));
                }
            }
            if from_prometheus {
                for d in &mut decisions {
                    // Which data the judgement saw (the evidence's
                    // "source" says which judgement it was).
                    if let Some(o) = d.evidence.as_object_mut() {
                        o.insert("data_source".into(), json!("prometheus"));
                    } else {
                        d.evidence = json!({"data_source": "prometheus", "evidence": d.evidence});
                    }
                    d.explanation.push_str(" [data source: prometheus]");
                }
            }
            if decisions.iter().any(|d| d.new_step) {
                // A new step's evidence starts empty; the live monitor keeps
                // its windows (it compares shares, which a weight change
                // does not move).
                step = PairTally::default();
            }
            batch.canaries.push(CanaryRecord {
                spec: live.spec.clone(),
                state: state.clone(),
                evidence: step.clone(),
            });
            for d in &decisions {
                batch.decisions.push((live.spec.name.clone(), d.clone()));
                batch
                    .audit
                    .push(AuditEntry::of_decision(&live.spec.name, d));
            }
            staged.push(Staged {
                name: live.spec.name.clone(),
                taken,
                state,
                step,
                monitor,
                decisions,
            });
        }
        for sidecar in inner.dirty_sidecars.drain() {
            if let Some(s) = inner.sidecars.get(&sidecar) {
                batch.sidecars.push(SidecarRow {
                    sidecar,
                    incarnation: s.incarnation,
                    seq: s.seq,
                    sent_at_ms: s.sent_at_ms,
                    seen_ms: s.seen_ms,
                });
            }
        }
        batch.forget_sidecars = std::mem::take(&mut inner.forgotten_sidecars);
        let states: HashMap<&str, &CanaryState> =
            staged.iter().map(|s| (s.name.as_str(), &s.state)).collect();
        let canaries = routing_canaries_with(&inner.canaries, &states);
        let routing = (canaries != inner.routing_canaries).then(|| {
            let version = inner.routing_version.saturating_add(1);
            batch.routing_version = Some(version);
            (version, canaries)
        });
        (staged, batch, routing)
    }

    fn follow_up(&self, followups: Vec<Followup>) {
        if followups.is_empty() {
            return;
        }
        let version = lock(&self.inner).routing_version;
        for f in followups {
            if f.spec.mode == Mode::Observe {
                continue;
            }
            let files = render::render(&f.spec, &f.state, version);
            if let Err(e) = render::write(&self.opts.out, &f.spec.name, &files) {
                Metrics::add(&self.metrics.render_errors, 1);
                log::error(
                    "could not write GitOps files",
                    json!({"canary": f.spec.name, "error": e.to_string()}),
                );
            }
            if let Some(hooks) = &self.webhooks {
                let mut urls = self.opts.webhooks.clone();
                urls.extend(f.spec.webhooks.iter().cloned());
                // Stored canaries keep their URLs when the allowlist shrinks:
                // only allowed targets are called.
                urls.retain(|u| self.opts.webhook_allow.allows(u));
                for d in &f.decisions {
                    hooks.send(urls.clone(), &webhook::payload(&f.spec, d));
                }
            }
        }
    }

    /// Declare or update a canary (validated spec).
    pub fn upsert(&self, spec: CanarySpec, actor: &str, now_ms: u64) -> Result<Upsert, OpError> {
        if let Err(e) = spec.validate() {
            return Err(OpError::Invalid {
                field: e.field,
                message: e.message,
            });
        }
        if let Err((i, message)) = self.opts.webhook_allow.check(&spec.webhooks) {
            return Err(OpError::Invalid {
                field: format!("webhooks[{i}]"),
                message,
            });
        }
        let mut followups = Vec::new();
        let outcome;
        let _writer = lock(&self.writer);
        {
            let mut guard = lock(&self.inner);
            let inner = &mut *guard;
            let mut batch = Batch::default();
            let spec_json = serde_json::to_value(&spec).unwrap_or(Value::Null);
            let previous = inner
                .canaries
                .get(&spec.name)
                .map(|l| (l.spec.clone(), l.state.clone(), l.step.clone()));
            let (live, action, detail, evidence) = match previous {
                None => {
                    if inner.canaries.len() >= MAX_CANARIES {
                        return Err(OpError::Conflict(format!(
                            "at most {MAX_CANARIES} canaries"
                        )));
                    }
                    outcome = Upsert::Created;
                    (
                        Live {
                            spec: spec.clone(),
                            state: CanaryState::new(now_ms),
                            step: PairTally::default(),
                            tick: PairTally::default(),
                            contrib: HashMap::new(),
                            monitor: Monitor::new(&self.opts.model),
                        },
                        "config:create",
                        format!(
                            "canary {} declared by {actor} ({} mode, steps {:?})",
                            spec.name,
                            spec.mode.as_str(),
                            spec.steps
                        ),
                        json!({"spec": spec_json}),
                    )
                }
                Some((old, _, _)) if old == spec => return Ok(Upsert::Unchanged),
                Some((old, mut state, step)) => {
                    let mut decisions = Vec::new();
                    if state.phase.is_terminal() {
                        outcome = Upsert::Restarted;
                        decisions.extend(state.restart(actor, now_ms));
                    } else {
                        outcome = Upsert::Updated;
                        if state.step >= spec.steps.len() {
                            state.step = spec.steps.len().saturating_sub(1);
                        }
                    }
                    for d in &decisions {
                        batch.decisions.push((spec.name.clone(), d.clone()));
                        batch.audit.push(AuditEntry::of_decision(&spec.name, d));
                    }
                    if !decisions.is_empty() {
                        followups.push(Followup {
                            spec: spec.clone(),
                            state: state.clone(),
                            decisions,
                        });
                    }
                    let restarted = outcome == Upsert::Restarted;
                    (
                        Live {
                            spec: spec.clone(),
                            state,
                            step: if restarted {
                                PairTally::default()
                            } else {
                                step
                            },
                            tick: PairTally::default(),
                            contrib: HashMap::new(),
                            monitor: Monitor::new(&self.opts.model),
                        },
                        "config:update",
                        format!("canary {} updated by {actor}", spec.name),
                        json!({"spec": spec_json, "previous": serde_json::to_value(&old).unwrap_or(Value::Null)}),
                    )
                }
            };
            batch.audit.push(AuditEntry {
                ts_ms: now_ms,
                actor: actor.to_string(),
                action: action.to_string(),
                canary: spec.name.clone(),
                detail,
                evidence: evidence.to_string(),
            });
            batch.canaries.push(live.record());
            let mut states: HashMap<&str, &CanaryState> = HashMap::new();
            states.insert(spec.name.as_str(), &live.state);
            let mut canaries = routing_canaries_with(&inner.canaries, &states);
            if !inner.canaries.contains_key(&spec.name) && spec.mode == Mode::Enforce {
                // A new canary: where it sorts among the others.
                canaries.push(routing::Entry {
                    name: spec.name.clone(),
                    canary_weight: live.state.weight,
                    phase: live.state.phase.as_str().to_string(),
                });
                canaries.sort_by(|x, y| x.name.cmp(&y.name));
            }
            let routing = (canaries != inner.routing_canaries)
                .then(|| (inner.routing_version.saturating_add(1), canaries));
            batch.routing_version = routing.as_ref().map(|(v, _)| *v);
            drop(guard);
            // Committed without the state lock; nothing is installed when it fails.
            if let Err(e) = self.commit(&batch) {
                return Err(OpError::Storage(e.to_string()));
            }
            let mut guard = lock(&self.inner);
            let inner = &mut *guard;
            inner.canaries.insert(spec.name.clone(), live);
            if let Some((version, canaries)) = routing {
                inner.routing_version = version;
                inner.routing_canaries = canaries;
            }
            inner.index = Index::build(inner.canaries.values().map(|l| &l.spec));
            self.publish_routing(inner);
            for f in &followups {
                for d in &f.decisions {
                    self.metrics.decision(d.kind);
                }
            }
            log::info(
                "canary declared",
                json!({"canary": spec.name, "actor": actor, "action": action}),
            );
        }
        drop(_writer);
        self.follow_up(followups);
        Ok(outcome)
    }

    /// Approve, reject, pause or resume. `by` is who (1–128 bytes).
    pub fn operate(
        &self,
        name: &str,
        op: Op,
        by: &str,
        comment: &str,
        now_ms: u64,
    ) -> Result<Decision, OpError> {
        check_action(by, comment)?;
        let _writer = lock(&self.writer);
        let (record, d, routing) = {
            let guard = lock(&self.inner);
            let live = guard.canaries.get(name).ok_or(OpError::NotFound)?;
            let mut state = live.state.clone();
            let mut step = live.step.clone();
            let result: Result<Decision, Conflict> = match op {
                Op::Approve => state.approve(&live.spec, by, comment, now_ms),
                Op::Reject => state.reject(by, comment, now_ms),
                Op::Pause => state.pause(by, comment, now_ms),
                Op::Resume => state.resume(by, comment, now_ms),
            };
            let d = result.map_err(|Conflict(m)| OpError::Conflict(m))?;
            if d.new_step {
                step = PairTally::default();
            }
            let mut states: HashMap<&str, &CanaryState> = HashMap::new();
            states.insert(name, &state);
            let canaries = routing_canaries_with(&guard.canaries, &states);
            let routing = (canaries != guard.routing_canaries)
                .then(|| (guard.routing_version.saturating_add(1), canaries));
            let record = CanaryRecord {
                spec: live.spec.clone(),
                state,
                evidence: step,
            };
            (record, d, routing)
        };
        let batch = Batch {
            canaries: vec![record.clone()],
            decisions: vec![(name.to_string(), d.clone())],
            audit: vec![AuditEntry::of_decision(name, &d)],
            routing_version: routing.as_ref().map(|(v, _)| *v),
            ..Batch::default()
        };
        // Committed without the state lock; nothing is installed when it fails.
        self.commit(&batch)
            .map_err(|e| OpError::Storage(e.to_string()))?;
        {
            let mut guard = lock(&self.inner);
            let inner = &mut *guard;
            if let Some(live) = inner.canaries.get_mut(name) {
                live.state = record.state.clone();
                live.step = record.evidence;
            }
            if let Some((version, canaries)) = routing {
                inner.routing_version = version;
                inner.routing_canaries = canaries;
            }
            self.metrics.decision(d.kind);
            self.publish_routing(inner);
        }
        drop(_writer);
        log::info(
            "operator decision",
            json!({"canary": name, "kind": d.kind.as_str(), "actor": by, "weight": d.weight_after, "explanation": d.explanation}),
        );
        self.follow_up(vec![Followup {
            spec: record.spec,
            state: record.state,
            decisions: vec![d.clone()],
        }]);
        Ok(d)
    }

    fn view(live: &Live, model: &Model) -> Value {
        let s = &live.state;
        let steps = live.spec.steps.len();
        let v = &live.monitor.last;
        json!({
            "name": live.spec.name,
            "mode": live.spec.mode.as_str(),
            "phase": s.phase.as_str(),
            "canary_weight": s.weight,
            "step": s.step + 1,
            "steps": live.spec.steps,
            "step_count": steps,
            "step_started_ms": s.step_started_ms,
            "step_ends_ms": (s.phase == Phase::Progressing)
                .then(|| s.step_started_ms.saturating_add(live.spec.step_duration_s.saturating_mul(1000))),
            "gate": s.gate,
            "holding": s.holding,
            "rollout": s.rollout,
            "reason": s.reason,
            "updated_ms": s.updated_ms,
            "spec": redacted_spec(&live.spec),
            "evidence": {
                "summary": analysis::describe(&live.step),
                "reports": live.step.reports,
                "canary": analysis::tally_json(&live.step.canary),
                "stable": analysis::tally_json(&live.step.stable),
                "min_requests": model.min_requests,
                "min_requests_ref": model.min_requests_ref,
            },
            "live_verdict": {"state": v.state.as_str(), "score": v.score, "explanation": v.explain()},
        })
    }

    /// Every canary, as the API shows it.
    pub fn list(&self) -> Value {
        let inner = lock(&self.inner);
        Value::Array(
            inner
                .canaries
                .values()
                .map(|l| Self::view(l, &self.opts.model))
                .collect(),
        )
    }

    /// One canary with its recent decisions.
    pub fn show(&self, name: &str) -> Result<Value, OpError> {
        let mut view = {
            let inner = lock(&self.inner);
            let live = inner.canaries.get(name).ok_or(OpError::NotFound)?;
            Self::view(live, &self.opts.model)
        };
        let decisions: Vec<DecisionRow> = lock(&self.store)
            .decisions(name, SHOWN_DECISIONS)
            .map_err(|e| OpError::Storage(e.to_string()))?;
        if let Some(o) = view.as_object_mut() {
            o.insert(
                "decisions".into(),
                Value::Array(decisions.iter().map(DecisionRow::to_json).collect()),
            );
        }
        Ok(view)
    }

    /// Metrics text.
    pub fn metrics_text(&self) -> String {
        let (version, count, phases) = {
            let inner = lock(&self.inner);
            let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
            for p in [
                Phase::Pending,
                Phase::Progressing,
                Phase::WaitingApproval,
                Phase::Paused,
                Phase::Promoted,
                Phase::RolledBack,
            ] {
                phases.insert(p.as_str(), 0);
            }
            for l in inner.canaries.values() {
                *phases.entry(l.state.phase.as_str()).or_default() += 1;
            }
            (inner.routing_version, inner.canaries.len(), phases)
        };
        let phases: Vec<(&str, usize)> = phases.into_iter().collect();
        self.metrics.render(version, count, &phases)
    }

    /// A page of the audit log (newest first) and the chain's status,
    /// verified incrementally ([`crate::audit_page`]). SQLite: call it off
    /// the async workers.
    pub fn audit_view(&self, q: crate::audit_page::PageQuery) -> Result<Value, String> {
        let store = lock(&self.store);
        crate::audit_page::page(&store, &self.audit_verified, q).map_err(|e| e.to_string())
    }

    /// Count a refusal made by the HTTP layer.
    pub fn rejected(&self, why: Reject) {
        self.metrics.reject(why);
    }
}

/// A spec as the API shows it: webhook URLs without their (secret) paths.
fn redacted_spec(spec: &CanarySpec) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Some(hooks) = v.get_mut("webhooks").and_then(Value::as_array_mut) {
        for h in hooks.iter_mut() {
            if let Some(url) = h.as_str() {
                *h = Value::from(crate::egress::redact(url));
            }
        }
    }
    v
}

/// Render every stored canary of `data` into `out` (the offline `render`
/// command). Returns the canaries rendered.
pub fn render_all(data: &std::path::Path, out: &std::path::Path) -> Result<Vec<String>, String> {
    let store = Store::open_existing(data).map_err(|e| e.to_string())?;
    let version = store.routing_version().map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for rec in store.load_canaries().map_err(|e| e.to_string())? {
        crate::verify::record(&rec)?;
        if rec.spec.mode == Mode::Observe {
            continue;
        }
        let files = render::render(&rec.spec, &rec.state, version);
        render::write(out, &rec.spec.name, &files)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        names.push(rec.spec.name);
    }
    Ok(names)
}
