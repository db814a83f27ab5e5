//! Row ⇄ record mapping.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::Row;
use rusqlite::types::FromSql;
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use keyplane_core::error::{Error, Result};
use keyplane_core::model::*;
use keyplane_core::ports::{PooledKey, StoredRootKey, WrappedVaultKey};

pub(crate) use crate::common::{KeyDoc, TemplateDoc};

pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A column by name; a missing or mistyped column is reported without its value.
pub(crate) fn col<T: FromSql>(r: &Row<'_>, c: &str) -> Result<T> {
    r.get(c).map_err(|_| corrupt(c))
}

pub(crate) fn corrupt(column: &str) -> Error {
    Error::internal(format!("stored value of column {column} is unreadable"))
}

pub(crate) fn ts_col(r: &Row<'_>, c: &str) -> Result<DateTime<Utc>> {
    let s: String = col(r, c)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| corrupt(c))
}

pub(crate) fn opt_ts_col(r: &Row<'_>, c: &str) -> Result<Option<DateTime<Utc>>> {
    let s: Option<String> = col(r, c)?;
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| corrupt(c))
    })
    .transpose()
}

pub(crate) fn opt_date_col(r: &Row<'_>, c: &str) -> Result<Option<NaiveDate>> {
    let s: Option<String> = col(r, c)?;
    s.map(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|_| corrupt(c)))
        .transpose()
}

pub(crate) fn uuid_col(r: &Row<'_>, c: &str) -> Result<Uuid> {
    let s: String = col(r, c)?;
    Uuid::parse_str(&s).map_err(|_| corrupt(c))
}

pub(crate) fn u32_col(r: &Row<'_>, c: &str) -> Result<u32> {
    u32::try_from(col::<i64>(r, c)?).map_err(|_| corrupt(c))
}

pub(crate) fn json<T: Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(e.to_string()))
}

pub(crate) fn json_col<T: DeserializeOwned>(r: &Row<'_>, c: &str) -> Result<T> {
    let s: String = col(r, c)?;
    serde_json::from_str(&s).map_err(|_| corrupt(c))
}

pub(crate) fn enum_col<T>(r: &Row<'_>, c: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    let s: String = col(r, c)?;
    parse(&s).ok_or_else(|| corrupt(c))
}

fn stamps(r: &Row<'_>) -> Result<Stamps> {
    Ok(Stamps {
        created_at: ts_col(r, "created_at")?,
        updated_at: ts_col(r, "updated_at")?,
        created_by: col(r, "created_by")?,
        updated_by: col(r, "updated_by")?,
    })
}

pub(crate) const VAULT_SELECT: &str = "SELECT v.*,
    (SELECT COALESCE(SUM(n), 0) FROM key_counts WHERE vault_id = v.id) AS keys_count,
    (SELECT COUNT(*) FROM templates WHERE vault_id = v.id) AS key_templates_count,
    (SELECT COUNT(*) FROM keystores WHERE vault_id = v.id) AS keystores_count
    FROM vaults v";

pub(crate) fn vault_from_row(r: &Row<'_>) -> Result<VaultView> {
    Ok(VaultView {
        vault: Vault {
            id: uuid_col(r, "id")?,
            name: col(r, "name")?,
            description: col(r, "description")?,
            recovery_key_label: col(r, "recovery_key_label")?,
            stamps: stamps(r)?,
            revision: col(r, "revision")?,
        },
        keys_count: col(r, "keys_count")?,
        key_templates_count: col(r, "key_templates_count")?,
        keystores_count: col(r, "keystores_count")?,
    })
}

pub(crate) const TEMPLATE_SELECT: &str = "SELECT t.*, v.name AS vault_name,
    (SELECT COALESCE(SUM(n), 0) FROM key_counts WHERE template_id = t.id) AS keys_count
    FROM templates t JOIN vaults v ON v.id = t.vault_id";

/// Like `TEMPLATE_SELECT` without counting the template's keys.
pub(crate) const TEMPLATE_SELECT_UNCOUNTED: &str = "SELECT t.*, v.name AS vault_name, 0 AS keys_count FROM templates t JOIN vaults v ON v.id = t.vault_id";

pub(crate) fn template_from_row(r: &Row<'_>) -> Result<Template> {
    let doc: TemplateDoc = json_col(r, "doc")?;
    Ok(Template {
        id: uuid_col(r, "id")?,
        vault: VaultRef {
            id: uuid_col(r, "vault_id")?,
            name: col(r, "vault_name")?,
        },
        name: col(r, "name")?,
        version: col(r, "version")?,
        naming_scheme: col(r, "naming_scheme")?,
        types: json_col(r, "types")?,
        state: enum_col(r, "state", TemplateState::parse)?,
        key: doc.key,
        keystores: doc.keystores,
        description: doc.description,
        managing_systems: json_col(r, "managing_systems")?,
        keys_count: col(r, "keys_count")?,
        stamps: stamps(r)?,
        revision: col(r, "revision")?,
    })
}

pub(crate) const KEYSTORE_SELECT: &str =
    "SELECT ks.*, v.name AS vault_name FROM keystores ks JOIN vaults v ON v.id = ks.vault_id";

pub(crate) fn keystore_from_row(r: &Row<'_>) -> Result<Keystore> {
    let variant: Option<String> = col(r, "ibm_variant")?;
    Ok(Keystore {
        id: uuid_col(r, "id")?,
        vault: VaultRef {
            id: uuid_col(r, "vault_id")?,
            name: col(r, "vault_name")?,
        },
        name: col(r, "name")?,
        keystore_type: enum_col(r, "type", KeystoreType::parse)?,
        ibm_variant: variant
            .map(|v| IbmVariant::parse(&v).ok_or_else(|| corrupt("ibm_variant")))
            .transpose()?,
        description: col(r, "description")?,
        groups: json_col(r, "groups")?,
        location: col(r, "location")?,
        tls_proxy: col(r, "tls_proxy")?,
        connection: json_col(r, "connection")?,
        secret_fields: json_col(r, "secret_fields")?,
        sealed_secrets: col(r, "sealed_secrets")?,
        stamps: stamps(r)?,
        revision: col(r, "revision")?,
    })
}

/// Keys with their distribution status in one query; live keystores are named by their current name.
pub(crate) const KEY_SELECT: &str = "SELECT k.*, v.name AS vault_name, t.name AS template_name, t.types AS template_types,
    t.version AS template_current_version,
    (SELECT json_group_array(json_set(kt.status, '$.keystore.name', COALESCE(ks.name, kt.keystore_name)) ORDER BY kt.position)
       FROM key_targets kt LEFT JOIN keystores ks ON ks.id = kt.keystore_id WHERE kt.key_id = k.id) AS statuses
    FROM managed_keys k JOIN vaults v ON v.id = k.vault_id JOIN templates t ON t.id = k.template_id";

pub(crate) fn key_from_row(r: &Row<'_>) -> Result<ManagedKey> {
    let doc: KeyDoc = json_col(r, "doc")?;
    Ok(ManagedKey {
        id: uuid_col(r, "id")?,
        vault: VaultRef {
            id: uuid_col(r, "vault_id")?,
            name: col(r, "vault_name")?,
        },
        template: TemplateRef {
            id: uuid_col(r, "template_id")?,
            name: col(r, "template_name")?,
            types: json_col(r, "template_types")?,
            version: col(r, "template_current_version")?,
        },
        template_version: doc.template_version,
        version: u32_col(r, "version")?,
        label: col(r, "label")?,
        description: doc.description,
        state: enum_col(r, "state", KeyState::parse)?,
        algorithm: enum_col(r, "algorithm", Algorithm::parse)?,
        size: u32_col(r, "size")?,
        verification_patterns: doc.verification_patterns,
        activation_date: opt_date_col(r, "activation_date")?,
        expiration_date: opt_date_col(r, "expiration_date")?,
        label_tags: doc.label_tags,
        tags: doc.tags,
        instances: doc.instances,
        status_in_keystores: json_col(r, "statuses")?,
        deactivate_on_rotation: doc.deactivate_on_rotation,
        managing_systems: doc.managing_systems,
        rotated_at: opt_ts_col(r, "rotated_at")?,
        deactivated_at: doc.deactivated_at,
        label_from_scheme: doc.label_from_scheme,
        rotation_interval: doc.rotation_interval,
        deactivate_on_expiration: doc.deactivate_on_expiration,
        destroy_after_deactivation: doc.destroy_after_deactivation,
        adopted_versions: doc.adopted_versions,
        stamps: stamps(r)?,
        revision: col(r, "revision")?,
    })
}

pub(crate) fn pooled_from_row(r: &Row<'_>) -> Result<PooledKey> {
    Ok(PooledKey {
        id: uuid_col(r, "id")?,
        algorithm: enum_col(r, "algorithm", Algorithm::parse)?,
        size: u32_col(r, "size")?,
        sealed: col(r, "sealed")?,
        created_at: ts_col(r, "created_at")?,
    })
}

pub(crate) fn root_key_from_row(r: &Row<'_>) -> Result<StoredRootKey> {
    Ok(StoredRootKey {
        id: col(r, "id")?,
        sealed: col(r, "sealed")?,
        created_at: ts_col(r, "created_at")?,
    })
}

pub(crate) fn vault_key_from_row(r: &Row<'_>) -> Result<WrappedVaultKey> {
    Ok(WrappedVaultKey {
        vault_id: uuid_col(r, "vault_id")?,
        root_id: col(r, "root_id")?,
        wrapped: col(r, "wrapped")?,
    })
}
