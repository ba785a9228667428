//! Turning Envoy's per-request properties into one [`RequestRecord`].
//!
//! The glue reads raw property bytes (`response.code`, `response.flags`,
//! `request.duration`, `upstream.request_attempt_count`); this module decodes
//! them without trusting them: a missing or malformed property yields a
//! neutral value, never a panic. The request's outcome class is decided by
//! [`crate::outcome::classify`].

use crate::outcome::{classify, GrpcPolicy, Outcome, ResponseFacts};
use vigil_scorer::window::Counters;

/// Envoy's legacy response-flag bits (kept for callers; see [`crate::outcome::flag`]).
pub mod flags {
    pub use crate::outcome::flag::{
        LR as LOCAL_RESET, UC as UPSTREAM_CONNECTION_TERMINATION,
        UF as UPSTREAM_CONNECTION_FAILURE, UH as NO_HEALTHY_UPSTREAM, UO as UPSTREAM_OVERFLOW,
        UR as UPSTREAM_REMOTE_RESET, UT as UPSTREAM_REQUEST_TIMEOUT,
    };
    /// Every flag counted as an upstream reset.
    pub const RESETS: u64 = crate::outcome::flag::RESET;
}

/// What one completed request contributes to its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// Total duration in microseconds.
    pub latency_us: u64,
    /// HTTP status sent downstream; 0 when no response was sent.
    pub status: u16,
    /// Envoy response flags bit-vector.
    pub response_flags: u64,
    /// Upstream attempts (1 without retries; 0 when no upstream was tried).
    pub attempts: u64,
    /// Outcome class.
    pub outcome: Outcome,
    /// Time from request headers to the first response body byte, µs
    /// (`None` without a body).
    pub ttft_us: Option<u64>,
    /// Response body chunks seen (data callbacks with bytes).
    pub chunks: u64,
    /// Time from the first to the last body chunk, µs.
    pub stream_span_us: u64,
    /// Time the request waited for a ready upstream connection
    /// (`upstream.cx_pool_ready_duration`), µs: a new connection's connect
    /// time, or queueing in a full pool. Taken out of the judged latency and
    /// TTFT (see [`RequestRecord::with_pool_wait`]).
    pub pool_wait_us: u64,
}

impl Default for RequestRecord {
    fn default() -> Self {
        RequestRecord {
            latency_us: 0,
            status: 0,
            response_flags: 0,
            attempts: 0,
            outcome: Outcome::Reset,
            ttft_us: None,
            chunks: 0,
            stream_span_us: 0,
            pool_wait_us: 0,
        }
    }
}

/// Decode an Envoy integer property (8-byte little-endian); `None` when absent
/// or not 8 bytes.
pub fn decode_int(bytes: Option<&[u8]>) -> Option<u64> {
    let arr: [u8; 8] = bytes?.try_into().ok()?;
    Some(u64::from_le_bytes(arr))
}

/// Decode `response.code` (an integer property); 0 when absent, malformed
/// or not an HTTP status.
pub fn decode_status(bytes: Option<&[u8]>) -> u16 {
    decode_int(bytes)
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(0)
}

/// Decode `response.grpc_status`: an integer property (8-byte little-endian),
/// or its decimal text; `None` when absent or malformed.
pub fn decode_grpc_status(bytes: Option<&[u8]>) -> Option<u64> {
    let b = bytes?;
    decode_int(Some(b)).or_else(|| std::str::from_utf8(b).ok()?.trim().parse().ok())
}

impl RequestRecord {
    /// A record of already-decoded values, classified from status and flags
    /// alone (tests, benchmarks).
    pub fn new(latency_us: u64, status: u16, response_flags: u64, attempts: u64) -> Self {
        let mut r = RequestRecord {
            latency_us,
            status,
            response_flags,
            attempts,
            outcome: Outcome::Ok,
            ttft_us: None,
            chunks: 0,
            stream_span_us: 0,
            pool_wait_us: 0,
        };
        r.classify(None, false, None, &GrpcPolicy::default());
        r
    }

    /// Add the body timing the glue measured: request-headers, first and
    /// last body-chunk times (ns, the host's clock) and the chunk count.
    pub fn with_body_timing(
        mut self,
        request_ns: Option<u64>,
        first_ns: Option<u64>,
        last_ns: Option<u64>,
        chunks: u64,
    ) -> Self {
        if let (Some(start), Some(first)) = (request_ns, first_ns) {
            self.ttft_us = Some(first.saturating_sub(start) / 1000);
        }
        if let (Some(first), Some(last)) = (first_ns, last_ns) {
            self.stream_span_us = last.saturating_sub(first) / 1000;
        }
        self.chunks = chunks;
        self
    }

    /// Take the time the request waited for a ready upstream connection
    /// (Envoy's `upstream.cx_pool_ready_duration`, ns; missing or malformed:
    /// nothing) out of its latency and TTFT. Why: how often a request must
    /// open a new upstream connection is not the upstream's doing — a client
    /// that resets its own requests makes Envoy close the upstream connection
    /// each abandoned request ran on, so the next requests pay a connect —
    /// while what the upstream does once connected is. Connection failures
    /// stay judged (`UF`, `UH` are resets).
    pub fn with_pool_wait(mut self, pool_ready_ns: Option<&[u8]>) -> Self {
        let wait = decode_int(pool_ready_ns).unwrap_or(0) / 1000;
        self.pool_wait_us = wait;
        self.latency_us = self.latency_us.saturating_sub(wait);
        if let Some(t) = self.ttft_us.as_mut() {
            *t = t.saturating_sub(wait);
        }
        self
    }

    /// True when the time to first byte goes into its histogram (a client
    /// that left says nothing about the upstream).
    pub fn counts_ttft(&self) -> bool {
        self.ttft_us.is_some() && self.outcome != Outcome::ClientGone
    }

    /// Decide the outcome class from what is known besides status and flags:
    /// the raw `response.grpc_status` property, whether the response was
    /// gRPC, and `response.code_details`.
    pub fn classify(
        &mut self,
        grpc_status: Option<&[u8]>,
        is_grpc: bool,
        details: Option<&[u8]>,
        policy: &GrpcPolicy,
    ) {
        let facts = ResponseFacts {
            status: self.status,
            grpc_status: decode_grpc_status(grpc_status),
            is_grpc,
            flags: self.response_flags,
            details,
        };
        self.outcome = classify(&facts, policy);
    }

    /// True when `response.code_details` can change the class: only then is
    /// it worth a hostcall (no response, or a flag is set).
    pub fn needs_details(&self) -> bool {
        self.status == 0 || self.response_flags != 0
    }

    /// True when the user saw a failure the upstream answers for
    /// ([`Outcome::is_error`]).
    pub fn is_error(&self) -> bool {
        self.outcome.is_error()
    }

    /// True when the duration goes into the latency histogram (a cut stream
    /// or an abandoned request would look fast).
    pub fn counts_latency(&self) -> bool {
        !self.outcome.excluded_from_latency(self.status)
    }

    /// Add this request to a window's counters. A client that left is
    /// counted in `client_gone` only: never in `requests` (so it can
    /// neither dilute nor inflate a share, nor supply evidence), nor in a
    /// histogram, an error or a retry.
    pub fn count_into(&self, c: &mut Counters) {
        if self.outcome == Outcome::ClientGone {
            c.client_gone = c.client_gone.saturating_add(1);
            return;
        }
        c.requests += 1;
        if self.is_error() {
            c.errors += 1;
        }
        let class = match self.outcome {
            Outcome::Ok => None,
            Outcome::ServerError => Some(&mut c.server_errors),
            Outcome::Reset => Some(&mut c.resets),
            Outcome::Timeout => Some(&mut c.timeouts),
            Outcome::Throttled => Some(&mut c.throttled),
            Outcome::ClientError => Some(&mut c.status_4xx),
            Outcome::ClientGone => None,
            Outcome::GrpcUnknown => Some(&mut c.grpc_unknown),
        };
        if let Some(n) = class {
            *n = n.saturating_add(1);
        }
        if self.response_flags & flags::UPSTREAM_OVERFLOW != 0 {
            c.overflows += 1;
        }
        c.retries += self.attempts.saturating_sub(1);
        if self.counts_latency() {
            c.latency_sum_us = c.latency_sum_us.saturating_add(self.latency_us);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(v: u64) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    /// A record from raw property values (each may be missing), decoded as
    /// the request path decodes them (`RequestFlow::on_log`).
    fn from_properties(
        duration_ns: Option<&[u8]>,
        status: Option<&[u8]>,
        response_flags: Option<&[u8]>,
        attempts: Option<&[u8]>,
    ) -> RequestRecord {
        RequestRecord::new(
            decode_int(duration_ns).unwrap_or(0) / 1000,
            decode_status(status),
            decode_int(response_flags).unwrap_or(0),
            decode_int(attempts).unwrap_or(0),
        )
    }

    #[test]
    fn decodes_properties_and_classifies() {
        let r = from_properties(
            Some(&le(2_500_000)),
            Some(&le(503)),
            Some(&le(
                flags::UPSTREAM_CONNECTION_FAILURE | flags::UPSTREAM_REQUEST_TIMEOUT
            )),
            Some(&le(3)),
        );
        assert_eq!(r.latency_us, 2_500);
        let mut c = Counters::default();
        r.count_into(&mut c);
        assert_eq!(
            (c.requests, c.errors, c.resets, c.timeouts, c.retries),
            (1, 1, 0, 1, 2),
            "one class per request: a timeout"
        );
    }

    #[test]
    fn missing_or_malformed_properties_are_neutral() {
        let r = from_properties(None, Some(b"abc"), Some(&[1, 2]), None);
        assert_eq!(r, RequestRecord::default());
        assert!(r.is_error(), "no response at all counts as an error");
        assert_eq!(decode_grpc_status(Some(b"14")), Some(14));
        assert_eq!(decode_grpc_status(Some(&le(3))), Some(3));
        assert_eq!(decode_grpc_status(Some(b"x")), None);
        let r = from_properties(None, Some(&le(70_000)), None, None);
        assert_eq!(r.status, 0, "out-of-range status is not trusted");
    }

    #[test]
    fn client_errors_are_not_errors() {
        let r = from_properties(None, Some(&le(404)), None, Some(&le(1)));
        let mut c = Counters::default();
        r.count_into(&mut c);
        assert_eq!((c.errors, c.status_4xx, c.retries), (0, 1, 0));
    }

    #[test]
    fn grpc_failure_with_http_200_is_an_error() {
        let mut r = from_properties(None, Some(&le(200)), None, Some(&le(1)));
        r.classify(Some(&le(14)), true, None, &GrpcPolicy::default());
        let mut c = Counters::default();
        r.count_into(&mut c);
        assert_eq!((c.errors, c.server_errors), (1, 1));
    }

    #[test]
    fn client_gone_is_never_an_error_nor_a_latency() {
        let r = from_properties(
            Some(&le(3_000_000)),
            Some(&le(0)),
            Some(&le(crate::outcome::flag::DC)),
            Some(&le(1)),
        );
        let mut c = Counters::default();
        r.count_into(&mut c);
        assert_eq!((c.errors, c.resets, c.client_gone), (0, 0, 1));
        assert_eq!(c.requests, 0, "a client that left is no judged request");
        assert!(!r.counts_latency());
        assert_eq!(c.latency_sum_us, 0);
    }

    #[test]
    fn the_wait_for_an_upstream_connection_is_not_judged() {
        let r = from_properties(Some(&le(5_000_000)), Some(&le(200)), None, Some(&le(1)))
            .with_body_timing(Some(0), Some(3_000_000), None, 1)
            .with_pool_wait(Some(&le(400_000)));
        assert_eq!(
            (r.latency_us, r.ttft_us, r.pool_wait_us),
            (4_600, Some(2_600), 400)
        );
        let r = from_properties(Some(&le(5_000_000)), Some(&le(200)), None, None)
            .with_pool_wait(Some(b"junk"));
        assert_eq!(r.latency_us, 5_000);
    }

    #[test]
    fn a_cut_stream_is_a_reset_without_latency() {
        let r = from_properties(
            Some(&le(500_000_000)),
            Some(&le(200)),
            Some(&le(crate::outcome::flag::UPE)),
            Some(&le(1)),
        );
        let mut c = Counters::default();
        r.count_into(&mut c);
        assert_eq!((c.errors, c.resets), (1, 1));
        assert!(!r.counts_latency());
    }
}
