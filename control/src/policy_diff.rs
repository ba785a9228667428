//! The policies in force, read from YAML files (the GitOps directory, where
//! approved drafts land, and whatever else the operator keeps there), and
//! each draft's diff against them: per destination, the Istio ALLOW rules as
//! (principal, method, path) triples and the Kuma allowed SPIFFE ids, each
//! `added` (the draft allows it, nothing in force does), `removed` (in force,
//! not in the draft: traffic that was never observed), or `unchanged`.
//!
//! Reading is bounded: `*.yaml` / `*.yml` files in the directory and one
//! level below, at most [`MAX_FILES`] files of at most [`MAX_FILE_BYTES`];
//! a file that is not YAML is reported by name and skipped, never fatal.
//! A rule in force without `from` or `to` matches anything: it shows as the
//! wildcard `*`.

use crate::policy::Draft;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// Most files read.
pub const MAX_FILES: usize = 1_000;
/// Largest file read, bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// One object in force and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct InForce {
    /// File (relative to the directory read).
    pub file: String,
    /// The object.
    pub object: Value,
}

/// What a directory holds: objects, and files skipped with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Read {
    /// Objects (of the kinds asked for).
    pub objects: Vec<InForce>,
    /// `file: why` for files skipped.
    pub skipped: Vec<String>,
}

fn yaml_files(dir: &Path, depth: u8, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if out.len() >= MAX_FILES {
            return;
        }
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            if depth > 0 {
                yaml_files(&p, depth - 1, out);
            }
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x == "yaml" || x == "yml")
        {
            out.push(p);
        }
    }
}

/// Read the policies in force under `dir` (a missing directory holds none).
pub fn read_dir(dir: &Path) -> Read {
    read_dir_kinds(dir, &["AuthorizationPolicy", "MeshTrafficPermission"])
}

/// Read the objects of the given `kinds` under `dir`, with the same bounds
/// (the resilience warnings read VirtualServices, DestinationRules and the
/// Kong Mesh timeout / retry / circuit-breaker policies this way).
pub fn read_dir_kinds(dir: &Path, kinds: &[&str]) -> Read {
    let mut files = Vec::new();
    yaml_files(dir, 1, &mut files);
    let mut read = Read::default();
    for p in files {
        let name = p
            .strip_prefix(dir)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        if size > MAX_FILE_BYTES {
            read.skipped
                .push(format!("{name}: larger than {MAX_FILE_BYTES} bytes"));
            continue;
        }
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                read.skipped.push(format!("{name}: {e}"));
                continue;
            }
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            match Value::deserialize(doc) {
                Ok(v) => {
                    let kind = v.get("kind").and_then(Value::as_str);
                    if kind.is_some_and(|k| kinds.contains(&k)) {
                        read.objects.push(InForce {
                            file: name.clone(),
                            object: v,
                        });
                    }
                }
                Err(e) => {
                    read.skipped.push(format!("{name}: not YAML: {e}"));
                    break;
                }
            }
        }
    }
    read
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

type Triple = (String, String, String);

/// The (principal, method, path) triples an ALLOW policy's rules admit
/// (missing fields are `*`).
pub fn istio_triples(policy: &Value) -> BTreeSet<Triple> {
    let mut out = BTreeSet::new();
    let rules = policy
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for rule in &rules {
        let mut principals: Vec<String> = rule
            .get("from")
            .and_then(Value::as_array)
            .map(|f| {
                f.iter()
                    .flat_map(|s| strs(s.pointer("/source/principals")))
                    .collect()
            })
            .unwrap_or_default();
        if principals.is_empty() {
            principals.push("*".into());
        }
        let mut ops: Vec<(String, String)> = Vec::new();
        for to in rule
            .get("to")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let mut methods = strs(to.pointer("/operation/methods"));
            let mut paths = strs(to.pointer("/operation/paths"));
            if methods.is_empty() {
                methods.push("*".into());
            }
            if paths.is_empty() {
                paths.push("*".into());
            }
            for m in &methods {
                for p in &paths {
                    ops.push((m.clone(), p.clone()));
                }
            }
        }
        if ops.is_empty() {
            ops.push(("*".into(), "*".into()));
        }
        for pr in &principals {
            for (m, p) in &ops {
                out.insert((pr.clone(), m.clone(), p.clone()));
            }
        }
    }
    out
}

/// The SPIFFE ids a MeshTrafficPermission allows.
pub fn kuma_ids(mtp: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in mtp
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        for a in rule
            .pointer("/default/allow")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if let Some(id) = a.pointer("/spiffeID/value").and_then(Value::as_str) {
                out.insert(id.to_string());
            }
        }
    }
    out
}

fn selects(obj: &Value, service: &str, namespace: &str, kuma: bool) -> bool {
    let label = if kuma {
        obj.pointer("/spec/targetRef/labels/app")
    } else {
        obj.pointer("/spec/selector/matchLabels/app")
    };
    let ns_ok = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .is_none_or(|n| n == namespace);
    let allow = kuma
        || obj
            .pointer("/spec/action")
            .and_then(Value::as_str)
            .is_none_or(|a| a == "ALLOW");
    ns_ok && allow && label.and_then(Value::as_str) == Some(service)
}

fn split<T: Ord + Clone>(draft: &BTreeSet<T>, live: &BTreeSet<T>) -> (Vec<T>, Vec<T>, Vec<T>) {
    (
        draft.difference(live).cloned().collect(),
        live.difference(draft).cloned().collect(),
        draft.intersection(live).cloned().collect(),
    )
}

fn triples_json(t: &[Triple]) -> Vec<Value> {
    t.iter()
        .map(|(p, m, path)| json!({"principal": p, "method": m, "path": path}))
        .collect()
}

/// The draft's diff against the objects in force for its destination.
pub fn diff(d: &Draft, in_force: &[InForce]) -> Value {
    let mut live_istio = BTreeSet::new();
    let mut live_kuma = BTreeSet::new();
    let mut files = BTreeSet::new();
    for f in in_force {
        let kind = f.object.get("kind").and_then(Value::as_str);
        if kind == Some("AuthorizationPolicy")
            && selects(&f.object, &d.service, &d.namespace, false)
        {
            live_istio.extend(istio_triples(&f.object));
            files.insert(f.file.clone());
        } else if kind == Some("MeshTrafficPermission")
            && selects(&f.object, &d.service, &d.namespace, true)
        {
            live_kuma.extend(kuma_ids(&f.object));
            files.insert(f.file.clone());
        }
    }
    let (ia, ir, iu) = split(&istio_triples(&d.allow), &live_istio);
    let (ka, kr, ku) = split(&kuma_ids(&d.mesh_traffic_permission), &live_kuma);
    json!({
        "service": d.service,
        "namespace": d.namespace,
        "in_force_files": files,
        "istio": {"added": triples_json(&ia), "removed": triples_json(&ir), "unchanged": triples_json(&iu)},
        "kuma": {"added": ka, "removed": kr, "unchanged": ku},
        "changed": !(ia.is_empty() && ir.is_empty() && ka.is_empty() && kr.is_empty()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        let allow = json!({"kind": "AuthorizationPolicy", "metadata": {"namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "orders"}}, "action": "ALLOW", "rules": [
                {"from": [{"source": {"principals": ["td/ns/shop/sa/web"]}}],
                 "to": [{"operation": {"methods": ["GET"], "paths": ["/v1/orders/{*}"]}},
                        {"operation": {"methods": ["POST"], "paths": ["/v1/orders"]}}]}]}});
        let kuma = json!({"kind": "MeshTrafficPermission", "metadata": {"namespace": "shop"},
            "spec": {"targetRef": {"kind": "Dataplane", "labels": {"app": "orders"}},
                "rules": [{"default": {"allow": [{"spiffeID": {"type": "Exact", "value": "spiffe://td/ns/shop/sa/web"}}]}}]}});
        Draft {
            service: "orders".into(),
            namespace: "shop".into(),
            deny_all: json!({}),
            allow,
            mesh_traffic_permission: kuma,
            evidence: vec![],
            uncovered: vec![],
        }
    }

    #[test]
    fn added_removed_unchanged_per_rule_from_files() {
        let root = std::env::temp_dir().join(format!("vigil-policy-diff-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("team")).unwrap();
        std::fs::write(
            root.as_path().join("team/orders.yaml"),
            "# in force\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: orders, namespace: shop}\nspec:\n  selector: {matchLabels: {app: orders}}\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [td/ns/shop/sa/web, td/ns/shop/sa/old]}}]\n    to: [{operation: {methods: [GET], paths: ['/v1/orders/{*}']}}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: other, namespace: shop}\nspec: {selector: {matchLabels: {app: payments}}, action: ALLOW, rules: [{}]}\n---\nkind: MeshTrafficPermission\nmetadata: {namespace: shop}\nspec: {targetRef: {kind: Dataplane, labels: {app: orders}}, rules: [{default: {allow: [{spiffeID: {type: Exact, value: 'spiffe://td/ns/shop/sa/old'}}]}}]}\n",
        )
        .unwrap();
        std::fs::write(root.as_path().join("broken.yaml"), "a: [\n").unwrap();
        let read = read_dir(root.as_path());
        assert_eq!(read.objects.len(), 3);
        assert_eq!(read.skipped.len(), 1, "{:?}", read.skipped);
        let d = diff(&draft(), &read.objects);
        assert_eq!(
            d["istio"]["added"],
            json!([{"principal": "td/ns/shop/sa/web", "method": "POST", "path": "/v1/orders"}])
        );
        assert_eq!(
            d["istio"]["removed"],
            json!([{"principal": "td/ns/shop/sa/old", "method": "GET", "path": "/v1/orders/{*}"}])
        );
        assert_eq!(d["istio"]["unchanged"].as_array().unwrap().len(), 1);
        assert_eq!(d["kuma"]["added"], json!(["spiffe://td/ns/shop/sa/web"]));
        assert_eq!(d["kuma"]["removed"], json!(["spiffe://td/ns/shop/sa/old"]));
        assert_eq!(d["in_force_files"], json!(["team/orders.yaml"]));
        assert_eq!(d["changed"], json!(true));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn nothing_in_force_means_everything_added_and_wildcards_show() {
        let d = diff(&draft(), &[]);
        assert_eq!(d["istio"]["added"].as_array().unwrap().len(), 2);
        assert_eq!(d["istio"]["removed"], json!([]));
        let open = json!({"kind": "AuthorizationPolicy",
            "spec": {"selector": {"matchLabels": {"app": "orders"}}, "rules": [{}]}});
        assert_eq!(
            istio_triples(&open).into_iter().collect::<Vec<_>>(),
            vec![("*".to_string(), "*".to_string(), "*".to_string())]
        );
    }
}
