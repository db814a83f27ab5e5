use uuid::Uuid;

use super::{Keyplane, now, set};
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
    pub async fn create_vault(&self, actor: &Actor, input: NewVault) -> Result<VaultView> {
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
            stamps: Stamps::new(actor, now()),
            revision: 1,
        };
        self.store.insert_vault(&vault).await?;
        self.get_vault(vault.id).await
    }

    pub async fn get_vault(&self, id: Uuid) -> Result<VaultView> {
        self.store
            .get_vault(id)
            .await?
            .ok_or_else(|| Error::not_found("vault", id))
    }

    pub async fn update_vault(
        &self,
        actor: &Actor,
        id: Uuid,
        if_match: Option<&IfMatch>,
        patch: VaultPatch,
    ) -> Result<VaultView> {
        let mut vault = self.get_vault(id).await?.vault;
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
        vault.stamps.touch(actor, now());
        vault.revision += 1;
        self.store.update_vault(&vault, read_revision).await?;
        self.get_vault(id).await
    }

    pub async fn delete_vault(&self, id: Uuid, if_match: Option<&IfMatch>) -> Result<()> {
        let view = self.get_vault(id).await?;
        etag::check(if_match, view.vault.revision, id)?;
        self.store.delete_vault(id, view.vault.revision).await
    }

    pub async fn list_vaults(&self, query: &VaultQuery) -> Result<Page<VaultView>> {
        self.store.list_vaults(query).await
    }
}
