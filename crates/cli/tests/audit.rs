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

fn streamed(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_for_lines(path: &std::path::Path, count: usize) -> Vec<Value> {
    for _ in 0..100 {
        let lines = streamed(path);
        if lines.len() >= count {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the audit stream never reached {count} events");
}

/// `KEYPLANE_AUDIT_FILE` receives every committed event, in chain order, and resumes after a
/// restart without repeating any.
#[tokio::test]
async fn the_trail_streams_to_a_file_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream").join("audit.jsonl");
    std::fs::create_dir_all(stream.parent().unwrap()).unwrap();
    let env = [
        ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
        ("KEYPLANE_AUDIT_FILE", stream.to_str().unwrap()),
    ];
    let server = keyplane_testkit::process::Server::start(&binary(), dir.path(), &env)
        .await
        .unwrap();
    let c = server.client();
    for name in ["s1", "s2", "s3"] {
        assert_eq!(
            c.post("/api/v4/vaults", &json!({"name": name}))
                .await
                .unwrap()
                .status,
            201
        );
    }
    let lines = wait_for_lines(&stream, 3).await;
    let listed = c.get("/api/v4/audit_events").await.unwrap().body;
    assert_eq!(lines[0]["hash"], listed["audit_events"][0]["hash"]);
    assert!(server.terminate().await.unwrap());

    let server = keyplane_testkit::process::Server::start(&binary(), dir.path(), &env)
        .await
        .unwrap();
    let c = server.client();
    assert_eq!(
        c.post("/api/v4/vaults", &json!({"name": "s4"}))
            .await
            .unwrap()
            .status,
        201
    );
    let lines = wait_for_lines(&stream, 4).await;
    assert!(server.terminate().await.unwrap());
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "in order, none twice"
    );
    assert_eq!(lines.last().unwrap()["request"]["body"]["name"], "s4");
}

#[tokio::test]
async fn a_running_server_lists_its_events_and_verifies_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let s = Some(&server);
    let c = server.client();
    let made = c
        .post("/api/v4/vaults", &json!({"name": "audited"}))
        .await
        .unwrap();
    assert_eq!(made.status, 201);
    let refused = c
        .post("/api/v4/vaults", &json!({"name": ""}))
        .await
        .unwrap();
    assert_eq!(refused.status, 400);

    let table = keyplane(&["audit", "events", "--outcome", "failure"], s, "").await;
    assert!(table.success, "{}", table.stderr);
    assert!(table.stdout.starts_with("SEQ"), "{}", table.stdout);
    assert!(table.stdout.contains("failure"), "{}", table.stdout);
    assert!(!table.stdout.contains("success"), "{}", table.stdout);
    let json = keyplane(
        &["audit", "events", "--all-pages", "--output", "json"],
        s,
        "",
    )
    .await;
    let events: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(events.as_array().unwrap().len(), 2, "{events}");
    let bad = keyplane(&["audit", "events", "--outcome", "maybe"], s, "").await;
    assert_eq!(bad.code, Some(3), "{}", bad.stderr);

    let intact = keyplane(&["audit", "chain", "--output", "json"], s, "").await;
    assert!(intact.success, "{}", intact.stderr);
    let report: Value = serde_json::from_str(&intact.stdout).unwrap();
    assert_eq!(report["intact"], true);
    // The two vault calls and the refused filter (a failure, recorded like any other).
    assert_eq!(report["events"], 3);

    // Altered behind the server's back: the API, the CLI and the console all say where.
    let conn = Connection::open(dir.path().join("keyplane.sqlite")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_events_no_update;
         UPDATE audit_events SET initiator = 'mallory' WHERE seq = 1;",
    )
    .unwrap();
    drop(conn);
    let broken = keyplane(&["audit", "chain"], s, "").await;
    assert_eq!(broken.code, Some(1), "{}", broken.stderr);
    assert!(
        broken.stderr.contains("broken at event 1"),
        "{}",
        broken.stderr
    );
    let report = c.get("/api/v4/audit_events/verification").await.unwrap();
    assert_eq!(report.body["intact"], false, "{}", report.body);
    assert_eq!(report.body["first_broken"], 1);
}
