//! Retention: export, then prune, old decisions and audit rows — the chain
//! stays verifiable.
//!
//! Why this exists: decisions and audit rows are only ever appended, so the
//! database grows without bound. `vigil-control retention --data DIR
//! --older-than-days N --export FILE` (offline: it takes the data
//! directory's lock, so it is refused while the service runs):
//!
//! 1. verifies the data directory as the service does at start,
//! 2. writes every audit row of the oldest contiguous run older than the
//!    cutoff and every older decision to `FILE` (JSON lines, fsynced, then
//!    renamed into place) with a final `checkpoint` line,
//! 3. only then deletes them in one transaction and records the last pruned
//!    row's `(seq, hash)` as `meta.audit_base`: the stored chain continues
//!    from that checkpoint, so [`crate::audit::verify_from`] still checks
//!    every remaining row, and the export plus the database verify as one
//!    chain from the genesis.

use crate::store::{Store, StoreError};
use rusqlite::params;
use serde_json::json;
use std::io::Write;
use std::path::Path;

/// What a retention run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Audit rows exported and deleted.
    pub audit_rows: u64,
    /// Decisions exported and deleted.
    pub decisions: u64,
    /// The checkpoint the stored chain now starts after.
    pub base: Option<(u64, String)>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Export and prune everything older than `cutoff_ms` (see the module docs).
pub fn run(data: &Path, cutoff_ms: u64, export: &Path) -> Result<Pruned, StoreError> {
    let mut store = Store::open(data)?;
    let records = store.load_canaries()?;
    crate::verify::startup(&store, &records).map_err(StoreError)?;
    let rows = store.audit_rows()?;
    // The oldest contiguous run of rows older than the cutoff.
    let prune: Vec<_> = rows.iter().take_while(|r| r.ts_ms < cutoff_ms).collect();
    let base = prune.last().map(|r| (r.seq, r.hash.clone()));
    let conn = store.conn_mut();
    let decisions: Vec<serde_json::Value> = {
        let mut stmt = conn.prepare(
            "SELECT id, canary, at_ms, kind, actor, from_phase, to_phase, weight_before,
                    weight_after, step, explanation, evidence
             FROM decisions WHERE at_ms < ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![to_i64(cutoff_ms)], |r| {
            Ok(json!({
                "type": "decision", "id": r.get::<_, i64>(0)?, "canary": r.get::<_, String>(1)?,
                "at_ms": r.get::<_, i64>(2)?, "kind": r.get::<_, String>(3)?,
                "actor": r.get::<_, String>(4)?, "from": r.get::<_, String>(5)?,
                "to": r.get::<_, String>(6)?, "weight_before": r.get::<_, i64>(7)?,
                "weight_after": r.get::<_, i64>(8)?, "step": r.get::<_, i64>(9)?,
                "explanation": r.get::<_, String>(10)?, "evidence": r.get::<_, String>(11)?,
            }))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    // 1. Export, durably, before anything is deleted.
    let tmp = export.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for r in &prune {
            let line = json!({
                "type": "audit", "seq": r.seq, "ts_ms": r.ts_ms, "actor": r.actor,
                "action": r.action, "canary": r.canary, "detail": r.detail,
                "evidence": r.evidence, "prev_hash": r.prev_hash, "hash": r.hash,
            });
            writeln!(f, "{line}")?;
        }
        for d in &decisions {
            writeln!(f, "{d}")?;
        }
        let checkpoint = base
            .as_ref()
            .map(|(seq, hash)| json!({"seq": seq, "hash": hash}));
        writeln!(
            f,
            "{}",
            json!({"type": "checkpoint", "cutoff_ms": cutoff_ms, "audit_base": checkpoint})
        )?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, export)
    };
    write().map_err(|e| {
        StoreError(format!(
            "export to {}: {e}; nothing was pruned",
            export.display()
        ))
    })?;
    // 2. Prune in one transaction, recording the checkpoint.
    let tx = conn.transaction()?;
    if let Some((seq, hash)) = &base {
        tx.execute("DELETE FROM audit WHERE seq <= ?1", params![to_i64(*seq)])?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('audit_base', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [format!("{seq}:{hash}")],
        )?;
    }
    let deleted = tx.execute(
        "DELETE FROM decisions WHERE at_ms < ?1",
        params![to_i64(cutoff_ms)],
    )?;
    // PII counts by age too (counts only; not exported).
    tx.execute(
        "DELETE FROM pii_minutes WHERE minute_ms < ?1",
        params![to_i64(cutoff_ms)],
    )?;
    tx.execute(
        "DELETE FROM pii_findings WHERE minute_ms < ?1",
        params![to_i64(cutoff_ms)],
    )?;
    tx.commit()?;
    Ok(Pruned {
        audit_rows: prune.len() as u64,
        decisions: deleted as u64,
        base,
    })
}
