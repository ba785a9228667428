//! The text fields of a wire document, owned or borrowed from the body.
//!
//! Why this exists: the control service receives reports of up to 10 000
//! series, each with a route, a cluster and a state name. Parsing them into
//! `String`s costs three allocations per series, which were half the
//! ingest profile. The documents are therefore generic over their text
//! type ([`WireText`]): senders build them with `String` (the default type
//! parameter, so `Report` and `Series` mean exactly what they did), and the
//! control service parses into [`Text`], which borrows from the received
//! body whenever the JSON string has no escapes (and owns the unescaped
//! text otherwise). Same fields, same bounds, same validation — one
//! definition of the document.

use serde::de::{Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;

/// A text type a wire document can be built on: `String` (sent documents)
/// or [`Text`] (received ones).
pub trait WireText: AsRef<str> + From<&'static str> {
    /// The text.
    fn as_str(&self) -> &str {
        self.as_ref()
    }
}

impl WireText for String {}

impl WireText for Text<'_> {}

/// Text borrowed from a received body where it can be (no escapes), owned
/// where it must be.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for Text<'_> {
    fn from(s: &'static str) -> Self {
        Text(Cow::Borrowed(s))
    }
}

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_and_owns_escaped_ones() {
        let body = br#"["plain", "esc\"aped", "caf\u00e9"]"#;
        let v: Vec<Text<'_>> = serde_json::from_slice(body).unwrap();
        assert!(matches!(v[0].0, Cow::Borrowed("plain")));
        assert!(matches!(&v[1].0, Cow::Owned(s) if s == "esc\"aped"));
        assert_eq!(v[2].as_str(), "café");
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"["plain","esc\"aped","café"]"#
        );
        assert!(serde_json::from_slice::<Text<'_>>(b"3").is_err());
    }
}
