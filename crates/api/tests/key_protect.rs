//! The Key Protect v2 data plane of internal keystores: wrap, unwrap, rewrap, key metadata.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyplane_testkit::{TestApp, TestResponse};
use serde_json::{Value, json};

struct Fixture {
    app: TestApp,
    vault: String,
    keystore: String,
    key: String,
    key_ref: String,
}

async fn fixture(size: &str) -> Fixture {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let keystore = app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", size, "active", "g").await;
    let key = app.key(&vault, "T1", "app-key").await.expect(201);
    let key_ref = key.body["status_in_keystores"][0]["key_id_in_keystore"]
        .as_str()
        .unwrap()
        .to_owned();
    Fixture {
        key: key.id(),
        app,
        vault,
        keystore,
        key_ref,
    }
}

impl Fixture {
    async fn action(&self, action: &str, body: Value) -> TestResponse {
        self.action_in(&self.keystore, action, body).await
    }

    async fn action_in(&self, keystore: &str, action: &str, body: Value) -> TestResponse {
        self.app
            .call(
                "POST",
                &format!("/api/v2/keys/{}/actions/{action}", self.key_ref),
                Some(body),
                &[("bluemix-instance", keystore)],
            )
            .await
    }

    async fn lifecycle(&self, action: &str) {
        self.app
            .with_etag(
                "POST",
                &format!("/api/v4/managed_keys/{}", self.key),
                &format!("/{action}"),
                None,
            )
            .await
            .expect(200);
    }
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

#[tokio::test]
async fn wrap_generates_a_data_key_that_unwraps() {
    let f = fixture("256").await;
    let w = f.action("wrap", json!({})).await.expect(200);
    let data_key = b64(&w.body["plaintext"]);
    assert_eq!(data_key.len(), 32, "a 256-bit data key is generated");
    let ciphertext = w.body["ciphertext"].clone();
    assert!(
        !b64(&ciphertext)
            .windows(32)
            .any(|x| x == data_key.as_slice())
    );
    let u = f
        .action("unwrap", json!({ "ciphertext": ciphertext }))
        .await
        .expect(200);
    assert_eq!(b64(&u.body["plaintext"]), data_key);
    assert_eq!(u.body["keyVersion"]["id"], w.body["keyVersion"]["id"]);
}

#[tokio::test]
async fn aad_and_tampering_are_detected() {
    let f = fixture("256").await;
    let data_key = B64.encode([7u8; 32]);
    let w = f
        .action(
            "wrap",
            json!({ "plaintext": data_key, "aad": ["tenant-1", "bucket"] }),
        )
        .await
        .expect(200);
    assert!(
        w.body.get("plaintext").is_none(),
        "a supplied data key is not echoed"
    );
    let ct = w.body["ciphertext"].as_str().unwrap().to_owned();
    let ok = f
        .action(
            "unwrap",
            json!({ "ciphertext": ct, "aad": ["tenant-1", "bucket"] }),
        )
        .await
        .expect(200);
    assert_eq!(ok.body["plaintext"], data_key);
    for aad in [
        json!([]),
        json!(["tenant-2", "bucket"]),
        json!(["tenant-1bucket"]),
    ] {
        let r = f
            .action("unwrap", json!({ "ciphertext": ct, "aad": aad }))
            .await
            .expect(400);
        assert_eq!(r.target(), "ciphertext");
    }
    let mut raw = B64.decode(&ct).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    f.action(
        "unwrap",
        json!({ "ciphertext": B64.encode(&raw), "aad": ["tenant-1", "bucket"] }),
    )
    .await
    .expect(400);
    f.action("unwrap", json!({ "ciphertext": "not base64!" }))
        .await
        .expect(400);
    f.action("unwrap", json!({})).await.expect(400);
    f.action("wrap", json!({ "plaintext": "" }))
        .await
        .expect(400);
}

#[tokio::test]
async fn the_instance_header_must_name_the_keystore_holding_the_key() {
    let f = fixture("256").await;
    let missing = f
        .app
        .call(
            "POST",
            &format!("/api/v2/keys/{}/actions/wrap", f.key_ref),
            Some(json!({})),
            &[],
        )
        .await
        .expect(400);
    assert_eq!(missing.target(), "bluemix-instance");
    f.action_in("not-a-uuid", "wrap", json!({}))
        .await
        .expect(400);
    // A vault's id is no keystore's: as unknown as any id.
    f.action_in(&f.vault, "wrap", json!({})).await.expect(404);
    let other = f
        .app
        .internal_keystore(&f.vault, "other", &["elsewhere"])
        .await;
    f.action_in(&other, "wrap", json!({})).await.expect(404);
}

#[tokio::test]
async fn rotation_keeps_old_ciphertexts_and_rewrap_moves_them_forward() {
    let f = fixture("256").await;
    let old = f.action("wrap", json!({ "aad": ["a"] })).await.expect(200);
    let data_key = old.body["plaintext"].clone();
    f.lifecycle("rotate").await;
    let u = f
        .action(
            "unwrap",
            json!({ "ciphertext": old.body["ciphertext"], "aad": ["a"] }),
        )
        .await
        .expect(200);
    assert_eq!(u.body["plaintext"], data_key);
    assert_eq!(u.body["keyVersion"]["id"], old.body["keyVersion"]["id"]);
    let r = f
        .action(
            "rewrap",
            json!({ "ciphertext": old.body["ciphertext"], "aad": ["a"] }),
        )
        .await
        .expect(200);
    assert_eq!(
        r.body["rewrappedKeyVersion"]["id"],
        old.body["keyVersion"]["id"]
    );
    assert_ne!(r.body["keyVersion"]["id"], old.body["keyVersion"]["id"]);
    let again = f
        .action(
            "unwrap",
            json!({ "ciphertext": r.body["ciphertext"], "aad": ["a"] }),
        )
        .await
        .expect(200);
    assert_eq!(again.body["plaintext"], data_key);
    assert_eq!(again.body["keyVersion"]["id"], r.body["keyVersion"]["id"]);
    let fresh = f.action("wrap", json!({})).await.expect(200);
    assert_eq!(
        fresh.body["keyVersion"]["id"], r.body["keyVersion"]["id"],
        "new wraps use the newest version"
    );
}

#[tokio::test]
async fn deactivated_keys_only_unwrap_and_destroyed_keys_refuse() {
    let f = fixture("256").await;
    let w = f.action("wrap", json!({})).await.expect(200);
    f.lifecycle("deactivate").await;
    let refused = f.action("wrap", json!({})).await.expect(409);
    assert_eq!(refused.code(), "key_not_active");
    // Key Protect's error body, which its clients parse.
    assert_eq!(
        refused.body["metadata"],
        json!({ "collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1 })
    );
    let error = &refused.body["resources"][0];
    assert!(
        error["errorMsg"]
            .as_str()
            .unwrap()
            .starts_with("Conflict: ")
    );
    assert_eq!(error["reasons"][0]["status"], 409);
    assert_eq!(
        error["correlationId"].as_str().unwrap(),
        refused.headers["x-correlation-id"].to_str().unwrap()
    );
    f.action("rewrap", json!({ "ciphertext": w.body["ciphertext"] }))
        .await
        .expect(409);
    let u = f
        .action("unwrap", json!({ "ciphertext": w.body["ciphertext"] }))
        .await
        .expect(200);
    assert_eq!(u.body["plaintext"], w.body["plaintext"]);
    f.lifecycle("destroy").await;
    let gone = f
        .action("unwrap", json!({ "ciphertext": w.body["ciphertext"] }))
        .await
        .expect(404);
    assert!(gone.message().contains("destroyed"));
}

#[tokio::test]
async fn only_aes_256_keys_wrap() {
    let f = fixture("128").await;
    let r = f.action("wrap", json!({})).await.expect(400);
    assert!(r.message().contains("AES-256"));
}

#[tokio::test]
async fn installed_keys_are_listed_in_key_protect_form() {
    let f = fixture("256").await;
    let list = f
        .app
        .call(
            "GET",
            "/api/v2/keys",
            None,
            &[("bluemix-instance", &f.keystore)],
        )
        .await
        .expect(200);
    assert_eq!(list.body["metadata"]["collectionTotal"], 1);
    let key = &list.body["resources"][0];
    assert_eq!(key["id"], f.key_ref.as_str());
    assert_eq!(key["state"], 1);
    assert_eq!(key["extractable"], false);
    let one = f
        .app
        .call(
            "GET",
            &format!("/api/v2/keys/{}", f.key_ref),
            None,
            &[("bluemix-instance", &f.keystore)],
        )
        .await
        .expect(200);
    assert_eq!(
        one.body["resources"][0]["name"], "app-key",
        "named as it was given"
    );
    f.app
        .call(
            "GET",
            "/api/v2/keys/00000000-0000-0000-0000-000000000000",
            None,
            &[("bluemix-instance", &f.keystore)],
        )
        .await
        .expect(404);
    let unauthenticated = f
        .app
        .send(
            axum::http::Request::builder()
                .uri("/api/v2/keys")
                .header("bluemix-instance", &f.keystore)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(unauthenticated.status.as_u16(), 401);
}

#[tokio::test]
async fn batches_wrap_and_unwrap_many_data_keys() {
    let f = fixture("256").await;
    let given: Vec<String> = (0..3u8).map(|i| B64.encode([i; 32])).collect();
    let w = f
        .action("wrap_batch", json!({ "plaintexts": given, "aad": ["x"] }))
        .await
        .expect(200);
    let generated = f
        .action("wrap_batch", json!({ "count": 2, "aad": ["x"] }))
        .await
        .expect(200);
    // A whole number is one however JSON writes it (`2.0` was refused as "not a usize"); a
    // fraction is not.
    let spelled_as_float: Value = serde_json::from_str(r#"{"count": 2.0}"#).unwrap();
    let r = f.action("wrap_batch", spelled_as_float).await.expect(200);
    assert_eq!(r.body["results"].as_array().unwrap().len(), 2);
    let fraction: Value = serde_json::from_str(r#"{"count": 2.5}"#).unwrap();
    let r = f.action("wrap_batch", fraction).await.expect(400);
    assert!(r.body.to_string().contains("whole number"), "{}", r.body);
    let mut results = w.body["results"].as_array().unwrap().clone();
    results.extend(
        generated.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    assert_eq!(results.len(), 5);
    assert!(
        results[..3].iter().all(|r| r.get("plaintext").is_none()),
        "given keys are not echoed"
    );
    assert!(
        results[3..]
            .iter()
            .all(|r| b64(&r["plaintext"]).len() == 32),
        "generated keys are returned"
    );
    let ciphertexts: Vec<Value> = results.iter().map(|r| r["ciphertext"].clone()).collect();
    let u = f
        .action(
            "unwrap_batch",
            json!({ "ciphertexts": ciphertexts, "aad": ["x"] }),
        )
        .await
        .expect(200);
    let plains: Vec<Value> = u.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["plaintext"].clone())
        .collect();
    assert_eq!(
        &plains[..3],
        &given.iter().map(|g| json!(g)).collect::<Vec<_>>()[..]
    );
    assert_eq!(plains[3], results[3]["plaintext"]);
    // A single wrapped key unwraps in a batch too, and one bad item names its position.
    let single = f.action("wrap", json!({ "aad": ["x"] })).await.expect(200);
    let mut mixed = ciphertexts.clone();
    mixed.push(single.body["ciphertext"].clone());
    f.action(
        "unwrap_batch",
        json!({ "ciphertexts": mixed, "aad": ["x"] }),
    )
    .await
    .expect(200);
    let mut bad = B64.decode(ciphertexts[1].as_str().unwrap()).unwrap();
    bad[10] ^= 0x80;
    let mut tampered = ciphertexts.clone();
    tampered[1] = json!(B64.encode(&bad));
    let r = f
        .action(
            "unwrap_batch",
            json!({ "ciphertexts": tampered, "aad": ["x"] }),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "ciphertexts[1]");
    // `count` or `plaintexts`, never both mixed in one batch.
    let r = f
        .action(
            "wrap_batch",
            json!({ "count": 2, "plaintexts": [B64.encode([7u8; 32])] }),
        )
        .await
        .expect(400);
    assert!(r.body.to_string().contains("not both"), "{}", r.body);
    // Unknown fields are named.
    let r = f
        .action("wrap", json!({ "plaintxt": B64.encode([7u8; 32]) }))
        .await
        .expect(400);
    assert!(r.body.to_string().contains("plaintxt"), "{}", r.body);
    let r = f.action("wrap_batch", json!({})).await.expect(400);
    assert_eq!(r.target(), "plaintexts");
    f.action("wrap_batch", json!({ "count": 1001 }))
        .await
        .expect(400);
}

// ---- key management through the Key Protect API ----

fn new_root_key(name: &str, extra: Value) -> Value {
    let mut resource = json!({"type": "application/vnd.ibm.kms.key+json", "name": name,
                              "extractable": false});
    if let (Some(r), Value::Object(m)) = (resource.as_object_mut(), extra) {
        r.extend(m);
    }
    json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
           "resources": [resource]})
}

async fn key_count(app: &TestApp, vault: &str) -> u64 {
    app.get(&format!("/api/v4/managed_keys?vault.id={vault}"))
        .await
        .expect(200)
        .body["total_count"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_key_protect_client_creates_imports_and_retires_keys_as_managed_keys() {
    let f = fixture("256").await;
    let kp = |method: &'static str, path: String, body: Option<Value>| {
        let app = &f.app;
        let keystore = f.keystore.clone();
        async move {
            app.call(method, &path, body, &[("bluemix-instance", &keystore)])
                .await
        }
    };
    // Generated: a managed key of the keystore's vault, under the template that targets it.
    let created = kp(
        "POST",
        "/api/v2/keys".into(),
        Some(new_root_key("generated", json!({}))),
    )
    .await
    .expect(201);
    let resource = &created.body["resources"][0];
    assert_eq!(resource["state"], 1);
    assert_eq!(resource["aliases"], json!([]));
    assert_eq!(resource["name"], "generated");
    assert_eq!(resource["imported"], false);
    let by_alias = kp("GET", "/api/v2/keys/generated".into(), None)
        .await
        .expect(200);
    assert_eq!(by_alias.body["resources"][0]["id"], resource["id"]);
    let managed = f
        .app
        .get(&format!(
            "/api/v4/managed_keys?vault.id={}&label=generated",
            f.vault
        ))
        .await
        .expect(200);
    assert_eq!(managed.body["managed_keys"][0]["template"]["name"], "T1");
    assert_eq!(managed.body["managed_keys"][0]["state"], "active");

    // Imported in the clear (over TLS), then used by its id like any installed key.
    let material = [0x42u8; 32];
    kp(
        "POST",
        "/api/v2/keys".into(),
        Some(new_root_key(
            "imported",
            json!({"payload": B64.encode(material)}),
        )),
    )
    .await
    .expect(201);
    let imported = kp("GET", "/api/v2/keys/imported".into(), None)
        .await
        .expect(200);
    let imported_id = imported.body["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(imported.body["resources"][0]["imported"], true);
    let wrapped = kp(
        "POST",
        format!("/api/v2/keys/{imported_id}/actions/wrap"),
        Some(json!({"plaintext": B64.encode(b"dek")})),
    )
    .await
    .expect(200);
    let unwrapped = kp(
        "POST",
        format!("/api/v2/keys/{imported_id}/actions/unwrap"),
        Some(json!({"ciphertext": wrapped.body["ciphertext"]})),
    )
    .await
    .expect(200);
    assert_eq!(b64(&unwrapped.body["plaintext"]), b"dek");

    // Disable, enable, rotate, delete: the managed lifecycle.
    let id = resource["id"].as_str().unwrap().to_owned();
    kp("POST", format!("/api/v2/keys/{id}/actions/disable"), None)
        .await
        .expect(204);
    let key = kp("GET", format!("/api/v2/keys/{id}"), None)
        .await
        .expect(200);
    assert_eq!(key.body["resources"][0]["state"], 3);
    kp("POST", format!("/api/v2/keys/{id}/actions/disable"), None)
        .await
        .expect(204);
    kp("POST", format!("/api/v2/keys/{id}/actions/enable"), None)
        .await
        .expect(204);
    let before = key.body["resources"][0]["keyVersion"]["id"].clone();
    kp("POST", format!("/api/v2/keys/{id}/actions/rotate"), None)
        .await
        .expect(204);
    let rotated = kp("GET", format!("/api/v2/keys/{id}"), None)
        .await
        .expect(200);
    assert_ne!(rotated.body["resources"][0]["keyVersion"]["id"], before);
    assert_eq!(rotated.body["resources"][0]["state"], 1);
    kp("DELETE", format!("/api/v2/keys/{id}"), None)
        .await
        .expect(204);
    kp("GET", format!("/api/v2/keys/{id}"), None)
        .await
        .expect(404);
    let destroyed = f
        .app
        .get(&format!(
            "/api/v4/managed_keys?vault.id={}&label=generated&state=destroyed",
            f.vault
        ))
        .await
        .expect(200);
    assert_eq!(destroyed.body["total_count"], 1, "{}", destroyed.body);

    // Every change is in the audit trail under the Key Protect action.
    let events = f
        .app
        .get("/api/v4/audit_events?action=keyplane.key-protect.create")
        .await
        .expect(200);
    assert!(
        events.body["total_count"].as_u64().unwrap() >= 2,
        "{}",
        events.body
    );
}

#[tokio::test]
async fn bad_key_protect_requests_are_refused_and_change_nothing() {
    let f = fixture("256").await;
    let before = key_count(&f.app, &f.vault).await;
    let cases = [
        (
            new_root_key("std", json!({"extractable": true})),
            400,
            "resources[0].extractable",
        ),
        (
            new_root_key("aliased", json!({"aliases": ["not ok"]})),
            400,
            "resources[0].aliases",
        ),
        (
            new_root_key(
                "aliased",
                json!({"aliases": ["a1", "a2", "a3", "a4", "a5", "a6"]}),
            ),
            400,
            "resources[0].aliases",
        ),
        (
            new_root_key("aliased", json!({"aliases": ["wrap"]})),
            400,
            "resources[0].aliases",
        ),
        (
            new_root_key(
                "aliased",
                json!({"aliases": ["0191f2e4-3b7a-7c3e-9a55-1c2d3e4f5a6b"]}),
            ),
            400,
            "resources[0].aliases",
        ),
        (new_root_key("x", json!({})), 400, "resources[0].name"),
        (
            new_root_key(
                "algo",
                json!({"payload": B64.encode([1u8; 32]), "encryptionAlgorithm": "RSA_PKCS1"}),
            ),
            400,
            "encryptionAlgorithm",
        ),
        (
            new_root_key("short", json!({"payload": B64.encode([1u8; 16])})),
            400,
            "payload",
        ),
        (
            new_root_key(
                "half",
                json!({"payload": B64.encode([1u8; 32]), "iv": B64.encode([0u8; 12])}),
            ),
            400,
            "encryptedNonce",
        ),
        (json!({"resources": []}), 400, "resources"),
        (new_root_key("app-key", json!({})), 409, ""),
    ];
    for (body, status, target) in cases {
        let r = f
            .app
            .call(
                "POST",
                "/api/v2/keys",
                Some(body.clone()),
                &[("bluemix-instance", &f.keystore)],
            )
            .await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
        assert_eq!(r.target(), target, "{}", r.body);
    }
    // A vault with no template for the keystore: nothing to create keys under.
    let vault = f.app.vault("bare").await;
    let bare = f.app.internal_keystore(&vault, "bare", &["none"]).await;
    let r = f
        .app
        .call(
            "POST",
            "/api/v2/keys",
            Some(new_root_key("kk", json!({}))),
            &[("bluemix-instance", &bare)],
        )
        .await
        .expect(409);
    assert!(r.message().contains("no template"), "{}", r.body);
    assert_eq!(key_count(&f.app, &f.vault).await, before);
}

#[tokio::test]
async fn key_protect_management_needs_the_managed_permissions() {
    use keyplane_core::authz::Role;
    let f = fixture("256").await;
    let vault = uuid::Uuid::parse_str(&f.vault).unwrap();
    f.app
        .add_caller("reader", "reader", &[(Role::Reader, Some(vault))]);
    f.app.add_caller(
        "creator",
        "creator",
        &[(Role::KeyCustodianCreator, Some(vault))],
    );
    let headers = [("bluemix-instance", f.keystore.as_str())];
    // A reader uses keys and reads them, and changes nothing.
    f.app
        .call_as("reader", "GET", "/api/v2/keys", None, &headers)
        .await
        .expect(200);
    for (method, path) in [
        ("POST", "/api/v2/keys".to_owned()),
        ("POST", "/api/v2/import_token".to_owned()),
        ("GET", "/api/v2/import_token".to_owned()),
        (
            "POST",
            format!("/api/v2/keys/{}/actions/disable", f.key_ref),
        ),
        ("POST", format!("/api/v2/keys/{}/actions/rotate", f.key_ref)),
        ("DELETE", format!("/api/v2/keys/{}", f.key_ref)),
    ] {
        let body = match (method, path.as_str()) {
            ("POST", "/api/v2/keys") => Some(new_root_key("x", json!({}))),
            ("POST", _) => Some(json!({})),
            _ => None,
        };
        let r = f.app.call_as("reader", method, &path, body, &headers).await;
        assert_eq!(r.status.as_u16(), 403, "{method} {path}: {}", r.body);
    }
    // A creator creates and rotates, but may not disable (a deployer's right) or delete.
    f.app
        .call_as(
            "creator",
            "POST",
            "/api/v2/keys",
            Some(new_root_key("made", json!({}))),
            &headers,
        )
        .await
        .expect(201);
    f.app
        .call_as(
            "creator",
            "POST",
            &format!("/api/v2/keys/{}/actions/rotate", f.key_ref),
            None,
            &headers,
        )
        .await
        .expect(204);
    f.app
        .call_as(
            "creator",
            "POST",
            &format!("/api/v2/keys/{}/actions/disable", f.key_ref),
            None,
            &headers,
        )
        .await
        .expect(403);
    f.app
        .call_as(
            "creator",
            "DELETE",
            &format!("/api/v2/keys/{}", f.key_ref),
            None,
            &headers,
        )
        .await
        .expect(403);
}

/// One data-plane call, sent as `spelling` names the key, optionally gzip-compressed.
struct RawCall<'a> {
    action: &'a str,
    body: Vec<u8>,
    content_type: &'a str,
    gzip: bool,
    token: Option<&'a str>,
    instance: &'a str,
}

impl Fixture {
    async fn raw(&self, spelling: &str, call: RawCall<'_>) -> TestResponse {
        use std::io::Write;
        let mut req = axum::http::Request::builder()
            .method("POST")
            .uri(format!("/api/v2/keys/{spelling}/actions/{}", call.action))
            .header("content-type", call.content_type)
            .header("bluemix-instance", call.instance)
            .header("x-correlation-id", "alike-check");
        if let Some(token) = call.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let body = if call.gzip {
            req = req.header("content-encoding", "gzip");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&call.body).unwrap();
            gz.finish().unwrap()
        } else {
            call.body
        };
        self.app
            .send(req.body(axum::body::Body::from(body)).unwrap())
            .await
    }
}

/// Data-plane calls are answered ahead of the router when sent as is; a compressed body, or a key
/// id in a percent-encoded spelling, goes through the router instead. Both ways answer alike:
/// the same results, refusals, error bodies and correlation ids.
#[tokio::test]
async fn the_data_plane_answers_alike_ahead_of_the_router_and_through_it() {
    let f = fixture("256").await;
    let token = keyplane_testkit::TEST_TOKEN;
    // The first character percent-encoded: the router decodes it, the front leaves it alone.
    let encoded = format!("%{:02X}{}", f.key_ref.as_bytes()[0], &f.key_ref[1..]);
    let data_key = B64.encode([9u8; 32]);
    let wrap_body = json!({ "plaintext": data_key, "aad": ["tenant"] })
        .to_string()
        .into_bytes();
    let ok = |body: Vec<u8>, gzip: bool| RawCall {
        action: "wrap",
        body,
        content_type: "application/json",
        gzip,
        token: Some(token),
        instance: &f.keystore,
    };

    // Wrapped every way, unwrapped every way.
    let mut ciphertexts = Vec::new();
    let mut versions = Vec::new();
    for (spelling, gzip) in [(&f.key_ref, false), (&encoded, false), (&f.key_ref, true)] {
        let w = f
            .raw(spelling, ok(wrap_body.clone(), gzip))
            .await
            .expect(200);
        assert_eq!(w.headers["x-correlation-id"], "alike-check");
        assert!(
            w.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        versions.push(w.body["keyVersion"]["id"].clone());
        ciphertexts.push(w.body["ciphertext"].clone());
    }
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
    for ciphertext in &ciphertexts {
        for spelling in [&f.key_ref, &encoded] {
            let body = json!({ "ciphertext": ciphertext, "aad": ["tenant"] }).to_string();
            let u = f
                .raw(
                    spelling,
                    RawCall {
                        action: "unwrap",
                        ..ok(body.into_bytes(), false)
                    },
                )
                .await
                .expect(200);
            assert_eq!(u.body["plaintext"], data_key);
            assert_eq!(u.body["keyVersion"]["id"], versions[0]);
        }
    }

    // Each refusal, both ways: the same status, code, error body and headers.
    let oversized = vec![b' '; keyplane_api::extract::MAX_BODY_BYTES + 1];
    let refusals = [
        (
            "no token",
            RawCall {
                token: None,
                ..ok(wrap_body.clone(), false)
            },
            401,
        ),
        (
            "bad token",
            RawCall {
                token: Some("nope"),
                ..ok(wrap_body.clone(), false)
            },
            401,
        ),
        (
            "not JSON",
            RawCall {
                content_type: "text/plain",
                ..ok(wrap_body.clone(), false)
            },
            415,
        ),
        ("too large", ok(oversized, false), 413),
        ("bad JSON", ok(b"{\"plaintext\": 7}".to_vec(), false), 400),
        (
            "unknown instance",
            RawCall {
                instance: "00000000-0000-0000-0000-000000000001",
                ..ok(wrap_body.clone(), false)
            },
            404,
        ),
    ];
    for (what, call, status) in refusals {
        let call_again = RawCall {
            body: call.body.clone(),
            ..call
        };
        let ahead = f.raw(&f.key_ref, call).await;
        let routed = f.raw(&encoded, call_again).await;
        for r in [&ahead, &routed] {
            assert_eq!(r.status.as_u16(), status, "{what}: {}", r.body);
            assert_eq!(r.headers["x-correlation-id"], "alike-check", "{what}");
            assert_eq!(
                r.body["metadata"]["collectionType"], "application/vnd.ibm.kms.error+json",
                "{what}: a Key Protect error body: {}",
                r.body
            );
        }
        assert_eq!(ahead.body, routed.body, "{what}");
        assert_eq!(
            ahead.headers.get("www-authenticate"),
            routed.headers.get("www-authenticate"),
            "{what}"
        );
    }

    // Nothing was wrapped by a refused call, and each refusal was recorded the same way.
    let events = f
        .app
        .get("/api/v4/audit_events?action=keyplane.data-plane.wrap&limit=100")
        .await
        .expect(200);
    let outcomes: Vec<(Value, Value)> = events.body["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["outcome"].clone(), e["status"].clone()))
        .collect();
    for status in [401, 415, 413, 400] {
        let seen = outcomes.iter().filter(|(_, s)| *s == status).count();
        assert!(
            seen >= 2 && seen % 2 == 0,
            "{status} recorded both ways: {outcomes:?}"
        );
    }
}

impl Fixture {
    /// A Key Protect call sent as IBM's clients send it: `body` as is (or none), the given
    /// headers, and no `Content-Type` unless one is among them.
    async fn as_client(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(
                "authorization",
                format!("Bearer {}", keyplane_testkit::TEST_TOKEN),
            )
            .header("bluemix-instance", &self.keystore);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = body.map_or_else(axum::body::Body::empty, |b| {
            axum::body::Body::from(b.to_owned())
        });
        self.app.send(req.body(body).unwrap()).await
    }

    fn key_path(&self, rest: &str) -> String {
        format!("/api/v2/keys/{}{rest}", self.key_ref)
    }
}

#[tokio::test]
async fn bodies_are_read_as_ibms_clients_send_them() {
    let f = fixture("256").await;
    // No Content-Type (the Go client), Key Protect's own media type (the Node client), no body
    // at all (a wrap without a plaintext): each wraps.
    let wrap = f.key_path("/actions/wrap");
    let plain = f
        .as_client("POST", &wrap, Some(r#"{"plaintext":"AAECAw=="}"#), &[])
        .await
        .expect(200);
    assert!(plain.body["ciphertext"].is_string());
    f.as_client(
        "POST",
        &wrap,
        Some("{}"),
        &[(
            "content-type",
            "application/vnd.ibm.kms.key_action_wrap+json",
        )],
    )
    .await
    .expect(200);
    let generated = f.as_client("POST", &wrap, None, &[]).await.expect(200);
    assert_eq!(b64(&generated.body["plaintext"]).len(), 32);
    let generated = f
        .as_client("POST", &wrap, Some("null"), &[])
        .await
        .expect(200);
    assert_eq!(b64(&generated.body["plaintext"]).len(), 32);
    // Only the media type is lenient: another one is 415, and a body is still one JSON value.
    f.as_client("POST", &wrap, Some("{}"), &[("content-type", "text/plain")])
        .await
        .expect(415);
    f.as_client("POST", &wrap, Some("{} {}"), &[])
        .await
        .expect(400);
    // `null` for an action without arguments (the Go client's RotateV2(nil), enable, disable).
    f.as_client("POST", &f.key_path("/actions/rotate"), Some("null"), &[])
        .await
        .expect(204);
    f.as_client("POST", &f.key_path("/actions/disable"), Some("null"), &[])
        .await
        .expect(204);
    f.as_client("POST", &f.key_path("/actions/enable"), Some("null"), &[])
        .await
        .expect(204);
    // The UKO API keeps its strictness.
    let strict = f
        .app
        .send(
            axum::http::Request::builder()
                .method("POST")
                .uri("/api/v4/vaults")
                .header(
                    "authorization",
                    format!("Bearer {}", keyplane_testkit::TEST_TOKEN),
                )
                .body(axum::body::Body::from(r#"{"name":"no-media-type"}"#))
                .unwrap(),
        )
        .await;
    strict.expect(415);
}

#[tokio::test]
async fn pages_correlation_ids_and_deletes_follow_key_protect() {
    let f = fixture("256").await;
    // The Go client asks for 2,000 keys a page; Key Protect allows up to 5,000.
    f.as_client("GET", "/api/v2/keys?limit=2000&offset=0", None, &[])
        .await
        .expect(200);
    let over = f
        .as_client("GET", "/api/v2/keys?limit=5001", None, &[])
        .await;
    let over = over.expect(400);
    assert_eq!(over.target(), "limit");

    // The client's Correlation-Id is the call's, echoed and in the error body.
    let seen = f
        .as_client(
            "GET",
            &f.key_path(""),
            None,
            &[("correlation-id", "app-call-42")],
        )
        .await
        .expect(200);
    assert_eq!(seen.headers["correlation-id"], "app-call-42");
    let missing = f
        .as_client(
            "GET",
            &format!("/api/v2/keys/{}", uuid::Uuid::new_v4()),
            None,
            &[("correlation-id", "app-call-43")],
        )
        .await
        .expect(404);
    assert_eq!(missing.body["resources"][0]["correlationId"], "app-call-43");

    // The resource carries what Key Protect's does.
    let key = &seen.body["resources"][0];
    assert_eq!(key["keyRingID"], "default");
    assert_eq!(key["dualAuthDelete"]["enabled"], false);
    assert_eq!(key["deleted"], false);
    assert!(
        key["crn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}:key:{}", f.keystore, f.key_ref)),
        "{key}"
    );
    assert!(key.get("lastRotateDate").is_none());
    f.as_client("POST", &f.key_path("/actions/rotate"), None, &[])
        .await
        .expect(204);
    let rotated = f
        .as_client("GET", &f.key_path(""), None, &[])
        .await
        .expect(200);
    assert!(rotated.body["resources"][0]["lastRotateDate"].is_string());

    // Delete answers the deleted key when asked to, nothing otherwise.
    let deleted = f
        .as_client(
            "DELETE",
            &f.key_path(""),
            None,
            &[("prefer", "return=representation")],
        )
        .await
        .expect(200);
    let gone = &deleted.body["resources"][0];
    assert_eq!(gone["state"], 5);
    assert_eq!(gone["deleted"], true);
    assert!(gone["deletionDate"].is_string());
    assert_eq!(gone["id"], f.key_ref);
}

#[tokio::test]
async fn unwrapping_an_older_version_also_rewraps_it_under_the_newest() {
    let f = fixture("256").await;
    let old = f.action("wrap", json!({ "aad": ["a"] })).await.expect(200);
    let current = f
        .action(
            "unwrap",
            json!({ "ciphertext": old.body["ciphertext"], "aad": ["a"] }),
        )
        .await
        .expect(200);
    assert!(current.body.get("ciphertext").is_none(), "{}", current.body);
    f.lifecycle("rotate").await;
    let u = f
        .action(
            "unwrap",
            json!({ "ciphertext": old.body["ciphertext"], "aad": ["a"] }),
        )
        .await
        .expect(200);
    assert_eq!(u.body["plaintext"], old.body["plaintext"]);
    assert_eq!(u.body["keyVersion"]["id"], old.body["keyVersion"]["id"]);
    let newest = u.body["rewrappedKeyVersion"]["id"].clone();
    assert_ne!(newest, old.body["keyVersion"]["id"]);
    let again = f
        .action(
            "unwrap",
            json!({ "ciphertext": u.body["ciphertext"], "aad": ["a"] }),
        )
        .await
        .expect(200);
    assert_eq!(again.body["plaintext"], old.body["plaintext"]);
    assert_eq!(again.body["keyVersion"]["id"], newest);
    assert!(again.body.get("ciphertext").is_none());
    // A deactivated key still unwraps, but wraps nothing new.
    f.lifecycle("deactivate").await;
    let retired = f
        .action(
            "unwrap",
            json!({ "ciphertext": old.body["ciphertext"], "aad": ["a"] }),
        )
        .await
        .expect(200);
    assert!(retired.body.get("ciphertext").is_none());
}

#[tokio::test]
async fn names_and_aliases_are_kept_as_sent_and_find_the_key() {
    let f = fixture("256").await;
    let created = f
        .as_client(
            "POST",
            "/api/v2/keys",
            Some(
                &json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "node_key.v2-x",
                                       "extractable": false, "aliases": ["py-root-1"]}]})
                .to_string(),
            ),
            &[],
        )
        .await
        .expect(201);
    let key = &created.body["resources"][0];
    assert_eq!(key["name"], "node_key.v2-x");
    assert_eq!(key["aliases"], json!(["py-root-1"]));
    let id = key["id"].as_str().unwrap().to_owned();
    // Found by id, by alias and by the name it was given.
    for reference in [id.as_str(), "py-root-1", "node_key.v2-x"] {
        let found = f
            .as_client("GET", &format!("/api/v2/keys/{reference}"), None, &[])
            .await
            .expect(200);
        assert_eq!(found.body["resources"][0]["id"], id.as_str(), "{reference}");
    }
    // Aliases are added and removed; an alias names one key in the keystore.
    let added = f
        .as_client(
            "POST",
            &format!("/api/v2/keys/{id}/aliases/second_alias"),
            None,
            &[],
        )
        .await
        .expect(201);
    assert_eq!(added.body["resources"][0]["alias"], "second_alias");
    assert_eq!(added.body["resources"][0]["keyId"], id.as_str());
    let taken = f
        .as_client(
            "POST",
            &format!("/api/v2/keys/{}/aliases/second_alias", f.key_ref),
            None,
            &[],
        )
        .await;
    taken.expect(409);
    f.as_client(
        "POST",
        &format!("/api/v2/keys/{id}/aliases/not%20valid"),
        None,
        &[],
    )
    .await
    .expect(400);
    let meta = f
        .as_client("GET", "/api/v2/keys/second_alias/metadata", None, &[])
        .await
        .expect(200);
    assert_eq!(
        meta.body["resources"][0]["aliases"],
        json!(["py-root-1", "second_alias"])
    );
    f.as_client(
        "DELETE",
        &format!("/api/v2/keys/{id}/aliases/py-root-1"),
        None,
        &[],
    )
    .await
    .expect(204);
    f.as_client("GET", "/api/v2/keys/py-root-1", None, &[])
        .await
        .expect(404);
    f.as_client(
        "DELETE",
        &format!("/api/v2/keys/{id}/aliases/py-root-1"),
        None,
        &[],
    )
    .await
    .expect(404);

    // Versions, newest first, after a rotation.
    f.as_client(
        "POST",
        &format!("/api/v2/keys/{id}/actions/rotate"),
        None,
        &[],
    )
    .await
    .expect(204);
    let versions = f
        .as_client("GET", &format!("/api/v2/keys/{id}/versions"), None, &[])
        .await
        .expect(200);
    assert_eq!(versions.body["metadata"]["collectionTotal"], 2);
    assert_eq!(
        versions.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.key.version+json"
    );
    let current = f
        .as_client("GET", &format!("/api/v2/keys/{id}"), None, &[])
        .await
        .expect(200);
    assert_eq!(
        versions.body["resources"][0]["id"],
        current.body["resources"][0]["keyVersion"]["id"]
    );

    // A deleted key's aliases go with it.
    f.as_client("DELETE", &format!("/api/v2/keys/{id}"), None, &[])
        .await
        .expect(204);
    f.as_client("GET", "/api/v2/keys/second_alias", None, &[])
        .await
        .expect(404);
}

#[tokio::test]
async fn key_rings_and_calls_not_served_answer_in_key_protects_words() {
    let f = fixture("256").await;
    let rings = f
        .as_client("GET", "/api/v2/key_rings", None, &[])
        .await
        .expect(200);
    assert_eq!(rings.body["resources"][0]["id"], "default");
    assert_eq!(
        rings.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.key_ring+json"
    );
    // The default ring holds every key not moved; a call naming another ring does not find it.
    f.as_client(
        "GET",
        &f.key_path(""),
        None,
        &[("x-kms-key-ring", "default")],
    )
    .await
    .expect(200);
    let elsewhere = f
        .as_client(
            "GET",
            &f.key_path(""),
            None,
            &[("x-kms-key-ring", "finance")],
        )
        .await
        .expect(404);
    assert!(
        elsewhere.message().contains("finance"),
        "{}",
        elsewhere.body
    );
    f.as_client("GET", &f.key_path(""), None, &[("x-kms-key-ring", "a/b")])
        .await
        .expect(400);
    // A Key Protect call Keyplane does not serve says so in Key Protect's error body.
    let registrations = f
        .as_client("GET", &f.key_path("/registrations"), None, &[])
        .await
        .expect(404);
    assert_eq!(
        registrations.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.error+json"
    );
    assert!(
        registrations
            .message()
            .contains("does not serve this Key Protect call"),
        "{}",
        registrations.body
    );
}

#[tokio::test]
async fn an_alias_never_takes_another_keys_name_and_a_refused_delete_changes_nothing() {
    let f = fixture("256").await;
    // The fixture's key is named "app-key": no other key may take it as an alias.
    let other = f
        .as_client(
            "POST",
            "/api/v2/keys",
            Some(
                &json!({"resources": [{"name": "other-key", "extractable": false,
                                       "aliases": ["other-alias"]}]})
                .to_string(),
            ),
            &[],
        )
        .await
        .expect(201);
    let other_id = other.body["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    f.as_client(
        "POST",
        &format!("/api/v2/keys/{other_id}/aliases/app-key"),
        None,
        &[],
    )
    .await
    .expect(409);
    // Nor may a new key be named like another's alias.
    f.as_client(
        "POST",
        "/api/v2/keys",
        Some(&json!({"resources": [{"name": "other-alias", "extractable": false}]}).to_string()),
        &[],
    )
    .await
    .expect(409);
    let by_name = f
        .as_client("GET", "/api/v2/keys/app-key", None, &[])
        .await
        .expect(200);
    assert_eq!(by_name.body["resources"][0]["id"], f.key_ref.as_str());
}

#[tokio::test]
async fn deleting_an_active_key_inside_the_grace_period_is_refused_whole() {
    let app = TestApp::with_policy(keyplane_core::lifecycle::LifecyclePolicy {
        destroy_grace_period: chrono::Duration::hours(4),
        ..keyplane_core::lifecycle::LifecyclePolicy::default()
    })
    .await;
    let vault = app.vault("v").await;
    let keystore = app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let key = app.key(&vault, "T1", "held").await.expect(201);
    let key_ref = key.body["status_in_keystores"][0]["key_id_in_keystore"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = app
        .call(
            "DELETE",
            &format!("/api/v2/keys/{key_ref}"),
            None,
            &[("bluemix-instance", &keystore)],
        )
        .await
        .expect(409);
    assert!(refused.message().contains("disable it"), "{}", refused.body);
    // Still active: it wraps.
    app.call(
        "POST",
        &format!("/api/v2/keys/{key_ref}/actions/wrap"),
        Some(json!({})),
        &[("bluemix-instance", &keystore)],
    )
    .await
    .expect(200);
}

impl Fixture {
    /// A Key Protect call with a JSON body, as the fixture's administrator.
    async fn kp(&self, method: &str, path: &str, body: Option<Value>) -> TestResponse {
        self.kp_in_ring(method, path, body, None).await
    }

    async fn kp_in_ring(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        ring: Option<&str>,
    ) -> TestResponse {
        let mut headers = vec![("bluemix-instance", self.keystore.as_str())];
        if let Some(ring) = ring {
            headers.push(("x-kms-key-ring", ring));
        }
        self.app.call(method, path, body, &headers).await
    }

    async fn kp_key(&self, name: &str, ring: Option<&str>) -> String {
        self.kp_in_ring(
            "POST",
            "/api/v2/keys",
            Some(new_root_key(name, json!({}))),
            ring,
        )
        .await
        .expect(201)
        .body["resources"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[tokio::test]
async fn key_rings_hold_keys_where_the_key_ring_header_puts_them() {
    let f = fixture("256").await;
    let rings = || f.kp("GET", "/api/v2/key_rings", None);
    let created = f
        .kp("POST", "/api/v2/key_rings/finance", None)
        .await
        .expect(201);
    assert_eq!(created.body["resources"][0]["id"], "finance");
    f.kp("POST", "/api/v2/key_rings/finance", None)
        .await
        .expect(409);
    f.kp("POST", "/api/v2/key_rings/default", None)
        .await
        .expect(409);
    f.kp("POST", "/api/v2/key_rings/x", None).await.expect(400);
    f.kp("POST", "/api/v2/key_rings/bad_ring", None)
        .await
        .expect(400);
    let listed = rings().await.expect(200);
    let ids: Vec<&str> = listed.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", "finance"]);

    // A key created naming a ring is in it; naming one that does not exist creates nothing.
    let before = key_count(&f.app, &f.vault).await;
    let ledger = f.kp_key("ledger", Some("finance")).await;
    let got = f
        .kp("GET", &format!("/api/v2/keys/{ledger}"), None)
        .await
        .expect(200);
    assert_eq!(got.body["resources"][0]["keyRingID"], "finance");
    f.kp_in_ring(
        "POST",
        "/api/v2/keys",
        Some(new_root_key("stray", json!({}))),
        Some("nowhere"),
    )
    .await
    .expect(404);
    assert_eq!(key_count(&f.app, &f.vault).await, before + 1);

    // Lists and calls naming a ring see only its keys.
    let in_finance = f
        .kp_in_ring("GET", "/api/v2/keys", None, Some("finance"))
        .await
        .expect(200);
    assert_eq!(in_finance.body["metadata"]["collectionTotal"], 1);
    assert_eq!(in_finance.body["resources"][0]["id"], ledger.as_str());
    let in_default = f
        .kp_in_ring("GET", "/api/v2/keys", None, Some("default"))
        .await
        .expect(200);
    assert_eq!(in_default.body["resources"][0]["id"], f.key_ref.as_str());
    f.kp_in_ring("GET", "/api/v2/keys", None, Some("nowhere"))
        .await
        .expect(404);
    f.kp_in_ring(
        "GET",
        &format!("/api/v2/keys/{ledger}"),
        None,
        Some("default"),
    )
    .await
    .expect(404);
    f.kp_in_ring(
        "GET",
        &format!("/api/v2/keys/{ledger}"),
        None,
        Some("finance"),
    )
    .await
    .expect(200);

    // A ring holding a key is not deleted.
    let holding = f
        .kp("DELETE", "/api/v2/key_rings/finance", None)
        .await
        .expect(409);
    assert!(holding.message().contains("1 key"), "{}", holding.body);

    // PATCH moves a key between rings, only to one that exists.
    let moved = f
        .kp(
            "PATCH",
            &f.key_path(""),
            Some(json!({"keyRingID": "finance"})),
        )
        .await
        .expect(200);
    assert_eq!(moved.body["resources"][0]["keyRingID"], "finance");
    f.kp(
        "PATCH",
        &f.key_path(""),
        Some(json!({"keyRingID": "nowhere"})),
    )
    .await
    .expect(404);
    f.kp("PATCH", &f.key_path(""), Some(json!({"name": "x"})))
        .await
        .expect(400);
    let after = f.kp("GET", &f.key_path(""), None).await.expect(200);
    assert_eq!(after.body["resources"][0]["keyRingID"], "finance");

    // Deleted keys keep their ring: deleting it takes force, which moves them to default.
    for id in [&ledger, &f.key_ref] {
        f.kp("POST", &format!("/api/v2/keys/{id}/actions/disable"), None)
            .await
            .expect(204);
        f.kp("DELETE", &format!("/api/v2/keys/{id}"), None)
            .await
            .expect(204);
    }
    let deleted_inside = f
        .kp("DELETE", "/api/v2/key_rings/finance", None)
        .await
        .expect(409);
    assert!(
        deleted_inside.message().contains("force=true"),
        "{}",
        deleted_inside.body
    );
    f.kp("DELETE", "/api/v2/key_rings/finance?force=maybe", None)
        .await
        .expect(400);
    f.kp("DELETE", "/api/v2/key_rings/finance?force=true", None)
        .await
        .expect(204);
    f.kp("DELETE", "/api/v2/key_rings/finance", None)
        .await
        .expect(404);
    f.kp("DELETE", "/api/v2/key_rings/default", None)
        .await
        .expect(409);
    // A keystore holds a bounded number of rings.
    for n in 0..keyplane_core::service::MAX_KEY_RINGS {
        f.kp("POST", &format!("/api/v2/key_rings/ring-{n}"), None)
            .await
            .expect(201);
    }
    let full = f
        .kp("POST", "/api/v2/key_rings/one-more", None)
        .await
        .expect(409);
    assert!(full.message().contains("at most"), "{}", full.body);
    for n in 0..keyplane_core::service::MAX_KEY_RINGS {
        f.kp("DELETE", &format!("/api/v2/key_rings/ring-{n}"), None)
            .await
            .expect(204);
    }
    assert_eq!(
        rings().await.expect(200).body["metadata"]["collectionTotal"],
        1
    );
    // The deleted key, now in default, is purged there.
    f.kp_in_ring(
        "DELETE",
        &format!("/api/v2/keys/{ledger}/purge"),
        None,
        Some("default"),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn key_rings_are_set_up_by_vault_administrators_and_keys_moved_by_custodians() {
    use keyplane_core::authz::Role;
    let f = fixture("256").await;
    let vault = uuid::Uuid::parse_str(&f.vault).unwrap();
    f.app.add_caller(
        "creator",
        "creator",
        &[(Role::KeyCustodianCreator, Some(vault))],
    );
    f.app
        .add_caller("reader", "reader", &[(Role::Reader, Some(vault))]);
    f.app.add_caller("stranger", "stranger", &[]);
    let headers = [("bluemix-instance", f.keystore.as_str())];
    f.app
        .call_as("creator", "POST", "/api/v2/key_rings/ops", None, &headers)
        .await
        .expect(403);
    f.app
        .call_as("stranger", "POST", "/api/v2/key_rings/ops", None, &headers)
        .await
        .expect(404);
    f.kp("POST", "/api/v2/key_rings/ops", None)
        .await
        .expect(201);
    f.app
        .call_as("creator", "DELETE", "/api/v2/key_rings/ops", None, &headers)
        .await
        .expect(403);
    f.app
        .call_as(
            "reader",
            "PATCH",
            &f.key_path(""),
            Some(json!({"keyRingID": "ops"})),
            &headers,
        )
        .await
        .expect(403);
    f.app
        .call_as(
            "creator",
            "PATCH",
            &f.key_path(""),
            Some(json!({"keyRingID": "ops"})),
            &headers,
        )
        .await
        .expect(200);
    // Every change is in the audit trail, under Key Protect's operation names.
    let events = f
        .app
        .get("/api/v4/audit_events?limit=100")
        .await
        .expect(200);
    let operations: Vec<&str> = events.body["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for op in [
        "keyplane.key-protect.create-key-ring",
        "keyplane.key-protect.move-key",
    ] {
        assert!(operations.contains(&op), "{op} not in {operations:?}");
    }
}

#[tokio::test]
async fn policies_map_rotation_to_the_interval_and_dual_auth_delete_to_dual_control() {
    let f = fixture("256").await;
    let policies = f
        .kp("GET", &f.key_path("/policies"), None)
        .await
        .expect(200);
    assert_eq!(
        policies.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.policy+json"
    );
    assert_eq!(policies.body["resources"][0]["rotation"]["enabled"], false);
    assert_eq!(
        policies.body["resources"][1]["dualAuthDelete"]["enabled"],
        false
    );
    let rotation = |months: Value| {
        json!({"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
               "resources": [{"type": "application/vnd.ibm.kms.policy+json",
                              "rotation": {"enabled": true, "interval_month": months}}]})
    };
    let set = f
        .kp(
            "PUT",
            &f.key_path("/policies?policy=rotation"),
            Some(rotation(json!(3))),
        )
        .await
        .expect(200);
    assert_eq!(set.body["resources"][0]["rotation"]["interval_month"], 3);
    let read = f
        .kp("GET", &f.key_path("/policies?policy=rotation"), None)
        .await
        .expect(200);
    assert_eq!(read.body["metadata"]["collectionTotal"], 1);
    assert_eq!(read.body["resources"][0]["rotation"]["enabled"], true);
    assert_eq!(read.body["resources"][0]["rotation"]["interval_month"], 3);
    // Out of Key Protect's range, or not a number: refused, and the policy stays.
    for bad in [json!(0), json!(13), json!("3"), json!(2.5)] {
        f.kp("PUT", &f.key_path("/policies"), Some(rotation(bad.clone())))
            .await
            .expect(400);
    }
    f.kp(
        "PUT",
        &f.key_path("/policies?policy=dualAuthDelete"),
        Some(rotation(json!(6))),
    )
    .await
    .expect(400);
    f.kp("GET", &f.key_path("/policies?policy=allowedNetwork"), None)
        .await
        .expect(404);
    let kept = f
        .kp("GET", &f.key_path("/policies?policy=rotation"), None)
        .await
        .expect(200);
    assert_eq!(kept.body["resources"][0]["rotation"]["interval_month"], 3);
    // Disabled: the key is rotated when someone does.
    f.kp(
        "PUT",
        &f.key_path("/policies"),
        Some(json!({"resources": [{"rotation": {"enabled": false}}]})),
    )
    .await
    .expect(200);
    let cleared = f
        .kp("GET", &f.key_path("/policies?policy=rotation"), None)
        .await
        .expect(200);
    assert_eq!(cleared.body["resources"][0]["rotation"]["enabled"], false);

    // A key's dualAuthDelete is its vault's dual control: the same value is accepted, another
    // is refused, saying where it is set.
    let dual = |enabled: bool| json!({"resources": [{"dualAuthDelete": {"enabled": enabled}}]});
    f.kp("PUT", &f.key_path("/policies"), Some(dual(false)))
        .await
        .expect(200);
    let refused = f
        .kp("PUT", &f.key_path("/policies"), Some(dual(true)))
        .await
        .expect(409);
    assert!(
        refused.message().contains("dual_control"),
        "{}",
        refused.body
    );

    // The instance's dualAuthDelete policy switches the vault's dual control.
    let instance = f
        .kp("GET", "/api/v2/instance/policies", None)
        .await
        .expect(200);
    assert_eq!(
        instance.body["resources"][0]["policy_type"],
        "dualAuthDelete"
    );
    assert_eq!(
        instance.body["resources"][0]["policy_data"]["enabled"],
        false
    );
    let instance_dual = |enabled: bool| {
        json!({"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
               "resources": [{"policy_type": "dualAuthDelete", "policy_data": {"enabled": enabled}}]})
    };
    f.kp(
        "PUT",
        "/api/v2/instance/policies?policy=dualAuthDelete",
        Some(instance_dual(true)),
    )
    .await
    .expect(204);
    let vault_dual = f
        .app
        .get(&format!("/api/v4/vaults/{}/dual_control", f.vault))
        .await
        .expect(200);
    assert_eq!(vault_dual.body["enabled"], true);
    let now_dual = f
        .kp("GET", &f.key_path("/policies?policy=dualAuthDelete"), None)
        .await
        .expect(200);
    assert_eq!(
        now_dual.body["resources"][0]["dualAuthDelete"]["enabled"],
        true
    );
    f.kp(
        "PUT",
        "/api/v2/instance/policies",
        Some(json!({"resources": [{"policy_type": "allowedNetwork", "policy_data": {"enabled": true}}]})),
    )
    .await
    .expect(400);
    f.kp("GET", "/api/v2/instance/policies?policy=allowedIP", None)
        .await
        .expect(404);
}

#[tokio::test]
async fn only_an_administrator_switches_the_instance_dual_auth_delete_policy() {
    use keyplane_core::authz::Role;
    let f = fixture("256").await;
    let vault = uuid::Uuid::parse_str(&f.vault).unwrap();
    f.app.add_caller(
        "vault-admin",
        "vault-admin",
        &[(Role::VaultAdministrator, Some(vault))],
    );
    let body =
        json!({"resources": [{"policy_type": "dualAuthDelete", "policy_data": {"enabled": true}}]});
    f.app
        .call_as(
            "vault-admin",
            "PUT",
            "/api/v2/instance/policies",
            Some(body),
            &[("bluemix-instance", f.keystore.as_str())],
        )
        .await
        .expect(403);
    let vault_dual = f
        .app
        .get(&format!("/api/v4/vaults/{}/dual_control", f.vault))
        .await
        .expect(200);
    assert_eq!(vault_dual.body["enabled"], false);
}

#[tokio::test]
async fn dual_authorization_delete_takes_a_second_principal() {
    use keyplane_core::authz::Role;
    let f = fixture("256").await;
    let vault = uuid::Uuid::parse_str(&f.vault).unwrap();
    for who in ["alice", "bob"] {
        f.app.add_caller(
            who,
            who,
            &[
                (Role::VaultAdministrator, Some(vault)),
                (Role::KeyCustodianDeployer, Some(vault)),
            ],
        );
    }
    let headers = [("bluemix-instance", f.keystore.as_str())];
    let as_ = |who: &'static str, method: &'static str, path: String| {
        let app = &f.app;
        async move { app.call_as(who, method, &path, None, &headers).await }
    };
    // Without dual control a key is deleted in one call: setting it for deletion is refused.
    as_("alice", "POST", f.key_path("/actions/setKeyForDeletion"))
        .await
        .expect(409);
    f.app.require_dual_control(&f.vault).await;
    as_("alice", "POST", f.key_path("/actions/disable"))
        .await
        .expect(204);
    // Without a request, a delete is refused and says how it is done.
    let alone = as_("alice", "DELETE", f.key_path("")).await.expect(409);
    assert!(
        alone.message().contains("setKeyForDeletion"),
        "{}",
        alone.body
    );
    as_("alice", "POST", f.key_path("/actions/setKeyForDeletion"))
        .await
        .expect(204);
    // Asking again changes nothing; the requester cannot approve her own request.
    as_("alice", "POST", f.key_path("/actions/setKeyForDeletion"))
        .await
        .expect(204);
    as_("alice", "DELETE", f.key_path("")).await.expect(409);
    let pending = f.app.get("/api/v4/approvals").await.expect(200);
    let requests = pending.body["approvals"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{}", pending.body);
    assert_eq!(requests[0]["state"], "pending");
    // Bob withdraws it; then his delete has nothing to approve.
    as_("bob", "POST", f.key_path("/actions/unsetKeyForDeletion"))
        .await
        .expect(204);
    as_("bob", "POST", f.key_path("/actions/unsetKeyForDeletion"))
        .await
        .expect(409);
    as_("bob", "DELETE", f.key_path("")).await.expect(409);
    f.kp("GET", &f.key_path(""), None).await.expect(200);
    // Alice sets it for deletion again; Bob's delete approves and carries it out.
    as_("alice", "POST", f.key_path("/actions/setKeyForDeletion"))
        .await
        .expect(204);
    let deleted = f
        .app
        .call_as(
            "bob",
            "DELETE",
            &f.key_path(""),
            None,
            &[
                ("bluemix-instance", f.keystore.as_str()),
                ("prefer", "return=representation"),
            ],
        )
        .await
        .expect(200);
    assert_eq!(deleted.body["resources"][0]["state"], 5);
    assert_eq!(
        deleted.body["resources"][0]["dualAuthDelete"]["enabled"],
        true
    );
    f.kp("GET", &f.key_path(""), None).await.expect(404);
    let key = f
        .app
        .get(&format!("/api/v4/managed_keys/{}", f.key))
        .await
        .expect(200);
    assert_eq!(key.body["state"], "destroyed");
    let decided = f.app.get("/api/v4/approvals").await.expect(200);
    let states: Vec<&str> = decided.body["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"approved") && states.contains(&"rejected"),
        "{states:?}"
    );
}

#[tokio::test]
async fn purge_removes_a_deleted_key_and_restore_says_why_it_cannot() {
    let f = fixture("256").await;
    // A key still in use is neither purged nor restored.
    let live = f
        .kp("DELETE", &f.key_path("/purge"), None)
        .await
        .expect(409);
    assert!(live.message().contains("not deleted"), "{}", live.body);
    f.kp("POST", &f.key_path("/restore"), None)
        .await
        .expect(409);
    f.kp("DELETE", &f.key_path(""), None).await.expect(204);
    // Deleted: restore says the material is gone; purge removes the managed key.
    let restore = f
        .kp("POST", &f.key_path("/restore"), None)
        .await
        .expect(409);
    assert!(
        restore.message().contains("cannot be restored"),
        "{}",
        restore.body
    );
    let purged = f
        .kp("DELETE", &f.key_path("/purge"), None)
        .await
        .expect(200);
    assert_eq!(purged.body["resources"][0]["id"], f.key_ref.as_str());
    assert_eq!(purged.body["resources"][0]["state"], 5);
    f.app
        .get(&format!("/api/v4/managed_keys/{}", f.key))
        .await
        .expect(404);
    f.kp("DELETE", &f.key_path("/purge"), None)
        .await
        .expect(404);
    f.kp("POST", &f.key_path("/restore"), None)
        .await
        .expect(404);
    f.kp(
        "DELETE",
        &format!("/api/v2/keys/{}/purge", uuid::Uuid::new_v4()),
        None,
    )
    .await
    .expect(404);
    let events = f
        .app
        .get("/api/v4/audit_events?limit=100")
        .await
        .expect(200);
    let purges = events.body["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "keyplane.key-protect.purge" && e["outcome"] == "success")
        .count();
    assert_eq!(purges, 1, "{}", events.body);
}

#[tokio::test]
async fn a_key_created_with_aliases_is_written_whole() {
    let f = fixture("256").await;
    let before = key_count(&f.app, &f.vault).await;
    // The second alias repeats the first: nothing is created.
    f.kp(
        "POST",
        "/api/v2/keys",
        Some(new_root_key(
            "twice",
            json!({"aliases": ["same-one", "same-one"]}),
        )),
    )
    .await
    .expect(409);
    assert_eq!(key_count(&f.app, &f.vault).await, before);
    let made = f
        .kp(
            "POST",
            "/api/v2/keys",
            Some(new_root_key(
                "whole",
                json!({"aliases": ["one-a", "one-b"]}),
            )),
        )
        .await
        .expect(201);
    assert_eq!(
        made.body["resources"][0]["aliases"],
        json!(["one-a", "one-b"])
    );
    assert_eq!(key_count(&f.app, &f.vault).await, before + 1);
}
