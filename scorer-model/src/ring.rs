//! A series' last ticks, packed: one flat ring of bytes.
//!
//! Why this exists: the scorer keeps, for every series, the deltas of its
//! last `window_ticks` ticks (to age them out of the running window and to
//! scan the recent window's suffixes). As a ring of [`TickDelta`]s — 64
//! bytes of `u64` counters plus a `Vec` of 8-byte `(index, count)` pairs
//! each — that was most of a series' ~8 KB, scattered over the heap, so at
//! 10 000 series the scorer spent its time in cache misses. Here a tick is
//! one variable-length record of bytes in a single buffer:
//!
//! - **header**: two bytes (little-endian) with a bit per non-zero counter
//!   (the [`Counters`] fields in `fields` order, the latency count ninth),
//!   each non-zero value as a LEB128 varint (7 bits per byte, top bit =
//!   "more"; a `u64` takes at most 10 bytes), then the bucket of the last
//!   latency entry (two bytes, little-endian; 0 without entries);
//! - **latency entries**, sorted by bucket, each coded by its **gap** `g`
//!   to the previous entry's bucket (the first entry's gap counts from
//!   bucket −1, so `g ≥ 1`) and its count `c ≥ 1`: one **main** byte
//!   `(g − 1) mod 16 · 8 + c mod 8` (top bit clear), preceded, when the
//!   gap or count does not fit, by **prefix** bytes (top bit set): one
//!   `0x80 + (g − 1) / 16` for a gap above 16, then `0xC0 + p` bytes
//!   carrying `c / 8` six bits at a time, most significant first. So a
//!   tick at tens of requests per second (gaps ≤ 16, counts ≤ 7) costs one
//!   byte per bucket, any `u32` count is exact, and the entries decode
//!   front to back (gaps summed from bucket −1) *and* back to front (gaps
//!   subtracted from the last bucket, which the header holds); a prefix is
//!   never taken for a main byte.
//!
//! A typical tick (80 requests over ~50 buckets) is ~50–60 bytes (it was
//! ~55 `u16` words, 110 bytes). Records are laid out as a bip buffer: appended
//! after the newest, wrapping to the start when the oldest has left room
//! there, never split, so every record is one `&[u8]`. The buffer grows
//! (rarely: when a tick needs more room than the window has ever held) and
//! shrinks when it is three times what the window needs; in steady state a
//! tick allocates nothing.
//!
//! Deltas with unsorted or repeated buckets (never produced by the filter)
//! are put in order and merged (saturating) first; entries with a zero
//! count or a bucket out of range are dropped, as the histograms drop them.
//! The entries' byte code (sizing, writing, [`Entries`]) is in `entries.rs`.

mod entries;

pub use entries::Entries;
use entries::{entry_len, put_entry, simple_parts};
use entries::{COUNT_BITS, GAP_BITS, PREFIX};

use crate::histogram::BUCKETS;
use crate::window::{Counters, TickDelta};

/// Header bits: twelve counters plus the latency count (at most 16).
const FIELDS: usize = 13;
/// Bytes of the longest header: the mask, ten per field, the last bucket.
const HEADER_MAX: usize = 2 + 10 * FIELDS + 2;

/// Where one tick's record lives in the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meta {
    /// First byte of the record.
    start: u32,
    /// Bytes in the record (header + entries).
    len: u16,
    /// Bytes of the header (the entries start after them).
    header: u16,
}

/// The last ticks of one series, packed (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct TickRing {
    /// Record storage (boxed: its length is the capacity, and the
    /// struct saves a `Vec`'s capacity word).
    bytes: Box<[u8]>,
    /// One slot per tick of the window, reused circularly.
    meta: Box<[Meta]>,
    /// Slot the next tick goes to.
    head: usize,
    /// Ticks held (<= `meta.len()`).
    filled: usize,
    /// Bytes held by the ticks (for the shrink decision).
    live: usize,
}

impl TickRing {
    /// An empty ring holding up to `ticks` ticks (at least 1).
    pub fn new(ticks: usize) -> Self {
        TickRing {
            bytes: Box::default(),
            meta: vec![Meta::default(); ticks.max(1)].into_boxed_slice(),
            head: 0,
            filled: 0,
            live: 0,
        }
    }

    /// Ticks the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Ticks held.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// True when no tick is held.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Forget every tick, keeping the buffer.
    pub fn clear(&mut self) {
        self.head = 0;
        self.filled = 0;
        self.live = 0;
    }

    /// Heap bytes held (buffer and slots).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.len() + std::mem::size_of_val(&*self.meta)
    }

    /// Slot `back` slots before the head (`1..=capacity`; 1 = the newest):
    /// one conditional subtraction, no division.
    #[inline]
    fn slot_back(&self, back: usize) -> usize {
        let w = self.meta.len();
        let slot = self.head + w - back.min(w);
        if slot >= w {
            slot - w
        } else {
            slot
        }
    }

    /// Record and header length of the tick pushed `age` ticks ago.
    #[inline]
    fn record(&self, age: usize) -> Option<(&[u8], usize)> {
        if age >= self.filled {
            return None;
        }
        let w = self.meta.len();
        // head < w and age < w: one conditional subtraction, no division.
        let mut slot = self.head + w - 1 - age;
        if slot >= w {
            slot -= w;
        }
        let m = self.meta.get(slot)?;
        let start = m.start as usize;
        let record = self.bytes.get(start..start + usize::from(m.len))?;
        Some((record, usize::from(m.header)))
    }

    /// The tick pushed `age` ticks ago (0 = the newest), if held.
    #[inline]
    pub fn get(&self, age: usize) -> Option<TickView<'_>> {
        let (record, header) = self.record(age)?;
        TickView::decode(record, header)
    }

    /// Only the latency entries of the tick pushed `age` ticks ago (skips
    /// decoding the counters).
    #[inline]
    pub fn latency(&self, age: usize) -> Option<Entries<'_>> {
        let (record, header) = self.record(age)?;
        let (head, entries) = record.split_at_checked(header)?;
        Some(Entries::new(entries, last_bucket(head)))
    }

    /// The newest `ticks` ticks (at most those held), newest first.
    pub fn newest(&self, ticks: usize) -> impl Iterator<Item = TickView<'_>> + '_ {
        (0..ticks.min(self.filled)).filter_map(move |age| self.get(age))
    }

    /// Drop the oldest tick (no-op when empty).
    pub fn pop_oldest(&mut self) {
        if self.filled == 0 {
            return;
        }
        let w = self.meta.len();
        let oldest = (self.head + w - self.filled) % w;
        if let Some(m) = self.meta.get(oldest) {
            self.live -= usize::from(m.len);
        }
        self.filled -= 1;
    }

    /// Append a tick, dropping the oldest first when the ring is full.
    /// Returns the latency count recorded for it (the sum of its kept
    /// entries' counts).
    pub fn push(&mut self, delta: &TickDelta) -> u64 {
        if self.filled == self.meta.len() {
            self.pop_oldest();
        }
        if let Some(parts) = simple_parts(&delta.latency) {
            return self.push_parts(&delta.counters, &delta.latency, parts);
        }
        // One pass: the kept entries' count and bytes, and whether they come
        // in strictly increasing bucket order.
        let (mut latency_count, mut entries) = (0u64, 0usize);
        let (mut prev, mut canonical) = (-1i32, true);
        for &(i, n) in &delta.latency {
            if usize::from(i) >= BUCKETS || n == 0 {
                continue;
            }
            let gap = i32::from(i) - prev;
            canonical &= gap > 0;
            prev = i32::from(i);
            latency_count += u64::from(n);
            entries += entry_len(gap, n);
        }
        if canonical {
            let parts = (latency_count, entries, false);
            self.push_parts(&delta.counters, &delta.latency, parts)
        } else {
            // Corrupt input only (the filter's deltas are sorted): sort and
            // merge a copy.
            let mut sorted: Vec<(u16, u32)> = delta
                .latency
                .iter()
                .copied()
                .filter(|&(i, n)| usize::from(i) < BUCKETS && n > 0)
                .collect();
            sorted.sort_unstable_by_key(|&(i, _)| i);
            let mut merged: Vec<(u16, u32)> = Vec::with_capacity(sorted.len());
            for (i, n) in sorted {
                match merged.last_mut() {
                    Some(last) if last.0 == i => last.1 = last.1.saturating_add(n),
                    _ => merged.push((i, n)),
                }
            }
            let latency_count = merged.iter().map(|&(_, n)| u64::from(n)).sum();
            let mut prev = -1i32;
            let mut entries = 0usize;
            for &(i, n) in &merged {
                entries += entry_len(i32::from(i) - prev, n);
                prev = i32::from(i);
            }
            self.push_parts(&delta.counters, &merged, (latency_count, entries, false))
        }
    }

    /// Append one record: `latency` sorted; `latency_count` and `entries`
    /// the count and bytes of its kept entries, `simple` when every entry
    /// is kept and has a count below 8.
    fn push_parts(
        &mut self,
        counters: &Counters,
        latency: &[(u16, u32)],
        (latency_count, entries, simple): (u64, usize, bool),
    ) -> u64 {
        // The header, built in place: the mask, each non-zero field as a
        // varint, the last kept bucket.
        let mut head = [0u8; HEADER_MAX];
        let mut header = 2usize;
        let mut mask = 0u16;
        for (b, v) in fields(counters, latency_count).into_iter().enumerate() {
            if v == 0 {
                continue;
            }
            mask |= 1 << b;
            let mut v = v;
            loop {
                let low = (v & 0x7F) as u8;
                v >>= 7;
                let more = if v == 0 { 0 } else { 0x80 };
                if let Some(slot) = head.get_mut(header) {
                    *slot = low | more;
                }
                header += 1;
                if v == 0 {
                    break;
                }
            }
        }
        let last = latency
            .iter()
            .rev()
            .find(|&&(i, n)| usize::from(i) < BUCKETS && n > 0)
            .map_or(0, |&(i, _)| i);
        if let Some([m0, m1]) = head.get_mut(..2) {
            [*m0, *m1] = mask.to_le_bytes();
        }
        if let Some([t0, t1]) = head.get_mut(header..header + 2) {
            [*t0, *t1] = last.to_le_bytes();
        }
        let header = (header + 2).min(HEADER_MAX);
        let len = header + entries;
        let start = self.reserve(len);
        if let Some(out) = self.bytes.get_mut(start..start + len) {
            let (out_head, out_entries) = out.split_at_mut(header);
            if let Some(src) = head.get(..header) {
                out_head.copy_from_slice(src);
            }
            let first_prefix = latency
                .first()
                .map_or(0, |&(i, _)| usize::from(i >= 1 << GAP_BITS));
            if let (true, true, Some((&(first, n), rest))) = (
                simple,
                entries == latency.len() + first_prefix,
                latency.split_first(),
            ) {
                // Every entry kept, counts <= 7 and no gap above 16 after
                // the first (about three ticks in four): the first entry,
                // then one main byte per entry from it and the one before
                // (no carried state, no bounds check per byte).
                let mut out = out_entries.iter_mut();
                put_entry(&mut out, u32::from(first), n);
                for (slot, (&(p, _), &(i, n))) in out.zip(latency.iter().zip(rest)) {
                    let g = i.wrapping_sub(p).wrapping_sub(1) as u8;
                    *slot = (g << COUNT_BITS) | n as u8;
                }
            } else if simple {
                // Every entry kept, counts <= 7 (the usual tick): a main
                // byte each, after a gap prefix for a gap above 16. Without
                // a branch: the prefix is always written, then overwritten
                // by the main byte when the gap needs none.
                let (mut pos, mut prev) = (0usize, -1i32);
                for &(i, n) in latency {
                    let g = (i32::from(i) - prev - 1) as u32;
                    prev = i32::from(i);
                    let big = usize::from(g >> GAP_BITS != 0);
                    if let Some(slot) = out_entries.get_mut(pos) {
                        *slot = PREFIX | (g >> GAP_BITS) as u8;
                    }
                    if let Some(slot) = out_entries.get_mut(pos + big) {
                        *slot = ((g as u8 & 0x0F) << COUNT_BITS) | n as u8;
                    }
                    pos += 1 + big;
                }
            } else {
                Self::put_entries(out_entries, latency);
            }
        }
        let w = self.meta.len();
        if let Some(m) = self.meta.get_mut(self.head) {
            *m = Meta {
                start: start as u32,
                len: len as u16,
                header: header as u16,
            };
        }
        self.head += 1;
        if self.head >= w {
            self.head = 0;
        }
        self.filled += 1;
        self.live += len;
        latency_count
    }

    /// Write the kept entries of `latency` (sorted; prefixes before a gap
    /// above 16 or a count above 7) into `out`.
    fn put_entries(out: &mut [u8], latency: &[(u16, u32)]) {
        let mut out = out.iter_mut();
        let mut prev = -1i32;
        for &(i, n) in latency {
            if usize::from(i) >= BUCKETS || n == 0 {
                continue;
            }
            let g = (i32::from(i) - prev - 1).max(0) as u32;
            prev = i32::from(i);
            put_entry(&mut out, g, n);
        }
    }

    /// Start of a free run of `len` bytes after the newest record (or at
    /// the buffer's start), growing or shrinking the buffer if needed.
    fn reserve(&mut self, len: usize) -> usize {
        let cap = self.bytes.len();
        let need = self.live + len;
        if cap > 3 * need + 64 {
            self.relayout(need + need / 4 + 16);
            return self.live;
        }
        if self.filled == 0 {
            if len <= cap {
                return 0;
            }
        } else {
            let oldest = self.meta.get(self.slot_back(self.filled)).copied();
            let newest = self.meta.get(self.slot_back(1)).copied();
            if let (Some(o), Some(n)) = (oldest, newest) {
                let (o_start, n_start) = (o.start as usize, n.start as usize);
                let tail = n_start + usize::from(n.len);
                if n_start >= o_start {
                    // Not wrapped: free after the tail and before the oldest.
                    if tail + len <= cap {
                        return tail;
                    }
                    if len <= o_start {
                        return 0;
                    }
                } else if tail + len <= o_start {
                    // Wrapped: free between the tail and the oldest.
                    return tail;
                }
            }
        }
        self.relayout(need + need / 4 + 16);
        self.live
    }

    /// Copy the held records, oldest first, to the start of a new buffer of
    /// `cap` bytes (>= the live bytes).
    fn relayout(&mut self, cap: usize) {
        let mut bytes = vec![0u8; cap.max(self.live)];
        let w = self.meta.len();
        let mut at = 0usize;
        for k in (0..self.filled).rev() {
            let slot = (self.head + w - 1 - k) % w;
            if let Some(m) = self.meta.get_mut(slot) {
                let (start, len) = (m.start as usize, usize::from(m.len));
                if let (Some(dst), Some(src)) = (
                    bytes.get_mut(at..at + len),
                    self.bytes.get(start..start + len),
                ) {
                    dst.copy_from_slice(src);
                }
                m.start = at as u32;
                at += len;
            }
        }
        self.bytes = bytes.into_boxed_slice();
    }
}

/// The header's fields, in mask-bit order.
fn fields(c: &Counters, latency_count: u64) -> [u64; FIELDS] {
    [
        c.requests,
        c.errors,
        c.status_4xx,
        c.resets,
        c.overflows,
        c.timeouts,
        c.retries,
        c.latency_sum_us,
        latency_count,
        c.server_errors,
        c.throttled,
        c.client_gone,
        c.grpc_unknown,
    ]
}

/// The last entry's bucket, from the end of a header.
#[inline]
fn last_bucket(header: &[u8]) -> u16 {
    match header {
        [.., a, b] => u16::from_le_bytes([*a, *b]),
        _ => 0,
    }
}

/// One tick as stored: its counters and its latency entries.
#[derive(Debug, Clone, Copy)]
pub struct TickView<'a> {
    /// The tick's counters.
    pub counters: Counters,
    /// Sum of the latency entries' counts.
    pub latency_count: u64,
    entries: &'a [u8],
    /// Bucket of the last entry.
    last: u16,
}

impl<'a> TickView<'a> {
    /// A tick with nothing in it.
    pub const EMPTY: TickView<'static> = TickView {
        counters: Counters {
            requests: 0,
            errors: 0,
            status_4xx: 0,
            resets: 0,
            overflows: 0,
            timeouts: 0,
            retries: 0,
            latency_sum_us: 0,
            server_errors: 0,
            throttled: 0,
            client_gone: 0,
            grpc_unknown: 0,
        },
        latency_count: 0,
        entries: &[],
        last: 0,
    };

    fn decode(record: &'a [u8], header: usize) -> Option<Self> {
        let (head, entries) = record.split_at_checked(header)?;
        let (mask, mut bytes) = match head {
            [m0, m1, rest @ ..] => (u16::from_le_bytes([*m0, *m1]), rest),
            _ => return None,
        };
        let mut values = [0u64; FIELDS];
        // Visit the set bits only; most values are one or two bytes.
        let mut bits = mask;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let mut v = 0u64;
            let mut shift = 0u32;
            while let Some((&byte, rest)) = bytes.split_first() {
                bytes = rest;
                v |= u64::from(byte & 0x7F).checked_shl(shift).unwrap_or(0);
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            if let Some(out) = values.get_mut(b) {
                *out = v;
            }
        }
        let [requests, errors, status_4xx, resets, overflows, timeouts, retries, latency_sum_us, latency_count, server_errors, throttled, client_gone, grpc_unknown] =
            values;
        Some(TickView {
            counters: Counters {
                requests,
                errors,
                status_4xx,
                resets,
                overflows,
                timeouts,
                retries,
                latency_sum_us,
                server_errors,
                throttled,
                client_gone,
                grpc_unknown,
            },
            latency_count,
            entries,
            last: last_bucket(head),
        })
    }

    /// The latency entries `(bucket, count)`, sorted by bucket, no zeros;
    /// iterable from either end.
    pub fn latency(&self) -> Entries<'a> {
        Entries::new(self.entries, self.last)
    }

    /// The tick as a [`TickDelta`] (allocates; for tools and tests).
    pub fn to_delta(&self) -> TickDelta {
        TickDelta {
            counters: self.counters,
            latency: self.latency().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(requests: u64, latency: Vec<(u16, u32)>) -> TickDelta {
        TickDelta {
            counters: Counters {
                requests,
                latency_sum_us: requests * 40_000,
                ..Default::default()
            },
            latency,
        }
    }

    #[test]
    fn round_trips_counters_and_entries_both_ways() {
        let mut ring = TickRing::new(4);
        let big = Counters {
            requests: u64::MAX,
            errors: 1 << 15,
            status_4xx: (1 << 15) - 1,
            resets: 0,
            overflows: 1 << 30,
            timeouts: 1,
            retries: u64::MAX - 1,
            latency_sum_us: 123_456_789_012,
            server_errors: 7,
            throttled: 1 << 20,
            client_gone: 0,
            grpc_unknown: 3,
        };
        // Counts at every escape boundary: 1 word, 2 words, 3 words.
        let latency = vec![
            (0, 1),
            (1, 63),
            (2, 64),
            (3, 65),
            (100, (1 << 19) - 1),
            (101, 1 << 19),
            (200, u32::MAX),
            // Gaps at the prefix boundary: 17 (a gap prefix), 16 (none).
            (217, 8),
            (233, 7),
            (831, 7),
        ];
        let d = TickDelta {
            counters: big,
            latency: latency.clone(),
        };
        assert_eq!(
            ring.push(&d),
            latency.iter().map(|&(_, n)| u64::from(n)).sum::<u64>()
        );
        let v = ring.get(0).unwrap();
        assert_eq!(v.counters, big);
        assert_eq!(v.to_delta(), d);
        let back: Vec<_> = v.latency().rev().collect();
        assert_eq!(back, latency.iter().rev().copied().collect::<Vec<_>>());
        // Mixed directions meet in the middle.
        let mut it = v.latency();
        assert_eq!(it.next(), Some((0, 1)));
        assert_eq!(it.next_back(), Some((831, 7)));
        assert_eq!(it.next_back(), Some((233, 7)));
        assert_eq!(it.next_back(), Some((217, 8)));
        assert_eq!(it.next_back(), Some((200, u32::MAX)));
        assert_eq!(it.count(), 5);
    }

    #[test]
    fn keeps_the_last_ticks_across_wraps_growth_and_shrink() {
        let mut ring = TickRing::new(5);
        let mut history: Vec<TickDelta> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for t in 0..2_000u64 {
            // Bursts of large ticks, then small ones (growth and shrink).
            let width = if (t / 300) % 2 == 0 { 8 } else { 400 };
            let n = next() % width;
            let mut latency: Vec<(u16, u32)> = (0..n)
                .map(|_| {
                    // Counts of every prefix length, mostly small.
                    let count = (next() % 100 + 1) << (6 * (next() % 8)).min(31);
                    (
                        (next() % BUCKETS as u64) as u16,
                        count.min(u64::from(u32::MAX)) as u32,
                    )
                })
                .collect();
            latency.sort_unstable_by_key(|e| e.0);
            latency.dedup_by_key(|e| e.0);
            let d = delta(next() % 1000, latency);
            ring.push(&d);
            history.push(d);
            assert_eq!(ring.len(), history.len().min(5));
            for (age, expected) in history.iter().rev().take(5).enumerate() {
                let v = ring.get(age).unwrap();
                assert_eq!(&v.to_delta(), expected, "t {t} age {age}");
                let back: Vec<_> = ring.latency(age).unwrap().rev().collect();
                let want: Vec<_> = expected.latency.iter().rev().copied().collect();
                assert_eq!(back, want, "t {t} age {age}");
            }
            assert!(ring.get(5).is_none());
        }
        // Back to small ticks: the buffer shrank.
        assert!(ring.heap_bytes() < 2_000, "{}", ring.heap_bytes());
        ring.clear();
        assert!(ring.is_empty() && ring.get(0).is_none());
    }

    #[test]
    fn unsorted_repeated_and_invalid_entries_are_canonicalised() {
        let mut ring = TickRing::new(2);
        let d = delta(
            9,
            vec![(5, 2), (3, 1), (5, u32::MAX), (u16::MAX, 4), (7, 0), (1, 3)],
        );
        assert_eq!(ring.push(&d), 3 + 1 + u64::from(u32::MAX));
        let got: Vec<_> = ring.get(0).unwrap().latency().collect();
        assert_eq!(got, vec![(1, 3), (3, 1), (5, u32::MAX)]);
        // Sorted input with dropped entries is kept in order.
        let d = delta(1, vec![(2, 0), (4, 1), (u16::MAX, 1)]);
        assert_eq!(ring.push(&d), 1);
        assert_eq!(
            ring.get(0).unwrap().latency().collect::<Vec<_>>(),
            vec![(4, 1)]
        );
        assert_eq!(ring.get(1).unwrap().counters.requests, 9);
        // As many bytes as entries, one dropped and one of two bytes: not
        // the one-byte path.
        let d = delta(1, vec![(5, 0), (6, 100)]);
        assert_eq!(ring.push(&d), 100);
        let v = ring.get(0).unwrap();
        assert_eq!(v.latency().collect::<Vec<_>>(), vec![(6, 100)]);
        assert_eq!(v.latency().rev().collect::<Vec<_>>(), vec![(6, 100)]);
    }
}
