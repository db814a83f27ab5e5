//! The SQLite engine: WAL; one writer thread committing writes in groups; read-only
//! connections used inline by readers.

mod access;
mod audit;
mod distribution;
mod import_tokens;
mod lists;
mod migrate;
mod read_cache;
mod reader;
mod rows;
mod writer;
mod writes;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Params, params};
use uuid::Uuid;

use keyplane_core::audit::{self as audit_trail, AuditEvent};
use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::{
    ApiToken, AuditChainReport, AuditQuery, ExternalCopy, ImportToken, KeyWrite, KeystoreTask,
    PooledKey, Store, StoredRootKey, TaskResult, TaskView, WrappedVaultKey,
};
use keyplane_core::query::*;
use keyplane_core::service::UsageContext;

use rows::*;
use writer::sql_err;

/// How hard SQLite works to keep a commit across a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced before it is acknowledged.
    Full,
    /// `synchronous=NORMAL`: survives a crash of the process, may lose the last commits on power loss.
    Normal,
}

/// Most keys' usage contexts, and most keystores, held in memory at once.
const READ_CACHE_ENTRIES: usize = 16_384;

pub struct SqliteStore {
    reader: reader::Reader,
    writer: writer::Writer,
    usage_contexts: read_cache::ReadCache<(Uuid, Uuid), Arc<UsageContext>>,
    keystores: read_cache::ReadCache<Uuid, Keystore>,
    generation: read_cache::Generation,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path, durability: Durability) -> Result<Self> {
        owner_only(path)?;
        let generation = read_cache::Generation::default();
        let writer = writer::Writer::start(path, durability, generation.clone())?;
        Ok(Self {
            reader: reader::Reader::new(path),
            writer,
            usage_contexts: read_cache::ReadCache::new(generation.clone(), READ_CACHE_ENTRIES),
            keystores: read_cache::ReadCache::new(generation.clone(), READ_CACHE_ENTRIES),
            generation,
        })
    }

    /// Checkpoints the WAL and closes the read connections.
    pub async fn close(&self) {
        self.reader.close();
        let checkpoint = |c: &Connection| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(sql_err)
        };
        if let Err(e) = self.writer.outside_transaction(checkpoint).await {
            tracing::warn!(error = %e, "WAL checkpoint at close failed");
        }
    }
}

/// Makes the database readable by its owner only, before SQLite opens it: SQLite gives the WAL
/// and shared-memory files the database file's permissions, so they follow. A database made by
/// an older release is tightened, with its WAL and shared-memory files if they are there.
fn owner_only(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| {
            keyplane_core::Error::internal(format!(
                "preparing the database file {}: {e}",
                path.display()
            ))
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mut files = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            files.push(name.into());
        }
        for file in files.iter().filter(|f| f.exists()) {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// The vault of a resource about to be deleted, for its audit event.
    fn owning_vault(&self, table: &'static str, id: Uuid) -> Option<Uuid> {
        self.reader
            .with(|c| {
                one(
                    c,
                    &format!("SELECT vault_id FROM {table} WHERE id = ?"),
                    [id.to_string()],
                    |r| uuid_col(r, "vault_id"),
                )
            })
            .ok()
            .flatten()
    }

    /// A write that changes what an API call asked for: the request's audit event (if any) is
    /// appended in the same transaction, so the change and its record commit or fail together.
    async fn audited_write(
        &self,
        work: impl FnOnce(&Connection) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let event = audit_trail::take_for_write();
        let taken = event.is_some();
        let outcome = self
            .writer
            .write(move |c| {
                work(c)?;
                match event {
                    Some(e) => audit::append(c, e),
                    None => Ok(()),
                }
            })
            .await;
        if outcome.is_err() && taken {
            audit_trail::write_failed();
        }
        outcome
    }
}

/// Every row of a query, mapped.
pub(crate) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    map: fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
    let mut rows = stmt.query(params).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// The first row of a query, mapped.
pub(crate) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    map: fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
    let mut rows = stmt.query(params).map_err(sql_err)?;
    rows.next().map_err(sql_err)?.map(map).transpose()
}

fn copy_from_row(r: &rusqlite::Row<'_>) -> Result<InternalCopy> {
    Ok(InternalCopy {
        keystore_id: uuid_col(r, "keystore_id")?,
        managed_key_id: uuid_col(r, "managed_key_id")?,
        key_id_in_keystore: uuid_col(r, "key_id_in_keystore")?,
        label: col(r, "label")?,
        enabled: col(r, "enabled")?,
        version: u32_col(r, "version")?,
    })
}

fn version_from_row(r: &rusqlite::Row<'_>) -> Result<KeyVersion> {
    Ok(KeyVersion {
        version: u32_col(r, "version")?,
        state: enum_col(r, "state", KeyState::parse)?,
        verification_patterns: json_col(r, "verification_patterns")?,
        created_at: ts_col(r, "created_at")?,
    })
}

fn token_from_row(r: &rusqlite::Row<'_>) -> Result<ApiToken> {
    Ok(ApiToken {
        id: uuid_col(r, "id")?,
        name: col(r, "name")?,
        token_hash: col(r, "token_hash")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.reader
            .with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err))
    }

    fn commit_generation(&self) -> u64 {
        self.generation.current()
    }

    async fn get_setting(&self, name: &str) -> Result<Option<String>> {
        self.reader.with(|c| {
            c.query_row("SELECT value FROM settings WHERE name = ?", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql_err)
        })
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
        self.reader.with(|c| {
            one(
                c,
                "SELECT id, name, token_hash FROM api_tokens WHERE token_hash = ?",
                [token_hash],
                token_from_row,
            )
        })
    }

    async fn count_api_tokens(&self) -> Result<i64> {
        self.reader.with(|c| {
            c.query_row("SELECT COUNT(*) FROM api_tokens", [], |r| r.get(0))
                .map_err(sql_err)
        })
    }

    async fn insert_vault(&self, v: &Vault) -> Result<()> {
        let v = v.clone();
        audit_trail::note_target("vaults", v.id, Some(v.id));
        self.audited_write(move |c| writes::insert_vault(c, &v))
            .await
    }

    async fn get_vault(&self, id: Uuid) -> Result<Option<VaultView>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("{VAULT_SELECT} WHERE v.id = ?"),
                [id.to_string()],
                vault_from_row,
            )
        })
    }

    async fn vault_ref(&self, id: Uuid) -> Result<Option<VaultRef>> {
        let name = self.reader.with(|c| {
            c.query_row(
                "SELECT name FROM vaults WHERE id = ?",
                [id.to_string()],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(sql_err)
        })?;
        Ok(name.map(|name| VaultRef { id, name }))
    }

    async fn update_vault(&self, v: &Vault, read_revision: i64) -> Result<()> {
        let v = v.clone();
        audit_trail::note_target("vaults", v.id, Some(v.id));
        self.audited_write(move |c| writes::update_vault(c, &v, read_revision))
            .await
    }

    async fn delete_vault(&self, id: Uuid, read_revision: i64) -> Result<()> {
        audit_trail::note_target("vaults", id, Some(id));
        self.audited_write(move |c| writes::delete_vault(c, id, read_revision))
            .await
    }

    async fn list_vaults(&self, q: &VaultQuery) -> Result<Page<VaultView>> {
        self.reader.with(|c| lists::vaults(c, q))
    }

    async fn insert_template(&self, t: &Template) -> Result<()> {
        let t = t.clone();
        audit_trail::note_target("templates", t.id, Some(t.vault.id));
        self.audited_write(move |c| writes::write_template(c, &t, None))
            .await
    }

    async fn get_template(&self, id: Uuid) -> Result<Option<Template>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("{TEMPLATE_SELECT} WHERE t.id = ?"),
                [id.to_string()],
                template_from_row,
            )
        })
    }

    async fn find_template(&self, vault_id: Uuid, name: &str) -> Result<Option<Template>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("{TEMPLATE_SELECT_UNCOUNTED} WHERE t.vault_id = ? AND t.name = ?"),
                params![vault_id.to_string(), name],
                template_from_row,
            )
        })
    }

    async fn update_template(&self, t: &Template, read_revision: i64) -> Result<()> {
        let t = t.clone();
        audit_trail::note_target("templates", t.id, Some(t.vault.id));
        self.audited_write(move |c| writes::write_template(c, &t, Some(read_revision)))
            .await
    }

    async fn delete_template(&self, id: Uuid, read_revision: i64) -> Result<()> {
        let vault = self.owning_vault("templates", id);
        audit_trail::note_target("templates", id, vault);
        self.audited_write(move |c| writes::delete_template(c, id, read_revision))
            .await
    }

    async fn list_templates(&self, q: &TemplateQuery) -> Result<Page<Template>> {
        self.reader.with(|c| lists::templates(c, q))
    }

    async fn insert_keystore(&self, k: &Keystore) -> Result<()> {
        let k = k.clone();
        audit_trail::note_target("keystores", k.id, Some(k.vault.id));
        self.audited_write(move |c| writes::write_keystore(c, &k, None))
            .await
    }

    async fn claim_tasks(
        &self,
        limit: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<KeystoreTask>> {
        self.writer
            .write_returning(move |c| distribution::claim(c, limit, &now))
            .await
    }

    async fn finish_task(&self, task: &KeystoreTask, result: TaskResult) -> Result<()> {
        let task = task.clone();
        let now = chrono::Utc::now();
        self.writer
            .write(move |c| distribution::finish(c, &task, &result, &now))
            .await
    }

    async fn requeue_interrupted_tasks(&self) -> Result<u64> {
        self.writer
            .write_returning(distribution::requeue_running)
            .await
    }

    async fn keystore_tasks(&self, keystore_id: Uuid, limit: u32) -> Result<Vec<TaskView>> {
        self.reader
            .with(|c| distribution::tasks_of(c, keystore_id, limit))
    }

    async fn external_copy(&self, keystore_id: Uuid, key_id: Uuid) -> Result<Option<ExternalCopy>> {
        self.reader
            .with(|c| distribution::copy(c, keystore_id, key_id))
    }

    async fn record_observed_status(
        &self,
        key_id: Uuid,
        status: &KeyStatusInKeystore,
    ) -> Result<()> {
        let status = status.clone();
        self.writer
            .write(move |c| distribution::record_status(c, key_id, &status))
            .await
    }

    async fn external_copies_of_key(&self, key_id: Uuid) -> Result<Vec<ExternalCopy>> {
        self.reader.with(|c| distribution::copies_of_key(c, key_id))
    }

    async fn import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>> {
        self.reader.with(|c| import_tokens::get(c, keystore_id))
    }

    async fn save_import_token(&self, token: &ImportToken) -> Result<()> {
        let token = token.clone();
        self.writer
            .write(move |c| import_tokens::save(c, &token))
            .await
    }

    async fn retrieve_import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>> {
        let now = chrono::Utc::now();
        self.writer
            .write_returning(move |c| import_tokens::retrieve(c, keystore_id, &now))
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

    async fn save_external_copy(&self, copy: &ExternalCopy) -> Result<()> {
        let copy = copy.clone();
        self.writer
            .write(move |c| distribution::save_copy(c, &copy))
            .await
    }

    async fn get_keystore(&self, id: Uuid) -> Result<Option<Keystore>> {
        self.keystores.get_or_read(id, || {
            self.reader.with(|c| {
                one(
                    c,
                    &format!("{KEYSTORE_SELECT} WHERE ks.id = ?"),
                    [id.to_string()],
                    keystore_from_row,
                )
            })
        })
    }

    async fn update_keystore(&self, k: &Keystore, read_revision: i64) -> Result<()> {
        let k = k.clone();
        audit_trail::note_target("keystores", k.id, Some(k.vault.id));
        self.audited_write(move |c| writes::write_keystore(c, &k, Some(read_revision)))
            .await
    }

    async fn list_keystores(&self, q: &KeystoreQuery) -> Result<Page<Keystore>> {
        self.reader.with(|c| lists::keystores(c, q))
    }

    async fn vault_keystores(&self, vault_id: Uuid) -> Result<Vec<Keystore>> {
        self.reader.with(|c| {
            all(
                c,
                &format!("{KEYSTORE_SELECT} WHERE ks.vault_id = ? ORDER BY ks.created_at, ks.id"),
                [vault_id.to_string()],
                keystore_from_row,
            )
        })
    }

    async fn delete_keystore(
        &self,
        id: Uuid,
        read_revision: i64,
        changes: &[(ManagedKey, i64)],
    ) -> Result<()> {
        let changes = changes.to_vec();
        let vault = self.owning_vault("keystores", id);
        audit_trail::note_target("keystores", id, vault);
        self.audited_write(move |c| writes::delete_keystore(c, id, read_revision, &changes))
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
                "SELECT version, state, verification_patterns, created_at FROM key_material WHERE key_id = ? ORDER BY version DESC",
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
        paging: Paging,
    ) -> Result<Page<InternalCopy>> {
        self.reader.with(|c| {
            let total_count = c
                .query_row("SELECT COUNT(*) FROM internal_copies WHERE keystore_id = ?", [keystore_id.to_string()], |r| r.get(0))
                .map_err(sql_err)?;
            let items = all(
                c,
                "SELECT * FROM internal_copies WHERE keystore_id = ? ORDER BY managed_key_id LIMIT ? OFFSET ?",
                params![keystore_id.to_string(), i64::from(paging.limit), i64::try_from(paging.offset).unwrap_or(i64::MAX)],
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

    async fn root_keys(&self) -> Result<Vec<StoredRootKey>> {
        self.reader.with(|c| {
            all(
                c,
                "SELECT id, sealed, created_at FROM root_keys ORDER BY created_at, id",
                [],
                root_key_from_row,
            )
        })
    }

    async fn insert_root_key(&self, root: &StoredRootKey) -> Result<()> {
        let root = root.clone();
        self.writer
            .write(move |c| writes::insert_root_key(c, &root))
            .await
    }

    async fn vault_key(&self, vault_id: Uuid) -> Result<Option<WrappedVaultKey>> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT vault_id, root_id, wrapped FROM vault_keys WHERE vault_id = ?",
                [vault_id.to_string()],
                vault_key_from_row,
            )
        })
    }

    async fn insert_vault_key(&self, key: &WrappedVaultKey) -> Result<WrappedVaultKey> {
        let key = key.clone();
        let vault_id = key.vault_id;
        self.writer
            .write_returning(move |c| {
                writes::insert_vault_key(c, &key)?;
                one(
                    c,
                    "SELECT vault_id, root_id, wrapped FROM vault_keys WHERE vault_id = ?",
                    [vault_id.to_string()],
                    vault_key_from_row,
                )?
                .ok_or_else(|| keyplane_core::Error::internal("vault key vanished"))
            })
            .await
    }

    async fn vault_keys_under(&self, root_id: &str) -> Result<Vec<WrappedVaultKey>> {
        self.reader.with(|c| {
            all(
                c,
                "SELECT vault_id, root_id, wrapped FROM vault_keys WHERE root_id = ?",
                [root_id],
                vault_key_from_row,
            )
        })
    }

    async fn retire_root_key(
        &self,
        from_root: &str,
        rewrapped: &[WrappedVaultKey],
    ) -> Result<bool> {
        let (from_root, rewrapped) = (from_root.to_owned(), rewrapped.to_vec());
        self.writer
            .write_returning(move |c| writes::retire_root_key(c, &from_root, &rewrapped))
            .await
    }

    async fn vault_ids(&self) -> Result<Vec<Uuid>> {
        self.reader
            .with(|c| all(c, "SELECT id FROM vaults", [], |r| uuid_col(r, "id")))
    }

    async fn pooled_key_count(&self, algorithm: Algorithm, size: u32) -> Result<u64> {
        self.reader.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM key_pool WHERE algorithm = ? AND size = ?",
                params![algorithm.to_string(), i64::from(size)],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(sql_err)
        })
    }

    async fn add_pooled_key(&self, key: &PooledKey) -> Result<()> {
        let key = key.clone();
        self.writer
            .write(move |c| writes::add_pooled_key(c, &key))
            .await
    }

    async fn take_pooled_key(&self, algorithm: Algorithm, size: u32) -> Result<Option<PooledKey>> {
        self.writer
            .write_returning(move |c| writes::take_pooled_key(c, algorithm, size))
            .await
    }

    async fn append_audit_event(&self, event: AuditEvent) -> Result<()> {
        self.writer.write(move |c| audit::append(c, event)).await
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Page<AuditEvent>> {
        self.reader.with(|c| audit::list(c, query))
    }

    async fn verify_audit_chain(&self) -> Result<AuditChainReport> {
        self.reader.with(audit::verify)
    }

    async fn insert_principal(&self, principal: &Principal) -> Result<()> {
        let principal = principal.clone();
        self.audited_write(move |c| access::insert_principal(c, &principal))
            .await
    }

    async fn get_principal(&self, id: Uuid) -> Result<Option<Principal>> {
        self.reader.with(|c| {
            one(
                c,
                &format!(
                    "SELECT {} FROM principals WHERE id = ?",
                    access::PRINCIPAL_COLUMNS
                ),
                [id.to_string()],
                access::principal_from_row,
            )
        })
    }

    async fn find_principal(&self, name: &str) -> Result<Option<Principal>> {
        self.reader.with(|c| {
            one(
                c,
                &format!(
                    "SELECT {} FROM principals WHERE name = ?",
                    access::PRINCIPAL_COLUMNS
                ),
                [name],
                access::principal_from_row,
            )
        })
    }

    async fn list_principals(&self, paging: Paging) -> Result<Page<Principal>> {
        self.reader.with(|c| access::list_principals(c, paging))
    }

    async fn delete_principal(&self, id: Uuid) -> Result<()> {
        self.audited_write(move |c| access::delete_principal(c, id))
            .await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        let key = key.clone();
        self.audited_write(move |c| access::insert_api_key(c, &key))
            .await
    }

    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("SELECT {} FROM api_keys WHERE id = ?", access::KEY_COLUMNS),
                [id.to_string()],
                access::key_from_row,
            )
        })
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        self.reader.with(|c| {
            one(
                c,
                &format!(
                    "SELECT {} FROM api_keys WHERE key_hash = ?",
                    access::KEY_COLUMNS
                ),
                [key_hash],
                access::key_from_row,
            )
        })
    }

    async fn list_api_keys(&self, principal_id: Uuid) -> Result<Vec<ApiKey>> {
        self.reader.with(|c| {
            all(
                c,
                &format!(
                    "SELECT {} FROM api_keys WHERE principal_id = ? ORDER BY created_at, id",
                    access::KEY_COLUMNS
                ),
                [principal_id.to_string()],
                access::key_from_row,
            )
        })
    }

    async fn revoke_api_key(&self, revoke: Uuid, replacement: Option<&ApiKey>) -> Result<()> {
        let replacement = replacement.cloned();
        self.audited_write(move |c| access::revoke_api_key(c, revoke, replacement.as_ref()))
            .await
    }

    async fn insert_policy(&self, policy: &keyplane_core::authz::Policy) -> Result<()> {
        let policy = policy.clone();
        self.audited_write(move |c| access::insert_policy(c, &policy))
            .await
    }

    async fn delete_policy(&self, id: Uuid) -> Result<()> {
        self.audited_write(move |c| access::delete_policy(c, id))
            .await
    }

    async fn list_policies(
        &self,
        principal_id: Option<Uuid>,
    ) -> Result<Vec<keyplane_core::authz::Policy>> {
        self.reader.with(|c| match principal_id {
            Some(p) => all(
                c,
                &format!(
                    "SELECT {} FROM policies WHERE principal_id = ? ORDER BY created_at, id",
                    access::POLICY_COLUMNS
                ),
                [p.to_string()],
                access::policy_from_row,
            ),
            None => all(
                c,
                &format!(
                    "SELECT {} FROM policies ORDER BY created_at, id",
                    access::POLICY_COLUMNS
                ),
                [],
                access::policy_from_row,
            ),
        })
    }

    async fn dual_control(&self, vault_id: Uuid) -> Result<bool> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT vault_id FROM dual_control_vaults WHERE vault_id = ?",
                [vault_id.to_string()],
                |_| Ok(()),
            )
            .map(|found| found.is_some())
        })
    }

    async fn set_dual_control(&self, vault_id: Uuid, enabled: bool) -> Result<()> {
        audit_trail::note_target("vaults", vault_id, Some(vault_id));
        self.audited_write(move |c| {
            let sql = if enabled {
                "INSERT INTO dual_control_vaults (vault_id) VALUES (?) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM dual_control_vaults WHERE vault_id = ?"
            };
            c.execute(sql, [vault_id.to_string()]).map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn insert_approval(&self, approval: &Approval) -> Result<()> {
        let approval = approval.clone();
        audit_trail::note_target("approvals", approval.id, Some(approval.vault_id));
        self.audited_write(move |c| access::insert_approval(c, &approval))
            .await
    }

    async fn get_approval(&self, id: Uuid) -> Result<Option<Approval>> {
        self.reader.with(|c| {
            one(
                c,
                &format!(
                    "SELECT {} FROM approvals WHERE id = ?",
                    access::APPROVAL_COLUMNS
                ),
                [id.to_string()],
                access::approval_from_row,
            )
        })
    }

    async fn list_approvals(&self, vault_ids: &[Uuid]) -> Result<Vec<Approval>> {
        let filter = if vault_ids.is_empty() {
            String::new()
        } else {
            format!(
                "WHERE vault_id IN ({})",
                vec!["?"; vault_ids.len()].join(", ")
            )
        };
        let ids: Vec<String> = vault_ids.iter().map(Uuid::to_string).collect();
        self.reader.with(|c| {
            all(
                c,
                &format!(
                    "SELECT {} FROM approvals {filter} ORDER BY requested_at DESC, id DESC LIMIT 1000",
                    access::APPROVAL_COLUMNS
                ),
                rusqlite::params_from_iter(ids.iter()),
                access::approval_from_row,
            )
        })
    }

    async fn decide_approval(&self, approval: &Approval) -> Result<()> {
        let approval = approval.clone();
        self.writer
            .write(move |c| access::decide_approval(c, &approval))
            .await
    }

    async fn reopen_approval(&self, id: Uuid) -> Result<()> {
        self.writer
            .write(move |c| access::reopen_approval(c, id))
            .await
    }
}
