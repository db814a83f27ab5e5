//! The key hierarchy and its seal: seal key (per mode) → master key → per-vault keys →
//! material. While sealed nothing below the seal is in memory and key operations answer
//! `sealed`.
//!
//! Software master keys are stored in the database sealed under the seal key; a PKCS#11 master
//! key lives in its token and the database only names it. A rotation adds a master key, rewraps
//! every vault key under it and retires the old one; vault keys themselves (and therefore all
//! material) are untouched, so keys stay usable throughout.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use keyplane_core::error::{Error, ErrorCode, Result};
use keyplane_core::model::SealedMaterial;
use keyplane_core::ports::{
    MasterKeyRotation, MaterialBinding, SealStatus, Store, StoredRootKey, UnsealSecret,
    WrappedVaultKey,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::pkcs11::{Pkcs11Config, Pkcs11Token};
use crate::root::{RootKey, SoftwareRootKey};
use crate::shamir::{ShamirConfig, ShareError, UnsealProgress};
use crate::{CryptoError, MasterKey, load_or_create_dev_master_key};

/// Settings the hierarchy records in the store.
pub const SEAL_TYPE_SETTING: &str = "seal_type";
/// The passphrase seal's master key, sealed under the passphrase: in the database, so every
/// node sharing it opens the same hierarchy.
pub const PASSPHRASE_SEAL_SETTING: &str = "passphrase_sealed_master_key";
pub const SHAMIR_SETTING: &str = "shamir_seal";
/// Written by releases before vault keys: the check value of the key that sealed all material.
const LEGACY_CHECK_SETTING: &str = "master_key_check_value";

/// Where the seal key comes from.
pub enum SealMode {
    /// A plain key file in the data directory: development only.
    Dev { key_file: PathBuf },
    /// Sealed under a key derived from a passphrase; without one configured, the server starts
    /// sealed and waits for it through the unseal API.
    Passphrase {
        sealed_file: PathBuf,
        passphrase: Option<Zeroizing<String>>,
    },
    /// Split among custodians; always starts sealed.
    Shamir,
    /// The master key is inside a PKCS#11 token.
    Pkcs11(Pkcs11Config),
    /// A seal key that exists only in this process (tests and throw-away servers).
    Ephemeral,
}

impl SealMode {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dev { .. } => "dev",
            Self::Passphrase { .. } => "passphrase",
            Self::Shamir => "shamir",
            Self::Pkcs11(_) => "pkcs11",
            Self::Ephemeral => "ephemeral",
        }
    }
}

/// What unlocks the master keys.
#[derive(Clone)]
enum Unlocker {
    SealKey(Arc<MasterKey>),
    Token(Arc<Pkcs11Token>),
}

/// Everything in memory while unsealed.
struct Unsealed {
    unlocker: Unlocker,
    current: Arc<dyn RootKey>,
    roots: HashMap<String, Arc<dyn RootKey>>,
    vault_keys: HashMap<Uuid, Arc<MasterKey>>,
    /// Opened AES-256 material of keys in data-plane use, by (key, version): a wrap then costs
    /// no unsealing. Forgotten on seal and when the key is destroyed.
    ciphers: HashMap<(Uuid, u32), Arc<MasterKey>>,
}

/// Bound of the opened-material cache; it is emptied when full (keys in use come back at once).
const MAX_OPEN_CIPHERS: usize = 4096;

#[derive(Default)]
struct State {
    unsealed: Option<Unsealed>,
    progress: UnsealProgress,
}

pub struct KeyHierarchy {
    store: Arc<dyn Store>,
    mode: SealMode,
    shamir: Option<ShamirConfig>,
    ephemeral_seal_key: Option<Arc<MasterKey>>,
    state: RwLock<State>,
    rotation: tokio::sync::Mutex<()>,
    /// Keys whose material was forgotten (destroyed) lately, with when: a data-plane call that
    /// read the material before the destroy and opens it after must not put it back in memory.
    forgotten: Mutex<HashMap<Uuid, Instant>>,
}

/// How long a destroyed key is remembered as such: longer than any call that read its material
/// before the destroy can still be running.
const FORGOTTEN_FOR: Duration = Duration::from_secs(600);

fn vault_context(vault_id: Uuid) -> Vec<u8> {
    format!("keyplane-vault-key:v1:{vault_id}").into_bytes()
}

fn crypto_err(e: CryptoError) -> Error {
    Error::internal(format!("crypto: {e}"))
}

fn blocking_err(e: tokio::task::JoinError) -> Error {
    Error::internal(format!("seal task: {e}"))
}

fn new_root_id() -> String {
    Uuid::now_v7().simple().to_string()
}

fn unseal_refused(field: &str, message: impl Into<String>) -> Error {
    Error::invalid_field(field, message)
}

impl KeyHierarchy {
    /// Opens the hierarchy over `store` and unseals it when the mode allows (every mode but
    /// `shamir`, and `passphrase` without a passphrase). Refuses a store sealed with another mode
    /// or another seal key.
    pub async fn start(store: Arc<dyn Store>, mode: SealMode) -> Result<Arc<Self>> {
        let recorded = store.get_setting(SEAL_TYPE_SETTING).await?;
        if let Some(recorded) = &recorded
            && recorded != mode.name()
        {
            return Err(Error::internal(format!(
                "this database is sealed with the {recorded} seal; start with KEYPLANE_SEAL={recorded}"
            )));
        }
        let shamir = match &mode {
            SealMode::Shamir => {
                let text = store.get_setting(SHAMIR_SETTING).await?.ok_or_else(|| {
                    Error::internal(
                        "the shamir seal is not initialised: run `keyplane admin init --shares N --threshold K` first",
                    )
                })?;
                Some(ShamirConfig::parse(&text).map_err(crypto_err)?)
            }
            _ => None,
        };
        let ephemeral_seal_key = match &mode {
            SealMode::Ephemeral => Some(Arc::new(MasterKey::generate().map_err(crypto_err)?)),
            _ => None,
        };
        let hierarchy = Arc::new(Self {
            store,
            mode,
            shamir,
            ephemeral_seal_key,
            state: RwLock::new(State::default()),
            rotation: tokio::sync::Mutex::new(()),
            forgotten: Mutex::default(),
        });
        let automatic = match &hierarchy.mode {
            SealMode::Shamir
            | SealMode::Passphrase {
                passphrase: None, ..
            } => None,
            SealMode::Passphrase {
                passphrase: Some(p),
                ..
            } => Some(UnsealSecret::Passphrase(p.clone())),
            SealMode::Pkcs11(config) => Some(UnsealSecret::Pin(config.pin.clone())),
            SealMode::Dev { .. } | SealMode::Ephemeral => Some(UnsealSecret::Nothing),
        };
        if let Some(secret) = automatic {
            hierarchy.unseal_with(secret).await?;
        }
        // Recorded only once the mode has opened the database: a start with the wrong mode or
        // secret leaves nothing behind that would refuse the right one.
        if recorded.is_none() {
            hierarchy
                .store
                .put_setting(SEAL_TYPE_SETTING, hierarchy.mode.name())
                .await?;
        }
        Ok(hierarchy)
    }

    /// Records a new Shamir split in `store` (the key ceremony). Refuses a store that already
    /// has a seal.
    pub async fn init_shamir(
        store: &dyn Store,
        threshold: u8,
        shares: u8,
    ) -> Result<Vec<Zeroizing<String>>> {
        if let Some(recorded) = store.get_setting(SEAL_TYPE_SETTING).await? {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                format!("this database is already initialised with the {recorded} seal"),
            ));
        }
        if !store.root_keys().await?.is_empty()
            || store.get_setting(LEGACY_CHECK_SETTING).await?.is_some()
        {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                "this database already has a master key under another seal",
            ));
        }
        let (_seal_key, printed, config) = crate::shamir::split(threshold, shares)
            .map_err(|e| Error::invalid_field("shares", e.to_string()))?;
        store.put_setting(SHAMIR_SETTING, &config.render()).await?;
        store.put_setting(SEAL_TYPE_SETTING, "shamir").await?;
        Ok(printed)
    }

    pub fn status(&self) -> SealStatus {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        SealStatus {
            sealed: state.unsealed.is_none(),
            seal_type: self.mode.name().to_owned(),
            threshold: self.shamir.as_ref().map(|c| c.threshold),
            shares: self.shamir.as_ref().map(|c| c.shares),
            progress: self.shamir.as_ref().map(|_| state.progress.count()),
            master_key_id: state.unsealed.as_ref().map(|u| u.current.id().to_owned()),
        }
    }

    pub fn sealed(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .unsealed
            .is_none()
    }

    pub fn seal_now(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Dropping zeroizes every key; dropping the token logs its session out.
        state.unsealed = None;
        state.progress.reset();
    }

    pub async fn unseal_with(&self, secret: UnsealSecret) -> Result<SealStatus> {
        if self.status().sealed {
            let unlocker = self.unlocker(secret).await?;
            if let Some(unlocker) = unlocker {
                let unsealed = self.activate(unlocker).await?;
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                if state.unsealed.is_none() {
                    state.unsealed = Some(unsealed);
                }
            }
        } else {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                "keyplane is not sealed",
            ));
        }
        Ok(self.status())
    }

    /// Opens the passphrase seal's master key, kept sealed in the database so that every node
    /// opens the same one; the first unseal of a deployment makes it (a file an earlier release
    /// kept in the data directory moves into the database instead).
    async fn open_passphrase_seal(
        &self,
        legacy_file: &std::path::Path,
        passphrase: zeroize::Zeroizing<String>,
    ) -> Result<MasterKey> {
        let refused = |e: CryptoError| unseal_refused("passphrase", e.to_string());
        let stored = match self.store.get_setting(PASSPHRASE_SEAL_SETTING).await? {
            Some(text) => text,
            None => {
                let text = match std::fs::read_to_string(legacy_file) {
                    Ok(text) => text,
                    // A deployment whose master keys exist was sealed by something else: a new
                    // sealed key here would lock it out for good.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && (!self.store.root_keys().await?.is_empty()
                                || self
                                    .store
                                    .get_setting(LEGACY_CHECK_SETTING)
                                    .await?
                                    .is_some()) =>
                    {
                        return Err(unseal_refused(
                            "passphrase",
                            "this database's master key was not sealed under a passphrase kept in it; move the deployment's sealed master key in (keyplane admin migrate-store does) before unsealing",
                        ));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let p = passphrase.clone();
                        let (_, text) = tokio::task::spawn_blocking(move || {
                            crate::passphrase::seal_new_master_key(p.as_bytes())
                        })
                        .await
                        .map_err(blocking_err)?
                        .map_err(refused)?;
                        text
                    }
                    Err(e) => {
                        return Err(Error::internal(format!(
                            "reading the sealed master key file {}: {e}",
                            legacy_file.display()
                        )));
                    }
                };
                // Another node starting at the same moment may have stored its own first: every
                // node opens the one stored.
                self.store
                    .insert_setting(PASSPHRASE_SEAL_SETTING, &text)
                    .await?
            }
        };
        tokio::task::spawn_blocking(move || {
            crate::passphrase::open_sealed_master_key(
                &stored,
                "the database",
                passphrase.as_bytes(),
            )
        })
        .await
        .map_err(blocking_err)?
        .map_err(refused)
    }

    /// Turns an operator's secret into what unlocks the master keys; `None` while a Shamir
    /// unseal still needs shares.
    async fn unlocker(&self, secret: UnsealSecret) -> Result<Option<Unlocker>> {
        let wrong_kind = |expected: &str| {
            unseal_refused(
                expected,
                format!(
                    "the {} seal is unsealed with `{expected}`",
                    self.mode.name()
                ),
            )
        };
        match (&self.mode, secret) {
            (SealMode::Ephemeral, UnsealSecret::Nothing) => {
                Ok(self.ephemeral_seal_key.clone().map(Unlocker::SealKey))
            }
            (SealMode::Dev { key_file }, UnsealSecret::Nothing) => {
                let key_file = key_file.clone();
                let (key, _) =
                    tokio::task::spawn_blocking(move || load_or_create_dev_master_key(&key_file))
                        .await
                        .map_err(blocking_err)?
                        .map_err(|e| Error::internal(format!("dev seal: {e}")))?;
                Ok(Some(Unlocker::SealKey(Arc::new(key))))
            }
            (SealMode::Passphrase { sealed_file, .. }, UnsealSecret::Passphrase(passphrase)) => {
                let key = self.open_passphrase_seal(sealed_file, passphrase).await?;
                Ok(Some(Unlocker::SealKey(Arc::new(key))))
            }
            (SealMode::Shamir, UnsealSecret::Share(share)) => {
                let config = self
                    .shamir
                    .as_ref()
                    .ok_or_else(|| Error::internal("shamir seal without its record"))?;
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                match state.progress.submit(config, &share) {
                    Ok(Some(key)) => Ok(Some(Unlocker::SealKey(Arc::new(key)))),
                    Ok(None) => Ok(None),
                    Err(e @ ShareError::Unknown) => {
                        // A combination that does not rebuild the key must not linger.
                        if state.progress.count() >= config.threshold {
                            state.progress.reset();
                        }
                        Err(unseal_refused("key", e.to_string()))
                    }
                    Err(e) => Err(unseal_refused("key", e.to_string())),
                }
            }
            (SealMode::Pkcs11(config), UnsealSecret::Pin(pin)) => {
                let config = Pkcs11Config {
                    module: config.module.clone(),
                    token_label: config.token_label.clone(),
                    pin,
                };
                let token = tokio::task::spawn_blocking(move || Pkcs11Token::open(&config))
                    .await
                    .map_err(blocking_err)?
                    .map_err(|e| unseal_refused("pin", e.to_string()))?;
                Ok(Some(Unlocker::Token(Arc::new(token))))
            }
            (SealMode::Passphrase { .. }, _) => Err(wrong_kind("passphrase")),
            (SealMode::Shamir, _) => Err(wrong_kind("key")),
            (SealMode::Pkcs11(_), _) => Err(wrong_kind("pin")),
            (SealMode::Dev { .. } | SealMode::Ephemeral, _) => Err(unseal_refused(
                "body",
                "the dev seal takes no secret: send an empty object",
            )),
        }
    }

    /// Opens (or, on a new database, creates) the master keys with `unlocker`.
    async fn activate(&self, unlocker: Unlocker) -> Result<Unsealed> {
        let stored = self.store.roots_or_adopt(&unlocker).await?;
        let mut roots: HashMap<String, Arc<dyn RootKey>> = HashMap::new();
        for root in &stored {
            roots.insert(root.id.clone(), open_root(&unlocker, root).await?);
        }
        let current = match stored.last() {
            Some(newest) => roots[&newest.id].clone(),
            None => {
                let (root, record) = create_root(&unlocker).await?;
                self.store.insert_root_key(&record).await?;
                roots.insert(record.id.clone(), root.clone());
                root
            }
        };
        Ok(Unsealed {
            unlocker,
            current,
            roots,
            vault_keys: HashMap::new(),
            ciphers: HashMap::new(),
        })
    }

    /// The vault's key, if it is open in memory. `Sealed` while sealed.
    pub(crate) fn vault_key(&self, vault_id: Uuid) -> Result<Option<Arc<MasterKey>>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let unsealed = state.unsealed.as_ref().ok_or(Error::Sealed)?;
        Ok(unsealed.vault_keys.get(&vault_id).cloned())
    }

    /// The vault's key, which must have been opened.
    pub(crate) fn opened_vault_key(&self, vault_id: Uuid) -> Result<Arc<MasterKey>> {
        self.vault_key(vault_id)?
            .ok_or_else(|| Error::internal(format!("the key of vault {vault_id} is not open")))
    }

    /// An AES-256 key's material as a GCM cipher, opened once and then served from memory.
    pub(crate) fn material_cipher(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
    ) -> Result<Arc<MasterKey>> {
        let slot = (binding.key_id, binding.version);
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let unsealed = state.unsealed.as_ref().ok_or(Error::Sealed)?;
            if let Some(cipher) = unsealed.ciphers.get(&slot) {
                return Ok(cipher.clone());
            }
        }
        let plain = self
            .opened_vault_key(binding.vault_id)?
            .open(&material.sealed, &binding.aad())
            .map_err(crypto_err)?;
        let cipher =
            Arc::new(MasterKey::from_bytes(plain.expose()).map_err(|_| {
                Error::invalid_field("key", "only AES-256 keys can wrap data keys")
            })?);
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Checked under the state lock `forget_material` also takes: a forget either came
        // before (and is seen here) or comes after (and removes what is cached here).
        if self.was_forgotten(binding.key_id) {
            return Ok(cipher);
        }
        let unsealed = state.unsealed.as_mut().ok_or(Error::Sealed)?;
        if unsealed.ciphers.len() >= MAX_OPEN_CIPHERS {
            unsealed.ciphers.clear();
        }
        unsealed.ciphers.insert(slot, cipher.clone());
        Ok(cipher)
    }

    fn was_forgotten(&self, key_id: Uuid) -> bool {
        self.forgotten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key_id)
    }

    /// Drops every opened version of a key (it was destroyed), and keeps any call still
    /// running from opening it into memory again.
    pub fn forget_material(&self, key_id: Uuid) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        {
            let mut forgotten = self.forgotten.lock().unwrap_or_else(|e| e.into_inner());
            forgotten.retain(|_, at| at.elapsed() < FORGOTTEN_FOR);
            forgotten.insert(key_id, Instant::now());
        }
        if let Some(unsealed) = state.unsealed.as_mut() {
            unsealed.ciphers.retain(|(k, _), _| *k != key_id);
        }
    }

    /// Whether any version of the key's material is held opened in memory.
    pub fn holds_opened_material(&self, key_id: Uuid) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .unsealed
            .as_ref()
            .is_some_and(|u| u.ciphers.keys().any(|(k, _)| *k == key_id))
    }

    pub async fn open_vault_key(&self, vault_id: Uuid) -> Result<()> {
        if self.vault_key(vault_id)?.is_some() {
            return Ok(());
        }
        let stored = match self.store.vault_key(vault_id).await? {
            Some(k) => k,
            None => {
                // Under the deployment's newest master key, wherever it was made.
                self.open_new_roots().await?;
                let fresh = MasterKey::generate().map_err(crypto_err)?;
                let wrapped = self.wrap_under_current(vault_id, &fresh)?;
                self.store.insert_vault_key(&wrapped).await?
            }
        };
        // A rotation (on this node or another sharing the database) may have retired the root
        // between reading the row and unwrapping it, or made one this node has not opened: the
        // row read again names the new root, opened from the store.
        let key = match self.unwrap_vault_key(&stored) {
            Err(Error::Internal(_)) => {
                self.open_new_roots().await?;
                let again = self
                    .store
                    .vault_key(vault_id)
                    .await?
                    .ok_or_else(|| Error::internal("vault key vanished"))?;
                self.unwrap_vault_key(&again)?
            }
            other => other?,
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let unsealed = state.unsealed.as_mut().ok_or(Error::Sealed)?;
        unsealed.vault_keys.entry(vault_id).or_insert(key);
        Ok(())
    }

    /// Opens the master keys stored since this node unsealed (another node's first unseal or
    /// rotation, on a shared database) and makes the newest the one new vault keys go under.
    async fn open_new_roots(&self) -> Result<()> {
        let (unlocker, known): (Unlocker, Vec<String>) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let unsealed = state.unsealed.as_ref().ok_or(Error::Sealed)?;
            (
                unsealed.unlocker.clone(),
                unsealed.roots.keys().cloned().collect(),
            )
        };
        let stored = self.store.root_keys().await?;
        let mut opened = Vec::new();
        for root in stored.iter().filter(|r| !known.contains(&r.id)) {
            opened.push((root.id.clone(), open_root(&unlocker, root).await?));
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let unsealed = state.unsealed.as_mut().ok_or(Error::Sealed)?;
        unsealed.roots.extend(opened);
        if let Some(newest) = stored.last().and_then(|r| unsealed.roots.get(&r.id)) {
            unsealed.current = newest.clone();
        }
        Ok(())
    }

    fn wrap_under_current(&self, vault_id: Uuid, key: &MasterKey) -> Result<WrappedVaultKey> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let unsealed = state.unsealed.as_ref().ok_or(Error::Sealed)?;
        Ok(WrappedVaultKey {
            vault_id,
            root_id: unsealed.current.id().to_owned(),
            wrapped: unsealed
                .current
                .wrap(key.expose_bytes(), &vault_context(vault_id))
                .map_err(crypto_err)?,
        })
    }

    fn unwrap_vault_key(&self, stored: &WrappedVaultKey) -> Result<Arc<MasterKey>> {
        let root = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let unsealed = state.unsealed.as_ref().ok_or(Error::Sealed)?;
            unsealed
                .roots
                .get(&stored.root_id)
                .cloned()
                .ok_or_else(|| {
                    Error::internal(format!("master key {} is not open", stored.root_id))
                })?
        };
        let plain = root
            .unwrap(&stored.wrapped, &vault_context(stored.vault_id))
            .map_err(|e| {
                Error::internal(format!(
                    "the key of vault {} does not open under master key {}: {e}",
                    stored.vault_id, stored.root_id
                ))
            })?;
        Ok(Arc::new(
            MasterKey::from_bytes(plain.expose()).map_err(crypto_err)?,
        ))
    }

    pub async fn rotate(&self) -> Result<MasterKeyRotation> {
        let _one_at_a_time = self.rotation.lock().await;
        let (previous, unlocker_root) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let unsealed = state.unsealed.as_ref().ok_or(Error::Sealed)?;
            let unlocker = match &unsealed.unlocker {
                Unlocker::SealKey(k) => Unlocker::SealKey(k.clone()),
                Unlocker::Token(t) => Unlocker::Token(t.clone()),
            };
            (unsealed.current.id().to_owned(), unlocker)
        };
        let (new_root, record) = create_root(&unlocker_root).await?;
        self.store.insert_root_key(&record).await?;
        let old_roots: Vec<(String, Arc<dyn RootKey>)> = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let unsealed = state.unsealed.as_mut().ok_or(Error::Sealed)?;
            unsealed.roots.insert(record.id.clone(), new_root.clone());
            unsealed.current = new_root.clone();
            unsealed
                .roots
                .iter()
                .filter(|(id, _)| **id != record.id)
                .map(|(id, r)| (id.clone(), r.clone()))
                .collect()
        };
        let mut rewrapped_vaults = std::collections::HashSet::new();
        for (old_id, old_root) in old_roots {
            let mut retired = false;
            // New vault keys go under the new root from now on; the loop only repeats for a vault
            // key created under the old root just before the switch.
            for _ in 0..5 {
                let keys = self.store.vault_keys_under(&old_id).await?;
                let rewrapped = keys
                    .iter()
                    .map(|k| {
                        let context = vault_context(k.vault_id);
                        let plain = old_root.unwrap(&k.wrapped, &context).map_err(crypto_err)?;
                        Ok(WrappedVaultKey {
                            vault_id: k.vault_id,
                            root_id: record.id.clone(),
                            wrapped: new_root
                                .wrap(plain.expose(), &context)
                                .map_err(crypto_err)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                retired = self.store.retire_root_key(&old_id, &rewrapped).await?;
                rewrapped_vaults.extend(rewrapped.iter().map(|k| k.vault_id));
                if retired {
                    break;
                }
            }
            if !retired {
                return Err(Error::internal(format!(
                    "master key {old_id} still wraps vault keys; run the rotation again"
                )));
            }
            let token = {
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                let unsealed = state.unsealed.as_mut().ok_or(Error::Sealed)?;
                unsealed.roots.remove(&old_id);
                match &unsealed.unlocker {
                    Unlocker::Token(t) => Some(t.clone()),
                    Unlocker::SealKey(_) => None,
                }
            };
            if let Some(token) = token {
                let id = old_id.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || token.destroy_root(&id))
                    .await
                    .map_err(blocking_err)?
                {
                    tracing::warn!(master_key = %old_id, error = %e, "the retired master key is still in the token");
                }
            }
        }
        Ok(MasterKeyRotation {
            previous_master_key_id: previous,
            master_key_id: record.id,
            vault_keys_rewrapped: rewrapped_vaults.len(),
        })
    }
}

/// Opens one stored master key.
async fn open_root(unlocker: &Unlocker, stored: &StoredRootKey) -> Result<Arc<dyn RootKey>> {
    match (unlocker, &stored.sealed) {
        (Unlocker::SealKey(seal_key), Some(sealed)) => {
            let root = SoftwareRootKey::open_sealed(stored.id.clone(), sealed, seal_key)
                .map_err(|_| {
                    unseal_refused(
                        "seal",
                        "the seal key does not open this database's master key (a different key file, passphrase or set of shares)",
                    )
                })?;
            Ok(Arc::new(root))
        }
        (Unlocker::Token(token), None) => {
            let token = token.clone();
            let id = stored.id.clone();
            let found = tokio::task::spawn_blocking(move || token.find_root(&id))
                .await
                .map_err(blocking_err)?
                .map_err(crypto_err)?;
            let root = found.ok_or_else(|| {
                Error::internal(format!(
                    "master key {} is not in the PKCS#11 token; is this the token the database was created with?",
                    stored.id
                ))
            })?;
            Ok(Arc::new(root))
        }
        _ => Err(Error::internal(format!(
            "master key {} was made under another seal mode",
            stored.id
        ))),
    }
}

/// Makes a new master key where the unlocker keeps them.
async fn create_root(unlocker: &Unlocker) -> Result<(Arc<dyn RootKey>, StoredRootKey)> {
    let id = new_root_id();
    let created_at = chrono::Utc::now();
    match unlocker {
        Unlocker::SealKey(seal_key) => {
            let root = SoftwareRootKey::generate(id.clone()).map_err(crypto_err)?;
            let sealed = root.seal_under(seal_key).map_err(crypto_err)?;
            Ok((
                Arc::new(root),
                StoredRootKey {
                    id,
                    sealed: Some(sealed),
                    created_at,
                },
            ))
        }
        Unlocker::Token(token) => {
            let token = token.clone();
            let root_id = id.clone();
            let root = tokio::task::spawn_blocking(move || token.generate_root(&root_id))
                .await
                .map_err(blocking_err)?
                .map_err(crypto_err)?;
            Ok((
                Arc::new(root),
                StoredRootKey {
                    id,
                    sealed: None,
                    created_at,
                },
            ))
        }
    }
}

/// Databases written before vault keys existed sealed all material directly under the key
/// their seal opens. That key is adopted as the first master key *and* as the key of every
/// existing vault, so old material opens unchanged; new vaults get fresh keys, and the next
/// rotation moves everything under a fresh master key.
#[async_trait::async_trait]
trait AdoptLegacy {
    async fn roots_or_adopt(&self, unlocker: &Unlocker) -> Result<Vec<StoredRootKey>>;
}

#[async_trait::async_trait]
impl AdoptLegacy for Arc<dyn Store> {
    async fn roots_or_adopt(&self, unlocker: &Unlocker) -> Result<Vec<StoredRootKey>> {
        let roots = self.root_keys().await?;
        let legacy_check = self.get_setting(LEGACY_CHECK_SETTING).await?;
        let Some(check) = legacy_check else {
            return Ok(roots);
        };
        // An adoption cut short (a crash between its writes) is finished on the next start:
        // every vault without a key gets the legacy key, never a fresh one its material would
        // not open under.
        let legacy_root = roots.iter().any(|r| r.id.starts_with("legacy-"));
        if !roots.is_empty() && !legacy_root {
            return Ok(roots);
        }
        let Unlocker::SealKey(seal_key) = unlocker else {
            return Err(Error::internal(
                "this database's material was sealed before the PKCS#11 seal existed; start it with its original seal",
            ));
        };
        if seal_key.key_check_value() != check {
            return Err(unseal_refused(
                "seal",
                "the master key does not match the one this database was sealed with",
            ));
        }
        let legacy = SoftwareRootKey::new(
            format!("legacy-{}", check.to_lowercase()),
            MasterKey::from_bytes(seal_key.expose_bytes()).map_err(crypto_err)?,
        );
        let record = StoredRootKey {
            id: legacy.id().to_owned(),
            sealed: Some(legacy.seal_under(seal_key).map_err(crypto_err)?),
            created_at: chrono::Utc::now(),
        };
        if !legacy_root {
            self.insert_root_key(&record).await?;
        }
        let vaults = self.vault_ids().await?;
        for &vault_id in &vaults {
            self.insert_vault_key(&WrappedVaultKey {
                vault_id,
                root_id: record.id.clone(),
                wrapped: legacy
                    .wrap(seal_key.expose_bytes(), &vault_context(vault_id))
                    .map_err(crypto_err)?,
            })
            .await?;
        }
        tracing::info!(
            vaults = vaults.len(),
            "adopted the existing master key into the key hierarchy"
        );
        self.root_keys().await
    }
}
