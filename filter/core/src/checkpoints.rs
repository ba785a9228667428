//! Self-baseline checkpoints in shared data, batched by id group.
//!
//! The lease holder checkpoints each series' self-baseline so a new holder
//! resumes it instead of warming up. One key per series made the holder
//! write a tenth of all series' keys every tick: at 10 000 series, 1 000
//! shared-data writes per tick, each one hostcall. Here one key
//! ([`crate::keys::Keys::checkpoints`]) holds the checkpoints of [`GROUP`]
//! consecutive ids, and a group is written whole when it is due, so the
//! same checkpoints cost 64 times fewer hostcalls; a new holder reads a
//! group once for all its series.
//!
//! Each entry carries the registry epoch of the series it was taken from:
//! an id freed and given to another series has a new epoch, so the new
//! series never resumes the old one's baseline (no clearing write needed
//! when a series is evicted).
//!
//! Record: a version byte ([`RECORD_VERSION`]), then entries of
//! `slot: u8` (id − group × [`GROUP`]), `epoch: u64` LE, `len: u16` LE and
//! `len` checkpoint bytes. A record that does not parse yields nothing (the
//! series warms up afresh), never a panic.
//!
//! ```
//! use vigil_filter_core::checkpoints::{find, group_of, GroupWriter};
//! let mut w = GroupWriter::new(group_of(70));
//! assert!(w.push(70, 3, b"baseline"));
//! assert!(!w.push(5, 1, b"other group"));
//! let (group, record) = w.finish();
//! assert_eq!(group, 1);
//! assert_eq!(find(&record, 70, 3), Some(&b"baseline"[..]));
//! assert_eq!(find(&record, 70, 4), None, "another series at that id");
//! ```

/// Consecutive series ids per checkpoint key.
pub const GROUP: u32 = 64;

/// Version byte at the start of a group record.
pub const RECORD_VERSION: u8 = 1;

/// Bytes of an entry's header (slot, epoch, length).
const ENTRY_HEADER: usize = 1 + 8 + 2;

/// The group holding series `id`'s checkpoint.
pub fn group_of(id: u32) -> u32 {
    id / GROUP
}

/// Builds one group's record.
#[derive(Debug)]
pub struct GroupWriter {
    group: u32,
    record: Vec<u8>,
    entries: usize,
}

impl GroupWriter {
    /// An empty record for `group`.
    pub fn new(group: u32) -> Self {
        let mut record = Vec::with_capacity(1 + 4 * (ENTRY_HEADER + 400));
        record.push(RECORD_VERSION);
        GroupWriter {
            group,
            record,
            entries: 0,
        }
    }

    /// The group this record is for.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// Entries added so far.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True when no entry was added.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Add series `id`'s checkpoint taken at registry `epoch`. False (and
    /// nothing added) when `id` is not in this group or `bytes` is longer
    /// than an entry can say.
    pub fn push(&mut self, id: u32, epoch: u64, bytes: &[u8]) -> bool {
        let (Ok(len), true) = (u16::try_from(bytes.len()), group_of(id) == self.group) else {
            return false;
        };
        let slot = (id % GROUP) as u8;
        self.record.push(slot);
        self.record.extend_from_slice(&epoch.to_le_bytes());
        self.record.extend_from_slice(&len.to_le_bytes());
        self.record.extend_from_slice(bytes);
        self.entries += 1;
        true
    }

    /// The group and its record, ready to be written.
    pub fn finish(self) -> (u32, Vec<u8>) {
        (self.group, self.record)
    }
}

/// Series `id`'s checkpoint in `record` (a record of `id`'s group), if one
/// was taken at registry `epoch`. `None` for a record that does not parse.
pub fn find(record: &[u8], id: u32, epoch: u64) -> Option<&[u8]> {
    let (&version, mut rest) = record.split_first()?;
    if version != RECORD_VERSION {
        return None;
    }
    let slot = (id % GROUP) as u8;
    while !rest.is_empty() {
        let header = rest.get(..ENTRY_HEADER)?;
        let (&s, header) = header.split_first()?;
        let e = u64::from_le_bytes(header.get(..8)?.try_into().ok()?);
        let len = usize::from(u16::from_le_bytes(header.get(8..10)?.try_into().ok()?));
        let body = rest.get(ENTRY_HEADER..ENTRY_HEADER + len)?;
        if s == slot && e == epoch {
            return Some(body);
        }
        rest = rest.get(ENTRY_HEADER + len..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_of_a_group_is_found_with_its_epoch() {
        let mut w = GroupWriter::new(2);
        for id in 128..192u32 {
            let bytes = vec![id as u8; (id % 7) as usize * 50];
            assert!(w.push(id, u64::from(id) * 3, &bytes));
        }
        assert_eq!(w.len(), 64);
        let (group, record) = w.finish();
        assert_eq!(group, 2);
        for id in 128..192u32 {
            let want = vec![id as u8; (id % 7) as usize * 50];
            assert_eq!(find(&record, id, u64::from(id) * 3), Some(&want[..]));
            assert_eq!(find(&record, id, 0), None);
        }
    }

    #[test]
    fn ids_outside_the_group_and_oversized_checkpoints_are_refused() {
        let mut w = GroupWriter::new(0);
        assert!(!w.push(64, 1, b"x"));
        assert!(!w.push(1, 1, &vec![0; usize::from(u16::MAX) + 1]));
        assert!(w.is_empty());
    }

    #[test]
    fn truncated_or_foreign_records_yield_nothing() {
        let mut w = GroupWriter::new(0);
        assert!(w.push(3, 9, b"abcdef"));
        let (_, record) = w.finish();
        for cut in 0..record.len() {
            assert_eq!(find(&record[..cut], 3, 9), None, "cut at {cut}");
        }
        assert_eq!(find(b"spoilt", 3, 9), None);
        assert_eq!(find(b"", 3, 9), None);
    }
}
