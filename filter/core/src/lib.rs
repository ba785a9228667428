//! # vigil-filter-core
//!
//! Everything the Vigil Envoy filter decides, without the proxy: this crate
//! has no `proxy-wasm` dependency, so all of it is tested on the host. The
//! `vigil-filter` crate is thin glue that implements two small host traits
//! ([`shared::SharedStore`] over Envoy shared data, [`metrics::MetricSink`]
//! over Envoy stats) and forwards callbacks to an [`engine::Worker`].
//!
//! Modules, one concern each:
//! - [`config`]: plugin configuration, validated at plugin start;
//! - [`canary`]: the canary declarations in it, resolved to mesh cluster names;
//! - [`naming`]: Envoy cluster names each mesh derives from a canary's service and versions;
//! - [`resolve`]: which routes and clusters of an Envoy config dump each canary resolves to;
//! - [`request`]: decoding Envoy's per-request properties;
//! - [`request_path`]: which hostcalls each request makes, each value read once and only when needed;
//! - [`outcome`]: each request's outcome class (gRPC status, cut streams,
//!   throttling, clients gone);
//! - [`local`]: the worker-local window the request path writes to;
//! - [`codec`]: compact, versioned, panic-free encoding of shared records;
//! - [`shared`]: the shared-data trait and its bounded CAS update loop;
//! - [`keys`]: shared-data key names, namespaced by configuration identity and format;
//! - [`registry`]: series names ↔ ids, bounded by `max_series`, idle series evicted;
//! - [`lifecycle`]: which series the lease holder evicts as idle, which ids were reused;
//! - [`lease`]: which worker scores this period;
//! - [`verdicts`]: the published verdict table;
//! - [`steering`]: canary matching and steering hysteresis;
//! - [`control`]: reports to and routing weights from the control service;
//! - [`metrics`]: enriched metric names and the host metric cache;
//! - [`engine`]: one worker's request path and tick, wiring the above;
//! - [`pii_config`]: the `pii` section (per-route detectors, actions, buffer bound);
//! - [`pii_guard`]: request-body inspection for the PII guard (detect / redact / block);
//! - [`edges`]: observed edges (caller identity × destination × method × path template).
//! - [`pii_report`]: the guard's counts, merged across workers into the control-service report.

pub mod canary;
pub mod checkpoints;
pub mod codec;
pub mod config;
pub mod control;
pub mod dirty;
pub mod edges;
pub mod engine;
pub mod keys;
pub mod lease;
pub mod lifecycle;
pub mod local;
pub mod metrics;
pub mod naming;
pub mod outcome;
pub mod pii_config;
pub mod pii_guard;
pub mod pii_metrics;
pub mod pii_report;
pub mod registry;
pub mod request;
pub mod request_path;
pub mod resolve;
pub mod shared;
pub mod steering;
pub mod verdicts;
