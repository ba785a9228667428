//! Precision, recall and F2 per kind of a detector on a labelled corpus.
//!
//! A prediction is a true positive when it overlaps a label of the same
//! kind not matched yet; otherwise a false positive. Unmatched labels are
//! false negatives. F2 weighs recall twice as much as precision (a missed
//! card number costs more than a masked order number).

use crate::corpus::Sample;
use crate::kind::Kind;
use crate::scan::Scanner;

/// Counts for one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// False negatives.
    pub fn_: u64,
}

impl Counts {
    /// tp / (tp + fp); 1 when nothing was predicted.
    pub fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    /// tp / (tp + fn); 1 when nothing was labelled.
    pub fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
    /// F-beta with beta = 2.
    pub fn f2(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            5.0 * p * r / (4.0 * p + r)
        }
    }
}

/// Per-kind counts, indexed like [`Kind::ALL`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Counts per kind.
    pub per_kind: [Counts; 10],
}

impl Report {
    /// Counts of one kind.
    pub fn get(&self, k: Kind) -> Counts {
        self.per_kind.get(k as usize).copied().unwrap_or_default()
    }

    /// Score one sample's predictions `(kind, start, end)`.
    pub fn add(&mut self, sample: &Sample, predicted: &[(Kind, usize, usize)]) {
        let mut matched = vec![false; sample.labels.len()];
        for &(k, s, e) in predicted {
            let hit = sample.labels.iter().enumerate().find(|(i, l)| {
                l.kind == k && s < l.end && l.start < e && !matched.get(*i).copied().unwrap_or(true)
            });
            let c = self.per_kind.get_mut(k as usize);
            match (hit, c) {
                (Some((i, _)), Some(c)) => {
                    c.tp += 1;
                    if let Some(m) = matched.get_mut(i) {
                        *m = true;
                    }
                }
                (None, Some(c)) => c.fp += 1,
                _ => {}
            }
        }
        for (l, m) in sample.labels.iter().zip(&matched) {
            if !m {
                if let Some(c) = self.per_kind.get_mut(l.kind as usize) {
                    c.fn_ += 1;
                }
            }
        }
    }

    /// A fixed-width table, one row per kind.
    pub fn table(&self, title: &str) -> String {
        let mut s = format!(
            "{title}\n{:<12} {:>6} {:>6} {:>6} {:>9} {:>7} {:>7}\n",
            "type", "tp", "fp", "fn", "precision", "recall", "F2"
        );
        for k in Kind::ALL {
            let c = self.get(k);
            s.push_str(&format!(
                "{:<12} {:>6} {:>6} {:>6} {:>9.4} {:>7.4} {:>7.4}\n",
                k.name(),
                c.tp,
                c.fp,
                c.fn_,
                c.precision(),
                c.recall(),
                c.f2()
            ));
        }
        s
    }
}

/// Score `scanner` on `corpus`.
///
/// ```
/// let corpus = vigil_pii::corpus::generate(1, 200);
/// let r = vigil_pii::eval::evaluate(&vigil_pii::Scanner::default(), &corpus);
/// assert!(r.get(vigil_pii::Kind::Card).recall() > 0.9);
/// ```
pub fn evaluate(scanner: &Scanner, corpus: &[Sample]) -> Report {
    let mut r = Report::default();
    for s in corpus {
        let p: Vec<(Kind, usize, usize)> = scanner
            .scan(s.text.as_bytes())
            .into_iter()
            .map(|f| (f.kind, f.start, f.end))
            .collect();
        r.add(s, &p);
    }
    r
}

/// The goals the crate must meet on the generated corpus (`make test` checks them).
pub const GOAL_PRECISION: f64 = 0.98;
/// Recall goal.
pub const GOAL_RECALL: f64 = 0.95;

/// Kinds below a goal, with their counts.
pub fn misses(r: &Report) -> Vec<(Kind, Counts)> {
    Kind::ALL
        .into_iter()
        .map(|k| (k, r.get(k)))
        .filter(|(_, c)| c.precision() < GOAL_PRECISION || c.recall() < GOAL_RECALL)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::generate;

    /// The must-show: every validated kind at precision at least 0.98 and
    /// recall at least 0.95 on the generated corpus, hard negatives included,
    /// on seeds other than the one the detectors were tuned on (seed 1).
    #[test]
    fn meets_goals_on_held_out_seeds() {
        for seed in [1001, 2002, 3003] {
            let corpus = generate(seed, 4000);
            let negs: usize = corpus.iter().map(|s| s.negatives).sum();
            assert!(negs > 2000, "hard negatives present: {negs}");
            let r = evaluate(&Scanner::default(), &corpus);
            for k in Kind::ALL {
                assert!(
                    r.get(k).tp > 100,
                    "seed {seed}: {k} has too few labels: {:?}",
                    r.get(k)
                );
            }
            let m = misses(&r);
            assert!(
                m.is_empty(),
                "seed {seed}: below goal: {m:?}\n{}",
                r.table("vigil-pii")
            );
        }
    }
}
