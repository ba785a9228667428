//! The labelled evaluation corpus, generated from code with fixed seeds:
//! chat prompts with embedded entities (labelled with kind and byte span)
//! and hard negatives that look like entities but are not (Luhn-valid
//! timestamps and order numbers, version strings, UUIDs, dates, git hashes,
//! bad-checksum IBANs, excluded-range SSNs, MAC addresses, ISBNs).
//!
//! The generator is our own: scores on it measure the detectors against the
//! shapes we thought of, not against the world. It is an estimate.

use crate::kind::Kind;
use crate::numeric::luhn;

/// One labelled entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Its kind.
    pub kind: Kind,
    /// Byte span in the sample's text.
    pub start: usize,
    /// End of the span.
    pub end: usize,
}

/// One prompt and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The prompt.
    pub text: String,
    /// Its entities (hard negatives are unlabelled by definition).
    pub labels: Vec<Label>,
    /// How many hard negatives were embedded.
    pub negatives: usize,
}

/// xorshift64* — deterministic, dependency-free.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// One of `xs`.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> Option<&'a T> {
        xs.get(self.below(xs.len() as u64) as usize)
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
    fn chars(&mut self, n: usize, set: &[u8]) -> String {
        (0..n)
            .map(|_| char::from(*self.pick(set).unwrap_or(&b'x')))
            .collect()
    }
}

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &[u8] = b"0123456789abcdef";

/// Append the Luhn check digit to `body`.
fn with_luhn(body: &str) -> String {
    for c in 0..10u8 {
        let s = format!("{body}{c}");
        let d: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
        if luhn(&d) {
            return s;
        }
    }
    body.to_string()
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut p = 0;
    for &n in sizes {
        if p >= s.len() {
            break;
        }
        out.push(s.get(p..(p + n).min(s.len())).unwrap_or(""));
        p += n;
    }
    if p < s.len() {
        out.push(s.get(p..).unwrap_or(""));
    }
    out.join(sep)
}

fn card(r: &mut Rng) -> String {
    let (prefix, len) = *r
        .pick(&[
            ("4", 16),
            ("4", 16),
            ("51", 16),
            ("55", 16),
            ("2221", 16),
            ("34", 15),
            ("37", 15),
            ("6011", 16),
            ("65", 16),
            ("3530", 16),
            ("36", 14),
            ("62", 16),
            ("4", 19),
        ])
        .unwrap_or(&("4", 16));
    let body = format!("{prefix}{}", r.digits(len - prefix.len() - 1));
    let n = with_luhn(&body);
    match (r.below(3), len) {
        (0, _) => n,
        (1, 15) => group(&n, &[4, 6, 5], " "),
        (1, _) => group(&n, &[4, 4, 4, 4], " "),
        (_, 15) => group(&n, &[4, 6, 5], "-"),
        _ => group(&n, &[4, 4, 4, 4], "-"),
    }
}

fn iban(r: &mut Rng, valid: bool) -> String {
    let (cc, bban_shape) = *r
        .pick(&[
            ("DE", "dddddddddddddddddd"),
            ("GB", "LLLLdddddddddddddd"),
            ("FR", "ddddddddddddddddddddddd"),
            ("ES", "dddddddddddddddddddd"),
            ("IT", "LddddddddddAAAAAAAAAAAA"),
            ("NL", "LLLLdddddddddd"),
            ("CH", "ddddddddddddddddd"),
            ("BE", "dddddddddddd"),
            ("AT", "dddddddddddddddd"),
            ("PL", "dddddddddddddddddddddddd"),
        ])
        .unwrap_or(&("DE", "dddddddddddddddddd"));
    let bban: String = bban_shape
        .bytes()
        .map(|c| match c {
            b'd' => char::from(b'0' + r.below(10) as u8),
            b'L' => char::from(b'A' + r.below(26) as u8),
            _ => char::from(
                *r.pick(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
                    .unwrap_or(&b'0'),
            ),
        })
        .collect();
    let rearranged = format!("{bban}{cc}00");
    let mut m = 0u32;
    for c in rearranged.bytes() {
        m = if c.is_ascii_digit() {
            (m * 10 + u32::from(c - b'0')) % 97
        } else {
            (m * 100 + u32::from(c - b'A' + 10)) % 97
        };
    }
    let mut check = 98 - m;
    if !valid {
        check = (check + 1 + r.below(96) as u32) % 100;
        if check == 98 - m {
            check = (check + 1) % 100;
        }
    }
    let s = format!("{cc}{check:02}{bban}");
    if r.below(2) == 0 {
        s
    } else {
        group(&s, &[4; 9], " ")
    }
}

fn ssn(r: &mut Rng) -> String {
    let area = loop {
        let a = 1 + r.below(899);
        if a != 666 {
            break a;
        }
    };
    format!("{area:03}-{:02}-{:04}", 1 + r.below(99), 1 + r.below(9999))
}

const FIRST: &[&str] = &[
    "ann", "bob", "chen", "dmitri", "eva", "farah", "gus", "hana", "ines", "jo", "kwame", "lena",
    "marco", "nia", "omar", "priya",
];
const LAST: &[&str] = &[
    "lee", "smith", "garcia", "okafor", "novak", "tanaka", "muller", "rossi", "kowalski", "silva",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.org",
    "corp.example.net",
    "uni.example.edu",
    "example.co.uk",
    "shop.example.io",
];

fn email(r: &mut Rng) -> String {
    let f = r.pick(FIRST).copied().unwrap_or("ann");
    let l = r.pick(LAST).copied().unwrap_or("lee");
    let d = r.pick(DOMAINS).copied().unwrap_or("example.com");
    match r.below(4) {
        0 => format!("{f}.{l}@{d}"),
        1 => format!("{f}{}@{d}", r.below(100)),
        2 => format!("{f}_{l}+work@{d}"),
        _ => format!("{}{l}@{d}", f.get(..1).unwrap_or("a")),
    }
}

fn nanp(r: &mut Rng) -> (String, String, String) {
    (
        format!("{}{}", 2 + r.below(8), r.digits(2)).replace("11", "12"),
        format!("{}{}", 2 + r.below(8), r.digits(2)),
        r.digits(4),
    )
}

fn phone(r: &mut Rng) -> String {
    let (a, e, n) = nanp(r);
    match r.below(8) {
        0 => format!("+1 {a} {e} {n}"),
        1 => format!("({a}) {e}-{n}"),
        2 => format!("{a}-{e}-{n}"),
        3 => format!("{a}.{e}.{n}"),
        4 => format!("+44 20 {} {}", r.digits(4), r.digits(4)),
        5 => format!("020 {} {}", r.digits(4), r.digits(4)),
        6 => format!("+49 30 {}", r.digits(7)),
        _ => format!(
            "+33 6 {} {} {} {}",
            r.digits(2),
            r.digits(2),
            r.digits(2),
            r.digits(2)
        ),
    }
}

fn ip(r: &mut Rng) -> String {
    match r.below(3) {
        0 | 1 => format!(
            "{}.{}.{}.{}",
            1 + r.below(223),
            r.below(256),
            r.below(256),
            1 + r.below(254)
        ),
        _ => {
            let g: Vec<String> = (0..8).map(|_| format!("{:x}", r.below(0x10000))).collect();
            if r.below(2) == 0 {
                g.join(":")
            } else {
                format!(
                    "2001:db8::{}:{}",
                    g.get(6).map_or("1", |s| s),
                    g.get(7).map_or("1", |s| s)
                )
            }
        }
    }
}

fn jwt(r: &mut Rng) -> String {
    let n = 20 + r.below(40) as usize;
    let body = r.chars(n, B64URL);
    format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{body}.{}",
        r.chars(43, B64URL)
    )
}

fn pem(r: &mut Rng) -> String {
    let label = *r
        .pick(&[
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
        ])
        .unwrap_or(&"PRIVATE KEY");
    let lines: Vec<String> = (0..(3 + r.below(12))).map(|_| r.chars(64, B64)).collect();
    // Inside JSON the newlines are escapes; in plain text they are newlines.
    format!(
        "-----BEGIN {label}-----\\n{}\\n-----END {label}-----",
        lines.join("\\n")
    )
}

fn token(r: &mut Rng) -> (String, String) {
    let t = loop {
        let n = 32 + r.below(16) as usize;
        let t = r.chars(n, ALNUM);
        let classes = [
            t.bytes().any(|b| b.is_ascii_uppercase()),
            t.bytes().any(|b| b.is_ascii_lowercase()),
            t.bytes().filter(u8::is_ascii_digit).count() >= 2,
        ];
        if classes.iter().all(|c| *c) {
            break t;
        }
    };
    match r.below(4) {
        0 => ("my api key is ".into(), format!("sk-{t}")),
        1 => ("use token ".into(), t),
        2 => ("the password: ".into(), t),
        _ => ("export GITHUB_TOKEN=".into(), format!("ghp_{t}")),
    }
}

/// A hard negative: text that resembles an entity and is not one.
fn negative(r: &mut Rng) -> String {
    match r.below(14) {
        0 => format!("timestamp {}", with_luhn(&format!("4{}", r.digits(14)))),
        1 => format!(
            "order {}",
            group(
                &with_luhn(&format!("5{}{}", 1 + r.below(5), r.digits(13))),
                &[4, 4, 4, 4],
                " "
            )
        ),
        2 => format!("ts={}", with_luhn(&format!("17{}", r.digits(13)))),
        3 => format!(
            "version {}.{}.{}.{}",
            r.below(20),
            r.below(30),
            r.below(100),
            r.below(300)
        ),
        4 => format!("v{}.{}.{}", r.below(5), r.below(30), r.below(100)),
        5 => format!(
            "request id {}-{}-4{}-a{}-{}",
            r.chars(8, HEX),
            r.chars(4, HEX),
            r.chars(3, HEX),
            r.chars(3, HEX),
            r.chars(12, HEX)
        ),
        6 => format!(
            "on 2024-{:02}-{:02} at {:02}:{:02}:{:02}",
            1 + r.below(12),
            1 + r.below(28),
            r.below(24),
            r.below(60),
            r.below(60)
        ),
        7 => format!("commit {}", r.chars(40, HEX)),
        8 => format!("account {}", iban(r, false)),
        9 => format!(
            "{}-{:02}-{:04}",
            *r.pick(&["000", "666", "900", "987"]).unwrap_or(&"000"),
            1 + r.below(99),
            1 + r.below(9999)
        ),
        10 => format!(
            "mac {}:{}:{}:{}:{}:{}",
            r.chars(2, HEX),
            r.chars(2, HEX),
            r.chars(2, HEX),
            r.chars(2, HEX),
            r.chars(2, HEX),
            r.chars(2, HEX)
        ),
        11 => format!(
            "ISBN 978-{}-{}-{}-{}",
            r.below(10),
            r.digits(2),
            r.digits(6),
            r.below(10)
        ),
        12 => format!("invoice {}", with_luhn(&format!("4{}", r.digits(15)))),
        _ => format!(
            "price ${}.{:02} for {} units",
            r.below(10000),
            r.below(100),
            r.below(500)
        ),
    }
}

const OPENERS: &[&str] = &[
    "Hi! Can you help me draft a reply to a customer.",
    "Summarise this support ticket for me please.",
    "Rewrite the following note in a friendlier tone:",
    "Translate to French:",
    "I need a polite email to my landlord.",
    "Here is the log from last night, what went wrong?",
    "Extract the action items from this thread.",
];
const FILLER: &[&str] = &[
    "The meeting moved to Thursday.",
    "Thanks again for the quick turnaround!",
    "We shipped 3 boxes and 2 pallets last week.",
    "Please keep it under 200 words.",
    "The deploy finished in 42 seconds.",
    "Let me know if anything is unclear.",
    "Room 12 on floor 4, building B.",
];

fn entity(r: &mut Rng, kind: Kind) -> (String, String, String) {
    // (lead-in, entity, tail)
    match kind {
        Kind::Card => (
            r.pick(&["My card number is ", "Charge ", "the visa ", "Use card "])
                .copied()
                .unwrap_or("")
                .into(),
            card(r),
            ".".into(),
        ),
        Kind::Iban => (
            r.pick(&["Send it to IBAN ", "my account is ", "Pay to "])
                .copied()
                .unwrap_or("")
                .into(),
            iban(r, true),
            " please.".into(),
        ),
        Kind::Ssn => (
            r.pick(&[
                "My SSN is ",
                "social security number ",
                "SSN: ",
                "her number is ",
            ])
            .copied()
            .unwrap_or("")
            .into(),
            ssn(r),
            ".".into(),
        ),
        Kind::Email => (
            r.pick(&["Email ", "write to ", "cc: ", "contact "])
                .copied()
                .unwrap_or("")
                .into(),
            email(r),
            " today.".into(),
        ),
        Kind::Phone => (
            r.pick(&["Call me at ", "my phone is ", "reach her on ", "mobile: "])
                .copied()
                .unwrap_or("")
                .into(),
            phone(r),
            " after 5.".into(),
        ),
        Kind::Ip => (
            r.pick(&["the server at ", "client IP ", "blocked host ", "from "])
                .copied()
                .unwrap_or("")
                .into(),
            ip(r),
            " keeps failing.".into(),
        ),
        Kind::AwsKey => (
            "aws_access_key_id = ".into(),
            format!("AKIA{}", r.chars(16, B32)),
            "\\n".into(),
        ),
        Kind::Jwt => (
            "Authorization: Bearer ".into(),
            jwt(r),
            " was rejected.".into(),
        ),
        Kind::PrivateKey => ("here is the key: ".into(), pem(r), " thanks".into()),
        Kind::Token => {
            let (lead, t) = token(r);
            (lead, t, " — is it leaked?".into())
        }
    }
}

/// Generate `n` samples from `seed`. About a third carry no entity at all,
/// and most carry one or more hard negatives.
///
/// ```
/// let a = vigil_pii::corpus::generate(7, 50);
/// assert_eq!(a, vigil_pii::corpus::generate(7, 50)); // deterministic
/// assert!(a.iter().any(|s| !s.labels.is_empty()));
/// ```
pub fn generate(seed: u64, n: usize) -> Vec<Sample> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut text = r.pick(OPENERS).copied().unwrap_or("").to_string();
            let mut labels = Vec::new();
            let mut negatives = 0;
            let parts = 1 + r.below(4);
            for _ in 0..parts {
                text.push(' ');
                match r.below(6) {
                    0 | 1 => text.push_str(r.pick(FILLER).copied().unwrap_or("")),
                    2 | 3 => {
                        let neg = negative(&mut r);
                        text.push_str(&neg);
                        text.push('.');
                        negatives += 1;
                    }
                    _ => {
                        let kind = *r.pick(&Kind::ALL).unwrap_or(&Kind::Email);
                        let (lead, e, tail) = entity(&mut r, kind);
                        text.push_str(&lead);
                        let start = text.len();
                        text.push_str(&e);
                        labels.push(Label {
                            kind,
                            start,
                            end: text.len(),
                        });
                        text.push_str(&tail);
                    }
                }
            }
            Sample {
                text,
                labels,
                negatives,
            }
        })
        .collect()
}

/// Escape a string for a JSON string literal (only `"` and `\`; the corpus has no control bytes).
pub fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
