//! What one series observed over one window: request counters plus a latency
//! histogram. The filter produces these (worker-local, merged through shared
//! data), the scorer consumes them, and the offline tools simulate them.

use crate::histogram::{LatencyHistogram, SparseHistogram};

/// Request counters of one series over one window. All additive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests completed with an outcome the judgement uses: every logged
    /// request except those whose client left (`client_gone`, counted
    /// apart), so a client resetting its own requests changes no share, no
    /// minimum evidence and no rate.
    pub requests: u64,
    /// Errors as users see them and the upstream answers for: server errors,
    /// upstream resets / truncated streams / no response, timeouts and
    /// unknown gRPC codes (not throttling, client errors or clients gone).
    pub errors: u64,
    /// Client errors (4xx other than 429, gRPC client codes): tracked, not
    /// counted as errors.
    pub status_4xx: u64,
    /// Upstream resets, connection failures, protocol errors and truncated
    /// streams (`UF`, `UC`, `UR`, `LR`, `UH`, `UPE`, `URX`, no response).
    pub resets: u64,
    /// Upstream overflow (circuit breaker, `UO`).
    pub overflows: u64,
    /// Timeouts (`UT`, `SI`, gRPC `DEADLINE_EXCEEDED`).
    pub timeouts: u64,
    /// Extra upstream attempts (retries): `request_attempt_count - 1`.
    pub retries: u64,
    /// Sum of latencies in microseconds (for the mean).
    pub latency_sum_us: u64,
    /// Server errors (5xx, gRPC server-fault codes): one outcome class.
    pub server_errors: u64,
    /// Throttled requests (429, gRPC `RESOURCE_EXHAUSTED`, `UO`).
    pub throttled: u64,
    /// Requests the client abandoned (`DC`, downstream reset): never an
    /// error, and not part of `requests`.
    pub client_gone: u64,
    /// Responses with a gRPC status code outside the defined ones.
    pub grpc_unknown: u64,
}

impl Counters {
    /// Add another window's counters.
    pub fn add(&mut self, other: &Counters) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.status_4xx = self.status_4xx.saturating_add(other.status_4xx);
        self.resets = self.resets.saturating_add(other.resets);
        self.overflows = self.overflows.saturating_add(other.overflows);
        self.timeouts = self.timeouts.saturating_add(other.timeouts);
        self.retries = self.retries.saturating_add(other.retries);
        self.latency_sum_us = self.latency_sum_us.saturating_add(other.latency_sum_us);
        self.server_errors = self.server_errors.saturating_add(other.server_errors);
        self.throttled = self.throttled.saturating_add(other.throttled);
        self.client_gone = self.client_gone.saturating_add(other.client_gone);
        self.grpc_unknown = self.grpc_unknown.saturating_add(other.grpc_unknown);
    }

    /// Remove a window previously added (rolling windows). Saturates at zero.
    pub fn sub(&mut self, other: &Counters) {
        self.requests = self.requests.saturating_sub(other.requests);
        self.errors = self.errors.saturating_sub(other.errors);
        self.status_4xx = self.status_4xx.saturating_sub(other.status_4xx);
        self.resets = self.resets.saturating_sub(other.resets);
        self.overflows = self.overflows.saturating_sub(other.overflows);
        self.timeouts = self.timeouts.saturating_sub(other.timeouts);
        self.retries = self.retries.saturating_sub(other.retries);
        self.latency_sum_us = self.latency_sum_us.saturating_sub(other.latency_sum_us);
        self.server_errors = self.server_errors.saturating_sub(other.server_errors);
        self.throttled = self.throttled.saturating_sub(other.throttled);
        self.client_gone = self.client_gone.saturating_sub(other.client_gone);
        self.grpc_unknown = self.grpc_unknown.saturating_sub(other.grpc_unknown);
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Counters::default()
    }
}

/// One tick's worth of observations for one series, in the compact form that
/// travels through shared data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickDelta {
    /// Counters.
    pub counters: Counters,
    /// Latency histogram, sparse.
    pub latency: SparseHistogram,
}

impl TickDelta {
    /// True when nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.latency.is_empty()
    }

    /// Add another delta into this one (sparse merge, stays sorted).
    pub fn add(&mut self, other: &TickDelta) {
        self.add_parts(&other.counters, &other.latency);
    }

    /// Add counters and a sparse histogram (increasing buckets) into this
    /// delta without building a `TickDelta` for them. In place, without
    /// allocating, when every bucket of `latency` is already present (the
    /// steady state of a series merged tick after tick).
    pub fn add_parts(&mut self, counters: &Counters, latency: &[(u16, u32)]) {
        self.counters.add(counters);
        add_sparse(&mut self.latency, latency);
    }
}

/// Merge the sparse histogram `other` into `into` (both with increasing
/// buckets; counts saturate). In place when `into` already has every bucket
/// of `other`; otherwise one new vector.
pub fn add_sparse(into: &mut SparseHistogram, other: &[(u16, u32)]) {
    if other.is_empty() {
        return;
    }
    if into.is_empty() {
        into.extend_from_slice(other);
        return;
    }
    let mut slots = into.iter().peekable();
    let in_place = other.iter().all(|&(bucket, _)| {
        while slots.next_if(|(b, _)| *b < bucket).is_some() {}
        slots.next_if(|(b, _)| *b == bucket).is_some()
    });
    if in_place {
        let mut slots = into.iter_mut();
        for &(bucket, n) in other {
            if let Some(slot) = slots.find(|(b, _)| *b == bucket) {
                slot.1 = slot.1.saturating_add(n);
            }
        }
        return;
    }
    let mut merged = Vec::with_capacity(into.len() + other.len());
    let (mut a, mut b) = (into.iter().peekable(), other.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(&&(ia, na)), Some(&&(ib, nb))) => {
                if ia == ib {
                    merged.push((ia, na.saturating_add(nb)));
                    a.next();
                    b.next();
                } else if ia < ib {
                    merged.push((ia, na));
                    a.next();
                } else {
                    merged.push((ib, nb));
                    b.next();
                }
            }
            (Some(&&x), None) => {
                merged.push(x);
                a.next();
            }
            (None, Some(&&x)) => {
                merged.push(x);
                b.next();
            }
            (None, None) => break,
        }
    }
    *into = merged;
}

impl TickDelta {
    /// Build from counters and a recording histogram.
    pub fn from_parts(counters: Counters, latency: &LatencyHistogram) -> Self {
        TickDelta {
            counters,
            latency: latency.to_sparse(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_add_merges_sorted() {
        let mut a = TickDelta {
            counters: Counters {
                requests: 2,
                ..Default::default()
            },
            latency: vec![(3, 1), (10, 1)],
        };
        let b = TickDelta {
            counters: Counters {
                requests: 3,
                errors: 1,
                ..Default::default()
            },
            latency: vec![(1, 1), (10, 2)],
        };
        a.add(&b);
        assert_eq!(a.counters.requests, 5);
        assert_eq!(a.counters.errors, 1);
        assert_eq!(a.latency, vec![(1, 1), (3, 1), (10, 3)]);
    }

    #[test]
    fn sparse_add_in_place_equals_the_merge() {
        // Every bucket present: updated in place, the buffer kept.
        let mut h = vec![(1, 1), (3, 1), (10, 3)];
        let before = h.as_ptr();
        add_sparse(&mut h, &[(3, 2), (10, u32::MAX)]);
        assert_eq!(h, vec![(1, 1), (3, 3), (10, u32::MAX)]);
        assert_eq!(h.as_ptr(), before);
        // A bucket missing (in the middle, at either end): merged.
        for (other, want) in [
            (vec![(2, 1)], vec![(1, 1), (2, 1), (3, 3)]),
            (vec![(0, 1), (3, 1)], vec![(0, 1), (1, 1), (3, 4)]),
            (vec![(1, 1), (9, 1)], vec![(1, 2), (3, 3), (9, 1)]),
        ] {
            let mut h = vec![(1, 1), (3, 3)];
            add_sparse(&mut h, &other);
            assert_eq!(h, want, "{other:?}");
        }
        let mut h = Vec::new();
        add_sparse(&mut h, &[(4, 2)]);
        assert_eq!(h, vec![(4, 2)]);
        add_sparse(&mut h, &[]);
        assert_eq!(h, vec![(4, 2)]);
    }
}
