//! A small mesh of Envoy sidecars with real mTLS, for the observed-traffic
//! tests: certificates with SPIFFE URI SANs generated here (`rcgen`, one CA),
//! per-service sidecar bootstraps (an mTLS inbound listener with the Vigil
//! filter in front of the local app, a plain outbound listener whose
//! clusters originate mTLS to the peers' inbound listeners with the
//! caller's certificate), and [`rbac_filter`]: an Istio
//! `AuthorizationPolicy` translated to Envoy's RBAC HTTP filter the way
//! istiod does it (principals → `authenticated.principal_name` exact
//! `spiffe://…`; paths → `url_path` exact or, for `{*}` / `{**}` templates,
//! `safe_regex`; methods → the `:method` header; each rule one policy, its
//! `to` operations OR'd; ALLOW with no matching policy denies).

use crate::envoy::hcm_mut;
use crate::{Result, ScratchDir};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Trust domain of the test mesh.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// Namespace of the test mesh.
pub const NAMESPACE: &str = "shop";

/// The SPIFFE id of a service account in the test mesh.
pub fn spiffe_id(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{service}")
}

/// PEM files of one identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
}

/// A CA and the identities it issued, as files in a scratch directory.
pub struct Pki {
    dir: ScratchDir,
    /// The CA certificate file.
    pub ca: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("ca", &self.ca).finish()
    }
}

impl Pki {
    /// A new CA.
    pub fn new() -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = ScratchDir::new("pki")?;
        let ca_key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "vigil e2e mesh CA");
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = p.self_signed(&ca_key)?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem())?;
        Ok(Pki {
            dir,
            ca,
            ca_cert,
            ca_key,
        })
    }

    /// A workload certificate for `service` whose only URI SAN is its SPIFFE
    /// id (and a DNS SAN `service`), for both server and client use.
    pub fn issue(&self, service: &str) -> Result<Identity> {
        let (cert, key) = self.issue_in_memory(service)?;
        let id = Identity {
            cert: self.dir.path().join(format!("{service}.pem")),
            key: self.dir.path().join(format!("{service}.key")),
        };
        std::fs::write(&id.cert, cert.pem())?;
        std::fs::write(&id.key, key.serialize_pem())?;
        Ok(id)
    }

    /// The same certificate as [`Pki::issue`], in memory as DER (certificate,
    /// PKCS#8 key): for clients that connect without a sidecar (thousands of
    /// distinct callers, no files).
    pub fn issue_der(&self, service: &str) -> Result<(Vec<u8>, Vec<u8>)> {
        let (cert, key) = self.issue_in_memory(service)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> Vec<u8> {
        self.ca_cert.der().to_vec()
    }

    fn issue_in_memory(&self, service: &str) -> Result<(rcgen::Certificate, rcgen::KeyPair)> {
        use rcgen::{
            CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType,
        };
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![service.to_string()])?;
        p.subject_alt_names
            .push(SanType::URI(spiffe_id(service).as_str().try_into()?));
        p.distinguished_name.push(DnType::CommonName, service);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok((cert, key))
    }
}

/// A free loopback port (bound, read, released: the sidecars need each
/// other's ports before they start).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The Istio-style outbound cluster name of a peer.
pub fn outbound_cluster(peer: &str) -> String {
    format!("outbound|8080|v1|{peer}.{NAMESPACE}.svc.cluster.local")
}

fn file(p: &std::path::Path) -> Value {
    json!({"filename": p.to_string_lossy()})
}

/// One sidecar's shape.
#[derive(Debug, Clone)]
pub struct SidecarSpec {
    /// Service name (also its service account).
    pub service: String,
    /// Its identity's files.
    pub identity: Identity,
    /// The CA file.
    pub ca: PathBuf,
    /// Inbound listener port and local app port (`None`: no inbound side).
    pub inbound: Option<(u16, u16)>,
    /// Outbound listener port.
    pub outbound: u16,
    /// Peers reachable from the outbound listener (by `Host`): name and inbound port.
    pub peers: Vec<(String, u16)>,
    /// The control service's port (the inbound filter reports there).
    pub control_port: u16,
    /// An RBAC HTTP filter to put in front of the inbound side.
    pub rbac: Option<Value>,
}

impl SidecarSpec {
    /// Rewrite the harness bootstrap (already carrying the Vigil wasm filter
    /// with its plugin configuration) into this sidecar.
    pub fn apply(&self, b: &mut Value) -> Result<()> {
        let filters = hcm_mut(b)?
            .get("http_filters")
            .and_then(Value::as_array)
            .cloned()
            .ok_or("bootstrap: no http_filters")?;
        let wasm = filters
            .iter()
            .find(|f| f["name"] == "envoy.filters.http.wasm")
            .cloned()
            .ok_or("bootstrap: no wasm filter")?;
        let router = json!({"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}});
        let hcm = |prefix: &str, vhosts: Value, http_filters: Vec<Value>| {
            json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": prefix, "codec_type": "AUTO",
                "route_config": {"name": prefix, "virtual_hosts": vhosts},
                "http_filters": http_filters}})
        };
        let tls_context = |validate_san: Option<String>| {
            let validation = match validate_san {
                Some(san) => json!({"trusted_ca": file(&self.ca),
                    "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": san}}]}),
                None => json!({"trusted_ca": file(&self.ca)}),
            };
            json!({"tls_certificates": [{"certificate_chain": file(&self.identity.cert),
                                          "private_key": file(&self.identity.key)}],
                   "validation_context": validation})
        };
        let mut listeners = Vec::new();
        let mut clusters = Vec::new();
        let static_cluster = |name: &str, port: u16| {
            json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
                   "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                       {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}})
        };
        if let Some((port, app)) = self.inbound {
            let mut chain = Vec::new();
            if let Some(r) = &self.rbac {
                chain.push(r.clone());
            }
            chain.push(wasm.clone());
            chain.push(router.clone());
            let vhosts = json!([{"name": "app", "domains": ["*"], "routes": [
                {"name": "inbound", "match": {"prefix": "/"}, "route": {"cluster": "inbound|8080||"}}]}]);
            listeners.push(json!({
                "name": "inbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "require_client_certificate": true,
                        "common_tls_context": tls_context(None)}},
                    "filters": [hcm("inbound", vhosts, chain)]}]}));
            clusters.push(static_cluster("inbound|8080||", app));
        }
        let vhosts: Vec<Value> = self
            .peers
            .iter()
            .map(|(peer, _)| {
                json!({"name": peer, "domains": [peer], "routes": [
                    {"name": peer, "match": {"prefix": "/"}, "route": {"cluster": outbound_cluster(peer)}}]})
            })
            .collect();
        listeners.push(json!({
            "name": "outbound",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.outbound}},
            "filter_chains": [{"filters": [hcm("outbound", Value::Array(vhosts), vec![router.clone()])]}]}));
        for (peer, port) in &self.peers {
            let mut c = static_cluster(&outbound_cluster(peer), *port);
            if let Some(o) = c.as_object_mut() {
                o.insert("transport_socket".into(), json!({"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": peer,
                    "common_tls_context": tls_context(Some(spiffe_id(peer)))}}));
            }
            clusters.push(c);
        }
        clusters.push(static_cluster("vigil-control", self.control_port));
        b["static_resources"] = json!({"listeners": listeners, "clusters": clusters});
        b["node"] = json!({
            "id": format!("sidecar~127.0.0.1~{}-1.{NAMESPACE}~{NAMESPACE}.svc.cluster.local", self.service),
            "cluster": self.service,
            "metadata": {"NAME": format!("{}-1", self.service), "NAMESPACE": NAMESPACE,
                         "SERVICE_ACCOUNT": self.service, "LABELS": {"app": self.service, "version": "v1"}},
        });
        Ok(())
    }
}

fn istio_path_permission(path: &str) -> Value {
    if path.contains("{*}") || path.contains("{**}") {
        let mut regex = String::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{**}") {
                regex.push_str(".*");
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{*}") {
                regex.push_str("[^/]+");
                rest = r;
            } else {
                let mut chars = rest.chars();
                if let Some(c) = chars.next() {
                    if "\\.+*?()|[]{}^$".contains(c) {
                        regex.push('\\');
                    }
                    regex.push(c);
                }
                rest = chars.as_str();
            }
        }
        json!({"url_path": {"path": {"safe_regex": {"regex": regex}}}})
    } else {
        json!({"url_path": {"path": {"exact": path}}})
    }
}

fn or_rules(rules: Vec<Value>) -> Value {
    json!({"or_rules": {"rules": rules}})
}

/// Envoy's RBAC HTTP filter for the ALLOW `AuthorizationPolicy` documents
/// given (plus the deny-all they assume: with an ALLOW action, a request
/// no policy matches is denied). Only the fields Vigil's drafts use are
/// translated (`from.source.principals`, `to.operation.methods/paths`);
/// anything else is an error, never silently widened.
pub fn rbac_filter(policies: &[Value]) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for p in policies {
        let spec = &p["spec"];
        if spec.as_object().is_some_and(|m| m.is_empty()) {
            continue; // the deny-all: adds no ALLOW policy
        }
        if spec["action"] != "ALLOW" {
            return Err(format!("only ALLOW policies are translated: {spec}").into());
        }
        let name = p
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("policy");
        let ns = p
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
            let mut principals = Vec::new();
            for from in rule["from"].as_array().into_iter().flatten() {
                let ids: Vec<Value> = from
                    .pointer("/source/principals")
                    .and_then(Value::as_array)
                    .ok_or("rule.from[].source.principals expected")?
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|p| json!({"authenticated": {"principal_name": {"exact": format!("spiffe://{p}")}}}))
                    .collect();
                principals.push(json!({"and_ids": {"ids": [{"or_ids": {"ids": ids}}]}}));
            }
            let mut permissions = Vec::new();
            for to in rule["to"].as_array().into_iter().flatten() {
                let op = &to["operation"];
                let mut and = Vec::new();
                if let Some(methods) = op["methods"].as_array() {
                    and.push(or_rules(
                        methods
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|m| json!({"header": {"name": ":method", "string_match": {"exact": m}}}))
                            .collect(),
                    ));
                }
                if let Some(paths) = op["paths"].as_array() {
                    and.push(or_rules(
                        paths
                            .iter()
                            .filter_map(Value::as_str)
                            .map(istio_path_permission)
                            .collect(),
                    ));
                }
                permissions.push(json!({"and_rules": {"rules": and}}));
            }
            if principals.is_empty() || permissions.is_empty() {
                return Err(format!("rule {i} of {name} has no from/to: not translated").into());
            }
            out.insert(
                format!("ns[{ns}]-policy[{name}]-rule[{i}]"),
                json!({"permissions": permissions, "principals": principals}),
            );
        }
    }
    Ok(json!({"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": out}}}))
}

/// One HTTP/1.1 request through a sidecar's plain outbound listener
/// (`Host` selects the peer); the status.
pub async fn call(outbound: u16, host: &str, method: &str, path: &str) -> Result<u16> {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], outbound));
    let (status, _) =
        crate::http::raw_request(addr, req.as_bytes(), std::time::Duration::from_secs(5)).await?;
    Ok(status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn translation_matches_istiod_shape() {
        let p = json!({"metadata": {"name": "a", "namespace": "shop"}, "spec": {"action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}],
                       "to": [{"operation": {"methods": ["GET"], "paths": ["/v1/orders/{*}"]}},
                              {"operation": {"methods": ["POST"], "paths": ["/v1/orders"]}}]}]}});
        let deny = json!({"metadata": {"name": "deny-all"}, "spec": {}});
        let f = rbac_filter(&[deny, p]).unwrap();
        let pol = &f["typed_config"]["rules"]["policies"]["ns[shop]-policy[a]-rule[0]"];
        assert_eq!(
            pol["principals"][0]["and_ids"]["ids"][0]["or_ids"]["ids"][0]["authenticated"]
                ["principal_name"]["exact"],
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        let perm = &pol["permissions"][0]["and_rules"]["rules"];
        assert_eq!(perm[0]["or_rules"]["rules"][0]["header"]["name"], ":method");
        assert_eq!(
            perm[1]["or_rules"]["rules"][0]["url_path"]["path"]["safe_regex"]["regex"],
            "/v1/orders/[^/]+"
        );
        assert_eq!(
            pol["permissions"][1]["and_rules"]["rules"][1]["or_rules"]["rules"][0]["url_path"]
                ["path"]["exact"],
            "/v1/orders"
        );
        assert!(rbac_filter(&[json!({"spec": {"action": "DENY"}})]).is_err());
    }
}
