//! The verdict table: what the lease holder concluded this tick, for every
//! worker to read once per tick.
//!
//! One shared-data key (`vigil.verdicts`), written only by the lease holder:
//! per series id its state and score, plus the routes currently steered to
//! stable and why. Workers keep a decoded copy and answer request-time
//! questions ("steer this route?", "score of this series?") from it without
//! any hostcall.

use crate::codec::{Reader, Writer};
use vigil_scorer::verdict::{Signal, State};

/// Shared-data key of the verdict table.
pub const VERDICTS_KEY: &str = "vigil.verdicts";

/// Shared-data key of the compact steering table: the published table
/// without its per-series verdicts (steered and weighted routes only), the
/// part every worker's request path needs. Rewritten only when it changes.
pub const STEERING_KEY: &str = "vigil.steering";

/// One series' verdict as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishedVerdict {
    /// State.
    pub state: State,
    /// Score 0–1000.
    pub score: u16,
}

/// A route currently steered to stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeredRoute {
    /// Route name.
    pub route: Vec<u8>,
    /// Why (the signal that made the canary critical).
    pub reason: Signal,
}

/// A managed route split by the control service's weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedRoute {
    /// Route name.
    pub route: Vec<u8>,
    /// Percent of the route's traffic sent to the canary.
    pub canary_percent: u8,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerdictTable {
    /// Holder's tick counter when written.
    pub generation: u64,
    /// Verdicts by series id.
    pub series: Vec<PublishedVerdict>,
    /// Steered routes.
    pub steered: Vec<SteeredRoute>,
    /// Routes split by fresh control-service weights (steering takes precedence).
    pub weighted: Vec<WeightedRoute>,
}

/// Code of a signal on the wire and in metric names.
pub fn signal_code(s: Signal) -> u8 {
    match s {
        Signal::None => 0,
        Signal::Errors => 1,
        Signal::Latency => 2,
        Signal::Resets => 3,
        Signal::Throttled => 4,
        Signal::Ttft => 5,
        Signal::Rate => 6,
    }
}

/// Inverse of [`signal_code`].
pub fn signal_from_code(c: u8) -> Signal {
    match c {
        1 => Signal::Errors,
        2 => Signal::Latency,
        3 => Signal::Resets,
        4 => Signal::Throttled,
        5 => Signal::Ttft,
        6 => Signal::Rate,
        _ => Signal::None,
    }
}

/// Lowercase name of a signal, used as the `reason` metric tag.
pub fn signal_name(s: Signal) -> &'static str {
    match s {
        Signal::None => "none",
        Signal::Errors => "errors",
        Signal::Latency => "latency",
        Signal::Resets => "resets",
        Signal::Throttled => "throttled",
        Signal::Ttft => "ttft",
        Signal::Rate => "rate",
    }
}

impl VerdictTable {
    /// The compact steering view: steered and weighted routes, no series
    /// verdicts, generation 0 (so it encodes the same until it changes).
    pub fn steering(&self) -> VerdictTable {
        VerdictTable {
            generation: 0,
            series: Vec::new(),
            steered: self.steered.clone(),
            weighted: self.weighted.clone(),
        }
    }

    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.uint(self.generation);
        w.uint(self.series.len() as u64);
        for v in &self.series {
            w.byte(v.state.code());
            w.uint(u64::from(v.score));
        }
        w.uint(self.steered.len() as u64);
        for s in &self.steered {
            w.bytes(&s.route);
            w.byte(signal_code(s.reason));
        }
        w.uint(self.weighted.len() as u64);
        for r in &self.weighted {
            w.bytes(&r.route);
            w.byte(r.canary_percent);
        }
        w.finish()
    }

    /// Decode; `None` when corrupt.
    pub fn decode(bytes: &[u8]) -> Option<VerdictTable> {
        let mut r = Reader::new(bytes)?;
        let generation = r.uint()?;
        let n = r.count(2)?;
        let mut series = Vec::with_capacity(n);
        for _ in 0..n {
            let state = State::from_code(r.byte()?);
            let score = u16::try_from(r.uint()?).ok()?.min(1000);
            series.push(PublishedVerdict { state, score });
        }
        let m = r.count(2)?;
        let mut steered = Vec::with_capacity(m);
        for _ in 0..m {
            let route = r.bytes()?.to_vec();
            let reason = signal_from_code(r.byte()?);
            steered.push(SteeredRoute { route, reason });
        }
        let k = r.count(2)?;
        let mut weighted = Vec::with_capacity(k);
        for _ in 0..k {
            let route = r.bytes()?.to_vec();
            let canary_percent = r.byte()?.min(100);
            weighted.push(WeightedRoute {
                route,
                canary_percent,
            });
        }
        r.is_done().then_some(VerdictTable {
            generation,
            series,
            steered,
            weighted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let t = VerdictTable {
            generation: 42,
            series: vec![
                PublishedVerdict::default(),
                PublishedVerdict {
                    state: State::Critical,
                    score: 910,
                },
            ],
            steered: vec![SteeredRoute {
                route: b"checkout".to_vec(),
                reason: Signal::Latency,
            }],
            weighted: vec![WeightedRoute {
                route: b"checkout".to_vec(),
                canary_percent: 25,
            }],
        };
        let bytes = t.encode();
        assert_eq!(VerdictTable::decode(&bytes), Some(t));
        for cut in 0..bytes.len() {
            assert_eq!(VerdictTable::decode(&bytes[..cut]), None);
        }
    }
}
