//! # vigil-control
//!
//! The companion control service of Vigil. The filters in the Envoy
//! sidecars judge every series each tick and report to it; it merges the
//! reports of every sidecar per canary, runs the canary analysis with the
//! scorer's statistics (`vigil-scorer`), walks each rollout through its
//! steps (holding on thin evidence, rolling back at once on a critical
//! verdict or an SLO breach, waiting at approval gates), serves the weights
//! back to the filters, and keeps every decision explainable (plain English
//! with the numbers), persisted (SQLite), auditable (a hash-chained log) and
//! reviewable (GitOps YAML for Istio and Kong Mesh, webhooks).
//!
//! Pure logic — [`spec`], [`report`], [`evidence`], [`analysis`],
//! [`machine`], [`audit`], [`render`], [`metrics`] — is separate from the
//! I/O glue — [`store`] (SQLite, migrations, the data-dir lock), [`verify`]
//! (start-up checks), [`audit_page`] (bounded, incrementally verified
//! audit pages), [`retention`] (export + prune), [`service`] (locks,
//! ticks, persist before serve), [`http`] (axum handlers), [`ingest_pool`]
//! (big reports parsed and merged at low CPU priority), [`edge`]
//! (connections, timeouts, shutdown, JSON for hyper's errors), [`egress`]
//! (webhook allowlist, redaction), [`webhook`] and [`client`] (hyper +
//! rustls), [`cli`] and [`bench`]; [`text`] has panic-free string helpers;
//! [`pii`] keeps the PII guard's per-route counts and the findings alert;
//! [`inspect`] resolves plugin configurations against Envoy config dumps
//! with the filter's own code (`vigil-filter-core`). Observed traffic:
//! [`graph`] (the dependency map and its events) and [`policy`]
//! (least-privilege drafts) and [`advice`] (resilience advice) are pure; [`traffic_http`] serves them.

pub mod advice;
pub mod advice_in_force;
pub mod analysis;
pub mod audit;
pub mod audit_page;
pub mod bench;
pub mod cli;
pub mod client;
pub mod credentials;
pub mod dashboard;
pub mod edge;
pub mod egress;
pub mod evidence;
pub mod graph;
pub mod graph_svg;
pub mod hooks;
pub mod http;
pub mod ingest_pool;
pub mod inspect;
pub mod log;
pub mod machine;
pub mod metrics;
pub mod pii;
pub mod plausibility;
pub mod policy;
pub mod policy_diff;
pub mod policy_flow;
pub mod prometheus;
pub mod render;
pub mod replay;
pub mod report;
pub mod retention;
pub mod service;
pub mod spec;
pub mod store;
pub mod text;
pub mod traffic_http;
pub mod verify;
pub mod webhook;
