//! The byte code of a tick's latency entries (see the [`super`] module
//! docs): one main byte per bucket, `(gap − 1) mod 16 · 8 + count mod 8`,
//! after prefix bytes for a gap above 16 or a count above 7; sizing and
//! writing them ([`simple_parts`], [`put_entry`]) and reading them from
//! either end ([`Entries`]).

use crate::histogram::BUCKETS;

/// Top bit of a prefix byte; main bytes are below it.
pub(super) const PREFIX: u8 = 0x80;
/// Kind bit of a prefix byte: set for the count's high bits, clear for the
/// gap's.
pub(super) const COUNT_PREFIX: u8 = 0x40;
/// Payload bits of a prefix byte.
pub(super) const PREFIX_BITS: u32 = 6;
/// Bits of `gap - 1` in a main byte.
pub(super) const GAP_BITS: u32 = 4;
/// Bits of the count in a main byte.
pub(super) const COUNT_BITS: u32 = 3;
/// The `(latency count, entry bytes, simple)` of sparse entries that are
/// sorted, all kept, with counts below 8 (no count prefix) — the usual
/// tick, checked in one branch-free pass; `None` for any other (the
/// general path sizes those).
#[inline]
pub(super) fn simple_parts(latency: &[(u16, u32)]) -> Option<(u64, usize, bool)> {
    let (&(first, n0), rest) = latency.split_first()?;
    let (mut prev, mut ok) = (i32::from(first), true);
    // The first entry's gap counts from bucket -1: a prefix from 16 on.
    let mut prefixes = usize::from(first >= 1 << GAP_BITS);
    let (mut or_n, mut min_n, mut sum) = (n0, n0, u64::from(n0));
    for &(i, n) in rest {
        let i = i32::from(i);
        ok &= i > prev;
        prefixes += usize::from(i - prev > 1 << GAP_BITS);
        prev = i;
        or_n |= n;
        min_n = min_n.min(n);
        sum += u64::from(n);
    }
    let simple = ok && min_n > 0 && or_n >> COUNT_BITS == 0 && (prev as usize) < BUCKETS;
    simple.then_some((sum, latency.len() + prefixes, true))
}

/// Write one entry, gap `g + 1` and count `n` (its prefixes, then its main
/// byte), to the next bytes of `out`.
#[inline]
pub(super) fn put_entry<'a>(out: &mut impl Iterator<Item = &'a mut u8>, g: u32, n: u32) {
    let g_high = g >> GAP_BITS;
    if g_high > 0 {
        if let Some(slot) = out.next() {
            *slot = PREFIX | (g_high as u8 & 0x3F);
        }
    }
    let c_high = n >> COUNT_BITS;
    for k in (0..count_prefixes(n)).rev() {
        if let Some(slot) = out.next() {
            let p = (c_high >> (PREFIX_BITS * k)) & 0x3F;
            *slot = PREFIX | COUNT_PREFIX | p as u8;
        }
    }
    if let Some(slot) = out.next() {
        *slot = ((g as u8 & 0x0F) << COUNT_BITS) | (n & 7) as u8;
    }
}

/// Count prefix bytes of a count `n`: `n / 8`, six bits each.
#[inline]
fn count_prefixes(n: u32) -> u32 {
    let high = n >> COUNT_BITS;
    (32 - high.leading_zeros()).div_ceil(PREFIX_BITS)
}

/// Bytes of a latency entry with bucket gap `gap` (>= 1) and count `n`.
#[inline]
pub(super) fn entry_len(gap: i32, n: u32) -> usize {
    1 + usize::from(gap > 1 << GAP_BITS) + count_prefixes(n) as usize
}

/// Iterator over a tick's packed latency entries.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    bytes: &'a [u8],
    /// Bucket of the last entry taken from the front (−1 before any).
    front: i32,
    /// Bucket of the entry at the back.
    back: i32,
}

impl<'a> Entries<'a> {
    pub(super) fn new(bytes: &'a [u8], last: u16) -> Self {
        Entries {
            bytes,
            front: -1,
            back: i32::from(last),
        }
    }
}

impl Iterator for Entries<'_> {
    type Item = (u16, u32);

    #[inline]
    fn next(&mut self) -> Option<(u16, u32)> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        // Most entries are the main byte alone.
        if b < PREFIX {
            self.front += i32::from(b >> COUNT_BITS) + 1;
            return Some((self.front as u16, u32::from(b & 7)));
        }
        let (mut g_high, mut c_high) = (0u32, 0u32);
        let mut b = b;
        loop {
            if b < PREFIX {
                let g = (g_high << GAP_BITS) | u32::from(b >> COUNT_BITS);
                self.front += g as i32 + 1;
                let n = (c_high << COUNT_BITS) | u32::from(b & 7);
                return Some((self.front as u16, n));
            }
            let p = u32::from(b & 0x3F);
            if b & COUNT_PREFIX != 0 {
                c_high = (c_high << PREFIX_BITS) | p;
            } else {
                g_high = (g_high << PREFIX_BITS) | p;
            }
            let (&next, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            b = next;
        }
    }
}

impl DoubleEndedIterator for Entries<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<(u16, u32)> {
        let (&b, rest) = self.bytes.split_last()?;
        self.bytes = rest;
        let index = self.back;
        // Most entries are the main byte alone: no prefix before it.
        if rest.last().is_none_or(|&p| p < PREFIX) {
            self.back -= i32::from(b >> COUNT_BITS) + 1;
            return Some((index as u16, u32::from(b & 7)));
        }
        let (mut g_high, mut c_high) = (0u32, 0u32);
        let (mut g_shift, mut c_shift) = (0u32, 0u32);
        while let Some((&p, rest)) = self.bytes.split_last() {
            if p < PREFIX {
                break;
            }
            self.bytes = rest;
            let v = u32::from(p & 0x3F);
            if p & COUNT_PREFIX != 0 {
                c_high |= v.checked_shl(c_shift).unwrap_or(0);
                c_shift += PREFIX_BITS;
            } else {
                g_high |= v.checked_shl(g_shift).unwrap_or(0);
                g_shift += PREFIX_BITS;
            }
        }
        let g = (g_high << GAP_BITS) | u32::from(b >> COUNT_BITS);
        self.back -= g as i32 + 1;
        let n = (c_high << COUNT_BITS) | u32::from(b & 7);
        Some((index as u16, n))
    }
}
