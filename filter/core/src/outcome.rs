//! The outcome class of one request, decided once in `on_log`.
//!
//! Why this exists: inference traffic fails in ways a status code alone does
//! not show. A gRPC call fails with HTTP 200 and `grpc-status: 14` in its
//! trailers; a streamed answer is cut after a few chunks and still logs 200
//! (`UPE`/`UR`); a throttled request (429, `RESOURCE_EXHAUSTED`, `UO`) is the
//! platform's doing, not a crash; and a client that resets its own request
//! (`DC`, downstream reset) must never count against the upstream, or any
//! client could get a healthy canary steered away.
//!
//! [`classify`] takes the HTTP status, the gRPC status (Envoy's
//! `response.grpc_status`, which reads trailers, or headers for a
//! trailers-only response), Envoy's response-flag bits and the response code
//! details, and returns exactly one [`Outcome`]. The order of the rules is
//! the table in `filter/README.md`; the first that matches wins:
//!
//! 1. client gone: `DC` or a downstream reset (`DR`, `downstream_remote_*`
//!    details);
//! 2. timeout: `UT`, stream idle / max duration (`SI`, `UMSDR`, `DT`), gRPC
//!    `DEADLINE_EXCEEDED`;
//! 3. upstream reset / protocol error / truncated stream: `UR`, `UC`, `UF`,
//!    `UH`, `LR`, `UPE`, `URX`, `upstream_reset_*` details, no response at
//!    all, or a gRPC response that ended without a status (no last frame);
//! 4. throttled: HTTP 429, gRPC `RESOURCE_EXHAUSTED`, `UO`, `RL`;
//! 5. gRPC status, when present on a gRPC response (Envoy maps any other
//!    response's HTTP status to one, which is ignored): 0 ok, a configured server-fault code
//!    server error, a code above 16 its own class (`grpc_unknown`), any
//!    other code client error;
//! 6. HTTP: 5xx server error, other 4xx client error, else ok.

use std::fmt;

/// Envoy's legacy response-flag bits (the `response.flags` property).
pub mod flag {
    /// `UH`: no healthy upstream.
    pub const UH: u64 = 0x2;
    /// `UT`: upstream request timeout.
    pub const UT: u64 = 0x4;
    /// `LR`: local reset.
    pub const LR: u64 = 0x8;
    /// `UR`: upstream remote reset.
    pub const UR: u64 = 0x10;
    /// `UF`: upstream connection failure.
    pub const UF: u64 = 0x20;
    /// `UC`: upstream connection termination.
    pub const UC: u64 = 0x40;
    /// `UO`: upstream overflow (circuit breaking).
    pub const UO: u64 = 0x80;
    /// `RL`: rate limited (local or global rate limit filter).
    pub const RL: u64 = 0x800;
    /// `DC`: downstream connection termination.
    pub const DC: u64 = 0x4000;
    /// `URX`: upstream retry limit exceeded.
    pub const URX: u64 = 0x8000;
    /// `SI`: stream idle timeout.
    pub const SI: u64 = 0x10000;
    /// `UMSDR`: upstream max stream duration reached.
    pub const UMSDR: u64 = 0x80000;
    /// `DT`: request or connection exceeded its duration timeout.
    pub const DT: u64 = 0x400000;
    /// `UPE`: upstream protocol error (e.g. a chunked body cut short).
    pub const UPE: u64 = 0x800000;
    /// `DR`: downstream remote reset.
    pub const DR: u64 = 0x10000000;

    /// The client went away.
    pub const CLIENT_GONE: u64 = DC | DR;
    /// Timeouts.
    pub const TIMEOUT: u64 = UT | SI | UMSDR | DT;
    /// Upstream resets, connection failures and protocol errors.
    pub const RESET: u64 = UH | LR | UR | UF | UC | URX | UPE;
    /// Throttling.
    pub const THROTTLE: u64 = UO | RL;
}

/// One request's outcome class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Served.
    Ok,
    /// 5xx, or a gRPC server-fault code.
    ServerError,
    /// Upstream reset, protocol error, truncated stream, no response.
    Reset,
    /// Timed out (`UT`, `DEADLINE_EXCEEDED`, ...).
    Timeout,
    /// Throttled (429, `RESOURCE_EXHAUSTED`, `UO`).
    Throttled,
    /// The client's fault: other 4xx, gRPC client codes.
    ClientError,
    /// The client went away (`DC`, downstream reset): never the upstream's fault.
    ClientGone,
    /// A gRPC status code outside the 17 defined ones.
    GrpcUnknown,
}

impl Outcome {
    /// Every class, in metric/report order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::ServerError,
        Outcome::Reset,
        Outcome::Timeout,
        Outcome::Throttled,
        Outcome::ClientError,
        Outcome::ClientGone,
        Outcome::GrpcUnknown,
    ];

    /// The label value (`class=` of `vigil_failures_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ServerError => "server_error",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::Throttled => "throttled",
            Outcome::ClientError => "client_error",
            Outcome::ClientGone => "client_gone",
            Outcome::GrpcUnknown => "grpc_unknown",
        }
    }

    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::ServerError => 1,
            Outcome::Reset => 2,
            Outcome::Timeout => 3,
            Outcome::Throttled => 4,
            Outcome::ClientError => 5,
            Outcome::ClientGone => 6,
            Outcome::GrpcUnknown => 7,
        }
    }

    /// True when the user saw a failure the upstream is answerable for
    /// (counted in `vigil_errors_total` and the errors signal). Throttling,
    /// client errors and clients that left are not.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Outcome::ServerError | Outcome::Reset | Outcome::Timeout | Outcome::GrpcUnknown
        )
    }

    /// True when the request's duration says nothing about the upstream's
    /// speed: a cut stream or a client that left early would look fast.
    pub fn excluded_from_latency(self, status: u16) -> bool {
        match self {
            Outcome::ClientGone => true,
            Outcome::Reset => (1..500).contains(&status),
            _ => false,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// gRPC status code names, by code (0–16).
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `DEADLINE_EXCEEDED`.
pub const GRPC_DEADLINE_EXCEEDED: u64 = 4;
/// `RESOURCE_EXHAUSTED`.
pub const GRPC_RESOURCE_EXHAUSTED: u64 = 8;

/// The code of a gRPC status name (`"UNAVAILABLE"` → 14), case-insensitive.
pub fn grpc_code(name: &str) -> Option<u8> {
    GRPC_CODES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| u8::try_from(i).ok())
}

/// Which gRPC codes are the server's fault: a bit per code (0–16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcPolicy {
    server_codes: u32,
}

/// Default server-fault codes: `UNKNOWN`, `UNIMPLEMENTED`, `INTERNAL`,
/// `UNAVAILABLE`, `DATA_LOSS`.
pub const DEFAULT_GRPC_SERVER_CODES: [&str; 5] = [
    "UNKNOWN",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
];

impl Default for GrpcPolicy {
    fn default() -> Self {
        GrpcPolicy::from_codes(
            DEFAULT_GRPC_SERVER_CODES
                .iter()
                .filter_map(|n| grpc_code(n)),
        )
    }
}

impl GrpcPolicy {
    /// A policy counting exactly these codes as server faults (codes above
    /// 16 are ignored: they are always [`Outcome::GrpcUnknown`]).
    pub fn from_codes(codes: impl IntoIterator<Item = u8>) -> Self {
        let mut server_codes = 0u32;
        for c in codes {
            if c <= 16 {
                server_codes |= 1 << c;
            }
        }
        GrpcPolicy { server_codes }
    }

    /// True when `code` is a configured server fault.
    pub fn is_server_fault(&self, code: u64) -> bool {
        code <= 16 && self.server_codes & (1 << code) != 0
    }
}

/// What `on_log` knows about a request's response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFacts<'a> {
    /// HTTP status sent downstream; 0 when none was sent.
    pub status: u16,
    /// gRPC status, when the response carried one.
    pub grpc_status: Option<u64>,
    /// The response was gRPC (`content-type: application/grpc...`).
    pub is_grpc: bool,
    /// Envoy response flags.
    pub flags: u64,
    /// `response.code_details`, when read.
    pub details: Option<&'a [u8]>,
}

fn starts_with(details: Option<&[u8]>, prefix: &[u8]) -> bool {
    details.is_some_and(|d| d.starts_with(prefix))
}

/// The outcome class of one request (rules in the module docs).
pub fn classify(r: &ResponseFacts<'_>, policy: &GrpcPolicy) -> Outcome {
    let details = r.details;
    // Envoy answers `response.grpc_status` for any response, mapping the
    // HTTP status when there is no `grpc-status` (200 → UNKNOWN): it means
    // something only for a gRPC response.
    let grpc_status = r.grpc_status.filter(|_| r.is_grpc);
    let r = &ResponseFacts { grpc_status, ..*r };
    if r.flags & flag::CLIENT_GONE != 0
        || starts_with(details, b"downstream_remote_")
        || starts_with(details, b"downstream_reset")
    {
        return Outcome::ClientGone;
    }
    if r.flags & flag::TIMEOUT != 0 || r.grpc_status == Some(GRPC_DEADLINE_EXCEEDED) {
        return Outcome::Timeout;
    }
    if r.flags & flag::RESET != 0
        || starts_with(details, b"upstream_reset")
        || r.status == 0
        || (r.is_grpc && r.grpc_status.is_none() && r.status == 200)
    {
        return Outcome::Reset;
    }
    if r.status == 429
        || r.flags & flag::THROTTLE != 0
        || r.grpc_status == Some(GRPC_RESOURCE_EXHAUSTED)
    {
        return Outcome::Throttled;
    }
    if let Some(code) = r.grpc_status {
        return match code {
            0 if r.status < 500 => Outcome::Ok,
            0 => Outcome::ServerError,
            c if c > 16 => Outcome::GrpcUnknown,
            c if policy.is_server_fault(c) => Outcome::ServerError,
            _ => Outcome::ClientError,
        };
    }
    match r.status {
        500.. => Outcome::ServerError,
        400..=499 => Outcome::ClientError,
        _ => Outcome::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: u16, grpc: Option<u64>, flags: u64) -> ResponseFacts<'static> {
        ResponseFacts {
            status,
            grpc_status: grpc,
            is_grpc: grpc.is_some(),
            flags,
            details: None,
        }
    }

    fn class(status: u16, grpc: Option<u64>, flags: u64) -> Outcome {
        classify(&facts(status, grpc, flags), &GrpcPolicy::default())
    }

    #[test]
    fn the_readme_table() {
        use Outcome::*;
        let cases: &[(u16, Option<u64>, u64, Outcome)] = &[
            (200, None, 0, Ok),
            (204, None, 0, Ok),
            (503, None, 0, ServerError),
            (500, None, 0, ServerError),
            (200, None, flag::UPE, Reset),
            (200, None, flag::UR, Reset),
            (503, None, flag::UC, Reset),
            (503, None, flag::UF, Reset),
            (503, None, flag::URX, Reset),
            (0, None, 0, Reset),
            (504, None, flag::UT, Timeout),
            (200, Some(4), 0, Timeout),
            (429, None, 0, Throttled),
            (503, None, flag::UO, Throttled),
            (200, Some(8), 0, Throttled),
            (404, None, 0, ClientError),
            (400, None, 0, ClientError),
            (200, Some(3), 0, ClientError),
            (200, Some(5), 0, ClientError),
            (200, Some(1), 0, ClientError),
            (0, None, flag::DC, ClientGone),
            (0, None, flag::DR, ClientGone),
            (200, None, flag::DC | flag::UR, ClientGone),
            (200, Some(0), 0, Ok),
            (200, Some(14), 0, ServerError),
            (200, Some(13), 0, ServerError),
            (200, Some(2), 0, ServerError),
            (200, Some(15), 0, ServerError),
            (200, Some(12), 0, ServerError),
            (200, Some(17), 0, GrpcUnknown),
            (200, Some(99), 0, GrpcUnknown),
            (503, Some(14), 0, ServerError),
        ];
        for &(status, grpc, flags, want) in cases {
            assert_eq!(
                class(status, grpc, flags),
                want,
                "status {status} grpc {grpc:?} flags {flags:#x}"
            );
        }
    }

    #[test]
    fn grpc_status_of_a_plain_http_response_is_ignored() {
        // Envoy maps HTTP 200 to UNKNOWN when the response is not gRPC.
        let f = ResponseFacts {
            status: 200,
            grpc_status: Some(2),
            is_grpc: false,
            flags: 0,
            details: None,
        };
        assert_eq!(classify(&f, &GrpcPolicy::default()), Outcome::Ok);
    }

    #[test]
    fn grpc_without_status_is_a_truncated_stream() {
        let f = ResponseFacts {
            status: 200,
            grpc_status: None,
            is_grpc: true,
            flags: 0,
            details: None,
        };
        assert_eq!(classify(&f, &GrpcPolicy::default()), Outcome::Reset);
    }

    #[test]
    fn details_decide_when_flags_are_silent() {
        let mut f = facts(200, None, 0);
        f.details = Some(b"upstream_reset_after_response_started{remote_reset}");
        assert_eq!(classify(&f, &GrpcPolicy::default()), Outcome::Reset);
        f.details = Some(b"downstream_remote_disconnect");
        assert_eq!(classify(&f, &GrpcPolicy::default()), Outcome::ClientGone);
        f.details = Some(b"via_upstream");
        assert_eq!(classify(&f, &GrpcPolicy::default()), Outcome::Ok);
    }

    #[test]
    fn server_codes_are_configurable() {
        let p = GrpcPolicy::from_codes([grpc_code("unavailable").unwrap_or(0)]);
        let f = facts(200, Some(13), 0);
        assert_eq!(classify(&f, &p), Outcome::ClientError);
        let f = facts(200, Some(14), 0);
        assert_eq!(classify(&f, &p), Outcome::ServerError);
        assert_eq!(grpc_code("NOPE"), None);
        assert_eq!(grpc_code("DATA_LOSS"), Some(15));
    }

    #[test]
    fn latency_exclusions() {
        assert!(Outcome::ClientGone.excluded_from_latency(200));
        assert!(Outcome::Reset.excluded_from_latency(200));
        assert!(!Outcome::Reset.excluded_from_latency(0));
        assert!(!Outcome::Reset.excluded_from_latency(503));
        assert!(!Outcome::ServerError.excluded_from_latency(503));
        assert!(Outcome::ALL.iter().enumerate().all(|(i, o)| o.index() == i));
        assert!(!Outcome::ClientGone.is_error() && !Outcome::Throttled.is_error());
        assert!(Outcome::GrpcUnknown.is_error());
    }
}
