use uuid::Uuid;

use super::{Keyplane, now, set};
use crate::authz::{Caller, Permission};
use crate::distribution;
use crate::error::{Error, ErrorCode, Result};
use crate::etag::{self, IfMatch};
use crate::model::*;
use crate::naming::NamingScheme;
use crate::query::TemplateQuery;
use crate::validate::{self, DateDuration};

/// Key properties as sent on create; `None` marks a missing field.
#[derive(Debug, Clone, Default)]
pub struct KeyPropertiesInput {
    pub algorithm: Option<Algorithm>,
    pub size: Option<u32>,
    pub activation_date: Option<String>,
    pub expiration_date: Option<String>,
    pub state: Option<InitialKeyState>,
    pub deactivate_on_rotation: Option<bool>,
    /// An ISO-8601 duration; empty clears it.
    pub rotation_interval: Option<String>,
    pub deactivate_on_expiration: Option<bool>,
    /// An ISO-8601 duration; empty clears it.
    pub destroy_after_deactivation: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewTemplate {
    pub vault_id: Option<Uuid>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub naming_scheme: Option<String>,
    pub types: Option<Vec<TemplateType>>,
    pub state: Option<TemplateState>,
    pub key: Option<KeyPropertiesInput>,
    pub keystores: Option<Vec<TemplateKeystore>>,
    pub managing_systems: Option<Vec<ManagingSystem>>,
}

#[derive(Debug, Clone, Default)]
pub struct KeyPropertiesPatch {
    /// Immutable: accepted only when equal to the current value.
    pub algorithm: Option<Algorithm>,
    /// Immutable: accepted only when equal to the current value.
    pub size: Option<u32>,
    pub activation_date: Option<String>,
    pub expiration_date: Option<String>,
    pub state: Option<InitialKeyState>,
    pub deactivate_on_rotation: Option<bool>,
    /// An ISO-8601 duration; empty clears it.
    pub rotation_interval: Option<String>,
    pub deactivate_on_expiration: Option<bool>,
    /// An ISO-8601 duration; empty clears it.
    pub destroy_after_deactivation: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TemplateKeystorePatch {
    /// Immutable: accepted only when equal to the current value.
    pub keystore_type: Option<KeystoreType>,
    pub group: Option<String>,
    pub naming_scheme: Option<String>,
    pub properties: KeystoreKeyProperties,
}

#[derive(Debug, Clone, Default)]
pub struct TemplatePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Immutable: accepted only when equal to the current value.
    pub naming_scheme: Option<String>,
    pub key: Option<KeyPropertiesPatch>,
    pub keystores: Option<Vec<TemplateKeystorePatch>>,
}

fn immutable(field: &str) -> Error {
    Error::invalid_field(
        field,
        format!("{field} cannot be changed after the template is created"),
    )
}

fn check_keystores(entries: &[TemplateKeystore], algorithm: Algorithm, size: u32) -> Result<()> {
    if entries.len() != 1 {
        return Err(Error::invalid_field(
            "keystores",
            format!(
                "a template has exactly one keystores entry (got {})",
                entries.len()
            ),
        ));
    }
    let entry = &entries[0];
    validate::short_text("keystores.group", &entry.group, 100)?;
    if let Some(scheme) = &entry.naming_scheme {
        NamingScheme::parse(scheme)
            .map_err(|e| Error::invalid_field("keystores.naming_scheme", e.to_string()))?;
    }
    distribution::check_algorithm(entry.keystore_type, algorithm, size)?;
    check_type_properties(entry)?;
    if entry.keystore_type == KeystoreType::GoogleKms {
        distribution::google_key_version(algorithm, size, &entry.properties)
            .map_err(|why| Error::invalid_field("keystores", why))?;
    }
    Ok(())
}

/// Keystore-specific properties belong to their own keystore type only.
fn check_type_properties(entry: &TemplateKeystore) -> Result<()> {
    let p = &entry.properties;
    let google = p.google_key_protection_level.is_some()
        || p.google_key_purpose.is_some()
        || p.google_kms_algorithm.is_some();
    let azure = p.azure_key_protection_level.is_some() || p.azure_key_operations.is_some();
    let cca =
        p.cca_usage_control.is_some() || p.cca_key_type.is_some() || p.cca_key_words.is_some();
    let wrong = match entry.keystore_type {
        KeystoreType::GoogleKms => (azure || cca).then_some("azure_*/cca_*"),
        KeystoreType::AzureKeyVault => (google || cca).then_some("google_*/cca_*"),
        KeystoreType::Cca => (google || azure).then_some("google_*/azure_*"),
        _ => (google || azure || cca).then_some("google_*/azure_*/cca_*"),
    };
    if let Some(fields) = wrong {
        return Err(Error::invalid_field(
            "keystores",
            format!(
                "{fields} properties do not apply to {} keystores",
                entry.keystore_type
            ),
        ));
    }
    if let Some(words) = &p.cca_key_words {
        for w in words {
            validate::short_text("keystores.cca_key_words", w, 64)?;
        }
    }
    Ok(())
}

fn check_dates(activation: &str, expiration: &str) -> Result<()> {
    DateDuration::parse("key.activation_date", activation)?;
    DateDuration::parse("key.expiration_date", expiration)?;
    Ok(())
}

impl Keyplane {
    /// Refuses a template whose keys could not live in a keystore its entry reaches now.
    async fn check_placement(
        &self,
        vault_id: Uuid,
        entry: &TemplateKeystore,
        algorithm: Algorithm,
    ) -> Result<()> {
        let keystores = self.store.vault_keystores(vault_id).await?;
        for target in distribution::resolve_targets(entry, &keystores) {
            distribution::check_placement(target, algorithm)?;
        }
        Ok(())
    }

    pub async fn create_template(&self, caller: &Caller, input: NewTemplate) -> Result<Template> {
        let vault_id = input
            .vault_id
            .ok_or_else(|| Error::missing_field("vault.id"))?;
        let vault = self
            .target_vault(caller, Permission::TemplateWrite, vault_id)
            .await?;
        let name = input.name.ok_or_else(|| Error::missing_field("name"))?;
        validate::template_name("name", &name)?;
        let description = input.description.unwrap_or_default();
        validate::description("description", &description)?;
        let key = input.key.ok_or_else(|| Error::missing_field("key"))?;
        let algorithm = key
            .algorithm
            .ok_or_else(|| Error::missing_field("key.algorithm"))?;
        let size = key.size.ok_or_else(|| Error::missing_field("key.size"))?;
        let key = KeyProperties {
            algorithm,
            size,
            activation_date: key.activation_date.unwrap_or_else(|| "P0D".to_owned()),
            expiration_date: key.expiration_date.unwrap_or_else(|| "P1Y".to_owned()),
            state: key.state.unwrap_or(InitialKeyState::PreActivation),
            deactivate_on_rotation: key.deactivate_on_rotation.unwrap_or(false),
            schedule: KeySchedule {
                rotation_interval: key.rotation_interval.filter(|t| !t.is_empty()),
                deactivate_on_expiration: key.deactivate_on_expiration.unwrap_or(false),
                destroy_after_deactivation: key
                    .destroy_after_deactivation
                    .filter(|t| !t.is_empty()),
            },
        };
        check_dates(&key.activation_date, &key.expiration_date)?;
        self.check_schedule_change(
            caller,
            vault_id,
            &KeySchedule::default(),
            &key.schedule,
            "key.",
        )
        .await?;
        let keystores = input
            .keystores
            .ok_or_else(|| Error::missing_field("keystores"))?;
        check_keystores(&keystores, algorithm, size)?;
        self.check_placement(vault_id, &keystores[0], algorithm)
            .await?;
        let naming_scheme = input.naming_scheme.filter(|s| !s.is_empty());
        if let Some(s) = &naming_scheme {
            NamingScheme::parse(s)
                .map_err(|e| Error::invalid_field("naming_scheme", e.to_string()))?;
        }
        let types = input
            .types
            .unwrap_or_else(|| vec![TemplateType::UserDefined]);
        if types.is_empty() {
            return Err(Error::invalid_field(
                "type",
                "type needs at least one value",
            ));
        }
        let template = Template {
            id: new_id(),
            vault,
            name,
            version: 1,
            naming_scheme,
            types,
            state: input.state.unwrap_or(TemplateState::Unarchived),
            key,
            keystores,
            description,
            managing_systems: input
                .managing_systems
                .unwrap_or_else(|| vec![ManagingSystem::Web]),
            keys_count: 0,
            stamps: Stamps::new(&caller.actor, now()),
            revision: 1,
        };
        self.store.insert_template(&template).await?;
        self.load_template(template.id).await
    }

    /// A template, whoever asks (for the services' own use).
    pub(crate) async fn load_template(&self, id: Uuid) -> Result<Template> {
        self.store
            .get_template(id)
            .await?
            .ok_or_else(|| Error::not_found("template", id))
    }

    /// A template the caller may act on with `permission`; one in a vault hidden from it does
    /// not exist.
    async fn template_for(
        &self,
        caller: &Caller,
        permission: Permission,
        id: Uuid,
    ) -> Result<Template> {
        let t = self.load_template(id).await?;
        caller.require_in(permission, t.vault.id, || Error::not_found("template", id))?;
        Ok(t)
    }

    pub async fn get_template(&self, caller: &Caller, id: Uuid) -> Result<Template> {
        self.template_for(caller, Permission::Read, id).await
    }

    pub async fn update_template(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        patch: TemplatePatch,
    ) -> Result<Template> {
        let mut t = self
            .template_for(caller, Permission::TemplateWrite, id)
            .await?;
        etag::check(if_match, t.revision, id)?;
        if t.state == TemplateState::Archived {
            return Err(Error::conflict(
                ErrorCode::TemplateArchived,
                format!(
                    "template '{}' is archived; unarchive it before editing",
                    t.name
                ),
            ));
        }
        if let Some(n) = &patch.name {
            validate::template_name("name", n)?;
        }
        if let Some(d) = &patch.description {
            validate::description("description", d)?;
        }
        if let Some(s) = &patch.naming_scheme
            && Some(s) != t.naming_scheme.as_ref()
            && !(s.is_empty() && t.naming_scheme.is_none())
        {
            return Err(immutable("naming_scheme"));
        }
        let read_revision = t.revision;
        set(&mut t.name, patch.name);
        set(&mut t.description, patch.description);
        if let Some(k) = patch.key {
            if k.algorithm.is_some_and(|a| a != t.key.algorithm) {
                return Err(immutable("key.algorithm"));
            }
            if k.size.is_some_and(|s| s != t.key.size) {
                return Err(immutable("key.size"));
            }
            set(&mut t.key.activation_date, k.activation_date);
            set(&mut t.key.expiration_date, k.expiration_date);
            set(&mut t.key.state, k.state);
            set(&mut t.key.deactivate_on_rotation, k.deactivate_on_rotation);
            let before = t.key.schedule.clone();
            if let Some(interval) = k.rotation_interval {
                t.key.schedule.rotation_interval = Some(interval).filter(|t| !t.is_empty());
            }
            set(
                &mut t.key.schedule.deactivate_on_expiration,
                k.deactivate_on_expiration,
            );
            if let Some(after) = k.destroy_after_deactivation {
                t.key.schedule.destroy_after_deactivation = Some(after).filter(|t| !t.is_empty());
            }
            check_dates(&t.key.activation_date, &t.key.expiration_date)?;
            self.check_schedule_change(caller, t.vault.id, &before, &t.key.schedule, "key.")
                .await?;
        }
        if let Some(entries) = patch.keystores {
            if entries.len() != 1 {
                return Err(Error::invalid_field(
                    "keystores",
                    "a template has exactly one keystores entry",
                ));
            }
            let Some(p) = entries.into_iter().next() else {
                unreachable!("length checked")
            };
            let current = &mut t.keystores[0];
            if p.keystore_type.is_some_and(|k| k != current.keystore_type) {
                return Err(immutable("keystores.type"));
            }
            set(&mut current.group, p.group);
            if p.naming_scheme.is_some() {
                current.naming_scheme = p.naming_scheme.filter(|s| !s.is_empty());
            }
            let props = p.properties;
            let cur = &mut current.properties;
            macro_rules! merge { ($($f:ident),*) => { $( if props.$f.is_some() { cur.$f = props.$f; } )* } }
            merge!(
                google_key_protection_level,
                google_key_purpose,
                google_kms_algorithm,
                azure_key_protection_level,
                azure_key_operations,
                cca_usage_control,
                cca_key_type,
                cca_key_words
            );
            check_keystores(&t.keystores, t.key.algorithm, t.key.size)?;
            self.check_placement(t.vault.id, &t.keystores[0], t.key.algorithm)
                .await?;
        }
        t.version += 1;
        t.revision += 1;
        t.stamps.touch(&caller.actor, now());
        self.store.update_template(&t, read_revision).await?;
        self.load_template(id).await
    }

    pub async fn delete_template(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<()> {
        let t = self
            .template_for(caller, Permission::TemplateDelete, id)
            .await?;
        etag::check(if_match, t.revision, id)?;
        self.store.delete_template(id, t.revision).await
    }

    /// Archive, unarchive or expose: a change of `state` or `type` without a new version.
    async fn change_template(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        change: impl FnOnce(&mut Template) -> Result<()>,
    ) -> Result<Template> {
        let mut t = self
            .template_for(caller, Permission::TemplateWrite, id)
            .await?;
        etag::check(if_match, t.revision, id)?;
        let read_revision = t.revision;
        change(&mut t)?;
        t.revision += 1;
        t.stamps.touch(&caller.actor, now());
        self.store.update_template(&t, read_revision).await?;
        self.load_template(id).await
    }

    pub async fn archive_template(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<Template> {
        self.change_template(caller, id, if_match, |t| {
            if t.state == TemplateState::Archived {
                return Err(Error::invalid_transition(format!(
                    "template '{}' is already archived",
                    t.name
                )));
            }
            t.state = TemplateState::Archived;
            Ok(())
        })
        .await
    }

    pub async fn unarchive_template(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<Template> {
        self.change_template(caller, id, if_match, |t| {
            if t.state == TemplateState::Unarchived {
                return Err(Error::invalid_transition(format!(
                    "template '{}' is not archived",
                    t.name
                )));
            }
            t.state = TemplateState::Unarchived;
            Ok(())
        })
        .await
    }

    /// Turns a shadow template into a regular, visible one.
    pub async fn expose_template(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<Template> {
        self.change_template(caller, id, if_match, |t| {
            if !t.types.contains(&TemplateType::Shadow) {
                return Err(Error::invalid_transition(format!(
                    "template '{}' is not a shadow template; only shadow templates can be exposed",
                    t.name
                )));
            }
            t.types.retain(|x| *x != TemplateType::Shadow);
            if !t.types.contains(&TemplateType::UserDefined) {
                t.types.insert(0, TemplateType::UserDefined);
            }
            Ok(())
        })
        .await
    }

    /// Templates in the vaults the caller may list, within the query's filters.
    pub async fn list_templates(
        &self,
        caller: &Caller,
        mut query: TemplateQuery,
    ) -> Result<Page<Template>> {
        caller.narrow_listing(&mut query.vault_ids)?;
        self.store.list_templates(&query).await
    }
}
