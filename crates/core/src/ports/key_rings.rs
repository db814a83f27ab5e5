//! Key Protect's key rings in internal keystores, and the copies taken out of them that its
//! purge and restore still name.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;

/// The key ring every key is in until it is moved (Key Protect's `default`); it always exists.
pub const DEFAULT_KEY_RING: &str = "default";

/// A key ring created in an internal keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    pub keystore_id: Uuid,
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// A copy no longer in its internal keystore, remembered under its id there until its managed
/// key is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedCopy {
    pub keystore_id: Uuid,
    pub key_id_in_keystore: Uuid,
    pub managed_key_id: Uuid,
    pub key_ring: String,
    pub removed_at: DateTime<Utc>,
}

#[async_trait]
pub trait KeyRingRecords: Send + Sync + 'static {
    /// The key rings created in the keystore, oldest first (`default` not included).
    async fn key_rings(&self, keystore_id: Uuid) -> Result<Vec<KeyRing>>;

    /// Creates a key ring; `duplicate_name` when the keystore has it, a conflict when it already
    /// has `max_per_keystore`.
    async fn add_key_ring(&self, ring: &KeyRing, max_per_keystore: usize) -> Result<()>;

    /// Deletes a key ring: a conflict while a key is in it, or a removed copy is and `force` is
    /// not given (with `force`, those move to `default`); not found when there is none.
    async fn remove_key_ring(&self, keystore_id: Uuid, id: &str, force: bool) -> Result<()>;

    /// Moves a key of the keystore into another ring, which must exist (or be `default`).
    async fn move_key_to_ring(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
        key_ring: &str,
    ) -> Result<()>;

    /// The copy the keystore held under that id before it was taken out, if its managed key is
    /// still kept.
    async fn removed_copy(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
    ) -> Result<Option<RemovedCopy>>;
}
