//! Key Protect's key rings in internal keystores, and the copies taken out of them.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use keyplane_core::error::{Error, ErrorCode, Result};
use keyplane_core::ports::{
    DEFAULT_KEY_RING, KeyProtectPlacement, KeyRing, KeyRingRecords, RemovedCopy,
};

use super::rows::*;
use super::{PostgresStore, all, db_err, exec, one, write_err};

fn ring_from_row(r: &Row) -> Result<KeyRing> {
    Ok(KeyRing {
        keystore_id: uuid_col(r, "keystore_id")?,
        id: col(r, "id")?,
        created_at: ts_col(r, "created_at")?,
        created_by: col(r, "created_by")?,
    })
}

fn removed_from_row(r: &Row) -> Result<RemovedCopy> {
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
async fn ring_exists(c: &impl GenericClient, keystore_id: Uuid, ring: &str) -> Result<bool> {
    if ring == DEFAULT_KEY_RING {
        return Ok(true);
    }
    let found = one(
        c,
        "SELECT 1 AS found FROM key_rings WHERE keystore_id = $1 AND id = $2",
        &[&keystore_id, &ring],
        |_| Ok(()),
    )
    .await?;
    Ok(found.is_some())
}

/// Puts a key just saved into its ring and gives it its aliases, in the key's transaction.
pub(crate) async fn place(
    c: &impl GenericClient,
    key_id: Uuid,
    p: &KeyProtectPlacement,
) -> Result<()> {
    let keystore = p.keystore_id;
    if !ring_exists(c, keystore, &p.key_ring).await? {
        return Err(ring_not_found(&p.key_ring));
    }
    let key_id_in_keystore: Uuid = one(
        c,
        "UPDATE internal_copies SET key_ring = $3 WHERE keystore_id = $1 AND managed_key_id = $2
         RETURNING key_id_in_keystore",
        &[&keystore, &key_id, &p.key_ring],
        |r| uuid_col(r, "key_id_in_keystore"),
    )
    .await?
    .ok_or_else(|| Error::internal("a key created for a keystore is not installed there"))?;
    let created_at = ts(&p.created_at);
    for alias in &p.aliases {
        let taken = one(
            c,
            "SELECT 1 AS found FROM key_aliases WHERE keystore_id = $1 AND alias = $2",
            &[&keystore, alias],
            |_| Ok(()),
        )
        .await?;
        if taken.is_some() {
            return Err(Error::duplicate_name("alias", alias));
        }
        let stmt = c
            .prepare_cached(
                "INSERT INTO key_aliases (keystore_id, alias, key_id_in_keystore, created_at, created_by)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(db_err)?;
        // Another node may have taken the alias since it was looked up: still a duplicate name.
        c.execute(
            &stmt,
            &[
                &keystore,
                alias,
                &key_id_in_keystore,
                &created_at,
                &p.created_by,
            ],
        )
        .await
        .map_err(|e| write_err(e, "alias", alias))?;
    }
    Ok(())
}

/// Creates a key ring, in the write's transaction.
async fn insert_ring(
    c: &impl GenericClient,
    ring: &KeyRing,
    max_per_keystore: usize,
) -> Result<()> {
    // The keystore stays locked until the commit: another node creating a ring in it waits,
    // then counts this one.
    exec(
        c,
        "SELECT 1 FROM keystores WHERE id = $1 FOR UPDATE",
        &[&ring.keystore_id],
    )
    .await?;
    if ring_exists(c, ring.keystore_id, &ring.id).await? {
        return Err(Error::duplicate_name("key ring", &ring.id));
    }
    let held: i64 = one(
        c,
        "SELECT COUNT(*) AS n FROM key_rings WHERE keystore_id = $1",
        &[&ring.keystore_id],
        |r| col(r, "n"),
    )
    .await?
    .unwrap_or(0);
    if usize::try_from(held).unwrap_or(usize::MAX) >= max_per_keystore {
        return Err(Error::conflict(
            ErrorCode::InvalidStateTransition,
            format!("a keystore has at most {max_per_keystore} key rings besides 'default'"),
        ));
    }
    let stmt = c
        .prepare_cached(
            "INSERT INTO key_rings (keystore_id, id, created_at, created_by) VALUES ($1, $2, $3, $4)",
        )
        .await
        .map_err(db_err)?;
    // Another node may have created the ring since it was looked up: still a duplicate name.
    c.execute(
        &stmt,
        &[
            &ring.keystore_id,
            &ring.id,
            &ts(&ring.created_at),
            &ring.created_by,
        ],
    )
    .await
    .map_err(|e| write_err(e, "key ring", &ring.id))?;
    Ok(())
}

/// Deletes a key ring, in the write's transaction.
async fn delete_ring(
    c: &impl GenericClient,
    keystore_id: Uuid,
    id: &str,
    force: bool,
) -> Result<()> {
    let held: i64 = one(
        c,
        "SELECT COUNT(*) AS n FROM internal_copies WHERE keystore_id = $1 AND key_ring = $2",
        &[&keystore_id, &id],
        |r| col(r, "n"),
    )
    .await?
    .unwrap_or(0);
    let removed: i64 = one(
        c,
        "SELECT COUNT(*) AS n FROM removed_copies WHERE keystore_id = $1 AND key_ring = $2",
        &[&keystore_id, &id],
        |r| col(r, "n"),
    )
    .await?
    .unwrap_or(0);
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
    exec(
        c,
        "UPDATE removed_copies SET key_ring = $1 WHERE keystore_id = $2 AND key_ring = $3",
        &[&DEFAULT_KEY_RING, &keystore_id, &id],
    )
    .await?;
    let deleted = exec(
        c,
        "DELETE FROM key_rings WHERE keystore_id = $1 AND id = $2",
        &[&keystore_id, &id],
    )
    .await?;
    if deleted == 0 {
        return Err(ring_not_found(id));
    }
    Ok(())
}

/// Moves a copy into a ring, in the write's transaction.
async fn move_copy(
    c: &impl GenericClient,
    keystore_id: Uuid,
    key_id_in_keystore: Uuid,
    key_ring: &str,
) -> Result<()> {
    if !ring_exists(c, keystore_id, key_ring).await? {
        return Err(ring_not_found(key_ring));
    }
    let moved = exec(
        c,
        "UPDATE internal_copies SET key_ring = $1 WHERE keystore_id = $2 AND key_id_in_keystore = $3",
        &[&key_ring, &keystore_id, &key_id_in_keystore],
    )
    .await?;
    if moved == 0 {
        return Err(Error::NotFound {
            resource: "key",
            id: key_id_in_keystore.to_string(),
        });
    }
    Ok(())
}

#[async_trait]
impl KeyRingRecords for PostgresStore {
    async fn key_rings(&self, keystore_id: Uuid) -> Result<Vec<KeyRing>> {
        let c = self.reader().await?;
        all(
            &c,
            "SELECT * FROM key_rings WHERE keystore_id = $1 ORDER BY created_at, id",
            &[&keystore_id],
            ring_from_row,
        )
        .await
    }

    async fn add_key_ring(&self, ring: &KeyRing, max_per_keystore: usize) -> Result<()> {
        let ring = ring.clone();
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { insert_ring(c, &ring, max_per_keystore).await })
        }))
        .await
    }

    async fn remove_key_ring(&self, keystore_id: Uuid, id: &str, force: bool) -> Result<()> {
        let id = id.to_owned();
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { delete_ring(c, keystore_id, &id, force).await })
        }))
        .await
    }

    async fn move_key_to_ring(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
        key_ring: &str,
    ) -> Result<()> {
        let key_ring = key_ring.to_owned();
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { move_copy(c, keystore_id, key_id_in_keystore, &key_ring).await })
        }))
        .await
    }

    async fn removed_copy(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
    ) -> Result<Option<RemovedCopy>> {
        let c = self.reader().await?;
        one(
            &c,
            "SELECT * FROM removed_copies WHERE keystore_id = $1 AND key_id_in_keystore = $2",
            &[&keystore_id, &key_id_in_keystore],
            removed_from_row,
        )
        .await
    }
}
