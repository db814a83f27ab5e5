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
    f.action_in(&f.vault, "wrap", json!({})).await.expect(400);
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
        one.body["resources"][0]["name"], "app key",
        "named as the IBM keystore naming rule allows"
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
        .action(
            "wrap_batch",
            json!({ "plaintexts": given, "count": 2, "aad": ["x"] }),
        )
        .await
        .expect(200);
    let results = w.body["results"].as_array().unwrap();
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
    let r = f.action("wrap_batch", json!({})).await.expect(400);
    assert_eq!(r.target(), "plaintexts");
    f.action("wrap_batch", json!({ "count": 1001 }))
        .await
        .expect(400);
}
