//! The system endpoints: seal status, the emergency seal, unseal, master key rotation.

use keyplane_testkit::TestApp;
use serde_json::json;

#[tokio::test]
async fn sealing_stops_key_operations_until_unsealed() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let key = app.key(&vault, "T1", "k1").await.expect(201);

    let status = app.get("/api/v4/system/seal_status").await.expect(200);
    assert_eq!(status.body["sealed"], false);
    let master = status.body["master_key_id"].as_str().unwrap().to_owned();

    let sealed = app.post("/api/v4/system/seal", json!({})).await.expect(200);
    assert_eq!(sealed.body["sealed"], true);
    assert!(
        sealed.body.get("master_key_id").is_none(),
        "nothing about keys while sealed"
    );
    for path in [
        "/api/v4/vaults".to_owned(),
        format!("/api/v4/managed_keys/{}", key.id()),
    ] {
        let r = app.get(&path).await.expect(503);
        assert_eq!(r.code(), "sealed");
    }
    app.key(&vault, "T1", "k2").await.expect(503);
    app.get("/health").await.expect(503);
    let not_ready = app.get("/ready").await.expect(503);
    assert_eq!(not_ready.body["status"], "not_ready");
    assert_eq!(not_ready.body["reasons"], json!(["sealed"]));
    app.post("/api/v4/system/rotate_master_key", json!({}))
        .await
        .expect(503);

    // Bad unseal bodies change nothing.
    let r = app
        .post("/api/v4/system/unseal", json!({ "key": "a", "pin": "b" }))
        .await
        .expect(400);
    assert_eq!(r.target(), "key");
    app.post("/api/v4/system/unseal", json!({ "share": "a" }))
        .await
        .expect(400);
    app.post("/api/v4/system/unseal", json!({ "passphrase": "x" }))
        .await
        .expect(400);
    app.get("/api/v4/vaults").await.expect(503);

    let unsealed = app
        .post("/api/v4/system/unseal", json!({}))
        .await
        .expect(200);
    assert_eq!(unsealed.body["sealed"], false);
    assert_eq!(unsealed.body["master_key_id"], master.as_str());
    let ready = app.get("/ready").await.expect(200);
    assert_eq!(ready.body, json!({"status": "ready"}));
    app.post("/api/v4/system/unseal", json!({}))
        .await
        .expect(409);
    app.get(&format!("/api/v4/managed_keys/{}", key.id()))
        .await
        .expect(200);
    app.key(&vault, "T1", "k2").await.expect(201);
}

#[tokio::test]
async fn master_key_rotation_reports_the_vault_keys_it_rewrapped() {
    let app = TestApp::new().await;
    for name in ["a", "b"] {
        let vault = app.vault(name).await;
        app.internal_keystore(&vault, "internal", &["g"]).await;
        app.template(&vault, "T1", "aes", "256", "active", "g")
            .await;
        app.key(&vault, "T1", "k").await.expect(201);
    }
    let before = app.get("/api/v4/system/seal_status").await.body;
    let r = app
        .post("/api/v4/system/rotate_master_key", json!({}))
        .await
        .expect(200);
    assert_eq!(r.body["previous_master_key_id"], before["master_key_id"]);
    assert_eq!(r.body["vault_keys_rewrapped"], 2);
    let after = app.get("/api/v4/system/seal_status").await.body;
    assert_eq!(after["master_key_id"], r.body["master_key_id"]);
    assert_ne!(after["master_key_id"], before["master_key_id"]);
    // Seal and unseal: the new master key is the one reopened.
    app.post("/api/v4/system/seal", json!({})).await.expect(200);
    let reopened = app
        .post("/api/v4/system/unseal", json!({}))
        .await
        .expect(200);
    assert_eq!(reopened.body["master_key_id"], r.body["master_key_id"]);
    app.post("/api/v4/system/rotate_master_key", json!({}))
        .await
        .expect(200);
}

/// A caller that may not unseal is refused before its body is read: it learns nothing of what
/// an unseal takes.
#[tokio::test]
async fn unseal_decides_on_the_caller_before_the_body() {
    let app = TestApp::new().await;
    app.add_caller("nobody", "nobody", &[]);
    let r = app
        .call_as(
            "nobody",
            "POST",
            "/api/v4/system/unseal",
            Some(json!({"key": "a", "pin": "b"})),
            &[],
        )
        .await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
}
