//! SQLite persistence: everything the service has decided.
//!
//! Why this exists: a restart (or a `kill -9`) must not lose a rollout's
//! phase, step, step start, pending approval, decisions, audit chain or the
//! routing version, and there must be nothing to install: one SQLite file,
//! `DATA/vigil.db`, in WAL mode. Every state change is written in one
//! transaction together with its decision rows, its audit rows (sealed into
//! the hash chain, see [`crate::audit`]) and the routing version, so the
//! file is always a consistent snapshot. Reports themselves are not stored:
//! only the per-step evidence sum of each canary (refreshed every analysis
//! tick) and each sidecar's last sequence number (refreshed every tick, so
//! after a crash up to one tick of replayed reports could be accepted).

use crate::audit::{self, AuditRow, GENESIS};
use crate::evidence::PairTally;
use crate::machine::{CanaryState, Decision};
use crate::spec::CanarySpec;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;
use std::fmt;
use std::path::Path;

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(format!("corrupt JSON: {e}"))
    }
}

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "vigil.db";

/// File name of the lock held by the one service using a data directory.
pub const LOCK_FILE: &str = "vigil.lock";

/// Version 1: the original schema (written with `IF NOT EXISTS`, so a
/// database made before versioning, at `user_version` 0, migrates as is).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS canaries (
  name TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL,
  evidence TEXT NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
  id INTEGER PRIMARY KEY AUTOINCREMENT, canary TEXT NOT NULL, at_ms INTEGER NOT NULL,
  kind TEXT NOT NULL, actor TEXT NOT NULL, from_phase TEXT NOT NULL, to_phase TEXT NOT NULL,
  weight_before INTEGER NOT NULL, weight_after INTEGER NOT NULL, step INTEGER NOT NULL,
  explanation TEXT NOT NULL, evidence TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_canary ON decisions (canary, id);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  canary TEXT NOT NULL, detail TEXT NOT NULL, evidence TEXT NOT NULL,
  prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sidecars (
  sidecar TEXT PRIMARY KEY, seq INTEGER NOT NULL, sent_at_ms INTEGER NOT NULL);
";

/// What the service remembers of a sidecar (table `sidecar_state`; the
/// older `sidecars` table, without incarnations, is no longer read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarRow {
    /// Sidecar identity.
    pub sidecar: String,
    /// Its `seq` incarnation.
    pub incarnation: u64,
    /// Last accepted `seq` in that incarnation.
    pub seq: u64,
    /// Its clock at that report, ms.
    pub sent_at_ms: u64,
    /// The service's clock when that report arrived, ms (for expiry).
    pub seen_ms: u64,
}

/// Version 2: indexes for retention by age (see [`crate::retention`]).
const SCHEMA_V2: &str = "
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at_ms);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_ms);
";

/// Version 3: sidecars by incarnation, with the service's clock for expiry
/// (the older `sidecars` table, without incarnations, is no longer read).
const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS sidecar_state (
  sidecar TEXT PRIMARY KEY, incarnation INTEGER NOT NULL, seq INTEGER NOT NULL,
  sent_at_ms INTEGER NOT NULL, seen_ms INTEGER NOT NULL);
";

/// Version 4: the PII guard's counts per route per minute (see
/// [`crate::pii`]): counts only — types, actions and numbers, never a value.
const SCHEMA_V4: &str = "
CREATE TABLE IF NOT EXISTS pii_minutes (
  route TEXT NOT NULL, minute_ms INTEGER NOT NULL, requests INTEGER NOT NULL,
  inspected_bytes INTEGER NOT NULL, partial INTEGER NOT NULL, blocked INTEGER NOT NULL,
  redacted INTEGER NOT NULL, PRIMARY KEY (route, minute_ms));
CREATE INDEX IF NOT EXISTS pii_minutes_at ON pii_minutes (minute_ms);
CREATE TABLE IF NOT EXISTS pii_findings (
  route TEXT NOT NULL, minute_ms INTEGER NOT NULL, type TEXT NOT NULL, action TEXT NOT NULL,
  count INTEGER NOT NULL, PRIMARY KEY (route, minute_ms, type, action));
";

/// The versioned schema (SQLite `user_version`), applied in order at open.
/// A database from a newer release (a higher version) is refused.
static MIGRATION_STEPS: [rusqlite_migration::M<'static>; 4] = [
    rusqlite_migration::M::up(SCHEMA),
    rusqlite_migration::M::up(SCHEMA_V2),
    rusqlite_migration::M::up(SCHEMA_V3),
    rusqlite_migration::M::up(SCHEMA_V4),
];
static MIGRATIONS: rusqlite_migration::Migrations<'static> =
    rusqlite_migration::Migrations::from_slice(&MIGRATION_STEPS);

/// A canary as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryRecord {
    /// Declaration.
    pub spec: CanarySpec,
    /// Rollout state.
    pub state: CanaryState,
    /// Evidence of the current step so far.
    pub evidence: PairTally,
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRow {
    /// Row id (global order).
    pub id: i64,
    /// Canary.
    pub canary: String,
    /// When.
    pub at_ms: u64,
    /// Kind.
    pub kind: String,
    /// Who.
    pub actor: String,
    /// Phase before.
    pub from: String,
    /// Phase after.
    pub to: String,
    /// Weight before.
    pub weight_before: u8,
    /// Weight after.
    pub weight_after: u8,
    /// Step index after.
    pub step: u64,
    /// Plain English.
    pub explanation: String,
    /// Numbers.
    pub evidence: Value,
}

impl DecisionRow {
    /// JSON form for the API.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id, "canary": self.canary, "at_ms": self.at_ms, "kind": self.kind,
            "actor": self.actor, "from": self.from, "to": self.to,
            "weight_before": self.weight_before, "weight_after": self.weight_after,
            "step": self.step, "explanation": self.explanation, "evidence": self.evidence,
        })
    }
}

/// An audit entry to append (sealed into the chain by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When.
    pub ts_ms: u64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Which canary.
    pub canary: String,
    /// Why.
    pub detail: String,
    /// Numbers (JSON text).
    pub evidence: String,
}

impl AuditEntry {
    /// The audit entry of a decision.
    pub fn of_decision(canary: &str, d: &Decision) -> AuditEntry {
        AuditEntry {
            ts_ms: d.at_ms,
            actor: d.actor.clone(),
            action: format!("decision:{}", d.kind.as_str()),
            canary: canary.to_string(),
            detail: d.explanation.clone(),
            evidence: serde_json::json!({
                "from": d.from.as_str(), "to": d.to.as_str(),
                "weight_before": d.weight_before, "weight_after": d.weight_after,
                "step": d.step, "evidence": d.evidence,
            })
            .to_string(),
        }
    }
}

/// Everything one state change writes, in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Canaries to upsert (spec, state, step evidence).
    pub canaries: Vec<CanaryRecord>,
    /// Decisions to append.
    pub decisions: Vec<(String, Decision)>,
    /// Audit entries to append.
    pub audit: Vec<AuditEntry>,
    /// New routing version.
    pub routing_version: Option<u64>,
    /// Sidecar sequence state to upsert.
    pub sidecars: Vec<SidecarRow>,
    /// Expired sidecars to forget.
    pub forget_sidecars: Vec<String>,
    /// PII guard counts to add, per route per minute.
    pub pii: Vec<crate::pii::PiiRow>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.canaries.is_empty()
            && self.decisions.is_empty()
            && self.audit.is_empty()
            && self.routing_version.is_none()
            && self.sidecars.is_empty()
            && self.forget_sidecars.is_empty()
            && self.pii.is_empty()
    }
}

/// Environment variable naming a test hook file that simulates a full disk
/// with SQLite's own limit: while the file contains `full`, every write
/// transaction runs with `PRAGMA max_page_count` at the database's current
/// size, so anything that needs a new page fails with SQLITE_FULL exactly
/// as on a full disk. Used by the disk-full tests; unset in production.
pub const QUOTA_HOOK_ENV: &str = "VIGIL_CONTROL_TEST_QUOTA_FILE";

/// The database.
pub struct Store {
    conn: Connection,
    quota_hook: Option<std::path::PathBuf>,
    /// The data directory's lock, held while the store is open (services only).
    _lock: Option<std::fs::File>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Store")
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Lossless u64 ↔ i64 (SQLite integers are signed): the bit pattern is kept,
/// so `seq` and `incarnation` round-trip at any value, 2^64 − 1 included.
fn bits_i64(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn bits_u64(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

impl Store {
    /// Open (creating) `DIR/vigil.db` for a service: takes the exclusive
    /// lock on `DIR/vigil.lock` first, so a second instance is refused.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let lock = Self::lock(dir)?;
        let path = dir.join(DB_FILE);
        let mut store = Self::open_file(&path).map_err(|e| {
            StoreError(format!(
                "cannot open {}: {}. {}",
                path.display(),
                e.0,
                crate::verify::RECOVER
            ))
        })?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// Take the data directory's exclusive lock (released when the process
    /// exits, however it exits).
    pub fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
        use fs4::fs_std::FileExt;
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                StoreError(format!("cannot open the lock file {}: {e}", path.display()))
            })?;
        match file.try_lock_exclusive() {
            Ok(true) => Ok(file),
            Ok(false) => Err(StoreError(format!(
                "another vigil-control is using the data directory {} (it holds {}); two instances on one data directory would overwrite each other's decisions. Stop the other instance, or give this one its own --data",
                dir.display(),
                path.display()
            ))),
            Err(e) => Err(StoreError(format!("cannot lock {}: {e}", path.display()))),
        }
    }

    /// Open an existing database file without creating anything (the
    /// offline `audit verify` / `render` commands).
    pub fn open_existing(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError(format!("no database at {}", path.display())));
        }
        Self::open_file(&path)
    }

    fn open_file(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mut conn = conn;
        MIGRATIONS.to_latest(&mut conn).map_err(|e| {
            StoreError(format!(
                "schema migration of {} failed: {e} (a database written by a newer vigil-control is refused; run that release, or restore a backup)",
                path.display()
            ))
        })?;
        let quota_hook = std::env::var_os(QUOTA_HOOK_ENV).map(std::path::PathBuf::from);
        Ok(Store {
            conn,
            quota_hook,
            _lock: None,
        })
    }

    fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// The routing version (0 when never set).
    pub fn routing_version(&self) -> Result<u64, StoreError> {
        Ok(Self::meta(&self.conn, "routing_version")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Every stored canary, by name.
    pub fn load_canaries(&self) -> Result<Vec<CanaryRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT spec, state, evidence FROM canaries ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (spec, state, evidence) = row?;
            let evidence: Value = serde_json::from_str(&evidence).unwrap_or(Value::Null);
            out.push(CanaryRecord {
                spec: serde_json::from_str(&spec)?,
                state: serde_json::from_str(&state)?,
                evidence: PairTally::from_json(&evidence),
            });
        }
        Ok(out)
    }

    /// Every remembered sidecar.
    pub fn sidecars(&self) -> Result<Vec<SidecarRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT sidecar, incarnation, seq, sent_at_ms, seen_ms FROM sidecar_state")?;
        let rows = stmt.query_map([], |r| {
            Ok(SidecarRow {
                sidecar: r.get::<_, String>(0)?,
                incarnation: bits_u64(r.get(1)?),
                seq: bits_u64(r.get(2)?),
                sent_at_ms: to_u64(r.get(3)?),
                seen_ms: to_u64(r.get(4)?),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The newest `limit` decisions of a canary, oldest first.
    pub fn decisions(&self, canary: &str, limit: usize) -> Result<Vec<DecisionRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, canary, at_ms, kind, actor, from_phase, to_phase, weight_before, weight_after,
                    step, explanation, evidence
             FROM decisions WHERE canary = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![canary, to_i64(limit as u64)], |r| {
            let evidence: String = r.get(11)?;
            Ok(DecisionRow {
                id: r.get(0)?,
                canary: r.get(1)?,
                at_ms: to_u64(r.get(2)?),
                kind: r.get(3)?,
                actor: r.get(4)?,
                from: r.get(5)?,
                to: r.get(6)?,
                weight_before: u8::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                weight_after: u8::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                step: to_u64(r.get(9)?),
                explanation: r.get(10)?,
                evidence: serde_json::from_str(&evidence).unwrap_or(Value::Null),
            })
        })?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Number of stored decisions (all canaries).
    pub fn decision_count(&self) -> Result<u64, StoreError> {
        Ok(to_u64(self.conn.query_row(
            "SELECT COUNT(*) FROM decisions",
            [],
            |r| r.get(0),
        )?))
    }

    /// Every audit row, in storage (seq) order.
    pub fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, ts_ms, actor, action, canary, detail, evidence, prev_hash, hash
             FROM audit ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(AuditRow {
                seq: to_u64(r.get(0)?),
                ts_ms: to_u64(r.get(1)?),
                actor: r.get(2)?,
                action: r.get(3)?,
                canary: r.get(4)?,
                detail: r.get(5)?,
                evidence: r.get(6)?,
                prev_hash: r.get(7)?,
                hash: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The recorded chain head `(seq, hash)`, if any row was ever written.
    pub fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(Self::meta(&self.conn, "audit_head")?.and_then(|v| parse_head(&v)))
    }

    /// The checkpoint the stored chain starts after: `(seq, hash)` of the
    /// last row pruned by retention, `None` when nothing was pruned.
    pub fn audit_base(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(Self::meta(&self.conn, "audit_base")?.and_then(|v| parse_head(&v)))
    }

    /// Stored PII minutes in `[since_ms, until_ms]` (of one route, or all),
    /// sorted by route then minute; at most `limit` rows, the newest kept.
    /// Returns the rows and whether some were left out.
    pub fn pii_rows(
        &self,
        route: Option<&str>,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
    ) -> Result<(Vec<crate::pii::PiiRow>, bool), StoreError> {
        let (since, until) = (to_i64(since_ms), to_i64(until_ms));
        let mut stmt = self.conn.prepare(
            "SELECT route, minute_ms, requests, inspected_bytes, partial, blocked, redacted
             FROM pii_minutes WHERE minute_ms >= ?1 AND minute_ms <= ?2 AND (?3 IS NULL OR route = ?3)
             ORDER BY minute_ms DESC, route LIMIT ?4",
        )?;
        let limit_plus = to_i64(limit as u64 + 1);
        let mut rows = stmt
            .query_map(params![since, until, route, limit_plus], |r| {
                Ok(crate::pii::PiiRow {
                    minute_ms: to_u64(r.get(1)?),
                    counts: vigil_wire::pii::PiiRoute {
                        route: r.get(0)?,
                        requests: to_u64(r.get(2)?),
                        inspected_bytes: to_u64(r.get(3)?),
                        partial: to_u64(r.get(4)?),
                        blocked: to_u64(r.get(5)?),
                        redacted: to_u64(r.get(6)?),
                        findings: Vec::new(),
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let truncated = rows.len() > limit;
        rows.truncate(limit);
        let oldest = rows.last().map_or(since_ms, |r| r.minute_ms);
        let mut stmt = self.conn.prepare(
            "SELECT route, minute_ms, type, action, count FROM pii_findings
             WHERE minute_ms >= ?1 AND minute_ms <= ?2 AND (?3 IS NULL OR route = ?3)
             ORDER BY type, action",
        )?;
        let findings = stmt.query_map(params![to_i64(oldest), until, route], |r| {
            Ok((
                r.get::<_, String>(0)?,
                to_u64(r.get(1)?),
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                to_u64(r.get(4)?),
            ))
        })?;
        let mut index: std::collections::HashMap<(String, u64), usize> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.counts.route.clone(), r.minute_ms), i))
            .collect();
        for f in findings {
            let (route, minute, kind, action, count) = f?;
            if let Some(row) = index
                .get_mut(&(route, minute))
                .and_then(|i| rows.get_mut(*i))
            {
                row.counts.add_finding(&kind, &action, count);
            }
        }
        rows.sort_by(|a, b| {
            (a.counts.route.as_str(), a.minute_ms).cmp(&(b.counts.route.as_str(), b.minute_ms))
        });
        Ok((rows, truncated))
    }

    /// Number of stored canaries.
    pub fn canary_count(&self) -> Result<u64, StoreError> {
        Ok(to_u64(self.conn.query_row(
            "SELECT COUNT(*) FROM canaries",
            [],
            |r| r.get(0),
        )?))
    }

    /// `PRAGMA integrity_check`: `Ok(())` or SQLite's complaints.
    pub fn integrity_check(&self) -> Result<Result<(), String>, StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let lines = rows.collect::<Result<Vec<_>, _>>()?;
        if lines.len() == 1 && lines.first().is_some_and(|l| l == "ok") {
            Ok(Ok(()))
        } else {
            Ok(Err(lines.join("; ")))
        }
    }

    /// The connection (retention runs its own transaction on it).
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Write a batch in one transaction.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.apply_quota_hook()?;
        let tx = self.conn.transaction()?;
        write_batch(&tx, batch)?;
        tx.commit()?;
        Ok(())
    }
}

impl Store {
    /// See [`QUOTA_HOOK_ENV`].
    fn apply_quota_hook(&self) -> Result<(), StoreError> {
        let Some(path) = &self.quota_hook else {
            return Ok(());
        };
        let full = std::fs::read_to_string(path).is_ok_and(|t| t.trim() == "full");
        let limit: i64 = if full {
            self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?
        } else {
            i64::from(u32::MAX - 1)
        };
        let _: i64 = self
            .conn
            .query_row(&format!("PRAGMA max_page_count = {limit}"), [], |r| {
                r.get(0)
            })?;
        Ok(())
    }
}

fn parse_head(v: &str) -> Option<(u64, String)> {
    let (seq, hash) = v.split_once(':')?;
    Some((seq.parse().ok()?, hash.to_string()))
}

fn write_batch(tx: &Transaction<'_>, batch: &Batch) -> Result<(), StoreError> {
    for rec in &batch.canaries {
        tx.execute(
            "INSERT INTO canaries (name, spec, state, evidence, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, state = excluded.state,
               evidence = excluded.evidence, updated_ms = excluded.updated_ms",
            params![
                rec.spec.name,
                serde_json::to_string(&rec.spec)?,
                serde_json::to_string(&rec.state)?,
                rec.evidence.to_json().to_string(),
                to_i64(rec.state.updated_ms)
            ],
        )?;
    }
    for (canary, d) in &batch.decisions {
        tx.execute(
            "INSERT INTO decisions (canary, at_ms, kind, actor, from_phase, to_phase, weight_before,
               weight_after, step, explanation, evidence) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
            params![
                canary,
                to_i64(d.at_ms),
                d.kind.as_str(),
                d.actor,
                d.from.as_str(),
                d.to.as_str(),
                d.weight_before,
                d.weight_after,
                to_i64(d.step as u64),
                d.explanation,
                d.evidence.to_string()
            ],
        )?;
    }
    if !batch.audit.is_empty() {
        let mut head = Store::meta(tx, "audit_head")?
            .and_then(|v| parse_head(&v))
            .unwrap_or((0, GENESIS.to_string()));
        for e in &batch.audit {
            let row = audit::seal(
                AuditRow {
                    seq: 0,
                    ts_ms: e.ts_ms,
                    actor: e.actor.clone(),
                    action: e.action.clone(),
                    canary: e.canary.clone(),
                    detail: e.detail.clone(),
                    evidence: e.evidence.clone(),
                    prev_hash: String::new(),
                    hash: String::new(),
                },
                (head.0, &head.1),
            );
            tx.execute(
                "INSERT INTO audit (seq, ts_ms, actor, action, canary, detail, evidence, prev_hash, hash)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![
                    to_i64(row.seq),
                    to_i64(row.ts_ms),
                    row.actor,
                    row.action,
                    row.canary,
                    row.detail,
                    row.evidence,
                    row.prev_hash,
                    row.hash
                ],
            )?;
            head = (row.seq, row.hash);
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('audit_head', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [format!("{}:{}", head.0, head.1)],
        )?;
    }
    if let Some(v) = batch.routing_version {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('routing_version', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [v.to_string()],
        )?;
    }
    for row in &batch.sidecars {
        tx.execute(
            "INSERT INTO sidecar_state (sidecar, incarnation, seq, sent_at_ms, seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(sidecar) DO UPDATE SET incarnation = excluded.incarnation,
               seq = excluded.seq, sent_at_ms = excluded.sent_at_ms, seen_ms = excluded.seen_ms",
            params![
                row.sidecar,
                bits_i64(row.incarnation),
                bits_i64(row.seq),
                to_i64(row.sent_at_ms),
                to_i64(row.seen_ms)
            ],
        )?;
    }
    for sidecar in &batch.forget_sidecars {
        tx.execute("DELETE FROM sidecar_state WHERE sidecar = ?1", [sidecar])?;
    }
    write_pii(tx, &batch.pii)
}

/// Add PII rows to the per-minute sums (counts only).
fn write_pii(tx: &Transaction<'_>, rows: &[crate::pii::PiiRow]) -> Result<(), StoreError> {
    for row in rows {
        let c = &row.counts;
        let minute = to_i64(row.minute_ms);
        tx.execute(
            "INSERT INTO pii_minutes (route, minute_ms, requests, inspected_bytes, partial, blocked, redacted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(route, minute_ms) DO UPDATE SET requests = requests + excluded.requests,
               inspected_bytes = inspected_bytes + excluded.inspected_bytes,
               partial = partial + excluded.partial, blocked = blocked + excluded.blocked,
               redacted = redacted + excluded.redacted",
            params![
                c.route,
                minute,
                to_i64(c.requests),
                to_i64(c.inspected_bytes),
                to_i64(c.partial),
                to_i64(c.blocked),
                to_i64(c.redacted)
            ],
        )?;
        for f in &c.findings {
            tx.execute(
                "INSERT INTO pii_findings (route, minute_ms, type, action, count) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(route, minute_ms, type, action) DO UPDATE SET count = count + excluded.count",
                params![c.route, minute, f.kind, f.action, to_i64(f.count)],
            )?;
        }
    }
    Ok(())
}

/// Verify the audit chain of the database in `dir` (the same check as at
/// start, see [`crate::verify::audit_chain`]): `Ok(rows)` or the first bad
/// row.
pub fn verify_audit(dir: &Path) -> Result<Result<u64, audit::ChainError>, StoreError> {
    let store = Store::open_existing(dir)?;
    crate::verify::audit_chain(&store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::CanaryState;

    #[test]
    fn batch_round_trip_and_chain() {
        let dir = std::env::temp_dir().join(format!("vigil-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = CanarySpec::from_json_value(serde_json::json!({"name":"c","route":"r",
            "stable_cluster":"s","canary_cluster":"k","steps":[10,100]}))
        .unwrap();
        let mut state = CanaryState::new(5);
        let d = state.start(&spec, 10).unwrap();
        let row = SidecarRow {
            sidecar: "sc".into(),
            incarnation: u64::MAX,
            seq: u64::MAX,
            sent_at_ms: 99,
            seen_ms: 100,
        };
        {
            let mut store = Store::open(&dir).unwrap();
            let batch = Batch {
                canaries: vec![CanaryRecord {
                    spec: spec.clone(),
                    state: state.clone(),
                    evidence: PairTally::default(),
                }],
                audit: vec![AuditEntry::of_decision("c", &d)],
                decisions: vec![("c".into(), d)],
                routing_version: Some(7),
                sidecars: vec![row.clone()],
                forget_sidecars: Vec::new(),
                pii: Vec::new(),
            };
            store.apply(&batch).unwrap();
            store
                .apply(&Batch {
                    audit: vec![AuditEntry {
                        ts_ms: 11,
                        actor: "alice".into(),
                        action: "approve".into(),
                        canary: "c".into(),
                        detail: "ok".into(),
                        evidence: "{}".into(),
                    }],
                    ..Batch::default()
                })
                .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let recs = store.load_canaries().unwrap();
        assert_eq!(recs[0].state, state);
        assert_eq!(recs[0].spec, spec);
        assert_eq!(store.routing_version().unwrap(), 7);
        assert_eq!(store.sidecars().unwrap(), vec![row]);
        assert_eq!(store.decisions("c", 10).unwrap().len(), 1);
        assert_eq!(verify_audit(&dir).unwrap(), Ok(2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pii_rows_add_up_per_minute() {
        let dir = std::env::temp_dir().join(format!("vigil-store-pii-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let row = |route: &str, minute_ms: u64, n: u64| {
            let mut c = vigil_wire::pii::PiiRoute::new(route);
            c.requests = n;
            c.inspected_bytes = 100 * n;
            c.add_finding("card", "block", n);
            crate::pii::PiiRow {
                minute_ms,
                counts: c,
            }
        };
        let mut store = Store::open(&dir).unwrap();
        for batch in [
            vec![row("chat", 60_000, 1), row("notes", 60_000, 5)],
            vec![row("chat", 60_000, 2), row("chat", 120_000, 4)],
        ] {
            store
                .apply(&Batch {
                    pii: batch,
                    ..Batch::default()
                })
                .unwrap();
        }
        let (rows, truncated) = store.pii_rows(Some("chat"), 0, u64::MAX / 2, 100).unwrap();
        assert!(!truncated);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].minute_ms, rows[0].counts.requests), (60_000, 3));
        assert_eq!(rows[0].counts.findings_total(), 3);
        assert_eq!(rows[0].counts.inspected_bytes, 300);
        assert_eq!(rows[1].counts.findings_total(), 4);
        let (all, _) = store.pii_rows(None, 0, 60_000, 100).unwrap();
        assert_eq!(all.len(), 2, "chat and notes in the first minute");
        let (newest, truncated) = store.pii_rows(None, 0, u64::MAX / 2, 1).unwrap();
        assert!(truncated);
        assert_eq!(newest[0].minute_ms, 120_000, "the newest are kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
