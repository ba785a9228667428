//! GitOps output: the mesh objects that put a canary's current weight in
//! force, as YAML ready for a pull request (Argo CD / Flux apply it).
//!
//! Why this exists: teams that let Git, not a controller, own their mesh
//! configuration still want Vigil's decisions; on each weight change or
//! decision the service writes, per canary, into `OUT/<canary>/`:
//!
//! - `istio-virtualservice.yaml` — `networking.istio.io/v1` `VirtualService`:
//!   first the `x-vigil-subset` header routes (`stable` → stable subset,
//!   `canary` → canary subset: the filter's steering keeps working), then
//!   the weighted default route;
//! - `istio-destinationrule.yaml` — `networking.istio.io/v1`
//!   `DestinationRule` with the two subsets (pods told apart by the
//!   `subset_label`, default `version`);
//! - `kong-mesh-meshhttproute.yaml` — `kuma.io/v1alpha1` `MeshHTTPRoute`
//!   with the same header routes and weights. Kong Mesh has no subsets: each
//!   version is its own `MeshService`, selected by the label
//!   `kuma.io/display-name: <service>-<subset>`.
//!
//! Rendering is pure ([`render`]); [`write`] writes atomically (temporary
//! file, then rename) so a reader never sees half a file. Tests validate
//! every rendered object against the CRD schemas (`crate::schema`).

use crate::machine::CanaryState;
use crate::spec::{CanarySpec, Selector};
use serde_json::{json, Value};
use std::path::Path;

/// The routing header the filter sets and the rendered routes match.
pub const SUBSET_HEADER: &str = "x-vigil-subset";

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// File name inside `OUT/<canary>/`.
    pub name: String,
    /// The object (for validation).
    pub object: Value,
    /// YAML text.
    pub yaml: String,
}

struct Names<'a> {
    host: &'a str,
    stable: &'a str,
    canary: &'a str,
}

fn names(spec: &CanarySpec) -> Names<'_> {
    match spec.selector() {
        Selector::Service {
            service,
            stable,
            canary,
        } => Names {
            host: service,
            stable,
            canary,
        },
        Selector::Route {
            route,
            stable,
            canary,
        } => Names {
            host: route,
            stable,
            canary,
        },
    }
}

fn metadata(spec: &CanarySpec, state: &CanaryState, routing_version: u64) -> Value {
    json!({
        "name": format!("{}-vigil", spec.name),
        "namespace": spec.namespace(),
        "labels": {"app.kubernetes.io/managed-by": "vigil", "vigil.io/canary": spec.name},
        "annotations": {
            "vigil.io/phase": state.phase.as_str(),
            "vigil.io/canary-weight": state.weight.to_string(),
            "vigil.io/rollout": state.rollout.to_string(),
            "vigil.io/routing-version": routing_version.to_string(),
            "vigil.io/reason": truncate(&state.reason, 1024),
        },
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or(""))
}

/// The Istio `VirtualService`.
pub fn virtual_service(spec: &CanarySpec, state: &CanaryState, routing_version: u64) -> Value {
    let n = names(spec);
    let w = u32::from(state.weight.min(100));
    let dest = |subset: &str, weight: u32| json!({"destination": {"host": n.host, "subset": subset}, "weight": weight});
    let header_route = |value: &str, subset: &str| {
        json!({
            "name": format!("vigil-{value}"),
            "match": [{"headers": {SUBSET_HEADER: {"exact": value}}}],
            "route": [{"destination": {"host": n.host, "subset": subset}}],
        })
    };
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(spec, state, routing_version),
        "spec": {
            "hosts": [n.host],
            "http": [
                header_route("stable", n.stable),
                header_route("canary", n.canary),
                {"name": "vigil-weighted", "route": [dest(n.stable, 100 - w), dest(n.canary, w)]},
            ],
        },
    })
}

/// The Istio `DestinationRule`.
pub fn destination_rule(spec: &CanarySpec, state: &CanaryState, routing_version: u64) -> Value {
    let n = names(spec);
    let label = spec.subset_label.as_deref().unwrap_or("version");
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": metadata(spec, state, routing_version),
        "spec": {
            "host": n.host,
            "subsets": [
                {"name": n.stable, "labels": {label: n.stable}},
                {"name": n.canary, "labels": {label: n.canary}},
            ],
        },
    })
}

/// The Kong Mesh (Kuma) `MeshHTTPRoute`.
pub fn mesh_http_route(spec: &CanarySpec, state: &CanaryState, routing_version: u64) -> Value {
    let n = names(spec);
    let w = u32::from(state.weight.min(100));
    let service = |subset: &str| json!({"kind": "MeshService", "labels": {"kuma.io/display-name": format!("{}-{subset}", n.host)}});
    let backend = |subset: &str, weight: u32| {
        let mut b = service(subset);
        if let Some(o) = b.as_object_mut() {
            o.insert("weight".into(), json!(weight));
        }
        b
    };
    let header_rule = |value: &str, subset: &str| {
        json!({
            "matches": [{"headers": [{"name": SUBSET_HEADER, "type": "Exact", "value": value}]}],
            "default": {"backendRefs": [backend(subset, 1)]},
        })
    };
    json!({
        "apiVersion": "kuma.io/v1alpha1",
        "kind": "MeshHTTPRoute",
        "metadata": metadata(spec, state, routing_version),
        "spec": {
            "targetRef": {"kind": "Mesh"},
            "to": [{
                "targetRef": service(n.stable),
                "rules": [
                    header_rule("stable", n.stable),
                    header_rule("canary", n.canary),
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "default": {"backendRefs": [backend(n.stable, 100 - w), backend(n.canary, w)]},
                    },
                ],
            }],
        },
    })
}

/// Every file of a canary.
pub fn render(spec: &CanarySpec, state: &CanaryState, routing_version: u64) -> Vec<RenderedFile> {
    [
        (
            "istio-virtualservice.yaml",
            virtual_service(spec, state, routing_version),
        ),
        (
            "istio-destinationrule.yaml",
            destination_rule(spec, state, routing_version),
        ),
        (
            "kong-mesh-meshhttproute.yaml",
            mesh_http_route(spec, state, routing_version),
        ),
    ]
    .into_iter()
    .map(|(name, object)| RenderedFile {
        name: name.to_string(),
        yaml: serde_yaml::to_string(&object).unwrap_or_default(),
        object,
    })
    .collect()
}

/// Write a canary's files into `out/<canary>/` atomically.
pub fn write(out: &Path, canary: &str, files: &[RenderedFile]) -> std::io::Result<()> {
    // The canary name becomes one directory under `out`, never a path that
    // leaves it (names are validated as DNS labels; this holds even so).
    let mut parts = Path::new(canary).components();
    let single = matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    );
    if !single || canary.contains(['/', '\\']) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("canary name {canary:?} is not a single path component"),
        ));
    }
    let dir = out.join(canary);
    std::fs::create_dir_all(&dir)?;
    for f in files {
        let path = dir.join(&f.name);
        let tmp = dir.join(format!(".{}.tmp", f.name));
        std::fs::write(
            &tmp,
            format!(
                "# Rendered by vigil-control; do not edit by hand.\n{}",
                f.yaml
            ),
        )?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Phase;

    #[test]
    fn weights_and_header_routes() {
        let spec = CanarySpec::from_json_value(
            json!({"name":"reviews","service":"reviews.default.svc.cluster.local",
            "stable_subset":"v1","canary_subset":"v2","namespace":"shop"}),
        )
        .unwrap();
        let mut st = CanaryState::new(0);
        st.phase = Phase::Progressing;
        st.weight = 25;
        let vs = virtual_service(&spec, &st, 3);
        assert_eq!(
            vs["spec"]["http"][0]["match"][0]["headers"][SUBSET_HEADER]["exact"],
            "stable"
        );
        assert_eq!(
            vs["spec"]["http"][0]["route"][0]["destination"]["subset"],
            "v1"
        );
        assert_eq!(vs["spec"]["http"][2]["route"][0]["weight"], 75);
        assert_eq!(vs["spec"]["http"][2]["route"][1]["weight"], 25);
        assert_eq!(vs["metadata"]["namespace"], "shop");
        let files = render(&spec, &st, 3);
        assert_eq!(files.len(), 3);
        assert!(files[2].yaml.contains("MeshHTTPRoute"));
        let back: Value = serde_yaml::from_str(&files[0].yaml).unwrap();
        assert_eq!(back, files[0].object);
    }
}
