//! The `pii` section of the plugin configuration: which routes have their
//! request bodies inspected, for which kinds, with which action per kind,
//! how much is buffered at most, and how values are masked.
//!
//! ```json
//! "pii": { "routes": [ {
//!     "route": "chat",
//!     "action": "redact",
//!     "types": ["card", "iban", "ssn", "email", "phone", "ip", "aws_key", "jwt", "private_key", "token"],
//!     "actions": { "card": "block" },
//!     "max_inspect_bytes": 262144,
//!     "mask": "label",
//!     "hash_key": "000102030405060708090a0b0c0d0e0f",
//!     "min_confidence": 50
//! } ] }
//! ```
//!
//! Routes not listed are never inspected nor buffered. Every rejection names
//! its field, e.g. `pii.routes[0].types[1]: unknown type "passport"`.

use crate::config::ConfigError;
use serde_json::Value;
use vigil_pii::{Kind, KindSet, Mask};

/// What happens to a request whose body contains a kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PiiAction {
    /// Count it; the body is untouched.
    #[default]
    Detect,
    /// Mask it in place.
    Redact,
    /// Refuse the request with a 400.
    Block,
}

impl PiiAction {
    /// Name in configuration and metrics.
    pub fn name(self) -> &'static str {
        match self {
            PiiAction::Detect => "detect",
            PiiAction::Redact => "redact",
            PiiAction::Block => "block",
        }
    }

    fn parse(s: &str) -> Option<PiiAction> {
        match s {
            "detect" => Some(PiiAction::Detect),
            "redact" => Some(PiiAction::Redact),
            "block" => Some(PiiAction::Block),
            _ => None,
        }
    }
}

/// The policy of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// `xds.route_name` this applies to.
    pub route: String,
    /// Kinds inspected.
    pub kinds: KindSet,
    /// Action per kind, indexed like [`Kind::ALL`].
    pub actions: [PiiAction; 10],
    /// Most body bytes inspected (and, for redact/block, buffered).
    pub max_inspect_bytes: usize,
    /// How redacted values are written.
    pub mask: Mask,
    /// Findings below this confidence are ignored.
    pub min_confidence: u8,
}

impl RoutePolicy {
    /// A policy for `route` with one action for every kind and the defaults.
    pub fn new(route: &str, action: PiiAction) -> Self {
        RoutePolicy {
            route: route.to_string(),
            kinds: KindSet::all(),
            actions: [action; 10],
            max_inspect_bytes: DEFAULT_MAX_INSPECT,
            mask: Mask::Label,
            min_confidence: vigil_pii::scan::DEFAULT_MIN_CONFIDENCE,
        }
    }

    /// The action for `kind`.
    pub fn action(&self, kind: Kind) -> PiiAction {
        self.actions
            .get(kind as usize)
            .copied()
            .unwrap_or(PiiAction::Detect)
    }

    /// Whether the body must be held until inspected (some kind is redacted or blocked).
    pub fn holds_body(&self) -> bool {
        self.kinds
            .iter()
            .any(|k| self.action(k) != PiiAction::Detect)
    }
}

/// Default `max_inspect_bytes`: 256 KiB.
pub const DEFAULT_MAX_INSPECT: usize = 256 * 1024;
/// Largest `max_inspect_bytes` accepted (Envoy's default per-request buffer limit is 1 MiB;
/// raise `per_connection_buffer_limit_bytes` before going above it).
pub const MAX_MAX_INSPECT: usize = 8 * 1024 * 1024;

/// The whole section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PiiConfig {
    /// Policies by route.
    pub routes: Vec<RoutePolicy>,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

fn known_types() -> String {
    Kind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

const ROUTE_FIELDS: &[&str] = &[
    "route",
    "action",
    "types",
    "actions",
    "max_inspect_bytes",
    "mask",
    "fill_char",
    "hash_key",
    "min_confidence",
];

fn action_at(path: &str, v: &Value) -> Result<PiiAction, ConfigError> {
    let s = v
        .as_str()
        .ok_or_else(|| err(path, "must be \"detect\", \"redact\" or \"block\""))?;
    PiiAction::parse(s).ok_or_else(|| {
        err(
            path,
            format!("unknown action \"{s}\" (known: detect, redact, block)"),
        )
    })
}

fn type_at(path: &str, s: &str) -> Result<Kind, ConfigError> {
    Kind::parse(s).ok_or_else(|| {
        err(
            path,
            format!("unknown type \"{s}\" (known: {})", known_types()),
        )
    })
}

fn uint_at(
    path: &str,
    v: Option<&Value>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if (min..=max).contains(&x) => Ok(x),
            _ => Err(err(
                path,
                format!("must be a whole number from {min} to {max}, got {n}"),
            )),
        },
        Some(_) => Err(err(
            path,
            format!("must be a whole number from {min} to {max}"),
        )),
    }
}

fn hex_key(path: &str, s: &str) -> Result<[u8; 16], ConfigError> {
    let b = s.as_bytes();
    if b.len() != 32 || !b.iter().all(u8::is_ascii_hexdigit) {
        return Err(err(
            path,
            "must be 32 hexadecimal characters (a 128-bit key)",
        ));
    }
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2).unwrap_or("00");
        *k = u8::from_str_radix(pair, 16).map_err(|_| err(path, "not hexadecimal"))?;
    }
    Ok(key)
}

impl PiiConfig {
    /// The policy of `route`, if it is inspected.
    pub fn route(&self, route: &[u8]) -> Option<&RoutePolicy> {
        self.routes.iter().find(|p| p.route.as_bytes() == route)
    }

    /// Parse and validate the `pii` section.
    pub fn parse(v: &Value) -> Result<PiiConfig, ConfigError> {
        let obj = v
            .as_object()
            .ok_or_else(|| err("pii", "must be a JSON object"))?;
        for k in obj.keys() {
            if k != "routes" {
                return Err(err(
                    format!("pii.{k}"),
                    "unknown field (known fields: routes)",
                ));
            }
        }
        let routes = match obj.get("routes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out: Vec<RoutePolicy> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let p = parse_route(&format!("pii.routes[{i}]"), item)?;
                    if out.iter().any(|o| o.route == p.route) {
                        return Err(err(
                            format!("pii.routes[{i}].route"),
                            format!("duplicate route \"{}\"", p.route),
                        ));
                    }
                    out.push(p);
                }
                out
            }
            Some(_) => return Err(err("pii.routes", "must be an array of route objects")),
        };
        Ok(PiiConfig { routes })
    }
}

fn parse_route(path: &str, v: &Value) -> Result<RoutePolicy, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| err(path, "must be a JSON object"))?;
    for k in obj.keys() {
        if !ROUTE_FIELDS.contains(&k.as_str()) {
            return Err(err(
                format!("{path}.{k}"),
                format!("unknown field (known fields: {})", ROUTE_FIELDS.join(", ")),
            ));
        }
    }
    let field = |k: &str| format!("{path}.{k}");
    let route = match obj.get("route") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(err(field("route"), "must be a non-empty string")),
        None => return Err(err(field("route"), "missing (required)")),
    };
    let action = match obj.get("action") {
        None | Some(Value::Null) => PiiAction::Detect,
        Some(a) => action_at(&field("action"), a)?,
    };
    let mut p = RoutePolicy::new(&route, action);
    match obj.get("types") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut set = KindSet::EMPTY;
            for (i, t) in items.iter().enumerate() {
                let tp = format!("{path}.types[{i}]");
                let s = t.as_str().ok_or_else(|| err(&tp, "must be a string"))?;
                set.insert(type_at(&tp, s)?);
            }
            if set.is_empty() {
                return Err(err(field("types"), "must list at least one type"));
            }
            p.kinds = set;
        }
        Some(_) => return Err(err(field("types"), "must be an array of type names")),
    }
    match obj.get("actions") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (t, a) in m {
                let tp = format!("{path}.actions.{t}");
                let k = type_at(&tp, t)?;
                let a = action_at(&tp, a)?;
                if let Some(slot) = p.actions.get_mut(k as usize) {
                    *slot = a;
                }
                p.kinds.insert(k);
            }
        }
        Some(_) => return Err(err(field("actions"), "must be an object of type: action")),
    }
    p.max_inspect_bytes = uint_at(
        &field("max_inspect_bytes"),
        obj.get("max_inspect_bytes"),
        DEFAULT_MAX_INSPECT as u64,
        1,
        MAX_MAX_INSPECT as u64,
    )? as usize;
    p.min_confidence = uint_at(
        &field("min_confidence"),
        obj.get("min_confidence"),
        u64::from(p.min_confidence),
        1,
        100,
    )? as u8;
    let fill = match obj.get("fill_char") {
        None | Some(Value::Null) => b'*',
        Some(Value::String(s))
            if s.len() == 1
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') =>
        {
            s.as_bytes().first().copied().unwrap_or(b'*')
        }
        Some(_) => {
            return Err(err(
                field("fill_char"),
                "must be one printable ASCII character other than \" and \\",
            ))
        }
    };
    let key = match obj.get("hash_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(hex_key(&field("hash_key"), s)?),
        Some(_) => return Err(err(field("hash_key"), "must be a string")),
    };
    p.mask = match obj.get("mask").and_then(Value::as_str) {
        None | Some("label") => Mask::Label,
        Some("fill") => Mask::Fill(fill),
        Some("hash") => Mask::Hash {
            key: key.ok_or_else(|| {
                err(
                    field("hash_key"),
                    "missing (required when mask is \"hash\")",
                )
            })?,
        },
        Some(other) => {
            return Err(err(
                field("mask"),
                format!("unknown mask \"{other}\" (known: label, fill, hash)"),
            ))
        }
    };
    if obj
        .get("mask")
        .is_some_and(|m| !m.is_string() && !m.is_null())
    {
        return Err(err(
            field("mask"),
            "must be \"label\", \"fill\" or \"hash\"",
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;

    fn parse(pii: &str) -> Result<PluginConfig, String> {
        PluginConfig::parse(format!("{{\"pii\": {pii}}}").as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn good_config() {
        let c = parse(r#"{"routes":[{"route":"chat","action":"redact","types":["card","email"],"actions":{"ssn":"block"},"max_inspect_bytes":1024,"mask":"hash","hash_key":"000102030405060708090a0b0c0d0e0f"}]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let p = c.pii.route(b"chat").unwrap_or_else(|| panic!("route"));
        assert!(
            p.kinds.contains(Kind::Ssn)
                && p.kinds.contains(Kind::Card)
                && !p.kinds.contains(Kind::Ip)
        );
        assert_eq!(p.action(Kind::Ssn), PiiAction::Block);
        assert_eq!(p.action(Kind::Card), PiiAction::Redact);
        assert_eq!(p.max_inspect_bytes, 1024);
        assert!(p.holds_body());
        assert!(c.pii.route(b"other").is_none());
        assert_eq!(
            PluginConfig::parse(b"{}").map(|c| c.pii.routes.len()).ok(),
            Some(0)
        );
    }

    #[test]
    fn bad_config_names_the_field() {
        let cases = [
            (
                r#"{"routes":[{"route":"r","types":["card","passport"]}]}"#,
                "pii.routes[0].types[1]: unknown type \"passport\"",
            ),
            (
                r#"{"routes":[{"route":"r","action":"mask"}]}"#,
                "pii.routes[0].action: unknown action \"mask\"",
            ),
            (
                r#"{"routes":[{"route":"r","actions":{"card":"nuke"}}]}"#,
                "pii.routes[0].actions.card: unknown action \"nuke\"",
            ),
            (
                r#"{"routes":[{"route":"r","actions":{"cvv":"block"}}]}"#,
                "pii.routes[0].actions.cvv: unknown type \"cvv\"",
            ),
            (
                r#"{"routes":[{"route":"r","max_inspect_bytes":0}]}"#,
                "pii.routes[0].max_inspect_bytes: must be a whole number from 1 to",
            ),
            (
                r#"{"routes":[{"route":"r","mask":"hash"}]}"#,
                "pii.routes[0].hash_key: missing",
            ),
            (
                r#"{"routes":[{"route":"r","hash_key":"xyz"}]}"#,
                "pii.routes[0].hash_key: must be 32 hexadecimal",
            ),
            (
                r#"{"routes":[{"route":"r"},{"route":"r"}]}"#,
                "pii.routes[1].route: duplicate route",
            ),
            (
                r#"{"routes":[{"action":"block"}]}"#,
                "pii.routes[0].route: missing",
            ),
            (
                r#"{"routes":[{"route":"r","typo":1}]}"#,
                "pii.routes[0].typo: unknown field",
            ),
            (r#"{"rutes":[]}"#, "pii.rutes: unknown field"),
            (r#"[]"#, "pii: must be a JSON object"),
        ];
        for (doc, want) in cases {
            let got = parse(doc).err().unwrap_or_default();
            assert!(got.starts_with(want), "{doc}: got {got:?}, want {want:?}");
        }
    }
}
