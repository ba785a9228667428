//! # vigil-filter
//!
//! The Envoy Proxy-Wasm filter: thin glue between the proxy-wasm ABI and
//! [`vigil_filter_core`]. It owns no logic of its own beyond reading
//! properties and headers, calling the core [`Worker`], and applying its
//! answer (a routing header, a response header). Everything it decides is
//! tested on the host in `vigil-filter-core`; this crate is exercised end to
//! end in real Envoy by the `tests/` crate.

mod host;

use host::{now_ms, property, random_vm_id, EnvoyMetrics, EnvoyRequest, EnvoyShared};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{ControlKind, Level, Worker};
use vigil_filter_core::pii_guard::{BodyGuard, Verdict};
use vigil_filter_core::pii_metrics::PiiMetrics;
use vigil_filter_core::request_path::RequestFlow;

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
            let now = now_ms();
            pii.flush(&mut EnvoyMetrics, now);
            for line in pii.due_summaries(now, false) {
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
            flow: RequestFlow::default(),
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
    /// The request's hostcalls and timing (each property read at most once).
    flow: RequestFlow,
}

/// The PII guard's per-request state in the glue.
struct PiiState {
    guard: BodyGuard,
    /// Most body bytes this filter asked Envoy to hold (at a paused callback).
    held: usize,
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
        let Some(route) = self.flow.route(&mut EnvoyRequest) else {
            return;
        };
        let Some(policy) = pii.route(route) else {
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
        let now = self
            .flow
            .request_ns()
            .map_or_else(now_ms, |ns| ns / 1_000_000);
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
        self.flow.begin(&mut EnvoyRequest);
        let shared = Rc::clone(&self.worker);
        let Ok(mut slot) = shared.try_borrow_mut() else {
            return Action::Continue;
        };
        let Some(worker) = slot.as_mut() else {
            return Action::Continue;
        };
        self.start_pii(worker, eos);
        self.flow.on_request_headers(worker, &mut EnvoyRequest);
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, eos: bool) -> Action {
        self.pii_body(body_size, eos)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, eos: bool) -> Action {
        let Ok(slot) = self.worker.try_borrow() else {
            return Action::Continue;
        };
        if let Some(worker) = slot.as_ref() {
            self.flow
                .on_response_headers(worker, &mut EnvoyRequest, eos);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, eos: bool) -> Action {
        self.flow
            .on_response_body(body_size, eos, &mut EnvoyRequest);
        Action::Continue
    }

    fn on_log(&mut self) {
        let Ok(mut slot) = self.worker.try_borrow_mut() else {
            return;
        };
        if let Some(worker) = slot.as_mut() {
            let _ = self.flow.on_log(worker, &mut EnvoyRequest);
        }
    }
}
