//! # vigil-traffic
//!
//! What the filter learns about who calls whom, without proxy-wasm:
//!
//! - [`template`]: a request path folded to a bounded, PII-free template
//!   (`/v1/orders/123?x=1` → `/v1/orders/{id}`);
//! - [`aggregate`]: the per-worker, per-tick edge aggregator (source
//!   identity × destination service/version × method × template → counts,
//!   error classes, latency histogram) with configurable cardinality caps
//!   whose overflow is counted, and the bounded merge the workers use in
//!   shared data; its output is the report's [`vigil_wire::edges::Edge`]s;
//! - [`stats`]: one edge's counts and their merge, shared with the control
//!   service's dependency map.

pub mod aggregate;
pub mod stats;
pub mod template;
