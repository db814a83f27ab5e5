//! The authorisation matrix (spec §8.1): every role, scoped to one vault, against the operations
//! of that vault and of another; nothing of the other vault leaks.

use keyplane_core::authz::Role;
use keyplane_testkit::{TestApp, TestResponse};
use serde_json::{Value, json};
use uuid::Uuid;

const ROLES: [(Role, &str); 5] = [
    (Role::Reader, "R"),
    (Role::KeyCustodianDeployer, "D"),
    (Role::KeyCustodianCreator, "C"),
    (Role::VaultAdministrator, "V"),
    (Role::Manager, "M"),
];

struct World {
    app: TestApp,
    mine: String,
    other: String,
    other_key: String,
    keystore: String,
}

async fn world() -> World {
    let app = TestApp::new().await;
    let mine = app.vault("mine").await;
    let other = app.vault("secret-other-vault").await;
    let keystore = app.internal_keystore(&mine, "ks-mine", &["g"]).await;
    app.internal_keystore(&other, "ks-secret-other", &["g"])
        .await;
    for vault in [&mine, &other] {
        app.template(vault, "PRE", "aes", "256", "pre_activation", "g")
            .await;
        app.template(vault, "ACT", "aes", "256", "active", "g")
            .await;
    }
    let other_key = app
        .key(&other, "ACT", "secret-other-key")
        .await
        .expect(201)
        .id();
    World {
        app,
        mine,
        other,
        other_key,
        keystore,
    }
}

impl World {
    async fn key(&self, template: &str) -> TestResponse {
        self.app
            .key(
                &self.mine,
                template,
                &format!("k-{}", Uuid::new_v4().simple()),
            )
            .await
            .expect(201)
    }

    /// Calls as `token` with the resource's current ETag.
    async fn with_etag(
        &self,
        token: &str,
        method: &str,
        resource: &str,
        action: &str,
        body: Option<Value>,
    ) -> TestResponse {
        let etag = self.app.get(resource).await.expect(200).etag();
        self.app
            .call_as(
                token,
                method,
                &format!("{resource}{action}"),
                body,
                &[("if-match", &etag)],
            )
            .await
    }
}

fn allowed(status: u16) -> bool {
    (200..300).contains(&status)
}

#[tokio::test]
async fn every_role_in_and_out_of_its_vault() {
    let w = world().await;
    let mine: Uuid = w.mine.parse().unwrap();
    for (role, short) in ROLES {
        let token = format!("token-{short}");
        w.app
            .add_caller(&token, &format!("caller-{short}"), &[(role, Some(mine))]);
        let can = |letters: &str| letters.contains(short);
        let mut checks: Vec<(&str, bool, u16)> = Vec::new();

        let r = w
            .app
            .call_as(
                &token,
                "GET",
                &format!("/api/v4/vaults/{}", w.mine),
                None,
                &[],
            )
            .await;
        checks.push(("read vault", true, r.status.as_u16()));
        let r = w
            .app
            .call_as(&token, "GET", "/api/v4/vaults", None, &[])
            .await;
        checks.push(("list vaults", can("DCVM"), r.status.as_u16()));
        if allowed(r.status.as_u16()) {
            assert_eq!(r.body["total_count"], 1, "{short} sees only its vault");
        }
        let r = w
            .app
            .call_as(&token, "GET", "/api/v4/managed_keys", None, &[])
            .await;
        if allowed(r.status.as_u16()) {
            assert!(
                !r.body.to_string().contains("secret-other"),
                "{short}: {}",
                r.body
            );
        }
        let r = w
            .with_etag(
                &token,
                "PATCH",
                &format!("/api/v4/vaults/{}", w.mine),
                "",
                Some(json!({"description": "x"})),
            )
            .await;
        checks.push(("edit vault", can("V"), r.status.as_u16()));
        let r = w
            .app
            .call_as(
                &token,
                "POST",
                "/api/v4/templates",
                Some(json!({
                "vault": {"id": w.mine}, "name": format!("T-{short}"),
                "key": {"algorithm": "aes", "size": "256", "state": "pre_activation"},
                "keystores": [{"type": "ibm_cloud_kms", "group": "g"}]})),
                &[],
            )
            .await;
        checks.push(("create template", can("CV"), r.status.as_u16()));
        let r = w
            .app
            .call_as(
                &token,
                "POST",
                "/api/v4/keystores",
                Some(json!({
                "type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": w.mine},
                "name": format!("ks-{short}"), "groups": ["h"]})),
                &[],
            )
            .await;
        checks.push(("create keystore", can("V"), r.status.as_u16()));
        let r = w
            .app
            .call_as(&token, "POST", "/api/v4/managed_keys", Some(json!({
                "vault": {"id": w.mine}, "template_name": "PRE", "label": format!("made-by-{short}")})), &[])
            .await;
        checks.push(("create key", can("C"), r.status.as_u16()));

        let pre = w.key("PRE").await.id();
        let path = format!("/api/v4/managed_keys/{pre}");
        let r = w
            .with_etag(
                &token,
                "PATCH",
                &path,
                "",
                Some(json!({"description": "edited"})),
            )
            .await;
        checks.push(("edit key", can("DC"), r.status.as_u16()));
        let r = w.with_etag(&token, "POST", &path, "/activate", None).await;
        checks.push(("activate pre-active key", can("D"), r.status.as_u16()));
        let pre = w.key("PRE").await.id();
        let r = w
            .with_etag(
                &token,
                "POST",
                &format!("/api/v4/managed_keys/{pre}"),
                "/destroy",
                None,
            )
            .await;
        checks.push(("destroy pre-active key", can("DC"), r.status.as_u16()));

        let active = w.key("ACT").await;
        let active_id = active.id();
        let path = format!("/api/v4/managed_keys/{active_id}");
        let r = w.with_etag(&token, "POST", &path, "/rotate", None).await;
        checks.push(("rotate key", can("C"), r.status.as_u16()));
        let key_ref = active.body["status_in_keystores"][0]["key_id_in_keystore"]
            .as_str()
            .unwrap();
        let r = w
            .app
            .call_as(
                &token,
                "POST",
                &format!("/api/v2/keys/{key_ref}/actions/wrap"),
                Some(json!({})),
                &[("bluemix-instance", &w.keystore)],
            )
            .await;
        checks.push(("wrap with a key", true, r.status.as_u16()));
        let r = w
            .with_etag(&token, "POST", &path, "/deactivate", None)
            .await;
        checks.push(("deactivate key", can("D"), r.status.as_u16()));
        // The administrator deactivates it, so every role meets the deactivated key.
        w.app.with_etag("POST", &path, "/deactivate", None).await;
        let r = w.with_etag(&token, "POST", &path, "/destroy", None).await;
        checks.push(("destroy deactivated key", can("V"), r.status.as_u16()));
        w.app.with_etag("POST", &path, "/destroy", None).await;
        let r = w.with_etag(&token, "DELETE", &path, "", None).await;
        checks.push(("remove destroyed key", can("V"), r.status.as_u16()));

        // The remaining endpoints of each resource.
        let t = w
            .app
            .template(
                &w.mine,
                &format!("X-{short}"),
                "aes",
                "256",
                "pre_activation",
                "g",
            )
            .await;
        let tpath = format!("/api/v4/templates/{t}");
        let r = w.app.call_as(&token, "GET", &tpath, None, &[]).await;
        checks.push(("read template", true, r.status.as_u16()));
        let r = w
            .app
            .call_as(&token, "GET", "/api/v4/templates", None, &[])
            .await;
        checks.push(("list templates", can("DCVM"), r.status.as_u16()));
        let r = w
            .with_etag(
                &token,
                "PATCH",
                &tpath,
                "",
                Some(json!({"description": "d"})),
            )
            .await;
        checks.push(("edit template", can("CV"), r.status.as_u16()));
        let r = w.with_etag(&token, "POST", &tpath, "/archive", None).await;
        checks.push(("archive template", can("CV"), r.status.as_u16()));
        if allowed(r.status.as_u16()) {
            w.app
                .with_etag("POST", &tpath, "/unarchive", None)
                .await
                .expect(200);
        }
        let r = w.with_etag(&token, "DELETE", &tpath, "", None).await;
        checks.push(("delete template", can("V"), r.status.as_u16()));

        let ks = w
            .app
            .internal_keystore(&w.mine, &format!("ks-x-{short}"), &["x"])
            .await;
        let kspath = format!("/api/v4/keystores/{ks}");
        for (what, suffix) in [("read keystore", ""), ("keystore status", "/status")] {
            let r = w
                .app
                .call_as(&token, "GET", &format!("{kspath}{suffix}"), None, &[])
                .await;
            checks.push((what, true, r.status.as_u16()));
        }
        let r = w
            .app
            .call_as(&token, "GET", &format!("{kspath}/managed_keys"), None, &[])
            .await;
        checks.push(("list a keystore's keys", can("DCVM"), r.status.as_u16()));
        let r = w
            .with_etag(
                &token,
                "PATCH",
                &kspath,
                "",
                Some(json!({"description": "d"})),
            )
            .await;
        checks.push(("edit keystore", can("V"), r.status.as_u16()));
        let r = w.with_etag(&token, "DELETE", &kspath, "", None).await;
        checks.push(("delete keystore", can("V"), r.status.as_u16()));

        let active = w.key("ACT").await;
        let kpath = format!("/api/v4/managed_keys/{}", active.id());
        for (what, suffix) in [
            ("key versions", "/versions"),
            ("key status", "/status_in_keystores"),
            ("key associations", "/associated_resources"),
        ] {
            let r = w
                .app
                .call_as(&token, "GET", &format!("{kpath}{suffix}"), None, &[])
                .await;
            checks.push((what, true, r.status.as_u16()));
        }
        let r = w
            .with_etag(&token, "POST", &kpath, "/sync_status_in_keystores", None)
            .await;
        checks.push(("sync key", can("DC"), r.status.as_u16()));
        let r = w
            .with_etag(&token, "POST", &kpath, "/update_from_template", None)
            .await;
        checks.push(("update key from template", can("DC"), r.status.as_u16()));
        let key_ref = active.body["status_in_keystores"][0]["key_id_in_keystore"]
            .as_str()
            .unwrap();
        let wrapped = w
            .app
            .call(
                "POST",
                &format!("/api/v2/keys/{key_ref}/actions/wrap"),
                Some(json!({})),
                &[("bluemix-instance", &w.keystore)],
            )
            .await
            .expect(200);
        for verb in ["unwrap", "rewrap"] {
            let r = w
                .app
                .call_as(
                    &token,
                    "POST",
                    &format!("/api/v2/keys/{key_ref}/actions/{verb}"),
                    Some(json!({"ciphertext": wrapped.body["ciphertext"]})),
                    &[("bluemix-instance", &w.keystore)],
                )
                .await;
            checks.push(("unwrap or rewrap", true, r.status.as_u16()));
        }
        let r = w
            .app
            .call_as(
                &token,
                "GET",
                "/api/v2/keys",
                None,
                &[("bluemix-instance", &w.keystore)],
            )
            .await;
        checks.push(("list installed keys", true, r.status.as_u16()));
        let r = w
            .with_etag(&token, "POST", &kpath, "/compromise", None)
            .await;
        checks.push(("mark key compromised", can("D"), r.status.as_u16()));

        for (what, expected, status) in checks {
            if expected {
                assert!(allowed(status), "{short} may {what}, got {status}");
            } else {
                assert_eq!(status, 403, "{short} may not {what}");
            }
        }

        // Out of scope: the other vault and its resources do not exist for this caller.
        for path in [
            format!("/api/v4/vaults/{}", w.other),
            format!("/api/v4/managed_keys/{}", w.other_key),
        ] {
            let r = w.app.call_as(&token, "GET", &path, None, &[]).await;
            assert_eq!(r.status.as_u16(), 404, "{short} {path}");
            assert!(!r.body.to_string().contains("secret-other"));
        }
        let r = w
            .app
            .call_as(
                &token,
                "POST",
                "/api/v4/managed_keys",
                Some(json!({
                "vault": {"id": w.other}, "template_name": "ACT", "label": "intruder"})),
                &[],
            )
            .await;
        assert_eq!(
            r.status.as_u16(),
            400,
            "{short}: as if the vault did not exist"
        );
        let r = w
            .app
            .call_as(
                &token,
                "GET",
                &format!("/api/v4/managed_keys?vault.id={}", w.other),
                None,
                &[],
            )
            .await;
        if allowed(r.status.as_u16()) {
            assert_eq!(r.body["total_count"], 0);
        }
        // Administration is for administrators.
        for path in [
            "/api/v4/access/principals",
            "/api/v4/audit_events",
            "/api/v4/system/seal_status",
        ] {
            assert_eq!(
                w.app
                    .call_as(&token, "GET", path, None, &[])
                    .await
                    .status
                    .as_u16(),
                403
            );
        }
    }
}

#[tokio::test]
async fn roles_on_every_vault_and_no_roles_at_all() {
    let w = world().await;
    w.app
        .add_caller("everywhere", "auditor", &[(Role::Manager, None)]);
    let r = w
        .app
        .call_as("everywhere", "GET", "/api/v4/vaults", None, &[])
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.body["total_count"], 2);
    assert_eq!(
        w.app
            .call_as(
                "everywhere",
                "POST",
                "/api/v4/vaults",
                Some(json!({"name": "n"})),
                &[]
            )
            .await
            .status
            .as_u16(),
        403
    );
    w.app
        .add_caller("vault-admin", "va", &[(Role::VaultAdministrator, None)]);
    assert_eq!(
        w.app
            .call_as(
                "vault-admin",
                "POST",
                "/api/v4/vaults",
                Some(json!({"name": "n"})),
                &[]
            )
            .await
            .status
            .as_u16(),
        201
    );
    w.app.add_caller("nobody", "nobody", &[]);
    // An id written with percent-escapes is the same id to the handler: it is refused, not
    // let through unchecked.
    let escaped = format!(
        "/api/v4/managed_keys/%{:02X}{}",
        w.other_key.as_bytes()[0],
        &w.other_key[1..]
    );
    let r = w.app.call_as("nobody", "GET", &escaped, None, &[]).await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
    let r = w
        .app
        .call_as("nobody", "DELETE", &escaped, None, &[("if-match", "*")])
        .await;
    assert_eq!(r.status.as_u16(), 403);
    assert_eq!(
        w.app
            .call_as("nobody", "GET", "/api/v4/vaults", None, &[])
            .await
            .status
            .as_u16(),
        403
    );
    assert_eq!(
        w.app
            .call_as(
                "nobody",
                "GET",
                &format!("/api/v4/vaults/{}", w.mine),
                None,
                &[]
            )
            .await
            .status
            .as_u16(),
        404
    );
}
