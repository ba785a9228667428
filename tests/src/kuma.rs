//! What `kumactl apply` (and the control planes) enforce for the fields Vigil's mesh
//! manifests use, plus what they do NOT check and we must: the filter value inside a
//! MeshProxyPatch / the `pluginConfig` of a WasmPlugin.
//!
//! - [`universal_to_kubernetes`]: a universal resource (`type`/`name`/`mesh`/`spec`) as
//!   the Kubernetes object the CRD schemas in `../shared/schemas/kuma` validate.
//! - [`structural_errors`]: universal-mode shape (no `k8s.kuma.io/namespace` selectors,
//!   which match nothing there), SPIFFE ID syntax of MeshTrafficPermission `spiffeID`
//!   matchers (go-spiffe's rules, which Kuma validates with: `spiffe://` + a lowercase
//!   trust domain + non-empty path segments of `[A-Za-z0-9._-]`, no `.`/`..` segments,
//!   no trailing `/` — the check that refused our old prefix), MeshMetric include types.
//! - [`filter_value_errors`]: the Envoy wasm HttpFilter inside an `httpFilter`
//!   modification (known `Wasm`/`PluginConfig`/`VmConfig` proto fields only) and its
//!   plugin configuration through the filter's own validation
//!   (`vigil_filter_core::config::PluginConfig`), with the field named.
//! - [`meshmetric_selects`]: whether a MeshMetric include rule selects a Prometheus
//!   metric name (Kuma matches the names `/stats/prometheus` prints).

use serde_json::{json, Value};
use vigil_filter_core::config::PluginConfig;

/// A universal-mode resource as the Kubernetes object of the same kind.
pub fn universal_to_kubernetes(doc: &Value) -> Result<Value, String> {
    let o = doc.as_object().ok_or("not a mapping")?;
    let kind = o.get("type").and_then(Value::as_str).ok_or("no `type`")?;
    let name = o.get("name").and_then(Value::as_str).ok_or("no `name`")?;
    let mesh = o.get("mesh").and_then(Value::as_str).ok_or("no `mesh`")?;
    let mut labels = o.get("labels").cloned().unwrap_or(json!({}));
    if let Some(l) = labels.as_object_mut() {
        l.insert("kuma.io/mesh".into(), json!(mesh));
    }
    Ok(json!({
        "apiVersion": "kuma.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "kong-mesh-system", "labels": labels},
        "spec": o.get("spec").cloned().unwrap_or(json!({})),
    }))
}

/// go-spiffe `spiffeid` syntax: `Exact` must be a full SPIFFE ID, `Prefix` an ID or a
/// bare trust domain; neither may end in `/`.
pub fn spiffe_id_error(value: &str) -> Option<String> {
    let Some(rest) = value.strip_prefix("spiffe://") else {
        return Some(format!(
            "{value:?}: scheme is missing or invalid (must start with spiffe://)"
        ));
    };
    let (td, path) = match rest.split_once('/') {
        Some((td, p)) => (td, Some(p)),
        None => (rest, None),
    };
    if td.is_empty() {
        return Some(format!("{value:?}: trust domain is missing"));
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Some(format!("{value:?}: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"));
    }
    if let Some(path) = path {
        if path.is_empty() || path.ends_with('/') {
            return Some(format!("{value:?}: path cannot have a trailing slash"));
        }
        for seg in path.split('/') {
            if seg.is_empty() {
                return Some(format!("{value:?}: path cannot contain empty segments"));
            }
            if seg == "." || seg == ".." {
                return Some(format!("{value:?}: path cannot contain dot segments"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Some(format!("{value:?}: path segment characters are limited to letters, numbers, dots, dashes, and underscores"));
            }
        }
    }
    None
}

fn walk<'a>(v: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.to_string(), v));
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                walk(x, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Structural problems of one Kuma resource (Kubernetes or universal form).
pub fn structural_errors(doc: &Value, universal: bool) -> Vec<String> {
    let mut errors = Vec::new();
    let spec = doc.get("spec").unwrap_or(&Value::Null);
    let kind = doc
        .get("kind")
        .or_else(|| doc.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut nodes = Vec::new();
    walk(spec, "spec", &mut nodes);
    for (path, v) in &nodes {
        if universal && path.ends_with(".labels") {
            if let Some(l) = v.as_object() {
                for key in l.keys().filter(|k| k.starts_with("k8s.kuma.io/")) {
                    errors.push(format!(
                        "{path}.{key}: a Kubernetes label selects nothing in universal mode"
                    ));
                }
            }
        }
        if path.ends_with(".spiffeID") {
            let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
            let value = v.get("value").and_then(Value::as_str).unwrap_or("");
            if !["Exact", "Prefix"].contains(&ty) {
                errors.push(format!("{path}.type: must be Exact or Prefix, got {ty:?}"));
            }
            if let Some(e) = spiffe_id_error(value) {
                errors.push(format!("{path}.value: {e}"));
            }
        }
    }
    if universal {
        for key in doc
            .as_object()
            .map(|o| o.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !["type", "name", "mesh", "labels", "spec"].contains(&key.as_str()) {
                errors.push(format!("{key}: not a field of a universal resource"));
            }
        }
    }
    if kind == "MeshMetric" {
        let include = spec
            .pointer("/default/sidecar/profiles/include")
            .and_then(Value::as_array);
        for (i, rule) in include.into_iter().flatten().enumerate() {
            let ty = rule.get("type").and_then(Value::as_str).unwrap_or("");
            if !["Regex", "Prefix", "Exact", "Contains"].contains(&ty) {
                errors.push(format!("spec.default.sidecar.profiles.include[{i}].type: {ty:?} is not Regex, Prefix, Exact or Contains"));
            }
        }
    }
    errors
}

/// Whether a MeshMetric include rule selects `name` (a metric name as
/// `/stats/prometheus` prints it). `Regex` is not supported here (none is shipped).
pub fn meshmetric_selects(rule: &Value, name: &str) -> bool {
    let m = rule.get("match").and_then(Value::as_str).unwrap_or("");
    match rule.get("type").and_then(Value::as_str) {
        Some("Contains") => name.contains(m),
        Some("Prefix") => name.starts_with(m),
        Some("Exact") => name == m,
        _ => false,
    }
}

const WASM_FIELDS: &[&str] = &["@type", "config"];
const PLUGIN_FIELDS: &[&str] = &[
    "name",
    "root_id",
    "vm_config",
    "configuration",
    "fail_open",
    "failure_policy",
    "capability_restriction_config",
    "allow_on_headers_stop_iteration",
];
const VM_FIELDS: &[&str] = &[
    "vm_id",
    "runtime",
    "code",
    "configuration",
    "allow_precompiled",
    "nack_on_code_cache_miss",
    "environment_variables",
];
const FILTER_FIELDS: &[&str] = &["name", "typed_config", "disabled", "is_optional"];

fn unknown(v: &Value, known: &[&str], path: &str, out: &mut Vec<String>) {
    if let Some(o) = v.as_object() {
        for k in o.keys().filter(|k| !known.contains(&k.as_str())) {
            out.push(format!(
                "{path}.{k}: unknown field (known: {})",
                known.join(", ")
            ));
        }
    }
}

/// Problems of the Envoy wasm HttpFilter YAML in a MeshProxyPatch `httpFilter.value`,
/// including its plugin configuration (validated by the filter's own parser).
pub fn filter_value_errors(value_yaml: &str) -> Vec<String> {
    let filter: Value = match serde_yaml::from_str(value_yaml) {
        Ok(v) => v,
        Err(e) => return vec![format!("value: not YAML: {e}")],
    };
    let mut out = Vec::new();
    unknown(&filter, FILTER_FIELDS, "value", &mut out);
    let tc = filter.get("typed_config").unwrap_or(&Value::Null);
    unknown(tc, WASM_FIELDS, "value.typed_config", &mut out);
    let cfg = tc.get("config").unwrap_or(&Value::Null);
    unknown(cfg, PLUGIN_FIELDS, "value.typed_config.config", &mut out);
    unknown(
        cfg.get("vm_config").unwrap_or(&Value::Null),
        VM_FIELDS,
        "value.typed_config.config.vm_config",
        &mut out,
    );
    match cfg.pointer("/configuration/value").and_then(Value::as_str) {
        Some(text) => {
            if let Err(e) = PluginConfig::parse(text.as_bytes()) {
                out.push(format!(
                    "value.typed_config.config.configuration.value: {e}"
                ));
            }
        }
        None => out.push(
            "value.typed_config.config.configuration.value: missing (the plugin configuration)"
                .into(),
        ),
    }
    out
}

/// Filter-value problems of every MeshProxyPatch `httpFilter` modification and every
/// WasmPlugin `pluginConfig` in `doc`.
pub fn plugin_errors(doc: &Value) -> Vec<String> {
    let kind = doc
        .get("kind")
        .or_else(|| doc.get("type"))
        .and_then(Value::as_str);
    match kind {
        Some("MeshProxyPatch") => doc
            .pointer("/spec/default/appendModifications")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, m)| Some((i, m.get("httpFilter")?.get("value")?.as_str()?)))
            .flat_map(|(i, v)| {
                filter_value_errors(v)
                    .into_iter()
                    .map(move |e| format!("spec.default.appendModifications[{i}].httpFilter.{e}"))
            })
            .collect(),
        Some("WasmPlugin") => match doc.pointer("/spec/pluginConfig") {
            Some(pc) => PluginConfig::from_value(pc)
                .err()
                .map(|e| vec![format!("spec.pluginConfig.{e}")])
                .unwrap_or_default(),
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids() {
        assert_eq!(spiffe_id_error("spiffe://default/ns/apps"), None);
        assert_eq!(spiffe_id_error("spiffe://default"), None);
        assert!(spiffe_id_error("spiffe://default/ns/apps/")
            .unwrap()
            .contains("trailing slash"));
        assert!(spiffe_id_error("spiffe://Default/x")
            .unwrap()
            .contains("trust domain"));
        assert!(spiffe_id_error("spiffe://d//x")
            .unwrap()
            .contains("empty segments"));
        assert!(spiffe_id_error("spiffe://d/../x")
            .unwrap()
            .contains("dot segments"));
        assert!(spiffe_id_error("http://d/x").unwrap().contains("scheme"));
    }

    #[test]
    fn universal_selectors_and_metric_rules() {
        let doc = json!({"type": "MeshHTTPRoute", "name": "r", "mesh": "default", "spec": {"to": [{"targetRef": {"kind": "MeshService", "labels": {"k8s.kuma.io/namespace": "ml"}}}]}});
        let e = structural_errors(&doc, true);
        assert!(
            e[0].contains("spec.to[0].targetRef.labels.k8s.kuma.io/namespace"),
            "{e:?}"
        );
        assert!(structural_errors(&doc, false).is_empty());
        let rule = json!({"type": "Prefix", "match": "wasmcustom"});
        assert!(!meshmetric_selects(&rule, "envoy_wasmcustom_x"));
        assert!(meshmetric_selects(
            &json!({"type": "Contains", "match": "vigil_"}),
            "x_vigil_requests_total"
        ));
    }
}
