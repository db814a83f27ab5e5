//! Key templates through the UKO v4 API (spec §2 #6–#13, §3.2, §4.2, §6, §7.5; decisions.md).

use keyplane_testkit::{PUBLIC_URL, TestApp};
use serde_json::{Value, json};

const TEMPLATES: &str = "/api/v4/templates";

fn path(id: &str) -> String {
    format!("{TEMPLATES}/{id}")
}

/// A complete, valid creation body.
fn body(vault: &str, name: &str) -> Value {
    json!({
        "vault": { "id": vault },
        "name": name,
        "description": "AES keys for prod",
        "key": { "algorithm": "aes", "size": 256, "state": "active",
                 "activation_date": "P0D", "expiration_date": "P2Y" },
        "keystores": [{ "type": "ibm_cloud_kms", "group": "prod" }]
    })
}

/// Removes a dotted path (`key.algorithm`, `vault.id`) from a JSON object.
fn without(mut v: Value, dotted: &str) -> Value {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().expect("path");
    let mut cur = &mut v;
    for p in parts {
        cur = &mut cur[p];
    }
    cur.as_object_mut().expect("object").remove(last);
    v
}

fn names(list: &Value) -> Vec<String> {
    list["templates"]
        .as_array()
        .expect("templates array")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn list_names(app: &TestApp, query: &str) -> Vec<String> {
    let r = app.get(&format!("{TEMPLATES}?{query}")).await.expect(200);
    let got = names(&r.body);
    assert_eq!(
        r.body["total_count"].as_i64(),
        Some(got.len() as i64),
        "total_count of ?{query}: {}",
        r.body
    );
    sorted(got)
}

fn strs(v: &[&str]) -> Vec<String> {
    sorted(v.iter().map(|s| (*s).to_owned()).collect())
}

// ---- create ----

#[tokio::test]
async fn create_applies_defaults_and_returns_location_and_etag() {
    let app = TestApp::new().await;
    let vault = app.vault("payments").await;
    let r = app
        .post(TEMPLATES, body(&vault, "AWS-PROD-AES"))
        .await
        .expect(201);

    let b = &r.body;
    let id = r.id();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "id is a UUID: {b}");
    assert_eq!(b["name"], "AWS-PROD-AES");
    assert_eq!(b["type"], json!(["user_defined"]));
    assert_eq!(b["state"], "unarchived");
    assert_eq!(b["version"], 1);
    assert_eq!(b["keys_count"], 0);
    assert_eq!(b["description"], "AES keys for prod");
    assert_eq!(b["vault"]["id"], vault.as_str());
    assert_eq!(b["vault"]["name"], "payments");
    // size was sent as a number and is emitted as a string
    assert_eq!(b["key"]["size"], json!("256"));
    assert_eq!(b["key"]["algorithm"], "aes");
    assert_eq!(b["key"]["state"], "active");
    assert_eq!(b["key"]["expiration_date"], "P2Y");
    assert_eq!(b["keystores"][0]["type"], "ibm_cloud_kms");
    assert_eq!(b["keystores"][0]["group"], "prod");
    assert_eq!(b["keystores"].as_array().map(Vec::len), Some(1));

    let href = b["href"].as_str().expect("href");
    assert_eq!(href, format!("{PUBLIC_URL}/api/v4/templates/{id}"));
    let location = r
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location header");
    assert_eq!(location, href);
    let etag = r.etag();
    assert!(!etag.is_empty(), "ETag on create");

    // The stored resource reads back the same, with the same ETag.
    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.etag(), etag);
    assert_eq!(g.body["name"], "AWS-PROD-AES");
    assert_eq!(g.body["key"]["size"], json!("256"));
    assert_eq!(g.body["type"], json!(["user_defined"]));
    assert_eq!(g.body["state"], "unarchived");
    assert_eq!(g.body["version"], 1);
}

#[tokio::test]
async fn size_as_string_is_accepted() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let mut b = body(&vault, "T-string-size");
    b["key"]["size"] = json!("128");
    let r = app.post(TEMPLATES, b).await.expect(201);
    assert_eq!(r.body["key"]["size"], json!("128"));
}

#[tokio::test]
async fn missing_fields_are_400_naming_the_field() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    for field in [
        "name",
        "key",
        "key.algorithm",
        "key.size",
        "keystores",
        "vault.id",
        "vault",
    ] {
        let r = app
            .post(TEMPLATES, without(body(&vault, "T1"), field))
            .await
            .expect(400);
        let expected = if field == "vault" { "vault.id" } else { field };
        assert_eq!(r.code(), "missing_field", "without {field}: {}", r.body);
        assert_eq!(r.target(), expected, "without {field}: {}", r.body);
        assert_eq!(r.body["status_code"], 400);
        let trace = r
            .headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .expect("X-Correlation-ID");
        assert_eq!(r.body["trace"], trace, "trace equals X-Correlation-ID");
    }
    // The keystore entry needs its type and group.
    for field in ["type", "group"] {
        let mut b = body(&vault, "T1");
        b["keystores"][0]
            .as_object_mut()
            .expect("entry")
            .remove(field);
        let r = app.post(TEMPLATES, b).await.expect(400);
        assert_eq!(r.target(), format!("keystores.{field}"), "{}", r.body);
    }
    // Nothing was stored by the failed attempts.
    let list = app.get(TEMPLATES).await.expect(200);
    assert_eq!(list.body["total_count"], 0);
}

#[tokio::test]
async fn names_must_match_the_template_name_rule() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let too_long = format!("A{}", "b".repeat(30));
    for bad in [
        "1starts-with-digit",
        "has space",
        "under_score",
        "-dash",
        "",
        too_long.as_str(),
    ] {
        let r = app.post(TEMPLATES, body(&vault, bad)).await.expect(400);
        assert_eq!(r.target(), "name", "name {bad:?}: {}", r.body);
    }
    // The boundaries that are allowed.
    app.post(TEMPLATES, body(&vault, "A")).await.expect(201);
    app.post(TEMPLATES, body(&vault, &format!("A{}", "b".repeat(29))))
        .await
        .expect(201);
    app.post(TEMPLATES, body(&vault, "Abc-123"))
        .await
        .expect(201);
}

#[tokio::test]
async fn unsupported_algorithms_and_sizes_are_400() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;

    let mut des = body(&vault, "T-des");
    des["key"]["algorithm"] = json!("des");
    des["key"]["size"] = json!("168");
    let r = app.post(TEMPLATES, des).await.expect(400);
    assert_eq!(r.target(), "key.algorithm", "{}", r.body);

    let mut dilithium = body(&vault, "T-dil");
    dilithium["key"]["algorithm"] = json!("dilithium");
    let r = app.post(TEMPLATES, dilithium).await.expect(400);
    assert_eq!(r.target(), "key.algorithm", "{}", r.body);

    let mut aes100 = body(&vault, "T-aes100");
    aes100["key"]["size"] = json!("100");
    let r = app.post(TEMPLATES, aes100).await.expect(400);
    assert_eq!(r.target(), "key.size", "{}", r.body);

    let mut rsa256 = body(&vault, "T-rsa256");
    rsa256["key"]["algorithm"] = json!("rsa");
    let r = app.post(TEMPLATES, rsa256).await.expect(400);
    assert_eq!(r.target(), "key.size", "{}", r.body);

    // AWS KMS takes AES-256 only.
    let mut aws128 = body(&vault, "T-aws128");
    aws128["key"]["size"] = json!("128");
    aws128["keystores"][0]["type"] = json!("aws_kms");
    let r = app.post(TEMPLATES, aws128).await.expect(400);
    assert_eq!(r.target(), "key.size", "{}", r.body);

    let mut aws256 = body(&vault, "T-aws256");
    aws256["keystores"][0]["type"] = json!("aws_kms");
    app.post(TEMPLATES, aws256).await.expect(201);

    // An unknown algorithm name is a bad field too.
    let mut unknown = body(&vault, "T-unknown");
    unknown["key"]["algorithm"] = json!("blowfish");
    let r = app.post(TEMPLATES, unknown).await.expect(400);
    assert_eq!(r.target(), "key.algorithm", "{}", r.body);

    let list = app.get(TEMPLATES).await.expect(200);
    assert_eq!(names(&list.body), ["T-aws256"]);
}

#[tokio::test]
async fn keystores_needs_exactly_one_entry() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;

    let mut none = body(&vault, "T-none");
    none["keystores"] = json!([]);
    let r = app.post(TEMPLATES, none).await.expect(400);
    assert_eq!(r.target(), "keystores", "{}", r.body);

    let mut two = body(&vault, "T-two");
    two["keystores"] = json!([
        { "type": "ibm_cloud_kms", "group": "a" },
        { "type": "ibm_cloud_kms", "group": "b" }
    ]);
    let r = app.post(TEMPLATES, two).await.expect(400);
    assert_eq!(r.target(), "keystores", "{}", r.body);

    let list = app.get(TEMPLATES).await.expect(200);
    assert_eq!(list.body["total_count"], 0);
}

#[tokio::test]
async fn unknown_vault_is_400_on_vault_id() {
    let app = TestApp::new().await;
    let r = app
        .post(
            TEMPLATES,
            body("8d1c0b3e-6f0e-4f55-9a51-6f4c3a0e2b11", "T1"),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "vault.id", "{}", r.body);

    let r = app
        .post(TEMPLATES, body("not-a-uuid", "T1"))
        .await
        .expect(400);
    assert_eq!(r.target(), "vault.id", "{}", r.body);
}

#[tokio::test]
async fn type_needs_at_least_one_known_value() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let mut b = body(&vault, "T1");
    b["type"] = json!([]);
    let r = app.post(TEMPLATES, b).await.expect(400);
    assert_eq!(r.target(), "type", "{}", r.body);
    let mut b = body(&vault, "T1");
    b["type"] = json!(["weird"]);
    let r = app.post(TEMPLATES, b).await.expect(400);
    assert!(r.target().starts_with("type"), "{}", r.body);
}

#[tokio::test]
async fn duplicate_name_in_a_vault_is_409_but_another_vault_may_reuse_it() {
    let app = TestApp::new().await;
    let v1 = app.vault("v1").await;
    let v2 = app.vault("v2").await;
    let first = app.post(TEMPLATES, body(&v1, "Shared")).await.expect(201);
    let r = app.post(TEMPLATES, body(&v1, "Shared")).await.expect(409);
    assert_eq!(r.code(), "duplicate_name", "{}", r.body);

    let other = app.post(TEMPLATES, body(&v2, "Shared")).await.expect(201);
    assert_ne!(other.id(), first.id());
    assert_eq!(other.body["vault"]["id"], v2.as_str());

    let in_v1 = app
        .get(&format!("{TEMPLATES}?vault.id={v1}"))
        .await
        .expect(200);
    assert_eq!(in_v1.body["total_count"], 1);
}

// ---- get ----

#[tokio::test]
async fn get_unknown_is_404_and_non_uuid_is_400() {
    let app = TestApp::new().await;
    let r = app
        .get(&path("0b6f3c1e-2a34-4d5e-8f90-123456789abc"))
        .await
        .expect(404);
    assert_eq!(r.code(), "not_found", "{}", r.body);
    let r = app.get(&path("not-a-uuid")).await.expect(400);
    assert_eq!(r.target(), "id", "{}", r.body);
}

// ---- update ----

#[tokio::test]
async fn patch_needs_if_match_and_a_current_etag() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let created = app.post(TEMPLATES, body(&vault, "T1")).await.expect(201);
    let id = created.id();
    let old_etag = created.etag();

    let r = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "description": "no header" })),
            &[],
        )
        .await
        .expect(428);
    assert_eq!(r.code(), "precondition_required", "{}", r.body);

    let ok = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "description": "first" })),
            &[("if-match", &old_etag)],
        )
        .await
        .expect(200);
    assert_eq!(ok.body["description"], "first");
    assert_eq!(ok.body["version"], 2);
    assert_ne!(ok.etag(), old_etag, "ETag changes on a write");

    // The ETag read before the write is stale now.
    let r = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "description": "second" })),
            &[("if-match", &old_etag)],
        )
        .await
        .expect(412);
    assert_eq!(r.code(), "etag_mismatch", "{}", r.body);

    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.body["description"], "first");
    assert_eq!(g.body["version"], 2);
    assert_eq!(g.etag(), ok.etag());
}

#[tokio::test]
async fn patch_changes_mutable_fields_and_bumps_version() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let id = app
        .post(TEMPLATES, body(&vault, "T1"))
        .await
        .expect(201)
        .id();

    let r = app
        .with_etag(
            "PATCH",
            &path(&id),
            "",
            Some(json!({
                "name": "T1-renamed",
                "description": "changed",
                "key": { "state": "pre_activation", "expiration_date": "P1Y",
                         "deactivate_on_rotation": true },
                "keystores": [{ "group": "staging" }]
            })),
        )
        .await
        .expect(200);
    assert_eq!(r.body["version"], 2);

    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.body["name"], "T1-renamed");
    assert_eq!(g.body["description"], "changed");
    assert_eq!(g.body["key"]["state"], "pre_activation");
    assert_eq!(g.body["key"]["expiration_date"], "P1Y");
    assert_eq!(g.body["key"]["deactivate_on_rotation"], true);
    assert_eq!(g.body["key"]["algorithm"], "aes");
    assert_eq!(g.body["key"]["size"], "256");
    assert_eq!(g.body["keystores"][0]["group"], "staging");
    assert_eq!(g.body["keystores"][0]["type"], "ibm_cloud_kms");

    app.with_etag(
        "PATCH",
        &path(&id),
        "",
        Some(json!({ "description": "again" })),
    )
    .await
    .expect(200);
    assert_eq!(app.get(&path(&id)).await.expect(200).body["version"], 3);
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let mut b = body(&vault, "T1");
    b["naming_scheme"] = json!("<APP>-<ENV>");
    let id = app.post(TEMPLATES, b).await.expect(201).id();

    let cases = [
        (json!({ "naming_scheme": "X-<APP>" }), "naming_scheme"),
        (json!({ "key": { "algorithm": "rsa" } }), "key.algorithm"),
        (json!({ "key": { "size": "128" } }), "key.size"),
        (json!({ "key": { "size": 128 } }), "key.size"),
        (
            json!({ "keystores": [{ "type": "aws_kms", "group": "prod" }] }),
            "keystores.type",
        ),
    ];
    for (patch, field) in cases {
        let r = app
            .with_etag("PATCH", &path(&id), "", Some(patch.clone()))
            .await
            .expect(400);
        assert_eq!(r.target(), field, "patch {patch}: {}", r.body);
    }

    // Nothing changed, and the version did not move.
    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.body["version"], 1);
    assert_eq!(g.body["naming_scheme"], "<APP>-<ENV>");
    assert_eq!(g.body["key"]["algorithm"], "aes");
    assert_eq!(g.body["key"]["size"], "256");
    assert_eq!(g.body["keystores"][0]["type"], "ibm_cloud_kms");

    // Resending the current values is not a change.
    let r = app
        .with_etag(
            "PATCH",
            &path(&id),
            "",
            Some(json!({
                "naming_scheme": "<APP>-<ENV>",
                "key": { "algorithm": "aes", "size": "256" },
                "keystores": [{ "type": "ibm_cloud_kms", "group": "prod" }]
            })),
        )
        .await
        .expect(200);
    assert_eq!(r.body["version"], 2);
}

#[tokio::test]
async fn patch_keystores_needs_exactly_one_entry() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let id = app
        .post(TEMPLATES, body(&vault, "T1"))
        .await
        .expect(201)
        .id();
    let r = app
        .with_etag(
            "PATCH",
            &path(&id),
            "",
            Some(json!({ "keystores": [{ "group": "a" }, { "group": "b" }] })),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "keystores", "{}", r.body);
    let r = app
        .with_etag("PATCH", &path(&id), "", Some(json!({ "keystores": [] })))
        .await
        .expect(400);
    assert_eq!(r.target(), "keystores", "{}", r.body);
    assert_eq!(
        app.get(&path(&id)).await.expect(200).body["keystores"][0]["group"],
        "prod"
    );
}

#[tokio::test]
async fn patch_validates_names_and_keeps_them_unique() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    app.post(TEMPLATES, body(&vault, "Taken")).await.expect(201);
    let id = app
        .post(TEMPLATES, body(&vault, "Mine"))
        .await
        .expect(201)
        .id();

    let r = app
        .with_etag(
            "PATCH",
            &path(&id),
            "",
            Some(json!({ "name": "not valid" })),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "name", "{}", r.body);

    let r = app
        .with_etag("PATCH", &path(&id), "", Some(json!({ "name": "Taken" })))
        .await
        .expect(409);
    assert_eq!(r.code(), "duplicate_name", "{}", r.body);

    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.body["name"], "Mine");
    assert_eq!(g.body["version"], 1);
}

#[tokio::test]
async fn if_match_accepts_star_and_weak_forms() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let created = app.post(TEMPLATES, body(&vault, "T1")).await.expect(201);
    let id = created.id();

    let weak = format!("W/{}", created.etag());
    let first = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "description": "weak" })),
            &[("if-match", &weak)],
        )
        .await
        .expect(200);
    assert_eq!(first.body["description"], "weak");
    let second = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "description": "star" })),
            &[("if-match", "*")],
        )
        .await
        .expect(200);
    assert_ne!(second.etag(), first.etag(), "every write changes the ETag");
    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.body["description"], "star");
    assert_eq!(g.body["version"], 3);
}

// ---- archive / unarchive / expose ----

#[tokio::test]
async fn archive_and_unarchive_transitions() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let created = app.post(TEMPLATES, body(&vault, "T1")).await.expect(201);
    let id = created.id();

    // Lifecycle actions need If-Match like every other write.
    let r = app
        .call("POST", &format!("{}/archive", path(&id)), None, &[])
        .await
        .expect(428);
    assert_eq!(r.code(), "precondition_required");

    let a = app
        .with_etag("POST", &path(&id), "/archive", None)
        .await
        .expect(200);
    assert_eq!(a.body["state"], "archived");
    assert_ne!(a.etag(), created.etag());
    assert_eq!(
        app.get(&path(&id)).await.expect(200).body["state"],
        "archived"
    );

    let r = app
        .with_etag("POST", &path(&id), "/archive", None)
        .await
        .expect(409);
    assert_eq!(r.code(), "invalid_state_transition", "{}", r.body);

    let u = app
        .with_etag("POST", &path(&id), "/unarchive", None)
        .await
        .expect(200);
    assert_eq!(u.body["state"], "unarchived");
    assert_eq!(
        app.get(&path(&id)).await.expect(200).body["state"],
        "unarchived"
    );

    let r = app
        .with_etag("POST", &path(&id), "/unarchive", None)
        .await
        .expect(409);
    assert_eq!(r.code(), "invalid_state_transition", "{}", r.body);
}

#[tokio::test]
async fn expose_turns_a_shadow_template_into_a_user_defined_one() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;

    let regular = app
        .post(TEMPLATES, body(&vault, "Regular"))
        .await
        .expect(201)
        .id();
    let r = app
        .with_etag("POST", &path(&regular), "/expose", None)
        .await
        .expect(409);
    assert_eq!(r.code(), "invalid_state_transition", "{}", r.body);
    assert_eq!(
        app.get(&path(&regular)).await.expect(200).body["type"],
        json!(["user_defined"])
    );

    let mut b = body(&vault, "Shadow");
    b["type"] = json!(["shadow"]);
    let created = app.post(TEMPLATES, b).await.expect(201);
    assert_eq!(created.body["type"], json!(["shadow"]));
    let shadow = created.id();

    let e = app
        .with_etag("POST", &path(&shadow), "/expose", None)
        .await
        .expect(200);
    assert_eq!(e.body["type"], json!(["user_defined"]));
    assert_ne!(e.etag(), created.etag());
    assert_eq!(
        app.get(&path(&shadow)).await.expect(200).body["type"],
        json!(["user_defined"])
    );

    // Exposing twice: it is no longer a shadow template.
    app.with_etag("POST", &path(&shadow), "/expose", None)
        .await
        .expect(409);
}

#[tokio::test]
async fn archived_templates_refuse_edits_and_new_keys() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    app.internal_keystore(&vault, "ks", &["prod"]).await;
    let id = app
        .post(TEMPLATES, body(&vault, "T1"))
        .await
        .expect(201)
        .id();
    app.with_etag("POST", &path(&id), "/archive", None)
        .await
        .expect(200);

    let r = app
        .with_etag("PATCH", &path(&id), "", Some(json!({ "description": "x" })))
        .await
        .expect(409);
    assert_eq!(r.code(), "template_archived", "{}", r.body);
    assert_eq!(
        app.get(&path(&id)).await.expect(200).body["description"],
        "AES keys for prod"
    );

    let r = app.key(&vault, "T1", "key-1").await.expect(409);
    assert_eq!(r.code(), "template_archived", "{}", r.body);
    let keys = app.get("/api/v4/managed_keys").await.expect(200);
    assert_eq!(keys.body["total_count"], 0);

    // Unarchived, it works again.
    app.with_etag("POST", &path(&id), "/unarchive", None)
        .await
        .expect(200);
    app.with_etag("PATCH", &path(&id), "", Some(json!({ "description": "x" })))
        .await
        .expect(200);
    app.key(&vault, "T1", "key-1").await.expect(201);
}

// ---- delete ----

#[tokio::test]
async fn delete_removes_an_unused_template() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let created = app.post(TEMPLATES, body(&vault, "T1")).await.expect(201);
    let id = created.id();

    let r = app.call("DELETE", &path(&id), None, &[]).await.expect(428);
    assert_eq!(r.code(), "precondition_required");
    let r = app
        .call(
            "DELETE",
            &path(&id),
            None,
            &[("if-match", "\"r99-deadbeef\"")],
        )
        .await
        .expect(412);
    assert_eq!(r.code(), "etag_mismatch");
    app.get(&path(&id)).await.expect(200);

    let r = app
        .with_etag("DELETE", &path(&id), "", None)
        .await
        .expect(204);
    assert!(r.body.is_null(), "204 has no body");
    app.get(&path(&id)).await.expect(404);
    // The name is free again.
    app.post(TEMPLATES, body(&vault, "T1")).await.expect(201);
}

#[tokio::test]
async fn delete_is_refused_while_a_key_uses_the_template() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let id = app
        .template(&vault, "T1", "aes", "256", "pre_activation", "prod")
        .await;
    let key = app.key(&vault, "T1", "key-1").await.expect(201).id();

    let r = app
        .with_etag("DELETE", &path(&id), "", None)
        .await
        .expect(409);
    assert_eq!(r.code(), "template_in_use", "{}", r.body);
    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.body["keys_count"], 1);
    let l = app.get(TEMPLATES).await.expect(200);
    assert_eq!(l.body["templates"][0]["keys_count"], 1, "{}", l.body);

    // Once the key is destroyed and removed, the template can go.
    let key_path = format!("/api/v4/managed_keys/{key}");
    app.with_etag("POST", &key_path, "/destroy", None)
        .await
        .expect(200);
    app.with_etag("DELETE", &key_path, "", None)
        .await
        .expect(204);
    app.with_etag("DELETE", &path(&id), "", None)
        .await
        .expect(204);
    app.get(&path(&id)).await.expect(404);
}

// ---- list ----

/// Vault A: alpha-aes (aes 256, ibm g1, scheme), alpha-rsa (rsa 2048, ibm g2),
/// beta-aws (aes 256, aws g1), gamma-hmac (hmac 384, ibm g3, archived);
/// vault B: alpha-b (aes 128, ibm g1).
async fn fixture(app: &TestApp) -> (String, String) {
    let a = app.vault("A").await;
    let b = app.vault("B").await;
    let mk = |vault: &str, name: &str, alg: &str, size: &str, ks: &str, group: &str| {
        json!({
            "vault": { "id": vault }, "name": name,
            "key": { "algorithm": alg, "size": size, "state": "active" },
            "keystores": [{ "type": ks, "group": group }]
        })
    };
    let mut alpha_aes = mk(&a, "alpha-aes", "aes", "256", "ibm_cloud_kms", "g1");
    alpha_aes["naming_scheme"] = json!("<APP>-prod-<ENV>");
    app.post(TEMPLATES, alpha_aes).await.expect(201);
    app.post(
        TEMPLATES,
        mk(&a, "alpha-rsa", "rsa", "2048", "ibm_cloud_kms", "g2"),
    )
    .await
    .expect(201);
    app.post(TEMPLATES, mk(&a, "beta-aws", "aes", "256", "aws_kms", "g1"))
        .await
        .expect(201);
    let mut gamma = mk(&a, "gamma-hmac", "hmac", "384", "ibm_cloud_kms", "g3");
    gamma["state"] = json!("archived");
    let g = app.post(TEMPLATES, gamma).await.expect(201);
    assert_eq!(g.body["state"], "archived");
    app.post(
        TEMPLATES,
        mk(&b, "alpha-b", "aes", "128", "ibm_cloud_kms", "g1"),
    )
    .await
    .expect(201);
    (a, b)
}

#[tokio::test]
async fn list_filters() {
    let app = TestApp::new().await;
    let (a, b) = fixture(&app).await;
    let all = strs(&[
        "alpha-aes",
        "alpha-rsa",
        "alpha-b",
        "beta-aws",
        "gamma-hmac",
    ]);
    assert_eq!(list_names(&app, "").await, all);

    // name: prefix, not contains
    assert_eq!(
        list_names(&app, "name=alpha").await,
        strs(&["alpha-aes", "alpha-rsa", "alpha-b"])
    );
    assert_eq!(list_names(&app, "name=alpha-r").await, strs(&["alpha-rsa"]));
    assert!(list_names(&app, "name=lpha").await.is_empty());

    // naming_scheme: contains
    assert_eq!(
        list_names(&app, "naming_scheme=prod").await,
        strs(&["alpha-aes"])
    );
    assert_eq!(
        list_names(&app, "naming_scheme=%3CAPP%3E").await,
        strs(&["alpha-aes"])
    );
    assert!(list_names(&app, "naming_scheme=nothing").await.is_empty());

    // vault.id
    assert_eq!(
        list_names(&app, &format!("vault.id={b}")).await,
        strs(&["alpha-b"])
    );
    assert_eq!(list_names(&app, &format!("vault.id={a}")).await.len(), 4);
    assert_eq!(list_names(&app, &format!("vault.id={a},{b}")).await, all);

    // key.algorithm (one or several)
    assert_eq!(
        list_names(&app, "key.algorithm=rsa").await,
        strs(&["alpha-rsa"])
    );
    assert_eq!(
        list_names(&app, "key.algorithm=rsa,hmac").await,
        strs(&["alpha-rsa", "gamma-hmac"])
    );
    assert_eq!(
        list_names(&app, "key.algorithm=rsa&key.algorithm=hmac").await,
        strs(&["alpha-rsa", "gamma-hmac"])
    );

    // key.size exact and range
    assert_eq!(
        list_names(&app, "key.size=256").await,
        strs(&["alpha-aes", "beta-aws"])
    );
    assert_eq!(
        list_names(&app, "key.size_min=384").await,
        strs(&["alpha-rsa", "gamma-hmac"])
    );
    assert_eq!(
        list_names(&app, "key.size_max=192").await,
        strs(&["alpha-b"])
    );
    assert_eq!(
        list_names(&app, "key.size_min=200&key.size_max=400").await,
        strs(&["alpha-aes", "beta-aws", "gamma-hmac"])
    );
    // Overlapping bounds all apply (they were refused with 400, though the document allows
    // them); bounds with nothing between them match nothing.
    assert_eq!(
        list_names(&app, "key.size=256&key.size_min=200").await,
        strs(&["alpha-aes", "beta-aws"])
    );
    assert!(
        list_names(&app, "key.size=256&key.size_max=200")
            .await
            .is_empty()
    );
    assert!(
        list_names(&app, "key.size_min=400&key.size_max=200")
            .await
            .is_empty()
    );

    // keystores[].type and keystores[].group
    assert_eq!(
        list_names(&app, "keystores[].type=aws_kms").await,
        strs(&["beta-aws"])
    );
    assert_eq!(
        list_names(&app, "keystores%5B%5D.type=aws_kms").await,
        strs(&["beta-aws"])
    );
    assert_eq!(
        list_names(&app, "keystores[].group=g1").await,
        strs(&["alpha-aes", "alpha-b", "beta-aws"])
    );
    assert_eq!(
        list_names(&app, "keystores[].group=g2,g3").await,
        strs(&["alpha-rsa", "gamma-hmac"])
    );

    // state
    assert_eq!(
        list_names(&app, "state=archived").await,
        strs(&["gamma-hmac"])
    );
    assert_eq!(list_names(&app, "state=unarchived").await.len(), 4);

    // combined filters intersect
    assert_eq!(
        list_names(
            &app,
            &format!("vault.id={a}&key.algorithm=aes&keystores[].group=g1")
        )
        .await,
        strs(&["alpha-aes", "beta-aws"])
    );
}

#[tokio::test]
async fn list_filter_by_template_type() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    app.post(TEMPLATES, body(&vault, "Regular"))
        .await
        .expect(201);
    let mut s = body(&vault, "Shadowy");
    s["type"] = json!(["shadow"]);
    app.post(TEMPLATES, s).await.expect(201);

    assert_eq!(list_names(&app, "type[]=shadow").await, strs(&["Shadowy"]));
    assert_eq!(
        list_names(&app, "type%5B%5D=shadow").await,
        strs(&["Shadowy"])
    );
    assert_eq!(
        list_names(&app, "type[]=user_defined").await,
        strs(&["Regular"])
    );
    assert_eq!(
        list_names(&app, "type[]=user_defined,shadow").await,
        strs(&["Regular", "Shadowy"])
    );
    assert!(list_names(&app, "type[]=system").await.is_empty());
}

#[tokio::test]
async fn list_filter_by_created_at() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let created = app.post(TEMPLATES, body(&vault, "T1")).await.expect(201);
    let today = created.body["created_at"].as_str().expect("created_at")[..10].to_owned();

    assert_eq!(
        list_names(&app, &format!("created_at={today}")).await,
        strs(&["T1"])
    );
    assert_eq!(
        list_names(
            &app,
            &format!("created_at_min={today}&created_at_max={today}")
        )
        .await,
        strs(&["T1"])
    );
    assert_eq!(
        list_names(&app, &format!("updated_at={today}")).await,
        strs(&["T1"])
    );
    assert!(list_names(&app, "created_at=2000-01-01").await.is_empty());
    assert!(
        list_names(&app, "created_at_max=2000-01-01")
            .await
            .is_empty()
    );
    assert_eq!(
        list_names(&app, "created_at_min=2000-01-01").await,
        strs(&["T1"])
    );

    // A day and bounds together: all apply.
    assert_eq!(
        list_names(&app, &format!("created_at={today}&created_at_min={today}")).await,
        strs(&["T1"])
    );
    assert!(
        list_names(
            &app,
            &format!("created_at={today}&created_at_max=2000-01-01")
        )
        .await
        .is_empty()
    );
    let r = app
        .get(&format!("{TEMPLATES}?created_at=yesterday"))
        .await
        .expect(400);
    assert_eq!(r.target(), "created_at", "{}", r.body);
}

#[tokio::test]
async fn list_rejects_bad_parameters() {
    let app = TestApp::new().await;
    let cases = [
        ("key.size=big", "key.size"),
        ("key.algorithm=blowfish", "key.algorithm"),
        ("state=gone", "state"),
        ("type[]=nope", "type[]"),
        ("vault.id=not-a-uuid", "vault.id"),
        ("keystores[].type=floppy", "keystores[].type"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=-1", "offset"),
        ("sort=NAME", "sort"),
    ];
    for (q, target) in cases {
        let r = app.get(&format!("{TEMPLATES}?{q}")).await.expect(400);
        assert_eq!(r.target(), target, "?{q}: {}", r.body);
        assert_eq!(r.code(), "invalid_query_parameter", "?{q}: {}", r.body);
    }
}

#[tokio::test]
async fn list_sorts_by_name_both_ways() {
    let app = TestApp::new().await;
    fixture(&app).await;
    let asc = app.get(&format!("{TEMPLATES}?sort=name")).await.expect(200);
    assert_eq!(
        names(&asc.body),
        [
            "alpha-aes",
            "alpha-b",
            "alpha-rsa",
            "beta-aws",
            "gamma-hmac"
        ]
    );
    let desc = app
        .get(&format!("{TEMPLATES}?sort=-name"))
        .await
        .expect(200);
    assert_eq!(
        names(&desc.body),
        [
            "gamma-hmac",
            "beta-aws",
            "alpha-rsa",
            "alpha-b",
            "alpha-aes"
        ]
    );
}

#[tokio::test]
async fn list_pages_with_next_links() {
    let app = TestApp::new().await;
    fixture(&app).await;

    let mut seen = Vec::new();
    let mut url = format!("{TEMPLATES}?sort=name&limit=1");
    let mut pages = 0;
    loop {
        let r = app.get(&url).await.expect(200);
        pages += 1;
        assert_eq!(r.body["total_count"], 5);
        assert_eq!(r.body["limit"], 1);
        assert_eq!(r.body["offset"], pages - 1);
        let page = names(&r.body);
        assert_eq!(page.len(), 1, "one item per page: {}", r.body);
        seen.extend(page);
        assert!(
            r.body["first"]["href"]
                .as_str()
                .is_some_and(|h| h.contains("offset=0"))
        );
        assert!(
            r.body["last"]["href"]
                .as_str()
                .is_some_and(|h| h.contains("offset=4"))
        );
        if pages == 1 {
            assert!(r.body.get("previous").is_none(), "no previous on page 1");
        } else {
            assert!(r.body["previous"]["href"].as_str().is_some());
        }
        match r.body["next"]["href"].as_str() {
            Some(next) => {
                assert!(next.contains("offset="), "next.href carries offset: {next}");
                assert!(
                    next.contains("sort=name"),
                    "next.href keeps the filters: {next}"
                );
                url = next.strip_prefix(PUBLIC_URL).unwrap_or(next).to_owned();
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 5);
    assert_eq!(
        seen,
        [
            "alpha-aes",
            "alpha-b",
            "alpha-rsa",
            "beta-aws",
            "gamma-hmac"
        ]
    );

    // Past the end: empty page, no next.
    let r = app
        .get(&format!("{TEMPLATES}?limit=2&offset=10"))
        .await
        .expect(200);
    assert_eq!(r.body["total_count"], 5);
    assert!(names(&r.body).is_empty());
    assert!(r.body.get("next").is_none());
}

/// AES keys exist only in an Azure Managed HSM: a template or key that would send one to an
/// Azure key vault is refused before anything is made, naming the keystore.
#[tokio::test]
async fn aes_keys_go_to_an_azure_managed_hsm_only() {
    let app = TestApp::new().await;
    let vault = app.vault("azure-placement").await;
    let azure = |name: &str, group: &str, url: Option<&str>| {
        let mut b = json!({"type": "azure_key_vault", "vault": {"id": vault}, "name": name,
            "groups": [group], "azure_service_name": name, "azure_resource_group": "rg",
            "azure_location": "europe_west", "azure_environment": "azure",
            "azure_tenant": "tenant", "azure_subscription_id": "subscription",
            "azure_service_principal_client_id": "client",
            "azure_service_principal_password": "secret"});
        if let Some(u) = url {
            b["azure_vault_url"] = json!(u);
        }
        b
    };
    let template = |name: &str, algorithm: &str, size: u32, group: &str| {
        json!({"vault": {"id": vault}, "name": name,
               "key": {"algorithm": algorithm, "size": size, "state": "active"},
               "keystores": [{"type": "azure_key_vault", "group": group}]})
    };
    app.post("/api/v4/keystores", azure("billing", "vaults", None))
        .await
        .expect(201);
    app.post(
        "/api/v4/keystores",
        azure(
            "payments",
            "hsms",
            Some("https://payments.managedhsm.azure.net"),
        ),
    )
    .await
    .expect(201);

    let refused = app
        .post(TEMPLATES, template("AES-VAULT", "aes", 256, "vaults"))
        .await
        .expect(400);
    assert!(
        refused.body.to_string().contains("keystore 'billing'"),
        "{}",
        refused.body
    );
    app.post(TEMPLATES, template("RSA-VAULT", "rsa", 2048, "vaults"))
        .await
        .expect(201);
    app.post(TEMPLATES, template("AES-HSM", "aes", 256, "hsms"))
        .await
        .expect(201);

    // A vault joining a group later: the next key of an AES template refuses, and changes
    // nothing.
    app.post("/api/v4/keystores", azure("ledger", "hsms", None))
        .await
        .expect(201);
    let r = app
        .post(
            "/api/v4/managed_keys",
            json!({"vault": {"id": vault}, "template_name": "AES-HSM", "label": "refused"}),
        )
        .await
        .expect(400);
    assert!(
        r.body.to_string().contains("keystore 'ledger'"),
        "{}",
        r.body
    );
    let keys = app
        .get(&format!("/api/v4/managed_keys?vault.id={vault}"))
        .await
        .expect(200);
    assert_eq!(keys.body["total_count"], 0, "{}", keys.body);
}
