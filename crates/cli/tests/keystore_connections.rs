//! Connecting external keystores through the real binary against a real OpenBao: the connection
//! is tested before it is saved, failures name what failed and save nothing, edits are re-tested,
//! and the status endpoint really pings.

mod common;

use common::*;
use keyplane_testkit::peers::OpenBao;
use keyplane_testkit::process::Client;
use serde_json::{Value, json};

const ROOT: &str = "keystore-connections-root-token";

fn bao_keystore(vault: &str, name: &str, address: &str, token: &str) -> Value {
    json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": name, "groups": ["bao"],
           "hashicorp_address": address, "hashicorp_token": token})
}

async fn keystore_count(c: &Client, vault: &str) -> u64 {
    let r = c
        .get(&format!("/api/v4/keystores?vault.id={vault}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["total_count"].as_u64().unwrap()
}

fn first_error(body: &Value) -> (&str, &str) {
    (
        body["errors"][0]["code"].as_str().unwrap_or(""),
        body["errors"][0]["message"].as_str().unwrap_or(""),
    )
}

#[tokio::test]
async fn connections_are_tested_before_they_are_saved() {
    let bao = OpenBao::start(ROOT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let v = new_vault(&c).await;

    // A dry run tests and saves nothing.
    let r = c
        .post(
            "/api/v4/keystores?dry_run=true",
            &bao_keystore(&v, "bao", &bao.address, ROOT),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(keystore_count(&c, &v).await, 0);

    // A refused token: 400, named, nothing saved.
    let r = c
        .post(
            "/api/v4/keystores",
            &bao_keystore(&v, "bao", &bao.address, "not-a-token"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let (code, message) = first_error(&r.body);
    assert_eq!(code, "keystore_rejected");
    assert!(message.contains("bad credentials"), "{message}");
    assert!(!message.contains("not-a-token"), "{message}");

    // A token without the permission importing needs: 400 naming the path.
    let weak = bao
        .token_with_policy(
            "lookup-only",
            r#"path "auth/token/lookup-self" { capabilities = ["read"] }"#,
        )
        .await
        .unwrap();
    let r = c
        .post(
            "/api/v4/keystores",
            &bao_keystore(&v, "bao", &bao.address, &weak),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let (code, message) = first_error(&r.body);
    assert_eq!(code, "keystore_rejected");
    assert!(
        message.contains("missing permission") && message.contains("transit/wrapping_key"),
        "{message}"
    );

    // No transit engine at the mount.
    let mut body = bao_keystore(&v, "bao", &bao.address, ROOT);
    body["hashicorp_transit_mount"] = json!("nothing-here");
    let r = c.post("/api/v4/keystores", &body).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        first_error(&r.body)
            .1
            .contains("no transit engine is mounted at 'nothing-here'")
    );

    // Nothing listens there: 424.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let r = c
        .post(
            "/api/v4/keystores",
            &bao_keystore(&v, "bao", &closed_address, ROOT),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 424, "{}", r.body);
    let (code, message) = first_error(&r.body);
    assert_eq!(code, "keystore_unreachable");
    assert!(message.contains("unreachable"), "{message}");
    assert_eq!(
        keystore_count(&c, &v).await,
        0,
        "no failed connection was saved"
    );

    // The real thing.
    let r = c
        .post(
            "/api/v4/keystores",
            &bao_keystore(&v, "bao", &bao.address, ROOT),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let ks = id(&r.body);
    assert_eq!(r.body["hashicorp_token"], "", "secrets are write-only");
    let status = c
        .get(&format!("/api/v4/keystores/{ks}/status"))
        .await
        .unwrap();
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["health_status"], "ok", "{}", status.body);
    assert!(status.body["last_heartbeat"].is_string());

    // An edit with a refused token changes nothing; a good one is saved.
    let etag = c
        .get(&format!("/api/v4/keystores/{ks}"))
        .await
        .unwrap()
        .etag;
    let r = c
        .send(
            "PATCH",
            &format!("/api/v4/keystores/{ks}"),
            Some(&json!({"hashicorp_token": "revoked-token"})),
            Some(&etag),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(first_error(&r.body).0, "keystore_rejected");
    let status = c
        .get(&format!("/api/v4/keystores/{ks}/status"))
        .await
        .unwrap();
    assert_eq!(
        status.body["health_status"], "ok",
        "the stored token still works"
    );
    let second = bao
        .token_with_policy(
            "keyplane",
            r#"path "auth/token/lookup-self" { capabilities = ["read"] }
               path "transit/*" { capabilities = ["create", "read", "update", "delete", "list"] }"#,
        )
        .await
        .unwrap();
    let etag = c
        .get(&format!("/api/v4/keystores/{ks}"))
        .await
        .unwrap()
        .etag;
    let r = c
        .send(
            "PATCH",
            &format!("/api/v4/keystores/{ks}"),
            Some(&json!({"hashicorp_token": second, "name": "bao-renamed"})),
            Some(&etag),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"], "bao-renamed");
    // The identifying address is locked.
    let etag = c
        .get(&format!("/api/v4/keystores/{ks}"))
        .await
        .unwrap()
        .etag;
    let r = c
        .send(
            "PATCH",
            &format!("/api/v4/keystores/{ks}"),
            Some(&json!({"hashicorp_address": "http://127.0.0.1:1"})),
            Some(&etag),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["errors"][0]["target"]["name"], "hashicorp_address");

    // The target goes away: the status says so.
    bao.stop().await;
    let status = c
        .get(&format!("/api/v4/keystores/{ks}/status"))
        .await
        .unwrap();
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(
        status.body["health_status"], "not_responding",
        "{}",
        status.body
    );
    assert!(
        status.body["message"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
}
