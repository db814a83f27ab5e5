//! The PKCS#11 master key on a real token (SoftHSM2, installed by `scripts/test.sh`).
//!
//! SoftHSM2 reads its configuration from `SOFTHSM2_CONF` when the library initialises, so each
//! test prepares a private token directory and runs its body in a child process of this test
//! binary with that variable set.

use std::path::Path;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use keyplane_crypto::pkcs11::{Pkcs11Config, Pkcs11Token};
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
        .expect("softhsm2-util runs (scripts/test.sh installs softhsm2)");
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
    assert!(
        child.status.success() && out.contains("1 passed"),
        "{out}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    false
}

#[test]
fn the_master_key_stays_in_the_token_and_wraps_vault_keys() {
    if !on_fresh_token("the_master_key_stays_in_the_token_and_wraps_vault_keys") {
        return;
    }
    let token = Pkcs11Token::open(&config(PIN)).unwrap();
    let root = token.generate_root("r1").unwrap();
    let vault_key = [0x5au8; 32];
    let wrapped = root.wrap(&vault_key, b"vault").unwrap();
    assert_ne!(&wrapped[..], &vault_key[..]);
    assert_eq!(
        root.unwrap(&wrapped, b"vault").unwrap().expose(),
        &vault_key
    );
    let mut tampered = wrapped.clone();
    tampered[5] ^= 1;
    assert!(root.unwrap(&tampered, b"vault").is_err());

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
    assert!(token.find_root("r2").unwrap().is_none());
    token.destroy_root("r1").unwrap();
    assert!(token.find_root("r1").unwrap().is_none());
    token.destroy_root("r1").unwrap();
}

#[test]
fn the_master_key_cannot_be_extracted() {
    if !on_fresh_token("the_master_key_cannot_be_extracted") {
        return;
    }
    let token = Pkcs11Token::open(&config(PIN)).unwrap();
    let root = token.generate_root("r1").unwrap();
    // A second session of the same token (the module is initialised once per process).
    let context = cryptoki::context::Pkcs11::new(module()).unwrap();
    let slot = context.get_slots_with_token().unwrap()[0];
    let session = context.open_rw_session(slot).unwrap();
    let found = session
        .find_objects(&[Attribute::Label(b"keyplane-master-r1".to_vec())])
        .unwrap();
    let attributes = session
        .get_attributes(
            found[0],
            &[
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::Value,
            ],
        )
        .unwrap();
    assert!(attributes.contains(&Attribute::Extractable(false)));
    assert!(attributes.contains(&Attribute::Sensitive(true)));
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
    assert!(
        session
            .wrap_key(&Mechanism::AesKeyWrapPad, other, root.handle())
            .is_err()
    );
    // Our RFC 5649 and the token's agree byte for byte.
    let vault_key = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Extractable(true),
            Attribute::Value(vec![0x33u8; 32]),
        ])
        .unwrap();
    let by_token = session
        .wrap_key(&Mechanism::AesKeyWrapPad, other, vault_key)
        .unwrap();
    assert_eq!(
        by_token,
        key_wrap::wrap_padded(&[7u8; 32], &[0x33u8; 32]).unwrap()
    );
}

#[test]
fn a_wrong_pin_opens_nothing() {
    if !on_fresh_token("a_wrong_pin_opens_nothing") {
        return;
    }
    let e = Pkcs11Token::open(&config("not-the-pin-000")).err().unwrap();
    assert!(!e.to_string().contains("not-the-pin"), "{e}");
    let e = Pkcs11Token::open(&Pkcs11Config {
        token_label: "no-such-token".into(),
        ..config(PIN)
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("no-such-token"), "{e}");
}
