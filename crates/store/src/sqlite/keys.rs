//! Writing and loading managed keys with their targets, material and internal copies.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection, SqlitePool};

use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::KeyWrite;

use super::rows::*;
use super::{check_updated, db_err, write_err};

/// Inserts or updates one key and everything its write carries, inside the caller's transaction.
pub(crate) async fn save(
    conn: &mut SqliteConnection,
    k: &ManagedKey,
    read_revision: Option<i64>,
    w: &KeyWrite,
) -> Result<()> {
    let id = k.id.to_string();
    let sql = match read_revision {
        None => "INSERT INTO managed_keys (label, state, algorithm, size, version, activation_date, expiration_date, rotated_at,
                 instance_keystore_type, updated_at, updated_by, revision, doc, template_id, created_at, created_by, vault_id, id)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        Some(_) => "UPDATE managed_keys SET label = ?, state = ?, algorithm = ?, size = ?, version = ?, activation_date = ?,
                 expiration_date = ?, rotated_at = ?, instance_keystore_type = ?, updated_at = ?, updated_by = ?, revision = ?, doc = ?
                 WHERE template_id = ? AND created_at = ? AND created_by = ? AND vault_id = ? AND id = ? AND revision = ?",
    };
    let instance_type = k.instances.first().map_or("", |i| i.keystore_type.as_str());
    let done = sqlx::query(sql)
        .bind(&k.label)
        .bind(k.state.as_str())
        .bind(k.algorithm.as_str())
        .bind(i64::from(k.size))
        .bind(i64::from(k.version))
        .bind(k.activation_date.map(|d| d.to_string()))
        .bind(k.expiration_date.map(|d| d.to_string()))
        .bind(k.rotated_at.as_ref().map(ts))
        .bind(instance_type)
        .bind(ts(&k.stamps.updated_at))
        .bind(&k.stamps.updated_by)
        .bind(k.revision)
        .bind(json(&KeyDoc::of(k))?)
        .bind(k.template.id.to_string())
        .bind(ts(&k.stamps.created_at))
        .bind(&k.stamps.created_by)
        .bind(k.vault.id.to_string())
        .bind(&id)
        .bind(read_revision.unwrap_or_default())
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            write_err(
                e,
                "managed key labelled like this in the vault; label",
                &k.label,
            )
        })?;
    check_updated(
        conn,
        "managed_keys",
        "managed key",
        k.id,
        done.rows_affected(),
    )
    .await?;

    sqlx::query("DELETE FROM key_targets WHERE key_id = ?")
        .bind(&id)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    for (position, s) in k.status_in_keystores.iter().enumerate() {
        sqlx::query(
            "INSERT INTO key_targets (key_id, keystore_id, keystore_name, keystore_type, removed, position, status)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(s.keystore.id.to_string())
        .bind(&s.keystore.name)
        .bind(s.keystore.keystore_type.as_str())
        .bind(s.removed)
        .bind(position as i64)
        .bind(json(s)?)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    for m in &w.new_material {
        sqlx::query(
            "INSERT INTO key_material (key_id, version, state, sealed, verification_patterns, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(i64::from(m.version))
        .bind(k.state.as_str())
        .bind(&m.sealed)
        .bind(json(&m.verification_patterns)?)
        .bind(ts(&k.stamps.updated_at))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    for (version, state) in &w.version_states {
        sqlx::query("UPDATE key_material SET state = ? WHERE key_id = ? AND version = ?")
            .bind(state.as_str())
            .bind(&id)
            .bind(i64::from(*version))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    // The current version's state is the key's state.
    sqlx::query("UPDATE key_material SET state = ? WHERE key_id = ? AND version = ?")
        .bind(k.state.as_str())
        .bind(&id)
        .bind(i64::from(k.version))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    if w.erase_material {
        // Overwrite before clearing so the freed pages do not keep the sealed bytes.
        sqlx::query("UPDATE key_material SET sealed = zeroblob(length(sealed)) WHERE key_id = ? AND sealed IS NOT NULL")
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        sqlx::query("UPDATE key_material SET sealed = NULL, state = ? WHERE key_id = ?")
            .bind(k.state.as_str())
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    for keystore_id in &w.remove_copies_from {
        sqlx::query("DELETE FROM internal_copies WHERE keystore_id = ? AND managed_key_id = ?")
            .bind(keystore_id.to_string())
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    for c in &w.upsert_copies {
        sqlx::query(
            "INSERT INTO internal_copies (keystore_id, managed_key_id, key_id_in_keystore, label, enabled, version)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (keystore_id, managed_key_id) DO UPDATE SET label = excluded.label, enabled = excluded.enabled,
                version = excluded.version",
        )
        .bind(c.keystore_id.to_string())
        .bind(c.managed_key_id.to_string())
        .bind(c.key_id_in_keystore.to_string())
        .bind(&c.label)
        .bind(c.enabled)
        .bind(i64::from(c.version))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

/// Loads keys selected by `sql` (which starts with `KEY_SELECT`) with their distribution status.
pub(crate) async fn load(
    pool: &SqlitePool,
    sql: &str,
    binds: &[String],
) -> Result<Vec<ManagedKey>> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(b);
    }
    let rows = query.fetch_all(pool).await.map_err(db_err)?;
    let mut keys = rows.iter().map(key_from_row).collect::<Result<Vec<_>>>()?;
    attach_status(pool, &mut keys).await?;
    Ok(keys)
}

/// Fills `status_in_keystores`, naming live keystores by their current name.
pub(crate) async fn attach_status(pool: &SqlitePool, keys: &mut [ManagedKey]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let placeholders = vec!["?"; keys.len()].join(",");
    let sql = format!(
        "SELECT kt.key_id, kt.status, ks.name AS live_name FROM key_targets kt
         LEFT JOIN keystores ks ON ks.id = kt.keystore_id
         WHERE kt.key_id IN ({placeholders}) ORDER BY kt.key_id, kt.position"
    );
    let mut query = sqlx::query(&sql);
    for k in keys.iter() {
        query = query.bind(k.id.to_string());
    }
    let rows = query.fetch_all(pool).await.map_err(db_err)?;
    let mut by_key: HashMap<String, Vec<KeyStatusInKeystore>> = HashMap::new();
    for r in &rows {
        let mut status: KeyStatusInKeystore = json_col(r, "status")?;
        if let Some(name) = r.get::<Option<String>, _>("live_name") {
            status.keystore.name = name;
        }
        by_key.entry(r.get("key_id")).or_default().push(status);
    }
    for k in keys.iter_mut() {
        k.status_in_keystores = by_key.remove(&k.id.to_string()).unwrap_or_default();
    }
    Ok(())
}
