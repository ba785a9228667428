//! Start-up verification of the data directory.
//!
//! Why this exists: the service used to trust whatever `vigil.db` held. A
//! truncated audit log with its head deleted verified "intact", and a
//! record edited to weight 250, step 99 or the name `../../../escaped` was
//! served and rendered (outside the GitOps directory). Before serving,
//! [`startup`] checks, in order:
//!
//! 1. `PRAGMA integrity_check` (the file itself),
//! 2. the audit chain ([`audit_chain`]): every row hashes to its successor,
//!    the recorded head (`meta.audit_head`) matches the last row, and a head
//!    must exist whenever the log, a retention checkpoint or any canary
//!    does — so deleting the head together with the newest rows is caught,
//! 3. every stored canary against the same rules as the API
//!    ([`crate::spec::CanarySpec::validate`]) plus the state's own bounds
//!    (weight 0–100, step within the steps, rollout ≥ 1).
//!
//! A failure refuses the start with what is wrong and how to recover; the
//! exclusive lock on the data directory (second instance) is taken by
//! [`crate::store::Store::open`] before any of this.

use crate::audit::{self, ChainError, GENESIS};
use crate::store::{CanaryRecord, Store, StoreError};

/// How to recover, appended to every refusal.
pub const RECOVER: &str =
    "Nothing was changed. To recover: restore the data directory from a backup \
(stop the service, replace vigil.db and remove vigil.db-wal / vigil.db-shm), or move it aside and \
start with an empty --data (canaries are declared again from --config or the API); \
`vigil-control audit verify --data DIR` shows the audit chain's state";

/// Verify the audit chain as stored: `Ok(rows)` or where it breaks.
pub fn audit_chain(store: &Store) -> Result<Result<u64, ChainError>, StoreError> {
    let rows = store.audit_rows()?;
    let head = store.audit_head()?;
    let base = store.audit_base()?;
    if head.is_none() {
        let canaries = store.canary_count()?;
        if !rows.is_empty() || base.is_some() || canaries > 0 {
            return Ok(Err(ChainError {
                seq: rows.last().map_or(0, |r| r.seq),
                message: format!(
                    "the recorded chain head (meta.audit_head) is missing although the log has {} rows and {canaries} canaries are stored: the head was deleted (rows may have been deleted from the end too)",
                    rows.len()
                ),
            }));
        }
    }
    let (base_seq, base_hash) = base.unwrap_or((0, GENESIS.to_string()));
    Ok(audit::verify_from(&rows, (base_seq, &base_hash), head))
}

/// Check one stored canary with the API's rules and the state's bounds.
pub fn record(rec: &CanaryRecord) -> Result<(), String> {
    let name = &rec.spec.name;
    rec.spec
        .validate()
        .map_err(|e| format!("stored canary {name:?}: {}: {}", e.field, e.message))?;
    let s = &rec.state;
    if s.weight > 100 {
        return Err(format!(
            "stored canary {name:?}: state.weight {} is not a percentage (0-100)",
            s.weight
        ));
    }
    if s.step >= rec.spec.steps.len() {
        return Err(format!(
            "stored canary {name:?}: state.step {} is beyond its {} steps",
            s.step,
            rec.spec.steps.len()
        ));
    }
    if s.rollout == 0 {
        return Err(format!(
            "stored canary {name:?}: state.rollout must be >= 1"
        ));
    }
    Ok(())
}

/// Everything checked at start; the refusal message on failure.
pub fn startup(store: &Store, records: &[CanaryRecord]) -> Result<(), String> {
    let refuse = |what: String| {
        Err(format!(
            "the data directory failed verification at start: {what}. {RECOVER}"
        ))
    };
    match store.integrity_check() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return refuse(format!("SQLite integrity_check: {e}")),
        Err(e) => return refuse(format!("SQLite integrity_check could not run: {e}")),
    }
    match audit_chain(store) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return refuse(format!(
                "audit chain broken at row {}: {}",
                e.seq, e.message
            ))
        }
        Err(e) => return refuse(format!("audit log unreadable: {e}")),
    }
    for rec in records {
        if let Err(e) = record(rec) {
            return refuse(e);
        }
    }
    Ok(())
}
