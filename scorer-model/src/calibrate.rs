//! Self-calibration of the self path's alarm limit to a target alarm rate.
//!
//! Why this exists: the self CUSUM's stated run length
//! ([`crate::selfbase::arl0`]) holds for i.i.d. normal residuals. Real
//! operational series are not that: replayed on real labelled corpora, the
//! one compiled-in limit raised 3.5 alarms a day on heavy-tailed service
//! metrics and caught almost nothing on smooth KPIs — the limit that worked
//! differed about ×30 between corpora. A limit that means the same on every
//! series has to be learned from the series itself.
//!
//! [`Calibration`] watches the raw statistic of one judged series (the
//! largest over its signals) and counts, with exponential forgetting
//! (half-life `self_calibration_half_life_s`), the alarm **episodes**
//! (rising edges) it would have raised at each level of a ladder
//! `self_critical × 2^((j − 6)/2)`, j = 0..12 (×0.125 … ×5.66). The limit
//! in use is the lowest rung whose estimated episode rate is at most
//! `self_alarms_per_day`:
//!
//! - rate of rung j = (episodes_j + prior_j) / max(days seen, PRIOR / target),
//!   where `prior_j = PRIOR_ALARMS` (1) below the compiled-in limit and 0 at
//!   or above it. So a young series judges at the stated limit (its ARL
//!   holds); the limit rises only after more than `MIN_RAISE_EPISODES` (3)
//!   episodes, and more than `PRIOR_ALARMS` per `PRIOR_ALARMS / target` days (4 days at the default 0.25), and falls below the stated limit only once
//!   that long a history shows the lower rung would have stayed within the
//!   target.
//! - Every episode counts, true incidents included: the calibration bounds
//!   the series' **total** alarm rate, so its false-alarm rate is at most the
//!   target (estimated, with the lag of the forgetting).
//!
//! - **Between rungs**: a ladder step is ×√2, and on smooth series the
//!   episode rate can fall ×5 from one rung to the next (0.30 → 0.06 a day
//!   on a real network-egress KPI), so judging at the accepted rung left
//!   the series at a fraction of its target. The multiplier in use is
//!   interpolated log-linearly between the rejected rung below (rate
//!   `r_lo` > target) and the accepted rung (rate `r_hi` ≤ target, floored
//!   at half an episode over the days seen): `m = m_lo · √2^f`,
//!   `f = ln(r_lo / target) / ln(r_lo / r_hi)`, the limit at which the
//!   estimated rate meets the target if the rate falls geometrically
//!   between rungs. It is never below the rejected rung nor above the
//!   accepted one, so every statement above still holds rung-wise. Replayed
//!   on the real corpora (`vigil-model eval --corpus`) this raised the F1 at
//!   the default limit on all three (estimates, see `scorer-model/README.md`).
//!
//! The score handed to the decision is `raw / m`, so `self_warn` /
//! `self_critical` keep their meaning on the calibrated scale.
//! `self_alarms_per_day = 0` switches calibration off (`m = 1`). State: 12
//! `f32` counts, the seconds seen, the edge bits, the rung and the
//! multiplier: 59 bytes, checkpointed with the self judge.

/// Rungs of the ladder.
pub const LEVELS: usize = 12;
/// The rung whose multiplier is 1 (the stated limit).
pub const BASE: usize = 6;
/// Episodes assumed below the stated limit before the history has shown
/// otherwise (and the minimum history, in units of `1 / target` days).
pub const PRIOR_ALARMS: f64 = 1.0;
/// Episodes a rung at or above the stated limit may count, whatever the
/// time seen, before it can be rejected: a young series (a test, a fresh
/// deployment) keeps the stated limit through its first few incidents.
pub const MIN_RAISE_EPISODES: f64 = 3.0;
/// Bytes of [`Calibration::encode`].
pub const ENCODED_BYTES: usize = LEVELS * 4 + 4 + 2 + 1 + 4;

/// Multiplier of rung `j` of the ladder.
pub fn multiplier(j: usize) -> f64 {
    ((j as f64 - BASE as f64) / 2.0).exp2()
}

/// Per-series calibration state (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Forgetting-weighted episodes per rung.
    counts: [f32; LEVELS],
    /// Forgetting-weighted seconds observed.
    seen_s: f32,
    /// Bit j: the raw statistic was at or above rung j at the last update.
    above: u16,
    /// Accepted rung (the lowest whose rate meets the target).
    rung: u8,
    /// Multiplier in use: between the rung below and `rung`'s.
    mult: f32,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            counts: [0.0; LEVELS],
            seen_s: 0.0,
            above: 0,
            rung: BASE as u8,
            mult: 1.0,
        }
    }
}

/// The calibration parameters, from the model.
#[derive(Debug, Clone, Copy)]
pub struct CalibrationParams {
    /// Target alarm episodes per day per series (0: off).
    pub alarms_per_day: f64,
    /// Half-life of the episode counts, seconds.
    pub half_life_s: f64,
    /// The stated critical limit (rung [`BASE`]).
    pub critical: f64,
}

impl CalibrationParams {
    /// The parameters of `model`.
    pub fn from_model(model: &crate::model::Model) -> Self {
        CalibrationParams {
            alarms_per_day: model.self_alarms_per_day,
            half_life_s: model.self_calibration_half_life_s,
            critical: model.self_critical,
        }
    }
}

impl Calibration {
    /// The multiplier in use: a raw statistic `s` reads as `s / m`.
    pub fn multiplier(&self) -> f64 {
        f64::from(self.mult)
    }

    /// Days of (forgetting-weighted) history.
    pub fn days_seen(&self) -> f64 {
        f64::from(self.seen_s) / 86_400.0
    }

    /// Estimated episodes per day at each rung (forgetting-weighted counts
    /// over the forgetting-weighted days seen, no prior): for reports.
    pub fn rates_per_day(&self) -> [f64; LEVELS] {
        let days = self.days_seen().max(1e-9);
        let mut out = [0.0; LEVELS];
        for (o, c) in out.iter_mut().zip(&self.counts) {
            *o = f64::from(*c) / days;
        }
        out
    }

    /// Learn the raw statistic `raw` of an observation `dt_s` seconds after
    /// the previous one; returns the multiplier to judge this observation
    /// with (the one in use before it, so an observation never calibrates
    /// itself away).
    pub fn observe(&mut self, raw: f64, dt_s: f64, p: &CalibrationParams) -> f64 {
        let m = self.multiplier();
        let on = p.alarms_per_day > 0.0;
        let usable = raw.is_finite() && dt_s.is_finite() && dt_s > 0.0;
        if !on || !usable {
            return if on { m } else { 1.0 };
        }
        let keep = if p.half_life_s > 0.0 {
            (-dt_s / p.half_life_s).exp2()
        } else {
            0.0
        };
        self.seen_s = (f64::from(self.seen_s) * keep + dt_s).min(1e12) as f32;
        let mut above = 0u16;
        for (j, c) in self.counts.iter_mut().enumerate() {
            let bit = 1u16 << j;
            let now = raw >= p.critical * multiplier(j);
            let edge = now && self.above & bit == 0;
            if now {
                above |= bit;
            }
            *c = (f64::from(*c) * keep + if edge { 1.0 } else { 0.0 }) as f32;
        }
        self.above = above;
        let rung = self.choose(p);
        self.rung = rung as u8;
        self.mult = self.between(rung, p) as f32;
        m
    }

    /// The lowest rung whose estimated episode rate meets the target.
    fn choose(&self, p: &CalibrationParams) -> usize {
        let min_days = PRIOR_ALARMS / p.alarms_per_day;
        let days = self.days_seen().max(min_days);
        for (j, c) in self.counts.iter().enumerate() {
            let prior = if j < BASE { PRIOR_ALARMS } else { 0.0 };
            let history_ok = j >= BASE || self.days_seen() >= min_days;
            let few = j >= BASE && f64::from(*c) <= MIN_RAISE_EPISODES;
            if few || (history_ok && (f64::from(*c) + prior) / days <= p.alarms_per_day) {
                return j;
            }
        }
        LEVELS - 1
    }

    /// Estimated episodes per day of rung `j`, with its prior.
    fn rate(&self, j: usize, p: &CalibrationParams) -> f64 {
        let min_days = PRIOR_ALARMS / p.alarms_per_day;
        let days = self.days_seen().max(min_days);
        let prior = if j < BASE { PRIOR_ALARMS } else { 0.0 };
        (f64::from(self.counts.get(j).copied().unwrap_or(0.0)) + prior) / days
    }

    /// The multiplier between the accepted rung `j` and the rung below it,
    /// when that one was rejected for its rate (see the module docs).
    fn between(&self, j: usize, p: &CalibrationParams) -> f64 {
        let m_hi = multiplier(j);
        let Some(lo) = j.checked_sub(1) else {
            return m_hi;
        };
        let min_days = PRIOR_ALARMS / p.alarms_per_day;
        let history_ok = lo >= BASE || self.days_seen() >= min_days;
        let target = p.alarms_per_day;
        let r_lo = self.rate(lo, p);
        if !history_ok || r_lo <= target {
            // Rejected for too little history (or young, kept by the
            // "few episodes" rule): the accepted rung exactly.
            return m_hi;
        }
        let days = self.days_seen().max(min_days);
        let r_hi = self.rate(j, p).max(0.5 / days).min(target);
        let f = if r_lo > r_hi {
            ((r_lo / target).ln() / (r_lo / r_hi).ln()).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let m_lo = multiplier(lo);
        let m = m_lo * (m_hi / m_lo).powf(f);
        if m.is_finite() {
            m.clamp(m_lo, m_hi)
        } else {
            m_hi
        }
    }

    /// Append the checkpoint ([`ENCODED_BYTES`] bytes, little endian).
    pub fn encode(&self, out: &mut Vec<u8>) {
        for c in &self.counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out.extend_from_slice(&self.seen_s.to_le_bytes());
        out.extend_from_slice(&self.above.to_le_bytes());
        out.push(self.rung);
        out.extend_from_slice(&self.mult.to_le_bytes());
    }

    /// Read a checkpoint from the front of `bytes`; `None` when short or
    /// out of range.
    pub fn decode(bytes: &[u8]) -> Option<(Calibration, usize)> {
        let mut pos = 0usize;
        let mut f = || -> Option<f32> {
            let b: [u8; 4] = bytes.get(pos..pos + 4)?.try_into().ok()?;
            pos += 4;
            Some(f32::from_le_bytes(b)).filter(|v| v.is_finite() && *v >= 0.0)
        };
        let mut counts = [0f32; LEVELS];
        for c in counts.iter_mut() {
            *c = f()?;
        }
        let seen_s = f()?;
        let b: [u8; 2] = bytes.get(pos..pos + 2)?.try_into().ok()?;
        let above = u16::from_le_bytes(b);
        let rung = *bytes.get(pos + 2)?;
        if usize::from(rung) >= LEVELS {
            return None;
        }
        let pos = pos + 3;
        let b: [u8; 4] = bytes.get(pos..pos + 4)?.try_into().ok()?;
        let mult = f32::from_le_bytes(b);
        let r = usize::from(rung);
        let lo = multiplier(r.saturating_sub(1)) as f32;
        if !(mult.is_finite() && mult >= lo && mult <= multiplier(r) as f32) {
            return None;
        }
        Some((
            Calibration {
                counts,
                seen_s,
                above,
                rung,
                mult,
            },
            pos + 4,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(target: f64) -> CalibrationParams {
        CalibrationParams {
            alarms_per_day: target,
            half_life_s: 30.0 * 86_400.0,
            critical: 14.0,
        }
    }

    /// A statistic that crosses 14 once an hour is too loud for 0.2/day:
    /// the limit rises until the episodes it would raise meet the target.
    #[test]
    fn a_loud_series_raises_its_limit() {
        let p = params(0.2);
        let mut c = Calibration::default();
        let mut alarms_late = 0u32;
        let mut prev = 0.0;
        for i in 0..(60 * 288u32) {
            // 5-min rows; a spike of 20..40 every 12 rows.
            let raw = if i % 12 == 0 {
                20.0 + f64::from(i % 5) * 5.0
            } else {
                0.0
            };
            let m = c.observe(raw, 300.0, &p);
            let s = raw / m;
            if i > 30 * 288 && s >= 14.0 && prev < 14.0 {
                alarms_late += 1;
            }
            prev = s;
        }
        assert!(c.multiplier() > 2.0, "{}", c.multiplier());
        assert!(alarms_late <= 12, "{alarms_late}");
    }

    /// A quiet series keeps the stated limit while young and lowers it once
    /// a long enough history shows the lower rung within the target.
    #[test]
    fn a_quiet_series_lowers_its_limit_only_with_history() {
        let p = params(0.2);
        let mut c = Calibration::default();
        for _ in 0..(4 * 288) {
            assert_eq!(c.observe(1.0, 300.0, &p), 1.0);
        }
        for _ in 0..(30 * 288) {
            c.observe(1.0, 300.0, &p);
        }
        assert!(c.multiplier() < 0.2, "{}", c.multiplier());
        // Off: always 1.
        let mut off = Calibration::default();
        for _ in 0..(30 * 288) {
            assert_eq!(off.observe(100.0, 300.0, &params(0.0)), 1.0);
        }
    }

    /// A young series (a test, a fresh deployment) keeps the stated limit
    /// through its first three incidents; a fourth in the same hour raises
    /// it above the rung the incidents (raw 30 = 2.14 x 14) reached (x2),
    /// at most to the first rung they never reached (x2.83).
    #[test]
    fn a_young_series_keeps_the_stated_limit_for_three_episodes() {
        let p = params(0.25);
        let mut c = Calibration::default();
        for episode in 0..4 {
            for i in 0..60 {
                let raw = if i < 10 { 30.0 } else { 0.0 };
                c.observe(raw, 1.0, &p);
            }
            let m = c.multiplier();
            if episode < 3 {
                assert!((m - 1.0).abs() < 1e-9, "{episode}: {m}");
            } else {
                assert!(m > 2.0 && m <= 2.0 * 2f64.sqrt() + 1e-6, "{m}");
                // 30 / m < 14: the fifth such incident would not alarm.
                assert!(30.0 / m < 14.0, "{m}");
            }
        }
    }

    /// Between rungs: a series whose episode rate falls steeply from one
    /// rung to the next judges between them, at a limit whose estimated
    /// rate meets the target, instead of at the quiet upper rung.
    #[test]
    fn the_limit_is_interpolated_between_rungs() {
        let p = params(0.25);
        let mut c = Calibration::default();
        // 40 days of 5-min rows: one spike a day reaching raw 1.9 (above
        // rung 0 = 1.75, below rung 1 = 2.47), otherwise quiet, plus one
        // spike of 3 every 8 days.
        let mut in_between = 0u32;
        for i in 0..(40 * 288u32) {
            let raw = if i % (8 * 288) == 100 {
                3.0
            } else if i % 288 == 100 {
                1.9
            } else {
                0.0
            };
            c.observe(raw, 300.0, &p);
            let (lo, hi) = (multiplier(0), multiplier(1));
            let m = c.multiplier();
            assert!(m >= lo - 1e-6 && m <= 6.0, "{m}");
            if i > 30 * 288 && m > lo + 1e-6 && m < hi - 1e-6 {
                in_between += 1;
            }
        }
        // Rung 0 (1.75) sees a day's spike: ~1/day, rejected; rung 1 sees
        // one in 8 days: accepted. The multiplier sits strictly between.
        assert_eq!(usize::from(c.rung), 1);
        assert!(in_between > 0, "{}", c.multiplier());
        let m = c.multiplier();
        // f = ln(r_lo / 0.25) / ln(r_lo / r_hi) with r_lo ~ 1, r_hi ~ 0.15.
        assert!(m > multiplier(0) * 1.2 && m < multiplier(1), "{m}");
    }

    #[test]
    fn round_trip() {
        let p = params(0.2);
        let mut c = Calibration::default();
        for i in 0..5000u32 {
            c.observe(f64::from(i % 97) / 3.0, 60.0, &p);
        }
        let mut buf = Vec::new();
        c.encode(&mut buf);
        assert_eq!(buf.len(), ENCODED_BYTES);
        let (back, used) = Calibration::decode(&buf).unwrap();
        assert_eq!(used, ENCODED_BYTES);
        assert_eq!(back, c);
        assert!(Calibration::decode(&buf[..buf.len() - 1]).is_none());
    }
}
