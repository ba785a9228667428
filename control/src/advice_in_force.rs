//! Resilience warnings against the configuration in force: the Istio
//! `VirtualService` / `DestinationRule` and Kong Mesh `MeshTimeout` /
//! `MeshRetry` / `MeshCircuitBreaker` objects found in the GitOps directory
//! (read like the policies in force, [`crate::policy_diff::read_dir_kinds`]:
//! bounded, a bad file listed and skipped), compared with each route's
//! observed numbers ([`crate::advice::Evidence`]). Pure.
//!
//! Per route (service, method, path template):
//! - **VirtualService**: the first `http` route (Istio's order) whose
//!   `hosts` name the service (first DNS label, or `*`) and whose `match`
//!   admits the method and a sample path of the template (`uri` exact,
//!   prefix, or a regex equal to the template's own or `literal.*`). Its
//!   `timeout` / `retries.perTryTimeout` shorter than the observed p99.9
//!   (or p99) is a warning: it cuts requests that would have succeeded;
//!   `retries.attempts` > 0 on a non-idempotent method (a POST generation
//!   call) is a warning: a retry runs and bills the call twice.
//! - **DestinationRule** for the service without `outlierDetection` where
//!   the advice proposes it (5xx clustered on one instance): a warning.
//! - **MeshTimeout** whose `to` targets the service (a `MeshService` by
//!   name or `kuma.io/display-name`, or `Mesh`): `http.requestTimeout`
//!   shorter than the p99.9 is a warning. **MeshRetry**: `http.numRetries`
//!   above 0 on a service with a non-idempotent route is a warning (Kuma's
//!   retry is per service, not per method). **MeshCircuitBreaker** without
//!   `outlierDetection` where outlier detection is proposed: a warning.
//!
//! Every warning names the file and the object it comes from.

use crate::advice::{idempotent, RouteAdvice};
use crate::policy_diff::InForce;
use serde_json::Value;
use vigil_traffic::template::{to_regex, ID, REST};

/// The kinds read from the GitOps directory.
pub const KINDS: &[&str] = &[
    "VirtualService",
    "DestinationRule",
    "MeshTimeout",
    "MeshRetry",
    "MeshCircuitBreaker",
];

/// A protobuf / Go duration (`1s`, `0.5s`, `500ms`, `1m30s`, `2h`) in ms.
pub fn duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at_checked(n)?;
        let v: f64 = num.parse().ok()?;
        let u = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at_checked(u)?;
        total += v * match unit {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        rest = tail;
    }
    Some(total)
}

fn first_label(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

/// A concrete path the template stands for (placeholders → `0`).
fn sample(template: &str) -> String {
    template.replace(ID, "0").replace(REST, "0")
}

fn string_match(m: &Value, value: &str, template: &str) -> Option<bool> {
    if let Some(e) = m.get("exact").and_then(Value::as_str) {
        return Some(e == value || e == template);
    }
    if let Some(p) = m.get("prefix").and_then(Value::as_str) {
        return Some(value.starts_with(p));
    }
    if let Some(r) = m.get("regex").and_then(Value::as_str) {
        if r == to_regex(template) || r == ".*" {
            return Some(true);
        }
        if let Some(lit) = r.strip_suffix(".*") {
            if !lit.contains(|c: char| "\\+*?()|[]{}^$".contains(c)) {
                return Some(value.starts_with(&lit.replace("\\.", ".")));
            }
        }
        return None;
    }
    Some(true)
}

/// Whether one VirtualService `match` entry admits the route (`None`: not
/// understood, e.g. a general regex or a header match).
fn admits(m: &Value, method: &str, path: &str) -> Option<bool> {
    let uri = match m.get("uri") {
        Some(u) => string_match(u, &sample(path), path)?,
        None => true,
    };
    let meth = match m.get("method") {
        Some(u) => string_match(u, method, method)?,
        None => true,
    };
    if m.get("headers").is_some() || m.get("queryParams").is_some() {
        return None;
    }
    Some(uri && meth)
}

/// `Kind name (file)` of an object in force.
pub fn name_of(o: &InForce) -> String {
    let kind = o.object.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = o
        .object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind} {name} ({})", o.file)
}

fn ms(v: f64) -> String {
    format!("{v:.0} ms")
}

fn timeout_warning(what: &str, t: f64, a: &RouteAdvice) -> Option<String> {
    let e = &a.evidence;
    if t < e.latency_p99_ms {
        Some(format!(
            "{what} {} is shorter than the observed p99 {} (p99.9 {}): it cuts more than 1 % of requests that would have succeeded; proposed {} ms",
            ms(t), ms(e.latency_p99_ms), ms(e.latency_p999_ms), a.timeout_ms
        ))
    } else if t < e.latency_p999_ms {
        Some(format!(
            "{what} {} is shorter than the observed p99.9 {} ({}): it cuts the slow tail that would have succeeded; proposed {} ms",
            ms(t), ms(e.latency_p999_ms), e.p999_how, a.timeout_ms
        ))
    } else {
        None
    }
}

fn check_virtual_service(a: &mut RouteAdvice, o: &InForce) -> bool {
    let spec = o.object.get("spec").unwrap_or(&Value::Null);
    let hosts_match = spec["hosts"].as_array().is_some_and(|h| {
        h.iter()
            .filter_map(Value::as_str)
            .any(|h| h == "*" || first_label(h) == a.service)
    });
    if !hosts_match {
        return false;
    }
    let Some(routes) = spec["http"].as_array() else {
        return false;
    };
    let route = routes
        .iter()
        .find(|r| match r.get("match").and_then(Value::as_array) {
            None => true,
            Some(ms) => ms
                .iter()
                .any(|m| admits(m, &a.method, &a.path).unwrap_or(false)),
        });
    let Some(route) = route else {
        return false;
    };
    let who = format!(
        "in force: {} route {:?}",
        name_of(o),
        route.get("name").and_then(Value::as_str).unwrap_or("")
    );
    if let Some(t) = route
        .get("timeout")
        .and_then(Value::as_str)
        .and_then(duration_ms)
    {
        if let Some(w) = timeout_warning(&format!("{who}: timeout"), t, a) {
            a.warnings.push(w);
        }
    }
    let retries = &route["retries"];
    let attempts = retries.get("attempts").and_then(Value::as_u64).unwrap_or(0);
    if attempts > 0 && !idempotent(&a.method) {
        a.warnings.push(format!(
            "{who}: retries.attempts {attempts} on {} {} (not idempotent): a retried generation call runs — and bills — twice; set attempts 0",
            a.method, a.path
        ));
    }
    if attempts > 0 {
        if let Some(t) = retries
            .get("perTryTimeout")
            .and_then(Value::as_str)
            .and_then(duration_ms)
        {
            if let Some(w) = timeout_warning(&format!("{who}: retries.perTryTimeout"), t, a) {
                a.warnings.push(w);
            }
        }
    }
    true
}

fn targets(o: &InForce, service: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for to in o
        .object
        .pointer("/spec/to")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = &to["targetRef"];
        let hit = match r.get("kind").and_then(Value::as_str) {
            Some("Mesh") => true,
            Some("MeshService") => {
                r.get("name").and_then(Value::as_str).map(first_label) == Some(service)
                    || r.pointer("/labels/kuma.io~1display-name")
                        .and_then(Value::as_str)
                        == Some(service)
            }
            _ => false,
        };
        if hit {
            out.push(to["default"].clone());
        }
    }
    out
}

/// Add warnings against the objects in force (of [`KINDS`]) to each route.
pub fn check(advice: &mut [RouteAdvice], in_force: &[InForce]) {
    for a in advice.iter_mut() {
        let mut vs_seen = false;
        let mut dr_outlier: Option<bool> = None;
        let mut kuma_cb_outlier: Option<bool> = None;
        for o in in_force {
            match o.object.get("kind").and_then(Value::as_str) {
                Some("VirtualService") if !vs_seen => {
                    vs_seen = check_virtual_service(a, o);
                }
                Some("DestinationRule") => {
                    let host = o.object.pointer("/spec/host").and_then(Value::as_str);
                    if host.map(first_label) == Some(a.service.as_str()) {
                        let has = o
                            .object
                            .pointer("/spec/trafficPolicy/outlierDetection")
                            .is_some();
                        dr_outlier = Some(dr_outlier.unwrap_or(false) || has);
                    }
                }
                Some("MeshTimeout") => {
                    for d in targets(o, &a.service) {
                        if let Some(t) = d
                            .pointer("/http/requestTimeout")
                            .and_then(Value::as_str)
                            .and_then(duration_ms)
                        {
                            let what = format!("in force: {}: http.requestTimeout", name_of(o));
                            if let Some(w) = timeout_warning(&what, t, a) {
                                a.warnings.push(w);
                            }
                        }
                    }
                }
                Some("MeshRetry") => {
                    for d in targets(o, &a.service) {
                        let n = d
                            .pointer("/http/numRetries")
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                        if n > 0 && !idempotent(&a.method) {
                            a.warnings.push(format!(
                                "in force: {}: http.numRetries {n} applies to {} {} (not idempotent; Kuma retries per service, not per method): a retried generation call runs twice",
                                name_of(o), a.method, a.path
                            ));
                        }
                    }
                }
                Some("MeshCircuitBreaker") => {
                    for d in targets(o, &a.service) {
                        let has = d.get("outlierDetection").is_some();
                        kuma_cb_outlier = Some(kuma_cb_outlier.unwrap_or(false) || has);
                    }
                }
                _ => {}
            }
        }
        if a.outlier.is_some() {
            let worst = a
                .evidence
                .instances
                .iter()
                .max_by_key(|(_, _, e)| *e)
                .map(|(k, _, e)| format!("{k} ({e} 5xx)"))
                .unwrap_or_default();
            if dr_outlier == Some(false) {
                a.warnings.push(format!(
                    "in force: the DestinationRule for {} has no outlierDetection while 5xx cluster on {worst}: the failing instance keeps its share of traffic",
                    a.service
                ));
            }
            if kuma_cb_outlier == Some(false) {
                a.warnings.push(format!(
                    "in force: the MeshCircuitBreaker for {} has no outlierDetection while 5xx cluster on {worst}",
                    a.service
                ));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::advice::Evidence;
    use serde_json::json;

    fn route(method: &str, path: &str, p99: f64, p999: f64) -> RouteAdvice {
        RouteAdvice {
            service: "models".into(),
            version: "v1".into(),
            method: method.into(),
            path: path.into(),
            requests: 2000,
            timeout_ms: crate::advice::round_up_100(p999 * crate::advice::MARGIN),
            first_byte_timeout_ms: None,
            retries: 0,
            per_try_timeout_ms: None,
            retry_on: Vec::new(),
            outlier: None,
            concurrency: 1.0,
            failure_ratio: 0.0,
            evidence: Evidence {
                latency_p99_ms: p99,
                latency_p999_ms: p999,
                p999_how: "p99.9 of 2000".into(),
                instances: vec![
                    ("models-1.shop".into(), 1000, 0),
                    ("models-2.shop".into(), 1000, 90),
                ],
                ..Evidence::default()
            },
            explanation: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn obj(file: &str, v: Value) -> InForce {
        InForce {
            file: file.into(),
            object: v,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms("1s"), Some(1000.0));
        assert_eq!(duration_ms("0.5s"), Some(500.0));
        assert_eq!(duration_ms("250ms"), Some(250.0));
        assert_eq!(duration_ms("1m30s"), Some(90_000.0));
        assert_eq!(duration_ms("2h"), Some(7_200_000.0));
        assert_eq!(duration_ms("10"), None);
        assert_eq!(duration_ms("1x"), None);
        assert_eq!(duration_ms(""), None);
    }

    #[test]
    fn virtual_service_timeouts_and_retries() {
        let vs = obj(
            "vs.yaml",
            json!({"kind": "VirtualService", "metadata": {"name": "models"},
            "spec": {"hosts": ["models.shop.svc.cluster.local"], "http": [
                {"name": "infer", "match": [{"method": {"exact": "POST"}, "uri": {"prefix": "/v1/models/"}}],
                 "timeout": "1s", "retries": {"attempts": 3, "perTryTimeout": "500ms"}},
                {"name": "rest", "timeout": "10s", "retries": {"attempts": 2}}]}}),
        );
        let mut a = vec![
            route("POST", "/v1/models/{id}/infer", 900.0, 2000.0),
            route("GET", "/v1/models/{id}", 30.0, 60.0),
        ];
        check(&mut a, &[vs]);
        let post = &a[0].warnings;
        assert_eq!(post.len(), 3, "{post:#?}");
        assert!(
            post[0].contains(
                "route \"infer\": timeout 1000 ms is shorter than the observed p99.9 2000 ms"
            ),
            "{}",
            post[0]
        );
        assert!(post[0].contains("vs.yaml"));
        assert!(
            post[1].contains("retries.attempts 3 on POST"),
            "{}",
            post[1]
        );
        assert!(
            post[2].contains("perTryTimeout 500 ms is shorter than the observed p99 900 ms"),
            "{}",
            post[2]
        );
        // GET falls to the second route: 10 s covers it, retries are fine on GET.
        assert!(a[1].warnings.is_empty(), "{:?}", a[1].warnings);
    }

    #[test]
    fn only_the_first_matching_route_and_host_count() {
        let vs = obj(
            "a.yaml",
            json!({"kind": "VirtualService", "metadata": {"name": "x"},
            "spec": {"hosts": ["orders"], "http": [{"timeout": "1ms"}]}}),
        );
        let vs2 = obj(
            "b.yaml",
            json!({"kind": "VirtualService", "metadata": {"name": "m"},
            "spec": {"hosts": ["models"], "http": [
                {"match": [{"uri": {"exact": "/other"}}], "timeout": "1ms"},
                {"match": [{"uri": {"regex": "/v1/models/[^/]+/infer"}}], "timeout": "5s"},
                {"timeout": "1ms"}]}}),
        );
        let mut a = vec![route("POST", "/v1/models/{id}/infer", 900.0, 2000.0)];
        check(&mut a, &[vs, vs2]);
        assert!(a[0].warnings.is_empty(), "{:?}", a[0].warnings);
    }

    #[test]
    fn destination_rule_and_kuma_policies() {
        let dr = obj(
            "dr.yaml",
            json!({"kind": "DestinationRule", "metadata": {"name": "models"},
            "spec": {"host": "models", "trafficPolicy": {"connectionPool": {}}}}),
        );
        let mt = obj(
            "k.yaml",
            json!({"kind": "MeshTimeout", "metadata": {"name": "t"},
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService",
                "labels": {"kuma.io/display-name": "models"}}, "default": {"http": {"requestTimeout": "1500ms"}}}]}}),
        );
        let mr = obj(
            "k.yaml",
            json!({"kind": "MeshRetry", "metadata": {"name": "r"},
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"http": {"numRetries": 2}}}]}}),
        );
        let other = obj(
            "o.yaml",
            json!({"kind": "MeshTimeout", "metadata": {"name": "o"},
            "spec": {"to": [{"targetRef": {"kind": "MeshService", "name": "orders"},
                "default": {"http": {"requestTimeout": "1ms"}}}]}}),
        );
        let mut a = vec![route("POST", "/v1/models/{id}/infer", 900.0, 2000.0)];
        a[0].outlier = Some((5, 10, 30, 50));
        check(&mut a, &[dr, mt, mr, other]);
        let w = &a[0].warnings;
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(w.iter().any(|x| x.contains("MeshTimeout t (k.yaml): http.requestTimeout 1500 ms is shorter than the observed p99.9")));
        assert!(w.iter().any(|x| x.contains("numRetries 2 applies to POST")));
        assert!(
            w.iter()
                .any(|x| x
                    .contains("no outlierDetection while 5xx cluster on models-2.shop (90 5xx)"))
        );
    }

    #[test]
    fn nothing_in_force_no_warnings() {
        let mut a = vec![route("POST", "/v1/x", 900.0, 2000.0)];
        a[0].outlier = Some((5, 10, 30, 50));
        check(&mut a, &[]);
        assert!(a[0].warnings.is_empty());
    }
}
