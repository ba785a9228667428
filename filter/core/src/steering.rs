//! Managed canaries: finding their series, and deciding when a route is
//! steered to stable.
//!
//! Two concerns, both pure:
//! - [`match_series`] / [`cluster_side`] say whether a series (route ×
//!   cluster) or a request's selected cluster is the stable or the canary side
//!   of a configured canary, by the cluster names [`crate::naming`] derived;
//!   route names matter only when a canary was restricted to one route.
//! - [`SteerController`] is the hysteresis. A critical canary verdict (which
//!   the scorer gives only with enough evidence) starts steering at once. While
//!   steered the canary gets no traffic, so its verdict cannot clear; steering
//!   is therefore held for `hold` after the last critical verdict and then
//!   released to probe. A canary that turns critical again soon after a
//!   release is held twice as long (up to `max_hold`), so a sick canary cannot
//!   make routing flap.

use crate::config::{CanarySpec, SteeringConfig};
use vigil_scorer::verdict::{Signal, State, Verdict};

/// Which side of a canary a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The stable version.
    Stable,
    /// The canary version.
    Canary,
}

pub use crate::naming::istio_subset_host;

/// Which side of `spec` a cluster is, on any route: what a request belongs to
/// when the route it selected sends it to that cluster (route names do not
/// matter, so header rules and the default rule may be named differently).
pub fn cluster_side(spec: &CanarySpec, cluster: &[u8]) -> Option<Side> {
    if spec.stable.matches(cluster) {
        Some(Side::Stable)
    } else if spec.canary.matches(cluster) {
        Some(Side::Canary)
    } else {
        None
    }
}

/// Whether `route` is one `spec` is managed on: every route, unless the
/// canary was restricted to one route name (plain Envoy's optional `route`).
pub fn route_allowed(spec: &CanarySpec, route: &[u8]) -> bool {
    spec.route.as_ref().is_none_or(|r| r.as_bytes() == route)
}

/// Whether a series (route × cluster) belongs to `spec`, and on which side.
pub fn match_series(spec: &CanarySpec, route: &[u8], cluster: &[u8]) -> Option<Side> {
    if route_allowed(spec, route) {
        cluster_side(spec, cluster)
    } else {
        None
    }
}

/// Steering hysteresis for one canary on one route.
#[derive(Debug, Clone, PartialEq)]
pub struct SteerController {
    steering: bool,
    reason: Signal,
    until_ms: u64,
    released_ms: Option<u64>,
    hold_ms: u64,
}

/// A change of steering state, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Steering started (or restarted after a release).
    Started {
        /// Hold applied.
        hold_ms: u64,
    },
    /// Steering released to probe the canary again.
    Released,
}

impl SteerController {
    /// A controller that is not steering.
    pub fn new(cfg: &SteeringConfig) -> Self {
        SteerController {
            steering: false,
            reason: Signal::None,
            until_ms: 0,
            released_ms: None,
            hold_ms: cfg.hold_ms,
        }
    }

    /// True while the route is steered to stable.
    pub fn is_steering(&self) -> bool {
        self.steering
    }

    /// The signal that started the current steering.
    pub fn reason(&self) -> Signal {
        self.reason
    }

    /// Feed this tick's canary verdict.
    pub fn update(
        &mut self,
        verdict: &Verdict,
        now_ms: u64,
        cfg: &SteeringConfig,
    ) -> Option<Transition> {
        let critical = verdict.state == State::Critical;
        if self.steering {
            if critical {
                self.until_ms = self.until_ms.max(now_ms.saturating_add(self.hold_ms));
                return None;
            }
            if now_ms >= self.until_ms {
                self.steering = false;
                self.released_ms = Some(now_ms);
                return Some(Transition::Released);
            }
            return None;
        }
        if !critical {
            // A long healthy stretch after a release resets the backoff.
            if let Some(released) = self.released_ms {
                if now_ms.saturating_sub(released) > self.hold_ms.saturating_mul(2) {
                    self.hold_ms = cfg.hold_ms;
                    self.released_ms = None;
                }
            }
            return None;
        }
        let relapse = self
            .released_ms
            .is_some_and(|r| now_ms.saturating_sub(r) <= self.hold_ms.saturating_mul(2));
        self.hold_ms = if relapse {
            self.hold_ms.saturating_mul(2).min(cfg.max_hold_ms)
        } else {
            cfg.hold_ms
        };
        self.steering = true;
        self.reason = verdict.evidence.signal;
        self.until_ms = now_ms.saturating_add(self.hold_ms);
        Some(Transition::Started {
            hold_ms: self.hold_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_scorer::verdict::Evidence;

    fn verdict(state: State) -> Verdict {
        Verdict {
            score: if state == State::Critical { 900 } else { 0 },
            state,
            evidence: Evidence {
                signal: Signal::Latency,
                ..Default::default()
            },
        }
    }

    const CFG: SteeringConfig = SteeringConfig {
        hold_ms: 10_000,
        max_hold_ms: 25_000,
    };

    #[test]
    fn istio_cluster_names() {
        assert_eq!(
            istio_subset_host(b"outbound|9080|v2|reviews.default.svc.cluster.local"),
            Some((&b"v2"[..], &b"reviews.default.svc.cluster.local"[..]))
        );
        assert_eq!(istio_subset_host(b"inbound|9080||"), None);
        assert_eq!(istio_subset_host(b"stable"), None);
        let spec = CanarySpec {
            name: "r".into(),
            naming: crate::config::Naming::Istio,
            route: None,
            stable: crate::naming::ClusterMatch::IstioSubset {
                subset: "v1".into(),
                host: "reviews.default.svc.cluster.local".into(),
            },
            canary: crate::naming::ClusterMatch::IstioSubset {
                subset: "v2".into(),
                host: "reviews.default.svc.cluster.local".into(),
            },
        };
        assert_eq!(
            match_series(
                &spec,
                b"any",
                b"outbound|9080|v2|reviews.default.svc.cluster.local"
            ),
            Some(Side::Canary)
        );
        assert_eq!(
            match_series(
                &spec,
                b"any",
                b"outbound|9080|v1|reviews.default.svc.cluster.local"
            ),
            Some(Side::Stable)
        );
        assert_eq!(
            match_series(
                &spec,
                b"any",
                b"outbound|9080|v3|reviews.default.svc.cluster.local"
            ),
            None
        );
    }

    #[test]
    fn holds_then_releases_and_backs_off_on_relapse() {
        let mut c = SteerController::new(&CFG);
        assert_eq!(c.update(&verdict(State::Ok), 0, &CFG), None);
        assert_eq!(
            c.update(&verdict(State::Critical), 1_000, &CFG),
            Some(Transition::Started { hold_ms: 10_000 })
        );
        // No traffic to the canary while steered: insufficient data.
        assert_eq!(
            c.update(&verdict(State::InsufficientData), 5_000, &CFG),
            None
        );
        assert!(c.is_steering());
        assert_eq!(
            c.update(&verdict(State::InsufficientData), 11_000, &CFG),
            Some(Transition::Released)
        );
        // Still sick: relapse, hold doubles, capped.
        assert_eq!(
            c.update(&verdict(State::Critical), 13_000, &CFG),
            Some(Transition::Started { hold_ms: 20_000 })
        );
        assert_eq!(
            c.update(&verdict(State::Ok), 33_000, &CFG),
            Some(Transition::Released)
        );
        assert_eq!(
            c.update(&verdict(State::Critical), 34_000, &CFG),
            Some(Transition::Started { hold_ms: 25_000 })
        );
        assert_eq!(c.reason(), Signal::Latency);
    }

    #[test]
    fn warn_never_steers() {
        let mut c = SteerController::new(&CFG);
        for t in 0..100 {
            assert_eq!(c.update(&verdict(State::Warn), t * 1000, &CFG), None);
        }
        assert!(!c.is_steering());
    }
}
