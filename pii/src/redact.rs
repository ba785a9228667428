//! Masks written over findings, and the keyed hash that maps one value to
//! the same token every time (so a redacted conversation stays coherent
//! without the value leaving the proxy).
//!
//! The keyed hash is SipHash-2-4 (64-bit), a small keyed PRF: without the
//! key the token says nothing about the value; the operator's key is never logged.

use crate::scan::Finding;
use crate::sub;

/// How a finding is masked. Every mask is plain ASCII without `"` or `\`,
/// so writing one inside a JSON string keeps the document valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// `[CARD]`, `[EMAIL]`, ….
    Label,
    /// The same number of bytes of this character (length preserving).
    Fill(u8),
    /// `[CARD:1f2e3d4c5b6a7988]`: label plus keyed hash of the value.
    Hash {
        /// SipHash key.
        key: [u8; 16],
    },
}

/// SipHash-2-4 of `data` under `key`.
///
/// ```
/// // Reference vector from the SipHash paper (key 00..0f, empty message).
/// let key: [u8; 16] = core::array::from_fn(|i| i as u8);
/// assert_eq!(vigil_pii::redact::siphash24(&key, b""), 0x726fdb47dd0e0e31);
/// ```
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let mut k0b = [0u8; 8];
    let mut k1b = [0u8; 8];
    k0b.copy_from_slice(sub(key, 0, 8));
    k1b.copy_from_slice(sub(key, 8, 16));
    let (k0, k1) = (u64::from_le_bytes(k0b), u64::from_le_bytes(k1b));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let m = u64::from_le_bytes(b);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    for (d, s) in last.iter_mut().zip(chunks.remainder()) {
        *d = *s;
    }
    let m = u64::from_le_bytes(last) | ((data.len() as u64 & 0xff) << 56);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Writes masks over findings.
///
/// ```
/// use vigil_pii::{Mask, Redactor, Scanner};
/// let text = b"mail ann@example.com now";
/// let f = Scanner::default().scan(text);
/// assert_eq!(Redactor::new(Mask::Label).apply(text, &f), b"mail [EMAIL] now");
/// let fill = Redactor::new(Mask::Fill(b'*')).apply(text, &f);
/// assert_eq!(fill.len(), text.len());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redactor {
    /// The mask.
    pub mask: Mask,
}

impl Redactor {
    /// A redactor with this mask.
    pub fn new(mask: Mask) -> Self {
        Redactor { mask }
    }

    /// The replacement for one finding over `value`.
    pub fn replacement(&self, f: &Finding, value: &[u8]) -> Vec<u8> {
        match &self.mask {
            Mask::Label => format!("[{}]", f.kind.label()).into_bytes(),
            Mask::Fill(c) => vec![*c; value.len()],
            Mask::Hash { key } => {
                // Hash the value without separators so "4111 1111…" and "4111-1111…" agree.
                let norm: Vec<u8> = value
                    .iter()
                    .copied()
                    .filter(u8::is_ascii_alphanumeric)
                    .map(|b| b.to_ascii_lowercase())
                    .collect();
                format!("[{}:{:016x}]", f.kind.label(), siphash24(key, &norm)).into_bytes()
            }
        }
    }

    /// `text` with every finding (sorted, non-overlapping, offsets into `text`) replaced.
    pub fn apply(&self, text: &[u8], findings: &[Finding]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut pos = 0;
        for f in findings {
            if f.start < pos || f.end > text.len() {
                continue;
            }
            out.extend_from_slice(sub(text, pos, f.start));
            out.extend_from_slice(&self.replacement(f, sub(text, f.start, f.end)));
            pos = f.end;
        }
        out.extend_from_slice(sub(text, pos, text.len()));
        out
    }
}
