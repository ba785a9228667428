//! Validation of Kubernetes manifests against the published CRDs, as the API server does.
//!
//! [`Catalog::load`] reads every CustomResourceDefinition under a directory (by default
//! `<repo>/../shared/schemas`, see [`schemas_dir`]) and compiles, for each *served*
//! version, its `openAPIV3Schema` into a JSON Schema (draft 4, OpenAPI 3.0's dialect)
//! with the Kubernetes rules the API server applies with strict field validation
//! (`kubectl apply`'s default):
//!
//! - unknown fields are errors, except under `x-kubernetes-preserve-unknown-fields: true`
//!   (an object without `properties`/`additionalProperties` accepts no fields at all);
//!   as in the API server the marker is per node: a preserving node still checks the
//!   properties it declares, and a nested node with its own `properties` is strict again
//!   unless it carries the marker too;
//! - `x-kubernetes-int-or-string: true` accepts an integer or a string;
//! - `nullable: true` also accepts `null`;
//! - `format: int32` / `int64` bound integers to their range;
//! - `metadata` is checked as ObjectMeta's basics: `name` (DNS-1123 subdomain),
//!   `namespace` (DNS-1123 label), `labels`/`annotations` string maps.
//!
//! Not evaluated: CEL rules (`x-kubernetes-validations`) and list-map uniqueness; the
//! API server checks them on apply.
//!
//! Core Kubernetes kinds have no CRD here (Namespace, ServiceAccount, ConfigMap, Secret,
//! Service, PersistentVolumeClaim, Deployment) nor does the install-time IstioOperator:
//! they are checked structurally ([`CORE_KINDS`]: apiVersion, kind, metadata.name, and a
//! few shape rules per kind).
//!
//! Errors name the file, the document (index, kind, namespace/name) and the field path,
//! e.g. `bad.yaml: document 1 (WasmPlugin apps/vigil): spec.failStrategy: "FAIL_SAFE" is
//! not one of ["FAIL_CLOSE","FAIL_OPEN","FAIL_RELOAD"]`.
//!
//! For other crates (e.g. the control service's rendered GitOps YAML):
//! [`validate_documents`] validates a YAML string against the shared schemas.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jsonschema::Validator;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{repo_root, Result};

/// Kinds without a CRD that are checked structurally: (apiVersion, kind).
pub const CORE_KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    // An install input for `istioctl install -f` (or the istio-operator), not applied to
    // the API server through a CRD shipped with Istio's CRD bundle.
    ("install.istio.io/v1alpha1", "IstioOperator"),
];

/// `<repo>/../shared/schemas`, where CI puts the CRDs beside the clone; `VIGIL_SCHEMAS`
/// overrides it.
pub fn schemas_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("VIGIL_SCHEMAS") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("..").join("shared").join("schemas"),
    };
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "CRD schemas not found at {}: the validation needs the shared/ directory beside the \
             repository (shared/schemas/istio-crds.gen.yaml, shared/schemas/kuma/*.yaml) or \
             VIGIL_SCHEMAS=<dir>",
            dir.display()
        )
        .into())
    }
}

struct Compiled {
    crd: String,
    validator: Validator,
}

/// The served versions of every CRD found, compiled.
pub struct Catalog {
    /// (apiVersion, kind) → compiled schema of that served version.
    served: BTreeMap<(String, String), Compiled>,
    /// (group, kind) → every version with its `served` flag, for messages.
    versions: BTreeMap<(String, String), Vec<(String, bool)>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("served", &self.served.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Every `.yaml`/`.yml` file under `dir` (recursively), sorted.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    yaml_files(dir, &mut out)?;
    Ok(out)
}

/// Parses a multi-document YAML string; empty documents are skipped.
pub fn parse_documents(yaml: &str) -> std::result::Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let v = Value::deserialize(de).map_err(|e| format!("document {}: not YAML: {e}", i + 1))?;
        docs.push(v);
    }
    Ok(docs)
}

impl Catalog {
    /// Loads every CRD under `dir` (recursively).
    pub fn load(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        yaml_files(dir, &mut files)?;
        let mut served = BTreeMap::new();
        let mut versions: BTreeMap<(String, String), Vec<(String, bool)>> = BTreeMap::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let docs = parse_documents(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            for doc in docs {
                if doc.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                    continue;
                }
                let crd = doc
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                let group = str_at(&doc, "/spec/group");
                let kind = str_at(&doc, "/spec/names/kind");
                let Some(vs) = doc.pointer("/spec/versions").and_then(Value::as_array) else {
                    continue;
                };
                for v in vs {
                    let name = str_at(v, "/name");
                    let is_served = v.get("served").and_then(Value::as_bool).unwrap_or(false);
                    versions
                        .entry((group.clone(), kind.clone()))
                        .or_default()
                        .push((name.clone(), is_served));
                    if !is_served {
                        continue;
                    }
                    let Some(schema) = v.pointer("/schema/openAPIV3Schema") else {
                        return Err(format!(
                            "{}: CRD {crd} version {name} has no openAPIV3Schema",
                            file.display()
                        )
                        .into());
                    };
                    let compiled = compile(schema).map_err(|e| {
                        format!(
                            "{}: CRD {crd} {name}: schema does not compile: {e}",
                            file.display()
                        )
                    })?;
                    served.insert(
                        (format!("{group}/{name}"), kind.clone()),
                        Compiled {
                            crd: crd.clone(),
                            validator: compiled,
                        },
                    );
                }
            }
        }
        if served.is_empty() {
            return Err(
                format!("no CustomResourceDefinition found under {}", dir.display()).into(),
            );
        }
        Ok(Self { served, versions })
    }

    /// Loads the shared schemas ([`schemas_dir`]).
    pub fn load_shared() -> Result<Self> {
        Self::load(&schemas_dir()?)
    }

    /// The (apiVersion, kind) pairs with a compiled schema.
    pub fn served_kinds(&self) -> Vec<(String, String)> {
        self.served.keys().cloned().collect()
    }

    /// Validates one parsed document. Errors are `<what>: <path>: <problem>` lines,
    /// without the file name.
    pub fn validate_value(&self, doc: &Value) -> std::result::Result<(), Vec<String>> {
        let api_version = doc.get("apiVersion").and_then(Value::as_str);
        let kind = doc.get("kind").and_then(Value::as_str);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return Err(vec![format!(
                "{}: apiVersion and kind are required strings",
                describe(doc)
            )]);
        };
        let what = describe(doc);
        if let Some(c) = self
            .served
            .get(&(api_version.to_string(), kind.to_string()))
        {
            let errors: Vec<String> = c
                .validator
                .iter_errors(doc)
                .map(|e| {
                    let path = field_path(&e.instance_path.to_string());
                    let path = if path.is_empty() {
                        "(root)".to_string()
                    } else {
                        path
                    };
                    format!(
                        "{what}: {path}: {e} (schema of CRD {} {api_version})",
                        c.crd
                    )
                })
                .collect();
            return if errors.is_empty() {
                Ok(())
            } else {
                Err(errors)
            };
        }
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        if let Some(vs) = self.versions.get(&(group.to_string(), kind.to_string())) {
            let served: Vec<&str> = vs
                .iter()
                .filter(|(_, s)| *s)
                .map(|(v, _)| v.as_str())
                .collect();
            return Err(vec![format!(
                "{what}: apiVersion: {api_version} is not a served version of {kind} (served: {})",
                served.join(", ")
            )]);
        }
        if CORE_KINDS.iter().any(|(_, k)| *k == kind) {
            return check_core(doc, api_version, kind)
                .map_err(|es| es.into_iter().map(|e| format!("{what}: {e}")).collect());
        }
        Err(vec![format!(
            "{what}: no CRD for {api_version} {kind} under the schemas and not a known core kind"
        )])
    }

    /// Validates every document of a YAML string; `source` prefixes the messages.
    /// Returns the number of documents validated.
    pub fn validate_str(
        &self,
        yaml: &str,
        source: &str,
    ) -> std::result::Result<usize, Vec<String>> {
        let docs = parse_documents(yaml).map_err(|e| vec![format!("{source}: {e}")])?;
        let mut errors = Vec::new();
        let mut n = 0;
        for (i, doc) in docs.iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            n += 1;
            if let Err(es) = self.validate_value(doc) {
                errors.extend(
                    es.into_iter()
                        .map(|e| format!("{source}: document {}{e}", i + 1)),
                );
            }
        }
        if errors.is_empty() {
            Ok(n)
        } else {
            Err(errors)
        }
    }

    /// Validates every YAML file under `dir`. Returns (file, documents) on success.
    pub fn validate_dir(
        &self,
        dir: &Path,
    ) -> std::result::Result<Vec<(PathBuf, usize)>, Vec<String>> {
        let files = manifest_files(dir).map_err(|e| vec![e.to_string()])?;
        if files.is_empty() {
            return Err(vec![format!("no YAML files under {}", dir.display())]);
        }
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for f in files {
            let shown = f
                .strip_prefix(repo_root())
                .unwrap_or(&f)
                .display()
                .to_string();
            match std::fs::read_to_string(&f) {
                Ok(text) => match self.validate_str(&text, &shown) {
                    Ok(n) => ok.push((f, n)),
                    Err(es) => errors.extend(es),
                },
                Err(e) => errors.push(format!("{shown}: cannot read: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(ok)
        } else {
            Err(errors)
        }
    }
}

/// Validates a (multi-document) YAML string against the shared schemas
/// (`<repo>/../shared/schemas`, loaded once per process). Every error is one readable
/// line naming the document and the field path.
pub fn validate_documents(yaml: &str) -> std::result::Result<(), Vec<String>> {
    static CATALOG: OnceLock<std::result::Result<Catalog, String>> = OnceLock::new();
    let catalog = CATALOG.get_or_init(|| Catalog::load_shared().map_err(|e| e.to_string()));
    match catalog {
        Ok(c) => c.validate_str(yaml, "yaml").map(|_| ()),
        Err(e) => Err(vec![e.clone()]),
    }
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// ` (Kind namespace/name)` of a document, for messages.
fn describe(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    match doc.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!(" ({kind} {ns}/{name})"),
        None => format!(" ({kind} {name})"),
    }
}

/// `/spec/match/0/mode` → `spec.match[0].mode`.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

const DNS1123_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

fn object_meta_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
            "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
            "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
        }
    })
}

fn compile(schema: &Value) -> std::result::Result<Validator, String> {
    let mut s = convert(schema);
    if let Some(obj) = s.as_object_mut() {
        let props = obj
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(props) = props.as_object_mut() {
            props.insert("metadata".into(), object_meta_schema());
            // TypeMeta: not always declared by the CRD (Istio's are not), always allowed.
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
        }
        obj.insert("required".into(), json!(["apiVersion", "kind", "metadata"]));
    }
    jsonschema::draft4::options()
        .build(&s)
        .map_err(|e| e.to_string())
}

/// One Kubernetes structural schema node → a JSON Schema (draft 4) node.
fn convert(node: &Value) -> Value {
    let Some(obj) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    let preserve = obj
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let int_or_string = obj
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let nullable = obj
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for (k, v) in obj {
        match k.as_str() {
            "description" | "nullable" | "example" | "externalDocs" => {}
            k if k.starts_with("x-kubernetes-") => {}
            "properties" | "patternProperties" | "definitions" => {
                let m: Map<String, Value> = v
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
                    .unwrap_or_default();
                out.insert(k.to_string(), Value::Object(m));
            }
            "items" | "additionalProperties" | "not" => {
                let v = if v.is_object() { convert(v) } else { v.clone() };
                out.insert(k.to_string(), v);
            }
            "allOf" | "anyOf" | "oneOf" => {
                let a: Vec<Value> = v
                    .as_array()
                    .map(|a| a.iter().map(convert).collect())
                    .unwrap_or_default();
                out.insert(k.to_string(), Value::Array(a));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if int_or_string {
        out.remove("type");
        out.remove("format");
        if !out.contains_key("anyOf") {
            out.insert(
                "anyOf".into(),
                json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
    }
    let is_integer = out.get("type").and_then(Value::as_str) == Some("integer");
    if is_integer {
        let bounds = match out.get("format").and_then(Value::as_str) {
            Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
            Some("int64") => Some((i64::MIN, i64::MAX)),
            _ => None,
        };
        if let Some((lo, hi)) = bounds {
            out.entry("minimum").or_insert(json!(lo));
            out.entry("maximum").or_insert(json!(hi));
        }
    }
    // Formats are annotations here (the API server checks few of them); drop them so
    // nothing depends on the validator's format support.
    out.remove("format");
    let is_object = out.get("type").and_then(Value::as_str) == Some("object");
    if is_object && !preserve && !out.contains_key("additionalProperties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if nullable {
        if let Some(t) = out.get("type").and_then(Value::as_str).map(str::to_string) {
            out.insert("type".into(), json!([t, "null"]));
        }
    }
    Value::Object(out)
}

fn check_core(doc: &Value, api_version: &str, kind: &str) -> std::result::Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if let Some((want, _)) = CORE_KINDS.iter().find(|(_, k)| *k == kind) {
        if *want != api_version {
            errors.push(format!(
                "apiVersion: {kind} is served as {want}, got {api_version}"
            ));
        }
    }
    let name_ok = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(is_dns_subdomain);
    if !name_ok {
        errors.push("metadata.name: required, a DNS-1123 subdomain".to_string());
    }
    if let Some(ns) = doc.pointer("/metadata/namespace") {
        if !ns.as_str().is_some_and(is_dns_label) {
            errors.push("metadata.namespace: must be a DNS-1123 label".to_string());
        }
    }
    match kind {
        "Deployment" => {
            let selector = doc
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object);
            let labels = doc
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object);
            match (selector, labels) {
                (Some(sel), Some(labels)) => {
                    for (k, v) in sel {
                        if labels.get(k) != Some(v) {
                            errors.push(format!(
                                "spec.selector.matchLabels.{k}: does not match spec.template.metadata.labels"
                            ));
                        }
                    }
                }
                _ => errors.push(
                    "spec.selector.matchLabels and spec.template.metadata.labels are required"
                        .to_string(),
                ),
            }
            let containers = doc
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array);
            match containers {
                Some(cs) if !cs.is_empty() => {
                    for (i, c) in cs.iter().enumerate() {
                        for field in ["name", "image"] {
                            if c.get(field)
                                .and_then(Value::as_str)
                                .is_none_or(str::is_empty)
                            {
                                errors.push(format!(
                                    "spec.template.spec.containers[{i}].{field}: required"
                                ));
                            }
                        }
                    }
                }
                _ => {
                    errors.push("spec.template.spec.containers: at least one required".to_string())
                }
            }
        }
        "Service" => match doc.pointer("/spec/ports").and_then(Value::as_array) {
            Some(ports) if !ports.is_empty() => {
                for (i, p) in ports.iter().enumerate() {
                    let port = p.get("port").and_then(Value::as_u64);
                    if !port.is_some_and(|p| (1..=65535).contains(&p)) {
                        errors.push(format!("spec.ports[{i}].port: required, 1–65535"));
                    }
                }
            }
            _ => errors.push("spec.ports: at least one required".to_string()),
        },
        "ConfigMap" | "Secret" => {
            for field in ["data", "stringData", "binaryData"] {
                if let Some(v) = doc.get(field) {
                    let all_strings = v
                        .as_object()
                        .is_some_and(|m| m.values().all(Value::is_string));
                    if !all_strings {
                        errors.push(format!("{field}: must map keys to strings"));
                    }
                }
            }
        }
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(|c| *c != b'-')
        && b.last().is_some_and(|c| *c != b'-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_kubectl() {
        assert_eq!(field_path("/spec/match/0/mode"), "spec.match[0].mode");
        assert_eq!(field_path(""), "");
        assert_eq!(field_path("/metadata/labels/a~1b"), "metadata.labels.a/b");
    }

    #[test]
    fn structural_rules() {
        let s = json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"x": {"type": "integer", "format": "int32"}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "ios": {"x-kubernetes-int-or-string": true},
                "n": {"type": "string", "nullable": true}
            }
        });
        let v = jsonschema::draft4::options().build(&convert(&s)).unwrap();
        assert!(v.is_valid(&json!({"a": {"x": 1}, "free": {"any": [1]}, "ios": "50%", "n": null})));
        assert!(v.is_valid(&json!({"ios": 3})));
        assert!(
            !v.is_valid(&json!({"a": {"y": 1}})),
            "unknown field under a"
        );
        assert!(!v.is_valid(&json!({"zzz": 1})), "unknown top-level field");
        assert!(
            !v.is_valid(&json!({"a": {"x": 3_000_000_000u64}})),
            "int32 range"
        );
        assert!(!v.is_valid(&json!({"ios": true})));
    }

    #[test]
    fn preserve_unknown_fields_is_per_node() {
        let s = json!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "properties": {
                "k": {"type": "integer"},
                "strict": {"type": "object", "properties": {"a": {"type": "string"}}}
            }
        });
        let v = jsonschema::draft4::options().build(&convert(&s)).unwrap();
        assert!(v.is_valid(&json!({"k": 1, "other": {"x": [1]}})));
        assert!(
            !v.is_valid(&json!({"k": "one"})),
            "declared properties still checked"
        );
        assert!(v.is_valid(&json!({"strict": {"a": "x"}})));
        assert!(
            !v.is_valid(&json!({"strict": {"b": 1}})),
            "a nested node with properties is strict again"
        );
        let any = json!({"x-kubernetes-preserve-unknown-fields": true});
        let v = jsonschema::draft4::options().build(&convert(&any)).unwrap();
        assert!(v.is_valid(&json!({"cpu": "1", "n": 2})) && v.is_valid(&json!(3)));
    }
}
