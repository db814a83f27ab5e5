//! Deleting keys through Key Protect: delete (the managed key's destroy), dual-authorization
//! delete as the vault's dual control (`setKeyForDeletion` is the first principal's request, a
//! second principal's delete approves it), purge (the destroyed key's removal) and restore
//! (never possible here: a destroyed key's material is erased).

use uuid::Uuid;

use super::key_protect::{KeyProtectRef, as_read};
use super::{InstalledKey, Keyplane};
use crate::authz::{Caller, Permission};
use crate::error::{Error, ErrorCode, Result};
use crate::lifecycle::KeyAction;
use crate::model::*;

impl Keyplane {
    /// Key Protect's delete: the managed key is deactivated (when active) and destroyed, under
    /// the lifecycle's rules. Under dual control it approves the request another principal made
    /// with `setKeyForDeletion`, and is refused without one.
    pub async fn key_protect_delete(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
    ) -> Result<InstalledKey> {
        // One operation, authorised as the destroy it ends in: the deactivation on the way is
        // part of it.
        let installed = self.key_to_destroy(caller, keystore_id, key_ref).await?;
        let copy = installed.copy;
        let mut key = installed.key;
        if self.store.dual_control(key.vault.id).await? {
            let Some(request) = self
                .pending_request(&key, ApprovalAction::DestroyKey)
                .await?
            else {
                return Err(Error::conflict(
                    ErrorCode::InvalidStateTransition,
                    format!(
                        "vault '{}' is under dual control: one principal sets key {} for deletion \
                         (actions/setKeyForDeletion), then another deletes it",
                        key.vault.name, copy.key_id_in_keystore
                    ),
                ));
            };
            let (_, destroyed) = self.approve(caller, request.id).await?;
            let key =
                destroyed.ok_or_else(|| Error::internal("an approved destroy removed the key"))?;
            return Ok(InstalledKey { copy, key });
        }
        if matches!(key.state, KeyState::Active) && !self.policy.destroy_grace_period.is_zero() {
            // Deactivating now would leave the key out of use with its destroy refused: nothing
            // is done instead.
            return Err(Error::invalid_transition(format!(
                "key {} is active and a deactivated key waits {} before it may be destroyed: \
                 disable it, then delete it once that time has passed",
                copy.key_id_in_keystore,
                crate::lifecycle::human(self.policy.destroy_grace_period)
            )));
        }
        if matches!(key.state, KeyState::Active) {
            key = self
                .carry_out(
                    caller,
                    key.id,
                    Some(&as_read(&key)),
                    KeyAction::Deactivate,
                    None,
                )
                .await?;
        }
        let key = self
            .carry_out(
                caller,
                key.id,
                Some(&as_read(&key)),
                KeyAction::Destroy,
                None,
            )
            .await?;
        Ok(InstalledKey { copy, key })
    }

    /// The key a call names, which the caller may destroy.
    async fn key_to_destroy(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
    ) -> Result<InstalledKey> {
        let installed = self.key_protect_key(caller, keystore_id, key_ref).await?;
        Self::check_key(
            caller,
            Permission::for_lifecycle(KeyAction::Destroy, installed.key.state),
            &installed.key,
        )?;
        Ok(installed)
    }

    /// Key Protect's `setKeyForDeletion`: under dual control, the first principal's request to
    /// destroy the key, which a second principal's delete approves. Asking again changes
    /// nothing; a request another principal made is theirs to withdraw.
    pub async fn key_protect_set_for_deletion(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
    ) -> Result<Approval> {
        let installed = self.key_to_destroy(caller, keystore_id, key_ref).await?;
        let key = &installed.key;
        if !self.store.dual_control(key.vault.id).await? {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                format!(
                    "vault '{}' is not under dual control: key {} is deleted in one call",
                    key.vault.name, installed.copy.key_id_in_keystore
                ),
            ));
        }
        if let Some(pending) = self
            .pending_request(key, ApprovalAction::DestroyKey)
            .await?
        {
            if identity_of(&pending.requested_by) == caller.actor.identity() {
                return Ok(pending);
            }
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                format!(
                    "key {} is already set for deletion by another principal: delete it to \
                     approve (approval {})",
                    installed.copy.key_id_in_keystore, pending.id
                ),
            ));
        }
        self.request_approval(
            caller,
            key,
            Some(&as_read(key)),
            ApprovalAction::DestroyKey,
            204,
        )
        .await?
        .ok_or_else(|| Error::internal("dual control was switched off during the request"))
    }

    /// Key Protect's `unsetKeyForDeletion`: withdraws the pending request to destroy the key (its
    /// rejection, by whoever may destroy it).
    pub async fn key_protect_unset_for_deletion(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
    ) -> Result<Approval> {
        let installed = self.key_to_destroy(caller, keystore_id, key_ref).await?;
        let key = &installed.key;
        let pending = self
            .pending_request(key, ApprovalAction::DestroyKey)
            .await?
            .ok_or_else(|| {
                Error::conflict(
                    ErrorCode::InvalidStateTransition,
                    format!(
                        "key {} is not set for deletion",
                        installed.copy.key_id_in_keystore
                    ),
                )
            })?;
        self.reject(caller, pending.id).await
    }

    /// The key a deleted copy named, found by its id in the keystore; a live key is a conflict
    /// (`what` says what the call needs instead).
    async fn deleted_key(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
        permission: Permission,
        what: &str,
    ) -> Result<InstalledKey> {
        let keystore = self
            .instance_for(caller, Permission::KeyUse, keystore_id)
            .await?;
        let not_found = || Error::NotFound {
            resource: "key",
            id: format!(
                "{} (not in keystore '{}')",
                key_ref.key.escape_debug(),
                keystore.name
            ),
        };
        let removed = match Uuid::parse_str(&key_ref.key) {
            Ok(id) => self.store.removed_copy(keystore_id, id).await?,
            Err(_) => None,
        };
        let Some(removed) = removed else {
            return match self.key_protect_key(caller, keystore_id, key_ref).await {
                Ok(live) => Err(Error::invalid_transition(format!(
                    "key {} is not deleted: {what}",
                    live.copy.key_id_in_keystore
                ))),
                Err(Error::NotFound { .. }) => Err(not_found()),
                Err(other) => Err(other),
            };
        };
        if key_ref
            .key_ring
            .as_deref()
            .is_some_and(|ring| ring != removed.key_ring)
        {
            return Err(not_found());
        }
        let key = self
            .store
            .get_managed_key(removed.managed_key_id)
            .await?
            .ok_or_else(not_found)?;
        Self::check_key(caller, permission, &key)?;
        Ok(InstalledKey {
            copy: InternalCopy {
                keystore_id,
                managed_key_id: key.id,
                key_id_in_keystore: removed.key_id_in_keystore,
                label: key.label.clone(),
                enabled: false,
                version: key.version,
                key_ring: removed.key_ring,
            },
            key,
        })
    }

    /// Key Protect's purge: a deleted (destroyed) key is removed from its vault, with what is
    /// recorded of it; the managed key's removal, under its rules. Under dual control removal
    /// takes an approval, which Key Protect's purge cannot wait for: it is refused.
    pub async fn key_protect_purge(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
    ) -> Result<InstalledKey> {
        let deleted = self
            .deleted_key(
                caller,
                keystore_id,
                key_ref,
                Permission::KeyRemove,
                "delete it before purging it",
            )
            .await?;
        let key = &deleted.key;
        if self.store.dual_control(key.vault.id).await? {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                format!(
                    "vault '{}' is under dual control: remove key {} through \
                     DELETE /api/v4/managed_keys/{} and an approval",
                    key.vault.name, key.id, key.id
                ),
            ));
        }
        self.remove_key(caller, key.id, Some(&as_read(key))).await?;
        Ok(deleted)
    }

    /// Key Protect's restore: a deleted key's material is erased here, so none is ever restored;
    /// the call says so to whoever may see the key.
    pub async fn key_protect_restore(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
    ) -> Result<()> {
        let deleted = self
            .deleted_key(
                caller,
                keystore_id,
                key_ref,
                Permission::KeyCreate,
                "only a deleted key is restored",
            )
            .await?;
        Err(Error::invalid_transition(format!(
            "key {} was destroyed and its material erased: it cannot be restored; create or \
             import a new key",
            deleted.copy.key_id_in_keystore
        )))
    }
}
