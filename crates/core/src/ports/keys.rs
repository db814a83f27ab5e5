//! Managed keys, their versions and sealed material, and the copies internal keystores hold.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;
use crate::query::*;

/// Everything written for one managed key in one transaction.
#[derive(Debug, Clone, Default)]
pub struct KeyWrite {
    /// New material versions (sealed) to store.
    pub new_material: Vec<SealedMaterial>,
    /// The new material was imported, not generated here.
    pub imported: bool,
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
    /// The ring and aliases a key created through Key Protect has in its internal keystore,
    /// written with the key.
    pub key_protect: Option<KeyProtectPlacement>,
    /// Versions of an adopted key: recorded without material, which only its copies hold.
    pub adopted_versions: Vec<AdoptedVersion>,
    /// The external copies an adoption proved, recorded with the key.
    pub adopted_copies: Vec<crate::ports::ExternalCopy>,
}

/// One version of an adopted key, as its source recorded it.
#[derive(Debug, Clone)]
pub struct AdoptedVersion {
    pub version: u32,
    pub state: KeyState,
    pub verification_patterns: Vec<VerificationPattern>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Where a key created through an internal keystore's Key Protect API sits there.
#[derive(Debug, Clone)]
pub struct KeyProtectPlacement {
    pub keystore_id: Uuid,
    pub key_ring: String,
    /// Checked for form and count by the service; unique in the keystore by the store.
    pub aliases: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub created_by: String,
}

/// An alias a Key Protect client gave a key of an internal keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAlias {
    pub keystore_id: Uuid,
    pub alias: String,
    pub key_id_in_keystore: Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub created_by: String,
}

/// Managed keys, their versions and sealed material, and the copies internal keystores hold.
#[async_trait]
pub trait KeyRecords: Send + Sync + 'static {
    /// Sets when the scheduler next looks at a key, changing nothing else of it: an action
    /// that failed or waits for a person is postponed; a key written before schedules were
    /// indexed is indexed. The key's next write computes it anew.
    async fn set_next_scheduled_at(
        &self,
        id: Uuid,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<()>;

    /// Active or deactivated keys whose record holds a schedule but whose next due time was
    /// never indexed (written by a release before the index), at most `limit`.
    async fn unindexed_scheduled_keys(&self, limit: u32) -> Result<Vec<Uuid>>;

    /// Keys whose schedule is due at `now` (their stored next due time has passed), the
    /// longest due first, at most `limit`.
    async fn due_scheduled_keys(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>>;

    /// The copy an internal keystore holds for a key whose label is `label`, if any.
    async fn internal_copy_by_key_label(
        &self,
        keystore_id: Uuid,
        label: &str,
    ) -> Result<Option<InternalCopy>>;

    /// The key an alias names in an internal keystore.
    async fn key_alias(&self, keystore_id: Uuid, alias: &str) -> Result<Option<KeyAlias>>;

    /// The aliases of the given keys of an internal keystore (a page of them), in one read.
    async fn key_aliases_of(
        &self,
        keystore_id: Uuid,
        keys_in_keystore: &[Uuid],
    ) -> Result<Vec<KeyAlias>>;

    /// The (key, version) pairs among the given managed keys whose material was imported.
    async fn imported_versions_of(&self, key_ids: &[Uuid]) -> Result<Vec<(Uuid, u32)>>;

    /// Adds an alias; a conflict when the keystore already has it, or when the key already has
    /// `max_per_key` aliases. Audited with the call that adds it.
    async fn add_key_alias(&self, alias: &KeyAlias, max_per_key: usize) -> Result<()>;

    /// Removes an alias of the key; not found when the key has no such alias (and then nothing,
    /// its audit event included, is written).
    async fn remove_key_alias(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
        alias: &str,
    ) -> Result<()>;

    /// The copy an internal keystore holds under a label (the Key Protect alias), if any.
    async fn internal_copy_by_label(
        &self,
        keystore_id: Uuid,
        label: &str,
    ) -> Result<Option<InternalCopy>>;

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

    /// The copies an internal keystore holds (in one key ring, when given), by managed key id.
    async fn internal_copies_in_keystore(
        &self,
        keystore_id: Uuid,
        key_ring: Option<&str>,
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
}
