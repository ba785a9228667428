//! The mesh manifests run in real Envoy 1.40 with the built filter: the Istio
//! WasmPlugin translated as istiod does (plus the VirtualService's routes on Istio's
//! cluster names and the mesh config's stats settings), and the Kong Mesh
//! MeshProxyPatch's filter value applied by its operation. Config accepted, traffic
//! flows on both subsets, Vigil's metrics appear with their labels. Also: every file in
//! envoy-config/ passes `envoy --mode validate`.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_e2e::envoy::{
    add_cluster, envoy_binary, tail, unused_port, wasm_path, Envoy, EnvoyOptions,
};
use vigil_e2e::load::{OpenLoop, Tally};
use vigil_e2e::mesh::*;
use vigil_e2e::repo_root;
use vigil_e2e::upstream::Upstream;
use vigil_filter_core::naming;

const MARKER: &str = "vigil: invalid plugin configuration";

/// 3 s of 100 rps: no failures, both subsets served in roughly the configured split,
/// `vigil_requests_total` per (route, cluster) appears for both clusters.
async fn drive_and_check(envoy: &Envoy, route: &str, stable: &str, canary: &str, canary_pct: f64) {
    let outcomes = OpenLoop::new(100.0, Duration::from_secs(3))
        .run(envoy.listener_addr(), Instant::now(), None)
        .await
        .unwrap();
    let t = Tally::of(&outcomes);
    println!(
        "{} requests, {} failed, canary share {:.1}%",
        t.total,
        t.failed,
        t.canary_share() * 100.0
    );
    assert_eq!(
        t.failed,
        0,
        "requests failed; log:\n{}",
        tail(&envoy.log(), 30)
    );
    let share = t.canary_share();
    assert!(
        share > 0.0 && share < canary_pct * 3.0,
        "canary share {share} for a {canary_pct} weight"
    );
    // A client-sent x-vigil-subset is removed by the filter: still the weighted split,
    // never a client pin (a pin would show up as x-seen-subset at the upstream).
    let r = envoy
        .get("/", &[("x-vigil-subset", "canary")])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-seen-subset"),
        None,
        "client header must be stripped"
    );
    let (s, c) = envoy
        .wait_metrics(Duration::from_secs(10), |m| {
            let s = m.value(
                "vigil_requests_total",
                &[("route", route), ("cluster", stable)],
            )?;
            let c = m.value(
                "vigil_requests_total",
                &[("route", route), ("cluster", canary)],
            )?;
            (s + c >= t.total as f64).then_some((s, c))
        })
        .await
        .unwrap();
    println!("vigil_requests_total {{route={route}}}: stable {s}, canary {c}");
    let m = envoy.metrics().await.unwrap();
    for name in ["vigil_scoring_passes_total", "vigil_series"] {
        assert!(m.samples.iter().any(|x| x.name == name), "{name} missing");
    }
    let failures = envoy.wasm_failures().await.unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        !envoy.log().contains(MARKER),
        "plugin configuration refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_wasmplugin_runs_in_envoy() {
    let wasm = wasm_path().unwrap();
    let dir = istio_dir();
    let plugin = document(&dir, "51-wasmplugin-file.yaml", "WasmPlugin").unwrap();
    let oci = document(&dir, "50-wasmplugin-oci.yaml", "WasmPlugin").unwrap();
    assert_eq!(
        plugin["spec"],
        {
            let mut s = oci["spec"].clone();
            s["url"] = plugin["spec"]["url"].clone();
            s.as_object_mut().unwrap().remove("imagePullPolicy");
            s
        },
        "the oci:// and file:// variants must differ only in where the code comes from"
    );
    let filter = istio_wasm_filter(&plugin, &wasm).unwrap();
    assert_eq!(filter["name"], "apps.vigil");
    assert_eq!(filter["typed_config"]["config"]["root_id"], "vigil");
    assert_eq!(
        filter["typed_config"]["config"]["failure_policy"],
        "FAIL_OPEN"
    );
    let pc = filter_plugin_config(&filter).unwrap();
    assert_eq!(
        pc, plugin["spec"]["pluginConfig"],
        "configuration = JSON(pluginConfig)"
    );
    let control = pc["control"]["cluster"].as_str().unwrap().to_string();
    assert_eq!(
        control,
        "outbound|8080||vigil-control.vigil-system.svc.cluster.local"
    );

    let vs = document(&dir, "40-llm-gateway-traffic.yaml", "VirtualService").unwrap();
    let (routes, clusters) = istio_routes(&vs).unwrap();
    let host = "llm-gateway.ml.svc.cluster.local";
    let (v1, v2) = (
        istio_cluster(host, 8080, "v1"),
        istio_cluster(host, 8080, "v2"),
    );
    assert_eq!(clusters, vec![v1.clone(), v2.clone()]);
    let mesh = document(&dir, "10-mesh-config.yaml", "IstioOperator").unwrap();
    let stats = istio_stats_config(mesh.pointer("/spec/meshConfig/defaultConfig").unwrap());

    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let (_guard, control_port) = unused_port().unwrap();
    let (v1c, v2c) = (v1.clone(), v2.clone());
    let envoy = Envoy::start(
        EnvoyOptions::new("istio-wasmplugin", "{}")
            .upstreams(stable.port(), canary.port())
            .transform(move |b| {
                rename_cluster(b, "stable", &v1c)?;
                rename_cluster(b, "canary", &v2c)?;
                add_cluster(b, &control, control_port)?;
                replace_managed_routes(b, routes)?;
                remove_wasm_filter(b)?;
                insert_before_router(b, filter)?;
                b["stats_config"] = stats;
                Ok(())
            }),
    )
    .await
    .unwrap();
    let dump = envoy.admin_get("/config_dump").await.unwrap().text();
    assert!(
        dump.contains("\"apps.vigil\""),
        "filter apps.vigil not in config_dump"
    );
    drive_and_check(&envoy, "llm-gateway", &v1, &v2, 0.05).await;
    // The stats matcher built from proxyStatsMatcher keeps wasmcustom.* and nothing
    // outside the inclusion list (e.g. http.* listener stats are dropped).
    let m = envoy.metrics().await.unwrap();
    assert!(
        !m.samples
            .iter()
            .any(|s| s.name.starts_with("envoy_http_downstream_rq_total")),
        "stats matcher not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_mesh_proxypatch_runs_in_envoy() {
    let wasm = wasm_path().unwrap();
    let patch = document(&kong_dir(), "10-meshproxypatch.yaml", "MeshProxyPatch").unwrap();
    let (op, name, filter) = kuma_patch_filter(&patch, &wasm).unwrap();
    assert_eq!(
        (op.as_str(), name.as_deref()),
        ("AddBefore", Some("envoy.filters.http.router"))
    );
    let pc = filter_plugin_config(&filter).unwrap();
    // The canary is declared by service and versions; the filter derives the names.
    let parsed = vigil_filter_core::config::PluginConfig::from_value(&pc).unwrap();
    let spec = &parsed.canaries[0];
    let control = pc["control"]["cluster"].as_str().unwrap().to_string();

    // The MeshHTTPRoute's rules as Kuma (unified naming) generates them: header routes
    // to one backend, weighted default, all named after the `to[0]` entry.
    let mhr = document(&kong_dir(), "20-meshhttproute.yaml", "MeshHTTPRoute").unwrap();
    let ns = mhr["metadata"]["namespace"].as_str().unwrap();
    let route = naming::kuma_kri_route(
        "default",
        "default",
        ns,
        mhr["metadata"]["name"].as_str().unwrap(),
        0,
    );
    let cluster_of = |b: &Value| {
        naming::kuma_kri_cluster(
            "default",
            "default",
            b["labels"]["k8s.kuma.io/namespace"].as_str().unwrap(),
            b["labels"]["kuma.io/display-name"].as_str().unwrap(),
            &b["port"].to_string(),
        )
    };
    let v1 = cluster_of(&mhr["spec"]["to"][0]["rules"][0]["default"]["backendRefs"][0]);
    let v2 = cluster_of(&mhr["spec"]["to"][0]["rules"][1]["default"]["backendRefs"][0]);
    assert!(
        spec.stable.matches(v1.as_bytes()),
        "{:?} vs {v1}",
        spec.stable
    );
    assert!(
        spec.canary.matches(v2.as_bytes()),
        "{:?} vs {v2}",
        spec.canary
    );
    let mut routes = Vec::new();
    for rule in mhr["spec"]["to"][0]["rules"].as_array().unwrap() {
        let mut m = serde_json::json!({"prefix": "/"});
        if let Some(h) = rule["matches"][0]["headers"].as_array() {
            m["headers"] = h.iter().map(|h| serde_json::json!({"name": h["name"], "string_match": {"exact": h["value"]}})).collect();
        }
        let backends = rule["default"]["backendRefs"].as_array().unwrap();
        let action = if backends.len() == 1 {
            serde_json::json!({"cluster": cluster_of(&backends[0])})
        } else {
            serde_json::json!({"weighted_clusters": {"clusters": backends.iter().map(|b| serde_json::json!({"name": cluster_of(b), "weight": b["weight"]})).collect::<Vec<_>>()}})
        };
        routes.push(serde_json::json!({"name": route, "match": m, "route": action}));
    }
    let used: std::collections::BTreeSet<String> = routes
        .iter()
        .flat_map(|r| {
            let a = &r["route"];
            a["cluster"]
                .as_str()
                .map(|c| vec![c.to_string()])
                .unwrap_or_else(|| {
                    a["weighted_clusters"]["clusters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["name"].as_str().unwrap().to_string())
                        .collect()
                })
        })
        .collect();
    assert_eq!(
        used,
        [v1.clone(), v2.clone()].into_iter().collect(),
        "the filter's clusters must be the route's backends"
    );

    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let (_guard, control_port) = unused_port().unwrap();
    let (v1c, v2c) = (v1.clone(), v2.clone());
    let envoy = Envoy::start(
        EnvoyOptions::new("kong-proxypatch", "{}")
            .upstreams(stable.port(), canary.port())
            .transform(move |b| {
                rename_cluster(b, "stable", &v1c)?;
                rename_cluster(b, "canary", &v2c)?;
                add_cluster(b, &control, control_port)?;
                replace_managed_routes(b, routes)?;
                remove_wasm_filter(b)?;
                apply_http_filter_patch(b, &op, name.as_deref(), filter)
            }),
    )
    .await
    .unwrap();
    drive_and_check(&envoy, &route, &v1, &v2, 0.05).await;
}

/// `envoy --mode validate` on every file of envoy-config/, from the repository root.
#[test]
fn every_envoy_config_file_validates() {
    let envoy = envoy_binary().unwrap();
    wasm_path().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(repo_root().join("envoy-config")).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            continue;
        }
        let rel = path.strip_prefix(repo_root()).unwrap().to_path_buf();
        // A Compose file (top-level `services`) is not an Envoy bootstrap; it is
        // checked with `docker-compose config` in demo/tests/compose.rs.
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if doc.get("services").is_some() {
            println!("{}: a Compose file, not an Envoy config", rel.display());
            continue;
        }
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&rel)
            .current_dir(repo_root())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("OK"),
            "{} does not validate:\n{}",
            rel.display(),
            tail(&text, 20)
        );
        println!("envoy --mode validate {}: OK", rel.display());
        n += 1;
    }
    assert!(n >= 2, "expected vigil-local.yaml and vigil-compose.yaml");
}

/// The Kubernetes MeshProxyPatch as shipped — its `vigil-wasm-artifacts` cluster and
/// its filter value with the fetched (`remote` + `sha256`) module, nothing replaced —
/// is a configuration Envoy 1.40 accepts (`envoy --mode validate`).
#[test]
fn kubernetes_meshproxypatch_as_shipped_validates_in_envoy() {
    let patch = document(&kong_dir(), "10-meshproxypatch.yaml", "MeshProxyPatch").unwrap();
    let mods = patch["spec"]["default"]["appendModifications"]
        .as_array()
        .unwrap();
    let value = |kind: &str| -> Value {
        let m = mods.iter().find_map(|m| m.get(kind)).unwrap();
        serde_yaml::from_str(m["value"].as_str().unwrap()).unwrap()
    };
    let (cluster, filter) = (value("cluster"), value("httpFilter"));
    assert!(filter
        .pointer("/typed_config/config/vm_config/code/remote/sha256")
        .is_some());
    let bootstrap = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "clusters": [cluster],
            "listeners": [{"name": "outbound", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "outbound",
                    "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                    "http_filters": [filter, {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                }}]}]}]
        }
    });
    let dir = vigil_e2e::ScratchDir::new("k8s-patch-validate").unwrap();
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
    let out = Command::new(envoy_binary().unwrap())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("OK"),
        "{}",
        tail(&text, 20)
    );
    println!("envoy --mode validate (kubernetes/10-meshproxypatch.yaml as shipped): OK");
}
