//! The audit log's hash chain, as pure functions.
//!
//! Why this exists: every decision, approval, rejection and configuration
//! change is appended to an audit table that must be tamper-evident. Each
//! row carries `hash = sha256(prev_hash || canonical(row))`, where
//! `prev_hash` is the previous row's hash (64 zeros for the first row) and
//! `canonical(row)` is the JSON array `[seq, ts_ms, actor, action, canary,
//! detail, evidence]` (evidence is hashed as the exact string stored). The
//! store also keeps the chain head (row count and last hash) in its meta
//! table, so deleting the newest rows is detected too. [`verify`] recomputes
//! everything and names the first bad row.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Position, 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// When, ms since the epoch.
    pub ts_ms: u64,
    /// Who (`vigil` for automatic decisions, an operator, `config-file`).
    pub actor: String,
    /// What (`decision:rollback`, `approve`, `config:upsert`, ...).
    pub action: String,
    /// Which canary (empty for service-wide events).
    pub canary: String,
    /// Why, in plain English.
    pub detail: String,
    /// The numbers, JSON text.
    pub evidence: String,
    /// Hash of the previous row.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// The canonical bytes of a row's content (everything but the hashes).
pub fn canonical(row: &AuditRow) -> String {
    serde_json::json!([
        row.seq,
        row.ts_ms,
        row.actor,
        row.action,
        row.canary,
        row.detail,
        row.evidence
    ])
    .to_string()
}

/// `sha256(prev_hash || canonical(row))`, lower-case hex.
pub fn row_hash(prev_hash: &str, row: &AuditRow) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical(row).as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Fill `seq`, `prev_hash` and `hash` of a new row appended after `head`
/// (`(last seq, last hash)`, or `(0, GENESIS)` for an empty log).
pub fn seal(mut row: AuditRow, head: (u64, &str)) -> AuditRow {
    row.seq = head.0 + 1;
    row.prev_hash = head.1.to_string();
    row.hash = row_hash(head.1, &row);
    row
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainError {
    /// The first bad row's position (its expected seq).
    pub seq: u64,
    /// What is wrong.
    pub message: String,
}

/// Verify rows in storage order against the recorded head. Returns the
/// number of rows on success.
pub fn verify(rows: &[AuditRow], head: Option<(u64, String)>) -> Result<u64, ChainError> {
    verify_from(rows, (0, GENESIS), head)
}

/// [`verify`] for a log whose first rows were pruned by retention: the
/// stored rows continue the chain after `base` (`(seq, hash)` of the last
/// pruned row). Returns the number of rows stored.
pub fn verify_from(
    rows: &[AuditRow],
    base: (u64, &str),
    head: Option<(u64, String)>,
) -> Result<u64, ChainError> {
    let mut prev = base.1.to_string();
    let mut expected = base.0 + 1;
    for row in rows {
        if row.seq != expected {
            return Err(ChainError {
                seq: expected,
                message: format!(
                    "row {expected} is missing or out of order (found seq {} in its place)",
                    row.seq
                ),
            });
        }
        if row.prev_hash != prev {
            return Err(ChainError {
                seq: expected,
                message: format!(
                    "row {expected}: prev_hash does not match row {}'s hash",
                    expected - 1
                ),
            });
        }
        let h = row_hash(&prev, row);
        if h != row.hash {
            return Err(ChainError {
                seq: expected,
                message: format!("row {expected}: content does not match its hash (altered)"),
            });
        }
        prev = h;
        expected += 1;
    }
    let count = expected - 1;
    if let Some((head_seq, head_hash)) = head {
        if head_seq != count || head_hash != prev {
            return Err(ChainError {
                seq: count + 1,
                message: format!(
                    "the log ends at row {count} but the recorded head is row {head_seq}: rows were deleted from the end (or the head was altered)"
                ),
            });
        }
    }
    Ok(count - base.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRow> {
        let mut rows: Vec<AuditRow> = Vec::new();
        for i in 0..n {
            let head = rows
                .last()
                .map_or((0, GENESIS.to_string()), |r| (r.seq, r.hash.clone()));
            rows.push(seal(
                AuditRow {
                    seq: 0,
                    ts_ms: 1000 + i,
                    actor: "vigil".into(),
                    action: "decision:advance".into(),
                    canary: "c".into(),
                    detail: format!("step {i}"),
                    evidence: "{}".into(),
                    prev_hash: String::new(),
                    hash: String::new(),
                },
                (head.0, &head.1),
            ));
        }
        rows
    }

    fn head(rows: &[AuditRow]) -> Option<(u64, String)> {
        rows.last().map(|r| (r.seq, r.hash.clone()))
    }

    #[test]
    fn intact_chain_verifies() {
        let rows = chain(5);
        assert_eq!(verify(&rows, head(&rows)), Ok(5));
        assert_eq!(verify(&[], None), Ok(0));
    }

    #[test]
    fn tampering_is_found_at_the_first_bad_row() {
        let rows = chain(5);
        let h = head(&rows);
        let mut altered = rows.clone();
        altered[2].detail = "step 99".into();
        assert_eq!(verify(&altered, h.clone()).unwrap_err().seq, 3);
        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted, h.clone()).unwrap_err().seq, 2);
        let mut reordered = rows.clone();
        reordered.swap(3, 4);
        assert_eq!(verify(&reordered, h.clone()).unwrap_err().seq, 4);
        let mut renumbered = rows.clone();
        renumbered.remove(4);
        assert_eq!(verify(&renumbered, h).unwrap_err().seq, 5);
    }
}
