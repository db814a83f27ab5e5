//! End-to-end: the audit trail through the real binary — `keyplane audit verify` proves the
//! chain and names the first event that was altered or removed; `audit export` writes it all.

mod common;

use common::*;
use rusqlite::Connection;
use serde_json::{Value, json};

async fn audit_cli(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(binary())
        .arg("audit")
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_chain_verifies_exports_and_exposes_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let (vault, _) = setup(&c, "active", "aes", "256").await;
    create_key(&c, &vault, "audited").await;
    let dup = c
        .post("/api/v4/vaults", &json!({"name": "dup"}))
        .await
        .unwrap();
    assert_eq!(dup.status, 201);
    let again = c
        .post("/api/v4/vaults", &json!({"name": "dup"}))
        .await
        .unwrap();
    assert_eq!(again.status, 409);
    let listed = c.get("/api/v4/audit_events?limit=100").await.unwrap();
    let events = listed.body["audit_events"].as_array().unwrap().clone();
    assert!(events.len() >= 6, "{}", listed.body);
    assert!(
        events.iter().all(|e| e["source"] == "127.0.0.1"),
        "the client's address is recorded"
    );
    assert!(
        events
            .iter()
            .all(|e| e["initiator"].as_str().unwrap().starts_with("admin"))
    );
    assert!(server.terminate().await.unwrap());

    let verify = audit_cli(&["verify", "--data-dir", data_dir]).await;
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{out}");
    assert!(
        out.contains(&format!("audit chain intact: {} events", events.len())),
        "{out}"
    );

    let export = audit_cli(&["export", "--format", "jsonl", "--data-dir", data_dir]).await;
    assert!(export.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as i64 + 1);
        assert_eq!(line["hash"], events[i]["hash"]);
    }

    // The table refuses changes; someone with the database file can still drop the guard.
    let conn = Connection::open(dir.path().join("keyplane.sqlite")).unwrap();
    assert!(
        conn.execute(
            "UPDATE audit_events SET initiator = 'mallory' WHERE seq = 3",
            []
        )
        .is_err(),
        "append-only"
    );
    conn.execute_batch(
        "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;
         UPDATE audit_events SET initiator = 'mallory' WHERE seq = 4;",
    )
    .unwrap();
    let verify = audit_cli(&["verify", "--data-dir", data_dir]).await;
    assert!(!verify.status.success());
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(err.contains("broken at event 4"), "{err}");
    assert!(err.contains("3 events before it verify"), "{err}");

    conn.execute("DELETE FROM audit_events WHERE seq = 2", [])
        .unwrap();
    drop(conn);
    let verify = audit_cli(&["verify", "--data-dir", data_dir]).await;
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        err.contains("broken at event 2: the event is missing"),
        "{err}"
    );
}
