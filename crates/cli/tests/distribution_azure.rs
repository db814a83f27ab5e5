//! Distribution to Azure (the test kit's contract fake of a Managed HSM and of key vaults)
//! through the real binary: the Azure key is the managed key (the fake really unwraps the BYOK
//! transfer blob; what it encrypts opens with the managed material, and the reverse), through
//! create, deactivate, reactivate, rotate (a new version of the same key) and destroy (delete,
//! then purge); a disconnected keystore's key is re-linked after a reconnect; and every way the
//! connection can fail is told apart before anything is saved.

mod common;

use common::*;
use keyplane_testkit::azure::{AzureKeyVault, AzureKind, KEK_NAME};
use keyplane_testkit::process::Client;
use serde_json::{Value, json};
use uuid::Uuid;

fn connection(vault: &str, name: &str, fake: &AzureKeyVault) -> Value {
    json!({"type": "azure_key_vault", "vault": {"id": vault}, "name": name, "groups": ["azure"],
           "azure_service_name": "payments-hsm", "azure_resource_group": "security",
           "azure_location": "europe_west", "azure_environment": "azure",
           "azure_tenant": fake.tenant, "azure_subscription_id": Uuid::new_v4().to_string(),
           "azure_service_principal_client_id": fake.client_id,
           "azure_service_principal_password": fake.client_secret,
           "azure_vault_url": fake.url, "azure_login_url": fake.login_url})
}

/// A Managed HSM fake, a server, a vault, a keystore connected to the fake and template `T1`
/// (active AES-256 keys) sending keys there. Bind `_server` (and `dir`) when destructuring: the
/// server stops when dropped.
struct Fixture {
    hsm: AzureKeyVault,
    dir: tempfile::TempDir,
    _server: keyplane_testkit::process::Server,
    c: Client,
    vault: String,
    ks: String,
}

async fn managed_hsm_fixture() -> Fixture {
    let hsm = AzureKeyVault::start(AzureKind::ManagedHsm).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let ks = connect_keystore(&c, &connection(&vault, "azure", &hsm)).await;
    active_aes_template(&c, &vault, "azure_key_vault", "azure").await;
    Fixture {
        hsm,
        dir,
        _server: server,
        c,
        vault,
        ks,
    }
}

/// Template `name` (`algorithm`, `size`, active) sending its keys to the `azure` group with
/// `properties`, and a key `label` of it; the key's body.
async fn template_and_key(
    c: &Client,
    vault: &str,
    (name, algorithm, size): (&str, &str, &str),
    properties: Value,
    label: &str,
) -> keyplane_testkit::process::Reply {
    let mut entry = json!({"type": "azure_key_vault", "group": "azure"});
    if let (Some(e), Value::Object(p)) = (entry.as_object_mut(), properties) {
        e.extend(p);
    }
    let t = post_template(c, vault, name, (algorithm, size), entry).await;
    assert_eq!(t.status, 201, "{}", t.body);
    let r = c
        .post(
            "/api/v4/managed_keys",
            &json!({"vault": {"id": vault}, "template_name": name, "label": label}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    r
}

#[tokio::test]
async fn a_managed_hsm_holds_the_managed_key_through_its_lifecycle() {
    let Fixture {
        hsm,
        dir,
        _server,
        c,
        vault,
        ks,
    } = managed_hsm_fixture().await;
    assert_eq!(
        hsm.key_names(),
        vec![KEK_NAME.to_owned()],
        "connecting created the key-exchange key, and nothing else"
    );
    let label = format!("billing-{}", &Uuid::new_v4().to_string()[..8]);
    let key = create_key(&c, &vault, &label).await;
    let key_id = id(&key);
    let key_path = format!("/api/v4/managed_keys/{key_id}");

    // Create (active): one Azure version, tagged with the key's id, holding the material.
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    let name = entry["key_id_in_keystore"].as_str().unwrap().to_owned();
    assert_eq!(name, label);
    let versions = hsm.versions(&name);
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].1["keyplane-managed-key-id"], key_id.as_str());
    let first = open_material_version(dir.path(), &key, 1);
    let sealed = hsm.encrypt(&name, b"first secret").unwrap();
    assert_eq!(open_gcm(first.expose(), &sealed), b"first secret");
    assert_eq!(
        hsm.decrypt(&name, &seal_gcm(first.expose(), b"the reverse"))
            .unwrap(),
        b"the reverse"
    );

    // Deactivate and reactivate disable and enable every version.
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert!(hsm.versions(&name).iter().all(|(enabled, _)| !enabled));
    assert!(
        hsm.encrypt(&name, b"refused").is_err(),
        "a disabled key refuses"
    );
    let r = c.with_etag("POST", &key_path, "/activate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert!(hsm.versions(&name).iter().all(|(enabled, _)| *enabled));

    // Rotate: a new version of the same Azure key with the new material.
    let r = c.with_etag("POST", &key_path, "/rotate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..600 {
        if hsm.versions(&name).len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let versions = hsm.versions(&name);
    assert_eq!(versions.len(), 2, "one Azure version per managed version");
    assert_eq!(versions[1].1["keyplane-version"], "2");
    let second = open_material_version(dir.path(), &key, 2);
    let sealed = hsm.encrypt(&name, b"second secret").unwrap();
    assert_eq!(open_gcm(second.expose(), &sealed), b"second secret");

    // Destroy: deleted, then purged. The versions come one page each: every page is read,
    // so every version is disabled.
    hsm.page_versions_by(1);
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert!(hsm.versions(&name).iter().all(|(enabled, _)| !enabled));
    let r = c.with_etag("POST", &key_path, "/destroy").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "not_present").await;
    assert_eq!(entry["keystore_sync_flag"], "ok", "{entry}");
    assert!(entry.get("detail_in_keystore").is_none(), "purged: {entry}");
    assert!(!hsm.key_names().contains(&name));
    assert!(!hsm.is_soft_deleted(&name), "purged");
}

#[tokio::test]
async fn a_reconnected_azure_keystore_re_links_only_its_own_keys() {
    let Fixture {
        hsm,
        dir,
        _server,
        c,
        vault,
        ks: first,
    } = managed_hsm_fixture().await;
    hsm.protect_from_purge(true);
    let label = format!("ledger-{}", &Uuid::new_v4().to_string()[..8]);
    let key = create_key(&c, &vault, &label).await;
    let key_id = id(&key);
    wait_status(&c, &key_id, &first, |s| s["status"] == "active").await;

    let gone = c
        .with_etag(
            "DELETE",
            &format!("/api/v4/keystores/{first}"),
            "?mode=disconnect",
        )
        .await
        .unwrap();
    assert_eq!(gone.status, 204, "{}", gone.body);
    let again = connect_keystore(&c, &connection(&vault, "azure-again", &hsm)).await;
    sync(&c, &key_id).await;
    let entry = wait_status(&c, &key_id, &again, |s| s["status"] == "active").await;
    assert_eq!(entry["key_id_in_keystore"], label.as_str(), "{entry}");
    assert_eq!(
        hsm.versions(&label).len(),
        1,
        "re-linked, not imported again"
    );

    // Deleted in Azure behind keyplane's back: a sync recovers this key's own deleted copy.
    hsm.soft_delete(&label);
    sync(&c, &key_id).await;
    for _ in 0..600 {
        if !hsm.is_soft_deleted(&label) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!hsm.is_soft_deleted(&label), "recovered");
    wait_status(&c, &key_id, &again, |s| s["status"] == "active").await;
    assert_eq!(
        hsm.versions(&label).len(),
        1,
        "recovered, not imported again"
    );
    let sealed = hsm.encrypt(&label, b"recovered").unwrap();
    assert_eq!(
        open_gcm(open_material_version(dir.path(), &key, 1).expose(), &sealed),
        b"recovered"
    );

    // Under purge protection a destroyed key stays deleted.
    let key_path = format!("/api/v4/managed_keys/{key_id}");
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.with_etag("POST", &key_path, "/destroy").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = wait_status(&c, &key_id, &again, |s| s["status"] == "not_present").await;
    assert!(hsm.is_soft_deleted(&label), "deleted, not purged");
    assert!(
        entry["detail_in_keystore"]
            .as_str()
            .is_some_and(|d| d.contains("kept under purge protection")),
        "the status says the key stays deleted: {entry}"
    );

    // A key under the same name that keyplane did not make is never adopted.
    let other_label = format!("lookalike-{}", &Uuid::new_v4().to_string()[..8]);
    hsm.create_foreign_aes_key(&other_label);
    let other = create_key(&c, &vault, &other_label).await;
    let entry = wait_status(&c, &id(&other), &again, |s| s["status"] == "error").await;
    assert!(entry.to_string().contains("not this key"), "{entry}");
}

#[tokio::test]
async fn every_way_an_azure_connection_fails_is_told_apart_and_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let hsm = AzureKeyVault::start(AzureKind::ManagedHsm).await.unwrap();
    let attempt = async |body: Value| {
        let r = c.post("/api/v4/keystores", &body).await.unwrap();
        (r.status, r.body["errors"][0].clone())
    };

    let mut wrong = connection(&vault, "azure", &hsm);
    wrong["azure_service_principal_password"] = json!("not-the-secret");
    let (status, error) = attempt(wrong).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], "keystore_rejected");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("bad credentials"),
        "{error}"
    );
    assert!(!error.to_string().contains("not-the-secret"), "{error}");

    hsm.deny_permissions(true);
    let (status, error) = attempt(connection(&vault, "azure", &hsm)).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("missing permission"),
        "{error}"
    );
    hsm.deny_permissions(false);

    hsm.throttle_next(1_000);
    let (status, error) = attempt(connection(&vault, "azure", &hsm)).await;
    assert_eq!(status, 424, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("throttled"),
        "{error}"
    );
    hsm.throttle_next(0);

    hsm.expire_secret();
    let (status, error) = attempt(connection(&vault, "azure", &hsm)).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("expired"),
        "{error}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut unreachable = connection(&vault, "azure", &hsm);
    unreachable["azure_vault_url"] = json!(nowhere);
    let (status, error) = attempt(unreachable).await;
    assert_eq!(status, 424, "{error}");
    assert_eq!(error["code"], "keystore_unreachable");

    // An endpoint whose challenge fishes for a token of another resource gets none.
    let lookalike = AzureKeyVault::start(AzureKind::ManagedHsm).await.unwrap();
    lookalike.challenge_for("https://management.azure.com");
    let (status, error) = attempt(connection(&vault, "azure", &lookalike)).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("management.azure.com"),
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no token was requested"),
        "{error}"
    );

    // The secret and tokens go over https only (but to this machine).
    let mut plain = connection(&vault, "azure", &hsm);
    plain["azure_vault_url"] = json!("http://payments-hsm.managedhsm.azure.net");
    let (status, error) = attempt(plain).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["target"]["name"], "azure_vault_url", "{error}");

    // A Standard vault holds no HSM-protected key: BYOK cannot go there.
    let standard = AzureKeyVault::start(AzureKind::Standard).await.unwrap();
    let (status, error) = attempt(connection(&vault, "azure", &standard)).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("Standard"),
        "{error}"
    );

    let listed = c
        .get(&format!("/api/v4/keystores?vault.id={vault}"))
        .await
        .unwrap();
    assert_eq!(listed.body["total_count"], 0, "nothing was saved");

    // Once connected, the keystore's status tells the same failures apart.
    let healthy = AzureKeyVault::start(AzureKind::ManagedHsm).await.unwrap();
    let ks = connect_keystore(&c, &connection(&vault, "azure", &healthy)).await;
    // Where the secret goes is locked: moving it needs a new connection.
    for (field, value) in [
        ("azure_vault_url", "https://elsewhere.vault.azure.net"),
        ("azure_login_url", "https://login.example"),
        ("azure_environment", "azure_china"),
    ] {
        assert_field_locked(&c, &ks, field, value).await;
    }
    let status = async || keystore_health(&c, &ks).await;
    assert_eq!(status().await.0, "ok");
    healthy.deny_permissions(true);
    let (health, message) = status().await;
    assert_eq!(health, "configuration_error", "{message}");
    assert!(message.contains("missing permission"), "{message}");
    healthy.deny_permissions(false);
    healthy.throttle_next(1_000);
    let (health, message) = status().await;
    assert_eq!(health, "not_responding", "{message}");
    assert!(message.contains("throttled"), "{message}");
    healthy.throttle_next(0);
    assert_eq!(status().await.0, "ok");
}

#[tokio::test]
async fn a_key_vault_takes_rsa_and_ec_keys_and_refuses_aes_ones() {
    let premium = AzureKeyVault::start(AzureKind::Premium).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let ks = connect_keystore(&c, &connection(&vault, "azure", &premium)).await;
    let r = template_and_key(
        &c,
        &vault,
        ("RSA", "rsa", "2048"),
        json!({"azure_key_protection_level": "hsm",
               "azure_key_operations": ["encrypt", "decrypt"]}),
        "signing-key",
    )
    .await;
    let key_id = id(&r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert_eq!(
        premium.key_ops("signing-key"),
        ["encrypt", "decrypt"],
        "the template's key operations"
    );
    // The vault's RSA key is the managed key pair: what it encrypts opens with the material.
    let sealed = premium.encrypt("signing-key", b"rsa secret").unwrap();
    let material = open_material_version(dir.path(), &r.body, 1);
    let private = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(material.expose()).unwrap();
    let oaep = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(private).unwrap();
    let mut out = vec![0u8; oaep.min_output_size()];
    let opened = oaep
        .decrypt(
            &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
            &sealed,
            &mut out,
            None,
        )
        .unwrap();
    assert_eq!(opened, b"rsa secret");

    // An EC key pair: what the vault signs verifies with the managed key's public key.
    let r = template_and_key(&c, &vault, ("EC", "ec", "256"), json!({}), "ec-signing").await;
    wait_status(&c, &id(&r.body), &ks, |s| s["status"] == "active").await;
    let signature = premium.sign("ec-signing", b"signed in azure").unwrap();
    let material = open_material_version(dir.path(), &r.body, 1);
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        material.expose(),
    )
    .unwrap();
    let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        public.as_ref(),
    )
    .verify(b"signed in azure", &signature)
    .expect("the vault's EC key is the managed key");

    // A software-protected key would need the material in the clear (a JWK): refused, and the
    // key's status says why.
    let r = template_and_key(
        &c,
        &vault,
        ("SOFT", "rsa", "2048"),
        json!({"azure_key_protection_level": "software"}),
        "soft-key",
    )
    .await;
    let entry = wait_status(&c, &id(&r.body), &ks, |s| s["status"] == "error").await;
    assert!(entry.to_string().contains("software-protected"), "{entry}");
    assert!(!premium.key_names().contains(&"soft-key".to_owned()));

    // AES keys exist only in a Managed HSM: the key's status says why, and nothing is sent.
    active_aes_template(&c, &vault, "azure_key_vault", "azure").await;
    let aes = create_key(&c, &vault, "aes-key").await;
    let entry = wait_status(&c, &id(&aes), &ks, |s| s["status"] == "error").await;
    assert!(entry.to_string().contains("Managed HSM"), "{entry}");
    assert!(!premium.key_names().contains(&"aes-key".to_owned()));
}

#[tokio::test]
async fn every_disconnect_mode_keeps_the_seed_rule_on_azure() {
    let Fixture {
        hsm,
        c,
        vault,
        ks: first,
        _server,
        dir: _dir,
    } = managed_hsm_fixture().await;
    let key = create_key(&c, &vault, "orders-key").await;
    let key_id = id(&key);
    wait_status(&c, &key_id, &first, |s| s["status"] == "active").await;

    // The seed's rule: an active key blocks a restricted disconnect, and is named.
    assert_restrict_refused(&c, &first, &key_id).await;
    assert!(
        hsm.versions("orders-key")
            .iter()
            .all(|(enabled, _)| *enabled)
    );

    // Deactivate mode disables the copy in Azure, then unlinks.
    let gone = disconnect_keystore(&c, &first, "deactivate").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert!(
        hsm.versions("orders-key")
            .iter()
            .all(|(enabled, _)| !enabled)
    );
    assert!(hsm.encrypt("orders-key", b"x").is_err());

    // Destroy mode deletes (and purges) every copy keyplane put there, and only those.
    hsm.create_foreign_aes_key("not-ours");
    let second = connect_keystore(&c, &connection(&vault, "azure-again", &hsm)).await;
    let r = c
        .with_etag(
            "POST",
            &format!("/api/v4/managed_keys/{key_id}"),
            "/update_from_template",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &second, |s| s["status"] == "active").await;
    let gone = disconnect_keystore(&c, &second, "destroy").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    let mut left = hsm.key_names();
    left.sort();
    assert_eq!(left, vec![KEK_NAME.to_owned(), "not-ours".to_owned()]);
    assert!(!hsm.is_soft_deleted("orders-key"));

    // Disconnect mode leaves what is there as it is.
    let third = connect_keystore(&c, &connection(&vault, "azure-third", &hsm)).await;
    let other = create_key(&c, &vault, "ledger-key").await;
    wait_status(&c, &id(&other), &third, |s| s["status"] == "active").await;
    let gone = disconnect_keystore(&c, &third, "disconnect").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert!(
        hsm.versions("ledger-key")
            .iter()
            .all(|(enabled, _)| *enabled)
    );
}

#[tokio::test]
async fn a_copy_changed_in_azure_is_flagged_as_drift_and_a_sync_restores_it() {
    let hsm = AzureKeyVault::start(AzureKind::ManagedHsm).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = keyplane_testkit::process::Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_DRIFT_INTERVAL", "1s"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    let vault = new_vault(&c).await;
    let ks = connect_keystore(&c, &connection(&vault, "azure", &hsm)).await;
    active_aes_template(&c, &vault, "azure_key_vault", "azure").await;
    let key = create_key(&c, &vault, "drifting-key").await;
    let key_id = id(&key);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;

    // Disabled in Azure by someone else: the periodic drift check flags it on the key.
    hsm.set_enabled("drifting-key", false);
    let flagged = wait_status(&c, &key_id, &ks, |s| {
        s["keystore_sync_flag"] == "out_of_sync"
    })
    .await;
    assert_eq!(flagged["status"], "not_active", "{flagged}");

    // A sync converges it back to the managed state.
    sync(&c, &key_id).await;
    wait_in_sync(&c, &key_id, &ks).await;
    assert!(
        hsm.versions("drifting-key")
            .iter()
            .all(|(enabled, _)| *enabled)
    );
    let material = open_material_version(dir.path(), &key, 1);
    let sealed = hsm.encrypt("drifting-key", b"back").unwrap();
    assert_eq!(open_gcm(material.expose(), &sealed), b"back");
}

/// An install that failed leaves only a plan; a key someone else puts under that name
/// meanwhile is not taken for it.
#[tokio::test]
async fn a_failed_install_does_not_adopt_the_key_that_takes_its_name_later() {
    let Fixture {
        hsm,
        c,
        vault,
        ks,
        _server,
        dir: _dir,
    } = managed_hsm_fixture().await;
    // Someone else's deleted key holds the name: the install cannot recover it, nor reuse it.
    hsm.create_foreign_aes_key("held-name");
    hsm.soft_delete("held-name");
    let key = create_key(&c, &vault, "held-name").await;
    let key_id = id(&key);
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "error").await;
    assert!(entry.to_string().contains("not this key"), "{entry}");

    // Its owner recovers it; a sync must not adopt it.
    hsm.recover("held-name");
    sync(&c, &key_id).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "error").await;
    assert!(
        entry.to_string().contains("that is not this key"),
        "{entry}"
    );
    let versions = hsm.versions("held-name");
    assert_eq!(versions.len(), 1, "nothing was imported into it");
    assert!(versions[0].1.is_empty(), "nor tagged");
    let r = c
        .with_etag(
            "POST",
            &format!("/api/v4/managed_keys/{key_id}"),
            "/deactivate",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        hsm.versions("held-name")
            .iter()
            .all(|(enabled, _)| *enabled),
        "the other key is never disabled"
    );
}

/// A compromised key's copy, left disabled by a `deactivate` disconnect, is never enabled, not
/// even for the moment a proof by encryption would need; it is not re-linked, and the status
/// says why. A deactivated key's copy is proven that way and re-linked.
#[tokio::test]
async fn a_compromised_keys_disabled_copy_is_never_enabled_to_prove_it() {
    let Fixture {
        hsm,
        c,
        vault,
        ks: first,
        _server,
        dir: _dir,
    } = managed_hsm_fixture().await;
    let leaked = create_key(&c, &vault, "leaked-key").await;
    let retired = create_key(&c, &vault, "retired-key").await;
    let key_call = async |key: &Value, action: &str| {
        let r = c
            .with_etag("POST", &format!("/api/v4/managed_keys/{}", id(key)), action)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{action}: {}", r.body);
    };
    for key in [&leaked, &retired] {
        wait_status(&c, &id(key), &first, |s| s["status"] == "active").await;
        key_call(key, "/deactivate").await;
    }
    let gone = c
        .with_etag(
            "DELETE",
            &format!("/api/v4/keystores/{first}"),
            "?mode=deactivate",
        )
        .await
        .unwrap();
    assert_eq!(gone.status, 204, "{}", gone.body);

    // Reconnected, the keys target it again; the first attempts fail (no permission), and
    // one key is compromised meanwhile.
    let again = connect_keystore(&c, &connection(&vault, "azure-again", &hsm)).await;
    hsm.deny_permissions(true);
    for key in [&leaked, &retired] {
        key_call(key, "/update_from_template").await;
        wait_status(&c, &id(key), &again, |s| s["status"] == "error").await;
    }
    key_call(&leaked, "/compromise").await;
    let enabled_before = hsm.enablings();
    hsm.deny_permissions(false);
    for key in [&leaked, &retired] {
        sync(&c, &id(key)).await;
    }
    let entry = wait_status(&c, &id(&retired), &again, |s| s["status"] == "not_active").await;
    assert_eq!(entry["key_id_in_keystore"], "retired-key", "{entry}");
    assert_eq!(
        hsm.enablings(),
        enabled_before + 1,
        "the deactivated key's copy, for its probe"
    );
    let entry = wait_status(&c, &id(&leaked), &again, |s| {
        s["status"] == "error" && s.to_string().contains("compromised")
    })
    .await;
    assert!(entry.to_string().contains("not re-linked"), "{entry}");
    assert_eq!(
        hsm.enablings(),
        enabled_before + 1,
        "the compromised key's copy never"
    );
    assert!(
        hsm.versions("leaked-key")
            .iter()
            .all(|(enabled, _)| !enabled)
    );
}
