//! The GitOps YAML the service renders validates against the CRD schemas of
//! the exact served versions in `../shared/schemas` (Istio
//! `networking.istio.io/v1`, Kuma `kuma.io/v1alpha1`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use serde_json::json;
use vigil_control::machine::{CanaryState, Phase};
use vigil_control::render;
use vigil_control::spec::CanarySpec;
use vigil_e2e::schema::Catalog;

fn schemas() -> Catalog {
    match Catalog::load_shared() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn specs() -> Vec<CanarySpec> {
    vec![
        CanarySpec::from_json_value(
            json!({"name": "reviews", "service": "reviews.bookinfo.svc.cluster.local",
            "stable_subset": "v1", "canary_subset": "v2", "namespace": "bookinfo"}),
        )
        .unwrap(),
        CanarySpec::from_json_value(
            json!({"name": "checkout", "route": "checkout", "stable_cluster": "stable",
            "canary_cluster": "canary", "subset_label": "app.kubernetes.io/version"}),
        )
        .unwrap(),
    ]
}

#[test]
fn rendered_objects_validate_at_every_weight() {
    let schemas = schemas();
    for spec in specs() {
        for (phase, weight) in [
            (Phase::Pending, 0),
            (Phase::Progressing, 10),
            (Phase::WaitingApproval, 50),
            (Phase::Promoted, 100),
            (Phase::RolledBack, 0),
        ] {
            let mut state = CanaryState::new(0);
            state.phase = phase;
            state.weight = weight;
            state.reason =
                "errors: 20.00% vs stable 0.50%, n=200/2000: \"quoted\" & unicode ✓".into();
            for f in render::render(&spec, &state, 42) {
                if let Err(errors) = schemas.validate_value(&f.object) {
                    panic!(
                        "{} {} at {weight}%: {errors:#?}\n{}",
                        spec.name, f.name, f.yaml
                    );
                }
                // The YAML text (what lands in Git) parses back to the same object.
                assert_eq!(schemas.validate_str(&f.yaml, &f.name), Ok(1), "{}", f.yaml);
            }
        }
    }
}

#[test]
fn the_validator_rejects_what_the_api_server_would() {
    let schemas = schemas();
    let spec = &specs()[0];
    let mut state = CanaryState::new(0);
    state.weight = 10;
    let mut vs = render::virtual_service(spec, &state, 1);
    vs["spec"]["http"][2]["route"][0]["weight"] = json!("ninety");
    assert!(schemas.validate_value(&vs).is_err());
    let mut vs = render::virtual_service(spec, &state, 1);
    vs["spec"]["htpp"] = json!([]);
    let errs = schemas.validate_value(&vs).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("htpp")), "{errs:?}");
    let mut route = render::mesh_http_route(spec, &state, 1);
    route["spec"]["to"][0]["rules"][0]["default"]["backendRefs"][0]["kind"] = json!("Pod");
    assert!(schemas.validate_value(&route).is_err());
    let mut vs = render::virtual_service(spec, &state, 1);
    vs["apiVersion"] = json!("networking.istio.io/v9");
    assert!(schemas.validate_value(&vs).is_err());
}
