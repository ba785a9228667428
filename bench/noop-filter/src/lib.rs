//! # vigil-bench-noop
//!
//! The floor for any Proxy-Wasm filter: a root context and an HTTP context per
//! request (so Envoy creates the per-request context and calls every callback,
//! as it does for Vigil), each callback answering `Continue` at once. Built
//! with the same SDK version, release profile and target as `vigil-filter`, so
//! `vigil-bench` can report Vigil's cost as a ratio to this module.
//!
//! **Priced mode** (the bench's `profile` section): when the plugin
//! configuration contains `"bench_mimic"`, each request makes exactly the
//! hostcalls Vigil's steer mode makes for a healthy unary request
//! (`vigil-bench --only hostcalls` lists them), in the same callbacks, and
//! does nothing with the answers. Its cost over the plain no-op is the price
//! of those hostcalls; what Vigil costs beyond it is Vigil's own code.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

#[allow(unsafe_code)] // the SDK's entry-point macro exports `_initialize`
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::NoopRoot {
                mimic: super::Mimic::default(),
                token: None,
            })
        });
    }}
}

/// The marker in the plugin configuration that turns on priced mode; the
/// configuration's text then says which groups of hostcalls to make:
/// `time` (the two clock reads), `headers` (the routing header and the
/// response content type), `properties` (the two property reads of a fast
/// request), `slow` (the four of a request slower than `fast_request_us`);
/// `steer` means the first three.
const MIMIC_MARKER: &[u8] = b"\"bench_mimic\"";

/// Which hostcall groups priced mode makes.
#[derive(Clone, Copy, Default)]
struct Mimic {
    time: bool,
    headers: bool,
    properties: bool,
    /// Only the route property (`route`): prices one property read.
    route_only: bool,
    /// `slow`: the property reads of a request slower than
    /// `fast_request_us` (attempt count and pool wait too).
    slow: bool,
    /// `expr`: instead of the property reads, the route, cluster, attempt
    /// count and pool wait as one CEL expression through Envoy's
    /// `expr_evaluate` foreign function in `on_log` (prices a batched read).
    expr: bool,
}

impl Mimic {
    fn from_config(config: &[u8]) -> Self {
        // The groups are read from the marker's value only (the rest of the
        // configuration is Vigil's and says "steer" too).
        let Some(at) = config
            .windows(MIMIC_MARKER.len())
            .position(|w| w == MIMIC_MARKER)
        else {
            return Mimic::default();
        };
        let value = config.get(at + MIMIC_MARKER.len()..).unwrap_or_default();
        let value = value.get(..value.len().min(48)).unwrap_or_default();
        let has = |needle: &[u8]| value.windows(needle.len()).any(|w| w == needle);
        let all = has(b"steer");
        Mimic {
            time: all || has(b"time"),
            headers: all || has(b"headers"),
            properties: all || has(b"properties"),
            route_only: has(b"route"),
            slow: has(b"slow"),
            expr: has(b"expr"),
        }
    }
}

/// The properties Vigil's `on_log` reads for a healthy unary request, in
/// order (duration, status and flags come from its own clock and headers;
/// the attempt count and pool wait only for a request slower than
/// `fast_request_us`, which the bench's zero-delay upstream never is).
const LOG_PROPERTIES: [[&str; 2]; 1] = [["xds", "cluster_name"]];

/// The two more a slower request reads (`slow` group: priced with them).
const SLOW_LOG_PROPERTIES: [[&str; 2]; 2] = [
    ["upstream", "request_attempt_count"],
    ["upstream", "cx_pool_ready_duration"],
];

/// The `expr` group's expression: every value of the four reads in one
/// string (`<attempts> <pool wait>s <route>\0<cluster>`).
const BATCHED_READ: &[u8] = b"string(upstream.request_attempt_count) + ' ' + string(upstream.cx_pool_ready_duration) + ' ' + xds.route_name + '\\x00' + xds.cluster_name";

/// Root context: accepts any configuration, no tick.
struct NoopRoot {
    /// Priced mode: which of Vigil's per-request hostcalls to make.
    mimic: Mimic,
    /// The `expr` group's compiled expression (`expr_create`'s token).
    token: Option<u32>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.mimic = self
            .get_plugin_configuration()
            .map(|c| Mimic::from_config(&c))
            .unwrap_or_default();
        if self.mimic.expr {
            self.token =
                proxy_wasm::hostcalls::call_foreign_function("expr_create", Some(BATCHED_READ))
                    .ok()
                    .flatten()
                    .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
                    .map(u32::from_le_bytes);
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp {
            token: self.token,
            mimic: self.mimic,
            first_byte_seen: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request context: every callback continues (after Vigil's hostcalls
/// in priced mode).
struct NoopHttp {
    token: Option<u32>,
    mimic: Mimic,
    first_byte_seen: bool,
}

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
        if self.mimic.time {
            let _ = self.get_current_time();
        }
        if self.mimic.headers {
            let _ = self.get_http_request_header("x-vigil-subset");
        }
        if self.mimic.properties || self.mimic.route_only || self.mimic.slow {
            let _ = self.get_property(vec!["xds", "route_name"]);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
        if self.mimic.headers {
            let _ = self.get_http_response_header(":status");
            let _ = self.get_http_response_header("content-type");
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _eos: bool) -> Action {
        if self.mimic.time && body_size > 0 && !self.first_byte_seen {
            self.first_byte_seen = true;
            let _ = self.get_current_time();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.mimic.time {
            let _ = self.get_current_time();
        }
        if let Some(token) = self.token {
            let _ = proxy_wasm::hostcalls::call_foreign_function(
                "expr_evaluate",
                Some(&token.to_le_bytes()),
            );
        }
        if self.mimic.properties || self.mimic.slow {
            for path in LOG_PROPERTIES {
                let _ = self.get_property(path.to_vec());
            }
        }
        if self.mimic.slow {
            for path in SLOW_LOG_PROPERTIES {
                let _ = self.get_property(path.to_vec());
            }
        }
    }
}
