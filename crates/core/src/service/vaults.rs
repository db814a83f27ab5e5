use uuid::Uuid;

use super::{Keyplane, now, set};
use crate::authz::{Caller, Permission};
use crate::error::{Error, Result};
use crate::etag::{self, IfMatch};
use crate::model::*;
use crate::query::VaultQuery;
use crate::validate;

#[derive(Debug, Clone, Default)]
pub struct NewVault {
    pub name: Option<String>,
    pub description: Option<String>,
    pub recovery_key_label: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct VaultPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub recovery_key_label: Option<String>,
}

fn check_recovery_label(value: &str) -> Result<()> {
    validate::short_text("recovery_key_label", value, 100)
}

impl Keyplane {
    pub async fn create_vault(&self, caller: &Caller, input: NewVault) -> Result<VaultView> {
        caller.require(Permission::VaultWrite)?;
        let name = input.name.ok_or_else(|| Error::missing_field("name"))?;
        validate::vault_name(&name)?;
        let description = input.description.unwrap_or_default();
        validate::description("description", &description)?;
        if let Some(l) = &input.recovery_key_label {
            check_recovery_label(l)?;
        }
        let vault = Vault {
            id: new_id(),
            name,
            description,
            recovery_key_label: input.recovery_key_label,
            stamps: Stamps::new(&caller.actor, now()),
            revision: 1,
        };
        self.store.insert_vault(&vault).await?;
        self.load_vault(vault.id).await
    }

    /// A vault, whoever asks (for the services' own use).
    pub(crate) async fn load_vault(&self, id: Uuid) -> Result<VaultView> {
        self.store
            .get_vault(id)
            .await?
            .ok_or_else(|| Error::not_found("vault", id))
    }

    pub async fn get_vault(&self, caller: &Caller, id: Uuid) -> Result<VaultView> {
        let view = self.load_vault(id).await?;
        caller.require_in(Permission::Read, id, || Error::not_found("vault", id))?;
        Ok(view)
    }

    pub async fn update_vault(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        patch: VaultPatch,
    ) -> Result<VaultView> {
        let mut vault = self.load_vault(id).await?.vault;
        caller.require_in(Permission::VaultWrite, id, || Error::not_found("vault", id))?;
        etag::check(if_match, vault.revision, id)?;
        if let Some(n) = &patch.name {
            validate::vault_name(n)?;
        }
        if let Some(d) = &patch.description {
            validate::description("description", d)?;
        }
        if let Some(l) = &patch.recovery_key_label {
            check_recovery_label(l)?;
        }
        let read_revision = vault.revision;
        set(&mut vault.name, patch.name);
        set(&mut vault.description, patch.description);
        if patch.recovery_key_label.is_some() {
            vault.recovery_key_label = patch.recovery_key_label;
        }
        vault.stamps.touch(&caller.actor, now());
        vault.revision += 1;
        self.store.update_vault(&vault, read_revision).await?;
        self.load_vault(id).await
    }

    pub async fn delete_vault(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<()> {
        let view = self.load_vault(id).await?;
        caller.require_in(Permission::VaultDelete, id, || {
            Error::not_found("vault", id)
        })?;
        etag::check(if_match, view.vault.revision, id)?;
        self.store.delete_vault(id, view.vault.revision).await
    }

    /// Vaults the caller may list, within the query's filters.
    pub async fn list_vaults(
        &self,
        caller: &Caller,
        mut query: VaultQuery,
    ) -> Result<Page<VaultView>> {
        caller.narrow_listing(&mut query.ids)?;
        self.store.list_vaults(&query).await
    }
}
