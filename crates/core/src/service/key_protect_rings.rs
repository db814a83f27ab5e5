//! Key Protect's key rings in an internal keystore: `default` holds every key until one is moved;
//! others are created, named in calls (`X-Kms-Key-Ring`) and deleted once empty.

use uuid::Uuid;

use super::key_protect::KeyProtectRef;
use super::{InstalledKey, Keyplane, now};
use crate::authz::{Caller, Permission};
use crate::error::{Error, ErrorCode, Result};
use crate::ports::{DEFAULT_KEY_RING, KeyRing};

/// Most key rings a keystore has besides `default` (Key Protect's limit).
pub const MAX_KEY_RINGS: usize = 50;

/// A key ring's id, as Key Protect has it: 2 to 100 letters, digits and `-`.
pub const KEY_RING_PATTERN: &str = "^[A-Za-z0-9-]{2,100}$";

pub fn check_key_ring(field: &str, id: &str) -> Result<()> {
    let len = id.chars().count();
    if !(2..=100).contains(&len) || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::invalid_field(
            field,
            format!("{field} is 2 to 100 letters, digits and '-'"),
        ));
    }
    Ok(())
}

impl Keyplane {
    /// The keystore's key rings, `default` first (Key Protect `GET /key_rings`).
    pub async fn key_protect_key_rings(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
    ) -> Result<Vec<KeyRing>> {
        let keystore = self
            .instance_for(caller, Permission::KeyUse, keystore_id)
            .await?;
        let mut rings = vec![KeyRing {
            keystore_id,
            id: DEFAULT_KEY_RING.to_owned(),
            created_at: keystore.stamps.created_at,
            created_by: keystore.stamps.created_by.clone(),
        }];
        rings.extend(self.store.key_rings(keystore_id).await?);
        Ok(rings)
    }

    /// Fails with not found unless the keystore has the ring (`default` it always has).
    pub(super) async fn check_key_ring_exists(&self, keystore_id: Uuid, ring: &str) -> Result<()> {
        if ring == DEFAULT_KEY_RING
            || self
                .store
                .key_rings(keystore_id)
                .await?
                .iter()
                .any(|r| r.id == ring)
        {
            return Ok(());
        }
        Err(Error::NotFound {
            resource: "key ring",
            id: ring.escape_debug().to_string(),
        })
    }

    /// Creates a key ring (Key Protect `POST /key_rings/{id}`): part of the keystore's setup.
    pub async fn key_protect_create_key_ring(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        id: &str,
    ) -> Result<KeyRing> {
        let keystore = self
            .instance_for(caller, Permission::KeystoreWrite, keystore_id)
            .await?;
        check_key_ring("key_ring_id", id)?;
        let ring = KeyRing {
            keystore_id,
            id: id.to_owned(),
            created_at: now(),
            created_by: caller.actor.0.clone(),
        };
        crate::audit::note_target("keystores", keystore_id, Some(keystore.vault.id));
        self.store.add_key_ring(&ring, MAX_KEY_RINGS).await?;
        Ok(ring)
    }

    /// Deletes a key ring (Key Protect `DELETE /key_rings/{id}`): refused while it holds a key;
    /// the deleted keys it still names move to `default` when `force` is given.
    pub async fn key_protect_delete_key_ring(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        id: &str,
        force: bool,
    ) -> Result<()> {
        let keystore = self
            .instance_for(caller, Permission::KeystoreWrite, keystore_id)
            .await?;
        check_key_ring("key_ring_id", id)?;
        if id == DEFAULT_KEY_RING {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                "the default key ring cannot be deleted",
            ));
        }
        crate::audit::note_target("keystores", keystore_id, Some(keystore.vault.id));
        self.store.remove_key_ring(keystore_id, id, force).await
    }

    /// Moves a key into another key ring (Key Protect `PATCH /keys/{id}` with `keyRingID`).
    pub async fn key_protect_move_key(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
        key_ring: &str,
    ) -> Result<InstalledKey> {
        let installed = self.key_protect_key(caller, keystore_id, key_ref).await?;
        Self::check_key(caller, Permission::KeyEdit, &installed.key)?;
        check_key_ring("keyRingID", key_ring)?;
        crate::audit::note_target(
            "managed_keys",
            installed.key.id,
            Some(installed.key.vault.id),
        );
        self.store
            .move_key_to_ring(keystore_id, installed.copy.key_id_in_keystore, key_ring)
            .await?;
        let mut copy = installed.copy;
        copy.key_ring = key_ring.to_owned();
        Ok(InstalledKey {
            copy,
            key: installed.key,
        })
    }
}
