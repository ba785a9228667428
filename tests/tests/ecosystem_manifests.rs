//! The Flagger `Canary` and the Argo Rollouts `AnalysisTemplate` and `Rollout` examples
//! under `deploy/` validate against the real upstream CRDs (unmodified copies in
//! `tests/fixtures/crds/`, repository, path, commit and licence noted there, their
//! SHA-256 checked here), strictly (unknown fields are errors, except where the upstream
//! schema says `x-kubernetes-preserve-unknown-fields`), they point at the endpoints
//! `vigil-control` serves, and broken variants are refused naming the field.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::Value;
use sha2::{Digest, Sha256};
use vigil_e2e::repo_root;
use vigil_e2e::schema::{parse_documents, Catalog};

const FIXTURES: &str = "tests/fixtures/crds";

fn catalog() -> Catalog {
    Catalog::load(&repo_root().join(FIXTURES)).unwrap_or_else(|e| panic!("{e}"))
}

fn doc(rel: &str) -> (String, Value) {
    let text = std::fs::read_to_string(repo_root().join(rel)).unwrap();
    let mut docs = parse_documents(&text).unwrap();
    assert_eq!(docs.len(), 1, "{rel}");
    (text, docs.remove(0))
}

/// Every error of `yaml` (which must be refused).
fn refused(c: &Catalog, yaml: &str, what: &str) -> Vec<String> {
    let errors = c
        .validate_str(yaml, what)
        .expect_err("a broken variant was accepted");
    println!("{what}: {}", errors.join("\n  "));
    errors
}

#[test]
fn fixtures_are_the_unmodified_upstream_files() {
    let readme = std::fs::read_to_string(repo_root().join(FIXTURES).join("README.md")).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(repo_root().join(FIXTURES)).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let sum = format!("{:x}", Sha256::digest(std::fs::read(&path).unwrap()));
        let row = format!("| `{name}` | `{sum}` |");
        assert!(
            readme.contains(&row),
            "{name}: sha256 {sum} is not the one recorded in {FIXTURES}/README.md (edited copy?)"
        );
        assert!(
            readme.contains("Apache-2.0") && readme.contains(&format!("`{name}`")),
            "{name} has no source row"
        );
        n += 1;
    }
    assert_eq!(
        n, 3,
        "expected the Flagger, AnalysisTemplate and Rollout CRDs"
    );
}

#[test]
fn flagger_and_argo_examples_validate_and_name_vigil_endpoints() {
    let c = catalog();
    let kinds = c.served_kinds();
    for (api, kind) in [
        ("flagger.app/v1beta1", "Canary"),
        ("argoproj.io/v1alpha1", "AnalysisTemplate"),
        ("argoproj.io/v1alpha1", "Rollout"),
    ] {
        assert!(kinds.contains(&(api.into(), kind.into())), "{kinds:?}");
    }
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
    // The Rollout uses that template and passes the argument it declares.
    let (_, ro) = doc("deploy/argo-rollouts/rollout.yaml");
    let analysis = &ro["spec"]["strategy"]["canary"]["analysis"];
    assert_eq!(
        analysis["templates"][0]["templateName"],
        at["metadata"]["name"]
    );
    assert_eq!(analysis["args"][0]["name"], at["spec"]["args"][0]["name"]);
    assert_eq!(analysis["args"][0]["value"], canary["metadata"]["name"]);
}

#[test]
fn preserve_unknown_fields_is_honoured_where_upstream_declares_it() {
    let c = catalog();
    // The upstream schema marks `provider.web.jsonBody` x-kubernetes-preserve-unknown-fields.
    let crd = std::fs::read_to_string(
        repo_root()
            .join(FIXTURES)
            .join("argo-analysis-template-crd.yaml"),
    )
    .unwrap();
    let crd = &parse_documents(&crd).unwrap()[0];
    let web = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/metrics/items/properties/provider/properties/web/properties")
        .unwrap();
    assert_eq!(
        web["jsonBody"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert!(web["jsonBody"].get("properties").is_none());

    let (text, _) = doc("deploy/argo-rollouts/analysistemplate.yaml");
    // Anything goes inside jsonBody …
    let free = text.replacen(
        "          method: GET\n",
        "          method: POST\n          jsonBody:\n            canary: \"{{args.canary}}\"\n            nested: {any: [1, \"two\", {deep: true}]}\n",
        1,
    );
    assert_ne!(free, text);
    c.validate_str(&free, "jsonbody.yaml")
        .unwrap_or_else(|e| panic!("jsonBody content refused:\n{}", e.join("\n")));
    // … but not beside it: web itself is strict.
    let typo = text.replacen(
        "          method: GET\n",
        "          method: POST\n          jsonBodyy: {canary: x}\n",
        1,
    );
    let errors = refused(&c, &typo, "jsonbodyy.yaml");
    assert!(errors.iter().any(|e| e.contains("jsonBodyy")), "{errors:?}");

    // Pod-template resources: `limits` is preserve-unknown-fields (no type) upstream.
    let (text, _) = doc("deploy/argo-rollouts/rollout.yaml");
    let free = text.replacen(
        "              protocol: TCP\n",
        "              protocol: TCP\n          resources:\n            limits: {cpu: 500m, memory: 256Mi, example.com/gpu: 1}\n",
        1,
    );
    assert_ne!(free, text);
    c.validate_str(&free, "limits.yaml")
        .unwrap_or_else(|e| panic!("resources.limits refused:\n{}", e.join("\n")));
    let typo = text.replacen(
        "              protocol: TCP\n",
        "              protocol: TCP\n          resourcez: {limits: {cpu: 1}}\n",
        1,
    );
    let errors = refused(&c, &typo, "resourcez.yaml");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.template.spec.containers[0]") && e.contains("resourcez")),
        "{errors:?}"
    );
}

#[test]
fn broken_examples_are_refused_naming_the_field() {
    let c = catalog();
    let (text, _) = doc("deploy/flagger/canary.yaml");
    let bad = text.replacen("type: confirm-promotion", "type: confirm-promote", 1);
    let errors = refused(&c, &bad, "bad-canary.yaml");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.analysis.webhooks[2].type")),
        "{errors:?}"
    );
    let bad = text.replacen("    stepWeight: 10\n", "    stepWeigth: 10\n", 1);
    assert_ne!(bad, text);
    let errors = refused(&c, &bad, "bad-canary.yaml");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.analysis") && e.contains("stepWeigth")),
        "{errors:?}"
    );
    let bad = text.replacen("    threshold: 5\n", "    threshold: five\n", 1);
    let errors = refused(&c, &bad, "bad-canary.yaml");
    assert!(
        errors.iter().any(|e| e.contains("spec.analysis.threshold")),
        "{errors:?}"
    );
    let bad = text.replacen("  provider: istio\n", "", 1).replacen(
        "  targetRef:\n",
        "  targetRef:\n    nam: checkout\n",
        1,
    );
    let errors = refused(&c, &bad, "bad-canary.yaml");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.targetRef") && e.contains("nam")),
        "{errors:?}"
    );

    let (text, _) = doc("deploy/argo-rollouts/analysistemplate.yaml");
    let bad = text.replacen("timeoutSeconds: 10", "timeoutSeconds: ten", 1);
    let errors = refused(&c, &bad, "bad-at.yaml");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.metrics[0].provider.web.timeoutSeconds")),
        "{errors:?}"
    );
    let bad = text.replacen("jsonPath:", "jsonpath:", 1);
    let errors = refused(&c, &bad, "bad-at.yaml");
    assert!(errors.iter().any(|e| e.contains("jsonpath")), "{errors:?}");
    let bad = text.replacen("      provider:\n", "      providr:\n", 1);
    let errors = refused(&c, &bad, "bad-at.yaml");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.metrics[0]") && e.contains("providr")),
        "{errors:?}"
    );

    let (text, _) = doc("deploy/argo-rollouts/rollout.yaml");
    let bad = text.replacen("- templateName: vigil", "- template: vigil", 1);
    let errors = refused(&c, &bad, "bad-rollout.yaml");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.strategy.canary.analysis.templates[0]")
                && e.contains("template")),
        "{errors:?}"
    );
    let bad = text.replacen("- setWeight: 25", "- setWeight: lots", 1);
    let errors = refused(&c, &bad, "bad-rollout.yaml");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.strategy.canary.steps[2].setWeight")),
        "{errors:?}"
    );
}
