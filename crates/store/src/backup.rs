//! Backup and restore. A backup is one SQLite file: an online snapshot taken in a single read
//! transaction while the servers serve (every write committed before it began is in it), of a
//! SQLite deployment or of a PostgreSQL one (its rows copied into the file as the SQLite engine
//! stores them), holding what the database holds — material and keystore secrets sealed
//! under the master key, the seal's own records, the audit chain with its hashes. Restoring
//! copies it into an empty data directory and checks the copy: row counts per table, the
//! database's integrity, and the audit chain.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use keyplane_core::error::{Error, Result};
use keyplane_core::ports::AuditChainReport;

use crate::postgres::{PostgresOptions, PostgresStore, db_err};
use crate::transfer::TABLES;

/// The database file in a data directory.
pub const DATABASE_FILE: &str = "keyplane.sqlite";

/// What a backup or a restore holds, read back from the file it wrote.
#[derive(Debug)]
pub struct BackupReport {
    /// Rows per table.
    pub rows: Vec<(&'static str, i64)>,
    /// The audit chain as verified in the file.
    pub audit: AuditChainReport,
}

fn sqlite_err(e: rusqlite::Error) -> Error {
    Error::internal(format!("SQLite: {e}"))
}

/// Creates `path` empty and readable by its owner only; an existing file is refused.
fn create_private(path: &Path, what: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::invalid_field(what, format!("{} already exists", path.display()))
        } else {
            Error::internal(format!("creating {}: {e}", path.display()))
        }
    })
}

/// Reads what a database file holds and verifies it: integrity, rows per table, the chain.
fn inspect(path: &Path) -> Result<BackupReport> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite_err)?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite_err)?;
    if integrity != "ok" {
        return Err(Error::internal(format!(
            "{} fails its integrity check: {integrity}",
            path.display()
        )));
    }
    let rows = TABLES
        .iter()
        .map(|table| {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .map(|n: i64| (*table, n))
                .map_err(sqlite_err)
        })
        .collect::<Result<Vec<_>>>()?;
    let audit = crate::sqlite::verify_audit_chain_of(&conn)?;
    if let Some(seq) = audit.first_broken {
        return Err(Error::internal(format!(
            "the audit chain in {} is broken at event {seq}: {}",
            path.display(),
            audit.reason.as_deref().unwrap_or("it does not verify")
        )));
    }
    Ok(BackupReport { rows, audit })
}

/// Takes an online backup of the SQLite database `database` into the new file `to`, while the
/// server may be writing, and checks it.
pub fn backup_sqlite(database: &Path, to: &Path) -> Result<BackupReport> {
    if !database.is_file() {
        return Err(Error::invalid_field(
            "data_dir",
            format!("no Keyplane database at {}", database.display()),
        ));
    }
    create_private(to, "to")?;
    let taken = (|| {
        let conn = Connection::open_with_flags(
            database,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sqlite_err)?;
        // One read transaction: a consistent snapshot, taken without stopping the writer.
        let target = to
            .to_str()
            .ok_or_else(|| Error::invalid_field("to", "the backup path must be UTF-8"))?;
        conn.execute("VACUUM INTO ?1", [target])
            .map_err(sqlite_err)?;
        inspect(to)
    })();
    if taken.is_err() {
        let _ = std::fs::remove_file(to);
    }
    taken
}

/// Restores the backup `from` into the data directory `data_dir`, which must be empty or
/// absent, and checks the copy against the backup.
pub fn restore_sqlite(from: &Path, data_dir: &Path) -> Result<BackupReport> {
    let expected = inspect(from)?;
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir)
            .map_err(|e| Error::internal(format!("reading {}: {e}", data_dir.display())))?;
        if entries.next().is_some() {
            return Err(Error::invalid_field(
                "data_dir",
                format!(
                    "{} is not empty: restore into an empty or new directory",
                    data_dir.display()
                ),
            ));
        }
    } else {
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(data_dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", data_dir.display())))?;
    }
    let target = data_dir.join(DATABASE_FILE);
    create_private(&target, "data_dir")?;
    let copied = std::fs::copy(from, &target)
        .map_err(|e| Error::internal(format!("copying the backup: {e}")))
        .and_then(|_| inspect(&target));
    let restored = match copied {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
    };
    if restored.rows != expected.rows || restored.audit.head != expected.audit.head {
        let _ = std::fs::remove_file(&target);
        return Err(Error::internal(
            "the restored database does not hold what the backup holds",
        ));
    }
    Ok(restored)
}

/// A PostgreSQL value as the SQLite engine stores it.
fn sqlite_value(
    row: &tokio_postgres::Row,
    i: usize,
    table: &str,
) -> Result<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    use tokio_postgres::types::Type;
    let column = &row.columns()[i];
    let bad = |e: tokio_postgres::Error| {
        Error::internal(format!("reading {table}.{}: {e}", column.name()))
    };
    Ok(match *column.type_() {
        Type::UUID => row
            .try_get::<_, Option<uuid::Uuid>>(i)
            .map_err(bad)?
            .map_or(V::Null, |u| V::Text(u.to_string())),
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
            .map_err(bad)?
            .map_or(V::Null, |t| V::Text(crate::sqlite::timestamp_text(&t))),
        Type::DATE => row
            .try_get::<_, Option<chrono::NaiveDate>>(i)
            .map_err(bad)?
            .map_or(V::Null, |d| V::Text(d.to_string())),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map_or(V::Null, V::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map_or(V::Null, |n| V::Integer(n.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map_or(V::Null, |b| V::Integer(b.into())),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(bad)?
            .map_or(V::Null, V::Blob),
        Type::TEXT | Type::VARCHAR => row
            .try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map_or(V::Null, V::Text),
        ref other => {
            return Err(Error::internal(format!(
                "{table}.{} is of type {other}, which a backup does not carry",
                column.name()
            )));
        }
    })
}

/// Takes an online backup of the PostgreSQL database `url` names into the new SQLite file `to`,
/// while every node may be writing: one repeatable-read snapshot, copied row by row, then the
/// file checked against the snapshot's counts and its audit chain verified.
pub async fn backup_postgres(url: &str, to: &Path) -> Result<BackupReport> {
    create_private(to, "to")?;
    let taken = copy_postgres_snapshot(url, to).await;
    if taken.is_err() {
        let _ = std::fs::remove_file(to);
        for suffix in ["-wal", "-shm"] {
            let mut side = to.as_os_str().to_owned();
            side.push(suffix);
            let _ = std::fs::remove_file(side);
        }
    }
    taken
}

async fn copy_postgres_snapshot(url: &str, to: &Path) -> Result<BackupReport> {
    // The file gets the SQLite engine's schema from the engine itself.
    let schema = crate::SqliteStore::open(to, crate::Durability::Normal).await?;
    keyplane_core::ports::Store::close(&schema).await;
    drop(schema);
    let source = PostgresStore::open(
        url,
        PostgresOptions {
            pool_size: 2,
            writers: 1,
            ..PostgresOptions::default()
        },
    )
    .await?;
    let mut client = source.reader().await?;
    let snapshot = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_err)?;
    let mut target = Connection::open(to).map_err(sqlite_err)?;
    let file = target.transaction().map_err(sqlite_err)?;
    let mut counted = Vec::new();
    for table in TABLES {
        let columns: Vec<String> = {
            let mut stmt = file
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .map_err(sqlite_err)?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sqlite_err)?;
            names.collect::<rusqlite::Result<_>>().map_err(sqlite_err)?
        };
        let present: Vec<String> = snapshot
            .query(
                "SELECT a.attname::text FROM pg_attribute a
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[table],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                if present.contains(c) {
                    format!("\"{c}\"")
                } else {
                    "NULL::text".to_owned()
                }
            })
            .collect();
        let placeholders = vec!["?"; columns.len()].join(", ");
        let mut insert = file
            .prepare(&format!(
                "INSERT INTO {table} ({}) VALUES ({placeholders})",
                columns
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .map_err(sqlite_err)?;
        let rows = snapshot
            .query_raw(
                &format!("SELECT {} FROM {table}", select.join(", ")),
                std::iter::empty::<i64>(),
            )
            .await
            .map_err(db_err)?;
        let mut rows = std::pin::pin!(rows);
        let mut copied = 0i64;
        while let Some(row) = futures::StreamExt::next(&mut rows).await {
            let row = row.map_err(db_err)?;
            let values = (0..columns.len())
                .map(|i| sqlite_value(&row, i, table))
                .collect::<Result<Vec<_>>>()?;
            insert
                .execute(rusqlite::params_from_iter(values))
                .map_err(sqlite_err)?;
            copied += 1;
        }
        let there: i64 = snapshot
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .map_err(db_err)?
            .get(0);
        if there != copied {
            return Err(Error::internal(format!(
                "table {table}: {there} rows in the snapshot, {copied} copied"
            )));
        }
        counted.push((*table, copied));
    }
    let head: Option<String> = snapshot
        .query_opt(
            "SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(db_err)?
        .map(|r| r.get(0));
    file.commit().map_err(sqlite_err)?;
    snapshot.commit().await.map_err(db_err)?;
    drop(client);
    source.close().await;
    target
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .map_err(sqlite_err)?;
    drop(target);
    let report = inspect(to)?;
    if report.rows != counted || head.is_some_and(|h| h != report.audit.head) {
        return Err(Error::internal(
            "the backup does not hold what the snapshot held",
        ));
    }
    Ok(report)
}
