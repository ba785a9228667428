//! Envoy names a mesh gives a service's versions, derived from how users
//! declare a canary (service + stable version + canary version).
//!
//! Pure functions, one per mesh and naming generation; the sources and
//! versions each scheme was read from are listed in `filter/README.md`
//! ("Canary declaration and mesh naming"). The filter never needs a route
//! name from here: a request belongs to a canary by the *cluster* its route
//! selected (see [`crate::steering`]), so per-rule route names (hashes on
//! Kuma 2.x) do not matter. [`kuma_kri_route`] exists for diagnostics and
//! tests.

/// How a canary's stable or canary side is recognised among Envoy cluster names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterMatch {
    /// One exact cluster name.
    Exact(String),
    /// Istio `outbound|<any port>|<subset>|<host>`: a service canary whose port
    /// was not given matches the subset on every port of the host.
    IstioSubset {
        /// Subset name (the DestinationRule's `subsets[].name`).
        subset: String,
        /// Service host, e.g. `reviews.default.svc.cluster.local`.
        host: String,
    },
}

impl ClusterMatch {
    /// Whether `cluster` is this side.
    pub fn matches(&self, cluster: &[u8]) -> bool {
        match self {
            ClusterMatch::Exact(name) => cluster == name.as_bytes(),
            ClusterMatch::IstioSubset { subset, host } => istio_subset_host(cluster)
                .is_some_and(|(s, h)| s == subset.as_bytes() && h == host.as_bytes()),
        }
    }

    /// The expected name, for messages (`outbound|*|v2|reviews…` for any port).
    pub fn describe(&self) -> String {
        match self {
            ClusterMatch::Exact(name) => name.clone(),
            ClusterMatch::IstioSubset { subset, host } => format!("outbound|*|{subset}|{host}"),
        }
    }
}

/// Istio (all releases since 1.0, `pilot/pkg/model` `BuildSubsetKey`):
/// `outbound|<port>|<subset>|<host>`.
pub fn istio_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// Parse an Istio outbound cluster name `outbound|port|subset|host` into
/// `(subset, host)`.
pub fn istio_subset_host(cluster: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = cluster.split(|b| *b == b'|');
    let direction = parts.next()?;
    let _port = parts.next()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    (direction == b"outbound" && parts.next().is_none()).then_some((subset, host))
}

/// Kuma unified naming (KRI; Kuma with unified resource naming enabled, as
/// on the main line recorded in `../shared/reference/kuma-main-universal/`): a MeshService port's cluster is
/// `kri_msvc_<mesh>_<zone>_<namespace>_<name>_<section>` where `section` is the
/// port's name, or its number when unnamed. Universal mode has an empty
/// namespace (`kri_msvc_default_default__llm-gateway-v1_8080`, as recorded
/// from a real control plane).
pub fn kuma_kri_cluster(
    mesh: &str,
    zone: &str,
    namespace: &str,
    name: &str,
    section: &str,
) -> String {
    format!("kri_msvc_{mesh}_{zone}_{namespace}_{name}_{section}")
}

/// Kuma unified naming of a MeshHTTPRoute `to[]` entry's Envoy routes:
/// `kri_mhttpr_<mesh>_<zone>_<namespace>_<route>_rule_<index>`; every rule of
/// one `to[]` entry (header rules and the weighted default) shares it.
pub fn kuma_kri_route(
    mesh: &str,
    zone: &str,
    namespace: &str,
    route: &str,
    index: usize,
) -> String {
    format!("kri_mhttpr_{mesh}_{zone}_{namespace}_{route}_rule_{index}")
}

/// Kuma 2.x legacy naming (Kuma / Kong Mesh 2.x without unified resource
/// naming, MeshService destinations, `destinationname.ResolveLegacyFromKRI`):
/// `<mesh>_<name>_<namespace>_<zone>_msvc_<port>` with the port *number*; the
/// zone is the real zone name and an empty namespace (universal) leaves two
/// underscores. Its routes are named per rule by a hash of the rule's matches,
/// so header rules and the default rule get different names.
pub fn kuma_legacy_cluster(
    mesh: &str,
    name: &str,
    namespace: &str,
    zone: &str,
    port: u16,
) -> String {
    format!("{mesh}_{name}_{namespace}_{zone}_msvc_{port}")
}

/// The MeshService name of one version of a service when canaries are declared
/// by `version` label: Vigil's Kong Mesh manifests select one MeshService per
/// version, named `<service>-<version>` (e.g. `llm-gateway-v1`).
pub fn version_service(service: &str, version: &str) -> String {
    format!("{service}-{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_per_scheme() {
        assert_eq!(
            istio_cluster(9080, "v2", "reviews.default.svc.cluster.local"),
            "outbound|9080|v2|reviews.default.svc.cluster.local"
        );
        // The real Kuma main-line dump (../shared/reference/kuma-main-universal).
        assert_eq!(
            kuma_kri_cluster("default", "default", "", "llm-gateway-v1", "8080"),
            "kri_msvc_default_default__llm-gateway-v1_8080"
        );
        assert_eq!(
            kuma_kri_route("default", "default", "", "llm-gateway-canary", 0),
            "kri_mhttpr_default_default__llm-gateway-canary_rule_0"
        );
        assert_eq!(
            kuma_legacy_cluster("default", "llm-gateway-v1", "ml", "zone-1", 8080),
            "default_llm-gateway-v1_ml_zone-1_msvc_8080"
        );
        assert_eq!(
            kuma_legacy_cluster("default", "llm-gateway-v1", "", "default", 8080),
            "default_llm-gateway-v1__default_msvc_8080"
        );
        assert_eq!(version_service("llm-gateway", "v2"), "llm-gateway-v2");
    }

    #[test]
    fn matching() {
        let any_port = ClusterMatch::IstioSubset {
            subset: "v2".into(),
            host: "reviews.default.svc.cluster.local".into(),
        };
        assert!(any_port.matches(b"outbound|9080|v2|reviews.default.svc.cluster.local"));
        assert!(any_port.matches(b"outbound|80|v2|reviews.default.svc.cluster.local"));
        assert!(!any_port.matches(b"outbound|9080|v1|reviews.default.svc.cluster.local"));
        assert!(!any_port.matches(b"inbound|9080|v2|reviews.default.svc.cluster.local"));
        assert!(!any_port.matches(b"v2"));
        assert_eq!(istio_subset_host(b"inbound|9080||"), None);
        let exact = ClusterMatch::Exact("a".into());
        assert!(exact.matches(b"a") && !exact.matches(b"ab"));
        assert_eq!(
            any_port.describe(),
            "outbound|*|v2|reviews.default.svc.cluster.local"
        );
    }
}
