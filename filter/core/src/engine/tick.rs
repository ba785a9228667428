//! The tick protocol run by every worker: re-read the registry and register
//! new local series, merge pending observations into shared data, take or
//! renew the scorer lease (and the `lease_release_after_s` test hook), watch
//! for canaries that match no cluster; and the lease holder's take of a
//! series' merged delta.

use super::flush::flush_classes;
use super::{is_managed, Level, Scoring, Worker};
use crate::codec::{decode_pending, encode_delta, encode_pending, Extras};
use crate::lease;
use crate::local::{Placement, Slot};
use crate::metrics::{
    canary_unmatched_metric_name, series_metric_name, Kind, MetricSink, SeriesMetric,
};
use crate::registry::{split_name, tag, untag, Registration, OVERFLOW_ID};
use crate::shared::{update, SetError, SharedStore, Update};
use crate::steering::match_series;
use vigil_scorer::window::TickDelta;

impl Worker {
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
        // The lease is settled before merging: the holder keeps its own
        // pending observations local and adds them straight into this
        // tick's scoring (no encode into shared data and decode back).
        let ttl = self.cfg.tick_ms.saturating_mul(self.cfg.lease_ttl_ticks);
        let holder = !self.gives_lease_up(now_ms, store, log)
            && lease::acquire(store, &self.keys.lease, self.me, now_ms, ttl);
        self.merge_pending(store, sink, holder);
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

        if holder {
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
        self.merge_pending(store, sink, false);
        self.flush_counters(sink);
        if self.scoring.take().is_some() {
            lease::release(store, &self.keys.lease, self.me);
        }
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
        if !retry && self.revalidated_at == Some(changes) {
            return;
        }
        self.revalidated_at = Some(changes);
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
        let changes = self.registry.changes();
        let rescan = self.unmatched.scanned_at != Some(changes);
        self.unmatched.scanned_at = Some(changes);
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
            let matched = rescan
                && self.registry.iter().any(|(_, name)| {
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

    /// Flush each slot's counters to Envoy stats and merge its pending
    /// observations into shared data; `keep_local` (the lease holder) keeps
    /// them in the slot for [`Worker::take_own_pending`].
    fn merge_pending<S, M>(&mut self, store: &S, sink: &mut M, keep_local: bool)
    where
        S: SharedStore + ?Sized,
        M: MetricSink + ?Sized,
    {
        let attempts = self.cfg.cas_retries;
        let mut stats = self.stats;
        let metrics = &mut self.metrics;
        let keys = &self.keys;
        let mut merged_ids = std::mem::take(&mut self.unannounced);
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
            if keep_local || !slot.has_pending() {
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
                    merged_ids.push(id);
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
        // Tell the lease holder which keys now hold data (one update for all).
        if !merged_ids.is_empty() {
            match crate::dirty::announce(store, &self.keys.dirty, &merged_ids, attempts) {
                Update::Written { retries } => stats.cas_retries += u64::from(retries),
                Update::Exhausted | Update::Failed => {
                    stats.cas_exhausted += 1;
                    merged_ids.sort_unstable();
                    merged_ids.dedup();
                    self.unannounced = merged_ids;
                }
            }
        }
        self.stats = stats;
    }

    /// Where each series id's local slot is, for the lease holder: `own[id]`
    /// is the slot index (`usize::MAX` for the overflow slot).
    pub(super) fn own_slots(&self, n: usize) -> Vec<Option<usize>> {
        let mut own = vec![None; n];
        for (i, slot) in self.local.slots().iter().enumerate() {
            if let Placement::Registered(id) = slot.placement {
                // Only a slot of the series registered there now (epoch).
                if self.registry.epoch(id) != Some(slot.epoch) {
                    continue;
                }
                if let Some(o) = own.get_mut(id as usize) {
                    *o = Some(i);
                }
            }
        }
        if let Some(o) = own.get_mut(OVERFLOW_ID as usize) {
            *o = Some(usize::MAX);
        }
        own
    }

    /// The lease holder adds its own pending observations of a series
    /// (slot `slot` from [`Worker::own_slots`]) to the delta it took.
    pub(super) fn take_own_pending(
        &mut self,
        slot: usize,
        delta: &mut TickDelta,
        extras: &mut Extras,
    ) {
        let slot = if slot == usize::MAX {
            Some(self.local.overflow_mut())
        } else {
            self.local.slots_mut().get_mut(slot)
        };
        if let Some(slot) = slot.filter(|s| s.has_pending()) {
            delta.add(&slot.pending());
            extras.add(&slot.pending_extras());
            slot.clear_pending();
        }
    }

    /// Take series `id`'s merged delta out of shared data, leaving it empty.
    /// Records of another epoch are not this series': an older one (an
    /// evicted series' leftover) is dropped and counted, a newer one (a
    /// series registered after this tick's registry read) waits for the
    /// next tick.
    pub(super) fn take_delta<S: SharedStore + ?Sized>(
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
    pub(super) fn evict_idle<S, M>(
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
            // Its checkpoint needs no clearing: a series given this id
            // later has another epoch and never resumes it.
            scoring.idle.forget(id);
            let i = id as usize;
            let gauges = scoring.gauge_ids.get_mut(i).and_then(Option::take);
            let ttft = scoring.ttft_gauge_ids.get_mut(i).and_then(Option::take);
            for mut g in gauges
                .into_iter()
                .flatten()
                .chain(ttft.into_iter().flatten())
            {
                g.set(sink, 0);
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
}

/// Encoded empty delta, written by the lease holder when it takes a series' data.
pub(super) fn empty_delta() -> Vec<u8> {
    encode_delta(&TickDelta::default())
}
