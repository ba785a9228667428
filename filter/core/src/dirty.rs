//! The list of series with pending data in shared data (`Keys::dirty`).
//!
//! A worker that merges a series' pending observations into its
//! `vigil.v<format>.<identity>.d.<id>` key also announces the id here (one
//! CAS update per tick for all its series). The lease holder takes the list
//! once per tick and reads only the announced series' keys, so an idle
//! series costs it no hostcall. Ids whose announcement failed are kept by
//! the worker and announced again at its next tick; the holder also sweeps a
//! slice of all series every tick ([`sweep_period`]) and every series on its
//! first pass, so a record is never stranded.
//!
//! The record is the ids as little-endian `u32`s, sorted, without repeats
//! (bounded by the registry's capacity).

use crate::shared::{update, SetError, SharedStore, Update};

/// Every series' key is read at least once in this many holder ticks,
/// announced or not (each tick reads the ids `i` with
/// `(i + generation) % period == 0`, [`sweep_period`]), up to
/// [`SWEEP_MAX_READS`] series.
pub const SWEEP_TICKS: u64 = 20;

/// At most about this many unannounced keys swept per holder tick: past
/// `SWEEP_TICKS × SWEEP_MAX_READS` series the sweep takes longer instead of
/// reading more (a record is stranded only when an announcement is lost for
/// good, which the retries make rare; an idle series should cost nothing).
pub const SWEEP_MAX_READS: u64 = 128;

/// The sweep's period for `series` series: [`SWEEP_TICKS`], or longer so
/// that a tick sweeps at most [`SWEEP_MAX_READS`] keys.
pub fn sweep_period(series: usize) -> u64 {
    SWEEP_TICKS.max((series as u64).div_ceil(SWEEP_MAX_READS))
}

/// Decode a list (a trailing partial id is ignored).
pub fn decode(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .filter_map(|c| <[u8; 4]>::try_from(c).ok())
        .map(u32::from_le_bytes)
        .collect()
}

/// Encode a sorted, de-duplicated list.
pub fn encode(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// Add `ids` to the list at `key`.
pub fn announce<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    ids: &[u32],
    attempts: u32,
) -> Update {
    update(store, key, attempts, |current| {
        let mut all = current.map(decode).unwrap_or_default();
        all.extend_from_slice(ids);
        all.sort_unstable();
        all.dedup();
        encode(&all)
    })
}

/// Take the list at `key`, leaving it empty: `Some(ids)` (sorted), or
/// `None` when it could not be taken (the caller then reads every series).
pub fn take<S: SharedStore + ?Sized>(store: &S, key: &str, attempts: u32) -> Option<Vec<u32>> {
    for _ in 0..attempts.max(1) {
        let Some((bytes, cas)) = store.get(key) else {
            return Some(Vec::new());
        };
        if bytes.is_empty() {
            return Some(Vec::new());
        }
        match store.set(key, b"", Some(cas)) {
            Ok(()) => return Some(decode(&bytes)),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;

    #[test]
    fn announcements_merge_sorted_without_repeats_and_take_empties() {
        let s = MemoryStore::default();
        assert_eq!(take(&s, "k", 3), Some(vec![]));
        assert!(matches!(
            announce(&s, "k", &[7, 3], 3),
            Update::Written { .. }
        ));
        assert!(matches!(
            announce(&s, "k", &[3, 1], 3),
            Update::Written { .. }
        ));
        assert_eq!(take(&s, "k", 3), Some(vec![1, 3, 7]));
        assert_eq!(take(&s, "k", 3), Some(vec![]));
    }

    #[test]
    fn a_partial_trailing_id_is_ignored() {
        assert_eq!(decode(&[1, 0, 0, 0, 9]), vec![1]);
        assert_eq!(decode(&encode(&[5, 70_000])), vec![5, 70_000]);
    }
}
