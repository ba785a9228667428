//! Request-body inspection for the PII guard, without the proxy.
//!
//! One [`BodyGuard`] per request on an inspected route. Two ways to drive it,
//! chosen by the route's policy:
//! - **detect only**: the body streams through untouched; each chunk is fed
//!   with [`BodyGuard::feed`] (JSON-aware, bounded carry-over) until
//!   `max_inspect_bytes` have been inspected; the rest is counted `partial`.
//! - **redact / block**: the glue holds the body while
//!   [`BodyGuard::should_hold`] says so (never past `max_inspect_bytes`), then
//!   calls [`BodyGuard::decide`] once with what it holds, which yields a
//!   [`Verdict`]: pass, a replacement prefix (masked in place, JSON kept
//!   valid), or a 400 JSON error naming the types found (never the values).
//!
//! Findings leave this module only as counts per type: the values are never
//! logged, exported, or reported to the control service.

use crate::metrics::{sanitize, MetricSink};
use crate::pii_config::{PiiAction, RoutePolicy};
use crate::pii_metrics::{PiiMetrics, RequestCounts};
use vigil_pii::json::JsonWalker;
use vigil_pii::{Finding, Kind, Redactor, Scanner, StreamScanner};

/// `vigil_pii_findings_total{route,type,action}`.
pub const FINDINGS: &str = "vigil_pii_findings_total";
/// `vigil_pii_inspected_bytes_total{route}`.
pub const INSPECTED_BYTES: &str = "vigil_pii_inspected_bytes_total";
/// `vigil_pii_requests_total{route}`: requests inspected.
pub const REQUESTS: &str = "vigil_pii_requests_total";
/// `vigil_pii_partial_total{route}`: bodies longer than `max_inspect_bytes` (prefix inspected).
pub const PARTIAL: &str = "vigil_pii_partial_total";
/// `vigil_pii_blocked_total{route}`: requests refused.
pub const BLOCKED: &str = "vigil_pii_blocked_total";
/// `vigil_pii_redacted_total{route}`: requests whose body was rewritten.
pub const REDACTED: &str = "vigil_pii_redacted_total";
/// `vigil_pii_held_bytes_max{route}` (gauge): most body bytes this worker asked
/// Envoy to hold (the body size at a paused body callback; never above
/// `max_inspect_bytes`). The callback that crosses the bound carries one more
/// socket read, which Envoy reads whether or not a filter is installed.
pub const HELD_MAX: &str = "vigil_pii_held_bytes_max";

/// What to do with the request once inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through unchanged.
    Pass,
    /// Replace the first `len` held bytes with `body`.
    Replace {
        /// Bytes of the held body replaced (all that was inspected).
        len: usize,
        /// The masked bytes.
        body: Vec<u8>,
    },
    /// Refuse with this status and JSON body.
    Block {
        /// HTTP status (400).
        status: u32,
        /// JSON error naming the types found.
        body: Vec<u8>,
    },
}

/// Inspection state of one request body.
#[derive(Debug)]
pub struct BodyGuard {
    policy: RoutePolicy,
    json: bool,
    walker: JsonWalker,
    stream: StreamScanner,
    findings: Vec<Finding>,
    inspected: usize,
    partial: bool,
    finished: bool,
}

/// Whether a `content-type` value is JSON.
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.starts_with(b"application/json")
            || (ct.starts_with(b"application/") && ct.windows(5).any(|w| w == b"+json"))
    })
}

impl BodyGuard {
    /// A guard for a request on a route with `policy`.
    pub fn new(policy: &RoutePolicy, content_type: Option<&[u8]>) -> Self {
        let scanner = Scanner::new(policy.kinds, policy.min_confidence);
        BodyGuard {
            policy: policy.clone(),
            json: is_json(content_type),
            walker: JsonWalker::default(),
            stream: StreamScanner::new(scanner),
            findings: Vec::new(),
            inspected: 0,
            partial: false,
            finished: false,
        }
    }

    /// The route's policy.
    pub fn policy(&self) -> &RoutePolicy {
        &self.policy
    }

    /// Whether the body is held (redact or block) rather than streamed (detect).
    pub fn holds_body(&self) -> bool {
        self.policy.holds_body()
    }

    /// Whether a redaction may change the body's length (some kind is
    /// redacted with a mask that does not keep lengths): the glue then drops
    /// `content-length` before the headers go upstream.
    pub fn may_change_length(&self) -> bool {
        !matches!(self.policy.mask, vigil_pii::Mask::Fill(_))
            && self
                .policy
                .kinds
                .iter()
                .any(|k| self.policy.action(k) == PiiAction::Redact)
    }

    /// With `held` bytes buffered and more to come: keep holding? False once
    /// `held` passes `max_inspect_bytes` (the guard then inspects the prefix).
    pub fn should_hold(&self, held: usize) -> bool {
        self.holds_body() && !self.finished && held <= self.policy.max_inspect_bytes
    }

    /// Bytes inspected so far.
    pub fn inspected(&self) -> usize {
        self.inspected
    }

    /// Whether only a prefix was inspected.
    pub fn partial(&self) -> bool {
        self.partial
    }

    /// Findings so far (absolute body offsets, within the inspected prefix).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Inspect the next chunk of a streamed body (detect mode). Bytes past
    /// `max_inspect_bytes` are not inspected and mark the body `partial`.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.finished {
            return;
        }
        let room = self.policy.max_inspect_bytes.saturating_sub(self.inspected);
        let take = chunk.len().min(room);
        if take < chunk.len() {
            self.partial = true;
        }
        let part = chunk.get(..take).unwrap_or(&[]);
        self.inspected += take;
        if self.json {
            let mut pos = 0;
            for piece in self.walker.feed(part) {
                // Bytes between target strings are skipped (JSON syntax, other fields).
                self.stream
                    .skip(piece.start.saturating_sub(pos), &mut self.findings);
                let text = part.get(piece.start..piece.end).unwrap_or(&[]);
                if piece.closes {
                    self.stream.feed_last(text, &mut self.findings);
                } else {
                    self.stream.feed(text, &mut self.findings);
                }
                pos = piece.end;
            }
            self.stream
                .skip(part.len().saturating_sub(pos), &mut self.findings);
        } else {
            self.stream.feed(part, &mut self.findings);
        }
        if self.partial {
            self.end();
        }
    }

    /// More body arrived after `max_inspect_bytes` were inspected: it is not
    /// inspected, and the body counts as `partial`.
    pub fn overflow(&mut self) {
        self.partial = true;
        self.end();
    }

    /// The body ended (or inspection stops): flush the carry-over.
    pub fn end(&mut self) {
        if !self.finished {
            self.stream.finish(&mut self.findings);
            self.finished = true;
        }
    }

    /// Held-body mode: inspect `held` (the body, or its first bytes when
    /// `more` is true because it outgrew `max_inspect_bytes`) and decide.
    pub fn decide(&mut self, held: &[u8], more: bool) -> Verdict {
        let take = held.len().min(self.policy.max_inspect_bytes);
        let prefix = held.get(..take).unwrap_or(&[]);
        self.feed(prefix);
        if more || take < held.len() {
            self.partial = true;
        }
        self.end();
        let mut blocked: Vec<Kind> = Vec::new();
        let mut redact: Vec<Finding> = Vec::new();
        for f in &self.findings {
            match self.policy.action(f.kind) {
                PiiAction::Block => {
                    if !blocked.contains(&f.kind) {
                        blocked.push(f.kind);
                    }
                }
                PiiAction::Redact => redact.push(*f),
                PiiAction::Detect => {}
            }
        }
        if !blocked.is_empty() {
            blocked.sort();
            return Verdict::Block {
                status: 400,
                body: block_body(&blocked),
            };
        }
        if redact.is_empty() {
            return Verdict::Pass;
        }
        let body = Redactor::new(self.policy.mask.clone()).apply(prefix, &redact);
        Verdict::Replace { len: take, body }
    }

    /// The action applied to a finding of `kind` on this request, given the
    /// verdict (a blocked request counts every finding as blocked).
    fn applied(&self, kind: Kind, blocked: bool) -> PiiAction {
        if blocked {
            PiiAction::Block
        } else {
            self.policy.action(kind)
        }
    }

    /// This request's counts for the guard's metrics (call once, at the end
    /// of inspection); `held` is the most body bytes the glue asked Envoy to hold.
    pub fn request_counts(&self, verdict: &Verdict, held: usize) -> RequestCounts {
        let blocked = matches!(verdict, Verdict::Block { .. });
        let mut c = RequestCounts {
            inspected: self.inspected as u64,
            partial: self.partial,
            blocked,
            redacted: matches!(verdict, Verdict::Replace { .. }),
            held: self.holds_body().then_some(held as u64),
            ..RequestCounts::default()
        };
        for f in &self.findings {
            if let Some(slot) = c.findings.get_mut(f.kind as usize) {
                slot.0 += 1;
            }
        }
        for (k, slot) in Kind::ALL.iter().zip(c.findings.iter_mut()) {
            slot.1 = self.applied(*k, blocked);
        }
        c
    }

    /// Record this request's counters in `metrics` (call once, at the end
    /// of inspection); `held` is the most body bytes the glue asked Envoy to hold.
    pub fn record<M: MetricSink + ?Sized>(
        &self,
        metrics: &mut PiiMetrics,
        sink: &mut M,
        verdict: &Verdict,
        held: usize,
        now_ms: u64,
    ) {
        metrics.record(
            sink,
            &self.policy.route,
            &self.request_counts(verdict, held),
            now_ms,
        );
    }

    /// This request's counts for the control-service report (route, types,
    /// actions and numbers; never a value or a span). Call once, at the end
    /// of inspection, like [`BodyGuard::record`].
    pub fn counts(&self, verdict: &Verdict) -> vigil_wire::pii::PiiRoute {
        let blocked = matches!(verdict, Verdict::Block { .. });
        let mut out = vigil_wire::pii::PiiRoute::new(&self.policy.route);
        out.requests = 1;
        out.inspected_bytes = self.inspected as u64;
        out.partial = u64::from(self.partial);
        out.blocked = u64::from(blocked);
        out.redacted = u64::from(matches!(verdict, Verdict::Replace { .. }));
        for k in Kind::ALL {
            let n = self.findings.iter().filter(|f| f.kind == k).count() as u64;
            out.add_finding(k.name(), self.applied(k, blocked).name(), n);
        }
        out
    }

    /// One-line audit summary: route, types and counts, never values.
    pub fn summary(&self, verdict: &Verdict) -> Option<String> {
        if self.findings.is_empty() && !self.partial {
            return None;
        }
        let mut parts = Vec::new();
        for k in Kind::ALL {
            let n = self.findings.iter().filter(|f| f.kind == k).count();
            if n > 0 {
                parts.push(format!("{}={n}", k.name()));
            }
        }
        let outcome = match verdict {
            Verdict::Pass => "passed",
            Verdict::Replace { .. } => "redacted",
            Verdict::Block { .. } => "blocked",
        };
        Some(format!(
            "vigil: pii route={} {outcome} findings[{}] inspected={}B{}",
            sanitize(self.policy.route.as_bytes()),
            parts.join(","),
            self.inspected,
            if self.partial { " partial" } else { "" }
        ))
    }
}

/// The 400 body: `{"error":{"type":"pii_blocked","message":…,"pii_types":[…]}}`.
pub fn block_body(kinds: &[Kind]) -> Vec<u8> {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "{{\"error\":{{\"type\":\"pii_blocked\",\"message\":\"request blocked: the prompt contains {}\",\"pii_types\":[{}]}}}}",
        names.join(", "),
        quoted.join(",")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MemorySink;

    fn policy(action: PiiAction) -> RoutePolicy {
        RoutePolicy::new("chat", action)
    }

    const BODY: &[u8] = br#"{"model":"m","user":"x@y.io","messages":[{"role":"user","content":"card 4111 1111 1111 1111 mail ann@example.com"}]}"#;

    #[test]
    fn redact_keeps_json_valid_and_masks_only_content() {
        let mut g = BodyGuard::new(&policy(PiiAction::Redact), Some(b"application/json"));
        let v = g.decide(BODY, false);
        let Verdict::Replace { len, body } = v else {
            panic!("{v:?}")
        };
        assert_eq!(len, BODY.len());
        let doc: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc["messages"][0]["content"], "card [CARD] mail [EMAIL]");
        assert_eq!(
            doc["user"], "x@y.io",
            "only messages[].content and prompt are inspected"
        );
    }

    #[test]
    fn block_names_types_never_values() {
        let mut g = BodyGuard::new(&policy(PiiAction::Block), Some(b"application/json"));
        let Verdict::Block { status, body } = g.decide(BODY, false) else {
            panic!()
        };
        assert_eq!(status, 400);
        let s = String::from_utf8_lossy(&body);
        assert!(
            s.contains("\"card\"")
                && s.contains("\"email\"")
                && !s.contains("4111")
                && !s.contains("ann@")
        );
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
        let mut sink = MemorySink::default();
        let mut metrics = PiiMetrics::default();
        g.record(
            &mut metrics,
            &mut sink,
            &Verdict::Block { status, body },
            BODY.len(),
            0,
        );
        assert_eq!(
            sink.value("route=.=chat;.;type=.=card;.;action=.=block;.;vigil_pii_findings_total"),
            Some(1)
        );
        assert_eq!(
            sink.value("route=.=chat;.;vigil_pii_blocked_total"),
            Some(1)
        );
    }

    #[test]
    fn detect_streams_chunks_and_counts_partial() {
        let mut p = policy(PiiAction::Detect);
        p.max_inspect_bytes = 100;
        let mut g = BodyGuard::new(&p, Some(b"application/json"));
        assert!(!g.holds_body());
        for c in BODY.chunks(3) {
            g.feed(c);
        }
        g.end();
        assert!(g.partial());
        assert_eq!(g.inspected(), 100);
        // The card ends before byte 100; the email does not.
        assert_eq!(
            g.findings().iter().map(|f| f.kind).collect::<Vec<_>>(),
            vec![Kind::Card]
        );
    }

    #[test]
    fn luhn_valid_timestamp_passes_block() {
        let mut g = BodyGuard::new(&policy(PiiAction::Block), Some(b"application/json"));
        let body = br#"{"prompt":"event timestamp 4000000000000002 recorded"}"#;
        assert_eq!(g.decide(body, false), Verdict::Pass);
    }

    #[test]
    fn fuzzed_bodies_never_panic() {
        let mut seed = 7u64;
        for n in 0..300usize {
            let mut body = Vec::new();
            for _ in 0..(n * 37 % 5000) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                body.push(
                    *b"{}[]\":,\\ 4@.-ae1"
                        .get((seed % 17) as usize)
                        .unwrap_or(&b'x'),
                );
            }
            for action in [PiiAction::Detect, PiiAction::Redact, PiiAction::Block] {
                let mut g = BodyGuard::new(&policy(action), Some(b"application/json"));
                let _ = g.decide(&body, n % 2 == 0);
                let mut g = BodyGuard::new(&policy(action), None);
                for c in body.chunks(1 + n % 13) {
                    g.feed(c);
                }
                g.end();
            }
        }
    }
}
