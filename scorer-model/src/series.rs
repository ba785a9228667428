//! Per-series state: a rolling window of recent ticks plus an online baseline.
//!
//! Why this exists: the scorer runs on one worker per tick for every series
//! (route × upstream cluster) the sidecar sees, inside a wasm VM on Envoy's
//! worker thread. It must therefore be cheap and allocation-free in steady
//! state, yet give the two views the judgements need:
//!
//! - a **rolling window** of the last `window_ticks` ticks (the reference a
//!   stable peer offers) and its **recent** sub-window of the last
//!   `recent_ticks` ticks (what a canary, or a series against its own
//!   history, is judged on). The ticks themselves live packed in one flat
//!   [`TickRing`] (a few bytes per latency bucket, one buffer per series).
//!   The full window is kept as running [`Counters`] and one running
//!   [`LatencyHistogram`], maintained incrementally: a tick adds the new
//!   delta and subtracts the one that leaves, so a tick costs O(sparse
//!   delta size), never a recomputation over the window. The recent window
//!   keeps running counters too; its latency quantiles are read from the
//!   ring's newest ticks (a merge from the top of their sorted entries,
//!   which for p95/p99 stops after a few entries), so no second histogram
//!   is kept unless the recent window is longer than [`MERGE_MAX_TICKS`].
//!   Nothing is allocated per tick in steady state; a series at 20–80 rps
//!   holds about 1.3–1.7 KB (a 712-byte struct, the ring, 5–6 histogram
//!   chunks of 36 bytes).
//! - an online **self-baseline**: exponentially weighted mean and variance of
//!   the log of the recent window's latency quantile and of its error ratio.
//!   It learns only from ticks with enough traffic, and not while the series
//!   looks anomalous, so a fault is flagged rather than absorbed. Latency
//!   that rises with traffic (a surge queueing up) is allowed for: above the
//!   baseline rate, the expected quantile scales with the rate ratio to the
//!   power `load_elasticity`.
//!
//! [`SeriesState::score_self`] judges the recent window against that
//! baseline; [`crate::peer::score_canary`] judges a canary against its stable
//! peer's window.

use crate::histogram::{bucket_value_us, first_bucket_above, rank_of, LatencyHistogram};
use crate::model::{Model, MAX_WINDOW_TICKS};
use crate::ring::{Entries, TickRing, TickView};
use crate::selfjudge::{Block, SelfJudge};
use crate::stats;
use crate::verdict::{Evidence, Signal, State, Verdict};
use crate::window::{Counters, TickDelta};

/// The self verdict of the last block, compact (held between blocks).
#[derive(Debug, Clone, Copy, Default)]
struct CachedSelf {
    score: u16,
    state: State,
    signal: Signal,
    statistic: f32,
    n_ref: u32,
    error_ratio_ref: f32,
    p95_ms_ref: f32,
}

/// Recent windows of up to this many ticks are read from the ring (a merge
/// of their entries); a longer one keeps its own running histogram.
pub const MERGE_MAX_TICKS: usize = 8;

/// One series' window and baseline. Create with [`SeriesState::new`], feed
/// with [`SeriesState::observe`] exactly once per tick.
#[derive(Debug, Clone)]
pub struct SeriesState {
    /// The last `window_ticks` deltas, packed (its capacity is the window
    /// length the state was built for).
    ring: TickRing,
    /// Recent sub-window length the state was built for (at most
    /// [`MAX_WINDOW_TICKS`]).
    recent_ticks: u32,
    window_counters: Counters,
    window_latency: LatencyHistogram,
    recent_counters: Counters,
    /// Latencies recorded in the recent window.
    recent_latency_count: u64,
    /// Running recent-window histogram, only when the recent window is
    /// longer than [`MERGE_MAX_TICKS`].
    recent_hist: Option<Box<LatencyHistogram>>,
    ticks: u64,
    /// Quantile the cached recent quantiles were computed for.
    cached_q: f64,
    /// Recent window's `cached_q` quantile, µs (NaN for none: a quantile
    /// is a bucket's value, never NaN; see [`from_nan`]).
    recent_q_us: f64,
    /// Recent window's p99, µs (NaN for none).
    recent_p99_us: f64,
    /// The self judgement (robust baselines and sequential tests).
    judge: SelfJudge,
    /// The self verdict of the last block, held until the next one.
    self_verdict: CachedSelf,
    /// Ticks since the last block was judged.
    block_ticks: u32,
    /// Extra up-is-bad value (TTFT) for the current block.
    extra: Option<f32>,
    /// Steering moved traffic to or from this series during the current
    /// block ([`SeriesState::mark_traffic_moved`]).
    traffic_moved: bool,
    /// Set by [`SeriesState::restore`]: the next block is not judged (it
    /// holds the deltas that piled up while no worker scored), and no
    /// block has been judged since the restore.
    resumed: Resumed,
}

/// Where a series stands after [`SeriesState::restore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Resumed {
    /// Not restored, or judged since.
    #[default]
    No,
    /// Restored; the block now filling is skipped.
    SkipBlock,
    /// Restored; the skipped block is over, the next one is judged.
    Waiting,
}

impl SeriesState {
    /// Empty state sized for `model` (the ring is allocated here, once).
    pub fn new(model: &Model) -> Self {
        let (window_ticks, recent_ticks) = sizes(model);
        SeriesState {
            ring: TickRing::new(window_ticks),
            recent_ticks: recent_ticks as u32,
            window_counters: Counters::default(),
            window_latency: LatencyHistogram::new(),
            recent_counters: Counters::default(),
            recent_latency_count: 0,
            recent_hist: (recent_ticks > MERGE_MAX_TICKS).then(Box::default),
            ticks: 0,
            cached_q: model.latency_quantile,
            recent_q_us: f64::NAN,
            recent_p99_us: f64::NAN,
            judge: SelfJudge::new(),
            self_verdict: CachedSelf::default(),
            block_ticks: 0,
            extra: None,
            traffic_moved: false,
            resumed: Resumed::No,
        }
    }

    /// Record one tick. Call exactly once per tick per series; an empty
    /// delta means no traffic that tick and still ages the windows.
    ///
    /// If the model's window sizes changed since the last call (a model
    /// reload), the windows restart empty; the baseline is kept.
    /// The tick length is taken as 1 s; see [`SeriesState::observe_timed`].
    pub fn observe(&mut self, delta: &TickDelta, model: &Model) {
        self.observe_timed(delta, model, 1.0, None);
    }

    /// [`SeriesState::observe`] for a tick of `tick_s` seconds ending at
    /// `unix_s` (wall clock, for the request rate's daily/weekly shape;
    /// `None` when unknown). Every memory of the self judgement is in
    /// seconds, so the same model behaves alike at any tick length.
    pub fn observe_timed(
        &mut self,
        delta: &TickDelta,
        model: &Model,
        tick_s: f64,
        unix_s: Option<f64>,
    ) {
        let (window_ticks, recent_ticks) = sizes(model);
        if window_ticks != self.ring.capacity() || recent_ticks != self.recent() {
            self.resize(window_ticks, recent_ticks);
            self.block_ticks = 0;
        }
        self.roll(delta);
        self.ticks = self.ticks.saturating_add(1);
        self.refresh_quantiles(model.latency_quantile);
        self.block_ticks += 1;
        if self.block_ticks as usize >= self.recent() {
            self.block_ticks = 0;
            if self.resumed == Resumed::SkipBlock {
                // The first block after a lease move holds the deltas of the
                // ticks nobody scored, in one tick: a false surge. Not
                // judged, not learned.
                self.resumed = Resumed::Waiting;
                self.extra = None;
                self.traffic_moved = false;
                return;
            }
            self.resumed = Resumed::No;
            let tick_s = if tick_s.is_finite() && tick_s > 0.0 {
                tick_s
            } else {
                1.0
            };
            self.judge_block(model, tick_s * self.recent() as f64, unix_s);
        }
    }

    /// Tell the series that steering moved requests to or from it during
    /// the tick about to be observed (call before
    /// [`SeriesState::observe_timed`]): the block holding that tick does not
    /// judge or learn the request rate, which is not the series' own volume
    /// then — a stable receiving its critical canary's share would read a
    /// surge, the steered canary a collapse.
    pub fn mark_traffic_moved(&mut self) {
        self.traffic_moved = true;
    }

    /// Feed an extra up-is-bad value (e.g. the tick's TTFT p95 in µs) for
    /// the current block: the generic self-judgement hook. The latest value
    /// before the block closes is judged.
    pub fn observe_extra(&mut self, value: f64) {
        if value.is_finite() && value > 0.0 {
            self.extra = Some(value as f32);
        }
    }

    /// Level shifts the self-baseline has adopted so far (each one is a
    /// `level_shift` event: the caller logs it when the count moves).
    pub fn level_shifts(&self) -> u32 {
        self.judge.level_shifts()
    }

    /// Compact, versioned checkpoint of the self-baseline (a few hundred
    /// bytes), for a new lease holder to resume from.
    pub fn checkpoint(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(400);
        self.judge.encode(&mut out);
        out
    }

    /// Resume the self-baseline from [`SeriesState::checkpoint`] bytes;
    /// false (and nothing changed) when they are not a valid checkpoint.
    ///
    /// The restore happens on a lease move, whose first tick carries every
    /// delta merged while no worker scored (the old holder's lease had to
    /// expire first): the block that tick falls in is neither judged nor
    /// learned, and [`SeriesState::awaiting_judgement`] is true until the
    /// next one is (the caller keeps publishing the verdict it had).
    pub fn restore(&mut self, bytes: &[u8]) -> bool {
        match SelfJudge::decode(bytes) {
            Some(j) => {
                self.judge = j;
                self.resumed = Resumed::SkipBlock;
                self.block_ticks = 0;
                true
            }
            None => false,
        }
    }

    /// True after [`SeriesState::restore`] until the first block after it
    /// has been judged: the self verdict is not known yet.
    pub fn awaiting_judgement(&self) -> bool {
        self.resumed != Resumed::No
    }

    /// Counters over the full window (`window_ticks`).
    pub fn window_counters(&self) -> &Counters {
        &self.window_counters
    }

    /// Latency histogram over the full window.
    pub fn window_latency(&self) -> &LatencyHistogram {
        &self.window_latency
    }

    /// Counters over the recent sub-window (`recent_ticks`).
    pub fn recent_counters(&self) -> &Counters {
        &self.recent_counters
    }

    /// Latency histogram over the recent sub-window, built on demand from
    /// the ring (allocates; for tools and tests; the scorer itself uses
    /// [`SeriesState::recent_quantile_us`] and the counts it caches).
    pub fn recent_latency(&self) -> LatencyHistogram {
        if let Some(h) = &self.recent_hist {
            return (**h).clone();
        }
        let mut h = LatencyHistogram::new();
        for t in self.last_ticks(self.recent()) {
            for (index, n) in t.latency() {
                h.add_to_bucket(index, n);
            }
        }
        h
    }

    /// Number of latencies in the recent sub-window.
    pub fn recent_latency_count(&self) -> u64 {
        self.recent_latency_count
    }

    /// Approximate bytes of state held: the struct plus its heap (the packed
    /// ring, the window histogram, the recent histogram if any). For memory
    /// accounting in benchmarks.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.ring.heap_bytes()
            + self.window_latency.heap_bytes()
            + self.judge.heap_bytes()
            + self.recent_hist.as_ref().map_or(0, |h| {
                std::mem::size_of::<LatencyHistogram>() + h.heap_bytes()
            })
    }

    /// Ticks observed since creation.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The last `ticks` ticks (at most the window), newest first, as views
    /// of the packed ring (decoded counters, entries iterable from either
    /// end; [`TickView::to_delta`] gives an owned delta). Lets a caller
    /// look inside the recent window, e.g. to scan its suffixes for the
    /// onset of a change.
    pub fn last_ticks(&self, ticks: usize) -> impl Iterator<Item = TickView<'_>> + '_ {
        self.ring.newest(ticks)
    }

    /// The recent window's latency at quantile `q`, µs (cached for the
    /// model's quantile and p99). `None` when the window has no latency.
    pub fn recent_quantile_us(&self, q: f64) -> Option<f64> {
        if q == self.cached_q {
            from_nan(self.recent_q_us)
        } else if q == 0.99 {
            from_nan(self.recent_p99_us)
        } else {
            let [v, _] = self.compute_recent_quantiles([q, q]);
            v
        }
    }

    /// Recent-window latencies strictly above `threshold_us` (as
    /// [`LatencyHistogram::count_above_us`] on the recent window).
    pub fn recent_count_above_us(&self, threshold_us: f64) -> u64 {
        if let Some(h) = &self.recent_hist {
            return h.count_above_us(threshold_us);
        }
        if threshold_us.is_nan() {
            return 0;
        }
        let from = first_bucket_above(threshold_us);
        let mut above = 0u64;
        for t in self.last_ticks(self.recent()) {
            for (index, n) in t.latency().rev() {
                if usize::from(index) < from {
                    break;
                }
                above = above.saturating_add(u64::from(n));
            }
        }
        above
    }

    /// Whether the self-baseline has finished its warm-up for `model`.
    pub fn baseline_ready(&self, model: &Model) -> bool {
        self.judge.ready(model)
    }

    /// Baseline latency quantile in ms, once the baseline has seen latency.
    pub fn baseline_latency_ms(&self) -> Option<f64> {
        self.judge
            .expected_latency_us()
            .map(|us| stats::finite_or_zero(us / 1000.0))
    }

    /// Baseline error ratio, once the baseline has been updated.
    pub fn baseline_error_ratio(&self) -> Option<f64> {
        self.judge.expected_error_ratio()
    }

    /// Judge the recent window against the series' own history: the verdict
    /// of the last completed block (see [`crate::selfjudge`]), with the
    /// recent window's numbers as evidence.
    ///
    /// `insufficient_data` during warm-up or without enough traffic to
    /// judge any signal; `warn` when a signal's CUSUM reaches `self_warn`;
    /// `critical` when it reaches `self_critical` and the minimum-evidence
    /// rules hold; otherwise `ok`.
    pub fn score_self(&self, model: &Model) -> Verdict {
        let c = &self.recent_counters;
        let k = &self.self_verdict;
        Verdict {
            score: k.score,
            state: k.state,
            evidence: Evidence {
                signal: k.signal,
                n: c.requests,
                n_ref: u64::from(k.n_ref),
                error_ratio: stats::ratio(c.errors as f64, c.requests as f64).clamp(0.0, 1.0),
                error_ratio_ref: f64::from(k.error_ratio_ref),
                p95_ms: us_to_ms(self.recent_quantile_us(model.latency_quantile)),
                p95_ms_ref: f64::from(k.p95_ms_ref),
                p99_ms: us_to_ms(self.recent_quantile_us(0.99)),
                statistic: f64::from(k.statistic),
            },
        }
    }

    /// Judge the block that just closed and cache the verdict.
    fn judge_block(&mut self, model: &Model, dt_s: f64, unix_s: Option<f64>) {
        let c = self.recent_counters;
        let block = Block {
            dt_s,
            unix_s,
            requests: c.requests,
            errors: c.errors.min(c.requests),
            q_us: from_nan(self.recent_q_us),
            latency_count: self.recent_latency_count,
            extra: self.extra.take().map(f64::from),
            traffic_moved: std::mem::take(&mut self.traffic_moved),
        };
        let mut judge = std::mem::take(&mut self.judge);
        let judged = judge.observe(&block, model, &|t| self.recent_count_above_us(t));
        self.judge = judge;
        let o = judged.outcome;
        let mut cached = CachedSelf {
            n_ref: stats::finite_or_zero(o.expected_requests)
                .round()
                .clamp(0.0, f64::from(u32::MAX)) as u32,
            error_ratio_ref: o.expected_error_ratio as f32,
            p95_ms_ref: us_to_ms(Some(o.expected_q_us)) as f32,
            ..CachedSelf::default()
        };
        if judged.ready {
            let cands = judged.candidates.get(..judged.len).unwrap_or_default();
            let d = stats::decide_with(cands, model.self_warn, model.self_critical);
            cached.score = d.score;
            cached.state = d.state;
            cached.signal = d.signal;
            cached.statistic = d.statistic as f32;
        }
        self.self_verdict = cached;
    }

    /// Recent sub-window length, ticks.
    #[inline]
    fn recent(&self) -> usize {
        self.recent_ticks as usize
    }

    /// Rebuild the ring for new window sizes (windows restart empty).
    fn resize(&mut self, window_ticks: usize, recent_ticks: usize) {
        self.ring = TickRing::new(window_ticks);
        self.recent_ticks = recent_ticks as u32;
        self.window_counters = Counters::default();
        self.window_latency.clear();
        self.recent_counters = Counters::default();
        self.recent_latency_count = 0;
        self.recent_hist = (recent_ticks > MERGE_MAX_TICKS).then(Box::default);
    }

    /// Push `delta` into the ring, updating the running windows.
    fn roll(&mut self, delta: &TickDelta) {
        let w = self.ring.capacity();
        // The tick leaving the recent window: pushed `recent_ticks` ago.
        let recent = self.recent();
        if self.ring.len() >= recent {
            if let Some(old) = self.ring.get(recent.min(w) - 1) {
                self.recent_counters.sub(&old.counters);
                self.recent_latency_count =
                    self.recent_latency_count.saturating_sub(old.latency_count);
                if let Some(h) = self.recent_hist.as_deref_mut() {
                    h.subtract_entries(old.latency());
                }
            }
        }
        // The tick leaving the full window: the oldest, once full.
        if self.ring.len() >= w {
            if let Some(old) = self.ring.get(w - 1) {
                self.window_counters.sub(&old.counters);
                self.window_latency.subtract_entries(old.latency());
            }
        }
        let latency_count = self.ring.push(delta);
        self.window_counters.add(&delta.counters);
        self.window_latency.merge_sparse(&delta.latency);
        self.recent_counters.add(&delta.counters);
        self.recent_latency_count = self.recent_latency_count.saturating_add(latency_count);
        if let Some(h) = self.recent_hist.as_deref_mut() {
            h.merge_sparse(&delta.latency);
        }
    }

    /// Recompute the cached recent quantiles.
    fn refresh_quantiles(&mut self, q: f64) {
        self.cached_q = q;
        let [a, b] = self.compute_recent_quantiles([q, 0.99]);
        (self.recent_q_us, self.recent_p99_us) = (to_nan(a), to_nan(b));
    }

    /// The recent window's quantiles `qs`, µs (as
    /// [`LatencyHistogram::quantile_us`] on the recent window). Short
    /// recent windows merge the ring's newest ticks from the top: each
    /// tick's entries are sorted, so walking down from the highest bucket
    /// finds p99 and p95 after a few entries.
    fn compute_recent_quantiles(&self, qs: [f64; 2]) -> [Option<f64>; 2] {
        if let Some(h) = &self.recent_hist {
            return qs.map(|q| h.quantile_us(q));
        }
        let total = self.recent_latency_count;
        if total == 0 {
            return [None, None];
        }
        // Values at or above the answer: total - rank + 1, with the rank as
        // the histogram computes it.
        let targets = qs.map(|q| {
            let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
            let rank = rank_of(q, total);
            total - rank.min(total) + 1
        });
        // One cursor per tick, walking down; `tops` holds each cursor's
        // current entry as (bucket, count), bucket -1 once exhausted.
        let mut cursors: [Entries<'_>; MERGE_MAX_TICKS] =
            std::array::from_fn(|_| TickView::EMPTY.latency());
        let mut tops = [(-1i32, 0u32); MERGE_MAX_TICKS];
        let mut k = 0;
        for ((cursor, top), age) in cursors
            .iter_mut()
            .zip(tops.iter_mut())
            .zip(0..self.recent())
        {
            let Some(entries) = self.ring.latency(age) else {
                break;
            };
            *cursor = entries;
            *top = next_down(cursor);
            k += 1;
        }
        let (cursors, tops) = (
            cursors.get_mut(..k).unwrap_or_default(),
            tops.get_mut(..k).unwrap_or_default(),
        );
        let mut out = [None; 2];
        let mut seen = 0u64;
        loop {
            let index = tops.iter().map(|&(i, _)| i).max().unwrap_or(-1);
            if index < 0 {
                break;
            }
            for (cursor, top) in cursors.iter_mut().zip(tops.iter_mut()) {
                if top.0 == index {
                    seen = seen.saturating_add(u64::from(top.1));
                    *top = next_down(cursor);
                }
            }
            let [a, b] = &mut out;
            let [ta, tb] = targets;
            if a.is_none() && seen >= ta {
                *a = Some(bucket_value_us(index as u16));
            }
            if b.is_none() && seen >= tb {
                *b = Some(bucket_value_us(index as u16));
            }
            if a.is_some() && b.is_some() {
                break;
            }
        }
        out
    }
}

/// Ring sizes for `model`, sanitised (a model that skipped validation must
/// not make the ring empty or huge).
fn sizes(model: &Model) -> (usize, usize) {
    let window = model.window_ticks.clamp(1, MAX_WINDOW_TICKS) as usize;
    let recent = (model.recent_ticks as usize).clamp(1, window);
    (window, recent)
}

/// The next entry of `cursor` from the top as (bucket, count); bucket -1
/// when exhausted.
#[inline]
fn next_down(cursor: &mut Entries<'_>) -> (i32, u32) {
    cursor
        .next_back()
        .map_or((-1, 0), |(i, n)| (i32::from(i), n))
}

/// A cached quantile as stored: NaN for none.
#[inline]
fn to_nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// A cached quantile as read: none for NaN.
#[inline]
fn from_nan(v: f64) -> Option<f64> {
    (!v.is_nan()).then_some(v)
}

fn us_to_ms(us: Option<f64>) -> f64 {
    us.map_or(0.0, |v| stats::finite_or_zero(v / 1000.0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Tiny deterministic PRNG for simulations (xorshift64*).
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        pub(crate) fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in [0, 1).
        pub(crate) fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
        pub(crate) fn chance(&mut self, p: f64) -> bool {
            self.uniform() < p
        }
        /// Standard normal (Box–Muller).
        pub(crate) fn normal(&mut self) -> f64 {
            let u1 = self.uniform().max(1e-300);
            let u2 = self.uniform();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
        /// Poisson (Knuth; fine for the small means used here).
        pub(crate) fn poisson(&mut self, mean: f64) -> u64 {
            let limit = (-mean).exp();
            let mut k = 0;
            let mut p = self.uniform();
            while p > limit {
                k += 1;
                p *= self.uniform();
            }
            k
        }
    }

    /// Builds one tick's delta the way the filter would.
    #[derive(Default)]
    pub(crate) struct TickBuilder {
        counters: Counters,
        hist: LatencyHistogram,
    }

    impl TickBuilder {
        pub(crate) fn request(&mut self, latency_us: u64, status: u16) {
            self.counters.requests += 1;
            if status >= 500 || status == 0 {
                self.counters.errors += 1;
            }
            if (400..500).contains(&status) {
                self.counters.status_4xx += 1;
            }
            if status == 0 {
                self.counters.resets += 1;
            }
            self.counters.latency_sum_us += latency_us;
            self.hist.record_us(latency_us);
        }
        pub(crate) fn build(&self) -> TickDelta {
            TickDelta::from_parts(self.counters, &self.hist)
        }
    }

    /// A normal ~1 ms loopback latency with jitter, µs.
    pub(crate) fn healthy_latency(rng: &mut Rng, tick_factor: f64) -> u64 {
        let base = 1000.0 * (0.25 * rng.normal()).exp() * tick_factor;
        // Occasional scheduler hiccup on a loaded 2-core machine.
        let hiccup = if rng.chance(0.01) {
            rng.uniform() * 20_000.0
        } else {
            0.0
        };
        (base + hiccup).max(50.0) as u64
    }

    fn delta(requests: u64, errors: u64, latencies_us: &[u64]) -> TickDelta {
        let mut h = LatencyHistogram::new();
        for &l in latencies_us {
            h.record_us(l);
        }
        TickDelta {
            counters: Counters {
                requests,
                errors,
                latency_sum_us: latencies_us.iter().sum(),
                ..Default::default()
            },
            latency: h.to_sparse(),
        }
    }

    #[test]
    fn windows_are_maintained_incrementally_and_match_recompute() {
        let m = Model::default();
        let mut s = SeriesState::new(&m);
        let mut history: Vec<TickDelta> = Vec::new();
        let mut rng = Rng::new(7);
        for t in 0..57u64 {
            let n = t % 7;
            let lats: Vec<u64> = (0..n).map(|_| 100 + rng.next_u64() % 100_000).collect();
            let d = if t % 5 == 4 {
                TickDelta::default()
            } else {
                delta(n, t % 3, &lats)
            };
            s.observe(&d, &m);
            history.push(d);
            for (span, counters, hist) in [
                (
                    m.window_ticks as usize,
                    s.window_counters(),
                    s.window_latency(),
                ),
                (
                    m.recent_ticks as usize,
                    s.recent_counters(),
                    &s.recent_latency(),
                ),
            ] {
                let mut c = Counters::default();
                let mut h = LatencyHistogram::new();
                for d in history.iter().rev().take(span) {
                    c.add(&d.counters);
                    h.merge_sparse(&d.latency);
                }
                assert_eq!(*counters, c, "tick {t} span {span}");
                assert_eq!(hist.to_sparse(), h.to_sparse(), "tick {t} span {span}");
            }
        }
        assert_eq!(s.ticks(), 57);
    }

    /// Every recent-window read (quantiles, counts above, histogram)
    /// matches a recomputation, for recent windows read from the ring and
    /// for long ones that keep their own histogram.
    #[test]
    fn recent_reads_match_recompute_for_every_window_shape() {
        for (window, recent) in [(10, 3), (10, 1), (8, 8), (30, 12), (12, 9)] {
            let m = Model {
                window_ticks: window,
                recent_ticks: recent,
                ..Model::default()
            };
            let mut s = SeriesState::new(&m);
            let mut history: Vec<TickDelta> = Vec::new();
            let mut rng = Rng::new(u64::from(window * 100 + recent));
            for t in 0..80u64 {
                let n = rng.next_u64() % 40;
                let lats: Vec<u64> = (0..n)
                    .map(|_| 50 + rng.next_u64() % (1 << (rng.next_u64() % 24)))
                    .collect();
                let mut d = delta(n, t % 2, &lats);
                if t % 11 == 0 {
                    // A huge count: escapes in the packed ring.
                    d.latency.push((800, u32::MAX / 3));
                }
                s.observe(&d, &m);
                history.push(d);
                let mut h = LatencyHistogram::new();
                for d in history.iter().rev().take(recent as usize) {
                    h.merge_sparse(&d.latency);
                }
                assert_eq!(s.recent_latency().to_sparse(), h.to_sparse(), "t {t}");
                assert_eq!(s.recent_latency_count(), h.count(), "t {t}");
                for q in [
                    0.0,
                    0.01,
                    0.5,
                    0.95,
                    0.99,
                    1.0,
                    m.latency_quantile,
                    f64::NAN,
                ] {
                    assert_eq!(s.recent_quantile_us(q), h.quantile_us(q), "t {t} q {q}");
                }
                for threshold in [-1.0, 0.0, 1_000.0, 40_000.5, 1e7, f64::NAN] {
                    assert_eq!(
                        s.recent_count_above_us(threshold),
                        h.count_above_us(threshold),
                        "t {t} threshold {threshold}"
                    );
                }
                let views: Vec<TickDelta> = s
                    .last_ticks(recent as usize)
                    .map(|v| v.to_delta())
                    .collect();
                let expected: Vec<TickDelta> = history
                    .iter()
                    .rev()
                    .take(recent as usize)
                    .cloned()
                    .collect();
                assert_eq!(views, expected, "t {t}");
            }
        }
    }

    #[test]
    fn recent_equal_to_window_and_resize() {
        let mut m = Model {
            window_ticks: 4,
            recent_ticks: 4,
            ..Model::default()
        };
        let mut s = SeriesState::new(&m);
        for _ in 0..10 {
            s.observe(&delta(3, 1, &[1000, 2000, 3000]), &m);
        }
        assert_eq!(s.window_counters().requests, 12);
        assert_eq!(s.recent_counters().requests, 12);
        assert_eq!(s.recent_latency().count(), 12);
        // Model reload with other sizes: windows restart, nothing panics.
        m.window_ticks = 6;
        m.recent_ticks = 2;
        s.observe(&delta(3, 0, &[1000, 2000, 3000]), &m);
        assert_eq!(s.window_counters().requests, 3);
        for _ in 0..10 {
            s.observe(&delta(3, 0, &[1000, 2000, 3000]), &m);
        }
        assert_eq!(s.window_counters().requests, 18);
        assert_eq!(s.recent_counters().requests, 6);
    }

    #[test]
    fn empty_ticks_age_the_window() {
        let m = Model::default();
        let mut s = SeriesState::new(&m);
        s.observe(&delta(5, 5, &[1000; 5]), &m);
        for _ in 0..m.recent_ticks {
            s.observe(&TickDelta::default(), &m);
        }
        assert_eq!(s.recent_counters().requests, 0);
        assert_eq!(s.window_counters().requests, 5);
        for _ in m.recent_ticks..m.window_ticks {
            s.observe(&TickDelta::default(), &m);
        }
        assert_eq!(s.window_counters().requests, 0);
        assert!(s.window_latency().is_empty());
        assert_eq!(s.recent_quantile_us(0.95), None);
    }

    #[test]
    fn corrupt_deltas_never_panic() {
        let m = Model::default();
        let mut s = SeriesState::new(&m);
        let bad = TickDelta {
            counters: Counters {
                requests: 3,
                errors: 10,
                ..Default::default()
            },
            latency: vec![(u16::MAX, u32::MAX), (5, u32::MAX), (3, 0)],
        };
        for _ in 0..100 {
            s.observe(&bad, &m);
            let v = s.score_self(&m);
            assert!(v.evidence.error_ratio <= 1.0);
            assert!(v.evidence.statistic.is_finite());
        }
        // A model that skipped validation still does not panic.
        let weird = Model {
            window_ticks: 0,
            recent_ticks: 0,
            baseline_half_life_s: f64::NAN,
            latency_quantile: f64::NAN,
            ..Model::default()
        };
        let mut s = SeriesState::new(&weird);
        s.observe(&bad, &weird);
        let _ = s.score_self(&weird);
    }

    /// Drive a series at `rps` healthy requests per tick; return it warm.
    fn warm_series(rng: &mut Rng, m: &Model, rps: f64, ticks: u64) -> SeriesState {
        let mut s = SeriesState::new(m);
        for _ in 0..ticks {
            let mut b = TickBuilder::default();
            for _ in 0..rng.poisson(rps) {
                let l = healthy_latency(rng, 1.0);
                b.request(l, if rng.chance(0.002) { 503 } else { 200 });
            }
            s.observe(&b.build(), m);
        }
        s
    }

    #[test]
    fn warm_up_is_insufficient_data() {
        let m = Model::default();
        let mut rng = Rng::new(11);
        let s = warm_series(&mut rng, &m, 20.0, m.warmup_s as u64 - 5);
        let v = s.score_self(&m);
        assert_eq!(v.state, State::InsufficientData);
        assert_eq!(v.score, 0);
        assert!(!s.baseline_ready(&m));
        let s = warm_series(&mut rng, &m, 20.0, m.warmup_s as u64 + 5);
        assert!(s.baseline_ready(&m));
        assert_ne!(s.score_self(&m).state, State::InsufficientData);
    }

    #[test]
    fn low_traffic_stays_insufficient() {
        let m = Model::default();
        let mut rng = Rng::new(5);
        let mut s = SeriesState::new(&m);
        for t in 0..2000u64 {
            let mut b = TickBuilder::default();
            for _ in 0..(t % 3) {
                let slow = t > 1000;
                let l = if slow {
                    300_000
                } else {
                    healthy_latency(&mut rng, 1.0)
                };
                b.request(l, if slow { 503 } else { 200 });
            }
            s.observe(&b.build(), &m);
            let v = s.score_self(&m);
            assert_eq!(v.state, State::InsufficientData, "tick {t}");
            assert_eq!(v.score, 0);
        }
    }

    /// Self-scoring of a steady, jittery series: no critical in 10 000 ticks.
    #[test]
    fn self_score_steady_series_is_never_critical() {
        let m = Model::default();
        for seed in 1..=3u64 {
            let mut rng = Rng::new(seed);
            let mut s = SeriesState::new(&m);
            let (mut warn, mut judged) = (0u32, 0u32);
            for t in 0..10_000u64 {
                // Slow drift of the machine's load plus per-tick noise.
                let factor = (1.0 + 0.2 * ((t as f64) / 500.0).sin()) * (0.05 * rng.normal()).exp();
                let mut b = TickBuilder::default();
                for _ in 0..rng.poisson(80.0) {
                    let l = healthy_latency(&mut rng, factor);
                    b.request(l, if rng.chance(0.003) { 503 } else { 200 });
                }
                s.observe(&b.build(), &m);
                let v = s.score_self(&m);
                assert_ne!(
                    v.state,
                    State::Critical,
                    "seed {seed} tick {t}: {}",
                    v.explain()
                );
                if v.state != State::InsufficientData {
                    judged += 1;
                }
                if v.state == State::Warn {
                    warn += 1;
                }
            }
            assert!(judged > 9_000);
            assert!(
                f64::from(warn) / f64::from(judged) < 0.02,
                "seed {seed}: {warn} warn of {judged}"
            );
        }
    }

    #[test]
    fn self_score_detects_latency_step_and_does_not_absorb_it() {
        let m = Model::default();
        let mut rng = Rng::new(21);
        let mut s = warm_series(&mut rng, &m, 80.0, 200);
        assert_eq!(s.score_self(&m).state, State::Ok);
        let base = s.baseline_latency_ms().unwrap();
        let mut first_critical = None;
        for t in 1..=120u32 {
            let mut b = TickBuilder::default();
            for _ in 0..rng.poisson(80.0) {
                b.request(healthy_latency(&mut rng, 1.0) + 200_000, 200);
            }
            s.observe(&b.build(), &m);
            let v = s.score_self(&m);
            if v.state == State::Critical && first_critical.is_none() {
                first_critical = Some(t);
                assert_eq!(v.evidence.signal, Signal::Latency);
                assert!(v.score >= 700);
                assert!(v.explain().starts_with("latency:"), "{}", v.explain());
            }
            if first_critical.is_some() {
                assert_eq!(v.state, State::Critical, "tick {t}: fault absorbed");
            }
        }
        // Judged per block of `recent_ticks` (3) ticks; each block adds at
        // most Z_CAP - k = 5.5 to the CUSUM, so critical (14) takes 3 blocks.
        assert!(first_critical.is_some_and(|t| t <= 9), "{first_critical:?}");
        assert!((s.baseline_latency_ms().unwrap() - base).abs() / base < 0.05);
    }

    #[test]
    fn self_score_detects_error_step() {
        let m = Model::default();
        let mut rng = Rng::new(22);
        let mut s = warm_series(&mut rng, &m, 20.0, 200);
        let mut first_critical = None;
        for t in 1..=60u32 {
            let mut b = TickBuilder::default();
            for _ in 0..rng.poisson(20.0) {
                let status = if rng.chance(0.2) { 503 } else { 200 };
                b.request(healthy_latency(&mut rng, 1.0), status);
            }
            s.observe(&b.build(), &m);
            let v = s.score_self(&m);
            if v.state == State::Critical && first_critical.is_none() {
                first_critical = Some(t);
                assert_eq!(v.evidence.signal, Signal::Errors);
            }
        }
        assert!(
            first_critical.is_some_and(|t| t <= 12),
            "{first_critical:?}"
        );
    }

    /// Traffic x4 with latency +50 % (queueing) is not an anomaly; the same
    /// latency rise at the usual traffic still is.
    #[test]
    fn surge_latency_is_allowed_for_but_not_a_rise_without_traffic() {
        let m = Model::default();
        // A 40 ms service at 80 rps, warm.
        let warm = |rng: &mut Rng| {
            let mut s = SeriesState::new(&m);
            for _ in 0..200 {
                let mut b = TickBuilder::default();
                for _ in 0..rng.poisson(80.0) {
                    b.request((40_000.0 * (0.3 * rng.normal()).exp()) as u64, 200);
                }
                s.observe(&b.build(), &m);
            }
            s
        };
        for (factor, expect_critical) in [(4.0, false), (1.0, true)] {
            let mut rng = Rng::new(41);
            let mut s = warm(&mut rng);
            let mut critical = false;
            for _ in 0..60 {
                let mut b = TickBuilder::default();
                for _ in 0..rng.poisson(80.0 * factor) {
                    let l = 40_000.0 * 1.5 * (0.3 * rng.normal()).exp();
                    b.request(l as u64, 200);
                }
                s.observe(&b.build(), &m);
                let v = s.score_self(&m);
                // A x4 surge is itself a (rate) anomaly; the latency rise
                // that comes with it is not.
                critical |= v.state == State::Critical && v.evidence.signal == Signal::Latency;
            }
            assert_eq!(critical, expect_critical, "traffic x{factor}");
        }
        // Without the allowance the surge would be critical.
        let strict = Model {
            load_elasticity: 0.0,
            ..Model::default()
        };
        let mut rng = Rng::new(41);
        let mut s = SeriesState::new(&strict);
        for _ in 0..200 {
            let mut b = TickBuilder::default();
            for _ in 0..rng.poisson(80.0) {
                b.request((40_000.0 * (0.3 * rng.normal()).exp()) as u64, 200);
            }
            s.observe(&b.build(), &strict);
        }
        let mut critical = false;
        for _ in 0..60 {
            let mut b = TickBuilder::default();
            for _ in 0..rng.poisson(320.0) {
                b.request((60_000.0 * (0.3 * rng.normal()).exp()) as u64, 200);
            }
            s.observe(&b.build(), &strict);
            critical |= s.score_self(&strict).state == State::Critical;
        }
        assert!(critical);
    }

    /// Steering a critical canary's share to its stable gives the stable
    /// +25 % requests. Told about it ([`SeriesState::mark_traffic_moved`]),
    /// the stable's self path neither warns on the rate nor learns the
    /// steered level, so it is also quiet when steering ends; not told, the
    /// same traffic makes it warn (the product bug this guards against).
    #[test]
    fn steered_share_does_not_make_the_stable_warn() {
        let m = Model::default();
        for told in [true, false] {
            let mut rng = Rng::new(77);
            let mut s = SeriesState::new(&m);
            let tick = |s: &mut SeriesState, rng: &mut Rng, rate: f64| {
                let mut b = TickBuilder::default();
                for _ in 0..rng.poisson(rate) {
                    b.request(healthy_latency(rng, 1.0), 200);
                }
                s.observe(&b.build(), &m);
            };
            for _ in 0..600 {
                tick(&mut s, &mut rng, 80.0);
            }
            let mut worst = State::Ok;
            let mut rate_alarm = false;
            // 2 minutes steered (+25 %), then 1 minute back to normal.
            for i in 0..180 {
                let steered = i < 120;
                if steered && told {
                    s.mark_traffic_moved();
                }
                tick(&mut s, &mut rng, if steered { 100.0 } else { 80.0 });
                let v = s.score_self(&m);
                if matches!(v.state, State::Warn | State::Critical) {
                    worst = v.state;
                    rate_alarm |= v.evidence.signal == Signal::Rate;
                }
            }
            if told {
                assert_eq!(worst, State::Ok, "told about the steered share");
            } else {
                assert!(
                    rate_alarm,
                    "not told, the +25 % should read as a rate anomaly"
                );
            }
        }
    }

    /// A 1 ms service whose tail wobbles by a few ms under machine load
    /// (p95 about x3, +3 ms): below the absolute floor, never `warn`. The
    /// same relative rise on a 40 ms service still is (warn or critical).
    #[test]
    fn small_absolute_latency_wobble_never_warns() {
        let m = Model::default();
        for (base_us, expect_warn) in [(1_000.0, false), (40_000.0, true)] {
            let mut rng = Rng::new(61);
            let mut s = SeriesState::new(&m);
            let tick = |s: &mut SeriesState, rng: &mut Rng, factor: f64| {
                let mut b = TickBuilder::default();
                for _ in 0..rng.poisson(80.0) {
                    b.request((base_us * factor * (0.25 * rng.normal()).exp()) as u64, 200);
                }
                s.observe(&b.build(), &m);
                s.score_self(&m)
            };
            for _ in 0..200 {
                tick(&mut s, &mut rng, 1.0);
            }
            let mut warned = false;
            for t in 0..60 {
                let v = tick(&mut s, &mut rng, 3.0);
                warned |= matches!(v.state, State::Warn | State::Critical);
                if !expect_warn {
                    assert!(v.score < 400, "tick {t}: {} {}", v.score, v.explain());
                }
            }
            assert_eq!(warned, expect_warn, "base {base_us} us");
        }
    }

    #[test]
    fn score_is_consistent_with_state() {
        let m = Model::default();
        let mut rng = Rng::new(23);
        let mut s = warm_series(&mut rng, &m, 40.0, 100);
        for t in 0..300u64 {
            let mut b = TickBuilder::default();
            // Ramp the latency so every state is visited.
            let extra = if t > 100 { (t - 100) * 200 } else { 0 };
            for _ in 0..rng.poisson(40.0) {
                b.request(healthy_latency(&mut rng, 1.0) + extra, 200);
            }
            s.observe(&b.build(), &m);
            let v = s.score_self(&m);
            match v.state {
                State::InsufficientData => assert_eq!(v.score, 0),
                State::Ok => assert!(v.score < 400),
                State::Warn => assert!((400..700).contains(&v.score)),
                State::Critical => assert!(v.score >= 700 && v.score <= 1000),
            }
            assert!(v.evidence.statistic.is_finite());
            assert!(v.evidence.p95_ms.is_finite() && v.evidence.p95_ms_ref.is_finite());
        }
    }
}
