//! Anytime-valid canary-vs-stable tests: an e-detector per signal.
//!
//! Why this exists: a canary is looked at every tick, forever. A test that is
//! valid for one look (like [`crate::peer::score_canary`]'s fixed-window
//! tests) is no longer valid when repeated every second: its false-alarm
//! rate is per look, and only a very strict level keeps a day of looks
//! honest. An e-detector is built for continuous monitoring: its false-alarm
//! guarantee is about the whole (unbounded) sequence of looks, and evidence
//! accumulates across ticks instead of being re-tested on a fixed window.
//!
//! **Method.** Three signals, each a per-request Bernoulli "bad event":
//! errors (5xx and no response), upstream failures (resets, timeouts,
//! overflows and retried attempts), and latency (the request is slower than
//! the stable's `latency_quantile` quantile over its window raised by the
//! practical minimum increase, [`practical_bar_us`]; counted only on ticks
//! where the stable served requests too, so a stale reference at 100 %
//! weight never accumulates evidence). Each tick `t`,
//! each signal has a null share `p0` fixed before the canary's tick is
//! looked at: the stable's measured share (the larger of its window's and
//! its same tick's, so a disturbance both versions see is not blamed on the
//! canary) plus a margin (`error_margin`, `latency_margin`). For each of
//! [`GAINS`] alternatives `p1 = p0 + g (1 - p0)`, the canary's `k` bad events
//! out of `n` requests of the tick give the likelihood ratio
//! `L = (p1/p0)^k ((1-p1)/(1-p0))^(n-k)`, and a CUSUM keeps
//! `C_t = max(C_{t-1}, 0) + ln L_t` (the log of the best product of `L` over
//! the ticks since any onset). The monitor's e-value is
//! `E_t = max over signals and alternatives of exp(C_t) / (3 |GAINS|)`.
//!
//! **Guarantee.** Null hypothesis H0: at every tick, given the past and the
//! stable's data, the canary's requests of that tick are independent and
//! each is bad with probability at most `p0` (for every signal). Then every
//! `L_t` has conditional expectation at most 1, so each Shiryaev–Roberts
//! statistic `R_t = (R_{t-1} + 1) L_t` makes `R_t - t` a supermartingale;
//! every CUSUM is at most its `R_t`, so `E_t` is at most the average of the
//! `3 |GAINS|` statistics `R_t`, and optional stopping gives, for the first
//! tick `τ` with `E_τ >= 1/alpha`: `E[τ] >= 1/alpha` ticks (the average run
//! length to a false `critical` is at least `1/alpha` ticks, whatever the
//! traffic does). Capping `C` from above (so a canary recovers in bounded
//! time) only lowers it and keeps the bound.
//!
//! `critical` needs `E_t >= 1/alpha` *and* the signal's minimum evidence over
//! the recent window (as in [`crate::peer`]); `warn` needs `E_t >=
//! 1/sqrt(alpha)`. Below `min_requests` canary requests in the recent
//! window (or `min_requests_ref` stable requests in its window) the verdict
//! is `insufficient_data`; the e-process still accumulates whatever the
//! ticks carry (a low-traffic tick is weak evidence, never invalid).

use crate::histogram::{first_bucket_above, rank_of, LatencyHistogram};
use crate::model::Model;
use crate::ring::TickView;
use crate::series::SeriesState;
use crate::stats::{self, Candidate};
use crate::ttft::TtftWindow;
use crate::verdict::{Evidence, Signal, State, Verdict};
use crate::window::Counters;

/// Alternatives of every test, as the share `g` of the distance from the
/// null share `p0` to 1: `p1 = p0 + g (1 - p0)`. Four cover small (5 %
/// errors over a clean stable) to gross (every request slow) faults; each
/// costs `ln 4` of threshold, and the CUSUM adapts to the onset.
pub const GAINS: [f64; 4] = [0.05, 0.15, 0.4, 0.8];

/// Signals, in [`CanaryMonitor`]'s order.
const SIGNALS: [Signal; 5] = [
    Signal::Errors,
    Signal::Resets,
    Signal::Latency,
    Signal::Throttled,
    Signal::Ttft,
];
/// Number of signals.
const NS: usize = SIGNALS.len();

/// The effect (canary bad share minus the stable's) at and above which the
/// minimum evidence shrinks with the effect: `n_needed(d) =
/// ceil(min_requests * (FULL_EVIDENCE_EFFECT / d)^2)`, at least
/// `min_bad_events` (see [`evidence_needed`] and the README).
pub const FULL_EVIDENCE_EFFECT: f64 = 0.5;

/// Headroom of each CUSUM above the critical threshold, in nats: a canary
/// that recovers falls back below critical within a few ticks of clean
/// traffic, however long the fault lasted.
pub const CUSUM_HEADROOM: f64 = 10.0;

/// Stateful sequential canary test; one per canary/stable pair, kept
/// between ticks. Call [`CanaryMonitor::update`] once per tick, after both
/// series observed that tick.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryMonitor {
    /// Log-CUSUM per signal ([`SIGNALS`] order) and alternative ([`GAINS`]).
    cusum: [[f64; GAINS.len()]; NS],
    /// `ln(1 - g)` per alternative (cached).
    ln_one_minus_g: [f64; GAINS.len()],
    /// Ticks fed.
    ticks: u64,
    /// Last tick's log e-value per signal (after the multiplicity charge).
    log_e: [f64; NS],
    /// The stable's long-run requests, errors, upstream failures and
    /// throttled requests (exponentially weighted over about
    /// [`LONG_MEMORY_TICKS`] ticks).
    stable_long: [f64; NS],
    /// Throttling may make the canary `critical` (and steer it); by default
    /// it only warns.
    steer_on_throttle: bool,
    /// This tick's TTFT observation ([`CanaryMonitor::observe_ttft`]),
    /// consumed by the next [`CanaryMonitor::update`]. Boxed: only TTFT
    /// routes have one (their `observe_ttft` allocates per tick anyway),
    /// and inline it would make every monitor 56 bytes larger.
    ttft: Option<Box<TtftTick>>,
}

/// One tick of the TTFT test, prepared from both series' TTFT windows.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TtftTick {
    /// Canary first bytes of the tick slower than the bar, and all of them.
    slow: u64,
    n: u64,
    /// Null share: the stable's own share above the bar plus `latency_margin`.
    p0: f64,
    /// Minimum evidence on the recent window holds.
    evidence_ok: bool,
    /// Recent canary p95, window stable p95 (ms), canary recent count.
    p95_ms: f64,
    p95_ms_ref: f64,
    recent_n: u64,
    ref_n: u64,
}

/// Memory of the stable's long-run error and reset ratios, in ticks. Its
/// window (`window_ticks`) alone often holds no error at all although the
/// stable's rate is not zero; the null share must not be that optimistic.
pub const LONG_MEMORY_TICKS: f64 = 600.0;

impl CanaryMonitor {
    /// A fresh monitor (no evidence yet). `model` is accepted for symmetry
    /// with [`SeriesState::new`]; thresholds are read at every update.
    pub fn new(_model: &Model) -> Self {
        let mut ln_one_minus_g = [0.0; GAINS.len()];
        for (out, g) in ln_one_minus_g.iter_mut().zip(GAINS) {
            *out = (1.0 - g).ln();
        }
        CanaryMonitor {
            cusum: [[0.0; GAINS.len()]; NS],
            ln_one_minus_g,
            ticks: 0,
            log_e: [0.0; NS],
            stable_long: [0.0; NS],
            steer_on_throttle: false,
            ttft: None,
        }
    }

    /// Prepare this tick's TTFT test from both series' TTFT windows (each
    /// observed this tick). Call before [`CanaryMonitor::update`]; without
    /// it the TTFT signal gathers no evidence that tick. The test is the
    /// latency test's: "slow" is above the stable's `latency_quantile` TTFT
    /// over its window (or this tick, when higher) raised by the practical
    /// minimum increase ([`practical_bar_us`]), no evidence on a tick without
    /// a stable first byte, the null share is the
    /// stable's own share above that bar plus `latency_margin`; minimum
    /// evidence: `min_requests_ref` stable and `min_requests` canary first
    /// bytes, the canary's recent p95 at least `min_latency_increase` and
    /// `min_latency_increase_ms` above the stable's, and `min_bad_events` slow
    /// first bytes making at least `min_latency_share` of the recent ones.
    pub fn observe_ttft(&mut self, canary: &TtftWindow, stable: &TtftWindow, model: &Model) {
        self.ttft = None;
        let q = if model.latency_quantile > 0.0 && model.latency_quantile < 1.0 {
            model.latency_quantile
        } else {
            0.95
        };
        let sw = stable.window();
        if sw.count() < model.min_requests_ref {
            return;
        }
        let Some(window_q) = sw.quantile_us(q) else {
            return;
        };
        let mut st = LatencyHistogram::new();
        st.merge_sparse(stable.last_tick());
        // As the latency test: a stable serving this tick, a practically
        // raised bar.
        if st.count() == 0 {
            return;
        }
        let bar = practical_bar_us(
            st.quantile_us(q).map_or(window_q, |t| t.max(window_q)),
            model,
        );
        let mut ct = LatencyHistogram::new();
        ct.merge_sparse(canary.last_tick());
        let p0 = share(sw.count_above_us(bar), sw.count())
            .max(share(st.count_above_us(bar), st.count()))
            + model.latency_margin.clamp(0.0, 0.5);
        let recent = canary.recent();
        let recent_q = recent.quantile_us(q);
        let high = recent_q.is_some_and(|cq| {
            cq >= (window_q * (1.0 + model.min_latency_increase))
                .max(window_q + model.min_latency_increase_ms * 1000.0)
        });
        let recent_slow = recent.count_above_us(window_q);
        let evidence_ok = recent.count() >= model.min_requests
            && high
            && recent_slow >= model.min_bad_events
            && share(recent_slow, recent.count()) >= model.min_latency_share;
        self.ttft = Some(Box::new(TtftTick {
            slow: ct.count_above_us(bar),
            n: ct.count(),
            p0,
            evidence_ok,
            p95_ms: us_to_ms(recent_q),
            p95_ms_ref: us_to_ms(Some(window_q)),
            recent_n: recent.count(),
            ref_n: sw.count(),
        }));
    }

    /// Let throttling alone make the canary `critical` (the filter's
    /// `steer_on_throttle`); by default a throttling canary is `warn`.
    pub fn with_steer_on_throttle(mut self, steer: bool) -> Self {
        self.steer_on_throttle = steer;
        self
    }

    /// Ticks fed so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Current log e-value (nats) of the strongest signal, after the
    /// multiplicity charge `ln(3 |GAINS|)`; `critical` needs `>= ln(1/alpha)`.
    pub fn log_e_value(&self) -> f64 {
        self.log_e.iter().copied().fold(0.0, f64::max)
    }

    /// Forget all evidence (e.g. a new canary version was deployed).
    pub fn reset(&mut self) {
        self.cusum = [[0.0; GAINS.len()]; NS];
        self.log_e = [0.0; NS];
    }

    /// Feed the newest tick of both series (each observed exactly once
    /// this tick, with the same model) and judge the canary.
    pub fn update(&mut self, canary: &SeriesState, stable: &SeriesState, model: &Model) -> Verdict {
        self.ticks = self.ticks.saturating_add(1);
        let q = if model.latency_quantile > 0.0 && model.latency_quantile < 1.0 {
            model.latency_quantile
        } else {
            0.95
        };
        let alpha = if model.alpha > 0.0 && model.alpha < 1.0 {
            model.alpha
        } else {
            1e-6
        };
        let critical = -alpha.ln();
        let warn = critical / 2.0;
        let charge = ((SIGNALS.len() * GAINS.len()) as f64).ln();
        let cap = critical + charge + CUSUM_HEADROOM;

        let sw = stable.window_counters();
        let stable_lat = stable.window_latency();
        let stable_q_us = stable_lat.quantile_us(q);
        let slow_from = stable_q_us.map_or(usize::MAX, first_bucket_above);
        let ct = canary.last_ticks(1).next().unwrap_or(TickView::EMPTY);
        let st = stable.last_ticks(1).next().unwrap_or(TickView::EMPTY);

        // Null shares (before looking at the canary's tick).
        let st_c = &st.counters;
        let keep = 1.0 - 1.0 / LONG_MEMORY_TICKS;
        let now = [
            st_c.requests as f64,
            st_c.errors.min(st_c.requests) as f64,
            resets_of(st_c) as f64,
            st_c.throttled.min(st_c.requests) as f64,
        ];
        for (long, x) in self.stable_long.iter_mut().zip(now) {
            *long = stats::finite_or_zero(*long * keep + x);
        }
        let reference_ok = sw.requests >= model.min_requests_ref;
        // The count signals (errors, upstream failures, throttling) need no
        // quantile of the stable: a few stable requests are enough, because
        // the pseudo-event below keeps their null share high while the
        // stable's history is short.
        let counts_ref_ok = sw.requests >= model.min_bad_events.min(model.min_requests_ref);
        if counts_ref_ok {
            // The stable's share: the highest of its window's, its long-run
            // one (one pseudo-event added: never zero) and this tick's.
            let [long_n, long_err, long_res, long_thr, _] = self.stable_long;
            let err_ref = share(sw.errors, sw.requests)
                .max(stats::ratio(long_err + 1.0, long_n + 1.0))
                .max(share(st_c.errors, st_c.requests));
            let res_ref = share(resets_of(sw), sw.requests)
                .max(stats::ratio(long_res + 1.0, long_n + 1.0))
                .max(share(resets_of(st_c), st_c.requests));
            let thr_ref = share(sw.throttled, sw.requests)
                .max(stats::ratio(long_thr + 1.0, long_n + 1.0))
                .max(share(st_c.throttled, st_c.requests));
            let margin = model.error_margin.clamp(0.0, 0.5);
            // Latency: "slow" is above the stable's quantile over its window,
            // or over this tick when higher (a load spike both versions see
            // raises the bar instead of counting as the canary's fault); the
            // null share is the stable's own share above that bar, over its
            // window or this tick, whichever is higher.
            //
            // The bar is raised by the practical minimum increase
            // (`min_latency_increase_ms`, [`practical_bar_us`]), so the
            // e-value never grows from a sub-millisecond shift a busy
            // machine makes. And it needs a stable that served requests this tick
            // (the null is about this tick given the stable's data): at 100 %
            // weight the stable's window is stale, and load that changed
            // since would count against the canary.
            let concurrent = st.latency_count > 0;
            let (ct_slow, ct_n, lat_ref) = match stable_q_us.filter(|_| reference_ok && concurrent)
            {
                Some(window_q) => {
                    let bar = practical_bar_us(
                        tick_quantile_us(&st, q).map_or(window_q, |t| t.max(window_q)),
                        model,
                    );
                    let from = first_bucket_above(bar);
                    let (c_slow, c_n) = slow_count(&ct, from);
                    let (s_slow, s_n) = slow_count(&st, from);
                    let window_share = share(stable_lat.count_above_us(bar), stable_lat.count());
                    (c_slow, c_n, Some(window_share.max(share(s_slow, s_n))))
                }
                None => (0, 0, None),
            };
            let c = &ct.counters;
            let obs = [
                Some((c.errors.min(c.requests), c.requests, err_ref + margin)),
                Some((resets_of(c), c.requests, res_ref + margin)),
                lat_ref.map(|r| (ct_slow, ct_n, r + model.latency_margin.clamp(0.0, 0.5))),
                Some((c.throttled.min(c.requests), c.requests, thr_ref + margin)),
                None,
            ];
            for (s, o) in obs.iter().enumerate() {
                let Some((k, n, p0)) = *o else { continue };
                if let Some(row) = self.cusum.get_mut(s) {
                    update_cusums(row, &self.ln_one_minus_g, k, n, p0, cap);
                }
            }
        }
        let ttft = self.ttft.take().map(|t| *t);
        if let (Some(t), Some(row)) = (ttft, self.cusum.get_mut(4)) {
            update_cusums(row, &self.ln_one_minus_g, t.slow, t.n, t.p0, cap);
        }
        for (out, row) in self.log_e.iter_mut().zip(&self.cusum) {
            let best = row.iter().copied().fold(0.0, f64::max);
            *out = stats::finite_or_zero(best - charge).max(0.0);
        }

        // Verdict on the recent window.
        let c = canary.recent_counters();
        let canary_q_us = canary.recent_quantile_us(q);
        let mut evidence = Evidence {
            signal: Signal::None,
            n: c.requests,
            n_ref: sw.requests,
            error_ratio: share(c.errors, c.requests),
            error_ratio_ref: share(sw.errors, sw.requests),
            p95_ms: us_to_ms(canary_q_us),
            p95_ms_ref: us_to_ms(stable_q_us),
            p99_ms: us_to_ms(canary.recent_quantile_us(0.99)),
            statistic: 0.0,
        };
        let insufficient = |evidence: Evidence| Verdict {
            score: 0,
            state: State::InsufficientData,
            evidence,
        };
        // Full evidence: `min_requests` canary requests in the recent window
        // and `min_requests_ref` stable ones. Below that, only a count signal
        // whose effect is large enough may decide (the low-traffic rule).
        let full_evidence = c.requests >= model.min_requests && reference_ok;
        if !full_evidence && !counts_ref_ok {
            return insufficient(evidence);
        }

        // Minimum evidence, on the newest suffix of the recent window (the
        // last tick, the last two, ...) with at least `min_requests` canary
        // requests, or the whole recent window: a fault starting mid-window
        // is not diluted by the clean ticks before it. At low traffic the
        // suffixes of the whole window are scanned, and a count signal needs
        // `evidence_needed(effect)` requests instead of `min_requests`.
        let refs = [
            share(sw.errors, sw.requests),
            share(resets_of(sw), sw.requests),
            0.0,
            share(sw.throttled, sw.requests),
        ];
        let recent = (model.recent_ticks.max(1)) as usize;
        let scan = if full_evidence {
            recent
        } else {
            (model.window_ticks.max(1)) as usize
        };
        let quantile_high = match (canary_q_us, stable_q_us) {
            (Some(cq), Some(sq)) => {
                cq >= (sq * (1.0 + model.min_latency_increase))
                    .max(sq + model.min_latency_increase_ms * 1000.0)
            }
            _ => false,
        };
        let mut span = SpanTally::default();
        let mut oks = [false; NS];
        let mut decided = [(0.0, 0.0, 0u64); NS];
        for (i, d) in canary.last_ticks(scan).enumerate() {
            span.add(&d, slow_from);
            let whole = i + 1 >= scan;
            if full_evidence && span.requests < model.min_requests && !whole {
                continue;
            }
            for (sig, k) in [(0, span.errors), (1, span.resets), (3, span.throttled)] {
                let (Some(ok), Some(&ref_share)) = (oks.get(sig), refs.get(sig)) else {
                    continue;
                };
                if *ok {
                    continue;
                }
                let r = share(k, span.requests);
                let effect = r - ref_share;
                if !full_evidence && span.requests < evidence_needed(effect, model) {
                    continue;
                }
                if k >= model.min_bad_events && effect >= model.min_error_diff {
                    if let (Some(ok), Some(out)) = (oks.get_mut(sig), decided.get_mut(sig)) {
                        *ok = true;
                        *out = (r, ref_share, span.requests);
                    }
                }
            }
            // Latency (full evidence only): suffixes of at least half the
            // recent window, and the canary's quantile over the whole recent
            // window must reach the required increase (a scheduler stall of
            // a few requests cannot).
            if let (Some(t), Some(ok)) = (ttft, oks.get_mut(4)) {
                *ok = full_evidence && t.evidence_ok;
            }
            oks[2] |= full_evidence
                && i + 1 >= recent.div_ceil(2)
                && quantile_high
                && span.slow >= model.min_bad_events
                && share(span.slow, span.latency) >= model.min_latency_share;
        }
        if !full_evidence && !oks.iter().any(|&ok| ok) {
            return insufficient(evidence);
        }
        let candidates: [Candidate; NS] = std::array::from_fn(|i| {
            let signal = SIGNALS.get(i).copied().unwrap_or(Signal::None);
            let ok = oks.get(i).copied().unwrap_or(false);
            Candidate {
                signal,
                z: self.log_e.get(i).copied().unwrap_or(0.0),
                // Throttling warns; it is critical only when asked for.
                evidence_ok: ok && (signal != Signal::Throttled || self.steer_on_throttle),
            }
        });
        let decision = stats::decide_with(&candidates, warn, critical);
        evidence.signal = decision.signal;
        evidence.statistic = decision.statistic;
        let sig = SIGNALS.iter().position(|&x| x == decision.signal);
        let fallback = |k: u64, r: f64| (share(k, c.requests), r, c.requests);
        let chosen = match (decision.signal, sig) {
            (Signal::Errors | Signal::Resets | Signal::Throttled, Some(i)) => {
                match (oks.get(i), decided.get(i)) {
                    (Some(true), Some(&d)) => Some(d),
                    _ => match decision.signal {
                        Signal::Resets => Some(fallback(resets_of(c), refs[1])),
                        Signal::Throttled => Some(fallback(c.throttled, refs[3])),
                        _ => None,
                    },
                }
            }
            _ => None,
        };
        if let Some((r, r_ref, n)) = chosen {
            (evidence.error_ratio, evidence.error_ratio_ref, evidence.n) = (r, r_ref, n);
        }
        if let (Signal::Ttft, Some(t)) = (decision.signal, ttft) {
            (evidence.p95_ms, evidence.p95_ms_ref) = (t.p95_ms, t.p95_ms_ref);
            (evidence.n, evidence.n_ref) = (t.recent_n, t.ref_n);
        }
        Verdict {
            score: decision.score,
            state: decision.state,
            evidence,
        }
    }
}

/// Canary requests a count signal needs before it may decide, given its
/// effect `d` (canary bad share minus the stable's): `min_requests` for
/// effects up to [`FULL_EVIDENCE_EFFECT`], then shrinking as `1/d^2` (the
/// sample size a fixed-power test needs), never below `min_bad_events`.
/// A canary failing every request (`d` near 1) needs a quarter of
/// `min_requests`: 5 requests with the defaults.
pub fn evidence_needed(d: f64, model: &Model) -> u64 {
    let full = model.min_requests.max(1);
    if d.is_nan() || d <= FULL_EVIDENCE_EFFECT {
        return full;
    }
    let scaled = (full as f64 * (FULL_EVIDENCE_EFFECT / d).powi(2)).ceil();
    let scaled = if scaled.is_finite() {
        scaled as u64
    } else {
        full
    };
    scaled.clamp(model.min_bad_events.max(1), full)
}

/// Canary tallies over a suffix of the recent window.
#[derive(Debug, Clone, Copy, Default)]
struct SpanTally {
    requests: u64,
    errors: u64,
    resets: u64,
    throttled: u64,
    latency: u64,
    slow: u64,
}

impl SpanTally {
    fn add(&mut self, d: &TickView<'_>, slow_from: usize) {
        let c = &d.counters;
        self.requests = self.requests.saturating_add(c.requests);
        self.errors = self.errors.saturating_add(c.errors.min(c.requests));
        self.resets = self.resets.saturating_add(resets_of(c));
        self.throttled = self.throttled.saturating_add(c.throttled.min(c.requests));
        let (slow, n) = slow_count(d, slow_from);
        self.latency = self.latency.saturating_add(n);
        self.slow = self.slow.saturating_add(slow);
    }
}

/// Update one signal's CUSUMs with `k` bad events of `n` at null share `p0`.
fn update_cusums(
    row: &mut [f64; GAINS.len()],
    ln_one_minus_g: &[f64; GAINS.len()],
    k: u64,
    n: u64,
    p0: f64,
    cap: f64,
) {
    if n == 0 || !p0.is_finite() {
        return;
    }
    let p0 = p0.clamp(1e-9, 0.999);
    let k = k.min(n) as f64;
    let good = n as f64 - k;
    // No bad event (most ticks): the up-term is 0 × a finite log (p0 and
    // p1 are clamped inside (0, 1)), so the logs are skipped; the sum is
    // the same bits.
    let ln_p0 = if k == 0.0 { 0.0 } else { p0.ln() };
    for ((c, g), ln_1mg) in row.iter_mut().zip(GAINS).zip(ln_one_minus_g) {
        // ln(p1/p0) for p1 = p0 + g (1 - p0); (1-p1)/(1-p0) = 1 - g.
        let up = if k == 0.0 {
            0.0
        } else {
            k * ((p0 + g * (1.0 - p0)).ln() - ln_p0)
        };
        let step = up + good * ln_1mg;
        let next = c.max(0.0) + step;
        *c = if next.is_finite() {
            next.clamp(-1.0, cap)
        } else {
            0.0
        };
    }
}

/// Bad share `k / n` (0 when `n` is 0), clamped to `[0, 1]`.
fn share(k: u64, n: u64) -> f64 {
    stats::ratio(k.min(n) as f64, n as f64)
}

/// Upstream failures: resets (truncated streams included), timeouts and
/// retried attempts, at most the requests. Overflows (`UO`) are throttling,
/// their own signal.
fn resets_of(c: &Counters) -> u64 {
    c.resets
        .saturating_add(c.timeouts)
        .saturating_add(c.retries)
        .min(c.requests)
}

/// Latencies of a tick at or above bucket `slow_from`, and all latencies
/// (walks down from the top entry, so a high bar costs a few entries).
fn slow_count(d: &TickView<'_>, slow_from: usize) -> (u64, u64) {
    let mut slow = 0u64;
    for (index, count) in d.latency().rev() {
        if usize::from(index) < slow_from {
            break;
        }
        slow = slow.saturating_add(u64::from(count));
    }
    (slow, d.latency_count)
}

/// A latency bar raised by the model's absolute practical minimum
/// (`min_latency_increase_ms`): the latency and TTFT e-detectors count a
/// request as slow only above it, so timer and scheduling noise of a busy
/// machine (a fraction of a millisecond on a fast service) gathers no
/// evidence. The relative minimum (`min_latency_increase`) stays a rule of
/// the verdict's minimum evidence only: a load change both versions see
/// raises the tick's bar already.
pub fn practical_bar_us(bar_us: f64, model: &Model) -> f64 {
    stats::finite_or_zero(bar_us + model.min_latency_increase_ms.max(0.0) * 1000.0)
}

/// Quantile `q` of one tick's latencies (sorted by bucket), µs; walks from
/// the top, so high quantiles cost a few entries. `None` when empty.
fn tick_quantile_us(d: &TickView<'_>, q: f64) -> Option<f64> {
    let total = d.latency_count;
    if total == 0 {
        return None;
    }
    let rank = rank_of(q.clamp(0.0, 1.0), total);
    // Values at or above the answer: total - rank + 1.
    let from_top = total - rank.min(total) + 1;
    let mut seen = 0u64;
    for (index, n) in d.latency().rev() {
        seen = seen.saturating_add(u64::from(n));
        if seen >= from_top {
            return Some(crate::histogram::bucket_value_us(index));
        }
    }
    d.latency()
        .next()
        .map(|(index, _)| crate::histogram::bucket_value_us(index))
}

fn us_to_ms(us: Option<f64>) -> f64 {
    us.map_or(0.0, |v| stats::finite_or_zero(v / 1000.0))
}
