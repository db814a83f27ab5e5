//! The PKCS#11 master key on a real token (SoftHSM2, installed by `scripts/test.sh`).
//!
//! SoftHSM2 reads its configuration from `SOFTHSM2_CONF` when the library initialises, once per
//! process. Changing the environment of a running process needs `unsafe` (forbidden here), so
//! each test prepares a private token directory and runs its body in a child process of this
//! test binary with that variable set: every test gets a fresh token, whatever the test threads.

use std::path::Path;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use keyplane_crypto::pkcs11::{Pkcs11Config, Pkcs11RootKey, Pkcs11Token};
use keyplane_crypto::{RootKey, key_wrap};
use zeroize::Zeroizing;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const LABEL: &str = "keyplane-test";
const PIN: &str = "user-pin-5678";
const CHILD: &str = "KEYPLANE_PKCS11_TEST_CHILD";

fn module() -> String {
    let module = std::env::var("KEYPLANE_TEST_PKCS11_MODULE").unwrap_or_else(|_| MODULE.into());
    assert!(
        Path::new(&module).exists(),
        "the PKCS#11 module {module} is missing: scripts/test.sh installs the softhsm2 package"
    );
    module
}

fn config(pin: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: module().into(),
        token_label: LABEL.into(),
        pin: Zeroizing::new(pin.into()),
    }
}

/// Runs `test` (a test of this binary) in a child process against a fresh token; in the child,
/// returns true so the caller runs the body.
fn on_fresh_token(test: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    module();
    let init = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", LABEL])
        .args(["--so-pin", "so-pin-1234", "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util runs (scripts/test.sh installs the softhsm2 package)");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    // "1 passed" guards against a filter that ran nothing.
    assert!(
        child.status.success() && out.contains("1 passed"),
        "{out}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    false
}

/// A second, independent session on the test token (the module is initialised once per process,
/// and login is per process, so it sees what the `Pkcs11Token` sees).
fn raw_session() -> Session {
    let context = Pkcs11::new(module()).unwrap();
    let slot = test_slot(&context);
    context.open_rw_session(slot).unwrap()
}

fn test_slot(context: &Pkcs11) -> Slot {
    context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| context.get_token_info(*s).unwrap().label().trim_end() == LABEL)
        .expect("the test token")
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).unwrap();
    key
}

#[test]
fn pkcs11_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Pkcs11Token>();
    assert_send_sync::<Pkcs11RootKey>();
}

#[test]
fn the_master_key_persists_in_the_token_and_wraps_vault_keys() {
    if !on_fresh_token("the_master_key_persists_in_the_token_and_wraps_vault_keys") {
        return;
    }
    let token = Pkcs11Token::open(&config(PIN)).unwrap();
    let root = token.generate_root("r1").unwrap();
    assert_eq!(root.id(), "r1");
    assert!(token.generate_root("r1").is_err(), "one master key per id");
    let vault_key = random_key();
    let wrapped = root.wrap(&vault_key, b"vault").unwrap();
    assert_eq!(wrapped.len(), 40, "RFC 5649 adds one 8-byte block");
    assert_eq!(
        root.unwrap(&wrapped, b"vault").unwrap().expose(),
        &vault_key
    );
    for i in [0, 7, 8, 39] {
        let mut tampered = wrapped.clone();
        tampered[i] ^= 1;
        assert!(root.unwrap(&tampered, b"vault").is_err(), "byte {i}");
    }
    assert!(root.unwrap(&wrapped[..32], b"vault").is_err());
    // Only whole 8-byte blocks: the token would hand other lengths back zero-padded.
    assert!(root.wrap(&[1u8; 20], b"vault").is_err());

    // Reopened (a restart): found by id, and it opens what it wrapped.
    drop(root);
    drop(token);
    let token = Pkcs11Token::open(&config(PIN)).unwrap();
    let root = token
        .find_root("r1")
        .unwrap()
        .expect("the master key persists");
    assert_eq!(
        root.unwrap(&wrapped, b"vault").unwrap().expose(),
        &vault_key
    );
    // A second root wraps differently and cannot open the first one's blobs.
    let other = token.generate_root("r2").unwrap();
    assert!(other.unwrap(&wrapped, b"vault").is_err());
    assert!(token.find_root("r3").unwrap().is_none());

    token.destroy_root("r1").unwrap();
    assert!(token.find_root("r1").unwrap().is_none());
    token.destroy_root("r1").unwrap();
    assert!(token.find_root("r2").unwrap().is_some());
}

#[test]
fn the_master_key_cannot_be_extracted() {
    if !on_fresh_token("the_master_key_cannot_be_extracted") {
        return;
    }
    let token = Pkcs11Token::open(&config(PIN)).unwrap();
    let root = token.generate_root("r1").unwrap();
    let session = raw_session();
    let attributes = session
        .get_attributes(
            root.handle(),
            &[
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::Token,
                AttributeType::Encrypt,
                AttributeType::Value,
            ],
        )
        .unwrap();
    assert!(attributes.contains(&Attribute::Extractable(false)));
    assert!(attributes.contains(&Attribute::Sensitive(true)));
    assert!(attributes.contains(&Attribute::Token(true)));
    assert!(attributes.contains(&Attribute::Encrypt(false)));
    assert!(
        !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the key's value is never readable"
    );
    // Wrapping it out under another key is refused too.
    let other = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Wrap(true),
            Attribute::Value(vec![7u8; 32]),
        ])
        .unwrap();
    for mechanism in [Mechanism::AesKeyWrapPad, Mechanism::AesKeyWrap] {
        assert!(session.wrap_key(&mechanism, other, root.handle()).is_err());
    }
}

/// The token's `CKM_AES_KEY_WRAP_PAD` and our RFC 5649 agree byte for byte.
#[test]
fn the_tokens_key_wrap_matches_ours() {
    if !on_fresh_token("the_tokens_key_wrap_matches_ours") {
        return;
    }
    let _token = Pkcs11Token::open(&config(PIN)).unwrap();
    let session = raw_session();
    let kek: Vec<u8> = (0u8..32).collect();
    let wrapping = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Value(kek.clone()),
        ])
        .unwrap();
    let key_of = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(37) ^ 0xa5)
            .collect()
    };
    // A vault key's size first.
    for len in [32usize, 16, 24, 40] {
        let key = key_of(len);
        let object = session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Extractable(true),
                Attribute::Value(key.clone()),
            ])
            .unwrap();
        let by_token = session
            .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, object)
            .unwrap();
        assert_eq!(
            by_token,
            key_wrap::wrap_padded(&kek, &key).unwrap(),
            "{len} bytes"
        );
    }
    // Lengths that need padding: SoftHSM2 zero-pads them before wrapping (so its blobs differ),
    // but it unwraps RFC 5649 blobs exactly.
    for len in [20usize, 7] {
        let key = key_of(len);
        let ours = key_wrap::wrap_padded(&kek, &key).unwrap();
        let unwrapped = session
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                wrapping,
                &ours,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::GENERIC_SECRET),
                    Attribute::Token(false),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        let value = session
            .get_attributes(unwrapped, &[AttributeType::Value])
            .unwrap();
        assert_eq!(value, [Attribute::Value(key)], "{len} bytes");
    }
}

#[test]
fn a_wrong_pin_or_label_opens_nothing() {
    if !on_fresh_token("a_wrong_pin_or_label_opens_nothing") {
        return;
    }
    let e = Pkcs11Token::open(&config("not-the-pin-000")).err().unwrap();
    assert!(e.to_string().contains("PIN"), "{e}");
    assert!(!e.to_string().contains("not-the-pin"), "{e}");
    let e = Pkcs11Token::open(&Pkcs11Config {
        token_label: "no-such-token".into(),
        ..config(PIN)
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("no-such-token"), "{e}");
    assert!(!e.to_string().contains(PIN), "{e}");
    let e = Pkcs11Token::open(&Pkcs11Config {
        module: "/nonexistent/libpkcs11.so".into(),
        ..config(PIN)
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("/nonexistent/libpkcs11.so"), "{e}");
    assert!(!format!("{:?}", config(PIN)).contains(PIN));
}

/// Login is per process: a second open of a token still open in this process is refused (the
/// first keeps working) rather than let in without its PIN being checked.
#[test]
fn a_token_open_in_this_process_is_not_opened_twice() {
    if !on_fresh_token("a_token_open_in_this_process_is_not_opened_twice") {
        return;
    }
    let first = Pkcs11Token::open(&config(PIN)).unwrap();
    let root = first.generate_root("r1").unwrap();
    let vault_key = random_key();
    let wrapped = root.wrap(&vault_key, b"vault").unwrap();
    for pin in [PIN, "not-the-pin-000"] {
        let e = Pkcs11Token::open(&config(pin)).err().unwrap();
        assert!(e.to_string().contains("already open"), "{e}");
    }
    assert_eq!(
        root.unwrap(&wrapped, b"vault").unwrap().expose(),
        &vault_key
    );
    // Closed (the token and every root key sharing its session): it opens again.
    drop(first);
    drop(root);
    assert!(Pkcs11Token::open(&config("not-the-pin-000")).is_err());
    let second = Pkcs11Token::open(&config(PIN)).unwrap();
    let root = second.find_root("r1").unwrap().unwrap();
    assert_eq!(
        root.unwrap(&wrapped, b"vault").unwrap().expose(),
        &vault_key
    );
}
