//! Series lifecycle on the lease holder: which registered series have been
//! idle long enough to leave the registry, and which ids were reused by a new
//! series since the last tick (so the holder starts that id's scoring state
//! afresh instead of judging the newcomer with its predecessor's baseline).
//!
//! Idleness is counted in the holder's scoring ticks: a series whose merged
//! delta carried no request for `series_idle_s` worth of ticks is a victim.
//! A new holder starts counting from zero, so a lease move only delays
//! evictions. The overflow series is never a victim.

use crate::registry::OVERFLOW_ID;

/// Per-id idle counters and the epoch they belong to.
#[derive(Debug, Default, Clone)]
pub struct IdleTracker {
    /// Epoch of the series each id's state belongs to (`None`: free / unseen).
    epochs: Vec<Option<u64>>,
    /// Consecutive ticks without a request.
    idle: Vec<u32>,
}

/// What [`IdleTracker::observe`] found about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The same series as last tick.
    Same,
    /// A different series (or the first one) holds this id now: its scoring
    /// state must start afresh.
    New,
    /// The id is free.
    Free,
}

impl IdleTracker {
    /// Observe id `id` this tick: `epoch` from the registry (`None` when the
    /// place is free), `active` when its delta carried requests.
    pub fn observe(&mut self, id: u32, epoch: Option<u64>, active: bool) -> Seen {
        let i = id as usize;
        if self.epochs.len() <= i {
            self.epochs.resize(i + 1, None);
            self.idle.resize(i + 1, 0);
        }
        let (Some(slot), Some(idle)) = (self.epochs.get_mut(i), self.idle.get_mut(i)) else {
            return Seen::Free;
        };
        let seen = match epoch {
            None => Seen::Free,
            Some(e) if *slot == Some(e) => Seen::Same,
            Some(_) => Seen::New,
        };
        if seen != Seen::Same {
            *idle = 0;
        }
        *slot = epoch;
        if active {
            *idle = 0;
        } else if seen == Seen::Same {
            *idle = idle.saturating_add(1);
        }
        seen
    }

    /// Series idle for at least `limit_ticks`, as `(id, epoch)`.
    pub fn victims(&self, limit_ticks: u32) -> Vec<(u32, u64)> {
        self.epochs
            .iter()
            .zip(&self.idle)
            .enumerate()
            .filter_map(|(i, (e, idle))| {
                let e = (*e)?;
                (i as u32 != OVERFLOW_ID && *idle >= limit_ticks).then_some((i as u32, e))
            })
            .collect()
    }

    /// Forget an id whose series was evicted.
    pub fn forget(&mut self, id: u32) {
        if let Some(e) = self.epochs.get_mut(id as usize) {
            *e = None;
        }
        if let Some(i) = self.idle.get_mut(id as usize) {
            *i = 0;
        }
    }
}

/// Ticks in `idle_ms` at `tick_ms` per tick (rounded up, at least 1).
pub fn idle_ticks(idle_ms: u64, tick_ms: u64) -> u32 {
    let t = idle_ms.div_ceil(tick_ms.max(1)).max(1);
    u32::try_from(t).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_series_become_victims_active_ones_never() {
        let mut t = IdleTracker::default();
        assert_eq!(t.observe(0, Some(0), false), Seen::New);
        assert_eq!(t.observe(1, Some(5), true), Seen::New);
        assert_eq!(t.observe(2, Some(6), true), Seen::New);
        for _ in 0..3 {
            t.observe(0, Some(0), false);
            assert_eq!(t.observe(1, Some(5), false), Seen::Same);
            t.observe(2, Some(6), true);
        }
        assert_eq!(t.victims(3), vec![(1, 5)], "overflow (id 0) never");
        assert!(t.victims(4).is_empty());
        t.forget(1);
        assert!(t.victims(3).is_empty());
        assert_eq!(t.observe(1, None, false), Seen::Free);
        assert_eq!(t.observe(1, Some(9), false), Seen::New, "id reused");
        assert_eq!(idle_ticks(600_000, 1000), 600);
        assert_eq!(idle_ticks(1_500, 1000), 2);
        assert_eq!(idle_ticks(1, 0), 1);
    }
}
