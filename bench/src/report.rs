//! Results: one object per measurement, the stdout table and `results.json`.

use serde_json::{json, Map, Value};

/// One measurement.
#[derive(Debug, Clone)]
pub struct Res {
    /// Dotted name, e.g. `dataplane.c1.open.steer.cpu_per_req`.
    pub name: String,
    /// The figure (`None`: not available, see `note`).
    pub value: Option<f64>,
    /// Unit (`ratio` for ratios).
    pub unit: String,
    /// For ratios: the name of the denominator.
    pub baseline: Option<String>,
    /// Spread over rounds (min, max), when repeated.
    pub spread: Option<(f64, f64)>,
    /// Repetitions the value is the median of.
    pub n: Option<usize>,
    /// Free text (status, how it was measured).
    pub note: Option<String>,
}

impl Res {
    /// A plain value.
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Self {
        Res {
            name: name.into(),
            value: Some(value),
            unit: unit.to_string(),
            baseline: None,
            spread: None,
            n: None,
            note: None,
        }
    }

    /// A figure that could not be measured.
    pub fn unavailable(name: impl Into<String>, unit: &str, why: &str) -> Self {
        Res {
            value: None,
            note: Some(why.to_string()),
            ..Res::new(name, 0.0, unit)
        }
    }

    /// Median and spread of repeated samples (None when there are none).
    pub fn of_samples(name: impl Into<String>, samples: &[f64], unit: &str) -> Option<Self> {
        let m = median(samples)?;
        let (lo, hi) = min_max(samples)?;
        Some(Res {
            spread: Some((lo, hi)),
            n: Some(samples.len()),
            ..Res::new(name, m, unit)
        })
    }

    /// Sets the baseline (makes it a ratio).
    pub fn baseline(mut self, b: impl Into<String>) -> Self {
        self.baseline = Some(b.into());
        self
    }

    /// Adds a note.
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = Some(n.into());
        self
    }

    /// JSON object.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("name".into(), json!(self.name));
        o.insert("value".into(), json!(self.value));
        o.insert("unit".into(), json!(self.unit));
        if let Some(b) = &self.baseline {
            o.insert("baseline".into(), json!(b));
        }
        if let Some((lo, hi)) = self.spread {
            o.insert("min".into(), json!(lo));
            o.insert("max".into(), json!(hi));
        }
        if let Some(n) = self.n {
            o.insert("n".into(), json!(n));
        }
        if let Some(note) = &self.note {
            o.insert("note".into(), json!(note));
        }
        Value::Object(o)
    }
}

/// Median (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s.get(n / 2).copied()
    } else {
        Some((s.get(n / 2 - 1)? + s.get(n / 2)?) / 2.0)
    }
}

/// Smallest and largest finite value.
pub fn min_max(v: &[f64]) -> Option<(f64, f64)> {
    let f = v.iter().copied().filter(|x| x.is_finite());
    let lo = f.clone().fold(f64::INFINITY, f64::min);
    let hi = f.fold(f64::NEG_INFINITY, f64::max);
    (lo.is_finite() && hi.is_finite()).then_some((lo, hi))
}

/// Quantile `q` of an ascending-sorted slice (nearest rank).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100_000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

/// The stdout table.
pub fn table(results: &[Res]) -> String {
    let w = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut out = format!(
        "{:<w$}  {:>12}  {:<14}  {:<24}  {}\n",
        "name", "value", "unit", "spread (min..max, n)", "baseline / note"
    );
    out.push_str(&format!("{}\n", "-".repeat(w + 70)));
    for r in results {
        let value = r.value.map(fmt_num).unwrap_or_else(|| "n/a".into());
        let spread = match (r.spread, r.n) {
            (Some((lo, hi)), Some(n)) => format!("{}..{} n={n}", fmt_num(lo), fmt_num(hi)),
            _ => String::new(),
        };
        let mut tail = String::new();
        if let Some(b) = &r.baseline {
            tail.push_str(&format!("vs {b}"));
        }
        if let Some(n) = &r.note {
            if !tail.is_empty() {
                tail.push_str("; ");
            }
            tail.push_str(n);
        }
        out.push_str(&format!(
            "{:<w$}  {:>12}  {:<14}  {:<24}  {}\n",
            r.name, value, r.unit, spread, tail
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn median_min_max_quantile() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(min_max(&[2.0, f64::NAN, -1.0]), Some((-1.0, 2.0)));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile_sorted(&v, 0.5), Some(50.0));
        assert_eq!(quantile_sorted(&v, 0.99), Some(99.0));
        assert_eq!(quantile_sorted(&[], 0.5), None);
    }

    #[test]
    fn ratios_carry_their_baseline_in_json() {
        let r = Res::of_samples("x/y", &[1.0, 1.2, 0.9], "ratio")
            .unwrap()
            .baseline("y");
        let j = r.to_json();
        assert_eq!(j.get("baseline").and_then(Value::as_str), Some("y"));
        assert_eq!(j.get("value").and_then(Value::as_f64), Some(1.0));
        assert_eq!(j.get("n").and_then(Value::as_u64), Some(3));
        let u = Res::unavailable("c", "/s", "not available yet").to_json();
        assert!(u.get("value").is_some_and(Value::is_null));
    }
}
