//! The key hierarchy: master keys, vault keys and the pool of pre-generated material.

use async_trait::async_trait;
use rusqlite::params;
use uuid::Uuid;

use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::*;

use super::SqliteStore;
use super::rows::*;
use super::writer::sql_err;
use super::{all, one, writes};

#[async_trait]
impl HierarchyRecords for SqliteStore {
    async fn root_keys(&self) -> Result<Vec<StoredRootKey>> {
        self.reader.with(|c| {
            all(
                c,
                "SELECT id, sealed, created_at FROM root_keys ORDER BY created_at, id",
                [],
                root_key_from_row,
            )
        })
    }

    async fn insert_root_key(&self, root: &StoredRootKey) -> Result<()> {
        let root = root.clone();
        self.writer
            .write(move |c| writes::insert_root_key(c, &root))
            .await
    }

    async fn vault_key(&self, vault_id: Uuid) -> Result<Option<WrappedVaultKey>> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT vault_id, root_id, wrapped FROM vault_keys WHERE vault_id = ?",
                [vault_id.to_string()],
                vault_key_from_row,
            )
        })
    }

    async fn insert_vault_key(&self, key: &WrappedVaultKey) -> Result<WrappedVaultKey> {
        let key = key.clone();
        let vault_id = key.vault_id;
        self.writer
            .write_returning(move |c| {
                writes::insert_vault_key(c, &key)?;
                one(
                    c,
                    "SELECT vault_id, root_id, wrapped FROM vault_keys WHERE vault_id = ?",
                    [vault_id.to_string()],
                    vault_key_from_row,
                )?
                .ok_or_else(|| keyplane_core::Error::internal("vault key vanished"))
            })
            .await
    }

    async fn vault_keys_under(&self, root_id: &str) -> Result<Vec<WrappedVaultKey>> {
        self.reader.with(|c| {
            all(
                c,
                "SELECT vault_id, root_id, wrapped FROM vault_keys WHERE root_id = ?",
                [root_id],
                vault_key_from_row,
            )
        })
    }

    async fn retire_root_key(
        &self,
        from_root: &str,
        rewrapped: &[WrappedVaultKey],
    ) -> Result<bool> {
        let (from_root, rewrapped) = (from_root.to_owned(), rewrapped.to_vec());
        self.writer
            .write_returning(move |c| writes::retire_root_key(c, &from_root, &rewrapped))
            .await
    }

    async fn pooled_key_count(&self, algorithm: Algorithm, size: u32) -> Result<u64> {
        self.reader.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM key_pool WHERE algorithm = ? AND size = ?",
                params![algorithm.to_string(), i64::from(size)],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(sql_err)
        })
    }

    async fn add_pooled_key(&self, key: &PooledKey) -> Result<()> {
        let key = key.clone();
        self.writer
            .write(move |c| writes::add_pooled_key(c, &key))
            .await
    }

    async fn take_pooled_key(&self, algorithm: Algorithm, size: u32) -> Result<Option<PooledKey>> {
        self.writer
            .write_returning(move |c| writes::take_pooled_key(c, algorithm, size))
            .await
    }
}
