//! Adoption's door: who may adopt, what a body must say, and what an adopted key refuses. The
//! proof of copies at their keystores is tested end to end (`crates/cli/tests/migrate_from_uko.rs`)
//! against real keystores.

use keyplane_core::authz::Role;
use keyplane_testkit::TestApp;
use serde_json::{Value, json};
use uuid::Uuid;

const ADOPT: &str = "/api/v4/managed_keys/adopt";

fn destroyed_key(vault: &str, id: &str) -> Value {
    json!({
        "id": id,
        "vault": {"id": vault},
        "template_name": "T1",
        "label": "retired-ledger",
        "description": "kept for the record",
        "state": "destroyed",
        "algorithm": "aes",
        "size": "256",
        "version": 3,
        "versions": [{"version": 1, "state": "destroyed"}],
        "activation_date": "2024-01-02",
        "created_at": "2024-01-01T10:00:00Z",
        "tags": [{"name": "team", "value": "payments"}],
    })
}

#[tokio::test]
async fn a_destroyed_key_is_adopted_as_a_record_with_its_versions() {
    let app = TestApp::new().await;
    let vault = app.vault("adopting").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let id = Uuid::now_v7().to_string();

    let adopted = app
        .post(ADOPT, destroyed_key(&vault, &id))
        .await
        .expect(201)
        .body;
    assert_eq!(
        adopted["id"],
        id.as_str(),
        "the source's id is kept where free"
    );
    assert_eq!(adopted["material"], "external");
    assert_eq!(adopted["state"], "destroyed");
    assert_eq!(adopted["version"], 3);
    assert_eq!(adopted["created_at"], "2024-01-01T10:00:00.000Z");
    assert_eq!(adopted["tags"][0]["value"], "payments");
    assert_eq!(adopted["referenced_keystores"], json!([]));
    let read = app
        .get(&format!("/api/v4/managed_keys/{id}"))
        .await
        .expect(200)
        .body;
    assert_eq!(read["material"], "external");
    let versions = app
        .get(&format!("/api/v4/managed_keys/{id}/versions"))
        .await
        .expect(200)
        .body;
    assert_eq!(versions["total_count"], 3);
    assert!(
        versions["managed_keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["material"] == "external")
    );

    // The same id again is another key (labels are unique): it gets an id of its own.
    let mut another = destroyed_key(&vault, &id);
    another["label"] = json!("retired-ledger-2");
    let again = app.post(ADOPT, another).await.expect(201).body;
    assert_ne!(again["id"], id.as_str());

    // Nothing of a destroyed adopted key comes back to life.
    for action in ["activate", "rotate"] {
        let r = app
            .with_etag(
                "POST",
                &format!("/api/v4/managed_keys/{id}"),
                &format!("/{action}"),
                None,
            )
            .await;
        assert_eq!(r.status.as_u16(), 409, "{action}: {}", r.body);
    }

    // A key made here carries its material.
    let held = app.key(&vault, "T1", "made-here").await.expect(201).body;
    assert_eq!(held["material"], "held");
}

#[tokio::test]
async fn adoption_refuses_bad_bodies_and_changes_nothing() {
    let app = TestApp::new().await;
    let vault = app.vault("strict").await;
    let internal = app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let other_vault = app.vault("elsewhere").await;
    let elsewhere = app.internal_keystore(&other_vault, "theirs", &["g"]).await;
    let good = destroyed_key(&vault, &Uuid::now_v7().to_string());
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let live = |copies: Value| {
        let mut body = with("state", json!("active"));
        body["copies"] = copies;
        body
    };
    let cases = [
        (with("colour", json!("red")), 400, "colour"),
        (without("label"), 400, "label"),
        (without("vault"), 400, "vault.id"),
        (without("state"), 400, "state"),
        (with("state", json!("pre_activation")), 400, "state"),
        (with("state", json!("sleeping")), 400, "state"),
        (with("version", json!(0)), 400, "version"),
        (with("size", json!("128")), 400, "algorithm"),
        (with("template_name", json!("T9")), 400, "template_name"),
        (with("created_at", json!("yesterday")), 400, "created_at"),
        (with("id", json!("not-a-uuid")), 400, "id"),
        (
            with("versions", json!([{"version": 7, "state": "destroyed"}])),
            400,
            "versions",
        ),
        (live(json!([])), 400, "copies"),
        (
            live(json!([{"keystore": {"id": internal}, "key_id_in_keystore": "k"}])),
            400,
            "copies[0].keystore.id",
        ),
        (
            live(json!([{"keystore": {"id": elsewhere}, "key_id_in_keystore": "k"}])),
            400,
            "copies[0].keystore.id",
        ),
        (
            live(json!([{"keystore": {"id": internal}}])),
            400,
            "copies[0].key_id_in_keystore",
        ),
        (
            {
                let mut body = good.clone();
                body["copies"] = json!([{"keystore": {"id": internal}, "key_id_in_keystore": "k"}]);
                body
            },
            400,
            "copies",
        ),
    ];
    for (body, status, target) in cases {
        let r = app.post(ADOPT, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
        assert_eq!(r.target(), target, "{body}: {}", r.body);
    }
    let r = app
        .call_raw_as(keyplane_testkit::TEST_TOKEN, "POST", ADOPT, "{\"label\": ")
        .await;
    assert_eq!(r.status.as_u16(), 400);
    let keys = app
        .get("/api/v4/managed_keys?state=pre_activation,active,deactivated,compromised,destroyed,destroyed_compromised")
        .await
        .expect(200)
        .body;
    assert_eq!(keys["total_count"], 0, "nothing was recorded: {keys}");
}

#[tokio::test]
async fn only_those_who_create_and_distribute_keys_in_the_vault_adopt() {
    let app = TestApp::new().await;
    let vault = app.vault("guarded").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let vault_id: Uuid = vault.parse().unwrap();
    let other: Uuid = app.vault("other").await.parse().unwrap();
    app.add_caller("reader", "reader", &[(Role::Reader, Some(vault_id))]);
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
    app.add_caller(
        "outsider",
        "outsider",
        &[(Role::Administrator, Some(other))],
    );
    app.add_caller(
        "vault-admin",
        "vault-admin",
        &[(Role::VaultAdministrator, Some(vault_id))],
    );
    let body = destroyed_key(&vault, &Uuid::now_v7().to_string());
    // Adopting records a key: the right to create keys in the vault, and to link them.
    for who in ["reader", "deployer", "vault-admin"] {
        let r = app
            .call_as(who, "POST", ADOPT, Some(body.clone()), &[])
            .await;
        assert_eq!(r.status.as_u16(), 403, "{who}: {}", r.body);
    }
    // Another vault's administrator learns nothing of this vault.
    let r = app
        .call_as("outsider", "POST", ADOPT, Some(body.clone()), &[])
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert_eq!(r.target(), "vault.id");
    let r = app
        .call_as("creator", "POST", ADOPT, Some(body.clone()), &[])
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    // Other methods on the path are not adoption.
    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        let r = app.call(method, ADOPT, None, &[]).await;
        assert!(
            [404, 405].contains(&r.status.as_u16()),
            "{method}: {} {}",
            r.status,
            r.body
        );
    }
}

#[tokio::test]
async fn adoption_refuses_dates_ids_and_names_that_could_reach_past_the_key() {
    let app = TestApp::new().await;
    let vault = app.vault("careful").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let aws = app
        .post(
            "/api/v4/keystores",
            json!({"type": "aws_kms", "vault": {"id": vault}, "name": "aws", "groups": ["cloud"],
                   "aws_region": "us_east_1", "aws_access_key_id": "a",
                   "aws_secret_access_key": "b"}),
        )
        .await
        .expect(201)
        .id();
    let bao = app
        .post(
            "/api/v4/keystores",
            json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": "bao",
                   "groups": ["bao"], "hashicorp_address": "https://bao.example:8200",
                   "hashicorp_token": "t"}),
        )
        .await
        .expect(201)
        .id();
    for (name, keystore_type, group) in
        [("TA", "aws_kms", "cloud"), ("TB", "hashicorp_vault", "bao")]
    {
        app.post(
            "/api/v4/templates",
            json!({"vault": {"id": vault}, "name": name,
                   "key": {"algorithm": "aes", "size": "256", "state": "active"},
                   "keystores": [{"type": keystore_type, "group": group}]}),
        )
        .await
        .expect(201);
    }
    let good = destroyed_key(&vault, &Uuid::now_v7().to_string());
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let live = |template: &str, keystore: &str, remote: &str, label: Option<&str>| {
        let mut body = with("state", json!("active"));
        body["template_name"] = json!(template);
        body["versions"] = json!([]);
        body["copies"] = json!([{"keystore": {"id": keystore}, "key_id_in_keystore": remote}]);
        if let Some(l) = label {
            body["copies"][0]["label_in_keystore"] = json!(l);
        }
        body
    };
    let later = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let cases = [
        // History is not in the future, and an active key was never deactivated.
        (with("created_at", json!(later)), "created_at"),
        (with("rotated_at", json!(later)), "rotated_at"),
        (with("deactivated_at", json!(later)), "deactivated_at"),
        (
            {
                let mut body = live("TA", &aws, "1234abcd-12ab-34cd-56ef-1234567890ab", None);
                body["deactivated_at"] = json!("2020-01-01T00:00:00Z");
                body
            },
            "deactivated_at",
        ),
        (
            with(
                "versions",
                json!([{"version": 1, "state": "destroyed"}, {"version": 1, "state": "destroyed"}]),
            ),
            "versions",
        ),
        (
            with(
                "versions",
                json!([{"version": 2, "state": "pre_activation"}]),
            ),
            "versions",
        ),
        (
            with(
                "verification_patterns",
                json!([{"method": "ENC-ZERO", "value": "a\u{7}b"}]),
            ),
            "verification_patterns",
        ),
        (
            with(
                "verification_patterns",
                json!(
                    (0..9)
                        .map(|_| json!({"method": "M", "value": "V"}))
                        .collect::<Vec<_>>()
                ),
            ),
            "verification_patterns",
        ),
        // A keystore's id for a key never steps outside it.
        (
            live("TB", &bao, "../../kv/app", None),
            "copies[0].key_id_in_keystore",
        ),
        (
            live("TB", &bao, "orders?x=1", None),
            "copies[0].key_id_in_keystore",
        ),
        (
            live("TA", &aws, "arn:aws:kms:us-east-1:1:key/../x", None),
            "copies[0].key_id_in_keystore",
        ),
        (live("TA", &aws, "", None), "copies[0].key_id_in_keystore"),
        (
            live("TB", &bao, "orders", Some("orders?x")),
            "copies[0].label_in_keystore",
        ),
        (
            live(
                "TA",
                &aws,
                "1234abcd-12ab-34cd-56ef-1234567890ab",
                Some("aws/reserved"),
            ),
            "copies[0].label_in_keystore",
        ),
    ];
    for (body, target) in cases {
        let r = app.post(ADOPT, body.clone()).await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {}", r.body);
        assert_eq!(r.target(), target, "{body}: {}", r.body);
    }
    // A well-formed id reaches the next check: no connector here for the keystore.
    let r = app.post(ADOPT, live("TB", &bao, "orders", None)).await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.target(), "copies[0].keystore.id", "{}", r.body);
}

#[tokio::test]
async fn adopting_orders_the_templates_schedules_and_follows_its_naming_scheme() {
    let app = TestApp::new().await;
    let vault = app.vault("scheduled-adoption").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.post(
        "/api/v4/templates",
        json!({"vault": {"id": vault}, "name": "T1", "naming_scheme": "<APP>-<ENV>",
               "key": {"algorithm": "aes", "size": "256", "state": "active",
                       "destroy_after_deactivation": "P30D"},
               "keystores": [{"type": "ibm_cloud_kms", "group": "g"}]}),
    )
    .await
    .expect(201);
    let vault_id: Uuid = vault.parse().unwrap();
    app.add_caller(
        "creator",
        "creator",
        &[(Role::KeyCustodianCreator, Some(vault_id))],
    );
    let mut body = destroyed_key(&vault, &Uuid::now_v7().to_string());
    body["label"] = json!("billing-prod");
    // The template destroys keys on a schedule: adopting one under it takes that right.
    let r = app
        .call_as("creator", "POST", ADOPT, Some(body.clone()), &[])
        .await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
    let adopted = app.post(ADOPT, body.clone()).await.expect(201).body;
    assert_eq!(
        adopted["label_tags"],
        json!([{"name": "APP", "value": "billing"}, {"name": "ENV", "value": "prod"}])
    );
    body["id"] = json!(Uuid::now_v7().to_string());
    body["label"] = json!("nohyphen");
    let r = app.post(ADOPT, body).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert_eq!(r.target(), "label");
}
