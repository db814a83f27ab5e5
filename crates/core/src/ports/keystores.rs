//! Keystores and the import tokens internal ones offer.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;
use crate::query::*;

use super::*;

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

/// Keystores and the import tokens internal ones offer.
#[async_trait]
pub trait KeystoreRecords: Send + Sync + 'static {
    /// The import token an internal keystore offers, if any (expired ones included).
    async fn import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>>;

    /// Replaces an internal keystore's import token.
    async fn save_import_token(&self, token: &ImportToken) -> Result<()>;

    /// Counts a retrieval of the keystore's token when it is live and has retrievals left, and
    /// returns it; `None` otherwise.
    async fn retrieve_import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>>;

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
}
