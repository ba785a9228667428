//! The worker-local window: what this worker VM saw since its last tick.
//!
//! This is the only state the request path touches (no hostcall, no shared
//! data): a bounded table from series name to counters plus a latency
//! histogram. At each tick the engine moves the pending observations into
//! shared data and the counts into Envoy counters. A series that does not fit
//! (the table holds at most `max_series` entries, or the shared registry is
//! full) is recorded in the overflow slot and counted as dropped. A slot that
//! saw no request for `series_idle_s` (and has nothing left to merge) leaves
//! the table ([`LocalTable::end_tick`]), so the bound is on *live* series.

use crate::codec::Extras;
use crate::outcome::Outcome;
use crate::registry::Capacity;
use crate::request::RequestRecord;
use hashbrown::HashMap;
use vigil_scorer::histogram::LatencyHistogram;
use vigil_scorer::window::{Counters, TickDelta};

/// Where a slot's data goes in shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Not yet registered.
    Unregistered,
    /// Registered under this series id.
    Registered(u32),
    /// The registry was full: this series' data goes to the overflow series.
    Overflow,
}

/// One series' pending observations on this worker.
#[derive(Debug)]
pub struct Slot {
    /// Series name (`route NUL cluster`).
    pub name: Vec<u8>,
    /// Where its data goes.
    pub placement: Placement,
    /// Epoch of its registry entry (meaningful while registered): its pending
    /// records are tagged with it.
    pub epoch: u64,
    /// A request was recorded since the last [`LocalTable::end_tick`].
    pub active: bool,
    /// Consecutive ticks without a request.
    pub idle_ticks: u32,
    /// Counters not yet merged into shared data.
    pub counters: Counters,
    /// Latencies not yet merged into shared data.
    pub latency: LatencyHistogram,
    /// Times to first byte not yet merged into shared data.
    pub ttft: LatencyHistogram,
    /// Stream shape not yet merged (`ttft` is kept in [`Slot::ttft`]).
    pub shape: Extras,
    /// Body chunks not yet added to `vigil_stream_chunks_total`.
    pub unflushed_chunks: u64,
    /// Requests not yet added to the Envoy counter.
    pub unflushed_requests: u64,
    /// Errors not yet added to the Envoy counter.
    pub unflushed_errors: u64,
    /// Host ids of this series' request and error counters, once defined.
    pub counter_ids: Option<[Option<u32>; 2]>,
    /// Requests per outcome class ([`Outcome::ALL`] order) not yet added to
    /// `vigil_failures_total`.
    pub unflushed_classes: [u64; CLASSES],
    /// Host ids of the class counters, then `vigil_throttled_total` and
    /// `vigil_stream_chunks_total`, each defined on its first use.
    pub class_ids: [Option<Option<u32>>; CLASSES + 2],
}

/// Outcome classes.
pub const CLASSES: usize = Outcome::ALL.len();

impl Slot {
    fn new(name: Vec<u8>, placement: Placement) -> Self {
        Slot {
            name,
            placement,
            epoch: 0,
            active: false,
            idle_ticks: 0,
            counters: Counters::default(),
            latency: LatencyHistogram::new(),
            ttft: LatencyHistogram::new(),
            shape: Extras::default(),
            unflushed_chunks: 0,
            unflushed_requests: 0,
            unflushed_errors: 0,
            counter_ids: None,
            unflushed_classes: [0; CLASSES],
            class_ids: [None; CLASSES + 2],
        }
    }

    fn record(&mut self, rec: &RequestRecord) {
        self.active = true;
        rec.count_into(&mut self.counters);
        if rec.counts_latency() {
            self.latency.record_us(rec.latency_us);
        }
        if let (true, Some(t)) = (rec.counts_ttft(), rec.ttft_us) {
            self.ttft.record_us(t);
        }
        if rec.chunks > 0 {
            self.shape.stream_chunks = self.shape.stream_chunks.saturating_add(rec.chunks);
            self.unflushed_chunks = self.unflushed_chunks.saturating_add(rec.chunks);
            if rec.chunks > 1 {
                self.shape.gap_sum_us = self.shape.gap_sum_us.saturating_add(rec.stream_span_us);
                self.shape.gaps = self.shape.gaps.saturating_add(rec.chunks - 1);
            }
        }
        self.unflushed_requests += 1;
        if rec.is_error() {
            self.unflushed_errors += 1;
        }
        if let Some(n) = self.unflushed_classes.get_mut(rec.outcome.index()) {
            *n += 1;
        }
    }

    /// True when there is something to merge into shared data.
    pub fn has_pending(&self) -> bool {
        self.counters.requests > 0 || self.counters.client_gone > 0
    }

    /// The pending observations as a delta.
    pub fn pending(&self) -> TickDelta {
        TickDelta::from_parts(self.counters, &self.latency)
    }

    /// The pending time-to-first-byte histogram and stream shape.
    pub fn pending_extras(&self) -> Extras {
        Extras {
            ttft: self.ttft.to_sparse(),
            ..self.shape.clone()
        }
    }

    /// Forget pending observations after a successful merge.
    pub fn clear_pending(&mut self) {
        self.counters = Counters::default();
        self.latency.clear();
        self.ttft.clear();
        self.shape = Extras::default();
    }
}

/// The bounded table.
#[derive(Debug)]
pub struct LocalTable {
    index: HashMap<Vec<u8>, usize>,
    slots: Vec<Slot>,
    overflow: Slot,
    capacity: Capacity,
    dropped: u64,
}

impl LocalTable {
    /// A table within `capacity`, plus the overflow slot named `overflow_name`.
    pub fn new(capacity: Capacity, overflow_name: Vec<u8>) -> Self {
        LocalTable {
            index: HashMap::new(),
            slots: Vec::new(),
            overflow: Slot::new(overflow_name, Placement::Registered(0)),
            capacity,
            dropped: 0,
        }
    }

    /// Record one request for `name`. Allocates only for a series seen for the
    /// first time on this worker; `is_managed` is asked only then.
    pub fn record(
        &mut self,
        name: &[u8],
        rec: &RequestRecord,
        is_managed: impl FnOnce(&[u8]) -> bool,
    ) {
        let slot_index = match self.index.get(name) {
            Some(&i) => Some(i),
            None if self.slots.len() < self.capacity.limit(is_managed(name)) => {
                self.slots
                    .push(Slot::new(name.to_vec(), Placement::Unregistered));
                let i = self.slots.len() - 1;
                self.index.insert(name.to_vec(), i);
                Some(i)
            }
            None => None,
        };
        match slot_index.and_then(|i| self.slots.get_mut(i)) {
            Some(slot) if slot.placement != Placement::Overflow => slot.record(rec),
            found => {
                if let Some(slot) = found {
                    // Still in use, though its data goes to overflow.
                    slot.active = true;
                }
                self.overflow.record(rec);
                self.dropped += 1;
            }
        }
    }

    /// Slots (not the overflow slot).
    pub fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.slots
    }

    /// Slots (not the overflow slot).
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The overflow slot.
    pub fn overflow_mut(&mut self) -> &mut Slot {
        &mut self.overflow
    }

    /// Take the count of dropped requests since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Move a slot's pending data into the overflow slot and mark it so its
    /// future requests go there directly.
    pub fn demote_to_overflow(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i) {
            slot.placement = Placement::Overflow;
            let delta = slot.pending();
            let extras = slot.pending_extras();
            let chunks = std::mem::take(&mut slot.unflushed_chunks);
            let (req, err) = (slot.unflushed_requests, slot.unflushed_errors);
            let classes = std::mem::take(&mut slot.unflushed_classes);
            slot.clear_pending();
            slot.unflushed_requests = 0;
            slot.unflushed_errors = 0;
            for (total, n) in self.overflow.unflushed_classes.iter_mut().zip(classes) {
                *total += n;
            }
            self.dropped += req;
            self.overflow.counters.add(&delta.counters);
            self.overflow.latency.merge_sparse(&delta.latency);
            self.overflow.ttft.merge_sparse(&extras.ttft);
            self.overflow.shape.add(&Extras {
                ttft: Vec::new(),
                ..extras
            });
            self.overflow.unflushed_chunks += chunks;
            self.overflow.unflushed_requests += req;
            self.overflow.unflushed_errors += err;
        }
    }

    /// After a registry refresh: a registered slot whose id no longer holds
    /// its series (`holds(name, id, epoch)` is false: evicted, or the place
    /// reused) registers again. With `retry_overflow`, slots sent to overflow
    /// because the registry was full try again too (the registry has room).
    pub fn revalidate(&mut self, holds: impl Fn(&[u8], u32, u64) -> bool, retry_overflow: bool) {
        for slot in &mut self.slots {
            match slot.placement {
                Placement::Registered(id) if !holds(&slot.name, id, slot.epoch) => {
                    slot.placement = Placement::Unregistered;
                }
                // Only one still in use: an idle one is about to leave.
                Placement::Overflow if retry_overflow && slot.active => {
                    slot.placement = Placement::Unregistered
                }
                _ => {}
            }
        }
    }

    /// End of a tick (after the merge): count idle ticks and drop slots idle
    /// for `limit_ticks` with nothing left to merge or flush. Returns how
    /// many left.
    pub fn end_tick(&mut self, limit_ticks: u32) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.slots.len() {
            let Some(slot) = self.slots.get_mut(i) else {
                break;
            };
            if std::mem::take(&mut slot.active) {
                slot.idle_ticks = 0;
            } else {
                slot.idle_ticks = slot.idle_ticks.saturating_add(1);
            }
            let done = !slot.has_pending()
                && slot.unflushed_requests == 0
                && slot.unflushed_errors == 0
                && slot.unflushed_chunks == 0
                && slot.unflushed_classes.iter().all(|n| *n == 0);
            if slot.idle_ticks >= limit_ticks && done {
                let gone = self.slots.swap_remove(i);
                self.index.remove(&gone.name);
                if let Some(moved) = self.slots.get(i) {
                    self.index.insert(moved.name.clone(), i);
                }
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Approximate heap bytes (benchmarks).
    pub fn heap_bytes(&self) -> usize {
        self.slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .map(|s| 2 * s.name.len() + s.latency.heap_bytes() + std::mem::size_of::<Slot>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(us: u64, status: u16) -> RequestRecord {
        RequestRecord::new(us, status, 0, 1)
    }

    #[test]
    fn bounded_with_overflow() {
        let mut t = LocalTable::new(Capacity::new(3, 1), b"overflow".to_vec());
        let managed = |n: &[u8]| n == b"m";
        t.record(b"a", &rec(1000, 200), managed);
        t.record(b"b", &rec(1000, 503), managed);
        t.record(b"c", &rec(1000, 200), managed);
        t.record(b"a", &rec(2000, 200), managed);
        assert_eq!(t.slots().len(), 2);
        assert_eq!(t.slots()[0].counters.requests, 2);
        assert_eq!(t.slots()[1].counters.errors, 1);
        assert_eq!(t.overflow_mut().counters.requests, 1);
        assert_eq!(t.take_dropped(), 1);
        t.record(b"m", &rec(1000, 200), managed);
        assert_eq!(
            t.slots().len(),
            3,
            "the reserved place takes the managed series"
        );
        t.demote_to_overflow(1);
        t.record(b"b", &rec(1000, 200), managed);
        assert_eq!(t.overflow_mut().counters.requests, 3);
        assert_eq!(t.overflow_mut().unflushed_errors, 1);
        assert_eq!(t.take_dropped(), 2);
    }

    #[test]
    fn idle_slots_leave_and_make_room() {
        let mut t = LocalTable::new(Capacity::new(2, 0), b"overflow".to_vec());
        let never = |_: &[u8]| false;
        t.record(b"a", &rec(1000, 200), never);
        t.record(b"b", &rec(1000, 200), never);
        t.record(b"c", &rec(1000, 200), never);
        assert_eq!(t.overflow_mut().counters.requests, 1, "full");
        for s in t.slots_mut() {
            s.clear_pending();
            s.unflushed_requests = 0;
            s.unflushed_classes = [0; CLASSES];
        }
        assert_eq!(t.end_tick(2), 0, "active this tick");
        t.record(b"b", &rec(1000, 200), never);
        assert_eq!(t.end_tick(2), 0, "one idle tick");
        // b has unflushed data: it stays even when idle long enough.
        assert_eq!(t.end_tick(2), 1, "a leaves");
        assert_eq!(t.slots().len(), 1);
        assert_eq!(t.slots()[0].name, b"b");
        t.record(b"c", &rec(1000, 200), never);
        assert_eq!(t.slots().len(), 2, "c takes the freed place");
        t.record(b"b", &rec(1000, 200), never);
        assert_eq!(
            t.slots()[0].counters.requests,
            2,
            "index still right after the move"
        );
    }

    #[test]
    fn stale_registrations_register_again() {
        let mut t = LocalTable::new(Capacity::new(4, 0), b"overflow".to_vec());
        t.record(b"a", &rec(1000, 200), |_| false);
        t.record(b"b", &rec(1000, 200), |_| false);
        t.slots_mut()[0].placement = Placement::Registered(1);
        t.slots_mut()[0].epoch = 7;
        t.slots_mut()[1].placement = Placement::Overflow;
        t.slots_mut()[1].active = true;
        t.revalidate(|_, id, epoch| id == 1 && epoch == 7, false);
        assert_eq!(t.slots()[0].placement, Placement::Registered(1));
        assert_eq!(t.slots()[1].placement, Placement::Overflow);
        t.revalidate(|_, _, epoch| epoch == 8, true);
        assert_eq!(t.slots()[0].placement, Placement::Unregistered);
        assert_eq!(t.slots()[1].placement, Placement::Unregistered);
    }
}
