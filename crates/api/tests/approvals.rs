//! Dual control: destroying or removing a key in a vault under dual control waits for a second,
//! different principal.

use keyplane_core::authz::Role;
use keyplane_core::model::{Approval, ApprovalAction, ApprovalState};
use keyplane_testkit::TestApp;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_second_principal_approves_destroy_and_removal() {
    let app = TestApp::new().await;
    let vault = app.vault("guarded").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let vault_id: Uuid = vault.parse().unwrap();
    for (token, name, role) in [
        ("alice", "alice", Role::VaultAdministrator),
        ("bob", "bob", Role::VaultAdministrator),
        ("carol", "carol", Role::KeyCustodianCreator),
    ] {
        app.add_caller(token, name, &[(role, Some(vault_id))]);
    }
    app.add_caller("mallory", "mallory", &[]);
    let dc = format!("/api/v4/vaults/{vault}/dual_control");
    assert_eq!(app.get(&dc).await.expect(200).body["enabled"], false);
    app.call("PUT", &dc, Some(json!({ "enabled": true })), &[])
        .await
        .expect(200);
    assert_eq!(app.get(&dc).await.expect(200).body["enabled"], true);
    // A vault administrator reads the setting but cannot switch the guard off to act alone.
    assert_eq!(
        app.call_as("alice", "GET", &dc, None, &[])
            .await
            .expect(200)
            .body["enabled"],
        true
    );
    app.call_as("alice", "PUT", &dc, Some(json!({ "enabled": false })), &[])
        .await
        .expect(403);
    assert_eq!(app.get(&dc).await.expect(200).body["enabled"], true);

    let key = app.key(&vault, "T1", "guarded-key").await.expect(201).id();
    let path = format!("/api/v4/managed_keys/{key}");
    app.with_etag("POST", &path, "/deactivate", None)
        .await
        .expect(200);

    // A request, not an action.
    let etag = app.get(&path).await.expect(200).etag();
    let stale = app
        .call_as(
            "alice",
            "POST",
            &format!("{path}/destroy"),
            None,
            &[("if-match", "\"0-stale\"")],
        )
        .await;
    assert_eq!(
        stale.status.as_u16(),
        412,
        "a stale request is refused, nothing recorded"
    );
    let requested = app
        .call_as(
            "alice",
            "POST",
            &format!("{path}/destroy"),
            None,
            &[("if-match", &etag)],
        )
        .await
        .expect(202);
    let approval = requested.id();
    assert_eq!(requested.body["state"], "pending");
    assert_eq!(requested.body["requested_by"], "alice");
    assert!(
        requested.headers["location"]
            .to_str()
            .unwrap()
            .ends_with(&approval)
    );
    assert_eq!(
        app.get(&path).await.expect(200).body["state"],
        "deactivated"
    );

    let approve = format!("/api/v4/approvals/{approval}/approve");
    let own = app
        .call_as("alice", "POST", &approve, None, &[])
        .await
        .expect(409);
    assert!(own.message().contains("second, different principal"));
    // The same principal through its client certificate is still the requester.
    app.add_caller(
        "alice-cert",
        "cert:alice",
        &[(Role::VaultAdministrator, Some(vault_id))],
    );
    app.call_as("alice-cert", "POST", &approve, None, &[])
        .await
        .expect(409);
    app.call_as("carol", "POST", &approve, None, &[])
        .await
        .expect(403);
    app.call_as(
        "mallory",
        "GET",
        &format!("/api/v4/approvals/{approval}"),
        None,
        &[],
    )
    .await
    .expect(404);
    let done = app
        .call_as("bob", "POST", &approve, None, &[])
        .await
        .expect(200);
    assert_eq!(done.body["approval"]["state"], "approved");
    assert_eq!(done.body["approval"]["decided_by"], "bob");
    assert_eq!(done.body["managed_key"]["state"], "destroyed");
    app.call_as("bob", "POST", &approve, None, &[])
        .await
        .expect(409);

    // Removal: requested, then rejected; the key stays.
    let etag = app.get(&path).await.expect(200).etag();
    let requested = app
        .call_as("bob", "DELETE", &path, None, &[("if-match", &etag)])
        .await
        .expect(202);
    assert_eq!(requested.body["action"], "remove_key");
    let rejected = app
        .call_as(
            "alice",
            "POST",
            &format!("/api/v4/approvals/{}/reject", requested.id()),
            None,
            &[],
        )
        .await
        .expect(200);
    assert_eq!(rejected.body["state"], "rejected");
    app.get(&path).await.expect(200);
    let listed = app
        .call_as("alice", "GET", "/api/v4/approvals", None, &[])
        .await
        .expect(200);
    assert_eq!(listed.body["approvals"].as_array().unwrap().len(), 2);
    app.call_as("mallory", "GET", "/api/v4/approvals", None, &[])
        .await
        .expect(403);

    // An expired request cannot be approved.
    let expired = Approval {
        id: Uuid::now_v7(),
        vault_id,
        action: ApprovalAction::RemoveKey,
        key_id: key.parse().unwrap(),
        requested_by: "alice".into(),
        requested_at: chrono::Utc::now() - chrono::Duration::hours(25),
        expires_at: chrono::Utc::now() - chrono::Duration::hours(1),
        state: ApprovalState::Pending,
        decided_by: None,
        decided_at: None,
    };
    app.store.insert_approval(&expired).await.unwrap();
    let late = app
        .call_as(
            "bob",
            "POST",
            &format!("/api/v4/approvals/{}/approve", expired.id),
            None,
            &[],
        )
        .await
        .expect(409);
    assert!(late.message().contains("expired"));
    app.get(&path).await.expect(200);

    // Switched off, the action is immediate again.
    app.call("PUT", &dc, Some(json!({ "enabled": false })), &[])
        .await
        .expect(200);
    app.with_etag("DELETE", &path, "", None).await.expect(204);
}

/// An approval and a rejection sent together: whichever decides the request, the key's state
/// agrees with it — a rejected request never has its action carried out.
#[tokio::test]
async fn approve_and_reject_racing_agree_with_the_key() {
    let app = TestApp::new().await;
    let vault = app.vault("racing").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let vault_id: Uuid = vault.parse().unwrap();
    for name in ["alice", "bob", "carol"] {
        app.add_caller(name, name, &[(Role::VaultAdministrator, Some(vault_id))]);
    }
    app.require_dual_control(&vault).await;
    for round in 0..8 {
        let key = app
            .key(&vault, "T1", &format!("race-{round}"))
            .await
            .expect(201)
            .id();
        let path = format!("/api/v4/managed_keys/{key}");
        app.with_etag("POST", &path, "/deactivate", None)
            .await
            .expect(200);
        let etag = app.get(&path).await.expect(200).etag();
        let approval = app
            .call_as(
                "alice",
                "POST",
                &format!("{path}/destroy"),
                None,
                &[("if-match", &etag)],
            )
            .await
            .expect(202)
            .id();
        let approve = format!("/api/v4/approvals/{approval}/approve");
        let reject = format!("/api/v4/approvals/{approval}/reject");
        let (approved, rejected) = tokio::join!(
            app.call_as("bob", "POST", &approve, None, &[]),
            app.call_as("carol", "POST", &reject, None, &[]),
        );
        let state = app.get(&path).await.expect(200).body["state"].clone();
        let decided = app
            .get(&format!("/api/v4/approvals/{approval}"))
            .await
            .expect(200)
            .body["state"]
            .clone();
        assert!(
            approved.status.is_success() != rejected.status.is_success(),
            "round {round}: exactly one decides ({} / {})",
            approved.status,
            rejected.status
        );
        if decided == "approved" {
            assert_eq!(state, "destroyed", "round {round}");
            assert!(approved.status.is_success());
        } else {
            assert_eq!(decided, "rejected", "round {round}");
            assert_eq!(
                state, "deactivated",
                "round {round}: a rejected request acts not"
            );
            assert!(rejected.status.is_success());
        }
    }
}
