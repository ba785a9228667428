//! Canary declarations and the service configuration file.
//!
//! Why this exists: a canary is declared by an operator, either in the
//! configuration file given to `serve --config` or through
//! `POST /v1/canaries`, and both paths must accept exactly the same documents
//! and refuse a bad one with the same message naming the field. Everything
//! downstream (matching report series, the state machine, the GitOps
//! renderer, the routing document) trusts a [`CanarySpec`] only after
//! [`CanarySpec::validate`] accepted it.

use serde::{Deserialize, Serialize};
use std::fmt;
use vigil_scorer::model::Model;

/// Longest accepted route, cluster, service or subset name (bytes).
pub const MAX_NAME_BYTES: usize = 256;
/// Longest accepted canary name (it is used in URLs, file names and
/// Kubernetes object names, so it must be a DNS-1123 label).
pub const MAX_CANARY_NAME: usize = 63;
/// Most steps a rollout may have.
pub const MAX_STEPS: usize = 20;
/// Longest accepted step duration, seconds (one day).
pub const MAX_STEP_DURATION_S: u64 = 86_400;
/// Most webhook URLs (global or per canary).
pub const MAX_WEBHOOKS: usize = 16;

/// What the service may do for a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Analyse and record decisions only: no YAML, no webhook, no weights.
    Observe,
    /// Decisions, GitOps YAML and webhooks; no weights served to the filters.
    Recommend,
    /// Everything, and the weights are served to the filters (which apply
    /// them only in their own `steer` mode).
    #[default]
    Enforce,
}

impl Mode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Recommend => "recommend",
            Mode::Enforce => "enforce",
        }
    }
}

/// Service-level objectives the canary must meet at each step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Largest acceptable error ratio (0–1) of the canary over a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_ratio: Option<f64>,
    /// Largest acceptable p99 latency of the canary over a step, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
}

/// One managed canary, as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// Unique name (DNS-1123 label); the filter's canary name.
    pub name: String,
    /// Plain Envoy: the route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Plain Envoy: the stable cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_cluster: Option<String>,
    /// Plain Envoy: the canary cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_cluster: Option<String>,
    /// Istio: the service host (clusters `outbound|<port>|<subset>|<host>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Istio: the stable subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_subset: Option<String>,
    /// Istio: the canary subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_subset: Option<String>,
    /// Kubernetes namespace of the rendered objects. Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pod label that tells the subsets apart in the rendered
    /// `DestinationRule` / `MeshHTTPRoute`. Default `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_label: Option<String>,
    /// Canary weights (percent), strictly increasing, 1–100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// How long each step lasts before it is judged, seconds.
    #[serde(default = "default_step_duration")]
    pub step_duration_s: u64,
    /// Objectives judged at each step.
    #[serde(default)]
    pub slo: Slo,
    /// Step weights that need a human approval before they start.
    #[serde(default)]
    pub approve_before_steps: Vec<u32>,
    /// Whether promotion needs a human approval.
    #[serde(default)]
    pub approve_before_promotion: bool,
    /// What the service may do.
    #[serde(default)]
    pub mode: Mode,
    /// Extra webhook URLs (`http://`) for this canary's events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<String>,
}

fn default_steps() -> Vec<u32> {
    vec![5, 10, 25, 50, 100]
}

fn default_step_duration() -> u64 {
    60
}

/// A refused declaration: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Path of the offending field, e.g. `canaries[0].steps[2]`.
    pub field: String,
    /// What is wrong, with the value seen.
    pub message: String,
}

impl SpecError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error under a parent path (`canaries[3]`).
    pub fn under(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for SpecError {}

/// Which side of a canary a series belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The stable version.
    Stable,
    /// The canary version.
    Canary,
}

/// How a canary's series are recognised in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector<'a> {
    /// Series `(route, stable_cluster)` and `(route, canary_cluster)`.
    Route {
        /// Route name.
        route: &'a str,
        /// Stable cluster.
        stable: &'a str,
        /// Canary cluster.
        canary: &'a str,
    },
    /// Istio clusters `outbound|<port>|<subset>|<service>` on any route.
    Service {
        /// Service host.
        service: &'a str,
        /// Stable subset.
        stable: &'a str,
        /// Canary subset.
        canary: &'a str,
    },
}

/// Parse an Istio outbound cluster name `outbound|<port>|<subset>|<host>`
/// into `(subset, host)`.
pub fn istio_subset_host(cluster: &str) -> Option<(&str, &str)> {
    let mut parts = cluster.split('|');
    let direction = parts.next()?;
    let _port = parts.next()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    (direction == "outbound" && parts.next().is_none()).then_some((subset, host))
}

fn check_name(field: &str, value: &str) -> Result<(), SpecError> {
    if value.is_empty() {
        return Err(SpecError::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(SpecError::new(
            field,
            format!("longer than {MAX_NAME_BYTES} bytes ({})", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(SpecError::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// A DNS-1123 label: lower-case alphanumerics and `-`, starting and ending
/// alphanumeric, at most 63 characters.
pub fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    !value.is_empty()
        && value.len() <= MAX_CANARY_NAME
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

impl CanarySpec {
    /// Parse one canary from JSON and validate it.
    pub fn from_json_value(value: serde_json::Value) -> Result<CanarySpec, SpecError> {
        let spec: CanarySpec =
            serde_json::from_value(value).map_err(|e| SpecError::new("", e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !is_dns_label(&self.name) {
            return Err(SpecError::new(
                "name",
                format!(
                    "must be a DNS-1123 label (a-z, 0-9, '-', at most {MAX_CANARY_NAME}), got {:?}",
                    self.name
                ),
            ));
        }
        let route_style = [&self.route, &self.stable_cluster, &self.canary_cluster];
        let service_style = [&self.service, &self.stable_subset, &self.canary_subset];
        let any_route = route_style.iter().any(|v| v.is_some());
        let any_service = service_style.iter().any(|v| v.is_some());
        if any_route && any_service {
            return Err(SpecError::new(
                "route",
                "give either route + stable_cluster + canary_cluster, or service + stable_subset + canary_subset, not both",
            ));
        }
        if !any_route && !any_service {
            return Err(SpecError::new(
                "route",
                "missing (required): give route + stable_cluster + canary_cluster, or service + stable_subset + canary_subset",
            ));
        }
        let names: [(&str, &Option<String>); 3] = if any_route {
            [
                ("route", &self.route),
                ("stable_cluster", &self.stable_cluster),
                ("canary_cluster", &self.canary_cluster),
            ]
        } else {
            [
                ("service", &self.service),
                ("stable_subset", &self.stable_subset),
                ("canary_subset", &self.canary_subset),
            ]
        };
        for (field, value) in names {
            match value {
                None => return Err(SpecError::new(field, "missing (required)")),
                Some(v) => check_name(field, v)?,
            }
        }
        if let (Some((_, stable)), Some((field, canary))) = (names.get(1), names.get(2)) {
            if stable == canary {
                return Err(SpecError::new(
                    *field,
                    format!("must differ from the stable one ({:?})", stable.as_deref()),
                ));
            }
        }
        if any_service {
            for (field, v) in [
                ("stable_subset", &self.stable_subset),
                ("canary_subset", &self.canary_subset),
            ] {
                if v.as_deref().is_some_and(|s| s.contains('|')) {
                    return Err(SpecError::new(field, "must not contain '|'"));
                }
            }
        }
        if let Some(ns) = &self.namespace {
            if !is_dns_label(ns) {
                return Err(SpecError::new("namespace", "must be a DNS-1123 label"));
            }
        }
        if let Some(label) = &self.subset_label {
            check_name("subset_label", label)?;
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(SpecError::new(
                "steps",
                format!(
                    "must have 1 to {MAX_STEPS} weights, got {}",
                    self.steps.len()
                ),
            ));
        }
        let mut previous = 0;
        for (i, &w) in self.steps.iter().enumerate() {
            if !(1..=100).contains(&w) || w <= previous {
                return Err(SpecError::new(
                    format!("steps[{i}]"),
                    format!("weights must be strictly increasing percentages in 1..=100, got {w}"),
                ));
            }
            previous = w;
        }
        if !(1..=MAX_STEP_DURATION_S).contains(&self.step_duration_s) {
            return Err(SpecError::new(
                "step_duration_s",
                format!(
                    "must be in 1..={MAX_STEP_DURATION_S}, got {}",
                    self.step_duration_s
                ),
            ));
        }
        if let Some(r) = self.slo.max_error_ratio {
            if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
                return Err(SpecError::new(
                    "slo.max_error_ratio",
                    format!("must be a number in 0..=1, got {r}"),
                ));
            }
        }
        if let Some(ms) = self.slo.max_p99_ms {
            if !(ms.is_finite() && ms > 0.0) {
                return Err(SpecError::new(
                    "slo.max_p99_ms",
                    format!("must be a positive number, got {ms}"),
                ));
            }
        }
        for (i, w) in self.approve_before_steps.iter().enumerate() {
            if !self.steps.contains(w) {
                return Err(SpecError::new(
                    format!("approve_before_steps[{i}]"),
                    format!("{w} is not one of the steps {:?}", self.steps),
                ));
            }
        }
        check_webhooks("webhooks", &self.webhooks)?;
        Ok(())
    }

    /// How this canary's series are recognised. Only meaningful on a
    /// validated spec (an unvalidated one may give empty names).
    pub fn selector(&self) -> Selector<'_> {
        fn s(v: &Option<String>) -> &str {
            v.as_deref().unwrap_or("")
        }
        if self.service.is_some() {
            Selector::Service {
                service: s(&self.service),
                stable: s(&self.stable_subset),
                canary: s(&self.canary_subset),
            }
        } else {
            Selector::Route {
                route: s(&self.route),
                stable: s(&self.stable_cluster),
                canary: s(&self.canary_cluster),
            }
        }
    }

    /// Which side, if any, the series `(route, cluster)` is.
    pub fn side_of(&self, route: &str, cluster: &str) -> Option<Side> {
        match self.selector() {
            Selector::Route {
                route: r,
                stable,
                canary,
            } => {
                if route != r {
                    None
                } else if cluster == stable {
                    Some(Side::Stable)
                } else if cluster == canary {
                    Some(Side::Canary)
                } else {
                    None
                }
            }
            Selector::Service {
                service,
                stable,
                canary,
            } => {
                let (subset, host) = istio_subset_host(cluster)?;
                if host != service {
                    None
                } else if subset == stable {
                    Some(Side::Stable)
                } else if subset == canary {
                    Some(Side::Canary)
                } else {
                    None
                }
            }
        }
    }

    /// Weight of step `index` (0 past the end).
    pub fn step_weight(&self, index: usize) -> u8 {
        self.steps
            .get(index)
            .map_or(0, |&w| u8::try_from(w.min(100)).unwrap_or(100))
    }

    /// Whether starting step `index` needs an approval.
    pub fn gate_before(&self, index: usize) -> bool {
        self.steps
            .get(index)
            .is_some_and(|w| self.approve_before_steps.contains(w))
    }

    /// Namespace of the rendered objects.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

fn check_webhooks(field: &str, urls: &[String]) -> Result<(), SpecError> {
    if urls.len() > MAX_WEBHOOKS {
        return Err(SpecError::new(
            field,
            format!("at most {MAX_WEBHOOKS} URLs, got {}", urls.len()),
        ));
    }
    for (i, url) in urls.iter().enumerate() {
        let ok = url.len() <= 2048
            && url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if !ok {
            return Err(SpecError::new(
                format!("{field}[{i}]"),
                format!(
                    "must be an http:// or https:// URL, got {}",
                    crate::egress::redact(url)
                ),
            ));
        }
    }
    Ok(())
}

/// The `--config` file: canaries, global webhooks and scorer model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceConfig {
    /// Declared canaries (validated, unique names).
    pub canaries: Vec<CanarySpec>,
    /// Webhook URLs notified of every canary's events.
    pub webhooks: Vec<String>,
    /// Hosts (or host:port) webhooks may target; none when empty.
    pub webhook_allow: crate::egress::Allow,
    /// Scorer model (defaults when absent).
    pub model: Model,
    /// The PII findings alert (`pii_alert`), when configured.
    pub pii_alert: Option<crate::pii::AlertConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    canaries: Vec<serde_json::Value>,
    #[serde(default)]
    webhooks: Vec<String>,
    #[serde(default)]
    webhook_allow: Vec<String>,
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    pii_alert: Option<serde_json::Value>,
}

impl ServiceConfig {
    /// Parse a configuration document: JSON when `json` is true, else YAML.
    pub fn parse(text: &str, json: bool) -> Result<ServiceConfig, SpecError> {
        let raw: RawConfig = if json {
            serde_json::from_str(text).map_err(|e| SpecError::new("", e.to_string()))?
        } else {
            serde_yaml::from_str(text).map_err(|e| SpecError::new("", e.to_string()))?
        };
        let mut canaries: Vec<CanarySpec> = Vec::with_capacity(raw.canaries.len());
        for (i, value) in raw.canaries.into_iter().enumerate() {
            let spec = CanarySpec::from_json_value(value)
                .map_err(|e| e.under(&format!("canaries[{i}]")))?;
            if canaries.iter().any(|c| c.name == spec.name) {
                return Err(SpecError::new(
                    format!("canaries[{i}].name"),
                    format!("duplicate canary name {:?}", spec.name),
                ));
            }
            canaries.push(spec);
        }
        check_webhooks("webhooks", &raw.webhooks)?;
        let webhook_allow = crate::egress::Allow::parse(&raw.webhook_allow)
            .map_err(|e| SpecError::new("webhook_allow", e))?;
        webhook_allow
            .check(&raw.webhooks)
            .map_err(|(i, m)| SpecError::new(format!("webhooks[{i}]"), m))?;
        for (i, c) in canaries.iter().enumerate() {
            webhook_allow
                .check(&c.webhooks)
                .map_err(|(j, m)| SpecError::new(format!("canaries[{i}].webhooks[{j}]"), m))?;
        }
        let model = match raw.model {
            None => Model::default(),
            Some(v) => Model::from_json_value(v).map_err(|e| SpecError::new(e.field, e.message))?,
        };
        let pii_alert = raw
            .pii_alert
            .map(crate::pii::AlertConfig::from_json_value)
            .transpose()?;
        if let Some(a) = &pii_alert {
            check_webhooks("pii_alert.webhooks", &a.webhooks)?;
            webhook_allow
                .check(&a.webhooks)
                .map_err(|(i, m)| SpecError::new(format!("pii_alert.webhooks[{i}]"), m))?;
        }
        Ok(ServiceConfig {
            canaries,
            webhooks: raw.webhooks,
            webhook_allow,
            model,
            pii_alert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"name":"checkout","route":"checkout","stable_cluster":"stable","canary_cluster":"canary"})
    }

    #[test]
    fn defaults_and_matching() {
        let spec = CanarySpec::from_json_value(base()).unwrap();
        assert_eq!(spec.steps, vec![5, 10, 25, 50, 100]);
        assert_eq!(spec.mode, Mode::Enforce);
        assert_eq!(spec.side_of("checkout", "canary"), Some(Side::Canary));
        assert_eq!(spec.side_of("checkout", "stable"), Some(Side::Stable));
        assert_eq!(spec.side_of("other", "stable"), None);
        assert_eq!(spec.step_weight(2), 25);
        assert_eq!(spec.step_weight(9), 0);
    }

    #[test]
    fn istio_style_matches_any_route() {
        let spec = CanarySpec::from_json_value(json!({"name":"reviews",
            "service":"reviews.default.svc.cluster.local","stable_subset":"v1","canary_subset":"v2"}))
        .unwrap();
        assert_eq!(
            spec.side_of("r", "outbound|9080|v2|reviews.default.svc.cluster.local"),
            Some(Side::Canary)
        );
        assert_eq!(spec.side_of("r", "outbound|9080|v2|other"), None);
        assert_eq!(
            spec.side_of("r", "inbound|9080|v2|reviews.default.svc.cluster.local"),
            None
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                json!({"name":"Bad Name","route":"r","stable_cluster":"a","canary_cluster":"b"}),
                "name",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a","canary_cluster":"a"}),
                "canary_cluster",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a"}),
                "canary_cluster",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a","canary_cluster":"b","service":"s"}),
                "route",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a","canary_cluster":"b","steps":[10,5]}),
                "steps[1]",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a","canary_cluster":"b","steps":[0]}),
                "steps[0]",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a","canary_cluster":"b","step_duration_s":0}),
                "step_duration_s",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a","canary_cluster":"b","slo":{"max_error_ratio":2.0}}),
                "slo.max_error_ratio",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a","canary_cluster":"b","approve_before_steps":[7]}),
                "approve_before_steps[0]",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a","canary_cluster":"b","webhooks":["ftp://x"]}),
                "webhooks[0]",
            ),
            (
                json!({"name":"x","route":"r","stable_cluster":"a","canary_cluster":"b","bogus":1}),
                "",
            ),
        ];
        for (doc, field) in cases {
            let err = CanarySpec::from_json_value(doc.clone()).unwrap_err();
            assert_eq!(err.field, field, "{doc}: {err}");
        }
    }

    #[test]
    fn config_file_yaml_and_duplicates() {
        let yaml = "canaries:\n  - name: checkout\n    route: checkout\n    stable_cluster: stable\n    canary_cluster: canary\n    steps: [10, 50, 100]\n    approve_before_steps: [50]\nwebhooks: [\"http://127.0.0.1:9/hook\"]\nwebhook_allow: [\"127.0.0.1\"]\nmodel:\n  min_requests: 10\n";
        let cfg = ServiceConfig::parse(yaml, false).unwrap();
        assert_eq!(cfg.canaries.len(), 1);
        assert_eq!(cfg.model.min_requests, 10);
        assert!(cfg.canaries[0].gate_before(1));
        let dup = "{\"canaries\":[{\"name\":\"a\",\"route\":\"r\",\"stable_cluster\":\"s\",\"canary_cluster\":\"c\"},{\"name\":\"a\",\"route\":\"r\",\"stable_cluster\":\"s\",\"canary_cluster\":\"c\"}]}";
        assert_eq!(
            ServiceConfig::parse(dup, true).unwrap_err().field,
            "canaries[1].name"
        );
        let bad = "{\"canaries\":[{\"name\":\"a\",\"route\":\"r\",\"stable_cluster\":\"s\"}]}";
        assert_eq!(
            ServiceConfig::parse(bad, true).unwrap_err().field,
            "canaries[0].canary_cluster"
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let cfg = ServiceConfig::parse(include_str!("../examples/vigil.yaml"), false).unwrap();
        assert_eq!(cfg.canaries.len(), 2);
        assert_eq!(cfg.canaries[1].mode, Mode::Recommend);
    }
}
