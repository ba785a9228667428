//! Vigil's wire documents, defined once.
//!
//! Two documents cross a process boundary: the filter's **report**
//! ([`report`], `POST /v1/reports`) and the control service's **routing**
//! answer ([`routing`], `GET /v1/routing`). The filter encodes reports and
//! parses routing answers with this crate; the control service parses
//! reports and encodes routing answers with it; the bench and the tests
//! build their documents with it too, so there is exactly one definition of
//! each field, its bounds and its meaning.
//!
//! Versioning: every document carries `version`. Readers refuse versions
//! they do not know and ignore fields they do not know, so a field can be
//! added (with a default) without a version bump; removing or changing the
//! meaning of a field needs a new version.

pub mod edges;
pub mod pii;
pub mod report;
pub mod routing;
pub mod text;
