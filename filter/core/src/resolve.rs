//! What a plugin configuration's canaries resolve to in a real Envoy
//! configuration: the routes and clusters of an admin `/config_dump` (or a
//! bootstrap) each canary matches, with the same matching code the filter runs
//! on traffic ([`crate::steering::cluster_side`], [`crate::steering::route_allowed`]).
//!
//! Used by `vigil-control inspect` and by the tests against the real Kuma
//! dump; the filter itself never parses a dump. A route is *managed* by a
//! canary when it can send a request to the canary's stable or canary
//! cluster; steering additionally needs a route that matches the routing
//! header `<subset_header>: stable` and sends only to stable.

use crate::config::CanarySpec;
use crate::steering::{cluster_side, route_allowed, Side};
use serde_json::Value;

/// One Envoy route of a dump, reduced to what matching needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRoute {
    /// Name of the route configuration (RDS name or the listener's inline one).
    pub route_config: String,
    /// The route's `name` (`xds.route_name`), empty when unnamed.
    pub name: String,
    /// Clusters the route can send to (`cluster` or `weighted_clusters`).
    pub clusters: Vec<String>,
    /// Exact header matches `(name, value)` of the route.
    pub headers: Vec<(String, String)>,
}

/// The clusters and routes of one Envoy configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// Every cluster name (static and dynamic).
    pub clusters: Vec<String>,
    /// Every route of every route configuration.
    pub routes: Vec<DumpRoute>,
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flat_map(|a| a.iter())
}

impl Dump {
    /// Read an admin `/config_dump` document (`{"configs": [...]}`) or a
    /// bootstrap (`{"static_resources": ...}`).
    pub fn from_value(doc: &Value) -> Result<Dump, String> {
        let mut dump = Dump::default();
        let configs: Vec<&Value> = match doc.get("configs").and_then(Value::as_array) {
            Some(c) => c.iter().collect(),
            None if doc.get("static_resources").is_some() => vec![doc],
            None => {
                return Err(
                    "not an Envoy config dump: expected {\"configs\": [...]} (admin /config_dump) or a bootstrap with static_resources".into(),
                )
            }
        };
        for c in &configs {
            for key in [
                "static_clusters",
                "dynamic_active_clusters",
                "dynamic_warming_clusters",
            ] {
                for entry in items(c, key) {
                    if let Some(name) = entry.get("cluster").and_then(|c| str_at(c, "name")) {
                        dump.add_cluster(name);
                    }
                }
            }
            for sr in [
                c.get("static_resources"),
                c.pointer("/bootstrap/static_resources"),
            ]
            .into_iter()
            .flatten()
            {
                for cl in items(sr, "clusters") {
                    if let Some(name) = str_at(cl, "name") {
                        dump.add_cluster(name);
                    }
                }
            }
        }
        let mut seen: Vec<&Value> = Vec::new();
        collect_route_configs(doc, &mut seen);
        // A listener's inline route configuration also appears in the
        // RoutesConfigDump (with an `@type`): keep each distinct one once.
        let mut configs: Vec<Vec<DumpRoute>> = Vec::new();
        for rc in seen {
            let rc_name = str_at(rc, "name").unwrap_or("").to_string();
            let routes: Vec<DumpRoute> = items(rc, "virtual_hosts")
                .flat_map(|vh| items(vh, "routes"))
                .map(|r| route_of(&rc_name, r))
                .collect();
            if !configs.contains(&routes) {
                configs.push(routes);
            }
        }
        dump.routes = configs.into_iter().flatten().collect();
        if dump.clusters.is_empty() && dump.routes.is_empty() {
            return Err("the config dump holds no clusters and no routes".into());
        }
        Ok(dump)
    }

    fn add_cluster(&mut self, name: &str) {
        if !self.clusters.iter().any(|c| c == name) {
            self.clusters.push(name.to_string());
        }
    }
}

/// Every distinct object with a `virtual_hosts` array (RDS route
/// configurations, inline `route_config`s of listeners and bootstraps).
fn collect_route_configs<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            if map.get("virtual_hosts").is_some_and(Value::is_array) {
                if !out.contains(&v) {
                    out.push(v);
                }
                return;
            }
            for child in map.values() {
                collect_route_configs(child, out);
            }
        }
        Value::Array(a) => {
            for child in a {
                collect_route_configs(child, out);
            }
        }
        _ => {}
    }
}

fn route_of(route_config: &str, r: &Value) -> DumpRoute {
    let mut clusters = Vec::new();
    if let Some(action) = r.get("route") {
        if let Some(c) = str_at(action, "cluster") {
            clusters.push(c.to_string());
        }
        if let Some(wc) = action.get("weighted_clusters") {
            for c in items(wc, "clusters") {
                if let Some(name) = str_at(c, "name") {
                    clusters.push(name.to_string());
                }
            }
        }
    }
    let headers = r
        .get("match")
        .map(|m| {
            items(m, "headers")
                .filter_map(|h| {
                    let value = h
                        .pointer("/string_match/exact")
                        .or_else(|| h.get("exact_match"))
                        .and_then(Value::as_str)?;
                    Some((str_at(h, "name")?.to_ascii_lowercase(), value.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    DumpRoute {
        route_config: route_config.to_string(),
        name: str_at(r, "name").unwrap_or("").to_string(),
        clusters,
        headers,
    }
}

/// One route a canary is managed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRoute {
    /// The route.
    pub route: DumpRoute,
    /// Sends (some) traffic to the stable cluster.
    pub to_stable: bool,
    /// Sends (some) traffic to the canary cluster.
    pub to_canary: bool,
}

/// What one canary resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The canary's name.
    pub canary: String,
    /// Expected stable name (as derived), for messages.
    pub expected_stable: String,
    /// Expected canary name (as derived), for messages.
    pub expected_canary: String,
    /// Clusters of the dump that are the stable side.
    pub stable_clusters: Vec<String>,
    /// Clusters of the dump that are the canary side.
    pub canary_clusters: Vec<String>,
    /// Routes that can send to either side.
    pub routes: Vec<ResolvedRoute>,
    /// The route names steering sets the header for: routes matching
    /// `<subset_header>: stable` that send only to stable.
    pub stable_header_routes: Vec<String>,
    /// Nearest cluster names to each side that did not resolve (at most 3 each).
    pub nearest: Vec<String>,
}

impl Resolution {
    /// Nothing at all matched: steering cannot happen.
    pub fn resolves_to_nothing(&self) -> bool {
        self.stable_clusters.is_empty() && self.canary_clusters.is_empty() && self.routes.is_empty()
    }

    /// Both sides found, a route reaches both, and the header rule to stable exists.
    pub fn is_complete(&self) -> bool {
        !self.stable_clusters.is_empty()
            && !self.canary_clusters.is_empty()
            && self.routes.iter().any(|r| r.to_canary)
            && !self.stable_header_routes.is_empty()
    }
}

/// Resolve one canary against a dump; `subset_header` is the routing header.
pub fn resolve(spec: &CanarySpec, dump: &Dump, subset_header: &str) -> Resolution {
    let side_clusters = |want: Side| -> Vec<String> {
        dump.clusters
            .iter()
            .filter(|c| cluster_side(spec, c.as_bytes()) == Some(want))
            .cloned()
            .collect()
    };
    let stable_clusters = side_clusters(Side::Stable);
    let canary_clusters = side_clusters(Side::Canary);
    let mut routes = Vec::new();
    let mut stable_header_routes = Vec::new();
    for r in &dump.routes {
        if !route_allowed(spec, r.name.as_bytes()) {
            continue;
        }
        let sides: Vec<Option<Side>> = r
            .clusters
            .iter()
            .map(|c| cluster_side(spec, c.as_bytes()))
            .collect();
        let to_stable = sides.contains(&Some(Side::Stable));
        let to_canary = sides.contains(&Some(Side::Canary));
        if !(to_stable || to_canary) {
            continue;
        }
        let header_stable = r
            .headers
            .iter()
            .any(|(n, v)| n == subset_header && v == "stable");
        if header_stable && to_stable && !to_canary && !stable_header_routes.contains(&r.name) {
            stable_header_routes.push(r.name.clone());
        }
        routes.push(ResolvedRoute {
            route: r.clone(),
            to_stable,
            to_canary,
        });
    }
    let mut nearest = Vec::new();
    for (found, expected) in [
        (&stable_clusters, &spec.stable),
        (&canary_clusters, &spec.canary),
    ] {
        if found.is_empty() {
            for c in nearest_names(&expected.describe(), &dump.clusters, 3) {
                if !nearest.contains(&c) {
                    nearest.push(c);
                }
            }
        }
    }
    Resolution {
        canary: spec.name.clone(),
        expected_stable: spec.stable.describe(),
        expected_canary: spec.canary.describe(),
        stable_clusters,
        canary_clusters,
        routes,
        stable_header_routes,
        nearest,
    }
}

/// The `n` candidates closest to `target` by edit distance.
pub fn nearest_names(target: &str, candidates: &[String], n: usize) -> Vec<String> {
    let mut scored: Vec<(usize, &String)> = candidates
        .iter()
        .map(|c| (edit_distance(target.as_bytes(), c.as_bytes()), c))
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, c)| c.clone()).collect()
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        if let Some(first) = cur.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            if let Some(slot) = cur.get_mut(j + 1) {
                *slot = sub.min(del).min(ins);
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use serde_json::json;

    fn dump() -> Dump {
        Dump::from_value(&json!({"static_resources": {
            "clusters": [{"name": "kri_msvc_default_default__svc-v1_8080"}, {"name": "kri_msvc_default_default__svc-v2_8080"}, {"name": "other"}],
            "listeners": [{"filter_chains": [{"filters": [{"typed_config": {"route_config": {"name": "rc", "virtual_hosts": [{"routes": [
                {"name": "h1", "match": {"prefix": "/", "headers": [{"name": "x-vigil-subset", "string_match": {"exact": "stable"}}]}, "route": {"cluster": "kri_msvc_default_default__svc-v1_8080"}},
                {"name": "h2", "match": {"prefix": "/", "headers": [{"name": "x-vigil-subset", "string_match": {"exact": "canary"}}]}, "route": {"cluster": "kri_msvc_default_default__svc-v2_8080"}},
                {"name": "d", "match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [{"name": "kri_msvc_default_default__svc-v1_8080", "weight": 90}, {"name": "kri_msvc_default_default__svc-v2_8080", "weight": 10}]}}},
                {"name": "x", "match": {"prefix": "/x"}, "route": {"cluster": "other"}}
            ]}]}}}]}]}]
        }}))
        .unwrap()
    }

    fn spec(json: &str) -> CanarySpec {
        PluginConfig::parse(json.as_bytes())
            .unwrap()
            .canaries
            .remove(0)
    }

    #[test]
    fn resolves_routes_with_different_names() {
        let s = spec(
            r#"{"canaries":[{"name":"c","naming":"kuma","stable_service":"svc-v1","canary_service":"svc-v2","port":8080}]}"#,
        );
        let r = resolve(&s, &dump(), "x-vigil-subset");
        assert_eq!(r.stable_clusters, ["kri_msvc_default_default__svc-v1_8080"]);
        assert_eq!(r.canary_clusters, ["kri_msvc_default_default__svc-v2_8080"]);
        let names: Vec<&str> = r.routes.iter().map(|r| r.route.name.as_str()).collect();
        assert_eq!(names, ["h1", "h2", "d"]);
        assert_eq!(r.stable_header_routes, ["h1"]);
        assert!(r.is_complete() && r.nearest.is_empty());
    }

    #[test]
    fn misnamed_canary_resolves_to_nothing_with_nearest() {
        let s = spec(
            r#"{"canaries":[{"name":"c","naming":"kuma","stable_service":"svc-1","canary_service":"svc-2","port":8080}]}"#,
        );
        let r = resolve(&s, &dump(), "x-vigil-subset");
        assert!(r.resolves_to_nothing() && !r.is_complete());
        assert_eq!(
            r.nearest.first().map(String::as_str),
            Some("kri_msvc_default_default__svc-v1_8080")
        );
        assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
        assert!(Dump::from_value(&json!({"x": 1})).is_err());
    }
}
