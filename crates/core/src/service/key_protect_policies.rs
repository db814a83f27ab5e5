//! Key Protect's policies, mapped onto what Keyplane keeps: a key's rotation policy is its
//! `rotation_interval` (whole months, as Key Protect counts them), and dual-authorization delete
//! is the vault's dual control, for the instance and for each of its keys.

use uuid::Uuid;

use super::key_protect::{KeyProtectRef, as_read};
use super::{InstalledKey, KeyPatch, Keyplane};
use crate::authz::{Caller, Permission};
use crate::error::{Error, ErrorCode, Result};
use crate::model::Keystore;

/// Key Protect's range for a rotation policy, in months.
pub const ROTATION_MONTHS: std::ops::RangeInclusive<u32> = 1..=12;

/// A key's policies as Key Protect has them.
pub struct KeyProtectPolicies {
    pub installed: InstalledKey,
    /// The key's rotation interval; `None`: rotated when someone does.
    pub rotation_interval: Option<String>,
    /// Deleting the key takes a second principal (the vault's dual control).
    pub dual_auth_delete: bool,
}

impl KeyProtectPolicies {
    /// The rotation interval in whole months, when it is one Key Protect can express.
    pub fn rotation_months(&self) -> Option<u32> {
        let months = self
            .rotation_interval
            .as_deref()?
            .strip_prefix('P')?
            .strip_suffix('M')?;
        months.parse().ok().filter(|m| ROTATION_MONTHS.contains(m))
    }
}

impl Keyplane {
    /// A key's policies (Key Protect `GET /keys/{id}/policies`).
    pub async fn key_protect_policies(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
    ) -> Result<KeyProtectPolicies> {
        let installed = self.key_protect_key(caller, keystore_id, key_ref).await?;
        let dual_auth_delete = self.store.dual_control(installed.key.vault.id).await?;
        Ok(KeyProtectPolicies {
            rotation_interval: installed.key.rotation_interval.clone(),
            installed,
            dual_auth_delete,
        })
    }

    /// Sets or clears a key's rotation policy: its `rotation_interval` becomes `P{months}M`
    /// (an edit of the key, with its rules and audit event).
    pub async fn key_protect_set_rotation_policy(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
        months: Option<u32>,
    ) -> Result<KeyProtectPolicies> {
        if let Some(m) = months
            && !ROTATION_MONTHS.contains(&m)
        {
            return Err(Error::invalid_field(
                "resources[0].rotation.interval_month",
                format!(
                    "interval_month is {} to {} months",
                    ROTATION_MONTHS.start(),
                    ROTATION_MONTHS.end()
                ),
            ));
        }
        let installed = self.key_protect_key(caller, keystore_id, key_ref).await?;
        let patch = KeyPatch {
            rotation_interval: Some(months.map_or_else(String::new, |m| format!("P{m}M"))),
            ..KeyPatch::default()
        };
        self.update_key(
            caller,
            installed.key.id,
            Some(&as_read(&installed.key)),
            patch,
        )
        .await?;
        self.key_protect_policies(caller, keystore_id, key_ref)
            .await
    }

    /// A key's dual-authorization delete policy is its vault's dual control: asking for what the
    /// vault has changes nothing; asking for the other is refused, saying where it is set.
    pub async fn key_protect_set_dual_auth_delete_policy(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
        enabled: bool,
    ) -> Result<KeyProtectPolicies> {
        let policies = self
            .key_protect_policies(caller, keystore_id, key_ref)
            .await?;
        let key = &policies.installed.key;
        Self::check_key(caller, Permission::KeyEdit, key)?;
        if policies.dual_auth_delete != enabled {
            return Err(Error::conflict(
                ErrorCode::InvalidStateTransition,
                format!(
                    "dual authorization for deleting keys is vault '{}''s dual control, for all its \
                     keys: set it with this instance's dualAuthDelete policy or \
                     PUT /api/v4/vaults/{}/dual_control",
                    key.vault.name, key.vault.id
                ),
            ));
        }
        Ok(policies)
    }

    /// The instance's dual-authorization delete policy: its vault's dual control.
    pub async fn key_protect_instance_dual_auth_delete(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
    ) -> Result<(Keystore, bool)> {
        let keystore = self
            .instance_for(caller, Permission::KeyUse, keystore_id)
            .await?;
        let enabled = self.store.dual_control(keystore.vault.id).await?;
        Ok((keystore, enabled))
    }

    /// Sets the instance's dual-authorization delete policy: its vault's dual control, which only
    /// an administrator of the vault switches.
    pub async fn key_protect_set_instance_dual_auth_delete(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        enabled: bool,
    ) -> Result<(Keystore, bool)> {
        let keystore = self
            .instance_for(caller, Permission::KeyUse, keystore_id)
            .await?;
        self.set_dual_control(caller, keystore.vault.id, enabled)
            .await?;
        Ok((keystore, enabled))
    }
}
