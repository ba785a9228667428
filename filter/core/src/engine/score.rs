//! The lease holder's scoring pass: observe every series' delta, judge it,
//! pair canaries with their stable peers and run the canary test and the
//! steering hysteresis, publish the verdict table, set the gauges and queue
//! the control-service calls.

use super::tick::empty_delta;
use super::{Level, Pair, PairIds, Worker, CHECKPOINT_EVERY_TICKS, CHECKPOINT_MAX_BYTES};
use crate::checkpoints::{self, GroupWriter};
use crate::codec::Extras;
use crate::config::Mode;
use crate::lifecycle::Seen;
use crate::metrics::{global, series_metric_name, GaugeSlot, Kind, MetricSink, SeriesMetric};
use crate::registry::split_name;
use crate::shared::SharedStore;
use crate::steering::{match_series, Side, SteerController, Transition};
use crate::verdicts::{PublishedVerdict, SteeredRoute, VerdictTable};
use hashbrown::HashMap;
use vigil_scorer::sequential::CanaryMonitor;
use vigil_scorer::series::SeriesState;
use vigil_scorer::ttft::TtftWindow;
use vigil_scorer::verdict::{State, Verdict};
use vigil_scorer::window::TickDelta;

impl Worker {
    pub(super) fn score<S, M>(
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
            // A new holder starts from the verdicts the previous one published.
            self.refresh_full_table(store);
        }
        scoring.generation += 1;
        self.stats.scoring_passes += 1;
        let model = self.cfg.model.clone();
        let empty = empty_delta();
        let n = self.registry.len();

        // Observe every series once this tick (empty delta when it had no traffic).
        let mut tick_deltas: Vec<(u32, TickDelta, Extras)> = Vec::new();
        let restored_before = self.stats.baselines_restored;
        let own = self.own_slots(n);
        // Only the series another worker announced (and a slice swept, and
        // all of them on a first pass) have a key worth reading.
        let announced = crate::dirty::take(store, &self.keys.dirty, self.cfg.cas_retries)
            .filter(|_| scoring.generation > 1)
            .map(|ids| {
                let mut want = vec![false; n];
                // Ids of series registered after this holder read the
                // registry: announced again, read next tick (not left to the
                // sweep, up to a sweep period later). The id space is the
                // overflow series + `max_series`: an id past it is dropped.
                let mut later = Vec::new();
                for id in ids {
                    match want.get_mut(id as usize) {
                        Some(w) => *w = true,
                        None if id as usize <= self.cfg.max_series => later.push(id),
                        None => {}
                    }
                }
                if !later.is_empty() {
                    crate::dirty::announce(store, &self.keys.dirty, &later, self.cfg.cas_retries);
                }
                want
            });
        let period = crate::dirty::sweep_period(n);
        let sweep = scoring.generation % period;
        // The checkpoint group being filled (when due) and the group record
        // last read for a resume.
        let mut writing: Option<GroupWriter> = None;
        let mut read_group: Option<(u32, Option<Vec<u8>>)> = None;
        for id in 0..n as u32 {
            let read = announced.as_ref().is_none_or(|want| {
                want.get(id as usize).copied().unwrap_or(true)
                    || (u64::from(id) + sweep) % period == 0
            });
            let (mut delta, mut extras) = if read {
                self.take_delta(store, id, &empty)
            } else {
                Default::default()
            };
            if let Some(&Some(slot)) = own.get(id as usize) {
                self.take_own_pending(slot, &mut delta, &mut extras);
            }
            // The registry entry now in this place, and its checkpoint group.
            let epoch = self.registry.epoch(id);
            let group = checkpoints::group_of(id);
            let seen = scoring.idle.observe(id, epoch, delta.counters.requests > 0);
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
                if read_group.as_ref().is_none_or(|(g, _)| *g != group) {
                    let record = store.get(&self.keys.checkpoints(group)).map(|(b, _)| b);
                    read_group = Some((group, record));
                }
                let record = read_group.as_ref().and_then(|(_, r)| r.as_deref());
                if let Some(bytes) =
                    epoch.and_then(|e| record.and_then(|r| checkpoints::find(r, id, e)))
                {
                    if state.restore(bytes) {
                        self.stats.baselines_restored += 1;
                        last = self.table.series.get(id as usize).map_or(last, |v| v.state);
                    }
                }
                scoring.series.push(state);
                scoring.last_state.push(last);
            }
            let tick_s = self.cfg.tick_ms as f64 / 1000.0;
            let unix_s = Some(now_ms as f64 / 1000.0);
            if writing.as_ref().is_some_and(|w| w.group() != group) {
                self.write_checkpoints(writing.take(), store);
            }
            if writing.is_none()
                && (scoring.generation + u64::from(group)) % CHECKPOINT_EVERY_TICKS == 0
            {
                writing = Some(GroupWriter::new(group));
            }
            if let Some(state) = scoring.series.get_mut(id as usize) {
                if scoring.steering_moved.iter().any(|ids| ids.contains(&id)) {
                    state.mark_traffic_moved();
                }
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
                if let (Some(epoch), Some(w)) = (epoch, writing.as_mut()) {
                    let bytes = state.checkpoint();
                    if bytes.len() <= CHECKPOINT_MAX_BYTES {
                        w.push(id, epoch, &bytes);
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
        self.write_checkpoints(writing, store);
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
        let mut moved_now = Vec::new();
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
                moved_now.extend([pair.canary_id, pair.stable_id]);
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

        // The steered share is not the stable's own volume (nor the missing
        // share the canary's): tell their self paths for the next two passes.
        scoring.steering_moved.rotate_left(1);
        if let Some(last) = scoring.steering_moved.last_mut() {
            *last = moved_now;
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
        self.publish(table, store);

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
                Some(ids) => ids,
                None => {
                    let Some(name) = self.registry.name(id as u32) else {
                        continue;
                    };
                    let (route, cluster) = split_name(name);
                    let defined = GAUGES.map(|m| {
                        GaugeSlot::new(self.metrics.define(
                            sink,
                            Kind::Gauge,
                            &series_metric_name(route, cluster, m),
                        ))
                    });
                    ids.insert(defined)
                }
            };
            let [p50, p95, p99] = state.window_latency().quantiles_us([0.5, 0.95, 0.99]);
            let values = [
                u64::from(v.score),
                u64::from(v.state.code()),
                ms(p50),
                ms(p95),
                ms(p99),
            ];
            for (gauge, value) in ids.iter_mut().zip(values) {
                gauge.set(sink, value);
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
                Some(ids) => ids,
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
                        GaugeSlot::new(self.metrics.define(
                            sink,
                            Kind::Gauge,
                            &series_metric_name(route, cluster, m),
                        ))
                    });
                    ids.insert(defined)
                }
            };
            for (gauge, value) in ids.iter_mut().zip(window.quantiles_us([0.5, 0.95, 0.99])) {
                gauge.set(sink, ms(value));
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
                crate::edges::take_shared(store, &self.keys.edges, self.cfg.cas_retries).map(
                    |batch| {
                        if self.cfg.control.is_some() {
                            batch.into_report_edges()
                        } else {
                            (Vec::new(), batch.overflow)
                        }
                    },
                );
            // Counted once, by the holder, as the requests leave for the
            // report: what the control service receives as unattributed.
            let unattributed = self.report_edges.as_ref().map_or(0, |(_, o)| *o);
            self.metrics
                .add(sink, crate::edges::UNATTRIBUTED_METRIC, unattributed);
        }
        self.queue_control_calls(now_ms, &tick_deltas, &verdicts, &canary_verdicts);
        self.scoring = Some(scoring);
    }

    /// Write a due checkpoint group (one shared-data write for all its
    /// series; [`crate::checkpoints`]).
    fn write_checkpoints<S: SharedStore + ?Sized>(
        &mut self,
        group: Option<GroupWriter>,
        store: &S,
    ) {
        let Some(w) = group else { return };
        let entries = w.len() as u64;
        let (group, record) = w.finish();
        if store
            .set(&self.keys.checkpoints(group), &record, None)
            .is_ok()
        {
            self.stats.checkpoints_written += entries;
        }
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
}

fn ms(us: Option<f64>) -> u64 {
    us.map(|u| (u / 1000.0).round() as u64).unwrap_or(0)
}
