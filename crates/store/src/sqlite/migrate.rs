//! Schema migrations: numbered SQL files, each applied once, in order, in one transaction.

use keyplane_core::error::{Error, Result};
use rusqlite::Connection;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_vault_indexes.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_key_list_order.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_key_state_counts.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite/0005_fewer_btrees.sql"),
    ),
    (
        6,
        include_str!("../../migrations/sqlite/0006_key_hierarchy.sql"),
    ),
    (
        7,
        include_str!("../../migrations/sqlite/0007_audit_events.sql"),
    ),
    (
        8,
        include_str!("../../migrations/sqlite/0008_principals.sql"),
    ),
    (9, include_str!("../../migrations/sqlite/0009_policies.sql")),
    (
        10,
        include_str!("../../migrations/sqlite/0010_dual_control.sql"),
    ),
    (
        11,
        include_str!("../../migrations/sqlite/0011_distribution.sql"),
    ),
    (
        12,
        include_str!("../../migrations/sqlite/0012_key_protect_imports.sql"),
    ),
    (
        13,
        include_str!("../../migrations/sqlite/0013_key_aliases.sql"),
    ),
    (
        14,
        include_str!("../../migrations/sqlite/0014_key_rings.sql"),
    ),
    (
        15,
        include_str!("../../migrations/sqlite/0015_key_list_ranges.sql"),
    ),
    (
        16,
        include_str!("../../migrations/sqlite/0016_key_counts.sql"),
    ),
    (
        17,
        include_str!("../../migrations/sqlite/0017_key_sort_indexes.sql"),
    ),
    (
        18,
        include_str!("../../migrations/sqlite/0018_key_day_counts.sql"),
    ),
    (
        19,
        include_str!("../../migrations/sqlite/0019_key_schedules.sql"),
    ),
    (
        20,
        include_str!("../../migrations/sqlite/0020_external_copy_remote_ids.sql"),
    ),
];

/// The schema version this release brings a SQLite database to.
pub(crate) fn newest_schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// What the schema at `version` is made of (tables, indexes, triggers with their SQL), as a
/// database migrated to it holds it; `None` for a version this build does not know.
pub(crate) fn schema_at(version: i64) -> Result<Option<Vec<(String, String, String)>>> {
    if !(1..=newest_schema_version()).contains(&version) {
        return Ok(None);
    }
    let err = |e: rusqlite::Error| Error::internal(format!("building the schema: {e}"));
    let conn = Connection::open_in_memory().map_err(err)?;
    conn.execute_batch(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .map_err(err)?;
    for (_, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= version) {
        conn.execute_batch(sql).map_err(err)?;
    }
    schema_of(&conn).map(Some)
}

/// The schema objects of a database, in a stable order.
pub(crate) fn schema_of(conn: &Connection) -> Result<Vec<(String, String, String)>> {
    let err = |e: rusqlite::Error| Error::internal(format!("reading the schema: {e}"));
    let mut stmt = conn
        .prepare(
            "SELECT type, name, COALESCE(sql, '') FROM sqlite_master
              WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(err)
}

pub(crate) fn run(conn: &mut Connection) -> Result<()> {
    let err = |e: rusqlite::Error| Error::internal(format!("database migration: {e}"));
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        .map_err(err)?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if let Some((newest, _)) = MIGRATIONS.last()
        && current > *newest
    {
        return Err(Error::internal(format!(
            "the database schema (version {current}) is newer than this keyplane knows ({newest}); upgrade keyplane"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            [version],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod registered {
    /// Every migration file is applied: a file left out of the list would silently not run.
    #[test]
    fn every_migration_file_is_in_the_list() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), super::MIGRATIONS.len(), "{files:?}");
        for (i, (version, _)) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1);
            assert!(
                files[i].starts_with(&format!("{version:04}_")),
                "{}",
                files[i]
            );
        }
    }
}
