//! Schema migrations for PostgreSQL: numbered SQL files, each applied once, in order, in one
//! transaction. Nodes starting together take a session advisory lock first: one migrates, the
//! others wait for it and then find nothing left to do.

use deadpool_postgres::Pool;
use keyplane_core::error::{Error, Result};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_key_day_counts.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_key_schedules.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_external_copy_remote_ids.sql"),
    ),
];

/// The advisory lock key migrations run under ("keyplane" in ASCII, as an integer).
const MIGRATION_LOCK: i64 = 0x6b65_7970_6c61_6e65;

pub(crate) async fn run(pool: &Pool) -> Result<()> {
    let err = |e: tokio_postgres::Error| match super::db_err(e) {
        Error::Internal(m) => Error::internal(format!("database migration: {m}")),
        other => other,
    };
    let mut conn = super::writer::connection(pool).await?;
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    let outcome = apply(&mut conn).await;
    let unlocked = conn
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    if unlocked.is_err() {
        // The session still holds the lock: it must not go back to the pool.
        let _ = deadpool_postgres::Object::take(conn);
    }
    outcome.map_err(err)?;
    Ok(())
}

async fn apply(conn: &mut deadpool_postgres::Object) -> Result<(), tokio_postgres::Error> {
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let current: i64 = conn
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if let Some((newest, _)) = MIGRATIONS.last()
        && current > *newest
    {
        // Reported through the caller's error path below.
        tracing::error!(
            current,
            newest,
            "the database schema is newer than this keyplane knows; upgrade keyplane"
        );
        return Ok(());
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The newest schema version this keyplane knows.
pub(crate) fn newest_schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// The schema version the database is at, and whether this keyplane knows it.
pub(crate) async fn check_version(pool: &Pool) -> Result<()> {
    let conn = super::writer::connection(pool).await?;
    let current: i64 = conn
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(super::db_err)?
        .get(0);
    let newest = newest_schema_version();
    if current > newest {
        return Err(Error::internal(format!(
            "the database schema (version {current}) is newer than this keyplane knows ({newest}); upgrade keyplane"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod registered {
    /// Every migration file is applied: a file left out of the list would silently not run.
    #[test]
    fn every_migration_file_is_in_the_list() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), super::MIGRATIONS.len(), "{files:?}");
        for (i, (version, _)) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1);
            assert!(files[i].starts_with(&format!("{version:04}_")));
        }
    }
}
