use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Keyplane, now, set};
use crate::authz::{Caller, Permission};
use crate::connector::Connector;
use crate::distribution;
use crate::error::{Error, Result};
use crate::etag::{self, IfMatch};
use crate::keystore_types::{self, CheckedConnection};
use crate::model::*;
use crate::query::{KeyQuery, KeyScope, KeystoreQuery};
use crate::validate;

#[derive(Clone, Default)]
pub struct NewKeystore {
    pub vault_id: Option<Uuid>,
    pub keystore_type: Option<KeystoreType>,
    pub ibm_variant: Option<IbmVariant>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub groups: Option<Vec<String>>,
    pub location: Option<String>,
    pub tls_proxy: Option<String>,
    /// Type-specific connection fields as sent.
    pub connection: Map<String, Value>,
}

#[derive(Clone, Default)]
pub struct KeystorePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub groups: Option<Vec<String>>,
    pub location: Option<String>,
    pub tls_proxy: Option<String>,
    pub connection: Map<String, Value>,
}

/// Connection values may be secrets: only their names are shown.
fn field_names(connection: &Map<String, Value>) -> Vec<&str> {
    connection.keys().map(String::as_str).collect()
}

impl std::fmt::Debug for NewKeystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKeystore")
            .field("vault_id", &self.vault_id)
            .field("keystore_type", &self.keystore_type)
            .field("name", &self.name)
            .field("connection_fields", &field_names(&self.connection))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KeystorePatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystorePatch")
            .field("name", &self.name)
            .field("connection_fields", &field_names(&self.connection))
            .finish_non_exhaustive()
    }
}

fn check_common(
    description: &str,
    groups: &[String],
    location: &str,
    tls_proxy: &str,
) -> Result<()> {
    validate::description("description", description)?;
    validate::groups(groups)?;
    if !location.is_empty() {
        validate::short_text("location", location, 100)?;
    }
    if !tls_proxy.is_empty() {
        validate::short_text("tls_proxy", tls_proxy, 2048)?;
    }
    Ok(())
}

impl Keyplane {
    /// The connector for a keystore with these secrets; `None` when its type has none.
    fn connector_with(
        &self,
        keystore: &Keystore,
        secrets: &Map<String, Value>,
    ) -> Result<Option<Arc<dyn Connector>>> {
        if keystore.is_internal() {
            return Ok(None);
        }
        match self
            .connectors
            .as_ref()
            .and_then(|c| c.connect(keystore, secrets))
        {
            Some(built) => built.map(Some),
            None => Ok(None),
        }
    }

    /// The connector for a stored keystore, its secrets opened.
    /// Built once per keystore revision: an edit of the connection builds a new one.
    pub(crate) async fn connector(
        &self,
        keystore: &Keystore,
    ) -> Result<Option<Arc<dyn Connector>>> {
        if let Some(cached) = self.distribution.cached_connector(keystore) {
            return Ok(Some(cached));
        }
        let secrets = self.connection_secrets(keystore).await?;
        let built = self.connector_with(keystore, &secrets)?;
        if let Some(c) = &built {
            self.distribution.cache_connector(keystore, c.clone());
        }
        Ok(built)
    }

    async fn connection_secrets(&self, keystore: &Keystore) -> Result<Map<String, Value>> {
        let Some(sealed) = &keystore.sealed_secrets else {
            return Ok(Map::new());
        };
        self.engine.open_vault(keystore.vault.id).await?;
        let json = self
            .engine
            .open_secrets(keystore.vault.id, keystore.id, sealed)?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::internal(format!("connection secrets: {e}")))
    }

    /// Tests a connection before it is saved; no connector for the type means nothing to test.
    async fn test_connection(
        &self,
        keystore: &Keystore,
        secrets: &Map<String, Value>,
    ) -> Result<()> {
        if let Some(connector) = self.connector_with(keystore, secrets)? {
            connector
                .test()
                .await
                .map_err(|f| f.into_connection_error(&keystore.name))?;
        }
        Ok(())
    }

    async fn seal_connection_secrets(
        &self,
        vault_id: Uuid,
        id: Uuid,
        secrets: &Map<String, Value>,
    ) -> Result<Option<Vec<u8>>> {
        if secrets.is_empty() {
            return Ok(None);
        }
        self.engine.open_vault(vault_id).await?;
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec(secrets).map_err(|e| Error::internal(e.to_string()))?,
        );
        self.engine.seal_secrets(vault_id, id, &json).map(Some)
    }

    /// Validates a keystore; with `dry_run` nothing is saved and the would-be keystore is returned.
    pub async fn create_keystore(
        &self,
        caller: &Caller,
        input: NewKeystore,
        dry_run: bool,
    ) -> Result<Keystore> {
        let keystore_type = input
            .keystore_type
            .ok_or_else(|| Error::missing_field("type"))?;
        let vault_id = input
            .vault_id
            .ok_or_else(|| Error::missing_field("vault.id"))?;
        let vault = self
            .target_vault(caller, Permission::KeystoreWrite, vault_id)
            .await?;
        let ibm_variant = match keystore_type {
            KeystoreType::IbmCloudKms => Some(
                input
                    .ibm_variant
                    .ok_or_else(|| Error::missing_field("ibm_variant"))?,
            ),
            _ if input.ibm_variant.is_some() => {
                return Err(Error::invalid_field(
                    "ibm_variant",
                    "ibm_variant applies to ibm_cloud_kms keystores only",
                ));
            }
            _ => None,
        };
        let name = match input.name {
            Some(n) => n,
            // Azure keystores may omit the name (spec §4.4); the Key Vault's name stands in.
            None if keystore_type == KeystoreType::AzureKeyVault => input
                .connection
                .get("azure_service_name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Error::missing_field("name"))?,
            None => return Err(Error::missing_field("name")),
        };
        validate::keystore_name(&name)?;
        let description = input.description.unwrap_or_default();
        let groups = match input.groups {
            Some(g) if !g.is_empty() => g,
            _ => vec![name.clone()],
        };
        let location = input.location.unwrap_or_default();
        let tls_proxy = input.tls_proxy.unwrap_or_default();
        check_common(&description, &groups, &location, &tls_proxy)?;
        let mut checked =
            keystore_types::check_connection(keystore_type, ibm_variant, &input.connection)?;
        keystore_types::fill_from_credentials(keystore_type, &mut checked);
        let CheckedConnection { clear, secrets } = checked;
        let id = new_id();
        let sealed_secrets = self.seal_connection_secrets(vault_id, id, &secrets).await?;
        let keystore = Keystore {
            id,
            vault,
            name,
            keystore_type,
            ibm_variant,
            description,
            groups,
            location,
            tls_proxy,
            connection: clear,
            secret_fields: secrets.keys().cloned().collect(),
            sealed_secrets,
            stamps: Stamps::new(&caller.actor, now()),
            revision: 1,
        };
        self.test_connection(&keystore, &secrets).await?;
        if dry_run {
            // A dry run answers what the real call would, name clash included.
            if self
                .store
                .vault_keystores(vault_id)
                .await?
                .iter()
                .any(|k| k.name == keystore.name)
            {
                return Err(Error::duplicate_name(
                    "the keystore name (unique per vault)",
                    &keystore.name,
                ));
            }
            return Ok(keystore);
        }
        self.store.insert_keystore(&keystore).await?;
        self.load_keystore(id).await
    }

    /// A keystore, whoever asks (for the services' own use).
    pub(crate) async fn load_keystore(&self, id: Uuid) -> Result<Keystore> {
        self.store
            .get_keystore(id)
            .await?
            .ok_or_else(|| Error::not_found("keystore", id))
    }

    /// A keystore the caller may act on with `permission`; one in a vault hidden from it does
    /// not exist.
    pub(crate) async fn keystore_for(
        &self,
        caller: &Caller,
        permission: Permission,
        id: Uuid,
    ) -> Result<Keystore> {
        let k = self.load_keystore(id).await?;
        caller.require_in(permission, k.vault.id, || Error::not_found("keystore", id))?;
        Ok(k)
    }

    pub async fn get_keystore(&self, caller: &Caller, id: Uuid) -> Result<Keystore> {
        self.keystore_for(caller, Permission::Read, id).await
    }

    pub async fn update_keystore(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        patch: KeystorePatch,
    ) -> Result<Keystore> {
        let mut k = self
            .keystore_for(caller, Permission::KeystoreWrite, id)
            .await?;
        etag::check(if_match, k.revision, id)?;
        let read_revision = k.revision;
        if let Some(n) = &patch.name {
            validate::keystore_name(n)?;
        }
        set(&mut k.name, patch.name);
        set(&mut k.description, patch.description);
        if let Some(g) = patch.groups {
            k.groups = if g.is_empty() {
                vec![k.name.clone()]
            } else {
                g
            };
        }
        set(&mut k.location, patch.location);
        set(&mut k.tls_proxy, patch.tls_proxy);
        check_common(&k.description, &k.groups, &k.location, &k.tls_proxy)?;
        let specs = keystore_types::connection_fields(k.keystore_type, k.ibm_variant);
        keystore_types::refuse_foreign_fields(specs, &patch.connection)?;
        let mut changed_secrets = Map::new();
        for spec in specs {
            let Some(value) = patch.connection.get(spec.name).filter(|v| !v.is_null()) else {
                continue;
            };
            // Clients echo masked secrets back as "": that means "unchanged".
            if spec.secret && value.as_str() == Some("") {
                continue;
            }
            let checked = keystore_types::check_value(spec, value)?;
            if spec.locked && k.connection.get(spec.name) != Some(&checked) {
                return Err(Error::invalid_field(
                    spec.name,
                    format!(
                        "{} identifies the connected keystore and cannot be changed; connect a new keystore instead",
                        spec.name
                    ),
                ));
            }
            if spec.secret {
                changed_secrets.insert(spec.name.to_owned(), checked);
            } else {
                k.connection.insert(spec.name.to_owned(), checked);
            }
        }
        if !changed_secrets.is_empty() {
            // Secrets are write-only: a change replaces the whole sealed set with the fields sent,
            // so every secret the type requires must be sent together.
            for spec in specs.iter().filter(|s| s.secret && s.required) {
                if !changed_secrets.contains_key(spec.name) {
                    return Err(Error::invalid_field(
                        spec.name,
                        format!(
                            "send {} together with the other credentials when changing them",
                            spec.name
                        ),
                    ));
                }
            }
            keystore_types::check_combinations(
                k.keystore_type,
                &CheckedConnection {
                    clear: k.connection.clone(),
                    secrets: changed_secrets.clone(),
                },
            )?;
            k.secret_fields = changed_secrets.keys().cloned().collect();
            k.sealed_secrets = self
                .seal_connection_secrets(k.vault.id, id, &changed_secrets)
                .await?;
        }
        if !patch.connection.is_empty() {
            // Changed credentials or endpoints are proven before they replace working ones.
            let secrets = if changed_secrets.is_empty() {
                self.connection_secrets(&k).await?
            } else {
                changed_secrets
            };
            self.test_connection(&k, &secrets).await?;
        }
        k.revision += 1;
        k.stamps.touch(&caller.actor, now());
        self.store.update_keystore(&k, read_revision).await?;
        self.load_keystore(id).await
    }

    /// `DELETE /keystores/{id}` with its four modes (decisions.md §2).
    pub async fn delete_keystore(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        mode: KeystoreDeleteMode,
    ) -> Result<()> {
        let keystore = self
            .keystore_for(caller, Permission::KeystoreDelete, id)
            .await?;
        etag::check(if_match, keystore.revision, id)?;
        let targeting = self.store.keys_targeting_keystore(id).await?;
        if mode == KeystoreDeleteMode::Restrict || keystore.is_internal() {
            distribution::check_restricted_disconnect(&keystore, &targeting)?;
        }
        let acts_remotely = matches!(
            mode,
            KeystoreDeleteMode::Deactivate | KeystoreDeleteMode::Destroy
        );
        if mode == KeystoreDeleteMode::Destroy && !keystore.is_internal() {
            self.refuse_destroying_last_copies(&keystore, &targeting)
                .await?;
        }
        if acts_remotely
            && !keystore.is_internal()
            && let Some(connector) = self.connector(&keystore).await?
        {
            self.act_on_copies(connector.as_ref(), &keystore, &targeting, mode)
                .await?;
        }
        if acts_remotely
            && !keystore.is_internal()
            && !self.has_connector(keystore.keystore_type)
            && targeting.iter().any(|k| k.state.lives_in_keystores())
        {
            // Never report remote work that could not be done.
            return Err(Error::KeystoreUnavailable(format!(
                "keystore '{}' cannot {mode} its key copies: {}. Nothing was changed; use mode=disconnect to unlink \
                 it and leave its remote material untouched",
                keystore.name,
                distribution::connector_unavailable_message(keystore.keystore_type)
            )));
        }
        let mut changes = Vec::with_capacity(targeting.len());
        for mut key in targeting {
            let read_revision = key.revision;
            // External copies stay where they are until connectors can reach them; the key only
            // drops the keystore from its targets.
            for entry in key
                .status_in_keystores
                .iter_mut()
                .filter(|s| s.keystore.id == id)
            {
                distribution::mark_removed(entry);
            }
            key.revision += 1;
            key.stamps.updated_at = now();
            changes.push((key, read_revision));
        }
        self.store
            .delete_keystore(id, keystore.revision, &changes)
            .await
    }

    /// `deactivate` / `destroy` on every copy an external keystore holds before it is unlinked.
    /// A failure stops the deletion (what was done stays done; a retry finds it done).
    async fn act_on_copies(
        &self,
        connector: &dyn Connector,
        keystore: &Keystore,
        targeting: &[ManagedKey],
        mode: KeystoreDeleteMode,
    ) -> Result<()> {
        for key in targeting {
            let Some(copy) = self.store.external_copy(keystore.id, key.id).await? else {
                continue;
            };
            let failed = |f: crate::connector::RemoteFailure| {
                Error::KeystoreUnavailable(format!(
                    "keystore '{}' could not {mode} the copy of key '{}' ({}): {f}. The keystore was not deleted",
                    keystore.name, key.label, key.id
                ))
            };
            let Some(remote) = connector
                .find_copy(copy.remote_id.as_deref(), &copy.label, key.id)
                .await
                .map_err(failed)?
            else {
                continue;
            };
            if mode == KeystoreDeleteMode::Destroy {
                connector.destroy(&remote).await.map_err(failed)?;
            } else {
                connector
                    .set_enabled(&remote, false)
                    .await
                    .map_err(failed)?;
            }
        }
        Ok(())
    }

    pub async fn keystore_status(&self, caller: &Caller, id: Uuid) -> Result<KeystoreStatus> {
        let k = self.keystore_for(caller, Permission::Read, id).await?;
        if k.is_internal() {
            self.store.ping().await?;
            return Ok(KeystoreStatus {
                health_status: HealthStatus::Ok,
                last_heartbeat: Some(now()),
                message: "Internal keystore is available: its key store answered.".to_owned(),
            });
        }
        let Some(connector) = self.connector(&k).await? else {
            return Ok(KeystoreStatus {
                health_status: HealthStatus::ConfigurationError,
                last_heartbeat: None,
                message: distribution::connector_unavailable_message(k.keystore_type),
            });
        };
        let at = now();
        let status = match connector.test().await {
            Ok(()) => KeystoreStatus {
                health_status: HealthStatus::Ok,
                last_heartbeat: Some(at),
                message: format!(
                    "Keystore '{}' answered; its credentials and permissions were verified.",
                    k.name
                ),
            },
            Err(failure) => KeystoreStatus {
                health_status: failure.kind.health(),
                last_heartbeat: None,
                message: format!("Keystore '{}' failed its check: {failure}", k.name),
            },
        };
        self.observed.note(k.id, status.health_status);
        Ok(status)
    }

    /// Keystores in the vaults the caller may list, within the query's filters.
    pub async fn list_keystores(
        &self,
        caller: &Caller,
        mut query: KeystoreQuery,
    ) -> Result<Page<Keystore>> {
        caller.narrow_listing(&mut query.vault_ids)?;
        self.store.list_keystores(&query).await
    }

    /// Keys installed in a keystore (never pre-active or destroyed ones).
    pub async fn list_keystore_keys(
        &self,
        caller: &Caller,
        id: Uuid,
        mut query: KeyQuery,
    ) -> Result<Page<ManagedKey>> {
        self.keystore_for(caller, Permission::List, id).await?;
        query.scope = KeyScope::InKeystore(id);
        self.store.list_managed_keys(&query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_connection_values() {
        let mut connection = Map::new();
        connection.insert(
            "aws_secret_access_key".into(),
            Value::String("canary-secret-4242".into()),
        );
        let new = NewKeystore {
            connection: connection.clone(),
            ..Default::default()
        };
        let patch = KeystorePatch {
            connection,
            ..Default::default()
        };
        for shown in [format!("{new:?}"), format!("{patch:?}")] {
            assert!(shown.contains("aws_secret_access_key"), "{shown}");
            assert!(!shown.contains("canary-secret-4242"), "{shown}");
        }
    }
}
