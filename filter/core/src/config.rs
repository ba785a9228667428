//! Plugin configuration: the JSON an operator writes (Envoy `configuration`
//! StringValue, Istio `pluginConfig`), parsed and validated once at plugin
//! start.
//!
//! Why hand-written and not `#[derive(Deserialize)]`: every rejection must name
//! the exact field (`canaries[0].stable_cluster: missing`), so that Envoy's log
//! tells the operator what to fix. Unknown fields are rejected at every level.
//! The schema is documented in `filter/README.md`; keep the two in step.

use crate::canary::parse_canary;
pub use crate::canary::{CanarySpec, Naming};
use crate::outcome::{grpc_code, GrpcPolicy};
use serde_json::{Map, Value};
use std::fmt;
use vigil_scorer::model::Model;

/// What the filter does with its verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Score and export only; routing is never touched.
    Shadow,
    /// Also steer a managed canary's route to stable while the canary is critical.
    Steer,
}

/// Steering hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteeringConfig {
    /// How long a route stays steered to stable after the canary was last critical.
    pub hold_ms: u64,
    /// Upper bound of the hold after repeated flaps (the hold doubles when a
    /// canary turns critical again soon after being released).
    pub max_hold_ms: u64,
}

/// Where the companion control service is, and how the scorer talks to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Envoy cluster that reaches the control service.
    pub cluster: String,
    /// `:authority` of calls to it.
    pub authority: String,
    /// Path reports are POSTed to.
    pub reports_path: String,
    /// Path routing weights are read from.
    pub routing_path: String,
    /// Per-call timeout.
    pub timeout_ms: u64,
    /// How long the last weights are kept when the service cannot be reached;
    /// then the filter falls back to the static routes.
    pub weights_ttl_ms: u64,
    /// Bearer token for the report writes (never logged).
    pub token: Option<String>,
}

/// The validated plugin configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// Shadow or steer.
    pub mode: Mode,
    /// Tick period in milliseconds.
    pub tick_ms: u64,
    /// Upper bound on series (route × cluster) tracked; the rest go to an overflow series.
    pub max_series: usize,
    /// The routing header Vigil sets (lowercase).
    pub subset_header: String,
    /// Keep a client-sent routing header instead of removing it.
    pub trust_client_subset_header: bool,
    /// Add `x-vigil-score` to responses.
    pub score_header: bool,
    /// Lease time-to-live in ticks: how long a silent scorer keeps the lease.
    pub lease_ttl_ticks: u64,
    /// Test hook (`lease_release_after_s`, 0 = never): the first worker of the
    /// process to hold the scorer lease this long stops scoring for good, as
    /// if its ticks had stalled, so another worker takes the lease over once
    /// it expires. For lease-move tests in real Envoy.
    pub lease_release_after_ms: u64,
    /// Bounded compare-and-swap retries per shared-data update.
    pub cas_retries: u32,
    /// Requests that complete cleanly (whole response, status below 400,
    /// not gRPC) within this many µs on the filter's own clock are recorded
    /// without reading the upstream attempt count and connection-pool wait
    /// (two property reads, the dearest hostcalls; `fast_request_us`, 0 =
    /// always read). Cost of skipping, bounded: such a request's latency may
    /// include up to this much pool wait, and a retry hidden inside it is not
    /// counted — which needs a failed attempt and a backoff that both fit in
    /// it (Envoy's default backoff draws the first retry's wait from
    /// [0, 25 ms): at 2 ms, at most 8 % of such retries). See
    /// [`crate::request_path`].
    pub fast_request_us: u64,
    /// Managed canaries.
    pub canaries: Vec<CanarySpec>,
    /// After this much traffic, a canary whose clusters were never seen is
    /// reported (`vigil_canary_unmatched`, one warning).
    pub unmatched_after_ms: u64,
    /// Steering hysteresis.
    pub steering: SteeringConfig,
    /// Scorer model (the compiled-in default unless overridden).
    pub model: Model,
    /// The control service, when one is used.
    pub control: Option<ControlConfig>,
    /// PII guard per route (`pii` section; see [`crate::pii_config`]).
    pub pii: crate::pii_config::PiiConfig,
    /// Which gRPC status codes are server faults (`grpc_server_error_codes`).
    pub grpc: GrpcPolicy,
    /// Steer a canary whose only critical signal is throttling (default:
    /// throttling warns, never steers).
    pub steer_on_throttle: bool,
    /// Observed edges (`edges` section; see [`crate::edges`]).
    pub edges: crate::edges::EdgesConfig,
    /// A series with no request for this long leaves the series registry
    /// (and every worker's local table), freeing its place (`series_idle_s`).
    pub series_idle_ms: u64,
    /// Optional instance name (`instance`): part of the configuration
    /// identity, so two otherwise identical configurations in one Envoy can
    /// be kept apart.
    pub instance: Option<String>,
    /// Configuration identity: a hash of the validated configuration document
    /// (canonical JSON, keys sorted). Every shared-data key of this
    /// configuration is namespaced by it (see [`crate::keys`]).
    pub identity: u64,
}

/// 64-bit FNV-1a: the configuration identity hash (stable across builds and
/// platforms; not a security boundary).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Identity of the empty configuration (`{}`, every default).
fn default_identity() -> u64 {
    fnv1a64(b"{}")
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            mode: Mode::Shadow,
            tick_ms: 1000,
            max_series: 1024,
            subset_header: "x-vigil-subset".to_string(),
            trust_client_subset_header: false,
            score_header: false,
            lease_ttl_ticks: 3,
            lease_release_after_ms: 0,
            cas_retries: 8,
            fast_request_us: 2000,
            canaries: Vec::new(),
            unmatched_after_ms: 30_000,
            steering: SteeringConfig {
                hold_ms: 30_000,
                max_hold_ms: 300_000,
            },
            model: Model::default(),
            control: None,
            pii: crate::pii_config::PiiConfig::default(),
            grpc: GrpcPolicy::default(),
            steer_on_throttle: false,
            edges: crate::edges::EdgesConfig::default(),
            series_idle_ms: 600_000,
            instance: None,
            identity: default_identity(),
        }
    }
}

/// A rejected configuration: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `canaries[0].stable_cluster`; empty for the document itself.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn err(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to one JSON object, remembering its path and which keys were read.
pub(crate) struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: &'static [&'static str],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(
        path: &str,
        value: &'a Value,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        let map = value.as_object().ok_or_else(|| {
            err(
                path,
                format!("must be a JSON object, got {}", type_name(value)),
            )
        })?;
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                return Err(err(
                    self_path(path, key),
                    format!("unknown field (known fields: {})", known.join(", ")),
                ));
            }
        }
        Ok(Fields {
            path: path.to_string(),
            map,
            known,
        })
    }

    pub(crate) fn path(&self, key: &str) -> String {
        debug_assert!(self.known.contains(&key));
        self_path(&self.path, key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(err(
                self.path(key),
                format!("must be true or false, got {}", type_name(v)),
            )),
        }
    }

    pub(crate) fn uint(
        &self,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let n = match v {
            Value::Number(n) => n.as_u64().ok_or_else(|| {
                err(
                    self.path(key),
                    format!("must be a whole number from {min} to {max}, got {n}"),
                )
            })?,
            other => {
                return Err(err(
                    self.path(key),
                    format!(
                        "must be a whole number from {min} to {max}, got {}",
                        type_name(other)
                    ),
                ))
            }
        };
        if n < min || n > max {
            return Err(err(
                self.path(key),
                format!("must be from {min} to {max}, got {n}"),
            ));
        }
        Ok(n)
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(err(self.path(key), "must not be empty"))
            }
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(err(
                self.path(key),
                format!("must be a string, got {}", type_name(v)),
            )),
        }
    }

    pub(crate) fn required_string(&self, key: &str) -> Result<&'a str, ConfigError> {
        self.string(key)?
            .ok_or_else(|| err(self.path(key), "missing (required)"))
    }
}

fn self_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

const TOP_FIELDS: &[&str] = &[
    "mode",
    "tick_ms",
    "max_series",
    "subset_header",
    "trust_client_subset_header",
    "score_header",
    "lease_ttl_ticks",
    "lease_release_after_s",
    "cas_retries",
    "fast_request_us",
    "canaries",
    "unmatched_after_s",
    "steering",
    "model",
    "control",
    "pii",
    "grpc_server_error_codes",
    "steer_on_throttle",
    "edges",
    "series_idle_s",
    "instance",
];
const CONTROL_FIELDS: &[&str] = &[
    "cluster",
    "authority",
    "reports_path",
    "routing_path",
    "timeout_ms",
    "weights_ttl_s",
    "token",
];
const STEERING_FIELDS: &[&str] = &["hold_s", "max_hold_s"];

/// Upper bound on `max_series`: every series is a permanent Envoy stat.
pub const MAX_SERIES_LIMIT: u64 = 100_000;

impl PluginConfig {
    /// Parse and validate the plugin configuration bytes. Empty input (no
    /// `configuration` at all) means every default.
    pub fn parse(bytes: &[u8]) -> Result<PluginConfig, ConfigError> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| err("", format!("not valid UTF-8 ({e})")))?;
        if text.trim().is_empty() {
            return Ok(PluginConfig::default());
        }
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            err(
                "",
                format!("not valid JSON ({e}); expected a JSON object of settings"),
            )
        })?;
        Self::from_value(&doc)
    }

    /// Validate an already-parsed JSON document.
    pub fn from_value(doc: &Value) -> Result<PluginConfig, ConfigError> {
        let defaults = PluginConfig::default();
        let f = Fields::new("", doc, TOP_FIELDS)?;

        let mode = match f.string("mode")? {
            None | Some("shadow") => Mode::Shadow,
            Some("steer") => Mode::Steer,
            Some(other) => {
                return Err(err(
                    "mode",
                    format!("must be \"shadow\" or \"steer\", got \"{other}\""),
                ))
            }
        };
        let tick_ms = f.uint("tick_ms", defaults.tick_ms, 100, 60_000)?;
        let max_series = f.uint(
            "max_series",
            defaults.max_series as u64,
            1,
            MAX_SERIES_LIMIT,
        )? as usize;
        let subset_header = match f.string("subset_header")? {
            None => defaults.subset_header.clone(),
            Some(h) => {
                let valid = h
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !valid || h.starts_with('-') {
                    return Err(err(
                        "subset_header",
                        format!("must be a lowercase header name (a-z, 0-9, '-'), got \"{h}\""),
                    ));
                }
                h.to_string()
            }
        };
        let trust_client_subset_header = f.bool(
            "trust_client_subset_header",
            defaults.trust_client_subset_header,
        )?;
        let score_header = f.bool("score_header", defaults.score_header)?;
        let lease_ttl_ticks = f.uint("lease_ttl_ticks", defaults.lease_ttl_ticks, 2, 60)?;
        let lease_release_after_ms = f
            .uint("lease_release_after_s", 0, 0, 86_400)?
            .saturating_mul(1000);
        let cas_retries = f.uint("cas_retries", defaults.cas_retries as u64, 1, 64)? as u32;
        let fast_request_us = f.uint("fast_request_us", defaults.fast_request_us, 0, 1_000_000)?;

        let canaries = match f.get("canaries") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out: Vec<CanarySpec> = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let spec = parse_canary(&format!("canaries[{i}]"), item)?;
                    if out.iter().any(|c| c.name == spec.name) {
                        return Err(err(
                            format!("canaries[{i}].name"),
                            format!("duplicate canary name \"{}\"", spec.name),
                        ));
                    }
                    out.push(spec);
                }
                out
            }
            Some(v) => {
                return Err(err(
                    "canaries",
                    format!("must be an array of canary objects, got {}", type_name(v)),
                ))
            }
        };

        let unmatched_after_ms = f.uint(
            "unmatched_after_s",
            defaults.unmatched_after_ms / 1000,
            1,
            3600,
        )? * 1000;

        let steering = match f.get("steering") {
            None => defaults.steering,
            Some(v) => {
                let s = Fields::new("steering", v, STEERING_FIELDS)?;
                let hold_s = s.uint("hold_s", defaults.steering.hold_ms / 1000, 1, 3600)?;
                let max_hold_s = s.uint(
                    "max_hold_s",
                    (defaults.steering.max_hold_ms / 1000).max(hold_s),
                    1,
                    86_400,
                )?;
                if max_hold_s < hold_s {
                    return Err(err(
                        "steering.max_hold_s",
                        format!("must be at least steering.hold_s ({hold_s}), got {max_hold_s}"),
                    ));
                }
                SteeringConfig {
                    hold_ms: hold_s * 1000,
                    max_hold_ms: max_hold_s * 1000,
                }
            }
        };

        let model = match f.get("model") {
            None => Model::default(),
            Some(v) => Model::from_json_value(v.clone()).map_err(|e| {
                let text = e.to_string();
                // The model names its own fields ("window_ticks: ..." or
                // "model.window_ticks: ..."); present them under `model.`.
                match text.strip_prefix("model.") {
                    Some(rest) => err("", format!("model.{rest}")),
                    None => err("", format!("model.{text}")),
                }
            })?,
        };

        let control = match f.get("control") {
            None => None,
            Some(v) => Some(parse_control(v)?),
        };
        let grpc = match f.get("grpc_server_error_codes") {
            None => defaults.grpc,
            Some(v) => parse_grpc_codes(v)?,
        };
        let steer_on_throttle = f.bool("steer_on_throttle", defaults.steer_on_throttle)?;

        let pii = match f.get("pii") {
            None => crate::pii_config::PiiConfig::default(),
            Some(v) => crate::pii_config::PiiConfig::parse(v)?,
        };

        let edges = match f.get("edges") {
            None => crate::edges::EdgesConfig::default(),
            Some(v) => crate::edges::EdgesConfig::parse(v)?,
        };

        let series_idle_ms = f
            .uint("series_idle_s", defaults.series_idle_ms / 1000, 1, 604_800)?
            .saturating_mul(1000);
        if series_idle_ms < tick_ms.saturating_mul(3) {
            return Err(err(
                "series_idle_s",
                format!(
                    "must be at least 3 ticks ({} ms with tick_ms {tick_ms}), got {} s",
                    tick_ms * 3,
                    series_idle_ms / 1000
                ),
            ));
        }
        let instance = match f.string("instance")? {
            None => None,
            Some(name) => {
                let valid = name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !valid {
                    return Err(err(
                        "instance",
                        format!("must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.', got \"{name}\""),
                    ));
                }
                Some(name.to_string())
            }
        };
        // serde_json's map keeps keys sorted, so equal documents hash equally
        // whatever their key order or whitespace.
        let identity = fnv1a64(&serde_json::to_vec(doc).unwrap_or_default());

        Ok(PluginConfig {
            series_idle_ms,
            instance,
            identity,
            edges,
            control,
            pii,
            grpc,
            steer_on_throttle,
            mode,
            tick_ms,
            max_series,
            subset_header,
            trust_client_subset_header,
            score_header,
            lease_ttl_ticks,
            lease_release_after_ms,
            cas_retries,
            fast_request_us,
            canaries,
            unmatched_after_ms,
            steering,
            model,
        })
    }
}

/// `grpc_server_error_codes`: an array of gRPC status names
/// (`"UNAVAILABLE"`), each naming one of the 17 codes.
fn parse_grpc_codes(v: &Value) -> Result<GrpcPolicy, ConfigError> {
    const FIELD: &str = "grpc_server_error_codes";
    let Value::Array(items) = v else {
        return Err(err(
            FIELD,
            format!(
                "must be an array of gRPC status names, got {}",
                type_name(v)
            ),
        ));
    };
    let mut codes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{FIELD}[{i}]");
        let Value::String(name) = item else {
            return Err(err(
                path,
                format!("must be a gRPC status name, got {}", type_name(item)),
            ));
        };
        let code = grpc_code(name).ok_or_else(|| {
            err(
                &path,
                format!(
                    "unknown gRPC status code \"{name}\" (known: {})",
                    crate::outcome::GRPC_CODES.join(", ")
                ),
            )
        })?;
        if code == 0 {
            return Err(err(path, "OK cannot be a server error"));
        }
        codes.push(code);
    }
    Ok(GrpcPolicy::from_codes(codes))
}

fn parse_control(v: &Value) -> Result<ControlConfig, ConfigError> {
    let c = Fields::new("control", v, CONTROL_FIELDS)?;
    let cluster = c.required_string("cluster")?.to_string();
    let path = |key: &str, default: &str| -> Result<String, ConfigError> {
        let p = c.string(key)?.unwrap_or(default);
        if !p.starts_with('/') || p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(err(
                c.path(key),
                format!("must be an absolute URL path like \"{default}\", got \"{p}\""),
            ));
        }
        Ok(p.to_string())
    };
    let token = c.string("token")?.map(str::to_string);
    if let Some(t) = &token {
        if t.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(err(
                "control.token",
                "must be printable ASCII without spaces",
            ));
        }
    }
    Ok(ControlConfig {
        authority: c.string("authority")?.unwrap_or(&cluster).to_string(),
        reports_path: path("reports_path", "/v1/reports")?,
        routing_path: path("routing_path", "/v1/routing")?,
        timeout_ms: c.uint("timeout_ms", 500, 10, 60_000)?,
        weights_ttl_ms: c.uint("weights_ttl_s", 30, 1, 86_400)? * 1000,
        token,
        cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(json: &str) -> ConfigError {
        PluginConfig::parse(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn empty_means_defaults() {
        assert_eq!(PluginConfig::parse(b"").unwrap(), PluginConfig::default());
        assert_eq!(PluginConfig::parse(b"{}").unwrap(), PluginConfig::default());
    }

    #[test]
    fn full_config_parses() {
        let c = PluginConfig::parse(
            br#"{"mode":"steer","tick_ms":500,"max_series":64,"subset_header":"x-sub",
                "trust_client_subset_header":true,"score_header":true,
                "canaries":[{"name":"checkout","route":"checkout","stable_cluster":"s","canary_cluster":"c"},
                            {"name":"reviews","service":"reviews.default.svc.cluster.local","stable_subset":"v1","canary_subset":"v2"}],
                "steering":{"hold_s":10,"max_hold_s":60}}"#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Steer);
        assert_eq!(c.tick_ms, 500);
        assert_eq!(c.max_series, 64);
        assert_eq!(c.canaries.len(), 2);
        assert_eq!(c.steering.hold_ms, 10_000);
        assert!(c.score_header && c.trust_client_subset_header);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(reject(r#"{"tick_ms":"fast"}"#).field, "tick_ms");
        assert_eq!(reject(r#"{"tick_ms":-5}"#).field, "tick_ms");
        assert_eq!(
            reject(r#"{"fast_request_us":"2ms"}"#).field,
            "fast_request_us"
        );
        assert_eq!(
            reject(r#"{"fast_request_us":2000000}"#).field,
            "fast_request_us"
        );
        assert_eq!(PluginConfig::default().fast_request_us, 2000);
        assert_eq!(
            reject(r#"{"lease_release_after_s":-1}"#).field,
            "lease_release_after_s"
        );
        assert_eq!(reject(r#"{"bogus":1}"#).field, "bogus");
        assert_eq!(reject(r#"{"mode":"loud"}"#).field, "mode");
        assert_eq!(reject(r#"{"max_series":0}"#).field, "max_series");
        assert_eq!(
            reject(r#"{"steering":{"hold_s":-1}}"#).field,
            "steering.hold_s"
        );
        assert_eq!(reject(r#"{"steering":{"x":1}}"#).field, "steering.x");
        assert_eq!(
            reject(r#"{"canaries":[{"name":"c","route":"checkout"}]}"#).field,
            "canaries[0].stable_cluster"
        );
        assert_eq!(
            reject(r#"{"canaries":[{"name":"c","route":"r","stable_cluster":"a","canary_cluster":"a"}]}"#)
                .field,
            "canaries[0].canary_cluster"
        );
        assert_eq!(reject(r#"{"canaries":{}}"#).field, "canaries");
        assert_eq!(
            reject(r#"{"canaries":[{"route":"r"}]}"#).field,
            "canaries[0].name"
        );
        assert_eq!(
            reject(r#"{"subset_header":"X Bad"}"#).field,
            "subset_header"
        );
        assert_eq!(reject("[1]").field, "");
        assert!(reject("{nope").to_string().contains("not valid JSON"));
    }

    #[test]
    fn control_section() {
        let c = PluginConfig::parse(br#"{"control":{"cluster":"vigil-control","token":"s3cret"}}"#)
            .unwrap()
            .control
            .unwrap();
        assert_eq!(c.authority, "vigil-control");
        assert_eq!(c.routing_path, "/v1/routing");
        assert_eq!(c.weights_ttl_ms, 30_000);
        assert_eq!(reject(r#"{"control":{}}"#).field, "control.cluster");
        assert_eq!(
            reject(r#"{"control":{"cluster":"c","routing_path":"v1"}}"#).field,
            "control.routing_path"
        );
        assert_eq!(
            reject(r#"{"control":{"cluster":"c","weights_ttl_s":0}}"#).field,
            "control.weights_ttl_s"
        );
        let e = reject(r#"{"control":{"cluster":"c","token":"a b"}}"#);
        assert_eq!(e.field, "control.token");
        assert!(!e.to_string().contains("a b"), "the token is never echoed");
    }

    #[test]
    fn grpc_codes_and_throttle_steering() {
        let c = PluginConfig::parse(
            br#"{"grpc_server_error_codes":["unavailable","INTERNAL"],"steer_on_throttle":true}"#,
        )
        .unwrap_or_default();
        assert!(c.steer_on_throttle);
        assert!(c.grpc.is_server_fault(14) && c.grpc.is_server_fault(13));
        assert!(!c.grpc.is_server_fault(2));
        let e = reject(r#"{"grpc_server_error_codes":["UNAVAILABLE","UNAVAILBLE"]}"#);
        assert_eq!(e.field, "grpc_server_error_codes[1]", "{e}");
        assert!(e.to_string().contains("UNAVAILBLE"), "{e}");
        let e = reject(r#"{"grpc_server_error_codes":"UNAVAILABLE"}"#);
        assert_eq!(e.field, "grpc_server_error_codes");
        let e = reject(r#"{"grpc_server_error_codes":["OK"]}"#);
        assert_eq!(e.field, "grpc_server_error_codes[0]");
        let e = reject(r#"{"steer_on_throttle":"yes"}"#);
        assert_eq!(e.field, "steer_on_throttle");
    }

    #[test]
    fn idle_age_out_and_identity() {
        let c = PluginConfig::parse(br#"{"series_idle_s":30}"#).unwrap();
        assert_eq!(c.series_idle_ms, 30_000);
        assert_eq!(PluginConfig::default().series_idle_ms, 600_000);
        assert_eq!(reject(r#"{"series_idle_s":0}"#).field, "series_idle_s");
        assert_eq!(reject(r#"{"series_idle_s":"1m"}"#).field, "series_idle_s");
        let e = reject(r#"{"tick_ms":5000,"series_idle_s":10}"#);
        assert_eq!(e.field, "series_idle_s", "{e}");
        assert!(e.to_string().contains("3 ticks"), "{e}");
        assert_eq!(reject(r#"{"instance":"a b"}"#).field, "instance");
        assert_eq!(reject(r#"{"instance":7}"#).field, "instance");
        // Identity: key order and whitespace do not matter, any value does.
        let a = PluginConfig::parse(br#"{"mode":"steer","tick_ms":500}"#).unwrap();
        let b = PluginConfig::parse(br#"{ "tick_ms": 500, "mode": "steer" }"#).unwrap();
        let c = PluginConfig::parse(br#"{"mode":"steer","tick_ms":600}"#).unwrap();
        let d = PluginConfig::parse(br#"{"mode":"steer","tick_ms":500,"instance":"b"}"#).unwrap();
        assert_eq!(a.identity, b.identity);
        assert_ne!(a.identity, c.identity);
        assert_ne!(a.identity, d.identity);
        assert_eq!(d.instance.as_deref(), Some("b"));
        assert_eq!(
            PluginConfig::parse(b" ").unwrap().identity,
            PluginConfig::parse(b"{}").unwrap().identity
        );
    }

    #[test]
    fn negative_model_window_names_the_model_field() {
        let e = reject(r#"{"model":{"window_ticks":-5}}"#);
        assert!(e.to_string().contains("model.window_ticks"), "{e}");
    }
}
