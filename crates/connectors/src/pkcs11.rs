//! PKCS#11 tokens (HSMs, SoftHSM2) as keystores: any PKCS#11 v2.40 module the operator allows,
//! the token by label, the user PIN.
//!
//! Material goes in wrapped and is unwrapped inside the token: the token keeps an RSA key pair
//! labelled `pkcs11_kek_label` (made when absent; the private key sensitive, never extractable,
//! usable only to unwrap); keyplane's material engine wraps a fresh AES-256 key under its public
//! key (RSA-OAEP, SHA-1 as PKCS#11 tokens widely offer it) and the material under that key (RFC
//! 5649), and the token unwraps both — `CKM_RSA_AES_KEY_WRAP` in two steps, the transfer key
//! a session object destroyed at once. Each managed version becomes one persistent, sensitive,
//! non-extractable, non-copyable AES key object: `CKA_LABEL` the key's label, `CKA_ID`
//! `keyplane:{key id}:{version}`. Enabling and disabling set `CKA_ENCRYPT` and `CKA_DECRYPT` on
//! every version's object; destroy destroys them. Objects of one label that are not all one
//! managed key's are never changed.
//!
//! Every call runs off the async runtime on a pooled session of the token, within a time limit
//! and a bound on calls in flight: a token that hangs fails its calls fast instead of holding
//! the server's threads. One login per module and token holds for the process on a session of
//! its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::PublicKeyComponents;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyplane_core::connector::{
    Connector, FailureKind, KeyToInstall, ProbeCiphertext, RemoteFailure, RemoteKey, RemoteResult,
    TransferWrapping,
};
use keyplane_core::model::Algorithm;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::http::rejected;

/// The token key pair's label when the connection names none.
pub const DEFAULT_KEK_LABEL: &str = "keyplane-kek";
const ID_PREFIX: &str = "keyplane:";
/// `CKA_ID` of the import key pair's two halves.
const KEK_ID: &[u8] = b"keyplane-import-key-pair";
/// The longest one token call may take before the keystore reports it unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Token calls in flight at once per token; a hung token holds at most these threads.
const CALLS_IN_FLIGHT: usize = 4;
/// Sessions kept open per token for reuse (besides the login session).
const POOLED_SESSIONS: usize = 4;
const KEK_BITS: u64 = 3072;
/// How long a PIN the token refused is refused again without asking the token (each refusal
/// counts towards the token locking its user PIN).
const REFUSED_PIN_MEMORY: Duration = Duration::from_secs(15 * 60);

/// Where the token is and how to log in.
pub struct Settings {
    pub module: PathBuf,
    pub token_label: String,
    pub pin: Zeroizing<String>,
    pub kek_label: String,
}

/// Sessions open on every token of this process, as counted when opened and closed.
static OPEN_SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// The PKCS#11 sessions keystores hold open in this process now (pooled, in use or holding a
/// login).
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

/// One token, logged in once for the whole process: the login lasts while its own session is
/// open (it never serves calls, so closing a broken pooled session cannot end it).
struct Token {
    context: Pkcs11,
    slot: Slot,
    /// Keyed digest of the PIN that logged in: a connection with another PIN is refused.
    pin_digest: Vec<u8>,
    /// Held (not used) behind a lock: a session is not to be shared between threads.
    _login: Mutex<Counted>,
    sessions: Mutex<Vec<Counted>>,
    /// Serialises what must not interleave on the token: making the import key pair, checking
    /// a label and unwrapping under it.
    writes: Mutex<()>,
    calls: Arc<Semaphore>,
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
            // The login is gone (the token was reset or removed meanwhile): opened again.
            RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::UserNotLoggedIn => FailureKind::Unreachable,
            RvError::AttributeReadOnly | RvError::ActionProhibited => {
                FailureKind::MissingPermission
            }
            _ => FailureKind::Rejected,
        },
        _ => FailureKind::Rejected,
    };
    failure(kind, format!("{what}: {e}"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The module at `path`, loaded and initialised once for the process. A module is loaded under
/// its own lock, so a module that hangs while loading holds up only its own keystores.
fn module(path: &PathBuf) -> RemoteResult<Pkcs11> {
    type Loaded = HashMap<PathBuf, Arc<Mutex<Option<Pkcs11>>>>;
    static MODULES: LazyLock<Mutex<Loaded>> = LazyLock::new(Mutex::default);
    let slot = lock(&MODULES).entry(path.clone()).or_default().clone();
    let mut loaded = lock(&slot);
    if let Some(context) = loaded.as_ref() {
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
    *loaded = Some(context.clone());
    Ok(context)
}

/// A keyed digest of a PIN, under a key of this process only: what is kept of a PIN to compare
/// it (no PIN, nor an unkeyed digest of one, stays in memory).
fn pin_digest(pin: &str) -> Vec<u8> {
    static KEY: LazyLock<aws_lc_rs::hmac::Key> = LazyLock::new(|| {
        aws_lc_rs::hmac::Key::generate(
            aws_lc_rs::hmac::HMAC_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .expect("randomness for a process key")
    });
    aws_lc_rs::hmac::sign(&KEY, pin.as_bytes())
        .as_ref()
        .to_vec()
}

/// What this process knows of one token: the open token, and PINs it refused lately.
#[derive(Default)]
struct TokenEntry {
    open: Weak<Token>,
    refused: Vec<(Vec<u8>, Instant)>,
}

/// The token `settings` name, logged in (shared with every connection to it in this process).
fn open_token(settings: &Settings) -> RemoteResult<Arc<Token>> {
    type Entries = HashMap<(PathBuf, String), Arc<Mutex<TokenEntry>>>;
    static TOKENS: LazyLock<Mutex<Entries>> = LazyLock::new(Mutex::default);
    // The global map is held only to find the token's own entry; the token's calls (which
    // may block) run under that entry's lock.
    let entry = lock(&TOKENS)
        .entry((settings.module.clone(), settings.token_label.clone()))
        .or_default()
        .clone();
    let mut entry = lock(&entry);
    let wanted = pin_digest(&settings.pin);
    let same = |a: &[u8]| aws_lc_rs::constant_time::verify_slices_are_equal(a, &wanted).is_ok();
    let refused_pin = || {
        failure(
            FailureKind::BadCredentials,
            format!("the token '{}' refused the PIN", settings.token_label),
        )
    };
    if let Some(token) = entry.open.upgrade() {
        if !same(&token.pin_digest) {
            return Err(refused_pin());
        }
        return Ok(token);
    }
    entry
        .refused
        .retain(|(_, at)| at.elapsed() < REFUSED_PIN_MEMORY);
    if entry.refused.iter().any(|(d, _)| same(d)) {
        // Asked again, the token would count another failure towards locking the PIN.
        return Err(refused_pin());
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
    let login = Counted::open(&context, slot)?;
    let pin = AuthPin::new(settings.pin.as_str().into());
    match login.0.login(UserType::User, Some(&pin)) {
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
            let failed = token_failure("logging in", &e);
            if failed.kind == FailureKind::BadCredentials {
                entry.refused.push((wanted, Instant::now()));
                return Err(failure(
                    FailureKind::BadCredentials,
                    format!("the token '{}' refused the PIN ({e})", settings.token_label),
                ));
            }
            return Err(failed);
        }
    }
    let token = Arc::new(Token {
        context,
        slot,
        pin_digest: wanted,
        _login: Mutex::new(login),
        sessions: Mutex::default(),
        writes: Mutex::default(),
        calls: Arc::new(Semaphore::new(CALLS_IN_FLIGHT)),
    });
    entry.open = Arc::downgrade(&token);
    Ok(token)
}

impl Token {
    /// Runs `f` on a pooled session (opened when none is free) and returns it to the pool
    /// unless it broke.
    fn with_session<T>(&self, f: impl FnOnce(&Session) -> RemoteResult<T>) -> RemoteResult<T> {
        let pooled = lock(&self.sessions).pop();
        let session = match pooled {
            Some(s) => s,
            None => Counted::open(&self.context, self.slot)?,
        };
        // The login holds for every session of the token; one that is not a user session
        // means it was lost (the token was reset): the token is opened again.
        match session.0.get_session_info() {
            Ok(info) if info.session_state() == SessionState::RwUser => {}
            Ok(_) => {
                return Err(failure(
                    FailureKind::Unreachable,
                    "the token's login was lost; it is opened again",
                ));
            }
            Err(e) => return Err(token_failure("reading a session", &e)),
        }
        let mut broken = false;
        let result = f(&session.0).inspect_err(|f| {
            broken = f.kind == FailureKind::Unreachable;
        });
        let mut pool = lock(&self.sessions);
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

/// The key objects labelled `label`: those keyplane marked (oldest version first), and how
/// many others there are.
fn objects_labelled(session: &Session, label: &str) -> RemoteResult<(Vec<VersionObject>, usize)> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| token_failure("searching the token", &e))?;
    let mut marked = Vec::new();
    let mut others = 0;
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
        match id {
            Some((key_id, version)) => marked.push(VersionObject {
                handle,
                key_id,
                version,
                enabled,
            }),
            None => others += 1,
        }
    }
    marked.sort_by_key(|o| o.version);
    Ok((marked, others))
}

/// The objects of the one managed key labelled `label`; refused when the label also holds
/// objects keyplane did not make, or another key's: those are never changed.
fn own_objects(session: &Session, label: &str) -> RemoteResult<Vec<VersionObject>> {
    let (marked, others) = objects_labelled(session, label)?;
    if others > 0 && marked.is_empty() {
        return Err(rejected(format!(
            "the token holds a key labelled '{label}' that keyplane did not put there; keyplane does not change it"
        )));
    }
    let mixed = marked.windows(2).any(|w| w[0].key_id != w[1].key_id);
    if others > 0 || mixed {
        return Err(rejected(format!(
            "the token holds keys labelled '{label}' that are not all one managed key's; keyplane changes none of them"
        )));
    }
    Ok(marked)
}

fn remote_of(label: &str, objects: &[VersionObject]) -> Option<RemoteKey> {
    let newest = objects.last()?;
    Some(RemoteKey {
        remote_id: label.to_owned(),
        enabled: newest.enabled,
        version: newest.version,
    })
}

fn attribute_bytes(
    session: &Session,
    handle: ObjectHandle,
    wanted: AttributeType,
) -> RemoteResult<Vec<u8>> {
    let found = session
        .get_attributes(handle, &[wanted])
        .map_err(|e| token_failure("reading the import key", &e))?;
    Ok(found
        .into_iter()
        .find_map(|a| match a {
            Attribute::Modulus(v) | Attribute::PublicExponent(v) => Some(v),
            _ => None,
        })
        .unwrap_or_default())
}

/// The token's import key pair: its private key's handle and its public key (SPKI DER), made
/// when absent. A pair found is used only when its halves match and the private key has always
/// been sensitive and never extractable.
fn kek(token: &Token, session: &Session, label: &str) -> RemoteResult<(ObjectHandle, Vec<u8>)> {
    let _serialised = lock(&token.writes);
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
        let (pubkey, privkey) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Modifiable(false),
                    Attribute::ModulusBits(KEK_BITS.into()),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                    Attribute::Wrap(true),
                    Attribute::Encrypt(false),
                    Attribute::Verify(false),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(KEK_ID.to_vec()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Modifiable(false),
                    Attribute::Unwrap(true),
                    Attribute::Decrypt(false),
                    Attribute::Sign(false),
                    Attribute::Derive(false),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(KEK_ID.to_vec()),
                ],
            )
            .map_err(|e| token_failure("making the import key pair", &e))?;
        private = vec![privkey];
        public = vec![pubkey];
    }
    let ([private], [public]) = (private.as_slice(), public.as_slice()) else {
        return Err(rejected(format!(
            "the token holds {} private and {} public keys labelled '{label}', not one key pair",
            private.len(),
            public.len()
        )));
    };
    let modulus = attribute_bytes(session, *public, AttributeType::Modulus)?;
    if attribute_bytes(session, *private, AttributeType::Modulus)? != modulus {
        return Err(rejected(format!(
            "the private and public keys labelled '{label}' are not one key pair"
        )));
    }
    let guarded = session
        .get_attributes(
            *private,
            &[
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .map_err(|e| token_failure("reading the import key", &e))?;
    if !guarded.contains(&Attribute::AlwaysSensitive(true))
        || !guarded.contains(&Attribute::NeverExtractable(true))
    {
        return Err(rejected(format!(
            "the private key labelled '{label}' has been extractable or not sensitive: it is not used to import keys"
        )));
    }
    let e = attribute_bytes(session, *public, AttributeType::PublicExponent)?;
    let der: PublicKeyX509Der<'static> = PublicKeyComponents { n: modulus, e }
        .as_der()
        .map_err(|_| rejected(format!("'{label}' is not a usable RSA public key")))?;
    Ok((*private, der.as_ref().to_vec()))
}

/// A session object destroyed when dropped, on every path.
struct SessionObject<'a> {
    session: &'a Session,
    handle: ObjectHandle,
}

impl Drop for SessionObject<'_> {
    fn drop(&mut self) {
        // It dies with its session anyway; the session is not pooled again when this fails
        // (see `unwrap_into_token`).
        let _ = self.session.destroy_object(self.handle);
    }
}

/// Unwraps `wrapped` (RSA-OAEP SHA-1 of a transfer key ‖ that key's RFC 5649 wrap of the
/// material) into a persistent AES key object for `key`'s version.
fn unwrap_into_token(
    session: &Session,
    kek: ObjectHandle,
    kek_bytes: usize,
    wrapped: &[u8],
    label: &str,
    id: Vec<u8>,
    enabled: bool,
) -> RemoteResult<ObjectHandle> {
    if wrapped.len() <= kek_bytes {
        return Err(rejected("the wrapped material is too short"));
    }
    let (encrypted_key, wrapped_material) = wrapped.split_at(kek_bytes);
    let oaep = PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    );
    let transfer = SessionObject {
        session,
        handle: session
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
                    Attribute::Copyable(false),
                    Attribute::Unwrap(true),
                    Attribute::Encrypt(false),
                    Attribute::Decrypt(false),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                    Attribute::Derive(false),
                ],
            )
            .map_err(|e| token_failure("unwrapping the transfer key", &e))?,
    };
    let installed = session
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            transfer.handle,
            wrapped_material,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Copyable(false),
                Attribute::Modifiable(true),
                Attribute::Encrypt(enabled),
                Attribute::Decrypt(enabled),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Derive(false),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id),
            ],
        )
        .map_err(|e| token_failure("unwrapping the material into the token", &e))?;
    // The transfer key goes now; a token that will not destroy it gets this session closed
    // (and the key with it) rather than pooled.
    let handle = transfer.handle;
    std::mem::forget(transfer);
    session.destroy_object(handle).map_err(|e| {
        failure(
            FailureKind::Unreachable,
            format!("destroying the transfer key: {e}"),
        )
    })?;
    Ok(installed)
}

fn set_usable(session: &Session, handle: ObjectHandle, enabled: bool) -> RemoteResult<()> {
    session
        .update_attributes(
            handle,
            &[Attribute::Encrypt(enabled), Attribute::Decrypt(enabled)],
        )
        .map_err(|e| {
            let mut f = token_failure(
                if enabled {
                    "enabling a key object"
                } else {
                    "disabling a key object"
                },
                &e,
            );
            if f.kind == FailureKind::MissingPermission {
                f.message = format!(
                    "the token cannot disable keys (it refuses to change CKA_ENCRYPT/CKA_DECRYPT): {}",
                    f.message
                );
            }
            f
        })
}

pub struct Pkcs11Keystore {
    settings: Settings,
    token: tokio::sync::Mutex<Option<Arc<Token>>>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> RemoteResult<T> + Send + 'static,
) -> RemoteResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(result)) => result,
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

impl Pkcs11Keystore {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            token: tokio::sync::Mutex::new(None),
        }
    }

    async fn token(&self) -> RemoteResult<Arc<Token>> {
        let mut held = self.token.lock().await;
        if let Some(t) = held.as_ref() {
            return Ok(t.clone());
        }
        let settings = Settings {
            module: self.settings.module.clone(),
            token_label: self.settings.token_label.clone(),
            pin: self.settings.pin.clone(),
            kek_label: self.settings.kek_label.clone(),
        };
        let opened = blocking(move || open_token(&settings)).await?;
        *held = Some(opened.clone());
        Ok(opened)
    }

    /// Runs `f` with a session of the token, off the async runtime, within the time limit and
    /// the bound on calls in flight.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Token, &Session, &str) -> RemoteResult<T> + Send + 'static,
    ) -> RemoteResult<T> {
        let token = self.token().await?;
        let permit =
            match tokio::time::timeout(CALL_TIMEOUT, token.calls.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    return Err(failure(
                        FailureKind::Unreachable,
                        "the PKCS#11 token is not answering (its earlier calls are still waiting)",
                    ));
                }
            };
        let kek_label = self.settings.kek_label.clone();
        let result = blocking(move || {
            let _permit = permit;
            token.with_session(|session| f(&token, session, &kek_label))
        })
        .await;
        if matches!(&result, Err(f) if f.kind == FailureKind::Unreachable) {
            // The token may be gone or hung: the next call opens it again.
            *self.token.lock().await = None;
        }
        result
    }

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
        let (key_id, version) = (key.key_id, key.version);
        // Whether a version is there, and whose the label is, is checked again under the
        // token's write lock just before the unwrap.
        let check = move |session: &Session, label: &str| -> RemoteResult<bool> {
            let objects = own_objects(session, label)?;
            if objects.iter().any(|o| o.key_id != key_id.to_string()) {
                return Err(rejected(format!(
                    "the token holds a key labelled '{label}' that is not this key"
                )));
            }
            Ok(objects.iter().any(|o| o.version == version))
        };
        let (present, public_key_der) = self
            .call({
                let label = label.clone();
                move |token, session, kek_label| {
                    let present = check(session, &label)?;
                    let (_, der) = kek(token, session, kek_label)?;
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
            self.call(move |token, session, kek_label| {
                let (kek, der) = kek(token, session, kek_label)?;
                let kek_bytes = aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der)
                    .map_err(|_| rejected("the import key is not a usable RSA key"))?
                    .key_size_bytes();
                let _serialised = lock(&token.writes);
                if !check(session, &label)? {
                    unwrap_into_token(
                        session,
                        kek,
                        kek_bytes,
                        &wrapped,
                        &label,
                        object_id(key_id, version),
                        enabled,
                    )?;
                }
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
        self.call(|token, session, kek_label| kek(token, session, kek_label).map(|_| ()))
            .await
    }

    async fn find(&self, remote_id: Option<&str>, label: &str) -> RemoteResult<Option<RemoteKey>> {
        let label = remote_id.unwrap_or(label).to_owned();
        self.call(move |_, session, _| {
            // Someone else's key of that name (or a mix) is an error: never this key's copy.
            Ok(remote_of(&label, &own_objects(session, &label)?))
        })
        .await
    }

    async fn find_copy(
        &self,
        remote_id: Option<&str>,
        label: &str,
        key_id: uuid::Uuid,
    ) -> RemoteResult<Option<RemoteKey>> {
        let label = remote_id.unwrap_or(label).to_owned();
        self.call(move |_, session, _| {
            let objects = own_objects(session, &label)?;
            // Another managed key's objects under the label are not this key's copy.
            if objects.iter().any(|o| o.key_id != key_id.to_string()) {
                return Ok(None);
            }
            Ok(remote_of(&label, &objects))
        })
        .await
    }

    async fn install(&self, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        self.put_version(key, key.label.to_owned(), key.enabled)
            .await
    }

    async fn set_enabled(&self, remote: &RemoteKey, enabled: bool) -> RemoteResult<RemoteKey> {
        let label = remote.remote_id.clone();
        self.call(move |_, session, _| {
            for object in own_objects(session, &label)? {
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
            for object in own_objects(session, &label)? {
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
            let objects = own_objects(session, &label)?;
            let Some(newest) = objects.last() else {
                return Ok(None);
            };
            // A disabled key cannot encrypt: it is enabled for the probe only (never a
            // compromised key's: keyplane does not ask then) and disabled again before the
            // answer; should that fail, the call fails and drift detection sees the copy.
            if !newest.enabled {
                set_usable(session, newest.handle, true)?;
            }
            let mut iv = [0u8; 12];
            aws_lc_rs::rand::fill(&mut iv).map_err(|_| rejected("no randomness for the probe"))?;
            let aad = b"keyplane-probe".to_vec();
            let sealed = GcmParams::new(&mut iv, &aad, 128.into())
                .map_err(|e| rejected(format!("GCM parameters: {e}")))
                .and_then(|params| {
                    session
                        .encrypt(&Mechanism::AesGcm(params), newest.handle, &plaintext)
                        .map_err(|e| token_failure("encrypting the probe", &e))
                });
            if !newest.enabled {
                set_usable(session, newest.handle, false)?;
            }
            // The IV as the token used it (a token may write back one it chose).
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
            let (marked, others) = objects_labelled(session, &label)?;
            Ok(Some(
                others == 0
                    && !marked.is_empty()
                    && marked.iter().all(|o| o.key_id == key_id.to_string()),
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

    #[test]
    fn a_pin_is_kept_only_as_a_keyed_digest() {
        let digest = pin_digest("1234");
        assert_eq!(digest, pin_digest("1234"));
        assert_ne!(digest, pin_digest("1235"));
        assert_ne!(
            digest,
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"1234")
                .as_ref()
                .to_vec()
        );
    }
}
