//! The key hierarchy: master keys, vault keys and the pool of pre-generated material.

use async_trait::async_trait;
use uuid::Uuid;

use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::*;

use super::PostgresStore;
use super::rows::*;
use super::{all, one, writes};

const VAULT_KEY_SELECT: &str =
    "SELECT vault_id, root_id, wrapped FROM vault_keys WHERE vault_id = $1";

#[async_trait]
impl HierarchyRecords for PostgresStore {
    async fn root_keys(&self) -> Result<Vec<StoredRootKey>> {
        let c = self.reader().await?;
        all(
            &c,
            "SELECT id, sealed, created_at FROM root_keys ORDER BY created_at, id",
            &[],
            root_key_from_row,
        )
        .await
    }

    async fn insert_root_key(&self, root: &StoredRootKey) -> Result<()> {
        let root = root.clone();
        self.write(Box::new(move |c| {
            Box::pin(async move { writes::insert_root_key(c, &root).await })
        }))
        .await
    }

    async fn vault_key(&self, vault_id: Uuid) -> Result<Option<WrappedVaultKey>> {
        let c = self.reader().await?;
        one(&c, VAULT_KEY_SELECT, &[&vault_id], vault_key_from_row).await
    }

    async fn insert_vault_key(&self, key: &WrappedVaultKey) -> Result<WrappedVaultKey> {
        let key = key.clone();
        self.write_returning(move |c| {
            Box::pin(async move {
                writes::insert_vault_key(c, &key).await?;
                one(c, VAULT_KEY_SELECT, &[&key.vault_id], vault_key_from_row)
                    .await?
                    .ok_or_else(|| keyplane_core::Error::internal("vault key vanished"))
            })
        })
        .await
    }

    async fn vault_keys_under(&self, root_id: &str) -> Result<Vec<WrappedVaultKey>> {
        let c = self.reader().await?;
        all(
            &c,
            "SELECT vault_id, root_id, wrapped FROM vault_keys WHERE root_id = $1",
            &[&root_id],
            vault_key_from_row,
        )
        .await
    }

    async fn retire_root_key(
        &self,
        from_root: &str,
        rewrapped: &[WrappedVaultKey],
    ) -> Result<bool> {
        let (from_root, rewrapped) = (from_root.to_owned(), rewrapped.to_vec());
        self.write_returning(move |c| {
            Box::pin(async move { writes::retire_root_key(c, &from_root, &rewrapped).await })
        })
        .await
    }

    async fn pooled_key_count(&self, algorithm: Algorithm, size: u32) -> Result<u64> {
        let c = self.reader().await?;
        let n = one(
            &c,
            "SELECT COUNT(*) AS n FROM key_pool WHERE algorithm = $1 AND size = $2",
            &[&algorithm.to_string(), &i64::from(size)],
            |r| col::<i64>(r, "n"),
        )
        .await?
        .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn add_pooled_key(&self, key: &PooledKey) -> Result<()> {
        let key = key.clone();
        self.write(Box::new(move |c| {
            Box::pin(async move { writes::add_pooled_key(c, &key).await })
        }))
        .await
    }

    async fn take_pooled_key(&self, algorithm: Algorithm, size: u32) -> Result<Option<PooledKey>> {
        self.write_returning(move |c| {
            Box::pin(async move { writes::take_pooled_key(c, algorithm, size).await })
        })
        .await
    }
}
