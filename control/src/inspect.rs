//! `vigil-control inspect`: what a plugin configuration's canaries resolve to in a
//! real proxy — the first thing to run when steering does not happen.
//!
//! Reads an Envoy `/config_dump` (a file, or `http://` the proxy's admin
//! endpoint) and a plugin configuration (the JSON itself, or the manifest that
//! carries it: a Kong Mesh `MeshProxyPatch` in Kubernetes or universal form, an
//! Istio `WasmPlugin`), and prints for each canary the clusters and routes it
//! resolves to, with the filter's own code
//! (`vigil_filter_core::config` + `vigil_filter_core::resolve`): a canary that
//! resolves to nothing is reported with the nearest cluster names. Pure
//! [`report`] (tested) plus thin I/O in [`run`].

use crate::client::HttpClient;
use hyper::Method;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;
use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::resolve::{resolve, Dump, Resolution};

/// Extract the plugin configuration from `text`: plugin JSON, or a YAML manifest
/// (MeshProxyPatch httpFilter value, WasmPlugin pluginConfig).
pub fn plugin_config_from(text: &str) -> Result<PluginConfig, String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        if v.get("kind").is_none() && v.get("type").is_none() {
            return PluginConfig::from_value(&v).map_err(|e| format!("plugin configuration: {e}"));
        }
    }
    for doc in serde_yaml::Deserializer::from_str(text) {
        let doc: Value = match serde::Deserialize::deserialize(doc) {
            Ok(d) => d,
            Err(e) => return Err(format!("neither plugin JSON nor a YAML manifest: {e}")),
        };
        let kind = doc
            .get("kind")
            .or_else(|| doc.get("type"))
            .and_then(Value::as_str);
        match kind {
            Some("WasmPlugin") => {
                let pc = doc
                    .pointer("/spec/pluginConfig")
                    .ok_or("WasmPlugin without spec.pluginConfig")?;
                return PluginConfig::from_value(pc)
                    .map_err(|e| format!("WasmPlugin spec.pluginConfig.{e}"));
            }
            Some("MeshProxyPatch") => {
                let mods = doc
                    .pointer("/spec/default/appendModifications")
                    .and_then(Value::as_array)
                    .ok_or("MeshProxyPatch without spec.default.appendModifications")?;
                for m in mods {
                    let Some(value) = m.pointer("/httpFilter/value").and_then(Value::as_str) else {
                        continue;
                    };
                    let filter: Value = serde_yaml::from_str(value)
                        .map_err(|e| format!("MeshProxyPatch httpFilter.value is not YAML: {e}"))?;
                    if let Some(cfg) = filter
                        .pointer("/typed_config/config/configuration/value")
                        .and_then(Value::as_str)
                    {
                        return PluginConfig::parse(cfg.as_bytes())
                            .map_err(|e| format!("MeshProxyPatch filter configuration: {e}"));
                    }
                }
                return Err(
                    "MeshProxyPatch has no httpFilter with a wasm plugin configuration".into(),
                );
            }
            _ => {}
        }
    }
    Err(
        "no plugin configuration found (expected its JSON, a MeshProxyPatch or a WasmPlugin)"
            .into(),
    )
}

/// The report for every canary, and whether each resolved to something.
pub fn report(cfg: &PluginConfig, dump: &Dump) -> (String, bool) {
    let mut out = String::new();
    let mut all_found = true;
    if cfg.canaries.is_empty() {
        let _ = writeln!(out, "the plugin configuration declares no canaries");
    }
    for spec in &cfg.canaries {
        let r = resolve(spec, dump, &cfg.subset_header);
        all_found &= !r.resolves_to_nothing();
        describe(&mut out, spec.naming.as_str(), &r, &cfg.subset_header);
    }
    (out, all_found)
}

fn describe(out: &mut String, naming: &str, r: &Resolution, header: &str) {
    let _ = writeln!(
        out,
        "canary {} (naming {naming}): expected stable {}, canary {}",
        r.canary, r.expected_stable, r.expected_canary
    );
    if r.resolves_to_nothing() {
        let _ = writeln!(
            out,
            "  resolves to nothing: no cluster or route of this proxy matches; Vigil will score it but never steer"
        );
        let _ = writeln!(out, "  nearest cluster names: {}", r.nearest.join(", "));
        return;
    }
    for (what, list) in [
        ("stable", &r.stable_clusters),
        ("canary", &r.canary_clusters),
    ] {
        if list.is_empty() {
            let _ = writeln!(out, "  {what} cluster: NOT FOUND");
        } else {
            for c in list {
                let _ = writeln!(out, "  {what} cluster: {c}");
            }
        }
    }
    if !r.nearest.is_empty() {
        let _ = writeln!(out, "  nearest cluster names: {}", r.nearest.join(", "));
    }
    let _ = writeln!(out, "  routes that send to it ({}):", r.routes.len());
    for rr in &r.routes {
        let to = match (rr.to_stable, rr.to_canary) {
            (true, true) => "stable + canary (managed: steering applies here)",
            (true, false) => "stable",
            _ => "canary",
        };
        let headers: Vec<String> = rr
            .route
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        let name = if rr.route.name.is_empty() {
            "(unnamed)"
        } else {
            rr.route.name.as_str()
        };
        let _ = writeln!(
            out,
            "    route {name} [route config {}]{} -> {to}",
            rr.route.route_config,
            if headers.is_empty() {
                String::new()
            } else {
                format!(" when {}", headers.join(", "))
            }
        );
    }
    if r.stable_header_routes.is_empty() {
        let _ = writeln!(
            out,
            "  steering: NO route sends `{header}: stable` only to stable: Vigil can judge but not steer (add the header rule)"
        );
    } else {
        let _ = writeln!(
            out,
            "  steering: `{header}: stable` -> route {} (stable only)",
            r.stable_header_routes.join(", ")
        );
    }
}

async fn read_source(src: &str) -> Result<String, String> {
    if src.starts_with("http://") {
        let resp = HttpClient::new()
            .request(Method::GET, src, &[], None, Duration::from_secs(10))
            .await?;
        if resp.status != 200 {
            return Err(format!("{src}: HTTP {}", resp.status));
        }
        String::from_utf8(resp.body.to_vec()).map_err(|e| format!("{src}: not UTF-8: {e}"))
    } else {
        std::fs::read_to_string(Path::new(src)).map_err(|e| format!("{src}: {e}"))
    }
}

/// Run the command; the exit code is 0 when every canary resolved to
/// something, 1 when one resolves to nothing, 2 on unreadable input.
pub async fn run(config_dump: &str, plugin_config: &Path) -> i32 {
    let cfg_text = match std::fs::read_to_string(plugin_config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vigil-control inspect: {}: {e}", plugin_config.display());
            return 2;
        }
    };
    let cfg = match plugin_config_from(&cfg_text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil-control inspect: {}: {e}", plugin_config.display());
            return 2;
        }
    };
    let dump = match read_source(config_dump).await.and_then(|t| {
        let v: Value =
            serde_json::from_str(&t).map_err(|e| format!("{config_dump}: not JSON: {e}"))?;
        Dump::from_value(&v).map_err(|e| format!("{config_dump}: {e}"))
    }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vigil-control inspect: {e}");
            return 2;
        }
    };
    println!(
        "config dump {config_dump}: {} clusters, {} routes",
        dump.clusters.len(),
        dump.routes.len()
    );
    let (text, ok) = report(&cfg, &dump);
    print!("{text}");
    if ok {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = r#"{"static_resources":{"clusters":[{"name":"kri_msvc_default_default__a-v1_80"},{"name":"kri_msvc_default_default__a-v2_80"}],
      "listeners":[{"filter_chains":[{"filters":[{"typed_config":{"route_config":{"name":"rc","virtual_hosts":[{"routes":[
        {"name":"h","match":{"prefix":"/","headers":[{"name":"x-vigil-subset","string_match":{"exact":"stable"}}]},"route":{"cluster":"kri_msvc_default_default__a-v1_80"}},
        {"name":"d","match":{"prefix":"/"},"route":{"weighted_clusters":{"clusters":[{"name":"kri_msvc_default_default__a-v1_80"},{"name":"kri_msvc_default_default__a-v2_80"}]}}}]}]}}}]}]}]}}"#;

    fn dump() -> Dump {
        Dump::from_value(&serde_json::from_str(DUMP).unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn reports_resolved_and_unresolved_canaries() {
        let cfg = plugin_config_from(
            r#"{"canaries":[{"name":"ok","naming":"kuma","service":"a","stable_version":"v1","canary_version":"v2","port":80},
                            {"name":"typo","naming":"kuma","service":"a","stable_version":"1","canary_version":"2","port":80}]}"#,
        )
        .unwrap_or_default();
        let (text, ok) = report(&cfg, &dump());
        assert!(!ok, "{text}");
        assert!(
            text.contains("stable cluster: kri_msvc_default_default__a-v1_80"),
            "{text}"
        );
        assert!(
            text.contains("route d [route config rc] -> stable + canary"),
            "{text}"
        );
        assert!(
            text.contains("steering: `x-vigil-subset: stable` -> route h"),
            "{text}"
        );
        assert!(
            text.contains(
                "canary typo (naming kuma): expected stable kri_msvc_default_default__a-1_80"
            ),
            "{text}"
        );
        assert!(text.contains("resolves to nothing"), "{text}");
        assert!(
            text.contains("nearest cluster names: kri_msvc_default_default__a-v1_80"),
            "{text}"
        );
    }

    #[test]
    fn reads_configs_from_manifests() {
        let universal = "type: MeshProxyPatch\nname: p\nmesh: default\nspec:\n  default:\n    appendModifications:\n      - httpFilter:\n          value: |\n            name: envoy.filters.http.wasm\n            typed_config:\n              config:\n                configuration:\n                  value: '{\"mode\":\"steer\"}'\n";
        assert!(plugin_config_from(universal).is_ok());
        let wasm = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: v}\nspec:\n  pluginConfig: {mode: stear}\n";
        let e = plugin_config_from(wasm).err().unwrap_or_default();
        assert!(e.contains("spec.pluginConfig.mode"), "{e}");
        assert!(plugin_config_from("{\"bogus\":1}").is_err());
    }
}
