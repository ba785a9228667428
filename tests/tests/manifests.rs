//! The mesh manifests validate against the real CRDs in `../shared/schemas` (the
//! `openAPIV3Schema` of the exact served version, strict about unknown fields), and a
//! deliberately broken manifest is refused with messages naming the field.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use serde_json::Value;
use vigil_e2e::mesh::{documents, istio_dir, kong_dir};
use vigil_e2e::repo_root;
use vigil_e2e::schema::{validate_documents, Catalog};

fn catalog() -> Catalog {
    Catalog::load_shared().unwrap_or_else(|e| panic!("{e}"))
}

fn kinds(dir: &std::path::Path) -> BTreeSet<String> {
    documents(dir)
        .unwrap()
        .iter()
        .filter_map(|(_, d)| d.get("kind").and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[test]
fn every_manifest_validates_against_the_crds() {
    let c = catalog();
    for dir in [istio_dir(), kong_dir()] {
        match c.validate_dir(&dir) {
            Ok(files) => {
                for (f, n) in files {
                    println!(
                        "valid: {} ({n} documents)",
                        f.strip_prefix(repo_root()).unwrap().display()
                    );
                }
            }
            Err(errors) => panic!("{} is not valid:\n{}", dir.display(), errors.join("\n")),
        }
    }
    let istio = kinds(&istio_dir());
    for k in [
        "WasmPlugin",
        "VirtualService",
        "DestinationRule",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "Deployment",
        "Service",
        "ServiceAccount",
        "IstioOperator",
    ] {
        assert!(istio.contains(k), "istio-manifests/ has no {k}: {istio:?}");
    }
    let kong = kinds(&kong_dir());
    for k in [
        "MeshProxyPatch",
        "MeshHTTPRoute",
        "MeshMetric",
        "MeshTrafficPermission",
    ] {
        assert!(
            kong.contains(k),
            "kong-mesh-manifests/ has no {k}: {kong:?}"
        );
    }
}

#[test]
fn broken_manifest_is_refused_with_readable_messages() {
    let path = repo_root().join("tests/fixtures/broken-wasmplugin.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let errors = catalog()
        .validate_str(&text, "broken-wasmplugin.yaml")
        .unwrap_err();
    println!("{}", errors.join("\n"));
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    assert!(
        errors.iter().all(|e| e
            .starts_with("broken-wasmplugin.yaml: document 1 (WasmPlugin apps/vigil-broken): ")),
        "{errors:#?}"
    );
    assert!(
        has("spec.failStrategy: \"FAIL_SAFE\" is not one of"),
        "{errors:#?}"
    );
    assert!(
        has("spec.match[0].mode: \"OUTBOUND\" is not one of"),
        "{errors:#?}"
    );
    assert!(has("spec.priority: \"high\" is not of type"), "{errors:#?}");
    assert!(
        has("spec: Additional properties are not allowed ('phaze' was unexpected)"),
        "{errors:#?}"
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn versions_kinds_and_core_objects_are_checked() {
    let c = catalog();
    // A version the CRD does not serve.
    let e = c.validate_str("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}\nspec: {}\n", "t").unwrap_err();
    assert!(
        e[0].contains("not a served version of VirtualService (served: v1, v1alpha3, v1beta1)"),
        "{e:?}"
    );
    // An older served version validates against its own schema.
    c.validate_str("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: x, namespace: ml}\nspec: {hosts: [a]}\n", "t").unwrap();
    // No CRD, not core.
    let e = c
        .validate_str(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
            "t",
        )
        .unwrap_err();
    assert!(e[0].contains("no CRD for example.com/v1 Widget"), "{e:?}");
    // Core kinds: structural checks.
    let e = c.validate_str("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: Bad_Name}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: c}]}\n", "t").unwrap_err();
    let all = e.join("\n");
    assert!(all.contains("metadata.name"), "{all}");
    assert!(all.contains("spec.selector.matchLabels.app"), "{all}");
    assert!(all.contains("containers[0].image"), "{all}");
    // metadata is ObjectMeta-checked on CRD kinds too.
    let e = c.validate_str("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {namespace: x}\nspec: {}\n", "t").unwrap_err();
    assert!(
        e[0].contains("metadata: \"name\" is a required property"),
        "{e:?}"
    );
    // int-or-string (Kuma requestMirror.percentage) accepts both.
    for pct in ["50", "\"50\""] {
        let doc = format!("apiVersion: kuma.io/v1alpha1\nkind: MeshHTTPRoute\nmetadata: {{name: m, namespace: ml}}\nspec:\n  to:\n    - targetRef: {{kind: Mesh}}\n      rules:\n        - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n          default:\n            filters:\n              - type: RequestMirror\n                requestMirror: {{percentage: {pct}, backendRef: {{kind: MeshService, labels: {{a: b}}}}}}\n");
        c.validate_str(&doc, "t")
            .unwrap_or_else(|e| panic!("{pct}: {e:?}"));
    }
}

/// The reusable entry point another crate (e.g. the control service's renderer) calls.
#[test]
fn validate_documents_api() {
    let text = std::fs::read_to_string(istio_dir().join("30-security.yaml")).unwrap();
    validate_documents(&text).unwrap();
    let e = validate_documents("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: STRICTEST}}\n").unwrap_err();
    assert!(e[0].contains("spec.mtls.mode"), "{e:?}");
}

/// The mesh config makes Vigil's labels and metrics reach Prometheus; the MeshMetric
/// includes them on Kong Mesh.
#[test]
fn mesh_config_exposes_vigil_metrics() {
    let op =
        vigil_e2e::mesh::document(&istio_dir(), "10-mesh-config.yaml", "IstioOperator").unwrap();
    let dc = op.pointer("/spec/meshConfig/defaultConfig").unwrap();
    let tags: Vec<&str> = dc["extraStatTags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for t in ["route", "cluster", "to", "reason"] {
        assert!(tags.contains(&t), "extraStatTags lacks {t}");
    }
    let prefixes: Vec<&str> = dc
        .pointer("/proxyStatsMatcher/inclusionPrefixes")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(prefixes.contains(&"wasmcustom"), "{prefixes:?}");
    let mm = vigil_e2e::mesh::document(&kong_dir(), "30-meshmetric.yaml", "MeshMetric").unwrap();
    let include = mm
        .pointer("/spec/default/sidecar/profiles/include")
        .unwrap()
        .to_string();
    assert!(include.contains("vigil_"), "{include}");
    // Include rules match Prometheus names: internal-stat prefixes select nothing.
    assert!(
        !include.contains("wasmcustom") && !include.contains("wasm."),
        "{include}"
    );
}

/// Kong Mesh universal manifests: each converts to the Kubernetes object the CRD schema
/// validates, and passes the structural checks kumactl applies to the fields we use
/// (SPIFFE ID syntax, no Kubernetes selectors in universal mode); the Kubernetes ones
/// pass the same SPIFFE checks. The filter value in every MeshProxyPatch and the
/// pluginConfig of every WasmPlugin pass the filter's own configuration validation.
#[test]
fn kong_mesh_universal_and_filter_values_pass_what_kumactl_and_the_filter_enforce() {
    use vigil_e2e::kuma::{plugin_errors, structural_errors, universal_to_kubernetes};
    use vigil_e2e::mesh::kong_universal_dir;
    let c = catalog();
    let universal = documents(&kong_universal_dir()).unwrap();
    let kinds: BTreeSet<&str> = universal
        .iter()
        .filter_map(|(_, d)| d.get("type").and_then(Value::as_str))
        .collect();
    assert_eq!(
        kinds,
        [
            "MeshHTTPRoute",
            "MeshMetric",
            "MeshProxyPatch",
            "MeshTrafficPermission"
        ]
        .into_iter()
        .collect()
    );
    for (f, d) in &universal {
        let k8s = universal_to_kubernetes(d).unwrap();
        c.validate_value(&k8s)
            .unwrap_or_else(|e| panic!("{}: {e:#?}", f.display()));
        let e = structural_errors(d, true);
        assert!(e.is_empty(), "{}: {e:#?}", f.display());
        let e = plugin_errors(d);
        assert!(e.is_empty(), "{}: {e:#?}", f.display());
        println!(
            "universal ok: {}",
            f.strip_prefix(repo_root()).unwrap().display()
        );
    }
    for dir in [kong_dir(), istio_dir()] {
        for (f, d) in documents(&dir).unwrap() {
            let mut e = structural_errors(&d, false);
            e.extend(plugin_errors(&d));
            assert!(e.is_empty(), "{}: {e:#?}", f.display());
        }
    }
    // What kumactl refused on the real control plane, and the universal-mode selector.
    let old = "type: MeshTrafficPermission\nname: m\nmesh: default\nspec:\n  targetRef: {kind: Mesh}\n  rules:\n    - default:\n        allow:\n          - spiffeID: {type: Prefix, value: \"spiffe://default/ns/apps/\"}\n";
    let doc: Value = serde_yaml::from_str(old).unwrap();
    let e = structural_errors(&doc, true);
    assert!(
        e.iter().any(
            |e| e.contains("spec.rules[0].default.allow[0].spiffeID.value")
                && e.contains("trailing slash")
        ),
        "{e:?}"
    );
}

/// A misspelled key inside the filter value is accepted by the CRD schemas (the value
/// is a string / a free-form object) and by the control planes; our check refuses it
/// and names the field.
#[test]
fn misspelled_keys_in_filter_values_are_caught() {
    use vigil_e2e::kuma::plugin_errors;
    let c = catalog();
    let patch =
        vigil_e2e::mesh::document(&kong_dir(), "10-meshproxypatch.yaml", "MeshProxyPatch").unwrap();
    let value = patch
        .pointer("/spec/default/appendModifications/1/httpFilter/value")
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    for (from, to, field) in [
        (
            "\"stable_version\"",
            "\"stable_verison\"",
            "canaries[0].stable_verison: unknown field",
        ),
        (
            "failure_policy:",
            "failure_polcy:",
            "typed_config.config.failure_polcy: unknown field",
        ),
        (
            "\"mode\":\"steer\"",
            "\"mode\":\"stear\"",
            "mode: must be \"shadow\" or \"steer\"",
        ),
    ] {
        assert!(value.contains(from), "{from}");
        let mut bad = patch.clone();
        *bad.pointer_mut("/spec/default/appendModifications/1/httpFilter/value")
            .unwrap() = Value::from(value.replacen(from, to, 1));
        c.validate_value(&bad)
            .unwrap_or_else(|e| panic!("the CRD accepts it: {e:?}"));
        let e = plugin_errors(&bad);
        println!("{to}: {e:?}");
        assert!(e.iter().any(|e| e.contains(field)), "{to}: {e:?}");
    }
    let plugin =
        vigil_e2e::mesh::document(&istio_dir(), "51-wasmplugin-file.yaml", "WasmPlugin").unwrap();
    let mut bad = plugin.clone();
    bad["spec"]["pluginConfig"]["canaries"][0]["canary_subest"] = Value::from("v2");
    c.validate_value(&bad)
        .unwrap_or_else(|e| panic!("the CRD accepts it: {e:?}"));
    let e = plugin_errors(&bad);
    println!("canary_subest: {e:?}");
    assert!(
        e.iter()
            .any(|e| e.contains("spec.pluginConfig.canaries[0].canary_subest: unknown field")),
        "{e:?}"
    );
}
