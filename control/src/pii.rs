//! PII findings per route over time, and the findings alert.
//!
//! Why this exists: the filter's PII guard (issue 16) decides in the proxy,
//! but an operator needs to see where prompts carry personal data and be
//! told when a route suddenly does. Reports carry the guard's **counts**
//! (`vigil-wire` `pii`: per route, per type and action, inspected bytes,
//! partial bodies — never a value, a span or an offset; validated against
//! the closed type and action sets before they get here). This module:
//!
//! - sums them between analysis ticks ([`PiiState::ingest`], bounded at
//!   [`MAX_ROUTES`] routes per tick, the rest counted as dropped);
//! - turns each tick's sums into per-minute rows for SQLite
//!   ([`PiiState::stage`]; the store adds them up, table `pii_minutes` and
//!   `pii_findings`, migration 4), served by `GET /v1/pii/findings`
//!   ([`view`]);
//! - raises an alert when a route's findings over the last minute reach the
//!   configured `pii_alert.findings_per_minute` (optionally only some routes
//!   or types), once per crossing, and notes when it clears: each is an
//!   audit row and a webhook event (the service's allow-listed webhooks).
//!
//! Persist before serve, as elsewhere: a tick's rows and alert audit rows
//! are committed together; only then is the alert state installed and the
//! webhook sent. A failed commit gives the counts back to the next tick.

use crate::spec::SpecError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use vigil_wire::pii::{PiiRoute, ACTIONS};

/// Rows are per route per minute of the service's clock.
pub const BUCKET_MS: u64 = 60_000;
/// The alert's sliding window.
pub const WINDOW_MS: u64 = 60_000;
/// Most distinct routes summed between two ticks (and tracked by the alert).
pub const MAX_ROUTES: usize = 1_000;
/// Most minute rows one `GET /v1/pii/findings` returns (newest kept).
pub const MAX_ROWS: usize = 10_000;
/// Default range of `GET /v1/pii/findings`: the last hour.
pub const DEFAULT_RANGE_MS: u64 = 3_600_000;

/// The config file's `pii_alert` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertConfig {
    /// Alert when a route's findings over the last minute reach this (≥ 1).
    pub findings_per_minute: u64,
    /// Only these routes (all when empty).
    pub routes: Vec<String>,
    /// Only findings of these types count (all when empty).
    pub types: Vec<String>,
    /// Webhook URLs for the alert, besides the global `webhooks`
    /// (allow-listed like every webhook).
    pub webhooks: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    findings_per_minute: u64,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    webhooks: Vec<String>,
}

impl AlertConfig {
    /// Parse and validate the `pii_alert` section (fields named `pii_alert.…`).
    pub fn from_json_value(v: Value) -> Result<AlertConfig, SpecError> {
        let raw: RawAlert =
            serde_json::from_value(v).map_err(|e| SpecError::new("pii_alert", e.to_string()))?;
        if raw.findings_per_minute == 0 {
            return Err(SpecError::new(
                "pii_alert.findings_per_minute",
                "must be at least 1",
            ));
        }
        for (i, t) in raw.types.iter().enumerate() {
            if !vigil_wire::pii::known_type(t) {
                return Err(SpecError::new(
                    format!("pii_alert.types[{i}]"),
                    format!(
                        "unknown type {t:?} (one of {})",
                        vigil_wire::pii::type_names()
                    ),
                ));
            }
        }
        for (i, r) in raw.routes.iter().enumerate() {
            if r.is_empty() || r.len() > vigil_wire::report::MAX_NAME_BYTES {
                return Err(SpecError::new(
                    format!("pii_alert.routes[{i}]"),
                    "must be a route name of 1 to 256 bytes",
                ));
            }
        }
        Ok(AlertConfig {
            findings_per_minute: raw.findings_per_minute,
            routes: raw.routes,
            types: raw.types,
            webhooks: raw.webhooks,
        })
    }

    fn watches(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|r| r == route)
    }

    /// The findings of `r` this alert counts, by type.
    fn counted(&self, r: &PiiRoute) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for c in &r.findings {
            if self.types.is_empty() || self.types.contains(&c.kind) {
                let e = out.entry(c.kind.clone()).or_default();
                *e = e.saturating_add(c.count);
            }
        }
        out
    }
}

/// One route's counts in one minute (as stored and served).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiiRow {
    /// Start of the minute, service clock ms.
    pub minute_ms: u64,
    /// The counts (its `route` names the route).
    pub counts: PiiRoute,
}

/// An alert raised or cleared at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    /// Route.
    pub route: String,
    /// True: the threshold was reached; false: back below it.
    pub raised: bool,
    /// Findings counted over the last minute.
    pub findings: u64,
    /// Of which, by type.
    pub by_type: BTreeMap<String, u64>,
    /// The threshold.
    pub threshold: u64,
    /// When (service clock ms).
    pub at_ms: u64,
}

impl AlertEvent {
    fn breakdown(&self) -> String {
        self.by_type
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Plain English, with the numbers (types and counts, never values).
    pub fn explanation(&self) -> String {
        if self.raised {
            format!(
                "PII alert on route {}: {} findings in the last {} s reach the threshold of {} per minute ({})",
                self.route,
                self.findings,
                WINDOW_MS / 1000,
                self.threshold,
                self.breakdown()
            )
        } else {
            format!(
                "PII alert on route {} cleared: {} findings in the last {} s, below the threshold of {} per minute",
                self.route,
                self.findings,
                WINDOW_MS / 1000,
                self.threshold
            )
        }
    }

    /// The audit entry.
    pub fn audit(&self) -> crate::store::AuditEntry {
        crate::store::AuditEntry {
            ts_ms: self.at_ms,
            actor: "vigil-control".into(),
            action: if self.raised {
                "pii:alert".into()
            } else {
                "pii:alert_cleared".into()
            },
            canary: String::new(),
            detail: self.explanation(),
            evidence: self.evidence().to_string(),
        }
    }

    fn evidence(&self) -> Value {
        json!({"route": self.route, "findings": self.findings, "by_type": self.by_type,
               "threshold_per_minute": self.threshold, "window_s": WINDOW_MS / 1000})
    }

    /// The webhook payload: a Slack-compatible `text` plus the fields.
    pub fn payload(&self) -> Value {
        let mut v = self.evidence();
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "text".into(),
                json!(format!("[vigil] {}", self.explanation())),
            );
            o.insert(
                "kind".into(),
                json!(if self.raised {
                    "pii_alert"
                } else {
                    "pii_alert_cleared"
                }),
            );
            o.insert("at_ms".into(), json!(self.at_ms));
        }
        v
    }
}

/// What a tick writes and announces.
#[derive(Debug, Default)]
pub struct Staged {
    /// Rows to add to the store.
    pub rows: Vec<PiiRow>,
    /// Alerts raised or cleared.
    pub events: Vec<AlertEvent>,
    /// The counts taken (given back when the commit fails).
    taken: Vec<PiiRoute>,
    /// Per route, what enters the alert window once committed.
    window_adds: Vec<(String, BTreeMap<String, u64>)>,
    at_ms: u64,
}

impl Staged {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.events.is_empty() && self.window_adds.is_empty()
    }
}

/// Counted findings by type.
type ByType = BTreeMap<String, u64>;

#[derive(Debug, Default)]
struct Inner {
    pending: Vec<PiiRoute>,
    dropped: u64,
    /// Per watched route: (tick ms, counted findings by type), last minute.
    window: HashMap<String, VecDeque<(u64, ByType)>>,
    alerting: BTreeSet<String>,
    alert: Option<AlertConfig>,
}

impl Inner {
    fn window_sum(&self, route: &str, now_ms: u64) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        if let Some(q) = self.window.get(route) {
            for (at, by) in q {
                if now_ms.saturating_sub(*at) < WINDOW_MS {
                    for (k, n) in by {
                        let e = out.entry(k.clone()).or_default();
                        *e = e.saturating_add(*n);
                    }
                }
            }
        }
        out
    }
}

/// The live PII state of the service.
#[derive(Debug, Default)]
pub struct PiiState {
    inner: Mutex<Inner>,
}

impl PiiState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Set (or remove) the alert.
    pub fn set_alert(&self, alert: Option<AlertConfig>) {
        self.lock().alert = alert;
    }

    /// The alert in force.
    pub fn alert(&self) -> Option<AlertConfig> {
        self.lock().alert.clone()
    }

    /// Routes alerting now.
    pub fn alerting(&self) -> Vec<String> {
        self.lock().alerting.iter().cloned().collect()
    }

    /// Route counts dropped over [`MAX_ROUTES`] (requests).
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Add a validated report's `pii`.
    pub fn ingest(&self, routes: &[PiiRoute]) {
        if routes.is_empty() {
            return;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        for r in routes {
            let full = inner.pending.len() >= MAX_ROUTES;
            match inner.pending.iter_mut().find(|p| p.route == r.route) {
                Some(p) => p.add(r),
                None if !full => inner.pending.push(r.clone()),
                None => inner.dropped = inner.dropped.saturating_add(r.requests),
            }
        }
    }

    /// Take the counts since the last tick as rows of the minute of
    /// `now_ms`, and decide which alerts are raised or cleared. Nothing is
    /// installed until [`PiiState::install`].
    pub fn stage(&self, now_ms: u64) -> Staged {
        let mut inner = self.lock();
        let taken = std::mem::take(&mut inner.pending);
        let minute_ms = now_ms - now_ms % BUCKET_MS;
        let rows = taken
            .iter()
            .map(|r| PiiRow {
                minute_ms,
                counts: r.clone(),
            })
            .collect();
        let mut staged = Staged {
            rows,
            taken,
            at_ms: now_ms,
            ..Staged::default()
        };
        let Some(alert) = inner.alert.clone() else {
            return staged;
        };
        let mut routes: BTreeSet<String> = inner.alerting.clone();
        routes.extend(inner.window.keys().cloned());
        for r in &staged.taken {
            if alert.watches(&r.route) {
                let counted = alert.counted(r);
                if !counted.is_empty() {
                    staged.window_adds.push((r.route.clone(), counted));
                }
                routes.insert(r.route.clone());
            }
        }
        for route in routes {
            let mut by_type = inner.window_sum(&route, now_ms);
            for (_, add) in staged.window_adds.iter().filter(|(r, _)| *r == route) {
                for (k, n) in add {
                    let e = by_type.entry(k.clone()).or_default();
                    *e = e.saturating_add(*n);
                }
            }
            let findings = by_type.values().fold(0u64, |a, n| a.saturating_add(*n));
            let over = findings >= alert.findings_per_minute;
            if over != inner.alerting.contains(&route) {
                staged.events.push(AlertEvent {
                    route,
                    raised: over,
                    findings,
                    by_type,
                    threshold: alert.findings_per_minute,
                    at_ms: now_ms,
                });
            }
        }
        staged
    }

    /// The stage was committed: install its window and alert state.
    pub fn install(&self, staged: &Staged) {
        let mut inner = self.lock();
        let now = staged.at_ms;
        for (route, add) in &staged.window_adds {
            if inner.window.len() >= MAX_ROUTES && !inner.window.contains_key(route) {
                continue;
            }
            inner
                .window
                .entry(route.clone())
                .or_default()
                .push_back((now, add.clone()));
        }
        inner.window.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(at, _)| now.saturating_sub(*at) >= WINDOW_MS)
            {
                q.pop_front();
            }
            !q.is_empty()
        });
        for e in &staged.events {
            if e.raised {
                inner.alerting.insert(e.route.clone());
            } else {
                inner.alerting.remove(&e.route);
            }
        }
    }

    /// The commit failed: the counts go back to the next tick.
    pub fn restore(&self, staged: Staged) {
        let taken = staged.taken;
        let mut inner = self.lock();
        let later = std::mem::replace(&mut inner.pending, taken);
        drop(inner);
        self.ingest(&later);
    }
}

/// The `GET /v1/pii/findings` document from stored rows (sorted by route,
/// then minute).
pub fn view(
    rows: &[PiiRow],
    since_ms: u64,
    until_ms: u64,
    truncated: bool,
    alert: Option<&AlertConfig>,
    alerting: &[String],
) -> Value {
    let mut routes: Vec<Value> = Vec::new();
    let mut i = 0;
    while let Some(first) = rows.get(i) {
        let route = &first.counts.route;
        let mut total = PiiRoute::new(route);
        let mut buckets = Vec::new();
        while let Some(r) = rows.get(i).filter(|r| r.counts.route == *route) {
            total.add(&r.counts);
            buckets.push(json!({
                "start_ms": r.minute_ms,
                "requests": r.counts.requests,
                "inspected_bytes": r.counts.inspected_bytes,
                "partial": r.counts.partial,
                "blocked": r.counts.blocked,
                "redacted": r.counts.redacted,
                "findings": r.counts.findings_total(),
                "by_type": by_type(&r.counts),
            }));
            i += 1;
        }
        routes.push(json!({
            "route": route,
            "alerting": alerting.contains(route),
            "totals": {
                "requests": total.requests,
                "inspected_bytes": total.inspected_bytes,
                "partial": total.partial,
                "blocked": total.blocked,
                "redacted": total.redacted,
                "findings": total.findings_total(),
                "by_type": by_type(&total),
            },
            "buckets": buckets,
        }));
    }
    json!({
        "bucket_ms": BUCKET_MS,
        "since_ms": since_ms,
        "until_ms": until_ms,
        "truncated": truncated,
        "alert": alert.map(|a| json!({
            "findings_per_minute": a.findings_per_minute,
            "window_s": WINDOW_MS / 1000,
            "routes": a.routes,
            "types": a.types,
            "alerting": alerting,
        })),
        "routes": routes,
    })
}

/// `{type: {action: count}}` of one entry.
fn by_type(r: &PiiRoute) -> Value {
    let mut out: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for c in &r.findings {
        let action = ACTIONS
            .iter()
            .find(|a| **a == c.action)
            .copied()
            .unwrap_or("detect");
        *out.entry(c.kind.as_str())
            .or_default()
            .entry(action)
            .or_default() += c.count;
    }
    json!(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn counts(route: &str, kind: &str, n: u64) -> PiiRoute {
        let mut r = PiiRoute::new(route);
        r.requests = n;
        r.inspected_bytes = 1000 * n;
        r.add_finding(kind, "detect", n);
        r
    }

    fn alert(n: u64) -> AlertConfig {
        AlertConfig::from_json_value(json!({"findings_per_minute": n})).unwrap()
    }

    #[test]
    fn config_is_validated_naming_the_field() {
        let err = |v: Value| AlertConfig::from_json_value(v).unwrap_err().field;
        assert_eq!(
            err(json!({"findings_per_minute": 0})),
            "pii_alert.findings_per_minute"
        );
        assert_eq!(
            err(json!({"findings_per_minute": 3, "types": ["card", "passport"]})),
            "pii_alert.types[1]"
        );
        assert_eq!(err(json!({"findings_per_minute": 3, "x": 1})), "pii_alert");
        assert_eq!(
            err(json!({"findings_per_minute": 3, "routes": [""]})),
            "pii_alert.routes[0]"
        );
    }

    #[test]
    fn alert_fires_once_per_crossing_and_clears() {
        let s = PiiState::default();
        s.set_alert(Some(alert(5)));
        let t0 = 1_700_000_000_000u64;
        // 2 findings a second: crosses 5 at the third tick.
        let mut raised_at = None;
        for i in 0..10u64 {
            s.ingest(&[counts("chat", "card", 2)]);
            let st = s.stage(t0 + i * 1000);
            s.install(&st);
            for e in &st.events {
                assert!(e.raised, "{e:?}");
                assert!(raised_at.is_none(), "fires once");
                raised_at = Some((i, e.findings));
            }
        }
        assert_eq!(raised_at, Some((2, 6)));
        assert_eq!(s.alerting(), vec!["chat".to_string()]);
        // Quiet: clears once the minute has passed.
        let mut cleared = 0;
        for i in 10..80u64 {
            let st = s.stage(t0 + i * 1000);
            s.install(&st);
            cleared += st.events.iter().filter(|e| !e.raised).count();
        }
        assert_eq!(cleared, 1);
        assert!(s.alerting().is_empty());
    }

    #[test]
    fn types_and_routes_filter_and_a_failed_commit_gives_counts_back() {
        let s = PiiState::default();
        s.set_alert(Some(
            AlertConfig::from_json_value(
                json!({"findings_per_minute": 3, "routes": ["chat"], "types": ["card"]}),
            )
            .unwrap(),
        ));
        s.ingest(&[counts("chat", "email", 10), counts("other", "card", 10)]);
        let st = s.stage(1000);
        assert!(st.events.is_empty(), "{:?}", st.events);
        assert_eq!(st.rows.len(), 2);
        s.restore(st);
        s.ingest(&[counts("chat", "card", 3)]);
        let st = s.stage(2000);
        let chat = st.rows.iter().find(|r| r.counts.route == "chat").unwrap();
        assert_eq!(chat.counts.findings_total(), 13, "restored + new");
        assert_eq!(st.events.len(), 1);
        assert_eq!(st.events[0].by_type.get("card"), Some(&3));
        let text = st.events[0].payload().to_string();
        assert!(text.contains("\"route\":\"chat\"") && text.contains("pii_alert"));
    }

    #[test]
    fn view_groups_by_route() {
        let rows = vec![
            PiiRow {
                minute_ms: 0,
                counts: counts("a", "card", 1),
            },
            PiiRow {
                minute_ms: 60_000,
                counts: counts("a", "card", 2),
            },
            PiiRow {
                minute_ms: 0,
                counts: counts("b", "ip", 4),
            },
        ];
        let v = view(&rows, 0, 120_000, false, None, &[]);
        assert_eq!(v["routes"][0]["totals"]["findings"], 3);
        assert_eq!(v["routes"][0]["buckets"].as_array().unwrap().len(), 2);
        assert_eq!(v["routes"][1]["by_type"], Value::Null);
        assert_eq!(v["routes"][1]["totals"]["by_type"]["ip"]["detect"], 4);
    }
}
