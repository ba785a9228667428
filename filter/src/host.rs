//! The two host traits of `vigil-filter-core`, implemented over proxy-wasm
//! hostcalls: Envoy shared data and Envoy stats.
//!
//! Only hostcalls that report failures as `Result` are used here; a failing
//! call degrades (a missing value, a skipped metric), it never panics.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType, Status};
use vigil_filter_core::metrics::{Kind, MetricSink};
use vigil_filter_core::shared::{SetError, SharedStore};

/// Envoy shared data (process-wide, keyed under the plugin's `vm_id`).
pub struct EnvoyShared;

impl SharedStore for EnvoyShared {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(bytes), Some(cas))) => Some((bytes, cas)),
            // A value without a token cannot be updated safely; treat it as
            // present-but-empty with a token that will not match.
            Ok((Some(bytes), None)) => Some((bytes, 0)),
            // An empty value comes back without data: the key exists (a
            // create-only write would fail on it), its value is empty.
            Ok((None, Some(cas))) => Some((Vec::new(), cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Host),
        }
    }
}

/// Envoy stats through the proxy-wasm metric ABI (`wasmcustom.` prefix).
pub struct EnvoyMetrics;

impl MetricSink for EnvoyMetrics {
    fn define(&mut self, kind: Kind, name: &str) -> Option<u32> {
        let t = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(t, name).ok()
    }

    fn increment(&mut self, id: u32, by: u64) {
        let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }

    fn record(&mut self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
}

/// Read a property as raw bytes; `None` when missing or on any host error.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// Wall-clock nanoseconds since the Unix epoch (`None` if the host cannot say):
/// one hostcall.
pub fn now_ns() -> Option<u64> {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Wall-clock milliseconds since the Unix epoch (0 if the host cannot say).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A random id for this VM (std's hasher keys come from WASI `random_get`).
pub fn random_vm_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

/// The current HTTP request's hostcalls (one proxy-wasm call per method).
pub struct EnvoyRequest;

impl vigil_filter_core::request_path::RequestHost for EnvoyRequest {
    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>> {
        property(path)
    }

    fn request_header(&mut self, name: &str) -> Option<Vec<u8>> {
        // Bytes API: a non-UTF-8 client value must not reach a String getter.
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value));
    }

    fn remove_request_header(&mut self, name: &str) {
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
    }

    fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, Some(value));
    }

    fn now_ns(&mut self) -> Option<u64> {
        now_ns()
    }
}
