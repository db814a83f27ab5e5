//! The PostgreSQL engine: several Keyplane nodes share one database.
//!
//! Reads run on pooled connections. Writes go through this node's writer, which commits queued
//! writes in groups (each in its own savepoint, one commit for the group), as the SQLite engine
//! does: a commit costs a round trip and a WAL flush, and the rows every write touches (the audit
//! chain's end, key counts) would otherwise serialize concurrent transactions one flush at a
//! time. See `writer` for how groups from several nodes keep the audit chain one chain.

mod access;
mod audit;
mod changes;
mod connect;
mod distribution;
mod hierarchy;
mod import_tokens;
mod key_rings;
mod keys;
mod keystores;
mod lists;
mod migrate;
mod rows;
mod statistics;
mod templates;
mod vaults;
mod writer;
mod writes;

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Object, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use keyplane_core::audit::{self as audit_trail};
use keyplane_core::error::{Error, Result};
use keyplane_core::model::*;
use keyplane_core::ports::{ConnectionUse, OperationalCounts, Store, TaskCount};
use keyplane_core::service::UsageContext;

use crate::read_cache::ReadCache;
use writer::Touches;

pub use connect::PostgresOptions;
pub(crate) use writer::{db_err, write_err};

/// Most keys' usage contexts, and most keystores, held in memory at once.
const READ_CACHE_ENTRIES: usize = 16_384;

/// A parameter list for a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub struct PostgresStore {
    pool: Pool,
    writer: writer::Writer,
    /// By commit: a key's usage context changes with the key.
    usage_contexts: ReadCache<(Uuid, Uuid), Arc<UsageContext>>,
    /// By configuration (see [`changes::Generations`]): what creating or changing a key reads,
    /// and the data plane's keystores, stay cached while only keys are written.
    keystores: ReadCache<Uuid, Keystore>,
    vault_refs: ReadCache<Uuid, VaultRef>,
    templates_by_name: ReadCache<(Uuid, String), Template>,
    vault_keystores: ReadCache<Uuid, Vec<Keystore>>,
    generations: changes::Generations,
    /// This node, as it names itself in leases.
    node_id: Uuid,
    changes: changes::Changes,
    /// See [`PostgresOptions::task_lease`].
    task_lease: std::time::Duration,
    /// Distribution tasks this node claimed and is running: only their leases are renewed.
    running_tasks: std::sync::Mutex<std::collections::HashSet<Uuid>>,
}

impl PostgresStore {
    /// Connects to the database named by a `postgres://` URL and brings its schema up to date
    /// (one node at a time: the others wait for the migration lock).
    pub async fn open(url: &str, options: PostgresOptions) -> Result<Self> {
        let target = connect::Target::parse(url)?;
        let pool = target.pool(&options)?;
        migrate::run(&pool).await?;
        migrate::check_version(&pool).await?;
        let generations = changes::Generations::default();
        let node_id = Uuid::new_v4();
        let writer =
            writer::Writer::start(pool.clone(), generations.clone(), options.writers, node_id);
        let changes = changes::Changes::start(target, generations.clone(), node_id);
        statistics::start(pool.clone());
        Ok(Self {
            task_lease: options.task_lease,
            running_tasks: std::sync::Mutex::default(),
            changes,
            usage_contexts: ReadCache::new(generations.commits.clone(), READ_CACHE_ENTRIES),
            keystores: ReadCache::new(generations.configuration.clone(), READ_CACHE_ENTRIES),
            vault_refs: ReadCache::new(generations.configuration.clone(), READ_CACHE_ENTRIES),
            templates_by_name: ReadCache::new(
                generations.configuration.clone(),
                READ_CACHE_ENTRIES,
            ),
            vault_keystores: ReadCache::new(generations.configuration.clone(), READ_CACHE_ENTRIES),
            pool,
            writer,
            generations,
            node_id,
        })
    }

    /// This node's id in task and leader leases.
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        self.pool.close();
    }

    /// A pooled connection for reads.
    pub(crate) async fn reader(&self) -> Result<Object> {
        writer::connection(&self.pool).await
    }

    /// The vault of a resource about to be deleted, for its audit event.
    async fn owning_vault(&self, table: &'static str, id: Uuid) -> Option<Uuid> {
        let c = self.reader().await.ok()?;
        one(
            &c,
            &format!("SELECT vault_id FROM {table} WHERE id = $1"),
            &[&id],
            |r| rows::col(r, "vault_id"),
        )
        .await
        .ok()
        .flatten()
    }

    /// A write that changes what an API call asked for: the request's audit event (if any) is
    /// appended in the same transaction, so the change and its record commit or fail together.
    async fn audited_write(&self, work: writer::Work) -> Result<()> {
        self.audited_write_touching(work, Touches::Anything).await
    }

    /// [`PostgresStore::audited_write`] of a write that changes keys only: no vault, template
    /// or keystore row (see [`Touches::KeysOnly`]).
    async fn audited_key_write(&self, work: writer::Work) -> Result<()> {
        self.audited_write_touching(work, Touches::KeysOnly).await
    }

    async fn audited_write_touching(&self, work: writer::Work, touches: Touches) -> Result<()> {
        let event = audit_trail::take_for_write();
        let taken = event.is_some();
        let outcome = self.writer.submit(work, event, touches).await;
        if outcome.is_err() && taken {
            audit_trail::write_failed();
        }
        outcome
    }

    /// A write with no audit event of its own.
    async fn write(&self, work: writer::Work) -> Result<()> {
        self.writer.submit(work, None, Touches::Anything).await
    }

    /// Like [`PostgresStore::write`], returning what `work` produced once committed.
    async fn write_returning<T: Send + 'static>(
        &self,
        work: impl for<'c> FnOnce(&'c writer::Conn) -> futures::future::BoxFuture<'c, Result<T>>
        + Send
        + 'static,
    ) -> Result<T> {
        let slot = Arc::new(std::sync::Mutex::new(None));
        let out = slot.clone();
        self.write(Box::new(move |c| {
            Box::pin(async move {
                let value = work(c).await?;
                *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
                Ok(())
            })
        }))
        .await?;
        let value = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        value.ok_or_else(|| Error::internal("the database writer returned nothing"))
    }
}

/// Creates an empty schema in the database `url` names (a test store's own).
pub(crate) async fn create_schema(url: &str, schema: &str) -> Result<()> {
    let pool = connect::Target::parse(url)?.pool(&PostgresOptions::default())?;
    let c = writer::connection(&pool).await?;
    c.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .map_err(db_err)?;
    drop(c);
    pool.close();
    Ok(())
}

/// Every row of a query, mapped.
pub(crate) async fn all<T>(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    map: fn(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    let stmt = c.prepare_cached(sql).await.map_err(db_err)?;
    let rows = c.query(&stmt, params).await.map_err(db_err)?;
    rows.iter().map(map).collect()
}

/// The first row of a query, mapped.
pub(crate) async fn one<T>(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    map: fn(&Row) -> Result<T>,
) -> Result<Option<T>> {
    let stmt = c.prepare_cached(sql).await.map_err(db_err)?;
    let row = c.query_opt(&stmt, params).await.map_err(db_err)?;
    row.as_ref().map(map).transpose()
}

/// Every row of a statement built for one request (a list's filters and sorts): prepared
/// unnamed, not kept per connection, so callers cannot fill the statement caches with variants.
pub(crate) async fn all_once<T>(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    map: fn(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = c.query(sql, params).await.map_err(db_err)?;
    rows.iter().map(map).collect()
}

/// The first row of a statement built for one request (see [`all_once`]).
pub(crate) async fn one_once<T>(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    map: fn(&Row) -> Result<T>,
) -> Result<Option<T>> {
    let row = c.query_opt(sql, params).await.map_err(db_err)?;
    row.as_ref().map(map).transpose()
}

/// Runs a statement; the number of rows it changed.
/// A connection to the database `url` names, for reading it as it is: no migration, no
/// background work (a backup of a deployment other nodes serve). Refused unless the database's
/// schema is the one this build writes.
pub(crate) async fn read_only_connection(url: &str) -> Result<Object> {
    let pool = connect::Target::parse(url)?.pool(&PostgresOptions {
        pool_size: 2,
        ..PostgresOptions::default()
    })?;
    let c = writer::connection(&pool).await?;
    let current: i64 = c
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(db_err)?
        .get(0);
    let newest = migrate::newest_schema_version();
    if current != newest {
        return Err(Error::invalid_field(
            "database_url",
            format!(
                "the database's schema is at version {current}, this keyplane's is {newest}: back it up with the release that serves it"
            ),
        ));
    }
    Ok(c)
}

pub(crate) async fn exec(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(db_err)?;
    c.execute(&stmt, params).await.map_err(db_err)
}

/// Runs statements in order in one round trip (the connection pipelines them, the server runs
/// them one after the other); the first failure is the outcome.
pub(crate) async fn exec_pipelined(
    c: &impl GenericClient,
    statements: &[(&str, Vec<&(dyn ToSql + Sync)>)],
) -> Result<()> {
    let mut prepared = Vec::with_capacity(statements.len());
    for (sql, _) in statements {
        prepared.push(c.prepare_cached(sql).await.map_err(db_err)?);
    }
    futures::future::try_join_all(
        prepared
            .iter()
            .zip(statements)
            .map(|(stmt, (_, params))| c.execute(stmt, params)),
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        let c = self.reader().await?;
        c.simple_query("SELECT 1").await.map_err(db_err)?;
        Ok(())
    }

    async fn schema_versions(&self) -> Result<(i64, i64)> {
        let c = self.reader().await?;
        let current: i64 = c
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(db_err)?
            .get(0);
        Ok((current, migrate::newest_schema_version()))
    }

    async fn operational_counts(&self) -> Result<OperationalCounts> {
        let c = self.reader().await?;
        let count = |n: i64| n.max(0).cast_unsigned();
        let keys_by_state = c
            .query(
                "SELECT state, SUM(n)::BIGINT FROM key_counts GROUP BY state HAVING SUM(n) > 0 ORDER BY state",
                &[],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| (r.get::<_, String>(0), count(r.get(1))))
            .collect();
        let tasks = c
            .query(
                "SELECT t.keystore_id, COALESCE(k.name, ''), t.state, COUNT(*), MIN(t.created_at)
                   FROM keystore_tasks t LEFT JOIN keystores k ON k.id = t.keystore_id
                  WHERE t.state <> 'done' GROUP BY t.keystore_id, k.name, t.state ORDER BY 1, 3",
                &[],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| TaskCount {
                keystore_id: r.get(0),
                keystore_name: r.get(1),
                state: r.get(2),
                count: count(r.get(3)),
                oldest: r.get(4),
            })
            .collect();
        let today = chrono::Utc::now().date_naive();
        let limit = today
            .checked_add_days(chrono::Days::new(
                keyplane_core::schedule::EXPIRATION_WARNING_DAYS,
            ))
            .unwrap_or(today);
        let keys_expiring: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM managed_keys WHERE state = 'active' AND expiration_date <= $1",
                &[&limit],
            )
            .await
            .map_err(db_err)?
            .get(0);
        let audit_events: i64 = c
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM audit_events", &[])
            .await
            .map_err(db_err)?
            .get(0);
        let key_pool = c
            .query(
                "SELECT algorithm, size, COUNT(*) FROM key_pool GROUP BY algorithm, size ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    u32::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                    count(r.get(2)),
                )
            })
            .collect();
        drop(c);
        let pool = self.pool.status();
        Ok(OperationalCounts {
            keys_by_state,
            keys_expiring: count(keys_expiring),
            tasks,
            audit_events: count(audit_events),
            key_pool,
            connections: ConnectionUse {
                open: pool.size as u64,
                in_use: pool.size.saturating_sub(pool.available) as u64,
                max: pool.max_size as u64,
            },
        })
    }

    fn commit_generation(&self) -> u64 {
        self.generations.commits.current()
    }

    async fn get_setting(&self, name: &str) -> Result<Option<String>> {
        let c = self.reader().await?;
        one(
            &c,
            "SELECT value FROM settings WHERE name = $1",
            &[&name],
            |r| rows::col(r, "value"),
        )
        .await
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.write(Box::new(move |c| {
            Box::pin(async move { writes::put_setting(c, &name, &value).await })
        }))
        .await
    }

    async fn insert_setting(&self, name: &str, value: &str) -> Result<String> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.write_returning(move |c| {
            Box::pin(async move {
                exec(
                    c,
                    "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&name, &value],
                )
                .await?;
                one(c, "SELECT value FROM settings WHERE name = $1", &[&name], |r| {
                    rows::col(r, "value")
                })
                .await?
                .ok_or_else(|| Error::internal("a setting just stored is missing"))
            })
        })
        .await
    }

    async fn close(&self) {
        PostgresStore::close(self).await
    }

    async fn tasks_queued_elsewhere(&self) {
        self.changes.tasks_queued.notified().await
    }

    async fn lead(&self, lease: std::time::Duration) -> Result<Option<i64>> {
        let c = self.reader().await?;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        // Taken when free or expired (the term grows), renewed by its holder (the term stays).
        one(
            &c,
            "INSERT INTO leader_lease (name, holder, term, lease_until)
             VALUES ('scheduler', $1, 1, clock_timestamp() + $2::bigint * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE SET
                 term = CASE WHEN leader_lease.holder = EXCLUDED.holder
                             THEN leader_lease.term ELSE leader_lease.term + 1 END,
                 holder = EXCLUDED.holder,
                 lease_until = EXCLUDED.lease_until
             WHERE leader_lease.holder = EXCLUDED.holder OR leader_lease.lease_until < clock_timestamp()
             RETURNING term",
            &[&self.node_id, &lease_ms],
            |r| rows::col(r, "term"),
        )
        .await
    }
}
