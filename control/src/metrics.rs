//! The service's own metrics, in Prometheus text format at `/metrics`.
//!
//! Why this exists: operators alert on the control plane like on anything
//! else (reports stopping, rejections rising, decisions, the routing
//! version). Counters are lock-free atomics bumped on the hot paths;
//! rendering is pure.

use crate::machine::DecisionKind;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a report or write was refused (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Failed validation.
    Invalid,
    /// Body too large.
    TooLarge,
    /// Out-of-order or duplicate `seq`.
    OutOfOrder,
    /// Missing or wrong token.
    Unauthorized,
    /// Wrong content type.
    MediaType,
    /// Too many distinct sidecars.
    TooManySidecars,
    /// A valid credential without the right (wrong role, or a reporter
    /// reporting as a sidecar it is not bound to).
    Forbidden,
}

impl Reject {
    const ALL: [Reject; 7] = [
        Reject::Invalid,
        Reject::TooLarge,
        Reject::OutOfOrder,
        Reject::Unauthorized,
        Reject::MediaType,
        Reject::TooManySidecars,
        Reject::Forbidden,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Reject::Invalid => "invalid",
            Reject::TooLarge => "too_large",
            Reject::OutOfOrder => "out_of_order",
            Reject::Unauthorized => "unauthorized",
            Reject::MediaType => "media_type",
            Reject::TooManySidecars => "too_many_sidecars",
            Reject::Forbidden => "forbidden",
        }
    }
}

/// Counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Reports accepted.
    pub reports_accepted: AtomicU64,
    rejected: [AtomicU64; 7],
    /// Series entries ingested.
    pub series_updates: AtomicU64,
    /// Series entries that matched a canary.
    pub series_matched: AtomicU64,
    decisions: [AtomicU64; 11],
    /// Routing documents served.
    pub routing_requests: AtomicU64,
    /// Webhook deliveries that succeeded.
    pub webhooks_sent: AtomicU64,
    /// Webhook deliveries that failed after every retry.
    pub webhooks_failed: AtomicU64,
    /// Webhook events dropped because the queue was full.
    pub webhooks_dropped: AtomicU64,
    /// Storage write failures.
    pub storage_errors: AtomicU64,
    /// GitOps render failures.
    pub render_errors: AtomicU64,
    /// Analysis ticks run.
    pub ticks: AtomicU64,
    /// Requests removed from sidecar evidence by the plausibility limits.
    pub evidence_clipped: AtomicU64,
    /// Sidecar `critical` claims ignored for lack of supporting counts.
    pub unsupported_critical: AtomicU64,
    /// Sidecar claims of `critical` the control-side re-test did not confirm.
    pub unconfirmed_critical: AtomicU64,
    /// Sidecar identities forgotten after inactivity.
    pub sidecars_expired: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Count a refusal.
    pub fn reject(&self, why: Reject) {
        if let Some(c) = Reject::ALL
            .iter()
            .position(|r| *r == why)
            .and_then(|i| self.rejected.get(i))
        {
            bump(c, 1);
        }
    }

    /// Count a decision.
    pub fn decision(&self, kind: DecisionKind) {
        if let Some(c) = DecisionKind::ALL
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.decisions.get(i))
        {
            bump(c, 1);
        }
    }

    /// Add to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        bump(c, n);
    }

    /// Prometheus text exposition. `phases` is `(phase, canaries in it)`.
    pub fn render(
        &self,
        routing_version: u64,
        canaries: usize,
        phases: &[(&str, usize)],
    ) -> String {
        let mut s = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut s,
            "vigil_control_reports_accepted_total",
            "Reports accepted.",
            get(&self.reports_accepted),
        );
        counter(
            &mut s,
            "vigil_control_series_updates_total",
            "Series entries ingested from accepted reports.",
            get(&self.series_updates),
        );
        counter(
            &mut s,
            "vigil_control_series_matched_total",
            "Series entries that belonged to a managed canary.",
            get(&self.series_matched),
        );
        counter(
            &mut s,
            "vigil_control_routing_requests_total",
            "Routing documents served.",
            get(&self.routing_requests),
        );
        counter(
            &mut s,
            "vigil_control_webhooks_sent_total",
            "Webhook deliveries that succeeded.",
            get(&self.webhooks_sent),
        );
        counter(
            &mut s,
            "vigil_control_webhooks_failed_total",
            "Webhook deliveries that failed after every retry.",
            get(&self.webhooks_failed),
        );
        counter(
            &mut s,
            "vigil_control_webhooks_dropped_total",
            "Webhook events dropped (queue full).",
            get(&self.webhooks_dropped),
        );
        counter(
            &mut s,
            "vigil_control_storage_errors_total",
            "SQLite write failures.",
            get(&self.storage_errors),
        );
        counter(
            &mut s,
            "vigil_control_render_errors_total",
            "GitOps render failures.",
            get(&self.render_errors),
        );
        counter(
            &mut s,
            "vigil_control_analysis_ticks_total",
            "Analysis ticks run.",
            get(&self.ticks),
        );
        counter(
            &mut s,
            "vigil_control_evidence_clipped_requests_total",
            "Requests removed from sidecar evidence by the per-sidecar plausibility limits.",
            get(&self.evidence_clipped),
        );
        counter(
            &mut s,
            "vigil_control_unsupported_critical_total",
            "Sidecar critical claims ignored: the report lacked the canary's counts.",
            get(&self.unsupported_critical),
        );
        counter(
            &mut s,
            "vigil_control_unconfirmed_critical_total",
            "Sidecar critical claims the control-side re-test on merged evidence did not confirm.",
            get(&self.unconfirmed_critical),
        );
        counter(
            &mut s,
            "vigil_control_sidecars_expired_total",
            "Sidecar identities forgotten after inactivity.",
            get(&self.sidecars_expired),
        );
        let _ = writeln!(s, "# HELP vigil_control_reports_rejected_total Reports and writes refused, by reason.\n# TYPE vigil_control_reports_rejected_total counter");
        for (r, c) in Reject::ALL.iter().zip(self.rejected.iter()) {
            let _ = writeln!(
                s,
                "vigil_control_reports_rejected_total{{reason=\"{}\"}} {}",
                r.as_str(),
                get(c)
            );
        }
        let _ = writeln!(s, "# HELP vigil_control_decisions_total Rollout decisions, by kind.\n# TYPE vigil_control_decisions_total counter");
        for (k, c) in DecisionKind::ALL.iter().zip(self.decisions.iter()) {
            let _ = writeln!(
                s,
                "vigil_control_decisions_total{{kind=\"{}\"}} {}",
                k.as_str(),
                get(c)
            );
        }
        let _ = writeln!(s, "# HELP vigil_control_routing_version Version of the routing document.\n# TYPE vigil_control_routing_version gauge\nvigil_control_routing_version {routing_version}");
        let _ = writeln!(s, "# HELP vigil_control_canaries Managed canaries.\n# TYPE vigil_control_canaries gauge\nvigil_control_canaries {canaries}");
        let _ = writeln!(s, "# HELP vigil_control_canaries_by_phase Managed canaries by phase.\n# TYPE vigil_control_canaries_by_phase gauge");
        for (phase, n) in phases {
            let _ = writeln!(
                s,
                "vigil_control_canaries_by_phase{{phase=\"{phase}\"}} {n}"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels() {
        let m = Metrics::default();
        m.reject(Reject::OutOfOrder);
        m.decision(DecisionKind::Rollback);
        Metrics::add(&m.series_updates, 5);
        let text = m.render(7, 1, &[("progressing", 1)]);
        assert!(text.contains("vigil_control_reports_rejected_total{reason=\"out_of_order\"} 1"));
        assert!(text.contains("vigil_control_decisions_total{kind=\"rollback\"} 1"));
        assert!(text.contains("vigil_control_series_updates_total 5"));
        assert!(text.contains("vigil_control_routing_version 7"));
    }
}
