//! `keyplane admin migrate-store`: a SQLite deployment moved into PostgreSQL keeps its keys,
//! their material (still sealed), its callers and its audit chain; a target that is not empty is
//! refused.

mod common;

use common::*;
use keyplane_testkit::process::Server;
use serde_json::json;

const PASSPHRASE: &str = "moving house with every key";

fn database() -> String {
    std::env::var("KEYPLANE_TEST_POSTGRES").expect(
        "KEYPLANE_TEST_POSTGRES must name a PostgreSQL database (scripts/test.sh makes one)",
    )
}

#[tokio::test]
async fn a_sqlite_deployment_moves_to_postgres_whole() {
    let dir = tempfile::tempdir().unwrap();
    let seal = [
        ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
        ("KEYPLANE_SEAL", "passphrase"),
        ("KEYPLANE_SEAL_PASSPHRASE", PASSPHRASE),
    ];
    let server = Server::start(&binary(), dir.path(), &seal).await.unwrap();
    let c = server.client();
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(create_key(&c, &vault, &format!("moved-{i}")).await);
    }
    let (plain, ciphertext) = wrap_new(&c, &keystore, &key_ref(&keys[0])).await;
    let apikey = principal_with_api_key(&c, "mover", "service", &[("reader", None)]).await;
    let events_before = c.get("/api/v4/audit_events?limit=1").await.unwrap().body["total_count"]
        .as_i64()
        .unwrap();
    assert!(server.terminate().await.unwrap());

    let url = keyplane_store::new_postgres_schema(&database())
        .await
        .unwrap();
    let from = format!("sqlite://{}", dir.path().join("keyplane.sqlite").display());
    let moved = admin(&["migrate-store", "--from", &from, "--to", &url], None, "").await;
    assert!(moved.success, "{}{}", moved.stdout, moved.stderr);
    assert!(
        moved.stdout.contains("audit chain intact"),
        "{}",
        moved.stdout
    );
    assert!(moved.stdout.contains("managed_keys"), "{}", moved.stdout);

    // Once moved, the target is not empty: a second run changes nothing and says why.
    let again = admin(&["migrate-store", "--from", &from, "--to", &url], None, "").await;
    assert!(!again.success);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
    let nowhere = admin(
        &[
            "migrate-store",
            "--from",
            "sqlite:///no/such/keyplane.sqlite",
            "--to",
            &url,
        ],
        None,
        "",
    )
    .await;
    assert!(!nowhere.success && nowhere.stderr.contains("no SQLite database"));

    // A node on PostgreSQL (another data directory) opens the same hierarchy with the same
    // passphrase: the keys, the ciphertext made before the move, the caller and the chain.
    let node_dir = tempfile::tempdir().unwrap();
    let mut env = seal.to_vec();
    env.push(("KEYPLANE_DATABASE_URL", url.as_str()));
    let node = Server::start(&binary(), node_dir.path(), &env)
        .await
        .unwrap();
    let n = node.client();
    for key in &keys {
        let k = n
            .get(&format!("/api/v4/managed_keys/{}", id(key)))
            .await
            .unwrap();
        assert_eq!(k.status, 200);
        assert_eq!(
            k.body["verification_patterns"],
            key["verification_patterns"]
        );
        assert_eq!(k.body["state"], "active");
    }
    assert_eq!(
        unwrap_ok(&n, &keystore, &key_ref(&keys[0]), &ciphertext).await,
        plain
    );
    let token = keyplane_testkit::http_client()
        .post(format!("{}/identity/token", n.base))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", apikey.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200, "the moved API key still signs in");
    let events_after = n.get("/api/v4/audit_events?limit=1").await.unwrap().body["total_count"]
        .as_i64()
        .unwrap();
    assert!(
        events_after >= events_before,
        "{events_after} < {events_before}"
    );
    let v = n
        .post("/api/v4/vaults", &json!({"name": "after-the-move"}))
        .await
        .unwrap();
    assert_eq!(v.status, 201, "the moved deployment takes new writes");
    assert!(node.terminate().await.unwrap());
    let verified = keyplane(&["audit", "verify", "--database-url", &url], None, "").await;
    assert!(verified.success, "{}{}", verified.stdout, verified.stderr);
}
