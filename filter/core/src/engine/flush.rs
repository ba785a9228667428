//! Counters flushed to Envoy stats at the end of each tick: dropped series,
//! steered requests, protocol counters, and each slot's failure classes.

use super::Worker;
use crate::local::{Slot, CLASSES};
use crate::metrics::{
    failures_metric_name, global, series_metric_name, steered_metric_name, Kind, MetricCache,
    MetricSink, SeriesMetric,
};
use crate::outcome::Outcome;
use crate::registry::split_name;
use crate::verdicts::signal_name;

impl Worker {
    pub(super) fn flush_counters<M: MetricSink + ?Sized>(&mut self, sink: &mut M) {
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
pub(super) fn flush_classes<M: MetricSink + ?Sized>(
    slot: &mut Slot,
    metrics: &mut MetricCache,
    sink: &mut M,
) {
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
