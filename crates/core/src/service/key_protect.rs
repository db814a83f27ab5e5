//! Key management through an internal keystore's Key Protect v2 API: the keys a Key Protect
//! client creates or imports there are managed keys of the keystore's vault, under the template
//! that installs AES-256 keys into that keystore, and its lifecycle calls are the managed ones.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{InstalledKey, Keyplane, NewKey, now};
use crate::authz::{Caller, Permission};
use crate::distribution;
use crate::error::{Error, ErrorCode, Result};
use crate::etag::{self, IfMatch};
use crate::lifecycle::KeyAction;
use crate::model::*;
use crate::ports::{DEFAULT_KEY_RING, ImportToken, ImportedMaterial, KeyAlias};
use crate::query::{Paging, TemplateQuery};

/// Longest life of an import token (Key Protect's limit: one day).
pub const MAX_IMPORT_TOKEN_SECONDS: i64 = 86_400;
/// Most retrievals one import token allows.
pub const MAX_IMPORT_TOKEN_RETRIEVALS: u32 = 500;
const IMPORT_NONCE_LEN: usize = 12;
/// Most aliases one key has (Key Protect's limit).
pub const MAX_ALIASES_PER_KEY: usize = 5;
/// Words Key Protect keeps out of aliases: they name its own paths.
const RESERVED_ALIASES: &[&str] = &[
    "allowed_ip",
    "key",
    "keys",
    "metadata",
    "policy",
    "policies",
    "registration",
    "registrations",
    "ring",
    "rings",
    "rotate",
    "wrap",
    "unwrap",
    "rewrap",
    "version",
    "versions",
];

/// The characters and length of an alias, as a pattern (a UUID or a reserved word also fits it).
pub const ALIAS_PATTERN: &str = "^[A-Za-z0-9_-]{2,90}$";

/// Key Protect's rule for aliases: 2 to 90 letters, digits, `-` and `_`, not a UUID and not one of
/// its reserved words.
pub fn check_alias(field: &str, alias: &str) -> Result<()> {
    let len = alias.chars().count();
    if !(2..=90).contains(&len)
        || !alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::invalid_field(
            field,
            format!("{field} is 2 to 90 letters, digits, '-' and '_'"),
        ));
    }
    if Uuid::parse_str(alias).is_ok() || RESERVED_ALIASES.contains(&alias) {
        return Err(Error::invalid_field(
            field,
            format!(
                "{field} cannot be a UUID or one of: {}",
                RESERVED_ALIASES.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A key's name: at least 2 characters, as Key Protect has it, and a key label (up to 255 of
/// letters, digits, spaces and `. _ / -`), which it becomes.
fn check_name(name: &str) -> Result<()> {
    if name.chars().count() < 2 {
        return Err(Error::invalid_field(
            "resources[0].name",
            "a key's name is at least 2 characters",
        ));
    }
    crate::validate::key_label(name).map_err(|_| {
        Error::invalid_field(
            "resources[0].name",
            "a key's name is up to 255 letters, digits, spaces and . _ / -",
        )
    })
}

/// How a Key Protect call names a key: its id, an alias or its name, and the key ring the client
/// says it is in (`X-Kms-Key-Ring`), which is then checked.
#[derive(Debug, Clone)]
pub struct KeyProtectRef {
    pub key: String,
    pub key_ring: Option<String>,
}

/// What a Key Protect client says of a key it creates.
pub struct NewKeyProtectKey<'a> {
    pub name: String,
    pub description: Option<String>,
    pub aliases: &'a [String],
}

/// Key material in a Key Protect create or rotate request.
pub enum SuppliedMaterial<'a> {
    /// None given: keyplane generates it.
    Generate,
    Plain(&'a [u8]),
    /// Encrypted under the keystore's import token, with its nonce encrypted under the material.
    UnderImportToken {
        oaep_sha256: bool,
        payload: &'a [u8],
        iv: &'a [u8],
        encrypted_nonce: &'a [u8],
    },
}

/// An import token as Key Protect shows it; the key pair's public half and the nonce only on
/// retrieval.
pub struct ImportTokenView {
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_retrievals: u32,
    pub remaining_retrievals: u32,
    pub public_key_der: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

fn view(token: &ImportToken, secret_parts: bool) -> ImportTokenView {
    ImportTokenView {
        created_at: token.created_at,
        expires_at: token.expires_at,
        max_retrievals: token.max_retrievals,
        remaining_retrievals: token.remaining_retrievals,
        public_key_der: secret_parts.then(|| token.key_pair.public_key_der.clone()),
        nonce: secret_parts.then(|| token.nonce.clone()),
    }
}

fn no_token(keystore: &Keystore) -> Error {
    Error::Conflict {
        code: ErrorCode::InvalidStateTransition,
        message: format!(
            "keystore '{}' has no live import token: create one (POST /api/v2/import_token) \
             and retrieve it before importing with it",
            keystore.name
        ),
        params: vec![keystore.id.to_string()],
    }
}

/// Key Protect calls carry no ETag: they act on the key as just read, and a change made in
/// between still fails as a stale one.
pub(super) fn as_read(key: &ManagedKey) -> IfMatch {
    IfMatch::parse(&etag::etag(key.revision, key.id))
}

impl Keyplane {
    /// Replaces the keystore's import token with a new RSA-4096 one.
    pub async fn create_import_token(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        expiration_seconds: i64,
        max_retrievals: u32,
    ) -> Result<ImportTokenView> {
        let keystore = self
            .instance_for(caller, Permission::KeyCreate, keystore_id)
            .await?;
        if !(1..=MAX_IMPORT_TOKEN_SECONDS).contains(&expiration_seconds) {
            return Err(Error::invalid_field(
                "expiration",
                format!("expiration is 1 to {MAX_IMPORT_TOKEN_SECONDS} seconds"),
            ));
        }
        if !(1..=MAX_IMPORT_TOKEN_RETRIEVALS).contains(&max_retrievals) {
            return Err(Error::invalid_field(
                "maxAllowedRetrievals",
                format!("maxAllowedRetrievals is 1 to {MAX_IMPORT_TOKEN_RETRIEVALS}"),
            ));
        }
        self.engine.open_vault(keystore.vault.id).await?;
        let engine = self.engine.clone();
        let vault_id = keystore.vault.id;
        // RSA-4096 generation takes up to seconds: kept off the async workers.
        let key_pair =
            tokio::task::spawn_blocking(move || engine.new_import_key_pair(vault_id, keystore_id))
                .await
                .map_err(|e| Error::internal(format!("import key generation task: {e}")))??;
        let nonce = self.engine.random_data_key()?[..IMPORT_NONCE_LEN].to_vec();
        let created_at = now();
        let token = ImportToken {
            keystore_id,
            key_pair,
            nonce,
            created_at,
            expires_at: created_at + chrono::Duration::seconds(expiration_seconds),
            max_retrievals,
            remaining_retrievals: max_retrievals,
        };
        self.store.save_import_token(&token).await?;
        Ok(view(&token, false))
    }

    /// Retrieves the keystore's live import token (counted against its retrievals).
    pub async fn retrieve_import_token(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
    ) -> Result<ImportTokenView> {
        let keystore = self
            .instance_for(caller, Permission::KeyCreate, keystore_id)
            .await?;
        match self.store.retrieve_import_token(keystore_id).await? {
            Some(token) => Ok(view(&token, true)),
            None => Err(Error::NotFound {
                resource: "import token",
                id: format!(
                    "of keystore '{}' (none created, expired, or retrieved as often as allowed)",
                    keystore.name
                ),
            }),
        }
    }

    /// Turns what a client sent into material the engine can import; an import-token payload
    /// needs the keystore's token, live and retrieved at least once.
    async fn imported<'a>(
        &self,
        keystore: &Keystore,
        supplied: &'a SuppliedMaterial<'a>,
        token: &'a mut Option<ImportToken>,
    ) -> Result<Option<ImportedMaterial<'a>>> {
        Ok(match supplied {
            SuppliedMaterial::Generate => None,
            SuppliedMaterial::Plain(bytes) => Some(ImportedMaterial::Plain(bytes)),
            SuppliedMaterial::UnderImportToken {
                oaep_sha256,
                payload,
                iv,
                encrypted_nonce,
            } => {
                *token =
                    self.store.import_token(keystore.id).await?.filter(|t| {
                        t.expires_at > now() && t.remaining_retrievals < t.max_retrievals
                    });
                let token: &'a Option<ImportToken> = token;
                let token = token.as_ref().ok_or_else(|| no_token(keystore))?;
                Some(ImportedMaterial::Encrypted {
                    keystore_id: keystore.id,
                    sealed_private_key: &token.key_pair.sealed_private_key,
                    oaep_sha256: *oaep_sha256,
                    payload,
                    nonce_proof: Some((iv, encrypted_nonce, &token.nonce)),
                })
            }
        })
    }

    /// The template a Key Protect create uses: an unarchived AES-256 template of the keystore's
    /// vault whose keystore group takes in this keystore (the oldest, when several do).
    async fn key_protect_template(&self, keystore: &Keystore) -> Result<Template> {
        let vault_keystores = self.store.vault_keystores(keystore.vault.id).await?;
        let mut query = TemplateQuery {
            vault_ids: vec![keystore.vault.id],
            algorithms: vec![Algorithm::Aes],
            states: vec![TemplateState::Unarchived],
            paging: Paging {
                limit: 1000,
                offset: 0,
            },
            ..TemplateQuery::default()
        };
        query.size.min = Some(256);
        query.size.max = Some(256);
        let page = self.store.list_templates(&query).await?;
        page.items
            .into_iter()
            .filter(|t| t.key.algorithm == Algorithm::Aes && t.key.size == 256)
            .filter(|t| {
                distribution::resolve_targets(t.keystore(), &vault_keystores)
                    .iter()
                    .any(|k| k.id == keystore.id)
            })
            .min_by_key(|t| t.stamps.created_at)
            .ok_or_else(|| {
                Error::conflict(
                    ErrorCode::InvalidStateTransition,
                    format!(
                        "no template of vault '{}' installs AES-256 keys into keystore '{}'; \
                         create one whose keystore group holds it",
                        keystore.vault.name, keystore.name
                    ),
                )
            })
    }

    /// Creates (or imports) a root key in an internal keystore, as Key Protect's `POST /keys`:
    /// active, in `key_ring` (`default` when none is named) and with its aliases, in one write.
    pub async fn key_protect_create(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ring: Option<&str>,
        new_key: NewKeyProtectKey<'_>,
        supplied: &SuppliedMaterial<'_>,
    ) -> Result<InstalledKey> {
        let NewKeyProtectKey {
            name,
            description,
            aliases,
        } = new_key;
        let keystore = self
            .instance_for(caller, Permission::KeyCreate, keystore_id)
            .await?;
        if let Some(ring) = key_ring {
            self.check_key_ring_exists(keystore_id, ring).await?;
        }
        check_name(&name)?;
        if aliases.len() > MAX_ALIASES_PER_KEY {
            return Err(Error::invalid_field(
                "resources[0].aliases",
                format!("a key has at most {MAX_ALIASES_PER_KEY} aliases"),
            ));
        }
        // A name is never another key's alias, nor an alias another key's name: lookups try
        // aliases first.
        if self.store.key_alias(keystore_id, &name).await?.is_some() {
            return Err(Error::duplicate_name("alias", &name));
        }
        for (i, alias) in aliases.iter().enumerate() {
            let field = crate::error::indexed_field("resources[0].aliases", i, aliases.len());
            check_alias(&field, alias)?;
            let taken = aliases[..i].contains(alias)
                || self.store.key_alias(keystore_id, alias).await?.is_some()
                || self
                    .store
                    .internal_copy_by_key_label(keystore_id, alias)
                    .await?
                    .is_some();
            if taken {
                return Err(Error::duplicate_name("alias", alias));
            }
        }
        let template = self.key_protect_template(&keystore).await?;
        let mut token = None;
        let imported = self.imported(&keystore, supplied, &mut token).await?;
        let input = NewKey {
            template_name: Some(template.name.clone()),
            vault_id: Some(keystore.vault.id),
            label: Some(name),
            description,
            tags: None,
        };
        let placement = crate::ports::KeyProtectPlacement {
            keystore_id,
            key_ring: key_ring.unwrap_or(DEFAULT_KEY_RING).to_owned(),
            aliases: aliases.to_vec(),
            created_at: now(),
            created_by: caller.actor.0.clone(),
        };
        // Key Protect creates keys in use: the activation is part of the create.
        let extras = super::keys::CreateExtras {
            supplied: imported.as_ref(),
            active: true,
            key_protect: Some(placement),
        };
        let key = self.create_key_with(caller, input, extras).await?;
        let copy = self
            .store
            .internal_copies_of_key(key.id)
            .await?
            .into_iter()
            .find(|c| c.keystore_id == keystore_id)
            .ok_or_else(|| {
                Error::internal("a key created for a keystore is not installed there")
            })?;
        Ok(InstalledKey { copy, key })
    }

    /// A key's versions (Key Protect `GET /keys/{id}/versions`).
    pub async fn key_protect_versions(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
    ) -> Result<(InstalledKey, Vec<KeyVersion>)> {
        let installed = self.key_protect_key(caller, keystore_id, key_ref).await?;
        let versions = self.store.key_versions(installed.key.id).await?;
        Ok((installed, versions))
    }

    /// For a page of keys, in two reads: each key's aliases (by its id in the keystore) and
    /// whether its current material was imported.
    pub async fn key_protect_facts(
        &self,
        keystore_id: Uuid,
        page: &[InstalledKey],
    ) -> Result<(
        std::collections::HashMap<Uuid, Vec<KeyAlias>>,
        std::collections::HashSet<Uuid>,
    )> {
        let in_keystore: Vec<Uuid> = page.iter().map(|k| k.copy.key_id_in_keystore).collect();
        let mut aliases: std::collections::HashMap<Uuid, Vec<KeyAlias>> = Default::default();
        for a in self.store.key_aliases_of(keystore_id, &in_keystore).await? {
            aliases.entry(a.key_id_in_keystore).or_default().push(a);
        }
        let managed: Vec<Uuid> = page.iter().map(|k| k.key.id).collect();
        let imported_versions = self.store.imported_versions_of(&managed).await?;
        let imported = page
            .iter()
            .filter(|k| imported_versions.contains(&(k.key.id, k.key.version)))
            .map(|k| k.key.id)
            .collect();
        Ok((aliases, imported))
    }

    /// Gives the key another alias (Key Protect `POST /keys/{id}/aliases/{alias}`).
    pub async fn key_protect_add_alias(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
        alias: &str,
    ) -> Result<KeyAlias> {
        let installed = self.key_protect_key(caller, keystore_id, key_ref).await?;
        Self::check_key(caller, Permission::KeyEdit, &installed.key)?;
        check_alias("alias", alias)?;
        self.alias_is_no_other_keys_name(keystore_id, &installed, alias)
            .await?;
        let record = KeyAlias {
            keystore_id,
            alias: alias.to_owned(),
            key_id_in_keystore: installed.copy.key_id_in_keystore,
            created_at: now(),
            created_by: caller.actor.0.clone(),
        };
        crate::audit::note_target(
            "managed_keys",
            installed.key.id,
            Some(installed.key.vault.id),
        );
        self.store
            .add_key_alias(&record, MAX_ALIASES_PER_KEY)
            .await?;
        Ok(record)
    }

    /// An alias must not be another key's name in the keystore: lookups try aliases first, so it
    /// would take that name's calls.
    async fn alias_is_no_other_keys_name(
        &self,
        keystore_id: Uuid,
        installed: &InstalledKey,
        alias: &str,
    ) -> Result<()> {
        match self
            .store
            .internal_copy_by_key_label(keystore_id, alias)
            .await?
        {
            Some(other) if other.managed_key_id != installed.key.id => {
                Err(Error::duplicate_name("alias", alias))
            }
            _ => Ok(()),
        }
    }

    /// Takes an alias from the key (Key Protect `DELETE /keys/{id}/aliases/{alias}`).
    pub async fn key_protect_remove_alias(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
        alias: &str,
    ) -> Result<()> {
        let installed = self.key_protect_key(caller, keystore_id, key_ref).await?;
        Self::check_key(caller, Permission::KeyEdit, &installed.key)?;
        crate::audit::note_target(
            "managed_keys",
            installed.key.id,
            Some(installed.key.vault.id),
        );
        self.store
            .remove_key_alias(keystore_id, installed.copy.key_id_in_keystore, alias)
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::NotFound {
                    resource: "alias",
                    id: format!(
                        "{} of key {}",
                        alias.escape_debug(),
                        installed.copy.key_id_in_keystore
                    ),
                },
                other => other,
            })
    }

    /// The internal keystore a Key Protect client addresses as its instance.
    pub async fn key_protect_instance(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
    ) -> Result<Keystore> {
        self.instance_for(caller, Permission::KeyUse, keystore_id)
            .await
    }

    /// Whether deleting the keystore's keys takes a second person (its vault's dual control),
    /// as Key Protect's `dualAuthDelete` reports it.
    pub async fn key_protect_dual_auth_delete(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
    ) -> Result<bool> {
        let keystore = self
            .instance_for(caller, Permission::KeyUse, keystore_id)
            .await?;
        self.store.dual_control(keystore.vault.id).await
    }

    /// The key an internal keystore holds under an id, an alias or its name, in the key ring the
    /// call names, if it names one.
    pub async fn key_protect_key(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
    ) -> Result<InstalledKey> {
        let installed = self
            .key_protect_lookup(caller, keystore_id, &key_ref.key)
            .await?;
        match &key_ref.key_ring {
            Some(ring) if *ring != installed.copy.key_ring => Err(Error::NotFound {
                resource: "key",
                id: format!(
                    "{} in key ring '{}'",
                    key_ref.key.escape_debug(),
                    ring.escape_debug()
                ),
            }),
            _ => Ok(installed),
        }
    }

    async fn key_protect_lookup(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        id_or_alias: &str,
    ) -> Result<InstalledKey> {
        if let Ok(id) = Uuid::parse_str(id_or_alias) {
            return self.installed_key(caller, keystore_id, id).await;
        }
        let keystore = self
            .instance_for(caller, Permission::KeyUse, keystore_id)
            .await?;
        // An alias first, then the key's name as it was given, then its label in the keystore.
        let by_alias = match self.store.key_alias(keystore_id, id_or_alias).await? {
            Some(a) => {
                self.store
                    .internal_copy(keystore_id, a.key_id_in_keystore)
                    .await?
            }
            None => None,
        };
        let by_name = match by_alias {
            Some(copy) => Some(copy),
            None => {
                self.store
                    .internal_copy_by_key_label(keystore_id, id_or_alias)
                    .await?
            }
        };
        let found = match by_name {
            Some(copy) => Some(copy),
            None => {
                self.store
                    .internal_copy_by_label(keystore_id, id_or_alias)
                    .await?
            }
        };
        let copy = found.ok_or_else(|| Error::NotFound {
            resource: "key",
            id: format!(
                "with alias '{}' (not installed in keystore '{}')",
                id_or_alias.escape_debug(),
                keystore.name
            ),
        })?;
        let key = self.load_key(copy.managed_key_id).await?;
        Ok(InstalledKey { copy, key })
    }

    /// Key Protect's enable and disable: the managed key's activate and deactivate. Asking for the
    /// state the key is already in changes nothing.
    pub async fn key_protect_set_enabled(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
        enabled: bool,
    ) -> Result<InstalledKey> {
        let installed = self.key_protect_key(caller, keystore_id, key_ref).await?;
        let key = &installed.key;
        let action = if enabled {
            KeyAction::Activate
        } else {
            KeyAction::Deactivate
        };
        // Decided before the no-op: a caller that may not enable learns nothing by asking.
        Self::check_key(caller, Permission::for_lifecycle(action, key.state), key)?;
        if matches!(
            (enabled, key.state),
            (true, KeyState::Active) | (false, KeyState::Deactivated)
        ) {
            return Ok(installed);
        }
        self.apply_with(caller, key.id, Some(&as_read(key)), action, None)
            .await?;
        self.key_protect_key(caller, keystore_id, key_ref).await
    }

    /// Key Protect's rotate: a new version, generated or imported.
    pub async fn key_protect_rotate(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: &KeyProtectRef,
        supplied: &SuppliedMaterial<'_>,
    ) -> Result<InstalledKey> {
        let installed = self.key_protect_key(caller, keystore_id, key_ref).await?;
        let keystore = self
            .instance_for(caller, Permission::KeyUse, keystore_id)
            .await?;
        let mut token = None;
        let imported = self.imported(&keystore, supplied, &mut token).await?;
        self.apply_with(
            caller,
            installed.key.id,
            Some(&as_read(&installed.key)),
            KeyAction::Rotate,
            imported.as_ref(),
        )
        .await?;
        self.key_protect_key(caller, keystore_id, key_ref).await
    }
}
