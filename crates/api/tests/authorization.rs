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
    other_keystore: String,
}

async fn world() -> World {
    let app = TestApp::new().await;
    let mine = app.vault("mine").await;
    let other = app.vault("secret-other-vault").await;
    let keystore = app.internal_keystore(&mine, "ks-mine", &["g"]).await;
    let other_keystore = app
        .internal_keystore(&other, "ks-secret-other", &["g"])
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
        other_keystore,
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
    // An id written with percent-escapes is the same id to the handler: it is decided on as
    // that id, and a key of a vault the caller has no role in does not exist for it.
    let escaped = format!(
        "/api/v4/managed_keys/%{:02X}{}",
        w.other_key.as_bytes()[0],
        &w.other_key[1..]
    );
    let r = w.app.call_as("nobody", "GET", &escaped, None, &[]).await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.body);
    let r = w
        .app
        .call_as("nobody", "DELETE", &escaped, None, &[("if-match", "*")])
        .await;
    assert_eq!(r.status.as_u16(), 404);
    w.app
        .get(&format!("/api/v4/managed_keys/{}", w.other_key))
        .await
        .expect(200);
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

/// A body the authorisation step cannot read is refused, never let through unchecked: a caller
/// with no policies cannot create in another vault by sending one that only the handler reads.
#[tokio::test]
async fn a_body_authorisation_cannot_read_creates_nothing() {
    let w = world().await;
    w.app.add_caller("nobody", "nobody", &[]);
    let vault = &w.other;
    let key = format!(r#"{{"vault":{{"id":"{vault}"}},"template_name":"ACT","label":"intruder""#);
    let template = format!(
        r#"{{"vault":{{"id":"{vault}"}},"name":"INTRUDER","key":{{"algorithm":"aes","size":"256","state":"active"}},"keystores":[{{"type":"ibm_cloud_kms","group":"g"}}]"#
    );
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let mut bodies: Vec<(&str, Vec<u8>)> = Vec::new();
    for (path, start) in [
        ("/api/v4/managed_keys", &key),
        ("/api/v4/templates", &template),
    ] {
        bodies.push((path, format!("{start}}}x").into_bytes()));
        bodies.push((path, format!("{start}}}{start}}}").into_bytes()));
        bodies.push((path, format!(r#"{start},"unknown":1e400}}"#).into_bytes()));
        bodies.push((
            path,
            format!(r#"{start},"unknown":"\ud800"}}"#).into_bytes(),
        ));
        bodies.push((path, format!(r#"{start},"unknown":{deep}}}"#).into_bytes()));
        let mut bad_utf8 = format!(r#"{start},"unknown":""#).into_bytes();
        bad_utf8.extend_from_slice(b"\xff\xfe\"}");
        bodies.push((path, bad_utf8));
    }
    for (path, body) in bodies {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(120)
            .collect::<String>();
        let r = w.app.call_raw_as("nobody", "POST", path, body).await;
        assert_eq!(r.status.as_u16(), 400, "{path} {shown}: {}", r.body);
    }
    // Nothing was created in the other vault.
    let keys = w
        .app
        .get(&format!(
            "/api/v4/managed_keys?vault.id={vault}&label=intruder"
        ))
        .await
        .expect(200);
    assert_eq!(keys.body["total_count"], 0, "{}", keys.body);
    let templates = w
        .app
        .get(&format!("/api/v4/templates?vault.id={vault}&name=INTRUDER"))
        .await
        .expect(200);
    assert_eq!(templates.body["total_count"], 0, "{}", templates.body);
    // A body without a vault is refused before anything else is looked at.
    let r = w
        .app
        .call_raw_as(
            "nobody",
            "POST",
            "/api/v4/managed_keys",
            r#"{"template_name":"ACT","label":"intruder"}"#,
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert_eq!(r.target(), "vault.id");
}

/// Bytes after the JSON value are refused on every route, for every caller.
#[tokio::test]
async fn a_body_is_exactly_one_json_value() {
    let w = world().await;
    for body in [r#"{"name":"a"}garbage"#, r#"{"name":"a"}{"name":"b"}"#] {
        let r = w
            .app
            .call_raw_as(keyplane_testkit::TEST_TOKEN, "POST", "/api/v4/vaults", body)
            .await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {}", r.body);
    }
    // Nor is any value but an object a body: serde would fill a struct from an array.
    for body in [r#"["a", "from an array", null]"#, "null", "\"a\"", "1"] {
        let r = w
            .app
            .call_raw_as(keyplane_testkit::TEST_TOKEN, "POST", "/api/v4/vaults", body)
            .await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {}", r.body);
    }
    let vaults = w.app.get("/api/v4/vaults?name=a").await.expect(200);
    assert_eq!(vaults.body["total_count"], 0, "{}", vaults.body);
    // Trailing white space is still one value.
    let r = w
        .app
        .call_raw_as(
            keyplane_testkit::TEST_TOKEN,
            "POST",
            "/api/v4/vaults",
            "{\"name\":\"a\"}\n  ",
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
}

/// HEAD answers as GET would for the same caller: the same status, and for a list the same
/// scope, so its `Content-Length` tells nothing GET would not.
#[tokio::test]
async fn head_answers_as_get_for_every_role() {
    let w = world().await;
    let mine: Uuid = w.mine.parse().unwrap();
    let own_key = w.key("ACT").await.id();
    let paths = [
        "/api/v4/managed_keys".to_owned(),
        format!(
            "/api/v4/managed_keys?vault.id={}&label=secret-other-key",
            w.other
        ),
        "/api/v4/vaults".to_owned(),
        "/api/v4/templates".to_owned(),
        "/api/v4/keystores".to_owned(),
        format!("/api/v4/managed_keys/{own_key}"),
        format!("/api/v4/managed_keys/{}", w.other_key),
        format!("/api/v4/vaults/{}", w.mine),
        format!("/api/v4/vaults/{}", w.other),
        format!("/api/v4/keystores/{}", w.keystore),
        "/api/v4/access/principals".to_owned(),
        "/api/v4/audit_events".to_owned(),
    ];
    let mut callers = vec![("nobody".to_owned(), Vec::new())];
    for (role, short) in ROLES {
        callers.push((format!("token-{short}"), vec![(role, Some(mine))]));
    }
    for (token, policies) in &callers {
        w.app.add_caller(token, token, policies);
        for path in &paths {
            let get = w.app.call_as(token, "GET", path, None, &[]).await;
            let head = w.app.call_as(token, "HEAD", path, None, &[]).await;
            assert_eq!(get.status, head.status, "{token} HEAD {path}");
            if get.status.is_success() {
                assert_eq!(
                    get.headers.get("content-length"),
                    head.headers.get("content-length"),
                    "{token} HEAD {path}"
                );
            }
        }
    }
}

/// A data-plane call naming a keystore of a vault the caller has no role in answers as for a
/// keystore that does not exist: nothing of it, nor of its vault, is revealed.
#[tokio::test]
async fn another_vaults_keystore_answers_as_an_unknown_one() {
    let w = world().await;
    let mine: Uuid = w.mine.parse().unwrap();
    w.app
        .add_caller("manager", "manager", &[(Role::Manager, Some(mine))]);
    let key = Uuid::new_v4();
    let unknown = Uuid::new_v4().to_string();
    for (method, path, body) in [
        (
            "POST",
            format!("/api/v2/keys/{key}/actions/wrap"),
            Some(json!({})),
        ),
        ("GET", format!("/api/v2/keys/{key}"), None),
        ("GET", "/api/v2/keys".to_owned(), None),
    ] {
        let answer = |instance: String| {
            let (path, body) = (path.clone(), body.clone());
            let app = &w.app;
            async move {
                let r = app
                    .call_as(
                        "manager",
                        method,
                        &path,
                        body,
                        &[("bluemix-instance", &instance)],
                    )
                    .await;
                let text = r.body.to_string().replace(&instance, "<instance>");
                (r.status, text)
            }
        };
        let hidden = answer(w.other_keystore.clone()).await;
        let missing = answer(unknown.clone()).await;
        assert_eq!(hidden.0.as_u16(), 404, "{method} {path}: {}", hidden.1);
        // The trace differs; everything else is alike.
        let strip = |t: &str| {
            let mut v: Value = serde_json::from_str(t).unwrap();
            if let Some(resource) = v["resources"][0].as_object_mut() {
                resource.remove("correlationId");
            }
            v
        };
        assert_eq!(strip(&hidden.1), strip(&missing.1), "{method} {path}");
        assert!(!hidden.1.contains(&w.other), "{}", hidden.1);
    }
}

/// Every operation of the OpenAPI document, as a caller with no roles and as every role scoped
/// to one vault, on that vault's resources and on another's, with a well-formed body and with
/// malformed ones: a refused call changes nothing, a malformed body is never accepted where the
/// well-formed one was refused, nothing answers 5xx, and the other vault never changes.
#[tokio::test]
async fn every_operation_as_every_role_with_well_formed_and_malformed_bodies() {
    let mut callers: Vec<(&str, Option<Role>)> = vec![("nobody", None)];
    for (role, short) in ROLES {
        callers.push((short, Some(role)));
    }
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    // The well-formed body made unreadable in the ways that once slipped past authorisation:
    // bytes after it, a field only a lenient reader skips, invalid UTF-8.
    let malformed = |body: &Value| -> Vec<Vec<u8>> {
        let text = body.to_string();
        let open = text.strip_suffix('}').unwrap_or("{").to_owned();
        let sep = if open.len() > 1 { "," } else { "" };
        let mut bad_utf8 = format!("{open}{sep}\"unknown\":\"").into_bytes();
        bad_utf8.extend_from_slice(b"\xff\"}");
        vec![
            format!("{text}x").into_bytes(),
            format!("{text}{text}").into_bytes(),
            format!("{open}{sep}\"unknown\":1e400}}").into_bytes(),
            format!("{open}{sep}\"unknown\":\"\\ud800\"}}").into_bytes(),
            format!("{open}{sep}\"unknown\":{deep}}}").into_bytes(),
            bad_utf8,
        ]
    };
    for (short, scope) in &callers {
        let m = MatrixWorld::new().await;
        let mine: Uuid = m.w.mine.parse().unwrap();
        let policies: Vec<(Role, Option<Uuid>)> =
            scope.iter().map(|role| (*role, Some(mine))).collect();
        m.w.app.add_caller("caller", short, &policies);
        let doc = m.w.app.get("/api/v4/openapi.json").await.expect(200).body;
        let other_before = m.snapshot(&m.w.other).await;
        for (template, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let takes_body = operation.get("requestBody").is_some();
                let method = method.to_uppercase();
                for in_mine in [true, false] {
                    // A list, or a vault's creation, names no vault: one pass is enough.
                    let names_no_vault = !template.contains("{id}")
                        && !template.starts_with("/api/v2/")
                        && (method == "GET" || template == "/api/v4/vaults");
                    if !in_mine && names_no_vault {
                        continue;
                    }
                    let Some((path, headers)) = m.concrete(template, in_mine) else {
                        continue;
                    };
                    let vault = if in_mine { &m.w.mine } else { &m.w.other };
                    let what = format!("{short} {method} {path}");
                    let before = m.snapshot(vault).await;
                    let body = takes_body.then(|| m.well_formed_body(template, vault));
                    let headers: Vec<(&str, &str)> =
                        headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let well =
                        m.w.app
                            .call_as("caller", &method, &path, body.clone(), &headers)
                            .await;
                    let status = well.status.as_u16();
                    assert!(status < 500, "{what}: {status} {}", well.body);
                    if !in_mine || short == &"nobody" {
                        assert!(status >= 400, "{what} was let through: {}", well.body);
                    }
                    if status >= 400 {
                        assert_eq!(m.snapshot(vault).await, before, "{what} changed state");
                    }
                    // Nothing of the other vault shows, beyond an id the caller sent itself.
                    let shown = well.body.to_string();
                    assert!(
                        !shown.contains("secret-other")
                            && (!in_mine || !shown.contains(m.w.other.as_str())),
                        "{what} shows the other vault: {shown}"
                    );
                    if method == "GET" || method == "DELETE" {
                        continue;
                    }
                    for bad in &malformed(body.as_ref().unwrap_or(&json!({}))) {
                        let before = m.snapshot(vault).await;
                        let mut req = axum::http::Request::builder()
                            .method(method.as_str())
                            .uri(&path)
                            .header("authorization", "Bearer caller")
                            .header("content-type", "application/json");
                        for (k, v) in &headers {
                            req = req.header(*k, *v);
                        }
                        let r =
                            m.w.app
                                .send(req.body(axum::body::Body::from(bad.clone())).unwrap())
                                .await;
                        let bad_status = r.status.as_u16();
                        assert!(bad_status < 500, "{what} (malformed): {}", r.body);
                        // An operation that reads a body refuses a malformed one; one that
                        // reads none must still refuse whom the well-formed call refused.
                        if takes_body || status >= 400 {
                            assert!(
                                (400..500).contains(&bad_status),
                                "{what} with a malformed body: {bad_status} {}",
                                r.body
                            );
                            assert_eq!(m.snapshot(vault).await, before, "{what} (malformed)");
                        }
                    }
                }
            }
        }
        assert_eq!(
            m.snapshot(&m.w.other).await,
            other_before,
            "{short} changed the other vault"
        );
    }
}

/// The authorisation world with a resource of each kind in both vaults, to put in paths.
struct MatrixWorld {
    w: World,
    /// Per vault (mine, other): template, key, key reference, approval.
    ids: [[String; 4]; 2],
    keystores: [String; 2],
    principal: String,
    api_key: String,
    policy: String,
}

impl MatrixWorld {
    async fn new() -> Self {
        let w = world().await;
        let app = &w.app;
        let mut ids: [[String; 4]; 2] = Default::default();
        for (i, vault) in [&w.mine, &w.other].into_iter().enumerate() {
            let template = app
                .get(&format!("/api/v4/templates?vault.id={vault}&name=ACT"))
                .await
                .expect(200)
                .body["templates"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let key = app
                .key(vault, "ACT", &format!("m-{}", Uuid::new_v4().simple()))
                .await
                .expect(201);
            let key_ref = key.body["status_in_keystores"][0]["key_id_in_keystore"]
                .as_str()
                .unwrap()
                .to_owned();
            // A pending approval: dual control on, a deactivated key's destroy requested.
            app.require_dual_control(vault).await;
            let doomed = app
                .key(vault, "ACT", &format!("d-{}", Uuid::new_v4().simple()))
                .await
                .expect(201)
                .id();
            let path = format!("/api/v4/managed_keys/{doomed}");
            app.with_etag("POST", &path, "/deactivate", None)
                .await
                .expect(200);
            let approval = app
                .with_etag("POST", &path, "/destroy", None)
                .await
                .expect(202)
                .id();
            ids[i] = [template, key.id(), key_ref, approval];
        }
        let other_keystore = w.other_keystore.clone();
        let keystores = [w.keystore.clone(), other_keystore];
        let principal = app
            .post("/api/v4/access/principals", json!({"name": "matrix-p"}))
            .await
            .expect(201)
            .id();
        let api_key = app
            .post(
                &format!("/api/v4/access/principals/{principal}/api_keys"),
                json!({}),
            )
            .await
            .expect(201)
            .id();
        let policy = app
            .post(
                "/api/v4/access/policies",
                json!({"principal": {"id": principal}, "role": "reader"}),
            )
            .await
            .expect(201)
            .id();
        Self {
            w,
            ids,
            keystores,
            principal,
            api_key,
            policy,
        }
    }

    /// The path with its id filled in for the vault (mine or the other), and the headers the
    /// call needs; `None` for paths that take no caller (sign-in, health, the document).
    fn concrete(
        &self,
        template: &str,
        in_mine: bool,
    ) -> Option<(String, Vec<(&'static str, String)>)> {
        let i = usize::from(!in_mine);
        let vault = if in_mine { &self.w.mine } else { &self.w.other };
        let [template_id, key, key_ref, approval] = &self.ids[i];
        let mut headers = Vec::new();
        let id = if template.starts_with("/api/v2/") {
            headers.push(("bluemix-instance", self.keystores[i].clone()));
            key_ref.clone()
        } else if template.starts_with("/api/v4/vaults/") {
            vault.clone()
        } else if template.starts_with("/api/v4/templates/") {
            template_id.clone()
        } else if template.starts_with("/api/v4/keystores/") {
            self.keystores[i].clone()
        } else if template.starts_with("/api/v4/managed_keys/") {
            key.clone()
        } else if template.starts_with("/api/v4/approvals/") {
            approval.clone()
        } else if template.starts_with("/api/v4/access/principals/") {
            self.principal.clone()
        } else if template.starts_with("/api/v4/access/api_keys/") {
            self.api_key.clone()
        } else if template.starts_with("/api/v4/access/policies/") {
            self.policy.clone()
        } else {
            String::new()
        };
        if template == "/api/v4/openapi.json" || template.starts_with("/identity") {
            return None;
        }
        // Global resources have no vault: the second pass would only repeat the first.
        if !in_mine
            && (template.starts_with("/api/v4/access")
                || template.starts_with("/api/v4/system")
                || template.starts_with("/api/v4/audit_events"))
        {
            return None;
        }
        let path = template.replace("{id}", &id).replace("{alias}", "an-alias");
        let etag_free = path.contains('{');
        assert!(!etag_free, "a path parameter not filled in: {template}");
        headers.push(("if-match", "*".to_owned()));
        Some((path, headers))
    }

    /// A body a client would send, naming the vault where the operation takes one.
    fn well_formed_body(&self, template: &str, vault: &str) -> Value {
        let unique = Uuid::new_v4().simple().to_string();
        match template {
            "/api/v4/vaults" => json!({"name": format!("v-{unique}")}),
            "/api/v4/templates" => json!({
                "vault": {"id": vault}, "name": format!("T{}", &unique[..10]),
                "key": {"algorithm": "aes", "size": "256", "state": "active"},
                "keystores": [{"type": "ibm_cloud_kms", "group": "g"}]}),
            "/api/v4/keystores" => json!({"type": "ibm_cloud_kms", "ibm_variant": "internal",
                "vault": {"id": vault}, "name": format!("ks-{unique}"), "groups": ["g"]}),
            "/api/v4/managed_keys" => json!({"vault": {"id": vault}, "template_name": "ACT",
                "label": format!("k-{unique}")}),
            "/api/v4/vaults/{id}"
            | "/api/v4/templates/{id}"
            | "/api/v4/keystores/{id}"
            | "/api/v4/managed_keys/{id}" => json!({"description": "changed"}),
            "/api/v4/vaults/{id}/dual_control" => json!({"enabled": false}),
            "/api/v4/access/principals" => json!({"name": format!("p-{unique}")}),
            "/api/v4/access/policies" => {
                json!({"principal": {"id": self.principal}, "role": "manager"})
            }
            "/api/v2/keys" => json!({"resources": [{"name": format!("kp-{unique}")}]}),
            _ => json!({}),
        }
    }

    /// What the vault holds, as an administrator reads it: every resource with its revision.
    async fn snapshot(&self, vault: &str) -> Vec<String> {
        let app = &self.w.app;
        let mut seen = Vec::new();
        for (list, key) in [
            (format!("/api/v4/vaults/{vault}"), ""),
            (
                format!("/api/v4/templates?vault.id={vault}&limit=1000"),
                "templates",
            ),
            (
                format!("/api/v4/keystores?vault.id={vault}&limit=1000"),
                "keystores",
            ),
            (
                format!(
                    "/api/v4/managed_keys?vault.id={vault}&limit=1000&state=pre_activation,active,deactivated,destroyed,compromised,destroyed_compromised"
                ),
                "managed_keys",
            ),
            (format!("/api/v4/vaults/{vault}/dual_control"), ""),
            ("/api/v4/approvals".to_owned(), "approvals"),
            (
                "/api/v4/access/principals?limit=1000".to_owned(),
                "principals",
            ),
            ("/api/v4/access/policies".to_owned(), "policies"),
        ] {
            let r = app.get(&list).await;
            let items = if key.is_empty() {
                vec![r.body.clone()]
            } else {
                r.body[key].as_array().cloned().unwrap_or_default()
            };
            for item in items {
                // Approvals are listed for every vault: only this one's count here.
                if item["vault_id"].is_string() && item["vault_id"] != vault {
                    continue;
                }
                let fields = [
                    "id",
                    "updated_at",
                    "state",
                    "enabled",
                    "version",
                    "name",
                    "label",
                ];
                let line: Vec<String> = fields.iter().map(|f| item[*f].to_string()).collect();
                seen.push(format!("{list}: {}", line.join(" ")));
            }
        }
        seen.sort();
        seen
    }
}
