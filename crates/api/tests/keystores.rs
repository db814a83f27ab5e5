//! Keystores through the UKO v4 API (spec §2 #14–#21, §3.3, §4.4, §6, §7.6; decisions.md).

use keyplane_testkit::{PUBLIC_URL, TestApp, TestResponse};
use serde_json::{Value, json};

const KEYSTORES: &str = "/api/v4/keystores";
const AWS_KEY_ID: &str = "AKIAEXAMPLEKEYID4242";
const AWS_SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz-SECRET-4242";

fn path(id: &str) -> String {
    format!("{KEYSTORES}/{id}")
}

fn key_path(id: &str) -> String {
    format!("/api/v4/managed_keys/{id}")
}

fn internal_body(vault: &str, name: &str) -> Value {
    json!({ "type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": { "id": vault }, "name": name })
}

fn aws_body(vault: &str, name: &str) -> Value {
    json!({
        "type": "aws_kms", "vault": { "id": vault }, "name": name,
        "description": "Frankfurt account", "location": "eu-de",
        "groups": ["cloud"],
        "aws_region": "eu_central_1",
        "aws_access_key_id": AWS_KEY_ID,
        "aws_secret_access_key": AWS_SECRET
    })
}

fn without(mut v: Value, field: &str) -> Value {
    v.as_object_mut().expect("object").remove(field);
    v
}

fn names(list: &Value) -> Vec<String> {
    list["keystores"]
        .as_array()
        .expect("keystores array")
        .iter()
        .map(|k| k["name"].as_str().expect("name").to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    sorted(v.iter().map(|s| (*s).to_owned()).collect())
}

async fn list_names(app: &TestApp, query: &str) -> Vec<String> {
    let r = app.get(&format!("{KEYSTORES}?{query}")).await.expect(200);
    let got = names(&r.body);
    assert_eq!(
        r.body["total_count"].as_i64(),
        Some(got.len() as i64),
        "total_count of ?{query}: {}",
        r.body
    );
    sorted(got)
}

async fn keystore_count(app: &TestApp) -> i64 {
    app.get(KEYSTORES).await.expect(200).body["total_count"]
        .as_i64()
        .expect("total_count")
}

fn assert_no_secret(r: &TestResponse) {
    let text = r.body.to_string();
    assert!(
        !text.contains(AWS_SECRET) && !text.contains(AWS_KEY_ID),
        "a secret leaked into a response body: {text}"
    );
}

/// A template of `keystore_type` distributing to `group`, whose keys start in `state`.
async fn template_for(
    app: &TestApp,
    vault: &str,
    name: &str,
    keystore_type: &str,
    group: &str,
    state: &str,
) -> String {
    app.post(
        "/api/v4/templates",
        json!({
            "vault": { "id": vault }, "name": name,
            "key": { "algorithm": "aes", "size": "256", "state": state },
            "keystores": [{ "type": keystore_type, "group": group }]
        }),
    )
    .await
    .expect(201)
    .id()
}

/// The status entry of `keystore` in a key body.
fn status_in<'a>(key: &'a Value, keystore: &str) -> &'a Value {
    key["status_in_keystores"]
        .as_array()
        .expect("status_in_keystores")
        .iter()
        .find(|s| s["keystore"]["id"] == keystore)
        .unwrap_or_else(|| panic!("no status for keystore {keystore}: {key}"))
}

fn references(key: &Value, keystore: &str) -> bool {
    key["referenced_keystores"]
        .as_array()
        .expect("referenced_keystores")
        .iter()
        .any(|r| r["id"] == keystore)
}

// ---- create ----

#[tokio::test]
async fn create_internal_keystore_with_default_group() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let r = app
        .post(KEYSTORES, internal_body(&vault, "Internal One"))
        .await
        .expect(201);
    let id = r.id();
    let b = &r.body;
    assert_eq!(b["type"], "ibm_cloud_kms");
    assert_eq!(b["ibm_variant"], "internal");
    assert_eq!(b["name"], "Internal One");
    assert_eq!(b["groups"], json!(["Internal One"]));
    assert_eq!(b["description"], "");
    assert_eq!(b["tls_proxy"], "");
    assert_eq!(b["location"], "");
    assert_eq!(b["vault"]["id"], vault.as_str());
    let href = b["href"].as_str().expect("href");
    assert_eq!(href, format!("{PUBLIC_URL}/api/v4/keystores/{id}"));
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(href)
    );
    assert!(!r.etag().is_empty());

    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.body["groups"], json!(["Internal One"]));
    assert_eq!(g.etag(), r.etag());

    // Explicit groups are kept as given.
    let r = app
        .post(
            KEYSTORES,
            json!({ "type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": { "id": vault },
                    "name": "Internal Two", "groups": ["prod", "eu"] }),
        )
        .await
        .expect(201);
    assert_eq!(r.body["groups"], json!(["prod", "eu"]));
}

#[tokio::test]
async fn create_aws_keystore_stores_fields_and_masks_secrets() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let r = app
        .post(KEYSTORES, aws_body(&vault, "aws-frankfurt"))
        .await
        .expect(201);
    assert_no_secret(&r);
    assert_eq!(r.body["type"], "aws_kms");
    assert_eq!(r.body["aws_region"], "eu_central_1");
    assert_eq!(r.body["aws_access_key_id"], "");
    assert_eq!(r.body["aws_secret_access_key"], "");
    assert_eq!(r.body["location"], "eu-de");
    assert_eq!(r.body["description"], "Frankfurt account");
    assert_eq!(r.body["groups"], json!(["cloud"]));
    assert!(r.body.get("ibm_variant").is_none(), "{}", r.body);
    // Only the fields of its own type are emitted.
    assert!(r.body.get("ibm_api_key").is_none(), "{}", r.body);
    let id = r.id();

    let g = app.get(&path(&id)).await.expect(200);
    assert_no_secret(&g);
    assert_eq!(g.body["aws_region"], "eu_central_1");
    assert_eq!(g.body["aws_access_key_id"], "");
    assert_eq!(g.body["aws_secret_access_key"], "");

    let l = app.get(KEYSTORES).await.expect(200);
    assert_no_secret(&l);
    assert_eq!(l.body["keystores"][0]["aws_secret_access_key"], "");

    let s = app.get(&format!("{}/status", path(&id))).await.expect(200);
    assert_no_secret(&s);
}

#[tokio::test]
async fn connection_field_errors_name_the_field() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;

    for field in ["aws_region", "aws_access_key_id", "aws_secret_access_key"] {
        let r = app
            .post(KEYSTORES, without(aws_body(&vault, "aws"), field))
            .await
            .expect(400);
        assert_eq!(r.code(), "missing_field", "without {field}: {}", r.body);
        assert_eq!(r.target(), field, "without {field}: {}", r.body);
        assert_no_secret(&r);
    }

    // A field of another keystore type.
    let mut foreign = aws_body(&vault, "aws");
    foreign["ibm_api_key"] = json!("some-ibm-key");
    let r = app.post(KEYSTORES, foreign).await.expect(400);
    assert_eq!(r.target(), "ibm_api_key", "{}", r.body);

    let mut foreign = internal_body(&vault, "int");
    foreign["aws_region"] = json!("eu_central_1");
    let r = app.post(KEYSTORES, foreign).await.expect(400);
    assert_eq!(r.target(), "aws_region", "{}", r.body);

    // ibm_cloud_kms needs its variant.
    let r = app
        .post(
            KEYSTORES,
            without(internal_body(&vault, "int"), "ibm_variant"),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "ibm_variant", "{}", r.body);

    // ibm_variant belongs to ibm_cloud_kms only.
    let mut wrong = aws_body(&vault, "aws");
    wrong["ibm_variant"] = json!("internal");
    let r = app.post(KEYSTORES, wrong).await.expect(400);
    assert_eq!(r.target(), "ibm_variant", "{}", r.body);

    // External IBM variants need their endpoints and key.
    let r = app
        .post(
            KEYSTORES,
            json!({ "type": "ibm_cloud_kms", "ibm_variant": "key_protect", "vault": { "id": vault },
                    "name": "kp", "ibm_api_endpoint": "https://us-south.kms.cloud.ibm.com",
                    "ibm_iam_endpoint": "https://iam.cloud.ibm.com", "ibm_api_key": "k" }),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "ibm_instance_id", "{}", r.body);

    // type, vault and name are required; names follow the keystore name rule.
    let r = app
        .post(KEYSTORES, without(internal_body(&vault, "int"), "type"))
        .await
        .expect(400);
    assert_eq!(r.target(), "type", "{}", r.body);
    let r = app
        .post(KEYSTORES, without(internal_body(&vault, "int"), "vault"))
        .await
        .expect(400);
    assert_eq!(r.target(), "vault.id", "{}", r.body);
    let r = app
        .post(KEYSTORES, without(internal_body(&vault, "int"), "name"))
        .await
        .expect(400);
    assert_eq!(r.target(), "name", "{}", r.body);
    let r = app
        .post(KEYSTORES, internal_body(&vault, "-leading dash"))
        .await
        .expect(400);
    assert_eq!(r.target(), "name", "{}", r.body);
    let r = app
        .post(
            KEYSTORES,
            internal_body("8d1c0b3e-6f0e-4f55-9a51-6f4c3a0e2b11", "int"),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "vault.id", "{}", r.body);

    assert_eq!(keystore_count(&app).await, 0, "nothing was saved");
}

#[tokio::test]
async fn dry_run_validates_without_saving() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    app.internal_keystore(&vault, "existing", &[]).await;
    assert_eq!(keystore_count(&app).await, 1);

    let r = app
        .post(
            &format!("{KEYSTORES}?dry_run=true"),
            aws_body(&vault, "aws-dry"),
        )
        .await
        .expect(200);
    assert_no_secret(&r);
    assert_eq!(r.body["name"], "aws-dry");
    assert_eq!(r.body["aws_secret_access_key"], "");
    assert_eq!(keystore_count(&app).await, 1, "dry run saved nothing");
    if let Some(id) = r.body["id"].as_str() {
        app.get(&path(id)).await.expect(404);
    }

    // A dry run still validates.
    let r = app
        .post(
            &format!("{KEYSTORES}?dry_run=true"),
            without(aws_body(&vault, "aws-dry"), "aws_region"),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "aws_region", "{}", r.body);

    // And the name stays free for the real create.
    app.post(KEYSTORES, aws_body(&vault, "aws-dry"))
        .await
        .expect(201);
    assert_eq!(keystore_count(&app).await, 2);
}

#[tokio::test]
async fn duplicate_name_in_a_vault_is_409() {
    let app = TestApp::new().await;
    let v1 = app.vault("v1").await;
    let v2 = app.vault("v2").await;
    app.post(KEYSTORES, internal_body(&v1, "ks"))
        .await
        .expect(201);
    let r = app
        .post(KEYSTORES, internal_body(&v1, "ks"))
        .await
        .expect(409);
    assert_eq!(r.code(), "duplicate_name", "{}", r.body);
    let r = app.post(KEYSTORES, aws_body(&v1, "ks")).await.expect(409);
    assert_eq!(r.code(), "duplicate_name", "{}", r.body);
    assert_no_secret(&r);
    app.post(KEYSTORES, internal_body(&v2, "ks"))
        .await
        .expect(201);
    assert_eq!(keystore_count(&app).await, 2);
}

// ---- get / status ----

#[tokio::test]
async fn get_unknown_is_404_and_non_uuid_is_400() {
    let app = TestApp::new().await;
    let unknown = "0b6f3c1e-2a34-4d5e-8f90-123456789abc";
    let r = app.get(&path(unknown)).await.expect(404);
    assert_eq!(r.code(), "not_found");
    app.get(&format!("{}/status", path(unknown)))
        .await
        .expect(404);
    let r = app.get(&path("nope")).await.expect(400);
    assert_eq!(r.target(), "id", "{}", r.body);
}

#[tokio::test]
async fn status_of_internal_and_external_keystores() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let internal = app.internal_keystore(&vault, "int", &[]).await;
    let aws = app
        .post(KEYSTORES, aws_body(&vault, "aws"))
        .await
        .expect(201)
        .id();

    let s = app
        .get(&format!("{}/status", path(&internal)))
        .await
        .expect(200);
    assert_eq!(s.body["health_status"], "ok", "{}", s.body);
    assert!(s.body["last_heartbeat"].is_string(), "{}", s.body);
    assert!(s.body["message"].is_string());

    let s = app.get(&format!("{}/status", path(&aws))).await.expect(200);
    assert_eq!(s.body["health_status"], "configuration_error", "{}", s.body);
    let message = s.body["message"].as_str().expect("message");
    assert!(
        message.contains("connector") && message.contains("available"),
        "message says the connector is not available: {message}"
    );
}

// ---- update ----

#[tokio::test]
async fn patch_needs_if_match_and_a_current_etag() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let created = app
        .post(KEYSTORES, internal_body(&vault, "ks"))
        .await
        .expect(201);
    let id = created.id();

    let r = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "description": "x" })),
            &[],
        )
        .await
        .expect(428);
    assert_eq!(r.code(), "precondition_required");

    let ok = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "description": "first" })),
            &[("if-match", &created.etag())],
        )
        .await
        .expect(200);
    assert_ne!(ok.etag(), created.etag());

    let r = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "description": "second" })),
            &[("if-match", &created.etag())],
        )
        .await
        .expect(412);
    assert_eq!(r.code(), "etag_mismatch");
    assert_eq!(
        app.get(&path(&id)).await.expect(200).body["description"],
        "first"
    );
}

#[tokio::test]
async fn patch_changes_name_and_groups() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let id = app.internal_keystore(&vault, "ks", &["a"]).await;
    let r = app
        .with_etag(
            "PATCH",
            &path(&id),
            "",
            Some(json!({ "name": "ks-renamed", "groups": ["b", "c"], "description": "d" })),
        )
        .await
        .expect(200);
    assert_eq!(r.body["name"], "ks-renamed");
    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.body["name"], "ks-renamed");
    assert_eq!(g.body["groups"], json!(["b", "c"]));
    assert_eq!(g.body["description"], "d");
    assert_eq!(list_names(&app, "group=b").await, strs(&["ks-renamed"]));
    assert!(list_names(&app, "group=a").await.is_empty());

    // A bad name is refused and nothing changes.
    let r = app
        .with_etag("PATCH", &path(&id), "", Some(json!({ "name": "_bad" })))
        .await
        .expect(400);
    assert_eq!(r.target(), "name");
    assert_eq!(
        app.get(&path(&id)).await.expect(200).body["name"],
        "ks-renamed"
    );
}

#[tokio::test]
async fn patch_locked_and_secret_fields() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let id = app
        .post(KEYSTORES, aws_body(&vault, "aws"))
        .await
        .expect(201)
        .id();

    // The region identifies the connected account: locked.
    let r = app
        .with_etag(
            "PATCH",
            &path(&id),
            "",
            Some(json!({ "aws_region": "us_east_1" })),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "aws_region", "{}", r.body);
    assert_eq!(
        app.get(&path(&id)).await.expect(200).body["aws_region"],
        "eu_central_1"
    );

    // Resending the same locked value is fine.
    let r = app
        .with_etag(
            "PATCH",
            &path(&id),
            "",
            Some(json!({ "aws_region": "eu_central_1", "description": "same region" })),
        )
        .await
        .expect(200);
    assert_eq!(r.body["aws_region"], "eu_central_1");
    assert_eq!(r.body["description"], "same region");

    // A field of another type is refused on update too.
    let r = app
        .with_etag("PATCH", &path(&id), "", Some(json!({ "ibm_api_key": "x" })))
        .await
        .expect(400);
    assert_eq!(r.target(), "ibm_api_key", "{}", r.body);

    // Credentials rotate and stay masked.
    let new_secret = "rotated-secret-value-0000-XYZ";
    let before = app.get(&path(&id)).await.expect(200);
    let r = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "aws_access_key_id": "AKIANEWKEYID0000", "aws_secret_access_key": new_secret })),
            &[("if-match", &before.etag())],
        )
        .await
        .expect(200);
    assert_ne!(r.etag(), before.etag());
    assert_eq!(r.body["aws_secret_access_key"], "");
    assert_eq!(r.body["aws_access_key_id"], "");
    assert!(!r.body.to_string().contains(new_secret));
    let g = app.get(&path(&id)).await.expect(200);
    assert_eq!(g.body["aws_secret_access_key"], "");
    assert!(!g.body.to_string().contains(new_secret));
    assert!(!g.body.to_string().contains("AKIANEWKEYID0000"));
    assert_no_secret(&g);
}

#[tokio::test]
async fn patch_keeps_names_unique_and_accepts_star() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    app.internal_keystore(&vault, "taken", &[]).await;
    let id = app.internal_keystore(&vault, "mine", &[]).await;

    let r = app
        .with_etag("PATCH", &path(&id), "", Some(json!({ "name": "taken" })))
        .await
        .expect(409);
    assert_eq!(r.code(), "duplicate_name", "{}", r.body);
    assert_eq!(app.get(&path(&id)).await.expect(200).body["name"], "mine");

    let r = app
        .call(
            "PATCH",
            &path(&id),
            Some(json!({ "description": "any revision" })),
            &[("if-match", "*")],
        )
        .await
        .expect(200);
    assert_eq!(r.body["description"], "any revision");

    // The vault of a keystore is fixed.
    let other = app.vault("other").await;
    let r = app
        .with_etag(
            "PATCH",
            &path(&id),
            "",
            Some(json!({ "vault": { "id": other } })),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "vault", "{}", r.body);
}

// ---- list ----

/// Vault A: int-prod (internal, groups prod+eu, us-south), int-dev (internal, default group,
/// "development box"), aws-eu (aws, groups cloud, eu-de, "Frankfurt account");
/// vault B: int-b (internal, groups prod, eu-de).
async fn fixture(app: &TestApp) -> (String, String) {
    let a = app.vault("A").await;
    let b = app.vault("B").await;
    app.post(
        KEYSTORES,
        json!({ "type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": { "id": a },
                "name": "int-prod", "groups": ["prod", "eu"], "location": "us-south",
                "description": "production HSM" }),
    )
    .await
    .expect(201);
    app.post(
        KEYSTORES,
        json!({ "type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": { "id": a },
                "name": "int-dev", "description": "development box" }),
    )
    .await
    .expect(201);
    app.post(KEYSTORES, aws_body(&a, "aws-eu"))
        .await
        .expect(201);
    app.post(
        KEYSTORES,
        json!({ "type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": { "id": b },
                "name": "int-b", "groups": ["prod"], "location": "eu-de" }),
    )
    .await
    .expect(201);
    (a, b)
}

#[tokio::test]
async fn list_filters() {
    let app = TestApp::new().await;
    let (a, b) = fixture(&app).await;
    let all = strs(&["int-prod", "int-dev", "aws-eu", "int-b"]);
    assert_eq!(list_names(&app, "").await, all);

    // type
    assert_eq!(list_names(&app, "type=aws_kms").await, strs(&["aws-eu"]));
    assert_eq!(list_names(&app, "type=ibm_cloud_kms").await.len(), 3);
    assert_eq!(list_names(&app, "type=aws_kms,ibm_cloud_kms").await, all);
    assert!(list_names(&app, "type=google_kms").await.is_empty());

    // name and description: contains
    assert_eq!(
        list_names(&app, "name=int-").await,
        strs(&["int-prod", "int-dev", "int-b"])
    );
    assert_eq!(list_names(&app, "name=prod").await, strs(&["int-prod"]));
    assert_eq!(
        list_names(&app, "description=furt").await,
        strs(&["aws-eu"])
    );
    assert_eq!(
        list_names(&app, "description=box").await,
        strs(&["int-dev"])
    );

    // group (single) and groups[] (any of)
    assert_eq!(
        list_names(&app, "group=prod").await,
        strs(&["int-prod", "int-b"])
    );
    assert_eq!(list_names(&app, "group=int-dev").await, strs(&["int-dev"]));
    assert_eq!(
        list_names(&app, "groups[]=eu,cloud").await,
        strs(&["int-prod", "aws-eu"])
    );
    assert_eq!(
        list_names(&app, "groups%5B%5D=cloud").await,
        strs(&["aws-eu"])
    );
    // Both spellings together name groups alike (it was refused with 400, though the document
    // allows it): a keystore in any of them matches.
    assert_eq!(
        list_names(&app, "group=int-dev&groups[]=cloud").await,
        strs(&["int-dev", "aws-eu"])
    );

    // vault.id
    assert_eq!(
        list_names(&app, &format!("vault.id={b}")).await,
        strs(&["int-b"])
    );
    assert_eq!(list_names(&app, &format!("vault.id={a}")).await.len(), 3);
    let r = app
        .get(&format!("{KEYSTORES}?vault.id=xyz"))
        .await
        .expect(400);
    assert_eq!(r.target(), "vault.id");

    // location
    assert_eq!(
        list_names(&app, "location=eu-de").await,
        strs(&["aws-eu", "int-b"])
    );
    assert_eq!(
        list_names(&app, "location=us-south").await,
        strs(&["int-prod"])
    );

    // combined
    assert_eq!(
        list_names(&app, &format!("vault.id={a}&group=prod")).await,
        strs(&["int-prod"])
    );

    let r = app
        .get(&format!("{KEYSTORES}?type=floppy"))
        .await
        .expect(400);
    assert_eq!(r.target(), "type");
}

#[tokio::test]
async fn name_filter_treats_like_wildcards_literally() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    for (name, description) in [
        ("a_b", ""),
        ("axb", ""),
        ("p1", "100% sure"),
        ("p2", "1000 sure"),
    ] {
        app.post(
            KEYSTORES,
            json!({ "type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": { "id": vault },
                    "name": name, "description": description }),
        )
        .await
        .expect(201);
    }
    assert_eq!(list_names(&app, "name=a_b").await, strs(&["a_b"]));
    assert_eq!(list_names(&app, "description=0%25").await, strs(&["p1"]));
}

#[tokio::test]
async fn list_sorts_and_pages() {
    let app = TestApp::new().await;
    fixture(&app).await;

    let asc = app.get(&format!("{KEYSTORES}?sort=name")).await.expect(200);
    assert_eq!(names(&asc.body), ["aws-eu", "int-b", "int-dev", "int-prod"]);
    let desc = app
        .get(&format!("{KEYSTORES}?sort=-name"))
        .await
        .expect(200);
    assert_eq!(
        names(&desc.body),
        ["int-prod", "int-dev", "int-b", "aws-eu"]
    );

    let mut seen = Vec::new();
    let mut url = format!("{KEYSTORES}?sort=name&limit=3");
    let mut pages = 0;
    loop {
        let r = app.get(&url).await.expect(200);
        pages += 1;
        assert_eq!(r.body["total_count"], 4);
        assert_eq!(r.body["limit"], 3);
        assert_no_secret(&r);
        seen.extend(names(&r.body));
        match r.body["next"]["href"].as_str() {
            Some(next) => {
                assert!(next.contains("offset="), "next.href carries offset: {next}");
                url = next.strip_prefix(PUBLIC_URL).unwrap_or(next).to_owned();
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, ["aws-eu", "int-b", "int-dev", "int-prod"]);

    let r = app
        .get(&format!("{KEYSTORES}?sort=name&limit=1&offset=3"))
        .await
        .expect(200);
    assert_eq!(names(&r.body), ["int-prod"]);
    assert!(r.body.get("next").is_none());
    assert!(
        r.body["previous"]["href"]
            .as_str()
            .is_some_and(|h| h.contains("offset=2"))
    );
}

// ---- delete ----

#[tokio::test]
async fn delete_needs_if_match_and_a_valid_mode() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let created = app
        .post(KEYSTORES, internal_body(&vault, "ks"))
        .await
        .expect(201);
    let id = created.id();

    let r = app.call("DELETE", &path(&id), None, &[]).await.expect(428);
    assert_eq!(r.code(), "precondition_required");
    let r = app
        .call(
            "DELETE",
            &path(&id),
            None,
            &[("if-match", "\"r42-00000000\"")],
        )
        .await
        .expect(412);
    assert_eq!(r.code(), "etag_mismatch");

    let r = app
        .call(
            "DELETE",
            &format!("{}?mode=obliterate", path(&id)),
            None,
            &[("if-match", &created.etag())],
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "mode", "{}", r.body);
    app.get(&path(&id)).await.expect(200);

    app.with_etag("DELETE", &path(&id), "", None)
        .await
        .expect(204);
    app.get(&path(&id)).await.expect(404);
}

#[tokio::test]
async fn a_template_listing_the_group_never_blocks_delete() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let ks = app.internal_keystore(&vault, "ks", &["prod"]).await;
    let t = template_for(&app, &vault, "T1", "ibm_cloud_kms", "prod", "active").await;
    // A pre-active key targets it too; pre-active keys never block.
    let pre = template_for(
        &app,
        &vault,
        "T2",
        "ibm_cloud_kms",
        "prod",
        "pre_activation",
    )
    .await;
    let k = app.key(&vault, "T2", "pre-key").await.expect(201);
    assert_eq!(k.body["state"], "pre_activation");
    assert!(references(&k.body, &ks));

    app.with_etag("DELETE", &path(&ks), "", None)
        .await
        .expect(204);
    app.get(&path(&ks)).await.expect(404);
    // Templates are untouched.
    let g = app.get(&format!("/api/v4/templates/{t}")).await.expect(200);
    assert_eq!(g.body["keystores"][0]["group"], "prod");
    app.get(&format!("/api/v4/templates/{pre}"))
        .await
        .expect(200);
    let k = app.get(&key_path(&k.id())).await.expect(200);
    assert!(!references(&k.body, &ks), "{}", k.body);
}

#[tokio::test]
async fn restrict_delete_waits_until_keys_are_destroyed() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let ks = app.internal_keystore(&vault, "ks", &["prod"]).await;
    template_for(&app, &vault, "T1", "ibm_cloud_kms", "prod", "active").await;
    let created = app.key(&vault, "T1", "billing-key").await.expect(201);
    let key = created.id();
    assert_eq!(created.body["state"], "active");
    assert!(references(&created.body, &ks));
    assert_eq!(status_in(&created.body, &ks)["status"], "active");

    for query in ["", "?mode=restrict"] {
        let r = app
            .with_etag("DELETE", &path(&ks), query, None)
            .await
            .expect(409);
        assert_eq!(r.code(), "keystore_not_empty", "{}", r.body);
        let message = r.body["errors"][0]["message"].as_str().expect("message");
        assert!(
            message.contains(&key),
            "message names the key id: {message}"
        );
        assert!(
            message.contains("billing-key"),
            "message names the label: {message}"
        );
        let params = r.body["errors"][0]["message_params"]
            .as_array()
            .expect("message_params");
        assert!(
            params.iter().any(|p| p
                .as_str()
                .is_some_and(|p| p.contains(&key) && p.contains("billing-key"))),
            "message_params name the key: {}",
            r.body
        );
    }
    app.get(&path(&ks)).await.expect(200);

    // Deactivated keys still live in the keystore.
    app.with_etag("POST", &key_path(&key), "/deactivate", None)
        .await
        .expect(200);
    let r = app
        .with_etag("DELETE", &path(&ks), "", None)
        .await
        .expect(409);
    assert_eq!(r.code(), "keystore_not_empty");

    // Destroyed: nothing blocks any more (the test policy has no grace period).
    let d = app
        .with_etag("POST", &key_path(&key), "/destroy", None)
        .await
        .expect(200);
    assert_eq!(d.body["state"], "destroyed");
    app.with_etag("DELETE", &path(&ks), "", None)
        .await
        .expect(204);
    app.get(&path(&ks)).await.expect(404);

    let k = app.get(&key_path(&key)).await.expect(200);
    assert!(
        !references(&k.body, &ks),
        "no longer referenced: {}",
        k.body
    );
    assert_eq!(
        status_in(&k.body, &ks)["keystore_sync_flag_detail"],
        "target_keystore_removed_by_user",
        "{}",
        k.body
    );
    let s = app
        .get(&format!("{}/status_in_keystores", key_path(&key)))
        .await
        .expect(200);
    assert_eq!(
        status_in(&s.body, &ks)["keystore_sync_flag_detail"],
        "target_keystore_removed_by_user",
        "{}",
        s.body
    );
}

#[tokio::test]
async fn restrict_is_the_rule_for_internal_keystores_whatever_the_mode() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let ks = app.internal_keystore(&vault, "ks", &["prod"]).await;
    template_for(&app, &vault, "T1", "ibm_cloud_kms", "prod", "active").await;
    let key = app.key(&vault, "T1", "k1").await.expect(201).id();

    for mode in ["disconnect", "deactivate", "destroy"] {
        let r = app
            .with_etag("DELETE", &path(&ks), &format!("?mode={mode}"), None)
            .await
            .expect(409);
        assert_eq!(r.code(), "keystore_not_empty", "mode={mode}: {}", r.body);
        assert!(
            r.body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&key)),
            "{}",
            r.body
        );
    }
    app.get(&path(&ks)).await.expect(200);
    let k = app.get(&key_path(&key)).await.expect(200);
    assert!(references(&k.body, &ks));
    assert_eq!(status_in(&k.body, &ks)["status"], "active");
}

#[tokio::test]
async fn disconnect_unlinks_an_external_keystore_with_an_active_key() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let aws = app
        .post(KEYSTORES, aws_body(&vault, "aws"))
        .await
        .expect(201)
        .id();
    template_for(&app, &vault, "TA", "aws_kms", "cloud", "active").await;
    let created = app.key(&vault, "TA", "cloud-key").await.expect(201);
    let key = created.id();
    assert_eq!(created.body["state"], "active");
    assert!(references(&created.body, &aws));
    // No connector reaches AWS in this build: the key's status there is an honest error.
    assert_eq!(status_in(&created.body, &aws)["status"], "error");

    // restrict refuses while the key is active.
    let r = app
        .with_etag("DELETE", &path(&aws), "", None)
        .await
        .expect(409);
    assert_eq!(r.code(), "keystore_not_empty");
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&key) && m.contains("cloud-key")),
        "{}",
        r.body
    );

    // disconnect goes ahead anyway.
    app.with_etag("DELETE", &path(&aws), "?mode=disconnect", None)
        .await
        .expect(204);
    app.get(&path(&aws)).await.expect(404);
    assert!(list_names(&app, "").await.is_empty());

    let k = app.get(&key_path(&key)).await.expect(200);
    assert_eq!(k.body["state"], "active", "the key itself is untouched");
    assert!(
        !references(&k.body, &aws),
        "no longer referenced: {}",
        k.body
    );
    let entry = status_in(&k.body, &aws);
    // Its status there was `error`, not `active`, so the plain detail applies.
    assert_eq!(
        entry["keystore_sync_flag_detail"], "target_keystore_removed_by_user",
        "{}",
        k.body
    );

    // The removed keystore is reported until the next sync, which drops it.
    let s = app
        .with_etag("POST", &key_path(&key), "/sync_status_in_keystores", None)
        .await
        .expect(200);
    assert_eq!(s.body["status_in_keystores"], json!([]), "{}", s.body);
    let k = app.get(&key_path(&key)).await.expect(200);
    assert_eq!(k.body["status_in_keystores"], json!([]), "{}", k.body);
}

/// decisions.md §2: `deactivate` disables every key copy in the keystore and `destroy` schedules
/// their destruction, *then* unlinks. No connector reaches an external keystore in this build, so
/// neither can be done: the call must fail (424, a target keystore failed) and leave the keystore
/// connected, rather than answer 204 as if the copies had been dealt with.
#[tokio::test]
async fn deactivate_and_destroy_modes_do_not_claim_success_on_an_unreachable_keystore() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let aws = app
        .post(KEYSTORES, aws_body(&vault, "aws"))
        .await
        .expect(201)
        .id();
    template_for(&app, &vault, "TA", "aws_kms", "cloud", "active").await;
    let key = app.key(&vault, "TA", "cloud-key").await.expect(201).id();

    for mode in ["deactivate", "destroy"] {
        let r = app
            .with_etag("DELETE", &path(&aws), &format!("?mode={mode}"), None)
            .await;
        assert_eq!(
            r.status.as_u16(),
            424,
            "mode={mode} on an unreachable keystore with an active key: {}",
            r.body
        );
        assert_eq!(r.code(), "keystore_unreachable", "mode={mode}: {}", r.body);
        app.get(&path(&aws)).await.expect(200);
        let k = app.get(&key_path(&key)).await.expect(200);
        assert!(references(&k.body, &aws), "mode={mode}: {}", k.body);
    }
}

#[tokio::test]
async fn the_blocking_keys_listed_are_capped_at_twenty() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let ks = app.internal_keystore(&vault, "ks", &["prod"]).await;
    template_for(&app, &vault, "T1", "ibm_cloud_kms", "prod", "active").await;
    for i in 0..21 {
        app.key(&vault, "T1", &format!("key-{i:02}"))
            .await
            .expect(201);
    }
    let r = app
        .with_etag("DELETE", &path(&ks), "", None)
        .await
        .expect(409);
    assert_eq!(r.code(), "keystore_not_empty");
    let params = r.body["errors"][0]["message_params"]
        .as_array()
        .expect("message_params");
    assert_eq!(params.len(), 20, "{}", r.body);
    let message = r.body["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("21"),
        "the message counts every blocking key: {message}"
    );
}

// ---- keys in a keystore, associated resources ----

#[tokio::test]
async fn managed_keys_of_a_keystore_are_the_installed_ones() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let ks = app.internal_keystore(&vault, "ks", &["prod"]).await;
    let other = app.internal_keystore(&vault, "other", &["dev"]).await;
    template_for(&app, &vault, "Active", "ibm_cloud_kms", "prod", "active").await;
    template_for(
        &app,
        &vault,
        "Pre",
        "ibm_cloud_kms",
        "prod",
        "pre_activation",
    )
    .await;
    template_for(&app, &vault, "Dev", "ibm_cloud_kms", "dev", "active").await;

    let active = app
        .key(&vault, "Active", "active-key")
        .await
        .expect(201)
        .id();
    let deactivated = app.key(&vault, "Active", "old-key").await.expect(201).id();
    app.with_etag("POST", &key_path(&deactivated), "/deactivate", None)
        .await
        .expect(200);
    let pre = app.key(&vault, "Pre", "pre-key").await.expect(201);
    assert_eq!(pre.body["state"], "pre_activation");
    assert!(references(&pre.body, &ks), "the pre-active key targets ks");
    app.key(&vault, "Dev", "dev-key").await.expect(201);

    let labels = |v: &Value| -> Vec<String> {
        sorted(
            v["managed_keys"]
                .as_array()
                .expect("managed_keys")
                .iter()
                .map(|k| k["label"].as_str().expect("label").to_owned())
                .collect(),
        )
    };
    let ids = |v: &Value| -> Vec<String> {
        v["managed_keys"]
            .as_array()
            .expect("managed_keys")
            .iter()
            .map(|k| k["id"].as_str().expect("id").to_owned())
            .collect()
    };

    // Default state filter (pre_activation, active): only the active key is installed.
    let r = app
        .get(&format!("{}/managed_keys", path(&ks)))
        .await
        .expect(200);
    assert_eq!(labels(&r.body), ["active-key"]);
    assert_eq!(ids(&r.body), vec![active]);
    assert_eq!(r.body["total_count"], 1);

    // Every state: active and deactivated copies, never the pre-active key.
    let r = app
        .get(&format!(
            "{}/managed_keys?state=pre_activation,active,deactivated,destroyed",
            path(&ks)
        ))
        .await
        .expect(200);
    assert_eq!(labels(&r.body), strs(&["active-key", "old-key"]));
    assert_eq!(r.body["total_count"], 2);

    let r = app
        .get(&format!("{}/managed_keys?state=deactivated", path(&ks)))
        .await
        .expect(200);
    assert_eq!(ids(&r.body), [deactivated]);

    let r = app
        .get(&format!("{}/managed_keys", path(&other)))
        .await
        .expect(200);
    assert_eq!(labels(&r.body), ["dev-key"]);

    app.get(&format!(
        "{}/managed_keys",
        path("0b6f3c1e-2a34-4d5e-8f90-123456789abc")
    ))
    .await
    .expect(404);
}

#[tokio::test]
async fn associated_resources_is_an_empty_list() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let ks = app.internal_keystore(&vault, "ks", &["prod"]).await;
    template_for(&app, &vault, "T1", "ibm_cloud_kms", "prod", "active").await;
    app.key(&vault, "T1", "k1").await.expect(201);

    let r = app
        .get(&format!("{}/associated_resources", path(&ks)))
        .await
        .expect(200);
    assert_eq!(r.body["total_count"], 0);
    assert_eq!(r.body["associated_resources"], json!([]));
    assert_eq!(r.body["offset"], 0);
    assert_eq!(r.body["limit"], 20);
    assert!(
        r.body["first"]["href"]
            .as_str()
            .is_some_and(|h| h.contains("offset=0")),
        "{}",
        r.body
    );
    assert!(r.body.get("next").is_none());

    app.get(&format!(
        "{}/associated_resources",
        path("0b6f3c1e-2a34-4d5e-8f90-123456789abc")
    ))
    .await
    .expect(404);
}

#[tokio::test]
async fn dry_run_reports_a_name_clash_like_the_real_create() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    app.post(KEYSTORES, internal_body(&vault, "taken"))
        .await
        .expect(201);
    let dry = app
        .post(
            &format!("{KEYSTORES}?dry_run=true"),
            internal_body(&vault, "taken"),
        )
        .await
        .expect(409);
    assert_eq!(dry.code(), "duplicate_name");
    assert_eq!(keystore_count(&app).await, 1);
}

#[tokio::test]
async fn legacy_vault_header_guards_keystore_and_template_changes() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let other = app.vault("other").await;
    let ks = app
        .post(KEYSTORES, internal_body(&vault, "ks"))
        .await
        .expect(201);
    let etag = ks.etag();
    let wrong = app
        .call(
            "PATCH",
            &path(&ks.id()),
            Some(json!({"name": "renamed"})),
            &[("if-match", &etag), ("uko-vault", &other)],
        )
        .await
        .expect(400);
    assert_eq!(wrong.code(), "invalid_header");
    assert_eq!(wrong.target(), "UKO-Vault");
    assert_eq!(
        app.get(&path(&ks.id())).await.expect(200).body["name"],
        "ks",
        "nothing changed"
    );
    app.call(
        "PATCH",
        &path(&ks.id()),
        Some(json!({"name": "renamed"})),
        &[("if-match", &etag), ("uko-vault", &vault)],
    )
    .await
    .expect(200);
    let template = app
        .template(&vault, "T1", "aes", "256", "active", "ks")
        .await;
    let t_path = format!("/api/v4/templates/{template}");
    let t_etag = app.get(&t_path).await.expect(200).etag();
    app.call(
        "POST",
        &format!("{t_path}/archive"),
        None,
        &[("if-match", &t_etag), ("uko-vault", &other)],
    )
    .await
    .expect(400);
    assert_eq!(
        app.get(&t_path).await.expect(200).body["state"],
        "unarchived"
    );
}
