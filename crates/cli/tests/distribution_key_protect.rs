//! Distribution to a Key Protect instance through the real binary: the instance is an internal
//! keystore of a second keyplane process, reached through its Key Protect v2 API and its IAM
//! token endpoint. The key there is the managed key (the second keyplane wraps, the test opens
//! that with the managed material), through create, deactivate, reactivate, rotate, sync,
//! disconnect and reconnect, and destroy.

mod common;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use keyplane_testkit::process::{Client, Server};
use serde_json::{Value, json};

/// A keyplane whose destroy and rotation are not held back by waiting periods.
async fn start_unhurried(dir: &std::path::Path) -> Server {
    Server::start(
        &binary(),
        dir,
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_DESTROY_GRACE_PERIOD", "0s"),
            ("KEYPLANE_ROTATION_MIN_INTERVAL", "0s"),
        ],
    )
    .await
    .expect("server starts")
}

/// The second keyplane as a Key Protect instance: a vault with an internal keystore in group
/// `kp`, a template installing AES-256 keys there, and a service principal whose API key may
/// manage keys in that vault. Returns (instance id, API key, vault id).
async fn key_protect_instance(target: &Client) -> (String, String, String) {
    let vault = new_vault(target).await;
    let instance = connect_keystore(
        target,
        &json!({"type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": vault},
                "name": "kp-instance", "groups": ["kp"]}),
    )
    .await;
    active_aes_template(target, &vault, "ibm_cloud_kms", "kp").await;
    let apikey = principal_with_api_key(
        target,
        "keyplane-source",
        "service",
        &[
            ("key_custodian_creator", Some(&vault)),
            ("key_custodian_deployer", Some(&vault)),
            ("vault_administrator", Some(&vault)),
        ],
    )
    .await;
    (instance, apikey, vault)
}

fn key_protect_keystore(
    vault: &str,
    name: &str,
    target: &Server,
    instance: &str,
    apikey: &str,
) -> Value {
    json!({"type": "ibm_cloud_kms", "ibm_variant": "key_protect", "vault": {"id": vault},
           "name": name, "groups": ["kp"], "ibm_api_endpoint": target.base,
           "ibm_iam_endpoint": target.base, "ibm_api_key": apikey, "ibm_instance_id": instance})
}

/// A Key Protect call on the instance, as the target's administrator.
async fn kp(
    target: &Client,
    instance: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = target
        .http
        .request(
            method.parse().unwrap(),
            format!("{}/api/v2/{path}", target.base),
        )
        .bearer_auth(&target.token)
        .header("bluemix-instance", instance);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The instance's key under an alias, or the status it answered.
async fn kp_key(target: &Client, instance: &str, alias: &str) -> Result<Value, u16> {
    match kp(target, instance, "GET", &format!("keys/{alias}"), None).await {
        (200, body) => Ok(body["resources"][0].clone()),
        (status, _) => Err(status),
    }
}

/// Has the instance wrap `plaintext` with the key under `alias` and opens the ciphertext with
/// `material`: keyplane's frame is `KP 1` ‖ version ‖ format byte ‖ GCM nonce ‖ ciphertext ‖ tag,
/// bound to the key's id there and the version. Returns (version, what opened).
async fn wrapped_by_instance_opens_with(
    target: &Client,
    instance: &str,
    alias: &str,
    material: &[u8],
) -> (u32, Vec<u8>) {
    let key = kp_key(target, instance, alias).await.unwrap();
    let kid = key["id"].as_str().unwrap().to_owned();
    let (status, body) = kp(
        target,
        instance,
        "POST",
        &format!("keys/{kid}/actions/wrap"),
        Some(json!({"plaintext": B64.encode(b"proof of the same key")})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let blob = B64.decode(body["ciphertext"].as_str().unwrap()).unwrap();
    assert_eq!(&blob[..3], b"KP\x01");
    let version = u32::from_be_bytes(blob[3..7].try_into().unwrap());
    assert_eq!(blob[7], 1);
    let (nonce, sealed) = blob[8..].split_at(12);
    let aad = format!("keyplane-wrap:v1:{kid}:{version}");
    let opened = Aes256Gcm::new_from_slice(material)
        .unwrap()
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        )
        .expect("the managed material opens what the instance wrapped");
    (version, opened)
}

#[tokio::test]
async fn a_key_protect_instance_holds_the_managed_key_through_its_lifecycle() {
    let target_dir = tempfile::tempdir().unwrap();
    let target_server = start_unhurried(target_dir.path()).await;
    let target = target_server.client();
    let (instance, apikey, target_vault) = key_protect_instance(&target).await;

    let dir = tempfile::tempdir().unwrap();
    let server = start_unhurried(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let ks = connect_keystore(
        &c,
        &key_protect_keystore(&vault, "kp", &target_server, &instance, &apikey),
    )
    .await;
    active_aes_template(&c, &vault, "ibm_cloud_kms", "kp").await;
    let key = create_key(&c, &vault, "PaymentsRoot").await;
    let key_id = id(&key);
    let key_path = format!("/api/v4/managed_keys/{key_id}");

    // Create: imported under the instance's import token; a managed key of the instance's vault.
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    let remote = kp_key(&target, &instance, "PaymentsRoot")
        .await
        .unwrap_or_else(|status| panic!("{status}: {entry}"));
    assert_eq!(entry["key_id_in_keystore"], remote["id"], "{entry}");
    assert_eq!(remote["state"], 1);
    assert_eq!(remote["extractable"], false);
    let there = target
        .get(&format!("/api/v4/managed_keys?vault.id={target_vault}"))
        .await
        .unwrap();
    assert_eq!(there.body["total_count"], 1, "{}", there.body);
    assert_eq!(there.body["managed_keys"][0]["label"], "PaymentsRoot");
    assert_eq!(
        there.body["managed_keys"][0]["created_by"],
        "keyplane-source"
    );
    let v1 = open_material_version(dir.path(), &key, 1);
    assert_eq!(
        wrapped_by_instance_opens_with(&target, &instance, "PaymentsRoot", v1.expose()).await,
        (1, b"proof of the same key".to_vec())
    );

    // Deactivate and reactivate: the instance's disable and enable.
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert_eq!(
        kp_key(&target, &instance, "PaymentsRoot").await.unwrap()["state"],
        3
    );
    let r = c.with_etag("POST", &key_path, "/activate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert_eq!(
        kp_key(&target, &instance, "PaymentsRoot").await.unwrap()["state"],
        1
    );

    // Rotate: the new version's material is imported as the instance key's new version.
    let r = c.with_etag("POST", &key_path, "/rotate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v2 = open_material_version(dir.path(), &key, 2);
    let mut rotated = None;
    for _ in 0..300 {
        let held = kp_key(&target, &instance, "PaymentsRoot").await.unwrap();
        if held["keyVersion"]["id"] != remote["keyVersion"]["id"] {
            rotated = Some(held);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rotated.is_some(), "the instance key never rotated");
    assert_eq!(
        wrapped_by_instance_opens_with(&target, &instance, "PaymentsRoot", v2.expose()).await,
        (2, b"proof of the same key".to_vec())
    );

    // Drift: someone disables the key at the instance; a sync puts the managed state back.
    let (status, body) = kp(
        &target,
        &instance,
        "POST",
        "keys/PaymentsRoot/actions/disable",
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let r = c
        .with_etag("POST", &key_path, "/sync_status_in_keystores")
        .await
        .unwrap();
    assert!(r.status == 200 || r.status == 202, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    eventually_state(&target, &instance, 1).await;

    // Disconnect leaves the instance's key; reconnecting gives a new keystore id, and a sync
    // re-links the copy there once the instance proves it holds this very key.
    let gone = c
        .with_etag(
            "DELETE",
            &format!("/api/v4/keystores/{ks}"),
            "?mode=disconnect",
        )
        .await
        .unwrap();
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert!(kp_key(&target, &instance, "PaymentsRoot").await.is_ok());
    let again = connect_keystore(
        &c,
        &key_protect_keystore(&vault, "kp-again", &target_server, &instance, &apikey),
    )
    .await;
    assert_ne!(again, ks);
    let r = c
        .with_etag("POST", &key_path, "/sync_status_in_keystores")
        .await
        .unwrap();
    assert!(r.status == 200 || r.status == 202, "{}", r.body);
    let entry = wait_status(&c, &key_id, &again, |s| s["status"] == "active").await;
    assert_eq!(entry["key_id_in_keystore"], remote["id"], "{entry}");
    let there = target
        .get(&format!("/api/v4/managed_keys?vault.id={target_vault}"))
        .await
        .unwrap();
    assert_eq!(there.body["total_count"], 1, "no duplicate: {}", there.body);

    // The template's group moves away: realigning the key disables its copy at the instance.
    let templates = c
        .get(&format!("/api/v4/templates?vault.id={vault}"))
        .await
        .unwrap();
    let template = format!(
        "/api/v4/templates/{}",
        templates.body["templates"][0]["id"].as_str().unwrap()
    );
    let etag = c.get(&template).await.unwrap().etag;
    let moved = c
        .send(
            "PATCH",
            &template,
            Some(&json!({"keystores": [{"type": "ibm_cloud_kms", "group": "elsewhere"}]})),
            Some(&etag),
        )
        .await
        .unwrap();
    assert_eq!(moved.status, 200, "{}", moved.body);
    let r = c
        .with_etag("POST", &key_path, "/update_from_template")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body["status_in_keystores"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["keystore"]["id"] != again.as_str()),
        "{}",
        r.body
    );
    eventually_state(&target, &instance, 3).await;

    // Destroy: the copy left behind in the instance follows the key (its managed key there is
    // destroyed and the key is gone from the instance).
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.with_etag("POST", &key_path, "/destroy").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let mut gone = false;
    for _ in 0..300 {
        if kp_key(&target, &instance, "PaymentsRoot").await == Err(404) {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the instance still holds the destroyed key");
    let there = target
        .get(&format!(
            "/api/v4/managed_keys?vault.id={target_vault}&state=destroyed"
        ))
        .await
        .unwrap();
    assert_eq!(
        there.body["managed_keys"][0]["state"], "destroyed",
        "{}",
        there.body
    );
}

/// Waits until the instance's `PaymentsRoot` is in Key Protect state `state`.
async fn eventually_state(target: &Client, instance: &str, state: u64) {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = kp_key(target, instance, "PaymentsRoot")
            .await
            .map_or(Value::Null, |k| k["state"].clone());
        if last == state {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the instance key stayed in state {last}");
}

#[tokio::test]
async fn the_instance_refuses_material_without_the_import_tokens_proof() {
    let target_dir = tempfile::tempdir().unwrap();
    let target_server = start_unhurried(target_dir.path()).await;
    let target = target_server.client();
    let (instance, _, target_vault) = key_protect_instance(&target).await;

    // No token yet: an import that claims one is refused.
    let material = [7u8; 32];
    let (status, body) = kp(
        &target,
        &instance,
        "POST",
        "keys",
        Some(
            json!({"resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "imported",
            "extractable": false, "payload": B64.encode([1u8; 512]),
            "encryptedNonce": B64.encode([2u8; 28]), "iv": B64.encode([3u8; 12])}]}),
        ),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("no live import token"), "{body}");

    let (status, body) = kp(
        &target,
        &instance,
        "POST",
        "import_token",
        Some(json!({"expiration": 600, "maxAllowedRetrievals": 1})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["remainingRetrievals"], 1);
    assert!(
        body.get("payload").is_none(),
        "the key comes only on retrieval"
    );
    let (status, token) = kp(&target, &instance, "GET", "import_token", None).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["remainingRetrievals"], 0);
    let (status, _) = kp(&target, &instance, "GET", "import_token", None).await;
    assert_eq!(status, 404, "retrieved once only");

    let pem = String::from_utf8(B64.decode(token["payload"].as_str().unwrap()).unwrap()).unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let public = B64.decode(der).unwrap();
    let payload = keyplane_crypto::transfer::rsa_oaep_sha256(&public, &material).unwrap();
    let seal_nonce = |nonce: &[u8]| {
        let iv = [9u8; 12];
        let sealed = Aes256Gcm::new_from_slice(&material)
            .unwrap()
            .encrypt(Nonce::from_slice(&iv), nonce)
            .unwrap();
        (B64.encode(iv), B64.encode(sealed))
    };
    let import = |iv: String, encrypted_nonce: String| {
        json!({"resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "imported",
            "extractable": false, "payload": B64.encode(&payload),
            "encryptionAlgorithm": "RSAES_OAEP_SHA_256", "encryptedNonce": encrypted_nonce, "iv": iv}]})
    };

    // A nonce that is not the token's: refused, nothing created.
    let (iv, wrong) = seal_nonce(b"not the nonce");
    let (status, body) = kp(&target, &instance, "POST", "keys", Some(import(iv, wrong))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["resources"][0]["reasons"][0]["code"], "invalid_field");
    let there = target
        .get(&format!("/api/v4/managed_keys?vault.id={target_vault}"))
        .await
        .unwrap();
    assert_eq!(there.body["total_count"], 0);

    // The token's nonce: imported, and the instance's key is that material.
    let nonce = B64.decode(token["nonce"].as_str().unwrap()).unwrap();
    let (iv, proof) = seal_nonce(&nonce);
    let (status, body) = kp(&target, &instance, "POST", "keys", Some(import(iv, proof))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["resources"][0]["state"], 1);
    assert_eq!(body["resources"][0]["name"], "imported");
    assert_eq!(body["resources"][0]["imported"], true);
    assert_eq!(
        wrapped_by_instance_opens_with(&target, &instance, "imported", &material).await,
        (1, b"proof of the same key".to_vec())
    );
}

#[tokio::test]
async fn a_wrong_api_key_is_refused_before_the_keystore_is_saved() {
    let target_dir = tempfile::tempdir().unwrap();
    let target_server = start_unhurried(target_dir.path()).await;
    let target = target_server.client();
    let (instance, _, _) = key_protect_instance(&target).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let r = c
        .post(
            "/api/v4/keystores",
            &key_protect_keystore(&vault, "kp", &target_server, &instance, "kp_not-a-key"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["errors"][0]["code"], "keystore_rejected");
    assert!(r.body.to_string().contains("bad credentials"), "{}", r.body);
    let listed = c
        .get(&format!("/api/v4/keystores?vault.id={vault}"))
        .await
        .unwrap();
    assert_eq!(listed.body["total_count"], 0);
}
