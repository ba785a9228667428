//! The filters' reports (`POST /v1/reports`, wire version 1): parsing and
//! validation.
//!
//! Why this exists: reports come from every sidecar once per tick and are
//! the only evidence canary decisions rest on, so a malformed, oversized or
//! inconsistent one must be refused whole — with the field that is wrong —
//! before it can touch any state. This module is pure (bytes in, a
//! [`Report`] or a [`ReportError`] out) and is the single place that knows
//! the wire format's bounds.

use serde::Deserialize;
use std::collections::HashSet;
use vigil_scorer::histogram::BUCKETS;
use vigil_scorer::verdict::State;
use vigil_scorer::window::{Counters, TickDelta};

/// Wire version this code understands.
pub const REPORT_VERSION: u64 = 1;
/// Largest accepted body, bytes.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Most series in one report.
pub const MAX_SERIES: usize = 10_000;
/// Most canaries in one report.
pub const MAX_CANARIES: usize = 1_000;
/// Longest name (sidecar, route, cluster, canary), bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest canary reason, bytes.
pub const MAX_REASON_BYTES: usize = 4_096;
/// Accepted tick periods, ms (the filter's own bounds).
pub const TICK_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

/// One series of a report, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesReport {
    /// Route name.
    pub route: String,
    /// Upstream cluster name.
    pub cluster: String,
    /// That tick's counters and latency histogram.
    pub delta: TickDelta,
    /// The sidecar's verdict on the series.
    pub state: State,
    /// Its score, 0–1000.
    pub score: u16,
}

/// One canary verdict of a report, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryReport {
    /// Canary name (the filter's configuration name).
    pub name: String,
    /// Route it was judged on.
    pub route: String,
    /// The sidecar's canary-vs-stable verdict.
    pub state: State,
    /// Its score, 0–1000.
    pub score: u16,
    /// The sidecar's explanation.
    pub reason: String,
    /// Whether that sidecar is steering the route to stable.
    pub steering: bool,
}

/// A validated report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Sidecar id.
    pub sidecar: String,
    /// Sequence number (increases per sidecar).
    pub seq: u64,
    /// Sender's wall clock, ms.
    pub sent_at_ms: u64,
    /// Sender's tick period, ms.
    pub tick_ms: u64,
    /// Series.
    pub series: Vec<SeriesReport>,
    /// Canary verdicts.
    pub canaries: Vec<CanaryReport>,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportError {
    /// Offending field (`series[3].latency[1]`), or `body`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ReportError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ReportError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct RawReport {
    sidecar: String,
    seq: u64,
    sent_at_ms: u64,
    tick_ms: u64,
    #[serde(default)]
    series: Vec<RawSeries>,
    #[serde(default)]
    canaries: Vec<RawCanary>,
}

#[derive(Deserialize)]
struct RawSeries {
    route: String,
    cluster: String,
    requests: u64,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    status_4xx: u64,
    #[serde(default)]
    resets: u64,
    #[serde(default)]
    overflows: u64,
    #[serde(default)]
    timeouts: u64,
    #[serde(default)]
    retries: u64,
    #[serde(default)]
    latency_sum_us: u64,
    // Outcome classes (issue 10): optional, so older filters' reports parse.
    #[serde(default)]
    server_errors: u64,
    #[serde(default)]
    throttled: u64,
    #[serde(default)]
    client_gone: u64,
    #[serde(default)]
    grpc_unknown: u64,
    #[serde(default)]
    latency: Vec<(u32, u64)>,
    #[serde(default = "default_state")]
    state: String,
    #[serde(default)]
    score: u64,
}

#[derive(Deserialize)]
struct RawCanary {
    name: String,
    #[serde(default)]
    route: String,
    state: String,
    #[serde(default)]
    score: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    steering: bool,
}

fn default_state() -> String {
    "insufficient_data".to_string()
}

/// Parse a verdict state name.
pub fn parse_state(s: &str) -> Option<State> {
    [
        State::InsufficientData,
        State::Ok,
        State::Warn,
        State::Critical,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
}

fn check_name(field: &str, value: &str, allow_empty: bool) -> Result<(), ReportError> {
    if value.len() > MAX_NAME_BYTES {
        return Err(ReportError::new(
            field,
            format!("longer than {MAX_NAME_BYTES} bytes ({})", value.len()),
        ));
    }
    if !allow_empty && value.is_empty() {
        return Err(ReportError::new(field, "must not be empty"));
    }
    Ok(())
}

/// Parse and validate a report body. Pure; nothing is changed anywhere.
pub fn parse(body: &[u8]) -> Result<Report, ReportError> {
    if body.len() > MAX_REPORT_BYTES {
        return Err(ReportError::new(
            "body",
            format!("{} bytes exceeds {MAX_REPORT_BYTES}", body.len()),
        ));
    }
    // The version is checked first, on its own, so a future version gets a
    // version error rather than a confusing shape error.
    #[derive(Deserialize)]
    struct VersionOnly {
        version: Option<serde_json::Value>,
    }
    let v: VersionOnly = serde_json::from_slice(body)
        .map_err(|e| ReportError::new("body", format!("not a JSON object: {e}")))?;
    match v.version.as_ref().and_then(serde_json::Value::as_u64) {
        Some(REPORT_VERSION) => {}
        other => {
            return Err(ReportError::new(
                "version",
                format!(
                    "unsupported report version {}, this service accepts {REPORT_VERSION}",
                    other.map_or_else(
                        || "(missing or not an integer)".to_string(),
                        |n| n.to_string()
                    )
                ),
            ))
        }
    }
    let raw: RawReport = serde_json::from_slice(body)
        .map_err(|e| ReportError::new("body", format!("does not match report version 1: {e}")))?;
    validate(raw)
}

fn validate(raw: RawReport) -> Result<Report, ReportError> {
    check_name("sidecar", &raw.sidecar, false)?;
    if !TICK_MS_RANGE.contains(&raw.tick_ms) {
        return Err(ReportError::new(
            "tick_ms",
            format!("must be in {TICK_MS_RANGE:?}, got {}", raw.tick_ms),
        ));
    }
    if raw.series.len() > MAX_SERIES {
        return Err(ReportError::new(
            "series",
            format!(
                "at most {MAX_SERIES} series per report, got {}",
                raw.series.len()
            ),
        ));
    }
    if raw.canaries.len() > MAX_CANARIES {
        return Err(ReportError::new(
            "canaries",
            format!(
                "at most {MAX_CANARIES} canaries per report, got {}",
                raw.canaries.len()
            ),
        ));
    }
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(raw.series.len());
    for (i, s) in raw.series.iter().enumerate() {
        validate_series(i, s)?;
        if !seen.insert((s.route.as_str(), s.cluster.as_str())) {
            return Err(ReportError::new(
                format!("series[{i}]"),
                format!(
                    "duplicate series route {:?} cluster {:?}",
                    s.route, s.cluster
                ),
            ));
        }
    }
    drop(seen);
    let mut canaries = Vec::with_capacity(raw.canaries.len());
    for (i, c) in raw.canaries.into_iter().enumerate() {
        let f = |name: &str| format!("canaries[{i}].{name}");
        check_name(&f("name"), &c.name, false)?;
        check_name(&f("route"), &c.route, true)?;
        if c.reason.len() > MAX_REASON_BYTES {
            return Err(ReportError::new(
                f("reason"),
                format!("longer than {MAX_REASON_BYTES} bytes"),
            ));
        }
        let state = parse_state(&c.state)
            .ok_or_else(|| ReportError::new(f("state"), format!("unknown state {:?}", c.state)))?;
        let score = score_of(&f("score"), c.score)?;
        canaries.push(CanaryReport {
            name: c.name,
            route: c.route,
            state,
            score,
            reason: c.reason,
            steering: c.steering,
        });
    }
    let mut series = Vec::with_capacity(raw.series.len());
    for (i, s) in raw.series.into_iter().enumerate() {
        let state = parse_state(&s.state).ok_or_else(|| {
            ReportError::new(
                format!("series[{i}].state"),
                format!("unknown state {:?}", s.state),
            )
        })?;
        let score = score_of(&format!("series[{i}].score"), s.score)?;
        // Indices and counts were range-checked in validate_series.
        let latency = s
            .latency
            .iter()
            .map(|&(b, n)| {
                (
                    u16::try_from(b).unwrap_or(u16::MAX),
                    u32::try_from(n).unwrap_or(u32::MAX),
                )
            })
            .collect();
        series.push(SeriesReport {
            route: s.route,
            cluster: s.cluster,
            delta: TickDelta {
                counters: Counters {
                    requests: s.requests,
                    errors: s.errors,
                    status_4xx: s.status_4xx,
                    resets: s.resets,
                    overflows: s.overflows,
                    timeouts: s.timeouts,
                    retries: s.retries,
                    latency_sum_us: s.latency_sum_us,
                    server_errors: s.server_errors,
                    throttled: s.throttled,
                    client_gone: s.client_gone,
                    grpc_unknown: s.grpc_unknown,
                },
                latency,
            },
            state,
            score,
        });
    }
    Ok(Report {
        sidecar: raw.sidecar,
        seq: raw.seq,
        sent_at_ms: raw.sent_at_ms,
        tick_ms: raw.tick_ms,
        series,
        canaries,
    })
}

fn score_of(field: &str, score: u64) -> Result<u16, ReportError> {
    u16::try_from(score)
        .ok()
        .filter(|s| *s <= 1000)
        .ok_or_else(|| ReportError::new(field, format!("must be in 0..=1000, got {score}")))
}

fn validate_series(i: usize, s: &RawSeries) -> Result<(), ReportError> {
    let f = |name: &str| format!("series[{i}].{name}");
    check_name(&f("route"), &s.route, true)?;
    check_name(&f("cluster"), &s.cluster, true)?;
    let n = s.requests;
    for (name, value) in [
        ("errors", s.errors),
        ("status_4xx", s.status_4xx),
        ("resets", s.resets),
        ("overflows", s.overflows),
        ("timeouts", s.timeouts),
        ("server_errors", s.server_errors),
        ("throttled", s.throttled),
        ("client_gone", s.client_gone),
        ("grpc_unknown", s.grpc_unknown),
    ] {
        if value > n {
            return Err(ReportError::new(
                f(name),
                format!("{value} exceeds requests {n}"),
            ));
        }
    }
    if s.errors.saturating_add(s.status_4xx) > n {
        return Err(ReportError::new(
            f("status_4xx"),
            format!(
                "errors {} + status_4xx {} exceed requests {n} (a response is 5xx or 4xx, not both)",
                s.errors, s.status_4xx
            ),
        ));
    }
    let mut previous: Option<u32> = None;
    let mut total: u64 = 0;
    for (j, &(bucket, count)) in s.latency.iter().enumerate() {
        let field = || format!("series[{i}].latency[{j}]");
        if bucket as usize >= BUCKETS {
            return Err(ReportError::new(
                field(),
                format!("bucket index {bucket} out of range (< {BUCKETS})"),
            ));
        }
        if previous.is_some_and(|p| bucket <= p) {
            return Err(ReportError::new(
                field(),
                format!(
                    "bucket indices must be strictly increasing, {bucket} follows {}",
                    previous.unwrap_or(0)
                ),
            ));
        }
        if count == 0 || count > u64::from(u32::MAX) {
            return Err(ReportError::new(
                field(),
                format!("count must be in 1..={}, got {count}", u32::MAX),
            ));
        }
        previous = Some(bucket);
        total = total.saturating_add(count);
    }
    if total > n {
        return Err(ReportError::new(
            f("latency"),
            format!("histogram counts {total} exceed requests {n}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> serde_json::Value {
        json!({"version":1,"sidecar":"sc-1","seq":1,"sent_at_ms":1000,"tick_ms":1000,
            "series":[{"route":"checkout","cluster":"canary","requests":20,"errors":1,"status_4xx":0,
                "resets":0,"overflows":0,"timeouts":0,"retries":0,"latency_sum_us":123456,
                "latency":[[10,5],[40,15]],"state":"ok","score":12}],
            "canaries":[{"name":"checkout","route":"checkout","state":"critical","score":910,
                "reason":"latency: p95 ...","steering":true}]})
    }

    fn err_field(v: serde_json::Value) -> String {
        parse(v.to_string().as_bytes()).unwrap_err().field
    }

    #[test]
    fn accepts_the_contract_example() {
        let r = parse(good().to_string().as_bytes()).unwrap();
        assert_eq!(r.series.len(), 1);
        assert_eq!(r.series[0].delta.counters.errors, 1);
        assert_eq!(r.series[0].delta.latency, vec![(10, 5), (40, 15)]);
        assert_eq!(r.canaries[0].state, State::Critical);
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(parse(b"{not json").unwrap_err().field, "body");
        assert_eq!(parse(b"[1,2]").unwrap_err().field, "body");
        let mut v = good();
        v["version"] = json!(2);
        assert_eq!(err_field(v), "version");
        let mut v = good();
        v["series"][0]["latency"] = json!([[40, 1], [10, 1]]);
        assert_eq!(err_field(v), "series[0].latency[1]");
        let mut v = good();
        v["series"][0]["latency"] = json!([[BUCKETS, 1]]);
        assert_eq!(err_field(v), "series[0].latency[0]");
        let mut v = good();
        v["series"][0]["latency"] = json!([[3, 0]]);
        assert_eq!(err_field(v), "series[0].latency[0]");
        let mut v = good();
        v["series"][0]["latency"] = json!([[3, 21]]);
        assert_eq!(err_field(v), "series[0].latency");
        let mut v = good();
        v["series"][0]["errors"] = json!(21);
        assert_eq!(err_field(v), "series[0].errors");
        let mut v = good();
        v["series"][0]["route"] = json!("x".repeat(257));
        assert_eq!(err_field(v), "series[0].route");
        let mut v = good();
        v["series"][0]["state"] = json!("weird");
        assert_eq!(err_field(v), "series[0].state");
        let mut v = good();
        v["canaries"][0]["score"] = json!(1001);
        assert_eq!(err_field(v), "canaries[0].score");
        let mut v = good();
        v["tick_ms"] = json!(5);
        assert_eq!(err_field(v), "tick_ms");
        let mut v = good();
        v["sidecar"] = json!("");
        assert_eq!(err_field(v), "sidecar");
        let mut v = good();
        let s = v["series"][0].clone();
        v["series"] = json!([s.clone(), s]);
        assert_eq!(err_field(v), "series[1]");
        let mut v = good();
        v["seq"] = json!(-1);
        assert_eq!(err_field(v), "body");
    }

    #[test]
    fn too_many_series() {
        let mut v = good();
        let series: Vec<_> = (0..=MAX_SERIES)
            .map(|i| json!({"route":"r","cluster":format!("c{i}"),"requests":0}))
            .collect();
        v["series"] = json!(series);
        let body = v.to_string();
        if body.len() <= MAX_REPORT_BYTES {
            assert_eq!(err_field(v), "series");
        } else {
            assert_eq!(parse(body.as_bytes()).unwrap_err().field, "body");
        }
    }
}
