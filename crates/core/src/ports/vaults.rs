//! Vaults.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;
use crate::query::*;

/// Vaults.
#[async_trait]
pub trait VaultRecords: Send + Sync + 'static {
    async fn insert_vault(&self, vault: &Vault) -> Result<()>;

    async fn get_vault(&self, id: Uuid) -> Result<Option<VaultView>>;

    /// `{id, name}` of a vault, without its counts (cheap; used when creating resources in it).
    async fn vault_ref(&self, id: Uuid) -> Result<Option<VaultRef>>;

    /// Saves `vault`, whose `revision` is already the new one; `read_revision` is the one read.
    async fn update_vault(&self, vault: &Vault, read_revision: i64) -> Result<()>;

    /// Deletes an empty vault together with its archived templates; `Conflict` when not empty.
    async fn delete_vault(&self, id: Uuid, read_revision: i64) -> Result<()>;

    async fn list_vaults(&self, query: &VaultQuery) -> Result<Page<VaultView>>;

    /// Every vault's id (used once, when keys made before vault keys existed are adopted).
    async fn vault_ids(&self) -> Result<Vec<Uuid>>;
}
