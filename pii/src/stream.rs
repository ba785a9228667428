//! Chunked scanning with bounded carry-over, so an entity straddling a chunk
//! boundary is still found exactly once.
//!
//! The scanner keeps at most [`CARRY`] + [`STEP`] bytes between scans (and
//! carries [`CARRY`] + [`context::BEFORE`] of them into the next one); a
//! segment that arrives whole is scanned where it lies, without a copy. A finding is reported once at least `CARRY` bytes follow its start
//! (every entity is shorter than that) or at [`StreamScanner::finish`].
//! Offsets are absolute: counted from the first byte ever fed (plus skips).

use crate::context;
use crate::scan::{Finding, Scanner};
use crate::secret::MAX_PEM;

/// Longest entity the stream guarantees to find across chunk boundaries.
pub const CARRY: usize = MAX_PEM + 96;

/// New bytes gathered between two scans of a long segment. Each scan
/// re-reads the last [`CARRY`] bytes of the one before, so a longer step
/// re-reads less (a quarter at most), at the price of holding more.
pub const STEP: usize = 4 * CARRY;

/// A streaming scanner.
///
/// ```
/// use vigil_pii::{Kind, Scanner, StreamScanner};
/// let mut st = StreamScanner::new(Scanner::default());
/// let mut out = Vec::new();
/// st.feed(b"pay with 4111 1111 ", &mut out);
/// st.feed(b"1111 1111 today", &mut out);
/// st.finish(&mut out);
/// assert_eq!(out.len(), 1);
/// assert_eq!((out[0].kind, out[0].start, out[0].end), (Kind::Card, 9, 28));
/// ```
#[derive(Debug, Clone)]
pub struct StreamScanner {
    scanner: Scanner,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]`.
    base: usize,
    /// Findings starting before this (absolute) were already decided.
    frontier: usize,
    /// End of the last reported finding (absolute).
    emitted_end: usize,
    scratch: Vec<Finding>,
}

impl StreamScanner {
    /// A stream scanner with these detectors.
    pub fn new(scanner: Scanner) -> Self {
        StreamScanner {
            scanner,
            buf: Vec::new(),
            base: 0,
            frontier: 0,
            emitted_end: 0,
            scratch: Vec::new(),
        }
    }

    /// Bytes currently held between scans (bounded by `CARRY + STEP` plus the last chunk).
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Absolute offset of the next byte to be fed.
    pub fn position(&self) -> usize {
        self.base + self.buf.len()
    }

    /// Feed the next chunk; findings that are now certain are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Finding>) {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= CARRY + STEP {
            self.scan(false, out);
        }
    }

    /// Feed the last chunk of the segment and [`finish`](Self::finish) it.
    /// When nothing is held (the whole segment is `chunk`), `chunk` is scanned
    /// in place, with no copy and no second pass over its tail.
    pub fn feed_last(&mut self, chunk: &[u8], out: &mut Vec<Finding>) {
        if !self.buf.is_empty() {
            self.feed(chunk, out);
            self.finish(out);
            return;
        }
        self.scratch.clear();
        self.scanner.scan_into(chunk, &mut self.scratch);
        for f in &self.scratch {
            let start = f.start + self.base;
            if start >= self.frontier && start >= self.emitted_end {
                out.push(Finding {
                    start,
                    end: f.end + self.base,
                    ..*f
                });
                self.emitted_end = f.end + self.base;
            }
        }
        self.base += chunk.len();
        self.frontier = self.base;
    }

    /// End of the segment: report everything left, and start a new segment
    /// at the current position (nothing carries over into it).
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        self.scan(true, out);
        self.base += self.buf.len();
        self.buf.clear();
        self.frontier = self.base;
    }

    /// Advance the position by `n` bytes that are not inspected (ends the
    /// current segment; `n == 0` does nothing).
    pub fn skip(&mut self, n: usize, out: &mut Vec<Finding>) {
        if n == 0 {
            return;
        }
        if !self.buf.is_empty() {
            self.finish(out);
        }
        self.base += n;
        self.frontier = self.base;
    }

    fn scan(&mut self, last: bool, out: &mut Vec<Finding>) {
        self.scratch.clear();
        self.scanner.scan_into(&self.buf, &mut self.scratch);
        let len = self.buf.len();
        let cutoff = if last { len } else { len.saturating_sub(CARRY) };
        for f in &self.scratch {
            let start = f.start + self.base;
            if start >= self.frontier && start >= self.emitted_end && f.start < cutoff {
                out.push(Finding {
                    start,
                    end: f.end + self.base,
                    ..*f
                });
                self.emitted_end = f.end + self.base;
            }
        }
        if last {
            return;
        }
        self.frontier = self.base + cutoff;
        let keep_from = cutoff.saturating_sub(context::BEFORE).min(len);
        self.buf.drain(..keep_from);
        self.base += keep_from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    fn chunked(text: &[u8], size: usize) -> Vec<(Kind, usize, usize)> {
        let mut st = StreamScanner::new(Scanner::default());
        let mut out = Vec::new();
        for c in text.chunks(size.max(1)) {
            st.feed(c, &mut out);
            assert!(st.held() <= CARRY + STEP + size);
        }
        st.finish(&mut out);
        out.into_iter().map(|f| (f.kind, f.start, f.end)).collect()
    }

    #[test]
    fn feed_last_matches_feed_and_finish() {
        let text: &[u8] = b"a 4111 1111 1111 1111 b ann@example.com c 10.0.0.1";
        for split in [0, 5, 20, text.len()] {
            let (a, b) = text.split_at(split);
            let mut one = StreamScanner::new(Scanner::default());
            let mut two = one.clone();
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for st in [&mut one, &mut two] {
                st.skip(3, &mut Vec::new());
            }
            one.feed(a, &mut x);
            one.feed(b, &mut x);
            one.finish(&mut x);
            two.feed(a, &mut y);
            two.feed_last(b, &mut y);
            assert_eq!(x, y, "split {split}");
            assert_eq!(one.position(), two.position());
            assert_eq!(x.len(), 3);
        }
    }

    #[test]
    fn same_findings_at_every_chunk_size() {
        let mut text = Vec::new();
        for i in 0..400 {
            text.extend_from_slice(
                format!(
                    "line {i}: mail u{i}@x.example.com card 4111 1111 1111 1111 ip 10.0.{}.{} ",
                    i % 250,
                    i % 200
                )
                .as_bytes(),
            );
            if i % 100 == 7 {
                text.extend_from_slice(b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n");
            }
        }
        let whole: Vec<_> = Scanner::default()
            .scan(&text)
            .into_iter()
            .map(|f| (f.kind, f.start, f.end))
            .collect();
        assert!(whole.len() > 1200);
        for size in [1, 7, 64, 1000, 4096, 9000, 100_000] {
            assert_eq!(chunked(&text, size), whole, "chunk size {size}");
        }
    }
}
