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
        self.recent_ticks = recent;
        if tick.is_empty() && self.window.count() == 0 {
            // Nothing in the window and nothing new (a series without
            // streaming responses, every tick): the window stays empty.
            // Forgetting the empty ticks is exact: a later tick still leaves
            // the recent window `recent` ticks and the window `cap` ticks
            // after it arrives.
            self.ticks.clear();
            return;
        }
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

    /// The empty-window fast path gives exactly the windows of summing the
    /// last `window` and `recent` ticks, over runs of silence and traffic.
    #[test]
    fn idle_stretches_keep_the_windows_exact() {
        let mut w = TtftWindow::new();
        let mut history: Vec<SparseHistogram> = Vec::new();
        let mut seed = 7u64;
        for t in 0..400u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            // Long quiet stretches with bursts in between.
            let busy = (t / 25) % 3 == 1 && (seed >> 33) % 4 != 0;
            let this = if busy {
                tick(
                    1_000 + (seed >> 40) % 500_000,
                    1 + ((seed >> 20) % 5) as u32,
                )
            } else {
                Vec::new()
            };
            w.observe(&this, 10, 3);
            history.push(this);
            let sum = |n: usize| {
                let mut h = LatencyHistogram::new();
                for old in history.iter().rev().take(n) {
                    h.merge_sparse(old);
                }
                h
            };
            assert_eq!(w.window(), &sum(10), "window at tick {t}");
            assert_eq!(w.recent(), &sum(3), "recent at tick {t}");
        }
    }
}
