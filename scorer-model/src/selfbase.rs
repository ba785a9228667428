//! A robust, time-based self-baseline and sequential test for one scalar signal.
//!
//! Why this exists: a series judged against its own history (no canary peer)
//! needs a baseline that neither freezes on a lasting level shift nor learns
//! a fault away, whose spread is taught by the series' own bursts, and a test
//! whose false-alarm rate can be stated. One [`Track`] does that for one
//! signal (log latency quantile, error ratio, log request rate, TTFT, or any
//! value a caller feeds in: the generic hook), with every memory in
//! **seconds**, so a model behaves the same at 1 s ticks and at 1 min rows.
//!
//! Per observation `x` (after `dt` seconds):
//!
//! - **Primary baseline** (level, spread): exponentially weighted with
//!   half-life `baseline_half_life_s`, **winsorized**: the residual is clipped
//!   at ±[`CLIP_SD`] spreads before it updates level and variance, so an
//!   outlier moves the baseline by at most a bounded step (clipped, not
//!   excluded) and a burst that recurs teaches the spread. Optionally a
//!   seasonal profile (hour of day + day of week offsets, [`Season`]) once
//!   it has seen `season_min_history_s` of history.
//! - **Sequential test**: two one-sided CUSUMs on the standardized residual
//!   `z = (x - expected) / spread`, `S⁺ = max(0, S⁺ + min(z, Z_CAP) - k)`
//!   (and `S⁻` for drops), with the reference `k = self_cusum_k` and limits
//!   `self_warn` / `self_critical`. Direction rules ([`Direction`]) decide
//!   which side counts. For i.i.d. standard normal residuals the average run
//!   length to a false alarm is Siegmund's
//!   `ARL0 ≈ (e^{2k(h+1.166)} - 2k(h+1.166) - 1) / (2k²)` observations per
//!   side ([`arl0`]): with the defaults (k = 0.5, h = 14) about 8·10⁶ per
//!   side; warn (h = 9) about 5·10⁴.
//! - **Challenger**: a second, always-learning level with half-life
//!   `shift_hold_s / 8`. When it sits at least [`SHIFT_MIN_SD`] spreads from
//!   the primary ([`SHIFT_ALARMED_SD`] while the CUSUM on its side is
//!   critical, and for as long as a hold lasts) and has stayed within
//!   [`SHIFT_STABLE_SD`] (wider on serially correlated residuals:
//!   `Track::stable_band`) of where it was for `shift_hold_s`, it is **adopted**: the primary (and the drift
//!   horizon) move by the shift, the CUSUMs restart, and exactly one
//!   level-shift event is counted ([`Track::level_shifts`]). The level left
//!   behind is remembered as `prior` for `max(4 × shift_hold_s, drift_horizon_s)`: a return to it
//!   is no anomaly.
//! - **Slow drift**: a long level with half-life `drift_horizon_s`; the
//!   primary's distance from it, in spreads, is a drift statistic judged by
//!   the same direction rules (`drift_z` for warn, `1.5 × drift_z` for
//!   critical), so a creep the primary follows is still caught.
//!
//! State is a few dozen bytes (plus 124 B when seasonal), all `f32`/`f64`
//! scalars, and round-trips through [`Track::encode`] / [`Track::decode`]
//! for checkpoints.

use crate::model::Model;

/// Residuals are clipped at this many spreads before they update the baseline.
pub const CLIP_SD: f64 = 3.0;
/// Largest standardized residual one observation adds to a CUSUM.
pub const Z_CAP: f64 = 6.0;
/// [`Z_CAP`] for the request rate: its residual is a count against a
/// Poisson floor (not a quantile estimate with heavy tails), so a sharp step
/// may add more per block. Below `self_critical + k` (one block alone never
/// makes the rate critical) and with 2 × (10 − k) ≥ `self_critical`, a surge
/// ×3 or a collapse to 30 % is critical after two full blocks. With the
/// common cap it took three, and in real Envoy (a tick of merge delay, a
/// wider learned spread on a loaded machine) 12.7 s: issue 11 wants 10 s
/// (`tests/tests/self_judgement.rs::surge_collapse_shift_and_creep`).
pub const RATE_Z_CAP: f64 = 10.0;
/// The CUSUMs are capped at this many times the critical limit.
pub const CAP_TIMES: f64 = 6.0;
/// A challenger this many spreads from the primary is a candidate shift.
pub const SHIFT_MIN_SD: f64 = 3.0;
/// A challenger this many spreads from the primary is a candidate shift
/// while the CUSUM on its side is at the critical limit: a lasting step of
/// 1.5–3 spreads drives the CUSUM to critical (each observation adds
/// z − k ≥ 1) and, with [`SHIFT_MIN_SD`] alone, alarmed for ever without
/// being adopted — in real Envoy a +40 % latency step measured as +28 % at
/// p95 (≈ 2.9 spreads on a loaded machine) stayed critical for the whole
/// run (`tests/tests/self_judgement.rs::surge_collapse_shift_and_creep`). A
/// slow drift (the CUSUM quiet, the drift statistic alarming) still needs
/// [`SHIFT_MIN_SD`] to start a hold, so the drift check is not absorbed. A
/// hold once started continues while the gap is at least this, whether the
/// CUSUM is at the limit or not (hysteresis).
pub const SHIFT_ALARMED_SD: f64 = 1.5;
/// A challenger within this many spreads of the level left behind by the
/// last shift is a return to it.
pub const PRIOR_MATCH_SD: f64 = 3.0;
/// A candidate shift is stable while the challenger stays within this many
/// spreads of its position when the hold started.
pub const SHIFT_STABLE_SD: f64 = 1.5;
/// The stability band is widened to this many times the challenger's own
/// noise (serially correlated residuals make the challenger wander).
pub const SHIFT_STABLE_NOISE: f64 = 4.0;
/// ... and is at most this many spreads wide, so a creep still leaves it.
pub const SHIFT_STABLE_MAX_SD: f64 = 3.0;
/// Bytes of [`Track::encode`] (without the seasonal profile).
pub const TRACK_BYTES: usize = 4 * 16 + 1;
/// A shift is adopted only after this many stable observations too (at
/// coarse rows, `shift_hold_s` alone could adopt it before the CUSUM had
/// the observations to alarm).
pub const SHIFT_MIN_OBS: u32 = 8;

/// Which deviations of a signal are bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only rises (latency, error ratios, TTFT).
    Up,
    /// Only drops (throughput where less is worse).
    Down,
    /// Both (request rate: surge and collapse).
    Both,
}

/// Average run length to a false alarm of a one-sided CUSUM with reference
/// `k` and limit `h` on i.i.d. standard normal data (Siegmund's
/// approximation), in observations.
pub fn arl0(k: f64, h: f64) -> f64 {
    if k <= 0.0 {
        return f64::INFINITY;
    }
    let b = h + 1.166;
    let a = 2.0 * k * b;
    (a.exp() - a - 1.0) / (2.0 * k * k)
}

/// EWMA weight of an observation after `dt` seconds for half-life `half_life`.
#[inline]
pub fn weight_for(dt: f64, half_life: f64) -> f64 {
    if dt.is_nan() || dt <= 0.0 || dt.is_infinite() {
        return 0.0;
    }
    if half_life.is_nan() || half_life <= 0.0 {
        return 1.0;
    }
    (1.0 - (-dt * std::f64::consts::LN_2 / half_life).exp()).clamp(0.0, 1.0)
}

/// Seasonal offsets: hour of day and day of week, learned from residuals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Season {
    hour: [f32; 24],
    day: [f32; 7],
    /// Seconds of history the profile has seen.
    seen_s: f32,
    /// One-day mean the slots are relative to.
    mean: f32,
}

impl Season {
    fn slots(unix_s: f64) -> (usize, usize) {
        let hours = (unix_s / 3600.0).floor().max(0.0) as u64;
        let hour = (hours % 24) as usize;
        // 1970-01-01 was a Thursday; the offset only needs to be consistent.
        let day = ((hours / 24) % 7) as usize;
        (hour, day)
    }

    fn offset(&self, unix_s: f64, min_history_s: f64) -> f64 {
        if f64::from(self.seen_s) < min_history_s {
            return 0.0;
        }
        let (h, d) = Self::slots(unix_s);
        f64::from(self.hour.get(h).copied().unwrap_or(0.0))
            + f64::from(self.day.get(d).copied().unwrap_or(0.0))
    }

    /// Learn `x` at `unix_s`: the slots learn the deviation of `x` from a
    /// one-day mean (not from the fast baseline level, which would absorb
    /// the shape before the slots could learn it).
    fn learn(&mut self, unix_s: f64, x: f64, dt: f64) {
        let (h, d) = Self::slots(unix_s);
        if self.seen_s == 0.0 {
            self.mean = x as f32;
        }
        let mean = f64::from(self.mean) + weight_for(dt, 86_400.0) * (x - f64::from(self.mean));
        self.mean = mean as f32;
        // Each hour slot is visited 1/24 of the time: a half-life of about
        // half a day of its own visits; each day slot about a week of its own.
        let wh = weight_for(dt * 24.0, 43_200.0);
        let wd = weight_for(dt * 7.0, 7.0 * 86_400.0);
        let hour_now = f64::from(self.hour.get(h).copied().unwrap_or(0.0));
        let day_now = f64::from(self.day.get(d).copied().unwrap_or(0.0));
        if let Some(slot) = self.hour.get_mut(h) {
            *slot = (hour_now + wh * (x - mean - day_now - hour_now)) as f32;
        }
        if let Some(slot) = self.day.get_mut(d) {
            *slot = (day_now + wd * (x - mean - hour_now - day_now)) as f32;
        }
        self.seen_s = (f64::from(self.seen_s) + dt).min(1e9) as f32;
    }
}

/// What one observation did to a track.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Step {
    /// Standardized residual against the expected value.
    pub z: f64,
    /// The sequential statistic after this observation (max over the sides
    /// the direction rules count, and the drift statistic scaled to it).
    pub statistic: f64,
    /// Whether a level shift was adopted on this observation.
    pub level_shift: bool,
}

/// One signal's robust baseline, challenger, drift horizon and CUSUMs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    level: f64,
    var: f32,
    challenger: f32,
    /// Challenger position when the current candidate shift started.
    anchor: f32,
    /// Seconds the current candidate shift has been stable.
    held_s: f32,
    /// Observations the current candidate shift has been stable.
    held_n: u32,
    long: f32,
    prior: f32,
    /// Seconds the prior level is still remembered.
    prior_s: f32,
    up: f32,
    down: f32,
    /// Lag-1 autocorrelation of the standardized residuals (EWMA).
    rho: f32,
    /// The previous standardized residual (clipped).
    prev_z: f32,
    /// Seconds of history learned (warm-up).
    history_s: f32,
    /// Observations learned (warm-up needs a few even with long dt).
    updates: u32,
    shifts: u32,
    season: Option<Box<Season>>,
}

/// The parameters a track reads from the model, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct TrackParams {
    /// Half-life of the primary baseline.
    pub half_life_s: f64,
    /// Seconds of history before the track judges.
    pub warmup_s: f64,
    /// Seconds a shifted level must hold before adoption.
    pub hold_s: f64,
    /// Half-life of the drift horizon.
    pub drift_horizon_s: f64,
    /// Drift statistic (spreads) for warn.
    pub drift_z: f64,
    /// CUSUM reference.
    pub k: f64,
    /// CUSUM limit for warn.
    pub h_warn: f64,
    /// CUSUM limit for critical.
    pub h_critical: f64,
    /// Seasonal profile used after this much history.
    pub season_min_history_s: f64,
    /// Largest standardized innovation one observation adds to a CUSUM
    /// ([`Z_CAP`]; [`RATE_Z_CAP`] for the request rate).
    pub z_cap: f64,
}

impl TrackParams {
    /// The track parameters of `model`.
    pub fn from_model(model: &Model) -> Self {
        TrackParams {
            half_life_s: model.baseline_half_life_s,
            warmup_s: model.warmup_s,
            hold_s: model.shift_hold_s,
            drift_horizon_s: model.drift_horizon_s,
            drift_z: model.drift_z,
            k: model.self_cusum_k,
            h_warn: model.self_warn,
            h_critical: model.self_critical,
            season_min_history_s: model.season_min_history_s,
            z_cap: Z_CAP,
        }
    }
}

/// Minimum observations before a track judges, whatever the warm-up time.
const MIN_UPDATES: u32 = 8;

impl Track {
    /// A track; `seasonal` adds the hour-of-day / day-of-week profile.
    pub fn new(seasonal: bool) -> Self {
        Track {
            season: seasonal.then(Box::default),
            ..Track::default()
        }
    }

    /// Add the seasonal profile if the track has none (allocated only for
    /// series that have a wall clock: 136 bytes).
    pub fn ensure_season(&mut self) {
        if self.season.is_none() {
            self.season = Some(Box::default());
        }
    }

    /// Heap bytes held (the seasonal profile, when present).
    pub fn heap_bytes(&self) -> usize {
        self.season
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<Season>())
    }

    /// Whether the warm-up is over.
    pub fn ready(&self, p: &TrackParams) -> bool {
        self.updates >= MIN_UPDATES && f64::from(self.history_s) >= p.warmup_s
    }

    /// Level-shift events adopted so far.
    pub fn level_shifts(&self) -> u32 {
        self.shifts
    }

    /// Observations learned so far.
    pub fn updates(&self) -> u32 {
        self.updates
    }

    /// Baseline level (without the seasonal offset).
    pub fn level(&self) -> f64 {
        self.level
    }

    /// Expected value at `unix_s` (level plus the seasonal offset).
    pub fn expected(&self, p: &TrackParams, unix_s: Option<f64>) -> f64 {
        let season = match (&self.season, unix_s) {
            (Some(s), Some(t)) => s.offset(t, p.season_min_history_s),
            _ => 0.0,
        };
        self.level + season
    }

    /// Learned spread (standard deviation of the residual).
    pub fn spread(&self) -> f64 {
        f64::from(self.var).max(0.0).sqrt()
    }

    /// The current sequential statistic for `dir` (no update).
    pub fn statistic(&self, dir: Direction, p: &TrackParams, floor_sd: f64) -> f64 {
        let sd = self.spread().max(floor_sd).max(1e-12);
        // The drift statistic, scaled so `drift_z` spreads reads as warn,
        // is capped at the critical limit: a drift can make a series
        // critical, but never outranks a sharp anomaly.
        let scale = if p.drift_z > 0.0 {
            p.h_warn / p.drift_z
        } else {
            0.0
        };
        let drift =
            ((self.level - f64::from(self.long)) / sd * scale).clamp(-p.h_critical, p.h_critical);
        let scale = 1.0;
        let (up, down) = match dir {
            Direction::Up => (f64::from(self.up).max(drift * scale), 0.0),
            Direction::Down => (0.0, f64::from(self.down).max(-drift * scale)),
            Direction::Both => (
                f64::from(self.up).max(drift * scale),
                f64::from(self.down).max(-drift * scale),
            ),
        };
        let s = up.max(down).max(0.0);
        if s.is_finite() {
            s
        } else {
            0.0
        }
    }

    /// Learn `x` observed `dt_s` seconds after the previous observation and
    /// advance the sequential test. `floor_sd` is the smallest spread
    /// assumed (sampling noise of this observation: a Poisson or binomial
    /// floor, or a relative floor for log latency). `z_limit`, when given,
    /// caps this observation's contribution (immaterial deviations add at
    /// most `k`, i.e. nothing).
    // One call per observation on the hot path: plain arguments, no struct.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        x: f64,
        dt_s: f64,
        unix_s: Option<f64>,
        floor_sd: f64,
        dir: Direction,
        z_limit: Option<f64>,
        p: &TrackParams,
    ) -> Step {
        if !x.is_finite() {
            return Step::default();
        }
        let dt = if dt_s.is_finite() && dt_s > 0.0 {
            dt_s
        } else {
            1.0
        };
        let floor = if floor_sd.is_finite() {
            floor_sd.max(1e-9)
        } else {
            1e-9
        };
        let season_off = match (&self.season, unix_s) {
            (Some(s), Some(t)) => s.offset(t, p.season_min_history_s),
            _ => 0.0,
        };
        let was_ready = self.ready(p);
        if self.updates == 0 {
            self.level = x - season_off;
            self.var = 0.0;
            self.challenger = self.level as f32;
            self.anchor = self.challenger;
            self.long = self.challenger;
            self.prior = self.challenger;
        }
        let sd = self.spread().max(floor);
        let expected = self.level + season_off;
        let mut z = (x - expected) / sd;
        // A return to the level left behind by the last shift is no anomaly.
        if self.prior_s > 0.0 {
            let z_prior = (x - f64::from(self.prior) - season_off) / sd;
            if z_prior.abs() < z.abs() {
                z = z_prior;
            }
        }
        let mut step = Step {
            z,
            ..Step::default()
        };

        // Learning. While young: plain running moments (fast warm-up).
        let w = if self.updates < MIN_UPDATES || !was_ready {
            (1.0 / (f64::from(self.updates) + 1.0)).max(weight_for(dt, p.half_life_s))
        } else {
            weight_for(dt, p.half_life_s)
        };
        let resid = x - expected;
        let clip = if was_ready {
            CLIP_SD * sd
        } else {
            f64::INFINITY
        };
        let r = resid.clamp(-clip, clip);
        let new_level = self.level + w * r;
        let new_var = (1.0 - w) * (f64::from(self.var) + w * r * r);
        if new_level.is_finite() && new_var.is_finite() {
            self.level = new_level;
            self.var = new_var.max(0.0) as f32;
        }
        if let (Some(s), Some(t)) = (self.season.as_deref_mut(), unix_s) {
            s.learn(t, x, dt);
        }
        let wl = weight_for(dt, p.drift_horizon_s).max(if was_ready { 0.0 } else { w });
        let long = f64::from(self.long);
        self.long = (long + wl * (self.level - long)) as f32;
        let wc = weight_for(dt, p.hold_s / 8.0).max(w);
        let c = f64::from(self.challenger);
        self.challenger = (c + wc * (x - season_off - c)) as f32;
        self.history_s = (f64::from(self.history_s) + dt).min(1e12) as f32;
        self.updates = self.updates.saturating_add(1);
        self.prior_s = (f64::from(self.prior_s) - dt).max(0.0) as f32;

        if !was_ready {
            self.challenger = self.level as f32;
            self.anchor = self.challenger;
            self.long = self.level as f32;
            return step;
        }

        // Serial correlation: residuals of a real series come in runs (a
        // baseline lagging a daily curve, a coarse gauge). The CUSUMs run on
        // the AR(1) innovation `(z - rho z_prev) / sqrt(1 - rho^2)` (a
        // pre-whitened residual, unit variance when rho is right), so a run
        // of correlated residuals weighs what its new information is worth
        // while a spike or a fresh step stands out at once; rho learns
        // slowly, from clipped residuals.
        let zclip = z.clamp(-CLIP_SD, CLIP_SD);
        let wr = weight_for(dt, p.half_life_s);
        let prev = f64::from(self.prev_z);
        let rho_now = f64::from(self.rho);
        self.rho = (rho_now + wr * (zclip * prev - rho_now)).clamp(-1.0, 1.0) as f32;
        self.prev_z = zclip as f32;
        let r = rho_now.clamp(0.0, 0.95);
        let z = (z - r * prev) / (1.0 - r * r).sqrt();

        // The CUSUMs.
        let zc = z.clamp(-p.z_cap, p.z_cap);
        let (zu, zd) = match z_limit {
            Some(lim) => (zc.min(lim), zc.max(-lim)),
            None => (zc, zc),
        };
        // Capped at 3x the critical limit (the statistic keeps ranking how
        // anomalous, it does not saturate); above the critical limit, the
        // first observation at or below expectation brings it back to the
        // limit, so a recovered series leaves `critical` within a few
        // observations however large the excursion was.
        let cap = (CAP_TIMES * p.h_critical) as f32;
        let hc = p.h_critical as f32;
        self.up = ((f64::from(self.up) + zu - p.k).max(0.0) as f32).min(cap);
        self.down = ((f64::from(self.down) - zd - p.k).max(0.0) as f32).min(cap);
        if zu <= 0.0 && self.up > hc {
            self.up = hc;
        }
        if zd >= 0.0 && self.down > hc {
            self.down = hc;
        }
        if !matches!(dir, Direction::Up | Direction::Both) {
            self.up = 0.0;
        }
        if !matches!(dir, Direction::Down | Direction::Both) {
            self.down = 0.0;
        }

        // The challenger: adopted after a sustained, stable shift.
        let c = f64::from(self.challenger);
        let gap = (c - self.level) / sd;
        let alarmed = if gap > 0.0 { self.up } else { self.down };
        // A hold in progress continues while the gap is at least
        // SHIFT_ALARMED_SD, alarmed or not (hysteresis): the CUSUM of a
        // lasting step of a few spreads flickers around the critical limit on
        // serially correlated residuals, and each flicker restarted the hold.
        let min_gap = if self.held_n > 0 || f64::from(alarmed) >= p.h_critical {
            SHIFT_ALARMED_SD
        } else {
            SHIFT_MIN_SD
        };
        if gap.abs() >= min_gap {
            if (c - f64::from(self.anchor)).abs() <= self.stable_band(wc) * sd {
                self.held_s = (f64::from(self.held_s) + dt) as f32;
                self.held_n = self.held_n.saturating_add(1);
            } else {
                self.anchor = self.challenger;
                self.held_s = 0.0;
                self.held_n = 0;
            }
            if f64::from(self.held_s) >= p.hold_s && self.held_n >= SHIFT_MIN_OBS {
                let shift = c - self.level;
                let returning =
                    self.prior_s > 0.0 && (c - f64::from(self.prior)).abs() < PRIOR_MATCH_SD * sd;
                if returning {
                    // Back to the level known before the excursion: the
                    // excursion's level is not remembered as normal (a
                    // recurring surge stays an anomaly).
                    self.prior_s = 0.0;
                } else {
                    self.prior = self.level as f32;
                    self.prior_s = (4.0 * p.hold_s).max(p.drift_horizon_s) as f32;
                }
                self.level = c;
                self.long = (f64::from(self.long) + shift) as f32;
                self.up = 0.0;
                self.down = 0.0;
                self.held_s = 0.0;
                self.held_n = 0;
                self.anchor = self.challenger;
                self.shifts = self.shifts.saturating_add(1);
                step.level_shift = true;
            }
        } else {
            self.anchor = self.challenger;
            self.held_s = 0.0;
            self.held_n = 0;
        }
        step.statistic = self.statistic(dir, p, floor);
        step
    }

    /// How far (in spreads) the challenger may wander from its anchor and
    /// still count as stable: [`SHIFT_STABLE_SD`], widened to
    /// [`SHIFT_STABLE_NOISE`] times the challenger's own noise when the
    /// residuals are serially correlated (an EWMA of weight `wc` over AR(1)
    /// noise of unit variance has variance `wc/(2−wc)·(1+ρ)/(1−ρ)`), capped
    /// at [`SHIFT_STABLE_MAX_SD`] so a creep still moves out of it.
    fn stable_band(&self, wc: f64) -> f64 {
        let rho = f64::from(self.rho).clamp(0.0, 0.95);
        let noise = (wc / (2.0 - wc) * (1.0 + rho) / (1.0 - rho)).sqrt();
        (SHIFT_STABLE_NOISE * noise).clamp(SHIFT_STABLE_SD, SHIFT_STABLE_MAX_SD)
    }

    /// Bytes of [`Track::encode`].
    pub fn encoded_len(&self) -> usize {
        TRACK_BYTES + if self.season.is_some() { 33 * 4 } else { 0 }
    }

    /// Append the compact checkpoint of this track (little endian `f32`s).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let scalars = [
            self.level as f32,
            self.var,
            self.challenger,
            self.anchor,
            self.held_s,
            f32::from_bits(self.held_n),
            self.long,
            self.prior,
            self.prior_s,
            self.up,
            self.down,
            self.rho,
            self.prev_z,
            self.history_s,
            f32::from_bits(self.updates),
            f32::from_bits(self.shifts),
        ];
        for v in scalars {
            out.extend_from_slice(&v.to_le_bytes());
        }
        match &self.season {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                for v in s.hour.iter().chain(s.day.iter()) {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&s.seen_s.to_le_bytes());
                out.extend_from_slice(&s.mean.to_le_bytes());
            }
        }
    }

    /// Read a checkpoint written by [`Track::encode`] from the front of
    /// `bytes`; returns the track and the bytes consumed, `None` if short
    /// or not finite.
    pub fn decode(bytes: &[u8]) -> Option<(Track, usize)> {
        let mut pos = 0usize;
        let mut next = || -> Option<f32> {
            let b: [u8; 4] = bytes.get(pos..pos + 4)?.try_into().ok()?;
            pos += 4;
            Some(f32::from_le_bytes(b))
        };
        let mut s = [0f32; 16];
        for v in s.iter_mut() {
            *v = next()?;
        }
        let [level, var, challenger, anchor, held_s, held_n, long, prior, prior_s, up, down, rho, prev_z, history_s, updates, shifts] =
            s;
        let finite = [
            level, var, challenger, anchor, held_s, long, prior, prior_s, up, down, rho, prev_z,
            history_s,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !finite {
            return None;
        }
        let flag = *bytes.get(pos)?;
        pos += 1;
        let season = if flag == 1 {
            let mut season = Season::default();
            let read = |pos: &mut usize| -> Option<f32> {
                let b: [u8; 4] = bytes.get(*pos..*pos + 4)?.try_into().ok()?;
                *pos += 4;
                Some(f32::from_le_bytes(b)).filter(|v| v.is_finite())
            };
            for v in season.hour.iter_mut() {
                *v = read(&mut pos)?;
            }
            for v in season.day.iter_mut() {
                *v = read(&mut pos)?;
            }
            season.seen_s = read(&mut pos)?;
            season.mean = read(&mut pos)?;
            Some(Box::new(season))
        } else {
            None
        };
        Some((
            Track {
                level: f64::from(level),
                var,
                challenger,
                anchor,
                held_s,
                held_n: held_n.to_bits(),
                long,
                prior,
                prior_s,
                up,
                down,
                rho,
                prev_z,
                history_s,
                updates: updates.to_bits(),
                shifts: shifts.to_bits(),
                season,
            },
            pos,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::tests::Rng;

    fn params() -> TrackParams {
        TrackParams::from_model(&Model::default())
    }

    #[test]
    fn arl_of_the_defaults() {
        let m = Model::default();
        let crit = arl0(m.self_cusum_k, m.self_critical);
        let warn = arl0(m.self_cusum_k, m.self_warn);
        assert!(crit > 1e6, "{crit}");
        assert!(warn > 1e4, "{warn}");
        // Classic table value: k = 0.5, h = 5 -> ~930.
        assert!((arl0(0.5, 5.0) - 930.0).abs() < 30.0);
    }

    /// i.i.d. normal noise: no alarm in a long run; the measured run length
    /// agrees with the stated one in order of magnitude for a low limit.
    #[test]
    fn noise_is_quiet_and_arl_is_about_right() {
        let mut p = params();
        let mut rng = Rng::new(3);
        let mut t = Track::new(false);
        let mut max_stat: f64 = 0.0;
        for _ in 0..200_000 {
            let s = t.observe(
                10.0 + rng.normal(),
                1.0,
                None,
                1e-3,
                Direction::Both,
                None,
                &p,
            );
            max_stat = max_stat.max(s.statistic);
            assert!(!s.level_shift);
        }
        assert!(max_stat < p.h_critical, "{max_stat}");
        // Run length to h = 5 (ARL ~930 per side, ~465 two-sided).
        p.h_critical = 5.0;
        p.h_warn = 4.0;
        let mut alarms = 0u32;
        let mut t = Track::new(false);
        let n = 400_000u32;
        let mut armed = true;
        for _ in 0..n {
            let s = t.observe(rng.normal(), 1.0, None, 1e-3, Direction::Both, None, &p);
            if s.statistic >= 5.0 && armed {
                alarms += 1;
                armed = false;
                t.up = 0.0;
                t.down = 0.0;
            } else {
                armed = true;
            }
        }
        let measured = f64::from(n) / f64::from(alarms.max(1));
        let stated = arl0(0.5, 5.0) / 2.0;
        assert!(
            measured > stated * 0.5 && measured < stated * 2.0,
            "{measured} vs {stated}"
        );
    }

    #[test]
    fn step_is_detected_and_lasting_shift_is_adopted_once() {
        let p = params();
        let mut rng = Rng::new(4);
        let mut t = Track::new(false);
        for _ in 0..600 {
            t.observe(rng.normal(), 1.0, None, 1e-3, Direction::Up, None, &p);
        }
        let mut first = None;
        let mut shifts = 0;
        let mut last_alarm = 0;
        for i in 0..2_000u32 {
            let s = t.observe(8.0 + rng.normal(), 1.0, None, 1e-3, Direction::Up, None, &p);
            if s.statistic >= p.h_critical {
                first.get_or_insert(i);
                last_alarm = i;
            }
            shifts += u32::from(s.level_shift);
        }
        assert!(first.is_some_and(|i| i <= 2), "{first:?}");
        assert_eq!(shifts, 1);
        // Adoption: the challenger settles (half-life hold_s / 8), then holds.
        assert!(f64::from(last_alarm) <= p.hold_s * 1.6, "{last_alarm}");
        assert_eq!(t.level_shifts(), 1);
        // Back to the old level: a return to the prior is not an alarm.
        for _ in 0..30 {
            let s = t.observe(rng.normal(), 1.0, None, 1e-3, Direction::Up, None, &p);
            assert!(s.statistic < p.h_warn, "{s:?}");
        }
    }

    /// A lasting step of only 2.5 spreads (above the CUSUM's reach, below
    /// [`SHIFT_MIN_SD`]) alarms, is adopted once within the documented
    /// adoption time, and then the series is quiet: it does not stay in
    /// alarm (what a +40 % latency step on a noisy machine did in real Envoy).
    #[test]
    fn small_lasting_step_that_alarms_is_adopted() {
        let p = params();
        let mut rng = Rng::new(41);
        let mut t = Track::new(false);
        // Blocks of 3 s, as the self judge sees them at 1 s ticks.
        for _ in 0..400 {
            t.observe(rng.normal(), 3.0, None, 1e-3, Direction::Up, None, &p);
        }
        let (mut shifts, mut first, mut last) = (0u32, None, 0.0f64);
        for i in 0..200u32 {
            let s = t.observe(2.5 + rng.normal(), 3.0, None, 1e-3, Direction::Up, None, &p);
            let at = f64::from(i + 1) * 3.0;
            if s.statistic >= p.h_warn {
                first.get_or_insert(at);
                last = at;
            }
            shifts += u32::from(s.level_shift);
        }
        assert!(first.is_some(), "the step never alarmed");
        assert_eq!(shifts, 1, "level_shift events");
        assert!(last <= 1.6 * p.hold_s, "still alarmed at {last} s");
    }

    /// Issue 11 (the intermittent `surge_collapse_shift_and_creep` failure):
    /// on serially correlated residuals (AR(1), ρ = 0.5, as block quantiles
    /// are) a lasting step of 3–4 spreads alarms, and is adopted once
    /// within twice the hold. Before, the CUSUM of such a step flickered
    /// around the critical limit, each flicker raised the gap a hold needs
    /// from [`SHIFT_ALARMED_SD`] to [`SHIFT_MIN_SD`] and restarted it, and
    /// the challenger's own noise left the fixed stability band: 121 of 200
    /// seeds at 3 spreads were never adopted in 600 s (still alarmed).
    #[test]
    fn issue_11_correlated_lasting_step_is_adopted_within_twice_the_hold() {
        let p = params();
        let rho: f64 = 0.5;
        let innovation_sd = (1.0 - rho * rho).sqrt();
        for step in [3.0, 3.4, 4.0] {
            for seed in 0..40 {
                let mut rng = Rng::new(1000 + seed);
                let mut t = Track::new(false);
                let mut e = 0.0;
                for _ in 0..1200 {
                    e = rho * e + innovation_sd * rng.normal();
                    t.observe(e, 3.0, None, 1e-3, Direction::Up, None, &p);
                }
                let (mut alarmed, mut adopted, mut shifts) = (false, None, 0u32);
                for i in 0..200u32 {
                    e = rho * e + innovation_sd * rng.normal();
                    let s = t.observe(step + e, 3.0, None, 1e-3, Direction::Up, None, &p);
                    alarmed |= s.statistic >= p.h_critical;
                    if s.level_shift {
                        shifts += 1;
                        adopted.get_or_insert(f64::from(i + 1) * 3.0);
                    }
                }
                assert!(alarmed, "step {step} seed {seed}: never alarmed");
                assert_eq!(shifts, 1, "step {step} seed {seed}: level_shift events");
                assert!(
                    adopted.is_some_and(|a| a <= 2.0 * p.hold_s),
                    "step {step} seed {seed}: adopted after {adopted:?} s"
                );
            }
        }
    }

    #[test]
    fn outliers_are_clipped_and_bursts_teach_the_spread() {
        let p = params();
        let mut rng = Rng::new(5);
        let mut t = Track::new(false);
        for i in 0..5_000u32 {
            // Bursty: every 15 s, 5 s at +6.
            let burst = if i % 15 < 5 { 6.0 } else { 0.0 };
            t.observe(
                burst + rng.normal(),
                1.0,
                None,
                1e-3,
                Direction::Both,
                None,
                &p,
            );
        }
        assert!(t.spread() > 2.0, "{}", t.spread());
        // One huge outlier moves the level by a bounded step.
        let before = t.level();
        t.observe(1e6, 1.0, None, 1e-3, Direction::Both, None, &p);
        assert!((t.level() - before).abs() <= CLIP_SD * t.spread());
    }

    #[test]
    fn slow_drift_is_caught_against_the_long_horizon() {
        let p = params();
        let mut rng = Rng::new(6);
        let mut t = Track::new(false);
        for _ in 0..3_600 {
            t.observe(rng.normal() * 0.1, 1.0, None, 1e-3, Direction::Up, None, &p);
        }
        let mut caught = None;
        for i in 0..20_000u32 {
            let x = f64::from(i) * 0.001 + rng.normal() * 0.1;
            let s = t.observe(x, 1.0, None, 1e-3, Direction::Up, None, &p);
            if s.statistic >= p.h_warn {
                caught = Some(i);
                break;
            }
        }
        assert!(caught.is_some(), "a drift of 1 sd per 100 s was absorbed");
    }

    #[test]
    fn same_shape_at_any_tick_length() {
        // The same process sampled at 1 s and at 10 s: the warm-up and the
        // adoption take the same time.
        let p = params();
        for dt in [1.0, 10.0] {
            let mut t = Track::new(false);
            let mut rng = Rng::new(7);
            let mut now = 0.0;
            while !t.ready(&p) {
                t.observe(rng.normal(), dt, None, 1e-3, Direction::Up, None, &p);
                now += dt;
            }
            assert!(now >= p.warmup_s && now <= p.warmup_s + dt + 8.0 * dt);
            for _ in 0..(1_000.0 / dt) as u32 {
                t.observe(rng.normal(), dt, None, 1e-3, Direction::Up, None, &p);
            }
            let mut adopted = None;
            let mut s_t = 0.0;
            while adopted.is_none() && s_t < 10_000.0 {
                let s = t.observe(10.0 + rng.normal(), dt, None, 1e-3, Direction::Up, None, &p);
                s_t += dt;
                if s.level_shift {
                    adopted = Some(s_t);
                }
            }
            let a = adopted.unwrap_or(f64::INFINITY);
            assert!(a >= p.hold_s && a <= p.hold_s * 1.6 + dt, "dt {dt}: {a}");
        }
    }

    #[test]
    fn seasonal_shape_is_learned() {
        let p = params();
        let mut t = Track::new(true);
        let mut rng = Rng::new(8);
        let day = 86_400.0;
        let shape = |s: f64| (2.0 * std::f64::consts::PI * s / day).sin();
        let mut s = 0.0;
        let mut last_days_max: f64 = 0.0;
        while s < 10.0 * day {
            let step = t.observe(
                shape(s) + 0.05 * rng.normal(),
                60.0,
                Some(s),
                1e-3,
                Direction::Both,
                None,
                &p,
            );
            if s > 8.0 * day {
                last_days_max = last_days_max.max(step.statistic);
            }
            s += 60.0;
        }
        assert!(last_days_max < p.h_warn, "{last_days_max}");
        assert!(t.spread() < 0.3, "{}", t.spread());
    }

    #[test]
    fn encode_decode_round_trip() {
        let p = params();
        let mut rng = Rng::new(9);
        for seasonal in [false, true] {
            let mut t = Track::new(seasonal);
            for i in 0..500 {
                t.observe(
                    rng.normal(),
                    1.0,
                    Some(f64::from(i)),
                    1e-3,
                    Direction::Both,
                    None,
                    &p,
                );
            }
            let mut buf = Vec::new();
            t.encode(&mut buf);
            assert_eq!(buf.len(), t.encoded_len());
            let (back, used) = Track::decode(&buf).unwrap();
            assert_eq!(used, buf.len());
            assert_eq!(back.updates(), t.updates());
            assert!((back.level() - t.level()).abs() < 1e-5);
            assert!(Track::decode(&buf[..buf.len() - 1]).is_none());
        }
    }
}
