//! The published verdicts and every worker's cached copy of them.
//!
//! The lease holder publishes two keys: the full table (`vigil.verdicts`:
//! every series' verdict, plus the steering entries) and the compact
//! steering table (`vigil.steering`: steered and weighted routes only,
//! rewritten only when it changes). Every worker re-reads and decodes only
//! the compact one each tick, into the steered and weighted routes and
//! canaries the request path answers from; the full table is read only by
//! a new lease holder (to keep the verdicts its predecessor published) and
//! by workers that set the score response header. The holder keeps the
//! table it wrote and never decodes it back.

use super::Worker;
use crate::registry::split_name;
use crate::shared::SharedStore;
use crate::steering::match_series;
use crate::verdicts::VerdictTable;

impl Worker {
    /// As the lease holder, publish `table` (the full table always, the
    /// steering view when it changed) and keep it as this worker's copy.
    /// False when the host refused the write.
    pub(super) fn publish<S: SharedStore + ?Sized>(
        &mut self,
        table: VerdictTable,
        store: &S,
    ) -> bool {
        // Only the lease holder writes these keys: unconditional writes.
        let mut ok = store
            .set(&self.keys.verdicts, &table.encode(), None)
            .is_ok();
        let steering = table.steering().encode();
        if self.published_steering.as_deref() != Some(steering.as_slice()) {
            if store.set(&self.keys.steering, &steering, None).is_ok() {
                self.published_steering = Some(steering);
            } else {
                ok = false;
            }
        }
        if !ok {
            self.stats.cas_exhausted += 1;
        }
        self.table = table;
        ok
    }

    /// Re-read the full verdict table if it changed.
    pub(super) fn refresh_full_table<S: SharedStore + ?Sized>(&mut self, store: &S) {
        let Some((bytes, cas)) = store.get(&self.keys.verdicts) else {
            return;
        };
        if Some(cas) == self.table_cas {
            return;
        }
        self.table_cas = Some(cas);
        self.table = VerdictTable::decode(&bytes).unwrap_or_default();
    }

    /// Re-read the compact steering table (and, for the score header, the
    /// full table) if it changed.
    pub(super) fn refresh_verdicts<S: SharedStore + ?Sized>(&mut self, store: &S) {
        if self.scoring.is_none() {
            self.published_steering = None;
            if self.cfg.score_header {
                self.refresh_full_table(store);
            }
        }
        let Some((bytes, cas)) = store.get(&self.keys.steering) else {
            return;
        };
        if Some(cas) == self.steering_cas {
            return;
        }
        self.steering_cas = Some(cas);
        let steering = VerdictTable::decode(&bytes).unwrap_or_default();
        self.steered_routes = steering
            .steered
            .iter()
            .map(|s| (s.route.clone(), s.reason))
            .collect();
        let previous = std::mem::take(&mut self.weighted_routes);
        for w in &steering.weighted {
            // Keep the split's position so proportions stay exact across ticks.
            let split = previous.get(&w.route).map(|(_, s)| *s).unwrap_or_default();
            self.weighted_routes
                .insert(w.route.clone(), (w.canary_percent, split));
        }
        let n = self.cfg.canaries.len();
        let mut steered_canaries = vec![None; n];
        for s in &steering.steered {
            for ci in self.canaries_on_route(&s.route) {
                if let Some(slot) = steered_canaries.get_mut(ci) {
                    *slot = Some(s.reason);
                }
            }
        }
        self.steered_canaries = steered_canaries;
        let mut previous = std::mem::take(&mut self.weighted_canaries);
        let mut weighted_canaries = vec![None; n];
        for w in &steering.weighted {
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
}
