//! The per-canary rollout state machine.
//!
//! Why this exists: every weight the service ever serves comes out of this
//! one pure transition function, so what a rollout may do is decided here
//! and tested here, without HTTP, SQLite or clocks (time is an argument).
//!
//! ```text
//!             start                 step passes              last step passes
//!  pending ─────────► progressing ───────────► progressing ─────────────────► promoted (100)
//!     │   gate?          │  ▲  │ hold (too little evidence: stay, never promote)
//!     ▼                  │  │  ▼ gate before next step / before promotion
//!  waiting_approval ◄────┘  └─ approve ── waiting_approval ── reject ──► rolled_back (0)
//!  progressing / waiting_approval ── critical, failed test, SLO breach, reject ──► rolled_back (0)
//!  progressing / waiting_approval ── pause ──► paused ── resume ──► (where it was)
//! ```
//!
//! A paused canary keeps its weight and is not advanced, but a critical
//! verdict still rolls it back: pausing never disables the safety net.
//! Every transition returns a [`Decision`] with a plain-English explanation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::analysis::{Judgement, Outcome};
use crate::spec::CanarySpec;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Declared, not started.
    Pending,
    /// Serving a step's weight and collecting evidence.
    Progressing,
    /// At an approval gate.
    WaitingApproval,
    /// Held by an operator.
    Paused,
    /// Done: the canary takes all traffic.
    Promoted,
    /// Done: the canary takes no traffic.
    RolledBack,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing => "progressing",
            Phase::WaitingApproval => "waiting_approval",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
        }
    }

    /// Whether the canary is live (serving traffic under analysis).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Phase::Progressing | Phase::WaitingApproval | Phase::Paused
        )
    }

    /// Whether the rollout is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack)
    }
}

/// An approval gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gate {
    /// Before starting step `index`.
    Step {
        /// Step index.
        index: usize,
    },
    /// Before promotion.
    Promotion,
}

/// The persisted state of one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryState {
    /// Phase.
    pub phase: Phase,
    /// Index of the step in force (or last in force).
    pub step: usize,
    /// Canary weight being served, percent.
    pub weight: u8,
    /// When the step in force started, ms since the epoch.
    pub step_started_ms: u64,
    /// The gate being waited at.
    pub gate: Option<Gate>,
    /// Whether the current step is held for evidence (the hold was logged).
    pub holding: bool,
    /// Phase to return to on resume.
    pub paused_from: Option<Phase>,
    /// Rollout generation (increments when a finished canary is restarted).
    pub rollout: u64,
    /// Latest explanation.
    pub reason: String,
    /// Last change, ms since the epoch.
    pub updated_ms: u64,
}

impl CanaryState {
    /// A freshly declared canary.
    pub fn new(now_ms: u64) -> Self {
        CanaryState {
            phase: Phase::Pending,
            step: 0,
            weight: 0,
            step_started_ms: now_ms,
            gate: None,
            holding: false,
            paused_from: None,
            rollout: 1,
            reason: "declared, not started".to_string(),
            updated_ms: now_ms,
        }
    }
}

/// What kind of decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Rollout started.
    Start,
    /// Next step.
    Advance,
    /// Step held for evidence.
    Hold,
    /// Waiting at a gate.
    AwaitApproval,
    /// Gate approved.
    Approve,
    /// Rollout rejected by an operator.
    Reject,
    /// Promoted.
    Promote,
    /// Rolled back automatically.
    Rollback,
    /// Paused by an operator.
    Pause,
    /// Resumed by an operator.
    Resume,
    /// A finished rollout restarted (its spec was re-declared).
    Restart,
}

impl DecisionKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Start => "start",
            DecisionKind::Advance => "advance",
            DecisionKind::Hold => "hold",
            DecisionKind::AwaitApproval => "await_approval",
            DecisionKind::Approve => "approve",
            DecisionKind::Reject => "reject",
            DecisionKind::Promote => "promote",
            DecisionKind::Rollback => "rollback",
            DecisionKind::Pause => "pause",
            DecisionKind::Resume => "resume",
            DecisionKind::Restart => "restart",
        }
    }

    /// Every kind (for metrics).
    pub const ALL: [DecisionKind; 11] = [
        DecisionKind::Start,
        DecisionKind::Advance,
        DecisionKind::Hold,
        DecisionKind::AwaitApproval,
        DecisionKind::Approve,
        DecisionKind::Reject,
        DecisionKind::Promote,
        DecisionKind::Rollback,
        DecisionKind::Pause,
        DecisionKind::Resume,
        DecisionKind::Restart,
    ];
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Kind.
    pub kind: DecisionKind,
    /// Who: `vigil` for automatic decisions, else the operator.
    pub actor: String,
    /// Phase before.
    pub from: Phase,
    /// Phase after.
    pub to: Phase,
    /// Weight before.
    pub weight_before: u8,
    /// Weight after.
    pub weight_after: u8,
    /// Step index after.
    pub step: usize,
    /// Plain English, with the numbers.
    pub explanation: String,
    /// Structured numbers.
    pub evidence: Value,
    /// Whether a new step started (its evidence starts empty).
    pub new_step: bool,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// A transition that is not allowed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict(pub String);

/// Who automatic decisions are attributed to.
pub const AUTOMATIC: &str = "vigil";

struct Change {
    kind: DecisionKind,
    actor: String,
    explanation: String,
    evidence: Value,
    new_step: bool,
}

impl CanaryState {
    fn apply(&mut self, before: (Phase, u8), c: Change, now_ms: u64) -> Decision {
        self.reason.clone_from(&c.explanation);
        self.updated_ms = now_ms;
        if c.new_step {
            self.step_started_ms = now_ms;
            self.holding = false;
        }
        Decision {
            kind: c.kind,
            actor: c.actor,
            from: before.0,
            to: self.phase,
            weight_before: before.1,
            weight_after: self.weight,
            step: self.step,
            explanation: c.explanation,
            evidence: c.evidence,
            new_step: c.new_step,
            at_ms: now_ms,
        }
    }

    /// Enter step `index` (or its gate). Returns the decision kind and text.
    fn enter_step(
        &mut self,
        spec: &CanarySpec,
        index: usize,
        approved: bool,
    ) -> (DecisionKind, String) {
        if spec.gate_before(index) && !approved {
            self.phase = Phase::WaitingApproval;
            self.gate = Some(Gate::Step { index });
            (
                DecisionKind::AwaitApproval,
                format!(
                    "waiting for approval before step {} ({}%), serving {}%",
                    index + 1,
                    spec.step_weight(index),
                    self.weight
                ),
            )
        } else {
            self.phase = Phase::Progressing;
            self.gate = None;
            self.step = index;
            self.weight = spec.step_weight(index);
            (
                DecisionKind::Advance,
                format!(
                    "step {}/{}: canary weight {}% for {} s",
                    index + 1,
                    spec.steps.len(),
                    self.weight,
                    spec.step_duration_s
                ),
            )
        }
    }

    /// Start a pending rollout.
    pub fn start(&mut self, spec: &CanarySpec, now_ms: u64) -> Option<Decision> {
        if self.phase != Phase::Pending {
            return None;
        }
        let before = (self.phase, self.weight);
        let (kind, text) = self.enter_step(spec, 0, false);
        let kind = if kind == DecisionKind::Advance {
            DecisionKind::Start
        } else {
            kind
        };
        let new_step = self.phase == Phase::Progressing;
        Some(self.apply(
            before,
            Change {
                kind,
                actor: AUTOMATIC.into(),
                explanation: format!("rollout started ({} mode): {text}", spec.mode.as_str()),
                evidence: serde_json::json!({"steps": spec.steps}),
                new_step,
            },
            now_ms,
        ))
    }

    /// Whether the step in force has run its duration.
    pub fn step_due(&self, spec: &CanarySpec, now_ms: u64) -> bool {
        self.phase == Phase::Progressing
            && now_ms
                >= self
                    .step_started_ms
                    .saturating_add(spec.step_duration_s.saturating_mul(1000))
    }

    /// Act on a step judgement (call when [`CanaryState::step_due`]).
    pub fn on_step_judgement(
        &mut self,
        spec: &CanarySpec,
        j: &Judgement,
        now_ms: u64,
    ) -> Option<Decision> {
        if self.phase != Phase::Progressing {
            return None;
        }
        match j.outcome {
            Outcome::Rollback => self.rollback(j, now_ms),
            Outcome::Hold => {
                if self.holding {
                    return None;
                }
                self.holding = true;
                let before = (self.phase, self.weight);
                Some(self.apply(
                    before,
                    Change {
                        kind: DecisionKind::Hold,
                        actor: AUTOMATIC.into(),
                        explanation: j.explanation.clone(),
                        evidence: j.evidence.clone(),
                        new_step: false,
                    },
                    now_ms,
                ))
            }
            Outcome::Pass => {
                let before = (self.phase, self.weight);
                let next = self.step + 1;
                let (kind, text, new_step) = if next >= spec.steps.len() {
                    if spec.approve_before_promotion {
                        self.phase = Phase::WaitingApproval;
                        self.gate = Some(Gate::Promotion);
                        (
                            DecisionKind::AwaitApproval,
                            format!(
                                "waiting for approval before promotion, serving {}%",
                                self.weight
                            ),
                            false,
                        )
                    } else {
                        self.promote();
                        (
                            DecisionKind::Promote,
                            "promoted: canary weight 100%".to_string(),
                            false,
                        )
                    }
                } else {
                    let (kind, text) = self.enter_step(spec, next, false);
                    let new_step = kind == DecisionKind::Advance;
                    (kind, text, new_step)
                };
                Some(self.apply(
                    before,
                    Change {
                        kind,
                        actor: AUTOMATIC.into(),
                        explanation: format!("{}; {text}", j.explanation),
                        evidence: j.evidence.clone(),
                        new_step,
                    },
                    now_ms,
                ))
            }
        }
    }

    fn promote(&mut self) {
        self.phase = Phase::Promoted;
        self.gate = None;
        self.weight = 100;
    }

    /// Roll back now (critical verdict, failed test, SLO breach). Only a
    /// live canary is rolled back; otherwise nothing happens.
    pub fn rollback(&mut self, j: &Judgement, now_ms: u64) -> Option<Decision> {
        if !self.phase.is_active() {
            return None;
        }
        let before = (self.phase, self.weight);
        self.phase = Phase::RolledBack;
        self.gate = None;
        self.paused_from = None;
        self.weight = 0;
        Some(self.apply(
            before,
            Change {
                kind: DecisionKind::Rollback,
                actor: AUTOMATIC.into(),
                explanation: format!("rolled back to 0%: {}", j.explanation),
                evidence: j.evidence.clone(),
                new_step: false,
            },
            now_ms,
        ))
    }

    /// Approve the gate being waited at.
    pub fn approve(
        &mut self,
        spec: &CanarySpec,
        by: &str,
        comment: &str,
        now_ms: u64,
    ) -> Result<Decision, Conflict> {
        let gate = match (self.phase, self.gate) {
            (Phase::WaitingApproval, Some(g)) => g,
            _ => {
                return Err(Conflict(format!(
                    "nothing to approve: the canary is {}",
                    self.phase.as_str()
                )))
            }
        };
        let before = (self.phase, self.weight);
        let (text, new_step) = match gate {
            Gate::Promotion => {
                self.promote();
                ("promoted: canary weight 100%".to_string(), false)
            }
            Gate::Step { index } => {
                let (_, text) = self.enter_step(spec, index, true);
                (text, true)
            }
        };
        Ok(self.apply(
            before,
            Change {
                kind: DecisionKind::Approve,
                actor: by.to_string(),
                explanation: format!("approved by {by}{}; {text}", comment_suffix(comment)),
                evidence: serde_json::json!({"gate": gate, "comment": comment}),
                new_step,
            },
            now_ms,
        ))
    }

    /// Reject: abort a live or pending rollout (weight 0).
    pub fn reject(&mut self, by: &str, comment: &str, now_ms: u64) -> Result<Decision, Conflict> {
        if !(self.phase.is_active() || self.phase == Phase::Pending) {
            return Err(Conflict(format!(
                "nothing to reject: the canary is {}",
                self.phase.as_str()
            )));
        }
        let before = (self.phase, self.weight);
        let gate = self.gate;
        self.phase = Phase::RolledBack;
        self.gate = None;
        self.paused_from = None;
        self.weight = 0;
        Ok(self.apply(
            before,
            Change {
                kind: DecisionKind::Reject,
                actor: by.to_string(),
                explanation: format!(
                    "rejected by {by}{}; rolled back to 0%",
                    comment_suffix(comment)
                ),
                evidence: serde_json::json!({"gate": gate, "comment": comment}),
                new_step: false,
            },
            now_ms,
        ))
    }

    /// Pause a live rollout (weights kept, no advancing).
    pub fn pause(&mut self, by: &str, comment: &str, now_ms: u64) -> Result<Decision, Conflict> {
        if !matches!(self.phase, Phase::Progressing | Phase::WaitingApproval) {
            return Err(Conflict(format!(
                "cannot pause: the canary is {}",
                self.phase.as_str()
            )));
        }
        let before = (self.phase, self.weight);
        self.paused_from = Some(self.phase);
        self.phase = Phase::Paused;
        Ok(self.apply(
            before,
            Change {
                kind: DecisionKind::Pause,
                actor: by.to_string(),
                explanation: format!(
                    "paused by {by}{} at {}%",
                    comment_suffix(comment),
                    self.weight
                ),
                evidence: serde_json::json!({"comment": comment}),
                new_step: false,
            },
            now_ms,
        ))
    }

    /// Resume a paused rollout; a progressing step restarts its clock.
    pub fn resume(&mut self, by: &str, comment: &str, now_ms: u64) -> Result<Decision, Conflict> {
        if self.phase != Phase::Paused {
            return Err(Conflict(format!(
                "cannot resume: the canary is {}",
                self.phase.as_str()
            )));
        }
        let before = (self.phase, self.weight);
        self.phase = self.paused_from.take().unwrap_or(Phase::Progressing);
        let new_step = self.phase == Phase::Progressing;
        Ok(self.apply(
            before,
            Change {
                kind: DecisionKind::Resume,
                actor: by.to_string(),
                explanation: format!(
                    "resumed by {by}{}: {} at {}%",
                    comment_suffix(comment),
                    self.phase.as_str(),
                    self.weight
                ),
                evidence: serde_json::json!({"comment": comment}),
                new_step,
            },
            now_ms,
        ))
    }

    /// Restart a finished rollout (its spec was re-declared).
    pub fn restart(&mut self, by: &str, now_ms: u64) -> Option<Decision> {
        if !self.phase.is_terminal() {
            return None;
        }
        let before = (self.phase, self.weight);
        let rollout = self.rollout.saturating_add(1);
        *self = CanaryState::new(now_ms);
        self.rollout = rollout;
        Some(self.apply(
            before,
            Change {
                kind: DecisionKind::Restart,
                actor: by.to_string(),
                explanation: format!("re-declared by {by}: rollout {rollout} pending"),
                evidence: Value::Null,
                new_step: false,
            },
            now_ms,
        ))
    }
}

fn comment_suffix(comment: &str) -> String {
    if comment.is_empty() {
        String::new()
    } else {
        format!(" ({comment})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: Value) -> CanarySpec {
        let mut v = json!({"name":"c","route":"r","stable_cluster":"s","canary_cluster":"k",
            "steps":[10,50,100],"step_duration_s":2});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        CanarySpec::from_json_value(v).unwrap()
    }

    fn j(outcome: Outcome) -> Judgement {
        Judgement {
            outcome,
            explanation: format!("{outcome:?}"),
            evidence: Value::Null,
        }
    }

    #[test]
    fn walks_steps_and_promotes() {
        let s = spec(json!({}));
        let mut st = CanaryState::new(0);
        let d = st.start(&s, 0).unwrap();
        assert_eq!(
            (d.kind, st.weight, st.phase),
            (DecisionKind::Start, 10, Phase::Progressing)
        );
        assert!(!st.step_due(&s, 1999));
        assert!(st.step_due(&s, 2000));
        let d = st.on_step_judgement(&s, &j(Outcome::Pass), 2000).unwrap();
        assert_eq!(
            (d.kind, d.weight_before, d.weight_after),
            (DecisionKind::Advance, 10, 50)
        );
        assert!(d.new_step);
        assert!(!st.step_due(&s, 3999));
        st.on_step_judgement(&s, &j(Outcome::Pass), 4000).unwrap();
        assert_eq!(st.weight, 100);
        let d = st.on_step_judgement(&s, &j(Outcome::Pass), 6000).unwrap();
        assert_eq!(
            (d.kind, st.phase, st.weight),
            (DecisionKind::Promote, Phase::Promoted, 100)
        );
        assert!(st.on_step_judgement(&s, &j(Outcome::Pass), 8000).is_none());
    }

    #[test]
    fn hold_never_promotes_and_logs_once() {
        let s = spec(json!({}));
        let mut st = CanaryState::new(0);
        st.start(&s, 0);
        let d = st.on_step_judgement(&s, &j(Outcome::Hold), 2000).unwrap();
        assert_eq!(d.kind, DecisionKind::Hold);
        assert!(st.on_step_judgement(&s, &j(Outcome::Hold), 3000).is_none());
        assert_eq!((st.phase, st.weight), (Phase::Progressing, 10));
        let d = st.on_step_judgement(&s, &j(Outcome::Pass), 4000).unwrap();
        assert_eq!(d.kind, DecisionKind::Advance);
        assert!(!st.holding);
    }

    #[test]
    fn rollback_from_any_live_phase() {
        let s = spec(json!({}));
        let mut st = CanaryState::new(0);
        assert!(
            st.rollback(&j(Outcome::Rollback), 0).is_none(),
            "pending is not live"
        );
        st.start(&s, 0);
        st.pause("op", "", 10).unwrap();
        let d = st.rollback(&j(Outcome::Rollback), 20).unwrap();
        assert_eq!(
            (d.from, d.to, d.weight_after),
            (Phase::Paused, Phase::RolledBack, 0)
        );
        assert!(st.rollback(&j(Outcome::Rollback), 30).is_none());
    }

    #[test]
    fn gates_wait_for_approval() {
        let s = spec(json!({"approve_before_steps":[50],"approve_before_promotion":true}));
        let mut st = CanaryState::new(0);
        st.start(&s, 0);
        assert!(st.approve(&s, "a", "", 1).is_err());
        let d = st.on_step_judgement(&s, &j(Outcome::Pass), 2000).unwrap();
        assert_eq!(
            (d.kind, st.phase, st.weight),
            (DecisionKind::AwaitApproval, Phase::WaitingApproval, 10)
        );
        assert!(!st.step_due(&s, 100_000), "no advancing while waiting");
        let d = st.approve(&s, "alice", "looks good", 5000).unwrap();
        assert_eq!(
            (d.kind, st.phase, st.weight),
            (DecisionKind::Approve, Phase::Progressing, 50)
        );
        assert!(d.explanation.contains("alice") && d.explanation.contains("looks good"));
        assert_eq!(st.step_started_ms, 5000);
        st.on_step_judgement(&s, &j(Outcome::Pass), 7000).unwrap();
        st.on_step_judgement(&s, &j(Outcome::Pass), 9000).unwrap();
        assert_eq!(
            (st.phase, st.gate),
            (Phase::WaitingApproval, Some(Gate::Promotion))
        );
        st.approve(&s, "bob", "", 9500).unwrap();
        assert_eq!((st.phase, st.weight), (Phase::Promoted, 100));
    }

    #[test]
    fn gate_before_first_step_and_reject() {
        let s = spec(json!({"approve_before_steps":[10]}));
        let mut st = CanaryState::new(0);
        let d = st.start(&s, 0).unwrap();
        assert_eq!((d.kind, st.weight), (DecisionKind::AwaitApproval, 0));
        let d = st.reject("carol", "not today", 10).unwrap();
        assert_eq!(
            (d.kind, st.phase, st.weight),
            (DecisionKind::Reject, Phase::RolledBack, 0)
        );
        assert!(st.reject("carol", "", 20).is_err());
        let d = st.restart("ops", 30).unwrap();
        assert_eq!(
            (d.kind, st.phase, st.rollout),
            (DecisionKind::Restart, Phase::Pending, 2)
        );
    }

    #[test]
    fn pause_and_resume_restart_the_step_clock() {
        let s = spec(json!({}));
        let mut st = CanaryState::new(0);
        st.start(&s, 0);
        st.pause("op", "", 1500).unwrap();
        assert!(!st.step_due(&s, 10_000));
        st.resume("op", "", 10_000).unwrap();
        assert_eq!(st.phase, Phase::Progressing);
        assert!(!st.step_due(&s, 11_000));
        assert!(st.step_due(&s, 12_000));
        let round: CanaryState =
            serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(round, st);
    }
}
