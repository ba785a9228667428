//! One request's hostcalls, planned: what the glue reads from Envoy in each
//! HTTP callback, each value at most once and only when it can matter.
//!
//! The glue implements [`RequestHost`] over proxy-wasm hostcalls and forwards
//! its callbacks to a per-request [`RequestFlow`]; [`CountingHost`] is a
//! scripted host that counts every call (tests, `vigil-bench --only hostcalls`).
//!
//! The plan:
//! - request headers: the time (TTFT start); the route, only when steering
//!   needs it (or the PII guard asks); the selected cluster, only when some
//!   canary is steered or weighted; the client's subset header only when its
//!   value can change what happens (it is trusted, or the filter will not set
//!   the header itself, so a client value must be removed);
//! - response headers: `content-type` (gRPC / streaming) and `:status`; the
//!   route and cluster for the score header only when it is enabled; whether
//!   the response ended here;
//! - response body: the time, at the first chunk and at later chunks of a
//!   streamed response; whether the response ended;
//! - `on_log`: the time (the duration is the filter's own clock from the
//!   request headers; `request.duration` only when the request headers were
//!   never seen), the status from `:status` (`response.code` only without
//!   response headers), `response.flags` only when they can matter (no
//!   complete non-gRPC response below 400: resets, timeouts, client gone and
//!   local replies all leave the response incomplete or ≥ 400), attempt
//!   count (a 2xx after a retry is judged: retries hidden from the client are
//!   upstream failures) and the connection-pool wait, both only when the
//!   request is not clean or took `fast_request_us` (2 ms) or more on the
//!   filter's clock — a request that fast cannot hide much pool wait, nor a
//!   retry but for a failed attempt and a backoff both shorter than that
//!   (`PluginConfig::fast_request_us` bounds both); `response.grpc_status` only for a gRPC response
//!   (it means nothing otherwise); `response.code_details` only when it can
//!   change the class; route and cluster only if not already read and still
//!   valid. Setting or removing the subset header makes Envoy re-select the
//!   route, so a route or cluster read before that is read again.
//!
//! Why this order of preference: a property read costs Envoy about 1.6 µs of
//! CPU (it is looked up through Envoy's expression attributes and copied into
//! the VM), a header read or the clock next to nothing (`vigil-bench --only
//! profile`, bench/README.md "Profile").

use crate::engine::{Decision, Worker};
use crate::request::{decode_int, decode_status, RequestRecord};

/// Value of the routing header that sends a request to the stable version.
pub const STABLE: &[u8] = b"stable";
/// Value of the routing header that sends a request to the canary version.
pub const CANARY: &[u8] = b"canary";
/// Response header carrying the series' score, when enabled.
pub const SCORE_HEADER: &str = "x-vigil-score";

/// The per-request hostcalls the flow uses; every method is one hostcall.
pub trait RequestHost {
    /// A property's raw bytes (`None`: missing or host error).
    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>>;
    /// A request header's raw bytes.
    fn request_header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// Set a request header.
    fn set_request_header(&mut self, name: &str, value: &[u8]);
    /// Remove a request header.
    fn remove_request_header(&mut self, name: &str);
    /// A response header's raw bytes.
    fn response_header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// Set a response header.
    fn set_response_header(&mut self, name: &str, value: &[u8]);
    /// Wall-clock nanoseconds.
    fn now_ns(&mut self) -> Option<u64>;
}

/// A value read from the host at most once (until invalidated).
#[derive(Debug, Default)]
enum Cached {
    #[default]
    Unread,
    Read(Option<Vec<u8>>),
}

impl Cached {
    fn get<H: RequestHost + ?Sized>(&mut self, host: &mut H, path: &[&str]) -> Option<&[u8]> {
        if matches!(self, Cached::Unread) {
            *self = Cached::Read(host.property(path));
        }
        match self {
            Cached::Read(v) => v.as_deref(),
            Cached::Unread => None,
        }
    }
}

const ROUTE: [&str; 2] = ["xds", "route_name"];
const CLUSTER: [&str; 2] = ["xds", "cluster_name"];

/// One request's state across its HTTP callbacks.
#[derive(Debug, Default)]
pub struct RequestFlow {
    route: Cached,
    cluster: Cached,
    /// The response is gRPC (`content-type: application/grpc…`).
    is_grpc: bool,
    /// A streamed response (`text/event-stream`, gRPC).
    streaming: bool,
    request_ns: Option<u64>,
    first_byte_ns: Option<u64>,
    last_chunk_ns: Option<u64>,
    chunks: u64,
    /// `:status` of the response headers, when they came and parsed.
    status: Option<u16>,
    /// The response's end of stream passed through this filter.
    response_ended: bool,
}

/// Parses a `:status` value (three ASCII digits, 100..=999).
fn parse_status(value: &[u8]) -> Option<u16> {
    let digits: [u8; 3] = value.try_into().ok()?;
    let mut n: u16 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u16::from(d - b'0');
    }
    (n >= 100).then_some(n)
}

/// True for a gRPC content type (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    value
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
}

impl RequestFlow {
    /// Start of the request headers callback: take the time.
    pub fn begin<H: RequestHost + ?Sized>(&mut self, host: &mut H) {
        self.request_ns = host.now_ns();
    }

    /// When the request headers arrived (ns since the epoch), if the host said.
    pub fn request_ns(&self) -> Option<u64> {
        self.request_ns
    }

    /// The route name, read once (e.g. for the PII guard's route policy).
    pub fn route<H: RequestHost + ?Sized>(&mut self, host: &mut H) -> Option<&[u8]> {
        self.route.get(host, &ROUTE)
    }

    /// Request headers: decide the routing header.
    pub fn on_request_headers<H: RequestHost + ?Sized>(
        &mut self,
        worker: &mut Worker,
        host: &mut H,
    ) {
        // Whether the client sent the header, once read.
        let mut client: Option<bool> = None;
        if worker.config().trust_client_subset_header {
            let present = host
                .request_header(&worker.config().subset_header)
                .is_some();
            if present {
                return;
            }
            client = Some(false);
        }
        // Read the route (which makes Envoy select it and its cluster) before
        // touching headers: changing a header clears Envoy's route cache. The
        // selected cluster says which canary the request belongs to, whatever
        // the route is named.
        let decision = if worker.wants_route_at_request() {
            let route = self.route.get(host, &ROUTE).unwrap_or_default();
            // The route alone decides a steered or weighted route; the
            // cluster is read only when that says nothing and some canary
            // is steered or weighted (the lookups by route have no effect
            // when they find nothing, so asking twice changes nothing).
            worker.route_decision(route, None).or_else(|| {
                if worker.wants_cluster_at_request() {
                    let cluster = self.cluster.get(host, &CLUSTER);
                    worker.route_decision(route, cluster)
                } else {
                    None
                }
            })
        } else {
            None
        };
        let subset = match decision {
            Some(Decision::Steer(_)) | Some(Decision::Weighted { canary: false }) => Some(STABLE),
            Some(Decision::Weighted { canary: true }) => Some(CANARY),
            None => None,
        };
        let header = worker.config().subset_header.as_str();
        match subset {
            // Setting overwrites whatever the client sent: no read needed.
            Some(subset) => {
                host.set_request_header(header, subset);
                self.route_reselected();
            }
            None => {
                let present = client.unwrap_or_else(|| host.request_header(header).is_some());
                if present {
                    host.remove_request_header(header);
                    self.route_reselected();
                }
            }
        }
    }

    /// Envoy re-selects the route after a request header changed: a route or
    /// cluster read before is stale.
    fn route_reselected(&mut self) {
        self.route = Cached::Unread;
        self.cluster = Cached::Unread;
    }

    /// Response headers (`end_of_stream`: no body follows): status, gRPC /
    /// streaming, and the score header if enabled.
    pub fn on_response_headers<H: RequestHost + ?Sized>(
        &mut self,
        worker: &Worker,
        host: &mut H,
        end_of_stream: bool,
    ) {
        self.status = host
            .response_header(":status")
            .as_deref()
            .and_then(parse_status);
        self.response_ended |= end_of_stream;
        let content_type = host.response_header("content-type");
        self.is_grpc = content_type.as_deref().is_some_and(is_grpc_content_type);
        self.streaming = self.is_grpc
            || content_type.as_deref().is_some_and(|v| {
                v.get(..17)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"text/event-stream"))
            });
        if !worker.config().score_header {
            return;
        }
        let route = self.route.get(host, &ROUTE).unwrap_or_default();
        let cluster = self.cluster.get(host, &CLUSTER).unwrap_or_default();
        if let Some(score) = worker.score_of(route, cluster) {
            host.set_response_header(SCORE_HEADER, score.to_string().as_bytes());
        }
    }

    /// A response body callback with `body_size` bytes (`end_of_stream`:
    /// the last one).
    pub fn on_response_body<H: RequestHost + ?Sized>(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
        host: &mut H,
    ) {
        self.response_ended |= end_of_stream;
        if body_size == 0 {
            return;
        }
        self.chunks = self.chunks.saturating_add(1);
        // Time is taken once per callback, and only when it is used: the
        // first byte always, later chunks of a streamed response.
        if self.first_byte_ns.is_none() {
            self.first_byte_ns = host.now_ns();
            self.last_chunk_ns = self.first_byte_ns;
        } else if self.streaming {
            self.last_chunk_ns = host.now_ns();
        }
    }

    /// The request is done: build its record and give it to the worker
    /// (returned too, for tests).
    pub fn on_log<H: RequestHost + ?Sized>(
        &mut self,
        worker: &mut Worker,
        host: &mut H,
    ) -> RequestRecord {
        // Duration on the filter's clock (as Envoy's, from the request
        // headers to the end); the property only without a start time.
        let duration_ns = match (self.request_ns, host.now_ns()) {
            (Some(start), Some(end)) => end.saturating_sub(start),
            _ => decode_int(host.property(&["request", "duration"]).as_deref()).unwrap_or(0),
        };
        let status = self
            .status
            .unwrap_or_else(|| decode_status(host.property(&["response", "code"]).as_deref()));
        // Every flag that changes a class (resets, timeouts, overflow, client
        // gone, local replies) comes with an incomplete response or a status
        // of 400 or more; a gRPC failure may hide behind a complete 200.
        let clean = self.response_ended
            && !self.is_grpc
            && self.status.is_some_and(|s| (100..400).contains(&s));
        let flags = if clean {
            0
        } else {
            decode_int(host.property(&["response", "flags"]).as_deref()).unwrap_or(0)
        };
        // A clean request faster than `fast_request_us` on the filter's own
        // clock: one attempt and no pool wait are assumed (bounds in
        // `PluginConfig::fast_request_us`); both are read otherwise.
        let fast = clean
            && self.request_ns.is_some()
            && duration_ns / 1000 < worker.config().fast_request_us;
        let attempts = if fast {
            1
        } else {
            decode_int(
                host.property(&["upstream", "request_attempt_count"])
                    .as_deref(),
            )
            .unwrap_or(0)
        };
        let record = RequestRecord::new(duration_ns / 1000, status, flags, attempts)
            .with_body_timing(
                self.request_ns,
                self.first_byte_ns,
                self.last_chunk_ns.filter(|_| self.streaming),
                self.chunks,
            );
        let mut record = if fast {
            record
        } else {
            record.with_pool_wait(
                host.property(&["upstream", "cx_pool_ready_duration"])
                    .as_deref(),
            )
        };
        // gRPC status (trailers, or headers of a trailers-only response) only
        // for a gRPC response; the code details only when they can change the class.
        let grpc_status = if self.is_grpc {
            host.property(&["response", "grpc_status"])
        } else {
            None
        };
        let details = if record.needs_details() {
            host.property(&["response", "code_details"])
        } else {
            None
        };
        record.classify(
            grpc_status.as_deref(),
            self.is_grpc,
            details.as_deref(),
            &worker.config().grpc,
        );
        let route = self.route.get(host, &ROUTE);
        let cluster = self.cluster.get(host, &CLUSTER);
        worker.record(route, cluster, &record);
        if worker.edges_enabled() {
            let peer = host.property(&["connection", "uri_san_peer_certificate"]);
            // The pseudo-headers, not `request.method` / `request.path`:
            // the same values, a header read costs far less than a property.
            let method = host.request_header(":method");
            let path = host.request_header(":path");
            worker.record_edge(
                &crate::edges::EdgeFacts {
                    peer_san: peer.as_deref(),
                    method: method.as_deref(),
                    path: path.as_deref(),
                    cluster,
                },
                &record,
            );
        }
        record
    }
}

/// A scripted host that counts hostcalls: properties and headers from maps,
/// a clock that advances `clock_step_ns` per read.
#[derive(Debug, Default)]
pub struct CountingHost {
    /// Property values by dotted path (`"xds.route_name"`).
    pub properties: hashbrown::HashMap<String, Vec<u8>>,
    /// Request headers.
    pub request_headers: hashbrown::HashMap<String, Vec<u8>>,
    /// Response headers.
    pub response_headers: hashbrown::HashMap<String, Vec<u8>>,
    /// The clock, ns.
    pub clock_ns: u64,
    /// How far the clock advances at each read, ns (`unary`: 1 µs).
    pub clock_step_ns: u64,
    /// Hostcalls made, all kinds.
    pub calls: u64,
    /// Property reads, by dotted path, in order.
    pub reads: Vec<String>,
}

impl CountingHost {
    /// A host for a unary request: `route`, `cluster`, status, 1 ms, 1 attempt.
    pub fn unary(route: &str, cluster: &str, status: u64) -> Self {
        let mut h = CountingHost {
            clock_ns: 1_000_000_000,
            clock_step_ns: 1000,
            ..Default::default()
        };
        let int = |v: u64| v.to_le_bytes().to_vec();
        for (k, v) in [
            ("xds.route_name", route.as_bytes().to_vec()),
            ("xds.cluster_name", cluster.as_bytes().to_vec()),
            ("request.duration", int(1_000_000)),
            ("response.code", int(status)),
            ("response.flags", int(0)),
            ("upstream.request_attempt_count", int(1)),
            ("upstream.cx_pool_ready_duration", int(0)),
            ("response.grpc_status", int(2)),
        ] {
            h.properties.insert(k.to_string(), v);
        }
        h.response_headers
            .insert("content-type".into(), b"application/json".to_vec());
        h.response_headers
            .insert(":status".into(), status.to_string().into_bytes());
        h.request_headers.insert(":method".into(), b"GET".to_vec());
        h.request_headers
            .insert(":path".into(), b"/v1/orders/123".to_vec());
        h
    }
}

impl RequestHost for CountingHost {
    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>> {
        self.calls += 1;
        let key = path.join(".");
        let v = self.properties.get(&key).cloned();
        self.reads.push(key);
        v
    }
    fn request_header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.calls += 1;
        self.request_headers.get(name).cloned()
    }
    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        self.calls += 1;
        self.request_headers
            .insert(name.to_string(), value.to_vec());
    }
    fn remove_request_header(&mut self, name: &str) {
        self.calls += 1;
        self.request_headers.remove(name);
    }
    fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.calls += 1;
        self.response_headers.get(name).cloned()
    }
    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        self.calls += 1;
        self.response_headers
            .insert(name.to_string(), value.to_vec());
    }
    fn now_ns(&mut self) -> Option<u64> {
        self.calls += 1;
        self.clock_ns += self.clock_step_ns;
        Some(self.clock_ns)
    }
}

/// Run one whole request (headers, response headers, one body chunk, log)
/// through a fresh [`RequestFlow`]; returns the hostcalls it made.
pub fn run_request<H: RequestHost + ?Sized>(worker: &mut Worker, host: &mut H) -> RequestFlow {
    let mut flow = RequestFlow::default();
    flow.begin(host);
    flow.on_request_headers(worker, host);
    flow.on_response_headers(worker, host, false);
    flow.on_response_body(100, true, host);
    let _ = flow.on_log(worker, host);
    flow
}
