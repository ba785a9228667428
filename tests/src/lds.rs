//! File-based LDS: listeners Envoy reads from a watched file, so a test can change a
//! listener's filter chain (its Vigil plugin configuration) while Envoy runs — what a
//! WasmPlugin update does to a sidecar.
//!
//! [`Lds::new`] makes the scratch directory; [`Lds::install`] is a bootstrap transform
//! step that turns `static_resources.listeners[0]` (already patched by the harness:
//! wasm path, plugin configuration) into a template, writes the listeners built by the
//! caller and points `dynamic_resources.lds_config` at the file. [`Lds::write`]
//! replaces the file atomically (write, then rename: Envoy watches the directory for
//! moves), and [`Lds::wait_active`] waits until Envoy serves the new configuration.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::envoy::Envoy;
use crate::{Result, ScratchDir};

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// A watched LDS file.
#[derive(Debug)]
pub struct Lds {
    dir: ScratchDir,
}

impl Lds {
    /// A scratch directory for the LDS file.
    pub fn new(name: &str) -> Result<Self> {
        Ok(Self {
            dir: ScratchDir::new(&format!("lds-{name}"))?,
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("lds.json")
    }

    /// The harness-patched `static_resources.listeners[0]`, to build listeners from.
    pub fn template(bootstrap: &Value) -> Result<Value> {
        bootstrap
            .pointer("/static_resources/listeners/0")
            .cloned()
            .ok_or_else(|| "bootstrap has no static_resources.listeners[0]".into())
    }

    /// Moves the bootstrap's listeners to this LDS file: writes `listeners` as version
    /// 1 and configures `dynamic_resources.lds_config` to watch it.
    pub fn install(&self, bootstrap: &mut Value, listeners: &[Value]) -> Result<()> {
        self.write(listeners, 1)?;
        let root = bootstrap
            .as_object_mut()
            .ok_or("bootstrap is not an object")?;
        if let Some(s) = root
            .get_mut("static_resources")
            .and_then(Value::as_object_mut)
        {
            s.remove("listeners");
        }
        // Dynamic resources need a node identity.
        root.entry("node")
            .or_insert_with(|| json!({ "id": "vigil-e2e", "cluster": "vigil-e2e" }));
        root.insert(
            "dynamic_resources".to_string(),
            json!({
                "lds_config": {
                    "resource_api_version": "V3",
                    "path_config_source": {
                        "path": self.path().to_string_lossy(),
                        "watched_directory": { "path": self.dir.path().to_string_lossy() }
                    }
                }
            }),
        );
        Ok(())
    }

    /// Replaces the listeners with `listeners` as `version` (atomic rename).
    pub fn write(&self, listeners: &[Value], version: u32) -> Result<()> {
        let resources: Vec<Value> = listeners
            .iter()
            .map(|l| {
                let mut l = l.clone();
                if let Some(o) = l.as_object_mut() {
                    o.insert("@type".to_string(), Value::from(LISTENER_TYPE));
                }
                l
            })
            .collect();
        let doc = json!({ "version_info": version.to_string(), "resources": resources });
        let tmp = self.dir.path().join(format!("lds.json.{version}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)?;
        std::fs::rename(&tmp, self.path())?;
        Ok(())
    }

    /// Waits (bounded) until each listener `(name, needle)` is active with a
    /// configuration whose JSON contains `needle` (e.g. its Vigil plugin
    /// configuration) and no listener is warming.
    pub async fn wait_active(
        envoy: &Envoy,
        wanted: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = envoy
                .admin_get("/config_dump?resource=dynamic_listeners")
                .await?;
            let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            let listeners: Vec<&Value> = v
                .get("configs")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let active = |name: &str, needle: &str| {
                listeners.iter().any(|l| {
                    l.get("name").and_then(Value::as_str) == Some(name)
                        && l.pointer("/active_state/listener")
                            .is_some_and(|c| c.to_string().contains(needle))
                })
            };
            let ready = wanted.iter().all(|(n, needle)| active(n, needle))
                && listeners.iter().all(|l| l.get("warming_state").is_none());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let states: Vec<String> = listeners
                    .iter()
                    .map(|l| {
                        let keys: Vec<&String> = l
                            .as_object()
                            .map(|o| o.keys().collect())
                            .unwrap_or_default();
                        format!(
                            "{:?} {keys:?} error {:?}",
                            l.get("name"),
                            l.get("error_state")
                        )
                    })
                    .collect();
                return Err(format!(
                    "listeners {wanted:?} not active within {timeout:?}: {states:#?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A loopback port that was free a moment ago (bound to port 0, then released), for a
/// listener whose address must stay the same across LDS updates.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A copy of `template` named `name` on `127.0.0.1:port`, whose routes named
/// `checkout` are renamed `route` and whose Vigil plugin configuration is `config`.
pub fn listener(
    template: &Value,
    name: &str,
    port: u16,
    route: &str,
    config: &str,
) -> Result<Value> {
    let mut l = template.clone();
    let set = |l: &mut Value, pointer: &str, v: Value| -> Result<()> {
        *l.pointer_mut(pointer)
            .ok_or_else(|| format!("listener template has no {pointer}"))? = v;
        Ok(())
    };
    set(&mut l, "/name", Value::from(name))?;
    set(
        &mut l,
        "/address/socket_address/port_value",
        Value::from(port),
    )?;
    let hcm = "/filter_chains/0/filters/0/typed_config";
    set(
        &mut l,
        &format!("{hcm}/stat_prefix"),
        Value::from(name.replace('-', "_")),
    )?;
    if let Some(routes) = l
        .pointer_mut(&format!("{hcm}/route_config/virtual_hosts/0/routes"))
        .and_then(Value::as_array_mut)
    {
        for r in routes.iter_mut() {
            if r.get("name").and_then(Value::as_str) == Some("checkout") {
                r["name"] = Value::from(route);
            }
        }
    }
    let filters = l
        .pointer_mut(&format!("{hcm}/http_filters"))
        .and_then(Value::as_array_mut)
        .ok_or("listener template has no http_filters")?;
    let wasm = filters
        .iter_mut()
        .find(|f| f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm"))
        .ok_or("listener template has no wasm filter")?;
    set(
        wasm,
        "/typed_config/config/configuration/value",
        Value::from(config),
    )?;
    Ok(l)
}

/// `name → port` of the listeners Envoy has bound.
pub async fn listener_ports(envoy: &Envoy) -> Result<std::collections::BTreeMap<String, u16>> {
    let reply = envoy.admin_get("/listeners?format=json").await?;
    let v: Value = serde_json::from_slice(&reply.body)?;
    Ok(v.get("listener_statuses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    let name = s.get("name")?.as_str()?.to_string();
                    let port = s
                        .pointer("/local_address/socket_address/port_value")?
                        .as_u64()?;
                    Some((name, u16::try_from(port).ok()?))
                })
                .collect()
        })
        .unwrap_or_default())
}
