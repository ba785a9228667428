//! # vigil-filter
//!
//! The Envoy Proxy-Wasm filter: thin glue between the proxy-wasm ABI and
//! [`vigil_filter_core`]. It owns no logic of its own beyond reading
//! properties and headers, calling the core [`Worker`], and applying its
//! answer (a routing header, a response header). Everything it decides is
//! tested on the host in `vigil-filter-core`; this crate is exercised end to
//! end in real Envoy by the `tests/` crate.

mod host;

use host::{now_ms, now_ns, property, random_vm_id, EnvoyMetrics, EnvoyShared};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{ControlKind, Decision, Level, Worker};
use vigil_filter_core::pii_guard::{BodyGuard, Verdict};
use vigil_filter_core::pii_metrics::PiiMetrics;
use vigil_filter_core::request::RequestRecord;

/// Value of the routing header that sends a request to the stable version.
const STABLE: &[u8] = b"stable";
/// Value of the routing header that sends a request to the canary version.
const CANARY: &[u8] = b"canary";
/// Response header carrying the series' score, when enabled.
const SCORE_HEADER: &str = "x-vigil-score";

#[allow(unsafe_code)] // the SDK's entry-point macro exports `_initialize`
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::VigilRoot::new())
        });
    }}
}

type SharedWorker = Rc<RefCell<Option<Worker>>>;
/// Metric ids and audit windows of the PII guard, shared by the worker's HTTP contexts.
type SharedPiiMetrics = Rc<RefCell<PiiMetrics>>;

/// Root context: configuration and ticks.
struct VigilRoot {
    worker: SharedWorker,
    pii_metrics: SharedPiiMetrics,
    me: u64,
    /// Control-service calls in flight, by token.
    in_flight: HashMap<u32, ControlKind>,
}

impl VigilRoot {
    fn new() -> Self {
        VigilRoot {
            worker: Rc::new(RefCell::new(None)),
            pii_metrics: Rc::new(RefCell::new(PiiMetrics::default())),
            me: random_vm_id(),
            in_flight: HashMap::new(),
        }
    }
}

fn engine_log(level: Level, msg: &str) {
    match level {
        Level::Info => log::info!("{msg}"),
        Level::Warn => log::warn!("{msg}"),
    }
}

impl VigilRoot {
    /// Dispatch the calls the scorer queued for the control service.
    fn dispatch_control_calls(&mut self, worker: &mut Worker) {
        let calls = worker.take_control_calls();
        let Some(control) = worker.config().control.clone() else {
            return;
        };
        let auth = control.token.as_ref().map(|t| format!("Bearer {t}"));
        for call in calls {
            let mut headers = vec![
                (":method", call.method),
                (":path", call.path.as_str()),
                (":authority", control.authority.as_str()),
            ];
            if call.body.is_some() {
                headers.push(("content-type", "application/json"));
                if let Some(a) = &auth {
                    headers.push(("authorization", a.as_str()));
                }
            }
            match hostcalls::dispatch_http_call(
                &control.cluster,
                headers,
                call.body.as_deref(),
                vec![],
                Duration::from_millis(control.timeout_ms),
            ) {
                Ok(token) => {
                    self.in_flight.insert(token, call.kind);
                }
                Err(_) => worker.on_control_response(
                    call.kind,
                    None,
                    b"",
                    now_ms(),
                    &EnvoyShared,
                    &mut engine_log,
                ),
            }
        }
        // Calls the host never answers must not accumulate.
        if self.in_flight.len() > 64 {
            self.in_flight.clear();
        }
    }
}

impl Context for VigilRoot {
    /// The plugin is being removed (a configuration update replaced it, or
    /// its listener went away): count what this configuration still holds
    /// and give the scorer lease up (see `Worker::on_done`).
    fn on_done(&mut self) -> bool {
        if let Ok(mut slot) = self.worker.try_borrow_mut() {
            if let Some(worker) = slot.as_mut() {
                worker.on_done(&EnvoyShared, &mut EnvoyMetrics);
                log::info!(
                    "vigil: configuration identity={:016x} done: last counts flushed",
                    worker.config().identity
                );
            }
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(kind) = self.in_flight.remove(&token_id) else {
            return;
        };
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u16>().ok());
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let Ok(mut slot) = self.worker.try_borrow_mut() else {
            return;
        };
        if let Some(worker) = slot.as_mut() {
            worker.on_control_response(
                kind,
                status,
                &body,
                now_ms(),
                &EnvoyShared,
                &mut engine_log,
            );
        }
    }
}

impl RootContext for VigilRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        match PluginConfig::parse(&bytes) {
            Ok(cfg) => {
                let tick = Duration::from_millis(cfg.tick_ms);
                log::info!(
                    "vigil: configured: identity={:016x} (shared-data keys {}*), mode={:?}, tick={} ms, max_series={}, series_idle_s={}, canaries={}",
                    cfg.identity,
                    vigil_filter_core::keys::Keys::new(cfg.identity).prefix(),
                    cfg.mode,
                    cfg.tick_ms,
                    cfg.max_series,
                    cfg.series_idle_ms / 1000,
                    cfg.canaries.len()
                );
                let Ok(mut slot) = self.worker.try_borrow_mut() else {
                    return false;
                };
                let mut worker = Worker::new(cfg, self.me);
                let text = |path: &[&str]| {
                    property(path).map(|b| String::from_utf8_lossy(&b).into_owned())
                };
                // Envoy's `xds.node` attribute (the bootstrap's node: Istio
                // and Kuma set id and metadata there).
                if let Some(id) = vigil_filter_core::control::sidecar_identity(
                    text(&["xds", "node", "id"]).as_deref(),
                    text(&["xds", "node", "metadata", "NAME"]).as_deref(),
                    text(&["xds", "node", "metadata", "NAMESPACE"]).as_deref(),
                ) {
                    worker.set_sidecar_identity(&id);
                }
                if worker.config().edges.enabled {
                    let meta = |key: &[&str]| {
                        let mut path = vec!["xds", "node", "metadata"];
                        path.extend_from_slice(key);
                        text(&path).filter(|s| !s.is_empty())
                    };
                    worker.set_node_facts(&vigil_filter_core::edges::NodeFacts {
                        app: meta(&["LABELS", "app"])
                            .or_else(|| meta(&["LABELS", "app.kubernetes.io/name"])),
                        version: meta(&["LABELS", "version"]),
                        namespace: meta(&["NAMESPACE"]),
                        service_account: meta(&["SERVICE_ACCOUNT"]),
                    });
                }
                if worker.config().control.is_some() {
                    log::info!(
                        "vigil: reporting to the control service as sidecar '{}'",
                        worker.sidecar_identity()
                    );
                }
                *slot = Some(worker);
                hostcalls::set_tick_period(tick).is_ok()
            }
            Err(e) => {
                log::error!("vigil: invalid plugin configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Ok(mut pii) = self.pii_metrics.try_borrow_mut() {
            for line in pii.due_summaries(now_ms(), false) {
                log::info!("{line}");
            }
        }
        let worker = Rc::clone(&self.worker);
        let Ok(mut slot) = worker.try_borrow_mut() else {
            return;
        };
        let Some(worker) = slot.as_mut() else {
            return;
        };
        worker.on_tick(now_ms(), &EnvoyShared, &mut EnvoyMetrics, &mut engine_log);
        self.dispatch_control_calls(worker);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(VigilHttp {
            worker: Rc::clone(&self.worker),
            pii_metrics: Rc::clone(&self.pii_metrics),
            pii: None,
            is_grpc: false,
            streaming: false,
            request_ns: None,
            first_byte_ns: None,
            last_chunk_ns: None,
            chunks: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request context.
struct VigilHttp {
    worker: SharedWorker,
    pii_metrics: SharedPiiMetrics,
    /// Body inspection, on routes the `pii` section lists (until decided).
    pii: Option<PiiState>,
    /// The response is gRPC (`content-type: application/grpc…`): one that
    /// ends without a gRPC status is a truncated stream.
    is_grpc: bool,
    /// A streamed response (`text/event-stream`, gRPC): every body chunk's
    /// time is taken (once per callback) for the inter-chunk gap.
    streaming: bool,
    /// When the request headers arrived (ns).
    request_ns: Option<u64>,
    /// When the first response body byte arrived (ns).
    first_byte_ns: Option<u64>,
    /// When the last streamed body chunk arrived (ns).
    last_chunk_ns: Option<u64>,
    /// Response body chunks (callbacks with bytes; no body is copied).
    chunks: u64,
}

/// The PII guard's per-request state in the glue.
struct PiiState {
    guard: BodyGuard,
    /// Most body bytes this filter asked Envoy to hold (at a paused callback).
    held: usize,
}

/// True for a gRPC content type (`application/grpc`, `application/grpc+proto`, ...).
fn is_grpc_content_type(value: &[u8]) -> bool {
    value
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
}

impl Context for VigilHttp {}

impl VigilHttp {
    /// Start body inspection if the route is in the `pii` section.
    ///
    /// The headers are never held: Envoy turns a paused header callback into
    /// "stop everything", so the body would never arrive. They go upstream at
    /// once; the body is held in the body callbacks instead. A route that may
    /// change the body's length therefore drops `content-length` here, and
    /// the upstream request goes chunked.
    fn start_pii(&mut self, worker: &Worker, eos: bool) {
        let pii = &worker.config().pii;
        if pii.routes.is_empty() || eos {
            return;
        }
        let Some(route) = property(&["xds", "route_name"]) else {
            return;
        };
        let Some(policy) = pii.route(&route) else {
            return;
        };
        let content_type =
            hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "content-type")
                .ok()
                .flatten();
        let guard = BodyGuard::new(policy, content_type.as_deref());
        if guard.may_change_length() {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "content-length");
        }
        self.pii = Some(PiiState { guard, held: 0 });
    }

    /// One request-body callback on an inspected route.
    fn pii_body(&mut self, body_size: usize, eos: bool) -> Action {
        let Some(state) = self.pii.as_mut() else {
            return Action::Continue;
        };
        let guard = &mut state.guard;
        if !guard.holds_body() {
            // Detect: stream through, inspecting up to max_inspect_bytes.
            if guard.inspected() < guard.policy().max_inspect_bytes {
                let chunk = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                guard.feed(&chunk);
            } else if body_size > 0 {
                guard.overflow();
            }
            if eos {
                guard.end();
                self.finish_pii(&Verdict::Pass, 0);
            }
            return Action::Continue;
        }
        if !eos && guard.should_hold(body_size) {
            state.held = state.held.max(body_size);
            return Action::Pause;
        }
        // Decide on what is held: the whole body, or its first max_inspect_bytes.
        let take = body_size.min(guard.policy().max_inspect_bytes);
        let held = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, take)
            .ok()
            .flatten()
            .unwrap_or_default();
        let verdict = guard.decide(&held, !eos || body_size > take);
        let mut action = Action::Continue;
        match &verdict {
            Verdict::Block { status, body } => {
                hostcalls::send_http_response(
                    *status,
                    vec![("content-type", "application/json")],
                    Some(body),
                )
                .ok();
                action = Action::Pause;
            }
            Verdict::Replace { len, body } => {
                // content-length was dropped at the headers unless the mask keeps lengths.
                let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, *len, body);
            }
            Verdict::Pass => {}
        }
        let held = state.held;
        self.finish_pii(&verdict, held);
        action
    }

    /// Count and summarise the request's findings, then drop the guard.
    fn finish_pii(&mut self, verdict: &Verdict, held: usize) {
        let Some(state) = self.pii.take() else {
            return;
        };
        // The request's start time stands in for now: no extra hostcall.
        let now = self.request_ns.map_or_else(now_ms, |ns| ns / 1_000_000);
        if let Ok(mut metrics) = self.pii_metrics.try_borrow_mut() {
            state
                .guard
                .record(&mut metrics, &mut EnvoyMetrics, verdict, held, now);
            for line in metrics.due_summaries(now, false) {
                log::info!("{line}");
            }
        }
        // Detected and redacted requests are summarised per route and second
        // (above, and at ticks); a refused request is logged on its own.
        if matches!(verdict, Verdict::Block { .. }) {
            if let Some(line) = state.guard.summary(verdict) {
                log::info!("{line}");
            }
        }
        if let Ok(mut slot) = self.worker.try_borrow_mut() {
            if let Some(worker) = slot.as_mut().filter(|w| w.config().control.is_some()) {
                worker.record_pii(&state.guard.counts(verdict));
            }
        }
    }
}

impl HttpContext for VigilHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, eos: bool) -> Action {
        self.request_ns = now_ns();
        let shared = Rc::clone(&self.worker);
        let Ok(mut slot) = shared.try_borrow_mut() else {
            return Action::Continue;
        };
        let Some(worker) = slot.as_mut() else {
            return Action::Continue;
        };
        self.start_pii(worker, eos);
        let header = worker.config().subset_header.clone();
        // Bytes API: a non-UTF-8 client value must not reach a String getter.
        let client_value = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, &header)
            .ok()
            .flatten();
        if client_value.is_some() && worker.config().trust_client_subset_header {
            return Action::Continue;
        }
        // Read the route (which makes Envoy select it and its cluster) before
        // touching headers: changing a header clears Envoy's route cache. The
        // selected cluster says which canary the request belongs to, whatever
        // the route is named.
        let decision = if worker.wants_route_at_request() {
            let route = property(&["xds", "route_name"]).unwrap_or_default();
            let cluster = if worker.wants_cluster_at_request() {
                property(&["xds", "cluster_name"])
            } else {
                None
            };
            worker.route_decision(&route, cluster.as_deref())
        } else {
            None
        };
        let subset = match decision {
            Some(Decision::Steer(_)) | Some(Decision::Weighted { canary: false }) => Some(STABLE),
            Some(Decision::Weighted { canary: true }) => Some(CANARY),
            None => None,
        };
        if let Some(subset) = subset {
            if client_value.as_deref() != Some(subset) {
                let _ = hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    &header,
                    Some(subset),
                );
            }
        } else if client_value.is_some() {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, &header);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, eos: bool) -> Action {
        self.pii_body(body_size, eos)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
        let content_type =
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, "content-type")
                .ok()
                .flatten();
        self.is_grpc = content_type.as_deref().is_some_and(is_grpc_content_type);
        self.streaming = self.is_grpc
            || content_type.as_deref().is_some_and(|v| {
                v.get(..17)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"text/event-stream"))
            });
        let Ok(slot) = self.worker.try_borrow() else {
            return Action::Continue;
        };
        let Some(worker) = slot.as_ref() else {
            return Action::Continue;
        };
        if !worker.config().score_header {
            return Action::Continue;
        }
        let route = property(&["xds", "route_name"]).unwrap_or_default();
        let cluster = property(&["xds", "cluster_name"]).unwrap_or_default();
        if let Some(score) = worker.score_of(&route, &cluster) {
            let _ = hostcalls::set_map_value_bytes(
                MapType::HttpResponseHeaders,
                SCORE_HEADER,
                Some(score.to_string().as_bytes()),
            );
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _eos: bool) -> Action {
        if body_size == 0 {
            return Action::Continue;
        }
        self.chunks = self.chunks.saturating_add(1);
        // Time is taken once per callback, and only when it is used: the
        // first byte always, later chunks of a streamed response.
        if self.first_byte_ns.is_none() {
            self.first_byte_ns = now_ns();
            self.last_chunk_ns = self.first_byte_ns;
        } else if self.streaming {
            self.last_chunk_ns = now_ns();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Ok(mut slot) = self.worker.try_borrow_mut() else {
            return;
        };
        let Some(worker) = slot.as_mut() else {
            return;
        };
        let mut record = RequestRecord::from_properties(
            property(&["request", "duration"]).as_deref(),
            property(&["response", "code"]).as_deref(),
            property(&["response", "flags"]).as_deref(),
            property(&["upstream", "request_attempt_count"]).as_deref(),
        )
        .with_body_timing(
            self.request_ns,
            self.first_byte_ns,
            self.last_chunk_ns.filter(|_| self.streaming),
            self.chunks,
        )
        .with_pool_wait(property(&["upstream", "cx_pool_ready_duration"]).as_deref());
        // gRPC status (trailers, or headers of a trailers-only response);
        // the code details only when they can change the class.
        let grpc_status = property(&["response", "grpc_status"]);
        let details = if record.needs_details() {
            property(&["response", "code_details"])
        } else {
            None
        };
        record.classify(
            grpc_status.as_deref(),
            self.is_grpc,
            details.as_deref(),
            &worker.config().grpc,
        );
        let route = property(&["xds", "route_name"]);
        let cluster = property(&["xds", "cluster_name"]);
        worker.record(route.as_deref(), cluster.as_deref(), &record);
        if worker.edges_enabled() {
            let peer = property(&["connection", "uri_san_peer_certificate"]);
            let method = property(&["request", "method"]);
            let path = property(&["request", "path"]);
            worker.record_edge(
                &vigil_filter_core::edges::EdgeFacts {
                    peer_san: peer.as_deref(),
                    method: method.as_deref(),
                    path: path.as_deref(),
                    cluster: cluster.as_deref(),
                },
                &record,
            );
        }
    }
}
