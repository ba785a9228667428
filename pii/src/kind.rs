//! Entity types, their configuration names, and sets of them.

use std::fmt;

/// What a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Payment card number (PAN).
    Card,
    /// International bank account number.
    Iban,
    /// US social security number.
    Ssn,
    /// Email address.
    Email,
    /// Phone number.
    Phone,
    /// IPv4 or IPv6 address.
    Ip,
    /// AWS-style access key id (`AKIA…`).
    AwsKey,
    /// JSON web token.
    Jwt,
    /// PEM private key block.
    PrivateKey,
    /// High-entropy token (API key, password) next to a context word, or with a known prefix.
    Token,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 10] = [
        Kind::Card,
        Kind::Iban,
        Kind::Ssn,
        Kind::Email,
        Kind::Phone,
        Kind::Ip,
        Kind::AwsKey,
        Kind::Jwt,
        Kind::PrivateKey,
        Kind::Token,
    ];

    /// Name in configuration, metrics and error bodies.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::Ssn => "ssn",
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Ip => "ip",
            Kind::AwsKey => "aws_key",
            Kind::Jwt => "jwt",
            Kind::PrivateKey => "private_key",
            Kind::Token => "token",
        }
    }

    /// Parse a configuration name.
    ///
    /// ```
    /// assert_eq!(vigil_pii::Kind::parse("iban"), Some(vigil_pii::Kind::Iban));
    /// assert_eq!(vigil_pii::Kind::parse("passport"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Upper-case label used by the default mask, e.g. `[CARD]`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Card => "CARD",
            Kind::Iban => "IBAN",
            Kind::Ssn => "SSN",
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::Ip => "IP",
            Kind::AwsKey => "AWS_KEY",
            Kind::Jwt => "JWT",
            Kind::PrivateKey => "PRIVATE_KEY",
            Kind::Token => "TOKEN",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of kinds (a bit set).
///
/// ```
/// use vigil_pii::{Kind, KindSet};
/// let s = KindSet::of(&[Kind::Card, Kind::Email]);
/// assert!(s.contains(Kind::Card) && !s.contains(Kind::Ip));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KindSet(u16);

impl KindSet {
    /// No kinds.
    pub const EMPTY: KindSet = KindSet(0);

    /// All kinds.
    pub fn all() -> KindSet {
        KindSet::of(&Kind::ALL)
    }

    /// These kinds.
    pub fn of(kinds: &[Kind]) -> KindSet {
        KindSet(kinds.iter().fold(0, |a, k| a | k.bit()))
    }

    /// Whether `k` is in the set.
    pub fn contains(self, k: Kind) -> bool {
        self.0 & k.bit() != 0
    }

    /// Add `k`.
    pub fn insert(&mut self, k: Kind) {
        self.0 |= k.bit();
    }

    /// Whether no kind is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in [`Kind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl Default for KindSet {
    fn default() -> Self {
        KindSet::all()
    }
}
