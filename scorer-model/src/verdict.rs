//! The scorer's output: a 0–1000 score, a state, and the evidence behind it.
//!
//! Evidence is kept as numbers (cheap to produce every tick for every series);
//! [`Verdict::explain`] turns it into a sentence only when someone reads it.

/// Health state of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Not enough evidence to judge either way (low traffic, warm-up).
    #[default]
    InsufficientData,
    /// Nothing anomalous.
    Ok,
    /// Anomalous, not (yet) actionable.
    Warn,
    /// Anomalous with enough evidence to act on (steer away, roll back).
    Critical,
}

impl State {
    /// Stable lowercase name: `ok`, `warn`, `critical`, `insufficient_data`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::InsufficientData => "insufficient_data",
            State::Ok => "ok",
            State::Warn => "warn",
            State::Critical => "critical",
        }
    }

    /// Compact code for shared data and gauges (0 insufficient, 1 ok, 2 warn, 3 critical).
    pub fn code(self) -> u8 {
        match self {
            State::InsufficientData => 0,
            State::Ok => 1,
            State::Warn => 2,
            State::Critical => 3,
        }
    }

    /// Inverse of [`State::code`]; unknown codes read as insufficient data.
    pub fn from_code(code: u8) -> State {
        match code {
            1 => State::Ok,
            2 => State::Warn,
            3 => State::Critical,
            _ => State::InsufficientData,
        }
    }
}

/// Which signal drove the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signal {
    /// No signal stood out.
    #[default]
    None,
    /// Error ratio (5xx and no-response).
    Errors,
    /// Latency.
    Latency,
    /// Upstream failures: resets, truncated streams, timeouts and retried attempts.
    Resets,
    /// Throttling: 429, gRPC `RESOURCE_EXHAUSTED`, `UO` (warns; steers only
    /// when the operator asks for it).
    Throttled,
    /// Time to first byte (first token of a streamed answer).
    Ttft,
    /// Request rate against the series' own history (surge or collapse).
    Rate,
}

/// The numbers behind a verdict. Fields that do not apply are zero.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Evidence {
    /// The signal that set the state.
    pub signal: Signal,
    /// Requests of the judged series in the evaluated window.
    pub n: u64,
    /// Requests of the reference (stable peer, or baseline equivalent).
    pub n_ref: u64,
    /// Error ratio of the judged series, 0–1.
    pub error_ratio: f64,
    /// Error ratio of the reference, 0–1.
    pub error_ratio_ref: f64,
    /// p95 latency of the judged series, ms.
    pub p95_ms: f64,
    /// p95 latency of the reference, ms.
    pub p95_ms_ref: f64,
    /// p99 latency of the judged series, ms.
    pub p99_ms: f64,
    /// The test statistic that decided (z, log-likelihood ratio, ...).
    pub statistic: f64,
}

impl Evidence {
    /// The six floats, in field order (`error_ratio`, `error_ratio_ref`,
    /// `p95_ms`, `p95_ms_ref`, `p99_ms`, `statistic`): for checks that
    /// treat them alike (finiteness, digests).
    pub fn floats(&self) -> [f64; 6] {
        [
            self.error_ratio,
            self.error_ratio_ref,
            self.p95_ms,
            self.p95_ms_ref,
            self.p99_ms,
            self.statistic,
        ]
    }
}

/// A verdict on one series for one tick.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Verdict {
    /// Anomaly score 0 (normal) – 1000 (certainly anomalous).
    pub score: u16,
    /// State.
    pub state: State,
    /// Evidence.
    pub evidence: Evidence,
}

impl Verdict {
    /// A plain-English reason with the numbers, e.g.
    /// `"latency: p95 412.0 ms vs stable 180.0 ms (+129%), n=640/5800, stat=7.1"`.
    pub fn explain(&self) -> String {
        let e = &self.evidence;
        match e.signal {
            Signal::None => format!(
                "{}: nothing stands out (n={}/{}, p95 {:.1} ms, errors {:.2}%)",
                self.state.as_str(),
                e.n,
                e.n_ref,
                e.p95_ms,
                e.error_ratio * 100.0
            ),
            Signal::Latency => format!(
                "latency: p95 {:.1} ms vs reference {:.1} ms ({:+.0}%), n={}/{}, stat={:.1}",
                e.p95_ms,
                e.p95_ms_ref,
                pct_change(e.p95_ms, e.p95_ms_ref),
                e.n,
                e.n_ref,
                e.statistic
            ),
            Signal::Errors => format!(
                "errors: {:.2}% vs reference {:.2}%, n={}/{}, stat={:.1}",
                e.error_ratio * 100.0,
                e.error_ratio_ref * 100.0,
                e.n,
                e.n_ref,
                e.statistic
            ),
            Signal::Rate => format!(
                "rate: {} requests vs expected {} ({:+.0}%), stat={:.1}",
                e.n,
                e.n_ref,
                pct_change(e.n as f64, e.n_ref as f64),
                e.statistic
            ),
            Signal::Ttft => format!(
                "ttft: p95 {:.0} ms vs stable {:.0} ms ({:+.0} %), n={}/{}, stat={:.1}",
                e.p95_ms,
                e.p95_ms_ref,
                pct_change(e.p95_ms, e.p95_ms_ref),
                e.n,
                e.n_ref,
                e.statistic
            ),
            Signal::Throttled => format!(
                "throttling: {:.2}% of requests throttled vs reference {:.2}%, n={}/{}, stat={:.1}",
                e.error_ratio * 100.0,
                e.error_ratio_ref * 100.0,
                e.n,
                e.n_ref,
                e.statistic
            ),
            Signal::Resets => format!(
                "resets/timeouts/retries: {:.2}% of requests vs reference {:.2}%, n={}/{}, stat={:.1}",
                e.error_ratio * 100.0,
                e.error_ratio_ref * 100.0,
                e.n,
                e.n_ref,
                e.statistic
            ),
        }
    }
}

fn pct_change(value: f64, reference: f64) -> f64 {
    if reference > 0.0 {
        (value / reference - 1.0) * 100.0
    } else {
        0.0
    }
}
