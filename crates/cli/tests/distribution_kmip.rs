//! Distribution to a KMIP server (PyKMIP) through the real binary: the object the server holds
//! is the managed key (read back with Get by PyKMIP's own client; an RSA key as its private and
//! public key objects), through create, deactivate,
//! reactivate, rotate, drift, compromise and destroy; every disconnect mode with the seed's
//! refusal and a re-link after a reconnect; TLS trust failures on either side told apart.

mod common;

use common::*;
use keyplane_testkit::kmip::{Authority, KmipObject, PyKmip};
use serde_json::{Value, json};

fn connection(vault: &str, name: &str, server: &PyKmip) -> Value {
    json!({"type": "kmip", "vault": {"id": vault}, "name": name, "groups": ["kmip"],
           "kmip_host": "127.0.0.1", "kmip_port": server.port,
           "kmip_ca_cert": server.ca.cert_pem(),
           "kmip_client_cert": server.client.cert_pem,
           "kmip_client_key": server.client.key_pem})
}

fn states(objects: &[KmipObject]) -> Vec<&str> {
    objects.iter().map(|o| o.state.as_str()).collect()
}

/// Waits until the server's objects named `label` satisfy `done`, and returns them.
async fn until_held(
    server: &PyKmip,
    label: &str,
    done: impl Fn(&[KmipObject]) -> bool,
) -> Vec<KmipObject> {
    let mut objects = Vec::new();
    for _ in 0..120 {
        objects = server.objects(label).await.unwrap();
        if done(&objects) {
            return objects;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("the KMIP server holds {objects:?} for '{label}'")
}

#[tokio::test]
async fn a_kmip_server_holds_the_managed_key_through_its_lifecycle_and_disconnects() {
    let kmip = PyKmip::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = keyplane_testkit::process::Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_DESTROY_GRACE_PERIOD", "0s"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    let vault = new_vault(&c).await;
    let attempt = async |body: Value| {
        let r = c.post("/api/v4/keystores", &body).await.unwrap();
        (r.status, r.body["errors"][0].clone())
    };

    // Either side's TLS trust failing is told apart; nothing is saved, no key is echoed.
    let rogue = Authority::new("someone else's CA").unwrap();
    let mut untrusted = connection(&vault, "kmip", &kmip);
    untrusted["kmip_ca_cert"] = json!(rogue.cert_pem());
    let (status, error) = attempt(untrusted).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("certificate is not trusted"),
        "{error}"
    );
    let stranger = rogue.client("keyplane").unwrap();
    let mut refused = connection(&vault, "kmip", &kmip);
    refused["kmip_client_cert"] = json!(stranger.cert_pem);
    refused["kmip_client_key"] = json!(stranger.key_pem);
    let (status, error) = attempt(refused).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("refused keyplane's client certificate"),
        "{error}"
    );
    assert!(!error.to_string().contains("PRIVATE KEY"), "{error}");
    let mut half = connection(&vault, "kmip", &kmip);
    half.as_object_mut().unwrap().remove("kmip_client_key");
    let (status, error) = attempt(half).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["target"]["name"], "kmip_client_key", "{error}");
    let mut closed = connection(&vault, "kmip", &kmip);
    closed["kmip_port"] = json!(1);
    let (status, error) = attempt(closed).await;
    assert_eq!(status, 424, "{error}");
    let listed = c
        .get(&format!("/api/v4/keystores?vault.id={vault}"))
        .await
        .unwrap();
    assert_eq!(listed.body["total_count"], 0, "nothing was saved");

    // Connected with the CLI: certificates read from files, the key as a secret file.
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        format!("{}", path.display())
    };
    let ca = format!("kmip_ca_cert={}", write("ca.pem", &kmip.ca.cert_pem()));
    let cert = format!(
        "kmip_client_cert={}",
        write("client.pem", &kmip.client.cert_pem)
    );
    let key_file = format!(
        "kmip_client_key={}",
        write("client.key", &kmip.client.key_pem)
    );
    let port = format!("kmip_port={}", kmip.port);
    let connected = keyplane(
        &[
            "keystore",
            "connect",
            "kmip",
            "--vault",
            &vault,
            "--name",
            "kmip",
            "--group",
            "kmip",
            "--field",
            "kmip_host=127.0.0.1",
            "--field",
            &port,
            "--field-file",
            &ca,
            "--field-file",
            &cert,
            "--secret-file",
            &key_file,
            "--output",
            "json",
        ],
        Some(&server),
        "",
    )
    .await;
    assert!(connected.success, "{}", connected.stderr);
    assert!(
        !connected.stdout.contains("PRIVATE KEY"),
        "{}",
        connected.stdout
    );
    let first: Value = serde_json::from_str(&connected.stdout).unwrap();
    let ks = id(&first);

    // An RSA key goes as its public key (SPKI) and its private key (PKCS#8), both active.
    let kmip_group = || json!({"type": "kmip", "group": "kmip"});
    let r = post_template(&c, &vault, "RSA", ("rsa", "2048"), kmip_group()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rsa = create_key_from(&c, &vault, "RSA", "rsa-key").await;
    wait_status(&c, &id(&rsa), &ks, |s| s["status"] == "active").await;
    let private = open_material_version(dir.path(), &rsa, 1);
    let public = keyplane_crypto::material::public_key_der(private.expose()).unwrap();
    let held = kmip.objects("rsa-key").await.unwrap();
    let summary: Vec<(&str, &str, Option<String>)> = held
        .iter()
        .map(|o| (o.kind.as_str(), o.state.as_str(), o.material.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("PublicKey", "ACTIVE", Some(hex::encode(&public))),
            ("PrivateKey", "ACTIVE", Some(hex::encode(private.expose()))),
        ]
    );
    // A key size KMIP keystores do not take is refused with the template.
    let r = post_template(&c, &vault, "DES", ("des", "168"), kmip_group()).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Created: one Active object holding the managed material.
    active_aes_template(&c, &vault, "kmip", "kmip").await;
    let key = create_key(&c, &vault, "orders-key").await;
    let key_id = id(&key);
    let key_path = format!("/api/v4/managed_keys/{key_id}");
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    let v1 = hex::encode(open_material_version(dir.path(), &key, 1).expose());
    let held = kmip.objects("orders-key").await.unwrap();
    assert_eq!(states(&held), ["ACTIVE"]);
    assert_eq!(held[0].material.as_deref(), Some(v1.as_str()));
    assert_eq!(entry["key_id_in_keystore"], held[0].id.as_str(), "{entry}");

    // Deactivated: revoked. Reactivated: registered anew, the revoked object kept.
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert_eq!(
        states(&kmip.objects("orders-key").await.unwrap()),
        ["DEACTIVATED"]
    );
    let r = c.with_etag("POST", &key_path, "/activate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    let held = kmip.objects("orders-key").await.unwrap();
    assert_eq!(states(&held), ["DEACTIVATED", "ACTIVE"]);
    assert_eq!(held[1].material.as_deref(), Some(v1.as_str()));

    // Rotated: a new object with the new material; the older ones decrypt only.
    let r = c.with_etag("POST", &key_path, "/rotate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let held = until_held(&kmip, "orders-key", |o| o.len() == 3).await;
    let v2 = hex::encode(open_material_version(dir.path(), &key, 2).expose());
    assert_eq!(states(&held), ["DEACTIVATED", "DEACTIVATED", "ACTIVE"]);
    assert_eq!(held[2].material.as_deref(), Some(v2.as_str()));

    // Drift: the active object revoked by hand is seen, and a sync puts the key right.
    kmip.client_script(
        &kmip.client,
        &format!(
            "client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, '{}')",
            held[2].id
        ),
    )
    .await
    .unwrap();
    let live = live_statuses(&c, &key_id).await;
    assert!(
        live.to_string().contains("not_active"),
        "the revoked object is seen: {live}"
    );
    sync(&c, &key_id).await;
    let held = until_held(&kmip, "orders-key", |o| {
        o.len() == 4 && o[3].state == "ACTIVE"
    })
    .await;
    assert_eq!(held[3].material.as_deref(), Some(v2.as_str()));
    wait_in_sync(&c, &key_id, &ks).await;

    // The seed's rule, then deactivate mode: revoked and unlinked.
    assert_restrict_refused(&c, &ks, &key_id).await;
    let gone = disconnect_keystore(&c, &ks, "deactivate").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert!(
        kmip.objects("orders-key")
            .await
            .unwrap()
            .iter()
            .all(|o| o.state == "DEACTIVATED")
    );

    // Reconnected: the copy proves itself by its material and is re-linked, and the sync
    // makes it usable again (registered anew: KMIP has no way back from revoked).
    let again = connect_keystore(&c, &connection(&vault, "kmip-again", &kmip)).await;
    sync(&c, &key_id).await;
    wait_status(&c, &key_id, &again, |s| s["status"] == "active").await;
    sync(&c, &id(&rsa)).await;
    wait_status(&c, &id(&rsa), &again, |s| s["status"] == "active").await;
    let held = kmip.objects("orders-key").await.unwrap();
    assert_eq!(held.iter().filter(|o| o.state == "ACTIVE").count(), 1);
    assert!(
        held.iter()
            .filter(|o| o.state == "ACTIVE")
            .all(|o| o.material.as_deref() == Some(v2.as_str()))
    );

    // Someone else's object under a managed key's name is never adopted nor changed.
    kmip.client_script(
        &kmip.client,
        "from kmip.pie import objects\n\
         print(client.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, b'\\x01' * 32, name='not-ours')))",
    )
    .await
    .unwrap();
    let other = create_key(&c, &vault, "not-ours").await;
    let entry = wait_status(&c, &id(&other), &again, |s| s["status"] == "error").await;
    assert!(entry.to_string().contains("not this key"), "{entry}");

    // Compromised: every object revoked with that reason.
    let leaked = create_key(&c, &vault, "leaked-key").await;
    wait_status(&c, &id(&leaked), &again, |s| s["status"] == "active").await;
    let r = c
        .with_etag(
            "POST",
            &format!("/api/v4/managed_keys/{}", id(&leaked)),
            "/compromise",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    until_held(&kmip, "leaked-key", |o| {
        !o.is_empty() && o.iter().all(|o| o.state == "COMPROMISED")
    })
    .await;

    // Destroy mode removes what keyplane put there, and only that.
    let gone = disconnect_keystore(&c, &again, "destroy").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(kmip.objects("orders-key").await.unwrap(), []);
    assert_eq!(kmip.objects("rsa-key").await.unwrap(), []);
    assert_eq!(
        states(&kmip.objects("not-ours").await.unwrap()),
        ["PRE_ACTIVE"]
    );

    // A third connection gets the key again; a key's own destroy removes its objects.
    let third = connect_keystore(&c, &connection(&vault, "kmip-third", &kmip)).await;
    sync(&c, &key_id).await;
    wait_status(&c, &key_id, &third, |s| s["status"] == "active").await;
    let ledger = create_key(&c, &vault, "ledger-key").await;
    let ledger_path = format!("/api/v4/managed_keys/{}", id(&ledger));
    wait_status(&c, &id(&ledger), &third, |s| s["status"] == "active").await;
    for action in ["/deactivate", "/destroy"] {
        let r = c.with_etag("POST", &ledger_path, action).await.unwrap();
        assert_eq!(r.status, 200, "{action}: {}", r.body);
    }
    wait_status(&c, &id(&ledger), &third, |s| s["status"] == "not_present").await;
    assert_eq!(kmip.objects("ledger-key").await.unwrap(), []);

    // Disconnect mode leaves what is there as it is.
    let gone = disconnect_keystore(&c, &third, "disconnect").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    let held = kmip.objects("orders-key").await.unwrap();
    assert_eq!(states(&held), ["ACTIVE"]);
    assert_eq!(held[0].material.as_deref(), Some(v2.as_str()));
    kmip.stop().await;
}

#[tokio::test]
async fn changes_made_while_the_server_is_away_never_make_material_usable() {
    // Also: the identifying fields are locked, and health follows the server.
    let mut kmip = PyKmip::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = keyplane_testkit::process::Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_DISTRIBUTION_BACKOFF", "100ms"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    let vault = new_vault(&c).await;
    let ks = connect_keystore(&c, &connection(&vault, "kmip", &kmip)).await;
    active_aes_template(&c, &vault, "kmip", "kmip").await;
    let rotated = create_key(&c, &vault, "rotated-key").await;
    let leaked = create_key(&c, &vault, "leaked-key").await;
    for key in [&rotated, &leaked] {
        wait_status(&c, &id(key), &ks, |s| s["status"] == "active").await;
    }

    // What identifies the server is locked once connected; its health is read live.
    assert_field_locked(&c, &ks, "kmip_host", "10.0.0.9").await;
    assert_field_locked(&c, &ks, "kmip_port", "5697").await;
    assert_eq!(keystore_health(&c, &ks).await.0, "ok");

    // Rotated, then deactivated or compromised, while the server is away.
    kmip.pause().await;
    let (health, detail) = keystore_health(&c, &ks).await;
    assert_eq!(health, "not_responding", "{detail}");
    for (key, last) in [(&rotated, "/deactivate"), (&leaked, "/compromise")] {
        let path = format!("/api/v4/managed_keys/{}", id(key));
        for action in ["/rotate", last] {
            let r = c.with_etag("POST", &path, action).await.unwrap();
            assert_eq!(r.status, 200, "{action}: {}", r.body);
        }
    }
    kmip.resume().await.unwrap();
    assert_eq!(keystore_health(&c, &ks).await.0, "ok");
    for key in [&rotated, &leaked] {
        sync(&c, &id(key)).await;
    }

    // The deactivated key's new version arrives, never usable; nothing of it is active.
    let held = until_held(&kmip, "rotated-key", |o| o.len() == 2).await;
    assert_eq!(states(&held), ["DEACTIVATED", "PRE_ACTIVE"], "{held:?}");
    let v2 = hex::encode(open_material_version(dir.path(), &rotated, 2).expose());
    assert_eq!(held[1].material.as_deref(), Some(v2.as_str()));
    // The compromised key's new version goes nowhere; what is there is marked compromised.
    let held = until_held(&kmip, "leaked-key", |o| {
        !o.is_empty() && o.iter().all(|o| o.state == "COMPROMISED")
    })
    .await;
    assert_eq!(held.len(), 1, "{held:?}");
    let v1 = hex::encode(open_material_version(dir.path(), &leaked, 1).expose());
    assert_eq!(held[0].material.as_deref(), Some(v1.as_str()));
    kmip.stop().await;
}
