//! The SQLite engine: WAL, one writer connection (so transactions never fight over the write
//! lock), a pool of readers.

mod keys;
mod lists;
mod rows;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use keyplane_core::error::{Error, Result};
use keyplane_core::guards::{self, VaultContents};
use keyplane_core::model::*;
use keyplane_core::ports::{ApiToken, KeyWrite, Store};
use keyplane_core::query::*;

use rows::*;

/// How hard SQLite works to keep a commit across a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced before it is acknowledged.
    Full,
    /// `synchronous=NORMAL`: survives a crash of the process, may lose the last commits on power loss.
    Normal,
}

pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub(crate) fn db_err(e: sqlx::Error) -> Error {
    Error::internal(format!("database: {e}"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Maps a failed write: a unique violation is a duplicate name of `resource`.
pub(crate) fn write_err(e: sqlx::Error, resource: &str, name: &str) -> Error {
    if is_unique_violation(&e) {
        Error::duplicate_name(resource, name)
    } else {
        db_err(e)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path, durability: Durability) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-65536");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        MIGRATOR
            .run(&write)
            .await
            .map_err(|e| Error::internal(format!("database migration: {e}")))?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await
            .map_err(db_err)?;
        Ok(Self { read, write })
    }

    /// Checkpoints the WAL and closes every connection.
    pub async fn close(&self) {
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.write)
            .await;
        self.read.close().await;
        self.write.close().await;
    }
}

/// Fails with `EtagMismatch` (row changed) or `NotFound` (row gone) when an update hit nothing.
pub(crate) async fn check_updated(
    conn: &mut SqliteConnection,
    table: &str,
    resource: &'static str,
    id: Uuid,
    rows: u64,
) -> Result<()> {
    if rows > 0 {
        return Ok(());
    }
    let exists = sqlx::query(&format!("SELECT 1 FROM {table} WHERE id = ?"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    Err(if exists.is_some() {
        Error::EtagMismatch
    } else {
        Error::not_found(resource, id)
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_setting(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.get("value")))
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value")
            .bind(name)
            .bind(value)
            .execute(&self.write)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn insert_api_token(&self, token: &ApiToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(token.id.to_string())
        .bind(&token.name)
        .bind(&token.token_hash)
        .bind(ts(&chrono::Utc::now()))
        .execute(&self.write)
        .await
        .map_err(|e| write_err(e, "token", &token.name))?;
        Ok(())
    }

    async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let row = sqlx::query("SELECT id, name, token_hash FROM api_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.map(|r| {
            Ok(ApiToken {
                id: uuid_col(&r, "id")?,
                name: r.get("name"),
                token_hash: r.get("token_hash"),
            })
        })
        .transpose()
    }

    async fn count_api_tokens(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&self.read)
            .await
            .map_err(db_err)
    }

    async fn insert_vault(&self, v: &Vault) -> Result<()> {
        sqlx::query(
            "INSERT INTO vaults (id, name, description, recovery_key_label, created_at, updated_at, created_by, updated_by, revision)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(v.id.to_string())
        .bind(&v.name)
        .bind(&v.description)
        .bind(&v.recovery_key_label)
        .bind(ts(&v.stamps.created_at))
        .bind(ts(&v.stamps.updated_at))
        .bind(&v.stamps.created_by)
        .bind(&v.stamps.updated_by)
        .bind(v.revision)
        .execute(&self.write)
        .await
        .map_err(|e| write_err(e, "vault", &v.name))?;
        Ok(())
    }

    async fn get_vault(&self, id: Uuid) -> Result<Option<VaultView>> {
        let row = sqlx::query(&format!("{VAULT_SELECT} WHERE v.id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(vault_from_row).transpose()
    }

    async fn update_vault(&self, v: &Vault, read_revision: i64) -> Result<()> {
        let mut conn = self.write.acquire().await.map_err(db_err)?;
        let done = sqlx::query(
            "UPDATE vaults SET name = ?, description = ?, recovery_key_label = ?, updated_at = ?, updated_by = ?, revision = ?
             WHERE id = ? AND revision = ?",
        )
        .bind(&v.name)
        .bind(&v.description)
        .bind(&v.recovery_key_label)
        .bind(ts(&v.stamps.updated_at))
        .bind(&v.stamps.updated_by)
        .bind(v.revision)
        .bind(v.id.to_string())
        .bind(read_revision)
        .execute(&mut *conn)
        .await
        .map_err(|e| write_err(e, "vault", &v.name))?;
        check_updated(&mut conn, "vaults", "vault", v.id, done.rows_affected()).await
    }

    async fn delete_vault(&self, id: Uuid, read_revision: i64) -> Result<()> {
        let mut tx = self.write.begin().await.map_err(db_err)?;
        let key = id.to_string();
        let row = sqlx::query(
            "SELECT name,
               (SELECT COUNT(*) FROM managed_keys WHERE vault_id = ?1) AS keys,
               (SELECT COUNT(*) FROM keystores WHERE vault_id = ?1) AS keystores,
               (SELECT COUNT(*) FROM templates WHERE vault_id = ?1 AND state = 'unarchived') AS templates
             FROM vaults WHERE id = ?1",
        )
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found("vault", id))?;
        guards::vault_delete(
            row.get::<String, _>("name").as_str(),
            VaultContents {
                keys: row.get("keys"),
                keystores: row.get("keystores"),
                unarchived_templates: row.get("templates"),
            },
        )?;
        // Archived templates go with the vault; deleted first for the foreign key.
        sqlx::query("DELETE FROM templates WHERE vault_id = ?")
            .bind(&key)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let done = sqlx::query("DELETE FROM vaults WHERE id = ? AND revision = ?")
            .bind(&key)
            .bind(read_revision)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        check_updated(&mut tx, "vaults", "vault", id, done.rows_affected()).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn list_vaults(&self, q: &VaultQuery) -> Result<Page<VaultView>> {
        lists::vaults(&self.read, q).await
    }

    async fn insert_template(&self, t: &Template) -> Result<()> {
        let mut conn = self.write.acquire().await.map_err(db_err)?;
        write_template(&mut conn, t, None).await
    }

    async fn get_template(&self, id: Uuid) -> Result<Option<Template>> {
        let row = sqlx::query(&format!("{TEMPLATE_SELECT} WHERE t.id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(template_from_row).transpose()
    }

    async fn find_template(&self, vault_id: Uuid, name: &str) -> Result<Option<Template>> {
        let row = sqlx::query(&format!(
            "{TEMPLATE_SELECT} WHERE t.vault_id = ? AND t.name = ?"
        ))
        .bind(vault_id.to_string())
        .bind(name)
        .fetch_optional(&self.read)
        .await
        .map_err(db_err)?;
        row.as_ref().map(template_from_row).transpose()
    }

    async fn update_template(&self, t: &Template, read_revision: i64) -> Result<()> {
        let mut conn = self.write.acquire().await.map_err(db_err)?;
        write_template(&mut conn, t, Some(read_revision)).await
    }

    async fn delete_template(&self, id: Uuid, read_revision: i64) -> Result<()> {
        let mut tx = self.write.begin().await.map_err(db_err)?;
        let row = sqlx::query("SELECT name, (SELECT COUNT(*) FROM managed_keys WHERE template_id = ?1) AS keys FROM templates WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .ok_or_else(|| Error::not_found("template", id))?;
        guards::template_delete(row.get::<String, _>("name").as_str(), row.get("keys"))?;
        let done = sqlx::query("DELETE FROM templates WHERE id = ? AND revision = ?")
            .bind(id.to_string())
            .bind(read_revision)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        check_updated(&mut tx, "templates", "template", id, done.rows_affected()).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn list_templates(&self, q: &TemplateQuery) -> Result<Page<Template>> {
        lists::templates(&self.read, q).await
    }

    async fn insert_keystore(&self, k: &Keystore) -> Result<()> {
        let mut conn = self.write.acquire().await.map_err(db_err)?;
        write_keystore(&mut conn, k, None).await
    }

    async fn get_keystore(&self, id: Uuid) -> Result<Option<Keystore>> {
        let row = sqlx::query(&format!("{KEYSTORE_SELECT} WHERE ks.id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(keystore_from_row).transpose()
    }

    async fn update_keystore(&self, k: &Keystore, read_revision: i64) -> Result<()> {
        let mut conn = self.write.acquire().await.map_err(db_err)?;
        write_keystore(&mut conn, k, Some(read_revision)).await
    }

    async fn list_keystores(&self, q: &KeystoreQuery) -> Result<Page<Keystore>> {
        lists::keystores(&self.read, q).await
    }

    async fn vault_keystores(&self, vault_id: Uuid) -> Result<Vec<Keystore>> {
        let rows = sqlx::query(&format!(
            "{KEYSTORE_SELECT} WHERE ks.vault_id = ? ORDER BY ks.created_at, ks.id"
        ))
        .bind(vault_id.to_string())
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter().map(keystore_from_row).collect()
    }

    async fn delete_keystore(
        &self,
        id: Uuid,
        read_revision: i64,
        changes: &[(ManagedKey, i64, KeyWrite)],
    ) -> Result<()> {
        let mut tx = self.write.begin().await.map_err(db_err)?;
        for (key, revision, write) in changes {
            keys::save(&mut tx, key, Some(*revision), write).await?;
        }
        sqlx::query("DELETE FROM internal_copies WHERE keystore_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let done = sqlx::query("DELETE FROM keystores WHERE id = ? AND revision = ?")
            .bind(id.to_string())
            .bind(read_revision)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        check_updated(&mut tx, "keystores", "keystore", id, done.rows_affected()).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn save_managed_key(
        &self,
        key: &ManagedKey,
        read_revision: Option<i64>,
        write: &KeyWrite,
    ) -> Result<()> {
        let mut tx = self.write.begin().await.map_err(db_err)?;
        keys::save(&mut tx, key, read_revision, write).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn get_managed_key(&self, id: Uuid) -> Result<Option<ManagedKey>> {
        let mut keys = keys::load(
            &self.read,
            &format!("{KEY_SELECT} WHERE k.id = ?"),
            &[id.to_string()],
        )
        .await?;
        Ok(keys.pop())
    }

    async fn delete_managed_key(&self, id: Uuid, read_revision: i64) -> Result<()> {
        let mut conn = self.write.acquire().await.map_err(db_err)?;
        let done = sqlx::query("DELETE FROM managed_keys WHERE id = ? AND revision = ?")
            .bind(id.to_string())
            .bind(read_revision)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        check_updated(
            &mut conn,
            "managed_keys",
            "managed key",
            id,
            done.rows_affected(),
        )
        .await
    }

    async fn list_managed_keys(&self, q: &KeyQuery) -> Result<Page<ManagedKey>> {
        lists::keys(&self.read, q).await
    }

    async fn keys_targeting_keystore(&self, keystore_id: Uuid) -> Result<Vec<ManagedKey>> {
        keys::load(
            &self.read,
            &format!(
                "{KEY_SELECT} WHERE k.id IN (SELECT key_id FROM key_targets WHERE keystore_id = ? AND removed = 0) ORDER BY k.created_at, k.id"
            ),
            &[keystore_id.to_string()],
        )
        .await
    }

    async fn key_versions(&self, key_id: Uuid) -> Result<Vec<KeyVersion>> {
        let rows = sqlx::query(
            "SELECT version, state, verification_patterns, created_at FROM key_material WHERE key_id = ? ORDER BY version DESC",
        )
        .bind(key_id.to_string())
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(KeyVersion {
                    version: u32_col(r, "version")?,
                    state: enum_col(r, "state", KeyState::parse)?,
                    verification_patterns: json_col(r, "verification_patterns")?,
                    created_at: ts_col(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn internal_copies_of_key(&self, key_id: Uuid) -> Result<Vec<InternalCopy>> {
        let rows = sqlx::query(
            "SELECT * FROM internal_copies WHERE managed_key_id = ? ORDER BY keystore_id",
        )
        .bind(key_id.to_string())
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(InternalCopy {
                    keystore_id: uuid_col(r, "keystore_id")?,
                    managed_key_id: uuid_col(r, "managed_key_id")?,
                    key_id_in_keystore: uuid_col(r, "key_id_in_keystore")?,
                    label: r.get("label"),
                    enabled: r.get::<i64, _>("enabled") != 0,
                    version: u32_col(r, "version")?,
                })
            })
            .collect()
    }
}

async fn write_template(
    conn: &mut SqliteConnection,
    t: &Template,
    read_revision: Option<i64>,
) -> Result<()> {
    let doc =
        serde_json::to_string(&TemplateDoc::of(t)).map_err(|e| Error::internal(e.to_string()))?;
    let entry = t.keystore();
    let sql = match read_revision {
        None => "INSERT INTO templates (name, state, types, version, naming_scheme, algorithm, size, keystore_type, keystore_group,
                 managing_systems, updated_at, updated_by, revision, doc, created_at, created_by, vault_id, id)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        Some(_) => "UPDATE templates SET name = ?, state = ?, types = ?, version = ?, naming_scheme = ?, algorithm = ?, size = ?,
                 keystore_type = ?, keystore_group = ?, managing_systems = ?, updated_at = ?, updated_by = ?, revision = ?, doc = ?
                 WHERE created_at = ? AND created_by = ? AND vault_id = ? AND id = ? AND revision = ?",
    };
    let done = sqlx::query(sql)
        .bind(&t.name)
        .bind(t.state.as_str())
        .bind(json(&t.types)?)
        .bind(t.version)
        .bind(&t.naming_scheme)
        .bind(t.key.algorithm.as_str())
        .bind(i64::from(t.key.size))
        .bind(entry.keystore_type.as_str())
        .bind(&entry.group)
        .bind(json(&t.managing_systems)?)
        .bind(ts(&t.stamps.updated_at))
        .bind(&t.stamps.updated_by)
        .bind(t.revision)
        .bind(doc)
        .bind(ts(&t.stamps.created_at))
        .bind(&t.stamps.created_by)
        .bind(t.vault.id.to_string())
        .bind(t.id.to_string())
        .bind(read_revision.unwrap_or_default())
        .execute(&mut *conn)
        .await
        .map_err(|e| write_err(e, "template in this vault", &t.name))?;
    check_updated(conn, "templates", "template", t.id, done.rows_affected()).await
}

async fn write_keystore(
    conn: &mut SqliteConnection,
    k: &Keystore,
    read_revision: Option<i64>,
) -> Result<()> {
    let sql = match read_revision {
        None => "INSERT INTO keystores (name, description, location, groups, tls_proxy, connection, secret_fields, sealed_secrets,
                 updated_at, updated_by, revision, type, ibm_variant, created_at, created_by, vault_id, id)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        Some(_) => "UPDATE keystores SET name = ?, description = ?, location = ?, groups = ?, tls_proxy = ?, connection = ?,
                 secret_fields = ?, sealed_secrets = ?, updated_at = ?, updated_by = ?, revision = ?
                 WHERE type = ? AND ibm_variant IS ? AND created_at = ? AND created_by = ? AND vault_id = ? AND id = ? AND revision = ?",
    };
    let done = sqlx::query(sql)
        .bind(&k.name)
        .bind(&k.description)
        .bind(&k.location)
        .bind(json(&k.groups)?)
        .bind(&k.tls_proxy)
        .bind(json(&k.connection)?)
        .bind(json(&k.secret_fields)?)
        .bind(&k.sealed_secrets)
        .bind(ts(&k.stamps.updated_at))
        .bind(&k.stamps.updated_by)
        .bind(k.revision)
        .bind(k.keystore_type.as_str())
        .bind(k.ibm_variant.map(IbmVariant::as_str))
        .bind(ts(&k.stamps.created_at))
        .bind(&k.stamps.created_by)
        .bind(k.vault.id.to_string())
        .bind(k.id.to_string())
        .bind(read_revision.unwrap_or_default())
        .execute(&mut *conn)
        .await
        .map_err(|e| write_err(e, "keystore in this vault", &k.name))?;
    check_updated(conn, "keystores", "keystore", k.id, done.rows_affected()).await
}
