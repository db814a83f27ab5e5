//! Key Protect's key rings in internal keystores, and the copies taken out of them.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use keyplane_core::error::{Error, ErrorCode, Result};
use keyplane_core::ports::{
    DEFAULT_KEY_RING, KeyProtectPlacement, KeyRing, KeyRingRecords, RemovedCopy,
};

use super::rows::*;
use super::writer::sql_err;
use super::{SqliteStore, all, one};

fn ring_from_row(r: &rusqlite::Row<'_>) -> Result<KeyRing> {
    Ok(KeyRing {
        keystore_id: uuid_col(r, "keystore_id")?,
        id: col(r, "id")?,
        created_at: ts_col(r, "created_at")?,
        created_by: col(r, "created_by")?,
    })
}

fn removed_from_row(r: &rusqlite::Row<'_>) -> Result<RemovedCopy> {
    Ok(RemovedCopy {
        keystore_id: uuid_col(r, "keystore_id")?,
        key_id_in_keystore: uuid_col(r, "key_id_in_keystore")?,
        managed_key_id: uuid_col(r, "managed_key_id")?,
        key_ring: col(r, "key_ring")?,
        removed_at: ts_col(r, "removed_at")?,
    })
}

fn ring_not_found(id: &str) -> Error {
    Error::NotFound {
        resource: "key ring",
        id: id.escape_debug().to_string(),
    }
}

/// Whether the ring exists in the keystore (`default` always does).
fn ring_exists(conn: &Connection, keystore_id: &str, ring: &str) -> Result<bool> {
    if ring == DEFAULT_KEY_RING {
        return Ok(true);
    }
    conn.prepare_cached("SELECT 1 FROM key_rings WHERE keystore_id = ? AND id = ?")
        .and_then(|mut st| {
            st.query_row(params![keystore_id, ring], |_| Ok(()))
                .optional()
        })
        .map(|found| found.is_some())
        .map_err(sql_err)
}

/// Puts a key just saved into its ring and gives it its aliases, in the key's transaction.
pub(crate) fn place(conn: &Connection, key_id: Uuid, p: &KeyProtectPlacement) -> Result<()> {
    let keystore = p.keystore_id.to_string();
    if !ring_exists(conn, &keystore, &p.key_ring)? {
        return Err(ring_not_found(&p.key_ring));
    }
    let key_id_in_keystore: String = conn
        .prepare_cached(
            "UPDATE internal_copies SET key_ring = ?3 WHERE keystore_id = ?1 AND managed_key_id = ?2
             RETURNING key_id_in_keystore",
        )
        .and_then(|mut st| {
            st.query_row(params![keystore, key_id.to_string(), p.key_ring], |r| {
                r.get(0)
            })
            .optional()
        })
        .map_err(sql_err)?
        .ok_or_else(|| Error::internal("a key created for a keystore is not installed there"))?;
    for alias in &p.aliases {
        let taken = conn
            .prepare_cached("SELECT 1 FROM key_aliases WHERE keystore_id = ? AND alias = ?")
            .and_then(|mut st| {
                st.query_row(params![keystore, alias], |_| Ok(()))
                    .optional()
            })
            .map_err(sql_err)?;
        if taken.is_some() {
            return Err(Error::duplicate_name("alias", alias));
        }
        conn.prepare_cached(
            "INSERT INTO key_aliases (keystore_id, alias, key_id_in_keystore, created_at, created_by)
             VALUES (?, ?, ?, ?, ?)",
        )
        .and_then(|mut st| {
            st.execute(params![
                keystore,
                alias,
                key_id_in_keystore,
                ts(&p.created_at),
                p.created_by
            ])
        })
        .map_err(sql_err)?;
    }
    Ok(())
}

#[async_trait]
impl KeyRingRecords for SqliteStore {
    async fn key_rings(&self, keystore_id: Uuid) -> Result<Vec<KeyRing>> {
        self.reader.with(|c| {
            all(
                c,
                "SELECT * FROM key_rings WHERE keystore_id = ? ORDER BY created_at, id",
                [keystore_id.to_string()],
                ring_from_row,
            )
        })
    }

    async fn add_key_ring(&self, ring: &KeyRing, max_per_keystore: usize) -> Result<()> {
        let ring = ring.clone();
        self.audited_write(move |c| {
            let keystore = ring.keystore_id.to_string();
            if ring_exists(c, &keystore, &ring.id)? {
                return Err(Error::duplicate_name("key ring", &ring.id));
            }
            let held: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM key_rings WHERE keystore_id = ?",
                    [&keystore],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            if usize::try_from(held).unwrap_or(usize::MAX) >= max_per_keystore {
                return Err(Error::conflict(
                    ErrorCode::InvalidStateTransition,
                    format!("a keystore has at most {max_per_keystore} key rings besides 'default'"),
                ));
            }
            c.execute(
                "INSERT INTO key_rings (keystore_id, id, created_at, created_by) VALUES (?, ?, ?, ?)",
                params![keystore, ring.id, ts(&ring.created_at), ring.created_by],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn remove_key_ring(&self, keystore_id: Uuid, id: &str, force: bool) -> Result<()> {
        let id = id.to_owned();
        self.audited_write(move |c| {
            let keystore = keystore_id.to_string();
            let count = |table: &str| -> Result<i64> {
                c.query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE keystore_id = ? AND key_ring = ?"),
                    params![keystore, id],
                    |r| r.get(0),
                )
                .map_err(sql_err)
            };
            let (held, removed) = (count("internal_copies")?, count("removed_copies")?);
            if held > 0 {
                return Err(Error::conflict(
                    ErrorCode::InvalidStateTransition,
                    format!(
                        "key ring '{}' holds {held} key(s): move them to another ring or delete them first",
                        id.escape_debug()
                    ),
                ));
            }
            if removed > 0 && !force {
                return Err(Error::conflict(
                    ErrorCode::InvalidStateTransition,
                    format!(
                        "key ring '{}' holds {removed} deleted key(s): delete it with force=true to move them to '{DEFAULT_KEY_RING}'",
                        id.escape_debug()
                    ),
                ));
            }
            c.execute(
                "UPDATE removed_copies SET key_ring = ? WHERE keystore_id = ? AND key_ring = ?",
                params![DEFAULT_KEY_RING, keystore, id],
            )
            .map_err(sql_err)?;
            let deleted = c
                .execute(
                    "DELETE FROM key_rings WHERE keystore_id = ? AND id = ?",
                    params![keystore, id],
                )
                .map_err(sql_err)?;
            if deleted == 0 {
                return Err(ring_not_found(&id));
            }
            Ok(())
        })
        .await
    }

    async fn move_key_to_ring(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
        key_ring: &str,
    ) -> Result<()> {
        let key_ring = key_ring.to_owned();
        self.audited_write(move |c| {
            let keystore = keystore_id.to_string();
            if !ring_exists(c, &keystore, &key_ring)? {
                return Err(ring_not_found(&key_ring));
            }
            let moved = c
                .execute(
                    "UPDATE internal_copies SET key_ring = ? WHERE keystore_id = ? AND key_id_in_keystore = ?",
                    params![key_ring, keystore, key_id_in_keystore.to_string()],
                )
                .map_err(sql_err)?;
            if moved == 0 {
                return Err(Error::NotFound {
                    resource: "key",
                    id: key_id_in_keystore.to_string(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn removed_copy(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
    ) -> Result<Option<RemovedCopy>> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT * FROM removed_copies WHERE keystore_id = ? AND key_id_in_keystore = ?",
                params![keystore_id.to_string(), key_id_in_keystore.to_string()],
                removed_from_row,
            )
        })
    }
}
