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

/// Managed keys, their versions and sealed material, and the copies internal keystores hold.
#[async_trait]
pub trait KeyRecords: Send + Sync + 'static {
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
}
