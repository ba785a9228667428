//! # vigil-bench-noop
//!
//! The floor for any Proxy-Wasm filter: a root context and an HTTP context per
//! request (so Envoy creates the per-request context and calls every callback,
//! as it does for Vigil), each callback answering `Continue` at once. Built
//! with the same SDK version, release profile and target as `vigil-filter`, so
//! `vigil-bench` can report Vigil's cost as a ratio to this module.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

#[allow(unsafe_code)] // the SDK's entry-point macro exports `_initialize`
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::NoopRoot)
        });
    }}
}

/// Root context: accepts any configuration, no tick.
struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request context: every callback continues.
struct NoopHttp;

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
        Action::Continue
    }

    fn on_log(&mut self) {}
}
