//! Validation of Kubernetes objects against published CRD schemas.
//!
//! Why this exists: the YAML the service renders (and the hand-written
//! manifests other parts of the project ship) must be accepted by the mesh's
//! API server. This module loads every `CustomResourceDefinition` under a
//! directory (default `<repo>/../shared/schemas`: Istio's
//! `istio-crds.gen.yaml`, Kuma's `kuma/kuma.io_*.yaml`), picks the
//! `openAPIV3Schema` of the object's exact `apiVersion` (which must be a
//! *served* version) and `kind`, and validates with the `jsonschema` crate.
//!
//! Strictness: like `kubectl apply --validate=strict`, an unknown field is
//! an error (every object schema with `properties` and no
//! `additionalProperties` / `x-kubernetes-preserve-unknown-fields` is closed
//! before compiling). Not checked: CEL rules (`x-kubernetes-validations`)
//! and `format`s. Behind the cargo feature `schema` (tests and CI only).

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Environment variable that overrides the schemas directory.
pub const SCHEMAS_ENV: &str = "VIGIL_SCHEMAS_DIR";

/// The schemas directory: `$VIGIL_SCHEMAS_DIR`, else `<repo>/../shared/schemas`.
/// Errors (with what was tried) when it does not exist.
pub fn schemas_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os(SCHEMAS_ENV) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/schemas"),
    };
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "CRD schemas directory {} not found: shared/ must sit beside the repository clone (or set {SCHEMAS_ENV})",
            dir.display()
        ))
    }
}

/// CRD schemas by `(group/version, kind)`, served versions only.
#[derive(Default)]
pub struct CrdSchemas {
    schemas: HashMap<(String, String), Value>,
    /// Compiled validators, built on first use.
    compiled: Mutex<HashMap<(String, String), Arc<jsonschema::Validator>>>,
}

impl std::fmt::Debug for CrdSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdSchemas")
            .field("kinds", &self.schemas.len())
            .finish()
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Close every object schema that lists properties (strict validation).
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let open = map.contains_key("additionalProperties")
                || map
                    .get("x-kubernetes-preserve-unknown-fields")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            if map.contains_key("properties") && !open {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, child) in map.iter_mut() {
                close_objects(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

impl CrdSchemas {
    /// Load every CRD in the `*.yaml` files under `dir` (recursively).
    pub fn load_dir(dir: &Path) -> Result<CrdSchemas, String> {
        let mut files = Vec::new();
        yaml_files(dir, &mut files)?;
        let mut out = CrdSchemas::default();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let Ok(value) = <Value as serde::Deserialize>::deserialize(doc) else {
                    continue;
                };
                out.add_crd(&value);
            }
        }
        if out.schemas.is_empty() {
            return Err(format!(
                "no CustomResourceDefinition found under {}",
                dir.display()
            ));
        }
        Ok(out)
    }

    /// Load from [`schemas_dir`].
    pub fn load_default() -> Result<CrdSchemas, String> {
        Self::load_dir(&schemas_dir()?)
    }

    fn add_crd(&mut self, crd: &Value) {
        if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            return;
        }
        let spec = crd.get("spec");
        let group = spec.and_then(|s| s.get("group")).and_then(Value::as_str);
        let kind = spec
            .and_then(|s| s.get("names"))
            .and_then(|n| n.get("kind"))
            .and_then(Value::as_str);
        let (Some(group), Some(kind)) = (group, kind) else {
            return;
        };
        let versions = spec
            .and_then(|s| s.get("versions"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for v in versions {
            let served = v.get("served").and_then(Value::as_bool).unwrap_or(false);
            let name = v.get("name").and_then(Value::as_str);
            let schema = v.get("schema").and_then(|s| s.get("openAPIV3Schema"));
            if let (true, Some(name), Some(schema)) = (served, name, schema) {
                let mut schema = schema.clone();
                // The API server handles the envelope itself; some CRDs
                // (Istio's) list only `spec` and `status`.
                if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                    props
                        .entry("apiVersion")
                        .or_insert(serde_json::json!({"type": "string"}));
                    props
                        .entry("kind")
                        .or_insert(serde_json::json!({"type": "string"}));
                    props
                        .entry("metadata")
                        .or_insert(serde_json::json!({"type": "object"}));
                }
                close_objects(&mut schema);
                self.schemas
                    .insert((format!("{group}/{name}"), kind.to_string()), schema);
            }
        }
    }

    /// Every `(apiVersion, kind)` known.
    pub fn kinds(&self) -> Vec<(String, String)> {
        let mut k: Vec<_> = self.schemas.keys().cloned().collect();
        k.sort();
        k
    }

    /// Validate one object; the errors name the JSON path of each problem.
    pub fn validate(&self, object: &Value) -> Result<(), Vec<String>> {
        let api = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let key = (api.to_string(), kind.to_string());
        let Some(schema) = self.schemas.get(&key) else {
            return Err(vec![format!(
                "no served CRD version for apiVersion {api:?} kind {kind:?}"
            )]);
        };
        let cached = self.compiled.lock().ok().and_then(|c| c.get(&key).cloned());
        let validator = match cached {
            Some(v) => v,
            None => {
                let v =
                    Arc::new(jsonschema::validator_for(schema).map_err(|e| {
                        vec![format!("schema of {api} {kind} does not compile: {e}")]
                    })?);
                if let Ok(mut c) = self.compiled.lock() {
                    c.insert(key, v.clone());
                }
                v
            }
        };
        let errors: Vec<String> = validator
            .iter_errors(object)
            .map(|e| format!("{api} {kind} at {}: {e}", e.instance_path))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Validate every document of a (multi-document) YAML text.
    pub fn validate_yaml(&self, text: &str) -> Result<usize, Vec<String>> {
        let mut n = 0;
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = <Value as serde::Deserialize>::deserialize(doc)
                .map_err(|e| vec![format!("not YAML: {e}")])?;
            if value.is_null() || value == Value::Object(Map::new()) {
                continue;
            }
            self.validate(&value)?;
            n += 1;
        }
        Ok(n)
    }
}
