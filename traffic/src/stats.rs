//! The counts of one edge — requests, error classes, latency and
//! time-to-first-byte histograms, streams — and their one merge, shared by
//! the filter's aggregator (per tick, per worker, in shared data) and the
//! control service's dependency map (per time bucket).

use vigil_scorer::histogram::bucket_index;
use vigil_wire::edges::Edge;

/// Counts of one edge over some span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests.
    pub requests: u64,
    /// 5xx and no-response.
    pub errors: u64,
    /// 4xx.
    pub status_4xx: u64,
    /// 401 / 403 (already in `status_4xx`).
    pub denied: u64,
    /// Sum of latencies, µs.
    pub latency_sum_us: u64,
    /// Sparse latency histogram `[(bucket, count)]`, sorted by bucket.
    pub latency: Vec<(u16, u32)>,
    /// Sparse time-to-first-byte histogram, sorted by bucket.
    pub ttft: Vec<(u16, u32)>,
    /// Requests answered as a stream (two or more body chunks).
    pub streamed: u64,
}

/// Add `n` to `bucket` of a sorted sparse histogram.
pub fn add_sparse(into: &mut Vec<(u16, u32)>, bucket: u16, n: u32) {
    match into.binary_search_by_key(&bucket, |&(b, _)| b) {
        Ok(i) => {
            if let Some(e) = into.get_mut(i) {
                e.1 = e.1.saturating_add(n);
            }
        }
        Err(i) => into.insert(i, (bucket, n)),
    }
}

impl Stats {
    /// Count one finished request.
    pub fn observe(
        &mut self,
        status: u16,
        is_error: bool,
        latency_us: Option<u64>,
        ttft_us: Option<u64>,
        streamed: bool,
    ) {
        self.requests = self.requests.saturating_add(1);
        if is_error {
            self.errors = self.errors.saturating_add(1);
        } else if (400..500).contains(&status) {
            self.status_4xx = self.status_4xx.saturating_add(1);
            if status == 401 || status == 403 {
                self.denied = self.denied.saturating_add(1);
            }
        }
        if let Some(us) = latency_us {
            self.latency_sum_us = self.latency_sum_us.saturating_add(us);
            add_sparse(&mut self.latency, bucket_index(us), 1);
        }
        if let Some(us) = ttft_us {
            add_sparse(&mut self.ttft, bucket_index(us), 1);
        }
        self.streamed = self.streamed.saturating_add(u64::from(streamed));
    }

    /// Add another span's counts (saturating).
    pub fn merge(&mut self, o: &Stats) {
        self.requests = self.requests.saturating_add(o.requests);
        self.errors = self.errors.saturating_add(o.errors);
        self.status_4xx = self.status_4xx.saturating_add(o.status_4xx);
        self.denied = self.denied.saturating_add(o.denied);
        self.latency_sum_us = self.latency_sum_us.saturating_add(o.latency_sum_us);
        for &(b, n) in &o.latency {
            add_sparse(&mut self.latency, b, n);
        }
        for &(b, n) in &o.ttft {
            add_sparse(&mut self.ttft, b, n);
        }
        self.streamed = self.streamed.saturating_add(o.streamed);
    }

    /// Add a report edge's counts.
    pub fn merge_edge(&mut self, e: &Edge) {
        self.merge(&Stats::of_edge(e));
    }

    /// An edge's counts (copied).
    pub fn of_edge(e: &Edge) -> Stats {
        Stats {
            requests: e.requests,
            errors: e.errors,
            status_4xx: e.status_4xx,
            denied: e.denied,
            latency_sum_us: e.latency_sum_us,
            latency: e.latency.clone(),
            ttft: e.ttft.clone(),
            streamed: e.streamed,
        }
    }

    /// Move an edge's counts out (its histograms left empty).
    pub fn take_from(e: &mut Edge) -> Stats {
        Stats {
            requests: e.requests,
            errors: e.errors,
            status_4xx: e.status_4xx,
            denied: e.denied,
            latency_sum_us: e.latency_sum_us,
            latency: std::mem::take(&mut e.latency),
            ttft: std::mem::take(&mut e.ttft),
            streamed: e.streamed,
        }
    }

    /// Write these counts into an edge.
    pub fn put_into(self, e: &mut Edge) {
        e.requests = self.requests;
        e.errors = self.errors;
        e.status_4xx = self.status_4xx;
        e.denied = self.denied;
        e.latency_sum_us = self.latency_sum_us;
        e.latency = self.latency;
        e.ttft = self.ttft;
        e.streamed = self.streamed;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn observe_then_merge_adds_field_for_field() {
        let mut a = Stats::default();
        a.observe(200, false, Some(1_000), Some(100), true);
        a.observe(503, true, Some(1_000), None, false);
        a.observe(403, false, None, None, false);
        assert_eq!(
            (a.requests, a.errors, a.status_4xx, a.denied, a.streamed),
            (3, 1, 1, 1, 1)
        );
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.requests, 6);
        assert_eq!(b.latency_sum_us, 4_000);
        assert_eq!(b.latency, vec![(bucket_index(1_000), 4)]);
        assert_eq!(b.ttft.iter().map(|x| x.1).sum::<u32>(), 2);
    }

    #[test]
    fn edge_round_trip() {
        let mut s = Stats::default();
        s.observe(200, false, Some(5_000), Some(700), true);
        let mut e: Edge = serde_json::from_str(
            r#"{"source":"a","service":"b","method":"GET","path":"/","requests":0}"#,
        )
        .unwrap();
        s.clone().put_into(&mut e);
        assert_eq!(Stats::of_edge(&e), s);
        assert_eq!(Stats::take_from(&mut e), s);
        assert!(e.latency.is_empty());
    }
}
