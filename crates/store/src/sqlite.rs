//! The SQLite engine: WAL, one writer connection (so transactions never fight over the write
//! lock), a pool of readers.

mod keys;
mod lists;
mod rows;
mod writer;
mod writes;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use keyplane_core::error::{Error, Result};
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
    writer: writer::Writer,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub(crate) fn db_err(e: sqlx::Error) -> Error {
    Error::internal(format!("database: {e}"))
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
        let migrate = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        MIGRATOR
            .run(&migrate)
            .await
            .map_err(|e| Error::internal(format!("database migration: {e}")))?;
        migrate.close().await;
        let writer = writer::Writer::start(path, durability)?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await
            .map_err(db_err)?;
        Ok(Self { read, writer })
    }

    /// Checkpoints the WAL and closes every connection.
    pub async fn close(&self) {
        let checkpoint = |c: &rusqlite::Connection| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(writer::sql_err)
        };
        self.read.close().await;
        if let Err(e) = self.writer.outside_transaction(checkpoint).await {
            tracing::warn!(error = %e, "WAL checkpoint at close failed");
        }
    }
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
        let (name, value) = (name.to_owned(), value.to_owned());
        self.writer
            .write(move |c| writes::put_setting(c, &name, &value))
            .await
    }

    async fn insert_api_token(&self, token: &ApiToken) -> Result<()> {
        let token = token.clone();
        self.writer
            .write(move |c| writes::insert_api_token(c, &token))
            .await
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
        let v = v.clone();
        self.writer
            .write(move |c| writes::insert_vault(c, &v))
            .await
    }

    async fn get_vault(&self, id: Uuid) -> Result<Option<VaultView>> {
        let row = sqlx::query(&format!("{VAULT_SELECT} WHERE v.id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(vault_from_row).transpose()
    }

    async fn vault_ref(&self, id: Uuid) -> Result<Option<VaultRef>> {
        let row = sqlx::query("SELECT name FROM vaults WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| VaultRef {
            id,
            name: r.get("name"),
        }))
    }

    async fn update_vault(&self, v: &Vault, read_revision: i64) -> Result<()> {
        let v = v.clone();
        self.writer
            .write(move |c| writes::update_vault(c, &v, read_revision))
            .await
    }

    async fn delete_vault(&self, id: Uuid, read_revision: i64) -> Result<()> {
        self.writer
            .write(move |c| writes::delete_vault(c, id, read_revision))
            .await
    }

    async fn list_vaults(&self, q: &VaultQuery) -> Result<Page<VaultView>> {
        lists::vaults(&self.read, q).await
    }

    async fn insert_template(&self, t: &Template) -> Result<()> {
        let t = t.clone();
        self.writer
            .write(move |c| writes::write_template(c, &t, None))
            .await
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
            "{TEMPLATE_SELECT_UNCOUNTED} WHERE t.vault_id = ? AND t.name = ?"
        ))
        .bind(vault_id.to_string())
        .bind(name)
        .fetch_optional(&self.read)
        .await
        .map_err(db_err)?;
        row.as_ref().map(template_from_row).transpose()
    }

    async fn update_template(&self, t: &Template, read_revision: i64) -> Result<()> {
        let t = t.clone();
        self.writer
            .write(move |c| writes::write_template(c, &t, Some(read_revision)))
            .await
    }

    async fn delete_template(&self, id: Uuid, read_revision: i64) -> Result<()> {
        self.writer
            .write(move |c| writes::delete_template(c, id, read_revision))
            .await
    }

    async fn list_templates(&self, q: &TemplateQuery) -> Result<Page<Template>> {
        lists::templates(&self.read, q).await
    }

    async fn insert_keystore(&self, k: &Keystore) -> Result<()> {
        let k = k.clone();
        self.writer
            .write(move |c| writes::write_keystore(c, &k, None))
            .await
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
        let k = k.clone();
        self.writer
            .write(move |c| writes::write_keystore(c, &k, Some(read_revision)))
            .await
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
        let changes = changes.to_vec();
        self.writer
            .write(move |c| writes::delete_keystore(c, id, read_revision, &changes))
            .await
    }

    async fn save_managed_key(
        &self,
        key: &ManagedKey,
        read_revision: Option<i64>,
        write: &KeyWrite,
    ) -> Result<()> {
        let (key, write) = (key.clone(), write.clone());
        self.writer
            .write(move |c| writes::save_key(c, &key, read_revision, &write))
            .await
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
        self.writer
            .write(move |c| writes::delete_key(c, id, read_revision))
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
