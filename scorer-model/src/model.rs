//! Scorer parameters as a versioned JSON document.
//!
//! Why this exists: every threshold the scorer uses (window sizes, z limits,
//! minimum evidence) is a product decision an operator may need to tune per
//! mesh, and the same numbers must be used by the wasm filter, the control
//! service and the offline tools. They therefore live in one small,
//! versioned, strictly validated document instead of constants. The filter
//! embeds it as the `model` object of its plugin configuration.
//!
//! Strictness: unknown fields are rejected (a typo must not silently fall
//! back to a default), missing fields take the compiled-in default, and every
//! value is range-checked by [`Model::validate`]. Errors name the field, e.g.
//! `model.z_critical: must be a finite number > z_warn, got 1`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of the model document this code understands. Bumped when the
/// meaning of a field changes (adding a defaulted field does not bump it).
pub const MODEL_VERSION: u32 = 2;

/// Fields of model version 1 that version 2 replaced by time-based ones,
/// with the replacement: a document carrying one is refused with the field
/// named (its meaning depended on the tick length, so it cannot be migrated
/// silently). A version-1 document without them is accepted as is.
pub const REMOVED_FIELDS: &[(&str, &str)] = &[
    (
        "baseline_alpha",
        "removed in model version 2 (memories are in seconds now): use baseline_half_life_s; \
         a per-tick weight a at tick length T s is a half-life of T * ln(0.5) / ln(1 - a) s",
    ),
    (
        "warmup_ticks",
        "removed in model version 2 (memories are in seconds now): use warmup_s \
         (warm-up ticks times the tick length in seconds)",
    ),
];

/// Largest accepted `window_ticks` (bounds the per-series ring memory).
pub const MAX_WINDOW_TICKS: u32 = 3_600;

/// Scorer parameters. See the field docs for what each one decides.
///
/// `Model::default()` is the compiled-in default model. Deserialising fills
/// missing fields from it and rejects unknown fields; always go through
/// [`Model::from_json`] / [`Model::from_json_value`] (which also validate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Model {
    /// Model document version; must equal [`MODEL_VERSION`].
    pub version: u32,
    /// Rolling window, in ticks, of the reference: the stable peer is judged
    /// on this many ticks. Default 10.
    pub window_ticks: u32,
    /// Short window, in ticks, the judged series (the canary, or the series
    /// against its own baseline) is evaluated on. Must be `<= window_ticks`.
    /// Default 3.
    pub recent_ticks: u32,
    /// Requests the judged series needs in its recent window for any verdict
    /// other than `insufficient_data`. Default 20.
    pub min_requests: u64,
    /// Requests the stable peer needs in its full window to serve as a
    /// reference. Default 50.
    pub min_requests_ref: u64,
    /// Test statistic (z, one-sided) from which a series is `warn`. Default 3.0.
    pub z_warn: f64,
    /// Test statistic from which a series may be `critical` (the minimum
    /// evidence rules must hold too). Must be `> z_warn`. Default 5.0.
    pub z_critical: f64,
    /// Absolute excess of the error (or reset) ratio over the reference
    /// needed for `critical`, 0–1. Default 0.03 (3 percentage points).
    pub min_error_diff: f64,
    /// Bad events (errors, resets, or requests slower than the reference
    /// quantile) the judged series needs in its recent window for
    /// `critical`. Default 5.
    pub min_bad_events: u64,
    /// Quantile of the reference latency used as the "slow" threshold and
    /// compared between series, in (0, 1). Default 0.95 (p95).
    pub latency_quantile: f64,
    /// Share of the judged series' recent requests above the reference
    /// quantile needed for a latency `critical`, 0–1. Default 0.25.
    pub min_latency_share: f64,
    /// Relative increase of the judged quantile over the reference quantile
    /// needed for a latency `critical` (0.2 = +20 %). Default 0.2.
    pub min_latency_increase: f64,
    /// Absolute increase of the judged quantile over the reference quantile,
    /// in milliseconds, needed for a latency `critical`. Default 5.0.
    pub min_latency_increase_ms: f64,
    /// Half-life of the self-baseline's level and spread, **seconds**
    /// (independent of the tick length). Default 1800 (30 min).
    pub baseline_half_life_s: f64,
    /// Seconds of learned history (ticks with enough traffic) before the
    /// self-baseline is trusted; until then self-scoring says
    /// `insufficient_data`. Default 120.
    pub warmup_s: f64,
    /// Seconds a shifted level must hold, stable, before the always-learning
    /// challenger baseline is adopted (one `level_shift` event). An alarm
    /// caused by a lasting shift ends within about this long. Default 120.
    pub shift_hold_s: f64,
    /// Half-life, seconds, of the long horizon the slow-drift check compares
    /// the baseline with. Default 21600 (6 h).
    pub drift_horizon_s: f64,
    /// Distance, in spreads, of the baseline from the long horizon (in a
    /// bad direction) that reads as `warn`; about 1.56x this is `critical`.
    /// Default 6.
    pub drift_z: f64,
    /// Reference `k` of the self CUSUMs on standardized residuals (half the
    /// shift, in spreads, they are tuned to). Default 0.5.
    pub self_cusum_k: f64,
    /// Self CUSUM limit for `warn` (score 400). Default 9 (ARL to a false
    /// warn ~5·10^4 observations per side on i.i.d. normal residuals).
    pub self_warn: f64,
    /// Self CUSUM limit for `critical` (score 700). Default 14 (ARL ~8·10^6
    /// observations per side). Must be `> self_warn`.
    pub self_critical: f64,
    /// Target alarm episodes per day of one self-judged series: the self
    /// path calibrates its limits on the series' own history
    /// ([`crate::calibrate`]) so that the episodes it would raise at
    /// `self_critical` meet this rate (true incidents included, so false
    /// alarms stay below it). A young series judges at the stated limits
    /// until `1 / self_alarms_per_day` days of history. 0 disables the
    /// calibration (the limits are then the stated CUSUM limits). Default
    /// 0.25 (chosen on the tuning half of one real corpus, see
    /// `scorer-model/README.md`, "Real data").
    pub self_alarms_per_day: f64,
    /// Half-life, seconds, of the episode counts the calibration keeps.
    /// Default 2592000 (30 days).
    pub self_calibration_half_life_s: f64,
    /// Seconds of history after which the request-rate baseline uses its
    /// learned hour-of-day / day-of-week shape. Default 172800 (2 days).
    pub season_min_history_s: f64,
    /// Relative change of the request rate against its expected value that
    /// a rate `critical` needs (0.5: above x1.5 or below x0.67). Default 0.5.
    pub min_rate_change: f64,
    /// Smallest relative spread assumed for the self-baseline's latency
    /// quantile (standard deviation of its logarithm), so a very steady
    /// series does not turn a small wobble into a large z. Default 0.05.
    pub baseline_min_rel_sd: f64,
    /// How much latency may rise with traffic before the self-baseline
    /// calls it anomalous: when the recent request rate is `r` times the
    /// baseline rate (`r > 1`), the baseline quantile is scaled by
    /// `r^load_elasticity` first. 0.5 lets a 4x surge double the latency
    /// (queueing); a latency rise without more traffic is judged as before.
    /// Canary-vs-stable judgements compare the same ticks and do not need
    /// it. Default 0.5.
    pub load_elasticity: f64,
    /// False-alarm level of the sequential canary test
    /// ([`crate::sequential::CanaryMonitor`]): it turns `critical` when its
    /// e-value reaches `1 / alpha`, which bounds the expected number of ticks
    /// before a false `critical` of a canary that is no worse than its stable
    /// from below by `1 / alpha` (see the crate README for the assumptions).
    /// `warn` starts at an e-value of `1 / sqrt(alpha)`. In (0, 0.5).
    /// Default 1e-6: at 1 s ticks, at least 11.6 days on average between
    /// false alarms, 11x the "1 per 24 h" budget.
    pub alpha: f64,
    /// Margin of the sequential error and reset tests: the null hypothesis
    /// is "the canary's error (or reset) ratio is at most the stable's
    /// measured ratio plus this", 0–0.5. Default 0.0005 (0.05 percentage
    /// points: the stable's ratio is measured on its window, and the
    /// alternatives tested are far above it, see the README).
    pub error_margin: f64,
    /// Margin of the sequential latency test: the null hypothesis is "the
    /// canary's share of requests above the stable's `latency_quantile`
    /// quantile is at most the stable's own measured share plus this",
    /// 0–0.5. It absorbs the noise of the stable's share measured in the
    /// same tick (the common-mode guard). Default 0.1.
    pub latency_margin: f64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            version: MODEL_VERSION,
            window_ticks: 10,
            recent_ticks: 3,
            min_requests: 20,
            min_requests_ref: 50,
            z_warn: 3.0,
            z_critical: 5.0,
            min_error_diff: 0.03,
            min_bad_events: 5,
            latency_quantile: 0.95,
            min_latency_share: 0.25,
            min_latency_increase: 0.2,
            min_latency_increase_ms: 5.0,
            baseline_half_life_s: 1800.0,
            warmup_s: 120.0,
            shift_hold_s: 120.0,
            drift_horizon_s: 21_600.0,
            drift_z: 6.0,
            self_cusum_k: 0.5,
            self_warn: 9.0,
            self_critical: 14.0,
            self_alarms_per_day: 0.25,
            self_calibration_half_life_s: 2_592_000.0,
            season_min_history_s: 172_800.0,
            min_rate_change: 0.5,
            baseline_min_rel_sd: 0.05,
            load_elasticity: 0.5,
            alpha: 1e-6,
            error_margin: 0.0005,
            latency_margin: 0.1,
        }
    }
}

/// Every field name of [`Model`], in declaration order (used to name unknown
/// fields in errors).
pub const FIELDS: &[&str] = &[
    "version",
    "window_ticks",
    "recent_ticks",
    "min_requests",
    "min_requests_ref",
    "z_warn",
    "z_critical",
    "min_error_diff",
    "min_bad_events",
    "latency_quantile",
    "min_latency_share",
    "min_latency_increase",
    "min_latency_increase_ms",
    "baseline_half_life_s",
    "warmup_s",
    "shift_hold_s",
    "drift_horizon_s",
    "drift_z",
    "self_cusum_k",
    "self_warn",
    "self_critical",
    "self_alarms_per_day",
    "self_calibration_half_life_s",
    "season_min_history_s",
    "min_rate_change",
    "baseline_min_rel_sd",
    "load_elasticity",
    "alpha",
    "error_margin",
    "latency_margin",
];

/// Why a model document was rejected. Displays as `model.<field>: <reason>`
/// (or `model: <reason>` when no single field is at fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// The offending field (empty when the document as a whole is wrong,
    /// e.g. not JSON or not an object).
    pub field: String,
    /// What is wrong, with the value received.
    pub message: String,
}

impl ModelError {
    fn field(field: &str, message: String) -> Self {
        ModelError {
            field: field.to_string(),
            message,
        }
    }

    fn whole(message: String) -> Self {
        ModelError {
            field: String::new(),
            message,
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "model: {}", self.message)
        } else {
            write!(f, "model.{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ModelError {}

impl Model {
    /// Parse and validate a model document (JSON text).
    pub fn from_json(text: &str) -> Result<Model, ModelError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ModelError::whole(format!("not valid JSON: {e}")))?;
        Model::from_json_value(value)
    }

    /// Parse and validate a model given as a JSON value (the `model` object
    /// embedded in the filter's plugin configuration).
    pub fn from_json_value(value: serde_json::Value) -> Result<Model, ModelError> {
        let serde_json::Value::Object(mut map) = value else {
            return Err(ModelError::whole(format!(
                "must be a JSON object, got {}",
                json_kind(&value)
            )));
        };
        // Check field by field first, so that unknown names and type errors
        // are reported against the field (serde's own messages carry no path).
        if let Some(v) = map.get("version") {
            if v.as_u64() == Some(1) {
                // Version 1 differs only by the removed fields (refused below).
                map.insert(
                    "version".to_string(),
                    serde_json::Value::from(MODEL_VERSION),
                );
            }
        }
        for (key, field_value) in &map {
            if let Some((_, why)) = REMOVED_FIELDS.iter().find(|(name, _)| name == key) {
                return Err(ModelError::field(key, (*why).to_string()));
            }
            if !FIELDS.contains(&key.as_str()) {
                return Err(ModelError::field(
                    key,
                    format!("unknown field (known fields: {})", FIELDS.join(", ")),
                ));
            }
            let mut single = serde_json::Map::new();
            single.insert(key.clone(), field_value.clone());
            if let Err(e) = serde_json::from_value::<Model>(serde_json::Value::Object(single)) {
                return Err(ModelError::field(key, e.to_string()));
            }
        }
        let model: Model = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| ModelError::whole(e.to_string()))?;
        model.validate()?;
        Ok(model)
    }

    /// The model as compact JSON (always succeeds for this plain struct).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Check every field; the error names the first field out of range.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.version != MODEL_VERSION {
            return Err(ModelError::field(
                "version",
                format!(
                    "unsupported model version (this scorer understands {MODEL_VERSION}), got {}",
                    self.version
                ),
            ));
        }
        check_u32("window_ticks", self.window_ticks, 1, MAX_WINDOW_TICKS)?;
        if self.recent_ticks < 1 || self.recent_ticks > self.window_ticks {
            return Err(ModelError::field(
                "recent_ticks",
                format!(
                    "must be an integer in 1..=window_ticks ({}), got {}",
                    self.window_ticks, self.recent_ticks
                ),
            ));
        }
        check_u64("min_requests", self.min_requests, 1, 1_000_000_000)?;
        check_u64("min_requests_ref", self.min_requests_ref, 1, 1_000_000_000)?;
        if !(self.z_warn.is_finite() && self.z_warn > 0.0 && self.z_warn <= 100.0) {
            return Err(ModelError::field(
                "z_warn",
                format!("must be a finite number in (0, 100], got {}", self.z_warn),
            ));
        }
        if !(self.z_critical.is_finite()
            && self.z_critical > self.z_warn
            && self.z_critical <= 100.0)
        {
            return Err(ModelError::field(
                "z_critical",
                format!(
                    "must be a finite number > z_warn ({}) and <= 100, got {}",
                    self.z_warn, self.z_critical
                ),
            ));
        }
        check_f64("min_error_diff", self.min_error_diff, 0.0, 1.0, true, true)?;
        check_u64("min_bad_events", self.min_bad_events, 1, 1_000_000_000)?;
        check_f64(
            "latency_quantile",
            self.latency_quantile,
            0.0,
            1.0,
            false,
            false,
        )?;
        check_f64(
            "min_latency_share",
            self.min_latency_share,
            0.0,
            1.0,
            true,
            true,
        )?;
        check_f64(
            "min_latency_increase",
            self.min_latency_increase,
            0.0,
            100.0,
            true,
            true,
        )?;
        check_f64(
            "min_latency_increase_ms",
            self.min_latency_increase_ms,
            0.0,
            600_000.0,
            true,
            true,
        )?;
        check_f64(
            "baseline_half_life_s",
            self.baseline_half_life_s,
            1.0,
            1e8,
            true,
            true,
        )?;
        check_f64("warmup_s", self.warmup_s, 0.0, 1e8, true, true)?;
        check_f64("shift_hold_s", self.shift_hold_s, 1.0, 1e8, true, true)?;
        check_f64(
            "drift_horizon_s",
            self.drift_horizon_s,
            self.baseline_half_life_s,
            1e9,
            false,
            true,
        )?;
        check_f64("drift_z", self.drift_z, 0.0, 1000.0, false, true)?;
        check_f64("self_cusum_k", self.self_cusum_k, 0.0, 10.0, false, true)?;
        check_f64("self_warn", self.self_warn, 0.0, 1000.0, false, true)?;
        if !(self.self_critical.is_finite()
            && self.self_critical > self.self_warn
            && self.self_critical <= 1000.0)
        {
            return Err(ModelError::field(
                "self_critical",
                format!(
                    "must be a finite number > self_warn ({}) and <= 1000, got {}",
                    self.self_warn, self.self_critical
                ),
            ));
        }
        check_f64(
            "self_alarms_per_day",
            self.self_alarms_per_day,
            0.0,
            1e4,
            true,
            true,
        )?;
        check_f64(
            "self_calibration_half_life_s",
            self.self_calibration_half_life_s,
            1.0,
            1e10,
            true,
            true,
        )?;
        check_f64(
            "season_min_history_s",
            self.season_min_history_s,
            0.0,
            1e10,
            true,
            true,
        )?;
        check_f64(
            "min_rate_change",
            self.min_rate_change,
            0.0,
            100.0,
            true,
            true,
        )?;
        check_f64(
            "baseline_min_rel_sd",
            self.baseline_min_rel_sd,
            0.0,
            10.0,
            false,
            true,
        )?;
        check_f64(
            "load_elasticity",
            self.load_elasticity,
            0.0,
            5.0,
            true,
            true,
        )?;
        check_f64("alpha", self.alpha, 0.0, 0.5, false, false)?;
        check_f64("error_margin", self.error_margin, 0.0, 0.5, true, true)?;
        check_f64("latency_margin", self.latency_margin, 0.0, 0.5, true, true)?;
        Ok(())
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn check_u32(field: &str, value: u32, min: u32, max: u32) -> Result<(), ModelError> {
    check_u64(field, u64::from(value), u64::from(min), u64::from(max))
}

fn check_u64(field: &str, value: u64, min: u64, max: u64) -> Result<(), ModelError> {
    if value < min || value > max {
        return Err(ModelError::field(
            field,
            format!("must be an integer in {min}..={max}, got {value}"),
        ));
    }
    Ok(())
}

fn check_f64(
    field: &str,
    value: f64,
    min: f64,
    max: f64,
    min_inclusive: bool,
    max_inclusive: bool,
) -> Result<(), ModelError> {
    let above = if min_inclusive {
        value >= min
    } else {
        value > min
    };
    let below = if max_inclusive {
        value <= max
    } else {
        value < max
    };
    if !(value.is_finite() && above && below) {
        return Err(ModelError::field(
            field,
            format!(
                "must be a finite number in {}{min}, {max}{}, got {value}",
                if min_inclusive { "[" } else { "(" },
                if max_inclusive { "]" } else { ")" },
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_has_contract_values() {
        let m = Model::default();
        m.validate().unwrap();
        assert_eq!(m.version, MODEL_VERSION);
        assert_eq!(m.window_ticks, 10);
        assert_eq!(m.recent_ticks, 3);
        assert_eq!(m.min_requests, 20);
        assert_eq!(m.min_requests_ref, 50);
        assert_eq!(m.z_warn, 3.0);
        assert_eq!(m.z_critical, 5.0);
        assert_eq!(m.min_error_diff, 0.03);
        assert_eq!(m.min_bad_events, 5);
        assert_eq!(m.latency_quantile, 0.95);
        assert_eq!(m.min_latency_share, 0.25);
        assert_eq!(m.min_latency_increase, 0.2);
        assert_eq!(m.min_latency_increase_ms, 5.0);
        assert_eq!(m.baseline_half_life_s, 1800.0);
        assert_eq!(m.warmup_s, 120.0);
        assert_eq!(m.shift_hold_s, 120.0);
        assert_eq!(m.alpha, 1e-6);
        assert_eq!(m.error_margin, 0.0005);
        assert_eq!(m.latency_margin, 0.1);
    }

    #[test]
    fn fields_list_matches_serialisation() {
        let v = serde_json::to_value(Model::default()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut expected: Vec<&str> = FIELDS.to_vec();
        let mut got = keys.clone();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
    }

    #[test]
    fn json_round_trip() {
        let m = Model {
            z_warn: 2.5,
            z_critical: 6.25,
            window_ticks: 30,
            recent_ticks: 5,
            baseline_half_life_s: 600.0,
            latency_quantile: 0.99,
            ..Model::default()
        };
        let text = m.to_json();
        let back = Model::from_json(&text).unwrap();
        assert_eq!(back, m);
        // And through a Value, as the filter does.
        let value = serde_json::to_value(&m).unwrap();
        assert_eq!(Model::from_json_value(value).unwrap(), m);
    }

    #[test]
    fn missing_fields_take_defaults() {
        assert_eq!(Model::from_json("{}").unwrap(), Model::default());
        let m = Model::from_json(r#"{"z_critical": 7}"#).unwrap();
        assert_eq!(m.z_critical, 7.0);
        assert_eq!(m.z_warn, 3.0);
    }

    #[test]
    fn unknown_field_is_rejected_and_named() {
        let err = Model::from_json(r#"{"z_warn": 3, "z_critcal": 5}"#).unwrap_err();
        assert_eq!(err.field, "z_critcal");
        let text = err.to_string();
        assert!(text.starts_with("model.z_critcal: unknown field"), "{text}");
    }

    #[test]
    fn wrong_type_is_rejected_and_named() {
        let err = Model::from_json(r#"{"window_ticks": "ten"}"#).unwrap_err();
        assert_eq!(err.field, "window_ticks");
        assert!(err.to_string().starts_with("model.window_ticks: "), "{err}");
        let err = Model::from_json(r#"{"min_requests": -3}"#).unwrap_err();
        assert_eq!(err.field, "min_requests");
    }

    #[test]
    fn version_1_is_migrated_or_refused_with_the_field_named() {
        let m = Model::from_json(r#"{"version": 1, "z_critical": 6}"#).unwrap();
        assert_eq!(m.version, MODEL_VERSION);
        assert_eq!(m.z_critical, 6.0);
        let err = Model::from_json(r#"{"version": 1, "baseline_alpha": 0.05}"#).unwrap_err();
        assert_eq!(err.field, "baseline_alpha");
        assert!(err.to_string().contains("baseline_half_life_s"), "{err}");
        let text = Model::default().to_json();
        assert!(text.contains("\"warmup_s\":120"), "{text}");
    }

    #[test]
    fn not_an_object_or_not_json() {
        let err = Model::from_json("[1,2]").unwrap_err();
        assert_eq!(err.field, "");
        assert!(err.to_string().starts_with("model: must be a JSON object"));
        let err = Model::from_json("{").unwrap_err();
        assert!(err.to_string().starts_with("model: not valid JSON"));
    }

    #[test]
    fn z_critical_message_matches_contract_shape() {
        let err = Model::from_json(r#"{"z_critical": 1}"#).unwrap_err();
        assert_eq!(err.field, "z_critical");
        let text = err.to_string();
        assert!(
            text.starts_with("model.z_critical: must be a finite number > z_warn"),
            "{text}"
        );
        assert!(text.ends_with("got 1"), "{text}");
    }

    #[test]
    fn every_invalid_value_names_its_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"version": 3}"#, "version"),
            (r#"{"window_ticks": 0}"#, "window_ticks"),
            (r#"{"window_ticks": 100000}"#, "window_ticks"),
            (r#"{"window_ticks": 2}"#, "recent_ticks"),
            (r#"{"recent_ticks": 0}"#, "recent_ticks"),
            (r#"{"recent_ticks": 11}"#, "recent_ticks"),
            (r#"{"min_requests": 0}"#, "min_requests"),
            (r#"{"min_requests_ref": 0}"#, "min_requests_ref"),
            (r#"{"z_warn": 0}"#, "z_warn"),
            (r#"{"z_warn": -1}"#, "z_warn"),
            (r#"{"z_warn": 5}"#, "z_critical"),
            (r#"{"z_critical": 1000}"#, "z_critical"),
            (r#"{"min_error_diff": -0.1}"#, "min_error_diff"),
            (r#"{"min_error_diff": 1.5}"#, "min_error_diff"),
            (r#"{"min_bad_events": 0}"#, "min_bad_events"),
            (r#"{"latency_quantile": 0}"#, "latency_quantile"),
            (r#"{"latency_quantile": 1}"#, "latency_quantile"),
            (r#"{"min_latency_share": 2}"#, "min_latency_share"),
            (r#"{"min_latency_increase": -1}"#, "min_latency_increase"),
            (
                r#"{"min_latency_increase_ms": -5}"#,
                "min_latency_increase_ms",
            ),
            (r#"{"baseline_alpha": 0.05}"#, "baseline_alpha"),
            (r#"{"version": 1, "warmup_ticks": 30}"#, "warmup_ticks"),
            (r#"{"baseline_half_life_s": 0}"#, "baseline_half_life_s"),
            (r#"{"warmup_s": -1}"#, "warmup_s"),
            (r#"{"shift_hold_s": 0}"#, "shift_hold_s"),
            (r#"{"drift_horizon_s": 10}"#, "drift_horizon_s"),
            (r#"{"self_warn": 20}"#, "self_critical"),
            (r#"{"self_cusum_k": 0}"#, "self_cusum_k"),
            (r#"{"min_rate_change": -1}"#, "min_rate_change"),
            (r#"{"baseline_min_rel_sd": 0}"#, "baseline_min_rel_sd"),
            (r#"{"load_elasticity": -1}"#, "load_elasticity"),
            (r#"{"alpha": 0}"#, "alpha"),
            (r#"{"alpha": 0.5}"#, "alpha"),
            (r#"{"error_margin": -0.1}"#, "error_margin"),
            (r#"{"latency_margin": 0.7}"#, "latency_margin"),
        ];
        for (text, field) in cases {
            let err = Model::from_json(text).unwrap_err();
            assert_eq!(&err.field, field, "{text}: {err}");
            assert!(
                err.to_string().starts_with(&format!("model.{field}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn non_finite_values_are_rejected_by_validate() {
        for field in [
            "z_warn",
            "z_critical",
            "min_error_diff",
            "latency_quantile",
            "min_latency_share",
            "min_latency_increase",
            "min_latency_increase_ms",
            "baseline_half_life_s",
            "baseline_min_rel_sd",
        ] {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let mut m = Model::default();
                match field {
                    "z_warn" => m.z_warn = bad,
                    "z_critical" => m.z_critical = bad,
                    "min_error_diff" => m.min_error_diff = bad,
                    "latency_quantile" => m.latency_quantile = bad,
                    "min_latency_share" => m.min_latency_share = bad,
                    "min_latency_increase" => m.min_latency_increase = bad,
                    "min_latency_increase_ms" => m.min_latency_increase_ms = bad,
                    "baseline_half_life_s" => m.baseline_half_life_s = bad,
                    _ => m.baseline_min_rel_sd = bad,
                }
                let err = m.validate().unwrap_err();
                assert_eq!(err.field, field, "{bad}: {err}");
            }
        }
    }
}
