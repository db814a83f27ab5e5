//! Every write, as statements run inside the writer's transaction.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use keyplane_core::error::{Error, Result};
use keyplane_core::guards::{self, VaultContents};
use keyplane_core::model::*;
use keyplane_core::ports::{ApiToken, KeyWrite, PooledKey, StoredRootKey, WrappedVaultKey};

use super::rows::{col, json, pooled_from_row, ts};
use super::{Params, db_err, exec, one, write_err};

/// Runs a statement whose unique-constraint failure is a duplicate name of `resource`.
async fn exec_named(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    resource: &str,
    name: &str,
) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(db_err)?;
    c.execute(&stmt, params)
        .await
        .map_err(|e| write_err(e, resource, name))
}

/// Fails with `EtagMismatch` (row changed) or `NotFound` (row gone) when a write hit no row.
async fn check_updated(
    c: &impl GenericClient,
    table: &str,
    resource: &'static str,
    id: Uuid,
    rows: u64,
) -> Result<()> {
    if rows > 0 {
        return Ok(());
    }
    let exists = one(
        c,
        &format!("SELECT 1 FROM {table} WHERE id = $1"),
        &[&id],
        |_| Ok(()),
    )
    .await?;
    Err(if exists.is_some() {
        Error::EtagMismatch
    } else {
        Error::not_found(resource, id)
    })
}

pub(crate) async fn put_setting(c: &impl GenericClient, name: &str, value: &str) -> Result<()> {
    exec(
        c,
        "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        &[&name, &value],
    )
    .await?;
    Ok(())
}

pub(crate) async fn insert_api_token(c: &impl GenericClient, token: &ApiToken) -> Result<()> {
    exec_named(
        c,
        "INSERT INTO api_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        &[
            &token.id,
            &token.name,
            &token.token_hash,
            &ts(&chrono::Utc::now()),
        ],
        "the token name",
        &token.name,
    )
    .await?;
    Ok(())
}

pub(crate) async fn insert_vault(c: &impl GenericClient, v: &Vault) -> Result<()> {
    exec_named(
        c,
        "INSERT INTO vaults (id, name, description, recovery_key_label, created_at, updated_at, created_by, updated_by, revision)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &v.id,
            &v.name,
            &v.description,
            &v.recovery_key_label,
            &ts(&v.stamps.created_at),
            &ts(&v.stamps.updated_at),
            &v.stamps.created_by,
            &v.stamps.updated_by,
            &v.revision,
        ],
        "the vault name",
        &v.name,
    )
    .await?;
    Ok(())
}

pub(crate) async fn update_vault(
    c: &impl GenericClient,
    v: &Vault,
    read_revision: i64,
) -> Result<()> {
    let rows = exec_named(
        c,
        "UPDATE vaults SET name = $1, description = $2, recovery_key_label = $3, updated_at = $4, updated_by = $5, revision = $6
         WHERE id = $7 AND revision = $8",
        &[
            &v.name,
            &v.description,
            &v.recovery_key_label,
            &ts(&v.stamps.updated_at),
            &v.stamps.updated_by,
            &v.revision,
            &v.id,
            &read_revision,
        ],
        "the vault name",
        &v.name,
    )
    .await?;
    check_updated(c, "vaults", "vault", v.id, rows).await
}

pub(crate) async fn delete_vault(
    c: &impl GenericClient,
    id: Uuid,
    read_revision: i64,
) -> Result<()> {
    // Locked first: a template, keystore or key being added to the vault (on any node) holds a
    // share of this row until it commits, so the counts below see it, and none can be added
    // until this delete ends.
    exec(c, "SELECT 1 FROM vaults WHERE id = $1 FOR UPDATE", &[&id]).await?;
    let (name, contents) = one(
        c,
        "SELECT name,
           (SELECT COUNT(*) FROM managed_keys WHERE vault_id = $1) AS keys,
           (SELECT COUNT(*) FROM keystores WHERE vault_id = $1) AS keystores,
           (SELECT COUNT(*) FROM templates WHERE vault_id = $1 AND state = 'unarchived') AS unarchived_templates
         FROM vaults WHERE id = $1",
        &[&id],
        |r| {
            Ok((
                col::<String>(r, "name")?,
                VaultContents {
                    keys: col(r, "keys")?,
                    keystores: col(r, "keystores")?,
                    unarchived_templates: col(r, "unarchived_templates")?,
                },
            ))
        },
    )
    .await?
    .ok_or_else(|| Error::not_found("vault", id))?;
    guards::vault_delete(&name, contents)?;
    // Archived templates go with the vault; deleted first for the foreign key.
    exec(c, "DELETE FROM templates WHERE vault_id = $1", &[&id]).await?;
    exec(
        c,
        "DELETE FROM dual_control_vaults WHERE vault_id = $1",
        &[&id],
    )
    .await?;
    // The vault is empty: its key protects nothing any more.
    exec(c, "DELETE FROM vault_keys WHERE vault_id = $1", &[&id]).await?;
    let rows = exec(
        c,
        "DELETE FROM vaults WHERE id = $1 AND revision = $2",
        &[&id, &read_revision],
    )
    .await?;
    check_updated(c, "vaults", "vault", id, rows).await
}

pub(crate) async fn write_template(
    c: &impl GenericClient,
    t: &Template,
    read_revision: Option<i64>,
) -> Result<()> {
    let doc = json(&super::rows::TemplateDoc::of(t))?;
    let entry = t.keystore();
    let sql = match read_revision {
        None => "INSERT INTO templates (name, state, types, version, naming_scheme, algorithm, size, keystore_type, keystore_group,
                 managing_systems, updated_at, updated_by, revision, doc, created_at, created_by, vault_id, id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        Some(_) => "UPDATE templates SET name = $1, state = $2, types = $3, version = $4, naming_scheme = $5, algorithm = $6,
                 size = $7, keystore_type = $8, keystore_group = $9, managing_systems = $10, updated_at = $11, updated_by = $12,
                 revision = $13, doc = $14
                 WHERE created_at = $15 AND created_by = $16 AND vault_id = $17 AND id = $18 AND revision = $19",
    };
    let types = json(&t.types)?;
    let size = i64::from(t.key.size);
    let managing_systems = json(&t.managing_systems)?;
    let (updated_at, created_at) = (ts(&t.stamps.updated_at), ts(&t.stamps.created_at));
    let (state, algorithm, keystore_type) = (
        t.state.as_str(),
        t.key.algorithm.as_str(),
        entry.keystore_type.as_str(),
    );
    let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &t.name,
        &state,
        &types,
        &t.version,
        &t.naming_scheme,
        &algorithm,
        &size,
        &keystore_type,
        &entry.group,
        &managing_systems,
        &updated_at,
        &t.stamps.updated_by,
        &t.revision,
        &doc,
        &created_at,
        &t.stamps.created_by,
        &t.vault.id,
        &t.id,
    ];
    if let Some(r) = &read_revision {
        values.push(r);
    }
    let rows = exec_named(
        c,
        sql,
        &values,
        "the template name (unique per vault)",
        &t.name,
    )
    .await?;
    check_updated(c, "templates", "template", t.id, rows).await
}

pub(crate) async fn delete_template(
    c: &impl GenericClient,
    id: Uuid,
    read_revision: i64,
) -> Result<()> {
    // Locked first, as for a vault: keys being made from the template are counted or wait.
    exec(
        c,
        "SELECT 1 FROM templates WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    let (name, keys) = one(
        c,
        "SELECT name, (SELECT COUNT(*) FROM managed_keys WHERE template_id = $1) AS keys FROM templates WHERE id = $1",
        &[&id],
        |r| Ok((col::<String>(r, "name")?, col::<i64>(r, "keys")?)),
    )
    .await?
    .ok_or_else(|| Error::not_found("template", id))?;
    guards::template_delete(&name, keys)?;
    let rows = exec(
        c,
        "DELETE FROM templates WHERE id = $1 AND revision = $2",
        &[&id, &read_revision],
    )
    .await?;
    check_updated(c, "templates", "template", id, rows).await
}

pub(crate) async fn write_keystore(
    c: &impl GenericClient,
    k: &Keystore,
    read_revision: Option<i64>,
) -> Result<()> {
    let sql = match read_revision {
        None => "INSERT INTO keystores (name, description, location, groups, tls_proxy, connection, secret_fields, sealed_secrets,
                 updated_at, updated_by, revision, type, ibm_variant, created_at, created_by, vault_id, id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        Some(_) => "UPDATE keystores SET name = $1, description = $2, location = $3, groups = $4, tls_proxy = $5, connection = $6,
                 secret_fields = $7, sealed_secrets = $8, updated_at = $9, updated_by = $10, revision = $11
                 WHERE type = $12 AND ibm_variant IS NOT DISTINCT FROM $13 AND created_at = $14 AND created_by = $15
                 AND vault_id = $16 AND id = $17 AND revision = $18",
    };
    let groups = json(&k.groups)?;
    let connection = json(&k.connection)?;
    let secret_fields = json(&k.secret_fields)?;
    let (updated_at, created_at) = (ts(&k.stamps.updated_at), ts(&k.stamps.created_at));
    let ibm_variant = k.ibm_variant.map(IbmVariant::as_str);
    let keystore_type = k.keystore_type.as_str();
    let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &k.name,
        &k.description,
        &k.location,
        &groups,
        &k.tls_proxy,
        &connection,
        &secret_fields,
        &k.sealed_secrets,
        &updated_at,
        &k.stamps.updated_by,
        &k.revision,
        &keystore_type,
        &ibm_variant,
        &created_at,
        &k.stamps.created_by,
        &k.vault.id,
        &k.id,
    ];
    if let Some(r) = &read_revision {
        values.push(r);
    }
    let rows = exec_named(
        c,
        sql,
        &values,
        "the keystore name (unique per vault)",
        &k.name,
    )
    .await?;
    check_updated(c, "keystores", "keystore", k.id, rows).await
}

pub(crate) async fn delete_keystore(
    c: &impl GenericClient,
    id: Uuid,
    read_revision: i64,
    changes: &[(ManagedKey, i64)],
) -> Result<()> {
    for (key, revision) in changes {
        save_key(c, key, Some(*revision), &KeyWrite::default()).await?;
    }
    for table in [
        "key_aliases",
        "internal_copies",
        "removed_copies",
        "key_rings",
    ] {
        exec(
            c,
            &format!("DELETE FROM {table} WHERE keystore_id = $1"),
            &[&id],
        )
        .await?;
    }
    super::distribution::forget_keystore(c, id).await?;
    super::import_tokens::forget(c, id).await?;
    let rows = exec(
        c,
        "DELETE FROM keystores WHERE id = $1 AND revision = $2",
        &[&id, &read_revision],
    )
    .await?;
    check_updated(c, "keystores", "keystore", id, rows).await
}

pub(crate) async fn delete_key(c: &impl GenericClient, id: Uuid, read_revision: i64) -> Result<()> {
    exec(
        c,
        "DELETE FROM removed_copies WHERE managed_key_id = $1",
        &[&id],
    )
    .await?;
    let rows = exec(
        c,
        "DELETE FROM managed_keys WHERE id = $1 AND revision = $2",
        &[&id, &read_revision],
    )
    .await?;
    check_updated(c, "managed_keys", "managed key", id, rows).await
}

/// Inserts or updates one key and everything its write carries. It runs as a keys-only write
/// (`Touches::KeysOnly`): it must never change a vault, template or keystore row.
pub(crate) async fn save_key(
    c: &impl GenericClient,
    k: &ManagedKey,
    read_revision: Option<i64>,
    w: &KeyWrite,
) -> Result<()> {
    let id = k.id;
    let sql = match read_revision {
        None => "INSERT INTO managed_keys (label, state, algorithm, size, version, activation_date, expiration_date, rotated_at,
                 instance_keystore_type, updated_at, updated_by, revision, doc, template_id, created_at, created_by, vault_id, id,
                 next_scheduled_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        Some(_) => "UPDATE managed_keys SET label = $1, state = $2, algorithm = $3, size = $4, version = $5, activation_date = $6,
                 expiration_date = $7, rotated_at = $8, instance_keystore_type = $9, updated_at = $10, updated_by = $11,
                 revision = $12, doc = $13, next_scheduled_at = $19
                 WHERE template_id = $14 AND created_at = $15 AND created_by = $16 AND vault_id = $17 AND id = $18 AND revision = $20",
    };
    let instance_type = k.instances.first().map_or("", |i| i.keystore_type.as_str());
    let size = i64::from(k.size);
    let version = i64::from(k.version);
    let rotated_at = k.rotated_at.as_ref().map(ts);
    let (updated_at, created_at) = (ts(&k.stamps.updated_at), ts(&k.stamps.created_at));
    let doc = json(&super::rows::KeyDoc::of(k))?;
    let (state, algorithm) = (k.state.as_str(), k.algorithm.as_str());
    let next_scheduled_at = keyplane_core::schedule::next_due(k).as_ref().map(ts);
    let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &k.label,
        &state,
        &algorithm,
        &size,
        &version,
        &k.activation_date,
        &k.expiration_date,
        &rotated_at,
        &instance_type,
        &updated_at,
        &k.stamps.updated_by,
        &k.revision,
        &doc,
        &k.template.id,
        &created_at,
        &k.stamps.created_by,
        &k.vault.id,
        &id,
        &next_scheduled_at,
    ];
    if let Some(r) = &read_revision {
        values.push(r);
    }
    let rows = exec_named(
        c,
        sql,
        &values,
        "the key label (unique per vault)",
        &k.label,
    )
    .await?;
    check_updated(c, "managed_keys", "managed key", k.id, rows).await?;

    // The rest of the key's rows go in one round trip: the connection pipelines the statements,
    // which the server runs in order (the first failure fails the write).
    let mut batch: Vec<(&str, Vec<&(dyn ToSql + Sync)>)> = Vec::new();
    if read_revision.is_some() {
        batch.push(("DELETE FROM key_targets WHERE key_id = $1", vec![&id]));
    }
    let targets = k
        .status_in_keystores
        .iter()
        .enumerate()
        .map(|(position, s)| {
            let position = i64::try_from(position).map_err(|e| Error::internal(e.to_string()))?;
            Ok((json(s)?, position, s.keystore.keystore_type.as_str()))
        })
        .collect::<Result<Vec<_>>>()?;
    for (s, (status, position, keystore_type)) in k.status_in_keystores.iter().zip(&targets) {
        batch.push((
            "INSERT INTO key_targets (key_id, keystore_id, keystore_name, keystore_type, removed, position, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                &id,
                &s.keystore.id,
                &s.keystore.name,
                keystore_type,
                &s.removed,
                position,
                status,
            ],
        ));
    }
    let materials = w
        .new_material
        .iter()
        .map(|m| Ok((json(&m.verification_patterns)?, i64::from(m.version))))
        .collect::<Result<Vec<_>>>()?;
    for (m, (patterns, material_version)) in w.new_material.iter().zip(&materials) {
        batch.push((
            "INSERT INTO key_material (key_id, version, state, sealed, verification_patterns, created_at, imported)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                &id,
                material_version,
                &state,
                &m.sealed,
                patterns,
                &updated_at,
                &w.imported,
            ],
        ));
    }
    let adopted = w
        .adopted_versions
        .iter()
        .map(|v| {
            Ok((
                i64::from(v.version),
                v.state.as_str(),
                json(&v.verification_patterns)?,
                ts(&v.created_at),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    for (version, version_state, patterns, created) in &adopted {
        batch.push((
            "INSERT INTO key_material (key_id, version, state, sealed, verification_patterns, created_at, imported)
             VALUES ($1, $2, $3, NULL, $4, $5, FALSE)",
            vec![&id, version, version_state, patterns, created],
        ));
    }
    let set_state = "UPDATE key_material SET state = $1 WHERE key_id = $2 AND version = $3";
    let version_states: Vec<(&str, i64)> = w
        .version_states
        .iter()
        .map(|(v, s)| (s.as_str(), i64::from(*v)))
        .collect();
    for (version_state, v) in &version_states {
        batch.push((set_state, vec![version_state, &id, v]));
    }
    if read_revision.is_some() {
        // The current version's state is the key's state.
        batch.push((set_state, vec![&state, &id, &version]));
    }
    if w.erase_material {
        // SQLite overwrites the bytes first so freed pages do not keep them; here an update
        // writes a new row version whatever it sets, and the old one is gone at the next vacuum.
        batch.push((
            "UPDATE key_material SET sealed = NULL, state = $1 WHERE key_id = $2",
            vec![&state, &id],
        ));
    }
    super::exec_pipelined(c, &batch).await?;
    for copy in &w.adopted_copies {
        super::distribution::adopt_copy(c, copy).await?;
    }
    super::distribution::enqueue(c, k.id, &w.converge_in, &k.stamps.updated_at).await?;
    for keystore_id in &w.remove_copies_from {
        // Remembered under its id there: Key Protect's purge and restore name it so.
        exec(
            c,
            "INSERT INTO removed_copies (keystore_id, key_id_in_keystore, managed_key_id, key_ring, removed_at)
             SELECT keystore_id, key_id_in_keystore, managed_key_id, key_ring, $3::timestamptz FROM internal_copies
             WHERE keystore_id = $1 AND managed_key_id = $2
             ON CONFLICT (keystore_id, key_id_in_keystore) DO UPDATE SET managed_key_id = excluded.managed_key_id,
               key_ring = excluded.key_ring, removed_at = excluded.removed_at",
            &[keystore_id, &id, &updated_at],
        )
        .await?;
        // A copy's aliases go with it.
        exec(
            c,
            "DELETE FROM key_aliases WHERE keystore_id = $1 AND key_id_in_keystore IN
               (SELECT key_id_in_keystore FROM internal_copies WHERE keystore_id = $1 AND managed_key_id = $2)",
            &[keystore_id, &id],
        )
        .await?;
        exec(
            c,
            "DELETE FROM internal_copies WHERE keystore_id = $1 AND managed_key_id = $2",
            &[keystore_id, &id],
        )
        .await?;
    }
    for copy in &w.upsert_copies {
        exec(
            c,
            "INSERT INTO internal_copies (keystore_id, managed_key_id, key_id_in_keystore, label, enabled, version, key_ring)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (keystore_id, managed_key_id) DO UPDATE SET label = excluded.label, enabled = excluded.enabled,
                version = excluded.version",
            &[
                &copy.keystore_id,
                &copy.managed_key_id,
                &copy.key_id_in_keystore,
                &copy.label,
                &copy.enabled,
                &i64::from(copy.version),
                &copy.key_ring,
            ],
        )
        .await?;
    }
    if let Some(placement) = &w.key_protect {
        super::key_rings::place(c, k.id, placement).await?;
    }
    Ok(())
}

pub(crate) async fn insert_root_key(c: &impl GenericClient, root: &StoredRootKey) -> Result<()> {
    exec(
        c,
        "INSERT INTO root_keys (id, sealed, created_at) VALUES ($1, $2, $3)",
        &[&root.id, &root.sealed, &ts(&root.created_at)],
    )
    .await?;
    Ok(())
}

pub(crate) async fn insert_vault_key(c: &impl GenericClient, key: &WrappedVaultKey) -> Result<()> {
    exec(
        c,
        "INSERT INTO vault_keys (vault_id, root_id, wrapped) VALUES ($1, $2, $3) ON CONFLICT (vault_id) DO NOTHING",
        &[&key.vault_id, &key.root_id, &key.wrapped],
    )
    .await?;
    Ok(())
}

pub(crate) async fn retire_root_key(
    c: &impl GenericClient,
    from_root: &str,
    rewrapped: &[WrappedVaultKey],
) -> Result<bool> {
    for key in rewrapped {
        exec(
            c,
            "UPDATE vault_keys SET root_id = $1, wrapped = $2 WHERE vault_id = $3 AND root_id = $4",
            &[&key.root_id, &key.wrapped, &key.vault_id, &from_root],
        )
        .await?;
    }
    let left = one(
        c,
        "SELECT COUNT(*) AS n FROM vault_keys WHERE root_id = $1",
        &[&from_root],
        |r| col::<i64>(r, "n"),
    )
    .await?
    .unwrap_or(0);
    if left > 0 {
        return Ok(false);
    }
    exec(c, "DELETE FROM root_keys WHERE id = $1", &[&from_root]).await?;
    Ok(true)
}

pub(crate) async fn add_pooled_key(c: &impl GenericClient, key: &PooledKey) -> Result<()> {
    exec(
        c,
        "INSERT INTO key_pool (id, algorithm, size, sealed, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            &key.id,
            &key.algorithm.to_string(),
            &i64::from(key.size),
            &key.sealed,
            &ts(&key.created_at),
        ],
    )
    .await?;
    Ok(())
}

/// Claims the oldest pooled key of a kind: taken and deleted in one statement, skipping keys
/// another transaction is taking, so no two callers (of any node) get the same one.
pub(crate) async fn take_pooled_key(
    c: &impl GenericClient,
    algorithm: Algorithm,
    size: u32,
) -> Result<Option<PooledKey>> {
    one(
        c,
        "DELETE FROM key_pool WHERE id = (
           SELECT id FROM key_pool WHERE algorithm = $1 AND size = $2 ORDER BY created_at, id LIMIT 1
           FOR UPDATE SKIP LOCKED)
         RETURNING id, algorithm, size, sealed, created_at",
        &[&algorithm.to_string(), &i64::from(size)],
        pooled_from_row,
    )
    .await
}
