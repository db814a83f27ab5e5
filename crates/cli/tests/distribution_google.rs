//! Distribution to Google Cloud KMS (the test kit's contract fake) through the real binary: the
//! Cloud KMS key is the managed key (the fake really unwraps what the import job's key wraps;
//! what it encrypts opens with the managed material, and the reverse), through create,
//! deactivate, reactivate, rotate (a new primary version) and destroy (every version scheduled
//! for destruction); every disconnect mode, re-link and restore after a reconnect; and every way
//! the connection can fail is told apart before anything is saved.

mod common;

use base64::Engine as _;
use common::*;
use keyplane_testkit::google::GoogleKms;
use serde_json::{Value, json};

const RING: &str = "keyplane-ring";

fn connection(vault: &str, name: &str, fake: &GoogleKms) -> Value {
    json!({"type": "google_kms", "vault": {"id": vault}, "name": name, "groups": ["google"],
           "google_credentials": base64::engine::general_purpose::STANDARD.encode(&fake.credentials),
           "google_location": "europe-west3", "google_project_id": fake.project,
           "google_key_ring": RING, "google_kms_endpoint": fake.endpoint,
           "google_token_url": fake.token_url})
}

fn ring(fake: &GoogleKms) -> String {
    format!(
        "projects/{}/locations/europe-west3/keyRings/{RING}",
        fake.project
    )
}

fn states(fake: &GoogleKms, name: &str) -> Vec<String> {
    fake.versions(name).into_iter().map(|(_, s, _)| s).collect()
}

async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not reached within 60 s");
}

#[tokio::test]
async fn a_google_key_ring_holds_the_managed_key_through_its_lifecycle() {
    let kms = GoogleKms::start("payments-prod").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    // Connected with the CLI: the service-account JSON read from its file, never echoed.
    let key_file = dir.path().join("service-account.json");
    std::fs::write(&key_file, &kms.credentials).unwrap();
    let secret_file = format!("google_credentials={}", key_file.display());
    let fields = [
        "google_location=europe-west3".to_owned(),
        format!("google_project_id={}", kms.project),
        format!("google_key_ring={RING}"),
        format!("google_kms_endpoint={}", kms.endpoint),
        format!("google_token_url={}", kms.token_url),
    ];
    let connect = async |dry_run: bool| {
        let mut args = vec![
            "keystore",
            "connect",
            "google",
            "--vault",
            &vault,
            "--name",
            "google",
            "--group",
            "google",
            "--secret-file",
            &secret_file,
            "--output",
            "json",
        ];
        for f in &fields {
            args.extend(["--field", f]);
        }
        if dry_run {
            args.push("--dry-run");
        }
        keyplane(&args, Some(&server), "").await
    };
    let tried = connect(true).await;
    assert!(tried.success, "{}", tried.stderr);
    assert_eq!(kms.key_rings(), vec![ring(&kms)], "the key ring was made");
    let connected = connect(false).await;
    assert!(connected.success, "{}", connected.stderr);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&kms.credentials);
    for shown in [
        connected.stdout.clone(),
        c.get("/api/v4/keystores").await.unwrap().body.to_string(),
    ] {
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(!shown.contains(&encoded[..40]), "{shown}");
    }
    let ks = id(&serde_json::from_str::<Value>(&connected.stdout).unwrap());
    assert!(kms.key_names().is_empty(), "and nothing else");
    active_aes_template(&c, &vault, "google_kms", "google").await;

    let key = create_key(&c, &vault, "billing-key").await;
    let key_id = id(&key);
    let key_path = format!("/api/v4/managed_keys/{key_id}");
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert_eq!(entry["key_id_in_keystore"], "billing-key");
    let crypto_key = kms.crypto_key("billing-key");
    assert_eq!(crypto_key["purpose"], "ENCRYPT_DECRYPT");
    assert_eq!(
        crypto_key["versionTemplate"],
        json!({"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "protectionLevel": "HSM"})
    );
    assert_eq!(
        crypto_key["labels"]["keyplane-managed-key-id"],
        key_id.as_str()
    );
    assert_eq!(crypto_key["primary"]["state"], "ENABLED");
    let versions = kms.versions("billing-key");
    assert_eq!(versions.len(), 1);
    assert!(
        versions[0]
            .2
            .contains(&format!("/importJobs/kp-{key_id}-1-")),
        "{versions:?}"
    );
    let first = open_material_version(dir.path(), &key, 1);
    let sealed = kms.encrypt("billing-key", b"first secret").unwrap();
    assert_eq!(open_gcm(first.expose(), &sealed), b"first secret");
    assert_eq!(
        kms.decrypt("billing-key", 1, &seal_gcm(first.expose(), b"the reverse"))
            .unwrap(),
        b"the reverse"
    );

    // Deactivate and reactivate disable and enable every version.
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert_eq!(states(&kms, "billing-key"), ["DISABLED"]);
    assert!(
        kms.encrypt("billing-key", b"x").is_err(),
        "disabled refuses"
    );
    let r = c.with_etag("POST", &key_path, "/activate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert_eq!(states(&kms, "billing-key"), ["ENABLED"]);
    let sealed = kms.encrypt("billing-key", b"reactivated").unwrap();
    assert_eq!(open_gcm(first.expose(), &sealed), b"reactivated");

    // Rotate: a new version, imported and made primary. The first attempt imports but cannot
    // move the primary (no permission): the retry finishes it without importing again.
    kms.deny_permissions(&["cloudkms.cryptoKeys.update"]);
    let r = c.with_etag("POST", &key_path, "/rotate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "error").await;
    assert!(entry.to_string().contains("primary"), "{entry}");
    assert_eq!(kms.versions("billing-key").len(), 2);
    assert!(
        kms.crypto_key("billing-key")["primary"]["name"]
            .as_str()
            .unwrap()
            .ends_with("/1")
    );
    kms.deny_permissions(&[]);
    sync(&c, &key_id).await;
    until(|| {
        kms.crypto_key("billing-key")["primary"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("/2"))
    })
    .await;
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert_eq!(kms.versions("billing-key").len(), 2, "imported once");
    let second = open_material_version(dir.path(), &key, 2);
    let sealed = kms.encrypt("billing-key", b"second secret").unwrap();
    assert_eq!(open_gcm(second.expose(), &sealed), b"second secret");
    assert_eq!(
        kms.decrypt("billing-key", 1, &seal_gcm(first.expose(), b"older"))
            .unwrap(),
        b"older"
    );
    assert!(
        kms.versions("billing-key")[1]
            .2
            .contains(&format!("kp-{key_id}-2-"))
    );

    // The primary moved back by hand: the key no longer encrypts with its newest version,
    // which a sync puts right.
    kms.set_primary("billing-key", 1);
    sync(&c, &key_id).await;
    until(|| {
        kms.crypto_key("billing-key")["primary"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("/2"))
    })
    .await;

    // Destroy: every version scheduled for destruction (read one page at a time), as Google
    // destroys; the key's name stays.
    kms.page_versions_by(1);
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert_eq!(states(&kms, "billing-key"), ["DISABLED", "DISABLED"]);
    let r = c.with_etag("POST", &key_path, "/destroy").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "not_present").await;
    assert_eq!(entry["keystore_sync_flag"], "ok", "{entry}");
    let detail = entry["detail_in_keystore"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("2 version(s) scheduled for destruction"),
        "the status says what Google keeps meanwhile: {entry}"
    );
    assert_eq!(
        states(&kms, "billing-key"),
        ["DESTROY_SCHEDULED", "DESTROY_SCHEDULED"]
    );
    kms.complete_destructions();
    assert!(
        kms.decrypt("billing-key", 1, &seal_gcm(first.expose(), b"gone"))
            .is_err()
    );
}

#[tokio::test]
async fn every_way_a_google_connection_fails_is_told_apart_and_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let kms = GoogleKms::start("payments-prod").await.unwrap();
    let attempt = async |body: Value| {
        let r = c.post("/api/v4/keystores", &body).await.unwrap();
        (r.status, r.body["errors"][0].clone())
    };
    let message = |e: &Value| e["message"].as_str().unwrap_or_default().to_owned();

    // Another account's key: Google knows no such account.
    let mut wrong = connection(&vault, "google", &kms);
    wrong["google_credentials"] =
        json!(base64::engine::general_purpose::STANDARD.encode(kms.unknown_account_credentials()));
    let (status, error) = attempt(wrong).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], "keystore_rejected");
    assert!(message(&error).contains("bad credentials"), "{error}");
    assert!(message(&error).contains("does not exist"), "{error}");
    assert!(!error.to_string().contains("PRIVATE KEY"), "{error}");

    // Not a service-account JSON at all: refused before anything is called.
    let mut garbled = connection(&vault, "google", &kms);
    garbled["google_credentials"] = json!("bm90IGpzb24=");
    let (status, error) = attempt(garbled).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["target"]["name"], "google_credentials", "{error}");

    kms.deny_permissions(&["cloudkms.importJobs.create"]);
    let (status, error) = attempt(connection(&vault, "google", &kms)).await;
    assert_eq!(status, 400, "{error}");
    assert!(message(&error).contains("missing permission"), "{error}");
    assert!(
        message(&error).contains("cloudkms.importJobs.create"),
        "{error}"
    );
    kms.deny_permissions(&[]);

    // A short burst of RESOURCE_EXHAUSTED is backed off and retried; a lasting one fails.
    kms.throttle_next(1_000);
    let (status, error) = attempt(connection(&vault, "google", &kms)).await;
    assert_eq!(status, 424, "{error}");
    assert!(message(&error).contains("throttled"), "{error}");
    kms.throttle_next(0);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut unreachable = connection(&vault, "google", &kms);
    unreachable["google_kms_endpoint"] = json!(nowhere);
    let (status, error) = attempt(unreachable).await;
    assert_eq!(status, 424, "{error}");
    assert_eq!(error["code"], "keystore_unreachable");

    // The token and the signed assertion go over https only (but to this machine).
    let mut plain = connection(&vault, "google", &kms);
    plain["google_token_url"] = json!("http://oauth2.example/token");
    let (status, error) = attempt(plain).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["target"]["name"], "google_token_url", "{error}");

    // The key ring was made by the attempts that signed in; no keystore was saved.
    let listed = c
        .get(&format!("/api/v4/keystores?vault.id={vault}"))
        .await
        .unwrap();
    assert_eq!(listed.body["total_count"], 0, "nothing was saved");

    // A short burst of RESOURCE_EXHAUSTED is absorbed; the project comes from the credentials
    // when not given, and is stored (and locked) with the connection.
    kms.throttle_next(2);
    let mut without_project = connection(&vault, "google", &kms);
    without_project
        .as_object_mut()
        .unwrap()
        .remove("google_project_id");
    let ks = connect_keystore(&c, &without_project).await;
    let stored = c.get(&format!("/api/v4/keystores/{ks}")).await.unwrap();
    assert_eq!(
        stored.body["google_project_id"], "payments-prod",
        "{}",
        stored.body
    );
    for (field, value) in [
        ("google_kms_endpoint", "https://kms.example"),
        ("google_token_url", "https://oauth2.example/token"),
        ("google_key_ring", "elsewhere"),
        ("google_project_id", "another-project"),
    ] {
        assert_field_locked(&c, &ks, field, value).await;
    }
    let status = async || keystore_health(&c, &ks).await;
    assert_eq!(status().await.0, "ok");
    kms.deny_permissions(&["cloudkms.cryptoKeyVersions.destroy"]);
    let (health, detail) = status().await;
    assert_eq!(health, "configuration_error", "{detail}");
    assert!(detail.contains("missing permission"), "{detail}");
    kms.deny_permissions(&[]);
    kms.throttle_next(1_000);
    let (health, detail) = status().await;
    assert_eq!(health, "not_responding", "{detail}");
    assert!(detail.contains("throttled"), "{detail}");
    kms.throttle_next(0);
    assert_eq!(status().await.0, "ok");

    // The account's key expires: a new connection cannot sign in, and says why.
    kms.expire_key();
    let (code, error) = attempt(connection(&vault, "google-2", &kms)).await;
    assert_eq!(code, 400, "{error}");
    assert!(message(&error).contains("bad credentials"), "{error}");
    assert!(message(&error).contains("expired"), "{error}");
}

#[tokio::test]
async fn rsa_and_ec_keys_go_as_the_template_says_and_misfits_are_refused_up_front() {
    let kms = GoogleKms::start("signing-prod").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let ks = connect_keystore(&c, &connection(&vault, "google", &kms)).await;
    let template = async |name: &str, algorithm: &str, size: &str, properties: Value| {
        let mut entry = json!({"type": "google_kms", "group": "google"});
        if let (Some(e), Value::Object(p)) = (entry.as_object_mut(), properties) {
            e.extend(p);
        }
        post_template(&c, &vault, name, (algorithm, size), entry).await
    };
    let key_of = async |template: &str, label: &str| {
        let r = c
            .post(
                "/api/v4/managed_keys",
                &json!({"vault": {"id": vault}, "template_name": template, "label": label}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    };

    let r = template(
        "RSA",
        "rsa",
        "3072",
        json!({"google_key_purpose": "asymmetric_sign",
               "google_kms_algorithm": "rsa_sign_pkcs1_3072_sha256",
               "google_key_protection_level": "software"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rsa = key_of("RSA", "signing-rsa").await;
    wait_status(&c, &id(&rsa), &ks, |s| s["status"] == "active").await;
    let crypto_key = kms.crypto_key("signing-rsa");
    assert_eq!(crypto_key["purpose"], "ASYMMETRIC_SIGN");
    assert_eq!(
        crypto_key["versionTemplate"],
        json!({"algorithm": "RSA_SIGN_PKCS1_3072_SHA256", "protectionLevel": "SOFTWARE"})
    );
    // The Cloud KMS key pair is the managed one.
    let material = open_material_version(dir.path(), &rsa, 1);
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(material.expose()).unwrap();
    let public: aws_lc_rs::encoding::PublicKeyX509Der<'static> =
        aws_lc_rs::encoding::AsDer::as_der(aws_lc_rs::signature::KeyPair::public_key(&pair))
            .unwrap();
    assert_eq!(kms.public_key("signing-rsa", 1).unwrap(), public.as_ref());

    let r = template("EC", "ec", "384", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ec = key_of("EC", "signing-ec").await;
    wait_status(&c, &id(&ec), &ks, |s| s["status"] == "active").await;
    assert_eq!(
        kms.crypto_key("signing-ec")["versionTemplate"]["algorithm"],
        "EC_SIGN_P384_SHA384"
    );
    assert!(kms.public_key("signing-ec", 1).is_some());

    // Re-linked after a reconnect only when the version's public key is the managed key's: a
    // version whose material was swapped under the same import job's name is refused.
    let gone = c
        .with_etag(
            "DELETE",
            &format!("/api/v4/keystores/{ks}"),
            "?mode=disconnect",
        )
        .await
        .unwrap();
    assert_eq!(gone.status, 204, "{}", gone.body);
    kms.forge_rsa_version("signing-rsa", 1);
    let again = connect_keystore(&c, &connection(&vault, "google-again", &kms)).await;
    for key in [&rsa, &ec] {
        let r = c
            .with_etag(
                "POST",
                &format!("/api/v4/managed_keys/{}", id(key)),
                "/sync_status_in_keystores",
            )
            .await
            .unwrap();
        assert!(r.status == 200 || r.status == 202, "{}", r.body);
    }
    let entry = wait_status(&c, &id(&ec), &again, |s| s["status"] == "active").await;
    assert_eq!(entry["key_id_in_keystore"], "signing-ec", "{entry}");
    let entry = wait_status(&c, &id(&rsa), &again, |s| s["status"] == "error").await;
    assert!(entry.to_string().contains("not this key"), "{entry}");

    // What Google cannot hold is refused when the template is written, naming why.
    for (algorithm, size, properties, why) in [
        (
            "aes",
            "256",
            json!({"google_kms_algorithm": "rsa_decrypt_oaep_2048_sha256"}),
            "cannot hold aes-256",
        ),
        (
            "rsa",
            "2048",
            json!({"google_kms_algorithm": "rsa_decrypt_oaep_4096_sha256"}),
            "cannot hold rsa-2048",
        ),
        (
            "rsa",
            "2048",
            json!({"google_key_purpose": "encrypt_decrypt"}),
            "cannot hold rsa-2048",
        ),
        (
            "rsa",
            "2048",
            json!({"google_key_purpose": "asymmetric_decrypt",
                                 "google_kms_algorithm": "rsa_sign_pss_2048_sha256"}),
            "is for purpose asymmetric_sign",
        ),
        (
            "ec",
            "256",
            json!({"google_kms_algorithm": "ec_sign_secp256k1_sha256"}),
            "cannot hold ec-256",
        ),
        (
            "aes",
            "256",
            json!({"azure_key_protection_level": "hsm"}),
            "do not apply",
        ),
    ] {
        let r = template("MISFIT", algorithm, size, properties).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(
            r.body["errors"][0]["target"]["name"], "keystores",
            "{}",
            r.body
        );
        assert!(r.body.to_string().contains(why), "{why}: {}", r.body);
    }
    assert_eq!(kms.key_names().len(), 2, "nothing else reached Google");
}

#[tokio::test]
async fn every_disconnect_mode_keeps_the_seed_rule_and_a_reconnect_re_links_on_google() {
    let kms = GoogleKms::start("payments-prod").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = keyplane_testkit::process::Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_DESTROY_GRACE_PERIOD", "0s"),
            ("KEYPLANE_DRIFT_INTERVAL", "1s"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    let vault = new_vault(&c).await;
    let first = connect_keystore(&c, &connection(&vault, "google", &kms)).await;
    active_aes_template(&c, &vault, "google_kms", "google").await;
    let key = create_key(&c, &vault, "orders-key").await;
    let key_id = id(&key);
    let material = open_material_version(dir.path(), &key, 1);
    wait_status(&c, &key_id, &first, |s| s["status"] == "active").await;

    // Disabled in the console by someone else: drift is flagged, and a sync restores it.
    kms.set_state("orders-key", 1, "DISABLED");
    let flagged = wait_status(&c, &key_id, &first, |s| {
        s["keystore_sync_flag"] == "out_of_sync"
    })
    .await;
    assert_eq!(flagged["status"], "not_active", "{flagged}");
    sync(&c, &key_id).await;
    wait_in_sync(&c, &key_id, &first).await;
    assert_eq!(states(&kms, "orders-key"), ["ENABLED"]);

    // The seed's rule: an active key blocks a restricted disconnect, and is named.
    assert_restrict_refused(&c, &first, &key_id).await;
    assert_eq!(states(&kms, "orders-key"), ["ENABLED"]);

    // Deactivate mode disables the copy, then unlinks.
    let gone = disconnect_keystore(&c, &first, "deactivate").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(states(&kms, "orders-key"), ["DISABLED"]);

    // A reconnect re-links the copy its label and import job prove to be this key.
    kms.create_foreign_key(&ring(&kms), "not-ours");
    let second = connect_keystore(&c, &connection(&vault, "google-again", &kms)).await;
    sync(&c, &key_id).await;
    let entry = wait_status(&c, &key_id, &second, |s| s["status"] == "active").await;
    assert_eq!(entry["key_id_in_keystore"], "orders-key", "{entry}");
    assert_eq!(
        kms.versions("orders-key").len(),
        1,
        "re-linked, not imported"
    );
    assert_eq!(states(&kms, "orders-key"), ["ENABLED"]);

    // Destroy mode schedules destruction of what keyplane put there, and only that (under the
    // policy that an enabled version is disabled first).
    kms.require_disable_before_destroy(true);
    let gone = disconnect_keystore(&c, &second, "destroy").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(states(&kms, "orders-key"), ["DESTROY_SCHEDULED"]);
    assert_eq!(states(&kms, "not-ours"), ["ENABLED"]);

    // Reconnected before Google destroys it: the same key's version is restored, not
    // imported again, and it is still the managed key.
    let third = connect_keystore(&c, &connection(&vault, "google-third", &kms)).await;
    sync(&c, &key_id).await;
    wait_status(&c, &key_id, &third, |s| s["status"] == "active").await;
    assert_eq!(states(&kms, "orders-key"), ["ENABLED"]);
    let sealed = kms.encrypt("orders-key", b"restored").unwrap();
    assert_eq!(open_gcm(material.expose(), &sealed), b"restored");

    // A key under a managed key's name that keyplane did not make is never adopted.
    let other = create_key(&c, &vault, "not-ours").await;
    let entry = wait_status(&c, &id(&other), &third, |s| s["status"] == "error").await;
    assert!(entry.to_string().contains("not this key"), "{entry}");
    assert_eq!(
        kms.versions("not-ours").len(),
        1,
        "nothing imported into it"
    );
    // Destroying that managed key leaves the other key alone.
    let other_path = format!("/api/v4/managed_keys/{}", id(&other));
    for action in ["/deactivate", "/destroy"] {
        let r = c.with_etag("POST", &other_path, action).await.unwrap();
        assert_eq!(r.status, 200, "{action}: {}", r.body);
    }
    wait_status(&c, &id(&other), &third, |s| s["status"] == "not_present").await;
    assert_eq!(states(&kms, "not-ours"), ["ENABLED"]);

    // Disconnect mode leaves what is there as it is.
    let gone = disconnect_keystore(&c, &third, "disconnect").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(states(&kms, "orders-key"), ["ENABLED"]);
}
