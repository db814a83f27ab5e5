//! The key hierarchy: master keys, vault keys and the pool of pre-generated material.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;

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

/// The key hierarchy: master keys, vault keys and the pool of pre-generated material.
#[async_trait]
pub trait HierarchyRecords: Send + Sync + 'static {
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

    async fn pooled_key_count(&self, algorithm: Algorithm, size: u32) -> Result<u64>;

    async fn add_pooled_key(&self, key: &PooledKey) -> Result<()>;

    /// Removes and returns the oldest pooled key of a kind; no two callers get the same one.
    async fn take_pooled_key(&self, algorithm: Algorithm, size: u32) -> Result<Option<PooledKey>>;
}
