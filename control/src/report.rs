//! The filters' reports (`POST /v1/reports`): the document is defined once,
//! in `vigil-wire` (shared with the filter, the bench and the tests); this
//! module re-exports it for the service.
//!
//! Why a re-export: the HTTP layer and the service name `report::parse`,
//! `report::Report` and the bounds; the definition lives in one place.

pub use vigil_wire::report::*;
