//! The one-shot scanner: one left-to-right pass that tries the detectors at
//! word starts (and emails at each `@`), then keeps non-overlapping findings
//! at or above the confidence threshold.

use crate::kind::{Kind, KindSet};
use crate::{at, numeric, secret, text};

/// One detected entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// What it is.
    pub kind: Kind,
    /// Byte offset of its first byte.
    pub start: usize,
    /// Byte offset just past its last byte.
    pub end: usize,
    /// Confidence, 0–100.
    pub confidence: u8,
}

/// Default confidence threshold: findings below it are dropped.
pub const DEFAULT_MIN_CONFIDENCE: u8 = 50;

/// A configured scanner: which kinds, and the confidence threshold.
///
/// ```
/// use vigil_pii::{Kind, KindSet, Scanner};
/// let only_email = Scanner::new(KindSet::of(&[Kind::Email]), 50);
/// let f = only_email.scan(b"card 4111111111111111 or a@b.io");
/// assert_eq!(f.len(), 1);
/// assert_eq!(f[0].kind, Kind::Email);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanner {
    /// Kinds reported.
    pub kinds: KindSet,
    /// Findings below this confidence are dropped.
    pub min_confidence: u8,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            kinds: KindSet::all(),
            min_confidence: DEFAULT_MIN_CONFIDENCE,
        }
    }
}

/// Letters, digits and `_`.
// Built at compile time (a `while` over 0..256 cannot go out of bounds).
#[allow(clippy::indexing_slicing)]
static WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    t
};

/// Bytes at which the scan has nothing to try: not a word character and
/// not one of `@ + ( : -` (every detector starts at a word character or one
/// of those). The loop steps over runs of them without further checks.
// Built at compile time (a `while` over 0..256 cannot go out of bounds).
#[allow(clippy::indexing_slicing)]
static INERT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'@' | b'+' | b'(' | b':' | b'-'));
        b += 1;
    }
    t
};

#[inline(always)]
fn inert(b: u8) -> bool {
    INERT.get(usize::from(b)).copied().unwrap_or(false)
}

#[inline(always)]
fn word_char(b: u8) -> bool {
    WORD.get(usize::from(b)).copied().unwrap_or(false)
}

/// High bit of each byte of `x` that is not an ASCII lower-case letter
/// (SWAR). Exact up to and including the first such byte: a carry can only
/// leave a byte of 0x80 or more, which is itself flagged, and only moves
/// towards later bytes.
#[inline(always)]
fn not_lower(x: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // High bit set per byte: b >= 'a' (ge), b > 'z' (gt), b >= 0x80 (x).
    let ge = x.wrapping_add(LO * (0x80 - u64::from(b'a')));
    let gt = x.wrapping_add(LO * (0x80 - u64::from(b'z') - 1));
    !(ge & !gt & !x) & HI
}

/// Whether the word `s[i..we]` (a word start) is lower-case prose that no
/// detector starts at: not a JWT start (`ey`), an IPv6 group (before `:`) or
/// a token (20+ characters, or joined by `-+/=`).
#[inline(always)]
fn prose_word(s: &[u8], i: usize, we: usize) -> bool {
    let b = at(s, i);
    b.is_ascii_lowercase()
        && we - i < 20
        && !(b == b'e' && at(s, i + 1) == b'y')
        && !matches!(at(s, we), b':' | b'-' | b'+' | b'/' | b'=')
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// High bit of each byte of `x` equal to `c`, exactly (no carry crosses a
/// byte: the additions are done on the low seven bits).
#[inline(always)]
fn eq_bytes(x: u64, c: u8) -> u64 {
    let t = x ^ (LO * u64::from(c));
    !(((t & LOW7).wrapping_add(LOW7)) | t) & HI
}

/// High bit of each byte of `x` in `lo..=hi` (ASCII), exactly.
#[inline(always)]
fn range_bytes(x: u64, lo: u8, hi: u8) -> u64 {
    let y = x & LOW7;
    let ge = y.wrapping_add(LO * (0x80 - u64::from(lo)));
    let gt = y.wrapping_add(LO * (0x80 - u64::from(hi) - 1));
    ge & !gt & !x & HI
}

/// Longest lower-case word [`skip_prose`] passes over (a token is 20+).
const PROSE_WORD_MAX: usize = 19;

/// From `i` (not inside a word), eight bytes at a time over plain prose:
/// words of letters, spaces, `,` and `.`. Every word passed over is shorter
/// than 20, lower-case or capitalised (a capital after a separator followed
/// by a lower-case letter), and followed by a space, `,` or `.`; at such a
/// word [`Scanner::word`] finds nothing (a lower-case word is only a JWT start
/// with an upper-case `J` after `ey`, an IPv6 group before `:`, or a token
/// when 20+ long or joined by `-+/=`; an IBAN or AWS key starts with two
/// capitals), and the bytes between them are inert: skipping them changes
/// no finding. Returns the start of the word (or the
/// byte) where that stops being true, which is not inside a word either.
#[inline]
fn skip_prose(s: &[u8], i: usize) -> usize {
    let mut p = i;
    // Letters just before `p` (of a word that started at `p - run`).
    let mut run = 0usize;
    while let Some(w) = s.get(p..p + 8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        let lower = range_bytes(x, b'a', b'z');
        // `,` (0x2c) and `.` (0x2e) are the bytes that are `.` with bit 1 set.
        let sep = eq_bytes(x, b' ') | eq_bytes(x | (LO * 2), b'.');
        // Capitals that start a word (after a separator, or first in the block
        // with no letters running into it) and are followed by a lower-case
        // letter in the block.
        // Most blocks have none: only looked for when something is not plain.
        let mut letters = lower;
        if lower | sep != HI {
            let after_sep = (sep << 8) | if run == 0 { 0x80 } else { 0 };
            letters |= range_bytes(x, b'A', b'Z') & after_sep & (lower >> 8);
        }
        let plain = letters | sep;
        let breaks = !letters & HI;
        if plain != HI {
            return p - run;
        }
        if breaks == 0 {
            run += 8;
            if run > PROSE_WORD_MAX {
                return p + 8 - run;
            }
        } else {
            // The word running into this block ends at its first break.
            if run + (breaks.trailing_zeros() / 8) as usize > PROSE_WORD_MAX {
                return p - run;
            }
            run = (breaks.leading_zeros() / 8) as usize;
        }
        p += 8;
    }
    p - run
}

/// End of the word (letters, digits, `_`) starting at `i`.
#[inline]
fn word_end(s: &[u8], i: usize) -> usize {
    let mut p = i;
    // Prose words: up to eight lower-case letters at a time.
    while let Some(w) = s.get(p..p + 8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let m = not_lower(u64::from_le_bytes(b));
        if m != 0 {
            p += (m.trailing_zeros() / 8) as usize;
            break;
        }
        p += 8;
    }
    while s.get(p).is_some_and(|&b| word_char(b)) {
        p += 1;
    }
    p
}

impl Scanner {
    /// A scanner for `kinds` with threshold `min_confidence`.
    pub fn new(kinds: KindSet, min_confidence: u8) -> Self {
        Scanner {
            kinds,
            min_confidence,
        }
    }

    /// Findings in `s`, sorted by start, non-overlapping.
    pub fn scan(&self, s: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        self.scan_into(s, &mut out);
        out
    }

    /// Append the findings in `s` to `out` (sorted, non-overlapping among themselves).
    pub fn scan_into(&self, s: &[u8], out: &mut Vec<Finding>) {
        let first = out.len();
        let k = self.kinds;
        let numbers = k.contains(Kind::Card)
            || k.contains(Kind::Ssn)
            || k.contains(Kind::Phone)
            || k.contains(Kind::Ip);
        let push =
            |kind: Kind, start: usize, end: usize, confidence: u8, out: &mut Vec<Finding>| {
                if k.contains(kind) && confidence >= self.min_confidence && end > start {
                    out.push(Finding {
                        kind,
                        start,
                        end,
                        confidence,
                    });
                }
            };
        let n = s.len();
        let mut i = 0;
        while i < n {
            let b = at(s, i);
            if inert(b) {
                i += 1;
                while s.get(i).is_some_and(|&c| inert(c)) {
                    i += 1;
                }
                continue;
            }
            if b == b'@' {
                if k.contains(Kind::Email) {
                    if let Some((a, e)) = text::email(s, i) {
                        push(Kind::Email, a, e, 90, out);
                        i = e;
                        continue;
                    }
                }
                i += 1;
                continue;
            }
            if i > 0 && word_char(b) && word_char(at(s, i - 1)) {
                // Inside a word: skip to its end.
                i += 1;
                while i < n && word_char(at(s, i)) {
                    i += 1;
                }
                continue;
            }
            match b {
                b'0'..=b'9' | b'+' | b'(' | b':' => {
                    if k.contains(Kind::Ip) && text::ipv6_candidate(s, i) {
                        if let Some((a, e)) = text::ipv6(s, i) {
                            push(Kind::Ip, a, e, 85, out);
                            i = e;
                            continue;
                        }
                    }
                    if b == b':' || !numbers {
                        i += 1;
                        continue;
                    }
                    let (hit, next) = numeric::detect(s, i, k);
                    if let Some((kind, e, c)) = hit {
                        push(kind, i, e, c, out);
                    } else if k.contains(Kind::Token) && b.is_ascii_digit() {
                        // A key may start with a digit.
                        let e = secret::token_end(s, i);
                        if let Some((kind, e, c)) =
                            secret::token(s, i, e).filter(|h| h.2 >= self.min_confidence)
                        {
                            push(kind, i, e, c, out);
                            i = e;
                            continue;
                        }
                    }
                    i = next.max(i + 1);
                }
                b'-' => {
                    if k.contains(Kind::PrivateKey) {
                        if let Some((kind, e, c)) = secret::pem(s, i) {
                            push(kind, i, e, c, out);
                            i = e;
                            continue;
                        }
                    }
                    i += 1;
                }
                b'A'..=b'Z' | b'a'..=b'z' => {
                    let we = word_end(s, i);
                    // A lower-case word is only a JWT start (`ey`), an IPv6
                    // group (before `:`) or a token (long, or joined by
                    // `-+/=`): anything else is prose, passed over here.
                    if prose_word(s, i, we) {
                        // Prose: word, inert bytes, word, … until a byte that
                        // is neither (each word start follows an inert byte).
                        i = we;
                        loop {
                            i = skip_prose(s, i);
                            while s.get(i).is_some_and(|&c| inert(c)) {
                                i += 1;
                            }
                            let we = word_end(s, i);
                            if we == i || !prose_word(s, i, we) {
                                break;
                            }
                            i = we;
                        }
                        continue;
                    }
                    match self.word(s, i, we) {
                        Some((kind, e, c)) => {
                            push(kind, i, e, c, out);
                            i = e.max(i + 1);
                        }
                        None => i = we.max(i + 1),
                    }
                }
                _ => i += 1,
            }
        }
        resolve(out, first);
    }

    /// Detectors for a word starting with a letter at `i`.
    fn word(&self, s: &[u8], i: usize, we: usize) -> Option<numeric::Hit> {
        let k = self.kinds;
        let b = at(s, i);
        if b.is_ascii_uppercase() && we - i >= 4 {
            if k.contains(Kind::Iban)
                && at(s, i + 1).is_ascii_uppercase()
                && at(s, i + 2).is_ascii_digit()
            {
                if let Some(h) = text::iban(s, i) {
                    return Some(h);
                }
            }
            if k.contains(Kind::AwsKey) && b == b'A' {
                if let Some(h) = secret::aws(s, i) {
                    return Some(h);
                }
            }
        }
        if k.contains(Kind::Jwt) && b == b'e' && at(s, i + 1) == b'y' {
            if let Some(h) = secret::jwt(s, i) {
                return Some(h);
            }
        }
        if k.contains(Kind::Ip) && we - i <= 4 && at(s, we) == b':' && text::ipv6_candidate(s, i) {
            if let Some((_, e)) = text::ipv6(s, i) {
                return Some((Kind::Ip, e, 85));
            }
        }
        // Prose words are short and end in a space: no token to look at.
        if k.contains(Kind::Token)
            && (we - i >= 20 || matches!(at(s, we), b'-' | b'+' | b'/' | b'='))
        {
            let e = secret::token_end(s, i);
            if e - i >= 20 {
                if let Some(h) = secret::token(s, i, e).filter(|h| h.2 >= self.min_confidence) {
                    return Some(h);
                }
            }
        }
        None
    }
}

/// Sort `out[first..]` by start and drop overlaps, keeping the longer span.
fn resolve(out: &mut Vec<Finding>, first: usize) {
    let Some(tail) = out.get_mut(first..) else {
        return;
    };
    tail.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut kept: Vec<Finding> = Vec::with_capacity(tail.len());
    for f in tail.iter().copied() {
        match kept.last_mut() {
            Some(last) if f.start < last.end => {
                if f.end - f.start > last.end - last.start {
                    *last = f;
                }
            }
            _ => kept.push(f),
        }
    }
    out.truncate(first);
    out.extend(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_prose_passes_only_short_lower_case_words() {
        let plain = |b: u8| b.is_ascii_alphabetic() || matches!(b, b' ' | b',' | b'.');
        let mut seed = 5u64;
        let mut moved = 0;
        for n in 0..3000usize {
            let mut s = Vec::new();
            for _ in 0..(n % 120) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly prose bytes, with rare starts of other things.
                let r = (seed % 64) as usize;
                s.push(match r {
                    0..=41 => b"abcdefghijklmnopqrstuvwxyz"[r % 26],
                    42 | 43 => b"TIAE"[r % 4],
                    44..=53 => b' ',
                    54 => b',',
                    55 => b'.',
                    _ => b"-+:4A@/\xff"[r % 8],
                });
            }
            for i in 0..=s.len() {
                if s.get(i).is_some_and(|b| word_char(*b)) {
                    continue; // only called right after a word
                }
                let j = skip_prose(&s, i);
                assert!(i <= j && j <= s.len(), "{s:?} {i} {j}");
                let passed = s.get(i..j).unwrap_or(&[]);
                assert!(passed.iter().all(|&b| plain(b)), "{s:?} {i} {j}");
                assert!(
                    j == i || !at(&s, j - 1).is_ascii_alphabetic(),
                    "ends inside a word: {s:?} {i} {j}"
                );
                for w in passed.split(|b| !b.is_ascii_alphabetic()) {
                    assert!(w.len() <= PROSE_WORD_MAX, "{s:?} {i} {j}");
                    // Lower-case, or one capital then lower-case.
                    let rest = w.get(1..).unwrap_or(&[]);
                    assert!(
                        rest.iter().all(u8::is_ascii_lowercase)
                            && (w.len() != 1 || w.iter().all(u8::is_ascii_lowercase)),
                        "{s:?} {i} {j} {w:?}"
                    );
                }
                moved += j - i;
            }
        }
        assert!(moved > 10_000, "it skips something: {moved}");
    }

    fn kinds(s: &str) -> Vec<(Kind, String)> {
        Scanner::default()
            .scan(s.as_bytes())
            .into_iter()
            .map(|f| (f.kind, s.get(f.start..f.end).unwrap_or("?").to_string()))
            .collect()
    }

    #[test]
    fn mixed_prompt() {
        let got = kinds(
            "Hi, I'm Ann (ann@corp.example.com, +1 415 555 0100). Card 4111-1111-1111-1111, \
             SSN 536-22-1234, IBAN GB82 WEST 1234 5698 7654 32, server 10.0.0.12 and 2001:db8::8a2e:370:7334, \
             key AKIAIOSFODNN7EXAMPLE.",
        );
        let k: Vec<Kind> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            k,
            vec![
                Kind::Email,
                Kind::Phone,
                Kind::Card,
                Kind::Ssn,
                Kind::Iban,
                Kind::Ip,
                Kind::Ip,
                Kind::AwsKey
            ],
            "{got:?}"
        );
    }

    #[test]
    fn hard_negatives() {
        for s in [
            "timestamp 4000000000000002",
            "order 4539 1488 0343 6467 shipped",
            "version 10.2.1.4 released",
            "id 550e8400-e29b-41d4-a716-446655440000",
            "see v1.2.3.4",
            "at 12:30:45 on 2024-01-15",
            "ts=1700000000000001",
            "sha 3f786850e387550fdab836ed7e6dc881de23001b",
        ] {
            assert!(kinds(s).is_empty(), "{s}: {:?}", kinds(s));
        }
    }

    #[test]
    fn swar_lower_case_check() {
        let first = |b: [u8; 8]| (not_lower(u64::from_le_bytes(b)).trailing_zeros() / 8) as usize;
        assert_eq!(not_lower(u64::from_le_bytes(*b"abcdwxyz")), 0);
        assert_eq!(first(*b"abcdwxy{"), 7);
        assert_eq!(first(*b"`bcdwxyz"), 0);
        assert_eq!(first(*b"abcDwxyz"), 3);
        assert_eq!(first(*b"ab\xff\xffwxyz"), 2);
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut x = [b'q'; 8];
                if let Some(slot) = x.get_mut(pos) {
                    *slot = b;
                }
                let want = if b.is_ascii_lowercase() { 8 } else { pos };
                assert_eq!(first(x), want, "byte {b} at {pos}");
                // Junk after the byte never changes the answer for it.
                if let Some(after) = x.get_mut(pos + 1..) {
                    after.fill(0xff);
                }
                let want = if b.is_ascii_lowercase() {
                    (pos + 1).min(8)
                } else {
                    pos
                };
                assert_eq!(first(x), want, "byte {b} at {pos}, junk after");
            }
        }
        assert_eq!(word_end(b"abcdefghijklmnop qr", 0), 16);
        assert_eq!(word_end(b"abcdefghijkLMnop_9-x", 2), 18);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let s = Scanner::default();
        let mut junk: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        junk.extend_from_slice(b"@@@@...---BEGIN -----BEGIN PRIVATE KEY-----");
        let _ = s.scan(&junk);
        let _ = s.scan(&vec![b'['; 100_000]);
        let _ = s.scan(&vec![b'9'; 100_000]);
        let _ = s.scan(&vec![b'a'; 100_000]);
        let _ = s.scan(b"+");
        let _ = s.scan(b"(");
        let _ = s.scan(b"eyJ");
        let _ = s.scan(b"::");
        let _ = s.scan(b"a@");
    }
}
