//! The control service's routing answer (`GET /v1/routing`).
//!
//! ```json
//! {"version":7,"canaries":[{"name":"checkout","canary_weight":10,"phase":"progressing"}]}
//! ```
//!
//! `version` increases on every change; `canary_weight` is the percent
//! 0–100 of the canary's traffic sent to the canary version. The service
//! encodes it with [`encode`]; the filter parses it with [`parse`], which
//! refuses anything malformed or hostile before it can reach routing.

use serde::Serialize;
use serde_json::Value;

/// Largest routing answer accepted.
pub const MAX_ROUTING_BYTES: usize = 256 * 1024;
/// Most canaries accepted in one routing answer.
pub const MAX_ROUTING_CANARIES: usize = 1000;

/// One canary of the routing answer, as the service writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Canary name.
    pub name: String,
    /// Percent of the canary's traffic to the canary version.
    pub canary_weight: u8,
    /// Rollout phase (informational).
    pub phase: String,
}

/// Encode a routing answer.
pub fn encode(version: u64, canaries: &[Entry]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Doc<'a> {
        version: u64,
        canaries: &'a [Entry],
    }
    serde_json::to_vec(&Doc { version, canaries }).unwrap_or_default()
}

/// Weights served by the control service, as the filter keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routing {
    /// Increases on every change.
    pub version: u64,
    /// `(canary name, percent of its traffic to the canary version)`.
    pub weights: Vec<(String, u8)>,
}

impl Routing {
    /// Weight of a canary by name.
    pub fn weight(&self, name: &str) -> Option<u8> {
        self.weights
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, w)| *w)
    }
}

/// Parse and validate a routing answer.
pub fn parse(body: &[u8]) -> Result<Routing, String> {
    if body.len() > MAX_ROUTING_BYTES {
        return Err(format!(
            "routing answer of {} bytes exceeds {MAX_ROUTING_BYTES}",
            body.len()
        ));
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("routing answer is not JSON: {e}"))?;
    let version = doc
        .get("version")
        .and_then(Value::as_u64)
        .ok_or("routing answer: version must be a whole number")?;
    let items = doc
        .get("canaries")
        .and_then(Value::as_array)
        .ok_or("routing answer: canaries must be an array")?;
    if items.len() > MAX_ROUTING_CANARIES {
        return Err(format!(
            "routing answer: more than {MAX_ROUTING_CANARIES} canaries"
        ));
    }
    let mut weights = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && n.len() <= 256)
            .ok_or_else(|| {
                format!("routing answer: canaries[{i}].name must be a non-empty string")
            })?;
        let w = item
            .get("canary_weight")
            .and_then(Value::as_f64)
            .filter(|w| w.is_finite() && (0.0..=100.0).contains(w))
            .ok_or_else(|| {
                format!(
                    "routing answer: canaries[{i}].canary_weight must be a number from 0 to 100"
                )
            })?;
        weights.push((name.to_string(), w.round() as u8));
    }
    Ok(Routing { version, weights })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_validated() {
        let r = parse(br#"{"version":3,"canaries":[{"name":"checkout","canary_weight":25,"phase":"progressing"}]}"#)
            .unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.weight("checkout"), Some(25));
        assert_eq!(r.weight("other"), None);
        for bad in [
            &b"nope"[..],
            br#"{"canaries":[]}"#,
            br#"{"version":1}"#,
            br#"{"version":1,"canaries":[{"name":"c","canary_weight":101}]}"#,
            br#"{"version":1,"canaries":[{"name":"c","canary_weight":-1}]}"#,
            br#"{"version":1,"canaries":[{"name":"","canary_weight":5}]}"#,
            br#"{"version":1,"canaries":[{"canary_weight":5}]}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&vec![b' '; MAX_ROUTING_BYTES + 1]).is_err());
    }

    #[test]
    fn encode_parses_back() {
        let body = encode(
            9,
            &[Entry {
                name: "a".into(),
                canary_weight: 40,
                phase: "progressing".into(),
            }],
        );
        let r = parse(&body).unwrap();
        assert_eq!(r.version, 9);
        assert_eq!(r.weights, vec![("a".to_string(), 40)]);
    }
}
