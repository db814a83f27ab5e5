//! Managed keys, their versions and sealed material, and the copies internal keystores hold.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::params;
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::error::{Error, ErrorCode, Result};
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_core::query::*;
use keyplane_core::service::UsageContext;

use super::SqliteStore;
use super::rows::*;
use super::writer::sql_err;
use super::{all, lists, one, writes};

fn copy_from_row(r: &rusqlite::Row<'_>) -> Result<InternalCopy> {
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

fn alias_from_row(r: &rusqlite::Row<'_>) -> Result<KeyAlias> {
    Ok(KeyAlias {
        keystore_id: uuid_col(r, "keystore_id")?,
        alias: col(r, "alias")?,
        key_id_in_keystore: uuid_col(r, "key_id_in_keystore")?,
        created_at: ts_col(r, "created_at")?,
        created_by: col(r, "created_by")?,
    })
}

fn version_from_row(r: &rusqlite::Row<'_>) -> Result<KeyVersion> {
    Ok(KeyVersion {
        version: u32_col(r, "version")?,
        state: enum_col(r, "state", KeyState::parse)?,
        verification_patterns: json_col(r, "verification_patterns")?,
        created_at: ts_col(r, "created_at")?,
        imported: col(r, "imported")?,
    })
}

#[async_trait]
impl KeyRecords for SqliteStore {
    async fn set_next_scheduled_at(
        &self,
        id: Uuid,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<()> {
        let at = at.as_ref().map(super::rows::ts);
        self.writer
            .write(move |c| {
                c.execute(
                    "UPDATE managed_keys SET next_scheduled_at = ?1 WHERE id = ?2",
                    params![at, id.to_string()],
                )
                .map(drop)
                .map_err(sql_err)
            })
            .await
    }

    async fn unindexed_scheduled_keys(&self, limit: u32) -> Result<Vec<Uuid>> {
        self.reader.with(|c| {
            let mut st = c
                .prepare_cached(&format!("{} LIMIT ?1", crate::common::UNINDEXED_SCHEDULES))
                .map_err(sql_err)?;
            let ids = st
                .query_map([limit], |r| r.get::<_, String>(0))
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            ids.iter()
                .map(|id| id.parse().map_err(|_| super::rows::corrupt("id")))
                .collect()
        })
    }

    async fn due_scheduled_keys(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>> {
        self.reader.with(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id FROM managed_keys WHERE next_scheduled_at IS NOT NULL AND next_scheduled_at <= ?1
                      ORDER BY next_scheduled_at LIMIT ?2",
                )
                .map_err(sql_err)?;
            let ids = st
                .query_map(rusqlite::params![super::rows::ts(&now), limit], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            ids.iter()
                .map(|id| id.parse().map_err(|_| super::rows::corrupt("id")))
                .collect()
        })
    }

    async fn internal_copy_by_key_label(
        &self,
        keystore_id: Uuid,
        label: &str,
    ) -> Result<Option<InternalCopy>> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT ic.* FROM internal_copies ic JOIN managed_keys k ON k.id = ic.managed_key_id
                 WHERE ic.keystore_id = ? AND k.label = ? LIMIT 1",
                params![keystore_id.to_string(), label],
                copy_from_row,
            )
        })
    }

    async fn key_alias(&self, keystore_id: Uuid, alias: &str) -> Result<Option<KeyAlias>> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT * FROM key_aliases WHERE keystore_id = ? AND alias = ?",
                params![keystore_id.to_string(), alias],
                alias_from_row,
            )
        })
    }

    async fn key_aliases_of(
        &self,
        keystore_id: Uuid,
        keys_in_keystore: &[Uuid],
    ) -> Result<Vec<KeyAlias>> {
        if keys_in_keystore.is_empty() {
            return Ok(Vec::new());
        }
        let mut values: Vec<String> = vec![keystore_id.to_string()];
        values.extend(keys_in_keystore.iter().map(Uuid::to_string));
        let sql = format!(
            "SELECT * FROM key_aliases WHERE keystore_id = ? AND key_id_in_keystore IN ({})
             ORDER BY created_at, alias",
            vec!["?"; keys_in_keystore.len()].join(", ")
        );
        self.reader.with(|c| {
            all(
                c,
                &sql,
                rusqlite::params_from_iter(values.iter()),
                alias_from_row,
            )
        })
    }

    async fn imported_versions_of(&self, key_ids: &[Uuid]) -> Result<Vec<(Uuid, u32)>> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<String> = key_ids.iter().map(Uuid::to_string).collect();
        let sql = format!(
            "SELECT key_id, version FROM key_material WHERE imported = 1 AND key_id IN ({})",
            vec!["?"; key_ids.len()].join(", ")
        );
        self.reader.with(|c| {
            all(c, &sql, rusqlite::params_from_iter(values.iter()), |r| {
                Ok((uuid_col(r, "key_id")?, u32_col(r, "version")?))
            })
        })
    }

    async fn add_key_alias(&self, alias: &KeyAlias, max_per_key: usize) -> Result<()> {
        let alias = alias.clone();
        self.audited_write(move |c| {
            let (keystore, key) = (
                alias.keystore_id.to_string(),
                alias.key_id_in_keystore.to_string(),
            );
            // The key must still be in the keystore when its alias is written.
            let installed: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM internal_copies WHERE keystore_id = ? AND key_id_in_keystore = ?",
                    params![keystore, key],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            if installed == 0 {
                return Err(Error::NotFound {
                    resource: "key",
                    id: key.clone(),
                });
            }
            let taken: Option<String> = c
                .query_row(
                    "SELECT key_id_in_keystore FROM key_aliases WHERE keystore_id = ? AND alias = ?",
                    params![keystore, alias.alias],
                    |r| r.get(0),
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    other => Err(other),
                })
                .map_err(sql_err)?;
            if taken.is_some() {
                return Err(Error::duplicate_name("alias", &alias.alias));
            }
            let held: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM key_aliases WHERE keystore_id = ? AND key_id_in_keystore = ?",
                    params![keystore, key],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            if usize::try_from(held).unwrap_or(usize::MAX) >= max_per_key {
                return Err(Error::conflict(
                    ErrorCode::InvalidField,
                    format!("a key has at most {max_per_key} aliases"),
                ));
            }
            c.execute(
                "INSERT INTO key_aliases (keystore_id, alias, key_id_in_keystore, created_at, created_by)
                 VALUES (?, ?, ?, ?, ?)",
                params![keystore, alias.alias, key, ts(&alias.created_at), alias.created_by],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn remove_key_alias(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
        alias: &str,
    ) -> Result<()> {
        let alias = alias.to_owned();
        self.audited_write(move |c| {
            let removed = c
                .execute(
                    "DELETE FROM key_aliases WHERE keystore_id = ? AND key_id_in_keystore = ? AND alias = ?",
                    params![keystore_id.to_string(), key_id_in_keystore.to_string(), alias],
                )
                .map_err(sql_err)?;
            // Nothing removed: the write fails, and its audit event with it.
            if removed == 0 {
                return Err(Error::NotFound {
                    resource: "alias",
                    id: alias.clone(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn internal_copy_by_label(
        &self,
        keystore_id: Uuid,
        label: &str,
    ) -> Result<Option<InternalCopy>> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT * FROM internal_copies WHERE keystore_id = ? AND label = ? LIMIT 1",
                params![keystore_id.to_string(), label],
                copy_from_row,
            )
        })
    }

    async fn save_managed_key(
        &self,
        key: &ManagedKey,
        read_revision: Option<i64>,
        write: &KeyWrite,
    ) -> Result<()> {
        let (key, write) = (key.clone(), write.clone());
        audit_trail::note_target("managed_keys", key.id, Some(key.vault.id));
        self.audited_write(move |c| writes::save_key(c, &key, read_revision, &write))
            .await
    }

    async fn get_managed_key(&self, id: Uuid) -> Result<Option<ManagedKey>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("{KEY_SELECT} WHERE k.id = ?"),
                [id.to_string()],
                key_from_row,
            )
        })
    }

    async fn delete_managed_key(&self, id: Uuid, read_revision: i64) -> Result<()> {
        let vault = self.owning_vault("managed_keys", id);
        audit_trail::note_target("managed_keys", id, vault);
        self.audited_write(move |c| writes::delete_key(c, id, read_revision))
            .await
    }

    async fn list_managed_keys(&self, q: &KeyQuery) -> Result<Page<ManagedKey>> {
        self.reader.with(|c| lists::keys(c, q))
    }

    async fn keys_targeting_keystore(&self, keystore_id: Uuid) -> Result<Vec<ManagedKey>> {
        self.reader.with(|c| {
            all(
                c,
                &format!(
                    "{KEY_SELECT} WHERE k.id IN (SELECT key_id FROM key_targets WHERE keystore_id = ? AND removed = 0)
                     ORDER BY k.created_at, k.id"
                ),
                [keystore_id.to_string()],
                key_from_row,
            )
        })
    }

    async fn key_versions(&self, key_id: Uuid) -> Result<Vec<KeyVersion>> {
        self.reader.with(|c| {
            all(
                c,
                "SELECT version, state, verification_patterns, created_at, imported FROM key_material WHERE key_id = ? ORDER BY version DESC",
                [key_id.to_string()],
                version_from_row,
            )
        })
    }

    async fn internal_copies_of_key(&self, key_id: Uuid) -> Result<Vec<InternalCopy>> {
        self.reader.with(|c| {
            all(
                c,
                "SELECT * FROM internal_copies WHERE managed_key_id = ? ORDER BY keystore_id",
                [key_id.to_string()],
                copy_from_row,
            )
        })
    }

    async fn internal_copy(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
    ) -> Result<Option<InternalCopy>> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT * FROM internal_copies WHERE keystore_id = ? AND key_id_in_keystore = ?",
                params![keystore_id.to_string(), key_id_in_keystore.to_string()],
                copy_from_row,
            )
        })
    }

    async fn internal_copies_in_keystore(
        &self,
        keystore_id: Uuid,
        key_ring: Option<&str>,
        paging: Paging,
    ) -> Result<Page<InternalCopy>> {
        self.reader.with(|c| {
            let total_count = c
                .query_row(
                    "SELECT COUNT(*) FROM internal_copies WHERE keystore_id = ?1 AND (?2 IS NULL OR key_ring = ?2)",
                    params![keystore_id.to_string(), key_ring],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            let items = all(
                c,
                "SELECT * FROM internal_copies WHERE keystore_id = ?1 AND (?2 IS NULL OR key_ring = ?2)
                 ORDER BY managed_key_id LIMIT ?3 OFFSET ?4",
                params![keystore_id.to_string(), key_ring, i64::from(paging.limit), i64::try_from(paging.offset).unwrap_or(i64::MAX)],
                copy_from_row,
            )?;
            Ok(Page { items, total_count })
        })
    }

    async fn usage_context(
        &self,
        keystore_id: Uuid,
        key_id_in_keystore: Uuid,
    ) -> Result<Option<Arc<UsageContext>>> {
        self.usage_contexts.get_or_read((keystore_id, key_id_in_keystore), || self.reader.with(|c| {
            one(
                c,
                "SELECT c.*, k.vault_id, k.state, k.algorithm, k.size, k.version AS key_version,
                        m.sealed, m.verification_patterns
                   FROM internal_copies c
                   JOIN keystores ks ON ks.id = c.keystore_id AND ks.type = 'ibm_cloud_kms' AND ks.ibm_variant = 'internal'
                   JOIN managed_keys k ON k.id = c.managed_key_id
                   LEFT JOIN key_material m ON m.key_id = k.id AND m.version = k.version AND m.sealed IS NOT NULL
                  WHERE c.keystore_id = ? AND c.key_id_in_keystore = ?",
                params![keystore_id.to_string(), key_id_in_keystore.to_string()],
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
        }))
    }

    async fn sealed_material(&self, key_id: Uuid, version: u32) -> Result<Option<SealedMaterial>> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT version, sealed, verification_patterns FROM key_material WHERE key_id = ? AND version = ? AND sealed IS NOT NULL",
                params![key_id.to_string(), i64::from(version)],
                |r| {
                    Ok(SealedMaterial {
                        version: u32_col(r, "version")?,
                        sealed: col(r, "sealed")?,
                        verification_patterns: json_col(r, "verification_patterns")?,
                    })
                },
            )
        })
    }
}
