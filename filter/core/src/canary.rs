//! The `canaries[]` entries of the plugin configuration: a canary declared as
//! its users think of it (service + stable version + canary version, or explicit
//! clusters) and resolved, once at plugin start, to the Envoy cluster names its
//! mesh generates ([`crate::naming`]). Every rejection names the field, like
//! the rest of [`crate::config`].

use crate::config::{err, ConfigError, Fields};
use crate::naming::{self, ClusterMatch};
use serde_json::Value;

/// Which mesh's naming a canary was declared in (how its cluster names were derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Plain Envoy: cluster names given explicitly.
    Envoy,
    /// Istio: `outbound|<port>|<subset>|<host>`.
    Istio,
    /// Kuma / Kong Mesh unified naming: `kri_msvc_<mesh>_<zone>_<namespace>_<name>_<port>`.
    Kuma,
    /// Kuma / Kong Mesh 2.x legacy naming: `<mesh>_<name>_<namespace>_<zone>_msvc_<port>`.
    KumaLegacy,
}

impl Naming {
    /// The value of the `naming` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Naming::Envoy => "envoy",
            Naming::Istio => "istio",
            Naming::Kuma => "kuma",
            Naming::KumaLegacy => "kuma-legacy",
        }
    }
}

/// One managed canary, as declared (service + versions) and resolved to the
/// Envoy cluster names of its mesh ([`crate::naming`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanarySpec {
    /// Operator-facing name, unique.
    pub name: String,
    /// The naming scheme its clusters were derived with.
    pub naming: Naming,
    /// Optional restriction to one `xds.route_name` (plain Envoy); `None`
    /// matches on every route that sends to the canary's clusters.
    pub route: Option<String>,
    /// The stable version's cluster(s).
    pub stable: ClusterMatch,
    /// The canary version's cluster(s).
    pub canary: ClusterMatch,
}

pub(crate) const CANARY_FIELDS: &[&str] = &[
    "name",
    "naming",
    "route",
    "stable_cluster",
    "canary_cluster",
    "service",
    "port",
    "port_name",
    "stable_subset",
    "canary_subset",
    "stable_version",
    "canary_version",
    "stable_service",
    "canary_service",
    "mesh",
    "zone",
    "namespace",
];
/// Which keys each naming scheme accepts besides `name`, `naming` and `route`.
const ENVOY_KEYS: &[&str] = &["stable_cluster", "canary_cluster"];
const ISTIO_KEYS: &[&str] = &[
    "service",
    "port",
    "stable_subset",
    "canary_subset",
    "stable_version",
    "canary_version",
];
const KUMA_KEYS: &[&str] = &[
    "service",
    "port",
    "port_name",
    "stable_version",
    "canary_version",
    "stable_service",
    "canary_service",
    "mesh",
    "zone",
    "namespace",
];

pub(crate) fn parse_canary(path: &str, item: &Value) -> Result<CanarySpec, ConfigError> {
    let c = Fields::new(path, item, CANARY_FIELDS)?;
    let name = c.required_string("name")?.to_string();
    let has = |k: &str| c.get(k).is_some();
    let naming = match c.string("naming")? {
        Some("envoy") => Naming::Envoy,
        Some("istio") => Naming::Istio,
        Some("kuma") => Naming::Kuma,
        Some("kuma-legacy") => Naming::KumaLegacy,
        Some(other) => {
            return Err(err(
                c.path("naming"),
                format!("must be \"envoy\", \"istio\", \"kuma\" or \"kuma-legacy\", got \"{other}\""),
            ))
        }
        // Inferred from the fields the older declarations used.
        None if has("stable_cluster") || has("canary_cluster") || has("route") => Naming::Envoy,
        None if has("stable_subset") || has("canary_subset") => Naming::Istio,
        None => {
            return Err(err(
                c.path("naming"),
                "missing (required): \"kuma\" or \"kuma-legacy\" (service or MeshService names + port), \"istio\" (service host + subsets), or give stable_cluster + canary_cluster (plain Envoy)",
            ))
        }
    };
    let allowed = match naming {
        Naming::Envoy => ENVOY_KEYS,
        Naming::Istio => ISTIO_KEYS,
        Naming::Kuma | Naming::KumaLegacy => KUMA_KEYS,
    };
    for key in CANARY_FIELDS {
        if !["name", "naming", "route"].contains(key) && !allowed.contains(key) && has(key) {
            return Err(err(
                c.path(key),
                format!(
                    "not used with naming \"{}\" (its fields: {})",
                    naming.as_str(),
                    allowed.join(", ")
                ),
            ));
        }
    }
    let route = c.string("route")?.map(str::to_string);
    // Either field of a pair of aliases (Istio subset = version).
    let either = |a: &str, b: &str| -> Result<&str, ConfigError> {
        match (c.string(a)?, c.string(b)?) {
            (Some(_), Some(_)) => Err(err(c.path(b), format!("give {a} or {b}, not both"))),
            (Some(v), None) | (None, Some(v)) => Ok(v),
            (None, None) => Err(err(c.path(a), "missing (required)")),
        }
    };
    let port = |required: bool| -> Result<Option<u16>, ConfigError> {
        if !required && c.get("port").is_none() {
            return Ok(None);
        }
        if c.get("port").is_none() {
            return Err(err(
                c.path("port"),
                "missing (required): the service port, e.g. 8080",
            ));
        }
        Ok(Some(c.uint("port", 0, 1, 65_535)? as u16))
    };
    let (stable, canary, canary_field) = match naming {
        Naming::Envoy => (
            ClusterMatch::Exact(c.required_string("stable_cluster")?.to_string()),
            ClusterMatch::Exact(c.required_string("canary_cluster")?.to_string()),
            "canary_cluster",
        ),
        Naming::Istio => {
            let host = c.required_string("service")?;
            let stable = either("stable_subset", "stable_version")?;
            let canary = either("canary_subset", "canary_version")?;
            let side = |subset: &str| match port(false) {
                Ok(Some(p)) => Ok(ClusterMatch::Exact(naming::istio_cluster(p, subset, host))),
                Ok(None) => Ok(ClusterMatch::IstioSubset {
                    subset: subset.to_string(),
                    host: host.to_string(),
                }),
                Err(e) => Err(e),
            };
            let field = if has("canary_subset") {
                "canary_subset"
            } else {
                "canary_version"
            };
            (side(stable)?, side(canary)?, field)
        }
        Naming::Kuma | Naming::KumaLegacy => {
            let (stable_svc, canary_svc, canary_field) =
                match (has("stable_service") || has("canary_service"), has("service")) {
                    (true, true) => {
                        return Err(err(
                            c.path("service"),
                            "give stable_service + canary_service (MeshService names), or service + stable_version + canary_version, not both",
                        ))
                    }
                    (true, false) => {
                        if has("stable_version") || has("canary_version") {
                            return Err(err(
                                c.path("stable_version"),
                                "versions go with service, not with stable_service/canary_service",
                            ));
                        }
                        (
                            c.required_string("stable_service")?.to_string(),
                            c.required_string("canary_service")?.to_string(),
                            "canary_service",
                        )
                    }
                    (false, true) => {
                        let service = c.required_string("service")?;
                        (
                            naming::version_service(service, c.required_string("stable_version")?),
                            naming::version_service(service, c.required_string("canary_version")?),
                            "canary_version",
                        )
                    }
                    (false, false) => {
                        return Err(err(
                            c.path("stable_service"),
                            "missing (required): give stable_service + canary_service (MeshService names), or service + stable_version + canary_version",
                        ))
                    }
                };
            let p = port(true)?.unwrap_or_default();
            let mesh = c.string("mesh")?.unwrap_or("default");
            let zone = c.string("zone")?.unwrap_or("default");
            // An empty namespace (universal mode) is the default and may be written "".
            let namespace = match c.get("namespace") {
                Some(Value::String(s)) if s.is_empty() => "",
                _ => c.string("namespace")?.unwrap_or(""),
            };
            let cluster = |svc: &str| -> Result<ClusterMatch, ConfigError> {
                Ok(ClusterMatch::Exact(match naming {
                    Naming::KumaLegacy => {
                        if has("port_name") {
                            return Err(err(
                                c.path("port_name"),
                                "not used with naming \"kuma-legacy\" (legacy names carry the port number)",
                            ));
                        }
                        naming::kuma_legacy_cluster(mesh, svc, namespace, zone, p)
                    }
                    _ => {
                        let section = match c.string("port_name")? {
                            Some(n) => n.to_string(),
                            None => p.to_string(),
                        };
                        naming::kuma_kri_cluster(mesh, zone, namespace, svc, &section)
                    }
                }))
            };
            (cluster(&stable_svc)?, cluster(&canary_svc)?, canary_field)
        }
    };
    if stable == canary {
        return Err(err(
            c.path(canary_field),
            format!(
                "must differ from the stable side (both resolve to {})",
                stable.describe()
            ),
        ));
    }
    Ok(CanarySpec {
        name,
        naming,
        route,
        stable,
        canary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;

    fn reject(json: &str) -> ConfigError {
        PluginConfig::parse(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn canaries_by_service_and_version_derive_mesh_names() {
        use crate::naming::ClusterMatch::{Exact, IstioSubset};
        let c = PluginConfig::parse(
            br#"{"canaries":[
              {"name":"a","naming":"kuma","stable_service":"llm-gateway-v1","canary_service":"llm-gateway-v2","port":8080},
              {"name":"b","naming":"kuma","mesh":"m","zone":"z","namespace":"ml","service":"gw","stable_version":"v1","canary_version":"v2","port":80,"port_name":"http"},
              {"name":"c","naming":"kuma-legacy","zone":"zone-1","namespace":"ml","service":"gw","stable_version":"v1","canary_version":"v2","port":8080},
              {"name":"d","naming":"istio","service":"r.ns.svc.cluster.local","stable_version":"v1","canary_version":"v2","port":9080},
              {"name":"e","service":"r.ns.svc.cluster.local","stable_subset":"v1","canary_subset":"v2"},
              {"name":"f","stable_cluster":"s","canary_cluster":"c"}]}"#,
        )
        .unwrap()
        .canaries;
        let got: Vec<(Naming, &ClusterMatch, &ClusterMatch)> =
            c.iter().map(|c| (c.naming, &c.stable, &c.canary)).collect();
        assert_eq!(
            got[0].1,
            &Exact("kri_msvc_default_default__llm-gateway-v1_8080".into())
        );
        assert_eq!(got[1].2, &Exact("kri_msvc_m_z_ml_gw-v2_http".into()));
        assert_eq!(got[2].1, &Exact("default_gw-v1_ml_zone-1_msvc_8080".into()));
        assert_eq!(
            got[3].2,
            &Exact("outbound|9080|v2|r.ns.svc.cluster.local".into())
        );
        assert_eq!(
            got[4].1,
            &IstioSubset {
                subset: "v1".into(),
                host: "r.ns.svc.cluster.local".into()
            }
        );
        assert_eq!((got[5].0, got[5].1), (Naming::Envoy, &Exact("s".into())));
        assert!(c.iter().all(|c| c.route.is_none()));
    }

    #[test]
    fn canary_declaration_errors_name_the_field() {
        let canary =
            |body: &str| reject(&format!(r#"{{"canaries":[{{"name":"c",{body}}}]}}"#)).field;
        assert_eq!(
            canary(r#""naming":"kuma","service":"s","stable_version":"v1","canary_version":"v2""#),
            "canaries[0].port"
        );
        assert_eq!(
            canary(r#""naming":"kuma","port":80"#),
            "canaries[0].stable_service"
        );
        assert_eq!(
            canary(r#""naming":"kuma","service":"s","stable_version":"v1","port":80"#),
            "canaries[0].canary_version"
        );
        assert_eq!(
            canary(r#""naming":"kuma","stable_service":"a","canary_service":"a","port":80"#),
            "canaries[0].canary_service"
        );
        assert_eq!(
            canary(r#""naming":"kuma","stable_service":"a","canary_service":"b","port":70000"#),
            "canaries[0].port"
        );
        assert_eq!(
            canary(
                r#""naming":"kuma-legacy","stable_service":"a","canary_service":"b","port":80,"port_name":"http""#
            ),
            "canaries[0].port_name"
        );
        assert_eq!(
            canary(
                r#""naming":"istio","service":"h","stable_version":"v1","canary_subset":"v2","subset":"x""#
            ),
            "canaries[0].subset"
        );
        assert_eq!(
            canary(
                r#""naming":"istio","service":"h","stable_version":"v1","canary_version":"v2","zone":"z""#
            ),
            "canaries[0].zone"
        );
        assert_eq!(
            canary(
                r#""naming":"istio","service":"h","stable_version":"v1","stable_subset":"v1","canary_version":"v2""#
            ),
            "canaries[0].stable_version"
        );
        assert_eq!(canary(r#""naming":"linkerd""#), "canaries[0].naming");
        assert_eq!(canary(r#""service":"h""#), "canaries[0].naming");
        assert_eq!(
            canary(r#""stable_cluster":"a","canary_cluster":"b","port":8080"#),
            "canaries[0].port"
        );
    }
}
