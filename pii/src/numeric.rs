//! Number-shaped detectors: payment cards, SSNs, phone numbers, IPv4.
//!
//! A candidate is a run of digit groups joined by single separators
//! (` `, `-`, `.`, `/`, parentheses for an area code, a leading `+`). The
//! run is classified as a whole; when that fails, prefixes that end at a
//! space are tried (so "call 415 555 0100 or 2" still finds the phone).

use crate::context;
use crate::kind::Kind;
use crate::{at, sub};

/// Longest digit run considered (19-digit cards, 15-digit E.164 plus slack).
const MAX_DIGITS: usize = 20;
/// Most groups in a run.
const MAX_GROUPS: usize = 8;

/// A classified number: kind, end of the span, confidence.
pub(crate) type Hit = (Kind, usize, u8);

#[derive(Default)]
struct Run {
    digits: [u8; MAX_DIGITS],
    n: usize,
    /// Digits in each group, the byte that ended it, and its end offset.
    groups: [(u8, u8, usize); MAX_GROUPS],
    ngroups: usize,
    plus: bool,
    paren: bool,
}

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// Whether a run may end before `b`: not a letter, digit, `@` or `_`.
fn right_ok(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || b == b'@' || b == b'_')
}

/// Parse the run at `i` (a digit, `+` or `(`); returns it and the offset just past it.
fn parse(s: &[u8], i: usize) -> Option<(Run, usize)> {
    let mut r = Run::default();
    let mut p = i;
    if at(s, p) == b'+' {
        r.plus = true;
        p += 1;
    } else if at(s, p) == b'(' {
        r.paren = true;
        p += 1;
    }
    if !is_digit(at(s, p)) {
        return None;
    }
    let mut in_group = 0u8;
    loop {
        let b = at(s, p);
        if is_digit(b) {
            if r.n >= MAX_DIGITS {
                // Too long for anything here: skip the rest of the digits.
                while is_digit(at(s, p)) {
                    p += 1;
                }
                return Some((
                    Run {
                        n: MAX_DIGITS + 1,
                        ..r
                    },
                    p,
                ));
            }
            if let Some(d) = r.digits.get_mut(r.n) {
                *d = b - b'0';
            }
            r.n += 1;
            in_group = in_group.saturating_add(1);
            p += 1;
            continue;
        }
        // End of a group.
        let (sep, next) = match b {
            b')' if r.paren && r.ngroups == 0 => {
                if at(s, p + 1) == b' ' && is_digit(at(s, p + 2)) {
                    (b')', p + 2)
                } else if is_digit(at(s, p + 1)) || at(s, p + 1) == b'-' && is_digit(at(s, p + 2)) {
                    (b')', if at(s, p + 1) == b'-' { p + 2 } else { p + 1 })
                } else {
                    (0, p)
                }
            }
            b' ' | b'-' | b'.' | b'/' if is_digit(at(s, p + 1)) && !(r.paren && r.ngroups == 0) => {
                (b, p + 1)
            }
            _ => (0, p),
        };
        if let Some(g) = r.groups.get_mut(r.ngroups) {
            *g = (in_group, sep, p);
        }
        r.ngroups += 1;
        in_group = 0;
        if sep == 0 || r.ngroups >= MAX_GROUPS {
            return Some((r, p));
        }
        p = next;
    }
}

/// Luhn checksum over digit values.
///
/// ```
/// assert!(vigil_pii::numeric::luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
/// assert!(!vigil_pii::numeric::luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
/// ```
pub fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &x) in d.iter().rev().enumerate() {
        let x = u32::from(x);
        sum += if k % 2 == 1 {
            let y = x * 2;
            if y > 9 {
                y - 9
            } else {
                y
            }
        } else {
            x
        };
    }
    !d.is_empty() && sum % 10 == 0
}

fn prefix(d: &[u8], n: usize) -> u32 {
    d.iter().take(n).fold(0, |a, &x| a * 10 + u32::from(x))
}

/// Whether the issuer prefix (IIN) and length are those of a real card scheme:
/// Visa, Mastercard, American Express, Discover, Diners Club, JCB, UnionPay, Maestro.
pub fn iin_ok(d: &[u8]) -> bool {
    let len = d.len();
    let p1 = prefix(d, 1);
    let p2 = prefix(d, 2);
    let p3 = prefix(d, 3);
    let p4 = prefix(d, 4);
    let p6 = prefix(d, 6);
    match p1 {
        4 => matches!(len, 13 | 16 | 19),
        5 => {
            ((51..=55).contains(&p2) && len == 16)
                || (matches!(p2, 50 | 56..=59) && (12..=19).contains(&len))
        }
        2 => (2221..=2720).contains(&p4) && len == 16,
        3 => {
            (matches!(p2, 34 | 37) && len == 15)
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39)
                    && (14..=19).contains(&len))
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
        }
        6 => {
            (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
                && (16..=19).contains(&len)
                || (p2 == 62 && (16..=19).contains(&len))
                || (matches!(p2, 60 | 63 | 67 | 68 | 69) && (12..=19).contains(&len) && p4 != 6011)
        }
        _ => false,
    }
}

/// Whether an area/group/serial triple is a possible SSN: area not 000, 666
/// or 900–999; group not 00; serial not 0000; not a known advertising number.
pub fn ssn_ok(d: &[u8]) -> bool {
    if d.len() != 9 {
        return false;
    }
    let area = prefix(d, 3);
    let group = prefix(sub(d, 3, 5), 2);
    let serial = prefix(sub(d, 5, 9), 4);
    let all_same = d.iter().all(|&x| Some(&x) == d.first());
    let v = prefix(d, 9);
    area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && !all_same
        && !matches!(
            v,
            78_051_120 | 219_099_999 | 123_456_789 | 987_654_320..=987_654_329
        )
}

fn nanp_ok(d: &[u8]) -> bool {
    // 10 digits: area and exchange start 2-9, area not N11, not 555-01xx fiction? (kept: 555-01xx is valid test data).
    d.len() == 10
        && d.first().is_some_and(|&a| a >= 2)
        && d.get(3).is_some_and(|&e| e >= 2)
        && !(d.get(1) == Some(&1) && d.get(2) == Some(&1))
}

/// Try the run at `i` as a card, SSN, phone or IPv4. Returns the hit (if
/// any) and the offset to continue scanning from.
pub(crate) fn detect(s: &[u8], i: usize, want: crate::KindSet) -> (Option<Hit>, usize) {
    let Some((run, end)) = parse(s, i) else {
        return (None, i + 1);
    };
    if run.n > MAX_DIGITS || !right_ok(at(s, end)) {
        return (None, end.max(i + 1));
    }
    // Longest prefix first; shorter prefixes only end at a space.
    let mut k = run.ngroups;
    while k >= 1 {
        let cut_ok = k == run.ngroups || run.groups.get(k - 1).is_some_and(|g| g.1 == b' ');
        if cut_ok {
            if let Some(hit) = classify(s, i, &run, k, want) {
                return (Some(hit), hit.1);
            }
        }
        k -= 1;
    }
    (None, end.max(i + 1))
}

fn classify(s: &[u8], start: usize, r: &Run, k: usize, want: crate::KindSet) -> Option<Hit> {
    let groups = r.groups.get(..k)?;
    let end = groups.last()?.2;
    let ndig: usize = groups.iter().map(|g| usize::from(g.0)).sum();
    let d = r.digits.get(..ndig)?;
    // Separators between the groups (the last group's is what ended the prefix).
    let seps = groups.get(..k - 1).unwrap_or(&[]);
    let all_sep = |c: u8| seps.iter().all(|g| g.1 == c);
    // Context words cost more than the shape checks: looked up only for a
    // shape that can match, at most once.
    let mut negative_memo: Option<bool> = None;
    let mut negative = || {
        *negative_memo
            .get_or_insert_with(|| context::near(s, start, end, context::NUMERIC_NEGATIVE))
    };
    let mut lens_buf = [0u8; MAX_GROUPS];
    for (l, g) in lens_buf.iter_mut().zip(groups) {
        *l = g.0;
    }
    let lens = lens_buf.get(..k).unwrap_or(&[]);

    // IPv4: four dotted groups, each 0-255 without leading zeros.
    if want.contains(Kind::Ip) && !r.plus && !r.paren && k == 4 && all_sep(b'.') && r.ngroups == 4 {
        let mut off = 0usize;
        let mut ok = true;
        for &len in lens {
            let g = sub(d, off, off + usize::from(len));
            off += usize::from(len);
            ok &= (1..=3).contains(&len)
                && prefix(g, 3) <= 255
                && !(len > 1 && g.first() == Some(&0));
        }
        if ok {
            let conf = if context::before(s, start, context::IP_NEGATIVE) {
                10
            } else {
                85
            };
            return Some((Kind::Ip, end, conf));
        }
        return None;
    }
    // Every other shape has 8 (E.164) to 19 (card) digits.
    if !(8..=19).contains(&ndig) {
        return None;
    }
    // SSN: 3-2-4 with dashes (or spaces), or nine bare digits after "SSN".
    if want.contains(Kind::Ssn) && !r.plus && !r.paren && ndig == 9 && ssn_ok(d) {
        let positive = || context::before(s, start, context::SSN_POSITIVE);
        let conf = if lens == [3, 2, 4] && all_sep(b'-') {
            Some(if negative() {
                10
            } else if positive() {
                95
            } else {
                80
            })
        } else if lens == [3, 2, 4] && all_sep(b' ') {
            Some(if negative() {
                10
            } else if positive() {
                90
            } else {
                40
            })
        } else if k == 1 {
            Some(if positive() && !negative() { 85 } else { 20 })
        } else {
            None
        };
        if let Some(conf) = conf {
            return Some((Kind::Ssn, end, conf));
        }
    }
    // Card: 13-19 digits, no separator or one kind of ' '/'-', Luhn, IIN.
    if want.contains(Kind::Card)
        && !r.plus
        && !r.paren
        && (12..=19).contains(&ndig)
        && (k == 1
            || ((all_sep(b' ') || all_sep(b'-'))
                && lens.first() == Some(&4)
                && lens
                    .iter()
                    .enumerate()
                    .all(|(j, &l)| (3..=6).contains(&l) || (j + 1 == k && l >= 2))))
        && luhn(d)
        && iin_ok(d)
    {
        let conf = if negative() {
            10
        } else if context::before(s, start, context::CARD_POSITIVE) {
            95
        } else {
            80
        };
        return Some((Kind::Card, end, conf));
    }
    // Phone.
    if want.contains(Kind::Phone) {
        let mut positive_memo: Option<bool> = None;
        let mut positive = || {
            *positive_memo.get_or_insert_with(|| context::before(s, start, context::PHONE_POSITIVE))
        };
        let sep_ok = seps
            .iter()
            .all(|g| matches!(g.1, b' ' | b'-' | b'.' | b')'));
        let base = if r.plus {
            // E.164: country code does not start with 0; 8-15 digits.
            (sep_ok && (8..=15).contains(&ndig) && d.first() != Some(&0)).then_some(85)
        } else if r.paren {
            (lens == [3, 3, 4] && nanp_ok(d)).then_some(80)
        } else if (k >= 3 && sep_ok && (lens == [3, 3, 4] && nanp_ok(d)))
            || (k >= 4
                && sep_ok
                && lens.first() == Some(&1)
                && d.first() == Some(&1)
                && nanp_ok(sub(d, 1, 11))
                && ndig == 11)
        {
            Some(75)
        } else if k >= 2
            && sep_ok
            && d.first() == Some(&0)
            && d.get(1) != Some(&0)
            && (10..=11).contains(&ndig)
        {
            // National formats with a trunk 0: UK 020 7946 0958, FR 06 12 34 56 78, DE 030 1234567.
            Some(65)
        } else if k == 1
            && (ndig == 10 && nanp_ok(d) || ndig == 11 && matches!(d.first(), Some(&0) | Some(&1)))
        {
            Some(if positive() { 80 } else { 25 })
        } else {
            None
        };
        if let Some(base) = base {
            let conf = if negative() {
                10
            } else if positive() {
                base.max(85)
            } else {
                base
            };
            return Some((Kind::Phone, end, conf));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KindSet;

    fn one(s: &str) -> Option<(Kind, String, u8)> {
        let (h, _) = detect(s.as_bytes(), 0, KindSet::all());
        h.map(|(k, e, c)| (k, s.get(..e).unwrap_or("").to_string(), c))
    }

    #[test]
    fn cards() {
        assert_eq!(one("4111111111111111").map(|h| h.0), Some(Kind::Card));
        assert_eq!(
            one("4111 1111 1111 1111 ").map(|h| h.1),
            Some("4111 1111 1111 1111".into())
        );
        assert_eq!(one("3782 822463 10005").map(|h| h.0), Some(Kind::Card));
        assert_eq!(one("5555-5555-5555-4444").map(|h| h.0), Some(Kind::Card));
        assert!(one("4111111111111112").is_none());
        // Luhn-valid but no scheme starts with 1 (millisecond timestamps).
        assert!(luhn(&[1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
        assert!(one("1700000000000001").map(|h| h.0) != Some(Kind::Card));
    }

    #[test]
    fn ssn_rules() {
        assert_eq!(one("536-22-1234").map(|h| h.0), Some(Kind::Ssn));
        assert!(one("666-22-1234").is_none_or(|h| h.0 != Kind::Ssn));
        assert!(one("900-22-1234").is_none_or(|h| h.0 != Kind::Ssn));
        assert!(one("536-00-1234").is_none_or(|h| h.0 != Kind::Ssn));
        assert!(one("536-22-0000").is_none_or(|h| h.0 != Kind::Ssn));
        assert!(one("078-05-1120").is_none_or(|h| h.0 != Kind::Ssn));
    }

    #[test]
    fn phones_and_ips() {
        assert_eq!(one("+44 20 7946 0958").map(|h| h.0), Some(Kind::Phone));
        assert_eq!(one("(415) 555-0100").map(|h| h.0), Some(Kind::Phone));
        assert_eq!(one("415-555-0100").map(|h| h.0), Some(Kind::Phone));
        assert_eq!(one("020 7946 0958").map(|h| h.0), Some(Kind::Phone));
        assert_eq!(one("192.168.1.20").map(|h| h.0), Some(Kind::Ip));
        assert!(one("192.168.1.256").is_none());
        assert!(one("1.2.3.4.5").is_none());
        assert!(one("2024-01-15").is_none());
    }
}
