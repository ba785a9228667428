//! The mesh manifests (`istio-manifests/`, `kong-mesh-manifests/`) translated into the
//! local Envoy bootstrap, the way the control planes do, so real Envoy runs exactly the
//! filter configuration a platform team applies.
//!
//! Istio ([`istio_wasm_filter`], as istiod's `WasmPluginWrapper.buildPluginConfig`):
//! Envoy filter and plugin name `<namespace>.<name>`, `root_id` = `pluginName`,
//! `configuration` = `google.protobuf.StringValue` holding the JSON of `pluginConfig`,
//! runtime `envoy.wasm.runtime.v8`, `vm_config.environment_variables` from
//! `vmConfig.env` (INLINE values; HOST keys), `failure_policy` from `failStrategy`
//! (FAIL_OPEN → FAIL_OPEN, FAIL_CLOSE → FAIL_CLOSED, FAIL_RELOAD → FAIL_RELOAD). The
//! code source is the built module (istio-agent turns `oci://` / `file://` into a local
//! file the same way). [`istio_routes`] turns the VirtualService's HTTP routes into Envoy
//! routes on Istio's cluster names `outbound|<port>|<subset>|<host>`, and
//! [`istio_stats_config`] the mesh config's `extraStatTags` / `proxyStatsMatcher` into
//! `stats_config` (tag regex `(<tag>=\.=(.*?);\.;)` and inclusion prefixes, as
//! istio-agent writes them into the bootstrap).
//!
//! Kong Mesh ([`kuma_patch_filter`]): the `MeshProxyPatch` `httpFilter` modification's
//! `value` is the Envoy `HttpFilter`; [`apply_http_filter_patch`] applies its operation
//! (AddBefore/AddAfter/AddFirst/AddLast the matched filter) to the listener's chain.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::envoy::{hcm_mut, routes_mut};
use crate::schema::parse_documents;
use crate::{repo_root, Result};

/// `istio-manifests/` in the repository.
pub fn istio_dir() -> PathBuf {
    repo_root().join("istio-manifests")
}

/// `kong-mesh-manifests/kubernetes/` in the repository (Kubernetes resources).
pub fn kong_dir() -> PathBuf {
    repo_root().join("kong-mesh-manifests/kubernetes")
}

/// `kong-mesh-manifests/universal/` in the repository (`kumactl apply` resources).
pub fn kong_universal_dir() -> PathBuf {
    repo_root().join("kong-mesh-manifests/universal")
}

/// Every document of every YAML file under `dir`, with the file it came from.
pub fn documents(dir: &Path) -> Result<Vec<(PathBuf, Value)>> {
    let mut out = Vec::new();
    for f in crate::schema::manifest_files(dir)? {
        let text = std::fs::read_to_string(&f)?;
        for d in parse_documents(&text).map_err(|e| format!("{}: {e}", f.display()))? {
            if !d.is_null() {
                out.push((f.clone(), d));
            }
        }
    }
    Ok(out)
}

/// The one document of `kind` in `file` (relative to `dir`).
pub fn document(dir: &Path, file: &str, kind: &str) -> Result<Value> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let docs = parse_documents(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut found = docs
        .into_iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind));
    match (found.next(), found.next()) {
        (Some(d), None) => Ok(d),
        _ => Err(format!("{}: expected exactly one {kind}", path.display()).into()),
    }
}

/// Sets the member at `pointer` (its parent object must exist), like `v[a][b] = x`.
pub fn put(v: &mut Value, pointer: &str, value: Value) -> Result<()> {
    let (parent, key) = pointer
        .rsplit_once('/')
        .ok_or_else(|| format!("bad pointer {pointer}"))?;
    let obj = v
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("no object at {parent:?}"))?;
    obj.insert(key.to_string(), value);
    Ok(())
}

fn s<'a>(v: &'a Value, pointer: &str) -> Result<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string at {pointer}").into())
}

/// The Envoy HTTP filter istiod generates for an HTTP `WasmPlugin`, with the code read
/// from `wasm` (where istio-agent would have put the fetched module).
pub fn istio_wasm_filter(plugin: &Value, wasm: &Path) -> Result<Value> {
    let ns = s(plugin, "/metadata/namespace")?;
    let name = s(plugin, "/metadata/name")?;
    let spec = plugin.get("spec").ok_or("WasmPlugin without spec")?;
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("UNSPECIFIED_PLUGIN_TYPE");
    if !matches!(ty, "HTTP" | "UNSPECIFIED_PLUGIN_TYPE") {
        return Err(format!("WasmPlugin type {ty} is not an HTTP filter").into());
    }
    let resource = format!("{ns}.{name}");
    let mut config = json!({
        "name": resource,
        "root_id": spec.get("pluginName").and_then(Value::as_str).unwrap_or(""),
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": wasm.to_string_lossy()}},
        },
    });
    if let Some(pc) = spec.get("pluginConfig").and_then(Value::as_object) {
        if !pc.is_empty() {
            put(
                &mut config,
                "/configuration",
                json!({
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": serde_json::to_string(pc)?,
                }),
            )?;
        }
    }
    let mut key_values = serde_json::Map::new();
    let mut host_env_keys = Vec::new();
    if let Some(env) = spec.pointer("/vmConfig/env").and_then(Value::as_array) {
        for e in env {
            let key = s(e, "/name")?.to_string();
            match e
                .get("valueFrom")
                .and_then(Value::as_str)
                .unwrap_or("INLINE")
            {
                "HOST" => host_env_keys.push(Value::from(key)),
                _ => {
                    key_values.insert(key, e.get("value").cloned().unwrap_or(json!("")));
                }
            }
        }
    }
    if !key_values.is_empty() || !host_env_keys.is_empty() {
        put(
            &mut config,
            "/vm_config/environment_variables",
            json!({"key_values": key_values, "host_env_keys": host_env_keys}),
        )?;
    }
    let policy = match spec.get("failStrategy").and_then(Value::as_str) {
        Some("FAIL_OPEN") => "FAIL_OPEN",
        Some("FAIL_RELOAD") => "FAIL_RELOAD",
        Some("FAIL_CLOSE") | None => "FAIL_CLOSED",
        Some(other) => return Err(format!("unknown failStrategy {other}").into()),
    };
    put(&mut config, "/failure_policy", json!(policy))?;
    Ok(json!({
        "name": resource,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config,
        }
    }))
}

/// Istio's outbound cluster name for a destination.
pub fn istio_cluster(host: &str, port: u64, subset: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

fn istio_destination(route: &Value) -> Result<String> {
    let d = route
        .get("destination")
        .ok_or("route without destination")?;
    Ok(istio_cluster(
        s(d, "/host")?,
        d.pointer("/port/number")
            .and_then(Value::as_u64)
            .unwrap_or(80),
        d.get("subset").and_then(Value::as_str).unwrap_or(""),
    ))
}

/// Envoy routes for a VirtualService's `http` list (header matches, single or weighted
/// destinations, timeout), named like the HTTP routes, and the clusters they use.
pub fn istio_routes(vs: &Value) -> Result<(Vec<Value>, Vec<String>)> {
    let mut routes = Vec::new();
    let mut clusters: Vec<String> = Vec::new();
    let http = vs
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .ok_or("VirtualService without spec.http")?;
    for h in http {
        let name = h.get("name").and_then(Value::as_str).unwrap_or("");
        let dests = h
            .get("route")
            .and_then(Value::as_array)
            .ok_or("http route without route")?;
        let mut action = if dests.len() == 1 {
            let c = istio_destination(dests.first().ok_or("empty route")?)?;
            clusters.push(c.clone());
            json!({"cluster": c})
        } else {
            let mut wc = Vec::new();
            for d in dests {
                let c = istio_destination(d)?;
                clusters.push(c.clone());
                wc.push(json!({"name": c, "weight": d.get("weight").and_then(Value::as_u64).unwrap_or(0)}));
            }
            json!({"weighted_clusters": {"clusters": wc}})
        };
        if let Some(t) = h.get("timeout").and_then(Value::as_str) {
            put(&mut action, "/timeout", json!(t))?;
        }
        let matches: Vec<Value> = match h.get("match").and_then(Value::as_array) {
            Some(ms) => ms.clone(),
            None => vec![json!({})],
        };
        for m in matches {
            let mut headers = Vec::new();
            if let Some(hs) = m.get("headers").and_then(Value::as_object) {
                for (k, cond) in hs {
                    let exact = cond
                        .get("exact")
                        .and_then(Value::as_str)
                        .ok_or("only exact header matches are translated")?;
                    headers.push(json!({"name": k, "string_match": {"exact": exact}}));
                }
            }
            let mut mm = json!({"prefix": "/"});
            if !headers.is_empty() {
                put(&mut mm, "/headers", Value::Array(headers))?;
            }
            routes.push(json!({"name": name, "match": mm, "route": action.clone()}));
        }
    }
    clusters.sort();
    clusters.dedup();
    Ok((routes, clusters))
}

/// The bootstrap `stats_config` istio-agent writes for the mesh config's
/// `defaultConfig` (`extraStatTags`, `proxyStatsMatcher.inclusionPrefixes`), with
/// Istio's own default inclusions.
pub fn istio_stats_config(default_config: &Value) -> Value {
    let tags: Vec<Value> = default_config
        .get("extraStatTags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|t| json!({"tag_name": t, "regex": format!("({t}=\\.=(.*?);\\.;)")}))
                .collect()
        })
        .unwrap_or_default();
    let mut prefixes: Vec<String> = [
        "reporter=",
        "cluster_manager",
        "listener_manager",
        "server",
        "cluster.xds-grpc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(extra) = default_config
        .pointer("/proxyStatsMatcher/inclusionPrefixes")
        .and_then(Value::as_array)
    {
        prefixes.extend(extra.iter().filter_map(Value::as_str).map(str::to_string));
    }
    let patterns: Vec<Value> = prefixes.iter().map(|p| json!({"prefix": p})).collect();
    json!({
        "stats_tags": tags,
        "use_all_default_tags": false,
        "stats_matcher": {"inclusion_list": {"patterns": patterns}},
    })
}

/// Renames cluster `from` (and its load assignment) to `to`.
pub fn rename_cluster(bootstrap: &mut Value, from: &str, to: &str) -> Result<()> {
    let c = bootstrap
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .and_then(|cs| {
            cs.iter_mut()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(from))
        })
        .ok_or_else(|| format!("bootstrap has no cluster {from}"))?;
    put(c, "/name", json!(to))?;
    put(c, "/load_assignment/cluster_name", json!(to))
}

/// Replaces the bootstrap's managed routes (everything but `static` and `absent`) by
/// `routes`.
pub fn replace_managed_routes(bootstrap: &mut Value, routes: Vec<Value>) -> Result<()> {
    let r = routes_mut(bootstrap)?;
    r.retain(|x| {
        matches!(
            x.get("name").and_then(Value::as_str),
            Some("static") | Some("absent")
        )
    });
    r.extend(routes);
    Ok(())
}

fn http_filters(bootstrap: &mut Value) -> Result<&mut Vec<Value>> {
    hcm_mut(bootstrap)?
        .get_mut("http_filters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| "bootstrap has no http_filters".into())
}

/// Removes the bootstrap's own `envoy.filters.http.wasm` filter.
pub fn remove_wasm_filter(bootstrap: &mut Value) -> Result<()> {
    http_filters(bootstrap)?
        .retain(|f| f.get("name").and_then(Value::as_str) != Some("envoy.filters.http.wasm"));
    Ok(())
}

/// Inserts `filter` immediately before the router, as istiod does for a plugin in a
/// phase with nothing after it but the router (istio.stats is absent locally).
pub fn insert_before_router(bootstrap: &mut Value, filter: Value) -> Result<()> {
    apply_http_filter_patch(
        bootstrap,
        "AddBefore",
        Some("envoy.filters.http.router"),
        filter,
    )
}

/// A MeshProxyPatch `httpFilter` operation on the listener's HTTP filter chain.
pub fn apply_http_filter_patch(
    bootstrap: &mut Value,
    operation: &str,
    match_name: Option<&str>,
    filter: Value,
) -> Result<()> {
    let filters = http_filters(bootstrap)?;
    let pos = |fs: &Vec<Value>| -> Result<usize> {
        let name = match_name.ok_or("the operation needs match.name")?;
        fs.iter()
            .position(|f| f.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| format!("no HTTP filter named {name} to patch around").into())
    };
    match operation {
        "AddFirst" => filters.insert(0, filter),
        "AddLast" => filters.push(filter),
        "AddBefore" => {
            let i = pos(filters)?;
            filters.insert(i, filter);
        }
        "AddAfter" => {
            let i = pos(filters)?;
            filters.insert(i + 1, filter);
        }
        other => return Err(format!("httpFilter operation {other} is not an insertion").into()),
    }
    Ok(())
}

/// The `httpFilter` modification of a MeshProxyPatch: (operation, match.name, the
/// Envoy HttpFilter parsed from `value` with its wasm code source replaced by `wasm`).
pub fn kuma_patch_filter(patch: &Value, wasm: &Path) -> Result<(String, Option<String>, Value)> {
    let mods = patch
        .pointer("/spec/default/appendModifications")
        .and_then(Value::as_array)
        .ok_or("MeshProxyPatch without spec.default.appendModifications")?;
    let m = mods
        .iter()
        .find_map(|m| m.get("httpFilter"))
        .ok_or("MeshProxyPatch has no httpFilter modification")?;
    let op = s(m, "/operation")?.to_string();
    let name = m
        .pointer("/match/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let text = s(m, "/value")?;
    let mut filter: Value =
        serde_yaml::from_str(text).map_err(|e| format!("httpFilter.value is not YAML: {e}"))?;
    // Where the module comes from (a local file or `remote` + sha256): the built one.
    let code = filter
        .pointer_mut("/typed_config/config/vm_config/code")
        .ok_or("httpFilter.value has no typed_config.config.vm_config.code")?;
    *code = json!({"local": {"filename": wasm.to_string_lossy()}});
    Ok((op, name, filter))
}

/// The plugin configuration (JSON) inside an Envoy wasm HttpFilter.
pub fn filter_plugin_config(filter: &Value) -> Result<Value> {
    let text = s(filter, "/typed_config/config/configuration/value")?;
    Ok(serde_json::from_str(text)?)
}
