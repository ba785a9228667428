//! The PII guard's per-route counters and audit summary, kept by the glue for
//! the worker's lifetime.
//!
//! Per request the guard adds a few counters. Their host ids are looked up
//! once per route (and per type × action), so a request formats no metric
//! name and hashes no string beyond the route. The increments are summed
//! here and sent to the host at most once per [`FLUSH_MS`] (at the first
//! request after that long, and at every tick via [`PiiMetrics::flush`]), one
//! hostcall per counter that changed, rather than ~5 hostcalls per request; a
//! blocked request flushes at once (an enforcement event is visible
//! immediately). Counters therefore lag by at most a tick. The audit log is a summary per
//! route and window ([`WINDOW_MS`]): types and counts, never values. A
//! blocked request is also logged on its own by the glue (it is an
//! enforcement event); detected and redacted requests are only summarised, so
//! a busy route writes one line a second rather than one per request.

use crate::metrics::{sanitize, Kind as MetricKind, MetricCache, MetricSink};
use crate::pii_config::PiiAction;
use hashbrown::HashMap;
use vigil_pii::Kind;

/// Length of an audit-summary window, milliseconds.
pub const WINDOW_MS: u64 = 1000;

/// Longest time counter increments wait here before they reach the host
/// (when no tick comes first), milliseconds.
pub const FLUSH_MS: u64 = 1000;

/// One inspected request, as counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Body bytes inspected.
    pub inspected: u64,
    /// Only a prefix was inspected.
    pub partial: bool,
    /// Refused with a 400.
    pub blocked: bool,
    /// Body rewritten.
    pub redacted: bool,
    /// Findings per kind (indexed like [`Kind::ALL`]) and the action applied.
    pub findings: [(u64, PiiAction); 10],
    /// Body bytes held (redact/block routes only).
    pub held: Option<u64>,
}

/// Host ids: `None` until defined, then the host's answer.
type Id = Option<Option<u32>>;

#[derive(Debug, Default)]
struct Tally {
    start_ms: u64,
    requests: u64,
    blocked: u64,
    redacted: u64,
    partial: u64,
    inspected: u64,
    findings: [u64; 10],
}

#[derive(Debug)]
struct Route {
    /// Sanitised route name (the metric tag).
    tag: String,
    /// requests, inspected bytes, partial, blocked, redacted, held gauge.
    ids: [Id; 6],
    /// Per kind × action (detect, redact, block).
    findings: [[Id; 3]; 10],
    held_max: Option<u64>,
    tally: Tally,
}

const NAMES: [&str; 6] = [
    crate::pii_guard::REQUESTS,
    crate::pii_guard::INSPECTED_BYTES,
    crate::pii_guard::PARTIAL,
    crate::pii_guard::BLOCKED,
    crate::pii_guard::REDACTED,
    crate::pii_guard::HELD_MAX,
];

fn action_index(a: PiiAction) -> usize {
    match a {
        PiiAction::Detect => 0,
        PiiAction::Redact => 1,
        PiiAction::Block => 2,
    }
}

/// Counters and summaries of every inspected route on this worker.
#[derive(Debug, Default)]
pub struct PiiMetrics {
    cache: MetricCache,
    routes: HashMap<String, Route>,
    /// Counter increments not yet sent to the host, per host id.
    pending: Vec<(u32, u64)>,
    /// When they were last sent (`None`: never).
    flushed_ms: Option<u64>,
}

/// Add `by` to the pending increment of counter `id`.
fn pend(pending: &mut Vec<(u32, u64)>, id: Option<u32>, by: u64) {
    let Some(id) = id.filter(|_| by > 0) else {
        return;
    };
    match pending.iter_mut().find(|p| p.0 == id) {
        Some(p) => p.1 += by,
        None => pending.push((id, by)),
    }
}

fn id<M: MetricSink + ?Sized>(
    slot: &mut Id,
    cache: &mut MetricCache,
    sink: &mut M,
    kind: MetricKind,
    name: impl FnOnce() -> String,
) -> Option<u32> {
    *slot.get_or_insert_with(|| cache.define(sink, kind, &name()))
}

impl PiiMetrics {
    /// Count one request on `route` at `now_ms`.
    pub fn record<M: MetricSink + ?Sized>(
        &mut self,
        sink: &mut M,
        route: &str,
        c: &RequestCounts,
        now_ms: u64,
    ) {
        if !self.routes.contains_key(route) {
            self.routes.insert(
                route.to_string(),
                Route {
                    tag: sanitize(route.as_bytes()),
                    ids: [None; 6],
                    findings: [[None; 3]; 10],
                    held_max: None,
                    tally: Tally::default(),
                },
            );
        }
        let Some(r) = self.routes.get_mut(route) else {
            return;
        };
        let cache = &mut self.cache;
        let counters = [
            1,
            c.inspected,
            u64::from(c.partial),
            u64::from(c.blocked),
            u64::from(c.redacted),
        ];
        for ((slot, name), by) in r.ids.iter_mut().zip(NAMES).zip(counters) {
            if by > 0 {
                let tag = &r.tag;
                let i = id(slot, cache, sink, MetricKind::Counter, || {
                    format!("route=.={tag};.;{name}")
                });
                pend(&mut self.pending, i, by);
            }
        }
        for ((k, &(n, action)), slots) in Kind::ALL.iter().zip(&c.findings).zip(&mut r.findings) {
            if n == 0 {
                continue;
            }
            let Some(slot) = slots.get_mut(action_index(action)) else {
                continue;
            };
            let tag = &r.tag;
            let i = id(slot, cache, sink, MetricKind::Counter, || {
                format!(
                    "route=.={tag};.;type=.={};.;action=.={};.;{}",
                    k.name(),
                    action.name(),
                    crate::pii_guard::FINDINGS
                )
            });
            pend(&mut self.pending, i, n);
        }
        if let Some(held) = c.held {
            if r.held_max.is_none_or(|m| held > m) {
                r.held_max = Some(held);
                if let Some(slot) = r.ids.get_mut(5) {
                    let tag = &r.tag;
                    let i = id(slot, cache, sink, MetricKind::Gauge, || {
                        format!("route=.={tag};.;{}", crate::pii_guard::HELD_MAX)
                    });
                    if let Some(i) = i {
                        sink.record(i, held);
                    }
                }
            }
        }
        let t = &mut r.tally;
        if t.requests == 0 {
            t.start_ms = now_ms;
        }
        t.requests += 1;
        t.blocked += u64::from(c.blocked);
        t.redacted += u64::from(c.redacted);
        t.partial += u64::from(c.partial);
        t.inspected += c.inspected;
        for (a, (n, _)) in t.findings.iter_mut().zip(&c.findings) {
            *a += n;
        }
        if c.blocked
            || self
                .flushed_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= FLUSH_MS)
        {
            self.flush(sink, now_ms);
        }
    }

    /// Send the pending counter increments to the host (one hostcall per
    /// counter that changed; none when nothing did). Called at every tick.
    pub fn flush<M: MetricSink + ?Sized>(&mut self, sink: &mut M, now_ms: u64) {
        self.flushed_ms = Some(now_ms);
        for (id, by) in self.pending.drain(..) {
            self.cache.add_id(sink, Some(id), by);
        }
    }

    /// Audit lines of the windows that are over at `now_ms` (all of them when
    /// `all`): one per route with findings or partial inspections in it.
    pub fn due_summaries(&mut self, now_ms: u64, all: bool) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.routes.values_mut() {
            let t = &r.tally;
            if t.requests == 0 || !(all || now_ms.saturating_sub(t.start_ms) >= WINDOW_MS) {
                continue;
            }
            let t = std::mem::take(&mut r.tally);
            if t.findings.iter().all(|&n| n == 0) && t.partial == 0 {
                continue;
            }
            let parts: Vec<String> = Kind::ALL
                .iter()
                .zip(&t.findings)
                .filter(|(_, &n)| n > 0)
                .map(|(k, n)| format!("{}={n}", k.name()))
                .collect();
            out.push(format!(
                "vigil: pii route={} summary {}ms requests={} passed={} redacted={} blocked={} findings[{}] inspected={}B partial={}",
                r.tag,
                now_ms.saturating_sub(t.start_ms),
                t.requests,
                t.requests - t.blocked - t.redacted,
                t.redacted,
                t.blocked,
                parts.join(","),
                t.inspected,
                t.partial
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MemorySink;

    fn counts(card: u64, action: PiiAction) -> RequestCounts {
        let mut c = RequestCounts {
            inspected: 100,
            ..RequestCounts::default()
        };
        if let Some(f) = c.findings.get_mut(0) {
            *f = (card, action);
        }
        c
    }

    #[test]
    fn counters_add_up_and_names_are_defined_once() {
        let mut m = PiiMetrics::default();
        let mut sink = MemorySink::default();
        for i in 0..5 {
            m.record(&mut sink, "chat", &counts(i % 2, PiiAction::Detect), 10 + i);
        }
        // The first request is sent at once, the next four wait for a flush.
        assert_eq!(
            sink.value("route=.=chat;.;vigil_pii_requests_total"),
            Some(1)
        );
        m.flush(&mut sink, 20);
        assert_eq!(
            sink.value("route=.=chat;.;vigil_pii_requests_total"),
            Some(5)
        );
        assert_eq!(
            sink.value("route=.=chat;.;vigil_pii_inspected_bytes_total"),
            Some(500)
        );
        assert_eq!(
            sink.value("route=.=chat;.;type=.=card;.;action=.=detect;.;vigil_pii_findings_total"),
            Some(2)
        );
        assert_eq!(sink.value("route=.=chat;.;vigil_pii_partial_total"), None);
        let defined = sink.len();
        m.record(&mut sink, "chat", &counts(1, PiiAction::Detect), 20);
        assert_eq!(
            sink.len(),
            defined,
            "no new names for the same route and types"
        );
        // A request FLUSH_MS after the last flush sends everything pending.
        m.record(
            &mut sink,
            "chat",
            &counts(0, PiiAction::Detect),
            20 + FLUSH_MS,
        );
        assert_eq!(
            sink.value("route=.=chat;.;vigil_pii_requests_total"),
            Some(7)
        );
        assert_eq!(
            sink.value("route=.=chat;.;type=.=card;.;action=.=detect;.;vigil_pii_findings_total"),
            Some(3)
        );
        // A blocked request is sent at once.
        let blocked = RequestCounts {
            blocked: true,
            ..counts(1, PiiAction::Block)
        };
        m.record(&mut sink, "chat", &blocked, 21 + FLUSH_MS);
        assert_eq!(
            sink.value("route=.=chat;.;vigil_pii_blocked_total"),
            Some(1)
        );
        assert_eq!(
            sink.value("route=.=chat;.;vigil_pii_requests_total"),
            Some(8)
        );
    }

    #[test]
    fn one_summary_per_window_with_counts_never_values() {
        let mut m = PiiMetrics::default();
        let mut sink = MemorySink::default();
        m.record(&mut sink, "chat", &counts(2, PiiAction::Redact), 1000);
        m.record(&mut sink, "chat", &counts(1, PiiAction::Redact), 1500);
        assert!(m.due_summaries(1999, false).is_empty());
        let lines = m.due_summaries(2000, false);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let l = lines.first().map(String::as_str).unwrap_or("");
        assert!(
            l.contains("route=chat") && l.contains("requests=2") && l.contains("card=3"),
            "{l}"
        );
        assert!(
            m.due_summaries(5000, true).is_empty(),
            "the window was reset"
        );
        m.record(&mut sink, "quiet", &counts(0, PiiAction::Detect), 6000);
        assert!(
            m.due_summaries(9000, true).is_empty(),
            "nothing found: no line"
        );
    }
}
