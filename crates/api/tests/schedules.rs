//! Schedules order an action in advance: setting one takes the right to that action in the
//! key's vault, and none may destroy keys where destruction waits for a second person.

use keyplane_core::authz::Role;
use keyplane_testkit::{TEST_TOKEN, TestApp};
use serde_json::{Value, json};
use uuid::Uuid;

async fn patch_as(app: &TestApp, who: &str, path: &str, body: Value) -> (u16, Value) {
    let etag = app.get(path).await.expect(200).etag();
    let r = app
        .call_as(who, "PATCH", path, Some(body), &[("if-match", &etag)])
        .await;
    (r.status.as_u16(), r.body)
}

#[tokio::test]
async fn setting_a_schedule_takes_the_right_to_its_action() {
    let app = TestApp::new().await;
    let vault = app.vault("scheduled").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let vault_id: Uuid = vault.parse().unwrap();
    // A creator may rotate but not deactivate or destroy active keys' successors; a deployer
    // may deactivate but not rotate or destroy deactivated keys.
    app.add_caller(
        "creator",
        "creator",
        &[(Role::KeyCustodianCreator, Some(vault_id))],
    );
    app.add_caller(
        "deployer",
        "deployer",
        &[(Role::KeyCustodianDeployer, Some(vault_id))],
    );
    let key = app.key(&vault, "T1", "governed").await.expect(201).id();
    let path = format!("/api/v4/managed_keys/{key}");

    for (who, body) in [
        ("creator", json!({"destroy_after_deactivation": "P30D"})),
        ("creator", json!({"deactivate_on_expiration": true})),
        ("deployer", json!({"rotation_interval": "P30D"})),
        ("deployer", json!({"destroy_after_deactivation": "P30D"})),
    ] {
        let (status, answer) = patch_as(&app, who, &path, body.clone()).await;
        assert_eq!(status, 403, "{who} {body}: {answer}");
    }
    let key_now = app.get(&path).await.expect(200).body;
    assert!(key_now.get("rotation_interval").is_none());
    assert!(key_now.get("destroy_after_deactivation").is_none());
    assert!(key_now.get("deactivate_on_expiration").is_none());

    let (status, answer) =
        patch_as(&app, "creator", &path, json!({"rotation_interval": "P30D"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rotation_interval"], "P30D");
    let (status, answer) = patch_as(
        &app,
        "deployer",
        &path,
        json!({"deactivate_on_expiration": true}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // Clearing a schedule takes no more than the edit; an unchanged one is not checked again.
    let (status, answer) = patch_as(
        &app,
        "deployer",
        &path,
        json!({"rotation_interval": "", "description": "cleared"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("rotation_interval").is_none());
    let (status, answer) = patch_as(
        &app,
        "deployer",
        &path,
        json!({"deactivate_on_expiration": true, "description": "again"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // The same holds for a template's schedules, which its keys copy.
    let template = app
        .get(&format!("/api/v4/templates?vault.id={vault}&name=T1"))
        .await
        .expect(200)
        .body["templates"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.add_caller(
        "author",
        "author",
        &[(Role::KeyCustodianCreator, Some(vault_id))],
    );
    let template_path = format!("/api/v4/templates/{template}");
    let (status, _) = patch_as(
        &app,
        "author",
        &template_path,
        json!({"key": {"destroy_after_deactivation": "P30D"}}),
    )
    .await;
    assert!(status == 403, "a creator orders no destruction: {status}");
}

#[tokio::test]
async fn no_schedule_destroys_keys_under_dual_control() {
    let app = TestApp::new().await;
    let vault = app.vault("two-person").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let key = app.key(&vault, "T1", "guarded").await.expect(201).id();
    app.require_dual_control(&vault).await;
    let path = format!("/api/v4/managed_keys/{key}");
    let (status, answer) = patch_as(
        &app,
        TEST_TOKEN,
        &path,
        json!({"destroy_after_deactivation": "P30D"}),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("dual control"),
        "{answer}"
    );
    assert!(
        app.get(&path)
            .await
            .expect(200)
            .body
            .get("destroy_after_deactivation")
            .is_none()
    );
    let r = app
        .post(
            "/api/v4/templates",
            json!({"vault": {"id": vault}, "name": "T2",
                   "key": {"algorithm": "aes", "size": "256", "state": "active",
                           "destroy_after_deactivation": "P30D"},
                   "keystores": [{"type": "ibm_cloud_kms", "group": "g"}]}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
    // Rotation and deactivation schedules are not guarded by dual control.
    let (status, answer) = patch_as(
        &app,
        TEST_TOKEN,
        &path,
        json!({"rotation_interval": "P90D", "deactivate_on_expiration": true}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// Realigning a key with its template copies the template's schedules onto the key: that
/// orders their actions, so it takes the rights to them as a key's PATCH does.
#[tokio::test]
async fn realigning_a_key_with_a_scheduling_template_takes_the_rights_to_its_actions() {
    let app = TestApp::new().await;
    let vault = app.vault("realigned").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    let template = app
        .template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let key = app
        .key(&vault, "T1", "realigned-key")
        .await
        .expect(201)
        .id();
    let (status, answer) = patch_as(
        &app,
        TEST_TOKEN,
        &format!("/api/v4/templates/{template}"),
        json!({"key": {"destroy_after_deactivation": "P30D"}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let vault_id: Uuid = vault.parse().unwrap();
    // A creator distributes keys but may not destroy deactivated ones.
    app.add_caller(
        "creator",
        "creator",
        &[(Role::KeyCustodianCreator, Some(vault_id))],
    );
    let path = format!("/api/v4/managed_keys/{key}");
    let etag = app.get(&path).await.expect(200).etag();
    let r = app
        .call_as(
            "creator",
            "POST",
            &format!("{path}/update_from_template"),
            None,
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
    assert!(
        app.get(&path)
            .await
            .body
            .get("destroy_after_deactivation")
            .is_none()
    );
    let r = app
        .with_etag("POST", &path, "/update_from_template", None)
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(r.body["destroy_after_deactivation"], "P30D");
}
