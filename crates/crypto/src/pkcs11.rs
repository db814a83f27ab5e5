//! The `pkcs11` seal: the master key is a non-extractable AES-256 key inside a PKCS#11 token.
//! The token wraps and unwraps vault keys (`CKM_AES_KEY_WRAP_PAD`, RFC 5649); the master key's
//! bytes never exist outside it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

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

/// One initialised context per module for the whole process: a second context of the same
/// library would finalise it (and end every session) when dropped.
fn module(path: &std::path::Path) -> Result<Pkcs11, CryptoError> {
    static MODULES: std::sync::OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> =
        std::sync::OnceLock::new();
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
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(token_err("initialisation", &e)),
    }
    modules.insert(path.to_owned(), context.clone());
    Ok(context)
}

fn token_err(what: &str, e: &cryptoki::error::Error) -> CryptoError {
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
        session.login(UserType::User, Some(&pin)).map_err(|e| {
            CryptoError::InvalidKeyMaterial(format!(
                "the token refused the PIN ({e}); nothing was opened"
            ))
        })?;
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
        })
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn root(&self, id: &str, handle: ObjectHandle) -> Pkcs11RootKey {
        Pkcs11RootKey {
            id: id.to_owned(),
            handle,
            session: self.session.clone(),
        }
    }

    /// Makes a new master key inside the token: persistent, sensitive, never extractable, usable
    /// only to wrap and unwrap keys.
    pub fn generate_root(&self, id: &str) -> Result<Pkcs11RootKey, CryptoError> {
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
            Attribute::Label(format!("{LABEL_PREFIX}{id}").into_bytes()),
            Attribute::Id(id.as_bytes().to_vec()),
        ];
        let handle = self
            .session()
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| token_err("master key generation", &e))?;
        Ok(self.root(id, handle))
    }

    /// The master key `id`, if the token holds it.
    pub fn find_root(&self, id: &str) -> Result<Option<Pkcs11RootKey>, CryptoError> {
        let found = self
            .session()
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(format!("{LABEL_PREFIX}{id}").into_bytes()),
            ])
            .map_err(|e| token_err("object search", &e))?;
        Ok(found.first().map(|h| self.root(id, *h)))
    }

    /// Destroys the master key `id` (after a rotation retired it); absent is fine.
    pub fn destroy_root(&self, id: &str) -> Result<(), CryptoError> {
        if let Some(root) = self.find_root(id)? {
            self.session()
                .destroy_object(root.handle)
                .map_err(|e| token_err("master key destruction", &e))?;
        }
        Ok(())
    }
}

/// A master key inside the token.
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
        let _ = self.session.destroy_object(self.handle);
    }
}

/// What a vault key is while the token handles it: a short-lived, extractable session object.
fn session_key_template() -> [Attribute; 5] {
    [
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

    /// RFC 5649 by the token. `context` is not bound here: the vault binding is enforced by the
    /// AES-GCM associated data of everything sealed under the vault key.
    fn wrap(&self, key: &[u8], _context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let mut template = session_key_template().to_vec();
        template.push(Attribute::Value(key.to_vec()));
        let created = session
            .create_object(&template)
            .map_err(|e| token_err("vault key import", &e));
        if let Some(Attribute::Value(v)) = template.last_mut() {
            zeroize::Zeroize::zeroize(v);
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
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
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
        for attribute in attributes {
            if let Attribute::Value(v) = attribute {
                return Ok(SecretBytes::new(v));
            }
        }
        Err(CryptoError::Decrypt)
    }
}
