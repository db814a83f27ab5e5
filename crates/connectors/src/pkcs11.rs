//! PKCS#11 tokens (HSMs, SoftHSM2) as keystores: any PKCS#11 v2.40 module by path, the token by
//! label, the user PIN.
//!
//! Material goes in wrapped and is unwrapped inside the token: the token keeps an RSA key pair
//! labelled `pkcs11_kek_label` (made when absent; the private key sensitive, never extractable,
//! usable only to unwrap); keyplane's material engine wraps a fresh AES-256 key under its public
//! key (RSA-OAEP, SHA-1 as PKCS#11 tokens widely offer it) and the material under that key (RFC
//! 5649), and the token unwraps both — `CKM_RSA_AES_KEY_WRAP` in two steps, the transfer key
//! a session object destroyed at once. Each managed version becomes one persistent, sensitive,
//! non-extractable AES key object: `CKA_LABEL` the key's label, `CKA_ID`
//! `keyplane:{key id}:{version}`. Enabling and disabling set `CKA_ENCRYPT` and `CKA_DECRYPT` on
//! every version's object; destroy destroys them.
//!
//! Every call runs off the async runtime on a pooled session of the token (one login per
//! module and token in the process), under a time limit: a token that hangs fails the call, not
//! the worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::PublicKeyComponents;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyplane_core::connector::{
    Connector, FailureKind, KeyToInstall, ProbeCiphertext, RemoteFailure, RemoteKey, RemoteResult,
    TransferWrapping,
};
use keyplane_core::model::Algorithm;
use zeroize::Zeroizing;

use crate::http::rejected;

/// The token key pair's label when the connection names none.
pub const DEFAULT_KEK_LABEL: &str = "keyplane-kek";
const ID_PREFIX: &str = "keyplane:";
/// The longest one token call may take before the keystore reports it unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions kept open per token for reuse.
const POOLED_SESSIONS: usize = 4;
const KEK_BITS: u64 = 3072;

/// Where the token is and how to log in.
pub struct Settings {
    pub module: PathBuf,
    pub token_label: String,
    pub pin: Zeroizing<String>,
    pub kek_label: String,
}

/// Sessions open on every token of this process, as counted when opened and closed.
static OPEN_SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// The PKCS#11 sessions keystores hold open in this process now (pooled or in use).
pub fn open_sessions() -> usize {
    OPEN_SESSIONS.load(Ordering::SeqCst)
}

/// A session counted in [`OPEN_SESSIONS`] while it is open (closed when dropped).
struct Counted(Session);

impl Counted {
    fn open(context: &Pkcs11, slot: Slot) -> RemoteResult<Self> {
        let session = context
            .open_rw_session(slot)
            .map_err(|e| token_failure("opening a session", &e))?;
        OPEN_SESSIONS.fetch_add(1, Ordering::SeqCst);
        Ok(Self(session))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN_SESSIONS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One token, logged in once for the whole process, with its session pool.
struct Token {
    context: Pkcs11,
    slot: Slot,
    /// SHA-256 of the PIN that logged in: a connection with another PIN is refused, as the
    /// token would refuse it (a second login cannot be asked while one holds).
    pin_digest: Vec<u8>,
    sessions: Mutex<Vec<Counted>>,
}

impl Drop for Token {
    fn drop(&mut self) {
        let sessions =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(first) = sessions.first() {
            let _ = first.0.logout();
        }
        // Closing every session ends the login too.
        drop(sessions);
    }
}

fn failure(kind: FailureKind, message: impl Into<String>) -> RemoteFailure {
    RemoteFailure::new(kind, message)
}

/// A token error as a keystore failure; `what` says what was attempted.
fn token_failure(what: &str, e: &Pkcs11Error) -> RemoteFailure {
    let kind = match e {
        Pkcs11Error::Pkcs11(rv, _) => match rv {
            RvError::PinIncorrect
            | RvError::PinExpired
            | RvError::PinLocked
            | RvError::PinInvalid => FailureKind::BadCredentials,
            RvError::TokenNotPresent
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::SessionClosed
            | RvError::SessionHandleInvalid => FailureKind::Unreachable,
            RvError::UserNotLoggedIn => FailureKind::BadCredentials,
            RvError::AttributeReadOnly | RvError::ActionProhibited => {
                FailureKind::MissingPermission
            }
            _ => FailureKind::Rejected,
        },
        _ => FailureKind::Rejected,
    };
    failure(kind, format!("{what}: {e}"))
}

fn module(path: &PathBuf) -> RemoteResult<Pkcs11> {
    static MODULES: LazyLock<Mutex<HashMap<PathBuf, Pkcs11>>> = LazyLock::new(Mutex::default);
    let mut modules = MODULES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(context) = modules.get(path) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(path).map_err(|e| {
        failure(
            FailureKind::Rejected,
            format!("cannot load the PKCS#11 module {}: {e}", path.display()),
        )
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(token_failure("initialising the PKCS#11 module", &e)),
    }
    modules.insert(path.clone(), context.clone());
    Ok(context)
}

fn digest(pin: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pin.as_bytes())
        .as_ref()
        .to_vec()
}

/// The token `settings` name, logged in (shared with every connection to it in this process).
fn open_token(settings: &Settings) -> RemoteResult<Arc<Token>> {
    /// Open tokens by module and token label.
    type Open = HashMap<(PathBuf, String), Weak<Token>>;
    static TOKENS: LazyLock<Mutex<Open>> = LazyLock::new(Mutex::default);
    let mut tokens = TOKENS.lock().unwrap_or_else(|e| e.into_inner());
    let key = (settings.module.clone(), settings.token_label.clone());
    let wanted = digest(&settings.pin);
    if let Some(token) = tokens.get(&key).and_then(Weak::upgrade) {
        if aws_lc_rs::constant_time::verify_slices_are_equal(&token.pin_digest, &wanted).is_err() {
            return Err(failure(
                FailureKind::BadCredentials,
                format!(
                    "the token '{}' refused the PIN (it differs from the PIN the token is open with)",
                    settings.token_label
                ),
            ));
        }
        return Ok(token);
    }
    let context = module(&settings.module)?;
    let slots = context
        .get_slots_with_token()
        .map_err(|e| token_failure("listing the module's tokens", &e))?;
    let slot = slots
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == settings.token_label)
        })
        .ok_or_else(|| {
            failure(
                FailureKind::Unreachable,
                format!(
                    "no token labelled '{}' is present in the PKCS#11 module {}",
                    settings.token_label,
                    settings.module.display()
                ),
            )
        })?;
    let session = Counted::open(&context, slot)?;
    let pin = AuthPin::new(settings.pin.as_str().into());
    match session.0.login(UserType::User, Some(&pin)) {
        Ok(()) => {}
        Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            // Logged in by another part of this process (the pkcs11 seal): the PIN cannot be
            // checked without logging that out.
            return Err(failure(
                FailureKind::Rejected,
                format!(
                    "the token '{}' is already open in this process (the pkcs11 seal?); use another token for the keystore",
                    settings.token_label
                ),
            ));
        }
        Err(e) => {
            return Err(match token_failure("logging in", &e) {
                f if f.kind == FailureKind::BadCredentials => failure(
                    FailureKind::BadCredentials,
                    format!("the token '{}' refused the PIN ({e})", settings.token_label),
                ),
                f => f,
            });
        }
    }
    let token = Arc::new(Token {
        context,
        slot,
        pin_digest: wanted,
        sessions: Mutex::new(vec![session]),
    });
    tokens.retain(|_, t| t.strong_count() > 0);
    tokens.insert(key, Arc::downgrade(&token));
    Ok(token)
}

impl Token {
    /// Runs `f` on a pooled session (opened when none is free) and returns it to the pool.
    fn with_session<T>(&self, f: impl FnOnce(&Session) -> RemoteResult<T>) -> RemoteResult<T> {
        let pooled = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let session = match pooled {
            Some(s) => s,
            None => Counted::open(&self.context, self.slot)?,
        };
        let result = f(&session.0);
        let broken = matches!(&result, Err(f) if f.kind == FailureKind::Unreachable);
        let mut pool = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if !broken && pool.len() < POOLED_SESSIONS {
            pool.push(session);
        }
        result
    }
}

/// The managed key and version an object's `CKA_ID` names.
fn parse_id(id: &[u8]) -> Option<(String, u32)> {
    let text = std::str::from_utf8(id).ok()?.strip_prefix(ID_PREFIX)?;
    let (key, version) = text.rsplit_once(':')?;
    uuid::Uuid::parse_str(key).ok()?;
    Some((key.to_owned(), version.parse().ok()?))
}

fn object_id(key_id: uuid::Uuid, version: u32) -> Vec<u8> {
    format!("{ID_PREFIX}{key_id}:{version}").into_bytes()
}

/// One managed version's object in the token.
struct VersionObject {
    handle: ObjectHandle,
    key_id: String,
    version: u32,
    enabled: bool,
}

/// The AES key objects labelled `label` that keyplane made (a `CKA_ID` it wrote).
fn version_objects(session: &Session, label: &str) -> RemoteResult<Vec<VersionObject>> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| token_failure("searching the token", &e))?;
    let mut found = Vec::new();
    for handle in handles {
        let attributes = session
            .get_attributes(handle, &[AttributeType::Id, AttributeType::Encrypt])
            .map_err(|e| token_failure("reading an object's attributes", &e))?;
        let mut id = None;
        let mut enabled = false;
        for a in attributes {
            match a {
                Attribute::Id(v) => id = parse_id(&v),
                Attribute::Encrypt(e) => enabled = e,
                _ => {}
            }
        }
        if let Some((key_id, version)) = id {
            found.push(VersionObject {
                handle,
                key_id,
                version,
                enabled,
            });
        }
    }
    found.sort_by_key(|o| o.version);
    Ok(found)
}

/// Whether any object labelled `label` is one keyplane did not make (no keyplane `CKA_ID`).
fn has_foreign_object(session: &Session, label: &str) -> RemoteResult<bool> {
    let all = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| token_failure("searching the token", &e))?;
    Ok(all.len() > version_objects(session, label)?.len())
}

fn remote_of(label: &str, objects: &[VersionObject]) -> Option<RemoteKey> {
    let newest = objects.last()?;
    Some(RemoteKey {
        remote_id: label.to_owned(),
        enabled: newest.enabled,
        version: newest.version,
    })
}

pub struct Pkcs11Keystore {
    settings: Settings,
    token: tokio::sync::Mutex<Option<Arc<Token>>>,
}

impl Pkcs11Keystore {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs `f` with a session of the token, off the async runtime and within the time limit.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Token, &Session, &Settings) -> RemoteResult<T> + Send + 'static,
    ) -> RemoteResult<T> {
        let token = {
            let mut held = self.token.lock().await;
            match held.as_ref() {
                Some(t) => t.clone(),
                None => {
                    let settings = Settings {
                        module: self.settings.module.clone(),
                        token_label: self.settings.token_label.clone(),
                        pin: self.settings.pin.clone(),
                        kek_label: self.settings.kek_label.clone(),
                    };
                    let opened =
                        timed(tokio::task::spawn_blocking(move || open_token(&settings))).await??;
                    *held = Some(opened.clone());
                    opened
                }
            }
        };
        let settings = Settings {
            module: self.settings.module.clone(),
            token_label: self.settings.token_label.clone(),
            pin: Zeroizing::new(String::new()),
            kek_label: self.settings.kek_label.clone(),
        };
        let result = timed(tokio::task::spawn_blocking(move || {
            token.with_session(|session| f(&token, session, &settings))
        }))
        .await?;
        if matches!(&result, Err(f) if f.kind == FailureKind::Unreachable) {
            // The token may be gone: the next call opens it again.
            *self.token.lock().await = None;
        }
        result
    }
}

async fn timed<T>(task: tokio::task::JoinHandle<T>) -> RemoteResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT, task).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(failure(
            FailureKind::Transient,
            format!("a PKCS#11 call failed: {e}"),
        )),
        Err(_) => Err(failure(
            FailureKind::Unreachable,
            format!(
                "the PKCS#11 token did not answer within {} s",
                CALL_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The token's key pair for imports: its private key's handle and its public key (SPKI DER),
/// made when absent.
fn kek(session: &Session, label: &str) -> RemoteResult<(ObjectHandle, Vec<u8>)> {
    let find = |class| {
        session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| token_failure("searching the token", &e))
    };
    let (mut private, mut public) = (
        find(ObjectClass::PRIVATE_KEY)?,
        find(ObjectClass::PUBLIC_KEY)?,
    );
    if private.is_empty() && public.is_empty() {
        let id = label.as_bytes().to_vec();
        let (pubkey, privkey) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::ModulusBits(KEK_BITS.into()),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                    Attribute::Wrap(true),
                    Attribute::Encrypt(false),
                    Attribute::Verify(false),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(id.clone()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Unwrap(true),
                    Attribute::Decrypt(false),
                    Attribute::Sign(false),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(id),
                ],
            )
            .map_err(|e| token_failure("making the import key pair", &e))?;
        private = vec![privkey];
        public = vec![pubkey];
    }
    let (Some(private), Some(public)) = (private.first(), public.first()) else {
        return Err(rejected(format!(
            "the token holds only half of the key pair '{label}' (its private or public key is missing)"
        )));
    };
    let attributes = session
        .get_attributes(
            *public,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(|e| token_failure("reading the import key", &e))?;
    let (mut n, mut e) = (Vec::new(), Vec::new());
    for a in attributes {
        match a {
            Attribute::Modulus(v) => n = v,
            Attribute::PublicExponent(v) => e = v,
            _ => {}
        }
    }
    let der: PublicKeyX509Der<'static> = PublicKeyComponents { n, e }
        .as_der()
        .map_err(|_| rejected(format!("'{label}' is not a usable RSA public key")))?;
    Ok((*private, der.as_ref().to_vec()))
}

/// Unwraps `wrapped` (RSA-OAEP SHA-1 of a transfer key ‖ that key's RFC 5649 wrap of the
/// material) into a persistent AES key object for `key`'s version.
fn unwrap_into_token(
    session: &Session,
    kek: ObjectHandle,
    wrapped: &[u8],
    label: &str,
    id: Vec<u8>,
    enabled: bool,
) -> RemoteResult<ObjectHandle> {
    let split = (KEK_BITS / 8) as usize;
    if wrapped.len() <= split {
        return Err(rejected("the wrapped material is too short"));
    }
    let (encrypted_key, wrapped_material) = wrapped.split_at(split);
    let oaep = PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    );
    let transfer = session
        .unwrap_key(
            &Mechanism::RsaPkcsOaep(oaep),
            kek,
            encrypted_key,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Unwrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ],
        )
        .map_err(|e| token_failure("unwrapping the transfer key", &e))?;
    let installed = session.unwrap_key(
        &Mechanism::AesKeyWrapPad,
        transfer,
        wrapped_material,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(true),
            Attribute::Encrypt(enabled),
            Attribute::Decrypt(enabled),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ],
    );
    // The transfer key is a session object; it goes now, whatever happened.
    let _ = session.destroy_object(transfer);
    installed.map_err(|e| token_failure("unwrapping the material into the token", &e))
}

fn set_usable(session: &Session, handle: ObjectHandle, enabled: bool) -> RemoteResult<()> {
    session
        .update_attributes(handle, &[Attribute::Encrypt(enabled), Attribute::Decrypt(enabled)])
        .map_err(|e| {
            let mut f = token_failure(
                if enabled { "enabling a key object" } else { "disabling a key object" },
                &e,
            );
            if f.kind == FailureKind::MissingPermission {
                f.message = format!("the token cannot disable keys (it refuses to change CKA_ENCRYPT/CKA_DECRYPT): {}", f.message);
            }
            f
        })
}

impl Pkcs11Keystore {
    /// Installs `key`'s newest version as one object, unless a keyplane object carries it.
    async fn put_version(
        &self,
        key: &KeyToInstall<'_>,
        label: String,
        enabled: bool,
    ) -> RemoteResult<RemoteKey> {
        if key.algorithm != Algorithm::Aes {
            return Err(rejected(format!(
                "keyplane distributes AES keys to PKCS#11 tokens; this key is {}",
                key.algorithm
            )));
        }
        let key_id = key.key_id;
        let version = key.version;
        let (present, public_key_der) = self
            .call({
                let label = label.clone();
                move |_, session, settings| {
                    if has_foreign_object(session, &label)? {
                        return Err(rejected(format!(
                            "the token holds a key labelled '{label}' that keyplane did not put there"
                        )));
                    }
                    let objects = version_objects(session, &label)?;
                    if objects.iter().any(|o| o.key_id != key_id.to_string()) {
                        return Err(rejected(format!(
                            "the token holds a key labelled '{label}' that is not this key"
                        )));
                    }
                    let present = objects.iter().any(|o| o.version == version);
                    let (_, der) = kek(session, &settings.kek_label)?;
                    Ok((present, der))
                }
            })
            .await?;
        if !present {
            let wrapped = key
                .material
                .wrapped_for(&TransferWrapping::RsaAesKeyWrapSha1 { public_key_der })
                .await
                .map_err(|e| rejected(e.to_string()))?;
            let label = label.clone();
            self.call(move |_, session, settings| {
                let (kek, _) = kek(session, &settings.kek_label)?;
                unwrap_into_token(
                    session,
                    kek,
                    &wrapped,
                    &label,
                    object_id(key_id, version),
                    enabled,
                )?;
                Ok(())
            })
            .await?;
        }
        Ok(RemoteKey {
            remote_id: label,
            enabled,
            version,
        })
    }
}

#[async_trait]
impl Connector for Pkcs11Keystore {
    async fn test(&self) -> RemoteResult<()> {
        // Opens the token and logs in (the module, the token and the PIN are proven), then
        // finds or makes the import key pair.
        self.call(|_, session, settings| kek(session, &settings.kek_label).map(|_| ()))
            .await
    }

    async fn find(&self, remote_id: Option<&str>, label: &str) -> RemoteResult<Option<RemoteKey>> {
        let label = remote_id.unwrap_or(label).to_owned();
        self.call(move |_, session, _| {
            let objects = version_objects(session, &label)?;
            if objects.is_empty() && has_foreign_object(session, &label)? {
                // Someone else's key of that name: present, and never this key's.
                return Ok(Some(RemoteKey {
                    remote_id: label,
                    enabled: true,
                    version: 1,
                }));
            }
            Ok(remote_of(&label, &objects))
        })
        .await
    }

    async fn install(&self, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        self.put_version(key, key.label.to_owned(), true).await
    }

    async fn set_enabled(&self, remote: &RemoteKey, enabled: bool) -> RemoteResult<RemoteKey> {
        let label = remote.remote_id.clone();
        self.call(move |_, session, _| {
            for object in version_objects(session, &label)? {
                if object.enabled != enabled {
                    set_usable(session, object.handle, enabled)?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(RemoteKey {
            enabled,
            ..remote.clone()
        })
    }

    async fn rotate(&self, remote: &RemoteKey, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        if remote.version >= key.version {
            return Ok(remote.clone());
        }
        self.put_version(key, remote.remote_id.clone(), remote.enabled)
            .await
    }

    async fn destroy(&self, remote: &RemoteKey) -> RemoteResult<()> {
        let label = remote.remote_id.clone();
        self.call(move |_, session, _| {
            for object in version_objects(session, &label)? {
                session
                    .destroy_object(object.handle)
                    .map_err(|e| token_failure("destroying a key object", &e))?;
            }
            Ok(())
        })
        .await
    }

    async fn encrypt_probe(
        &self,
        remote: &RemoteKey,
        plaintext: &[u8],
    ) -> RemoteResult<Option<ProbeCiphertext>> {
        let label = remote.remote_id.clone();
        let plaintext = plaintext.to_vec();
        self.call(move |_, session, _| {
            let objects = version_objects(session, &label)?;
            let Some(newest) = objects.last() else {
                return Ok(None);
            };
            // A disabled key cannot encrypt: it is enabled for the probe only (never a
            // compromised key's: keyplane does not ask then), and left as found.
            if !newest.enabled {
                set_usable(session, newest.handle, true)?;
            }
            let mut iv = [0u8; 12];
            aws_lc_rs::rand::fill(&mut iv).map_err(|_| rejected("no randomness for the probe"))?;
            let aad = b"keyplane-probe".to_vec();
            let sealed =
                cryptoki::mechanism::aead::GcmParams::new(&mut iv.clone(), &aad, 128.into())
                    .map_err(|e| rejected(format!("GCM parameters: {e}")))
                    .and_then(|params| {
                        session
                            .encrypt(&Mechanism::AesGcm(params), newest.handle, &plaintext)
                            .map_err(|e| token_failure("encrypting the probe", &e))
                    });
            if !newest.enabled {
                set_usable(session, newest.handle, false)?;
            }
            Ok(Some(ProbeCiphertext {
                sealed: [iv.to_vec(), sealed?].concat(),
                aad,
            }))
        })
        .await
    }

    async fn is_labelled_for(
        &self,
        remote: &RemoteKey,
        key_id: uuid::Uuid,
    ) -> RemoteResult<Option<bool>> {
        let label = remote.remote_id.clone();
        self.call(move |_, session, _| {
            let objects = version_objects(session, &label)?;
            Ok(Some(
                !has_foreign_object(session, &label)?
                    && !objects.is_empty()
                    && objects.iter().all(|o| o.key_id == key_id.to_string()),
            ))
        })
        .await
    }

    async fn prove_copy(
        &self,
        remote: &RemoteKey,
        key: &KeyToInstall<'_>,
    ) -> RemoteResult<Option<bool>> {
        // Objects keyplane did not mark as this key's are never adopted; marked ones must
        // still prove their material (the encryption probe: the token does AES-GCM).
        if self.is_labelled_for(remote, key.key_id).await? == Some(false) {
            return Ok(Some(false));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_id_names_the_managed_key_and_version() {
        let key = uuid::Uuid::new_v4();
        assert_eq!(parse_id(&object_id(key, 7)), Some((key.to_string(), 7)));
        for other in [&b"keyplane-kek"[..], b"keyplane:x:1", b"", b"keyplane:"] {
            assert_eq!(parse_id(other), None);
        }
    }
}
