//! Binary encoding of everything Vigil keeps in Envoy shared data.
//!
//! Shared data is a process-wide byte map read and written by every worker VM
//! each tick, so the records are compact (LEB128 varints, delta-coded
//! histogram indices) and versioned by a leading byte. Decoding is total: a
//! truncated, foreign or corrupt value yields `None`, never a panic, and the
//! caller treats it as empty.

use vigil_scorer::histogram::SparseHistogram;
use vigil_scorer::window::{Counters, TickDelta};

/// Format version of every record written by this build.
pub const FORMAT_VERSION: u8 = 1;

/// Append-only writer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer whose output starts with the format version.
    pub fn new() -> Self {
        Writer {
            buf: vec![FORMAT_VERSION],
        }
    }

    /// Unsigned LEB128.
    pub fn uint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }

    /// One raw byte.
    pub fn byte(&mut self, b: u8) {
        self.buf.push(b);
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.uint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// Raw bytes, as they are (a nested record at the end).
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// The encoded record.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Cursor over an encoded record.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Start reading; `None` when the version byte is missing or foreign.
    pub fn new(buf: &'a [u8]) -> Option<Self> {
        let (&version, rest) = buf.split_first()?;
        (version == FORMAT_VERSION).then_some(Reader { buf: rest })
    }

    /// Unsigned LEB128 (at most 10 bytes).
    pub fn uint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let (&byte, rest) = self.buf.split_first()?;
            self.buf = rest;
            if shift == 63 && byte > 1 {
                return None;
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// One raw byte.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.uint()?).ok()?;
        if len > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(head)
    }

    /// A count of following items, refused when it exceeds what the remaining
    /// bytes could possibly hold (each item takes at least `min_item_bytes`).
    pub fn count(&mut self, min_item_bytes: usize) -> Option<usize> {
        let n = usize::try_from(self.uint()?).ok()?;
        (n.saturating_mul(min_item_bytes.max(1)) <= self.buf.len()).then_some(n)
    }

    /// The bytes not read yet (a nested record at the end).
    pub fn rest(self) -> &'a [u8] {
        self.buf
    }

    /// True when every byte was consumed.
    pub fn is_done(&self) -> bool {
        self.buf.is_empty()
    }
}

/// What a series' pending record carries besides its [`TickDelta`]: the
/// inference signals (time to first byte, stream shape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// Time to first response body byte, sparse histogram (µs buckets).
    pub ttft: SparseHistogram,
    /// Response body chunks seen.
    pub stream_chunks: u64,
    /// Sum over responses of (last chunk − first chunk) time, µs, and the
    /// number of gaps behind it (chunks − 1 per response): the mean
    /// inter-chunk gap is their ratio.
    pub gap_sum_us: u64,
    /// Gaps counted in `gap_sum_us`.
    pub gaps: u64,
}

impl Extras {
    /// True when nothing was observed.
    pub fn is_empty(&self) -> bool {
        *self == Extras::default()
    }

    /// Add another record's extras (sparse merge, stays sorted).
    pub fn add(&mut self, other: &Extras) {
        let mut a = TickDelta {
            latency: std::mem::take(&mut self.ttft),
            ..Default::default()
        };
        a.add(&TickDelta {
            latency: other.ttft.clone(),
            ..Default::default()
        });
        self.ttft = a.latency;
        self.stream_chunks = self.stream_chunks.saturating_add(other.stream_chunks);
        self.gap_sum_us = self.gap_sum_us.saturating_add(other.gap_sum_us);
        self.gaps = self.gaps.saturating_add(other.gaps);
    }
}

/// Encode one series' pending observations (counters and sparse histogram).
pub fn encode_delta(d: &TickDelta) -> Vec<u8> {
    encode_pending(d, &Extras::default())
}

/// Encode one series' pending observations with their [`Extras`] (an
/// optional tail: records without it still decode).
pub fn encode_pending(d: &TickDelta, x: &Extras) -> Vec<u8> {
    let mut w = Writer::new();
    write_delta(&mut w, d);
    if !x.is_empty() {
        write_sparse(&mut w, &x.ttft);
        w.uint(x.stream_chunks);
        w.uint(x.gap_sum_us);
        w.uint(x.gaps);
    }
    w.finish()
}

/// The counters a record carries, in their order on the wire: the first
/// layout's eight, then the outcome classes (an optional tail, so records
/// of the first layout still decode). One table serves both directions, so
/// writer and reader cannot drift apart.
type Field = fn(&mut Counters) -> &mut u64;
const HEAD_FIELDS: [Field; 8] = [
    |c| &mut c.requests,
    |c| &mut c.errors,
    |c| &mut c.status_4xx,
    |c| &mut c.resets,
    |c| &mut c.overflows,
    |c| &mut c.timeouts,
    |c| &mut c.retries,
    |c| &mut c.latency_sum_us,
];
const TAIL_FIELDS: [Field; 4] = [
    |c| &mut c.server_errors,
    |c| &mut c.throttled,
    |c| &mut c.client_gone,
    |c| &mut c.grpc_unknown,
];

fn write_fields(w: &mut Writer, c: &Counters, fields: &[Field]) {
    let mut c = *c;
    for f in fields {
        w.uint(*f(&mut c));
    }
}

fn read_fields(r: &mut Reader<'_>, c: &mut Counters, fields: &[Field]) -> Option<()> {
    for f in fields {
        *f(c) = r.uint()?;
    }
    Some(())
}

/// A sparse histogram: its length, then (index step, count) pairs with
/// strictly increasing indices.
fn write_sparse(w: &mut Writer, h: &SparseHistogram) {
    w.uint(h.len() as u64);
    let mut prev = 0u16;
    for &(index, n) in h {
        w.uint(u64::from(index.wrapping_sub(prev)));
        w.uint(u64::from(n));
        prev = index;
    }
}

fn read_sparse(r: &mut Reader<'_>) -> Option<SparseHistogram> {
    let n = r.count(2)?;
    let mut out = Vec::with_capacity(n);
    let mut index = 0u16;
    for i in 0..n {
        let step = u16::try_from(r.uint()?).ok()?;
        if i > 0 && step == 0 {
            return None; // indices must be strictly increasing
        }
        index = index.checked_add(step)?;
        let count = u32::try_from(r.uint()?).ok()?;
        out.push((index, count));
    }
    Some(out)
}

fn write_delta(w: &mut Writer, d: &TickDelta) {
    write_fields(w, &d.counters, &HEAD_FIELDS);
    write_sparse(w, &d.latency);
    write_fields(w, &d.counters, &TAIL_FIELDS);
}

/// Decode a delta record; `None` when corrupt.
pub fn decode_delta(bytes: &[u8]) -> Option<TickDelta> {
    decode_pending(bytes).map(|(d, _)| d)
}

/// Decode a pending record with its [`Extras`]; `None` when corrupt.
pub fn decode_pending(bytes: &[u8]) -> Option<(TickDelta, Extras)> {
    let mut r = Reader::new(bytes)?;
    let mut counters = Counters::default();
    read_fields(&mut r, &mut counters, &HEAD_FIELDS)?;
    let latency = read_sparse(&mut r)?;
    if !r.is_done() {
        read_fields(&mut r, &mut counters, &TAIL_FIELDS)?;
    }
    let mut extras = Extras::default();
    if !r.is_done() {
        extras.ttft = read_sparse(&mut r)?;
        extras.stream_chunks = r.uint()?;
        extras.gap_sum_us = r.uint()?;
        extras.gaps = r.uint()?;
    }
    r.is_done()
        .then_some((TickDelta { counters, latency }, extras))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_layout_without_outcome_classes_still_decodes() {
        let mut w = Writer::new();
        for v in [3u64, 1, 0, 0, 0, 0, 0, 900, 1, 4, 3] {
            w.uint(v);
        }
        let d = decode_delta(&w.finish()).unwrap_or_default();
        assert_eq!((d.counters.requests, d.counters.errors), (3, 1));
        assert_eq!(d.latency, vec![(4, 3)]);
        assert_eq!(d.counters.throttled, 0);
    }

    #[test]
    fn pending_with_extras_round_trips() {
        let d = TickDelta {
            counters: Counters {
                requests: 2,
                ..Default::default()
            },
            latency: vec![(3, 2)],
        };
        let x = Extras {
            ttft: vec![(1, 1), (400, 1)],
            stream_chunks: 20,
            gap_sum_us: 1_000,
            gaps: 18,
        };
        assert_eq!(
            decode_pending(&encode_pending(&d, &x)),
            Some((d.clone(), x.clone()))
        );
        assert_eq!(decode_delta(&encode_pending(&d, &x)), Some(d.clone()));
        let mut y = x.clone();
        y.add(&x);
        assert_eq!(y.ttft, vec![(1, 2), (400, 2)]);
        assert_eq!(y.stream_chunks, 40);
        let bytes = encode_pending(&d, &x);
        for cut in 0..bytes.len() {
            // Never a panic; a cut inside the tail is refused.
            let _ = decode_pending(&bytes[..cut]);
        }
    }

    /// The bytes of a record are pinned: a change to the layout must bump
    /// [`FORMAT_VERSION`] (and update this test), never silently change what
    /// another build of the filter in the same Envoy reads.
    #[test]
    fn format_is_pinned_to_its_version() {
        let d = TickDelta {
            counters: Counters {
                requests: 300,
                errors: 2,
                latency_sum_us: 1,
                server_errors: 1,
                grpc_unknown: 5,
                ..Default::default()
            },
            latency: vec![(4, 3), (200, 1)],
        };
        let x = Extras {
            ttft: vec![(7, 2)],
            stream_chunks: 3,
            gap_sum_us: 130,
            gaps: 2,
        };
        assert_eq!(FORMAT_VERSION, 1);
        assert_eq!(
            encode_pending(&d, &x),
            vec![
                1, // version
                0xac, 0x02, 2, 0, 0, 0, 0, 0, 1, // head counters
                2, 4, 3, 196, 1, 1, // latency: 2 entries, steps 4 and 196
                1, 0, 0, 5, // outcome classes
                1, 7, 2, 3, 0x82, 0x01, 2, // extras
            ]
        );
    }

    #[test]
    fn delta_round_trip() {
        let d = TickDelta {
            counters: Counters {
                requests: 12_345,
                errors: 7,
                status_4xx: 1,
                resets: 2,
                overflows: 3,
                timeouts: 4,
                retries: 5,
                latency_sum_us: u64::MAX,
                server_errors: 6,
                throttled: 8,
                client_gone: 9,
                grpc_unknown: 10,
            },
            latency: vec![(0, 1), (5, 300), (831, u32::MAX)],
        };
        assert_eq!(decode_delta(&encode_delta(&d)), Some(d));
        assert_eq!(
            decode_delta(&encode_delta(&TickDelta::default())),
            Some(TickDelta::default())
        );
    }

    #[test]
    fn corrupt_input_is_rejected_not_a_panic() {
        let good = encode_delta(&TickDelta {
            counters: Counters {
                requests: 3,
                ..Default::default()
            },
            latency: vec![(1, 1), (2, 2)],
        });
        // The four outcome-class counters (one byte each here) are an
        // optional tail: a record cut right before them is the previous layout.
        let previous_layout = good.len() - 4;
        for cut in 0..good.len() {
            let decoded = decode_delta(&good[..cut]);
            if cut == previous_layout {
                assert!(decoded.is_some(), "previous layout at {cut}");
            } else {
                assert_eq!(decoded, None, "truncated at {cut}");
            }
        }
        assert_eq!(decode_delta(&[9, 1, 2, 3]), None, "foreign version");
        assert_eq!(
            decode_delta(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            None
        );
        // A huge claimed count with no bytes behind it.
        let mut w = Writer::new();
        for _ in 0..8 {
            w.uint(0);
        }
        w.uint(u64::MAX);
        assert_eq!(decode_delta(&w.finish()), None);
        // Pseudo-random garbage never panics.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_delta(&bytes);
        }
    }
}
