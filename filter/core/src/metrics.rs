//! Enriched metrics: their names, and a cache of the host's metric ids.
//!
//! Envoy custom metrics have no labels of their own; labels come from the
//! bootstrap's tag-extraction regexes. Vigil uses Istio's in-name convention,
//! `route=.=checkout;.;cluster=.=v2;.;vigil_anomaly_score`, which the
//! `stats_tags` in `envoy-config/` (and Istio's `extraStatTags`) turn into
//! `vigil_anomaly_score{route="checkout",cluster="v2"}`. Tag values are
//! sanitised so no route or cluster name can break the convention.
//!
//! Every distinct name is a permanent Envoy stat; the series bound
//! (`max_series`) is what keeps them bounded.

use hashbrown::HashMap;

/// Kind of a host metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Monotonic counter (summed across workers by Envoy).
    Counter,
    /// Gauge (last writer wins).
    Gauge,
}

/// The host's metric API (implemented over proxy-wasm hostcalls in the
/// filter, in memory in tests).
pub trait MetricSink {
    /// Define (or look up) a metric; `None` when the host refuses.
    fn define(&mut self, kind: Kind, name: &str) -> Option<u32>;
    /// Add to a counter.
    fn increment(&mut self, id: u32, by: u64);
    /// Set a gauge.
    fn record(&mut self, id: u32, value: u64);
}

/// Per-series metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeriesMetric {
    /// `vigil_requests_total` (counter).
    Requests,
    /// `vigil_errors_total` (counter).
    Errors,
    /// `vigil_anomaly_score` (gauge, 0–1000).
    Score,
    /// `vigil_state` (gauge: 0 insufficient_data, 1 ok, 2 warn, 3 critical).
    State,
    /// `vigil_latency_p50_ms` (gauge).
    P50,
    /// `vigil_latency_p95_ms` (gauge).
    P95,
    /// `vigil_latency_p99_ms` (gauge).
    P99,
    /// `vigil_throttled_total` (counter): throttled requests.
    Throttled,
    /// `vigil_stream_chunks_total` (counter): response body chunks seen.
    StreamChunks,
    /// `vigil_ttft_p50_ms` (gauge): time to first response byte, p50.
    TtftP50,
    /// `vigil_ttft_p95_ms` (gauge).
    TtftP95,
    /// `vigil_ttft_p99_ms` (gauge).
    TtftP99,
}

impl SeriesMetric {
    /// Metric name after tag extraction.
    pub fn name(self) -> &'static str {
        match self {
            SeriesMetric::Requests => "vigil_requests_total",
            SeriesMetric::Errors => "vigil_errors_total",
            SeriesMetric::Score => "vigil_anomaly_score",
            SeriesMetric::State => "vigil_state",
            SeriesMetric::P50 => "vigil_latency_p50_ms",
            SeriesMetric::P95 => "vigil_latency_p95_ms",
            SeriesMetric::P99 => "vigil_latency_p99_ms",
            SeriesMetric::Throttled => "vigil_throttled_total",
            SeriesMetric::StreamChunks => "vigil_stream_chunks_total",
            SeriesMetric::TtftP50 => "vigil_ttft_p50_ms",
            SeriesMetric::TtftP95 => "vigil_ttft_p95_ms",
            SeriesMetric::TtftP99 => "vigil_ttft_p99_ms",
        }
    }

    /// Counter or gauge.
    pub fn kind(self) -> Kind {
        match self {
            SeriesMetric::Requests
            | SeriesMetric::Errors
            | SeriesMetric::Throttled
            | SeriesMetric::StreamChunks => Kind::Counter,
            _ => Kind::Gauge,
        }
    }
}

/// Process-level metrics.
pub mod global {
    /// Requests recorded into the overflow series because the series table was full.
    pub const SERIES_DROPPED: &str = "vigil_series_dropped_total";
    /// Series in the table (excluding overflow).
    pub const SERIES: &str = "vigil_series";
    /// Shared-data CAS conflicts retried.
    pub const CAS_RETRIES: &str = "vigil_shared_cas_retries_total";
    /// Shared-data updates given up after the bounded retries (kept for the next tick).
    pub const CAS_EXHAUSTED: &str = "vigil_shared_cas_exhausted_total";
    /// Scoring passes run by the lease holder.
    pub const SCORING_PASSES: &str = "vigil_scoring_passes_total";
}

/// Make a route or cluster name safe as an in-name tag value: the separators
/// of the convention (`;`, `=`), whitespace, control and non-ASCII bytes
/// become `_`. Empty becomes `unknown`.
pub fn sanitize(raw: &[u8]) -> String {
    if raw.is_empty() {
        return "unknown".to_string();
    }
    raw.iter()
        .map(|&b| {
            if b.is_ascii_graphic() && b != b';' && b != b'=' {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

/// Full stat name of a per-series metric.
pub fn series_metric_name(route: &[u8], cluster: &[u8], metric: SeriesMetric) -> String {
    format!(
        "route=.={};.;cluster=.={};.;{}",
        sanitize(route),
        sanitize(cluster),
        metric.name()
    )
}

/// Full stat name of `vigil_failures_total{route,cluster,class}` (one
/// counter per outcome class that is not `ok`).
pub fn failures_metric_name(route: &[u8], cluster: &[u8], class: &str) -> String {
    format!(
        "route=.={};.;cluster=.={};.;class=.={};.;vigil_failures_total",
        sanitize(route),
        sanitize(cluster),
        class
    )
}

/// Full stat name of the steering counter.
pub fn steered_metric_name(route: &[u8], to: &str, reason: &str) -> String {
    format!(
        "route=.={};.;to=.={};.;reason=.={};.;vigil_steered_total",
        sanitize(route),
        to,
        reason
    )
}

/// Full stat name of the unmatched-canary gauge (`vigil_canary_unmatched{canary}`:
/// 1 while a canary's clusters have not been seen after `unmatched_after_s` of traffic).
pub fn canary_unmatched_metric_name(canary: &str) -> String {
    format!(
        "canary=.={};.;vigil_canary_unmatched",
        sanitize(canary.as_bytes())
    )
}

/// One gauge by host id with the value last recorded, kept beside what it
/// measures (the scorer keeps one array of them per series), so an
/// unchanged value costs neither a hostcall nor a map lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GaugeSlot {
    id: Option<u32>,
    last: Option<u64>,
}

impl GaugeSlot {
    /// The gauge with host id `id` (`None`: the host refused to define it),
    /// not recorded yet.
    pub fn new(id: Option<u32>) -> Self {
        GaugeSlot { id, last: None }
    }

    /// Record `value` unless it is the value last recorded.
    pub fn set<M: MetricSink + ?Sized>(&mut self, sink: &mut M, value: u64) {
        if let Some(id) = self.id {
            if self.last != Some(value) {
                sink.record(id, value);
                self.last = Some(value);
            }
        }
    }
}

/// Caches metric ids by name and remembers the last gauge values, so each
/// tick costs a hostcall only for what changed.
#[derive(Debug, Default)]
pub struct MetricCache {
    ids: HashMap<String, Option<u32>>,
    last_gauge: HashMap<u32, u64>,
}

impl MetricCache {
    /// The host id of metric `name`, defined on first use. Callers that touch
    /// the same metric every tick keep the id and use [`MetricCache::add_id`] /
    /// [`MetricCache::set_id`], so no name is formatted or hashed per tick.
    pub fn define<M: MetricSink + ?Sized>(
        &mut self,
        sink: &mut M,
        kind: Kind,
        name: &str,
    ) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = sink.define(kind, name);
        self.ids.insert(name.to_string(), id);
        id
    }

    /// Add `by` to the counter `name` (no hostcall when `by` is 0).
    pub fn add<M: MetricSink + ?Sized>(&mut self, sink: &mut M, name: &str, by: u64) {
        if by == 0 {
            return;
        }
        let id = self.define(sink, Kind::Counter, name);
        self.add_id(sink, id, by);
    }

    /// Add `by` to a counter by id (no hostcall when `by` is 0).
    pub fn add_id<M: MetricSink + ?Sized>(&mut self, sink: &mut M, id: Option<u32>, by: u64) {
        if let (Some(id), true) = (id, by > 0) {
            sink.increment(id, by);
        }
    }

    /// Set the gauge `name` (no hostcall when unchanged).
    pub fn set<M: MetricSink + ?Sized>(&mut self, sink: &mut M, name: &str, value: u64) {
        let id = self.define(sink, Kind::Gauge, name);
        self.set_id(sink, id, value);
    }

    /// Set a gauge by id (no hostcall when unchanged).
    pub fn set_id<M: MetricSink + ?Sized>(&mut self, sink: &mut M, id: Option<u32>, value: u64) {
        if let Some(id) = id {
            if self.last_gauge.get(&id) != Some(&value) {
                sink.record(id, value);
                self.last_gauge.insert(id, value);
            }
        }
    }

    /// Raise the gauge `name` to `value` if it is higher than this worker last set it.
    pub fn raise_gauge<M: MetricSink + ?Sized>(&mut self, sink: &mut M, name: &str, value: u64) {
        let id = self.define(sink, Kind::Gauge, name);
        if let Some(id) = id {
            if self.last_gauge.get(&id).is_none_or(|&v| value > v) {
                sink.record(id, value);
                self.last_gauge.insert(id, value);
            }
        }
    }

    /// Forget remembered gauge values (after losing the lease, another worker
    /// may have written them).
    pub fn forget_gauges(&mut self) {
        self.last_gauge.clear();
    }

    /// Number of metric names defined.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing is defined.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// In-memory [`MetricSink`] for tests: counters summed, gauges last value.
#[derive(Debug, Default)]
pub struct MemorySink {
    names: Vec<(Kind, String)>,
    values: Vec<u64>,
    /// Name → id, so defining is a hash lookup like Envoy's own (a linear
    /// scan made the host bench quadratic in the number of series).
    index: HashMap<String, u32>,
}

impl MemorySink {
    /// Value of a metric by full name.
    pub fn value(&self, name: &str) -> Option<u64> {
        let i = *self.index.get(name)?;
        self.values.get(i as usize).copied()
    }

    /// Sum of every metric whose name ends with `suffix` and contains `part`.
    pub fn sum(&self, part: &str, suffix: &str) -> u64 {
        self.names
            .iter()
            .zip(&self.values)
            .filter(|((_, n), _)| n.ends_with(suffix) && n.contains(part))
            .map(|(_, v)| *v)
            .sum()
    }

    /// Number of distinct metrics.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no metric was defined.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl MetricSink for MemorySink {
    fn define(&mut self, kind: Kind, name: &str) -> Option<u32> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        let id = u32::try_from(self.names.len()).ok()?;
        self.names.push((kind, name.to_string()));
        self.values.push(0);
        self.index.insert(name.to_string(), id);
        Some(id)
    }

    fn increment(&mut self, id: u32, by: u64) {
        if let Some(v) = self.values.get_mut(id as usize) {
            *v += by;
        }
    }

    fn record(&mut self, id: u32, value: u64) {
        if let Some(v) = self.values.get_mut(id as usize) {
            *v = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_istio_in_name_convention() {
        assert_eq!(
            series_metric_name(b"checkout", b"outbound|80|v2|svc.ns", SeriesMetric::Score),
            "route=.=checkout;.;cluster=.=outbound|80|v2|svc.ns;.;vigil_anomaly_score"
        );
        assert_eq!(
            series_metric_name(b"a;.;b=c d\xff", b"", SeriesMetric::Requests),
            "route=.=a_._b_c_d_;.;cluster=.=unknown;.;vigil_requests_total"
        );
        assert_eq!(
            steered_metric_name(b"checkout", "stable", "latency"),
            "route=.=checkout;.;to=.=stable;.;reason=.=latency;.;vigil_steered_total"
        );
    }

    #[test]
    fn cache_skips_unchanged_gauges() {
        struct Counting(MemorySink, usize);
        impl MetricSink for Counting {
            fn define(&mut self, kind: Kind, name: &str) -> Option<u32> {
                self.0.define(kind, name)
            }
            fn increment(&mut self, id: u32, by: u64) {
                self.1 += 1;
                self.0.increment(id, by)
            }
            fn record(&mut self, id: u32, value: u64) {
                self.1 += 1;
                self.0.record(id, value)
            }
        }
        let mut sink = Counting(MemorySink::default(), 0);
        let mut cache = MetricCache::default();
        cache.set(&mut sink, "g", 5);
        cache.set(&mut sink, "g", 5);
        cache.add(&mut sink, "c", 0);
        cache.add(&mut sink, "c", 2);
        assert_eq!(sink.1, 2);
        assert_eq!(sink.0.value("g"), Some(5));
        assert_eq!(sink.0.value("c"), Some(2));
    }
}
