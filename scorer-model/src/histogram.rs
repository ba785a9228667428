//! Latency histogram with bounded relative error and O(1) recording.
//!
//! Why this shape: the filter records one latency per request on Envoy's
//! request path, inside a wasm VM where floating-point `ln` is a software
//! routine. A log-linear layout (HDR-style) finds the bucket with a
//! leading-zero count and a shift, and still bounds the relative error.
//!
//! Layout, values in microseconds:
//! - values below [`SUB_BUCKETS`] µs each get their own exact bucket;
//! - above, every power-of-two "octave" `[2^m, 2^(m+1))` is split into
//!   [`SUB_BUCKETS`] equal buckets of width `2^(m-5)`.
//!
//! A bucket is reported by its midpoint, so the relative error of any value
//! (and of any quantile) is at most half a bucket width over the bucket start:
//! `2^(m-5) / 2 / 2^m = 1/64 ≈ 1.6 %` — inside the 2 % budget from 0.1 ms up
//! to [`MAX_TRACKED_US`] (10 minutes, clamped above).
//!
//! Storage is chunked per octave, in one contiguous vector of slots found
//! through a 26-byte directory; a slot is taken on first use and given back
//! when its chunk empties, so a series whose latencies span a few octaves
//! costs a few hundred bytes, not the whole dense table. Cells start at 8
//! bits and widen (exactly, for the whole histogram) the first time a count
//! would not fit: 8 → 16 → 32 bits.

/// Buckets per octave (and exact buckets below the first octave).
pub const SUB_BUCKETS: usize = 32;
const SUB_BITS: u32 = 5;
/// Largest latency kept apart; larger values are clamped into this value's
/// bucket (the highest bucket in use; the few above it stay empty).
pub const MAX_TRACKED_US: u64 = 600_000_000;
/// Number of octaves above the exact range needed to reach [`MAX_TRACKED_US`]
/// (`2^30 > 6e8`, first octave starts at `2^5`).
const OCTAVES: usize = 25;
/// Total number of buckets: the exact range plus every octave's buckets.
pub const BUCKETS: usize = SUB_BUCKETS + OCTAVES * SUB_BUCKETS;

/// Index of the bucket that holds `us` microseconds.
#[inline]
pub fn bucket_index(us: u64) -> u16 {
    let us = us.min(MAX_TRACKED_US);
    if us < SUB_BUCKETS as u64 {
        return us as u16;
    }
    let msb = 63 - us.leading_zeros(); // >= SUB_BITS
    let shift = msb - SUB_BITS;
    let sub = (us >> shift) as usize & (SUB_BUCKETS - 1);
    (SUB_BUCKETS + shift as usize * SUB_BUCKETS + sub) as u16
}

/// Lower bound (inclusive) of a bucket, in microseconds.
pub fn bucket_start_us(index: u16) -> f64 {
    let index = index as usize;
    if index < SUB_BUCKETS {
        return index as f64;
    }
    let shift = (index - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = (index - SUB_BUCKETS) % SUB_BUCKETS;
    ((SUB_BUCKETS + sub) as f64) * (1u64 << shift) as f64
}

/// Width of a bucket, in microseconds.
pub fn bucket_width_us(index: u16) -> f64 {
    let index = index as usize;
    if index < SUB_BUCKETS {
        return 1.0;
    }
    let shift = (index - SUB_BUCKETS) / SUB_BUCKETS;
    (1u64 << shift) as f64
}

/// Representative value of a bucket (its midpoint), in microseconds.
pub fn bucket_value_us(index: u16) -> f64 {
    if (index as usize) < SUB_BUCKETS {
        return index as f64;
    }
    bucket_start_us(index) + bucket_width_us(index) / 2.0
}

/// Index of the first bucket whose start is strictly above `threshold_us`
/// ([`BUCKETS`] when there is none; 0 for a negative threshold). Buckets
/// from this index on hold exactly the values [`LatencyHistogram::count_above_us`]
/// counts, so callers can compare indices instead of converting every
/// bucket. A NaN threshold gives [`BUCKETS`] (nothing is above it).
pub fn first_bucket_above(threshold_us: f64) -> usize {
    if threshold_us.is_nan() {
        return BUCKETS;
    }
    if threshold_us < 0.0 {
        return 0;
    }
    // Bucket starts are integers, increasing with the index: the bucket
    // after the one holding floor(threshold) starts above it, except where
    // values are clamped (walk on, rarely more than a step).
    let mut first = bucket_index(threshold_us.floor() as u64) as usize + 1;
    while first < BUCKETS && bucket_start_us(first as u16) <= threshold_us {
        first += 1;
    }
    first
}

/// A sparse histogram: `(bucket index, count)` pairs, sorted by index, no zero
/// counts. This is the wire and shared-data form; see [`LatencyHistogram`] for
/// the recording form.
pub type SparseHistogram = Vec<(u16, u32)>;

/// Rank (1-based) of quantile `q` (in `[0, 1]`, not NaN) among `count`
/// values: `ceil(q * count)`, at least 1. The same value as
/// `(q * count as f64).ceil() as u64` without the call to a software
/// `ceil` (the x86-64 baseline has no rounding instruction): the product is
/// non-negative, so its truncation is rounded up when below it.
#[inline]
pub(crate) fn rank_of(q: f64, count: u64) -> u64 {
    let x = q * count as f64;
    let t = x as u64;
    let rank = if (t as f64) < x {
        t.saturating_add(1)
    } else {
        t
    };
    rank.max(1)
}

/// Number of chunks (octaves, plus the exact range) in the full table.
const CHUNKS: usize = BUCKETS / SUB_BUCKETS;
/// Directory entry of a chunk without a slot (and owner of a free slot).
const NO_SLOT: u8 = u8::MAX;

/// A histogram cell: 8 bits while every count fits, then 16, then 32.
trait Cell: Copy + Default + PartialEq + std::fmt::Debug {
    /// Largest count the cell holds.
    const MAX: u32;
    /// A chunk's total: wide enough for [`SUB_BUCKETS`] cells at `MAX`.
    type Total: Copy + Default + PartialEq + std::fmt::Debug;
    fn get(self) -> u32;
    /// `v` must be `<= MAX`.
    fn make(v: u32) -> Self;
    fn total_get(t: Self::Total) -> u64;
    /// `v` must be `<= SUB_BUCKETS * MAX`.
    fn total_make(v: u64) -> Self::Total;
}

impl Cell for u8 {
    const MAX: u32 = u8::MAX as u32;
    type Total = u16;
    #[inline]
    fn get(self) -> u32 {
        u32::from(self)
    }
    #[inline]
    fn make(v: u32) -> Self {
        v.min(<Self as Cell>::MAX) as u8
    }
    #[inline]
    fn total_get(t: u16) -> u64 {
        u64::from(t)
    }
    #[inline]
    fn total_make(v: u64) -> u16 {
        v.min(u64::from(u16::MAX)) as u16
    }
}

impl Cell for u16 {
    const MAX: u32 = u16::MAX as u32;
    type Total = u32;
    #[inline]
    fn get(self) -> u32 {
        u32::from(self)
    }
    #[inline]
    fn make(v: u32) -> Self {
        v.min(<Self as Cell>::MAX) as u16
    }
    #[inline]
    fn total_get(t: u32) -> u64 {
        u64::from(t)
    }
    #[inline]
    fn total_make(v: u64) -> u32 {
        v.min(u64::from(u32::MAX)) as u32
    }
}

impl Cell for u32 {
    const MAX: u32 = u32::MAX;
    type Total = u64;
    #[inline]
    fn get(self) -> u32 {
        self
    }
    #[inline]
    fn make(v: u32) -> Self {
        v
    }
    #[inline]
    fn total_get(t: u64) -> u64 {
        t
    }
    #[inline]
    fn total_make(v: u64) -> u64 {
        v
    }
}

/// Sum of a chunk's counts from sub-bucket `from` on.
#[inline]
fn chunk_sum<C: Cell>(chunk: &[C; SUB_BUCKETS], from: usize) -> u64 {
    chunk.iter().skip(from).map(|&n| u64::from(n.get())).sum()
}

/// One chunk's storage: its counts, their total and the chunk it holds.
#[derive(Debug, Clone)]
struct Slot<C: Cell> {
    counts: [C; SUB_BUCKETS],
    /// Sum of `counts` (lets quantile walks skip whole chunks); as narrow
    /// as the cells allow (16 bits for 8-bit cells, 32 for 16-bit ones).
    total: C::Total,
    /// Chunk held, or [`NO_SLOT`] when the slot is free.
    chunk: u8,
}

impl<C: Cell> Slot<C> {
    fn free() -> Self {
        Slot {
            counts: [C::default(); SUB_BUCKETS],
            total: C::Total::default(),
            chunk: NO_SLOT,
        }
    }

    /// Sum of the counts.
    #[inline]
    fn total(&self) -> u64 {
        C::total_get(self.total)
    }

    /// Set the sum of the counts (at most `SUB_BUCKETS * C::MAX`, which
    /// the counts guarantee).
    #[inline]
    fn set_total(&mut self, v: u64) {
        self.total = C::total_make(v);
    }

    /// The same counts in wider cells.
    fn widen<D: Cell + From<C>>(&self) -> Slot<D> {
        Slot {
            counts: self.counts.map(D::from),
            total: D::total_make(self.total()),
            chunk: self.chunk,
        }
    }
}

/// The slots: 8-bit cells (a chunk's 32 counts and its total in 36 bytes)
/// until a count would pass 255, then 16-bit ones (72 bytes) until a count
/// would pass 65 535, then 32-bit ones. A store widens for good (a
/// histogram that once held that many in one bucket will again); the
/// counts are exact at every width.
#[derive(Debug, Clone)]
enum Store {
    Narrow8(Box<[Slot<u8>]>),
    Narrow(Box<[Slot<u16>]>),
    Wide(Box<[Slot<u32>]>),
}

/// `$body` with `$v` bound to the store's slot vector, whatever its width.
macro_rules! each_store {
    ($store:expr, $v:ident => $body:expr) => {
        match $store {
            Store::Narrow8($v) => $body,
            Store::Narrow($v) => $body,
            Store::Wide($v) => $body,
        }
    };
}

/// The slot holding chunk `chunk_i`, taking a free one (or a new one) when
/// it has none. `None` only for an out-of-range chunk.
#[inline]
fn slot_or_insert<'a, C: Cell>(
    dir: &mut [u8; CHUNKS],
    slots: &'a mut Box<[Slot<C>]>,
    chunk_i: usize,
) -> Option<&'a mut Slot<C>> {
    let entry = dir.get_mut(chunk_i)?;
    if *entry == NO_SLOT {
        let free = match slots.iter().position(|s| s.chunk == NO_SLOT) {
            Some(i) => i,
            None => {
                // Exact growth: slots are big and few (at most 26).
                let mut grown = std::mem::take(slots).into_vec();
                grown.reserve_exact(1);
                grown.push(Slot::free());
                *slots = grown.into_boxed_slice();
                slots.len() - 1
            }
        };
        *entry = free as u8;
        if let Some(slot) = slots.get_mut(free) {
            slot.chunk = chunk_i as u8;
        }
    }
    let s = usize::from(*entry);
    slots.get_mut(s)
}

/// Add `n` at (chunk, sub); `Err(())` (nothing changed) when the cell
/// cannot hold the sum and the store must widen first.
#[inline]
fn add_in<C: Cell>(
    dir: &mut [u8; CHUNKS],
    slots: &mut Box<[Slot<C>]>,
    count: &mut u64,
    chunk_i: usize,
    sub: usize,
    n: u32,
) -> Result<(), ()> {
    if let Some(slot) = slot_or_insert(dir, slots, chunk_i) {
        if let Some(cell) = slot.counts.get_mut(sub) {
            let old = cell.get();
            let sum = old.saturating_add(n);
            if sum > C::MAX {
                return Err(());
            }
            *cell = C::make(sum);
            let added = u64::from(sum - old);
            slot.set_total(slot.total() + added);
            *count += added;
        }
    }
    Ok(())
}

#[inline]
fn sub_in<C: Cell>(
    dir: &mut [u8; CHUNKS],
    slots: &mut [Slot<C>],
    count: &mut u64,
    chunk_i: usize,
    sub: usize,
    n: u32,
) {
    let Some(entry) = dir.get_mut(chunk_i) else {
        return;
    };
    let Some(slot) = slots.get_mut(usize::from(*entry)) else {
        return;
    };
    if let Some(cell) = slot.counts.get_mut(sub) {
        let taken = cell.get().min(n);
        *cell = C::make(cell.get() - taken);
        slot.set_total(slot.total() - u64::from(taken));
        *count -= u64::from(taken);
        if slot.total() == 0 {
            slot.chunk = NO_SLOT;
            *entry = NO_SLOT;
        }
    }
}

/// Add every entry of `entries` (as [`add_in`] one by one), resolving a
/// chunk's slot once per run of entries in the same chunk: a tick's sparse
/// delta is sorted, so most entries reuse the previous entry's slot, and
/// the totals are summed per run. `Err(k)` (entries before `k` applied)
/// when entry `k` does not fit its cell and the store must widen first.
#[inline]
fn merge_in<C: Cell>(
    dir: &mut [u8; CHUNKS],
    slots: &mut Box<[Slot<C>]>,
    count: &mut u64,
    entries: &[(u16, u32)],
) -> Result<(), usize> {
    // `rest` is what is left to apply; the index of an entry is
    // `entries.len() - rest.len()`.
    let mut rest = entries;
    let mut added_all = 0u64;
    while let Some(&(index, n)) = rest.first() {
        let index = usize::from(index);
        if index >= BUCKETS || n == 0 {
            rest = rest.get(1..).unwrap_or_default();
            continue;
        }
        let chunk_i = index / SUB_BUCKETS;
        let Some(slot) = slot_or_insert(dir, slots, chunk_i) else {
            rest = rest.get(1..).unwrap_or_default();
            continue;
        };
        let chunk_end = (chunk_i + 1) * SUB_BUCKETS;
        let mut added = 0u64;
        let mut overflow = false;
        // The run of entries in this chunk (an out-of-range index has a
        // chunk past the last, so it ends the run).
        while let Some((&(index, n), tail)) = rest.split_first() {
            let index = usize::from(index);
            if index >= chunk_end || index < chunk_end - SUB_BUCKETS {
                break;
            }
            if let Some(cell) = slot.counts.get_mut(index % SUB_BUCKETS) {
                let old = cell.get();
                let sum = old.saturating_add(n);
                if sum > C::MAX {
                    overflow = true;
                    break;
                }
                *cell = C::make(sum);
                added += u64::from(sum - old);
            }
            rest = tail;
        }
        slot.set_total(slot.total() + added);
        added_all += added;
        if overflow {
            *count += added_all;
            return Err(entries.len() - rest.len());
        }
    }
    *count += added_all;
    Ok(())
}

/// Subtract every entry (as [`sub_in`] one by one), resolving a chunk's
/// slot once per run of entries in the same chunk.
#[inline]
fn subtract_in<C: Cell>(
    dir: &mut [u8; CHUNKS],
    slots: &mut [Slot<C>],
    count: &mut u64,
    mut entries: impl Iterator<Item = (u16, u32)>,
) {
    let mut taken_all = 0u64;
    let mut next = entries.next();
    while let Some((index, _)) = next {
        let chunk_i = usize::from(index) / SUB_BUCKETS;
        let Some(entry) = dir.get_mut(chunk_i) else {
            next = entries.next();
            continue;
        };
        let Some(slot) = slots.get_mut(usize::from(*entry)) else {
            // No slot for this chunk: nothing to take.
            next = entries.next();
            continue;
        };
        let mut taken_run = 0u64;
        while let Some((index, n)) = next {
            let index = usize::from(index);
            if index / SUB_BUCKETS != chunk_i {
                break;
            }
            next = entries.next();
            if let Some(cell) = slot.counts.get_mut(index % SUB_BUCKETS) {
                let taken = cell.get().min(n);
                *cell = C::make(cell.get() - taken);
                taken_run += u64::from(taken);
                if taken_run >= slot.total() {
                    // The chunk emptied: its slot is freed, and the rest of
                    // the run finds no slot (as one by one).
                    break;
                }
            }
        }
        let total = slot.total();
        slot.set_total(total - taken_run.min(total));
        taken_all += taken_run;
        if slot.total() == 0 {
            slot.chunk = NO_SLOT;
            *entry = NO_SLOT;
        }
    }
    *count -= taken_all.min(*count);
}

/// Heap bytes of a slot table.
fn heap_bytes_of<C: Cell>(slots: &[Slot<C>]) -> usize {
    std::mem::size_of_val(slots)
}

/// Chunks in use, in index order, with their slots.
fn chunks_in<'a, C: Cell>(
    dir: &'a [u8; CHUNKS],
    slots: &'a [Slot<C>],
) -> impl Iterator<Item = (usize, &'a Slot<C>)> + 'a {
    dir.iter()
        .enumerate()
        .filter_map(move |(ci, &s)| slots.get(usize::from(s)).map(|slot| (ci, slot)))
}

fn quantile_in<C: Cell>(dir: &[u8; CHUNKS], slots: &[Slot<C>], rank: u64) -> Option<f64> {
    // Skip whole chunks by their totals (the scorer asks for quantiles of
    // every series every tick); descend only into the chunk that holds the
    // rank.
    let mut seen = 0u64;
    for (ci, slot) in chunks_in(dir, slots) {
        let total = slot.total();
        if seen + total < rank {
            seen += total;
            continue;
        }
        for (si, &n) in slot.counts.iter().enumerate() {
            seen += u64::from(n.get());
            if n.get() > 0 && seen >= rank {
                return Some(bucket_value_us((ci * SUB_BUCKETS + si) as u16));
            }
        }
    }
    None
}

/// [`quantile_in`] for ascending `ranks`, in one walk.
fn quantiles_in<C: Cell, const N: usize>(
    dir: &[u8; CHUNKS],
    slots: &[Slot<C>],
    ranks: &[u64; N],
    out: &mut [Option<f64>; N],
) {
    let mut next = 0usize;
    let mut seen = 0u64;
    for (ci, slot) in chunks_in(dir, slots) {
        let Some(&rank) = ranks.get(next) else {
            return;
        };
        let total = slot.total();
        if seen + total < rank {
            seen += total;
            continue;
        }
        for (si, &n) in slot.counts.iter().enumerate() {
            seen += u64::from(n.get());
            while n.get() > 0 {
                match (ranks.get(next), out.get_mut(next)) {
                    (Some(&rank), Some(o)) if seen >= rank => {
                        *o = Some(bucket_value_us((ci * SUB_BUCKETS + si) as u16));
                        next += 1;
                    }
                    _ => break,
                }
            }
        }
    }
}

fn count_above_in<C: Cell>(
    dir: &[u8; CHUNKS],
    slots: &[Slot<C>],
    first_chunk: usize,
    first_sub: usize,
) -> u64 {
    chunks_in(dir, slots)
        .filter(|&(ci, _)| ci >= first_chunk)
        .map(|(ci, slot)| {
            if ci == first_chunk {
                chunk_sum(&slot.counts, first_sub)
            } else {
                slot.total()
            }
        })
        .sum()
}

/// Recording histogram, chunked per octave.
///
/// Chunks live in one contiguous `Vec` of slots, found through a 26-byte
/// directory; a chunk that empties (a rolling window moved on) gives its
/// slot back for reuse, so a window whose latencies drift keeps the
/// footprint of the octaves it currently spans, and a walk touches one
/// allocation. Cells are 8-bit until a count passes 255, 16-bit until one
/// passes 65 535, then 32-bit ([`Store`]): a chunk of a rolling window at
/// tens of requests per second is 36 bytes, under one cache line.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    /// Slot of each chunk, or [`NO_SLOT`].
    dir: [u8; CHUNKS],
    store: Store,
    count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            dir: [NO_SLOT; CHUNKS],
            store: Store::Narrow8(Box::default()),
            count: 0,
        }
    }
}

/// Equal when they hold the same values (however their slots are laid out).
impl PartialEq for LatencyHistogram {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl Eq for LatencyHistogram {}

/// Non-zero buckets of a [`LatencyHistogram`] in index order.
pub struct Iter<'a> {
    h: &'a LatencyHistogram,
    index: usize,
}

impl Iterator for Iter<'_> {
    type Item = (u16, u32);
    fn next(&mut self) -> Option<(u16, u32)> {
        while self.index < BUCKETS {
            let (ci, si) = (self.index / SUB_BUCKETS, self.index % SUB_BUCKETS);
            let slot = usize::from(self.h.dir.get(ci).copied().unwrap_or(NO_SLOT));
            let n = each_store!(&self.h.store, v => {
                v.get(slot).and_then(|s| s.counts.get(si)).map(|c| c.get())
            });
            let Some(n) = n else {
                // No slot for this chunk: skip it whole.
                self.index = (ci + 1) * SUB_BUCKETS;
                continue;
            };
            let index = self.index;
            self.index += 1;
            if n > 0 {
                return Some((index as u16, n));
            }
        }
        None
    }
}

impl LatencyHistogram {
    /// An empty histogram (allocates nothing until the first record).
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the cells have widened to 32 bits.
    pub fn is_wide(&self) -> bool {
        matches!(self.store, Store::Wide(_))
    }

    /// Forget every value, keeping allocated slots (and the cell width)
    /// for reuse.
    pub fn clear(&mut self) {
        each_store!(&mut self.store, v => v.fill(Slot::free()));
        self.dir = [NO_SLOT; CHUNKS];
        self.count = 0;
    }

    /// Widen every cell one step, 8 to 16 or 16 to 32 bits (same slots,
    /// same directory); false when already 32 bits.
    fn widen(&mut self) -> bool {
        let wider = match &self.store {
            Store::Narrow8(v) => Store::Narrow(v.iter().map(Slot::widen).collect()),
            Store::Narrow(v) => Store::Wide(v.iter().map(Slot::widen).collect()),
            Store::Wide(_) => return false,
        };
        self.store = wider;
        true
    }

    /// Record one latency in microseconds.
    #[inline]
    pub fn record_us(&mut self, us: u64) {
        self.add_to_bucket(bucket_index(us), 1);
    }

    /// Add `n` to a bucket by index (saturating); out-of-range indices are
    /// ignored (they can only come from corrupt input, which must never
    /// panic).
    #[inline]
    pub fn add_to_bucket(&mut self, index: u16, n: u32) {
        let index = index as usize;
        if index >= BUCKETS || n == 0 {
            return;
        }
        let (chunk_i, sub) = (index / SUB_BUCKETS, index % SUB_BUCKETS);
        // 32-bit cells saturate instead of failing, so this ends.
        while each_store!(&mut self.store, v => {
            add_in(&mut self.dir, v, &mut self.count, chunk_i, sub, n)
        })
        .is_err()
        {
            if !self.widen() {
                break;
            }
        }
    }

    /// Subtract `n` from a bucket (used when a value leaves a rolling window).
    /// Never goes below zero; a chunk that empties frees its slot.
    #[inline]
    pub fn sub_from_bucket(&mut self, index: u16, n: u32) {
        let index = index as usize;
        let (chunk_i, sub) = (index / SUB_BUCKETS, index % SUB_BUCKETS);
        each_store!(&mut self.store, v => {
            sub_in(&mut self.dir, v, &mut self.count, chunk_i, sub, n)
        });
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (index, n) in other.iter() {
            self.add_to_bucket(index, n);
        }
    }

    /// Add a sparse histogram (the same as [`LatencyHistogram::add_to_bucket`]
    /// for each entry, in order; a run of entries in one chunk finds its
    /// slot once).
    pub fn merge_sparse(&mut self, sparse: &[(u16, u32)]) {
        let mut rest = sparse;
        // 32-bit cells saturate instead of failing, so this ends.
        while let Err(k) = each_store!(&mut self.store, v => {
            merge_in(&mut self.dir, v, &mut self.count, rest)
        }) {
            rest = rest.get(k..).unwrap_or_default();
            if !self.widen() {
                break;
            }
        }
    }

    /// Remove a sparse histogram previously merged.
    pub fn subtract_sparse(&mut self, sparse: &[(u16, u32)]) {
        self.subtract_entries(sparse.iter().copied());
    }

    /// Remove `(bucket, count)` entries previously added (the same as
    /// [`LatencyHistogram::sub_from_bucket`] for each, in order; a run of
    /// entries in one chunk finds its slot once).
    pub fn subtract_entries(&mut self, entries: impl Iterator<Item = (u16, u32)>) {
        each_store!(&mut self.store, v => {
            subtract_in(&mut self.dir, v, &mut self.count, entries)
        });
    }

    /// Non-zero buckets in index order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { h: self, index: 0 }
    }

    /// The sparse form (sorted, no zeros).
    pub fn to_sparse(&self) -> SparseHistogram {
        self.iter().collect()
    }

    /// Value at quantile `q` in `[0, 1]`, in microseconds; `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // Rank of the value, 1-based: the smallest value with at least
        // ceil(q * count) values at or below it.
        let rank = rank_of(q, self.count);
        let found = each_store!(&self.store, v => quantile_in(&self.dir, v, rank));
        // The fallback is only reachable if the count disagrees with the
        // buckets.
        found.or_else(|| self.iter().last().map(|(index, _)| bucket_value_us(index)))
    }

    /// Several quantiles in one pass: `qs` in ascending order (a NaN counts
    /// as 1.0); each answer equals [`LatencyHistogram::quantile_us`]'s.
    ///
    /// ```
    /// use vigil_scorer::histogram::LatencyHistogram;
    /// let mut h = LatencyHistogram::new();
    /// for us in [1_000, 2_000, 3_000, 40_000] {
    ///     h.record_us(us);
    /// }
    /// let [p50, p99] = h.quantiles_us([0.5, 0.99]);
    /// assert_eq!((p50, p99), (h.quantile_us(0.5), h.quantile_us(0.99)));
    /// ```
    pub fn quantiles_us<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        let ranks = qs.map(|q| {
            let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
            rank_of(q, self.count)
        });
        let sorted = ranks.windows(2).all(|w| matches!(w, [a, b] if a <= b));
        if self.count == 0 || !sorted {
            return qs.map(|q| self.quantile_us(q));
        }
        let mut out = [None; N];
        each_store!(&self.store, v => quantiles_in(&self.dir, v, &ranks, &mut out));
        // As in `quantile_us`: only reachable if the count disagrees with
        // the buckets.
        if out.iter().any(Option::is_none) {
            let last = self.iter().last().map(|(index, _)| bucket_value_us(index));
            for o in &mut out {
                *o = o.or(last);
            }
        }
        out
    }

    /// Number of recorded values strictly above `threshold_us` (whole buckets
    /// whose start is above the threshold; the threshold's own bucket is not
    /// counted, so this never overstates).
    pub fn count_above_us(&self, threshold_us: f64) -> u64 {
        if threshold_us.is_nan() {
            return 0;
        }
        let first = first_bucket_above(threshold_us);
        let (first_chunk, first_sub) = (first / SUB_BUCKETS, first % SUB_BUCKETS);
        each_store!(&self.store, v => count_above_in(&self.dir, v, first_chunk, first_sub))
    }

    /// Approximate heap bytes held (for memory accounting in benchmarks).
    pub fn heap_bytes(&self) -> usize {
        each_store!(&self.store, v => heap_bytes_of(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_in_one_pass_equal_each_quantile() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for size in [0usize, 1, 2, 5, 40, 300, 70_000] {
            let mut h = LatencyHistogram::new();
            for _ in 0..size {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // Spread over 0.1 ms .. ~10 s, with repeats.
                h.record_us(100 + (rng % 1_000) * (1 + rng % 9_973));
            }
            let qs = [0.0, 0.5, 0.5, 0.95, 0.99, 1.0];
            let one = h.quantiles_us(qs);
            for (q, got) in qs.iter().zip(one) {
                assert_eq!(got, h.quantile_us(*q), "size {size} q {q}");
            }
            let [a, b] = h.quantiles_us([0.99, 0.5]);
            assert_eq!(
                (a, b),
                (h.quantile_us(0.99), h.quantile_us(0.5)),
                "unsorted"
            );
        }
    }

    #[test]
    fn rank_of_is_ceil() {
        for count in [0u64, 1, 2, 3, 7, 100, 241, 1_000_003, u64::from(u32::MAX)] {
            for k in 0..=1000 {
                let q = f64::from(k) / 1000.0;
                let want = ((q * count as f64).ceil() as u64).max(1);
                assert_eq!(rank_of(q, count), want, "q {q} count {count}");
            }
        }
    }

    #[test]
    fn every_value_in_range_is_within_two_percent() {
        // 0.1 ms .. 10 min, stepping geometrically plus bucket edges.
        let mut us = 100u64;
        while us <= MAX_TRACKED_US {
            for v in [us, us + 1, us.saturating_sub(1).max(100)] {
                let rep = bucket_value_us(bucket_index(v));
                let err = (rep - v as f64).abs() / v as f64;
                assert!(err <= 0.02, "value {v} us -> {rep} us, error {err}");
            }
            us = us * 101 / 100 + 1;
        }
    }

    #[test]
    fn indices_are_monotonic_and_in_range() {
        let mut prev = 0u16;
        for v in (0..2_000_000u64)
            .step_by(7)
            .chain([MAX_TRACKED_US, u64::MAX])
        {
            let i = bucket_index(v);
            assert!((i as usize) < BUCKETS);
            assert!(i >= prev);
            prev = i;
        }
        // Everything above the tracked range lands in the bucket of the
        // largest tracked value, the highest bucket ever used.
        assert_eq!(bucket_index(u64::MAX), bucket_index(MAX_TRACKED_US));
        assert_eq!(
            bucket_index(MAX_TRACKED_US + 12_345),
            bucket_index(MAX_TRACKED_US)
        );
    }

    #[test]
    fn quantiles_match_exact_within_two_percent() {
        let mut h = LatencyHistogram::new();
        let mut values: Vec<u64> = (0..10_000u64).map(|i| 100 + (i * i) % 900_000).collect();
        for v in &values {
            h.record_us(*v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let exact = values[((q * values.len() as f64).ceil() as usize).max(1) - 1] as f64;
            let got = h.quantile_us(q).unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.02,
                "q{q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn sparse_round_trip_and_subtract() {
        let mut a = LatencyHistogram::new();
        for v in [150, 150, 2_000, 45_000, 45_001, 9_000_000] {
            a.record_us(v);
        }
        let sparse = a.to_sparse();
        let mut b = LatencyHistogram::new();
        b.merge_sparse(&sparse);
        assert_eq!(b.to_sparse(), sparse);
        assert_eq!(b.count(), 6);
        b.subtract_sparse(&sparse);
        assert_eq!(b.count(), 0);
        assert!(b.to_sparse().is_empty());
        // Corrupt indices are ignored, not a panic.
        b.add_to_bucket(u16::MAX, 3);
        b.sub_from_bucket(u16::MAX, 3);
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn fast_quantile_and_count_above_match_the_bucket_walk() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let mut h = LatencyHistogram::new();
            let n = next() % 300;
            for _ in 0..n {
                let scale = 1u64 << (next() % 34);
                h.record_us(next() % scale);
            }
            if round % 3 == 0 {
                let sparse = h.to_sparse();
                h.subtract_sparse(&sparse[..sparse.len() / 2]);
            }
            for q in [0.0, 0.01, 0.5, 0.95, 0.99, 1.0, f64::NAN, -1.0, 2.0] {
                let expected = if h.count() == 0 {
                    None
                } else {
                    let qq = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
                    let rank = ((qq * h.count() as f64).ceil() as u64).max(1);
                    let mut seen = 0;
                    h.iter()
                        .find(|(_, n)| {
                            seen += *n as u64;
                            seen >= rank
                        })
                        .map(|(i, _)| bucket_value_us(i))
                };
                assert_eq!(h.quantile_us(q), expected, "q {q}");
            }
            let mut thresholds = vec![-5.0, 0.0, 0.5, 31.0, 31.5, 32.0, 1e12, f64::NAN];
            thresholds.extend(h.iter().map(|(i, _)| bucket_start_us(i)));
            thresholds.extend(h.iter().map(|(i, _)| bucket_value_us(i)));
            thresholds.push(MAX_TRACKED_US as f64);
            for t in thresholds {
                let slow: u64 = h
                    .iter()
                    .filter(|(i, _)| bucket_start_us(*i) > t)
                    .map(|(_, n)| n as u64)
                    .sum();
                assert_eq!(h.count_above_us(t), slow, "threshold {t}");
            }
        }
    }

    #[test]
    fn emptied_chunks_give_their_slot_back() {
        let mut h = LatencyHistogram::new();
        // A window drifting across octaves: never more than two in use.
        for octave in 5..30u32 {
            let us = 1u64 << octave;
            h.record_us(us);
            h.record_us(us + us / 3);
            if octave > 5 {
                let prev = 1u64 << (octave - 1);
                h.sub_from_bucket(bucket_index(prev), 1);
                h.sub_from_bucket(bucket_index(prev + prev / 3), 1);
            }
            assert_eq!(h.count(), 2);
            assert!(
                h.heap_bytes() <= 2 * std::mem::size_of::<Slot<u16>>(),
                "{octave}"
            );
        }
        assert_eq!(
            h.to_sparse(),
            vec![
                (bucket_index(1 << 29), 1),
                (bucket_index((1 << 29) + (1 << 29) / 3), 1)
            ]
        );
        // Equality is by content, not slot layout.
        let mut other = LatencyHistogram::new();
        other.merge(&h);
        assert_eq!(other, h);
        h.clear();
        assert!(h.is_empty() && h.iter().next().is_none());
        assert_ne!(other, h);
    }

    #[test]
    fn saturated_cells_keep_count_consistent() {
        let mut h = LatencyHistogram::new();
        h.add_to_bucket(40, u32::MAX);
        h.add_to_bucket(40, 5);
        h.add_to_bucket(41, 7);
        assert_eq!(h.count(), u64::from(u32::MAX) + 7);
        assert_eq!(h.quantile_us(1.0), Some(bucket_value_us(41)));
        h.sub_from_bucket(40, u32::MAX);
        assert_eq!(h.count(), 7);
        assert_eq!(h.quantile_us(0.0), Some(bucket_value_us(41)));
    }

    /// Cells widen, exactly, when a count passes 255 (to 16 bits) and
    /// 65 535 (to 32); values, quantiles and totals are the same as before.
    #[test]
    fn cells_widen_on_overflow() {
        let mut h = LatencyHistogram::new();
        h.add_to_bucket(40, 60_000);
        h.add_to_bucket(300, 3);
        assert!(!h.is_wide());
        let narrow_bytes = h.heap_bytes();
        h.add_to_bucket(40, 10_000);
        assert!(h.is_wide());
        assert!(h.heap_bytes() > narrow_bytes);
        assert_eq!(h.count(), 70_003);
        assert_eq!(h.to_sparse(), vec![(40, 70_000), (300, 3)]);
        assert_eq!(h.quantile_us(1.0), Some(bucket_value_us(300)));
        assert_eq!(h.count_above_us(bucket_start_us(41)), 3);
        h.sub_from_bucket(40, 69_999);
        assert_eq!(h.to_sparse(), vec![(40, 1), (300, 3)]);
    }

    /// 8-bit cells widen to 16 bits, then to 32, exactly, in the middle of
    /// a sparse merge too (the entries before and after the one that did
    /// not fit are each applied once).
    #[test]
    fn cells_widen_in_steps_mid_merge() {
        let mut h = LatencyHistogram::new();
        h.merge_sparse(&[(40, 200), (41, 255), (300, 1)]);
        assert_eq!(h.heap_bytes(), 2 * std::mem::size_of::<Slot<u8>>());
        h.merge_sparse(&[(39, 1), (40, 56), (41, 1), (42, 70_000), (43, 2)]);
        assert!(h.is_wide());
        assert_eq!(
            h.to_sparse(),
            vec![
                (39, 1),
                (40, 256),
                (41, 256),
                (42, 70_000),
                (43, 2),
                (300, 1)
            ]
        );
        assert_eq!(h.count(), 1 + 256 + 256 + 70_000 + 2 + 1);
        let mut g = LatencyHistogram::new();
        g.add_to_bucket(7, 255);
        g.add_to_bucket(7, 1);
        assert!(!g.is_wide());
        assert_eq!(g.heap_bytes(), std::mem::size_of::<Slot<u16>>());
        assert_eq!(g.quantile_us(1.0), Some(bucket_value_us(7)));
        g.subtract_sparse(&[(7, 256)]);
        assert!(g.is_empty());
    }

    #[test]
    fn count_above_never_overstates() {
        let mut h = LatencyHistogram::new();
        for v in 1..=1000u64 {
            h.record_us(v * 1000);
        }
        let above = h.count_above_us(500_000.0);
        assert!((480..=500).contains(&above), "{above}");
    }
}
