//! A series' last ticks, packed: one flat ring of `u16` words.
//!
//! Why this exists: the scorer keeps, for every series, the deltas of its
//! last `window_ticks` ticks (to age them out of the running window and to
//! scan the recent window's suffixes). As a ring of [`TickDelta`]s — 64
//! bytes of `u64` counters plus a `Vec` of 8-byte `(index, count)` pairs
//! each — that was most of a series' ~8 KB, scattered over the heap, so at
//! 10 000 series the scorer spent its time in cache misses. Here a tick is
//! one variable-length record in a single buffer:
//!
//! - **header**: one word with a bit per non-zero counter (the
//!   [`Counters`] fields in `fields` order, the latency count ninth), followed by each
//!   non-zero value as a little-endian base-2^15 varint (15 bits per word,
//!   top bit = "more"; a `u64` takes at most 5 words);
//! - **latency entries**, sorted by bucket: one word `index * 64 + c`
//!   (`index` < [`BUCKETS`] = 832, so the word is below [`MARKER`]) holding
//!   the count's low 6 bits `c`. A count of 64 or more is preceded by one
//!   or two **marker** words `MARKER + p` carrying its higher bits 13 at a
//!   time (most significant first), so any `u32` count is exact, and the
//!   entries decode front to back *and* back to front (a marker is never
//!   taken for an entry).
//!
//! A typical tick (80 requests over ~50 buckets) is ~55 words. Records are
//! laid out as a bip buffer: appended after the newest, wrapping to the
//! start when the oldest has left room there, never split, so every record
//! is one `&[u16]`. The buffer grows (rarely: when a tick needs more room
//! than the window has ever held) and shrinks when it is three times what
//! the window needs; in steady state a tick allocates nothing.
//!
//! Deltas with unsorted or repeated buckets (never produced by the filter)
//! are put in order and merged (saturating) first; entries with a zero
//! count or a bucket out of range are dropped, as the histograms drop them.

use crate::histogram::BUCKETS;
use crate::window::{Counters, TickDelta};

/// First marker word; entry words are below it.
pub const MARKER: u16 = (BUCKETS as u16) << 6;
/// Bits of a count held in an entry word.
const LOW_BITS: u32 = 6;
/// Bits of a count held by each marker word.
const MARKER_BITS: u32 = 13;
/// Header bits: twelve counters plus the latency count (at most 16).
const FIELDS: usize = 13;
/// Words of the longest header: the mask and five words per field.
const HEADER_MAX: usize = 1 + 5 * FIELDS;

/// Where one tick's record lives in the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meta {
    /// First word of the record.
    start: u32,
    /// Words in the record (header + entries).
    len: u16,
    /// Words of the header (the entries start after them).
    header: u16,
}

/// The last ticks of one series, packed (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct TickRing {
    /// Record storage (its length is the capacity in use).
    words: Vec<u16>,
    /// One slot per tick of the window, reused circularly.
    meta: Vec<Meta>,
    /// Slot the next tick goes to.
    head: usize,
    /// Ticks held (<= `meta.len()`).
    filled: usize,
    /// Words held by the ticks (for the shrink decision).
    live: usize,
}

impl TickRing {
    /// An empty ring holding up to `ticks` ticks (at least 1).
    pub fn new(ticks: usize) -> Self {
        TickRing {
            words: Vec::new(),
            meta: vec![Meta::default(); ticks.max(1)],
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
        self.words.capacity() * std::mem::size_of::<u16>()
            + self.meta.capacity() * std::mem::size_of::<Meta>()
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
    fn record(&self, age: usize) -> Option<(&[u16], usize)> {
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
        let record = self.words.get(start..start + usize::from(m.len))?;
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
        Some(Entries {
            words: record.get(header..)?,
        })
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
        // One pass: the kept entries' count and words, and whether they
        // come in strictly increasing bucket order.
        let (mut latency_count, mut entries) = (0u64, 0usize);
        let (mut prev, mut canonical) = (-1i32, true);
        for &(i, n) in &delta.latency {
            if usize::from(i) >= BUCKETS || n == 0 {
                continue;
            }
            canonical &= i32::from(i) > prev;
            prev = i32::from(i);
            latency_count += u64::from(n);
            entries += entry_len(n);
        }
        if canonical {
            self.push_parts(&delta.counters, &delta.latency, latency_count, entries)
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
            let entries = merged.iter().map(|&(_, n)| entry_len(n)).sum();
            self.push_parts(&delta.counters, &merged, latency_count, entries)
        }
    }

    /// Append one record: `latency` sorted, `latency_count` and `entries`
    /// the count and words of its kept entries.
    fn push_parts(
        &mut self,
        counters: &Counters,
        latency: &[(u16, u32)],
        latency_count: u64,
        entries: usize,
    ) -> u64 {
        // The header, built in place: the mask word, then each non-zero
        // field as a varint.
        let mut head = [0u16; HEADER_MAX];
        let mut header = 1usize;
        let mut mask = 0u16;
        for (b, v) in fields(counters, latency_count).into_iter().enumerate() {
            if v == 0 {
                continue;
            }
            mask |= 1 << b;
            let mut v = v;
            loop {
                let low = (v & 0x7FFF) as u16;
                v >>= 15;
                let more = if v == 0 { 0 } else { 0x8000 };
                if let Some(slot) = head.get_mut(header) {
                    *slot = low | more;
                }
                header += 1;
                if v == 0 {
                    break;
                }
            }
        }
        if let Some(first) = head.first_mut() {
            *first = mask;
        }
        let header = header.min(HEADER_MAX);
        let len = header + entries;
        let start = self.reserve(len);
        if let Some(out) = self.words.get_mut(start..start + len) {
            let (out_head, out_entries) = out.split_at_mut(header);
            if let Some(src) = head.get(..header) {
                out_head.copy_from_slice(src);
            }
            if entries == latency.len() && !Self::has_markers(latency) {
                // Every entry kept and one word each (no count of 64 or
                // more): a straight, vectorisable conversion.
                for (slot, &(i, n)) in out_entries.iter_mut().zip(latency) {
                    *slot = (i << LOW_BITS) | n as u16;
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

    /// Whether some count of `latency` needs a marker word (64 or more).
    #[inline]
    fn has_markers(latency: &[(u16, u32)]) -> bool {
        latency.iter().fold(0u32, |acc, &(_, n)| acc | n) >> LOW_BITS != 0
    }

    /// Write the kept entries of `latency` (markers before a count of 64
    /// or more) into `out`.
    fn put_entries(out: &mut [u16], latency: &[(u16, u32)]) {
        let mut out = out.iter_mut();
        for &(i, n) in latency {
            if usize::from(i) >= BUCKETS || n == 0 {
                continue;
            }
            let high = n >> LOW_BITS;
            if high > 0 {
                if high >= 1 << MARKER_BITS {
                    if let Some(slot) = out.next() {
                        *slot = MARKER + (high >> MARKER_BITS) as u16;
                    }
                }
                if let Some(slot) = out.next() {
                    *slot = MARKER + (high & ((1 << MARKER_BITS) - 1)) as u16;
                }
            }
            if let Some(slot) = out.next() {
                *slot = (i << LOW_BITS) | (n & ((1 << LOW_BITS) - 1)) as u16;
            }
        }
    }

    /// Start of a free run of `len` words after the newest record (or at
    /// the buffer's start), growing or shrinking the buffer if needed.
    fn reserve(&mut self, len: usize) -> usize {
        let cap = self.words.len();
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
    /// `cap` words (>= the live words).
    fn relayout(&mut self, cap: usize) {
        let mut words = vec![0u16; cap.max(self.live)];
        let w = self.meta.len();
        let mut at = 0usize;
        for k in (0..self.filled).rev() {
            let slot = (self.head + w - 1 - k) % w;
            if let Some(m) = self.meta.get_mut(slot) {
                let (start, len) = (m.start as usize, usize::from(m.len));
                if let (Some(dst), Some(src)) = (
                    words.get_mut(at..at + len),
                    self.words.get(start..start + len),
                ) {
                    dst.copy_from_slice(src);
                }
                m.start = at as u32;
                at += len;
            }
        }
        self.words = words;
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

/// Words of a latency entry with count `n`.
#[inline]
fn entry_len(n: u32) -> usize {
    1 + usize::from(n >> LOW_BITS != 0) + usize::from(n >> (LOW_BITS + MARKER_BITS) != 0)
}

/// One tick as stored: its counters and its latency entries.
#[derive(Debug, Clone, Copy)]
pub struct TickView<'a> {
    /// The tick's counters.
    pub counters: Counters,
    /// Sum of the latency entries' counts.
    pub latency_count: u64,
    entries: &'a [u16],
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
    };

    fn decode(record: &'a [u16], header: usize) -> Option<Self> {
        let (head, entries) = (record.get(..header)?, record.get(header..)?);
        let (&mask, mut words) = head.split_first()?;
        let mut values = [0u64; FIELDS];
        // Visit the set bits only; most values are one word.
        let mut bits = mask;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let mut v = 0u64;
            let mut shift = 0u32;
            while let Some((&word, rest)) = words.split_first() {
                words = rest;
                v |= u64::from(word & 0x7FFF).checked_shl(shift).unwrap_or(0);
                shift += 15;
                if word & 0x8000 == 0 {
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
        })
    }

    /// The latency entries `(bucket, count)`, sorted by bucket, no zeros;
    /// iterable from either end.
    pub fn latency(&self) -> Entries<'a> {
        Entries {
            words: self.entries,
        }
    }

    /// The tick as a [`TickDelta`] (allocates; for tools and tests).
    pub fn to_delta(&self) -> TickDelta {
        TickDelta {
            counters: self.counters,
            latency: self.latency().collect(),
        }
    }
}

/// Iterator over a tick's packed latency entries.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    words: &'a [u16],
}

impl Iterator for Entries<'_> {
    type Item = (u16, u32);

    #[inline]
    fn next(&mut self) -> Option<(u16, u32)> {
        let (&w, rest) = self.words.split_first()?;
        self.words = rest;
        // Most counts are below 64: the entry word alone.
        if w < MARKER {
            return Some((w >> LOW_BITS, u32::from(w & 63)));
        }
        let mut high = u32::from(w - MARKER);
        while let Some((&w, rest)) = self.words.split_first() {
            self.words = rest;
            if w >= MARKER {
                high = (high << MARKER_BITS) | u32::from(w - MARKER);
            } else {
                return Some((w >> LOW_BITS, (high << LOW_BITS) | u32::from(w & 63)));
            }
        }
        None
    }
}

impl DoubleEndedIterator for Entries<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<(u16, u32)> {
        let (&w, rest) = self.words.split_last()?;
        self.words = rest;
        // Most counts are below 64: no marker before the entry word.
        if rest.last().is_none_or(|&m| m < MARKER) {
            return Some((w >> LOW_BITS, u32::from(w & 63)));
        }
        let mut high = 0u32;
        let mut shift = 0u32;
        while let Some((&m, rest)) = self.words.split_last() {
            if m < MARKER {
                break;
            }
            self.words = rest;
            high |= u32::from(m - MARKER).checked_shl(shift).unwrap_or(0);
            shift += MARKER_BITS;
        }
        Some((w >> LOW_BITS, (high << LOW_BITS) | u32::from(w & 63)))
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
                .map(|_| ((next() % BUCKETS as u64) as u16, (next() % 100 + 1) as u32))
                .collect();
            latency.sort_unstable_by_key(|e| e.0);
            latency.dedup_by_key(|e| e.0);
            let d = delta(next() % 1000, latency);
            ring.push(&d);
            history.push(d);
            assert_eq!(ring.len(), history.len().min(5));
            for (age, expected) in history.iter().rev().take(5).enumerate() {
                assert_eq!(
                    &ring.get(age).unwrap().to_delta(),
                    expected,
                    "t {t} age {age}"
                );
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
        // Sorted input with dropped entries stays on the fast path.
        let d = delta(1, vec![(2, 0), (4, 1), (u16::MAX, 1)]);
        assert_eq!(ring.push(&d), 1);
        assert_eq!(
            ring.get(0).unwrap().latency().collect::<Vec<_>>(),
            vec![(4, 1)]
        );
        assert_eq!(ring.get(1).unwrap().counters.requests, 9);
    }
}
