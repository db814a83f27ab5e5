//! The `pkcs11` seal: the master key is a non-extractable AES-256 key inside a PKCS#11 token.
//! The token wraps and unwraps vault keys (`CKM_AES_KEY_WRAP_PAD`, RFC 5649); the master key's
//! bytes never exist outside it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::{Zeroize, Zeroizing};

use crate::root::RootKey;
use crate::{CryptoError, SecretBytes};

const LABEL_PREFIX: &str = "keyplane-master-";

/// Where the token is and how to log in.
pub struct Pkcs11Config {
    /// The PKCS#11 library (e.g. SoftHSM2's `libsofthsm2.so`).
    pub module: PathBuf,
    /// The label of the token holding the master key.
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .finish()
    }
}

/// One initialised context per module for the whole process. `C_Initialize` is process-wide, and
/// dropping the last context would unload the library without `C_Finalize`; kept loaded, a
/// token can be closed and opened again (seal, unseal) on the same initialised library.
fn module(path: &Path) -> Result<Pkcs11, CryptoError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(context) = modules.get(path) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(path).map_err(|e| {
        CryptoError::Io(format!(
            "cannot load the PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    // The library may use its own threads and locks: the server calls it from several.
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Initialised by someone else in this process (another path to the same library).
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(token_err("initialisation", &e)),
    }
    modules.insert(path.to_owned(), context.clone());
    Ok(context)
}

fn token_err(what: &str, e: &Pkcs11Error) -> CryptoError {
    CryptoError::Io(format!("PKCS#11 {what}: {e}"))
}

/// A logged-in session with the token. The session is shared (PKCS#11 sessions are not to be
/// used from two threads at once), so calls are serialised; they are few: a vault key is
/// unwrapped once and then kept in memory.
pub struct Pkcs11Token {
    session: Arc<Mutex<Session>>,
}

impl Pkcs11Token {
    /// Loads the module, finds the token by label, and logs in as its user.
    pub fn open(config: &Pkcs11Config) -> Result<Self, CryptoError> {
        let context = module(&config.module)?;
        let slots = context
            .get_slots_with_token()
            .map_err(|e| token_err("slot list", &e))?;
        let slot = slots
            .into_iter()
            .find(|slot| {
                context
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.label().trim_end() == config.token_label)
            })
            .ok_or_else(|| {
                CryptoError::Io(format!(
                    "no PKCS#11 token is labelled '{}'",
                    config.token_label
                ))
            })?;
        let session = context
            .open_rw_session(slot)
            .map_err(|e| token_err("session", &e))?;
        let pin = AuthPin::new(config.pin.as_str().into());
        session
            .login(UserType::User, Some(&pin))
            .map_err(|e| match e {
                // Login is per process, not per session. Taking the existing login would skip the
                // PIN check; logging out and in again would strand the other token's handles.
                Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _) => CryptoError::Io(format!(
                    "the PKCS#11 token '{}' is already open in this process; close it first",
                    config.token_label
                )),
                e => CryptoError::InvalidKeyMaterial(format!("the token refused the PIN: {e}")),
            })?;
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
        })
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    fn root(&self, id: &str, handle: ObjectHandle) -> Pkcs11RootKey {
        Pkcs11RootKey {
            id: id.to_owned(),
            handle,
            session: self.session.clone(),
        }
    }

    /// Makes a new master key inside the token: persistent, sensitive, never extractable, usable
    /// only to wrap and unwrap keys. Fails if the token already holds a master key `id`.
    pub fn generate_root(&self, id: &str) -> Result<Pkcs11RootKey, CryptoError> {
        let session = self.session();
        // Two keys under one id would make `find_root` ambiguous.
        if !find(&session, id)?.is_empty() {
            return Err(CryptoError::Generate(format!(
                "the token already holds master key '{id}'"
            )));
        }
        let template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label(id)),
            Attribute::Id(id.as_bytes().to_vec()),
        ];
        let handle = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| token_err("master key generation", &e))?;
        drop(session);
        Ok(self.root(id, handle))
    }

    /// The master key `id`, if the token holds it.
    pub fn find_root(&self, id: &str) -> Result<Option<Pkcs11RootKey>, CryptoError> {
        let found = find(&self.session(), id)?;
        Ok(found.first().map(|h| self.root(id, *h)))
    }

    /// Destroys the master key `id` (after a rotation retired it); absent is fine.
    pub fn destroy_root(&self, id: &str) -> Result<(), CryptoError> {
        let session = self.session();
        for handle in find(&session, id)? {
            session
                .destroy_object(handle)
                .map_err(|e| token_err("master key destruction", &e))?;
        }
        Ok(())
    }
}

fn lock(session: &Mutex<Session>) -> MutexGuard<'_, Session> {
    // A panic mid-call leaves nothing half-done on our side; the token keeps its own state.
    session.lock().unwrap_or_else(|e| e.into_inner())
}

fn label(id: &str) -> Vec<u8> {
    format!("{LABEL_PREFIX}{id}").into_bytes()
}

fn find(session: &Session, id: &str) -> Result<Vec<ObjectHandle>, CryptoError> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Id(id.as_bytes().to_vec()),
            Attribute::Label(label(id)),
        ])
        .map_err(|e| token_err("object search", &e))
}

/// A master key inside the token. It shares the token's session, which stays open while either
/// lives.
pub struct Pkcs11RootKey {
    id: String,
    handle: ObjectHandle,
    session: Arc<Mutex<Session>>,
}

impl Pkcs11RootKey {
    /// The key's handle, for inspecting its attributes.
    pub fn handle(&self) -> ObjectHandle {
        self.handle
    }
}

/// A session object (never stored in the token) destroyed when dropped, on every path.
struct SessionKey<'a> {
    session: &'a Session,
    handle: ObjectHandle,
}

impl Drop for SessionKey<'_> {
    fn drop(&mut self) {
        // Nothing to do on failure: a session object dies with its session anyway.
        let _ = self.session.destroy_object(self.handle);
    }
}

/// What a vault key is while the token handles it: a short-lived, extractable session object.
fn session_key_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ]
}

impl RootKey for Pkcs11RootKey {
    fn id(&self) -> &str {
        &self.id
    }

    /// RFC 5649 by the token. `context` is not bound here (key wrap has no associated data): the
    /// vault binding is enforced by the AES-GCM associated data of everything sealed under the
    /// vault key.
    fn wrap(&self, key: &[u8], _context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        // SoftHSM2 zero-pads other lengths to whole blocks before wrapping, so they would come
        // back longer than they went in. Vault keys are 32 bytes.
        if key.is_empty() || !key.len().is_multiple_of(8) {
            return Err(CryptoError::InvalidKeyLength);
        }
        let session = lock(&self.session);
        let mut template = session_key_template();
        template.push(Attribute::Value(key.to_vec()));
        let created = session
            .create_object(&template)
            .map_err(|e| token_err("vault key import", &e));
        if let Some(Attribute::Value(v)) = template.last_mut() {
            v.zeroize();
        }
        let object = SessionKey {
            session: &session,
            handle: created?,
        };
        session
            .wrap_key(&Mechanism::AesKeyWrapPad, self.handle, object.handle)
            .map_err(|e| token_err("vault key wrap", &e))
    }

    fn unwrap(&self, wrapped: &[u8], _context: &[u8]) -> Result<SecretBytes, CryptoError> {
        let session = lock(&self.session);
        let handle = session
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                self.handle,
                wrapped,
                &session_key_template(),
            )
            .map_err(|_| CryptoError::Decrypt)?;
        let object = SessionKey {
            session: &session,
            handle,
        };
        let attributes = session
            .get_attributes(object.handle, &[AttributeType::Value])
            .map_err(|e| token_err("vault key read", &e))?;
        let mut value = None;
        for attribute in attributes {
            match attribute {
                Attribute::Value(v) if value.is_none() => value = Some(SecretBytes::new(v)),
                Attribute::Value(mut v) => v.zeroize(),
                _ => {}
            }
        }
        value.ok_or(CryptoError::Decrypt)
    }
}
