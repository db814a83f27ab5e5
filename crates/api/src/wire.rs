//! Wire shapes of UKO v4 (spec §4): request bodies in, response bodies out.

use chrono::{DateTime, SecondsFormat, Utc};
use keyplane_core::etag;
use keyplane_core::keystore_types;
use keyplane_core::model::*;
use keyplane_core::service;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody, ErrorItem};

pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `{ "href": … }` navigation link.
#[derive(Debug, Serialize, ToSchema)]
pub struct Href {
    pub href: String,
}

/// `{id}` reference in a creation request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdRef {
    #[schema(required, nullable = false, value_type = String, format = Uuid)]
    pub id: Option<String>,
}

pub fn vault_id(field: &str, r: Option<IdRef>) -> Result<Option<Uuid>, ApiError> {
    match r.and_then(|r| r.id) {
        None => Ok(None),
        Some(s) => Uuid::parse_str(&s).map(Some).map_err(|_| {
            keyplane_core::Error::invalid_field(field, format!("{field} '{s}' is not a UUID"))
                .into()
        }),
    }
}

/// `size` arrives as a string or a number and leaves as a string (decisions.md §1).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Text(String),
    Number(u64),
}

impl Size {
    pub fn parse(self, field: &str) -> Result<u32, ApiError> {
        let n = match self {
            Size::Text(s) => s.trim().parse::<u32>().ok(),
            Size::Number(n) => u32::try_from(n).ok(),
        };
        n.ok_or_else(|| {
            keyplane_core::Error::invalid_field(
                field,
                format!("{field} must be a whole number of bits"),
            )
            .into()
        })
    }
}

/// `{name, value}` tag as sent by 4.0 clients.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagBody {
    pub name: String,
    pub value: String,
}

fn tags(list: Option<Vec<TagBody>>) -> Option<Vec<Tag>> {
    list.map(|l| {
        l.into_iter()
            .map(|t| Tag {
                name: t.name,
                value: t.value,
            })
            .collect()
    })
}

/// A new vault. Fields are read as `Option` so that a missing one is the API's own
/// `missing_field` error; the document says which are required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultBody {
    #[schema(required, nullable = false, value_type = String, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(max_length = 200)]
    pub description: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub recovery_key_label: Option<String>,
}

impl VaultBody {
    pub fn into_new(self) -> service::NewVault {
        service::NewVault {
            name: self.name,
            description: self.description,
            recovery_key_label: self.recovery_key_label,
        }
    }
}

/// A vault's changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultPatchBody {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(max_length = 200)]
    pub description: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub recovery_key_label: Option<String>,
}

impl VaultPatchBody {
    pub fn into_patch(self) -> service::VaultPatch {
        service::VaultPatch {
            name: self.name,
            description: self.description,
            recovery_key_label: self.recovery_key_label,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPropertiesBody {
    /// Bits, as a string or a number.
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,9}$")]
    pub size: Option<Size>,
    #[schema(value_type = Option<crate::schema::AlgorithmName>)]
    pub algorithm: Option<Algorithm>,
    pub activation_date: Option<String>,
    pub expiration_date: Option<String>,
    #[schema(value_type = Option<crate::schema::InitialKeyStateName>)]
    pub state: Option<InitialKeyState>,
    pub deactivate_on_rotation: Option<bool>,
    /// Extension: keys made from the template rotate every this long (ISO-8601); `""` clears.
    pub rotation_interval: Option<String>,
    /// Extension: keys made from the template are deactivated as their expiration date begins.
    pub deactivate_on_expiration: Option<bool>,
    /// Extension: keys made from the template are destroyed this long (ISO-8601) after their
    /// deactivation, never sooner than the destroy grace period; `""` clears.
    pub destroy_after_deactivation: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateKeystoreBody {
    #[serde(rename = "type")]
    #[schema(value_type = Option<crate::schema::KeystoreTypeName>)]
    pub keystore_type: Option<KeystoreType>,
    pub group: Option<String>,
    pub naming_scheme: Option<String>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub properties: KeystoreKeyProperties,
}

/// A new template.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    #[schema(required, nullable = false, value_type = IdRef)]
    pub vault: Option<IdRef>,
    #[schema(required, nullable = false, value_type = String, min_length = 1, max_length = 30)]
    pub name: Option<String>,
    pub description: Option<String>,
    pub naming_scheme: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = Option<Vec<crate::schema::TemplateTypeName>>)]
    pub types: Option<Vec<TemplateType>>,
    #[schema(value_type = Option<crate::schema::TemplateStateName>)]
    pub state: Option<TemplateState>,
    #[schema(required, nullable = false, value_type = KeyPropertiesBody)]
    pub key: Option<KeyPropertiesBody>,
    #[schema(required, nullable = false, value_type = Vec<TemplateKeystoreBody>, min_items = 1, max_items = 1)]
    pub keystores: Option<Vec<TemplateKeystoreBody>>,
    #[schema(value_type = Option<Vec<crate::schema::ManagingSystemName>>)]
    pub managing_systems: Option<Vec<ManagingSystem>>,
}

impl TemplateBody {
    pub fn into_new(self) -> Result<service::NewTemplate, ApiError> {
        let key = match self.key {
            None => None,
            Some(k) => Some(service::KeyPropertiesInput {
                algorithm: k.algorithm,
                size: k.size.map(|s| s.parse("key.size")).transpose()?,
                activation_date: k.activation_date,
                expiration_date: k.expiration_date,
                state: k.state,
                deactivate_on_rotation: k.deactivate_on_rotation,
                rotation_interval: k.rotation_interval,
                deactivate_on_expiration: k.deactivate_on_expiration,
                destroy_after_deactivation: k.destroy_after_deactivation,
            }),
        };
        let keystores = match self.keystores {
            None => None,
            Some(list) => Some(
                list.into_iter()
                    .map(|e| {
                        Ok(TemplateKeystore {
                            keystore_type: e.keystore_type.ok_or_else(|| {
                                keyplane_core::Error::missing_field("keystores.type")
                            })?,
                            group: e.group.ok_or_else(|| {
                                keyplane_core::Error::missing_field("keystores.group")
                            })?,
                            naming_scheme: e.naming_scheme.filter(|s| !s.is_empty()),
                            properties: e.properties,
                        })
                    })
                    .collect::<Result<Vec<_>, keyplane_core::Error>>()?,
            ),
        };
        Ok(service::NewTemplate {
            vault_id: vault_id("vault.id", self.vault)?,
            name: self.name,
            description: self.description,
            naming_scheme: self.naming_scheme,
            types: self.types,
            state: self.state,
            key,
            keystores,
            managing_systems: self.managing_systems,
        })
    }
}

/// A template's changes: what its creation set but its vault, types, state and managing systems.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePatchBody {
    #[schema(min_length = 1, max_length = 30)]
    pub name: Option<String>,
    #[schema(max_length = 200)]
    pub description: Option<String>,
    pub naming_scheme: Option<String>,
    pub key: Option<KeyPropertiesBody>,
    #[schema(min_items = 1, max_items = 1)]
    pub keystores: Option<Vec<TemplateKeystoreBody>>,
}

impl TemplatePatchBody {
    pub fn into_patch(self) -> Result<service::TemplatePatch, ApiError> {
        let key = match self.key {
            None => None,
            Some(k) => Some(service::KeyPropertiesPatch {
                algorithm: k.algorithm,
                size: k.size.map(|s| s.parse("key.size")).transpose()?,
                activation_date: k.activation_date,
                expiration_date: k.expiration_date,
                state: k.state,
                deactivate_on_rotation: k.deactivate_on_rotation,
                rotation_interval: k.rotation_interval,
                deactivate_on_expiration: k.deactivate_on_expiration,
                destroy_after_deactivation: k.destroy_after_deactivation,
            }),
        };
        Ok(service::TemplatePatch {
            name: self.name,
            description: self.description,
            naming_scheme: self.naming_scheme,
            key,
            keystores: self.keystores.map(|l| {
                l.into_iter()
                    .map(|e| service::TemplateKeystorePatch {
                        keystore_type: e.keystore_type,
                        group: e.group,
                        naming_scheme: e.naming_scheme,
                        properties: e.properties,
                    })
                    .collect()
            }),
        })
    }
}

/// A new keystore: common fields plus the type's connection fields.
#[derive(Deserialize, ToSchema)]
pub struct KeystoreBody {
    #[serde(rename = "type")]
    #[schema(required, nullable = false, value_type = crate::schema::KeystoreTypeName)]
    pub keystore_type: Option<KeystoreType>,
    /// Required for `ibm_cloud_kms`, refused for other types.
    #[schema(value_type = Option<crate::schema::IbmVariantName>)]
    pub ibm_variant: Option<IbmVariant>,
    #[schema(required, nullable = false, value_type = IdRef)]
    pub vault: Option<IdRef>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub groups: Option<Vec<String>>,
    pub location: Option<String>,
    pub tls_proxy: Option<String>,
    /// Connection fields (`aws_region`, `ibm_api_key`, …) and anything else sent.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rest: Map<String, Value>,
}

/// Connection values may be secrets: only their names are shown.
impl std::fmt::Debug for KeystoreBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoreBody")
            .field("type", &self.keystore_type)
            .field("name", &self.name)
            .field("fields", &self.rest.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KeystoreBody {
    /// The connection fields among the fields no other member took; any other field is refused,
    /// named. `keystore_type` is the exception: the IBM CLI sends it on updates (spec §4.4), and
    /// it is ignored.
    fn connection(rest: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
        let mut connection = Map::new();
        for (field, value) in rest {
            if keystore_types::is_connection_field(&field) {
                connection.insert(field, value);
            } else if field != "keystore_type" {
                return Err(keyplane_core::Error::invalid_field(
                    &field,
                    format!("unknown field `{}`", field.escape_debug()),
                )
                .into());
            }
        }
        Ok(connection)
    }

    pub fn into_new(self) -> Result<service::NewKeystore, ApiError> {
        Ok(service::NewKeystore {
            vault_id: vault_id("vault.id", self.vault)?,
            keystore_type: self.keystore_type,
            ibm_variant: self.ibm_variant,
            name: self.name,
            description: self.description,
            groups: self.groups,
            location: self.location,
            tls_proxy: self.tls_proxy,
            connection: Self::connection(self.rest)?,
        })
    }
}

/// A keystore's changes: common fields and connection fields; its type, variant and vault are
/// its creation's (400 here).
#[derive(Deserialize, ToSchema)]
pub struct KeystorePatchBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub groups: Option<Vec<String>>,
    pub location: Option<String>,
    pub tls_proxy: Option<String>,
    /// Connection fields (`aws_region`, `ibm_api_key`, …) and anything else sent.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rest: Map<String, Value>,
}

/// Connection values may be secrets: only their names are shown.
impl std::fmt::Debug for KeystorePatchBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystorePatchBody")
            .field("name", &self.name)
            .field("fields", &self.rest.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KeystorePatchBody {
    pub fn into_patch(self) -> Result<service::KeystorePatch, ApiError> {
        Ok(service::KeystorePatch {
            name: self.name,
            description: self.description,
            groups: self.groups,
            location: self.location,
            tls_proxy: self.tls_proxy,
            connection: KeystoreBody::connection(self.rest)?,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreateBody {
    #[schema(required, nullable = false, value_type = String, min_length = 1, max_length = 30)]
    pub template_name: Option<String>,
    #[schema(required, nullable = false, value_type = IdRef)]
    pub vault: Option<IdRef>,
    pub label: Option<String>,
    pub description: Option<String>,
    /// Legacy (API ≤ 4.7) user tags.
    pub tags: Option<Vec<TagBody>>,
}

impl KeyCreateBody {
    pub fn into_new(self) -> Result<service::NewKey, ApiError> {
        Ok(service::NewKey {
            template_name: self.template_name,
            vault_id: vault_id("vault.id", self.vault)?,
            label: self.label,
            description: self.description,
            tags: tags(self.tags),
        })
    }
}

/// Extension: a key to adopt (migration), as its source describes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAdoptBody {
    /// The id to keep when no key has it; a new one is given otherwise.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Option<String>,
    /// The id the source knows the key by, which keystores' marks name; `id` when absent.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub source_id: Option<String>,
    #[schema(required, nullable = false, value_type = IdRef)]
    pub vault: Option<IdRef>,
    #[schema(required, nullable = false, value_type = String, min_length = 1, max_length = 30)]
    pub template_name: Option<String>,
    #[schema(required, nullable = false, value_type = String, min_length = 1)]
    pub label: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<TagBody>>,
    pub label_tags: Option<Vec<TagBody>>,
    #[schema(required, nullable = false, value_type = crate::schema::KeyStateName)]
    pub state: Option<KeyState>,
    #[schema(required, nullable = false, value_type = crate::schema::AlgorithmName)]
    pub algorithm: Option<Algorithm>,
    /// Bits, as a string or a number.
    #[schema(required, nullable = false, value_type = String, pattern = "^[0-9]{1,9}$")]
    pub size: Option<Size>,
    /// The key's current version; versions 1 to it are adopted.
    #[schema(required, nullable = false, value_type = u32, minimum = 1, maximum = 4096)]
    pub version: Option<u32>,
    /// Earlier versions' states, where they differ from the key's.
    pub versions: Option<Vec<AdoptedVersionBody>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub verification_patterns: Option<Vec<VerificationPattern>>,
    pub activation_date: Option<String>,
    pub expiration_date: Option<String>,
    pub created_at: Option<String>,
    pub rotated_at: Option<String>,
    pub deactivated_at: Option<String>,
    /// The copies external keystores hold; each is proven there before anything is recorded.
    pub copies: Option<Vec<AdoptedCopyBody>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptedVersionBody {
    pub version: u32,
    #[schema(value_type = crate::schema::KeyStateName)]
    pub state: KeyState,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptedCopyBody {
    #[schema(required, nullable = false, value_type = IdRef)]
    pub keystore: Option<IdRef>,
    #[schema(required, nullable = false, value_type = String)]
    pub key_id_in_keystore: Option<String>,
    pub label_in_keystore: Option<String>,
}

impl KeyAdoptBody {
    pub fn into_adoption(self) -> Result<service::AdoptKey, ApiError> {
        use keyplane_core::Error;
        let uuid = |field: &str, v: Option<String>| -> Result<Option<Uuid>, ApiError> {
            v.map(|s| {
                Uuid::parse_str(&s).map_err(|_| {
                    ApiError::from(Error::invalid_field(
                        field,
                        format!("{field} '{s}' is not a UUID"),
                    ))
                })
            })
            .transpose()
        };
        let date =
            |field: &str, v: Option<String>| -> Result<Option<chrono::NaiveDate>, ApiError> {
                Ok(v.map(|s| keyplane_core::validate::date(field, &s, false))
                    .transpose()?)
            };
        let time = |field: &str,
                    v: Option<String>|
         -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
            v.map(|s| {
                chrono::DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| {
                        ApiError::from(Error::invalid_field(
                            field,
                            format!("{field} '{s}' is not an RFC 3339 date and time"),
                        ))
                    })
            })
            .transpose()
        };
        let mut copies = Vec::new();
        for (i, c) in self.copies.unwrap_or_default().into_iter().enumerate() {
            let keystore_id = vault_id(&format!("copies[{i}].keystore.id"), c.keystore)?
                .ok_or_else(|| Error::missing_field(&format!("copies[{i}].keystore.id")))?;
            copies.push(service::CopyToAdopt {
                keystore_id,
                key_id_in_keystore: c.key_id_in_keystore.ok_or_else(|| {
                    Error::missing_field(&format!("copies[{i}].key_id_in_keystore"))
                })?,
                label_in_keystore: c.label_in_keystore,
            });
        }
        Ok(service::AdoptKey {
            id: uuid("id", self.id)?,
            source_id: uuid("source_id", self.source_id)?,
            vault_id: vault_id("vault.id", self.vault)?
                .ok_or_else(|| Error::missing_field("vault.id"))?,
            template_name: self
                .template_name
                .ok_or_else(|| Error::missing_field("template_name"))?,
            label: self.label.ok_or_else(|| Error::missing_field("label"))?,
            description: self.description.unwrap_or_default(),
            tags: tags(self.tags).unwrap_or_default(),
            label_tags: tags(self.label_tags).unwrap_or_default(),
            state: self.state.ok_or_else(|| Error::missing_field("state"))?,
            algorithm: self
                .algorithm
                .ok_or_else(|| Error::missing_field("algorithm"))?,
            size: self
                .size
                .ok_or_else(|| Error::missing_field("size"))?
                .parse("size")?,
            version: self
                .version
                .ok_or_else(|| Error::missing_field("version"))?,
            version_states: self
                .versions
                .unwrap_or_default()
                .into_iter()
                .map(|v| (v.version, v.state))
                .collect(),
            verification_patterns: self.verification_patterns.unwrap_or_default(),
            activation_date: date("activation_date", self.activation_date)?,
            expiration_date: date("expiration_date", self.expiration_date)?,
            created_at: time("created_at", self.created_at)?,
            rotated_at: time("rotated_at", self.rotated_at)?,
            deactivated_at: time("deactivated_at", self.deactivated_at)?,
            copies,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdateBody {
    pub label: Option<String>,
    pub activation_date: Option<String>,
    pub expiration_date: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<TagBody>>,
    /// Extension: rotate every this long (ISO-8601); `""` clears it.
    pub rotation_interval: Option<String>,
    /// Extension: deactivate as the expiration date begins.
    pub deactivate_on_expiration: Option<bool>,
    /// Extension: destroy this long (ISO-8601) after deactivation; `""` clears it.
    pub destroy_after_deactivation: Option<String>,
}

impl KeyUpdateBody {
    pub fn into_patch(self) -> service::KeyPatch {
        service::KeyPatch {
            label: self.label,
            activation_date: self.activation_date,
            expiration_date: self.expiration_date,
            description: self.description,
            tags: tags(self.tags),
            rotation_interval: self.rotation_interval,
            deactivate_on_expiration: self.deactivate_on_expiration,
            destroy_after_deactivation: self.destroy_after_deactivation,
        }
    }
}

// ---- responses ----

/// Builds absolute hrefs from the configured public URL.
#[derive(Debug, Clone)]
pub struct Links {
    pub base: String,
}

impl Links {
    pub fn of(&self, collection: &str, id: Uuid) -> String {
        format!("{}/api/v4/{collection}/{id}", self.base)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VaultRefOut {
    pub id: String,
    pub name: String,
    pub href: String,
}

fn vault_ref(l: &Links, v: &VaultRef) -> VaultRefOut {
    VaultRefOut {
        id: v.id.to_string(),
        name: v.name.clone(),
        href: l.of("vaults", v.id),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VaultOut {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_key_label: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: String,
    pub updated_by: String,
    pub href: String,
    pub keys_count: i64,
    pub key_templates_count: i64,
    pub keystores_count: i64,
}

pub fn vault(l: &Links, v: &VaultView) -> VaultOut {
    let s = &v.vault.stamps;
    VaultOut {
        id: v.vault.id.to_string(),
        name: v.vault.name.clone(),
        description: v.vault.description.clone(),
        recovery_key_label: v.vault.recovery_key_label.clone(),
        created_at: time(&s.created_at),
        updated_at: time(&s.updated_at),
        created_by: s.created_by.clone(),
        updated_by: s.updated_by.clone(),
        href: l.of("vaults", v.vault.id),
        keys_count: v.keys_count,
        key_templates_count: v.key_templates_count,
        keystores_count: v.keystores_count,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyPropertiesOut {
    pub size: String,
    pub algorithm: String,
    pub activation_date: String,
    pub expiration_date: String,
    pub state: String,
    pub deactivate_on_rotation: bool,
    #[serde(flatten)]
    #[schema(inline)]
    pub schedule: ScheduleOut,
}

/// Extension: a template's or key's schedules, shown when set.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_interval: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deactivate_on_expiration: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destroy_after_deactivation: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateOut {
    pub vault: VaultRefOut,
    pub id: String,
    pub version: i64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub naming_scheme: Option<String>,
    #[serde(rename = "type")]
    pub types: Vec<String>,
    pub state: String,
    pub keys_count: i64,
    pub key: KeyPropertiesOut,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: String,
    pub updated_by: String,
    #[schema(value_type = Vec<Object>)]
    pub keystores: Vec<TemplateKeystore>,
    pub href: String,
    pub managing_systems: Vec<String>,
}

fn strs<T: std::fmt::Display>(v: &[T]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

pub fn template(l: &Links, t: &Template) -> TemplateOut {
    TemplateOut {
        vault: vault_ref(l, &t.vault),
        id: t.id.to_string(),
        version: t.version,
        name: t.name.clone(),
        naming_scheme: t.naming_scheme.clone(),
        types: strs(&t.types),
        state: t.state.to_string(),
        keys_count: t.keys_count,
        key: KeyPropertiesOut {
            size: t.key.size.to_string(),
            algorithm: t.key.algorithm.to_string(),
            activation_date: t.key.activation_date.clone(),
            expiration_date: t.key.expiration_date.clone(),
            state: t.key.state.to_string(),
            deactivate_on_rotation: t.key.deactivate_on_rotation,
            schedule: ScheduleOut {
                rotation_interval: t.key.schedule.rotation_interval.clone(),
                deactivate_on_expiration: t.key.schedule.deactivate_on_expiration,
                destroy_after_deactivation: t.key.schedule.destroy_after_deactivation.clone(),
            },
        },
        description: t.description.clone(),
        created_at: time(&t.stamps.created_at),
        updated_at: time(&t.stamps.updated_at),
        created_by: t.stamps.created_by.clone(),
        updated_by: t.stamps.updated_by.clone(),
        keystores: t.keystores.clone(),
        href: l.of("templates", t.id),
        managing_systems: strs(&t.managing_systems),
    }
}

/// A keystore, typed by `type`: only the fields of its type, secrets as `""`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeystoreOut {
    pub vault: VaultRefOut,
    pub id: String,
    pub name: String,
    pub location: String,
    pub description: String,
    pub groups: Vec<String>,
    #[serde(rename = "type")]
    pub keystore_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ibm_variant: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: String,
    pub updated_by: String,
    pub href: String,
    pub tls_proxy: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub connection: Map<String, Value>,
}

pub fn keystore(l: &Links, k: &Keystore) -> KeystoreOut {
    let mut connection = k.connection.clone();
    for spec in keystore_types::connection_fields(k.keystore_type, k.ibm_variant) {
        if spec.secret {
            connection.insert(spec.name.to_owned(), Value::String(String::new()));
        }
    }
    KeystoreOut {
        vault: vault_ref(l, &k.vault),
        id: k.id.to_string(),
        name: k.name.clone(),
        location: k.location.clone(),
        description: k.description.clone(),
        groups: k.groups.clone(),
        keystore_type: k.keystore_type.to_string(),
        ibm_variant: k.ibm_variant.map(|v| v.to_string()),
        created_at: time(&k.stamps.created_at),
        updated_at: time(&k.stamps.updated_at),
        created_by: k.stamps.created_by.clone(),
        updated_by: k.stamps.updated_by.clone(),
        href: l.of("keystores", k.id),
        tls_proxy: k.tls_proxy.clone(),
        connection,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeystoreStatusOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    pub health_status: String,
    pub message: String,
}

pub fn keystore_status(s: &KeystoreStatus) -> KeystoreStatusOut {
    KeystoreStatusOut {
        last_heartbeat: s.last_heartbeat.as_ref().map(time),
        health_status: s.health_status.to_string(),
        message: s.message.clone(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeystoreRefOut {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub keystore_type: String,
    pub href: String,
}

fn keystore_ref(l: &Links, r: &KeystoreRef) -> KeystoreRefOut {
    KeystoreRefOut {
        id: r.id.to_string(),
        name: r.name.clone(),
        keystore_type: r.keystore_type.to_string(),
        href: l.of("keystores", r.id),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusInKeystoreOut {
    pub keystore: KeystoreRefOut,
    pub status: String,
    pub keystore_sync_flag: String,
    pub keystore_sync_flag_detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id_in_keystore: Option<String>,
    /// Keyplane's: what the keystore still keeps of a removed copy (a deletion under purge
    /// protection, versions scheduled for destruction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail_in_keystore: Option<String>,
}

pub fn status_in_keystore(l: &Links, s: &KeyStatusInKeystore, trace: &str) -> StatusInKeystoreOut {
    StatusInKeystoreOut {
        keystore: keystore_ref(l, &s.keystore),
        status: s.status.to_string(),
        keystore_sync_flag: s.keystore_sync_flag.to_string(),
        keystore_sync_flag_detail: s.keystore_sync_flag_detail.to_string(),
        error: s.error.as_ref().map(|e| ErrorBody {
            status_code: 424,
            trace: trace.to_owned(),
            errors: vec![ErrorItem {
                code: e.code.clone(),
                message: e.message.clone(),
                more_info: None,
                message_params: Vec::new(),
                target: None,
            }],
        }),
        key_id_in_keystore: s.key_id_in_keystore.clone(),
        detail_in_keystore: s.detail_in_keystore.clone(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusInKeystoresOut {
    pub status_in_keystores: Vec<StatusInKeystoreOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateRefOut {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub types: Vec<String>,
    pub href: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ManagedKeyOut {
    pub id: String,
    pub vault: VaultRefOut,
    pub template: TemplateRefOut,
    pub version: u32,
    pub description: String,
    pub label: String,
    pub state: String,
    pub size: String,
    pub algorithm: String,
    #[schema(value_type = Vec<Object>)]
    pub verification_patterns: Vec<VerificationPattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub label_tags: Vec<Tag>,
    #[schema(value_type = Vec<Object>)]
    pub tags: Vec<Tag>,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: String,
    pub updated_by: String,
    pub referenced_keystores: Vec<KeystoreRefOut>,
    #[schema(value_type = Vec<Object>)]
    pub instances: Vec<Value>,
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<String>,
    pub status_in_keystores: Vec<StatusInKeystoreOut>,
    pub deactivate_on_rotation: bool,
    pub managing_systems: Vec<String>,
    /// Extension: false once the template changed after this key was last aligned with it.
    pub aligned: bool,
    #[serde(flatten)]
    #[schema(inline)]
    pub schedule: ScheduleOut,
    /// Extension: what a schedule does next to the key and when, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_scheduled_action: Option<ScheduledOut>,
    /// Extension: true while the key is active and its expiration date is within 30 days or past.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expiration_warning: bool,
    /// `held` when Keyplane holds this version's material, `external` for an adopted key whose
    /// material only its keystore copies hold.
    pub material: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledOut {
    /// `rotate`, `deactivate` or `destroy`.
    pub action: &'static str,
    pub at: String,
}

fn instance(i: &KeyInstance) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), Value::String(i.id.to_string()));
    m.insert(
        "label_in_keystore".into(),
        Value::String(i.label_in_keystore.clone()),
    );
    m.insert("type".into(), Value::String(i.instance_type.to_string()));
    m.insert(
        "keystore".into(),
        serde_json::json!({"group": i.group, "type": i.keystore_type.as_str()}),
    );
    if let Ok(Value::Object(props)) = serde_json::to_value(&i.properties) {
        m.extend(props);
    }
    Value::Object(m)
}

pub fn managed_key(l: &Links, k: &ManagedKey, trace: &str) -> ManagedKeyOut {
    ManagedKeyOut {
        id: k.id.to_string(),
        vault: vault_ref(l, &k.vault),
        template: TemplateRefOut {
            id: k.template.id.to_string(),
            name: k.template.name.clone(),
            types: strs(&k.template.types),
            href: l.of("templates", k.template.id),
        },
        version: k.version,
        description: k.description.clone(),
        label: k.label.clone(),
        state: k.state.to_string(),
        size: k.size.to_string(),
        algorithm: k.algorithm.to_string(),
        verification_patterns: k.verification_patterns.clone(),
        activation_date: k.activation_date.map(|d| d.to_string()),
        expiration_date: k.expiration_date.map(|d| d.to_string()),
        label_tags: k.label_tags.clone(),
        tags: k.tags.clone(),
        created_at: time(&k.stamps.created_at),
        updated_at: time(&k.stamps.updated_at),
        created_by: k.stamps.created_by.clone(),
        updated_by: k.stamps.updated_by.clone(),
        referenced_keystores: k
            .referenced_keystores()
            .map(|r| keystore_ref(l, r))
            .collect(),
        instances: k.instances.iter().map(instance).collect(),
        href: l.of("managed_keys", k.id),
        rotated_at: k.rotated_at.as_ref().map(time),
        status_in_keystores: k
            .status_in_keystores
            .iter()
            .map(|s| status_in_keystore(l, s, trace))
            .collect(),
        deactivate_on_rotation: k.deactivate_on_rotation,
        managing_systems: strs(&k.managing_systems),
        aligned: k.template.version == k.template_version,
        schedule: ScheduleOut {
            rotation_interval: k.rotation_interval.clone(),
            deactivate_on_expiration: k.deactivate_on_expiration,
            destroy_after_deactivation: k.destroy_after_deactivation.clone(),
        },
        next_scheduled_action: keyplane_core::schedule::next(k).map(|(at, action)| ScheduledOut {
            action: action.as_str(),
            at: time(&at),
        }),
        expiration_warning: keyplane_core::schedule::expires_soon(
            k,
            chrono::Utc::now().date_naive(),
        ),
        material: k.material().as_str(),
    }
}

/// The ETag header value of a resource.
pub fn etag_of(revision: i64, id: Uuid) -> String {
    etag::etag(revision, id)
}
