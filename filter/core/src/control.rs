//! The filter's side of the control-service protocol, as pure functions.
//!
//! Once per tick the lease holder sends a compact report (what it took from
//! shared data this tick, with verdicts) to `POST /v1/reports`, and reads the
//! canary weights from `GET /v1/routing`. The glue only moves bytes
//! (`dispatch_http_call`); encoding and validating them lives here, so a
//! malformed or hostile answer is refused on the host-tested path and never
//! reaches routing.
//!
//! Wire format (version 1):
//! - report: `{"version":1,"sidecar":"…","seq":N,"sent_at_ms":…,"tick_ms":…,
//!   "series":[{"route","cluster","requests","errors","status_4xx","resets",
//!   "overflows","timeouts","retries","latency_sum_us","server_errors","throttled",
//!   "client_gone","grpc_unknown","latency":[[bucket,count],…],
//!   "state","score"}],"canaries":[{"name","route","state","score","reason","steering"}]}`
//! - routing: `{"version":N,"canaries":[{"name":"checkout","canary_weight":10,…}]}`,
//!   `canary_weight` the percent 0–100 of the canary's traffic sent to the canary.

use serde_json::{json, Value};
use vigil_scorer::verdict::Verdict;
use vigil_scorer::window::TickDelta;

/// Largest routing answer accepted.
pub const MAX_ROUTING_BYTES: usize = 256 * 1024;
/// Most canaries accepted in one routing answer.
pub const MAX_ROUTING_CANARIES: usize = 1000;

/// One series in a report.
#[derive(Debug)]
pub struct SeriesReport<'a> {
    /// Route name.
    pub route: &'a [u8],
    /// Cluster name.
    pub cluster: &'a [u8],
    /// What the series observed this tick.
    pub delta: &'a TickDelta,
    /// Its verdict this tick.
    pub verdict: &'a Verdict,
}

/// One canary in a report.
#[derive(Debug)]
pub struct CanaryReport<'a> {
    /// Canary name from the plugin configuration.
    pub name: &'a str,
    /// Route it was judged on.
    pub route: &'a [u8],
    /// Canary-vs-stable verdict.
    pub verdict: &'a Verdict,
    /// True while this sidecar steers the route to stable.
    pub steering: bool,
}

/// Report header fields.
#[derive(Debug, Clone, Copy)]
pub struct ReportMeta<'a> {
    /// This sidecar's id.
    pub sidecar: &'a str,
    /// Increases by one per report from this sidecar.
    pub seq: u64,
    /// Wall-clock send time.
    pub sent_at_ms: u64,
    /// Tick period.
    pub tick_ms: u64,
}

/// Encode a report (JSON bytes).
pub fn encode_report(
    meta: ReportMeta<'_>,
    series: &[SeriesReport<'_>],
    canaries: &[CanaryReport<'_>],
) -> Vec<u8> {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let series: Vec<Value> = series
        .iter()
        .map(|s| {
            let c = &s.delta.counters;
            json!({
                "route": lossy(s.route),
                "cluster": lossy(s.cluster),
                "requests": c.requests,
                "errors": c.errors,
                "status_4xx": c.status_4xx,
                "resets": c.resets,
                "overflows": c.overflows,
                "timeouts": c.timeouts,
                "retries": c.retries,
                "latency_sum_us": c.latency_sum_us,
                "server_errors": c.server_errors,
                "throttled": c.throttled,
                "client_gone": c.client_gone,
                "grpc_unknown": c.grpc_unknown,
                "latency": s.delta.latency,
                "state": s.verdict.state.as_str(),
                "score": s.verdict.score,
            })
        })
        .collect();
    let canaries: Vec<Value> = canaries
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "route": lossy(c.route),
                "state": c.verdict.state.as_str(),
                "score": c.verdict.score,
                "reason": c.verdict.explain(),
                "steering": c.steering,
            })
        })
        .collect();
    json!({
        "version": 1,
        "sidecar": meta.sidecar,
        "seq": meta.seq,
        "sent_at_ms": meta.sent_at_ms,
        "tick_ms": meta.tick_ms,
        "series": series,
        "canaries": canaries,
    })
    .to_string()
    .into_bytes()
}

/// Weights served by the control service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routing {
    /// Increases on every change.
    pub version: u64,
    /// `(canary name, percent of its traffic to the canary version)`.
    pub weights: Vec<(String, u8)>,
}

impl Routing {
    /// Weight of a canary by name.
    pub fn weight(&self, name: &str) -> Option<u8> {
        self.weights
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, w)| *w)
    }
}

/// Parse and validate a routing answer.
pub fn parse_routing(body: &[u8]) -> Result<Routing, String> {
    if body.len() > MAX_ROUTING_BYTES {
        return Err(format!(
            "routing answer of {} bytes exceeds {MAX_ROUTING_BYTES}",
            body.len()
        ));
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("routing answer is not JSON: {e}"))?;
    let version = doc
        .get("version")
        .and_then(Value::as_u64)
        .ok_or("routing answer: version must be a whole number")?;
    let items = doc
        .get("canaries")
        .and_then(Value::as_array)
        .ok_or("routing answer: canaries must be an array")?;
    if items.len() > MAX_ROUTING_CANARIES {
        return Err(format!(
            "routing answer: more than {MAX_ROUTING_CANARIES} canaries"
        ));
    }
    let mut weights = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && n.len() <= 256)
            .ok_or_else(|| {
                format!("routing answer: canaries[{i}].name must be a non-empty string")
            })?;
        let w = item
            .get("canary_weight")
            .and_then(Value::as_f64)
            .filter(|w| w.is_finite() && (0.0..=100.0).contains(w))
            .ok_or_else(|| {
                format!(
                    "routing answer: canaries[{i}].canary_weight must be a number from 0 to 100"
                )
            })?;
        weights.push((name.to_string(), w.round() as u8));
    }
    Ok(Routing { version, weights })
}

/// Deterministic weighted split: exactly `percent` of every 100 calls say
/// "canary", spread evenly, with no randomness to go wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    acc: u32,
}

impl Split {
    /// True when this request goes to the canary.
    pub fn to_canary(&mut self, percent: u8) -> bool {
        self.acc += u32::from(percent.min(100));
        if self.acc >= 100 {
            self.acc -= 100;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_scorer::verdict::State;
    use vigil_scorer::window::Counters;

    #[test]
    fn report_carries_the_tick() {
        let delta = TickDelta {
            counters: Counters {
                requests: 20,
                errors: 1,
                ..Default::default()
            },
            latency: vec![(40, 19), (200, 1)],
        };
        let verdict = Verdict {
            score: 910,
            state: State::Critical,
            ..Default::default()
        };
        let bytes = encode_report(
            ReportMeta {
                sidecar: "s1",
                seq: 7,
                sent_at_ms: 1,
                tick_ms: 1000,
            },
            &[SeriesReport {
                route: b"checkout",
                cluster: b"canary",
                delta: &delta,
                verdict: &verdict,
            }],
            &[CanaryReport {
                name: "checkout",
                route: b"checkout",
                verdict: &verdict,
                steering: true,
            }],
        );
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["seq"], 7);
        assert_eq!(v["series"][0]["requests"], 20);
        assert_eq!(v["series"][0]["latency"], json!([[40, 19], [200, 1]]));
        assert_eq!(v["series"][0]["state"], "critical");
        assert_eq!(v["canaries"][0]["steering"], true);
    }

    #[test]
    fn routing_is_validated() {
        let r = parse_routing(br#"{"version":3,"canaries":[{"name":"checkout","canary_weight":25,"phase":"progressing"}]}"#)
            .unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.weight("checkout"), Some(25));
        assert_eq!(r.weight("other"), None);
        for bad in [
            &b"nope"[..],
            br#"{"canaries":[]}"#,
            br#"{"version":1}"#,
            br#"{"version":1,"canaries":[{"name":"c","canary_weight":101}]}"#,
            br#"{"version":1,"canaries":[{"name":"c","canary_weight":-1}]}"#,
            br#"{"version":1,"canaries":[{"name":"","canary_weight":5}]}"#,
            br#"{"version":1,"canaries":[{"canary_weight":5}]}"#,
        ] {
            assert!(
                parse_routing(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_routing(&vec![b' '; MAX_ROUTING_BYTES + 1]).is_err());
    }

    #[test]
    fn split_is_exact() {
        for percent in [0u8, 1, 10, 25, 50, 99, 100] {
            let mut s = Split::default();
            let n = (0..1000).filter(|_| s.to_canary(percent)).count();
            assert_eq!(n, percent as usize * 10, "{percent}%");
        }
    }
}
