//! Identities (principals) and their API keys: Keyplane's own `/api/v4/access` resources.

use chrono::SubsecRound;
use uuid::Uuid;

use super::{Keyplane, now};
use crate::authz::{Caller, Grants, Permission, Policy, Role};
use crate::error::{Error, Result};
use crate::model::{ApiKey, Page, Principal, PrincipalKind, new_id};
use crate::query::Paging;

pub const MAX_PRINCIPAL_NAME: usize = 100;
pub const MAX_PRINCIPAL_DESCRIPTION: usize = 255;

/// What a new principal is made of.
pub struct NewPrincipal {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub description: Option<String>,
}

fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_PRINCIPAL_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_field(
            field,
            format!(
                "{field} is 1 to {MAX_PRINCIPAL_NAME} characters: letters, digits, '.', '_', '@' and '-'"
            ),
        ))
    }
}

/// Names a principal may not take: those of the admin tokens (`admin`, `admin-…`) and of the
/// identities keyplane itself acts as. An initiator in the audit trail, or a requester under
/// dual control, then always names one identity.
fn check_not_reserved(name: &str) -> Result<()> {
    let lower = name.to_ascii_lowercase();
    let reserved = lower == "admin"
        || lower.starts_with("admin-")
        || lower == "anonymous"
        || lower == "scheduler"
        || lower == "many";
    if reserved {
        return Err(Error::invalid_field(
            "name",
            format!(
                "'{name}' is reserved for keyplane's own identities (admin, admin-*, anonymous, scheduler, many)"
            ),
        ));
    }
    Ok(())
}

impl Keyplane {
    pub async fn create_principal(
        &self,
        caller: &Caller,
        input: NewPrincipal,
    ) -> Result<Principal> {
        caller.require(Permission::Administer)?;
        let name = input.name.ok_or_else(|| Error::missing_field("name"))?;
        check_name("name", &name)?;
        check_not_reserved(&name)?;
        let kind = match input.kind.as_deref() {
            None => PrincipalKind::User,
            Some(k) => PrincipalKind::parse(k)
                .ok_or_else(|| Error::invalid_field("kind", "kind is 'user' or 'service'"))?,
        };
        let description = input.description.unwrap_or_default();
        crate::validate::free_text("description", &description, 0, MAX_PRINCIPAL_DESCRIPTION)?;
        let principal = Principal {
            id: new_id(),
            name,
            kind,
            description,
            created_at: now(),
            created_by: caller.actor.0.clone(),
        };
        crate::audit::note_target("principals", principal.id, None);
        self.store.insert_principal(&principal).await?;
        Ok(principal)
    }

    pub async fn get_principal(&self, caller: &Caller, id: Uuid) -> Result<Principal> {
        caller.require(Permission::Administer)?;
        self.store
            .get_principal(id)
            .await?
            .ok_or_else(|| Error::not_found("principal", id))
    }

    pub async fn list_principals(
        &self,
        caller: &Caller,
        paging: Paging,
    ) -> Result<Page<Principal>> {
        caller.require(Permission::Administer)?;
        self.store.list_principals(paging).await
    }

    /// Deletes a principal; its API keys end with it.
    pub async fn delete_principal(&self, caller: &Caller, id: Uuid) -> Result<()> {
        caller.require(Permission::Administer)?;
        crate::audit::note_target("principals", id, None);
        self.store.delete_principal(id).await
    }

    /// Records a new API key whose digest is `key_hash` (the key itself is never stored).
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        principal_id: Uuid,
        name: Option<String>,
        key_hash: String,
    ) -> Result<ApiKey> {
        self.get_principal(caller, principal_id).await?;
        let name = name.unwrap_or_else(|| "default".into());
        check_name("name", &name)?;
        let key = ApiKey {
            id: new_id(),
            principal_id,
            name,
            key_hash,
            created_at: now().trunc_subsecs(3),
            revoked_at: None,
        };
        crate::audit::note_target("api_keys", key.id, None);
        self.store.insert_api_key(&key).await?;
        Ok(key)
    }

    pub async fn list_api_keys(&self, caller: &Caller, principal_id: Uuid) -> Result<Vec<ApiKey>> {
        caller.require(Permission::Administer)?;
        self.get_principal(caller, principal_id).await?;
        self.store.list_api_keys(principal_id).await
    }

    /// Replaces an active key with a new one (same principal and name) in one step.
    pub async fn rotate_api_key(
        &self,
        caller: &Caller,
        id: Uuid,
        key_hash: String,
    ) -> Result<ApiKey> {
        caller.require(Permission::Administer)?;
        let old = self
            .store
            .get_api_key(id)
            .await?
            .filter(ApiKey::is_active)
            .ok_or_else(|| Error::not_found("active API key", id))?;
        let key = ApiKey {
            id: new_id(),
            key_hash,
            created_at: now().trunc_subsecs(3),
            ..old
        };
        crate::audit::note_target("api_keys", id, None);
        self.store.revoke_api_key(id, Some(&key)).await?;
        Ok(key)
    }

    /// Ends an API key's use at once: tokens issued for it stop working too.
    pub async fn revoke_api_key(&self, caller: &Caller, id: Uuid) -> Result<()> {
        caller.require(Permission::Administer)?;
        crate::audit::note_target("api_keys", id, None);
        self.store.revoke_api_key(id, None).await
    }

    /// The active key with this digest, and its principal.
    pub async fn api_key_holder(&self, key_hash: &str) -> Result<Option<(ApiKey, Principal)>> {
        let Some(key) = self
            .store
            .find_api_key(key_hash)
            .await?
            .filter(ApiKey::is_active)
        else {
            return Ok(None);
        };
        Ok(self
            .store
            .get_principal(key.principal_id)
            .await?
            .map(|p| (key, p)))
    }

    /// The principal of an active API key (for checking a token issued for it).
    pub async fn active_api_key_principal(&self, id: Uuid) -> Result<Option<Principal>> {
        let Some(key) = self.store.get_api_key(id).await?.filter(ApiKey::is_active) else {
            return Ok(None);
        };
        self.store.get_principal(key.principal_id).await
    }

    /// Grants `role` to a principal on every vault (`vault_id` none) or on one vault.
    pub async fn create_policy(
        &self,
        caller: &Caller,
        principal_id: Option<Uuid>,
        role: Option<String>,
        vault_id: Option<Uuid>,
    ) -> Result<Policy> {
        caller.require(Permission::Administer)?;
        let principal_id = principal_id.ok_or_else(|| Error::missing_field("principal.id"))?;
        let role = role.ok_or_else(|| Error::missing_field("role"))?;
        let role = Role::parse(&role).ok_or_else(|| {
            Error::invalid_field(
                "role",
                format!("role is one of: {}", Role::ALL.map(Role::as_str).join(", ")),
            )
        })?;
        if role == Role::Administrator && vault_id.is_some() {
            return Err(Error::invalid_field(
                "vault.id",
                "administrator is granted on every vault, not on one",
            ));
        }
        self.get_principal(caller, principal_id)
            .await
            .map_err(|_| {
                Error::invalid_field("principal.id", format!("no principal {principal_id}"))
            })?;
        if let Some(v) = vault_id {
            self.target_vault(caller, Permission::Administer, v).await?;
        }
        let policy = Policy {
            id: new_id(),
            principal_id,
            role,
            vault_id,
            created_at: now().trunc_subsecs(3),
            created_by: caller.actor.0.clone(),
        };
        crate::audit::note_target("policies", policy.id, vault_id);
        self.store.insert_policy(&policy).await?;
        Ok(policy)
    }

    pub async fn delete_policy(&self, caller: &Caller, id: Uuid) -> Result<()> {
        caller.require(Permission::Administer)?;
        crate::audit::note_target("policies", id, None);
        self.store.delete_policy(id).await
    }

    pub async fn list_policies(
        &self,
        caller: &Caller,
        principal_id: Option<Uuid>,
    ) -> Result<Vec<Policy>> {
        caller.require(Permission::Administer)?;
        self.store.list_policies(principal_id).await
    }

    /// What a principal may do, from its policies.
    pub async fn grants_of(&self, principal_id: Uuid) -> Result<Grants> {
        let policies = self.store.list_policies(Some(principal_id)).await?;
        Ok(Grants::from_policies(
            &policies
                .iter()
                .map(|p| (p.role, p.vault_id))
                .collect::<Vec<_>>(),
        ))
    }

    /// The principal named `name`, if any (client certificates map to principals by name).
    pub async fn principal_named(&self, name: &str) -> Result<Option<Principal>> {
        self.store.find_principal(name).await
    }
}
