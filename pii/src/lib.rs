//! # vigil-pii
//!
//! Detectors that *validate*, not just match, for personal data and secrets
//! in prompts: payment cards (Luhn + IIN ranges + lengths), IBANs (country
//! length table + mod-97), US SSNs (area/group/serial rules), email
//! addresses, phone numbers (E.164 and common national formats), IPv4/IPv6
//! and secrets (AWS access key ids, JWTs, PEM private keys, high-entropy
//! tokens next to a context word).
//!
//! No regex engine and no dependencies: a single left-to-right byte scan that
//! dispatches at word starts, so the crate stays small inside the wasm filter.
//! It never panics on any input (invalid UTF-8, huge strings, deep JSON).
//!
//! Modules, one concern each:
//! - [`kind`]: the entity types and their config names;
//! - [`scan`]: the one-shot scanner ([`Scanner`]) and overlap resolution;
//! - [`numeric`], [`text`], [`secret`]: the detectors;
//! - [`context`]: context words that raise or lower confidence;
//! - [`stream`]: chunked scanning with bounded carry-over;
//! - [`json`]: the string values of OpenAI-style bodies worth inspecting;
//! - [`redact`]: masks and the keyed hash that maps a value to a stable token;
//! - [`corpus`], [`eval`]: the labelled corpus generator and the scoring of detectors on it.
//!
//! ```
//! use vigil_pii::{Kind, Scanner};
//! let s = Scanner::default();
//! let text = b"my card is 4111 1111 1111 1111, mail bob@example.com";
//! let found = s.scan(text);
//! assert_eq!(found.len(), 2);
//! assert_eq!(found[0].kind, Kind::Card);
//! assert_eq!(&text[found[0].start..found[0].end], b"4111 1111 1111 1111");
//! // A Luhn-valid number next to "timestamp" is not a card.
//! assert!(s.scan(b"timestamp 4000000000000002").is_empty());
//! ```

pub mod context;
pub mod corpus;
pub mod eval;
pub mod json;
pub mod kind;
pub mod numeric;
pub mod redact;
pub mod scan;
pub mod secret;
pub mod stream;
pub mod text;

pub use kind::{Kind, KindSet};
pub use redact::{Mask, Redactor};
pub use scan::{Finding, Scanner};
pub use stream::StreamScanner;

/// Byte at `i`, or 0 past either end (0 counts as a boundary everywhere).
#[inline(always)]
pub(crate) fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// `s[a..b]`, or empty when out of range.
#[inline]
pub(crate) fn sub(s: &[u8], a: usize, b: usize) -> &[u8] {
    s.get(a..b).unwrap_or(&[])
}
