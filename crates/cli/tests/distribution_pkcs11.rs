//! Distribution to a PKCS#11 token (SoftHSM2) through the real binary: the token's key object is
//! the managed key (what the token encrypts opens with the managed material, and the reverse),
//! through create, deactivate, reactivate, rotate, drift and destroy; every disconnect mode with the
//! seed's refusal and a re-link after a reconnect; only modules the operator allows are loaded.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process: the test body runs in a child process of
//! this test binary with a fresh token, the server beside it on the same token.

mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde_json::{Value, json};

const MODULE: &str = keyplane_testkit::softhsm::MODULE;
const TOKEN_LABEL: &str = "keystore-e2e";
const PIN: &str = "user-pin-8642";
const CHILD: &str = "KEYPLANE_PKCS11_E2E_CHILD";

/// In the child: the token's `SOFTHSM2_CONF`. In the parent: runs `test` in a child process
/// with a fresh token and returns `None`.
fn on_fresh_token(test: &str) -> Option<String> {
    keyplane_testkit::softhsm::in_child_with_token(test, CHILD, TOKEN_LABEL, PIN)
}

fn connection(vault: &str, name: &str) -> Value {
    json!({"type": "pkcs11", "vault": {"id": vault}, "name": name, "groups": ["hsm"],
           "pkcs11_module": MODULE, "pkcs11_token_label": TOKEN_LABEL, "pkcs11_pin": PIN})
}

/// The test's own logged-in session on the token, to see what the server put there (and change
/// it, as an operator would).
fn inspect() -> Session {
    let context = Pkcs11::new(MODULE).unwrap();
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| context.get_token_info(*s).unwrap().label().trim_end() == TOKEN_LABEL)
        .unwrap();
    let session = context.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    session
}

/// The key objects labelled `label`, oldest version first.
fn objects(session: &Session, label: &str) -> Vec<(ObjectHandle, String, bool)> {
    let mut found: Vec<(ObjectHandle, String, bool)> = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
        .into_iter()
        .map(|h| {
            let mut id = String::new();
            let mut enabled = false;
            for a in session
                .get_attributes(h, &[AttributeType::Id, AttributeType::Encrypt])
                .unwrap()
            {
                match a {
                    Attribute::Id(v) => id = String::from_utf8(v).unwrap(),
                    Attribute::Encrypt(e) => enabled = e,
                    _ => {}
                }
            }
            (h, id, enabled)
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found
}

/// AES-GCM in the token: `iv ‖ ciphertext ‖ tag`.
fn token_encrypt(session: &Session, handle: ObjectHandle, plaintext: &[u8]) -> Option<Vec<u8>> {
    let iv = [4u8; 12];
    let sealed = session
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv.clone(), b"", 128.into()).unwrap()),
            handle,
            plaintext,
        )
        .ok()?;
    Some([iv.to_vec(), sealed].concat())
}

fn token_decrypt(session: &Session, handle: ObjectHandle, sealed: &[u8]) -> Vec<u8> {
    let (iv, rest) = sealed.split_at(12);
    session
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv.to_vec(), b"", 128.into()).unwrap()),
            handle,
            rest,
        )
        .unwrap()
}

#[tokio::test]
async fn a_pkcs11_token_holds_the_managed_key_through_its_lifecycle_and_disconnects() {
    let Some(conf) = on_fresh_token(
        "a_pkcs11_token_holds_the_managed_key_through_its_lifecycle_and_disconnects",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = keyplane_testkit::process::Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_DESTROY_GRACE_PERIOD", "0s"),
            ("KEYPLANE_PKCS11_KEYSTORE_MODULES", MODULE),
            ("SOFTHSM2_CONF", conf.as_str()),
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

    // Only a module the operator allows is loaded; a wrong PIN and a missing token are told
    // apart; nothing is saved.
    let mut evil = connection(&vault, "hsm");
    evil["pkcs11_module"] = json!("/tmp/not-allowed.so");
    let (status, error) = attempt(evil).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["target"]["name"], "pkcs11_module", "{error}");
    let mut wrong = connection(&vault, "hsm");
    wrong["pkcs11_pin"] = json!("not-the-pin");
    let (status, error) = attempt(wrong).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("refused the PIN"),
        "{error}"
    );
    assert!(!error.to_string().contains("not-the-pin"), "{error}");
    let mut missing = connection(&vault, "hsm");
    missing["pkcs11_token_label"] = json!("no-such-token");
    let (status, error) = attempt(missing).await;
    assert_eq!(status, 424, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no token labelled 'no-such-token'"),
        "{error}"
    );
    let listed = c
        .get(&format!("/api/v4/keystores?vault.id={vault}"))
        .await
        .unwrap();
    assert_eq!(listed.body["total_count"], 0, "nothing was saved");

    let ks = connect_keystore(&c, &connection(&vault, "hsm")).await;
    // Keyplane installs AES keys in tokens: another algorithm is refused with the template.
    let r = post_template(
        &c,
        &vault,
        "RSA",
        ("rsa", "2048"),
        json!({"type": "pkcs11", "group": "hsm"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.to_string().contains("do not accept rsa keys"),
        "{}",
        r.body
    );
    active_aes_template(&c, &vault, "pkcs11", "hsm").await;
    let key = create_key(&c, &vault, "payments-key").await;
    let key_id = id(&key);
    let key_path = format!("/api/v4/managed_keys/{key_id}");
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert_eq!(entry["key_id_in_keystore"], "payments-key");
    let session = inspect();
    let found = objects(&session, "payments-key");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1, format!("keyplane:{key_id}:1"));
    let first = open_material_version(dir.path(), &key, 1);
    let sealed = token_encrypt(&session, found[0].0, b"from the token").unwrap();
    assert_eq!(open_gcm(first.expose(), &sealed), b"from the token");
    assert_eq!(
        token_decrypt(
            &session,
            found[0].0,
            &seal_gcm(first.expose(), b"the reverse")
        ),
        b"the reverse"
    );

    // Deactivate and reactivate.
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert!(
        token_encrypt(&session, found[0].0, b"x").is_none(),
        "disabled refuses"
    );
    let r = c.with_etag("POST", &key_path, "/activate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert!(token_encrypt(&session, found[0].0, b"x").is_some());

    // Rotate: a second object with the new material.
    let r = c.with_etag("POST", &key_path, "/rotate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..600 {
        if objects(&session, "payments-key").len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let found = objects(&session, "payments-key");
    assert_eq!(found.len(), 2);
    let second = open_material_version(dir.path(), &key, 2);
    let sealed = token_encrypt(&session, found[1].0, b"second").unwrap();
    assert_eq!(open_gcm(second.expose(), &sealed), b"second");

    // Drift: the newest object disabled by hand in the token is seen, and a sync puts it right.
    session
        .update_attributes(
            found[1].0,
            &[Attribute::Encrypt(false), Attribute::Decrypt(false)],
        )
        .unwrap();
    let live = live_statuses(&c, &key_id).await;
    assert!(
        live.to_string().contains("not_active"),
        "the disabled object is seen: {live}"
    );
    sync(&c, &key_id).await;
    for _ in 0..600 {
        if objects(&session, "payments-key").iter().all(|o| o.2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(objects(&session, "payments-key").iter().all(|o| o.2));
    wait_in_sync(&c, &key_id, &ks).await;

    // The seed's rule, then deactivate mode: the objects are disabled and the keystore unlinked.
    assert_restrict_refused(&c, &ks, &key_id).await;
    let gone = disconnect_keystore(&c, &ks, "deactivate").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert!(objects(&session, "payments-key").iter().all(|o| !o.2));

    // Reconnected: the copy proves itself (the token encrypts a probe the material opens) and
    // is re-linked, not installed again.
    let again = connect_keystore(&c, &connection(&vault, "hsm-again")).await;
    let r = c
        .with_etag("POST", &key_path, "/update_from_template")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &again, |s| s["status"] == "active").await;
    let found = objects(&session, "payments-key");
    assert_eq!(found.len(), 2, "re-linked");
    assert!(found.iter().all(|o| o.2));

    // Destroy mode removes every version's object, and only those.
    let gone = disconnect_keystore(&c, &again, "destroy").await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert!(objects(&session, "payments-key").is_empty());

    // A key's destroy removes its objects too.
    let third = connect_keystore(&c, &connection(&vault, "hsm-third")).await;
    let other = create_key(&c, &vault, "ledger-key").await;
    let other_path = format!("/api/v4/managed_keys/{}", id(&other));
    wait_status(&c, &id(&other), &third, |s| s["status"] == "active").await;
    assert_eq!(objects(&session, "ledger-key").len(), 1);
    for action in ["/deactivate", "/destroy"] {
        let r = c.with_etag("POST", &other_path, action).await.unwrap();
        assert_eq!(r.status, 200, "{action}: {}", r.body);
    }
    wait_status(&c, &id(&other), &third, |s| s["status"] == "not_present").await;
    assert!(objects(&session, "ledger-key").is_empty());
}
