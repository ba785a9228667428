//! `GET /v1/audit`: bounded pages of the audit log and the chain's status,
//! verified incrementally.
//!
//! Why this exists: the dashboard polls the audit log every few seconds and
//! the log grows with every decision; reading and re-hashing the whole chain
//! on each request would make the endpoint's cost grow without bound (and
//! hold the store while it does). So a request reads at most
//! [`MAX_LIMIT`] rows (`?limit=N&before=SEQ`, newest first, `next_before`
//! for the next page), and the chain's status comes from a cache: the row
//! the chain was last verified up to (`verified_through`, first the head
//! verified at start, [`crate::verify`]). Each request verifies only the
//! rows appended since, against the recorded head, and checks that the
//! verified row is still stored with the same hash (a changed or deleted
//! anchor row reads as broken). Older rows are not re-hashed on each
//! request: start-up and the offline `vigil-control audit verify` check the
//! whole chain.

use crate::audit::{self, AuditRow, ChainError, GENESIS};
use crate::store::{Store, StoreError};
use serde_json::{json, Value};
use std::sync::Mutex;

/// Rows per page without `limit`.
pub const DEFAULT_LIMIT: usize = 50;
/// Most rows per page.
pub const MAX_LIMIT: usize = 500;

/// A page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// Rows wanted (1..=[`MAX_LIMIT`]).
    pub limit: usize,
    /// Only rows with `seq` below this (the previous page's `next_before`).
    pub before: Option<u64>,
}

impl Default for PageQuery {
    fn default() -> Self {
        PageQuery {
            limit: DEFAULT_LIMIT,
            before: None,
        }
    }
}

/// A refused query: `(field, message)`.
pub type QueryError = (&'static str, String);

/// Parse the query string of `GET /v1/audit` (`limit`, `before`; anything
/// else is refused, naming the parameter).
pub fn parse_query(raw: Option<&str>) -> Result<PageQuery, QueryError> {
    let mut q = PageQuery::default();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                q.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        (
                            "limit",
                            format!("limit must be an integer in 1..={MAX_LIMIT}"),
                        )
                    })?;
            }
            "before" => {
                q.before = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            (
                                "before",
                                "before must be a positive integer (a row's seq)".to_string(),
                            )
                        })?,
                );
            }
            _ => {
                return Err((
                    "query",
                    format!(
                        "unknown query parameter {:?} (known: limit, before)",
                        crate::text::clip(key, 64)
                    ),
                ))
            }
        }
    }
    Ok(q)
}

/// The row the chain is verified up to: `(seq, hash)`.
#[derive(Debug, Default)]
pub struct Verified(Mutex<Option<(u64, String)>>);

impl Verified {
    /// Verified up to `head` (the head checked at start), or nothing yet.
    pub fn new(head: Option<(u64, String)>) -> Self {
        Verified(Mutex::new(head))
    }

    fn get(&self) -> Option<(u64, String)> {
        self.0
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set(&self, v: (u64, String)) {
        match self.0.lock() {
            Ok(mut g) => *g = Some(v),
            Err(p) => *p.into_inner() = Some(v),
        }
    }
}

/// The chain's status, verifying only the rows after the last verified one.
/// `Ok(Ok((rows stored, verified through)))` or where it breaks.
pub fn chain_status(
    store: &Store,
    verified: &Verified,
) -> Result<Result<(u64, u64), ChainError>, StoreError> {
    let head = store.audit_head()?;
    let base = store.audit_base()?.unwrap_or((0, GENESIS.to_string()));
    let from = match verified.get() {
        // The anchor must still be there, unchanged; a pruned one (at or
        // below the retention checkpoint) restarts from the checkpoint.
        Some((seq, hash)) if seq > base.0 => match store.audit_row(seq)? {
            Some(row) if row.hash == hash => (seq, hash),
            _ => {
                return Ok(Err(ChainError {
                    seq,
                    message: format!("row {seq}, verified earlier, was changed or deleted since"),
                }))
            }
        },
        _ => base.clone(),
    };
    let rows: Vec<AuditRow> = store.audit_rows_after(from.0)?;
    if head.is_none() && (!rows.is_empty() || from.0 > 0) {
        return Ok(Err(ChainError {
            seq: from.0 + 1,
            message: "the recorded chain head (meta.audit_head) is missing".to_string(),
        }));
    }
    let head_seq = head.as_ref().map_or(from.0, |h| h.0);
    match audit::verify_from(&rows, (from.0, &from.1), head) {
        Ok(_) => {
            let last = rows.last().map_or(from, |r| (r.seq, r.hash.clone()));
            let through = last.0;
            verified.set(last);
            Ok(Ok((head_seq.saturating_sub(base.0), through)))
        }
        Err(e) => Ok(Err(e)),
    }
}

/// One page of the log with the chain's status (the JSON of `GET /v1/audit`).
pub fn page(store: &Store, verified: &Verified, q: PageQuery) -> Result<Value, StoreError> {
    let chain = match chain_status(store, verified)? {
        Ok((rows, through)) => {
            json!({"intact": true, "rows": rows, "verified_through": through})
        }
        Err(e) => json!({"intact": false, "broken_at": e.seq, "error": e.message}),
    };
    let rows = store.audit_page(q.before, q.limit)?;
    let next_before = match rows.last() {
        Some(r) if rows.len() == q.limit && r.seq > 1 => Some(r.seq),
        _ => None,
    };
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"seq": r.seq, "ts_ms": r.ts_ms, "actor": r.actor, "action": r.action,
                   "canary": r.canary, "detail": r.detail, "hash": r.hash})
        })
        .collect();
    Ok(json!({"chain": chain, "rows": rows, "next_before": next_before}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEntry, Batch};

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            ts_ms: 1000 + i,
            actor: "alice".into(),
            action: "approve".into(),
            canary: "c".into(),
            detail: format!("row {i}"),
            evidence: "{}".into(),
        }
    }

    fn append(store: &mut Store, from: u64, n: u64) {
        let audit = (from..from + n).map(entry).collect();
        store
            .apply(&Batch {
                audit,
                ..Batch::default()
            })
            .unwrap();
    }

    fn sql(dir: &std::path::Path, q: &str) {
        let c = rusqlite::Connection::open(dir.join("vigil.db")).unwrap();
        c.execute_batch(q).unwrap();
    }

    #[test]
    fn pages_are_bounded_and_the_chain_is_verified_from_the_last_verified_row() {
        let dir = std::env::temp_dir().join(format!(
            "vigil-audit-page-{}-{}",
            std::process::id(),
            crate::log::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir).unwrap();
        append(&mut store, 1, 120);
        let verified = Verified::new(None);
        assert_eq!(chain_status(&store, &verified).unwrap(), Ok((120, 120)));
        // Pages: newest first, bounded, with a cursor to the next.
        let p = page(
            &store,
            &verified,
            PageQuery {
                limit: 50,
                before: None,
            },
        )
        .unwrap();
        let seqs: Vec<u64> = p["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs.len(), 50);
        assert_eq!((seqs[0], seqs[49]), (120, 71));
        assert_eq!(p["next_before"], 71);
        let p = page(
            &store,
            &verified,
            PageQuery {
                limit: 50,
                before: Some(21),
            },
        )
        .unwrap();
        assert_eq!(p["rows"].as_array().unwrap().len(), 20);
        assert!(p["next_before"].is_null());
        assert_eq!(p["chain"]["intact"], true);

        // Rows appended later are verified on the next request (only they
        // are read); one altered before it is found, named.
        append(&mut store, 121, 5);
        sql(&dir, "UPDATE audit SET detail = 'forged' WHERE seq = 123");
        let e = chain_status(&store, &verified).unwrap().unwrap_err();
        assert_eq!(e.seq, 123, "{e:?}");
        // The cache did not move past the break.
        assert_eq!(verified.get().map(|v| v.0), Some(120));
        sql(&dir, "UPDATE audit SET detail = 'row 123' WHERE seq = 123");
        assert_eq!(chain_status(&store, &verified).unwrap(), Ok((125, 125)));

        // The verified anchor row changed or deleted: broken.
        sql(&dir, "UPDATE audit SET hash = 'x' WHERE seq = 125");
        let e = chain_status(&store, &verified).unwrap().unwrap_err();
        assert_eq!(e.seq, 125);
        assert!(e.message.contains("verified earlier"), "{e:?}");
        sql(&dir, "DELETE FROM audit WHERE seq = 125");
        assert!(chain_status(&store, &verified).unwrap().is_err());

        // A fresh cache on a truncated log finds the truncation (head check).
        let fresh = Verified::new(None);
        let e = chain_status(&store, &fresh).unwrap().unwrap_err();
        assert!(e.message.contains("deleted from the end"), "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn queries_are_bounded_and_named() {
        assert_eq!(parse_query(None), Ok(PageQuery::default()));
        assert_eq!(
            parse_query(Some("limit=5&before=40")),
            Ok(PageQuery {
                limit: 5,
                before: Some(40)
            })
        );
        assert_eq!(parse_query(Some("limit=0")).unwrap_err().0, "limit");
        assert_eq!(parse_query(Some("limit=501")).unwrap_err().0, "limit");
        assert_eq!(parse_query(Some("limit=x")).unwrap_err().0, "limit");
        assert_eq!(parse_query(Some("before=-1")).unwrap_err().0, "before");
        assert_eq!(parse_query(Some("before=0")).unwrap_err().0, "before");
        assert_eq!(parse_query(Some("offset=3")).unwrap_err().0, "query");
    }
}
