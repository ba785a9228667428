//! Start-up verification with the real binary and a real SQLite file: each
//! tampering with the data directory (altered, deleted, reordered or
//! truncated audit rows, a deleted chain head, invalid records, a corrupt
//! file, a second instance) is refused at start with a message that says
//! what is wrong and how to recover; the untouched copy starts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Start `serve` on `data` (the shared harness, [`Server::spawn`]):
/// `Err(stderr)` if it exits (refused, exit code 2) within 10 s, `Ok(())`
/// if it starts listening (then it is killed).
fn try_start(data: &Path) -> Result<(), String> {
    let start = Instant::now();
    match Server::spawn(data, None, &[], &[]) {
        Ok(srv) => {
            srv.kill9();
            Ok(())
        }
        Err(r) => {
            assert_eq!(r.code, Some(2), "refusal exit code: {}", r.logs);
            assert!(start.elapsed() < Duration::from_secs(10));
            Err(r.logs)
        }
    }
}

fn copy_of(data: &Path) -> PathBuf {
    let copy = temp_dir("startup-copy");
    for f in ["vigil.db", "vigil.db-wal", "vigil.db-shm"] {
        if data.join(f).exists() {
            std::fs::copy(data.join(f), copy.join(f)).unwrap();
        }
    }
    copy
}

fn tampered(data: &Path, sql: &str) -> PathBuf {
    let copy = copy_of(data);
    let conn = rusqlite::Connection::open(copy.join("vigil.db")).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    copy
}

fn refused(copy: &Path, want: &[&str]) -> String {
    let err = try_start(copy).expect_err("a tampered data directory was accepted");
    for w in want.iter().chain(&["To recover"]) {
        assert!(err.contains(w), "refusal lacks {w:?}:\n{err}");
    }
    err
}

#[test]
fn tampering_with_the_data_directory_is_refused_at_start() {
    let data = temp_dir("startup");
    let srv = Server::start(&data, None, &[]);
    srv.post(
        "/v1/canaries",
        &canary_spec("ledger", json!({"approve_before_steps": [50]})),
    );
    let mut feed = Feeder::new();
    feed.until(&srv, "ledger", Duration::from_secs(20), 0, 100, |v| {
        v["phase"] == "waiting_approval"
    });
    srv.post(
        "/v1/canaries/ledger/approve",
        &json!({"by": "alice", "comment": "ok"}),
    );
    // A second instance on the same directory is refused while it runs.
    let err = try_start(&data).expect_err("a second instance started");
    assert!(
        err.contains("another vigil-control") && err.contains("vigil.lock"),
        "{err}"
    );
    srv.kill9();

    // The untouched copy starts (so every refusal below is the tampering's).
    try_start(&copy_of(&data)).unwrap();

    let cases: &[(&str, &str, &[&str])] = &[
        ("altered", "UPDATE audit SET detail = 'approved by mallory' WHERE seq = 4", &["audit chain broken at row 4", "altered"]),
        ("deleted", "DELETE FROM audit WHERE seq = 3", &["row 3", "missing"]),
        ("reordered", "UPDATE audit SET seq = -seq WHERE seq IN (2, 3); UPDATE audit SET seq = 3 WHERE seq = -2; UPDATE audit SET seq = 2 WHERE seq = -3;", &["row 2"]),
        ("truncated", "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)", &["deleted from the end"]),
        ("head deleted with the last rows", "DELETE FROM meta WHERE key = 'audit_head'; DELETE FROM audit WHERE seq >= 3", &["audit_head", "missing"]),
        ("head and every row deleted", "DELETE FROM meta WHERE key = 'audit_head'; DELETE FROM audit", &["audit_head", "missing"]),
        ("weight 250", "UPDATE canaries SET state = json_set(state, '$.weight', 250)", &["weight 250"]),
        ("step 99", "UPDATE canaries SET state = json_set(state, '$.step', 99)", &["step 99"]),
        ("escaping name", "UPDATE canaries SET name = '../../../escaped', spec = json_set(spec, '$.name', '../../../escaped')", &["../../../escaped", "name"]),
        ("bad steps", "UPDATE canaries SET spec = json_set(spec, '$.steps', json('[250]'))", &["steps"]),
    ];
    for (name, sql, want) in cases {
        let copy = tampered(&data, sql);
        let err = refused(&copy, want);
        println!("{name}: refused: {}", err.lines().last().unwrap_or(""));
        // The offline tools agree.
        let (code, out, _) = run_bin(&["audit", "verify", "--data", copy.to_str().unwrap()], &[]);
        if name.contains("weight")
            || name.contains("step")
            || name.contains("name")
            || name.contains("steps")
        {
            assert_eq!(code, 0, "{name}: {out}");
        } else {
            assert_eq!(code, 1, "{name}: {out}");
            assert!(!out.contains("intact"), "{name}: {out}");
        }
    }
    // An escaping name is never rendered outside the output directory.
    let copy = tampered(
        &data,
        "UPDATE canaries SET name = '../../../escaped', spec = json_set(spec, '$.name', '../../../escaped')",
    );
    let out = copy.join("gitops");
    let (code, _, err) = run_bin(
        &[
            "render",
            "--data",
            copy.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("escaped"), "{err}");
    assert!(
        !copy.join("../../escaped").exists() && !copy.parent().unwrap().join("escaped").exists()
    );

    // A corrupt file is refused too.
    let copy = copy_of(&data);
    let conn = rusqlite::Connection::open(copy.join("vigil.db")).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(conn);
    let db = copy.join("vigil.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    assert!(bytes.len() > 3 * page);
    for b in &mut bytes[page..3 * page] {
        *b = 0x5a;
    }
    std::fs::write(&db, bytes).unwrap();
    let err = try_start(&copy).expect_err("a corrupt file was accepted");
    assert!(
        err.contains("To recover") && err.contains("malformed"),
        "{err}"
    );
    println!(
        "corrupt page: refused: {}",
        err.lines().last().unwrap_or("")
    );
}

#[test]
fn retention_exports_before_pruning_and_the_chain_stays_verifiable() {
    let data = temp_dir("retention");
    let srv = Server::start(&data, None, &[]);
    srv.post("/v1/canaries", &canary_spec("cart", json!({})));
    let mut feed = Feeder::new();
    feed.until(&srv, "cart", Duration::from_secs(30), 0, 100, |v| {
        v["phase"] == "promoted"
    });
    // Refused while the service holds the data directory.
    let export = data.with_extension("export.jsonl");
    let d = data.to_str().unwrap();
    let e = export.to_str().unwrap();
    let (code, _, err) = run_bin(
        &[
            "retention",
            "--data",
            d,
            "--older-than-days",
            "0",
            "--export",
            e,
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("another vigil-control"), "{err}");
    srv.kill9();
    std::thread::sleep(Duration::from_millis(20));
    let (code, out, err) = run_bin(
        &[
            "retention",
            "--data",
            d,
            "--older-than-days",
            "0",
            "--export",
            e,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let audit: Vec<_> = lines.iter().filter(|l| l["type"] == "audit").collect();
    let decisions = lines.iter().filter(|l| l["type"] == "decision").count();
    assert!(audit.len() >= 5 && decisions >= 4, "{lines:?}");
    assert_eq!(lines.last().unwrap()["type"], "checkpoint");
    // The export is the chain's start: its last hash is the checkpoint.
    assert_eq!(
        lines.last().unwrap()["audit_base"]["hash"],
        audit.last().unwrap()["hash"]
    );
    let (code, out, _) = run_bin(&["audit", "verify", "--data", d], &[]);
    assert_eq!(code, 0, "{out}");
    // The service starts on the pruned directory and the chain goes on.
    let srv = Server::start(&data, None, &[]);
    srv.post(
        "/v1/canaries",
        &canary_spec("cart", json!({"steps": [20, 100]})),
    );
    srv.kill9();
    let (code, out, _) = run_bin(&["audit", "verify", "--data", d], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");
    // Deleting the checkpoint is tampering.
    let copy = tampered(&data, "DELETE FROM meta WHERE key = 'audit_base'");
    refused(&copy, &["audit chain broken"]);
}
