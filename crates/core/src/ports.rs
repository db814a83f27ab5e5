//! What `core` needs from the outside: a store and a key-material engine. Adapters implement
//! these; only the binary wires them together.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;
use crate::query::*;

/// Everything written for one managed key in one transaction.
#[derive(Debug, Clone, Default)]
pub struct KeyWrite {
    /// New material versions (sealed) to store.
    pub new_material: Vec<SealedMaterial>,
    /// State changes of existing versions.
    pub version_states: Vec<(u32, KeyState)>,
    /// Erase every stored material version of the key (destroy).
    pub erase_material: bool,
    /// Internal keystore copies to insert or replace.
    pub upsert_copies: Vec<InternalCopy>,
    /// Internal keystores whose copy of the key is removed.
    pub remove_copies_from: Vec<Uuid>,
    /// External keystores that must converge to the key's state: a task for each is queued in
    /// the same transaction (the outbox).
    pub converge_in: Vec<Uuid>,
}

/// A copy of a key in an external keystore, as keyplane recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCopy {
    pub keystore_id: Uuid,
    pub managed_key_id: Uuid,
    /// The keystore's id for it; `None` while an install is under way (a retry adopts what it finds).
    pub remote_id: Option<String>,
    pub label: String,
    /// The key version last transferred.
    pub installed_version: u32,
    pub enabled: bool,
}

/// One queued convergence of a key in an external keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoreTask {
    pub id: Uuid,
    pub keystore_id: Uuid,
    pub managed_key_id: Uuid,
    /// Attempts made before this one.
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    Done,
    /// Try again at `at`.
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    /// Given up (not retryable, or the retry budget is spent); a sync queues it again.
    Failed {
        error: String,
    },
}

/// What a finished attempt records, in one transaction.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub outcome: TaskOutcome,
    /// `Some(Some(copy))` records the copy, `Some(None)` forgets it.
    pub copy: Option<Option<ExternalCopy>>,
    /// The key's observed status in that keystore.
    pub status: Option<KeyStatusInKeystore>,
}

/// A task's state as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskView {
    pub id: Uuid,
    pub keystore_id: Uuid,
    pub managed_key_id: Uuid,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A hashed API token that may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub token_hash: String,
}

/// Persistence of every resource. Implementations enforce uniqueness (409 `duplicate_name`) and
/// optimistic concurrency: an update or delete carrying `revision` fails with `EtagMismatch`
/// unless the stored revision is the one the caller read.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> Result<()>;

    /// A counter that advances with every commit, before the committing caller is answered: what
    /// was read after observing a value is current while the counter still shows that value.
    fn commit_generation(&self) -> u64;

    /// Marks up to `limit` due tasks running and returns them; a key and keystore with a task
    /// already running are skipped.
    async fn claim_tasks(&self, limit: usize, now: DateTime<Utc>) -> Result<Vec<KeystoreTask>>;

    /// Records an attempt's outcome, the copy and the key's observed status together.
    async fn finish_task(&self, task: &KeystoreTask, result: TaskResult) -> Result<()>;

    /// Tasks left running by a stopped process become pending again.
    async fn requeue_interrupted_tasks(&self) -> Result<u64>;

    /// The most recent tasks of a keystore, newest first.
    async fn keystore_tasks(&self, keystore_id: Uuid, limit: u32) -> Result<Vec<TaskView>>;

    async fn external_copy(&self, keystore_id: Uuid, key_id: Uuid) -> Result<Option<ExternalCopy>>;
    /// Every external copy of a key, in the keystores it targets and in any it left.
    async fn external_copies_of_key(&self, key_id: Uuid) -> Result<Vec<ExternalCopy>>;

    /// The import token an internal keystore offers, if any (expired ones included).
    async fn import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>>;
    /// Replaces an internal keystore's import token.
    async fn save_import_token(&self, token: &ImportToken) -> Result<()>;
    /// Counts a retrieval of the keystore's token when it is live and has retrievals left, and
    /// returns it; `None` otherwise.
    async fn retrieve_import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>>;
    /// The copy an internal keystore holds under a label (the Key Protect alias), if any.
    async fn internal_copy_by_label(
        &self,
        keystore_id: Uuid,
        label: &str,
    ) -> Result<Option<InternalCopy>>;

    /// Records what a keystore was seen to hold for a key (not managed state: no revision change).
    async fn record_observed_status(
        &self,
        key_id: Uuid,
        status: &KeyStatusInKeystore,
    ) -> Result<()>;

    /// Records a copy before the remote work that creates it, so a retry recognises it.
    async fn save_external_copy(&self, copy: &ExternalCopy) -> Result<()>;

    async fn get_setting(&self, name: &str) -> Result<Option<String>>;
    async fn put_setting(&self, name: &str, value: &str) -> Result<()>;

    async fn insert_api_token(&self, token: &ApiToken) -> Result<()>;
    async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>>;
    async fn count_api_tokens(&self) -> Result<i64>;

    async fn insert_vault(&self, vault: &Vault) -> Result<()>;
    async fn get_vault(&self, id: Uuid) -> Result<Option<VaultView>>;
    /// `{id, name}` of a vault, without its counts (cheap; used when creating resources in it).
    async fn vault_ref(&self, id: Uuid) -> Result<Option<VaultRef>>;
    /// Saves `vault`, whose `revision` is already the new one; `read_revision` is the one read.
    async fn update_vault(&self, vault: &Vault, read_revision: i64) -> Result<()>;
    /// Deletes an empty vault together with its archived templates; `Conflict` when not empty.
    async fn delete_vault(&self, id: Uuid, read_revision: i64) -> Result<()>;
    async fn list_vaults(&self, query: &VaultQuery) -> Result<Page<VaultView>>;

    async fn insert_template(&self, template: &Template) -> Result<()>;
    async fn get_template(&self, id: Uuid) -> Result<Option<Template>>;
    /// The template a key is created from. `keys_count` is not computed here (left at 0): key
    /// creation does not need it, and counting would cost a scan per key.
    async fn find_template(&self, vault_id: Uuid, name: &str) -> Result<Option<Template>>;
    async fn update_template(&self, template: &Template, read_revision: i64) -> Result<()>;
    /// Deletes a template no key references; `Conflict` otherwise.
    async fn delete_template(&self, id: Uuid, read_revision: i64) -> Result<()>;
    async fn list_templates(&self, query: &TemplateQuery) -> Result<Page<Template>>;

    async fn insert_keystore(&self, keystore: &Keystore) -> Result<()>;
    async fn get_keystore(&self, id: Uuid) -> Result<Option<Keystore>>;
    async fn update_keystore(&self, keystore: &Keystore, read_revision: i64) -> Result<()>;
    async fn list_keystores(&self, query: &KeystoreQuery) -> Result<Page<Keystore>>;
    /// All keystores of one vault (distribution targets are resolved among them).
    async fn vault_keystores(&self, vault_id: Uuid) -> Result<Vec<Keystore>>;
    /// Deletes the keystore, with every copy it holds, and saves the keys that targeted it (each
    /// with the revision read), atomically.
    async fn delete_keystore(
        &self,
        id: Uuid,
        read_revision: i64,
        key_changes: &[(ManagedKey, i64)],
    ) -> Result<()>;

    /// Inserts (when `read_revision` is `None`) or updates a managed key with its material and copies.
    async fn save_managed_key(
        &self,
        key: &ManagedKey,
        read_revision: Option<i64>,
        write: &KeyWrite,
    ) -> Result<()>;
    async fn get_managed_key(&self, id: Uuid) -> Result<Option<ManagedKey>>;
    async fn delete_managed_key(&self, id: Uuid, read_revision: i64) -> Result<()>;
    async fn list_managed_keys(&self, query: &KeyQuery) -> Result<Page<ManagedKey>>;
    /// Every key (any state) whose distribution status names the keystore and is not removed.
    async fn keys_targeting_keystore(&self, keystore_id: Uuid) -> Result<Vec<ManagedKey>>;
    async fn key_versions(&self, key_id: Uuid) -> Result<Vec<KeyVersion>>;
    async fn internal_copies_of_key(&self, key_id: Uuid) -> Result<Vec<InternalCopy>>;
    /// The copy an internal keystore holds under `key_id_in_keystore`.
    async fn internal_copy(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
    ) -> Result<Option<InternalCopy>>;
    /// The copies an internal keystore holds, oldest first.
    async fn internal_copies_in_keystore(
        &self,
        keystore_id: Uuid,
        paging: Paging,
    ) -> Result<Page<InternalCopy>>;
    /// What the data plane needs about the key an internal keystore holds under
    /// `key_id_in_keystore`, with its newest material, in one read; `None` when there is none.
    async fn usage_context(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
    ) -> Result<Option<std::sync::Arc<crate::service::UsageContext>>>;
    /// Sealed material of one version; `None` when absent or erased (destroyed).
    async fn sealed_material(&self, key_id: Uuid, version: u32) -> Result<Option<SealedMaterial>>;

    /// Every master key on record (more than one only while a rotation is unfinished).
    async fn root_keys(&self) -> Result<Vec<StoredRootKey>>;
    async fn insert_root_key(&self, root: &StoredRootKey) -> Result<()>;
    async fn vault_key(&self, vault_id: Uuid) -> Result<Option<WrappedVaultKey>>;
    /// Stores a vault key unless the vault has one; returns the one stored.
    async fn insert_vault_key(&self, key: &WrappedVaultKey) -> Result<WrappedVaultKey>;
    async fn vault_keys_under(&self, root_id: &str) -> Result<Vec<WrappedVaultKey>>;
    /// In one transaction: replaces each vault key still wrapped under `from_root` with its
    /// rewrapped form, and deletes that root when no vault key is left under it. Returns whether
    /// the root was deleted.
    async fn retire_root_key(&self, from_root: &str, rewrapped: &[WrappedVaultKey])
    -> Result<bool>;
    /// Every vault's id (used once, when keys made before vault keys existed are adopted).
    async fn vault_ids(&self) -> Result<Vec<Uuid>>;

    /// Appends an event to the audit chain on its own (the failures, denials and reads the
    /// writes did not record).
    async fn append_audit_event(&self, event: crate::audit::AuditEvent) -> Result<()>;
    async fn list_audit_events(&self, query: &AuditQuery)
    -> Result<Page<crate::audit::AuditEvent>>;
    async fn verify_audit_chain(&self) -> Result<AuditChainReport>;

    /// 409 `duplicate_name` when the name is taken.
    async fn insert_principal(&self, principal: &Principal) -> Result<()>;
    async fn get_principal(&self, id: Uuid) -> Result<Option<Principal>>;
    async fn find_principal(&self, name: &str) -> Result<Option<Principal>>;
    async fn list_principals(&self, paging: crate::query::Paging) -> Result<Page<Principal>>;
    /// Deletes a principal and every API key it has.
    async fn delete_principal(&self, id: Uuid) -> Result<()>;
    async fn insert_api_key(&self, key: &ApiKey) -> Result<()>;
    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKey>>;
    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>>;
    async fn list_api_keys(&self, principal_id: Uuid) -> Result<Vec<ApiKey>>;
    /// Revokes `revoke` (still active) and, in the same transaction, adds `replacement`.
    async fn revoke_api_key(&self, revoke: Uuid, replacement: Option<&ApiKey>) -> Result<()>;
    /// 409 `duplicate_name` when the principal already has that role there.
    async fn insert_policy(&self, policy: &crate::authz::Policy) -> Result<()>;
    async fn delete_policy(&self, id: Uuid) -> Result<()>;
    async fn dual_control(&self, vault_id: Uuid) -> Result<bool>;
    async fn set_dual_control(&self, vault_id: Uuid, enabled: bool) -> Result<()>;
    async fn insert_approval(&self, approval: &Approval) -> Result<()>;
    async fn get_approval(&self, id: Uuid) -> Result<Option<Approval>>;
    /// Approvals in these vaults (empty: all), newest first.
    async fn list_approvals(&self, vault_ids: &[Uuid]) -> Result<Vec<Approval>>;
    /// Records a decision on a pending approval; `EtagMismatch`-like conflict when it was
    /// decided meanwhile.
    async fn decide_approval(&self, approval: &Approval) -> Result<()>;
    /// Puts an approval claimed for approving back to pending (its action could not be carried
    /// out); nothing when it is no longer approved.
    async fn reopen_approval(&self, id: Uuid) -> Result<()>;
    /// Policies of one principal, or of all.
    async fn list_policies(&self, principal_id: Option<Uuid>) -> Result<Vec<crate::authz::Policy>>;

    async fn pooled_key_count(&self, algorithm: Algorithm, size: u32) -> Result<u64>;
    async fn add_pooled_key(&self, key: &PooledKey) -> Result<()>;
    /// Removes and returns the oldest pooled key of a kind; no two callers get the same one.
    async fn take_pooled_key(&self, algorithm: Algorithm, size: u32) -> Result<Option<PooledKey>>;
}

/// A vault's data-encryption key as stored: wrapped under a master (root) key.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedVaultKey {
    pub vault_id: Uuid,
    /// The master key it is wrapped under.
    pub root_id: String,
    pub wrapped: Vec<u8>,
}

/// A master key as the store keeps it: sealed under the seal key (software), or only named
/// (a key that lives inside a PKCS#11 token).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredRootKey {
    pub id: String,
    pub sealed: Option<Vec<u8>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Pre-generated material (an RSA key pair) waiting in the pool, sealed under the pool's key.
#[derive(Clone)]
pub struct PooledKey {
    pub id: Uuid,
    pub algorithm: Algorithm,
    pub size: u32,
    pub sealed: Vec<u8>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Which audit events to list (oldest first).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub paging: crate::query::Paging,
    /// Only events after this position in the chain.
    pub after_seq: i64,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub initiator: Option<String>,
    pub vault_id: Option<Uuid>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl AuditQuery {
    /// The next events of the chain after position `seq`, as many as a page holds.
    pub fn after(seq: i64) -> Self {
        Self {
            paging: crate::query::Paging {
                limit: crate::query::MAX_LIMIT,
                offset: 0,
            },
            after_seq: seq,
            ..Self::default()
        }
    }
}

/// The result of walking the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditChainReport {
    /// Events verified (before the first broken link, if any).
    pub events: u64,
    /// Position of the first event that does not verify.
    pub first_broken: Option<i64>,
    pub reason: Option<String>,
    /// Hash of the last verified event.
    pub head: String,
}

impl AuditChainReport {
    pub fn broken(events: u64, seq: i64, reason: &str) -> Self {
        Self {
            events,
            first_broken: Some(seq),
            reason: Some(reason.to_owned()),
            head: String::new(),
        }
    }
}

/// Whether the engine can use keys, and how far an unseal has come.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SealStatus {
    pub sealed: bool,
    /// The seal mode: `dev`, `passphrase`, `shamir` or `pkcs11`.
    #[serde(rename = "type")]
    pub seal_type: String,
    /// Shares needed (shamir only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u8>,
    /// Shares made at initialisation (shamir only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares: Option<u8>,
    /// Valid shares submitted so far (shamir only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// The current master key's id, while unsealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_id: Option<String>,
}

/// What an operator submits to unseal.
pub enum UnsealSecret {
    /// One Shamir share.
    Share(zeroize::Zeroizing<String>),
    Passphrase(zeroize::Zeroizing<String>),
    /// The PKCS#11 user PIN.
    Pin(zeroize::Zeroizing<String>),
    /// Nothing: modes whose secret is on the host (dev).
    Nothing,
}

/// What a master key rotation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MasterKeyRotation {
    pub previous_master_key_id: String,
    pub master_key_id: String,
    pub vault_keys_rewrapped: usize,
}

/// How a key's material is generated and protected, and the seal over all of it. Plaintext never
/// leaves the implementation.
#[async_trait]
pub trait MaterialEngine: Send + Sync + 'static {
    fn seal_status(&self) -> SealStatus;

    fn is_sealed(&self) -> bool;

    /// Forgets anything opened from a key's material (the key was destroyed).
    fn forget_material(&self, key_id: Uuid);

    /// Takes one unseal secret; unseals once enough were given.
    async fn unseal(&self, secret: UnsealSecret) -> Result<SealStatus>;

    /// Forgets every key in memory at once; key operations answer `sealed` until an unseal.
    fn seal(&self);

    /// Makes a new master key and rewraps every vault key under it, online.
    async fn rotate_master_key(&self) -> Result<MasterKeyRotation>;

    /// Loads (or creates) the vault's data-encryption key. Every operation below on that vault's
    /// material needs it first.
    async fn open_vault(&self, vault_id: Uuid) -> Result<()>;

    /// Generates material for `(algorithm, size)` and returns it sealed under the master key,
    /// bound to `(vault, key, version)`.
    fn generate(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
    ) -> Result<SealedMaterial>;

    /// Opens sealed material and recomputes its verification patterns (proves it is intact).
    fn verify(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
        material: &SealedMaterial,
    ) -> Result<Vec<VerificationPattern>>;

    /// Seals connection secrets (JSON) of a keystore under its vault's key, bound to its id.
    fn seal_secrets(&self, vault_id: Uuid, keystore_id: Uuid, secrets: &[u8]) -> Result<Vec<u8>>;

    /// Opens what [`MaterialEngine::seal_secrets`] sealed with the same ids.
    fn open_secrets(
        &self,
        vault_id: Uuid,
        keystore_id: Uuid,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>>;

    /// Encrypts each plaintext (a data key) under an AES-256 key's material: AES-256-GCM with
    /// `aad`. The material is opened once for the whole batch.
    fn encrypt_with(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
        plaintexts: &[&[u8]],
        aad: &[u8],
    ) -> Result<Vec<Vec<u8>>>;

    /// Decrypts what `encrypt_with` produced; an item whose ciphertext or `aad` changed is `None`.
    fn decrypt_with(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
        ciphertexts: &[&[u8]],
        aad: &[u8],
    ) -> Result<Vec<Option<zeroize::Zeroizing<Vec<u8>>>>>;

    /// Generates material for the pool, sealed under the pool's key (the binding comes later).
    fn generate_pooled(&self, algorithm: Algorithm, size: u32) -> Result<PooledKey>;

    /// Reseals pooled material as `binding`'s material under its vault's key.
    fn adopt_pooled(&self, pooled: &PooledKey, binding: &MaterialBinding)
    -> Result<SealedMaterial>;

    /// A fresh random 256-bit data key.
    fn random_data_key(&self) -> Result<zeroize::Zeroizing<Vec<u8>>>;

    /// A new RSA-4096 key pair for a keystore's import token (slow: run it off the async workers).
    fn new_import_key_pair(&self, vault_id: Uuid, keystore_id: Uuid) -> Result<ImportKeyPair>;

    /// Checks material a client sent (its length, its nonce proof) and seals it as `binding`'s
    /// material. Every failure is the same `invalid` error: which check failed is not told.
    fn import_material(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
        material: &ImportedMaterial<'_>,
    ) -> Result<SealedMaterial>;

    /// Opens material and wraps it as an external keystore asks for import (symmetric keys as
    /// raw bytes, asymmetric ones as PKCS#8 DER); only the wrapped form leaves.
    fn wrap_for_transfer(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
        wrapping: &crate::connector::TransferWrapping,
    ) -> Result<Vec<u8>>;
}

/// An import token's key pair: the private key sealed under the vault's key (bound to the
/// keystore), the public key as SPKI DER.
#[derive(Clone)]
pub struct ImportKeyPair {
    pub sealed_private_key: Vec<u8>,
    pub public_key_der: Vec<u8>,
}

/// The import token of an internal keystore (Key Protect's `import_token`).
#[derive(Clone)]
pub struct ImportToken {
    pub keystore_id: Uuid,
    pub key_pair: ImportKeyPair,
    pub nonce: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_retrievals: u32,
    pub remaining_retrievals: u32,
}

/// Material a client sends for import into a keystore of this keyplane.
pub enum ImportedMaterial<'a> {
    /// The raw bytes (the request itself travelled over TLS).
    Plain(&'a [u8]),
    /// RSA-OAEP encrypted under an import token's public key.
    Encrypted {
        keystore_id: Uuid,
        sealed_private_key: &'a [u8],
        oaep_sha256: bool,
        payload: &'a [u8],
        /// The token's nonce encrypted under the material: `(iv, encrypted nonce, the nonce)`.
        nonce_proof: Option<(&'a [u8], &'a [u8], &'a [u8])>,
    },
}

/// What sealed material is bound to (the AES-GCM associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaterialBinding {
    pub vault_id: Uuid,
    pub key_id: Uuid,
    pub version: u32,
}

impl MaterialBinding {
    pub fn aad(&self) -> Vec<u8> {
        format!(
            "keyplane-material:v1:{}:{}:{}",
            self.vault_id, self.key_id, self.version
        )
        .into_bytes()
    }
}
