//! The `pkcs11` keystore connector on a real token (SoftHSM2, installed by `scripts/test.sh`):
//! what keyplane wraps is unwrapped into the token, and the token's key is the managed key —
//! what the token encrypts with it opens with the material, and the reverse.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process, so each test runs its body in a child
//! process of this test binary with a fresh token (as the seal's token tests do).

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use keyplane_connectors::pkcs11::{Pkcs11Keystore, Settings, open_sessions};
use keyplane_core::connector::{
    Connector, FailureKind, KeyToInstall, MaterialExport, ProbeCiphertext, TransferWrapping,
};
use keyplane_core::model::{Algorithm, KeystoreKeyProperties};
use zeroize::Zeroizing;

const MODULE: &str = keyplane_testkit::softhsm::MODULE;
const LABEL: &str = "keystore-test";
const PIN: &str = "user-pin-2468";
const CHILD: &str = "KEYPLANE_PKCS11_KEYSTORE_TEST_CHILD";

/// Runs `test` in a child process against a fresh token; in the child, returns true.
fn on_fresh_token(test: &str) -> bool {
    keyplane_testkit::softhsm::in_child_with_token(test, CHILD, LABEL, PIN).is_some()
}

fn keystore(label: &str, pin: &str) -> Pkcs11Keystore {
    Pkcs11Keystore::new(Settings {
        module: MODULE.into(),
        token_label: label.into(),
        pin: Zeroizing::new(pin.into()),
        kek_label: "keyplane-kek".into(),
    })
}

/// Managed material as the material engine would hand it out: wrapped only.
struct Material(Vec<u8>);

#[async_trait]
impl MaterialExport for Material {
    async fn wrapped_for(
        &self,
        wrapping: &TransferWrapping,
    ) -> keyplane_core::error::Result<Vec<u8>> {
        match wrapping {
            TransferWrapping::RsaAesKeyWrapSha1 { public_key_der } => {
                keyplane_crypto::transfer::rsa_aes_key_wrap(
                    public_key_der,
                    keyplane_crypto::transfer::OaepHash::Sha1,
                    &self.0,
                )
                .map_err(|e| keyplane_core::error::Error::internal(e.to_string()))
            }
            other => panic!("unexpected wrapping {other:?}"),
        }
    }

    async fn opens_probe(&self, probe: &ProbeCiphertext, expected: &[u8]) -> bool {
        open(&self.0, &probe.sealed, &probe.aad).is_some_and(|p| p == expected)
    }

    async fn encrypt_nonce(
        &self,
        _nonce: &[u8],
    ) -> keyplane_core::error::Result<(Vec<u8>, Vec<u8>)> {
        unreachable!()
    }

    async fn public_key_der(&self) -> keyplane_core::error::Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

fn open(material: &[u8], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material).ok()?);
    let (iv, rest) = sealed.split_at(12);
    let mut buf = rest.to_vec();
    key.open_in_place(
        Nonce::try_assume_unique_for_key(iv).ok()?,
        Aad::from(aad),
        &mut buf,
    )
    .ok()
    .map(|p| p.to_vec())
}

fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut k).unwrap();
    k
}

fn install<'a>(
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

/// A second, independent view of the token (the test's own session), to check what is there.
fn inspect() -> Session {
    let context = Pkcs11::new(MODULE).unwrap();
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => panic!("{e}"),
    }
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| context.get_token_info(*s).unwrap().label().trim_end() == LABEL)
        .unwrap();
    let session = context.open_rw_session(slot).unwrap();
    // Already logged in by the connector in this process: the login is shared.
    let _ = session.login(UserType::User, Some(&AuthPin::new(PIN.into())));
    session
}

fn objects(session: &Session, label: &str) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
}

fn id_of(session: &Session, handle: ObjectHandle) -> String {
    match session
        .get_attributes(handle, &[AttributeType::Id])
        .unwrap()
        .pop()
    {
        Some(Attribute::Id(v)) => String::from_utf8(v).unwrap(),
        _ => panic!("no id"),
    }
}

/// Encrypts with the token's object (AES-GCM in the token): `iv ‖ ciphertext ‖ tag`.
fn token_encrypt(
    session: &Session,
    handle: ObjectHandle,
    plaintext: &[u8],
) -> cryptoki::error::Result<Vec<u8>> {
    let mut iv = [3u8; 12];
    let sealed = session.encrypt(
        &Mechanism::AesGcm(GcmParams::new(&mut iv.clone(), b"", 128.into()).unwrap()),
        handle,
        plaintext,
    )?;
    iv = [3u8; 12];
    Ok([iv.to_vec(), sealed].concat())
}

fn token_decrypt(session: &Session, handle: ObjectHandle, sealed: &[u8]) -> Vec<u8> {
    let (iv, rest) = sealed.split_at(12);
    let mut iv = iv.to_vec();
    session
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
            handle,
            rest,
        )
        .unwrap()
}

fn seal(material: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material).unwrap());
    let iv = [5u8; 12];
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut buf)
        .unwrap();
    [iv.to_vec(), buf].concat()
}

#[tokio::test]
async fn the_token_holds_the_managed_key_through_its_lifecycle() {
    if !on_fresh_token("the_token_holds_the_managed_key_through_its_lifecycle") {
        return;
    }
    let ks = keystore(LABEL, PIN);
    ks.test().await.expect("the connection test passes");
    let props = KeystoreKeyProperties::default();
    let key_id = uuid::Uuid::new_v4();
    let first = Material(random_key());
    let remote = ks
        .install(&install(key_id, "billing", 1, &first, &props))
        .await
        .unwrap();
    assert_eq!(
        (remote.remote_id.as_str(), remote.version, remote.enabled),
        ("billing", 1, true)
    );
    // Installing again (a retry) finds it: one object.
    ks.install(&install(key_id, "billing", 1, &first, &props))
        .await
        .unwrap();
    let session = inspect();
    let found = objects(&session, "billing");
    assert_eq!(found.len(), 1);
    assert_eq!(id_of(&session, found[0]), format!("keyplane:{key_id}:1"));
    // Sensitive and never extractable.
    let attributes = session
        .get_attributes(
            found[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Token,
            ],
        )
        .unwrap();
    assert!(
        attributes.contains(&Attribute::Sensitive(true)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::Extractable(false)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::Token(true)),
        "{attributes:?}"
    );
    // The token's key is the managed key: both ways.
    let sealed = token_encrypt(&session, found[0], b"from the token").unwrap();
    assert_eq!(open(&first.0, &sealed, b"").unwrap(), b"from the token");
    assert_eq!(
        token_decrypt(&session, found[0], &seal(&first.0, b"to the token")),
        b"to the token"
    );
    // The probe proves it.
    let probe = ks.encrypt_probe(&remote, b"probe").await.unwrap().unwrap();
    assert!(first.opens_probe(&probe, b"probe").await);

    // Disable: the object refuses to encrypt; enable again.
    ks.set_enabled(&remote, false).await.unwrap();
    assert!(
        token_encrypt(&session, found[0], b"x").is_err(),
        "a disabled key refuses"
    );
    let seen = ks.find(None, "billing").await.unwrap().unwrap();
    assert!(!seen.enabled);
    // The probe of a disabled copy leaves it disabled.
    let probe = ks.encrypt_probe(&seen, b"again").await.unwrap().unwrap();
    assert!(first.opens_probe(&probe, b"again").await);
    assert!(!ks.find(None, "billing").await.unwrap().unwrap().enabled);
    let remote = ks.set_enabled(&seen, true).await.unwrap();
    assert!(ks.find(None, "billing").await.unwrap().unwrap().enabled);

    // Rotate: a second object, the newest version.
    let second = Material(random_key());
    let rotated = ks
        .rotate(&remote, &install(key_id, "billing", 2, &second, &props))
        .await
        .unwrap();
    assert_eq!(rotated.version, 2);
    let found = objects(&session, "billing");
    assert_eq!(found.len(), 2);
    let newest = found
        .iter()
        .copied()
        .find(|h| id_of(&session, *h).ends_with(":2"))
        .unwrap();
    let sealed = token_encrypt(&session, newest, b"second").unwrap();
    assert_eq!(open(&second.0, &sealed, b"").unwrap(), b"second");
    assert_eq!(ks.find(None, "billing").await.unwrap().unwrap().version, 2);

    // Another key's name is refused; a key someone else put there is never taken.
    let other = Material(random_key());
    let refused = ks
        .install(&install(uuid::Uuid::new_v4(), "billing", 1, &other, &props))
        .await
        .unwrap_err();
    assert_eq!(refused.kind, FailureKind::Rejected);
    assert!(refused.message.contains("not this key"), "{refused}");
    assert_eq!(
        ks.is_labelled_for(&rotated, key_id).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        ks.is_labelled_for(&rotated, uuid::Uuid::new_v4())
            .await
            .unwrap(),
        Some(false)
    );

    // A key keyplane did not put there is never taken, changed nor destroyed.
    let foreign = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::Token(true),
            Attribute::Value(random_key()),
            Attribute::Label(b"foreign".to_vec()),
            Attribute::Encrypt(true),
        ])
        .unwrap();
    let refused = ks
        .install(&install(uuid::Uuid::new_v4(), "foreign", 1, &other, &props))
        .await
        .unwrap_err();
    assert!(refused.message.contains("did not put there"), "{refused}");
    let as_copy = keyplane_core::connector::RemoteKey {
        remote_id: "foreign".into(),
        enabled: true,
        version: 1,
    };
    assert!(ks.find(None, "foreign").await.is_err());
    assert!(ks.set_enabled(&as_copy, false).await.is_err());
    assert!(ks.destroy(&as_copy).await.is_err());
    assert!(token_encrypt(&session, foreign, b"still usable").is_ok());

    // An object marked as a key's version but holding other material fails the probe.
    let forged_key = uuid::Uuid::new_v4();
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::Token(true),
            Attribute::Value(random_key()),
            Attribute::Label(b"forged".to_vec()),
            Attribute::Id(format!("keyplane:{forged_key}:1").into_bytes()),
            Attribute::Encrypt(true),
        ])
        .unwrap();
    let forged = ks.find(None, "forged").await.unwrap().unwrap();
    assert_eq!(
        ks.is_labelled_for(&forged, forged_key).await.unwrap(),
        Some(true)
    );
    let probe = ks
        .encrypt_probe(&forged, b"who are you")
        .await
        .unwrap()
        .unwrap();
    assert!(!other.opens_probe(&probe, b"who are you").await);

    // Destroy: every version's object is gone, and only those.
    ks.destroy(&rotated).await.unwrap();
    assert!(objects(&session, "billing").is_empty());
    assert!(ks.find(None, "billing").await.unwrap().is_none());
    assert_eq!(
        session
            .find_objects(&[Attribute::Label(b"keyplane-kek".to_vec())])
            .unwrap()
            .len(),
        2,
        "the import key pair stays"
    );
}

#[tokio::test]
async fn a_wrong_pin_and_a_missing_token_are_told_apart() {
    if !on_fresh_token("a_wrong_pin_and_a_missing_token_are_told_apart") {
        return;
    }
    let wrong = keystore(LABEL, "not-the-pin").test().await.unwrap_err();
    assert_eq!(wrong.kind, FailureKind::BadCredentials, "{wrong}");
    assert!(wrong.message.contains("refused the PIN"), "{wrong}");
    assert!(!wrong.message.contains("not-the-pin"), "{wrong}");
    let missing = keystore("no-such-token", PIN).test().await.unwrap_err();
    assert_eq!(missing.kind, FailureKind::Unreachable, "{missing}");
    assert!(
        missing
            .message
            .contains("no token labelled 'no-such-token'"),
        "{missing}"
    );
    // The right PIN then works, and a connection with another PIN to the open token is refused.
    keystore(LABEL, PIN).test().await.unwrap();
    let ks = keystore(LABEL, PIN);
    ks.test().await.unwrap();
    let other = keystore(LABEL, "guess").test().await.unwrap_err();
    assert_eq!(other.kind, FailureKind::BadCredentials, "{other}");
}

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn two_hundred_installs_leave_no_session_or_thread_behind() {
    if !on_fresh_token("two_hundred_installs_leave_no_session_or_thread_behind") {
        return;
    }
    let ks = keystore(LABEL, PIN);
    ks.test().await.unwrap();
    let props = KeystoreKeyProperties::default();
    let material = Material(random_key());
    // Warm up: the pool and the runtime's blocking threads settle.
    for i in 0..10 {
        let label = format!("warm-{i}");
        ks.install(&install(uuid::Uuid::new_v4(), &label, 1, &material, &props))
            .await
            .unwrap();
    }
    let (sessions_before, threads_before) = (open_sessions(), threads());
    assert!(sessions_before >= 1, "the keystore's login session is open");
    for i in 0..200 {
        let label = format!("load-{i}");
        let remote = ks
            .install(&install(uuid::Uuid::new_v4(), &label, 1, &material, &props))
            .await
            .unwrap();
        if i % 2 == 0 {
            ks.destroy(&remote).await.unwrap();
        }
    }
    assert_eq!(open_sessions(), sessions_before, "no session left open");
    // Blocking threads are reused (a few may be started while others are returning to the
    // pool); a leak would add one per call.
    assert!(
        threads() <= threads_before + 4,
        "threads {} then {}",
        threads_before,
        threads()
    );
    // At once, too: the pool stays bounded and every session is closed or pooled again.
    let installs = (0..20).map(|i| {
        let ks = &ks;
        let material = &material;
        let props = &props;
        async move {
            let label = format!("together-{i}");
            ks.install(&install(uuid::Uuid::new_v4(), &label, 1, material, props))
                .await
        }
    });
    for installed in futures::future::join_all(installs).await {
        installed.unwrap();
    }
    assert!(
        open_sessions() <= sessions_before + 4,
        "{} sessions open after concurrent installs",
        open_sessions()
    );
    // Calls in flight per token are bounded (four), and so the threads they hold: twenty
    // installs at once do not take twenty threads.
    assert!(
        threads() <= threads_before + 8,
        "threads {} then {}",
        threads_before,
        threads()
    );
}
