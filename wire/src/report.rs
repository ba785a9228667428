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
//!    "latency_sum_us":123456,"latency":[[10,5],[40,15]],
//!    "ttft":[[300,4],[420,16]],"stream_chunks":180,"gap_sum_us":1600000,"gaps":160,
//!    "state":"ok","score":12}],
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
//! - `requests` excludes requests whose client left (`client_gone`,
//!   counted apart): they are never judged.
//! - `ttft` (time to first response byte, the latency buckets) and the
//!   stream shape (`stream_chunks`; `gap_sum_us / gaps` = mean inter-chunk
//!   gap) are omitted when empty; they cost about 10 bytes per TTFT bucket
//!   in use plus at most ~60 bytes per series.
//! - `pii` (chunk 0, omitted when empty): the PII guard's counts per route,
//!   type and action — numbers only ([`crate::pii`]).
//! - Unknown fields are ignored; missing optional fields take their
//!   defaults (0, empty, `insufficient_data`), so fields can be added
//!   without a version bump. Senders omit zero counters and an empty
//!   `latency` (most of a healthy series' fields): a report is about half
//!   the bytes and tokens to read, which is most of the receiver's cost.

pub use crate::text::{Text, WireText};
use serde::{Deserialize, Serialize};
use vigil_scorer::histogram::BUCKETS;
use vigil_scorer::verdict::State;
use vigil_scorer::window::{add_sparse, Counters, TickDelta};

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

fn insufficient<S: From<&'static str>>() -> S {
    S::from(State::InsufficientData.as_str())
}

fn empty<S: From<&'static str>>() -> S {
    S::from("")
}

fn is_empty_text<S: AsRef<str>>(s: &S) -> bool {
    s.as_ref().is_empty()
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One series of a report: one tick's counters and latency histogram.
///
/// `S` is the text type: `String` for a sent series, [`Text`] for one
/// parsed by [`parse_borrowed`] (see [`crate::text`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de> + From<&'static str>"))]
pub struct Series<S = String> {
    /// Route name.
    pub route: S,
    /// Upstream cluster name.
    pub cluster: S,
    /// Requests completed this tick, except those whose client left
    /// (`client_gone`, counted apart: never judged).
    pub requests: u64,
    /// 5xx and no-response.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u64,
    /// 4xx.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status_4xx: u64,
    /// Upstream resets / connection failures.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resets: u64,
    /// Upstream overflows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overflows: u64,
    /// Upstream timeouts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeouts: u64,
    /// Extra upstream attempts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
    /// Sum of latencies, µs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latency_sum_us: u64,
    /// Outcome class: server errors (5xx, gRPC server-fault codes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub server_errors: u64,
    /// Outcome class: throttled (429, gRPC RESOURCE_EXHAUSTED, UO).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled: u64,
    /// Outcome class: the client went away (never an upstream error; not
    /// part of `requests`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub client_gone: u64,
    /// Outcome class: a gRPC status the filter does not know.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub grpc_unknown: u64,
    /// Sparse latency histogram `[[bucket, count], …]`, buckets increasing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<(u16, u32)>,
    /// Sparse histogram of times to first response byte (TTFT of a streamed
    /// answer), same buckets and rules as `latency`; omitted when empty.
    /// What the control service re-tests a `ttft:` claim on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ttft: Vec<(u16, u32)>,
    /// Response body chunks (stream shape); omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stream_chunks: u64,
    /// Sum of the streamed responses' first-to-last-chunk spans, µs, and the
    /// gaps behind it (chunks − 1 per response): mean inter-chunk gap =
    /// `gap_sum_us / gaps`. Omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gap_sum_us: u64,
    /// See `gap_sum_us`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gaps: u64,
    /// The sender's verdict on the series.
    #[serde(default = "insufficient")]
    pub state: S,
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
            ttft: Vec::new(),
            stream_chunks: 0,
            gap_sum_us: 0,
            gaps: 0,
            state: state.as_str().to_string(),
            score,
        }
    }

    /// Add the tick's TTFT histogram and stream shape.
    pub fn with_stream(mut self, stream: &Stream) -> Self {
        self.ttft.clone_from(&stream.ttft);
        self.stream_chunks = stream.chunks;
        self.gap_sum_us = stream.gap_sum_us;
        self.gaps = stream.gaps;
        self
    }
}

impl<S: WireText> Series<S> {
    /// The TTFT histogram and stream shape it carries.
    pub fn stream(&self) -> Stream {
        Stream {
            ttft: self.ttft.clone(),
            chunks: self.stream_chunks,
            gap_sum_us: self.gap_sum_us,
            gaps: self.gaps,
        }
    }

    /// The tick delta it carries.
    pub fn delta(&self) -> TickDelta {
        TickDelta {
            counters: self.counters(),
            latency: self.latency.clone(),
        }
    }

    /// The sender's verdict state (`insufficient_data` if unknown; a
    /// validated report has only known states).
    pub fn state(&self) -> State {
        parse_state(self.state.as_str()).unwrap_or(State::InsufficientData)
    }

    /// Its counters (no allocation, unlike [`Series::delta`]).
    pub fn counters(&self) -> Counters {
        Counters {
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
        }
    }
}

/// One tick's time to first byte and stream shape of a series (the
/// inference signals beside [`TickDelta`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// Sparse TTFT histogram (the latency buckets).
    pub ttft: Vec<(u16, u32)>,
    /// Response body chunks.
    pub chunks: u64,
    /// Sum of first-to-last-chunk spans, µs.
    pub gap_sum_us: u64,
    /// Inter-chunk gaps behind `gap_sum_us`.
    pub gaps: u64,
}

impl Stream {
    /// Add another tick's (or sidecar's) stream (sparse merge, stays sorted).
    pub fn add(&mut self, other: &Stream) {
        self.add_parts(&other.ttft, other.chunks, other.gap_sum_us, other.gaps);
    }

    /// Add a series' stream fields (no copy of its TTFT histogram).
    pub fn add_series<S: WireText>(&mut self, s: &Series<S>) {
        self.add_parts(&s.ttft, s.stream_chunks, s.gap_sum_us, s.gaps);
    }

    fn add_parts(&mut self, ttft: &[(u16, u32)], chunks: u64, gap_sum_us: u64, gaps: u64) {
        add_sparse(&mut self.ttft, ttft);
        self.chunks = self.chunks.saturating_add(chunks);
        self.gap_sum_us = self.gap_sum_us.saturating_add(gap_sum_us);
        self.gaps = self.gaps.saturating_add(gaps);
    }
}

/// One canary verdict of a report (`S`: the text type, as for [`Series`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de> + From<&'static str>"))]
#[serde(bound(serialize = "S: Serialize + AsRef<str>"))]
pub struct Canary<S = String> {
    /// Canary name (the filter's configuration name).
    pub name: S,
    /// Route it was judged on.
    #[serde(default = "empty")]
    pub route: S,
    /// The sender's canary-vs-stable verdict.
    pub state: S,
    /// Its score, 0–1000.
    #[serde(default)]
    pub score: u16,
    /// The sender's explanation (omitted when empty).
    #[serde(default = "empty", skip_serializing_if = "is_empty_text")]
    pub reason: S,
    /// Whether that sidecar is steering the route to stable (omitted when
    /// not).
    #[serde(default, skip_serializing_if = "is_false")]
    pub steering: bool,
}

impl<S: WireText> Canary<S> {
    /// The verdict state (`insufficient_data` if unknown).
    pub fn state(&self) -> State {
        parse_state(self.state.as_str()).unwrap_or(State::InsufficientData)
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

/// A report (one chunk of one tick). `S` is the text type of the sidecar,
/// series and canary names: `String` for a sent report, [`Text`] for one
/// parsed by [`parse_borrowed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de> + From<&'static str>"))]
#[serde(bound(serialize = "S: Serialize + AsRef<str>"))]
pub struct Report<S = String> {
    /// Wire version ([`REPORT_VERSION`]).
    pub version: u64,
    /// Sidecar identity (stable per pod).
    pub sidecar: S,
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
    #[serde(default = "Vec::new")]
    pub series: Vec<Series<S>>,
    /// Canary verdicts (chunk 0).
    #[serde(default = "Vec::new")]
    pub canaries: Vec<Canary<S>>,
    /// Totals over all series (chunk 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
    /// Series left out of this tick's report (over [`MAX_CHUNKS`]); counted
    /// so the loss is visible, never silent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub series_dropped: u64,
    /// Observed edges of the tick (chunk 0; see [`crate::edges`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<crate::edges::Edge>,
    /// Requests the sender could not attribute to an edge within its caps.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub edges_overflow: u64,
    /// PII guard counts per route (chunk 0; counts only, see [`crate::pii`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pii: Vec<crate::pii::PiiRoute>,
}

impl<S: WireText + Serialize> Report<S> {
    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
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
            edges: Vec::new(),
            edges_overflow: 0,
            pii: Vec::new(),
        }
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
                if i > 0 {
                    r.edges.clear();
                    r.edges_overflow = 0;
                }
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

/// Check a name; `field` is only formatted on a refusal (a report may
/// carry 10 000 series: no allocation per accepted field).
fn check_name(
    field: impl FnOnce() -> String,
    value: &str,
    allow_empty: bool,
) -> Result<(), ReportError> {
    if value.len() > MAX_NAME_BYTES {
        return Err(ReportError::new(
            field(),
            format!("longer than {MAX_NAME_BYTES} bytes ({})", value.len()),
        ));
    }
    if !allow_empty && value.is_empty() {
        return Err(ReportError::new(field(), "must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(ReportError::new(
            field(),
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn version_error(found: Option<u64>) -> ReportError {
    ReportError::new(
        "version",
        format!(
            "unsupported report version {}, this reader accepts {REPORT_VERSION}",
            found.map_or_else(
                || "(missing or not an integer)".to_string(),
                |n| n.to_string()
            )
        ),
    )
}

/// Parse and validate a report body. Pure.
pub fn parse(body: &[u8]) -> Result<Report, ReportError> {
    parse_as(body)
}

/// Parse and validate a report body into a report whose names borrow from
/// `body` ([`Text`]): the same document, bounds and refusals as [`parse`],
/// without an allocation per name (the control service's ingest path).
pub fn parse_borrowed(body: &[u8]) -> Result<Report<Text<'_>>, ReportError> {
    parse_as(body)
}

fn parse_as<'a, S>(body: &'a [u8]) -> Result<Report<S>, ReportError>
where
    S: WireText + Deserialize<'a>,
{
    if body.len() > MAX_REPORT_BYTES {
        return Err(ReportError::new(
            "body",
            format!("{} bytes exceeds {MAX_REPORT_BYTES}", body.len()),
        ));
    }
    // One pass on the hot path: the whole document. A future (or missing)
    // version still gets a version error rather than a confusing shape
    // error: the version alone is looked at when the document does not
    // parse as this version, or parses with another version number.
    // UTF-8 checked once for the whole body (JSON is UTF-8), not once per
    // string as a byte-slice parse does: tens of thousands of short names
    // and keys per report.
    let text = std::str::from_utf8(body)
        .map_err(|e| ReportError::new("body", format!("not UTF-8 JSON: {e}")))?;
    let report = match serde_json::from_str::<Report<S>>(text) {
        Ok(r) if r.version == REPORT_VERSION => r,
        Ok(r) => return Err(version_error(Some(r.version))),
        Err(e) => {
            #[derive(Deserialize)]
            struct VersionOnly {
                version: Option<serde_json::Value>,
            }
            let v: VersionOnly = serde_json::from_slice(body)
                .map_err(|e| ReportError::new("body", format!("not a JSON object: {e}")))?;
            match v.version.as_ref().and_then(serde_json::Value::as_u64) {
                Some(REPORT_VERSION) => {
                    return Err(ReportError::new(
                        "body",
                        format!("does not match report version 1: {e}"),
                    ))
                }
                other => return Err(version_error(other)),
            }
        }
    };
    validate(&report)?;
    Ok(report)
}

/// Validate a report's bounds and consistency (every field named).
pub fn validate<S: WireText>(r: &Report<S>) -> Result<(), ReportError> {
    check_name(|| "sidecar".to_string(), r.sidecar.as_str(), false)?;
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
    let mut seen: hashbrown::HashSet<(&str, &str)> =
        hashbrown::HashSet::with_capacity(r.series.len());
    for (i, s) in r.series.iter().enumerate() {
        validate_series(i, s)?;
        if !seen.insert((s.route.as_str(), s.cluster.as_str())) {
            return Err(ReportError::new(
                format!("series[{i}]"),
                format!(
                    "duplicate series route {:?} cluster {:?}",
                    s.route.as_str(),
                    s.cluster.as_str()
                ),
            ));
        }
    }
    for (i, c) in r.canaries.iter().enumerate() {
        let f = |name: &str| format!("canaries[{i}].{name}");
        check_name(|| f("name"), c.name.as_str(), false)?;
        check_name(|| f("route"), c.route.as_str(), true)?;
        if c.reason.as_str().len() > MAX_REASON_BYTES {
            return Err(ReportError::new(
                f("reason"),
                format!("longer than {MAX_REASON_BYTES} bytes"),
            ));
        }
        if parse_state(c.state.as_str()).is_none() {
            return Err(ReportError::new(
                f("state"),
                format!("unknown state {:?}", c.state.as_str()),
            ));
        }
        score_ok(|| f("score"), c.score)?;
    }
    if r.edges.len() > crate::edges::MAX_EDGES {
        return Err(ReportError::new(
            "edges",
            format!(
                "at most {} edges per report, got {}",
                crate::edges::MAX_EDGES,
                r.edges.len()
            ),
        ));
    }
    for (i, e) in r.edges.iter().enumerate() {
        crate::edges::validate_edge(e)
            .map_err(|(field, message)| ReportError::new(format!("edges[{i}].{field}"), message))?;
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

fn score_ok(field: impl FnOnce() -> String, score: u16) -> Result<(), ReportError> {
    if score <= 1000 {
        Ok(())
    } else {
        Err(ReportError::new(
            field(),
            format!("must be in 0..=1000, got {score}"),
        ))
    }
}

fn validate_series<S: WireText>(i: usize, s: &Series<S>) -> Result<(), ReportError> {
    let f = |name: &str| format!("series[{i}].{name}");
    check_name(|| f("route"), s.route.as_str(), true)?;
    check_name(|| f("cluster"), s.cluster.as_str(), true)?;
    if parse_state(s.state.as_str()).is_none() {
        return Err(ReportError::new(
            f("state"),
            format!("unknown state {:?}", s.state.as_str()),
        ));
    }
    score_ok(|| f("score"), s.score)?;
    let n = s.requests;
    for (name, value) in [
        ("errors", s.errors),
        ("status_4xx", s.status_4xx),
        ("resets", s.resets),
        ("overflows", s.overflows),
        ("timeouts", s.timeouts),
        ("server_errors", s.server_errors),
        ("throttled", s.throttled),
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
    for (name, hist) in [("latency", &s.latency), ("ttft", &s.ttft)] {
        let mut previous: Option<u16> = None;
        let mut total: u64 = 0;
        for (j, &(bucket, count)) in hist.iter().enumerate() {
            let field = || format!("series[{i}].{name}[{j}]");
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
                f(name),
                format!("histogram counts {total} exceed requests {n}"),
            ));
        }
    }
    if s.gaps > s.stream_chunks {
        return Err(ReportError::new(
            f("gaps"),
            format!("{} exceeds stream_chunks {}", s.gaps, s.stream_chunks),
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
        let body = v.to_string();
        let owned = parse(body.as_bytes()).unwrap_err();
        // The borrowed parse refuses the same way.
        assert_eq!(parse_borrowed(body.as_bytes()).unwrap_err(), owned);
        owned.field
    }

    #[test]
    fn the_borrowed_parse_reads_the_same_report_without_copying_names() {
        let mut v = good();
        v["series"][0]["cluster"] = json!("can\"ary");
        let body = v.to_string();
        let owned = parse(body.as_bytes()).unwrap();
        let borrowed = parse_borrowed(body.as_bytes()).unwrap();
        let s = &borrowed.series[0];
        assert!(matches!(s.route.0, std::borrow::Cow::Borrowed("checkout")));
        assert_eq!(s.cluster.as_str(), "can\"ary");
        assert_eq!(borrowed.encode(), owned.encode());
        assert_eq!(s.delta(), owned.series[0].delta());
        assert_eq!(borrowed.canaries[0].state(), State::Critical);
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
        // Zero counters are omitted (read back as 0), the others are sent.
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(text.contains(r#""errors":1"#), "{text}");
        assert!(
            !text.contains("resets") && !text.contains("status_4xx"),
            "{text}"
        );
    }

    #[test]
    fn ttft_and_stream_shape_round_trip_and_cost_little() {
        let mut v = good();
        let plain = parse(v.to_string().as_bytes()).unwrap();
        assert!(
            !String::from_utf8(plain.encode()).unwrap().contains("ttft"),
            "an empty TTFT histogram is not sent"
        );
        v["series"][0]["ttft"] = json!([[300, 4], [420, 16]]);
        v["series"][0]["stream_chunks"] = json!(180);
        v["series"][0]["gap_sum_us"] = json!(1_600_000);
        v["series"][0]["gaps"] = json!(160);
        let r = parse(v.to_string().as_bytes()).unwrap();
        let s = r.series[0].stream();
        assert_eq!(
            (s.ttft.len(), s.chunks, s.gap_sum_us, s.gaps),
            (2, 180, 1_600_000, 160)
        );
        assert_eq!(parse(&r.encode()).unwrap(), r);
        // Bytes per series: the stream fields cost ~10 bytes per TTFT
        // bucket in use plus ~50 for the shape.
        let grown = r.encode().len() - plain.encode().len();
        assert!(grown < 100, "{grown}");
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
        assert_eq!(parse(b"{\"sidecar\":\"\xff\"}").unwrap_err().field, "body");
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
        v["series"][0]["ttft"] = json!([[40, 1], [10, 1]]);
        assert_eq!(err_field(v), "series[0].ttft[1]");
        let mut v = good();
        v["series"][0]["ttft"] = json!([[3, 21]]);
        assert_eq!(err_field(v), "series[0].ttft");
        let mut v = good();
        v["series"][0]["stream_chunks"] = json!(3);
        v["series"][0]["gaps"] = json!(4);
        assert_eq!(err_field(v), "series[0].gaps");
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
    fn edges_are_optional_validated_and_named() {
        let mut v = good();
        v["edges"] = json!([{"source":"spiffe://td/ns/a/sa/b","service":"orders","method":"GET",
            "path":"/v1/orders/{id}","inbound":true,"requests":3,"errors":1,"status_4xx":1,"denied":1,
            "latency":[[10,3]]}]);
        v["edges_overflow"] = json!(7);
        let r = parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(r.edges.len(), 1);
        assert_eq!(r.edges_overflow, 7);
        assert_eq!(parse(&r.encode()).unwrap(), r);
        let mut bad = v.clone();
        bad["edges"][0]["errors"] = json!(3);
        assert_eq!(err_field(bad), "edges[0].errors");
        let mut bad = v.clone();
        bad["edges"][0]["path"] = json!("x".repeat(300));
        assert_eq!(err_field(bad), "edges[0].path");
        let mut bad = v.clone();
        bad["edges"][0]["latency"] = json!([[10, 4]]);
        assert_eq!(err_field(bad), "edges[0].latency");
        let mut bad = v;
        bad["edges"][0]["denied"] = json!(2);
        assert_eq!(err_field(bad), "edges[0].denied");
        // A report without edges encodes without the field.
        assert!(!String::from_utf8(Report::new("s", 0, 1, 1, 1000).encode())
            .unwrap()
            .contains("edges"));
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
