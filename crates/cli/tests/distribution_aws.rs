//! Distribution to AWS KMS (LocalStack) through the real binary: the KMS key is the managed key
//! (LocalStack encrypts, the test decrypts with the managed material), through create,
//! deactivate, reactivate, rotate (a new KMS key behind the same alias) and destroy.

mod common;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;
use common::*;
use serde_json::json;
use uuid::Uuid;

/// This test's own region: LocalStack is shared, regions keep tests apart.
const REGION: &str = "us-west-2";

fn kms() -> aws_sdk_kms::Client {
    kms_in(REGION)
}

/// LocalStack's ciphertext: 36-byte key id ‖ 16-byte IV ‖ 16-byte tag ‖ AES-256-GCM of the
/// PKCS#7-padded plaintext.
fn decrypt_localstack(material: &[u8], blob: &[u8]) -> Vec<u8> {
    let (iv, rest) = blob[36..].split_at(16);
    let (tag, ciphertext) = rest.split_at(16);
    let cipher =
        AesGcm::<Aes256, aes_gcm::aes::cipher::consts::U16>::new_from_slice(material).unwrap();
    let mut sealed = ciphertext.to_vec();
    sealed.extend_from_slice(tag);
    let padded = cipher
        .decrypt(
            Nonce::from_slice(iv),
            Payload {
                msg: &sealed,
                aad: b"",
            },
        )
        .expect("the managed material opens what LocalStack sealed");
    let pad = usize::from(*padded.last().unwrap());
    padded[..padded.len() - pad].to_vec()
}

async fn kms_encrypt(key: &str, text: &str) -> Vec<u8> {
    kms()
        .encrypt()
        .key_id(key)
        .plaintext(Blob::new(text.as_bytes()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .as_ref()
        .to_vec()
}

async fn kms_state(key: &str) -> KeyState {
    kms()
        .describe_key()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_state()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn aws_kms_holds_the_managed_key_through_its_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let ks = connect_keystore(
        &c,
        &json!({"type": "aws_kms", "vault": {"id": vault}, "name": "aws", "groups": ["aws"],
                    "aws_region": REGION.replace('-', "_"), "aws_access_key_id": "test",
                    "aws_secret_access_key": "test", "aws_endpoint": keyplane_testkit::peers::localstack()}),
    )
    .await;
    active_aes_template(&c, &vault, "aws_kms", "aws").await;
    let label = format!("billing-{}", &Uuid::new_v4().to_string()[..8]);
    let key = create_key(&c, &vault, &label).await;
    let key_id = id(&key);
    let key_path = format!("/api/v4/managed_keys/{key_id}");
    let alias = format!("alias/{label}");

    // Create (active): the KMS key behind the alias is the managed key, tagged with its id.
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    let first_kms_key = entry["key_id_in_keystore"].as_str().unwrap().to_owned();
    assert_eq!(kms_state(&alias).await, KeyState::Enabled);
    let tags = kms()
        .list_resource_tags()
        .key_id(&first_kms_key)
        .send()
        .await
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.tag_key() == "keyplane:managed-key-id" && t.tag_value() == key_id)
    );
    let blob = kms_encrypt(&alias, "first secret").await;
    assert_eq!(
        decrypt_localstack(open_material_version(dir.path(), &key, 1).expose(), &blob),
        b"first secret"
    );

    // Deactivate and reactivate map to DisableKey and EnableKey.
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert_eq!(kms_state(&first_kms_key).await, KeyState::Disabled);
    let r = c.with_etag("POST", &key_path, "/activate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert_eq!(kms_state(&first_kms_key).await, KeyState::Enabled);

    // Rotate: a new KMS key with the new material; the alias moves to it.
    let r = c.with_etag("POST", &key_path, "/rotate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = wait_status(&c, &key_id, &ks, |s| {
        s["status"] == "active" && s["key_id_in_keystore"] != first_kms_key.as_str()
    })
    .await;
    let second_kms_key = entry["key_id_in_keystore"].as_str().unwrap().to_owned();
    let blob = kms_encrypt(&alias, "second secret").await;
    assert_eq!(&blob[..36], second_kms_key.as_bytes());
    assert_eq!(
        decrypt_localstack(open_material_version(dir.path(), &key, 2).expose(), &blob),
        b"second secret"
    );

    // Deactivate disables every version's KMS key; destroy schedules every one for deletion.
    assert_eq!(kms_state(&first_kms_key).await, KeyState::Enabled);
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert_eq!(kms_state(&second_kms_key).await, KeyState::Disabled);
    assert_eq!(kms_state(&first_kms_key).await, KeyState::Disabled);
    let r = c.with_etag("POST", &key_path, "/destroy").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "not_present").await;
    assert_eq!(entry["keystore_sync_flag"], "ok", "{entry}");
    assert_eq!(kms_state(&second_kms_key).await, KeyState::PendingDeletion);
    assert_eq!(kms_state(&first_kms_key).await, KeyState::PendingDeletion);
}

#[tokio::test]
async fn a_reconnected_aws_keystore_is_re_linked_by_a_sync_only_for_its_own_keys() {
    // Its own region again: the key counts below see only this test's keys.
    const HERE: &str = "eu-west-3";
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let keystore = |name: &str| {
        json!({"type": "aws_kms", "vault": {"id": vault}, "name": name, "groups": ["aws"],
               "aws_region": "eu_west_3", "aws_access_key_id": "test",
               "aws_secret_access_key": "test", "aws_endpoint": keyplane_testkit::peers::localstack()})
    };
    let first = connect_keystore(&c, &keystore("aws")).await;
    active_aes_template(&c, &vault, "aws_kms", "aws").await;
    let label = format!("ledger-{}", &Uuid::new_v4().to_string()[..8]);
    let key = create_key(&c, &vault, &label).await;
    let key_id = id(&key);
    let entry = wait_status(&c, &key_id, &first, |s| s["status"] == "active").await;
    let kms_key = entry["key_id_in_keystore"].as_str().unwrap().to_owned();
    let count = async || kms_in(HERE).list_keys().send().await.unwrap().keys().len();
    let before = count().await;

    // Disconnect leaves the KMS key; after reconnecting, a sync re-links it: it carries the key's
    // tag and takes the key's material again.
    let gone = c
        .with_etag(
            "DELETE",
            &format!("/api/v4/keystores/{first}"),
            "?mode=disconnect",
        )
        .await
        .unwrap();
    assert_eq!(gone.status, 204, "{}", gone.body);
    let again = connect_keystore(&c, &keystore("aws-again")).await;
    sync(&c, &key_id).await;
    let entry = wait_status(&c, &key_id, &again, |s| s["status"] == "active").await;
    assert_eq!(entry["key_id_in_keystore"], kms_key.as_str(), "{entry}");
    assert_eq!(count().await, before, "no duplicate KMS key");
    let blob = kms_in(HERE)
        .encrypt()
        .key_id(format!("alias/{label}"))
        .plaintext(Blob::new(&b"still the key"[..]))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .as_ref()
        .to_vec();
    assert_eq!(
        decrypt_localstack(open_material_version(dir.path(), &key, 1).expose(), &blob),
        b"still the key"
    );

    // A KMS key behind the same alias that keyplane did not make is never adopted.
    let lookalike = format!("lookalike-{}", &Uuid::new_v4().to_string()[..8]);
    let foreign = kms_in(HERE).create_key().send().await.unwrap();
    kms_in(HERE)
        .create_alias()
        .alias_name(format!("alias/{lookalike}"))
        .target_key_id(foreign.key_metadata().unwrap().key_id())
        .send()
        .await
        .unwrap();
    let other = create_key(&c, &vault, &lookalike).await;
    let entry = wait_status(&c, &id(&other), &again, |s| s["status"] == "error").await;
    assert!(
        entry.to_string().contains("that is not this key"),
        "{entry}"
    );

    // Nor does key material go into an empty key for import that keyplane did not make.
    let empty = format!("empty-{}", &Uuid::new_v4().to_string()[..8]);
    let waiting = kms_in(HERE)
        .create_key()
        .origin(aws_sdk_kms::types::OriginType::External)
        .send()
        .await
        .unwrap();
    let waiting = waiting.key_metadata().unwrap().key_id().to_owned();
    kms_in(HERE)
        .create_alias()
        .alias_name(format!("alias/{empty}"))
        .target_key_id(&waiting)
        .send()
        .await
        .unwrap();
    let third = create_key(&c, &vault, &empty).await;
    let entry = wait_status(&c, &id(&third), &again, |s| s["status"] == "error").await;
    assert!(entry.to_string().contains("not this key"), "{entry}");
    let state = kms_in(HERE)
        .describe_key()
        .key_id(&waiting)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_state()
        .unwrap()
        .clone();
    assert_eq!(state, KeyState::PendingImport, "no material went in");
}

#[tokio::test]
async fn aws_credentials_are_tested_before_the_keystore_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let r = c
        .post(
            "/api/v4/keystores",
            &json!({"type": "aws_kms", "vault": {"id": vault}, "name": "aws",
                    "aws_region": "us_west_2", "aws_access_key_id": "test",
                    "aws_secret_access_key": "test", "aws_endpoint": nowhere}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 424, "{}", r.body);
    assert_eq!(r.body["errors"][0]["code"], "keystore_unreachable");
    let listed = c
        .get(&format!("/api/v4/keystores?vault.id={vault}"))
        .await
        .unwrap();
    assert_eq!(listed.body["total_count"], 0);
}
