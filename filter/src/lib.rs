//! # vigil-filter
//!
//! The Envoy Proxy-Wasm filter: thin glue between the proxy-wasm ABI and
//! [`vigil_filter_core`]. It owns no logic of its own beyond reading
//! properties and headers, calling the core [`Worker`], and applying its
//! answer (a routing header, a response header). Everything it decides is
//! tested on the host in `vigil-filter-core`; this crate is exercised end to
//! end in real Envoy by the `tests/` crate.

mod host;

use host::{now_ms, property, random_vm_id, EnvoyMetrics, EnvoyShared};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{Level, Worker};
use vigil_filter_core::request::RequestRecord;

/// Value of the routing header that sends a request to the stable version.
const STABLE: &[u8] = b"stable";
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

/// Root context: configuration and ticks.
struct VigilRoot {
    worker: SharedWorker,
    me: u64,
}

impl VigilRoot {
    fn new() -> Self {
        VigilRoot {
            worker: Rc::new(RefCell::new(None)),
            me: random_vm_id(),
        }
    }
}

impl Context for VigilRoot {}

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
                    "vigil: configured: mode={:?}, tick={} ms, max_series={}, canaries={}",
                    cfg.mode,
                    cfg.tick_ms,
                    cfg.max_series,
                    cfg.canaries.len()
                );
                let Ok(mut slot) = self.worker.try_borrow_mut() else {
                    return false;
                };
                *slot = Some(Worker::new(cfg, self.me));
                hostcalls::set_tick_period(tick).is_ok()
            }
            Err(e) => {
                log::error!("vigil: invalid plugin configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Ok(mut slot) = self.worker.try_borrow_mut() else {
            return;
        };
        let Some(worker) = slot.as_mut() else {
            return;
        };
        let mut log = |level: Level, msg: &str| match level {
            Level::Info => log::info!("{msg}"),
            Level::Warn => log::warn!("{msg}"),
        };
        worker.on_tick(now_ms(), &EnvoyShared, &mut EnvoyMetrics, &mut log);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(VigilHttp {
            worker: Rc::clone(&self.worker),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request context.
struct VigilHttp {
    worker: SharedWorker,
}

impl Context for VigilHttp {}

impl HttpContext for VigilHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
        let Ok(mut slot) = self.worker.try_borrow_mut() else {
            return Action::Continue;
        };
        let Some(worker) = slot.as_mut() else {
            return Action::Continue;
        };
        let header = worker.config().subset_header.clone();
        // Bytes API: a non-UTF-8 client value must not reach a String getter.
        let client_value = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, &header)
            .ok()
            .flatten();
        if client_value.is_some() && worker.config().trust_client_subset_header {
            return Action::Continue;
        }
        // Read the route before touching headers: changing a header clears
        // Envoy's route cache.
        let steer = if worker.wants_route_at_request() {
            property(&["xds", "route_name"]).and_then(|route| worker.steer_decision(&route))
        } else {
            None
        };
        if steer.is_some() {
            if client_value.as_deref() != Some(STABLE) {
                let _ = hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    &header,
                    Some(STABLE),
                );
            }
        } else if client_value.is_some() {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, &header);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
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

    fn on_log(&mut self) {
        let Ok(mut slot) = self.worker.try_borrow_mut() else {
            return;
        };
        let Some(worker) = slot.as_mut() else {
            return;
        };
        let record = RequestRecord::from_properties(
            property(&["request", "duration"]).as_deref(),
            property(&["response", "code"]).as_deref(),
            property(&["response", "flags"]).as_deref(),
            property(&["upstream", "request_attempt_count"]).as_deref(),
        );
        let route = property(&["xds", "route_name"]);
        let cluster = property(&["xds", "cluster_name"]);
        worker.record(route.as_deref(), cluster.as_deref(), &record);
    }
}
