//! Context words: the few words around a candidate that raise or lower its
//! confidence. A Luhn-valid digit run right after "timestamp" or "order" is
//! not a card; nine bare digits after "SSN" are.
//!
//! Only whole alphabetic words are compared (ASCII, case-insensitive), so
//! `id` never matches inside `valid`. A listed word of four letters or more
//! also matches as a prefix (`order` matches `orders`).

use crate::{at, sub};

/// Bytes before a candidate searched for context words.
pub const BEFORE: usize = 40;
/// Bytes after a candidate searched for context words.
pub const AFTER: usize = 16;
/// Words before a candidate that count.
const WORDS_BEFORE: usize = 3;

/// Words that make a number something other than personal data.
pub const NUMERIC_NEGATIVE: &[&str] = &[
    "timestamp",
    "ts",
    "epoch",
    "unix",
    "nanos",
    "ns",
    "ms",
    "order",
    "invoice",
    "tracking",
    "ref",
    "reference",
    "id",
    "uuid",
    "build",
    "version",
    "ver",
    "sku",
    "serial",
    "isbn",
    "txn",
    "transaction",
    "batch",
    "ticket",
    "trace",
    "span",
    "request",
    "seq",
    "sequence",
    "commit",
    "checksum",
    "hash",
    "port",
    "zip",
    "confirmation",
    "booking",
    "shipment",
];

/// Words before a card number.
pub const CARD_POSITIVE: &[&str] = &[
    "card",
    "visa",
    "mastercard",
    "amex",
    "credit",
    "debit",
    "cc",
    "pan",
    "payment",
    "discover",
];

/// Words before an SSN.
pub const SSN_POSITIVE: &[&str] = &["ssn", "social", "security", "ss", "taxpayer", "tin"];

/// Words before a phone number.
pub const PHONE_POSITIVE: &[&str] = &[
    "phone",
    "call",
    "tel",
    "telephone",
    "mobile",
    "cell",
    "fax",
    "whatsapp",
    "sms",
    "text",
    "reach",
    "number",
    "contact",
];

/// Words that make a dotted quad a version rather than an address.
pub const IP_NEGATIVE: &[&str] = &[
    "version", "ver", "v", "release", "build", "firmware", "oid", "section", "chapter", "figure",
    "table", "rule", "sdk", "package", "python", "node", "rust",
];

/// Words before a secret.
pub const SECRET_POSITIVE: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "apikey",
    "bearer",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "access",
    "private",
    "session",
    "pat",
];

fn is_alpha(b: u8) -> bool {
    b.is_ascii_alphabetic()
}

fn word_matches(word: &[u8], list: &[&str]) -> bool {
    // Every listed word is lower-case ASCII (a unit test checks): comparing
    // first bytes rules out nearly all of the list before any case folding.
    let Some(first) = word.first().map(u8::to_ascii_lowercase) else {
        return false;
    };
    list.iter().any(|w| {
        let w = w.as_bytes();
        if w.first() != Some(&first) {
            false
        } else if word.len() == w.len() {
            word.eq_ignore_ascii_case(w)
        } else {
            w.len() >= 4 && word.len() > w.len() && sub(word, 0, w.len()).eq_ignore_ascii_case(w)
        }
    })
}

/// Whether one of the (up to three) words just before `start` is in `list`.
pub fn before(s: &[u8], start: usize, list: &[&str]) -> bool {
    let floor = start.saturating_sub(BEFORE);
    let mut i = start;
    let mut seen = 0;
    while i > floor && seen < WORDS_BEFORE {
        // Skip back to the end of the previous word; a sentence end stops the
        // search, and a number counts as a word.
        while i > floor && !is_alpha(at(s, i - 1)) {
            if sentence_end(s, i - 1) {
                return false;
            }
            if at(s, i - 1).is_ascii_digit() {
                while i > floor && at(s, i - 1).is_ascii_alphanumeric() {
                    i -= 1;
                }
                seen += 1;
                if seen >= WORDS_BEFORE {
                    return false;
                }
                continue;
            }
            i -= 1;
        }
        let end = i;
        while i > floor && is_alpha(at(s, i - 1)) {
            i -= 1;
        }
        if end == i {
            break;
        }
        // A word cut by the window's edge may be a fragment: skip it.
        if i == floor && floor > 0 && is_alpha(at(s, floor - 1)) {
            break;
        }
        if word_matches(sub(s, i, end), list) {
            return true;
        }
        seen += 1;
    }
    false
}

/// Whether the byte at `j` ends a sentence (`.`, `!`, `?`, `;` before
/// whitespace or the end, or a newline).
fn sentence_end(s: &[u8], j: usize) -> bool {
    let b = at(s, j);
    b == b'\n'
        || (matches!(b, b'.' | b'!' | b'?' | b';')
            && matches!(at(s, j + 1), b' ' | b'\t' | b'\n' | b'\r' | 0))
}

/// Whether the first word just after `end` (within [`AFTER`] bytes) is in `list`.
pub fn after(s: &[u8], end: usize, list: &[&str]) -> bool {
    let ceil = end.saturating_add(AFTER).min(s.len());
    let mut i = end;
    while i < ceil && !is_alpha(at(s, i)) {
        if sentence_end(s, i) || at(s, i).is_ascii_digit() {
            return false;
        }
        i += 1;
    }
    let start = i;
    while i < ceil && is_alpha(at(s, i)) {
        i += 1;
    }
    i > start && word_matches(sub(s, start, i), list)
}

/// Either side.
pub fn near(s: &[u8], start: usize, end: usize, list: &[&str]) -> bool {
    before(s, start, list) || after(s, end, list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_lower_case_ascii() {
        for list in [
            NUMERIC_NEGATIVE,
            CARD_POSITIVE,
            SSN_POSITIVE,
            PHONE_POSITIVE,
            IP_NEGATIVE,
            SECRET_POSITIVE,
        ] {
            for w in list {
                assert!(
                    !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()),
                    "{w}"
                );
            }
        }
    }

    #[test]
    fn whole_words_only() {
        assert!(before(b"order 123", 6, NUMERIC_NEGATIVE));
        assert!(before(b"Orders: 123", 8, NUMERIC_NEGATIVE));
        assert!(!before(b"valid 123", 6, NUMERIC_NEGATIVE));
        assert!(before(b"the ts is 123", 10, NUMERIC_NEGATIVE));
        assert!(!before(b"", 0, NUMERIC_NEGATIVE));
        assert!(after(b"123 ms later", 3, NUMERIC_NEGATIVE));
        assert!(before(b"api_key=abc", 8, SECRET_POSITIVE));
        assert!(!before(b"order 12. Card 4111", 15, NUMERIC_NEGATIVE));
        assert!(!after(b"536-22-1234. ts=1", 11, NUMERIC_NEGATIVE));
        assert!(!before(b"order 1 2 3 x", 12, NUMERIC_NEGATIVE));
    }
}
