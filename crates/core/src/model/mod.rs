//! Domain records. Validation happens where they are built (`service`, `validate`); a record
//! that exists is a valid one.

pub mod access;
pub mod approval;
pub mod enums;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use access::*;
pub use approval::*;
pub use enums::*;

/// A new resource id: a UUID whose leading bits are its creation time (RFC 9562 version 7), so
/// ids sort by age and indexes on them grow at the end instead of at random pages.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// Who made a change; recorded as `created_by` / `updated_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// The identity the actor is, whichever way it signed in: a principal calling with its client
    /// certificate (`cert:<name>`) is the principal `<name>`. Principal names are unique and never
    /// those of keyplane's own identities, so equal identities are one caller.
    pub fn identity(&self) -> &str {
        identity_of(&self.0)
    }
}

/// The identity a recorded actor name stands for (see [`Actor::identity`]).
pub fn identity_of(name: &str) -> &str {
    name.strip_prefix("cert:").unwrap_or(name)
}

/// Creation and last-change stamps shared by every resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamps {
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_by: String,
}

impl Stamps {
    pub fn new(actor: &Actor, now: DateTime<Utc>) -> Self {
        Self {
            created_at: now,
            updated_at: now,
            created_by: actor.0.clone(),
            updated_by: actor.0.clone(),
        }
    }

    pub fn touch(&mut self, actor: &Actor, now: DateTime<Utc>) {
        self.updated_at = now;
        self.updated_by = actor.0.clone();
    }
}

/// A `{name, value}` pair: user tags and naming-scheme label tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationPattern {
    pub method: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vault {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub recovery_key_label: Option<String>,
    pub stamps: Stamps,
    pub revision: i64,
}

/// A vault with the counts its response carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultView {
    pub vault: Vault,
    pub keys_count: i64,
    pub key_templates_count: i64,
    pub keystores_count: i64,
}

/// `{id, name}` of a vault as embedded in other resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRef {
    pub id: Uuid,
    pub name: String,
}

/// Keystore-type-specific key properties of a template's keystore entry (and of key instances).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeystoreKeyProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_key_protection_level: Option<ProtectionLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_key_purpose: Option<GoogleKeyPurpose>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_kms_algorithm: Option<GoogleKmsAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_key_protection_level: Option<ProtectionLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_key_operations: Option<Vec<AzureKeyOperation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cca_usage_control: Option<CcaUsageControl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cca_key_type: Option<CcaKeyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cca_key_words: Option<Vec<String>>,
}

/// The single `keystores[0]` entry of a template: where its keys go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateKeystore {
    #[serde(rename = "type")]
    pub keystore_type: KeystoreType,
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naming_scheme: Option<String>,
    #[serde(flatten)]
    pub properties: KeystoreKeyProperties,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProperties {
    pub algorithm: Algorithm,
    pub size: u32,
    /// ISO-8601 duration after creation (planning only).
    pub activation_date: String,
    /// ISO-8601 duration after creation (planning only).
    pub expiration_date: String,
    pub state: InitialKeyState,
    pub deactivate_on_rotation: bool,
    /// Schedules, copied into each key made from the template (`spec/decisions.md` §5).
    #[serde(flatten)]
    pub schedule: KeySchedule,
}

/// A key's schedules: rotation every `rotation_interval`, deactivation on its expiration date,
/// destruction `destroy_after_deactivation` after deactivation. Empty: none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySchedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_interval: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivate_on_expiration: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_after_deactivation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: Uuid,
    pub vault: VaultRef,
    pub name: String,
    pub version: i64,
    pub naming_scheme: Option<String>,
    pub types: Vec<TemplateType>,
    pub state: TemplateState,
    pub key: KeyProperties,
    pub keystores: Vec<TemplateKeystore>,
    pub description: String,
    pub managing_systems: Vec<ManagingSystem>,
    pub keys_count: i64,
    pub stamps: Stamps,
    pub revision: i64,
}

impl Template {
    pub fn keystore(&self) -> &TemplateKeystore {
        &self.keystores[0]
    }

    /// How a key made from (or adopted into) this template names it.
    pub fn reference(&self) -> TemplateRef {
        TemplateRef {
            id: self.id,
            name: self.name.clone(),
            types: self.types.clone(),
            version: self.version,
        }
    }
}

/// A keystore's connection: non-secret fields in clear, secret fields sealed as one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keystore {
    pub id: Uuid,
    pub vault: VaultRef,
    pub name: String,
    pub keystore_type: KeystoreType,
    pub ibm_variant: Option<IbmVariant>,
    pub description: String,
    pub groups: Vec<String>,
    pub location: String,
    pub tls_proxy: String,
    /// Non-secret, type-specific connection fields (`aws_region`, `ibm_api_endpoint`, …).
    pub connection: serde_json::Map<String, serde_json::Value>,
    /// Names of the secret fields that were supplied (emitted as `""`).
    pub secret_fields: Vec<String>,
    /// The secret fields as JSON, sealed under the master key; never leaves the server.
    pub sealed_secrets: Option<Vec<u8>>,
    pub stamps: Stamps,
    pub revision: i64,
}

impl Keystore {
    pub fn is_internal(&self) -> bool {
        self.keystore_type == KeystoreType::IbmCloudKms
            && self.ibm_variant == Some(IbmVariant::Internal)
    }

    pub fn reference(&self) -> KeystoreRef {
        KeystoreRef {
            id: self.id,
            name: self.name.clone(),
            keystore_type: self.keystore_type,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeystoreRef {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub keystore_type: KeystoreType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoreStatus {
    pub health_status: HealthStatus,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub message: String,
}

/// One entry of a key's `instances`: the template keystore entry the key was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInstance {
    pub id: Uuid,
    pub label_in_keystore: String,
    #[serde(rename = "type")]
    pub instance_type: InstanceType,
    pub keystore_type: KeystoreType,
    pub group: String,
    #[serde(flatten)]
    pub properties: KeystoreKeyProperties,
}

/// An error recorded for one keystore in a key's distribution status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusError {
    pub code: String,
    pub message: String,
}

/// The cached view of one key in one keystore (`status_in_keystores[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStatusInKeystore {
    pub keystore: KeystoreRef,
    pub status: KeystoreKeyStatus,
    pub keystore_sync_flag: SyncFlag,
    pub keystore_sync_flag_detail: SyncFlagDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StatusError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id_in_keystore: Option<String>,
    /// What the keystore still keeps of a copy it no longer shows (a deletion under purge
    /// protection, versions scheduled for destruction), as it reported it when removing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_in_keystore: Option<String>,
    /// The keystore was deleted or disconnected; kept until the next sync.
    #[serde(default)]
    pub removed: bool,
}

/// `{id, name, type}` of the template a key came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub id: Uuid,
    pub name: String,
    pub types: Vec<TemplateType>,
    /// The template's version now (keys are aligned when it equals their `template_version`).
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedKey {
    pub id: Uuid,
    pub vault: VaultRef,
    pub template: TemplateRef,
    /// The template version this key was last aligned with.
    pub template_version: i64,
    pub version: u32,
    pub label: String,
    pub description: String,
    pub state: KeyState,
    pub algorithm: Algorithm,
    pub size: u32,
    pub verification_patterns: Vec<VerificationPattern>,
    pub activation_date: Option<NaiveDate>,
    pub expiration_date: Option<NaiveDate>,
    pub label_tags: Vec<Tag>,
    pub tags: Vec<Tag>,
    pub instances: Vec<KeyInstance>,
    pub status_in_keystores: Vec<KeyStatusInKeystore>,
    pub deactivate_on_rotation: bool,
    pub managing_systems: Vec<ManagingSystem>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub deactivated_at: Option<DateTime<Utc>>,
    /// Whether the label came from the template's naming scheme (then it is immutable).
    pub label_from_scheme: bool,
    /// How often the key is to be rotated, as an ISO-8601 duration; `None`: when someone does.
    pub rotation_interval: Option<String>,
    /// Deactivated by the scheduler as its expiration date begins.
    pub deactivate_on_expiration: bool,
    /// Destroyed by the scheduler this long (ISO-8601) after its deactivation.
    pub destroy_after_deactivation: Option<String>,
    /// Versions 1 to this one were adopted (migration): their material lives only in the
    /// external keystores' copies. 0 for a key whose every version Keyplane made.
    pub adopted_versions: u32,
    pub stamps: Stamps,
    pub revision: i64,
}

/// Whether Keyplane holds a key version's material (`spec/decisions.md` §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMaterial {
    /// Generated or imported here, sealed under the vault's key.
    Held,
    /// Adopted: only the copies in external keystores hold it.
    External,
}

impl KeyMaterial {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::External => "external",
        }
    }
}

impl ManagedKey {
    /// Whether Keyplane holds the material of the key's current version.
    pub fn material(&self) -> KeyMaterial {
        self.material_of(self.version)
    }

    /// Whether Keyplane holds the material of `version`.
    pub fn material_of(&self, version: u32) -> KeyMaterial {
        if version <= self.adopted_versions {
            KeyMaterial::External
        } else {
            KeyMaterial::Held
        }
    }

    /// Keystores the key currently targets (removed ones excluded).
    pub fn referenced_keystores(&self) -> impl Iterator<Item = &KeystoreRef> {
        self.status_in_keystores
            .iter()
            .filter(|s| !s.removed)
            .map(|s| &s.keystore)
    }
}

/// One historic version of a key's material (`GET …/versions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    pub version: u32,
    pub state: KeyState,
    pub verification_patterns: Vec<VerificationPattern>,
    pub created_at: DateTime<Utc>,
    /// Its material was imported, not generated here.
    pub imported: bool,
}

/// Material of one key version, sealed under the master key.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedMaterial {
    pub version: u32,
    pub sealed: Vec<u8>,
    pub verification_patterns: Vec<VerificationPattern>,
}

impl std::fmt::Debug for SealedMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedMaterial")
            .field("version", &self.version)
            .field("sealed_len", &self.sealed.len())
            .finish()
    }
}

/// A key copy held by an internal keystore: what that keystore really contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalCopy {
    pub keystore_id: Uuid,
    pub managed_key_id: Uuid,
    pub key_id_in_keystore: Uuid,
    pub label: String,
    pub enabled: bool,
    /// Highest material version installed.
    pub version: u32,
    /// The Key Protect key ring it is in (`default` unless moved).
    pub key_ring: String,
}

/// A page of a list, with the total size of the filtered collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total_count: i64,
}
