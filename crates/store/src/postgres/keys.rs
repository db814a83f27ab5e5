//! Managed keys, their versions and sealed material, and the copies internal keystores hold.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::error::{Error, ErrorCode, Result};
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_core::query::*;
use keyplane_core::service::UsageContext;

use super::PostgresStore;
use super::rows::*;
use super::{Params, all, db_err, exec, lists, one, write_err, writes};

fn copy_from_row(r: &Row) -> Result<InternalCopy> {
    Ok(InternalCopy {
        keystore_id: uuid_col(r, "keystore_id")?,
        managed_key_id: uuid_col(r, "managed_key_id")?,
        key_id_in_keystore: uuid_col(r, "key_id_in_keystore")?,
        label: col(r, "label")?,
        enabled: col(r, "enabled")?,
        version: u32_col(r, "version")?,
        key_ring: col(r, "key_ring")?,
    })
}

fn alias_from_row(r: &Row) -> Result<KeyAlias> {
    Ok(KeyAlias {
        keystore_id: uuid_col(r, "keystore_id")?,
        alias: col(r, "alias")?,
        key_id_in_keystore: uuid_col(r, "key_id_in_keystore")?,
        created_at: ts_col(r, "created_at")?,
        created_by: col(r, "created_by")?,
    })
}

fn version_from_row(r: &Row) -> Result<KeyVersion> {
    Ok(KeyVersion {
        version: u32_col(r, "version")?,
        state: enum_col(r, "state", KeyState::parse)?,
        verification_patterns: json_col(r, "verification_patterns")?,
        created_at: ts_col(r, "created_at")?,
        imported: col(r, "imported")?,
    })
}

/// The count a `SELECT COUNT(*) AS n ...` query returns.
async fn count(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<i64> {
    Ok(one(c, sql, params, |r| col(r, "n")).await?.unwrap_or(0))
}

/// Adds an alias to a key installed in the keystore, in the write's transaction.
async fn insert_alias(c: &impl GenericClient, alias: &KeyAlias, max_per_key: usize) -> Result<()> {
    let (keystore, key) = (&alias.keystore_id, &alias.key_id_in_keystore);
    // The key must still be in the keystore when its alias is written. Its copy stays locked
    // until the commit: another node adding an alias to the same key waits, then counts this one.
    let installed = count(
        c,
        "SELECT COUNT(*) AS n FROM (SELECT 1 FROM internal_copies
           WHERE keystore_id = $1 AND key_id_in_keystore = $2 FOR UPDATE) copy",
        &[keystore, key],
    )
    .await?;
    if installed == 0 {
        return Err(Error::NotFound {
            resource: "key",
            id: key.to_string(),
        });
    }
    let taken = one(
        c,
        "SELECT 1 AS found FROM key_aliases WHERE keystore_id = $1 AND alias = $2",
        &[keystore, &alias.alias],
        |_| Ok(()),
    )
    .await?;
    if taken.is_some() {
        return Err(Error::duplicate_name("alias", &alias.alias));
    }
    let held = count(
        c,
        "SELECT COUNT(*) AS n FROM key_aliases WHERE keystore_id = $1 AND key_id_in_keystore = $2",
        &[keystore, key],
    )
    .await?;
    if usize::try_from(held).unwrap_or(usize::MAX) >= max_per_key {
        return Err(Error::conflict(
            ErrorCode::InvalidField,
            format!("a key has at most {max_per_key} aliases"),
        ));
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
            keystore,
            &alias.alias,
            key,
            &ts(&alias.created_at),
            &alias.created_by,
        ],
    )
    .await
    .map_err(|e| write_err(e, "alias", &alias.alias))?;
    Ok(())
}

#[async_trait]
impl KeyRecords for PostgresStore {
    async fn set_next_scheduled_at(
        &self,
        id: Uuid,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<()> {
        let at = at.as_ref().map(ts);
        self.write(Box::new(move |c| {
            Box::pin(async move {
                exec(
                    c,
                    "UPDATE managed_keys SET next_scheduled_at = $1 WHERE id = $2",
                    &[&at, &id],
                )
                .await
                .map(drop)
            })
        }))
        .await
    }

    async fn unindexed_scheduled_keys(&self, limit: u32) -> Result<Vec<Uuid>> {
        let c = self.reader().await?;
        let rows = c
            .query(
                &format!("{} LIMIT $1", crate::common::UNINDEXED_SCHEDULES),
                &[&i64::from(limit)],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn due_scheduled_keys(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>> {
        let c = self.reader().await?;
        let rows = c
            .query(
                "SELECT id FROM managed_keys WHERE next_scheduled_at IS NOT NULL AND next_scheduled_at <= $1
                  ORDER BY next_scheduled_at LIMIT $2",
                &[&now, &i64::from(limit)],
            )
            .await
            .map_err(super::db_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn internal_copy_by_key_label(
        &self,
        keystore_id: Uuid,
        label: &str,
    ) -> Result<Option<InternalCopy>> {
        let c = self.reader().await?;
        one(
            &c,
            "SELECT ic.* FROM internal_copies ic JOIN managed_keys k ON k.id = ic.managed_key_id
             WHERE ic.keystore_id = $1 AND k.label = $2 LIMIT 1",
            &[&keystore_id, &label],
            copy_from_row,
        )
        .await
    }

    async fn key_alias(&self, keystore_id: Uuid, alias: &str) -> Result<Option<KeyAlias>> {
        let c = self.reader().await?;
        one(
            &c,
            "SELECT * FROM key_aliases WHERE keystore_id = $1 AND alias = $2",
            &[&keystore_id, &alias],
            alias_from_row,
        )
        .await
    }

    async fn key_aliases_of(
        &self,
        keystore_id: Uuid,
        keys_in_keystore: &[Uuid],
    ) -> Result<Vec<KeyAlias>> {
        if keys_in_keystore.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys_in_keystore.to_vec();
        let c = self.reader().await?;
        all(
            &c,
            "SELECT * FROM key_aliases WHERE keystore_id = $1 AND key_id_in_keystore = ANY($2)
             ORDER BY created_at, alias",
            &[&keystore_id, &keys],
            alias_from_row,
        )
        .await
    }

    async fn imported_versions_of(&self, key_ids: &[Uuid]) -> Result<Vec<(Uuid, u32)>> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = key_ids.to_vec();
        let c = self.reader().await?;
        all(
            &c,
            "SELECT key_id, version FROM key_material WHERE imported = TRUE AND key_id = ANY($1)",
            &[&ids],
            |r| Ok((uuid_col(r, "key_id")?, u32_col(r, "version")?)),
        )
        .await
    }

    async fn add_key_alias(&self, alias: &KeyAlias, max_per_key: usize) -> Result<()> {
        let alias = alias.clone();
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { insert_alias(c, &alias, max_per_key).await })
        }))
        .await
    }

    async fn remove_key_alias(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
        alias: &str,
    ) -> Result<()> {
        let alias = alias.to_owned();
        self.audited_write(Box::new(move |c| {
            Box::pin(async move {
                let removed = exec(
                    c,
                    "DELETE FROM key_aliases WHERE keystore_id = $1 AND key_id_in_keystore = $2 AND alias = $3",
                    &[&keystore_id, &key_id_in_keystore, &alias],
                )
                .await?;
                // Nothing removed: the write fails, and its audit event with it.
                if removed == 0 {
                    return Err(Error::NotFound {
                        resource: "alias",
                        id: alias.clone(),
                    });
                }
                Ok(())
            })
        }))
        .await
    }

    async fn internal_copy_by_label(
        &self,
        keystore_id: Uuid,
        label: &str,
    ) -> Result<Option<InternalCopy>> {
        let c = self.reader().await?;
        one(
            &c,
            "SELECT * FROM internal_copies WHERE keystore_id = $1 AND label = $2 LIMIT 1",
            &[&keystore_id, &label],
            copy_from_row,
        )
        .await
    }

    async fn save_managed_key(
        &self,
        key: &ManagedKey,
        read_revision: Option<i64>,
        write: &KeyWrite,
    ) -> Result<()> {
        let (key, write) = (key.clone(), write.clone());
        audit_trail::note_target("managed_keys", key.id, Some(key.vault.id));
        self.audited_key_write(Box::new(move |c| {
            Box::pin(async move { writes::save_key(c, &key, read_revision, &write).await })
        }))
        .await
    }

    async fn get_managed_key(&self, id: Uuid) -> Result<Option<ManagedKey>> {
        let c = self.reader().await?;
        one(
            &c,
            &format!("{KEY_SELECT} WHERE k.id = $1"),
            &[&id],
            key_from_row,
        )
        .await
    }

    async fn delete_managed_key(&self, id: Uuid, read_revision: i64) -> Result<()> {
        let vault = self.owning_vault("managed_keys", id).await;
        audit_trail::note_target("managed_keys", id, vault);
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::delete_key(c, id, read_revision).await })
        }))
        .await
    }

    async fn list_managed_keys(&self, q: &KeyQuery) -> Result<Page<ManagedKey>> {
        let c = self.reader().await?;
        lists::keys(&c, q).await
    }

    async fn keys_targeting_keystore(&self, keystore_id: Uuid) -> Result<Vec<ManagedKey>> {
        let c = self.reader().await?;
        all(
            &c,
            &format!(
                "{KEY_SELECT} WHERE k.id IN (SELECT key_id FROM key_targets WHERE keystore_id = $1 AND removed = FALSE)
                 ORDER BY k.created_at, k.id"
            ),
            &[&keystore_id],
            key_from_row,
        )
        .await
    }

    async fn key_versions(&self, key_id: Uuid) -> Result<Vec<KeyVersion>> {
        let c = self.reader().await?;
        all(
            &c,
            "SELECT version, state, verification_patterns, created_at, imported FROM key_material
             WHERE key_id = $1 ORDER BY version DESC",
            &[&key_id],
            version_from_row,
        )
        .await
    }

    async fn internal_copies_of_key(&self, key_id: Uuid) -> Result<Vec<InternalCopy>> {
        let c = self.reader().await?;
        all(
            &c,
            "SELECT * FROM internal_copies WHERE managed_key_id = $1 ORDER BY keystore_id",
            &[&key_id],
            copy_from_row,
        )
        .await
    }

    async fn internal_copy(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
    ) -> Result<Option<InternalCopy>> {
        let c = self.reader().await?;
        one(
            &c,
            "SELECT * FROM internal_copies WHERE keystore_id = $1 AND key_id_in_keystore = $2",
            &[&keystore_id, &key_id_in_keystore],
            copy_from_row,
        )
        .await
    }

    async fn internal_copies_in_keystore(
        &self,
        keystore_id: Uuid,
        key_ring: Option<&str>,
        paging: Paging,
    ) -> Result<Page<InternalCopy>> {
        let limit = i64::from(paging.limit);
        let offset = i64::try_from(paging.offset).unwrap_or(i64::MAX);
        let c = self.reader().await?;
        let total_count = count(
            &c,
            "SELECT COUNT(*) AS n FROM internal_copies
             WHERE keystore_id = $1 AND ($2::text IS NULL OR key_ring = $2::text)",
            &[&keystore_id, &key_ring],
        )
        .await?;
        let items = all(
            &c,
            "SELECT * FROM internal_copies WHERE keystore_id = $1 AND ($2::text IS NULL OR key_ring = $2::text)
             ORDER BY managed_key_id LIMIT $3 OFFSET $4",
            &[&keystore_id, &key_ring, &limit, &offset],
            copy_from_row,
        )
        .await?;
        Ok(Page { items, total_count })
    }

    async fn usage_context(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
    ) -> Result<Option<Arc<UsageContext>>> {
        self.usage_contexts
            .get_or_read_async((keystore_id, key_id_in_keystore), || async {
                let c = self.reader().await?;
                one(
                    &c,
                    "SELECT c.*, k.vault_id, k.state, k.algorithm, k.size, k.version AS key_version,
                            m.sealed, m.verification_patterns
                       FROM internal_copies c
                       JOIN keystores ks ON ks.id = c.keystore_id AND ks.type = 'ibm_cloud_kms' AND ks.ibm_variant = 'internal'
                       JOIN managed_keys k ON k.id = c.managed_key_id
                       LEFT JOIN key_material m ON m.key_id = k.id AND m.version = k.version AND m.sealed IS NOT NULL
                      WHERE c.keystore_id = $1 AND c.key_id_in_keystore = $2",
                    &[&keystore_id, &key_id_in_keystore],
                    |r| {
                        let version = u32_col(r, "key_version")?;
                        let sealed: Option<Vec<u8>> = col(r, "sealed")?;
                        Ok(Arc::new(UsageContext {
                            copy: copy_from_row(r)?,
                            key_id: uuid_col(r, "managed_key_id")?,
                            vault_id: uuid_col(r, "vault_id")?,
                            state: enum_col(r, "state", KeyState::parse)?,
                            algorithm: enum_col(r, "algorithm", Algorithm::parse)?,
                            size: u32_col(r, "size")?,
                            version,
                            current_material: match sealed {
                                Some(sealed) => Some(SealedMaterial {
                                    version,
                                    sealed,
                                    verification_patterns: json_col(r, "verification_patterns")?,
                                }),
                                None => None,
                            },
                        }))
                    },
                )
                .await
            })
            .await
    }

    async fn sealed_material(&self, key_id: Uuid, version: u32) -> Result<Option<SealedMaterial>> {
        let c = self.reader().await?;
        one(
            &c,
            "SELECT version, sealed, verification_patterns FROM key_material
             WHERE key_id = $1 AND version = $2 AND sealed IS NOT NULL",
            &[&key_id, &i64::from(version)],
            |r| {
                Ok(SealedMaterial {
                    version: u32_col(r, "version")?,
                    sealed: col(r, "sealed")?,
                    verification_patterns: json_col(r, "verification_patterns")?,
                })
            },
        )
        .await
    }
}
