//! Every write, as synchronous code for the writer thread.

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use keyplane_core::error::{Error, Result};
use keyplane_core::guards::{self, VaultContents};
use keyplane_core::model::*;
use keyplane_core::ports::{ApiToken, KeyWrite, PooledKey, StoredRootKey, WrappedVaultKey};

use super::rows::{json, pooled_from_row, ts};
use super::writer::{sql_err, write_err};

/// Fails with `EtagMismatch` (row changed) or `NotFound` (row gone) when a write hit no row.
fn check_updated(
    conn: &Connection,
    table: &str,
    resource: &'static str,
    id: Uuid,
    rows: usize,
) -> Result<()> {
    if rows > 0 {
        return Ok(());
    }
    let exists = conn
        .query_row(
            &format!("SELECT 1 FROM {table} WHERE id = ?"),
            [id.to_string()],
            |_| Ok(()),
        )
        .optional()
        .map_err(sql_err)?;
    Err(if exists.is_some() {
        Error::EtagMismatch
    } else {
        Error::not_found(resource, id)
    })
}

pub(crate) fn put_setting(conn: &Connection, name: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn insert_api_token(conn: &Connection, token: &ApiToken) -> Result<()> {
    conn.execute(
        "INSERT INTO api_tokens (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
        params![
            token.id.to_string(),
            token.name,
            token.token_hash,
            ts(&chrono::Utc::now())
        ],
    )
    .map_err(|e| write_err(e, "the token name", &token.name))?;
    Ok(())
}

pub(crate) fn insert_vault(conn: &Connection, v: &Vault) -> Result<()> {
    conn.execute(
        "INSERT INTO vaults (id, name, description, recovery_key_label, created_at, updated_at, created_by, updated_by, revision)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            v.id.to_string(),
            v.name,
            v.description,
            v.recovery_key_label,
            ts(&v.stamps.created_at),
            ts(&v.stamps.updated_at),
            v.stamps.created_by,
            v.stamps.updated_by,
            v.revision
        ],
    )
    .map_err(|e| write_err(e, "the vault name", &v.name))?;
    Ok(())
}

pub(crate) fn update_vault(conn: &Connection, v: &Vault, read_revision: i64) -> Result<()> {
    let rows = conn
        .execute(
            "UPDATE vaults SET name = ?, description = ?, recovery_key_label = ?, updated_at = ?, updated_by = ?, revision = ?
             WHERE id = ? AND revision = ?",
            params![
                v.name,
                v.description,
                v.recovery_key_label,
                ts(&v.stamps.updated_at),
                v.stamps.updated_by,
                v.revision,
                v.id.to_string(),
                read_revision
            ],
        )
        .map_err(|e| write_err(e, "the vault name", &v.name))?;
    check_updated(conn, "vaults", "vault", v.id, rows)
}

pub(crate) fn delete_vault(conn: &Connection, id: Uuid, read_revision: i64) -> Result<()> {
    let key = id.to_string();
    let (name, contents) = conn
        .query_row(
            "SELECT name,
               (SELECT COUNT(*) FROM managed_keys WHERE vault_id = ?1),
               (SELECT COUNT(*) FROM keystores WHERE vault_id = ?1),
               (SELECT COUNT(*) FROM templates WHERE vault_id = ?1 AND state = 'unarchived')
             FROM vaults WHERE id = ?1",
            [&key],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    VaultContents {
                        keys: r.get(1)?,
                        keystores: r.get(2)?,
                        unarchived_templates: r.get(3)?,
                    },
                ))
            },
        )
        .optional()
        .map_err(sql_err)?
        .ok_or_else(|| Error::not_found("vault", id))?;
    guards::vault_delete(&name, contents)?;
    // Archived templates go with the vault; deleted first for the foreign key.
    conn.execute("DELETE FROM templates WHERE vault_id = ?", [&key])
        .map_err(sql_err)?;
    conn.execute("DELETE FROM dual_control_vaults WHERE vault_id = ?", [&key])
        .map_err(sql_err)?;
    // The vault is empty: its key protects nothing any more.
    conn.execute("DELETE FROM vault_keys WHERE vault_id = ?", [&key])
        .map_err(sql_err)?;
    let rows = conn
        .execute(
            "DELETE FROM vaults WHERE id = ? AND revision = ?",
            params![key, read_revision],
        )
        .map_err(sql_err)?;
    check_updated(conn, "vaults", "vault", id, rows)
}

pub(crate) fn write_template(
    conn: &Connection,
    t: &Template,
    read_revision: Option<i64>,
) -> Result<()> {
    let doc = json(&super::rows::TemplateDoc::of(t))?;
    let entry = t.keystore();
    let sql = match read_revision {
        None => "INSERT INTO templates (name, state, types, version, naming_scheme, algorithm, size, keystore_type, keystore_group,
                 managing_systems, updated_at, updated_by, revision, doc, created_at, created_by, vault_id, id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        Some(_) => "UPDATE templates SET name = ?1, state = ?2, types = ?3, version = ?4, naming_scheme = ?5, algorithm = ?6,
                 size = ?7, keystore_type = ?8, keystore_group = ?9, managing_systems = ?10, updated_at = ?11, updated_by = ?12,
                 revision = ?13, doc = ?14
                 WHERE created_at = ?15 AND created_by = ?16 AND vault_id = ?17 AND id = ?18 AND revision = ?19",
    };
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![
        Box::new(t.name.clone()),
        Box::new(t.state.as_str()),
        Box::new(json(&t.types)?),
        Box::new(t.version),
        Box::new(t.naming_scheme.clone()),
        Box::new(t.key.algorithm.as_str()),
        Box::new(i64::from(t.key.size)),
        Box::new(entry.keystore_type.as_str()),
        Box::new(entry.group.clone()),
        Box::new(json(&t.managing_systems)?),
        Box::new(ts(&t.stamps.updated_at)),
        Box::new(t.stamps.updated_by.clone()),
        Box::new(t.revision),
        Box::new(doc),
        Box::new(ts(&t.stamps.created_at)),
        Box::new(t.stamps.created_by.clone()),
        Box::new(t.vault.id.to_string()),
        Box::new(t.id.to_string()),
    ];
    if let Some(r) = read_revision {
        values.push(Box::new(r));
    }
    let rows = conn
        .execute(sql, rusqlite::params_from_iter(values.iter()))
        .map_err(|e| write_err(e, "the template name (unique per vault)", &t.name))?;
    check_updated(conn, "templates", "template", t.id, rows)
}

pub(crate) fn delete_template(conn: &Connection, id: Uuid, read_revision: i64) -> Result<()> {
    let (name, keys) = conn
        .query_row(
            "SELECT name, (SELECT COUNT(*) FROM managed_keys WHERE template_id = ?1) FROM templates WHERE id = ?1",
            [id.to_string()],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()
        .map_err(sql_err)?
        .ok_or_else(|| Error::not_found("template", id))?;
    guards::template_delete(&name, keys)?;
    let rows = conn
        .execute(
            "DELETE FROM templates WHERE id = ? AND revision = ?",
            params![id.to_string(), read_revision],
        )
        .map_err(sql_err)?;
    check_updated(conn, "templates", "template", id, rows)
}

pub(crate) fn write_keystore(
    conn: &Connection,
    k: &Keystore,
    read_revision: Option<i64>,
) -> Result<()> {
    let sql = match read_revision {
        None => "INSERT INTO keystores (name, description, location, groups, tls_proxy, connection, secret_fields, sealed_secrets,
                 updated_at, updated_by, revision, type, ibm_variant, created_at, created_by, vault_id, id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        Some(_) => "UPDATE keystores SET name = ?1, description = ?2, location = ?3, groups = ?4, tls_proxy = ?5, connection = ?6,
                 secret_fields = ?7, sealed_secrets = ?8, updated_at = ?9, updated_by = ?10, revision = ?11
                 WHERE type = ?12 AND ibm_variant IS ?13 AND created_at = ?14 AND created_by = ?15 AND vault_id = ?16 AND id = ?17
                 AND revision = ?18",
    };
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![
        Box::new(k.name.clone()),
        Box::new(k.description.clone()),
        Box::new(k.location.clone()),
        Box::new(json(&k.groups)?),
        Box::new(k.tls_proxy.clone()),
        Box::new(json(&k.connection)?),
        Box::new(json(&k.secret_fields)?),
        Box::new(k.sealed_secrets.clone()),
        Box::new(ts(&k.stamps.updated_at)),
        Box::new(k.stamps.updated_by.clone()),
        Box::new(k.revision),
        Box::new(k.keystore_type.as_str()),
        Box::new(k.ibm_variant.map(IbmVariant::as_str)),
        Box::new(ts(&k.stamps.created_at)),
        Box::new(k.stamps.created_by.clone()),
        Box::new(k.vault.id.to_string()),
        Box::new(k.id.to_string()),
    ];
    if let Some(r) = read_revision {
        values.push(Box::new(r));
    }
    let rows = conn
        .execute(sql, rusqlite::params_from_iter(values.iter()))
        .map_err(|e| write_err(e, "the keystore name (unique per vault)", &k.name))?;
    check_updated(conn, "keystores", "keystore", k.id, rows)
}

pub(crate) fn delete_keystore(
    conn: &Connection,
    id: Uuid,
    read_revision: i64,
    changes: &[(ManagedKey, i64)],
) -> Result<()> {
    for (key, revision) in changes {
        save_key(conn, key, Some(*revision), &KeyWrite::default())?;
    }
    conn.execute(
        "DELETE FROM key_aliases WHERE keystore_id = ?",
        [id.to_string()],
    )
    .map_err(sql_err)?;
    for table in ["internal_copies", "removed_copies", "key_rings"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE keystore_id = ?"),
            [id.to_string()],
        )
        .map_err(sql_err)?;
    }
    super::distribution::forget_keystore(conn, id)?;
    super::import_tokens::forget(conn, id)?;
    let rows = conn
        .execute(
            "DELETE FROM keystores WHERE id = ? AND revision = ?",
            params![id.to_string(), read_revision],
        )
        .map_err(sql_err)?;
    check_updated(conn, "keystores", "keystore", id, rows)
}

pub(crate) fn delete_key(conn: &Connection, id: Uuid, read_revision: i64) -> Result<()> {
    conn.execute(
        "DELETE FROM removed_copies WHERE managed_key_id = ?",
        [id.to_string()],
    )
    .map_err(sql_err)?;
    let rows = conn
        .execute(
            "DELETE FROM managed_keys WHERE id = ? AND revision = ?",
            params![id.to_string(), read_revision],
        )
        .map_err(sql_err)?;
    check_updated(conn, "managed_keys", "managed key", id, rows)
}

/// Inserts or updates one key and everything its write carries.
pub(crate) fn save_key(
    conn: &Connection,
    k: &ManagedKey,
    read_revision: Option<i64>,
    w: &KeyWrite,
) -> Result<()> {
    let id = k.id.to_string();
    let sql = match read_revision {
        None => "INSERT INTO managed_keys (label, state, algorithm, size, version, activation_date, expiration_date, rotated_at,
                 instance_keystore_type, updated_at, updated_by, revision, doc, template_id, created_at, created_by, vault_id, id,
                 next_scheduled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        Some(_) => "UPDATE managed_keys SET label = ?1, state = ?2, algorithm = ?3, size = ?4, version = ?5, activation_date = ?6,
                 expiration_date = ?7, rotated_at = ?8, instance_keystore_type = ?9, updated_at = ?10, updated_by = ?11,
                 revision = ?12, doc = ?13, next_scheduled_at = ?19
                 WHERE template_id = ?14 AND created_at = ?15 AND created_by = ?16 AND vault_id = ?17 AND id = ?18 AND revision = ?20",
    };
    let instance_type = k.instances.first().map_or("", |i| i.keystore_type.as_str());
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![
        Box::new(k.label.clone()),
        Box::new(k.state.as_str()),
        Box::new(k.algorithm.as_str()),
        Box::new(i64::from(k.size)),
        Box::new(i64::from(k.version)),
        Box::new(k.activation_date.map(|d| d.to_string())),
        Box::new(k.expiration_date.map(|d| d.to_string())),
        Box::new(k.rotated_at.as_ref().map(ts)),
        Box::new(instance_type),
        Box::new(ts(&k.stamps.updated_at)),
        Box::new(k.stamps.updated_by.clone()),
        Box::new(k.revision),
        Box::new(json(&super::rows::KeyDoc::of(k))?),
        Box::new(k.template.id.to_string()),
        Box::new(ts(&k.stamps.created_at)),
        Box::new(k.stamps.created_by.clone()),
        Box::new(k.vault.id.to_string()),
        Box::new(id.clone()),
        Box::new(keyplane_core::schedule::next_due(k).as_ref().map(ts)),
    ];
    if let Some(r) = read_revision {
        values.push(Box::new(r));
    }
    let rows = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.execute(rusqlite::params_from_iter(values.iter())))
        .map_err(|e| write_err(e, "the key label (unique per vault)", &k.label))?;
    check_updated(conn, "managed_keys", "managed key", k.id, rows)?;

    if read_revision.is_some() {
        conn.prepare_cached("DELETE FROM key_targets WHERE key_id = ?")
            .and_then(|mut s| s.execute([&id]))
            .map_err(sql_err)?;
    }
    for (position, s) in k.status_in_keystores.iter().enumerate() {
        let status = json(s)?;
        conn.prepare_cached(
            "INSERT INTO key_targets (key_id, keystore_id, keystore_name, keystore_type, removed, position, status)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .and_then(|mut st| {
            st.execute(params![
                id,
                s.keystore.id.to_string(),
                s.keystore.name,
                s.keystore.keystore_type.as_str(),
                s.removed,
                position as i64,
                status
            ])
        })
        .map_err(sql_err)?;
    }
    for m in &w.new_material {
        let patterns = json(&m.verification_patterns)?;
        conn.prepare_cached(
            "INSERT INTO key_material (key_id, version, state, sealed, verification_patterns, created_at, imported) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .and_then(|mut st| {
            st.execute(params![
                id,
                i64::from(m.version),
                k.state.as_str(),
                m.sealed,
                patterns,
                ts(&k.stamps.updated_at),
                w.imported
            ])
        })
        .map_err(sql_err)?;
    }
    for v in &w.adopted_versions {
        let patterns = json(&v.verification_patterns)?;
        conn.prepare_cached(
            "INSERT INTO key_material (key_id, version, state, sealed, verification_patterns, created_at, imported) VALUES (?, ?, ?, NULL, ?, ?, 0)",
        )
        .and_then(|mut st| {
            st.execute(params![
                id,
                i64::from(v.version),
                v.state.as_str(),
                patterns,
                ts(&v.created_at)
            ])
        })
        .map_err(sql_err)?;
    }
    for copy in &w.adopted_copies {
        super::distribution::adopt_copy(conn, copy)?;
    }
    for (version, state) in &w.version_states {
        conn.prepare_cached("UPDATE key_material SET state = ? WHERE key_id = ? AND version = ?")
            .and_then(|mut st| st.execute(params![state.as_str(), id, i64::from(*version)]))
            .map_err(sql_err)?;
    }
    if read_revision.is_some() {
        // The current version's state is the key's state.
        conn.prepare_cached("UPDATE key_material SET state = ? WHERE key_id = ? AND version = ?")
            .and_then(|mut st| st.execute(params![k.state.as_str(), id, i64::from(k.version)]))
            .map_err(sql_err)?;
    }
    if w.erase_material {
        // Overwrite before clearing so freed pages do not keep the sealed bytes.
        conn.execute(
            "UPDATE key_material SET sealed = zeroblob(length(sealed)) WHERE key_id = ? AND sealed IS NOT NULL",
            [&id],
        )
        .map_err(sql_err)?;
        conn.execute(
            "UPDATE key_material SET sealed = NULL, state = ? WHERE key_id = ?",
            params![k.state.as_str(), id],
        )
        .map_err(sql_err)?;
    }
    super::distribution::enqueue(conn, k.id, &w.converge_in, &k.stamps.updated_at)?;
    for keystore_id in &w.remove_copies_from {
        // Remembered under its id there: Key Protect's purge and restore name it so.
        conn.prepare_cached(
            "INSERT OR REPLACE INTO removed_copies (keystore_id, key_id_in_keystore, managed_key_id, key_ring, removed_at)
             SELECT keystore_id, key_id_in_keystore, managed_key_id, key_ring, ?3 FROM internal_copies
             WHERE keystore_id = ?1 AND managed_key_id = ?2",
        )
        .and_then(|mut st| {
            st.execute(params![
                keystore_id.to_string(),
                id,
                ts(&k.stamps.updated_at)
            ])
        })
        .map_err(sql_err)?;
        // A copy's aliases go with it.
        conn.prepare_cached(
            "DELETE FROM key_aliases WHERE keystore_id = ?1 AND key_id_in_keystore IN
               (SELECT key_id_in_keystore FROM internal_copies WHERE keystore_id = ?1 AND managed_key_id = ?2)",
        )
        .and_then(|mut st| st.execute(params![keystore_id.to_string(), id]))
        .map_err(sql_err)?;
        conn.prepare_cached(
            "DELETE FROM internal_copies WHERE keystore_id = ? AND managed_key_id = ?",
        )
        .and_then(|mut st| st.execute(params![keystore_id.to_string(), id]))
        .map_err(sql_err)?;
    }
    for c in &w.upsert_copies {
        conn.prepare_cached(
            "INSERT INTO internal_copies (keystore_id, managed_key_id, key_id_in_keystore, label, enabled, version, key_ring)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (keystore_id, managed_key_id) DO UPDATE SET label = excluded.label, enabled = excluded.enabled,
                version = excluded.version",
        )
        .and_then(|mut st| {
            st.execute(params![
                c.keystore_id.to_string(),
                c.managed_key_id.to_string(),
                c.key_id_in_keystore.to_string(),
                c.label,
                c.enabled,
                i64::from(c.version),
                c.key_ring
            ])
        })
        .map_err(sql_err)?;
    }
    if let Some(placement) = &w.key_protect {
        super::key_rings::place(conn, k.id, placement)?;
    }
    Ok(())
}

pub(crate) fn insert_root_key(conn: &Connection, root: &StoredRootKey) -> Result<()> {
    conn.execute(
        "INSERT INTO root_keys (id, sealed, created_at) VALUES (?, ?, ?)",
        params![root.id, root.sealed, ts(&root.created_at)],
    )
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn insert_vault_key(conn: &Connection, key: &WrappedVaultKey) -> Result<()> {
    conn.execute(
        "INSERT INTO vault_keys (vault_id, root_id, wrapped) VALUES (?, ?, ?) ON CONFLICT(vault_id) DO NOTHING",
        params![key.vault_id.to_string(), key.root_id, key.wrapped],
    )
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn retire_root_key(
    conn: &Connection,
    from_root: &str,
    rewrapped: &[WrappedVaultKey],
) -> Result<bool> {
    let mut update = conn
        .prepare_cached(
            "UPDATE vault_keys SET root_id = ?, wrapped = ? WHERE vault_id = ? AND root_id = ?",
        )
        .map_err(sql_err)?;
    for key in rewrapped {
        update
            .execute(params![
                key.root_id,
                key.wrapped,
                key.vault_id.to_string(),
                from_root
            ])
            .map_err(sql_err)?;
    }
    let left: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM vault_keys WHERE root_id = ?",
            [from_root],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    if left > 0 {
        return Ok(false);
    }
    conn.execute("DELETE FROM root_keys WHERE id = ?", [from_root])
        .map_err(sql_err)?;
    Ok(true)
}

pub(crate) fn add_pooled_key(conn: &Connection, key: &PooledKey) -> Result<()> {
    conn.execute(
        "INSERT INTO key_pool (id, algorithm, size, sealed, created_at) VALUES (?, ?, ?, ?, ?)",
        params![
            key.id.to_string(),
            key.algorithm.to_string(),
            i64::from(key.size),
            key.sealed,
            ts(&key.created_at)
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

/// Claims the oldest pooled key of a kind: read and deleted in one transaction, so no two
/// callers get the same one.
pub(crate) fn take_pooled_key(
    conn: &Connection,
    algorithm: Algorithm,
    size: u32,
) -> Result<Option<PooledKey>> {
    let found = crate::sqlite::one(
        conn,
        "SELECT id, algorithm, size, sealed, created_at FROM key_pool WHERE algorithm = ? AND size = ? ORDER BY created_at, id LIMIT 1",
        params![algorithm.to_string(), i64::from(size)],
        pooled_from_row,
    )?;
    if let Some(key) = &found {
        conn.execute("DELETE FROM key_pool WHERE id = ?", [key.id.to_string()])
            .map_err(sql_err)?;
    }
    Ok(found)
}
