//! Principals and API keys under /api/v4/access.

use keyplane_testkit::TestApp;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn principals_and_api_keys_lifecycle() {
    let app = TestApp::new().await;
    let p = app
        .post(
            "/api/v4/access/principals",
            json!({ "name": "ci-pipeline", "kind": "service", "description": "deploys" }),
        )
        .await
        .expect(201);
    let id = p.id();
    assert_eq!(p.body["kind"], "service");
    assert_eq!(p.body["created_by"], "tester");
    app.post(
        "/api/v4/access/principals",
        json!({ "name": "ci-pipeline" }),
    )
    .await
    .expect(409);
    let bad = app
        .post("/api/v4/access/principals", json!({ "name": "has space" }))
        .await
        .expect(400);
    assert_eq!(bad.target(), "name");
    app.post(
        "/api/v4/access/principals",
        json!({ "name": "x", "kind": "robot" }),
    )
    .await
    .expect(400);
    app.post(
        "/api/v4/access/principals",
        json!({ "name": "x", "role": "admin" }),
    )
    .await
    .expect(400);
    let list = app.get("/api/v4/access/principals").await.expect(200);
    assert_eq!(list.body["total_count"], 1);
    assert_eq!(list.body["principals"][0]["name"], "ci-pipeline");

    let key = app
        .post(
            &format!("/api/v4/access/principals/{id}/api_keys"),
            json!({ "name": "main" }),
        )
        .await
        .expect(201);
    let secret = key.body["apikey"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("kp_") && secret.len() > 60);
    assert!(key.body.get("key_hash").is_none());
    let key_id = key.id();
    let keys = app
        .get(&format!("/api/v4/access/principals/{id}/api_keys"))
        .await
        .expect(200);
    assert_eq!(keys.body["api_keys"].as_array().unwrap().len(), 1);
    assert!(
        !keys.body.to_string().contains(&secret),
        "the key is shown once"
    );

    let rotated = app
        .post(
            &format!("/api/v4/access/api_keys/{key_id}/rotate"),
            json!({}),
        )
        .await
        .expect(201);
    assert_ne!(rotated.id(), key_id);
    assert_ne!(rotated.body["apikey"], secret.as_str());
    assert_eq!(rotated.body["name"], "main");
    let keys = app
        .get(&format!("/api/v4/access/principals/{id}/api_keys"))
        .await
        .expect(200);
    let old = keys.body["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap()
        .clone();
    assert!(
        old["revoked_at"].is_string(),
        "rotation revokes the old key"
    );
    app.post(
        &format!("/api/v4/access/api_keys/{key_id}/rotate"),
        json!({}),
    )
    .await
    .expect(404);

    app.call(
        "DELETE",
        &format!("/api/v4/access/api_keys/{}", rotated.id()),
        None,
        &[],
    )
    .await
    .expect(204);
    app.call(
        "DELETE",
        &format!("/api/v4/access/api_keys/{}", rotated.id()),
        None,
        &[],
    )
    .await
    .expect(404);
    app.call(
        "DELETE",
        &format!("/api/v4/access/principals/{id}"),
        None,
        &[],
    )
    .await
    .expect(204);
    app.get(&format!("/api/v4/access/principals/{id}"))
        .await
        .expect(404);
    app.post(
        &format!("/api/v4/access/principals/{id}/api_keys"),
        json!({}),
    )
    .await
    .expect(404);

    // Every change is audited, and no key ever reaches an event.
    let events = app.get("/api/v4/audit_events?limit=100").await.expect(200);
    let text = events.body.to_string();
    assert!(!text.contains(&secret));
    assert!(text.contains(&format!("api_keys/{key_id}")));
    assert!(text.contains(&format!("principals/{id}")));
}

#[tokio::test]
async fn policies_grant_roles_on_every_vault_or_one() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let p = app
        .post("/api/v4/access/principals", json!({ "name": "custodian" }))
        .await
        .expect(201)
        .id();
    let everywhere = app
        .post(
            "/api/v4/access/policies",
            json!({ "principal": { "id": p }, "role": "manager" }),
        )
        .await
        .expect(201);
    assert!(everywhere.body["vault_id"].is_null());
    let scoped = app
        .post(
            "/api/v4/access/policies",
            json!({ "principal": { "id": p }, "role": "key_custodian_deployer", "vault": { "id": vault } }),
        )
        .await
        .expect(201);
    assert_eq!(scoped.body["vault_id"], vault.as_str());
    app.post(
        "/api/v4/access/policies",
        json!({ "principal": { "id": p }, "role": "manager" }),
    )
    .await
    .expect(409);
    let bad = app
        .post(
            "/api/v4/access/policies",
            json!({ "principal": { "id": p }, "role": "owner" }),
        )
        .await
        .expect(400);
    assert_eq!(bad.target(), "role");
    app.post(
        "/api/v4/access/policies",
        json!({ "principal": { "id": p }, "role": "administrator", "vault": { "id": vault } }),
    )
    .await
    .expect(400);
    app.post(
        "/api/v4/access/policies",
        json!({ "principal": { "id": Uuid::new_v4() }, "role": "reader" }),
    )
    .await
    .expect(400);
    app.post(
        "/api/v4/access/policies",
        json!({ "principal": { "id": p }, "role": "reader", "vault": { "id": Uuid::new_v4() } }),
    )
    .await
    .expect(400);
    let listed = app
        .get(&format!("/api/v4/access/policies?principal.id={p}"))
        .await
        .expect(200);
    assert_eq!(listed.body["policies"].as_array().unwrap().len(), 2);
    app.call(
        "DELETE",
        &format!("/api/v4/access/policies/{}", everywhere.id()),
        None,
        &[],
    )
    .await
    .expect(204);
    let listed = app.get("/api/v4/access/policies").await.expect(200);
    assert_eq!(listed.body["policies"].as_array().unwrap().len(), 1);
}

/// A principal cannot take the name of an admin token or of keyplane's own identities, so the
/// audit trail's initiators and dual control's requesters each name one identity.
#[tokio::test]
async fn principals_cannot_take_reserved_identities() {
    let app = TestApp::new().await;
    for name in [
        "admin",
        "Admin",
        "admin-1a2b3c4d",
        "anonymous",
        "scheduler",
        "many",
    ] {
        let r = app
            .post("/api/v4/access/principals", json!({ "name": name }))
            .await
            .expect(400);
        assert_eq!(r.target(), "name", "{name}");
        assert!(r.message().contains("reserved"), "{}", r.body);
    }
    let listed = app.get("/api/v4/access/principals").await.expect(200);
    assert_eq!(listed.body["total_count"], 0, "{}", listed.body);
    app.post(
        "/api/v4/access/principals",
        json!({ "name": "administrator-of-payments" }),
    )
    .await
    .expect(201);
}
