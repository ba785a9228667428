//! Envoy config dumps as meshes generate them, turned into runnable bootstraps.
//!
//! - [`real_kuma_dump`]: the client proxy's `/config_dump` recorded from a real Kuma
//!   control plane (`../shared/reference/kuma-main-universal/`).
//! - [`kuma_legacy_dump`], [`istio_dump`]: the same topology renamed the way Kuma 2.x
//!   legacy naming (`<mesh>_<name>_<namespace>_<zone>_msvc_<port>` clusters, routes
//!   named per rule by base64(sha256(JSON of the rule's matches))) and Istio
//!   (`outbound|<port>|<subset>|<host>` clusters, routes named after the
//!   VirtualService's HTTP routes) name it. Cluster names come from
//!   `vigil_filter_core::naming`, so a change there is a change here.
//! - [`bootstrap_from_dump`]: the dump's outbound listener (with its inline route
//!   configuration and HTTP filter chain as generated) and the clusters its routes use,
//!   rewritten to STATIC loopback upstreams without the mesh's mTLS transport sockets,
//!   EDS and HTTP/2 upstream options; the wasm filter's code path and configuration
//!   replaced by the built module and the plugin configuration under test.

use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vigil_filter_core::naming;

use crate::mesh::put;
use crate::{repo_root, Result};

/// The real Kuma reference directory.
pub fn kuma_reference_dir() -> std::path::PathBuf {
    repo_root().join("../shared/reference/kuma-main-universal")
}

/// The real client `config_dump` recorded from Kuma (main line, universal).
pub fn real_kuma_dump() -> Result<Value> {
    let path = kuma_reference_dir().join("client-config_dump.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Names in the real dump.
pub const KRI_STABLE: &str = "kri_msvc_default_default__llm-gateway-v1_8080";
/// Canary cluster in the real dump.
pub const KRI_CANARY: &str = "kri_msvc_default_default__llm-gateway-v2_8080";
/// The outbound listener in the real dump.
pub const KRI_LISTENER: &str = "kri_msvc_default_default__llm-gateway_8080";

/// The outbound listener of a dump (by name).
pub fn listener<'a>(dump: &'a Value, name: &str) -> Result<&'a Value> {
    dump.pointer("/configs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c.get("dynamic_listeners")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|l| l.pointer("/active_state/listener"))
        .find(|l| l.get("name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| format!("no listener {name} in the dump").into())
}

fn hcm_of(listener: &mut Value) -> Result<&mut Value> {
    listener
        .pointer_mut("/filter_chains/0/filters/0/typed_config")
        .ok_or_else(|| "listener without an HTTP connection manager".into())
}

fn routes_of(listener: &mut Value) -> Result<&mut Vec<Value>> {
    hcm_of(listener)?
        .pointer_mut("/route_config/virtual_hosts/0/routes")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| "listener without inline routes".into())
}

/// Renames clusters everywhere in the dump (exact string values) and sets each route
/// of `listener_name`'s first virtual host to the name `route_name(index)` gives.
fn rename(
    real: &Value,
    listener_name: &str,
    new_listener: &str,
    clusters: &[(&str, String)],
    route_name: impl Fn(usize, &Value) -> String,
) -> Result<Value> {
    fn walk(v: &mut Value, map: &[(&str, String)]) {
        match v {
            Value::String(s) => {
                if let Some((_, to)) = map.iter().find(|(from, _)| from == s) {
                    *s = to.clone();
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, map)),
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, map)),
            _ => {}
        }
    }
    fn edit(routes: &mut [Value], route_name: &dyn Fn(usize, &Value) -> String) {
        for (i, r) in routes.iter_mut().enumerate() {
            let name = route_name(i, r);
            if let Some(o) = r.as_object_mut() {
                o.insert("name".into(), Value::from(name));
            }
        }
    }
    let mut dump = real.clone();
    let mut map: Vec<(&str, String)> = clusters.to_vec();
    map.push((listener_name, new_listener.to_string()));
    walk(&mut dump, &map);
    each_route_list(&mut dump, new_listener, &mut |routes| {
        edit(routes, &route_name);
        Ok(())
    })?;
    Ok(dump)
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                let at = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(A.get(at).copied().unwrap_or(b'=') as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Kuma 2.x route name of one rule: base64(sha256(JSON of its `matches`)), as
/// `meshhttproute/api/v1alpha1.HashMatches` computes it (Go field order: path
/// `value` before `type`; header `type`, `name`, `value`).
pub fn kuma_legacy_route_name(route: &Value) -> String {
    // Written by hand: serde_json sorts keys, Go's encoding/json keeps field order.
    let q = |v: Option<&Value>| {
        serde_json::to_string(&v.cloned().unwrap_or(json!(""))).unwrap_or_default()
    };
    let mut text = format!(
        "[{{\"path\":{{\"value\":{},\"type\":\"PathPrefix\"}}",
        q(route.pointer("/match/prefix"))
    );
    if let Some(h) = route.pointer("/match/headers").and_then(Value::as_array) {
        let headers: Vec<String> = h
            .iter()
            .map(|h| {
                format!(
                    "{{\"type\":\"Exact\",\"name\":{},\"value\":{}}}",
                    q(h.get("name")),
                    q(h.pointer("/string_match/exact"))
                )
            })
            .collect();
        text.push_str(&format!(",\"headers\":[{}]", headers.join(",")));
    }
    text.push_str("}]");
    base64(&Sha256::digest(text.as_bytes()))
}

/// Zone of the Kuma 2.x legacy dump.
pub const LEGACY_ZONE: &str = "zone-1";

/// The real topology under Kuma 2.x legacy naming (zone `zone-1`, universal).
pub fn kuma_legacy_dump() -> Result<Value> {
    let real = real_kuma_dump()?;
    let c = |svc: &str| naming::kuma_legacy_cluster("default", svc, "", LEGACY_ZONE, 8080);
    rename(
        &real,
        KRI_LISTENER,
        "outbound:127.0.0.1:10001",
        &[
            (KRI_STABLE, c("llm-gateway-v1")),
            (KRI_CANARY, c("llm-gateway-v2")),
        ],
        |_, r| kuma_legacy_route_name(r),
    )
}

/// Istio service host of the generated Istio dump.
pub const ISTIO_HOST: &str = "llm-gateway.ml.svc.cluster.local";

/// The real topology under Istio naming: subsets v1/v2 of [`ISTIO_HOST`], listener
/// `0.0.0.0_8080`, routes named like the VirtualService's HTTP routes, plus a second
/// weighted rule (`/b`, route `weighted-b`) like a VirtualService with one HTTP route
/// per path: its weighted pick belongs to the canary whatever the route is named.
pub fn istio_dump() -> Result<Value> {
    let mut real = real_kuma_dump()?;
    add_weighted_copy(&mut real, KRI_LISTENER, "/b")?;
    rename(
        &real,
        KRI_LISTENER,
        "0.0.0.0_8080",
        &[
            (KRI_STABLE, naming::istio_cluster(8080, "v1", ISTIO_HOST)),
            (KRI_CANARY, naming::istio_cluster(8080, "v2", ISTIO_HOST)),
        ],
        |i, _| {
            ["vigil-stable", "vigil-canary", "weighted-b", "weighted"]
                .get(i)
                .unwrap_or(&"extra")
                .to_string()
        },
    )
}

/// Inserts, before the last route (the weighted default) of `listener_name`'s routes
/// (inline and in the RoutesConfigDump), a copy of it matching `prefix`.
fn add_weighted_copy(dump: &mut Value, listener_name: &str, prefix: &str) -> Result<()> {
    each_route_list(dump, listener_name, &mut |routes| {
        let mut copy = routes.last().cloned().ok_or("no routes")?;
        put(&mut copy, "/match", json!({"prefix": prefix}))?;
        let at = routes.len().saturating_sub(1);
        routes.insert(at, copy);
        Ok(())
    })
}

/// Calls `f` on every copy of `listener_name`'s route list in a dump: the
/// listener's inline route configuration (`dynamic_listeners`) and the
/// RoutesConfigDump entry of the same name (`static_route_configs`).
fn each_route_list(
    dump: &mut Value,
    listener_name: &str,
    f: &mut dyn FnMut(&mut Vec<Value>) -> Result<()>,
) -> Result<()> {
    let configs = dump
        .pointer_mut("/configs")
        .and_then(Value::as_array_mut)
        .ok_or("dump without configs")?;
    for c in configs {
        for l in c
            .get_mut("dynamic_listeners")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(listener) = l.pointer_mut("/active_state/listener") {
                if listener.get("name").and_then(Value::as_str) == Some(listener_name) {
                    f(routes_of(listener)?)?;
                }
            }
        }
        for rc in c
            .get_mut("static_route_configs")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if rc.pointer("/route_config/name").and_then(Value::as_str) == Some(listener_name) {
                if let Some(routes) = rc
                    .pointer_mut("/route_config/virtual_hosts/0/routes")
                    .and_then(Value::as_array_mut)
                {
                    f(routes)?;
                }
            }
        }
    }
    Ok(())
}

/// The clusters a route configuration sends to.
fn route_clusters(routes: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in routes {
        let a = &r["route"];
        let mut names: Vec<String> = a["cluster"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect();
        for c in a
            .pointer("/weighted_clusters/clusters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = c["name"].as_str() {
                names.push(n.to_string());
            }
        }
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// A bootstrap running `listener_name` of `dump` on 127.0.0.1:0 with the built filter:
/// each cluster its routes use becomes STATIC on 127.0.0.1 at the port `port_of` gives
/// (the dump's connect timeout and circuit breakers kept; EDS, transport sockets and
/// HTTP/2 upstream options dropped: the test upstreams speak plain HTTP/1.1).
pub fn bootstrap_from_dump(
    dump: &Value,
    listener_name: &str,
    port_of: &dyn Fn(&str) -> Option<u16>,
    plugin_config: &str,
    wasm: &Path,
) -> Result<Value> {
    let mut l = listener(dump, listener_name)?.clone();
    if let Some(o) = l.as_object_mut() {
        o.remove("@type");
    }
    put(
        &mut l,
        "/address",
        json!({"socket_address": {"address": "127.0.0.1", "port_value": 0}}),
    )?;
    let hcm = hcm_of(&mut l)?;
    let filters = hcm
        .get_mut("http_filters")
        .and_then(Value::as_array_mut)
        .ok_or("HTTP connection manager without http_filters")?;
    let wasm_filter = filters
        .iter_mut()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .ok_or("the dump's listener has no envoy.filters.http.wasm filter")?;
    let cfg = wasm_filter
        .pointer_mut("/typed_config/config")
        .ok_or("wasm filter without config")?;
    put(
        cfg,
        "/vm_config/code",
        json!({"local": {"filename": wasm.to_string_lossy()}}),
    )?;
    put(
        cfg,
        "/configuration",
        json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": plugin_config,
        }),
    )?;
    let routes = routes_of(&mut l)?.clone();
    let mut clusters = Vec::new();
    let all: Vec<&Value> = dump
        .pointer("/configs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c.get("dynamic_active_clusters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|c| c.get("cluster"))
        .collect();
    for name in route_clusters(&routes) {
        let port = port_of(&name).ok_or_else(|| format!("no upstream port for cluster {name}"))?;
        let orig = all
            .iter()
            .find(|c| c["name"] == name.as_str())
            .ok_or_else(|| format!("cluster {name} used by a route is not in the dump"))?;
        let mut c = json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": orig.get("connect_timeout").cloned().unwrap_or(json!("5s")),
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
        });
        if let Some(cb) = orig.get("circuit_breakers") {
            put(&mut c, "/circuit_breakers", cb.clone())?;
        }
        clusters.push(c);
    }
    let local = crate::envoy::load_bootstrap()?;
    Ok(json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": local.get("stats_config").cloned().unwrap_or(Value::Null),
        "static_resources": {"listeners": [l], "clusters": clusters},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_the_kuma_default_route_hash() {
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"a"), "YQ==");
        // The default route name Kuma's MADR 074 lists for a `PathPrefix /` rule.
        assert_eq!(
            kuma_legacy_route_name(&json!({"match": {"prefix": "/"}})),
            "9Zuf5Tg79OuZcQITwBbQykxAk2u4fRKrwYn3//AL4Yo="
        );
    }

    /// The route names of `listener_name`: inline in the listener and in the
    /// RoutesConfigDump entry.
    fn both_route_name_lists(dump: &Value, name: &str) -> (Vec<String>, Vec<String>) {
        let names = |routes: Option<&Value>| -> Vec<String> {
            routes
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| r["name"].as_str().unwrap_or("").to_string())
                .collect()
        };
        let inline = names(listener(dump, name).ok().and_then(|l| {
            l.pointer("/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes")
        }));
        let rds = dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["static_route_configs"].as_array().into_iter().flatten())
            .find(|rc| rc.pointer("/route_config/name").and_then(Value::as_str) == Some(name))
            .map(|rc| names(rc.pointer("/route_config/virtual_hosts/0/routes")))
            .unwrap_or_default();
        (inline, rds)
    }

    #[test]
    fn generated_dumps_edit_the_inline_and_the_rds_routes_alike() {
        let istio = istio_dump().unwrap();
        let (inline, rds) = both_route_name_lists(&istio, "0.0.0.0_8080");
        assert_eq!(
            inline,
            ["vigil-stable", "vigil-canary", "weighted-b", "weighted"]
        );
        assert_eq!(inline, rds);
        let legacy = kuma_legacy_dump().unwrap();
        let (inline, rds) = both_route_name_lists(&legacy, "outbound:127.0.0.1:10001");
        assert_eq!(inline.len(), 3, "{inline:?}");
        assert!(inline.iter().all(|n| n.ends_with('=')), "{inline:?}");
        assert_eq!(inline, rds);
    }
}
