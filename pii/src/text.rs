//! Text-shaped detectors: email addresses, IBANs, IPv6 addresses.

use crate::kind::Kind;
use crate::numeric::Hit;
use crate::{at, sub};

fn local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// An email address around the `@` at `j`: `(start, end)`.
///
/// ```
/// let s = b"write to ann.lee+x@mail.example.org.";
/// let (a, b) = vigil_pii::text::email(s, 18).unwrap();
/// assert_eq!(&s[a..b], b"ann.lee+x@mail.example.org");
/// ```
pub fn email(s: &[u8], j: usize) -> Option<(usize, usize)> {
    if at(s, j) != b'@' {
        return None;
    }
    let mut a = j;
    while a > 0 && j - a < 64 && local_char(at(s, a - 1)) {
        a -= 1;
    }
    while a < j && !at(s, a).is_ascii_alphanumeric() {
        a += 1;
    }
    if a == j || at(s, j - 1) == b'.' {
        return None;
    }
    // Domain: labels joined by dots, the last all letters (2+).
    let mut p = j + 1;
    let mut labels = 0;
    let mut last_start = p;
    let mut end = 0;
    loop {
        let ls = p;
        while p < s.len() && p - j < 254 && label_char(at(s, p)) {
            p += 1;
        }
        if p == ls || at(s, ls) == b'-' || at(s, p - 1) == b'-' {
            break;
        }
        labels += 1;
        last_start = ls;
        end = p;
        if at(s, p) == b'.' && label_char(at(s, p + 1)) {
            p += 1;
        } else {
            break;
        }
    }
    let tld = sub(s, last_start, end);
    let ok = labels >= 2 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic);
    (ok && !at(s, end).is_ascii_alphanumeric() && at(s, end) != b'@').then_some((a, end))
}

/// IBAN length per country code.
const IBAN_LEN: &[(&[u8; 2], u8)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// Length of an IBAN for a country code, if the country uses IBANs.
pub fn iban_len(cc: &[u8]) -> Option<usize> {
    IBAN_LEN
        .iter()
        .find(|(c, _)| c.as_slice() == cc)
        .map(|(_, l)| usize::from(*l))
}

/// ISO 7064 mod-97-10 over an IBAN's characters (uppercase letters and digits).
///
/// ```
/// assert!(vigil_pii::text::iban_mod97(b"GB82WEST12345698765432"));
/// assert!(!vigil_pii::text::iban_mod97(b"GB82WEST12345698765433"));
/// ```
pub fn iban_mod97(chars: &[u8]) -> bool {
    if chars.len() < 5 {
        return false;
    }
    let mut m = 0u32;
    for &c in sub(chars, 4, chars.len()).iter().chain(sub(chars, 0, 4)) {
        m = match c {
            b'0'..=b'9' => (m * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (m * 100 + u32::from(c - b'A' + 10)) % 97,
            _ => return false,
        };
    }
    m == 1
}

/// An IBAN starting at `i` (electronic or printed in groups of four).
pub(crate) fn iban(s: &[u8], i: usize) -> Option<Hit> {
    let len = iban_len(sub(s, i, i + 2))?;
    if !(at(s, i + 2).is_ascii_digit() && at(s, i + 3).is_ascii_digit()) {
        return None;
    }
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut p = i;
    while n < len {
        let b = at(s, p);
        if b == b' ' && n % 4 == 0 && n > 0 && at(s, p - 1) != b' ' {
            p += 1;
            continue;
        }
        if !(b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return None;
        }
        *chars.get_mut(n)? = b;
        n += 1;
        p += 1;
    }
    if at(s, p).is_ascii_alphanumeric() {
        return None;
    }
    iban_mod97(sub(&chars, 0, n)).then_some((Kind::Iban, p, 95))
}

fn hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Whether an IPv6 address may start at `i` (cheap pre-check).
pub(crate) fn ipv6_candidate(s: &[u8], i: usize) -> bool {
    (0..5).any(|k| at(s, i + k) == b':')
        && (hex(at(s, i)) || (at(s, i) == b':' && at(s, i + 1) == b':'))
}

/// An IPv6 address starting at `i`.
///
/// ```
/// let s = b"host fe80::1ff:fe23:4567:890a up";
/// assert!(vigil_pii::text::ipv6(s, 5).is_some());
/// assert!(vigil_pii::text::ipv6(b"12:30:45", 0).is_none());
/// ```
pub fn ipv6(s: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut p = i;
    let mut groups = 0;
    let mut double = false;
    let mut hexdigits = 0;
    if at(s, p) == b':' && at(s, p + 1) == b':' {
        double = true;
        p += 2;
    }
    let mut end = p;
    loop {
        let gs = p;
        while hex(at(s, p)) && p - gs < 5 {
            p += 1;
        }
        let glen = p - gs;
        if glen == 0 || glen > 4 {
            if glen > 4 {
                return None;
            }
            break;
        }
        // An IPv4 tail (::ffff:192.0.2.1) counts as two groups.
        if at(s, p) == b'.' && (double || groups == 6) {
            let (h, _) = crate::numeric::detect(s, gs, crate::KindSet::of(&[Kind::Ip]));
            if let Some((Kind::Ip, e, _)) = h {
                groups += 2;
                end = e;
                hexdigits += 4;
            }
            break;
        }
        groups += 1;
        hexdigits += glen;
        end = p;
        if at(s, p) == b':' && at(s, p + 1) == b':' {
            if double {
                return None;
            }
            double = true;
            p += 2;
            end = p;
        } else if at(s, p) == b':' && hex(at(s, p + 1)) {
            p += 1;
        } else {
            break;
        }
        if groups > 8 {
            return None;
        }
    }
    let shape = if double {
        (1..=7).contains(&groups)
    } else {
        groups == 8
    };
    let b = at(s, end);
    (shape
        && hexdigits >= 3
        && !(b.is_ascii_alphanumeric()
            || b == b':'
            || b == b'.' && at(s, end + 1).is_ascii_digit()))
    .then_some((i, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans() {
        assert!(iban(b"DE89370400440532013000", 0).is_some());
        assert!(iban(b"DE89 3704 0044 0532 0130 00.", 0).is_some_and(|h| h.1 == 27));
        assert!(iban(b"DE89370400440532013001", 0).is_none());
        assert!(iban(b"XX89370400440532013000", 0).is_none());
        assert!(iban(b"DE8937040044053201300", 0).is_none());
    }

    #[test]
    fn emails() {
        assert!(email(b"a@b", 1).is_none());
        assert!(email(b"pkg@1.2.3", 3).is_none());
        assert!(email(b"@scope/pkg", 0).is_none());
        assert!(email(b"x@y.co", 1).is_some());
    }

    #[test]
    fn ipv6s() {
        assert!(ipv6(b"2001:db8:85a3::8a2e:370:7334", 0).is_some());
        assert!(ipv6(b"2001:0db8:85a3:0000:0000:8a2e:0370:7334", 0).is_some());
        assert!(ipv6(b"::1", 0).is_none()); // too short to be sure
        assert!(ipv6(b"::ffff:192.0.2.1", 0).is_some());
        assert!(ipv6(b"00:1a:2b:3c:4d:5e", 0).is_none());
        assert!(ipv6(b"1:2:3:4:5:6:7:8:9", 0).is_none());
    }
}
