//! Vigil against real mesh names. The SHIPPED plugin configurations (Kong Mesh universal
//! MeshProxyPatch, Istio WasmPlugin) resolved against the client `config_dump` recorded
//! from a real Kuma control plane, and against Kuma 2.x legacy-named and Istio-named
//! dumps generated from each scheme's naming; then real Envoy 1.40 run from a bootstrap
//! built from those dumps' listener/routes/clusters (loopback upstreams) with the
//! shipped plugin configuration: a canary answering 503 is steered to stable within 5 s.
//! The Kuma 2.x and Istio dumps name the header rules and the weighted default
//! differently, so steering there does not depend on route names.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_e2e::dump::*;
use vigil_e2e::envoy::{tail, wasm_path, Envoy, EnvoyOptions};
use vigil_e2e::kuma::meshmetric_selects;
use vigil_e2e::load::OpenLoop;
use vigil_e2e::mesh::{
    document, documents, filter_plugin_config, istio_dir, kong_dir, kong_universal_dir,
};
use vigil_e2e::upstream::Upstream;
use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::resolve::{resolve, Dump};

const KRI_ROUTE: &str = "kri_mhttpr_default_default__llm-gateway-canary_rule_0";

/// The plugin configuration string inside the shipped universal MeshProxyPatch.
fn shipped_kong_universal() -> String {
    let (_, patch) = documents(&kong_universal_dir())
        .unwrap()
        .into_iter()
        .find(|(_, d)| d["type"] == "MeshProxyPatch")
        .unwrap();
    let value = patch["spec"]["default"]["appendModifications"][0]["httpFilter"]["value"]
        .as_str()
        .unwrap();
    let filter: Value = serde_yaml::from_str(value).unwrap();
    filter["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The shipped universal configuration, switched to Kuma 2.x legacy naming in its zone
/// (what the README tells a Kong Mesh 2.x operator to change).
fn kong_legacy_config() -> String {
    let mut v: Value = serde_json::from_str(&shipped_kong_universal()).unwrap();
    v["canaries"][0]["naming"] = "kuma-legacy".into();
    v["canaries"][0]["zone"] = LEGACY_ZONE.into();
    v.to_string()
}

/// The shipped Istio WasmPlugin's pluginConfig, as istiod serialises it.
fn shipped_istio() -> String {
    let plugin = document(&istio_dir(), "51-wasmplugin-file.yaml", "WasmPlugin").unwrap();
    let filter = vigil_e2e::mesh::istio_wasm_filter(&plugin, &wasm_path().unwrap()).unwrap();
    filter_plugin_config(&filter).unwrap().to_string()
}

/// Resolves `config`'s one canary against `dump`: (stable, canary, routes to the
/// canary, header routes to stable).
fn resolved(config: &str, dump: &Value) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let cfg = PluginConfig::parse(config.as_bytes()).unwrap();
    let d = Dump::from_value(dump).unwrap();
    let r = resolve(&cfg.canaries[0], &d, &cfg.subset_header);
    let routes = r
        .routes
        .iter()
        .filter(|x| x.to_canary)
        .map(|x| x.route.name.clone())
        .collect();
    println!("{}: {r:#?}", cfg.canaries[0].name);
    assert!(r.is_complete(), "incomplete resolution: {r:#?}");
    (
        r.stable_clusters,
        r.canary_clusters,
        routes,
        r.stable_header_routes,
    )
}

#[test]
fn shipped_configs_resolve_against_real_and_generated_dumps() {
    let real = real_kuma_dump().unwrap();
    let (s, c, routes, header) = resolved(&shipped_kong_universal(), &real);
    assert_eq!(
        (s, c),
        (vec![KRI_STABLE.to_string()], vec![KRI_CANARY.to_string()])
    );
    assert_eq!(routes, vec![KRI_ROUTE.to_string(), KRI_ROUTE.to_string()]);
    assert_eq!(header, vec![KRI_ROUTE.to_string()]);

    let legacy = kuma_legacy_dump().unwrap();
    let (s, c, routes, header) = resolved(&kong_legacy_config(), &legacy);
    assert_eq!(
        (s, c),
        (
            vec!["default_llm-gateway-v1__zone-1_msvc_8080".to_string()],
            vec!["default_llm-gateway-v2__zone-1_msvc_8080".to_string()]
        )
    );
    assert_eq!(routes.len(), 2);
    assert_ne!(routes[0], routes[1], "per-rule hashed names differ");
    assert!(
        !routes.contains(&header[0]),
        "header rule named apart from the default"
    );
    // The shipped unified-naming config does not match legacy names (inspect says so).
    let cfg = PluginConfig::parse(shipped_kong_universal().as_bytes()).unwrap();
    let r = resolve(
        &cfg.canaries[0],
        &Dump::from_value(&legacy).unwrap(),
        "x-vigil-subset",
    );
    assert!(
        r.resolves_to_nothing() && r.nearest.iter().any(|n| n.contains("llm-gateway-v1")),
        "{r:#?}"
    );

    let istio = istio_dump().unwrap();
    let (s, c, routes, header) = resolved(&shipped_istio(), &istio);
    assert_eq!(s, vec![format!("outbound|8080|v1|{ISTIO_HOST}")]);
    assert_eq!(c, vec![format!("outbound|8080|v2|{ISTIO_HOST}")]);
    assert_eq!(
        routes,
        ["vigil-canary", "weighted-b", "weighted"]
            .map(String::from)
            .to_vec()
    );
    assert_eq!(header, vec!["vigil-stable".to_string()]);
}

/// Real Envoy from `dump`'s `listener` with `plugin_config`; 200 rps, healthy for 10 s,
/// then the canary answers 503 to everything for 10 s. Returns seconds from the fault
/// to the last request the canary served.
async fn steers_503_canary(
    name: &str,
    dump: Value,
    listener: &str,
    plugin_config: String,
    stable_cluster: String,
    canary_cluster: String,
    stats_tags: bool,
) -> (f64, Envoy) {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let (sp, cp) = (stable.port(), canary.port());
    let port_of = move |c: &str| {
        if c == stable_cluster {
            Some(sp)
        } else if c == canary_cluster {
            Some(cp)
        } else {
            None
        }
    };
    let mut bootstrap = bootstrap_from_dump(
        &dump,
        listener,
        &port_of,
        &plugin_config,
        &wasm_path().unwrap(),
    )
    .unwrap();
    if !stats_tags {
        // As Kuma's own bootstrap: no tag extraction for Vigil's in-name labels.
        bootstrap.as_object_mut().unwrap().remove("stats_config");
    }
    let envoy = Envoy::start(
        EnvoyOptions::new(name, plugin_config.clone()).transform(move |b| {
            *b = bootstrap;
            Ok(())
        }),
    )
    .await
    .unwrap();
    let healthy = Duration::from_secs(10);
    let t0 = Instant::now() + Duration::from_millis(200);
    let addr = envoy.listener_addr();
    let load = tokio::spawn(async move {
        OpenLoop::new(200.0, Duration::from_secs(20))
            .run(addr, t0, None)
            .await
    });
    // Clients pinning the canary with their own (untrusted) routing header select the
    // canary header rule, whose route has its own name on Kuma 2.x and Istio: they
    // belong to the canary by the cluster that route selects, so they are steered too.
    let pinned = tokio::spawn(async move {
        let mut l = OpenLoop::new(50.0, Duration::from_secs(4));
        l.headers = vec![("x-vigil-subset".into(), "canary".into())];
        l.run(addr, t0 + healthy + Duration::from_secs(5), None)
            .await
    });
    // Requests on another path: on the Istio dump a second weighted rule with its own
    // route name (`weighted-b`), whose pick (xds.cluster_name at request time) says
    // whether the request is the canary's; elsewhere the default rule.
    let other_path = tokio::spawn(async move {
        let mut l = OpenLoop::new(50.0, Duration::from_secs(4));
        l.path = "/b".into();
        l.run(addr, t0 + healthy + Duration::from_secs(5), None)
            .await
    });
    tokio::time::sleep_until((t0 + healthy).into()).await;
    canary.set_error_ratio(1.0);
    let outcomes = load.await.unwrap().unwrap();
    let pinned = pinned.await.unwrap().unwrap();
    let other_path = other_path.await.unwrap().unwrap();
    let other_canary = other_path
        .iter()
        .filter(|o| !o.served_by_is("stable"))
        .count();
    println!(
        "[{name}] {} requests on /b after fault+5 s: {other_canary} not served by stable",
        other_path.len()
    );
    assert_eq!(
        other_canary, 0,
        "[{name}] /b requests reached the sick canary"
    );
    let pinned_canary = pinned.iter().filter(|o| !o.served_by_is("stable")).count();
    println!(
        "[{name}] {} requests with a client x-vigil-subset: canary after fault+5 s: {pinned_canary} not served by stable",
        pinned.len()
    );
    assert_eq!(
        pinned_canary, 0,
        "[{name}] client-pinned requests reached the sick canary"
    );
    let before: Vec<_> = outcomes.iter().filter(|o| o.scheduled < healthy).collect();
    let before_canary = before.iter().filter(|o| o.served_by_is("canary")).count();
    assert!(
        before_canary > 0,
        "no request reached the canary before the fault"
    );
    assert!(
        before.iter().all(|o| o.is_success()),
        "failures before the fault; log:\n{}",
        tail(&envoy.log(), 30)
    );
    let last_canary = outcomes
        .iter()
        .filter(|o| o.scheduled >= healthy && o.served_by_is("canary"))
        .map(|o| o.scheduled)
        .max()
        .unwrap_or(healthy);
    let after = last_canary.saturating_sub(healthy).as_secs_f64();
    let tail_window: Vec<_> = outcomes
        .iter()
        .filter(|o| o.scheduled >= healthy + Duration::from_secs(5))
        .collect();
    let stable_share = tail_window
        .iter()
        .filter(|o| o.served_by_is("stable"))
        .count() as f64
        / tail_window.len().max(1) as f64;
    println!(
        "[{name}] canary served {before_canary} of {} requests before the fault; steered to stable {after:.2} s after the 503 fault (last canary-served request); fault+5..10 s: {:.2}% stable of {}",
        before.len(),
        stable_share * 100.0,
        tail_window.len()
    );
    assert!(
        after < 5.0,
        "[{name}] the canary still served requests {after:.2} s after the fault; log:\n{}",
        tail(&envoy.log(), 40)
    );
    assert!(stable_share >= 0.99, "[{name}] {stable_share}");
    // Steered through the mesh's header rule: stable saw the routing header.
    let via_header = tail_window
        .iter()
        .filter(|o| o.seen_subset_is("stable"))
        .count() as f64
        / tail_window.len().max(1) as f64;
    assert!(
        via_header >= 0.99,
        "[{name}] only {via_header} of steered requests carried x-vigil-subset: stable"
    );
    assert!(envoy.wasm_failures().await.unwrap().is_empty());
    (after, envoy)
}

/// Runs the real `vigil-control inspect`; (exit code, stdout).
fn inspect(config_dump: &str, plugin_config: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(vigil_e2e::control::control_binary().unwrap())
        .args(["inspect", "--config-dump", config_dump, "--plugin-config"])
        .arg(plugin_config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!(
        "$ vigil-control inspect --config-dump {config_dump} --plugin-config {}\n{text}{}",
        plugin_config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn inspect_prints_resolved_names_and_nearest_candidates() {
    let dump = kuma_reference_dir().join("client-config_dump.json");
    let dump = dump.to_str().unwrap();
    let shipped = kong_universal_dir().join("10-meshproxypatch.yaml");
    let (code, text) = inspect(dump, &shipped);
    assert_eq!(code, 0, "{text}");
    for needle in [
        &format!("stable cluster: {KRI_STABLE}"),
        &format!("canary cluster: {KRI_CANARY}"),
        &format!("route {KRI_ROUTE} [route config {KRI_LISTENER}] -> stable + canary"),
        &format!("steering: `x-vigil-subset: stable` -> route {KRI_ROUTE}"),
    ] {
        assert!(
            text.contains(needle.as_str()),
            "missing {needle:?} in:\n{text}"
        );
    }
    // A misnamed canary (what the old manifests shipped): nothing, nearest candidates.
    let dir = vigil_e2e::ScratchDir::new("inspect").unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"canaries":[{"name":"llm-gateway","stable_cluster":"default_llm-gateway-v1_ml_default_msvc_8080","canary_cluster":"default_llm-gateway-v2_ml_default_msvc_8080"}]}"#).unwrap();
    let (code, text) = inspect(dump, &bad);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("canary llm-gateway (naming envoy)") && text.contains("resolves to nothing"),
        "{text}"
    );
    assert!(
        text.contains(&format!("nearest cluster names: {KRI_STABLE}")),
        "{text}"
    );
    // Bad input: a clear error, exit 2.
    let (code, _) = inspect("/nonexistent/dump.json", &shipped);
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kuma_dump_in_envoy_steers_with_the_shipped_config() {
    let (_, envoy) = steers_503_canary(
        "real-kuma",
        real_kuma_dump().unwrap(),
        KRI_LISTENER,
        shipped_kong_universal(),
        KRI_STABLE.into(),
        KRI_CANARY.into(),
        false,
    )
    .await;
    // The shipped MeshMetric include rules, applied to the names /stats/prometheus
    // prints without Kuma tag extraction: each rule selects Vigil metrics, and every
    // Vigil metric is selected.
    // inspect against the live proxy's admin endpoint.
    let url = format!("http://{}/config_dump", envoy.admin_addr());
    let (code, text) = inspect(&url, &kong_universal_dir().join("10-meshproxypatch.yaml"));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("canary cluster: {KRI_CANARY}")),
        "{text}"
    );
    let prom = envoy.prometheus().await.unwrap();
    let names: std::collections::BTreeSet<&str> = prom
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let vigil: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.contains("vigil"))
        .collect();
    assert!(
        vigil.iter().any(|n| n.contains("vigil_requests_total")),
        "{names:?}"
    );
    println!("Vigil metric names in /stats/prometheus (Kuma-style, no tags): {vigil:?}");
    for dir in [kong_dir(), kong_universal_dir()] {
        for (f, d) in documents(&dir).unwrap() {
            if d.get("kind")
                .or_else(|| d.get("type"))
                .and_then(Value::as_str)
                != Some("MeshMetric")
            {
                continue;
            }
            let rules = d["spec"]["default"]["sidecar"]["profiles"]["include"]
                .as_array()
                .unwrap();
            for rule in rules {
                assert!(
                    names
                        .iter()
                        .any(|n| meshmetric_selects(rule, n) && n.contains("vigil")),
                    "{}: include rule {rule} selects no Vigil metric",
                    f.display()
                );
            }
            for n in &vigil {
                assert!(
                    rules.iter().any(|r| meshmetric_selects(r, n)),
                    "{}: {n} not selected",
                    f.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuma_legacy_names_with_per_rule_route_names_steer() {
    steers_503_canary(
        "kuma-legacy",
        kuma_legacy_dump().unwrap(),
        "outbound:127.0.0.1:10001",
        kong_legacy_config(),
        "default_llm-gateway-v1__zone-1_msvc_8080".into(),
        "default_llm-gateway-v2__zone-1_msvc_8080".into(),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_names_steer_with_the_shipped_wasmplugin_config() {
    steers_503_canary(
        "istio-names",
        istio_dump().unwrap(),
        "0.0.0.0_8080",
        shipped_istio(),
        format!("outbound|8080|v1|{ISTIO_HOST}"),
        format!("outbound|8080|v2|{ISTIO_HOST}"),
        true,
    )
    .await;
}

/// A canary whose names match nothing (the old shipped names) in real Envoy on the real
/// dump: after `unmatched_after_s` of traffic, one warning and the gauge at 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misnamed_canary_is_logged_once_and_gauged() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let (sp, cp) = (stable.port(), canary.port());
    let port_of = move |c: &str| match c {
        KRI_STABLE => Some(sp),
        KRI_CANARY => Some(cp),
        _ => None,
    };
    let config = r#"{"mode":"steer","unmatched_after_s":2,"canaries":[{"name":"llm-gateway","stable_cluster":"default_llm-gateway-v1_ml_default_msvc_8080","canary_cluster":"default_llm-gateway-v2_ml_default_msvc_8080"}]}"#;
    let bootstrap = bootstrap_from_dump(
        &real_kuma_dump().unwrap(),
        KRI_LISTENER,
        &port_of,
        config,
        &wasm_path().unwrap(),
    )
    .unwrap();
    let envoy = Envoy::start(EnvoyOptions::new("misnamed", config).transform(move |b| {
        *b = bootstrap;
        Ok(())
    }))
    .await
    .unwrap();
    OpenLoop::new(100.0, Duration::from_secs(5))
        .run(envoy.listener_addr(), Instant::now(), None)
        .await
        .unwrap();
    let gauge = envoy
        .wait_metrics(Duration::from_secs(5), |m| {
            m.value("vigil_canary_unmatched", &[("canary", "llm-gateway")])
                .filter(|v| *v == 1.0)
        })
        .await
        .unwrap();
    let log = envoy.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("matched no cluster"))
        .collect();
    println!("vigil_canary_unmatched{{canary=\"llm-gateway\"}} {gauge}; warnings: {warnings:#?}");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("default_llm-gateway-v1_ml_default_msvc_8080"));
}
