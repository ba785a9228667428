//! The PII guard's counts in the report (`pii`, chunk 0): per route, per
//! type and action, how many findings; how many requests and bytes were
//! inspected and how many bodies only in part. **Counts only**: the document
//! has no field that could carry a value, a span or an offset, the type
//! names are the closed set of `vigil-pii` and the actions the closed set of
//! the filter's configuration, so a reader that validates can store nothing
//! else.
//!
//! ```json
//! "pii":[{"route":"chat","requests":40,"inspected_bytes":655360,"partial":1,
//!   "blocked":2,"redacted":0,
//!   "findings":[{"type":"card","action":"block","count":2},
//!               {"type":"email","action":"detect","count":7}]}]
//! ```
//!
//! Additive: a report without `pii` is a report with no findings; an older
//! reader ignores the field.

use crate::report::{ReportError, MAX_NAME_BYTES};
use serde::{Deserialize, Serialize};

/// Most routes in one report's `pii`.
pub const MAX_PII_ROUTES: usize = 256;
/// The actions a finding can have had.
pub const ACTIONS: [&str; 3] = ["detect", "redact", "block"];

/// Findings of one type that got one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiCount {
    /// Entity type (`card`, `iban`, … — `vigil_pii::Kind::name`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `detect`, `redact` or `block`.
    pub action: String,
    /// Findings (≥ 1).
    pub count: u64,
}

/// One route's PII guard counts over a period (a tick, or a sum of ticks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiRoute {
    /// Route name (the filter configuration's `pii.routes[].route`).
    pub route: String,
    /// Requests inspected.
    #[serde(default)]
    pub requests: u64,
    /// Body bytes inspected.
    #[serde(default)]
    pub inspected_bytes: u64,
    /// Bodies longer than `max_inspect_bytes` (only the prefix inspected).
    #[serde(default)]
    pub partial: u64,
    /// Requests refused (400).
    #[serde(default)]
    pub blocked: u64,
    /// Requests whose body was rewritten.
    #[serde(default)]
    pub redacted: u64,
    /// Findings per (type, action); at most one entry per pair.
    #[serde(default)]
    pub findings: Vec<PiiCount>,
}

impl PiiRoute {
    /// An empty entry for `route`.
    pub fn new(route: &str) -> Self {
        PiiRoute {
            route: route.to_string(),
            ..PiiRoute::default()
        }
    }

    /// Count `n` findings of `kind` with `action`.
    pub fn add_finding(&mut self, kind: &str, action: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self
            .findings
            .iter_mut()
            .find(|c| c.kind == kind && c.action == action)
        {
            Some(c) => c.count = c.count.saturating_add(n),
            None => self.findings.push(PiiCount {
                kind: kind.to_string(),
                action: action.to_string(),
                count: n,
            }),
        }
    }

    /// Add another entry's counts (same route or not: the caller picks).
    pub fn add(&mut self, other: &PiiRoute) {
        self.requests = self.requests.saturating_add(other.requests);
        self.inspected_bytes = self.inspected_bytes.saturating_add(other.inspected_bytes);
        self.partial = self.partial.saturating_add(other.partial);
        self.blocked = self.blocked.saturating_add(other.blocked);
        self.redacted = self.redacted.saturating_add(other.redacted);
        for c in &other.findings {
            self.add_finding(&c.kind, &c.action, c.count);
        }
    }

    /// All findings, whatever their type and action.
    pub fn findings_total(&self) -> u64 {
        self.findings
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.count))
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.findings.is_empty()
    }
}

/// Add `entry` into `list` (merging by route). A route beyond
/// [`MAX_PII_ROUTES`] is not added; returns false then.
pub fn merge(list: &mut Vec<PiiRoute>, entry: &PiiRoute) -> bool {
    if let Some(e) = list.iter_mut().find(|e| e.route == entry.route) {
        e.add(entry);
        return true;
    }
    if list.len() >= MAX_PII_ROUTES {
        return false;
    }
    list.push(entry.clone());
    true
}

/// Whether `kind` is a PII type name the filter can report.
pub fn known_type(kind: &str) -> bool {
    vigil_pii::Kind::parse(kind).is_some()
}

/// Every PII type name, in a fixed order, comma-separated (for messages).
pub fn type_names() -> String {
    vigil_pii::Kind::ALL.map(|k| k.name()).join(", ")
}

/// Validate a report's `pii` (every field named `pii[i].…`).
pub fn validate(routes: &[PiiRoute]) -> Result<(), ReportError> {
    if routes.len() > MAX_PII_ROUTES {
        return Err(ReportError::new(
            "pii",
            format!("at most {MAX_PII_ROUTES} routes, got {}", routes.len()),
        ));
    }
    for (i, r) in routes.iter().enumerate() {
        let f = |name: &str| format!("pii[{i}].{name}");
        if r.route.is_empty()
            || r.route.len() > MAX_NAME_BYTES
            || r.route.chars().any(char::is_control)
        {
            return Err(ReportError::new(
                f("route"),
                format!("must be 1 to {MAX_NAME_BYTES} bytes without control characters"),
            ));
        }
        if routes.iter().take(i).any(|p| p.route == r.route) {
            return Err(ReportError::new(
                f("route"),
                format!("duplicate route {:?}", r.route),
            ));
        }
        for (name, v) in [
            ("partial", r.partial),
            ("blocked", r.blocked),
            ("redacted", r.redacted),
        ] {
            if v > r.requests {
                return Err(ReportError::new(
                    f(name),
                    format!("{v} exceeds requests {}", r.requests),
                ));
            }
        }
        if r.blocked.saturating_add(r.redacted) > r.requests {
            return Err(ReportError::new(
                f("redacted"),
                "blocked + redacted exceed requests (a request is one or the other)",
            ));
        }
        if r.findings.len() > vigil_pii::Kind::ALL.len() * ACTIONS.len() {
            return Err(ReportError::new(
                f("findings"),
                "more entries than (type, action) pairs",
            ));
        }
        for (j, c) in r.findings.iter().enumerate() {
            let g = |name: &str| format!("pii[{i}].findings[{j}].{name}");
            if !known_type(&c.kind) {
                return Err(ReportError::new(
                    g("type"),
                    format!("unknown type (one of {})", type_names()),
                ));
            }
            if !ACTIONS.contains(&c.action.as_str()) {
                return Err(ReportError::new(
                    g("action"),
                    "must be detect, redact or block",
                ));
            }
            if c.count == 0 {
                return Err(ReportError::new(g("count"), "must be at least 1"));
            }
            if r.findings
                .iter()
                .take(j)
                .any(|p| p.kind == c.kind && p.action == c.action)
            {
                return Err(ReportError::new(g("type"), "duplicate (type, action)"));
            }
        }
        if r.findings_total() > 0 && r.requests == 0 {
            return Err(ReportError::new(
                f("requests"),
                "findings without an inspected request",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::report::parse;
    use serde_json::json;

    fn report(pii: serde_json::Value) -> serde_json::Value {
        json!({"version":1,"sidecar":"sc-1","seq":1,"sent_at_ms":1000,"tick_ms":1000,"pii":pii})
    }

    fn good() -> serde_json::Value {
        json!([{"route":"chat","requests":4,"inspected_bytes":4096,"partial":1,"blocked":1,
            "redacted":0,"findings":[{"type":"card","action":"block","count":2},
            {"type":"email","action":"detect","count":3}]}])
    }

    #[test]
    fn accepts_counts_and_round_trips() {
        let r = parse(report(good()).to_string().as_bytes()).unwrap();
        assert_eq!(r.pii.len(), 1);
        assert_eq!(r.pii[0].findings_total(), 5);
        assert_eq!(parse(&r.encode()).unwrap(), r);
        // Without `pii` the report is as before, and encodes without it.
        let plain = parse(report(json!([])).to_string().as_bytes()).unwrap();
        assert!(!String::from_utf8_lossy(&plain.encode()).contains("pii"));
    }

    #[test]
    fn unknown_fields_carry_nothing_through() {
        let mut v = good();
        v[0]["value"] = json!("4111 1111 1111 1111");
        v[0]["findings"][0]["span"] = json!([3, 22]);
        v[0]["findings"][0]["text"] = json!("4111 1111 1111 1111");
        let r = parse(report(v).to_string().as_bytes()).unwrap();
        assert!(!String::from_utf8_lossy(&r.encode()).contains("4111"));
    }

    #[test]
    fn refusals_name_the_field() {
        let field =
            |v: serde_json::Value| parse(report(v).to_string().as_bytes()).unwrap_err().field;
        let mut v = good();
        v[0]["findings"][0]["type"] = json!("4111 1111 1111 1111");
        assert_eq!(field(v), "pii[0].findings[0].type");
        let mut v = good();
        v[0]["findings"][1]["action"] = json!("scrub");
        assert_eq!(field(v), "pii[0].findings[1].action");
        let mut v = good();
        v[0]["findings"][0]["count"] = json!(0);
        assert_eq!(field(v), "pii[0].findings[0].count");
        let mut v = good();
        v[0]["blocked"] = json!(5);
        assert_eq!(field(v), "pii[0].blocked");
        let mut v = good();
        v[0]["route"] = json!("");
        assert_eq!(field(v), "pii[0].route");
        let mut v = good();
        v[0]["requests"] = json!(0);
        v[0]["partial"] = json!(0);
        v[0]["blocked"] = json!(0);
        assert_eq!(field(v), "pii[0].requests");
        let v = json!([good()[0].clone(), good()[0].clone()]);
        assert_eq!(field(v), "pii[1].route");
        let mut v = good();
        v[0]["findings"][1] = v[0]["findings"][0].clone();
        assert_eq!(field(v), "pii[0].findings[1].type");
        let many: Vec<_> = (0..=MAX_PII_ROUTES)
            .map(|i| json!({"route": format!("r{i}"), "requests": 1}))
            .collect();
        assert_eq!(field(json!(many)), "pii");
    }

    #[test]
    fn merge_adds_and_bounds() {
        let mut list = Vec::new();
        let mut a = PiiRoute::new("chat");
        a.requests = 1;
        a.add_finding("card", "detect", 2);
        assert!(merge(&mut list, &a));
        assert!(merge(&mut list, &a));
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].requests, list[0].findings_total()), (2, 4));
        for i in 0..MAX_PII_ROUTES + 3 {
            merge(&mut list, &PiiRoute::new(&format!("r{i}")));
        }
        assert_eq!(list.len(), MAX_PII_ROUTES);
    }
}
