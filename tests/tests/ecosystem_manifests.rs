//! The Flagger `Canary` and Argo Rollouts `AnalysisTemplate` examples under `deploy/`
//! validate against the upstream CRD schemas (subset fixtures in
//! `tests/fixtures/crds/`, source commits noted there), strictly (unknown fields are
//! errors), they point at the endpoints `vigil-control` serves, and broken variants
//! are refused naming the field.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::Value;
use vigil_e2e::repo_root;
use vigil_e2e::schema::{parse_documents, Catalog};

fn catalog() -> Catalog {
    Catalog::load(&repo_root().join("tests/fixtures/crds")).unwrap_or_else(|e| panic!("{e}"))
}

fn doc(rel: &str) -> (String, Value) {
    let text = std::fs::read_to_string(repo_root().join(rel)).unwrap();
    let mut docs = parse_documents(&text).unwrap();
    assert_eq!(docs.len(), 1, "{rel}");
    (text, docs.remove(0))
}

#[test]
fn flagger_and_argo_examples_validate_and_name_vigil_endpoints() {
    let c = catalog();
    let kinds = c.served_kinds();
    assert!(
        kinds.contains(&("flagger.app/v1beta1".into(), "Canary".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("argoproj.io/v1alpha1".into(), "AnalysisTemplate".into())),
        "{kinds:?}"
    );
    for dir in ["deploy/flagger", "deploy/argo-rollouts"] {
        match c.validate_dir(&repo_root().join(dir)) {
            Ok(files) => println!("valid: {files:?}"),
            Err(e) => panic!("{dir} is not valid:\n{}", e.join("\n")),
        }
    }
    // Every Vigil hook type is wired to the endpoint of the same name.
    let (_, canary) = doc("deploy/flagger/canary.yaml");
    let hooks = canary["spec"]["analysis"]["webhooks"].as_array().unwrap();
    let mut types: Vec<&str> = hooks.iter().map(|h| h["type"].as_str().unwrap()).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "confirm-promotion",
            "confirm-rollout",
            "confirm-traffic-increase",
            "rollback"
        ]
    );
    for h in hooks {
        let t = h["type"].as_str().unwrap();
        let url = h["url"].as_str().unwrap();
        assert!(url.ends_with(&format!("/v1/flagger/{t}")), "{url}");
        assert_eq!(h["metadata"]["vigil_canary"], "checkout");
    }
    let (_, at) = doc("deploy/argo-rollouts/analysistemplate.yaml");
    let m = &at["spec"]["metrics"][0];
    assert!(m["provider"]["web"]["url"]
        .as_str()
        .unwrap()
        .contains("/v1/argo/{{args.canary}}"));
    assert_eq!(m["successCondition"], "result.verdict == \"pass\"");
    assert_eq!(m["failureCondition"], "result.verdict == \"fail\"");
    assert!(m["inconclusiveLimit"].as_u64().is_some());
}

#[test]
fn broken_examples_are_refused_naming_the_field() {
    let c = catalog();
    let (text, _) = doc("deploy/flagger/canary.yaml");
    let bad = text.replacen("type: confirm-promotion", "type: confirm-promote", 1);
    let errors = c.validate_str(&bad, "bad-canary.yaml").unwrap_err();
    println!("{}", errors.join("\n"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.analysis.webhooks[2].type")),
        "{errors:?}"
    );
    let bad = text.replacen("interval: 30s", "interval: soon", 1);
    let errors = c.validate_str(&bad, "bad-canary.yaml").unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("spec.analysis")),
        "{errors:?}"
    );
    let (text, _) = doc("deploy/argo-rollouts/analysistemplate.yaml");
    let bad = text.replacen("timeoutSeconds: 10", "timeoutSeconds: ten", 1);
    let errors = c.validate_str(&bad, "bad-at.yaml").unwrap_err();
    println!("{}", errors.join("\n"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.metrics[0].provider.web.timeoutSeconds")),
        "{errors:?}"
    );
    let bad = text.replacen("jsonPath:", "jsonpath:", 1);
    let errors = c.validate_str(&bad, "bad-at.yaml").unwrap_err();
    assert!(errors.iter().any(|e| e.contains("jsonpath")), "{errors:?}");
}
