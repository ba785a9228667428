//! The filter's report (`POST /v1/reports`, wire version 1): the document,
//! its bounds, its validation and its chunking.
//!
//! Once per tick the filter's lease holder sends what it took from shared
//! data for the **managed canaries' series** (the only evidence canary
//! decisions rest on), the canary verdicts, and bounded totals over every
//! other series. When the managed series do not fit one body
//! ([`MAX_REPORT_BYTES`], [`MAX_SERIES`]) the report is split into chunks
//! ([`Report::into_chunks`]), each a complete report with its own `seq`;
//! canary verdicts and totals travel in chunk 0.
//!
//! ```json
//! {"version":1,"sidecar":"checkout-7d9f.shop","incarnation":81985529216486895,
//!  "seq":42,"sent_at_ms":1700000000000,"tick_ms":1000,"chunk":0,"chunks":1,
//!  "series":[{"route":"checkout","cluster":"canary","requests":20,"errors":1,
//!    "status_4xx":0,"resets":0,"overflows":0,"timeouts":0,"retries":0,
//!    "latency_sum_us":123456,"latency":[[10,5],[40,15]],"state":"ok","score":12}],
//!  "canaries":[{"name":"checkout","route":"checkout","state":"critical","score":910,
//!    "reason":"errors: …","steering":true}],
//!  "totals":{"series":18250,"requests":91000,"errors":12}}
//! ```
//!
//! - `sidecar`: the sidecar's identity, stable per pod across VM reloads
//!   (the filter derives it from Envoy's node metadata).
//! - `incarnation`: changes whenever the sender's `seq` counter restarts
//!   (a new VM, a lease move to another worker); `seq` increases by one per
//!   report within an incarnation. A reader orders by `(incarnation, seq)`
//!   and accepts a new incarnation with any `seq`.
//! - `pii` (chunk 0, omitted when empty): the PII guard's counts per route,
//!   type and action — numbers only ([`crate::pii`]).
//! - Unknown fields are ignored; missing optional fields take their
//!   defaults (0, empty, `insufficient_data`), so fields can be added
//!   without a version bump.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use vigil_scorer::histogram::BUCKETS;
use vigil_scorer::verdict::State;
use vigil_scorer::window::{Counters, TickDelta};

/// Wire version of the report.
pub const REPORT_VERSION: u64 = 1;
/// Largest accepted body, bytes.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// What a sender aims a chunk at, bytes (headroom under [`MAX_REPORT_BYTES`]).
pub const CHUNK_TARGET_BYTES: usize = 768 * 1024;
/// Most series in one report (chunk).
pub const MAX_SERIES: usize = 10_000;
/// Most canaries in one report.
pub const MAX_CANARIES: usize = 1_000;
/// Most chunks of one tick's report.
pub const MAX_CHUNKS: u32 = 64;
/// Longest name (sidecar, route, cluster, canary), bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest canary reason, bytes.
pub const MAX_REASON_BYTES: usize = 4_096;
/// Accepted tick periods, ms (the filter's own bounds).
pub const TICK_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

fn one() -> u32 {
    1
}

fn insufficient() -> String {
    State::InsufficientData.as_str().to_string()
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One series of a report: one tick's counters and latency histogram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    /// Route name.
    pub route: String,
    /// Upstream cluster name.
    pub cluster: String,
    /// Requests completed this tick.
    pub requests: u64,
    /// 5xx and no-response.
    #[serde(default)]
    pub errors: u64,
    /// 4xx.
    #[serde(default)]
    pub status_4xx: u64,
    /// Upstream resets / connection failures.
    #[serde(default)]
    pub resets: u64,
    /// Upstream overflows.
    #[serde(default)]
    pub overflows: u64,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: u64,
    /// Extra upstream attempts.
    #[serde(default)]
    pub retries: u64,
    /// Sum of latencies, µs.
    #[serde(default)]
    pub latency_sum_us: u64,
    /// Outcome class: server errors (5xx, gRPC server-fault codes).
    #[serde(default)]
    pub server_errors: u64,
    /// Outcome class: throttled (429, gRPC RESOURCE_EXHAUSTED, UO).
    #[serde(default)]
    pub throttled: u64,
    /// Outcome class: the client went away (never an upstream error).
    #[serde(default)]
    pub client_gone: u64,
    /// Outcome class: a gRPC status the filter does not know.
    #[serde(default)]
    pub grpc_unknown: u64,
    /// Sparse latency histogram `[[bucket, count], …]`, buckets increasing.
    #[serde(default)]
    pub latency: Vec<(u16, u32)>,
    /// The sender's verdict on the series.
    #[serde(default = "insufficient")]
    pub state: String,
    /// Its score, 0–1000.
    #[serde(default)]
    pub score: u16,
}

impl Series {
    /// A series entry from a tick delta and a verdict.
    pub fn from_delta(
        route: &str,
        cluster: &str,
        delta: &TickDelta,
        state: State,
        score: u16,
    ) -> Self {
        let c = &delta.counters;
        Series {
            route: route.to_string(),
            cluster: cluster.to_string(),
            requests: c.requests,
            errors: c.errors,
            status_4xx: c.status_4xx,
            resets: c.resets,
            overflows: c.overflows,
            timeouts: c.timeouts,
            retries: c.retries,
            latency_sum_us: c.latency_sum_us,
            server_errors: c.server_errors,
            throttled: c.throttled,
            client_gone: c.client_gone,
            grpc_unknown: c.grpc_unknown,
            latency: delta.latency.clone(),
            state: state.as_str().to_string(),
            score,
        }
    }

    /// The tick delta it carries.
    pub fn delta(&self) -> TickDelta {
        TickDelta {
            counters: Counters {
                requests: self.requests,
                errors: self.errors,
                status_4xx: self.status_4xx,
                resets: self.resets,
                overflows: self.overflows,
                timeouts: self.timeouts,
                retries: self.retries,
                latency_sum_us: self.latency_sum_us,
                server_errors: self.server_errors,
                throttled: self.throttled,
                client_gone: self.client_gone,
                grpc_unknown: self.grpc_unknown,
            },
            latency: self.latency.clone(),
        }
    }

    /// The sender's verdict state (`insufficient_data` if unknown; a
    /// validated report has only known states).
    pub fn state(&self) -> State {
        parse_state(&self.state).unwrap_or(State::InsufficientData)
    }
}

/// One canary verdict of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// Canary name (the filter's configuration name).
    pub name: String,
    /// Route it was judged on.
    #[serde(default)]
    pub route: String,
    /// The sender's canary-vs-stable verdict.
    pub state: String,
    /// Its score, 0–1000.
    #[serde(default)]
    pub score: u16,
    /// The sender's explanation.
    #[serde(default)]
    pub reason: String,
    /// Whether that sidecar is steering the route to stable.
    #[serde(default)]
    pub steering: bool,
}

impl Canary {
    /// The verdict state (`insufficient_data` if unknown).
    pub fn state(&self) -> State {
        parse_state(&self.state).unwrap_or(State::InsufficientData)
    }
}

/// Bounded totals over every series of the tick (managed or not): what the
/// sidecar saw overall, in constant size however many series it has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Series with traffic this tick.
    #[serde(default)]
    pub series: u64,
    /// Requests over all of them.
    #[serde(default)]
    pub requests: u64,
    /// Errors over all of them.
    #[serde(default)]
    pub errors: u64,
}

/// A report (one chunk of one tick).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Wire version ([`REPORT_VERSION`]).
    pub version: u64,
    /// Sidecar identity (stable per pod).
    pub sidecar: String,
    /// Sequence incarnation: changes whenever `seq` restarts.
    #[serde(default)]
    pub incarnation: u64,
    /// Sequence number (increases by one per report within an incarnation).
    pub seq: u64,
    /// Sender's wall clock, ms.
    pub sent_at_ms: u64,
    /// Sender's tick period, ms.
    pub tick_ms: u64,
    /// Index of this chunk in the tick's report.
    #[serde(default)]
    pub chunk: u32,
    /// Chunks of the tick's report.
    #[serde(default = "one")]
    pub chunks: u32,
    /// Series (the managed canaries' series).
    #[serde(default)]
    pub series: Vec<Series>,
    /// Canary verdicts (chunk 0).
    #[serde(default)]
    pub canaries: Vec<Canary>,
    /// Totals over all series (chunk 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
    /// Series left out of this tick's report (over [`MAX_CHUNKS`]); counted
    /// so the loss is visible, never silent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub series_dropped: u64,
    /// PII guard counts per route (chunk 0; counts only, see [`crate::pii`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pii: Vec<crate::pii::PiiRoute>,
}

impl Report {
    /// An empty report of the current version.
    pub fn new(sidecar: &str, incarnation: u64, seq: u64, sent_at_ms: u64, tick_ms: u64) -> Self {
        Report {
            version: REPORT_VERSION,
            sidecar: sidecar.to_string(),
            incarnation,
            seq,
            sent_at_ms,
            tick_ms,
            chunk: 0,
            chunks: 1,
            series: Vec::new(),
            canaries: Vec::new(),
            totals: None,
            series_dropped: 0,
            pii: Vec::new(),
        }
    }

    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Split into chunks that each fit [`CHUNK_TARGET_BYTES`] and
    /// [`MAX_SERIES`], numbered `seq, seq + 1, …`; the canaries and totals
    /// go in chunk 0. Series past [`MAX_CHUNKS`] chunks are dropped and
    /// counted in `series_dropped`. Always at least one chunk.
    pub fn into_chunks(mut self) -> Vec<Report> {
        let series = std::mem::take(&mut self.series);
        let head = self.encode().len() + 64;
        let mut groups: Vec<Vec<Series>> = Vec::new();
        let mut current: Vec<Series> = Vec::new();
        let mut bytes = head;
        let mut dropped = 0u64;
        for s in series {
            let size = serde_json::to_vec(&s).map_or(0, |v| v.len()) + 1;
            if !current.is_empty()
                && (bytes + size > CHUNK_TARGET_BYTES || current.len() >= MAX_SERIES)
            {
                groups.push(std::mem::take(&mut current));
                bytes = 128;
            }
            if groups.len() >= MAX_CHUNKS as usize {
                dropped += 1;
                continue;
            }
            bytes += size;
            current.push(s);
        }
        if !current.is_empty() || groups.is_empty() {
            groups.push(current);
        }
        let chunks = groups.len() as u32;
        self.series_dropped = self.series_dropped.saturating_add(dropped);
        groups
            .into_iter()
            .enumerate()
            .map(|(i, series)| {
                let mut r = if i == 0 {
                    self.clone()
                } else {
                    let mut r = Report::new(
                        &self.sidecar,
                        self.incarnation,
                        0,
                        self.sent_at_ms,
                        self.tick_ms,
                    );
                    r.version = self.version;
                    r
                };
                r.seq = self.seq.saturating_add(i as u64);
                r.chunk = i as u32;
                r.chunks = chunks;
                r.series = series;
                r
            })
            .collect()
    }
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
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ReportError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
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
    if value.chars().any(char::is_control) {
        return Err(ReportError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Parse and validate a report body. Pure.
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
                    "unsupported report version {}, this reader accepts {REPORT_VERSION}",
                    other.map_or_else(
                        || "(missing or not an integer)".to_string(),
                        |n| n.to_string()
                    )
                ),
            ))
        }
    }
    let report: Report = serde_json::from_slice(body)
        .map_err(|e| ReportError::new("body", format!("does not match report version 1: {e}")))?;
    validate(&report)?;
    Ok(report)
}

/// Validate a report's bounds and consistency (every field named).
pub fn validate(r: &Report) -> Result<(), ReportError> {
    check_name("sidecar", &r.sidecar, false)?;
    if !TICK_MS_RANGE.contains(&r.tick_ms) {
        return Err(ReportError::new(
            "tick_ms",
            format!("must be in {TICK_MS_RANGE:?}, got {}", r.tick_ms),
        ));
    }
    if r.chunks == 0 || r.chunks > MAX_CHUNKS || r.chunk >= r.chunks {
        return Err(ReportError::new(
            "chunk",
            format!(
                "chunk {} of {} is not in 0..chunks with chunks in 1..={MAX_CHUNKS}",
                r.chunk, r.chunks
            ),
        ));
    }
    if r.series.len() > MAX_SERIES {
        return Err(ReportError::new(
            "series",
            format!(
                "at most {MAX_SERIES} series per report, got {}",
                r.series.len()
            ),
        ));
    }
    if r.canaries.len() > MAX_CANARIES {
        return Err(ReportError::new(
            "canaries",
            format!(
                "at most {MAX_CANARIES} canaries per report, got {}",
                r.canaries.len()
            ),
        ));
    }
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(r.series.len());
    for (i, s) in r.series.iter().enumerate() {
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
    for (i, c) in r.canaries.iter().enumerate() {
        let f = |name: &str| format!("canaries[{i}].{name}");
        check_name(&f("name"), &c.name, false)?;
        check_name(&f("route"), &c.route, true)?;
        if c.reason.len() > MAX_REASON_BYTES {
            return Err(ReportError::new(
                f("reason"),
                format!("longer than {MAX_REASON_BYTES} bytes"),
            ));
        }
        if parse_state(&c.state).is_none() {
            return Err(ReportError::new(
                f("state"),
                format!("unknown state {:?}", c.state),
            ));
        }
        score_ok(&f("score"), c.score)?;
    }
    crate::pii::validate(&r.pii)?;
    if let Some(t) = &r.totals {
        if t.errors > t.requests {
            return Err(ReportError::new(
                "totals.errors",
                format!("{} exceeds requests {}", t.errors, t.requests),
            ));
        }
    }
    Ok(())
}

fn score_ok(field: &str, score: u16) -> Result<(), ReportError> {
    if score <= 1000 {
        Ok(())
    } else {
        Err(ReportError::new(
            field,
            format!("must be in 0..=1000, got {score}"),
        ))
    }
}

fn validate_series(i: usize, s: &Series) -> Result<(), ReportError> {
    let f = |name: &str| format!("series[{i}].{name}");
    check_name(&f("route"), &s.route, true)?;
    check_name(&f("cluster"), &s.cluster, true)?;
    if parse_state(&s.state).is_none() {
        return Err(ReportError::new(
            f("state"),
            format!("unknown state {:?}", s.state),
        ));
    }
    score_ok(&f("score"), s.score)?;
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
    let mut previous: Option<u16> = None;
    let mut total: u64 = 0;
    for (j, &(bucket, count)) in s.latency.iter().enumerate() {
        let field = || format!("series[{i}].latency[{j}]");
        if bucket as usize >= BUCKETS {
            return Err(ReportError::new(
                field(),
                format!("bucket index {bucket} out of range (< {BUCKETS})"),
            ));
        }
        if let Some(p) = previous.filter(|p| bucket <= *p) {
            return Err(ReportError::new(
                field(),
                format!("bucket indices must be strictly increasing, {bucket} follows {p}"),
            ));
        }
        if count == 0 {
            return Err(ReportError::new(field(), "count must be at least 1"));
        }
        previous = Some(bucket);
        total = total.saturating_add(u64::from(count));
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
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
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
    fn accepts_the_contract_example_and_round_trips() {
        let r = parse(good().to_string().as_bytes()).unwrap();
        assert_eq!(r.series.len(), 1);
        assert_eq!(r.series[0].delta().counters.errors, 1);
        assert_eq!(r.series[0].latency, vec![(10, 5), (40, 15)]);
        assert_eq!(r.canaries[0].state(), State::Critical);
        assert_eq!((r.incarnation, r.chunk, r.chunks), (0, 0, 1));
        assert_eq!(parse(&r.encode()).unwrap(), r);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v = good();
        v["future_field"] = json!({"x": 1});
        v["series"][0]["grpc_status"] = json!([[14, 3]]);
        v["canaries"][0]["signal"] = json!("ttft");
        assert!(parse(v.to_string().as_bytes()).is_ok());
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
        v["sidecar"] = json!("a\nb");
        assert_eq!(err_field(v), "sidecar");
        let mut v = good();
        let s = v["series"][0].clone();
        v["series"] = json!([s.clone(), s]);
        assert_eq!(err_field(v), "series[1]");
        let mut v = good();
        v["seq"] = json!(-1);
        assert_eq!(err_field(v), "body");
        let mut v = good();
        v["chunk"] = json!(1);
        assert_eq!(err_field(v), "chunk");
    }

    #[test]
    fn chunks_fit_and_carry_everything() {
        let mut r = Report::new("sc", 7, 100, 1, 1000);
        let delta = TickDelta {
            counters: Counters {
                requests: 10,
                ..Default::default()
            },
            latency: vec![(3, 10)],
        };
        for i in 0..25_000 {
            r.series.push(Series::from_delta(
                &format!("route-{i}-{}", "x".repeat(40)),
                "cluster",
                &delta,
                State::Ok,
                1,
            ));
        }
        r.canaries.push(Canary {
            name: "c".into(),
            route: "r".into(),
            state: "ok".into(),
            score: 0,
            reason: String::new(),
            steering: false,
        });
        let chunks = r.into_chunks();
        assert!(chunks.len() > 2, "{}", chunks.len());
        let mut total = 0;
        for (i, c) in chunks.iter().enumerate() {
            let bytes = c.encode();
            assert!(bytes.len() <= MAX_REPORT_BYTES, "{}", bytes.len());
            let back = parse(&bytes).unwrap();
            assert_eq!(back.seq, 100 + i as u64);
            assert_eq!(back.chunk as usize, i);
            assert_eq!(back.canaries.len(), usize::from(i == 0));
            total += back.series.len();
        }
        assert_eq!(total, 25_000);
        assert_eq!(Report::new("s", 0, 1, 1, 1000).into_chunks().len(), 1);
    }
}
