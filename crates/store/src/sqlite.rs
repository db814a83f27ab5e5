//! The SQLite engine: WAL; one writer thread committing writes in groups; read-only
//! connections used inline by readers.

mod access;
mod audit;
mod distribution;
mod hierarchy;
mod import_tokens;
mod key_rings;
mod keys;
mod keystores;
mod lists;
mod migrate;
mod reader;
mod rows;
mod templates;
mod vaults;
mod writer;
mod writes;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Params};
use uuid::Uuid;

use keyplane_core::audit::{self as audit_trail};
use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::{OperationalCounts, Store, TaskCount};
use keyplane_core::service::UsageContext;

use crate::read_cache::{Generation, ReadCache};
pub(crate) use migrate::{newest_schema_version, schema_at, schema_of};
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
    usage_contexts: ReadCache<(Uuid, Uuid), Arc<UsageContext>>,
    keystores: ReadCache<Uuid, Keystore>,
    generation: Generation,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path, durability: Durability) -> Result<Self> {
        owner_only(path)?;
        Self::start(path, durability)
    }

    fn start(path: &Path, durability: Durability) -> Result<Self> {
        let generation = Generation::default();
        let writer = writer::Writer::start(path, durability, generation.clone())?;
        Ok(Self {
            reader: reader::Reader::new(path),
            writer,
            usage_contexts: ReadCache::new(generation.clone(), READ_CACHE_ENTRIES),
            keystores: ReadCache::new(generation.clone(), READ_CACHE_ENTRIES),
            generation,
        })
    }

    /// A store in memory, gone when dropped: for tests of what is built on it. It is the same
    /// engine (writer thread, read connections, caches) over a shared in-memory database.
    pub async fn open_in_memory() -> Result<Self> {
        let name = format!("file:keyplane-{}?mode=memory&cache=shared", Uuid::new_v4());
        Self::start(Path::new(&name), Durability::Normal)
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

/// A timestamp as the SQLite engine stores it.
pub(crate) fn timestamp_text(t: &chrono::DateTime<chrono::Utc>) -> String {
    rows::ts(t)
}

/// Verifies the audit chain of an open SQLite database (a backup being checked).
pub(crate) fn verify_audit_chain_of(
    conn: &rusqlite::Connection,
) -> Result<keyplane_core::ports::AuditChainReport> {
    audit::verify(conn)
}

/// The last expiration date within the expiration warning window.
fn warning_limit() -> chrono::NaiveDate {
    let today = chrono::Utc::now().date_naive();
    today
        .checked_add_days(chrono::Days::new(
            keyplane_core::schedule::EXPIRATION_WARNING_DAYS,
        ))
        .unwrap_or(today)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.reader
            .with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err))
    }

    async fn schema_versions(&self) -> Result<(i64, i64)> {
        let current = self.reader.with(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(sql_err)
        })?;
        Ok((current, newest_schema_version()))
    }

    async fn operational_counts(&self) -> Result<OperationalCounts> {
        let mut counts = self.reader.with(|c| {
            let rows = |sql: &str| -> Result<Vec<(String, i64)>> {
                let mut st = c.prepare_cached(sql).map_err(sql_err)?;
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql_err)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(sql_err)
            };
            let keys_by_state = rows(
                "SELECT state, SUM(n) FROM key_counts GROUP BY state HAVING SUM(n) > 0 ORDER BY state",
            )?;
            let mut st = c
                .prepare_cached(
                    "SELECT t.keystore_id, COALESCE(k.name, ''), t.state, COUNT(*), MIN(t.created_at)
                       FROM keystore_tasks t LEFT JOIN keystores k ON k.id = t.keystore_id
                      WHERE t.state <> 'done' GROUP BY t.keystore_id, t.state ORDER BY 1, 3",
                )
                .map_err(sql_err)?;
            let tasks = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(sql_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?
                .into_iter()
                .map(|(id, name, state, count, oldest)| {
                    Ok(TaskCount {
                        keystore_id: id.parse().map_err(|_| rows::corrupt("keystore_id"))?,
                        keystore_name: name,
                        state,
                        count: count.max(0).cast_unsigned(),
                        oldest: chrono::DateTime::parse_from_rfc3339(&oldest)
                            .map_err(|_| rows::corrupt("created_at"))?
                            .to_utc(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let keys_expiring: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM managed_keys WHERE state = 'active' AND expiration_date <= ?",
                    [warning_limit().to_string()],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            let audit_events: i64 = c
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_events", [], |r| {
                    r.get(0)
                })
                .map_err(sql_err)?;
            let mut st = c
                .prepare_cached(
                    "SELECT algorithm, size, COUNT(*) FROM key_pool GROUP BY algorithm, size ORDER BY 1, 2",
                )
                .map_err(sql_err)?;
            let key_pool = st
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(sql_err)?
                .map(|row| {
                    row.map(|(a, size, n)| {
                        (
                            a,
                            u32::try_from(size).unwrap_or(0),
                            n.max(0).cast_unsigned(),
                        )
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)?;
            Ok(OperationalCounts {
                keys_by_state: keys_by_state
                    .into_iter()
                    .map(|(s, n)| (s, n.max(0).cast_unsigned()))
                    .collect(),
                keys_expiring: keys_expiring.max(0).cast_unsigned(),
                tasks,
                audit_events: audit_events.max(0).cast_unsigned(),
                key_pool,
                connections: Default::default(),
            })
        })?;
        counts.connections = self.reader.connection_use();
        Ok(counts)
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

    async fn insert_setting(&self, name: &str, value: &str) -> Result<String> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.writer
            .write_returning(move |c| {
                c.execute(
                    "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                    [&name, &value],
                )
                .map_err(sql_err)?;
                c.query_row("SELECT value FROM settings WHERE name = ?", [&name], |r| {
                    r.get(0)
                })
                .map_err(sql_err)
            })
            .await
    }

    async fn close(&self) {
        SqliteStore::close(self).await
    }
}
