//! Self judgement of one series: its signals against their own history.
//!
//! Why this exists: every series (not only managed canaries) is judged
//! against itself, so a service whose latency doubles, whose errors rise or
//! whose traffic surges or collapses is flagged without a peer. This module
//! holds the per-series [`SelfJudge`]: one robust [`Track`] per signal, with
//! explicit direction rules —
//!
//! | signal | value tracked | bad direction | sampling floor |
//! |---|---|---|---|
//! | latency | ln(recent `latency_quantile`), minus the load allowance | up | `baseline_min_rel_sd` |
//! | errors | recent error ratio | up | binomial `sqrt(p(1-p)/n)` |
//! | request rate | ln(requests per second), hour-of-day / day-of-week shape after `season_min_history_s` | **both** (surge and collapse) | Poisson `1/sqrt(expected count)` |
//! | extra (TTFT, any caller-fed value) | ln(value) | up | `baseline_min_rel_sd` |
//!
//! The judge is fed once per **block** of `recent_ticks` ticks (the recent
//! window when it holds exactly the ticks since the last block), so its
//! observations do not overlap and the CUSUM's stated run length applies;
//! the verdict is recomputed at each block and held in between. Every
//! memory is in seconds (`block ticks × tick length`).
//!
//! Minimum evidence for `critical` (as for canaries): latency needs the
//! rise to be material (`min_latency_increase`, `min_latency_increase_ms`),
//! `min_bad_events` requests above the expected quantile and a
//! `min_latency_share` share of them; errors need `min_error_diff` excess
//! and `min_bad_events` errors; rate needs an expected count of at least
//! `min_requests` per block and a change beyond `min_rate_change` (either
//! way). An immaterial deviation adds nothing to the CUSUMs.

use crate::calibrate::{Calibration, CalibrationParams};
use crate::model::Model;
use crate::selfbase::{Direction, Step, Track, TrackParams};
use crate::stats::{self, Candidate};
use crate::verdict::Signal;

/// Version byte of [`SelfJudge::encode`].
/// (2: the limit calibration, [`crate::calibrate`], follows the tracks;
/// 3: the calibration carries its interpolated multiplier.)
pub const CHECKPOINT_VERSION: u8 = 3;

/// One block's numbers, as the series computed them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Block {
    /// Seconds the block covers.
    pub dt_s: f64,
    /// Wall clock (unix seconds) at the end of the block, if known.
    pub unix_s: Option<f64>,
    /// Requests in the block.
    pub requests: u64,
    /// Errors in the block.
    pub errors: u64,
    /// The block's latency at the model's quantile, µs.
    pub q_us: Option<f64>,
    /// Latencies recorded in the block.
    pub latency_count: u64,
    /// An extra up-is-bad value (TTFT µs, ...), if the caller fed one.
    pub extra: Option<f64>,
    /// Steering moved traffic to or from this series during the block
    /// (a critical canary's requests sent to its stable): the request
    /// count is not the series' own volume, so the rate is neither judged
    /// nor learned (its baseline holds the organic level until steering
    /// ends). Latency and errors are judged as usual, with the load
    /// allowance for the extra requests.
    pub traffic_moved: bool,
}

/// What the judge concluded at the last block.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SelfOutcome {
    /// Deciding signal or `None`.
    pub signal: Signal,
    /// Statistic (CUSUM, in spreads) of the deciding or strongest signal.
    pub statistic: f64,
    /// Expected latency quantile, µs (0 until known).
    pub expected_q_us: f64,
    /// Expected error ratio.
    pub expected_error_ratio: f64,
    /// Expected requests per block.
    pub expected_requests: f64,
}

/// Append `c` to the first `len` candidates (ignored when full).
fn push(cands: &mut [Candidate; 4], len: &mut usize, c: Candidate) {
    if let Some(slot) = cands.get_mut(*len) {
        *slot = c;
        *len += 1;
    }
}

/// Per-series self judgement: tracks for latency, errors, rate and an
/// optional extra signal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelfJudge {
    latency: Track,
    errors: Track,
    rate: Track,
    extra: Option<Box<Track>>,
    /// Whether the rate track has started (a block with enough traffic).
    rate_started: bool,
    /// The series' limit calibration (on the largest raw statistic).
    calib: Calibration,
}

/// The candidates of one block, before the decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Judged {
    /// Per-signal results for [`stats::decide_with`].
    pub candidates: [Candidate; 4],
    /// Number of candidates in use.
    pub len: usize,
    /// Whether any track is warm enough to judge.
    pub ready: bool,
    /// Expected values for the evidence.
    pub outcome: SelfOutcome,
}

impl SelfJudge {
    /// An empty judge.
    pub fn new() -> Self {
        SelfJudge::default()
    }

    /// Whether the judge has finished warming up (latency or errors learned
    /// for `warmup_s`).
    pub fn ready(&self, model: &Model) -> bool {
        let p = TrackParams::from_model(model);
        self.errors.ready(&p)
    }

    /// Heap bytes held (seasonal profile, extra track).
    pub fn heap_bytes(&self) -> usize {
        self.rate.heap_bytes()
            + self
                .extra
                .as_ref()
                .map_or(0, |t| std::mem::size_of::<Track>() + t.heap_bytes())
    }

    /// Level shifts adopted so far, over all signals.
    pub fn level_shifts(&self) -> u32 {
        self.latency
            .level_shifts()
            .saturating_add(self.errors.level_shifts())
            .saturating_add(self.rate.level_shifts())
            .saturating_add(self.extra.as_ref().map_or(0, |t| t.level_shifts()))
    }

    /// Expected latency quantile, µs, once learned.
    pub fn expected_latency_us(&self) -> Option<f64> {
        (self.latency.updates() > 0).then(|| stats::finite_or_zero(self.latency.level().exp()))
    }

    /// Expected error ratio, once learned.
    pub fn expected_error_ratio(&self) -> Option<f64> {
        (self.errors.updates() > 0).then(|| self.errors.level().clamp(0.0, 1.0))
    }

    /// Learn one block and return the per-signal candidates. `count_above`
    /// gives the block's latencies above a threshold (µs), for the latency
    /// minimum-evidence rule.
    pub(crate) fn observe(
        &mut self,
        block: &Block,
        model: &Model,
        count_above: &dyn Fn(f64) -> u64,
    ) -> Judged {
        let p = TrackParams::from_model(model);
        let dt = if block.dt_s > 0.0 { block.dt_s } else { 1.0 };
        if block.unix_s.is_some() {
            // The daily/weekly shape needs a wall clock.
            self.rate.ensure_season();
        }
        let n = block.requests;
        let enough = n >= model.min_requests;
        let mut out = SelfOutcome::default();
        let none = Candidate {
            signal: Signal::None,
            z: 0.0,
            evidence_ok: false,
        };
        let mut cands = [none; 4];
        let mut len = 0usize;

        // Request rate (both directions), per second, log scale.
        let expected_rate = self.rate.expected(&p, block.unix_s).exp();
        let expected_n = stats::finite_or_zero(expected_rate * dt);
        out.expected_requests = expected_n;
        if (enough || self.rate_started) && !block.traffic_moved {
            self.rate_started = true;
            let x = ((n as f64 + 0.5) / dt).ln();
            let floor = 1.0 / (expected_n.max(n as f64) + 1.0).sqrt();
            let ratio = stats::ratio(n as f64 + 0.5, expected_n + 0.5);
            let change = if ratio >= 1.0 {
                ratio - 1.0
            } else {
                stats::ratio(1.0, ratio) - 1.0
            };
            let was_ready = self.rate.ready(&p);
            let lim = (change < model.min_rate_change * 0.5).then_some(p.k);
            let rate_p = TrackParams {
                z_cap: crate::selfbase::RATE_Z_CAP,
                ..p
            };
            let step = self
                .rate
                .observe(x, dt, block.unix_s, floor, Direction::Both, lim, &rate_p);
            if was_ready && expected_n >= model.min_requests as f64 {
                push(
                    &mut cands,
                    &mut len,
                    Candidate {
                        signal: Signal::Rate,
                        z: step.statistic,
                        evidence_ok: change >= model.min_rate_change,
                    },
                );
            }
        }
        // Rate ratio for the latency load allowance.
        let rate_ratio = stats::ratio(n as f64, expected_n);

        if enough {
            // Errors (up).
            let r = stats::ratio(block.errors.min(n) as f64, n as f64);
            let base = self.errors.level().clamp(0.0, 1.0);
            let pp = base.max(stats::ratio(0.5, n as f64)).clamp(0.0, 1.0);
            let floor = (pp * (1.0 - pp) / n as f64).sqrt();
            let excess = r - base;
            let was_ready = self.errors.ready(&p);
            let lim = (excess < model.min_error_diff / 3.0).then_some(p.k);
            let step = self
                .errors
                .observe(r, dt, None, floor, Direction::Up, lim, &p);
            out.expected_error_ratio = base;
            if was_ready {
                push(
                    &mut cands,
                    &mut len,
                    Candidate {
                        signal: Signal::Errors,
                        z: step.statistic,
                        evidence_ok: excess >= model.min_error_diff
                            && block.errors >= model.min_bad_events,
                    },
                );
            }

            // Latency (up), after the load allowance.
            if let Some(q_us) = block.q_us {
                let allowance = if rate_ratio > 1.0 && self.rate.ready(&p) {
                    stats::finite_or_zero(model.load_elasticity * rate_ratio.ln()).max(0.0)
                } else {
                    0.0
                };
                let x = q_us.max(1.0).ln() - allowance;
                let base_us = stats::finite_or_zero((self.latency.level() + allowance).exp());
                let material = q_us >= base_us * (1.0 + model.min_latency_increase)
                    && q_us >= base_us + model.min_latency_increase_ms * 1000.0;
                let was_ready = self.latency.ready(&p);
                let step = self.latency.observe(
                    x,
                    dt,
                    None,
                    model.baseline_min_rel_sd,
                    Direction::Up,
                    (!material).then_some(p.k),
                    &p,
                );
                out.expected_q_us = base_us;
                if was_ready {
                    let k = if material { count_above(base_us) } else { 0 };
                    let share = stats::ratio(k as f64, block.latency_count as f64);
                    push(
                        &mut cands,
                        &mut len,
                        Candidate {
                            signal: Signal::Latency,
                            z: step.statistic,
                            evidence_ok: material
                                && k >= model.min_bad_events
                                && share >= model.min_latency_share,
                        },
                    );
                }
            }

            // The generic extra signal (TTFT), up is bad.
            if let Some(v) = block.extra.filter(|v| v.is_finite() && *v > 0.0) {
                let t = self.extra.get_or_insert_with(Box::default);
                let was_ready = t.ready(&p);
                let base = t.level().exp();
                let material = v >= base * (1.0 + model.min_latency_increase)
                    && v >= base + model.min_latency_increase_ms * 1000.0;
                let step: Step = t.observe(
                    v.ln(),
                    dt,
                    None,
                    model.baseline_min_rel_sd,
                    Direction::Up,
                    (!material).then_some(p.k),
                    &p,
                );
                if was_ready {
                    push(
                        &mut cands,
                        &mut len,
                        Candidate {
                            signal: Signal::Latency,
                            z: step.statistic,
                            evidence_ok: material,
                        },
                    );
                }
            }
        }
        let ready = len > 0;
        if ready {
            // Calibrate the limits on the series' own history: every
            // candidate reads on the calibrated scale.
            let raw = cands
                .get(..len)
                .unwrap_or_default()
                .iter()
                .map(|c| c.z)
                .fold(0.0, f64::max);
            let m = self
                .calib
                .observe(raw, dt, &CalibrationParams::from_model(model));
            for c in cands.iter_mut().take(len) {
                c.z /= m;
            }
        }
        Judged {
            candidates: cands,
            len,
            ready,
            outcome: out,
        }
    }

    /// Compact, versioned checkpoint of the judge (for a lease move).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(CHECKPOINT_VERSION);
        out.push(u8::from(self.rate_started) | (u8::from(self.extra.is_some()) << 1));
        self.latency.encode(out);
        self.errors.encode(out);
        self.rate.encode(out);
        if let Some(t) = &self.extra {
            t.encode(out);
        }
        self.calib.encode(out);
    }

    /// Read a checkpoint from [`SelfJudge::encode`]; `None` when the version
    /// is unknown or the bytes are short or corrupt.
    pub fn decode(bytes: &[u8]) -> Option<SelfJudge> {
        let (&version, rest) = bytes.split_first()?;
        if version != CHECKPOINT_VERSION {
            return None;
        }
        let (&flags, mut rest) = rest.split_first()?;
        let take = |rest: &mut &[u8]| -> Option<Track> {
            let (t, used) = Track::decode(rest)?;
            *rest = rest.get(used..)?;
            Some(t)
        };
        let latency = take(&mut rest)?;
        let errors = take(&mut rest)?;
        let rate = take(&mut rest)?;
        let extra = if flags & 2 != 0 {
            Some(Box::new(take(&mut rest)?))
        } else {
            None
        };
        let (calib, _) = Calibration::decode(rest)?;
        Some(SelfJudge {
            latency,
            errors,
            rate,
            extra,
            rate_started: flags & 1 != 0,
            calib,
        })
    }
}
