//! Turning Envoy's per-request properties into one [`RequestRecord`].
//!
//! The glue reads raw property bytes (`response.code`, `response.flags`,
//! `request.duration`, `upstream.request_attempt_count`); this module decodes
//! them without trusting them: a missing or malformed property yields a
//! neutral value, never a panic.

use vigil_scorer::window::Counters;

/// Envoy's legacy response-flag bits (the `response.flags` property), the ones
/// Vigil classifies.
pub mod flags {
    /// `UH`: no healthy upstream.
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    /// `UT`: upstream request timeout.
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// `LR`: local reset.
    pub const LOCAL_RESET: u64 = 0x8;
    /// `UR`: upstream remote reset.
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    /// `UF`: upstream connection failure.
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// `UC`: upstream connection termination.
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// `UO`: upstream overflow (circuit breaking).
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    /// Every flag counted as a reset.
    pub const RESETS: u64 = NO_HEALTHY_UPSTREAM
        | LOCAL_RESET
        | UPSTREAM_REMOTE_RESET
        | UPSTREAM_CONNECTION_FAILURE
        | UPSTREAM_CONNECTION_TERMINATION;
}

/// What one completed request contributes to its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestRecord {
    /// Total duration in microseconds.
    pub latency_us: u64,
    /// HTTP status sent downstream; 0 when no response was sent.
    pub status: u16,
    /// Envoy response flags bit-vector.
    pub response_flags: u64,
    /// Upstream attempts (1 without retries; 0 when no upstream was tried).
    pub attempts: u64,
}

/// Decode an Envoy integer property (8-byte little-endian); `None` when absent
/// or not 8 bytes.
pub fn decode_int(bytes: Option<&[u8]>) -> Option<u64> {
    let arr: [u8; 8] = bytes?.try_into().ok()?;
    Some(u64::from_le_bytes(arr))
}

impl RequestRecord {
    /// Build a record from raw property values (each may be missing).
    pub fn from_properties(
        duration_ns: Option<&[u8]>,
        status: Option<&[u8]>,
        response_flags: Option<&[u8]>,
        attempts: Option<&[u8]>,
    ) -> Self {
        RequestRecord {
            latency_us: decode_int(duration_ns).unwrap_or(0) / 1000,
            status: decode_int(status)
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(0),
            response_flags: decode_int(response_flags).unwrap_or(0),
            attempts: decode_int(attempts).unwrap_or(0),
        }
    }

    /// True when the user saw a failure: a 5xx, or no response at all.
    pub fn is_error(&self) -> bool {
        self.status == 0 || self.status >= 500
    }

    /// Add this request to a window's counters.
    pub fn count_into(&self, c: &mut Counters) {
        c.requests += 1;
        if self.is_error() {
            c.errors += 1;
        }
        if (400..500).contains(&self.status) {
            c.status_4xx += 1;
        }
        if self.response_flags & flags::RESETS != 0 {
            c.resets += 1;
        }
        if self.response_flags & flags::UPSTREAM_OVERFLOW != 0 {
            c.overflows += 1;
        }
        if self.response_flags & flags::UPSTREAM_REQUEST_TIMEOUT != 0 {
            c.timeouts += 1;
        }
        c.retries += self.attempts.saturating_sub(1);
        c.latency_sum_us = c.latency_sum_us.saturating_add(self.latency_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(v: u64) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    #[test]
    fn decodes_properties_and_classifies() {
        let r = RequestRecord::from_properties(
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
            (1, 1, 1, 1, 2)
        );
    }

    #[test]
    fn missing_or_malformed_properties_are_neutral() {
        let r = RequestRecord::from_properties(None, Some(b"abc"), Some(&[1, 2]), None);
        assert_eq!(r, RequestRecord::default());
        assert!(r.is_error(), "no response at all counts as an error");
        let r = RequestRecord::from_properties(None, Some(&le(70_000)), None, None);
        assert_eq!(r.status, 0, "out-of-range status is not trusted");
    }

    #[test]
    fn client_errors_are_not_errors() {
        let r = RequestRecord::from_properties(None, Some(&le(404)), None, Some(&le(1)));
        let mut c = Counters::default();
        r.count_into(&mut c);
        assert_eq!((c.errors, c.status_4xx, c.retries), (0, 1, 0));
    }
}
