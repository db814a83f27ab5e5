//! Losing the database for a while: PostgreSQL is restarted under load. Calls answer 503 with a
//! clear error instead of hanging, no acknowledged write is lost, the node reconnects by itself
//! and queued distribution resumes.
//!
//! It restarts the machine's PostgreSQL (`pg_ctlcluster`), so it is the only test of its binary:
//! test binaries run one after another.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keyplane_testkit::peers::OpenBao;
use keyplane_testkit::process::Server;
use serde_json::json;

const ROOT: &str = "outage-root-token";

fn database() -> String {
    std::env::var("KEYPLANE_TEST_POSTGRES").expect(
        "KEYPLANE_TEST_POSTGRES must name a PostgreSQL database (scripts/test.sh makes one)",
    )
}

/// Restarts the local PostgreSQL cluster, as an operator (or a failover) would.
async fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL is installed here")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a PostgreSQL version");
    // The restarted server must not inherit this process's descriptors (the test harness's
    // pipes, a lock a caller holds): they would stay open as long as PostgreSQL runs.
    let status = tokio::process::Command::new("bash")
        .args([
            "-c",
            "for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ \"$fd\" -gt 2 ] && eval \"exec $fd>&-\"; done; \
             exec pg_ctlcluster --skip-systemctl-redirect \"$0\" main restart",
            &version,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .expect("pg_ctlcluster runs");
    assert!(status.success(), "restarting PostgreSQL failed");
}

#[tokio::test]
async fn a_postgres_restart_under_load_loses_nothing_and_service_returns_by_itself() {
    let url = keyplane_store::new_postgres_schema(&database())
        .await
        .unwrap();
    let bao = OpenBao::start(ROOT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_DATABASE_URL", url.as_str()),
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_DISTRIBUTION_BACKOFF", "100ms"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    let vault = new_vault(&c).await;
    let bao_ks = connect_keystore(
        &c,
        &json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": "bao", "groups": ["bao"],
                "hashicorp_address": bao.address, "hashicorp_token": ROOT}),
    )
    .await;
    active_aes_template(&c, &vault, "hashicorp_vault", "bao").await;

    // Three writers create keys without pause; the database restarts in the middle.
    let load_until = Instant::now() + Duration::from_secs(5);
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (c, vault) = (c.clone(), vault.clone());
            tokio::spawn(async move {
                let (mut acknowledged, mut unavailable, mut n) = (Vec::new(), 0, 0);
                while Instant::now() < load_until {
                    n += 1;
                    let asked = Instant::now();
                    let r = c
                        .post(
                            "/api/v4/managed_keys",
                            &json!({"vault": {"id": vault}, "template_name": "T1",
                                    "label": format!("w{w}-{n}")}),
                        )
                        .await
                        .unwrap();
                    assert!(
                        asked.elapsed() < Duration::from_secs(15),
                        "a call hung for {:?}",
                        asked.elapsed()
                    );
                    match r.status {
                        201 => acknowledged.push(id(&r.body)),
                        503 => {
                            assert_eq!(
                                r.body["errors"][0]["code"], "database_unavailable",
                                "{}",
                                r.body
                            );
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("unexpected {other}: {}", r.body),
                    }
                }
                (acknowledged, unavailable)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    restart_postgres().await;

    let (mut acknowledged, mut unavailable) = (Vec::new(), 0);
    for w in writers {
        let (a, u) = w.await.unwrap();
        acknowledged.extend(a);
        unavailable += u;
    }
    eprintln!(
        "{} keys acknowledged, {unavailable} calls answered 503 during the restart",
        acknowledged.len()
    );
    assert!(acknowledged.len() > 20, "the load did not run");

    // Back by itself: every acknowledged key is there and reaches OpenBao.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.get("/health").await.map(|r| r.status).unwrap_or(0) != 200
        || c.get(&format!("/api/v4/vaults/{vault}"))
            .await
            .unwrap()
            .status
            != 200
    {
        assert!(Instant::now() < deadline, "the node did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for key in &acknowledged {
        let k = c.get(&format!("/api/v4/managed_keys/{key}")).await.unwrap();
        assert_eq!(k.status, 200, "acknowledged key {key} was lost");
    }
    for key in &acknowledged {
        wait_status(&c, key, &bao_ks, |s| s["status"] == "active").await;
    }
    let total = c
        .get(&format!("/api/v4/managed_keys?vault.id={vault}&limit=1"))
        .await
        .unwrap();
    assert!(total.body["total_count"].as_i64().unwrap() >= acknowledged.len() as i64);
    assert!(server.terminate().await.unwrap());
    let verified = keyplane(&["audit", "verify", "--database-url", &url], None, "").await;
    assert!(verified.success, "{}{}", verified.stdout, verified.stderr);
    bao.stop().await;
}
