//! Control-service calls: the report and routing fetch the lease holder
//! queues each tick, their responses, and the routes split by the fetched
//! weights (republished to every worker at once).

use super::{is_managed, ControlCall, ControlKind, Level, Worker};
use crate::codec::Extras;
use crate::control::parse_routing;
use crate::registry::split_name;
use crate::shared::SharedStore;
use crate::steering::match_series;
use crate::verdicts::WeightedRoute;
use vigil_scorer::verdict::Verdict;
use vigil_scorer::window::TickDelta;
use vigil_wire::report::{
    Canary as WireCanary, Report, Series as WireSeries, Stream as WireStream, Totals,
};

impl Worker {
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
    pub(super) fn weighted_routes(&self, now_ms: u64) -> Vec<WeightedRoute> {
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
        if self.publish(table, store) {
            self.refresh_verdicts(store);
        }
    }

    /// Queue this tick's report (the managed canaries' series, canary
    /// verdicts and bounded totals; chunked when large) and routing fetch
    /// for the glue to dispatch.
    pub(super) fn queue_control_calls(
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
        if let Some(edges) = self.report_edges.take() {
            (report.edges, report.edges_overflow) = edges;
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
}
