//! The `kmip` keystore connector against a real KMIP server (PyKMIP, installed by
//! `scripts/test.sh`): what keyplane registers is the managed key (read back with Get by
//! PyKMIP's own client), states follow the managed lifecycle, and TLS trust fails clearly on
//! either side.

use async_trait::async_trait;
use keyplane_connectors::kmip::protocol::Version;
use keyplane_connectors::kmip::{Kmip, Settings, TlsSettings};
use keyplane_core::connector::{
    Connector, FailureKind, KeyToInstall, MaterialExport, ProbeCiphertext, RemoteKey,
    TransferWrapping,
};
use keyplane_core::model::{Algorithm, KeystoreKeyProperties};
use keyplane_testkit::kmip::{Authority, Identity, PyKmip};

/// Managed material as the material engine hands it to a KMIP target (PKCS#8 for key pairs).
struct Material(Vec<u8>);

#[async_trait]
impl MaterialExport for Material {
    async fn wrapped_for(
        &self,
        wrapping: &TransferWrapping,
    ) -> keyplane_core::error::Result<Vec<u8>> {
        assert_eq!(wrapping, &TransferWrapping::ClearOverMutualTls);
        Ok(self.0.clone())
    }

    async fn opens_probe(&self, _probe: &ProbeCiphertext, _expected: &[u8]) -> bool {
        unreachable!("KMIP copies are proven by their material")
    }

    async fn encrypt_nonce(
        &self,
        _nonce: &[u8],
    ) -> keyplane_core::error::Result<(Vec<u8>, Vec<u8>)> {
        unreachable!()
    }

    async fn public_key_der(&self) -> keyplane_core::error::Result<Option<Vec<u8>>> {
        Ok(keyplane_crypto::material::public_key_der(&self.0))
    }
}

fn random_key() -> Material {
    let mut k = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut k).unwrap();
    Material(k)
}

fn connector(server: &PyKmip, ca_pem: &str, client: &Identity, version: Option<Version>) -> Kmip {
    Kmip::new(Settings {
        host: "127.0.0.1".into(),
        port: server.port,
        tls: TlsSettings {
            ca_cert: Some(ca_pem),
            client_cert: Some(&client.cert_pem),
            client_key: Some(&client.key_pem),
        },
        version,
        credential: None,
    })
    .unwrap()
}

fn to_install<'a>(
    key_id: uuid::Uuid,
    label: &'a str,
    version: u32,
    material: &'a Material,
    properties: &'a KeystoreKeyProperties,
) -> KeyToInstall<'a> {
    KeyToInstall {
        key_id,
        enabled: true,
        label,
        algorithm: Algorithm::Aes,
        size: 256,
        version,
        material,
        properties,
    }
}

/// The object's state and material as PyKMIP's own client reads them.
async fn held(server: &PyKmip, id: &str) -> (String, String) {
    let out = server
        .client_script(
            &server.client,
            &format!(
                "print(client.get_attributes('{id}', ['State'])[1][0].attribute_value.value.name)\n\
                 print(client.get('{id}').value.hex())"
            ),
        )
        .await
        .unwrap();
    let mut lines = out.lines();
    (
        lines.next().unwrap().to_owned(),
        lines.next().unwrap_or_default().to_owned(),
    )
}

async fn state_of(server: &PyKmip, id: &str) -> String {
    server
        .client_script(
            &server.client,
            &format!(
                "print(client.get_attributes('{id}', ['State'])[1][0].attribute_value.value.name)"
            ),
        )
        .await
        .unwrap()
}

async fn lifecycle(version: Option<Version>) {
    let server = PyKmip::start().await.unwrap();
    let kmip = connector(&server, &server.ca.cert_pem(), &server.client, version);
    kmip.test().await.unwrap();
    // PyKMIP's newest is 2.0: 2.x attributes when negotiated, 1.x ones when pinned.
    assert_eq!(
        kmip.version().await.unwrap(),
        version.unwrap_or(Version { major: 2, minor: 0 })
    );
    let properties = KeystoreKeyProperties::default();
    let key_id = uuid::Uuid::new_v4();
    let (v1, v2) = (random_key(), random_key());
    let label = "orders-key";

    assert_eq!(kmip.find(None, label).await.unwrap(), None);
    let installed = kmip
        .install(&to_install(key_id, label, 1, &v1, &properties))
        .await
        .unwrap();
    assert!(installed.enabled);
    assert_eq!(
        held(&server, &installed.remote_id).await,
        ("ACTIVE".into(), hex::encode(&v1.0)),
        "{}",
        server.log()
    );
    // A retried install adopts what is there.
    let again = kmip
        .install(&to_install(key_id, label, 1, &v1, &properties))
        .await
        .unwrap();
    assert_eq!(again, installed);
    assert_eq!(
        kmip.find(None, label).await.unwrap(),
        Some(installed.clone())
    );
    assert_eq!(
        kmip.prove_copy(&installed, &to_install(key_id, label, 1, &v1, &properties))
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(
        kmip.prove_copy(&installed, &to_install(key_id, label, 1, &v2, &properties))
            .await
            .unwrap(),
        Some(false),
        "other material is not this copy"
    );
    assert_eq!(
        kmip.is_labelled_for(&installed, uuid::Uuid::new_v4())
            .await
            .unwrap(),
        Some(false)
    );

    // Deactivated: revoked, cessation of operation.
    let disabled = kmip.set_enabled(&installed, false).await.unwrap();
    assert!(!disabled.enabled);
    assert_eq!(state_of(&server, &installed.remote_id).await, "DEACTIVATED");
    assert_eq!(
        kmip.find(None, label).await.unwrap(),
        Some(disabled.clone())
    );
    let refused = kmip.set_enabled(&disabled, true).await.unwrap_err();
    assert!(
        refused.message.contains("cannot be activated again"),
        "{refused}"
    );

    // Reactivated: the version registered anew; the revoked object stays for old data.
    let enabled = kmip
        .enable(&disabled, &to_install(key_id, label, 1, &v1, &properties))
        .await
        .unwrap();
    assert!(enabled.enabled);
    assert_ne!(enabled.remote_id, installed.remote_id);
    assert_eq!(
        held(&server, &enabled.remote_id).await,
        ("ACTIVE".into(), hex::encode(&v1.0))
    );
    assert_eq!(state_of(&server, &installed.remote_id).await, "DEACTIVATED");
    assert_eq!(kmip.find(None, label).await.unwrap(), Some(enabled.clone()));

    // Rotated: a new object; the older version is superseded (deactivated).
    let rotated = kmip
        .rotate(&enabled, &to_install(key_id, label, 2, &v2, &properties))
        .await
        .unwrap();
    assert_eq!((rotated.version, rotated.enabled), (2, true));
    assert_eq!(
        held(&server, &rotated.remote_id).await,
        ("ACTIVE".into(), hex::encode(&v2.0))
    );
    assert_eq!(state_of(&server, &enabled.remote_id).await, "DEACTIVATED");
    assert_eq!(kmip.find(None, label).await.unwrap(), Some(rotated.clone()));

    // Compromised: every object revoked with that reason.
    let compromised = kmip.mark_compromised(&rotated).await.unwrap();
    assert!(!compromised.enabled);
    for id in [&installed.remote_id, &enabled.remote_id, &rotated.remote_id] {
        assert_eq!(state_of(&server, id).await, "COMPROMISED");
    }

    let held_now = server.objects(label).await.unwrap();
    assert_eq!(held_now.len(), 3, "{held_now:?}");
    assert!(held_now.iter().all(|o| o.state == "COMPROMISED"));

    // Destroyed: every object gone.
    kmip.destroy(&compromised).await.unwrap();
    assert_eq!(server.objects(label).await.unwrap(), []);
    assert_eq!(kmip.find(None, label).await.unwrap(), None);
    server.stop().await;
}

#[tokio::test]
async fn lifecycle_in_the_negotiated_version() {
    lifecycle(None).await;
}

#[tokio::test]
async fn lifecycle_in_kmip_1_2() {
    lifecycle(Version::parse("1.2")).await;
}

#[tokio::test]
async fn tls_trust_fails_clearly_on_each_side() {
    let server = PyKmip::start().await.unwrap();
    let rogue = Authority::new("someone else's CA").unwrap();

    // The server's certificate checked against a CA that did not issue it.
    let untrusted = connector(&server, &rogue.cert_pem(), &server.client, None)
        .test()
        .await
        .unwrap_err();
    assert_eq!(untrusted.kind, FailureKind::Rejected, "{untrusted}");
    assert!(
        untrusted.message.contains("certificate is not trusted")
            && untrusted.message.contains("kmip_ca_cert"),
        "{untrusted}"
    );

    // A client certificate the server's CA did not issue.
    let stranger = rogue.client("keyplane").unwrap();
    let refused = connector(&server, &server.ca.cert_pem(), &stranger, None)
        .test()
        .await
        .unwrap_err();
    assert_eq!(refused.kind, FailureKind::BadCredentials, "{refused}");
    assert!(
        refused
            .message
            .contains("refused keyplane's client certificate"),
        "{refused}"
    );

    // A pinned version the server does not speak.
    let pinned = connector(
        &server,
        &server.ca.cert_pem(),
        &server.client,
        Version::parse("2.1"),
    )
    .test()
    .await
    .unwrap_err();
    assert!(
        pinned.message.contains("does not speak KMIP 2.1"),
        "{pinned}"
    );

    // Nothing listening.
    let port = server.port;
    server.stop().await;
    let gone = Kmip::new(Settings {
        host: "127.0.0.1".into(),
        port,
        tls: TlsSettings {
            ca_cert: None,
            client_cert: Some(&stranger.cert_pem),
            client_key: Some(&stranger.key_pem),
        },
        version: None,
        credential: None,
    })
    .unwrap()
    .test()
    .await
    .unwrap_err();
    assert_eq!(gone.kind, FailureKind::Unreachable, "{gone}");

    // Key material goes only over mutual TLS: no client certificate, no connector.
    let one_way = Kmip::new(Settings {
        host: "127.0.0.1".into(),
        port,
        tls: TlsSettings {
            ca_cert: None,
            client_cert: None,
            client_key: None,
        },
        version: None,
        credential: None,
    });
    assert_eq!(one_way.err().map(|e| e.0), Some("kmip_client_cert"));
}

#[tokio::test]
async fn objects_keyplane_did_not_register_are_never_changed() {
    let server = PyKmip::start().await.unwrap();
    let kmip = connector(&server, &server.ca.cert_pem(), &server.client, None);
    // Someone else's key under the label keyplane would use.
    let foreign = server
        .client_script(
            &server.client,
            "from kmip.pie import objects\n\
             key = objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, b'\\x01' * 32, name='shared')\n\
             print(client.register(key))",
        )
        .await
        .unwrap();
    let properties = KeystoreKeyProperties::default();
    let material = random_key();
    let key_id = uuid::Uuid::new_v4();
    let refused = kmip
        .install(&to_install(key_id, "shared", 1, &material, &properties))
        .await
        .unwrap_err();
    assert!(refused.message.contains("not this key's"), "{refused}");
    assert_eq!(kmip.find(None, "shared").await.unwrap(), None);
    let theirs = RemoteKey {
        remote_id: foreign.clone(),
        enabled: false,
        version: 1,
    };
    assert_eq!(
        kmip.is_labelled_for(&theirs, key_id).await.unwrap(),
        Some(false)
    );
    assert!(kmip.destroy(&theirs).await.is_err());
    assert_eq!(state_of(&server, &foreign).await, "PRE_ACTIVE");
    server.stop().await;
}

#[tokio::test]
async fn an_ec_key_pair_is_a_private_and_a_public_key_object() {
    let server = PyKmip::start().await.unwrap();
    let kmip = connector(&server, &server.ca.cert_pem(), &server.client, None);
    let properties = KeystoreKeyProperties::default();
    let key_id = uuid::Uuid::new_v4();
    let pair = |_| {
        let generated = keyplane_crypto::material::generate_key(
            keyplane_crypto::material::KeyKind::Ec(keyplane_crypto::material::EcCurve::P256),
        )
        .unwrap();
        Material(generated.material.expose().to_vec())
    };
    let (v1, v2) = (pair(1), pair(2));
    let install = |version, material| KeyToInstall {
        key_id,
        enabled: true,
        label: "signing-key",
        algorithm: Algorithm::Ec,
        size: 256,
        version,
        material,
        properties: &properties,
    };
    let installed = kmip.install(&install(1, &v1)).await.unwrap();
    let held = server.objects("signing-key").await.unwrap();
    let public = keyplane_crypto::material::public_key_der(&v1.0).unwrap();
    let summary: Vec<(&str, &str, Option<String>)> = held
        .iter()
        .map(|o| (o.kind.as_str(), o.state.as_str(), o.material.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("PublicKey", "ACTIVE", Some(hex::encode(&public))),
            ("PrivateKey", "ACTIVE", Some(hex::encode(&v1.0))),
        ]
    );
    assert_eq!(
        installed.remote_id, held[1].id,
        "the private key speaks for the copy"
    );
    assert_eq!(
        kmip.prove_copy(&installed, &install(1, &v1)).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        kmip.prove_copy(&installed, &install(1, &v2)).await.unwrap(),
        Some(false)
    );

    // Both halves follow the lifecycle.
    let disabled = kmip.set_enabled(&installed, false).await.unwrap();
    let states = |objects: &[keyplane_testkit::kmip::KmipObject]| {
        objects.iter().map(|o| o.state.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        states(&server.objects("signing-key").await.unwrap()),
        ["DEACTIVATED", "DEACTIVATED"]
    );
    let enabled = kmip.enable(&disabled, &install(1, &v1)).await.unwrap();
    let rotated = kmip.rotate(&enabled, &install(2, &v2)).await.unwrap();
    let held = server.objects("signing-key").await.unwrap();
    assert_eq!(
        states(&held),
        [
            "DEACTIVATED",
            "DEACTIVATED",
            "DEACTIVATED",
            "DEACTIVATED",
            "ACTIVE",
            "ACTIVE"
        ]
    );
    assert_eq!(held[5].material, Some(hex::encode(&v2.0)));
    assert_eq!(rotated.remote_id, held[5].id);
    kmip.destroy(&rotated).await.unwrap();
    assert_eq!(server.objects("signing-key").await.unwrap(), []);
    server.stop().await;
}

#[tokio::test]
async fn a_key_that_is_not_to_be_usable_is_never_activated_and_marks_are_proven() {
    let server = PyKmip::start().await.unwrap();
    let kmip = connector(&server, &server.ca.cert_pem(), &server.client, None);
    let properties = KeystoreKeyProperties::default();
    let key_id = uuid::Uuid::new_v4();
    let material = random_key();

    // A deactivated key's copy is registered and left pre-active: never usable there.
    let mut install = to_install(key_id, "dormant-key", 1, &material, &properties);
    install.enabled = false;
    let installed = kmip.install(&install).await.unwrap();
    assert!(!installed.enabled);
    assert_eq!(state_of(&server, &installed.remote_id).await, "PRE_ACTIVE");
    // Compromised: revoked so straight from pre-active.
    kmip.mark_compromised(&installed).await.unwrap();
    assert_eq!(state_of(&server, &installed.remote_id).await, "COMPROMISED");
    // Nothing of a compromised key is registered or activated there again.
    let refused = kmip
        .install(&to_install(
            key_id,
            "dormant-key",
            1,
            &material,
            &properties,
        ))
        .await
        .unwrap_err();
    assert!(refused.message.contains("compromised"), "{refused}");
    let refused = kmip.set_enabled(&installed, true).await.unwrap_err();
    assert!(refused.message.contains("compromised"), "{refused}");
    assert_eq!(server.objects("dormant-key").await.unwrap().len(), 1);

    // An object carrying a key's mark for a version, planted with other material, is never
    // taken for the key's copy.
    let planted_for = uuid::Uuid::new_v4();
    let other = random_key();
    let planted = kmip
        .install(&to_install(
            planted_for,
            "planted-key",
            1,
            &other,
            &properties,
        ))
        .await
        .unwrap()
        .remote_id;
    let refused = kmip
        .install(&to_install(
            planted_for,
            "planted-key",
            1,
            &material,
            &properties,
        ))
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("holds other material"),
        "{refused}"
    );
    assert_eq!(
        held(&server, &planted).await,
        ("ACTIVE".into(), hex::encode(&other.0))
    );
    assert_eq!(server.objects("planted-key").await.unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_key_never_acts_on_another_keys_objects_under_its_name() {
    let server = PyKmip::start().await.unwrap();
    let kmip = connector(&server, &server.ca.cert_pem(), &server.client, None);
    let properties = KeystoreKeyProperties::default();
    let (mine, theirs) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let material = random_key();
    // Another managed key now holds the name a stale record of this one points at.
    kmip.install(&to_install(
        theirs,
        "reused-name",
        1,
        &material,
        &properties,
    ))
    .await
    .unwrap();
    assert_eq!(
        kmip.find_copy(None, "reused-name", mine).await.unwrap(),
        None,
        "another key's objects are not this key's copy"
    );
    assert!(
        kmip.find_copy(None, "reused-name", theirs)
            .await
            .unwrap()
            .is_some()
    );
    let refused = kmip
        .install(&to_install(
            mine,
            "reused-name",
            1,
            &random_key(),
            &properties,
        ))
        .await
        .unwrap_err();
    assert!(refused.message.contains("not this key's"), "{refused}");
    let held = server.objects("reused-name").await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].state, "ACTIVE");
    server.stop().await;
}
