//! Secret detectors: AWS-style access key ids, JWTs, PEM private key blocks
//! and high-entropy tokens (a known prefix such as `sk-` or `ghp_`, or a
//! context word such as "token" or "password" just before).

use crate::context;
use crate::kind::Kind;
use crate::numeric::Hit;
use crate::{at, sub};

/// Longest PEM block searched for its END line.
pub const MAX_PEM: usize = 4000;
/// Longest generic token considered.
const MAX_TOKEN: usize = 256;

const AWS_PREFIXES: &[&[u8; 4]] = &[
    b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"AIPA", b"ANPA", b"ANVA", b"ABIA", b"ACCA",
];

/// An AWS access key id at `i`: a known 4-letter prefix and 16 base-32 characters.
pub(crate) fn aws(s: &[u8], i: usize) -> Option<Hit> {
    let p = sub(s, i, i + 4);
    if !AWS_PREFIXES.iter().any(|x| x.as_slice() == p) {
        return None;
    }
    let body = sub(s, i + 4, i + 20);
    let ok = body.len() == 16
        && body
            .iter()
            .all(|&b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    (ok && !at(s, i + 20).is_ascii_alphanumeric()).then_some((Kind::AwsKey, i + 20, 95))
}

fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A JWT at `i`: `eyJ…` header, `.`, `eyJ…` payload, `.`, signature.
pub(crate) fn jwt(s: &[u8], i: usize) -> Option<Hit> {
    let mut p = i;
    for part in 0..3 {
        if part < 2 && sub(s, p, p + 3) != b"eyJ" {
            return None;
        }
        let st = p;
        while b64url(at(s, p)) && p - st < 8192 {
            p += 1;
        }
        if p - st < 8 {
            return None;
        }
        if part < 2 {
            if at(s, p) != b'.' {
                return None;
            }
            p += 1;
        }
    }
    (at(s, p) != b'.' && at(s, p) != b'=').then_some((Kind::Jwt, p, 95))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A PEM private key block at `i` (`-----BEGIN … PRIVATE KEY-----` … `-----END … PRIVATE KEY-----`).
pub(crate) fn pem(s: &[u8], i: usize) -> Option<Hit> {
    if sub(s, i, i + 11) != b"-----BEGIN " {
        return None;
    }
    let head = sub(s, i + 11, (i + 60).min(s.len()));
    let close = find(head, b"-----")?;
    let label = sub(head, 0, close);
    if !label.ends_with(b"PRIVATE KEY")
        || !label.iter().all(|&b| b.is_ascii_uppercase() || b == b' ')
    {
        return None;
    }
    let body_start = i + 11 + close + 5;
    let hay = sub(s, body_start, (i + MAX_PEM).min(s.len()));
    let e = find(hay, b"-----END ")?;
    let tail_start = body_start + e + 9;
    let tail = sub(s, tail_start, (tail_start + 40).min(s.len()));
    let c = find(tail, b"-----")?;
    Some((Kind::PrivateKey, tail_start + c + 5, 99))
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'/' | b'=')
}

const TOKEN_PREFIXES: &[&[u8]] = &[
    b"sk-",
    b"sk_live_",
    b"sk_test_",
    b"rk_live_",
    b"ghp_",
    b"gho_",
    b"ghs_",
    b"ghu_",
    b"github_pat_",
    b"glpat-",
    b"xoxb-",
    b"xoxp-",
    b"xoxa-",
    b"hf_",
    b"AIza",
    b"npm_",
];

/// Shannon entropy in bits per byte.
pub fn entropy(t: &[u8]) -> f32 {
    let mut counts = [0u16; 128];
    for &b in t {
        if let Some(c) = counts.get_mut(usize::from(b & 0x7f)) {
            *c = c.saturating_add(1);
        }
    }
    let n = t.len() as f32;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f32::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The end of the token-character run at `i`.
pub(crate) fn token_end(s: &[u8], i: usize) -> usize {
    let mut p = i;
    while token_char(at(s, p)) && p - i <= MAX_TOKEN {
        // '=' is padding at the end, or an assignment (KEY=value) that ends the run.
        if at(s, p) == b'=' && token_char(at(s, p + 1)) && at(s, p + 1) != b'=' {
            break;
        }
        p += 1;
    }
    // Trailing '-', '/', '+' are punctuation, not part of a key ('=' padding is).
    while p > i && matches!(at(s, p - 1), b'-' | b'/' | b'+') {
        p -= 1;
    }
    p
}

/// A high-entropy token at `i`, ending at `end`.
pub(crate) fn token(s: &[u8], i: usize, end: usize) -> Option<Hit> {
    let t = sub(s, i, end);
    if t.len() < 20 || t.len() > MAX_TOKEN {
        return None;
    }
    let (mut up, mut lo, mut dg) = (0, 0, 0);
    for &b in t {
        up += usize::from(b.is_ascii_uppercase());
        lo += usize::from(b.is_ascii_lowercase());
        dg += usize::from(b.is_ascii_digit());
    }
    let prefixed = TOKEN_PREFIXES.iter().any(|p| t.starts_with(p));
    let classes = usize::from(up > 0) + usize::from(lo > 0) + usize::from(dg > 0);
    if prefixed && classes >= 2 && dg > 0 && t.len() >= 24 {
        return Some((Kind::Token, end, 90));
    }
    if classes < 3 || dg < 2 || entropy(t) < 3.5 {
        return None;
    }
    // UUID-like dashed hex is never a token.
    if t.iter().all(|&b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    let conf = if context::before(s, i, context::SECRET_POSITIVE) {
        80
    } else {
        30
    };
    Some((Kind::Token, end, conf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(aws(b"AKIAIOSFODNN7EXAMPLE", 0).is_some());
        assert!(aws(b"AKIAIOSFODNN7EXAMPLE1", 0).is_none());
        assert!(aws(b"AKIAIOSFODNN1EXAMPLE", 0).is_none()); // '1' is not base-32
        let j = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(jwt(j, 0).map(|h| h.1), Some(j.len()));
        let k = b"-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(pem(k, 0).map(|h| h.1), Some(k.len()));
        assert!(pem(
            b"-----BEGIN CERTIFICATE-----\nMIIE\n-----END CERTIFICATE-----",
            0
        )
        .is_none());
        let t = b"token: Zx8Kq2LmN4pR7sT1vW3yA6bC9dE";
        assert_eq!(token(t, 7, token_end(t, 7)).map(|h| h.2), Some(80));
        let u = b"550e8400-e29b-41d4-a716-446655440000";
        assert!(token(u, 0, token_end(u, 0)).is_none());
    }
}
