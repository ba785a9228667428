//! Time to first byte (TTFT for a streamed answer) of one series, over the
//! scorer's rolling window.
//!
//! Why its own window: the latency histogram measures whole requests; a
//! streaming model server whose first token slows from 300 to 900 ms while
//! the stream's total duration stays equal looks unchanged there. The filter
//! records the time from request headers to the first response body byte
//! in a second sparse histogram per series and tick; this keeps the last
//! `window_ticks` of them (running sum for quantiles, the ticks themselves
//! for the recent window and ageing) so the canary test
//! ([`crate::sequential::CanaryMonitor::observe_ttft`]) can ask "which share
//! of the canary's first bytes are slower than stable's p95?".

use std::collections::VecDeque;

use crate::histogram::{LatencyHistogram, SparseHistogram};

/// The TTFT histograms of one series' last ticks.
#[derive(Debug, Clone, Default)]
pub struct TtftWindow {
    ticks: VecDeque<SparseHistogram>,
    window: LatencyHistogram,
    recent: LatencyHistogram,
    recent_ticks: usize,
}

impl TtftWindow {
    /// An empty window.
    pub fn new() -> Self {
        TtftWindow::default()
    }

    /// Add this tick's TTFT histogram (empty when none), keeping
    /// `window_ticks` ticks in the window and `recent_ticks` in the recent one.
    pub fn observe(&mut self, tick: &[(u16, u32)], window_ticks: u32, recent_ticks: u32) {
        let cap = (window_ticks.max(1)) as usize;
        let recent = (recent_ticks.max(1) as usize).min(cap);
        self.window.merge_sparse(tick);
        self.recent.merge_sparse(tick);
        self.ticks.push_back(tick.to_vec());
        // The tick leaving the recent window.
        if self.ticks.len() > recent {
            if let Some(old) = self.ticks.get(self.ticks.len() - 1 - recent) {
                self.recent.subtract_sparse(old);
            }
        }
        while self.ticks.len() > cap {
            if let Some(old) = self.ticks.pop_front() {
                self.window.subtract_sparse(&old);
            }
        }
        self.recent_ticks = recent;
    }

    /// TTFTs over the whole window.
    pub fn window(&self) -> &LatencyHistogram {
        &self.window
    }

    /// TTFTs over the recent window.
    pub fn recent(&self) -> &LatencyHistogram {
        &self.recent
    }

    /// The newest tick's histogram (empty before any tick).
    pub fn last_tick(&self) -> &[(u16, u32)] {
        self.ticks.back().map_or(&[], |t| t.as_slice())
    }

    /// Quantile `q` over the window, µs.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        self.window.quantile_us(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(us: u64, n: u32) -> SparseHistogram {
        let mut h = LatencyHistogram::new();
        for _ in 0..n {
            h.record_us(us);
        }
        h.to_sparse()
    }

    #[test]
    fn rolls_the_window_and_the_recent_window() {
        let mut w = TtftWindow::new();
        for _ in 0..10 {
            w.observe(&tick(300_000, 10), 10, 3);
        }
        assert_eq!(w.window().count(), 100);
        assert_eq!(w.recent().count(), 30);
        for _ in 0..3 {
            w.observe(&tick(900_000, 10), 10, 3);
        }
        assert_eq!(w.window().count(), 100);
        let recent_p50 = w.recent().quantile_us(0.5).unwrap_or(0.0);
        assert!((850_000.0..950_000.0).contains(&recent_p50), "{recent_p50}");
        let p50 = w.quantile_us(0.5).unwrap_or(0.0);
        assert!(p50 < 350_000.0, "{p50}");
        w.observe(&[], 10, 3);
        assert_eq!(w.recent().count(), 20);
        assert!(w.last_tick().is_empty());
    }
}
