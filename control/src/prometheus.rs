//! Prometheus mode: the filters' enriched metrics read back through the
//! Prometheus HTTP API instead of (or besides) the filters' reports.
//!
//! Why this exists: where the sidecars cannot reach the control service but a
//! Prometheus already scrapes Envoy's `/stats/prometheus`, the counters
//! `vigil_requests_total{route,cluster}` / `vigil_errors_total{route,cluster}`
//! carry what the analysis needs for the error signal. Each analysis tick
//! [`PromSource::poll`] makes instant queries (`GET /api/v1/query`), checks
//! the answers (status `success`, type `vector`, finite non-negative numbers,
//! at most [`MAX_SERIES`] series, bounded body) and turns them into the same
//! per-tick deltas the report path produces.
//!
//! Counters: the raw counters are queried (every scraped series, by its full
//! label set) and the delta since the previous poll is taken here, per series,
//! with Prometheus' counter-reset rule (a drop means a restart: the new value
//! is the delta). This is exact and does not depend on how the tick lines up
//! with the scrape interval (an `increase(x[tick])` would extrapolate, and
//! miss or double-count whenever a window holds fewer than two scrapes). A
//! series seen for the first time only sets its baseline: history from before
//! the service started is never counted as one tick.
//!
//! Latency: Prometheus only has the filter's p95/p99 *gauges* (over the
//! filter's own rolling window), not the histogram. They can support a p99 SLO
//! threshold check, not the scorer's latency test, which needs the histogram:
//! with Prometheus evidence the canary-vs-stable test runs on errors only.

use crate::client::HttpClient;
use hyper::Method;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use vigil_scorer::window::{Counters, TickDelta};

/// Most series accepted in one answer.
pub const MAX_SERIES: usize = 10_000;
/// Largest label value accepted (route / cluster names are ≤ 256 bytes).
pub const MAX_LABEL: usize = 256;

/// What one query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `vigil_requests_total` (raw counter, every series).
    Requests,
    /// `vigil_errors_total` (raw counter, every series).
    Errors,
    /// `max by (route,cluster) (vigil_latency_p99_ms)`.
    P99,
    /// `max by (route,cluster) (vigil_latency_p95_ms)`.
    P95,
}

impl Kind {
    /// Every query made per tick.
    pub const ALL: [Kind; 4] = [Kind::Requests, Kind::Errors, Kind::P95, Kind::P99];

    /// The PromQL expression.
    pub fn query(self) -> &'static str {
        match self {
            Kind::Requests => "vigil_requests_total",
            Kind::Errors => "vigil_errors_total",
            Kind::P95 => "max by (route, cluster) (vigil_latency_p95_ms)",
            Kind::P99 => "max by (route, cluster) (vigil_latency_p99_ms)",
        }
    }
}

/// Percent-encode a query parameter (RFC 3986 unreserved kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `BASE/api/v1/query?query=...` for one instant query.
pub fn query_url(base: &str, query: &str) -> String {
    format!(
        "{}/api/v1/query?query={}",
        base.trim_end_matches('/'),
        encode(query)
    )
}

/// One sample of an instant vector: its labels (without `__name__`) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Labels, sorted.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// `(route, cluster)` when both labels are present.
    pub fn key(&self) -> Option<(String, String)> {
        Some((
            self.labels.get("route")?.clone(),
            self.labels.get("cluster")?.clone(),
        ))
    }

    fn id(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.labels {
            s.push_str(k);
            s.push('\u{1}');
            s.push_str(v);
            s.push('\u{2}');
        }
        s
    }
}

/// Parse and check an instant-query answer: status `success`, result type
/// `vector`, each value `[ts, "number"]` finite and ≥ 0, labels bounded, at
/// most [`MAX_SERIES`] samples.
pub fn parse_vector(body: &[u8]) -> Result<Vec<Sample>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let status = v.get("status").and_then(Value::as_str).unwrap_or("");
    if status != "success" {
        let err = v.get("error").and_then(Value::as_str).unwrap_or("");
        let err = crate::text::clip(err, 200);
        return Err(format!("status {status:?}: {err}"));
    }
    let data = v.get("data").ok_or("no data")?;
    let rt = data.get("resultType").and_then(Value::as_str).unwrap_or("");
    if rt != "vector" {
        return Err(format!("result type {rt:?}, expected \"vector\""));
    }
    let result = data
        .get("result")
        .and_then(Value::as_array)
        .ok_or("data.result is not an array")?;
    if result.len() > MAX_SERIES {
        return Err(format!(
            "{} series, at most {MAX_SERIES} accepted",
            result.len()
        ));
    }
    let mut out = Vec::with_capacity(result.len());
    for (i, r) in result.iter().enumerate() {
        let metric = r
            .get("metric")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("result[{i}].metric is not an object"))?;
        let mut labels = BTreeMap::new();
        for (k, v) in metric {
            if k == "__name__" {
                continue;
            }
            if k.len() > MAX_LABEL {
                return Err(format!("result[{i}].metric: label name too long"));
            }
            let v = v
                .as_str()
                .ok_or_else(|| format!("result[{i}].metric.{k} is not a string"))?;
            if k.len() > MAX_LABEL || v.len() > MAX_LABEL {
                return Err(format!("result[{i}].metric.{k}: label too long"));
            }
            labels.insert(k.clone(), v.to_string());
        }
        let value = r
            .get("value")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| a.get(1))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("result[{i}].value is not [ts, \"number\"]"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("result[{i}].value {value:?} is not a number"))?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "result[{i}].value {value} is not a finite non-negative number"
            ));
        }
        out.push(Sample { labels, value });
    }
    Ok(out)
}

/// One `(route, cluster)` series' evidence for one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromSeries {
    /// Route.
    pub route: String,
    /// Cluster.
    pub cluster: String,
    /// Counters and an empty histogram (Prometheus has only gauges).
    pub delta: TickDelta,
    /// The filter's p95 gauge, ms (max over sidecars).
    pub p95_ms: Option<f64>,
    /// The filter's p99 gauge, ms (max over sidecars).
    pub p99_ms: Option<f64>,
}

/// Counter deltas between polls, per scraped series.
#[derive(Debug, Default)]
pub struct Deltas {
    last: HashMap<String, f64>,
}

impl Deltas {
    /// The delta of every sample since the previous call, summed by
    /// `(route, cluster)`. Until `count_new`, a series not seen before only
    /// sets its baseline (history before the service started is not one
    /// tick); after it, such a series counts from 0 (Envoy creates a counter
    /// on its first increment, e.g. the first error). A value below the
    /// previous one is a counter reset (delta = value). Series that vanished
    /// are forgotten.
    pub fn update(
        &mut self,
        samples: &[Sample],
        count_new: bool,
    ) -> BTreeMap<(String, String), u64> {
        let mut next = HashMap::with_capacity(samples.len());
        let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
        for s in samples {
            let id = s.id();
            let d = match self.last.get(&id) {
                None if count_new => s.value,
                None => 0.0,
                Some(&prev) if s.value < prev => s.value,
                Some(&prev) => s.value - prev,
            };
            next.insert(id, s.value);
            if let Some(key) = s.key() {
                let e = out.entry(key).or_default();
                // Counters are integers; `as` saturates.
                *e = e.saturating_add(d.round() as u64);
            }
        }
        self.last = next;
        out
    }
}

/// Combine one poll's answers into per-series tick evidence.
pub fn combine(
    requests: &BTreeMap<(String, String), u64>,
    errors: &BTreeMap<(String, String), u64>,
    p95: &[Sample],
    p99: &[Sample],
) -> Vec<PromSeries> {
    let gauge = |samples: &[Sample]| -> HashMap<(String, String), f64> {
        let mut m: HashMap<(String, String), f64> = HashMap::new();
        for s in samples {
            if let Some(k) = s.key() {
                let e = m.entry(k).or_insert(s.value);
                *e = e.max(s.value);
            }
        }
        m
    };
    let (g95, g99) = (gauge(p95), gauge(p99));
    requests
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|((route, cluster), &n)| {
            let key = (route.clone(), cluster.clone());
            let e = errors.get(&key).copied().unwrap_or(0).min(n);
            PromSeries {
                route: route.clone(),
                cluster: cluster.clone(),
                delta: TickDelta {
                    counters: Counters {
                        requests: n,
                        errors: e,
                        ..Default::default()
                    },
                    latency: Vec::new(),
                },
                p95_ms: g95.get(&key).copied(),
                p99_ms: g99.get(&key).copied(),
            }
        })
        .collect()
}

/// The Prometheus poller: a base URL, a client, a timeout, counter state.
#[derive(Debug)]
pub struct PromSource {
    base: String,
    client: HttpClient,
    timeout: Duration,
    requests: Deltas,
    errors: Deltas,
    /// A non-empty `vigil_requests_total` answer was seen: from then on new
    /// series count from 0 (before, they are history).
    primed: bool,
}

impl PromSource {
    /// A poller of the Prometheus at `base` (`http://host:port`).
    pub fn new(base: &str, timeout: Duration) -> Result<PromSource, String> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "--prometheus must be an http:// or https:// URL, got {base:?}"
            ));
        }
        Ok(PromSource {
            base,
            client: HttpClient::new(),
            timeout,
            requests: Deltas::default(),
            errors: Deltas::default(),
            primed: false,
        })
    }

    async fn query(&self, kind: Kind) -> Result<Vec<Sample>, String> {
        let url = query_url(&self.base, kind.query());
        let r = self
            .client
            .request(Method::GET, &url, &[], None, self.timeout)
            .await?;
        if r.status != 200 {
            let body = String::from_utf8_lossy(&r.body);
            let text = crate::text::clip(&body, 200);
            return Err(format!("{}: HTTP {}: {text}", kind.query(), r.status));
        }
        parse_vector(&r.body).map_err(|e| format!("{}: {e}", kind.query()))
    }

    /// One poll: every query, or an error (then no counter state changes,
    /// so the next successful poll carries the whole interval's delta).
    pub async fn poll(&mut self) -> Result<Vec<PromSeries>, String> {
        let (req, err, p95, p99) = tokio::join!(
            self.query(Kind::Requests),
            self.query(Kind::Errors),
            self.query(Kind::P95),
            self.query(Kind::P99)
        );
        let (req, err) = (req?, err?);
        // Latency gauges are optional evidence: their failure does not drop the counters.
        let (p95, p99) = (p95.unwrap_or_default(), p99.unwrap_or_default());
        let requests = self.requests.update(&req, self.primed);
        let errors = self.errors.update(&err, self.primed);
        self.primed |= !req.is_empty();
        Ok(combine(&requests, &errors, &p95, &p99))
    }
}

/// Poll `src` every `every` and feed the service, until aborted. Errors
/// (unreachable, timeout, invalid answer) are logged once per outage and
/// change nothing; the first answer after an outage is logged too.
pub fn spawn_poller(
    svc: std::sync::Arc<crate::service::Service>,
    mut src: PromSource,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down: Option<u64> = None;
        let mut first = true;
        loop {
            interval.tick().await;
            match src.poll().await {
                Ok(series) => {
                    let s = svc.clone();
                    let n = series.len();
                    let matched = tokio::task::spawn_blocking(move || s.ingest_prometheus(&series))
                        .await
                        .unwrap_or(0);
                    if let Some(failed) = down.take() {
                        crate::log::info(
                            "prometheus answering again",
                            serde_json::json!({"url": src.base, "failed_polls": failed, "series": n, "matched": matched}),
                        );
                    } else if first {
                        crate::log::info(
                            "prometheus polling",
                            serde_json::json!({"url": src.base, "series": n, "matched": matched}),
                        );
                    }
                    first = false;
                }
                Err(e) => match &mut down {
                    Some(n) => *n += 1,
                    None => {
                        crate::log::error(
                            "prometheus query failed (logged once until it answers again)",
                            serde_json::json!({"url": src.base, "error": e}),
                        );
                        down = Some(1);
                    }
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUESTS: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
      {"metric":{"__name__":"vigil_requests_total","cluster":"canary","instance":"127.0.0.1:9901","job":"envoy","route":"checkout"},"value":[1763786000.123,"100"]},
      {"metric":{"__name__":"vigil_requests_total","cluster":"stable","instance":"127.0.0.1:9901","job":"envoy","route":"checkout"},"value":[1763786000.123,"900"]},
      {"metric":{"__name__":"vigil_requests_total","cluster":"canary","instance":"127.0.0.1:9902","job":"envoy","route":"checkout"},"value":[1763786000.123,"50"]}]}}"#;

    fn samples(json: &str) -> Vec<Sample> {
        parse_vector(json.as_bytes()).unwrap()
    }

    #[test]
    fn builds_queries() {
        assert_eq!(
            query_url("http://127.0.0.1:9090/", Kind::Requests.query()),
            "http://127.0.0.1:9090/api/v1/query?query=vigil_requests_total"
        );
        assert_eq!(
            query_url("http://p:9090", Kind::P99.query()),
            "http://p:9090/api/v1/query?query=max%20by%20%28route%2C%20cluster%29%20%28vigil_latency_p99_ms%29"
        );
        assert_eq!(encode("a{b=\"c\"}[5s]"), "a%7Bb%3D%22c%22%7D%5B5s%5D");
        assert!(PromSource::new("https://x", Duration::from_secs(1)).is_ok());
        assert!(PromSource::new("ftp://x", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn parses_real_shaped_answers() {
        let s = samples(REQUESTS);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].key(),
            Some(("checkout".to_string(), "canary".to_string()))
        );
        assert!(!s[0].labels.contains_key("__name__"));
        assert_eq!(s[1].value, 900.0);
        let empty = samples(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#);
        assert!(empty.is_empty());
    }

    #[test]
    fn multi_byte_error_text_is_clipped_without_a_panic() {
        // Byte 200 falls inside "é": String::truncate(200) panicked here.
        let msg = format!("{}é and more", "a".repeat(199));
        let body = serde_json::json!({"status": "error", "error": msg}).to_string();
        let err = parse_vector(body.as_bytes()).unwrap_err();
        assert!(err.ends_with(&"a".repeat(199)), "{err}");
    }

    #[test]
    fn refuses_bad_answers() {
        for (body, want) in [
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#,
                "parse error",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "matrix",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
                "finite",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#,
                "finite",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"-3"]}]}}"#,
                "finite",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
                "not a number",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1]}]}}"#,
                "[ts",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"route":7},"value":[1,"1"]}]}}"#,
                "not a string",
            ),
            ("<html>", "not JSON"),
        ] {
            let e = parse_vector(body.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        let many: Vec<Value> = (0..=MAX_SERIES)
            .map(|i| serde_json::json!({"metric":{"route":i.to_string()},"value":[1,"1"]}))
            .collect();
        let body =
            serde_json::json!({"status":"success","data":{"resultType":"vector","result":many}});
        assert!(parse_vector(body.to_string().as_bytes())
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn feeds_the_service_and_tags_decisions() {
        use crate::service::{Options, Service};
        use crate::spec::CanarySpec;
        let dir = std::env::temp_dir().join(format!(
            "vigil-prom-unit-{}-{}",
            std::process::id(),
            crate::log::now_ms()
        ));
        let spec = CanarySpec::from_json_value(serde_json::json!({"name":"checkout","route":"checkout",
            "stable_cluster":"stable","canary_cluster":"canary","steps":[20,50],"step_duration_s":600,"mode":"observe"}))
        .unwrap();
        let svc = Service::open(
            Options {
                data: dir.join("data"),
                out: dir.join("out"),
                webhooks: Vec::new(),
                webhook_allow: crate::egress::Allow::default(),
                model: vigil_scorer::model::Model::default(),
                limits: crate::plausibility::Limits::default(),
                sidecar_ttl_ms: crate::service::SIDECAR_TTL_MS,
            },
            &[spec],
            None,
            std::sync::Arc::default(),
        )
        .unwrap();
        let mut now = crate::log::now_ms();
        svc.tick(now); // pending → progressing
        let series = |cluster: &str, requests, errors| PromSeries {
            route: "checkout".into(),
            cluster: cluster.into(),
            delta: TickDelta {
                counters: Counters {
                    requests,
                    errors,
                    ..Default::default()
                },
                latency: Vec::new(),
            },
            p95_ms: None,
            p99_ms: Some(12.0),
        };
        let mut rolled_back = None;
        for _ in 0..20 {
            let n = svc.ingest_prometheus(&[
                series("stable", 80, 0),
                series("canary", 20, 6),
                series("other", 5, 5),
            ]);
            assert_eq!(n, 2);
            now += 1000;
            svc.tick(now);
            let c = svc.show("checkout").unwrap();
            if c["phase"] == "rolled_back" {
                rolled_back = Some(c);
                break;
            }
        }
        let c = rolled_back.expect("rolled back on Prometheus evidence");
        let d = c["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d.to_string().contains("rollback"))
            .unwrap()
            .to_string();
        assert!(d.contains("\"data_source\":\"prometheus\""), "{d}");
        assert!(d.contains("[data source: prometheus]"), "{d}");
        drop(svc);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreachable_prometheus_is_an_error_not_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Bound, never listening: connection refused.
        let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        drop(sock);
        let mut src =
            PromSource::new(&format!("http://{addr}"), Duration::from_millis(500)).unwrap();
        let e = rt.block_on(src.poll()).unwrap_err();
        assert!(e.contains(&addr.to_string()), "{e}");
        assert!(!src.primed);
    }

    #[test]
    fn deltas_baseline_sum_and_reset() {
        let mut d = Deltas::default();
        // First sight: baseline only.
        assert!(d
            .update(&samples(REQUESTS), false)
            .values()
            .all(|&v| v == 0));
        let next = REQUESTS
            .replace("\"100\"", "\"130\"")
            .replace("\"900\"", "\"1000\"")
            .replace("\"50\"", "\"5\""); // second sidecar restarted
        let m = d.update(&samples(&next), true);
        let k = |c: &str| ("checkout".to_string(), c.to_string());
        assert_eq!(m[&k("canary")], 30 + 5);
        assert_eq!(m[&k("stable")], 100);
        // A series appearing after the first poll counts from 0.
        let errs = |v: &str| {
            samples(&format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[
                {{"metric":{{"cluster":"canary","route":"checkout","instance":"a"}},"value":[1,"{v}"]}}]}}}}"#
            ))
        };
        let mut e = Deltas::default();
        assert_eq!(e.update(&errs("5"), false)[&k("canary")], 0, "history");
        let mut e = Deltas::default();
        assert!(e.update(&[], true).is_empty());
        assert_eq!(e.update(&errs("7"), true)[&k("canary")], 7);
        assert_eq!(e.update(&errs("9"), true)[&k("canary")], 2);
        let errors = BTreeMap::from([(k("canary"), 50), (k("stable"), 1)]);
        let p99 = samples(
            r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"cluster":"canary","route":"checkout"},"value":[1763786000.1,"812.5"]}]}}"#,
        );
        let series = combine(&m, &errors, &[], &p99);
        assert_eq!(series.len(), 2);
        let c = series.iter().find(|s| s.cluster == "canary").unwrap();
        assert_eq!(c.delta.counters.requests, 35);
        assert_eq!(c.delta.counters.errors, 35, "errors capped at requests");
        assert_eq!(c.p99_ms, Some(812.5));
        assert!(c.delta.latency.is_empty());
        let s = series.iter().find(|s| s.cluster == "stable").unwrap();
        assert_eq!((s.delta.counters.errors, s.p99_ms), (1, None));
    }
}
