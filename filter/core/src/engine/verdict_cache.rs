//! Every worker's cached copy of the published verdict table: the steered
//! and weighted routes and canaries the request path answers from.

use super::Worker;
use crate::registry::split_name;
use crate::shared::SharedStore;
use crate::steering::match_series;
use crate::verdicts::{VerdictTable, VERDICTS_KEY};

impl Worker {
    pub(super) fn refresh_verdicts<S: SharedStore + ?Sized>(&mut self, store: &S) {
        let Some((bytes, cas)) = store.get(VERDICTS_KEY) else {
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
